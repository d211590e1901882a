//! Geographic regions: the latency and bandwidth tables between them, and the
//! assignment of nodes to regions.
//!
//! A [`RegionTable`] describes a handful of regions (SimBlock's NA, EU, SA, AP,
//! JP, AU by default): the mean one-way latency between every pair and each
//! region's upload and download bandwidth. Node shares (what fraction of the
//! network lives in each region) come from [`region_shares_preset`] or from the
//! user, and [`assign_regions`] turns them into one region index per node.
//!
//! The numbers of the presets are those published with SimBlock
//! (dsg-titech/simblock), see `shared/reference/network-model.md`.
//! Everything here is deterministic: the only randomness is the RNG passed in.

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// How far the node shares may sum away from 1 before [`assign_regions`]
/// refuses them; within it they are normalised.
pub const SHARE_SUM_TOLERANCE: f64 = 1e-6;

/// The largest number of regions a table or a share list may have, because
/// nodes store their region as a `u8`.
pub const MAX_REGIONS: usize = 256;

/// Why a region table or a list of node shares is unusable.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RegionError {
    /// The table names no region at all.
    #[error("region table has no regions")]
    NoRegions,
    /// More regions than fit in a `u8` region index.
    #[error("{count} regions given, at most {MAX_REGIONS} are supported")]
    TooManyRegions {
        /// How many regions were given.
        count: usize,
    },
    /// Two regions share a name, so names would not identify regions.
    #[error("region name {name:?} appears more than once")]
    DuplicateName {
        /// The repeated name.
        name: String,
    },
    /// The latency matrix does not have one row per region.
    #[error("latency matrix has {rows} rows but there are {regions} regions")]
    LatencyRows {
        /// Rows in the matrix.
        rows: usize,
        /// Regions in `names`.
        regions: usize,
    },
    /// One row of the latency matrix does not have one entry per region.
    #[error("latency row of region {region:?} has {len} entries but there are {regions} regions")]
    LatencyRowLength {
        /// The region whose row is wrong.
        region: String,
        /// Entries in that row.
        len: usize,
        /// Regions in `names`.
        regions: usize,
    },
    /// A latency is negative, infinite or not a number.
    #[error("latency from {from:?} to {to:?} is {value} ms; it must be a finite number >= 0")]
    BadLatency {
        /// Sending region.
        from: String,
        /// Receiving region.
        to: String,
        /// The offending value.
        value: f64,
    },
    /// A bandwidth list does not have one entry per region.
    #[error("{which} bandwidth list has {len} entries but there are {regions} regions")]
    BandwidthLength {
        /// `"upload"` or `"download"`.
        which: &'static str,
        /// Entries in the list.
        len: usize,
        /// Regions in `names`.
        regions: usize,
    },
    /// A region's bandwidth is zero, which would make transfers take forever.
    #[error("{which} bandwidth of region {region:?} is 0 bit/s; it must be positive")]
    ZeroBandwidth {
        /// `"upload"` or `"download"`.
        which: &'static str,
        /// The region.
        region: String,
    },
    /// The share list is empty.
    #[error("node shares are empty; give one share per region")]
    NoShares,
    /// A share is negative, infinite or not a number.
    #[error("node share #{index} is {value}; shares must be finite and >= 0")]
    BadShare {
        /// Position of the share in the list.
        index: usize,
        /// The offending value.
        value: f64,
    },
    /// The shares do not add up to 1.
    #[error("node shares sum to {sum}, not 1 (tolerance {SHARE_SUM_TOLERANCE})")]
    ShareSum {
        /// What they add up to.
        sum: f64,
    },
}

/// Latency and bandwidth between geographic regions.
///
/// Region `i` is `names[i]`; `latency_ms[from][to]` is the mean one-way
/// latency in milliseconds of a message from a node in region `from` to a node
/// in region `to` (the same-region latency is on the diagonal), and
/// `upload_bps[i]` / `download_bps[i]` are the bandwidths, in bit/s, of a node
/// in region `i`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RegionTable {
    /// Region names, in index order.
    pub names: Vec<String>,
    /// Mean one-way latency in ms; row = sending region, column = receiving region.
    pub latency_ms: Vec<Vec<f64>>,
    /// Upload bandwidth of a node in each region, in bit/s.
    pub upload_bps: Vec<u64>,
    /// Download bandwidth of a node in each region, in bit/s.
    pub download_bps: Vec<u64>,
}

/// SimBlock's six region names, in SimBlock's order.
const SIMBLOCK_REGIONS: [&str; 6] = ["NA", "EU", "SA", "AP", "JP", "AU"];

impl RegionTable {
    /// Names accepted by [`RegionTable::preset`].
    pub const PRESETS: &'static [&'static str] = &["simblock-2019", "simblock-2015"];

    /// The named preset table, or `None` if the name is unknown (see
    /// [`RegionTable::PRESETS`]): SimBlock's 2019 or 2015 measurements.
    pub fn preset(name: &str) -> Option<RegionTable> {
        let (latency, upload, download): ([[f64; 6]; 6], [u64; 6], [u64; 6]) = match name {
            "simblock-2019" => (
                [
                    [32.0, 124.0, 184.0, 198.0, 151.0, 189.0],
                    [124.0, 11.0, 227.0, 237.0, 252.0, 294.0],
                    [184.0, 227.0, 88.0, 325.0, 301.0, 322.0],
                    [198.0, 237.0, 325.0, 85.0, 58.0, 198.0],
                    [151.0, 252.0, 301.0, 58.0, 12.0, 126.0],
                    [189.0, 294.0, 322.0, 198.0, 126.0, 16.0],
                ],
                [19_200_000, 20_700_000, 5_800_000, 15_700_000, 10_200_000, 11_300_000],
                [52_000_000, 40_000_000, 18_000_000, 22_800_000, 22_800_000, 29_900_000],
            ),
            "simblock-2015" => (
                [
                    [36.0, 119.0, 255.0, 310.0, 154.0, 208.0],
                    [119.0, 12.0, 221.0, 242.0, 266.0, 350.0],
                    [255.0, 221.0, 137.0, 347.0, 256.0, 269.0],
                    [310.0, 242.0, 347.0, 99.0, 172.0, 278.0],
                    [154.0, 266.0, 256.0, 172.0, 9.0, 163.0],
                    [208.0, 350.0, 269.0, 278.0, 163.0, 22.0],
                ],
                [4_700_000, 8_100_000, 1_800_000, 5_300_000, 3_400_000, 5_200_000],
                [25_000_000, 24_000_000, 6_500_000, 10_000_000, 17_500_000, 14_000_000],
            ),
            _ => return None,
        };
        Some(RegionTable {
            names: SIMBLOCK_REGIONS.iter().map(|s| (*s).to_string()).collect(),
            latency_ms: latency.iter().map(|row| row.to_vec()).collect(),
            upload_bps: upload.to_vec(),
            download_bps: download.to_vec(),
        })
    }

    /// Number of regions.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether the table has no regions (such a table never validates).
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Index of the region called `name`, so configurations can refer to
    /// regions by name.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.names.iter().position(|n| n == name)
    }

    /// Checks that the table is usable: at least one and at most
    /// [`MAX_REGIONS`] uniquely named regions, a square latency matrix with one
    /// row and column per region holding finite non-negative values, and one
    /// positive upload and download bandwidth per region. The error names what
    /// is wrong.
    pub fn validate(&self) -> Result<(), RegionError> {
        let regions = self.names.len();
        if regions == 0 {
            return Err(RegionError::NoRegions);
        }
        if regions > MAX_REGIONS {
            return Err(RegionError::TooManyRegions { count: regions });
        }
        let mut sorted: Vec<&String> = self.names.iter().collect();
        sorted.sort();
        if let Some(w) = sorted.windows(2).find(|w| w[0] == w[1]) {
            return Err(RegionError::DuplicateName { name: w[0].clone() });
        }
        if self.latency_ms.len() != regions {
            return Err(RegionError::LatencyRows { rows: self.latency_ms.len(), regions });
        }
        for (from, row) in self.latency_ms.iter().enumerate() {
            if row.len() != regions {
                return Err(RegionError::LatencyRowLength {
                    region: self.names[from].clone(),
                    len: row.len(),
                    regions,
                });
            }
            for (to, &value) in row.iter().enumerate() {
                if !(value.is_finite() && value >= 0.0) {
                    return Err(RegionError::BadLatency {
                        from: self.names[from].clone(),
                        to: self.names[to].clone(),
                        value,
                    });
                }
            }
        }
        for (which, list) in [("upload", &self.upload_bps), ("download", &self.download_bps)] {
            if list.len() != regions {
                return Err(RegionError::BandwidthLength { which, len: list.len(), regions });
            }
            if let Some(i) = list.iter().position(|&b| b == 0) {
                return Err(RegionError::ZeroBandwidth { which, region: self.names[i].clone() });
            }
        }
        Ok(())
    }
}

/// Names accepted by [`region_shares_preset`].
pub const SHARE_PRESETS: &[&str] = &["bitcoin-2019", "bitcoin-2015", "litecoin", "dogecoin"];

/// The named share of nodes per region, in SimBlock's region order (NA, EU,
/// SA, AP, JP, AU), or `None` if the name is unknown (see [`SHARE_PRESETS`]).
/// Each preset sums to 1.
pub fn region_shares_preset(name: &str) -> Option<Vec<f64>> {
    let shares: [f64; 6] = match name {
        "bitcoin-2019" => [0.3316, 0.4998, 0.0090, 0.1177, 0.0224, 0.0195],
        "bitcoin-2015" => [0.3869, 0.5159, 0.0113, 0.0574, 0.0119, 0.0166],
        "litecoin" => [0.3661, 0.4791, 0.0149, 0.1022, 0.0238, 0.0139],
        "dogecoin" => [0.3924, 0.4879, 0.0212, 0.0697, 0.0106, 0.0182],
        _ => return None,
    };
    Some(shares.to_vec())
}

/// How many of `n` nodes go to each region: largest-remainder (Hamilton)
/// apportionment of `n` by `shares`, so every count is within one node of
/// `share · n` and the counts sum to `n`. Ties between equal remainders go to
/// the lower region index; a region with share 0 gets no node.
///
/// The shares must be finite, non-negative and sum to 1 within
/// [`SHARE_SUM_TOLERANCE`] (they are normalised before use).
pub fn region_counts(shares: &[f64], n: usize) -> Result<Vec<usize>, RegionError> {
    if shares.is_empty() {
        return Err(RegionError::NoShares);
    }
    if shares.len() > MAX_REGIONS {
        return Err(RegionError::TooManyRegions { count: shares.len() });
    }
    if let Some((index, &value)) = shares.iter().enumerate().find(|(_, s)| !(s.is_finite() && **s >= 0.0)) {
        return Err(RegionError::BadShare { index, value });
    }
    let sum: f64 = shares.iter().sum();
    // Written so that an infinite sum also fails.
    if (sum - 1.0).abs() > SHARE_SUM_TOLERANCE || !sum.is_finite() {
        return Err(RegionError::ShareSum { sum });
    }

    let quotas: Vec<f64> = shares.iter().map(|s| s / sum * n as f64).collect();
    let mut counts: Vec<usize> = quotas.iter().map(|q| q.floor() as usize).collect();
    // Regions that may receive a remainder node: positive share only, ordered
    // by fractional part descending, then by index (a stable sort keeps that).
    let mut order: Vec<usize> = (0..shares.len()).filter(|&i| shares[i] > 0.0).collect();
    let frac = |i: usize| quotas[i] - quotas[i].floor();
    order.sort_by(|&a, &b| frac(b).total_cmp(&frac(a)));

    let mut total: usize = counts.iter().sum();
    // Rounding of the quotas can in principle push the floors past n; take the
    // excess back from the regions with the smallest fractional parts.
    let mut back = order.iter().rev().cycle();
    while total > n {
        if let Some(&i) = back.next()
            && counts[i] > 0
        {
            counts[i] -= 1;
            total -= 1;
        }
    }
    let mut forward = order.iter().cycle();
    while total < n {
        if let Some(&i) = forward.next() {
            counts[i] += 1;
            total += 1;
        }
    }
    Ok(counts)
}

/// Gives each of `n` nodes a region index (into `shares`) so that the number
/// of nodes per region follows the shares as exactly as possible: the counts
/// come from [`region_counts`] (largest remainder, within one node of
/// `share · n`), then the assignment is shuffled with a Fisher–Yates shuffle
/// drawn from `rng`, so which node lands where depends only on the RNG.
///
/// Fails if the shares are empty, more than [`MAX_REGIONS`], negative or not
/// finite, or do not sum to 1 within [`SHARE_SUM_TOLERANCE`].
pub fn assign_regions(shares: &[f64], n: usize, rng: &mut impl Rng) -> Result<Vec<u8>, RegionError> {
    let counts = region_counts(shares, n)?;
    let mut assignment = Vec::with_capacity(n);
    for (region, &count) in counts.iter().enumerate() {
        // region < MAX_REGIONS = 256 was checked by region_counts.
        let region = u8::try_from(region).map_err(|_| RegionError::TooManyRegions { count: shares.len() })?;
        assignment.extend(std::iter::repeat_n(region, count));
    }
    assignment.shuffle(rng);
    Ok(assignment)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    fn table(name: &str) -> RegionTable {
        RegionTable::preset(name).expect("preset exists")
    }

    #[test]
    fn presets_validate_and_are_symmetric() {
        for name in RegionTable::PRESETS {
            let t = table(name);
            t.validate().expect("preset is valid");
            assert_eq!(t.len(), 6);
            assert_eq!(t.names, ["NA", "EU", "SA", "AP", "JP", "AU"]);
            for i in 0..t.len() {
                for j in 0..t.len() {
                    assert_eq!(t.latency_ms[i][j], t.latency_ms[j][i], "{name} [{i}][{j}]");
                }
            }
        }
        assert!(RegionTable::preset("nope").is_none());
    }

    #[test]
    fn preset_values_spot_checks() {
        let t19 = table("simblock-2019");
        assert_eq!(t19.latency_ms[0][0], 32.0);
        assert_eq!(t19.latency_ms[2][3], 325.0);
        assert_eq!(t19.latency_ms[5][5], 16.0);
        assert_eq!(t19.download_bps[3], 22_800_000);
        assert_eq!(t19.upload_bps[2], 5_800_000);
        let t15 = table("simblock-2015");
        assert_eq!(t15.latency_ms[4][4], 9.0);
        assert_eq!(t15.latency_ms[1][5], 350.0);
        assert_eq!(t15.download_bps[2], 6_500_000);
        assert_eq!(t15.upload_bps[4], 3_400_000);
        assert_eq!(t15.index_of("JP"), Some(4));
        assert_eq!(t15.index_of("XX"), None);
    }

    #[test]
    fn validate_names_the_problem() {
        let good = table("simblock-2019");

        let mut t = good.clone();
        t.latency_ms.pop();
        assert_eq!(t.validate(), Err(RegionError::LatencyRows { rows: 5, regions: 6 }));

        let mut t = good.clone();
        t.latency_ms[2].push(1.0);
        assert!(matches!(
            t.validate(),
            Err(RegionError::LatencyRowLength { ref region, len: 7, .. }) if region == "SA"
        ));

        let mut t = good.clone();
        t.latency_ms[1][3] = -1.0;
        let err = t.validate().expect_err("negative latency");
        assert!(err.to_string().contains("\"EU\" to \"AP\""), "{err}");

        let mut t = good.clone();
        t.latency_ms[0][1] = f64::NAN;
        assert!(matches!(t.validate(), Err(RegionError::BadLatency { .. })));

        let mut t = good.clone();
        t.upload_bps[4] = 0;
        assert_eq!(t.validate(), Err(RegionError::ZeroBandwidth { which: "upload", region: "JP".into() }));

        let mut t = good.clone();
        t.download_bps.pop();
        assert!(matches!(
            t.validate(),
            Err(RegionError::BandwidthLength { which: "download", len: 5, regions: 6 })
        ));

        let mut t = good.clone();
        t.names[5] = "NA".into();
        assert_eq!(t.validate(), Err(RegionError::DuplicateName { name: "NA".into() }));

        let empty =
            RegionTable { names: vec![], latency_ms: vec![], upload_bps: vec![], download_bps: vec![] };
        assert!(empty.is_empty());
        assert_eq!(empty.validate(), Err(RegionError::NoRegions));
    }

    #[test]
    fn share_presets_sum_to_one() {
        for name in SHARE_PRESETS {
            let s = region_shares_preset(name).expect("preset exists");
            assert_eq!(s.len(), 6);
            let sum: f64 = s.iter().sum();
            assert!((sum - 1.0).abs() < 1e-9, "{name}: {sum}");
        }
        assert!(region_shares_preset("nope").is_none());
    }

    #[test]
    fn counts_match_shares_within_one_node() {
        for name in SHARE_PRESETS {
            let shares = region_shares_preset(name).expect("preset exists");
            for n in [0usize, 1, 7, 100, 999, 10_000, 12_345] {
                let mut rng = ChaCha8Rng::seed_from_u64(n as u64);
                let a = assign_regions(&shares, n, &mut rng).expect("valid shares");
                assert_eq!(a.len(), n);
                let mut counts = [0usize; 6];
                for &r in &a {
                    counts[r as usize] += 1;
                }
                for (i, &c) in counts.iter().enumerate() {
                    let want = shares[i] * n as f64;
                    assert!((c as f64 - want).abs() < 1.0, "{name} n={n} region {i}: {c} vs {want}");
                }
            }
        }
    }

    #[test]
    fn largest_remainder_is_exact() {
        assert_eq!(region_counts(&[0.5, 0.5], 3), Ok(vec![2, 1]));
        assert_eq!(region_counts(&[0.25, 0.75], 4), Ok(vec![1, 3]));
        assert_eq!(region_counts(&[0.34, 0.33, 0.33], 2), Ok(vec![1, 1, 0]));
        assert_eq!(region_counts(&[0.0, 1.0, 0.0], 5), Ok(vec![0, 5, 0]));
        assert_eq!(region_counts(&[0.5, 0.5], 0), Ok(vec![0, 0]));
    }

    #[test]
    fn same_seed_same_assignment() {
        let shares = region_shares_preset("bitcoin-2019").expect("preset exists");
        let run = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            assign_regions(&shares, 5_000, &mut rng).expect("valid shares")
        };
        assert_eq!(run(7), run(7));
        assert_ne!(run(7), run(8));
        // The shuffle actually mixes: the first nodes are not all region 0.
        assert!(run(7)[..200].iter().any(|&r| r != 0));
    }

    #[test]
    fn bad_shares_are_rejected() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        assert_eq!(assign_regions(&[], 3, &mut rng), Err(RegionError::NoShares));
        assert!(matches!(
            assign_regions(&[0.5, 0.6], 3, &mut rng),
            Err(RegionError::ShareSum { sum }) if (sum - 1.1).abs() < 1e-12
        ));
        let err = assign_regions(&[0.5, 0.6], 3, &mut rng).expect_err("sum 1.1");
        assert!(err.to_string().contains("1.1"), "{err}");
        assert!(matches!(
            assign_regions(&[1.5, -0.5], 3, &mut rng),
            Err(RegionError::BadShare { index: 1, .. })
        ));
        assert!(matches!(
            assign_regions(&[f64::NAN, 1.0], 3, &mut rng),
            Err(RegionError::BadShare { index: 0, .. })
        ));
        let many = vec![1.0 / 300.0; 300];
        assert_eq!(assign_regions(&many, 3, &mut rng), Err(RegionError::TooManyRegions { count: 300 }));
        // Within tolerance: normalised and accepted.
        let a = assign_regions(&[0.5, 0.5 + 1e-7], 10, &mut rng).expect("within tolerance");
        assert_eq!(a.len(), 10);
    }
}
