//! The PowPeg network: Bitcoin nodes, sidechain nodes, merge-mining pools,
//! pegnatories and peg-in users in one simulation.
//!
//! Each kind is composed from protocol parts through
//! [`fika_core::SubContext`]: a merge-mining pool is a Bitcoin full node
//! and a sidechain node; a pegnatory is a sidechain node with a Bitcoin
//! light client (a filter on the federation's script at a Bitcoin node) and
//! the federation key. All coordination goes through sidechain
//! transactions to the Bridge.

use std::collections::{BTreeMap, BTreeSet};
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::block::Header;
use bitcoin::consensus::serialize;
use bitcoin::secp256k1::SecretKey;
use bitcoin::{ScriptBuf, Transaction, Txid};
use fika_btc::msg::{BtcMsg, FilteredBlock};
use fika_btc::node::{BtcNode, FullNode};
use fika_core::{Context, Event, Message, Node, NodeId, SubContext, TimerId, split_timer};
use fika_side::{ChainConfig, MergeMiningProof, SideBlock, SideChain, SignedTx, UnsignedTx};
use rand::Rng;

use crate::abi::{BRIDGE_ADDRESS, BridgeCall, encode_call};
use crate::contract::BridgeContract;

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
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            PegMsg::Btc(m) => m.kind(),
            PegMsg::Side(SideMsg::Block(_)) => "side.block",
            PegMsg::Side(SideMsg::Tx(_)) => "side.tx",
            PegMsg::Side(SideMsg::GetBlock(_)) => "side.getblock",
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
}

impl SideNode {
    /// A node on a chain whose genesis holds `bridge`.
    pub fn new(config: ChainConfig, bridge: BridgeContract) -> Self {
        SideNode {
            chain: SideChain::new(config, bridge),
            pool: BTreeMap::new(),
            seen_txs: BTreeSet::new(),
            violations: 0,
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
            SideMsg::Block(b) => self.on_block(cx, Some(from), b),
            SideMsg::Tx(t) => self.submit(cx, Some(from), t),
            SideMsg::GetBlock(h) => {
                if let Some(b) = self.chain.block(&h) {
                    cx.send(from, SideMsg::Block(SharedBlock::new(b.clone())));
                }
            }
        }
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
                        cx.emit(Event::new("side.reorg").with("depth", tc.disconnected.len()));
                    }
                    self.prune_pool();
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
}

/// A pegnatory: a sidechain node, a Bitcoin light client watching the
/// federation's address, and the federation key.
pub struct Pegnatory {
    /// The sidechain part.
    pub side: SideNode,
    key: SecretKey,
    address: [u8; 20],
    index: u32,
    members: u32,
    federation_script: ScriptBuf,
    /// The Bitcoin best chain as its server reports it, by height.
    headers: Vec<Header>,
    /// Peg-ins seen: txid → (tx, height, block hash, serialized proof).
    pegins: BTreeMap<Txid, (Transaction, u32, bitcoin::BlockHash, Vec<u8>)>,
    turns: u64,
}

impl Pegnatory {
    /// Member `index` of `members`, holding `key`.
    pub fn new(
        side: SideNode,
        key: SecretKey,
        index: u32,
        members: u32,
        federation_script: ScriptBuf,
        genesis: Header,
    ) -> Self {
        let address = fika_side::address_of_secret(&key);
        Pegnatory {
            side,
            key,
            address,
            index,
            members,
            federation_script,
            headers: vec![genesis],
            pegins: BTreeMap::new(),
            turns: 0,
        }
    }

    fn on_filtered(&mut self, f: &FilteredBlock) {
        let h = f.height as usize;
        if h == 0 || h > self.headers.len() {
            return;
        }
        self.headers.truncate(h);
        self.headers.push(f.header);
        for tx in &f.txs {
            if tx.output.iter().any(|o| o.script_pubkey == self.federation_script) {
                self.pegins.insert(
                    tx.compute_txid(),
                    ((**tx).clone(), f.height, f.header.block_hash(), serialize(&f.proof)),
                );
            }
        }
    }

    fn turn(&mut self, cx: &mut dyn Context<SideMsg>, s: &SideSettings) {
        self.turns += 1;
        let bridge = self.side.chain.system().state().clone();
        let spv = bridge.spv();
        let best = spv.best_height();
        let mut calls = Vec::new();
        // Headers the Bridge lacks, from a little below its tip (reorgs).
        let from = best.saturating_sub(6).max(1) as usize;
        let to = self.headers.len().min(best as usize + 1 + s.max_headers);
        if to > best as usize + 1
            || self.headers.get(best as usize).map(|h| h.block_hash()) != spv.hash_at_height(best)
        {
            let headers: Vec<Vec<u8>> = self.headers[from.min(to)..to].iter().map(serialize).collect();
            if !headers.is_empty() {
                calls.push(BridgeCall::ReceiveHeaders { headers });
            }
        }
        // Peg-ins deep enough in the Bridge's view and not yet processed.
        for (txid, (tx, height, hash, pmt)) in &self.pegins {
            if calls.len() > s.max_pegins {
                break;
            }
            let deep = best + 1 >= height + s.confirmations;
            let on_chain = spv.hash_at_height(*height) == Some(*hash);
            if deep && on_chain && bridge.processed_at(txid).is_none() {
                calls.push(BridgeCall::RegisterBtcTransaction {
                    tx: serialize(tx),
                    height: i64::from(*height),
                    pmt: pmt.clone(),
                });
            }
        }
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
}

/// Every kind of node of a PowPeg network.
pub enum PegNode {
    /// A Bitcoin full node or a Bitcoin wallet (users pegging in).
    Btc(BtcNode, Vec<NodeId>),
    /// A sidechain full node.
    Side(Box<SideNode>, Vec<NodeId>),
    /// A merge-mining pool.
    Miner(Box<MergeMiner>, Peers, Rc<SideSettings>),
    /// A pegnatory.
    Pegnatory(Box<Pegnatory>, Peers, Rc<SideSettings>),
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
            }
            PegNode::Pegnatory(p, peers, s) => {
                let script = p.federation_script.clone();
                let mut bcx = btc_cx(cx, &peers.btc);
                for k in 0..bcx.peer_count() {
                    let peer = bcx.peer(k);
                    bcx.send(peer, BtcMsg::FilterLoad(vec![script.clone()]));
                }
                cx.set_timer(s.turn * p.index + Duration::from_secs(1), OWN_TURN);
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
            (PegNode::Pegnatory(p, _, _), PegMsg::Btc(BtcMsg::FilteredBlock(f))) => p.on_filtered(&f),
            (PegNode::Pegnatory(p, peers, _), PegMsg::Side(x)) => {
                p.side.handle(&mut side_cx(cx, &peers.side), from, x)
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
                p.turn(&mut side_cx(cx, &peers.side), s);
                cx.set_timer(s.turn * p.members, OWN_TURN);
            }
            _ => {}
        }
    }

    fn on_crash(&mut self) {
        match self {
            PegNode::Btc(n, _) => n.on_crash(),
            PegNode::Miner(m, _, _) => m.btc.crash(),
            _ => {}
        }
    }
}
