//! Execution: value transfers and fees, contract creation and calls,
//! receipts, logs and receipt proofs, invalid transactions, determinism
//! across nodes.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fika_side::{
    BlockStatus, ChainError, RBTC_SUPPLY_WEI, SideChain, TxExecError, U256, WEI_PER_RBTC, contract_address,
    keccak256, verify_receipt_proof,
};

#[test]
fn transfer_moves_balance_and_pays_the_miner() {
    let mut chain = new_chain();
    let alice = addr(ALICE);
    let bob = addr(BOB);
    assert_eq!(chain.balance(&alice), 10 * WEI_PER_RBTC);
    assert_eq!(hex::encode(fika_side::BRIDGE_ADDRESS), "0000000000000000000000000000000001000006");
    assert_eq!(chain.balance(&fika_side::BRIDGE_ADDRESS), RBTC_SUPPLY_WEI);
    assert_eq!(RBTC_SUPPLY_WEI, 21_000_000 * 10u128.pow(18));
    assert_eq!(chain.balance(&MINER), 0);

    let t = transfer(ALICE, 0, bob, WEI_PER_RBTC);
    let h = t.tx_hash();
    let block = mine_tip(&mut chain, &[t]);

    let fee = 21_000 * GWEI;
    assert_eq!(chain.balance(&bob), 11 * WEI_PER_RBTC);
    assert_eq!(chain.balance(&alice), 9 * WEI_PER_RBTC - fee);
    assert_eq!(chain.balance(&MINER), fee);
    assert_eq!(chain.nonce(&alice), 1);
    assert_eq!(chain.nonce(&bob), 0);

    let info = chain.receipt(&h).unwrap();
    assert!(info.receipt.status);
    assert_eq!(info.receipt.gas_used, 21_000);
    assert_eq!(info.receipt.cumulative_gas_used, 21_000);
    assert_eq!(info.block_hash, block);
    assert_eq!(info.sender, alice);
    assert_eq!(chain.header(&block).unwrap().gas_used, 21_000);
    // The state root commits to the incremental digest, which matches a
    // recomputation from scratch.
    let state = chain.state();
    assert_eq!(state.world.digest(), state.world.recompute_digest());
    assert_eq!(chain.header(&block).unwrap().state_root, state.state_root());
}

#[test]
fn fees_accumulate_over_several_transactions() {
    let mut chain = new_chain();
    let txs = [
        transfer(ALICE, 0, addr(BOB), 1),
        transfer(ALICE, 1, addr(BOB), 2),
        transfer(BOB, 0, addr(ALICE), 3),
    ];
    let block = mine_tip(&mut chain, &txs);
    let receipts = chain.receipts(&block).unwrap();
    assert_eq!(receipts.iter().map(|r| r.cumulative_gas_used).collect::<Vec<_>>(), [21_000, 42_000, 63_000]);
    assert_eq!(chain.balance(&MINER), 63_000 * GWEI);
    assert_eq!(chain.balance(&addr(ALICE)), 10 * WEI_PER_RBTC - 3 + 3 - 42_000 * GWEI);
}

#[test]
fn invalid_transactions_are_left_out_of_templates_and_fail_blocks() {
    let mut chain = new_chain();
    let g = chain.genesis_hash();
    let good = transfer(ALICE, 0, addr(BOB), 1);
    let bad_nonce = transfer(ALICE, 5, addr(BOB), 1);
    let too_rich = transfer(BOB, 0, addr(ALICE), 1_000 * WEI_PER_RBTC);
    let mut other_chain = tx(ALICE, 1, Some(addr(BOB)), 1, vec![], 21_000);
    other_chain = fika_side::UnsignedTx { chain_id: Some(31), ..other_chain.tx }.sign(&key(ALICE));
    let txs = [good.clone(), bad_nonce.clone(), too_rich.clone(), other_chain.clone()];
    let template = chain.build_template(&g, &txs, MINER, 1_700_000_010).unwrap();
    assert_eq!(template.transactions, vec![good.clone()]);
    let rejected: Vec<[u8; 32]> = template.rejected.iter().map(|(h, _)| *h).collect();
    assert_eq!(rejected, vec![bad_nonce.tx_hash(), too_rich.tx_hash(), other_chain.tx_hash()]);
    assert!(matches!(template.rejected[2].1, TxExecError::WrongChainId { expected: 33, got: 31 }));

    // A block that includes an invalid transaction is rejected by a peer.
    let mut peer = new_chain();
    let mut block = template.clone().finish(mm_proof(&template.hash_for_merged_mining()));
    block.transactions.push(bad_nonce);
    block.header.transactions_root = fika_side::block::transactions_root(&block.transactions);
    let tag = block.header.hash_for_merged_mining();
    block.header.merge_mining = Some(mm_proof(&tag));
    let hash = block.hash();
    let err = peer.accept_block(block.clone()).unwrap_err();
    assert!(matches!(err, ChainError::Transaction { index: 1, error: TxExecError::Invalid(_) }), "{err}");
    assert_eq!(peer.accept_block(block).unwrap_err(), ChainError::KnownInvalid(hash));
    assert_eq!(peer.best_number(), 0);
}

#[test]
fn contract_stores_a_value_and_its_log_is_proven_by_the_receipts_root() {
    let mut chain = new_chain();
    let topic = keccak256(b"Stored(uint256)");
    let contract = deploy(&mut chain, ALICE, 0, &store_and_log_runtime(topic));
    assert_eq!(contract, contract_address(&addr(ALICE), 0));

    let value = U256::from(0x1234_5678u64).to_be_bytes::<32>().to_vec();
    let filler = transfer(BOB, 0, addr(ALICE), 1);
    let call = tx(ALICE, 1, Some(contract), 0, value.clone(), 100_000);
    let call_hash = call.tx_hash();
    let block = mine_tip(&mut chain, &[filler, call]);
    assert_eq!(chain.storage(&contract, &U256::ZERO), U256::from(0x1234_5678u64));
    assert_eq!(chain.state().world.digest(), chain.state().world.recompute_digest());

    let info = chain.receipt(&call_hash).unwrap();
    assert!(info.receipt.status);
    assert_eq!(info.tx_index, 1);
    assert_eq!(info.receipt.logs.len(), 1);
    let log = &info.receipt.logs[0];
    assert_eq!(log.address, contract);
    assert_eq!(log.topics, vec![topic]);
    assert_eq!(log.data, value);

    // The receipt is under the header's receipts root.
    let root = chain.header(&block).unwrap().receipts_root;
    let (receipt, proof) = chain.receipt_proof(&block, 1).unwrap();
    assert_eq!(receipt, info.receipt);
    assert!(verify_receipt_proof(&root, &receipt, &proof));
    // A tampered receipt, or the proof of another index, does not verify.
    let mut forged = receipt.clone();
    forged.logs[0].data[31] ^= 1;
    assert!(!verify_receipt_proof(&root, &forged, &proof));
    let (_, proof0) = chain.receipt_proof(&block, 0).unwrap();
    assert!(!verify_receipt_proof(&root, &receipt, &proof0));
    let mut wrong_root = root;
    wrong_root[0] ^= 1;
    assert!(!verify_receipt_proof(&wrong_root, &receipt, &proof));

    // The log is found by address and topic over the best chain.
    let logs = chain.logs(Some(contract), Some(topic));
    assert_eq!(logs.len(), 1);
    assert_eq!(logs[0].block_hash, block);
    assert_eq!(logs[0].tx_hash, call_hash);
    assert_eq!(logs[0].log_index, 0);
    assert!(chain.logs(Some(addr(BOB)), None).is_empty());
    assert!(chain.logs(None, Some([0; 32])).is_empty());
}

#[test]
fn failed_call_pays_gas_and_keeps_no_state() {
    let mut chain = new_chain();
    let reverter = deploy(&mut chain, ALICE, 0, &revert_tail());
    let before = chain.balance(&addr(ALICE));
    let t = tx(ALICE, 1, Some(reverter), 5, vec![], 50_000);
    let h = t.tx_hash();
    mine_tip(&mut chain, &[t]);
    let r = chain.receipt(&h).unwrap().receipt;
    assert!(!r.status);
    assert!(r.logs.is_empty());
    assert_eq!(chain.balance(&reverter), 0);
    assert_eq!(chain.balance(&addr(ALICE)), before - u128::from(r.gas_used) * GWEI);
    assert_eq!(chain.nonce(&addr(ALICE)), 2);
}

#[test]
fn a_peer_executing_the_blocks_reaches_the_same_state() {
    let mut miner = new_chain();
    let mut peer = new_chain();
    assert_eq!(miner.genesis_hash(), peer.genesis_hash());
    let topic = keccak256(b"Stored(uint256)");
    let runtime = store_and_log_runtime(topic);
    let t0 = tx(ALICE, 0, None, 0, deploy_code(&runtime), 300_000);
    let contract = contract_address(&addr(ALICE), 0);
    let t1 = tx(ALICE, 1, Some(contract), 0, vec![7; 32], 100_000);
    let t2 = tx(BOB, 0, Some(COUNTER), 3, vec![0x01], 100_000);
    let t3 = transfer(BOB, 1, addr(ALICE), 42);
    let mut hashes = Vec::new();
    for txs in [vec![t0], vec![t1, t2], vec![t3]] {
        let tip = miner.best_hash();
        let block = build(&mut miner, tip, &txs, 10);
        hashes.push(block.hash());
        // The peer decodes the relayed bytes and executes from scratch.
        let relayed = fika_side::SideBlock::decode(&block.encode()).unwrap();
        assert_eq!(peer.accept_block(relayed).unwrap().status, BlockStatus::Connected);
        assert_eq!(miner.accept_block(block).unwrap().status, BlockStatus::Connected);
    }
    assert_eq!(miner.best_hash(), peer.best_hash());
    assert_eq!(miner.state().state_root(), peer.state().state_root());
    assert_eq!(peer.system().count, 1);
    assert_eq!(peer.storage(&contract, &U256::ZERO), U256::from_be_bytes([7; 32]));
    for h in hashes {
        assert_eq!(miner.receipts(&h), peer.receipts(&h));
    }
}

#[test]
fn blockhash_and_chain_queries() {
    let mut chain: SideChain<Counter> = new_chain();
    let g = chain.genesis_hash();
    // Runtime: SSTORE(0, BLOCKHASH(NUMBER - 1)).
    let runtime = [op::PUSH1, 1, 0x43, 0x03, 0x40, op::PUSH1, 0, op::SSTORE, op::STOP];
    let c = deploy(&mut chain, ALICE, 0, &runtime);
    let b1 = chain.best_hash();
    let b2 = mine_tip(&mut chain, &[tx(ALICE, 1, Some(c), 0, vec![], 100_000)]);
    assert_eq!(chain.storage(&c, &U256::ZERO), U256::from_be_bytes(b1));
    assert_eq!(chain.best_number(), 2);
    assert_eq!(chain.hash_at(0), Some(g));
    assert_eq!(chain.hash_at(1), Some(b1));
    assert_eq!(chain.hash_at(2), Some(b2));
    assert_eq!(chain.total_difficulty(&b2), Some(U256::from(3u8)));
    assert!(chain.is_on_best_chain(&b1));
    assert_eq!(chain.header(&b2).unwrap().parent_hash, b1);
}
