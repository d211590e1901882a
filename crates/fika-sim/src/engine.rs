//! The simulation runtime: drives [`Node`]s in virtual time.
//!
//! One loop pops the earliest event — a start, a message arrival, a timer, a
//! fault — and hands it to its node through a [`Context`] that schedules
//! what the node does. Nothing here reads a clock or iterates a hash map.

use std::time::Duration;

use fika_core::{
    Context, Event, EventSink, Message, Node, NodeId, NodeRng, SimTime, TimerId, TimerKey, derive_rng,
};

use crate::fault::{Fault, FaultAction};
use crate::net::{LinkOverride, Net, Route};
use crate::queue::EventQueue;

enum Pending<M> {
    Start(u32),
    Deliver { from: u32, to: u32, epoch: u32, msg: M },
    Timer { node: u32, epoch: u32, id: TimerId },
    Fault(u32),
}

/// Counters of a run.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct SimStats {
    /// Events taken from the queue and handled (tombstones excluded).
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

struct World<M, S> {
    now: SimTime,
    queue: EventQueue<Pending<M>>,
    net: Net,
    sink: S,
    stats: SimStats,
    faults: Vec<Fault>,
    /// Whether each node is running.
    up: Vec<bool>,
    /// Incremented at each crash; timers and messages of an older epoch are void.
    epoch: Vec<u32>,
}

/// A network of nodes of type `N` in virtual time, emitting into `S`.
pub struct Simulation<N: Node, S: EventSink> {
    nodes: Vec<N>,
    rngs: Vec<NodeRng>,
    world: World<N::Msg, S>,
}

impl<N: Node, S: EventSink> Simulation<N, S> {
    /// Builds a simulation; every node starts at time zero, in id order.
    ///
    /// `net` must have as many nodes as `nodes`. Faults are scheduled now.
    pub fn new(seed: u64, nodes: Vec<N>, net: Net, faults: Vec<Fault>, sink: S) -> Self {
        assert_eq!(nodes.len(), net.len(), "one network slot per node");
        let n = nodes.len();
        let rngs = (0..n).map(|i| derive_rng(seed, "node", i as u64)).collect();
        let mut queue = EventQueue::new();
        for i in 0..nodes.len() {
            queue.push(SimTime::ZERO, Pending::Start(i as u32));
        }
        for (i, f) in faults.iter().enumerate() {
            queue.push(f.at, Pending::Fault(i as u32));
        }
        Simulation {
            nodes,
            rngs,
            world: World {
                now: SimTime::ZERO,
                queue,
                net,
                sink,
                stats: SimStats::default(),
                faults,
                up: vec![true; n],
                epoch: vec![0; n],
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
        self.world.up.get(id.index()).copied().unwrap_or(false)
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
        while let Some(t) = self.world.queue.peek_time() {
            if t > until {
                break;
            }
            self.step();
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
        debug_assert!(t >= self.world.now, "time never goes back");
        self.world.now = t;
        self.world.stats.events += 1;
        match item {
            Pending::Start(i) => self.with_node(i, |n, cx| n.on_start(cx)),
            Pending::Deliver { from, to, epoch, msg } => {
                let w = &self.world;
                if !w.up[to as usize] || w.epoch[to as usize] != epoch {
                    self.world.stats.dropped_down += 1;
                } else if !self.world.net.same_side(from, to) {
                    self.world.stats.dropped_partition += 1;
                } else {
                    self.world.stats.messages_delivered += 1;
                    self.with_node(to, |n, cx| n.on_message(cx, NodeId(from), msg));
                }
            }
            Pending::Timer { node, epoch, id } => {
                let w = &self.world;
                if w.up[node as usize] && w.epoch[node as usize] == epoch {
                    self.world.stats.timers += 1;
                    self.with_node(node, |n, cx| n.on_timer(cx, id));
                }
            }
            Pending::Fault(i) => self.apply_fault(i as usize),
        }
        true
    }

    fn with_node(&mut self, i: u32, f: impl FnOnce(&mut N, &mut dyn Context<N::Msg>)) {
        let rng = &mut self.rngs[i as usize];
        let mut cx = Cx { id: i, rng, world: &mut self.world };
        f(&mut self.nodes[i as usize], &mut cx);
    }

    fn apply_fault(&mut self, i: usize) {
        let action = self.world.faults[i].action.clone();
        let now = self.world.now;
        match action {
            FaultAction::Crash(n) => {
                if self.world.up.get(n.index()).copied().unwrap_or(false) {
                    self.world.up[n.index()] = false;
                    self.world.epoch[n.index()] = self.world.epoch[n.index()].wrapping_add(1);
                    self.nodes[n.index()].on_crash();
                    self.world.sink.record(now, Some(n), &Event::new("sim.crash"));
                }
            }
            FaultAction::Restart(n) => {
                if self.world.up.get(n.index()).is_some_and(|up| !up) {
                    self.world.up[n.index()] = true;
                    self.world.sink.record(now, Some(n), &Event::new("sim.restart"));
                    self.with_node(n.0, |node, cx| node.on_restart(cx));
                }
            }
            FaultAction::Partition(groups) => {
                let part = &mut self.world.net.partition;
                part.iter_mut().for_each(|p| *p = 0);
                for (g, members) in groups.iter().enumerate() {
                    for m in members {
                        if let Some(p) = part.get_mut(m.index()) {
                            *p = (g + 1) as u16;
                        }
                    }
                }
                let ev = Event::new("sim.partition").with("groups", groups.len());
                self.world.sink.record(now, None, &ev);
            }
            FaultAction::Heal => {
                self.world.net.partition.iter_mut().for_each(|p| *p = 0);
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

struct Cx<'a, M, S> {
    id: u32,
    rng: &'a mut NodeRng,
    world: &'a mut World<M, S>,
}

impl<M: Message, S: EventSink> Context<M> for Cx<'_, M, S> {
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
        NodeId(self.world.net.peers(self.id)[i])
    }
    fn send(&mut self, to: NodeId, msg: M) {
        let w = &mut *self.world;
        let bytes = msg.wire_size();
        let stats = &mut w.stats;
        stats.messages_sent += 1;
        stats.bytes_sent += u64::from(bytes);
        let kind = msg.kind();
        match stats.by_kind.iter_mut().find(|k| std::ptr::eq(k.kind, kind) || k.kind == kind) {
            Some(k) => {
                k.count += 1;
                k.bytes += u64::from(bytes);
            }
            None => stats.by_kind.push(KindStats { kind, count: 1, bytes: u64::from(bytes) }),
        }
        if to.index() >= w.net.len() {
            stats.dropped_unlinked += 1;
            return;
        }
        match w.net.route(w.now.as_nanos(), self.id, to.0, bytes) {
            Route::Arrives(at) => {
                // The receiver's epoch is checked again at arrival: a crash
                // in between loses the message.
                let epoch = w.epoch[to.index()];
                w.queue.push(SimTime(at), Pending::Deliver { from: self.id, to: to.0, epoch, msg });
            }
            Route::NotLinked => stats.dropped_unlinked += 1,
            Route::Partitioned => stats.dropped_partition += 1,
            Route::Lost => stats.dropped_loss += 1,
        }
    }
    fn set_timer(&mut self, after: Duration, timer: TimerId) -> TimerKey {
        let at = self.world.now + after;
        let epoch = self.world.epoch[self.id as usize];
        let item = Pending::Timer { node: self.id, epoch, id: timer };
        self.world.queue.push_cancellable(at, item)
    }
    fn cancel_timer(&mut self, key: TimerKey) {
        // Keys come only from `set_timer`; a stale key does nothing.
        self.world.queue.cancel(key);
    }
    fn emit(&mut self, event: Event) {
        self.world.sink.record(self.world.now, Some(NodeId(self.id)), &event);
    }
}
