//! Composing protocols into one node.
//!
//! A node kind is built from protocol parts — a merge-mining miner is a
//! Bitcoin full node and a sidechain node; a pegnatory is a sidechain node,
//! a Bitcoin client and a PowHSM — each written against its own message type.
//! [`SubContext`] lets a part run inside a composite node: it wraps the
//! outer context, wraps the part's messages into the composite message
//! type, shows the part only the peers that speak its protocol, and tags
//! its timers so the composite can route them back.

use std::time::Duration;

use crate::{Context, Event, NodeId, NodeRng, SimTime, TimerId, TimerKey};

/// Bits of a timer id reserved for the part's tag (the top four).
pub const TAG_SHIFT: u32 = 60;

/// Splits a composite timer id into (part tag, part's own id).
pub fn split_timer(id: TimerId) -> (u8, TimerId) {
    ((id >> TAG_SHIFT) as u8, id & ((1 << TAG_SHIFT) - 1))
}

/// A context for one protocol part of a composite node.
pub struct SubContext<'a, Outer, Inner> {
    outer: &'a mut dyn Context<Outer>,
    wrap: fn(Inner) -> Outer,
    peers: &'a [NodeId],
    tag: u8,
}

impl<'a, Outer, Inner> SubContext<'a, Outer, Inner> {
    /// A context showing `peers` (the part's own peers, a subset of the
    /// node's), wrapping messages with `wrap`, tagging timers with `tag`
    /// (0..16).
    pub fn new(
        outer: &'a mut dyn Context<Outer>,
        wrap: fn(Inner) -> Outer,
        peers: &'a [NodeId],
        tag: u8,
    ) -> Self {
        SubContext { outer, wrap, peers, tag: tag & 0x0f }
    }
}

impl<Outer, Inner> Context<Inner> for SubContext<'_, Outer, Inner> {
    fn id(&self) -> NodeId {
        self.outer.id()
    }
    fn now(&self) -> SimTime {
        self.outer.now()
    }
    fn rng(&mut self) -> &mut NodeRng {
        self.outer.rng()
    }
    fn peer_count(&self) -> usize {
        self.peers.len()
    }
    fn peer(&self, i: usize) -> NodeId {
        self.peers[i]
    }
    fn send(&mut self, to: NodeId, msg: Inner) {
        self.outer.send(to, (self.wrap)(msg));
    }
    fn set_timer(&mut self, after: Duration, timer: TimerId) -> TimerKey {
        let id = (u64::from(self.tag) << TAG_SHIFT) | (timer & ((1 << TAG_SHIFT) - 1));
        self.outer.set_timer(after, id)
    }
    fn cancel_timer(&mut self, key: TimerKey) {
        self.outer.cancel_timer(key);
    }
    fn emit(&mut self, event: Event) {
        self.outer.emit(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq)]
    enum Both {
        A(u8),
    }

    #[test]
    fn wraps_messages_filters_peers_and_tags_timers() {
        let mut outer = crate::testing::TestContext::new(9, &[0, 1, 2]);
        let peers = [NodeId(2)];
        {
            let mut cx = SubContext::new(&mut outer, Both::A, &peers, 3);
            assert_eq!(cx.peer_count(), 1);
            assert_eq!(cx.peer(0), NodeId(2));
            cx.send(NodeId(2), 7u8);
            cx.set_timer(Duration::from_secs(1), 42);
        }
        assert_eq!(outer.sent, vec![(NodeId(2), Both::A(7))]);
        assert_eq!(split_timer(outer.timers[0].1), (3, 42));
    }
}
