//! The `fika` command line and whole runs: determinism, outputs, exit codes
//! and error messages.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fika::{RunOptions, run};

fn fika(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fika")).args(args).output().expect("the fika binary runs")
}

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// A fresh directory, removed with everything in it when dropped (also
/// when the test fails).
fn tmp(name: &str) -> tempfile::TempDir {
    tempfile::Builder::new().prefix(&format!("fika-test-{name}-")).tempdir().expect("temp dir")
}

const SMALL: &str = r#"
name = "small"
seed = 7
duration = "10m"
protocol = "gossip"

[network]
preset = "simblock-2019"

[topology]
kind = "random"
degree = "bitcoin-2015"

[[nodes]]
count = 300
name = "n"

[gossip]
floods = 5
size_bytes = 200000
interval = "1m"

[[faults]]
at = "90s"
kind = "crash"
random = 3
restart_after = "2m"
"#;

#[track_caller]
fn digest(text: &str, seed: Option<u64>) -> String {
    let s = fika_scenario::load_str(text, "inline").expect("valid scenario");
    run(&s, &RunOptions { seed, out: None }, &mut |_| {}).expect("run").digest
}

#[test]
fn one_seed_one_digest_another_seed_another() {
    let a = digest(SMALL, None);
    let b = digest(SMALL, None);
    let c = digest(SMALL, Some(8));
    assert_eq!(a, b, "same scenario, same seed");
    assert_ne!(a, c, "another seed");
    assert_eq!(a.len(), 64);
}

#[test]
fn one_seed_one_digest_with_delays_drawn_ahead_too() {
    // Large enough that the latency thread draws the delays, and the events
    // are recorded on their own thread: neither may change the trace.
    let large = SMALL.replace("count = 300", &format!("count = {}", fika_sim::net::DRAW_AHEAD_NODES + 76));
    let a = digest(&large, None);
    assert_eq!(a, digest(&large, None), "same scenario, same seed");
    assert_ne!(a, digest(&large, Some(8)), "another seed");
}

#[test]
fn every_flood_reaches_every_node_without_faults() {
    let text = SMALL.split("[[faults]]").next().unwrap_or(SMALL);
    let s = fika_scenario::load_str(text, "inline").expect("valid");
    let r = run(&s, &RunOptions::default(), &mut |_| {}).expect("run");
    let p = r.propagation.expect("gossip tracks propagation");
    assert_eq!(p.items, 5);
    assert_eq!(p.not_reached, [0, 0, 0, 0]);
    // Every node gets each item exactly once: one `deliver` per node and item (minus origins).
    let deliver = r.stats.by_kind.iter().find(|k| k.kind == "deliver").map_or(0, |k| k.count);
    assert_eq!(deliver, 5 * 299);
    let t50 = p.median_s[0].expect("reached 50 %");
    assert!(t50 > 0.1 && t50 < 30.0, "plausible propagation time, got {t50}");
}

#[test]
fn run_writes_outputs_and_the_resolved_scenario_reproduces_the_run() {
    let dir = tmp("outputs");
    let file = dir.path().join("small.toml");
    std::fs::write(&file, SMALL).expect("write scenario");
    let out = dir.path().join("run");
    let o = fika(&[
        "run",
        file.to_str().unwrap_or_default(),
        "--quiet",
        "--out",
        out.to_str().unwrap_or_default(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    let first = stdout.trim().strip_prefix("digest ").expect("quiet prints the digest").to_owned();
    for f in ["scenario.resolved.toml", "events.jsonl", "metrics.json", "propagation.csv"] {
        assert!(out.join(f).is_file(), "{f} written");
    }
    let events = std::fs::read_to_string(out.join("events.jsonl")).expect("events");
    let lines: Vec<&str> = events.lines().collect();
    assert!(lines.iter().any(|l| l.contains("\"kind\":\"sim.crash\"")));
    for l in &lines {
        let v: serde_json::Value = serde_json::from_str(l).expect("each line is JSON");
        assert!(v["t"].is_u64() && v["kind"].is_string());
    }
    let metrics: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("metrics.json")).expect("metrics"))
            .expect("json");
    assert_eq!(metrics["digest"].as_str(), Some(first.as_str()));
    assert_eq!(metrics["nodes"].as_u64(), Some(300));

    // The resolved scenario has every default filled in and runs to the same digest.
    let resolved = out.join("scenario.resolved.toml");
    let text = std::fs::read_to_string(&resolved).expect("resolved");
    assert!(text.contains("request_timeout") && text.contains("[network.regions]"));
    let o2 = fika(&[
        "run",
        resolved.to_str().unwrap_or_default(),
        "--quiet",
        "--out",
        dir.path().join("again").to_str().unwrap_or_default(),
    ]);
    assert!(o2.status.success(), "{}", String::from_utf8_lossy(&o2.stderr));
    assert_eq!(String::from_utf8_lossy(&o2.stdout).trim(), format!("digest {first}"));
}

#[test]
fn a_wrong_field_exits_2_naming_every_bad_field() {
    let dir = tmp("invalid");
    let file = dir.path().join("bad.toml");
    let bad = SMALL
        .replace("size_bytes = 200000", "size_bytes = \"big\"")
        .replace("kind = \"random\"\n", "kind = \"random\"\nspeed = 3\n")
        .replace("restart_after = \"2m\"", "restart_after = \"whenever\"");
    std::fs::write(&file, bad).expect("write");
    for cmd in ["validate", "run"] {
        let o = fika(&[cmd, file.to_str().unwrap_or_default()]);
        assert_eq!(o.status.code(), Some(2), "{cmd} exits 2");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains("gossip.size_bytes"), "{cmd}: names the field: {err}");
        assert!(err.contains("speed"), "{cmd}: reports the unknown field too: {err}");
        assert!(err.contains("faults[0].restart_after"), "{cmd}: and the bad duration: {err}");
    }
}

#[test]
fn validate_accepts_the_bundled_scenarios() {
    for f in ["scenarios/quickstart.toml", "scenarios/bench/flood-10k.toml"] {
        let o = fika(&["validate", repo().join(f).to_str().unwrap_or_default()]);
        assert!(o.status.success(), "{f}: {}", String::from_utf8_lossy(&o.stderr));
    }
}

#[test]
fn bad_command_lines_and_files_exit_2() {
    assert_eq!(fika(&["run"]).status.code(), Some(2));
    assert_eq!(fika(&["run", "x.toml", "--seed", "minus-one"]).status.code(), Some(2));
    assert_eq!(fika(&["frobnicate"]).status.code(), Some(2));
    let o = fika(&["validate", "does/not/exist.toml"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("does/not/exist.toml"));
    let dir = tmp("syntax");
    let f = dir.path().join("broken.toml");
    std::fs::write(&f, "name = \"x\"\n[network\n").expect("write");
    let o = fika(&["validate", f.to_str().unwrap_or_default()]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("not valid TOML"));
}

#[test]
fn explicit_topology_by_name_and_unknown_names_are_reported() {
    let ok = r#"
duration = "5m"
protocol = "gossip"
[topology]
kind = "explicit"
links = [["server1", "server2"], ["server1", "server3"], ["client1", "server1"], ["client2", "server3"]]
[[nodes]]
count = 3
name = "server"
[[nodes]]
count = 2
name = "client"
[gossip]
floods = 2
size_bytes = 1000
"#;
    let s = fika_scenario::load_str(ok, "demo").expect("valid");
    let r = run(&s, &RunOptions::default(), &mut |_| {}).expect("run");
    assert_eq!((r.nodes, r.links), (5, 4));
    assert_eq!(r.propagation.map(|p| p.not_reached), Some([0; 4]));

    let bad = ok.replace("[\"client2\", \"server3\"]", "[\"client9\", \"server3\"]");
    let e = fika_scenario::load_str(&bad, "demo").expect_err("unknown node");
    let msg = e.to_string();
    assert!(msg.contains("topology.links[3]") && msg.contains("client9"), "{msg}");
}
