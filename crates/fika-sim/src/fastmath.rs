//! Floating-point functions for the hot paths of the simulator.
//!
//! Each message's latency draw needs one `exp`. The platform's C library
//! answers it, but through a call with error handling and with bits that
//! may differ between library versions; here it is computed inline from a
//! table and a short polynomial, the same on every machine.

/// `2^(j/64)` for `j` in `0..64`, correctly rounded (as bit patterns).
const EXP2_J_64: [u64; 64] = [
    0x3ff0000000000000,
    0x3ff02c9a3e778061,
    0x3ff059b0d3158574,
    0x3ff0874518759bc8,
    0x3ff0b5586cf9890f,
    0x3ff0e3ec32d3d1a2,
    0x3ff11301d0125b51,
    0x3ff1429aaea92de0,
    0x3ff172b83c7d517b,
    0x3ff1a35beb6fcb75,
    0x3ff1d4873168b9aa,
    0x3ff2063b88628cd6,
    0x3ff2387a6e756238,
    0x3ff26b4565e27cdd,
    0x3ff29e9df51fdee1,
    0x3ff2d285a6e4030b,
    0x3ff306fe0a31b715,
    0x3ff33c08b26416ff,
    0x3ff371a7373aa9cb,
    0x3ff3a7db34e59ff7,
    0x3ff3dea64c123422,
    0x3ff4160a21f72e2a,
    0x3ff44e086061892d,
    0x3ff486a2b5c13cd0,
    0x3ff4bfdad5362a27,
    0x3ff4f9b2769d2ca7,
    0x3ff5342b569d4f82,
    0x3ff56f4736b527da,
    0x3ff5ab07dd485429,
    0x3ff5e76f15ad2148,
    0x3ff6247eb03a5585,
    0x3ff6623882552225,
    0x3ff6a09e667f3bcd,
    0x3ff6dfb23c651a2f,
    0x3ff71f75e8ec5f74,
    0x3ff75feb564267c9,
    0x3ff7a11473eb0187,
    0x3ff7e2f336cf4e62,
    0x3ff82589994cce13,
    0x3ff868d99b4492ed,
    0x3ff8ace5422aa0db,
    0x3ff8f1ae99157736,
    0x3ff93737b0cdc5e5,
    0x3ff97d829fde4e50,
    0x3ff9c49182a3f090,
    0x3ffa0c667b5de565,
    0x3ffa5503b23e255d,
    0x3ffa9e6b5579fdbf,
    0x3ffae89f995ad3ad,
    0x3ffb33a2b84f15fb,
    0x3ffb7f76f2fb5e47,
    0x3ffbcc1e904bc1d2,
    0x3ffc199bdd85529c,
    0x3ffc67f12e57d14b,
    0x3ffcb720dcef9069,
    0x3ffd072d4a07897c,
    0x3ffd5818dcfba487,
    0x3ffda9e603db3285,
    0x3ffdfc97337b9b5f,
    0x3ffe502ee78b3ff6,
    0x3ffea4afa2a490da,
    0x3ffefa1bee615a27,
    0x3fff50765b6e4540,
    0x3fffa7c1819e90d8,
];

/// `64 / ln 2`.
const INV_LN2_64: f64 = 92.33248261689366;
/// `ln 2 / 64`, split: the high part has its low 21 bits clear, so that
/// `k · HI` is exact for every `k` used here.
const LN2_64_HI: f64 = 0.01083042469326756;
/// `ln 2 / 64 − LN2_64_HI`.
const LN2_64_LO: f64 = 2.9815858269852933e-12;

/// `e^x`, within two units in the last place for `x` in `[0, 700]`; other
/// arguments (and NaN) go to the pure-Rust `libm`.
///
/// `x = k·ln2/64 + r` with `|r| ≤ ln2/128`, so `e^x = 2^(k/64) · e^r`, the
/// first from a table and the second from its Taylor series to `r⁵`
/// (truncation below 10⁻¹⁶ relative), evaluated in a shallow tree rather
/// than in Horner's chain: the latency of the draw is on every message's
/// path.
#[inline]
pub(crate) fn exp(x: f64) -> f64 {
    if !(0.0..=700.0).contains(&x) {
        return libm::exp(x);
    }
    // x ≥ 0, so adding one half and truncating rounds to nearest.
    let k = (x * INV_LN2_64 + 0.5) as i64;
    let kf = k as f64;
    let r = (x - kf * LN2_64_HI) - kf * LN2_64_LO;
    let r2 = r * r;
    let low = 0.5 + r * (1.0 / 6.0);
    let high = 1.0 / 24.0 + r * (1.0 / 120.0);
    let expm1 = r + r2 * (low + r2 * high);
    let t = f64::from_bits(EXP2_J_64[(k & 63) as usize]);
    // k ≤ 700 · 64 / ln 2 < 64,640, so the exponent k / 64 + 1023 stays normal.
    let scale = f64::from_bits(((k >> 6) as u64 + 1023) << 52);
    (t + t * expm1) * scale
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Distance in units in the last place.
    fn ulps(a: f64, b: f64) -> u64 {
        a.to_bits().abs_diff(b.to_bits())
    }

    #[test]
    fn the_table_holds_powers_of_two() {
        for (j, bits) in EXP2_J_64.iter().enumerate() {
            let t = f64::from_bits(*bits);
            assert!(ulps(t, libm::exp2(j as f64 / 64.0)) <= 1, "2^({j}/64)");
        }
        assert_eq!(LN2_64_HI.to_bits() & ((1 << 21) - 1), 0);
        assert!((LN2_64_HI + LN2_64_LO - std::f64::consts::LN_2 / 64.0).abs() < 1e-18);
    }

    #[test]
    fn agrees_with_libm_to_two_ulps() {
        assert_eq!(exp(0.0), 1.0);
        let mut x = 0.0f64;
        let mut worst = 0;
        while x <= 700.0 {
            worst = worst.max(ulps(exp(x), libm::exp(x)));
            // Irregular steps, dense near zero where the simulator lives.
            x += 1e-6 + x * 1.3e-5;
        }
        assert!(worst <= 2, "worst {worst} ulps");
        for x in [1e-300, 1e-17, 0.010_830_424_696_249_145, 0.5, 1.0, 37.5, 699.999] {
            assert!(ulps(exp(x), libm::exp(x)) <= 2, "{x}");
        }
    }

    #[test]
    fn outside_the_range_it_is_libm() {
        for x in [-1.0, -700.0, 701.0, 710.0, f64::INFINITY, f64::NEG_INFINITY] {
            assert_eq!(exp(x).to_bits(), libm::exp(x).to_bits(), "{x}");
        }
        assert!(exp(f64::NAN).is_nan());
    }
}
