//! Bitcoin scenarios end to end: the thesis demo's balances, determinism,
//! a workload with confirmations, and scenario errors.

use std::path::{Path, PathBuf};
use std::process::Command;

use fika::{RunOptions, run};

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

#[track_caller]
fn load(rel: &str) -> fika_scenario::Scenario {
    fika_scenario::load_file(&repo().join(rel)).expect("bundled scenario is valid")
}

#[test]
fn thesis_demo_pays_40_with_fee_1_and_reports_both_balances() {
    let s = load("scenarios/thesis-demo.toml");
    let r = run(&s, &RunOptions::default(), &mut |_| {}).expect("run");
    let b = r.bitcoin.expect("bitcoin results");
    let bal =
        |name: &str| b.wallets.iter().find(|w| w.name == name).map(|w| (w.confirmed_btc, w.unconfirmed_btc));
    assert_eq!(bal("client1"), Some((59.0, 0.0)), "100 − 40 − 1");
    assert_eq!(bal("client2"), Some((140.0, 0.0)), "100 + 40");
    assert_eq!((b.txs_created, b.txs_confirmed), (1, 1));
    assert!(b.conservation_ok);
    assert!(b.best_height > 10);
    let again = run(&s, &RunOptions::default(), &mut |_| {}).expect("run");
    assert_eq!(r.digest, again.digest);
}

#[test]
fn a_random_workload_confirms_payments_and_keeps_value() {
    let text = r#"
duration = "20m"
protocol = "bitcoin"
seed = 5
[network]
preset = "wan"
[topology]
kind = "random"
degree = "dogecoin"
[[nodes]]
role = "miner"
count = 12
name = "m"
[[nodes]]
role = "full"
count = 8
name = "f"
[[nodes]]
role = "wallet"
count = 10
name = "w"
balance = 10.0
servers = 2
[bitcoin]
preset = "regtest-fast"
[bitcoin.relay]
mempool_sample_s = 30
[bitcoin.workload]
interval = "1m"
start = "30s"
"#;
    let s = fika_scenario::load_str(text, "inline").expect("valid");
    let dir = std::env::temp_dir().join(format!("fika-btc-{}", std::process::id()));
    let r = run(&s, &RunOptions { seed: None, out: Some(dir.clone()) }, &mut |_| {}).expect("run");
    let b = r.bitcoin.expect("bitcoin");
    assert!(b.txs_created > 50, "wallets paid: {}", b.txs_created);
    assert!(b.txs_confirmed as f64 > 0.8 * b.txs_created as f64, "most confirm: {b:?}");
    assert!(b.conservation_ok);
    let total: f64 = b.wallets.iter().map(|w| w.confirmed_btc + w.unconfirmed_btc).sum();
    assert!(total < 100.0 && total > 99.0, "wallets hold the premine minus fees: {total}");
    assert!(b.confirmation_1_s[0].is_some_and(|t| t > 0.0 && t < 300.0));
    assert!(b.mempool_txs_max > 0);
    for f in
        ["blocks.csv", "confirmations.csv", "miners.csv", "wallets.csv", "mempool.csv", "propagation.csv"]
    {
        assert!(dir.join(f).is_file(), "{f}");
    }
    let _ = std::fs::remove_dir_all(dir);
}

#[test]
fn bitcoin_scenario_errors_name_their_fields() {
    let text = std::fs::read_to_string(repo().join("scenarios/thesis-demo.toml")).expect("read");
    let bad = text
        .replace("to = \"client2\"", "to = \"server2\"")
        .replace("preset = \"regtest-fast\"", "preset = \"regtest-fast\"\nchain = \"moon\"");
    let e = fika_scenario::load_str(&bad, "demo").expect_err("invalid");
    let msg = e.to_string();
    assert!(msg.contains("bitcoin.payments[0].to") && msg.contains("not a wallet"), "{msg}");
    assert!(msg.contains("bitcoin.chain") && msg.contains("moon"), "{msg}");
    let no_miner = text.replace("hashrate = 1.0", "hashrate = 0.0");
    let e = fika_scenario::load_str(&no_miner, "demo").expect_err("no miner");
    assert!(e.to_string().contains("no node can mine"), "{e}");
}

#[test]
fn bundled_bitcoin_scenarios_validate() {
    for f in [
        "scenarios/thesis-demo.toml",
        "scenarios/bitcoin-mainnet-1k.toml",
        "scenarios/bench/simblock-2019-10k.toml",
        "scenarios/bench/simblock-2019-100k.toml",
        "experiments/selfish-mining.toml",
        "experiments/double-spend.toml",
        "experiments/block-interval.toml",
        "experiments/block-size.toml",
        "experiments/censorship.toml",
    ] {
        let o = Command::new(env!("CARGO_BIN_EXE_fika"))
            .args(["validate", repo().join(f).to_str().unwrap_or_default()])
            .output()
            .expect("runs");
        assert!(o.status.success(), "{f}: {}", String::from_utf8_lossy(&o.stderr));
    }
}
