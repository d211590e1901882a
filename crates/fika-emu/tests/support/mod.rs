//! A small harness for emulation tests, which have their own `main`: the
//! emulator starts node processes as `<exe> node --config FILE`, and
//! `<exe>` is the test executable itself, which then runs
//! [`fika_emu::run_node_process`] instead of the tests.

#![allow(dead_code)]

use std::path::Path;
use std::process::ExitCode;

use fika_emu::{NodeProcessConfig, run_node_process};

/// One test: its name and body.
pub type Test = (&'static str, fn() -> Result<(), String>);

/// A helper process a test starts as `<exe> NAME ARG`: its name and body.
pub type Command = (&'static str, fn(&str) -> Result<(), String>);

/// `Err(what)` unless `ok`.
#[track_caller]
pub fn check(ok: bool, what: impl Into<String>) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.into()) }
}

fn node_main(config: &str) -> ExitCode {
    match NodeProcessConfig::load(Path::new(config)).and_then(|c| run_node_process(&c)) {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fika node: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Runs as a node process when asked to, else runs `tests` like a libtest
/// binary (`--list`, name filters, `--ignored` runs none).
pub fn main_with(tests: &[Test]) -> ExitCode {
    main_with_commands(tests, &[])
}

/// [`main_with`], also running `<exe> NAME ARG` as `commands`' NAME(ARG)
/// (helper processes a test starts).
pub fn main_with_commands(tests: &[Test], commands: &[Command]) -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let [_, node, flag, config] = args.as_slice() {
        if node == "node" && flag == "--config" {
            return node_main(config);
        }
    }
    if let [_, cmd, arg] = args.as_slice() {
        if let Some((name, f)) = commands.iter().find(|(name, _)| name == cmd) {
            return match f(arg) {
                Ok(()) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("{name}: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    if args.iter().any(|a| a == "--list") {
        for (name, _) in tests {
            println!("{name}: test");
        }
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().skip(1).filter(|a| !a.starts_with('-')).collect();
    let only_ignored = args.iter().any(|a| a == "--ignored");
    let chosen: Vec<&Test> = tests
        .iter()
        .filter(|(name, _)| {
            !only_ignored && (filters.is_empty() || filters.iter().any(|f| name.contains(f.as_str())))
        })
        .collect();
    println!("\nrunning {} test{}", chosen.len(), if chosen.len() == 1 { "" } else { "s" });
    let mut failed = Vec::new();
    for (name, body) in &chosen {
        match body() {
            Ok(()) => println!("test {name} ... ok"),
            Err(e) => {
                println!("test {name} ... FAILED\n\n{e}\n");
                failed.push(*name);
            }
        }
    }
    let filtered = tests.len() - chosen.len();
    let passed = chosen.len() - failed.len();
    if failed.is_empty() {
        println!(
            "\ntest result: ok. {passed} passed; 0 failed; 0 ignored; 0 measured; {filtered} filtered out\n"
        );
        ExitCode::SUCCESS
    } else {
        println!(
            "\ntest result: FAILED. {passed} passed; {} failed; 0 ignored; 0 measured; {filtered} filtered out\n",
            failed.len()
        );
        ExitCode::FAILURE
    }
}
