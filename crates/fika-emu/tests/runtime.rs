//! The runtime over real loopback TCP: the Fika thesis's demo network (three
//! mining servers, two wallets; client1 pays client2 40 BTC with a fee of 1
//! at 30 s), each node on its own thread with its own runtime and store,
//! run at 25× real time.

use std::collections::BTreeMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use fika_core::NodeId;
use fika_emu::orchestrate::free_ports;
use fika_emu::process::BtcSummary;
use fika_emu::{Hooks, RunStats, RuntimeConfig, StartRule, build_btc_node_with_db, peers_of, run_node};

const SPEED: f64 = 25.0;
const DURATION: Duration = Duration::from_secs(150);

fn scenario_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/thesis-demo.toml")
}

/// Lines of an events file with this kind.
fn kinds(path: &Path, kind: &str) -> Vec<serde_json::Value> {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == kind)
        .collect()
}

#[test]
fn thesis_demo_over_loopback_mines_relays_and_pays() {
    let s = fika_scenario::load_file(&scenario_path()).expect("scenario");
    let layout = fika_scenario::layout(&s).expect("layout");
    let n = layout.names.len();
    let ports = free_ports(n).expect("ports");
    let addrs: Vec<SocketAddr> = ports.iter().map(|p| (Ipv4Addr::LOCALHOST, *p).into()).collect();
    let dir = std::env::temp_dir().join(format!("fika-emu-runtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let start = SystemTime::now() + Duration::from_millis(500);

    let threads: Vec<_> = (0..n)
        .map(|i| {
            let (s, layout, dir, addrs) = (s.clone(), layout.clone(), dir.clone(), addrs.clone());
            std::thread::spawn(move || -> Result<(RunStats, BtcSummary), String> {
                let id = NodeId(i as u32);
                let (mut node, db) = build_btc_node_with_db(&s, &layout, id).map_err(|e| e.to_string())?;
                let mut cfg = RuntimeConfig::new(id, layout.names[i].clone(), s.seed, addrs[i]);
                cfg.peers = peers_of(&layout, id).into_iter().map(|p| (p, addrs[p.index()])).collect();
                cfg.speed = SPEED;
                cfg.duration = Some(DURATION);
                cfg.start = StartRule::At(start);
                cfg.events = Some(dir.join(format!("{}.jsonl", layout.names[i])));
                let stats = run_node(&mut node, &cfg, Hooks::default()).map_err(|e| e.to_string())?;
                Ok((stats, BtcSummary::of(&node, &db)))
            })
        })
        .collect();
    let mut results = BTreeMap::new();
    for (i, t) in threads.into_iter().enumerate() {
        let r = t.join().expect("node thread").expect("node ran");
        results.insert(layout.names[i].clone(), r);
    }
    for (name, (stats, summary)) in &results {
        eprintln!("{name}: {summary:?}\n    {stats:?}");
        assert!(stats.started, "{name} started");
        assert!(stats.connected_after_ms.is_some(), "{name} reached its peers");
        assert!(stats.messages_received > 0, "{name} heard from its peers");
        assert_eq!(stats.refused, 0, "{name}: no handshake refused");
    }

    // Blocks were mined by all three servers' shares and relayed: every
    // server ends at (nearly) the same height, and a server received blocks
    // it did not mine through its only neighbour.
    let servers: Vec<&BtcSummary> =
        ["server1", "server2", "server3"].iter().map(|n| &results[*n].1).collect();
    let heights: Vec<u32> = servers.iter().map(|s| s.tip_height).collect();
    let (lo, hi) = (heights.iter().min().copied().unwrap_or(0), heights.iter().max().copied().unwrap_or(0));
    assert!(lo >= 4, "blocks were mined: {heights:?}");
    assert!(hi - lo <= 1, "servers agree on the chain up to the last moment: {heights:?}");
    let mined = |name: &str| kinds(&dir.join(format!("{name}.jsonl")), "btc.block.mined").len();
    let received = kinds(&dir.join("server2.jsonl"), "btc.block.received").len();
    assert!(received > mined("server2"), "server2 received relayed blocks ({received} received)");
    let refused: usize =
        layout.names.iter().map(|n| kinds(&dir.join(format!("{n}.jsonl")), "btc.block.refused").len()).sum();
    eprintln!("blocks refused for an unknown parent: {refused}");

    // The payment: client1 100 - 40 - 1 = 59 BTC, client2 100 + 40 = 140 BTC.
    let c1 = &results["client1"].1;
    let c2 = &results["client2"].1;
    assert_eq!(c1.payments, (1, 0));
    assert_eq!(c1.confirmed_sat, 59 * 100_000_000, "client1 {c1:?}");
    assert_eq!(c2.confirmed_sat, 140 * 100_000_000, "client2 {c2:?}");
    assert_eq!((c1.unconfirmed_sat, c1.locked_sat), (0, 0));
    assert!(c1.tip_height + 1 >= lo, "wallets follow the chain");

    // Events are JSON lines stamped with node time and the node id.
    let events = kinds(&dir.join("client1.jsonl"), "btc.tx.created");
    assert_eq!(events.len(), 1);
    let t = events[0]["t"].as_u64().unwrap_or(0);
    assert!((30_000_000_000..31_000_000_000).contains(&t), "created at 30 s of node time: {t}");
    assert_eq!(events[0]["node"], 3);
    let _ = std::fs::remove_dir_all(&dir);
}

/// A node that sends `sendcmpct` to every peer every 100 ms and counts
/// what it receives.
struct Pinger {
    got: u64,
}

impl fika_core::Node for Pinger {
    type Msg = fika_btc::msg::BtcMsg;
    fn on_start(&mut self, cx: &mut dyn fika_core::Context<Self::Msg>) {
        cx.set_timer(Duration::from_millis(100), 1);
    }
    fn on_message(&mut self, cx: &mut dyn fika_core::Context<Self::Msg>, from: NodeId, _msg: Self::Msg) {
        self.got += 1;
        cx.emit(fika_core::Event::new("test.got").with("from", from.0));
    }
    fn on_timer(&mut self, cx: &mut dyn fika_core::Context<Self::Msg>, _timer: fika_core::TimerId) {
        for i in 0..cx.peer_count() {
            cx.send(cx.peer(i), fika_btc::msg::BtcMsg::SendCmpct);
        }
        cx.set_timer(Duration::from_millis(100), 1);
    }
}

#[test]
fn strangers_and_garbage_are_refused_and_lost_peers_are_counted() {
    use fika_emu::wire::{Frame, Hello, encode_frame};
    use std::io::{Read as _, Write as _};

    let ports = free_ports(2).expect("ports");
    let a_addr: SocketAddr = (Ipv4Addr::LOCALHOST, ports[0]).into();
    let b_addr: SocketAddr = (Ipv4Addr::LOCALHOST, ports[1]).into();
    let dir = std::env::temp_dir().join(format!("fika-emu-refuse-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("temp dir");
    let start = SystemTime::now() + Duration::from_millis(300);
    let run = move |id: u32, listen: SocketAddr, peer: (u32, SocketAddr), secs: f64, events: PathBuf| {
        std::thread::spawn(move || {
            let mut cfg = RuntimeConfig::new(NodeId(id), format!("n{id}"), 1, listen);
            cfg.peers = vec![(NodeId(peer.0), peer.1)];
            cfg.duration = Some(Duration::from_secs_f64(secs));
            cfg.start = StartRule::At(start);
            cfg.events = Some(events);
            let mut node = Pinger { got: 0 };
            let stats = run_node(&mut node, &cfg, Hooks::default()).map_err(|e| e.to_string());
            (node.got, stats)
        })
    };
    let a_events = dir.join("a.jsonl");
    let a = run(0, a_addr, (1, b_addr), 2.0, a_events.clone());
    let b = run(1, b_addr, (0, a_addr), 1.0, dir.join("b.jsonl"));

    std::thread::sleep(Duration::from_millis(150));
    // Garbage: refused with a bad magic, answered with nothing.
    let mut c = std::net::TcpStream::connect(a_addr).expect("connect");
    c.write_all(b"GET / HTTP/1.1\r\n\r\n").expect("write");
    let mut sink = Vec::new();
    let _ = c.read_to_end(&mut sink);
    assert!(sink.is_empty(), "nothing is answered to garbage");
    // A stranger: answered with A's hello, then refused.
    let mut c = std::net::TcpStream::connect(a_addr).expect("connect");
    c.write_all(&encode_frame(&Frame::hello(Hello::bitcoin(NodeId(9), "stranger"))).expect("hello"))
        .expect("write");
    let mut got = Vec::new();
    let _ = c.read_to_end(&mut got);
    let (f, _) = fika_emu::wire::decode_frame(&got).expect("A's hello");
    assert_eq!(f.sender, NodeId(0));
    // A peer from the future: no common version.
    let mut c = std::net::TcpStream::connect(a_addr).expect("connect");
    let future = Hello { versions: [7, 9], ..Hello::bitcoin(NodeId(1), "n1") };
    c.write_all(&encode_frame(&Frame::hello(future)).expect("hello")).expect("write");
    let _ = c.read_to_end(&mut got);

    let (a_got, a_stats) = a.join().expect("a");
    let (b_got, b_stats) = b.join().expect("b");
    let (a_stats, b_stats) = (a_stats.expect("a ran"), b_stats.expect("b ran"));
    eprintln!("a: {a_got} {a_stats:?}\nb: {b_got} {b_stats:?}");
    assert_eq!(a_stats.refused, 3);
    assert!(a_got >= 5 && b_got >= 5, "the real peers talked: {a_got} {b_got}");
    assert_eq!(a_stats.messages_received, a_got);
    // B left after 1 s: A saw it go and dropped what it still sent to it.
    assert!(a_stats.disconnections >= 1);
    assert!(a_stats.dropped_down >= 5, "{a_stats:?}");
    let text = std::fs::read_to_string(&a_events).expect("events");
    let reasons: Vec<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["kind"] == "emu.peer.refused")
        .map(|v| v["reason"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(reasons.len(), 3, "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("bad magic")), "{reasons:?}");
    assert!(reasons.iter().any(|r| r.contains("node n9 (stranger) is not a peer")), "{reasons:?}");
    assert!(
        reasons.iter().any(|r| r.contains("no common wire version: we speak 1..=1, the peer speaks 7..=9"))
    );
    assert!(text.contains("\"emu.peer.down\"") && text.contains("\"emu.stop\""));
    let _ = std::fs::remove_dir_all(&dir);
}
