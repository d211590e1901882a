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
        let text = self.call_text(method, params)?;
        serde_json::from_str(&text)
            .map_err(|e| ClientError::BadResponse { addr: self.addr, reason: format!("result: {e}") })
    }

    /// Calls `method` and returns its result as the server wrote it (field
    /// order and number formats kept).
    pub fn call_text(&self, method: &str, params: Value) -> Result<String, ClientError> {
        #[derive(serde::Deserialize)]
        struct Reply<'a> {
            #[serde(borrow, default)]
            result: Option<&'a serde_json::value::RawValue>,
            #[serde(default)]
            error: Value,
        }
        let req = serde_json::json!({"jsonrpc": "1.0", "id": "fika", "method": method, "params": params});
        let ans = self.post(req.to_string().as_bytes())?;
        let addr = self.addr;
        if ans.status == 401 {
            return Err(ClientError::Unauthorized { addr });
        }
        let r: Reply<'_> = serde_json::from_slice(&ans.body).map_err(|e| ClientError::BadResponse {
            addr,
            reason: format!("HTTP {}: {e}: {}", ans.status, String::from_utf8_lossy(&ans.body).trim()),
        })?;
        if !r.error.is_null() {
            return Err(ClientError::Rpc {
                code: r.error["code"].as_i64().unwrap_or(0),
                message: r.error["message"].as_str().unwrap_or_default().to_owned(),
            });
        }
        Ok(r.result.map_or_else(|| "null".to_owned(), |v| v.get().to_owned()))
    }
}

/// Indents compact JSON text (two spaces a level), keeping everything else
/// as written.
pub fn indent_json(text: &str) -> String {
    let mut out = String::with_capacity(text.len() * 2);
    let (mut depth, mut in_str, mut escaped) = (0usize, false, false);
    let mut chars = text.chars().peekable();
    let newline = |out: &mut String, depth: usize| {
        out.push('\n');
        out.push_str(&"  ".repeat(depth));
    };
    while let Some(c) = chars.next() {
        if in_str {
            out.push(c);
            match (escaped, c) {
                (true, _) => escaped = false,
                (false, '\\') => escaped = true,
                (false, '"') => in_str = false,
                _ => {}
            }
            continue;
        }
        match c {
            '"' => {
                in_str = true;
                out.push(c);
            }
            '{' | '[' => {
                out.push(c);
                let close = if c == '{' { '}' } else { ']' };
                if chars.peek() == Some(&close) {
                    out.push(close);
                    chars.next();
                } else {
                    depth += 1;
                    newline(&mut out, depth);
                }
            }
            '}' | ']' => {
                depth = depth.saturating_sub(1);
                newline(&mut out, depth);
                out.push(c);
            }
            ',' => {
                out.push(c);
                newline(&mut out, depth);
            }
            ':' => out.push_str(": "),
            c if c.is_whitespace() => {}
            c => out.push(c),
        }
    }
    out
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
        assert_eq!(
            indent_json(r#"{"a":[],"b":{"c":1.50000000,"d":"x,{\"y"},"e":[1,2]}"#),
            "{\n  \"a\": [],\n  \"b\": {\n    \"c\": 1.50000000,\n    \"d\": \"x,{\\\"y\"\n  },\n  \"e\": [\n    1,\n    2\n  ]\n}"
        );
    }
}
