//! The full node (the thesis's "server"): keeps its own view of the chain,
//! validates through the shared [`BlockDb`], relays blocks and transactions
//! the way Bitcoin Core does (inv / getdata / block / tx, optional BIP152
//! high-bandwidth compact blocks, trickled transaction announcements), keeps
//! a mempool, mines when it has hashrate, and serves light wallets filtered
//! blocks with merkle proofs.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::{Amount, BlockHash, OutPoint, ScriptBuf, Transaction};
use fika_core::{Context, Event, NodeId, Offer, SimTime, TimerId, TimerKey};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::blockdb::{BlockDb, BlockId, Origin, SimBlock, TxIdx, UtxoSnapshot};
use crate::consensus::{Plan, Planning};
use crate::journal::{Change, Journal, RestoreError};
use crate::merkle;
use crate::msg::{BtcMsg, Inv, Invs};
use crate::pow;
use crate::template::{COINBASE_RESERVED_WEIGHT, assemble_block, coinbase_tx};
use crate::utxo::{Coin, CoinView};

mod attacks;
mod hot;
pub use attacks::RaceRecord;

/// The shared store, as nodes hold it.
pub type SharedDb = Rc<RefCell<BlockDb>>;

/// Relay and node parameters shared by every node of a run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RelayConfig {
    /// Relay blocks as BIP152 compact blocks, high-bandwidth mode.
    pub compact_blocks: bool,
    /// Peers a node asks for high-bandwidth compact blocks (Core: 3).
    pub hb_peers: usize,
    /// Mean interval of trickled transaction announcements, seconds (Core: 2 s outbound, 5 s inbound).
    pub tx_trickle_s: f64,
    /// Modelled bytes added to every mined block (SimBlock's blocks are
    /// 535,000 bytes of content fika does not materialize). They count as
    /// non-witness bytes, so the weight limit caps them (1 MB on mainnet);
    /// real transactions keep at least half the room.
    pub block_fill_bytes: u32,
    /// Average size of a modelled transaction, bytes (for compact-block short ids).
    pub avg_tx_bytes: u32,
    /// Mempool size limit in bytes; the lowest fee rates are evicted beyond it.
    pub mempool_max_bytes: u64,
    /// Sample every full node's mempool this often (seconds; 0 = never).
    pub mempool_sample_s: f64,
    /// Unix time at virtual time zero (block timestamps).
    pub start_unix: u32,
    /// Miners stop once their tip reaches this height (0: never), like
    /// SimBlock's end height; the run ends when the last block has spread.
    pub stop_height: u32,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            compact_blocks: true,
            hb_peers: 3,
            tx_trickle_s: 2.0,
            block_fill_bytes: 0,
            avg_tx_bytes: 500,
            mempool_max_bytes: 300_000_000,
            mempool_sample_s: 0.0,
            start_unix: 1_700_000_000,
            stop_height: 0,
        }
    }
}

const UNKNOWN: u8 = 0;
const REQUESTED: u8 = 1;
const HAVE: u8 = 2;
const INVALID: u8 = 3;

const TX_UNKNOWN: u8 = 0;
const TX_REQUESTED: u8 = 1;
const TX_POOL: u8 = 2;
const TX_DONE: u8 = 3;

/// Most blocks held waiting for a parent the store lacks.
const MAX_DETACHED: usize = 64;

/// Most announcers of blocks not in the store kept (see
/// `FullNode::unstored_announcers`); the oldest go first.
const MAX_UNSTORED_ANNOUNCERS: usize = 256;

const TIMER_MINE: TimerId = 1;
const TIMER_TRICKLE: TimerId = 2;
const TIMER_SAMPLE: TimerId = 3;

/// Remembers in `list` that the peer with index `peer` announced block
/// `hash`, which the store does not have yet (a node with a store of its own).
fn note_unstored(list: &mut Vec<(BlockHash, u32)>, hash: BlockHash, peer: usize) {
    let entry = (hash, peer as u32);
    if list.contains(&entry) {
        return;
    }
    if list.len() >= MAX_UNSTORED_ANNOUNCERS {
        list.remove(0);
    }
    list.push(entry);
}

/// `block` with `seal` as an extra coinbase output (merkle root and
/// witness commitment recomputed).
fn reseal(block: bitcoin::Block, seal: ScriptBuf) -> bitcoin::Block {
    let bitcoin::Block { header, mut txdata } = block;
    let mut coinbase = txdata.remove(0);
    // Drop a witness commitment: assembling again adds it back.
    coinbase
        .output
        .retain(|o| !o.script_pubkey.as_bytes().starts_with(&[0x6a, 0x24, 0xaa, 0x21, 0xa9, 0xed]));
    coinbase.output.push(bitcoin::TxOut { value: Amount::ZERO, script_pubkey: seal });
    if let Some(input) = coinbase.input.first_mut() {
        input.witness = bitcoin::Witness::new();
    }
    assemble_block(header, coinbase, txdata)
}

/// Grows `v` to hold index `i` and returns a mutable slot.
fn slot(v: &mut Vec<u8>, i: u32) -> &mut u8 {
    let i = i as usize;
    if v.len() <= i {
        v.resize(i + 1, 0);
    }
    &mut v[i]
}

fn get(v: &[u8], i: u32) -> u8 {
    v.get(i as usize).copied().unwrap_or(0)
}

/// A transaction in a node's mempool.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolEntry {
    /// Fee paid.
    pub fee: Amount,
    /// Virtual size.
    pub vsize: u32,
    /// Arrival order (ties in fee rate go to the earlier).
    pub seq: u64,
}

/// A node's unconfirmed transactions, by store index.
#[derive(Clone, Debug, Default)]
pub struct NodeMempool {
    entries: BTreeMap<TxIdx, PoolEntry>,
    spends: BTreeMap<OutPoint, TxIdx>,
    bytes: u64,
    seq: u64,
    journal: Journal,
}

impl NodeMempool {
    /// Number of transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }
    /// Whether it is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
    /// Total virtual bytes.
    pub fn bytes(&self) -> u64 {
        self.bytes
    }
    /// Whether `idx` is in the pool.
    pub fn contains(&self, idx: TxIdx) -> bool {
        self.entries.contains_key(&idx)
    }
    /// The transaction spending `outpoint`, if any.
    pub fn spender(&self, outpoint: &OutPoint) -> Option<TxIdx> {
        self.spends.get(outpoint).copied()
    }
    /// Entries by index.
    pub fn entries(&self) -> &BTreeMap<TxIdx, PoolEntry> {
        &self.entries
    }

    fn insert(&mut self, idx: TxIdx, tx: &Transaction, fee: Amount, vsize: u32) {
        for i in &tx.input {
            self.spends.insert(i.previous_output, idx);
        }
        self.seq += 1;
        self.entries.insert(idx, PoolEntry { fee, vsize, seq: self.seq });
        self.bytes += u64::from(vsize);
        self.journal.record(|| Change::PoolIn(idx));
    }

    fn remove(&mut self, idx: TxIdx, tx: &Transaction) -> bool {
        let Some(e) = self.entries.remove(&idx) else { return false };
        for i in &tx.input {
            if self.spends.get(&i.previous_output) == Some(&idx) {
                self.spends.remove(&i.previous_output);
            }
        }
        self.bytes -= u64::from(e.vsize);
        self.journal.record(|| Change::PoolOut(idx));
        true
    }
}

/// Why a node refused a transaction.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Reject {
    /// It spends an output another pool transaction spends.
    #[error("conflicts with {0} in the mempool")]
    Conflict(bitcoin::Txid),
    /// An input is neither confirmed nor in the mempool (maybe not yet).
    #[error("missing input {0}")]
    MissingInputs(OutPoint),
    /// It breaks a rule.
    #[error("invalid: {0}")]
    Invalid(crate::validate::TxError),
    /// A coinbase cannot be relayed.
    #[error("coinbase transactions are not relayed")]
    Coinbase,
    /// The pool is full and its fee rate is too low.
    #[error("mempool full")]
    PoolFull,
}

/// Coins visible to a node: its tip's UTXO set plus its mempool's outputs,
/// minus what its mempool spends.
struct PoolView<'a> {
    snapshot: &'a UtxoSnapshot,
    pool: &'a NodeMempool,
    db: &'a BlockDb,
    height: u32,
}

impl CoinView for PoolView<'_> {
    fn coin(&self, op: &OutPoint) -> Option<Coin> {
        if let Some(c) = self.snapshot.coin(op) {
            return Some(c);
        }
        let idx = self.db.tx_idx(&op.txid)?;
        if !self.pool.contains(idx) {
            return None;
        }
        let out = self.db.tx(idx).tx.output.get(op.vout as usize)?;
        Some(Coin { txout: out.clone(), height: self.height, is_coinbase: false })
    }
}

/// Where a miner's rewards go. A key's script is derived on the first block
/// mined, so a network of 100,000 potential miners does not compute 100,000
/// public keys up front.
#[derive(Clone, Debug)]
pub enum Payout {
    /// This script.
    Script(ScriptBuf),
    /// The P2WPKH script of this key.
    Key(bitcoin::secp256k1::SecretKey),
}

impl Payout {
    fn script(&mut self) -> ScriptBuf {
        if let Payout::Key(sk) = self {
            let secp = bitcoin::secp256k1::Secp256k1::signing_only();
            *self = Payout::Script(crate::sign::p2wpkh_script(&sk.public_key(&secp)));
        }
        match self {
            Payout::Script(s) => s.clone(),
            Payout::Key(_) => ScriptBuf::new(),
        }
    }
}

/// A full node, optionally mining.
///
/// Laid out in declaration order so that the store and `hot`, what every
/// block announcement reads, come first: in a [`BtcNode`], together with
/// the variant's tag, they are the node's first cache line.
#[repr(C)]
pub struct FullNode {
    db: SharedDb,
    /// Block statuses, announcers, the filter flag (see [`hot`]); Core does
    /// not announce a block back to a peer known to have it.
    hot: hot::Hot,
    cfg: Rc<RelayConfig>,
    tip: BlockId,
    orphans: Vec<BlockId>,
    mempool: NodeMempool,
    txs: Vec<u8>,
    inv_queue: Vec<(TxIdx, Option<NodeId>)>,
    trickle: Option<TimerKey>,
    /// Peers that asked us for high-bandwidth compact blocks.
    hb_to: Vec<NodeId>,
    /// Blocks whose parent the store does not have yet (emulation only: in
    /// simulation the shared store has every block).
    detached: Vec<Arc<SimBlock>>,
    /// Announcers of blocks not in the store yet (emulation only), by peer
    /// index: remembered once the block is stored, so that it is not
    /// announced back to them.
    unstored_announcers: Vec<(BlockHash, u32)>,
    /// Light wallets and the scripts they watch.
    wallets: Vec<(NodeId, Vec<ScriptBuf>)>,
    hashrate: f64,
    payout: Payout,
    mining: Option<TimerKey>,
    /// What the running production timer was planned for.
    mining_key: Option<u64>,
    /// When this node last produced a block.
    produced_at: Option<SimTime>,
    mined: u32,
    merge_tag: Option<ScriptBuf>,
    /// Selfish mining (Eyal & Sirer), see [`crate::attack`].
    selfish: Option<crate::attack::Selfish>,
    /// What changed, for a durable store (off unless enabled).
    journal: Journal,
    /// Any other attack strategy, see [`crate::attack`].
    attack: Option<attacks::Attack>,
    /// Honest nodes' γ rule for ties with an attacker's block.
    tie_break: Option<crate::attack::TieBreak>,
    /// The peers a block announcement goes to (kept to reuse its room).
    fan_out: Vec<u32>,
}

impl FullNode {
    /// A node with `hashrate` hashes per second (0 for none), paying block
    /// rewards to `payout`.
    pub fn new(db: SharedDb, cfg: Rc<RelayConfig>, hashrate: f64, payout: Payout) -> Self {
        let mut hot = hot::Hot::default();
        hot.set_status(0, HAVE);
        hot.compact = cfg.compact_blocks;
        hot.set_start_unix(cfg.start_unix);
        FullNode {
            hot,
            db,
            cfg,
            tip: 0,
            orphans: Vec::new(),
            mempool: NodeMempool::default(),
            txs: Vec::new(),
            inv_queue: Vec::new(),
            trickle: None,
            hb_to: Vec::new(),
            detached: Vec::new(),
            unstored_announcers: Vec::new(),
            wallets: Vec::new(),
            hashrate,
            payout,
            mining: None,
            mining_key: None,
            produced_at: None,
            mined: 0,
            merge_tag: None,
            selfish: None,
            journal: Journal::default(),
            attack: None,
            tie_break: None,
            fan_out: Vec::new(),
        }
    }

    /// Makes this node mine selfishly (Eyal & Sirer's strategy, see
    /// [`crate::attack`]) from its current tip on, or honestly again (`false`;
    /// withheld blocks stay withheld).
    pub fn set_selfish(&mut self, on: bool) {
        self.selfish = on.then(|| crate::attack::Selfish::new(self.tip_height()));
    }

    /// The selfish-mining state, if this node mines selfishly.
    pub fn selfish(&self) -> Option<&crate::attack::Selfish> {
        self.selfish.as_ref()
    }

    /// A selfish pool saw the public chain's best new block `b`: let the
    /// state machine decide whether to adopt it and what to publish.
    fn selfish_public(&mut self, cx: &mut dyn Context<BtcMsg>, b: BlockId, from: Option<NodeId>) {
        let h = self.db.borrow().rec(b).height;
        let Some(d) = self.selfish.as_mut().map(|s| s.on_public(h)) else { return };
        if d.adopt && b != self.tip {
            self.set_tip(cx, b, from);
        }
        for p in d.publish {
            self.announce_block(cx, p, None);
        }
    }

    /// The block this node considers the best tip.
    pub fn tip(&self) -> BlockId {
        self.tip
    }

    /// Its mempool.
    pub fn mempool(&self) -> &NodeMempool {
        &self.mempool
    }

    /// Its relay and node parameters.
    pub fn config(&self) -> &RelayConfig {
        &self.cfg
    }

    /// Whether this node has received block `id`.
    pub fn has_block(&self, id: BlockId) -> bool {
        self.hot.status(id) == HAVE
    }

    /// Its hashrate (hashes per second).
    pub fn hashrate(&self) -> f64 {
        self.hashrate
    }

    /// Changes its hashrate (e.g. a miner joining or leaving); takes effect
    /// at the next draw.
    pub fn set_hashrate(&mut self, h: f64) {
        self.hashrate = h;
    }

    /// Offers a transaction as if a local wallet submitted it.
    pub fn submit_tx(&mut self, cx: &mut dyn Context<BtcMsg>, tx: Arc<Transaction>) -> Result<(), Reject> {
        let idx = self.db.borrow_mut().intern_tx(tx, cx.now().as_nanos());
        self.receive_tx(cx, None, idx)
    }

    fn now_unix(&self, cx: &dyn Context<BtcMsg>) -> u32 {
        self.unix_now(cx.now())
    }

    // ----- blocks ---------------------------------------------------------

    fn on_block(&mut self, cx: &mut dyn Context<BtcMsg>, from: Option<NodeId>, data: Arc<SimBlock>) {
        // Most blocks are in the shared store already: no new reference then.
        let known = self.db.borrow().id_of(&data.hash);
        let inserted = match known {
            Some(id) => Ok(id),
            None => self.db.borrow_mut().insert(Arc::clone(&data), None),
        };
        let id = match inserted {
            Ok(id) => id,
            Err(crate::blockdb::DbError::UnknownParent { parent, .. }) => {
                // Only with a store of its own (emulation): hold the block
                // until its parent arrives, and ask for the parent.
                if self.detached.len() >= MAX_DETACHED {
                    self.detached.remove(0);
                }
                if !self.detached.iter().any(|b| b.hash == data.hash) {
                    self.detached.push(data);
                }
                if let Some(p) = from {
                    cx.send(p, BtcMsg::GetData(vec![Inv::Block(parent)]));
                }
                return;
            }
            Err(e) => {
                cx.emit(
                    Event::new("btc.block.refused")
                        .with("hash", data.hash.to_byte_array())
                        .with("reason", e.to_string()),
                );
                return;
            }
        };
        if !self.unstored_announcers.is_empty() {
            self.note_stored_announcers(id, data.hash);
        }
        // A block held for this one can now enter the store too.
        if let Some(i) = self.detached.iter().position(|b| b.block.header.prev_blockhash == data.hash) {
            let child = self.detached.remove(i);
            self.on_block(cx, from, Arc::clone(&data));
            self.on_block(cx, from, child);
            return;
        }
        let st = self.hot.status(id);
        if st == HAVE || st == INVALID {
            return;
        }
        // Node-local rule: not more than the future limit ahead of our clock.
        let max_time = u64::from(self.now_unix(cx)) + self.db.borrow().params().max_future_block_time_secs;
        if u64::from(data.block.header.time) > max_time {
            self.hot.set_status(id, UNKNOWN);
            return;
        }
        self.hot.set_status(id, HAVE);
        cx.emit(Event::new("btc.block.received").with("hash", data.hash.to_byte_array()));
        let parent = self.db.borrow().rec(id).parent.unwrap_or(0);
        if self.hot.status(parent) != HAVE {
            self.orphans.push(id);
            if self.hot.status(parent) == UNKNOWN {
                self.hot.set_status(parent, REQUESTED);
                if let Some(p) = from {
                    let ph = self.db.borrow().rec(parent).data.hash;
                    cx.send(p, BtcMsg::GetData(vec![Inv::Block(ph)]));
                }
            }
            return;
        }
        // Connect this block and any orphans it completes.
        let mut ready = vec![id];
        let mut best = self.tip;
        let mut best_new: Option<BlockId> = None;
        while let Some(b) = ready.pop() {
            let verdict = self.db.borrow_mut().validate(b);
            match verdict {
                Ok(()) => {
                    self.journal.record(|| Change::Block(b));
                    let db = self.db.borrow();
                    if db.rec(b).work > db.rec(best).work {
                        best = b;
                    }
                    if best_new.is_none_or(|x| db.rec(b).work > db.rec(x).work) {
                        best_new = Some(b);
                    }
                }
                Err(e) => {
                    self.hot.set_status(b, INVALID);
                    let hash = self.db.borrow().rec(b).data.hash;
                    cx.emit(
                        Event::new("btc.block.invalid")
                            .with("hash", hash.to_byte_array())
                            .with("reason", e.to_string()),
                    );
                    continue;
                }
            }
            let db = self.db.borrow();
            let mut i = 0;
            while i < self.orphans.len() {
                if db.rec(self.orphans[i]).parent == Some(b) {
                    ready.push(self.orphans.swap_remove(i));
                } else {
                    i += 1;
                }
            }
        }
        if self.selfish.is_some() && from.is_some() {
            if let Some(b) = best_new {
                self.selfish_public(cx, b, from);
            }
            return;
        }
        if from.is_some() && self.racing() {
            if let Some(b) = best_new {
                self.race_public(cx, b);
            }
            return;
        }
        if best == self.tip && self.tie_break.is_some() && from.is_some() {
            if let Some(b) = best_new.filter(|b| *b != self.tip) {
                if self.tie_switch(cx, b, from) {
                    self.set_tip(cx, b, from);
                }
            }
            return;
        }
        if best != self.tip {
            self.set_tip(cx, best, from);
        }
    }

    /// Block `hash` is now stored as `id`: its announcers become known.
    #[cold]
    fn note_stored_announcers(&mut self, id: BlockId, hash: BlockHash) {
        let hot = &mut self.hot;
        self.unstored_announcers.retain(|&(h, k)| {
            if h == hash {
                hot.note_announcer(id, k as usize);
            }
            h != hash
        });
    }

    fn set_tip(&mut self, cx: &mut dyn Context<BtcMsg>, new: BlockId, from: Option<NodeId>) {
        let old = self.tip;
        let (fork, disconnected, connected) = {
            let db = self.db.borrow();
            let fork = db.fork_point(old, new);
            let walk = |mut b: BlockId| {
                let mut v = Vec::new();
                while b != fork {
                    v.push(b);
                    b = db.rec(b).parent.unwrap_or(fork);
                }
                v
            };
            let d = walk(old);
            let mut c = walk(new);
            c.reverse();
            (fork, d, c)
        };
        self.tip = new;
        if !disconnected.is_empty() {
            let db = self.db.borrow();
            cx.emit(
                Event::new("btc.reorg")
                    .with("depth", disconnected.len())
                    .with("fork_height", db.rec(fork).height)
                    .with("old", db.rec(old).data.hash.to_byte_array())
                    .with("new", db.rec(new).data.hash.to_byte_array()),
            );
        }
        self.update_mempool(&disconnected, &connected);
        self.announce_block(cx, new, from);
        self.serve_wallets(cx, &connected);
        self.restart_mining(cx);
    }

    fn update_mempool(&mut self, disconnected: &[BlockId], connected: &[BlockId]) {
        let db = Rc::clone(&self.db);
        let mut readd = Vec::new();
        {
            let db = db.borrow();
            for b in disconnected {
                for tx in db.rec(*b).data.block.txdata.iter().skip(1) {
                    if let Some(i) = db.tx_idx(&tx.compute_txid()) {
                        readd.push(i);
                    }
                }
            }
            for b in connected {
                for tx in db.rec(*b).data.block.txdata.iter().skip(1) {
                    if let Some(i) = db.tx_idx(&tx.compute_txid()) {
                        self.mempool.remove(i, tx);
                        *slot(&mut self.txs, i) = TX_DONE;
                    }
                    // Anything else spending the same coins is now a conflict.
                    for input in &tx.input {
                        if let Some(c) = self.mempool.spender(&input.previous_output) {
                            self.remove_with_descendants(&db, c);
                        }
                    }
                }
            }
        }
        if !disconnected.is_empty() {
            // After a reorg, keep only what is still valid on the new tip.
            let pool: Vec<TxIdx> = self.mempool.entries.keys().copied().collect();
            {
                let db = db.borrow();
                for i in &pool {
                    self.mempool.remove(*i, &db.tx(*i).tx);
                    *slot(&mut self.txs, *i) = TX_UNKNOWN;
                }
            }
            readd.extend(pool);
            for i in readd {
                if self.accept_to_pool(i).is_ok() {
                    *slot(&mut self.txs, i) = TX_POOL;
                }
            }
        }
    }

    fn remove_with_descendants(&mut self, db: &BlockDb, idx: TxIdx) {
        let mut stack = vec![idx];
        while let Some(i) = stack.pop() {
            let tx = Arc::clone(&db.tx(i).tx);
            if !self.mempool.remove(i, &tx) {
                continue;
            }
            *slot(&mut self.txs, i) = TX_DONE;
            let txid = db.tx(i).txid;
            for vout in 0..tx.output.len() as u32 {
                if let Some(c) = self.mempool.spender(&OutPoint::new(txid, vout)) {
                    stack.push(c);
                }
            }
        }
    }

    fn announce_block(&mut self, cx: &mut dyn Context<BtcMsg>, id: BlockId, from: Option<NodeId>) {
        if self.selfish.as_ref().is_some_and(|s| s.is_hidden(id)) || self.race_hidden(id) {
            return;
        }
        let hash = self.db.borrow().rec(id).data.hash;
        let inv = BtcMsg::Inv(Invs::One(Inv::Block(hash)));
        let from = from.and_then(|p| cx.peer_index(p));
        // Peers that need a look beyond their index: light wallets, an
        // eclipse attacker's victims, high-bandwidth compact-block peers.
        let (wallets, filtered) = (!self.wallets.is_empty(), self.hot.filtered);
        let compact = self.hot.compact && !self.hb_to.is_empty();
        let mut run = std::mem::take(&mut self.fan_out);
        run.clear();
        let announcers = self.hot.announcers(id);
        for k in 0..cx.peer_count() {
            if Some(k) == from || announcers.contains(k) {
                continue;
            }
            if wallets || filtered || compact {
                let p = cx.peer(k);
                if (wallets && self.wallets.iter().any(|(w, _)| *w == p))
                    || (filtered && self.cut_off(cx.now(), p))
                {
                    continue;
                }
                if compact && self.hb_to.contains(&p) {
                    // In peer order: the `inv`s to the peers before it first.
                    cx.send_to_peers(&run, inv.clone());
                    run.clear();
                    let data = Arc::clone(&self.db.borrow().rec(id).data);
                    cx.send(p, BtcMsg::CmpctBlock(data));
                    continue;
                }
            }
            run.push(k as u32);
        }
        cx.send_to_peers(&run, inv);
        self.fan_out = run;
    }

    fn serve_wallets(&mut self, cx: &mut dyn Context<BtcMsg>, connected: &[BlockId]) {
        if self.wallets.is_empty() {
            return;
        }
        let db = self.db.borrow();
        for b in connected {
            let rec = db.rec(*b);
            let block = &rec.data.block;
            let txids: Vec<bitcoin::Txid> = block.txdata.iter().map(|t| t.compute_txid()).collect();
            for (w, scripts) in &self.wallets {
                let matched: Vec<&Transaction> = block
                    .txdata
                    .iter()
                    .filter(|tx| {
                        tx.output.iter().any(|o| scripts.contains(&o.script_pubkey))
                            || self.spends_watched(&db, tx, scripts)
                    })
                    .collect();
                let ids: Vec<bitcoin::Txid> = matched.iter().map(|t| t.compute_txid()).collect();
                let proof = merkle::build_partial_tree(&txids, &ids);
                cx.send(
                    *w,
                    BtcMsg::FilteredBlock(Box::new(crate::msg::FilteredBlock {
                        header: block.header,
                        height: rec.height,
                        proof,
                        txs: matched.into_iter().map(|t| Arc::new(t.clone())).collect(),
                    })),
                );
            }
        }
    }

    /// Whether `tx` spends a coin paying one of `scripts`.
    fn spends_watched(&self, db: &BlockDb, tx: &Transaction, scripts: &[ScriptBuf]) -> bool {
        !tx.is_coinbase()
            && tx.input.iter().any(|i| {
                db.tx_idx(&i.previous_output.txid)
                    .and_then(|p| {
                        db.tx(p)
                            .tx
                            .output
                            .get(i.previous_output.vout as usize)
                            .map(|o| scripts.contains(&o.script_pubkey))
                    })
                    .unwrap_or(false)
            })
    }

    // ----- mining ---------------------------------------------------------

    /// Keeps the production timer as the consensus variant plans it (see
    /// [`crate::consensus`]): for proof of work, an exponential wait redrawn
    /// only when the difficulty changes; for proof of stake, the next slot
    /// this node leads on its tip.
    fn restart_mining(&mut self, cx: &mut dyn Context<BtcMsg>) {
        let plan = {
            let db = self.db.borrow();
            let consensus = db.consensus();
            let now = cx.now();
            let me = cx.id();
            let mut planning = Planning {
                db: &db,
                tip: self.tip,
                me,
                hashrate: self.hashrate,
                now,
                armed: self.mining.and(self.mining_key),
                produced_at: self.produced_at,
                rng: cx.rng(),
            };
            consensus.plan(&mut planning)
        };
        match plan {
            Plan::Keep => {}
            Plan::Disarm => {
                if let Some(k) = self.mining.take() {
                    cx.cancel_timer(k);
                }
            }
            Plan::Arm { after, key } => {
                if let Some(k) = self.mining.take() {
                    cx.cancel_timer(k);
                }
                self.mining = Some(cx.set_timer(after, TIMER_MINE));
                self.mining_key = Some(key);
            }
        }
    }

    fn mine(&mut self, cx: &mut dyn Context<BtcMsg>) {
        self.mining = None;
        self.produced_at = Some(cx.now());
        let height = self.db.borrow().rec(self.tip).height;
        if self.cfg.stop_height > 0 && height >= self.cfg.stop_height {
            return;
        }
        let consensus = Arc::clone(self.db.borrow().consensus());
        let now_unix = consensus.header_time(cx.now(), self.now_unix(cx));
        let tag = self.merge_tag.clone();
        let mut block = self.block_template(cx.id(), now_unix, tag.as_ref());
        let parent = block.header.prev_blockhash;
        let payout = block.txdata[0].output[0].script_pubkey.clone();
        if let Some(seal) = consensus.seal(cx.id(), &parent, now_unix, &payout, &block.txdata[1..]) {
            block = reseal(block, seal);
        }
        if self.db.borrow().params().pow_mode == crate::params::PowMode::Real {
            pow::grind(&mut block.header, 1 << 32);
        }
        let base = block.total_size() as u32;
        // Modelled content counts as non-witness bytes: at most what the
        // weight limit leaves.
        let room = self.db.borrow().params().max_block_weight.saturating_sub(block.weight().to_wu()) / 4;
        let filler = self.cfg.block_fill_bytes.saturating_sub(base).min(room.min(u64::from(u32::MAX)) as u32);
        let data = Arc::new(SimBlock::new(block, filler));
        let origin = Origin { miner: cx.id().0, at_ns: cx.now().as_nanos() };
        let inserted = self.db.borrow_mut().insert(Arc::clone(&data), Some(origin));
        let Ok(id) = inserted else {
            self.restart_mining(cx);
            return;
        };
        // A selfish pool decides before the block becomes its tip, so that
        // a withheld block is not announced.
        let publish = match self.selfish.as_mut() {
            Some(s) => s.on_mined(id, self.db.borrow().rec(id).height),
            None => Vec::new(),
        };
        let (height, ntx) = (self.db.borrow().rec(self.tip).height + 1, data.block.txdata.len());
        cx.emit(
            Event::new("btc.block.mined")
                .with("hash", data.hash.to_byte_array())
                .with("height", height)
                .with("txs", ntx)
                .with("size", data.size()),
        );
        // A racing attacker withholds the block unless it wins the race now;
        // then the older private blocks go out first.
        for p in self.race_mined(cx, id) {
            self.announce_block(cx, p, None);
        }
        self.on_block(cx, None, data);
        for p in publish.into_iter().filter(|p| *p != id) {
            self.announce_block(cx, p, None);
        }
        // Keep mining even if the block did not become the tip.
        self.restart_mining(cx);
    }

    /// A block on this node's tip at Unix time `now_unix` with its mempool's
    /// best transactions, paying this node, with `extra` (e.g. a
    /// merge-mining commitment) as a zero-value coinbase output. The nonce
    /// is not ground.
    pub fn block_template(&mut self, me: NodeId, now_unix: u32, extra: Option<&ScriptBuf>) -> bitcoin::Block {
        let payout = self.payout.script();
        self.mined += 1;
        let db = self.db.borrow();
        let params = db.params();
        let height = db.rec(self.tip).height + 1;
        let header = db.child_header(self.tip, now_unix);
        let reserve = COINBASE_RESERVED_WEIGHT + 4 * u64::from(self.cfg.block_fill_bytes / 2);
        let budget = params.max_block_weight.saturating_sub(reserve);
        let (txs, fees) = self.select_txs(&db, budget);
        let value = params.subsidy(height) + fees;
        let mut tag = me.0.to_le_bytes().to_vec();
        tag.extend_from_slice(&self.mined.to_le_bytes());
        let mut coinbase = coinbase_tx(height, &payout, value, &tag);
        if let Some(script) = extra {
            coinbase.output.push(bitcoin::TxOut { value: Amount::ZERO, script_pubkey: script.clone() });
        }
        assemble_block(header, coinbase, txs)
    }

    /// Sets the merge-mining commitment put in the coinbase of the blocks
    /// this node mines (`None` for none).
    pub fn set_merge_tag(&mut self, tag: Option<ScriptBuf>) {
        self.merge_tag = tag;
    }

    /// Unix time at the current virtual time.
    pub fn unix_now(&self, now: SimTime) -> u32 {
        unix_at(self.cfg.start_unix, now)
    }

    /// The best tip's height.
    pub fn tip_height(&self) -> u32 {
        self.db.borrow().rec(self.tip).height
    }

    /// Transactions by fee rate, parents before children, within `budget` weight.
    fn select_txs(&self, db: &BlockDb, budget: u64) -> (Vec<Transaction>, Amount) {
        let mut order: Vec<(TxIdx, PoolEntry)> = self.mempool.entries.iter().map(|(i, e)| (*i, *e)).collect();
        // Highest fee rate first; ties by arrival.
        order.sort_by(|a, b| {
            let ra = u128::from(a.1.fee.to_sat()) * u128::from(b.1.vsize);
            let rb = u128::from(b.1.fee.to_sat()) * u128::from(a.1.vsize);
            rb.cmp(&ra).then(a.1.seq.cmp(&b.1.seq))
        });
        let mut chosen: Vec<TxIdx> = Vec::new();
        let mut included = std::collections::BTreeSet::new();
        let mut weight = 0u64;
        let mut fees = Amount::ZERO;
        let mut progress = true;
        while progress {
            progress = false;
            for (i, e) in &order {
                if included.contains(i) {
                    continue;
                }
                let tx = &db.tx(*i).tx;
                if self.attack.is_some() && self.censors(db, tx) {
                    continue;
                }
                let parents_ok = tx.input.iter().all(|inp| match db.tx_idx(&inp.previous_output.txid) {
                    Some(p) if self.mempool.contains(p) => included.contains(&p),
                    _ => true,
                });
                let w = tx.weight().to_wu();
                if parents_ok && weight + w <= budget {
                    weight += w;
                    fees += e.fee;
                    included.insert(*i);
                    chosen.push(*i);
                    progress = true;
                }
            }
        }
        (chosen.iter().map(|i| (*db.tx(*i).tx).clone()).collect(), fees)
    }

    // ----- transactions -----------------------------------------------------

    fn accept_to_pool(&mut self, idx: TxIdx) -> Result<(), Reject> {
        let db = Rc::clone(&self.db);
        let mut db = db.borrow_mut();
        let tx = Arc::clone(&db.tx(idx).tx);
        if tx.is_coinbase() {
            return Err(Reject::Coinbase);
        }
        for i in &tx.input {
            if let Some(c) = self.mempool.spender(&i.previous_output) {
                return Err(Reject::Conflict(db.tx(c).txid));
            }
        }
        let Some(snapshot) = db.utxo(self.tip).cloned() else {
            return Err(Reject::MissingInputs(OutPoint::null()));
        };
        let height = db.rec(self.tip).height + 1;
        let fee = {
            let view = PoolView { snapshot: &snapshot, pool: &self.mempool, db: &db, height };
            for i in &tx.input {
                if view.coin(&i.previous_output).is_none() {
                    return Err(Reject::MissingInputs(i.previous_output));
                }
            }
            // Coins are fixed per outpoint, so the store's memo is exact;
            // maturity is checked against this node's height.
            let view = PoolView { snapshot: &snapshot, pool: &self.mempool, db: &db, height };
            let maturity = db.params().coinbase_maturity;
            for i in &tx.input {
                if let Some(c) = view.coin(&i.previous_output).filter(|c| c.is_coinbase) {
                    let depth = height.saturating_sub(c.height);
                    if depth < maturity {
                        return Err(Reject::Invalid(crate::validate::TxError::ImmatureCoinbase {
                            outpoint: i.previous_output,
                            depth,
                            required: maturity,
                        }));
                    }
                }
            }
            let coins = crate::blockdb::CoinList(
                tx.input
                    .iter()
                    .filter_map(|i| Some((i.previous_output, view.coin(&i.previous_output)?)))
                    .collect(),
            );
            db.check_tx(idx, &coins, height).map_err(Reject::Invalid)?
        };
        let vsize = db.tx(idx).vsize;
        if self.mempool.bytes + u64::from(vsize) > self.cfg.mempool_max_bytes {
            let rate = |e: &PoolEntry| e.fee.to_sat() as f64 / f64::from(e.vsize.max(1));
            let worst = self
                .mempool
                .entries
                .iter()
                .min_by(|a, b| rate(a.1).total_cmp(&rate(b.1)).then(b.1.seq.cmp(&a.1.seq)));
            match worst {
                Some((w, e)) if rate(e) < fee.to_sat() as f64 / f64::from(vsize.max(1)) => {
                    let w = *w;
                    drop(db);
                    let db2 = Rc::clone(&self.db);
                    self.remove_with_descendants(&db2.borrow(), w);
                    let db = self.db.borrow();
                    self.mempool.insert(idx, &db.tx(idx).tx.clone(), fee, vsize);
                    return Ok(());
                }
                _ => return Err(Reject::PoolFull),
            }
        }
        self.mempool.insert(idx, &tx, fee, vsize);
        Ok(())
    }

    fn receive_tx(
        &mut self,
        cx: &mut dyn Context<BtcMsg>,
        from: Option<NodeId>,
        idx: TxIdx,
    ) -> Result<(), Reject> {
        let st = get(&self.txs, idx);
        if st == TX_POOL || st == TX_DONE {
            return Ok(());
        }
        match self.accept_to_pool(idx) {
            Ok(()) => {
                *slot(&mut self.txs, idx) = TX_POOL;
                self.inv_queue.push((idx, from));
                self.schedule_trickle(cx);
                Ok(())
            }
            Err(e) => {
                // Missing inputs may arrive later; anything else is final.
                *slot(&mut self.txs, idx) =
                    if matches!(e, Reject::MissingInputs(_)) { TX_UNKNOWN } else { TX_DONE };
                Err(e)
            }
        }
    }

    /// Draws the next trickled announcement of the queued transactions, unless one is pending.
    fn schedule_trickle(&mut self, cx: &mut dyn Context<BtcMsg>) {
        if self.trickle.is_none() {
            let mean = self.cfg.tx_trickle_s.max(0.0);
            let u: f64 = 1.0 - cx.rng().r#gen::<f64>();
            let d = Duration::from_secs_f64((-u.ln() * mean).min(1e6));
            self.trickle = Some(cx.set_timer(d, TIMER_TRICKLE));
        }
    }

    fn flush_invs(&mut self, cx: &mut dyn Context<BtcMsg>) {
        self.trickle = None;
        let queue = std::mem::take(&mut self.inv_queue);
        let db = self.db.borrow();
        for k in 0..cx.peer_count() {
            let p = cx.peer(k);
            if self.wallets.iter().any(|(w, _)| *w == p) {
                continue;
            }
            let items: Vec<Inv> = queue
                .iter()
                .filter(|(i, f)| *f != Some(p) && self.mempool.contains(*i))
                .map(|(i, _)| Inv::Tx(db.tx(*i).txid))
                .collect();
            if !items.is_empty() {
                cx.send(p, BtcMsg::Inv(items.into()));
            }
        }
    }

    fn sample(&mut self, cx: &mut dyn Context<BtcMsg>) {
        cx.emit(Event::new("btc.mempool").with("txs", self.mempool.len()).with("vbytes", self.mempool.bytes));
        if let Ok(d) = Duration::try_from_secs_f64(self.cfg.mempool_sample_s) {
            cx.set_timer(d, TIMER_SAMPLE);
        }
    }
}

impl FullNode {
    /// Handles start: choose high-bandwidth compact peers, start mining.
    pub fn start(&mut self, cx: &mut dyn Context<BtcMsg>) {
        if self.cfg.compact_blocks {
            let n = cx.peer_count();
            let mut picks: Vec<usize> = (0..n).collect();
            for i in 0..picks.len().min(self.cfg.hb_peers) {
                let j = cx.rng().gen_range(i..n);
                picks.swap(i, j);
                let p = cx.peer(picks[i]);
                cx.send(p, BtcMsg::SendCmpct);
            }
        }
        if self.cfg.mempool_sample_s > 0.0 {
            if let Ok(d) = Duration::try_from_secs_f64(self.cfg.mempool_sample_s) {
                cx.set_timer(d, TIMER_SAMPLE);
            }
        }
        self.restart_mining(cx);
        self.schedule_attack(cx);
    }

    /// Handles a restart after a crash: catch up with the peers' chains
    /// through `getheaders` (the mempool and chain survived on disk).
    pub fn restart(&mut self, cx: &mut dyn Context<BtcMsg>) {
        let locator = self.locator();
        for k in 0..cx.peer_count() {
            let p = cx.peer(k);
            cx.send(p, BtcMsg::GetHeaders(locator.clone()));
        }
        self.start(cx);
    }

    /// Hashes of the best chain, newest first, dense for ten blocks then
    /// exponentially sparser, ending at genesis (Core's block locator).
    fn locator(&self) -> Vec<BlockHash> {
        let db = self.db.borrow();
        let mut out = Vec::new();
        let mut h = db.rec(self.tip).height;
        let mut step = 1;
        loop {
            out.push(db.rec(db.ancestor(self.tip, h)).data.hash);
            if h == 0 {
                break;
            }
            if out.len() >= 10 {
                step *= 2;
            }
            h = h.saturating_sub(step);
        }
        out
    }

    fn answer_getheaders(&self, cx: &mut dyn Context<BtcMsg>, from: NodeId, locator: &[BlockHash]) {
        const MAX_HEADERS: u32 = 2000;
        let db = self.db.borrow();
        let tip_h = db.rec(self.tip).height;
        // The first locator entry on our best chain is the fork point.
        let fork = locator
            .iter()
            .filter_map(|h| db.id_of(h))
            .find(|id| self.hot.status(*id) == HAVE && db.ancestor(self.tip, db.rec(*id).height) == *id)
            .unwrap_or(0);
        let start = db.rec(fork).height + 1;
        if start > tip_h {
            return;
        }
        let end = tip_h.min(start + MAX_HEADERS - 1);
        let headers = (start..=end).map(|h| db.rec(db.ancestor(self.tip, h)).data.block.header).collect();
        cx.send(from, BtcMsg::Headers(headers));
    }

    /// Handles a message.
    pub fn message(&mut self, cx: &mut dyn Context<BtcMsg>, from: NodeId, msg: BtcMsg) {
        self.record_early(cx.now());
        let msg = if self.hot.filtered && self.cut_off(cx.now(), from) {
            match Self::filter_from_victim(msg) {
                Some(m) => m,
                None => return,
            }
        } else {
            msg
        };
        match msg {
            BtcMsg::GetHeaders(locator) => self.answer_getheaders(cx, from, &locator),
            BtcMsg::Headers(headers) => {
                let mut want = Vec::new();
                {
                    let db = self.db.borrow();
                    for h in &headers {
                        let hash = h.block_hash();
                        match db.id_of(&hash) {
                            Some(id) if self.hot.status(id) != UNKNOWN => {}
                            Some(id) => {
                                self.hot.set_status(id, REQUESTED);
                                want.push(Inv::Block(hash));
                            }
                            None => want.push(Inv::Block(hash)),
                        }
                    }
                }
                if !want.is_empty() {
                    cx.send(from, BtcMsg::GetData(want));
                }
            }
            BtcMsg::Inv(items) => {
                let mut want = Vec::new();
                {
                    let db = self.db.borrow();
                    for inv in items.iter().copied() {
                        match inv {
                            Inv::Block(h) | Inv::CmpctBlock(h) => {
                                let ask = if self.hot.compact { Inv::CmpctBlock(h) } else { Inv::Block(h) };
                                let id = db.id_of(&h);
                                match (id, cx.peer_index(from)) {
                                    (Some(id), Some(k)) => self.hot.note_announcer(id, k),
                                    (None, Some(k)) => note_unstored(&mut self.unstored_announcers, h, k),
                                    _ => {}
                                }
                                match id {
                                    Some(id) if self.hot.status(id) != UNKNOWN => {}
                                    Some(id) => {
                                        self.hot.set_status(id, REQUESTED);
                                        want.push(ask);
                                    }
                                    None => want.push(ask),
                                }
                            }
                            Inv::Tx(t) => match db.tx_idx(&t) {
                                Some(i) if get(&self.txs, i) != TX_UNKNOWN => {}
                                Some(i) => {
                                    *slot(&mut self.txs, i) = TX_REQUESTED;
                                    want.push(inv);
                                }
                                None => want.push(inv),
                            },
                        }
                    }
                }
                if !want.is_empty() {
                    cx.send(from, BtcMsg::GetData(want));
                }
            }
            BtcMsg::GetData(items) => {
                let db = self.db.borrow();
                for inv in items {
                    match inv {
                        Inv::Block(h) | Inv::CmpctBlock(h) => {
                            let compact = matches!(inv, Inv::CmpctBlock(_));
                            if let Some(id) = db.id_of(&h).filter(|id| self.hot.status(*id) == HAVE) {
                                let data = Arc::clone(&db.rec(id).data);
                                // Compact only for the tip's neighbourhood; old blocks go in full.
                                let msg = if compact && db.rec(id).height + 1 >= db.rec(self.tip).height {
                                    BtcMsg::CmpctBlock(data)
                                } else {
                                    BtcMsg::Block(data)
                                };
                                cx.send(from, msg);
                            }
                        }
                        Inv::Tx(t) => {
                            if let Some(i) = db.tx_idx(&t).filter(|i| self.mempool.contains(*i)) {
                                cx.send(from, BtcMsg::Tx(Arc::clone(&db.tx(i).tx)));
                            }
                        }
                    }
                }
            }
            BtcMsg::Block(data) => self.on_block(cx, Some(from), data),
            BtcMsg::BlockTxn(b) => {
                let (data, txs) = *b;
                for tx in txs {
                    let idx = self.db.borrow_mut().intern_tx(tx, cx.now().as_nanos());
                    let _ = self.receive_tx(cx, Some(from), idx);
                }
                self.on_block(cx, Some(from), data);
            }
            BtcMsg::CmpctBlock(data) => {
                let missing: Vec<u32> = {
                    let db = self.db.borrow();
                    data.block
                        .txdata
                        .iter()
                        .enumerate()
                        .skip(1)
                        .filter(|(_, tx)| match db.tx_idx(&tx.compute_txid()) {
                            Some(i) => !self.mempool.contains(i) && get(&self.txs, i) != TX_DONE,
                            None => true,
                        })
                        .map(|(k, _)| k as u32)
                        .collect()
                };
                if missing.is_empty() {
                    self.on_block(cx, Some(from), data);
                } else {
                    cx.send(from, BtcMsg::GetBlockTxn(Box::new((data.hash, missing))));
                }
            }
            BtcMsg::GetBlockTxn(req) => {
                let (block, indexes) = *req;
                let db = self.db.borrow();
                if let Some(id) = db.id_of(&block).filter(|id| self.hot.status(*id) == HAVE) {
                    let data = Arc::clone(&db.rec(id).data);
                    let txs = indexes
                        .iter()
                        .filter_map(|k| data.block.txdata.get(*k as usize))
                        .map(|t| Arc::new(t.clone()))
                        .collect();
                    cx.send(from, BtcMsg::BlockTxn(Box::new((data, txs))));
                }
            }
            BtcMsg::Tx(tx) => {
                let idx = self.db.borrow_mut().intern_tx(tx, cx.now().as_nanos());
                let _ = self.receive_tx(cx, Some(from), idx);
            }
            BtcMsg::SendCmpct => {
                if !self.hb_to.contains(&from) {
                    self.hb_to.push(from);
                }
            }
            BtcMsg::FilterLoad(scripts) => {
                self.journal.record(|| Change::Filter(from, scripts.clone()));
                self.wallets.retain(|(w, _)| *w != from);
                self.wallets.push((from, scripts));
                // Bring the wallet up to date with the whole best chain.
                let chain = self.best_chain();
                let all = std::mem::take(&mut self.wallets);
                self.wallets = all.iter().filter(|(w, _)| *w == from).cloned().collect();
                self.serve_wallets(cx, &chain);
                self.wallets = all;
            }
            BtcMsg::FilteredBlock(_) => {}
        }
    }

    /// Handles a timer.
    pub fn timer(&mut self, cx: &mut dyn Context<BtcMsg>, timer: TimerId) {
        self.record_early(cx.now());
        match timer {
            TIMER_MINE => self.mine(cx),
            TIMER_TRICKLE => self.flush_invs(cx),
            TIMER_SAMPLE => self.sample(cx),
            attacks::TIMER_ATTACK => self.begin_attack(cx),
            _ => {}
        }
    }

    /// Drops volatile state on a crash: requests in flight, queued
    /// announcements, the mining timer; the chain and mempool are kept (a
    /// node persists them).
    pub fn crash(&mut self) {
        self.hot.replace_status(REQUESTED, UNKNOWN);
        for s in self.txs.iter_mut() {
            if *s == TX_REQUESTED {
                *s = TX_UNKNOWN;
            }
        }
        self.inv_queue.clear();
        self.trickle = None;
        self.mining = None;
        self.mining_key = None;
        self.hb_to.clear();
        // With those taken early, which arrived before the crash.
        self.hot.forget_announcers();
        self.unstored_announcers.clear();
        self.wallets.clear();
    }

    /// Takes an announcement when it is sent if its arrival would only
    /// record the announcer: the block is one the node holds, has found
    /// invalid, or will have asked for by then and will not drop (its
    /// timestamp is within the future limit already, and the node's clock
    /// only advances) — asked for now, or to be asked for on an earlier
    /// announcement that was refused, and so will surely arrive. The
    /// announcer is recorded once the arrival time has come (see
    /// [`FullNode::record_early`]). An eclipse attacker's filter, a
    /// transaction or a block not in the store refuses it.
    pub fn absorb(&mut self, offer: Offer<'_, BtcMsg>) -> bool {
        let (BtcMsg::Inv(Invs::One(Inv::Block(hash) | Inv::CmpctBlock(hash))), Some(peer)) =
            (offer.msg, offer.from_index)
        else {
            return false;
        };
        if self.hot.filtered {
            return false;
        }
        let Ok(db) = self.db.try_borrow() else {
            return false;
        };
        let Some(id) = db.id_of(hash) else {
            return false;
        };
        let (now, at) = (offer.now.as_nanos(), offer.at.as_nanos());
        // A block asked for is dropped again only if its timestamp is too
        // far ahead of the node's clock; one that is not now never will be.
        let in_time = || {
            let clock = unix_at(self.hot.start_unix(), offer.now);
            u64::from(db.rec(id).data.block.header.time)
                <= u64::from(clock) + db.params().max_future_block_time_secs
        };
        match self.hot.status(id) {
            HAVE | INVALID => self.hot.take_early(id, peer, now, at, true),
            REQUESTED => in_time() && self.hot.take_early(id, peer, now, at, true),
            // Unknown now, but asked for by `at` if an announcement refused
            // before arrives earlier.
            _ if self.hot.announced_before(id, at) && in_time() => {
                self.hot.take_early(id, peer, now, at, false)
            }
            _ => {
                self.hot.expect_announcement(id, at);
                false
            }
        }
    }

    /// Records the announcers taken early (see [`FullNode::absorb`]) whose
    /// announcements have arrived by `now`: before anything else happens
    /// at `now`, as handling them on arrival would have.
    #[inline]
    fn record_early(&mut self, now: SimTime) {
        self.hot.record_early(now.as_nanos());
    }

    /// The best chain's blocks, genesis first.
    fn best_chain(&self) -> Vec<BlockId> {
        let db = self.db.borrow();
        let mut v = Vec::with_capacity(db.rec(self.tip).height as usize + 1);
        let mut b = Some(self.tip);
        while let Some(x) = b {
            v.push(x);
            b = db.rec(x).parent;
        }
        v.reverse();
        v
    }

    // ----- persistence (see crate::journal) ---------------------------------

    /// Starts recording changes for a durable store.
    pub fn enable_journal(&mut self) {
        self.journal.enable();
        self.mempool.journal.enable();
    }

    /// The changes recorded since the last call: blocks and filters, then
    /// the mempool's, each oldest first.
    pub fn take_journal(&mut self) -> Vec<Change> {
        let mut v = self.journal.take();
        v.extend(self.mempool.journal.take());
        v
    }

    /// Block templates made so far (numbers the coinbases this node mines).
    pub fn mined(&self) -> u32 {
        self.mined
    }

    /// The block store this node uses.
    pub fn db(&self) -> &SharedDb {
        &self.db
    }

    /// Light wallets and the scripts they loaded as filters.
    pub fn wallet_filters(&self) -> &[(NodeId, Vec<ScriptBuf>)] {
        &self.wallets
    }

    /// Restores what a durable store kept, before the node starts: the
    /// blocks it had accepted (parents before children), validated again
    /// through the block store, its tip, its coinbase counter and its
    /// wallets' filters. A selfish miner restarts its strategy at the tip.
    pub fn restore(
        &mut self,
        blocks: &[Arc<SimBlock>],
        tip: BlockHash,
        mined: u32,
        filters: Vec<(NodeId, Vec<ScriptBuf>)>,
    ) -> Result<(), RestoreError> {
        for data in blocks {
            let inserted = self.db.borrow_mut().insert(Arc::clone(data), None);
            let id = inserted.map_err(|e| RestoreError::Block { hash: data.hash, reason: e.to_string() })?;
            let verdict = self.db.borrow_mut().validate(id);
            verdict.map_err(|e| RestoreError::Invalid { hash: data.hash, reason: e.to_string() })?;
            self.hot.set_status(id, HAVE);
        }
        let id =
            self.db.borrow().id_of(&tip).filter(|id| self.has_block(*id)).ok_or(RestoreError::NoTip(tip))?;
        self.tip = id;
        self.mined = self.mined.max(mined);
        self.wallets = filters;
        if self.selfish.is_some() {
            self.set_selfish(true);
        }
        Ok(())
    }

    /// Puts kept mempool transactions back, in their order (one whose
    /// parent comes later is retried), queued for announcement. Returns the
    /// txids that no longer enter (confirmed meanwhile, conflicting).
    pub fn restore_mempool(&mut self, txs: &[Arc<Transaction>]) -> Vec<bitcoin::Txid> {
        let mut left: Vec<TxIdx> = Vec::with_capacity(txs.len());
        for tx in txs {
            let idx = self.db.borrow_mut().intern_tx(Arc::clone(tx), 0);
            if !self.mempool.contains(idx) && !left.contains(&idx) {
                left.push(idx);
            }
        }
        loop {
            let before = left.len();
            let mut i = 0;
            while i < left.len() {
                let idx = left[i];
                if self.accept_to_pool(idx).is_ok() {
                    *slot(&mut self.txs, idx) = TX_POOL;
                    self.inv_queue.push((idx, None));
                    left.remove(i);
                } else {
                    i += 1;
                }
            }
            if left.len() == before {
                break;
            }
        }
        let db = self.db.borrow();
        left.iter().map(|i| db.tx(*i).txid).collect()
    }

    /// Handles the start of a process that restored this node from a
    /// durable store: catch up as [`FullNode::restart`] does, announce the
    /// restored tip (a block kept just before the process died may never
    /// have left it), serve the restored wallets the best chain again, and
    /// announce the restored mempool.
    pub fn resume(&mut self, cx: &mut dyn Context<BtcMsg>) {
        self.restart(cx);
        if self.tip != 0 {
            self.announce_block(cx, self.tip, None);
        }
        if !self.wallets.is_empty() {
            let chain = self.best_chain();
            self.serve_wallets(cx, &chain);
        }
        if !self.inv_queue.is_empty() {
            self.schedule_trickle(cx);
        }
    }
}

/// Virtual time as Unix seconds, for a start time.
pub fn unix_at(start_unix: u32, now: SimTime) -> u32 {
    start_unix.saturating_add((now.as_nanos() / 1_000_000_000) as u32)
}

/// Every kind of node of a Bitcoin-like network, as one type for the runtime.
///
/// A full node is held inline, so that a simulator's array of nodes is the
/// nodes themselves: the address of a node's state is known without
/// reading a pointer first, and is prefetched a few events ahead. The tag
/// comes first and each node starts a cache line, so that the line read to
/// dispatch a message is the one that handles an announcement (see
/// `FullNode`).
#[allow(clippy::large_enum_variant)]
#[repr(u8, align(64))]
pub enum BtcNode {
    /// A full node (server), mining if it has hashrate.
    Full(FullNode),
    /// A light wallet (client).
    Wallet(Box<crate::wallet_node::WalletNode>),
}

impl BtcNode {
    /// `"full"` or `"wallet"`.
    pub fn kind(&self) -> &'static str {
        match self {
            BtcNode::Full(_) => "full",
            BtcNode::Wallet(_) => "wallet",
        }
    }

    /// Starts recording changes for a durable store ([`crate::journal`]).
    pub fn enable_journal(&mut self) {
        match self {
            BtcNode::Full(n) => n.enable_journal(),
            BtcNode::Wallet(w) => w.enable_journal(),
        }
    }

    /// The changes recorded since the last call.
    pub fn take_journal(&mut self) -> Vec<Change> {
        match self {
            BtcNode::Full(n) => n.take_journal(),
            BtcNode::Wallet(w) => w.take_journal(),
        }
    }

    /// Starts a node restored from a durable store (instead of
    /// [`fika_core::Node::on_start`]).
    pub fn resume(&mut self, cx: &mut dyn Context<BtcMsg>) {
        match self {
            BtcNode::Full(n) => n.resume(cx),
            BtcNode::Wallet(w) => w.resume(cx),
        }
    }
}

impl fika_core::Node for BtcNode {
    type Msg = BtcMsg;
    fn on_start(&mut self, cx: &mut dyn Context<BtcMsg>) {
        match self {
            BtcNode::Full(n) => n.start(cx),
            BtcNode::Wallet(w) => w.start(cx),
        }
    }
    fn on_message(&mut self, cx: &mut dyn Context<BtcMsg>, from: NodeId, msg: BtcMsg) {
        match self {
            BtcNode::Full(n) => n.message(cx, from, msg),
            BtcNode::Wallet(w) => w.message(cx, from, msg),
        }
    }
    fn on_timer(&mut self, cx: &mut dyn Context<BtcMsg>, timer: TimerId) {
        match self {
            BtcNode::Full(n) => n.timer(cx, timer),
            BtcNode::Wallet(w) => w.timer(cx, timer),
        }
    }
    fn on_crash(&mut self) {
        match self {
            BtcNode::Full(n) => n.crash(),
            BtcNode::Wallet(w) => w.crash(),
        }
    }
    fn on_restart(&mut self, cx: &mut dyn Context<BtcMsg>) {
        match self {
            BtcNode::Full(n) => n.restart(cx),
            BtcNode::Wallet(w) => w.start(cx),
        }
    }
    fn warms(&self) -> bool {
        true
    }
    fn warm_offer(&self) {
        // The first line, and the two lines of announcements taken early
        // after it.
        fika_core::hint::prefetch_lines(self, 3);
    }
    fn absorb(&mut self, offer: Offer<'_, BtcMsg>) -> bool {
        match self {
            BtcNode::Full(n) => n.absorb(offer),
            BtcNode::Wallet(_) => false,
        }
    }
    fn warm(&self) {
        // A full node's first two lines are what every announcement reads
        // (see `FullNode`); the variant is not looked at, since reading it
        // would wait for the very lines being warmed.
        fika_core::hint::prefetch_front(self);
    }
    fn warm_message(&self, msg: &BtcMsg) {
        match msg {
            // A new block reaches most of a full node: tip, orphans, mining,
            // wallets, attack rules.
            BtcMsg::Block(_) | BtcMsg::CmpctBlock(_) | BtcMsg::BlockTxn(_) => {
                fika_core::hint::prefetch_all(self)
            }
            _ => self.warm(),
        }
    }
}

#[cfg(test)]
mod layout {
    use super::*;

    #[test]
    fn an_announcement_reads_one_cache_line() {
        // `repr(u8)`: the tag, then the full node at its alignment.
        let start = std::mem::align_of::<FullNode>();
        assert_eq!(start, 8);
        assert_eq!(std::mem::align_of::<BtcNode>(), 64);
        assert_eq!(std::mem::size_of::<BtcNode>() % 64, 0);
        assert!(start + std::mem::offset_of!(FullNode, db) + 8 <= 64);
        assert!(start + std::mem::offset_of!(FullNode, hot) + hot::HOT_BYTES <= 64);
        // What an offer reads besides: the second and third lines.
        let (early, size) = hot::EARLY_AT;
        assert_eq!(start + std::mem::offset_of!(FullNode, hot) + early, 64);
        assert_eq!(size, 128);
    }
}
