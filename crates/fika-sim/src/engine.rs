//! The simulation runtime: drives [`Node`]s in virtual time.
//!
//! One loop pops the earliest event — a start, a message arrival, a timer, a
//! fault — and hands it to its node through a [`Context`] that schedules
//! what the node does. Nothing here reads a clock or iterates a hash map.

use std::cell::Cell;
use std::time::Duration;

use fika_core::{
    Context, Event, EventSink, Message, Node, NodeId, NodeRng, Offer, SimTime, TimerId, TimerKey, derive_rng,
};

use crate::fault::{Fault, FaultAction};
use crate::net::{LinkOverride, Net, Route};
use crate::queue::EventQueue;

enum Pending<M> {
    Start(u32),
    /// `link`: the index of `to` among `from`'s peers; `back`: the index
    /// of `from` among `to`'s peers (each `u32::MAX` if unknown). With them
    /// the receiver knows its sender's index, and a reply its link, without
    /// a search.
    Deliver {
        from: u32,
        to: u32,
        epoch: u32,
        link: u32,
        back: u32,
        msg: M,
    },
    Timer {
        node: u32,
        epoch: u32,
        id: TimerId,
    },
    Fault(u32),
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimStats {
    /// Events handled: taken from the queue (tombstones excluded) or
    /// resolved when sent (see `resolved_at_send`).
    pub events: u64,
    /// Messages handed to the network.
    pub messages_sent: u64,
    /// Messages delivered to a running node.
    pub messages_delivered: u64,
    /// Bytes handed to the network (wire sizes).
    pub bytes_sent: u64,
    /// Lost by the loss model.
    pub dropped_loss: u64,
    /// Dropped because a partition separated the two ends.
    pub dropped_partition: u64,
    /// Dropped because the receiver was down (or restarted) at arrival.
    pub dropped_down: u64,
    /// Dropped because the receiver is not a peer of the sender.
    pub dropped_unlinked: u64,
    /// Timers fired.
    pub timers: u64,
    /// Deliveries resolved when the message was sent, because the receiver
    /// took it then (see [`Node::absorb`]); counted in `events` and
    /// `messages_delivered` as any delivery.
    pub resolved_at_send: u64,
    /// Messages sent, per message kind, in first-seen order.
    pub by_kind: Vec<KindStats>,
}

/// Message counters of one kind.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct KindStats {
    /// The message kind.
    pub kind: &'static str,
    /// Messages sent.
    pub count: u64,
    /// Bytes sent.
    pub bytes: u64,
}

/// Progress of a run, reported periodically.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Virtual time reached.
    pub now: SimTime,
    /// Events handled so far.
    pub events: u64,
}

/// The run state of one node, checked at every arrival.
#[derive(Clone, Copy)]
struct NodeState {
    /// Incremented at each crash; timers and messages of an older epoch are void.
    epoch: u32,
    /// Whether the node is running.
    up: bool,
}

struct World<M, S> {
    now: SimTime,
    queue: EventQueue<Pending<M>>,
    net: Net,
    sink: S,
    stats: SimStats,
    /// Index in `stats.by_kind` of the kind sent last.
    last_kind: usize,
    faults: Vec<Fault>,
    state: Vec<NodeState>,
    /// Whether a node has ever crashed; until then every node is up in
    /// epoch 0 and `state` need not be read.
    crashed: bool,
    /// How many faults were applied; `faults` is in time order, so the next
    /// one is `faults[applied]`. A message is offered to its receiver when
    /// it is sent (see [`Node::absorb`]) only if it arrives before that
    /// fault, so that nothing between sending and arrival (a crash, a
    /// partition) can change its fate.
    applied: usize,
    /// The end of the current `run_until`: a message is offered only if it
    /// arrives by then, so that every delivery counted happens in the run.
    horizon: SimTime,
}

impl<M, S> World<M, S> {
    /// Whether node `i` is running in epoch `epoch`.
    #[inline]
    fn current(&self, i: u32, epoch: u32) -> bool {
        if !self.crashed {
            return epoch == 0;
        }
        let s = self.state[i as usize];
        s.up && s.epoch == epoch
    }

    /// Whether node `i` is running now.
    #[inline]
    fn is_up(&self, i: u32) -> bool {
        !self.crashed || self.state.get(i as usize).is_some_and(|s| s.up)
    }

    /// The time of the next fault to apply, if any is left.
    #[inline]
    fn next_fault(&self) -> Option<SimTime> {
        self.faults.get(self.applied).map(|f| f.at)
    }

    /// The epoch of node `i`.
    #[inline]
    fn epoch(&self, i: u32) -> u32 {
        if self.crashed { self.state[i as usize].epoch } else { 0 }
    }
}

/// A network of nodes of type `N` in virtual time, emitting into `S`.
pub struct Simulation<N: Node, S: EventSink> {
    nodes: Vec<N>,
    rngs: Vec<NodeRng>,
    world: World<N::Msg, S>,
    /// Events left before the next batch of nodes is warmed.
    until_warm: usize,
    /// Whether some node wants to be warmed (see [`Node::warms`]).
    warms: bool,
}

/// The engine warms the nodes of upcoming events (see [`Node::warm`]) in
/// batches of this many, one batch ahead: the reads of a batch are
/// independent, so they wait on memory together.
const WARM_BATCH: usize = 8;

/// How many receivers ahead of the one sent to (`Context::send_to_peers`)
/// the engine fetches the receiver's first cache lines.
const PEER_AHEAD: usize = 8;

impl<N: Node, S: EventSink> Simulation<N, S> {
    /// Builds a simulation; every node starts at time zero, in id order.
    ///
    /// `net` must have as many nodes as `nodes`. Faults are scheduled now.
    pub fn new(seed: u64, nodes: Vec<N>, net: Net, mut faults: Vec<Fault>, sink: S) -> Self {
        assert_eq!(nodes.len(), net.len(), "one network slot per node");
        let n = nodes.len();
        let rngs = (0..n).map(|i| derive_rng(seed, "node", i as u64)).collect();
        let mut queue = EventQueue::new();
        for i in 0..nodes.len() {
            queue.push(SimTime::ZERO, Pending::Start(i as u32));
        }
        // In time order (stable: simultaneous faults keep theirs), which is
        // the order the queue applies them in.
        faults.sort_by_key(|f| f.at);
        for (i, f) in faults.iter().enumerate() {
            queue.push(f.at, Pending::Fault(i as u32));
        }
        let warms = nodes.iter().any(Node::warms);
        Simulation {
            nodes,
            rngs,
            until_warm: 0,
            warms,
            world: World {
                now: SimTime::ZERO,
                queue,
                net,
                sink,
                stats: SimStats::default(),
                last_kind: 0,
                faults,
                state: vec![NodeState { epoch: 0, up: true }; n],
                crashed: false,
                applied: 0,
                horizon: SimTime::ZERO,
            },
        }
    }

    /// The current virtual time.
    pub fn now(&self) -> SimTime {
        self.world.now
    }

    /// The nodes, to inspect their state after (or during) a run.
    pub fn nodes(&self) -> &[N] {
        &self.nodes
    }

    /// Mutable access to the nodes, e.g. for test drivers.
    pub fn nodes_mut(&mut self) -> &mut [N] {
        &mut self.nodes
    }

    /// The event sink.
    pub fn sink(&self) -> &S {
        &self.world.sink
    }

    /// Mutable access to the event sink.
    pub fn sink_mut(&mut self) -> &mut S {
        &mut self.world.sink
    }

    /// The counters so far.
    pub fn stats(&self) -> &SimStats {
        &self.world.stats
    }

    /// The network.
    pub fn net(&self) -> &Net {
        &self.world.net
    }

    /// Whether node `id` is running.
    pub fn is_up(&self, id: NodeId) -> bool {
        id.index() < self.nodes.len() && self.world.is_up(id.0)
    }

    /// Consumes the simulation, returning nodes, sink and counters.
    pub fn into_parts(self) -> (Vec<N>, S, SimStats) {
        (self.nodes, self.world.sink, self.world.stats)
    }

    /// Runs until no event is left at or before `until`; the clock then
    /// stands at `until` (or at the last event if the queue ran dry).
    /// `progress` is called about every 2¹⁶ events.
    pub fn run_until(&mut self, until: SimTime, progress: &mut dyn FnMut(Progress)) {
        let mut next_report = self.world.stats.events + (1 << 16);
        self.world.horizon = until;
        while let Some((t, item)) = self.world.queue.pop_until(until) {
            self.handle(t, item);
            if self.world.stats.events >= next_report {
                next_report += 1 << 16;
                progress(Progress { now: self.world.now, events: self.world.stats.events });
            }
        }
        if self.world.now < until && until != SimTime::MAX {
            self.world.now = until;
        }
        progress(Progress { now: self.world.now, events: self.world.stats.events });
    }

    /// Handles the next event; returns false if the queue is empty.
    pub fn step(&mut self) -> bool {
        let Some((t, item)) = self.world.queue.pop() else {
            return false;
        };
        // No run end is known: nothing is offered early.
        self.world.horizon = SimTime::ZERO;
        self.handle(t, item);
        true
    }

    /// Handles one event taken from the queue.
    #[inline]
    fn handle(&mut self, t: SimTime, item: Pending<N::Msg>) {
        debug_assert!(t >= self.world.now, "time never goes back");
        self.until_warm = self.until_warm.saturating_sub(1);
        if self.warms {
            if self.until_warm == 0 {
                self.warm_ahead();
            }
        } else {
            // Nodes small enough not to be warmed still wait for their
            // events' items: fetch the one a batch ahead.
            self.world.queue.prefetch_ahead(WARM_BATCH);
        }
        self.world.now = t;
        self.world.stats.events += 1;
        match item {
            Pending::Start(i) => self.with_node(i, |n, cx| n.on_start(cx)),
            Pending::Deliver { from, to, epoch, link, back, msg } => {
                if !self.world.current(to, epoch) {
                    self.world.stats.dropped_down += 1;
                } else if !self.world.net.same_side(from, to) {
                    self.world.stats.dropped_partition += 1;
                } else {
                    self.world.stats.messages_delivered += 1;
                    let via = Via { from, link, back };
                    self.with_node_from(to, via, |n, cx| n.on_message(cx, NodeId(from), msg));
                }
            }
            Pending::Timer { node, epoch, id } => {
                if self.world.current(node, epoch) {
                    self.world.stats.timers += 1;
                    self.with_node(node, |n, cx| n.on_timer(cx, id));
                }
            }
            Pending::Fault(i) => self.apply_fault(i as usize),
        }
    }

    /// Warms the nodes of the events one batch ahead.
    fn warm_ahead(&mut self) {
        self.until_warm = WARM_BATCH;
        for ahead in WARM_BATCH..2 * WARM_BATCH {
            let (n, msg) = match self.world.queue.peek_ahead(ahead) {
                Some(Pending::Deliver { to, msg, .. }) => {
                    msg.warm();
                    (*to, Some(msg))
                }
                Some(Pending::Timer { node, .. }) => (*node, None),
                Some(_) => continue,
                None => return,
            };
            if let Some(node) = self.nodes.get(n as usize) {
                match msg {
                    Some(m) => node.warm_message(m),
                    None => node.warm(),
                }
                self.world.net.prefetch_row(n);
            }
        }
    }

    fn with_node(&mut self, i: u32, f: impl FnOnce(&mut N, &mut dyn Context<N::Msg>)) {
        self.with_node_from(i, Via::NONE, f);
    }

    /// As `with_node`, handling a message from node `from`.
    #[inline]
    fn with_node_from(&mut self, i: u32, via: Via, f: impl FnOnce(&mut N, &mut dyn Context<N::Msg>)) {
        let rng = &mut self.rngs[i as usize];
        let reply = if self.world.net.symmetric() { via } else { Via::NONE };
        let (before, rest) = self.nodes.split_at_mut(i as usize);
        let Some((node, after)) = rest.split_first_mut() else {
            return;
        };
        let mut cx = Cx {
            id: i,
            rng,
            world: &mut self.world,
            others: Others { before, after },
            last_peer: Cell::new((u32::MAX, u32::MAX)),
            reply,
        };
        f(node, &mut cx);
    }

    fn apply_fault(&mut self, i: usize) {
        self.world.applied += 1;
        let action = self.world.faults[i].action.clone();
        let now = self.world.now;
        match action {
            FaultAction::Crash(n) => {
                if let Some(s) = self.world.state.get_mut(n.index()).filter(|s| s.up) {
                    s.up = false;
                    s.epoch = s.epoch.wrapping_add(1);
                    self.world.crashed = true;
                    self.nodes[n.index()].on_crash();
                    self.world.sink.record(now, Some(n), &Event::new("sim.crash"));
                }
            }
            FaultAction::Restart(n) => {
                if let Some(s) = self.world.state.get_mut(n.index()).filter(|s| !s.up) {
                    s.up = true;
                    self.world.sink.record(now, Some(n), &Event::new("sim.restart"));
                    self.with_node(n.0, |node, cx| node.on_restart(cx));
                }
            }
            FaultAction::Partition(groups) => {
                self.world.net.set_partition(&groups);
                let ev = Event::new("sim.partition").with("groups", groups.len());
                self.world.sink.record(now, None, &ev);
            }
            FaultAction::Heal => {
                self.world.net.heal();
                self.world.sink.record(now, None, &Event::new("sim.heal"));
            }
            FaultAction::SetLink { a, b, latency_ms, loss } => {
                self.world.net.set_override(a.0, b.0, LinkOverride { latency_ms, loss });
                let mut ev = Event::new("sim.link").with("a", a.0).with("b", b.0);
                if let Some(l) = latency_ms {
                    ev = ev.with("latency_ms", l);
                }
                if let Some(l) = loss {
                    ev = ev.with("loss", l);
                }
                self.world.sink.record(now, None, &ev);
            }
            FaultAction::SetLoss(p) => {
                self.world.net.set_loss(p);
                self.world.sink.record(now, None, &Event::new("sim.loss").with("loss", p));
            }
        }
    }
}

/// Every node but the one handling an event, for [`Node::absorb`].
struct Others<'a, N> {
    /// Nodes `0 .. id`.
    before: &'a mut [N],
    /// Nodes `id + 1 ..`.
    after: &'a mut [N],
}

/// Where node `i` is among [`Others`].
enum Place {
    Before(usize),
    Handling,
    After(usize),
}

impl<N> Others<'_, N> {
    #[inline]
    fn place(&self, i: u32) -> Place {
        let i = i as usize;
        match i.checked_sub(self.before.len()) {
            None => Place::Before(i),
            Some(0) => Place::Handling,
            Some(k) => Place::After(k - 1),
        }
    }

    /// Node `i`, unless it is the node handling the event.
    #[inline]
    fn get(&self, i: u32) -> Option<&N> {
        match self.place(i) {
            Place::Before(k) => self.before.get(k),
            Place::Handling => None,
            Place::After(k) => self.after.get(k),
        }
    }

    /// As [`Others::get`], to change the node.
    #[inline]
    fn get_mut(&mut self, i: u32) -> Option<&mut N> {
        match self.place(i) {
            Place::Before(k) => self.before.get_mut(k),
            Place::Handling => None,
            Place::After(k) => self.after.get_mut(k),
        }
    }
}

/// The link a message came by.
#[derive(Clone, Copy)]
struct Via {
    /// The sender (`u32::MAX`: no message).
    from: u32,
    /// The receiver's index among the sender's peers (`u32::MAX` if unknown).
    link: u32,
    /// The sender's index among the receiver's peers (`u32::MAX` if unknown).
    back: u32,
}

impl Via {
    const NONE: Via = Via { from: u32::MAX, link: u32::MAX, back: u32::MAX };
}

struct Cx<'a, N: Node, S> {
    id: u32,
    rng: &'a mut NodeRng,
    world: &'a mut World<N::Msg, S>,
    others: Others<'a, N>,
    /// The peer last returned by `peer` and its index: a send to it needs
    /// no link lookup.
    last_peer: Cell<(u32, u32)>,
    /// The link the message being handled came by, if links are
    /// symmetric: a reply to its sender needs no link lookup either.
    reply: Via,
}

impl<N: Node, S: EventSink> Cx<'_, N, S> {
    /// Counts `n` messages like `msg` as sent; returns its wire size.
    #[inline]
    fn count_sent(&mut self, msg: &N::Msg, n: u64) -> u32 {
        let w = &mut *self.world;
        let bytes = msg.wire_size();
        let stats = &mut w.stats;
        stats.messages_sent += n;
        stats.bytes_sent += n * u64::from(bytes);
        let kind = msg.kind();
        // Kinds have distinct names, so the entry found by address (the
        // usual case, and first the one used last) is the one found by name.
        let k = match stats.by_kind.get(w.last_kind) {
            Some(k) if std::ptr::eq(k.kind, kind) => Some(w.last_kind),
            _ => stats
                .by_kind
                .iter()
                .position(|k| std::ptr::eq(k.kind, kind))
                .or_else(|| stats.by_kind.iter().position(|k| k.kind == kind)),
        };
        match k {
            Some(i) => {
                w.last_kind = i;
                let k = &mut stats.by_kind[i];
                k.count += n;
                k.bytes += n * u64::from(bytes);
            }
            None => {
                w.last_kind = stats.by_kind.len();
                stats.by_kind.push(KindStats { kind, count: n, bytes: n * u64::from(bytes) });
            }
        }
        bytes
    }

    /// Fetches the first lines of the receiver that is this node's peer `k`.
    #[inline]
    fn warm_peer(&self, k: u32) {
        if let Some(n) = self.world.net.peers(self.id).get(k as usize).and_then(|&q| self.others.get(q)) {
            n.warm_offer();
        }
    }

    /// Routes a message of `bytes` to node `to` (`back`: this node's index
    /// among its peers, `u32::MAX` if unknown; `linked`: `to` is known to
    /// be a peer) and offers it to its receiver. `Some(at)`: it was not
    /// taken and must be queued to arrive at `at`.
    #[inline(always)]
    fn route_and_offer(&mut self, to: u32, back: u32, linked: bool, bytes: u32, msg: &N::Msg) -> Option<u64> {
        let w = &mut *self.world;
        match w.net.route(w.now.as_nanos(), self.id, to, bytes, linked) {
            Route::Arrives(at) => {
                // Offered only to a running receiver, if it arrives by the
                // run's end and before the next fault (see `World::applied`).
                let offered = w.is_up(to)
                    && at <= w.horizon.as_nanos()
                    && w.next_fault().is_none_or(|f| at < f.as_nanos())
                    && self.others.get_mut(to).is_some_and(|n| {
                        n.absorb(Offer {
                            from: NodeId(self.id),
                            from_index: (back != u32::MAX).then_some(back as usize),
                            msg,
                            now: w.now,
                            at: SimTime(at),
                        })
                    });
                if offered {
                    let stats = &mut w.stats;
                    stats.events += 1;
                    stats.messages_delivered += 1;
                    stats.resolved_at_send += 1;
                    return None;
                }
                Some(at)
            }
            Route::NotLinked => {
                w.stats.dropped_unlinked += 1;
                None
            }
            Route::Partitioned => {
                w.stats.dropped_partition += 1;
                None
            }
            Route::Lost => {
                w.stats.dropped_loss += 1;
                None
            }
        }
    }

    /// Queues `msg` to arrive at node `to` at `at`, over link (`link`, `back`).
    #[inline]
    fn queue(&mut self, at: u64, to: u32, link: u32, back: u32, msg: N::Msg) {
        let w = &mut *self.world;
        // The receiver's epoch is checked again at arrival: a crash in
        // between loses the message.
        let epoch = w.epoch(to);
        let from = self.id;
        w.queue.push_with(SimTime(at), || Pending::Deliver { from, to, epoch, link, back, msg });
    }
}

impl<N: Node, S: EventSink> Context<N::Msg> for Cx<'_, N, S> {
    fn id(&self) -> NodeId {
        NodeId(self.id)
    }
    fn now(&self) -> SimTime {
        self.world.now
    }
    fn rng(&mut self) -> &mut NodeRng {
        self.rng
    }
    fn peer_count(&self) -> usize {
        self.world.net.peers(self.id).len()
    }
    fn peer(&self, i: usize) -> NodeId {
        // Fan-outs go through `send_to_peers`, which fetches receivers
        // ahead; a single send to this peer needs no link lookup.
        let p = self.world.net.peers(self.id)[i];
        self.last_peer.set((p, i as u32));
        NodeId(p)
    }
    fn peer_index(&self, peer: NodeId) -> Option<usize> {
        if peer.0 == self.reply.from && self.reply.back != u32::MAX {
            return Some(self.reply.back as usize);
        }
        // Net keeps each node's peers sorted.
        self.world.net.peers(self.id).binary_search(&peer.0).ok()
    }
    fn send(&mut self, to: NodeId, msg: N::Msg) {
        let bytes = self.count_sent(&msg, 1);
        let w = &*self.world;
        if to.index() >= w.net.len() {
            self.world.stats.dropped_unlinked += 1;
            return;
        }
        // The sender of a delivered message had `self` among its peers.
        let (last, last_index) = self.last_peer.get();
        let (link, back) = if to.0 == last {
            // Read in peer order, so along `Net::reverse_index`'s row.
            (last_index, w.net.reverse_index(self.id, last_index))
        } else if to.0 == self.reply.from {
            (self.reply.back, self.reply.link)
        } else {
            (u32::MAX, u32::MAX)
        };
        let linked = to.0 == last || to.0 == self.reply.from;
        if let Some(at) = self.route_and_offer(to.0, back, linked, bytes, &msg) {
            self.queue(at, to.0, link, back, msg);
        }
    }
    fn send_to_peers(&mut self, peers: &[u32], msg: N::Msg) {
        let row = self.world.net.peers(self.id).len();
        if peers.iter().any(|&k| k as usize >= row) {
            // Not reached by well-behaved nodes: skip what does not exist.
            let valid: Vec<u32> = peers.iter().copied().filter(|&k| (k as usize) < row).collect();
            return self.send_to_peers(&valid, msg);
        }
        if peers.is_empty() {
            return;
        }
        let bytes = self.count_sent(&msg, peers.len() as u64);
        // Receivers are fetched a few sends ahead, so that their first
        // lines come in together.
        for &k in peers.iter().take(PEER_AHEAD) {
            self.warm_peer(k);
        }
        for (i, &k) in peers.iter().enumerate() {
            if let Some(&ahead) = peers.get(i + PEER_AHEAD) {
                self.warm_peer(ahead);
            }
            let net = &self.world.net;
            let (to, back) = (net.peers(self.id)[k as usize], net.reverse_index(self.id, k));
            if let Some(at) = self.route_and_offer(to, back, true, bytes, &msg) {
                self.queue(at, to, k, back, msg.clone());
            }
        }
    }
    fn set_timer(&mut self, after: Duration, timer: TimerId) -> TimerKey {
        let at = self.world.now + after;
        let (node, epoch) = (self.id, self.world.epoch(self.id));
        self.world.queue.push_cancellable_with(at, || Pending::Timer { node, epoch, id: timer })
    }
    fn cancel_timer(&mut self, key: TimerKey) {
        // Keys come only from `set_timer`; a stale key does nothing.
        self.world.queue.cancel(key);
    }
    fn emit(&mut self, event: Event) {
        self.world.sink.take(self.world.now, Some(NodeId(self.id)), event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::NetworkModel;

    /// The same kind name at two addresses.
    static PING: [u8; 4] = *b"ping";

    #[derive(Clone, Debug)]
    struct Ping(bool);

    impl Message for Ping {
        fn wire_size(&self) -> u32 {
            1
        }
        fn kind(&self) -> &'static str {
            if self.0 { "ping" } else { std::str::from_utf8(&PING).expect("ascii") }
        }
    }

    /// Node 0 pings node 1 at start; a node answers the first ping it gets.
    /// With `takes`, a node takes every message offered to it.
    #[derive(Default)]
    struct Echo {
        got: u32,
        takes: bool,
    }

    impl Node for Echo {
        type Msg = Ping;
        fn on_start(&mut self, cx: &mut dyn Context<Ping>) {
            if cx.id() == NodeId(0) {
                cx.send(NodeId(1), Ping(true));
            }
        }
        fn absorb(&mut self, _: Offer<'_, Ping>) -> bool {
            self.takes
        }
        fn on_message(&mut self, cx: &mut dyn Context<Ping>, from: NodeId, _: Ping) {
            self.got += 1;
            if self.got == 1 {
                cx.send(from, Ping(from == NodeId(1)));
            }
        }
        fn on_timer(&mut self, _: &mut dyn Context<Ping>, _: TimerId) {}
    }

    fn run(adjacency: &[Vec<u32>]) -> SimStats {
        let net = Net::new(adjacency, vec![0; 2], NetworkModel::default(), derive_rng(1, "net", 0));
        let mut sim = Simulation::new(1, vec![Echo::default(), Echo::default()], net, vec![], Vec::new());
        sim.run_until(SimTime::MAX, &mut |_| {});
        sim.stats().clone()
    }

    #[test]
    fn a_reply_crosses_a_link_only_if_it_goes_both_ways() {
        // 0 → 1, 1 → 0, 0 → 1.
        let both = run(&[vec![1], vec![0]]);
        assert_eq!((both.messages_delivered, both.dropped_unlinked), (3, 0));
        // Node 1 is a peer of node 0, not the reverse: its reply is dropped.
        let one_way = run(&[vec![1], vec![]]);
        assert_eq!((one_way.messages_delivered, one_way.dropped_unlinked), (1, 1));
    }

    #[test]
    fn a_message_is_offered_only_if_it_arrives_by_the_end_of_the_run() {
        let model = NetworkModel {
            latency: crate::net::LatencyModel::Constant { ms: 100.0 },
            ..NetworkModel::default()
        };
        let sim = || {
            let net = Net::new(&[vec![1], vec![0]], vec![0; 2], model.clone(), derive_rng(1, "net", 0));
            let taker = || Echo { got: 0, takes: true };
            Simulation::new(1, vec![taker(), taker()], net, vec![], Vec::new())
        };
        let counts =
            |s: &Simulation<Echo, Vec<_>>| (s.stats().messages_delivered, s.stats().resolved_at_send);
        // A run that ends before the ping arrives (at 100 ms): nothing is
        // delivered, so nothing is offered either. The next run delivers
        // the ping through the queue; the reply, sent then and arriving at
        // the run's end (200 ms), is taken when sent.
        let mut s = sim();
        s.run_until(SimTime::from_millis(50), &mut |_| {});
        assert_eq!(counts(&s), (0, 0));
        s.run_until(SimTime::from_millis(200), &mut |_| {});
        assert_eq!(counts(&s), (2, 1));
        assert_eq!((s.nodes()[0].got, s.nodes()[1].got), (0, 1));
        // A run long enough: the ping is taken when sent (so never answered).
        let mut s = sim();
        s.run_until(SimTime::from_millis(200), &mut |_| {});
        assert_eq!(counts(&s), (1, 1));
        assert_eq!(s.nodes()[1].got, 0);
        // Stepping knows no end: nothing is offered; ping, reply, reply.
        let mut s = sim();
        while s.step() {}
        assert_eq!(counts(&s), (3, 0));
    }

    /// Each node, at start and on each of its first few messages, sends
    /// one message to a chosen set of its peers: with one `send_to_peers`
    /// (`fan_out`) or one `send` each. It takes every third offer, and
    /// records what it is handed.
    struct Spreader {
        fan_out: bool,
        sent: u32,
        offers: u32,
        got: Vec<(SimTime, NodeId)>,
    }

    impl Spreader {
        fn spread(&mut self, cx: &mut dyn Context<Ping>) {
            if self.sent == 4 {
                return;
            }
            self.sent += 1;
            let (n, me) = (cx.peer_count() as u32, cx.id().0);
            // Skip some peers, and name one index past the end.
            let chosen: Vec<u32> = (0..=n).filter(|k| (k + me + self.sent) % 3 != 0).collect();
            let msg = Ping(self.sent % 2 == 0);
            if self.fan_out {
                cx.send_to_peers(&chosen, msg);
            } else {
                for &k in chosen.iter().filter(|&&k| k < n) {
                    let to = cx.peer(k as usize);
                    cx.send(to, msg.clone());
                }
            }
        }
    }

    impl Node for Spreader {
        type Msg = Ping;
        fn on_start(&mut self, cx: &mut dyn Context<Ping>) {
            self.spread(cx);
        }
        fn absorb(&mut self, _: Offer<'_, Ping>) -> bool {
            self.offers += 1;
            self.offers % 3 == 0
        }
        fn on_message(&mut self, cx: &mut dyn Context<Ping>, from: NodeId, _: Ping) {
            self.got.push((cx.now(), from));
            self.spread(cx);
        }
        fn on_timer(&mut self, _: &mut dyn Context<Ping>, _: TimerId) {}
    }

    #[test]
    fn a_fan_out_is_exactly_one_send_per_peer_in_order() {
        // Heavy-tailed latencies drawn ahead and limited bandwidth: a send
        // out of order would draw another delay and queue behind another
        // upload.
        let model = NetworkModel {
            latency: crate::net::LatencyModel::Pareto { mean_ms: 80.0, spread_ms: 20.0 },
            bandwidth: crate::net::BandwidthModel::Uniform { upload_bps: 8_000, download_bps: 8_000 },
            ..NetworkModel::default()
        };
        let n = 40u32;
        let adjacency: Vec<Vec<u32>> =
            (0..n).map(|a| (0..n).filter(|&b| b != a && (a * b + a + b) % 4 != 0).collect()).collect();
        let run = |fan_out: bool| {
            let net = Net::new(&adjacency, vec![0; n as usize], model.clone(), derive_rng(3, "net", 0));
            let nodes = (0..n).map(|_| Spreader { fan_out, sent: 0, offers: 0, got: Vec::new() }).collect();
            let mut sim = Simulation::new(3, nodes, net, vec![], Vec::new());
            sim.run_until(SimTime::from_secs(600), &mut |_| {});
            let got: Vec<_> = sim.nodes().iter().map(|s| (s.offers, s.got.clone())).collect();
            (sim.stats().clone(), got)
        };
        let (loop_stats, loop_got) = run(false);
        let (fan_stats, fan_got) = run(true);
        assert!(
            loop_stats.resolved_at_send > 0 && loop_stats.messages_delivered > loop_stats.resolved_at_send
        );
        assert_eq!(fan_stats, loop_stats);
        assert_eq!(fan_got, loop_got);
    }

    #[test]
    fn kinds_are_counted_by_name_not_address() {
        let stats = run(&[vec![1], vec![0]]);
        assert_eq!(stats.by_kind.len(), 1);
        assert_eq!((stats.by_kind[0].kind, stats.by_kind[0].count, stats.by_kind[0].bytes), ("ping", 3, 3));
    }
}
