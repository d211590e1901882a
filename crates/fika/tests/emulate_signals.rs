//! `fika emulate` under Ctrl-C: the orchestrator stops its nodes, merges
//! their events, says it was interrupted and leaves no process behind.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[test]
fn sigint_stops_every_node_and_keeps_the_events() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    // Removed with everything in it at the end, also when the test fails.
    let dir = tempfile::Builder::new().prefix("fika-test-sigint-").tempdir().expect("temp dir");
    let out = dir.path().to_path_buf();
    let child = Command::new(env!("CARGO_BIN_EXE_fika"))
        .args(["emulate", "scenarios/thesis-demo.toml", "--speed", "5", "--duration", "3600", "--out"])
        .arg(&out)
        .current_dir(&repo)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fika emulate starts");
    // Wait until every node has started (each writes its events file).
    let started = Instant::now();
    let nodes = out.join("nodes");
    loop {
        let ready = ["server1", "server2", "server3", "client1", "client2"].iter().all(|n| {
            std::fs::read_to_string(nodes.join(format!("{n}.events.jsonl")))
                .is_ok_and(|t| t.contains("emu.start"))
        });
        if ready {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "the nodes never started");
        std::thread::sleep(Duration::from_millis(100));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().expect("kill runs");
    assert!(kill.success());
    let output = child.wait_with_output().expect("fika emulate ends");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(130), "exit code after Ctrl-C; stderr: {stderr}");
    assert!(stderr.contains("interrupted"), "{stderr}");

    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("emulation.json")).expect("emulation.json"))
            .expect("emulation.json parses");
    assert_eq!(report["interrupted"], true);
    let nodes = report["nodes"].as_array().expect("nodes");
    assert_eq!(nodes.len(), 5);
    for n in nodes {
        assert_eq!(n["exit"], "exit status: 0", "{n}");
        let pid = n["pid"].as_u64().expect("pid");
        let cmdline = std::fs::read_to_string(format!("/proc/{pid}/cmdline")).unwrap_or_default();
        assert!(!cmdline.contains("--config"), "node process {pid} still running");
    }
    let events = std::fs::read_to_string(out.join("events.jsonl")).expect("merged events");
    assert_eq!(events.matches("\"emu.stop\"").count(), 5, "every node's stop event merged");
}
