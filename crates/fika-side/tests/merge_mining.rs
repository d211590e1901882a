//! Merge mining: the tag in a real Bitcoin coinbase, the coinbase's merkle
//! branch, the PoW check in real mode, and the chain's use of them.
#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::{Amount, TxOut};
use common::*;
use fika_side::block::{coinbase_merkle_branch, merge_mining_tags};
use fika_side::{
    ChainConfig, ChainError, MergeMiningProof, MmError, PowMode, SideChain, SideHeader, U256,
    difficulty_to_target, merge_mining_tag, verify_merge_mining,
};

/// A template header on genesis, finished with `proof`.
fn header_with(proof: impl FnOnce(&[u8; 32]) -> MergeMiningProof) -> SideHeader {
    let mut chain = new_chain();
    let g = chain.genesis_hash();
    chain.build_block(&g, &[], MINER, 1_700_000_010, proof).unwrap().header
}

fn any_target() -> bitcoin::Target {
    difficulty_to_target(&U256::from(1u8))
}

#[test]
fn tag_format() {
    let script = merge_mining_tag(&[0xab; 32]);
    let bytes = script.as_bytes();
    assert_eq!(bytes[0], 0x6a); // OP_RETURN
    assert_eq!(bytes[1], 41); // push of 41 bytes
    assert_eq!(&bytes[2..11], b"RSKBLOCK:");
    assert_eq!(&bytes[11..], &[0xab; 32]);
}

#[test]
fn coinbase_branch_matches_the_block_merkle_root() {
    for n in 0..9u8 {
        let block = btc_block(&[1; 32], n);
        let proof = MergeMiningProof::from_bitcoin_block(&block).unwrap();
        assert_eq!(proof.computed_merkle_root(), block.header.merkle_root, "{n} extra txs");
        assert_eq!(coinbase_merkle_branch(&block).len(), proof.coinbase_branch.len());
        assert!(block.check_merkle_root());
    }
}

#[test]
fn accepts_a_correct_proof() {
    let h = header_with(mm_proof);
    verify_merge_mining(&h, PowMode::Simulated, &any_target()).unwrap();
    verify_merge_mining(&h, PowMode::Real, &any_target()).unwrap();
}

#[test]
fn rejects_a_wrong_tag() {
    let h = header_with(|_| mm_proof(&[0x55; 32]));
    let err = verify_merge_mining(&h, PowMode::Simulated, &any_target()).unwrap_err();
    assert!(matches!(err, MmError::WrongTag { .. }), "{err}");
}

#[test]
fn rejects_a_missing_or_doubled_tag() {
    let h = header_with(|hash| {
        let mut p = mm_proof(hash);
        p.btc_coinbase.output.retain(|o| o.script_pubkey != merge_mining_tag(hash));
        assert!(merge_mining_tags(&p.btc_coinbase).is_empty());
        p
    });
    assert!(matches!(
        verify_merge_mining(&h, PowMode::Simulated, &any_target()),
        Err(MmError::MissingTag(_))
    ));

    let h = header_with(|hash| {
        let mut block = btc_block(hash, 3);
        block.txdata[0].output.push(TxOut { value: Amount::ZERO, script_pubkey: merge_mining_tag(&[7; 32]) });
        block.header.merkle_root = fika_btc::merkle::block_merkle_root(&block);
        MergeMiningProof::from_bitcoin_block(&block).unwrap()
    });
    assert!(matches!(
        verify_merge_mining(&h, PowMode::Simulated, &any_target()),
        Err(MmError::MultipleTags { count: 2, .. })
    ));
}

#[test]
fn rejects_a_wrong_coinbase_proof() {
    // A sibling hash altered.
    let h = header_with(|hash| {
        let mut p = mm_proof(hash);
        p.coinbase_branch[1][0] ^= 1;
        p
    });
    assert!(matches!(
        verify_merge_mining(&h, PowMode::Simulated, &any_target()),
        Err(MmError::BadCoinbaseProof { .. })
    ));
    // The coinbase with its tag, grafted on another Bitcoin block's header.
    let h = header_with(|hash| {
        let mut p = mm_proof(hash);
        p.btc_header = btc_block(&[0; 32], 2).header;
        p
    });
    assert!(matches!(
        verify_merge_mining(&h, PowMode::Simulated, &any_target()),
        Err(MmError::BadCoinbaseProof { .. })
    ));
    // A branch dropped.
    let h = header_with(|hash| {
        let mut p = mm_proof(hash);
        p.coinbase_branch.pop();
        p
    });
    assert!(matches!(
        verify_merge_mining(&h, PowMode::Simulated, &any_target()),
        Err(MmError::BadCoinbaseProof { .. })
    ));
    // A transaction that is not a coinbase, with a consistent branch.
    let h = header_with(|hash| {
        let block = btc_block(hash, 3);
        let mut p = MergeMiningProof::from_bitcoin_block(&block).unwrap();
        p.btc_coinbase.input[0].previous_output.vout = 0;
        p
    });
    assert!(matches!(
        verify_merge_mining(&h, PowMode::Simulated, &any_target()),
        Err(MmError::NotCoinbase(_))
    ));
    // No proof at all.
    let mut h = header_with(mm_proof);
    h.merge_mining = None;
    assert_eq!(verify_merge_mining(&h, PowMode::Simulated, &any_target()), Err(MmError::Missing));
}

#[test]
fn real_pow_checks_the_bitcoin_hash_against_the_sidechain_target() {
    // Difficulty 2^40: about 2^40 tries would be needed, so an unground
    // header fails in real mode, passes in simulated mode.
    let hard = U256::from(1u64 << 40);
    let h = header_with(mm_proof);
    let target = difficulty_to_target(&hard);
    assert!(matches!(verify_merge_mining(&h, PowMode::Real, &target), Err(MmError::HighHash { .. })));
    verify_merge_mining(&h, PowMode::Simulated, &target).unwrap();

    // Difficulty 64: grinding the Bitcoin nonce finds a share quickly.
    let easy = difficulty_to_target(&U256::from(64u8));
    let h = header_with(|hash| {
        let mut block = btc_block(hash, 2);
        while !easy.is_met_by(block.header.block_hash()) {
            block.header.nonce += 1;
        }
        MergeMiningProof::from_bitcoin_block(&block).unwrap()
    });
    verify_merge_mining(&h, PowMode::Real, &easy).unwrap();
}

#[test]
fn chain_in_real_mode_requires_enough_work() {
    let mut config = chain_config();
    config.pow_mode = PowMode::Real;
    config.genesis.difficulty = U256::from(1u64 << 40);
    let mut chain = SideChain::new(config, Counter::default());
    let g = chain.genesis_hash();
    let block = build(&mut chain, g, &[], 10);
    let hash = block.hash();
    let err = chain.accept_block(block).unwrap_err();
    assert!(matches!(err, ChainError::MergeMining(MmError::HighHash { .. })), "{err}");
    let again = build(&mut chain, g, &[], 10);
    assert_eq!(chain.accept_block(again).unwrap_err(), ChainError::KnownInvalid(hash));

    let mut config = chain_config();
    config.pow_mode = PowMode::Real;
    config.genesis.difficulty = U256::from(16u8);
    let mut chain = SideChain::new(config, Counter::default());
    let g = chain.genesis_hash();
    let target = difficulty_to_target(&U256::from(16u8));
    let block = chain
        .build_block(&g, &[], MINER, 1_700_000_010, |hash| {
            let mut b = btc_block(hash, 1);
            while !target.is_met_by(b.header.block_hash()) {
                b.header.nonce += 1;
            }
            MergeMiningProof::from_bitcoin_block(&b).unwrap()
        })
        .unwrap();
    chain.accept_block(block).unwrap();
    assert_eq!(chain.best_number(), 1);
}

#[test]
fn chain_rejects_wrong_tags_and_keeps_good_headers_with_bad_bodies() {
    let mut chain = new_chain();
    let g = chain.genesis_hash();
    let t = transfer(ALICE, 0, addr(BOB), 1);
    let template = chain.build_template(&g, &[t], MINER, 1_700_000_010).unwrap();

    // Tag for another block.
    let wrong = template.clone().finish(mm_proof(&[3; 32]));
    let err = chain.accept_block(wrong).unwrap_err();
    assert!(matches!(err, ChainError::MergeMining(MmError::WrongTag { .. })), "{err}");

    // The right header with its transactions dropped: rejected, but the
    // header is not condemned, so the complete block is accepted after.
    let good = template.clone().finish(mm_proof(&template.hash_for_merged_mining()));
    let mut stripped = good.clone();
    stripped.transactions.clear();
    assert!(matches!(chain.accept_block(stripped).unwrap_err(), ChainError::BadTransactionsRoot { .. }));
    chain.accept_block(good).unwrap();
    assert_eq!(chain.best_number(), 1);
}

#[test]
fn a_tagged_block_from_a_real_bitcoin_template_is_valid_on_both_chains() {
    // Bitcoin side: a regtest template, tagged, accepted by fika-btc.
    let params = fika_btc::ChainParams::regtest_fast();
    let mut btc = fika_btc::ChainState::new(params);
    let mempool = fika_btc::Mempool::new(fika_btc::MempoolConfig::default());
    let now = u64::from(btc.tip().header.time) + 600;

    let mut side = new_chain();
    let g = side.genesis_hash();
    let template =
        side.build_template(&g, &[transfer(ALICE, 0, addr(BOB), 9)], MINER, 1_700_000_010).unwrap();
    let mut btc_template =
        fika_btc::build_template(&btc, &mempool, &bitcoin::ScriptBuf::new(), now, b"merge-miner");
    fika_side::add_merge_mining_tag(&mut btc_template.block, &template.hash_for_merged_mining());
    let proof = MergeMiningProof::from_bitcoin_block(&btc_template.block).unwrap();
    btc.accept_block(btc_template.block.clone(), now).unwrap();
    assert_eq!(btc.tip_hash(), btc_template.block.block_hash());

    side.accept_block(template.finish(proof)).unwrap();
    assert_eq!(side.best_number(), 1);
    let _ = ChainConfig::regtest();
}
