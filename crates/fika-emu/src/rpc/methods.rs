//! The RPC methods of a Bitcoin-like node, with Bitcoin Core's names,
//! parameters, field names and error codes.
//!
//! Every method runs on the node loop with the node and its context (see
//! [`crate::service`]), so it sees one consistent state and acts only
//! through the context (a transaction sent is relayed like any other).
//! Full nodes answer the blockchain, mempool and network methods; light
//! wallet nodes answer the network methods, the blockchain methods from
//! their header chain, and the wallet methods.
//!
//! Where fika differs from Core:
//! * `getrawtransaction` finds confirmed transactions on the best chain as
//!   Core does with `-txindex`; `getblock` answers verbosity 3 as 2;
//! * `sendrawtransaction` accepts `maxfeerate` and `maxburnamount` but does
//!   not enforce them;
//! * fika's mempool has no minimum fee, so `getmempoolinfo` reports zero
//!   fee floors, and its `usage` is the serialized size of the pooled
//!   transactions;
//! * `getnewaddress` answers the wallet's receive address (its filter is
//!   loaded once, at start, so new keys would not be watched);
//! * `sendtoaddress` also takes `fee`, an absolute fee in BTC (the thesis
//!   demo's payments name one), besides Core's `fee_rate` in sat/vB; with
//!   neither it pays [`DEFAULT_FEE_RATE_SAT_VB`].

use std::sync::Arc;

use bitcoin::consensus::encode::{deserialize_hex, serialize_hex};
use bitcoin::{Address, Amount, BlockHash, FeeRate, Network, Transaction, Txid};
use fika_btc::blockdb::{BlockDb, BlockId};
use fika_btc::msg::BtcMsg;
use fika_btc::node::{BtcNode, FullNode, Reject, SharedDb};
use fika_btc::params::ChainParams;
use fika_btc::wallet::{FeeSpec, ScriptKind, WalletError};
use fika_btc::wallet_node::WalletNode;
use fika_core::Context;

use super::args::Args;
use super::core_json::{self, BlockPlace};
use super::json::Json;
use super::jsonrpc::{Params, RpcError, code};
use crate::service::NetView;

/// The fee rate of a payment that names none, sat/vB (Core's regtest
/// `-fallbackfee`, 0.0002 BTC/kvB).
pub const DEFAULT_FEE_RATE_SAT_VB: u64 = 20;

/// What the methods need besides the node.
#[derive(Clone)]
pub struct BtcEnv {
    /// The node's own block store.
    pub db: SharedDb,
    /// The chain's parameters.
    pub params: ChainParams,
    /// The address format.
    pub network: Network,
    /// Core's chain name.
    pub chain: String,
}

impl BtcEnv {
    /// The environment of a node with store `db`.
    pub fn new(db: SharedDb) -> Self {
        let params = db.borrow().params().clone();
        BtcEnv { network: core_json::network(&params), chain: core_json::chain_name(&params), params, db }
    }
}

const NETWORK_METHODS: &[&str] =
    &["getconnectioncount", "getnetworkinfo", "getpeerinfo", "help", "uptime", "echo"];
const CHAIN_METHODS: &[&str] = &[
    "getbestblockhash",
    "getblock",
    "getblockchaininfo",
    "getblockcount",
    "getblockhash",
    "getblockheader",
    "getdifficulty",
    "getrawtransaction",
    "sendrawtransaction",
];
const MEMPOOL_METHODS: &[&str] = &["getmempoolinfo", "getrawmempool"];
const WALLET_METHODS: &[&str] = &[
    "getbalance",
    "getbalances",
    "getnewaddress",
    "gettransaction",
    "getwalletinfo",
    "listunspent",
    "rescanblockchain",
    "sendtoaddress",
];

fn not_found(method: &str, why: &str) -> RpcError {
    RpcError::new(code::METHOD_NOT_FOUND, format!("Method not found{why}: {method}"))
}

/// Runs `method` with `params` on `node`.
pub fn handle(
    node: &mut BtcNode,
    env: &BtcEnv,
    cx: &mut dyn Context<BtcMsg>,
    net: &NetView,
    method: &str,
    params: &Params,
) -> Result<Json, RpcError> {
    if NETWORK_METHODS.contains(&method) {
        return network_method(node, env, net, method, params);
    }
    match node {
        BtcNode::Full(n) => {
            if WALLET_METHODS.contains(&method) {
                return Err(not_found(method, &format!(" ({} is a full node without a wallet)", net.name)));
            }
            full_method(n, env, cx, method, params)
        }
        BtcNode::Wallet(w) => {
            if MEMPOOL_METHODS.contains(&method) {
                return Err(not_found(
                    method,
                    &format!(" ({} is a light wallet node without a mempool)", net.name),
                ));
            }
            wallet_method(w, env, cx, method, params)
        }
    }
}

// ----- network --------------------------------------------------------------

/// Core-style version number of this crate (0.1.0 → 100).
fn version_number() -> u64 {
    let mut parts = env!("CARGO_PKG_VERSION").split('.').map(|p| p.parse::<u64>().unwrap_or(0));
    let (a, b, c) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0), parts.next().unwrap_or(0));
    a * 10_000 + b * 100 + c
}

fn subversion(name: &str) -> String {
    format!("/fika:{}({name})/", env!("CARGO_PKG_VERSION"))
}

fn now_unix() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

fn network_method(
    node: &BtcNode,
    env: &BtcEnv,
    net: &NetView,
    method: &str,
    params: &Params,
) -> Result<Json, RpcError> {
    match method {
        "getconnectioncount" => {
            Args::new(method, params, &[], 0)?;
            Ok(Json::from(net.peers.len()))
        }
        "uptime" => {
            Args::new(method, params, &[], 0)?;
            Ok(Json::from(now_unix().saturating_sub(net.runtime_started_unix)))
        }
        "echo" => Ok(match params {
            Params::Positional(v) => Json::Value(serde_json::Value::Array(v.clone())),
            Params::Named(m) => Json::Value(serde_json::Value::Object(m.clone())),
            Params::None => Json::Array(Vec::new()),
        }),
        "help" => {
            let a = Args::new(method, params, &["command"], 0)?;
            let mut all: Vec<&str> = NETWORK_METHODS.iter().chain(CHAIN_METHODS).copied().collect();
            match node {
                BtcNode::Full(_) => all.extend(MEMPOOL_METHODS),
                BtcNode::Wallet(_) => all.extend(WALLET_METHODS),
            }
            all.sort_unstable();
            match a.str(0)? {
                Some(c) if all.contains(&c) => Ok(Json::Str(format!("{c}: see Bitcoin Core's help for {c}"))),
                Some(c) => Ok(Json::Str(format!("help: unknown command: {c}"))),
                None => Ok(Json::Str(all.join("\n"))),
            }
        }
        "getnetworkinfo" => {
            Args::new(method, params, &[], 0)?;
            let inbound = net.peers.iter().filter(|p| p.inbound).count();
            Ok(Json::obj([
                ("version", Json::from(version_number())),
                ("subversion", Json::Str(subversion(&net.name))),
                ("protocolversion", Json::from(u64::from(crate::wire::VERSION_MAX))),
                ("localservices", Json::from("0000000000000409")),
                ("localservicesnames", Json::from(vec!["NETWORK", "WITNESS", "NETWORK_LIMITED"])),
                ("localrelay", Json::Bool(true)),
                ("timeoffset", Json::Int(0)),
                ("networkactive", Json::Bool(true)),
                ("connections", Json::from(net.peers.len())),
                ("connections_in", Json::from(inbound)),
                ("connections_out", Json::from(net.peers.len() - inbound)),
                ("networks", Json::Array(Vec::new())),
                ("relayfee", Json::btc(Amount::ZERO)),
                ("incrementalfee", Json::btc(Amount::ZERO)),
                ("localaddresses", Json::Array(Vec::new())),
                ("warnings", Json::Array(Vec::new())),
                ("chain", Json::Str(env.chain.clone())),
            ]))
        }
        "getpeerinfo" => {
            Args::new(method, params, &[], 0)?;
            Ok(Json::Array(
                net.peers
                    .iter()
                    .map(|p| {
                        Json::obj([
                            ("id", Json::from(p.id.0)),
                            ("addr", Json::Str(p.addr.to_string())),
                            ("network", Json::from(if p.addr.is_ipv4() { "ipv4" } else { "ipv6" })),
                            ("relaytxes", Json::Bool(true)),
                            ("bytessent", Json::from(p.bytes_sent)),
                            ("bytesrecv", Json::from(p.bytes_received)),
                            ("conntime", Json::from(p.since_unix)),
                            ("timeoffset", Json::Int(0)),
                            ("version", Json::from(u64::from(p.version))),
                            ("subver", Json::Str(subversion(&p.name))),
                            ("inbound", Json::Bool(p.inbound)),
                            (
                                "connection_type",
                                Json::from(if p.inbound { "inbound" } else { "outbound-full-relay" }),
                            ),
                            ("startingheight", Json::Int(-1)),
                            ("synced_headers", Json::Int(-1)),
                            ("synced_blocks", Json::Int(-1)),
                        ])
                    })
                    .collect(),
            ))
        }
        _ => Err(not_found(method, "")),
    }
}

// ----- full nodes -------------------------------------------------------------

/// The best chain as a full node sees it.
struct FullChain<'a> {
    db: &'a BlockDb,
    node: &'a FullNode,
    tip: BlockId,
    tip_height: u32,
}

impl<'a> FullChain<'a> {
    fn new(db: &'a BlockDb, node: &'a FullNode) -> Self {
        let tip = node.tip();
        FullChain { db, node, tip, tip_height: db.rec(tip).height }
    }

    fn on_best(&self, id: BlockId) -> bool {
        let h = self.db.rec(id).height;
        h <= self.tip_height && self.db.ancestor(self.tip, h) == id
    }

    fn at_height(&self, h: u32) -> Option<BlockId> {
        (h <= self.tip_height).then(|| self.db.ancestor(self.tip, h))
    }

    fn place(&self, id: BlockId) -> BlockPlace {
        let r = self.db.rec(id);
        let best = self.on_best(id);
        BlockPlace {
            height: r.height,
            confirmations: if best { i64::from(self.tip_height - r.height) + 1 } else { -1 },
            mediantime: r.mtp,
            chainwork: r.work,
            n_tx: r.data.block.txdata.len(),
            next: if best { self.at_height(r.height + 1).map(|n| self.db.rec(n).data.hash) } else { None },
        }
    }

    /// A block this node has, by hash.
    fn block(&self, hash: &BlockHash) -> Result<BlockId, RpcError> {
        self.db
            .id_of(hash)
            .filter(|id| self.node.has_block(*id))
            .ok_or_else(|| RpcError::new(code::INVALID_ADDRESS_OR_KEY, "Block not found"))
    }

    /// The block of the best chain holding `txid`, newest first.
    fn find_confirmed(&self, txid: &Txid) -> Option<(BlockId, Arc<Transaction>)> {
        let mut b = Some(self.tip);
        while let Some(id) = b {
            let r = self.db.rec(id);
            if let Some(t) = r.data.block.txdata.iter().find(|t| t.compute_txid() == *txid) {
                return Some((id, Arc::new(t.clone())));
            }
            b = r.parent;
        }
        None
    }
}

fn no_such_tx() -> RpcError {
    RpcError::new(
        code::INVALID_ADDRESS_OR_KEY,
        "No such mempool or blockchain transaction. Use gettransaction for wallet transactions.",
    )
}

fn decode_tx(hex: &str) -> Result<Transaction, RpcError> {
    deserialize_hex::<Transaction>(hex).map_err(|_| {
        RpcError::new(
            code::DESERIALIZATION_ERROR,
            "TX decode failed. Make sure the tx has at least one input.",
        )
    })
}

fn full_method(
    node: &mut FullNode,
    env: &BtcEnv,
    cx: &mut dyn Context<BtcMsg>,
    method: &str,
    params: &Params,
) -> Result<Json, RpcError> {
    if method == "sendrawtransaction" {
        return full_sendrawtransaction(node, env, cx, params);
    }
    let db = env.db.borrow();
    let c = FullChain::new(&db, node);
    let tip_rec = db.rec(c.tip);
    match method {
        "getblockcount" => {
            Args::new(method, params, &[], 0)?;
            Ok(Json::from(c.tip_height))
        }
        "getbestblockhash" => {
            Args::new(method, params, &[], 0)?;
            Ok(Json::Str(tip_rec.data.hash.to_string()))
        }
        "getdifficulty" => {
            Args::new(method, params, &[], 0)?;
            Ok(Json::Float(core_json::difficulty(tip_rec.data.block.header.bits.to_consensus())))
        }
        "getblockchaininfo" => {
            Args::new(method, params, &[], 0)?;
            let mut headers = c.tip_height;
            let mut size = 0u64;
            for (id, r) in db.blocks().iter().enumerate() {
                if node.has_block(id as BlockId) {
                    headers = headers.max(r.height);
                    size += u64::from(r.data.size());
                }
            }
            let h = &tip_rec.data.block.header;
            Ok(Json::obj([
                ("chain", Json::Str(env.chain.clone())),
                ("blocks", Json::from(c.tip_height)),
                ("headers", Json::from(headers)),
                ("bestblockhash", Json::Str(tip_rec.data.hash.to_string())),
                ("bits", Json::Str(format!("{:08x}", h.bits.to_consensus()))),
                ("difficulty", Json::Float(core_json::difficulty(h.bits.to_consensus()))),
                ("time", Json::from(h.time)),
                ("mediantime", Json::from(tip_rec.mtp)),
                ("verificationprogress", Json::Float(1.0)),
                ("initialblockdownload", Json::Bool(false)),
                ("chainwork", Json::Str(core_json::chainwork_hex(tip_rec.work))),
                ("size_on_disk", Json::from(size)),
                ("pruned", Json::Bool(false)),
                ("warnings", Json::Array(Vec::new())),
            ]))
        }
        "getblockhash" => {
            let a = Args::new(method, params, &["height"], 1)?;
            let h = a.int(0, 0)?;
            let id = u32::try_from(h)
                .ok()
                .and_then(|h| c.at_height(h))
                .ok_or_else(|| RpcError::new(code::INVALID_PARAMETER, "Block height out of range"))?;
            Ok(Json::Str(db.rec(id).data.hash.to_string()))
        }
        "getblockheader" => {
            let a = Args::new(method, params, &["blockhash", "verbose"], 1)?;
            let id = c.block(&a.hash(0)?)?;
            let r = db.rec(id);
            if a.bool(1, true)? {
                Ok(core_json::header(&r.data.block.header, &c.place(id)))
            } else {
                Ok(Json::Str(serialize_hex(&r.data.block.header)))
            }
        }
        "getblock" => {
            let a = Args::new(method, params, &["blockhash", "verbosity"], 1)?;
            let id = c.block(&a.hash(0)?)?;
            let v = a.verbosity(1, 1)?;
            let v = u8::try_from(v).ok().filter(|v| *v <= 3).ok_or_else(|| {
                RpcError::new(code::INVALID_PARAMETER, format!("Invalid verbosity value {v}"))
            })?;
            Ok(core_json::block(&db.rec(id).data.block, &c.place(id), v.min(2), env.network))
        }
        "getrawtransaction" => {
            let a = Args::new(method, params, &["txid", "verbose", "blockhash"], 1)?;
            let txid: Txid = a.hash(0)?;
            let verbose = a.verbosity(1, 0)?;
            let (tx, block, in_active) = if a.has(2) {
                let id = c.block(&a.hash(2)?)?;
                let t = db
                    .rec(id)
                    .data
                    .block
                    .txdata
                    .iter()
                    .find(|t| t.compute_txid() == txid)
                    .cloned()
                    .ok_or_else(|| {
                        RpcError::new(
                            code::INVALID_ADDRESS_OR_KEY,
                            "No such transaction found in the provided block.",
                        )
                    })?;
                (Arc::new(t), Some(id), Some(c.on_best(id)))
            } else if let Some(i) = db.tx_idx(&txid).filter(|i| node.mempool().contains(*i)) {
                (Arc::clone(&db.tx(i).tx), None, None)
            } else {
                let (id, t) = c.find_confirmed(&txid).ok_or_else(no_such_tx)?;
                (t, Some(id), None)
            };
            if verbose == 0 {
                return Ok(Json::Str(serialize_hex(&*tx)));
            }
            let mut o = Json::obj(Vec::<(String, Json)>::new());
            if let Some(b) = in_active {
                o.push("in_active_chain", Json::Bool(b));
            }
            if let Json::Object(fields) = core_json::tx(&tx, env.network, true) {
                for (k, v) in fields {
                    o.push(&k, v);
                }
            }
            if let Some(id) = block {
                let place = c.place(id);
                let r = db.rec(id);
                o.push("blockhash", Json::Str(r.data.hash.to_string()));
                o.push("confirmations", Json::Int(place.confirmations.max(0)));
                o.push("time", Json::from(r.data.block.header.time));
                o.push("blocktime", Json::from(r.data.block.header.time));
            }
            Ok(o)
        }
        "getmempoolinfo" => {
            Args::new(method, params, &[], 0)?;
            let pool = node.mempool();
            let fee: Amount = pool.entries().values().map(|e| e.fee).sum();
            let usage: u64 = pool.entries().keys().map(|i| u64::from(db.tx(*i).size)).sum();
            Ok(Json::obj([
                ("loaded", Json::Bool(true)),
                ("size", Json::from(pool.len())),
                ("bytes", Json::from(pool.bytes())),
                ("usage", Json::from(usage)),
                ("total_fee", Json::btc(fee)),
                ("maxmempool", Json::from(node.config().mempool_max_bytes)),
                ("mempoolminfee", Json::btc(Amount::ZERO)),
                ("minrelaytxfee", Json::btc(Amount::ZERO)),
                ("incrementalrelayfee", Json::btc(Amount::ZERO)),
                ("unbroadcastcount", Json::UInt(0)),
                ("fullrbf", Json::Bool(false)),
            ]))
        }
        "getrawmempool" => {
            let a = Args::new(method, params, &["verbose"], 0)?;
            let entries = node.mempool().entries();
            if !a.bool(0, false)? {
                let mut ids: Vec<Json> =
                    entries.keys().map(|i| Json::Str(db.tx(*i).txid.to_string())).collect();
                ids.sort_by_key(|j| j.to_text());
                return Ok(Json::Array(ids));
            }
            let mut rows: Vec<(String, Json)> = entries
                .iter()
                .map(|(i, e)| {
                    let t = db.tx(*i);
                    let row = Json::obj([
                        ("vsize", Json::from(e.vsize)),
                        ("weight", Json::from(t.tx.weight().to_wu())),
                        (
                            "time",
                            Json::from(u64::from(env_start_unix(node)) + t.first_seen_ns / 1_000_000_000),
                        ),
                        ("fees", Json::obj([("base", Json::btc(e.fee))])),
                    ]);
                    (t.txid.to_string(), row)
                })
                .collect();
            rows.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(Json::Object(rows))
        }
        _ => Err(not_found(method, "")),
    }
}

fn env_start_unix(node: &FullNode) -> u32 {
    node.config().start_unix
}

fn full_sendrawtransaction(
    node: &mut FullNode,
    env: &BtcEnv,
    cx: &mut dyn Context<BtcMsg>,
    params: &Params,
) -> Result<Json, RpcError> {
    let a = Args::new("sendrawtransaction", params, &["hexstring", "maxfeerate", "maxburnamount"], 1)?;
    let tx = decode_tx(a.req_str(0)?)?;
    let txid = tx.compute_txid();
    {
        let db = env.db.borrow();
        if db.tx_idx(&txid).is_some_and(|i| node.mempool().contains(i)) {
            return Ok(Json::Str(txid.to_string()));
        }
        let in_utxo = db.utxo(node.tip()).is_some_and(|u| {
            (0..tx.output.len() as u32).any(|v| u.0.contains_key(&bitcoin::OutPoint::new(txid, v)))
        });
        if in_utxo {
            return Err(RpcError::new(
                code::VERIFY_ALREADY_IN_CHAIN,
                "Transaction outputs already in utxo set",
            ));
        }
    }
    match node.submit_tx(cx, Arc::new(tx)) {
        Ok(()) => {
            let accepted = env.db.borrow().tx_idx(&txid).is_some_and(|i| node.mempool().contains(i));
            if accepted {
                Ok(Json::Str(txid.to_string()))
            } else {
                Err(RpcError::new(code::VERIFY_REJECTED, "txn-already-known: this node refused it before"))
            }
        }
        Err(Reject::MissingInputs(op)) => Err(RpcError::new(
            code::VERIFY_ERROR,
            format!("bad-txns-inputs-missingorspent (input {op} is neither confirmed nor in the mempool)"),
        )),
        Err(Reject::Conflict(other)) => Err(RpcError::new(
            code::VERIFY_REJECTED,
            format!("txn-mempool-conflict (conflicts with {other})"),
        )),
        Err(e) => Err(RpcError::new(code::VERIFY_REJECTED, e.to_string())),
    }
}

// ----- wallet nodes -------------------------------------------------------------

fn wallet_place(w: &WalletNode, hash: &BlockHash) -> Option<(bitcoin::block::Header, BlockPlace)> {
    let spv = w.spv();
    let e = spv.headers().entry(hash)?;
    let best = spv.is_on_best_chain(hash);
    let place = BlockPlace {
        height: e.height,
        confirmations: if best { i64::from(spv.best_height() - e.height) + 1 } else { -1 },
        mediantime: e.mtp,
        chainwork: e.chain_work,
        n_tx: 0,
        next: if best { spv.hash_at_height(e.height + 1) } else { None },
    };
    Some((e.header, place))
}

/// The wallet's balances as Core's `getbalances` splits them.
struct Balances {
    trusted: Amount,
    untrusted_pending: Amount,
    immature: Amount,
}

fn balances(w: &WalletNode) -> Balances {
    let b = w.balance();
    let change: Amount = w.spv().wallet().unconfirmed_coins(true).iter().map(|c| c.value()).sum();
    Balances {
        trusted: b.confirmed + change,
        untrusted_pending: b.unconfirmed.checked_sub(change).unwrap_or(Amount::ZERO),
        immature: b.immature,
    }
}

fn parse_address(s: &str, network: Network) -> Result<Address, RpcError> {
    s.parse::<Address<bitcoin::address::NetworkUnchecked>>()
        .map_err(|e| e.to_string())
        .and_then(|a| a.require_network(network).map_err(|e| e.to_string()))
        .map_err(|e| RpcError::new(code::INVALID_ADDRESS_OR_KEY, format!("Invalid address {s:?}: {e}")))
}

fn wallet_error(e: WalletError) -> RpcError {
    match e {
        WalletError::InsufficientFunds { .. } => {
            RpcError::new(code::WALLET_INSUFFICIENT_FUNDS, format!("Insufficient funds: {e}"))
        }
        WalletError::AmountBelowDust { .. } => {
            RpcError::new(code::WALLET_ERROR, format!("Transaction amount too small: {e}"))
        }
        WalletError::AmountOutOfRange { .. } => {
            RpcError::new(code::TYPE_ERROR, format!("Amount out of range: {e}"))
        }
        e => RpcError::new(code::WALLET_ERROR, e.to_string()),
    }
}

fn wallet_method(
    w: &mut WalletNode,
    env: &BtcEnv,
    cx: &mut dyn Context<BtcMsg>,
    method: &str,
    params: &Params,
) -> Result<Json, RpcError> {
    let best_height = w.spv().best_height();
    let best_hash = w.spv().best_hash();
    match method {
        "getblockcount" => {
            Args::new(method, params, &[], 0)?;
            Ok(Json::from(best_height))
        }
        "getbestblockhash" => {
            Args::new(method, params, &[], 0)?;
            Ok(Json::Str(best_hash.to_string()))
        }
        "getdifficulty" => {
            Args::new(method, params, &[], 0)?;
            let bits = w.spv().headers().best_header().header.bits.to_consensus();
            Ok(Json::Float(core_json::difficulty(bits)))
        }
        "getblockchaininfo" => {
            Args::new(method, params, &[], 0)?;
            let best = w.spv().headers().best_header();
            let bits = best.header.bits.to_consensus();
            Ok(Json::obj([
                ("chain", Json::Str(env.chain.clone())),
                ("blocks", Json::from(best_height)),
                ("headers", Json::from(best_height)),
                ("bestblockhash", Json::Str(best_hash.to_string())),
                ("bits", Json::Str(format!("{bits:08x}"))),
                ("difficulty", Json::Float(core_json::difficulty(bits))),
                ("time", Json::from(best.header.time)),
                ("mediantime", Json::from(best.mtp)),
                ("verificationprogress", Json::Float(1.0)),
                ("initialblockdownload", Json::Bool(false)),
                ("chainwork", Json::Str(core_json::chainwork_hex(best.chain_work))),
                ("size_on_disk", Json::UInt(0)),
                ("pruned", Json::Bool(false)),
                ("warnings", Json::from(vec!["light wallet node: headers and merkle proofs only"])),
            ]))
        }
        "getblockhash" => {
            let a = Args::new(method, params, &["height"], 1)?;
            let h = a.int(0, 0)?;
            u32::try_from(h)
                .ok()
                .and_then(|h| w.spv().hash_at_height(h))
                .map(|b| Json::Str(b.to_string()))
                .ok_or_else(|| RpcError::new(code::INVALID_PARAMETER, "Block height out of range"))
        }
        "getblockheader" => {
            let a = Args::new(method, params, &["blockhash", "verbose"], 1)?;
            let (header, place) = wallet_place(w, &a.hash(0)?)
                .ok_or_else(|| RpcError::new(code::INVALID_ADDRESS_OR_KEY, "Block not found"))?;
            if a.bool(1, true)? {
                Ok(core_json::header(&header, &place))
            } else {
                Ok(Json::Str(serialize_hex(&header)))
            }
        }
        "getblock" => {
            let a = Args::new(method, params, &["blockhash", "verbosity"], 1)?;
            let hash: BlockHash = a.hash(0)?;
            if wallet_place(w, &hash).is_none() {
                return Err(RpcError::new(code::INVALID_ADDRESS_OR_KEY, "Block not found"));
            }
            Err(RpcError::new(
                code::MISC_ERROR,
                "Block not available (a light wallet node stores headers only; ask a full node)",
            ))
        }
        "getrawtransaction" => {
            let a = Args::new(method, params, &["txid", "verbose", "blockhash"], 1)?;
            let txid: Txid = a.hash(0)?;
            let verbose = a.verbosity(1, 0)?;
            let (tx, block) = wallet_tx(w, &txid).ok_or_else(no_such_tx)?;
            if verbose == 0 {
                return Ok(Json::Str(serialize_hex(&tx)));
            }
            let mut o = core_json::tx(&tx, env.network, true);
            if let Some((hash, header, place)) = block {
                o.push("blockhash", Json::Str(hash.to_string()));
                o.push("confirmations", Json::Int(place.confirmations.max(0)));
                o.push("time", Json::from(header.time));
                o.push("blocktime", Json::from(header.time));
            }
            Ok(o)
        }
        "sendrawtransaction" => {
            let a = Args::new(method, params, &["hexstring", "maxfeerate", "maxburnamount"], 1)?;
            let tx = decode_tx(a.req_str(0)?)?;
            let txid = tx.compute_txid();
            w.broadcast(cx, tx).map_err(|e| match e {
                WalletError::Conflict { .. } => {
                    RpcError::new(code::VERIFY_REJECTED, format!("txn-mempool-conflict ({e})"))
                }
                WalletError::AlreadySpent { .. } => {
                    RpcError::new(code::VERIFY_ERROR, format!("bad-txns-inputs-missingorspent ({e})"))
                }
                e => RpcError::new(code::VERIFY_REJECTED, e.to_string()),
            })?;
            Ok(Json::Str(txid.to_string()))
        }
        "getbalance" => {
            let a = Args::new(method, params, &["dummy", "minconf", "include_watchonly", "avoid_reuse"], 0)?;
            if a.str(0)?.is_some_and(|d| d != "*") {
                return Err(RpcError::new(-32, "dummy first argument must be excluded or set to \"*\"."));
            }
            let minconf = a.int(1, 0)?;
            if minconf <= 0 {
                return Ok(Json::btc(balances(w).trusted));
            }
            let sum: Amount = w
                .spv()
                .wallet()
                .spendable_coins(best_height)
                .iter()
                .filter(|c| c.height.is_some_and(|h| i64::from(best_height) - i64::from(h) + 1 >= minconf))
                .map(|c| c.value())
                .sum();
            Ok(Json::btc(sum))
        }
        "getbalances" => {
            Args::new(method, params, &[], 0)?;
            let b = balances(w);
            Ok(Json::obj([
                (
                    "mine",
                    Json::obj([
                        ("trusted", Json::btc(b.trusted)),
                        ("untrusted_pending", Json::btc(b.untrusted_pending)),
                        ("immature", Json::btc(b.immature)),
                    ]),
                ),
                (
                    "lastprocessedblock",
                    Json::obj([
                        ("hash", Json::Str(best_hash.to_string())),
                        ("height", Json::from(best_height)),
                    ]),
                ),
            ]))
        }
        "getwalletinfo" => {
            Args::new(method, params, &[], 0)?;
            let b = balances(w);
            let (sent, failed) = w.payments();
            Ok(Json::obj([
                ("walletname", Json::from("")),
                ("format", Json::from("fika")),
                ("balance", Json::btc(b.trusted)),
                ("unconfirmed_balance", Json::btc(b.untrusted_pending)),
                ("immature_balance", Json::btc(b.immature)),
                ("keypoolsize", Json::from(w.spv().wallet().keys().len())),
                ("private_keys_enabled", Json::Bool(true)),
                ("payments_sent", Json::from(sent)),
                ("payments_failed", Json::from(failed)),
                ("scanning", Json::Bool(false)),
            ]))
        }
        "getnewaddress" => {
            let a = Args::new(method, params, &["label", "address_type"], 0)?;
            let wallet = w.spv().wallet();
            let kind = match a.str(1)? {
                None => wallet.config().receive_kind,
                Some("bech32") => ScriptKind::P2wpkh,
                Some("legacy") => ScriptKind::P2pkh,
                Some(t) => {
                    return Err(RpcError::new(
                        code::INVALID_ADDRESS_OR_KEY,
                        format!("Unknown address type '{t}'"),
                    ));
                }
            };
            // The wallet's filter is loaded once at start, so it always
            // answers its first key's address (of the asked kind).
            Ok(Json::Str(wallet.keys()[0].address(kind, env.network).to_string()))
        }
        "sendtoaddress" => {
            const NAMES: &[&str] = &[
                "address",
                "amount",
                "comment",
                "comment_to",
                "subtractfeefromamount",
                "replaceable",
                "conf_target",
                "estimate_mode",
                "avoid_reuse",
                "fee_rate",
                "verbose",
                "fee",
            ];
            let a = Args::new(method, params, NAMES, 2)?;
            let to = parse_address(a.req_str(0)?, env.network)?;
            let amount = a.amount(1)?.unwrap_or(Amount::ZERO);
            if amount == Amount::ZERO {
                return Err(RpcError::new(code::TYPE_ERROR, "Invalid amount for send"));
            }
            if a.bool(4, false)? {
                return Err(RpcError::new(code::INVALID_PARAMETER, "subtractfeefromamount is not supported"));
            }
            let (fee, reason) = match (a.has(9), a.amount(11)?) {
                (true, Some(_)) => {
                    return Err(RpcError::new(code::INVALID_PARAMETER, "give fee_rate or fee, not both"));
                }
                (true, None) => (FeeSpec::Rate(fee_rate_sat_vb(&a, 9)?), "User-specified fee rate"),
                (false, Some(f)) => (FeeSpec::Absolute(f), "User-specified fee"),
                (false, None) => (FeeSpec::sat_per_vb(DEFAULT_FEE_RATE_SAT_VB), "Fallback fee"),
            };
            let p = w.send(cx, &to.script_pubkey(), amount, fee).map_err(wallet_error)?;
            if a.bool(10, false)? {
                Ok(Json::obj([("txid", Json::Str(p.txid.to_string())), ("fee_reason", Json::from(reason))]))
            } else {
                Ok(Json::Str(p.txid.to_string()))
            }
        }
        "listunspent" => {
            let a = Args::new(
                method,
                params,
                &["minconf", "maxconf", "addresses", "include_unsafe", "query_options"],
                0,
            )?;
            let (minconf, maxconf) = (a.int(0, 1)?, a.int(1, 9_999_999)?);
            let include_unsafe = a.bool(3, true)?;
            let filter: Option<Vec<bitcoin::ScriptBuf>> = a
                .array(2)?
                .map(|list| {
                    list.iter()
                        .map(|v| match v {
                            serde_json::Value::String(s) => {
                                parse_address(s, env.network).map(|a| a.script_pubkey())
                            }
                            _ => Err(RpcError::new(code::INVALID_PARAMETER, "addresses must be strings")),
                        })
                        .collect::<Result<Vec<_>, _>>()
                })
                .transpose()?;
            let wallet = w.spv().wallet();
            let own: Vec<bitcoin::OutPoint> =
                wallet.unconfirmed_coins(true).iter().map(|c| c.outpoint).collect();
            let mut coins = wallet.spendable_coins(best_height);
            coins.extend(wallet.unconfirmed_coins(false));
            let rows = coins
                .into_iter()
                .filter_map(|c| {
                    let conf = c.height.map_or(0, |h| i64::from(best_height) - i64::from(h) + 1);
                    let safe = c.height.is_some() || own.contains(&c.outpoint);
                    let wanted = conf >= minconf
                        && conf <= maxconf
                        && (safe || include_unsafe)
                        && filter.as_ref().is_none_or(|f| f.contains(&c.txout.script_pubkey));
                    wanted.then(|| {
                        let mut o = Json::obj([
                            ("txid", Json::Str(c.outpoint.txid.to_string())),
                            ("vout", Json::from(c.outpoint.vout)),
                        ]);
                        if let Ok(addr) = Address::from_script(&c.txout.script_pubkey, env.network) {
                            o.push("address", Json::Str(addr.to_string()));
                        }
                        o.push("scriptPubKey", Json::Str(c.txout.script_pubkey.to_hex_string()));
                        o.push("amount", Json::btc(c.txout.value));
                        o.push("confirmations", Json::Int(conf));
                        o.push("spendable", Json::Bool(true));
                        o.push("solvable", Json::Bool(true));
                        o.push("safe", Json::Bool(safe));
                        o
                    })
                })
                .collect();
            Ok(Json::Array(rows))
        }
        "gettransaction" => {
            let a = Args::new(method, params, &["txid", "include_watchonly", "verbose"], 1)?;
            let txid: Txid = a.hash(0)?;
            let (tx, block) = wallet_tx(w, &txid).ok_or_else(|| {
                RpcError::new(code::INVALID_ADDRESS_OR_KEY, "Invalid or non-wallet transaction id")
            })?;
            let wallet = w.spv().wallet();
            let paid = w.paid(&txid);
            let mut details = Vec::new();
            let mut received = Amount::ZERO;
            for (n, o) in tx.output.iter().enumerate() {
                let mine = wallet.is_mine(&o.script_pubkey);
                let category = match (mine, paid.is_some()) {
                    (true, false) => "receive",
                    (false, true) => "send",
                    _ => continue,
                };
                let sats = i64::try_from(o.value.to_sat()).unwrap_or(i64::MAX);
                let mut d = Json::obj(Vec::<(String, Json)>::new());
                if let Ok(addr) = Address::from_script(&o.script_pubkey, env.network) {
                    d.push("address", Json::Str(addr.to_string()));
                }
                d.push("category", Json::from(category));
                d.push("amount", Json::sats(if category == "send" { -sats } else { sats }));
                d.push("vout", Json::from(n));
                details.push(d);
                if mine {
                    received += o.value;
                }
            }
            let neg = |a: Amount| -i64::try_from(a.to_sat()).unwrap_or(i64::MAX);
            let mut o = match paid {
                Some((amount, fee)) => {
                    Json::obj([("amount", Json::sats(neg(amount))), ("fee", Json::sats(neg(fee)))])
                }
                None => Json::obj([("amount", Json::btc(received))]),
            };
            let confirmations = block.as_ref().map_or(0, |(_, _, p)| p.confirmations.max(0));
            o.push("confirmations", Json::Int(confirmations));
            if let Some((hash, header, place)) = &block {
                o.push("blockhash", Json::Str(hash.to_string()));
                o.push("blockheight", Json::from(place.height));
                o.push("blocktime", Json::from(header.time));
            }
            o.push("txid", Json::Str(txid.to_string()));
            o.push("wtxid", Json::Str(tx.compute_wtxid().to_string()));
            o.push("details", Json::Array(details));
            o.push("hex", Json::Str(serialize_hex(&tx)));
            Ok(o)
        }
        "rescanblockchain" => {
            Args::new(method, params, &["start_height", "stop_height"], 0)?;
            w.load_filter(cx);
            Ok(Json::obj([("start_height", Json::UInt(0)), ("stop_height", Json::from(best_height))]))
        }
        _ => Err(not_found(method, "")),
    }
}

/// A `fee_rate` parameter in sat/vB (a number, possibly fractional).
fn fee_rate_sat_vb(a: &Args<'_>, i: usize) -> Result<FeeRate, RpcError> {
    let rate = a.float(i)?.unwrap_or(DEFAULT_FEE_RATE_SAT_VB as f64);
    if !(rate.is_finite() && rate > 0.0 && rate <= 1e9) {
        return Err(RpcError::new(
            code::INVALID_PARAMETER,
            format!("fee_rate {rate}: expected a positive sat/vB"),
        ));
    }
    Ok(FeeRate::from_sat_per_kwu((rate * 250.0).round().max(1.0) as u64))
}

/// The block holding a transaction: its hash, header and place.
type TxBlock = (BlockHash, bitcoin::block::Header, BlockPlace);

/// A transaction the wallet knows (pending or proven), with its block.
fn wallet_tx(w: &WalletNode, txid: &Txid) -> Option<(Transaction, Option<TxBlock>)> {
    let wallet = w.spv().wallet();
    if let Some(t) = wallet.pending_transactions().into_iter().find(|t| t.compute_txid() == *txid) {
        return Some((t.clone(), None));
    }
    let (t, blocks) = w.spv().transaction(txid)?;
    let block = blocks
        .first()
        .filter(|b| w.spv().is_on_best_chain(b))
        .and_then(|b| wallet_place(w, b).map(|(h, p)| (*b, h, p)));
    Some((t.clone(), block))
}
