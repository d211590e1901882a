//! A Bitcoin Core-compatible JSON-RPC server in every emulated node.
//!
//! HTTP/1.1 POST on a loopback port with HTTP Basic authentication (the
//! orchestrator writes a random password to the run's `.cookie`, as Core
//! does), JSON-RPC 1.0 and 2.0 requests and batches, Core's reply shape,
//! error codes and HTTP status codes, and Core's methods with Core's field
//! names (see [`methods`]).
//!
//! * [`http`]: the request parser (sans-IO, bounded, never panics) and
//!   response writer;
//! * [`jsonrpc`]: the envelope — requests, batches, replies, codes;
//! * [`args`]: method parameters by position or name;
//! * [`json`]: answers with Core's field order and 8-decimal amounts;
//! * [`core_json`]: blocks, headers and transactions in Core's shapes;
//! * [`methods`]: the methods of full and wallet nodes;
//! * [`eth`]: the Ethereum-style methods of sidechain nodes (PowPeg
//!   scenarios), JSON-RPC 2.0 error codes;
//! * [`server`]: the tokio tasks serving connections beside the node loop;
//! * [`client`]: a blocking client for the command line and tests.

pub mod args;
pub mod client;
pub mod core_json;
pub mod eth;
pub mod http;
pub mod json;
pub mod jsonrpc;
pub mod methods;
pub mod server;

use std::rc::Rc;

use fika_peg::network::{PegMsg, PegNode};

use crate::EmuError;
use crate::service::{BtcHost, Caller};
pub use methods::BtcEnv;
pub use server::ServerConfig;

/// Serves the JSON-RPC methods of a Bitcoin-like node on `listener` (a
/// bound standard listener); call inside the node's runtime, e.g. from the
/// services of [`crate::runtime::run_node_with`].
pub fn serve_btc<N: BtcHost>(
    listener: std::net::TcpListener,
    cfg: ServerConfig,
    caller: Caller<N>,
    env: BtcEnv,
) -> Result<(), EmuError> {
    let addr = listener
        .local_addr()
        .map_err(|source| EmuError::Bind { addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)), source })?;
    let bind = |source| EmuError::Bind { addr, source };
    listener.set_nonblocking(true).map_err(bind)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind)?;
    let dispatch: server::Dispatch<N> = Rc::new(move |host: &mut N, cx, net, method, params| {
        let mut answer = None;
        host.with_btc(
            cx,
            Box::new(|node, cx| answer = Some(methods::handle(node, &env, cx, net, method, params))),
        );
        answer.unwrap_or_else(|| Err(jsonrpc::RpcError::new(-1, "the node has stopped taking input")))
    });
    server::spawn(listener, cfg, caller, dispatch);
    Ok(())
}

/// Serves the sidechain's JSON-RPC methods ([`eth`]) of a PowPeg node on
/// `listener`, like [`serve_btc`]; a node without a sidechain node answers
/// every method with `-32601`.
pub fn serve_peg(
    listener: std::net::TcpListener,
    cfg: ServerConfig,
    caller: Caller<PegNode, PegMsg>,
) -> Result<(), EmuError> {
    let addr = listener
        .local_addr()
        .map_err(|source| EmuError::Bind { addr: std::net::SocketAddr::from(([127, 0, 0, 1], 0)), source })?;
    let bind = |source| EmuError::Bind { addr, source };
    listener.set_nonblocking(true).map_err(bind)?;
    let listener = tokio::net::TcpListener::from_std(listener).map_err(bind)?;
    let dispatch: server::Dispatch<PegNode, PegMsg> = Rc::new(
        |node: &mut PegNode, cx, _net, method, params| {
            let kind = node.kind();
            node.with_side(cx, |side, scx| eth::handle(side, scx, method, params)).unwrap_or_else(|| {
            Err(jsonrpc::RpcError::new(
                jsonrpc::code::METHOD_NOT_FOUND,
                format!("the method {method} does not exist/is not available (a {kind} node runs no sidechain)"),
            ))
        })
        },
    );
    server::spawn(listener, cfg, caller, dispatch);
    Ok(())
}

/// Writes a file only its owner may read (Unix mode 0600), replacing it.
pub fn write_private(path: &std::path::Path, bytes: &[u8]) -> Result<(), EmuError> {
    use std::io::Write as _;
    // A new file, so an old one's wider permissions do not carry over.
    let _ = std::fs::remove_file(path);
    let mut o = std::fs::OpenOptions::new();
    o.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt as _;
        o.mode(0o600);
    }
    let mut f = o.open(path).map_err(crate::error::io_at(path))?;
    f.write_all(bytes).map_err(crate::error::io_at(path))
}

/// A random cookie (`__cookie__:<64 hex digits>`) from the OS's generator.
pub fn new_cookie() -> (String, String) {
    use bitcoin::secp256k1::rand::RngCore as _;
    let mut secret = [0u8; 32];
    bitcoin::secp256k1::rand::rngs::OsRng.fill_bytes(&mut secret);
    (client::COOKIE_USER.to_owned(), core_json::hex(&secret))
}

#[cfg(test)]
mod tests;
