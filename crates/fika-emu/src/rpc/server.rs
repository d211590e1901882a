//! The HTTP side of the JSON-RPC server: tokio tasks on the node's
//! `LocalSet`, one per connection, with Core's authentication and status
//! codes. Calls go to the node loop through a [`Caller`].
//!
//! Every connection is bounded: the head and the body by [`Limits`], every
//! read by [`ServerConfig::read_timeout`] (an idle keep-alive connection by
//! [`ServerConfig::idle_timeout`]), the number of connections by
//! [`ServerConfig::max_connections`]. A request without valid credentials
//! gets `401` after [`ServerConfig::bad_auth_delay`] (Core waits too, to
//! slow down guessing) and the connection is closed.

use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

use fika_btc::msg::BtcMsg;
use fika_core::Context;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::http::{self, Limits};
use super::json::Json;
use super::jsonrpc::{self, Body, Call, Params, RpcError, code};
use crate::service::{Caller, NetView};

/// How the server runs.
#[derive(Clone, Debug)]
pub struct ServerConfig {
    /// The user of HTTP Basic authentication.
    pub user: String,
    /// Its password.
    pub password: String,
    /// Request size limits.
    pub limits: Limits,
    /// Longest wait for the rest of a started request.
    pub read_timeout: Duration,
    /// Longest wait for a new request on a kept-alive connection.
    pub idle_timeout: Duration,
    /// Connections served at once; more are answered `503` and closed.
    pub max_connections: usize,
    /// Wait before answering `401`.
    pub bad_auth_delay: Duration,
}

impl ServerConfig {
    /// Defaults for `user` / `password`: [`Limits::default`], 10 s reads,
    /// 30 s idle, 32 connections, 250 ms before a `401`.
    pub fn new(user: impl Into<String>, password: impl Into<String>) -> Self {
        ServerConfig {
            user: user.into(),
            password: password.into(),
            limits: Limits::default(),
            read_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(30),
            max_connections: 32,
            bad_auth_delay: Duration::from_millis(250),
        }
    }
}

/// Answers one call on the node loop (of a node speaking messages `M`).
pub type Dispatch<N, M = BtcMsg> =
    Rc<dyn Fn(&mut N, &mut dyn Context<M>, &NetView, &str, &Params) -> Result<Json, RpcError>>;

struct Shared<N, M> {
    cfg: ServerConfig,
    caller: Caller<N, M>,
    dispatch: Dispatch<N, M>,
    active: Cell<usize>,
}

/// Serves JSON-RPC on `listener` until the runtime ends. Must be called
/// inside a `LocalSet`.
pub fn spawn<N: 'static, M: 'static>(
    listener: TcpListener,
    cfg: ServerConfig,
    caller: Caller<N, M>,
    dispatch: Dispatch<N, M>,
) {
    let shared = Rc::new(Shared { cfg, caller, dispatch, active: Cell::new(0) });
    tokio::task::spawn_local(async move {
        loop {
            match listener.accept().await {
                Ok((stream, _)) => {
                    let shared = Rc::clone(&shared);
                    tokio::task::spawn_local(async move {
                        if shared.active.get() >= shared.cfg.max_connections {
                            let body = b"too many connections\n";
                            let r = http::response(503, Some("text/plain"), &[], body, false);
                            let mut stream = stream;
                            let _ = tokio::time::timeout(shared.cfg.read_timeout, stream.write_all(&r)).await;
                            return;
                        }
                        shared.active.set(shared.active.get() + 1);
                        serve_conn(stream, &shared).await;
                        shared.active.set(shared.active.get() - 1);
                    });
                }
                Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
            }
        }
    });
}

/// What ends a connection.
enum Next {
    Continue,
    Close,
}

async fn write(stream: &mut TcpStream, bytes: &[u8], limit: Duration) -> Next {
    match tokio::time::timeout(limit, stream.write_all(bytes)).await {
        Ok(Ok(())) => Next::Continue,
        _ => Next::Close,
    }
}

async fn fail(stream: &mut TcpStream, status: u16, message: &str, limit: Duration) {
    let body = format!("{message}\n");
    let r = http::response(status, Some("text/plain"), &[], body.as_bytes(), false);
    let _ = write(stream, &r, limit).await;
    linger(stream, limit).await;
}

/// Closes after a final answer without losing it: a socket closed with
/// unread input (say, the body of a refused request) is reset, and the
/// reset can discard the answer before the client has read it. So the
/// write side is shut and what the client still sends is read and dropped
/// (at most 1 MiB, until `limit`) before the socket closes.
async fn linger(stream: &mut TcpStream, limit: Duration) {
    let _ = stream.shutdown().await;
    let deadline = tokio::time::Instant::now() + limit;
    let mut sink = [0u8; 4096];
    let mut left: usize = 1 << 20;
    while left > 0 {
        match tokio::time::timeout_at(deadline, stream.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => left = left.saturating_sub(n),
            _ => break,
        }
    }
}

async fn serve_conn<N: 'static, M: 'static>(mut stream: TcpStream, shared: &Shared<N, M>) {
    let _ = stream.set_nodelay(true);
    let cfg = &shared.cfg;
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        let (head, used) = loop {
            match http::parse_head(&buf, &cfg.limits) {
                Ok(Some(h)) => break h,
                Ok(None) => {}
                Err(e) => return fail(&mut stream, e.status(), &e.to_string(), cfg.read_timeout).await,
            }
            let wait = if buf.is_empty() { cfg.idle_timeout } else { cfg.read_timeout };
            match tokio::time::timeout(wait, stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) if buf.is_empty() => return,
                Err(_) => return fail(&mut stream, 408, "request incomplete", cfg.read_timeout).await,
            }
        };
        buf.drain(..used);
        if head.method != "POST" {
            return fail(&mut stream, 405, "JSONRPC server handles only POST requests", cfg.read_timeout)
                .await;
        }
        let authorized = head.basic_auth().is_some_and(|(u, p)| {
            http::same_secret(u.as_bytes(), cfg.user.as_bytes())
                & http::same_secret(p.as_bytes(), cfg.password.as_bytes())
        });
        if !authorized {
            tokio::time::sleep(cfg.bad_auth_delay).await;
            let r = http::response(401, None, &[("WWW-Authenticate", "Basic realm=\"jsonrpc\"")], b"", false);
            let _ = write(&mut stream, &r, cfg.read_timeout).await;
            return linger(&mut stream, cfg.read_timeout).await;
        }
        if head.expect_continue && buf.len() < head.content_length {
            if let Next::Close = write(&mut stream, b"HTTP/1.1 100 Continue\r\n\r\n", cfg.read_timeout).await
            {
                return;
            }
        }
        while buf.len() < head.content_length {
            match tokio::time::timeout(cfg.read_timeout, stream.read(&mut chunk)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return,
                Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
                Err(_) => return fail(&mut stream, 408, "request body incomplete", cfg.read_timeout).await,
            }
        }
        let body: Vec<u8> = buf.drain(..head.content_length).collect();
        let (status, text) = answer(shared, &body).await;
        let r = if status == 204 {
            http::response(204, None, &[], b"", head.keep_alive)
        } else {
            http::response(status, Some("application/json"), &[], text.as_bytes(), head.keep_alive)
        };
        if let Next::Close = write(&mut stream, &r, cfg.read_timeout).await {
            return;
        }
        if !head.keep_alive {
            let _ = stream.shutdown().await;
            return;
        }
    }
}

async fn run<N: 'static, M: 'static>(shared: &Shared<N, M>, call: &Call) -> Result<Json, RpcError> {
    let dispatch = Rc::clone(&shared.dispatch);
    let (method, params) = (call.method.clone(), call.params.clone());
    match shared.caller.call(move |node, cx, net| dispatch(node, cx, net, &method, &params)).await {
        Ok(r) => r,
        Err(e) => Err(RpcError::new(code::MISC_ERROR, e.to_string())),
    }
}

/// The HTTP status and body answering a JSON-RPC body.
async fn answer<N: 'static, M: 'static>(shared: &Shared<N, M>, body: &[u8]) -> (u16, String) {
    let line = |j: Json| {
        let mut t = j.to_text();
        t.push('\n');
        t
    };
    match jsonrpc::parse_body(body) {
        Err(e) => {
            let status = e.legacy_status();
            let r = jsonrpc::reply(&serde_json::Value::Null, jsonrpc::Version::Legacy, false, Err(e));
            (status, r.map(line).unwrap_or_default())
        }
        Ok(Body::Single(Err(bad))) => {
            let result = Err(bad.error);
            let status = jsonrpc::status(bad.version, false, &result);
            (status, jsonrpc::reply(&bad.id, bad.version, false, result).map(line).unwrap_or_default())
        }
        Ok(Body::Single(Ok(call))) => {
            let result = run(shared, &call).await;
            let status = jsonrpc::status(call.version, call.notification, &result);
            (
                status,
                jsonrpc::reply(&call.id, call.version, call.notification, result)
                    .map(line)
                    .unwrap_or_default(),
            )
        }
        Ok(Body::Batch(calls)) => {
            let mut replies = Vec::with_capacity(calls.len());
            for c in calls {
                let r = match c {
                    Ok(call) => {
                        let result = run(shared, &call).await;
                        jsonrpc::reply(&call.id, call.version, call.notification, result)
                    }
                    Err(bad) => jsonrpc::reply(&bad.id, bad.version, false, Err(bad.error)),
                };
                replies.extend(r);
            }
            if replies.is_empty() { (204, String::new()) } else { (200, line(Json::Array(replies))) }
        }
    }
}
