//! Selfish mining (Eyal & Sirer) in a small simulated network: the pool
//! withholds its blocks while it leads, publishes into a race when an
//! honest block ties it, and overrides the honest chain from a lead of two.
//!
//! The network: a scripted injector (node 0, "the honest miners") linked to
//! the selfish pool (node 1) and to an honest observer (node 2), the pool
//! also linked to the observer. The pool mines alone (one block every ~600 s
//! of virtual time); the test waits for its blocks, then injects honest
//! blocks and watches what the observer receives.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::BlockHash;
use common::*;
use fika_btc::blockdb::{BlockDb, BlockId, SimBlock};
use fika_btc::msg::BtcMsg;
use fika_btc::node::{BtcNode, FullNode, Payout, RelayConfig, SharedDb};
use fika_btc::template::{assemble_block, coinbase_tx};
use fika_core::{Context, Event, Node, NodeId, SimTime, TimerId, Value};
use fika_sim::{LatencyModel, Net, NetworkModel, Simulation};

type Events = Vec<(SimTime, Option<NodeId>, Event)>;
type AnyNode = Box<dyn Node<Msg = BtcMsg>>;
type Queue = Rc<RefCell<Vec<(NodeId, BtcMsg)>>>;

const POOL: u32 = 1;
const OBSERVER: u32 = 2;

/// Sends whatever the test queues, polling every 10 ms.
struct Injector {
    queue: Queue,
}

impl Node for Injector {
    type Msg = BtcMsg;
    fn on_start(&mut self, cx: &mut dyn Context<BtcMsg>) {
        cx.set_timer(Duration::from_millis(10), 0);
    }
    fn on_message(&mut self, _cx: &mut dyn Context<BtcMsg>, _from: NodeId, _msg: BtcMsg) {}
    fn on_timer(&mut self, cx: &mut dyn Context<BtcMsg>, _timer: TimerId) {
        for (to, msg) in self.queue.borrow_mut().drain(..) {
            cx.send(to, msg);
        }
        cx.set_timer(Duration::from_millis(10), 0);
    }
}

struct Net3 {
    sim: Simulation<AnyNode, Events>,
    db: SharedDb,
    queue: Queue,
}

fn network(seed: u64) -> Net3 {
    let db: SharedDb = Rc::new(RefCell::new(BlockDb::new(params(), &[])));
    let cfg = Rc::new(RelayConfig { compact_blocks: false, ..RelayConfig::default() });
    let rate = fika_btc::pow::expected_hashes(db.borrow().rec(0).data.block.header.bits) / 600.0;
    let mut pool = FullNode::new(Rc::clone(&db), Rc::clone(&cfg), rate, Payout::Script(key(7).wpkh));
    pool.set_selfish(true);
    let observer = FullNode::new(Rc::clone(&db), Rc::clone(&cfg), 0.0, Payout::Script(key(8).wpkh));
    let queue: Queue = Rc::default();
    let nodes: Vec<AnyNode> = vec![
        Box::new(Injector { queue: Rc::clone(&queue) }),
        Box::new(BtcNode::Full(pool)),
        Box::new(BtcNode::Full(observer)),
    ];
    let adj = vec![vec![1, 2], vec![0, 2], vec![0, 1]];
    let model = NetworkModel { latency: LatencyModel::Constant { ms: 20.0 }, ..NetworkModel::default() };
    let net = Net::new(&adj, Vec::new(), model, fika_core::derive_rng(seed, "net", 0));
    Net3 { sim: Simulation::new(seed, nodes, net, vec![], Vec::new()), db, queue }
}

impl Net3 {
    fn pool_blocks(&self) -> Vec<BlockId> {
        let db = self.db.borrow();
        (0..db.len() as BlockId).filter(|i| db.rec(*i).origin.is_some_and(|o| o.miner == POOL)).collect()
    }

    /// Runs in 1 s steps until the pool has mined `n` blocks.
    fn until_pool_mined(&mut self, n: usize) {
        for _ in 0..1_000_000 {
            if self.pool_blocks().len() >= n {
                return;
            }
            let t = self.sim.now() + Duration::from_secs(1);
            self.sim.run_until(t, &mut |_| {});
        }
        panic!("the pool never mined {n} blocks");
    }

    fn run_for(&mut self, secs: u64) {
        let t = self.sim.now() + Duration::from_secs(secs);
        self.sim.run_until(t, &mut |_| {});
    }

    /// An honest block on `parent`.
    fn honest_block(&self, parent: BlockId, tag: &[u8]) -> Arc<SimBlock> {
        let db = self.db.borrow();
        let p = db.rec(parent);
        let height = p.height + 1;
        let coinbase = coinbase_tx(height, &key(3).wpkh, db.params().subsidy(height), tag);
        let header = db.child_header(parent, p.data.block.header.time + 1);
        Arc::new(SimBlock::new(assemble_block(header, coinbase, vec![]), 0))
    }

    fn inject(&self, to: u32, block: &Arc<SimBlock>) {
        self.queue.borrow_mut().push((NodeId(to), BtcMsg::Block(Arc::clone(block))));
    }

    fn hash(&self, id: BlockId) -> BlockHash {
        self.db.borrow().rec(id).data.hash
    }

    /// When node `node` received block `hash`, if it did.
    fn received_at(&self, node: u32, hash: BlockHash) -> Option<SimTime> {
        let bytes = bitcoin::hashes::Hash::to_byte_array(hash);
        self.sim.sink().iter().find_map(|(t, n, e)| {
            (*n == Some(NodeId(node))
                && e.kind == "btc.block.received"
                && matches!(e.field("hash"), Some(Value::Hash(h)) if *h == bytes))
            .then_some(*t)
        })
    }

    fn reorgs_to(&self, node: u32, hash: BlockHash) -> usize {
        let bytes = bitcoin::hashes::Hash::to_byte_array(hash);
        self.sim
            .sink()
            .iter()
            .filter(|(_, n, e)| {
                *n == Some(NodeId(node))
                    && e.kind == "btc.reorg"
                    && matches!(e.field("new"), Some(Value::Hash(h)) if *h == bytes)
            })
            .count()
    }
}

#[test]
fn withholds_while_leading_and_publishes_on_a_tie() {
    let mut n = network(11);
    n.until_pool_mined(1);
    let a1 = n.pool_blocks()[0];
    // The pool leads by one: its block stays private, however long we wait
    // (short of its next block).
    n.run_for(5);
    assert_eq!(n.pool_blocks().len(), 1, "seed chosen so the pool mines no second block yet");
    assert!(n.received_at(OBSERVER, n.hash(a1)).is_none(), "a leading pool withholds its block");
    // An honest block at the same height reaches the observer, then the pool.
    let h1 = n.honest_block(0, b"honest-1");
    // (The observer relays it to the pool too.)
    n.inject(OBSERVER, &h1);
    n.run_for(1);
    n.inject(POOL, &h1);
    n.run_for(2);
    assert_eq!(n.pool_blocks().len(), 1);
    let got = n.received_at(OBSERVER, n.hash(a1)).expect("the tie makes the pool publish");
    let honest_at = n.received_at(OBSERVER, h1.hash).unwrap();
    let pool_saw = n.received_at(POOL, h1.hash).expect("the pool heard of the honest block");
    assert!(got > pool_saw && pool_saw > honest_at, "published only once the honest block arrived");
    // The observer keeps the block it saw first: no reorg to the pool's block.
    assert_eq!(n.reorgs_to(OBSERVER, n.hash(a1)), 0);
}

#[test]
fn overrides_from_a_lead_of_two() {
    let mut n = network(5);
    n.until_pool_mined(2);
    n.run_for(2);
    let mine = n.pool_blocks();
    assert_eq!(mine.len(), 2, "seed chosen so the pool mines exactly two blocks first");
    let (a1, a2) = (mine[0], mine[1]);
    assert_eq!(n.db.borrow().rec(a2).parent, Some(a1), "the pool mines on its private chain");
    assert!(n.received_at(OBSERVER, n.hash(a1)).is_none());
    assert!(n.received_at(OBSERVER, n.hash(a2)).is_none());
    // The honest chain catches up to lead − 1: the pool publishes everything.
    let h1 = n.honest_block(0, b"honest-1");
    n.inject(OBSERVER, &h1);
    n.run_for(1);
    n.inject(POOL, &h1);
    n.run_for(3);
    assert!(n.received_at(OBSERVER, n.hash(a1)).is_some());
    assert!(n.received_at(OBSERVER, n.hash(a2)).is_some());
    // The observer abandons the honest block for the pool's longer chain.
    assert_eq!(n.reorgs_to(OBSERVER, n.hash(a2)), 1, "the pool's chain wins");
}

#[test]
fn loses_the_race_when_the_honest_chain_extends_its_own_block() {
    let mut n = network(11);
    n.until_pool_mined(1);
    n.run_for(1);
    let a1 = n.pool_blocks()[0];
    let h1 = n.honest_block(0, b"honest-1");
    n.inject(OBSERVER, &h1);
    n.inject(POOL, &h1);
    n.run_for(2);
    // The honest network extends its own block: the pool adopts it.
    let id1 = n.db.borrow().id_of(&h1.hash).unwrap();
    let h2 = n.honest_block(id1, b"honest-2");
    n.inject(OBSERVER, &h2);
    n.inject(POOL, &h2);
    n.run_for(2);
    assert!(n.received_at(POOL, h2.hash).is_some());
    assert_eq!(n.reorgs_to(POOL, h2.hash), 1, "the pool abandons its block for the honest chain");
    assert!(n.received_at(OBSERVER, n.hash(a1)).is_some());
}
