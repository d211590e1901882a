//! Proof of work: compact targets, chain work, Bitcoin's difficulty retarget
//! and the PoW check in both [`PowMode`]s.
//!
//! Compact `bits` are decoded exactly like Bitcoin Core's
//! `arith_uint256::SetCompact` (negative and overflowing encodings are
//! errors), retargeting follows Core's `CalculateNextWorkRequired` (clamp
//! factor 4, `pow_limit` cap; the product is computed in 320 bits so it never
//! wraps), and chain work is Core's `GetBlockProof` (`bitcoin::Work`).

use bitcoin::block::Header;
use bitcoin::pow::{CompactTarget, Target, Work};
use thiserror::Error;

use crate::params::{ChainParams, PowMode};

/// A proof-of-work failure.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PowError {
    /// The compact encoding has its sign bit set.
    #[error("compact target {0:#010x} is negative")]
    NegativeTarget(u32),
    /// The compact encoding does not fit in 256 bits.
    #[error("compact target {0:#010x} overflows 256 bits")]
    OverflowTarget(u32),
    /// The compact encoding is zero.
    #[error("compact target {0:#010x} is zero")]
    ZeroTarget(u32),
    /// The target is easier than the chain's `pow_limit`.
    #[error("target {bits:#010x} is above the pow limit {limit:#010x}")]
    AboveLimit {
        /// The header's bits.
        bits: u32,
        /// The chain's pow limit bits.
        limit: u32,
    },
    /// The header's bits are not the expected next work.
    #[error("bad difficulty bits: expected {expected:#010x}, got {got:#010x}")]
    BadBits {
        /// What next_work_required says.
        expected: u32,
        /// What the header carries.
        got: u32,
    },
    /// In [`PowMode::Real`], the header hash is above its target.
    #[error("block hash {hash} does not meet target bits {bits:#010x}")]
    HighHash {
        /// The header hash.
        hash: bitcoin::BlockHash,
        /// The header's bits.
        bits: u32,
    },
}

/// Decodes compact `bits` into a [`Target`] as Core's `SetCompact` does,
/// refusing negative, overflowing and zero encodings.
pub fn decode_compact(bits: u32) -> Result<Target, PowError> {
    let size = bits >> 24;
    let mut word = bits & 0x007f_ffff;
    if word != 0 && bits & 0x0080_0000 != 0 {
        return Err(PowError::NegativeTarget(bits));
    }
    if word != 0 && (size > 34 || (word > 0xff && size > 33) || (word > 0xffff && size > 32)) {
        return Err(PowError::OverflowTarget(bits));
    }
    let mut le = [0u8; 32];
    if size <= 3 {
        word >>= 8 * (3 - size);
        le[..4].copy_from_slice(&word.to_le_bytes());
    } else {
        let shift = (size - 3) as usize;
        for (i, byte) in word.to_le_bytes().iter().take(3).enumerate() {
            if let Some(slot) = le.get_mut(shift + i) {
                *slot = *byte;
            }
        }
    }
    let target = Target::from_le_bytes(le);
    if target == Target::ZERO {
        return Err(PowError::ZeroTarget(bits));
    }
    Ok(target)
}

/// Encodes a target as compact bits (Core's `GetCompact`).
pub fn encode_compact(target: Target) -> CompactTarget {
    target.to_compact_lossy()
}

/// The chain work (expected number of hashes) of a block with these bits.
pub fn work_from_bits(bits: CompactTarget) -> Result<Work, PowError> {
    Ok(decode_compact(bits.to_consensus())?.to_work())
}

/// The chain work of a header (Core's `GetBlockProof`).
pub fn header_work(header: &Header) -> Result<Work, PowError> {
    work_from_bits(header.bits)
}

/// Expected number of hashes to find a block with these bits, as a float
/// (for a simulated miner's exponential clock: rate = hashrate / this).
pub fn expected_hashes(bits: CompactTarget) -> f64 {
    match work_from_bits(bits) {
        Ok(work) => 2f64.powf(work.log2()),
        Err(_) => f64::INFINITY,
    }
}

/// The bits a block following `prev` must carry.
///
/// `prev_height`, `prev_bits` and `prev_time` describe the parent;
/// `time_at_height(h)` returns the header time of the parent's ancestor at
/// height `h` (only called at a retarget boundary, for the first block of the
/// closing interval). Without retargeting, or away from a boundary, the
/// parent's bits carry over.
pub fn next_work_required(
    params: &ChainParams,
    prev_height: u32,
    prev_bits: CompactTarget,
    prev_time: u32,
    time_at_height: impl FnOnce(u32) -> Option<u32>,
) -> CompactTarget {
    let interval = params.retarget_interval.max(1);
    if !params.retargeting || (u64::from(prev_height) + 1) % u64::from(interval) != 0 {
        return prev_bits;
    }
    // Core's off-by-one: the interval's first block is `interval - 1` back.
    let first_height = prev_height.saturating_sub(interval - 1);
    let first_time = time_at_height(first_height).unwrap_or(prev_time);
    calculate_next_work_required(params, prev_bits, prev_time, first_time)
}

/// Core's `CalculateNextWorkRequired`: scales the previous target by the
/// actual timespan (clamped to `[timespan/4, timespan*4]`) over the target
/// timespan, capped at `pow_limit`.
pub fn calculate_next_work_required(
    params: &ChainParams,
    prev_bits: CompactTarget,
    last_time: u32,
    first_time: u32,
) -> CompactTarget {
    if !params.retargeting {
        return prev_bits;
    }
    let timespan = params.target_timespan_secs.max(1);
    let actual = i128::from(last_time) - i128::from(first_time);
    let min = i128::from(timespan / 4);
    let max = i128::from(timespan) * 4;
    let actual = actual.clamp(min, max) as u64;
    let limit = decode_compact(params.pow_limit_bits).unwrap_or(Target::MAX);
    let prev = decode_compact(prev_bits.to_consensus()).unwrap_or(limit);
    let new = match mul_div(prev, actual, timespan) {
        Some(t) if t <= limit => t,
        _ => limit,
    };
    encode_compact(new)
}

/// `target * mul / div` in 320-bit arithmetic; `None` if the result does not
/// fit in 256 bits or `div` is zero.
fn mul_div(target: Target, mul: u64, div: u64) -> Option<Target> {
    if div == 0 {
        return None;
    }
    let bytes = target.to_le_bytes();
    let mut limbs = [0u64; 5];
    for (i, chunk) in bytes.chunks_exact(8).enumerate() {
        let mut b = [0u8; 8];
        b.copy_from_slice(chunk);
        limbs[i] = u64::from_le_bytes(b);
    }
    // Multiply.
    let mut carry: u128 = 0;
    for limb in limbs.iter_mut() {
        let v = u128::from(*limb) * u128::from(mul) + carry;
        *limb = v as u64;
        carry = v >> 64;
    }
    // Divide, most significant limb first.
    let mut rem: u128 = 0;
    for limb in limbs.iter_mut().rev() {
        let cur = (rem << 64) | u128::from(*limb);
        *limb = (cur / u128::from(div)) as u64;
        rem = cur % u128::from(div);
    }
    if limbs[4] != 0 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, limb) in limbs.iter().take(4).enumerate() {
        out[i * 8..i * 8 + 8].copy_from_slice(&limb.to_le_bytes());
    }
    Some(Target::from_le_bytes(out))
}

/// Checks a header's proof of work: its bits must equal `expected_bits`,
/// decode to a valid target not above `pow_limit`, and, in
/// [`PowMode::Real`], the header hash must not exceed the target.
pub fn check_pow(
    header: &Header,
    params: &ChainParams,
    expected_bits: CompactTarget,
) -> Result<(), PowError> {
    let bits = header.bits.to_consensus();
    if bits != expected_bits.to_consensus() {
        return Err(PowError::BadBits { expected: expected_bits.to_consensus(), got: bits });
    }
    check_pow_target(header, params)
}

/// Checks only the target of a header (valid, not above `pow_limit`) and, in
/// [`PowMode::Real`], `hash <= target`. Used where the expected bits are not
/// known (e.g. an SPV proof's single header).
pub fn check_pow_target(header: &Header, params: &ChainParams) -> Result<(), PowError> {
    let bits = header.bits.to_consensus();
    let target = decode_compact(bits)?;
    let limit = decode_compact(params.pow_limit_bits)?;
    if target > limit {
        return Err(PowError::AboveLimit { bits, limit: params.pow_limit_bits });
    }
    if params.pow_mode == PowMode::Real && !target.is_met_by(header.block_hash()) {
        return Err(PowError::HighHash { hash: header.block_hash(), bits });
    }
    Ok(())
}

/// Grinds `header.nonce` (starting from its current value) until the hash
/// meets the header's target or `max_tries` nonces were tried; returns whether
/// it succeeded. Deterministic: same header in, same nonce out.
pub fn grind(header: &mut Header, max_tries: u64) -> bool {
    let Ok(target) = decode_compact(header.bits.to_consensus()) else {
        return false;
    };
    for _ in 0..max_tries {
        if target.is_met_by(header.block_hash()) {
            return true;
        }
        header.nonce = header.nonce.wrapping_add(1);
    }
    target.is_met_by(header.block_hash())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn compact_decoding_matches_core() {
        // Values from Core's arith_uint256_tests (SetCompact).
        assert_eq!(decode_compact(0x0000_0000), Err(PowError::ZeroTarget(0)));
        assert_eq!(decode_compact(0x0100_3456), Err(PowError::ZeroTarget(0x0100_3456)));
        assert_eq!(decode_compact(0x0112_3456).unwrap(), Target::from_le_bytes(le_u64(0x12)));
        assert_eq!(decode_compact(0x0212_3456).unwrap(), Target::from_le_bytes(le_u64(0x1234)));
        assert_eq!(decode_compact(0x0312_3456).unwrap(), Target::from_le_bytes(le_u64(0x12_3456)));
        assert_eq!(decode_compact(0x0412_3456).unwrap(), Target::from_le_bytes(le_u64(0x1234_5600)));
        assert_eq!(decode_compact(0x0492_3456), Err(PowError::NegativeTarget(0x0492_3456)));
        assert_eq!(decode_compact(0xff12_3456), Err(PowError::OverflowTarget(0xff12_3456)));
        assert_eq!(decode_compact(0x2012_3456).map(|_| ()), Ok(()));
        assert_eq!(decode_compact(0x2101_0000), Err(PowError::OverflowTarget(0x2101_0000)));
        assert_eq!(decode_compact(0x2300_0100), Err(PowError::OverflowTarget(0x2300_0100)));
        let mainnet = decode_compact(0x1d00_ffff).unwrap();
        assert_eq!(mainnet, Target::MAX_ATTAINABLE_MAINNET);
        assert_eq!(encode_compact(mainnet).to_consensus(), 0x1d00_ffff);
        assert_eq!(decode_compact(0x207f_ffff).unwrap(), Target::MAX_ATTAINABLE_REGTEST);
    }

    fn le_u64(v: u64) -> [u8; 32] {
        let mut b = [0u8; 32];
        b[..8].copy_from_slice(&v.to_le_bytes());
        b
    }

    #[test]
    fn mainnet_retarget_matches_core_vectors() {
        // Core pow_tests: get_next_work, get_next_work_pow_limit, lower_limit_actual, upper_limit_actual.
        let p = ChainParams::mainnet();
        let nw = |bits: u32, last: u32, first: u32| {
            calculate_next_work_required(&p, CompactTarget::from_consensus(bits), last, first).to_consensus()
        };
        assert_eq!(nw(0x1d00_ffff, 1_262_152_739, 1_261_130_161), 0x1d00_d86a);
        assert_eq!(nw(0x1d00_ffff, 1_233_061_996, 1_231_006_505), 0x1d00_ffff);
        assert_eq!(nw(0x1c05_a3f4, 1_279_297_671, 1_279_008_237), 0x1c01_68fd);
        assert_eq!(nw(0x1c38_7f6f, 1_269_211_443, 1_263_163_443), 0x1d00_e1fd);
    }

    #[test]
    fn retarget_only_at_boundary() {
        let p = ChainParams::mainnet();
        let bits = CompactTarget::from_consensus(0x1d00_ffff);
        let called = std::cell::Cell::new(false);
        let got = next_work_required(&p, 2014, bits, 100, |_| {
            called.set(true);
            Some(0)
        });
        assert_eq!(got, bits);
        assert!(!called.get());
        let got = next_work_required(&p, 2015, bits, 1_262_152_739, |h| {
            assert_eq!(h, 0);
            Some(1_261_130_161)
        });
        assert_eq!(got.to_consensus(), 0x1d00_d86a);
        let regtest = ChainParams::regtest_fast();
        assert_eq!(next_work_required(&regtest, 2015, bits, 5, |_| Some(0)), bits);
    }

    #[test]
    fn real_mode_checks_hash_simulated_does_not() {
        let mut params = ChainParams::regtest_fast();
        let mut header = crate::chain::genesis_block(&params).header;
        header.nonce = 0;
        // Find a nonce that does NOT meet the target.
        while decode_compact(header.bits.to_consensus()).unwrap().is_met_by(header.block_hash()) {
            header.nonce += 1;
        }
        params.pow_mode = PowMode::Simulated;
        assert_eq!(check_pow(&header, &params, header.bits), Ok(()));
        params.pow_mode = PowMode::Real;
        assert!(matches!(check_pow(&header, &params, header.bits), Err(PowError::HighHash { .. })));
        assert!(grind(&mut header, 10_000));
        assert_eq!(check_pow(&header, &params, header.bits), Ok(()));
        let other = CompactTarget::from_consensus(0x1d00_ffff);
        assert!(matches!(check_pow(&header, &params, other), Err(PowError::BadBits { .. })));
    }

    proptest! {
        #[test]
        fn retarget_is_clamped_to_factor_four(
            mantissa in 0x00_8000u32..0x7f_ffff,
            exponent in 0x04u32..0x1c,
            actual in 0u32..100_000_000,
        ) {
            let p = ChainParams::mainnet();
            let bits = (exponent << 24) | mantissa;
            let prev = decode_compact(bits).unwrap();
            let next = calculate_next_work_required(&p, CompactTarget::from_consensus(bits), actual, 0);
            let next_t = decode_compact(next.to_consensus()).unwrap();
            let limit = decode_compact(p.pow_limit_bits).unwrap();
            // Never easier than 4x (plus compact rounding) nor the limit, never harder than 1/4.
            let four_x = mul_div(prev, 4, 1).unwrap_or(Target::MAX);
            prop_assert!(next_t <= four_x.min(limit));
            let quarter = mul_div(prev, 1, 4).unwrap();
            let quarter_rounded = decode_compact(encode_compact(quarter).to_consensus()).unwrap();
            prop_assert!(next_t >= quarter_rounded.min(limit) || next_t == limit);
            // Monotone in the actual timespan.
            let later = calculate_next_work_required(&p, CompactTarget::from_consensus(bits), actual.saturating_add(1000), 0);
            prop_assert!(decode_compact(later.to_consensus()).unwrap() >= next_t);
        }
    }
}
