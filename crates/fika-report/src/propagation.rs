//! Propagation of items (blocks, transactions, flooded payloads): for each,
//! the time from its creation until it has reached 50 / 90 / 95 / 99 % of
//! the nodes, collected from the event stream.

use std::collections::BTreeMap;
use std::io::{self, Write};

use fika_core::{Event, EventSink, NodeId, SimTime, Value};
use serde::Serialize;

use crate::quantile;

/// Shares of nodes at which propagation is measured.
pub const LEVELS: [f64; 4] = [0.5, 0.9, 0.95, 0.99];

#[derive(Default)]
struct Track {
    created: Option<SimTime>,
    origin: Option<NodeId>,
    /// Arrival times in nanoseconds, in arrival order (hence sorted).
    arrivals: Vec<u64>,
}

/// Collects creation and arrival events of items.
pub struct PropagationTracker {
    nodes: usize,
    created_kind: &'static str,
    arrived_kind: &'static str,
    key_field: &'static str,
    items: BTreeMap<[u8; 32], Track>,
}

/// Times to reach each level of [`LEVELS`] for one item, in seconds.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct ItemPropagation {
    /// The item's key (id or hash), as hex or number.
    pub item: String,
    /// Creation time in seconds.
    pub created_s: f64,
    /// Nodes reached.
    pub reached: usize,
    /// Seconds to reach 50 / 90 / 95 / 99 % of nodes; `None` if never.
    pub to_level_s: [Option<f64>; 4],
}

/// The distribution over items of the time to reach each level.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PropagationSummary {
    /// Items created.
    pub items: usize,
    /// Per level (50, 90, 95, 99 %): the median over items, in seconds.
    pub median_s: [Option<f64>; 4],
    /// Per level: the 90th percentile over items, in seconds.
    pub p90_s: [Option<f64>; 4],
    /// Per level: the mean over items, in seconds.
    pub mean_s: [Option<f64>; 4],
    /// Per level: items that never reached it.
    pub not_reached: [usize; 4],
}

impl PropagationTracker {
    /// Tracks items created by events of kind `created_kind` and received by
    /// `arrived_kind`, identified by field `key_field`, over `nodes` nodes.
    pub fn new(
        nodes: usize,
        created_kind: &'static str,
        arrived_kind: &'static str,
        key_field: &'static str,
    ) -> Self {
        PropagationTracker { nodes, created_kind, arrived_kind, key_field, items: BTreeMap::new() }
    }

    fn key(&self, e: &Event) -> Option<[u8; 32]> {
        match e.field(self.key_field)? {
            Value::Hash(h) => Some(*h),
            Value::U64(v) => {
                let mut k = [0u8; 32];
                k[24..].copy_from_slice(&v.to_be_bytes());
                Some(k)
            }
            _ => None,
        }
    }

    /// Per-item results, in key order.
    pub fn items(&self) -> Vec<ItemPropagation> {
        self.items
            .iter()
            .filter_map(|(k, t)| {
                let created = t.created?;
                let to_level_s = LEVELS.map(|l| {
                    let need = ((l * self.nodes as f64).ceil() as usize).max(1);
                    t.arrivals.get(need - 1).map(|a| SimTime(*a).saturating_since(created).as_secs_f64())
                });
                let item = if k[..24].iter().all(|b| *b == 0) {
                    let mut v = [0u8; 8];
                    v.copy_from_slice(&k[24..]);
                    u64::from_be_bytes(v).to_string()
                } else {
                    k.iter().map(|b| format!("{b:02x}")).collect()
                };
                Some(ItemPropagation {
                    item,
                    created_s: created.as_secs_f64(),
                    reached: t.arrivals.len(),
                    to_level_s,
                })
            })
            .collect()
    }

    /// The distribution over items.
    pub fn summary(&self) -> PropagationSummary {
        let items = self.items();
        let mut median_s = [None; 4];
        let mut p90_s = [None; 4];
        let mut mean_s = [None; 4];
        let mut not_reached = [0; 4];
        for l in 0..LEVELS.len() {
            let mut v: Vec<f64> = items.iter().filter_map(|i| i.to_level_s[l]).collect();
            not_reached[l] = items.len() - v.len();
            v.sort_by(f64::total_cmp);
            median_s[l] = quantile(&v, 0.5);
            p90_s[l] = quantile(&v, 0.9);
            mean_s[l] = (!v.is_empty()).then(|| v.iter().sum::<f64>() / v.len() as f64);
        }
        PropagationSummary { items: items.len(), median_s, p90_s, mean_s, not_reached }
    }

    /// Writes the per-item table as CSV.
    pub fn write_csv(&self, out: &mut dyn Write) -> io::Result<()> {
        writeln!(out, "item,created_s,origin,reached,t50_s,t90_s,t95_s,t99_s")?;
        for (i, t) in self.items().iter().zip(self.items.values().filter(|t| t.created.is_some())) {
            let cell = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6}"));
            writeln!(
                out,
                "{},{:.6},{},{},{},{},{},{}",
                i.item,
                i.created_s,
                t.origin.map_or(String::new(), |o| o.0.to_string()),
                i.reached,
                cell(i.to_level_s[0]),
                cell(i.to_level_s[1]),
                cell(i.to_level_s[2]),
                cell(i.to_level_s[3])
            )?;
        }
        Ok(())
    }
}

impl EventSink for PropagationTracker {
    fn record(&mut self, at: SimTime, node: Option<NodeId>, event: &Event) {
        let created = event.kind == self.created_kind;
        if !created && event.kind != self.arrived_kind {
            return;
        }
        let Some(key) = self.key(event) else { return };
        let t = self.items.entry(key).or_default();
        if created {
            t.created.get_or_insert(at);
            t.origin = t.origin.or(node);
        } else {
            t.arrivals.push(at.as_nanos());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_follow_arrival_order() {
        let mut p = PropagationTracker::new(10, "c", "a", "item");
        p.record(SimTime::from_secs(1), Some(NodeId(0)), &Event::new("c").with("item", 7u64));
        for i in 0..10u64 {
            p.record(SimTime::from_secs(1 + i), Some(NodeId(i as u32)), &Event::new("a").with("item", 7u64));
        }
        let items = p.items();
        assert_eq!(items.len(), 1);
        assert_eq!(items[0].item, "7");
        assert_eq!(items[0].reached, 10);
        // 50 % of 10 nodes = 5th arrival at t = 5 s, 4 s after creation.
        assert_eq!(items[0].to_level_s, [Some(4.0), Some(8.0), Some(9.0), Some(9.0)]);
        let s = p.summary();
        assert_eq!(s.median_s[0], Some(4.0));
        assert_eq!(s.not_reached, [0; 4]);
    }

    #[test]
    fn unreached_levels_are_none() {
        let mut p = PropagationTracker::new(100, "c", "a", "item");
        p.record(SimTime::ZERO, None, &Event::new("c").with("item", 1u64));
        p.record(SimTime::from_secs(1), None, &Event::new("a").with("item", 1u64));
        assert_eq!(p.items()[0].to_level_s, [None; 4]);
        assert_eq!(p.summary().not_reached, [1; 4]);
    }
}
