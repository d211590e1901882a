//! The emergency (ERP) branch end to end: a coin the Bridge holds for the
//! federation is spent by the emergency keys alone, through Bitcoin Core's
//! script engine and the BIP68 relative lock of a fully validating chain —
//! refused one block before the CSV delay, accepted at it.

#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::absolute::LockTime;
use bitcoin::secp256k1::PublicKey;
use bitcoin::transaction::Version;
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Witness, ecdsa};
use fika_peg::bridge::PeginOutcome;
use fika_peg::{PegParams, SpendBranch};

use common::{Lock, User, World, public, secret};

#[test]
fn after_the_csv_delay_the_emergency_keys_alone_spend_the_federation_coins() {
    let params = PegParams { erp_csv: 12, ..PegParams::rootstock_regtest() };
    let csv = u32::from(params.erp_csv);
    let mut w = World::new(params);
    // A peg-in the Bridge registers: the coin is the federation's.
    let user = User::new(&w.secp, 7);
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(100_000_000)]);
    w.mine();
    let (height, _) = w.height_of_tx(tx.compute_txid());
    w.confirm(height, 6);
    assert!(matches!(w.register(&tx).unwrap().outcome, PeginOutcome::Registered { .. }));
    let coin = OutPoint::new(tx.compute_txid(), 0);
    assert!(w.bridge.utxos().any(|u| u.outpoint == coin));

    // The emergency spend: version 2, the input's sequence at the delay,
    // three of the four emergency keys.
    let rescue = ScriptBuf::new_p2wpkh(
        &bitcoin::CompressedPublicKey(public(&w.secp, &secret("rescue", 0))).wpubkey_hash(),
    );
    let mut spend = Transaction {
        version: Version::ONE,
        lock_time: LockTime::ZERO,
        input: vec![TxIn {
            previous_output: coin,
            script_sig: ScriptBuf::new(),
            sequence: Sequence::MAX,
            witness: Witness::new(),
        }],
        output: vec![TxOut { value: Amount::from_sat(100_000_000 - 20_000), script_pubkey: rescue }],
    };
    w.fed.prepare_emergency_input(&mut spend, 0).unwrap();
    let value = Amount::from_sat(100_000_000);
    let sigs: Vec<(PublicKey, ecdsa::Signature)> = w.erp_sks[1..]
        .iter()
        .map(|sk| (public(&w.secp, sk), w.fed.sign_input(&w.secp, &spend, 0, value, sk).unwrap()))
        .collect();
    w.fed.apply_signatures(&mut spend, 0, SpendBranch::Emergency, &sigs).unwrap();
    // The members' keys cannot take the emergency branch.
    let members: Vec<(PublicKey, ecdsa::Signature)> = w.fed_sks[..3]
        .iter()
        .map(|sk| (public(&w.secp, sk), w.fed.sign_input(&w.secp, &spend, 0, value, sk).unwrap()))
        .collect();
    assert!(w.fed.apply_signatures(&mut spend.clone(), 0, SpendBranch::Emergency, &members).is_err());

    // One block too early: the chain refuses it (BIP68).
    while w.tip_height() + 1 < height + csv - 1 {
        w.mine();
    }
    let tip = w.btc.tip_hash();
    let early = w.try_mine_on(tip, vec![spend.clone()]);
    let why = early.expect_err("spent one block before the delay");
    assert!(
        why.to_lowercase().contains("sequence") || why.contains("BIP68") || why.contains("lock"),
        "{why}"
    );
    assert_eq!(w.btc.tip_hash(), tip);
    // At the delay: accepted, the coin is gone.
    w.mine();
    let tip = w.btc.tip_hash();
    w.try_mine_on(tip, vec![spend.clone()]).unwrap();
    assert!(!w.btc.utxo().contains(&coin));
    assert!(w.btc.utxo().contains(&OutPoint::new(spend.compute_txid(), 0)));
}
