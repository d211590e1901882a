//! A PowPeg network end to end: users pay the federation on Bitcoin,
//! pegnatories feed the Bridge headers and register the peg-ins, the Bridge
//! credits RBTC, and value is conserved at every sidechain block.

use std::path::Path;

use fika::{RunOptions, run};

#[track_caller]
fn scenario() -> fika_scenario::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/tests/powpeg-small.toml");
    fika_scenario::load_file(&path).expect("valid scenario")
}

#[test]
fn pegins_are_credited_after_their_confirmations_and_value_is_conserved() {
    let s = scenario();
    let r = run(&s, &RunOptions::default(), &mut |_| {}).expect("run");
    let p = r.powpeg.expect("peg results");
    assert!(p.pegins_sent >= 10, "users paid the federation: {p:?}");
    assert!(p.pegins_credited >= 5, "the Bridge credited peg-ins: {p:?}");
    assert!(p.pegins_credited <= p.pegins_sent);
    // 6 confirmations of 10 s blocks at least, plus a turn: never faster than a minute.
    let median = p.pegin_latency_s[0].expect("latency");
    assert!(median > 60.0 && median < 1800.0, "median latency {median} s");
    assert!(p.conservation_ok && p.conservation_violations == 0);
    assert!((p.federation_btc - p.rbtc_credited).abs() < 1e-9, "RBTC credited = BTC registered: {p:?}");
    assert!(p.federation_btc > 0.0);
    assert!(p.side_height > 300, "sidechain blocks every ~5 s");
    let again = run(&s, &RunOptions::default(), &mut |_| {}).expect("run");
    assert_eq!(r.digest, again.digest, "deterministic");
}

#[test]
fn powpeg_scenarios_need_a_federation_and_pools() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/tests/powpeg-small.toml"),
    )
    .expect("read");
    let no_fed = text
        .replace("role = \"pegnatory\"", "role = \"side\"")
        .replace("name = \"peg\"", "name = \"peg-side\"");
    let e = fika_scenario::load_str(&no_fed, "t").expect_err("no federation");
    assert!(e.to_string().contains("pegnatory"), "{e}");
    let bad = text.replace("preset = \"rootstock-regtest\"", "preset = \"rootstock-moon\"");
    let e = fika_scenario::load_str(&bad, "t").expect_err("bad preset");
    assert!(e.to_string().contains("powpeg.preset"), "{e}");
}
