//! Method parameters, by position or by name, read with Core's checks and
//! error codes (wrong count: `-1` with the usage; wrong type: `-3`; bad
//! value: `-8`).

use std::str::FromStr;

use bitcoin::Amount;
use serde_json::Value;

use super::jsonrpc::{Params, RpcError, code};

/// A method's parameters, laid out by position.
pub struct Args<'a> {
    method: &'a str,
    names: &'static [&'static str],
    vals: Vec<Option<&'a Value>>,
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "bool",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn type_error(v: &Value, expected: &str) -> RpcError {
    RpcError::new(
        code::TYPE_ERROR,
        format!("JSON value of type {} is not of expected type {expected}", type_name(v)),
    )
}

impl<'a> Args<'a> {
    /// Lays out `params` for `method`, whose parameters are `names` (the
    /// first `required` of them required).
    pub fn new(
        method: &'a str,
        params: &'a Params,
        names: &'static [&'static str],
        required: usize,
    ) -> Result<Self, RpcError> {
        let usage = || {
            let list: Vec<String> = names
                .iter()
                .enumerate()
                .map(|(i, n)| if i < required { (*n).to_owned() } else { format!("[{n}]") })
                .collect();
            RpcError::new(
                code::MISC_ERROR,
                format!("usage: {method} {}", list.join(" ")).trim_end().to_owned(),
            )
        };
        let mut vals: Vec<Option<&Value>> = vec![None; names.len()];
        match params {
            Params::None => {}
            Params::Positional(list) => {
                if list.len() > names.len() {
                    return Err(usage());
                }
                for (i, v) in list.iter().enumerate() {
                    vals[i] = Some(v).filter(|v| !v.is_null());
                }
            }
            Params::Named(map) => {
                for (k, v) in map {
                    let i = names.iter().position(|n| n == k).ok_or_else(|| {
                        RpcError::new(code::INVALID_PARAMETER, format!("Unknown named parameter {k}"))
                    })?;
                    vals[i] = Some(v).filter(|v| !v.is_null());
                }
            }
        }
        if vals.iter().take(required).any(Option::is_none) {
            return Err(usage());
        }
        Ok(Args { method, names, vals })
    }

    fn at(&self, i: usize) -> Option<&'a Value> {
        self.vals.get(i).copied().flatten()
    }

    /// The name of parameter `i`.
    pub fn name(&self, i: usize) -> &'static str {
        self.names.get(i).copied().unwrap_or("?")
    }

    /// Whether parameter `i` was given.
    pub fn has(&self, i: usize) -> bool {
        self.at(i).is_some()
    }

    /// A string parameter.
    pub fn str(&self, i: usize) -> Result<Option<&'a str>, RpcError> {
        match self.at(i) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s)),
            Some(v) => Err(type_error(v, "string")),
        }
    }

    /// A required string parameter.
    pub fn req_str(&self, i: usize) -> Result<&'a str, RpcError> {
        self.str(i)?.ok_or_else(|| {
            RpcError::new(code::MISC_ERROR, format!("{}: missing {}", self.method, self.name(i)))
        })
    }

    /// A boolean parameter.
    pub fn bool(&self, i: usize, default: bool) -> Result<bool, RpcError> {
        match self.at(i) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(v) => Err(type_error(v, "bool")),
        }
    }

    /// An integer parameter.
    pub fn int(&self, i: usize, default: i64) -> Result<i64, RpcError> {
        match self.at(i) {
            None => Ok(default),
            Some(Value::Number(n)) => n.as_i64().ok_or_else(|| {
                RpcError::new(code::TYPE_ERROR, format!("{}: {n} is not an integer", self.name(i)))
            }),
            Some(v) => Err(type_error(v, "number")),
        }
    }

    /// A number parameter.
    pub fn float(&self, i: usize) -> Result<Option<f64>, RpcError> {
        match self.at(i) {
            None => Ok(None),
            Some(Value::Number(n)) => Ok(n.as_f64()),
            Some(v) => Err(type_error(v, "number")),
        }
    }

    /// A verbosity: a number, or a boolean (false = 0, true = 1).
    pub fn verbosity(&self, i: usize, default: i64) -> Result<i64, RpcError> {
        match self.at(i) {
            Some(Value::Bool(b)) => Ok(i64::from(*b)),
            _ => self.int(i, default),
        }
    }

    /// A 32-byte hash in hex (Core's `ParseHashV`).
    pub fn hash<H: FromStr>(&self, i: usize) -> Result<H, RpcError> {
        let name = self.name(i);
        let s = self.req_str(i)?;
        if s.len() != 64 {
            return Err(RpcError::new(
                code::INVALID_PARAMETER,
                format!("{name} must be of length 64 (not {}, for '{s}')", s.len()),
            ));
        }
        if !s.bytes().all(|c| c.is_ascii_hexdigit()) {
            return Err(RpcError::new(
                code::INVALID_PARAMETER,
                format!("{name} must be hexadecimal string (not '{s}')"),
            ));
        }
        H::from_str(s).map_err(|_| RpcError::new(code::INVALID_PARAMETER, format!("{name}: bad hash '{s}'")))
    }

    /// An amount in BTC, a number or a string (Core's `AmountFromValue`).
    pub fn amount(&self, i: usize) -> Result<Option<Amount>, RpcError> {
        let v = match self.at(i) {
            None => return Ok(None),
            Some(v) => v,
        };
        let parsed = match v {
            Value::Number(n) => match n.as_f64() {
                Some(f) if f < 0.0 => return Err(RpcError::new(code::TYPE_ERROR, "Amount out of range")),
                Some(f) => Amount::from_btc(f),
                None => return Err(RpcError::new(code::TYPE_ERROR, "Invalid amount")),
            },
            Value::String(s) => Amount::from_str_in(s.trim(), bitcoin::Denomination::Bitcoin),
            v => return Err(type_error(v, "number")),
        };
        let a = parsed.map_err(|e| RpcError::new(code::TYPE_ERROR, format!("Invalid amount: {e}")))?;
        if a > Amount::MAX_MONEY {
            return Err(RpcError::new(code::TYPE_ERROR, "Amount out of range"));
        }
        Ok(Some(a))
    }

    /// An array parameter.
    pub fn array(&self, i: usize) -> Result<Option<&'a Vec<Value>>, RpcError> {
        match self.at(i) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(v) => Err(type_error(v, "array")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const NAMES: &[&str] = &["blockhash", "verbosity"];

    fn pos(v: Value) -> Params {
        match v {
            Value::Array(a) => Params::Positional(a),
            Value::Object(m) => Params::Named(m),
            _ => Params::None,
        }
    }

    #[test]
    fn positional_and_named_agree_and_counts_are_checked() {
        let h = "00".repeat(32);
        let p1 = pos(json!([h, 2]));
        let p2 = pos(json!({"verbosity": 2, "blockhash": h}));
        for p in [&p1, &p2] {
            let a = Args::new("getblock", p, NAMES, 1).expect("valid");
            assert_eq!(a.verbosity(1, 1), Ok(2));
            assert!(a.hash::<bitcoin::BlockHash>(0).is_ok());
        }
        let e = Args::new("getblock", &pos(json!([h, 1, 3])), NAMES, 1).err().expect("too many");
        assert_eq!((e.code, e.message.as_str()), (code::MISC_ERROR, "usage: getblock blockhash [verbosity]"));
        assert_eq!(
            Args::new("getblock", &Params::None, NAMES, 1).err().map(|e| e.code),
            Some(code::MISC_ERROR)
        );
        let e = Args::new("getblock", &pos(json!({"hash": h})), NAMES, 0).err().expect("unknown name");
        assert_eq!(e.code, code::INVALID_PARAMETER);
    }

    #[test]
    fn values_are_checked_like_core() {
        let p = pos(json!(["abc", "x", 1.5, -1, "0.00000001", 0.123456789, true]));
        let names: &'static [&'static str] = &["h", "n", "f", "neg", "s", "precise", "b"];
        let a = Args::new("m", &p, names, 0).expect("valid");
        let e = a.hash::<bitcoin::Txid>(0).expect_err("short");
        assert_eq!(
            (e.code, e.message.as_str()),
            (code::INVALID_PARAMETER, "h must be of length 64 (not 3, for 'abc')")
        );
        assert_eq!(a.int(1, 0).err().map(|e| e.code), Some(code::TYPE_ERROR));
        assert_eq!(a.amount(2), Ok(Some(Amount::from_sat(150_000_000))));
        assert_eq!(a.amount(3).err().map(|e| e.code), Some(code::TYPE_ERROR));
        assert_eq!(a.amount(4), Ok(Some(Amount::from_sat(1))));
        assert_eq!(a.amount(5).err().map(|e| e.code), Some(code::TYPE_ERROR));
        assert_eq!(a.verbosity(6, 0), Ok(1));
        let nonhex = pos(json!(["zz".repeat(32)]));
        let a = Args::new("m", &nonhex, &["blockhash"], 1).expect("valid");
        assert!(a.hash::<bitcoin::BlockHash>(0).is_err_and(|e| e.message.contains("hexadecimal")));
    }
}
