//! Mining attacks, as pure state machines over block ids and heights, and
//! the plans a [`FullNode`](crate::node::FullNode) follows to apply them
//! ([`Strategy`], set with `set_strategy`):
//!
//! * [`Selfish`]: selfish mining (Eyal & Sirer), below.
//! * [`Race`]: a private-chain race — the double spend (pay a merchant,
//!   mine a conflicting private chain, release it once the payment has z
//!   confirmations and the private chain is longer) and the majority deep
//!   reorg (release once the honest chain is D blocks past the fork).
//! * Eclipse ([`EclipsePlan`]): the attacker's nodes hold all of a victim's
//!   links and pass it no blocks.
//! * Censorship ([`CensorPlan`]): a miner never includes transactions
//!   paying or spending given scripts.
//! * [`TieBreak`]: honest nodes that, in a tie with an attacker's block,
//!   side with it with probability γ (Eyal & Sirer's γ as a parameter).
//!
//! Closed forms to compare with: [`nakamoto_success`],
//! [`rosenfeld_success`], [`race_success`] and [`selfish_revenue`].
//!
//! # Selfish mining
//!
//! [`Selfish`] is the selfish-mining strategy of Eyal and
//! Sirer ("Majority is not enough: Bitcoin mining is vulnerable", FC 2014),
//! Algorithm 1; a node mining selfishly mines on its private tip, withholds
//! what the machine keeps hidden and announces what the machine publishes.
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
//! that mines on the pool's block during a race — follows by default from
//! where the pool sits in the network (honest nodes keep the first block
//! they receive of two of equal work), so a better-connected pool
//! (`extra_links`) has a higher γ; a [`TieBreak`] on the honest nodes sets
//! it instead.
//!
//! Blocks the pool still withholds when a run ends are in the shared block
//! store like any other (validated, so they could be the most-work chain);
//! `fika`'s report leaves out [`Selfish::hidden`] blocks when it picks the
//! final best chain, i.e. the pool's unpublished tail counts as lost.
//!
//! # Private-chain races
//!
//! [`Race`] starts at a fork height `f` (the attacker's tip when the attack
//! begins) and tracks the private chain (the attacker's blocks on `f`) and
//! the public chain (the best height received from peers). It releases the
//! whole private chain as soon as the public chain has reached its target
//! height `t` **and** the private chain is strictly longer (honest nodes
//! keep the first of two equal chains, so a tie does not win), and gives up
//! — adopting the public chain — once the public chain leads by `give_up`
//! blocks:
//!
//! ```text
//! release  ⇔  public ≥ t  ∧  private > public
//! give up  ⇔  public − private ≥ give_up
//! ```
//!
//! The double spend's target is the height of the block holding the
//! payment plus z − 1 (unknown, hence no release, until the payment is in
//! the public chain); the majority reorg's is `f + D`, so its release
//! replaces at least D honest blocks.

use std::collections::BTreeMap;

use bitcoin::secp256k1::SecretKey;
use bitcoin::{Amount, OutPoint, ScriptBuf};
use fika_core::{NodeId, SimTime};

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

/// How a [`Race`] ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RaceOutcome {
    /// The private chain was published: `private` attacker blocks against
    /// `public` honest blocks since the fork.
    Released {
        /// Private blocks since the fork.
        private: u32,
        /// Public blocks since the fork (the honest blocks the release replaces).
        public: u32,
    },
    /// The attacker fell `give_up` blocks behind and adopted the public chain.
    GaveUp {
        /// Private blocks since the fork.
        private: u32,
        /// Public blocks since the fork.
        public: u32,
    },
}

/// What the attacker does after an event of a [`Race`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RaceStep {
    /// Keep mining privately (or nothing: the race is over).
    Continue,
    /// Publish these blocks, oldest first; the race is won on the attacker's side.
    Release(Vec<BlockId>),
    /// Abandon the private chain and adopt the public one.
    GiveUp,
}

/// A private-chain race (double spend, majority reorg); see the module
/// documentation for its rules.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Race {
    fork: u32,
    hidden: Vec<BlockId>,
    private_height: u32,
    public_height: u32,
    target: Option<u32>,
    give_up: Option<u32>,
    outcome: Option<RaceOutcome>,
}

impl Race {
    /// A race from the common block at height `fork`: release once the
    /// public chain reaches `target` (`None`: not yet known) and the
    /// private chain is longer; give up `give_up` blocks behind (`None`: never).
    pub fn new(fork: u32, target: Option<u32>, give_up: Option<u32>) -> Self {
        Race {
            fork,
            hidden: Vec::new(),
            private_height: fork,
            public_height: fork,
            target,
            give_up,
            outcome: None,
        }
    }

    /// Height of the block the private chain forks from.
    pub fn fork(&self) -> u32 {
        self.fork
    }

    /// `private − public`, in blocks (negative: behind).
    pub fn lead(&self) -> i64 {
        i64::from(self.private_height) - i64::from(self.public_height)
    }

    /// Private blocks since the fork.
    pub fn private_blocks(&self) -> u32 {
        self.private_height - self.fork
    }

    /// Public blocks since the fork.
    pub fn public_blocks(&self) -> u32 {
        self.public_height.saturating_sub(self.fork)
    }

    /// The public height that allows a release, if known.
    pub fn target(&self) -> Option<u32> {
        self.target
    }

    /// How the race ended, if it has.
    pub fn outcome(&self) -> Option<RaceOutcome> {
        self.outcome
    }

    /// Whether the race is still on.
    pub fn is_running(&self) -> bool {
        self.outcome.is_none()
    }

    /// Whether block `id` is withheld.
    pub fn is_hidden(&self, id: BlockId) -> bool {
        self.hidden.contains(&id)
    }

    /// Withheld blocks, oldest first.
    pub fn hidden(&self) -> impl Iterator<Item = BlockId> + '_ {
        self.hidden.iter().copied()
    }

    /// The attacker found block `id` at `height` on its private tip.
    pub fn on_mined(&mut self, id: BlockId, height: u32) -> RaceStep {
        if self.outcome.is_some() {
            return RaceStep::Continue;
        }
        self.hidden.push(id);
        self.private_height = self.private_height.max(height);
        self.step()
    }

    /// The best block received from peers now has height `height`.
    pub fn on_public(&mut self, height: u32) -> RaceStep {
        self.public_height = self.public_height.max(height);
        self.step()
    }

    /// Sets the public height that allows a release (`None`: not known,
    /// e.g. the payment left the public chain).
    pub fn set_target(&mut self, target: Option<u32>) -> RaceStep {
        self.target = target;
        self.step()
    }

    fn step(&mut self) -> RaceStep {
        if self.outcome.is_some() {
            return RaceStep::Continue;
        }
        let (private, public) = (self.private_blocks(), self.public_blocks());
        if self.target.is_some_and(|t| self.public_height >= t) && self.private_height > self.public_height {
            self.outcome = Some(RaceOutcome::Released { private, public });
            return RaceStep::Release(std::mem::take(&mut self.hidden));
        }
        if self.give_up.is_some_and(|g| self.public_height >= self.private_height.saturating_add(g)) {
            self.outcome = Some(RaceOutcome::GaveUp { private, public });
            self.hidden.clear();
            return RaceStep::GiveUp;
        }
        RaceStep::Continue
    }
}

// ----- plans -------------------------------------------------------------

/// A double spend: at `at`, pay `amount` from the attacker's coin to the
/// merchant on the public network, and mine a private chain holding a
/// conflicting transaction that pays the coin back to the attacker.
#[derive(Clone, Debug, PartialEq)]
pub struct DoubleSpendPlan {
    /// When the attacker pays.
    pub at: SimTime,
    /// The key of the attacker's coin (a P2WPKH output).
    pub key: SecretKey,
    /// The coin.
    pub coin: OutPoint,
    /// Its value.
    pub value: Amount,
    /// The merchant's script.
    pub merchant: ScriptBuf,
    /// What the merchant is paid.
    pub amount: Amount,
    /// Fee of each of the two transactions.
    pub fee: Amount,
    /// Confirmations the merchant waits for (z ≥ 1).
    pub confirmations: u32,
    /// Deficit at which the attacker gives up (`None`: never).
    pub give_up: Option<u32>,
}

/// A majority deep reorg: from `at`, mine privately and release once the
/// honest chain is `depth` blocks past the fork and the private chain is longer.
#[derive(Clone, Debug, PartialEq)]
pub struct MajorityPlan {
    /// When the attacker starts mining privately.
    pub at: SimTime,
    /// Honest blocks to replace, D ≥ 1.
    pub depth: u32,
    /// Deficit at which the attacker gives up (`None`: never).
    pub give_up: Option<u32>,
}

/// An eclipse: from `at`, the attacker passes its victims no blocks and
/// takes none from them (transactions still flow). The scenario's layout
/// gives the victims no links but to their attackers.
#[derive(Clone, Debug, PartialEq)]
pub struct EclipsePlan {
    /// The eclipsed nodes.
    pub victims: Vec<NodeId>,
    /// When the attacker starts filtering.
    pub at: SimTime,
}

/// A censoring miner: its blocks never hold a transaction paying one of
/// `scripts` or spending an output that pays one (nor their descendants).
#[derive(Clone, Debug, PartialEq)]
pub struct CensorPlan {
    /// The blacklisted scripts.
    pub scripts: Vec<ScriptBuf>,
}

impl CensorPlan {
    /// Whether a transaction with these output scripts, spending outputs
    /// with `spent` scripts, is censored.
    pub fn censors<'a>(
        &self,
        outputs: impl IntoIterator<Item = &'a ScriptBuf>,
        spent: impl IntoIterator<Item = &'a ScriptBuf>,
    ) -> bool {
        outputs.into_iter().chain(spent).any(|s| self.scripts.contains(s))
    }

    /// Whether `tx` is censored, looking up the outputs it spends in `db`
    /// (outputs the store does not know are taken as not censored).
    pub fn censors_tx(&self, db: &crate::blockdb::BlockDb, tx: &bitcoin::Transaction) -> bool {
        if self.scripts.is_empty() {
            return false;
        }
        let spent: Vec<&ScriptBuf> = tx
            .input
            .iter()
            .filter_map(|i| {
                let p = db.tx_idx(&i.previous_output.txid)?;
                db.tx(p).tx.output.get(i.previous_output.vout as usize).map(|o| &o.script_pubkey)
            })
            .collect();
        self.censors(tx.output.iter().map(|o| &o.script_pubkey), spent)
    }
}

/// What a full node does beyond honest relay and mining.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Strategy {
    /// Nothing.
    #[default]
    Honest,
    /// Selfish mining ([`Selfish`]).
    Selfish,
    /// A double spend ([`DoubleSpendPlan`]).
    DoubleSpend(DoubleSpendPlan),
    /// A majority deep reorg ([`MajorityPlan`]).
    Majority(MajorityPlan),
    /// An eclipse ([`EclipsePlan`]).
    Eclipse(EclipsePlan),
    /// Censorship ([`CensorPlan`]).
    Censor(CensorPlan),
}

impl Strategy {
    /// The strategy's scenario name.
    pub fn name(&self) -> &'static str {
        match self {
            Strategy::Honest => "honest",
            Strategy::Selfish => "selfish",
            Strategy::DoubleSpend(_) => "double-spend",
            Strategy::Majority(_) => "majority",
            Strategy::Eclipse(_) => "eclipse",
            Strategy::Censor(_) => "censor",
        }
    }
}

/// An honest node's rule for ties with an attacker's block: when two
/// blocks of equal work compete and exactly one pays a favoured script,
/// the node mines on that one with probability γ (of that script) and on
/// the other otherwise — whichever arrived first — and passes the favoured
/// block on either way, so every honest node hears of it. With every honest
/// node following the rule, a share γ of the honest hashrate (in
/// expectation) mines on the attacker's block: Eyal & Sirer's γ.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct TieBreak {
    /// Favoured payout scripts and their γ.
    pub favoured: BTreeMap<ScriptBuf, f64>,
}

impl TieBreak {
    /// The γ of a block paying `payout`, if it is favoured.
    pub fn gamma(&self, payout: &ScriptBuf) -> Option<f64> {
        self.favoured.get(payout).copied()
    }

    /// Whether the rule decides a tie between blocks paying `a` and `b`:
    /// exactly one of them is favoured.
    pub fn applies(&self, a: &ScriptBuf, b: &ScriptBuf) -> bool {
        self.gamma(a).is_some() != self.gamma(b).is_some()
    }

    /// Decides a tie between the current tip (paying `tip`) and a new
    /// block (paying `new`) with a uniform draw `u` in [0, 1): `Some(true)`
    /// to switch to the new block, `Some(false)` to keep the tip, `None`
    /// when the rule does not apply (neither or both favoured).
    pub fn decide(&self, tip: &ScriptBuf, new: &ScriptBuf, u: f64) -> Option<bool> {
        match (self.gamma(tip), self.gamma(new)) {
            (None, Some(g)) => Some(u < g),
            (Some(g), None) => Some(u >= g),
            _ => None,
        }
    }
}

// ----- closed forms --------------------------------------------------------

/// Nakamoto's estimate (Bitcoin white paper, section 11) of the probability
/// that an attacker with hashrate share `q` ever catches up after the
/// merchant waited `z` confirmations: the attacker's progress while the
/// honest network mines z blocks taken as Poisson with mean z·q/p, and
/// catching up (a tie) from k behind as (q/p)^k.
pub fn nakamoto_success(q: f64, z: u32) -> f64 {
    let p = 1.0 - q;
    if q >= p {
        return 1.0;
    }
    let lambda = f64::from(z) * q / p;
    let mut sum = 1.0;
    let mut poisson = (-lambda).exp();
    for k in 0..=z {
        if k > 0 {
            poisson *= lambda / f64::from(k);
        }
        sum -= poisson * (1.0 - (q / p).powi((z - k) as i32));
    }
    sum.clamp(0.0, 1.0)
}

/// Rosenfeld's exact probability ("Analysis of hashrate-based double
/// spending", 2012) for the same race: the attacker's blocks while the
/// honest network mines z are negative binomial,
/// `r = 1 − Σ_{m=0}^{z} C(m+z−1, m)(p^z q^m − p^m q^z)` for q < p, 1 otherwise.
/// As in Nakamoto's model a tie counts as success (Rosenfeld lets the
/// attacker pre-mine one block, so catching up means being one ahead).
pub fn rosenfeld_success(q: f64, z: u32) -> f64 {
    let p = 1.0 - q;
    if q >= p || z == 0 {
        return 1.0;
    }
    let mut sum = 0.0;
    let mut c = 1.0;
    for m in 0..=z {
        if m > 0 {
            c *= f64::from(m + z - 1) / f64::from(m);
        }
        sum += c * (p.powi(z as i32) * q.powi(m as i32) - p.powi(m as i32) * q.powi(z as i32));
    }
    (1.0 - sum).clamp(0.0, 1.0)
}

/// The success probability of exactly the [`Race`] rules for a double
/// spend, with instant propagation: the attacker starts when the payment is
/// sent and the payment is in the first honest block; it releases once the
/// honest network has mined z blocks and the private chain is *strictly*
/// longer (no pre-mined block), and gives up `give_up` blocks behind
/// (`None`: never). Computed exactly: the attacker's count at each honest
/// block (a Markov chain on `0..=z`, anything beyond z already wins), then
/// the gambler's ruin from the deficit left at the z-th honest block.
pub fn race_success(q: f64, z: u32, give_up: Option<u32>) -> f64 {
    let p = 1.0 - q;
    if q <= 0.0 {
        return 0.0;
    }
    if p <= 0.0 {
        return 1.0;
    }
    let z = z.max(1) as usize;
    let g = give_up.map(|g| g.max(1) as i64);
    // Probability of reaching deficit −1 (one ahead) from deficit d before
    // deficit g.
    let ruin = |d: i64| -> f64 {
        if d < 0 {
            return 1.0;
        }
        match g {
            None if q >= p => 1.0,
            None => (q / p).powi((d + 1) as i32),
            Some(g) if d >= g => 0.0,
            Some(g) => {
                let (x, n) = ((g - d) as i32, (g + 1) as i32);
                if (q - p).abs() < 1e-12 {
                    f64::from(x) / f64::from(n)
                } else {
                    let r = p / q;
                    (1.0 - r.powi(x)) / (1.0 - r.powi(n))
                }
            }
        }
    };
    let mut success = 0.0;
    // dist[a]: attacker at a blocks when the h-th honest block is found.
    let mut dist = vec![0.0; z + 1];
    dist[0] = 1.0;
    for h in 1..=z {
        let mut next = vec![0.0; z + 1];
        for (a0, m) in dist.iter().enumerate() {
            if *m == 0.0 {
                continue;
            }
            // The attacker finds k more blocks before the honest one.
            let mut w = *m;
            for slot in next.iter_mut().skip(a0) {
                *slot += w * p;
                w *= q;
            }
            // More than z: it already leads whatever happens up to the z-th block.
            success += w;
        }
        for (a, m) in next.iter_mut().enumerate() {
            if g.is_some_and(|g| h as i64 - a as i64 >= g) {
                *m = 0.0;
            }
        }
        dist = next;
    }
    for (a, m) in dist.iter().enumerate() {
        success += m * ruin(z as i64 - a as i64);
    }
    success.clamp(0.0, 1.0)
}

/// Eyal & Sirer's revenue share of a selfish pool with hashrate share
/// `alpha` when a share `gamma` of the honest hashrate mines on its block
/// in a race: `[α(1−α)²(4α + γ(1−2α)) − α³] / [1 − α(1 + (2−α)α)]`.
pub fn selfish_revenue(alpha: f64, gamma: f64) -> f64 {
    let a = alpha;
    (a * (1.0 - a).powi(2) * (4.0 * a + gamma * (1.0 - 2.0 * a)) - a.powi(3))
        / (1.0 - a * (1.0 + (2.0 - a) * a))
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

    #[test]
    fn race_releases_only_past_the_target_and_ahead() {
        // Fork at 10, target 12 (payment at 11, z = 2), give up 3 behind.
        let mut r = Race::new(10, Some(12), Some(3));
        assert_eq!(r.on_mined(1, 11), RaceStep::Continue);
        assert_eq!(r.on_mined(2, 12), RaceStep::Continue);
        assert_eq!(r.on_mined(3, 13), RaceStep::Continue, "ahead, but the target is not reached");
        assert_eq!(r.on_public(11), RaceStep::Continue);
        assert!(r.is_hidden(2));
        // The public chain reaches the target while the private one leads.
        assert_eq!(r.on_public(12), RaceStep::Release(vec![1, 2, 3]));
        assert_eq!(r.outcome(), Some(RaceOutcome::Released { private: 3, public: 2 }));
        assert!(!r.is_hidden(2));
        // Over: nothing more happens.
        assert_eq!(r.on_mined(4, 14), RaceStep::Continue);
        assert_eq!(r.on_public(20), RaceStep::Continue);
    }

    #[test]
    fn race_needs_a_strictly_longer_chain() {
        let mut r = Race::new(0, Some(2), None);
        r.on_public(2);
        assert_eq!(r.on_mined(1, 1), RaceStep::Continue);
        assert_eq!(r.on_mined(2, 2), RaceStep::Continue, "a tie does not release");
        assert_eq!(r.on_mined(3, 3), RaceStep::Release(vec![1, 2, 3]));
    }

    #[test]
    fn race_waits_for_an_unknown_target_and_gives_up_behind() {
        let mut r = Race::new(5, None, Some(2));
        r.on_mined(1, 6);
        r.on_mined(2, 7);
        assert_eq!(r.on_public(6), RaceStep::Continue, "no target yet: no release");
        assert_eq!(r.set_target(Some(6)), RaceStep::Release(vec![1, 2]));
        let mut r = Race::new(5, Some(8), Some(2));
        r.on_mined(1, 6);
        assert_eq!(r.on_public(7), RaceStep::Continue, "one behind");
        assert_eq!(r.on_public(8), RaceStep::GiveUp, "two behind");
        assert_eq!(r.outcome(), Some(RaceOutcome::GaveUp { private: 1, public: 3 }));
        assert!(r.hidden().next().is_none());
    }

    #[test]
    fn majority_race_replaces_at_least_depth_blocks() {
        // D = 3 from fork 0: released only with 3 public blocks behind it.
        let mut r = Race::new(0, Some(3), None);
        let mut id = 0;
        for h in 1..=4 {
            id += 1;
            assert_eq!(r.on_mined(id, h), RaceStep::Continue);
        }
        assert_eq!(r.on_public(2), RaceStep::Continue);
        let RaceStep::Release(blocks) = r.on_public(3) else { panic!("release") };
        assert_eq!(blocks, vec![1, 2, 3, 4]);
        let Some(RaceOutcome::Released { public, private }) = r.outcome() else { panic!() };
        assert!(public >= 3 && private > public);
    }

    #[test]
    fn tie_break_sides_with_the_favoured_block_with_probability_gamma() {
        let a = ScriptBuf::from_bytes(vec![1]);
        let h = ScriptBuf::from_bytes(vec![2]);
        let t = TieBreak { favoured: [(a.clone(), 0.3)].into_iter().collect() };
        assert_eq!(t.decide(&h, &a, 0.29), Some(true));
        assert_eq!(t.decide(&h, &a, 0.31), Some(false));
        assert_eq!(t.decide(&a, &h, 0.29), Some(false), "keeps the favoured tip");
        assert_eq!(t.decide(&a, &h, 0.31), Some(true));
        assert_eq!(t.decide(&h, &h, 0.0), None);
        assert_eq!(t.decide(&a, &a, 0.0), None);
        assert!(t.applies(&a, &h) && t.applies(&h, &a) && !t.applies(&h, &h) && !t.applies(&a, &a));
    }

    #[test]
    fn censor_plan_matches_outputs_and_spent_outputs() {
        let bad = ScriptBuf::from_bytes(vec![9]);
        let ok = ScriptBuf::from_bytes(vec![1]);
        let c = CensorPlan { scripts: vec![bad.clone()] };
        assert!(c.censors([&ok, &bad], []));
        assert!(c.censors([&ok], [&bad]));
        assert!(!c.censors([&ok], [&ok]));
    }

    #[test]
    fn nakamoto_matches_the_white_paper_table() {
        // q = 0.1 and q = 0.3 columns of section 11.
        for (q, z, want) in [
            (0.1, 0, 1.0),
            (0.1, 1, 0.2045873),
            (0.1, 2, 0.0509779),
            (0.1, 5, 0.0009137),
            (0.1, 10, 0.0000012),
            (0.3, 5, 0.1773523),
            (0.3, 10, 0.0416605),
        ] {
            let got = nakamoto_success(q, z);
            assert!((got - want).abs() < 5e-7, "q={q} z={z}: {got} vs {want}");
        }
        assert_eq!(nakamoto_success(0.5, 6), 1.0);
    }

    #[test]
    fn rosenfeld_small_cases_by_hand() {
        // z = 1: the attacker needs its first block before the honest one,
        // or to catch up later: 1 − (p − q) = 2q.
        for q in [0.1, 0.2, 0.4] {
            assert!((rosenfeld_success(q, 1) - 2.0 * q).abs() < 1e-12);
        }
        // z = 2, q = 0.1: 1 − [(p²−q²) + 2(p²q − pq²)].
        let (p, q) = (0.9, 0.1);
        let want = 1.0 - ((p * p - q * q) + 2.0 * (p * p * q - p * q * q));
        assert!((rosenfeld_success(0.1, 2) - want).abs() < 1e-12);
        assert_eq!(rosenfeld_success(0.6, 3), 1.0);
        // Exact is above Nakamoto's estimate for these parameters.
        assert!(rosenfeld_success(0.1, 6) > nakamoto_success(0.1, 6));
    }

    #[test]
    fn race_success_closed_forms_agree() {
        // Never giving up: Σ_m NegBin(m) · (q/p)^(z−m+1), m ≤ z; 1 beyond.
        for (q, z) in [(0.1f64, 1u32), (0.25, 3), (0.4, 6)] {
            let p = 1.0 - q;
            let mut want = 0.0;
            let mut c = 1.0;
            let mut below = 0.0;
            for m in 0..=z {
                if m > 0 {
                    c *= f64::from(m + z - 1) / f64::from(m);
                }
                let pm = c * p.powi(z as i32) * q.powi(m as i32);
                below += pm;
                want += pm * (q / p).powi((z - m + 1) as i32);
            }
            want += 1.0 - below;
            let got = race_success(q, z, None);
            assert!((got - want).abs() < 1e-9, "q={q} z={z}: {got} vs {want}");
            // Surpassing is harder than tying; giving up makes it harder still.
            assert!(got < rosenfeld_success(q, z));
            assert!(race_success(q, z, Some(3)) < got);
        }
        // z = 1, give up 1 behind, by hand: an honest block first fails
        // (deficit 1); an attacker block first, then either another one
        // (two ahead: wins) or an honest one (a tie at the target), after
        // which the next block decides.
        let (q, p) = (0.3, 0.7);
        let want = q * (q + p * q);
        assert!((race_success(q, 1, Some(1)) - want).abs() < 1e-12);
        assert_eq!(race_success(0.0, 3, None), 0.0);
        assert_eq!(race_success(0.6, 3, None), 1.0);
    }

    #[test]
    fn selfish_revenue_known_points() {
        // Break-even at α = 1/3 for γ = 0 and at α = 1/4 for γ = 1/2.
        assert!((selfish_revenue(1.0 / 3.0, 0.0) - 1.0 / 3.0).abs() < 1e-12);
        assert!((selfish_revenue(0.25, 0.5) - 0.25).abs() < 1e-12);
        assert!(selfish_revenue(0.2, 0.0) < 0.2);
        assert!(selfish_revenue(0.4, 0.0) > 0.4);
    }
}
