//! The relay protocol's messages, modelled on Bitcoin Core's P2P messages,
//! each with its real encoded size for the bandwidth model.

use std::sync::Arc;

use bitcoin::block::Header;
use bitcoin::merkle_tree::PartialMerkleTree;
use bitcoin::{BlockHash, ScriptBuf, Transaction, Txid};
use fika_core::Message;

use crate::blockdb::SimBlock;

/// Bytes of a P2P message header (magic, command, length, checksum).
pub const HEADER_BYTES: u32 = 24;
/// Bytes of one inventory entry (type + hash).
pub const INV_ENTRY_BYTES: u32 = 36;
/// Bytes of a BIP152 short transaction id.
pub const SHORT_ID_BYTES: u32 = 6;

/// An inventory entry: what a peer has or wants.
///
/// The tag is a word, so that the hash starts at a word boundary: a message
/// copied with word-sized moves is then read back by loads that each match
/// one store, which the processor forwards without waiting for the stores
/// before them to reach the cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
#[repr(u64)]
pub enum Inv {
    /// A block (`MSG_BLOCK`).
    Block(BlockHash),
    /// A block wanted as a compact block (`MSG_CMPCT_BLOCK`, only in `getdata`).
    CmpctBlock(BlockHash),
    /// A transaction (`MSG_WTX`-style).
    Tx(Txid),
}

/// The items of an `inv`: one inline — the usual block announcement, sent
/// to every peer without an allocation or a shared counter to update — or
/// many, shared by every peer they go to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Invs {
    /// A single item.
    One(Inv),
    /// Any number of items.
    Many(Arc<[Inv]>),
}

impl std::ops::Deref for Invs {
    type Target = [Inv];
    fn deref(&self) -> &[Inv] {
        match self {
            Invs::One(i) => std::slice::from_ref(i),
            Invs::Many(v) => v,
        }
    }
}

impl From<Vec<Inv>> for Invs {
    fn from(v: Vec<Inv>) -> Self {
        match v.as_slice() {
            [one] => Invs::One(*one),
            _ => Invs::Many(v.into()),
        }
    }
}

impl From<Inv> for Invs {
    fn from(i: Inv) -> Self {
        Invs::One(i)
    }
}

/// A message between Bitcoin-like nodes (and their light wallets).
#[derive(Clone, Debug)]
pub enum BtcMsg {
    /// `inv`: announcements (shared: one announcement to many peers is one allocation).
    Inv(Invs),
    /// `getdata`: requests.
    GetData(Vec<Inv>),
    /// `block`.
    Block(Arc<SimBlock>),
    /// `tx`.
    Tx(Arc<Transaction>),
    /// `getheaders`: a block locator (newest first); answer with the headers after the fork.
    GetHeaders(Vec<BlockHash>),
    /// `headers`: up to 2,000 consecutive headers.
    Headers(Vec<Header>),
    /// `sendcmpct` with high-bandwidth mode on: push new blocks to me compact.
    SendCmpct,
    /// `cmpctblock`: header, short ids, prefilled coinbase.
    CmpctBlock(Arc<SimBlock>),
    /// `getblocktxn`: the transactions a compact block's receiver lacks
    /// (the block, indexes of the wanted transactions).
    GetBlockTxn(Box<(BlockHash, Vec<u32>)>),
    /// `blocktxn`: the answer, completing the block.
    BlockTxn(Box<(Arc<SimBlock>, Vec<Arc<Transaction>>)>),
    /// `filterload` (BIP37, simplified to exact scripts): a light wallet's scripts.
    FilterLoad(Vec<ScriptBuf>),
    /// `merkleblock` + the matching `tx`s: a header with a proof of the
    /// transactions relevant to a light wallet.
    FilteredBlock(Box<FilteredBlock>),
}

/// A header, a partial merkle tree and the transactions it proves.
#[derive(Clone, Debug)]
pub struct FilteredBlock {
    /// The block's header.
    pub header: Header,
    /// Its height (for convenience; the wallet checks the header chain).
    pub height: u32,
    /// Partial merkle tree committing to `txs`.
    pub proof: PartialMerkleTree,
    /// The matching transactions.
    pub txs: Vec<Arc<Transaction>>,
}

fn varint(n: usize) -> u32 {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

fn tx_bytes(tx: &Transaction) -> u32 {
    tx.total_size() as u32
}

impl Message for BtcMsg {
    fn warm(&self) {
        // The items of a request or a long announcement live apart from
        // the message, made long before it arrives.
        match self {
            BtcMsg::Inv(Invs::Many(items)) => fika_core::hint::prefetch(&items[..]),
            BtcMsg::GetData(items) => fika_core::hint::prefetch(&items[..]),
            _ => {}
        }
    }
    fn wire_size(&self) -> u32 {
        let payload = match self {
            BtcMsg::Inv(items) => varint(items.len()) + INV_ENTRY_BYTES * items.len() as u32,
            BtcMsg::GetData(items) => varint(items.len()) + INV_ENTRY_BYTES * items.len() as u32,
            BtcMsg::Block(b) => b.size(),
            BtcMsg::Tx(tx) => tx_bytes(tx),
            BtcMsg::GetHeaders(locator) => 4 + varint(locator.len()) + 32 * locator.len() as u32 + 32,
            BtcMsg::Headers(h) => varint(h.len()) + 81 * h.len() as u32,
            BtcMsg::SendCmpct => 9,
            BtcMsg::CmpctBlock(b) => {
                let shorts = b.block.txdata.len().saturating_sub(1) + (b.filler / 500) as usize;
                let coinbase = b.block.txdata.first().map_or(0, tx_bytes);
                80 + 8 + varint(shorts) + SHORT_ID_BYTES * shorts as u32 + 1 + 1 + coinbase
            }
            BtcMsg::GetBlockTxn(b) => 32 + varint(b.1.len()) + 3 * b.1.len() as u32,
            BtcMsg::BlockTxn(b) => 32 + varint(b.1.len()) + b.1.iter().map(|t| tx_bytes(t)).sum::<u32>(),
            BtcMsg::FilterLoad(scripts) => {
                // A bloom filter of ~10 bytes per element plus parameters.
                varint(scripts.len()) + 10 * scripts.len() as u32 + 9
            }
            BtcMsg::FilteredBlock(f) => {
                let (proof, txs) = (&f.proof, &f.txs);
                let hashes = proof.hashes().len();
                let bits = proof.bits().len().div_ceil(8);
                80 + 4
                    + varint(hashes)
                    + 32 * hashes as u32
                    + varint(bits)
                    + bits as u32
                    + txs.iter().map(|t| HEADER_BYTES + tx_bytes(t)).sum::<u32>()
            }
        };
        HEADER_BYTES + payload
    }

    fn kind(&self) -> &'static str {
        match self {
            BtcMsg::Inv(_) => "inv",
            BtcMsg::GetData(_) => "getdata",
            BtcMsg::Block(_) => "block",
            BtcMsg::Tx(_) => "tx",
            BtcMsg::GetHeaders(_) => "getheaders",
            BtcMsg::Headers(_) => "headers",
            BtcMsg::SendCmpct => "sendcmpct",
            BtcMsg::CmpctBlock(_) => "cmpctblock",
            BtcMsg::GetBlockTxn(_) => "getblocktxn",
            BtcMsg::BlockTxn(_) => "blocktxn",
            BtcMsg::FilterLoad(_) => "filterload",
            BtcMsg::FilteredBlock(_) => "merkleblock",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn inv_sizes_match_the_p2p_encoding() {
        let one = BtcMsg::Inv(vec![Inv::Tx(bitcoin::hashes::Hash::all_zeros())].into());
        assert_eq!(one.wire_size(), 24 + 1 + 36);
        let many = BtcMsg::Inv(vec![Inv::Tx(bitcoin::hashes::Hash::all_zeros()); 300].into());
        assert_eq!(many.wire_size(), 24 + 3 + 36 * 300);
    }

    #[test]
    fn messages_stay_small_in_the_event_queue() {
        // The largest variant is an inline one-item inv (a 33-byte item):
        // every other payload is behind a pointer.
        assert!(std::mem::size_of::<BtcMsg>() <= 40, "{}", std::mem::size_of::<BtcMsg>());
    }

    #[test]
    fn block_size_counts_the_filler() {
        let genesis = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest);
        let base = genesis.total_size() as u32;
        let b = Arc::new(SimBlock::new(genesis, 1000));
        assert_eq!(BtcMsg::Block(Arc::clone(&b)).wire_size(), 24 + base + 1000);
        let compact = BtcMsg::CmpctBlock(b).wire_size();
        assert!(compact < 24 + base + 100, "compact blocks carry short ids, not the filler");
    }
}
