//! Observations emitted by nodes and by the runtime, and the trace digest.
//!
//! An [`Event`] is what the thesis's per-node log line held, made structured:
//! a kind and named fields. The runtime stamps it with the virtual time and
//! the node, then hands it to an [`EventSink`] (JSON-lines writer, metrics
//! collectors, the [`TraceDigest`]).

use std::fmt::Write as _;

use sha2::{Digest, Sha256};

use crate::{NodeId, SimTime};

/// A field value of an [`Event`].
#[derive(Clone, Debug, PartialEq)]
pub enum Value {
    /// An unsigned integer (counts, sizes, ids).
    U64(u64),
    /// A signed integer (balances, differences).
    I64(i64),
    /// A float (rates, ratios).
    F64(f64),
    /// A flag.
    Bool(bool),
    /// Free text.
    Str(String),
    /// A 32-byte hash, written as hex in display byte order as given.
    Hash([u8; 32]),
}

impl From<u64> for Value {
    fn from(v: u64) -> Self {
        Value::U64(v)
    }
}
impl From<u32> for Value {
    fn from(v: u32) -> Self {
        Value::U64(v.into())
    }
}
impl From<usize> for Value {
    fn from(v: usize) -> Self {
        Value::U64(v as u64)
    }
}
impl From<i64> for Value {
    fn from(v: i64) -> Self {
        Value::I64(v)
    }
}
impl From<f64> for Value {
    fn from(v: f64) -> Self {
        Value::F64(v)
    }
}
impl From<bool> for Value {
    fn from(v: bool) -> Self {
        Value::Bool(v)
    }
}
impl From<String> for Value {
    fn from(v: String) -> Self {
        Value::Str(v)
    }
}
impl From<&str> for Value {
    fn from(v: &str) -> Self {
        Value::Str(v.to_owned())
    }
}
impl From<[u8; 32]> for Value {
    fn from(v: [u8; 32]) -> Self {
        Value::Hash(v)
    }
}

/// One observation: a kind such as `"block.received"` and named fields.
#[derive(Clone, Debug, PartialEq)]
pub struct Event {
    /// Dotted kind, `protocol.what`, stable across versions.
    pub kind: &'static str,
    /// Named fields in emission order.
    pub fields: Vec<(&'static str, Value)>,
}

impl Event {
    /// An event with no fields yet.
    pub fn new(kind: &'static str) -> Self {
        Event { kind, fields: Vec::new() }
    }
    /// Adds a field (builder style).
    #[must_use]
    pub fn with(mut self, name: &'static str, value: impl Into<Value>) -> Self {
        self.fields.push((name, value.into()));
        self
    }
    /// The value of field `name`, if present.
    pub fn field(&self, name: &str) -> Option<&Value> {
        self.fields.iter().find(|(n, _)| *n == name).map(|(_, v)| v)
    }
    /// The value of an unsigned field, if present and unsigned.
    pub fn u64(&self, name: &str) -> Option<u64> {
        match self.field(name) {
            Some(Value::U64(v)) => Some(*v),
            _ => None,
        }
    }

    /// Appends this event as one JSON object line (with trailing newline).
    pub fn write_json_line(&self, at: SimTime, node: Option<NodeId>, out: &mut String) {
        let _ = write!(out, "{{\"t\":{}", at.as_nanos());
        if let Some(n) = node {
            let _ = write!(out, ",\"node\":{}", n.0);
        }
        out.push_str(",\"kind\":");
        json_str(self.kind, out);
        for (name, value) in &self.fields {
            out.push(',');
            json_str(name, out);
            out.push(':');
            match value {
                Value::U64(v) => {
                    let _ = write!(out, "{v}");
                }
                Value::I64(v) => {
                    let _ = write!(out, "{v}");
                }
                Value::F64(v) if v.is_finite() => {
                    let _ = write!(out, "{v}");
                }
                Value::F64(_) => out.push_str("null"),
                Value::Bool(v) => {
                    let _ = write!(out, "{v}");
                }
                Value::Str(s) => json_str(s, out),
                Value::Hash(h) => {
                    out.push('"');
                    out.push_str(&hex::encode(h));
                    out.push('"');
                }
            }
        }
        out.push_str("}\n");
    }
}

/// Writes `s` as a JSON string literal.
fn json_str(s: &str, out: &mut String) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Receives every event of a run, stamped with time and node.
///
/// `node` is `None` for events of the runtime itself (a partition, a heal).
pub trait EventSink {
    /// Records one event.
    fn record(&mut self, at: SimTime, node: Option<NodeId>, event: &Event);
    /// Records one event the sink may keep, so that it need not copy it
    /// (the runtime's path for what nodes emit). By default, `record`.
    fn take(&mut self, at: SimTime, node: Option<NodeId>, event: Event) {
        self.record(at, node, &event);
    }
}

impl EventSink for Vec<(SimTime, Option<NodeId>, Event)> {
    fn record(&mut self, at: SimTime, node: Option<NodeId>, event: &Event) {
        self.push((at, node, event.clone()));
    }
    fn take(&mut self, at: SimTime, node: Option<NodeId>, event: Event) {
        self.push((at, node, event));
    }
}

/// A SHA-256 over the canonical encoding of every event of a run.
///
/// Two runs of one scenario with one seed must give the same digest; it is
/// the cheapest proof of determinism and the first thing to compare when two
/// results disagree.
#[derive(Clone, Default)]
pub struct TraceDigest {
    hasher: Sha256,
    /// Encoded events not yet handed to the hasher: hashing a few kilobytes
    /// at once costs far less than a dozen tiny updates per event, and the
    /// digest of a byte stream does not depend on how it is split.
    buf: Vec<u8>,
    events: u64,
}

/// Bytes buffered before they are hashed.
const DIGEST_CHUNK: usize = 8192;

impl TraceDigest {
    /// A digest over no events.
    pub fn new() -> Self {
        Self::default()
    }
    /// Number of events folded in.
    pub fn events(&self) -> u64 {
        self.events
    }
    /// Folds in one more thing that is not an event (e.g. final statistics).
    pub fn update_extra(&mut self, bytes: &[u8]) {
        self.buf.extend_from_slice(bytes);
        self.flush_if_full();
    }
    /// The digest so far, as 64 hex characters.
    pub fn hex(&self) -> String {
        let mut h = self.hasher.clone();
        h.update(&self.buf);
        hex::encode(h.finalize())
    }

    fn flush_if_full(&mut self) {
        if self.buf.len() >= DIGEST_CHUNK {
            self.hasher.update(&self.buf);
            self.buf.clear();
        }
    }
}

impl EventSink for TraceDigest {
    fn record(&mut self, at: SimTime, node: Option<NodeId>, event: &Event) {
        self.events += 1;
        let b = &mut self.buf;
        b.extend_from_slice(&at.as_nanos().to_le_bytes());
        b.extend_from_slice(&node.map_or(u32::MAX, |n| n.0).to_le_bytes());
        b.push(event.kind.len() as u8);
        b.extend_from_slice(event.kind.as_bytes());
        for (name, value) in &event.fields {
            b.push(name.len() as u8);
            b.extend_from_slice(name.as_bytes());
            match value {
                Value::U64(v) => {
                    b.push(0);
                    b.extend_from_slice(&v.to_le_bytes());
                }
                Value::I64(v) => {
                    b.push(1);
                    b.extend_from_slice(&v.to_le_bytes());
                }
                Value::F64(v) => {
                    b.push(2);
                    b.extend_from_slice(&v.to_bits().to_le_bytes());
                }
                Value::Bool(v) => b.extend_from_slice(&[3, u8::from(*v)]),
                Value::Str(s) => {
                    b.push(4);
                    b.extend_from_slice(&(s.len() as u64).to_le_bytes());
                    b.extend_from_slice(s.as_bytes());
                }
                Value::Hash(x) => {
                    b.push(5);
                    b.extend_from_slice(x);
                }
            }
        }
        self.flush_if_full();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_line_escapes_and_orders_fields() {
        let e = Event::new("x.y").with("n", 3u64).with("s", "a\"b\n").with("f", f64::NAN).with("ok", true);
        let mut s = String::new();
        e.write_json_line(SimTime::from_millis(2), Some(NodeId(7)), &mut s);
        assert_eq!(
            s,
            "{\"t\":2000000,\"node\":7,\"kind\":\"x.y\",\"n\":3,\"s\":\"a\\\"b\\n\",\"f\":null,\"ok\":true}\n"
        );
    }

    #[test]
    fn digest_depends_on_every_part() {
        let base = || Event::new("k").with("a", 1u64);
        let digest = |at: u64, node: u32, e: Event| {
            let mut d = TraceDigest::new();
            d.record(SimTime(at), Some(NodeId(node)), &e);
            d.hex()
        };
        let d0 = digest(1, 1, base());
        assert_eq!(d0, digest(1, 1, base()));
        assert_ne!(d0, digest(2, 1, base()));
        assert_ne!(d0, digest(1, 2, base()));
        assert_ne!(d0, digest(1, 1, Event::new("k").with("a", 2u64)));
        assert_ne!(d0, digest(1, 1, Event::new("j").with("a", 1u64)));
    }

    /// The canonical encoding, hashed field by field as the digest is
    /// specified (no buffering).
    fn reference(events: &[(SimTime, Option<NodeId>, Event)], extra: &[u8]) -> String {
        let mut h = Sha256::new();
        for (at, node, event) in events {
            h.update(at.as_nanos().to_le_bytes());
            h.update(node.map_or(u32::MAX, |n| n.0).to_le_bytes());
            h.update([event.kind.len() as u8]);
            h.update(event.kind.as_bytes());
            for (name, value) in &event.fields {
                h.update([name.len() as u8]);
                h.update(name.as_bytes());
                match value {
                    Value::U64(v) => h.update([[0].as_slice(), &v.to_le_bytes()].concat()),
                    Value::I64(v) => h.update([[1].as_slice(), &v.to_le_bytes()].concat()),
                    Value::F64(v) => h.update([[2].as_slice(), &v.to_bits().to_le_bytes()].concat()),
                    Value::Bool(v) => h.update([3, u8::from(*v)]),
                    Value::Str(s) => {
                        h.update([4]);
                        h.update((s.len() as u64).to_le_bytes());
                        h.update(s.as_bytes());
                    }
                    Value::Hash(x) => {
                        h.update([5]);
                        h.update(x);
                    }
                }
            }
        }
        h.update(extra);
        hex::encode(h.finalize())
    }

    #[test]
    fn buffered_digest_matches_the_field_by_field_hash() {
        let events: Vec<_> = (0..5000u64)
            .map(|i| {
                let e = Event::new(if i % 3 == 0 { "gossip.have" } else { "x" })
                    .with("item", i)
                    .with("d", -(i as i64))
                    .with("f", i as f64 / 7.0)
                    .with("b", i % 2 == 0)
                    .with("s", "a".repeat((i % 50) as usize))
                    .with("h", [i as u8; 32]);
                (SimTime(i * 1000), (i % 5 != 0).then_some(NodeId(i as u32)), e)
            })
            .collect();
        let mut d = TraceDigest::new();
        for (k, (at, node, e)) in events.iter().enumerate() {
            d.record(*at, *node, e);
            if k == 1234 {
                // The digest can be read mid-run without disturbing it.
                assert_eq!(d.hex(), reference(&events[..=k], b""));
            }
        }
        d.update_extra(b"stats");
        assert_eq!(d.events(), 5000);
        assert_eq!(d.hex(), reference(&events, b"stats"));
    }
}
