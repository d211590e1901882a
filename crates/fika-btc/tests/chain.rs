//! Chain behaviour: reorganisations, double spends, maturity, retargeting,
//! bad blocks, orphans, headers-first, PoW modes.
#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::{Amount, OutPoint};
use common::*;
use fika_btc::chain::{ChainError, ChainState, Disposition};
use fika_btc::params::{ChainParams, PowMode};
use fika_btc::pow::{self, PowError};
use fika_btc::validate::{BlockError, TxError};

#[test]
fn reorg_to_more_work_branch_restores_the_right_utxo_set() {
    let alice = key(1);
    let bob = key(2);
    let carol = key(3);
    // Common trunk: 105 blocks to alice, so coinbases 1..=5 are mature.
    let (mut chain, trunk) = chain_with(105, &alice.wpkh);
    let fork = chain.tip_hash();

    // Branch A (5 blocks): alice pays bob from coinbase 1, then bob pays carol.
    let (cb1, v1) = coinbase_out(&trunk[0]);
    let a_tx1 = spend_wpkh(&alice, &[(cb1, v1)], &[(bob.wpkh.clone(), v1.to_sat() - 1000)]);
    let a_tx2 = spend_wpkh(
        &bob,
        &[(OutPoint::new(a_tx1.compute_txid(), 0), Amount::from_sat(v1.to_sat() - 1000))],
        &[(carol.wpkh.clone(), 10_000), (bob.wpkh.clone(), v1.to_sat() - 12_000)],
    );
    let mut branch_a = vec![block_on(&chain, fork, vec![a_tx1.clone()], &alice.wpkh, 1)];
    accept(&mut chain, &branch_a[0]);
    branch_a.push(block_on(&chain, chain.tip_hash(), vec![a_tx2], &alice.wpkh, 1));
    accept(&mut chain, &branch_a[1]);
    // ... and a parent and child confirmed together in one block.
    let (cb3, v3) = coinbase_out(&trunk[2]);
    let pair_parent = spend_wpkh(&alice, &[(cb3, v3)], &[(bob.wpkh.clone(), v3.to_sat() - 1000)]);
    let pp_out = (OutPoint::new(pair_parent.compute_txid(), 0), Amount::from_sat(v3.to_sat() - 1000));
    let pair_child = spend_wpkh(&bob, &[pp_out], &[(carol.wpkh.clone(), pp_out.1.to_sat() - 1000)]);
    for i in 0..3 {
        let txs = if i == 0 { vec![pair_parent.clone(), pair_child.clone()] } else { vec![] };
        let b = block_on(&chain, chain.tip_hash(), txs, &alice.wpkh, 1);
        accept(&mut chain, &b);
        branch_a.push(b);
    }
    assert_eq!(chain.tip_height(), 110);
    let a_tip = chain.tip_hash();

    // Branch B (7 blocks) from the same fork: coinbase 1 goes to carol instead
    // (double spend of A's first tx) and coinbase 2 to bob.
    let (cb2, v2) = coinbase_out(&trunk[1]);
    let b_tx1 = spend_wpkh(&alice, &[(cb1, v1)], &[(carol.wpkh.clone(), v1.to_sat() - 5000)]);
    let b_tx2 = spend_wpkh(&alice, &[(cb2, v2)], &[(bob.wpkh.clone(), v2.to_sat() - 5000)]);
    let mut branch_b: Vec<bitcoin::Block> = Vec::new();
    let mut parent = fork;
    for i in 0..7 {
        let txs = match i {
            0 => vec![b_tx1.clone()],
            3 => vec![b_tx2.clone()],
            _ => vec![],
        };
        let b = block_on(&chain, parent, txs, &bob.wpkh, 2);
        parent = b.block_hash();
        let outcome = chain.accept_block(b.clone(), now_for(&b) + 100).unwrap();
        if i < 5 {
            // Not more work than A yet (equal at i == 4: first seen stays).
            assert!(!outcome.tip_changed, "block {i} of B must not move the tip");
            assert_eq!(chain.tip_hash(), a_tip);
        } else if i == 5 {
            assert!(outcome.tip_changed);
            let disconnected: Vec<_> = branch_a.iter().rev().map(|b| b.block_hash()).collect();
            assert_eq!(outcome.disconnected, disconnected);
            assert_eq!(outcome.connected.len(), 6);
            assert_eq!(outcome.connected[0], branch_b[0].block_hash());
        }
        branch_b.push(b);
    }
    assert_eq!(chain.tip_hash(), branch_b[6].block_hash());
    assert_eq!(chain.tip_height(), 112);

    // The UTXO set equals one built from genesis + trunk + B only.
    let only_b: Vec<_> = trunk.iter().chain(&branch_b).cloned().collect();
    let reference = replay(params(), &only_b);
    assert_eq!(chain.utxo(), reference.utxo());
    assert_eq!(chain.utxo().balance(&carol.wpkh).to_sat(), v1.to_sat() - 5000);
    assert!(chain.utxo().get(&OutPoint::new(a_tx1.compute_txid(), 0)).is_none());

    // Extend A to beat B again (reorg back, depth 7).
    let mut parent = a_tip;
    let mut a_more = Vec::new();
    for _ in 0..3 {
        let b = block_on(&chain, parent, vec![], &alice.wpkh, 3);
        parent = b.block_hash();
        chain.accept_block(b.clone(), now_for(&b) + 100).unwrap();
        a_more.push(b);
    }
    assert_eq!(chain.tip_hash(), parent);
    let only_a: Vec<_> = trunk.iter().chain(&branch_a).chain(&a_more).cloned().collect();
    let reference = replay(params(), &only_a);
    assert_eq!(chain.utxo(), reference.utxo());
    assert_eq!(chain.utxo().balance(&carol.wpkh).to_sat(), 10_000 + v3.to_sat() - 2000);
}

#[test]
fn equal_work_keeps_the_first_seen_tip() {
    let k = key(1);
    let (mut chain, _) = chain_with(3, &k.wpkh);
    let parent = chain.tip_hash();
    let first = block_on(&chain, parent, vec![], &k.wpkh, 10);
    let second = block_on(&chain, parent, vec![], &k.wpkh, 11);
    accept(&mut chain, &first);
    let o = chain.accept_block(second.clone(), now_for(&second)).unwrap();
    assert!(!o.tip_changed);
    assert_eq!(chain.tip_hash(), first.block_hash());
    // A child of the second one wins.
    let child = block_on(&chain, second.block_hash(), vec![], &k.wpkh, 11);
    let o = accept(&mut chain, &child);
    assert_eq!(o.disconnected, vec![first.block_hash()]);
    assert_eq!(o.connected, vec![second.block_hash(), child.block_hash()]);
}

#[test]
fn double_spend_is_refused_by_block_validation() {
    let alice = key(1);
    let bob = key(2);
    let (mut chain, blocks) = chain_with(101, &alice.wpkh);
    let (cb, v) = coinbase_out(&blocks[0]);
    let tx1 = spend_wpkh(&alice, &[(cb, v)], &[(bob.wpkh.clone(), v.to_sat() - 1000)]);
    let tx2 = spend_wpkh(&alice, &[(cb, v)], &[(alice.wpkh.clone(), v.to_sat() - 2000)]);
    let tip = chain.tip_hash();

    // Two spends of one coin in one block.
    let bad = block_on(&chain, tip, vec![tx1.clone(), tx2.clone()], &alice.wpkh, 1);
    let err = chain.accept_block(bad.clone(), now_for(&bad)).unwrap_err();
    assert!(
        matches!(&err, ChainError::InvalidBlock { error, .. } if **error == BlockError::DoubleSpend(cb)),
        "{err}"
    );
    assert_eq!(chain.tip_hash(), tip);

    // Spend in one block, spend again in the next.
    let good = block_on(&chain, tip, vec![tx1], &alice.wpkh, 2);
    accept(&mut chain, &good);
    let again = block_on(&chain, good.block_hash(), vec![tx2], &alice.wpkh, 2);
    let err = chain.accept_block(again.clone(), now_for(&again)).unwrap_err();
    assert!(
        matches!(&err, ChainError::InvalidBlock { error, .. }
            if matches!(**error, BlockError::Tx { error: TxError::MissingInput(op), .. } if op == cb)),
        "{err}"
    );
    assert_eq!(chain.tip_hash(), good.block_hash());
}

#[test]
fn coinbase_maturity_is_enforced_at_exactly_100() {
    let alice = key(1);
    let bob = key(2);
    // Coinbase of height 1; tip at 99, so the next block (height 100) is at depth 99.
    let (mut chain, blocks) = chain_with(99, &alice.wpkh);
    assert_eq!(chain.params().coinbase_maturity, 100);
    let (cb, v) = coinbase_out(&blocks[0]);
    let tx = spend_wpkh(&alice, &[(cb, v)], &[(bob.wpkh.clone(), v.to_sat() - 1000)]);
    let early = block_on(&chain, chain.tip_hash(), vec![tx.clone()], &alice.wpkh, 1);
    let err = chain.accept_block(early.clone(), now_for(&early)).unwrap_err();
    assert!(
        matches!(&err, ChainError::InvalidBlock { error, .. }
            if matches!(**error, BlockError::Tx { error: TxError::ImmatureCoinbase { depth: 99, required: 100, .. }, .. })),
        "{err}"
    );
    assert_eq!(chain.tip_height(), 99);
    // One more block: height 101 spends at depth 100.
    extend(&mut chain, 1, &alice.wpkh, 0);
    let ok = block_on(&chain, chain.tip_hash(), vec![tx], &alice.wpkh, 1);
    accept(&mut chain, &ok);
    assert_eq!(chain.utxo().balance(&bob.wpkh).to_sat(), v.to_sat() - 1000);
}

#[test]
fn retarget_halves_the_target_when_blocks_come_twice_as_fast() {
    // Real mainnet genesis and constants, simulated PoW; blocks every 300 s
    // instead of 600 s across the first 2016-block interval.
    let params = ChainParams::mainnet();
    assert_eq!(params.pow_mode, PowMode::Simulated);
    let mut chain = ChainState::new(params.clone());
    let k = key(1);
    for _ in 0..2015 {
        let mut b = block_on(&chain, chain.tip_hash(), vec![], &k.wpkh, 0);
        b.header.time = chain.tip().header.time + 300;
        accept(&mut chain, &b);
    }
    assert_eq!(chain.tip_height(), 2015);
    let old = pow::decode_compact(0x1d00_ffff).unwrap();
    let next = chain.next_bits();
    assert_ne!(next.to_consensus(), 0x1d00_ffff);
    let new = pow::decode_compact(next.to_consensus()).unwrap();
    // Work doubles (target halves), up to Core's off-by-one (2015/2016) and compact rounding.
    let ratio = new.to_work().log2() - old.to_work().log2();
    assert!((ratio - 1.0).abs() < 0.01, "log2 work ratio {ratio}");
    // The next block must carry the new bits; the old bits are refused.
    let mut stale = block_on(&chain, chain.tip_hash(), vec![], &k.wpkh, 0);
    stale.header.bits = bitcoin::CompactTarget::from_consensus(0x1d00_ffff);
    stale.header.merkle_root = fika_btc::merkle::block_merkle_root(&stale);
    let err = chain.accept_block(stale.clone(), now_for(&stale)).unwrap_err();
    assert!(
        matches!(&err, ChainError::InvalidHeader { error, .. } if matches!(**error, BlockError::Pow(PowError::BadBits { .. }))),
        "{err}"
    );
    let b = block_on(&chain, chain.tip_hash(), vec![], &k.wpkh, 0);
    assert_eq!(b.header.bits, next);
    accept(&mut chain, &b);
    assert!(chain.tip().chain_work > chain.entry(&b.header.prev_blockhash).unwrap().chain_work);
}

#[test]
fn wallet_balance_by_script_matches_the_utxo_set() {
    let alice = key(1);
    let bob = key(2);
    let (mut chain, blocks) = chain_with(110, &alice.wpkh);
    // A few payments alice -> bob and bob -> alice.
    let mut txs = Vec::new();
    for (i, b) in blocks.iter().take(4).enumerate() {
        let (op, v) = coinbase_out(b);
        txs.push(spend_wpkh(
            &alice,
            &[(op, v)],
            &[
                (bob.wpkh.clone(), 1_000_000 * (i as u64 + 1)),
                (alice.wpkh.clone(), v.to_sat() - 2_000_000 * (i as u64 + 1)),
            ],
        ));
    }
    let blk = block_on(&chain, chain.tip_hash(), txs.clone(), &alice.wpkh, 1);
    accept(&mut chain, &blk);
    let back = spend_wpkh(
        &bob,
        &[(OutPoint::new(txs[1].compute_txid(), 0), Amount::from_sat(2_000_000))],
        &[(alice.wpkh.clone(), 1_500_000)],
    );
    let blk2 = block_on(&chain, chain.tip_hash(), vec![back], &bob.wpkh, 1);
    accept(&mut chain, &blk2);

    // A naive wallet: walk the best chain, add outputs paying the script, remove spent ones.
    let wallet = |script: &bitcoin::Script| -> u64 {
        let mut unspent = std::collections::BTreeMap::new();
        for h in 1..=chain.tip_height() {
            let block = chain.block_at_height(h).unwrap();
            for tx in &block.txdata {
                for i in &tx.input {
                    unspent.remove(&i.previous_output);
                }
                for (vout, o) in tx.output.iter().enumerate() {
                    if o.script_pubkey.as_script() == script {
                        unspent.insert(OutPoint::new(tx.compute_txid(), vout as u32), o.value.to_sat());
                    }
                }
            }
        }
        unspent.values().sum()
    };
    for s in [&alice.wpkh, &bob.wpkh] {
        assert_eq!(chain.utxo().balance(s).to_sat(), wallet(s));
    }
    assert_eq!(chain.utxo().balance(&bob.wpkh).to_sat(), 8_000_000 + 5_000_000_000);
    // Spendable excludes immature coinbases (bob's coinbase at the tip).
    let tip_h = chain.tip_height();
    assert_eq!(chain.utxo().spendable_balance(&bob.wpkh, tip_h + 1, 100).to_sat(), 8_000_000);
}

#[test]
fn bad_merkle_root_is_rejected_without_poisoning_the_block() {
    let k = key(1);
    let (mut chain, _) = chain_with(2, &k.wpkh);
    let tip = chain.tip_hash();
    let good = block_on(&chain, tip, vec![], &k.wpkh, 0);
    let mut bad = good.clone();
    bad.txdata[0].output[0].value = Amount::from_sat(1); // header unchanged, root now wrong
    let err = chain.accept_block(bad.clone(), now_for(&bad)).unwrap_err();
    assert!(
        matches!(&err, ChainError::InvalidBlock { error, .. } if matches!(**error, BlockError::BadMerkleRoot { .. })),
        "{err}"
    );
    assert_eq!(chain.tip_hash(), tip);
    // Same header with the right transactions is still accepted.
    accept(&mut chain, &good);
    assert_eq!(chain.tip_hash(), good.block_hash());
}

#[test]
fn overspending_coinbase_is_rejected() {
    let k = key(1);
    let (mut chain, _) = chain_with(2, &k.wpkh);
    let tip = chain.tip_hash();
    let subsidy = chain.params().subsidy(3);
    let bad = block_on_with_fee(&chain, tip, vec![], &k.wpkh, 0, 1);
    let err = chain.accept_block(bad.clone(), now_for(&bad)).unwrap_err();
    assert_eq!(
        err,
        ChainError::InvalidBlock {
            hash: bad.block_hash(),
            error: Box::new(BlockError::CoinbaseOverspend {
                allowed: subsidy,
                claimed: subsidy + Amount::from_sat(1)
            })
        }
    );
    assert_eq!(chain.tip_hash(), tip);
    // It stays known invalid, and so do its children.
    assert!(matches!(chain.accept_block(bad.clone(), now_for(&bad)), Err(ChainError::KnownInvalid { .. })));
    let child = block_on(&chain, bad.block_hash(), vec![], &k.wpkh, 0);
    assert!(matches!(
        chain.accept_block(child.clone(), now_for(&child)),
        Err(ChainError::InvalidParent { .. })
    ));
}

#[test]
fn invalid_signature_is_rejected() {
    let alice = key(1);
    let mallory = key(9);
    let (mut chain, blocks) = chain_with(101, &alice.wpkh);
    let (cb, v) = coinbase_out(&blocks[0]);
    // Mallory signs alice's coin with her own key but alice's pubkey hash is on the output.
    let mut tx = spend_wpkh(&mallory, &[(cb, v)], &[(mallory.wpkh.clone(), v.to_sat() - 1000)]);
    let tip = chain.tip_hash();
    let bad = block_on(&chain, tip, vec![tx.clone()], &alice.wpkh, 0);
    let err = chain.accept_block(bad.clone(), now_for(&bad)).unwrap_err();
    assert!(
        matches!(&err, ChainError::InvalidBlock { error, .. }
            if matches!(**error, BlockError::Tx { index: 1, error: TxError::ScriptFailed { input: 0, .. }, .. })),
        "{err}"
    );
    // A correctly keyed signature over different outputs also fails.
    tx = spend_wpkh(&alice, &[(cb, v)], &[(mallory.wpkh.clone(), v.to_sat() - 1000)]);
    tx.output[0].value = Amount::from_sat(v.to_sat() - 999);
    let bad2 = block_on(&chain, tip, vec![tx], &alice.wpkh, 1);
    assert!(chain.accept_block(bad2.clone(), now_for(&bad2)).is_err());
    assert_eq!(chain.tip_hash(), tip);
    assert_eq!(chain.utxo().get(&cb).map(|c| c.txout.value), Some(v));
}

/// Builds `n` blocks on `parent` without submitting them to `chain` (only
/// their headers go into a scratch copy, so invalid bodies are fine).
#[track_caller]
fn branch(
    chain: &ChainState,
    parent: bitcoin::BlockHash,
    n: usize,
    txs: impl Fn(usize) -> Vec<bitcoin::Transaction>,
    payout: &bitcoin::Script,
) -> Vec<bitcoin::Block> {
    let mut scratch = chain.clone();
    let mut parent = parent;
    (0..n)
        .map(|i| {
            let blk = block_on(&scratch, parent, txs(i), payout, 2);
            scratch.accept_header(&blk.header, now_for(&blk)).unwrap();
            parent = blk.block_hash();
            blk
        })
        .collect()
}

#[test]
fn invalid_block_in_a_heavier_branch_returns_to_the_best_valid_chain() {
    let alice = key(1);
    let mallory = key(9);
    let (mut chain, trunk) = chain_with(101, &alice.wpkh);
    let fork = chain.tip_hash();
    let a: Vec<_> = extend(&mut chain, 3, &alice.wpkh, 1);
    let a_tip = chain.tip_hash();
    // Branch B: 5 blocks, the 2nd carries a forged spend; headers are fine.
    let (cb, v) = coinbase_out(&trunk[0]);
    let forged = spend_wpkh(&mallory, &[(cb, v)], &[(mallory.wpkh.clone(), v.to_sat() - 1000)]);
    let b = branch(&chain, fork, 5, |i| if i == 1 { vec![forged.clone()] } else { vec![] }, &mallory.wpkh);
    // Deliver B's last block first (orphan), then the rest in reverse: all pooled until b[0].
    for blk in b[1..].iter().rev() {
        let o = chain.accept_block(blk.clone(), now_for(blk)).unwrap();
        assert!(matches!(o.disposition, Disposition::Orphan { .. }));
    }
    assert_eq!(chain.orphan_count(), 4);
    let o = chain.accept_block(b[0].clone(), now_for(&b[0])).unwrap();
    assert_eq!(o.orphans_stored.len(), 4);
    // b[0] is valid and has the same work as A's first block: tip stays on A.
    assert_eq!(chain.tip_hash(), a_tip);
    assert!(!o.tip_changed);
    assert_eq!(o.invalid.len(), 1);
    assert_eq!(o.invalid[0].0, b[1].block_hash());
    assert!(chain.entry(&b[4].block_hash()).unwrap().validity.is_invalid());
    assert!(!chain.entry(&b[0].block_hash()).unwrap().validity.is_invalid());
    let only_a: Vec<_> = trunk.iter().chain(&a).cloned().collect();
    assert_eq!(chain.utxo(), replay(params(), &only_a).utxo());
}

#[test]
fn partial_branch_with_more_work_stays_when_its_tail_is_invalid() {
    let alice = key(1);
    let mallory = key(9);
    let (mut chain, trunk) = chain_with(101, &alice.wpkh);
    let fork = chain.tip_hash();
    extend(&mut chain, 1, &alice.wpkh, 1);
    let (cb, v) = coinbase_out(&trunk[0]);
    let forged = spend_wpkh(&mallory, &[(cb, v)], &[(mallory.wpkh.clone(), v.to_sat() - 1000)]);
    // B: b0 b1 valid, b2 forged. Header-first: all headers, then blocks in reverse.
    let b = branch(&chain, fork, 3, |i| if i == 2 { vec![forged.clone()] } else { vec![] }, &mallory.wpkh);
    let headers: Vec<_> = b.iter().map(|x| x.header).collect();
    let outs = chain.accept_headers(&headers, now_for(&b[2])).unwrap();
    assert!(outs.iter().all(|o| o.is_new));
    assert_eq!(chain.best_header().hash, b[2].block_hash());
    assert_eq!(chain.tip_height(), 102);
    assert!(!chain.accept_block(b[2].clone(), now_for(&b[2])).unwrap().tip_changed);
    assert!(!chain.accept_block(b[1].clone(), now_for(&b[1])).unwrap().tip_changed);
    // b0 completes the branch: reorg, b2 fails, b1 (more work than A) is the new tip.
    let o = chain.accept_block(b[0].clone(), now_for(&b[0])).unwrap();
    assert!(o.tip_changed);
    assert_eq!(chain.tip_hash(), b[1].block_hash());
    assert_eq!(o.connected, vec![b[0].block_hash(), b[1].block_hash()]);
    assert_eq!(o.invalid[0].0, b[2].block_hash());
    assert_eq!(chain.best_header().hash, b[1].block_hash());
    let only_b: Vec<_> = trunk.iter().chain(&b[..2]).cloned().collect();
    assert_eq!(chain.utxo(), replay(params(), &only_b).utxo());
}

#[test]
fn timestamps_are_checked_against_mtp_and_the_clock() {
    let k = key(1);
    let (mut chain, _) = chain_with(12, &k.wpkh);
    let mtp = chain.median_time_past();
    let mut old = block_on(&chain, chain.tip_hash(), vec![], &k.wpkh, 0);
    old.header.time = mtp;
    let err = chain.accept_block(old.clone(), u64::from(mtp)).unwrap_err();
    assert!(
        matches!(&err, ChainError::InvalidHeader { error, .. } if matches!(**error, BlockError::TimeTooOld { .. })),
        "{err}"
    );
    let future = block_on(&chain, chain.tip_hash(), vec![], &k.wpkh, 0);
    let now = now_for(&future) - 7201;
    let err = chain.accept_block(future.clone(), now).unwrap_err();
    assert!(
        matches!(&err, ChainError::InvalidHeader { error, .. } if matches!(**error, BlockError::TimeTooNew { .. })),
        "{err}"
    );
    // Not marked invalid: accepted once the clock catches up.
    chain.accept_block(future.clone(), now + 1).unwrap();
}

#[test]
fn real_pow_mode_enforces_the_hash() {
    let mut p = params();
    p.pow_mode = PowMode::Real;
    let k = key(1);
    let mut chain = ChainState::new(p);
    let good = block_on(&chain, chain.tip_hash(), vec![], &k.wpkh, 0); // ground by the helper
    let mut bad = good.clone();
    let target = pow::decode_compact(bad.header.bits.to_consensus()).unwrap();
    while target.is_met_by(bad.block_hash()) {
        bad.header.nonce += 1;
    }
    let err = chain.accept_block(bad.clone(), now_for(&bad)).unwrap_err();
    assert!(
        matches!(&err, ChainError::InvalidHeader { error, .. } if matches!(**error, BlockError::Pow(PowError::HighHash { .. }))),
        "{err}"
    );
    accept(&mut chain, &good);
    // And simulated mode accepts the unground header.
    let mut chain2 = ChainState::new(params());
    accept(&mut chain2, &bad);
}

#[test]
fn orphan_pool_is_bounded_and_locators_work() {
    let k = key(1);
    let mut source = ChainState::new(params());
    let blocks = extend(&mut source, 30, &k.wpkh, 0);
    let mut chain = ChainState::new(params());
    chain.set_max_orphans(5);
    for b in blocks[1..].iter().rev() {
        chain.accept_block(b.clone(), now_for(b)).unwrap();
    }
    assert_eq!(chain.orphan_count(), 5);
    accept(&mut chain, &blocks[0]);
    // The pool kept the five most recent orphans (heights 6..2), which now connect.
    assert_eq!(chain.tip_height(), 6);
    assert_eq!(chain.orphan_count(), 0);
    for b in &blocks[1..] {
        let _ = chain.accept_block(b.clone(), now_for(b));
    }
    assert_eq!(chain.tip_hash(), source.tip_hash());
    assert_eq!(chain.utxo(), source.utxo());
    let loc = chain.locator();
    assert_eq!(loc[0], chain.tip_hash());
    assert_eq!(*loc.last().unwrap(), chain.genesis_hash());
    assert_eq!(chain.find_fork_in_locator(&loc), chain.tip_hash());
    assert_eq!(chain.ancestor_at_height(&chain.tip_hash(), 7), chain.hash_at_height(7));
    assert_eq!(chain.block_at_height(7).unwrap().block_hash(), blocks[6].block_hash());
    assert_eq!(
        chain.hashes_after(&blocks[27].block_hash(), 10),
        vec![blocks[28].block_hash(), blocks[29].block_hash()]
    );
}

mod order_independence {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand::seq::SliceRandom;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(48))]

        /// A random block tree delivered in a random order ends on a
        /// most-work tip with the UTXO set of exactly that branch.
        #[test]
        fn any_arrival_order_reaches_the_most_work_branch(
            parents in proptest::collection::vec(any::<proptest::sample::Index>(), 1..14),
            seed in any::<u64>(),
        ) {
            let k = key(1);
            let (base_chain, base) = chain_with(2, &k.wpkh);
            let mut scratch = base_chain.clone();
            let mut all: Vec<bitcoin::Block> = base.clone();
            for (i, p) in parents.iter().enumerate() {
                let parent = all[p.index(all.len())].block_hash();
                let b = block_on(&scratch, parent, vec![], &k.wpkh, 100 + i as u32);
                scratch.accept_header(&b.header, now_for(&b) + 1_000_000).unwrap();
                all.push(b);
            }
            let max_height = all.iter().map(|b| scratch.entry(&b.block_hash()).unwrap().height).max().unwrap();
            let mut order: Vec<usize> = (0..all.len()).collect();
            order.shuffle(&mut rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            let mut chain = ChainState::new(params());
            for i in order {
                let _ = chain.accept_block(all[i].clone(), now_for(&all[i]) + 1_000_000).unwrap();
            }
            prop_assert_eq!(chain.orphan_count(), 0);
            prop_assert_eq!(chain.tip_height(), max_height);
            let path: Vec<bitcoin::Block> =
                (1..=max_height).map(|h| (**chain.block_at_height(h).unwrap()).clone()).collect();
            let reference = replay(params(), &path);
            prop_assert_eq!(chain.utxo(), reference.utxo());
            prop_assert_eq!(chain.best_header().chain_work, chain.tip().chain_work);
        }
    }
}
