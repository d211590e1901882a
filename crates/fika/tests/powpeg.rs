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

#[track_caller]
fn load(name: &str) -> (fika_scenario::Scenario, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("../../scenarios/tests/{name}.toml"));
    let text = std::fs::read_to_string(&path).expect("read");
    (fika_scenario::load_str(&text, name).expect("valid scenario"), text)
}

#[test]
fn the_federation_changes_mid_run_and_the_retiring_coins_migrate() {
    let (s, _) = load("powpeg-fedchange");
    let delay = s.powpeg.as_ref().expect("powpeg").params.federation_activation_delay_blocks;
    let p = run(&s, &RunOptions::default(), &mut |_| {}).expect("run").powpeg.expect("peg results");
    assert_eq!(p.federation_activations, 1, "the voted federation became active: {p:?}");
    // Active only after the activation delay (at the first Bridge call from
    // commit + delay on).
    let commit = p.federation_commit_block.expect("committed");
    let active = p.federation_active_block.expect("activated");
    assert!(active >= commit + delay && active <= commit + delay + 30, "commit {commit}, active {active}");
    // Every retiring coin migrated; the retiring federation is gone.
    assert!(p.migrations >= 1, "{p:?}");
    assert!(!p.retiring_federation_live && p.retiring_btc_final == 0.0, "{p:?}");
    assert_eq!(p.stranded_btc, 0.0);
    assert!(p.migration_fees_btc > 0.0);
    // Users kept paying the old address for a while: those peg-ins counted.
    assert!(p.pegins_to_retiring >= 1, "a peg-in to the old address during the window was credited: {p:?}");
    assert!(p.users_switched_federation >= 1);
    // Peg-outs went on through the change: every released transaction
    // (batches of either federation, migrations) spends federation coins
    // through a federation's script and pays what it must.
    assert!(p.pegouts_released >= 3 && p.pegout_txs[3] >= 3, "{p:?}");
    assert_eq!(p.pegout_txs_well_formed, p.pegout_txs[1], "{p:?}");
    assert!(p.conservation_ok && p.conservation_violations == 0, "{p:?}");
    assert!(p.pegnatory_fee_share_wei > 0, "the members got their share of the fees: {p:?}");
}

#[test]
fn a_reorganisation_deeper_than_pegout_finality_halts_the_pegnatories() {
    let (s, _) = load("powpeg-deep-reorg");
    let finality = s.powpeg.as_ref().expect("powpeg").params.pegout_confirmations;
    let p = run(&s, &RunOptions::default(), &mut |_| {}).expect("run").powpeg.expect("peg");
    assert!(p.deepest_side_reorg >= finality, "the withheld fork reverted more than finality: {p:?}");
    assert_eq!(p.pegnatories_halted, 3, "every pegnatory halted: {p:?}");
    assert_eq!(p.hsm_signatures_after_halt, 0, "nothing is signed once halted: {p:?}");
    assert!(p.pegouts_released >= 1, "peg-outs worked before the attack: {p:?}");
    assert!(p.conservation_ok, "{p:?}");
    // Without the attack, nobody halts.
    let (_, text) = load("powpeg-deep-reorg");
    let calm = text.replace("[powpeg.attack]\nnode = \"attacker\"\nstart = \"20m\"\npublish = \"35m\"\n", "");
    assert_ne!(calm, text);
    let calm = fika_scenario::load_str(&calm, "calm").expect("valid");
    let p = run(&calm, &RunOptions::default(), &mut |_| {}).expect("run").powpeg.expect("peg");
    assert!(p.deepest_side_reorg < finality && p.pegnatories_halted == 0, "{p:?}");
}

#[test]
fn a_private_fork_without_the_work_gets_no_powhsm_signature() {
    let (s, text) = load("powpeg-private-fork");
    let required = s.powpeg.as_ref().expect("powpeg").hsm_confirmations;
    let p = run(&s, &RunOptions::default(), &mut |_| {}).expect("run").powpeg.expect("peg");
    let [targets, fork_only, signed] = p.attack_targets;
    assert!(targets >= 1 && fork_only >= 1, "the attacker asked for a release only its fork holds: {p:?}");
    assert!(p.attack_fork_blocks < required + 10, "the fork stays short of the work: {p:?}");
    assert_eq!(signed, 0, "no signature for a release the required work did not confirm: {p:?}");
    assert_eq!(p.hsm_signed_off_chain, 0, "{p:?}");
    assert!(p.hsm_refusals > 0, "the device refused: {p:?}");
    assert!(p.hsm_min_work_signed.is_some_and(|w| w >= required), "{p:?}");
    assert!(p.pegouts_released >= 3, "two honest members of three still sign: {p:?}");
    assert!(p.conservation_ok, "{p:?}");
    // The guarantee is work, not honesty: with five times the hashrate the
    // attacker's fork accumulates the work and the device signs its release.
    let strong =
        fika_scenario::load_str(&text.replace("rate = 0.05", "rate = 0.25"), "strong").expect("valid");
    let p = run(&strong, &RunOptions::default(), &mut |_| {}).expect("run").powpeg.expect("peg");
    assert!(p.attack_targets[2] >= 1, "enough work commands the device: {p:?}");
    assert!(p.hsm_min_work_signed.is_some_and(|w| w >= required), "but never less: {p:?}");
}

#[test]
fn federation_changes_and_attacks_are_validated() {
    let (_, text) = load("powpeg-fedchange");
    let bad = text.replace("join = [\"peg4\"]", "join = [\"peg9\"]");
    let e = fika_scenario::load_str(&bad, "t").expect_err("unknown pegnatory");
    assert!(e.to_string().contains("powpeg.federation_change.join") && e.to_string().contains("peg9"), "{e}");
    let bad = text.replace("leave = [\"peg2\"]", "leave = [\"peg4\"]");
    let e = fika_scenario::load_str(&bad, "t").expect_err("join and leave");
    assert!(e.to_string().contains("both join and leave"), "{e}");
    let (_, text) = load("powpeg-private-fork");
    let bad = text.replace("node = \"peg3\"", "node = \"user1\"");
    let e = fika_scenario::load_str(&bad, "t").expect_err("a user cannot attack");
    assert!(e.to_string().contains("powpeg.attack.node"), "{e}");
    let bad = text.replace("rate = 0.05", "rate = -1.0");
    let e = fika_scenario::load_str(&bad, "t").expect_err("negative rate");
    assert!(e.to_string().contains("powpeg.attack.rate"), "{e}");
}
