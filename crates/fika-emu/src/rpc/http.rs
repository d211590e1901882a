//! A small, strict HTTP/1.1 request parser and response writer (sans-IO).
//!
//! [`parse_head`] reads a request line and headers out of a buffer of
//! bytes that came from anywhere: it never panics, never allocates more
//! than the [`Limits`] allow, and refuses anything ambiguous (bare line
//! feeds inside the head, folded or malformed header lines, several
//! different `Content-Length`s, any `Transfer-Encoding`) with an
//! [`HttpError`] that names the fault and carries its status code.

use std::fmt::Write as _;

/// Sizes a request may not exceed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Bytes of the request line and headers together.
    pub max_head: usize,
    /// Number of header lines.
    pub max_headers: usize,
    /// Bytes of the body.
    pub max_body: usize,
}

impl Default for Limits {
    /// 16 KiB of head, 64 headers, 4 MiB of body.
    fn default() -> Self {
        Limits { max_head: 16 * 1024, max_headers: 64, max_body: 4 * 1024 * 1024 }
    }
}

/// A request line and its headers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RequestHead {
    /// The method, e.g. `POST`.
    pub method: String,
    /// The request target, e.g. `/`.
    pub target: String,
    /// The minor HTTP version: 0 for HTTP/1.0, 1 for HTTP/1.1.
    pub minor: u8,
    /// Header lines, names lower-cased, values trimmed, in order.
    pub headers: Vec<(String, String)>,
    /// The body's length (0 without `Content-Length`).
    pub content_length: usize,
    /// Whether the connection stays open after the answer.
    pub keep_alive: bool,
    /// Whether the client waits for `100 Continue` before sending the body.
    pub expect_continue: bool,
}

impl RequestHead {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }

    /// The user and password of a `Basic` `Authorization` header.
    pub fn basic_auth(&self) -> Option<(String, String)> {
        let v = self.header("authorization")?;
        let (scheme, rest) = v.split_once(' ')?;
        if !scheme.eq_ignore_ascii_case("basic") {
            return None;
        }
        let raw = base64_decode(rest.trim())?;
        let text = String::from_utf8(raw).ok()?;
        let (user, pass) = text.split_once(':')?;
        Some((user.to_owned(), pass.to_owned()))
    }
}

/// A whole request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Request {
    /// Request line and headers.
    pub head: RequestHead,
    /// The body.
    pub body: Vec<u8>,
}

/// Why a request was refused before it reached the JSON-RPC layer.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HttpError {
    /// No end of the head within the limit.
    #[error("request head larger than {limit} bytes")]
    HeadTooLarge {
        /// The limit.
        limit: usize,
    },
    /// Too many header lines.
    #[error("more than {limit} header lines")]
    TooManyHeaders {
        /// The limit.
        limit: usize,
    },
    /// The request line is not `METHOD TARGET HTTP/1.x`.
    #[error("malformed request line {0:?}")]
    BadRequestLine(String),
    /// A header line is malformed.
    #[error("malformed header line {0:?}")]
    BadHeader(String),
    /// Not HTTP/1.0 or HTTP/1.1.
    #[error("unsupported HTTP version {0:?}")]
    UnsupportedVersion(String),
    /// `Content-Length` is not one decimal number.
    #[error("bad Content-Length {0:?}")]
    BadContentLength(String),
    /// The body is larger than the limit.
    #[error("body of {length} bytes is larger than the limit of {limit} bytes")]
    BodyTooLarge {
        /// The announced length.
        length: u64,
        /// The limit.
        limit: usize,
    },
    /// A `Transfer-Encoding` (chunked bodies are not supported).
    #[error("Transfer-Encoding {0:?} is not supported (send a Content-Length)")]
    TransferEncoding(String),
}

impl HttpError {
    /// The status code of the answer.
    pub fn status(&self) -> u16 {
        match self {
            HttpError::HeadTooLarge { .. } | HttpError::TooManyHeaders { .. } => 431,
            HttpError::BodyTooLarge { .. } => 413,
            HttpError::UnsupportedVersion(_) => 505,
            HttpError::TransferEncoding(_) => 501,
            HttpError::BadRequestLine(_) | HttpError::BadHeader(_) | HttpError::BadContentLength(_) => 400,
        }
    }
}

/// Shortens hostile input for an error message.
fn excerpt(b: &[u8]) -> String {
    let s = String::from_utf8_lossy(&b[..b.len().min(80)]).into_owned();
    if b.len() > 80 { format!("{s}…") } else { s }
}

fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

/// Parses a request head at the start of `buf`: `Ok(None)` while it is
/// incomplete, else the head and the bytes it took (the body follows).
/// Empty lines before the request line are skipped (RFC 9112 §2.2).
pub fn parse_head(buf: &[u8], limits: &Limits) -> Result<Option<(RequestHead, usize)>, HttpError> {
    let mut start = 0;
    while buf[start..].starts_with(b"\r\n") {
        start += 2;
    }
    let window = &buf[start..buf.len().min(start.saturating_add(limits.max_head).saturating_add(4))];
    let Some(end) = window.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() - start > limits.max_head {
            return Err(HttpError::HeadTooLarge { limit: limits.max_head });
        }
        return Ok(None);
    };
    if end > limits.max_head {
        return Err(HttpError::HeadTooLarge { limit: limits.max_head });
    }
    let head = &window[..end];
    let used = start + end + 4;
    let mut lines = split_crlf(head);
    let line = lines.next().unwrap_or_default();
    let (method, target, minor) = parse_request_line(line)?;
    let mut headers = Vec::new();
    let mut content_length: Option<u64> = None;
    let mut keep_alive = minor >= 1;
    let mut expect_continue = false;
    for l in lines {
        // Bare CR or LF inside a line, or an obsolete folded line: refuse.
        if l.iter().any(|&c| c == b'\r' || c == b'\n') || l.first().is_some_and(|c| *c == b' ' || *c == b'\t')
        {
            return Err(HttpError::BadHeader(excerpt(l)));
        }
        if headers.len() >= limits.max_headers {
            return Err(HttpError::TooManyHeaders { limit: limits.max_headers });
        }
        let colon = l.iter().position(|&c| c == b':').ok_or_else(|| HttpError::BadHeader(excerpt(l)))?;
        let (name, value) = (&l[..colon], &l[colon + 1..]);
        if name.is_empty() || !name.iter().all(|&c| is_tchar(c)) {
            return Err(HttpError::BadHeader(excerpt(l)));
        }
        if value.contains(&0) {
            return Err(HttpError::BadHeader(excerpt(l)));
        }
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        let value = String::from_utf8_lossy(value).trim_matches([' ', '\t']).to_owned();
        match name.as_str() {
            "content-length" => {
                if value.is_empty() || value.len() > 19 || !value.bytes().all(|c| c.is_ascii_digit()) {
                    return Err(HttpError::BadContentLength(value));
                }
                let n: u64 = value.parse().map_err(|_| HttpError::BadContentLength(value.clone()))?;
                if content_length.is_some_and(|c| c != n) {
                    return Err(HttpError::BadContentLength(value));
                }
                content_length = Some(n);
            }
            "transfer-encoding" => return Err(HttpError::TransferEncoding(value)),
            "connection" => {
                for token in value.split(',').map(str::trim) {
                    if token.eq_ignore_ascii_case("close") {
                        keep_alive = false;
                    } else if token.eq_ignore_ascii_case("keep-alive") {
                        keep_alive = true;
                    }
                }
            }
            "expect" => expect_continue = value.eq_ignore_ascii_case("100-continue"),
            _ => {}
        }
        headers.push((name, value));
    }
    let length = content_length.unwrap_or(0);
    if length > limits.max_body as u64 {
        return Err(HttpError::BodyTooLarge { length, limit: limits.max_body });
    }
    let head = RequestHead {
        method,
        target,
        minor,
        headers,
        content_length: length as usize,
        keep_alive,
        expect_continue: expect_continue && minor >= 1,
    };
    Ok(Some((head, used)))
}

/// The lines of a head, split at CRLF only.
fn split_crlf(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    let mut rest = Some(head);
    std::iter::from_fn(move || {
        let r = rest?;
        match r.windows(2).position(|w| w == b"\r\n") {
            Some(i) => {
                rest = Some(&r[i + 2..]);
                Some(&r[..i])
            }
            None => {
                rest = None;
                Some(r)
            }
        }
    })
}

fn parse_request_line(line: &[u8]) -> Result<(String, String, u8), HttpError> {
    let bad = || HttpError::BadRequestLine(excerpt(line));
    let mut parts = line.split(|&c| c == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(bad());
    };
    if method.is_empty() || !method.iter().all(|&c| is_tchar(c)) {
        return Err(bad());
    }
    if target.is_empty() || !target.iter().all(|&c| c.is_ascii_graphic()) {
        return Err(bad());
    }
    let minor = match version {
        b"HTTP/1.1" => 1,
        b"HTTP/1.0" => 0,
        v if v.starts_with(b"HTTP/") => return Err(HttpError::UnsupportedVersion(excerpt(v))),
        _ => return Err(bad()),
    };
    Ok((String::from_utf8_lossy(method).into_owned(), String::from_utf8_lossy(target).into_owned(), minor))
}

/// Parses a whole request at the start of `buf`: `Ok(None)` while the head
/// or the body is incomplete, else the request and the bytes it took.
pub fn parse_request(buf: &[u8], limits: &Limits) -> Result<Option<(Request, usize)>, HttpError> {
    let Some((head, used)) = parse_head(buf, limits)? else { return Ok(None) };
    let end = used + head.content_length;
    if buf.len() < end {
        return Ok(None);
    }
    let body = buf[used..end].to_vec();
    Ok(Some((Request { head, body }, end)))
}

/// The reason phrase of a status code.
pub fn reason(status: u16) -> &'static str {
    match status {
        100 => "Continue",
        200 => "OK",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Payload Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

/// An HTTP/1.1 response with `Content-Length`; `content_type` and `extra`
/// headers are added when given.
pub fn response(
    status: u16,
    content_type: Option<&str>,
    extra: &[(&str, &str)],
    body: &[u8],
    keep_alive: bool,
) -> Vec<u8> {
    let mut head = String::with_capacity(160);
    let _ = write!(head, "HTTP/1.1 {status} {}\r\n", reason(status));
    if let Some(ct) = content_type {
        let _ = write!(head, "Content-Type: {ct}\r\n");
    }
    for (k, v) in extra {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    let _ = write!(head, "Content-Length: {}\r\n", body.len());
    if !keep_alive {
        head.push_str("Connection: close\r\n");
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/// Standard base64 with padding.
pub fn base64_encode(data: &[u8]) -> String {
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [chunk[0], chunk.get(1).copied().unwrap_or(0), chunk.get(2).copied().unwrap_or(0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(B64[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Decodes standard base64 (padding optional); `None` if it is not base64.
pub fn base64_decode(text: &str) -> Option<Vec<u8>> {
    let t = text.trim_end_matches('=');
    if text.len() - t.len() > 2 {
        return None;
    }
    let mut out = Vec::with_capacity(t.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    for c in t.bytes() {
        let v = B64.iter().position(|&b| b == c)? as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    // Leftover bits must be zero padding of the last character.
    if bits >= 6 || acc != 0 {
        return None;
    }
    Some(out)
}

/// Compares secrets in time independent of where they differ.
pub fn same_secret(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for i in 0..a.len().max(b.len()) {
        diff |= usize::from(a.get(i).copied().unwrap_or(0) ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn lim() -> Limits {
        Limits { max_head: 512, max_headers: 8, max_body: 1000 }
    }

    #[test]
    fn a_post_with_auth_and_body() {
        let auth = base64_encode(b"__cookie__:s3cret:x");
        let req = format!(
            "POST / HTTP/1.1\r\nHost: x\r\nAuthorization: Basic {auth}\r\nContent-Length: 4\r\n\r\nbodyNEXT"
        );
        let (r, used) = parse_request(req.as_bytes(), &lim()).expect("valid").expect("complete");
        assert_eq!(r.body, b"body");
        assert_eq!(&req.as_bytes()[used..], b"NEXT");
        assert_eq!(r.head.method, "POST");
        assert!(r.head.keep_alive);
        assert_eq!(r.head.basic_auth(), Some(("__cookie__".into(), "s3cret:x".into())));
        // Incomplete head or body: wait for more.
        assert_eq!(parse_request(&req.as_bytes()[..20], &lim()), Ok(None));
        assert_eq!(parse_request(&req.as_bytes()[..used - 2], &lim()), Ok(None));
    }

    #[test]
    fn hostile_heads_are_refused_with_their_status() {
        let cases: [(&str, u16); 9] = [
            ("GET\r\n\r\n", 400),
            ("POST / HTTP/2.0\r\n\r\n", 505),
            ("POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nContent-Length: 1001\r\n\r\n", 413),
            ("POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            ("POST / HTTP/1.1\r\n folded\r\n\r\n", 400),
            ("POST / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
        ];
        for (text, status) in cases {
            let e = parse_head(text.as_bytes(), &lim()).expect_err(text);
            assert_eq!(e.status(), status, "{text:?}: {e}");
        }
        let many = format!("POST / HTTP/1.1\r\n{}\r\n", "A: b\r\n".repeat(9));
        assert_eq!(parse_head(many.as_bytes(), &lim()), Err(HttpError::TooManyHeaders { limit: 8 }));
        let long = vec![b'A'; 600];
        assert_eq!(parse_head(&long, &lim()), Err(HttpError::HeadTooLarge { limit: 512 }));
    }

    #[test]
    fn connection_and_expect_headers() {
        let r = |t: &str| parse_head(t.as_bytes(), &lim()).expect("valid").expect("complete").0;
        assert!(!r("POST / HTTP/1.0\r\n\r\n").keep_alive);
        assert!(r("POST / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n").keep_alive);
        assert!(!r("POST / HTTP/1.1\r\nConnection: close\r\n\r\n").keep_alive);
        assert!(r("\r\nPOST / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n").expect_continue);
    }

    #[test]
    fn base64_round_trips_and_refuses_junk() {
        for n in 0..20 {
            let data: Vec<u8> = (0..n).map(|i| (i * 37 + 11) as u8).collect();
            assert_eq!(base64_decode(&base64_encode(&data)), Some(data));
        }
        assert_eq!(base64_decode("dXNlcjpwdw=="), Some(b"user:pw".to_vec()));
        assert_eq!(base64_decode("dXNlcjpwdw"), Some(b"user:pw".to_vec()));
        assert_eq!(base64_decode("d*=="), None);
        assert_eq!(base64_decode("dXNlcjpwdx=="), None);
        assert!(same_secret(b"abc", b"abc") && !same_secret(b"abc", b"abd") && !same_secret(b"ab", b"abc"));
    }

    #[test]
    fn responses_carry_length_and_close() {
        let r = response(401, None, &[("WWW-Authenticate", "Basic realm=\"jsonrpc\"")], b"", false);
        let t = String::from_utf8(r).expect("ascii");
        assert!(t.starts_with("HTTP/1.1 401 Unauthorized\r\n"));
        assert!(t.contains("Content-Length: 0\r\n") && t.contains("Connection: close\r\n"));
        assert!(t.ends_with("\r\n\r\n"));
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2000))]

        /// Arbitrary bytes never panic the parser, and whatever it accepts
        /// lies within the buffer and the limits.
        #[test]
        fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..1200)) {
            if let Ok(Some((r, used))) = parse_request(&bytes, &lim()) {
                prop_assert!(used <= bytes.len());
                prop_assert!(r.body.len() <= lim().max_body);
                prop_assert!(r.head.headers.len() <= lim().max_headers);
            }
        }

        /// Near-valid requests (a valid one with bytes flipped, cut or
        /// spliced) never panic either.
        #[test]
        fn mutated_requests_never_panic(
            flips in proptest::collection::vec((0usize..200, any::<u8>()), 0..6),
            cut in 0usize..200,
        ) {
            let mut req = b"POST /wallet/x HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Basic dTpw\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"method\":\"help\"}".to_vec();
            for (at, b) in flips {
                let i = at % req.len();
                req[i] = b;
            }
            req.truncate(cut.max(1).min(req.len()));
            let _ = parse_request(&req, &lim());
            if let Ok(Some((h, _))) = parse_head(&req, &lim()) {
                let _ = h.basic_auth();
            }
        }
    }
}
