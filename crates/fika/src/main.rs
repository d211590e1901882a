//! `fika`: run, validate and inspect crypto-network scenarios.

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use clap::{Parser, Subcommand};
use fika::{RunOptions, run};
use indicatif::{ProgressBar, ProgressStyle};

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
}

const EXIT_RUN_FAILED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;

fn main() -> ExitCode {
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
