//! A node killed mid-run resumes from its store and catches up.
//!
//! `scenarios/tests/emu-restart.toml` emulated at 20× real time: server2, a
//! mining full node, gets SIGKILL at 60 s of node time (its crash fault)
//! and is started again at 100 s on the same data directory. The test
//! checks that it resumed from disk at least at the height it had
//! committed before the kill (before any catch-up), that every block it
//! had committed is still in its store, and that all servers end on one
//! tip. It prints the store's cost per block commit and the file's size.
//!
//! Like the `emulate` test it has its own `main`: the emulator starts the
//! node processes as `<exe> node --config FILE`, and `<exe>` is this test.

use std::collections::BTreeSet;
use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use fika_emu::orchestrate::summaries;
use fika_emu::store::Store;
use fika_emu::{EmulateOptions, NodeProcessConfig, emulate, run_node_process};

const NAME: &str = "killed_node_resumes_from_its_store_and_catches_up";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().collect();
    if let [_, node, flag, config] = args.as_slice() {
        if node == "node" && flag == "--config" {
            return match NodeProcessConfig::load(Path::new(config)).and_then(|c| run_node_process(&c)) {
                Ok(_) => ExitCode::SUCCESS,
                Err(e) => {
                    eprintln!("fika node: {e}");
                    ExitCode::FAILURE
                }
            };
        }
    }
    if args.iter().any(|a| a == "--list") {
        println!("{NAME}: test");
        return ExitCode::SUCCESS;
    }
    let filters: Vec<&String> = args.iter().skip(1).filter(|a| !a.starts_with('-')).collect();
    if args.iter().any(|a| a == "--ignored")
        || (!filters.is_empty() && !filters.iter().any(|f| NAME.contains(f.as_str())))
    {
        println!(
            "\nrunning 0 tests\n\ntest result: ok. 0 passed; 0 failed; 0 ignored; 0 measured; 1 filtered out\n"
        );
        return ExitCode::SUCCESS;
    }
    println!("\nrunning 1 test");
    match run() {
        Ok(()) => {
            println!("test {NAME} ... ok\n\ntest result: ok. 1 passed; 0 failed\n");
            ExitCode::SUCCESS
        }
        Err(e) => {
            println!("test {NAME} ... FAILED\n\n{e}\n\ntest result: FAILED. 0 passed; 1 failed\n");
            ExitCode::FAILURE
        }
    }
}

fn check(ok: bool, what: impl Into<String>) -> Result<(), String> {
    if ok { Ok(()) } else { Err(what.into()) }
}

/// The `store.*` events of one events file: (kind, height, tip).
fn store_events(path: &Path) -> Result<Vec<(String, u64, String)>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut out = Vec::new();
    // The last line of a killed process may be cut short: skip what does not parse.
    for v in text.lines().filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok()) {
        let kind = v["kind"].as_str().unwrap_or_default();
        if kind.starts_with("store.") {
            let tip = v["tip"].as_str().unwrap_or_default().to_owned();
            out.push((kind.to_owned(), v["height"].as_u64().unwrap_or(0), tip));
        }
    }
    Ok(out)
}

fn run() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/tests/emu-restart.toml");
    let out = std::env::temp_dir().join(format!("fika-emu-restart-{}", std::process::id()));
    let mut opts = EmulateOptions::new(exe);
    opts.speed = 20.0;
    opts.startup_timeout = Duration::from_secs(20);
    let report = emulate(&scenario, &out, &opts).map_err(|e| e.to_string())?;
    let nodes = out.join("nodes");

    // The faults were carried out: a kill, then a restart that resumed.
    let actions: Vec<(&str, &str)> =
        report.faults.iter().map(|f| (f.node.as_str(), f.action.as_str())).collect();
    check(actions == [("server2", "crash"), ("server2", "restart")], format!("faults: {:?}", report.faults))?;
    let resumed = report.faults[1].resumed_height.ok_or("the restarted server2 reported no resumed line")?;
    check(report.faults[1].started_after_s.is_some(), "the restarted server2 was told to start")?;

    // Before the kill: what server2 had committed (and so acknowledged).
    let before = store_events(&nodes.join("server2.events.jsonl"))?;
    let committed: Vec<&(String, u64, String)> = before.iter().filter(|e| e.0 == "store.commit").collect();
    let height_before = committed.iter().map(|e| e.1).max().unwrap_or(0);
    check(height_before >= 1, format!("server2 had committed blocks before the kill: {before:?}"))?;
    // Right after the restart, before any catch-up: at least that height, from disk.
    let after = store_events(&nodes.join("server2.restart1.events.jsonl"))?;
    check(
        after.first().is_some_and(|e| e.0 == "store.resumed"),
        format!("first store event after restart: {after:?}"),
    )?;
    check(after[0].1 == u64::from(resumed), "the resumed event and status line agree")?;
    check(
        u64::from(resumed) >= height_before,
        format!("resumed at {resumed}, had committed {height_before}"),
    )?;

    // The end: every server on one tip, at the miners' stop height.
    let s = summaries(&report);
    let tips: BTreeSet<(u32, &str)> = ["server1", "server2", "server3"]
        .iter()
        .map(|n| (s[*n].tip_height, s[*n].tip_hash.as_str()))
        .collect();
    check(tips.len() == 1, format!("servers end on one tip: {tips:?}"))?;
    let (final_height, final_tip) = tips.iter().next().copied().unwrap_or_default();
    check(final_height >= 12, format!("miners reached the stop height: {final_height}"))?;
    check(s["client1"].confirmed_sat == 59 * 100_000_000, format!("client1: {:?}", s["client1"]))?;
    check(s["client2"].confirmed_sat == 140 * 100_000_000, format!("client2: {:?}", s["client2"]))?;

    // Nothing lost: every tip server2 committed before the kill is still in its store.
    let store = Store::open_file(&Store::file_in(&nodes.join("server2"))).map_err(|e| e.to_string())?;
    let saved = store.load().map_err(|e| e.to_string())?;
    let kept: BTreeSet<String> = saved.blocks.iter().map(|b| b.hash.to_string()).collect();
    for (_, h, tip) in &committed {
        check(kept.contains(tip), format!("block {tip} (height {h}) committed before the kill is kept"))?;
    }
    check(
        saved.best_chain.last().map(|h| h.to_string()).as_deref() == Some(final_tip),
        "its store's tip is its final tip",
    )?;
    check(saved.best_chain.len() == final_height as usize + 1, "its store's best chain reaches the tip")?;

    // Cost: per block commit, and the file's size.
    for n in ["server1", "server2", "server3", "client1"] {
        let r = report.nodes.iter().find(|r| r.name == n).and_then(|r| r.report.as_ref());
        let st = r.and_then(|r| r.store.clone()).ok_or(format!("{n}: no store stats"))?;
        let per_block = st.block_commit_micros.checked_div(st.block_commits).unwrap_or(0);
        eprintln!(
            "{n:8} commits {:4}, block commits {:3} ({} blocks), {per_block} µs per block commit (max {} µs), file {} KiB",
            st.commits,
            st.block_commits,
            st.blocks,
            st.max_commit_micros,
            st.file_bytes / 1024
        );
        check(st.commits > 0 && st.file_bytes > 0, format!("{n} committed: {st:?}"))?;
    }
    let restarted = report.nodes.iter().find(|r| r.name == "server2").ok_or("server2 report")?;
    check(restarted.restarts == 1, "server2 restarted once")?;
    let r = restarted.report.as_ref().ok_or("server2 reported its end")?;
    check(
        r.resumed.as_ref().is_some_and(|x| x.height == resumed),
        format!("server2 resumed: {:?}", r.resumed),
    )?;
    eprintln!(
        "server2: committed height {height_before} before the kill, resumed at {resumed} ({} µs to replay), final {final_height}",
        r.resumed.as_ref().map_or(0, |x| x.micros)
    );
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
