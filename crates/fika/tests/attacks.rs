//! Attackers as node strategies, each in a small simulated network that
//! shows its defining behaviour: the double spender releases only after the
//! merchant's z confirmations and reverses the payment (or gives up and the
//! payment stands); the majority attacker's release reorganizes the honest
//! nodes at least D blocks deep; an eclipsed miner hears no block after the
//! eclipse and falls behind; censoring miners never include a blacklisted
//! transaction; a scheduled partition forks the chain and its heal reorgs
//! one side onto the other; γ set as a parameter decides selfish races.

use std::collections::BTreeSet;

use bitcoin::hashes::Hash;
use bitcoin::{OutPoint, Txid};
use fika::bitcoin::{BitcoinReport, Built, Collector, build, report};
use fika_btc::blockdb::BlockId;
use fika_btc::node::BtcNode;
use fika_core::{Event, EventSink, NodeId, SimTime, Value, derive_rng};
use fika_scenario::{Layout, Scenario};
use fika_sim::{Net, Simulation};

type Events = Vec<(SimTime, Option<NodeId>, Event)>;

/// A finished simulation with everything to inspect.
struct Sim {
    s: Scenario,
    layout: Layout,
    built: Built,
    events: Events,
}

#[track_caller]
fn simulate(text: &str) -> Sim {
    let s = fika_scenario::load_str(text, "inline").expect("valid scenario");
    let layout = fika_scenario::layout(&s).expect("layout");
    let spec = s.bitcoin.clone().expect("a bitcoin scenario");
    let mut built = build(&s, &spec, &layout);
    let net = Net::new(
        &layout.graph.adjacency(),
        layout.region.clone(),
        s.network.model.clone(),
        derive_rng(s.seed, "net", 0),
    );
    let nodes = std::mem::take(&mut built.nodes);
    let mut sim = Simulation::new(s.seed, nodes, net, layout.faults.clone(), Events::new());
    sim.run_until(SimTime::ZERO + s.duration, &mut |_| {});
    let (nodes, events, _) = sim.into_parts();
    built.nodes = nodes;
    Sim { s, layout, built, events }
}

impl Sim {
    fn report(&self) -> BitcoinReport {
        let mut c = Collector::default();
        for (t, n, e) in &self.events {
            c.record(*t, *n, e);
        }
        report(&self.built, &self.layout, &c, self.s.duration.as_secs_f64(), None).expect("report")
    }

    fn id(&self, name: &str) -> u32 {
        self.layout.id_of(name).expect("node").0
    }

    /// Times of `kind` events at node `node`.
    fn times(&self, node: u32, kind: &str) -> Vec<SimTime> {
        self.events
            .iter()
            .filter(|(_, n, e)| *n == Some(NodeId(node)) && e.kind == kind)
            .map(|x| x.0)
            .collect()
    }

    /// Blocks mined by `miner`.
    fn mined_by(&self, miner: u32) -> Vec<BlockId> {
        let db = self.built.db.borrow();
        (0..db.len() as BlockId).filter(|b| db.rec(*b).origin.is_some_and(|o| o.miner == miner)).collect()
    }

    /// When node `node` first received block `b`.
    fn received(&self, node: u32, b: BlockId) -> Option<SimTime> {
        let hash = self.built.db.borrow().rec(b).data.hash.to_byte_array();
        self.events.iter().find_map(|(t, n, e)| {
            (*n == Some(NodeId(node))
                && e.kind == "btc.block.received"
                && matches!(e.field("hash"), Some(Value::Hash(h)) if *h == hash))
            .then_some(*t)
        })
    }

    fn tip(&self, node: u32) -> BlockId {
        match &self.built.nodes[node as usize] {
            BtcNode::Full(f) => f.tip(),
            BtcNode::Wallet(_) => panic!("node {node} is a wallet"),
        }
    }

    /// Blocks on the chain ending at `tip`.
    fn chain(&self, tip: BlockId) -> BTreeSet<BlockId> {
        let db = self.built.db.borrow();
        let mut out = BTreeSet::new();
        let mut b = Some(tip);
        while let Some(x) = b {
            out.insert(x);
            b = db.rec(x).parent;
        }
        out
    }

    /// Blocks holding transaction `t`.
    fn holding(&self, t: Txid) -> Vec<BlockId> {
        let db = self.built.db.borrow();
        (0..db.len() as BlockId)
            .filter(|b| db.rec(*b).data.block.txdata.iter().any(|tx| tx.compute_txid() == t))
            .collect()
    }

    fn full_nodes(&self) -> Vec<u32> {
        (0..self.built.nodes.len() as u32)
            .filter(|i| matches!(self.built.nodes[*i as usize], BtcNode::Full(_)))
            .collect()
    }
}

/// A scenario on the attack tests' common network — WAN latencies, a
/// random topology with Dogecoin's degrees, the regtest-fast chain — with
/// `nodes` as its node groups and `extra` after the `[bitcoin]` table.
fn scenario(name: &str, seed: u64, duration: &str, nodes: &str, extra: &str) -> String {
    format!(
        "name = \"{name}\"\nseed = {seed}\nduration = \"{duration}\"\nprotocol = \"bitcoin\"\n\
         [network]\npreset = \"wan\"\n[topology]\nkind = \"random\"\ndegree = \"dogecoin\"\n\
         {}[bitcoin]\npreset = \"regtest-fast\"\n{}",
        nodes.trim_start_matches('\n'),
        extra.trim_start_matches('\n')
    )
}

const NODES_DOUBLE_SPEND: &str = r#"
[[nodes]]
role = "miner"
name = "attacker"
strategy = "double-spend"
hashrate = 0.6
merchant = "shop"
amount = 4.0
confirmations = 3
start = "1m"
[[nodes]]
role = "miner"
count = 4
name = "pool"
hashrate = 0.1
[[nodes]]
role = "full"
count = 5
name = "node"
[[nodes]]
role = "wallet"
name = "shop"
servers = 2
"#;

/// A double spender (60 % of the hashrate) paying the wallet `shop`.
fn double_spend() -> String {
    scenario("double-spend", 7, "30m", NODES_DOUBLE_SPEND, "")
}

#[test]
fn a_double_spender_releases_after_z_confirmations_and_reverses_the_payment() {
    let sim = simulate(&double_spend());
    let r = sim.report();
    let d = r.double_spend.clone().expect("a double spend");
    assert_eq!((d.outcome.as_str(), d.z), ("released", 3), "{d:?}");
    assert!((d.q - 0.6).abs() < 1e-9);
    let attacker = sim.id("attacker");
    let rec = match &sim.built.nodes[attacker as usize] {
        BtcNode::Full(f) => f.race_record().cloned().expect("a race record"),
        BtcNode::Wallet(_) => unreachable!(),
    };
    let (pay, conflict) = (rec.payment.expect("paid"), rec.conflict.expect("conflict"));
    let released = *sim.times(attacker, "btc.attack.release").first().expect("released");
    let started = rec.started.expect("started");
    // The payment made it into an honest block, which then got z − 1 more
    // before the release: the merchant saw z confirmations.
    let db = sim.built.db.borrow();
    let paid_in = sim.holding(pay);
    assert!(!paid_in.is_empty(), "the payment was mined");
    let confirmations_seen = paid_in
        .iter()
        .map(|b| {
            let h = db.rec(*b).height;
            let top = (0..db.len() as BlockId)
                .filter(|x| {
                    db.rec(*x).origin.is_some_and(|o| o.miner != attacker && o.at_ns <= released.as_nanos())
                        && db.is_ancestor(*b, *x)
                })
                .map(|x| db.rec(x).height)
                .max()
                .unwrap_or(h);
            top + 1 - h
        })
        .max()
        .unwrap_or(0);
    assert!(confirmations_seen >= 3, "released after {confirmations_seen} confirmations");
    // Every private block stayed private until the release.
    let mine = sim.mined_by(attacker);
    let private: Vec<BlockId> = mine
        .iter()
        .copied()
        .filter(|b| db.rec(*b).origin.is_some_and(|o| o.at_ns >= started.as_nanos()))
        .collect();
    assert!(private.len() >= 4, "a private chain longer than 3 honest blocks");
    for b in private.iter().filter(|b| db.rec(**b).origin.is_some_and(|o| o.at_ns < released.as_nanos())) {
        for node in sim.full_nodes().into_iter().filter(|n| *n != attacker) {
            if let Some(t) = sim.received(node, *b) {
                assert!(t >= released, "block {b} reached node {node} before the release");
            }
        }
    }
    // The final chain holds the conflicting payment, not the merchant's.
    let tip = sim.tip(sim.id("node1"));
    let utxo = db.utxo(tip).expect("valid tip");
    assert!(utxo.0.contains_key(&OutPoint::new(conflict, 0)), "the attacker paid itself back");
    assert!(!sim.chain(tip).iter().any(|b| paid_in.contains(b)), "the payment is gone from the best chain");
    assert!(d.success);
    assert!(r.conservation_ok);
}

#[test]
fn a_weak_double_spender_gives_up_and_the_payment_stands() {
    let text = double_spend().replace("hashrate = 0.6", "hashrate = 0.05\ngive_up = 2");
    let sim = simulate(&text);
    let d = sim.report().double_spend.expect("a double spend");
    assert_eq!(d.outcome, "gave-up", "{d:?}");
    assert!(!d.success);
    assert!(d.model < 0.01 && d.rosenfeld < 0.05, "{d:?}");
    let attacker = sim.id("attacker");
    let rec = match &sim.built.nodes[attacker as usize] {
        BtcNode::Full(f) => f.race_record().cloned().expect("race record"),
        BtcNode::Wallet(_) => unreachable!(),
    };
    let tip = sim.tip(sim.id("node1"));
    let paid_in = sim.holding(rec.payment.expect("paid"));
    assert!(sim.chain(tip).iter().any(|b| paid_in.contains(b)), "the merchant keeps the payment");
    // Having given up, the attacker mines on the honest chain again.
    assert!(sim.chain(sim.tip(attacker)).iter().any(|b| paid_in.contains(b)));
}

const NODES_MAJORITY: &str = r#"
[[nodes]]
role = "miner"
name = "attacker"
strategy = "majority"
hashrate = 0.6
depth = 4
start = "2m"
[[nodes]]
role = "miner"
count = 4
name = "pool"
hashrate = 0.1
[[nodes]]
role = "full"
count = 6
name = "node"
"#;

/// A majority attacker reorganizing at least 4 blocks deep.
fn majority() -> String {
    scenario("majority", 3, "20m", NODES_MAJORITY, "")
}

#[test]
fn a_majority_attacker_reorgs_the_honest_chain_at_least_d_deep() {
    let sim = simulate(&majority());
    let r = sim.report();
    let m = r.majority.clone().expect("a majority attack");
    assert_eq!(m.outcome, "released", "{m:?}");
    assert!(m.public_blocks.is_some_and(|p| p >= 4), "{m:?}");
    assert!(m.private_blocks > m.public_blocks);
    // Honest nodes went through the reorg themselves.
    assert!(r.max_reorg_depth >= 4, "deepest reorg {}", r.max_reorg_depth);
    let node = sim.id("node1");
    let released = *sim.times(sim.id("attacker"), "btc.attack.release").first().expect("release");
    let deep: Vec<SimTime> = sim
        .events
        .iter()
        .filter(|(_, n, e)| *n == Some(NodeId(node)) && e.kind == "btc.reorg" && e.u64("depth") >= Some(4))
        .map(|x| x.0)
        .collect();
    assert!(!deep.is_empty() && deep.iter().all(|t| *t >= released), "node1 reorged deep after the release");
    // Every honest node ends on the attacker's chain.
    let a_tip = sim.tip(sim.id("attacker"));
    let a_chain = sim.chain(a_tip);
    let start = SimTime::ZERO + std::time::Duration::from_secs(120);
    let first_private = sim
        .mined_by(sim.id("attacker"))
        .into_iter()
        .find(|b| sim.built.db.borrow().rec(*b).origin.is_some_and(|o| o.at_ns >= start.as_nanos()))
        .expect("private blocks");
    assert!(a_chain.contains(&first_private));
    for n in sim.full_nodes() {
        assert!(sim.chain(sim.tip(n)).contains(&first_private), "node {n} follows the attacker's chain");
    }
}

const NODES_ECLIPSE: &str = r#"
[[nodes]]
role = "miner"
count = 4
name = "pool"
hashrate = 0.2
[[nodes]]
role = "miner"
name = "victim"
hashrate = 0.2
[[nodes]]
role = "full"
count = 2
name = "eve"
strategy = "eclipse"
victims = ["victim"]
start = "3m"
[[nodes]]
role = "full"
count = 6
name = "node"
"#;

/// Two eclipse attackers holding the miner `victim`.
fn eclipse() -> String {
    scenario("eclipse", 2, "20m", NODES_ECLIPSE, "")
}

#[test]
fn an_eclipsed_miner_hears_no_block_and_wastes_its_work() {
    let sim = simulate(&eclipse());
    let victim = sim.id("victim");
    // The victim's only links are the attacker's nodes.
    let mut peers: Vec<u32> = sim
        .layout
        .graph
        .edges
        .iter()
        .filter_map(|e| match (e.from == victim, e.to == victim) {
            (true, _) => Some(e.to),
            (_, true) => Some(e.from),
            _ => None,
        })
        .collect();
    peers.sort_unstable();
    assert_eq!(peers, vec![sim.id("eve1"), sim.id("eve2")]);
    let start = SimTime::ZERO + std::time::Duration::from_secs(180);
    let db = sim.built.db.borrow();
    // Before the eclipse the victim follows the network …
    let before = (0..db.len() as BlockId)
        .filter(|b| db.rec(*b).origin.is_some_and(|o| o.miner != victim && o.at_ns < start.as_nanos()))
        .filter(|b| sim.received(victim, *b).is_some())
        .count();
    assert!(before > 5, "the victim synced before the eclipse: {before}");
    // … after it, it receives nothing but its own blocks.
    for b in 0..db.len() as BlockId {
        let Some(o) = db.rec(b).origin else { continue };
        if let Some(t) = sim.received(victim, b) {
            assert!(
                o.miner == victim || t < start + std::time::Duration::from_secs(1),
                "block {b} by {} reached the victim at {t}",
                o.miner
            );
        }
    }
    drop(db);
    let r = sim.report();
    let e = r.eclipse.expect("an eclipse");
    assert_eq!(e.victims.len(), 1);
    let (name, _, lag, mined, on_best) = e.victims[0].clone();
    assert_eq!(name, "victim");
    assert!(lag > 20, "the victim lags {lag} blocks");
    assert!(mined > 10 && on_best < mined / 2, "its later blocks are wasted: {mined} mined, {on_best} kept");
    // Everyone else is unaffected: the attacker's nodes follow the best chain.
    assert!(r.best_height > 80);
}

const NODES_CENSOR: &str = r#"
[[nodes]]
role = "miner"
count = 2
name = "censor"
strategy = "censor"
censored = ["black"]
hashrate = 0.25
[[nodes]]
role = "miner"
count = 2
name = "pool"
hashrate = 0.25
[[nodes]]
role = "full"
count = 4
name = "node"
[[nodes]]
role = "wallet"
count = 6
name = "w"
balance = 10.0
servers = 2
[[nodes]]
role = "wallet"
count = 2
name = "black"
balance = 10.0
servers = 2
"#;

/// Two miners censoring the wallets `black*`, under a payment workload.
fn censor() -> String {
    scenario(
        "censor",
        4,
        "40m",
        NODES_CENSOR,
        r#"
[bitcoin.workload]
interval = "20s"
start = "30s"
"#,
    )
}

#[test]
fn censoring_miners_never_include_blacklisted_transactions() {
    let sim = simulate(&censor());
    let r = sim.report();
    let c = r.censorship.clone().expect("censorship");
    assert!((c.censor_hashrate_share - 0.5).abs() < 1e-9);
    assert!(c.txs.0 >= 20 && c.txs.1 >= 50, "both kinds of transactions: {c:?}");
    assert_eq!(c.censored_in_censor_blocks, 0);
    // Independently: no block of a censor holds a transaction paying or
    // spending a blacklisted wallet's coins, yet censors do mine other transactions.
    let black: Vec<bitcoin::ScriptBuf> = ["black1", "black2"]
        .iter()
        .map(|n| match &sim.built.nodes[sim.id(n) as usize] {
            BtcNode::Wallet(w) => w.spv().wallet().receive_script(),
            BtcNode::Full(_) => unreachable!(),
        })
        .collect();
    let censors = [sim.id("censor1"), sim.id("censor2")];
    let db = sim.built.db.borrow();
    let (mut other_in_censor, mut black_elsewhere) = (0, 0);
    for rec in db.blocks().iter().filter(|r| r.origin.is_some()) {
        let by_censor = rec.origin.is_some_and(|o| censors.contains(&o.miner));
        for tx in rec.data.block.txdata.iter().skip(1) {
            let pays = tx.output.iter().any(|o| black.contains(&o.script_pubkey));
            let spends = tx.input.iter().any(|i| {
                db.tx_idx(&i.previous_output.txid)
                    .and_then(|p| db.tx(p).tx.output.get(i.previous_output.vout as usize).cloned())
                    .is_some_and(|o| black.contains(&o.script_pubkey))
            });
            match (by_censor, pays || spends) {
                (true, true) => panic!("a censor mined a blacklisted transaction"),
                (true, false) => other_in_censor += 1,
                (false, true) => black_elsewhere += 1,
                (false, false) => {}
            }
        }
    }
    assert!(other_in_censor > 10 && black_elsewhere > 10, "{other_in_censor} / {black_elsewhere}");
    // The censored wait longer for their first confirmation.
    let (cens, other) = c.confirmation_mean_s;
    assert!(cens.expect("censored mean") > other.expect("other mean"), "{c:?}");
}

#[test]
fn a_partition_forks_the_chain_and_the_heal_reorgs_one_side() {
    let text = r#"
name = "partition"
seed = 9
duration = "16m"
protocol = "bitcoin"
[network]
preset = "wan"
[topology]
kind = "random"
degree = "dogecoin"
[[nodes]]
role = "miner"
count = 3
name = "a"
[[nodes]]
role = "miner"
count = 3
name = "b"
[[nodes]]
role = "full"
count = 4
name = "x"
[[nodes]]
role = "full"
count = 4
name = "y"
[[faults]]
at = "2m"
kind = "partition"
groups = [["a1", "a2", "a3", "x1", "x2", "x3", "x4"], ["b1", "b2", "b3", "y1", "y2", "y3", "y4"]]
[[faults]]
at = "10m"
kind = "heal"
[bitcoin]
preset = "regtest-fast"
"#;
    let sim = simulate(text);
    let r = sim.report();
    let heal = SimTime::ZERO + std::time::Duration::from_secs(600);
    let db = sim.built.db.borrow();
    // During the partition each side built its own chain.
    let side_tips: Vec<BlockId> = ["x1", "y1"]
        .iter()
        .map(|n| {
            let node = sim.id(n);
            // The node's tip just before the heal: the last block it received by then.
            (0..db.len() as BlockId)
                .filter(|b| sim.received(node, *b).is_some_and(|t| t < heal))
                .max_by_key(|b| db.rec(*b).work)
                .expect("blocks before the heal")
        })
        .collect();
    let fork = db.fork_point(side_tips[0], side_tips[1]);
    let fork_height = db.rec(fork).height;
    let depths = [db.rec(side_tips[0]).height - fork_height, db.rec(side_tips[1]).height - fork_height];
    assert!(depths.iter().all(|d| *d >= 5), "both sides mined during the partition: {depths:?}");
    // After the heal one side reorganized onto the other, as deep as its own branch.
    assert!(r.max_reorg_depth >= u64::from(depths[0].min(depths[1])), "{:?} vs {depths:?}", r.reorgs);
    let deep_after_heal = sim
        .events
        .iter()
        .filter(|(t, _, e)| *t >= heal && e.kind == "btc.reorg" && e.u64("depth") >= Some(5))
        .count();
    assert!(deep_after_heal >= 4, "the losing side's nodes reorganized: {deep_after_heal}");
    assert!(r.stale_blocks >= u64::from(depths[0].min(depths[1])));
    // And the network is one again: every node's tip on one chain (at most
    // the last block still spreading).
    let best =
        sim.full_nodes().into_iter().map(|n| sim.tip(n)).max_by_key(|b| db.rec(*b).work).expect("tips");
    for n in sim.full_nodes() {
        let t = sim.tip(n);
        let f = db.fork_point(t, best);
        assert!(db.rec(best).height - db.rec(f).height <= 1, "node {n} converged");
    }
}

const NODES_SELFISH: &str = r#"
[[nodes]]
role = "miner"
name = "attacker"
strategy = "selfish"
hashrate = 0.5
gamma = 1.0
[[nodes]]
role = "miner"
count = 4
name = "m"
hashrate = 0.25
[[nodes]]
role = "full"
count = 5
name = "f"
"#;

/// A selfish pool (a third of the hashrate) with γ = 1.
fn selfish() -> String {
    scenario(
        "selfish-gamma",
        3,
        "12h",
        NODES_SELFISH,
        r#"
[bitcoin.params]
block_interval_secs = 60
"#,
    )
}

#[test]
fn gamma_decides_who_wins_the_selfish_races() {
    let run = |gamma: &str| {
        let s = fika_scenario::load_str(&selfish().replace("gamma = 1.0", gamma), "selfish").expect("valid");
        fika::run(&s, &fika::RunOptions::default(), &mut |_| {}).expect("run").bitcoin.expect("bitcoin")
    };
    let one = run("gamma = 1.0");
    let zero = run("gamma = 0.0");
    let alpha = one.selfish_hashrate_share.expect("alpha");
    assert!((alpha - 1.0 / 3.0).abs() < 1e-9);
    assert_eq!(one.selfish_gamma, Some(1.0));
    let (r1, r0) = (one.selfish_revenue_share.expect("r1"), zero.selfish_revenue_share.expect("r0"));
    assert!(r1 > r0 + 0.03, "γ = 1 wins the races γ = 0 loses: {r1} vs {r0}");
    // The closed forms bracket the same ordering.
    let (c1, c0) =
        (one.selfish_revenue_closed_form.expect("c1"), zero.selfish_revenue_closed_form.expect("c0"));
    assert!(c1 > c0 && (c1 - r1).abs() < 0.1 && (c0 - r0).abs() < 0.1, "{c1} ~ {r1}, {c0} ~ {r0}");
}

#[test]
fn strategy_fields_are_checked_with_their_paths() {
    let cases = [
        (
            double_spend().replace("strategy = \"double-spend\"", "strategy = \"sneaky\""),
            "nodes[0].strategy",
            "unknown strategy",
        ),
        (
            double_spend().replace("merchant = \"shop\"", "merchant = \"node1\""),
            "nodes[0].merchant",
            "not a wallet",
        ),
        (double_spend().replace("merchant = \"shop\"\n", ""), "nodes[0].merchant", "missing"),
        (
            double_spend().replace("confirmations = 3", "confirmations = 0"),
            "nodes[0].confirmations",
            "at least 1",
        ),
        (double_spend().replace("amount = 4.0", "amount = 40.0"), "nodes[0].amount", "balance"),
        (
            double_spend()
                .replace("name = \"pool\"\nhashrate = 0.1", "name = \"pool\"\nhashrate = 0.1\ndepth = 3"),
            "nodes[1].depth",
            "only valid with strategy = \"majority\"",
        ),
        (
            majority()
                .replace("count = 1\n", "")
                .replace("name = \"attacker\"", "name = \"attacker\"\ncount = 2"),
            "nodes[0].count",
            "count = 1",
        ),
        (
            eclipse().replace("victims = [\"victim\"]", "victims = [\"nobody\"]"),
            "nodes[2].victims[0]",
            "no node is named",
        ),
        (eclipse().replace("victims = [\"victim\"]", "victims = []"), "nodes[2].victims", "missing or empty"),
        (
            censor().replace("censored = [\"black\"]", "censored = [\"node1\"]"),
            "nodes[0].censored[0]",
            "not a wallet",
        ),
        (
            censor().replace("censored = [\"black\"]", "censored = [\"ghost\"]"),
            "nodes[0].censored[0]",
            "no node or group",
        ),
        (selfish().replace("gamma = 1.0", "gamma = 1.5"), "nodes[0].gamma", "[0, 1]"),
        (
            eclipse().replace(
                "role = \"full\"\ncount = 2\nname = \"eve\"",
                "role = \"wallet\"\ncount = 2\nname = \"eve\"",
            ),
            "nodes[2].strategy",
            "relaying",
        ),
    ];
    for (text, path, needle) in cases {
        let e = fika_scenario::load_str(&text, "bad").expect_err(path).to_string();
        assert!(e.contains(path) && e.contains(needle), "{path} / {needle}: {e}");
    }
}
