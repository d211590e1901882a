//! From a scenario to the pieces a runtime needs: node names and roles,
//! regions, the link graph and the fault schedule with every random choice
//! resolved from the seed.

use fika_core::{NodeId, SimTime, derive_rng};
use fika_sim::regions::assign_regions;
use fika_sim::topology::{self, Graph};
use fika_sim::{Fault, FaultAction};
use rand::seq::SliceRandom;

use crate::scenario::{FaultKind, Scenario, Target, Topology};

/// A network ready to be populated with nodes.
#[derive(Clone, Debug)]
pub struct Layout {
    /// Node names, index = node id.
    pub names: Vec<String>,
    /// Index into `Scenario::nodes` of each node's group.
    pub group: Vec<usize>,
    /// Region index of each node (0 without a region table).
    pub region: Vec<u8>,
    /// The link graph.
    pub graph: Graph,
    /// The fault schedule, sorted by time.
    pub faults: Vec<Fault>,
}

/// Why a layout could not be built.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// The topology generator refused its parameters.
    #[error("topology: {0}")]
    Topology(String),
    /// Region assignment failed.
    #[error("network.region_shares: {0}")]
    Regions(String),
}

impl Layout {
    /// The id of the node called `name`.
    pub fn id_of(&self, name: &str) -> Option<NodeId> {
        self.names.iter().position(|n| n == name).map(|i| NodeId(i as u32))
    }

    /// Ids of the nodes of group `g`.
    pub fn members(&self, g: usize) -> impl Iterator<Item = NodeId> + '_ {
        self.group.iter().enumerate().filter(move |(_, x)| **x == g).map(|(i, _)| NodeId(i as u32))
    }
}

/// Builds the layout of `s`. Deterministic in `s.seed`.
pub fn layout(s: &Scenario) -> Result<Layout, BuildError> {
    let mut names = Vec::new();
    let mut group = Vec::new();
    for (gi, g) in s.nodes.iter().enumerate() {
        for i in 0..g.count {
            names.push(g.node_name(i));
            group.push(gi);
        }
    }
    let n = names.len();
    let region = match &s.network.model.regions {
        Some(table) if !s.network.region_shares.is_empty() => {
            let mut rng = derive_rng(s.seed, "regions", 0);
            let mut r = assign_regions(&s.network.region_shares, n, &mut rng)
                .map_err(|e| BuildError::Regions(e.to_string()))?;
            for (i, gi) in group.iter().enumerate() {
                if let Some(idx) = s.nodes[*gi].region.as_deref().and_then(|name| table.index_of(name)) {
                    r[i] = idx as u8;
                }
            }
            r
        }
        _ => vec![0; n],
    };
    let mut rng = derive_rng(s.seed, "topology", 0);
    let mut graph = match &s.topology {
        Topology::Generated(spec) => {
            // Light wallets are not part of the relay graph: the generator
            // links the other nodes, then each wallet opens `servers` links
            // to random ones of them.
            let light: Vec<bool> = group.iter().map(|g| s.nodes[*g].is_light()).collect();
            let powpeg = s.protocol == crate::ProtocolKind::Powpeg;
            // The relay graph, generated per protocol layer: a PowPeg network
            // has a Bitcoin layer and a sidechain layer (pools are in both).
            let layers: Vec<Vec<u32>> = if powpeg {
                vec![
                    (0..n as u32).filter(|i| s.nodes[group[*i as usize]].in_btc_layer()).collect(),
                    (0..n as u32).filter(|i| s.nodes[group[*i as usize]].in_side_layer()).collect(),
                ]
            } else {
                vec![(0..n as u32).filter(|i| !light[*i as usize]).collect()]
            };
            let mut edges: Vec<topology::Edge> = Vec::new();
            let mut seen: std::collections::BTreeSet<(u32, u32)> = std::collections::BTreeSet::new();
            for layer in &layers {
                let inner = topology::generate(spec, layer.len(), &mut rng)
                    .map_err(|e| BuildError::Topology(e.to_string()))?;
                for e in &inner.edges {
                    let (a, b) = (layer[e.from as usize], layer[e.to as usize]);
                    if seen.insert((a.min(b), a.max(b))) {
                        edges.push(topology::Edge { from: a, to: b });
                    }
                }
            }
            let relay: Vec<u32> = layers[0].clone();
            // Pegnatories watch Bitcoin through `servers` Bitcoin nodes.
            if powpeg {
                for (i, g) in group.iter().enumerate() {
                    if s.nodes[*g].role != "pegnatory" || relay.is_empty() {
                        continue;
                    }
                    let k = (s.nodes[*g].servers.unwrap_or(1) as usize).clamp(1, relay.len());
                    for to in relay.choose_multiple(&mut rng, k).copied().collect::<Vec<_>>() {
                        if seen.insert(((i as u32).min(to), (i as u32).max(to))) {
                            edges.push(topology::Edge { from: i as u32, to });
                        }
                    }
                }
                // Users are also sidechain light clients of `servers`
                // sidechain nodes (plain sidechain nodes if there are any).
                let plain: Vec<u32> =
                    (0..n as u32).filter(|i| s.nodes[group[*i as usize]].role == "side").collect();
                let servers = if plain.is_empty() { layers[1].clone() } else { plain };
                // Only when users peg out or must learn a new federation
                // address, from their own stream: other peg-in-only
                // scenarios keep their topology.
                let pegout =
                    s.powpeg.as_ref().is_some_and(|p| p.pegout.is_some() || p.federation_change.is_some());
                let mut side_rng = derive_rng(s.seed, "user-side-links", 0);
                for (i, g) in group.iter().enumerate() {
                    if !pegout || s.nodes[*g].role != "user" || servers.is_empty() {
                        continue;
                    }
                    let k = (s.nodes[*g].servers.unwrap_or(1) as usize).clamp(1, servers.len());
                    for to in servers.choose_multiple(&mut side_rng, k).copied().collect::<Vec<_>>() {
                        if seen.insert(((i as u32).min(to), (i as u32).max(to))) {
                            edges.push(topology::Edge { from: i as u32, to });
                        }
                    }
                }
            }
            // Well-connected groups open extra links to random relaying nodes.
            let mut linked: std::collections::BTreeSet<(u32, u32)> =
                edges.iter().map(|e| (e.from.min(e.to), e.from.max(e.to))).collect();
            for (i, g) in group.iter().enumerate() {
                let extra = s.nodes[*g].extra_links.unwrap_or(0) as usize;
                if light[i] || extra == 0 {
                    continue;
                }
                let me = i as u32;
                let candidates: Vec<u32> = relay.iter().copied().filter(|r| *r != me).collect();
                let mut added = 0;
                for to in candidates.choose_multiple(&mut rng, candidates.len().min(extra * 4 + 8)) {
                    if added == extra {
                        break;
                    }
                    if linked.insert((me.min(*to), me.max(*to))) {
                        edges.push(topology::Edge { from: me, to: *to });
                        added += 1;
                    }
                }
            }
            for (i, g) in group.iter().enumerate() {
                if !light[i] || relay.is_empty() {
                    continue;
                }
                let k = (s.nodes[*g].servers.unwrap_or(1) as usize).clamp(1, relay.len());
                let picks: Vec<u32> = relay.choose_multiple(&mut rng, k).copied().collect();
                edges.extend(picks.into_iter().map(|to| topology::Edge { from: i as u32, to }));
            }
            Graph { nodes: n, edges }
        }
        Topology::Explicit { links, .. } => {
            let idx = |name: &str| names.iter().position(|x| x == name).map(|i| i as u32);
            let pairs: Vec<(u32, u32)> = links.iter().filter_map(|(a, b)| Some((idx(a)?, idx(b)?))).collect();
            topology::explicit(n, &pairs).map_err(|e| BuildError::Topology(e.to_string()))?
        }
    };
    eclipse(s, &names, &group, &mut graph);
    let mut layout = Layout { names, group, region, graph, faults: Vec::new() };
    layout.faults = faults(s, &layout);
    Ok(layout)
}

/// Eclipse attackers hold every link of their victims: a victim keeps its
/// links to light wallets and is linked to each of its attackers, to no
/// other relaying node.
fn eclipse(s: &Scenario, names: &[String], group: &[usize], graph: &mut Graph) {
    let mut attackers: std::collections::BTreeMap<u32, Vec<u32>> = std::collections::BTreeMap::new();
    for (i, g) in group.iter().enumerate() {
        let grp = &s.nodes[*g];
        if grp.strategy.as_deref() != Some("eclipse") {
            continue;
        }
        for v in grp.attack.victims.iter().flatten() {
            if let Some(vi) = names.iter().position(|n| n == v) {
                attackers.entry(vi as u32).or_default().push(i as u32);
            }
        }
    }
    if attackers.is_empty() {
        return;
    }
    let light = |i: u32| s.nodes[group[i as usize]].is_light();
    let held = |v: u32, other: u32| attackers.contains_key(&v) && !light(other);
    graph.edges.retain(|e| !held(e.from, e.to) && !held(e.to, e.from));
    for (v, atts) in &attackers {
        for a in atts {
            graph.edges.push(topology::Edge { from: *a, to: *v });
        }
    }
}

fn faults(s: &Scenario, layout: &Layout) -> Vec<Fault> {
    let mut out = Vec::new();
    let ids = |names: &[String]| -> Vec<NodeId> { names.iter().filter_map(|n| layout.id_of(n)).collect() };
    for (i, f) in s.faults.iter().enumerate() {
        let at = SimTime::ZERO + f.at;
        let mut rng = derive_rng(s.seed, "faults", i as u64);
        let mut pick = |t: &Target| -> Vec<NodeId> {
            match t {
                Target::Nodes(names) => ids(names),
                Target::Random(k) => {
                    let all: Vec<NodeId> = (0..layout.names.len() as u32).map(NodeId).collect();
                    let mut chosen: Vec<NodeId> =
                        all.choose_multiple(&mut rng, *k as usize).copied().collect();
                    chosen.sort();
                    chosen
                }
            }
        };
        match &f.action {
            FaultKind::Crash { target, restart_after } => {
                for id in pick(target) {
                    out.push(Fault { at, action: FaultAction::Crash(id) });
                    if let Some(d) = restart_after {
                        out.push(Fault { at: at + *d, action: FaultAction::Restart(id) });
                    }
                }
            }
            FaultKind::Restart { target } => {
                for id in pick(target) {
                    out.push(Fault { at, action: FaultAction::Restart(id) });
                }
            }
            FaultKind::Partition { groups } => {
                out.push(Fault {
                    at,
                    action: FaultAction::Partition(groups.iter().map(|g| ids(g)).collect()),
                });
            }
            FaultKind::Heal => out.push(Fault { at, action: FaultAction::Heal }),
            FaultKind::Link { a, b, latency_ms, loss } => {
                if let (Some(a), Some(b)) = (layout.id_of(a), layout.id_of(b)) {
                    out.push(Fault {
                        at,
                        action: FaultAction::SetLink { a, b, latency_ms: *latency_ms, loss: *loss },
                    });
                }
            }
            FaultKind::Loss { loss } => out.push(Fault { at, action: FaultAction::SetLoss(*loss) }),
        }
    }
    // Stable: equal times keep the file's order.
    out.sort_by_key(|f| f.at);
    out
}
