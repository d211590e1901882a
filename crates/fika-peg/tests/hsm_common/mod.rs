//! Helpers for the PowHSM tests: deterministic keys and federations,
//! sidechain header chains built directly (any difficulty, any receipts,
//! simulated or real merge-mining proofs, deliberate defects), a stand-in
//! Bridge system contract that emits `release_requested` on a real
//! sidechain, peg-out transactions, and typed wrappers around the HSM's
//! command interface.

#![allow(dead_code, clippy::unwrap_used)]

use bitcoin::absolute::LockTime;
use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxMerkleNode, TxOut,
    Txid, Witness, ecdsa,
};
use fika_btc::template::{assemble_block, coinbase_tx};
use fika_peg::federation::SpendBranch;
use fika_peg::hsm::{
    AdvanceOutcome, HsmCommand, HsmError, HsmResponse, HsmState, PowHsm, release_requested_log,
};
use fika_peg::{BRIDGE_ADDRESS, Federation, SideAddress};
use fika_side::block::add_merge_mining_tag;
use fika_side::{
    BlockEnvInfo, Log, MergeMiningProof, MerkleProof, PowMode, Receipt, SideHeader, SystemCallOutcome,
    SystemContract, U256, difficulty_to_target, receipt_proof, receipts_root,
};

/// A deterministic secret key from a tag and an index.
pub fn secret(tag: &str, i: u32) -> SecretKey {
    let mut data = tag.as_bytes().to_vec();
    data.extend_from_slice(&i.to_be_bytes());
    SecretKey::from_slice(&sha256::Hash::hash(&data).to_byte_array()).unwrap()
}

/// An `n`-member P2SH-P2WSH ERP federation (4 emergency keys, the mainnet
/// CSV) and its members' secrets, in the order they were generated.
pub fn federation(secp: &Secp256k1<All>, n: u32) -> (Federation, Vec<SecretKey>) {
    let members: Vec<SecretKey> = (0..n).map(|i| secret("hsm-member", i)).collect();
    let emergency: Vec<PublicKey> =
        (0..4).map(|i| PublicKey::from_secret_key(secp, &secret("hsm-emergency", i))).collect();
    let pks: Vec<PublicKey> = members.iter().map(|s| PublicKey::from_secret_key(secp, s)).collect();
    (Federation::p2sh_p2wsh_erp(&pks, &emergency, 52_560).unwrap(), members)
}

/// A peg-out spending one federation UTXO (`funding:vout`) to a P2WPKH,
/// unsigned, with the input's scriptSig already holding the P2WSH program
/// (what signatures do not change, so the txid the Bridge names stays the
/// txid of the signed transaction).
pub fn pegout_tx(fed: &Federation, funding: &str, pay: Amount) -> Transaction {
    let secp = Secp256k1::new();
    let payee = PublicKey::from_secret_key(&secp, &secret("payee", 0));
    let script_sig = fed.spend_data(SpendBranch::Normal, &[]).unwrap().script_sig;
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::hash(funding.as_bytes()), 0),
            script_sig,
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: pay, script_pubkey: fika_btc::sign::p2wpkh_script(&payee) }],
    }
}

/// The `release_requested` log naming `tx`, from the Bridge.
pub fn release_log(tx: &Transaction, amount: Amount) -> Log {
    release_requested_log(BRIDGE_ADDRESS, [0x5a; 32], &tx.compute_txid(), amount)
}

/// A successful receipt holding `logs`.
pub fn receipt(logs: Vec<Log>) -> Receipt {
    Receipt { status: true, cumulative_gas_used: 60_000, gas_used: 60_000, logs }
}

fn dummy_tx(i: u8) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint { txid: Txid::hash(&[i]), vout: 0 },
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(1000 + u64::from(i)), script_pubkey: ScriptBuf::new() }],
    }
}

/// A merge-mining proof for `hash` from a Bitcoin block of 4 transactions;
/// with `grind_for`, the Bitcoin nonce is ground until the header hash meets
/// the sidechain target of that difficulty (real PoW).
pub fn mm_proof(hash: &[u8; 32], grind_for: Option<U256>) -> MergeMiningProof {
    let coinbase = coinbase_tx(101, &ScriptBuf::new(), Amount::from_sat(50_0000_0000), b"fika-hsm");
    let header = Header {
        version: BlockVersion::from_consensus(0x2000_0000),
        prev_blockhash: BlockHash::all_zeros(),
        merkle_root: TxMerkleNode::all_zeros(),
        time: 1_700_000_000,
        bits: CompactTarget::from_consensus(0x207f_ffff),
        nonce: 0,
    };
    let mut block = assemble_block(header, coinbase, (1..4).map(dummy_tx).collect());
    add_merge_mining_tag(&mut block, hash);
    if let Some(d) = grind_for {
        let target = difficulty_to_target(&d);
        while !target.is_met_by(block.header.block_hash()) {
            block.header.nonce += 1;
        }
    }
    MergeMiningProof::from_bitcoin_block(&block).unwrap()
}

/// How a header's merge-mining proof is made.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mm {
    /// A valid proof (ground in [`PowMode::Real`] chains).
    Valid,
    /// A proof whose tag commits to another header.
    WrongTag,
    /// No proof at all.
    Missing,
    /// A structurally valid proof whose nonce was never ground.
    Unground,
}

/// A sidechain of headers built directly: index = block number, block 0 is
/// a genesis without merge mining.
#[derive(Clone, Debug)]
pub struct HeaderChain {
    pub headers: Vec<SideHeader>,
    pub receipts: Vec<Vec<Receipt>>,
    pub pow_mode: PowMode,
    /// The miner of the next blocks (changing it forks the chain).
    pub miner: [u8; 20],
}

impl HeaderChain {
    /// A genesis-only chain.
    pub fn new(pow_mode: PowMode) -> HeaderChain {
        let genesis = SideHeader {
            parent_hash: [0u8; 32],
            number: 0,
            timestamp: 1_700_000_000,
            coinbase: [0u8; 20],
            state_root: [0x11; 32],
            transactions_root: [0u8; 32],
            receipts_root: receipts_root(&[]),
            gas_used: 0,
            gas_limit: 6_800_000,
            difficulty: U256::from(1u8),
            merge_mining: None,
        };
        HeaderChain { headers: vec![genesis], receipts: vec![Vec::new()], pow_mode, miner: [0xee; 20] }
    }

    /// Appends a block of `difficulty` with `receipts`; returns its hash.
    pub fn push(&mut self, difficulty: u64, receipts: Vec<Receipt>) -> [u8; 32] {
        self.push_with(U256::from(difficulty), receipts, Mm::Valid, |_| {})
    }

    /// Appends `n` empty blocks of `difficulty`.
    pub fn extend(&mut self, n: usize, difficulty: u64) {
        for _ in 0..n {
            self.push(difficulty, Vec::new());
        }
    }

    /// Appends a block with full control: its difficulty, receipts, how its
    /// merge-mining proof is made, and a last edit of the header before the
    /// proof is made.
    pub fn push_with(
        &mut self,
        difficulty: U256,
        receipts: Vec<Receipt>,
        mm: Mm,
        edit: impl FnOnce(&mut SideHeader),
    ) -> [u8; 32] {
        let parent = self.headers.last().unwrap();
        let number = parent.number + 1;
        let mut header = SideHeader {
            parent_hash: parent.hash(),
            number,
            timestamp: parent.timestamp + 10,
            coinbase: self.miner,
            state_root: [number as u8; 32],
            transactions_root: [0u8; 32],
            receipts_root: receipts_root(&receipts),
            gas_used: receipts.last().map_or(0, |r| r.cumulative_gas_used),
            gas_limit: 6_800_000,
            difficulty,
            merge_mining: None,
        };
        edit(&mut header);
        let own = header.hash_for_merged_mining();
        let grind = (self.pow_mode == PowMode::Real).then_some(header.difficulty);
        header.merge_mining = match mm {
            Mm::Valid => Some(mm_proof(&own, grind)),
            Mm::WrongTag => Some(mm_proof(&[0xbd; 32], grind)),
            Mm::Missing => None,
            Mm::Unground => Some(mm_proof(&own, None)),
        };
        let hash = header.hash();
        self.headers.push(header);
        self.receipts.push(receipts);
        hash
    }

    /// The number of the tip.
    pub fn tip(&self) -> u64 {
        self.headers.len() as u64 - 1
    }

    /// The hash of block `n`.
    pub fn hash(&self, n: u64) -> [u8; 32] {
        self.headers[n as usize].hash()
    }

    /// Blocks `0..=n` (to fork from block `n`).
    pub fn truncated(&self, n: u64) -> HeaderChain {
        let mut c = self.clone();
        c.headers.truncate(n as usize + 1);
        c.receipts.truncate(n as usize + 1);
        c
    }

    /// Headers `newest` down to `oldest`, newest first.
    pub fn newest_first(&self, newest: u64, oldest: u64) -> Vec<SideHeader> {
        (oldest..=newest).rev().map(|n| self.headers[n as usize].clone()).collect()
    }

    /// Receipt `i` of block `n` and its proof.
    pub fn receipt_and_proof(&self, n: u64, i: usize) -> (Receipt, MerkleProof) {
        let receipts = &self.receipts[n as usize];
        (receipts[i].clone(), receipt_proof(receipts, i).unwrap())
    }
}

/// A stand-in for the Bridge on a real sidechain: called with
/// `txid (32 bytes, internal order) ‖ amount (8 bytes BE)` it emits
/// `release_requested` naming that Bitcoin transaction, with the calling
/// sidechain transaction's hash as `rskTxHash`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct FakeBridge;

impl SystemContract for FakeBridge {
    fn address(&self) -> [u8; 20] {
        BRIDGE_ADDRESS.0
    }

    fn call(
        &mut self,
        _caller: [u8; 20],
        _value: u128,
        data: &[u8],
        block: &BlockEnvInfo,
    ) -> Result<SystemCallOutcome, String> {
        let [txid @ .., a0, a1, a2, a3, a4, a5, a6, a7] = data else {
            return Err("bad call".into());
        };
        let txid = <[u8; 32]>::try_from(txid).map_err(|_| "bad txid".to_string())?;
        let amount = u64::from_be_bytes([*a0, *a1, *a2, *a3, *a4, *a5, *a6, *a7]);
        Ok(SystemCallOutcome {
            output: Vec::new(),
            logs: vec![release_requested_log(
                SideAddress(BRIDGE_ADDRESS.0),
                block.tx_hash,
                &Txid::from_byte_array(txid),
                Amount::from_sat(amount),
            )],
            transfers: Vec::new(),
        })
    }

    fn read_only_call(&self, _: [u8; 20], _: &[u8], _: &BlockEnvInfo) -> Result<Vec<u8>, String> {
        Ok(Vec::new())
    }

    fn state_digest(&self) -> [u8; 32] {
        [0x42; 32]
    }
}

/// Call data making [`FakeBridge`] announce `tx`.
pub fn fake_bridge_call(tx: &Transaction, amount: Amount) -> Vec<u8> {
    let mut d = tx.compute_txid().to_byte_array().to_vec();
    d.extend_from_slice(&amount.to_sat().to_be_bytes());
    d
}

// ---- typed wrappers around the command interface ----

/// `AdvanceBlockchain`.
pub fn advance(hsm: &mut PowHsm, headers: Vec<SideHeader>) -> Result<AdvanceOutcome, HsmError> {
    match hsm.execute(HsmCommand::AdvanceBlockchain { headers })? {
        HsmResponse::Advance(o) => Ok(o),
        other => panic!("unexpected response {other:?}"),
    }
}

/// `UpdateAncestor`; returns the new ancestor.
pub fn update_ancestor(hsm: &mut PowHsm, headers: Vec<SideHeader>) -> Result<[u8; 32], HsmError> {
    match hsm.execute(HsmCommand::UpdateAncestor { headers })? {
        HsmResponse::AncestorUpdated { ancestor_block, .. } => Ok(ancestor_block),
        other => panic!("unexpected response {other:?}"),
    }
}

/// `Sign`.
pub fn sign(
    hsm: &mut PowHsm,
    tx: &Transaction,
    input: usize,
    value: Amount,
    receipt: &Receipt,
    proof: &MerkleProof,
) -> Result<ecdsa::Signature, HsmError> {
    let cmd = HsmCommand::Sign {
        tx: tx.clone(),
        input,
        value,
        receipt: receipt.clone(),
        receipt_proof: proof.clone(),
        federation: None,
    };
    match hsm.execute(cmd)? {
        HsmResponse::Signature(s) => Ok(s),
        other => panic!("unexpected response {other:?}"),
    }
}

/// `GetState`.
pub fn state(hsm: &mut PowHsm) -> HsmState {
    match hsm.execute(HsmCommand::GetState).unwrap() {
        HsmResponse::State(s) => *s,
        other => panic!("unexpected response {other:?}"),
    }
}

/// `GetPublicKey`.
pub fn public_key(hsm: &mut PowHsm) -> PublicKey {
    match hsm.execute(HsmCommand::GetPublicKey).unwrap() {
        HsmResponse::PublicKey(pk) => pk,
        other => panic!("unexpected response {other:?}"),
    }
}
