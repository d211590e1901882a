//! Rebuilding one node of a Bitcoin scenario inside its own process.
//!
//! An emulated node cannot receive its state from a parent: it rebuilds
//! itself from the scenario file and its id, through the same
//! [`fika_scenario::btc::BtcPlan`] the simulator uses (keys, premine,
//! hashrate shares, payments, workload), with a store of its own instead of
//! the shared one.

use fika_btc::node::{BtcNode, SharedDb};
use fika_core::NodeId;
use fika_scenario::{Layout, ProtocolKind, Scenario};

use crate::EmuError;

/// The sorted, deduplicated peers of node `id` in the layout's graph (the
/// order the simulator gives [`fika_core::Context::peer`]).
pub fn peers_of(layout: &Layout, id: NodeId) -> Vec<NodeId> {
    let adj = layout.graph.adjacency();
    let mut v: Vec<u32> = adj.get(id.index()).cloned().unwrap_or_default();
    v.sort_unstable();
    v.dedup();
    v.retain(|p| *p != id.0);
    v.into_iter().map(NodeId).collect()
}

/// Builds node `id` of Bitcoin scenario `s` as the simulator would.
pub fn build_btc_node(s: &Scenario, layout: &Layout, id: NodeId) -> Result<BtcNode, EmuError> {
    build_btc_node_with_db(s, layout, id).map(|(n, _)| n)
}

/// [`build_btc_node`], also returning the node's own block store (a
/// wallet's store holds only genesis and the premine).
pub fn build_btc_node_with_db(
    s: &Scenario,
    layout: &Layout,
    id: NodeId,
) -> Result<(BtcNode, SharedDb), EmuError> {
    let n = layout.names.len();
    if id.index() >= n {
        return Err(EmuError::NoSuchNode { id, nodes: n });
    }
    let spec = match (&s.protocol, &s.bitcoin) {
        (ProtocolKind::Bitcoin, Some(spec)) => spec,
        _ => {
            return Err(EmuError::Unsupported {
                scenario: s.name.clone(),
                protocol: format!("{:?}", s.protocol).to_lowercase(),
            });
        }
    };
    let plan = fika_scenario::btc::BtcPlan::new(s, spec, layout);
    // A store of its own, holding the same genesis and premine as every other process's.
    let db: SharedDb = plan.store();
    Ok((plan.node(id.index(), &db), db))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::Amount;

    fn demo() -> (Scenario, Layout) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios/thesis-demo.toml");
        let s = fika_scenario::load_file(std::path::Path::new(path)).expect("thesis demo loads");
        let l = fika_scenario::layout(&s).expect("layout");
        (s, l)
    }

    #[test]
    fn builds_every_node_of_the_thesis_demo() {
        let (s, l) = demo();
        assert_eq!(l.names, ["server1", "server2", "server3", "client1", "client2"]);
        for i in 0..3 {
            assert!(matches!(build_btc_node(&s, &l, NodeId(i)), Ok(BtcNode::Full(_))));
        }
        for i in 3..5 {
            let Ok(BtcNode::Wallet(w)) = build_btc_node(&s, &l, NodeId(i)) else { panic!("wallet {i}") };
            assert_eq!(w.balance().confirmed, Amount::from_int_btc(100));
        }
        assert!(matches!(build_btc_node(&s, &l, NodeId(5)), Err(EmuError::NoSuchNode { .. })));
        assert_eq!(peers_of(&l, NodeId(0)), [NodeId(1), NodeId(2), NodeId(3)]);
        assert_eq!(peers_of(&l, NodeId(4)), [NodeId(2)]);
    }

    #[test]
    fn every_process_builds_the_same_premine() {
        let (s, l) = demo();
        let utxo = |i: u32| {
            let (_, db) = build_btc_node_with_db(&s, &l, NodeId(i)).expect("node");
            let db = db.borrow();
            let set = db.utxo(0).expect("genesis valid").0.clone();
            (db.rec(0).data.hash, set.into_iter().collect::<Vec<_>>())
        };
        let first = utxo(0);
        assert_eq!(first.1.len(), 2);
        for i in 1..5 {
            assert_eq!(utxo(i), first);
        }
    }
}
