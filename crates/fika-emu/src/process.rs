//! One emulated node as an OS process: what `fika-node --config FILE` (or
//! `fika node --config FILE`) runs.
//!
//! The process reads a [`NodeProcessConfig`] (JSON), rebuilds its node from
//! the scenario file and its id ([`crate::build`]), runs it
//! ([`crate::runtime::run_node`]) and reports on standard output, one line
//! per milestone, for the orchestrator:
//!
//! ```text
//! fika-emu resumed 12 0f3a…
//! fika-emu listening 127.0.0.1:40001
//! fika-emu connected 12.5
//! fika-emu started
//! fika-emu done {"node":0,"name":"server1",...}
//! ```
//!
//! A node of a PowPeg scenario ([`fika_scenario::peg`]: Bitcoin nodes,
//! merge-mining pools, sidechain nodes, pegnatories, users) runs the same
//! way over PowPeg connections ([`fika_peg::network::PegMsg`]), in memory
//! only (its `data_dir` is not used), and serves the Ethereum-style
//! methods of [`crate::rpc::eth`] if it runs a sidechain node.
//!
//! With a `data_dir`, the node keeps its state in a durable store there
//! ([`crate::store`], committed every step by [`crate::durable`]); started
//! again with the same directory it resumes from it (the `resumed` line:
//! tip height and hash) and catches up with its peers.
//!
//! With `stdin_control`, it also obeys its standard input: a line
//! `start <unix-ms>` sets the shared start instant, a line `stop` or the end
//! of input stops it (so it never outlives an orchestrator that died).

use std::collections::BTreeMap;
use std::io::{BufRead as _, Write as _};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fika_btc::node::{BtcNode, SharedDb};
use fika_core::NodeId;
use fika_peg::network::PegNode;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use crate::durable::DurableNode;
use crate::error::io_at;
use crate::runtime::{self, Control, Hooks, RunStats, RuntimeConfig, StartRule, Status};
use crate::service::{BtcHost, Caller};
use crate::store::{Identity, Store};
use crate::{EmuError, build};

/// Prefix of every status line a node process prints.
pub const LINE_PREFIX: &str = "fika-emu ";

fn one() -> f64 {
    1.0
}
fn default_max_frame() -> u32 {
    crate::wire::DEFAULT_MAX_PAYLOAD
}
fn default_connect_timeout() -> f64 {
    30.0
}

/// The configuration of one node process (a JSON file).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NodeProcessConfig {
    /// The node's id in the scenario's layout.
    pub node_id: u32,
    /// Its name (must match the layout's name for `node_id`).
    pub name: String,
    /// The run seed (replaces the scenario's, as `fika run --seed` does).
    pub seed: u64,
    /// Where to listen.
    pub listen: SocketAddr,
    /// Its peers: node id → address.
    pub peers: BTreeMap<u32, SocketAddr>,
    /// The scenario file.
    pub scenario: PathBuf,
    /// Stop after this many seconds of node time (none: when told to).
    #[serde(default)]
    pub duration_s: Option<f64>,
    /// Node seconds per wall-clock second.
    #[serde(default = "one")]
    pub speed: f64,
    /// The events file (JSON lines).
    pub events: PathBuf,
    /// Start at this Unix time in milliseconds (shared by every process).
    #[serde(default)]
    pub start_at_unix_ms: Option<u64>,
    /// Obey `start <unix-ms>` / `stop` lines and end of input on standard input.
    #[serde(default)]
    pub stdin_control: bool,
    /// Largest frame payload sent or accepted, bytes.
    #[serde(default = "default_max_frame")]
    pub max_frame_bytes: u32,
    /// Without a start time: start anyway after this many seconds without all peers.
    #[serde(default = "default_connect_timeout")]
    pub connect_timeout_s: f64,
    /// The JSON-RPC server's port on 127.0.0.1 (0: no server).
    #[serde(default)]
    pub rpc_port: u16,
    /// The RPC user (HTTP Basic authentication).
    #[serde(default)]
    pub rpc_user: String,
    /// The RPC password.
    #[serde(default)]
    pub rpc_password: String,
    /// The node's data directory: its durable store lives there, and a node
    /// started with an existing one resumes from it (none: all in memory).
    #[serde(default)]
    pub data_dir: Option<PathBuf>,
}

impl NodeProcessConfig {
    /// Reads a configuration file.
    pub fn load(path: &Path) -> Result<Self, EmuError> {
        let text = std::fs::read_to_string(path).map_err(io_at(path))?;
        serde_json::from_str(&text)
            .map_err(|e| EmuError::Config { path: path.to_path_buf(), reason: e.to_string() })
    }

    /// Writes it as pretty JSON (readable by its owner only: it holds the
    /// RPC password).
    pub fn save(&self, path: &Path) -> Result<(), EmuError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| EmuError::Config { path: path.to_path_buf(), reason: e.to_string() })?;
        crate::rpc::write_private(path, text.as_bytes())
    }

    /// The runtime configuration it stands for (after checking its values).
    pub fn runtime_config(&self) -> Result<RuntimeConfig, EmuError> {
        let secs = |field: &'static str, v: f64| {
            Duration::try_from_secs_f64(v).map_err(|_| EmuError::BadValue {
                field,
                value: v.to_string(),
                expected: "a non-negative number of seconds",
            })
        };
        let mut c = RuntimeConfig::new(NodeId(self.node_id), self.name.clone(), self.seed, self.listen);
        c.peers = self.peers.iter().map(|(id, a)| (NodeId(*id), *a)).collect();
        c.speed = self.speed;
        c.duration = self.duration_s.map(|d| secs("duration_s", d)).transpose()?;
        c.start = match (self.start_at_unix_ms, self.stdin_control) {
            (Some(ms), _) => StartRule::At(UNIX_EPOCH + Duration::from_millis(ms)),
            (None, true) => StartRule::OnCommand,
            (None, false) => StartRule::WhenConnected,
        };
        c.connect_timeout = secs("connect_timeout_s", self.connect_timeout_s)?;
        c.events = Some(self.events.clone());
        c.max_payload = self.max_frame_bytes;
        c.handle_signals = true;
        c.validate()?;
        Ok(c)
    }
}

/// The state of a Bitcoin node at the end of its run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct BtcSummary {
    /// `"full"` or `"wallet"`.
    pub kind: String,
    /// Height of its best tip (a wallet's best header).
    pub tip_height: u32,
    /// Hash of its best tip, hex in display order.
    pub tip_hash: String,
    /// Blocks in its store (full nodes).
    pub blocks_stored: usize,
    /// Transactions in its mempool (full nodes).
    pub mempool_txs: usize,
    /// Spendable balance, satoshis (wallets).
    pub confirmed_sat: u64,
    /// Incoming and change not yet confirmed, satoshis (wallets).
    pub unconfirmed_sat: u64,
    /// Confirmed coins spent by pending transactions, satoshis (wallets).
    pub locked_sat: u64,
    /// Payments made and payments refused (wallets).
    pub payments: (u32, u32),
}

impl BtcSummary {
    /// Summarizes a node (with its own store).
    pub fn of(node: &BtcNode, db: &SharedDb) -> Self {
        match node {
            BtcNode::Full(n) => {
                let db = db.borrow();
                let tip = db.rec(n.tip());
                BtcSummary {
                    kind: "full".into(),
                    tip_height: tip.height,
                    tip_hash: tip.data.hash.to_string(),
                    blocks_stored: db.len(),
                    mempool_txs: n.mempool().len(),
                    ..Default::default()
                }
            }
            BtcNode::Wallet(w) => {
                let b = w.balance();
                BtcSummary {
                    kind: "wallet".into(),
                    tip_height: w.spv().best_height(),
                    tip_hash: w.spv().best_hash().to_string(),
                    confirmed_sat: b.confirmed.to_sat(),
                    unconfirmed_sat: b.unconfirmed.to_sat(),
                    locked_sat: b.locked.to_sat(),
                    payments: w.payments(),
                    ..Default::default()
                }
            }
        }
    }
}

/// What a node process reports when it ends (its `done` line).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct ProcessReport {
    /// The node's id.
    pub node: u32,
    /// Its name.
    pub name: String,
    /// Runtime counters.
    pub stats: RunStats,
    /// The node's final state.
    pub btc: BtcSummary,
    /// Its own peak resident set size (VmHWM), KiB, where /proc exists.
    pub peak_rss_kib: Option<u64>,
    /// What its store held when it started, if it resumed from one.
    #[serde(default)]
    pub resumed: Option<crate::store::Resumed>,
    /// Its store's commit counters and file size, if it has a data directory.
    #[serde(default)]
    pub store: Option<crate::store::StoreStats>,
    /// The node's sidechain at the end, if it runs a sidechain node.
    #[serde(default)]
    pub side: Option<SideSummary>,
}

/// The state of a PowPeg node's sidechain at the end of its run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SideSummary {
    /// The node's role (`side`, `miner`, `pegnatory`).
    pub kind: String,
    /// Number of its best sidechain block.
    pub best_number: u64,
    /// Hash of its best sidechain block, `0x` hex.
    pub best_hash: String,
    /// Sidechain blocks it knows (all branches).
    pub blocks: usize,
    /// Transactions waiting in its pool.
    pub pool_txs: usize,
    /// Blocks at which the peg's conservation law failed (must be 0).
    pub conservation_violations: u32,
}

impl SideSummary {
    /// Summarizes a PowPeg node's sidechain, if it runs one.
    pub fn of(node: &PegNode) -> Option<Self> {
        let side = node.side()?;
        let chain = side.chain();
        Some(SideSummary {
            kind: node.kind().to_owned(),
            best_number: chain.best_number(),
            best_hash: format!("0x{}", crate::rpc::core_json::hex(&chain.best_hash())),
            blocks: chain.block_count(),
            pool_txs: side.pool_len(),
            conservation_violations: side.violations(),
        })
    }
}

/// A status line of a node process, parsed.
#[derive(Clone, Debug, PartialEq)]
pub enum ProcessLine {
    /// Resumed from its store at this tip height.
    Resumed(u32),
    /// Listening on this address.
    Listening(SocketAddr),
    /// All peers connected after this many ms.
    Connected(f64),
    /// The node started.
    Started,
    /// The node ended.
    Done(Box<ProcessReport>),
}

impl ProcessLine {
    /// Parses one line of a node process's standard output (`None` for
    /// lines that are not status lines).
    pub fn parse(line: &str) -> Option<Self> {
        let rest = line.strip_prefix(LINE_PREFIX)?;
        let (word, arg) = rest.split_once(' ').unwrap_or((rest, ""));
        match word {
            "resumed" => arg.split_whitespace().next()?.parse().ok().map(ProcessLine::Resumed),
            "listening" => arg.trim().parse().ok().map(ProcessLine::Listening),
            "connected" => arg.trim().parse().ok().map(ProcessLine::Connected),
            "started" => Some(ProcessLine::Started),
            "done" => serde_json::from_str(arg).ok().map(|r| ProcessLine::Done(Box::new(r))),
            _ => None,
        }
    }
}

fn say(line: std::fmt::Arguments<'_>) {
    // A closed standard output (the orchestrator died) must not kill the node.
    let mut out = std::io::stdout().lock();
    let _ = out.write_fmt(format_args!("{LINE_PREFIX}{line}\n"));
    let _ = out.flush();
}

/// Peak resident set size (VmHWM) of process `pid`, KiB, from `/proc`.
pub fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Private (anonymous) resident memory of process `pid` now (RssAnon), KiB.
pub fn private_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// Reads control lines from standard input on a thread of its own, into `tx`.
fn stdin_control(tx: mpsc::UnboundedSender<Control>) {
    std::thread::spawn(move || {
        let stdin = std::io::stdin();
        for line in stdin.lock().lines() {
            let Ok(line) = line else { break };
            let mut words = line.split_whitespace();
            let control = match (words.next(), words.next().and_then(|w| w.parse::<u64>().ok())) {
                (Some("start"), Some(ms)) => Control::Start(UNIX_EPOCH + Duration::from_millis(ms)),
                (Some("stop"), _) => break,
                _ => continue,
            };
            if tx.send(control).is_err() {
                return;
            }
        }
        let _ = tx.send(Control::Stop);
    });
}

/// The node a process runs: in memory only, or with a durable store.
enum Runner {
    Memory(Box<BtcNode>),
    Durable(Box<DurableNode>),
}

/// Starts the node's JSON-RPC server, if it has one, on the loop's `caller`.
fn serve<N: BtcHost>(
    rpc: Option<(std::net::TcpListener, crate::rpc::ServerConfig, crate::rpc::BtcEnv)>,
    caller: Caller<N>,
) -> Result<(), EmuError> {
    match rpc {
        Some((listener, cfg, env)) => crate::rpc::serve_btc(listener, cfg, caller, env),
        None => Ok(()),
    }
}

/// Runs one node process to its end: rebuilds the node from the scenario,
/// runs it, prints the status lines and returns (and prints) its report.
/// It is meant to be the whole of a process: a durable store is left
/// without redb's closing write ([`Store::abandon`]), for the exit to free.
pub fn run_node_process(config: &NodeProcessConfig) -> Result<ProcessReport, EmuError> {
    let rt = config.runtime_config()?;
    let mut s = fika_scenario::load_file(&config.scenario)?;
    s.seed = config.seed;
    let layout = fika_scenario::layout(&s)
        .map_err(|source| EmuError::Layout { file: config.scenario.clone(), source })?;
    let id = NodeId(config.node_id);
    match layout.names.get(id.index()) {
        Some(n) if *n == config.name => {}
        Some(n) => {
            return Err(EmuError::BadValue {
                field: "name",
                value: format!("{:?} (node {} of the scenario is {n:?})", config.name, config.node_id),
                expected: "the scenario's name of node_id",
            });
        }
        None => return Err(EmuError::NoSuchNode { id, nodes: layout.names.len() }),
    }
    if s.protocol == fika_scenario::ProtocolKind::Powpeg {
        return run_peg_process(config, &rt, &s, &layout, id);
    }
    let (mut node, db) = build::build_btc_node_with_db(&s, &layout, id)?;
    // Bind the RPC port before anything is reported, so a port taken is an error at once.
    let rpc = match config.rpc_port {
        0 => None,
        port => {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let l = std::net::TcpListener::bind(addr).map_err(|source| EmuError::Bind { addr, source })?;
            let cfg = crate::rpc::ServerConfig::new(&config.rpc_user, &config.rpc_password);
            Some((l, cfg, crate::rpc::BtcEnv::new(db.clone())))
        }
    };
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    if config.stdin_control {
        stdin_control(ctl_tx.clone());
    }
    let mut runner = match &config.data_dir {
        Some(dir) => {
            let genesis = db.borrow().rec(0).data.hash;
            let identity = Identity::of(&node, &s.name, &config.name, s.seed, genesis);
            let (mut store, existed) = Store::open(dir, &identity, &node)?;
            let resumed = if existed { Some(store.restore(&mut node)?) } else { None };
            if let Some(r) = &resumed {
                say(format_args!("resumed {} {}", r.height, r.hash));
            }
            Runner::Durable(Box::new(DurableNode::new(node, store, resumed, Some(ctl_tx.clone()))))
        }
        None => Runner::Memory(Box::new(node)),
    };
    let hooks = Hooks {
        control: Some(ctl_rx),
        status: Some(Box::new(|st: &Status| match st {
            Status::Listening(a) => say(format_args!("listening {a}")),
            Status::Connected { after } => say(format_args!("connected {:.3}", after.as_secs_f64() * 1e3)),
            Status::Started => say(format_args!("started")),
            Status::Stopping => {}
        })),
    };
    let report = match &mut runner {
        Runner::Durable(d) => {
            let d = &mut **d;
            let stats = runtime::run_node_with(d, &rt, hooks, |caller| serve(rpc, caller))?;
            if let Some(e) = d.take_failure() {
                return Err(e.into());
            }
            ProcessReport {
                node: config.node_id,
                name: config.name.clone(),
                stats,
                btc: BtcSummary::of(d.node(), &db),
                peak_rss_kib: peak_rss_kib(std::process::id()),
                resumed: d.resumed().cloned(),
                store: Some(d.stats()),
                side: None,
            }
        }
        Runner::Memory(node) => {
            drop(ctl_tx);
            let stats = runtime::run_node_with(&mut **node, &rt, hooks, |caller| serve(rpc, caller))?;
            ProcessReport {
                node: config.node_id,
                name: config.name.clone(),
                stats,
                btc: BtcSummary::of(node, &db),
                peak_rss_kib: peak_rss_kib(std::process::id()),
                resumed: None,
                store: None,
                side: None,
            }
        }
    };
    if let Ok(json) = serde_json::to_string(&report) {
        say(format_args!("done {json}"));
    }
    if let Runner::Durable(d) = runner {
        d.abandon();
    }
    Ok(report)
}

fn status_hook() -> crate::runtime::StatusFn {
    Box::new(|st: &Status| match st {
        Status::Listening(a) => say(format_args!("listening {a}")),
        Status::Connected { after } => say(format_args!("connected {:.3}", after.as_secs_f64() * 1e3)),
        Status::Started => say(format_args!("started")),
        Status::Stopping => {}
    })
}

/// Runs node `id` of a PowPeg scenario: rebuilt as the simulator builds it
/// (the whole network is derived, this process keeps its own node), in
/// memory, with the sidechain JSON-RPC methods if it has an RPC port.
fn run_peg_process(
    config: &NodeProcessConfig,
    rt: &RuntimeConfig,
    s: &fika_scenario::Scenario,
    layout: &fika_scenario::Layout,
    id: NodeId,
) -> Result<ProcessReport, EmuError> {
    let built = fika_scenario::peg::build(s, layout)
        .map_err(|source| EmuError::Layout { file: config.scenario.clone(), source })?;
    let mut nodes = built.nodes;
    if nodes.len() != layout.names.len() || id.index() >= nodes.len() {
        return Err(EmuError::NoSuchNode { id, nodes: nodes.len() });
    }
    let mut node = nodes.swap_remove(id.index());
    drop(nodes);
    let rpc = match config.rpc_port {
        0 => None,
        port => {
            let addr = SocketAddr::from(([127, 0, 0, 1], port));
            let l = std::net::TcpListener::bind(addr).map_err(|source| EmuError::Bind { addr, source })?;
            Some((l, crate::rpc::ServerConfig::new(&config.rpc_user, &config.rpc_password)))
        }
    };
    let (ctl_tx, ctl_rx) = mpsc::unbounded_channel();
    if config.stdin_control {
        stdin_control(ctl_tx);
    } else {
        drop(ctl_tx);
    }
    let hooks = Hooks { control: Some(ctl_rx), status: Some(status_hook()) };
    let stats = runtime::run_node_with(&mut node, rt, hooks, |caller| match rpc {
        Some((listener, cfg)) => crate::rpc::serve_peg(listener, cfg, caller),
        None => Ok(()),
    })?;
    let report = ProcessReport {
        node: config.node_id,
        name: config.name.clone(),
        stats,
        side: SideSummary::of(&node),
        peak_rss_kib: peak_rss_kib(std::process::id()),
        ..Default::default()
    };
    if let Ok(json) = serde_json::to_string(&report) {
        say(format_args!("done {json}"));
    }
    Ok(report)
}

/// Milliseconds since the Unix epoch of a wall-clock time.
pub fn unix_ms(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_round_trips_and_refuses_unknown_fields() {
        let c = NodeProcessConfig {
            node_id: 2,
            name: "server3".into(),
            seed: 7,
            listen: ([127, 0, 0, 1], 4000).into(),
            peers: [(0, ([127, 0, 0, 1], 4001).into())].into_iter().collect(),
            scenario: "s.toml".into(),
            duration_s: Some(60.0),
            speed: 10.0,
            events: "e.jsonl".into(),
            start_at_unix_ms: None,
            stdin_control: true,
            max_frame_bytes: 1 << 20,
            connect_timeout_s: 5.0,
            rpc_port: 0,
            rpc_user: String::new(),
            rpc_password: String::new(),
            data_dir: Some("data/server3".into()),
        };
        let text = serde_json::to_string(&c).expect("serializes");
        assert_eq!(serde_json::from_str::<NodeProcessConfig>(&text).ok(), Some(c.clone()));
        let rt = c.runtime_config().expect("valid");
        assert_eq!(rt.start, StartRule::OnCommand);
        assert_eq!(rt.peers, vec![(NodeId(0), ([127, 0, 0, 1], 4001).into())]);
        let bad = text.replace("\"seed\"", "\"sead\"");
        assert!(serde_json::from_str::<NodeProcessConfig>(&bad).is_err());
        let neg = NodeProcessConfig { duration_s: Some(-1.0), ..c };
        assert!(matches!(neg.runtime_config(), Err(EmuError::BadValue { field: "duration_s", .. })));
    }

    #[test]
    fn status_lines_parse() {
        assert_eq!(
            ProcessLine::parse("fika-emu listening 127.0.0.1:5"),
            Some(ProcessLine::Listening(([127, 0, 0, 1], 5).into()))
        );
        assert_eq!(ProcessLine::parse("fika-emu connected 1.5"), Some(ProcessLine::Connected(1.5)));
        assert_eq!(ProcessLine::parse("fika-emu started"), Some(ProcessLine::Started));
        assert_eq!(ProcessLine::parse("fika-emu resumed 12 00ab"), Some(ProcessLine::Resumed(12)));
        assert_eq!(ProcessLine::parse("hello"), None);
        let r = ProcessReport { node: 3, name: "x".into(), ..Default::default() };
        let line = format!("fika-emu done {}", serde_json::to_string(&r).expect("json"));
        assert_eq!(ProcessLine::parse(&line), Some(ProcessLine::Done(Box::new(r))));
    }

    #[test]
    fn own_private_memory_is_readable_and_below_the_peak() {
        let id = std::process::id();
        let private = private_rss_kib(id).expect("RssAnon");
        let peak = peak_rss_kib(id).expect("VmHWM");
        assert!(private > 0 && private <= peak, "{private} KiB private, {peak} KiB peak");
    }

    #[test]
    fn own_peak_rss_is_readable() {
        if Path::new("/proc/self/status").exists() {
            assert!(peak_rss_kib(std::process::id()).is_some_and(|k| k > 0));
        }
    }
}
