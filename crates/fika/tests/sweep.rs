//! `fika sweep`: the grid × seeds, sweep.csv's rows, bad parameters; and a
//! scenario with a selfish miner.

use std::path::PathBuf;
use std::process::{Command, Output};

use fika::sweep;

fn fika(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_fika")).args(args).output().expect("the fika binary runs")
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fika-sweep-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).expect("temp dir");
    d
}

const TINY: &str = r#"
name = "tiny"
seed = 3
duration = "30m"
protocol = "bitcoin"
[network]
preset = "wan"
[topology]
kind = "random"
degree = "dogecoin"
[[nodes]]
role = "miner"
count = 1
name = "attacker"
strategy = "selfish"
hashrate = 0.5
[[nodes]]
role = "miner"
count = 4
name = "m"
hashrate = 0.25
[[nodes]]
role = "full"
count = 5
name = "f"
[bitcoin]
preset = "regtest-fast"
"#;

#[test]
fn a_tiny_sweep_writes_one_row_per_point_and_metric() {
    let dir = tmp("tiny");
    let file = dir.join("tiny.toml");
    std::fs::write(&file, TINY).expect("write");
    let out = dir.join("out");
    let o = fika(&[
        "sweep",
        file.to_str().expect("utf-8"),
        "--param",
        "bitcoin.params.block_interval_secs=10,30",
        "--param",
        "nodes[0].extra_links=0,3",
        "--seeds",
        "2",
        "--jobs",
        "2",
        "--out",
        out.to_str().expect("utf-8"),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let csv = std::fs::read_to_string(out.join("sweep.csv")).expect("sweep.csv");
    let mut lines = csv.lines();
    assert_eq!(
        lines.next(),
        Some("bitcoin.params.block_interval_secs,nodes[0].extra_links,metric,n,mean,sd,ci_low,ci_high")
    );
    let rows: Vec<Vec<&str>> = lines.map(|l| l.split(',').collect()).collect();
    let stale: Vec<&Vec<&str>> = rows.iter().filter(|r| r[2] == "stale_rate").collect();
    let points: Vec<(&str, &str)> = stale.iter().map(|r| (r[0], r[1])).collect();
    assert_eq!(points, vec![("10", "0"), ("10", "3"), ("30", "0"), ("30", "3")]);
    for r in &stale {
        assert_eq!(r[3], "2", "two seeds per point: {r:?}");
        let (mean, lo, hi): (f64, f64, f64) =
            (r[4].parse().expect("mean"), r[6].parse().expect("lo"), r[7].parse().expect("hi"));
        assert!(lo <= mean && mean <= hi);
    }
    // The selfish miner's revenue is a metric, at every point.
    assert_eq!(rows.iter().filter(|r| r[2] == "selfish_revenue_share").count(), 4);
    assert_eq!(rows.iter().filter(|r| r[2] == "selfish_hashrate_share").count(), 4);
    // Every metric has a row at every point.
    assert_eq!(rows.len() % 4, 0);
    let html = std::fs::read_to_string(out.join("report.html")).expect("report.html");
    assert!(html.contains("<title>blocks_mined</title>"), "a plot per metric");
    assert!(html.contains("<title>stale_rate — nodes[0].extra_links=3</title>"), "beside its estimate");
    assert!(html.contains("selfish_revenue_share — nodes[0].extra_links=0"), "beside its closed forms");
    let runs = std::fs::read_to_string(out.join("runs.csv")).expect("runs.csv");
    assert_eq!(runs.lines().filter(|l| l.contains(",stale_rate,")).count(), 8);
    // The blocks came faster with the shorter interval.
    let mined = |p: &str| -> f64 {
        rows.iter()
            .find(|r| r[0] == p && r[1] == "0" && r[2] == "blocks_mined")
            .map(|r| r[4].parse().expect("number"))
            .expect("row")
    };
    assert!(mined("10") > mined("30"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_params_exit_2_naming_the_path() {
    let dir = tmp("bad");
    let file = dir.join("tiny.toml");
    std::fs::write(&file, TINY).expect("write");
    let f = file.to_str().expect("utf-8");
    for (param, needle) in [
        ("bitcoin.nope.x=1", "bitcoin.nope.x"),
        ("bitcoin.params.no_such_field=1", "no_such_field"),
        ("nodes[9].hashrate=1", "nodes[9].hashrate"),
        ("nodes[0].hashrate=fast", "hashrate"),
        ("nodes[0].hashrate", "nodes[0].hashrate"),
    ] {
        let o = fika(&["sweep", f, "--param", param, "--seeds", "1", "--out", dir.to_str().expect("utf-8")]);
        assert_eq!(o.status.code(), Some(2), "{param}");
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(err.contains(needle), "{param}: {err}");
    }
    assert!(!dir.join("sweep.csv").exists(), "nothing ran");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn apply_sets_a_path_and_keeps_the_rest() {
    let s = fika_scenario::load_str(TINY, "tiny").expect("valid");
    let t = sweep::apply(&s, &[("nodes[1].hashrate", "0.5"), ("duration", "1h")]).expect("applies");
    assert_eq!(t.duration, std::time::Duration::from_secs(3600));
    assert_eq!(t.nodes[1].hashrate, Some(fika_scenario::Hashrate::Fixed(0.5)));
    assert_eq!(t.nodes[0], s.nodes[0]);
    assert_eq!(
        fika_scenario::to_toml(&sweep::apply(&s, &[]).expect("round trip")),
        fika_scenario::to_toml(&s)
    );
}

#[test]
fn only_miners_mine_selfishly() {
    let bad = TINY.replace("count = 5\nname = \"f\"", "count = 5\nname = \"f\"\nstrategy = \"selfish\"");
    let e = fika_scenario::load_str(&bad, "bad").expect_err("refused").to_string();
    assert!(e.contains("nodes[2].strategy"), "{e}");
    let bad = TINY.replace("strategy = \"selfish\"", "strategy = \"sneaky\"");
    let e = fika_scenario::load_str(&bad, "bad").expect_err("refused").to_string();
    assert!(e.contains("unknown strategy"), "{e}");
}

#[test]
fn a_selfish_miner_is_reported() {
    let s = fika_scenario::load_str(TINY, "tiny").expect("valid");
    let s =
        sweep::apply(&s, &[("duration", "6h"), ("bitcoin.params.block_interval_secs", "60")]).expect("ok");
    let r = fika::run(&s, &fika::RunOptions::default(), &mut |_| {}).expect("runs");
    let b = r.bitcoin.expect("bitcoin");
    let alpha = b.selfish_hashrate_share.expect("a selfish miner");
    assert!((alpha - 1.0 / 3.0).abs() < 1e-9);
    let rev = b.selfish_revenue_share.expect("its revenue");
    assert!(rev > 0.0 && rev < 1.0, "{rev}");
    assert!(b.miners.iter().filter(|m| m.selfish).count() == 1);
    assert!(b.conservation_ok);
}
