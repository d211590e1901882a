//! Who a full node announces a new block to, and how: every peer but the
//! one it came from and those known to have it (they announced it), in
//! peer order, as a compact block to the peers that asked for high-bandwidth
//! relay and as an `inv` to the others; light wallets get neither.
#![allow(clippy::unwrap_used)]

mod common;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use common::*;
use fika_btc::blockdb::{BlockDb, SimBlock};
use fika_btc::msg::{BtcMsg, Inv, Invs};
use fika_btc::node::{FullNode, Payout, RelayConfig, SharedDb};
use fika_btc::template::{assemble_block, coinbase_tx};
use fika_core::NodeId;
use fika_core::testing::TestContext;

/// What a message announces, if it announces a block.
#[derive(Debug, PartialEq)]
enum Told {
    Inv,
    Compact,
}

fn told(msg: &BtcMsg) -> Option<Told> {
    match msg {
        BtcMsg::Inv(Invs::One(Inv::Block(_))) => Some(Told::Inv),
        BtcMsg::CmpctBlock(_) => Some(Told::Compact),
        _ => None,
    }
}

/// Announces a new block from peer 107 to a node with 40 peers (100 ..
/// 139): high-bandwidth peers 105 and 135, a light wallet 109, and
/// announcers 103 and 133 (indexes below and past 32). `stored`: the block
/// is in the store before it is announced, as in a simulation's shared
/// store; else it enters the node's own store on arrival, as in emulation.
/// Returns who was told, and how.
fn announce(stored: bool) -> Vec<(u32, Told)> {
    let db: SharedDb = Rc::new(RefCell::new(BlockDb::new(params(), &[])));
    let cfg = Rc::new(RelayConfig { compact_blocks: true, ..RelayConfig::default() });
    let mut node = FullNode::new(Rc::clone(&db), cfg, 0.0, Payout::Script(key(8).wpkh));
    let peers: Vec<u32> = (100..140).collect();
    let mut cx: TestContext<BtcMsg> = TestContext::new(0, &peers);
    let block = {
        let db = db.borrow();
        let genesis = db.rec(0);
        let coinbase = coinbase_tx(1, &key(3).wpkh, db.params().subsidy(1), b"fan-out");
        let header = db.child_header(0, genesis.data.block.header.time + 1);
        Arc::new(SimBlock::new(assemble_block(header, coinbase, vec![]), 0))
    };
    if stored {
        db.borrow_mut().insert(Arc::clone(&block), None).unwrap();
    }
    for p in [105, 135] {
        node.message(&mut cx, NodeId(p), BtcMsg::SendCmpct);
    }
    node.message(&mut cx, NodeId(109), BtcMsg::FilterLoad(vec![key(9).wpkh.clone()]));
    for p in [103, 133] {
        node.message(&mut cx, NodeId(p), BtcMsg::Inv(Invs::One(Inv::Block(block.hash))));
    }
    cx.sent.clear();
    node.message(&mut cx, NodeId(107), BtcMsg::Block(Arc::clone(&block)));
    assert_eq!(node.tip(), 1, "the block became the tip");
    cx.sent.iter().filter_map(|(to, m)| told(m).map(|t| (to.0, t))).collect()
}

/// Every peer but 103, 107, 109 and 133, in order; compact blocks to 105 and 135.
fn expected() -> Vec<(u32, Told)> {
    (100..140)
        .filter(|p| ![103, 107, 109, 133].contains(p))
        .map(|p| (p, if p == 105 || p == 135 { Told::Compact } else { Told::Inv }))
        .collect()
}

#[test]
fn a_block_goes_to_every_peer_not_known_to_have_it_in_peer_order() {
    assert_eq!(announce(true), expected());
}

#[test]
fn announcers_of_a_block_not_yet_stored_are_not_told_either() {
    assert_eq!(announce(false), expected());
}
