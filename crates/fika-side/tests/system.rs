//! The system-contract hook: transactions and contracts reach it, it
//! credits and debits as told, its logs land in receipts, and its state
//! follows EVM reverts.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fika_side::{BlockStatus, NoSystemContract, SideChain, U256, WEI_PER_RBTC, verify_receipt_proof};

#[track_caller]
fn run(chain: &mut SideChain<Counter>, t: fika_side::SignedTx) -> fika_side::ReceiptInfo {
    let h = t.tx_hash();
    mine_tip(chain, &[t]);
    chain.receipt(&h).unwrap()
}

#[test]
fn transactions_to_the_system_contract_credit_debit_and_log() {
    let mut chain = new_chain();
    let alice = addr(ALICE);
    let carol = addr(3);

    // Value goes to the contract's balance; its log is in the receipt.
    let before = chain.balance(&alice);
    let r = run(&mut chain, tx(ALICE, 0, Some(COUNTER), WEI_PER_RBTC, vec![0x01], 100_000));
    assert!(r.receipt.status);
    assert_eq!(r.receipt.gas_used, 21_000 + 16 + fika_side::system::DEFAULT_SYSTEM_CALL_GAS);
    assert_eq!(chain.system().count, 1);
    assert_eq!(chain.system().received, vec![WEI_PER_RBTC]);
    // The call saw its balance with the value credited, and the signer.
    let (seen_balance, origin, pubkey) = chain.system().last_seen.unwrap();
    assert_eq!(seen_balance, WEI_PER_RBTC);
    assert_eq!(origin, alice);
    let pubkey = bitcoin::secp256k1::PublicKey::from_slice(&pubkey.unwrap()).unwrap();
    assert_eq!(fika_side::address_of(&pubkey), alice);
    assert_eq!(chain.balance(&COUNTER), WEI_PER_RBTC);
    assert_eq!(chain.balance(&alice), before - WEI_PER_RBTC - u128::from(r.receipt.gas_used) * GWEI);
    assert_eq!(r.receipt.logs.len(), 1);
    assert_eq!(r.receipt.logs[0].address, COUNTER);
    assert_eq!(r.receipt.logs[0].topics, vec![incremented_topic()]);
    assert_eq!(r.receipt.logs[0].data, U256::from(1u8).to_be_bytes::<32>().to_vec());
    // ... and proven by the receipts root.
    let root = chain.best_header().receipts_root;
    let (receipt, proof) = chain.receipt_proof(&r.block_hash, 0).unwrap();
    assert!(verify_receipt_proof(&root, &receipt, &proof));

    // Transfers move balance out of the contract.
    let quarter = WEI_PER_RBTC / 4;
    let r = run(&mut chain, tx(ALICE, 1, Some(COUNTER), 0, pay_data(carol, quarter), 100_000));
    assert!(r.receipt.status);
    assert_eq!(chain.balance(&carol), quarter);
    assert_eq!(chain.balance(&COUNTER), 3 * quarter);
    assert_eq!(r.receipt.logs[0].topics[0], paid_topic());
    assert_eq!(chain.logs(Some(COUNTER), Some(paid_topic())).len(), 1);

    // A transfer beyond the balance reverts everything of the call.
    let r = run(&mut chain, tx(ALICE, 2, Some(COUNTER), 5, pay_data(carol, WEI_PER_RBTC), 100_000));
    assert!(!r.receipt.status);
    assert!(r.receipt.logs.is_empty());
    assert_eq!(chain.balance(&carol), quarter);
    assert_eq!(chain.balance(&COUNTER), 3 * quarter);
    assert_eq!(
        chain.system().received,
        vec![WEI_PER_RBTC, 0],
        "the failed call's bookkeeping was rolled back"
    );

    // A call that fails after mutating leaves no trace; its value returns.
    let before = chain.balance(&alice);
    let r = run(&mut chain, tx(ALICE, 3, Some(COUNTER), 1_000, vec![0x03], 100_000));
    assert!(!r.receipt.status);
    assert_eq!(chain.system().count, 1);
    assert_eq!(chain.balance(&COUNTER), 3 * quarter);
    assert_eq!(chain.balance(&alice), before - u128::from(r.receipt.gas_used) * GWEI);

    // Not enough gas for the system call: out of gas, nothing changes.
    let r = run(&mut chain, tx(ALICE, 4, Some(COUNTER), 0, vec![0x01], 25_000));
    assert!(!r.receipt.status);
    assert_eq!(r.receipt.gas_used, 25_000);
    assert_eq!(chain.system().count, 1);

    // The state root follows the system contract's state.
    assert_eq!(chain.best_header().state_root, chain.state().state_root());
    assert_eq!(chain.state().world.digest(), chain.state().world.recompute_digest());
}

#[test]
fn read_only_calls_reach_the_system_contract_directly_and_from_contracts() {
    let mut chain = new_chain();
    run(&mut chain, tx(BOB, 0, Some(COUNTER), 0, vec![0x01], 100_000));
    run(&mut chain, tx(BOB, 1, Some(COUNTER), 0, vec![0x01], 100_000));
    let direct = chain.call(&COUNTER, &[]).unwrap();
    assert!(direct.success);
    assert_eq!(direct.output, U256::from(2u8).to_be_bytes::<32>().to_vec());

    // A contract reading it with STATICCALL.
    let reader = deploy(&mut chain, ALICE, 0, &static_read_runtime(COUNTER));
    let out = chain.call(&reader, &[]).unwrap();
    assert!(out.success);
    assert_eq!(out.output, U256::from(2u8).to_be_bytes::<32>().to_vec());
    // A read-only call of a mutating method changes nothing.
    let out = chain.call(&COUNTER, &[0x01]).unwrap();
    assert_eq!(out.output, U256::from(2u8).to_be_bytes::<32>().to_vec());
    assert_eq!(chain.system().count, 2);
}

#[test]
fn contract_calls_mutate_and_reverts_undo_them() {
    let mut chain = new_chain();
    // inc: CALL counter(0x01), STOP.
    let mut inc = call_with_byte(COUNTER, Some(0x01));
    inc.push(op::STOP);
    let inc = deploy(&mut chain, ALICE, 0, &inc);
    // inc_revert: CALL counter(0x01), REVERT.
    let mut inc_revert = call_with_byte(COUNTER, Some(0x01));
    inc_revert.extend(revert_tail());
    let inc_revert = deploy(&mut chain, ALICE, 1, &inc_revert);
    // swallow: CALL inc_revert (which reverts), STOP — the tx succeeds.
    let mut swallow = call_with_byte(inc_revert, None);
    swallow.push(op::STOP);
    let swallow = deploy(&mut chain, ALICE, 2, &swallow);
    // swallow_then_inc: CALL inc_revert, then CALL counter(0x01), STOP.
    let mut swallow_then_inc = call_with_byte(inc_revert, None);
    swallow_then_inc.extend(call_with_byte(COUNTER, Some(0x01)));
    swallow_then_inc.push(op::STOP);
    let swallow_then_inc = deploy(&mut chain, ALICE, 3, &swallow_then_inc);
    // inc_twice_swallow: CALL counter(0x01), CALL inc_revert, STOP.
    let mut inc_then_swallow = call_with_byte(COUNTER, Some(0x01));
    inc_then_swallow.extend(call_with_byte(inc_revert, None));
    inc_then_swallow.push(op::STOP);
    let inc_then_swallow = deploy(&mut chain, ALICE, 4, &inc_then_swallow);

    let count = |c: &SideChain<Counter>| c.system().count;

    let r = run(&mut chain, tx(BOB, 0, Some(inc), 0, vec![], 200_000));
    assert!(r.receipt.status);
    assert_eq!(count(&chain), 1);
    assert_eq!(r.receipt.logs.len(), 1, "the system log from a nested call is in the receipt");
    assert_eq!(r.receipt.logs[0].address, COUNTER);

    let r = run(&mut chain, tx(BOB, 1, Some(inc_revert), 0, vec![], 200_000));
    assert!(!r.receipt.status);
    assert_eq!(count(&chain), 1, "the reverted transaction's increment is undone");

    let r = run(&mut chain, tx(BOB, 2, Some(swallow), 0, vec![], 200_000));
    assert!(r.receipt.status);
    assert!(r.receipt.logs.is_empty());
    assert_eq!(count(&chain), 1, "a reverted inner frame's increment is undone at the end of the tx");

    let r = run(&mut chain, tx(BOB, 3, Some(swallow_then_inc), 0, vec![], 300_000));
    assert!(r.receipt.status);
    assert_eq!(r.receipt.logs.len(), 1);
    assert_eq!(r.receipt.logs[0].data, U256::from(2u8).to_be_bytes::<32>().to_vec());
    assert_eq!(count(&chain), 2, "undone before the next system call");

    let r = run(&mut chain, tx(BOB, 4, Some(inc_then_swallow), 0, vec![], 300_000));
    assert!(r.receipt.status);
    assert_eq!(count(&chain), 3, "the earlier, committed increment survives");

    // Every node agrees: a peer executing the same blocks gets the same
    // state root (checked by accept_block) and count.
    let mut peer = new_chain();
    for n in 1..=chain.best_number() {
        let h = chain.hash_at(n).unwrap();
        peer.accept_block(chain.block(&h).unwrap().clone()).unwrap();
    }
    assert_eq!(peer.system(), chain.system());
}

#[test]
fn delegatecall_to_the_system_contract_fails() {
    let mut chain = new_chain();
    let d = deploy(&mut chain, ALICE, 0, &delegate_runtime(COUNTER, 0x01));
    let r = run(&mut chain, tx(BOB, 0, Some(d), 0, vec![], 200_000));
    assert!(r.receipt.status);
    assert_eq!(chain.storage(&d, &U256::ZERO), U256::from(5u8), "DELEGATECALL returned 0");
    assert_eq!(chain.system().count, 0);
}

#[test]
fn a_chain_without_system_contract() {
    let mut config = chain_config();
    config.genesis = config.genesis.with_balance([9; 20], 1);
    let chain = SideChain::new(config, NoSystemContract);
    assert_eq!(chain.balance(&[9; 20]), 1);
    let out = chain.call(&fika_side::system::NO_SYSTEM_CONTRACT_ADDRESS, &[]).unwrap();
    assert!(!out.success);
}

#[test]
fn fee_recipients_share_the_block_fees_at_block_processing() {
    let sharers = vec![[0xa1; 20], [0xa2; 20], [0xa3; 20]];
    let mut config = chain_config();
    config.fee_share_divisor = 100;
    let counter = Counter { sharers: sharers.clone(), ..Counter::default() };
    let mut chain = SideChain::new(config.clone(), counter.clone());
    let mut other = SideChain::new(config, counter);
    let supply = |c: &SideChain<Counter>| -> U256 {
        let s = c.state_at(&c.best_hash()).unwrap();
        s.world.accounts().map(|(_, a)| a.balance).fold(U256::ZERO, |x, y| x + y)
    };
    let before = supply(&chain);
    let txs = [
        transfer(ALICE, 0, addr(BOB), 1),
        transfer(ALICE, 1, addr(BOB), 1),
        transfer(BOB, 0, addr(ALICE), 7),
    ];
    let tip = chain.best_hash();
    let block = build(&mut chain, tip, &txs, 10);
    let hash = chain.accept_block(block.clone()).unwrap().hash;
    // Another node executing the block reaches the same state root.
    assert_eq!(other.accept_block(block).unwrap().status, BlockStatus::Connected);
    let fees = 3 * 21_000 * GWEI;
    let each = fees / 100 / 3;
    for s in &sharers {
        assert_eq!(chain.balance(s), each, "1 % of the fees, in equal parts");
    }
    assert_eq!(chain.balance(&MINER), fees - 3 * each, "the miner keeps the rest");
    assert_eq!(chain.fee_share_at(&hash), Some(3 * each));
    assert_eq!(supply(&chain), before, "fees move, nothing is created");
    // An empty block pays no share.
    let empty = mine_tip(&mut chain, &[]);
    assert_eq!(chain.fee_share_at(&empty), Some(0));
    // Without a share the miner keeps everything.
    let mut plain = SideChain::new(chain_config(), Counter { sharers, ..Counter::default() });
    let tip = plain.best_hash();
    let h = mine(&mut plain, tip, &txs);
    assert_eq!(plain.balance(&MINER), fees);
    assert_eq!(plain.fee_share_at(&h), Some(0));
}
