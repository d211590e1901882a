//! Reading a scenario file: TOML syntax, presets, then every field checked,
//! with all errors reported together, each with its path and expectation.

use std::collections::BTreeMap;
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use fika_gossip::GossipConfig;
use fika_sim::regions::{RegionTable, region_shares_preset};
use fika_sim::topology::TopologySpec;
use fika_sim::{BandwidthModel, LatencyModel, NetworkModel};
use toml::{Table, Value};

use crate::check::{Errors, FieldError, Section, parse};
use crate::presets;
use crate::scenario::*;

/// Why a scenario could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ScenarioError {
    /// The file could not be read.
    #[error("cannot read {file}: {source}")]
    Io {
        /// The file.
        file: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("{file}: not valid TOML: {message}")]
    Syntax {
        /// The file.
        file: String,
        /// The parser's message, with line and column.
        message: String,
    },
    /// Fields are missing, unknown or wrong.
    #[error("{file}: {} error(s):\n{}", errors.len(), errors.iter().map(|e| format!("  - {e}")).collect::<Vec<_>>().join("\n"))]
    Invalid {
        /// The file.
        file: String,
        /// Every problem found.
        errors: Vec<FieldError>,
    },
}

impl ScenarioError {
    /// The field errors, if this is a validation failure.
    pub fn field_errors(&self) -> &[FieldError] {
        match self {
            ScenarioError::Invalid { errors, .. } => errors,
            _ => &[],
        }
    }
}

/// Reads and validates a scenario file.
pub fn load_file(path: &Path) -> Result<Scenario, ScenarioError> {
    let file = path.display().to_string();
    let text =
        std::fs::read_to_string(path).map_err(|source| ScenarioError::Io { file: file.clone(), source })?;
    load_str(&text, &file)
}

/// Validates scenario text; `file` names it in errors.
pub fn load_str(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
    let table: Table = toml::from_str(text).map_err(|e| ScenarioError::Syntax {
        file: file.to_owned(),
        message: e.to_string().trim_end().to_owned(),
    })?;
    let mut errs = Errors::default();
    let scenario = read_scenario(&table, &mut errs);
    match scenario {
        Some(s) if errs.0.is_empty() => Ok(s),
        _ => {
            if errs.0.is_empty() {
                errs.push("", "the scenario is incomplete");
            }
            Err(ScenarioError::Invalid { file: file.to_owned(), errors: errs.0 })
        }
    }
}

/// Serializes a scenario (with every default) back to TOML.
pub fn to_toml(s: &Scenario) -> String {
    toml::to_string_pretty(s).unwrap_or_else(|e| format!("# could not serialize the scenario: {e}\n"))
}

const TOP: &[&str] = &[
    "name",
    "description",
    "seed",
    "duration",
    "protocol",
    "network",
    "topology",
    "nodes",
    "gossip",
    "bitcoin",
    "powpeg",
    "faults",
    "output",
];

fn read_scenario(t: &Table, errs: &mut Errors) -> Option<Scenario> {
    let top = Section::new(t, "");
    top.deny_unknown(TOP, errs);
    let name: String = top.or("name", "scenario".to_owned(), errs);
    let description: String = top.or("description", String::new(), errs);
    let seed: u64 = top.or("seed", 1, errs);
    let duration = match top.raw("duration") {
        Some(_) => top.duration("duration", errs),
        None => {
            errs.push("duration", "missing field; expected the virtual time to simulate, e.g. \"1h\"");
            None
        }
    };
    let protocol = match top.req::<String>("protocol", "one of: gossip, bitcoin, powpeg", errs).as_deref() {
        Some("gossip") => Some(ProtocolKind::Gossip),
        Some("bitcoin") => Some(ProtocolKind::Bitcoin),
        Some("powpeg") => Some(ProtocolKind::Powpeg),
        Some(other) => {
            errs.push(
                "protocol",
                format!("unknown protocol \"{other}\"; expected one of: {}", ProtocolKind::NAMES.join(", ")),
            );
            None
        }
        None => None,
    };
    let empty = Table::new();
    let network = read_network(top.sub("network", errs).unwrap_or(Section::new(&empty, "network")), errs);
    let nodes = read_nodes(&top, protocol, network.as_ref(), errs);
    let names = node_names(&nodes, errs);
    check_attacks(&nodes, &names, errs);
    let topology = match top.sub("topology", errs) {
        Some(s) => read_topology(s, &names, errs),
        None => {
            errs.push("topology", "missing section; expected a [topology] table with a `kind`");
            None
        }
    };
    let gossip = match (protocol, top.sub("gossip", errs)) {
        (Some(ProtocolKind::Gossip), s) => read_gossip(s.unwrap_or(Section::new(&empty, "gossip")), errs),
        (_, Some(s)) => {
            errs.push(s.path.clone(), "only valid with protocol = \"gossip\"");
            None
        }
        _ => None,
    };
    let bitcoin = match (protocol, top.sub("bitcoin", errs)) {
        (Some(ProtocolKind::Bitcoin | ProtocolKind::Powpeg), s) => {
            read_bitcoin(s.unwrap_or(Section::new(&empty, "bitcoin")), &nodes, &names, errs)
        }
        (_, Some(s)) => {
            errs.push(s.path.clone(), "only valid with protocol = \"bitcoin\" or \"powpeg\"");
            None
        }
        _ => None,
    };
    let powpeg = match (protocol, top.sub("powpeg", errs)) {
        (Some(ProtocolKind::Powpeg), s) => {
            read_powpeg(s.unwrap_or(Section::new(&empty, "powpeg")), &nodes, errs)
        }
        (_, Some(s)) => {
            errs.push(s.path.clone(), "only valid with protocol = \"powpeg\"");
            None
        }
        _ => None,
    };
    let faults = read_faults(&top, &names, errs);
    let output = read_output(top.sub("output", errs).unwrap_or(Section::new(&empty, "output")), errs);
    Some(Scenario {
        name,
        description,
        seed,
        duration: duration?,
        protocol: protocol?,
        network: network?,
        topology: topology?,
        nodes,
        gossip,
        bitcoin,
        powpeg,
        faults,
        output,
    })
}

/// Applies `preset = "…"` of a section: the preset's table with the
/// section's own fields merged over it.
fn with_preset(s: &Section<'_>, table: &[(&str, &str)], errs: &mut Errors) -> Table {
    let mut own = s.table.clone();
    let Some(p) = own.remove("preset") else {
        return own;
    };
    let Some(name) = p.as_str() else {
        errs.push(s.at("preset"), format!("expected a preset name, one of: {}", presets::names(table)));
        return own;
    };
    match presets::lookup(table, name) {
        Some(mut base) => {
            crate::check::merge(&mut base, &own);
            base
        }
        None => {
            errs.push(
                s.at("preset"),
                format!("unknown preset \"{name}\"; expected one of: {}", presets::names(table)),
            );
            own
        }
    }
}

fn read_network(s: Section<'_>, errs: &mut Errors) -> Option<NetworkSpec> {
    let merged = with_preset(&s, presets::NETWORK, errs);
    let s = Section::new(&merged, s.path.clone());
    s.deny_unknown(
        &["latency", "extra_latency_ms", "bandwidth", "processing_ms", "loss", "regions", "region_shares"],
        errs,
    );
    let latency: LatencyModel = s.or("latency", NetworkModel::default().latency, errs);
    let bandwidth: BandwidthModel = s.or("bandwidth", BandwidthModel::Unlimited, errs);
    let extra_latency_ms = s.ranged("extra_latency_ms", 0.0, 1e9, 0.0, errs);
    let processing_ms = s.ranged("processing_ms", 0.0, 1e9, 0.0, errs);
    let loss = s.ranged("loss", 0.0, 1.0, 0.0, errs);
    let regions = match s.raw("regions") {
        None => None,
        Some(Value::String(name)) => match RegionTable::preset(name) {
            Some(t) => Some(t),
            None => {
                errs.push(
                    s.at("regions"),
                    format!(
                        "unknown region table \"{name}\"; expected one of: {}",
                        RegionTable::PRESETS.join(", ")
                    ),
                );
                None
            }
        },
        Some(v) => parse::<RegionTable>(v, &s.at("regions"), errs),
    };
    if let Some(t) = &regions {
        if let Err(e) = t.validate() {
            errs.push(s.at("regions"), e.to_string());
        }
    }
    let region_shares = match (s.raw("region_shares"), &regions) {
        (None, None) => Vec::new(),
        (None, Some(t)) => vec![1.0 / t.len().max(1) as f64; t.len()],
        (Some(Value::String(name)), _) => region_shares_preset(name).unwrap_or_else(|| {
            errs.push(
                s.at("region_shares"),
                format!(
                    "unknown share preset \"{name}\"; expected one of: {}",
                    fika_sim::regions::SHARE_PRESETS.join(", ")
                ),
            );
            Vec::new()
        }),
        (Some(v), _) => parse::<Vec<f64>>(v, &s.at("region_shares"), errs).unwrap_or_default(),
    };
    if let Some(t) = &regions {
        if !region_shares.is_empty() && region_shares.len() != t.len() {
            errs.push(
                s.at("region_shares"),
                format!("has {} entries; expected one per region ({})", region_shares.len(), t.len()),
            );
        }
    } else if !region_shares.is_empty() {
        errs.push(s.at("region_shares"), "needs a region table (network.regions)");
    }
    let model = NetworkModel { latency, extra_latency_ms, bandwidth, processing_ms, loss, regions };
    if let Err(e) = model.validate() {
        errs.push(s.path.clone(), e.to_string());
    }
    Some(NetworkSpec { model, region_shares })
}

fn read_nodes(
    top: &Section<'_>,
    protocol: Option<ProtocolKind>,
    net: Option<&NetworkSpec>,
    errs: &mut Errors,
) -> Vec<NodeGroup> {
    let Some(v) = top.raw("nodes") else {
        errs.push("nodes", "missing; expected one or more [[nodes]] groups with a role and a count");
        return Vec::new();
    };
    let Some(list) = v.as_array() else {
        errs.push("nodes", "expected an array of tables ([[nodes]])");
        return Vec::new();
    };
    let mut groups = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = format!("nodes[{i}]");
        let Some(t) = item.as_table() else {
            errs.push(path, "expected a table with role, count and name");
            continue;
        };
        let s = Section::new(t, path);
        s.deny_unknown(
            &[
                "role",
                "count",
                "name",
                "region",
                "hashrate",
                "stake",
                "balance",
                "servers",
                "extra_links",
                "censor",
                "strategy",
                "gamma",
                "start",
                "merchant",
                "amount",
                "confirmations",
                "give_up",
                "depth",
                "victims",
                "censored",
            ],
            errs,
        );
        let role: String = s.or("role", "node".to_owned(), errs);
        if let Some(p) = protocol {
            if !p.roles().contains(&role.as_str()) {
                errs.push(
                    s.at("role"),
                    format!("unknown role \"{role}\"; expected one of: {}", p.roles().join(", ")),
                );
            }
        }
        let count: u32 = s.or("count", 1, errs);
        if count == 0 {
            errs.push(s.at("count"), "expected at least 1");
        }
        let name: String = s.or("name", role.clone(), errs);
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            errs.push(
                s.at("name"),
                format!("\"{name}\" is not a valid name; expected letters, digits, '-' or '_'"),
            );
        }
        let region: Option<String> = s.opt("region", errs);
        if let Some(r) = &region {
            match net.and_then(|n| n.model.regions.as_ref()) {
                Some(t) if t.index_of(r).is_some() => {}
                Some(t) => errs.push(
                    s.at("region"),
                    format!("unknown region \"{r}\"; expected one of: {}", t.names.join(", ")),
                ),
                None => errs.push(s.at("region"), "needs a region table (network.regions)"),
            }
        }
        let hashrate: Option<Hashrate> = s.opt("hashrate", errs);
        match &hashrate {
            Some(Hashrate::Fixed(h)) if !(h.is_finite() && *h >= 0.0) => {
                errs.push(s.at("hashrate"), format!("{h} is out of range; expected a number ≥ 0"))
            }
            Some(Hashrate::Normal { normal: [m, sd] })
                if !(m.is_finite() && sd.is_finite() && *sd >= 0.0) =>
            {
                errs.push(s.at("hashrate.normal"), "expected [mean, standard deviation ≥ 0]")
            }
            _ => {}
        }
        let stake: Option<f64> = s.opt("stake", errs);
        if stake.is_some_and(|x| !(x.is_finite() && x >= 0.0)) {
            errs.push(s.at("stake"), "out of range; expected a number ≥ 0");
        }
        let balance: Option<f64> = s.opt("balance", errs);
        if let Some(b) = balance {
            if !(b.is_finite() && (0.0..=21_000_000.0).contains(&b)) {
                errs.push(s.at("balance"), format!("{b} is out of range; expected BTC in [0, 21,000,000]"));
            }
        }
        let servers: Option<u32> = s.opt("servers", errs);
        let extra_links: Option<u32> = s.opt("extra_links", errs);
        let censor: Option<bool> = s.opt("censor", errs);
        if censor.is_some() && role != "pegnatory" {
            errs.push(s.at("censor"), "only pegnatories can censor (role = \"pegnatory\")");
        }
        let strategy: Option<String> = s.opt("strategy", errs);
        let attack = read_attack(&s, &role, count, strategy.as_deref(), protocol, balance, errs);
        let balance = match strategy.as_deref() {
            Some("double-spend") => Some(balance.unwrap_or(DOUBLE_SPEND_BALANCE)),
            _ => balance,
        };
        if !matches!(protocol, Some(ProtocolKind::Bitcoin | ProtocolKind::Powpeg)) {
            for k in ["hashrate", "stake", "balance", "servers", "strategy"] {
                if s.raw(k).is_some() {
                    errs.push(s.at(k), "only valid with protocol = \"bitcoin\" or \"powpeg\"");
                }
            }
        }
        groups.push(NodeGroup {
            role,
            count,
            name,
            region,
            hashrate,
            stake,
            balance,
            servers,
            extra_links,
            censor,
            strategy,
            attack,
        });
    }
    let total: u64 = groups.iter().map(|g| u64::from(g.count)).sum();
    if total > 10_000_000 {
        errs.push("nodes", format!("{total} nodes in all; expected at most 10,000,000"));
    }
    groups
}

/// A double spender's coins when its group gives no `balance`, BTC.
const DOUBLE_SPEND_BALANCE: f64 = 10.0;

/// Fee of each of a double spender's two transactions, BTC.
pub const DOUBLE_SPEND_FEE: f64 = 0.0001;

/// Reads a group's strategy parameters: each only with its strategies,
/// the strategy's defaults filled in. Names are checked later
/// ([`check_attacks`]), once every node name is known.
fn read_attack(
    s: &Section<'_>,
    role: &str,
    count: u32,
    strategy: Option<&str>,
    protocol: Option<ProtocolKind>,
    balance: Option<f64>,
    errs: &mut Errors,
) -> AttackParams {
    let strategy = strategy.unwrap_or("honest");
    if !STRATEGIES.contains(&strategy) {
        errs.push(
            s.at("strategy"),
            format!("unknown strategy \"{strategy}\"; expected one of: {}", STRATEGIES.join(", ")),
        );
    }
    let miner_only = ["selfish", "double-spend", "majority", "censor"];
    if miner_only.contains(&strategy) && role != "miner" {
        errs.push(s.at("strategy"), format!("only miners can follow \"{strategy}\" (role = \"miner\")"));
    }
    if strategy == "eclipse" && !matches!(role, "full" | "server" | "miner") {
        errs.push(
            s.at("strategy"),
            "only relaying nodes can eclipse (role = \"full\", \"server\" or \"miner\")",
        );
    }
    if !matches!(strategy, "honest" | "selfish") && protocol.is_some_and(|p| p != ProtocolKind::Bitcoin) {
        errs.push(s.at("strategy"), format!("\"{strategy}\" is only valid with protocol = \"bitcoin\""));
    }
    if matches!(strategy, "double-spend" | "majority") && count != 1 {
        errs.push(s.at("count"), format!("a \"{strategy}\" group is one node; expected count = 1"));
    }
    // Which strategies each field belongs to.
    let fields: [(&str, &[&str]); 9] = [
        ("gamma", &["selfish"]),
        ("start", &["double-spend", "majority", "eclipse"]),
        ("merchant", &["double-spend"]),
        ("amount", &["double-spend"]),
        ("confirmations", &["double-spend"]),
        ("give_up", &["double-spend", "majority"]),
        ("depth", &["majority"]),
        ("victims", &["eclipse"]),
        ("censored", &["censor"]),
    ];
    for (k, owners) in fields {
        if s.raw(k).is_some() && !owners.contains(&strategy) {
            let want: Vec<String> = owners.iter().map(|o| format!("\"{o}\"")).collect();
            errs.push(s.at(k), format!("only valid with strategy = {}", want.join(" or ")));
        }
    }
    let mut a = AttackParams {
        gamma: s.opt("gamma", errs),
        start: s.duration("start", errs),
        merchant: s.opt("merchant", errs),
        amount: s.opt("amount", errs),
        confirmations: s.opt("confirmations", errs),
        give_up: s.opt("give_up", errs),
        depth: s.opt("depth", errs),
        victims: s.opt("victims", errs),
        censored: s.opt("censored", errs),
    };
    if let Some(g) = a.gamma {
        if !(0.0..=1.0).contains(&g) {
            errs.push(s.at("gamma"), format!("{g} is out of range; expected a probability in [0, 1]"));
        }
    }
    match strategy {
        "double-spend" => {
            if a.merchant.is_none() && s.raw("merchant").is_none() {
                errs.push(
                    s.at("merchant"),
                    "missing field; expected the name of the wallet the attacker pays",
                );
            }
            let z = *a.confirmations.get_or_insert(6);
            if z == 0 {
                errs.push(s.at("confirmations"), "expected at least 1");
            }
            a.give_up.get_or_insert(10);
            a.start.get_or_insert(Duration::ZERO);
            let bal = balance.unwrap_or(DOUBLE_SPEND_BALANCE);
            let amount = *a.amount.get_or_insert(bal / 2.0);
            if !(amount.is_finite() && amount > 0.0 && amount + DOUBLE_SPEND_FEE < bal) {
                errs.push(
                    s.at("amount"),
                    format!(
                        "{amount} BTC cannot be paid from the group's balance of {bal} BTC; expected 0 < amount < balance − {DOUBLE_SPEND_FEE}"
                    ),
                );
            }
        }
        "majority" => {
            if *a.depth.get_or_insert(6) == 0 {
                errs.push(s.at("depth"), "expected at least 1");
            }
            a.give_up.get_or_insert(0);
            a.start.get_or_insert(Duration::ZERO);
        }
        "eclipse" => {
            if a.victims.as_ref().is_none_or(Vec::is_empty) {
                errs.push(s.at("victims"), "missing or empty; expected the names of the nodes to eclipse");
            }
            a.start.get_or_insert(Duration::ZERO);
        }
        "censor" if a.censored.as_ref().is_none_or(Vec::is_empty) => {
            errs.push(s.at("censored"), "missing or empty; expected wallet names (or wallet group names)");
        }
        _ => {}
    }
    a
}

/// Checks the node names a group's strategy refers to.
fn check_attacks(groups: &[NodeGroup], names: &[String], errs: &mut Errors) {
    let group_of = |name: &str| -> Option<&NodeGroup> {
        groups.iter().find(|g| (0..g.count).any(|i| g.node_name(i) == name))
    };
    for (gi, g) in groups.iter().enumerate() {
        let at = |k: &str| format!("nodes[{gi}].{k}");
        if let Some(m) = &g.attack.merchant {
            check_name(names, m, &at("merchant"), errs);
            if group_of(m).is_some_and(|x| !x.is_light()) {
                errs.push(at("merchant"), format!("\"{m}\" is not a wallet (role wallet or client)"));
            }
        }
        for (i, v) in g.attack.victims.iter().flatten().enumerate() {
            let path = at(&format!("victims[{i}]"));
            check_name(names, v, &path, errs);
            match group_of(v) {
                Some(x) if x.is_light() => {
                    errs.push(path, format!("\"{v}\" is a light wallet; expected a relaying node"))
                }
                Some(x) if x.strategy.as_deref() == Some("eclipse") => {
                    errs.push(path, format!("\"{v}\" eclipses others itself; expected an honest node"))
                }
                _ => {}
            }
        }
        for (i, c) in g.attack.censored.iter().flatten().enumerate() {
            let path = at(&format!("censored[{i}]"));
            let members: Vec<&NodeGroup> = groups
                .iter()
                .filter(|x| x.name == *c || (0..x.count).any(|k| x.node_name(k) == *c))
                .collect();
            if members.is_empty() {
                errs.push(path, format!("no node or group is named \"{c}\""));
            } else if members.iter().any(|x| !x.is_light()) {
                errs.push(path, format!("\"{c}\" is not a wallet (role wallet or client)"));
            }
        }
    }
}

/// Every node name in id order; records duplicates.
fn node_names(groups: &[NodeGroup], errs: &mut Errors) -> Vec<String> {
    let mut names = Vec::new();
    let mut seen = BTreeSet::new();
    for (gi, g) in groups.iter().enumerate() {
        for i in 0..g.count {
            let n = g.node_name(i);
            if !seen.insert(n.clone()) {
                errs.push(format!("nodes[{gi}].name"), format!("node name \"{n}\" is used twice"));
                return names;
            }
            names.push(n);
        }
    }
    names
}

fn check_name(names: &[String], name: &str, path: &str, errs: &mut Errors) {
    if !names.iter().any(|n| n == name) {
        let hint: Vec<_> = names.iter().take(5).cloned().collect();
        errs.push(path, format!("no node is named \"{name}\"; nodes are named like {}", hint.join(", ")));
    }
}

fn read_topology(s: Section<'_>, names: &[String], errs: &mut Errors) -> Option<Topology> {
    let kind: String = s.req("kind", "a topology kind", errs)?;
    if kind == "explicit" {
        s.deny_unknown(&["kind", "links"], errs);
        let links: Vec<(String, String)> = s.req("links", "a list of [\"a\", \"b\"] name pairs", errs)?;
        for (i, (a, b)) in links.iter().enumerate() {
            let p = s.at(&format!("links[{i}]"));
            check_name(names, a, &p, errs);
            check_name(names, b, &p, errs);
            if a == b {
                errs.push(p, format!("links \"{a}\" to itself"));
            }
        }
        return Some(Topology::Explicit { kind, links });
    }
    let spec: TopologySpec = parse(&Value::Table(s.table.clone()), &s.path, errs)?;
    if let Err(e) = spec.validate() {
        errs.push(s.path.clone(), e.to_string());
    }
    Some(Topology::Generated(spec))
}

fn read_gossip(s: Section<'_>, errs: &mut Errors) -> Option<GossipSpec> {
    s.deny_unknown(&["request_timeout", "floods", "size_bytes", "start", "interval"], errs);
    let default = GossipConfig::default();
    let request_timeout = s.duration("request_timeout", errs).unwrap_or(default.request_timeout);
    if request_timeout.is_zero() {
        errs.push(s.at("request_timeout"), "expected a positive duration");
    }
    Some(GossipSpec {
        config: GossipConfig { request_timeout },
        floods: s.or("floods", 1, errs),
        size_bytes: s.or("size_bytes", 1_000_000, errs),
        start: s.duration("start", errs).unwrap_or(Duration::from_secs(1)),
        interval: s.duration("interval", errs).unwrap_or(Duration::from_secs(60)),
    })
}

fn read_target(s: &Section<'_>, names: &[String], errs: &mut Errors) -> Option<Target> {
    match (s.raw("node"), s.raw("nodes"), s.raw("random")) {
        (Some(_), None, None) => {
            let n: String = s.opt("node", errs)?;
            check_name(names, &n, &s.at("node"), errs);
            Some(Target::Nodes(vec![n]))
        }
        (None, Some(_), None) => {
            let list: Vec<String> = s.opt("nodes", errs)?;
            for (i, n) in list.iter().enumerate() {
                check_name(names, n, &s.at(&format!("nodes[{i}]")), errs);
            }
            Some(Target::Nodes(list))
        }
        (None, None, Some(_)) => {
            let k: u32 = s.opt("random", errs)?;
            if k as usize > names.len() {
                errs.push(s.at("random"), format!("{k} nodes asked for; the scenario has {}", names.len()));
            }
            Some(Target::Random(k))
        }
        _ => {
            errs.push(s.path.clone(), "expected exactly one of `node`, `nodes` or `random`");
            None
        }
    }
}

fn read_faults(top: &Section<'_>, names: &[String], errs: &mut Errors) -> Vec<FaultSpec> {
    let Some(v) = top.raw("faults") else {
        return Vec::new();
    };
    let Some(list) = v.as_array() else {
        errs.push("faults", "expected an array of tables ([[faults]])");
        return Vec::new();
    };
    let mut out = Vec::new();
    for (i, item) in list.iter().enumerate() {
        let path = format!("faults[{i}]");
        let Some(t) = item.as_table() else {
            errs.push(path, "expected a table with `at` and `kind`");
            continue;
        };
        let s = Section::new(t, path);
        let at = match s.raw("at") {
            Some(_) => s.duration("at", errs),
            None => {
                errs.push(s.at("at"), "missing field; expected the time of the fault, e.g. \"10m\"");
                None
            }
        };
        let kind: Option<String> = s.req("kind", "one of: crash, restart, partition, heal, link, loss", errs);
        let action = match kind.as_deref() {
            Some("crash") => {
                s.deny_unknown(&["at", "kind", "node", "nodes", "random", "restart_after"], errs);
                read_target(&s, names, errs).map(|target| FaultKind::Crash {
                    target,
                    restart_after: s.duration("restart_after", errs),
                })
            }
            Some("restart") => {
                s.deny_unknown(&["at", "kind", "node", "nodes"], errs);
                read_target(&s, names, errs).map(|target| FaultKind::Restart { target })
            }
            Some("partition") => {
                s.deny_unknown(&["at", "kind", "groups"], errs);
                let groups: Option<Vec<Vec<String>>> = s.req("groups", "a list of lists of node names", errs);
                if let Some(gs) = &groups {
                    for (g, members) in gs.iter().enumerate() {
                        for (m, n) in members.iter().enumerate() {
                            check_name(names, n, &s.at(&format!("groups[{g}][{m}]")), errs);
                        }
                    }
                }
                groups.map(|groups| FaultKind::Partition { groups })
            }
            Some("heal") => {
                s.deny_unknown(&["at", "kind"], errs);
                Some(FaultKind::Heal)
            }
            Some("link") => {
                s.deny_unknown(&["at", "kind", "a", "b", "latency_ms", "loss"], errs);
                let a: Option<String> = s.req("a", "a node name", errs);
                let b: Option<String> = s.req("b", "a node name", errs);
                for (k, n) in [("a", &a), ("b", &b)] {
                    if let Some(n) = n {
                        check_name(names, n, &s.at(k), errs);
                    }
                }
                let latency_ms = s.raw("latency_ms").map(|_| s.ranged("latency_ms", 0.0, 1e9, 0.0, errs));
                let loss = s.raw("loss").map(|_| s.ranged("loss", 0.0, 1.0, 0.0, errs));
                if latency_ms.is_none() && loss.is_none() {
                    errs.push(s.path.clone(), "a link fault needs `latency_ms`, `loss` or both");
                }
                a.zip(b).map(|(a, b)| FaultKind::Link { a, b, latency_ms, loss })
            }
            Some("loss") => {
                s.deny_unknown(&["at", "kind", "loss"], errs);
                s.raw("loss")
                    .map(|_| FaultKind::Loss { loss: s.ranged("loss", 0.0, 1.0, 0.0, errs) })
                    .or_else(|| {
                        errs.push(s.at("loss"), "missing field; expected a probability in [0, 1]");
                        None
                    })
            }
            Some(other) => {
                errs.push(s.at("kind"), format!("unknown fault \"{other}\"; expected one of: crash, restart, partition, heal, link, loss"));
                None
            }
            None => None,
        };
        if let (Some(at), Some(action)) = (at, action) {
            out.push(FaultSpec { at, action });
        }
    }
    out
}

fn read_output(s: Section<'_>, errs: &mut Errors) -> OutputSpec {
    s.deny_unknown(&["events", "exclude"], errs);
    OutputSpec { events: s.or("events", true, errs), exclude: s.or("exclude", Vec::new(), errs) }
}

fn read_bitcoin(
    s: Section<'_>,
    groups: &[NodeGroup],
    names: &[String],
    errs: &mut Errors,
) -> Option<BitcoinSpec> {
    use fika_btc::ChainParams;
    use fika_btc::node::RelayConfig;

    let merged = with_preset(&s, presets::BITCOIN, errs);
    let s = Section::new(&merged, s.path.clone());
    s.deny_unknown(&["chain", "params", "relay", "workload", "payments", "consensus"], errs);
    let chain: String = s.or("chain", "bitcoin-mainnet".to_owned(), errs);
    let mut params = ChainParams::by_name(&chain).unwrap_or_else(|| {
        errs.push(
            s.at("chain"),
            format!("unknown chain \"{chain}\"; expected one of: {}", ChainParams::PRESETS.join(", ")),
        );
        ChainParams::mainnet()
    });
    if let Some(v) = s.raw("params") {
        match serde_json::to_value(v) {
            Ok(json) => match params.with_overrides(&json) {
                Ok(p) => params = p,
                Err(e) => errs.push(s.at("params"), e.to_string()),
            },
            Err(e) => errs.push(s.at("params"), e.to_string()),
        }
    }
    let relay = match s.raw("relay") {
        Some(v) => {
            let mut base =
                toml::Value::try_from(RelayConfig::default()).unwrap_or(Value::Table(Table::new()));
            if let (Value::Table(b), Value::Table(o)) = (&mut base, v) {
                crate::check::merge(b, o);
            } else {
                errs.push(s.at("relay"), "expected a table");
            }
            parse::<RelayConfig>(&base, &s.at("relay"), errs).unwrap_or_default()
        }
        None => RelayConfig::default(),
    };
    if !(relay.tx_trickle_s.is_finite() && relay.tx_trickle_s >= 0.0) {
        errs.push(s.at("relay.tx_trickle_s"), "expected seconds ≥ 0");
    }
    if !(relay.mempool_sample_s.is_finite() && relay.mempool_sample_s >= 0.0) {
        errs.push(s.at("relay.mempool_sample_s"), "expected seconds ≥ 0 (0 = never)");
    }
    let workload = s.sub("workload", errs).map(|w| {
        w.deny_unknown(&["interval", "start", "amount_fraction", "fee_rate"], errs);
        let amount_fraction: [f64; 2] = w.or("amount_fraction", [0.01, 0.2], errs);
        if !(0.0 < amount_fraction[0]
            && amount_fraction[0] <= amount_fraction[1]
            && amount_fraction[1] <= 1.0)
        {
            errs.push(w.at("amount_fraction"), "expected [min, max] with 0 < min ≤ max ≤ 1");
        }
        let fee_rate: [f64; 2] = w.or("fee_rate", [1.0, 20.0], errs);
        if !(0.0 <= fee_rate[0] && fee_rate[0] <= fee_rate[1] && fee_rate[1].is_finite()) {
            errs.push(w.at("fee_rate"), "expected [min, max] sat/vB with 0 ≤ min ≤ max");
        }
        let interval = w.duration("interval", errs).unwrap_or(Duration::from_secs(3600));
        if interval.is_zero() {
            errs.push(w.at("interval"), "expected a positive duration");
        }
        PaymentWorkload {
            interval,
            start: w.duration("start", errs).unwrap_or(Duration::from_secs(60)),
            amount_fraction,
            fee_rate,
        }
    });
    let wallet = |name: &str| {
        let mut i = 0usize;
        groups.iter().any(|g| {
            (0..g.count).any(|k| {
                i += 1;
                g.is_light() && g.node_name(k) == name
            })
        })
    };
    let mut payments = Vec::new();
    if let Some(v) = s.raw("payments") {
        match v.as_array() {
            None => errs.push(s.at("payments"), "expected an array of tables ([[bitcoin.payments]])"),
            Some(list) => {
                for (i, item) in list.iter().enumerate() {
                    let path = s.at(&format!("payments[{i}]"));
                    let Some(t) = item.as_table() else {
                        errs.push(path, "expected a table with at, from, to, amount");
                        continue;
                    };
                    let p = Section::new(t, path);
                    p.deny_unknown(&["at", "from", "to", "amount", "fee", "fee_rate"], errs);
                    let at = p.duration("at", errs);
                    if p.raw("at").is_none() {
                        errs.push(p.at("at"), "missing field; expected the time of the payment");
                    }
                    let from: Option<String> = p.req("from", "a wallet's name", errs);
                    let to: Option<String> = p.req("to", "a wallet's name", errs);
                    for (k, n) in [("from", &from), ("to", &to)] {
                        if let Some(n) = n {
                            check_name(names, n, &p.at(k), errs);
                            if names.contains(n) && !wallet(n) {
                                errs.push(
                                    p.at(k),
                                    format!("\"{n}\" is not a wallet (role wallet or client)"),
                                );
                            }
                        }
                    }
                    let amount: Option<f64> = p.req("amount", "BTC", errs);
                    if amount.is_some_and(|a| !(a.is_finite() && a > 0.0)) {
                        errs.push(p.at("amount"), "expected a positive amount of BTC");
                    }
                    let fee: Option<f64> = p.opt("fee", errs);
                    let fee_rate: Option<f64> = p.opt("fee_rate", errs);
                    if fee.is_some() && fee_rate.is_some() {
                        errs.push(p.path.clone(), "give `fee` (BTC) or `fee_rate` (sat/vB), not both");
                    }
                    if let (Some(at), Some(from), Some(to), Some(amount)) = (at, from, to, amount) {
                        payments.push(ScriptedPayment { at, from, to, amount, fee, fee_rate });
                    }
                }
            }
        }
    }
    let consensus = match s.sub("consensus", errs) {
        None => ConsensusSpec::Pow,
        Some(c) => {
            c.deny_unknown(&["kind", "slot_secs"], errs);
            let kind: String = c.or("kind", "pow".to_owned(), errs);
            match kind.as_str() {
                "pow" => {
                    if c.raw("slot_secs").is_some() {
                        errs.push(c.at("slot_secs"), "only valid with kind = \"pos\"");
                    }
                    ConsensusSpec::Pow
                }
                "pos" => {
                    let slot_secs: u32 =
                        c.or("slot_secs", params.block_interval_secs.clamp(1, 86_400) as u32, errs);
                    if slot_secs == 0 {
                        errs.push(c.at("slot_secs"), "expected at least 1 second");
                    }
                    if params.retargeting {
                        errs.push(
                            s.at("params.retargeting"),
                            "proof of stake needs a constant difficulty (the longest chain wins): set false",
                        );
                    }
                    if params.pow_mode != fika_btc::PowMode::Simulated {
                        errs.push(
                            s.at("params.pow_mode"),
                            "proof of stake mines no nonce: expected \"simulated\"",
                        );
                    }
                    ConsensusSpec::Pos { slot_secs }
                }
                other => {
                    errs.push(c.at("kind"), format!("unknown consensus \"{other}\"; expected pow or pos"));
                    ConsensusSpec::Pow
                }
            }
        }
    };
    let full = || groups.iter().filter(|g| !g.is_light());
    match consensus {
        ConsensusSpec::Pow => {
            let miners = full().any(|g| match &g.hashrate {
                Some(Hashrate::Fixed(h)) => *h > 0.0,
                Some(Hashrate::Normal { normal }) => normal[0] > 0.0,
                None => g.role == "miner",
            });
            if !miners {
                errs.push(
                    "nodes",
                    "no node can mine: give a full node group `hashrate` > 0 or use role \"miner\"",
                );
            }
            if let Some(i) = groups.iter().position(|g| g.stake.is_some()) {
                errs.push(format!("nodes[{i}].stake"), "only valid with bitcoin.consensus.kind = \"pos\"");
            }
        }
        ConsensusSpec::Pos { .. } => {
            if !full().any(|g| g.stake.map_or(g.role == "miner", |x| x > 0.0)) {
                errs.push("nodes", "no validator: give a full node group `stake` > 0 or use role \"miner\"");
            }
            if let Some(i) = groups.iter().position(|g| g.hashrate.is_some()) {
                errs.push(format!("nodes[{i}].hashrate"), "proof of stake has no hashrate; give `stake`");
            }
            if let Some(i) = groups.iter().position(|g| g.stake.is_some() && g.is_light()) {
                errs.push(format!("nodes[{i}].stake"), "wallets do not validate; give stake to full nodes");
            }
        }
    }
    Some(BitcoinSpec { chain, params, relay, workload, payments, consensus })
}

fn read_powpeg(s: Section<'_>, groups: &[NodeGroup], errs: &mut Errors) -> Option<PowpegSpec> {
    use fika_peg::PegParams;
    s.deny_unknown(
        &[
            "preset",
            "params",
            "side_block_interval",
            "pegin",
            "pegout",
            "hsm_interval",
            "hsm_confirmations",
            "hsm_batch",
            "federation_change",
            "attack",
            "side_accounts",
        ],
        errs,
    );
    let preset: String = s.or("preset", "rootstock-mainnet".to_owned(), errs);
    let mut params = PegParams::by_name(&preset).unwrap_or_else(|| {
        errs.push(
            s.at("preset"),
            format!("unknown peg preset \"{preset}\"; expected rootstock-mainnet or rootstock-regtest"),
        );
        PegParams::rootstock_mainnet()
    });
    if let Some(v) = s.raw("params") {
        match serde_json::to_value(v) {
            Ok(json) => match params.with_overrides(&json) {
                Ok(p) => params = p,
                Err(e) => errs.push(s.at("params"), e.to_string()),
            },
            Err(e) => errs.push(s.at("params"), e.to_string()),
        }
    }
    let side_block_interval = s.duration("side_block_interval", errs).unwrap_or(Duration::from_secs(30));
    if side_block_interval.is_zero() {
        errs.push(s.at("side_block_interval"), "expected a positive duration");
    }
    let pegin = match s.sub("pegin", errs) {
        Some(w) => {
            w.deny_unknown(&["interval", "start", "amount_fraction", "fee_rate"], errs);
            let amount_fraction: [f64; 2] = w.or("amount_fraction", [0.05, 0.5], errs);
            if !(0.0 < amount_fraction[0]
                && amount_fraction[0] <= amount_fraction[1]
                && amount_fraction[1] <= 1.0)
            {
                errs.push(w.at("amount_fraction"), "expected [min, max] with 0 < min ≤ max ≤ 1");
            }
            let fee_rate: [f64; 2] = w.or("fee_rate", [2.0, 10.0], errs);
            if !(0.0 <= fee_rate[0] && fee_rate[0] <= fee_rate[1] && fee_rate[1].is_finite()) {
                errs.push(w.at("fee_rate"), "expected [min, max] sat/vB with 0 ≤ min ≤ max");
            }
            let interval = w.duration("interval", errs).unwrap_or(Duration::from_secs(12 * 3600));
            if interval.is_zero() {
                errs.push(w.at("interval"), "expected a positive duration");
            }
            PeginWorkload {
                interval,
                start: w.duration("start", errs).unwrap_or(Duration::from_secs(60)),
                amount_fraction,
                fee_rate,
            }
        }
        None => PeginWorkload {
            interval: Duration::from_secs(12 * 3600),
            start: Duration::from_secs(60),
            amount_fraction: [0.05, 0.5],
            fee_rate: [2.0, 10.0],
        },
    };
    let pegout = s.sub("pegout", errs).map(|w| {
        w.deny_unknown(&["interval", "start", "amount_fraction"], errs);
        let amount_fraction: [f64; 2] = w.or("amount_fraction", [0.2, 0.8], errs);
        if !(0.0 < amount_fraction[0]
            && amount_fraction[0] <= amount_fraction[1]
            && amount_fraction[1] <= 1.0)
        {
            errs.push(w.at("amount_fraction"), "expected [min, max] with 0 < min ≤ max ≤ 1");
        }
        let interval = w.duration("interval", errs).unwrap_or(Duration::from_secs(24 * 3600));
        if interval.is_zero() {
            errs.push(w.at("interval"), "expected a positive duration");
        }
        PegoutWorkloadSpec {
            interval,
            start: w.duration("start", errs).unwrap_or(Duration::from_secs(12 * 3600)),
            amount_fraction,
        }
    });
    let hsm_interval = s.duration("hsm_interval", errs).unwrap_or(Duration::from_secs(360));
    if hsm_interval.is_zero() {
        errs.push(s.at("hsm_interval"), "expected a positive duration");
    }
    // By default the HSM wants as many blocks of work as a peg-out waits.
    let hsm_confirmations: u64 = s.or("hsm_confirmations", params.pegout_confirmations.max(1), errs);
    if hsm_confirmations == 0 {
        errs.push(s.at("hsm_confirmations"), "expected at least 1");
    }
    let hsm_batch: u32 = s.or("hsm_batch", 100, errs);
    if hsm_batch == 0 {
        errs.push(s.at("hsm_batch"), "expected at least 1");
    }
    let count = |role: &str| groups.iter().filter(|g| g.role == role).map(|g| g.count).sum::<u32>();
    if count("pegnatory") == 0 {
        errs.push(
            "nodes",
            "a PowPeg network needs at least one group with role \"pegnatory\" (the federation)",
        );
    }
    if count("miner") == 0 {
        errs.push("nodes", "a PowPeg network needs merge-mining pools: a group with role \"miner\"");
    }
    // Node names by role.
    let named = |role: &str| -> Vec<String> {
        groups.iter().filter(|g| g.role == role).flat_map(|g| (0..g.count).map(|i| g.node_name(i))).collect()
    };
    let pegnatories = named("pegnatory");
    let federation_change = s.sub("federation_change", errs).map(|c| {
        c.deny_unknown(&["at", "join", "leave"], errs);
        let at = c.duration("at", errs).unwrap_or(Duration::ZERO);
        let join: Vec<String> = c.or("join", Vec::new(), errs);
        let leave: Vec<String> = c.or("leave", Vec::new(), errs);
        for (key, list) in [("join", &join), ("leave", &leave)] {
            for n in list {
                if !pegnatories.contains(n) {
                    errs.push(c.at(key), format!("\"{n}\" is not a pegnatory of the scenario"));
                }
            }
        }
        if let Some(n) = join.iter().find(|n| leave.contains(n)) {
            errs.push(c.at("leave"), format!("\"{n}\" cannot both join and leave"));
        }
        if join.is_empty() && leave.is_empty() {
            errs.push(c.path.clone(), "a federation change needs pegnatories to `join` or `leave`");
        }
        let initial = pegnatories.iter().filter(|n| !join.contains(n)).count();
        let next = initial - pegnatories.iter().filter(|n| leave.contains(n) && !join.contains(n)).count()
            + join.len();
        if initial == 0 {
            errs.push(c.at("join"), "the initial federation would be empty");
        }
        if next < fika_peg::fedchange::MIN_PENDING_MEMBERS {
            errs.push(
                c.at("leave"),
                format!(
                    "the new federation would have {next} members; at least {} needed",
                    fika_peg::fedchange::MIN_PENDING_MEMBERS
                ),
            );
        }
        FederationChangeSpec { at, join, leave }
    });
    let attack = s.sub("attack", errs).map(|a| {
        a.deny_unknown(&["kind", "node", "start", "publish", "rate", "pegout"], errs);
        let kind: String = a.or("kind", "private-fork".to_owned(), errs);
        if kind != "private-fork" {
            errs.push(a.at("kind"), format!("unknown attack \"{kind}\"; expected private-fork"));
        }
        let node: String = a.or("node", String::new(), errs);
        let is_pegnatory = pegnatories.contains(&node);
        if !is_pegnatory && !named("miner").contains(&node) {
            errs.push(
                a.at("node"),
                format!("\"{node}\" is not a pool (role \"miner\") or a pegnatory of the scenario"),
            );
        }
        let start = a.duration("start", errs).unwrap_or(Duration::ZERO);
        let publish = a.duration("publish", errs);
        if publish.is_some_and(|p| p <= start) {
            errs.push(a.at("publish"), "expected a time after `start`");
        }
        if publish.is_some() && is_pegnatory {
            errs.push(a.at("publish"), "only a pool publishes its fork");
        }
        let rate: f64 = a.or("rate", 0.1, errs);
        if !(rate.is_finite() && rate > 0.0) {
            errs.push(a.at("rate"), format!("{rate} is out of range; expected a rate > 0"));
        }
        let pegout: f64 = a.or("pegout", 0.5, errs);
        if !(pegout.is_finite() && pegout > 0.0) {
            errs.push(a.at("pegout"), format!("{pegout} is out of range; expected BTC > 0"));
        }
        ForkAttackSpec { node, start, publish, rate, pegout }
    });
    let raw_accounts: BTreeMap<String, f64> = s.or("side_accounts", BTreeMap::new(), errs);
    let mut side_accounts = BTreeMap::new();
    for (address, rbtc) in raw_accounts {
        match address.parse::<fika_peg::SideAddress>() {
            Ok(a) if rbtc.is_finite() && rbtc > 0.0 && rbtc <= 21e6 => {
                side_accounts.insert(a.to_string(), rbtc);
            }
            Ok(_) => errs.push(
                s.at("side_accounts"),
                format!("{address} = {rbtc} is out of range; expected RBTC in (0, 21000000]"),
            ),
            Err(e) => errs.push(s.at("side_accounts"), e.to_string()),
        }
    }
    Some(PowpegSpec {
        preset,
        side_accounts,
        params,
        side_block_interval,
        pegin,
        pegout,
        hsm_interval,
        hsm_confirmations,
        hsm_batch,
        federation_change,
        attack,
    })
}
