//! A [`Context`] for unit tests that drive one node by hand: the test sets
//! the time, and everything the node does — messages, timers, events — is
//! recorded for the test to inspect. No runtime is involved.

use std::time::Duration;

use crate::{Context, Event, Node, NodeId, NodeRng, SimTime, TimerId, TimerKey, derive_rng};

/// A recording context for one node with a fixed list of peers.
pub struct TestContext<M> {
    /// The node's id.
    pub id: NodeId,
    /// Now, as the test sets it.
    pub now: SimTime,
    /// The node's random stream (`derive_rng(1, "node", id)` at first).
    pub rng: NodeRng,
    /// The node's peers, in the order `peer(i)` returns them.
    pub peers: Vec<NodeId>,
    /// Messages sent, oldest first.
    pub sent: Vec<(NodeId, M)>,
    /// Timers set (delay, id), oldest first; the key of the `k`-th has slot `k + 1`.
    pub timers: Vec<(Duration, TimerId)>,
    /// Events emitted, oldest first.
    pub events: Vec<Event>,
}

impl<M> TestContext<M> {
    /// Node `id` with peers `peers`, at time zero.
    pub fn new(id: u32, peers: &[u32]) -> Self {
        TestContext {
            id: NodeId(id),
            now: SimTime::ZERO,
            rng: derive_rng(1, "node", u64::from(id)),
            peers: peers.iter().map(|p| NodeId(*p)).collect(),
            sent: Vec::new(),
            timers: Vec::new(),
            events: Vec::new(),
        }
    }

    /// Moves time forward by `by`.
    pub fn advance(&mut self, by: Duration) {
        self.now += by;
    }

    /// Takes the messages sent to `to`, oldest first, leaving the others.
    pub fn take_sent_to(&mut self, to: NodeId) -> Vec<M> {
        let (mine, rest): (Vec<_>, Vec<_>) = self.sent.drain(..).partition(|(t, _)| *t == to);
        self.sent = rest;
        mine.into_iter().map(|(_, m)| m).collect()
    }
}

impl<M> Context<M> for TestContext<M> {
    fn id(&self) -> NodeId {
        self.id
    }
    fn now(&self) -> SimTime {
        self.now
    }
    fn rng(&mut self) -> &mut NodeRng {
        &mut self.rng
    }
    fn peer_count(&self) -> usize {
        self.peers.len()
    }
    fn peer(&self, i: usize) -> NodeId {
        self.peers[i]
    }
    fn send(&mut self, to: NodeId, msg: M) {
        self.sent.push((to, msg));
    }
    fn set_timer(&mut self, after: Duration, timer: TimerId) -> TimerKey {
        self.timers.push((after, timer));
        TimerKey { slot: self.timers.len() as u32, generation: 0 }
    }
    fn cancel_timer(&mut self, _key: TimerKey) {}
    fn emit(&mut self, event: Event) {
        self.events.push(event);
    }
}

/// The node inside, never offered a message when it is sent (its
/// [`Node::absorb`] refuses): every message goes through the runtime's
/// queue. The reference a node that takes messages early is compared with.
pub struct Unoffered<N>(pub N);

impl<N: Node> Node for Unoffered<N> {
    type Msg = N::Msg;
    fn on_start(&mut self, cx: &mut dyn Context<N::Msg>) {
        self.0.on_start(cx);
    }
    fn on_message(&mut self, cx: &mut dyn Context<N::Msg>, from: NodeId, msg: N::Msg) {
        self.0.on_message(cx, from, msg);
    }
    fn on_timer(&mut self, cx: &mut dyn Context<N::Msg>, timer: TimerId) {
        self.0.on_timer(cx, timer);
    }
    fn on_crash(&mut self) {
        self.0.on_crash();
    }
    fn on_restart(&mut self, cx: &mut dyn Context<N::Msg>) {
        self.0.on_restart(cx);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_what_the_node_does() {
        let mut cx: TestContext<u8> = TestContext::new(4, &[2, 7]);
        assert_eq!((cx.id(), cx.peer_count(), cx.peer(1)), (NodeId(4), 2, NodeId(7)));
        assert_eq!(cx.peer_index(NodeId(7)), Some(1));
        cx.send(NodeId(2), 1);
        cx.send(NodeId(7), 2);
        cx.send(NodeId(2), 3);
        let k = cx.set_timer(Duration::from_secs(5), 9);
        cx.emit(Event::new("x"));
        cx.advance(Duration::from_secs(3));
        assert_eq!(cx.now(), SimTime::from_secs(3));
        assert_eq!(k.slot, 1);
        assert_eq!(cx.timers, vec![(Duration::from_secs(5), 9)]);
        assert_eq!(cx.take_sent_to(NodeId(2)), vec![1, 3]);
        assert_eq!(cx.sent, vec![(NodeId(7), 2)]);
        assert_eq!(cx.events.len(), 1);
    }
}
