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
//! A second test kills a process that does nothing but mine and commit,
//! at eight arbitrary instants (most of its time is spent inside commits),
//! and checks each time that the store opens, replays and verifies, and
//! never goes back.
//!
//! Like the `emulate` test it has its own `main`: the emulator starts the
//! node processes as `<exe> node --config FILE`, and `<exe>` is this test
//! (as is the miner, `<exe> mine-forever DIR`).

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use fika_btc::msg::BtcMsg;
use fika_btc::node::{BtcNode, SharedDb};
use fika_core::{Node, NodeId, SimTime};
use fika_emu::durable::DurableNode;
use fika_emu::store::Identity;

use fika_core::testing::TestContext;
use fika_emu::orchestrate::summaries;
use fika_emu::store::Store;
use fika_emu::{EmulateOptions, emulate};
use support::check;

mod support;

fn main() -> ExitCode {
    support::main_with_commands(
        &[
            ("killed_node_resumes_from_its_store_and_catches_up", run),
            ("kills_in_the_middle_of_commits_leave_a_whole_store", kills),
        ],
        &[("mine-forever", |dir| mine_forever(Path::new(dir)))],
    )
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

fn thesis_demo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/thesis-demo.toml")
}

/// server1 of the thesis demo with the store in `dir`, restored if it
/// exists: the node, its store's tip height, and whether it was restored.
fn open_server1(dir: &Path) -> Result<(DurableNode, u32, bool), String> {
    let s = fika_scenario::load_file(&thesis_demo()).map_err(|e| e.to_string())?;
    let layout = fika_scenario::layout(&s).map_err(|e| e.to_string())?;
    let (mut node, db): (BtcNode, SharedDb) =
        fika_emu::build_btc_node_with_db(&s, &layout, NodeId(0)).map_err(|e| e.to_string())?;
    let genesis = db.borrow().rec(0).data.hash;
    let id = Identity::of(&node, &s.name, "server1", s.seed, genesis);
    let (mut store, existed) = Store::open(dir, &id, &node).map_err(|e| e.to_string())?;
    let height = if existed { store.restore(&mut node).map_err(|e| e.to_string())?.height } else { 0 };
    Ok((DurableNode::new(node, store, None, None), height, existed))
}

/// Mines on server1 of the thesis demo, committing every block, until killed.
fn mine_forever(dir: &Path) -> Result<(), String> {
    let (mut node, height, _) = open_server1(dir)?;
    // Block times follow the node's clock: start it where the chain is.
    let mut cx = TestContext::<BtcMsg>::new(0, &[]);
    cx.now = SimTime::from_secs(10 * u64::from(height));
    cx.rng = fika_core::derive_rng(u64::from(height), "miner", 0);
    loop {
        cx.now += Duration::from_secs(10);
        cx.timers.clear();
        cx.events.clear();
        // The full node's mining timer.
        node.on_timer(&mut cx, 1);
        if let Some(e) = node.failure() {
            return Err(e.to_string());
        }
    }
}

fn kills() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = std::env::temp_dir().join(format!("fika-emu-kills-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut last = 0;
    for round in 0..8u64 {
        let mut child = std::process::Command::new(&exe)
            .arg("mine-forever")
            .arg(&dir)
            .spawn()
            .map_err(|e| e.to_string())?;
        std::thread::sleep(Duration::from_millis(300 + 97 * round));
        let _ = child.kill(); // SIGKILL
        let status = child.wait().map_err(|e| e.to_string())?;
        check(status.code().is_none(), format!("round {round}: the miner was killed, not {status}"))?;
        // The store opens, replays, verifies its UTXO set, and went forward.
        let (node, height, existed) = open_server1(&dir).map_err(|e| format!("round {round}: {e}"))?;
        check(existed, format!("round {round}: the store exists"))?;
        check(height >= last, format!("round {round}: tip went back from {last} to {height}"))?;
        drop(node);
        eprintln!("round {round}: killed at height {height}");
        last = height;
    }
    check(last > 0, "the miner committed blocks")?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
