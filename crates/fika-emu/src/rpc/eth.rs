//! Ethereum-style JSON-RPC methods of a sidechain node (as Rootstock's
//! nodes serve them), with Ethereum's names, field names, hex quantities
//! (`0x`-prefixed, no leading zeros) and data (`0x`-prefixed, two digits a
//! byte), and JSON-RPC 2.0 error codes.
//!
//! Methods: `eth_blockNumber`, `eth_chainId`, `net_version`,
//! `eth_getBalance`, `eth_getTransactionCount`, `eth_getCode`, `eth_call`,
//! `eth_sendRawTransaction`, `eth_getTransactionReceipt`, `eth_getLogs`.
//!
//! Errors: `-32601` for an unknown method, `-32602` for parameters that are
//! missing or malformed (wrong hex, wrong length, an unknown block tag),
//! `-32000` for what the node refuses (a transaction its pool would not
//! take, a block it does not have), `3` with the revert data as `data` for
//! a reverted `eth_call`, `-32005` for a log query over too many blocks or
//! with too many results.
//!
//! Where fika differs from Ethereum: block tags `pending`, `safe` and
//! `finalized` mean `latest`; transactions are legacy ones (type `0x0`,
//! EIP-155), so `effectiveGasPrice` is the gas price; `eth_call` cannot
//! create contracts.

use serde_json::Value;

use fika_core::Context;
use fika_peg::network::{OfferError, SideMsg, SideNode};
use fika_side::{LogRecord, SignedTx};

use super::core_json::hex;
use super::json::Json;
use super::jsonrpc::{Params, RpcError, code};

/// JSON-RPC 2.0's server error for refused input (geth's code for pool
/// refusals and missing blocks).
pub const SERVER_ERROR: i64 = -32000;
/// EIP-1474's "limit exceeded".
pub const LIMIT_EXCEEDED: i64 = -32005;
/// geth's code of a reverted call (with the revert data as `data`).
pub const EXECUTION_REVERTED: i64 = 3;
/// Most blocks one `eth_getLogs` scans.
pub const MAX_LOG_BLOCKS: u64 = 10_000;
/// Most logs one `eth_getLogs` returns.
pub const MAX_LOGS: usize = 10_000;

/// The methods this module answers.
pub const METHODS: &[&str] = &[
    "eth_blockNumber",
    "eth_chainId",
    "net_version",
    "eth_getBalance",
    "eth_getTransactionCount",
    "eth_getCode",
    "eth_call",
    "eth_sendRawTransaction",
    "eth_getTransactionReceipt",
    "eth_getLogs",
];

/// A hex quantity: `0x` and the digits without leading zeros (`0x0` for zero).
pub fn quantity(v: u128) -> Json {
    Json::Str(format!("0x{v:x}"))
}

/// Hex data: `0x` and two digits a byte.
pub fn data(bytes: &[u8]) -> Json {
    Json::Str(format!("0x{}", hex(bytes)))
}

fn invalid(message: impl Into<String>) -> RpcError {
    RpcError::new(code::INVALID_PARAMS, message)
}

fn positional<'a>(method: &str, params: &'a Params) -> Result<&'a [Value], RpcError> {
    match params {
        Params::None => Ok(&[]),
        Params::Positional(v) => Ok(v),
        Params::Named(_) => Err(invalid(format!("{method} takes its parameters as an array"))),
    }
}

fn arg<'a>(args: &'a [Value], i: usize, name: &str) -> Result<&'a Value, RpcError> {
    args.get(i).filter(|v| !v.is_null()).ok_or_else(|| invalid(format!("missing value for required argument {i} ({name})")))
}

/// Hex bytes with a `0x` prefix (an even number of digits).
pub fn parse_data(v: &Value, what: &str) -> Result<Vec<u8>, RpcError> {
    let s = v.as_str().ok_or_else(|| invalid(format!("{what}: expected a 0x-prefixed hex string, got {v}")))?;
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).ok_or_else(|| invalid(format!("{what}: hex string without 0x prefix: {s:?}")))?;
    if digits.len() % 2 != 0 {
        return Err(invalid(format!("{what}: hex string of odd length: {s:?}")));
    }
    let mut out = Vec::with_capacity(digits.len() / 2);
    for pair in digits.as_bytes().chunks(2) {
        let text = std::str::from_utf8(pair).unwrap_or("zz");
        let b = u8::from_str_radix(text, 16).map_err(|_| invalid(format!("{what}: invalid hex string: {s:?}")))?;
        out.push(b);
    }
    Ok(out)
}

fn parse_fixed<const N: usize>(v: &Value, what: &str) -> Result<[u8; N], RpcError> {
    let b = parse_data(v, what)?;
    <[u8; N]>::try_from(b.as_slice())
        .map_err(|_| invalid(format!("{what}: expected {N} bytes of hex, got {}", b.len())))
}

/// A hex quantity (`0x` and 1 to 32 digits) as a `u128` (at most 2¹²⁸ − 1).
pub fn parse_quantity(v: &Value, what: &str) -> Result<u128, RpcError> {
    let s = v.as_str().ok_or_else(|| invalid(format!("{what}: expected a hex quantity, got {v}")))?;
    let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).ok_or_else(|| invalid(format!("{what}: hex quantity without 0x prefix: {s:?}")))?;
    if digits.is_empty() || digits.len() > 32 {
        return Err(invalid(format!("{what}: not a hex quantity: {s:?}")));
    }
    u128::from_str_radix(digits, 16).map_err(|_| invalid(format!("{what}: not a hex quantity: {s:?}")))
}

/// A block as a parameter names it: a number or tag (`latest`,
/// `earliest`, `pending`, `safe`, `finalized`); the best block's number
/// for a missing one.
pub fn parse_block(v: Option<&Value>, best: u64, what: &str) -> Result<u64, RpcError> {
    match v {
        None | Some(Value::Null) => Ok(best),
        Some(Value::String(s)) if matches!(s.as_str(), "latest" | "pending" | "safe" | "finalized") => Ok(best),
        Some(Value::String(s)) if s == "earliest" => Ok(0),
        Some(v) => {
            let n = parse_quantity(v, what)?;
            u64::try_from(n).map_err(|_| invalid(format!("{what}: block number {n} is out of range")))
        }
    }
}

fn block_hash_at(side: &SideNode, number: u64) -> Result<[u8; 32], RpcError> {
    side.chain().hash_at(number).ok_or_else(|| {
        RpcError::new(SERVER_ERROR, format!("header not found: block {number} is above the best block {}", side.chain().best_number()))
    })
}

fn offer_error(e: OfferError) -> RpcError {
    RpcError::new(SERVER_ERROR, e.to_string())
}

/// The 2048-bit bloom filter of logs, as Ethereum's `logsBloom`.
pub fn logs_bloom<'a>(logs: impl IntoIterator<Item = &'a fika_side::Log>) -> [u8; 256] {
    let mut bloom = [0u8; 256];
    let mut add = |item: &[u8]| {
        let h = fika_side::keccak256(item);
        for i in 0..3 {
            let bit = ((usize::from(h[2 * i]) << 8) | usize::from(h[2 * i + 1])) & 2047;
            bloom[255 - bit / 8] |= 1 << (bit % 8);
        }
    };
    for log in logs {
        add(&log.address);
        for t in &log.topics {
            add(t);
        }
    }
    bloom
}

fn log_json(r: &LogRecord) -> Json {
    Json::obj([
        ("address", data(&r.log.address)),
        ("topics", Json::Array(r.log.topics.iter().map(|t| data(t)).collect())),
        ("data", data(&r.log.data)),
        ("blockNumber", quantity(u128::from(r.block_number))),
        ("transactionHash", data(&r.tx_hash)),
        ("transactionIndex", quantity(u128::from(r.tx_index))),
        ("blockHash", data(&r.block_hash)),
        ("logIndex", quantity(u128::from(r.log_index))),
        ("removed", Json::Bool(false)),
    ])
}

/// Addresses or topics of a log filter: one, or any of several.
fn one_or_many<const N: usize>(v: &Value, what: &str) -> Result<Vec<[u8; N]>, RpcError> {
    match v {
        Value::Array(items) => items.iter().map(|x| parse_fixed::<N>(x, what)).collect(),
        v => Ok(vec![parse_fixed::<N>(v, what)?]),
    }
}

/// A log filter (`eth_getLogs`'s parameter).
struct LogFilter {
    from: u64,
    to: u64,
    addresses: Vec<[u8; 20]>,
    /// Per position: the topics allowed there (empty: any).
    topics: Vec<Vec<[u8; 32]>>,
}

impl LogFilter {
    fn parse(v: &Value, side: &SideNode) -> Result<LogFilter, RpcError> {
        let Value::Object(o) = v else {
            return Err(invalid(format!("filter: expected an object, got {v}")));
        };
        for k in o.keys() {
            if !matches!(k.as_str(), "fromBlock" | "toBlock" | "address" | "topics" | "blockHash") {
                return Err(invalid(format!("filter: unknown field {k:?}")));
            }
        }
        let best = side.chain().best_number();
        let (from, to) = match o.get("blockHash").filter(|v| !v.is_null()) {
            Some(h) => {
                if o.contains_key("fromBlock") || o.contains_key("toBlock") {
                    return Err(invalid("filter: blockHash cannot go with fromBlock or toBlock"));
                }
                let hash = parse_fixed::<32>(h, "blockHash")?;
                let header = side.chain().header(&hash).filter(|_| side.chain().is_on_best_chain(&hash));
                let n = header.map(|h| h.number).ok_or_else(|| {
                    RpcError::new(SERVER_ERROR, format!("unknown block 0x{} (not on the best chain)", hex(&hash)))
                })?;
                (n, n)
            }
            None => (
                parse_block(o.get("fromBlock"), best, "fromBlock")?,
                parse_block(o.get("toBlock"), best, "toBlock")?,
            ),
        };
        if from > to {
            return Err(invalid(format!("invalid block range: fromBlock {from} is after toBlock {to}")));
        }
        if to - from >= MAX_LOG_BLOCKS {
            return Err(RpcError::new(LIMIT_EXCEEDED, format!("query exceeds the maximum block range of {MAX_LOG_BLOCKS}")));
        }
        let addresses = match o.get("address") {
            None | Some(Value::Null) => Vec::new(),
            Some(a) => one_or_many::<20>(a, "address")?,
        };
        let topics = match o.get("topics") {
            None | Some(Value::Null) => Vec::new(),
            Some(Value::Array(ts)) => ts
                .iter()
                .map(|t| match t {
                    Value::Null => Ok(Vec::new()),
                    t => one_or_many::<32>(t, "topics"),
                })
                .collect::<Result<_, _>>()?,
            Some(t) => return Err(invalid(format!("topics: expected an array, got {t}"))),
        };
        Ok(LogFilter { from, to, addresses, topics })
    }

    fn matches(&self, log: &fika_side::Log) -> bool {
        (self.addresses.is_empty() || self.addresses.contains(&log.address))
            && self.topics.iter().enumerate().all(|(i, allowed)| {
                allowed.is_empty() || log.topics.get(i).is_some_and(|t| allowed.contains(t))
            })
    }
}

fn receipt_json(side: &SideNode, tx_hash: &[u8; 32]) -> Json {
    let chain = side.chain();
    let Some(info) = chain.receipt(tx_hash) else { return Json::Null };
    let tx = chain.block(&info.block_hash).and_then(|b| b.transactions.get(info.tx_index as usize));
    let logs: Vec<LogRecord> = chain
        .logs_in_range(info.block_number, info.block_number, None, None)
        .into_iter()
        .filter(|l| l.tx_index == info.tx_index)
        .collect();
    let r = &info.receipt;
    Json::obj([
        ("blockHash", data(&info.block_hash)),
        ("blockNumber", quantity(u128::from(info.block_number))),
        ("contractAddress", info.contract_address.map_or(Json::Null, |a| data(&a))),
        ("cumulativeGasUsed", quantity(u128::from(r.cumulative_gas_used))),
        ("effectiveGasPrice", tx.map_or(Json::Null, |t| quantity(t.tx.gas_price))),
        ("from", data(&info.sender)),
        ("gasUsed", quantity(u128::from(r.gas_used))),
        ("logs", Json::Array(logs.iter().map(log_json).collect())),
        ("logsBloom", data(&logs_bloom(&r.logs))),
        ("status", quantity(u128::from(r.status))),
        ("to", tx.and_then(|t| t.tx.to).map_or(Json::Null, |a| data(&a))),
        ("transactionHash", data(&info.tx_hash)),
        ("transactionIndex", quantity(u128::from(info.tx_index))),
        ("type", quantity(0)),
    ])
}

fn call(side: &SideNode, args: &[Value]) -> Result<Json, RpcError> {
    let Value::Object(o) = arg(args, 0, "transaction")? else {
        return Err(invalid("transaction: expected an object"));
    };
    let to = match o.get("to").filter(|v| !v.is_null()) {
        Some(v) => parse_fixed::<20>(v, "to")?,
        None => return Err(invalid("to: eth_call needs a contract to call (creation is not supported)")),
    };
    let from = match o.get("from").filter(|v| !v.is_null()) {
        Some(v) => parse_fixed::<20>(v, "from")?,
        None => [0u8; 20],
    };
    let value = match o.get("value").filter(|v| !v.is_null()) {
        Some(v) => parse_quantity(v, "value")?,
        None => 0,
    };
    let input = match (o.get("input").filter(|v| !v.is_null()), o.get("data").filter(|v| !v.is_null())) {
        (Some(a), Some(b)) if a != b => return Err(invalid("both input and data given, and they differ")),
        (Some(v), _) | (None, Some(v)) => parse_data(v, "input")?,
        (None, None) => Vec::new(),
    };
    let number = parse_block(args.get(1), side.chain().best_number(), "block")?;
    let block = block_hash_at(side, number)?;
    let out = side.chain().call_at(&block, from, to, value, &input).map_err(|e| RpcError::new(SERVER_ERROR, e.to_string()))?;
    if !out.success {
        return Err(RpcError::new(EXECUTION_REVERTED, "execution reverted").with_data(format!("0x{}", hex(&out.output))));
    }
    Ok(data(&out.output))
}

/// Answers `method` on a sidechain node (its context relays what it
/// sends): the methods of [`METHODS`], or `-32601`.
pub fn handle(
    side: &mut SideNode,
    cx: &mut dyn Context<SideMsg>,
    method: &str,
    params: &Params,
) -> Result<Json, RpcError> {
    let args = positional(method, params)?;
    let chain = side.chain();
    let best = chain.best_number();
    match method {
        "eth_blockNumber" => Ok(quantity(u128::from(best))),
        "eth_chainId" => Ok(quantity(u128::from(chain.config().chain_id))),
        "net_version" => Ok(Json::Str(chain.config().chain_id.to_string())),
        "eth_getBalance" | "eth_getTransactionCount" | "eth_getCode" => {
            let address = parse_fixed::<20>(arg(args, 0, "address")?, "address")?;
            let tag = args.get(1);
            let pending = tag.and_then(Value::as_str) == Some("pending");
            let number = parse_block(tag, best, "block")?;
            let hash = block_hash_at(side, number)?;
            let world = &chain.state_at(&hash).ok_or_else(|| RpcError::new(SERVER_ERROR, "state not available"))?.world;
            Ok(match method {
                "eth_getBalance" => quantity(u128::try_from(world.balance(&address)).unwrap_or(u128::MAX)),
                "eth_getTransactionCount" => {
                    let queued = if pending { side.pending_from(&address) as u64 } else { 0 };
                    quantity(u128::from(world.nonce(&address) + queued))
                }
                _ => data(&world.code(&address)),
            })
        }
        "eth_call" => call(side, args),
        "eth_sendRawTransaction" => {
            let raw = parse_data(arg(args, 0, "transaction")?, "transaction")?;
            let tx = SignedTx::decode(&raw).map_err(|e| invalid(format!("transaction: {e}")))?;
            let hash = side.offer(cx, tx).map_err(offer_error)?;
            Ok(data(&hash))
        }
        "eth_getTransactionReceipt" => {
            let hash = parse_fixed::<32>(arg(args, 0, "transaction hash")?, "transaction hash")?;
            Ok(receipt_json(side, &hash))
        }
        "eth_getLogs" => {
            let f = LogFilter::parse(arg(args, 0, "filter")?, side)?;
            let mut out = Vec::new();
            for r in chain.logs_in_range(f.from, f.to, None, None) {
                if f.matches(&r.log) {
                    if out.len() == MAX_LOGS {
                        return Err(RpcError::new(LIMIT_EXCEEDED, format!("query returned more than {MAX_LOGS} results")));
                    }
                    out.push(log_json(&r));
                }
            }
            Ok(Json::Array(out))
        }
        _ => Err(RpcError::new(code::METHOD_NOT_FOUND, format!("the method {method} does not exist/is not available"))),
    }
}
