//! The PowHSM: it signs a peg-out input only when a `release_requested`
//! receipt from the Bridge naming that transaction is proven under an
//! ancestor of a best block with enough capped cumulative work on top, and
//! refuses everything else.

#![allow(clippy::unwrap_used)]

mod hsm_common;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::{Message, Secp256k1, SecretKey};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Amount, TxOut};
use fika_btc::ChainParams;
use fika_btc::validate::{TxError, verify_scripts};
use fika_peg::Federation;
use fika_peg::abi::{BRIDGE_ADDRESS, event_topic, word_hash};
use fika_peg::federation::{SpendBranch, set_spend_data};
use fika_peg::hsm::{
    AdvanceOutcome, Attestation, HsmCommand, HsmError, HsmParams, HsmResponse, PowHsm, UpdatingState,
    min_cumulative_for, release_requested_topic,
};
use fika_side::{
    ChainConfig, Genesis, MmError, PowMode, SideChain, SideHeader, SignedTx, U256, UnsignedTx, WEI_PER_RBTC,
    address_of_secret,
};

use hsm_common::*;

/// The federation UTXO a peg-out spends.
const VALUE: Amount = Amount::from_sat(5 * 100_000_000);
/// What the peg-out pays.
const PAY: Amount = Amount::from_sat(5 * 100_000_000 - 20_000);
/// Block difficulty of the test chains (Rootstock regtest's cap is 20).
const D: u64 = 10;

fn u(v: u64) -> U256 {
    U256::from(v)
}

// ---- a real sidechain with a stand-in Bridge ----

fn side_chain() -> (SideChain<FakeBridge>, SecretKey) {
    let alice = secret("alice", 0);
    let mut config = ChainConfig::regtest();
    config.genesis =
        Genesis::new(1_700_000_000, u(D)).with_balance(address_of_secret(&alice), 10 * WEI_PER_RBTC);
    (SideChain::new(config, FakeBridge), alice)
}

fn side_tx(from: &SecretKey, nonce: u64, to: [u8; 20], data: Vec<u8>) -> SignedTx {
    UnsignedTx {
        nonce,
        gas_price: 1_000_000_000,
        gas_limit: 100_000,
        to: Some(to),
        value: u128::from(data.is_empty()),
        data,
        chain_id: Some(33),
    }
    .sign(from)
}

fn mine(chain: &mut SideChain<FakeBridge>, txs: &[SignedTx]) -> [u8; 32] {
    let tip = chain.best_hash();
    let time = chain.header(&tip).unwrap().timestamp + 10;
    let block = chain.build_block(&tip, txs, [0xee; 20], time, |h| mm_proof(h, None)).unwrap();
    assert_eq!(block.transactions.len(), txs.len(), "a transaction was left out");
    chain.accept_block(block).unwrap().hash
}

fn side_headers(chain: &SideChain<FakeBridge>, newest: u64, oldest: u64) -> Vec<SideHeader> {
    (oldest..=newest).rev().map(|n| chain.header(&chain.hash_at(n).unwrap()).unwrap().clone()).collect()
}

#[test]
fn signs_a_pegout_commanded_under_enough_work_and_m_signatures_spend_in_core() {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(&secp, 5);
    assert_eq!(fed.threshold(), 3);
    let tx = pegout_tx(&fed, "federation utxo", PAY);

    // Block 1: a plain transfer, then the Bridge announcing the peg-out;
    // blocks 2..=8 on top, all of difficulty D.
    let (mut chain, alice) = side_chain();
    let release_block = mine(
        &mut chain,
        &[
            side_tx(&alice, 0, [0xbb; 20], vec![]),
            side_tx(&alice, 1, BRIDGE_ADDRESS.0, fake_bridge_call(&tx, PAY)),
        ],
    );
    for _ in 2..=8 {
        mine(&mut chain, &[]);
    }
    let h = |n: u64| chain.hash_at(n).unwrap();
    assert_eq!(h(1), release_block);
    let (receipt, proof) = chain.receipt_proof(&release_block, 1).unwrap();
    assert_eq!(receipt.logs.len(), 1);
    assert_eq!(receipt.logs[0].address, BRIDGE_ADDRESS.0);
    assert_eq!(receipt.logs[0].topics[0], release_requested_topic());

    // Five blocks of D must be on top of (and including) the best block.
    let params = HsmParams::regtest(chain.genesis_hash(), fed.clone(), min_cumulative_for(5, u(D)));
    let mut hsms: Vec<PowHsm> = secrets.iter().map(|s| PowHsm::new(*s, params.clone()).unwrap()).collect();
    for hsm in &mut hsms {
        assert_eq!(sign(hsm, &tx, 0, VALUE, &receipt, &proof), Err(HsmError::NoAncestor));
        // 8, 7, 6, 5, 4 sum to 5·D: block 4 is the best block.
        assert_eq!(
            advance(hsm, side_headers(&chain, 8, 1)),
            Ok(AdvanceOutcome::Advanced { best_block: h(4), newest_valid_block: h(8) })
        );
        assert_eq!(update_ancestor(hsm, side_headers(&chain, 4, 1)), Ok(h(1)));
        let st = state(hsm);
        assert_eq!((st.best_block, st.newest_valid_block, st.ancestor_block), (h(4), h(8), h(1)));
        assert_eq!(st.ancestor_receipts_root, chain.header(&h(1)).unwrap().receipts_root);
        assert_eq!(st.updating, UpdatingState::default());
    }

    // Each signature verifies against the BIP143 sighash over the
    // federation's witness script, computed here independently.
    let sighash = SighashCache::new(&tx)
        .p2wsh_signature_hash(0, fed.redeem_script(), VALUE, EcdsaSighashType::All)
        .unwrap();
    let msg = Message::from_digest(sighash.to_byte_array());
    let mut sigs = Vec::new();
    for hsm in hsms.iter_mut().take(3) {
        let sig = sign(hsm, &tx, 0, VALUE, &receipt, &proof).unwrap();
        let pk = public_key(hsm);
        assert!(fed.is_member(&pk));
        assert_eq!(sig.sighash_type, EcdsaSighashType::All);
        secp.verify_ecdsa(&msg, &sig.signature, &pk).unwrap();
        assert_eq!(state(hsm).last_signed_tx, Some(tx.compute_txid()));
        sigs.push((pk, sig));
    }

    // M = 3 signatures from 3 HSMs spend the federation UTXO through
    // Bitcoin Core's script engine; the txid the Bridge named is unchanged.
    let prevout = TxOut { value: VALUE, script_pubkey: fed.script_pubkey().clone() };
    let flags = ChainParams::mainnet().script_flags;
    let mut signed = tx.clone();
    fed.apply_signatures(&mut signed, 0, SpendBranch::Normal, &sigs).unwrap();
    assert_eq!(signed.compute_txid(), tx.compute_txid());
    verify_scripts(&signed, std::slice::from_ref(&prevout), &flags).unwrap();
    // M - 1 do not.
    let ordered = fed.order_signatures(SpendBranch::Normal, &sigs).unwrap();
    let mut short = tx.clone();
    set_spend_data(&mut short, 0, fed.spend_data(SpendBranch::Normal, &ordered[..2]).unwrap()).unwrap();
    assert!(matches!(
        verify_scripts(&short, &[prevout], &flags),
        Err(TxError::ScriptFailed { input: 0, .. })
    ));
}

#[test]
fn refuses_a_receipt_without_the_release_log() {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(&secp, 3);
    let tx = pegout_tx(&fed, "federation utxo", PAY);
    let (mut chain, alice) = side_chain();
    // Block 1 holds only a plain transfer: its receipt has no logs.
    let block = mine(&mut chain, &[side_tx(&alice, 0, [0xbb; 20], vec![])]);
    for _ in 2..=6 {
        mine(&mut chain, &[]);
    }
    let params = HsmParams::regtest(chain.genesis_hash(), fed, min_cumulative_for(5, u(D)));
    let mut hsm = PowHsm::new(secrets[0], params).unwrap();
    advance(&mut hsm, side_headers(&chain, 6, 1)).unwrap();
    assert_eq!(update_ancestor(&mut hsm, side_headers(&chain, 2, 1)), Ok(block));
    let (receipt, proof) = chain.receipt_proof(&block, 0).unwrap();
    assert!(receipt.logs.is_empty());
    assert_eq!(sign(&mut hsm, &tx, 0, VALUE, &receipt, &proof), Err(HsmError::ReceiptMissingRelease));
    assert_eq!(state(&mut hsm).last_signed_tx, None);
}

// ---- header chains built directly ----

/// An HSM of a 3-member federation whose best block is block 2 of `chain`
/// (blocks 6..=2 carry the 5·D minimum) and whose ancestor is block 1.
fn hsm_with_ancestor_at_1(chain: &HeaderChain) -> (PowHsm, Federation) {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(&secp, 3);
    let params = HsmParams::regtest(chain.hash(0), fed.clone(), min_cumulative_for(5, u(D)));
    let mut hsm = PowHsm::new(secrets[1], params).unwrap();
    assert_eq!(
        advance(&mut hsm, chain.newest_first(6, 1)),
        Ok(AdvanceOutcome::Advanced { best_block: chain.hash(2), newest_valid_block: chain.hash(6) })
    );
    assert_eq!(update_ancestor(&mut hsm, chain.newest_first(2, 1)), Ok(chain.hash(1)));
    (hsm, fed)
}

/// A chain whose block 1 holds `receipts`, with 5 blocks of D on top.
fn chain_with_receipts(receipts: Vec<fika_side::Receipt>) -> HeaderChain {
    let mut chain = HeaderChain::new(PowMode::Simulated);
    chain.push(D, receipts);
    chain.extend(5, D);
    chain
}

#[test]
fn refuses_logs_that_are_not_the_bridges_release_requested() {
    let secp = Secp256k1::new();
    let (fed, _) = federation(&secp, 3);
    let tx = pegout_tx(&fed, "federation utxo", PAY);
    let good = release_log(&tx, PAY);
    let mut other_emitter = good.clone();
    other_emitter.address = [0x77; 20];
    let mut other_event = good.clone();
    other_event.topics[0] = event_topic("release_request_received(address,bytes,uint256)");
    let mut two_topics = good.clone();
    two_topics.topics.truncate(2);
    let mut four_topics = good.clone();
    four_topics.topics.push([0u8; 32]);
    let mut failed = receipt(vec![good.clone()]);
    failed.status = false;
    let unrelated = fika_side::Log { address: [0x99; 20], topics: vec![[1; 32]], data: vec![] };
    let chain = chain_with_receipts(vec![
        receipt(vec![]),
        receipt(vec![other_emitter]),
        receipt(vec![other_event]),
        receipt(vec![two_topics]),
        receipt(vec![four_topics]),
        failed,
        receipt(vec![unrelated, good]),
    ]);
    let (mut hsm, fed2) = hsm_with_ancestor_at_1(&chain);
    assert_eq!(fed2, fed);
    for i in 0..5 {
        let (r, p) = chain.receipt_and_proof(1, i);
        assert_eq!(
            sign(&mut hsm, &tx, 0, VALUE, &r, &p),
            Err(HsmError::ReceiptMissingRelease),
            "receipt {i}"
        );
    }
    let (r, p) = chain.receipt_and_proof(1, 5);
    assert_eq!(sign(&mut hsm, &tx, 0, VALUE, &r, &p), Err(HsmError::ReceiptFailed));
    assert_eq!(state(&mut hsm).last_signed_tx, None);
    // The genuine log, even after an unrelated one, commands the signature.
    let (r, p) = chain.receipt_and_proof(1, 6);
    let sig = sign(&mut hsm, &tx, 0, VALUE, &r, &p).unwrap();
    assert!(fed.verify_signature(&secp, &tx, 0, VALUE, &public_key(&mut hsm), &sig));
}

#[test]
fn refuses_a_forged_receipt_whose_proof_does_not_reduce_to_the_ancestor_root() {
    let secp = Secp256k1::new();
    let (fed, _) = federation(&secp, 3);
    let tx = pegout_tx(&fed, "federation utxo", PAY);
    let other = pegout_tx(&fed, "another utxo", PAY);
    let chain = chain_with_receipts(vec![
        receipt(vec![release_log(&other, PAY)]),
        receipt(vec![release_log(&tx, PAY)]),
    ]);
    let (mut hsm, _) = hsm_with_ancestor_at_1(&chain);
    let root = state(&mut hsm).ancestor_receipts_root;
    let mismatch = Err(HsmError::ProofMismatch { ancestor_receipts_root: root });

    // A receipt naming tx, proven in a block the chain does not have.
    let forged = vec![receipt(vec![release_log(&tx, PAY)])];
    let forged_proof = fika_side::receipt_proof(&forged, 0).unwrap();
    assert_eq!(sign(&mut hsm, &tx, 0, VALUE, &forged[0], &forged_proof), mismatch);
    // The genuine receipt altered (a larger amount).
    let (genuine, proof) = chain.receipt_and_proof(1, 1);
    let mut altered = genuine.clone();
    altered.logs[0].data = fika_peg::abi::word_u128(u128::from(VALUE.to_sat()) * 2).to_vec();
    assert_eq!(sign(&mut hsm, &tx, 0, VALUE, &altered, &proof), mismatch);
    // The genuine receipt with another receipt's proof.
    let (_, proof_0) = chain.receipt_and_proof(1, 0);
    assert_eq!(sign(&mut hsm, &tx, 0, VALUE, &genuine, &proof_0), mismatch);
    // The genuine receipt and proof, but the ancestor is another block.
    let (mut moved, _) = hsm_with_ancestor_at_1(&chain);
    update_ancestor(&mut moved, chain.newest_first(2, 2)).unwrap();
    let root_2 = state(&mut moved).ancestor_receipts_root;
    assert_eq!(
        sign(&mut moved, &tx, 0, VALUE, &genuine, &proof),
        Err(HsmError::ProofMismatch { ancestor_receipts_root: root_2 })
    );
    assert_eq!(state(&mut hsm).last_signed_tx, None);
    // Genuine receipt, genuine proof, right ancestor: signed.
    sign(&mut hsm, &tx, 0, VALUE, &genuine, &proof).unwrap();
    assert_eq!(state(&mut hsm).last_signed_tx, Some(tx.compute_txid()));
}

#[test]
fn refuses_a_transaction_the_receipt_does_not_name() {
    let secp = Secp256k1::new();
    let (fed, _) = federation(&secp, 3);
    let tx = pegout_tx(&fed, "federation utxo", PAY);
    // Same input, one satoshi more to the payee: another transaction.
    let greedy = pegout_tx(&fed, "federation utxo", PAY + Amount::from_sat(1));
    let chain = chain_with_receipts(vec![receipt(vec![release_log(&tx, PAY)])]);
    let (mut hsm, _) = hsm_with_ancestor_at_1(&chain);
    let (r, p) = chain.receipt_and_proof(1, 0);
    assert_eq!(
        sign(&mut hsm, &greedy, 0, VALUE, &r, &p),
        Err(HsmError::WrongTxHash {
            expected: word_hash(&greedy.compute_txid()),
            found: vec![word_hash(&tx.compute_txid())],
        })
    );
    // The topic is the txid in display order, as the Bridge writes it.
    let mut internal_order = r.clone();
    internal_order.logs[0].topics[2] = tx.compute_txid().to_byte_array();
    assert!(matches!(sign(&mut hsm, &tx, 0, VALUE, &internal_order, &p), Err(HsmError::WrongTxHash { .. })));
    assert_eq!(sign(&mut hsm, &tx, 1, VALUE, &r, &p), Err(HsmError::NoSuchInput { index: 1, inputs: 1 }));
    assert_eq!(state(&mut hsm).last_signed_tx, None);
    sign(&mut hsm, &tx, 0, VALUE, &r, &p).unwrap();
}

#[test]
fn a_private_fork_with_little_work_neither_moves_best_block_nor_gets_signed() {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(&secp, 3);
    let theft = pegout_tx(&fed, "federation utxo", PAY);
    let mut honest = HeaderChain::new(PowMode::Simulated);
    honest.extend(12, D);
    let params = HsmParams::regtest(honest.hash(0), fed.clone(), min_cumulative_for(5, u(D)));
    let mut hsm = PowHsm::new(secrets[0], params).unwrap();
    advance(&mut hsm, honest.newest_first(12, 1)).unwrap();
    let best = honest.hash(8);
    assert_eq!(state(&mut hsm).best_block, best);

    // The attacker forks right at the HSM's best block and privately mines
    // four blocks (4·D of work), the first announcing a peg-out to itself.
    let mut fork = honest.truncated(8);
    fork.miner = [0xa7; 20];
    fork.push(D, vec![receipt(vec![release_log(&theft, PAY)])]);
    fork.extend(3, D);
    assert_eq!(
        advance(&mut hsm, fork.newest_first(12, 9)),
        Err(HsmError::NotEnoughWork { have: u(4 * D), need: u(5 * D) })
    );
    let st = state(&mut hsm);
    assert_eq!(st.best_block, best);
    assert_eq!(st.newest_valid_block, fork.hash(12), "the checked chain is kept as partial progress");
    assert_eq!(st.updating, UpdatingState::default());
    // Its blocks are not ancestors of the best block.
    assert_eq!(
        update_ancestor(&mut hsm, fork.newest_first(12, 9)),
        Err(HsmError::TipMismatch { tip: fork.hash(12), best_block: best, ancestor_block: [0u8; 32] })
    );
    let (r, p) = fork.receipt_and_proof(9, 0);
    assert_eq!(sign(&mut hsm, &theft, 0, VALUE, &r, &p), Err(HsmError::NoAncestor));
    update_ancestor(&mut hsm, honest.newest_first(8, 8)).unwrap();
    assert!(matches!(sign(&mut hsm, &theft, 0, VALUE, &r, &p), Err(HsmError::ProofMismatch { .. })));

    // The honest chain keeps advancing.
    honest.extend(2, D);
    assert_eq!(
        advance(&mut hsm, honest.newest_first(14, 9)),
        Ok(AdvanceOutcome::Advanced { best_block: honest.hash(10), newest_valid_block: honest.hash(14) })
    );

    // Contrast: the same theft with the minimum work on top would be
    // signed — the work threshold is exactly what the attacker lacks.
    let mut hsm2 = PowHsm::new(secrets[1], HsmParams::regtest(honest.hash(0), fed, u(5 * D))).unwrap();
    advance(&mut hsm2, honest.newest_first(12, 1)).unwrap();
    fork.push(D, vec![]);
    assert_eq!(
        advance(&mut hsm2, fork.newest_first(13, 9)),
        Ok(AdvanceOutcome::Advanced { best_block: fork.hash(9), newest_valid_block: fork.hash(13) })
    );
    update_ancestor(&mut hsm2, fork.newest_first(9, 9)).unwrap();
    sign(&mut hsm2, &theft, 0, VALUE, &r, &p).unwrap();
}

#[test]
fn the_difficulty_cap_limits_the_credit_of_a_single_block() {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(&secp, 3);
    // One block claiming a billion times the minimum.
    let mut chain = HeaderChain::new(PowMode::Simulated);
    chain.push(50_000_000_000, vec![]);
    let capped = HsmParams::regtest(chain.hash(0), fed.clone(), u(50));
    assert_eq!(capped.block_difficulty_cap, u(20));
    let mut hsm = PowHsm::new(secrets[0], capped.clone()).unwrap();
    assert_eq!(
        advance(&mut hsm, chain.newest_first(1, 1)),
        Err(HsmError::NotEnoughWork { have: u(20), need: u(50) })
    );
    assert_eq!(state(&mut hsm).best_block, chain.hash(0));
    // Without the cap the same header would be enough.
    let uncapped = HsmParams { block_difficulty_cap: U256::MAX, ..capped.clone() };
    let mut hsm2 = PowHsm::new(secrets[1], uncapped).unwrap();
    assert_eq!(
        advance(&mut hsm2, chain.newest_first(1, 1)),
        Ok(AdvanceOutcome::Advanced { best_block: chain.hash(1), newest_valid_block: chain.hash(1) })
    );
    // Three such blocks: 20 + 20 + 20 ≥ 50 only at the third from the top.
    chain.push(50_000_000_000, vec![]);
    chain.push(50_000_000_000, vec![]);
    assert_eq!(
        advance(&mut hsm, chain.newest_first(3, 1)),
        Ok(AdvanceOutcome::Advanced { best_block: chain.hash(1), newest_valid_block: chain.hash(3) })
    );
    // A block below the cap is credited its own difficulty.
    let mut small = HeaderChain::new(PowMode::Simulated);
    small.extend(3, 17);
    let mut hsm3 = PowHsm::new(secrets[2], HsmParams::regtest(small.hash(0), fed, u(52))).unwrap();
    assert_eq!(
        advance(&mut hsm3, small.newest_first(3, 1)),
        Err(HsmError::NotEnoughWork { have: u(51), need: u(52) })
    );
}

#[test]
fn headers_that_do_not_link_are_refused_and_change_nothing() {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(&secp, 3);
    let mut chain = HeaderChain::new(PowMode::Simulated);
    chain.extend(8, D);
    let mut hsm = PowHsm::new(secrets[0], HsmParams::regtest(chain.hash(0), fed.clone(), u(5 * D))).unwrap();
    let genesis_state = state(&mut hsm);

    // A gap: block 3 left out.
    let mut gap = chain.newest_first(6, 1);
    gap.remove(3);
    assert_eq!(
        advance(&mut hsm, gap),
        Err(HsmError::DoesNotLink { index: 2, parent_hash: chain.hash(3), next_hash: chain.hash(2) })
    );
    // Oldest first.
    let mut oldest_first = chain.newest_first(6, 1);
    oldest_first.reverse();
    assert!(matches!(advance(&mut hsm, oldest_first), Err(HsmError::DoesNotLink { index: 0, .. })));
    // A header from another chain in the middle.
    let mut other = HeaderChain::new(PowMode::Simulated);
    other.miner = [0x01; 20];
    other.extend(8, D);
    let mut mixed = chain.newest_first(8, 1);
    mixed[4] = other.headers[4].clone();
    assert!(matches!(advance(&mut hsm, mixed), Err(HsmError::DoesNotLink { index: 3, .. })));
    // Empty.
    assert_eq!(advance(&mut hsm, vec![]), Err(HsmError::NoHeaders));
    // A chain that links but not to the best block is partial progress,
    // and the next invocation must continue it.
    assert!(matches!(advance(&mut hsm, other.newest_first(8, 3)), Ok(AdvanceOutcome::NeedMoreBlocks { .. })));
    assert_eq!(
        advance(&mut hsm, chain.newest_first(2, 1)),
        Err(HsmError::UnexpectedContinuation { expected: other.hash(2), got: chain.hash(2) })
    );
    assert_eq!(state(&mut hsm), genesis_state);

    // A header whose number does not follow its parent's.
    let mut bad_number = HeaderChain::new(PowMode::Simulated);
    bad_number.extend(2, D);
    bad_number.push_with(u(D), vec![], Mm::Valid, |h| h.number += 1);
    bad_number.extend(3, D);
    let mut hsm2 = PowHsm::new(secrets[1], HsmParams::regtest(bad_number.hash(0), fed, u(5 * D))).unwrap();
    assert_eq!(
        advance(&mut hsm2, bad_number.newest_first(6, 1)),
        Err(HsmError::BadNumber { index: 3, expected: 3, got: 4 })
    );

    // The intact chain advances.
    assert_eq!(
        advance(&mut hsm, chain.newest_first(8, 1)),
        Ok(AdvanceOutcome::Advanced { best_block: chain.hash(4), newest_valid_block: chain.hash(8) })
    );
}

#[test]
fn headers_with_a_bad_merge_mining_proof_are_refused() {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(&secp, 3);
    let params = |chain: &HeaderChain, mode| HsmParams {
        pow_mode: mode,
        ..HsmParams::regtest(chain.hash(0), fed.clone(), u(5 * D))
    };
    for (defect, expect) in [(Mm::WrongTag, "WrongTag"), (Mm::Missing, "Missing")] {
        let mut chain = HeaderChain::new(PowMode::Simulated);
        chain.extend(2, D);
        let bad = chain.push_with(u(D), vec![], defect, |_| {});
        chain.extend(4, D);
        let mut hsm = PowHsm::new(secrets[0], params(&chain, PowMode::Simulated)).unwrap();
        match advance(&mut hsm, chain.newest_first(7, 1)) {
            Err(HsmError::BadMergeMining { index: 4, block, error }) => {
                assert_eq!(block, bad);
                assert!(format!("{error:?}").starts_with(expect), "{error:?}");
            }
            other => panic!("{defect:?}: {other:?}"),
        }
        assert_eq!(state(&mut hsm).best_block, chain.hash(0));
        assert_eq!(state(&mut hsm).updating, UpdatingState::default());
    }

    // Real PoW: every header ground to its own sidechain target.
    let mut real = HeaderChain::new(PowMode::Real);
    real.extend(6, 16);
    let mut hsm = PowHsm::new(secrets[1], params(&real, PowMode::Real)).unwrap();
    assert_eq!(
        advance(&mut hsm, real.newest_first(6, 1)),
        Ok(AdvanceOutcome::Advanced { best_block: real.hash(3), newest_valid_block: real.hash(6) })
    );
    // A header claiming difficulty 2^64 without the work behind it: refused
    // in real mode, taken at its word in simulated mode.
    let claimed = real.push_with(U256::from(1u128 << 64), vec![], Mm::Unground, |_| {});
    real.extend(1, 16);
    match advance(&mut hsm, real.newest_first(8, 7)) {
        Err(HsmError::BadMergeMining { index: 1, block, error: MmError::HighHash { .. } }) => {
            assert_eq!(block, claimed)
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(state(&mut hsm).best_block, real.hash(3));
    let mut simulated = PowHsm::new(secrets[2], params(&real, PowMode::Simulated)).unwrap();
    assert!(matches!(advance(&mut simulated, real.newest_first(8, 1)), Ok(AdvanceOutcome::Advanced { .. })));
}

#[test]
fn an_advance_may_span_several_invocations() {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(&secp, 3);
    let mut chain = HeaderChain::new(PowMode::Simulated);
    chain.extend(10, D);
    let params = HsmParams::regtest(chain.hash(0), fed, u(5 * D));
    let mut hsm = PowHsm::new(secrets[0], params).unwrap();
    assert_eq!(
        advance(&mut hsm, chain.newest_first(10, 8)),
        Ok(AdvanceOutcome::NeedMoreBlocks { next_expected_block: chain.hash(7), total_difficulty: u(3 * D) })
    );
    let st = state(&mut hsm);
    assert_eq!(st.best_block, chain.hash(0));
    assert!(st.updating.in_progress && !st.updating.found_best_block);
    assert_eq!(
        advance(&mut hsm, chain.newest_first(7, 4)),
        Ok(AdvanceOutcome::NeedMoreBlocks { next_expected_block: chain.hash(3), total_difficulty: u(5 * D) })
    );
    assert!(state(&mut hsm).updating.found_best_block);
    assert_eq!(state(&mut hsm).best_block, chain.hash(0));
    assert_eq!(
        advance(&mut hsm, chain.newest_first(3, 1)),
        Ok(AdvanceOutcome::Advanced { best_block: chain.hash(6), newest_valid_block: chain.hash(10) })
    );
    assert_eq!(state(&mut hsm).updating, UpdatingState::default());

    // Reset abandons an advance in progress.
    chain.extend(6, D);
    advance(&mut hsm, chain.newest_first(16, 13)).unwrap();
    assert!(matches!(hsm.execute(HsmCommand::ResetAdvanceBlockchain), Ok(HsmResponse::Reset)));
    assert_eq!(state(&mut hsm).updating, UpdatingState::default());
    // Headers may run past the best block; the rest is ignored.
    assert_eq!(
        advance(&mut hsm, chain.newest_first(16, 1)),
        Ok(AdvanceOutcome::Advanced { best_block: chain.hash(12), newest_valid_block: chain.hash(16) })
    );
}

#[test]
fn the_ancestor_moves_only_along_linked_headers_from_best_block() {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(&secp, 3);
    let mut chain = HeaderChain::new(PowMode::Simulated);
    chain.extend(10, D);
    let mut hsm = PowHsm::new(secrets[0], HsmParams::regtest(chain.hash(0), fed, u(3 * D))).unwrap();
    advance(&mut hsm, chain.newest_first(10, 1)).unwrap();
    assert_eq!(state(&mut hsm).best_block, chain.hash(8));

    assert_eq!(update_ancestor(&mut hsm, vec![]), Err(HsmError::NoHeaders));
    // Above the best block: not a proven block.
    assert!(matches!(
        update_ancestor(&mut hsm, chain.newest_first(10, 5)),
        Err(HsmError::TipMismatch { .. })
    ));
    assert_eq!(update_ancestor(&mut hsm, chain.newest_first(8, 5)), Ok(chain.hash(5)));
    // Onwards from the ancestor.
    assert_eq!(update_ancestor(&mut hsm, chain.newest_first(5, 2)), Ok(chain.hash(2)));
    // A gap is refused and the ancestor stays.
    let mut gap = chain.newest_first(8, 1);
    gap.remove(2);
    assert_eq!(
        update_ancestor(&mut hsm, gap),
        Err(HsmError::DoesNotLink { index: 1, parent_hash: chain.hash(6), next_hash: chain.hash(5) })
    );
    let st = state(&mut hsm);
    assert_eq!(
        (st.ancestor_block, st.ancestor_receipts_root),
        (chain.hash(2), chain.headers[2].receipts_root)
    );
    // The best block itself.
    assert_eq!(update_ancestor(&mut hsm, chain.newest_first(8, 8)), Ok(chain.hash(8)));
}

#[test]
fn attestation_binds_platform_key_best_block_and_last_signed_tx() {
    let secp = Secp256k1::new();
    let (fed, _) = federation(&secp, 3);
    let tx = pegout_tx(&fed, "federation utxo", PAY);
    let chain = chain_with_receipts(vec![receipt(vec![release_log(&tx, PAY)])]);
    let (mut hsm, fed) = hsm_with_ancestor_at_1(&chain);
    let attest = |hsm: &mut PowHsm, nonce| match hsm.execute(HsmCommand::Attestation { nonce }).unwrap() {
        HsmResponse::Attestation(a) => *a,
        other => panic!("{other:?}"),
    };
    let before = attest(&mut hsm, [1; 32]);
    assert!(before.verify(&secp));
    assert_eq!(before.public_key, public_key(&mut hsm));
    assert!(fed.is_member(&before.public_key));
    assert_eq!((before.best_block, before.last_signed_tx, before.nonce), (chain.hash(2), None, [1; 32]));
    assert_eq!(before.platform, "fika-powhsm");

    let (r, p) = chain.receipt_and_proof(1, 0);
    sign(&mut hsm, &tx, 0, VALUE, &r, &p).unwrap();
    let after = attest(&mut hsm, [2; 32]);
    assert!(after.verify(&secp));
    assert_eq!(after.last_signed_tx, Some(tx.compute_txid()));
    assert_ne!(after.message(), before.message());
    // Any field changed breaks the signature.
    let tampered: [fn(&mut Attestation); 5] = [
        |a| a.nonce[0] ^= 1,
        |a| a.best_block[0] ^= 1,
        |a| a.last_signed_tx = None,
        |a| a.platform.push('x'),
        |a| a.public_key = a.public_key.negate(&Secp256k1::new()),
    ];
    for (i, edit) in tampered.iter().enumerate() {
        let mut a = after.clone();
        edit(&mut a);
        assert!(!a.verify(&secp), "edit {i}");
    }
    assert!(after.message().starts_with(Attestation::DOMAIN));
}

#[test]
fn the_key_stays_inside_and_must_belong_to_the_federation() {
    let secp = Secp256k1::new();
    let (fed, secrets) = federation(&secp, 3);
    let outsider = secret("outsider", 0);
    let params = HsmParams::regtest([0u8; 32], fed.clone(), u(5 * D));
    match PowHsm::new(outsider, params.clone()) {
        Err(HsmError::NotAFederationMember(pk)) => assert_eq!(pk, outsider.public_key(&secp)),
        other => panic!("{other:?}"),
    }
    let too_long = HsmParams { platform: "x".repeat(256), ..params.clone() };
    assert!(matches!(PowHsm::new(secrets[0], too_long), Err(HsmError::PlatformTooLong(256))));
    let mut hsm = PowHsm::new(secrets[0], params.clone()).unwrap();
    let shown = format!("{hsm:?}");
    assert!(!shown.contains(&secrets[0].display_secret().to_string()), "{shown}");
    assert_eq!(public_key(&mut hsm), secrets[0].public_key(&secp));
    match hsm.execute(HsmCommand::GetParameters).unwrap() {
        HsmResponse::Parameters(p) => assert_eq!(*p, params),
        other => panic!("{other:?}"),
    }
    // The presets carry Rootstock's numbers.
    let mainnet = HsmParams::rootstock_mainnet([0u8; 32], fed);
    assert_eq!(mainnet.block_difficulty_cap, U256::from(7_000_000_000_000_000_000_000u128));
    assert_eq!(mainnet.bridge_address, BRIDGE_ADDRESS);
    assert_eq!(mainnet.pow_mode, PowMode::Real);
}

#[test]
fn after_a_federation_change_the_device_signs_for_the_federation_the_input_spends() {
    let secp = Secp256k1::new();
    let (old, secrets) = federation(&secp, 3);
    // The device (member 1) stays in the next federation; member 0 leaves.
    let keys: Vec<_> = [secrets[1], secrets[2], secret("hsm-newcomer", 0)]
        .iter()
        .map(|s| bitcoin::secp256k1::PublicKey::from_secret_key(&secp, s))
        .collect();
    let new = Federation::p2sh_p2wsh_erp(&keys, old.emergency(), old.csv()).unwrap();
    let tx = pegout_tx(&new, "new federation utxo", PAY);
    let chain = chain_with_receipts(vec![receipt(vec![release_log(&tx, PAY)])]);
    let (mut hsm, _) = hsm_with_ancestor_at_1(&chain);
    let (r, p) = chain.receipt_and_proof(1, 0);
    let cmd = |federation: Option<std::sync::Arc<Federation>>| HsmCommand::Sign {
        tx: tx.clone(),
        input: 0,
        value: VALUE,
        receipt: r.clone(),
        receipt_proof: p.clone(),
        federation,
    };
    // Named: the sighash is over the new federation's witness script.
    let Ok(HsmResponse::Signature(sig)) = hsm.execute(cmd(Some(new.clone().into()))) else { panic!("signs") };
    let pk = public_key(&mut hsm);
    assert!(new.verify_signature(&secp, &tx, 0, VALUE, &pk, &sig));
    assert!(!old.verify_signature(&secp, &tx, 0, VALUE, &pk, &sig));
    // The input commits to the new federation's script: claiming the old
    // one (of which the device is a member too) is refused.
    assert_eq!(hsm.execute(cmd(Some(old.clone().into()))), Err(HsmError::ScriptMismatch { input: 0 }));
    // A federation the device's key is not in.
    let strangers: Vec<_> = (0..3)
        .map(|i| bitcoin::secp256k1::PublicKey::from_secret_key(&secp, &secret("stranger", i)))
        .collect();
    let other = Federation::p2sh_p2wsh_erp(&strangers, old.emergency(), old.csv()).unwrap();
    assert_eq!(hsm.execute(cmd(Some(other.into()))), Err(HsmError::NotAFederationMember(pk)));
    // Unnamed, the device uses the federation it was provisioned for: a
    // signature that does not spend this input.
    let Ok(HsmResponse::Signature(sig)) = hsm.execute(cmd(None)) else { panic!("signs") };
    assert!(!new.verify_signature(&secp, &tx, 0, VALUE, &pk, &sig));
}
