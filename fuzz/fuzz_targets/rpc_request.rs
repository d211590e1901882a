//! Requests to a node's JSON-RPC server are untrusted: parsing any bytes as
//! an HTTP request, its credentials and its JSON-RPC body must never panic,
//! and what is accepted stays within the limits.
#![no_main]

use fika_emu::rpc::{http, jsonrpc};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = http::Limits { max_head: 4096, max_headers: 32, max_body: 1 << 16 };
    if let Ok(Some((req, used))) = http::parse_request(data, &limits) {
        assert!(used <= data.len() && req.body.len() <= limits.max_body);
        let _ = req.head.basic_auth();
        let _ = jsonrpc::parse_body(&req.body);
    }
    let _ = jsonrpc::parse_body(data);
});
