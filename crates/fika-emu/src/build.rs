//! Rebuilding one node of a Bitcoin scenario inside its own process.
//!
//! An emulated node cannot receive its state from a parent: it rebuilds
//! itself from the scenario file and its id. Everything here mirrors the
//! simulator's runner (`fika::bitcoin::build`) for one node — the wallet
//! keys and miner keys derived from the seed, the premine transaction (so
//! balances and UTXO sets match the simulator's), the hashrate shares scaled
//! to the chain's block interval, the payment schedule and workload — with a
//! store of its own instead of the shared one.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use bitcoin::{Amount, ScriptBuf, Transaction, TxOut};
use fika_btc::blockdb::BlockDb;
use fika_btc::node::{BtcNode, FullNode, Payout, SharedDb};
use fika_btc::sign::secret_key_from_rng;
use fika_btc::spv::SpvClient;
use fika_btc::wallet::{FeeSpec, Wallet, WalletConfig};
use fika_btc::wallet_node::{ScheduledPayment, WalletNode, Workload};
use fika_core::{NodeId, SimTime, derive_rng};
use fika_scenario::{Layout, ProtocolKind, Scenario};

use crate::EmuError;

fn to_sat(btc: f64) -> Amount {
    Amount::from_sat((btc * 1e8).round().max(0.0) as u64)
}

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
    let params = spec.params.clone();
    let relay = Rc::new(spec.relay.clone());
    let light: Vec<bool> = layout.group.iter().map(|g| s.nodes[*g].is_light()).collect();
    // Every wallet's keys: the premine pays them all.
    let mut wallets: BTreeMap<usize, Wallet> = BTreeMap::new();
    for i in (0..n).filter(|i| light[*i]) {
        let mut rng = derive_rng(s.seed, "wallet-key", i as u64);
        let sk = secret_key_from_rng(&mut rng);
        if let Ok(w) = Wallet::new(WalletConfig::for_params(&params), &[sk]) {
            wallets.insert(i, w);
        }
    }
    let scripts: BTreeMap<usize, ScriptBuf> = wallets.iter().map(|(i, w)| (*i, w.receive_script())).collect();
    let script_of = |i: usize| scripts.get(&i).cloned();
    let mut outputs = Vec::new();
    for (i, w) in &wallets {
        let bal = s.nodes[layout.group[*i]].balance.unwrap_or(0.0);
        if bal > 0.0 {
            outputs.push(TxOut { value: to_sat(bal), script_pubkey: w.receive_script() });
        }
    }
    let premine: Vec<Transaction> = fika_btc::blockdb::premine_tx(s.seed, outputs).into_iter().collect();
    let db: SharedDb = Rc::new(RefCell::new(BlockDb::new(params.clone(), &premine)));
    let genesis_hash = db.borrow().rec(0).data.hash;
    let me = id.index();
    if let Some(mut w) = wallets.remove(&me) {
        let recipients: Rc<Vec<ScriptBuf>> = Rc::new(scripts.values().cloned().collect());
        let workload = spec.workload.as_ref().map(|wl| Workload {
            interval: wl.interval,
            start: SimTime::ZERO + wl.start,
            amount_fraction: wl.amount_fraction,
            fee_rate: wl.fee_rate,
            recipients: Rc::clone(&recipients),
        });
        let mut schedule = Vec::new();
        for p in &spec.payments {
            let (Some(from), Some(to)) = (layout.id_of(&p.from), layout.id_of(&p.to)) else { continue };
            if from != id {
                continue;
            }
            let Some(to_script) = script_of(to.index()) else { continue };
            let fee = match (p.fee, p.fee_rate) {
                (Some(f), _) => FeeSpec::Absolute(to_sat(f)),
                (None, Some(r)) => {
                    FeeSpec::Rate(bitcoin::FeeRate::from_sat_per_kwu((r * 250.0).round() as u64))
                }
                (None, None) => FeeSpec::sat_per_vb(2),
            };
            schedule.push(ScheduledPayment {
                at: SimTime::ZERO + p.at,
                to: to_script,
                amount: to_sat(p.amount),
                fee,
            });
        }
        let _ = w.apply_block(genesis_hash, 0, &premine);
        let spv = SpvClient::new(params, w);
        let node = WalletNode::new(spv, relay.start_unix, workload, schedule);
        return Ok((BtcNode::Wallet(Box::new(node)), db));
    }
    // Hashrates: relative weights, scaled so the whole network finds a
    // block every `block_interval_secs` at the genesis difficulty.
    let mut weights = vec![0.0f64; n];
    for (i, w) in weights.iter_mut().enumerate() {
        let g = &s.nodes[layout.group[i]];
        if light[i] {
            continue;
        }
        *w = match &g.hashrate {
            Some(h) => h.weight(s.seed, i),
            None if g.role == "miner" => 1.0,
            None => 0.0,
        };
    }
    let total: f64 = weights.iter().sum();
    let genesis_bits = db.borrow().rec(0).data.block.header.bits;
    let network_hashrate =
        fika_btc::pow::expected_hashes(genesis_bits) / params.block_interval_secs.max(1) as f64;
    let share = if total > 0.0 { weights[me] / total } else { 0.0 };
    let mut rng = derive_rng(s.seed, "miner-key", me as u64);
    let payout = Payout::Key(secret_key_from_rng(&mut rng));
    let node = FullNode::new(Rc::clone(&db), relay, share * network_hashrate, payout);
    Ok((BtcNode::Full(Box::new(node)), db))
}

#[cfg(test)]
mod tests {
    use super::*;

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
