//! The event queue: a monotone radix heap keyed by `(time, sequence)`.
//!
//! Ties at equal times are broken by the sequence number given at insertion,
//! never by address or hash, so a run is reproducible bit for bit.
//!
//! A discrete-event simulation only ever schedules at or after the current
//! time, so the queue can be a *radix heap*: entries sit in buckets by the
//! highest bit in which their key differs from the last key popped. A push
//! is O(1); a pop rescans one bucket and moves its entries to lower ones, so
//! each entry moves at most 128 times and in practice a handful. Entries
//! (payload included) live in the buckets, which are read sequentially.
//!
//! Cancellable entries get a slot in a small generation table. Cancelling
//! bumps the slot's generation in O(1) — a tombstone, never a search — and
//! the dead entry is dropped when it comes up.

use fika_core::{SimTime, TimerKey};

struct Entry<T> {
    time: u64,
    seq: u64,
    /// Cancellation slot, or `NO_SLOT`.
    slot: u32,
    generation: u32,
    item: T,
}

impl<T> Entry<T> {
    #[inline]
    fn key(&self) -> u128 {
        (u128::from(self.time) << 64) | u128::from(self.seq)
    }
}

const NO_SLOT: u32 = u32::MAX;
const BUCKETS: usize = 129;

/// A priority queue of timed items with O(1) cancellation.
///
/// Items must be scheduled no earlier than the last item popped; an earlier
/// time is treated as that time (the engine never asks for the past).
pub struct EventQueue<T> {
    buckets: Vec<Vec<Entry<T>>>,
    /// Bit `i` set when bucket `i + 1` is non-empty (bucket 0 tracked by its length).
    nonempty: u128,
    last: u128,
    /// Current generation of each cancellation slot.
    generations: Vec<u32>,
    free: Vec<u32>,
    next_seq: u64,
    live: usize,
    cancel_probes: u64,
}

impl<T> Default for EventQueue<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> EventQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        EventQueue {
            buckets: (0..BUCKETS).map(|_| Vec::new()).collect(),
            nonempty: 0,
            last: 0,
            generations: Vec::new(),
            free: Vec::new(),
            next_seq: 0,
            live: 0,
            cancel_probes: 0,
        }
    }

    /// Number of items scheduled and not cancelled.
    pub fn len(&self) -> usize {
        self.live
    }

    /// Whether no live item is scheduled.
    pub fn is_empty(&self) -> bool {
        self.live == 0
    }

    /// Number of generation-table entries inspected by all `cancel` calls so
    /// far — one per call, whatever the queue's size (so tests can prove it).
    pub fn cancel_probes(&self) -> u64 {
        self.cancel_probes
    }

    #[inline]
    fn place(&mut self, e: Entry<T>) {
        let x = e.key() ^ self.last;
        let b = if x == 0 { 0 } else { 128 - x.leading_zeros() as usize };
        self.buckets[b].push(e);
        if b > 0 {
            self.nonempty |= 1u128 << (b - 1);
        }
    }

    fn insert(&mut self, time: SimTime, slot: u32, generation: u32, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live += 1;
        let last_time = (self.last >> 64) as u64;
        let time = time.as_nanos().max(last_time);
        self.place(Entry { time, seq, slot, generation, item });
    }

    /// Schedules `item` at `time`; it cannot be cancelled.
    pub fn push(&mut self, time: SimTime, item: T) {
        self.insert(time, NO_SLOT, 0, item);
    }

    /// Schedules `item` at `time`; returns a key that can cancel it.
    pub fn push_cancellable(&mut self, time: SimTime, item: T) -> TimerKey {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.generations.push(0);
                (self.generations.len() - 1) as u32
            }
        };
        let generation = self.generations[slot as usize];
        self.insert(time, slot, generation, item);
        TimerKey { slot, generation }
    }

    /// Cancels an item scheduled with [`EventQueue::push_cancellable`];
    /// returns whether it was still pending. O(1).
    pub fn cancel(&mut self, key: TimerKey) -> bool {
        self.cancel_probes += 1;
        match self.generations.get_mut(key.slot as usize) {
            Some(g) if *g == key.generation => {
                // The slot stays taken until the dead entry comes up.
                *g = g.wrapping_add(1);
                self.live -= 1;
                true
            }
            _ => false,
        }
    }

    /// Whether an entry is live; frees its slot if it is cancellable.
    fn take_slot(&mut self, slot: u32, generation: u32) -> bool {
        if slot == NO_SLOT {
            return true;
        }
        let g = &mut self.generations[slot as usize];
        let live = *g == generation;
        if live {
            // Invalidate the key of the entry now leaving the queue.
            *g = g.wrapping_add(1);
        }
        self.free.push(slot);
        live
    }

    /// Brings the smallest key into bucket 0; false if the queue is empty.
    fn settle(&mut self) -> bool {
        if !self.buckets[0].is_empty() {
            return true;
        }
        if self.nonempty == 0 {
            return false;
        }
        let b = self.nonempty.trailing_zeros() as usize + 1;
        let mut entries = std::mem::take(&mut self.buckets[b]);
        self.nonempty &= !(1u128 << (b - 1));
        self.last = entries.iter().map(Entry::key).min().unwrap_or(self.last);
        for e in entries.drain(..) {
            self.place(e);
        }
        // Keep the bucket's allocation for reuse.
        if self.buckets[b].is_empty() {
            self.buckets[b] = entries;
        }
        true
    }

    fn is_live(&self, e: &Entry<T>) -> bool {
        e.slot == NO_SLOT || self.generations[e.slot as usize] == e.generation
    }

    /// The time of the earliest live item, dropping dead entries on the way.
    pub fn peek_time(&mut self) -> Option<SimTime> {
        loop {
            if !self.settle() {
                return None;
            }
            let e = &self.buckets[0][0];
            if self.is_live(e) {
                return Some(SimTime(e.time));
            }
            if let Some(dead) = self.buckets[0].pop() {
                self.take_slot(dead.slot, dead.generation);
            }
        }
    }

    /// Removes and returns the earliest live item.
    pub fn pop(&mut self) -> Option<(SimTime, T)> {
        loop {
            if !self.settle() {
                return None;
            }
            // Keys are unique, so bucket 0 holds exactly one entry.
            let e = self.buckets[0].pop()?;
            if self.take_slot(e.slot, e.generation) {
                self.live -= 1;
                return Some((SimTime(e.time), e.item));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn equal_times_pop_in_insertion_order() {
        let mut q = EventQueue::new();
        for i in 0..100u32 {
            q.push(SimTime(5), i);
        }
        q.push(SimTime(1), 1000);
        assert_eq!(q.pop(), Some((SimTime(1), 1000)));
        for i in 0..100u32 {
            assert_eq!(q.pop(), Some((SimTime(5), i)));
        }
        assert_eq!(q.pop(), None);
    }

    #[test]
    fn cancel_is_a_tombstone_not_a_search() {
        let mut q = EventQueue::new();
        let n = 200_000u64;
        let keys: Vec<_> = (0..n).map(|i| q.push_cancellable(SimTime(n - i), i)).collect();
        for k in keys.iter().step_by(2) {
            assert!(q.cancel(*k));
        }
        // One probe per cancel, independent of the 200k entries queued.
        assert_eq!(q.cancel_probes(), n / 2);
        assert_eq!(q.len() as u64, n / 2);
        // A second cancel of the same key does nothing.
        assert!(!q.cancel(keys[0]));
        let mut prev = SimTime::ZERO;
        let mut count = 0;
        while let Some((t, i)) = q.pop() {
            assert!(t >= prev);
            assert_eq!(i % 2, 1, "cancelled item {i} came out");
            prev = t;
            count += 1;
        }
        assert_eq!(count, n / 2);
    }

    #[test]
    fn stale_key_cannot_cancel_a_reused_slot() {
        let mut q = EventQueue::new();
        let k = q.push_cancellable(SimTime(1), "a");
        assert_eq!(q.pop(), Some((SimTime(1), "a")));
        let _k2 = q.push_cancellable(SimTime(2), "b");
        assert!(!q.cancel(k));
        assert_eq!(q.pop(), Some((SimTime(2), "b")));
    }

    proptest! {
        /// Interleaved pushes (never before the last pop), cancels and pops
        /// match a sorted reference model.
        #[test]
        fn matches_a_reference_model(
            ops in proptest::collection::vec((0u8..4, 0u64..1_000_000_000_000), 0..600)
        ) {
            let mut q = EventQueue::new();
            let mut model = std::collections::BTreeMap::new();
            let mut keys = Vec::new();
            let mut now = 0u64;
            let mut max_pushed = 0u64;
            let mut seq = 0u64;
            for (op, x) in ops {
                match op {
                    0 | 1 => {
                        let t = now + x % (1 << (x % 40));
                        max_pushed = max_pushed.max(t);
                        keys.push((q.push_cancellable(SimTime(t), seq), t, seq));
                        model.insert((t, seq), seq);
                        seq += 1;
                    }
                    2 if !keys.is_empty() => {
                        let (k, t, s) = keys[(x as usize) % keys.len()];
                        let got = q.cancel(k);
                        prop_assert_eq!(got, model.remove(&(t, s)).is_some());
                    }
                    _ => {
                        let want = model.pop_first();
                        let got = q.pop();
                        prop_assert_eq!(got.map(|(t, v)| ((t.0, v), v)), want);
                        // An empty pop may pass cancelled entries: never
                        // schedule before the latest time pushed so far.
                        now = want.map_or(max_pushed, |((t, _), _)| t);
                    }
                }
                prop_assert_eq!(q.len(), model.len());
            }
        }

        #[test]
        fn pops_in_time_then_sequence_order(
            items in proptest::collection::vec((0u64..50, any::<bool>()), 0..300)
        ) {
            let mut q = EventQueue::new();
            let mut expected = Vec::new();
            for (seq, (t, cancel)) in items.iter().enumerate() {
                let k = q.push_cancellable(SimTime(*t), seq);
                if *cancel { q.cancel(k); } else { expected.push((*t, seq)); }
            }
            expected.sort();
            let got: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(t, s)| (t.0, s)).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
