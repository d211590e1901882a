//! Whole networks of Bitcoin-like nodes in the simulator: bad blocks are not
//! relayed, double spends resolve to one, difficulty follows hashrate,
//! compact blocks reconstruct, and forks resolve to one chain.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::{Amount, Block, OutPoint, Transaction, TxOut};
use common::*;
use fika_btc::blockdb::{BlockDb, BlockId, SimBlock, Status};
use fika_btc::msg::BtcMsg;
use fika_btc::node::{BtcNode, FullNode, Payout, RelayConfig, SharedDb};
use fika_btc::template::{assemble_block, coinbase_tx};
use fika_core::testing::Unoffered;
use fika_core::{Context, Event, Node, NodeId, SimTime, TimerId};
use fika_sim::{LatencyModel, Net, NetworkModel, Simulation};

type Events = Vec<(SimTime, Option<NodeId>, Event)>;
type AnyNode = Box<dyn Node<Msg = BtcMsg>>;

/// Sends scripted messages to its peers at given times.
struct Injector {
    script: Vec<(Duration, NodeId, BtcMsg)>,
}

impl Node for Injector {
    type Msg = BtcMsg;
    fn on_start(&mut self, cx: &mut dyn Context<BtcMsg>) {
        for (i, (at, _, _)) in self.script.iter().enumerate() {
            cx.set_timer(*at, i as TimerId);
        }
    }
    fn on_message(&mut self, cx: &mut dyn Context<BtcMsg>, from: NodeId, msg: BtcMsg) {
        let kind = fika_core::Message::kind(&msg);
        cx.emit(Event::new("test.got").with("from", from.0).with("kind", kind));
    }
    fn on_timer(&mut self, cx: &mut dyn Context<BtcMsg>, timer: TimerId) {
        if let Some((_, to, msg)) = self.script.get(timer as usize) {
            cx.send(*to, msg.clone());
        }
    }
}

fn premine(to: &bitcoin::Script, sats: &[u64]) -> Transaction {
    let prev = OutPoint::new(bitcoin::Txid::from_raw_hash(bitcoin::hashes::Hash::all_zeros()), 3);
    let mut tx = unsigned(&[(prev, Amount::ZERO)], &[]);
    tx.output =
        sats.iter().map(|s| TxOut { value: Amount::from_sat(*s), script_pubkey: to.to_owned() }).collect();
    tx
}

fn full(db: &SharedDb, cfg: &Rc<RelayConfig>, hashrate: f64) -> AnyNode {
    let payout = Payout::Script(key(9).wpkh);
    Box::new(BtcNode::Full(FullNode::new(Rc::clone(db), Rc::clone(cfg), hashrate, payout)))
}

/// Hashes per second that find a block every `secs` at the genesis difficulty.
fn rate_for(db: &SharedDb, secs: f64) -> f64 {
    fika_btc::pow::expected_hashes(db.borrow().rec(0).data.block.header.bits) / secs
}

#[track_caller]
fn sim(nodes: Vec<AnyNode>, links: &[(u32, u32)], latency_ms: f64, seed: u64) -> Simulation<AnyNode, Events> {
    let mut adj = vec![Vec::new(); nodes.len()];
    for (a, b) in links {
        adj[*a as usize].push(*b);
        adj[*b as usize].push(*a);
    }
    let model =
        NetworkModel { latency: LatencyModel::Constant { ms: latency_ms }, ..NetworkModel::default() };
    let net = Net::new(&adj, Vec::new(), model, fika_core::derive_rng(seed, "net", 0));
    Simulation::new(seed, nodes, net, vec![], Vec::new())
}

fn kinds_at(events: &Events, node: u32, kind: &str) -> usize {
    events.iter().filter(|(_, n, e)| *n == Some(NodeId(node)) && e.kind == kind).count()
}

fn bad_block(db: &BlockDb, tweak: impl FnOnce(&mut Block)) -> Arc<SimBlock> {
    let k = key(1);
    let p = db.rec(0);
    let coinbase = coinbase_tx(1, &k.wpkh, db.params().subsidy(1), b"bad");
    let header = db.child_header(0, p.data.block.header.time + 10);
    let mut block = assemble_block(header, coinbase, vec![]);
    tweak(&mut block);
    Arc::new(SimBlock::new(block, 0))
}

#[test]
fn invalid_blocks_are_rejected_and_not_relayed() {
    let k = key(1);
    let pre = premine(&k.wpkh, &[100_000]);
    let coin = (OutPoint::new(pre.compute_txid(), 0), Amount::from_sat(100_000));
    let db: SharedDb = Rc::new(RefCell::new(BlockDb::new(params(), std::slice::from_ref(&pre))));
    let cfg = Rc::new(RelayConfig { compact_blocks: false, ..RelayConfig::default() });
    let (overspend, bad_root, bad_sig, good) = {
        let d = db.borrow();
        let over = bad_block(&d, |b| {
            b.txdata[0].output[0].value = Amount::from_sat(d.params().subsidy(1).to_sat() + 1);
            b.header.merkle_root = fika_btc::merkle::block_merkle_root(b);
        });
        let root = bad_block(&d, |b| b.header.nonce = 1).clone();
        let mut root_block = root.block.clone();
        root_block.header.merkle_root =
            bitcoin::TxMerkleNode::from_raw_hash(bitcoin::hashes::Hash::all_zeros());
        let root = Arc::new(SimBlock::new(root_block, 0));
        let forged = spend_wpkh(&key(2), &[coin], &[(k.wpkh.clone(), 90_000)]);
        let sig = {
            let coinbase = coinbase_tx(1, &k.wpkh, d.params().subsidy(1), b"sig");
            let header = d.child_header(0, d.rec(0).data.block.header.time + 10);
            Arc::new(SimBlock::new(assemble_block(header, coinbase, vec![forged]), 0))
        };
        let good = bad_block(&d, |b| b.header.nonce = 7);
        (over, root, sig, good)
    };
    // Injector(0) — full(1) — observer full(2) — injector-as-observer(3).
    let nodes: Vec<AnyNode> = vec![
        Box::new(Injector {
            script: vec![
                (Duration::from_secs(1), NodeId(1), BtcMsg::Block(overspend)),
                (Duration::from_secs(2), NodeId(1), BtcMsg::Block(bad_root)),
                (Duration::from_secs(3), NodeId(1), BtcMsg::Block(bad_sig)),
                (Duration::from_secs(4), NodeId(1), BtcMsg::Block(good)),
            ],
        }),
        full(&db, &cfg, 0.0),
        full(&db, &cfg, 0.0),
        Box::new(Injector { script: vec![] }),
    ];
    let mut s = sim(nodes, &[(0, 1), (1, 2), (2, 3)], 10.0, 1);
    s.run_until(SimTime::from_secs(30), &mut |_| {});
    let ev = s.sink();
    assert_eq!(kinds_at(ev, 1, "btc.block.invalid"), 3, "node 1 rejects the three bad blocks");
    assert_eq!(kinds_at(ev, 2, "btc.block.received"), 1, "only the good block reaches node 2");
    assert_eq!(kinds_at(ev, 2, "btc.block.invalid"), 0);
    let got: Vec<&Event> =
        ev.iter().filter(|(_, n, e)| *n == Some(NodeId(3)) && e.kind == "test.got").map(|x| &x.2).collect();
    assert_eq!(got.len(), 1, "the far observer hears of one block: {got:?}");
}

#[test]
fn a_double_spend_confirms_only_once() {
    let k = key(1);
    let pre = premine(&k.wpkh, &[100_000]);
    let coin = (OutPoint::new(pre.compute_txid(), 0), Amount::from_sat(100_000));
    let db: SharedDb = Rc::new(RefCell::new(BlockDb::new(params(), std::slice::from_ref(&pre))));
    let cfg = Rc::new(RelayConfig { tx_trickle_s: 1.0, ..RelayConfig::default() });
    let pay_a = spend_wpkh(&k, &[coin], &[(key(2).wpkh, 90_000)]);
    let pay_b = spend_wpkh(&k, &[coin], &[(key(3).wpkh, 95_000)]);
    let h = rate_for(&db, 20.0);
    // Two injectors hand the conflicting payments to opposite ends of a line of miners.
    let nodes: Vec<AnyNode> = vec![
        Box::new(Injector {
            script: vec![(Duration::from_secs(1), NodeId(2), BtcMsg::Tx(Arc::new(pay_a.clone())))],
        }),
        Box::new(Injector {
            script: vec![(Duration::from_secs(1), NodeId(5), BtcMsg::Tx(Arc::new(pay_b.clone())))],
        }),
        full(&db, &cfg, h),
        full(&db, &cfg, h),
        full(&db, &cfg, h),
        full(&db, &cfg, h),
    ];
    let mut s = sim(nodes, &[(0, 2), (1, 5), (2, 3), (3, 4), (4, 5)], 50.0, 2);
    s.run_until(SimTime::from_secs(600), &mut |_| {});
    let d = db.borrow();
    let best = (0..d.len() as BlockId)
        .filter(|i| matches!(d.rec(*i).status, Status::Valid(_)))
        .max_by_key(|i| d.rec(*i).work)
        .unwrap();
    let mut confirmed = Vec::new();
    let mut b = Some(best);
    while let Some(x) = b {
        for tx in d.rec(x).data.block.txdata.iter().skip(1) {
            confirmed.push(tx.compute_txid());
        }
        b = d.rec(x).parent;
    }
    let a = confirmed.contains(&pay_a.compute_txid());
    let bb = confirmed.contains(&pay_b.compute_txid());
    assert!(a ^ bb, "exactly one of the conflicting payments confirms (a: {a}, b: {bb})");
    assert!(d.rec(best).height >= 10);
    // No block anywhere in the store that is valid holds both.
    for r in d.blocks() {
        let ids: Vec<_> = r.data.block.txdata.iter().map(|t| t.compute_txid()).collect();
        assert!(!(ids.contains(&pay_a.compute_txid()) && ids.contains(&pay_b.compute_txid())));
    }
}

#[test]
fn forks_emerge_from_latency_and_resolve_to_one_chain() {
    let db: SharedDb = Rc::new(RefCell::new(BlockDb::new(params(), &[])));
    // Blocks every 10 s across links of 3 s: stale blocks must happen.
    let cfg = Rc::new(RelayConfig { compact_blocks: false, stop_height: 60, ..RelayConfig::default() });
    let h = rate_for(&db, 10.0) / 6.0;
    let nodes: Vec<AnyNode> = (0..6).map(|_| full(&db, &cfg, h)).collect();
    let links = [(0, 1), (1, 2), (2, 3), (3, 4), (4, 5), (5, 0)];
    let mut s = sim(nodes, &links, 3000.0, 3);
    s.run_until(SimTime::from_secs(3 * 3600), &mut |_| {});
    let d = db.borrow();
    let mined = d.blocks().iter().filter(|r| r.origin.is_some()).count();
    let best = (0..d.len() as BlockId).max_by_key(|i| (d.rec(*i).work, std::cmp::Reverse(*i))).unwrap();
    assert!(
        mined > d.rec(best).height as usize,
        "some blocks went stale ({mined} mined, height {})",
        d.rec(best).height
    );
    let reorgs = s.sink().iter().filter(|(_, _, e)| e.kind == "btc.reorg").count();
    assert!(reorgs > 0, "nodes reorganized");
    // Every node has the best chain's settled part (the very last height
    // may end in a tie that nothing mined afterwards resolves: a node keeps
    // the first block it saw and relays only its tip, as Core does).
    let settled = d.ancestor(best, d.rec(best).height - 3);
    let best_hash = fika_core::Value::Hash(bitcoin::hashes::Hash::to_byte_array(d.rec(settled).data.hash));
    for n in 0..6u32 {
        let has = s.sink().iter().any(|(_, node, e)| {
            *node == Some(NodeId(n)) && e.kind == "btc.block.received" && e.field("hash") == Some(&best_hash)
        });
        assert!(has, "node {n} has the best chain's block at height {}", d.rec(settled).height);
    }
}

#[test]
fn difficulty_rises_when_blocks_come_twice_as_fast() {
    let mut p = params();
    p.retargeting = true;
    p.retarget_interval = 20;
    p.target_timespan_secs = 20 * 10;
    p.pow_limit_bits = 0x207f_ffff;
    // Start below the limit so the target can move both ways.
    p.genesis = fika_btc::params::GenesisSpec::Synthetic { time: 1_700_000_000 };
    let db: SharedDb = Rc::new(RefCell::new(BlockDb::new(p, &[])));
    let cfg = Rc::new(RelayConfig {
        compact_blocks: false,
        stop_height: 45,
        start_unix: 1_700_000_000,
        ..RelayConfig::default()
    });
    // Twice the hashrate the 10 s target assumes.
    let h = 2.0 * rate_for(&db, 10.0);
    let nodes: Vec<AnyNode> = vec![full(&db, &cfg, h / 2.0), full(&db, &cfg, h / 2.0)];
    let mut s = sim(nodes, &[(0, 1)], 10.0, 4);
    s.run_until(SimTime::from_secs(3600), &mut |_| {});
    let d = db.borrow();
    let best = (0..d.len() as BlockId).max_by_key(|i| (d.rec(*i).work, std::cmp::Reverse(*i))).unwrap();
    assert!(d.rec(best).height >= 41);
    let target = |h: u32| {
        fika_btc::pow::decode_compact(d.rec(d.ancestor(best, h)).data.block.header.bits.to_consensus())
            .unwrap()
    };
    let before = target(19);
    let after = target(21);
    // The genesis target is the limit, so it cannot rise; it must fall to about half.
    assert!(after < before, "difficulty rose");
    let ratio = fika_btc::pow::expected_hashes(d.rec(d.ancestor(best, 21)).data.block.header.bits)
        / fika_btc::pow::expected_hashes(d.rec(d.ancestor(best, 19)).data.block.header.bits);
    assert!((1.3..3.5).contains(&ratio), "work per block rose about 2x, got {ratio}");
}

#[test]
fn compact_blocks_fetch_only_missing_transactions() {
    let k = key(1);
    let pre = premine(&k.wpkh, &[100_000, 100_000]);
    let txid = pre.compute_txid();
    let db: SharedDb = Rc::new(RefCell::new(BlockDb::new(params(), std::slice::from_ref(&pre))));
    let cfg = Rc::new(RelayConfig { compact_blocks: true, tx_trickle_s: 0.5, ..RelayConfig::default() });
    let known =
        spend_wpkh(&k, &[(OutPoint::new(txid, 0), Amount::from_sat(100_000))], &[(key(2).wpkh, 99_000)]);
    let unknown =
        spend_wpkh(&k, &[(OutPoint::new(txid, 1), Amount::from_sat(100_000))], &[(key(3).wpkh, 99_000)]);
    let block = {
        let d = db.borrow();
        let coinbase = coinbase_tx(1, &k.wpkh, d.params().subsidy(1) + Amount::from_sat(2_000), b"cb");
        let header = d.child_header(0, d.rec(0).data.block.header.time + 10);
        Arc::new(SimBlock::new(assemble_block(header, coinbase, vec![known.clone(), unknown.clone()]), 0))
    };
    // The injector gives node 1 the known tx, later the compact block.
    let nodes: Vec<AnyNode> = vec![
        Box::new(Injector {
            script: vec![
                (Duration::from_secs(1), NodeId(1), BtcMsg::Tx(Arc::new(known))),
                (Duration::from_secs(5), NodeId(1), BtcMsg::CmpctBlock(Arc::clone(&block))),
            ],
        }),
        full(&db, &cfg, 0.0),
    ];
    let mut s = sim(nodes, &[(0, 1)], 10.0, 5);
    s.run_until(SimTime::from_secs(60), &mut |_| {});
    let stats = s.stats();
    let count = |k: &str| stats.by_kind.iter().find(|x| x.kind == k).map_or(0, |x| x.count);
    assert_eq!(count("getblocktxn"), 1, "node 1 asks for the one missing transaction");
    // The injector does not answer getblocktxn, so the block stays incomplete.
    assert_eq!(kinds_at(s.sink(), 1, "btc.block.received"), 0);
    let asked = s.sink().iter().any(|(_, n, e)| {
        *n == Some(NodeId(0))
            && e.kind == "test.got"
            && e.field("kind") == Some(&fika_core::Value::Str("getblocktxn".into()))
    });
    assert!(asked);
}

#[test]
fn a_restarted_node_catches_up_through_getheaders() {
    let db: SharedDb = Rc::new(RefCell::new(BlockDb::new(params(), &[])));
    let cfg = Rc::new(RelayConfig { compact_blocks: false, stop_height: 30, ..RelayConfig::default() });
    let h = rate_for(&db, 10.0) / 2.0;
    // Two miners and a non-mining node 2 that is down from 20 s to 200 s.
    let nodes: Vec<AnyNode> = vec![full(&db, &cfg, h), full(&db, &cfg, h), full(&db, &cfg, 0.0)];
    let mut adj = vec![Vec::new(); 3];
    for (a, b) in [(0u32, 1u32), (1, 2), (0, 2)] {
        adj[a as usize].push(b);
        adj[b as usize].push(a);
    }
    let model = NetworkModel { latency: LatencyModel::Constant { ms: 20.0 }, ..NetworkModel::default() };
    let net = Net::new(&adj, Vec::new(), model, fika_core::derive_rng(6, "net", 0));
    let faults = vec![
        fika_sim::Fault { at: SimTime::from_secs(20), action: fika_sim::FaultAction::Crash(NodeId(2)) },
        fika_sim::Fault { at: SimTime::from_secs(200), action: fika_sim::FaultAction::Restart(NodeId(2)) },
    ];
    let mut s: Simulation<AnyNode, Events> = Simulation::new(6, nodes, net, faults, Vec::new());
    s.run_until(SimTime::from_secs(3600), &mut |_| {});
    let d = db.borrow();
    let best = (0..d.len() as BlockId).max_by_key(|i| (d.rec(*i).work, std::cmp::Reverse(*i))).unwrap();
    assert_eq!(d.rec(best).height, 30);
    let received = |node: u32| {
        s.sink().iter().filter(|(_, n, e)| *n == Some(NodeId(node)) && e.kind == "btc.block.received").count()
    };
    // Every block of the best chain reached node 2, most of them after the restart.
    let mut b = best;
    let mut missing = 0;
    while b != 0 {
        let hash = fika_core::Value::Hash(bitcoin::hashes::Hash::to_byte_array(d.rec(b).data.hash));
        if !s.sink().iter().any(|(_, n, e)| {
            *n == Some(NodeId(2)) && e.kind == "btc.block.received" && e.field("hash") == Some(&hash)
        }) {
            missing += 1;
        }
        b = d.rec(b).parent.unwrap();
    }
    assert_eq!(missing, 0, "node 2 has the whole best chain");
    assert!(received(2) >= 30);
    let asked = s.stats().by_kind.iter().find(|k| k.kind == "getheaders").map_or(0, |k| k.count);
    assert_eq!(asked, 2, "node 2 asked both peers for headers on restart");
}

#[test]
fn a_node_with_its_own_store_holds_blocks_until_their_parent_arrives() {
    // Blocks made in one store, delivered child first to a node with another store.
    let maker = BlockDb::new(params(), &[]);
    let k = key(1);
    let b1 = {
        let coinbase = coinbase_tx(1, &k.wpkh, maker.params().subsidy(1), b"one");
        let header = maker.child_header(0, maker.rec(0).data.block.header.time + 10);
        Arc::new(SimBlock::new(assemble_block(header, coinbase, vec![]), 0))
    };
    let mut maker = maker;
    let id1 = maker.insert(Arc::clone(&b1), None).unwrap();
    let b2 = {
        let coinbase = coinbase_tx(2, &k.wpkh, maker.params().subsidy(2), b"two");
        let header = maker.child_header(id1, b1.block.header.time + 10);
        Arc::new(SimBlock::new(assemble_block(header, coinbase, vec![]), 0))
    };
    let own: SharedDb = Rc::new(RefCell::new(BlockDb::new(params(), &[])));
    let cfg = Rc::new(RelayConfig { compact_blocks: false, ..RelayConfig::default() });
    let nodes: Vec<AnyNode> = vec![
        Box::new(Injector {
            script: vec![
                (Duration::from_secs(1), NodeId(1), BtcMsg::Block(Arc::clone(&b2))),
                (Duration::from_secs(2), NodeId(1), BtcMsg::Block(Arc::clone(&b1))),
            ],
        }),
        full(&own, &cfg, 0.0),
    ];
    let mut s = sim(nodes, &[(0, 1)], 10.0, 7);
    s.run_until(SimTime::from_secs(10), &mut |_| {});
    assert_eq!(kinds_at(s.sink(), 1, "btc.block.received"), 2, "both blocks accepted");
    let d = own.borrow();
    let tip = (0..d.len() as BlockId).max_by_key(|i| d.rec(*i).work).unwrap();
    assert_eq!(d.rec(tip).height, 2);
    assert_eq!(d.rec(tip).data.hash, b2.hash);
    // The node asked the injector for the missing parent.
    let asked = s.sink().iter().any(|(_, n, e)| {
        *n == Some(NodeId(0)) && e.field("kind") == Some(&fika_core::Value::Str("getdata".into()))
    });
    assert!(asked);
}

/// A 40-node random network with jittery links (heavy-tailed with a large
/// `spread_ms`, so that announcements overtake one another) and a block
/// every 2 s on average, so that several blocks are announced at once and
/// forks happen; with `faults`, crashes, restarts and a partition. Returns
/// the trace and the counters.
fn relay_run(
    take_early: bool,
    seed: u64,
    faults: bool,
    compact: bool,
    spread_ms: f64,
) -> (Events, fika_sim::SimStats) {
    use fika_sim::{Fault, FaultAction};
    let n = 40u32;
    let db: SharedDb = Rc::new(RefCell::new(BlockDb::new(params(), &[])));
    let cfg = Rc::new(RelayConfig { compact_blocks: compact, stop_height: 80, ..RelayConfig::default() });
    let h = rate_for(&db, 2.0) / f64::from(n);
    let nodes: Vec<AnyNode> = (0..n)
        .map(|_| {
            let node = full(&db, &cfg, h);
            if take_early { node } else { Box::new(Unoffered(node)) as AnyNode }
        })
        .collect();
    let mut pick = fika_core::derive_rng(seed, "links", 0);
    let mut adj = vec![Vec::new(); n as usize];
    for a in 0..n {
        for _ in 0..4 {
            let b = rand::Rng::gen_range(&mut pick, 0..n);
            if a != b && !adj[a as usize].contains(&b) {
                adj[a as usize].push(b);
                adj[b as usize].push(a);
            }
        }
    }
    for l in &mut adj {
        l.sort_unstable();
    }
    let model = NetworkModel {
        latency: LatencyModel::Pareto { mean_ms: 400.0, spread_ms },
        ..NetworkModel::default()
    };
    let net = Net::new(&adj, Vec::new(), model, fika_core::derive_rng(seed, "net", 0));
    let mut plan = Vec::new();
    if faults {
        for k in 0..12u64 {
            let node = NodeId(rand::Rng::gen_range(&mut pick, 0..n));
            plan.push(Fault {
                at: SimTime::from_millis(9_000 * k + 1_000),
                action: FaultAction::Crash(node),
            });
            plan.push(Fault {
                at: SimTime::from_millis(9_000 * k + 4_000),
                action: FaultAction::Restart(node),
            });
        }
        let island = (0..8).map(|_| NodeId(rand::Rng::gen_range(&mut pick, 0..n))).collect();
        plan.push(Fault { at: SimTime::from_secs(50), action: FaultAction::Partition(vec![island]) });
        plan.push(Fault { at: SimTime::from_secs(70), action: FaultAction::Heal });
    }
    let mut s = Simulation::new(seed, nodes, net, plan, Events::new());
    s.run_until(SimTime::from_secs(200), &mut |_| {});
    let (_, events, stats) = s.into_parts();
    (events, stats)
}

#[test]
fn announcements_taken_early_change_nothing() {
    let cases = [
        (1, false, false, 150.0),
        (2, true, false, 150.0),
        (3, false, true, 150.0),
        (4, true, true, 150.0),
        (5, false, false, 350.0),
        (6, true, false, 350.0),
    ];
    for (seed, faults, compact, spread) in cases {
        let (want, want_stats) = relay_run(false, seed, faults, compact, spread);
        let (got, got_stats) = relay_run(true, seed, faults, compact, spread);
        let case = format!("seed {seed}, faults {faults}, compact {compact}, spread {spread}");
        assert_eq!(want_stats.resolved_at_send, 0, "{case}");
        assert!(got_stats.resolved_at_send > got_stats.messages_delivered / 5, "{case}: {got_stats:?}");
        assert!(want.iter().filter(|(_, _, e)| e.kind == "btc.reorg").count() > 0, "{case}: forks happen");
        let same = fika_sim::SimStats { resolved_at_send: 0, ..got_stats };
        assert_eq!(same, want_stats, "{case}");
        assert_eq!(got.len(), want.len(), "{case}");
        for (g, w) in got.iter().zip(&want) {
            assert_eq!(g, w, "{case}");
        }
    }
}
