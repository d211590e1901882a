//! Federation change end to end on the Bridge: authorised votes, the commit
//! and its event, the activation delay, peg-ins to the retiring address
//! during the migration window, migrations signed by the retiring members
//! and accepted by Bitcoin Core's script engine and a fully validating
//! chain, the end-of-window sweep, and the retiring federation's removal —
//! with the conservation law checked at every step.

#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::consensus::deserialize;
use bitcoin::secp256k1::PublicKey;
use bitcoin::secp256k1::ecdsa::Signature;
use bitcoin::{Amount, OutPoint, Transaction, TxOut};
use fika_btc::ChainParams;
use fika_btc::validate::verify_scripts;
use fika_peg::abi::{
    self, BridgeCall, COMMIT_FEDERATION_SIGNATURE, encode_call, event_log, event_topic, word_i64,
};
use fika_peg::bridge::{BridgeEvent, PeginOutcome};
use fika_peg::fedchange::{FederationChangeVote, GENERIC_ERROR, PendingMember};
use fika_peg::pegout::{AddSignatureError, Effects, Pegout, PegoutKind, PegoutStatus, TxOrigin};
use fika_peg::side::{keccak256, sat_to_wei};
use fika_peg::{Federation, PegParams, RegisterError, SideAddress};
use fika_side::BlockEnvInfo;

use common::{Lock, User, World, public, secret};

const BTC: u64 = 100_000_000;

fn params() -> PegParams {
    PegParams {
        pegout_confirmations: 10,
        federation_activation_delay_blocks: 40,
        migration_window_blocks: 20,
        pegin_confirmations: 6,
        initial_locking_cap_sat: 1_000 * BTC,
        ..PegParams::rootstock_regtest()
    }
}

fn authorizer(w: &World, i: u32) -> SideAddress {
    SideAddress::from_public_key(&public(&w.secp, &secret("authorizer", i)))
}

/// A world whose Bridge has three federation-change authorisers.
fn world() -> World {
    let mut w = World::new(params());
    let auth: Vec<SideAddress> = (0..3).map(|i| authorizer(&w, i)).collect();
    w.bridge = w.bridge.clone().with_federation_change_authorizers(auth);
    w
}

fn vote(w: &mut World, who: u32, block: u64, v: FederationChangeVote) -> (i64, Effects) {
    w.bridge.begin_block(block);
    let caller = authorizer(w, who);
    let out = w.bridge.vote_federation_change(caller, v);
    w.assert_conservation();
    out
}

fn tx_hash(tag: &str, i: u64) -> [u8; 32] {
    let mut d = tag.as_bytes().to_vec();
    d.extend_from_slice(&i.to_be_bytes());
    keccak256(&d)
}

fn update(w: &mut World, block: u64) -> Effects {
    let caller = SideAddress([0x77; 20]);
    let fx = w.bridge.update_collections(block, caller, Some(tx_hash("update", block)));
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

/// Pegs `sat` in to `script` (a P2PKH peg-in), confirms it and registers it.
#[track_caller]
fn pegin_to(
    w: &mut World,
    user: u32,
    script: &bitcoin::ScriptBuf,
    sat: u64,
) -> Result<Transaction, RegisterError> {
    let u = User::new(&w.secp, user);
    let tx =
        w.pegin(&u, Lock::P2pkh, vec![TxOut { value: Amount::from_sat(sat), script_pubkey: script.clone() }]);
    w.mine();
    let h = w.tip_height();
    w.confirm(h, 6);
    let reg = w.register(&tx)?;
    assert!(matches!(reg.outcome, PeginOutcome::Registered { .. }), "{:?}", reg.outcome);
    w.assert_conservation();
    Ok(tx)
}

/// The secret of every member key of `fed` among `sks`, and signs every
/// input of `p` with member `pk`.
fn sign(w: &World, p: &Pegout, sk: &bitcoin::secp256k1::SecretKey) -> Vec<Signature> {
    (0..p.tx.input.len())
        .map(|k| p.federation.sign_input(&w.secp, &p.tx, k, p.inputs[k].value, sk).unwrap().signature)
        .collect()
}

/// Members `sks` sign `key` until released; returns the released transaction.
#[track_caller]
fn sign_until_released(w: &mut World, key: &[u8; 32], sks: &[bitcoin::secp256k1::SecretKey]) -> Transaction {
    for sk in sks {
        let p = w.bridge.pegout(key).unwrap().clone();
        let pk = public(&w.secp, sk);
        let sigs = sign(w, &p, sk);
        let fx = w.bridge.add_signature(SideAddress::from_public_key(&pk), &pk, &sigs, key).unwrap();
        w.assert_conservation();
        if let Some(tx) = fx.events.iter().find_map(|e| match e {
            BridgeEvent::ReleaseBtc { raw_tx, .. } => Some(deserialize::<Transaction>(raw_tx).unwrap()),
            _ => None,
        }) {
            let spent: Vec<TxOut> = p
                .inputs
                .iter()
                .map(|u| TxOut { value: u.value, script_pubkey: p.federation.script_pubkey().clone() })
                .collect();
            verify_scripts(&tx, &spent, &ChainParams::mainnet().script_flags).unwrap();
            return tx;
        }
    }
    panic!("not released");
}

/// Mines `tx` on Bitcoin, confirms and registers it back.
#[track_caller]
fn mine_and_register(w: &mut World, tx: &Transaction) {
    w.pending.push(tx.clone());
    w.mine();
    let h = w.tip_height();
    w.confirm(h, 6);
    let reg = w.register(tx).unwrap();
    assert!(matches!(reg.outcome, PeginOutcome::Pegout { .. }), "{:?}", reg.outcome);
    w.assert_conservation();
}

#[test]
fn votes_commit_activate_migrate_and_retire() {
    let mut w = world();
    let old = w.fed.clone();
    let old_script = old.script_pubkey().clone();
    // The federation holds three peg-ins.
    for (i, sat) in [2 * BTC, 3 * BTC, BTC].into_iter().enumerate() {
        pegin_to(&mut w, 100 + i as u32, &old_script, sat).unwrap();
    }
    assert_eq!(w.bridge.federation_balance().to_sat(), 6 * BTC);
    // A peg-out requested and batched before the change (old federation).
    let alice = User::new(&w.secp, 1);
    let origin = TxOrigin::signer(alice.pk, tx_hash("request", 1));
    w.bridge.begin_block(5);
    w.bridge.release_btc(alice.side_address(), sat_to_wei(BTC / 2), &origin).unwrap();
    let early = created(&update(&mut w, 5));
    assert_eq!(early.len(), 1, "the request is batched by the old federation");

    // --- votes ---
    // Members 0..4 stay, two new keys join: 5 members, threshold 3.
    let new_sks: Vec<_> =
        w.fed_sks[..3].iter().copied().chain((0..2).map(|i| secret("newmember", i))).collect();
    let new_keys: Vec<PublicKey> = new_sks.iter().map(|sk| public(&w.secp, sk)).collect();
    let add = |k: &PublicKey| FederationChangeVote::Add(PendingMember::single(*k));
    // Not an authoriser.
    w.bridge.begin_block(6);
    assert_eq!(
        w.bridge.vote_federation_change(SideAddress([9; 20]), FederationChangeVote::Create).0,
        GENERIC_ERROR
    );
    // Nothing to add to or commit yet.
    assert_eq!(vote(&mut w, 0, 6, add(&new_keys[0])).0, -1);
    assert_eq!(vote(&mut w, 0, 6, FederationChangeVote::Commit([0; 32])).0, -1);
    // One vote is recorded, not executed; a repeated vote is refused.
    assert_eq!(vote(&mut w, 0, 6, FederationChangeVote::Create).0, 1);
    assert!(w.bridge.pending_federation().is_none());
    assert_eq!(vote(&mut w, 0, 6, FederationChangeVote::Create).0, GENERIC_ERROR);
    assert_eq!(w.bridge.federation_change_votes(&FederationChangeVote::Create), vec![authorizer(&w, 0)]);
    // The majority (2 of 3) executes it.
    assert_eq!(vote(&mut w, 2, 7, FederationChangeVote::Create).0, 1);
    assert_eq!(w.bridge.pending_federation().map(|p| p.members().len()), Some(0));
    assert_eq!(vote(&mut w, 1, 7, FederationChangeVote::Create).0, -1, "a pending federation exists");
    // Through the precompile too: addFederatorPublicKey by two authorisers.
    for who in [0, 1] {
        let call = BridgeCall::AddFederatorPublicKey { key: new_keys[0].serialize().to_vec() };
        let env = BlockEnvInfo::new(8, 1_000, [0; 20], [0; 32]);
        let out = w.bridge.call_with_env(authorizer(&w, who), 0, &encode_call(&call), &env).unwrap();
        assert_eq!(out.output, word_i64(1).to_vec());
    }
    assert_eq!(w.bridge.pending_federation().unwrap().members().len(), 1);
    // A malformed key is the generic error, without a vote.
    let bad = BridgeCall::AddFederatorPublicKey { key: vec![2; 10] };
    let env = BlockEnvInfo::new(8, 1_000, [0; 20], [0; 32]);
    let out = w.bridge.call_with_env(authorizer(&w, 2), 0, &encode_call(&bad), &env).unwrap();
    assert_eq!(out.output, word_i64(GENERIC_ERROR).to_vec());
    // One member is not enough to commit.
    let hash1 = w.bridge.pending_federation().unwrap().hash();
    assert_eq!(vote(&mut w, 0, 9, FederationChangeVote::Commit(hash1)).0, -2);
    // The rest, each by two authorisers; a key already added is -2.
    for k in &new_keys[1..] {
        assert_eq!(vote(&mut w, 1, 9, add(k)).0, 1);
        assert_eq!(vote(&mut w, 2, 9, add(k)).0, 1);
    }
    assert_eq!(vote(&mut w, 0, 9, add(&new_keys[3])).0, -2);
    let pending = w.bridge.pending_federation().unwrap().clone();
    assert_eq!(pending.members().len(), 5);
    // Commit: a wrong hash is -3; the right one, by a majority, commits.
    assert_eq!(vote(&mut w, 0, 10, FederationChangeVote::Commit([7; 32])).0, -3);
    assert_eq!(vote(&mut w, 0, 10, FederationChangeVote::Commit(pending.hash())).0, 1);
    let (code, fx) = vote(&mut w, 1, 10, FederationChangeVote::Commit(pending.hash()));
    assert_eq!(code, 1);
    let commit_block = 10;
    let new = Federation::p2sh_p2wsh_erp(&new_keys, old.emergency(), old.csv()).unwrap();
    let new_script = new.script_pubkey().clone();
    assert_eq!(w.bridge.proposed_federation(), Some((&new, commit_block)));
    assert!(w.bridge.pending_federation().is_none());
    let network = w.bridge.params().btc_network;
    assert_eq!(
        fx.events,
        vec![BridgeEvent::CommitFederation {
            old_keys: old.members().to_vec(),
            old_address: old.address(network).to_string(),
            new_keys: new.members().to_vec(),
            new_address: new.address(network).to_string(),
            activation_height: commit_block + 40,
        }]
    );
    let log = event_log(&fx.events[0]);
    assert_eq!(log.topics, vec![event_topic(COMMIT_FEDERATION_SIGNATURE)]);
    assert_eq!(&log.data[4 * 32..5 * 32], &word_i64(50)[..], "activation height is the fifth word");
    // While a federation awaits activation, no new one can be created.
    assert_eq!(vote(&mut w, 0, 11, FederationChangeVote::Create).0, -2);

    // --- the activation delay ---
    update(&mut w, 49);
    assert_eq!(w.bridge.federation(), &old, "still the old federation one block before activation");
    assert!(w.bridge.retiring_federation().is_none());
    // A peg-in to the new address before activation is not a peg-in.
    assert!(matches!(pegin_to(&mut w, 200, &new_script, BTC), Err(RegisterError::NotAPegin(_))));
    // The old batch is confirmed and waits for the old members.
    let fx = update(&mut w, 50);
    assert_eq!(w.bridge.federation(), &new, "active from commit block + delay");
    assert_eq!(w.bridge.retiring_federation(), Some(&old));
    assert_eq!(w.bridge.get_federation_creation_block_number(), commit_block);
    assert_eq!(w.bridge.get_federation_address(), new.address(network));
    assert!(created(&fx).is_empty(), "age 40 is not yet in the window (it starts after the delay)");
    assert_eq!(w.bridge.utxo_count(), 0);
    let retiring_before = w.bridge.retiring_balance();
    let early_in = w.bridge.pegout(&early[0]).unwrap().total_in();
    assert_eq!(retiring_before.to_sat(), 6 * BTC - early_in.to_sat(), "less the coin the early batch spends");

    // --- the window: a peg-in to the old address still counts ---
    let late = pegin_to(&mut w, 201, &old_script, 2 * BTC).unwrap();
    assert!(w.bridge.retiring_utxos().any(|u| u.outpoint.txid == late.compute_txid()));
    assert_eq!(w.bridge.retiring_pegins(), 1);
    let fx = update(&mut w, 51);
    let keys = created(&fx);
    assert_eq!(keys, vec![tx_hash("update", 51)]);
    let m = w.bridge.pegout(&keys[0]).unwrap().clone();
    assert_eq!(m.kind, PegoutKind::Migration);
    assert_eq!(*m.federation, old, "the retiring federation spends its own coins");
    assert_eq!(m.tx.output.len(), 1);
    assert_eq!(m.tx.output[0].script_pubkey, new_script);
    assert_eq!(m.total_in(), retiring_before + Amount::from_sat(2 * BTC), "every retiring coin at once");
    assert_eq!(m.tx.output[0].value + m.fee, m.total_in());
    assert_eq!(w.bridge.retiring_balance(), Amount::ZERO);
    assert_eq!(w.bridge.migration_fees(), m.fee);

    // The old batch and the migration are signed by the old members only.
    let early_key = early[0];
    assert!(matches!(w.bridge.pegout(&early_key).unwrap().status, PegoutStatus::WaitingForSignatures { .. }));
    let newcomer = public(&w.secp, &new_sks[4]);
    let p = w.bridge.pegout(&early_key).unwrap().clone();
    let sigs: Vec<Signature> = (0..p.tx.input.len())
        .map(|k| new.sign_input(&w.secp, &p.tx, k, p.inputs[k].value, &new_sks[4]).unwrap().signature)
        .collect();
    assert_eq!(
        w.bridge.add_signature(SideAddress::from_public_key(&newcomer), &newcomer, &sigs, &early_key),
        Err(AddSignatureError::NotAMember(newcomer)),
        "a newcomer (a member of the active federation) cannot sign the old federation's peg-out"
    );
    let old_sks = w.fed_sks.clone();
    let early_tx = sign_until_released(&mut w, &early_key, &old_sks[4..]);
    update(&mut w, 61);
    assert!(matches!(w.bridge.pegout(&keys[0]).unwrap().status, PegoutStatus::WaitingForSignatures { .. }));
    let migration_tx = sign_until_released(&mut w, &keys[0], &old_sks[4..]);
    // The early batch's change goes to the old address: registered back, it
    // joins the retiring federation and is migrated in turn.
    mine_and_register(&mut w, &early_tx);
    let change = w.bridge.retiring_balance();
    assert!(change.to_sat() > w.bridge.params().minimum_funds_to_migrate_sat);
    mine_and_register(&mut w, &migration_tx);
    assert_eq!(
        w.bridge.federation_balance(),
        m.tx.output[0].value,
        "the migrated coin is the new federation's"
    );
    let second = created(&update(&mut w, 62));
    assert_eq!(second.len(), 1);
    assert_eq!(w.bridge.pegout(&second[0]).unwrap().total_in(), change);
    // A small peg-in to the old address late in the window: below the
    // minimum to migrate, it waits for the end-of-window sweep.
    pegin_to(&mut w, 203, &old_script, 600_000).unwrap();
    assert!(created(&update(&mut w, 65)).is_empty());
    let sweep = created(&update(&mut w, 70));
    assert_eq!(sweep.len(), 1, "past the window everything is swept");
    assert_eq!(w.bridge.pegout(&sweep[0]).unwrap().kind, PegoutKind::Migration);
    assert_eq!(w.bridge.pegout(&sweep[0]).unwrap().total_in().to_sat(), 600_000);
    update(&mut w, 72);
    let second_tx = sign_until_released(&mut w, &second[0], &old_sks[..5]);
    assert!(w.bridge.retiring_federation().is_some(), "it must still sign its sweep");
    update(&mut w, 80);
    let sweep_tx = sign_until_released(&mut w, &sweep[0], &old_sks[..5]);
    let fx = update(&mut w, 81);
    assert!(created(&fx).is_empty());
    assert!(w.bridge.retiring_federation().is_none(), "gone once its last migration is released");
    mine_and_register(&mut w, &second_tx);
    // A peg-in to the old address is no longer a peg-in.
    assert!(matches!(pegin_to(&mut w, 202, &old_script, BTC), Err(RegisterError::NotAPegin(_))));
    mine_and_register(&mut w, &sweep_tx);
    update(&mut w, 90);
    // Everything minted is at the new federation, less what migrations paid.
    let b = &w.bridge;
    let minted = b.pegged_in().to_sat() + b.burned().to_sat() - b.pegged_out().to_sat();
    assert_eq!(b.federation_balance().to_sat() + b.migration_fees().to_sat(), minted);
    assert!(b.pegouts().next().is_none());
    assert_eq!(b.federation_activations(), 1);
}

#[test]
fn rollback_drops_the_pending_federation_and_bad_commits_change_nothing() {
    let mut w = world();
    assert_eq!(vote(&mut w, 0, 1, FederationChangeVote::Rollback).0, -1);
    vote(&mut w, 0, 1, FederationChangeVote::Create);
    vote(&mut w, 1, 1, FederationChangeVote::Create);
    let k = public(&w.secp, &secret("newmember", 9));
    let multikey = PendingMember { btc: k, rsk: public(&w.secp, &secret("rsk", 9)), mst: k };
    vote(&mut w, 0, 2, FederationChangeVote::Add(multikey));
    vote(&mut w, 2, 2, FederationChangeVote::Add(multikey));
    // The same sidechain key under another Bitcoin key is a duplicate.
    let dup =
        PendingMember { btc: public(&w.secp, &secret("other", 1)), rsk: multikey.rsk, mst: multikey.rsk };
    assert_eq!(vote(&mut w, 0, 2, FederationChangeVote::Add(dup)).0, -2);
    let digest = w.bridge.digest();
    assert_eq!(vote(&mut w, 0, 3, FederationChangeVote::Rollback).0, 1);
    assert_ne!(w.bridge.digest(), digest, "the vote is recorded");
    assert!(w.bridge.pending_federation().is_some());
    assert_eq!(vote(&mut w, 1, 3, FederationChangeVote::Rollback).0, 1);
    assert!(w.bridge.pending_federation().is_none());
    assert!(w.bridge.federation_change_votes(&FederationChangeVote::Rollback).is_empty());
    // Getters through the precompile.
    let env = BlockEnvInfo::new(4, 1_000, [0; 20], [0; 32]);
    let get = |w: &mut World, c: BridgeCall| {
        w.bridge.call_with_env(SideAddress([1; 20]), 0, &encode_call(&c), &env).unwrap().output
    };
    assert_eq!(get(&mut w, BridgeCall::GetPendingFederationSize), word_i64(-1).to_vec());
    assert_eq!(get(&mut w, BridgeCall::GetRetiringFederationSize), word_i64(-1).to_vec());
    assert_eq!(get(&mut w, BridgeCall::GetPendingFederationHash), abi::encode_bytes(&[]));
    assert_eq!(get(&mut w, BridgeCall::GetRetiringFederationAddress), abi::encode_bytes(&[]));
    assert_eq!(get(&mut w, BridgeCall::GetFederationCreationBlockNumber), word_i64(0).to_vec());
}

#[test]
fn a_multikey_member_is_authorised_by_its_sidechain_key() {
    let mut w = world();
    let secp = w.secp.clone();
    let btc_sk = secret("newmember", 1);
    let rsk_sk = secret("rsk", 1);
    let member = PendingMember {
        btc: public(&secp, &btc_sk),
        rsk: public(&secp, &rsk_sk),
        mst: public(&secp, &secret("mst", 1)),
    };
    let other = PendingMember::single(public(&secp, &secret("newmember", 2)));
    for who in [0, 1] {
        vote(&mut w, who, 1, FederationChangeVote::Create);
    }
    for m in [member, other] {
        for who in [0, 1] {
            // Through the multikey method.
            let call = BridgeCall::AddFederatorPublicKeyMultikey {
                btc_key: m.btc.serialize().to_vec(),
                rsk_key: m.rsk.serialize().to_vec(),
                mst_key: m.mst.serialize().to_vec(),
            };
            let env = BlockEnvInfo::new(2, 1_000, [0; 20], [0; 32]);
            let out = w.bridge.call_with_env(authorizer(&w, who), 0, &encode_call(&call), &env).unwrap();
            assert_eq!(out.output, word_i64(1).to_vec());
        }
    }
    let hash = w.bridge.pending_federation().unwrap().hash();
    // The hash is keccak-256 of the RLP list of the canonical BTC keys.
    let mut keys = vec![member.btc, other.btc];
    keys.sort_by_key(|k| k.serialize());
    let mut payload = Vec::new();
    for k in keys {
        fika_side::rlp::encode_bytes(&mut payload, &k.serialize());
    }
    assert_eq!(hash, keccak256(&fika_side::rlp::list(&payload)));
    for who in [0, 1] {
        let call = BridgeCall::CommitFederation { hash: hash.to_vec() };
        let env = BlockEnvInfo::new(3, 1_000, [0; 20], [0; 32]);
        let out = w.bridge.call_with_env(authorizer(&w, who), 0, &encode_call(&call), &env).unwrap();
        assert_eq!(out.output, word_i64(1).to_vec());
        if who == 1 {
            assert_eq!(out.logs.len(), 1, "commit_federation");
        }
    }
    w.bridge.begin_block(3 + 40);
    assert!(w.bridge.is_federation_member(&SideAddress::from_public_key(&member.rsk)));
    assert!(
        !w.bridge.federation().has_member_address(&SideAddress::from_public_key(&member.btc)),
        "the Bitcoin key's address is not the member's sidechain identity"
    );
    // The old members are still members (of the retiring federation).
    assert!(w.bridge.is_federation_member(&w.pegnatory()));
    assert_eq!(w.bridge.retiring_federation(), Some(&w.fed));
    let out = w
        .bridge
        .call_with_env(
            SideAddress([1; 20]),
            0,
            &encode_call(&BridgeCall::GetRetiringFederationSize),
            &BlockEnvInfo::new(43, 1, [0; 20], [0; 32]),
        )
        .unwrap();
    assert_eq!(out.output, word_i64(9).to_vec());
    // With nothing to migrate, it retires at the end of the window.
    update(&mut w, 3 + 40 + 20);
    assert!(w.bridge.retiring_federation().is_none());
    let _ = OutPoint::null();
}
