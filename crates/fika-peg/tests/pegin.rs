//! Peg-ins end to end: real Bitcoin transactions in real blocks (validated
//! by fika-btc), headers fed to the Bridge by a pegnatory, registration with
//! partial merkle trees.

#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::consensus::serialize;
use bitcoin::{Amount, ScriptBuf, Transaction, TxOut};
use fika_peg::bridge::{BridgeEvent, PeginOutcome, RejectedPeginReason, UnrefundablePeginReason};
use fika_peg::pegin::{RefundType, hash160_of, pegin_v1_script};
use fika_peg::side::sat_to_wei;
use fika_peg::{BridgeError, PegParams, RegisterError, SideAddress};

use common::{Lock, User, World};

const BTC: u64 = 100_000_000;

fn mainnet() -> PegParams {
    PegParams::rootstock_mainnet()
}

/// Mines `tx` (pending), then 100 confirmations, and syncs the Bridge.
#[track_caller]
fn mine_and_confirm(w: &mut World, tx: &Transaction) -> u32 {
    w.mine();
    let (height, _) = w.height_of_tx(tx.compute_txid());
    w.confirm(height, 100);
    height
}

#[track_caller]
fn expect_registered(w: &mut World, tx: &Transaction) -> (SideAddress, Amount, u8) {
    let reg = w.register(tx).unwrap_or_else(|e| panic!("registration refused: {e}"));
    match reg.outcome {
        PeginOutcome::Registered { receiver, amount, protocol_version } => {
            assert_eq!(reg.credits, vec![(receiver, sat_to_wei(amount.to_sat()))]);
            assert_eq!(
                reg.events,
                vec![BridgeEvent::PeginBtc {
                    receiver,
                    btc_txid: tx.compute_txid(),
                    amount,
                    protocol_version
                }]
            );
            w.assert_conservation();
            (receiver, amount, protocol_version)
        }
        other => panic!("expected a credited peg-in, got {other:?}"),
    }
}

#[test]
fn valid_pegin_credits_the_derived_address_exactly_once() {
    let mut w = World::new(mainnet());
    let user = User::new(&w.secp, 1);
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(BTC)]);
    let height = mine_and_confirm(&mut w, &tx);
    let before = w.bridge.bridge_balance_wei();

    let (receiver, amount, version) = expect_registered(&mut w, &tx);
    assert_eq!(receiver, user.side_address());
    assert_eq!((amount, version), (Amount::from_sat(BTC), 0));
    assert_eq!(w.bridge.bridge_balance_wei(), before - sat_to_wei(BTC));
    assert_eq!(w.bridge.locked(), Amount::from_sat(BTC));
    let utxos: Vec<_> = w.bridge.utxos().copied().collect();
    assert_eq!(utxos.len(), 1);
    assert_eq!(
        (utxos[0].outpoint.txid, utxos[0].value, utxos[0].height),
        (tx.compute_txid(), amount, height)
    );

    // Re-registration is refused and changes nothing.
    let digest = w.bridge.digest();
    let err = w.register(&tx).unwrap_err();
    assert!(
        matches!(err, RegisterError::AlreadyProcessed { txid, .. } if txid == tx.compute_txid()),
        "{err}"
    );
    assert_eq!(w.bridge.digest(), digest);
    // Even much later.
    w.mine_n(5);
    w.sync_bridge();
    assert!(matches!(w.register(&tx), Err(RegisterError::AlreadyProcessed { .. })));
    assert_eq!(w.bridge.pegged_in(), Amount::from_sat(BTC));
    w.assert_conservation();
}

#[test]
fn segwit_senders_credit_the_key_of_their_witness() {
    // P2SH-P2WPKH is a Rootstock sender kind.
    let mut w = World::new(mainnet());
    let user = User::new(&w.secp, 2);
    let tx = w.pegin(&user, Lock::P2shP2wpkh, vec![w.to_fed(BTC)]);
    mine_and_confirm(&mut w, &tx);
    let (receiver, _, _) = expect_registered(&mut w, &tx);
    assert_eq!(receiver, user.side_address());

    // Native P2WPKH is not, on mainnet: the sender is undetermined, no refund.
    let other = User::new(&w.secp, 3);
    let tx = w.pegin(&other, Lock::P2wpkh, vec![w.to_fed(BTC)]);
    mine_and_confirm(&mut w, &tx);
    let reg = w.register(&tx).unwrap();
    assert_eq!(
        reg.outcome,
        PeginOutcome::Rejected {
            reason: RejectedPeginReason::LegacyPeginUndeterminedSender,
            unrefundable: UnrefundablePeginReason::LegacyPeginUndeterminedSender,
            amount: Amount::from_sat(BTC),
        }
    );
    assert!(reg.credits.is_empty());
    w.assert_conservation();

    // With the parameter on, it credits the witness key's address.
    let mut w = World::new(PegParams { native_p2wpkh_sender: true, ..mainnet() });
    let tx = w.pegin(&other, Lock::P2wpkh, vec![w.to_fed(BTC)]);
    mine_and_confirm(&mut w, &tx);
    let (receiver, _, _) = expect_registered(&mut w, &tx);
    assert_eq!(receiver, other.side_address());
}

#[test]
fn fewer_than_100_confirmations_is_refused() {
    let mut w = World::new(mainnet());
    let user = User::new(&w.secp, 1);
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(2 * BTC)]);
    w.mine();
    let (height, _) = w.height_of_tx(tx.compute_txid());
    w.confirm(height, 99);
    assert_eq!(w.bridge.get_btc_blockchain_best_chain_height() - height + 1, 99);
    let digest = w.bridge.digest();
    let err = w.register(&tx).unwrap_err();
    assert_eq!(
        err,
        RegisterError::NotEnoughConfirmations { height, best_height: height + 98, required: 100 }
    );
    assert_eq!(w.bridge.digest(), digest, "a refused registration changes nothing");
    assert_eq!(w.bridge.processed_at(&tx.compute_txid()), None);
    // A claimed height above the tip has no confirmations at all.
    let (_, block) = w.height_of_tx(tx.compute_txid());
    let pmt = World::pmt(&block, tx.compute_txid());
    let caller = w.pegnatory();
    assert!(matches!(
        w.bridge.register_btc_transaction(caller, &serialize(&tx), height + 500, &pmt),
        Err(RegisterError::NotEnoughConfirmations { .. })
    ));
    // The 100th confirmation makes it valid.
    w.confirm(height, 100);
    expect_registered(&mut w, &tx);
}

#[test]
fn a_proof_against_a_header_off_the_best_chain_is_refused() {
    let mut w = World::new(mainnet());
    let user = User::new(&w.secp, 1);
    // The peg-in is mined only on a side branch the Bridge knows about.
    let fork_parent = w.btc.tip_hash();
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(BTC)]);
    let pending = std::mem::take(&mut w.pending);
    w.mine(); // best-chain block at this height, without the peg-in
    let side = w.mine_on(fork_parent, pending);
    let side_height = w.btc.entry(&side.block_hash()).unwrap().height;
    w.confirm(side_height, 150);
    w.feed(&[side.header]);
    assert!(w.bridge.spv().get(&side.block_hash()).is_some());
    assert!(!w.bridge.spv().is_on_best_chain(&side.block_hash()));

    let pmt = World::pmt(&side, tx.compute_txid());
    let caller = w.pegnatory();
    let err = w.bridge.register_btc_transaction(caller, &serialize(&tx), side_height, &pmt).unwrap_err();
    assert!(
        matches!(err, RegisterError::MerkleRootMismatch { height, .. } if height == side_height),
        "{err}"
    );
    // The proof does not fit any other best-chain block either.
    for h in side_height - 2..=side_height + 2 {
        assert!(w.bridge.register_btc_transaction(caller, &serialize(&tx), h, &pmt).is_err());
    }
    // A proof of a different transaction of the same block does not prove it.
    let other = World::pmt(&side, side.txdata[0].compute_txid());
    assert!(matches!(
        w.bridge.register_btc_transaction(caller, &serialize(&tx), side_height, &other),
        Err(RegisterError::NotInProof(_)) | Err(RegisterError::MerkleRootMismatch { .. })
    ));
    assert_eq!(w.bridge.pegged_in(), Amount::ZERO);
    w.assert_conservation();
}

#[test]
fn a_bitcoin_reorg_that_drops_an_unregistered_pegin_means_it_is_never_credited() {
    let mut w = World::new(mainnet());
    let user = User::new(&w.secp, 1);
    let fork_parent = w.btc.tip_hash();
    let fork_height = w.tip_height();
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(BTC)]);
    w.mine();
    let (height, block) = w.height_of_tx(tx.compute_txid());
    // The Bridge follows the chain holding the peg-in for 60 blocks.
    w.confirm(height, 60);
    assert!(w.bridge.spv().is_on_best_chain(&block.block_hash()));
    // A longer branch without the peg-in appears and the Bridge reorganises.
    let mut parent = fork_parent;
    let mut branch = Vec::new();
    for _ in 0..120 {
        let b = w.mine_on(parent, Vec::new());
        parent = b.block_hash();
        branch.push(b.header);
    }
    assert_eq!(w.btc.tip_hash(), parent, "the Bitcoin chain reorganised");
    let out = w.feed(&branch);
    assert!(out.rejected.is_empty());
    assert_eq!(out.max_reorg_depth, 60);
    assert_eq!(w.bridge.spv().best_hash(), parent);
    assert!(!w.bridge.spv().is_on_best_chain(&block.block_hash()));
    assert_eq!(w.bridge.get_btc_blockchain_best_chain_height(), fork_height + 120);

    // The old proof no longer matches the best chain: never credited.
    let pmt = World::pmt(&block, tx.compute_txid());
    let caller = w.pegnatory();
    let err = w.bridge.register_btc_transaction(caller, &serialize(&tx), height, &pmt).unwrap_err();
    assert!(matches!(err, RegisterError::MerkleRootMismatch { .. }), "{err}");
    w.mine_n(20);
    w.sync_bridge();
    for h in fork_height..=w.tip_height() - 99 {
        assert!(w.bridge.register_btc_transaction(caller, &serialize(&tx), h, &pmt).is_err());
    }
    assert_eq!(w.bridge.processed_at(&tx.compute_txid()), None);
    assert_eq!(w.bridge.pegged_in(), Amount::ZERO);
    assert_eq!(w.bridge.utxo_count(), 0);
    w.assert_conservation();
}

#[test]
fn a_below_minimum_pegin_is_neither_credited_nor_refunded() {
    let mut w = World::new(mainnet());
    let user = User::new(&w.secp, 1);
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(499_999)]);
    mine_and_confirm(&mut w, &tx);
    let balance = w.bridge.bridge_balance_wei();
    let reg = w.register(&tx).unwrap();
    let txid = tx.compute_txid();
    assert_eq!(
        reg.outcome,
        PeginOutcome::Rejected {
            reason: RejectedPeginReason::InvalidAmount,
            unrefundable: UnrefundablePeginReason::InvalidAmount,
            amount: Amount::from_sat(499_999),
        }
    );
    assert_eq!(
        reg.events,
        vec![
            BridgeEvent::RejectedPegin { btc_txid: txid, reason: RejectedPeginReason::InvalidAmount },
            BridgeEvent::UnrefundablePegin { btc_txid: txid, reason: UnrefundablePeginReason::InvalidAmount },
        ]
    );
    assert!(reg.credits.is_empty());
    assert_eq!(w.bridge.bridge_balance_wei(), balance);
    assert_eq!(w.bridge.refunds().count(), 0);
    assert_eq!(w.bridge.utxo_count(), 0);
    assert_eq!(w.bridge.unrefunded(), Amount::from_sat(499_999));
    assert!(w.bridge.processed_at(&txid).is_some());
    assert!(matches!(w.register(&tx), Err(RegisterError::AlreadyProcessed { .. })));
    w.assert_conservation();

    // One output at the minimum and one below: still rejected.
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(500_000), w.to_fed(400_000)]);
    mine_and_confirm(&mut w, &tx);
    assert!(matches!(
        w.register(&tx).unwrap().outcome,
        PeginOutcome::Rejected { reason: RejectedPeginReason::InvalidAmount, .. }
    ));
    // Exactly the minimum is enough (inclusive).
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(500_000)]);
    mine_and_confirm(&mut w, &tx);
    let (_, amount, _) = expect_registered(&mut w, &tx);
    assert_eq!(amount, Amount::from_sat(500_000));
}

#[test]
fn a_pegin_over_the_locking_cap_is_marked_for_refund() {
    let mut w = World::new(PegParams { initial_locking_cap_sat: 10 * BTC, ..mainnet() });
    let first = User::new(&w.secp, 1);
    let second = User::new(&w.secp, 2);
    let a = w.pegin(&first, Lock::P2pkh, vec![w.to_fed(6 * BTC)]);
    let b = w.pegin(&second, Lock::P2pkh, vec![w.to_fed(3 * BTC), w.to_fed(2 * BTC)]);
    mine_and_confirm(&mut w, &a);
    expect_registered(&mut w, &a);
    let balance = w.bridge.bridge_balance_wei();
    let reg = w.register(&b).unwrap();
    let txid = b.compute_txid();
    let sender_script = first_input_script(&w, &second, Lock::P2pkh);
    assert_eq!(
        reg.outcome,
        PeginOutcome::Refunded {
            reason: RejectedPeginReason::PeginCapSurpassed,
            destination: sender_script.clone(),
            amount: Amount::from_sat(5 * BTC),
        }
    );
    assert_eq!(
        reg.events,
        vec![BridgeEvent::RejectedPegin { btc_txid: txid, reason: RejectedPeginReason::PeginCapSurpassed }]
    );
    assert!(reg.credits.is_empty());
    assert_eq!(w.bridge.bridge_balance_wei(), balance);
    let refunds: Vec<_> = w.bridge.refunds().cloned().collect();
    assert_eq!(refunds.len(), 1);
    assert_eq!((refunds[0].btc_txid, &refunds[0].destination), (txid, &sender_script));
    assert_eq!(refunds[0].utxos.len(), 2);
    assert!(refunds[0].utxos.iter().all(|u| u.outpoint.txid == txid));
    assert_eq!(w.bridge.utxo_count(), 1, "refunded outputs are not federation funds");
    assert!(matches!(w.register(&b), Err(RegisterError::AlreadyProcessed { .. })));
    w.assert_conservation();

    // Up to the cap exactly is fine.
    let c = w.pegin(&second, Lock::P2pkh, vec![w.to_fed(4 * BTC)]);
    mine_and_confirm(&mut w, &c);
    expect_registered(&mut w, &c);
    assert_eq!(w.bridge.locked(), w.bridge.get_locking_cap());
}

fn first_input_script(w: &World, user: &User, lock: Lock) -> ScriptBuf {
    user.script(&w.secp, lock)
}

#[test]
fn a_pegin_v1_op_return_credits_the_named_address() {
    let mut w = World::new(mainnet());
    let user = User::new(&w.secp, 1);
    let dest = SideAddress([0x42; 20]);
    let op_return = TxOut { value: Amount::ZERO, script_pubkey: pegin_v1_script(&dest, None) };
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(BTC), op_return]);
    mine_and_confirm(&mut w, &tx);
    let (receiver, amount, version) = expect_registered(&mut w, &tx);
    assert_eq!((receiver, amount, version), (dest, Amount::from_sat(BTC), 1));
    assert_ne!(receiver, user.side_address());

    // A multisig sender may peg in with v1 (a legacy one would be refunded).
    let dest2 = SideAddress([0x17; 20]);
    let refund_hash = hash160_of(b"refund key");
    let op_return = TxOut {
        value: Amount::ZERO,
        script_pubkey: pegin_v1_script(&dest2, Some((RefundType::P2pkh, refund_hash))),
    };
    let tx = w.pegin(&user, Lock::P2shMultisig, vec![op_return, w.to_fed(2 * BTC)]);
    mine_and_confirm(&mut w, &tx);
    let (receiver, _, version) = expect_registered(&mut w, &tx);
    assert_eq!((receiver, version), (dest2, 1));
}

#[test]
fn legacy_multisig_senders_and_bad_v1_payloads_are_refunded() {
    let mut w = World::new(mainnet());
    let user = User::new(&w.secp, 1);
    let tx = w.pegin(&user, Lock::P2shMultisig, vec![w.to_fed(BTC)]);
    mine_and_confirm(&mut w, &tx);
    let reg = w.register(&tx).unwrap();
    assert_eq!(
        reg.outcome,
        PeginOutcome::Refunded {
            reason: RejectedPeginReason::LegacyPeginMultisigSender,
            destination: user.script(&w.secp, Lock::P2shMultisig),
            amount: Amount::from_sat(BTC),
        }
    );

    // A v1 payload with a bad version: refunded to the sender.
    let mut script = pegin_v1_script(&SideAddress([1; 20]), None).into_bytes();
    script[6] = 2; // OP_RETURN, push length, "RSKT", version
    let tx = w.pegin(
        &user,
        Lock::P2pkh,
        vec![w.to_fed(BTC), TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::from_bytes(script) }],
    );
    mine_and_confirm(&mut w, &tx);
    let reg = w.register(&tx).unwrap();
    assert_eq!(
        reg.outcome,
        PeginOutcome::Refunded {
            reason: RejectedPeginReason::PeginV1InvalidPayload,
            destination: user.script(&w.secp, Lock::P2pkh),
            amount: Amount::from_sat(BTC),
        }
    );
    assert_eq!(w.bridge.refunds().count(), 2);
    assert_eq!(w.bridge.pegged_in(), Amount::ZERO);
    w.assert_conservation();
}

#[test]
fn only_pegnatories_feed_headers_and_non_pegins_are_not_processed() {
    let mut w = World::new(mainnet());
    let stranger = User::new(&w.secp, 9).side_address();
    let headers = w.best_headers(1, 5);
    assert!(matches!(
        w.bridge.receive_headers(stranger, &headers),
        Err(BridgeError::Unauthorized { method: "receiveHeaders", .. })
    ));
    assert_eq!(w.bridge.get_btc_blockchain_best_chain_height(), 0);
    // Every member may.
    let member = fika_peg::SideAddress::from_public_key(&w.fed.members()[8]);
    w.bridge.receive_headers(member, &headers).unwrap();
    assert_eq!(w.bridge.get_btc_blockchain_best_chain_height(), 5);

    // A transaction that pays no federation output is not a peg-in.
    let user = User::new(&w.secp, 1);
    let not_pegin = w.pegin(
        &user,
        Lock::P2pkh,
        vec![TxOut { value: Amount::from_sat(BTC), script_pubkey: user.script(&w.secp, Lock::P2wpkh) }],
    );
    mine_and_confirm(&mut w, &not_pegin);
    assert!(matches!(w.register(&not_pegin), Err(RegisterError::NotAPegin(_))));
    assert_eq!(w.bridge.processed_at(&not_pegin.compute_txid()), None);
    // Garbage is refused without a panic.
    let caller = w.pegnatory();
    assert!(matches!(
        w.bridge.register_btc_transaction(caller, &[1, 2, 3], 10, &[]),
        Err(RegisterError::BadTransaction(_))
    ));
    assert!(matches!(
        w.bridge.register_btc_transaction(caller, &serialize(&not_pegin), 120, &[0xff; 7]),
        Err(RegisterError::BadPartialMerkleTree(_)) | Err(RegisterError::NotEnoughConfirmations { .. })
    ));

    // With registration restricted to members, strangers are refused.
    let mut w = World::new(PegParams { register_btc_transaction_public: false, ..mainnet() });
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(BTC)]);
    mine_and_confirm(&mut w, &tx);
    let (height, block) = w.height_of_tx(tx.compute_txid());
    let pmt = World::pmt(&block, tx.compute_txid());
    assert_eq!(
        w.bridge.register_btc_transaction(stranger, &serialize(&tx), height, &pmt),
        Err(RegisterError::Unauthorized(stranger))
    );
    expect_registered(&mut w, &tx);
}

#[test]
fn bridge_state_snapshots_revert_with_a_sidechain_reorg() {
    let mut w = World::new(mainnet());
    let user = User::new(&w.secp, 1);
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(BTC)]);
    mine_and_confirm(&mut w, &tx);
    // The sidechain keeps the state of block 10; block 11 registers the peg-in.
    w.bridge.begin_block(10);
    let at_10 = w.bridge.clone();
    let digest_10 = at_10.digest();
    w.bridge.begin_block(11);
    expect_registered(&mut w, &tx);
    assert_eq!(w.bridge.processed_at(&tx.compute_txid()), Some(11));
    assert_ne!(w.bridge.digest(), digest_10);
    // The snapshot is untouched; a reorg of block 11 resumes from it.
    assert_eq!(at_10.digest(), digest_10);
    assert_eq!(at_10.pegged_in(), Amount::ZERO);
    w.bridge = at_10;
    w.bridge.begin_block(11);
    expect_registered(&mut w, &tx);
}
