//! Block templates: a coinbase paying subsidy plus fees, mempool
//! transactions by package fee rate within the weight limit, the merkle root
//! and witness commitment, `bits` from the retarget rule and a valid time.

use std::sync::Arc;

use bitcoin::absolute::LockTime;
use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::hashes::Hash;
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::transaction::Version;
use bitcoin::{Amount, Block, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness};

use crate::chain::ChainState;
use crate::mempool::Mempool;
use crate::merkle;
use crate::params::PowMode;
use crate::pow;

/// Weight kept free for the header and coinbase (Core's default).
pub const COINBASE_RESERVED_WEIGHT: u64 = 4000;

/// Sigop cost kept free for the coinbase (Core's default).
pub const COINBASE_RESERVED_SIGOPS: u64 = 400;

/// Header version of templates (BIP9 top bits, no deployment signalled).
pub const TEMPLATE_VERSION: i32 = 0x2000_0000;

/// A block ready to be mined.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockTemplate {
    /// The block (nonce 0 until solved).
    pub block: Block,
    /// Its height.
    pub height: u32,
    /// Fees of its transactions.
    pub fees: Amount,
    /// The subsidy at this height.
    pub subsidy: Amount,
}

impl BlockTemplate {
    /// Grinds the nonce until the header meets its target (at most
    /// `max_tries` nonces); returns whether it did. Only needed in
    /// [`PowMode::Real`].
    pub fn solve(&mut self, max_tries: u64) -> bool {
        pow::grind(&mut self.block.header, max_tries)
    }
}

/// The coinbase scriptSig at `height`: the BIP34 height push followed by
/// `extra` (at most 90 bytes are used) or `OP_0`, so it is always 2..=100
/// bytes long.
pub fn coinbase_script_sig(height: u32, extra: &[u8]) -> ScriptBuf {
    let builder = Builder::new().push_int(i64::from(height));
    let extra = &extra[..extra.len().min(90)];
    if extra.is_empty() {
        builder.push_opcode(bitcoin::opcodes::OP_0).into_script()
    } else {
        let mut push = PushBytesBuf::new();
        // At most 90 bytes: always fits a push.
        let _ = push.extend_from_slice(extra);
        builder.push_slice(push).into_script()
    }
}

/// A coinbase transaction for `height` paying `value` to `payout`.
pub fn coinbase_tx(height: u32, payout: &Script, value: Amount, extra: &[u8]) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::null(),
            script_sig: coinbase_script_sig(height, extra),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value, script_pubkey: payout.to_owned() }],
    }
}

/// Assembles a block on top of `prev` from a coinbase and transactions:
/// adds the witness commitment (with a zero reserved value) if any
/// transaction has witness data, and sets the merkle root.
pub fn assemble_block(header: Header, mut coinbase: Transaction, txs: Vec<Transaction>) -> Block {
    let has_witness = txs.iter().any(|t| t.input.iter().any(|i| !i.witness.is_empty()));
    let mut txdata = Vec::with_capacity(txs.len() + 1);
    if has_witness {
        if let Some(input) = coinbase.input.first_mut() {
            input.witness = Witness::from_slice(&[[0u8; 32]]);
        }
    }
    txdata.push(coinbase);
    txdata.extend(txs);
    let mut block = Block { header, txdata };
    if has_witness {
        if let Some(root) = block.witness_root() {
            let commitment = Block::compute_witness_commitment(&root, &[0u8; 32]);
            let mut script = vec![0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed];
            script.extend_from_slice(&commitment.to_byte_array());
            if let Some(cb) = block.txdata.first_mut() {
                cb.output.push(TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::from_bytes(script) });
            }
        }
    }
    block.header.merkle_root = merkle::block_merkle_root(&block);
    block
}

/// Builds a template on the best tip of `chain` with transactions from
/// `mempool`, paying to `payout`; `now` is Unix seconds, `extra` goes into
/// the coinbase scriptSig (e.g. a miner tag or extra nonce).
pub fn build_template(
    chain: &ChainState,
    mempool: &Mempool,
    payout: &Script,
    now: u64,
    extra: &[u8],
) -> BlockTemplate {
    let params = chain.params();
    let height = chain.tip_height() + 1;
    let max_weight = params.max_block_weight.saturating_sub(COINBASE_RESERVED_WEIGHT);
    let max_sigops = params.max_block_sigops_cost.saturating_sub(COINBASE_RESERVED_SIGOPS);
    let txs: Vec<Arc<Transaction>> = mempool.select_for_block(max_weight, max_sigops);
    let fees: u64 = txs.iter().filter_map(|t| mempool.get(&t.compute_txid())).map(|e| e.fee.to_sat()).sum();
    let subsidy = params.subsidy(height);
    let coinbase = coinbase_tx(height, payout, subsidy + Amount::from_sat(fees), extra);
    let time = now.min(u64::from(u32::MAX)) as u32;
    let header = Header {
        version: BlockVersion::from_consensus(TEMPLATE_VERSION),
        prev_blockhash: chain.tip_hash(),
        merkle_root: bitcoin::TxMerkleNode::all_zeros(),
        time: time.max(chain.median_time_past().saturating_add(1)),
        bits: chain.next_bits(),
        nonce: 0,
    };
    let block = assemble_block(header, coinbase, txs.iter().map(|t| (**t).clone()).collect());
    BlockTemplate { block, height, fees: Amount::from_sat(fees), subsidy }
}

/// [`build_template`], then, in [`PowMode::Real`], grinds the nonce (up to
/// 2^32 tries, enough for easy targets). Returns the block.
pub fn mine_block(chain: &ChainState, mempool: &Mempool, payout: &Script, now: u64, extra: &[u8]) -> Block {
    let mut t = build_template(chain, mempool, payout, now, extra);
    if chain.params().pow_mode == PowMode::Real {
        t.solve(u64::from(u32::MAX));
    }
    t.block
}
