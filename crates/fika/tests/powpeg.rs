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

#[test]
fn the_whole_cycle_pegs_out_through_the_hsms_and_bitcoin() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/tests/powpeg-cycle.toml");
    let s = fika_scenario::load_file(&path).expect("valid scenario");
    let r = run(&s, &RunOptions::default(), &mut |_| {}).expect("run");
    let p = r.powpeg.expect("peg results");
    assert!(p.pegins_credited >= 5, "peg-ins first: {p:?}");
    assert!(p.pegouts_sent >= 5 && p.pegouts_requested >= 5, "users pegged out: {p:?}");
    assert!(p.pegouts_requested <= p.pegouts_sent);
    assert!(p.pegouts_released >= 3, "peg-outs released: {p:?}");
    assert!(p.pegouts_confirmed >= 3, "peg-outs in Bitcoin blocks: {p:?}");
    let [created, released, on_bitcoin, registered] = p.pegout_txs;
    assert!(released >= 2 && released <= created, "{p:?}");
    assert!(on_bitcoin >= 2 && on_bitcoin <= released, "{p:?}");
    assert!(registered >= 1 && registered <= on_bitcoin, "released peg-outs registered back: {p:?}");
    // Every released transaction spends federation coins through the
    // federation's script and pays each request of its batch to the
    // requester's P2PKH.
    assert_eq!(p.pegout_txs_well_formed, released, "{p:?}");
    // Every signature in them came out of a PowHSM.
    let [sigs, from_hsm] = p.release_signatures;
    assert!(sigs >= 2 * released, "M = 2 of 3 signatures per input: {p:?}");
    assert_eq!(from_hsm, sigs, "{p:?}");
    // Request → release: at least the 10-block confirmation wait (5 s blocks).
    let release = p.pegout_release_latency_s[0].expect("release latency");
    let confirm = p.pegout_confirm_latency_s[0].expect("confirmation latency");
    assert!(release > 50.0 && confirm > release && confirm < 3600.0, "{p:?}");
    assert!(p.pegout_fees_btc > 0.0);
    assert!(p.conservation_ok && p.conservation_violations == 0, "{p:?}");
    let again = run(&s, &RunOptions::default(), &mut |_| {}).expect("run");
    assert_eq!(r.digest, again.digest, "deterministic");
}

#[test]
fn pegout_workload_is_validated() {
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/tests/powpeg-cycle.toml"),
    )
    .expect("read");
    let bad = text.replace("amount_fraction = [0.3, 0.6]", "amount_fraction = [0.6, 0.3]");
    let e = fika_scenario::load_str(&bad, "t").expect_err("bad fraction");
    assert!(e.to_string().contains("powpeg.pegout.amount_fraction"), "{e}");
    let bad = text.replace("hsm_interval = \"1m\"", "hsm_interval = \"0s\"");
    let e = fika_scenario::load_str(&bad, "t").expect_err("bad interval");
    assert!(e.to_string().contains("hsm_interval"), "{e}");
}

/// The cycle network with `censors` of its 3 pegnatories (M = 2) refusing to sign.
#[track_caller]
fn with_censors(censors: u32) -> fika_scenario::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/tests/powpeg-cycle.toml");
    let text = std::fs::read_to_string(path).expect("read");
    let honest = 3 - censors;
    let groups = format!(
        "[[nodes]]\nrole = \"pegnatory\"\ncount = {honest}\nname = \"peg\"\n[[nodes]]\nrole = \"pegnatory\"\ncount = {censors}\nname = \"censor\"\ncensor = true\n"
    );
    let text = text.replace("[[nodes]]\nrole = \"pegnatory\"\ncount = 3\nname = \"peg\"\n", &groups);
    assert!(text.contains("censor = true"), "the scenario's pegnatory group was found");
    fika_scenario::load_str(&text, "censors").expect("valid")
}

#[test]
fn one_censoring_pegnatory_is_outvoted_but_n_minus_m_plus_one_halt_every_pegout() {
    let one = run(&with_censors(1), &RunOptions::default(), &mut |_| {}).expect("run").powpeg.expect("peg");
    assert!(one.pegouts_released >= 3, "M = 2 honest members still sign: {one:?}");
    assert!(one.conservation_ok);
    let two = run(&with_censors(2), &RunOptions::default(), &mut |_| {}).expect("run").powpeg.expect("peg");
    assert!(two.pegouts_requested >= 3, "requests were made: {two:?}");
    assert_eq!(two.pegouts_released, 0, "N − M + 1 = 2 censors halt every peg-out: {two:?}");
    assert_eq!(two.pegout_txs[1], 0);
    assert!(two.conservation_ok, "halting loses nothing: {two:?}");
}
