//! The shared block store: validation verdicts, UTXO snapshots across
//! branches, and rejection of bad blocks.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;

use bitcoin::{Amount, Block, OutPoint, Script, Transaction, TxOut};
use common::*;
use fika_btc::blockdb::{BlockDb, BlockId, SimBlock, Status};
use fika_btc::template::{assemble_block, coinbase_tx};
use fika_btc::validate::{BlockError, TxError};
use fika_btc::{ChainState, UtxoSet};

/// A block on `parent` in the store, paying `fee` on top of the subsidy.
#[track_caller]
fn block_in(
    db: &BlockDb,
    parent: BlockId,
    txs: Vec<Transaction>,
    payout: &Script,
    tag: u32,
    fee: u64,
) -> Block {
    let p = db.rec(parent);
    let height = p.height + 1;
    let value = db.params().subsidy(height) + Amount::from_sat(fee);
    let coinbase = coinbase_tx(height, payout, value, &tag.to_le_bytes());
    let header = db.child_header(parent, p.data.block.header.time + 10);
    assemble_block(header, coinbase, txs)
}

#[track_caller]
fn add(db: &mut BlockDb, block: Block) -> BlockId {
    db.insert(Arc::new(SimBlock::new(block, 0)), None).unwrap()
}

fn premine(to: &Script, sats: &[u64]) -> Transaction {
    let prev = OutPoint::new(bitcoin::Txid::from_raw_hash(bitcoin::hashes::Hash::all_zeros()), 7);
    let mut tx = unsigned(&[(prev, Amount::ZERO)], &[]);
    tx.output =
        sats.iter().map(|s| TxOut { value: Amount::from_sat(*s), script_pubkey: to.to_owned() }).collect();
    tx
}

#[track_caller]
fn utxo_equal(db: &BlockDb, id: BlockId, expected: &UtxoSet) {
    let snap = db.utxo(id).expect("valid block has a snapshot");
    let got: Vec<_> = snap.0.iter().map(|(o, c)| (*o, c.txout.value, c.height)).collect();
    let want: Vec<_> = expected.iter().map(|(o, c)| (*o, c.txout.value, c.height)).collect();
    assert_eq!(got, want);
}

#[test]
fn premine_is_spendable_and_snapshots_follow_each_branch() {
    let alice = key(1);
    let bob = key(2);
    let pre = premine(&alice.wpkh, &[50_000, 70_000]);
    let mut db = BlockDb::new(params(), std::slice::from_ref(&pre));
    let pre_txid = pre.compute_txid();
    let coin = (OutPoint::new(pre_txid, 0), Amount::from_sat(50_000));
    // Branch A spends the first premine coin to bob; branch B (longer) does not.
    let pay = spend_wpkh(&alice, &[coin], &[(bob.wpkh.clone(), 49_000)]);
    let a1 = {
        let b = block_in(&db, 0, vec![pay.clone()], &alice.wpkh, 1, 1_000);
        add(&mut db, b)
    };
    assert_eq!(db.validate(a1), Ok(()));
    let snap = db.utxo(a1).unwrap();
    assert!(!snap.0.contains_key(&coin.0), "spent coin gone");
    assert!(snap.0.contains_key(&OutPoint::new(pay.compute_txid(), 0)));

    let b1 = {
        let b = block_in(&db, 0, vec![], &bob.wpkh, 2, 0);
        add(&mut db, b)
    };
    let b2 = {
        let b = block_in(&db, b1, vec![], &bob.wpkh, 3, 0);
        add(&mut db, b)
    };
    assert_eq!(db.validate(b2), Ok(()), "validating a tip validates its ancestors");
    assert!(matches!(db.rec(b1).status, Status::Valid(_)));
    assert_eq!(db.fork_point(a1, b2), 0);
    assert!(db.rec(b2).work > db.rec(a1).work);
    // The snapshot at B's tip equals a UTXO set built by replaying B alone.
    let mut replay = UtxoSet::new();
    replay.add_tx_outputs(&pre, 0).unwrap();
    for id in [b1, b2] {
        let r = db.rec(id);
        replay.apply_block(&r.data.block, r.height).unwrap();
    }
    utxo_equal(&db, b2, &replay);
    // And A's snapshot is untouched by B.
    assert!(!db.utxo(a1).unwrap().0.contains_key(&coin.0));
    assert!(db.utxo(b2).unwrap().0.contains_key(&coin.0), "on branch B the coin is unspent");
}

#[test]
fn snapshots_match_chain_state_after_a_reorg() {
    let k = key(3);
    let mut db = BlockDb::new(params(), &[]);
    let mut chain = ChainState::new(params());
    // Mature some coinbases on a common trunk, then fork.
    let mut tip = 0;
    for i in 0..3 {
        let b = block_in(&db, tip, vec![], &k.wpkh, i, 0);
        accept(&mut chain, &b);
        tip = add(&mut db, b);
    }
    let trunk = tip;
    let mut a = trunk;
    for i in 10..12 {
        let b = block_in(&db, a, vec![], &k.wpkh, i, 0);
        accept(&mut chain, &b);
        a = add(&mut db, b);
    }
    let mut b = trunk;
    for i in 20..23 {
        let blk = block_in(&db, b, vec![], &k.wpkh, i, 0);
        accept(&mut chain, &blk);
        b = add(&mut db, blk);
    }
    assert_eq!(db.validate(a), Ok(()));
    assert_eq!(db.validate(b), Ok(()));
    assert_eq!(chain.tip_hash(), db.rec(b).data.hash, "the chain reorganized to the longer branch");
    utxo_equal(&db, b, chain.utxo());
}

#[test]
fn bad_blocks_are_rejected_with_the_reason_and_poison_descendants() {
    let k = key(4);
    let other = key(5);
    let pre = premine(&k.wpkh, &[100_000]);
    let coin = (OutPoint::new(pre.compute_txid(), 0), Amount::from_sat(100_000));
    let mut db = BlockDb::new(params(), std::slice::from_ref(&pre));

    // Coinbase claims more than subsidy + fees.
    let over = {
        let b = block_in(&db, 0, vec![], &k.wpkh, 1, 1);
        add(&mut db, b)
    };
    assert!(matches!(db.validate(over), Err(BlockError::CoinbaseOverspend { .. })));
    let child = {
        let b = block_in(&db, over, vec![], &k.wpkh, 2, 0);
        add(&mut db, b)
    };
    assert!(db.validate(child).is_err(), "a child of an invalid block is invalid");

    // Bad merkle root.
    let mut bad_root = block_in(&db, 0, vec![], &k.wpkh, 3, 0);
    bad_root.header.merkle_root = bitcoin::TxMerkleNode::from_raw_hash(bitcoin::hashes::Hash::all_zeros());
    let id = add(&mut db, bad_root);
    assert!(matches!(db.validate(id), Err(BlockError::BadMerkleRoot { .. })));

    // Invalid signature: signed by the wrong key.
    let forged = spend_wpkh(&other, &[coin], &[(other.wpkh.clone(), 90_000)]);
    let id = {
        let b = block_in(&db, 0, vec![forged], &k.wpkh, 4, 10_000);
        add(&mut db, b)
    };
    assert!(matches!(db.validate(id), Err(BlockError::Tx { error: TxError::ScriptFailed { .. }, .. })));

    // Double spend inside one block.
    let t1 = spend_wpkh(&k, &[coin], &[(other.wpkh.clone(), 90_000)]);
    let t2 = spend_wpkh(&k, &[coin], &[(k.wpkh.clone(), 80_000)]);
    let id = {
        let b = block_in(&db, 0, vec![t1.clone(), t2], &k.wpkh, 5, 30_000);
        add(&mut db, b)
    };
    assert!(matches!(db.validate(id), Err(BlockError::DoubleSpend(_))));

    // Spending a coin its parent already spent.
    let ok = {
        let b = block_in(&db, 0, vec![t1.clone()], &k.wpkh, 6, 10_000);
        add(&mut db, b)
    };
    assert_eq!(db.validate(ok), Ok(()));
    let again = {
        let b = block_in(&db, ok, vec![t1], &k.wpkh, 7, 10_000);
        add(&mut db, b)
    };
    assert!(db.validate(again).is_err());
}

#[test]
fn transaction_checks_are_memoized_per_transaction() {
    let k = key(6);
    let pre = premine(&k.wpkh, &[100_000]);
    let coin = (OutPoint::new(pre.compute_txid(), 0), Amount::from_sat(100_000));
    let mut db = BlockDb::new(params(), std::slice::from_ref(&pre));
    let good = spend_wpkh(&k, &[coin], &[(k.wpkh.clone(), 99_000)]);
    let idx = db.intern_tx(Arc::new(good), 5);
    assert_eq!(db.intern_tx(Arc::clone(&db.tx(idx).tx), 9), idx, "interning is idempotent");
    assert_eq!(db.tx(idx).first_seen_ns, 5);
    let view = db.utxo(0).unwrap().clone();
    assert_eq!(db.check_tx(idx, view.as_ref(), 1), Ok(Amount::from_sat(1_000)));
    assert!(db.tx(idx).checked.is_some());
}
