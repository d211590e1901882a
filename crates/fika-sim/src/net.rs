//! The network model: latency, bandwidth, loss and partitions.
//!
//! A message from `a` to `b` first waits for `a`'s uplink (one upload at a
//! time per node, first come first served, as SimBlock models it), occupies
//! it for `size · 8 / min(upload(a), download(b))`, then travels for the
//! link's latency plus fixed per-message costs. Everything random is drawn
//! from the network's own stream, in event order, so runs are reproducible.

use std::collections::BTreeMap;

use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::regions::RegionTable;
use fika_core::NodeRng;

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
    if spread_ms <= 0.0 || mean_ms <= spread_ms {
        return mean_ms;
    }
    let shape = mean_ms / spread_ms;
    let scale = mean_ms - spread_ms;
    // 1 − U lies in (0, 1], so the power is finite.
    let u: f64 = 1.0 - rng.r#gen::<f64>();
    scale / u.powf(1.0 / shape)
}

/// A per-link change made by a fault.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LinkOverride {
    /// Constant latency replacing the model, if set.
    pub latency_ms: Option<f64>,
    /// Loss probability replacing the global one, if set.
    pub loss: Option<f64>,
}

/// The network at run time: adjacency, per-node queues and link state.
pub struct Net {
    offsets: Vec<u32>,
    neighbours: Vec<u32>,
    region: Vec<u8>,
    busy_until: Vec<u64>,
    /// Partition label per node; messages cross only between equal labels.
    pub(crate) partition: Vec<u16>,
    overrides: BTreeMap<(u32, u32), LinkOverride>,
    model: NetworkModel,
    up_bps: Vec<u64>,
    down_bps: Vec<u64>,
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
        Net {
            offsets,
            neighbours,
            region: if region.len() == n { region } else { vec![0; n] },
            busy_until: vec![0; n],
            partition: vec![0; n],
            overrides: BTreeMap::new(),
            model,
            up_bps,
            down_bps,
            rng,
        }
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
    pub fn peers(&self, node: u32) -> &[u32] {
        let i = node as usize;
        &self.neighbours[self.offsets[i] as usize..self.offsets[i + 1] as usize]
    }

    /// The region index of `node`.
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

    /// Whether two nodes are currently in the same partition.
    pub fn same_side(&self, a: u32, b: u32) -> bool {
        self.partition[a as usize] == self.partition[b as usize]
    }

    /// The transfer time of `bytes` from `from` to `to`, in nanoseconds.
    fn transfer_ns(&self, from: u32, to: u32, bytes: u32) -> u64 {
        let (up, down) = match self.model.bandwidth {
            BandwidthModel::Unlimited => return 0,
            BandwidthModel::Uniform { .. } => (self.up_bps[0], self.down_bps[0]),
            BandwidthModel::Regions => (
                self.up_bps.get(self.region(from) as usize).copied().unwrap_or(0),
                self.down_bps.get(self.region(to) as usize).copied().unwrap_or(0),
            ),
        };
        let bw = up.min(down).max(1);
        (u128::from(bytes) * 8_000_000_000 / u128::from(bw)) as u64
    }

    fn latency_ms(&mut self, from: u32, to: u32, over: Option<f64>) -> f64 {
        if let Some(ms) = over {
            return ms;
        }
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

    /// Routes a message of `bytes` sent at `now_ns`, charging the sender's uplink.
    pub(crate) fn route(&mut self, now_ns: u64, from: u32, to: u32, bytes: u32) -> Route {
        if self.peers(from).binary_search(&to).is_err() {
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
        let start = now_ns.max(self.busy_until[from as usize]);
        let finish = start + self.transfer_ns(from, to, bytes);
        self.busy_until[from as usize] = finish;
        let loss = over.and_then(|o| o.loss).unwrap_or(self.model.loss);
        if loss > 0.0 && self.rng.r#gen::<f64>() < loss {
            return Route::Lost;
        }
        let ms = self.latency_ms(from, to, over.and_then(|o| o.latency_ms))
            + self.model.extra_latency_ms
            + self.model.processing_ms;
        Route::Arrives(finish + (ms * 1e6).round() as u64)
    }
}
