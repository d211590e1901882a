//! The sans-IO node API.
//!
//! A [`Node`] is a state machine with three inputs — start, a message from a
//! peer, a timer — that acts on the world only through a [`Context`]. The
//! simulator and the emulator are two implementations of `Context`, so the
//! same protocol code runs in both.

use std::fmt;
use std::time::Duration;

use crate::{Event, NodeRng, SimTime};

/// The index of a node in its network (dense, from 0).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
pub struct NodeId(pub u32);

impl NodeId {
    /// The id as a `usize` index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "n{}", self.0)
    }
}

/// A node's own label for a timer, handed back in [`Node::on_timer`].
pub type TimerId = u64;

/// A handle to a scheduled timer, used to cancel it.
///
/// Cancelling is O(1): the runtime marks the entry dead (a tombstone) and
/// skips it when it comes up, never searching its queue.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct TimerKey {
    /// Slot of the scheduled entry.
    pub slot: u32,
    /// Generation of the slot when the timer was set; stale keys do nothing.
    pub generation: u32,
}

/// A message between nodes.
///
/// Cloning must be cheap: large payloads (blocks) live behind an `Arc` and
/// are shared, never copied, however many peers receive them.
pub trait Message: Clone + 'static {
    /// Bytes this message takes on the wire, as the real protocol encodes it.
    /// The bandwidth model charges this many bytes.
    fn wire_size(&self) -> u32;
    /// A short name of the message type, e.g. `"inv"` (for statistics).
    fn kind(&self) -> &'static str;
    /// A hint that the message is handled soon: read the shared payload its
    /// receiver reads first (see [`Node::warm`]). The default does nothing.
    fn warm(&self) {}
}

/// A protocol state machine.
///
/// Nodes never block, spawn threads or read clocks; everything they learn
/// comes in through these methods and everything they do goes out through
/// `cx`.
pub trait Node {
    /// The messages this node exchanges with its peers.
    type Msg: Message;

    /// Called once when the run starts (and again after a restart unless
    /// [`Node::on_restart`] is overridden).
    fn on_start(&mut self, cx: &mut dyn Context<Self::Msg>);

    /// Called when a message from peer `from` arrives.
    fn on_message(&mut self, cx: &mut dyn Context<Self::Msg>, from: NodeId, msg: Self::Msg);

    /// Called when a timer set with [`Context::set_timer`] fires.
    fn on_timer(&mut self, cx: &mut dyn Context<Self::Msg>, timer: TimerId);

    /// Called when the node crashes: drop volatile state (what a real process
    /// loses), keep what it would have persisted. Its timers are cancelled
    /// and messages to it are lost while it is down.
    fn on_crash(&mut self) {}

    /// Called when a crashed node comes back. Defaults to [`Node::on_start`].
    fn on_restart(&mut self, cx: &mut dyn Context<Self::Msg>) {
        self.on_start(cx);
    }

    /// Whether [`Node::warm`] is worth calling: for nodes whose state is
    /// spread over the heap, not for small nodes a simulator holds inline.
    /// The default is no.
    fn warms(&self) -> bool {
        false
    }

    /// A hint that an event for this node comes soon: read what handling
    /// one reads first, so that it is in cache by then (a simulator with
    /// many nodes waits on memory more than it computes). Changes nothing;
    /// the default does nothing. Called only if [`Node::warms`].
    fn warm(&self) {}

    /// As [`Node::warm`], knowing the message that comes: a node may then
    /// read more of its state for a message whose handling reads more. The
    /// default is [`Node::warm`]. Called only if [`Node::warms`].
    fn warm_message(&self, msg: &Self::Msg) {
        let _ = msg;
        self.warm();
    }

    /// A hint that a message is offered to this node soon (see
    /// [`Node::absorb`]): read what taking one reads. Changes nothing; the
    /// default fetches the node's first two cache lines.
    fn warm_offer(&self) {
        crate::hint::prefetch_front(self);
    }

    /// Offered a message when it is sent rather than when it arrives:
    /// whether the node takes it now. Taking it is a promise about the
    /// message's arrival at `offer.at`: handling it then would send nothing,
    /// set no timer and emit nothing, and whatever it would change, the
    /// node changes itself — dated `offer.at`, so that no handler before
    /// that time sees it. The usual case is an announcement of something
    /// the node holds or has asked for already, which at most records who
    /// announced it.
    ///
    /// A runtime offers a message only when nothing (a crash, a partition)
    /// can stop its delivery; a message refused is then delivered at
    /// `offer.at` for sure. The simulator counts a message taken as one
    /// delivered, and charges bandwidth and counters as for any other, so
    /// floods of redundant announcements cost no queue traffic; the
    /// emulator never offers. Refuse when unsure; the default always does.
    fn absorb(&mut self, offer: Offer<'_, Self::Msg>) -> bool {
        let _ = offer;
        false
    }
}

/// A message offered to its receiver when it is sent (see [`Node::absorb`]).
#[derive(Debug)]
pub struct Offer<'a, M> {
    /// The sender.
    pub from: NodeId,
    /// The sender's index among the receiver's peers, as
    /// [`Context::peer_index`] would answer, if the runtime knows it.
    pub from_index: Option<usize>,
    /// The message.
    pub msg: &'a M,
    /// When it is sent: the current time.
    pub now: SimTime,
    /// When it arrives.
    pub at: SimTime,
}

/// What a node may do to the world.
pub trait Context<M> {
    /// This node's id.
    fn id(&self) -> NodeId;
    /// The current time (virtual in simulation).
    fn now(&self) -> SimTime;
    /// This node's random stream, derived from the run seed and its id.
    fn rng(&mut self) -> &mut NodeRng;
    /// How many peers this node is linked to.
    fn peer_count(&self) -> usize;
    /// The `i`-th peer (`i < peer_count()`), in a stable order.
    fn peer(&self, i: usize) -> NodeId;
    /// The index `i` with `peer(i) == peer`, if `peer` is a peer. A node's
    /// peers are fixed for its life, so an index stays valid; runtimes
    /// that keep peers sorted answer by binary search.
    fn peer_index(&self, peer: NodeId) -> Option<usize> {
        (0..self.peer_count()).find(|&i| self.peer(i) == peer)
    }
    /// Sends `msg` to peer `to`. Delivery follows the link model (latency,
    /// bandwidth, loss, partitions); a message to a non-peer is dropped.
    fn send(&mut self, to: NodeId, msg: M);
    /// Sends a copy of `msg` to each peer whose index is in `peers` (each
    /// `< peer_count()`; others are skipped), in the order given: exactly
    /// `send(peer(k), msg.clone())` for each `k`, which is what it does by
    /// default. An announcement goes to most of a node's
    /// peers at once; a simulation does the fan-out with less work per
    /// peer than one `send` each.
    fn send_to_peers(&mut self, peers: &[u32], msg: M)
    where
        M: Clone,
    {
        let n = self.peer_count();
        for &k in peers.iter().filter(|&&k| (k as usize) < n) {
            let to = self.peer(k as usize);
            self.send(to, msg.clone());
        }
    }
    /// Schedules [`Node::on_timer`] with `timer` after `after`.
    fn set_timer(&mut self, after: Duration, timer: TimerId) -> TimerKey;
    /// Cancels a timer; a key of a timer that already fired does nothing.
    fn cancel_timer(&mut self, key: TimerKey);
    /// Records an observation (log line, metric sample, report entry).
    fn emit(&mut self, event: Event);
}

impl<M: Message> Node for Box<dyn Node<Msg = M>> {
    type Msg = M;
    fn on_start(&mut self, cx: &mut dyn Context<M>) {
        (**self).on_start(cx);
    }
    fn on_message(&mut self, cx: &mut dyn Context<M>, from: NodeId, msg: M) {
        (**self).on_message(cx, from, msg);
    }
    fn on_timer(&mut self, cx: &mut dyn Context<M>, timer: TimerId) {
        (**self).on_timer(cx, timer);
    }
    fn on_crash(&mut self) {
        (**self).on_crash();
    }
    fn on_restart(&mut self, cx: &mut dyn Context<M>) {
        (**self).on_restart(cx);
    }
    fn warms(&self) -> bool {
        (**self).warms()
    }
    fn warm(&self) {
        (**self).warm();
    }
    fn warm_message(&self, msg: &M) {
        (**self).warm_message(msg);
    }
    fn absorb(&mut self, offer: Offer<'_, M>) -> bool {
        (**self).absorb(offer)
    }
    fn warm_offer(&self) {
        (**self).warm_offer();
    }
}
