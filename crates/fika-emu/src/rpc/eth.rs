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
    args.get(i)
        .filter(|v| !v.is_null())
        .ok_or_else(|| invalid(format!("missing value for required argument {i} ({name})")))
}

/// Hex bytes with a `0x` prefix (an even number of digits).
pub fn parse_data(v: &Value, what: &str) -> Result<Vec<u8>, RpcError> {
    let s =
        v.as_str().ok_or_else(|| invalid(format!("{what}: expected a 0x-prefixed hex string, got {v}")))?;
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or_else(|| invalid(format!("{what}: hex string without 0x prefix: {s:?}")))?;
    if digits.len() % 2 != 0 {
        return Err(invalid(format!("{what}: hex string of odd length: {s:?}")));
    }
    let mut out = Vec::with_capacity(digits.len() / 2);
    for pair in digits.as_bytes().chunks(2) {
        let text = std::str::from_utf8(pair).unwrap_or("zz");
        let b = u8::from_str_radix(text, 16)
            .map_err(|_| invalid(format!("{what}: invalid hex string: {s:?}")))?;
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
    let digits = s
        .strip_prefix("0x")
        .or_else(|| s.strip_prefix("0X"))
        .ok_or_else(|| invalid(format!("{what}: hex quantity without 0x prefix: {s:?}")))?;
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
        Some(Value::String(s)) if matches!(s.as_str(), "latest" | "pending" | "safe" | "finalized") => {
            Ok(best)
        }
        Some(Value::String(s)) if s == "earliest" => Ok(0),
        Some(v) => {
            let n = parse_quantity(v, what)?;
            u64::try_from(n).map_err(|_| invalid(format!("{what}: block number {n} is out of range")))
        }
    }
}

fn block_hash_at(side: &SideNode, number: u64) -> Result<[u8; 32], RpcError> {
    side.chain().hash_at(number).ok_or_else(|| {
        RpcError::new(
            SERVER_ERROR,
            format!(
                "header not found: block {number} is above the best block {}",
                side.chain().best_number()
            ),
        )
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
                    RpcError::new(
                        SERVER_ERROR,
                        format!("unknown block 0x{} (not on the best chain)", hex(&hash)),
                    )
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
            return Err(RpcError::new(
                LIMIT_EXCEEDED,
                format!("query exceeds the maximum block range of {MAX_LOG_BLOCKS}"),
            ));
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
    let out = side
        .chain()
        .call_at(&block, from, to, value, &input)
        .map_err(|e| RpcError::new(SERVER_ERROR, e.to_string()))?;
    if !out.success {
        return Err(RpcError::new(EXECUTION_REVERTED, "execution reverted")
            .with_data(format!("0x{}", hex(&out.output))));
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
            let world = &chain
                .state_at(&hash)
                .ok_or_else(|| RpcError::new(SERVER_ERROR, "state not available"))?
                .world;
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
                        return Err(RpcError::new(
                            LIMIT_EXCEEDED,
                            format!("query returned more than {MAX_LOGS} results"),
                        ));
                    }
                    out.push(log_json(&r));
                }
            }
            Ok(Json::Array(out))
        }
        _ => Err(RpcError::new(
            code::METHOD_NOT_FOUND,
            format!("the method {method} does not exist/is not available"),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::hashes::Hash;
    use bitcoin::secp256k1::SecretKey;
    use fika_peg::BRIDGE_ADDRESS;
    use fika_peg::abi::{BridgeCall, encode_call};
    use fika_peg::network::PegNode;
    use fika_side::{MergeMiningProof, UnsignedTx};
    use serde_json::json;

    /// A context recording what the sidechain node (node 2, peers 0 and 1) does.
    type SideCx = fika_core::testing::TestContext<SideMsg>;

    /// The sidechain node `rsk` of the powpeg-emu scenario (the account of
    /// private key 1 holds 10 RBTC at genesis), and a context.
    fn setup() -> (SideNode, SideCx) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios/tests/powpeg-emu.toml");
        let s = fika_scenario::load_file(std::path::Path::new(path)).expect("scenario loads");
        let l = fika_scenario::layout(&s).expect("layout");
        let id = l.id_of("rsk").expect("rsk");
        let built = fika_scenario::peg::build(&s, &l).expect("builds");
        let Some(PegNode::Side(node, _)) = built.nodes.into_iter().nth(id.index()) else {
            panic!("rsk is a sidechain node")
        };
        (*node, SideCx::new(2, &[0, 1]))
    }

    fn key1() -> SecretKey {
        let mut k = [0u8; 32];
        k[31] = 1;
        SecretKey::from_slice(&k).expect("key 1")
    }

    const KEY1_ADDRESS: &str = "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf";

    /// A merge-mining proof from a one-transaction Bitcoin block committing
    /// to `hash` (the regtest sidechain simulates proof of work).
    fn proof(hash: &[u8; 32]) -> MergeMiningProof {
        let coinbase = fika_btc::template::coinbase_tx(
            1,
            &fika_side::merge_mining_tag(hash),
            bitcoin::Amount::ZERO,
            b"",
        );
        let mut block = bitcoin::Block {
            header: bitcoin::block::Header {
                version: bitcoin::block::Version::from_consensus(0x2000_0000),
                prev_blockhash: bitcoin::BlockHash::all_zeros(),
                merkle_root: bitcoin::TxMerkleNode::all_zeros(),
                time: 0,
                bits: bitcoin::CompactTarget::from_consensus(0x207f_ffff),
                nonce: 0,
            },
            txdata: vec![coinbase],
        };
        block.header.merkle_root = block.compute_merkle_root().expect("one transaction");
        MergeMiningProof::from_bitcoin_block(&block).expect("a coinbase")
    }

    fn mine(node: &mut SideNode, cx: &mut SideCx) {
        let time = node.chain().best_header().timestamp + 5;
        node.produce_block(cx, [7; 20], time, proof);
    }

    fn call(node: &mut SideNode, cx: &mut SideCx, method: &str, params: Value) -> Result<Value, RpcError> {
        let Value::Array(p) = params else { panic!("positional params") };
        handle(node, cx, method, &Params::Positional(p))
            .map(|j| serde_json::from_str(&j.to_text()).expect("answers are JSON"))
    }

    fn transfer(nonce: u64, to: [u8; 20], value: u128, data: Vec<u8>) -> String {
        let tx = UnsignedTx {
            nonce,
            gas_price: 1,
            gas_limit: 100_000,
            to: Some(to),
            value,
            data,
            chain_id: Some(33),
        }
        .sign(&key1());
        format!("0x{}", hex(&tx.encode()))
    }

    #[test]
    fn quantities_and_data_are_ethereums() {
        assert_eq!(quantity(0), Json::Str("0x0".into()));
        assert_eq!(quantity(1024), Json::Str("0x400".into()));
        assert_eq!(data(&[0, 1, 0xab]), Json::Str("0x0001ab".into()));
        assert_eq!(parse_quantity(&json!("0x400"), "q"), Ok(1024));
        for bad in
            [json!("400"), json!("0x"), json!("0xg"), json!(5), json!(format!("0x1{}", "0".repeat(32)))]
        {
            assert_eq!(parse_quantity(&bad, "q").map_err(|e| e.code), Err(code::INVALID_PARAMS), "{bad}");
        }
        assert_eq!(parse_data(&json!("0x00ff"), "d"), Ok(vec![0, 255]));
        assert!(parse_data(&json!("0x0"), "d").is_err_and(|e| e.message.contains("odd length")));
        assert_eq!(parse_block(Some(&json!("latest")), 9, "b"), Ok(9));
        assert_eq!(parse_block(Some(&json!("earliest")), 9, "b"), Ok(0));
        assert_eq!(parse_block(Some(&json!("0x3")), 9, "b"), Ok(3));
        assert!(parse_block(Some(&json!("newest")), 9, "b").is_err());
    }

    #[test]
    fn eth_block_number_follows_the_best_chain() {
        let (mut n, mut cx) = setup();
        assert_eq!(call(&mut n, &mut cx, "eth_blockNumber", json!([])), Ok(json!("0x0")));
        mine(&mut n, &mut cx);
        mine(&mut n, &mut cx);
        assert_eq!(call(&mut n, &mut cx, "eth_blockNumber", json!([])), Ok(json!("0x2")));
        assert_eq!(call(&mut n, &mut cx, "eth_chainId", json!([])), Ok(json!("0x21")));
        let e = call(&mut n, &mut cx, "eth_mining", json!([])).expect_err("unknown");
        assert_eq!(e.code, code::METHOD_NOT_FOUND);
        let e = handle(&mut n, &mut cx, "eth_blockNumber", &Params::Named(Default::default()))
            .expect_err("named");
        assert_eq!(e.code, code::INVALID_PARAMS);
    }

    #[test]
    fn eth_get_balance_reads_any_block_of_the_best_chain() {
        let (mut n, mut cx) = setup();
        let ten_rbtc = json!("0x8ac7230489e80000");
        assert_eq!(
            call(&mut n, &mut cx, "eth_getBalance", json!([KEY1_ADDRESS, "latest"])),
            Ok(ten_rbtc.clone())
        );
        let to = [0x55; 20];
        call(&mut n, &mut cx, "eth_sendRawTransaction", json!([transfer(0, to, 1000, Vec::new())]))
            .expect("sent");
        mine(&mut n, &mut cx);
        let other = format!("0x{}", hex(&to));
        assert_eq!(call(&mut n, &mut cx, "eth_getBalance", json!([other, "latest"])), Ok(json!("0x3e8")));
        assert_eq!(call(&mut n, &mut cx, "eth_getBalance", json!([other, "0x0"])), Ok(json!("0x0")));
        // 10 RBTC less the value and 21,000 gas at 1 wei.
        let left = 10_000_000_000_000_000_000u128 - 1000 - 21_000;
        assert_eq!(
            call(&mut n, &mut cx, "eth_getBalance", json!([KEY1_ADDRESS])),
            Ok(json!(format!("0x{left:x}")))
        );
        assert_eq!(call(&mut n, &mut cx, "eth_getBalance", json!([KEY1_ADDRESS, "earliest"])), Ok(ten_rbtc));
        assert_eq!(
            call(&mut n, &mut cx, "eth_getTransactionCount", json!([KEY1_ADDRESS, "latest"])),
            Ok(json!("0x1"))
        );
        let e =
            call(&mut n, &mut cx, "eth_getBalance", json!([KEY1_ADDRESS, "0x9"])).expect_err("no block 9");
        assert_eq!(e.code, SERVER_ERROR);
        let e = call(&mut n, &mut cx, "eth_getBalance", json!(["0x1234"])).expect_err("short address");
        assert_eq!(e.code, code::INVALID_PARAMS);
        let e = call(&mut n, &mut cx, "eth_getBalance", json!([])).expect_err("no address");
        assert_eq!(e.code, code::INVALID_PARAMS);
    }

    #[test]
    fn eth_call_runs_the_bridges_read_methods() {
        let (mut n, mut cx) = setup();
        let bridge = format!("0x{}", hex(&BRIDGE_ADDRESS.0));
        let input = format!("0x{}", hex(&encode_call(&BridgeCall::GetMinimumLockTxValue)));
        let got = call(&mut n, &mut cx, "eth_call", json!([{"to": bridge, "input": input}, "latest"]))
            .expect("call");
        let min = n.chain().system().state().get_minimum_lock_tx_value().to_sat();
        assert_eq!(got, json!(format!("0x{}{:016x}", "0".repeat(48), min)));
        // `data` is `input`'s older name.
        let again = call(&mut n, &mut cx, "eth_call", json!([{"to": bridge, "data": input}])).expect("call");
        assert_eq!(again, got);
        // A selector the Bridge does not have reverts.
        let e = call(&mut n, &mut cx, "eth_call", json!([{"to": bridge, "data": "0xdeadbeef"}]))
            .expect_err("reverts");
        assert_eq!((e.code, e.message.as_str()), (EXECUTION_REVERTED, "execution reverted"));
        let e = call(&mut n, &mut cx, "eth_call", json!([{"data": "0x"}])).expect_err("no to");
        assert_eq!(e.code, code::INVALID_PARAMS);
    }

    #[test]
    fn eth_send_raw_transaction_pools_relays_and_refuses_what_the_pool_would() {
        let (mut n, mut cx) = setup();
        let raw = transfer(0, [1; 20], 5, Vec::new());
        let hash = call(&mut n, &mut cx, "eth_sendRawTransaction", json!([raw])).expect("taken");
        let tx = SignedTx::decode(&parse_data(&json!(raw), "tx").expect("hex")).expect("tx");
        assert_eq!(hash, json!(format!("0x{}", hex(&tx.tx_hash()))));
        assert_eq!(n.pool_len(), 1);
        assert_eq!(cx.sent.len(), 2, "relayed to both peers");
        assert!(cx.sent.iter().all(|(_, m)| matches!(m, SideMsg::Tx(t) if t.tx_hash() == tx.tx_hash())));
        let refused = |n: &mut SideNode, cx: &mut SideCx, raw: String| {
            call(n, cx, "eth_sendRawTransaction", json!([raw])).expect_err("refused")
        };
        let e = refused(&mut n, &mut cx, raw);
        assert_eq!((e.code, e.message.as_str()), (SERVER_ERROR, "already known"));
        let e = refused(&mut n, &mut cx, transfer(1, [1; 20], u128::MAX / 2, Vec::new()));
        assert!(e.code == SERVER_ERROR && e.message.starts_with("insufficient funds"), "{e}");
        let other_chain = UnsignedTx {
            nonce: 1,
            gas_price: 1,
            gas_limit: 21_000,
            to: Some([1; 20]),
            value: 1,
            data: Vec::new(),
            chain_id: Some(30),
        }
        .sign(&key1());
        let e = refused(&mut n, &mut cx, format!("0x{}", hex(&other_chain.encode())));
        assert!(e.code == SERVER_ERROR && e.message.contains("chain id 30"), "{e}");
        mine(&mut n, &mut cx);
        let e = refused(&mut n, &mut cx, transfer(0, [2; 20], 5, Vec::new()));
        assert!(e.code == SERVER_ERROR && e.message.starts_with("nonce too low"), "{e}");
        let e = refused(&mut n, &mut cx, "0xc0".into());
        assert_eq!(e.code, code::INVALID_PARAMS);
    }

    /// A contract whose every call logs `Ping(address)` with the caller as
    /// data and returns the caller as a word: init code (copy the runtime,
    /// return it), then the runtime (CALLER, MSTORE, LOG1, RETURN).
    fn ping_contract() -> Vec<u8> {
        let mut runtime = vec![0x33, 0x60, 0x00, 0x52, 0x7f];
        runtime.extend_from_slice(&ping_topic());
        runtime.extend_from_slice(&[0x60, 0x20, 0x60, 0x00, 0xa1, 0x60, 0x20, 0x60, 0x00, 0xf3]);
        let n = runtime.len() as u8;
        let mut code = vec![0x60, n, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, n, 0x60, 0x00, 0xf3];
        code.extend(runtime);
        code
    }

    fn ping_topic() -> [u8; 32] {
        fika_side::keccak256(b"Ping(address)")
    }

    fn word(address: &[u8; 20]) -> String {
        format!("0x{}{}", "0".repeat(24), hex(address))
    }

    /// Deploys the ping contract (nonce 0) and calls it (nonce 1) in block
    /// 1; returns the contract's address and the two transactions' hashes.
    fn deploy_and_ping(n: &mut SideNode, cx: &mut SideCx) -> ([u8; 20], Value, Value) {
        let create = UnsignedTx {
            nonce: 0,
            gas_price: 1,
            gas_limit: 200_000,
            to: None,
            value: 0,
            data: ping_contract(),
            chain_id: Some(33),
        }
        .sign(&key1());
        let deploy = call(n, cx, "eth_sendRawTransaction", json!([format!("0x{}", hex(&create.encode()))]))
            .expect("deploy");
        let contract = fika_side::contract_address(&fika_side::address_of_secret(&key1()), 0);
        let ping = call(n, cx, "eth_sendRawTransaction", json!([transfer(1, contract, 0, vec![1, 2, 3])]))
            .expect("ping");
        mine(n, cx);
        (contract, deploy, ping)
    }

    #[test]
    fn eth_get_transaction_receipt_has_ethereums_fields() {
        let (mut n, mut cx) = setup();
        let (contract, deploy, ping) = deploy_and_ping(&mut n, &mut cx);
        let r = call(&mut n, &mut cx, "eth_getTransactionReceipt", json!([deploy])).expect("receipt");
        assert_eq!(r["status"], json!("0x1"), "{r}");
        assert_eq!(r["contractAddress"], json!(format!("0x{}", hex(&contract))));
        assert_eq!(r["to"], Value::Null);
        let code =
            call(&mut n, &mut cx, "eth_getCode", json!([r["contractAddress"], "latest"])).expect("code");
        assert_eq!(code, json!(format!("0x{}", hex(&ping_contract()[12..]))));
        let r = call(&mut n, &mut cx, "eth_getTransactionReceipt", json!([ping])).expect("receipt");
        assert_eq!(r["status"], json!("0x1"), "{r}");
        assert_eq!(r["blockNumber"], json!("0x1"));
        assert_eq!(r["blockHash"], json!(format!("0x{}", hex(&n.chain().best_hash()))));
        assert_eq!(r["transactionHash"], ping);
        assert_eq!(r["transactionIndex"], json!("0x1"));
        assert_eq!(r["from"], json!(KEY1_ADDRESS));
        assert_eq!(r["to"], json!(format!("0x{}", hex(&contract))));
        assert_eq!(r["contractAddress"], Value::Null);
        assert_eq!(r["type"], json!("0x0"));
        assert_eq!(r["effectiveGasPrice"], json!("0x1"));
        let gas = |k: &str| parse_quantity(&r[k], k).expect("quantity");
        assert!(gas("gasUsed") > 21_000 && gas("cumulativeGasUsed") > gas("gasUsed"), "{r}");
        let logs = r["logs"].as_array().expect("logs");
        assert_eq!(logs.len(), 1, "{r}");
        assert_eq!(logs[0]["topics"], json!([format!("0x{}", hex(&ping_topic()))]));
        assert_eq!(logs[0]["data"], json!(word(&fika_side::address_of_secret(&key1()))));
        assert_eq!(logs[0]["transactionHash"], ping);
        assert_eq!(logs[0]["logIndex"], json!("0x0"));
        // The bloom holds the contract's address and the topic: 3 bits each.
        let bloom = parse_data(&r["logsBloom"], "bloom").expect("hex");
        assert_eq!(bloom.len(), 256);
        assert_eq!(bloom.iter().map(|b| b.count_ones()).sum::<u32>(), 6);
        let hash = parse_fixed::<32>(&ping, "h").expect("hash");
        let logs = n.chain().receipt(&hash).expect("mined").receipt.logs;
        assert_eq!(bloom, logs_bloom(&logs).to_vec());
        // Unknown: null; malformed: invalid params.
        let unknown = format!("0x{}", "ab".repeat(32));
        assert_eq!(call(&mut n, &mut cx, "eth_getTransactionReceipt", json!([unknown])), Ok(Value::Null));
        let e = call(&mut n, &mut cx, "eth_getTransactionReceipt", json!(["0x12"])).expect_err("short");
        assert_eq!(e.code, code::INVALID_PARAMS);
    }

    #[test]
    fn eth_call_runs_a_contract_as_the_caller_says() {
        let (mut n, mut cx) = setup();
        let (contract, _, _) = deploy_and_ping(&mut n, &mut cx);
        let to = format!("0x{}", hex(&contract));
        let from = [0x42; 20];
        let got = call(
            &mut n,
            &mut cx,
            "eth_call",
            json!([{"from": format!("0x{}", hex(&from)), "to": to}, "latest"]),
        );
        assert_eq!(got, Ok(json!(word(&from))));
        // Before the contract existed: no code, empty output.
        assert_eq!(call(&mut n, &mut cx, "eth_call", json!([{"to": to}, "0x0"])), Ok(json!("0x")));
    }

    #[test]
    fn eth_get_logs_filters_by_range_address_and_topics() {
        let (mut n, mut cx) = setup();
        mine(&mut n, &mut cx);
        let (contract, _, ping) = deploy_and_ping(&mut n, &mut cx);
        mine(&mut n, &mut cx);
        let address = format!("0x{}", hex(&contract));
        let topic = format!("0x{}", hex(&ping_topic()));
        let logs = |n: &mut SideNode, cx: &mut SideCx, f: Value| call(n, cx, "eth_getLogs", json!([f]));
        let all = logs(&mut n, &mut cx, json!({"fromBlock": "earliest"})).expect("logs");
        assert_eq!(all.as_array().map(Vec::len), Some(1), "{all}");
        assert_eq!(all[0]["blockNumber"], json!("0x2"));
        assert_eq!(all[0]["address"], json!(address));
        assert_eq!(all[0]["transactionHash"], ping);
        assert_eq!(all[0]["transactionIndex"], json!("0x1"));
        assert_eq!(all[0]["removed"], json!(false));
        let f =
            json!({"fromBlock": "0x0", "toBlock": "latest", "address": [address], "topics": [[topic], null]});
        assert_eq!(logs(&mut n, &mut cx, f), Ok(all.clone()));
        let by_hash = json!({"blockHash": all[0]["blockHash"], "address": address});
        assert_eq!(logs(&mut n, &mut cx, by_hash), Ok(all.clone()));
        // Another range, address or topic: nothing.
        assert_eq!(logs(&mut n, &mut cx, json!({"fromBlock": "0x3"})), Ok(json!([])));
        let other = format!("0x{}", "11".repeat(20));
        assert_eq!(logs(&mut n, &mut cx, json!({"fromBlock": "0x0", "address": other})), Ok(json!([])));
        let t = format!("0x{}", "22".repeat(32));
        assert_eq!(logs(&mut n, &mut cx, json!({"fromBlock": "0x0", "topics": [t]})), Ok(json!([])));
        // A second topic the log does not have: nothing.
        assert_eq!(
            logs(&mut n, &mut cx, json!({"fromBlock": "0x0", "topics": [null, topic]})),
            Ok(json!([]))
        );
        // The default range is the best block only.
        assert_eq!(logs(&mut n, &mut cx, json!({})), Ok(json!([])));
        let e = logs(&mut n, &mut cx, json!({"fromBlock": "0x3", "toBlock": "0x1"})).expect_err("reversed");
        assert_eq!(e.code, code::INVALID_PARAMS);
        let e =
            logs(&mut n, &mut cx, json!({"fromBlock": "0x0", "toBlock": "0x2710"})).expect_err("too wide");
        assert_eq!(e.code, LIMIT_EXCEEDED);
        let e = logs(&mut n, &mut cx, json!({"fromBlok": "0x0"})).expect_err("typo");
        assert!(e.code == code::INVALID_PARAMS && e.message.contains("fromBlok"), "{e}");
    }
}
