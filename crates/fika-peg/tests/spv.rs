//! The Bridge's SPV view of Bitcoin: connection, PoW per mode, retargeting,
//! most-work best chain, reorgs, depth queries, 32-byte chain work.

#![allow(clippy::unwrap_used)]

use bitcoin::block::{Header, Version};
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, CompactTarget, TxMerkleNode};
use fika_btc::pow::{self, PowError};
use fika_btc::{ChainParams, PowMode};
use fika_peg::btc_spv::{BtcSpv, Checkpoint, SpvError};

/// A header branch builder that computes the bits the retarget rule wants.
#[derive(Clone)]
struct Branch {
    params: ChainParams,
    /// (height, header), from the checkpoint up.
    headers: Vec<(u32, Header)>,
    tag: u32,
}

impl Branch {
    fn new(params: &ChainParams, checkpoint: &Checkpoint, tag: u32) -> Self {
        Branch { params: params.clone(), headers: vec![(checkpoint.height, checkpoint.header)], tag }
    }

    /// A branch that forks after `height`.
    fn fork_at(&self, height: u32, tag: u32) -> Self {
        let mut b = self.clone();
        b.headers.retain(|(h, _)| *h <= height);
        b.tag = tag;
        b
    }

    fn tip(&self) -> (u32, Header) {
        *self.headers.last().unwrap()
    }

    /// Appends a header `spacing` seconds after the tip, with correct bits
    /// (ground in real mode).
    fn push(&mut self, spacing: u32) -> Header {
        let (h, tip) = self.tip();
        let bits = pow::next_work_required(&self.params, h, tip.bits, tip.time, |at| {
            self.headers.iter().find(|(x, _)| *x == at).map(|(_, hd)| hd.time)
        });
        self.push_with_bits(spacing, bits)
    }

    fn push_with_bits(&mut self, spacing: u32, bits: CompactTarget) -> Header {
        let (h, tip) = self.tip();
        self.tag += 1;
        let mut header = Header {
            version: Version::from_consensus(0x2000_0000),
            prev_blockhash: tip.block_hash(),
            merkle_root: TxMerkleNode::hash(&self.tag.to_be_bytes()),
            time: tip.time + spacing,
            bits,
            nonce: 0,
        };
        if self.params.pow_mode == PowMode::Real {
            assert!(pow::grind(&mut header, 1 << 24));
        }
        self.headers.push((h + 1, header));
        header
    }

    fn extend(&mut self, n: u32, spacing: u32) -> Vec<Header> {
        (0..n).map(|_| self.push(spacing)).collect()
    }
}

fn regtest() -> (ChainParams, Checkpoint) {
    let params = ChainParams::regtest_fast();
    let cp = Checkpoint::genesis(&params).unwrap();
    (params, cp)
}

#[track_caller]
fn feed_ok(spv: &mut BtcSpv, headers: &[Header]) {
    let out = spv.receive_headers(headers);
    assert!(out.rejected.is_empty(), "rejected: {:?}", out.rejected);
}

#[test]
fn headers_must_connect_and_the_best_chain_is_indexed() {
    let (params, cp) = regtest();
    let mut spv = BtcSpv::new(params.clone(), cp).unwrap();
    let mut main = Branch::new(&params, &cp, 0);
    let hs = main.extend(10, 10);
    // Skipping a header leaves the rest unconnected.
    let out = spv.receive_headers(&hs[1..]);
    assert_eq!(out.accepted.len(), 0);
    assert_eq!(out.rejected.len(), 9);
    assert!(
        matches!(out.rejected[0], SpvError::UnknownParent { parent, .. } if parent == hs[0].block_hash())
    );
    assert_eq!(spv.best_height(), 0);
    feed_ok(&mut spv, &hs);
    assert_eq!(spv.best_height(), 10);
    assert_eq!(spv.best_hash(), hs[9].block_hash());
    assert_eq!(spv.hash_at_depth(0), Some(hs[9].block_hash()));
    assert_eq!(spv.hash_at_depth(3), Some(hs[6].block_hash()));
    assert_eq!(spv.hash_at_depth(10), Some(cp.header.block_hash()));
    assert_eq!(spv.hash_at_depth(11), None);
    assert_eq!(spv.height_of(&hs[4].block_hash()), Some(5));
    assert!(spv.is_on_best_chain(&hs[4].block_hash()));
    assert_eq!(spv.height_of(&BlockHash::all_zeros()), None);
    // Re-sending known headers is harmless.
    let again = spv.receive_headers(&hs);
    assert!(again.rejected.is_empty() && again.accepted.iter().all(|a| !a.is_new) && !again.best_changed);
}

#[test]
fn longer_branch_reorganises_and_old_blocks_leave_the_best_chain() {
    let (params, cp) = regtest();
    let mut spv = BtcSpv::new(params.clone(), cp).unwrap();
    let mut main = Branch::new(&params, &cp, 0);
    let hs = main.extend(10, 10);
    feed_ok(&mut spv, &hs);
    // A branch from height 6 with equal length does not win (first seen).
    let mut fork = main.fork_at(6, 1000);
    let fs = fork.extend(4, 11);
    feed_ok(&mut spv, &fs);
    assert_eq!(spv.best_hash(), hs[9].block_hash());
    assert!(spv.get(&fs[3].block_hash()).is_some() && !spv.is_on_best_chain(&fs[3].block_hash()));
    // One more block on the fork wins: a 4-block reorg.
    let more = fork.push(11);
    let out = spv.receive_headers(&[more]);
    assert!(out.best_changed);
    assert_eq!(out.max_reorg_depth, 4);
    let reorg = out.accepted[0].reorg.clone().unwrap();
    assert_eq!(reorg.fork_height, 6);
    assert_eq!(
        reorg.disconnected,
        vec![hs[9].block_hash(), hs[8].block_hash(), hs[7].block_hash(), hs[6].block_hash()]
    );
    assert_eq!(spv.best_height(), 11);
    assert_eq!(spv.hash_at_height(7), Some(fs[0].block_hash()));
    assert!(!spv.is_on_best_chain(&hs[7].block_hash()));
    assert!(spv.is_on_best_chain(&hs[5].block_hash()));
    assert_eq!(spv.hash_at_depth(5), Some(hs[5].block_hash()));
}

#[test]
fn most_work_wins_not_most_blocks() {
    // Retarget every 4 blocks of 10 s: fast blocks make the next interval
    // 4x harder, so 6 hard-won blocks outweigh 14 easy ones.
    let params = ChainParams {
        retargeting: true,
        retarget_interval: 4,
        target_timespan_secs: 40,
        pow_limit_bits: 0x1f00_ffff,
        genesis: fika_btc::GenesisSpec::Synthetic { time: 1_700_000_000 },
        ..ChainParams::regtest_fast()
    };
    let cp = Checkpoint::genesis(&params).unwrap();
    let mut spv = BtcSpv::new(params.clone(), cp).unwrap();
    let mut slow = Branch::new(&params, &cp, 0);
    let long = slow.extend(14, 100);
    feed_ok(&mut spv, &long);
    assert_eq!(spv.best_height(), 14);
    let mut fast = Branch::new(&params, &cp, 5000);
    let short = fast.extend(6, 1);
    assert_ne!(short[3].bits, short[2].bits, "the retarget made blocks harder");
    feed_ok(&mut spv, &short);
    assert_eq!(spv.best_height(), 6);
    assert_eq!(spv.best_hash(), short[5].block_hash());
    assert!(!spv.is_on_best_chain(&long[13].block_hash()));
    // A header at the boundary with the old bits is refused.
    let mut wrong = Branch::new(&params, &cp, 9000);
    let first = wrong.extend(3, 1);
    feed_ok(&mut spv, &first);
    let bad = wrong.push_with_bits(1, first[2].bits);
    let err = spv.receive_header(&bad).unwrap_err();
    assert!(matches!(err, SpvError::BadPow { error: PowError::BadBits { .. }, .. }), "{err:?}");
}

#[test]
fn bits_must_match_and_real_mode_checks_the_hash() {
    let (params, cp) = regtest();
    let mut spv = BtcSpv::new(params.clone(), cp).unwrap();
    let mut b = Branch::new(&params, &cp, 0);
    // Easier or harder bits than expected are refused (no retargeting).
    let harder = b.clone().push_with_bits(10, CompactTarget::from_consensus(0x1f00_ffff));
    assert!(matches!(
        spv.receive_header(&harder),
        Err(SpvError::BadPow { error: PowError::BadBits { .. }, .. })
    ));
    // Simulated mode: any nonce.
    let ok = b.push(10);
    spv.receive_header(&ok).unwrap();

    let real = ChainParams { pow_mode: PowMode::Real, ..params };
    let cp = Checkpoint::genesis(&real).unwrap();
    let mut spv = BtcSpv::new(real.clone(), cp).unwrap();
    let mut b = Branch::new(&real, &cp, 0);
    let good = b.push(10);
    let mut bad = good;
    let target = pow::decode_compact(bad.bits.to_consensus()).unwrap();
    while target.is_met_by(bad.block_hash()) {
        bad.nonce = bad.nonce.wrapping_add(1);
    }
    assert!(matches!(
        spv.receive_header(&bad),
        Err(SpvError::BadPow { error: PowError::HighHash { .. }, .. })
    ));
    spv.receive_header(&good).unwrap();
    assert_eq!(spv.best_height(), 1);
}

#[test]
fn mainnet_retarget_from_a_checkpoint() {
    // Mainnet rules from the genesis checkpoint: 2015 headers keep the bits,
    // header 2016 must carry the retargeted bits.
    let params = ChainParams::mainnet();
    let cp = Checkpoint::genesis(&params).unwrap();
    let mut spv = BtcSpv::new(params.clone(), cp).unwrap();
    let mut b = Branch::new(&params, &cp, 0);
    let hs = b.extend(2015, 300); // twice as fast as intended
    feed_ok(&mut spv, &hs);
    let mut wrong = b.clone();
    let stale = wrong.push_with_bits(300, hs[2014].bits);
    assert!(matches!(
        spv.receive_header(&stale),
        Err(SpvError::BadPow { error: PowError::BadBits { .. }, .. })
    ));
    let right = b.push(300);
    assert_ne!(right.bits, hs[0].bits);
    spv.receive_header(&right).unwrap();
    assert_eq!(spv.best_height(), 2016);
    // A checkpoint inside an interval cannot be used with retargeting.
    let mid = Checkpoint { header: hs[99], height: 100, chain_work: cp.chain_work };
    assert_eq!(
        BtcSpv::new(params.clone(), mid).unwrap_err(),
        SpvError::CheckpointNotAtRetargetBoundary { height: 100, interval: 2016 }
    );
    // A checkpoint at a boundary works, and the next boundary's first block is known.
    let at = Checkpoint { header: right, height: 2016, chain_work: spv.best_chain_work() };
    let mut spv2 = BtcSpv::new(params.clone(), at).unwrap();
    let mut b2 = Branch::new(&params, &at, 77);
    feed_ok(&mut spv2, &b2.extend(2016, 600));
    assert_eq!(spv2.best_height(), 4032);
}

#[test]
fn chain_work_beyond_96_bits_is_kept_in_32_bytes() {
    // Rootstock's 12-byte chain-work field overflowed in 2024; a checkpoint
    // with mainnet-sized work (> 2^96) must keep counting.
    let (params, cp) = regtest();
    let mut work = [0u8; 32];
    work[19] = 0xff; // about 2^103
    let big = Checkpoint { chain_work: work, ..cp };
    let mut spv = BtcSpv::new(params.clone(), big).unwrap();
    let mut b = Branch::new(&params, &big, 0);
    feed_ok(&mut spv, &b.extend(3, 10));
    let got = spv.best_chain_work();
    assert!(got > work);
    assert_eq!(&got[..19], &work[..19]);
    // Overflowing 2^256 is refused rather than wrapped.
    let full = Checkpoint { chain_work: [0xff; 32], ..cp };
    let mut spv = BtcSpv::new(params.clone(), full).unwrap();
    let mut b = Branch::new(&params, &full, 0);
    let h = b.push(10);
    assert!(matches!(spv.receive_header(&h), Err(SpvError::ChainWorkOverflow { .. })));
}

#[test]
fn clones_are_independent_snapshots() {
    let (params, cp) = regtest();
    let mut spv = BtcSpv::new(params.clone(), cp).unwrap();
    let mut b = Branch::new(&params, &cp, 0);
    feed_ok(&mut spv, &b.extend(5, 10));
    let snapshot = spv.clone();
    feed_ok(&mut spv, &b.extend(5, 10));
    assert_eq!(snapshot.best_height(), 5);
    assert_eq!(spv.best_height(), 10);
    assert_eq!(snapshot.len(), 6);
}
