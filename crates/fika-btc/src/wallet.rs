//! The client wallet of the Fika thesis: keys, coins, balances, and signed
//! payments.
//!
//! A [`Wallet`] holds one or more secp256k1 keys. Every key watches two
//! scripts, its P2WPKH and its P2PKH scriptPubKey; one of the two kinds
//! ([`WalletConfig::receive_kind`], P2WPKH by default) is the one handed out
//! as the receive (and change) script.
//!
//! The wallet is sans-IO: it learns about transactions only when its owner
//! (a full node, or an [`crate::spv::SpvClient`]) tells it.
//!
//! * [`Wallet::apply_block`] / [`Wallet::disconnect_block`] follow the best
//!   chain. Blocks must be applied in increasing height and disconnected in
//!   reverse order (tip first), as [`crate::chain::AcceptOutcome`] lists
//!   them. Each block that touched the wallet keeps a record of exactly what
//!   it changed (coins created and spent, pending transactions it confirmed or
//!   conflicted), so disconnecting it restores the previous state exactly;
//!   transactions it had taken out of the pending set go back there.
//! * [`Wallet::add_unconfirmed`] / [`Wallet::remove_unconfirmed`] track
//!   pending transactions (sent by the wallet or seen in a mempool).
//!   Confirmed coins spent by a pending transaction are *locked*: they are
//!   not spendable again until that transaction is removed.
//! * Coinbase outputs are *immature* until they may be spent in the next
//!   block: a coin created at height `h` is mature at tip height `t` when
//!   `t + 1 - h >= coinbase_maturity` (the rule
//!   [`crate::validate::check_tx_inputs`] applies to a block at `t + 1`).
//!
//! [`Wallet::create_payment`] selects coins, adds change, signs every input
//! with real secp256k1 ECDSA signatures (P2WPKH inputs with BIP143, P2PKH
//! inputs with the legacy sighash, both `SIGHASH_ALL`) and records the result
//! as pending. Coin selection is deterministic:
//!
//! 1. only confirmed, mature, unlocked coins are candidates; if they do not
//!    suffice and [`WalletConfig::spend_unconfirmed_change`] is on, outputs
//!    of the wallet's own pending transactions are added and selection runs
//!    again;
//! 2. the smallest single coin that pays the outputs and the fee *cleanly*
//!    is taken (clean: with a change output of at least the dust limit, or
//!    with no change; for an absolute fee, no change means an exact match);
//! 3. otherwise coins are added largest first until they pay cleanly; if
//!    all candidates together pay only with a dust leftover, the first (fewest
//!    coins) such selection is used;
//! 4. a leftover below [`WalletConfig::dust_limit`] (546 sat by default,
//!    Core's dust threshold for P2PKH at 3 sat/vB) is not turned into a change
//!    output but left to the fee. With [`FeeSpec::Absolute`] the fee is
//!    therefore exact unless every candidate selection leaves dust, in which
//!    case the transaction pays the fee plus that dust (reported in
//!    [`Payment::fee`]).
//!
//! Ties between equal values are broken by outpoint order. With
//! [`FeeSpec::Rate`] the fee is computed from an upper bound of the signed
//! size (72-byte signatures), so the real fee rate is never below the one
//! asked for. The change output goes to the receive script of key 0, at a
//! position drawn from the caller's RNG (as Bitcoin Core randomises it).
//!
//! All containers are ordered (`BTreeMap`, `Vec`): the same calls give the
//! same wallet, transaction and signatures.

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::absolute::LockTime;
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::transaction::Version;
use bitcoin::{
    Address, Amount, BlockHash, CompressedPublicKey, FeeRate, Network, OutPoint, Script, ScriptBuf, Sequence,
    Transaction, TxIn, TxOut, Txid, Witness,
};
use rand::{Rng, RngCore};
use thiserror::Error;

use crate::params::ChainParams;
use crate::sign::{self, SignError};
use crate::utxo::{Coin, is_unspendable};

/// Default dust limit: Bitcoin Core's dust threshold of a P2PKH output at
/// the 3 sat/vB dust relay fee.
pub const DEFAULT_DUST_LIMIT: Amount = Amount::from_sat(546);

/// Upper bound of a DER signature plus its sighash byte.
const MAX_SIG_LEN: u64 = 72;
/// A compressed public key.
const PUBKEY_LEN: u64 = 33;

/// The kind of script a wallet key is paid to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum ScriptKind {
    /// Pay to witness public key hash (BIP141 v0).
    #[default]
    P2wpkh,
    /// Legacy pay to public key hash.
    P2pkh,
}

/// Wallet settings.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct WalletConfig {
    /// Which script kind [`Wallet::receive_script`] and change use.
    pub receive_kind: ScriptKind,
    /// Confirmations before a coinbase output may be spent (the chain's
    /// [`ChainParams::coinbase_maturity`]).
    pub coinbase_maturity: u32,
    /// Smallest change (and payment) output the wallet creates.
    pub dust_limit: Amount,
    /// Whether outputs of the wallet's own pending transactions may fund a
    /// payment when confirmed coins do not suffice.
    pub spend_unconfirmed_change: bool,
}

impl WalletConfig {
    /// Settings for a chain: its coinbase maturity, P2WPKH receive scripts
    /// (P2PKH if the chain has no segwit), the default dust limit, and
    /// spending of own unconfirmed change allowed.
    pub fn for_params(params: &ChainParams) -> Self {
        WalletConfig {
            receive_kind: if params.script_flags.witness { ScriptKind::P2wpkh } else { ScriptKind::P2pkh },
            coinbase_maturity: params.coinbase_maturity,
            dust_limit: DEFAULT_DUST_LIMIT,
            spend_unconfirmed_change: true,
        }
    }

    /// These settings with another receive script kind.
    pub fn with_receive_kind(mut self, kind: ScriptKind) -> Self {
        self.receive_kind = kind;
        self
    }

    /// These settings with another coinbase maturity.
    pub fn with_coinbase_maturity(mut self, maturity: u32) -> Self {
        self.coinbase_maturity = maturity;
        self
    }

    /// These settings with spending of own unconfirmed change on or off.
    pub fn with_spend_unconfirmed_change(mut self, allow: bool) -> Self {
        self.spend_unconfirmed_change = allow;
        self
    }
}

impl Default for WalletConfig {
    fn default() -> Self {
        Self::for_params(&ChainParams::mainnet())
    }
}

/// One key of a wallet with its two watched scripts.
#[derive(Clone, Debug)]
pub struct WalletKey {
    secret: SecretKey,
    public: PublicKey,
    p2wpkh: ScriptBuf,
    p2pkh: ScriptBuf,
}

impl WalletKey {
    fn new<C: bitcoin::secp256k1::Signing>(secp: &Secp256k1<C>, secret: SecretKey) -> Self {
        let public = PublicKey::from_secret_key(secp, &secret);
        WalletKey { secret, public, p2wpkh: sign::p2wpkh_script(&public), p2pkh: sign::p2pkh_script(&public) }
    }

    /// The secret key.
    pub fn secret_key(&self) -> &SecretKey {
        &self.secret
    }

    /// The (compressed) public key.
    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    /// The scriptPubKey of the given kind.
    pub fn script(&self, kind: ScriptKind) -> &Script {
        match kind {
            ScriptKind::P2wpkh => &self.p2wpkh,
            ScriptKind::P2pkh => &self.p2pkh,
        }
    }

    /// The address of the given kind on `network`.
    pub fn address(&self, kind: ScriptKind, network: Network) -> Address {
        let pk = CompressedPublicKey(self.public);
        match kind {
            ScriptKind::P2wpkh => Address::p2wpkh(&pk, network),
            ScriptKind::P2pkh => Address::p2pkh(pk, network),
        }
    }
}

/// A coin the wallet can sign for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WalletCoin {
    /// Where it is.
    pub outpoint: OutPoint,
    /// The output.
    pub txout: TxOut,
    /// Height of the block that created it; `None` while unconfirmed.
    pub height: Option<u32>,
    /// Whether it is a coinbase output.
    pub is_coinbase: bool,
    /// Index of the key that can spend it.
    pub key_index: usize,
    /// The kind of its script.
    pub kind: ScriptKind,
}

impl WalletCoin {
    /// Its value.
    pub fn value(&self) -> Amount {
        self.txout.value
    }

    /// As a UTXO-set [`Coin`], if confirmed.
    pub fn to_coin(&self) -> Option<Coin> {
        self.height.map(|height| Coin { txout: self.txout.clone(), height, is_coinbase: self.is_coinbase })
    }

    /// Whether a confirmed coinbase coin may be spent in the block after
    /// `tip_height` (always true for other coins).
    pub fn is_mature(&self, tip_height: u32, maturity: u32) -> bool {
        match (self.is_coinbase, self.height) {
            (true, Some(h)) => tip_height.saturating_add(1).saturating_sub(h) >= maturity,
            (true, None) => false,
            (false, _) => true,
        }
    }
}

/// A wallet's balance at some tip height.
///
/// `confirmed + immature + locked` is the value the UTXO set holds for the
/// wallet's scripts; `confirmed + unconfirmed + immature` is what the wallet
/// will hold once its pending transactions confirm.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Balance {
    /// Confirmed, mature coins not spent by a pending transaction (spendable).
    pub confirmed: Amount,
    /// Outputs of pending transactions paying the wallet, not spent by
    /// another pending transaction (incoming payments and own change).
    pub unconfirmed: Amount,
    /// Confirmed coinbase coins that are not mature yet.
    pub immature: Amount,
    /// Confirmed coins spent by a pending transaction.
    pub locked: Amount,
}

impl Balance {
    /// `confirmed + unconfirmed + immature`: the balance once everything
    /// pending confirms.
    pub fn total(&self) -> Amount {
        self.confirmed + self.unconfirmed + self.immature
    }

    /// `confirmed + immature + locked`: the wallet's value in the UTXO set.
    pub fn on_chain(&self) -> Amount {
        self.confirmed + self.immature + self.locked
    }
}

/// How a payment's fee is set.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum FeeSpec {
    /// A fee rate, applied to an upper bound of the signed virtual size
    /// (fee = ⌈rate · vsize⌉).
    Rate(FeeRate),
    /// A fixed fee (the thesis demo pays 1 coin).
    Absolute(Amount),
}

impl FeeSpec {
    /// A rate in satoshis per virtual byte.
    pub fn sat_per_vb(sat_per_vb: u64) -> Self {
        FeeSpec::Rate(FeeRate::from_sat_per_kwu(sat_per_vb.saturating_mul(250)))
    }
}

/// A signed payment created by [`Wallet::create_payment`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct Payment {
    /// The signed transaction.
    pub tx: Transaction,
    /// Its txid.
    pub txid: Txid,
    /// The outputs it spends, in input order (for
    /// [`crate::validate::verify_scripts`]).
    pub prevouts: Vec<TxOut>,
    /// Its fee (inputs minus outputs).
    pub fee: Amount,
    /// The change output, `(vout, value)`, if any.
    pub change: Option<(u32, Amount)>,
}

/// What applying (or disconnecting) a block changed in the wallet.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BlockEffect {
    /// The block's transactions that touched the wallet, in block order.
    pub txids: Vec<Txid>,
    /// Value of the wallet coins it created.
    pub received: Amount,
    /// Value of the wallet coins it spent.
    pub spent: Amount,
    /// Pending transactions it confirmed (restored to pending on disconnect).
    pub confirmed_pending: Vec<Txid>,
    /// Pending transactions it conflicted with (double spends and their
    /// descendants), removed (restored on disconnect).
    pub conflicted: Vec<Txid>,
}

impl BlockEffect {
    /// Whether the block touched the wallet at all.
    pub fn is_empty(&self) -> bool {
        self.txids.is_empty() && self.confirmed_pending.is_empty() && self.conflicted.is_empty()
    }
}

/// A wallet failure.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum WalletError {
    /// A wallet needs at least one key.
    #[error("a wallet needs at least one key")]
    NoKeys,
    /// The spendable coins do not cover the outputs and the fee.
    #[error("insufficient funds: need {needed} (outputs plus fee), {available} spendable")]
    InsufficientFunds {
        /// Outputs plus the fee of spending every candidate coin.
        needed: Amount,
        /// Value of the candidate coins.
        available: Amount,
    },
    /// A payment output is below the dust limit.
    #[error("output {index} of {amount} is below the dust limit {dust}")]
    AmountBelowDust {
        /// Index of the output in the request.
        index: usize,
        /// The requested amount.
        amount: Amount,
        /// The wallet's dust limit.
        dust: Amount,
    },
    /// A payment needs at least one output.
    #[error("a payment needs at least one output")]
    NoOutputs,
    /// An amount, the output total or the fee exceeds the money supply.
    #[error("{what} is out of range (above 21 000 000 BTC)")]
    AmountOutOfRange {
        /// What overflowed.
        what: &'static str,
    },
    /// A block was applied twice.
    #[error("block {0} is already applied")]
    DuplicateBlock(BlockHash),
    /// A block was applied below the last applied block that touched the
    /// wallet.
    #[error("block {hash} at height {height} applied out of order (last applied block is at {last_height})")]
    OutOfOrder {
        /// The block.
        hash: BlockHash,
        /// Its height.
        height: u32,
        /// Height of the last applied block that touched the wallet.
        last_height: u32,
    },
    /// A block other than the last applied one was disconnected.
    #[error("block {hash} is not the last applied block ({tip})")]
    NotTip {
        /// The block.
        hash: BlockHash,
        /// The last applied block that touched the wallet.
        tip: BlockHash,
    },
    /// A coinbase transaction cannot be pending.
    #[error("coinbase transaction {0} cannot be unconfirmed")]
    CoinbaseUnconfirmed(Txid),
    /// A pending transaction spends an output another pending transaction
    /// spends.
    #[error("transaction {txid} spends {outpoint}, already spent by pending {other}")]
    Conflict {
        /// The new transaction.
        txid: Txid,
        /// The doubly spent output.
        outpoint: OutPoint,
        /// The pending transaction spending it.
        other: Txid,
    },
    /// A pending transaction spends an output a confirmed block spent.
    #[error("transaction {txid} spends {outpoint}, already spent in block {block}")]
    AlreadySpent {
        /// The new transaction.
        txid: Txid,
        /// The spent output.
        outpoint: OutPoint,
        /// The block spending it.
        block: BlockHash,
    },
    /// Signing failed (a bug).
    #[error("signing failed: {0}")]
    Sign(#[from] SignError),
}

/// A pending transaction.
#[derive(Clone, Debug)]
struct Pending {
    tx: Transaction,
    seq: u64,
    own: bool,
}

/// One step of a block's effect on the confirmed coins.
#[derive(Clone, Debug)]
enum CoinOp {
    Created(OutPoint),
    Spent(OutPoint, WalletCoin),
}

/// What a block changed, to undo it exactly.
#[derive(Clone, Debug)]
struct BlockRecord {
    hash: BlockHash,
    height: u32,
    ops: Vec<CoinOp>,
    txids: Vec<Txid>,
    /// Pending transactions taken out by the block (confirmed or conflicted).
    removed: Vec<(Txid, Pending)>,
    effect: BlockEffect,
}

/// A selection of coins with its fee and change.
#[derive(Clone, Debug)]
struct Plan {
    coins: Vec<WalletCoin>,
    fee: Amount,
    change: Option<Amount>,
}

/// The client wallet: keys, coins, pending transactions and payments.
#[derive(Clone, Debug)]
pub struct Wallet {
    config: WalletConfig,
    secp: Secp256k1<All>,
    keys: Vec<WalletKey>,
    scripts: BTreeMap<ScriptBuf, (usize, ScriptKind)>,
    /// Confirmed unspent coins (including those locked by pending spends).
    coins: BTreeMap<OutPoint, WalletCoin>,
    /// Wallet outpoints spent by applied blocks.
    spent_in_block: BTreeMap<OutPoint, BlockHash>,
    /// Relevant confirmed transactions: block and height.
    confirmed_txs: BTreeMap<Txid, (BlockHash, u32)>,
    /// Applied blocks that touched the wallet, lowest first.
    blocks: Vec<BlockRecord>,
    /// Hashes of `blocks`.
    recorded: BTreeSet<BlockHash>,
    pending: BTreeMap<Txid, Pending>,
    /// Outpoints spent by pending transactions.
    pending_spends: BTreeMap<OutPoint, Txid>,
    next_seq: u64,
}

impl Wallet {
    /// A wallet with the given secret keys (at least one).
    pub fn new(config: WalletConfig, secret_keys: &[SecretKey]) -> Result<Self, WalletError> {
        if secret_keys.is_empty() {
            return Err(WalletError::NoKeys);
        }
        let mut wallet = Wallet {
            config,
            secp: Secp256k1::new(),
            keys: Vec::new(),
            scripts: BTreeMap::new(),
            coins: BTreeMap::new(),
            spent_in_block: BTreeMap::new(),
            confirmed_txs: BTreeMap::new(),
            blocks: Vec::new(),
            recorded: BTreeSet::new(),
            pending: BTreeMap::new(),
            pending_spends: BTreeMap::new(),
            next_seq: 0,
        };
        for sk in secret_keys {
            wallet.add_key(*sk);
        }
        Ok(wallet)
    }

    /// A wallet with `n_keys` (at least one) keys drawn from `rng`
    /// (deterministic for a seeded RNG). The signing context is also
    /// re-blinded from `rng`.
    pub fn from_rng(
        config: WalletConfig,
        n_keys: usize,
        rng: &mut (impl RngCore + ?Sized),
    ) -> Result<Self, WalletError> {
        if n_keys == 0 {
            return Err(WalletError::NoKeys);
        }
        let keys: Vec<SecretKey> = (0..n_keys).map(|_| sign::secret_key_from_rng(&mut &mut *rng)).collect();
        let mut wallet = Self::new(config, &keys)?;
        let mut seed = [0u8; 32];
        rng.fill_bytes(&mut seed);
        wallet.secp.seeded_randomize(&seed);
        Ok(wallet)
    }

    /// Adds a key; returns its index. Coins already confirmed to it are not
    /// discovered retroactively.
    pub fn add_key(&mut self, secret: SecretKey) -> usize {
        if let Some(i) = self.keys.iter().position(|k| k.secret == secret) {
            return i;
        }
        let key = WalletKey::new(&self.secp, secret);
        let index = self.keys.len();
        self.scripts.insert(key.p2wpkh.clone(), (index, ScriptKind::P2wpkh));
        self.scripts.insert(key.p2pkh.clone(), (index, ScriptKind::P2pkh));
        self.keys.push(key);
        index
    }

    /// Adds a key drawn from `rng`; returns its index.
    pub fn new_key(&mut self, rng: &mut (impl RngCore + ?Sized)) -> usize {
        self.add_key(sign::secret_key_from_rng(&mut &mut *rng))
    }

    // ---- keys and scripts ------------------------------------------------

    /// The settings.
    pub fn config(&self) -> &WalletConfig {
        &self.config
    }

    /// The keys, in creation order.
    pub fn keys(&self) -> &[WalletKey] {
        &self.keys
    }

    /// The receive (and change) script: key 0's script of the configured kind.
    pub fn receive_script(&self) -> ScriptBuf {
        self.keys[0].script(self.config.receive_kind).to_owned()
    }

    /// The receive script of key `index`, if it exists.
    pub fn receive_script_of(&self, index: usize) -> Option<ScriptBuf> {
        self.keys.get(index).map(|k| k.script(self.config.receive_kind).to_owned())
    }

    /// The receive address (key 0, configured kind) on `network`.
    pub fn address(&self, network: Network) -> Address {
        self.keys[0].address(self.config.receive_kind, network)
    }

    /// The receive address of key `index` on `network`, if the key exists.
    pub fn address_of(&self, index: usize, network: Network) -> Option<Address> {
        self.keys.get(index).map(|k| k.address(self.config.receive_kind, network))
    }

    /// Every watched script (P2WPKH and P2PKH of every key), in script order.
    pub fn scripts(&self) -> impl Iterator<Item = &ScriptBuf> {
        self.scripts.keys()
    }

    /// Whether `script` pays this wallet.
    pub fn is_mine(&self, script: &Script) -> bool {
        self.scripts.contains_key(script)
    }

    // ---- state -----------------------------------------------------------

    /// All confirmed unspent coins (including immature and locked ones), in
    /// outpoint order.
    pub fn coins(&self) -> impl Iterator<Item = &WalletCoin> {
        self.coins.values()
    }

    /// Confirmed, mature coins not spent by a pending transaction, in
    /// outpoint order: what a payment in the block after `tip_height` may
    /// spend.
    pub fn spendable_coins(&self, tip_height: u32) -> Vec<WalletCoin> {
        self.coins
            .values()
            .filter(|c| !self.pending_spends.contains_key(&c.outpoint))
            .filter(|c| c.is_mature(tip_height, self.config.coinbase_maturity))
            .cloned()
            .collect()
    }

    /// Outputs of pending transactions paying the wallet and not spent by
    /// another pending transaction, in arrival order. With `own_only`, only
    /// those of transactions the wallet funded itself (change).
    pub fn unconfirmed_coins(&self, own_only: bool) -> Vec<WalletCoin> {
        let mut by_seq: Vec<&Pending> = self.pending.values().filter(|p| p.own || !own_only).collect();
        by_seq.sort_by_key(|p| p.seq);
        let mut out = Vec::new();
        for p in by_seq {
            let txid = p.tx.compute_txid();
            for (vout, txout) in p.tx.output.iter().enumerate() {
                let outpoint = OutPoint::new(txid, vout as u32);
                if self.pending_spends.contains_key(&outpoint) {
                    continue;
                }
                if let Some(&(key_index, kind)) = self.scripts.get(&txout.script_pubkey) {
                    out.push(WalletCoin {
                        outpoint,
                        txout: txout.clone(),
                        height: None,
                        is_coinbase: false,
                        key_index,
                        kind,
                    });
                }
            }
        }
        out
    }

    /// The balance at `tip_height` (see [`Balance`]).
    pub fn balance(&self, tip_height: u32) -> Balance {
        let mut b = Balance::default();
        for c in self.coins.values() {
            if self.pending_spends.contains_key(&c.outpoint) {
                b.locked += c.value();
            } else if c.is_mature(tip_height, self.config.coinbase_maturity) {
                b.confirmed += c.value();
            } else {
                b.immature += c.value();
            }
        }
        b.unconfirmed = self.unconfirmed_coins(false).iter().map(WalletCoin::value).sum();
        b
    }

    /// The pending transactions, in arrival order.
    pub fn pending_transactions(&self) -> Vec<&Transaction> {
        let mut v: Vec<&Pending> = self.pending.values().collect();
        v.sort_by_key(|p| p.seq);
        v.into_iter().map(|p| &p.tx).collect()
    }

    /// Whether `txid` is pending.
    pub fn is_pending(&self, txid: &Txid) -> bool {
        self.pending.contains_key(txid)
    }

    /// The block and height that confirmed `txid`, if it touched the wallet
    /// and is in an applied block.
    pub fn confirmed_tx(&self, txid: &Txid) -> Option<(BlockHash, u32)> {
        self.confirmed_txs.get(txid).copied()
    }

    /// Confirmations of `txid` at `tip_height` (0 if pending or unknown).
    pub fn confirmations(&self, txid: &Txid, tip_height: u32) -> u32 {
        match self.confirmed_txs.get(txid) {
            Some(&(_, h)) if tip_height >= h => tip_height - h + 1,
            _ => 0,
        }
    }

    /// The applied blocks that touched the wallet, `(hash, height)`, lowest
    /// first.
    pub fn recorded_blocks(&self) -> Vec<(BlockHash, u32)> {
        self.blocks.iter().map(|r| (r.hash, r.height)).collect()
    }

    /// The outputs `tx` spends, in input order, if the wallet knows all of
    /// them (its confirmed coins or outputs of its pending transactions, not
    /// counting `tx`'s own locks).
    pub fn prevouts(&self, tx: &Transaction) -> Option<Vec<TxOut>> {
        tx.input.iter().map(|i| self.known_output(&i.previous_output)).collect()
    }

    fn known_output(&self, outpoint: &OutPoint) -> Option<TxOut> {
        if let Some(c) = self.coins.get(outpoint) {
            return Some(c.txout.clone());
        }
        self.pending.get(&outpoint.txid).and_then(|p| p.tx.output.get(outpoint.vout as usize)).cloned()
    }

    fn is_wallet_output(&self, outpoint: &OutPoint) -> bool {
        self.coins.contains_key(outpoint)
            || self.known_output(outpoint).is_some_and(|o| self.scripts.contains_key(&o.script_pubkey))
    }

    // ---- blocks ------------------------------------------------------------

    /// Applies the block `hash` at `height` with transactions `txs` (all of
    /// them, or at least those relevant to the wallet, in block order):
    /// adds outputs paying the wallet, removes the wallet coins its inputs
    /// spend, takes the pending transactions it confirms out of the pending
    /// set and drops pending transactions it conflicts with (and their
    /// descendants). A block that changes nothing leaves no record.
    pub fn apply_block(
        &mut self,
        hash: BlockHash,
        height: u32,
        txs: &[Transaction],
    ) -> Result<BlockEffect, WalletError> {
        if self.recorded.contains(&hash) {
            return Err(WalletError::DuplicateBlock(hash));
        }
        if let Some(last) = self.blocks.last() {
            if height <= last.height {
                return Err(WalletError::OutOfOrder { hash, height, last_height: last.height });
            }
        }
        let mut rec = BlockRecord {
            hash,
            height,
            ops: Vec::new(),
            txids: Vec::new(),
            removed: Vec::new(),
            effect: BlockEffect::default(),
        };
        for tx in txs {
            let txid = tx.compute_txid();
            let mut relevant = false;
            if let Some(p) = self.take_pending(&txid) {
                rec.effect.confirmed_pending.push(txid);
                rec.removed.push((txid, p));
                relevant = true;
            }
            if !tx.is_coinbase() {
                for input in &tx.input {
                    let op = input.previous_output;
                    if let Some(coin) = self.coins.remove(&op) {
                        rec.effect.spent += coin.value();
                        self.spent_in_block.insert(op, hash);
                        rec.ops.push(CoinOp::Spent(op, coin));
                        relevant = true;
                    }
                    if let Some(other) = self.pending_spends.get(&op).copied() {
                        for (t, p) in self.take_with_descendants(&other) {
                            rec.effect.conflicted.push(t);
                            rec.removed.push((t, p));
                        }
                    }
                }
            }
            for (vout, txout) in tx.output.iter().enumerate() {
                let Some(&(key_index, kind)) = self.scripts.get(&txout.script_pubkey) else {
                    continue;
                };
                if is_unspendable(&txout.script_pubkey) {
                    continue;
                }
                let op = OutPoint::new(txid, vout as u32);
                if self.coins.contains_key(&op) {
                    // BIP30 duplicate: a valid chain never has one; keep the first.
                    continue;
                }
                let coin = WalletCoin {
                    outpoint: op,
                    txout: txout.clone(),
                    height: Some(height),
                    is_coinbase: tx.is_coinbase(),
                    key_index,
                    kind,
                };
                rec.effect.received += coin.value();
                self.coins.insert(op, coin);
                rec.ops.push(CoinOp::Created(op));
                relevant = true;
            }
            if relevant {
                rec.txids.push(txid);
                rec.effect.txids.push(txid);
            }
        }
        for txid in &rec.txids {
            self.confirmed_txs.insert(*txid, (hash, height));
        }
        let effect = rec.effect.clone();
        if !effect.is_empty() {
            self.recorded.insert(hash);
            self.blocks.push(rec);
        }
        Ok(effect)
    }

    /// Disconnects the block `hash` (a reorganisation), which must be the
    /// last applied block that touched the wallet: restores exactly the
    /// state before [`Wallet::apply_block`] (pending transactions it took
    /// out come back). A block that left no record (it did not touch the
    /// wallet) is a no-op and returns an empty effect.
    pub fn disconnect_block(&mut self, hash: BlockHash) -> Result<BlockEffect, WalletError> {
        if !self.recorded.contains(&hash) {
            return Ok(BlockEffect::default());
        }
        let tip = self.blocks.last().map(|r| r.hash).unwrap_or(hash);
        if tip != hash {
            return Err(WalletError::NotTip { hash, tip });
        }
        let Some(rec) = self.blocks.pop() else {
            return Ok(BlockEffect::default());
        };
        self.recorded.remove(&hash);
        for op in rec.ops.into_iter().rev() {
            match op {
                CoinOp::Created(o) => {
                    self.coins.remove(&o);
                }
                CoinOp::Spent(o, coin) => {
                    self.spent_in_block.remove(&o);
                    self.coins.insert(o, coin);
                }
            }
        }
        for txid in &rec.txids {
            if self.confirmed_txs.get(txid).is_some_and(|(b, _)| *b == hash) {
                self.confirmed_txs.remove(txid);
            }
        }
        for (txid, p) in rec.removed {
            self.restore_pending(txid, p);
        }
        Ok(rec.effect)
    }

    // ---- pending transactions ---------------------------------------------

    /// Records a pending transaction (sent by the wallet or seen in a
    /// mempool). Returns `Ok(false)` without storing it if it does not touch
    /// the wallet or is already pending or confirmed. Refuses coinbases and
    /// transactions spending an output that a pending transaction or an
    /// applied block already spends.
    pub fn add_unconfirmed(&mut self, tx: Transaction) -> Result<bool, WalletError> {
        let txid = tx.compute_txid();
        if tx.is_coinbase() {
            return Err(WalletError::CoinbaseUnconfirmed(txid));
        }
        if self.pending.contains_key(&txid) || self.confirmed_txs.contains_key(&txid) {
            return Ok(false);
        }
        for input in &tx.input {
            let op = input.previous_output;
            if let Some(other) = self.pending_spends.get(&op) {
                return Err(WalletError::Conflict { txid, outpoint: op, other: *other });
            }
            if let Some(block) = self.spent_in_block.get(&op) {
                return Err(WalletError::AlreadySpent { txid, outpoint: op, block: *block });
            }
        }
        let spends_mine =
            tx.input.iter().map(|i| self.is_wallet_output(&i.previous_output)).collect::<Vec<_>>();
        let pays_me = tx.output.iter().any(|o| self.scripts.contains_key(&o.script_pubkey));
        if !pays_me && !spends_mine.iter().any(|m| *m) {
            return Ok(false);
        }
        let own = !spends_mine.is_empty() && spends_mine.iter().all(|m| *m);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert_pending(txid, Pending { tx, seq, own });
        Ok(true)
    }

    /// Removes a pending transaction and its pending descendants (e.g. when
    /// it left the mempool); returns the removed txids (empty if unknown).
    /// Their locked coins become spendable again.
    pub fn remove_unconfirmed(&mut self, txid: &Txid) -> Vec<Txid> {
        self.take_with_descendants(txid).into_iter().map(|(t, _)| t).collect()
    }

    fn insert_pending(&mut self, txid: Txid, p: Pending) {
        for input in &p.tx.input {
            self.pending_spends.insert(input.previous_output, txid);
        }
        self.pending.insert(txid, p);
    }

    fn restore_pending(&mut self, txid: Txid, p: Pending) {
        if self.pending.contains_key(&txid) {
            return;
        }
        // Skip it if something spending the same outputs arrived meanwhile.
        if p.tx.input.iter().any(|i| self.pending_spends.contains_key(&i.previous_output)) {
            return;
        }
        self.insert_pending(txid, p);
    }

    fn take_pending(&mut self, txid: &Txid) -> Option<Pending> {
        let p = self.pending.remove(txid)?;
        for input in &p.tx.input {
            if self.pending_spends.get(&input.previous_output) == Some(txid) {
                self.pending_spends.remove(&input.previous_output);
            }
        }
        Some(p)
    }

    /// Removes `txid` and every pending descendant; returns them in removal
    /// order (parents first).
    fn take_with_descendants(&mut self, txid: &Txid) -> Vec<(Txid, Pending)> {
        let mut out = Vec::new();
        let mut queue = vec![*txid];
        let mut seen = BTreeSet::new();
        while let Some(t) = queue.first().copied() {
            queue.remove(0);
            if !seen.insert(t) {
                continue;
            }
            let Some(p) = self.take_pending(&t) else {
                continue;
            };
            let children: BTreeSet<Txid> = self
                .pending_spends
                .range(OutPoint::new(t, 0)..=OutPoint::new(t, u32::MAX))
                .map(|(_, child)| *child)
                .collect();
            queue.extend(children);
            out.push((t, p));
        }
        out
    }

    // ---- payments ----------------------------------------------------------

    /// Pays `amount` to `to`; see [`Wallet::create_payment_many`].
    pub fn create_payment(
        &mut self,
        to: &Script,
        amount: Amount,
        fee: FeeSpec,
        tip_height: u32,
        rng: &mut (impl RngCore + ?Sized),
    ) -> Result<Payment, WalletError> {
        self.create_payment_many(&[(to.to_owned(), amount)], fee, tip_height, rng)
    }

    /// Pays `amount` to `address`; see [`Wallet::create_payment_many`].
    pub fn create_payment_to(
        &mut self,
        address: &Address,
        amount: Amount,
        fee: FeeSpec,
        tip_height: u32,
        rng: &mut (impl RngCore + ?Sized),
    ) -> Result<Payment, WalletError> {
        self.create_payment(&address.script_pubkey(), amount, fee, tip_height, rng)
    }

    /// Builds, signs and records (as pending, locking its coins) a
    /// transaction paying `outputs` with coins spendable in the block after
    /// `tip_height`; coin selection and change as in the module docs. The
    /// change position is drawn from `rng`.
    ///
    /// Every output must be at least the dust limit (OP_RETURN outputs are
    /// exempt).
    pub fn create_payment_many(
        &mut self,
        outputs: &[(ScriptBuf, Amount)],
        fee: FeeSpec,
        tip_height: u32,
        rng: &mut (impl RngCore + ?Sized),
    ) -> Result<Payment, WalletError> {
        if outputs.is_empty() {
            return Err(WalletError::NoOutputs);
        }
        let mut target = Amount::ZERO;
        for (index, (script, amount)) in outputs.iter().enumerate() {
            if *amount < self.config.dust_limit && !script.is_op_return() {
                return Err(WalletError::AmountBelowDust {
                    index,
                    amount: *amount,
                    dust: self.config.dust_limit,
                });
            }
            target = target
                .checked_add(*amount)
                .filter(|t| *t <= Amount::MAX_MONEY)
                .ok_or(WalletError::AmountOutOfRange { what: "output total" })?;
        }
        if let FeeSpec::Absolute(f) = fee {
            if f > Amount::MAX_MONEY {
                return Err(WalletError::AmountOutOfRange { what: "fee" });
            }
        }
        let change_script = self.receive_script();
        let confirmed = self.spendable_coins(tip_height);
        let plan = match self.select(&confirmed, outputs, target, fee, &change_script) {
            Ok(plan) => plan,
            Err(e @ WalletError::InsufficientFunds { .. }) if self.config.spend_unconfirmed_change => {
                let extra = self.unconfirmed_coins(true);
                if extra.is_empty() {
                    return Err(e);
                }
                let mut all = confirmed;
                all.extend(extra);
                self.select(&all, outputs, target, fee, &change_script)?
            }
            Err(e) => return Err(e),
        };

        let mut txouts: Vec<TxOut> =
            outputs.iter().map(|(s, a)| TxOut { value: *a, script_pubkey: s.clone() }).collect();
        let change = match plan.change {
            Some(value) => {
                let pos = rng.gen_range(0..=txouts.len());
                txouts.insert(pos, TxOut { value, script_pubkey: change_script });
                Some((pos as u32, value))
            }
            None => None,
        };
        let mut tx = Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: plan
                .coins
                .iter()
                .map(|c| TxIn {
                    previous_output: c.outpoint,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: txouts,
        };
        for (index, coin) in plan.coins.iter().enumerate() {
            let sk = self.keys[coin.key_index].secret;
            match coin.kind {
                ScriptKind::P2wpkh => sign::sign_p2wpkh_input(
                    &self.secp,
                    &mut tx,
                    index,
                    &sk,
                    coin.value(),
                    EcdsaSighashType::All,
                )?,
                ScriptKind::P2pkh => {
                    sign::sign_p2pkh_input(&self.secp, &mut tx, index, &sk, EcdsaSighashType::All)?
                }
            }
        }
        debug_assert!(
            tx.weight().to_wu()
                <= estimate_weight(
                    plan.coins.iter().map(|c| c.kind),
                    tx.output.iter().map(|o| o.script_pubkey.len())
                )
        );
        let txid = tx.compute_txid();
        let prevouts = plan.coins.iter().map(|c| c.txout.clone()).collect();
        let seq = self.next_seq;
        self.next_seq += 1;
        self.insert_pending(txid, Pending { tx: tx.clone(), seq, own: true });
        Ok(Payment { tx, txid, prevouts, fee: plan.fee, change })
    }

    /// The fee of spending `coins` to `outputs` (plus a change output if
    /// `change` is given).
    fn fee_for(
        fee: FeeSpec,
        coins: &[WalletCoin],
        outputs: &[(ScriptBuf, Amount)],
        change: Option<&Script>,
    ) -> Result<Amount, WalletError> {
        match fee {
            FeeSpec::Absolute(a) => Ok(a),
            FeeSpec::Rate(rate) => {
                let lens = outputs.iter().map(|(s, _)| s.len()).chain(change.map(Script::len));
                let weight = estimate_weight(coins.iter().map(|c| c.kind), lens);
                let vsize = u128::from(weight.div_ceil(4));
                // sat/kvB = 4 * sat/kwu; fee = ceil(rate_kvb * vsize / 1000).
                let fee = (u128::from(rate.to_sat_per_kwu()) * 4 * vsize).div_ceil(1000);
                u64::try_from(fee)
                    .ok()
                    .map(Amount::from_sat)
                    .filter(|f| *f <= Amount::MAX_MONEY)
                    .ok_or(WalletError::AmountOutOfRange { what: "fee" })
            }
        }
    }

    /// The plan for exactly `coins`, if they pay `target` and the fee, and
    /// whether it is clean (no dust left to the fee beyond an absolute fee).
    fn evaluate(
        &self,
        coins: &[WalletCoin],
        outputs: &[(ScriptBuf, Amount)],
        target: Amount,
        fee: FeeSpec,
        change_script: &Script,
    ) -> Result<Option<(Plan, bool)>, WalletError> {
        let total: Amount = coins.iter().map(WalletCoin::value).sum();
        let fee_c = Self::fee_for(fee, coins, outputs, Some(change_script))?;
        if total >= target + fee_c + self.config.dust_limit {
            let plan = Plan { coins: coins.to_vec(), fee: fee_c, change: Some(total - target - fee_c) };
            return Ok(Some((plan, true)));
        }
        let fee_n = Self::fee_for(fee, coins, outputs, None)?;
        if total >= target + fee_n {
            let leftover = total - target - fee_n;
            let clean = leftover == Amount::ZERO || matches!(fee, FeeSpec::Rate(_));
            let plan = Plan { coins: coins.to_vec(), fee: fee_n + leftover, change: None };
            return Ok(Some((plan, clean)));
        }
        Ok(None)
    }

    fn select(
        &self,
        candidates: &[WalletCoin],
        outputs: &[(ScriptBuf, Amount)],
        target: Amount,
        fee: FeeSpec,
        change_script: &Script,
    ) -> Result<Plan, WalletError> {
        let mut asc: Vec<WalletCoin> = candidates.to_vec();
        asc.sort_by(|a, b| a.value().cmp(&b.value()).then(a.outpoint.cmp(&b.outpoint)));
        // 1. The smallest single coin that pays cleanly.
        for c in &asc {
            if let Some((plan, true)) =
                self.evaluate(std::slice::from_ref(c), outputs, target, fee, change_script)?
            {
                return Ok(plan);
            }
        }
        // 2. Largest first until clean; else the first sufficient selection.
        let mut selected: Vec<WalletCoin> = Vec::new();
        let mut fallback: Option<Plan> = None;
        for c in asc.iter().rev() {
            selected.push(c.clone());
            match self.evaluate(&selected, outputs, target, fee, change_script)? {
                Some((plan, true)) => return Ok(plan),
                Some((plan, false)) if fallback.is_none() => fallback = Some(plan),
                _ => {}
            }
        }
        if let Some(plan) = fallback {
            return Ok(plan);
        }
        let available: Amount = asc.iter().map(WalletCoin::value).sum();
        let fee_all = Self::fee_for(fee, &asc, outputs, None)?;
        Err(WalletError::InsufficientFunds { needed: target + fee_all, available })
    }
}

fn varint_len(n: u64) -> u64 {
    match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    }
}

/// An upper bound of the weight of a signed transaction spending inputs of
/// the given kinds (72-byte signatures, compressed keys) and paying outputs
/// with scripts of the given lengths.
pub fn estimate_weight(
    inputs: impl IntoIterator<Item = ScriptKind>,
    output_script_lens: impl IntoIterator<Item = usize>,
) -> u64 {
    let mut n_in = 0u64;
    let mut segwit = false;
    let mut base = 0u64;
    let mut witness = 0u64;
    for kind in inputs {
        n_in += 1;
        match kind {
            ScriptKind::P2wpkh => {
                // outpoint 36 + empty scriptSig 1 + sequence 4.
                base += 41;
                // item count, <sig>, <pubkey>.
                witness += 1 + 1 + MAX_SIG_LEN + 1 + PUBKEY_LEN;
                segwit = true;
            }
            ScriptKind::P2pkh => {
                let script_sig = 1 + MAX_SIG_LEN + 1 + PUBKEY_LEN;
                base += 36 + varint_len(script_sig) + script_sig + 4;
                // An empty witness if the transaction has witnesses at all.
                witness += 1;
            }
        }
    }
    let mut n_out = 0u64;
    for len in output_script_lens {
        n_out += 1;
        let len = len as u64;
        base += 8 + varint_len(len) + len;
    }
    base += 4 + 4 + varint_len(n_in) + varint_len(n_out);
    let witness = if segwit { witness + 2 } else { 0 };
    base * 4 + witness
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bitcoin::hashes::Hash;
    use rand::SeedableRng;

    #[test]
    fn weight_estimate_bounds_real_signed_transactions() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        for kinds in [
            vec![ScriptKind::P2wpkh],
            vec![ScriptKind::P2pkh],
            vec![ScriptKind::P2wpkh, ScriptKind::P2pkh, ScriptKind::P2wpkh],
            vec![ScriptKind::P2pkh, ScriptKind::P2pkh],
        ] {
            let mut w = Wallet::from_rng(WalletConfig::default(), 1, &mut rng).unwrap();
            let coins: Vec<WalletCoin> = kinds
                .iter()
                .enumerate()
                .map(|(i, k)| WalletCoin {
                    outpoint: OutPoint::new(Txid::hash(&[i as u8]), 0),
                    txout: TxOut {
                        value: Amount::from_sat(100_000),
                        script_pubkey: w.keys[0].script(*k).to_owned(),
                    },
                    height: Some(1),
                    is_coinbase: false,
                    key_index: 0,
                    kind: *k,
                })
                .collect();
            for c in &coins {
                w.coins.insert(c.outpoint, c.clone());
            }
            let to = w.receive_script();
            let amount = Amount::from_sat(100_000 * (kinds.len() as u64 - 1) + 50_000);
            let p = w.create_payment(&to, amount, FeeSpec::sat_per_vb(1), 10, &mut rng).unwrap();
            assert_eq!(p.tx.input.len(), kinds.len());
            let real = p.tx.weight().to_wu();
            let kinds_used: Vec<ScriptKind> =
                p.tx.input
                    .iter()
                    .map(|i| coins.iter().find(|c| c.outpoint == i.previous_output).unwrap().kind)
                    .collect();
            let est_used = estimate_weight(
                kinds_used.iter().copied(),
                p.tx.output.iter().map(|o| o.script_pubkey.len()),
            );
            assert!(real <= est_used, "{real} > {est_used}");
            // At most a few bytes of signature slack per input.
            assert!(est_used - real <= 8 * kinds_used.len() as u64, "{real} vs {est_used}");
        }
    }
}
