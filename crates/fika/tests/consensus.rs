//! Consensus variants end to end: a proof-of-stake chain where leaders
//! follow their stake, and scenario errors for the variant's fields.

use std::path::Path;

use fika::{RunOptions, run};

fn load(rel: &str) -> fika_scenario::Scenario {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..").join(rel);
    fika_scenario::load_file(&path).expect("bundled scenario is valid")
}

#[test]
fn proof_of_stake_slots_fill_in_proportion_to_stake() {
    let s = load("scenarios/tests/pos.toml");
    let r = run(&s, &RunOptions::default(), &mut |_| {}).expect("run");
    let b = r.bitcoin.expect("bitcoin results");
    // 2 h of 10 s slots: 720. Wide-area latency makes some leaders miss
    // the newest parent; those slots fork, and the longer branch wins.
    let slots = 720.0;
    assert!(f64::from(b.best_height) > 0.85 * slots, "height {} of {slots} slots", b.best_height);
    assert!(f64::from(b.best_height) <= slots, "at most one block per slot: {}", b.best_height);
    assert!(b.conservation_ok);
    let stakes = [("v1", 1.0), ("v2", 2.0), ("v3", 3.0), ("v4", 4.0), ("v10", 10.0)];
    for (name, stake) in stakes {
        let m = b.miners.iter().find(|m| m.name == name).expect("validator listed");
        let share = stake / 20.0;
        assert!((m.hashrate_share - share).abs() < 1e-9, "{name}: stake share {}", m.hashrate_share);
        assert!(
            (m.revenue_share - share).abs() < 0.06,
            "{name}: {} of the blocks for {share} of the stake",
            m.revenue_share
        );
    }
    assert!(
        b.miners.iter().filter(|m| m.name.starts_with("relay")).all(|m| m.mined == 0),
        "no stake, no block"
    );
    let bal = |name: &str| b.wallets.iter().find(|w| w.name == name).map(|w| w.confirmed_btc);
    assert_eq!(bal("w2"), Some(70.0));
    assert_eq!(bal("w1"), Some(29.999));
    let again = run(&s, &RunOptions::default(), &mut |_| {}).expect("run");
    assert_eq!(r.digest, again.digest, "same seed, same run");
}

#[test]
fn consensus_fields_are_checked_with_their_paths() {
    let base =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/tests/pos.toml"))
            .expect("scenario");
    let err = |text: &str| fika_scenario::load_str(text, "pos.toml").expect_err("invalid").to_string();
    let e = err(&base.replace("kind = \"pos\"", "kind = \"pox\""));
    assert!(e.contains("bitcoin.consensus.kind") && e.contains("pox"), "{e}");
    let e = err(&base.replace("slot_secs = 10", "slot_secs = 0"));
    assert!(e.contains("bitcoin.consensus.slot_secs"), "{e}");
    let e = err(&base.replace("consensus = { kind = \"pos\", slot_secs = 10 }", ""));
    assert!(e.contains("nodes[0].stake") && e.contains("pos"), "{e}");
    let e = err(&base.replace("stake = 10.0", "hashrate = 10.0"));
    assert!(e.contains("nodes[4].hashrate") && e.contains("stake"), "{e}");
}
