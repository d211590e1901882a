//! The event queue: a hierarchical timing wheel ordered by `(time, sequence)`.
//!
//! Ties at equal times are broken by the order of insertion, never by
//! address or hash, so a run is reproducible bit for bit.
//!
//! Items live in a slab; the wheel moves 16-byte keys (time and slab index).
//! A freed slab slot is reused first, so the item an event schedules is
//! usually written where the item just popped was read — memory still in
//! cache.
//!
//! A discrete-event simulation only ever schedules at or after the current
//! time, so the wheel can be a radix structure relative to a cursor `cur`, a
//! lower bound of every queued time. A time is split into an offset (its low
//! [`SHIFT`] bits) and digits above it, [`LEVEL_BITS`] bits per level; a key
//! is kept at the level of the highest digit in which its time differs from
//! `cur`, in the bucket of that digit. Keys whose time shares every digit
//! with `cur` form the *current run*. Level 0 spans about four seconds in 256
//! buckets of 16.8 ms: few enough that their tails stay in cache.
//!
//! A push is O(1): an append to one bucket. When the run is used up, the
//! lowest non-empty bucket (found with a few bit scans) becomes the new run;
//! a bucket of a higher level is first spread into the levels below it, so
//! a key moves at most once per level, and rarely at all.
//!
//! No sequence number is stored: every bucket holds its keys in insertion
//! order. By induction — a push appends the newest key; a bucket is spread
//! only when every lower level is empty, into those empty buckets, in its
//! own order. So a run is ordered by sorting packed `u64`s, the time's offset
//! in the bucket above the key's position (a counting sort on the offset's top
//! bits, then an insertion sort). Pushes that land in the run being consumed
//! (a delay shorter than what is left of its bucket) go to a small heap,
//! ordered by `(time, sequence)`, that is merged with the run at pop time;
//! they are newer than every key of the run, which therefore wins ties.
//!
//! Emptied buckets hand small buffers to a pool that the next bucket to fill
//! takes from; large ones are freed (the allocator hands back memory freed
//! recently, still in cache), so memory stays proportional to what is queued.
//!
//! The items of the run are read from the slab a batch ahead of being
//! popped: independent loads, in flight together, instead of one cache miss
//! per event.
//!
//! Cancelling drops the item from its slab slot in O(1) — a tombstone,
//! never a search; the key is dropped when it comes up. A slot's generation
//! changes when a cancellable item leaves it, so stale keys do nothing.

use std::cmp::Ordering;
use std::collections::BinaryHeap;

use fika_core::{SimTime, TimerKey};

/// Log₂ of the width of a level-0 bucket, in nanoseconds (16.8 ms).
pub const SHIFT: u32 = 24;
/// Digit width of each level, from level 0 up; they cover all 64 bits.
pub const LEVEL_BITS: [u32; 5] = [8, 8, 8, 8, 8];
const LEVELS: usize = LEVEL_BITS.len();
const _: () = {
    let mut total = SHIFT;
    let mut l = 0;
    while l < LEVELS {
        assert!(LEVEL_BITS[l] >= 6 && LEVEL_BITS[l] <= 18);
        total += LEVEL_BITS[l];
        l += 1;
    }
    assert!(total >= 64 && total - LEVEL_BITS[LEVELS - 1] < 64 && SHIFT < 32);
};

/// Where level `l`'s digit starts, counted from bit `SHIFT`.
const LEVEL_START: [u32; LEVELS + 1] = {
    let mut s = [0; LEVELS + 1];
    let mut l = 0;
    while l < LEVELS {
        s[l + 1] = s[l] + LEVEL_BITS[l];
        l += 1;
    }
    s
};
/// The level of a time whose highest bit differing from `cur` is `SHIFT + p`.
const LEVEL_OF: [u8; 64] = {
    let mut t = [0u8; 64];
    let mut p = 0;
    while p < 64 {
        let mut l = 0;
        while l + 1 < LEVELS && LEVEL_START[l + 1] <= p as u32 {
            l += 1;
        }
        t[p] = l as u8;
        p += 1;
    }
    t
};

/// What the wheel moves around: a time and the slab slot of its item,
/// with [`CANCELLABLE`] set if a key to cancel it was handed out.
#[derive(Clone, Copy, Debug)]
struct Key {
    time: u64,
    slot: u32,
}

/// Runs this long or longer are sorted by groups of their offsets.
const MIN_GROUPED: usize = 32;
/// At most `2^MAX_GROUP_BITS` groups.
const MAX_GROUP_BITS: u32 = 14;
/// A group larger than this sends the run to the comparison sort (the
/// insertion sort within a group is quadratic).
const MAX_GROUP: u32 = 64;

/// Sorts a slice that is nearly sorted.
fn insertion_sort(v: &mut [u64]) {
    for i in 1..v.len() {
        let x = v[i];
        let mut j = i;
        while j > 0 && v[j - 1] > x {
            v[j] = v[j - 1];
            j -= 1;
        }
        v[j] = x;
    }
}

/// The run's items are read ahead in batches of this many keys.
const TOUCH_BATCH: usize = 16;

/// Capacity beyond which an emptied bucket buffer is freed, not pooled.
const POOL_MAX_KEYS: usize = 256;

/// Flag in [`Key::slot`]: the slot's generation must change when it is freed.
const CANCELLABLE: u32 = 1 << 31;

/// A key pushed into the run being consumed, with its sequence number;
/// ordered so that the smallest `(time, seq)` is on top of the heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Late {
    time: u64,
    seq: u64,
    slot: u32,
}

impl PartialOrd for Late {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Late {
    fn cmp(&self, other: &Self) -> Ordering {
        (other.time, other.seq).cmp(&(self.time, self.seq))
    }
}

/// One level of the wheel: its buckets and a two-step occupancy map.
struct Level {
    buckets: Box<[Vec<Key>]>,
    /// Bit `b` of word `w` set when bucket `64 w + b` is non-empty.
    words: Box<[u64]>,
    /// Bit `s % 64` of `summary[s / 64]` set when `words[s]` is non-zero.
    summary: Box<[u64]>,
}

impl Level {
    fn new(bits: u32) -> Self {
        let n = 1usize << bits;
        let words = n.div_ceil(64);
        Level {
            buckets: (0..n).map(|_| Vec::new()).collect(),
            words: vec![0; words].into_boxed_slice(),
            summary: vec![0; words.div_ceil(64)].into_boxed_slice(),
        }
    }

    /// Takes the lowest non-empty bucket's index off the map.
    fn take_lowest(&mut self) -> Option<usize> {
        let s = self.summary.iter().position(|&w| w != 0)?;
        let w = s * 64 + self.summary[s].trailing_zeros() as usize;
        let b = self.words[w].trailing_zeros() as usize;
        self.words[w] &= self.words[w] - 1;
        if self.words[w] == 0 {
            self.summary[s] &= self.summary[s] - 1;
        }
        Some(w * 64 + b)
    }

    fn is_empty(&self) -> bool {
        self.summary.iter().all(|&w| w == 0)
    }
}

/// A priority queue of timed items with O(1) cancellation.
///
/// Items must be scheduled no earlier than the last item popped; an earlier
/// time is treated as that time (the engine never asks for the past).
pub struct EventQueue<T> {
    levels: Vec<Level>,
    /// Bit `l` set when level `l` may hold a key.
    occupied: u32,
    /// Lower bound of every queued time; keys are placed relative to it.
    cur: u64,
    /// Time of the last key taken out (live or dead).
    last: u64,
    /// The current run's keys.
    run: Vec<Key>,
    /// Group counts of the run's counting sort.
    counts: Vec<u32>,
    /// Sort keys of the run, complemented: `!(offset << 32 | position)`,
    /// ascending, so the top of this stack is the earliest key of the run
    /// (its position in `run` is the complement's low 32 bits).
    order: Vec<u64>,
    /// Keys pushed into the current run's bucket after it was sorted.
    late: BinaryHeap<Late>,
    /// Empty bucket buffers, most recently used last.
    pool: Vec<Vec<Key>>,
    /// The items, by slot; `None` in a queued slot means cancelled.
    items: Vec<Option<T>>,
    /// Per slot, its generation (bumped when a cancellable item leaves it)
    /// times two, plus one while it holds a cancellable item (only those can
    /// be cancelled): one word for `cancel` to read.
    generations: Vec<u32>,
    /// Free slots, most recently freed last.
    free: Vec<u32>,
    /// Live items seen by `touch` (reading them brings them into cache before
    /// they are popped).
    seen_live: usize,
    /// Keys to pop from the run before the next batch is touched.
    until_touch: usize,
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
            levels: LEVEL_BITS.iter().map(|&b| Level::new(b)).collect(),
            occupied: 0,
            cur: 0,
            last: 0,
            run: Vec::new(),
            order: Vec::new(),
            counts: Vec::new(),
            late: BinaryHeap::new(),
            pool: Vec::new(),
            items: Vec::new(),
            generations: Vec::new(),
            free: Vec::new(),
            seen_live: 0,
            until_touch: 0,
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

    /// Number of slots inspected by all `cancel` calls so far — one per
    /// call, whatever the queue's size (so tests can prove it).
    pub fn cancel_probes(&self) -> u64 {
        self.cancel_probes
    }

    /// The level and bucket where a key at `time` belongs, relative to
    /// `cur`; `None` if it belongs to the current run.
    #[inline]
    fn bucket_of(&self, time: u64) -> Option<(usize, usize)> {
        let x = (time ^ self.cur) >> SHIFT;
        if x == 0 || time < self.cur {
            return None;
        }
        if x < 1 << LEVEL_BITS[0] {
            // Level 0, the usual case.
            return Some((0, (time >> SHIFT) as usize & ((1 << LEVEL_BITS[0]) - 1)));
        }
        let level = LEVEL_OF[63 - x.leading_zeros() as usize] as usize;
        let digit = (time >> (SHIFT + LEVEL_START[level])) & ((1 << LEVEL_BITS[level]) - 1);
        Some((level, digit as usize))
    }

    /// Appends `key` to bucket `digit` of `level`.
    #[inline]
    fn append(&mut self, level: usize, digit: usize, key: Key) {
        let l = &mut self.levels[level];
        let bucket = &mut l.buckets[digit];
        if bucket.is_empty() {
            if bucket.capacity() == 0 {
                if let Some(v) = self.pool.pop() {
                    *bucket = v;
                }
            }
            let w = digit / 64;
            l.words[w] |= 1 << (digit % 64);
            l.summary[w / 64] |= 1 << (w % 64);
            self.occupied |= 1 << level;
        }
        bucket.push(key);
    }

    /// Adds a key newer than everything queued to the current run's part
    /// of the queue.
    fn push_current(&mut self, key: Key) {
        // It extends the run only if it comes strictly before everything in
        // the run and the late heap (it would lose ties), so the run stays
        // older than the heap at equal times.
        let first = self.run_front().is_none_or(|r| key.time < r.time)
            && self.late.peek().is_none_or(|l| key.time < l.time);
        if first {
            // Now the earliest: on top of the stack, whatever its sort key.
            if self.order.is_empty() {
                // Only spent keys are left: drop them.
                self.run.clear();
            }
            self.order.push(!(self.run.len() as u64));
            self.run.push(key);
        } else {
            let seq = self.next_seq;
            self.next_seq += 1;
            self.late.push(Late { time: key.time, seq, slot: key.slot });
        }
    }

    /// A free slot, the most recently freed first.
    #[inline(always)]
    fn free_slot(&mut self) -> u32 {
        match self.free.pop() {
            Some(s) => s,
            None => {
                assert!(self.items.len() < CANCELLABLE as usize, "too many queued items");
                self.items.push(None);
                self.generations.push(0);
                (self.items.len() - 1) as u32
            }
        }
    }

    /// Stores `item` in a free slot.
    #[inline(always)]
    fn store(&mut self, make: impl FnOnce() -> T) -> u32 {
        let s = self.free_slot();
        let slot = &mut self.items[s as usize];
        debug_assert!(slot.is_none(), "a free slot holds nothing");
        // A free slot holds `None`: nothing to drop, and not reading it lets
        // the item be written in place.
        std::mem::forget(slot.replace(make()));
        s
    }

    // Inlined into the caller, so the item is built straight into its slot
    // rather than copied through the stack.
    #[inline(always)]
    fn insert(&mut self, time: SimTime, make: impl FnOnce() -> T, flag: u32) -> u32 {
        self.live += 1;
        let slot = self.store(make);
        let key = Key { time: time.as_nanos().max(self.last), slot: slot | flag };
        match self.bucket_of(key.time) {
            Some((level, digit)) => self.append(level, digit, key),
            None => self.push_current(key),
        }
        slot
    }

    /// Schedules `item` at `time`; it cannot be cancelled.
    #[inline(always)]
    pub fn push(&mut self, time: SimTime, item: T) {
        self.insert(time, || item, 0);
    }

    /// Schedules the item `make` returns at `time`, building it in place
    /// (which saves a copy of a large item); it cannot be cancelled.
    #[inline(always)]
    pub fn push_with(&mut self, time: SimTime, make: impl FnOnce() -> T) {
        self.insert(time, make, 0);
    }

    /// Schedules `item` at `time`; returns a key that can cancel it.
    pub fn push_cancellable(&mut self, time: SimTime, item: T) -> TimerKey {
        self.push_cancellable_with(time, || item)
    }

    /// Schedules the item `make` returns at `time`, building it in place;
    /// returns a key that can cancel it.
    #[inline(always)]
    pub fn push_cancellable_with(&mut self, time: SimTime, make: impl FnOnce() -> T) -> TimerKey {
        let slot = self.insert(time, make, CANCELLABLE);
        let g = &mut self.generations[slot as usize];
        *g |= 1;
        TimerKey { slot, generation: *g >> 1 }
    }

    /// Cancels an item scheduled with [`EventQueue::push_cancellable`];
    /// returns whether it was still pending. O(1).
    pub fn cancel(&mut self, key: TimerKey) -> bool {
        self.cancel_probes += 1;
        let s = key.slot as usize;
        if self.generations.get(s) != Some(&(key.generation << 1 | 1)) {
            return false;
        }
        // The slot stays taken until the dead key comes up.
        match self.items.get_mut(s).and_then(Option::take) {
            Some(_) => {
                self.live -= 1;
                true
            }
            None => false,
        }
    }

    /// Takes the item of a key leaving the queue (`None`: it was cancelled)
    /// and frees its slot. Only a cancellable item's slot changes generation:
    /// no key to the others exists, and older keys are stale already.
    #[inline]
    fn release(&mut self, key: Key) -> Option<T> {
        let slot = key.slot & !CANCELLABLE;
        let s = slot as usize;
        let item = self.items.get_mut(s)?.take();
        if key.slot & CANCELLABLE != 0 {
            // Clear the flag, bump the generation.
            self.generations[s] = (self.generations[s] | 1).wrapping_add(1);
        }
        self.free.push(slot);
        item
    }

    /// With the run and the late heap empty, makes the lowest non-empty
    /// bucket the run; false if the queue holds nothing.
    fn refill(&mut self) -> bool {
        debug_assert!(self.order.is_empty() && self.late.is_empty());
        self.run.clear();
        while self.occupied != 0 {
            let level = self.occupied.trailing_zeros() as usize;
            let l = &mut self.levels[level];
            let Some(digit) = l.take_lowest() else {
                self.occupied &= !(1 << level);
                continue;
            };
            if l.is_empty() {
                self.occupied &= !(1 << level);
            }
            // Every queued time is at least the start of this bucket, which
            // becomes the new lower bound: keep the digits above it, set its
            // own, clear those below.
            let shift = SHIFT + LEVEL_START[level];
            let above = SHIFT + LEVEL_START[level + 1];
            let high = if above >= 64 { 0 } else { self.cur >> above << above };
            self.cur = high | (digit as u64) << shift;
            let mut keys = std::mem::take(&mut l.buckets[digit]);
            if level > 0 {
                // Spread it below; what lands in the run's bucket stays, in
                // order.
                let mut kept = 0;
                for i in 0..keys.len() {
                    let k = keys[i];
                    match self.bucket_of(k.time) {
                        Some((level, digit)) => self.append(level, digit, k),
                        None => {
                            keys[kept] = k;
                            kept += 1;
                        }
                    }
                }
                keys.truncate(kept);
            }
            if keys.is_empty() {
                self.recycle(keys);
                continue;
            }
            // The bucket's buffer becomes the run; the old one is spare.
            std::mem::swap(&mut self.run, &mut keys);
            self.recycle(keys);
            self.sort_run();
            return true;
        }
        false
    }

    /// Keeps an emptied buffer for the next bucket to fill, unless it is
    /// large: buffers move between buckets, and keeping every large one would
    /// let memory creep up to the largest bucket times their number (and a
    /// large pooled buffer is cold, when the allocator's recent memory is not).
    fn recycle(&mut self, keys: Vec<Key>) {
        debug_assert!(keys.is_empty());
        if keys.capacity() > 0 && keys.capacity() <= POOL_MAX_KEYS {
            self.pool.push(keys);
        }
    }

    /// Orders the run (in insertion order, all in one bucket) by descending
    /// `(time, insertion)`: sorts packed `u64`s, the time's offset in the
    /// bucket above the position, complemented so that ascending order
    /// leaves the earliest last.
    fn sort_run(&mut self) {
        let offset = |k: &Key| k.time & ((1 << SHIFT) - 1);
        let key = |i: usize, k: &Key| !(offset(k) << 32 | i as u64);
        let n = self.run.len();
        self.order.clear();
        // A counting sort on the offset's top bits (about one group per
        // key), then an insertion sort that only has to fix each small group:
        // cheaper than a comparison sort for the thousand-odd keys of a busy
        // bucket. Clustered keys fall back to the comparison sort.
        let bits = n.max(1).ilog2().min(MAX_GROUP_BITS);
        let groups = 1usize << bits;
        let group = |k: &Key| groups - 1 - (offset(k) >> (SHIFT - bits)) as usize;
        let mut grouped = n >= MIN_GROUPED;
        if grouped {
            self.counts.clear();
            self.counts.resize(groups + 1, 0);
            for k in &self.run {
                self.counts[group(k) + 1] += 1;
            }
            grouped = self.counts.iter().all(|&c| c <= MAX_GROUP);
        }
        if grouped {
            for g in 0..groups {
                self.counts[g + 1] += self.counts[g];
            }
            self.order.resize(n, 0);
            // Latest first, so that equal offsets need no fixing.
            for (i, k) in self.run.iter().enumerate().rev() {
                let s = &mut self.counts[group(k)];
                self.order[*s as usize] = key(i, k);
                *s += 1;
            }
            insertion_sort(&mut self.order);
        } else {
            self.order.extend(self.run.iter().enumerate().map(|(i, k)| key(i, k)));
            self.order.sort_unstable();
        }
        debug_assert!(self.order.is_sorted());
        // The first two batches of items to come.
        self.touch(0..2 * TOUCH_BATCH);
        self.until_touch = TOUCH_BATCH;
    }

    /// Reads the items of the run's next keys at `ahead` (0: the next one),
    /// so that they are in cache when they are popped: independent loads,
    /// in flight together. (The reads are counted, so they are not elided.)
    fn touch(&mut self, ahead: std::ops::Range<usize>) {
        let n = self.order.len();
        let end = n.saturating_sub(ahead.start);
        let start = n.saturating_sub(ahead.end);
        let mut live = 0;
        for &k in &self.order[start..end] {
            if let Some(key) = self.run.get(!k as u32 as usize) {
                let s = (key.slot & !CANCELLABLE) as usize;
                live += usize::from(self.items.get(s).is_some_and(Option::is_some));
            }
        }
        self.seen_live += live;
    }

    /// The item `ahead` places behind the next one in the run being
    /// consumed (0: the next one), if the run holds that many and the item
    /// is live. For reading ahead only: items pushed later may come first.
    #[inline]
    pub fn peek_ahead(&self, ahead: usize) -> Option<&T> {
        self.slot_ahead(ahead)?.as_ref()
    }

    /// The slot of the item `ahead` places behind the next one in the run
    /// being consumed, if the run holds that many.
    #[inline]
    fn slot_ahead(&self, ahead: usize) -> Option<&Option<T>> {
        let i = self.order.len().checked_sub(ahead + 1)?;
        let key = self.run.get(!self.order[i] as u32 as usize)?;
        self.items.get((key.slot & !CANCELLABLE) as usize)
    }

    /// Prefetches the slot of the item `ahead` places behind the next one in
    /// the run being consumed, without reading it (see [`Self::peek_ahead`]).
    #[inline]
    pub fn prefetch_ahead(&self, ahead: usize) {
        if let Some(slot) = self.slot_ahead(ahead) {
            fika_core::hint::prefetch(slot);
        }
    }

    /// The earliest key of the run.
    #[inline]
    fn run_front(&self) -> Option<Key> {
        let &k = self.order.last()?;
        self.run.get(!k as u32 as usize).copied()
    }

    /// The earliest key (refilling the run if needed) and whether it is in
    /// the late heap; `None` if the queue holds nothing.
    #[inline]
    fn front(&mut self) -> Option<(Key, bool)> {
        match (self.run_front(), self.late.peek()) {
            // Late keys are newer than the run's: they win only if earlier.
            (Some(r), Some(l)) if l.time < r.time => Some((Key { time: l.time, slot: l.slot }, true)),
            (Some(r), _) => Some((r, false)),
            (None, Some(l)) => Some((Key { time: l.time, slot: l.slot }, true)),
            (None, None) => {
                if self.refill() {
                    self.run_front().map(|r| (r, false))
                } else {
                    None
                }
            }
        }
    }

    /// Drops the earliest key (as `front` returned it).
    #[inline]
    fn drop_front(&mut self, late: bool) {
        if late {
            self.late.pop();
        } else {
            self.order.pop();
            self.until_touch = self.until_touch.saturating_sub(1);
            if self.until_touch == 0 {
                // One batch ahead of the keys popped next.
                self.touch(TOUCH_BATCH..2 * TOUCH_BATCH);
                self.until_touch = TOUCH_BATCH;
            }
        }
    }

    /// The time of the earliest live item, dropping dead keys on the way.
    pub fn peek_time(&mut self) -> Option<SimTime> {
        loop {
            let (k, late) = self.front()?;
            if self.items.get((k.slot & !CANCELLABLE) as usize).is_some_and(Option::is_some) {
                return Some(SimTime(k.time));
            }
            self.drop_front(late);
            self.last = k.time;
            self.release(k);
        }
    }

    /// Removes and returns the earliest live item.
    #[inline]
    pub fn pop(&mut self) -> Option<(SimTime, T)> {
        self.pop_until(SimTime::MAX)
    }

    /// Removes and returns the earliest live item if it is due no later
    /// than `until`; leaves the queue as it is otherwise.
    #[inline]
    pub fn pop_until(&mut self, until: SimTime) -> Option<(SimTime, T)> {
        loop {
            let (k, late) = self.front()?;
            if k.time > until.0 {
                // It may be dead; then it is dropped by a later call.
                return None;
            }
            self.drop_front(late);
            self.last = k.time;
            if let Some(item) = self.release(k) {
                self.live -= 1;
                return Some((SimTime(k.time), item));
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
    fn runs_of_every_size_come_out_sorted() {
        use rand::Rng;
        let mut rng = fika_core::derive_rng(3, "test", 0);
        let sizes = [1, 2, 31, 32, 33, 63, 64, 65, 500, 4096, 4097, 20_000];
        for (n, spread) in sizes.iter().map(|&n| (n, 1u64 << SHIFT)).chain([(5000, 64), (3000, 1)]) {
            let mut q = EventQueue::new();
            let mut want = Vec::new();
            for i in 0..n {
                // One bucket, repeated times, random order; then clustered.
                let t = (1 << SHIFT) * 5 + rng.gen_range(0..spread) / 16 * 16;
                q.push(SimTime(t), i);
                want.push((t, i));
            }
            want.sort();
            let got: Vec<_> = std::iter::from_fn(|| q.pop()).map(|(t, i)| (t.0, i)).collect();
            assert_eq!(got, want, "{n} keys");
        }
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

    /// A sorted reference for [`EventQueue`], which also tracks cancelled
    /// entries to know the earliest time a push may use (`floor`: the queue
    /// treats earlier times as the time of the last entry it took out, live
    /// or cancelled).
    #[derive(Default)]
    struct Model {
        live: std::collections::BTreeMap<(u64, u64), u64>,
        dead: std::collections::BTreeSet<(u64, u64)>,
        floor: u64,
    }

    impl Model {
        /// Drops the cancelled entries before `key` (all if `None`), as the
        /// queue does on its way to the next live one.
        fn pass_dead(&mut self, key: Option<(u64, u64)>) {
            while let Some(&d) = self.dead.first() {
                if key.is_some_and(|k| d > k) {
                    break;
                }
                self.floor = self.floor.max(d.0);
                self.dead.pop_first();
            }
        }
        fn peek(&mut self) -> Option<u64> {
            let first = self.live.keys().next().copied();
            self.pass_dead(first);
            first.map(|k| k.0)
        }
        fn pop(&mut self) -> Option<(u64, u64)> {
            let got = self.live.pop_first();
            self.pass_dead(got.map(|(k, _)| k));
            if let Some(((t, _), _)) = got {
                self.floor = self.floor.max(t);
            }
            got.map(|((t, _), v)| (t, v))
        }
    }

    /// A delay of one of several scales, so that keys land in every level.
    fn delay(scale: u64, x: u64, room: u64) -> u64 {
        let d = match scale % 7 {
            0 => 0,
            1 => x % (1 << 10),
            2 => x % (1 << 21),
            3 => x % (1 << 33),
            4 => x % (1 << 45),
            5 => x % (1 << 58),
            _ => x,
        };
        d.min(room)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(1000))]
        /// Pushes (at all scales of delay, also between the last entry taken
        /// out and an entry peeked at), cancels, peeks, pops and bounded pops
        /// match the reference.
        #[test]
        fn matches_a_reference_model_at_every_scale(
            ops in proptest::collection::vec((0u8..7, any::<u64>(), any::<u64>()), 0..800)
        ) {
            let mut q = EventQueue::new();
            let mut m = Model::default();
            let mut keys = Vec::new();
            let mut seq = 0u64;
            for (op, a, b) in ops {
                match op {
                    0..=2 => {
                        let t = m.floor + delay(b, a, u64::MAX - m.floor);
                        if a % 2 == 0 {
                            keys.push((q.push_cancellable(SimTime(t), seq), t, seq));
                        } else {
                            q.push(SimTime(t), seq);
                        }
                        m.live.insert((t, seq), seq);
                        seq += 1;
                    }
                    3 if !keys.is_empty() => {
                        let (k, t, s) = keys[(a as usize) % keys.len()];
                        let was = m.live.remove(&(t, s)).is_some();
                        if was {
                            m.dead.insert((t, s));
                        }
                        prop_assert_eq!(q.cancel(k), was);
                    }
                    4 => prop_assert_eq!(q.peek_time().map(|t| t.0), m.peek()),
                    5 => {
                        let limit = m.floor.saturating_add(delay(b, a, u64::MAX));
                        let due = m.live.keys().next().is_some_and(|&(t, _)| t <= limit);
                        // If nothing is due, cancelled entries may still have
                        // been passed (the model passes all before the next
                        // live one: its floor is no lower than the queue's).
                        let want = if due { m.pop() } else { m.peek().and(None) };
                        prop_assert_eq!(q.pop_until(SimTime(limit)).map(|(t, v)| (t.0, v)), want);
                    }
                    _ => prop_assert_eq!(q.pop().map(|(t, v)| (t.0, v)), m.pop()),
                }
                prop_assert_eq!(q.len(), m.live.len());
            }
            while let Some(want) = m.pop() {
                prop_assert_eq!(q.pop().map(|(t, v)| (t.0, v)), Some(want));
            }
            prop_assert_eq!(q.pop(), None);
            prop_assert!(q.is_empty());
        }
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
