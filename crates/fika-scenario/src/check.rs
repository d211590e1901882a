//! A small walker over TOML tables that collects *every* error with its
//! field path, instead of stopping at the first as serde does.

use std::fmt;
use std::time::Duration;

use serde::de::DeserializeOwned;
use toml::{Table, Value};

/// One problem in a scenario file: where, and what was expected.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path of the field, e.g. `network.latency.ms` or `nodes[2].count`.
    pub path: String,
    /// What is wrong and what was expected.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// The errors found so far.
#[derive(Debug, Default)]
pub struct Errors(pub Vec<FieldError>);

impl Errors {
    /// Records an error at `path`.
    pub fn push(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError { path: path.into(), message: message.into() });
    }
}

/// Joins a parent path and a key.
pub fn join(path: &str, key: &str) -> String {
    if path.is_empty() { key.to_owned() } else { format!("{path}.{key}") }
}

/// Deserializes `value` as `T`; on failure records the error with the path
/// inside the value appended.
pub fn parse<T: DeserializeOwned>(value: &Value, path: &str, errs: &mut Errors) -> Option<T> {
    match serde_path_to_error::deserialize::<_, T>(value.clone()) {
        Ok(v) => Some(v),
        Err(e) => {
            let inner = e.path().to_string();
            let full = if inner == "." || inner.is_empty() { path.to_owned() } else { join(path, &inner) };
            errs.push(full, e.into_inner().to_string());
            None
        }
    }
}

/// A table being read, with its path.
pub struct Section<'a> {
    /// The table.
    pub table: &'a Table,
    /// Its path in the file.
    pub path: String,
}

impl<'a> Section<'a> {
    /// Wraps a table found at `path`.
    pub fn new(table: &'a Table, path: impl Into<String>) -> Self {
        Section { table, path: path.into() }
    }

    /// Path of a key of this table.
    pub fn at(&self, key: &str) -> String {
        join(&self.path, key)
    }

    /// Records an error for every key not in `allowed`.
    pub fn deny_unknown(&self, allowed: &[&str], errs: &mut Errors) {
        for key in self.table.keys() {
            if !allowed.contains(&key.as_str()) {
                errs.push(self.at(key), format!("unknown field; expected one of: {}", allowed.join(", ")));
            }
        }
    }

    /// The raw value of `key`, if present.
    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.table.get(key)
    }

    /// An optional field: `None` if absent or malformed (then recorded).
    pub fn opt<T: DeserializeOwned>(&self, key: &str, errs: &mut Errors) -> Option<T> {
        self.raw(key).and_then(|v| parse(v, &self.at(key), errs))
    }

    /// An optional field with a default.
    pub fn or<T: DeserializeOwned>(&self, key: &str, default: T, errs: &mut Errors) -> T {
        self.opt(key, errs).unwrap_or(default)
    }

    /// A required field; records `missing field, expected …` if absent.
    pub fn req<T: DeserializeOwned>(&self, key: &str, expected: &str, errs: &mut Errors) -> Option<T> {
        if self.raw(key).is_none() {
            errs.push(self.at(key), format!("missing field; expected {expected}"));
            return None;
        }
        self.opt(key, errs)
    }

    /// A sub-table; records an error if present but not a table.
    pub fn sub(&self, key: &str, errs: &mut Errors) -> Option<Section<'a>> {
        match self.raw(key)? {
            Value::Table(t) => Some(Section::new(t, self.at(key))),
            other => {
                errs.push(self.at(key), format!("expected a table, found {}", other.type_str()));
                None
            }
        }
    }

    /// A duration field ("90s", "1h 30m", or a number of seconds).
    pub fn duration(&self, key: &str, errs: &mut Errors) -> Option<Duration> {
        let v = self.raw(key)?;
        let d = parse_duration(v);
        if d.is_none() {
            errs.push(self.at(key), format!("expected a duration such as \"90s\", \"10m\", \"1h 30m\" or a number of seconds, found {v}"));
        }
        d
    }

    /// A number that must lie in `[lo, hi]`.
    pub fn ranged(&self, key: &str, lo: f64, hi: f64, default: f64, errs: &mut Errors) -> f64 {
        let v: f64 = self.or(key, default, errs);
        if !(lo..=hi).contains(&v) || !v.is_finite() {
            errs.push(self.at(key), format!("{v} is out of range; expected a number in [{lo}, {hi}]"));
            return default;
        }
        v
    }
}

/// Reads a duration from a string (humantime) or a number of seconds.
pub fn parse_duration(v: &Value) -> Option<Duration> {
    match v {
        Value::String(s) => humantime::parse_duration(s.trim()).ok(),
        Value::Integer(i) => u64::try_from(*i).ok().map(Duration::from_secs),
        Value::Float(f) => Duration::try_from_secs_f64(*f).ok(),
        _ => None,
    }
}

/// Serde helpers writing durations as humantime strings.
pub mod dur {
    use serde::Serializer;
    use std::time::Duration;

    /// Writes `d` as e.g. `"1h 30m"`.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_duration(*d).to_string())
    }

    /// Writes an optional duration.
    pub fn serialize_opt<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => serialize(d, s),
            None => s.serialize_none(),
        }
    }
}

/// Deep-merges `over` onto `base`: tables merge key by key; a table whose
/// `model` or `kind` tag differs from the base's replaces it wholesale (its
/// fields belong to another variant); every other value replaces.
pub fn merge(base: &mut Table, over: &Table) {
    for (k, v) in over {
        match (base.get_mut(k), v) {
            (Some(Value::Table(b)), Value::Table(o)) if same_variant(b, o) => merge(b, o),
            _ => {
                base.insert(k.clone(), v.clone());
            }
        }
    }
}

fn same_variant(a: &Table, b: &Table) -> bool {
    ["model", "kind"].iter().all(|tag| match (a.get(*tag), b.get(*tag)) {
        (Some(x), Some(y)) => x == y,
        _ => true,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merge_replaces_other_variants_and_merges_same() {
        let mut base: Table =
            toml::from_str("a = 1\n[lat]\nmodel = \"regions\"\nspread_ms = 5\n[bw]\nmodel = \"x\"\nup = 1")
                .unwrap_or_default();
        let over: Table =
            toml::from_str("[lat]\nmodel = \"constant\"\nms = 3\n[bw]\nup = 2").unwrap_or_default();
        merge(&mut base, &over);
        let lat = base["lat"].as_table().map(|t| t.keys().cloned().collect::<Vec<_>>());
        assert_eq!(lat, Some(vec!["model".to_owned(), "ms".to_owned()]));
        assert_eq!(base["bw"]["model"].as_str(), Some("x"));
        assert_eq!(base["bw"]["up"].as_integer(), Some(2));
        assert_eq!(base["a"].as_integer(), Some(1));
    }

    #[test]
    fn durations_in_all_forms() {
        assert_eq!(parse_duration(&Value::String("1h 30m".into())), Some(Duration::from_secs(5400)));
        assert_eq!(parse_duration(&Value::Integer(7)), Some(Duration::from_secs(7)));
        assert_eq!(parse_duration(&Value::Float(0.5)), Some(Duration::from_millis(500)));
        assert_eq!(parse_duration(&Value::Integer(-1)), None);
        assert_eq!(parse_duration(&Value::String("soon".into())), None);
    }
}
