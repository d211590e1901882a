//! A small blocking JSON-RPC client (one HTTP/1.1 connection per call),
//! for `fika client`, `fika status` and tests.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::http::base64_encode;

/// The user name of cookie authentication (Core's `__cookie__`).
pub const COOKIE_USER: &str = "__cookie__";

/// Largest answer read, bytes.
const MAX_RESPONSE: u64 = 64 * 1024 * 1024;

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The cookie file could not be read or is malformed.
    #[error("{path}: {reason}")]
    Cookie {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// Nothing answers at the address (the node is not running).
    #[error("cannot connect to {addr}: {source}")]
    Connect {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The connection failed or timed out during the call.
    #[error("{addr}: {source}")]
    Io {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The credentials were refused.
    #[error("{addr}: authorization refused (HTTP 401): wrong user or password")]
    Unauthorized {
        /// The address.
        addr: SocketAddr,
    },
    /// The answer is not HTTP with a JSON-RPC reply.
    #[error("{addr}: bad answer: {reason}")]
    BadResponse {
        /// The address.
        addr: SocketAddr,
        /// What is wrong.
        reason: String,
    },
    /// The node answered with an error object.
    #[error("error code {code}: {message}")]
    Rpc {
        /// Core's code.
        code: i64,
        /// The message.
        message: String,
    },
}

/// A client of one node's RPC server.
#[derive(Clone, Debug)]
pub struct RpcClient {
    addr: SocketAddr,
    auth: String,
    timeout: Duration,
}

/// An HTTP answer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpAnswer {
    /// The status code.
    pub status: u16,
    /// The body.
    pub body: Vec<u8>,
}

/// Reads a cookie file (`user:password`, one line).
pub fn read_cookie(path: &Path) -> Result<(String, String), ClientError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| ClientError::Cookie { path: path.to_path_buf(), reason: e.to_string() })?;
    let line = text.lines().next().unwrap_or_default().trim();
    let (user, pass) = line.split_once(':').ok_or_else(|| ClientError::Cookie {
        path: path.to_path_buf(),
        reason: "expected user:password".into(),
    })?;
    Ok((user.to_owned(), pass.to_owned()))
}

impl RpcClient {
    /// A client for the server at `addr` with these credentials (30 s per call).
    pub fn new(addr: SocketAddr, user: &str, password: &str) -> Self {
        let auth = format!("Basic {}", base64_encode(format!("{user}:{password}").as_bytes()));
        RpcClient { addr, auth, timeout: Duration::from_secs(30) }
    }

    /// A client authenticating with a cookie file.
    pub fn with_cookie(addr: SocketAddr, cookie: &Path) -> Result<Self, ClientError> {
        let (u, p) = read_cookie(cookie)?;
        Ok(Self::new(addr, &u, &p))
    }

    /// The same client with another time limit per call.
    pub fn with_timeout(mut self, timeout: Duration) -> Self {
        self.timeout = timeout;
        self
    }

    /// The server's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Posts `body` and returns the status and body of the answer.
    pub fn post(&self, body: &[u8]) -> Result<HttpAnswer, ClientError> {
        let addr = self.addr;
        let io = |source| ClientError::Io { addr, source };
        let mut s = TcpStream::connect_timeout(&addr, self.timeout)
            .map_err(|source| ClientError::Connect { addr, source })?;
        s.set_read_timeout(Some(self.timeout)).map_err(io)?;
        s.set_write_timeout(Some(self.timeout)).map_err(io)?;
        let head = format!(
            "POST / HTTP/1.1\r\nHost: {addr}\r\nAuthorization: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            self.auth,
            body.len()
        );
        s.write_all(head.as_bytes()).and_then(|()| s.write_all(body)).map_err(io)?;
        let mut raw = Vec::new();
        s.take(MAX_RESPONSE).read_to_end(&mut raw).map_err(io)?;
        parse_answer(&raw).map_err(|reason| ClientError::BadResponse { addr, reason })
    }

    /// Calls `method` with `params` (an array or object) and returns its
    /// result.
    pub fn call(&self, method: &str, params: Value) -> Result<Value, ClientError> {
        let req = serde_json::json!({"jsonrpc": "1.0", "id": "fika", "method": method, "params": params});
        let ans = self.post(req.to_string().as_bytes())?;
        let addr = self.addr;
        if ans.status == 401 {
            return Err(ClientError::Unauthorized { addr });
        }
        let v: Value = serde_json::from_slice(&ans.body).map_err(|e| ClientError::BadResponse {
            addr,
            reason: format!("HTTP {}: {e}: {}", ans.status, String::from_utf8_lossy(&ans.body).trim()),
        })?;
        match v.get("error") {
            Some(Value::Null) | None => {}
            Some(e) => {
                return Err(ClientError::Rpc {
                    code: e["code"].as_i64().unwrap_or(0),
                    message: e["message"].as_str().unwrap_or_default().to_owned(),
                });
            }
        }
        v.get("result").cloned().ok_or_else(|| ClientError::BadResponse { addr, reason: "no result".into() })
    }
}

/// Parses a whole HTTP/1.x answer (read to the end of the connection).
pub fn parse_answer(raw: &[u8]) -> Result<HttpAnswer, String> {
    let end = raw.windows(4).position(|w| w == b"\r\n\r\n").ok_or("no end of the HTTP head")?;
    let head = String::from_utf8_lossy(&raw[..end]);
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status: u16 = status_line
        .strip_prefix("HTTP/1.")
        .and_then(|r| r.get(2..5))
        .and_then(|c| c.parse().ok())
        .ok_or_else(|| format!("bad status line {status_line:?}"))?;
    let mut body = &raw[end + 4..];
    for l in lines {
        if let Some((k, v)) = l.split_once(':') {
            if k.trim().eq_ignore_ascii_case("content-length") {
                let n: usize = v.trim().parse().map_err(|_| format!("bad Content-Length {v:?}"))?;
                if n > body.len() {
                    return Err(format!("body cut short ({} of {n} bytes)", body.len()));
                }
                body = &body[..n];
            }
        }
    }
    Ok(HttpAnswer { status, body: body.to_vec() })
}

/// Parses a command-line parameter as `bitcoin-cli` does: JSON if it is
/// valid JSON, else a string.
pub fn cli_param(arg: &str) -> Value {
    serde_json::from_str(arg).unwrap_or_else(|_| Value::String(arg.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_and_cli_params_parse() {
        let a = parse_answer(b"HTTP/1.1 404 Not Found\r\nContent-Length: 2\r\n\r\n{}xx").expect("answer");
        assert_eq!(a, HttpAnswer { status: 404, body: b"{}".to_vec() });
        assert!(parse_answer(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n{}").is_err());
        assert!(parse_answer(b"garbage").is_err());
        assert_eq!(cli_param("10"), serde_json::json!(10));
        assert_eq!(cli_param("true"), serde_json::json!(true));
        assert_eq!(cli_param("bcrt1qxyz"), serde_json::json!("bcrt1qxyz"));
        assert_eq!(cli_param("[1,\"a\"]"), serde_json::json!([1, "a"]));
    }
}
