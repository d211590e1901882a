//! Mining attacks. [`Selfish`] is the selfish-mining strategy of Eyal and
//! Sirer ("Majority is not enough: Bitcoin mining is vulnerable", FC 2014),
//! Algorithm 1, as a pure state machine over block ids and heights; a
//! [`FullNode`](crate::node::FullNode) given one (`set_selfish`) applies its
//! decisions: it mines on its private tip, withholds what the machine keeps
//! hidden and announces what the machine publishes.
//!
//! The paper's state machine, with `Δprev = length(private) − length(public)`
//! taken *before* the event and `privateBranchLen` the length of the
//! private branch since the last fork point:
//!
//! ```text
//! on the pool finds a block:
//!     Δprev ← length(private) − length(public)
//!     append the block to the private chain; privateBranchLen += 1
//!     if Δprev = 0 and privateBranchLen = 2:      (state 0': the tie is won)
//!         publish all of the private chain; privateBranchLen ← 0
//!     mine at the new head of the private chain
//!
//! on others find a block:
//!     Δprev ← length(private) − length(public)
//!     append the block to the public chain
//!     if Δprev = 0:   private ← public; privateBranchLen ← 0      (they win)
//!     if Δprev = 1:   publish the last block of the private chain  (a race, state 0')
//!     if Δprev = 2:   publish all of the private chain; privateBranchLen ← 0  (override)
//!     if Δprev > 2:   publish the first unpublished block of the private chain
//!     mine at the head of the private chain
//! ```
//!
//! "Length of the public chain" is the height of the best chain the rest
//! of the network can know of: the best block received from peers, or a
//! block the pool published, whichever is higher. Lengths are heights (the
//! paper's model has constant difficulty). γ — the share of honest hashrate
//! that mines on the pool's block during a race — is not a parameter: it
//! follows from where the pool sits in the network (honest nodes keep the
//! first block they receive of two of equal work), so a better-connected
//! pool (`extra_links`) has a higher γ.
//!
//! Blocks the pool still withholds when a run ends are in the shared block
//! store like any other (validated, so they could be the most-work chain);
//! `fika`'s report leaves out [`Selfish::hidden`] blocks when it picks the
//! final best chain, i.e. the pool's unpublished tail counts as lost.

use crate::blockdb::BlockId;

/// The selfish miner's state.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Selfish {
    /// Blocks of the private branch not yet published, oldest first, with their heights.
    hidden: Vec<(BlockId, u32)>,
    /// `privateBranchLen`.
    branch_len: u32,
    /// Height of the private chain's head (what the pool mines on).
    private_height: u32,
    /// Height of the public chain.
    public_height: u32,
}

/// What the pool does after an honest block arrives.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Decision {
    /// Switch the private chain to the received block (the honest chain won).
    pub adopt: bool,
    /// Announce these withheld blocks, oldest first.
    pub publish: Vec<BlockId>,
}

impl Selfish {
    /// A pool starting at a common tip of height `height` (state 0).
    pub fn new(height: u32) -> Self {
        Selfish { hidden: Vec::new(), branch_len: 0, private_height: height, public_height: height }
    }

    /// The private lead, `length(private) − length(public)` (negative: behind).
    pub fn lead(&self) -> i64 {
        i64::from(self.private_height) - i64::from(self.public_height)
    }

    /// `privateBranchLen`.
    pub fn branch_len(&self) -> u32 {
        self.branch_len
    }

    /// Whether block `id` is withheld.
    pub fn is_hidden(&self, id: BlockId) -> bool {
        self.hidden.iter().any(|(b, _)| *b == id)
    }

    /// Withheld blocks, oldest first.
    pub fn hidden(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.hidden.iter().map(|(b, _)| *b)
    }

    /// The pool found block `id` at `height` on its private head; returns
    /// the blocks to publish (oldest first; empty: withhold).
    pub fn on_mined(&mut self, id: BlockId, height: u32) -> Vec<BlockId> {
        let delta_prev = self.lead();
        self.hidden.push((id, height));
        self.private_height = height;
        self.branch_len += 1;
        if delta_prev == 0 && self.branch_len == 2 {
            // State 0': the pool's second block settles the race.
            self.branch_len = 0;
            return self.publish_all();
        }
        Vec::new()
    }

    /// Others found a block: the best block received from the network now
    /// has height `height`. Blocks no higher than the public chain (a
    /// competing block at the same height) change nothing.
    pub fn on_public(&mut self, height: u32) -> Decision {
        let mut d = Decision::default();
        // One step of the machine per block the public chain grew by.
        while self.public_height < height {
            let delta_prev = self.lead();
            self.public_height += 1;
            match delta_prev {
                i64::MIN..=0 => {
                    // They win (or we were behind anyway): adopt.
                    self.hidden.clear();
                    self.branch_len = 0;
                    self.private_height = self.public_height;
                    d.adopt = true;
                }
                1 => {
                    // Lead 1 → tie: publish the last (only) hidden block, race.
                    let h = self.public_height;
                    d.publish.extend(self.publish_upto(h));
                }
                2 => {
                    // Override: publish everything, the private chain is longer by one.
                    self.branch_len = 0;
                    d.publish.extend(self.publish_all());
                }
                _ => {
                    // Still comfortably ahead: reveal the block matching the honest height.
                    let h = self.public_height;
                    d.publish.extend(self.publish_upto(h));
                }
            }
        }
        if d.adopt {
            // Anything published before the adoption in this same call is moot.
            d.publish.clear();
            self.private_height = height;
            self.public_height = height;
        }
        d
    }

    fn publish_all(&mut self) -> Vec<BlockId> {
        let out: Vec<BlockId> = self.hidden.drain(..).map(|(b, _)| b).collect();
        self.public_height = self.public_height.max(self.private_height);
        out
    }

    fn publish_upto(&mut self, height: u32) -> Vec<BlockId> {
        let k = self.hidden.iter().take_while(|(_, h)| *h <= height).count();
        let out: Vec<BlockId> = self.hidden.drain(..k).map(|(b, _)| b).collect();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lead_one_then_honest_block_is_a_race() {
        let mut s = Selfish::new(0);
        assert!(s.on_mined(1, 1).is_empty());
        assert_eq!(s.lead(), 1);
        let d = s.on_public(1);
        assert_eq!(d, Decision { adopt: false, publish: vec![1] });
        assert_eq!(s.lead(), 0);
        // The pool wins the race with its next block: publishes it.
        assert_eq!(s.on_mined(3, 2), vec![3]);
        assert_eq!(s.lead(), 0);
        assert_eq!(s.branch_len(), 0);
    }

    #[test]
    fn lead_two_overrides_and_long_lead_trickles() {
        let mut s = Selfish::new(10);
        assert!(s.on_mined(1, 11).is_empty());
        assert!(s.on_mined(2, 12).is_empty());
        assert_eq!(s.on_public(11), Decision { adopt: false, publish: vec![1, 2] });
        assert_eq!(s.lead(), 0);
        for (i, h) in [(3, 13), (4, 14), (5, 15), (6, 16)] {
            assert!(s.on_mined(i, h).is_empty());
        }
        assert_eq!(s.lead(), 4);
        assert_eq!(s.on_public(13).publish, vec![3]);
        assert_eq!(s.on_public(14).publish, vec![4]);
        // Lead 2 before this block: override.
        assert_eq!(s.on_public(15).publish, vec![5, 6]);
        assert!(s.hidden().next().is_none());
    }

    #[test]
    fn lead_zero_adopts() {
        let mut s = Selfish::new(0);
        let d = s.on_public(1);
        assert!(d.adopt && d.publish.is_empty());
        // A tie lost: the honest chain extends the other branch.
        s.on_mined(7, 2);
        s.on_public(2);
        assert!(s.on_public(3).adopt);
        assert_eq!(s.lead(), 0);
        assert_eq!(s.branch_len(), 0);
    }
}
