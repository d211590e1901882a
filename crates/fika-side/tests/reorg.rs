//! The block tree: best chain by cumulative difficulty, reorgs that revert
//! balances and the system contract's state, orphans.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fika_side::{BlockStatus, ChainError, DifficultyRule, SideChain, U256, WEI_PER_RBTC};

#[test]
fn reorg_to_a_heavier_branch_reverts_balances_and_system_state() {
    let mut chain = new_chain();
    let g = chain.genesis_hash();
    let bob = addr(BOB);

    // Branch A: Alice pays Bob 1 RBTC and bumps the counter.
    let pay = transfer(ALICE, 0, bob, WEI_PER_RBTC);
    let bump = tx(ALICE, 1, Some(COUNTER), 7, vec![0x01], 100_000);
    let (pay_h, bump_h) = (pay.tx_hash(), bump.tx_hash());
    let a1 = mine(&mut chain, g, &[pay, bump]);
    assert_eq!(chain.balance(&bob), 11 * WEI_PER_RBTC);
    assert_eq!(chain.system().count, 1);
    assert_eq!(chain.balance(&COUNTER), 7);
    assert!(chain.receipt(&pay_h).is_some());
    let a_logs = chain.logs(Some(COUNTER), Some(incremented_topic()));
    assert_eq!(a_logs.len(), 1);

    // Branch B, equal weight first: the first-seen tip stays.
    let b1 = build(&mut chain, g, &[], 20);
    let out = chain.accept_block(b1.clone()).unwrap();
    assert_eq!(out.status, BlockStatus::Connected);
    assert_eq!(out.tip_change, None);
    assert_eq!(chain.best_hash(), a1);

    // B becomes heavier: reorg.
    let b1h = b1.hash();
    let b2 = build(&mut chain, b1h, &[], 10);
    let b2h = b2.hash();
    let out = chain.accept_block(b2).unwrap();
    let change = out.tip_change.unwrap();
    assert!(change.is_reorg());
    assert_eq!(change.old_tip, a1);
    assert_eq!(change.new_tip, b2h);
    assert_eq!(change.fork_point, g);
    assert_eq!(change.disconnected, vec![a1]);
    assert_eq!(change.connected, vec![b1h, b2h]);
    assert_eq!(chain.best_hash(), b2h);
    assert_eq!(chain.balance(&bob), 10 * WEI_PER_RBTC);
    assert_eq!(chain.balance(&addr(ALICE)), 10 * WEI_PER_RBTC);
    assert_eq!(chain.nonce(&addr(ALICE)), 0);
    assert_eq!(chain.system().count, 0);
    assert_eq!(chain.balance(&COUNTER), 0);
    assert!(chain.receipt(&pay_h).is_none());
    assert!(chain.receipt(&bump_h).is_none());
    assert!(chain.logs(Some(COUNTER), None).is_empty());
    // The old branch's state is still there.
    assert_eq!(chain.state_at(&a1).unwrap().system.count, 1);

    // A grows back heavier: everything returns.
    let a2 = mine(&mut chain, a1, &[]);
    assert_eq!(chain.best_hash(), b2h, "a tie keeps the current tip");
    let a3 = mine(&mut chain, a2, &[]);
    assert_eq!(chain.best_hash(), a3);
    assert_eq!(chain.balance(&bob), 11 * WEI_PER_RBTC);
    assert_eq!(chain.system().count, 1);
    assert_eq!(chain.balance(&COUNTER), 7);
    assert_eq!(chain.receipt(&bump_h).unwrap().block_hash, a1);
    assert_eq!(chain.logs(Some(COUNTER), Some(incremented_topic())), a_logs);
}

#[test]
fn the_same_transaction_on_two_branches() {
    let mut chain = new_chain();
    let g = chain.genesis_hash();
    let pay = transfer(ALICE, 0, addr(BOB), 5);
    let h = pay.tx_hash();
    let a1 = mine(&mut chain, g, std::slice::from_ref(&pay));
    let b1 = build(&mut chain, g, &[], 11);
    let b1h = b1.hash();
    chain.accept_block(b1).unwrap();
    let b2 = mine(&mut chain, b1h, std::slice::from_ref(&pay));
    assert_eq!(chain.best_hash(), b2);
    assert_eq!(chain.receipt(&h).unwrap().block_hash, b2);
    let _ = a1;
}

#[test]
fn heaviest_not_longest_wins() {
    let mut config = chain_config();
    config.genesis.difficulty = U256::from(1000u32);
    config.difficulty =
        DifficultyRule::Adjusting { duration_limit: 14, bound_divisor: 2, min_difficulty: U256::from(10u32) };
    let mut chain = SideChain::new(config, Counter::default());
    let g = chain.genesis_hash();
    // Slow branch: 3 blocks 100 s apart, difficulty halves each time.
    let mut slow = g;
    for _ in 0..3 {
        let b = build(&mut chain, slow, &[], 100);
        slow = chain.accept_block(b).unwrap().hash;
    }
    assert_eq!(chain.header(&slow).unwrap().difficulty, U256::from(125u32));
    assert_eq!(chain.best_hash(), slow);
    // Fast branch: 2 blocks 1 s apart, difficulty grows by half each time.
    let f1 = build(&mut chain, g, &[], 1);
    let f1h = f1.hash();
    assert_eq!(f1.header.difficulty, U256::from(1500u32));
    chain.accept_block(f1).unwrap();
    assert_eq!(chain.best_hash(), f1h, "1500 > 500 + 250 + 125");
    assert_eq!(chain.best_number(), 1);
    // A header lying about its difficulty is rejected.
    let mut bad = build(&mut chain, f1h, &[], 1);
    bad.header.difficulty = U256::from(10_000u32);
    let tag = bad.header.hash_for_merged_mining();
    bad.header.merge_mining = Some(mm_proof(&tag));
    let err = chain.accept_block(bad).unwrap_err();
    assert!(matches!(err, ChainError::BadDifficulty { .. }), "{err}");
}

#[test]
fn orphans_connect_when_their_parent_arrives() {
    let mut miner = new_chain();
    let mut node = new_chain();
    let g = miner.genesis_hash();
    let b1 = build(&mut miner, g, &[transfer(ALICE, 0, addr(BOB), 1)], 10);
    let b1h = b1.hash();
    miner.accept_block(b1.clone()).unwrap();
    let b2 = build(&mut miner, b1h, &[transfer(ALICE, 1, addr(BOB), 1)], 10);
    let b2h = b2.hash();
    miner.accept_block(b2.clone()).unwrap();
    let b3 = build(&mut miner, b2h, &[], 10);
    let b3h = b3.hash();
    miner.accept_block(b3.clone()).unwrap();

    // Delivered out of order: b3, b2 wait; b1 connects all three.
    assert_eq!(node.accept_block(b3.clone()).unwrap().status, BlockStatus::Orphan);
    assert_eq!(node.accept_block(b2).unwrap().status, BlockStatus::Orphan);
    assert_eq!(node.accept_block(b3).unwrap().status, BlockStatus::Orphan);
    assert_eq!(node.orphan_count(), 2);
    assert_eq!(node.best_hash(), g);
    let out = node.accept_block(b1).unwrap();
    assert_eq!(out.connected, vec![b1h, b2h, b3h]);
    assert_eq!(out.tip_change.unwrap().connected, vec![b1h, b2h, b3h]);
    assert_eq!(node.orphan_count(), 0);
    assert_eq!(node.best_hash(), miner.best_hash());
    assert_eq!(node.balance(&addr(BOB)), miner.balance(&addr(BOB)));
}

#[test]
fn orphan_pool_is_bounded_and_invalid_orphans_are_dropped() {
    let mut config = chain_config();
    config.max_orphans = 2;
    let mut miner = new_chain();
    let mut node = SideChain::new(config, Counter::default());
    let g = miner.genesis_hash();
    let mut blocks = Vec::new();
    let mut tip = g;
    for _ in 0..4 {
        let b = build(&mut miner, tip, &[], 10);
        tip = miner.accept_block(b.clone()).unwrap().hash;
        blocks.push(b);
    }
    for b in &blocks[1..] {
        assert_eq!(node.accept_block(b.clone()).unwrap().status, BlockStatus::Orphan);
    }
    assert_eq!(node.orphan_count(), 2, "the oldest orphan was evicted");
    assert!(!node.is_orphan(&blocks[1].hash()));
    let out = node.accept_block(blocks[0].clone()).unwrap();
    // blocks[1] was evicted, so blocks[2..] still wait.
    assert_eq!(out.connected, vec![blocks[0].hash()]);
    assert_eq!(node.orphan_count(), 2);
    let out = node.accept_block(blocks[1].clone()).unwrap();
    assert_eq!(out.connected.len(), 3);
    assert_eq!(node.best_hash(), tip);

    // An orphan whose parent turns out invalid is rejected with it.
    let mut node = new_chain();
    let mut bad = build(&mut miner, g, &[], 10);
    bad.header.state_root = [9; 32];
    let tag = bad.header.hash_for_merged_mining();
    bad.header.merge_mining = Some(mm_proof(&tag));
    let bad_h = bad.hash();
    let child = chain_child_again(&mut miner, &blocks, bad_h);
    let child_h = child.hash();
    assert_eq!(node.accept_block(child).unwrap().status, BlockStatus::Orphan);
    assert!(matches!(node.accept_block(bad).unwrap_err(), ChainError::BadStateRoot { .. }));
    assert_eq!(node.orphan_count(), 0, "the orphan fell with its parent");
    assert_eq!(
        node.accept_block(chain_child_again(&mut miner, &blocks, bad_h)).unwrap_err(),
        ChainError::KnownInvalid(child_h)
    );
}

#[test]
fn deep_reorg_through_snapshots() {
    let mut chain = new_chain();
    let g = chain.genesis_hash();
    let mut a = g;
    for n in 0..30u64 {
        a = mine(&mut chain, a, &[transfer(ALICE, n, addr(BOB), 1)]);
    }
    assert_eq!(chain.balance(&addr(BOB)), 10 * WEI_PER_RBTC + 30);
    let mut b = g;
    for i in 0..31u64 {
        let block = build(&mut chain, b, &[], 10 + (i == 0) as u64);
        b = chain.accept_block(block).unwrap().hash;
    }
    assert_eq!(chain.best_hash(), b);
    assert_eq!(chain.best_number(), 31);
    assert_eq!(chain.balance(&addr(BOB)), 10 * WEI_PER_RBTC);
    assert_eq!(chain.nonce(&addr(ALICE)), 0);
}

/// A block claiming `parent` as its parent (built on `blocks[0]`, then
/// re-pointed and re-tagged).
fn chain_child_again(
    miner: &mut SideChain<Counter>,
    blocks: &[fika_side::SideBlock],
    parent: [u8; 32],
) -> fika_side::SideBlock {
    let mut c = build(miner, blocks[0].hash(), &[], 10);
    c.header.parent_hash = parent;
    let tag = c.header.hash_for_merged_mining();
    c.header.merge_mining = Some(mm_proof(&tag));
    c
}
