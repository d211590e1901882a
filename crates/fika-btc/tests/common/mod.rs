//! Shared helpers for the integration tests: keys, signed transactions and
//! blocks built on any parent of a chain.
#![allow(dead_code, clippy::unwrap_used)]

use bitcoin::absolute::LockTime;
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, BlockHash, OutPoint, Script, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};
use fika_btc::chain::{AcceptOutcome, ChainState};
use fika_btc::params::{ChainParams, PowMode};
use fika_btc::sign;
use fika_btc::template::{TEMPLATE_VERSION, assemble_block, coinbase_tx};

/// A test key with its P2WPKH and P2PKH scripts.
pub struct Key {
    pub sk: SecretKey,
    pub pk: PublicKey,
    pub wpkh: ScriptBuf,
    pub pkh: ScriptBuf,
}

pub fn secp() -> Secp256k1<All> {
    Secp256k1::new()
}

#[track_caller]
pub fn key(seed: u8) -> Key {
    let sk = SecretKey::from_slice(&[seed.max(1); 32]).unwrap();
    let pk = PublicKey::from_secret_key(&secp(), &sk);
    Key { sk, pk, wpkh: sign::p2wpkh_script(&pk), pkh: sign::p2pkh_script(&pk) }
}

/// regtest-fast with simulated PoW.
pub fn params() -> ChainParams {
    let mut p = ChainParams::regtest_fast();
    p.pow_mode = PowMode::Simulated;
    p
}

/// A block on `parent` with `txs`, its coinbase paying the subsidy (plus
/// `fee`) to `payout`; `tag` makes otherwise identical blocks distinct.
#[track_caller]
pub fn block_on_with_fee(
    chain: &ChainState,
    parent: BlockHash,
    txs: Vec<Transaction>,
    payout: &Script,
    tag: u32,
    fee: u64,
) -> Block {
    let pe = chain.entry(&parent).expect("parent known");
    let height = pe.height + 1;
    let value = chain.params().subsidy(height) + Amount::from_sat(fee);
    let coinbase = coinbase_tx(height, payout, value, &tag.to_le_bytes());
    let header = bitcoin::block::Header {
        version: bitcoin::block::Version::from_consensus(TEMPLATE_VERSION),
        prev_blockhash: parent,
        merkle_root: bitcoin::TxMerkleNode::from_raw_hash(bitcoin::hashes::Hash::all_zeros()),
        time: pe.header.time + 10,
        bits: chain.next_bits_after(&parent).unwrap(),
        nonce: 0,
    };
    let mut block = assemble_block(header, coinbase, txs);
    if chain.params().pow_mode == PowMode::Real {
        assert!(fika_btc::pow::grind(&mut block.header, 1 << 24));
    }
    block
}

#[track_caller]
pub fn block_on(
    chain: &ChainState,
    parent: BlockHash,
    txs: Vec<Transaction>,
    payout: &Script,
    tag: u32,
) -> Block {
    block_on_with_fee(chain, parent, txs, payout, tag, 0)
}

/// The time to validate `block` at.
pub fn now_for(block: &Block) -> u64 {
    u64::from(block.header.time)
}

/// Accepts a block that must be accepted.
#[track_caller]
pub fn accept(chain: &mut ChainState, block: &Block) -> AcceptOutcome {
    match chain.accept_block(block.clone(), now_for(block)) {
        Ok(o) => {
            assert!(o.accepted, "block {} not accepted: {:?}", block.block_hash(), o.invalid);
            o
        }
        Err(e) => panic!("block {} rejected: {e}", block.block_hash()),
    }
}

/// Mines `n` empty blocks on the tip paying `payout`; returns them.
#[track_caller]
pub fn extend(chain: &mut ChainState, n: usize, payout: &Script, tag: u32) -> Vec<Block> {
    (0..n)
        .map(|_| {
            let b = block_on(chain, chain.tip_hash(), vec![], payout, tag);
            accept(chain, &b);
            b
        })
        .collect()
}

/// The first output of the coinbase of `block`.
pub fn coinbase_out(block: &Block) -> (OutPoint, Amount) {
    let cb = &block.txdata[0];
    (OutPoint::new(cb.compute_txid(), 0), cb.output[0].value)
}

/// A transaction spending P2WPKH `inputs` of `key`, paying `outputs`, signed.
#[track_caller]
pub fn spend_wpkh(key: &Key, inputs: &[(OutPoint, Amount)], outputs: &[(ScriptBuf, u64)]) -> Transaction {
    let mut tx = unsigned(inputs, outputs);
    for (i, (_, value)) in inputs.iter().enumerate() {
        sign::sign_p2wpkh_input(&secp(), &mut tx, i, &key.sk, *value, EcdsaSighashType::All).unwrap();
    }
    tx
}

/// A transaction spending P2PKH `inputs` of `key`, paying `outputs`, signed.
#[track_caller]
pub fn spend_pkh(key: &Key, inputs: &[OutPoint], outputs: &[(ScriptBuf, u64)]) -> Transaction {
    let ins: Vec<(OutPoint, Amount)> = inputs.iter().map(|o| (*o, Amount::ZERO)).collect();
    let mut tx = unsigned(&ins, outputs);
    for i in 0..inputs.len() {
        sign::sign_p2pkh_input(&secp(), &mut tx, i, &key.sk, EcdsaSighashType::All).unwrap();
    }
    tx
}

pub fn unsigned(inputs: &[(OutPoint, Amount)], outputs: &[(ScriptBuf, u64)]) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|(o, _)| TxIn {
                previous_output: *o,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs
            .iter()
            .map(|(s, v)| TxOut { value: Amount::from_sat(*v), script_pubkey: s.clone() })
            .collect(),
    }
}

/// A chain with `n` blocks paying `payout` (coinbases of heights 1..=n).
#[track_caller]
pub fn chain_with(n: usize, payout: &Script) -> (ChainState, Vec<Block>) {
    let mut chain = ChainState::new(params());
    let blocks = extend(&mut chain, n, payout, 0);
    (chain, blocks)
}

/// Replays `blocks` (in order) on a fresh chain with the same params.
#[track_caller]
pub fn replay(params: ChainParams, blocks: &[Block]) -> ChainState {
    let mut chain = ChainState::new(params);
    for b in blocks {
        accept(&mut chain, b);
    }
    chain
}
