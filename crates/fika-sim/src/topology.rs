//! Network topologies: which nodes are linked to which.
//!
//! A [`TopologySpec`] (read from a scenario file) names a family of graphs;
//! [`generate`] draws one graph of that family over `n` nodes from the RNG it
//! is given, and [`explicit`] checks a hand-written list of links. The result
//! is a [`Graph`]: a node count and a list of undirected [`Edge`]s, each
//! remembering which end opened it (its outbound side), as Bitcoin-like
//! networks distinguish outbound from inbound connections.
//!
//! Everything is deterministic: the graph depends only on the spec, `n` and
//! the RNG's stream — no hash-map iteration order, no clocks. Generators are
//! `O(n + m)` in time and memory for the sparse families (random, Erdős–Rényi,
//! k-regular), so 100,000-node networks are cheap.

use rand::Rng;
use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

/// The most links [`generate`] will build; a spec that would need more (say a
/// full mesh of 100,000 nodes) is refused with [`TopologyError::TooManyEdges`]
/// instead of exhausting memory.
pub const MAX_EDGES: u64 = 100_000_000;

/// How far the last entry of a degree table may be from 1.0 and still count as
/// ending at 1.0 (absorbs rounding in hand-written tables).
pub const CDF_END_TOLERANCE: f64 = 1e-9;

/// Random tries per node (on top of 16 per wanted link) before the random
/// topology falls back to enumerating the remaining candidates.
const RANDOM_BASE_TRIES: usize = 64;

/// Random stub pairs tried per link by the k-regular pairing before it looks
/// for a suitable pair exhaustively.
const PAIR_TRIES: usize = 64;

/// Pairing attempts for a k-regular graph before the circulant fallback.
const K_REGULAR_ATTEMPTS: usize = 50;

/// Why a topology cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum TopologyError {
    /// Node indices are `u32`, so at most `u32::MAX` nodes fit.
    #[error("{n} nodes requested, at most {max} are supported", max = u32::MAX)]
    TooManyNodes {
        /// Nodes requested.
        n: usize,
    },
    /// The topology would have more than [`MAX_EDGES`] links.
    #[error("topology would have about {edges} links, more than the limit of {MAX_EDGES}")]
    TooManyEdges {
        /// Links it would have (expected count for random families).
        edges: u64,
    },
    /// A degree table preset name that does not exist.
    #[error("unknown degree table {name:?}; known presets: {known}")]
    UnknownDegreePreset {
        /// The name given.
        name: String,
        /// The known preset names, comma separated.
        known: String,
    },
    /// A degree table without entries.
    #[error("degree table is empty; it needs at least one cumulative probability")]
    EmptyDegreeTable,
    /// A degree table entry outside `[0, 1]` or not a number.
    #[error("degree table entry for degree {degree} is {value}; entries must be within [0, 1]")]
    DegreeTableValue {
        /// The degree whose entry is wrong (entry index + 1).
        degree: usize,
        /// The offending value.
        value: f64,
    },
    /// A degree table that decreases, so it is not cumulative.
    #[error(
        "degree table decreases at degree {degree}: {value} after {previous}; it must be cumulative (non-decreasing)"
    )]
    DegreeTableDecreasing {
        /// The degree whose entry is smaller than the one before.
        degree: usize,
        /// Its entry.
        value: f64,
        /// The entry before it.
        previous: f64,
    },
    /// A degree table whose last entry is not 1.
    #[error("degree table ends at {last}; its last entry must be 1.0")]
    DegreeTableEnd {
        /// The last entry.
        last: f64,
    },
    /// An Erdős–Rényi link probability outside `[0, 1]`.
    #[error("erdos-renyi link probability p = {p} is outside [0, 1]")]
    Probability {
        /// The probability given.
        p: f64,
    },
    /// A k-regular graph with `k >= n`: a node cannot have `k` distinct peers.
    #[error("k-regular graph needs k < n, got k = {k} with n = {n} nodes")]
    DegreeTooLarge {
        /// Degree asked for.
        k: u32,
        /// Number of nodes.
        n: usize,
    },
    /// A k-regular graph with `n·k` odd, which no graph has (every link adds 2
    /// to the degree sum).
    #[error("k-regular graph needs n·k even, got n = {n} and k = {k}")]
    OddDegreeSum {
        /// Number of nodes.
        n: usize,
        /// Degree asked for.
        k: u32,
    },
    /// A star whose center is not one of the nodes.
    #[error("star center {center} is out of range for {n} nodes (valid: 0..{n})")]
    StarCenter {
        /// The center given.
        center: u32,
        /// Number of nodes.
        n: usize,
    },
    /// A link naming a node that does not exist.
    #[error("link #{link} names node {node}, but there are only {n} nodes")]
    NodeOutOfRange {
        /// Position of the link in the list.
        link: usize,
        /// The missing node.
        node: u32,
        /// Number of nodes.
        n: usize,
    },
    /// A link from a node to itself.
    #[error("link #{link} connects node {node} to itself")]
    SelfLoop {
        /// Position of the link in the list.
        link: usize,
        /// The node.
        node: u32,
    },
    /// A link that repeats an earlier one (in either direction).
    #[error("link #{link} ({a}-{b}) duplicates link #{first}")]
    DuplicateLink {
        /// Position of the repeated link.
        link: usize,
        /// Position of its first occurrence.
        first: usize,
        /// One end.
        a: u32,
        /// The other end.
        b: u32,
    },
}

/// An undirected link between two nodes. `from` is the node that opened it,
/// so the link counts toward `from`'s outbound degree and `to`'s inbound one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Edge {
    /// The node that opened the link.
    pub from: u32,
    /// The node that accepted it.
    pub to: u32,
}

/// A network: `nodes` nodes numbered `0..nodes` and the links between them.
///
/// Graphs built by [`generate`] and [`explicit`] have no self loops and no
/// link twice (in either direction); [`Graph::validate`] checks that for
/// graphs built by hand.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Graph {
    /// Number of nodes.
    pub nodes: usize,
    /// The links, in the order they were made.
    pub edges: Vec<Edge>,
}

impl Graph {
    /// A graph of `nodes` nodes and no links.
    pub fn empty(nodes: usize) -> Graph {
        Graph { nodes, edges: Vec::new() }
    }

    /// Each node's neighbours (both directions), sorted ascending, so callers
    /// iterate peers in a deterministic order. Links naming a node outside
    /// `0..nodes` are skipped ([`Graph::validate`] reports them).
    pub fn adjacency(&self) -> Vec<Vec<u32>> {
        let degrees = self.degrees();
        let mut adj: Vec<Vec<u32>> = degrees.iter().map(|&d| Vec::with_capacity(d as usize)).collect();
        for e in self.in_range_edges() {
            adj[e.from as usize].push(e.to);
            adj[e.to as usize].push(e.from);
        }
        for list in &mut adj {
            list.sort_unstable();
        }
        adj
    }

    /// Each node's total degree (outbound + inbound links).
    pub fn degrees(&self) -> Vec<u32> {
        let mut deg = vec![0u32; self.nodes];
        for e in self.in_range_edges() {
            deg[e.from as usize] += 1;
            deg[e.to as usize] += 1;
        }
        deg
    }

    /// Each node's outbound degree: the links it opened.
    pub fn out_degrees(&self) -> Vec<u32> {
        let mut deg = vec![0u32; self.nodes];
        for e in self.in_range_edges() {
            deg[e.from as usize] += 1;
        }
        deg
    }

    /// Whether every node can reach every other one (a graph of 0 or 1 nodes
    /// is connected). Uses union–find over the links, no adjacency lists.
    pub fn is_connected(&self) -> bool {
        if self.nodes <= 1 {
            return true;
        }
        let mut parent: Vec<u32> = (0..self.nodes).map(|i| i as u32).collect();
        fn find(parent: &mut [u32], mut x: u32) -> u32 {
            while parent[x as usize] != x {
                let grand = parent[parent[x as usize] as usize];
                parent[x as usize] = grand;
                x = grand;
            }
            x
        }
        let mut components = self.nodes;
        for e in self.in_range_edges() {
            let a = find(&mut parent, e.from);
            let b = find(&mut parent, e.to);
            if a != b {
                parent[a as usize] = b;
                components -= 1;
            }
        }
        components == 1
    }

    /// Checks that every link names existing nodes, that no link is a self
    /// loop and that no two links join the same pair of nodes (in either
    /// direction). The error names the first offending link.
    pub fn validate(&self) -> Result<(), TopologyError> {
        check_node_count(self.nodes)?;
        let mut keys: Vec<(u32, u32, usize)> = Vec::with_capacity(self.edges.len());
        for (link, e) in self.edges.iter().enumerate() {
            for node in [e.from, e.to] {
                if node as usize >= self.nodes {
                    return Err(TopologyError::NodeOutOfRange { link, node, n: self.nodes });
                }
            }
            if e.from == e.to {
                return Err(TopologyError::SelfLoop { link, node: e.from });
            }
            keys.push((e.from.min(e.to), e.from.max(e.to), link));
        }
        keys.sort_unstable();
        // Report the duplicate that comes first in the list.
        let dup = keys.windows(2).filter(|w| w[0].0 == w[1].0 && w[0].1 == w[1].1).min_by_key(|w| w[1].2);
        if let Some(w) = dup {
            let e = self.edges[w[1].2];
            return Err(TopologyError::DuplicateLink { link: w[1].2, first: w[0].2, a: e.from, b: e.to });
        }
        Ok(())
    }

    fn in_range_edges(&self) -> impl Iterator<Item = &Edge> {
        let n = self.nodes;
        self.edges.iter().filter(move |e| (e.from as usize) < n && (e.to as usize) < n)
    }
}

/// A distribution of outbound degrees in SimBlock's format: `cdf[k]` is the
/// probability that a node's outbound degree is at most `k + 1`. So degrees
/// run from 1 to `cdf.len()`, and degree `d` has probability
/// `cdf[d-1] - cdf[d-2]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DegreeDistribution {
    /// Cumulative probabilities; entry `k` is P(degree ≤ k + 1).
    pub cdf: Vec<f64>,
}

impl DegreeDistribution {
    /// Names accepted by [`DegreeDistribution::preset`].
    pub const PRESETS: &'static [&'static str] = &["bitcoin-2015", "litecoin", "dogecoin"];

    /// The named table from SimBlock, or `None` if unknown (see
    /// [`DegreeDistribution::PRESETS`]). `"dogecoin"` gives every node 8.
    pub fn preset(name: &str) -> Option<DegreeDistribution> {
        let cdf: Vec<f64> = match name {
            "bitcoin-2015" => vec![
                0.025, 0.05, 0.075, 0.10, 0.20, 0.30, 0.40, 0.50, 0.60, 0.70, 0.80, 0.85, 0.90, 0.95, 0.97,
                0.97, 0.98, 0.99, 0.995, 1.0,
            ],
            "litecoin" => vec![
                0.01, 0.02, 0.04, 0.07, 0.09, 0.14, 0.20, 0.28, 0.39, 0.5, 0.6, 0.69, 0.76, 0.81, 0.85, 0.87,
                0.89, 0.92, 0.93, 1.0,
            ],
            "dogecoin" => vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0],
            _ => return None,
        };
        Some(DegreeDistribution { cdf })
    }

    /// Checks that the table is a cumulative distribution: not empty, every
    /// entry within `[0, 1]`, non-decreasing, and ending at 1.0 (within
    /// [`CDF_END_TOLERANCE`]).
    pub fn validate(&self) -> Result<(), TopologyError> {
        let last = *self.cdf.last().ok_or(TopologyError::EmptyDegreeTable)?;
        let mut previous = 0.0;
        for (k, &value) in self.cdf.iter().enumerate() {
            if !(0.0..=1.0).contains(&value) {
                return Err(TopologyError::DegreeTableValue { degree: k + 1, value });
            }
            if value < previous {
                return Err(TopologyError::DegreeTableDecreasing { degree: k + 1, value, previous });
            }
            previous = value;
        }
        if (last - 1.0).abs() > CDF_END_TOLERANCE {
            return Err(TopologyError::DegreeTableEnd { last });
        }
        Ok(())
    }

    /// Draws one outbound degree (between 1 and `cdf.len()`) from one uniform
    /// number of `rng`: the smallest `d` with `u < cdf[d-1]`. An unvalidated
    /// table never panics: an empty one gives 0, and if it ends below 1 the
    /// remaining mass goes to the largest degree.
    pub fn sample(&self, rng: &mut impl Rng) -> u32 {
        if self.cdf.is_empty() {
            return 0;
        }
        let u: f64 = rng.r#gen();
        let index = self.cdf.partition_point(|&c| c <= u);
        (index.min(self.cdf.len() - 1) + 1) as u32
    }

    /// The probability of each degree: entry `k` is P(degree = k + 1).
    pub fn pmf(&self) -> Vec<f64> {
        let mut previous = 0.0;
        self.cdf
            .iter()
            .map(|&c| {
                let p = c - previous;
                previous = c;
                p
            })
            .collect()
    }

    /// The mean degree of a valid table.
    pub fn mean(&self) -> f64 {
        self.pmf().iter().enumerate().map(|(k, p)| (k + 1) as f64 * p).sum()
    }

    /// The largest degree the table can produce.
    pub fn max_degree(&self) -> u32 {
        self.cdf.len() as u32
    }
}

/// Where a random topology's degree table comes from: a preset name (see
/// [`DegreeDistribution::PRESETS`]) or a table written out, `{ cdf = [...] }`.
///
/// Serialized untagged (a string or a table). Deserialization is written by
/// hand so that a bad table reports its real problem (say an unknown field)
/// rather than serde's "did not match any variant".
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum DegreeSpec {
    /// A preset by name.
    Preset(String),
    /// An explicit cumulative table.
    Table(DegreeDistribution),
}

impl<'de> Deserialize<'de> for DegreeSpec {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct SpecVisitor;
        impl<'de> serde::de::Visitor<'de> for SpecVisitor {
            type Value = DegreeSpec;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a degree table preset name (\"bitcoin-2015\", \"litecoin\", \"dogecoin\") \
                     or a table { cdf = [...] }",
                )
            }
            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<DegreeSpec, E> {
                Ok(DegreeSpec::Preset(v.to_owned()))
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<DegreeSpec, A::Error> {
                DegreeDistribution::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(DegreeSpec::Table)
            }
        }
        deserializer.deserialize_any(SpecVisitor)
    }
}

impl DegreeSpec {
    /// The validated table this spec stands for; an unknown preset name or an
    /// invalid table is an error.
    pub fn resolve(&self) -> Result<DegreeDistribution, TopologyError> {
        let table = match self {
            DegreeSpec::Preset(name) => {
                DegreeDistribution::preset(name).ok_or_else(|| TopologyError::UnknownDegreePreset {
                    name: name.clone(),
                    known: DegreeDistribution::PRESETS.join(", "),
                })?
            }
            DegreeSpec::Table(table) => table.clone(),
        };
        table.validate()?;
        Ok(table)
    }
}

/// A family of network graphs, as written in a scenario file
/// (`kind = "random"`, `kind = "k-regular"`, ...). [`generate`] draws one.
///
/// Explicit link lists are resolved from node names elsewhere and checked by
/// [`explicit`].
///
/// Deserialization goes through a private mirror whose field-less kinds are
/// empty structs, so a stray field is an error for every kind (serde would
/// otherwise ignore fields next to a unit variant's tag).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields, from = "TopologySpecRepr")]
pub enum TopologySpec {
    /// SimBlock-style: each node draws its outbound degree from the table and
    /// opens links to that many distinct random other nodes.
    Random {
        /// The outbound degree table.
        degree: DegreeSpec,
    },
    /// G(n, p): each unordered pair of nodes is linked with probability `p`.
    ErdosRenyi {
        /// Link probability, within `[0, 1]`.
        p: f64,
    },
    /// A uniformly random-ish graph in which every node has exactly `k` links.
    KRegular {
        /// The degree of every node; needs `k < n` and `n·k` even.
        k: u32,
    },
    /// Node `i` linked to `i + 1`, and the last node to node 0.
    Ring,
    /// Node `i` linked to `i + 1`; the ends are not joined.
    Line,
    /// Every node linked to one center node.
    Star {
        /// The center node (0 by default).
        #[serde(default)]
        center: u32,
    },
    /// Every pair of nodes linked.
    FullMesh,
}

/// The serialized form of [`TopologySpec`], with field-less kinds as empty
/// structs so `deny_unknown_fields` applies to them too.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
enum TopologySpecRepr {
    Random {
        degree: DegreeSpec,
    },
    ErdosRenyi {
        p: f64,
    },
    KRegular {
        k: u32,
    },
    Ring {},
    Line {},
    Star {
        #[serde(default)]
        center: u32,
    },
    FullMesh {},
}

impl From<TopologySpecRepr> for TopologySpec {
    fn from(repr: TopologySpecRepr) -> Self {
        match repr {
            TopologySpecRepr::Random { degree } => TopologySpec::Random { degree },
            TopologySpecRepr::ErdosRenyi { p } => TopologySpec::ErdosRenyi { p },
            TopologySpecRepr::KRegular { k } => TopologySpec::KRegular { k },
            TopologySpecRepr::Ring {} => TopologySpec::Ring,
            TopologySpecRepr::Line {} => TopologySpec::Line,
            TopologySpecRepr::Star { center } => TopologySpec::Star { center },
            TopologySpecRepr::FullMesh {} => TopologySpec::FullMesh,
        }
    }
}

impl TopologySpec {
    /// Checks the parameters that do not depend on the number of nodes (the
    /// degree table, `p`), so a scenario can be rejected before building.
    pub fn validate(&self) -> Result<(), TopologyError> {
        match self {
            TopologySpec::Random { degree } => degree.resolve().map(|_| ()),
            TopologySpec::ErdosRenyi { p } => {
                if (0.0..=1.0).contains(p) {
                    Ok(())
                } else {
                    Err(TopologyError::Probability { p: *p })
                }
            }
            TopologySpec::KRegular { .. }
            | TopologySpec::Ring
            | TopologySpec::Line
            | TopologySpec::Star { .. }
            | TopologySpec::FullMesh => Ok(()),
        }
    }
}

/// Draws a graph of the family `spec` over `n` nodes, using only `rng` for
/// randomness (so the same seed gives the same graph).
///
/// - `Random`: nodes in index order draw an outbound degree `d` (capped at
///   `n − 1`) and link to `d` distinct random nodes they are not yet linked to
///   in either direction. After `16·d + 64` random tries a node falls back to
///   choosing among all remaining candidates, and keeps fewer links only if
///   fewer than `d` candidates exist (small, dense networks).
/// - `ErdosRenyi`: geometric skipping over pairs (Batagelj & Brandes), so the
///   cost is `O(n + m)`; each link's direction is a fair coin.
/// - `KRegular`: pairing of `n·k` stubs one random pair at a time, rejecting
///   self loops and double links (Steger & Wormald), restarting up to 50
///   times when it gets stuck; if all fail (practically never), a circulant
///   graph over a random node order. For `k > (n − 1)/2` it draws the
///   `(n − 1 − k)`-regular complement instead.
/// - `Ring`, `Line`: `i → i + 1` (and `n−1 → 0` for a ring of 3 or more).
///   `Star`: every other node → the center. `FullMesh`: `i → j` for `i < j`.
///
/// With `n = 0` every family gives the empty graph (once the spec's own
/// parameters are valid).
pub fn generate(spec: &TopologySpec, n: usize, rng: &mut impl Rng) -> Result<Graph, TopologyError> {
    spec.validate()?;
    check_node_count(n)?;
    if n == 0 {
        return Ok(Graph::empty(0));
    }
    let n64 = n as u64;
    match spec {
        TopologySpec::Random { degree } => {
            let table = degree.resolve()?;
            let most = n64 * u64::from(table.max_degree()).min(n64 - 1);
            check_edges(most)?;
            Ok(random_graph(&table, n, rng))
        }
        TopologySpec::ErdosRenyi { p } => {
            let expected = p * (n as f64) * (n as f64 - 1.0) / 2.0;
            check_edges(expected.ceil() as u64)?;
            Ok(erdos_renyi(*p, n, rng))
        }
        TopologySpec::KRegular { k } => {
            if u64::from(*k) >= n64 {
                return Err(TopologyError::DegreeTooLarge { k: *k, n });
            }
            if (n64 * u64::from(*k)) % 2 == 1 {
                return Err(TopologyError::OddDegreeSum { n, k: *k });
            }
            check_edges(n64 * u64::from(*k) / 2)?;
            Ok(k_regular(*k as usize, n, rng))
        }
        TopologySpec::Ring => Ok(ring(n)),
        TopologySpec::Line => Ok(line(n)),
        TopologySpec::Star { center } => {
            if *center as usize >= n {
                return Err(TopologyError::StarCenter { center: *center, n });
            }
            Ok(star(*center, n))
        }
        TopologySpec::FullMesh => {
            check_edges(n64 * (n64 - 1) / 2)?;
            Ok(full_mesh(n))
        }
    }
}

/// Builds a graph from a list of links given by node index, `(from, to)`,
/// checking that every index is below `n`, that no link is a self loop and
/// that no pair is linked twice (in either direction). The links keep their
/// order and direction.
pub fn explicit(n: usize, links: &[(u32, u32)]) -> Result<Graph, TopologyError> {
    let graph = Graph { nodes: n, edges: links.iter().map(|&(from, to)| Edge { from, to }).collect() };
    graph.validate()?;
    Ok(graph)
}

fn check_node_count(n: usize) -> Result<(), TopologyError> {
    if u32::try_from(n).is_err() {
        return Err(TopologyError::TooManyNodes { n });
    }
    Ok(())
}

fn check_edges(edges: u64) -> Result<(), TopologyError> {
    if edges > MAX_EDGES {
        return Err(TopologyError::TooManyEdges { edges });
    }
    Ok(())
}

/// SimBlock-style random graph; see [`generate`]. `n` is at least 1 and fits
/// in `u32`.
///
/// Nodes link in index order, so node `j`'s outbound links are the contiguous
/// run `edges[start[j]..start[j + 1]]`. Whether `me` and `peer` are already
/// linked is then: `peer` is in `me`'s own run, or `peer < me` (it has had its
/// turn) and `me` is in `peer`'s run. No per-node lists, one short scan of
/// contiguous memory per candidate.
fn random_graph(table: &DegreeDistribution, n: usize, rng: &mut impl Rng) -> Graph {
    let n32 = n as u32;
    let cap = n32 - 1;
    // Degrees first, so they do not depend on how many tries linking takes.
    let wanted: Vec<u32> = (0..n).map(|_| table.sample(rng).min(cap)).collect();
    let total: usize = wanted.iter().map(|&d| d as usize).sum();
    let mut edges: Vec<Edge> = Vec::with_capacity(total);
    let mut start: Vec<usize> = Vec::with_capacity(n + 1);
    let linked = |edges: &[Edge], start: &[usize], me: u32, peer: u32| {
        let mine = &edges[start[me as usize]..];
        if mine.iter().any(|e| e.to == peer) {
            return true;
        }
        peer < me && edges[start[peer as usize]..start[peer as usize + 1]].iter().any(|e| e.to == me)
    };
    for (i, &want) in wanted.iter().enumerate() {
        let me = i as u32;
        let want = want as usize;
        start.push(edges.len());
        let mut made = 0;
        let mut tries = 0;
        let max_tries = 16 * want + RANDOM_BASE_TRIES;
        while made < want && tries < max_tries {
            tries += 1;
            let peer = rng.gen_range(0..n32);
            if peer == me || linked(&edges, &start, me, peer) {
                continue;
            }
            edges.push(Edge { from: me, to: peer });
            made += 1;
        }
        if made < want {
            let mut candidates: Vec<u32> =
                (0..n32).filter(|&j| j != me && !linked(&edges, &start, me, j)).collect();
            let need = (want - made).min(candidates.len());
            let (chosen, _) = candidates.partial_shuffle(rng, need);
            edges.extend(chosen.iter().map(|&peer| Edge { from: me, to: peer }));
        }
    }
    Graph { nodes: n, edges }
}

/// G(n, p) by geometric skipping (Batagelj & Brandes 2005): the gap to the
/// next linked pair, in the order (0,1), (0,2), (1,2), (0,3), ..., is drawn
/// directly, so the cost is `O(n + m)`.
fn erdos_renyi(p: f64, n: usize, rng: &mut impl Rng) -> Graph {
    let mut edges = Vec::new();
    if n < 2 || p <= 0.0 {
        return Graph { nodes: n, edges };
    }
    let expected = p * (n as f64) * (n as f64 - 1.0) / 2.0;
    edges.reserve((expected * 1.01 + 16.0) as usize);
    // ln(1 - p); -inf for p = 1, which makes every skip 0.
    let log_q = (-p).ln_1p();
    let n = n as i64;
    let mut v: i64 = 1;
    let mut w: i64 = -1;
    while v < n {
        let r: f64 = rng.r#gen();
        // ln(1 - r) / ln(1 - p) >= 0; `as` saturates on huge values.
        let skip = ((-r).ln_1p() / log_q).floor();
        let skip = if skip.is_finite() && skip > 0.0 { skip as i64 } else { 0 };
        w = w.saturating_add(1).saturating_add(skip);
        while w >= v && v < n {
            w -= v;
            v += 1;
        }
        if v < n {
            let (a, b) = (w as u32, v as u32);
            let edge = if rng.r#gen::<bool>() { Edge { from: a, to: b } } else { Edge { from: b, to: a } };
            edges.push(edge);
        }
    }
    Graph { nodes: n as usize, edges }
}

/// A random k-regular graph; `k < n` and `n·k` even were checked.
fn k_regular(k: usize, n: usize, rng: &mut impl Rng) -> Graph {
    if k == 0 {
        return Graph::empty(n);
    }
    if 2 * k > n - 1 {
        // Dense: the complement is sparse and pairs easily.
        let sparse = k_regular_sparse(n - 1 - k, n, rng);
        return complement(&sparse, rng);
    }
    k_regular_sparse(k, n, rng)
}

fn k_regular_sparse(k: usize, n: usize, rng: &mut impl Rng) -> Graph {
    if k == 0 {
        return Graph::empty(n);
    }
    for _ in 0..K_REGULAR_ATTEMPTS {
        if let Some(edges) = pair_stubs(k, n, rng) {
            return Graph { nodes: n, edges };
        }
    }
    circulant(k, n, rng)
}

/// One pairing attempt (Steger & Wormald): repeatedly join two random free
/// stubs of different, not yet linked nodes. `None` if it gets stuck.
fn pair_stubs(k: usize, n: usize, rng: &mut impl Rng) -> Option<Vec<Edge>> {
    let mut stubs: Vec<u32> = (0..n as u32).flat_map(|v| std::iter::repeat_n(v, k)).collect();
    let mut adj: Vec<Vec<u32>> = vec![Vec::with_capacity(k); n];
    let mut edges = Vec::with_capacity(n * k / 2);
    let suitable = |adj: &[Vec<u32>], u: u32, v: u32| u != v && !adj[u as usize].contains(&v);
    while !stubs.is_empty() {
        let len = stubs.len();
        let mut pick = None;
        for _ in 0..PAIR_TRIES {
            let a = rng.gen_range(0..len);
            let b = rng.gen_range(0..len);
            if suitable(&adj, stubs[a], stubs[b]) {
                pick = Some((a, b));
                break;
            }
        }
        let (a, b) = match pick {
            Some(pair) => pair,
            None => {
                // Few stubs left (or bad luck): look at every pair of nodes
                // that still have stubs, and give up if none can be joined.
                let mut nodes = stubs.clone();
                nodes.sort_unstable();
                nodes.dedup();
                let mut options = Vec::new();
                for (x, &u) in nodes.iter().enumerate() {
                    for &v in &nodes[x + 1..] {
                        if suitable(&adj, u, v) {
                            options.push((u, v));
                        }
                    }
                }
                if options.is_empty() {
                    return None;
                }
                let (u, v) = options[rng.gen_range(0..options.len())];
                let a = stubs.iter().position(|&s| s == u)?;
                let b = stubs.iter().position(|&s| s == v)?;
                if rng.r#gen::<bool>() { (a, b) } else { (b, a) }
            }
        };
        let (u, v) = (stubs[a], stubs[b]);
        adj[u as usize].push(v);
        adj[v as usize].push(u);
        edges.push(Edge { from: u, to: v });
        // Remove the higher position first so the lower one stays valid.
        stubs.swap_remove(a.max(b));
        stubs.swap_remove(a.min(b));
    }
    Some(edges)
}

/// Deterministic fallback: the circulant graph joining each node to the
/// `k/2` next ones around a cycle (plus the opposite node when `k` is odd,
/// which needs `n` even), laid over a random order of the nodes.
fn circulant(k: usize, n: usize, rng: &mut impl Rng) -> Graph {
    let mut order: Vec<u32> = (0..n as u32).collect();
    order.shuffle(rng);
    let mut edges = Vec::with_capacity(n * k / 2);
    for i in 0..n {
        for d in 1..=k / 2 {
            edges.push(Edge { from: order[i], to: order[(i + d) % n] });
        }
    }
    if k % 2 == 1 {
        for i in 0..n / 2 {
            edges.push(Edge { from: order[i], to: order[i + n / 2] });
        }
    }
    Graph { nodes: n, edges }
}

/// The graph linking exactly the pairs `graph` does not; each link's
/// direction is a fair coin.
fn complement(graph: &Graph, rng: &mut impl Rng) -> Graph {
    let n = graph.nodes;
    let adj = graph.adjacency();
    let mut edges = Vec::new();
    for (i, neighbours) in adj.iter().enumerate() {
        let mut next = neighbours.iter().peekable();
        for j in (i + 1)..n {
            let j = j as u32;
            while next.peek().is_some_and(|&&x| x < j) {
                next.next();
            }
            if next.peek() == Some(&&j) {
                continue;
            }
            let a = i as u32;
            edges.push(if rng.r#gen::<bool>() { Edge { from: a, to: j } } else { Edge { from: j, to: a } });
        }
    }
    Graph { nodes: n, edges }
}

fn ring(n: usize) -> Graph {
    let edges = match n {
        0 | 1 => Vec::new(),
        2 => vec![Edge { from: 0, to: 1 }],
        _ => (0..n as u32).map(|i| Edge { from: i, to: (i + 1) % n as u32 }).collect(),
    };
    Graph { nodes: n, edges }
}

fn line(n: usize) -> Graph {
    let edges = (1..n as u32).map(|i| Edge { from: i - 1, to: i }).collect();
    Graph { nodes: n, edges }
}

fn star(center: u32, n: usize) -> Graph {
    let edges = (0..n as u32).filter(|&i| i != center).map(|i| Edge { from: i, to: center }).collect();
    Graph { nodes: n, edges }
}

fn full_mesh(n: usize) -> Graph {
    let n32 = n as u32;
    let mut edges = Vec::with_capacity(n * n.saturating_sub(1) / 2);
    for i in 0..n32 {
        for j in (i + 1)..n32 {
            edges.push(Edge { from: i, to: j });
        }
    }
    Graph { nodes: n, edges }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;
    use serde::de::IntoDeserializer;
    use serde::de::value::{Error as DeError, MapDeserializer};

    fn rng(seed: u64) -> ChaCha8Rng {
        ChaCha8Rng::seed_from_u64(seed)
    }

    fn gen_ok(spec: &TopologySpec, n: usize, seed: u64) -> Graph {
        let g = generate(spec, n, &mut rng(seed)).expect("valid spec");
        g.validate().expect("generated graph is simple");
        g
    }

    fn random(preset: &str) -> TopologySpec {
        TopologySpec::Random { degree: DegreeSpec::Preset(preset.into()) }
    }

    #[test]
    fn degree_presets_are_valid() {
        for name in DegreeDistribution::PRESETS {
            let t = DegreeDistribution::preset(name).expect("preset exists");
            t.validate().expect("preset valid");
            assert_eq!(DegreeSpec::Preset((*name).into()).resolve(), Ok(t));
        }
        assert!(DegreeDistribution::preset("nope").is_none());
        let d = DegreeDistribution::preset("dogecoin").expect("preset exists");
        assert_eq!(d.pmf(), vec![0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 1.0]);
        assert_eq!(d.mean(), 8.0);
        let b = DegreeDistribution::preset("bitcoin-2015").expect("preset exists");
        assert!((b.mean() - 8.645).abs() < 1e-9, "{}", b.mean());
    }

    #[test]
    fn sample_inverts_the_cdf() {
        // A table with a gap (degree 2 impossible) and known boundaries.
        let t = DegreeDistribution { cdf: vec![0.25, 0.25, 1.0] };
        let mut r = rng(3);
        let mut counts = [0usize; 4];
        for _ in 0..40_000 {
            counts[t.sample(&mut r) as usize] += 1;
        }
        assert_eq!(counts[0], 0);
        assert_eq!(counts[2], 0);
        let p1 = counts[1] as f64 / 40_000.0;
        assert!((p1 - 0.25).abs() < 0.01, "{p1}");
        // Unvalidated tables do not panic.
        assert_eq!(DegreeDistribution { cdf: vec![] }.sample(&mut r), 0);
        assert_eq!(DegreeDistribution { cdf: vec![0.0] }.sample(&mut r), 1);
    }

    #[test]
    fn degree_table_validation_names_the_problem() {
        let t = |cdf: Vec<f64>| DegreeDistribution { cdf }.validate();
        assert_eq!(t(vec![]), Err(TopologyError::EmptyDegreeTable));
        assert_eq!(t(vec![0.5, 1.2]), Err(TopologyError::DegreeTableValue { degree: 2, value: 1.2 }));
        assert!(matches!(t(vec![f64::NAN, 1.0]), Err(TopologyError::DegreeTableValue { degree: 1, .. })));
        assert_eq!(
            t(vec![0.5, 0.4, 1.0]),
            Err(TopologyError::DegreeTableDecreasing { degree: 2, value: 0.4, previous: 0.5 })
        );
        assert_eq!(t(vec![0.5, 0.9]), Err(TopologyError::DegreeTableEnd { last: 0.9 }));
        assert_eq!(t(vec![0.5, 1.0 - 1e-12]), Ok(()));
        let err = DegreeSpec::Preset("bitcoin".into()).resolve().expect_err("unknown");
        assert!(err.to_string().contains("litecoin"), "{err}");
        assert!(
            generate(
                &TopologySpec::Random { degree: DegreeSpec::Table(DegreeDistribution { cdf: vec![0.3] }) },
                10,
                &mut rng(0)
            )
            .is_err()
        );
    }

    /// The out-degree histogram of the generated graph follows the table's
    /// probabilities bucket by bucket (so an off-by-one in the sampler, which
    /// shifts the whole histogram, fails).
    #[test]
    fn random_out_degrees_follow_each_table() {
        let n = 20_000;
        for name in DegreeDistribution::PRESETS {
            let table = DegreeDistribution::preset(name).expect("preset exists");
            let pmf = table.pmf();
            let g = gen_ok(&random(name), n, 11);
            let mut hist = vec![0usize; pmf.len() + 2];
            for d in g.out_degrees() {
                hist[(d as usize).min(pmf.len() + 1)] += 1;
            }
            assert_eq!(hist[0], 0, "{name}: no node without outbound links");
            assert_eq!(hist[pmf.len() + 1], 0, "{name}: no degree above the table");
            for (k, &p) in pmf.iter().enumerate() {
                let got = hist[k + 1] as f64 / n as f64;
                assert!((got - p).abs() <= 0.01, "{name}: degree {} has share {got}, table says {p}", k + 1);
            }
            assert!(g.is_connected(), "{name}");
        }
    }

    #[test]
    fn random_on_tiny_networks_keeps_what_fits() {
        // 4 nodes, everyone wants 8: degrees are capped at 3 and the graph is
        // a full mesh of 6 links however it is drawn.
        for seed in 0..20 {
            let g = gen_ok(&random("dogecoin"), 4, seed);
            assert_eq!(g.edges.len(), 6);
            assert!(g.degrees().iter().all(|&d| d == 3));
        }
        assert_eq!(gen_ok(&random("litecoin"), 1, 0).edges.len(), 0);
        assert_eq!(gen_ok(&random("litecoin"), 0, 0), Graph::empty(0));
    }

    #[test]
    fn random_100k_nodes() {
        let n = 100_000;
        let start = std::time::Instant::now();
        let g = generate(&random("bitcoin-2015"), n, &mut rng(42)).expect("valid spec");
        let elapsed = start.elapsed();
        g.validate().expect("generated graph is simple");
        let mean = g.edges.len() as f64 / n as f64;
        assert!((mean - 8.645).abs() < 0.05, "{mean}");
        assert!(g.is_connected());
        eprintln!("random bitcoin-2015 n={n}: {} links in {elapsed:?}", g.edges.len());
    }

    #[test]
    fn fixed_shapes_are_exact() {
        let n = 10;
        let ring = gen_ok(&TopologySpec::Ring, n, 0);
        assert_eq!(ring.edges.len(), n);
        assert!(ring.degrees().iter().all(|&d| d == 2));
        assert!(ring.out_degrees().iter().all(|&d| d == 1));
        assert!(ring.is_connected());

        let line = gen_ok(&TopologySpec::Line, n, 0);
        assert_eq!(line.edges.len(), n - 1);
        let deg = line.degrees();
        assert_eq!((deg[0], deg[n - 1]), (1, 1));
        assert!(deg[1..n - 1].iter().all(|&d| d == 2));
        assert!(line.is_connected());

        let star = gen_ok(&TopologySpec::Star { center: 3 }, n, 0);
        assert_eq!(star.edges.len(), n - 1);
        let deg = star.degrees();
        assert_eq!(deg[3], (n - 1) as u32);
        assert!(deg.iter().enumerate().all(|(i, &d)| i == 3 || d == 1));
        assert_eq!(star.out_degrees()[3], 0);
        assert!(star.is_connected());

        let mesh = gen_ok(&TopologySpec::FullMesh, n, 0);
        assert_eq!(mesh.edges.len(), n * (n - 1) / 2);
        assert!(mesh.degrees().iter().all(|&d| d == (n - 1) as u32));
        let adj = mesh.adjacency();
        assert_eq!(adj[4], vec![0, 1, 2, 3, 5, 6, 7, 8, 9]);

        assert_eq!(gen_ok(&TopologySpec::Ring, 2, 0).edges.len(), 1);
        assert_eq!(gen_ok(&TopologySpec::Ring, 1, 0).edges.len(), 0);
        assert_eq!(gen_ok(&TopologySpec::Line, 1, 0).edges.len(), 0);
        assert_eq!(gen_ok(&TopologySpec::Star { center: 0 }, 1, 0).edges.len(), 0);
    }

    #[test]
    fn k_regular_every_degree_is_k() {
        for (n, k) in [(1000, 8), (999, 4), (100, 3), (10, 9), (10, 7), (11, 6), (2, 1)] {
            let g = gen_ok(&TopologySpec::KRegular { k }, n, 5);
            assert_eq!(g.edges.len(), n * k as usize / 2);
            assert!(g.degrees().iter().all(|&d| d == k), "n={n} k={k}");
        }
        // The circulant fallback is k-regular too, for even and odd k.
        for (n, k) in [(10, 4), (10, 5), (7, 2), (8, 7), (12, 1)] {
            let g = circulant(k, n, &mut rng(1));
            g.validate().expect("circulant is simple");
            assert!(g.degrees().iter().all(|&d| d as usize == k), "n={n} k={k}");
        }
    }

    #[test]
    fn erdos_renyi_average_degree() {
        let n = 5_000;
        for p in [0.002, 0.01, 0.1] {
            let g = gen_ok(&TopologySpec::ErdosRenyi { p }, n, 9);
            let mean = 2.0 * g.edges.len() as f64 / n as f64;
            let want = p * (n - 1) as f64;
            assert!((mean / want - 1.0).abs() < 0.03, "p={p}: {mean} vs {want}");
        }
        let none = gen_ok(&TopologySpec::ErdosRenyi { p: 0.0 }, 50, 1);
        assert!(none.edges.is_empty());
        assert!(!none.is_connected());
        let all = gen_ok(&TopologySpec::ErdosRenyi { p: 1.0 }, 50, 1);
        assert_eq!(all.edges.len(), 50 * 49 / 2);
    }

    #[test]
    fn same_seed_same_graph_other_seed_other_graph() {
        let specs =
            [random("bitcoin-2015"), TopologySpec::ErdosRenyi { p: 0.05 }, TopologySpec::KRegular { k: 6 }];
        for spec in &specs {
            let a = gen_ok(spec, 500, 1);
            assert_eq!(a, gen_ok(spec, 500, 1), "{spec:?}");
            assert_ne!(a, gen_ok(spec, 500, 2), "{spec:?}");
        }
    }

    #[test]
    fn parameter_errors_name_the_problem() {
        let mut r = rng(0);
        let err = generate(&TopologySpec::KRegular { k: 3 }, 7, &mut r).expect_err("odd");
        assert_eq!(err, TopologyError::OddDegreeSum { n: 7, k: 3 });
        assert!(err.to_string().contains("n = 7 and k = 3"), "{err}");
        assert_eq!(
            generate(&TopologySpec::KRegular { k: 7 }, 7, &mut r),
            Err(TopologyError::DegreeTooLarge { k: 7, n: 7 })
        );
        assert_eq!(
            generate(&TopologySpec::ErdosRenyi { p: 1.5 }, 7, &mut r),
            Err(TopologyError::Probability { p: 1.5 })
        );
        assert!(matches!(
            generate(&TopologySpec::ErdosRenyi { p: f64::NAN }, 7, &mut r),
            Err(TopologyError::Probability { .. })
        ));
        assert_eq!(
            generate(&TopologySpec::Star { center: 7 }, 7, &mut r),
            Err(TopologyError::StarCenter { center: 7, n: 7 })
        );
        assert_eq!(
            generate(&TopologySpec::FullMesh, 100_000, &mut r),
            Err(TopologyError::TooManyEdges { edges: 100_000 * 99_999 / 2 })
        );
    }

    #[test]
    fn explicit_checks_links() {
        let g = explicit(3, &[(0, 1), (2, 1)]).expect("valid");
        assert_eq!(g.out_degrees(), vec![1, 0, 1]);
        assert!(g.is_connected());
        assert_eq!(
            explicit(3, &[(0, 1), (1, 3)]),
            Err(TopologyError::NodeOutOfRange { link: 1, node: 3, n: 3 })
        );
        assert_eq!(explicit(3, &[(2, 2)]), Err(TopologyError::SelfLoop { link: 0, node: 2 }));
        assert_eq!(
            explicit(4, &[(0, 1), (2, 3), (3, 2), (1, 0)]),
            Err(TopologyError::DuplicateLink { link: 2, first: 1, a: 3, b: 2 })
        );
        assert!(!explicit(4, &[(0, 1), (2, 3)]).expect("valid").is_connected());
    }

    fn from_map(pairs: &[(&'static str, &'static str)]) -> Result<TopologySpec, DeError> {
        TopologySpec::deserialize(MapDeserializer::new(pairs.iter().copied()))
    }

    #[test]
    fn spec_deserializes_by_kind() {
        assert_eq!(from_map(&[("kind", "ring")]), Ok(TopologySpec::Ring));
        assert_eq!(from_map(&[("kind", "full-mesh")]), Ok(TopologySpec::FullMesh));
        assert_eq!(from_map(&[("kind", "star")]), Ok(TopologySpec::Star { center: 0 }));
        assert_eq!(from_map(&[("kind", "random"), ("degree", "litecoin")]), Ok(random("litecoin")));
        assert!(from_map(&[("kind", "torus")]).is_err());
        assert!(from_map(&[("kind", "ring"), ("k", "3")]).is_err());
        assert!(from_map(&[("kind", "full-mesh"), ("p", "1")]).is_err());
        assert!(from_map(&[("kind", "random"), ("degree", "litecoin"), ("x", "1")]).is_err());
        let d: Result<DegreeSpec, DeError> = DegreeSpec::deserialize("dogecoin".into_deserializer());
        assert_eq!(d, Ok(DegreeSpec::Preset("dogecoin".into())));
    }

    fn any_spec(n: usize) -> impl Strategy<Value = TopologySpec> {
        let center = if n == 0 { 0..1u32 } else { 0..n as u32 };
        let k_max = n.max(1) as u32;
        prop_oneof![
            prop::sample::select(DegreeDistribution::PRESETS).prop_map(random),
            (0.0..=1.0f64).prop_map(|p| TopologySpec::ErdosRenyi { p }),
            (0..k_max).prop_map(move |k| TopologySpec::KRegular {
                k: if (n as u32 * k) % 2 == 1 { k - 1 } else { k },
            }),
            Just(TopologySpec::Ring),
            Just(TopologySpec::Line),
            center.prop_map(|center| TopologySpec::Star { center }),
            Just(TopologySpec::FullMesh),
        ]
    }

    proptest! {
        #[test]
        fn generated_graphs_are_simple_and_deterministic(
            (n, spec) in (1usize..40).prop_flat_map(|n| (Just(n), any_spec(n))),
            seed in any::<u64>(),
        ) {
            let g = generate(&spec, n, &mut rng(seed)).expect("valid spec");
            prop_assert_eq!(g.validate(), Ok(()));
            prop_assert_eq!(g.nodes, n);
            let adj = g.adjacency();
            for (i, list) in adj.iter().enumerate() {
                prop_assert!(list.windows(2).all(|w| w[0] < w[1]));
                prop_assert!(!list.contains(&(i as u32)));
            }
            if let TopologySpec::KRegular { k } = spec {
                prop_assert!(g.degrees().iter().all(|&d| d == k));
            }
            prop_assert_eq!(&g, &generate(&spec, n, &mut rng(seed)).expect("valid spec"));
        }
    }
}
