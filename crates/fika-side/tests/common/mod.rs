//! Shared test helpers: keys, a toy counter system contract, merge mining
//! with real Bitcoin blocks, and a tiny EVM assembler.
#![allow(dead_code, clippy::unwrap_used)]

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::SecretKey;
use bitcoin::{
    Amount, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness,
};
use fika_btc::template::{assemble_block, coinbase_tx};
use fika_side::block::add_merge_mining_tag;
use fika_side::{
    BlockEnvInfo, BlockStatus, ChainConfig, Genesis, Log, MergeMiningProof, SideBlock, SideChain, SignedTx,
    SystemCallOutcome, SystemContract, U256, UnsignedTx, WEI_PER_RBTC, address_of_secret, keccak256,
};

/// A secret key from a seed byte.
pub fn key(seed: u8) -> SecretKey {
    SecretKey::from_slice(&[seed; 32]).unwrap()
}

/// The address of [`key`]`(seed)`.
pub fn addr(seed: u8) -> [u8; 20] {
    address_of_secret(&key(seed))
}

pub const ALICE: u8 = 1;
pub const BOB: u8 = 2;
pub const MINER: [u8; 20] = [0xee; 20];
pub const GWEI: u128 = 1_000_000_000;

/// Address of the toy counter system contract.
pub const COUNTER: [u8; 20] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0x42];

/// `keccak256("Incremented(uint256)")`.
pub fn incremented_topic() -> [u8; 32] {
    keccak256(b"Incremented(uint256)")
}

/// `keccak256("Paid(address,uint256)")`.
pub fn paid_topic() -> [u8; 32] {
    keccak256(b"Paid(address,uint256)")
}

/// A toy system contract: a counter that can also pay out of its balance.
///
/// * `[0x01]`: increments, logs `Incremented(count)`, returns the count;
/// * `[0x02, to (20 bytes), wei (16 bytes BE)]`: pays `wei` to `to`;
/// * `[0x03]`: increments, then fails (the increment must not stick);
/// * read-only: returns the count as a 32-byte word.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Counter {
    pub count: u64,
    /// Values received by successful calls, in order.
    pub received: Vec<u128>,
    /// What the last successful call saw: its own balance, `tx.origin` and
    /// the origin's public key.
    pub last_seen: Option<(u128, [u8; 20], Option<[u8; 33]>)>,
    /// Accounts sharing the block fees (when the chain has a fee share).
    pub sharers: Vec<[u8; 20]>,
}

fn word(v: u64) -> Vec<u8> {
    U256::from(v).to_be_bytes::<32>().to_vec()
}

impl SystemContract for Counter {
    fn address(&self) -> [u8; 20] {
        COUNTER
    }

    fn call(
        &mut self,
        _caller: [u8; 20],
        value: u128,
        data: &[u8],
        block: &BlockEnvInfo,
    ) -> Result<SystemCallOutcome, String> {
        self.last_seen = Some((block.contract_balance, block.tx_origin, block.tx_origin_pubkey));
        match data {
            [0x01] => {
                self.count += 1;
                self.received.push(value);
                Ok(SystemCallOutcome {
                    output: word(self.count),
                    logs: vec![Log {
                        address: [0; 20],
                        topics: vec![incremented_topic()],
                        data: word(self.count),
                    }],
                    transfers: vec![],
                })
            }
            [0x02, rest @ ..] if rest.len() == 36 => {
                let to: [u8; 20] = rest[..20].try_into().unwrap();
                let wei = u128::from_be_bytes(rest[20..].try_into().unwrap());
                self.received.push(value);
                let mut topic_to = [0u8; 32];
                topic_to[12..].copy_from_slice(&to);
                Ok(SystemCallOutcome {
                    output: vec![],
                    logs: vec![Log {
                        address: [0; 20],
                        topics: vec![paid_topic(), topic_to],
                        data: U256::from(wei).to_be_bytes::<32>().to_vec(),
                    }],
                    transfers: vec![(to, wei)],
                })
            }
            [0x03] => {
                self.count += 1;
                Err("boom".into())
            }
            _ => Err(format!("unknown method {}", hex::encode(data))),
        }
    }

    fn read_only_call(
        &self,
        _caller: [u8; 20],
        _data: &[u8],
        _block: &BlockEnvInfo,
    ) -> Result<Vec<u8>, String> {
        Ok(word(self.count))
    }

    fn state_digest(&self) -> [u8; 32] {
        let mut buf = self.count.to_be_bytes().to_vec();
        for r in &self.received {
            buf.extend_from_slice(&r.to_be_bytes());
        }
        if let Some((balance, origin, pubkey)) = &self.last_seen {
            buf.extend_from_slice(&balance.to_be_bytes());
            buf.extend_from_slice(origin);
            buf.extend_from_slice(pubkey.as_ref().map_or(&[][..], |p| &p[..]));
        }
        keccak256(&buf)
    }

    fn fee_recipients(&self) -> Vec<[u8; 20]> {
        self.sharers.clone()
    }
}

/// Call data paying `wei` to `to` from the counter.
pub fn pay_data(to: [u8; 20], wei: u128) -> Vec<u8> {
    let mut d = vec![0x02];
    d.extend_from_slice(&to);
    d.extend_from_slice(&wei.to_be_bytes());
    d
}

/// A regtest chain whose genesis gives Alice and Bob 10 RBTC each.
pub fn chain_config() -> ChainConfig {
    let mut config = ChainConfig::regtest();
    config.genesis = Genesis::new(1_700_000_000, U256::from(1u8))
        .with_balance(addr(ALICE), 10 * WEI_PER_RBTC)
        .with_balance(addr(BOB), 10 * WEI_PER_RBTC)
        .with_bridge_fund();
    config
}

pub fn new_chain() -> SideChain<Counter> {
    SideChain::new(chain_config(), Counter::default())
}

/// A signed transaction from `from` (seed).
pub fn tx(
    from: u8,
    nonce: u64,
    to: Option<[u8; 20]>,
    value: u128,
    data: Vec<u8>,
    gas_limit: u64,
) -> SignedTx {
    UnsignedTx { nonce, gas_price: GWEI, gas_limit, to, value, data, chain_id: Some(33) }.sign(&key(from))
}

/// A plain transfer with 21,000 gas.
pub fn transfer(from: u8, nonce: u64, to: [u8; 20], value: u128) -> SignedTx {
    tx(from, nonce, Some(to), value, vec![], 21_000)
}

fn dummy_tx(i: u8) -> Transaction {
    Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: bitcoin::Txid::hash(&[i]), vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(1000 + u64::from(i)), script_pubkey: ScriptBuf::new() }],
    }
}

/// A Bitcoin block (with `extra_txs` transactions besides the coinbase)
/// whose coinbase carries the merge-mining tag of `hash`.
pub fn btc_block(hash: &[u8; 32], extra_txs: u8) -> bitcoin::Block {
    let coinbase = coinbase_tx(101, &ScriptBuf::new(), Amount::from_sat(50_0000_0000), b"fika-side");
    let header = Header {
        version: Version::from_consensus(0x2000_0000),
        prev_blockhash: BlockHash::all_zeros(),
        merkle_root: bitcoin::TxMerkleNode::all_zeros(),
        time: 1_700_000_000,
        bits: CompactTarget::from_consensus(0x207f_ffff),
        nonce: 0,
    };
    let mut block = assemble_block(header, coinbase, (0..extra_txs).map(dummy_tx).collect());
    add_merge_mining_tag(&mut block, hash);
    block
}

/// A merge-mining proof for `hash` from a Bitcoin block of 5 transactions.
pub fn mm_proof(hash: &[u8; 32]) -> MergeMiningProof {
    MergeMiningProof::from_bitcoin_block(&btc_block(hash, 4)).unwrap()
}

/// Builds a block on `parent` at `parent time + dt` and returns it (not
/// accepted).
#[track_caller]
pub fn build(chain: &mut SideChain<Counter>, parent: [u8; 32], txs: &[SignedTx], dt: u64) -> SideBlock {
    let time = chain.header(&parent).unwrap().timestamp + dt;
    chain.build_block(&parent, txs, MINER, time, mm_proof).unwrap()
}

/// Builds a block on `parent` with `txs` (all of which must be included)
/// and accepts it; returns its hash.
#[track_caller]
pub fn mine(chain: &mut SideChain<Counter>, parent: [u8; 32], txs: &[SignedTx]) -> [u8; 32] {
    let block = build(chain, parent, txs, 10);
    assert_eq!(block.transactions.len(), txs.len(), "a transaction was left out of the template");
    let out = chain.accept_block(block).unwrap();
    assert_eq!(out.status, BlockStatus::Connected);
    out.hash
}

/// Mines on the best tip.
#[track_caller]
pub fn mine_tip(chain: &mut SideChain<Counter>, txs: &[SignedTx]) -> [u8; 32] {
    let tip = chain.best_hash();
    mine(chain, tip, txs)
}

// ---- a tiny EVM assembler ----

pub mod op {
    pub const STOP: u8 = 0x00;
    pub const ADD: u8 = 0x01;
    pub const CALLDATALOAD: u8 = 0x35;
    pub const CODECOPY: u8 = 0x39;
    pub const POP: u8 = 0x50;
    pub const MSTORE: u8 = 0x52;
    pub const MSTORE8: u8 = 0x53;
    pub const SLOAD: u8 = 0x54;
    pub const SSTORE: u8 = 0x55;
    pub const GAS: u8 = 0x5a;
    pub const PUSH1: u8 = 0x60;
    pub const PUSH20: u8 = 0x73;
    pub const PUSH32: u8 = 0x7f;
    pub const DUP1: u8 = 0x80;
    pub const LOG1: u8 = 0xa1;
    pub const CALL: u8 = 0xf1;
    pub const RETURN: u8 = 0xf3;
    pub const DELEGATECALL: u8 = 0xf4;
    pub const STATICCALL: u8 = 0xfa;
    pub const REVERT: u8 = 0xfd;
}

/// Init code returning `runtime` as the contract's code.
pub fn deploy_code(runtime: &[u8]) -> Vec<u8> {
    let len = u8::try_from(runtime.len()).unwrap();
    let mut code = vec![
        op::PUSH1,
        len,
        op::PUSH1,
        12,
        op::PUSH1,
        0,
        op::CODECOPY,
        op::PUSH1,
        len,
        op::PUSH1,
        0,
        op::RETURN,
    ];
    assert_eq!(code.len(), 12);
    code.extend_from_slice(runtime);
    code
}

/// Runtime code: stores calldata word 0 in slot 0 and emits `LOG1(topic)`
/// with the word as data.
pub fn store_and_log_runtime(topic: [u8; 32]) -> Vec<u8> {
    let mut c =
        vec![op::PUSH1, 0, op::CALLDATALOAD, op::DUP1, op::PUSH1, 0, op::SSTORE, op::PUSH1, 0, op::MSTORE];
    c.push(op::PUSH32);
    c.extend_from_slice(&topic);
    c.extend_from_slice(&[op::PUSH1, 0x20, op::PUSH1, 0, op::LOG1, op::STOP]);
    c
}

/// Code calling `target` with the single byte `byte` as data (value 0),
/// discarding the result.
pub fn call_with_byte(target: [u8; 20], byte: Option<u8>) -> Vec<u8> {
    let mut c = Vec::new();
    let args_size = match byte {
        Some(b) => {
            c.extend_from_slice(&[op::PUSH1, b, op::PUSH1, 0, op::MSTORE8]);
            1
        }
        None => 0,
    };
    c.extend_from_slice(&[op::PUSH1, 0, op::PUSH1, 0, op::PUSH1, args_size, op::PUSH1, 0, op::PUSH1, 0]);
    c.push(op::PUSH20);
    c.extend_from_slice(&target);
    c.extend_from_slice(&[op::GAS, op::CALL, op::POP]);
    c
}

/// Code ending in `REVERT(0, 0)`.
pub fn revert_tail() -> Vec<u8> {
    vec![op::PUSH1, 0, op::PUSH1, 0, op::REVERT]
}

/// Runtime code: `STATICCALL(target)` with no data and return its 32-byte
/// output.
pub fn static_read_runtime(target: [u8; 20]) -> Vec<u8> {
    let mut c = vec![op::PUSH1, 0x20, op::PUSH1, 0, op::PUSH1, 0, op::PUSH1, 0, op::PUSH20];
    c.extend_from_slice(&target);
    c.extend_from_slice(&[op::GAS, op::STATICCALL, op::POP, op::PUSH1, 0x20, op::PUSH1, 0, op::RETURN]);
    c
}

/// Runtime code: `DELEGATECALL(target, [byte])`, stores `result + 5` in
/// slot 0.
pub fn delegate_runtime(target: [u8; 20], byte: u8) -> Vec<u8> {
    let mut c = vec![op::PUSH1, byte, op::PUSH1, 0, op::MSTORE8];
    c.extend_from_slice(&[op::PUSH1, 0, op::PUSH1, 0, op::PUSH1, 1, op::PUSH1, 0, op::PUSH20]);
    c.extend_from_slice(&target);
    c.extend_from_slice(&[
        op::GAS,
        op::DELEGATECALL,
        op::PUSH1,
        5,
        op::ADD,
        op::PUSH1,
        0,
        op::SSTORE,
        op::STOP,
    ]);
    c
}

/// Deploys `runtime` from `from` (seed) with `nonce` in a block on the tip;
/// returns the contract address.
#[track_caller]
pub fn deploy(chain: &mut SideChain<Counter>, from: u8, nonce: u64, runtime: &[u8]) -> [u8; 20] {
    let t = tx(from, nonce, None, 0, deploy_code(runtime), 300_000);
    let h = t.tx_hash();
    mine_tip(chain, &[t]);
    let info = chain.receipt(&h).unwrap();
    assert!(info.receipt.status, "deployment failed");
    let address = info.contract_address.unwrap();
    assert_eq!(chain.code(&address), runtime);
    address
}
