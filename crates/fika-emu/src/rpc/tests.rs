//! Tests of the RPC server over real sockets (authentication, status codes,
//! envelopes, limits) and of the methods against the thesis demo's nodes.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::rc::Rc;
use std::time::Duration;

use fika_btc::msg::BtcMsg;
use fika_btc::node::{BtcNode, SharedDb};
use fika_core::{Node, NodeId, SimTime};
use serde_json::{Value, json};

use super::client::{ClientError, RpcClient};
use super::http::{Limits, base64_encode};
use super::json::Json;
use super::jsonrpc::{Params, RpcError, code};
use super::methods::{self, BtcEnv};
use super::server::{self, ServerConfig};
use crate::service::{Caller, NetView};

/// A context that records what a node does.
type TestCx = fika_core::testing::TestContext<BtcMsg>;

fn view(name: &str) -> NetView {
    NetView {
        id: NodeId(0),
        name: name.into(),
        started: true,
        now: SimTime::ZERO,
        speed: 1.0,
        configured_peers: 0,
        peers: Vec::new(),
        stats: Default::default(),
        runtime_started_unix: 0,
    }
}

// ----- the server over real sockets ------------------------------------------

const USER: &str = "__cookie__";
const PASS: &str = "0123456789abcdef";

/// Runs a server whose "node" is a counter, on a thread of its own, until
/// the test ends; returns its address.
fn start_server(limits: Limits) -> SocketAddr {
    let std_listener = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind");
    let addr = std_listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().expect("runtime");
        let local = tokio::task::LocalSet::new();
        local.block_on(&rt, async move {
            std_listener.set_nonblocking(true).expect("nonblocking");
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            let (caller, mut rx) = Caller::<u64>::channel();
            let mut cfg = ServerConfig::new(USER, PASS);
            cfg.limits = limits;
            cfg.bad_auth_delay = Duration::from_millis(1);
            let dispatch: server::Dispatch<u64> = Rc::new(|n, _cx, _net, method, params| match method {
                "getblockcount" => {
                    *n += 1;
                    Ok(Json::UInt(*n))
                }
                "echo" => Ok(Json::Value(match params {
                    Params::Positional(v) => Value::Array(v.clone()),
                    _ => Value::Null,
                })),
                _ => Err(RpcError::new(code::METHOD_NOT_FOUND, "Method not found")),
            });
            server::spawn(listener, cfg, caller, dispatch);
            let mut node = 0u64;
            let mut cx = TestCx::new(0, &[]);
            let net = view("test");
            while let Some(call) = rx.recv().await {
                call(&mut node, &mut cx, &net);
            }
        });
    });
    addr
}

/// Sends raw bytes and reads the whole answer (the server closes).
fn raw(addr: SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    s.write_all(bytes).expect("write");
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

fn post(body: &str, auth: Option<(&str, &str)>, close: bool) -> String {
    let mut h = format!("POST / HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\n", body.len());
    if let Some((u, p)) = auth {
        h.push_str(&format!("Authorization: Basic {}\r\n", base64_encode(format!("{u}:{p}").as_bytes())));
    }
    if close {
        h.push_str("Connection: close\r\n");
    }
    format!("{h}\r\n{body}")
}

fn status_and_body(answer: &str) -> (u16, Value) {
    let status = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::Null))
}

#[test]
fn server_speaks_cores_http_and_json_rpc() {
    let addr = start_server(Limits { max_body: 2048, ..Limits::default() });
    let ok = Some((USER, PASS));

    // Missing and wrong credentials: 401 with a challenge, no body.
    for auth in [None, Some((USER, "wrong")), Some(("someone", PASS))] {
        let a = raw(addr, post(r#"{"method":"getblockcount","id":1}"#, auth, true).as_bytes());
        assert!(a.starts_with("HTTP/1.1 401 "), "{a}");
        assert!(a.contains("WWW-Authenticate: Basic realm=\"jsonrpc\""), "{a}");
    }
    let c = RpcClient::new(addr, USER, "nope");
    let answer = c.call("getblockcount", json!([]));
    assert!(matches!(answer, Err(ClientError::Unauthorized { .. })), "{answer:?}");

    // Success: 200 and Core's legacy shape.
    let (st, v) =
        status_and_body(&raw(addr, post(r#"{"method":"getblockcount","id":"a"}"#, ok, true).as_bytes()));
    assert_eq!((st, v), (200, json!({"result": 1, "error": null, "id": "a"})));

    // Bad JSON: 500 with -32700.
    let (st, v) = status_and_body(&raw(addr, post(r#"{"method":"#, ok, true).as_bytes()));
    assert_eq!((st, &v["error"]["code"], &v["id"]), (500, &json!(code::PARSE_ERROR), &Value::Null));

    // Unknown method: 404 with -32601; invalid request: 400 with -32600.
    let (st, v) = status_and_body(&raw(addr, post(r#"{"method":"nosuch","id":3}"#, ok, true).as_bytes()));
    assert_eq!((st, &v["error"]["code"], &v["id"]), (404, &json!(code::METHOD_NOT_FOUND), &json!(3)));
    let (st, v) = status_and_body(&raw(addr, post(r#"{"params":[],"id":4}"#, ok, true).as_bytes()));
    assert_eq!((st, &v["error"]["code"]), (400, &json!(code::INVALID_REQUEST)));

    // JSON-RPC 2.0: 200 even for errors, `result` or `error` only; a
    // notification gets 204 and no body.
    let (st, v) = status_and_body(&raw(
        addr,
        post(r#"{"jsonrpc":"2.0","method":"nosuch","id":5}"#, ok, true).as_bytes(),
    ));
    assert_eq!(st, 200);
    assert_eq!(v, json!({"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":5}));
    let a = raw(addr, post(r#"{"jsonrpc":"2.0","method":"getblockcount"}"#, ok, true).as_bytes());
    assert!(a.starts_with("HTTP/1.1 204 "), "{a}");

    // A batch: 200 and one reply per call, in order, bad members included.
    let body = r#"[{"method":"echo","params":[1,"x"],"id":1},{"method":"nosuch","id":2},7,{"jsonrpc":"2.0","method":"echo"}]"#;
    let (st, v) = status_and_body(&raw(addr, post(body, ok, true).as_bytes()));
    assert_eq!(st, 200);
    let arr = v.as_array().expect("array");
    assert_eq!(arr.len(), 3, "{v}");
    assert_eq!(arr[0], json!({"result":[1,"x"],"error":null,"id":1}));
    assert_eq!(arr[1]["error"]["code"], json!(code::METHOD_NOT_FOUND));
    assert_eq!(arr[2]["error"]["code"], json!(code::INVALID_REQUEST));

    // Oversized body: 413 before it is read; oversized head: 431.
    let big = format!("{{\"method\":\"echo\",\"params\":[\"{}\"]}}", "a".repeat(3000));
    let a = raw(addr, post(&big, ok, true).as_bytes());
    assert!(a.starts_with("HTTP/1.1 413 "), "{a}");
    let a = raw(addr, format!("POST / HTTP/1.1\r\nX: {}\r\n\r\n", "b".repeat(20_000)).as_bytes());
    assert!(a.starts_with("HTTP/1.1 431 "), "{a}");

    // Only POST; garbage is a 400.
    let a = raw(addr, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n");
    assert!(a.starts_with("HTTP/1.1 405 "), "{a}");
    let a = raw(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n");
    assert!(a.starts_with("HTTP/1.1 400 "), "{a}");

    // Keep-alive: two requests on one connection, then Expect: 100-continue.
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let two = format!(
        "{}{}",
        post(r#"{"method":"getblockcount","id":1}"#, ok, false),
        post(r#"{"method":"getblockcount","id":2}"#, ok, true)
    );
    s.write_all(two.as_bytes()).expect("write");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    assert_eq!(out.matches("HTTP/1.1 200 OK").count(), 2, "{out}");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(20))).expect("timeout");
    let body = r#"{"method":"echo","params":[2],"id":9}"#;
    let head = post(body, ok, true).replace("\r\n\r\n", "\r\nExpect: 100-continue\r\n\r\n");
    let head = &head[..head.len() - body.len()];
    s.write_all(head.as_bytes()).expect("write head");
    let mut first = [0u8; 25];
    s.read_exact(&mut first).expect("100 Continue");
    assert_eq!(&first, b"HTTP/1.1 100 Continue\r\n\r\n");
    s.write_all(body.as_bytes()).expect("write body");
    let mut rest = String::new();
    let _ = s.read_to_string(&mut rest);
    assert_eq!(status_and_body(&rest), (200, json!({"result":[2],"error":null,"id":9})));

    // The client reads results and errors.
    let c = RpcClient::new(addr, USER, PASS);
    assert!(c.call("getblockcount", json!([])).is_ok_and(|v| v.as_u64().is_some()));
    assert!(matches!(c.call("nosuch", json!([])), Err(ClientError::Rpc { code: -32601, .. })));
}

// ----- the methods on the thesis demo's nodes ----------------------------------

struct Demo {
    server: BtcNode,
    server_env: BtcEnv,
    scx: TestCx,
    client: BtcNode,
    client_env: BtcEnv,
    ccx: TestCx,
    other: BtcNode,
    other_env: BtcEnv,
}

fn demo() -> Demo {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios/thesis-demo.toml");
    let s = fika_scenario::load_file(std::path::Path::new(path)).expect("thesis demo");
    let l = fika_scenario::layout(&s).expect("layout");
    let node =
        |i: u32| -> (BtcNode, SharedDb) { crate::build_btc_node_with_db(&s, &l, NodeId(i)).expect("node") };
    let (mut server, sdb) = node(0);
    let (mut client, cdb) = node(3);
    let (other, odb) = node(4);
    let mut scx = TestCx::new(0, &[1, 2, 3]);
    let mut ccx = TestCx::new(3, &[0]);
    server.on_start(&mut scx);
    client.on_start(&mut ccx);
    // The wallet's filter reaches its server.
    for (to, m) in std::mem::take(&mut ccx.sent) {
        assert_eq!(to, NodeId(0));
        server.on_message(&mut scx, NodeId(3), m);
    }
    scx.sent.clear();
    Demo {
        server,
        server_env: BtcEnv::new(sdb),
        scx,
        client,
        client_env: BtcEnv::new(cdb),
        ccx,
        other,
        other_env: BtcEnv::new(odb),
    }
}

impl Demo {
    fn server(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let r = methods::handle(
            &mut self.server,
            &self.server_env,
            &mut self.scx,
            &view("server1"),
            method,
            &params_of(params),
        )?;
        Ok(serde_json::from_str(&r.to_text()).expect("valid JSON"))
    }
    fn client(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let r = methods::handle(
            &mut self.client,
            &self.client_env,
            &mut self.ccx,
            &view("client1"),
            method,
            &params_of(params),
        )?;
        Ok(serde_json::from_str(&r.to_text()).expect("valid JSON"))
    }
    fn other(&mut self, method: &str, params: Value) -> Result<Value, RpcError> {
        let mut cx = TestCx::new(4, &[2]);
        let r = methods::handle(
            &mut self.other,
            &self.other_env,
            &mut cx,
            &view("client2"),
            method,
            &params_of(params),
        )?;
        Ok(serde_json::from_str(&r.to_text()).expect("valid JSON"))
    }
    /// Mines one block on the server and hands the client what the server
    /// sent it.
    fn mine(&mut self) {
        self.server.on_timer(&mut self.scx, 1);
        for (to, m) in std::mem::take(&mut self.scx.sent) {
            if to == NodeId(3) {
                self.client.on_message(&mut self.ccx, NodeId(0), m);
            }
        }
    }
}

fn params_of(v: Value) -> Params {
    match v {
        Value::Array(a) => Params::Positional(a),
        Value::Object(m) => Params::Named(m),
        _ => Params::None,
    }
}

fn err_code<T: std::fmt::Debug>(r: Result<T, RpcError>) -> i64 {
    r.expect_err("an error").code
}

#[test]
fn a_payment_through_the_methods_has_cores_shapes() {
    let mut d = demo();
    let genesis = d.server("getbestblockhash", json!([])).expect("tip");
    assert_eq!(d.server("getblockcount", json!([])).expect("count"), json!(0));
    let info = d.server("getblockchaininfo", json!([])).expect("info");
    assert_eq!(
        (&info["chain"], &info["blocks"], &info["bestblockhash"]),
        (&json!("regtest"), &json!(0), &genesis)
    );
    for k in [
        "headers",
        "difficulty",
        "time",
        "mediantime",
        "verificationprogress",
        "initialblockdownload",
        "chainwork",
        "size_on_disk",
        "pruned",
        "warnings",
    ] {
        assert!(info.get(k).is_some(), "getblockchaininfo.{k}");
    }
    let b = d.client("getbalances", json!([])).expect("balances");
    assert_eq!(b["mine"]["trusted"], json!(100.0));
    assert_eq!(d.client("getbalance", json!([])).expect("balance"), json!(100.0));

    // client1 pays client2's address 10 BTC with a fee of 0.5.
    let to = d.other("getnewaddress", json!([])).expect("address");
    assert!(to.as_str().is_some_and(|a| a.starts_with("bcrt1q")), "{to}");
    let txid = d.client("sendtoaddress", json!({"address": to, "amount": 10, "fee": 0.5})).expect("sent");
    let txid = txid.as_str().expect("txid").to_owned();
    let (peer, msg) = d.ccx.sent.pop().expect("handed to the server");
    assert_eq!(peer, NodeId(0));
    let BtcMsg::Tx(tx) = msg else { panic!("a tx message") };
    let hex = bitcoin::consensus::encode::serialize_hex(&*tx);
    let pending = d.client("gettransaction", json!([txid])).expect("pending");
    assert_eq!(
        (&pending["amount"], &pending["fee"], &pending["confirmations"]),
        (&json!(-10.0), &json!(-0.5), &json!(0))
    );
    assert_eq!(d.client("getbalances", json!([])).expect("b")["mine"]["trusted"], json!(89.5));

    // The server takes it through sendrawtransaction into its mempool.
    assert_eq!(d.server("sendrawtransaction", json!([hex])).expect("accepted"), json!(txid));
    assert_eq!(
        d.server("sendrawtransaction", json!([hex])).expect("again"),
        json!(txid),
        "already in the mempool"
    );
    let pool = d.server("getmempoolinfo", json!([])).expect("mempool");
    assert_eq!((&pool["size"], &pool["total_fee"], &pool["loaded"]), (&json!(1), &json!(0.5), &json!(true)));
    assert_eq!(d.server("getrawmempool", json!([])).expect("ids"), json!([txid]));
    let unconf = d.server("getrawtransaction", json!([txid, true])).expect("from the mempool");
    assert_eq!(unconf["txid"], json!(txid));
    assert!(unconf.get("confirmations").is_none() && unconf.get("blockhash").is_none());
    assert_eq!(d.server("getrawtransaction", json!([txid])).expect("hex"), json!(hex));

    // Mined: in block 1 with one confirmation, the wallet sees it too.
    d.mine();
    assert_eq!(d.server("getblockcount", json!([])).expect("count"), json!(1));
    let tip = d.server("getbestblockhash", json!([])).expect("tip");
    assert_eq!(d.server("getblockhash", json!([1])).expect("hash"), tip);
    let t = d.server("getrawtransaction", json!({"txid": txid, "verbose": 1})).expect("confirmed");
    assert_eq!((&t["blockhash"], &t["confirmations"]), (&tip, &json!(1)));
    for k in [
        "txid",
        "hash",
        "version",
        "size",
        "vsize",
        "weight",
        "locktime",
        "vin",
        "vout",
        "hex",
        "time",
        "blocktime",
    ] {
        assert!(t.get(k).is_some(), "getrawtransaction.{k}");
    }
    let paid =
        t["vout"].as_array().expect("vout").iter().find(|o| o["value"] == json!(10.0)).expect("payment");
    assert_eq!(
        (&paid["scriptPubKey"]["address"], &paid["scriptPubKey"]["type"]),
        (&to, &json!("witness_v0_keyhash"))
    );
    assert_eq!(d.server("getmempoolinfo", json!([])).expect("mempool")["size"], json!(0));

    let blk = d.server("getblock", json!([tip])).expect("block");
    assert_eq!((&blk["height"], &blk["confirmations"], &blk["nTx"]), (&json!(1), &json!(1), &json!(2)));
    assert_eq!((&blk["previousblockhash"], &blk["tx"][1]), (&genesis, &json!(txid)));
    assert!(blk.get("nextblockhash").is_none());
    let blk2 = d.server("getblock", json!([tip, 2])).expect("block");
    assert_eq!(blk2["tx"][1]["txid"], json!(txid));
    assert!(blk2["tx"][0]["vin"][0].get("coinbase").is_some());
    let hex0 = d.server("getblock", json!([tip, 0])).expect("hex");
    let decoded: bitcoin::Block =
        bitcoin::consensus::encode::deserialize_hex(hex0.as_str().expect("str")).expect("decodes");
    assert_eq!(decoded.block_hash().to_string(), tip.as_str().expect("str"));
    let g0 = d.server("getblockheader", json!([genesis])).expect("header");
    assert_eq!((&g0["nextblockhash"], &g0["confirmations"]), (&tip, &json!(2)));

    let mined = d.client("gettransaction", json!([txid])).expect("mined");
    assert_eq!(
        (&mined["confirmations"], &mined["blockhash"], &mined["blockheight"]),
        (&json!(1), &tip, &json!(1))
    );
    assert_eq!(d.client("getbalance", json!(["*", 1])).expect("confirmed"), json!(89.5));
    let coins = d.client("listunspent", json!([])).expect("coins");
    assert_eq!(coins.as_array().map(Vec::len), Some(1));
    assert_eq!(
        (&coins[0]["amount"], &coins[0]["confirmations"], &coins[0]["safe"]),
        (&json!(89.5), &json!(1), &json!(true))
    );
    assert_eq!(d.client("getblockcount", json!([])).expect("headers"), json!(1));
    assert_eq!(d.client("getbestblockhash", json!([])).expect("headers"), tip);
    assert_eq!(d.client("getblockheader", json!([tip])).expect("header")["previousblockhash"], genesis);

    // Errors with Core's codes.
    assert_eq!(err_code(d.server("sendrawtransaction", json!([hex]))), code::VERIFY_ALREADY_IN_CHAIN);
    assert_eq!(err_code(d.server("sendrawtransaction", json!(["00zz"]))), code::DESERIALIZATION_ERROR);
    assert_eq!(err_code(d.server("getblock", json!(["11".repeat(32)]))), code::INVALID_ADDRESS_OR_KEY);
    assert_eq!(err_code(d.server("getblock", json!(["11"]))), code::INVALID_PARAMETER);
    assert_eq!(err_code(d.server("getblockhash", json!([7]))), code::INVALID_PARAMETER);
    assert_eq!(
        err_code(d.server("getrawtransaction", json!(["22".repeat(32)]))),
        code::INVALID_ADDRESS_OR_KEY
    );
    assert_eq!(err_code(d.server("getblockcount", json!([1]))), code::MISC_ERROR);
    assert_eq!(err_code(d.server("getbalance", json!([]))), code::METHOD_NOT_FOUND);
    assert_eq!(err_code(d.client("getmempoolinfo", json!([]))), code::METHOD_NOT_FOUND);
    assert_eq!(err_code(d.client("getblock", json!([tip]))), code::MISC_ERROR);
    assert_eq!(
        err_code(d.client("sendtoaddress", json!(["1BoatSLRHtKNngkdXEeobR76b53LETtpyT", 1]))),
        code::INVALID_ADDRESS_OR_KEY
    );
    assert_eq!(err_code(d.client("sendtoaddress", json!([to, 1000]))), code::WALLET_INSUFFICIENT_FUNDS);
    assert_eq!(err_code(d.client("sendtoaddress", json!([to, 0]))), code::TYPE_ERROR);
    assert_eq!(err_code(d.client("sendtoaddress", json!([to, "x"]))), code::TYPE_ERROR);

    // A double spend of client1's coins is refused by the server's mempool.
    let a = d.client("sendtoaddress", json!([to, 1])).expect("first");
    let Some((_, BtcMsg::Tx(first))) = d.ccx.sent.pop() else { panic!("sent") };
    assert_eq!(a, json!(first.compute_txid().to_string()));
    let mut second = (*first).clone();
    second.output[0].value -= bitcoin::Amount::from_sat(1000);
    d.server("sendrawtransaction", json!([bitcoin::consensus::encode::serialize_hex(&*first)]))
        .expect("first in");
    assert_eq!(
        err_code(d.server("sendrawtransaction", json!([bitcoin::consensus::encode::serialize_hex(&second)]))),
        code::VERIFY_REJECTED
    );
}
