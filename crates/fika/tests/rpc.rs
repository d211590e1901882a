//! The thesis demo emulated as five processes at 25× real time, driven
//! from outside through JSON-RPC and `fika client` / `fika status`: client1
//! pays client2, the payment is mined, both balances change, and the
//! servers' RPC agree on the chain.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::Duration;

use fika_emu::orchestrate::NodesFile;
use fika_emu::rpc::client::{ClientError, RpcClient};
use serde_json::{Value, json};

fn fika(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fika")).args(args).output().expect("the fika binary runs")
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Kills the emulation if the test fails half-way.
struct Emulation(Child);

impl Drop for Emulation {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Emulation {
    /// Whether the orchestrator still runs (the nodes run as long as it does).
    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

/// Polls `f` until it returns `Some`, for as long as the emulation runs.
fn until<T>(emu: &mut Emulation, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(emu.running(), "the emulation ended before {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn btc(v: &Value) -> f64 {
    v.as_f64().unwrap_or(f64::NAN)
}

#[test]
fn clients_pay_and_read_the_chain_over_rpc() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let scenario = repo.join("scenarios/thesis-demo.toml");
    let out: PathBuf = std::env::temp_dir().join(format!("fika-rpc-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&out);
    let out_s = out.to_string_lossy().into_owned();
    let child = Command::new(env!("CARGO_BIN_EXE_fika"))
        .args(["emulate", &scenario.to_string_lossy(), "--speed", "25", "--duration", "200", "--out", &out_s])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("fika emulate starts");
    let mut emu = Emulation(child);

    // nodes.json appears once every node is ready.
    let nodes = until(&mut emu, "nodes.json was written", || NodesFile::load(&out).ok());
    assert_eq!(nodes.nodes.len(), 5);
    let cookie = out.join(&nodes.cookie);
    let rpc = |name: &str| -> RpcClient {
        let n = nodes.node(name).unwrap_or_else(|| panic!("{name} listed"));
        RpcClient::with_cookie(n.rpc.expect("an RPC address"), &cookie).expect("cookie readable")
    };
    let servers: Vec<RpcClient> = ["server1", "server2", "server3"].iter().map(|n| rpc(n)).collect();
    let (c1, c2) = (rpc("client1"), rpc("client2"));

    // Authentication is required.
    let n1 = nodes.node("client1").and_then(|n| n.rpc).expect("address");
    let wrong = RpcClient::new(n1, "__cookie__", "not-the-password");
    assert!(matches!(wrong.call("getblockcount", json!([])), Err(ClientError::Unauthorized { .. })));

    // Both wallets start with 100 BTC.
    for c in [&c1, &c2] {
        let b = c.call("getbalances", json!([])).expect("getbalances");
        assert_eq!(btc(&b["mine"]["trusted"]), 100.0, "{b}");
    }

    // client1 pays client2 10 BTC with a fee of 0.5 through `fika client`
    // (the scenario's own payment of 40 BTC with a fee of 1 comes at 30 s).
    let sent = fika(&["client", "client1", "--run", &out_s, "send", "client2", "10", "0.5"]);
    assert!(sent.status.success(), "{}", text(&sent));
    let txid = text(&sent).rsplit("txid ").next().unwrap_or_default().trim().to_owned();
    assert_eq!(txid.len(), 64, "{}", text(&sent));

    // Mined: every server finds it on its best chain with confirmations.
    let block = until(&mut emu, "the payment was mined", || {
        let mut hashes = Vec::new();
        for s in &servers {
            let t = s.call("getrawtransaction", json!([txid, true])).ok()?;
            if t["confirmations"].as_u64()? < 1 {
                return None;
            }
            hashes.push(t["blockhash"].as_str()?.to_owned());
        }
        hashes.dedup();
        (hashes.len() == 1).then(|| hashes.remove(0))
    });
    let header = servers[0].call("getblockheader", json!([block])).expect("header");
    assert!(header["height"].as_u64().is_some_and(|h| h >= 1), "{header}");
    let tx = servers[1].call("getrawtransaction", json!([txid, 1])).expect("tx");
    assert!(tx["vout"].as_array().is_some_and(|o| o.iter().any(|o| btc(&o["value"]) == 10.0)), "{tx}");
    let seen = until(&mut emu, "client2's wallet saw the payment confirmed", || {
        let t = c2.call("gettransaction", json!([txid])).ok()?;
        (t["confirmations"].as_u64()? >= 1).then_some(t)
    });
    assert_eq!((btc(&seen["amount"]), seen["blockhash"].as_str()), (10.0, Some(block.as_str())), "{seen}");

    // Both payments confirmed: 100 − 10 − 0.5 − 40 − 1 and 100 + 10 + 40.
    until(&mut emu, "both balances settled", || {
        let a = btc(&c1.call("getbalance", json!(["*", 1])).ok()?);
        let b = btc(&c2.call("getbalance", json!(["*", 1])).ok()?);
        (a == 48.5 && b == 150.0).then_some(())
    });
    let bal = fika(&["client", "client2", "--run", &out_s, "balance"]);
    assert!(bal.status.success() && text(&bal).contains("spendable 150.00000000 BTC"), "{}", text(&bal));

    // The servers agree on the chain: same height and tip.
    let (count, best) = until(&mut emu, "the servers agreed", || {
        let counts: Vec<u64> = servers
            .iter()
            .map(|s| s.call("getblockcount", json!([])).ok()?.as_u64())
            .collect::<Option<_>>()?;
        let bests: Vec<String> = servers
            .iter()
            .map(|s| Some(s.call("getbestblockhash", json!([])).ok()?.as_str()?.to_owned()))
            .collect::<Option<_>>()?;
        let same = counts.windows(2).all(|w| w[0] == w[1]) && bests.windows(2).all(|w| w[0] == w[1]);
        same.then(|| (counts[0], bests[0].clone()))
    });
    let at = servers[2].call("getblockhash", json!([count])).expect("hash at the tip height");
    assert_eq!(at.as_str(), Some(best.as_str()));
    let info = servers[0].call("getblockchaininfo", json!([])).expect("info");
    assert_eq!(info["chain"], "regtest");
    assert!(info["blocks"].as_u64().is_some_and(|b| b >= count));
    let peers = servers[0].call("getpeerinfo", json!([])).expect("peers");
    assert_eq!(peers.as_array().map(Vec::len), Some(3), "server1 has three peers: {peers}");
    assert!(peers[0]["bytesrecv"].as_u64().is_some_and(|b| b > 0), "{peers}");

    // `fika status` lists every node; `fika client` names a wrong node.
    let st = fika(&["status", "--run", &out_s]);
    assert!(st.status.success(), "{}", text(&st));
    for name in ["server1", "server2", "server3", "client1", "client2"] {
        assert!(
            text(&st).lines().any(|l| l.starts_with(name) && l.contains(" yes ")),
            "{name}: {}",
            text(&st)
        );
    }
    let bad = fika(&["client", "nobody", "--run", &out_s, "balance"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let bad = fika(&["client", "client1", "--run", &out_s, "send", "client2", "lots"]);
    assert_eq!(bad.status.code(), Some(2), "{}", text(&bad));
    let refused = fika(&["client", "server1", "--run", &out_s, "balance"]);
    assert_eq!(refused.status.code(), Some(1), "a full node has no wallet: {}", text(&refused));

    // The emulation ends by itself; then its nodes are unreachable.
    let status = emu.0.wait().expect("fika emulate ends");
    assert!(status.success(), "fika emulate failed");
    let gone = fika(&["client", "client1", "--run", &out_s, "balance"]);
    assert_eq!(gone.status.code(), Some(1), "{}", text(&gone));
    let _ = std::fs::remove_dir_all(&out);
}
