//! Mempool, block templates, locktimes and SPV proofs.
#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::{Amount, OutPoint, Sequence, Transaction};
use common::*;
use fika_btc::chain::ChainState;
use fika_btc::mempool::{Mempool, MempoolConfig, MempoolError};
use fika_btc::merkle;
use fika_btc::template::{build_template, mine_block};
use fika_btc::validate::{self, BlockError, TxError};

const COIN: u64 = 100_000_000;

fn pool() -> Mempool {
    Mempool::new(MempoolConfig::default())
}

fn mature_coin(blocks: &[bitcoin::Block], i: usize) -> (OutPoint, Amount) {
    coinbase_out(&blocks[i])
}

/// Mines everything in the pool into the next block and updates the pool.
#[track_caller]
fn mine_pool(chain: &mut ChainState, pool: &mut Mempool, payout: &bitcoin::Script) -> bitcoin::Block {
    let now = u64::from(chain.tip().header.time) + 10;
    let block = mine_block(chain, pool, payout, now, b"fika");
    let outcome = chain.accept_block(block.clone(), now).unwrap();
    pool.update_for_chain(&outcome, chain);
    block
}

#[test]
fn mempool_refuses_a_double_spend() {
    let alice = key(1);
    let bob = key(2);
    let (chain, blocks) = chain_with(101, &alice.wpkh);
    let mut pool = pool();
    let (cb, v) = mature_coin(&blocks, 0);
    let tx1 = spend_wpkh(&alice, &[(cb, v)], &[(bob.wpkh.clone(), v.to_sat() - 1000)]);
    let tx2 = spend_wpkh(&alice, &[(cb, v)], &[(alice.wpkh.clone(), v.to_sat() - 5000)]);
    let acc = pool.accept(tx1.clone(), &chain).unwrap();
    assert_eq!(acc.fee, Amount::from_sat(1000));
    assert_eq!(
        pool.accept(tx1.clone(), &chain).unwrap_err(),
        MempoolError::AlreadyInPool(tx1.compute_txid())
    );
    assert_eq!(
        pool.accept(tx2, &chain).unwrap_err(),
        MempoolError::Conflict { outpoint: cb, existing: tx1.compute_txid() }
    );
    assert_eq!(pool.len(), 1);
    assert_eq!(pool.spender_of(&cb), Some(tx1.compute_txid()));
}

#[test]
fn mempool_validates_scripts_maturity_and_values() {
    let alice = key(1);
    let mallory = key(9);
    let (mut chain, blocks) = chain_with(99, &alice.wpkh);
    let mut pool = pool();
    let (cb, v) = mature_coin(&blocks, 0);
    // Depth 99 for the next block (height 100): refused.
    let tx = spend_wpkh(&alice, &[(cb, v)], &[(alice.wpkh.clone(), v.to_sat() - 1000)]);
    assert!(matches!(
        pool.accept(tx.clone(), &chain),
        Err(MempoolError::Invalid { error: TxError::ImmatureCoinbase { depth: 99, required: 100, .. }, .. })
    ));
    extend(&mut chain, 1, &alice.wpkh, 0);
    // Wrong key.
    let forged = spend_wpkh(&mallory, &[(cb, v)], &[(mallory.wpkh.clone(), v.to_sat() - 1000)]);
    assert!(matches!(
        pool.accept(forged, &chain),
        Err(MempoolError::Invalid { error: TxError::ScriptFailed { input: 0, .. }, .. })
    ));
    // Outputs above inputs.
    let greedy = spend_wpkh(&alice, &[(cb, v)], &[(alice.wpkh.clone(), v.to_sat() + 1)]);
    assert!(matches!(
        pool.accept(greedy, &chain),
        Err(MempoolError::Invalid { error: TxError::InsufficientInputValue { .. }, .. })
    ));
    // Fee below 1 sat/vB.
    let cheap = spend_wpkh(&alice, &[(cb, v)], &[(alice.wpkh.clone(), v.to_sat() - 10)]);
    assert!(matches!(pool.accept(cheap, &chain), Err(MempoolError::FeeTooLow { .. })));
    // Depth 100: accepted.
    pool.accept(tx, &chain).unwrap();
    // Missing input.
    let ghost = spend_wpkh(&alice, &[(OutPoint::new(cb.txid, 5), v)], &[(alice.wpkh.clone(), 1000)]);
    assert!(matches!(
        pool.accept(ghost, &chain),
        Err(MempoolError::Invalid { error: TxError::MissingInput(_), .. })
    ));
}

#[test]
fn unconfirmed_chains_are_mined_parents_first_and_leave_the_pool() {
    let alice = key(1);
    let bob = key(2);
    let (mut chain, blocks) = chain_with(101, &alice.wpkh);
    let mut pool = pool();
    let (cb, v) = mature_coin(&blocks, 0);
    let parent = spend_wpkh(&alice, &[(cb, v)], &[(bob.wpkh.clone(), v.to_sat() - 1000)]);
    let p_out = (OutPoint::new(parent.compute_txid(), 0), Amount::from_sat(v.to_sat() - 1000));
    let child = spend_wpkh(&bob, &[p_out], &[(alice.wpkh.clone(), p_out.1.to_sat() - 50_000)]);
    let c_out = (OutPoint::new(child.compute_txid(), 0), Amount::from_sat(p_out.1.to_sat() - 50_000));
    let grandchild = spend_wpkh(&alice, &[c_out], &[(bob.wpkh.clone(), c_out.1.to_sat() - 1000)]);
    pool.accept(parent.clone(), &chain).unwrap();
    pool.accept(child.clone(), &chain).unwrap();
    pool.accept(grandchild.clone(), &chain).unwrap();
    assert_eq!(pool.get(&child.compute_txid()).unwrap().parents().len(), 1);
    let selected: Vec<_> =
        pool.select_for_block(4_000_000, 80_000).iter().map(|t| t.compute_txid()).collect();
    assert_eq!(selected, vec![parent.compute_txid(), child.compute_txid(), grandchild.compute_txid()]);

    let block = mine_pool(&mut chain, &mut pool, &alice.wpkh);
    assert_eq!(block.txdata.len(), 4);
    assert!(pool.is_empty());
    assert_eq!(chain.utxo().balance(&bob.wpkh).to_sat(), c_out.1.to_sat() - 1000);
    // Coinbase took subsidy + fees.
    assert_eq!(block.txdata[0].output[0].value.to_sat(), 50 * COIN + 1000 + 50_000 + 1000);
}

#[test]
fn selection_orders_by_package_fee_rate_with_deterministic_ties() {
    let alice = key(1);
    let (chain, blocks) = chain_with(110, &alice.wpkh);
    let mut pool = pool();
    let spend = |i: usize, fee: u64| {
        let (op, v) = mature_coin(&blocks, i);
        spend_wpkh(&alice, &[(op, v)], &[(alice.wpkh.clone(), v.to_sat() - fee)])
    };
    let low = spend(0, 200);
    let mid = spend(1, 5_000);
    let high = spend(2, 20_000);
    let tie_a = spend(3, 5_000);
    // CPFP: cheap parent, rich child -> package rate above `mid`.
    let cheap_parent = spend(4, 150);
    let cp_out = (OutPoint::new(cheap_parent.compute_txid(), 0), cheap_parent.output[0].value);
    let rich_child = spend_wpkh(&alice, &[cp_out], &[(alice.wpkh.clone(), cp_out.1.to_sat() - 30_000)]);
    for tx in [&low, &mid, &high, &tie_a, &cheap_parent, &rich_child] {
        pool.accept(tx.clone(), &chain).unwrap();
    }
    let order: Vec<_> = pool.select_for_block(4_000_000, 80_000).iter().map(|t| t.compute_txid()).collect();
    let ids = |txs: &[&Transaction]| txs.iter().map(|t| t.compute_txid()).collect::<Vec<_>>();
    assert_eq!(order, ids(&[&high, &cheap_parent, &rich_child, &mid, &tie_a, &low]));
    // Weight limit: room for roughly one transaction only.
    let w = high.weight().to_wu();
    let order: Vec<_> = pool.select_for_block(w + 10, 80_000).iter().map(|t| t.compute_txid()).collect();
    assert_eq!(order, ids(&[&high]));
    // Sigop limit: P2WPKH outputs cost nothing, so all fit in a zero budget
    // but a P2PKH output (one CHECKSIG, cost 4) does not.
    assert_eq!(pool.select_for_block(4_000_000, 0).len(), 6);
    let (op, v) = mature_coin(&blocks, 5);
    let to_pkh = spend_wpkh(&alice, &[(op, v)], &[(alice.pkh.clone(), v.to_sat() - 100_000)]);
    pool.accept(to_pkh.clone(), &chain).unwrap();
    let order = pool.select_for_block(4_000_000, 3);
    assert_eq!(order.len(), 6);
    assert!(!order.iter().any(|t| t.compute_txid() == to_pkh.compute_txid()));
    assert_eq!(pool.select_for_block(4_000_000, 4)[0].compute_txid(), to_pkh.compute_txid());
}

#[test]
fn size_limit_evicts_lowest_fee_rate_with_descendants() {
    let alice = key(1);
    let (chain, blocks) = chain_with(110, &alice.wpkh);
    let spend = |i: usize, fee: u64| {
        let (op, v) = mature_coin(&blocks, i);
        spend_wpkh(&alice, &[(op, v)], &[(alice.wpkh.clone(), v.to_sat() - fee)])
    };
    let low = spend(0, 1_000);
    let low_out = (OutPoint::new(low.compute_txid(), 0), low.output[0].value);
    let low_child = spend_wpkh(&alice, &[low_out], &[(alice.wpkh.clone(), low_out.1.to_sat() - 90_000)]);
    let mid = spend(1, 5_000);
    // Room for exactly these three.
    let limit: u64 = [&low, &low_child, &mid].iter().map(|t| t.total_size() as u64).sum();
    let mut pool = Mempool::new(MempoolConfig { max_bytes: limit, ..MempoolConfig::default() });
    for t in [&low, &low_child, &mid] {
        assert!(pool.accept(t.clone(), &chain).unwrap().evicted.is_empty());
    }
    assert_eq!(pool.len(), 3);
    // A fourth transaction overflows: the lowest rate (low) goes with its child.
    let high = spend(2, 20_000);
    let acc = pool.accept(high.clone(), &chain).unwrap();
    assert_eq!(acc.evicted, vec![low.compute_txid(), low_child.compute_txid()]);
    assert!(pool.contains(&mid.compute_txid()) && pool.contains(&high.compute_txid()));
    assert!(pool.total_bytes() <= limit);
    // With room for one transaction, one paying a lower rate than the incumbent is refused.
    let mut tiny =
        Mempool::new(MempoolConfig { max_bytes: high.total_size() as u64 + 1, ..MempoolConfig::default() });
    tiny.accept(high.clone(), &chain).unwrap();
    let poor = spend(4, 1_000);
    assert!(matches!(tiny.accept(poor, &chain), Err(MempoolError::MempoolFull { .. })));
    assert!(tiny.contains(&high.compute_txid()) && tiny.len() == 1);
}

#[test]
fn blocks_remove_conflicts_and_reorgs_readd_transactions() {
    let alice = key(1);
    let bob = key(2);
    let (mut chain, blocks) = chain_with(101, &alice.wpkh);
    let mut pool = pool();
    let (cb, v) = mature_coin(&blocks, 0);
    let in_pool = spend_wpkh(&alice, &[(cb, v)], &[(bob.wpkh.clone(), v.to_sat() - 1000)]);
    let child = spend_wpkh(
        &bob,
        &[(OutPoint::new(in_pool.compute_txid(), 0), in_pool.output[0].value)],
        &[(bob.wpkh.clone(), in_pool.output[0].value.to_sat() - 1000)],
    );
    pool.accept(in_pool.clone(), &chain).unwrap();
    pool.accept(child.clone(), &chain).unwrap();
    // A block confirms a conflicting spend of the same coin.
    let fork = chain.tip_hash();
    let rival = spend_wpkh(&alice, &[(cb, v)], &[(alice.wpkh.clone(), v.to_sat() - 3000)]);
    let blk = block_on(&chain, fork, vec![rival.clone()], &alice.wpkh, 1);
    let outcome = accept(&mut chain, &blk);
    let update = pool.update_for_chain(&outcome, &chain);
    assert_eq!(update.conflicted, vec![in_pool.compute_txid(), child.compute_txid()]);
    assert!(pool.is_empty());

    // Reorg: a heavier branch without `rival` from the same fork.
    let mut scratch = chain.clone();
    let b1 = block_on(&scratch, fork, vec![], &bob.wpkh, 2);
    scratch.accept_header(&b1.header, now_for(&b1)).unwrap();
    let b2 = block_on(&scratch, b1.block_hash(), vec![], &bob.wpkh, 2);
    chain.accept_block(b1.clone(), now_for(&b1)).unwrap();
    let outcome = chain.accept_block(b2.clone(), now_for(&b2)).unwrap();
    assert_eq!(outcome.disconnected, vec![blk.block_hash()]);
    let update = pool.update_for_chain(&outcome, &chain);
    assert_eq!(update.readded, vec![rival.compute_txid()]);
    assert!(pool.contains(&rival.compute_txid()));
    // The conflicting pair can't come back while `rival` is pooled.
    assert!(matches!(pool.accept(in_pool, &chain), Err(MempoolError::Conflict { .. })));
}

#[test]
fn absolute_and_relative_locktimes() {
    let alice = key(1);
    let (mut chain, blocks) = chain_with(105, &alice.wpkh);
    let mut pool = pool();
    // Absolute: lock_time = next height is not final yet.
    let (cb, v) = mature_coin(&blocks, 0);
    let mut tx = unsigned(&[(cb, v)], &[(alice.wpkh.clone(), v.to_sat() - 1000)]);
    tx.lock_time = bitcoin::absolute::LockTime::from_consensus(chain.tip_height() + 1);
    tx.input[0].sequence = Sequence::ENABLE_LOCKTIME_NO_RBF;
    fika_btc::sign::sign_p2wpkh_input(&secp(), &mut tx, 0, &alice.sk, v, bitcoin::EcdsaSighashType::All)
        .unwrap();
    assert!(matches!(
        pool.accept(tx.clone(), &chain),
        Err(MempoolError::Invalid { error: TxError::NonFinal { .. }, .. })
    ));
    let blk = block_on(&chain, chain.tip_hash(), vec![tx.clone()], &alice.wpkh, 1);
    let err = chain.accept_block(blk.clone(), now_for(&blk)).unwrap_err();
    assert!(err.to_string().contains("not final"), "{err}");
    extend(&mut chain, 1, &alice.wpkh, 0);
    pool.accept(tx.clone(), &chain).unwrap();
    mine_pool(&mut chain, &mut pool, &alice.wpkh);

    // Relative (BIP68): 3 blocks after the coin confirmed.
    let coin = (OutPoint::new(tx.compute_txid(), 0), tx.output[0].value);
    let coin_height = chain.tip_height();
    let mut rel = unsigned(&[coin], &[(alice.wpkh.clone(), coin.1.to_sat() - 1000)]);
    rel.input[0].sequence = Sequence::from_height(3);
    fika_btc::sign::sign_p2wpkh_input(
        &secp(),
        &mut rel,
        0,
        &alice.sk,
        coin.1,
        bitcoin::EcdsaSighashType::All,
    )
    .unwrap();
    for _ in 0..2 {
        // Next block heights coin_height+1, +2: locked.
        assert!(matches!(
            pool.accept(rel.clone(), &chain),
            Err(MempoolError::Invalid { error: TxError::SequenceLocked { .. }, .. })
        ));
        extend(&mut chain, 1, &alice.wpkh, 0);
    }
    assert_eq!(chain.tip_height() + 1, coin_height + 3);
    pool.accept(rel, &chain).unwrap();

    // Unit check of the BIP68 time lock arithmetic.
    let mut t = unsigned(&[coin], &[(alice.wpkh.clone(), 1)]);
    t.input[0].sequence = Sequence::from_512_second_intervals(2);
    let lock = validate::calculate_sequence_locks(&t, &[10], &|h| 1000 + h, true);
    assert_eq!(lock.min_time, 1009 + 1024 - 1);
    assert!(!validate::evaluate_sequence_locks(lock, 20, 2032));
    assert!(validate::evaluate_sequence_locks(lock, 20, 2033));
    t.version = bitcoin::transaction::Version::ONE;
    assert_eq!(validate::calculate_sequence_locks(&t, &[10], &|h| 1000 + h, true).min_time, -1);
}

#[test]
fn template_pays_fees_commits_witnesses_and_is_accepted() {
    let alice = key(1);
    let bob = key(2);
    // Mix of P2WPKH and P2PKH coins.
    let (mut chain, mut blocks) = chain_with(5, &alice.wpkh);
    blocks.extend(extend(&mut chain, 5, &alice.pkh, 0));
    extend(&mut chain, 100, &alice.wpkh, 0);
    let mut pool = pool();
    let (w_op, w_v) = mature_coin(&blocks, 0);
    let (l_op, l_v) = mature_coin(&blocks, 5);
    let wtx = spend_wpkh(&alice, &[(w_op, w_v)], &[(bob.wpkh.clone(), w_v.to_sat() - 3000)]);
    let ltx = spend_pkh(&alice, &[l_op], &[(bob.pkh.clone(), l_v.to_sat() - 7000)]);
    pool.accept(wtx.clone(), &chain).unwrap();
    pool.accept(ltx.clone(), &chain).unwrap();
    let now = u64::from(chain.median_time_past()) - 100; // a lagging clock
    let t = build_template(&chain, &pool, &bob.wpkh, now, b"/fika/");
    assert_eq!(t.height, chain.tip_height() + 1);
    assert_eq!(t.fees, Amount::from_sat(10_000));
    assert_eq!(t.block.header.time, chain.median_time_past() + 1);
    assert_eq!(t.block.header.bits, chain.next_bits());
    assert!(t.block.check_merkle_root());
    assert!(t.block.check_witness_commitment());
    assert!(validate::witness_commitment_index(&t.block.txdata[0]).is_some());
    assert_eq!(t.block.txdata[0].output[0].value, t.subsidy + t.fees);
    assert_eq!(t.block.bip34_block_height().unwrap(), u64::from(t.height));
    let block = t.block.clone();
    let outcome = chain.accept_block(block.clone(), u64::from(block.header.time)).unwrap();
    assert!(outcome.tip_changed);
    pool.update_for_chain(&outcome, &chain);
    assert!(pool.is_empty());
    assert_eq!(chain.utxo().balance(&bob.pkh).to_sat(), l_v.to_sat() - 7000);

    // A witness tx without the commitment is refused.
    let (w2, v2) = mature_coin(&blocks, 1);
    let wtx2 = spend_wpkh(&alice, &[(w2, v2)], &[(bob.wpkh.clone(), v2.to_sat() - 3000)]);
    let mut bad = block_on(&chain, chain.tip_hash(), vec![wtx2], &alice.wpkh, 0);
    bad.txdata[0].output.truncate(1);
    bad.txdata[0].input[0].witness = bitcoin::Witness::new();
    bad.header.merkle_root = merkle::block_merkle_root(&bad);
    let err = chain.accept_block(bad.clone(), now_for(&bad)).unwrap_err();
    assert!(
        matches!(&err, fika_btc::ChainError::InvalidBlock { error, .. } if matches!(**error, BlockError::UnexpectedWitness { index: 1 })),
        "{err}"
    );
}

#[test]
fn spv_proof_of_a_mined_transaction() {
    let alice = key(1);
    let bob = key(2);
    let (mut chain, blocks) = chain_with(110, &alice.wpkh);
    let mut pool = pool();
    let mut txids = Vec::new();
    for i in 0..5 {
        let (op, v) = mature_coin(&blocks, i);
        let tx = spend_wpkh(&alice, &[(op, v)], &[(bob.wpkh.clone(), v.to_sat() - 1000 * (i as u64 + 1))]);
        txids.push(pool.accept(tx, &chain).unwrap().txid);
    }
    let block = mine_pool(&mut chain, &mut pool, &alice.wpkh);
    let proof = merkle::build_proof(&block, &[txids[3]]);
    let header = chain.entry(&block.block_hash()).unwrap().header;
    let idx = merkle::verify_tx_inclusion(&header, &proof.txn, txids[3]).unwrap();
    assert_eq!(block.txdata[idx as usize].compute_txid(), txids[3]);
    // Against a different header the proof fails.
    let other = chain.entry(&block.header.prev_blockhash).unwrap().header;
    assert!(merkle::verify_tx_inclusion(&other, &proof.txn, txids[3]).is_err());
    // The proof also survives a consensus round trip (what goes on the wire).
    let bytes = bitcoin::consensus::serialize(&proof);
    let back: bitcoin::MerkleBlock = bitcoin::consensus::deserialize(&bytes).unwrap();
    assert_eq!(merkle::verify_proof(&back).unwrap(), vec![(idx, txids[3])]);
}
