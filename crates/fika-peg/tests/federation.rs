//! The federation's scripts through Bitcoin Core's script engine
//! (libbitcoinconsensus with mainnet consensus flags: P2SH, DERSIG,
//! NULLDUMMY, CLTV, CSV, WITNESS).

#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{All, PublicKey, Secp256k1, SecretKey};
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness, ecdsa};
use fika_btc::validate::{TxError, verify_scripts};
use fika_btc::{ChainParams, ScriptFlags};
use fika_peg::federation::{FederationError, set_spend_data};
use fika_peg::{Federation, ScriptForm, SpendBranch};

use common::{federation_9, public, secret};

const CSV: u16 = 52_560;
const VALUE: Amount = Amount::from_sat(10 * 100_000_000);

fn flags() -> ScriptFlags {
    ChainParams::mainnet().script_flags
}

/// A transaction spending the federation output `prev` to a P2WPKH.
fn spending_tx(sequence: Sequence) -> Transaction {
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::hash(b"federation funding"), 1),
            script_sig: ScriptBuf::new(),
            sequence,
            witness: Witness::new(),
        }],
        output: vec![TxOut {
            value: VALUE - Amount::from_sat(10_000),
            script_pubkey: fika_btc::sign::p2wpkh_script(&public(&Secp256k1::new(), &secret("payee", 0))),
        }],
    }
}

fn prevout(fed: &Federation) -> TxOut {
    TxOut { value: VALUE, script_pubkey: fed.script_pubkey().clone() }
}

fn sigs(
    secp: &Secp256k1<All>,
    fed: &Federation,
    tx: &Transaction,
    sks: &[SecretKey],
) -> Vec<(PublicKey, ecdsa::Signature)> {
    sks.iter().map(|sk| (public(secp, sk), fed.sign_input(secp, tx, 0, VALUE, sk).unwrap())).collect()
}

#[track_caller]
fn assert_passes(tx: &Transaction, fed: &Federation) {
    if let Err(e) = verify_scripts(tx, &[prevout(fed)], &flags()) {
        panic!("Core's script engine refused a valid spend: {e}");
    }
}

#[track_caller]
fn assert_fails(tx: &Transaction, fed: &Federation) {
    match verify_scripts(tx, &[prevout(fed)], &flags()) {
        Err(TxError::ScriptFailed { input: 0, .. }) => {}
        other => panic!("Core's script engine should refuse this spend, got {other:?}"),
    }
}

/// Builds the spend exactly as given (no checks) and writes it into input 0.
fn raw_spend(fed: &Federation, tx: &mut Transaction, branch: SpendBranch, ordered: &[ecdsa::Signature]) {
    let data = fed.spend_data(branch, ordered).unwrap();
    set_spend_data(tx, 0, data).unwrap();
}

#[test]
fn normal_branch_with_m_signatures_passes_and_m_minus_1_fails() {
    let secp = Secp256k1::new();
    let (fed, members, _) = federation_9(&secp, CSV, ScriptForm::P2shP2wshErp);
    assert_eq!((fed.size(), fed.threshold()), (9, 5));
    // Any 5 of 9 members, given in any order.
    let signers = [members[8], members[1], members[4], members[0], members[6]];
    let mut tx = spending_tx(Sequence::MAX);
    let s = sigs(&secp, &fed, &tx, &signers);
    fed.apply_signatures(&mut tx, 0, SpendBranch::Normal, &s).unwrap();
    assert_passes(&tx, &fed);
    // Layout: scriptSig pushes the P2WSH program; witness is
    // [<> (CHECKMULTISIG dummy), 5 sigs, <> (OP_NOTIF: normal branch), witness script].
    let w = tx.input[0].witness.to_vec();
    assert_eq!(w.len(), 8);
    assert!(w[0].is_empty() && w[6].is_empty());
    assert_eq!(w[7], fed.redeem_script().to_bytes());
    let program = fed.redeem_script().to_p2wsh();
    assert_eq!(tx.input[0].script_sig.as_bytes()[1..], program.as_bytes()[..]);
    // All 9 signatures: the helper keeps the first 5 in key order.
    let mut tx9 = spending_tx(Sequence::MAX);
    let s9 = sigs(&secp, &fed, &tx9, &members);
    fed.apply_signatures(&mut tx9, 0, SpendBranch::Normal, &s9).unwrap();
    assert_passes(&tx9, &fed);

    // M - 1: the checked helper refuses, and the raw spend fails in Core.
    let mut short = spending_tx(Sequence::MAX);
    let s4 = sigs(&secp, &fed, &short, &members[..4]);
    assert_eq!(
        fed.apply_signatures(&mut short, 0, SpendBranch::Normal, &s4),
        Err(FederationError::NotEnoughSignatures { got: 4, need: 5 })
    );
    let ordered: Vec<_> = s4.iter().map(|(_, s)| *s).collect();
    raw_spend(&fed, &mut short, SpendBranch::Normal, &ordered);
    assert_fails(&short, &fed);
    // M - 1 signatures padded with an empty one also fail.
    let mut padded = spending_tx(Sequence::MAX);
    let mut data = fed.spend_data(SpendBranch::Normal, &ordered).unwrap();
    let mut items: Vec<Vec<u8>> = data.witness.to_vec();
    items.insert(1, Vec::new());
    data.witness = Witness::from_slice(&items);
    set_spend_data(&mut padded, 0, data).unwrap();
    assert_fails(&padded, &fed);
}

#[test]
fn signatures_out_of_key_order_or_for_another_value_fail() {
    let secp = Secp256k1::new();
    let (fed, members, _) = federation_9(&secp, CSV, ScriptForm::P2shP2wshErp);
    let mut tx = spending_tx(Sequence::MAX);
    let s = sigs(&secp, &fed, &tx, &members[..5]);
    let mut ordered: Vec<_> = s.iter().map(|(_, s)| *s).collect();
    ordered.swap(0, 1);
    raw_spend(&fed, &mut tx, SpendBranch::Normal, &ordered);
    assert_fails(&tx, &fed);
    // BIP143 commits to the spent value.
    let mut tx = spending_tx(Sequence::MAX);
    let wrong: Vec<_> = members[..5]
        .iter()
        .map(|sk| (public(&secp, sk), fed.sign_input(&secp, &tx, 0, VALUE + Amount::ONE_SAT, sk).unwrap()))
        .collect();
    fed.apply_signatures(&mut tx, 0, SpendBranch::Normal, &wrong).unwrap();
    assert_fails(&tx, &fed);
}

#[test]
fn wrong_keys_fail() {
    let secp = Secp256k1::new();
    let (fed, members, emergency) = federation_9(&secp, CSV, ScriptForm::P2shP2wshErp);
    let outsiders: Vec<SecretKey> = (0..5).map(|i| secret("outsider", i)).collect();
    let mut tx = spending_tx(Sequence::MAX);
    let s = sigs(&secp, &fed, &tx, &outsiders);
    // The checked helper names the first non-member.
    assert_eq!(
        fed.apply_signatures(&mut tx, 0, SpendBranch::Normal, &s),
        Err(FederationError::NotASigner(s[0].0))
    );
    let ordered: Vec<_> = s.iter().map(|(_, s)| *s).collect();
    raw_spend(&fed, &mut tx, SpendBranch::Normal, &ordered);
    assert_fails(&tx, &fed);
    // 4 members + 1 outsider.
    let mut tx = spending_tx(Sequence::MAX);
    let mut mixed = members[..4].to_vec();
    mixed.push(outsiders[0]);
    let ordered: Vec<_> = sigs(&secp, &fed, &tx, &mixed).into_iter().map(|(_, s)| s).collect();
    raw_spend(&fed, &mut tx, SpendBranch::Normal, &ordered);
    assert_fails(&tx, &fed);
    // Emergency keys on the normal branch, members on the emergency branch.
    let mut tx = spending_tx(fed.emergency_sequence());
    let ordered: Vec<_> = sigs(&secp, &fed, &tx, &emergency[..3]).into_iter().map(|(_, s)| s).collect();
    raw_spend(&fed, &mut tx, SpendBranch::Normal, &ordered);
    assert_fails(&tx, &fed);
    let mut tx = spending_tx(fed.emergency_sequence());
    let ordered: Vec<_> = sigs(&secp, &fed, &tx, &members[..3]).into_iter().map(|(_, s)| s).collect();
    raw_spend(&fed, &mut tx, SpendBranch::Emergency, &ordered);
    assert_fails(&tx, &fed);
}

#[test]
fn emergency_branch_needs_the_csv_delay() {
    let secp = Secp256k1::new();
    let (fed, _, emergency) = federation_9(&secp, CSV, ScriptForm::P2shP2wshErp);
    assert_eq!(fed.emergency_threshold(), 3);
    // Before the delay: sequence csv - 1.
    let mut early = spending_tx(Sequence::from_height(CSV - 1));
    let s = sigs(&secp, &fed, &early, &emergency[..3]);
    fed.apply_signatures(&mut early, 0, SpendBranch::Emergency, &s).unwrap();
    assert_fails(&early, &fed);
    // No relative lock at all.
    let mut final_seq = spending_tx(Sequence::MAX);
    let s = sigs(&secp, &fed, &final_seq, &emergency[1..]);
    fed.apply_signatures(&mut final_seq, 0, SpendBranch::Emergency, &s).unwrap();
    assert_fails(&final_seq, &fed);
    // After the delay: sequence = csv, and above.
    for seq in [CSV, CSV + 1, u16::MAX] {
        let mut late = spending_tx(Sequence::from_height(seq));
        let s = sigs(&secp, &fed, &late, &emergency[..3]);
        fed.apply_signatures(&mut late, 0, SpendBranch::Emergency, &s).unwrap();
        assert_passes(&late, &fed);
    }
    // The helper sets the sequence and version.
    let mut tx = spending_tx(Sequence::MAX);
    tx.version = Version::ONE;
    fed.prepare_emergency_input(&mut tx, 0).unwrap();
    assert_eq!((tx.version, tx.input[0].sequence), (Version::TWO, Sequence::from_height(CSV)));
    let s = sigs(&secp, &fed, &tx, &emergency[1..]);
    fed.apply_signatures(&mut tx, 0, SpendBranch::Emergency, &s).unwrap();
    assert_passes(&tx, &fed);
    // Version 1 transactions cannot use CSV.
    let mut v1 = spending_tx(Sequence::from_height(CSV));
    v1.version = Version::ONE;
    let s = sigs(&secp, &fed, &v1, &emergency[..3]);
    fed.apply_signatures(&mut v1, 0, SpendBranch::Emergency, &s).unwrap();
    assert_fails(&v1, &fed);
    // Two emergency signatures are not enough.
    let mut two = spending_tx(Sequence::from_height(CSV));
    let ordered: Vec<_> = sigs(&secp, &fed, &two, &emergency[..2]).into_iter().map(|(_, s)| s).collect();
    raw_spend(&fed, &mut two, SpendBranch::Emergency, &ordered);
    assert_fails(&two, &fed);
}

#[test]
fn legacy_forms_spend_through_p2sh() {
    let secp = Secp256k1::new();
    for form in [ScriptForm::P2shMultisig, ScriptForm::P2shErp] {
        let (fed, members, emergency) = federation_9(&secp, CSV, form);
        let mut tx = spending_tx(Sequence::MAX);
        let s = sigs(&secp, &fed, &tx, &members[2..7]);
        fed.apply_signatures(&mut tx, 0, SpendBranch::Normal, &s).unwrap();
        assert!(tx.input[0].witness.is_empty());
        assert_passes(&tx, &fed);
        let mut short = spending_tx(Sequence::MAX);
        let ordered: Vec<_> = sigs(&secp, &fed, &short, &members[..4]).into_iter().map(|(_, s)| s).collect();
        raw_spend(&fed, &mut short, SpendBranch::Normal, &ordered);
        assert_fails(&short, &fed);
        if form == ScriptForm::P2shErp {
            let mut late = spending_tx(Sequence::from_height(CSV));
            let s = sigs(&secp, &fed, &late, &emergency[..3]);
            fed.apply_signatures(&mut late, 0, SpendBranch::Emergency, &s).unwrap();
            assert_passes(&late, &fed);
            let mut early = spending_tx(Sequence::from_height(CSV - 1));
            let s = sigs(&secp, &fed, &early, &emergency[..3]);
            fed.apply_signatures(&mut early, 0, SpendBranch::Emergency, &s).unwrap();
            assert_fails(&early, &fed);
        } else {
            assert_eq!(
                fed.spend_data(SpendBranch::Emergency, &[]),
                Err(FederationError::NoEmergencyBranch(ScriptForm::P2shMultisig))
            );
        }
    }
}

#[test]
fn signatures_verify_against_the_sighash() {
    let secp = Secp256k1::new();
    let (fed, members, _) = federation_9(&secp, CSV, ScriptForm::P2shP2wshErp);
    let tx = spending_tx(Sequence::MAX);
    let sig = fed.sign_input(&secp, &tx, 0, VALUE, &members[3]).unwrap();
    let pk = public(&secp, &members[3]);
    assert!(fed.verify_signature(&secp, &tx, 0, VALUE, &pk, &sig));
    assert!(!fed.verify_signature(&secp, &tx, 0, VALUE + Amount::ONE_SAT, &pk, &sig));
    assert!(!fed.verify_signature(&secp, &tx, 0, VALUE, &public(&secp, &members[4]), &sig));
    assert!(matches!(fed.sighash(&tx, 1, VALUE), Err(FederationError::NoSuchInput { index: 1, inputs: 1 })));
}

#[test]
fn a_20_member_federation_spends_with_11_signatures() {
    let secp = Secp256k1::new();
    let (fed, members, _) = common::federation_n(&secp, 20, CSV, ScriptForm::P2shP2wshErp);
    assert_eq!(fed.threshold(), 11);
    let mut tx = spending_tx(Sequence::MAX);
    let s = sigs(&secp, &fed, &tx, &members[..11]);
    fed.apply_signatures(&mut tx, 0, SpendBranch::Normal, &s).unwrap();
    assert_passes(&tx, &fed);
}
