//! The event queue: a 4-ary min-heap ordered by `(time, sequence)`.
//!
//! Ties at equal times are broken by the sequence number given at insertion,
//! never by address or hash, so a run is reproducible bit for bit. Payloads
//! live in a slab beside the heap; the heap moves only 24-byte keys.
//! Cancellation marks the slab entry dead (a tombstone) in O(1); the dead key
//! is dropped when it reaches the top.

use fika_core::{SimTime, TimerKey};

#[derive(Clone, Copy, Debug)]
struct Key {
    time: u64,
    seq: u64,
    slot: u32,
}

impl Key {
    #[inline]
    fn before(&self, other: &Key) -> bool {
        (self.time, self.seq) < (other.time, other.seq)
    }
}

struct Slot<T> {
    generation: u32,
    item: Option<T>,
}

/// A priority queue of timed items with O(1) cancellation.
pub struct EventQueue<T> {
    heap: Vec<Key>,
    slots: Vec<Slot<T>>,
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

const ARITY: usize = 4;

impl<T> EventQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        EventQueue {
            heap: Vec::new(),
            slots: Vec::new(),
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

    /// Number of slab entries inspected by all `cancel` calls so far — one
    /// per call, whatever the queue's size (exposed so tests can prove it).
    pub fn cancel_probes(&self) -> u64 {
        self.cancel_probes
    }

    /// Schedules `item` at `time`; returns a key that can cancel it.
    pub fn push(&mut self, time: SimTime, item: T) -> TimerKey {
        let slot = match self.free.pop() {
            Some(s) => {
                self.slots[s as usize].item = Some(item);
                s
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    item: Some(item),
                });
                (self.slots.len() - 1) as u32
            }
        };
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live += 1;
        self.heap.push(Key {
            time: time.as_nanos(),
            seq,
            slot,
        });
        self.sift_up(self.heap.len() - 1);
        TimerKey {
            slot,
            generation: self.slots[slot as usize].generation,
        }
    }

    /// Cancels a scheduled item; returns it if it was still pending.
    pub fn cancel(&mut self, key: TimerKey) -> Option<T> {
        self.cancel_where(key, |_| true)
    }

    /// Cancels a scheduled item only if `allowed` accepts it (a node may
    /// cancel its own timers and nothing else).
    pub fn cancel_where(&mut self, key: TimerKey, allowed: impl FnOnce(&T) -> bool) -> Option<T> {
        self.cancel_probes += 1;
        let slot = self.slots.get_mut(key.slot as usize)?;
        if slot.generation != key.generation || !slot.item.as_ref().is_some_and(allowed) {
            return None;
        }
        let item = slot.item.take();
        if item.is_some() {
            self.live -= 1;
        }
        item
    }

    /// The time of the earliest live item, skipping tombstones.
    pub fn peek_time(&mut self) -> Option<SimTime> {
        loop {
            let top = *self.heap.first()?;
            if self.slots[top.slot as usize].item.is_some() {
                return Some(SimTime(top.time));
            }
            self.remove_top();
        }
    }

    /// Removes and returns the earliest live item.
    pub fn pop(&mut self) -> Option<(SimTime, T)> {
        loop {
            let top = *self.heap.first()?;
            self.remove_top();
            if let Some(item) = self.slots[top.slot as usize].item.take() {
                self.live -= 1;
                return Some((SimTime(top.time), item));
            }
        }
    }

    fn remove_top(&mut self) {
        let top = self.heap.swap_remove(0);
        if !self.heap.is_empty() {
            self.sift_down(0);
        }
        let slot = &mut self.slots[top.slot as usize];
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(top.slot);
    }

    fn sift_up(&mut self, mut i: usize) {
        let key = self.heap[i];
        while i > 0 {
            let parent = (i - 1) / ARITY;
            if key.before(&self.heap[parent]) {
                self.heap[i] = self.heap[parent];
                i = parent;
            } else {
                break;
            }
        }
        self.heap[i] = key;
    }

    fn sift_down(&mut self, mut i: usize) {
        let n = self.heap.len();
        let key = self.heap[i];
        loop {
            let first = i * ARITY + 1;
            if first >= n {
                break;
            }
            let last = (first + ARITY).min(n);
            let mut best = first;
            for c in first + 1..last {
                if self.heap[c].before(&self.heap[best]) {
                    best = c;
                }
            }
            if self.heap[best].before(&key) {
                self.heap[i] = self.heap[best];
                i = best;
            } else {
                break;
            }
        }
        self.heap[i] = key;
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
        let keys: Vec<_> = (0..n).map(|i| q.push(SimTime(n - i), i)).collect();
        for k in keys.iter().step_by(2) {
            assert!(q.cancel(*k).is_some());
        }
        // One probe per cancel, independent of the 200k entries queued.
        assert_eq!(q.cancel_probes(), n / 2);
        assert_eq!(q.len() as u64, n / 2);
        // A second cancel of the same key does nothing.
        assert!(q.cancel(keys[0]).is_none());
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
        let k = q.push(SimTime(1), "a");
        assert_eq!(q.pop(), Some((SimTime(1), "a")));
        let _k2 = q.push(SimTime(2), "b");
        assert!(q.cancel(k).is_none());
        assert_eq!(q.pop(), Some((SimTime(2), "b")));
    }

    proptest! {
        #[test]
        fn pops_in_time_then_sequence_order(
            items in proptest::collection::vec((0u64..50, any::<bool>()), 0..300)
        ) {
            let mut q = EventQueue::new();
            let mut expected = Vec::new();
            for (seq, (t, cancel)) in items.iter().enumerate() {
                let k = q.push(SimTime(*t), seq);
                if *cancel { q.cancel(k); } else { expected.push((*t, seq)); }
            }
            expected.sort();
            let got: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(t, s)| (t.0, s)).collect();
            prop_assert_eq!(got, expected);
        }
    }
}
