//! The peg's conservation law under many random peg-ins: RBTC out of the
//! Bridge = RBTC credited = BTC at federation UTXOs, and every satoshi sent
//! to the federation is credited, queued for refund, or counted as
//! unrefundable — once.

#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::{Amount, Transaction, TxOut};
use fika_peg::bridge::PeginOutcome;
use fika_peg::pegin::{RefundType, pegin_v1_script};
use fika_peg::side::sat_to_wei;
use fika_peg::{PegParams, RegisterError, SideAddress};
use proptest::prelude::*;

use common::{Lock, User, World};

const BTC: u64 = 100_000_000;

#[derive(Clone, Debug)]
struct Spec {
    lock: Lock,
    outputs: Vec<u64>,
    v1: Option<(u8, bool)>,
    register_twice: bool,
}

fn amount() -> impl Strategy<Value = u64> {
    prop_oneof![
        1 => 1_000u64..500_000,      // below the minimum
        1 => 499_999u64..500_002,    // around it
        4 => 500_000u64..15 * BTC,   // ordinary
    ]
}

fn spec() -> impl Strategy<Value = Spec> {
    (
        prop_oneof![Just(Lock::P2pkh), Just(Lock::P2shP2wpkh), Just(Lock::P2wpkh), Just(Lock::P2shMultisig)],
        proptest::collection::vec(amount(), 1..=3),
        proptest::option::of((any::<u8>(), any::<bool>())),
        any::<bool>(),
    )
        .prop_map(|(lock, outputs, v1, register_twice)| Spec { lock, outputs, v1, register_twice })
}

#[track_caller]
fn check_invariants(w: &World, sent_to_fed: u64, credited_sat: u64) {
    w.assert_conservation();
    let b = &w.bridge;
    assert_eq!(b.pegged_in().to_sat(), credited_sat, "pegged-in total = sum of credits");
    assert!(b.locked() <= b.get_locking_cap(), "locked {} over the cap", b.locked());
    let refunds: u64 = b.refunds().map(|r| r.amount.to_sat()).sum();
    assert_eq!(
        b.pegged_in().to_sat() + refunds + b.unrefunded().to_sat(),
        sent_to_fed,
        "every satoshi sent to the federation is accounted for once"
    );
}

fn run(specs: Vec<Spec>, cap_btc: u64, native_p2wpkh: bool) {
    let params = PegParams {
        initial_locking_cap_sat: cap_btc * BTC,
        native_p2wpkh_sender: native_p2wpkh,
        ..PegParams::rootstock_mainnet()
    };
    let mut w = World::new(params);
    let mut txs: Vec<(Transaction, &Spec)> = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        let user = User::new(&w.secp, i as u32);
        let mut outputs: Vec<TxOut> = s.outputs.iter().map(|v| w.to_fed(*v)).collect();
        if let Some((tag, refund)) = s.v1 {
            let dest = SideAddress([tag; 20]);
            let refund = refund.then_some((RefundType::P2sh, [tag ^ 0xff; 20]));
            outputs.push(TxOut { value: Amount::ZERO, script_pubkey: pegin_v1_script(&dest, refund) });
        }
        let tx = w.pegin(&user, s.lock, outputs);
        txs.push((tx, s));
    }
    w.mine();
    let height = w.tip_height();
    w.confirm(height, 100);

    let mut sent_to_fed = 0u64;
    let mut credited_sat = 0u64;
    for (tx, s) in &txs {
        let reg = w.register(tx).unwrap();
        let total: u64 = s.outputs.iter().sum();
        sent_to_fed += total;
        let credited: u128 = reg.credits.iter().map(|(_, wei)| wei).sum();
        match &reg.outcome {
            PeginOutcome::Registered { amount, .. } => {
                assert_eq!(amount.to_sat(), total);
                assert_eq!(credited, sat_to_wei(total));
                assert!(s.outputs.iter().all(|v| *v >= 500_000), "a below-minimum output was credited");
                credited_sat += total;
            }
            PeginOutcome::Refunded { amount, .. } | PeginOutcome::Rejected { amount, .. } => {
                assert_eq!(amount.to_sat(), total);
                assert_eq!(credited, 0);
            }
            other => panic!("unexpected outcome {other:?}"),
        }
        if s.register_twice {
            let digest = w.bridge.digest();
            assert!(matches!(w.register(tx), Err(RegisterError::AlreadyProcessed { .. })));
            assert_eq!(w.bridge.digest(), digest);
        }
        check_invariants(&w, sent_to_fed, credited_sat);
    }
    // The Bridge's balance went down by exactly what was credited.
    assert_eq!(w.bridge.bridge_balance_wei(), sat_to_wei(21_000_000 * BTC) - sat_to_wei(credited_sat));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn conservation_holds_after_many_random_pegins(
        specs in proptest::collection::vec(spec(), 1..10),
        cap_btc in 5u64..60,
        native_p2wpkh in any::<bool>(),
    ) {
        run(specs, cap_btc, native_p2wpkh);
    }
}
