//! Sidechain headers and blocks, and merge-mining proofs.
//!
//! A header carries the usual Ethereum-like fields and three merge-mining
//! fields: the Bitcoin header, the Bitcoin coinbase transaction and the
//! merkle branch of that coinbase in the Bitcoin block. The Bitcoin miner
//! commits to the sidechain block by an output
//! `OP_RETURN "RSKBLOCK:" ‖ hash-for-merged-mining` in its coinbase
//! ([`merge_mining_tag`]), where the hash for merged mining is
//! `keccak256` of the header's RLP without the merge-mining fields
//! ([`SideHeader::hash_for_merged_mining`]). The block hash is `keccak256`
//! of the full header's RLP ([`SideHeader::hash`]), as in Rootstock.
//!
//! [`verify_merge_mining`] checks the tag, the coinbase's branch against
//! the Bitcoin header's merkle root, and — in [`PowMode::Real`] only — that
//! the Bitcoin header hash meets the sidechain target
//! ([`difficulty_to_target`]). In [`PowMode::Simulated`] no nonce is ever
//! ground, so only the structure and the tag are checked; the simulator
//! decides *when* a block is found from the difficulty instead.
//!
//! Simplifications against Rootstock: the tag holds the full 32-byte hash
//! (no RSKIP-110 block-number suffix), the coinbase is kept whole (no SHA-256
//! midstate compression), and there are no uncles.

use bitcoin::block::Header as BtcHeader;
use bitcoin::consensus::{deserialize, serialize};
use bitcoin::hashes::{Hash, sha256d};
use bitcoin::opcodes::all::OP_RETURN;
use bitcoin::script::{Builder, Instruction, PushBytesBuf};
use bitcoin::{Block as BtcBlock, ScriptBuf, Target, Transaction, TxOut};
use fika_btc::PowMode;
use revm::primitives::U256;
use thiserror::Error;

use crate::keccak256;
use crate::merkle;
use crate::rlp::{self, RlpError};
use crate::tx::{SignedTx, TxError};

/// The tag prefix of the merge-mining commitment.
pub const MERGE_MINING_TAG_PREFIX: &[u8; 9] = b"RSKBLOCK:";

/// Longest coinbase merkle branch accepted (a Bitcoin block of 2³² txs).
pub const MAX_COINBASE_BRANCH: usize = 32;

/// A merge-mining check failure.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MmError {
    /// The header carries no merge-mining fields.
    #[error("header has no merge-mining proof")]
    Missing,
    /// The Bitcoin transaction is not a coinbase.
    #[error("bitcoin transaction {0} is not a coinbase")]
    NotCoinbase(bitcoin::Txid),
    /// The coinbase's non-witness serialization is 64 bytes long, which
    /// could pass an inner merkle node off as a transaction.
    #[error("coinbase {0} is 64 bytes long")]
    SixtyFourByteCoinbase(bitcoin::Txid),
    /// No `RSKBLOCK:` output in the coinbase.
    #[error("coinbase {0} has no RSKBLOCK: tag")]
    MissingTag(bitcoin::Txid),
    /// More than one `RSKBLOCK:` output.
    #[error("coinbase {txid} has {count} RSKBLOCK: tags")]
    MultipleTags {
        /// The coinbase.
        txid: bitcoin::Txid,
        /// Number of tags.
        count: usize,
    },
    /// The tag commits to another sidechain block.
    #[error("merge-mining tag commits to {found}, expected {expected}")]
    WrongTag {
        /// Hash for merged mining of the header, hex.
        expected: String,
        /// Hash in the tag, hex.
        found: String,
    },
    /// The coinbase branch is longer than [`MAX_COINBASE_BRANCH`].
    #[error("coinbase merkle branch of {0} hashes is too long")]
    BranchTooLong(usize),
    /// The coinbase branch does not lead to the Bitcoin header's root.
    #[error("coinbase branch gives root {computed}, bitcoin header has {header}")]
    BadCoinbaseProof {
        /// Root computed from the coinbase and branch.
        computed: bitcoin::TxMerkleNode,
        /// The Bitcoin header's merkle root.
        header: bitcoin::TxMerkleNode,
    },
    /// In [`PowMode::Real`], the Bitcoin header hash is above the sidechain
    /// target.
    #[error("bitcoin header hash {hash} does not meet the sidechain target")]
    HighHash {
        /// The Bitcoin header hash.
        hash: bitcoin::BlockHash,
    },
}

/// The merge-mining fields of a header: the Bitcoin evidence that work was
/// spent on this sidechain block.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MergeMiningProof {
    /// The Bitcoin block header.
    pub btc_header: BtcHeader,
    /// The Bitcoin block's coinbase, carrying the `RSKBLOCK:` tag.
    pub btc_coinbase: Transaction,
    /// The coinbase's merkle branch (sibling hashes in internal byte order,
    /// leaf level first; the coinbase is always leaf 0).
    pub coinbase_branch: Vec<[u8; 32]>,
}

impl MergeMiningProof {
    /// Extracts the proof from a Bitcoin block: its header, its coinbase and
    /// the coinbase's branch. `None` if the block has no transactions.
    pub fn from_bitcoin_block(block: &BtcBlock) -> Option<MergeMiningProof> {
        let coinbase = block.txdata.first()?.clone();
        Some(MergeMiningProof {
            btc_header: block.header,
            btc_coinbase: coinbase,
            coinbase_branch: coinbase_merkle_branch(block),
        })
    }

    /// The merkle root given by the coinbase and its branch.
    pub fn computed_merkle_root(&self) -> bitcoin::TxMerkleNode {
        let mut cur = self.btc_coinbase.compute_txid().to_byte_array();
        for sib in &self.coinbase_branch {
            let mut buf = [0u8; 64];
            buf[..32].copy_from_slice(&cur);
            buf[32..].copy_from_slice(sib);
            cur = sha256d::Hash::hash(&buf).to_byte_array();
        }
        bitcoin::TxMerkleNode::from_byte_array(cur)
    }
}

/// The merkle branch of the coinbase (leaf 0) of a Bitcoin block, with
/// Bitcoin's rule of pairing the last node of an odd level with itself.
pub fn coinbase_merkle_branch(block: &BtcBlock) -> Vec<[u8; 32]> {
    let mut level: Vec<[u8; 32]> = block.txdata.iter().map(|t| t.compute_txid().to_byte_array()).collect();
    let mut branch = Vec::new();
    while level.len() > 1 {
        branch.push(level[1]);
        level = level
            .chunks(2)
            .map(|pair| {
                let (l, r) = match pair {
                    [l, r] => (l, r),
                    [l] => (l, l),
                    _ => return [0u8; 32],
                };
                let mut buf = [0u8; 64];
                buf[..32].copy_from_slice(l);
                buf[32..].copy_from_slice(r);
                sha256d::Hash::hash(&buf).to_byte_array()
            })
            .collect();
    }
    branch
}

/// The coinbase output a Bitcoin miner adds to commit to a sidechain block:
/// `OP_RETURN <"RSKBLOCK:" ‖ hash_for_merged_mining>`.
pub fn merge_mining_tag(hash_for_merged_mining: &[u8; 32]) -> ScriptBuf {
    let mut data = PushBytesBuf::new();
    // 41 bytes always fit a push.
    let _ = data.extend_from_slice(MERGE_MINING_TAG_PREFIX);
    let _ = data.extend_from_slice(hash_for_merged_mining);
    Builder::new().push_opcode(OP_RETURN).push_slice(data).into_script()
}

/// Appends the [`merge_mining_tag`] output (value 0) to a Bitcoin block's
/// coinbase and recomputes the block's merkle root. The witness commitment
/// is unaffected (the coinbase's wtxid is zero by definition). In
/// [`PowMode::Real`] the nonce must be ground afterwards.
pub fn add_merge_mining_tag(block: &mut BtcBlock, hash_for_merged_mining: &[u8; 32]) {
    if let Some(cb) = block.txdata.first_mut() {
        cb.output.push(TxOut {
            value: bitcoin::Amount::ZERO,
            script_pubkey: merge_mining_tag(hash_for_merged_mining),
        });
    }
    block.header.merkle_root = fika_btc::merkle::block_merkle_root(block);
}

/// The hashes committed by `RSKBLOCK:` tags in a coinbase, in output order.
pub fn merge_mining_tags(coinbase: &Transaction) -> Vec<[u8; 32]> {
    coinbase
        .output
        .iter()
        .filter_map(|out| {
            let mut ins = out.script_pubkey.instructions();
            match (ins.next(), ins.next(), ins.next()) {
                (Some(Ok(Instruction::Op(OP_RETURN))), Some(Ok(Instruction::PushBytes(data))), None) => {
                    let data = data.as_bytes();
                    let hash = data.strip_prefix(MERGE_MINING_TAG_PREFIX.as_slice())?;
                    <[u8; 32]>::try_from(hash).ok()
                }
                _ => None,
            }
        })
        .collect()
}

/// The sidechain target of a difficulty: `⌊(2²⁵⁶ − 1) / difficulty⌋`
/// (Rootstock's `2²⁵⁶ / difficulty`, off by at most one); a difficulty of
/// 0 or 1 gives the maximum target.
pub fn difficulty_to_target(difficulty: &U256) -> Target {
    let t = if *difficulty <= U256::from(1u8) { U256::MAX } else { U256::MAX / *difficulty };
    Target::from_be_bytes(t.to_be_bytes::<32>())
}

/// Checks a header's merge-mining proof: exactly one `RSKBLOCK:` tag in a
/// genuine coinbase, committing to the header's hash for merged mining; the
/// coinbase's branch leading to the Bitcoin header's merkle root; and, in
/// [`PowMode::Real`], the Bitcoin header hash at or below `target`. In
/// [`PowMode::Simulated`] the hash is not compared with `target`.
pub fn verify_merge_mining(header: &SideHeader, pow_mode: PowMode, target: &Target) -> Result<(), MmError> {
    let mm = header.merge_mining.as_ref().ok_or(MmError::Missing)?;
    let txid = mm.btc_coinbase.compute_txid();
    if !mm.btc_coinbase.is_coinbase() {
        return Err(MmError::NotCoinbase(txid));
    }
    if mm.btc_coinbase.base_size() == 64 {
        return Err(MmError::SixtyFourByteCoinbase(txid));
    }
    let tags = merge_mining_tags(&mm.btc_coinbase);
    let expected = header.hash_for_merged_mining();
    match tags.as_slice() {
        [] => return Err(MmError::MissingTag(txid)),
        [found] if *found != expected => {
            return Err(MmError::WrongTag { expected: hex::encode(expected), found: hex::encode(found) });
        }
        [_] => {}
        many => return Err(MmError::MultipleTags { txid, count: many.len() }),
    }
    if mm.coinbase_branch.len() > MAX_COINBASE_BRANCH {
        return Err(MmError::BranchTooLong(mm.coinbase_branch.len()));
    }
    let computed = mm.computed_merkle_root();
    if computed != mm.btc_header.merkle_root {
        return Err(MmError::BadCoinbaseProof { computed, header: mm.btc_header.merkle_root });
    }
    if pow_mode == PowMode::Real && !target.is_met_by(mm.btc_header.block_hash()) {
        return Err(MmError::HighHash { hash: mm.btc_header.block_hash() });
    }
    Ok(())
}

/// A malformed block or header encoding.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BlockDecodeError {
    /// The RLP is malformed.
    #[error("malformed block encoding: {0}")]
    Rlp(#[from] RlpError),
    /// A Bitcoin field does not deserialize.
    #[error("malformed bitcoin {field}: {reason}")]
    Bitcoin {
        /// Which field.
        field: &'static str,
        /// The decoder's message.
        reason: String,
    },
    /// Only some of the three merge-mining fields are present.
    #[error("merge-mining fields are partly empty")]
    PartialMergeMining,
    /// A transaction is malformed.
    #[error("transaction {index}: {error}")]
    Tx {
        /// Its index in the block.
        index: usize,
        /// What is wrong.
        error: TxError,
    },
}

/// A sidechain block header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideHeader {
    /// Hash of the parent block.
    pub parent_hash: [u8; 32],
    /// Height (genesis is 0).
    pub number: u64,
    /// Unix seconds; strictly above the parent's.
    pub timestamp: u64,
    /// The miner's address, paid the transaction fees.
    pub coinbase: [u8; 20],
    /// Digest of the post-state ([`crate::state::Snapshot::state_root`]).
    pub state_root: [u8; 32],
    /// [`merkle`] root of the transactions' encodings.
    pub transactions_root: [u8; 32],
    /// [`merkle`] root of the receipts' encodings.
    pub receipts_root: [u8; 32],
    /// Gas used by all transactions.
    pub gas_used: u64,
    /// Gas limit of the block.
    pub gas_limit: u64,
    /// Sidechain difficulty; the target is [`difficulty_to_target`] of it.
    pub difficulty: U256,
    /// Merge-mining fields; `None` only in the genesis header and in
    /// templates.
    pub merge_mining: Option<MergeMiningProof>,
}

impl SideHeader {
    fn encode_core(&self, payload: &mut Vec<u8>) {
        rlp::encode_bytes(payload, &self.parent_hash);
        rlp::encode_u64(payload, self.number);
        rlp::encode_u64(payload, self.timestamp);
        rlp::encode_bytes(payload, &self.coinbase);
        rlp::encode_bytes(payload, &self.state_root);
        rlp::encode_bytes(payload, &self.transactions_root);
        rlp::encode_bytes(payload, &self.receipts_root);
        rlp::encode_u64(payload, self.gas_used);
        rlp::encode_u64(payload, self.gas_limit);
        rlp::encode_u256(payload, &self.difficulty);
    }

    /// RLP of the header without the merge-mining fields.
    pub fn encode_for_merged_mining(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(256);
        self.encode_core(&mut payload);
        rlp::list(&payload)
    }

    /// The hash the Bitcoin miner commits to: `keccak256` of
    /// [`SideHeader::encode_for_merged_mining`].
    pub fn hash_for_merged_mining(&self) -> [u8; 32] {
        keccak256(&self.encode_for_merged_mining())
    }

    /// Full RLP: the ten core fields, then the Bitcoin header (80 bytes),
    /// the coinbase (consensus encoding) and the branch (concatenated) —
    /// three empty strings when there is no proof.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(512);
        self.encode_core(&mut payload);
        match &self.merge_mining {
            Some(mm) => {
                rlp::encode_bytes(&mut payload, &serialize(&mm.btc_header));
                rlp::encode_bytes(&mut payload, &serialize(&mm.btc_coinbase));
                rlp::encode_bytes(&mut payload, &mm.coinbase_branch.concat());
            }
            None => {
                for _ in 0..3 {
                    rlp::encode_bytes(&mut payload, &[]);
                }
            }
        }
        rlp::list(&payload)
    }

    /// The block hash: `keccak256` of [`SideHeader::encode`].
    pub fn hash(&self) -> [u8; 32] {
        keccak256(&self.encode())
    }

    /// Decodes [`SideHeader::encode`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<SideHeader, BlockDecodeError> {
        Self::from_item(rlp::decode_exact(bytes)?)
    }

    fn from_item(item: rlp::Item<'_>) -> Result<SideHeader, BlockDecodeError> {
        let items = item.list()?;
        let [
            parent_hash,
            number,
            timestamp,
            coinbase,
            state_root,
            transactions_root,
            receipts_root,
            gas_used,
            gas_limit,
            difficulty,
            btc_header,
            btc_coinbase,
            branch,
        ] = items.as_slice()
        else {
            return Err(RlpError::BadItemCount { expected: 13, found: items.len() }.into());
        };
        let (h, c, b) = (btc_header.bytes()?, btc_coinbase.bytes()?, branch.bytes()?);
        let merge_mining = if h.is_empty() && c.is_empty() && b.is_empty() {
            None
        } else if h.is_empty() || c.is_empty() {
            return Err(BlockDecodeError::PartialMergeMining);
        } else {
            if b.len() % 32 != 0 || b.len() / 32 > MAX_COINBASE_BRANCH {
                return Err(BlockDecodeError::Bitcoin {
                    field: "coinbase branch",
                    reason: format!(
                        "{} bytes is not a list of at most {MAX_COINBASE_BRANCH} hashes",
                        b.len()
                    ),
                });
            }
            let btc_header: BtcHeader = deserialize(h)
                .map_err(|e| BlockDecodeError::Bitcoin { field: "header", reason: e.to_string() })?;
            let btc_coinbase: Transaction = deserialize(c)
                .map_err(|e| BlockDecodeError::Bitcoin { field: "coinbase", reason: e.to_string() })?;
            let coinbase_branch =
                b.chunks_exact(32).map(|c| <[u8; 32]>::try_from(c).unwrap_or([0u8; 32])).collect();
            Some(MergeMiningProof { btc_header, btc_coinbase, coinbase_branch })
        };
        Ok(SideHeader {
            parent_hash: parent_hash.fixed()?,
            number: number.u64()?,
            timestamp: timestamp.u64()?,
            coinbase: coinbase.fixed()?,
            state_root: state_root.fixed()?,
            transactions_root: transactions_root.fixed()?,
            receipts_root: receipts_root.fixed()?,
            gas_used: gas_used.u64()?,
            gas_limit: gas_limit.u64()?,
            difficulty: difficulty.u256()?,
            merge_mining,
        })
    }

    /// The sidechain target of this header's difficulty.
    pub fn target(&self) -> Target {
        difficulty_to_target(&self.difficulty)
    }
}

/// A sidechain block: a header and its transactions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SideBlock {
    /// The header.
    pub header: SideHeader,
    /// The transactions, in execution order.
    pub transactions: Vec<SignedTx>,
}

impl SideBlock {
    /// The block hash.
    pub fn hash(&self) -> [u8; 32] {
        self.header.hash()
    }

    /// The transactions root of this block's transactions.
    pub fn compute_transactions_root(&self) -> [u8; 32] {
        transactions_root(&self.transactions)
    }

    /// RLP `[header, [tx, …]]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = self.header.encode();
        let mut txs = Vec::new();
        for tx in &self.transactions {
            txs.extend_from_slice(&tx.encode());
        }
        rlp::encode_list(&mut payload, &txs);
        rlp::list(&payload)
    }

    /// Decodes [`SideBlock::encode`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<SideBlock, BlockDecodeError> {
        let items = rlp::decode_list_of(bytes, 2)?;
        let header = SideHeader::from_item(items[0])?;
        let transactions = items[1]
            .list()?
            .into_iter()
            .enumerate()
            .map(|(index, item)| {
                let fields = item.list().map_err(|e| BlockDecodeError::Tx { index, error: e.into() })?;
                SignedTx::from_items(&fields).map_err(|error| BlockDecodeError::Tx { index, error })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(SideBlock { header, transactions })
    }
}

/// The transactions root: the [`merkle`] root of the transactions'
/// encodings.
pub fn transactions_root(txs: &[SignedTx]) -> [u8; 32] {
    merkle::root_of(txs.iter().map(SignedTx::encode))
}
