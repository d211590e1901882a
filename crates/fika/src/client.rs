//! `fika client` and `fika status`: talking to the nodes of a running
//! emulation through their JSON-RPC servers.
//!
//! A run directory (the `--out` of `fika emulate`) holds `nodes.json`
//! (every node's name, role, pid, P2P and RPC address) and `.cookie` (the
//! RPC credentials). [`Session`] connects to one node by name; its
//! commands are those of the Fika thesis's client — `balance`, `send`,
//! `update`, `chain` — plus `peers` and raw `rpc METHOD [PARAMS…]`, usable
//! one at a time ([`parse_command`] + [`Session::run`]) or at a prompt.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use fika_emu::orchestrate::{NodeEntry, NodesFile};
use fika_emu::rpc::client::{ClientError, RpcClient, cli_param, indent_json};
use serde_json::{Value, json};

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CliError {
    /// A command or argument is not valid.
    #[error("{0}")]
    BadArgument(String),
    /// No running emulation found.
    #[error("{0}")]
    NoRun(String),
    /// The node is not in the emulation.
    #[error("unknown node {name:?}; the nodes of {run} are: {known}")]
    UnknownNode {
        /// The name asked for.
        name: String,
        /// The run directory.
        run: String,
        /// The nodes there.
        known: String,
    },
    /// The node does not serve RPC.
    #[error("node {0} has no RPC server (emulated without RPC)")]
    NoRpc(String),
    /// The node refused the call or could not be reached.
    #[error("{node}: {source}")]
    Node {
        /// The node.
        node: String,
        /// What happened.
        source: ClientError,
    },
}

impl CliError {
    /// The exit code: 2 for a bad argument or an unknown node, 1 when the
    /// node refused or is unreachable.
    pub fn exit_code(&self) -> u8 {
        match self {
            CliError::Node { .. } => 1,
            _ => 2,
        }
    }
}

/// The run directory to use: `run` if given, else the most recently
/// started emulation under `runs/` (the newest `runs/*/nodes.json`).
pub fn find_run(run: Option<&Path>) -> Result<PathBuf, CliError> {
    if let Some(r) = run {
        if !r.join(fika_emu::orchestrate::NODES_FILE).is_file() {
            return Err(CliError::NoRun(format!(
                "{}: no nodes.json (not the output directory of a running `fika emulate`)",
                r.display()
            )));
        }
        return Ok(r.to_path_buf());
    }
    let runs = Path::new("runs");
    let newest = std::fs::read_dir(runs)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let dir = e.path();
            let t = std::fs::metadata(dir.join(fika_emu::orchestrate::NODES_FILE)).ok()?.modified().ok()?;
            Some((t, dir))
        })
        .max();
    newest.map(|(_, d)| d).ok_or_else(|| {
        CliError::NoRun(
            "no emulation found under runs/ (start one with `fika emulate`, or give --run DIR)".into(),
        )
    })
}

/// A connection to the nodes of one emulation, speaking for one of them.
pub struct Session {
    run: PathBuf,
    nodes: NodesFile,
    cookie: PathBuf,
    node: NodeEntry,
    client: RpcClient,
}

/// A client command.
#[derive(Clone, Debug, PartialEq)]
pub enum Command {
    /// The wallet's balances.
    Balance,
    /// Pay `amount` BTC to an address or to another node (by name), with an
    /// absolute fee in BTC if given.
    Send {
        /// An address or a node name.
        to: String,
        /// Amount in BTC (decimal text).
        amount: String,
        /// Fee in BTC (decimal text).
        fee: Option<String>,
    },
    /// Ask the servers for the chain again (wallets) and show the tip.
    Update,
    /// The last `n` blocks of the best chain.
    Chain(u32),
    /// The connected peers.
    Peers,
    /// A raw JSON-RPC call.
    Rpc {
        /// The method.
        method: String,
        /// Its parameters (JSON where they parse as JSON, else strings).
        params: Vec<Value>,
    },
    /// The list of commands.
    Help,
    /// Leave the prompt.
    Exit,
}

/// The help text of the prompt.
pub const HELP: &str = "\
commands:
  balance                     the wallet's balances (wallet nodes)
  send TO AMOUNT [FEE]        pay AMOUNT BTC to an address or a node (by name), FEE in BTC
  update                      ask the servers for the chain again, show the tip
  chain [N]                   the last N blocks (default 10)
  peers                       the connected peers
  rpc METHOD [PARAMS...]      a raw JSON-RPC call (params as JSON, else strings)
  help                        this list
  exit                        leave";

/// Parses a command's words.
pub fn parse_command(words: &[String]) -> Result<Command, CliError> {
    let bad = |m: &str| Err(CliError::BadArgument(m.to_owned()));
    let Some((first, rest)) = words.split_first() else { return bad("no command (try `help`)") };
    let decimal = |s: &str, what: &str| -> Result<String, CliError> {
        let ok = !s.is_empty()
            && s.bytes().all(|c| c.is_ascii_digit() || c == b'.')
            && s.bytes().filter(|c| *c == b'.').count() <= 1
            && s.bytes().any(|c| c.is_ascii_digit());
        if ok {
            Ok(s.to_owned())
        } else {
            Err(CliError::BadArgument(format!("{what} {s:?}: expected a number of BTC, e.g. 1.5")))
        }
    };
    match (first.as_str(), rest) {
        ("balance", []) => Ok(Command::Balance),
        ("send", [to, amount]) => {
            Ok(Command::Send { to: to.clone(), amount: decimal(amount, "amount")?, fee: None })
        }
        ("send", [to, amount, fee]) => Ok(Command::Send {
            to: to.clone(),
            amount: decimal(amount, "amount")?,
            fee: Some(decimal(fee, "fee")?),
        }),
        ("send", _) => bad("usage: send TO AMOUNT [FEE]"),
        ("update", []) => Ok(Command::Update),
        ("chain", []) => Ok(Command::Chain(10)),
        ("chain", [n]) => match n.parse::<u32>() {
            Ok(n) if n > 0 => Ok(Command::Chain(n)),
            _ => bad("usage: chain [N] (N a positive number of blocks)"),
        },
        ("peers", []) => Ok(Command::Peers),
        ("rpc", [method, params @ ..]) => {
            Ok(Command::Rpc { method: method.clone(), params: params.iter().map(|p| cli_param(p)).collect() })
        }
        ("rpc", []) => bad("usage: rpc METHOD [PARAMS...]"),
        ("help", _) => Ok(Command::Help),
        ("exit" | "quit", _) => Ok(Command::Exit),
        (c @ ("balance" | "update" | "peers"), _) => bad(&format!("{c} takes no arguments")),
        (c, _) => bad(&format!("unknown command {c:?} (try `help`)")),
    }
}

fn btc(v: &Value) -> String {
    match v.as_f64() {
        Some(x) => format!("{x:.8} BTC"),
        None => v.to_string(),
    }
}

impl Session {
    /// Connects to node `name` of the emulation in `run`.
    pub fn open(run: &Path, name: &str) -> Result<Self, CliError> {
        let nodes = NodesFile::load(run).map_err(|e| CliError::NoRun(e.to_string()))?;
        let cookie = run.join(&nodes.cookie);
        let node = nodes.node(name).cloned().ok_or_else(|| CliError::UnknownNode {
            name: name.to_owned(),
            run: run.display().to_string(),
            known: nodes.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
        })?;
        let client = Self::client_for(&node, &cookie)?;
        Ok(Session { run: run.to_path_buf(), nodes, cookie, node, client })
    }

    fn client_for(node: &NodeEntry, cookie: &Path) -> Result<RpcClient, CliError> {
        let addr = node.rpc.ok_or_else(|| CliError::NoRpc(node.name.clone()))?;
        RpcClient::with_cookie(addr, cookie).map_err(|e| CliError::NoRun(e.to_string()))
    }

    /// The node's name.
    pub fn name(&self) -> &str {
        &self.node.name
    }

    /// The run directory.
    pub fn run_dir(&self) -> &Path {
        &self.run
    }

    /// Calls a method of this node.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, CliError> {
        self.client
            .call(method, params)
            .map_err(|source| CliError::Node { node: self.node.name.clone(), source })
    }

    /// Calls a method of another node of the emulation.
    pub fn call_other(&self, name: &str, method: &str, params: Value) -> Result<Value, CliError> {
        let node = self.nodes.node(name).ok_or_else(|| CliError::UnknownNode {
            name: name.to_owned(),
            run: self.run.display().to_string(),
            known: self.nodes.nodes.iter().map(|n| n.name.as_str()).collect::<Vec<_>>().join(", "),
        })?;
        Self::client_for(node, &self.cookie)?
            .call(method, params)
            .map_err(|source| CliError::Node { node: name.to_owned(), source })
    }

    /// Runs a command; returns what to print.
    pub fn run(&self, cmd: &Command) -> Result<String, CliError> {
        match cmd {
            Command::Help => Ok(HELP.to_owned()),
            Command::Exit => Ok(String::new()),
            Command::Balance => {
                let b = self.call("getbalances", json!([]))?;
                let mine = &b["mine"];
                Ok(format!(
                    "{}: spendable {} (pending {}, immature {}) at height {}",
                    self.node.name,
                    btc(&mine["trusted"]),
                    btc(&mine["untrusted_pending"]),
                    btc(&mine["immature"]),
                    b["lastprocessedblock"]["height"]
                ))
            }
            Command::Send { to, amount, fee } => {
                let address = match self.nodes.node(to) {
                    Some(_) => {
                        let a = self.call_other(to, "getnewaddress", json!([]))?;
                        a.as_str().map(str::to_owned).ok_or_else(|| {
                            CliError::BadArgument(format!("{to} answered no address (is it a wallet node?)"))
                        })?
                    }
                    None => to.clone(),
                };
                let mut params = json!({"address": address, "amount": amount});
                if let Some(f) = fee {
                    params["fee"] = json!(f);
                }
                let txid = self.call("sendtoaddress", params)?;
                Ok(format!(
                    "sent {amount} BTC to {address}{}: txid {}",
                    if &address == to { String::new() } else { format!(" ({to})") },
                    txid.as_str().unwrap_or_default()
                ))
            }
            Command::Update => {
                let mut out = String::new();
                match self.call("rescanblockchain", json!([])) {
                    Ok(_) => out.push_str("asked the servers for the chain again\n"),
                    Err(CliError::Node { source: ClientError::Rpc { code: -32601, .. }, .. }) => {}
                    Err(e) => return Err(e),
                }
                let info = self.call("getblockchaininfo", json!([]))?;
                let _ = write!(
                    out,
                    "{}: tip {} at height {}",
                    self.node.name,
                    info["bestblockhash"].as_str().unwrap_or("?"),
                    info["blocks"]
                );
                Ok(out)
            }
            Command::Chain(n) => {
                let count = self.call("getblockcount", json!([]))?.as_u64().unwrap_or(0);
                let mut out = format!("{:>7}  {:<64}  {:>10}  {:>4}\n", "height", "hash", "time", "txs");
                let lowest = count.saturating_sub(u64::from(*n) - 1);
                for h in (lowest..=count).rev() {
                    let hash = self.call("getblockhash", json!([h]))?;
                    let hdr = self.call("getblockheader", json!([hash]))?;
                    let txs = match hdr["nTx"].as_u64() {
                        Some(0) | None => "-".to_owned(),
                        Some(t) => t.to_string(),
                    };
                    let _ = writeln!(
                        out,
                        "{h:>7}  {:<64}  {:>10}  {txs:>4}",
                        hash.as_str().unwrap_or("?"),
                        hdr["time"]
                    );
                }
                Ok(out.trim_end().to_owned())
            }
            Command::Peers => {
                let peers = self.call("getpeerinfo", json!([]))?;
                let mut out = String::new();
                for p in peers.as_array().into_iter().flatten() {
                    let _ = writeln!(
                        out,
                        "{:<24} {:<8} {:<22} sent {:>10} B  received {:>10} B",
                        p["subver"].as_str().unwrap_or("?"),
                        if p["inbound"].as_bool() == Some(true) { "inbound" } else { "outbound" },
                        p["addr"].as_str().unwrap_or("?"),
                        p["bytessent"],
                        p["bytesrecv"]
                    );
                }
                Ok(if out.is_empty() { "no peers connected".into() } else { out.trim_end().to_owned() })
            }
            Command::Rpc { method, params } => {
                let text = self
                    .client
                    .call_text(method, Value::Array(params.clone()))
                    .map_err(|source| CliError::Node { node: self.node.name.clone(), source })?;
                // Strings bare, as bitcoin-cli prints them; the rest indented as written.
                Ok(match serde_json::from_str::<Value>(&text) {
                    Ok(Value::String(s)) => s,
                    _ => indent_json(&text),
                })
            }
        }
    }
}

/// Whether process `pid` exists (Linux: `/proc`; elsewhere unknown).
pub fn pid_alive(pid: u32) -> Option<bool> {
    if Path::new("/proc/self").exists() { Some(Path::new(&format!("/proc/{pid}")).exists()) } else { None }
}

/// One row of `fika status`.
#[derive(Clone, Debug, PartialEq)]
pub struct NodeStatus {
    /// The node.
    pub name: String,
    /// Its role.
    pub role: String,
    /// Its pid.
    pub pid: u32,
    /// Whether the process exists.
    pub alive: Option<bool>,
    /// Tip height and hash, peers connected, mempool size (full nodes) —
    /// or why the node did not answer.
    pub rpc: Result<(u64, String, u64, Option<u64>), String>,
}

/// Asks every node of the emulation in `run` for its state.
pub fn status(run: &Path) -> Result<(NodesFile, Vec<NodeStatus>), CliError> {
    let nodes = NodesFile::load(run).map_err(|e| CliError::NoRun(e.to_string()))?;
    let cookie = run.join(&nodes.cookie);
    let rows = nodes
        .nodes
        .iter()
        .map(|n| {
            let rpc = (|| -> Result<_, String> {
                let c = Session::client_for(n, &cookie)
                    .map_err(|e| e.to_string())?
                    .with_timeout(std::time::Duration::from_secs(5));
                let info = c.call("getblockchaininfo", json!([])).map_err(|e| e.to_string())?;
                let peers = c.call("getconnectioncount", json!([])).map_err(|e| e.to_string())?;
                let mempool = match c.call("getmempoolinfo", json!([])) {
                    Ok(m) => m["size"].as_u64(),
                    Err(ClientError::Rpc { code: -32601, .. }) => None,
                    Err(e) => return Err(e.to_string()),
                };
                Ok((
                    info["blocks"].as_u64().unwrap_or(0),
                    info["bestblockhash"].as_str().unwrap_or_default().to_owned(),
                    peers.as_u64().unwrap_or(0),
                    mempool,
                ))
            })();
            NodeStatus {
                name: n.name.clone(),
                role: n.role.clone(),
                pid: n.pid,
                alive: pid_alive(n.pid),
                rpc,
            }
        })
        .collect();
    Ok((nodes, rows))
}

/// `fika status` as text.
pub fn status_table(nodes: &NodesFile, rows: &[NodeStatus]) -> String {
    let mut out = format!(
        "{} (speed {}×, {} s of node time)\n{:<12} {:<8} {:>8} {:<5} {:>6}  {:<16} {:>5} {:>7}\n",
        nodes.scenario,
        nodes.speed,
        nodes.duration_s,
        "node",
        "role",
        "pid",
        "alive",
        "height",
        "tip",
        "peers",
        "mempool"
    );
    for r in rows {
        let alive = match r.alive {
            Some(true) => "yes",
            Some(false) => "no",
            None => "?",
        };
        let _ = match &r.rpc {
            Ok((h, hash, peers, pool)) => writeln!(
                out,
                "{:<12} {:<8} {:>8} {:<5} {:>6}  {:<16} {:>5} {:>7}",
                r.name,
                r.role,
                r.pid,
                alive,
                h,
                hash.get(..16).unwrap_or(hash),
                peers,
                pool.map_or("-".into(), |p| p.to_string())
            ),
            Err(e) => {
                writeln!(out, "{:<12} {:<8} {:>8} {:<5} unreachable: {e}", r.name, r.role, r.pid, alive)
            }
        };
    }
    out.trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn commands_parse_and_bad_ones_are_named() {
        assert_eq!(parse_command(&words("balance")).ok(), Some(Command::Balance));
        assert_eq!(
            parse_command(&words("send client2 40 1")).ok(),
            Some(Command::Send { to: "client2".into(), amount: "40".into(), fee: Some("1".into()) })
        );
        assert_eq!(parse_command(&words("chain")).ok(), Some(Command::Chain(10)));
        assert_eq!(parse_command(&words("chain 3")).ok(), Some(Command::Chain(3)));
        assert_eq!(
            parse_command(&words("rpc getblockhash 4 x")).ok(),
            Some(Command::Rpc { method: "getblockhash".into(), params: vec![json!(4), json!("x")] })
        );
        for bad in ["", "send a", "send a -1", "send a 1.2.3", "chain 0", "balance now", "fly", "rpc"] {
            let e = parse_command(&words(bad)).expect_err(bad);
            assert_eq!(e.exit_code(), 2, "{bad}: {e}");
        }
        assert!(find_run(Some(Path::new("/nonexistent-run"))).is_err_and(|e| e.exit_code() == 2));
    }
}
