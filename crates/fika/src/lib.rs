//! Running a scenario: build the network its file describes, drive it in the
//! simulator, stream its events and write its outputs.
//!
//! The command line (`main.rs`) is a thin shell over [`run`]; tests call
//! [`run`] directly.

pub mod bitcoin;
pub mod client;
mod offload;
pub mod powpeg;
pub mod sweep;

use std::fs;
use std::io::BufWriter;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use fika_core::{Event, EventSink, NodeId, SimTime, TraceDigest, derive_rng};
use fika_gossip::{GossipNode, Origination};
use fika_report::{JsonlWriter, PropagationSummary, PropagationTracker, SummaryTable, peak_rss_bytes};
use fika_scenario::{Layout, ProtocolKind, Scenario};
use fika_sim::{Net, Progress, SimStats, Simulation};
use rand::Rng;
use serde::Serialize;

/// Why a run failed (after its scenario was accepted).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RunError {
    /// The network could not be built.
    #[error(transparent)]
    Build(#[from] fika_scenario::BuildError),
    /// An output could not be written.
    #[error("writing {path}: {source}")]
    Output {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Options of one run.
#[derive(Clone, Debug, Default)]
pub struct RunOptions {
    /// Replaces the scenario's seed.
    pub seed: Option<u64>,
    /// Where outputs go; nothing is written without it.
    pub out: Option<PathBuf>,
}

/// What a run produced.
#[derive(Clone, Debug, Serialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed used.
    pub seed: u64,
    /// Number of nodes.
    pub nodes: usize,
    /// Number of links.
    pub links: usize,
    /// Virtual time reached, seconds.
    pub virtual_time_s: f64,
    /// Wall time of the simulation loop, seconds.
    pub wall_s: f64,
    /// Events handled per wall second.
    pub events_per_s: f64,
    /// Peak resident memory of the process, bytes.
    pub peak_rss_bytes: Option<u64>,
    /// Engine counters.
    pub stats: SimStats,
    /// Events emitted by nodes and the runtime.
    pub observations: u64,
    /// Item propagation, where the protocol floods items (blocks for bitcoin).
    pub propagation: Option<PropagationSummary>,
    /// Chain results, for the bitcoin protocol.
    pub bitcoin: Option<bitcoin::BitcoinReport>,
    /// Peg results, for the powpeg protocol.
    pub powpeg: Option<powpeg::PegReport>,
    /// SHA-256 over the event trace.
    pub digest: String,
}

impl RunReport {
    /// The summary table printed at the end of a run.
    pub fn table(&self) -> SummaryTable {
        let mut t = SummaryTable::new();
        t.row("scenario", &self.scenario)
            .row("seed", self.seed)
            .row("nodes / links", format!("{} / {}", self.nodes, self.links))
            .row("virtual time", format!("{:.3} s", self.virtual_time_s))
            .row("events", self.stats.events)
            .row("wall time", format!("{:.3} s", self.wall_s))
            .row("events/s", format!("{:.0}", self.events_per_s))
            .row(
                "messages sent / delivered",
                format!("{} / {}", self.stats.messages_sent, self.stats.messages_delivered),
            )
            .row("  of which resolved at send", self.stats.resolved_at_send.to_string())
            .row(
                "dropped loss / partition / down",
                format!(
                    "{} / {} / {}",
                    self.stats.dropped_loss, self.stats.dropped_partition, self.stats.dropped_down
                ),
            );
        if let Some(p) = &self.propagation {
            let f = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.3}"));
            t.row("items propagated", p.items);
            for (i, lvl) in ["50", "90", "95", "99"].iter().enumerate() {
                t.row(
                    format!("to {lvl}% of nodes (median / p90)"),
                    format!("{} s / {} s", f(p.median_s[i]), f(p.p90_s[i])),
                );
            }
        }
        if let Some(b) = &self.bitcoin {
            let f = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{v:.1}"));
            t.row("best height / blocks mined", format!("{} / {}", b.best_height, b.blocks_mined))
                .row("stale blocks (rate)", format!("{} ({:.4})", b.stale_blocks, b.stale_rate))
                .row("mean block interval", format!("{} s", f(b.mean_block_interval_s)));
            if b.txs_created > 0 {
                t.row("txs created / confirmed", format!("{} / {}", b.txs_created, b.txs_confirmed))
                    .row("throughput", format!("{:.3} tx/s", b.throughput_tps))
                    .row(
                        "1st / 6th confirmation (median)",
                        format!("{} s / {} s", f(b.confirmation_1_s[0]), f(b.confirmation_6_s[0])),
                    );
            }
            if b.mempool_txs_max > 0 {
                t.row(
                    "mempool txs (mean / max)",
                    format!("{:.1} / {}", b.mempool_txs_mean, b.mempool_txs_max),
                );
            }
            t.row("value conservation", if b.conservation_ok { "ok" } else { "VIOLATED" });
            if b.max_reorg_depth > 1 {
                t.row("deepest reorg", format!("{} blocks", b.max_reorg_depth));
            }
            if let Some(d) = &b.double_spend {
                t.row(
                    "double spend (q, z)",
                    format!(
                        "{:.3}, {}: {}, payment {}",
                        d.q,
                        d.z,
                        d.outcome,
                        if d.success { "reversed" } else { "stands" }
                    ),
                )
                .row(
                    "double spend P(success) closed forms",
                    format!(
                        "Nakamoto {:.4} / Rosenfeld {:.4} / these rules {:.4}",
                        d.nakamoto, d.rosenfeld, d.model
                    ),
                );
            }
            if let Some(m) = &b.majority {
                t.row(
                    "majority reorg (D)",
                    format!(
                        "{}: {} honest blocks replaced ({})",
                        m.outcome,
                        m.public_blocks.map_or("-".to_owned(), |x| x.to_string()),
                        m.depth
                    ),
                );
            }
            if let Some(e) = &b.eclipse {
                t.row(
                    "eclipsed nodes: lag / wasted mining",
                    format!(
                        "{:.1} blocks / {}",
                        e.mean_lag_blocks,
                        e.wasted_share.map_or("-".to_owned(), |w| format!("{:.0} %", w * 100.0))
                    ),
                );
            }
            if let Some(c) = &b.censorship {
                t.row(
                    "censored / other txs: mean 1st confirmation",
                    format!(
                        "{} s / {} s (closed form {} s, c = {:.2})",
                        f(c.confirmation_mean_s.0),
                        f(c.confirmation_mean_s.1),
                        f(c.censored_expected_s),
                        c.censor_hashrate_share
                    ),
                );
            }
            for w in b.wallets.iter().take(10) {
                t.row(
                    format!("balance {}", w.name),
                    format!("{:.8} BTC (+{:.8} unconfirmed)", w.confirmed_btc, w.unconfirmed_btc),
                );
            }
        }
        if let Some(p) = &self.powpeg {
            let f = |x: Option<f64>| x.map_or("-".to_owned(), |v| format!("{:.1}", v / 3600.0));
            t.row("sidechain height / blocks mined", format!("{} / {}", p.side_height, p.side_blocks_mined))
                .row(
                    "peg-ins sent / credited / refunded / unrefundable",
                    format!(
                        "{} / {} / {} / {}",
                        p.pegins_sent, p.pegins_credited, p.pegins_refunded, p.pegins_unrefundable
                    ),
                )
                .row(
                    "peg-in latency (median / p90 / mean)",
                    format!(
                        "{} h / {} h / {} h",
                        f(p.pegin_latency_s[0]),
                        f(p.pegin_latency_s[1]),
                        f(p.pegin_latency_s[2])
                    ),
                )
                .row(
                    "federation BTC / RBTC credited",
                    format!("{:.8} / {:.8}", p.federation_btc, p.rbtc_credited),
                )
                .row(
                    "peg-outs sent / requested / rejected / released / on Bitcoin",
                    format!(
                        "{} / {} / {} / {} / {}",
                        p.pegouts_sent,
                        p.pegouts_requested,
                        p.pegouts_rejected,
                        p.pegouts_released,
                        p.pegouts_confirmed
                    ),
                )
                .row(
                    "peg-out txs created / released / on Bitcoin / registered",
                    format!(
                        "{} / {} / {} / {}",
                        p.pegout_txs[0], p.pegout_txs[1], p.pegout_txs[2], p.pegout_txs[3]
                    ),
                )
                .row(
                    "peg-out latency to release / to Bitcoin (median / p90)",
                    format!(
                        "{} h / {} h ; {} h / {} h",
                        f(p.pegout_release_latency_s[0]),
                        f(p.pegout_release_latency_s[1]),
                        f(p.pegout_confirm_latency_s[0]),
                        f(p.pegout_confirm_latency_s[1])
                    ),
                )
                .row(
                    "peg-out fees (total / median per request)",
                    format!(
                        "{:.8} BTC / {} sat",
                        p.pegout_fees_btc,
                        p.pegout_fee_per_request_sat.map_or("-".to_owned(), |v| format!("{v:.0}"))
                    ),
                )
                .row(
                    "release signatures from PowHSMs / HSM refusals",
                    format!(
                        "{} of {} / {}",
                        p.release_signatures[1], p.release_signatures[0], p.hsm_refusals
                    ),
                )
                .row(
                    "federation changes / migrations / retiring BTC left",
                    format!("{} / {} / {:.8}", p.federation_activations, p.migrations, p.retiring_btc_final),
                )
                .row(
                    "pegnatories' fee share / halted / deepest sidechain reorg",
                    format!(
                        "{} wei / {} / {} blocks",
                        p.pegnatory_fee_share_wei, p.pegnatories_halted, p.deepest_side_reorg
                    ),
                )
                .row(
                    "peg conservation",
                    if p.conservation_ok {
                        "ok at every block".to_owned()
                    } else {
                        format!("VIOLATED ({} blocks)", p.conservation_violations)
                    },
                );
        }
        if let Some(b) = self.peak_rss_bytes {
            t.row("peak memory", format!("{:.1} MB", b as f64 / 1e6));
        }
        t.row("trace digest", &self.digest);
        t
    }
}

/// Fans every event out to the digest, the JSON-lines file and collectors.
struct Sinks {
    digest: TraceDigest,
    jsonl: Option<JsonlWriter>,
    propagation: Option<PropagationTracker>,
    btc: Option<bitcoin::Collector>,
    peg: Option<powpeg::PegCollector>,
}

impl EventSink for Sinks {
    fn record(&mut self, at: SimTime, node: Option<NodeId>, event: &Event) {
        self.digest.record(at, node, event);
        if let Some(w) = &mut self.jsonl {
            w.record(at, node, event);
        }
        if let Some(p) = &mut self.propagation {
            p.record(at, node, event);
        }
        if let Some(b) = &mut self.btc {
            b.record(at, node, event);
        }
        if let Some(p) = &mut self.peg {
            p.record(at, node, event);
        }
    }
}

pub(crate) fn out_err(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Output { path: path.display().to_string(), source }
}

/// Runs `scenario`; `progress` is called periodically with the virtual time
/// reached and the events handled.
pub fn run(
    scenario: &Scenario,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunReport, RunError> {
    let mut s = scenario.clone();
    if let Some(seed) = opts.seed {
        s.seed = seed;
    }
    let layout = fika_scenario::layout(&s)?;
    if let Some(dir) = &opts.out {
        fs::create_dir_all(dir).map_err(out_err(dir))?;
        let p = dir.join("scenario.resolved.toml");
        fs::write(&p, fika_scenario::to_toml(&s)).map_err(out_err(&p))?;
    }
    let jsonl = match (&opts.out, s.output.events) {
        (Some(dir), true) => {
            let p = dir.join("events.jsonl");
            Some(JsonlWriter::create(&p, s.output.exclude.clone()).map_err(out_err(&p))?)
        }
        _ => None,
    };
    let sinks = Sinks { digest: TraceDigest::new(), jsonl, propagation: None, btc: None, peg: None };
    let net = Net::new(
        &layout.graph.adjacency(),
        layout.region.clone(),
        s.network.model.clone(),
        derive_rng(s.seed, "net", 0),
    );
    let report = match s.protocol {
        ProtocolKind::Gossip => run_gossip(&s, &layout, net, sinks, opts, progress),
        ProtocolKind::Bitcoin => run_bitcoin(&s, &layout, net, sinks, opts, progress),
        ProtocolKind::Powpeg => run_powpeg(&s, &layout, net, sinks, opts, progress),
    }?;
    if let Some(dir) = &opts.out {
        // The page is drawn from the files just written.
        fika_report::write_report(dir).map_err(|e| RunError::Output {
            path: dir.join("report.html").display().to_string(),
            source: std::io::Error::other(e.to_string()),
        })?;
    }
    Ok(report)
}

/// What a simulation leaves when it ends.
struct Driven<N> {
    nodes: Vec<N>,
    sinks: Sinks,
    stats: SimStats,
    now: SimTime,
    wall: Duration,
}

/// Runs `nodes` on the scenario's network for its duration.
fn drive<N: fika_core::Node>(
    s: &Scenario,
    layout: &Layout,
    nodes: Vec<N>,
    net: Net,
    sinks: Sinks,
    progress: &mut dyn FnMut(Progress),
) -> Driven<N> {
    // The events are recorded on a thread of their own, in order.
    let sinks = offload::Offloaded::start(sinks);
    let mut sim = Simulation::new(s.seed, nodes, net, layout.faults.clone(), sinks);
    let started = Instant::now();
    sim.run_until(SimTime::ZERO + s.duration, progress);
    let now = sim.now();
    let (nodes, sinks, stats) = sim.into_parts();
    let sinks = sinks.finish();
    let wall = started.elapsed();
    Driven { nodes, sinks, stats, now, wall }
}

/// Protocol-specific results added to the report.
#[derive(Default)]
struct Extras {
    bitcoin: Option<bitcoin::BitcoinReport>,
    powpeg: Option<powpeg::PegReport>,
}

fn run_powpeg(
    s: &Scenario,
    layout: &Layout,
    net: Net,
    mut sinks: Sinks,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunReport, RunError> {
    let mut built = powpeg::build(s, layout).map_err(RunError::Build)?;
    sinks.propagation =
        Some(PropagationTracker::new(built.btc_relays, "btc.block.mined", "btc.block.received", "hash"));
    sinks.peg = Some(powpeg::PegCollector::default());
    let nodes = std::mem::take(&mut built.nodes);
    let mut d = drive(s, layout, nodes, net, sinks, progress);
    built.nodes = d.nodes;
    let collector = d.sinks.peg.take().unwrap_or_default();
    let peg = powpeg::report(&built, &collector, opts.out.as_deref())?;
    let extras = Extras { powpeg: Some(peg), ..Extras::default() };
    finish(s, opts, layout, d.now, d.wall, d.stats, d.sinks, extras)
}

fn run_bitcoin(
    s: &Scenario,
    layout: &Layout,
    net: Net,
    mut sinks: Sinks,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunReport, RunError> {
    let Some(spec) = &s.bitcoin else {
        return Err(RunError::Build(fika_scenario::BuildError::Topology("no [bitcoin] section".into())));
    };
    let mut built = bitcoin::build(s, spec, layout);
    let full = built.nodes.iter().filter(|n| matches!(n, fika_btc::node::BtcNode::Full(_))).count();
    sinks.propagation = Some(PropagationTracker::new(full, "btc.block.mined", "btc.block.received", "hash"));
    sinks.btc = Some(bitcoin::Collector::default());
    let nodes = std::mem::take(&mut built.nodes);
    let mut d = drive(s, layout, nodes, net, sinks, progress);
    built.nodes = d.nodes;
    let collector = d.sinks.btc.take().unwrap_or_default();
    let btc = bitcoin::report(&built, layout, &collector, d.now.as_secs_f64(), opts.out.as_deref())?;
    let extras = Extras { bitcoin: Some(btc), ..Extras::default() };
    finish(s, opts, layout, d.now, d.wall, d.stats, d.sinks, extras)
}

fn run_gossip(
    s: &Scenario,
    layout: &Layout,
    net: Net,
    mut sinks: Sinks,
    opts: &RunOptions,
    progress: &mut dyn FnMut(Progress),
) -> Result<RunReport, RunError> {
    let n = layout.names.len();
    let spec = s.gossip.clone().unwrap_or_else(|| fika_scenario::GossipSpec {
        config: Default::default(),
        floods: 0,
        size_bytes: 0,
        start: Duration::ZERO,
        interval: Duration::ZERO,
    });
    let mut schedules = vec![Vec::new(); n];
    let mut rng = derive_rng(s.seed, "workload", 0);
    for i in 0..spec.floods {
        let origin = rng.gen_range(0..n.max(1));
        let at = SimTime::ZERO + spec.start + spec.interval * i;
        schedules[origin].push(Origination { at, id: i, size: spec.size_bytes });
    }
    let nodes: Vec<GossipNode> =
        schedules.into_iter().map(|sch| GossipNode::new(spec.config.clone(), sch)).collect();
    sinks.propagation = Some(PropagationTracker::new(n, "gossip.created", "gossip.have", "item"));
    let d = drive(s, layout, nodes, net, sinks, progress);
    finish(s, opts, layout, d.now, d.wall, d.stats, d.sinks, Extras::default())
}

#[allow(clippy::too_many_arguments)]
fn finish(
    s: &Scenario,
    opts: &RunOptions,
    layout: &Layout,
    now: SimTime,
    wall: Duration,
    stats: SimStats,
    sinks: Sinks,
    extras: Extras,
) -> Result<RunReport, RunError> {
    let links = layout.graph.edges.len();
    let Sinks { digest, jsonl, propagation, .. } = sinks;
    if let Some(w) = jsonl {
        let path = opts.out.clone().unwrap_or_default().join("events.jsonl");
        w.finish().map_err(out_err(&path))?;
    }
    let wall_s = wall.as_secs_f64();
    let report = RunReport {
        scenario: s.name.clone(),
        seed: s.seed,
        nodes: layout.names.len(),
        links,
        virtual_time_s: now.as_secs_f64(),
        wall_s,
        events_per_s: if wall_s > 0.0 { stats.events as f64 / wall_s } else { 0.0 },
        peak_rss_bytes: peak_rss_bytes(),
        observations: digest.events(),
        propagation: propagation.as_ref().map(PropagationTracker::summary),
        bitcoin: extras.bitcoin,
        powpeg: extras.powpeg,
        digest: digest.hex(),
        stats,
    };
    if let Some(dir) = &opts.out {
        if let Some(p) = &propagation {
            let path = dir.join("propagation.csv");
            let f = fs::File::create(&path).map_err(out_err(&path))?;
            p.write_csv(&mut BufWriter::new(f)).map_err(out_err(&path))?;
        }
        let path = dir.join("metrics.json");
        let json = serde_json::to_string_pretty(&report).unwrap_or_default();
        fs::write(&path, json + "\n").map_err(out_err(&path))?;
    }
    Ok(report)
}
