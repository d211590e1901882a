//! The JSON that answers are built of: objects keep their fields in the
//! order Bitcoin Core prints them, and money is printed as Core prints it,
//! a number with exactly eight decimals (`59.00000000`).

use std::fmt::Write as _;

use bitcoin::Amount;

/// A JSON value as an RPC answer writes it.
#[derive(Clone, Debug, PartialEq)]
pub enum Json {
    /// `null`.
    Null,
    /// `true` / `false`.
    Bool(bool),
    /// An integer.
    Int(i64),
    /// A non-negative integer.
    UInt(u64),
    /// A floating-point number (non-finite values are written as `null`).
    Float(f64),
    /// Satoshis, written in BTC with eight decimals.
    Amount(i64),
    /// A string.
    Str(String),
    /// An array.
    Array(Vec<Json>),
    /// An object, fields in order.
    Object(Vec<(String, Json)>),
    /// Any other JSON (e.g. a request id echoed back).
    Value(serde_json::Value),
}

impl Json {
    /// An object from `(key, value)` pairs, in order.
    pub fn obj<K: Into<String>>(fields: impl IntoIterator<Item = (K, Json)>) -> Json {
        Json::Object(fields.into_iter().map(|(k, v)| (k.into(), v)).collect())
    }

    /// An amount of money.
    pub fn btc(a: Amount) -> Json {
        Json::Amount(i64::try_from(a.to_sat()).unwrap_or(i64::MAX))
    }

    /// A signed amount of satoshis.
    pub fn sats(s: i64) -> Json {
        Json::Amount(s)
    }

    /// Appends a field to an object (no-op on other values).
    pub fn push(&mut self, key: &str, value: Json) {
        if let Json::Object(f) = self {
            f.push((key.to_owned(), value));
        }
    }

    /// The value of field `key` of an object.
    pub fn get(&self, key: &str) -> Option<&Json> {
        match self {
            Json::Object(f) => f.iter().find(|(k, _)| k == key).map(|(_, v)| v),
            _ => None,
        }
    }

    /// Writes it as compact JSON text.
    pub fn write(&self, out: &mut String) {
        match self {
            Json::Null => out.push_str("null"),
            Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
            Json::Int(i) => {
                let _ = write!(out, "{i}");
            }
            Json::UInt(u) => {
                let _ = write!(out, "{u}");
            }
            Json::Float(f) => match serde_json::Number::from_f64(*f) {
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => out.push_str("null"),
            },
            Json::Amount(s) => write_amount(*s, out),
            Json::Str(s) => write_str(s, out),
            Json::Array(items) => {
                out.push('[');
                for (i, v) in items.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    v.write(out);
                }
                out.push(']');
            }
            Json::Object(fields) => {
                out.push('{');
                for (i, (k, v)) in fields.iter().enumerate() {
                    if i > 0 {
                        out.push(',');
                    }
                    write_str(k, out);
                    out.push(':');
                    v.write(out);
                }
                out.push('}');
            }
            Json::Value(v) => out.push_str(&v.to_string()),
        }
    }

    /// Compact JSON text.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        self.write(&mut s);
        s
    }
}

impl From<&str> for Json {
    fn from(s: &str) -> Json {
        Json::Str(s.to_owned())
    }
}
impl From<String> for Json {
    fn from(s: String) -> Json {
        Json::Str(s)
    }
}
impl From<bool> for Json {
    fn from(b: bool) -> Json {
        Json::Bool(b)
    }
}
impl From<u32> for Json {
    fn from(u: u32) -> Json {
        Json::UInt(u64::from(u))
    }
}
impl From<u64> for Json {
    fn from(u: u64) -> Json {
        Json::UInt(u)
    }
}
impl From<usize> for Json {
    fn from(u: usize) -> Json {
        Json::UInt(u as u64)
    }
}
impl From<i64> for Json {
    fn from(i: i64) -> Json {
        Json::Int(i)
    }
}
impl From<i32> for Json {
    fn from(i: i32) -> Json {
        Json::Int(i64::from(i))
    }
}
impl From<f64> for Json {
    fn from(f: f64) -> Json {
        Json::Float(f)
    }
}
impl From<serde_json::Value> for Json {
    fn from(v: serde_json::Value) -> Json {
        Json::Value(v)
    }
}
impl<T: Into<Json>> From<Vec<T>> for Json {
    fn from(v: Vec<T>) -> Json {
        Json::Array(v.into_iter().map(Into::into).collect())
    }
}

fn write_str(s: &str, out: &mut String) {
    // serde_json's escaping of a plain string cannot fail.
    match serde_json::to_string(s) {
        Ok(t) => out.push_str(&t),
        Err(_) => out.push_str("\"\""),
    }
}

/// Satoshis as BTC with eight decimals, e.g. `-0.00000546`.
fn write_amount(sats: i64, out: &mut String) {
    let abs = sats.unsigned_abs();
    if sats < 0 {
        out.push('-');
    }
    let _ = write!(out, "{}.{:08}", abs / 100_000_000, abs % 100_000_000);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amounts_have_eight_decimals_and_objects_keep_their_order() {
        let j = Json::obj([
            ("z", Json::btc(Amount::from_sat(5_900_000_000))),
            ("a", Json::sats(-546)),
            ("m", Json::btc(Amount::ZERO)),
            ("s", Json::from("q\"\n")),
            ("f", Json::Float(f64::NAN)),
            ("l", Json::from(vec![1u32, 2])),
        ]);
        assert_eq!(
            j.to_text(),
            r#"{"z":59.00000000,"a":-0.00000546,"m":0.00000000,"s":"q\"\n","f":null,"l":[1,2]}"#
        );
        let v: serde_json::Value = serde_json::from_str(&j.to_text()).expect("valid JSON");
        assert_eq!(v["z"].as_f64(), Some(59.0));
        assert_eq!(Json::sats(i64::MIN).to_text(), "-92233720368.54775808");
    }
}
