//! Running a whole scenario as one OS process per node, on loopback or,
//! with [`EmulateOptions::netns`], each in its own network namespace.
//!
//! [`emulate`] lays the scenario out, picks a free loopback port per node,
//! writes each node's [`NodeProcessConfig`] and starts `<exe> node --config
//! <file>` for each (the `fika-node` binary, or the `fika` binary's `node`
//! subcommand, calls [`crate::run_node_process`]; see [`node_exe_beside`]).
//! Node processes get glibc malloc settings of their own
//! ([`node_malloc_tunables`]). Once every node listens and has reached
//! its peers it tells them all one shared start instant (over their
//! standard input), waits for the scenario's duration, stops them and
//! merges their events into one `events.jsonl` sorted by time, then node.
//! No node outlives the call: every child is killed when its handle drops,
//! on success and on every error path, and a child whose standard input
//! closes stops by itself.
//!
//! Every node also serves JSON-RPC on a loopback port of its own (see
//! [`crate::rpc`]), authenticated by a random password the orchestrator
//! writes to `.cookie` at start-up (Core's `__cookie__:<hex>`). Once every
//! node is ready — and before the shared start — it writes `nodes.json`
//! ([`NodesFile`]: each node's name, id, role, pid, P2P and RPC address),
//! which is how `fika client` and `fika status` find a running emulation;
//! a `nodes.json` left by an earlier run in the same directory is removed
//! first.
//!
//! Every node gets a data directory, `nodes/<name>/`, for its durable store
//! ([`crate::store`]); stores left there by an earlier run are removed
//! first unless [`EmulateOptions::keep_data`] is set. The scenario's
//! `crash` and `restart` faults are real: a crash kills the node's process
//! (SIGKILL, no chance to flush or say goodbye) at its time, a restart
//! starts it again on the same data directory, where it resumes from its
//! store; the orchestrator hands it the original start instant (so its
//! clock agrees with the others') once it has reconnected to its peers, so
//! the headers it asks for on resuming reach them. Other faults
//! (partitions, links, loss) are not emulated and are counted in
//! [`EmulationReport::faults_ignored`].
//!
//! Files written in the output directory: `.cookie`, `nodes.json`,
//! `nodes/<name>.json` (the configuration), `nodes/<name>.events.jsonl`,
//! `nodes/<name>.log` (the process's standard error, every incarnation
//! appended), for the k-th restart `nodes/<name>.restart<k>.json` and
//! `nodes/<name>.restart<k>.events.jsonl`, `nodes/<name>/node.redb`,
//! `events.jsonl` (every incarnation's events merged) and `emulation.json`
//! (the [`EmulationReport`]).

use std::collections::BTreeMap;
use std::io::{BufRead as _, BufReader, BufWriter, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant, SystemTime};

use fika_core::NodeId;
use fika_scenario::ProtocolKind;
use serde::{Deserialize, Serialize};

use crate::error::io_at;
use crate::process::{NodeProcessConfig, ProcessLine, ProcessReport, peak_rss_kib, private_rss_kib, unix_ms};
use crate::{EmuError, build, netns};

/// How to run an emulation.
#[derive(Clone, Debug)]
pub struct EmulateOptions {
    /// The executable started as `<exe> node --config <file>` per node.
    pub exe: PathBuf,
    /// Node seconds per wall-clock second.
    pub speed: f64,
    /// Node time to run (default: the scenario's duration).
    pub duration: Option<Duration>,
    /// The run seed (default: the scenario's).
    pub seed: Option<u64>,
    /// How long nodes may take to listen and reach their peers.
    pub startup_timeout: Duration,
    /// How long stopped nodes may take to exit before they are killed.
    pub stop_timeout: Duration,
    /// Wall time between the last node getting ready and the shared start.
    pub start_delay: Duration,
    /// Largest frame payload, bytes.
    pub max_frame_bytes: u32,
    /// Each node in its own network namespace, linked by veth pairs shaped
    /// with `tc netem` (root only; see [`crate::netns`]).
    pub netns: bool,
    /// With `netns`: shape the cables with `tc netem` (off: plain cables,
    /// for kernels without `sch_netem`).
    pub netem: bool,
    /// Set (e.g. by a Ctrl-C handler) to end the emulation early: the nodes
    /// are stopped and their events merged as at a normal end.
    pub interrupt: Option<Arc<AtomicBool>>,
    /// Whether every node serves JSON-RPC.
    pub rpc: bool,
    /// Called once every node is ready and `nodes.json` is written.
    pub on_ready: Option<ReadyHook>,
    /// Keep the nodes' stores from an earlier run into the same directory
    /// (they resume from them) instead of starting fresh.
    pub keep_data: bool,
}

/// A function told the run directory and `nodes.json` of an emulation.
pub type ReadyFn = dyn Fn(&Path, &NodesFile) + Send + Sync;

/// A callback told the `nodes.json` of an emulation once its nodes are ready.
#[derive(Clone)]
pub struct ReadyHook(pub std::sync::Arc<ReadyFn>);

impl std::fmt::Debug for ReadyHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ReadyHook")
    }
}

/// Name of the file listing a running emulation's nodes.
pub const NODES_FILE: &str = "nodes.json";
/// Name of the cookie file (RPC credentials).
pub const COOKIE_FILE: &str = ".cookie";

/// One node in `nodes.json`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodeEntry {
    /// Its name.
    pub name: String,
    /// Its id.
    pub id: u32,
    /// Its role in the scenario (e.g. `server`, `client`).
    pub role: String,
    /// Its process id.
    pub pid: u32,
    /// Where it listens for peers.
    pub p2p: SocketAddr,
    /// Where it serves JSON-RPC (none without RPC).
    pub rpc: Option<SocketAddr>,
}

/// `nodes.json`: how clients find the nodes of a running emulation.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct NodesFile {
    /// The scenario's name.
    pub scenario: String,
    /// The orchestrator's process id.
    pub orchestrator_pid: u32,
    /// Node seconds per wall-clock second.
    pub speed: f64,
    /// Node time the emulation runs, seconds.
    pub duration_s: f64,
    /// The shared start, Unix ms.
    pub start_unix_ms: u64,
    /// The cookie file, relative to the run directory.
    pub cookie: PathBuf,
    /// The nodes, by id.
    pub nodes: Vec<NodeEntry>,
}

impl NodesFile {
    /// Reads `nodes.json` of the run directory `run`.
    pub fn load(run: &Path) -> Result<Self, EmuError> {
        let path = run.join(NODES_FILE);
        let text = std::fs::read_to_string(&path).map_err(io_at(&path))?;
        serde_json::from_str(&text).map_err(|e| EmuError::Config { path, reason: e.to_string() })
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&NodeEntry> {
        self.nodes.iter().find(|n| n.name == name)
    }
}

impl EmulateOptions {
    /// Defaults: real time (speed 1), the scenario's duration and seed, 30 s
    /// to start, 10 s to stop, start 200 ms after the last node is ready,
    /// 8 MiB frames.
    pub fn new(exe: impl Into<PathBuf>) -> Self {
        EmulateOptions {
            exe: exe.into(),
            speed: 1.0,
            duration: None,
            seed: None,
            startup_timeout: Duration::from_secs(30),
            stop_timeout: Duration::from_secs(10),
            start_delay: Duration::from_millis(200),
            max_frame_bytes: crate::wire::DEFAULT_MAX_PAYLOAD,
            netns: false,
            netem: true,
            interrupt: None,
            rpc: true,
            on_ready: None,
            keep_data: false,
        }
    }
}

/// One node of an emulation.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct NodeReport {
    /// Its id.
    pub id: u32,
    /// Its name.
    pub name: String,
    /// Its process id.
    pub pid: u32,
    /// Wall time from spawning the process to its listening (node built), ms.
    pub startup_ms: Option<f64>,
    /// Wall time from spawning the process to all its peers connected, ms.
    pub connected_ms: Option<f64>,
    /// Peak resident set size (VmHWM), KiB. It counts the pages of the
    /// executable and shared libraries, which every node process shares.
    pub peak_rss_kib: Option<u64>,
    /// Largest private (anonymous) resident memory sampled (RssAnon), KiB:
    /// what one more node process costs.
    #[serde(default)]
    pub peak_private_kib: Option<u64>,
    /// How the process ended (`"exit status: 0"`, `"killed"`, …).
    pub exit: String,
    /// What the process reported at its end (counters, final chain state).
    pub report: Option<ProcessReport>,
    /// Times it was restarted after a crash fault.
    #[serde(default)]
    pub restarts: u32,
}

/// A crash or restart fault carried out.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct FaultReport {
    /// The node's name.
    pub node: String,
    /// `"crash"` or `"restart"`.
    pub action: String,
    /// Node time it was scheduled for, seconds.
    pub at_s: f64,
    /// Wall time after the shared start it was carried out, seconds.
    pub done_wall_s: f64,
    /// The process id killed or started.
    pub pid: u32,
    /// For a restart: the tip height its store held when it resumed.
    pub resumed_height: Option<u32>,
    /// For a restart: wall time until it was told to start (reconnected), seconds.
    pub started_after_s: Option<f64>,
}

/// The result of [`emulate`].
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct EmulationReport {
    /// The scenario's name.
    pub scenario: String,
    /// The seed used.
    pub seed: u64,
    /// Node seconds per wall-clock second.
    pub speed: f64,
    /// Node time run, seconds.
    pub duration_s: f64,
    /// The shared start, Unix ms.
    pub start_unix_ms: u64,
    /// Wall time of the whole emulation, seconds.
    pub wall_s: f64,
    /// Per node, by id.
    pub nodes: Vec<NodeReport>,
    /// The merged events file.
    pub events_path: PathBuf,
    /// Events merged.
    pub events: u64,
    /// Event lines that did not parse (e.g. cut short by a kill), left out.
    pub events_malformed: u64,
    /// Whether nodes ran in their own network namespaces.
    #[serde(default)]
    pub netns: bool,
    /// Whether their cables were shaped by netem.
    #[serde(default)]
    pub netem: bool,
    /// Whether the run was cut short by an interrupt.
    #[serde(default)]
    pub interrupted: bool,
    /// Crash and restart faults carried out, in order.
    #[serde(default)]
    pub faults: Vec<FaultReport>,
    /// Scenario faults the emulator does not carry out (partitions, links, loss).
    #[serde(default)]
    pub faults_ignored: usize,
}

/// File name of the dedicated node executable (`fika-node`), which takes
/// the same `node --config FILE` arguments as `fika node` but links only
/// the node's code.
pub const NODE_EXE: &str = "fika-node";

/// The executable to start the nodes with, given the running one and its
/// build id: the `fika-node` beside it if there is one from the same build
/// (`fika-node --build-id` prints `build_id`; a smaller process per node),
/// else `exe` itself (its `node` subcommand).
pub fn node_exe_beside(exe: &Path, build_id: &str) -> PathBuf {
    let node = exe.with_file_name(format!("{NODE_EXE}{}", std::env::consts::EXE_SUFFIX));
    let same_build = node.is_file()
        && Command::new(&node)
            .arg("--build-id")
            .stdin(Stdio::null())
            .stderr(Stdio::null())
            .output()
            .is_ok_and(|o| o.status.success() && String::from_utf8_lossy(&o.stdout).trim() == build_id);
    if same_build { node } else { exe.to_path_buf() }
}

/// glibc malloc settings for a node process, added to any the caller has
/// (`GLIBC_TUNABLES`). A fixed mmap threshold keeps large, short-lived
/// buffers (the store's allocator state, read buffers) in mappings of their
/// own that go back to the system when freed — glibc otherwise raises the
/// threshold after the first such free and serves the next ones from the
/// heap, which then stays resident — and one arena serves every thread (a
/// node runs one busy thread). Other C libraries ignore the variable.
pub fn node_malloc_tunables(existing: Option<&str>) -> String {
    const OURS: [(&str, &str); 2] =
        [("glibc.malloc.mmap_threshold", "131072"), ("glibc.malloc.arena_max", "1")];
    let existing = existing.unwrap_or("");
    let mut parts: Vec<String> = existing.split(':').filter(|p| !p.is_empty()).map(str::to_owned).collect();
    for (key, value) in OURS {
        // The caller's own setting of a tunable wins.
        if !parts.iter().any(|p| p.split('=').next() == Some(key)) {
            parts.push(format!("{key}={value}"));
        }
    }
    parts.join(":")
}

/// A flag set when the process receives SIGINT (Ctrl-C) or SIGTERM, for
/// [`EmulateOptions::interrupt`]: the emulation then stops its nodes,
/// merges their events and removes its namespaces instead of dying with
/// them still there. The signals are watched by a background thread.
pub fn interrupt_on_signals() -> Arc<AtomicBool> {
    let flag = Arc::new(AtomicBool::new(false));
    let set = Arc::clone(&flag);
    let watch = move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
        rt.block_on(async move {
            use tokio::signal::unix::{SignalKind, signal};
            let (Ok(mut int), Ok(mut term)) =
                (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
            else {
                return;
            };
            loop {
                tokio::select! {
                    _ = int.recv() => {}
                    _ = term.recv() => {}
                }
                set.store(true, Ordering::Relaxed);
            }
        });
    };
    let _ = std::thread::Builder::new().name("signals".into()).spawn(watch);
    flag
}

/// The port every node listens on inside its own namespace.
pub const NETNS_PORT: u16 = 18444;

/// A child process that is killed (and reaped) when dropped.
struct NodeProc {
    child: Child,
    stdin: Option<ChildStdin>,
    spawned: Instant,
    reader: Option<std::thread::JoinHandle<()>>,
    exit: Option<String>,
    /// Incarnation: 0 for the first process, k after the k-th restart.
    generation: u32,
}

/// A status line of node `.0`'s incarnation `.1`, read at `.2`.
type LineMsg = (usize, u32, Instant, ProcessLine);

/// Starts `<exe> node --config <config>` for node `i`, appending its
/// standard error to `log`, its status lines going to `lines`.
/// How a node process is started: the executable, in a namespace or not.
struct Launch<'a> {
    exe: &'a Path,
    netns: Option<&'a str>,
}

fn spawn_node(
    launch: &Launch<'_>,
    name: &str,
    i: usize,
    generation: u32,
    config: &Path,
    log: &Path,
    lines: &mpsc::Sender<LineMsg>,
) -> Result<NodeProc, EmuError> {
    let log_file = std::fs::OpenOptions::new().create(true).append(true).open(log).map_err(io_at(log))?;
    let spawned = Instant::now();
    let exe = launch.exe;
    let mut command = match launch.netns {
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns]).arg(exe);
            c
        }
        None => Command::new(exe),
    };
    let mut child = command
        .arg("node")
        .arg("--config")
        .arg(config)
        .env("GLIBC_TUNABLES", node_malloc_tunables(std::env::var("GLIBC_TUNABLES").ok().as_deref()))
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(log_file))
        .spawn()
        .map_err(|source| EmuError::Spawn { exe: exe.to_path_buf(), node: name.to_owned(), source })?;
    let stdin = child.stdin.take();
    let reader = child.stdout.take().map(|out| {
        let tx = lines.clone();
        std::thread::spawn(move || {
            // Read to the end whatever comes, so the child never blocks on a full pipe.
            let mut out = BufReader::new(out);
            let mut line = Vec::new();
            while matches!(out.read_until(b'\n', &mut line), Ok(n) if n > 0) {
                if let Some(l) = ProcessLine::parse(String::from_utf8_lossy(&line).trim_end()) {
                    let _ = tx.send((i, generation, Instant::now(), l));
                }
                line.clear();
            }
        })
    });
    Ok(NodeProc { child, stdin, spawned, reader, exit: None, generation })
}

/// Tells a node process the shared start instant.
fn send_start(p: &mut NodeProc, start_ms: u64) {
    if let Some(stdin) = p.stdin.as_mut() {
        let _ = writeln!(stdin, "start {start_ms}").and_then(|()| stdin.flush());
    }
}

impl NodeProc {
    /// Whether it has exited (recording how).
    fn poll_exit(&mut self) -> bool {
        if self.exit.is_some() {
            return true;
        }
        match self.child.try_wait() {
            Ok(Some(status)) => {
                self.exit = Some(status.to_string());
                true
            }
            Ok(None) => false,
            Err(e) => {
                self.exit = Some(format!("unknown ({e})"));
                true
            }
        }
    }

    fn kill(&mut self) {
        if !self.poll_exit() {
            let _ = self.child.kill();
            let _ = self.child.wait();
            self.exit = Some("killed".into());
        }
    }
}

impl Drop for NodeProc {
    fn drop(&mut self) {
        self.stdin = None;
        self.kill();
        if let Some(r) = self.reader.take() {
            let _ = r.join();
        }
    }
}

/// `n` distinct free loopback ports (all bound at once, then released),
/// outside the kernel's ephemeral range: a port taken from that range
/// could be handed to some node's outgoing connection before the node it
/// was meant for binds it (with hundreds of processes dialling each other,
/// that happens). The search starts at an offset from the process id, so
/// concurrent emulations tend to use different ports, moved past whatever
/// earlier calls in this process handed out (concurrent callers in one
/// process never get the same ports); it falls back to ephemeral ports if
/// too few others are free.
pub fn free_ports(n: usize) -> Result<Vec<u16>, EmuError> {
    let (lo, hi) = ephemeral_range();
    let mut ports = Vec::with_capacity(n);
    let mut held = Vec::with_capacity(n);
    // Candidates: 10000..lo and hi+1..=65535, from a per-process offset.
    let candidates: Vec<u16> =
        (10_000..lo).chain(hi.saturating_add(1)..=u16::MAX).filter(|p| *p >= 10_000).collect();
    if !candidates.is_empty() {
        // Each call in this process starts past the ports earlier calls
        // handed out (they may be released but not yet bound by their node).
        static HANDED_OUT: AtomicUsize = AtomicUsize::new(0);
        let before = HANDED_OUT.fetch_add(n + 16, Ordering::Relaxed);
        let start = (std::process::id() as usize).wrapping_mul(7_919).wrapping_add(before) % candidates.len();
        for k in 0..candidates.len() {
            if ports.len() == n {
                break;
            }
            let port = candidates[(start + k) % candidates.len()];
            if let Ok(l) = TcpListener::bind((Ipv4Addr::LOCALHOST, port)) {
                held.push(l);
                ports.push(port);
            }
        }
    }
    let any: SocketAddr = (Ipv4Addr::LOCALHOST, 0).into();
    while ports.len() < n {
        let l = TcpListener::bind(any).map_err(|source| EmuError::Bind { addr: any, source })?;
        ports.push(l.local_addr().map_err(|source| EmuError::Bind { addr: any, source })?.port());
        held.push(l);
    }
    drop(held);
    Ok(ports)
}

/// The kernel's ephemeral port range (Linux's default if unreadable).
fn ephemeral_range() -> (u16, u16) {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").unwrap_or_default();
    let mut it = text.split_whitespace().filter_map(|v| v.parse::<u16>().ok());
    match (it.next(), it.next()) {
        (Some(lo), Some(hi)) if lo <= hi => (lo, hi),
        _ => (32_768, 60_999),
    }
}

fn ms_since(t: Instant, since: Instant) -> f64 {
    t.saturating_duration_since(since).as_secs_f64() * 1e3
}

/// What the nodes' status lines said.
struct Seen {
    listening: Vec<Option<f64>>,
    connected: Vec<Option<f64>>,
    reports: Vec<Option<ProcessReport>>,
}

impl Seen {
    /// Records a line of the first incarnation's start-up, or any
    /// incarnation's end report; returns the line if it is the current
    /// incarnation's (for the caller to act on).
    fn take(&mut self, (i, generation, at, line): LineMsg, procs: &[NodeProc]) -> Option<ProcessLine> {
        if procs[i].generation != generation {
            return None;
        }
        let since = procs[i].spawned;
        match &line {
            ProcessLine::Listening(_) if generation == 0 => self.listening[i] = Some(ms_since(at, since)),
            ProcessLine::Connected(_) if generation == 0 => self.connected[i] = Some(ms_since(at, since)),
            ProcessLine::Done(r) => self.reports[i] = Some((**r).clone()),
            _ => {}
        }
        Some(line)
    }
}

/// A crash or restart to carry out at a wall-clock instant.
struct Planned {
    at: Instant,
    at_s: f64,
    node: usize,
    crash: bool,
}

/// The scenario's crash and restart faults as wall-clock instants after
/// `start`; returns them (in time order) and how many other faults there are.
fn plan_faults(layout: &fika_scenario::Layout, start: Instant, speed: f64) -> (Vec<Planned>, usize) {
    use fika_sim::FaultAction;
    let mut planned = Vec::new();
    let mut ignored = 0;
    for f in &layout.faults {
        let (node, crash) = match f.action {
            FaultAction::Crash(id) => (id, true),
            FaultAction::Restart(id) => (id, false),
            _ => {
                ignored += 1;
                continue;
            }
        };
        let at_s = f.at.as_secs_f64();
        let wall = Duration::try_from_secs_f64(at_s / speed).unwrap_or(Duration::MAX);
        let at = start.checked_add(wall).unwrap_or(start + Duration::from_secs(86_400 * 365));
        planned.push(Planned { at, at_s, node: node.index(), crash });
    }
    (planned, ignored)
}

/// Runs every node of Bitcoin scenario `scenario_path` as its own process
/// on loopback (see the module documentation); writes into `out_dir`.
pub fn emulate(
    scenario_path: &Path,
    out_dir: &Path,
    options: &EmulateOptions,
) -> Result<EmulationReport, EmuError> {
    let wall = Instant::now();
    let mut s = fika_scenario::load_file(scenario_path)?;
    if let Some(seed) = options.seed {
        s.seed = seed;
    }
    let supported = match s.protocol {
        ProtocolKind::Bitcoin => s.bitcoin.is_some(),
        ProtocolKind::Powpeg => s.bitcoin.is_some() && s.powpeg.is_some(),
        ProtocolKind::Gossip => false,
    };
    if !supported {
        return Err(EmuError::Unsupported {
            scenario: scenario_path.display().to_string(),
            protocol: format!("{:?}", s.protocol).to_lowercase(),
        });
    }
    if !(options.speed.is_finite() && options.speed > 0.0) {
        return Err(EmuError::BadValue {
            field: "speed",
            value: options.speed.to_string(),
            expected: "a positive number of node seconds per wall-clock second",
        });
    }
    let layout = fika_scenario::layout(&s)
        .map_err(|source| EmuError::Layout { file: scenario_path.to_path_buf(), source })?;
    let duration = options.duration.unwrap_or(s.duration);
    let scenario_abs = std::fs::canonicalize(scenario_path).map_err(io_at(scenario_path))?;
    let nodes_dir = out_dir.join("nodes");
    std::fs::create_dir_all(&nodes_dir).map_err(io_at(&nodes_dir))?;
    let nodes_json = out_dir.join(NODES_FILE);
    match std::fs::remove_file(&nodes_json) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(EmuError::Io { path: nodes_json, source: e });
        }
        _ => {}
    }
    let n = layout.names.len();
    let interrupted = || options.interrupt.as_ref().is_some_and(|f| f.load(Ordering::Relaxed));

    // Addresses: loopback ports, or each node's end of its cables.
    let plan = if options.netns {
        netns::check_privileges()?;
        netns::sweep_stale();
        if options.netem && !netns::netem_available() {
            return Err(EmuError::Netns {
                step: "tc qdisc add … netem".into(),
                reason: "this kernel has no netem (sch_netem); use --no-netem for unshaped cables".into(),
            });
        }
        let prefix = format!("fika{}", std::process::id());
        let mut plan =
            netns::NetnsPlan::new(&prefix, &layout.graph.adjacency(), &layout.region, &s.network.model)?;
        plan.shape = options.netem;
        Some(plan)
    } else {
        None
    };
    // One call for every port, so no two are the same; RPC on loopback
    // (inside each node's namespace with --netns).
    let wanted = if plan.is_some() { 0 } else { n } + if options.rpc { n } else { 0 };
    let mut free = free_ports(wanted)?;
    let rpc_ports = if options.rpc { free.split_off(free.len() - n) } else { Vec::new() };
    let ports = if plan.is_some() { vec![NETNS_PORT; n] } else { free };
    let rpc_addr =
        |i: usize| -> Option<SocketAddr> { options.rpc.then(|| (Ipv4Addr::LOCALHOST, rpc_ports[i]).into()) };
    let (rpc_user, rpc_password) = crate::rpc::new_cookie();
    if options.rpc {
        crate::rpc::write_private(
            &out_dir.join(COOKIE_FILE),
            format!("{rpc_user}:{rpc_password}").as_bytes(),
        )?;
    }
    let listen = |i: usize| -> SocketAddr {
        match plan {
            Some(_) => (Ipv4Addr::UNSPECIFIED, ports[i]).into(),
            None => (Ipv4Addr::LOCALHOST, ports[i]).into(),
        }
    };
    let peer_addr = |me: usize, peer: usize| -> SocketAddr {
        match &plan {
            Some(p) => {
                let ip = p.peer_address(me as u32, peer as u32).unwrap_or(Ipv4Addr::UNSPECIFIED);
                (ip, ports[peer]).into()
            }
            None => (Ipv4Addr::LOCALHOST, ports[peer]).into(),
        }
    };
    // Dropped after the processes (declared before them): deleting the
    // namespaces removes every cable.
    let spaces = plan.as_ref().map(netns::Netns::create).transpose()?;
    let launch = |i: usize| Launch {
        exe: &options.exe,
        netns: spaces.as_ref().and_then(|sp| sp.namespaces().get(i)).map(String::as_str),
    };

    // Configurations.
    let mut config_paths = Vec::with_capacity(n);
    let mut configs: Vec<NodeProcessConfig> = Vec::with_capacity(n);
    for (i, name) in layout.names.iter().enumerate() {
        let peers = build::peers_of(&layout, NodeId(i as u32));
        let config = NodeProcessConfig {
            node_id: i as u32,
            name: name.clone(),
            seed: s.seed,
            listen: listen(i),
            peers: peers.iter().map(|p| (p.0, peer_addr(i, p.index()))).collect(),
            scenario: scenario_abs.clone(),
            duration_s: Some(duration.as_secs_f64()),
            speed: options.speed,
            events: nodes_dir.join(format!("{name}.events.jsonl")),
            start_at_unix_ms: None,
            stdin_control: true,
            max_frame_bytes: options.max_frame_bytes,
            connect_timeout_s: options.startup_timeout.as_secs_f64(),
            rpc_port: rpc_addr(i).map_or(0, |a| a.port()),
            rpc_user: rpc_user.clone(),
            rpc_password: rpc_password.clone(),
            data_dir: Some(nodes_dir.join(name)),
        };
        if !options.keep_data {
            let old = crate::store::Store::file_in(&nodes_dir.join(name));
            match std::fs::remove_file(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(EmuError::Io { path: old, source: e }),
            }
        }
        let path = nodes_dir.join(format!("{name}.json"));
        config.save(&path)?;
        configs.push(config);
        config_paths.push((path, configs[i].events.clone()));
    }

    // Processes.
    let (line_tx, line_rx) = mpsc::channel::<LineMsg>();
    let mut procs: Vec<NodeProc> = Vec::with_capacity(n);
    for (i, (config, _)) in config_paths.iter().enumerate() {
        let name = &layout.names[i];
        let log_path = nodes_dir.join(format!("{name}.log"));
        // A fresh log per emulation; restarts append to it.
        std::fs::File::create(&log_path).map_err(io_at(&log_path))?;
        procs.push(spawn_node(&launch(i), name, i, 0, config, &log_path, &line_tx)?);
    }

    let mut seen = Seen { listening: vec![None; n], connected: vec![None; n], reports: vec![None; n] };
    let mut rss: Vec<Option<u64>> = vec![None; n];
    let mut private: Vec<Option<u64>> = vec![None; n];

    // Start-up: every node listening and connected to its peers.
    let deadline = Instant::now() + options.startup_timeout;
    loop {
        let waiting: Vec<usize> = (0..n).filter(|i| seen.connected[*i].is_none()).collect();
        if waiting.is_empty() {
            break;
        }
        for &i in &waiting {
            if procs[i].poll_exit() {
                return Err(EmuError::NodeExited {
                    node: layout.names[i].clone(),
                    status: procs[i].exit.clone().unwrap_or_default(),
                    log: nodes_dir.join(format!("{}.log", layout.names[i])),
                });
            }
        }
        if interrupted() {
            return Err(EmuError::Interrupted);
        }
        if Instant::now() >= deadline {
            return Err(EmuError::StartupTimeout {
                waiting: waiting.iter().map(|i| layout.names[*i].clone()).collect(),
                after: options.startup_timeout,
                logs: nodes_dir.clone(),
            });
        }
        if let Ok(msg) = line_rx.recv_timeout(Duration::from_millis(20)) {
            seen.take(msg, &procs);
        }
    }

    // One start for all; clients find the nodes before it.
    let start = SystemTime::now() + options.start_delay;
    let start_ms = unix_ms(start);
    let listing = NodesFile {
        scenario: s.name.clone(),
        orchestrator_pid: std::process::id(),
        speed: options.speed,
        duration_s: duration.as_secs_f64(),
        start_unix_ms: start_ms,
        cookie: PathBuf::from(COOKIE_FILE),
        nodes: (0..n)
            .map(|i| NodeEntry {
                name: layout.names[i].clone(),
                id: i as u32,
                role: s.nodes.get(layout.group[i]).map(|g| g.role.clone()).unwrap_or_default(),
                pid: procs[i].child.id(),
                p2p: listen(i),
                rpc: rpc_addr(i),
            })
            .collect(),
    };
    write_atomic(&nodes_json, &listing)?;
    if let Some(hook) = &options.on_ready {
        (hook.0)(out_dir, &listing);
    }
    for p in &mut procs {
        send_start(p, start_ms);
    }
    let run_wall =
        Duration::try_from_secs_f64(duration.as_secs_f64() / options.speed).unwrap_or(Duration::MAX);
    let start_i = Instant::now() + start.duration_since(SystemTime::now()).unwrap_or_default();
    let end = start_i.checked_add(run_wall).unwrap_or(start_i + Duration::from_secs(86_400 * 365));

    // Run: watch memory until the end (nodes stop by themselves then).
    let poll_rss = |procs: &mut [NodeProc], rss: &mut [Option<u64>], private: &mut [Option<u64>]| {
        for (i, p) in procs.iter_mut().enumerate() {
            if !p.poll_exit() {
                if let Some(k) = peak_rss_kib(p.child.id()) {
                    rss[i] = Some(rss[i].map_or(k, |r| r.max(k)));
                }
                if let Some(k) = private_rss_kib(p.child.id()) {
                    private[i] = Some(private[i].map_or(k, |r| r.max(k)));
                }
            }
        }
    };
    // Crash and restart faults on the way.
    let (mut planned, faults_ignored) = plan_faults(&layout, start_i, options.speed);
    planned.reverse();
    let mut faults: Vec<FaultReport> = Vec::new();
    let mut restarts = vec![0u32; n];
    let mut events_files: Vec<PathBuf> = config_paths.iter().map(|(_, e)| e.clone()).collect();
    // Restarted nodes waiting to reconnect before they are told the start:
    // node → (deadline, index of its fault report).
    let mut to_start: BTreeMap<usize, (Instant, usize)> = BTreeMap::new();
    while Instant::now() < end
        && !interrupted()
        && (procs.iter_mut().any(|p| !p.poll_exit()) || !planned.is_empty())
    {
        poll_rss(&mut procs, &mut rss, &mut private);
        while planned.last().is_some_and(|f| f.at <= Instant::now()) {
            let Some(f) = planned.pop() else { break };
            let i = f.node;
            let name = &layout.names[i];
            let done_wall_s = Instant::now().saturating_duration_since(start_i).as_secs_f64();
            if f.crash {
                if procs[i].poll_exit() {
                    continue; // already down
                }
                let pid = procs[i].child.id();
                // SIGKILL: the process gets no chance to flush or say goodbye.
                let _ = procs[i].child.kill();
                let _ = procs[i].child.wait();
                procs[i].exit = Some("killed by a crash fault".into());
                procs[i].stdin = None;
                to_start.remove(&i);
                faults.push(FaultReport {
                    node: name.clone(),
                    action: "crash".into(),
                    at_s: f.at_s,
                    done_wall_s,
                    pid,
                    resumed_height: None,
                    started_after_s: None,
                });
            } else {
                if !procs[i].poll_exit() {
                    continue; // only a crashed node restarts
                }
                restarts[i] += 1;
                let k = restarts[i];
                let mut config = configs[i].clone();
                config.events = nodes_dir.join(format!("{name}.restart{k}.events.jsonl"));
                let path = nodes_dir.join(format!("{name}.restart{k}.json"));
                config.save(&path)?;
                events_files.push(config.events.clone());
                let log_path = nodes_dir.join(format!("{name}.log"));
                let p = spawn_node(&launch(i), name, i, k, &path, &log_path, &line_tx)?;
                let pid = p.child.id();
                // The old handle is reaped already; dropping it joins its reader.
                drop(std::mem::replace(&mut procs[i], p));
                to_start.insert(i, (Instant::now() + options.startup_timeout, faults.len()));
                faults.push(FaultReport {
                    node: name.clone(),
                    action: "restart".into(),
                    at_s: f.at_s,
                    done_wall_s,
                    pid,
                    resumed_height: None,
                    started_after_s: None,
                });
            }
        }
        // A restarted node starts once reconnected, or at its deadline anyway.
        let due: Vec<usize> = to_start
            .iter()
            .filter(|(_, (deadline, _))| *deadline <= Instant::now())
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            if let Some((_, r)) = to_start.remove(&i) {
                send_start(&mut procs[i], start_ms);
                faults[r].started_after_s = Some(procs[i].spawned.elapsed().as_secs_f64());
            }
        }
        let next_fault = planned.last().map_or(end, |f| f.at.min(end));
        let wait = next_fault.saturating_duration_since(Instant::now()).min(Duration::from_millis(20));
        if let Ok(msg) = line_rx.recv_timeout(wait) {
            let i = msg.0;
            match seen.take(msg, &procs) {
                Some(ProcessLine::Connected(_)) => {
                    if let Some((_, r)) = to_start.remove(&i) {
                        send_start(&mut procs[i], start_ms);
                        faults[r].started_after_s = Some(procs[i].spawned.elapsed().as_secs_f64());
                    }
                }
                Some(ProcessLine::Resumed(h)) => {
                    if let Some(r) = faults.iter_mut().rev().find(|f| f.node == layout.names[i]) {
                        r.resumed_height = Some(h);
                    }
                }
                _ => {}
            }
        }
    }
    drop(line_tx);
    poll_rss(&mut procs, &mut rss, &mut private);

    // Stop: close every standard input, wait, kill stragglers.
    for p in &mut procs {
        p.stdin = None;
    }
    let stop_deadline = Instant::now() + options.stop_timeout;
    while Instant::now() < stop_deadline && procs.iter_mut().any(|p| !p.poll_exit()) {
        if let Ok(msg) = line_rx.recv_timeout(Duration::from_millis(20)) {
            seen.take(msg, &procs);
        }
    }
    for p in &mut procs {
        p.kill();
        if let Some(r) = p.reader.take() {
            let _ = r.join();
        }
    }
    while let Ok(msg) = line_rx.try_recv() {
        seen.take(msg, &procs);
    }

    // Merge the events.
    let events_path = out_dir.join("events.jsonl");
    let (events, events_malformed) = merge_events(&events_files, &events_path)?;

    let nodes = (0..n)
        .map(|i| {
            let own = seen.reports[i].as_ref().and_then(|r| r.peak_rss_kib);
            NodeReport {
                id: i as u32,
                name: layout.names[i].clone(),
                pid: procs[i].child.id(),
                startup_ms: seen.listening[i],
                connected_ms: seen.connected[i],
                peak_rss_kib: match (rss[i], own) {
                    (Some(a), Some(b)) => Some(a.max(b)),
                    (a, b) => a.or(b),
                },
                peak_private_kib: private[i],
                exit: procs[i].exit.clone().unwrap_or_default(),
                report: seen.reports[i].take(),
                restarts: restarts[i],
            }
        })
        .collect();
    drop(procs);
    drop(spaces);
    let report = EmulationReport {
        scenario: s.name.clone(),
        seed: s.seed,
        speed: options.speed,
        duration_s: duration.as_secs_f64(),
        start_unix_ms: start_ms,
        wall_s: wall.elapsed().as_secs_f64(),
        nodes,
        events_path,
        events,
        events_malformed,
        netns: plan.is_some(),
        netem: plan.as_ref().is_some_and(|p| p.shape),
        interrupted: interrupted(),
        faults,
        faults_ignored,
    };
    let json_path = out_dir.join("emulation.json");
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| EmuError::Config { path: json_path.clone(), reason: e.to_string() })?;
    std::fs::write(&json_path, json).map_err(io_at(&json_path))?;
    Ok(report)
}

/// Writes JSON through a temporary file and a rename, so a reader never
/// sees half of it.
fn write_atomic(path: &Path, value: &impl Serialize) -> Result<(), EmuError> {
    let json = serde_json::to_string_pretty(value)
        .map_err(|e| EmuError::Config { path: path.to_path_buf(), reason: e.to_string() })?;
    let tmp = path.with_extension("json.tmp");
    std::fs::write(&tmp, json).map_err(io_at(&tmp))?;
    std::fs::rename(&tmp, path).map_err(io_at(path))
}

#[derive(Deserialize)]
struct LineKey {
    t: u64,
    node: Option<u32>,
}

/// Merges JSON-lines event files into `out`, sorted by time, then node,
/// then file order. Lines without a numeric `t` are left out and counted.
/// Returns (lines written, lines left out).
pub fn merge_events(inputs: &[PathBuf], out: &Path) -> Result<(u64, u64), EmuError> {
    let mut lines: Vec<(u64, u32, usize, String)> = Vec::new();
    let mut bad = 0u64;
    for path in inputs {
        let f = match std::fs::File::open(path) {
            Ok(f) => f,
            // A node that never started writes no file.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(EmuError::Io { path: path.clone(), source: e }),
        };
        for line in BufReader::new(f).lines() {
            let line = line.map_err(io_at(path))?;
            match serde_json::from_str::<LineKey>(&line) {
                Ok(k) => {
                    let seq = lines.len();
                    lines.push((k.t, k.node.unwrap_or(u32::MAX), seq, line));
                }
                Err(_) => bad += 1,
            }
        }
    }
    lines.sort_unstable_by_key(|(t, node, seq, _)| (*t, *node, *seq));
    let f = std::fs::File::create(out).map_err(io_at(out))?;
    let mut w = BufWriter::new(f);
    for (_, _, _, line) in &lines {
        w.write_all(line.as_bytes()).and_then(|()| w.write_all(b"\n")).map_err(io_at(out))?;
    }
    w.flush().map_err(io_at(out))?;
    Ok((lines.len() as u64, bad))
}

/// Every node's final state, by name (for checks after a run).
pub fn summaries(report: &EmulationReport) -> BTreeMap<String, crate::process::BtcSummary> {
    report.nodes.iter().filter_map(|n| Some((n.name.clone(), n.report.as_ref()?.btc.clone()))).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn malloc_tunables_are_added_to_the_callers_own() {
        let ours = node_malloc_tunables(None);
        assert_eq!(ours, "glibc.malloc.mmap_threshold=131072:glibc.malloc.arena_max=1");
        assert_eq!(node_malloc_tunables(Some("")), ours);
        assert_eq!(
            node_malloc_tunables(Some("glibc.malloc.tcache_count=0")),
            format!("glibc.malloc.tcache_count=0:{ours}")
        );
        // The caller's own value of one of ours is kept.
        assert_eq!(
            node_malloc_tunables(Some("glibc.malloc.arena_max=4")),
            "glibc.malloc.arena_max=4:glibc.malloc.mmap_threshold=131072"
        );
    }

    #[cfg(unix)]
    #[test]
    fn the_node_executable_beside_is_used_only_from_the_same_build() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = std::env::temp_dir().join(format!("fika-node-exe-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("temp dir");
        let exe = dir.join("fika");
        // None beside it: the executable itself.
        assert_eq!(node_exe_beside(&exe, "b1"), exe);
        let node = dir.join(NODE_EXE);
        std::fs::write(&node, "#!/bin/sh\n[ \"$1\" = --build-id ] && echo b1\n").expect("script");
        std::fs::set_permissions(&node, std::fs::Permissions::from_mode(0o755)).expect("chmod");
        assert_eq!(node_exe_beside(&exe, "b1"), node);
        // From another build: the executable itself.
        assert_eq!(node_exe_beside(&exe, "b2"), exe);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn free_ports_are_distinct_and_outside_the_ephemeral_range() {
        let p = free_ports(8).expect("ports");
        let set: std::collections::BTreeSet<_> = p.iter().collect();
        assert_eq!(set.len(), 8);
        // A second call in the same process (the first's ports released
        // but not yet bound by their nodes) gets other ports.
        let q = free_ports(8).expect("ports");
        assert!(q.iter().all(|x| !set.contains(x)), "{p:?} then {q:?}");
        let (lo, hi) = ephemeral_range();
        if lo > 10_000 {
            assert!(p.iter().all(|x| !(lo..=hi).contains(x)), "{p:?} in {lo}..={hi}");
        }
    }

    #[test]
    fn merge_sorts_by_time_then_node_and_skips_broken_lines() {
        let dir = std::env::temp_dir().join(format!("fika-emu-merge-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("dir");
        let a = dir.join("a.jsonl");
        let b = dir.join("b.jsonl");
        std::fs::write(
            &a,
            "{\"t\":5,\"node\":1,\"kind\":\"x\"}\n{\"t\":9,\"node\":1,\"kind\":\"y\"}\n{\"t\":1",
        )
        .expect("write");
        std::fs::write(&b, "{\"t\":5,\"node\":0,\"kind\":\"z\"}\n{\"t\":7,\"node\":0,\"kind\":\"w\"}\n")
            .expect("write");
        let out = dir.join("m.jsonl");
        let (n, bad) = merge_events(&[a, b, dir.join("missing.jsonl")], &out).expect("merge");
        assert_eq!((n, bad), (4, 1));
        let text = std::fs::read_to_string(&out).expect("read");
        let kinds: Vec<&str> = text.lines().map(|l| &l[l.len() - 3..l.len() - 2]).collect();
        assert_eq!(kinds, ["z", "x", "w", "y"]);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
