//! `fika`: run, validate and inspect crypto-network scenarios.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use fika::{RunOptions, run};
use indicatif::{ProgressBar, ProgressStyle};

/// mimalloc: a large run makes and frees millions of small objects
/// (requests in flight, events), which it serves faster than the system
/// allocator, and with two threads (the run and its event recorder) without
/// locking. See [`keep_freed_memory`]. (`fika-node`, an emulated node's
/// process, keeps the system allocator.)
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `mi_option_purge_delay` (its position in `mi_option_t`).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Keeps memory freed during a run for reuse rather than handing it back to
/// the system after a delay: a run frees and makes objects in bursts (one
/// per block), and every page handed back is paid for again by a page fault
/// in the next burst (about 5 % of a large run).
#[allow(unsafe_code)]
fn keep_freed_memory() {
    // SAFETY: sets one of mimalloc's options to a documented value (-1: never
    // purge); no memory is touched.
    unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, -1) };
}

/// fika — a laboratory for cryptocurrency networks and the bridges between them.
#[derive(Parser, Debug)]
#[command(name = "fika", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Simulate a scenario in virtual time and write its outputs.
    Run {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Replace the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Output directory [default: runs/<scenario name>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// No progress bar and no summary table; only the digest line.
        #[arg(long)]
        quiet: bool,
    },
    /// Check a scenario file and report every error with its field path.
    Validate {
        /// The scenario file (TOML).
        scenario: PathBuf,
    },
    /// Emulate a bitcoin or powpeg scenario: every node its own OS process, linked
    /// over TCP on loopback as the topology says, in real (or scaled) time.
    Emulate {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// Output directory [default: runs/<scenario name>-emu].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Node seconds per wall-clock second (e.g. 10 runs ten times faster).
        #[arg(long, default_value_t = 1.0)]
        speed: f64,
        /// Node time to run, in seconds [default: the scenario's duration].
        #[arg(long)]
        duration: Option<f64>,
        /// Replace the scenario's seed.
        #[arg(long)]
        seed: Option<u64>,
        /// Each node in its own network namespace, every link a veth pair
        /// with the scenario's delay and loss applied by `tc netem` (root only).
        #[arg(long)]
        netns: bool,
        /// With --netns: plain cables without netem shaping (for kernels without sch_netem).
        #[arg(long, requires = "netns")]
        no_netem: bool,
    },
    /// Run a scenario over a grid of parameter values × seeds, in parallel,
    /// and write per-point means, standard deviations and 95 % confidence
    /// intervals of every metric to sweep.csv, every run's values to
    /// runs.csv, and plots of every metric against the first parameter
    /// (beside its closed forms, where they exist) to report.html.
    Sweep {
        /// The scenario file (TOML).
        scenario: PathBuf,
        /// A dotted path into the resolved scenario and its values, e.g.
        /// `bitcoin.params.block_interval_secs=60,600` or `nodes[1].hashrate=0.1,0.3`
        /// (repeatable: the grid is the cartesian product).
        #[arg(long = "param", value_name = "PATH=V1,V2,...")]
        params: Vec<String>,
        /// Seeds per grid point (the scenario's seed, +1, +2, ...).
        #[arg(long, default_value_t = 10)]
        seeds: u32,
        /// Output directory [default: runs/sweep-<scenario name>].
        #[arg(long)]
        out: Option<PathBuf>,
        /// Parallel runs [default: the number of cores].
        #[arg(long)]
        jobs: Option<usize>,
    },
    /// Talk to a node of a running emulation through its JSON-RPC server:
    /// `balance`, `send TO AMOUNT [FEE]`, `update`, `chain [N]`, `peers`,
    /// `rpc METHOD [PARAMS...]`; without a command, an interactive prompt.
    Client {
        /// The node's name (e.g. client1).
        node: String,
        /// The emulation's output directory [default: the newest under runs/].
        #[arg(long)]
        run: Option<PathBuf>,
        /// A command and its arguments (none: a prompt).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        command: Vec<String>,
    },
    /// List the nodes of a running emulation: pid, tip, peers, mempool.
    Status {
        /// The emulation's output directory [default: the newest under runs/].
        #[arg(long)]
        run: Option<PathBuf>,
    },
    /// Run one emulated node (started by `fika emulate`).
    Node {
        /// The node's configuration (JSON, written by `fika emulate`).
        #[arg(long)]
        config: PathBuf,
    },
}

const EXIT_RUN_FAILED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
    keep_freed_memory();
    let cli = Cli::parse();
    match cli.command {
        Command::Validate { scenario } => match fika_scenario::load_file(&scenario) {
            Ok(s) => {
                let n: u64 = s.nodes.iter().map(|g| u64::from(g.count)).sum();
                println!(
                    "{}: ok ({} nodes, protocol {:?}, {} faults)",
                    scenario.display(),
                    n,
                    s.protocol,
                    s.faults.len()
                );
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(EXIT_BAD_INPUT)
            }
        },
        Command::Client { node, run, command } => client_cmd(&node, run.as_deref(), &command),
        Command::Status { run } => status_cmd(run.as_deref()),
        Command::Sweep { scenario, params, seeds, out, jobs } => {
            sweep_cmd(&scenario, &params, seeds, out, jobs)
        }
        Command::Node { config } => {
            match fika_emu::process::NodeProcessConfig::load(&config)
                .and_then(|c| fika_emu::process::run_node_process(&c))
            {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("error: node: {e}");
                    ExitCode::from(EXIT_RUN_FAILED)
                }
            }
        }
        Command::Emulate { scenario, out, speed, duration, seed, netns, no_netem } => {
            if !(speed.is_finite() && speed > 0.0) {
                eprintln!("error: --speed {speed}: expected a positive number");
                return ExitCode::from(EXIT_BAD_INPUT);
            }
            let duration = match duration.map(std::time::Duration::try_from_secs_f64) {
                Some(Err(_)) => {
                    eprintln!("error: --duration: expected a non-negative number of seconds");
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
                Some(Ok(d)) => Some(d),
                None => None,
            };
            let s = match fika_scenario::load_file(&scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
            };
            let exe = match std::env::current_exe() {
                Ok(e) => e,
                Err(e) => {
                    eprintln!("error: cannot find the fika executable: {e}");
                    return ExitCode::from(EXIT_RUN_FAILED);
                }
            };
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(format!("{}-emu", s.name)));
            let on_ready = fika_emu::orchestrate::ReadyHook(std::sync::Arc::new(|dir, nodes| {
                eprintln!(
                    "{} nodes ready; RPC: `fika status --run {d}`, `fika client NODE --run {d}`",
                    nodes.nodes.len(),
                    d = dir.display()
                );
            }));
            let opts = fika_emu::orchestrate::EmulateOptions {
                speed,
                duration,
                seed,
                netns,
                netem: !no_netem,
                interrupt: Some(fika_emu::orchestrate::interrupt_on_signals()),
                on_ready: Some(on_ready),
                ..fika_emu::orchestrate::EmulateOptions::new(fika_emu::orchestrate::node_exe_beside(
                    &exe,
                    env!("FIKA_BUILD_ID"),
                ))
            };
            match fika_emu::orchestrate::emulate(&scenario, &out, &opts) {
                Ok(r) => {
                    let mut t = fika_report::SummaryTable::new();
                    t.row("scenario", &r.scenario)
                        .row("nodes (processes)", r.nodes.len())
                        .row("node time / wall time", format!("{:.1} s / {:.1} s", r.duration_s, r.wall_s))
                        .row("events merged", r.events);
                    if r.netns {
                        let cables = if r.netem { "veth + netem per link" } else { "plain veth per link" };
                        t.row("network", format!("a namespace per node, {cables}"));
                    }
                    let rss: Vec<u64> = r.nodes.iter().filter_map(|n| n.peak_rss_kib).collect();
                    if let Some(max) = rss.iter().max() {
                        let mean = rss.iter().sum::<u64>() as f64 / rss.len() as f64;
                        t.row(
                            "peak RSS per node (mean / max)",
                            format!("{:.1} MB / {:.1} MB", mean / 1024.0, *max as f64 / 1024.0),
                        );
                    }
                    let private: Vec<u64> = r.nodes.iter().filter_map(|n| n.peak_private_kib).collect();
                    if let Some(max) = private.iter().max() {
                        let mean = private.iter().sum::<u64>() as f64 / private.len() as f64;
                        t.row(
                            "private memory per node (mean / max)",
                            format!("{:.1} MB / {:.1} MB", mean / 1024.0, *max as f64 / 1024.0),
                        );
                    }
                    let starts: Vec<f64> = r.nodes.iter().filter_map(|n| n.connected_ms).collect();
                    if let Some(max) = starts.iter().cloned().reduce(f64::max) {
                        t.row("all peers connected after", format!("{max:.0} ms"));
                    }
                    println!("{t}");
                    println!("outputs in {}", out.display());
                    if r.interrupted {
                        eprintln!("interrupted: the nodes were stopped early, their events merged");
                        return ExitCode::from(130);
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: the emulation failed: {e}");
                    ExitCode::from(EXIT_RUN_FAILED)
                }
            }
        }
        Command::Run { scenario, seed, out, quiet } => {
            let s = match fika_scenario::load_file(&scenario) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("error: {e}");
                    return ExitCode::from(EXIT_BAD_INPUT);
                }
            };
            let out = out.unwrap_or_else(|| PathBuf::from("runs").join(&s.name));
            let opts = RunOptions { seed, out: Some(out.clone()) };
            let bar = if quiet || !std::io::stderr().is_terminal() {
                ProgressBar::hidden()
            } else {
                ProgressBar::new(s.duration.as_millis() as u64)
            };
            bar.set_style(
                ProgressStyle::with_template("{bar:40} {msg}")
                    .unwrap_or_else(|_| ProgressStyle::default_bar()),
            );
            let started = Instant::now();
            let mut progress = |p: fika_sim::Progress| {
                bar.set_position(p.now.as_millis());
                let secs = started.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!("{} virtual, {:.1} M events/s", p.now, p.events as f64 / secs / 1e6));
            };
            match run(&s, &opts, &mut progress) {
                Ok(report) => {
                    bar.finish_and_clear();
                    if quiet {
                        println!("digest {}", report.digest);
                    } else {
                        println!("{}", report.table());
                        println!("outputs in {}", out.display());
                    }
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    bar.abandon();
                    eprintln!("error: the run failed: {e}");
                    ExitCode::from(EXIT_RUN_FAILED)
                }
            }
        }
    }
}

fn client_cmd(node: &str, run: Option<&std::path::Path>, words: &[String]) -> ExitCode {
    use fika::client::{Command as C, Session, find_run, parse_command};
    let fail = |e: fika::client::CliError| {
        eprintln!("error: {e}");
        ExitCode::from(e.exit_code())
    };
    let session = match find_run(run).and_then(|r| Session::open(&r, node)) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    if !words.is_empty() {
        return match parse_command(words).and_then(|c| session.run(&c)) {
            Ok(out) => {
                if !out.is_empty() {
                    println!("{out}");
                }
                ExitCode::SUCCESS
            }
            Err(e) => fail(e),
        };
    }
    // The prompt: one command a line until `exit` or the end of input.
    use std::io::{BufRead as _, Write as _};
    let stdin = std::io::stdin();
    let mut lines = stdin.lock().lines();
    println!("connected to {} ({}); `help` lists the commands", session.name(), session.run_dir().display());
    loop {
        print!("{}> ", session.name());
        let _ = std::io::stdout().flush();
        let Some(Ok(line)) = lines.next() else {
            println!();
            return ExitCode::SUCCESS;
        };
        let words: Vec<String> = line.split_whitespace().map(str::to_owned).collect();
        if words.is_empty() {
            continue;
        }
        match parse_command(&words) {
            Ok(C::Exit) => return ExitCode::SUCCESS,
            Ok(c) => match session.run(&c) {
                Ok(out) => println!("{out}"),
                Err(e) => eprintln!("error: {e}"),
            },
            Err(e) => eprintln!("error: {e}"),
        }
    }
}

fn status_cmd(run: Option<&std::path::Path>) -> ExitCode {
    let result = fika::client::find_run(run).and_then(|r| fika::client::status(&r));
    match result {
        Ok((nodes, rows)) => {
            println!("{}", fika::client::status_table(&nodes, &rows));
            if rows.iter().all(|r| r.rpc.is_ok()) {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(EXIT_RUN_FAILED)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(e.exit_code())
        }
    }
}

fn sweep_cmd(
    scenario: &std::path::Path,
    params: &[String],
    seeds: u32,
    out: Option<PathBuf>,
    jobs: Option<usize>,
) -> ExitCode {
    use fika::sweep;
    let s = match fika_scenario::load_file(scenario) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    if seeds == 0 {
        eprintln!("error: --seeds must be at least 1");
        return ExitCode::from(EXIT_BAD_INPUT);
    }
    let params = match params.iter().map(|p| sweep::parse_param(p)).collect::<Result<Vec<_>, _>>() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let points = match sweep::grid(&s, &params) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: bad --param: {e}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    let jobs = jobs.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get())).max(1);
    let spec = sweep::SweepSpec { params, seeds, jobs };
    let out = out.unwrap_or_else(|| PathBuf::from("runs").join(format!("sweep-{}", s.name)));
    let total = points.len() * seeds as usize;
    let bar =
        if std::io::stderr().is_terminal() { ProgressBar::new(total as u64) } else { ProgressBar::hidden() };
    bar.set_style(
        ProgressStyle::with_template("{bar:40} {pos}/{len} runs, {elapsed}")
            .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let started = Instant::now();
    let progress = |done: usize, _total: usize| bar.set_position(done as u64);
    let result = sweep::sweep(points, &spec, &progress);
    bar.finish_and_clear();
    if let Err(e) = sweep::write(&out, &result, &s.name) {
        eprintln!("error: cannot write {}: {e}", out.display());
        return ExitCode::from(EXIT_RUN_FAILED);
    }
    let failures = result.failures();
    for (vals, seed, e) in &failures {
        eprintln!("error: run [{vals}] seed {seed} failed: {e}");
    }
    println!(
        "{total} runs ({} failed) on {jobs} threads in {:.1} s; {} and {}",
        failures.len(),
        started.elapsed().as_secs_f64(),
        out.join("sweep.csv").display(),
        out.join("report.html").display()
    );
    if failures.is_empty() { ExitCode::SUCCESS } else { ExitCode::from(EXIT_RUN_FAILED) }
}
