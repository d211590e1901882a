//! The JSON-RPC envelope as Bitcoin Core speaks it (sans-IO): request
//! objects and batches in, Core's reply objects and HTTP status codes out.
//!
//! * A request without `"jsonrpc"` (or with `"1.0"`) gets Core's legacy
//!   reply `{"result":…,"error":…,"id":…}` with HTTP 200 on success, 400
//!   for an invalid request, 404 for an unknown method and 500 for any
//!   other error.
//! * A `"jsonrpc":"2.0"` request gets a 2.0 reply (`result` or `error`,
//!   never both) with HTTP 200; a 2.0 request without an `id` is a
//!   notification and gets no reply (HTTP 204 when alone).
//! * A batch (an array) gets an array of replies with HTTP 200.

use serde_json::Value;

use super::json::Json;

/// Bitcoin Core's RPC error codes (`src/rpc/protocol.h`).
pub mod code {
    /// Invalid JSON.
    pub const PARSE_ERROR: i64 = -32700;
    /// Not a valid request object.
    pub const INVALID_REQUEST: i64 = -32600;
    /// No such method.
    pub const METHOD_NOT_FOUND: i64 = -32601;
    /// Invalid method parameters.
    pub const INVALID_PARAMS: i64 = -32602;
    /// Internal error.
    pub const INTERNAL_ERROR: i64 = -32603;
    /// Anything else (also: wrong number of parameters, with the usage).
    pub const MISC_ERROR: i64 = -1;
    /// A parameter of the wrong type.
    pub const TYPE_ERROR: i64 = -3;
    /// A wallet error.
    pub const WALLET_ERROR: i64 = -4;
    /// Invalid address or key; no such block or transaction.
    pub const INVALID_ADDRESS_OR_KEY: i64 = -5;
    /// Not enough funds.
    pub const WALLET_INSUFFICIENT_FUNDS: i64 = -6;
    /// A parameter's value is invalid.
    pub const INVALID_PARAMETER: i64 = -8;
    /// No wallet on this node.
    pub const WALLET_NOT_FOUND: i64 = -18;
    /// Could not decode a transaction or block.
    pub const DESERIALIZATION_ERROR: i64 = -22;
    /// A transaction could not be verified (e.g. missing inputs).
    pub const VERIFY_ERROR: i64 = -25;
    /// A transaction was rejected by the mempool's rules.
    pub const VERIFY_REJECTED: i64 = -26;
    /// The transaction is already in the chain.
    pub const VERIFY_ALREADY_IN_CHAIN: i64 = -27;
}

/// An error object of a reply.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// Core's code.
    pub code: i64,
    /// What went wrong.
    pub message: String,
    /// JSON-RPC 2.0's optional `data` member (a string), e.g. the revert
    /// data of a failed `eth_call`.
    pub data: Option<String>,
}

impl RpcError {
    /// An error with this code and message.
    pub fn new(code: i64, message: impl Into<String>) -> Self {
        RpcError { code, message: message.into(), data: None }
    }

    /// The error with a `data` member.
    pub fn with_data(mut self, data: impl Into<String>) -> Self {
        self.data = Some(data.into());
        self
    }

    /// As a JSON error object.
    pub fn to_json(&self) -> Json {
        let mut o = Json::obj([("code", Json::Int(self.code)), ("message", Json::Str(self.message.clone()))]);
        if let Some(d) = &self.data {
            o.push("data", Json::Str(d.clone()));
        }
        o
    }

    /// The HTTP status of a legacy reply carrying this error.
    pub fn legacy_status(&self) -> u16 {
        match self.code {
            code::INVALID_REQUEST => 400,
            code::METHOD_NOT_FOUND => 404,
            _ => 500,
        }
    }
}

/// A request's parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub enum Params {
    /// None given.
    #[default]
    None,
    /// By position.
    Positional(Vec<Value>),
    /// By name.
    Named(serde_json::Map<String, Value>),
}

/// Which reply shape a request gets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Version {
    /// JSON-RPC 1.0 / Core's legacy shape.
    Legacy,
    /// JSON-RPC 2.0.
    V2,
}

/// One call of a request.
#[derive(Clone, Debug, PartialEq)]
pub struct Call {
    /// Its id (`null` when absent).
    pub id: Value,
    /// Whether it is a 2.0 notification (no reply).
    pub notification: bool,
    /// The reply shape.
    pub version: Version,
    /// The method.
    pub method: String,
    /// Its parameters.
    pub params: Params,
}

/// A request object that is not a valid call: the reply it gets.
#[derive(Clone, Debug, PartialEq)]
pub struct BadCall {
    /// The id, if one could be read.
    pub id: Value,
    /// The reply shape.
    pub version: Version,
    /// Why it is invalid.
    pub error: RpcError,
}

/// What an HTTP body asked for.
#[derive(Clone, Debug, PartialEq)]
pub enum Body {
    /// One request object.
    Single(Result<Call, BadCall>),
    /// An array of request objects.
    Batch(Vec<Result<Call, BadCall>>),
}

/// Most calls in one batch.
pub const MAX_BATCH: usize = 1000;

/// Parses an HTTP body; a body that is not JSON, or neither an object nor
/// an array, is a parse error (Core's `-32700`).
pub fn parse_body(body: &[u8]) -> Result<Body, RpcError> {
    let v: Value =
        serde_json::from_slice(body).map_err(|_| RpcError::new(code::PARSE_ERROR, "Parse error"))?;
    match v {
        Value::Object(_) => Ok(Body::Single(parse_call(v))),
        Value::Array(items) => {
            if items.is_empty() {
                return Ok(Body::Single(Err(BadCall {
                    id: Value::Null,
                    version: Version::V2,
                    error: RpcError::new(code::INVALID_REQUEST, "Invalid Request: empty batch"),
                })));
            }
            if items.len() > MAX_BATCH {
                return Ok(Body::Single(Err(BadCall {
                    id: Value::Null,
                    version: Version::Legacy,
                    error: RpcError::new(
                        code::INVALID_REQUEST,
                        format!("batch of {} calls is larger than the limit of {MAX_BATCH}", items.len()),
                    ),
                })));
            }
            Ok(Body::Batch(items.into_iter().map(parse_call).collect()))
        }
        _ => Err(RpcError::new(code::PARSE_ERROR, "Top-level object parse error")),
    }
}

/// Parses one request object.
pub fn parse_call(v: Value) -> Result<Call, BadCall> {
    let Value::Object(mut o) = v else {
        return Err(BadCall {
            id: Value::Null,
            version: Version::Legacy,
            error: RpcError::new(code::INVALID_REQUEST, "Invalid Request object"),
        });
    };
    let has_id = o.contains_key("id");
    let id = o.remove("id").unwrap_or(Value::Null);
    let bad = |id: Value, version, msg: &str| {
        Err(BadCall { id, version, error: RpcError::new(code::INVALID_REQUEST, msg) })
    };
    let version = match o.get("jsonrpc") {
        None => Version::Legacy,
        Some(Value::String(s)) if s == "1.0" => Version::Legacy,
        Some(Value::String(s)) if s == "2.0" => Version::V2,
        Some(Value::String(_)) => return bad(id, Version::Legacy, "JSON-RPC version not supported"),
        Some(_) => return bad(id, Version::Legacy, "jsonrpc field must be a string"),
    };
    let method = match o.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return bad(id, version, "Method must be a string"),
        None => return bad(id, version, "Missing method"),
    };
    let params = match o.remove("params") {
        None | Some(Value::Null) => Params::None,
        Some(Value::Array(a)) => Params::Positional(a),
        Some(Value::Object(m)) => Params::Named(m),
        Some(_) => return bad(id, version, "Params must be an array or object"),
    };
    Ok(Call { id, notification: version == Version::V2 && !has_id, version, method, params })
}

/// The reply object to a call (`None` for a notification).
pub fn reply(
    id: &Value,
    version: Version,
    notification: bool,
    result: Result<Json, RpcError>,
) -> Option<Json> {
    if notification {
        return None;
    }
    let id = Json::Value(id.clone());
    Some(match (version, result) {
        (Version::Legacy, Ok(r)) => Json::obj([("result", r), ("error", Json::Null), ("id", id)]),
        (Version::Legacy, Err(e)) => Json::obj([("result", Json::Null), ("error", e.to_json()), ("id", id)]),
        (Version::V2, Ok(r)) => Json::obj([("jsonrpc", Json::from("2.0")), ("result", r), ("id", id)]),
        (Version::V2, Err(e)) => {
            Json::obj([("jsonrpc", Json::from("2.0")), ("error", e.to_json()), ("id", id)])
        }
    })
}

/// The HTTP status of a single reply.
pub fn status(version: Version, notification: bool, result: &Result<Json, RpcError>) -> u16 {
    match (version, result) {
        _ if notification => 204,
        (Version::V2, _) | (Version::Legacy, Ok(_)) => 200,
        (Version::Legacy, Err(e)) => e.legacy_status(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn single(text: &str) -> Result<Call, BadCall> {
        match parse_body(text.as_bytes()) {
            Ok(Body::Single(c)) => c,
            other => panic!("{text}: {other:?}"),
        }
    }

    #[test]
    fn bad_json_is_a_parse_error_and_scalars_too() {
        for text in ["{", "", "nul", "\"x\"", "42"] {
            let e = parse_body(text.as_bytes()).expect_err(text);
            assert_eq!(e.code, code::PARSE_ERROR, "{text}");
            assert_eq!(e.legacy_status(), 500);
        }
    }

    #[test]
    fn request_objects_are_checked_like_core() {
        let c = single(r#"{"method":"getblockcount","params":[],"id":7}"#).expect("valid");
        assert_eq!(
            (c.method.as_str(), c.id.clone(), c.version),
            ("getblockcount", json!(7), Version::Legacy)
        );
        let c = single(r#"{"jsonrpc":"2.0","method":"m","params":{"a":1}}"#).expect("valid");
        assert!(c.notification && matches!(c.params, Params::Named(_)));
        for (text, msg) in [
            (r#"{"id":1}"#, "Missing method"),
            (r#"{"method":5,"id":1}"#, "Method must be a string"),
            (r#"{"method":"m","params":3,"id":1}"#, "Params must be an array or object"),
            (r#"{"jsonrpc":"3.0","method":"m","id":1}"#, "JSON-RPC version not supported"),
        ] {
            let e = single(text).expect_err(text);
            assert_eq!(
                (e.error.code, e.error.message.as_str(), e.id),
                (code::INVALID_REQUEST, msg, json!(1))
            );
            assert_eq!(e.error.legacy_status(), 400);
        }
    }

    #[test]
    fn batches_keep_their_order_and_flag_bad_members() {
        let Ok(Body::Batch(calls)) = parse_body(br#"[{"method":"a","id":1}, 5, {"method":"b","id":2}]"#)
        else {
            panic!("a batch")
        };
        assert_eq!(calls.len(), 3);
        assert!(calls[0].as_ref().is_ok_and(|c| c.method == "a"));
        assert!(calls[1].as_ref().is_err_and(|e| e.error.code == code::INVALID_REQUEST));
        assert!(calls[2].as_ref().is_ok_and(|c| c.method == "b"));
        assert!(matches!(parse_body(b"[]"), Ok(Body::Single(Err(_)))));
    }

    #[test]
    fn replies_have_cores_shapes_and_statuses() {
        let ok: Result<Json, RpcError> = Ok(Json::UInt(3));
        let nf: Result<Json, RpcError> = Err(RpcError::new(code::METHOD_NOT_FOUND, "Method not found"));
        let r = reply(&json!(1), Version::Legacy, false, ok.clone()).expect("reply");
        assert_eq!(r.to_text(), r#"{"result":3,"error":null,"id":1}"#);
        let r = reply(&json!("a"), Version::Legacy, false, nf.clone()).expect("reply");
        assert_eq!(
            r.to_text(),
            r#"{"result":null,"error":{"code":-32601,"message":"Method not found"},"id":"a"}"#
        );
        let r = reply(&json!(2), Version::V2, false, nf.clone()).expect("reply");
        assert_eq!(
            r.to_text(),
            r#"{"jsonrpc":"2.0","error":{"code":-32601,"message":"Method not found"},"id":2}"#
        );
        assert_eq!(reply(&Value::Null, Version::V2, true, ok.clone()), None);
        assert_eq!(status(Version::Legacy, false, &ok), 200);
        assert_eq!(status(Version::Legacy, false, &nf), 404);
        assert_eq!(status(Version::V2, false, &nf), 200);
        assert_eq!(status(Version::V2, true, &ok), 204);
        let misc: Result<Json, RpcError> =
            Err(RpcError::new(code::INVALID_ADDRESS_OR_KEY, "Block not found"));
        assert_eq!(status(Version::Legacy, false, &misc), 500);
    }
}
