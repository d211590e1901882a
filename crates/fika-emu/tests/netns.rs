//! `emulate --netns`: every node in its own network namespace, every link
//! a veth pair shaped by netem. Needs root; without it the test prints a
//! notice and passes without running. On a kernel without netem it runs
//! the namespaces with plain cables and prints that the delay check was
//! skipped.

mod support;

use std::collections::BTreeMap;
use std::path::Path;
use std::process::{Command, ExitCode};
use std::time::Duration;

use fika_emu::orchestrate::summaries;
use fika_emu::{EmulateOptions, emulate, netns};
use support::check;

fn main() -> ExitCode {
    support::main_with(&[("netns_cables_carry_the_links_delay", netns_cables_carry_the_links_delay)])
}

fn namespaces() -> Vec<String> {
    let out = Command::new("ip").args(["netns", "list"]).output();
    let text = out.map(|o| String::from_utf8_lossy(&o.stdout).into_owned()).unwrap_or_default();
    text.lines().filter_map(|l| l.split_whitespace().next()).map(str::to_string).collect()
}

fn root_links() -> usize {
    let out = Command::new("ip").args(["-o", "link"]).output();
    out.map(|o| String::from_utf8_lossy(&o.stdout).lines().count()).unwrap_or(0)
}

/// Node-time nanoseconds from a block's mining to its receipt by each
/// other node.
fn hop_delays(events: &str) -> Result<Vec<u64>, String> {
    let mut mined: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut received = Vec::new();
    for line in events.lines() {
        let v: serde_json::Value = serde_json::from_str(line).map_err(|e| format!("{e}: {line}"))?;
        let (Some(kind), Some(t), Some(node), Some(hash)) =
            (v["kind"].as_str(), v["t"].as_u64(), v["node"].as_u64(), v["hash"].as_str())
        else {
            continue;
        };
        match kind {
            "btc.block.mined" => {
                mined.insert(hash.to_string(), (t, node));
            }
            "btc.block.received" => received.push((hash.to_string(), t, node)),
            _ => {}
        }
    }
    Ok(received
        .iter()
        .filter_map(|(h, t, node)| match mined.get(h) {
            Some((m, miner)) if miner != node => Some(t.saturating_sub(*m)),
            _ => None,
        })
        .collect())
}

fn netns_cables_carry_the_links_delay() -> Result<(), String> {
    if let Err(e) = netns::check_privileges() {
        println!("notice: skipping the --netns test: {e}");
        return Ok(());
    }
    let shaped = netns::netem_available();
    if !shaped {
        println!(
            "notice: this kernel has no netem: running --netns with plain cables; the delay check is skipped"
        );
    }
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/tests/netns-delay.toml");
    let out = std::env::temp_dir().join(format!("fika-emu-netns-{}", std::process::id()));
    let links_before = root_links();
    let speed = 10.0;
    let mut opts = EmulateOptions::new(exe);
    opts.speed = speed;
    opts.duration = Some(Duration::from_secs(100));
    opts.startup_timeout = Duration::from_secs(20);
    opts.netns = true;
    opts.netem = shaped;
    let report = emulate(&scenario, &out, &opts).map_err(|e| e.to_string())?;
    check(report.netns && report.netem == shaped, format!("ran in namespaces: {report:?}"))?;

    // Nothing left behind: no namespace of this process, no interface.
    let mine = format!("fika{}n", std::process::id());
    let left: Vec<String> = namespaces().into_iter().filter(|n| n.starts_with(&mine)).collect();
    check(left.is_empty(), format!("namespaces left behind: {left:?}"))?;
    check(root_links() == links_before, "interfaces left behind in the root namespace")?;

    // The nodes reached each other only over their cables, and the demo ran.
    for n in &report.nodes {
        check(n.connected_ms.is_some(), format!("{} connected over its cables", n.name))?;
        check(n.exit.contains("exit status: 0"), format!("{} exited cleanly: {}", n.name, n.exit))?;
    }
    let s = summaries(&report);
    check(s["client1"].confirmed_sat == 59 * 100_000_000, format!("client1: {:?}", s["client1"]))?;
    check(s["client2"].confirmed_sat == 140 * 100_000_000, format!("client2: {:?}", s["client2"]))?;

    let text = std::fs::read_to_string(&report.events_path).map_err(|e| e.to_string())?;
    let delays = hop_delays(&text)?;
    check(!delays.is_empty(), "blocks were received")?;
    let fastest_wall_ms = delays.iter().min().copied().unwrap_or(0) as f64 / 1e6 / speed;
    println!("fastest block hop: {fastest_wall_ms:.1} ms of wall time ({} receipts)", delays.len());
    if shaped {
        // Every hop crosses at least one cable holding frames 150 ms.
        check(fastest_wall_ms >= 140.0, format!("fastest hop {fastest_wall_ms:.1} ms < the cable's 150 ms"))?;
    }
    let _ = std::fs::remove_dir_all(&out);
    Ok(())
}
