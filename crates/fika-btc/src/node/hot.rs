//! The part of a full node's state that every block announcement touches,
//! packed into one cache line.
//!
//! In a large simulation most messages are `inv`s for a block the node
//! already has or has asked for, and each is handled by a different node
//! than the one before. What such a message reads — whether the node is
//! filtering a victim, the block's status, who announced it — therefore
//! sits together at the front of the node, so that handling it costs one
//! memory access instead of one per heap allocation.

use crate::blockdb::BlockId;

/// Block statuses kept inline: the newest ids seen.
const WINDOW: usize = 8;
/// Free places the window keeps after the id it moves for.
const AHEAD: usize = 4;
/// Blocks whose announcers are remembered (the latest announced).
const KEEP: usize = 4;
/// Peers by index below this are remembered in a bit set, the rest in a list.
const BITS: usize = 32;
/// Announcements taken early (see [`Early`]) kept at most.
const EARLY: usize = 22;

/// The hot state of a full node: a filter flag, per-block statuses, and who
/// announced the last few blocks.
///
/// Statuses behave as a `Vec<u8>` indexed by block id with 0 for ids never
/// set; the newest [`WINDOW`] ids live inline and older ones in `older`.
/// Announcers are kept by peer index (see `Context::peer_index`): bit `i`
/// of a block's set means peer `i` announced it.
#[repr(C)]
#[derive(Clone, Debug)]
pub(super) struct Hot {
    /// Messages must pass the attacker's filter (an eclipse attacker).
    pub filtered: bool,
    /// The run relays compact blocks (a copy of the shared setting).
    pub compact: bool,
    /// Number of blocks in `ids`.
    len: u8,
    /// `spill` is not empty.
    spilled: bool,
    /// The id of `window[0]`; `older` holds every id below it.
    base: BlockId,
    /// Statuses of ids `base .. base + WINDOW`.
    window: [u8; WINDOW],
    /// Blocks whose announcers are kept, oldest first.
    ids: [BlockId; KEEP],
    /// For each of `ids`, the announcing peers with an index below [`BITS`].
    bits: [u32; KEEP],
    /// Announcements taken before they arrive, in the two lines after.
    early: Early,
    /// Statuses of ids below `base` (`older.len() == base`).
    older: Vec<u8>,
    /// Announcers with an index of [`BITS`] or more: (block, peer index).
    spill: Vec<(BlockId, u32)>,
}

impl Default for Hot {
    fn default() -> Self {
        Hot {
            filtered: false,
            compact: false,
            len: 0,
            spilled: false,
            base: 0,
            window: [0; WINDOW],
            ids: [0; KEEP],
            bits: [0; KEEP],
            early: Early::default(),
            older: Vec::new(),
            spill: Vec::new(),
        }
    }
}

impl Hot {
    /// The status of block `id` (0 if never set).
    #[inline]
    pub fn status(&self, id: BlockId) -> u8 {
        match id.checked_sub(self.base) {
            Some(off) => self.window.get(off as usize).copied().unwrap_or(0),
            None => self.older[id as usize],
        }
    }

    /// Sets the status of block `id`.
    #[inline]
    pub fn set_status(&mut self, id: BlockId, status: u8) {
        if id < self.base {
            self.older[id as usize] = status;
            return;
        }
        let off = (id - self.base) as usize;
        if off >= WINDOW {
            self.slide(id);
        }
        let off = (id - self.base) as usize;
        self.window[off] = status;
    }

    /// Moves the window so that `id` is in it with room for the next few
    /// ids after it (new blocks get increasing ids), so that it moves once
    /// every few blocks.
    #[cold]
    fn slide(&mut self, id: BlockId) {
        let new_base = id + 1 + AHEAD as BlockId - WINDOW as BlockId;
        let shift = (new_base - self.base) as usize;
        let kept = WINDOW.saturating_sub(shift);
        self.older.extend_from_slice(&self.window[..WINDOW - kept]);
        self.older.resize(new_base as usize, 0);
        self.window.copy_within(WINDOW - kept.., 0);
        self.window[kept..].fill(0);
        self.base = new_base;
    }

    /// Every status that equals `from` becomes `to`.
    pub fn replace_status(&mut self, from: u8, to: u8) {
        for s in self.older.iter_mut().chain(self.window.iter_mut()) {
            if *s == from {
                *s = to;
            }
        }
    }

    /// Remembers that the peer with index `peer` announced block `id`; only
    /// the [`KEEP`] blocks most recently first announced are remembered.
    #[inline]
    pub fn note_announcer(&mut self, id: BlockId, peer: usize) {
        let len = usize::from(self.len);
        let k = match self.ids[..len].iter().position(|b| *b == id) {
            Some(k) => k,
            None => self.start_block(id),
        };
        if peer < BITS {
            self.bits[k] |= 1 << peer;
        } else if !self.spill.contains(&(id, peer as u32)) {
            self.spill.push((id, peer as u32));
            self.spilled = true;
        }
    }

    /// Starts the announcer set of `id`, forgetting the oldest if full.
    fn start_block(&mut self, id: BlockId) -> usize {
        let len = usize::from(self.len);
        if len == KEEP {
            let gone = self.ids[0];
            if self.spilled {
                self.spill.retain(|(b, _)| *b != gone);
                self.spilled = !self.spill.is_empty();
            }
            self.ids.copy_within(1.., 0);
            self.bits.copy_within(1.., 0);
            self.ids[KEEP - 1] = id;
            self.bits[KEEP - 1] = 0;
            KEEP - 1
        } else {
            self.ids[len] = id;
            self.bits[len] = 0;
            self.len += 1;
            len
        }
    }

    /// Whether the peer with index `peer` announced block `id` (as far as
    /// remembered).
    #[inline]
    #[cfg(test)]
    pub fn announced_by(&self, id: BlockId, peer: usize) -> bool {
        self.announcers(id).contains(peer)
    }

    /// The peers remembered to have announced block `id`, for tests of
    /// many peers in a row (see [`Hot::announced_by`]).
    #[inline]
    pub fn announcers(&self, id: BlockId) -> Announcers<'_> {
        let len = usize::from(self.len);
        match self.ids[..len].iter().position(|b| *b == id) {
            Some(k) => {
                Announcers { id, bits: self.bits[k], spill: if self.spilled { &self.spill } else { &[] } }
            }
            None => Announcers { id, bits: 0, spill: &[] },
        }
    }

    /// Forgets every announcer (a crash), with those taken early.
    pub fn forget_announcers(&mut self) {
        self.len = 0;
        self.spill.clear();
        self.spilled = false;
        self.early.len = 0;
        self.early.expected = false;
    }

    /// The node's clock origin (Unix seconds at virtual time zero).
    #[inline]
    pub fn start_unix(&self) -> u32 {
        self.early.start_unix
    }

    /// Sets the node's clock origin.
    pub fn set_start_unix(&mut self, start_unix: u32) {
        self.early.start_unix = start_unix;
    }

    /// Keeps an announcement of block `id` by the peer with index `peer`,
    /// offered at `now` and arriving at `at` (nanoseconds), to be recorded
    /// by [`Hot::record_early`] once its time has come. `known`: the node
    /// knows the block now (else it relies on [`Hot::announced_before`]).
    /// Refused (`false`) if the inline room is used up, if another block's
    /// announcements are waiting, or if the peer's index or the arrival
    /// time does not fit.
    #[inline]
    pub fn take_early(&mut self, id: BlockId, peer: usize, now: u64, at: u64, known: bool) -> bool {
        let e = &mut self.early;
        let len = usize::from(e.len);
        if len == EARLY || (len > 0 && e.id != id) {
            return false;
        }
        if len == 0 && known {
            // Every later arrival is after `now`: offsets stay positive.
            // The block is known, so the expected announcement is moot.
            e.base = now;
            e.id = id;
            e.expected = false;
        }
        let (Ok(peer), Some(Ok(delta))) = (u8::try_from(peer), at.checked_sub(e.base).map(u32::try_from))
        else {
            return false;
        };
        e.peers[len] = peer;
        e.delta[len] = delta;
        e.len += 1;
        true
    }

    /// Remembers that an announcement of block `id` which the node refused
    /// to take (it did not know the block) arrives at `at`: a refused offer
    /// is delivered for sure, so from then on the node will have asked for
    /// the block. Kept only while no announcement is kept, and the earliest.
    #[inline]
    pub fn expect_announcement(&mut self, id: BlockId, at: u64) {
        let e = &mut self.early;
        if e.len == 0 && !(e.expected && e.id == id && e.base <= at) {
            (e.base, e.id, e.expected) = (at, id, true);
        }
    }

    /// Whether an announcement of `id` refused earlier (see
    /// [`Hot::expect_announcement`]) arrives strictly before `at`.
    #[inline]
    pub fn announced_before(&self, id: BlockId, at: u64) -> bool {
        let e = &self.early;
        e.expected && e.id == id && e.base < at
    }

    /// Records the announcers taken early whose announcements have arrived
    /// by `now` (nanoseconds), as handling each on arrival would have: all
    /// are of one block, so their order does not matter.
    #[inline]
    pub fn record_early(&mut self, now: u64) {
        if self.early.len == 0 {
            return;
        }
        let (id, base) = (self.early.id, self.early.base);
        let mut kept = 0;
        for k in 0..usize::from(self.early.len) {
            let (peer, delta) = (self.early.peers[k], self.early.delta[k]);
            if base + u64::from(delta) <= now {
                self.note_announcer(id, usize::from(peer));
            } else {
                self.early.peers[kept] = peer;
                self.early.delta[kept] = delta;
                kept += 1;
            }
        }
        self.early.len = kept as u8;
    }
}

/// The peers known to have announced one block (see [`Hot::announcers`]).
pub(super) struct Announcers<'a> {
    id: BlockId,
    /// Announcers with an index below [`BITS`].
    bits: u32,
    /// Every spilled announcer, of any block.
    spill: &'a [(BlockId, u32)],
}

impl Announcers<'_> {
    /// Whether the peer with index `peer` announced the block.
    #[inline]
    pub fn contains(&self, peer: usize) -> bool {
        if peer < BITS { self.bits & (1 << peer) != 0 } else { self.spill.contains(&(self.id, peer as u32)) }
    }
}

/// Announcements of one block taken before they arrive (see
/// `Node::absorb`): the announcing peers' indexes and their arrival times,
/// as offsets from `base`. With the node's clock origin, what an offer
/// reads besides the statuses, this fills two cache lines.
#[repr(C)]
#[derive(Clone, Debug, Default)]
struct Early {
    /// The time (nanoseconds) the first of them was offered, or, if
    /// `expected`, when an announcement refused arrives.
    base: u64,
    /// The block announced.
    id: BlockId,
    /// The node's clock origin (Unix seconds at virtual time zero).
    start_unix: u32,
    /// How many are kept.
    len: u8,
    /// An announcement of `id` refused (the block was unknown) arrives at
    /// `base`; see [`Hot::expect_announcement`].
    expected: bool,
    peers: [u8; EARLY],
    /// Arrival times minus `base`.
    delta: [u32; EARLY],
}

/// Bytes at the front of [`Hot`] that reading a status or an announcer
/// touches (with the peer below [`BITS`] and the id in the window).
#[cfg(test)]
pub(super) const HOT_BYTES: usize = std::mem::offset_of!(Hot, bits) + std::mem::size_of::<[u32; KEEP]>();

/// Where [`Early`] starts in [`Hot`], and its size.
#[cfg(test)]
pub(super) const EARLY_AT: (usize, usize) = (std::mem::offset_of!(Hot, early), std::mem::size_of::<Early>());

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        /// Statuses read back exactly as a plain vector indexed by id.
        #[test]
        fn statuses_match_a_vector(ops in prop::collection::vec((0u32..200, 0u8..4), 0..300)) {
            let mut hot = Hot::default();
            let mut plain: Vec<u8> = Vec::new();
            for (id, s) in ops {
                hot.set_status(id, s);
                if plain.len() <= id as usize {
                    plain.resize(id as usize + 1, 0);
                }
                plain[id as usize] = s;
                for probe in 0..210 {
                    prop_assert_eq!(hot.status(probe), plain.get(probe as usize).copied().unwrap_or(0));
                }
            }
            hot.replace_status(1, 0);
            for s in &mut plain {
                if *s == 1 {
                    *s = 0;
                }
            }
            for probe in 0..210 {
                prop_assert_eq!(hot.status(probe), plain.get(probe as usize).copied().unwrap_or(0));
            }
        }

        /// Announcements taken early are recorded exactly when their time
        /// comes, as if each had been noted on arrival.
        #[test]
        fn early_announcements_are_recorded_when_they_arrive(
            ops in prop::collection::vec((0u32..3, 0usize..300, 0u64..6_000_000_000, any::<bool>()), 0..120)
        ) {
            let mut hot = Hot::default();
            let mut plain = Hot::default();
            // Arrivals not yet recorded in `plain`: (time, block, peer).
            let mut due: Vec<(u64, BlockId, usize)> = Vec::new();
            let mut now = 0u64;
            for (id, peer, delay, event) in ops {
                if event {
                    // Something happens at the node: it records what has
                    // arrived, in order of arrival.
                    now += delay / 4;
                    hot.record_early(now);
                    due.sort_by_key(|d| d.0);
                    for (_, b, p) in due.iter().filter(|d| d.0 <= now) {
                        plain.note_announcer(*b, *p);
                    }
                    due.retain(|d| d.0 > now);
                } else {
                    let (len, base) = (hot.early.len as usize, hot.early.base);
                    if hot.take_early(id, peer, now, now + delay, true) {
                        due.push((now + delay, id, peer));
                    } else {
                        let from = if len == 0 { now } else { base };
                        prop_assert!(
                            peer > 255 || len == EARLY || due.iter().any(|d| d.1 != id)
                                || now + delay - from > u64::from(u32::MAX),
                            "refused without cause"
                        );
                    }
                }
                for b in 0..3 {
                    for p in 0..300 {
                        prop_assert_eq!(hot.announced_by(b, p), plain.announced_by(b, p), "block {} peer {}", b, p);
                    }
                }
            }
        }

        /// Announcers read back as a list of the latest four blocks' sets.
        #[test]
        fn announcers_match_a_list(ops in prop::collection::vec((0u32..8, 0usize..70), 0..200)) {
            let mut hot = Hot::default();
            let mut plain: Vec<(BlockId, Vec<usize>)> = Vec::new();
            for (id, peer) in ops {
                hot.note_announcer(id, peer);
                match plain.iter_mut().find(|(b, _)| *b == id) {
                    Some((_, v)) => {
                        if !v.contains(&peer) {
                            v.push(peer);
                        }
                    }
                    None => {
                        if plain.len() >= KEEP {
                            plain.remove(0);
                        }
                        plain.push((id, vec![peer]));
                    }
                }
                for b in 0..8 {
                    for p in 0..70 {
                        let want = plain.iter().any(|(x, v)| *x == b && v.contains(&p));
                        prop_assert_eq!(hot.announced_by(b, p), want, "block {} peer {}", b, p);
                    }
                }
            }
        }
    }
}
