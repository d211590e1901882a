//! The PowPeg network: Bitcoin nodes, sidechain nodes, merge-mining pools,
//! pegnatories and peg-in users in one simulation.
//!
//! Each kind is composed from protocol parts through
//! [`fika_core::SubContext`]: a merge-mining pool is a Bitcoin full node
//! and a sidechain node; a pegnatory is a sidechain node with a Bitcoin
//! light client (a filter on the federation's script at a Bitcoin node) and
//! the federation key. All coordination goes through sidechain
//! transactions to the Bridge.
//!
//! The whole peg cycle runs here: each pegnatory owns a [`PowHsm`] holding
//! its federation key for Bitcoin signatures; every `hsm_interval` it feeds
//! the HSM the sidechain headers it lacks (`advanceBlockchain`, newest →
//! oldest, in bounded batches); on its turn it sends `receiveHeaders`,
//! `registerBtcTransaction` (peg-ins, and released peg-outs once deep
//! enough on Bitcoin) and `updateCollections`; for each peg-out waiting for
//! signatures it moves the HSM's ancestor onto the block holding the
//! `release_requested` receipt, gets one signature per input and posts
//! them with `addSignature`; every member broadcasts each released
//! transaction to its Bitcoin peers. The pegnatory signs its sidechain
//! transactions with the member key itself (the Bridge authorises callers
//! by the address of a member key, as Rootstock's does).
//!
//! Users ([`PegUser`]) are Bitcoin light wallets pegging in and sidechain
//! light clients: they learn their RBTC balance and nonce only through a
//! [`SideMsg::BalanceQuery`] to a sidechain server, then send part of the
//! balance to the Bridge with empty calldata (a peg-out request), one
//! request in flight at a time. They learn the federation's address the same
//! way ([`SideMsg::FederationQuery`]) when it may change.
//!
//! Federation change ([`FederationChangePlan`]): from the plan's time, each
//! pegnatory that is a federation-change authoriser votes, on its turns, the
//! next step (create, add each missing key, commit the pending federation's
//! hash). Every pegnatory watches, on Bitcoin, every federation the Bridge
//! knows (active, retiring, committed), and signs each peg-out — migrations
//! included — if it is a member of the federation whose coins it spends.
//!
//! Safety: a reorganisation of the sidechain at least
//! [`SideSettings::halt_reorg_depth`] deep (peg-out finality) halts a
//! pegnatory for good: no more HSM feeding, signing or broadcasting
//! (`peg.halted`). [`ForkAttack`] runs a private-fork attacker on a pool
//! (withholding, then publishing) or on a pegnatory's host (a short fork
//! holding its own peg-out, whose release it asks its PowHSM to sign).

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::block::Header;
use bitcoin::consensus::serialize;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::SecretKey;
use bitcoin::{Amount, ScriptBuf, Transaction, Txid};
use fika_btc::msg::{BtcMsg, FilteredBlock};
use fika_btc::node::{BtcNode, FullNode};
use fika_core::{Context, Event, Message, Node, NodeId, Offer, SubContext, TimerId, split_timer};
use fika_side::{ChainConfig, MergeMiningProof, SideBlock, SideChain, SideHeader, SignedTx, UnsignedTx};
use rand::Rng;

use crate::abi::{BRIDGE_ADDRESS, BridgeCall, encode_call};
use crate::contract::BridgeContract;
use crate::hsm::{AdvanceOutcome, HsmCommand, HsmError, HsmResponse, PowHsm};
use crate::pegout::PegoutStatus;

/// A sidechain block as it travels, with its hash and size computed once.
#[derive(Debug)]
pub struct SharedBlock {
    /// The block.
    pub block: SideBlock,
    /// Its hash.
    pub hash: [u8; 32],
    /// Its encoded size.
    pub size: u32,
}

impl SharedBlock {
    /// Wraps a block.
    pub fn new(block: SideBlock) -> Arc<Self> {
        let size = block.encode().len() as u32;
        Arc::new(SharedBlock { hash: block.hash(), block, size })
    }
}

/// Messages between sidechain nodes.
#[derive(Clone, Debug)]
pub enum SideMsg {
    /// A block, pushed to peers when it becomes a node's tip.
    Block(Arc<SharedBlock>),
    /// A transaction, flooded.
    Tx(Arc<SignedTx>),
    /// A request for a block by hash (to fill an orphan's parent).
    GetBlock([u8; 32]),
    /// A light client asks its server for an account's balance and nonce
    /// at the server's best block.
    BalanceQuery([u8; 20]),
    /// The answer: account, balance in wei, next nonce.
    BalanceReply {
        /// The account.
        address: [u8; 20],
        /// Its balance in wei.
        balance: u128,
        /// Its next nonce (confirmed transactions only).
        nonce: u64,
    },
    /// A light client asks for the active federation's address
    /// (`getFederationAddress`) at the server's best block.
    FederationQuery,
    /// The answer: the address's output script.
    FederationReply(ScriptBuf),
}

/// Messages of the whole network.
#[derive(Clone, Debug)]
pub enum PegMsg {
    /// Bitcoin's relay protocol.
    Btc(BtcMsg),
    /// The sidechain's.
    Side(SideMsg),
}

impl Message for PegMsg {
    fn wire_size(&self) -> u32 {
        match self {
            PegMsg::Btc(m) => m.wire_size(),
            PegMsg::Side(SideMsg::Block(b)) => 24 + b.size,
            PegMsg::Side(SideMsg::Tx(t)) => 24 + t.encode().len() as u32,
            PegMsg::Side(SideMsg::GetBlock(_)) => 24 + 32,
            PegMsg::Side(SideMsg::BalanceQuery(_)) => 24 + 20,
            PegMsg::Side(SideMsg::BalanceReply { .. }) => 24 + 20 + 16 + 8,
            PegMsg::Side(SideMsg::FederationQuery) => 24,
            PegMsg::Side(SideMsg::FederationReply(s)) => 24 + s.len() as u32,
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            PegMsg::Btc(m) => m.kind(),
            PegMsg::Side(SideMsg::Block(_)) => "side.block",
            PegMsg::Side(SideMsg::Tx(_)) => "side.tx",
            PegMsg::Side(SideMsg::GetBlock(_)) => "side.getblock",
            PegMsg::Side(SideMsg::BalanceQuery(_)) => "side.balance.query",
            PegMsg::Side(SideMsg::BalanceReply { .. }) => "side.balance.reply",
            PegMsg::Side(SideMsg::FederationQuery) => "side.federation.query",
            PegMsg::Side(SideMsg::FederationReply(_)) => "side.federation.reply",
        }
    }
}

const TAG_BTC: u8 = 1;
const TAG_SIDE: u8 = 2;
const TAG_OWN: u8 = 3;

/// A sidechain full node: its own chain (executing every block), a pool of
/// transactions, block and transaction relay.
pub struct SideNode {
    chain: SideChain<BridgeContract>,
    pool: BTreeMap<([u8; 20], u64), Arc<SignedTx>>,
    seen_txs: BTreeSet<[u8; 32]>,
    violations: u32,
    /// Deepest reorganisation since [`SideNode::take_deepest_reorg`].
    deepest_reorg: u64,
    /// Mining a private fork: peers' blocks are ignored, own blocks and
    /// transactions are not relayed.
    private: bool,
}

impl SideNode {
    /// A node on a chain whose genesis holds `bridge`.
    pub fn new(config: ChainConfig, bridge: BridgeContract) -> Self {
        SideNode {
            chain: SideChain::new(config, bridge),
            pool: BTreeMap::new(),
            seen_txs: BTreeSet::new(),
            violations: 0,
            deepest_reorg: 0,
            private: false,
        }
    }

    /// The depth (blocks disconnected) of the deepest reorganisation of the
    /// best chain since the last call, and resets it.
    pub fn take_deepest_reorg(&mut self) -> u64 {
        std::mem::take(&mut self.deepest_reorg)
    }

    /// Starts (or stops) mining a private fork: while private, blocks from
    /// peers are ignored and nothing of one's own is relayed.
    pub fn set_private(&mut self, private: bool) {
        self.private = private;
    }

    /// Whether the node mines a private fork.
    pub fn is_private(&self) -> bool {
        self.private
    }

    /// Publishes the best chain from block `from` up to the tip to every
    /// peer and leaves private mode (a withheld fork revealed).
    pub fn publish(&mut self, cx: &mut dyn Context<SideMsg>, from: u64) {
        self.private = false;
        for n in from..=self.chain.best_number() {
            let Some(b) = self.chain.hash_at(n).and_then(|h| self.chain.block(&h)) else { continue };
            let shared = SharedBlock::new(b.clone());
            for k in 0..cx.peer_count() {
                let p = cx.peer(k);
                cx.send(p, SideMsg::Block(Arc::clone(&shared)));
            }
        }
    }

    /// The node's chain.
    pub fn chain(&self) -> &SideChain<BridgeContract> {
        &self.chain
    }

    /// Blocks at which the peg's conservation law failed (must stay 0).
    pub fn violations(&self) -> u32 {
        self.violations
    }

    /// Transactions waiting in the pool.
    pub fn pool_len(&self) -> usize {
        self.pool.len()
    }

    /// Pool transactions sent by `addr`.
    pub fn pending_from(&self, addr: &[u8; 20]) -> usize {
        self.pool.range((*addr, 0)..=(*addr, u64::MAX)).count()
    }

    fn handle(&mut self, cx: &mut dyn Context<SideMsg>, from: NodeId, msg: SideMsg) {
        match msg {
            SideMsg::Block(_) | SideMsg::GetBlock(_) if self.private => {}
            SideMsg::Block(b) => self.on_block(cx, Some(from), b),
            SideMsg::Tx(t) => self.submit(cx, Some(from), t),
            SideMsg::GetBlock(h) => {
                if let Some(b) = self.chain.block(&h) {
                    cx.send(from, SideMsg::Block(SharedBlock::new(b.clone())));
                }
            }
            SideMsg::BalanceQuery(address) => {
                let reply = SideMsg::BalanceReply {
                    address,
                    balance: self.chain.balance(&address),
                    nonce: self.chain.nonce(&address),
                };
                cx.send(from, reply);
            }
            SideMsg::FederationQuery => {
                let script = self.chain.system().state().federation().script_pubkey().clone();
                cx.send(from, SideMsg::FederationReply(script));
            }
            SideMsg::BalanceReply { .. } | SideMsg::FederationReply(_) => {}
        }
    }

    /// Whether the node has seen the transaction with this hash (pooled,
    /// relayed or mined through its pool).
    pub fn has_seen(&self, hash: &[u8; 32]) -> bool {
        self.seen_txs.contains(hash)
    }

    /// Checks a transaction from a local client (an RPC call) as the pool
    /// would take it — a valid signature for this chain, a nonce not yet
    /// used, the sender able to pay `gas_limit · gas_price + value` — then
    /// pools and relays it. Returns its hash.
    pub fn offer(&mut self, cx: &mut dyn Context<SideMsg>, tx: SignedTx) -> Result<[u8; 32], OfferError> {
        let hash = tx.tx_hash();
        if self.seen_txs.contains(&hash) {
            return Err(OfferError::AlreadyKnown);
        }
        let sender = tx.recover_sender().map_err(|e| OfferError::BadSignature(e.to_string()))?;
        let chain_id = self.chain.config().chain_id;
        if tx.chain_id().is_some_and(|c| c != chain_id) {
            return Err(OfferError::WrongChain { got: tx.chain_id().unwrap_or(0), expected: chain_id });
        }
        let next = self.chain.nonce(&sender);
        if tx.tx.nonce < next {
            return Err(OfferError::NonceTooLow { got: tx.tx.nonce, next });
        }
        let cost = u128::from(tx.tx.gas_limit).saturating_mul(tx.tx.gas_price).saturating_add(tx.tx.value);
        let balance = self.chain.balance(&sender);
        if cost > balance {
            return Err(OfferError::InsufficientFunds { cost, balance });
        }
        if tx.tx.gas_limit > self.chain.config().block_gas_limit {
            return Err(OfferError::GasLimit {
                got: tx.tx.gas_limit,
                limit: self.chain.config().block_gas_limit,
            });
        }
        self.submit(cx, None, Arc::new(tx));
        Ok(hash)
    }

    /// Offers a transaction (from a peer, or locally with `from = None`).
    pub fn submit(&mut self, cx: &mut dyn Context<SideMsg>, from: Option<NodeId>, tx: Arc<SignedTx>) {
        let hash = tx.tx_hash();
        if !self.seen_txs.insert(hash) {
            return;
        }
        let Ok(sender) = tx.recover_sender() else { return };
        if tx.tx.nonce < self.chain.nonce(&sender) {
            return;
        }
        self.pool.insert((sender, tx.tx.nonce), Arc::clone(&tx));
        if self.private && from.is_none() {
            return;
        }
        for k in 0..cx.peer_count() {
            let p = cx.peer(k);
            if Some(p) != from {
                cx.send(p, SideMsg::Tx(Arc::clone(&tx)));
            }
        }
    }

    fn on_block(&mut self, cx: &mut dyn Context<SideMsg>, from: Option<NodeId>, b: Arc<SharedBlock>) {
        if self.chain.contains(&b.hash) {
            return;
        }
        match self.chain.accept_block(b.block.clone()) {
            Ok(outcome) => {
                cx.emit(Event::new("side.block.received").with("hash", b.hash));
                if outcome.status == fika_side::BlockStatus::Orphan {
                    if let Some(p) = from {
                        cx.send(p, SideMsg::GetBlock(b.block.header.parent_hash));
                    }
                    return;
                }
                for h in &outcome.connected {
                    if let Some(s) = self.chain.state_at(h) {
                        if let Err(e) = s.system.state().conservation() {
                            self.violations += 1;
                            cx.emit(
                                Event::new("peg.conservation.violated")
                                    .with("block", *h)
                                    .with("reason", e.to_string()),
                            );
                        }
                    }
                }
                if let Some(tc) = outcome.tip_change {
                    if tc.is_reorg() {
                        let depth = tc.disconnected.len() as u64;
                        self.deepest_reorg = self.deepest_reorg.max(depth);
                        cx.emit(Event::new("side.reorg").with("depth", depth));
                    }
                    self.prune_pool();
                    if self.private {
                        return;
                    }
                    // Relay the new tip (and what it connected) onward.
                    for h in &tc.connected {
                        if let Some(blk) = self.chain.block(h) {
                            let shared =
                                if *h == b.hash { Arc::clone(&b) } else { SharedBlock::new(blk.clone()) };
                            for k in 0..cx.peer_count() {
                                let p = cx.peer(k);
                                if Some(p) != from {
                                    cx.send(p, SideMsg::Block(Arc::clone(&shared)));
                                }
                            }
                        }
                    }
                }
            }
            Err(e) => {
                cx.emit(Event::new("side.block.invalid").with("hash", b.hash).with("reason", e.to_string()));
            }
        }
    }

    fn prune_pool(&mut self) {
        let chain = &self.chain;
        self.pool.retain(|(sender, nonce), _| *nonce >= chain.nonce(sender));
    }

    /// Builds a block on the tip with the pool's transactions, has
    /// `merge_mine` produce the Bitcoin evidence, accepts and relays it.
    pub fn produce_block(
        &mut self,
        cx: &mut dyn Context<SideMsg>,
        miner: [u8; 20],
        time: u64,
        merge_mine: impl FnOnce(&[u8; 32]) -> MergeMiningProof,
    ) {
        let txs: Vec<SignedTx> = self.pool.values().map(|t| (**t).clone()).collect();
        let parent = self.chain.best_hash();
        match self.chain.build_block(&parent, &txs, miner, time, merge_mine) {
            Ok(block) => {
                let shared = SharedBlock::new(block);
                cx.emit(
                    Event::new("side.block.mined")
                        .with("hash", shared.hash)
                        .with("number", shared.block.header.number),
                );
                self.on_block(cx, None, shared);
            }
            Err(e) => cx.emit(Event::new("side.block.failed").with("reason", e.to_string())),
        }
    }
}

/// Why [`SideNode::offer`] refused a transaction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum OfferError {
    /// The node has it already.
    #[error("already known")]
    AlreadyKnown,
    /// The signature does not give a sender.
    #[error("invalid sender: {0}")]
    BadSignature(String),
    /// Signed for another chain (EIP-155).
    #[error("invalid chain id {got}: this chain is {expected}")]
    WrongChain {
        /// The transaction's chain id.
        got: u64,
        /// This chain's.
        expected: u64,
    },
    /// The nonce was used already.
    #[error("nonce too low: next nonce {next}, tx nonce {got}")]
    NonceTooLow {
        /// The transaction's nonce.
        got: u64,
        /// The sender's next nonce.
        next: u64,
    },
    /// The sender cannot pay for it.
    #[error("insufficient funds for gas * price + value: balance {balance}, tx cost {cost}")]
    InsufficientFunds {
        /// `gas_limit · gas_price + value`, wei.
        cost: u128,
        /// The sender's balance, wei.
        balance: u128,
    },
    /// More gas than a block holds.
    #[error("exceeds block gas limit: {got} > {limit}")]
    GasLimit {
        /// The transaction's gas limit.
        got: u64,
        /// The block's.
        limit: u64,
    },
}

/// Sidechain settings shared by the run.
#[derive(Clone, Debug)]
pub struct SideSettings {
    /// Mean time between sidechain blocks, network-wide.
    pub block_interval: Duration,
    /// Unix time at virtual time zero.
    pub start_unix: u64,
    /// Chain id for signing.
    pub chain_id: u64,
    /// Pegnatory turn (3 min on mainnet).
    pub turn: Duration,
    /// Headers sent per turn.
    pub max_headers: usize,
    /// Peg-ins registered per turn.
    pub max_pegins: usize,
    /// Bitcoin confirmations a peg-in needs.
    pub confirmations: u32,
    /// How often a pegnatory feeds its PowHSM sidechain headers (6 min on
    /// mainnet).
    pub hsm_interval: Duration,
    /// Headers per `advanceBlockchain` invocation.
    pub hsm_batch: usize,
    /// Users pegging out, if any.
    pub pegout: Option<PegoutWorkload>,
    /// A federation change the authorised pegnatories vote for, if any.
    pub federation_change: Option<FederationChangePlan>,
    /// A sidechain reorganisation at least this deep (in blocks) makes the
    /// pegnatories halt peg-outs: peg-out finality was broken.
    pub halt_reorg_depth: u64,
    /// How often users ask their sidechain server for the federation's
    /// address (`getFederationAddress`), if they do.
    pub address_refresh: Option<Duration>,
}

/// A federation change the authorised pegnatories vote for: from `at`, on
/// each of its turns, an authoriser votes the next step (create, add each
/// key, commit the pending federation's hash) until `members` is the
/// committed federation.
#[derive(Clone, Debug)]
pub struct FederationChangePlan {
    /// When voting starts.
    pub at: Duration,
    /// The new federation's Bitcoin keys.
    pub members: Vec<bitcoin::secp256k1::PublicKey>,
}

/// A private-fork attack on the sidechain by a node with some merge-mining
/// hashrate: from `start` it ignores its peers' blocks and mines on its own
/// fork, relaying nothing; `publish` reveals the fork to its peers.
///
/// On a merge-mining pool, this is a withholding attacker whose fork, if
/// heavier when published, reorganises the sidechain. On a pegnatory, it is
/// an attacker who controls the pegnatory's host (not its PowHSM): it
/// requests a peg-out of `pegout_sat` from the member's own account that
/// only its fork holds, mines its fork at `rate` times the network's block
/// rate, and tries to have its PowHSM sign the fork's release.
#[derive(Clone, Debug)]
pub struct ForkAttack {
    /// When the attacker forks.
    pub start: Duration,
    /// When it publishes its fork, if ever.
    pub publish: Option<Duration>,
    /// A pegnatory attacker's block rate, as a fraction of the network's
    /// (a pool mines at its hashrate share).
    pub rate: f64,
    /// The peg-out a pegnatory attacker requests on its fork, in satoshis.
    pub pegout_sat: u64,
}

/// Users pegging out: each, every `interval` on average (exponential)
/// from `start`, asks its sidechain server for its RBTC balance and sends
/// a fraction of it to the Bridge.
#[derive(Clone, Debug)]
pub struct PegoutWorkload {
    /// Mean time between a user's peg-out attempts.
    pub interval: Duration,
    /// When users start.
    pub start: Duration,
    /// The amount is this fraction of the balance, uniform in the range.
    pub amount_fraction: [f64; 2],
    /// Smallest request a user bothers sending, in satoshis (users do not
    /// send what the Bridge would refuse as too low).
    pub min_sat: u64,
}

/// A merge-mining pool: a Bitcoin miner that also runs a sidechain node.
pub struct MergeMiner {
    /// The Bitcoin part.
    pub btc: FullNode,
    /// The sidechain part.
    pub side: SideNode,
    /// Share of the merge-mining hashrate.
    pub share: f64,
    /// Where its sidechain fees go.
    pub address: [u8; 20],
    /// A private-fork attack it runs, if any.
    pub attack: Option<ForkAttack>,
    /// Best sidechain block number when its attack started.
    pub fork_point: u64,
}

/// A pegnatory: a sidechain node, a Bitcoin light client watching the
/// federation's address, and a PowHSM holding the federation key.
///
/// As Rootstock's pegnatories, it signs its sidechain transactions with the
/// key whose address the Bridge knows as a member's (`addSignature`,
/// `receiveHeaders` and `updateCollections` check the caller); Bitcoin
/// signatures come only from [`PowHsm`], which signs a peg-out input only
/// when a `release_requested` receipt is proven under enough work.
pub struct Pegnatory {
    /// The sidechain part.
    pub side: SideNode,
    key: SecretKey,
    public: bitcoin::secp256k1::PublicKey,
    address: [u8; 20],
    index: u32,
    members: u32,
    /// Federation scripts its Bitcoin filter watches (every federation it
    /// has seen live or proposed).
    watched: Vec<ScriptBuf>,
    hsm: PowHsm,
    /// The Bitcoin best chain as its server reports it, by height.
    headers: Vec<Header>,
    /// Headers above its chain waiting for the ones below, by height.
    early_headers: BTreeMap<usize, Header>,
    /// Federation transactions seen (peg-ins, peg-outs): txid → (tx,
    /// height, block hash, serialized proof).
    pegins: BTreeMap<Txid, (Transaction, u32, bitcoin::BlockHash, Vec<u8>)>,
    /// Peg-outs it sent `addSignature` for, with when (a retry after a while).
    signed: BTreeMap<[u8; 32], Duration>,
    /// Released peg-outs it broadcast on Bitcoin.
    broadcast: BTreeSet<Txid>,
    turns: u64,
    /// A censoring member: does everything else but never signs a peg-out.
    censor: bool,
    /// Halted after a reorganisation deeper than peg-out finality: no more
    /// HSM feeding, signing or broadcasting.
    halted: bool,
    /// A private-fork attack run from its host, if any.
    attack: Option<ForkAttack>,
    /// Best sidechain block number when the attack started.
    fork_point: u64,
}

/// The `bytes` (or `string`) whose offset is the `head`-th word of ABI-encoded
/// `data` (a log's data, a return value).
pub fn abi_bytes_at(data: &[u8], head: usize) -> Option<&[u8]> {
    let word = |at: usize| -> Option<usize> {
        let w = data.get(at..at + 32)?;
        if w[..24].iter().any(|b| *b != 0) {
            return None;
        }
        Some(u64::from_be_bytes(w[24..].try_into().ok()?) as usize)
    };
    let off = word(head.checked_mul(32)?)?;
    let len = word(off)?;
    data.get(off + 32..off.checked_add(32)?.checked_add(len)?)
}

/// The fully signed Bitcoin transaction a `release_btc` log of `chain` at
/// block `number` carries for the peg-out `key`.
pub fn released_tx(chain: &SideChain<BridgeContract>, number: u64, key: &[u8; 32]) -> Option<Transaction> {
    let topic = crate::abi::event_topic(crate::abi::RELEASE_BTC_SIGNATURE);
    chain
        .logs_in_range(number, number, Some(BRIDGE_ADDRESS.0), Some(topic))
        .into_iter()
        .find(|l| l.log.topics.get(1) == Some(key))
        .and_then(|l| bitcoin::consensus::deserialize(abi_bytes_at(&l.log.data, 0)?).ok())
}

impl Pegnatory {
    /// Member `index` of `members`, holding `key` (the sidechain key, also
    /// provisioned into `hsm`).
    pub fn new(
        side: SideNode,
        key: SecretKey,
        hsm: PowHsm,
        index: u32,
        members: u32,
        federation_script: ScriptBuf,
        genesis: Header,
    ) -> Self {
        let address = fika_side::address_of_secret(&key);
        let public = key.public_key(&bitcoin::secp256k1::Secp256k1::signing_only());
        Pegnatory {
            side,
            key,
            public,
            address,
            index,
            members,
            watched: vec![federation_script],
            hsm,
            headers: vec![genesis],
            early_headers: BTreeMap::new(),
            pegins: BTreeMap::new(),
            signed: BTreeMap::new(),
            broadcast: BTreeSet::new(),
            turns: 0,
            censor: false,
            halted: false,
            attack: None,
            fork_point: 0,
        }
    }

    /// Makes its host an attacker running `attack` (see [`ForkAttack`]).
    pub fn set_attack(&mut self, attack: Option<ForkAttack>) {
        self.attack = attack;
    }

    /// Whether it halted peg-outs after a deep reorganisation.
    pub fn is_halted(&self) -> bool {
        self.halted
    }

    /// Halts peg-outs if its sidechain node saw a reorganisation at least
    /// `s.halt_reorg_depth` deep: a final peg-out (or peg-in) may have been
    /// reverted, and Rootstock's pegnatories then stop every future peg-out.
    fn check_reorg(&mut self, cx: &mut dyn Context<PegMsg>, s: &SideSettings) {
        let depth = self.side.take_deepest_reorg();
        if depth >= s.halt_reorg_depth && !self.halted {
            self.halted = true;
            cx.emit(Event::new("peg.halted").with("depth", depth).with("limit", s.halt_reorg_depth));
        }
    }

    /// Watches every federation the Bridge knows (active, retiring,
    /// committed): reloads the Bitcoin filter when one is new.
    fn refresh_watch(&mut self, cx: &mut dyn Context<BtcMsg>) {
        let bridge = self.side.chain.system().state();
        let mut scripts = vec![bridge.federation().script_pubkey().clone()];
        scripts.extend(bridge.retiring_federation().map(|f| f.script_pubkey().clone()));
        scripts.extend(bridge.proposed_federation().map(|(f, _)| f.script_pubkey().clone()));
        let mut changed = false;
        for sc in scripts {
            if !self.watched.contains(&sc) {
                self.watched.push(sc);
                changed = true;
            }
        }
        if changed {
            for k in 0..cx.peer_count() {
                let peer = cx.peer(k);
                cx.send(peer, BtcMsg::FilterLoad(self.watched.clone()));
            }
        }
    }

    /// The federation-change votes it casts this turn, as an authoriser
    /// following `plan`: one step at a time (create; add every missing key;
    /// commit), never a vote it already cast.
    fn federation_votes(&self, plan: &FederationChangePlan) -> Vec<BridgeCall> {
        use crate::fedchange::FederationChangeVote as Vote;
        let bridge = self.side.chain.system().state();
        let me = crate::side::SideAddress(self.address);
        if !bridge.is_federation_change_authorizer(&me) {
            return Vec::new();
        }
        let mut target: Vec<[u8; 33]> = plan.members.iter().map(|k| k.serialize()).collect();
        target.sort();
        let keys_of =
            |f: &crate::Federation| -> Vec<[u8; 33]> { f.members().iter().map(|k| k.serialize()).collect() };
        if keys_of(bridge.federation()) == target
            || bridge.proposed_federation().is_some_and(|(f, _)| keys_of(f) == target)
            || bridge.proposed_federation().is_some()
            || bridge.retiring_federation().is_some()
        {
            return Vec::new();
        }
        let voted = |v: &Vote| bridge.federation_change_votes(v).contains(&me);
        let Some(pending) = bridge.pending_federation() else {
            return if voted(&Vote::Create) { Vec::new() } else { vec![BridgeCall::CreateFederation] };
        };
        let have: Vec<[u8; 33]> = pending.btc_keys().iter().map(|k| k.serialize()).collect();
        if have.iter().any(|k| !target.contains(k)) {
            return if voted(&Vote::Rollback) { Vec::new() } else { vec![BridgeCall::RollbackFederation] };
        }
        let adds: Vec<BridgeCall> = plan
            .members
            .iter()
            .filter(|k| !have.contains(&k.serialize()))
            .filter(|k| !voted(&Vote::Add(crate::fedchange::PendingMember::single(**k))))
            .map(|k| BridgeCall::AddFederatorPublicKey { key: k.serialize().to_vec() })
            .collect();
        if have.len() < target.len() {
            return adds;
        }
        let hash = pending.hash();
        if voted(&Vote::Commit(hash)) {
            Vec::new()
        } else {
            vec![BridgeCall::CommitFederation { hash: hash.to_vec() }]
        }
    }

    /// Starts its attack: forks privately and requests a peg-out only its
    /// fork will hold.
    fn start_attack(&mut self, cx: &mut dyn Context<SideMsg>, s: &SideSettings) {
        let Some(a) = self.attack.clone() else { return };
        self.side.set_private(true);
        self.fork_point = self.side.chain.best_number();
        let nonce = self.side.chain.nonce(&self.address) + self.side.pending_from(&self.address) as u64;
        let tx = UnsignedTx {
            nonce,
            gas_price: 1,
            gas_limit: 100_000,
            to: Some(BRIDGE_ADDRESS.0),
            value: crate::side::sat_to_wei(a.pegout_sat),
            data: Vec::new(),
            chain_id: Some(s.chain_id),
        }
        .sign(&self.key);
        cx.emit(Event::new("peg.attack.fork").with("from", self.fork_point).with("pegout_tx", tx.tx_hash()));
        self.side.submit(cx, None, Arc::new(tx));
    }

    /// Mines one block of its private fork (a merge-mining proof from a
    /// Bitcoin block the attacker built; only the simulator's timing says
    /// how much work it cost).
    fn mine_fork_block(&mut self, cx: &mut dyn Context<SideMsg>, s: &SideSettings, now: Duration) {
        let prev = self.headers.last().copied();
        let time = now.as_secs().saturating_add(s.start_unix);
        let miner = self.address;
        self.side.produce_block(cx, miner, time, |hash| {
            let coinbase = fika_btc::template::coinbase_tx(
                self.headers.len() as u32,
                &ScriptBuf::new(),
                Amount::ZERO,
                b"private fork",
            );
            let header = Header {
                version: bitcoin::block::Version::from_consensus(0x2000_0000),
                prev_blockhash: prev.map_or(bitcoin::BlockHash::all_zeros(), |h| h.block_hash()),
                merkle_root: bitcoin::TxMerkleNode::all_zeros(),
                time: u32::try_from(time).unwrap_or(u32::MAX),
                bits: prev.map_or(bitcoin::CompactTarget::from_consensus(0x207f_ffff), |h| h.bits),
                nonce: 0,
            };
            let mut block = fika_btc::template::assemble_block(header, coinbase, Vec::new());
            fika_side::block::add_merge_mining_tag(&mut block, hash);
            MergeMiningProof {
                btc_header: block.header,
                coinbase_branch: fika_side::block::coinbase_merkle_branch(&block),
                btc_coinbase: block.txdata.into_iter().next().unwrap_or_else(|| {
                    fika_btc::template::coinbase_tx(0, &ScriptBuf::new(), Amount::ZERO, b"")
                }),
            }
        });
        if let Some(n) = Some(self.side.chain.best_number()) {
            cx.emit(Event::new("peg.attack.fork_block").with("number", n).with("depth", n - self.fork_point));
        }
    }

    /// Its PowHSM.
    pub fn hsm(&self) -> &PowHsm {
        &self.hsm
    }

    fn on_filtered(&mut self, cx: &mut dyn Context<PegMsg>, f: &FilteredBlock) {
        let h = f.height as usize;
        if h == 0 {
            return;
        }
        self.add_header(h, f.header);
        let bridge = self.side.chain.system().state();
        for tx in &f.txs {
            // The filter matches outputs to the federation and spends of
            // its coins: peg-ins, peg-outs, refunds.
            let txid = tx.compute_txid();
            let pays = tx.output.iter().any(|o| self.watched.contains(&o.script_pubkey));
            let pegout = bridge.pegouts().any(|p| {
                p.btc_txid == txid
                    || matches!(p.status, PegoutStatus::Released { signed_txid, .. } if signed_txid == txid)
            });
            if !pays && !pegout {
                continue;
            }
            if pegout && !self.pegins.contains_key(&txid) {
                cx.emit(
                    Event::new("peg.pegout.included")
                        .with("txid", txid.to_byte_array())
                        .with("height", f.height),
                );
            }
            self.pegins.insert(txid, ((**tx).clone(), f.height, f.header.block_hash(), serialize(&f.proof)));
        }
    }

    /// Adds the Bitcoin header at height `h` to its best chain: extends it,
    /// replaces a different header at that height (a reorganisation on its
    /// server), or keeps it until the headers below arrive (a server
    /// replaying the chain after a filter reload sends blocks whose
    /// messages may overtake each other).
    fn add_header(&mut self, h: usize, header: Header) {
        let links = |headers: &[Header], at: usize, hd: &Header| {
            at > 0 && headers.get(at - 1).is_some_and(|p| p.block_hash() == hd.prev_blockhash)
        };
        if h < self.headers.len() {
            if self.headers[h] != header && links(&self.headers, h, &header) {
                self.headers.truncate(h);
                self.headers.push(header);
            }
        } else if h == self.headers.len() && links(&self.headers, h, &header) {
            self.headers.push(header);
        } else if h > self.headers.len() {
            self.early_headers.insert(h, header);
        }
        while let Some(next) = self.early_headers.remove(&self.headers.len()) {
            let at = self.headers.len();
            if !links(&self.headers, at, &next) {
                break;
            }
            self.headers.push(next);
        }
        let len = self.headers.len();
        self.early_headers.retain(|k, _| *k > len);
    }

    fn send_calls(&mut self, cx: &mut dyn Context<SideMsg>, s: &SideSettings, calls: Vec<BridgeCall>) {
        let first = self.side.chain.nonce(&self.address) + self.side.pending_from(&self.address) as u64;
        for (nonce, call) in (first..).zip(calls) {
            let tx = UnsignedTx {
                nonce,
                gas_price: 1,
                gas_limit: 2_000_000,
                to: Some(BRIDGE_ADDRESS.0),
                value: 0,
                data: encode_call(&call),
                chain_id: Some(s.chain_id),
            }
            .sign(&self.key);
            self.side.submit(cx, None, Arc::new(tx));
        }
    }

    fn turn(&mut self, cx: &mut dyn Context<SideMsg>, s: &SideSettings, now: Duration) {
        self.turns += 1;
        let bridge = self.side.chain.system().state().clone();
        let spv = bridge.spv();
        let best = spv.best_height();
        let mut calls = Vec::new();
        // Only members of a live federation may send headers.
        let member = bridge.is_federation_member(&crate::side::SideAddress(self.address));
        // Headers the Bridge lacks, from a little below its tip (reorgs).
        let from = best.saturating_sub(6).max(1) as usize;
        let to = self.headers.len().min(best as usize + 1 + s.max_headers);
        if member
            && (to > best as usize + 1
                || self.headers.get(best as usize).map(|h| h.block_hash()) != spv.hash_at_height(best))
        {
            let headers: Vec<Vec<u8>> = self.headers[from.min(to)..to].iter().map(serialize).collect();
            if !headers.is_empty() {
                calls.push(BridgeCall::ReceiveHeaders { headers });
            }
        }
        // Peg-ins and released peg-outs deep enough in the Bridge's view and
        // not yet processed.
        let mut registrations = 0;
        for (txid, (tx, height, hash, pmt)) in &self.pegins {
            if registrations >= s.max_pegins {
                break;
            }
            let deep = best + 1 >= height + s.confirmations;
            let on_chain = spv.hash_at_height(*height) == Some(*hash);
            // A peg-out is registered back only once released.
            let unreleased = bridge
                .pegouts()
                .any(|p| p.btc_txid == *txid && !matches!(p.status, PegoutStatus::Released { .. }));
            if deep && on_chain && !unreleased && bridge.processed_at(txid).is_none() {
                registrations += 1;
                calls.push(BridgeCall::RegisterBtcTransaction {
                    tx: serialize(tx),
                    height: i64::from(*height),
                    pmt: pmt.clone(),
                });
            }
        }
        calls.push(BridgeCall::UpdateCollections);
        if let Some(plan) = s.federation_change.as_ref().filter(|p| now >= p.at) {
            calls.extend(self.federation_votes(plan));
        }
        self.send_calls(cx, s, calls);
    }

    /// Feeds the PowHSM the sidechain headers it lacks, newest → oldest, in
    /// batches of `hsm_batch`.
    fn feed_hsm(&mut self, cx: &mut dyn Context<SideMsg>, s: &SideSettings) {
        if self.halted {
            return;
        }
        let Ok(HsmResponse::State(st)) = self.hsm.execute(HsmCommand::GetState) else { return };
        let chain = &self.side.chain;
        let Some(best_number) = chain.header(&st.best_block).map(|h| h.number) else { return };
        if chain.hash_at(best_number) != Some(st.best_block) {
            cx.emit(Event::new("peg.hsm.off_chain").with("best_block", st.best_block));
            return;
        }
        let tip = chain.best_number();
        if tip <= best_number || chain.hash_at(tip) == Some(st.newest_valid_block) {
            return;
        }
        let mut hi = tip;
        let _ = self.hsm.execute(HsmCommand::ResetAdvanceBlockchain);
        loop {
            let lo = hi.saturating_sub(s.hsm_batch.max(1) as u64 - 1).max(best_number + 1);
            let headers: Vec<SideHeader> = (lo..=hi)
                .rev()
                .filter_map(|n| chain.hash_at(n).and_then(|h| chain.header(&h)).cloned())
                .collect();
            match self.hsm.execute(HsmCommand::AdvanceBlockchain { headers }) {
                Ok(HsmResponse::Advance(AdvanceOutcome::Advanced { best_block, .. })) => {
                    cx.emit(Event::new("peg.hsm.advanced").with("best_block", best_block));
                    return;
                }
                Ok(HsmResponse::Advance(AdvanceOutcome::NeedMoreBlocks { .. })) if lo > best_number + 1 => {
                    hi = lo - 1;
                }
                Ok(_) => return,
                Err(e @ HsmError::NotEnoughWork { .. }) => {
                    if self.side.is_private() {
                        cx.emit(Event::new("peg.hsm.refused").with("reason", e.to_string()));
                    }
                    return;
                }
                Err(e) => {
                    cx.emit(Event::new("peg.hsm.refused").with("reason", e.to_string()));
                    return;
                }
            }
        }
    }

    /// Makes this member censor (refuse to sign) every peg-out, or stop.
    pub fn set_censor(&mut self, on: bool) {
        self.censor = on;
    }

    /// Signs, through the PowHSM, every peg-out waiting for signatures it
    /// has not signed, and posts the signatures with `addSignature`.
    ///
    /// An honest pegnatory asks only once its PowHSM's best block covers
    /// the release. An attacker on a private fork asks anyway, moving the
    /// ancestor from its fork's tip when the device's best block is not
    /// above the release: the device must refuse what its own view of the
    /// cumulative work does not command.
    fn sign_pending(&mut self, cx: &mut dyn Context<SideMsg>, s: &SideSettings, now: Duration) {
        if self.censor || self.halted {
            return;
        }
        let attacking = self.side.is_private();
        let retry = s.turn * self.members.max(1) * 2;
        let waiting: Vec<crate::pegout::Pegout> = self
            .side
            .chain
            .system()
            .state()
            .pegouts_waiting_for_signatures()
            .filter(|p| p.federation.is_member(&self.public))
            .filter(|p| !p.signers().any(|k| *k == self.public))
            .filter(|p| self.signed.get(&p.rsk_tx_hash).is_none_or(|t| now >= *t + retry))
            .cloned()
            .collect();
        if waiting.is_empty() {
            return;
        }
        let mut calls = Vec::new();
        for p in waiting {
            let Ok(HsmResponse::State(st)) = self.hsm.execute(HsmCommand::GetState) else { return };
            let chain = &self.side.chain;
            // The receipt of the transaction that created the peg-out (its
            // key), holding `release_requested`, on the best chain.
            let found = match chain.receipt(&p.rsk_tx_hash) {
                Some(r) => Some((r.block_hash, r.tx_index as usize)),
                None => {
                    let topic = crate::abi::event_topic(crate::abi::RELEASE_REQUESTED_SIGNATURE);
                    chain
                        .logs_in_range(
                            p.created_at_block,
                            p.created_at_block,
                            Some(BRIDGE_ADDRESS.0),
                            Some(topic),
                        )
                        .into_iter()
                        .find(|l| l.log.topics.get(1) == Some(&p.rsk_tx_hash))
                        .map(|l| (l.block_hash, l.tx_index as usize))
                }
            };
            let Some((block, index)) = found else { continue };
            let Some(number) = chain.header(&block).map(|h| h.number) else { continue };
            let best_number = chain.header(&st.best_block).map(|h| h.number);
            let covered = best_number.is_some_and(|b| chain.hash_at(b) == Some(st.best_block) && b >= number);
            if attacking {
                cx.emit(
                    Event::new("peg.attack.target")
                        .with("txid", p.btc_txid.to_byte_array())
                        .with("covered", covered),
                );
            } else if !covered {
                // Not under enough work yet: the next advance will tell.
                continue;
            }
            let best_number = match best_number {
                Some(b) if covered => b,
                _ => chain.best_number(),
            };
            // Walk the ancestor from the nearest of best block and current ancestor.
            let from = match chain.header(&st.ancestor_block) {
                Some(a) if a.number >= number && chain.hash_at(a.number) == Some(st.ancestor_block) => {
                    a.number
                }
                _ => best_number,
            };
            if st.ancestor_block != block {
                let headers: Vec<SideHeader> = (number..=from)
                    .rev()
                    .filter_map(|n| chain.hash_at(n).and_then(|h| chain.header(&h)).cloned())
                    .collect();
                if let Err(e) = self.hsm.execute(HsmCommand::UpdateAncestor { headers }) {
                    cx.emit(Event::new("peg.hsm.refused").with("reason", e.to_string()));
                    if !attacking {
                        continue;
                    }
                }
            }
            let Some((receipt, proof)) = self.side.chain.receipt_proof(&block, index) else { continue };
            let mut sigs = Vec::new();
            for (input, utxo) in p.inputs.iter().enumerate() {
                let cmd = HsmCommand::Sign {
                    tx: p.tx.clone(),
                    input,
                    value: utxo.value,
                    receipt: receipt.clone(),
                    receipt_proof: proof.clone(),
                    federation: Some(Arc::clone(&p.federation)),
                };
                match self.hsm.execute(cmd) {
                    Ok(HsmResponse::Signature(sig)) => {
                        cx.emit(
                            Event::new("peg.hsm.signed")
                                .with("sig", crate::side::keccak256(&sig.signature.serialize_compact()))
                                .with("txid", p.btc_txid.to_byte_array())
                                .with(
                                    "work_blocks",
                                    self.side.chain.best_number().saturating_sub(number) + 1,
                                ),
                        );
                        sigs.push(sig.signature.serialize_der().to_vec());
                    }
                    Ok(_) => break,
                    Err(e) => {
                        cx.emit(Event::new("peg.hsm.refused").with("reason", e.to_string()));
                        break;
                    }
                }
            }
            if sigs.len() != p.inputs.len() {
                continue;
            }
            self.signed.insert(p.rsk_tx_hash, now);
            calls.push(BridgeCall::AddSignature {
                federator_public_key: self.public.serialize().to_vec(),
                signatures: sigs,
                rsk_tx_hash: p.rsk_tx_hash,
            });
        }
        self.send_calls(cx, s, calls);
    }

    /// Broadcasts every released peg-out not yet seen in a Bitcoin block
    /// (every member does).
    fn broadcast_released(&mut self, cx: &mut dyn Context<BtcMsg>) {
        if self.halted {
            return;
        }
        let chain = &self.side.chain;
        let released: Vec<(u64, [u8; 32], Txid, Amount)> = chain
            .system()
            .state()
            .pegouts()
            .filter_map(|p| match p.status {
                PegoutStatus::Released { at_block, signed_txid } => {
                    Some((at_block, p.rsk_tx_hash, signed_txid, p.fee))
                }
                _ => None,
            })
            .collect();
        for (at_block, key, txid, fee) in released {
            if self.pegins.contains_key(&txid) {
                continue;
            }
            let Some(tx) = released_tx(chain, at_block, &key) else { continue };
            if self.broadcast.insert(txid) {
                cx.emit(
                    Event::new("peg.pegout.broadcast")
                        .with("txid", txid.to_byte_array())
                        .with("fee", fee.to_sat()),
                );
            }
            let tx = Arc::new(tx);
            for k in 0..cx.peer_count() {
                let peer = cx.peer(k);
                cx.send(peer, BtcMsg::Tx(Arc::clone(&tx)));
            }
        }
    }
}

/// A user: a Bitcoin light wallet pegging in, and a sidechain light client
/// (balance queries to its sidechain servers) pegging out from the key the
/// peg-ins credit.
pub struct PegUser {
    /// The Bitcoin wallet.
    pub wallet: BtcNode,
    key: SecretKey,
    address: [u8; 20],
    /// The nonce of the last peg-out it sent, if any.
    sent_nonce: Option<u64>,
    /// Peg-outs sent.
    pub pegouts_sent: u64,
    /// The federation script its peg-ins pay (learned from the sidechain).
    federation: Option<ScriptBuf>,
}

impl PegUser {
    /// A user whose wallet key is `key`.
    pub fn new(wallet: BtcNode, key: SecretKey) -> Self {
        PegUser {
            wallet,
            address: fika_side::address_of_secret(&key),
            key,
            sent_nonce: None,
            pegouts_sent: 0,
            federation: None,
        }
    }

    /// Learns the active federation's address from its sidechain server:
    /// its next peg-ins pay it.
    fn on_federation(&mut self, cx: &mut dyn Context<PegMsg>, script: ScriptBuf) {
        if self.federation.as_ref() == Some(&script) {
            return;
        }
        if let BtcNode::Wallet(w) = &mut self.wallet {
            w.set_recipients(Rc::new(vec![script.clone()]));
        }
        if self.federation.is_some() {
            cx.emit(
                Event::new("peg.user.federation").with("script", crate::side::keccak256(script.as_bytes())),
            );
        }
        self.federation = Some(script);
    }

    fn on_balance(&mut self, cx: &mut dyn Context<SideMsg>, s: &SideSettings, balance: u128, nonce: u64) {
        let Some(w) = &s.pegout else { return };
        if self.sent_nonce.is_some_and(|n| n >= nonce) {
            return; // the last request is not in a block yet
        }
        const GAS_LIMIT: u64 = 100_000;
        let [lo, hi] = w.amount_fraction;
        let f = lo + (hi - lo) * cx.rng().r#gen::<f64>();
        let spendable = balance.saturating_sub(u128::from(GAS_LIMIT));
        let wei_per_sat = fika_side::WEI_PER_RBTC / 100_000_000;
        let sat = ((spendable / wei_per_sat) as f64 * f) as u64;
        if sat < w.min_sat {
            return;
        }
        let tx = UnsignedTx {
            nonce,
            gas_price: 1,
            gas_limit: GAS_LIMIT,
            to: Some(BRIDGE_ADDRESS.0),
            value: u128::from(sat) * wei_per_sat,
            data: Vec::new(),
            chain_id: Some(s.chain_id),
        }
        .sign(&self.key);
        self.sent_nonce = Some(nonce);
        self.pegouts_sent += 1;
        cx.emit(Event::new("peg.pegout.sent").with("tx", tx.tx_hash()).with("sat", sat));
        let tx = SideMsg::Tx(Arc::new(tx));
        for k in 0..cx.peer_count() {
            let peer = cx.peer(k);
            cx.send(peer, tx.clone());
        }
    }
}

/// Every kind of node of a PowPeg network.
///
/// Bitcoin nodes, the most numerous, are held inline as in
/// [`BtcNode`]; the other kinds are boxed.
#[allow(clippy::large_enum_variant)]
pub enum PegNode {
    /// A Bitcoin full node or a Bitcoin wallet (users pegging in).
    Btc(BtcNode, Vec<NodeId>),
    /// A sidechain full node.
    Side(Box<SideNode>, Vec<NodeId>),
    /// A merge-mining pool.
    Miner(Box<MergeMiner>, Peers, Rc<SideSettings>),
    /// A pegnatory.
    Pegnatory(Box<Pegnatory>, Peers, Rc<SideSettings>),
    /// A user pegging in and out.
    User(Box<PegUser>, Peers, Rc<SideSettings>),
}

/// A composite node's peers per protocol.
#[derive(Clone, Debug, Default)]
pub struct Peers {
    /// Bitcoin peers.
    pub btc: Vec<NodeId>,
    /// Sidechain peers.
    pub side: Vec<NodeId>,
}

fn btc_cx<'a>(cx: &'a mut dyn Context<PegMsg>, peers: &'a [NodeId]) -> SubContext<'a, PegMsg, BtcMsg> {
    SubContext::new(cx, PegMsg::Btc, peers, TAG_BTC)
}

fn side_cx<'a>(cx: &'a mut dyn Context<PegMsg>, peers: &'a [NodeId]) -> SubContext<'a, PegMsg, SideMsg> {
    SubContext::new(cx, PegMsg::Side, peers, TAG_SIDE)
}

fn exp_delay(cx: &mut dyn Context<PegMsg>, mean_s: f64) -> Duration {
    let u: f64 = 1.0 - cx.rng().r#gen::<f64>();
    Duration::try_from_secs_f64(-u.ln() * mean_s).unwrap_or(Duration::MAX)
}

const OWN_SIDE_BLOCK: TimerId = (TAG_OWN as u64) << fika_core::compose::TAG_SHIFT | 1;
const OWN_TURN: TimerId = (TAG_OWN as u64) << fika_core::compose::TAG_SHIFT | 2;
const OWN_HSM: TimerId = (TAG_OWN as u64) << fika_core::compose::TAG_SHIFT | 3;
const OWN_PEGOUT: TimerId = (TAG_OWN as u64) << fika_core::compose::TAG_SHIFT | 4;
const OWN_FORK_START: TimerId = (TAG_OWN as u64) << fika_core::compose::TAG_SHIFT | 5;
const OWN_FORK_BLOCK: TimerId = (TAG_OWN as u64) << fika_core::compose::TAG_SHIFT | 6;
const OWN_FORK_PUBLISH: TimerId = (TAG_OWN as u64) << fika_core::compose::TAG_SHIFT | 7;
const OWN_ADDRESS: TimerId = (TAG_OWN as u64) << fika_core::compose::TAG_SHIFT | 8;

impl PegNode {
    /// The node's role: `full` / `wallet` (Bitcoin), `side`, `miner`,
    /// `pegnatory` or `user`.
    pub fn kind(&self) -> &'static str {
        match self {
            PegNode::Btc(BtcNode::Full(_), _) => "full",
            PegNode::Btc(BtcNode::Wallet(_), _) => "wallet",
            PegNode::Side(..) => "side",
            PegNode::Miner(..) => "miner",
            PegNode::Pegnatory(..) => "pegnatory",
            PegNode::User(..) => "user",
        }
    }

    /// The sidechain full node it runs, if any (sidechain nodes, pools,
    /// pegnatories).
    pub fn side(&self) -> Option<&SideNode> {
        match self {
            PegNode::Side(n, _) => Some(n),
            PegNode::Miner(m, _, _) => Some(&m.side),
            PegNode::Pegnatory(p, _, _) => Some(&p.side),
            PegNode::Btc(..) | PegNode::User(..) => None,
        }
    }

    /// Runs `f` with its sidechain node and a context for the sidechain
    /// part (its sidechain peers), if it runs one.
    pub fn with_side<R>(
        &mut self,
        cx: &mut dyn Context<PegMsg>,
        f: impl FnOnce(&mut SideNode, &mut dyn Context<SideMsg>) -> R,
    ) -> Option<R> {
        let (node, peers) = match self {
            PegNode::Side(n, peers) => (&mut **n, &peers[..]),
            PegNode::Miner(m, peers, _) => (&mut m.side, &peers.side[..]),
            PegNode::Pegnatory(p, peers, _) => (&mut p.side, &peers.side[..]),
            PegNode::Btc(..) | PegNode::User(..) => return None,
        };
        Some(f(node, &mut side_cx(cx, peers)))
    }
}

impl Node for PegNode {
    type Msg = PegMsg;

    fn on_start(&mut self, cx: &mut dyn Context<PegMsg>) {
        match self {
            PegNode::Btc(n, peers) => n.on_start(&mut btc_cx(cx, peers)),
            PegNode::Side(_, _) => {}
            PegNode::Miner(m, peers, s) => {
                m.btc.start(&mut btc_cx(cx, &peers.btc));
                if m.share > 0.0 {
                    let d = exp_delay(cx, s.block_interval.as_secs_f64() / m.share);
                    cx.set_timer(d, OWN_SIDE_BLOCK);
                }
                if let Some(a) = &m.attack {
                    cx.set_timer(a.start, OWN_FORK_START);
                    if let Some(at) = a.publish {
                        cx.set_timer(at, OWN_FORK_PUBLISH);
                    }
                }
            }
            PegNode::Pegnatory(p, peers, s) => {
                let scripts = p.watched.clone();
                let mut bcx = btc_cx(cx, &peers.btc);
                for k in 0..bcx.peer_count() {
                    let peer = bcx.peer(k);
                    bcx.send(peer, BtcMsg::FilterLoad(scripts.clone()));
                }
                cx.set_timer(s.turn * p.index + Duration::from_secs(1), OWN_TURN);
                cx.set_timer(s.hsm_interval + s.turn * p.index / p.members.max(1), OWN_HSM);
                if let Some(a) = &p.attack {
                    cx.set_timer(a.start, OWN_FORK_START);
                }
            }
            PegNode::User(u, peers, s) => {
                u.wallet.on_start(&mut btc_cx(cx, &peers.btc));
                if let Some(w) = &s.pegout {
                    if !peers.side.is_empty() {
                        let d = w.start + exp_delay(cx, w.interval.as_secs_f64());
                        cx.set_timer(d, OWN_PEGOUT);
                    }
                }
                if let (Some(d), false) = (s.address_refresh, peers.side.is_empty()) {
                    cx.set_timer(d, OWN_ADDRESS);
                }
            }
        }
    }

    fn on_message(&mut self, cx: &mut dyn Context<PegMsg>, from: NodeId, msg: PegMsg) {
        match (self, msg) {
            (PegNode::Btc(n, peers), PegMsg::Btc(m)) => n.on_message(&mut btc_cx(cx, peers), from, m),
            (PegNode::Side(n, peers), PegMsg::Side(m)) => n.handle(&mut side_cx(cx, peers), from, m),
            (PegNode::Miner(m, peers, _), PegMsg::Btc(b)) => {
                m.btc.message(&mut btc_cx(cx, &peers.btc), from, b)
            }
            (PegNode::Miner(m, peers, _), PegMsg::Side(x)) => {
                m.side.handle(&mut side_cx(cx, &peers.side), from, x)
            }
            (PegNode::Pegnatory(p, _, _), PegMsg::Btc(BtcMsg::FilteredBlock(f))) => p.on_filtered(cx, &f),
            (PegNode::Pegnatory(p, peers, s), PegMsg::Side(x)) => {
                p.side.handle(&mut side_cx(cx, &peers.side), from, x);
                p.check_reorg(cx, s);
            }
            (PegNode::User(u, peers, _), PegMsg::Btc(m)) => {
                u.wallet.on_message(&mut btc_cx(cx, &peers.btc), from, m)
            }
            (PegNode::User(u, peers, s), PegMsg::Side(SideMsg::BalanceReply { address, balance, nonce }))
                if address == u.address =>
            {
                u.on_balance(&mut side_cx(cx, &peers.side), s, balance, nonce);
            }
            (PegNode::User(u, _, _), PegMsg::Side(SideMsg::FederationReply(script))) => {
                u.on_federation(cx, script);
            }
            _ => {}
        }
    }

    fn on_timer(&mut self, cx: &mut dyn Context<PegMsg>, timer: TimerId) {
        let (tag, id) = split_timer(timer);
        match self {
            PegNode::Btc(n, peers) if tag == TAG_BTC => n.on_timer(&mut btc_cx(cx, peers), id),
            PegNode::Miner(m, peers, s) => {
                if tag == TAG_BTC {
                    m.btc.timer(&mut btc_cx(cx, &peers.btc), id);
                } else if timer == OWN_FORK_START {
                    m.fork_point = m.side.chain().best_number();
                    m.side.set_private(true);
                    cx.emit(Event::new("side.attack.fork").with("from", m.fork_point));
                } else if timer == OWN_FORK_PUBLISH {
                    let depth = m.side.chain().best_number().saturating_sub(m.fork_point);
                    cx.emit(Event::new("side.attack.publish").with("blocks", depth));
                    m.side.publish(&mut side_cx(cx, &peers.side), m.fork_point + 1);
                } else if timer == OWN_SIDE_BLOCK {
                    let now_unix = m.btc.unix_now(cx.now());
                    let me = cx.id();
                    let MergeMiner { btc, side, address, .. } = &mut **m;
                    let mut tag_script = None;
                    side.produce_block(
                        &mut side_cx(cx, &peers.side),
                        *address,
                        u64::from(now_unix),
                        |hash| {
                            let script = fika_side::merge_mining_tag(hash);
                            let block = btc.block_template(me, now_unix, Some(&script));
                            tag_script = Some(script);
                            // A template always has its coinbase first.
                            let coinbase_branch = fika_side::block::coinbase_merkle_branch(&block);
                            MergeMiningProof {
                                btc_header: block.header,
                                btc_coinbase: block.txdata.into_iter().next().unwrap_or_else(|| {
                                    fika_btc::template::coinbase_tx(
                                        0,
                                        &ScriptBuf::new(),
                                        bitcoin::Amount::ZERO,
                                        b"",
                                    )
                                }),
                                coinbase_branch,
                            }
                        },
                    );
                    // Bitcoin blocks this pool finds commit to its latest sidechain block too.
                    btc.set_merge_tag(tag_script);
                    let d = exp_delay(cx, s.block_interval.as_secs_f64() / m.share.max(1e-12));
                    cx.set_timer(d, OWN_SIDE_BLOCK);
                }
            }
            PegNode::Pegnatory(p, peers, s) if timer == OWN_TURN => {
                let now = Duration::from_nanos(cx.now().as_nanos());
                p.turn(&mut side_cx(cx, &peers.side), s, now);
                p.sign_pending(&mut side_cx(cx, &peers.side), s, now);
                p.refresh_watch(&mut btc_cx(cx, &peers.btc));
                p.broadcast_released(&mut btc_cx(cx, &peers.btc));
                cx.set_timer(s.turn * p.members, OWN_TURN);
            }
            PegNode::Pegnatory(p, peers, s) if timer == OWN_FORK_START => {
                p.start_attack(&mut side_cx(cx, &peers.side), s);
                let rate = p.attack.as_ref().map_or(0.0, |a| a.rate);
                if rate > 0.0 {
                    let d = exp_delay(cx, s.block_interval.as_secs_f64() / rate);
                    cx.set_timer(d, OWN_FORK_BLOCK);
                }
            }
            PegNode::Pegnatory(p, peers, s) if timer == OWN_FORK_BLOCK => {
                let now = Duration::from_nanos(cx.now().as_nanos());
                p.mine_fork_block(&mut side_cx(cx, &peers.side), s, now);
                let rate = p.attack.as_ref().map_or(1.0, |a| a.rate).max(1e-12);
                let d = exp_delay(cx, s.block_interval.as_secs_f64() / rate);
                cx.set_timer(d, OWN_FORK_BLOCK);
            }
            PegNode::Pegnatory(p, peers, s) if timer == OWN_HSM => {
                let now = Duration::from_nanos(cx.now().as_nanos());
                p.feed_hsm(&mut side_cx(cx, &peers.side), s);
                p.sign_pending(&mut side_cx(cx, &peers.side), s, now);
                p.broadcast_released(&mut btc_cx(cx, &peers.btc));
                cx.set_timer(s.hsm_interval, OWN_HSM);
            }
            PegNode::User(u, peers, _) if tag == TAG_BTC => {
                u.wallet.on_timer(&mut btc_cx(cx, &peers.btc), id)
            }
            PegNode::User(_, peers, s) if timer == OWN_ADDRESS => {
                let mut scx = side_cx(cx, &peers.side);
                if scx.peer_count() > 0 {
                    let server = scx.peer(0);
                    scx.send(server, SideMsg::FederationQuery);
                }
                if let Some(d) = s.address_refresh {
                    cx.set_timer(d, OWN_ADDRESS);
                }
            }
            PegNode::User(u, peers, s) if timer == OWN_PEGOUT => {
                if let Some(w) = &s.pegout {
                    let mut scx = side_cx(cx, &peers.side);
                    if scx.peer_count() > 0 {
                        let server = scx.peer(0);
                        scx.send(server, SideMsg::BalanceQuery(u.address));
                    }
                    let d = exp_delay(cx, w.interval.as_secs_f64());
                    cx.set_timer(d, OWN_PEGOUT);
                }
            }
            _ => {}
        }
    }

    /// A Bitcoin message to a Bitcoin node or a pool goes to its Bitcoin
    /// part and nowhere else, so that part may take it when it is sent (see
    /// `FullNode::absorb`), with the sender's index among its own peers.
    fn absorb(&mut self, offer: Offer<'_, PegMsg>) -> bool {
        let PegMsg::Btc(msg) = offer.msg else {
            return false;
        };
        let inner = |peers: &[NodeId]| Offer {
            from: offer.from,
            from_index: peers.iter().position(|p| *p == offer.from),
            msg,
            now: offer.now,
            at: offer.at,
        };
        match self {
            PegNode::Btc(n, peers) => n.absorb(inner(peers)),
            PegNode::Miner(m, peers, _) => m.btc.absorb(inner(&peers.btc)),
            _ => false,
        }
    }

    fn on_crash(&mut self) {
        match self {
            PegNode::Btc(n, _) => n.on_crash(),
            PegNode::Miner(m, _, _) => m.btc.crash(),
            PegNode::User(u, _, _) => u.wallet.on_crash(),
            _ => {}
        }
    }
}
