//! Test harness: a real Bitcoin chain (fika-btc's `ChainState`, every block
//! fully validated with Core's script engine), a federation with
//! deterministic keys, users who sign real transactions, and a Bridge fed
//! by a pegnatory.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::BTreeMap;

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::consensus::serialize;
use bitcoin::hashes::{Hash, sha256};
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{All, Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{
    Amount, Block, BlockHash, CompressedPublicKey, OutPoint, ScriptBuf, Sequence, Transaction, TxIn,
    TxMerkleNode, TxOut, Txid, Witness, absolute::LockTime, ecdsa,
};
use fika_btc::template::{assemble_block, coinbase_tx};
use fika_btc::{ChainParams, ChainState, sign};
use fika_peg::{BridgeState, Checkpoint, Federation, PegParams, RegisterError, Registration, SideAddress};

/// A deterministic secret key from a tag and an index.
pub fn secret(tag: &str, i: u32) -> SecretKey {
    let mut data = tag.as_bytes().to_vec();
    data.extend_from_slice(&i.to_be_bytes());
    SecretKey::from_slice(&sha256::Hash::hash(&data).to_byte_array()).expect("a sha256 is a valid key")
}

/// The public key of `sk`.
pub fn public(secp: &Secp256k1<All>, sk: &SecretKey) -> PublicKey {
    PublicKey::from_secret_key(secp, sk)
}

/// A 9-member federation with 4 emergency keys; returns it with the members'
/// and emergency keys' secrets in canonical (script) order.
pub fn federation_9(
    secp: &Secp256k1<All>,
    csv: u16,
    form: fika_peg::ScriptForm,
) -> (Federation, Vec<SecretKey>, Vec<SecretKey>) {
    federation_n(secp, 9, csv, form)
}

/// An `n`-member federation with 4 emergency keys.
pub fn federation_n(
    secp: &Secp256k1<All>,
    n: u32,
    csv: u16,
    form: fika_peg::ScriptForm,
) -> (Federation, Vec<SecretKey>, Vec<SecretKey>) {
    let members: Vec<SecretKey> = (0..n).map(|i| secret("member", i)).collect();
    let emergency: Vec<SecretKey> = (0..4).map(|i| secret("emergency", i)).collect();
    let mpk: Vec<PublicKey> = members.iter().map(|s| public(secp, s)).collect();
    let epk: Vec<PublicKey> = emergency.iter().map(|s| public(secp, s)).collect();
    let fed = Federation::new(&mpk, &epk, csv, form).expect("valid federation");
    let order = |keys: &[PublicKey], sks: Vec<SecretKey>| {
        keys.iter()
            .map(|k| *sks.iter().find(|s| public(secp, s) == *k).expect("key has a secret"))
            .collect::<Vec<_>>()
    };
    let m = order(fed.members(), members);
    let e = order(fed.emergency(), emergency);
    (fed, m, e)
}

/// How a user's coin is locked (and so how input 0 of a peg-in looks).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Lock {
    /// P2PKH.
    P2pkh,
    /// P2SH-P2WPKH.
    P2shP2wpkh,
    /// Native P2WPKH.
    P2wpkh,
    /// A 1-of-2 P2SH multisig.
    P2shMultisig,
}

/// A user with one key.
#[derive(Clone, Copy, Debug)]
pub struct User {
    /// The secret.
    pub sk: SecretKey,
    /// The public key.
    pub pk: PublicKey,
}

impl User {
    /// User `i`.
    pub fn new(secp: &Secp256k1<All>, i: u32) -> Self {
        let sk = secret("user", i);
        User { sk, pk: public(secp, &sk) }
    }

    /// The user's sidechain address (same key).
    pub fn side_address(&self) -> SideAddress {
        SideAddress::from_public_key(&self.pk)
    }

    /// A second key, for the multisig lock.
    fn cosigner(&self, secp: &Secp256k1<All>) -> PublicKey {
        public(secp, &secret("cosigner", self.pk.serialize()[1] as u32))
    }

    /// The multisig redeem script `1 <pk> <cosigner> 2 CHECKMULTISIG`.
    pub fn multisig_redeem(&self, secp: &Secp256k1<All>) -> ScriptBuf {
        Builder::new()
            .push_int(1)
            .push_slice(self.pk.serialize())
            .push_slice(self.cosigner(secp).serialize())
            .push_int(2)
            .push_opcode(bitcoin::opcodes::all::OP_CHECKMULTISIG)
            .into_script()
    }

    fn p2wpkh_redeem(&self) -> ScriptBuf {
        ScriptBuf::new_p2wpkh(&CompressedPublicKey(self.pk).wpubkey_hash())
    }

    /// The output script of `lock`.
    pub fn script(&self, secp: &Secp256k1<All>, lock: Lock) -> ScriptBuf {
        match lock {
            Lock::P2pkh => sign::p2pkh_script(&self.pk),
            Lock::P2wpkh => sign::p2wpkh_script(&self.pk),
            Lock::P2shP2wpkh => self.p2wpkh_redeem().to_p2sh(),
            Lock::P2shMultisig => self.multisig_redeem(secp).to_p2sh(),
        }
    }

    /// Signs input `index` of `tx`, which spends `prev` locked by `lock`.
    pub fn sign(&self, secp: &Secp256k1<All>, tx: &mut Transaction, index: usize, prev: &TxOut, lock: Lock) {
        match lock {
            Lock::P2pkh => sign::sign_p2pkh_input(secp, tx, index, &self.sk, EcdsaSighashType::All).unwrap(),
            Lock::P2wpkh => {
                sign::sign_p2wpkh_input(secp, tx, index, &self.sk, prev.value, EcdsaSighashType::All).unwrap()
            }
            Lock::P2shP2wpkh => {
                let redeem = self.p2wpkh_redeem();
                let sighash = SighashCache::new(&*tx)
                    .p2wpkh_signature_hash(index, &redeem, prev.value, EcdsaSighashType::All)
                    .unwrap();
                let sig = ecdsa::Signature {
                    signature: secp.sign_ecdsa(&Message::from_digest(sighash.to_byte_array()), &self.sk),
                    sighash_type: EcdsaSighashType::All,
                };
                tx.input[index].witness = Witness::p2wpkh(&sig, &self.pk);
                tx.input[index].script_sig = Builder::new()
                    .push_slice(PushBytesBuf::try_from(redeem.to_bytes()).unwrap())
                    .into_script();
            }
            Lock::P2shMultisig => {
                let redeem = self.multisig_redeem(secp);
                let sighash = SighashCache::new(&*tx)
                    .legacy_signature_hash(index, &redeem, EcdsaSighashType::All.to_u32())
                    .unwrap();
                let sig = ecdsa::Signature {
                    signature: secp.sign_ecdsa(&Message::from_digest(sighash.to_byte_array()), &self.sk),
                    sighash_type: EcdsaSighashType::All,
                };
                tx.input[index].script_sig = Builder::new()
                    .push_int(0)
                    .push_slice(PushBytesBuf::try_from(sig.to_vec()).unwrap())
                    .push_slice(PushBytesBuf::try_from(redeem.to_bytes()).unwrap())
                    .into_script();
            }
        }
    }
}

/// Unix time of the first block after genesis.
const NOW: u64 = 2_000_000_000;

/// Fee every harness transaction pays.
pub const FEE: u64 = 2_000;

/// A Bitcoin chain, a Bridge and the people around them.
pub struct World {
    /// Signing context.
    pub secp: Secp256k1<All>,
    /// The Bitcoin chain (fully validating).
    pub btc: ChainState,
    /// Every block mined, by hash.
    pub blocks: BTreeMap<BlockHash, Block>,
    /// The Bridge.
    pub bridge: BridgeState,
    /// The federation.
    pub fed: Federation,
    /// Member secrets, canonical order.
    pub fed_sks: Vec<SecretKey>,
    /// Emergency secrets, canonical order.
    pub erp_sks: Vec<SecretKey>,
    /// The faucet's key (pays for everything).
    pub faucet: User,
    /// Spendable faucet coins (outpoint, output, height; coinbases need maturity).
    faucet_coins: Vec<(OutPoint, TxOut, u32, bool)>,
    /// Transactions for the next block.
    pub pending: Vec<Transaction>,
    tag: u32,
}

impl World {
    /// A world with `params` for the peg (Bitcoin: regtest-fast rules, with
    /// full validation) and 110 blocks mined so that the faucet has mature
    /// coins. The Bridge knows only the genesis checkpoint.
    pub fn new(params: PegParams) -> Self {
        let secp = Secp256k1::new();
        let btc_params = ChainParams::regtest_fast();
        let (fed, fed_sks, erp_sks) = federation_9(&secp, params.erp_csv, fika_peg::ScriptForm::P2shP2wshErp);
        let checkpoint = Checkpoint::genesis(&btc_params).unwrap();
        let bridge = BridgeState::new(params, btc_params.clone(), checkpoint, fed.clone()).unwrap();
        let faucet = User { sk: secret("faucet", 0), pk: public(&secp, &secret("faucet", 0)) };
        let mut w = World {
            secp,
            btc: ChainState::new(btc_params),
            blocks: BTreeMap::new(),
            bridge,
            fed,
            fed_sks,
            erp_sks,
            faucet,
            faucet_coins: Vec::new(),
            pending: Vec::new(),
            tag: 0,
        };
        w.mine_n(110);
        w
    }

    /// The pegnatory's sidechain address (member 0).
    pub fn pegnatory(&self) -> SideAddress {
        SideAddress::from_public_key(&self.fed.members()[0])
    }

    /// Best height of the Bitcoin chain.
    pub fn tip_height(&self) -> u32 {
        self.btc.tip_height()
    }

    /// Mines a block with the pending transactions on the tip.
    #[track_caller]
    pub fn mine(&mut self) -> Block {
        let txs = std::mem::take(&mut self.pending);
        self.mine_on(self.btc.tip_hash(), txs)
    }

    /// Mines `n` empty blocks (plus pending ones in the first).
    #[track_caller]
    pub fn mine_n(&mut self, n: u32) {
        for _ in 0..n {
            self.mine();
        }
    }

    /// Mines a block on `parent` with `txs`; asserts the Bitcoin chain
    /// accepts it (full validation, scripts through Core's engine).
    #[track_caller]
    pub fn mine_on(&mut self, parent: BlockHash, txs: Vec<Transaction>) -> Block {
        match self.try_mine_on(parent, txs) {
            Ok(b) => b,
            Err(e) => panic!("block invalid: {e}"),
        }
    }

    /// Mines a block on `parent` with `txs` if the Bitcoin chain accepts it
    /// (full validation); otherwise the reason, and nothing changes.
    pub fn try_mine_on(&mut self, parent: BlockHash, txs: Vec<Transaction>) -> Result<Block, String> {
        let extends_tip = parent == self.btc.tip_hash();
        let entry = self.btc.entry(&parent).expect("known parent");
        let height = entry.height + 1;
        self.tag += 1;
        let payout = sign::p2wpkh_script(&self.faucet.pk);
        let subsidy = self.btc.params().subsidy(height);
        let coinbase = coinbase_tx(height, &payout, subsidy, &self.tag.to_be_bytes());
        let header = Header {
            version: BlockVersion::from_consensus(0x2000_0000),
            prev_blockhash: parent,
            merkle_root: TxMerkleNode::all_zeros(),
            time: entry.header.time + 10,
            bits: self.btc.next_bits_after(&parent).expect("parent known"),
            nonce: 0,
        };
        let block = assemble_block(header, coinbase, txs);
        let out = self.btc.accept_block(block.clone(), NOW).map_err(|e| e.to_string())?;
        if !out.accepted {
            return Err(format!("{:?}", out.invalid));
        }
        let cb = &block.txdata[0];
        if extends_tip {
            self.faucet_coins.push((OutPoint::new(cb.compute_txid(), 0), cb.output[0].clone(), height, true));
        }
        self.blocks.insert(block.block_hash(), block.clone());
        Ok(block)
    }

    /// The best-chain headers of the Bitcoin chain in `from..=to`.
    pub fn best_headers(&self, from: u32, to: u32) -> Vec<Header> {
        (from..=to)
            .map(|h| {
                self.btc.entry(&self.btc.hash_at_height(h).expect("height on best chain")).unwrap().header
            })
            .collect()
    }

    /// Feeds the Bridge every best-chain header it lacks (as a pegnatory).
    #[track_caller]
    pub fn sync_bridge(&mut self) {
        let from = self.bridge.spv().best_height() + 1;
        let to = self.tip_height();
        if from > to {
            return;
        }
        let headers = self.best_headers(from, to);
        let caller = self.pegnatory();
        let out = self.bridge.receive_headers(caller, &headers).expect("pegnatory may send headers");
        assert!(out.rejected.is_empty(), "headers rejected: {:?}", out.rejected);
        assert_eq!(self.bridge.get_btc_blockchain_best_chain_height(), self.tip_height());
    }

    /// Feeds the Bridge `headers` (as a pegnatory).
    #[track_caller]
    pub fn feed(&mut self, headers: &[Header]) -> fika_peg::btc_spv::HeadersOutcome {
        let caller = self.pegnatory();
        self.bridge.receive_headers(caller, headers).expect("pegnatory may send headers")
    }

    /// A mature, unspent faucet coin.
    fn take_faucet_coin(&mut self) -> (OutPoint, TxOut) {
        let tip = self.tip_height();
        let i = self
            .faucet_coins
            .iter()
            .position(|(_, _, h, cb)| !cb || tip + 1 - h >= 100)
            .expect("a mature faucet coin");
        let (op, out, _, _) = self.faucet_coins.remove(i);
        (op, out)
    }

    /// A transaction (added to `pending`) paying `value` to `script` from
    /// the faucet; returns the new coin.
    pub fn fund(&mut self, script: ScriptBuf, value: u64) -> (OutPoint, TxOut) {
        let (op, prev) = self.take_faucet_coin();
        let change = prev.value.to_sat() - value - FEE;
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: op,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: vec![
                TxOut { value: Amount::from_sat(value), script_pubkey: script },
                TxOut {
                    value: Amount::from_sat(change),
                    script_pubkey: sign::p2wpkh_script(&self.faucet.pk),
                },
            ],
        };
        let faucet = self.faucet;
        faucet.sign(&self.secp, &mut tx, 0, &prev, Lock::P2wpkh);
        let txid = tx.compute_txid();
        self.faucet_coins.push((OutPoint::new(txid, 1), tx.output[1].clone(), 0, false));
        let out = tx.output[0].clone();
        self.pending.push(tx);
        (OutPoint::new(txid, 0), out)
    }

    /// A peg-in from `user` (coin locked by `lock`) with `outputs` (the
    /// first input pays them all; whatever is left is the fee). Funds the
    /// coin and adds both transactions to `pending`. Returns the peg-in.
    pub fn pegin(&mut self, user: &User, lock: Lock, outputs: Vec<TxOut>) -> Transaction {
        let total: u64 = outputs.iter().map(|o| o.value.to_sat()).sum();
        let script = user.script(&self.secp, lock);
        let (op, prev) = self.fund(script, total + FEE);
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: op,
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: outputs,
        };
        user.sign(&self.secp, &mut tx, 0, &prev, lock);
        self.pending.push(tx.clone());
        tx
    }

    /// An output paying `sat` to the federation.
    pub fn to_fed(&self, sat: u64) -> TxOut {
        TxOut { value: Amount::from_sat(sat), script_pubkey: self.fed.script_pubkey().clone() }
    }

    /// The height of the best-chain block holding `txid`.
    pub fn height_of_tx(&self, txid: Txid) -> (u32, Block) {
        for h in (0..=self.tip_height()).rev() {
            let hash = self.btc.hash_at_height(h).unwrap();
            let block = &self
                .blocks
                .get(&hash)
                .cloned()
                .unwrap_or_else(|| fika_btc::genesis_block(self.btc.params()));
            if block.txdata.iter().any(|t| t.compute_txid() == txid) {
                return (h, block.clone());
            }
        }
        panic!("transaction {txid} not on the best chain");
    }

    /// The serialized partial merkle tree proving `txid` in `block`.
    pub fn pmt(block: &Block, txid: Txid) -> Vec<u8> {
        let ids: Vec<Txid> = block.txdata.iter().map(|t| t.compute_txid()).collect();
        serialize(&fika_btc::merkle::build_partial_tree(&ids, &[txid]))
    }

    /// Registers `tx` (found on the best chain) with the Bridge.
    pub fn register(&mut self, tx: &Transaction) -> Result<Registration, RegisterError> {
        let (height, block) = self.height_of_tx(tx.compute_txid());
        let pmt = Self::pmt(&block, tx.compute_txid());
        let caller = self.pegnatory();
        self.bridge.register_btc_transaction(caller, &serialize(tx), height, &pmt)
    }

    /// Mines blocks until the block at `height` has `confs` confirmations,
    /// then syncs the Bridge.
    #[track_caller]
    pub fn confirm(&mut self, height: u32, confs: u32) {
        while self.tip_height() + 1 < height + confs {
            self.mine();
        }
        self.sync_bridge();
    }

    /// Asserts the peg's conservation law.
    #[track_caller]
    pub fn assert_conservation(&self) {
        if let Err(e) = self.bridge.conservation() {
            panic!("conservation broken: {e}");
        }
    }
}
