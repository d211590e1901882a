//! Running a Bitcoin-like network: build full nodes, miners and wallets from
//! the scenario, then measure what happened — block propagation, stale
//! blocks and forks, confirmation latency, throughput, mempools, miner
//! revenue and wallet balances.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::io::Write;
use std::path::Path;
use std::rc::Rc;

use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, ScriptBuf};
use fika_btc::attack::{self as atk, CensorPlan, RaceOutcome, Strategy};
use fika_btc::blockdb::{BlockDb, BlockId, Status};
use fika_btc::node::{BtcNode, FullNode, RelayConfig};
use fika_core::{Event, EventSink, NodeId, SimTime, Value};
use fika_scenario::{BitcoinSpec, Layout, Scenario};
use serde::Serialize;

use crate::RunError;

/// Collects the events the Bitcoin metrics need.
#[derive(Default)]
pub struct Collector {
    tx_created: BTreeMap<[u8; 32], u64>,
    /// (time, node, txs, vbytes) samples.
    mempool: Vec<(u64, u32, u64, u64)>,
    reorgs: BTreeMap<u64, u64>,
}

impl EventSink for Collector {
    fn record(&mut self, at: SimTime, node: Option<NodeId>, event: &Event) {
        match event.kind {
            "btc.tx.created" => {
                if let Some(Value::Hash(h)) = event.field("txid") {
                    self.tx_created.entry(*h).or_insert(at.as_nanos());
                }
            }
            "btc.mempool" => self.mempool.push((
                at.as_nanos(),
                node.map_or(0, |n| n.0),
                event.u64("txs").unwrap_or(0),
                event.u64("vbytes").unwrap_or(0),
            )),
            "btc.reorg" => *self.reorgs.entry(event.u64("depth").unwrap_or(0)).or_default() += 1,
            _ => {}
        }
    }
}

/// What was built, to read the results from.
pub struct Built {
    /// The nodes.
    pub nodes: Vec<BtcNode>,
    /// The shared store.
    pub db: Rc<RefCell<BlockDb>>,
    /// Hashrate share of each node.
    pub hash_share: Vec<f64>,
    /// Each node's strategy.
    pub strategies: Vec<Strategy>,
    /// Scripts censoring miners leave out.
    pub censored_scripts: Vec<ScriptBuf>,
    /// γ set on a selfish group, if any.
    pub selfish_gamma: Option<f64>,
}

fn btc(sat: u64) -> f64 {
    sat as f64 / 1e8
}

/// Builds the nodes of a Bitcoin scenario on one shared block store.
pub fn build(s: &Scenario, spec: &BitcoinSpec, layout: &Layout) -> Built {
    let plan = fika_scenario::btc::BtcPlan::new(s, spec, layout);
    let db = plan.store();
    let nodes = (0..layout.names.len()).map(|i| plan.node(i, &db)).collect();
    let selfish_gamma = s
        .nodes
        .iter()
        .find(|g| g.strategy.as_deref() == Some("selfish") && g.attack.gamma.is_some())
        .and_then(|g| g.attack.gamma);
    Built {
        nodes,
        db,
        hash_share: plan.hash_share,
        strategies: plan.strategies,
        censored_scripts: plan.censored_scripts,
        selfish_gamma,
    }
}

/// A wallet's balance at the end of the run.
#[derive(Clone, Debug, Serialize)]
pub struct WalletBalance {
    /// The wallet's node name.
    pub name: String,
    /// Confirmed, spendable, BTC.
    pub confirmed_btc: f64,
    /// Incoming or change not yet confirmed, BTC.
    pub unconfirmed_btc: f64,
    /// Payments made / refused.
    pub payments: (u32, u32),
}

/// A miner's share of hashrate and of the blocks on the best chain.
#[derive(Clone, Debug, Serialize)]
pub struct MinerShare {
    /// The node.
    pub name: String,
    /// Its share of the hashrate.
    pub hashrate_share: f64,
    /// Blocks it mined.
    pub mined: u64,
    /// Of those, on the final best chain.
    pub on_best_chain: u64,
    /// Its share of the best chain's blocks (revenue share).
    pub revenue_share: f64,
    /// Whether it mined selfishly (Eyal & Sirer).
    pub selfish: bool,
}

/// The Bitcoin results of a run.
#[derive(Clone, Debug, Serialize)]
pub struct BitcoinReport {
    /// Height of the final best chain.
    pub best_height: u32,
    /// Blocks mined in all.
    pub blocks_mined: u64,
    /// Mined blocks not on the final best chain.
    pub stale_blocks: u64,
    /// `stale_blocks / blocks_mined`.
    pub stale_rate: f64,
    /// Fork (stale branch) lengths: length → count.
    pub fork_lengths: BTreeMap<u32, u64>,
    /// Reorganizations seen by nodes: depth → count.
    pub reorgs: BTreeMap<u64, u64>,
    /// Mean interval between best-chain blocks, seconds.
    pub mean_block_interval_s: Option<f64>,
    /// Transactions created by wallets.
    pub txs_created: u64,
    /// Of those, confirmed on the best chain.
    pub txs_confirmed: u64,
    /// Confirmed transactions per second of virtual time.
    pub throughput_tps: f64,
    /// Median / 90th percentile seconds from creation to the first confirmation.
    pub confirmation_1_s: [Option<f64>; 2],
    /// Median / 90th percentile seconds from creation to the sixth confirmation.
    pub confirmation_6_s: [Option<f64>; 2],
    /// Largest mempool seen in a sample (transactions), and the mean over samples.
    pub mempool_txs_max: u64,
    /// Mean mempool size over samples.
    pub mempool_txs_mean: f64,
    /// Miner shares, for miners.
    pub miners: Vec<MinerShare>,
    /// Selfish miners' summed hashrate share and summed revenue share
    /// (`None` without selfish miners).
    pub selfish_hashrate_share: Option<f64>,
    /// The selfish miners' summed revenue share (share of best-chain blocks).
    pub selfish_revenue_share: Option<f64>,
    /// γ set on the selfish group, if any.
    pub selfish_gamma: Option<f64>,
    /// Eyal & Sirer's revenue R(α, γ) for the selfish miners' α and the set
    /// γ (`None` without a set γ).
    pub selfish_revenue_closed_form: Option<f64>,
    /// Deepest reorganization any node went through, blocks.
    pub max_reorg_depth: u64,
    /// The double spend, if a node attempted one.
    pub double_spend: Option<DoubleSpendReport>,
    /// The majority deep reorg, if a node attempted one.
    pub majority: Option<MajorityReport>,
    /// Eclipsed nodes, if any.
    pub eclipse: Option<EclipseReport>,
    /// Censorship, if any miner censors.
    pub censorship: Option<CensorReport>,
    /// Wallet balances.
    pub wallets: Vec<WalletBalance>,
    /// Whether the best chain's UTXO set holds exactly the premine plus the
    /// rewards claimed (no value created or lost).
    pub conservation_ok: bool,
}

/// A double spend: what happened, and the closed forms for its parameters.
#[derive(Clone, Debug, Serialize)]
pub struct DoubleSpendReport {
    /// The attacker.
    pub attacker: String,
    /// Its hashrate share, q.
    pub q: f64,
    /// Confirmations the merchant waited for, z.
    pub z: u32,
    /// Blocks behind at which the attacker gives up (`None`: never).
    pub give_up: Option<u32>,
    /// `released`, `gave-up`, `running` (the run ended first), `not-started` or `failed`.
    pub outcome: String,
    /// Whether the merchant's payment was reversed: the conflicting
    /// transaction is on the final best chain.
    pub success: bool,
    /// When the payment was sent, seconds.
    pub started_s: Option<f64>,
    /// From the payment to the release or give-up, seconds.
    pub duration_s: Option<f64>,
    /// Private blocks mined since the fork when the race ended.
    pub private_blocks: Option<u32>,
    /// Public blocks since the fork when the race ended.
    pub public_blocks: Option<u32>,
    /// Confirmations the payment had on the public chain when the race ended.
    pub confirmations_at_end: Option<u32>,
    /// Which public block after the fork held the payment (1: the first,
    /// as the closed forms assume), when the race ended.
    pub payment_block: Option<u32>,
    /// Nakamoto's estimate of the success probability for (q, z).
    pub nakamoto: f64,
    /// Rosenfeld's exact probability for (q, z) (a tie wins, no give-up).
    pub rosenfeld: f64,
    /// The exact probability of the simulated rules with instant
    /// propagation (strictly longer chain, give-up), see `fika_btc::attack::race_success`.
    pub model: f64,
}

/// A majority deep reorg.
#[derive(Clone, Debug, Serialize)]
pub struct MajorityReport {
    /// The attacker.
    pub attacker: String,
    /// Its hashrate share.
    pub q: f64,
    /// Honest blocks its release was to replace, D.
    pub depth: u32,
    /// `released`, `gave-up`, `running` or `not-started`.
    pub outcome: String,
    /// Honest blocks since the fork when it released (what the reorg replaced, as the attacker saw it).
    pub public_blocks: Option<u32>,
    /// Its private blocks at the release.
    pub private_blocks: Option<u32>,
    /// When it started and released, seconds.
    pub started_s: Option<f64>,
    /// When the race ended, seconds.
    pub ended_s: Option<f64>,
}

/// Eclipsed nodes.
#[derive(Clone, Debug, Serialize)]
pub struct EclipseReport {
    /// Each victim: name, its tip's height, blocks behind the final best
    /// chain, blocks it mined, of those on the final best chain.
    pub victims: Vec<(String, u32, u32, u64, u64)>,
    /// Mean blocks behind over the victims.
    pub mean_lag_blocks: f64,
    /// The victims' summed hashrate share.
    pub victim_hashrate_share: f64,
    /// Share of the victims' mined blocks not on the final best chain (wasted work).
    pub wasted_share: Option<f64>,
}

/// Censoring miners and the delay they cause.
#[derive(Clone, Debug, Serialize)]
pub struct CensorReport {
    /// The censoring miners' summed hashrate share, c.
    pub censor_hashrate_share: f64,
    /// Wallet transactions the censors leave out / the others.
    pub txs: (u64, u64),
    /// Censored transactions found in blocks of censoring miners (should be 0).
    pub censored_in_censor_blocks: u64,
    /// Mean seconds from creation to the first confirmation: censored, others.
    pub confirmation_mean_s: (Option<f64>, Option<f64>),
    /// Closed form for the censored mean: the mean block interval / (1 − c)
    /// (memoryless mining: the wait for the next non-censoring block).
    pub censored_expected_s: Option<f64>,
}

fn mean(v: &[f64]) -> Option<f64> {
    (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64)
}

fn outcome_name(node: &FullNode) -> String {
    match node.race_record() {
        Some(r) if r.failed.is_some() => "failed",
        Some(r) => match r.outcome {
            Some(RaceOutcome::Released { .. }) => "released",
            Some(RaceOutcome::GaveUp { .. }) => "gave-up",
            None if r.started.is_some() => "running",
            None => "not-started",
        },
        None => "none",
    }
    .to_owned()
}

fn percentiles(mut v: Vec<f64>) -> [Option<f64>; 2] {
    v.sort_by(f64::total_cmp);
    [fika_report::quantile(&v, 0.5), fika_report::quantile(&v, 0.9)]
}

/// The final best chain: the valid block with most work (the earliest
/// stored on ties), among blocks not withheld by a selfish miner at the end.
fn best_tip(db: &BlockDb, hidden: &std::collections::BTreeSet<BlockId>) -> BlockId {
    let mut best = 0;
    for (i, r) in db.blocks().iter().enumerate() {
        if matches!(r.status, Status::Valid(_))
            && r.work > db.rec(best).work
            && !hidden.contains(&(i as BlockId))
        {
            best = i as BlockId;
        }
    }
    best
}

/// Computes the metrics and writes the CSV tables into `dir`.
pub fn report(
    built: &Built,
    layout: &Layout,
    collector: &Collector,
    duration_s: f64,
    dir: Option<&Path>,
) -> Result<BitcoinReport, RunError> {
    let db = built.db.borrow();
    let mut hidden = std::collections::BTreeSet::new();
    let mut selfish = vec![false; built.nodes.len()];
    for (i, node) in built.nodes.iter().enumerate() {
        if let BtcNode::Full(f) = node {
            if let Some(st) = f.selfish() {
                selfish[i] = true;
                hidden.extend(st.hidden());
            }
            if let Some(r) = f.race() {
                hidden.extend(r.hidden());
            }
        }
    }
    let tip = best_tip(&db, &hidden);
    let mut on_best = vec![false; db.len()];
    let mut chain = Vec::new();
    let mut b = Some(tip);
    while let Some(x) = b {
        on_best[x as usize] = true;
        chain.push(x);
        b = db.rec(x).parent;
    }
    chain.reverse();
    let mined: Vec<BlockId> = (0..db.len() as BlockId).filter(|i| db.rec(*i).origin.is_some()).collect();
    let stale: Vec<BlockId> = mined.iter().copied().filter(|i| !on_best[*i as usize]).collect();
    // Fork lengths: each stale branch leaving the best chain, its longest path.
    let mut depth = vec![0u32; db.len()];
    let mut fork_lengths: BTreeMap<u32, u64> = BTreeMap::new();
    for i in 0..db.len() {
        if on_best[i] {
            continue;
        }
        let p = db.rec(i as BlockId).parent.map_or(0, |p| p as usize);
        depth[i] = if on_best[p] { 1 } else { depth[p] + 1 };
    }
    // A branch ends at a stale block without stale children.
    let mut has_stale_child = vec![false; db.len()];
    for i in 0..db.len() {
        if !on_best[i] {
            if let Some(p) = db.rec(i as BlockId).parent {
                has_stale_child[p as usize] = true;
            }
        }
    }
    for i in 0..db.len() {
        if !on_best[i] && depth[i] > 0 && !has_stale_child[i] {
            *fork_lengths.entry(depth[i]).or_default() += 1;
        }
    }
    // Confirmations.
    let mut included: BTreeMap<[u8; 32], u32> = BTreeMap::new();
    let mut confirmed_txs = 0u64;
    for (h, id) in chain.iter().enumerate() {
        for tx in db.rec(*id).data.block.txdata.iter().skip(1) {
            included.insert(tx.compute_txid().to_byte_array(), h as u32);
            confirmed_txs += 1;
        }
    }
    let block_time = |h: u32| chain.get(h as usize).and_then(|id| db.rec(*id).origin).map(|o| o.at_ns);
    let mut c1 = Vec::new();
    let mut c6 = Vec::new();
    let mut conf_rows = Vec::new();
    let mut created_confirmed = 0u64;
    for (txid, created) in &collector.tx_created {
        let h = included.get(txid);
        let t1 = h.and_then(|h| block_time(*h)).map(|t| t.saturating_sub(*created) as f64 / 1e9);
        let t6 = h.and_then(|h| block_time(h + 5)).map(|t| t.saturating_sub(*created) as f64 / 1e9);
        if let Some(t) = t1 {
            c1.push(t);
            created_confirmed += 1;
        }
        if let Some(t) = t6 {
            c6.push(t);
        }
        conf_rows.push((*txid, *created, t1, t6));
    }
    let times: Vec<u64> = chain.iter().filter_map(|id| db.rec(*id).origin.map(|o| o.at_ns)).collect();
    let mean_block_interval_s = (times.len() >= 2)
        .then(|| (times[times.len() - 1] - times[0]) as f64 / 1e9 / (times.len() - 1) as f64);
    // Miners.
    let mut by_miner: BTreeMap<u32, (u64, u64)> = BTreeMap::new();
    for id in &mined {
        if let Some(o) = db.rec(*id).origin {
            let e = by_miner.entry(o.miner).or_default();
            e.0 += 1;
            e.1 += u64::from(on_best[*id as usize]);
        }
    }
    let best_blocks = (chain.len() as u64).saturating_sub(1);
    let mut miners: Vec<MinerShare> = Vec::new();
    for (i, share) in built.hash_share.iter().enumerate() {
        if *share <= 0.0 {
            continue;
        }
        let (m, b) = by_miner.get(&(i as u32)).copied().unwrap_or((0, 0));
        miners.push(MinerShare {
            name: layout.names[i].clone(),
            hashrate_share: *share,
            mined: m,
            on_best_chain: b,
            revenue_share: if best_blocks > 0 { b as f64 / best_blocks as f64 } else { 0.0 },
            selfish: selfish[i],
        });
    }
    let any_selfish = miners.iter().any(|m| m.selfish);
    let selfish_sum = |f: fn(&MinerShare) -> f64| {
        any_selfish.then(|| miners.iter().filter(|m| m.selfish).map(f).sum::<f64>())
    };
    let selfish_hashrate_share = selfish_sum(|m| m.hashrate_share);
    let selfish_revenue_share = selfish_sum(|m| m.revenue_share);
    let selfish_revenue_closed_form =
        selfish_hashrate_share.zip(built.selfish_gamma).map(|(a, g)| atk::selfish_revenue(a, g));
    let attacks = AttackInputs { built, layout, db: &db, on_best: &on_best, tip, collector };
    let double_spend = attacks.double_spend();
    let majority = attacks.majority();
    let eclipse = attacks.eclipse();
    let censorship = attacks.censorship(&included, &block_time, mean_block_interval_s);
    // Wallets.
    let mut wallets = Vec::new();
    for (i, node) in built.nodes.iter().enumerate() {
        if let BtcNode::Wallet(w) = node {
            let b = w.balance();
            wallets.push(WalletBalance {
                name: layout.names[i].clone(),
                confirmed_btc: btc(b.confirmed.to_sat() + b.locked.to_sat()),
                unconfirmed_btc: btc(b.unconfirmed.to_sat()),
                payments: w.payments(),
            });
        }
    }
    // Conservation on the best chain: coins = premine + claimed coinbase outputs.
    let conservation_ok = db.utxo(tip).is_some_and(|u| {
        let held: u64 = u.0.values().map(|c| c.txout.value.to_sat()).sum();
        let premine = db.premine_value().to_sat();
        let claimed: u64 = chain
            .iter()
            .skip(1)
            .map(|id| db.rec(*id).data.block.txdata[0].output.iter().map(|o| o.value.to_sat()).sum::<u64>())
            .sum();
        let fees: u64 = chain.iter().skip(1).map(|id| db.rec(*id).fees.to_sat()).sum();
        // Fees move value from transactions to coinbases: net zero.
        held + fees == premine + claimed
    });
    let mempool_txs_max = collector.mempool.iter().map(|m| m.2).max().unwrap_or(0);
    let mempool_txs_mean = if collector.mempool.is_empty() {
        0.0
    } else {
        collector.mempool.iter().map(|m| m.2 as f64).sum::<f64>() / collector.mempool.len() as f64
    };
    let report = BitcoinReport {
        best_height: db.rec(tip).height,
        blocks_mined: mined.len() as u64,
        stale_blocks: stale.len() as u64,
        stale_rate: if mined.is_empty() { 0.0 } else { stale.len() as f64 / mined.len() as f64 },
        fork_lengths,
        reorgs: collector.reorgs.clone(),
        mean_block_interval_s,
        txs_created: collector.tx_created.len() as u64,
        txs_confirmed: created_confirmed,
        throughput_tps: if duration_s > 0.0 { confirmed_txs as f64 / duration_s } else { 0.0 },
        confirmation_1_s: percentiles(c1),
        confirmation_6_s: percentiles(c6),
        mempool_txs_max,
        mempool_txs_mean,
        miners,
        selfish_hashrate_share,
        selfish_revenue_share,
        selfish_gamma: built.selfish_gamma,
        selfish_revenue_closed_form,
        max_reorg_depth: collector.reorgs.keys().next_back().copied().unwrap_or(0),
        double_spend,
        majority,
        eclipse,
        censorship,
        wallets,
        conservation_ok,
    };
    if let Some(dir) = dir {
        write_csvs(dir, &db, &on_best, layout, &report, &conf_rows, collector)?;
    }
    Ok(report)
}

/// What the attack summaries read.
struct AttackInputs<'a> {
    built: &'a Built,
    layout: &'a Layout,
    db: &'a BlockDb,
    on_best: &'a [bool],
    tip: BlockId,
    collector: &'a Collector,
}

impl AttackInputs<'_> {
    fn full(&self, strategy: &str) -> Vec<(usize, &FullNode)> {
        self.built
            .nodes
            .iter()
            .enumerate()
            .filter_map(|(i, n)| match n {
                BtcNode::Full(f) if f.strategy_name() == strategy => Some((i, f)),
                _ => None,
            })
            .collect()
    }

    fn secs(t: Option<fika_core::SimTime>) -> Option<f64> {
        t.map(|t| t.as_secs_f64())
    }

    fn double_spend(&self) -> Option<DoubleSpendReport> {
        let (i, node) = self.full("double-spend").into_iter().next()?;
        let Strategy::DoubleSpend(plan) = &self.built.strategies[i] else { return None };
        let r = node.race_record()?;
        let q = self.built.hash_share[i];
        let (z, give_up) = (plan.confirmations, plan.give_up);
        let utxo = self.db.utxo(self.tip);
        let success =
            r.conflict.is_some_and(|c| utxo.is_some_and(|u| u.0.contains_key(&OutPoint::new(c, 0))));
        let (private, public) = match r.outcome {
            Some(RaceOutcome::Released { private, public } | RaceOutcome::GaveUp { private, public }) => {
                (Some(private), Some(public))
            }
            None => (None, None),
        };
        Some(DoubleSpendReport {
            attacker: self.layout.names[i].clone(),
            q,
            z,
            give_up,
            outcome: outcome_name(node),
            success,
            started_s: Self::secs(r.started),
            duration_s: r.started.zip(r.ended).map(|(a, b)| (b - a).as_secs_f64()),
            private_blocks: private,
            public_blocks: public,
            confirmations_at_end: r.confirmations_at_end,
            payment_block: public
                .zip(r.confirmations_at_end.filter(|c| *c > 0))
                .map(|(p, c)| (p + 1).saturating_sub(c)),
            nakamoto: atk::nakamoto_success(q, z),
            rosenfeld: atk::rosenfeld_success(q, z),
            model: atk::race_success(q, z, give_up),
        })
    }

    fn majority(&self) -> Option<MajorityReport> {
        let (i, node) = self.full("majority").into_iter().next()?;
        let Strategy::Majority(plan) = &self.built.strategies[i] else { return None };
        let r = node.race_record()?;
        let (private, public) = match r.outcome {
            Some(RaceOutcome::Released { private, public } | RaceOutcome::GaveUp { private, public }) => {
                (Some(private), Some(public))
            }
            None => (None, None),
        };
        Some(MajorityReport {
            attacker: self.layout.names[i].clone(),
            q: self.built.hash_share[i],
            depth: plan.depth,
            outcome: outcome_name(node),
            public_blocks: public,
            private_blocks: private,
            started_s: Self::secs(r.started),
            ended_s: Self::secs(r.ended),
        })
    }

    fn eclipse(&self) -> Option<EclipseReport> {
        let mut victims: Vec<usize> = self
            .full("eclipse")
            .iter()
            .filter_map(|(_, n)| n.eclipse_plan())
            .flat_map(|p| p.victims.iter().map(|v| v.index()))
            .collect();
        victims.sort_unstable();
        victims.dedup();
        if victims.is_empty() {
            return None;
        }
        let best = self.db.rec(self.tip).height;
        let mut mined: BTreeMap<usize, (u64, u64)> = BTreeMap::new();
        for (id, r) in self.db.blocks().iter().enumerate() {
            if let Some(o) = r.origin.filter(|o| victims.contains(&(o.miner as usize))) {
                let e = mined.entry(o.miner as usize).or_default();
                e.0 += 1;
                e.1 += u64::from(self.on_best[id]);
            }
        }
        let rows: Vec<(String, u32, u32, u64, u64)> = victims
            .iter()
            .map(|v| {
                let h = match &self.built.nodes[*v] {
                    BtcNode::Full(f) => f.tip_height(),
                    BtcNode::Wallet(_) => 0,
                };
                let (m, b) = mined.get(v).copied().unwrap_or((0, 0));
                (self.layout.names[*v].clone(), h, best.saturating_sub(h), m, b)
            })
            .collect();
        let (m, b): (u64, u64) = rows.iter().fold((0, 0), |acc, r| (acc.0 + r.3, acc.1 + r.4));
        Some(EclipseReport {
            mean_lag_blocks: rows.iter().map(|r| f64::from(r.2)).sum::<f64>() / rows.len() as f64,
            victim_hashrate_share: victims.iter().map(|v| self.built.hash_share[*v]).sum(),
            wasted_share: (m > 0).then(|| (m - b) as f64 / m as f64),
            victims: rows,
        })
    }

    fn censorship(
        &self,
        included: &BTreeMap<[u8; 32], u32>,
        block_time: &dyn Fn(u32) -> Option<u64>,
        mean_interval: Option<f64>,
    ) -> Option<CensorReport> {
        let censors = self.full("censor");
        if censors.is_empty() {
            return None;
        }
        let c: f64 = censors.iter().map(|(i, _)| self.built.hash_share[*i]).sum();
        let plan = CensorPlan { scripts: self.built.censored_scripts.clone() };
        let censor_ids: Vec<u32> = censors.iter().map(|(i, _)| *i as u32).collect();
        let mut in_censor_blocks = 0u64;
        for r in self.db.blocks().iter().filter(|r| r.origin.is_some_and(|o| censor_ids.contains(&o.miner))) {
            in_censor_blocks +=
                r.data.block.txdata.iter().skip(1).filter(|tx| plan.censors_tx(self.db, tx)).count() as u64;
        }
        let (mut cens, mut other) = (Vec::new(), Vec::new());
        let (mut n_cens, mut n_other) = (0u64, 0u64);
        for (txid, created) in &self.collector.tx_created {
            let hash = bitcoin::Txid::from_byte_array(*txid);
            let Some(idx) = self.db.tx_idx(&hash) else { continue };
            let censored = plan.censors_tx(self.db, &self.db.tx(idx).tx);
            let t1 = included
                .get(txid)
                .and_then(|h| block_time(*h))
                .map(|t| t.saturating_sub(*created) as f64 / 1e9);
            if censored {
                n_cens += 1;
                cens.extend(t1);
            } else {
                n_other += 1;
                other.extend(t1);
            }
        }
        Some(CensorReport {
            censor_hashrate_share: c,
            txs: (n_cens, n_other),
            censored_in_censor_blocks: in_censor_blocks,
            confirmation_mean_s: (mean(&cens), mean(&other)),
            censored_expected_s: mean_interval.filter(|_| c < 1.0).map(|t| t / (1.0 - c)),
        })
    }
}

type ConfRow = ([u8; 32], u64, Option<f64>, Option<f64>);

fn write_csvs(
    dir: &Path,
    db: &BlockDb,
    on_best: &[bool],
    layout: &Layout,
    report: &BitcoinReport,
    conf_rows: &[ConfRow],
    collector: &Collector,
) -> Result<(), RunError> {
    let cell = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.3}"));
    let write = |name: &str, text: String| {
        let path = dir.join(name);
        fs::File::create(&path).and_then(|mut f| f.write_all(text.as_bytes())).map_err(crate::out_err(&path))
    };
    let mut t = String::from("hash,height,miner,mined_s,txs,size_bytes,on_best_chain\n");
    for r in db.blocks().iter().filter(|r| r.origin.is_some()) {
        let o = r.origin.map(|o| o.at_ns).unwrap_or(0);
        let miner = r.origin.map(|o| layout.names[o.miner as usize].clone()).unwrap_or_default();
        let id = db.id_of(&r.data.hash).unwrap_or(0) as usize;
        t += &format!(
            "{},{},{},{:.3},{},{},{}\n",
            r.data.hash,
            r.height,
            miner,
            o as f64 / 1e9,
            r.data.block.txdata.len(),
            r.data.size(),
            on_best[id]
        );
    }
    write("blocks.csv", t)?;
    let mut t = String::from("txid,created_s,first_confirmation_s,sixth_confirmation_s\n");
    for (txid, created, t1, t6) in conf_rows {
        let mut id = *txid;
        id.reverse();
        t += &format!("{},{:.3},{},{}\n", hex_of(&id), *created as f64 / 1e9, cell(*t1), cell(*t6));
    }
    write("confirmations.csv", t)?;
    let mut t = String::from("node,hashrate_share,mined,on_best_chain,revenue_share\n");
    for m in &report.miners {
        t += &format!(
            "{},{:.6},{},{},{:.6}\n",
            m.name, m.hashrate_share, m.mined, m.on_best_chain, m.revenue_share
        );
    }
    write("miners.csv", t)?;
    let mut t = String::from("wallet,confirmed_btc,unconfirmed_btc,payments_sent,payments_failed\n");
    for w in &report.wallets {
        t += &format!(
            "{},{:.8},{:.8},{},{}\n",
            w.name, w.confirmed_btc, w.unconfirmed_btc, w.payments.0, w.payments.1
        );
    }
    write("wallets.csv", t)?;
    if !collector.mempool.is_empty() {
        let mut by_time: BTreeMap<u64, (u64, u64, u64, u64)> = BTreeMap::new();
        for (at, _, txs, vb) in &collector.mempool {
            let e = by_time.entry(*at / 1_000_000_000).or_default();
            e.0 += 1;
            e.1 += txs;
            e.2 = e.2.max(*txs);
            e.3 += vb;
        }
        let mut t = String::from("time_s,nodes,mean_txs,max_txs,mean_vbytes\n");
        for (s, (n, sum, max, vb)) in by_time {
            t += &format!("{s},{n},{:.2},{max},{:.1}\n", sum as f64 / n as f64, vb as f64 / n as f64);
        }
        write("mempool.csv", t)?;
    }
    Ok(())
}

fn hex_of(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Relay settings in force (for callers that need them).
pub fn relay_of(spec: &BitcoinSpec) -> &RelayConfig {
    &spec.relay
}
