//! `emulate` end to end: the thesis demo network as five OS processes on
//! loopback, at 25× real time.
//!
//! This test has its own `main` (no libtest harness, see `support`): the
//! emulator starts the node processes as `<exe> node --config FILE`, and
//! `<exe>` is this very test executable.

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use fika_emu::orchestrate::summaries;
use fika_emu::{EmulateOptions, emulate};
use support::check;

mod support;

fn main() -> ExitCode {
    support::main_with(&[("emulate_thesis_demo_as_processes", emulate_thesis_demo)])
}

fn emulate_thesis_demo() -> Result<(), String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/thesis-demo.toml");
    let out = std::env::temp_dir().join(format!("fika-emu-emulate-{}", std::process::id()));
    let mut opts = EmulateOptions::new(exe);
    opts.speed = 25.0;
    opts.duration = Some(Duration::from_secs(150));
    opts.startup_timeout = Duration::from_secs(20);
    let report = emulate(&scenario, &out, &opts).map_err(|e| e.to_string())?;
    for n in &report.nodes {
        eprintln!(
            "{:8} pid {:6} startup {:?} ms, connected {:?} ms, peak RSS {:?} KiB, {}",
            n.name, n.pid, n.startup_ms, n.connected_ms, n.peak_rss_kib, n.exit
        );
    }
    check(report.nodes.len() == 5, "five nodes")?;
    for n in &report.nodes {
        check(n.startup_ms.is_some() && n.connected_ms.is_some(), format!("{} started: {n:?}", n.name))?;
        check(n.peak_rss_kib.is_some_and(|k| k > 0), format!("{} peak RSS measured", n.name))?;
        check(n.exit.contains("exit status: 0"), format!("{} exited cleanly: {}", n.name, n.exit))?;
        let r = n.report.as_ref().ok_or(format!("{} reported its end", n.name))?;
        check(r.stats.started && r.stats.refused == 0, format!("{}: {:?}", n.name, r.stats))?;
        // No stray process: the pid is gone (or reused by something else).
        let alive = std::fs::read_to_string(format!("/proc/{}/cmdline", n.pid))
            .is_ok_and(|c| c.contains(&*opts.exe.to_string_lossy()));
        check(!alive, format!("{} (pid {}) still running", n.name, n.pid))?;
    }
    let s = summaries(&report);
    let heights: Vec<u32> = ["server1", "server2", "server3"].iter().map(|n| s[*n].tip_height).collect();
    let (lo, hi) = (heights.iter().min().copied().unwrap_or(0), heights.iter().max().copied().unwrap_or(0));
    check(lo >= 4 && hi - lo <= 1, format!("servers mined and agree: {heights:?}"))?;
    check(s["client1"].confirmed_sat == 59 * 100_000_000, format!("client1: {:?}", s["client1"]))?;
    check(s["client2"].confirmed_sat == 140 * 100_000_000, format!("client2: {:?}", s["client2"]))?;
    // The merged events: sorted by time then node, every node present.
    let text = std::fs::read_to_string(&report.events_path).map_err(|e| e.to_string())?;
    let mut last = (0u64, 0u64);
    let mut nodes = std::collections::BTreeSet::new();
    for line in text.lines() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let key = (v["t"].as_u64().unwrap_or(0), v["node"].as_u64().unwrap_or(0));
        check(key >= last, format!("events out of order at {line}"))?;
        last = key;
        nodes.insert(key.1);
    }
    check(report.events == text.lines().count() as u64 && report.events_malformed == 0, "event counts")?;
    check(nodes.len() == 5, format!("events of every node: {nodes:?}"))?;
    check(text.contains("\"btc.block.mined\"") && text.contains("\"btc.tx.created\""), "btc events merged")?;
    check(out.join("emulation.json").exists(), "emulation.json written")?;
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
