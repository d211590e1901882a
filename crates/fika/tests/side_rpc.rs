//! A small PowPeg network emulated as processes at 10× real time, its
//! sidechain driven from outside through the Ethereum-style JSON-RPC: a
//! transfer, a contract deployment and a contract call signed here and
//! sent with `eth_sendRawTransaction` to one sidechain node are mined by
//! the merge-mining pools, whose RPC then shows the receipts (status
//! `0x1`), the changed balances, the contract's log (`eth_getLogs`) and
//! `eth_call` answers from the contract and the Bridge.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bitcoin::secp256k1::SecretKey;
use fika_emu::orchestrate::NodesFile;
use fika_emu::rpc::client::RpcClient;
use fika_peg::BRIDGE_ADDRESS;
use fika_peg::abi::{BridgeCall, encode_call};
use fika_side::{UnsignedTx, address_of_secret, contract_address, keccak256};
use serde_json::{Value, json};

/// Kills the emulation when the test ends, passed or failed.
struct Emulation(Child);

impl Drop for Emulation {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

impl Emulation {
    fn running(&mut self) -> bool {
        matches!(self.0.try_wait(), Ok(None))
    }
}

/// Polls `f` until it returns `Some`, for as long as the emulation runs.
fn until<T>(emu: &mut Emulation, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(emu.running(), "the emulation ended before {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn quantity(v: &Value) -> u128 {
    let s = v.as_str().unwrap_or_else(|| panic!("a quantity: {v}"));
    u128::from_str_radix(s.trim_start_matches("0x"), 16).unwrap_or_else(|_| panic!("a quantity: {v}"))
}

/// The funded account of the scenario (`side_accounts`): private key 1.
fn key1() -> SecretKey {
    let mut k = [0u8; 32];
    k[31] = 1;
    SecretKey::from_slice(&k).expect("key 1")
}

fn topic() -> [u8; 32] {
    keccak256(b"Ping(address)")
}

/// A contract logging `Ping(address)` with the caller as data on every call
/// and returning the caller: init code, then the runtime.
fn ping_contract() -> Vec<u8> {
    let mut runtime = vec![0x33, 0x60, 0x00, 0x52, 0x7f];
    runtime.extend_from_slice(&topic());
    runtime.extend_from_slice(&[0x60, 0x20, 0x60, 0x00, 0xa1, 0x60, 0x20, 0x60, 0x00, 0xf3]);
    let n = runtime.len() as u8;
    let mut code = vec![0x60, n, 0x60, 0x0c, 0x60, 0x00, 0x39, 0x60, n, 0x60, 0x00, 0xf3];
    code.extend(runtime);
    code
}

fn signed(nonce: u64, to: Option<[u8; 20]>, value: u128, data: Vec<u8>) -> String {
    let tx = UnsignedTx { nonce, gas_price: 1, gas_limit: 200_000, to, value, data, chain_id: Some(33) };
    format!("0x{}", hex(&tx.sign(&key1()).encode()))
}

fn word(address: &[u8; 20]) -> String {
    format!("0x{}{}", "0".repeat(24), hex(address))
}

#[test]
fn sidechain_transactions_over_eth_rpc_are_mined_in_emulation() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let scenario = repo.join("scenarios/tests/powpeg-emu.toml");
    // Removed with everything in it at the end, also when the test fails.
    let dir = tempfile::Builder::new().prefix("fika-side-rpc-").tempdir().expect("temp dir");
    let out: PathBuf = dir.path().to_path_buf();
    let out_s = out.to_string_lossy().into_owned();
    let child = Command::new(env!("CARGO_BIN_EXE_fika"))
        .args([
            "emulate",
            &scenario.to_string_lossy(),
            "--speed",
            "10",
            "--duration",
            "1200",
            "--out",
            &out_s,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("fika emulate starts");
    let mut emu = Emulation(child);
    let nodes = until(&mut emu, "nodes.json was written", || NodesFile::load(&out).ok());
    assert_eq!(nodes.nodes.len(), 5);
    let cookie = out.join(&nodes.cookie);
    let rpc = |name: &str| -> RpcClient {
        let n = nodes.node(name).unwrap_or_else(|| panic!("{name} listed"));
        RpcClient::with_cookie(n.rpc.expect("an RPC address"), &cookie).expect("cookie readable")
    };
    let (rsk, pool) = (rpc("rsk"), rpc("pool1"));

    // The pools merge-mine sidechain blocks.
    until(&mut emu, "a sidechain block", || {
        rsk.call("eth_blockNumber", json!([])).ok().filter(|n| quantity(n) >= 1)
    });
    let me = address_of_secret(&key1());
    let me_hex = format!("0x{}", hex(&me));
    let ten_rbtc = 10 * fika_side::WEI_PER_RBTC;
    assert_eq!(quantity(&rsk.call("eth_getBalance", json!([me_hex, "latest"])).expect("balance")), ten_rbtc);

    // A transfer, a contract and a call of it, sent to the sidechain node.
    let to = [0x5a; 20];
    let to_hex = format!("0x{}", hex(&to));
    let contract = contract_address(&me, 1);
    let contract_hex = format!("0x{}", hex(&contract));
    let hashes: Vec<Value> = [
        signed(0, Some(to), 12_345, Vec::new()),
        signed(1, None, 0, ping_contract()),
        signed(2, Some(contract), 0, vec![0xca, 0xfe]),
    ]
    .into_iter()
    .map(|raw| rsk.call("eth_sendRawTransaction", json!([raw])).expect("taken"))
    .collect();

    // Mined: a pool (another process) has every receipt, each with status 0x1.
    let receipts: Vec<Value> = hashes
        .iter()
        .map(|h| {
            until(&mut emu, "the receipt", || {
                pool.call("eth_getTransactionReceipt", json!([h])).ok().filter(|r| !r.is_null())
            })
        })
        .collect();
    for r in &receipts {
        assert_eq!(r["status"], json!("0x1"), "{r}");
        assert_eq!(r["from"], json!(me_hex));
    }
    assert_eq!(receipts[1]["contractAddress"], json!(contract_hex));
    let gas: u128 = receipts.iter().map(|r| quantity(&r["gasUsed"])).sum();
    let last = receipts.iter().map(|r| quantity(&r["blockNumber"])).max().unwrap_or(0);
    let at = format!("0x{last:x}");

    // Balances changed, as both nodes see them at that block.
    for node in [&rsk, &pool] {
        until(&mut emu, "the sidechain node has the block", || {
            node.call("eth_blockNumber", json!([])).ok().filter(|n| quantity(n) >= last)
        });
        assert_eq!(quantity(&node.call("eth_getBalance", json!([to_hex, at])).expect("balance")), 12_345);
        let mine = quantity(&node.call("eth_getBalance", json!([me_hex, at])).expect("balance"));
        assert_eq!(mine, ten_rbtc - 12_345 - gas, "value and gas at 1 wei");
        assert_eq!(quantity(&node.call("eth_getTransactionCount", json!([me_hex, at])).expect("nonce")), 3);
    }

    // The contract's log.
    let logs = pool
        .call("eth_getLogs", json!([{"fromBlock": "0x0", "toBlock": at, "address": contract_hex}]))
        .expect("logs");
    let logs = logs.as_array().expect("an array");
    assert_eq!(logs.len(), 1, "{logs:?}");
    assert_eq!(logs[0]["topics"], json!([format!("0x{}", hex(&topic()))]));
    assert_eq!(logs[0]["data"], json!(word(&me)));
    assert_eq!(logs[0]["transactionHash"], hashes[2]);
    assert_eq!(receipts[2]["logs"][0], logs[0]);

    // eth_call: the contract answers the caller; the Bridge its minimum peg-in.
    let caller = [0x42; 20];
    let got = rsk
        .call("eth_call", json!([{"from": format!("0x{}", hex(&caller)), "to": contract_hex}, "latest"]))
        .expect("call");
    assert_eq!(got, json!(word(&caller)));
    let input = format!("0x{}", hex(&encode_call(&BridgeCall::GetMinimumLockTxValue)));
    let bridge = format!("0x{}", hex(&BRIDGE_ADDRESS.0));
    let min = rsk.call("eth_call", json!([{"to": bridge, "input": input}])).expect("bridge call");
    assert!(quantity(&min) > 0, "a minimum peg-in: {min}");

    // JSON-RPC 2.0: an unknown method is -32601, an already known transaction -32000.
    let v2 = |node: &RpcClient, body: Value| -> Value {
        let a = node.post(body.to_string().as_bytes()).expect("an answer");
        assert_eq!(a.status, 200);
        serde_json::from_slice(&a.body).expect("JSON")
    };
    let r = v2(&rsk, json!({"jsonrpc": "2.0", "id": 7, "method": "eth_mining", "params": []}));
    assert_eq!((r["id"].clone(), r["error"]["code"].clone()), (json!(7), json!(-32601)), "{r}");
    let again = signed(0, Some(to), 12_345, Vec::new());
    let r =
        v2(&rsk, json!({"jsonrpc": "2.0", "id": 8, "method": "eth_sendRawTransaction", "params": [again]}));
    assert_eq!(r["error"]["code"], json!(-32000), "{r}");
    // A Bitcoin node runs no sidechain.
    let r = v2(&rpc("btc"), json!({"jsonrpc": "2.0", "id": 9, "method": "eth_blockNumber"}));
    assert_eq!(r["error"]["code"], json!(-32601), "{r}");
}
