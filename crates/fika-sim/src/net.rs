//! The network model: latency, bandwidth, loss and partitions.
//!
//! A message from `a` to `b` first waits for `a`'s uplink (one upload at a
//! time per node, first come first served, as SimBlock models it), occupies
//! it for `size · 8 / min(upload(a), download(b))`, then travels for the
//! link's latency plus fixed per-message costs. Everything random is drawn
//! from the network's own streams, in event order, so runs are reproducible.
//!
//! Pareto latencies between two regions come from a stream of the pair's
//! own, derived from the network's, so each pair's delays are one fixed
//! sequence that can be drawn ahead: on a second thread in networks of
//! [`DRAW_AHEAD_NODES`] nodes or more, where the draws would be a tenth of
//! the run's work (see `ahead`). Each message still gets an independent
//! draw from its pair's law.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::ahead::{Draws, Law};
use crate::regions::RegionTable;
use fika_core::NodeRng;
use rand::SeedableRng;

/// How one-way latency is drawn for a message.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case", deny_unknown_fields)]
pub enum LatencyModel {
    /// Every message takes exactly `ms`.
    Constant {
        /// Latency in milliseconds.
        ms: f64,
    },
    /// Uniform between `min_ms` and `max_ms`.
    Uniform {
        /// Lower bound in milliseconds.
        min_ms: f64,
        /// Upper bound in milliseconds.
        max_ms: f64,
    },
    /// SimBlock's draw around one mean: Pareto with minimum `mean − spread`
    /// and shape `mean / spread`, whose mean is exactly `mean_ms`.
    Pareto {
        /// Mean latency in milliseconds.
        mean_ms: f64,
        /// SimBlock's 5 ms.
        #[serde(default = "default_spread")]
        spread_ms: f64,
    },
    /// Mean latency from the region table, between the sender's and the
    /// receiver's regions; drawn as SimBlock draws it when `spread_ms > 0`,
    /// the mean itself otherwise.
    Regions {
        /// SimBlock's 5 ms; 0 for no jitter.
        #[serde(default = "default_spread")]
        spread_ms: f64,
    },
}

fn default_spread() -> f64 {
    5.0
}

/// How fast nodes upload and download.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "model", rename_all = "kebab-case", deny_unknown_fields)]
pub enum BandwidthModel {
    /// Transfers take no time; only latency counts.
    Unlimited,
    /// The same for every node.
    Uniform {
        /// Upload, bits per second.
        upload_bps: u64,
        /// Download, bits per second.
        download_bps: u64,
    },
    /// Per region, from the region table.
    Regions,
}

/// Every parameter of the network, resolved.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkModel {
    /// The latency draw.
    pub latency: LatencyModel,
    /// Fixed latency added to every message (SimBlock adds 10 ms).
    pub extra_latency_ms: f64,
    /// The bandwidth model.
    pub bandwidth: BandwidthModel,
    /// Processing delay added at the receiver for every message (SimBlock: 2 ms per block).
    pub processing_ms: f64,
    /// Probability that a message is lost, for every link.
    pub loss: f64,
    /// Region table, needed by the `regions` latency and bandwidth models.
    pub regions: Option<RegionTable>,
}

impl Default for NetworkModel {
    fn default() -> Self {
        NetworkModel {
            latency: LatencyModel::Constant { ms: 50.0 },
            extra_latency_ms: 0.0,
            bandwidth: BandwidthModel::Unlimited,
            processing_ms: 0.0,
            loss: 0.0,
            regions: None,
        }
    }
}

/// A network model that cannot be used, with what is wrong.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum NetError {
    /// A model needs a region table and none was given.
    #[error("the `regions` {0} model needs a region table (network.regions)")]
    NoRegionTable(&'static str),
    /// A number out of its range.
    #[error("{field} = {value} is out of range: expected {expected}")]
    OutOfRange {
        /// The parameter.
        field: &'static str,
        /// Its value.
        value: f64,
        /// The accepted range.
        expected: &'static str,
    },
    /// The region table is malformed.
    #[error("region table: {0}")]
    Regions(String),
}

impl NetworkModel {
    /// Checks ranges and the presence of the region table where needed.
    pub fn validate(&self) -> Result<(), NetError> {
        let nonneg = |field, value: f64| {
            if value.is_finite() && value >= 0.0 {
                Ok(())
            } else {
                Err(NetError::OutOfRange { field, value, expected: "a finite number ≥ 0" })
            }
        };
        match &self.latency {
            LatencyModel::Constant { ms } => nonneg("latency.ms", *ms)?,
            LatencyModel::Uniform { min_ms, max_ms } => {
                nonneg("latency.min_ms", *min_ms)?;
                nonneg("latency.max_ms", *max_ms)?;
                if max_ms < min_ms {
                    return Err(NetError::OutOfRange {
                        field: "latency.max_ms",
                        value: *max_ms,
                        expected: "≥ latency.min_ms",
                    });
                }
            }
            LatencyModel::Pareto { mean_ms, spread_ms } => {
                nonneg("latency.mean_ms", *mean_ms)?;
                nonneg("latency.spread_ms", *spread_ms)?;
            }
            LatencyModel::Regions { spread_ms } => {
                nonneg("latency.spread_ms", *spread_ms)?;
                if self.regions.is_none() {
                    return Err(NetError::NoRegionTable("latency"));
                }
            }
        }
        if let BandwidthModel::Uniform { upload_bps, download_bps } = self.bandwidth {
            if upload_bps == 0 || download_bps == 0 {
                return Err(NetError::OutOfRange {
                    field: "bandwidth",
                    value: 0.0,
                    expected: "bits per second > 0",
                });
            }
        }
        if self.bandwidth == BandwidthModel::Regions && self.regions.is_none() {
            return Err(NetError::NoRegionTable("bandwidth"));
        }
        nonneg("extra_latency_ms", self.extra_latency_ms)?;
        nonneg("processing_ms", self.processing_ms)?;
        if !(0.0..=1.0).contains(&self.loss) {
            return Err(NetError::OutOfRange {
                field: "loss",
                value: self.loss,
                expected: "a probability in [0, 1]",
            });
        }
        if let Some(t) = &self.regions {
            t.validate().map_err(|e| NetError::Regions(e.to_string()))?;
        }
        Ok(())
    }
}

/// SimBlock's Pareto draw: minimum `mean − spread`, shape `mean / spread`.
/// Falls back to the mean when the shape would not give a finite mean.
pub fn pareto_ms(rng: &mut NodeRng, mean_ms: f64, spread_ms: f64) -> f64 {
    match pareto_constants(mean_ms, spread_ms) {
        Some((scale, exponent)) => scale * pareto_factor(rng, exponent),
        None => mean_ms,
    }
}

/// The minimum and `1 / shape` of SimBlock's Pareto law for `mean_ms` and
/// `spread_ms`; `None` when the shape would not give a finite mean (then
/// every draw is the mean).
fn pareto_constants(mean_ms: f64, spread_ms: f64) -> Option<(f64, f64)> {
    if spread_ms <= 0.0 || mean_ms <= spread_ms {
        return None;
    }
    let shape = mean_ms / spread_ms;
    Some((mean_ms - spread_ms, 1.0 / shape))
}

/// A Pareto factor `U^(−exponent)` for `U` uniform in (0, 1], drawn as
/// `exp(exponent · E)` with `E = −ln U` exponential: the same distribution,
/// with `E` from a ziggurat (no logarithm) and an inline `exp` (see
/// `fastmath`), so the bits do not depend on the platform's C library. This is
/// the simulator's hottest floating-point code: one draw per message.
#[inline]
pub(crate) fn pareto_factor(rng: &mut NodeRng, exponent: f64) -> f64 {
    let e: f64 = rng.sample(rand_distr::Exp1);
    crate::fastmath::exp(exponent * e)
}

/// A per-link change made by a fault.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkOverride {
    /// Constant latency replacing the model, if set.
    pub latency_ms: Option<f64>,
    /// Loss probability replacing the global one, if set.
    pub loss: Option<f64>,
}

/// How the latency of a message between two regions is drawn, resolved once
/// from the model so that routing does the least work per message.
#[derive(Clone, Copy, Debug)]
enum PairLatency {
    /// Always this many milliseconds, no draw.
    Fixed(f64),
    /// [`pareto_ms`] with its constants computed: `scale / u^exponent`,
    /// drawn ahead as law `law` of `Net::draws`.
    Pareto { scale: f64, exponent: f64, law: u32 },
    /// Drawn by [`Net::model_latency_ms`] (uniform draws, missing regions).
    Model,
}

impl PairLatency {
    /// The draw [`pareto_ms`] makes for `mean_ms` and `spread_ms`, with the
    /// same constants.
    fn pareto(mean_ms: f64, spread_ms: f64) -> Self {
        match pareto_constants(mean_ms, spread_ms) {
            Some((scale, exponent)) => PairLatency::Pareto { scale, exponent, law: 0 },
            None => PairLatency::Fixed(mean_ms),
        }
    }
}

/// Networks of at least this many nodes draw their heavy-tailed delays on
/// a second thread (smaller ones send too few messages to gain from it);
/// the delays are the same either way.
pub const DRAW_AHEAD_NODES: usize = 1024;

/// Constants of messages from one region to another.
#[derive(Clone, Copy, Debug)]
struct Pair {
    /// `min(upload, download).max(1)` in bit/s; 0 for unlimited bandwidth.
    bw: u64,
    latency: PairLatency,
}

/// The network at run time: adjacency, per-node queues and link state.
pub struct Net {
    offsets: Vec<u32>,
    neighbours: Vec<u32>,
    /// For the link at `neighbours[k]` (from `a` to `b`), the index of `a`
    /// among `b`'s peers; empty unless links are symmetric.
    reverse: Vec<u32>,
    region: Vec<u8>,
    busy_until: Vec<u64>,
    /// Partition label per node; messages cross only between equal labels.
    partition: Vec<u16>,
    /// Whether some node has a non-zero partition label.
    partitioned: bool,
    overrides: BTreeMap<(u32, u32), LinkOverride>,
    model: NetworkModel,
    up_bps: Vec<u64>,
    down_bps: Vec<u64>,
    /// `pairs[from_region * regions + to_region]`.
    pairs: Vec<Pair>,
    /// Whether every link goes both ways.
    symmetric: bool,
    regions: usize,
    /// Pareto delays drawn ahead, one law per pair of regions.
    draws: Draws,
    rng: NodeRng,
}

/// Outcome of routing a message.
pub(crate) enum Route {
    /// Arrives at this absolute time in nanoseconds.
    Arrives(u64),
    /// Not a peer of the sender.
    NotLinked,
    /// Sender and receiver are in different partitions.
    Partitioned,
    /// Lost on the link (its upload still took time).
    Lost,
}

/// Largest byte count whose transfer time fits the `u64` computation.
const FAST_BYTES: u32 = (u64::MAX / 8_000_000_000) as u32;

/// `x.round() as u64`, computed without a libm call where that is exact:
/// for `0 ≤ x < 2⁵²` the fraction `x − ⌊x⌋` is exact, and rounding half
/// away from zero adds one when it is at least one half.
#[inline]
pub(crate) fn round_to_u64(x: f64) -> u64 {
    if (0.0..4_503_599_627_370_496.0).contains(&x) {
        // In range for `i64`, whose conversions are single instructions.
        let i = x as i64;
        // Branch-free: the fraction is a coin toss for the predictor.
        (i + i64::from(x - i as f64 >= 0.5)) as u64
    } else {
        x.round() as u64
    }
}

impl Net {
    /// Builds the runtime network from sorted adjacency lists and regions.
    pub fn new(adjacency: &[Vec<u32>], region: Vec<u8>, model: NetworkModel, rng: NodeRng) -> Self {
        let n = adjacency.len();
        let mut offsets = Vec::with_capacity(n + 1);
        let mut neighbours = Vec::with_capacity(adjacency.iter().map(Vec::len).sum());
        offsets.push(0);
        for list in adjacency {
            let mut l = list.clone();
            l.sort_unstable();
            l.dedup();
            neighbours.extend_from_slice(&l);
            offsets.push(neighbours.len() as u32);
        }
        let (up_bps, down_bps) = match (&model.bandwidth, &model.regions) {
            (BandwidthModel::Regions, Some(t)) => (t.upload_bps.clone(), t.download_bps.clone()),
            (BandwidthModel::Uniform { upload_bps, download_bps }, _) => {
                (vec![*upload_bps], vec![*download_bps])
            }
            _ => (vec![0], vec![0]),
        };
        let region = if region.len() == n { region } else { vec![0; n] };
        let regions = region.iter().map(|&r| usize::from(r) + 1).max().unwrap_or(1);
        let mut net = Net {
            offsets,
            neighbours,
            reverse: Vec::new(),
            region,
            busy_until: vec![0; n],
            partition: vec![0; n],
            partitioned: false,
            overrides: BTreeMap::new(),
            model,
            up_bps,
            down_bps,
            pairs: Vec::new(),
            symmetric: false,
            regions,
            draws: Draws::inline(Vec::new()),
            rng,
        };
        net.symmetric = (0..n as u32).all(|a| net.peers(a).iter().all(|&b| net.is_peer(b, a)));
        if net.symmetric {
            net.reverse = (0..n as u32)
                .flat_map(|a| net.peers(a).iter().map(move |&b| (a, b)))
                .map(|(a, b)| net.peers(b).binary_search(&a).map_or(u32::MAX, |j| j as u32))
                .collect();
        }
        net.pairs =
            (0..regions * regions).map(|k| net.pair((k / regions) as u8, (k % regions) as u8)).collect();
        // Each Pareto pair's stream is seeded from the network's, in pair order.
        let mut laws = Vec::new();
        for pair in &mut net.pairs {
            if let PairLatency::Pareto { scale, exponent, law } = &mut pair.latency {
                *law = laws.len() as u32;
                let fixed_ms = [net.model.extra_latency_ms, net.model.processing_ms];
                let rng = NodeRng::seed_from_u64(net.rng.r#gen());
                laws.push(Law { scale: *scale, exponent: *exponent, fixed_ms, rng });
            }
        }
        net.draws = if n >= DRAW_AHEAD_NODES && !laws.is_empty() {
            Draws::threaded(laws)
        } else {
            Draws::inline(laws)
        };
        net
    }

    /// The constants of messages from region `rf` to region `rt`.
    fn pair(&self, rf: u8, rt: u8) -> Pair {
        let bw = match self.model.bandwidth {
            BandwidthModel::Unlimited => 0,
            BandwidthModel::Uniform { .. } => self.up_bps[0].min(self.down_bps[0]).max(1),
            BandwidthModel::Regions => {
                let up = self.up_bps.get(usize::from(rf)).copied().unwrap_or(0);
                let down = self.down_bps.get(usize::from(rt)).copied().unwrap_or(0);
                up.min(down).max(1)
            }
        };
        let latency = match &self.model.latency {
            LatencyModel::Constant { ms } => PairLatency::Fixed(*ms),
            LatencyModel::Uniform { .. } => PairLatency::Model,
            LatencyModel::Pareto { mean_ms, spread_ms } => PairLatency::pareto(*mean_ms, *spread_ms),
            LatencyModel::Regions { spread_ms } => match &self.model.regions {
                Some(t) => match t.latency_ms.get(usize::from(rf)).and_then(|r| r.get(usize::from(rt))) {
                    Some(&mean) => PairLatency::pareto(mean, *spread_ms),
                    None => PairLatency::Model,
                },
                None => PairLatency::pareto(0.0, *spread_ms),
            },
        };
        Pair { bw, latency }
    }

    /// The index of `a` among the peers of its `i`-th peer (`u32::MAX` if
    /// unknown: links are not symmetric or `i` is out of range).
    #[inline]
    pub fn reverse_index(&self, a: u32, i: u32) -> u32 {
        let k = self.offsets.get(a as usize).map_or(usize::MAX, |o| *o as usize + i as usize);
        self.reverse.get(k).copied().unwrap_or(u32::MAX)
    }

    /// Fetches what sending to `a`'s peers in order reads: the first lines
    /// of its peer list and of its row of reverse indexes (a hint).
    #[inline]
    pub fn prefetch_row(&self, a: u32) {
        let k = self.offsets.get(a as usize).map_or(usize::MAX, |o| *o as usize);
        if let Some(p) = self.neighbours.get(k) {
            fika_core::hint::prefetch(p);
        }
        if let Some(r) = self.reverse.get(k) {
            fika_core::hint::prefetch(r);
        }
    }

    /// Whether `b` is a peer of `a`.
    pub fn is_peer(&self, a: u32, b: u32) -> bool {
        (a as usize) < self.len() && self.peers(a).binary_search(&b).is_ok()
    }

    /// Whether every link goes both ways (`b` is a peer of `a` whenever `a`
    /// is a peer of `b`).
    pub fn symmetric(&self) -> bool {
        self.symmetric
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.busy_until.len()
    }

    /// Whether the network has no nodes.
    pub fn is_empty(&self) -> bool {
        self.busy_until.is_empty()
    }

    /// The sorted peers of `node`.
    #[inline]
    pub fn peers(&self, node: u32) -> &[u32] {
        let i = node as usize;
        &self.neighbours[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The region index of `node`.
    #[inline]
    pub fn region(&self, node: u32) -> u8 {
        self.region[node as usize]
    }

    /// The model in force.
    pub fn model(&self) -> &NetworkModel {
        &self.model
    }

    /// Sets or clears a per-link override (the link is undirected).
    pub fn set_override(&mut self, a: u32, b: u32, o: LinkOverride) {
        let key = (a.min(b), a.max(b));
        if o == LinkOverride::default() {
            self.overrides.remove(&key);
        } else {
            self.overrides.insert(key, o);
        }
    }

    /// Sets the loss probability of every link without an override.
    pub fn set_loss(&mut self, loss: f64) {
        self.model.loss = loss;
    }

    /// Splits the network: the members of `groups[g]` get label `g + 1`,
    /// everyone else label 0; messages cross only between equal labels.
    pub(crate) fn set_partition(&mut self, groups: &[Vec<fika_core::NodeId>]) {
        self.partition.iter_mut().for_each(|p| *p = 0);
        for (g, members) in groups.iter().enumerate() {
            for m in members {
                if let Some(p) = self.partition.get_mut(m.index()) {
                    *p = (g + 1) as u16;
                }
            }
        }
        self.partitioned = self.partition.iter().any(|&p| p != 0);
    }

    /// Removes every partition.
    pub(crate) fn heal(&mut self) {
        self.partition.iter_mut().for_each(|p| *p = 0);
        self.partitioned = false;
    }

    /// Whether two nodes are currently in the same partition.
    #[inline]
    pub fn same_side(&self, a: u32, b: u32) -> bool {
        !self.partitioned || self.partition[a as usize] == self.partition[b as usize]
    }

    /// The transfer time of `bytes` at `bw` bit/s (0: unlimited), in nanoseconds.
    #[inline]
    fn transfer_ns(bw: u64, bytes: u32) -> u64 {
        if bw == 0 {
            0
        } else if bytes <= FAST_BYTES {
            u64::from(bytes) * 8_000_000_000 / bw
        } else {
            (u128::from(bytes) * 8_000_000_000 / u128::from(bw)) as u64
        }
    }

    /// The latency drawn from the model itself (the slow path of `route`).
    fn model_latency_ms(&mut self, from: u32, to: u32) -> f64 {
        match &self.model.latency {
            LatencyModel::Constant { ms } => *ms,
            LatencyModel::Uniform { min_ms, max_ms } => {
                if max_ms > min_ms {
                    self.rng.gen_range(*min_ms..*max_ms)
                } else {
                    *min_ms
                }
            }
            LatencyModel::Pareto { mean_ms, spread_ms } => pareto_ms(&mut self.rng, *mean_ms, *spread_ms),
            LatencyModel::Regions { spread_ms } => {
                let mean = match &self.model.regions {
                    Some(t) => t.latency_ms[self.region(from) as usize][self.region(to) as usize],
                    None => 0.0,
                };
                let spread = *spread_ms;
                pareto_ms(&mut self.rng, mean, spread)
            }
        }
    }

    /// Routes a message of `bytes` sent at `now_ns`, charging the sender's
    /// uplink. `linked` says the caller already knows `to` is a peer of `from`.
    #[inline]
    pub(crate) fn route(&mut self, now_ns: u64, from: u32, to: u32, bytes: u32, linked: bool) -> Route {
        if !linked && self.peers(from).binary_search(&to).is_err() {
            return Route::NotLinked;
        }
        if !self.same_side(from, to) {
            return Route::Partitioned;
        }
        let over = if self.overrides.is_empty() {
            None
        } else {
            self.overrides.get(&(from.min(to), from.max(to))).copied()
        };
        let pair = self.pairs[usize::from(self.region(from)) * self.regions + usize::from(self.region(to))];
        let busy = &mut self.busy_until[from as usize];
        let finish = now_ns.max(*busy) + Self::transfer_ns(pair.bw, bytes);
        *busy = finish;
        let loss = over.and_then(|o| o.loss).unwrap_or(self.model.loss);
        if loss > 0.0 && self.rng.r#gen::<f64>() < loss {
            return Route::Lost;
        }
        let ns = match (over.and_then(|o| o.latency_ms), pair.latency) {
            (Some(ms), _) => self.delay_ns(ms),
            (None, PairLatency::Fixed(ms)) => self.delay_ns(ms),
            (None, PairLatency::Pareto { law, .. }) => self.draws.next(law as usize),
            (None, PairLatency::Model) => {
                let ms = self.model_latency_ms(from, to);
                self.delay_ns(ms)
            }
        };
        Route::Arrives(finish + ns)
    }

    /// The delay of a message whose latency is `latency_ms`: with the
    /// model's fixed costs, in nanoseconds.
    #[inline]
    fn delay_ns(&self, latency_ms: f64) -> u64 {
        round_to_u64((latency_ms + self.model.extra_latency_ms + self.model.processing_ms) * 1e6)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fika_core::derive_rng;

    #[test]
    fn reverse_indexes_point_back() {
        use rand::Rng;
        let mut pick = derive_rng(4, "test", 0);
        let n = 300u32;
        let mut adjacency: Vec<Vec<u32>> = vec![Vec::new(); n as usize];
        for _ in 0..2_000 {
            let (a, b) = (pick.gen_range(0..n), pick.gen_range(0..n));
            if a != b {
                adjacency[a as usize].push(b);
                adjacency[b as usize].push(a);
            }
        }
        let net = Net::new(&adjacency, vec![0; n as usize], NetworkModel::default(), derive_rng(4, "net", 0));
        assert!(net.symmetric());
        for a in 0..n {
            for (i, &b) in net.peers(a).iter().enumerate() {
                let j = net.reverse_index(a, i as u32);
                assert_eq!(net.peers(b)[j as usize], a, "link {a} → {b}");
            }
        }
        // One-way links have no reverse.
        let one_way =
            Net::new(&[vec![1], vec![]], vec![0; 2], NetworkModel::default(), derive_rng(4, "net", 1));
        assert_eq!(one_way.reverse_index(0, 0), u32::MAX);
    }

    #[test]
    fn rounding_matches_the_library() {
        let mut rng = derive_rng(1, "test", 0);
        let mut values = vec![
            0.0,
            0.49999999999999994,
            0.5,
            1.5,
            2.5,
            1e-300,
            12.5e6,
            4_503_599_627_370_495.5,
            4_503_599_627_370_496.0,
            9_007_199_254_740_993.0,
            1.8446744073709552e19,
            1e30,
            -0.0,
            -0.4,
            -0.5,
            -3.0,
            f64::NAN,
            f64::INFINITY,
            f64::NEG_INFINITY,
        ];
        for _ in 0..100_000 {
            let x: f64 = rng.r#gen::<f64>() * 1e9;
            values.extend([x, x.floor() + 0.5, x.floor()]);
        }
        for x in values {
            assert_eq!(round_to_u64(x), x.round() as u64, "{x}");
        }
    }

    /// What `Net::route` must give, from the plain formulas: SimBlock's
    /// bandwidth and Pareto draw, each pair of regions drawing from its own
    /// stream, seeded from the network's in pair order.
    fn reference_route(
        net: &Net,
        streams: &mut [NodeRng],
        busy: &mut [u64],
        now: u64,
        from: u32,
        to: u32,
        bytes: u32,
    ) -> Option<u64> {
        net.peers(from).binary_search(&to).ok()?;
        let t = net.model.regions.as_ref().expect("regions");
        let (rf, rt) = (net.region(from) as usize, net.region(to) as usize);
        let bw = t.upload_bps[rf].min(t.download_bps[rt]).max(1);
        let start = now.max(busy[from as usize]);
        let finish = start + (u128::from(bytes) * 8_000_000_000 / u128::from(bw)) as u64;
        busy[from as usize] = finish;
        let LatencyModel::Regions { spread_ms } = net.model.latency else { panic!("regions model") };
        let drawn = pareto_ms(&mut streams[rf * t.len() + rt], t.latency_ms[rf][rt], spread_ms);
        let ms = drawn + net.model.extra_latency_ms + net.model.processing_ms;
        Some(finish + (ms * 1e6).round() as u64)
    }

    /// Routes 300,000 random sends on a network of `n` nodes spread over
    /// SimBlock's regions, each linked to the `span` nodes on either side,
    /// against [`reference_route`].
    #[track_caller]
    fn check_routes(n: u32, span: u32) {
        let table = RegionTable::preset("simblock-2019").expect("preset");
        let regions = table.len();
        let model = NetworkModel {
            latency: LatencyModel::Regions { spread_ms: 5.0 },
            extra_latency_ms: 10.0,
            bandwidth: BandwidthModel::Regions,
            processing_ms: 2.0,
            loss: 0.0,
            regions: Some(table),
        };
        let linked = |a: u32, b: u32| a != b && ((b + n - a) % n <= span || (a + n - b) % n <= span);
        let adjacency: Vec<Vec<u32>> = (0..n).map(|a| (0..n).filter(|&b| linked(a, b)).collect()).collect();
        let region: Vec<u8> = (0..n).map(|i| (i as usize % regions) as u8).collect();
        let mut net = Net::new(&adjacency, region, model, derive_rng(9, "net", 0));
        assert!(net.symmetric());
        let mut seeds = derive_rng(9, "net", 0);
        let mut streams: Vec<NodeRng> =
            (0..regions * regions).map(|_| NodeRng::seed_from_u64(seeds.r#gen())).collect();
        let mut busy = vec![0; n as usize];
        let mut pick = derive_rng(10, "test", 0);
        let mut now = 0;
        for i in 0..300_000u64 {
            now += pick.gen_range(0..2_000_000);
            let from = pick.gen_range(0..n);
            // Mostly peers, sometimes not.
            let to = if i % 5 == 0 { pick.gen_range(0..n) } else { (from + pick.gen_range(1..=span)) % n };
            let bytes = if i % 7 == 0 { 535_024 } else { 61 };
            let want = reference_route(&net, &mut streams, &mut busy, now, from, to, bytes);
            let got = match net.route(now, from, to, bytes, false) {
                Route::Arrives(at) => Some(at),
                Route::NotLinked => None,
                Route::Partitioned | Route::Lost => panic!("no partitions or loss here"),
            };
            assert_eq!(got, want, "send {i}: {from} → {to}");
        }
    }

    #[test]
    fn routes_exactly_as_the_plain_formulas() {
        // Drawn as needed.
        check_routes(12, 10);
        // Drawn ahead on the latency thread.
        check_routes(DRAW_AHEAD_NODES as u32, 12);
    }
}
