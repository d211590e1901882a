//! The validated scenario: every field resolved, every default filled in.
//! It serializes back to TOML as the run's `scenario.resolved.toml`, which
//! loads again to the same scenario.

use std::collections::BTreeMap;
use std::time::Duration;

use fika_btc::ChainParams;
use fika_btc::node::RelayConfig;
use fika_gossip::GossipConfig;
use fika_sim::NetworkModel;
use fika_sim::topology::TopologySpec;
use serde::Serialize;

use crate::check::dur;

/// Which protocol family runs on the nodes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum ProtocolKind {
    /// The generic announce → request → deliver flood.
    Gossip,
    /// The Bitcoin-like chain: full nodes, miners, wallets.
    Bitcoin,
    /// Bitcoin, the merge-mined sidechain and the PowPeg between them.
    Powpeg,
}

impl ProtocolKind {
    /// Every protocol name, for error messages.
    pub const NAMES: &'static [&'static str] = &["gossip", "bitcoin", "powpeg"];

    /// The roles nodes of this protocol may take.
    pub fn roles(self) -> &'static [&'static str] {
        match self {
            ProtocolKind::Gossip => &["node"],
            ProtocolKind::Bitcoin => &["full", "server", "miner", "wallet", "client"],
            ProtocolKind::Powpeg => &["full", "miner", "side", "pegnatory", "user"],
        }
    }
}

/// A whole scenario.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Scenario {
    /// Short name, used in output file names.
    pub name: String,
    /// What the scenario shows.
    pub description: String,
    /// The run seed; every random choice derives from it.
    pub seed: u64,
    /// Virtual time to simulate.
    #[serde(with = "dur")]
    pub duration: Duration,
    /// The protocol family.
    pub protocol: ProtocolKind,
    /// Latency, bandwidth, loss and regions.
    pub network: NetworkSpec,
    /// How nodes are linked.
    pub topology: Topology,
    /// Node groups in id order.
    pub nodes: Vec<NodeGroup>,
    /// Parameters of the gossip protocol and its flood workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gossip: Option<GossipSpec>,
    /// The Bitcoin-like chain, its relay and its workload.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bitcoin: Option<BitcoinSpec>,
    /// The sidechain and the peg.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub powpeg: Option<PowpegSpec>,
    /// Scheduled faults.
    pub faults: Vec<FaultSpec>,
    /// What to write.
    pub output: OutputSpec,
}

/// The network section.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NetworkSpec {
    /// The link model.
    #[serde(flatten)]
    pub model: NetworkModel,
    /// Share of nodes per region (same order as the region table); empty
    /// when there is no region table.
    pub region_shares: Vec<f64>,
}

/// The topology section.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(untagged)]
pub enum Topology {
    /// A generated graph.
    Generated(TopologySpec),
    /// Links listed by node name.
    Explicit {
        /// Always `"explicit"`.
        kind: String,
        /// Pairs of node names.
        links: Vec<(String, String)>,
    },
}

/// A group of nodes with one role.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct NodeGroup {
    /// The role, one of the protocol's roles.
    pub role: String,
    /// How many nodes.
    pub count: u32,
    /// The exact name (count 1) or the name prefix (`name1`, `name2`, …).
    pub name: String,
    /// Pin every node of the group to this region.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Mining power of each node, relative to the other miners (bitcoin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub hashrate: Option<Hashrate>,
    /// Stake of each validator, relative to the others, under proof of
    /// stake (`bitcoin.consensus.kind = "pos"`; miners default to 1).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stake: Option<f64>,
    /// Initial coins of each wallet, in BTC (bitcoin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub balance: Option<f64>,
    /// How many full nodes each wallet connects to, with a generated topology (bitcoin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub servers: Option<u32>,
    /// Links each node opens beyond the generated topology, to random
    /// relaying nodes: pools and relay networks are well connected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub extra_links: Option<u32>,
    /// Pegnatories of the group refuse to sign peg-outs (powpeg).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub censor: Option<bool>,
    /// Strategy of the group's nodes (bitcoin): `"honest"` (the default),
    /// `"selfish"` (Eyal & Sirer's withholding attack), `"double-spend"`,
    /// `"majority"` (a deep reorg), `"eclipse"` or `"censor"`; see
    /// [`STRATEGIES`] and `fika_btc::attack`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub strategy: Option<String>,
    /// The strategy's parameters.
    #[serde(flatten)]
    pub attack: AttackParams,
}

/// The strategies a node group may follow.
pub const STRATEGIES: &[&str] = &["honest", "selfish", "double-spend", "majority", "eclipse", "censor"];

/// Parameters of a node group's attack strategy (each only valid with the
/// strategies named; the loader fills in the defaults of the group's own).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct AttackParams {
    /// `selfish`: the share of honest hashrate that mines on the pool's
    /// block in a race (honest nodes side with it with this probability);
    /// unset, it follows from the network.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gamma: Option<f64>,
    /// `double-spend`, `majority`, `eclipse`: when the attack starts.
    #[serde(serialize_with = "dur::serialize_opt", skip_serializing_if = "Option::is_none")]
    pub start: Option<Duration>,
    /// `double-spend`: the wallet paid.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub merchant: Option<String>,
    /// `double-spend`: the payment, BTC (from the group's `balance`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub amount: Option<f64>,
    /// `double-spend`: confirmations the merchant waits for (z).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub confirmations: Option<u32>,
    /// `double-spend`, `majority`: blocks behind at which the attacker gives up (0: never).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub give_up: Option<u32>,
    /// `majority`: honest blocks the released chain replaces (D).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub depth: Option<u32>,
    /// `eclipse`: the nodes whose every link the group holds.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub victims: Option<Vec<String>>,
    /// `censor`: wallets (node or group names) whose transactions the group's blocks leave out.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub censored: Option<Vec<String>>,
}

impl NodeGroup {
    /// Whether the group's nodes are light wallets (not part of the relay graph).
    pub fn is_light(&self) -> bool {
        matches!(self.role.as_str(), "wallet" | "client" | "user")
    }

    /// Whether the group's nodes relay Bitcoin blocks (PowPeg layering).
    pub fn in_btc_layer(&self) -> bool {
        matches!(self.role.as_str(), "full" | "server" | "miner")
    }

    /// Whether the group's nodes relay sidechain blocks (PowPeg layering).
    pub fn in_side_layer(&self) -> bool {
        matches!(self.role.as_str(), "side" | "miner" | "pegnatory")
    }
}

/// The PowPeg section: the peg's rules, the sidechain, the users.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PowpegSpec {
    /// The peg preset the parameters started from.
    pub preset: String,
    /// Every peg parameter.
    pub params: fika_peg::PegParams,
    /// Mean time between sidechain blocks.
    #[serde(with = "dur")]
    pub side_block_interval: Duration,
    /// Users paying the federation.
    pub pegin: PeginWorkload,
    /// Users pegging out (`[powpeg.pegout]`), if any.
    pub pegout: Option<PegoutWorkloadSpec>,
    /// How often a pegnatory feeds its PowHSM sidechain headers.
    #[serde(with = "dur")]
    pub hsm_interval: Duration,
    /// Sidechain blocks (of the chain's difficulty) of cumulative work a
    /// PowHSM's best block needs on top: its minimum cumulative difficulty
    /// is this times the sidechain block difficulty.
    pub hsm_confirmations: u64,
    /// Headers per `advanceBlockchain` invocation.
    pub hsm_batch: u32,
    /// A federation change voted during the run (`[powpeg.federation_change]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub federation_change: Option<FederationChangeSpec>,
    /// A private-fork attack on the sidechain (`[powpeg.attack]`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub attack: Option<ForkAttackSpec>,
    /// Sidechain accounts funded in the genesis block
    /// (`[powpeg.side_accounts]`: `"0x…" = RBTC`), e.g. for transactions
    /// sent over an emulated node's JSON-RPC.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    pub side_accounts: BTreeMap<String, f64>,
}

/// A federation change: pegnatories in `join` start outside the federation;
/// from `at` the initial members (the federation-change authorisers) vote
/// for the federation of the initial members less `leave` plus `join`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FederationChangeSpec {
    /// When voting starts.
    #[serde(with = "dur")]
    pub at: Duration,
    /// Pegnatories (node names) joining.
    pub join: Vec<String>,
    /// Pegnatories (node names) leaving.
    pub leave: Vec<String>,
}

/// A private-fork attack on the sidechain by one node: a pool (`role =
/// "miner"`) withholds its sidechain blocks from `start` and publishes them
/// at `publish`; a pegnatory's host forks at `start`, requests a peg-out
/// only its fork holds, mines its fork at `rate` times the network's block
/// rate and asks its PowHSM to sign the fork's release.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ForkAttackSpec {
    /// The attacking node's name.
    pub node: String,
    /// When it forks.
    #[serde(with = "dur")]
    pub start: Duration,
    /// When a pool publishes its fork, if ever.
    #[serde(serialize_with = "dur::serialize_opt", skip_serializing_if = "Option::is_none")]
    pub publish: Option<Duration>,
    /// A pegnatory attacker's block rate, relative to the network's.
    pub rate: f64,
    /// The peg-out a pegnatory attacker requests on its fork, in BTC.
    pub pegout: f64,
}

/// Users pegging out: a value transfer of part of their RBTC to the Bridge.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PegoutWorkloadSpec {
    /// Mean time between a user's peg-out attempts (exponential).
    #[serde(with = "dur")]
    pub interval: Duration,
    /// When users start.
    #[serde(with = "dur")]
    pub start: Duration,
    /// Each amount is this fraction of the RBTC balance, uniform in the range.
    pub amount_fraction: [f64; 2],
}

/// Users pegging in.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeginWorkload {
    /// Mean time between a user's peg-ins (exponential).
    #[serde(with = "dur")]
    pub interval: Duration,
    /// When users start.
    #[serde(with = "dur")]
    pub start: Duration,
    /// Each amount is this fraction of the user's spendable balance, uniform in the range.
    pub amount_fraction: [f64; 2],
    /// Fee rate, sat/vB.
    pub fee_rate: [f64; 2],
}

/// A miner's relative hashrate: fixed, or drawn per node.
#[derive(Clone, Debug, PartialEq, Serialize, serde::Deserialize)]
#[serde(untagged, deny_unknown_fields)]
pub enum Hashrate {
    /// The same for every node of the group.
    Fixed(f64),
    /// Normal with this mean and standard deviation, clamped at zero (SimBlock: 400,000 ± 100,000).
    Normal {
        /// `[mean, standard deviation]`.
        normal: [f64; 2],
    },
}

impl Hashrate {
    /// The weight of node `index` of a run with `seed`: the fixed value, or
    /// a draw from the normal (Box–Muller on the node's own stream),
    /// clamped at zero.
    pub fn weight(&self, seed: u64, index: usize) -> f64 {
        use rand::Rng;
        match self {
            Hashrate::Fixed(h) => *h,
            Hashrate::Normal { normal: [m, sd] } => {
                let mut rng = fika_core::derive_rng(seed, "hashrate", index as u64);
                let u1: f64 = 1.0 - rng.r#gen::<f64>();
                let u2: f64 = rng.r#gen::<f64>();
                (m + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()).max(0.0)
            }
        }
    }
}

/// The Bitcoin section.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct BitcoinSpec {
    /// The chain preset the parameters started from.
    pub chain: String,
    /// Every chain parameter.
    pub params: ChainParams,
    /// Relay and node parameters.
    pub relay: RelayConfig,
    /// Automatic payments between wallets.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub workload: Option<PaymentWorkload>,
    /// Payments at given times.
    pub payments: Vec<ScriptedPayment>,
    /// Who may produce blocks: proof of work (the default) or of stake.
    pub consensus: ConsensusSpec,
}

/// The consensus variant of a Bitcoin-like chain (see `fika_btc::consensus`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum ConsensusSpec {
    /// Proof of work: miners' `hashrate`.
    #[default]
    Pow,
    /// Proof of stake: stake-weighted leaders of fixed slots; validators'
    /// `stake`.
    Pos {
        /// Slot length, seconds.
        slot_secs: u32,
    },
}

/// Wallets paying each other at random.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PaymentWorkload {
    /// Mean time between payments of one wallet (exponential).
    #[serde(with = "dur")]
    pub interval: Duration,
    /// When wallets start paying.
    #[serde(with = "dur")]
    pub start: Duration,
    /// Each amount is a uniform fraction of the spendable balance in this range.
    pub amount_fraction: [f64; 2],
    /// Fee rate, sat/vB, uniform in this range.
    pub fee_rate: [f64; 2],
}

/// One payment at a given time.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ScriptedPayment {
    /// When.
    #[serde(with = "dur")]
    pub at: Duration,
    /// The paying wallet.
    pub from: String,
    /// The paid wallet.
    pub to: String,
    /// Amount in BTC.
    pub amount: f64,
    /// Absolute fee in BTC (the thesis pays 1 coin).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee: Option<f64>,
    /// Fee rate in sat/vB, if no absolute fee.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fee_rate: Option<f64>,
}

impl NodeGroup {
    /// The name of the `i`-th node of the group (from 0).
    pub fn node_name(&self, i: u32) -> String {
        if self.count == 1 { self.name.clone() } else { format!("{}{}", self.name, i + 1) }
    }
}

/// The gossip protocol's parameters and workload.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GossipSpec {
    /// Protocol parameters.
    #[serde(flatten)]
    pub config: GossipConfig,
    /// How many items are flooded.
    pub floods: u32,
    /// Size of each item in bytes.
    pub size_bytes: u32,
    /// Time of the first flood.
    #[serde(with = "dur")]
    pub start: Duration,
    /// Time between floods.
    #[serde(with = "dur")]
    pub interval: Duration,
}

/// Which nodes a fault hits.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Target {
    /// These nodes, by name.
    Nodes(Vec<String>),
    /// This many nodes chosen from the seed.
    Random(u32),
}

/// A scheduled fault.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FaultSpec {
    /// When it happens.
    #[serde(with = "dur")]
    pub at: Duration,
    /// What happens.
    #[serde(flatten)]
    pub action: FaultKind,
}

/// What a fault does.
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum FaultKind {
    /// Crash nodes, optionally restarting them after a while.
    Crash {
        /// Which nodes.
        #[serde(flatten)]
        target: Target,
        /// Restart after this long, if set.
        #[serde(serialize_with = "dur::serialize_opt", skip_serializing_if = "Option::is_none")]
        restart_after: Option<Duration>,
    },
    /// Restart crashed nodes.
    Restart {
        /// Which nodes.
        #[serde(flatten)]
        target: Target,
    },
    /// Cut the network into islands.
    Partition {
        /// Each list an island; nodes in none stay together.
        groups: Vec<Vec<String>>,
    },
    /// Remove every partition.
    Heal,
    /// Change one link.
    Link {
        /// One end.
        a: String,
        /// The other end.
        b: String,
        /// New constant latency.
        #[serde(skip_serializing_if = "Option::is_none")]
        latency_ms: Option<f64>,
        /// New loss probability.
        #[serde(skip_serializing_if = "Option::is_none")]
        loss: Option<f64>,
    },
    /// Change the loss probability of all links.
    Loss {
        /// The probability.
        loss: f64,
    },
}

/// What a run writes.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct OutputSpec {
    /// Write `events.jsonl`.
    pub events: bool,
    /// Event kinds to leave out of `events.jsonl` (e.g. `["gossip.have"]`).
    pub exclude: Vec<String>,
}
