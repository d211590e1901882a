//! The event queue: a hierarchical timing wheel ordered by `(time, sequence)`.
//!
//! Ties at equal times are broken by the sequence number given at insertion,
//! never by address or hash, so a run is reproducible bit for bit.
//!
//! A discrete-event simulation only ever schedules at or after the current
//! time, so the queue can be a radix structure relative to a cursor `cur`
//! (a lower bound of every queued time). Times are split into a bucket
//! offset (the low [`SHIFT`] bits) and digits of [`BITS`] bits; an entry is
//! kept at the level of the highest digit in which its time differs from
//! `cur`, in the bucket of that digit. Entries whose time shares every digit
//! with `cur` form the *current run*, sorted once (descending, so the
//! smallest is popped from the end of a `Vec`).
//!
//! A push is O(1): an append to one bucket. When the run is used up, the
//! lowest non-empty bucket (found with two bit scans) becomes the new run;
//! a bucket of a higher level is first spread into the levels below it, so
//! an entry moves at most once per level — in practice almost never, since
//! level 0 spans about two seconds. Pushes that land in the run being
//! consumed (a delay shorter than a bucket) go to a small binary heap that
//! is merged with the run at pop time, so the exact `(time, sequence)` order
//! holds whatever the delays.
//!
//! Cancellable entries get a slot in a small generation table. Cancelling
//! bumps the slot's generation in O(1) — a tombstone, never a search — and
//! the dead entry is dropped when it comes up.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use fika_core::{SimTime, TimerKey};

/// Log₂ of the width of a level-0 bucket, in nanoseconds (about 1 ms).
pub const SHIFT: u32 = 16;
/// Bits of time per level: each level has `2^BITS` buckets.
pub const BITS: u32 = 12;
const FANOUT: usize = 1 << BITS;
const WORDS: usize = FANOUT / 64;
const LEVELS: usize = (64 - SHIFT).div_ceil(BITS) as usize;
const _: () = assert!(BITS >= 6 && BITS <= 12, "one summary word per level");

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
    fn key(&self) -> (u64, u64) {
        (self.time, self.seq)
    }
}

/// An entry in the heap of late arrivals: ordered so the smallest key is on top.
struct Late<T>(Entry<T>);

impl<T> PartialEq for Late<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0.key() == other.0.key()
    }
}
impl<T> Eq for Late<T> {}
impl<T> PartialOrd for Late<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Late<T> {
    fn cmp(&self, other: &Self) -> Ordering {
        other.0.key().cmp(&self.0.key())
    }
}

/// One level of the wheel: `FANOUT` buckets and a two-word-deep occupancy map.
struct Level<T> {
    buckets: Box<[Vec<Entry<T>>]>,
    /// Bit `b` of word `w` set when bucket `64 w + b` is non-empty.
    words: [u64; WORDS],
    /// Bit `w` set when `words[w]` is non-zero.
    summary: u64,
}

impl<T> Level<T> {
    fn new() -> Self {
        Level {
            buckets: (0..FANOUT).map(|_| Vec::new()).collect(),
            words: [0; WORDS],
            summary: 0,
        }
    }
}

const NO_SLOT: u32 = u32::MAX;

/// A priority queue of timed items with O(1) cancellation.
///
/// Items must be scheduled no earlier than the last item popped; an earlier
/// time is treated as that time (the engine never asks for the past).
pub struct EventQueue<T> {
    levels: Vec<Level<T>>,
    /// Bit `l` set when level `l` holds an entry.
    occupied: u32,
    /// Lower bound of every queued time; entries are placed relative to it.
    cur: u64,
    /// Time of the last entry taken out (live or dead).
    last: u64,
    /// The current run, sorted by descending key: the smallest is last.
    run: Vec<Entry<T>>,
    /// Entries pushed into the current run's bucket after it was sorted.
    late: BinaryHeap<Late<T>>,
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
            levels: (0..LEVELS).map(|_| Level::new()).collect(),
            occupied: 0,
            cur: 0,
            last: 0,
            run: Vec::new(),
            late: BinaryHeap::new(),
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

    /// Puts `e` into the bucket its time calls for, relative to `cur`;
    /// returns it if it belongs to the current run instead.
    #[inline]
    fn place(&mut self, e: Entry<T>) -> Option<Entry<T>> {
        let x = (e.time ^ self.cur) >> SHIFT;
        if x == 0 || e.time < self.cur {
            return Some(e);
        }
        let level = ((63 - x.leading_zeros()) / BITS) as usize;
        let digit = ((e.time >> (SHIFT + BITS * level as u32)) as usize) & (FANOUT - 1);
        let l = &mut self.levels[level];
        l.buckets[digit].push(e);
        l.words[digit / 64] |= 1 << (digit % 64);
        l.summary |= 1 << (digit / 64);
        self.occupied |= 1 << level;
        None
    }

    fn insert(&mut self, time: SimTime, slot: u32, generation: u32, item: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.live += 1;
        let e = Entry {
            time: time.as_nanos().max(self.last),
            seq,
            slot,
            generation,
            item,
        };
        if let Some(e) = self.place(e) {
            // Its sequence number is the largest yet: it extends the run
            // only if it comes before every entry left in it.
            match self.run.last() {
                Some(r) if e.time >= r.time => self.late.push(Late(e)),
                _ => self.run.push(e),
            }
        }
    }

    /// Schedules `item` at `time`; it cannot be cancelled.
    #[inline]
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
    #[inline]
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

    /// With the run and the late heap empty, makes the lowest non-empty
    /// bucket the run; false if the queue holds nothing.
    fn refill(&mut self) -> bool {
        debug_assert!(self.run.is_empty() && self.late.is_empty());
        while self.occupied != 0 {
            let level = self.occupied.trailing_zeros() as usize;
            let l = &mut self.levels[level];
            let w = l.summary.trailing_zeros() as usize;
            let b = l.words[w].trailing_zeros() as usize;
            l.words[w] &= !(1 << b);
            if l.words[w] == 0 {
                l.summary &= !(1 << w);
                if l.summary == 0 {
                    self.occupied &= !(1 << level);
                }
            }
            let digit = w * 64 + b;
            // Every queued time is at least the start of this bucket, which
            // becomes the new lower bound: keep the digits above it, set
            // its own, clear those below.
            let shift = SHIFT + BITS * level as u32;
            let above = shift + BITS;
            let high = if above >= 64 { 0 } else { self.cur >> above << above };
            self.cur = high | (digit as u64) << shift;
            let mut entries = std::mem::take(&mut l.buckets[digit]);
            if level == 0 {
                // All of the bucket is the run; keep the old run's allocation.
                std::mem::swap(&mut self.run, &mut entries);
                self.levels[0].buckets[digit] = entries;
            } else {
                for e in entries.drain(..) {
                    if let Some(e) = self.place(e) {
                        self.run.push(e);
                    }
                }
                self.levels[level].buckets[digit] = entries;
                if self.run.is_empty() {
                    continue;
                }
            }
            self.run
                .sort_unstable_by(|a, b| b.key().cmp(&a.key()));
            return true;
        }
        false
    }

    /// Where the smallest entry is (true: the late heap), refilling the run
    /// if needed; `None` if the queue holds nothing.
    #[inline]
    fn front(&mut self) -> Option<bool> {
        match (self.run.last(), self.late.peek()) {
            (Some(r), Some(l)) => Some(l.0.key() < r.key()),
            (Some(_), None) => Some(false),
            (None, Some(_)) => Some(true),
            (None, None) => self.refill().then_some(false),
        }
    }

    /// Takes the smallest entry out, live or dead.
    #[inline]
    fn take_front(&mut self) -> Option<Entry<T>> {
        let e = if self.front()? {
            self.late.pop().map(|l| l.0)
        } else {
            self.run.pop()
        }?;
        self.last = e.time;
        Some(e)
    }

    /// The time of the earliest live item, dropping dead entries on the way.
    pub fn peek_time(&mut self) -> Option<SimTime> {
        loop {
            let late = self.front()?;
            let e = if late {
                self.late.peek().map(|l| &l.0)
            } else {
                self.run.last()
            }?;
            if e.slot == NO_SLOT || self.generations[e.slot as usize] == e.generation {
                return Some(SimTime(e.time));
            }
            if let Some(dead) = self.take_front() {
                self.take_slot(dead.slot, dead.generation);
            }
        }
    }

    /// Removes and returns the earliest live item.
    #[inline]
    pub fn pop(&mut self) -> Option<(SimTime, T)> {
        loop {
            let e = self.take_front()?;
            if self.take_slot(e.slot, e.generation) {
                self.live -= 1;
                return Some((SimTime(e.time), e.item));
            }
        }
    }

    /// Removes and returns the earliest live item if it is due no later
    /// than `until`; leaves the queue as it is otherwise.
    #[inline]
    pub fn pop_until(&mut self, until: SimTime) -> Option<(SimTime, T)> {
        if self.peek_time()? > until {
            return None;
        }
        self.pop()
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
