//! The client wallet and the SPV client: balances against the UTXO set
//! through payments and reorganisations, payment construction and signing,
//! coin selection without double spends, and merkle-proof checking.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::block::Header;
use bitcoin::hashes::Hash;
use bitcoin::{
    Amount, Block, BlockHash, FeeRate, Network, OutPoint, Script, ScriptBuf, Transaction, TxIn, TxOut, Txid,
};
use fika_btc::chain::{AcceptOutcome, ChainState};
use fika_btc::mempool::{Mempool, MempoolConfig};
use fika_btc::merkle;
use fika_btc::params::{ChainParams, PowMode, ScriptFlags};
use fika_btc::spv::{SpvClient, SpvError};
use fika_btc::template::{TEMPLATE_VERSION, assemble_block, coinbase_tx};
use fika_btc::utxo::Coin;
use fika_btc::validate::verify_scripts;
use fika_btc::wallet::{FeeSpec, Payment, ScriptKind, Wallet, WalletConfig, WalletError};
use proptest::prelude::*;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

const COIN: u64 = 100_000_000;
const MATURITY: u32 = 5;

fn btc(n: u64) -> Amount {
    Amount::from_sat(n * COIN)
}

fn params() -> ChainParams {
    let mut p = ChainParams::regtest_fast();
    p.pow_mode = PowMode::Simulated;
    p.coinbase_maturity = MATURITY;
    p
}

fn config() -> WalletConfig {
    WalletConfig::for_params(&params())
}

fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

/// Mainnet script flags with policy rules, as a mempool checks them.
fn mainnet_flags() -> ScriptFlags {
    ChainParams::mainnet().script_flags.with_policy()
}

fn other_script(tag: u8) -> ScriptBuf {
    ScriptBuf::new_p2wsh(&bitcoin::WScriptHash::hash(&[tag]))
}

/// A block on `parent` with `txs`; the coinbase pays subsidy + `fees` to `payout`.
fn block_on(
    chain: &ChainState,
    parent: BlockHash,
    txs: Vec<Transaction>,
    payout: &Script,
    tag: u32,
) -> Block {
    let pe = chain.entry(&parent).unwrap();
    let height = pe.height + 1;
    let fees: u64 = txs
        .iter()
        .filter(|tx| !tx.is_coinbase())
        .map(|tx| {
            let ins: u64 = tx
                .input
                .iter()
                .map(|i| {
                    chain.utxo().get(&i.previous_output).map(|c| c.txout.value.to_sat()).unwrap_or_else(
                        || {
                            // Spends an output of an earlier transaction of this block.
                            let parent =
                                txs.iter().find(|t| t.compute_txid() == i.previous_output.txid).unwrap();
                            parent.output[i.previous_output.vout as usize].value.to_sat()
                        },
                    )
                })
                .sum();
            ins - tx.output.iter().map(|o| o.value.to_sat()).sum::<u64>()
        })
        .sum();
    let value = chain.params().subsidy(height) + Amount::from_sat(fees);
    let coinbase = coinbase_tx(height, payout, value, &tag.to_le_bytes());
    let header = Header {
        version: bitcoin::block::Version::from_consensus(TEMPLATE_VERSION),
        prev_blockhash: parent,
        merkle_root: bitcoin::TxMerkleNode::all_zeros(),
        time: pe.header.time + 10,
        bits: chain.next_bits_after(&parent).unwrap(),
        nonce: 0,
    };
    assemble_block(header, coinbase, txs)
}

fn accept(chain: &mut ChainState, block: &Block) -> AcceptOutcome {
    let o = chain.accept_block(block.clone(), u64::from(block.header.time)).unwrap();
    assert!(o.accepted, "{:?}", o.invalid);
    o
}

/// Feeds a chain update to full-node wallets.
fn follow(chain: &ChainState, outcome: &AcceptOutcome, wallets: &mut [&mut Wallet]) {
    for w in wallets.iter_mut() {
        for h in &outcome.disconnected {
            w.disconnect_block(*h).unwrap();
        }
        for h in &outcome.connected {
            let e = chain.entry(h).unwrap();
            w.apply_block(*h, e.height, &chain.block(h).unwrap().txdata).unwrap();
        }
    }
}

/// Mines a block with `txs` on the tip paying `payout`, feeds the wallets.
fn mine(
    chain: &mut ChainState,
    txs: Vec<Transaction>,
    payout: &Script,
    wallets: &mut [&mut Wallet],
) -> Block {
    let b = block_on(chain, chain.tip_hash(), txs, payout, 0);
    let o = accept(chain, &b);
    follow(chain, &o, wallets);
    b
}

/// The wallet agrees with the UTXO set: same coins, and the balance
/// splits them correctly.
#[track_caller]
fn assert_matches_utxo(chain: &ChainState, wallet: &Wallet) {
    let tip = chain.tip_height();
    let utxo = chain.utxo();
    let mut expected: BTreeMap<OutPoint, Coin> = BTreeMap::new();
    let mut total = Amount::ZERO;
    let mut spendable = Amount::ZERO;
    for s in wallet.scripts() {
        expected.extend(utxo.coins_for_script(s));
        total += utxo.balance(s);
        spendable += utxo.spendable_balance(s, tip + 1, MATURITY);
    }
    let mine: BTreeMap<OutPoint, Coin> = wallet.coins().map(|c| (c.outpoint, c.to_coin().unwrap())).collect();
    assert_eq!(mine, expected, "wallet coins differ from the UTXO set");
    let b = wallet.balance(tip);
    assert_eq!(b.on_chain(), total, "{b:?}");
    // Locked coins are mature here (the wallet only spends mature coins).
    assert_eq!(b.confirmed + b.locked, spendable, "{b:?}");
    assert_eq!(b.immature, total - spendable, "{b:?}");
}

fn input_value(p: &Payment) -> Amount {
    p.prevouts.iter().map(|o| o.value).sum()
}

fn output_value(tx: &Transaction) -> Amount {
    tx.output.iter().map(|o| o.value).sum()
}

/// Checks a payment's signatures and arithmetic; returns the change value.
#[track_caller]
fn check_payment(p: &Payment, wallet: &Wallet, to: &[(ScriptBuf, Amount)]) -> Amount {
    assert_eq!(p.txid, p.tx.compute_txid());
    assert_eq!(p.prevouts.len(), p.tx.input.len());
    verify_scripts(&p.tx, &p.prevouts, &mainnet_flags()).unwrap();
    verify_scripts(&p.tx, &p.prevouts, &ScriptFlags::ALL_CONSENSUS).unwrap();
    assert_eq!(input_value(p), output_value(&p.tx) + p.fee, "inputs = outputs + fee");
    // The requested outputs are there, in order, around the change.
    let change = p.change.map(|(vout, v)| {
        let out = &p.tx.output[vout as usize];
        assert_eq!(out.value, v);
        assert!(wallet.is_mine(&out.script_pubkey));
        assert!(v >= wallet.config().dust_limit);
        v
    });
    let paid: Vec<(ScriptBuf, Amount)> =
        p.tx.output
            .iter()
            .enumerate()
            .filter(|(i, _)| p.change.is_none_or(|(c, _)| *i != c as usize))
            .map(|(_, o)| (o.script_pubkey.clone(), o.value))
            .collect();
    assert_eq!(paid, to);
    let change = change.unwrap_or(Amount::ZERO);
    let amount: Amount = to.iter().map(|(_, a)| *a).sum();
    assert_eq!(input_value(p), amount + change + p.fee, "amount + change + fee = inputs");
    change
}

/// A chain whose first `n` blocks pay `payout`, then `MATURITY` blocks to
/// someone else so they all mature; `wallets` follow it.
fn funded_chain(n: usize, payout: &Script, wallets: &mut [&mut Wallet]) -> ChainState {
    let mut chain = ChainState::new(params());
    for _ in 0..n {
        mine(&mut chain, vec![], payout, wallets);
    }
    for _ in 0..MATURITY {
        mine(&mut chain, vec![], &other_script(0), wallets);
    }
    chain
}

// ---------------------------------------------------------------------------
// Full-node wallets against the UTXO set.

#[test]
fn balance_matches_utxo_set_through_blocks_payments_and_reorg() {
    let mut r = rng(1);
    let mut alice = Wallet::from_rng(config(), 2, &mut r).unwrap();
    let mut bob = Wallet::from_rng(config().with_receive_kind(ScriptKind::P2pkh), 1, &mut r).unwrap();
    assert!(bob.receive_script().is_p2pkh());
    assert!(alice.receive_script().is_p2wpkh());
    let alice_pkh = alice.keys()[1].script(ScriptKind::P2pkh).to_owned();
    let mut chain = ChainState::new(params());

    // Heights 1..=3 pay alice's P2WPKH receive script, 4..=6 her second key's P2PKH.
    for h in 1..=6u32 {
        let payout = if h <= 3 { alice.receive_script() } else { alice_pkh.clone() };
        mine(&mut chain, vec![], &payout, &mut [&mut alice, &mut bob]);
        assert_matches_utxo(&chain, &alice);
    }
    let b = alice.balance(6);
    // Mature at tip 6: created at heights <= 7 - 5 = 2.
    assert_eq!((b.confirmed, b.immature, b.unconfirmed, b.locked), (btc(100), btc(200), btc(0), btc(0)));
    assert_eq!(alice.spendable_coins(6).len(), 2);
    for _ in 0..4 {
        mine(&mut chain, vec![], &other_script(1), &mut [&mut alice, &mut bob]);
        assert_matches_utxo(&chain, &alice);
    }
    assert_eq!(alice.balance(chain.tip_height()).confirmed, btc(300));
    assert_eq!(bob.balance(chain.tip_height()), Default::default());

    // Two payments before the next block: a fixed 1 BTC fee, then a fee rate.
    let tip = chain.tip_height();
    let p1 =
        alice.create_payment(&bob.receive_script(), btc(3), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap();
    assert_eq!(p1.fee, btc(1));
    check_payment(&p1, &alice, &[(bob.receive_script(), btc(3))]);
    let p2 =
        alice.create_payment(&bob.receive_script(), btc(60), FeeSpec::sat_per_vb(10), tip, &mut r).unwrap();
    check_payment(&p2, &alice, &[(bob.receive_script(), btc(60))]);
    assert_eq!(p2.tx.input.len(), 2, "60 BTC needs two 50 BTC coins");
    let ins1: BTreeSet<OutPoint> = p1.tx.input.iter().map(|i| i.previous_output).collect();
    assert!(p2.tx.input.iter().all(|i| !ins1.contains(&i.previous_output)), "no coin spent twice");
    assert!(bob.add_unconfirmed(p1.tx.clone()).unwrap());
    assert!(bob.add_unconfirmed(p2.tx.clone()).unwrap());
    assert!(!bob.add_unconfirmed(p2.tx.clone()).unwrap(), "already pending");
    assert_eq!(bob.balance(tip).unconfirmed, btc(63));
    let ab = alice.balance(tip);
    assert_eq!(ab.on_chain(), btc(300));
    assert_eq!(ab.total(), btc(300) - btc(63) - p1.fee - p2.fee);
    assert_matches_utxo(&chain, &alice);

    // Confirm them.
    let fork = chain.tip_hash();
    mine(&mut chain, vec![p1.tx.clone(), p2.tx.clone()], &other_script(2), &mut [&mut alice, &mut bob]);
    assert_matches_utxo(&chain, &alice);
    assert_matches_utxo(&chain, &bob);
    assert!(alice.pending_transactions().is_empty() && bob.pending_transactions().is_empty());
    assert_eq!(bob.balance(chain.tip_height()).confirmed, btc(63));
    assert_eq!(alice.confirmations(&p1.txid, chain.tip_height()), 1);

    // Bob spends his P2PKH coins back to alice's P2PKH script.
    let tip = chain.tip_height();
    let p3 = bob.create_payment(&alice_pkh, btc(62), FeeSpec::sat_per_vb(2), tip, &mut r).unwrap();
    check_payment(&p3, &bob, &[(alice_pkh.clone(), btc(62))]);
    assert!(p3.prevouts.iter().all(|o| o.script_pubkey.is_p2pkh()));
    assert_eq!(p3.tx.input.len(), 2);
    alice.add_unconfirmed(p3.tx.clone()).unwrap();
    mine(&mut chain, vec![p3.tx.clone()], &other_script(2), &mut [&mut alice, &mut bob]);
    assert_matches_utxo(&chain, &alice);
    assert_matches_utxo(&chain, &bob);
    let before_reorg = (alice.balance(chain.tip_height()), bob.balance(chain.tip_height()));
    assert_eq!(before_reorg.1.confirmed, btc(63) - btc(62) - p3.fee);

    // A longer branch from before the payments replaces the two blocks.
    let mut parent = fork;
    let mut branch = Vec::new();
    for i in 0..3 {
        let b = block_on(&chain, parent, vec![], &other_script(3), 100 + i);
        parent = b.block_hash();
        let o = accept(&mut chain, &b);
        follow(&chain, &o, &mut [&mut alice, &mut bob]);
        assert_matches_utxo(&chain, &alice);
        assert_matches_utxo(&chain, &bob);
        branch.push(b);
    }
    assert_eq!(chain.tip_hash(), parent);
    // The disconnected payments are pending again; their coins locked.
    assert!(alice.is_pending(&p1.txid) && alice.is_pending(&p2.txid) && alice.is_pending(&p3.txid));
    assert!(bob.is_pending(&p3.txid));
    assert_eq!(alice.confirmations(&p1.txid, chain.tip_height()), 0);
    let ab = alice.balance(chain.tip_height());
    assert_eq!(ab.on_chain(), btc(300));
    assert_eq!(ab.locked, input_value(&p1) + input_value(&p2));
    assert_eq!(bob.balance(chain.tip_height()).confirmed, btc(0));

    // Re-mined on the new branch, everything settles as before.
    mine(
        &mut chain,
        vec![p1.tx.clone(), p2.tx.clone(), p3.tx.clone()],
        &other_script(4),
        &mut [&mut alice, &mut bob],
    );
    assert_matches_utxo(&chain, &alice);
    assert_matches_utxo(&chain, &bob);
    assert!(alice.pending_transactions().is_empty() && bob.pending_transactions().is_empty());
    let tip = chain.tip_height();
    assert_eq!(alice.balance(tip).confirmed, before_reorg.0.confirmed);
    assert_eq!(bob.balance(tip).confirmed, before_reorg.1.confirmed);
}

#[test]
fn disconnect_restores_the_exact_previous_state() {
    let mut r = rng(2);
    let mut alice = Wallet::from_rng(config(), 1, &mut r).unwrap();
    let mut chain = funded_chain(3, &alice.receive_script(), &mut [&mut alice]);
    let tip = chain.tip_height();
    // Pending: a payment, and a child spending its change.
    let p1 = alice.create_payment(&other_script(9), btc(10), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap();
    let p2 = alice.create_payment(&other_script(9), btc(50), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap();
    // A conflicting spend of p2's first input, by someone holding the key.
    let mut thief = Wallet::new(config(), &[*alice.keys()[0].secret_key()]).unwrap();
    for (h, e) in chain.best_chain().iter().enumerate().skip(1) {
        thief.apply_block(*e, h as u32, &chain.block(e).unwrap().txdata).unwrap();
    }
    thief.add_unconfirmed(p1.tx.clone()).unwrap();
    let stolen = p2.tx.input[0].previous_output;
    let steal = loop {
        let p =
            thief.create_payment(&other_script(7), btc(40), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap();
        if p.tx.input.iter().any(|i| i.previous_output == stolen) {
            break p;
        }
    };
    let snapshot = |w: &Wallet, tip: u32| {
        (
            w.balance(tip),
            w.coins().cloned().collect::<Vec<_>>(),
            w.pending_transactions().into_iter().cloned().collect::<Vec<_>>(),
            w.recorded_blocks(),
        )
    };
    let before = snapshot(&alice, chain.tip_height());
    let b = block_on(&chain, chain.tip_hash(), vec![p1.tx.clone(), steal.tx.clone()], &other_script(1), 0);
    accept(&mut chain, &b);
    let effect = alice.apply_block(b.block_hash(), chain.tip_height(), &b.txdata).unwrap();
    assert_eq!(effect.confirmed_pending, vec![p1.txid]);
    assert!(effect.conflicted.contains(&p2.txid), "{effect:?}");
    assert!(!alice.is_pending(&p2.txid));
    assert_matches_utxo(&chain, &alice);
    // Out of order and duplicate blocks are refused.
    assert_eq!(
        alice.apply_block(b.block_hash(), chain.tip_height() + 1, &[]),
        Err(WalletError::DuplicateBlock(b.block_hash()))
    );
    let other = BlockHash::hash(b"other");
    assert!(matches!(
        alice.apply_block(other, chain.tip_height(), std::slice::from_ref(&steal.tx)),
        Err(WalletError::OutOfOrder { .. })
    ));
    // The spend of a confirmed-spent coin is refused as pending.
    assert!(matches!(alice.add_unconfirmed(p2.tx.clone()), Err(WalletError::AlreadySpent { .. })));
    alice.disconnect_block(b.block_hash()).unwrap();
    let after = snapshot(&alice, chain.tip_height() - 1);
    assert_eq!(after.0, before.0);
    assert_eq!(after.1, before.1);
    assert_eq!(after.3, before.3);
    let txids = |v: &Vec<Transaction>| v.iter().map(Transaction::compute_txid).collect::<BTreeSet<_>>();
    assert_eq!(txids(&after.2), txids(&before.2));
}

#[test]
fn coinbase_outputs_are_immature_until_maturity() {
    let mut r = rng(3);
    let mut w = Wallet::from_rng(config(), 1, &mut r).unwrap();
    let mut chain = ChainState::new(params());
    mine(&mut chain, vec![], &w.receive_script(), &mut [&mut w]);
    for tip in 1..MATURITY {
        let b = w.balance(tip);
        assert_eq!((b.confirmed, b.immature), (btc(0), btc(50)), "tip {tip}");
        assert!(matches!(
            w.create_payment(&other_script(1), btc(1), FeeSpec::Absolute(btc(1)), tip, &mut r),
            Err(WalletError::InsufficientFunds { available, .. }) if available == Amount::ZERO
        ));
        mine(&mut chain, vec![], &other_script(1), &mut [&mut w]);
    }
    // The coin from height 1 can go into block 1 + MATURITY.
    assert_eq!(chain.tip_height(), MATURITY);
    let b = w.balance(MATURITY);
    assert_eq!((b.confirmed, b.immature), (btc(50), btc(0)));
    let p = w.create_payment(&other_script(1), btc(1), FeeSpec::Absolute(btc(1)), MATURITY, &mut r).unwrap();
    mine(&mut chain, vec![p.tx], &other_script(1), &mut [&mut w]);
    assert_matches_utxo(&chain, &w);
}

// ---------------------------------------------------------------------------
// Payments.

#[test]
fn absolute_fee_is_exact_and_errors_carry_the_numbers() {
    let mut r = rng(4);
    let mut w = Wallet::from_rng(config(), 1, &mut r).unwrap();
    let chain = funded_chain(2, &w.receive_script(), &mut [&mut w]);
    let tip = chain.tip_height();
    let to = other_script(1);
    let p = w.create_payment(&to, btc(7), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap();
    assert_eq!(input_value(&p) - output_value(&p.tx), btc(1), "the fee is exactly 1 BTC");
    assert_eq!(p.fee, btc(1));
    let change = check_payment(&p, &w, &[(to.clone(), btc(7))]);
    assert_eq!(change, btc(50) - btc(7) - btc(1));
    assert_eq!(p.tx.input.len(), 1);

    // 43 BTC change pending + 50 confirmed; ask for more than the confirmed coin.
    w.remove_unconfirmed(&p.txid);
    let spendable = w.balance(tip).confirmed;
    assert_eq!(spendable, btc(100));
    let err = w.create_payment(&to, spendable, FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap_err();
    assert_eq!(err, WalletError::InsufficientFunds { needed: btc(101), available: btc(100) });
    // Exactly everything minus the fee: no change at all, fee still exact.
    let all = w.create_payment(&to, btc(99), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap();
    assert_eq!(all.change, None);
    assert_eq!(all.fee, btc(1));
    check_payment(&all, &w, &[(to.clone(), btc(99))]);
    assert_eq!(w.balance(tip).confirmed, Amount::ZERO);
    w.remove_unconfirmed(&all.txid);

    assert_eq!(
        w.create_payment(&to, Amount::from_sat(545), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap_err(),
        WalletError::AmountBelowDust { index: 0, amount: Amount::from_sat(545), dust: Amount::from_sat(546) }
    );
    assert_eq!(
        w.create_payment_many(&[], FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap_err(),
        WalletError::NoOutputs
    );
    // A leftover below the dust limit goes to the fee.
    let dusty = btc(100) - btc(1) - Amount::from_sat(500);
    let p = w.create_payment(&to, dusty, FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap();
    assert_eq!(p.change, None);
    assert_eq!(p.fee, btc(1) + Amount::from_sat(500));
    check_payment(&p, &w, &[(to.clone(), dusty)]);
}

#[test]
fn payments_never_double_spend_and_all_enter_the_chain() {
    let mut r = rng(5);
    let mut w = Wallet::from_rng(config(), 3, &mut r).unwrap();
    let mut chain = ChainState::new(params());
    // Coins on all three keys, both script kinds.
    for i in 0..6 {
        let key = &w.keys()[i % 3];
        let payout = key.script(if i % 2 == 0 { ScriptKind::P2wpkh } else { ScriptKind::P2pkh }).to_owned();
        mine(&mut chain, vec![], &payout, &mut [&mut w]);
    }
    for _ in 0..MATURITY {
        mine(&mut chain, vec![], &other_script(0), &mut [&mut w]);
    }
    let tip = chain.tip_height();
    let mut mempool = Mempool::new(MempoolConfig::default());
    let mut spent: BTreeSet<OutPoint> = BTreeSet::new();
    let mut payments = Vec::new();
    loop {
        assert!(payments.len() < 40, "payments never run out: coins are reused");
        let to = other_script(payments.len() as u8);
        let fee = if payments.len() % 2 == 0 { FeeSpec::Absolute(btc(1)) } else { FeeSpec::sat_per_vb(3) };
        match w.create_payment(&to, btc(17), fee, tip, &mut r) {
            Ok(p) => {
                check_payment(&p, &w, &[(to, btc(17))]);
                for i in &p.tx.input {
                    assert!(spent.insert(i.previous_output), "{} spent twice", i.previous_output);
                }
                mempool.accept(p.tx.clone(), &chain).unwrap();
                payments.push(p);
            }
            Err(WalletError::InsufficientFunds { needed, available }) => {
                // What is left: only change (spendable as unconfirmed) below 17 BTC + fee.
                assert!(available < needed, "{available} >= {needed}");
                assert_eq!(available, w.balance(tip).confirmed + w.balance(tip).unconfirmed);
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(payments.len() >= 15, "{} payments", payments.len());
    // Both kinds of input were signed.
    let kinds: BTreeSet<bool> =
        payments.iter().flat_map(|p| p.prevouts.iter().map(|o| o.script_pubkey.is_p2pkh())).collect();
    assert_eq!(kinds.len(), 2);
    assert_eq!(mempool.len(), payments.len());
    // Mine the whole pool: the chain accepts every payment.
    let block = fika_btc::template::mine_block(&chain, &mempool, &other_script(0), 1_800_000_000, b"");
    assert_eq!(block.txdata.len(), payments.len() + 1);
    let o = accept(&mut chain, &block);
    follow(&chain, &o, &mut [&mut w]);
    assert!(w.pending_transactions().is_empty());
    assert_matches_utxo(&chain, &w);
}

#[test]
fn unconfirmed_change_is_used_only_when_allowed_and_removal_releases_coins() {
    let mut r = rng(6);
    let mut strict = Wallet::from_rng(config().with_spend_unconfirmed_change(false), 1, &mut r).unwrap();
    let chain = funded_chain(1, &strict.receive_script(), &mut [&mut strict]);
    let tip = chain.tip_height();
    let to = other_script(1);
    let p = strict.create_payment(&to, btc(5), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap();
    let b = strict.balance(tip);
    assert_eq!((b.confirmed, b.locked, b.unconfirmed), (btc(0), btc(50), btc(44)));
    assert_eq!(
        strict.create_payment(&to, btc(5), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap_err(),
        WalletError::InsufficientFunds { needed: btc(6), available: btc(0) }
    );
    // Releasing the pending payment makes the coin spendable again.
    assert_eq!(strict.remove_unconfirmed(&p.txid), vec![p.txid]);
    assert_eq!(strict.balance(tip).confirmed, btc(50));

    let mut loose = Wallet::new(config(), &[*strict.keys()[0].secret_key()]).unwrap();
    let chain = funded_chain(1, &loose.receive_script(), &mut [&mut loose]);
    let p1 = loose.create_payment(&to, btc(5), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap();
    let p2 = loose.create_payment(&to, btc(5), FeeSpec::Absolute(btc(1)), tip, &mut r).unwrap();
    let change1 = OutPoint::new(p1.txid, p1.change.unwrap().0);
    assert_eq!(p2.tx.input[0].previous_output, change1);
    // A conflicting pending spend is refused.
    let mut conflict = p2.tx.clone();
    conflict.output[0].value = btc(1);
    assert_eq!(
        loose.add_unconfirmed(conflict.clone()),
        Err(WalletError::Conflict { txid: conflict.compute_txid(), outpoint: change1, other: p2.txid })
    );
    // Removing the parent removes the child too.
    assert_eq!(loose.remove_unconfirmed(&p1.txid), vec![p1.txid, p2.txid]);
    assert!(loose.pending_transactions().is_empty());
    assert_eq!(loose.balance(chain.tip_height()).confirmed, btc(50));
    assert_eq!(loose.remove_unconfirmed(&p1.txid), Vec::<Txid>::new());
}

#[test]
fn fee_rate_payments_meet_the_rate_and_the_mempool_minimum() {
    let mut r = rng(7);
    let mut w = Wallet::from_rng(config(), 1, &mut r).unwrap();
    let chain = funded_chain(4, &w.receive_script(), &mut [&mut w]);
    let tip = chain.tip_height();
    let mut mempool = Mempool::new(MempoolConfig::default());
    for (i, sat_vb) in [1u64, 2, 5, 25].into_iter().enumerate() {
        let to = other_script(i as u8);
        let p = w.create_payment(&to, btc(20), FeeSpec::sat_per_vb(sat_vb), tip, &mut r).unwrap();
        check_payment(&p, &w, &[(to, btc(20))]);
        let vsize = p.tx.vsize() as u64;
        assert!(p.fee.to_sat() >= sat_vb * vsize, "{} < {sat_vb} * {vsize}", p.fee);
        // At most a couple of bytes of signature slack per input over the rate.
        assert!(p.fee.to_sat() <= sat_vb * (vsize + 2 * p.tx.input.len() as u64 + 1), "{}", p.fee);
        mempool.accept(p.tx.clone(), &chain).unwrap();
    }
    // A fractional rate (0.5 sat/vB), given as a FeeRate.
    let half = FeeSpec::Rate(FeeRate::from_sat_per_kwu(125));
    let p = w.create_payment(&other_script(9), btc(1), half, tip, &mut r).unwrap();
    let vsize = p.tx.vsize() as u64;
    assert!(p.fee.to_sat() >= vsize.div_ceil(2), "{} for {vsize} vB", p.fee);
    assert!(
        p.fee.to_sat() <= (vsize + 2 * p.tx.input.len() as u64 + 1).div_ceil(2),
        "{} for {vsize} vB",
        p.fee
    );
}

#[test]
fn addresses_are_real_and_payments_deterministic() {
    let make = || {
        let mut r = rng(8);
        let mut w = Wallet::from_rng(config(), 2, &mut r).unwrap();
        let chain = funded_chain(2, &w.receive_script(), &mut [&mut w]);
        let p =
            w.create_payment(&other_script(1), btc(3), FeeSpec::sat_per_vb(1), chain.tip_height(), &mut r);
        (w, p.unwrap())
    };
    let (w1, p1) = make();
    let (w2, p2) = make();
    assert_eq!(p1, p2, "same seed, same payment");
    assert_eq!(w1.address(Network::Bitcoin), w2.address(Network::Bitcoin));
    let addr = w1.address(Network::Bitcoin);
    assert!(addr.to_string().starts_with("bc1q"));
    assert_eq!(addr.script_pubkey(), w1.receive_script());
    assert!(w1.address(Network::Regtest).to_string().starts_with("bcrt1q"));
    let legacy =
        Wallet::new(config().with_receive_kind(ScriptKind::P2pkh), &[*w1.keys()[0].secret_key()]).unwrap();
    let a = legacy.address(Network::Bitcoin);
    assert!(a.to_string().starts_with('1'));
    assert_eq!(a.script_pubkey(), legacy.receive_script());
    // Paying an address pays its script.
    let mut r = rng(9);
    let (mut w, _) = make();
    let p = w.create_payment_to(&a, btc(2), FeeSpec::Absolute(btc(1)), 20, &mut r).unwrap();
    assert!(p.tx.output.iter().any(|o| o.script_pubkey == a.script_pubkey() && o.value == btc(2)));
    // A chain without segwit defaults to P2PKH receive scripts.
    assert_eq!(WalletConfig::for_params(&ChainParams::dogecoin()).receive_kind, ScriptKind::P2pkh);
    assert_eq!(Wallet::new(config(), &[]).unwrap_err(), WalletError::NoKeys);
}

#[test]
fn blocks_are_applied_in_order_and_disconnected_tip_first() {
    let mut r = rng(11);
    let mut w = Wallet::from_rng(config(), 1, &mut r).unwrap();
    let me = vec![w.receive_script()];
    let (h1, h2, h3) = (BlockHash::hash(b"1"), BlockHash::hash(b"2"), BlockHash::hash(b"3"));
    let e1 = w.apply_block(h1, 1, &[funding_tx(1, &[10_000, 20_000], &me)]).unwrap();
    assert_eq!(e1.received, Amount::from_sat(30_000));
    // A block that does not touch the wallet leaves no record.
    assert!(w.apply_block(h2, 2, &[funding_tx(2, &[5_000], &[other_script(1)])]).unwrap().is_empty());
    w.apply_block(h3, 3, &[funding_tx(3, &[7_000], &me)]).unwrap();
    assert_eq!(w.recorded_blocks(), vec![(h1, 1), (h3, 3)]);
    assert_eq!(w.disconnect_block(h1), Err(WalletError::NotTip { hash: h1, tip: h3 }));
    assert_eq!(w.disconnect_block(h3).unwrap().received, Amount::from_sat(7_000));
    assert!(w.disconnect_block(h2).unwrap().is_empty());
    assert_eq!(w.balance(3).confirmed, Amount::from_sat(30_000));
    assert_eq!(w.disconnect_block(h1).unwrap(), e1);
    assert_eq!(w.balance(3), Default::default());
    assert!(w.recorded_blocks().is_empty());
}

/// A funding transaction paying `values` to `scripts` (cyclically).
fn funding_tx(tag: u32, values: &[u64], scripts: &[ScriptBuf]) -> Transaction {
    Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![TxIn {
            previous_output: OutPoint::new(Txid::hash(&tag.to_le_bytes()), 0),
            ..Default::default()
        }],
        output: values
            .iter()
            .enumerate()
            .map(|(i, v)| TxOut {
                value: Amount::from_sat(*v),
                script_pubkey: scripts[i % scripts.len()].clone(),
            })
            .collect(),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Any payment the wallet creates verifies, adds up, respects the fee
    /// spec, and reuses no coin; insufficient funds are reported exactly.
    #[test]
    fn random_payments_are_valid(
        seed in any::<u64>(),
        values in proptest::collection::vec(1_000u64..5_000_000, 1..12),
        requests in proptest::collection::vec((1_000u64..8_000_000, prop_oneof![
            (0u64..20_000).prop_map(|f| FeeSpec::Absolute(Amount::from_sat(f))),
            (1u64..50).prop_map(FeeSpec::sat_per_vb),
        ]), 1..6),
    ) {
        let mut r = rng(seed);
        let mut w = Wallet::from_rng(config(), 2, &mut r).unwrap();
        let scripts = vec![
            w.receive_script(),
            w.keys()[1].script(ScriptKind::P2pkh).to_owned(),
            w.keys()[0].script(ScriptKind::P2pkh).to_owned(),
        ];
        let fund = funding_tx(seed as u32, &values, &scripts);
        w.apply_block(BlockHash::hash(b"fund"), 1, &[fund]).unwrap();
        let mut used = BTreeSet::new();
        for (amount, fee) in requests {
            let to = other_script(3);
            let before = w.balance(10);
            match w.create_payment(&to, Amount::from_sat(amount), fee, 10, &mut r) {
                Ok(p) => {
                    check_payment(&p, &w, &[(to, Amount::from_sat(amount))]);
                    for i in &p.tx.input {
                        prop_assert!(used.insert(i.previous_output));
                    }
                    match fee {
                        FeeSpec::Absolute(f) => {
                            prop_assert!(p.fee >= f);
                            prop_assert!(p.fee == f || p.change.is_none());
                            prop_assert!(p.fee - f < Amount::from_sat(546));
                        }
                        FeeSpec::Rate(rate) => {
                            let min = rate.to_sat_per_vb_ceil() * p.tx.vsize() as u64;
                            prop_assert!(p.fee.to_sat() >= min, "{} < {}", p.fee, min);
                        }
                        _ => unreachable!(),
                    }
                    let after = w.balance(10);
                    prop_assert_eq!(after.total() + p.fee + Amount::from_sat(amount), before.total());
                }
                Err(WalletError::InsufficientFunds { needed, available }) => {
                    prop_assert!(needed > available);
                    prop_assert_eq!(available, before.confirmed + before.unconfirmed);
                }
                Err(e) => prop_assert!(false, "{}", e),
            }
        }
    }
}

// ---------------------------------------------------------------------------
// SPV.

struct SpvSetup {
    chain: ChainState,
    miner: Wallet,
    spv: SpvClient,
    rng: ChaCha8Rng,
}

impl SpvSetup {
    fn new() -> Self {
        let mut rng = rng(10);
        let mut miner = Wallet::from_rng(config(), 1, &mut rng).unwrap();
        let carol = Wallet::from_rng(config(), 1, &mut rng).unwrap();
        let chain = funded_chain(3, &miner.receive_script(), &mut [&mut miner]);
        let mut s = SpvSetup { chain, miner, spv: SpvClient::new(params(), carol), rng };
        s.sync_headers();
        s
    }

    fn headers_from(&self, from: u32) -> Vec<Header> {
        (from..=self.chain.tip_height())
            .map(|h| self.chain.entry(&self.chain.hash_at_height(h).unwrap()).unwrap().header)
            .collect()
    }

    fn now(&self) -> u64 {
        u64::from(self.chain.tip().header.time)
    }

    fn sync_headers(&mut self) {
        let headers = self.headers_from(1);
        let now = self.now();
        self.spv.accept_headers(&headers, now).unwrap();
        assert_eq!(self.spv.best_hash(), self.chain.tip_hash());
    }

    /// The miner pays carol; the payment is mined; returns tx and block.
    fn pay_carol(&mut self, amount: Amount) -> (Transaction, Block) {
        let to = self.spv.wallet().receive_script();
        let tip = self.chain.tip_height();
        let p =
            self.miner.create_payment(&to, amount, FeeSpec::Absolute(btc(1)), tip, &mut self.rng).unwrap();
        let b = mine(&mut self.chain, vec![p.tx.clone()], &other_script(5), &mut [&mut self.miner]);
        (p.tx, b)
    }
}

#[test]
fn spv_accepts_valid_proofs_and_refuses_tampered_or_misplaced_ones() {
    let mut s = SpvSetup::new();
    let (tx, block) = s.pay_carol(btc(7));
    let txid = tx.compute_txid();
    let proof = merkle::build_proof(&block, &[txid]);

    // The header is not known yet.
    assert_eq!(
        s.spv.accept_merkle_block(&proof, std::slice::from_ref(&tx)).unwrap_err(),
        SpvError::UnknownHeader(block.block_hash())
    );
    s.sync_headers();
    assert_eq!(s.spv.balance(), Default::default());

    // A tampered transaction has another txid: refused.
    let mut tampered = tx.clone();
    tampered.output[0].value += Amount::from_sat(1);
    assert_eq!(
        s.spv.accept_merkle_block(&proof, std::slice::from_ref(&tampered)).unwrap_err(),
        SpvError::NotInProof { block: block.block_hash(), txid: tampered.compute_txid() }
    );
    // The right proof against the wrong header: root mismatch.
    let wrong = s.chain.hash_at_height(s.chain.tip_height() - 1).unwrap();
    match s.spv.accept_merkle_proof(wrong, &proof.txn, std::slice::from_ref(&tx)) {
        Err(SpvError::Proof { block: b, error: merkle::MerkleError::RootMismatch { .. } }) => {
            assert_eq!(b, wrong)
        }
        other => panic!("expected a root mismatch, got {other:?}"),
    }
    // A proof of another transaction does not prove this one.
    let cb_proof = merkle::build_proof(&block, &[block.txdata[0].compute_txid()]);
    assert!(matches!(
        s.spv.accept_merkle_block(&cb_proof, std::slice::from_ref(&tx)),
        Err(SpvError::NotInProof { .. })
    ));
    assert_eq!(s.spv.balance(), Default::default());
    assert!(s.spv.applied_blocks().is_empty());

    // The valid proof credits carol.
    let out = s.spv.accept_merkle_block(&proof, std::slice::from_ref(&tx)).unwrap();
    assert_eq!(out.proven, vec![(1, txid)]);
    assert!(out.on_best_chain);
    assert_eq!(out.update.connected, vec![block.block_hash()]);
    assert_eq!(s.spv.balance().confirmed, btc(7));
    assert_eq!(s.spv.confirmations(&txid), 1);
    // Carol's view equals the UTXO set's.
    let carol_script = s.spv.wallet().receive_script();
    assert_eq!(s.chain.utxo().balance(&carol_script), btc(7));
    for _ in 0..2 {
        mine(&mut s.chain, vec![], &other_script(5), &mut [&mut s.miner]);
    }
    s.sync_headers();
    assert_eq!(s.spv.confirmations(&txid), 3);
    // Carol can spend it, and the full chain accepts the payment.
    let tip = s.spv.best_height();
    let p = s.spv.wallet_mut().create_payment(
        &other_script(6),
        btc(2),
        FeeSpec::Absolute(btc(1)),
        tip,
        &mut s.rng,
    );
    let p = p.unwrap();
    verify_scripts(&p.tx, &p.prevouts, &mainnet_flags()).unwrap();
    mine(&mut s.chain, vec![p.tx.clone()], &other_script(5), &mut [&mut s.miner]);
}

#[test]
fn spv_header_reorg_removes_and_restores_the_credit() {
    let mut s = SpvSetup::new();
    let fork = s.chain.tip_hash();
    let fork_height = s.chain.tip_height();
    let (tx, block) = s.pay_carol(btc(4));
    let txid = tx.compute_txid();
    s.sync_headers();
    s.spv.accept_merkle_block(&merkle::build_proof(&block, &[txid]), std::slice::from_ref(&tx)).unwrap();
    assert_eq!(s.spv.balance().confirmed, btc(4));

    // A two-block branch from the fork overtakes the one-block chain.
    let b1 = block_on(&s.chain, fork, vec![], &other_script(8), 1);
    accept(&mut s.chain, &b1);
    let b2 = block_on(&s.chain, b1.block_hash(), vec![], &other_script(8), 2);
    accept(&mut s.chain, &b2);
    assert_eq!(s.chain.tip_hash(), b2.block_hash());
    let up = s.spv.accept_headers(&[b1.header, b2.header], u64::from(b2.header.time)).unwrap();
    assert_eq!(up.new_headers, 2);
    assert_eq!(up.disconnected, vec![block.block_hash()]);
    assert_eq!(up.best_height, fork_height + 2);
    assert_eq!(s.spv.balance(), Default::default());
    assert_eq!(s.spv.confirmations(&txid), 0);
    assert!(!s.spv.is_on_best_chain(&block.block_hash()));
    // A proof for the side branch is kept but not credited.
    let again =
        s.spv.accept_merkle_block(&merkle::build_proof(&block, &[txid]), std::slice::from_ref(&tx)).unwrap();
    assert!(!again.on_best_chain);
    assert_eq!(s.spv.balance().confirmed, btc(0));

    // The original branch grows longer again: the stored proof counts again.
    let mut parent = block.block_hash();
    let mut headers = Vec::new();
    for i in 0..2 {
        let b = block_on(&s.chain, parent, vec![], &other_script(8), 10 + i);
        accept(&mut s.chain, &b);
        parent = b.block_hash();
        headers.push(b.header);
    }
    assert_eq!(s.chain.tip_hash(), parent);
    let up = s.spv.accept_headers(&headers, s.now()).unwrap();
    assert_eq!(up.connected, vec![block.block_hash()]);
    assert_eq!(s.spv.balance().confirmed, btc(4));
    assert_eq!(s.spv.confirmations(&txid), 3);
}

#[test]
fn spv_proofs_out_of_order_and_coinbase_proofs() {
    let mut s = SpvSetup::new();
    let (tx1, block1) = s.pay_carol(btc(3));
    let (tx2, block2) = s.pay_carol(btc(5));
    // A coinbase paying carol directly.
    let carol = s.spv.wallet().receive_script();
    let block3 = mine(&mut s.chain, vec![], &carol, &mut [&mut s.miner]);
    s.sync_headers();
    let prove = |b: &Block, tx: &Transaction| merkle::build_proof(b, &[tx.compute_txid()]);
    // Later block first, then the earlier one: the wallet is rebuilt in order.
    s.spv.accept_merkle_block(&prove(&block2, &tx2), std::slice::from_ref(&tx2)).unwrap();
    let out = s.spv.accept_merkle_block(&prove(&block1, &tx1), std::slice::from_ref(&tx1)).unwrap();
    assert_eq!(out.update.disconnected, vec![block2.block_hash()]);
    assert_eq!(out.update.connected, vec![block1.block_hash(), block2.block_hash()]);
    let cb = block3.txdata[0].clone();
    s.spv.accept_merkle_block(&prove(&block3, &cb), std::slice::from_ref(&cb)).unwrap();
    let b = s.spv.balance();
    assert_eq!((b.confirmed, b.immature), (btc(8), btc(50)));
    assert_eq!(
        s.spv.applied_blocks().iter().map(|(h, _)| *h).collect::<Vec<_>>(),
        vec![block1.block_hash(), block2.block_hash(), block3.block_hash()]
    );
    // Everything carol holds is what the UTXO set holds for her.
    let total: Amount = s.spv.wallet().scripts().map(|sc| s.chain.utxo().balance(sc)).sum();
    assert_eq!(b.on_chain(), total);
    // A transaction altered to look like a coinbase is not proven.
    let mut shifted = tx1.clone();
    shifted.input[0].previous_output = OutPoint::null();
    assert!(matches!(
        s.spv.accept_merkle_block(&prove(&block1, &tx1), &[shifted]),
        Err(SpvError::NotInProof { .. })
    ));
    assert_eq!(
        s.spv.accept_merkle_block(&prove(&block1, &tx1), &[]).unwrap_err(),
        SpvError::NoTransactions(block1.block_hash())
    );
    // A header whose block (never valid) commits a coinbase-shaped
    // transaction at index 1: the SPV client refuses it at that position.
    let fake_cb = coinbase_tx(99, &carol, btc(1), b"fake");
    let fake = block_on(&s.chain, s.chain.tip_hash(), vec![fake_cb.clone()], &other_script(5), 77);
    s.spv.accept_header(&fake.header, u64::from(fake.header.time)).unwrap();
    assert_eq!(
        s.spv.accept_merkle_block(&prove(&fake, &fake_cb), std::slice::from_ref(&fake_cb)).unwrap_err(),
        SpvError::CoinbasePosition { block: fake.block_hash(), txid: fake_cb.compute_txid(), index: 1 }
    );
    assert_eq!(s.spv.balance(), b);
    // Unknown parents are refused by the header chain.
    let mut orphan = block1.header;
    orphan.prev_blockhash = BlockHash::hash(b"nowhere");
    assert!(matches!(s.spv.accept_headers(&[orphan], s.now()), Err(SpvError::Header(_))));
}
