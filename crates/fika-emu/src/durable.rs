//! A node whose every step is committed to its durable store before the
//! step's messages leave.
//!
//! [`DurableNode`] wraps a [`BtcNode`] for [`crate::runtime::run_node`].
//! The node stays sans-IO: it records what it changed in its journal
//! ([`fika_btc::journal`]). Each step (start, message, timer) runs against
//! a context that holds the node's outgoing messages back; after the step
//! the wrapper drains the journal and commits it ([`Store::commit`], one
//! durable write transaction), and only then hands the held messages to
//! the runtime. So nothing the node has said to a peer — relaying a block,
//! announcing or answering with a transaction, a wallet's payment — refers
//! to a state the disk does not have: a process killed at any instant
//! restarts with at least everything its peers were told.
//!
//! If a commit fails (disk full, I/O error), the step's messages are
//! dropped, a `store.failed` event is emitted, the node ignores every
//! further input and asks the runtime to stop; the process then exits with
//! the error ([`DurableNode::failure`]).
//!
//! Events it emits: `store.resumed` (at the start of a restored node: tip
//! height and hash, blocks, pending transactions, replay time) and
//! `store.commit` (each commit that stored a block or moved the tip: tip
//! height and hash, blocks written, microseconds).

use std::time::Duration;

use fika_btc::msg::BtcMsg;
use fika_btc::node::BtcNode;
use fika_core::{Context, Event, Node, NodeId, NodeRng, SimTime, TimerId, TimerKey};
use tokio::sync::mpsc;

use crate::runtime::Control;
use crate::store::{Committed, Resumed, Store, StoreError, StoreStats};

/// A context that forwards everything but holds outgoing messages back
/// until they are released.
struct Held<'a, 'b> {
    inner: &'a mut (dyn Context<BtcMsg> + 'b),
    out: Vec<(NodeId, BtcMsg)>,
}

impl Context<BtcMsg> for Held<'_, '_> {
    fn id(&self) -> NodeId {
        self.inner.id()
    }
    fn now(&self) -> SimTime {
        self.inner.now()
    }
    fn rng(&mut self) -> &mut NodeRng {
        self.inner.rng()
    }
    fn peer_count(&self) -> usize {
        self.inner.peer_count()
    }
    fn peer(&self, i: usize) -> NodeId {
        self.inner.peer(i)
    }
    fn send(&mut self, to: NodeId, msg: BtcMsg) {
        self.out.push((to, msg));
    }
    fn set_timer(&mut self, after: Duration, timer: TimerId) -> TimerKey {
        self.inner.set_timer(after, timer)
    }
    fn cancel_timer(&mut self, key: TimerKey) {
        self.inner.cancel_timer(key);
    }
    fn emit(&mut self, event: Event) {
        self.inner.emit(event);
    }
}

/// A [`BtcNode`] with a durable store. See the module documentation.
pub struct DurableNode {
    node: BtcNode,
    store: Store,
    resumed: Option<Resumed>,
    stop: Option<mpsc::UnboundedSender<Control>>,
    failure: Option<StoreError>,
    stats: StoreStats,
}

impl DurableNode {
    /// Wraps `node` with `store` (already opened for it, and restored into
    /// it if `resumed` is set). `stop` is told [`Control::Stop`] if a commit
    /// fails. Turns the node's journal on.
    pub fn new(
        mut node: BtcNode,
        store: Store,
        resumed: Option<Resumed>,
        stop: Option<mpsc::UnboundedSender<Control>>,
    ) -> Self {
        node.enable_journal();
        DurableNode { node, store, resumed, stop, failure: None, stats: StoreStats::default() }
    }

    /// The node.
    pub fn node(&self) -> &BtcNode {
        &self.node
    }

    /// What the store held at the start, if the node resumed from it.
    pub fn resumed(&self) -> Option<&Resumed> {
        self.resumed.as_ref()
    }

    /// The commit that failed, if one did (the node stopped there).
    pub fn failure(&self) -> Option<&StoreError> {
        self.failure.as_ref()
    }

    /// Takes the failure out (to return it as the process's error).
    pub fn take_failure(&mut self) -> Option<StoreError> {
        self.failure.take()
    }

    /// Ends the node of a process about to exit, its store abandoned
    /// ([`Store::abandon`]).
    pub fn abandon(self) {
        self.store.abandon();
    }

    /// Commit counters and the file's size now.
    pub fn stats(&self) -> StoreStats {
        StoreStats { file_bytes: self.store.file_bytes(), ..self.stats.clone() }
    }

    /// Runs one step against a held-back context, commits, then releases
    /// the messages (or drops them if the commit failed).
    fn step(&mut self, cx: &mut dyn Context<BtcMsg>, f: impl FnOnce(&mut BtcNode, &mut dyn Context<BtcMsg>)) {
        if self.failure.is_some() {
            return;
        }
        let out = {
            let mut held = Held { inner: &mut *cx, out: Vec::new() };
            f(&mut self.node, &mut held);
            held.out
        };
        let changes = self.node.take_journal();
        match self.store.commit(&self.node, &changes) {
            Ok(committed) => {
                if let Some(c) = committed {
                    self.stats.add(&c);
                    if c.blocks > 0 || c.tip_moved {
                        cx.emit(self.commit_event(&c));
                    }
                }
                for (to, msg) in out {
                    cx.send(to, msg);
                }
            }
            Err(e) => {
                cx.emit(Event::new("store.failed").with("reason", e.to_string()));
                self.failure = Some(e);
                if let Some(stop) = &self.stop {
                    let _ = stop.send(Control::Stop);
                }
            }
        }
    }

    fn commit_event(&self, c: &Committed) -> Event {
        let (height, hash) = tip_of(&self.node);
        Event::new("store.commit")
            .with("height", height)
            .with("tip", hash.to_string())
            .with("blocks", c.blocks)
            .with("us", c.micros)
    }
}

/// A node's tip (a wallet's best header): height and hash.
pub fn tip_of(node: &BtcNode) -> (u32, bitcoin::BlockHash) {
    match node {
        BtcNode::Full(n) => {
            let db = n.db().borrow();
            let r = db.rec(n.tip());
            (r.height, r.data.hash)
        }
        BtcNode::Wallet(w) => (w.spv().best_height(), w.spv().best_hash()),
    }
}

impl crate::service::BtcHost for DurableNode {
    fn with_btc(&mut self, cx: &mut dyn Context<BtcMsg>, f: crate::service::BtcCall<'_>) {
        self.step(cx, f);
    }
}

impl Node for DurableNode {
    type Msg = BtcMsg;

    fn on_start(&mut self, cx: &mut dyn Context<BtcMsg>) {
        match self.resumed.clone() {
            Some(r) => {
                cx.emit(
                    Event::new("store.resumed")
                        .with("height", r.height)
                        .with("tip", r.hash.clone())
                        .with("blocks", r.blocks)
                        .with("pending", r.pending)
                        .with("dropped", r.dropped)
                        .with("us", r.micros),
                );
                self.step(cx, |n, cx| n.resume(cx));
            }
            None => self.step(cx, |n, cx| n.on_start(cx)),
        }
    }

    fn on_message(&mut self, cx: &mut dyn Context<BtcMsg>, from: NodeId, msg: BtcMsg) {
        self.step(cx, |n, cx| n.on_message(cx, from, msg));
    }

    fn on_timer(&mut self, cx: &mut dyn Context<BtcMsg>, timer: TimerId) {
        self.step(cx, |n, cx| n.on_timer(cx, timer));
    }
}
