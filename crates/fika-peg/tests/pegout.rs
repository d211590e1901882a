//! Peg-outs end to end: requests locked back on the sidechain, batches built
//! from the federation's UTXOs, the confirmation wait, members' signatures,
//! the released transaction through Bitcoin Core's script engine and a
//! fully validating Bitcoin chain, and its registration back.

#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::consensus::{deserialize, serialize};
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut};
use fika_btc::ChainParams;
use fika_btc::validate::verify_scripts;
use fika_peg::abi::{
    self, ADD_SIGNATURE_SIGNATURE, BATCH_PEGOUT_CREATED_SIGNATURE, BridgeCall, PEGOUT_CONFIRMED_SIGNATURE,
    PEGOUT_TRANSACTION_CREATED_SIGNATURE, RELEASE_BTC_SIGNATURE, RELEASE_REQUEST_RECEIVED_SIGNATURE,
    RELEASE_REQUEST_REJECTED_SIGNATURE, RELEASE_REQUESTED_SIGNATURE, UPDATE_COLLECTIONS_SIGNATURE,
    encode_call, event_log, event_topic, word_hash, word_u128,
};
use fika_peg::bridge::{BridgeEvent, PeginOutcome};
use fika_peg::pegout::{
    self, AddSignatureError, BuildError, Effects, Pegout, PegoutKind, PegoutStatus, RejectedPegoutReason,
    TxOrigin,
};
use fika_peg::side::{keccak256, sat_to_wei};
use fika_peg::{BridgeError, BridgeState, Checkpoint, FederationUtxo, PegParams, ScriptForm, SideAddress};
use fika_side::BlockEnvInfo;

use common::{Lock, User, World, federation_9};

const BTC: u64 = 100_000_000;

fn tx_hash(tag: &str, i: u64) -> [u8; 32] {
    let mut d = tag.as_bytes().to_vec();
    d.extend_from_slice(&i.to_be_bytes());
    keccak256(&d)
}

/// Pegs `values` in (one P2PKH peg-in each, one block), registers them and
/// returns the federation UTXOs they created.
#[track_caller]
fn fund(w: &mut World, values: &[u64]) -> Vec<FederationUtxo> {
    let mut txs = Vec::new();
    for (i, v) in values.iter().enumerate() {
        let u = User::new(&w.secp, 10_000 + w.bridge.utxo_count() as u32 * 100 + i as u32);
        txs.push(w.pegin(&u, Lock::P2pkh, vec![w.to_fed(*v)]));
    }
    w.mine();
    let h = w.tip_height();
    let confs = w.bridge.params().pegin_confirmations;
    w.confirm(h, confs);
    let mut out = Vec::new();
    for tx in &txs {
        let reg = w.register(tx).unwrap();
        assert!(matches!(reg.outcome, PeginOutcome::Registered { .. }), "{:?}", reg.outcome);
        let op = OutPoint::new(tx.compute_txid(), 0);
        out.push(*w.bridge.utxos().find(|u| u.outpoint == op).unwrap());
    }
    w.assert_conservation();
    out
}

/// A peg-out request of `sat` satoshis by `user` in its own transaction.
#[track_caller]
fn request(w: &mut World, user: &User, sat: u64, tag: u64) -> Effects {
    let origin = TxOrigin::signer(user.pk, tx_hash("request", tag));
    let fx = w.bridge.release_btc(user.side_address(), sat_to_wei(sat), &origin).unwrap();
    w.assert_conservation();
    fx
}

#[track_caller]
fn update(w: &mut World, block: u64) -> Effects {
    let fx = w.bridge.update_collections(block, w.pegnatory(), Some(tx_hash("update", block)));
    w.assert_conservation();
    fx
}

fn created(fx: &Effects) -> Vec<[u8; 32]> {
    fx.events
        .iter()
        .filter_map(|e| match e {
            BridgeEvent::ReleaseRequested { rsk_tx_hash, .. } => Some(*rsk_tx_hash),
            _ => None,
        })
        .collect()
}

fn released(fx: &Effects) -> Option<Transaction> {
    fx.events.iter().find_map(|e| match e {
        BridgeEvent::ReleaseBtc { raw_tx, .. } => Some(deserialize(raw_tx).unwrap()),
        _ => None,
    })
}

fn member(w: &World, i: usize) -> SideAddress {
    SideAddress::from_public_key(&w.fed.members()[i])
}

/// Member `i`'s signatures of every input of `p`.
fn sign(w: &World, p: &Pegout, i: usize) -> Vec<Signature> {
    (0..p.tx.input.len())
        .map(|k| w.fed.sign_input(&w.secp, &p.tx, k, p.inputs[k].value, &w.fed_sks[i]).unwrap().signature)
        .collect()
}

#[track_caller]
fn add_sig(w: &mut World, key: &[u8; 32], i: usize) -> Result<Effects, AddSignatureError> {
    let p = w.bridge.pegout(key).unwrap().clone();
    let sigs = sign(w, &p, i);
    let (caller, pk) = (member(w, i), w.fed.members()[i]);
    let out = w.bridge.add_signature(caller, &pk, &sigs, key);
    w.assert_conservation();
    out
}

/// Asserts Core's engine (mainnet flags) accepts every input of `tx`
/// spending `inputs`.
#[track_caller]
fn assert_core_accepts(w: &World, tx: &Transaction, inputs: &[FederationUtxo]) {
    let spent: Vec<TxOut> = inputs
        .iter()
        .map(|u| TxOut { value: u.value, script_pubkey: w.fed.script_pubkey().clone() })
        .collect();
    if let Err(e) = verify_scripts(tx, &spent, &ChainParams::mainnet().script_flags) {
        panic!("Core's script engine refused the released transaction: {e}");
    }
}

fn big_cap(mut p: PegParams) -> PegParams {
    p.initial_locking_cap_sat = 1_000 * BTC;
    p
}

#[test]
fn two_requests_make_one_transaction_paying_both_minus_equal_fee_shares() {
    let mut w = World::new(PegParams::rootstock_mainnet());
    let fed_utxo = fund(&mut w, &[5 * BTC])[0];
    let (alice, bob) = (User::new(&w.secp, 1), User::new(&w.secp, 2));
    let balance = w.bridge.bridge_balance_wei();

    let fx = request(&mut w, &alice, BTC, 1);
    let log = event_log(&fx.events[0]);
    assert_eq!(
        log.topics,
        vec![event_topic(RELEASE_REQUEST_RECEIVED_SIGNATURE), alice.side_address().to_word()]
    );
    let addr =
        bitcoin::Address::p2pkh(bitcoin::PublicKey::new(alice.pk).pubkey_hash(), bitcoin::Network::Bitcoin);
    let mut data = [word_u128(64), word_u128(sat_to_wei(BTC))].concat();
    data.extend_from_slice(&word_u128(addr.to_string().len() as u128));
    data.extend_from_slice(addr.to_string().as_bytes());
    data.resize(96 + addr.to_string().len().div_ceil(32) * 32, 0);
    assert_eq!(log.data, data);
    assert!(fx.credits.is_empty());
    request(&mut w, &bob, BTC / 2, 2);
    // The RBTC is locked back at once.
    assert_eq!(w.bridge.bridge_balance_wei(), balance + sat_to_wei(BTC + BTC / 2));
    assert_eq!(w.bridge.get_queued_pegouts_count(), 2);

    let fx = update(&mut w, 7);
    assert_eq!(w.bridge.get_queued_pegouts_count(), 0);
    assert_eq!(w.bridge.get_next_pegout_creation_block_number(), 7 + 360);
    let keys = created(&fx);
    assert_eq!(keys, vec![tx_hash("update", 7)], "keyed by the updateCollections transaction");
    let p = w.bridge.pegout(&keys[0]).unwrap().clone();
    assert_eq!(p.status, PegoutStatus::WaitingForConfirmations);
    assert_eq!(p.inputs, vec![fed_utxo]);
    let tx = &p.tx;
    assert_eq!(tx.input.len(), 1);
    assert_eq!(tx.input[0].previous_output, fed_utxo.outpoint);
    assert_eq!(tx.output.len(), 3);
    let fee = p.fee.to_sat();
    // The fee is fee_per_kb × the estimated signed virtual size.
    let vsize = pegout::estimated_vsize(&w.fed, tx);
    assert_eq!(fee, 500_000 * vsize / 1000);
    assert_eq!(fee, 5 * BTC - tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>());
    let (share, rem) = (fee / 2, fee % 2);
    assert_eq!(
        tx.output[0],
        TxOut { value: Amount::from_sat(BTC - share - rem), script_pubkey: p2pkh_of(&alice) }
    );
    assert_eq!(
        tx.output[1],
        TxOut { value: Amount::from_sat(BTC / 2 - share), script_pubkey: p2pkh_of(&bob) }
    );
    assert_eq!(
        tx.output[2],
        TxOut {
            value: Amount::from_sat(5 * BTC - BTC - BTC / 2),
            script_pubkey: w.fed.script_pubkey().clone()
        }
    );
    assert_eq!(p.change, Some(2));
    // The UTXO left the selectable set.
    assert_eq!(w.bridge.utxo_count(), 0);
    assert_eq!(w.bridge.reserved_utxos().count(), 1);

    // Events, in Rootstock's order and layout.
    let txid = tx.compute_txid();
    let logs: Vec<abi::Log> = fx.events.iter().map(event_log).collect();
    assert_eq!(logs[0].topics, vec![event_topic(UPDATE_COLLECTIONS_SIGNATURE)]);
    assert_eq!(logs[0].data, w.pegnatory().to_word().to_vec());
    assert_eq!(logs[1].topics, vec![event_topic(RELEASE_REQUESTED_SIGNATURE), keys[0], word_hash(&txid)]);
    assert_eq!(logs[1].data, word_u128(u128::from(BTC + BTC / 2)).to_vec());
    assert_eq!(logs[2].topics, vec![event_topic(PEGOUT_TRANSACTION_CREATED_SIGNATURE), word_hash(&txid)]);
    // 5 BTC as a compact size: 0xfe + 4 bytes little-endian.
    assert_eq!(logs[2].data, abi::encode_bytes(&[0xfe, 0x00, 0x65, 0xcd, 0x1d]));
    assert_eq!(logs[3].topics, vec![event_topic(BATCH_PEGOUT_CREATED_SIGNATURE), word_hash(&txid)]);
    assert_eq!(logs[3].data, abi::encode_bytes(&[tx_hash("request", 1), tx_hash("request", 2)].concat()));
    assert_eq!(logs.len(), 4);
}

fn p2pkh_of(u: &User) -> ScriptBuf {
    ScriptBuf::new_p2pkh(&bitcoin::PublicKey::new(u.pk).pubkey_hash())
}

#[test]
fn utxos_are_selected_by_txid_then_index_not_by_value() {
    let mut w = World::new(big_cap(PegParams::rootstock_mainnet()));
    let values = [11 * BTC / 10, 12 * BTC / 10, 13 * BTC / 10, 14 * BTC / 10, 15 * BTC / 10, 16 * BTC / 10];
    let utxos = fund(&mut w, &values);
    let by_txid = pegout::sorted_for_selection(utxos.iter().copied());
    let mut by_value = utxos.clone();
    by_value.sort_by_key(|u| u.value);
    assert_ne!(by_txid, by_value, "the test needs txid order to differ from value order");
    let mut by_value_desc = by_value.clone();
    by_value_desc.reverse();
    assert_ne!(by_txid, by_value_desc);
    // The big-integer order is the order of the txids as displayed.
    let shown: Vec<String> = by_txid.iter().map(|u| u.outpoint.txid.to_string()).collect();
    let mut sorted = shown.clone();
    sorted.sort();
    assert_eq!(shown, sorted);

    // Needs exactly three UTXOs in txid order.
    let need = by_txid[0].value + by_txid[1].value + Amount::from_sat(1);
    let user = User::new(&w.secp, 1);
    request(&mut w, &user, need.to_sat(), 1);
    let fx = update(&mut w, 1);
    let p = w.bridge.pegout(&created(&fx)[0]).unwrap();
    assert_eq!(p.inputs, by_txid[..3].to_vec());
    let outpoints: Vec<OutPoint> = p.tx.input.iter().map(|i| i.previous_output).collect();
    assert_eq!(outpoints, by_txid[..3].iter().map(|u| u.outpoint).collect::<Vec<_>>());
    // The rest stays selectable.
    let mut left: Vec<FederationUtxo> = w.bridge.utxos().copied().collect();
    left.sort_by_key(|u| pegout::selection_key(&u.outpoint));
    assert_eq!(left, by_txid[3..].to_vec());
}

#[test]
fn low_amounts_and_contract_callers_are_refunded_with_their_reason() {
    // A low fee: the 400,000 sat minimum is the binding bound.
    let params = PegParams { fee_per_kb_sat: 100_000, ..PegParams::rootstock_mainnet() };
    let mut w = World::new(params);
    fund(&mut w, &[5 * BTC]);
    let user = User::new(&w.secp, 1);
    assert_eq!(w.bridge.minimum_pegout(), (Amount::from_sat(400_000), RejectedPegoutReason::LowAmount));
    let balance = w.bridge.bridge_balance_wei();

    let value = sat_to_wei(399_999) + 123; // sub-satoshi wei come back too
    let origin = TxOrigin::signer(user.pk, tx_hash("r", 1));
    let fx = w.bridge.release_btc(user.side_address(), value, &origin).unwrap();
    assert_eq!(fx.credits, vec![(user.side_address(), value)]);
    assert_eq!(
        fx.events,
        vec![BridgeEvent::ReleaseRequestRejected {
            sender: user.side_address(),
            amount_wei: value,
            reason: RejectedPegoutReason::LowAmount
        }]
    );
    let log = event_log(&fx.events[0]);
    assert_eq!(
        log.topics,
        vec![event_topic(RELEASE_REQUEST_REJECTED_SIGNATURE), user.side_address().to_word()]
    );
    assert_eq!(log.data, [word_u128(value), word_u128(1)].concat());
    assert_eq!(w.bridge.bridge_balance_wei(), balance, "the value went straight back");
    assert_eq!(w.bridge.get_queued_pegouts_count(), 0);
    w.assert_conservation();

    // The minimum is inclusive.
    let fx = request(&mut w, &user, 400_000, 2);
    assert!(matches!(fx.events[0], BridgeEvent::ReleaseRequestReceived { .. }));
    assert_eq!(w.bridge.get_queued_pegouts_count(), 1);

    // A contract calling on behalf of the user.
    let contract = SideAddress([0xcc; 20]);
    let fx = w.bridge.release_btc(contract, sat_to_wei(BTC), &origin).unwrap();
    assert_eq!(fx.credits, vec![(contract, sat_to_wei(BTC))]);
    assert_eq!(
        fx.events,
        vec![BridgeEvent::ReleaseRequestRejected {
            sender: contract,
            amount_wei: sat_to_wei(BTC),
            reason: RejectedPegoutReason::CallerContract
        }]
    );
    assert_eq!(event_log(&fx.events[0]).data, [word_u128(sat_to_wei(BTC)), word_u128(2)].concat());
    assert_eq!(w.bridge.get_queued_pegouts_count(), 1);
    w.assert_conservation();

    // An externally owned caller needs its key, and the key must be its own.
    let no_key = TxOrigin { public_key: None, ..origin };
    assert_eq!(w.bridge.release_btc(user.side_address(), 1, &no_key), Err(BridgeError::MissingSignerKey));
    let other = User::new(&w.secp, 2);
    let wrong = TxOrigin { public_key: Some(other.pk), ..origin };
    assert!(matches!(
        w.bridge.release_btc(user.side_address(), 1, &wrong),
        Err(BridgeError::SignerKeyMismatch { .. })
    ));
}

#[test]
fn the_fee_bound_rejects_with_fee_above_value() {
    // Mainnet fee (500,000 sat/kB): 2 inputs and 2 outputs of a 5-of-9
    // P2SH-P2WSH federation cost more than 400,000 / 1.8.
    let mut w = World::new(PegParams::rootstock_mainnet());
    fund(&mut w, &[5 * BTC]);
    let (min, reason) = w.bridge.minimum_pegout();
    assert_eq!(reason, RejectedPegoutReason::FeeAboveValue);
    let size = pegout::pegout_tx_size(&w.fed, 2, 2);
    let fee = 500_000 * size / 1000;
    assert_eq!(min.to_sat(), fee + fee * 80 / 100);
    assert!(min.to_sat() > 400_000);
    let user = User::new(&w.secp, 1);
    for (sat, ok) in [(400_000, false), (min.to_sat() - 1, false), (min.to_sat(), true)] {
        let fx = request(&mut w, &user, sat, sat);
        match &fx.events[0] {
            BridgeEvent::ReleaseRequestRejected { reason, .. } => {
                assert!(!ok, "{sat} rejected");
                assert_eq!(*reason, RejectedPegoutReason::FeeAboveValue);
                assert_eq!(fx.credits, vec![(user.side_address(), sat_to_wei(sat))]);
            }
            BridgeEvent::ReleaseRequestReceived { .. } => assert!(ok, "{sat} accepted"),
            other => panic!("{other:?}"),
        }
    }
}

#[test]
fn a_batch_over_the_size_limit_is_split_in_halves() {
    let mut w = World::new(PegParams::rootstock_mainnet());
    fund(&mut w, &[20 * BTC, 20 * BTC]);
    let users: Vec<User> = (0..30).map(|i| User::new(&w.secp, i)).collect();
    for i in 0..3000u64 {
        let u = &users[(i % 30) as usize];
        let origin = TxOrigin::signer(u.pk, tx_hash("request", i));
        w.bridge.release_btc(u.side_address(), sat_to_wei(BTC / 100), &origin).unwrap();
    }
    assert_eq!(w.bridge.get_queued_pegouts_count(), 3000);
    // The whole queue does not fit 100,000 vB.
    let utxos = pegout::sorted_for_selection(w.bridge.utxos().copied());
    let all: Vec<(ScriptBuf, Amount)> =
        w.bridge.pegout_requests().map(|r| (r.destination.clone(), r.amount)).collect();
    assert!(matches!(
        pegout::build_batch(&w.fed, &utxos, &all, 500_000, 100_000),
        Err(BuildError::TooLarge { max: 100_000, .. })
    ));

    let fx = update(&mut w, 1);
    let keys = created(&fx);
    assert_eq!(keys.len(), 1);
    let first = w.bridge.pegout(&keys[0]).unwrap().clone();
    assert_eq!(first.tx.output.len(), 1500 + 1, "the first half and the change");
    let vsize = pegout::estimated_vsize(&w.fed, &first.tx);
    assert!(vsize <= 100_000 && vsize > 50_000, "{vsize}");
    let PegoutKind::Batch { requests, .. } = &first.kind else { panic!() };
    assert_eq!(requests, &(0..1500).map(|i| tx_hash("request", i)).collect::<Vec<_>>());
    assert_eq!(w.bridge.get_queued_pegouts_count(), 1500);
    // The queue is not empty: the next call batches the rest.
    assert_eq!(w.bridge.get_next_pegout_creation_block_number(), 0);

    let fx = update(&mut w, 1);
    let keys2 = created(&fx);
    assert_eq!(keys2.len(), 1);
    assert_ne!(keys2[0], keys[0], "two peg-outs of one block get distinct keys");
    let second = w.bridge.pegout(&keys2[0]).unwrap();
    let PegoutKind::Batch { requests, .. } = &second.kind else { panic!() };
    assert_eq!(requests, &(1500..3000).map(|i| tx_hash("request", i)).collect::<Vec<_>>());
    assert_ne!(second.inputs, first.inputs);
    assert_eq!(w.bridge.get_queued_pegouts_count(), 0);
    assert_eq!(w.bridge.get_next_pegout_creation_block_number(), 1 + 360);
}

#[test]
fn batches_wait_for_the_interval_and_for_enough_federation_funds() {
    let mut w = World::new(PegParams::rootstock_mainnet());
    fund(&mut w, &[2 * BTC]);
    let user = User::new(&w.secp, 1);
    // An empty queue at a due block sets the next height.
    update(&mut w, 10);
    assert_eq!(w.bridge.get_next_pegout_creation_block_number(), 370);
    request(&mut w, &user, BTC, 1);
    assert!(created(&update(&mut w, 369)).is_empty());
    assert_eq!(created(&update(&mut w, 370)).len(), 1);
    assert_eq!(w.bridge.get_next_pegout_creation_block_number(), 730);
    // The only UTXO is spent by that peg-out and its change is in flight
    // until the peg-out is registered back: the federation is short.
    assert_eq!(w.bridge.federation_balance(), Amount::ZERO);
    request(&mut w, &user, BTC, 2);
    assert!(created(&update(&mut w, 730)).is_empty());
    assert!(created(&update(&mut w, 731)).is_empty(), "retried at every call");
    assert_eq!(w.bridge.get_queued_pegouts_count(), 1);
    assert_eq!(w.bridge.get_next_pegout_creation_block_number(), 730);
    fund(&mut w, &[2 * BTC]);
    assert_eq!(created(&update(&mut w, 732)).len(), 1);
    assert_eq!(w.bridge.get_queued_pegouts_count(), 0);
    assert_eq!(w.bridge.get_next_pegout_creation_block_number(), 732 + 360);
}

#[test]
fn a_pegout_waits_pegout_confirmations_blocks_and_one_moves_per_call() {
    let mut w = World::new(PegParams::rootstock_mainnet());
    fund(&mut w, &[2 * BTC, 2 * BTC, 2 * BTC]);
    let user = User::new(&w.secp, 1);
    request(&mut w, &user, BTC, 1);
    let a = created(&update(&mut w, 1000))[0];
    request(&mut w, &user, BTC, 2);
    let b = created(&update(&mut w, 1360))[0];

    let fx = update(&mut w, 1000 + 3999);
    assert!(!fx.events.iter().any(|e| matches!(e, BridgeEvent::PegoutConfirmed { .. })));
    assert_eq!(w.bridge.pegout(&a).unwrap().status, PegoutStatus::WaitingForConfirmations);
    assert_eq!(w.bridge.pegouts_waiting_for_signatures().count(), 0);

    // Both are confirmed at 5360, the older moves first.
    let fx = update(&mut w, 5360);
    let confirmed: Vec<&BridgeEvent> =
        fx.events.iter().filter(|e| matches!(e, BridgeEvent::PegoutConfirmed { .. })).collect();
    let pa = w.bridge.pegout(&a).unwrap();
    assert_eq!(
        confirmed,
        vec![&BridgeEvent::PegoutConfirmed { btc_txid: pa.btc_txid, creation_block: 1000 }]
    );
    let log = event_log(confirmed[0]);
    assert_eq!(log.topics, vec![event_topic(PEGOUT_CONFIRMED_SIGNATURE), word_hash(&pa.btc_txid)]);
    assert_eq!(log.data, word_u128(1000).to_vec());
    assert_eq!(pa.status, PegoutStatus::WaitingForSignatures { since_block: 5360 });
    assert_eq!(w.bridge.pegout(&b).unwrap().status, PegoutStatus::WaitingForConfirmations);
    let fx = update(&mut w, 5360);
    assert_eq!(fx.events.iter().filter(|e| matches!(e, BridgeEvent::PegoutConfirmed { .. })).count(), 1);
    assert_eq!(w.bridge.pegouts_waiting_for_signatures().count(), 2);

    // The boundary for a single peg-out: 3999 blocks later not, 4000 yes.
    request(&mut w, &user, BTC, 3);
    let c = created(&update(&mut w, 6000))[0];
    update(&mut w, 9999);
    assert_eq!(w.bridge.pegout(&c).unwrap().status, PegoutStatus::WaitingForConfirmations);
    update(&mut w, 10_000);
    assert_eq!(
        w.bridge.pegout(&c).unwrap().status,
        PegoutStatus::WaitingForSignatures { since_block: 10_000 }
    );
}

/// A world with a peg-out of two inputs waiting for signatures; returns its
/// key.
fn pegout_waiting_for_signatures(w: &mut World) -> [u8; 32] {
    fund(w, &[BTC, 2 * BTC]);
    let (alice, bob) = (User::new(&w.secp, 1), User::new(&w.secp, 2));
    request(w, &alice, 2 * BTC, 1);
    request(w, &bob, BTC / 2, 2);
    let key = created(&update(w, 100))[0];
    let confs = w.bridge.params().pegout_confirmations;
    update(w, 100 + confs);
    assert_eq!(
        w.bridge.pegouts_waiting_for_signatures().map(|p| p.rsk_tx_hash).collect::<Vec<_>>(),
        vec![key]
    );
    assert_eq!(w.bridge.pegout(&key).unwrap().inputs.len(), 2);
    key
}

#[test]
fn m_signatures_release_a_transaction_core_accepts_and_m_minus_1_do_not() {
    let mut w = World::new(PegParams::rootstock_mainnet());
    let key = pegout_waiting_for_signatures(&mut w);
    let p = w.bridge.pegout(&key).unwrap().clone();
    let m = w.fed.threshold();
    assert_eq!(m, 5);
    // Members 8, 6, 4, 2 (not in key order).
    for (n, i) in [8, 6, 4, 2].into_iter().enumerate() {
        let fx = add_sig(&mut w, &key, i).unwrap();
        assert_eq!(
            fx.events,
            vec![BridgeEvent::AddSignature {
                rsk_tx_hash: key,
                federator: member(&w, i),
                federator_public_key: w.fed.members()[i]
            }]
        );
        let log = event_log(&fx.events[0]);
        assert_eq!(log.topics, vec![event_topic(ADD_SIGNATURE_SIGNATURE), key, member(&w, i).to_word()]);
        assert_eq!(log.data, abi::encode_bytes(&w.fed.members()[i].serialize()));
        assert!(released(&fx).is_none(), "{} signatures release nothing", n + 1);
        assert_eq!(w.bridge.pegout(&key).unwrap().signers().count(), n + 1);
    }
    assert!(matches!(w.bridge.pegout(&key).unwrap().status, PegoutStatus::WaitingForSignatures { .. }));
    let fx = add_sig(&mut w, &key, 0).unwrap();
    let tx = released(&fx).expect("the fifth signature releases");
    let log = event_log(fx.events.last().unwrap());
    assert_eq!(log.topics, vec![event_topic(RELEASE_BTC_SIGNATURE), key]);
    assert_eq!(log.data, abi::encode_bytes(&serialize(&tx)));
    assert_core_accepts(&w, &tx, &p.inputs);
    // The witness of P2SH-P2WSH does not change the txid the events named.
    assert_eq!(tx.compute_txid(), p.btc_txid);
    // Estimated fee covers the real size.
    assert!(tx.vsize() as u64 <= pegout::estimated_vsize(&w.fed, &p.tx));
    assert!(matches!(w.bridge.pegout(&key).unwrap().status, PegoutStatus::Released { .. }));
    assert_eq!(w.bridge.pegouts_waiting_for_signatures().count(), 0);
    // Late signatures change nothing.
    assert_eq!(add_sig(&mut w, &key, 1), Err(AddSignatureError::NotWaitingForSignatures(key)));

    // Bitcoin accepts it (full validation), and it is registered back.
    w.pending.push(tx.clone());
    w.mine();
    let (height, _) = w.height_of_tx(tx.compute_txid());
    w.confirm(height, 100);
    let utxos_before = w.bridge.utxo_count();
    let reg = w.register(&tx).unwrap();
    assert_eq!(reg.outcome, PeginOutcome::Pegout { rsk_tx_hash: key, change: Some(tx.output[2].value) });
    assert!(reg.events.is_empty() && reg.credits.is_empty());
    assert_eq!(w.bridge.utxo_count(), utxos_before + 1);
    let change = *w.bridge.utxos().find(|u| u.outpoint == OutPoint::new(tx.compute_txid(), 2)).unwrap();
    assert_eq!(change.height, height);
    assert!(w.bridge.pegout(&key).is_none());
    assert_eq!(w.bridge.reserved_utxos().count(), 0);
    w.assert_conservation();
    assert!(matches!(w.register(&tx), Err(fika_peg::RegisterError::AlreadyProcessed { .. })));
}

#[test]
fn signatures_from_outside_the_federation_or_wrong_are_refused() {
    let mut w = World::new(PegParams::rootstock_mainnet());
    let key = pegout_waiting_for_signatures(&mut w);
    let p = w.bridge.pegout(&key).unwrap().clone();
    let digest = w.bridge.digest();
    let stranger = User::new(&w.secp, 77);
    let strangers_sigs: Vec<Signature> = (0..2)
        .map(|k| w.fed.sign_input(&w.secp, &p.tx, k, p.inputs[k].value, &stranger.sk).unwrap().signature)
        .collect();
    // A non-member caller.
    assert_eq!(
        w.bridge.add_signature(stranger.side_address(), &stranger.pk, &strangers_sigs, &key),
        Err(AddSignatureError::Unauthorized(stranger.side_address()))
    );
    // A member posting a non-member's valid signatures.
    assert_eq!(
        w.bridge.add_signature(member(&w, 0), &stranger.pk, &strangers_sigs, &key),
        Err(AddSignatureError::NotAMember(stranger.pk))
    );
    // A member's signature claimed for another member.
    let sigs0 = sign(&w, &p, 0);
    let pk1 = w.fed.members()[1];
    assert_eq!(
        w.bridge.add_signature(member(&w, 1), &pk1, &sigs0, &key),
        Err(AddSignatureError::InvalidSignature { input: 0 })
    );
    // Signatures swapped between inputs.
    let swapped = vec![sigs0[1], sigs0[0]];
    let pk0 = w.fed.members()[0];
    assert_eq!(
        w.bridge.add_signature(member(&w, 0), &pk0, &swapped, &key),
        Err(AddSignatureError::InvalidSignature { input: 0 })
    );
    assert_eq!(
        w.bridge.add_signature(member(&w, 0), &pk0, &sigs0[..1], &key),
        Err(AddSignatureError::SignatureCount { expected: 2, got: 1 })
    );
    assert_eq!(
        w.bridge.add_signature(member(&w, 0), &pk0, &sigs0, &[9; 32]),
        Err(AddSignatureError::NotWaitingForSignatures([9; 32]))
    );
    assert_eq!(w.bridge.digest(), digest, "refused signatures change nothing");
    add_sig(&mut w, &key, 0).unwrap();
    assert_eq!(add_sig(&mut w, &key, 0), Err(AddSignatureError::AlreadySigned(pk0)));

    // Through the precompile: a non-member caller reverts, a non-member key
    // succeeds without effect.
    let call = |pk: &bitcoin::secp256k1::PublicKey, sigs: &[Signature]| {
        encode_call(&BridgeCall::AddSignature {
            federator_public_key: pk.serialize().to_vec(),
            signatures: sigs.iter().map(|s| s.serialize_der().to_vec()).collect(),
            rsk_tx_hash: key,
        })
    };
    let digest = w.bridge.digest();
    assert!(matches!(
        w.bridge.call(stranger.side_address(), 0, &call(&stranger.pk, &strangers_sigs)),
        Err(BridgeError::Unauthorized { method: "addSignature", .. })
    ));
    let out = w.bridge.call(member(&w, 0), 0, &call(&stranger.pk, &strangers_sigs)).unwrap();
    assert!(out.logs.is_empty());
    let bad_der = encode_call(&BridgeCall::AddSignature {
        federator_public_key: pk1.serialize().to_vec(),
        signatures: vec![vec![0x30, 0x01]],
        rsk_tx_hash: key,
    });
    assert!(matches!(w.bridge.call(member(&w, 1), 0, &bad_der), Err(BridgeError::InvalidArgument(_))));
    assert_eq!(w.bridge.digest(), digest);
}

#[test]
fn the_precompile_runs_the_whole_pegout_through_calldata() {
    let params = PegParams { pegout_confirmations: 10, ..PegParams::rootstock_mainnet() };
    let mut w = World::new(params);
    fund(&mut w, &[3 * BTC]);
    let user = User::new(&w.secp, 5);
    let mut env = BlockEnvInfo::new(50, 0, [0; 20], [0; 32]);
    env.tx_origin = user.side_address().0;
    env.tx_origin_pubkey = Some(user.pk.serialize());
    env.tx_hash = tx_hash("side-tx", 1);
    let out = w.bridge.call_with_env(user.side_address(), sat_to_wei(BTC), &[], &env).unwrap();
    assert_eq!(out.logs[0].topics[0], event_topic(RELEASE_REQUEST_RECEIVED_SIGNATURE));
    assert!(out.credits.is_empty());
    assert_eq!(w.bridge.pegout_requests().next().unwrap().rsk_tx_hash, tx_hash("side-tx", 1));
    // A contract in between is refused and refunded.
    let contract = SideAddress([7; 20]);
    let out = w.bridge.call_with_env(contract, sat_to_wei(BTC), &[], &env).unwrap();
    assert_eq!(out.credits, vec![(contract, sat_to_wei(BTC))]);
    assert_eq!(out.logs[0].topics[0], event_topic(RELEASE_REQUEST_REJECTED_SIGNATURE));
    // Without the environment there is no signer key.
    assert!(matches!(w.bridge.call(user.side_address(), 1, &[]), Err(BridgeError::NotImplemented(_))));
    w.assert_conservation();

    let read = |w: &mut World, c: BridgeCall| {
        let out = w.bridge.call(SideAddress([1; 20]), 0, &encode_call(&c)).unwrap();
        u128::from_be_bytes(out.output[16..32].try_into().unwrap())
    };
    assert_eq!(read(&mut w, BridgeCall::GetQueuedPegoutsCount), 1);
    assert_eq!(read(&mut w, BridgeCall::GetNextPegoutCreationBlockNumber), 0);
    let estimate = read(&mut w, BridgeCall::GetEstimatedFeesForNextPegOutEvent);
    assert_eq!(estimate, u128::from(w.bridge.get_estimated_fees_for_next_pegout_event().to_sat()));

    // updateCollections by anyone, keyed by its transaction.
    let caller = SideAddress([2; 20]);
    let mut env = BlockEnvInfo::new(60, 0, [0; 20], [0; 32]);
    env.tx_origin = caller.0;
    env.tx_hash = tx_hash("side-tx", 2);
    let update_call = encode_call(&BridgeCall::UpdateCollections);
    assert!(matches!(
        w.bridge.call_with_env(caller, 1, &update_call, &env),
        Err(BridgeError::NonPayable { .. })
    ));
    let out = w.bridge.call_with_env(caller, 0, &update_call, &env).unwrap();
    assert_eq!(out.logs[0].data, caller.to_word().to_vec());
    let key = tx_hash("side-tx", 2);
    assert!(w.bridge.pegout(&key).is_some());
    env.number = 70;
    w.bridge.call_with_env(caller, 0, &update_call, &env).unwrap();
    assert_eq!(w.bridge.pegouts_waiting_for_signatures().count(), 1);

    // Signatures as DER through calldata; the fifth releases.
    let p = w.bridge.pegout(&key).unwrap().clone();
    let mut raw = None;
    for i in 0..5 {
        let call = encode_call(&BridgeCall::AddSignature {
            federator_public_key: w.fed.members()[i].serialize().to_vec(),
            signatures: sign(&w, &p, i).iter().map(|s| s.serialize_der().to_vec()).collect(),
            rsk_tx_hash: key,
        });
        let out = w.bridge.call(member(&w, i), 0, &call).unwrap();
        assert_eq!(out.logs[0].topics[0], event_topic(ADD_SIGNATURE_SIGNATURE));
        raw = out.logs.iter().find(|l| l.topics[0] == event_topic(RELEASE_BTC_SIGNATURE)).cloned();
        assert_eq!(raw.is_some(), i == 4);
    }
    let raw = raw.unwrap();
    let len = u128::from_be_bytes(raw.data[48..64].try_into().unwrap()) as usize;
    let tx: Transaction = deserialize(&raw.data[64..64 + len]).unwrap();
    assert_core_accepts(&w, &tx, &p.inputs);
    w.assert_conservation();
}

#[test]
fn the_fee_estimate_is_the_fee_of_the_next_batch_with_one_more_request() {
    let mut w = World::new(big_cap(PegParams::rootstock_mainnet()));
    fund(&mut w, &[3 * BTC, 4 * BTC]);
    // Nothing to build from: the size-based fallback.
    let empty = World::new(PegParams::rootstock_mainnet());
    let fallback = empty.bridge.get_estimated_fees_for_next_pegout_event();
    assert_eq!(fallback.to_sat(), 500_000 * pegout::pegout_tx_size(&empty.fed, 2, 2) / 1000);

    let users: Vec<User> = (0..3).map(|i| User::new(&w.secp, i)).collect();
    for (i, u) in users.iter().enumerate() {
        request(&mut w, u, (i as u64 + 1) * BTC / 2, i as u64);
    }
    let estimate = w.bridge.get_estimated_fees_for_next_pegout_event();
    // One more request of 1 BTC (a P2PKH like the simulated one).
    let ninth = User::new(&w.secp, 9);
    request(&mut w, &ninth, BTC, 9);
    let key = created(&update(&mut w, 1))[0];
    assert_eq!(w.bridge.pegout(&key).unwrap().fee, estimate);
}

#[test]
fn dust_change_is_raised_from_the_first_recipient_and_burned_on_the_sidechain() {
    let mut w = World::new(PegParams::rootstock_mainnet());
    let utxo = fund(&mut w, &[BTC])[0];
    let user = User::new(&w.secp, 1);
    // Leaves 100 sat of change: below the 540 sat dust of a P2SH output.
    request(&mut w, &user, BTC - 100, 1);
    let balance = w.bridge.bridge_balance_wei();
    let fx = update(&mut w, 1);
    let p = w.bridge.pegout(&created(&fx)[0]).unwrap();
    let dust = w.fed.script_pubkey().minimal_non_dust();
    assert_eq!(dust, Amount::from_sat(540));
    assert_eq!(p.tx.output[1].value, dust);
    let raise = dust.to_sat() - 100;
    assert_eq!(p.tx.output[0].value.to_sat(), BTC - 100 - p.fee.to_sat() - raise);
    assert_eq!(p.total_in(), utxo.value);
    assert_eq!(fx.credits, vec![(pegout::BURN_ADDRESS, sat_to_wei(raise))]);
    assert_eq!(w.bridge.bridge_balance_wei(), balance - sat_to_wei(raise));
    assert_eq!(w.bridge.burned().to_sat(), raise);
    w.assert_conservation();
}

#[test]
fn refunds_of_rejected_pegins_go_through_the_same_queue() {
    let params = PegParams { pegout_confirmations: 10, ..PegParams::rootstock_mainnet() };
    let mut w = World::new(params);
    let user = User::new(&w.secp, 3);
    let tx = w.pegin(&user, Lock::P2shMultisig, vec![w.to_fed(2 * BTC)]);
    w.mine();
    let (h, _) = w.height_of_tx(tx.compute_txid());
    w.confirm(h, 100);
    let reg = w.register(&tx).unwrap();
    assert!(matches!(reg.outcome, PeginOutcome::Refunded { .. }));
    assert_eq!(w.bridge.refunds().count(), 1);
    let fx = update(&mut w, 5);
    assert_eq!(w.bridge.refunds().count(), 0);
    let key = created(&fx)[0];
    let p = w.bridge.pegout(&key).unwrap().clone();
    assert!(matches!(p.kind, PegoutKind::Refund { pegin_txid, .. } if pegin_txid == tx.compute_txid()));
    assert_eq!(p.tx.output.len(), 1);
    assert_eq!(p.tx.output[0].script_pubkey, user.script(&w.secp, Lock::P2shMultisig));
    assert_eq!(p.tx.output[0].value + p.fee, Amount::from_sat(2 * BTC));
    assert_eq!(p.fee.to_sat(), 500_000 * pegout::estimated_vsize(&w.fed, &p.tx) / 1000);
    update(&mut w, 15);
    for i in 0..5 {
        add_sig(&mut w, &key, i).unwrap();
    }
    let PegoutStatus::Released { signed_txid, .. } = w.bridge.pegout(&key).unwrap().status else { panic!() };
    assert_eq!(signed_txid, p.btc_txid);
    w.assert_conservation();
}

/// A legacy P2SH-ERP federation: the unsigned txid differs from the signed
/// one, and the registration still finds the peg-out.
#[test]
fn legacy_p2sh_erp_pegouts_are_signed_and_registered_back() {
    let params = PegParams {
        pegout_confirmations: 10,
        pegout_change_on_release: true,
        ..PegParams::rootstock_mainnet()
    };
    let mut w = World::new(params.clone());
    let (fed, _, _) = federation_9(&w.secp, params.erp_csv, ScriptForm::P2shErp);
    let btc = ChainParams::regtest_fast();
    w.bridge =
        BridgeState::new(params, btc.clone(), Checkpoint::genesis(&btc).unwrap(), fed.clone()).unwrap();
    w.fed = fed;
    fund(&mut w, &[3 * BTC]);
    let user = User::new(&w.secp, 1);
    request(&mut w, &user, BTC, 1);
    let key = created(&update(&mut w, 1))[0];
    update(&mut w, 11);
    let p = w.bridge.pegout(&key).unwrap().clone();
    let mut fx = None;
    for i in [1, 3, 5, 7, 8] {
        fx = Some(add_sig(&mut w, &key, i).unwrap());
    }
    let tx = released(&fx.unwrap()).unwrap();
    assert_core_accepts(&w, &tx, &p.inputs);
    assert_ne!(tx.compute_txid(), p.btc_txid);
    // Change on release: the change is selectable at once.
    let change_op = OutPoint::new(tx.compute_txid(), 1);
    assert_eq!(w.bridge.utxos().find(|u| u.outpoint == change_op).unwrap().height, 0);
    w.assert_conservation();
    w.pending.push(tx.clone());
    w.mine();
    let (h, _) = w.height_of_tx(tx.compute_txid());
    w.confirm(h, 100);
    let reg = w.register(&tx).unwrap();
    assert_eq!(reg.outcome, PeginOutcome::Pegout { rsk_tx_hash: key, change: Some(tx.output[1].value) });
    assert_eq!(w.bridge.utxos().find(|u| u.outpoint == change_op).unwrap().height, h);
    w.assert_conservation();
}

#[test]
fn unreleased_or_conflicting_spends_are_not_registered() {
    let params = PegParams { pegout_confirmations: 10, ..PegParams::rootstock_mainnet() };
    let mut w = World::new(params);
    let key = pegout_waiting_for_signatures(&mut w);
    let p = w.bridge.pegout(&key).unwrap().clone();
    // Sign it outside the Bridge (as if the signatures leaked) and mine it.
    let mut tx = p.tx.clone();
    for k in 0..tx.input.len() {
        let sigs: Vec<_> = (0..5)
            .map(|i| {
                (
                    w.fed.members()[i],
                    w.fed.sign_input(&w.secp, &p.tx, k, p.inputs[k].value, &w.fed_sks[i]).unwrap(),
                )
            })
            .collect();
        w.fed.apply_signatures(&mut tx, k, fika_peg::SpendBranch::Normal, &sigs).unwrap();
    }
    w.pending.push(tx.clone());
    w.mine();
    let (h, _) = w.height_of_tx(tx.compute_txid());
    w.confirm(h, 100);
    assert!(
        matches!(w.register(&tx), Err(fika_peg::RegisterError::PegoutNotReleased { rsk_tx_hash, .. }) if rsk_tx_hash == key)
    );
    w.assert_conservation();
}

mod lifecycle {
    //! Conservation through request → batch → confirmations → signatures →
    //! release → Bitcoin → registration, with random requests.

    use super::*;
    use proptest::prelude::*;

    #[derive(Clone, Debug)]
    enum Op {
        Request { user: u8, sat: u64, extra_wei: u64, contract: bool },
        Advance { blocks: u64 },
        Sign { signers: Vec<u8> },
        MineAndRegister,
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            4 => (any::<u8>(), prop_oneof![
                    1 => 0u64..400_000,
                    1 => 400_000u64..800_000,
                    4 => 800_000u64..(2 * BTC),
                ], 0u64..10_000_000_000, proptest::bool::weighted(0.1))
                .prop_map(|(user, sat, extra_wei, contract)| Op::Request { user, sat, extra_wei, contract }),
            3 => (1u64..30).prop_map(|blocks| Op::Advance { blocks }),
            2 => proptest::collection::vec(0u8..9, 1..7).prop_map(|signers| Op::Sign { signers }),
            1 => Just(Op::MineAndRegister),
        ]
    }

    struct Run {
        w: World,
        block: u64,
        tag: u64,
        released: Vec<Transaction>,
        accepted_sat: u64,
    }

    impl Run {
        fn apply(&mut self, op: &Op) {
            match op {
                Op::Request { user, sat, extra_wei, contract } => {
                    let u = User::new(&self.w.secp, u32::from(*user % 16));
                    let origin = TxOrigin::signer(u.pk, tx_hash("lifecycle", self.tag));
                    self.tag += 1;
                    let caller = if *contract { SideAddress([0xcc; 20]) } else { u.side_address() };
                    let value = sat_to_wei(*sat) + u128::from(*extra_wei);
                    let balance = self.w.bridge.bridge_balance_wei();
                    if balance + value > sat_to_wei(21_000_000 * BTC) {
                        // More RBTC than is in circulation: no sidechain
                        // could carry this call.
                        let digest = self.w.bridge.digest();
                        assert_eq!(
                            self.w.bridge.release_btc(caller, value, &origin),
                            Err(BridgeError::ValueTooLarge { value })
                        );
                        assert_eq!(self.w.bridge.digest(), digest);
                        return;
                    }
                    let fx = self.w.bridge.release_btc(caller, value, &origin).unwrap();
                    match &fx.events[0] {
                        BridgeEvent::ReleaseRequestReceived { .. } => {
                            assert!(!contract);
                            assert!(*sat >= self.w.bridge.minimum_pegout().0.to_sat());
                            assert_eq!(self.w.bridge.bridge_balance_wei(), balance + value);
                            self.accepted_sat += sat;
                        }
                        BridgeEvent::ReleaseRequestRejected { .. } => {
                            if value > 0 {
                                assert_eq!(fx.credits, vec![(caller, value)]);
                            }
                            assert_eq!(self.w.bridge.bridge_balance_wei(), balance);
                        }
                        other => panic!("{other:?}"),
                    }
                }
                Op::Advance { blocks } => {
                    self.block += blocks;
                    let fx = self.w.bridge.update_collections(self.block, self.w.pegnatory(), None);
                    // Burns leave the Bridge only for dust changes.
                    for (to, _) in &fx.credits {
                        assert_eq!(*to, pegout::BURN_ADDRESS);
                    }
                }
                Op::Sign { signers } => {
                    let keys: Vec<[u8; 32]> =
                        self.w.bridge.pegouts_waiting_for_signatures().map(|p| p.rsk_tx_hash).collect();
                    for key in keys {
                        for s in signers {
                            let i = usize::from(*s);
                            match add_sig(&mut self.w, &key, i) {
                                Ok(fx) => {
                                    if let Some(tx) = released(&fx) {
                                        let p = self.w.bridge.pegout(&key).unwrap().clone();
                                        assert_core_accepts(&self.w, &tx, &p.inputs);
                                        self.released.push(tx);
                                    }
                                }
                                Err(AddSignatureError::AlreadySigned(_))
                                | Err(AddSignatureError::NotWaitingForSignatures(_)) => {}
                                Err(e) => panic!("{e}"),
                            }
                        }
                    }
                }
                Op::MineAndRegister => {
                    if self.released.is_empty() {
                        return;
                    }
                    let txs = std::mem::take(&mut self.released);
                    self.w.pending.extend(txs.iter().cloned());
                    self.w.mine();
                    let h = self.w.tip_height();
                    let confs = self.w.bridge.params().pegin_confirmations;
                    self.w.confirm(h, confs);
                    for tx in &txs {
                        let reg = self.w.register(tx).unwrap();
                        assert!(matches!(reg.outcome, PeginOutcome::Pegout { .. }), "{:?}", reg.outcome);
                    }
                }
            }
            self.w.assert_conservation();
        }

        /// Drives every peg-out to the end.
        fn finish(&mut self) {
            for _ in 0..200 {
                let queued: Amount = self.w.bridge.pegout_requests().map(|r| r.amount).sum();
                if self.w.bridge.pegouts().next().is_none()
                    && self.released.is_empty()
                    && (queued == Amount::ZERO || self.w.bridge.federation_balance() < queued)
                {
                    break;
                }
                self.apply(&Op::Advance { blocks: 25 });
                self.apply(&Op::Sign { signers: (0..9).collect() });
                self.apply(&Op::MineAndRegister);
            }
        }
    }

    fn run(ops: Vec<Op>, funds: Vec<u64>, change_on_release: bool, fee_per_kb: u64) {
        let params = PegParams {
            pegout_change_on_release: change_on_release,
            fee_per_kb_sat: fee_per_kb,
            ..PegParams::rootstock_regtest()
        };
        let mut w = World::new(params);
        fund(&mut w, &funds);
        // One rejected, refunded peg-in joins the queue too.
        let u = User::new(&w.secp, 999);
        let refund = w.pegin(&u, Lock::P2shMultisig, vec![w.to_fed(BTC)]);
        w.mine();
        let h = w.tip_height();
        w.confirm(h, 6);
        assert!(matches!(w.register(&refund).unwrap().outcome, PeginOutcome::Refunded { .. }));
        let mut r = Run { w, block: 1, tag: 0, released: Vec::new(), accepted_sat: 0 };
        for op in &ops {
            r.apply(op);
        }
        r.finish();
        let b = &r.w.bridge;
        assert_eq!(b.pegged_out().to_sat(), r.accepted_sat);
        if b.get_queued_pegouts_count() == 0 {
            assert!(b.pegouts().next().is_none(), "every peg-out finished");
            // Everything minted is at the federation again.
            let minted = b.pegged_in().to_sat() + b.burned().to_sat() - b.pegged_out().to_sat();
            assert_eq!(b.federation_balance().to_sat(), minted);
        }
        r.w.assert_conservation();
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(12))]

        #[test]
        fn conservation_holds_through_the_whole_pegout_lifecycle(
            ops in proptest::collection::vec(op(), 1..40),
            funds in proptest::collection::vec(BTC..5 * BTC, 1..4),
            change_on_release in any::<bool>(),
            fee_per_kb in prop_oneof![Just(100_000u64), Just(500_000u64)],
        ) {
            run(ops, funds, change_on_release, fee_per_kb);
        }
    }
}
