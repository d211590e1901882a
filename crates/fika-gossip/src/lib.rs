//! A generic gossip protocol with the shape of Bitcoin's block relay:
//! a node that learns an item announces its id to every peer (`inv`), a peer
//! that lacks it requests it from the first announcer (`getdata`), and the
//! announcer delivers the payload (`block`). If a delivery does not come
//! within the request timeout, the next announcer is asked.
//!
//! It is the first protocol on the engine, used by tests and the flood
//! benchmark; the chains reuse its shape with real messages.

use std::sync::Arc;
use std::time::Duration;

use fika_core::{Context, Event, Message, Node, NodeId, SimTime, TimerId, TimerKey};
use serde::{Deserialize, Serialize};

/// Bytes of a Bitcoin P2P message header (magic, command, length, checksum).
pub const HEADER_BYTES: u32 = 24;
/// Bytes of an `inv`/`getdata` with one entry: header, count, type and hash.
pub const INV_BYTES: u32 = HEADER_BYTES + 1 + 36;

/// Timer ids with this bit set originate an item; others time out a request.
const ORIGINATE: TimerId = 1 << 63;

/// A payload flooded through the network; shared by every copy in flight.
#[derive(Debug, PartialEq, Eq)]
pub struct Item {
    /// Dense id, unique within the run.
    pub id: u32,
    /// Payload bytes.
    pub size: u32,
    /// The node that created it.
    pub origin: NodeId,
    /// When it was created.
    pub created: SimTime,
}

/// The three messages of the protocol.
#[derive(Clone, Debug)]
pub enum GossipMsg {
    /// "I have item `id`."
    Announce(u32),
    /// "Send me item `id`."
    Request(u32),
    /// The item itself.
    Deliver(Arc<Item>),
}

impl Message for GossipMsg {
    fn wire_size(&self) -> u32 {
        match self {
            GossipMsg::Announce(_) | GossipMsg::Request(_) => INV_BYTES,
            GossipMsg::Deliver(item) => HEADER_BYTES.saturating_add(item.size),
        }
    }
    fn kind(&self) -> &'static str {
        match self {
            GossipMsg::Announce(_) => "announce",
            GossipMsg::Request(_) => "request",
            GossipMsg::Deliver(_) => "deliver",
        }
    }
}

/// Protocol parameters.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GossipConfig {
    /// How long to wait for a delivery before asking the next announcer.
    #[serde(with = "secs")]
    pub request_timeout: Duration,
}

impl Default for GossipConfig {
    fn default() -> Self {
        GossipConfig { request_timeout: Duration::from_secs(60) }
    }
}

mod secs {
    //! Durations as fractional seconds in scenario files.
    use serde::{Deserialize, Deserializer, Serializer};
    use std::time::Duration;
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_f64(d.as_secs_f64())
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let v = f64::deserialize(d)?;
        Duration::try_from_secs_f64(v).map_err(serde::de::Error::custom)
    }
}

/// An item this node will create at a given time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origination {
    /// When.
    pub at: SimTime,
    /// The item's id.
    pub id: u32,
    /// The item's size in bytes.
    pub size: u32,
}

const UNKNOWN: u8 = 0;
const REQUESTED: u8 = 1;
const HAVE: u8 = 2;

struct PendingRequest {
    id: u32,
    others: Vec<NodeId>,
    timer: TimerKey,
}

/// A gossiping node.
pub struct GossipNode {
    config: GossipConfig,
    schedule: Vec<Origination>,
    state: Vec<u8>,
    items: Vec<Option<Arc<Item>>>,
    pending: Vec<PendingRequest>,
}

impl GossipNode {
    /// A node that will originate the items of `schedule`.
    pub fn new(config: GossipConfig, mut schedule: Vec<Origination>) -> Self {
        schedule.sort_by_key(|o| (o.at, o.id));
        GossipNode { config, schedule, state: Vec::new(), items: Vec::new(), pending: Vec::new() }
    }

    /// Whether this node holds item `id`.
    pub fn has(&self, id: u32) -> bool {
        self.state_of(id) == HAVE
    }

    /// How many items this node holds.
    pub fn held(&self) -> usize {
        self.state.iter().filter(|s| **s == HAVE).count()
    }

    fn state_of(&self, id: u32) -> u8 {
        self.state.get(id as usize).copied().unwrap_or(UNKNOWN)
    }

    fn set_state(&mut self, id: u32, s: u8) {
        let i = id as usize;
        if self.state.len() <= i {
            self.state.resize(i + 1, UNKNOWN);
        }
        self.state[i] = s;
    }

    fn accept(&mut self, cx: &mut dyn Context<GossipMsg>, item: Arc<Item>, from: Option<NodeId>) {
        let id = item.id;
        self.set_state(id, HAVE);
        let i = id as usize;
        if self.items.len() <= i {
            self.items.resize(i + 1, None);
        }
        self.items[i] = Some(item);
        if let Some(p) = self.pending.iter().position(|p| p.id == id) {
            let p = self.pending.swap_remove(p);
            cx.cancel_timer(p.timer);
        }
        cx.emit(Event::new("gossip.have").with("item", id));
        for k in 0..cx.peer_count() {
            let peer = cx.peer(k);
            if Some(peer) != from {
                cx.send(peer, GossipMsg::Announce(id));
            }
        }
    }
}

impl Node for GossipNode {
    type Msg = GossipMsg;

    fn on_start(&mut self, cx: &mut dyn Context<GossipMsg>) {
        let now = cx.now();
        for (k, o) in self.schedule.iter().enumerate() {
            if o.at >= now {
                cx.set_timer(o.at - now, ORIGINATE | k as u64);
            }
        }
    }

    fn on_message(&mut self, cx: &mut dyn Context<GossipMsg>, from: NodeId, msg: GossipMsg) {
        match msg {
            GossipMsg::Announce(id) => match self.state_of(id) {
                UNKNOWN => {
                    self.set_state(id, REQUESTED);
                    let timer = cx.set_timer(self.config.request_timeout, u64::from(id));
                    self.pending.push(PendingRequest { id, others: Vec::new(), timer });
                    cx.send(from, GossipMsg::Request(id));
                }
                REQUESTED => {
                    if let Some(p) = self.pending.iter_mut().find(|p| p.id == id) {
                        p.others.push(from);
                    }
                }
                _ => {}
            },
            GossipMsg::Request(id) => {
                if let Some(Some(item)) = self.items.get(id as usize) {
                    cx.send(from, GossipMsg::Deliver(Arc::clone(item)));
                }
            }
            GossipMsg::Deliver(item) => {
                if self.state_of(item.id) != HAVE {
                    self.accept(cx, item, Some(from));
                }
            }
        }
    }

    fn on_timer(&mut self, cx: &mut dyn Context<GossipMsg>, timer: TimerId) {
        if timer & ORIGINATE != 0 {
            let Some(o) = self.schedule.get((timer & !ORIGINATE) as usize).copied() else {
                return;
            };
            if self.state_of(o.id) == HAVE {
                return;
            }
            let item = Arc::new(Item { id: o.id, size: o.size, origin: cx.id(), created: cx.now() });
            cx.emit(Event::new("gossip.created").with("item", o.id).with("size", o.size));
            self.accept(cx, item, None);
            return;
        }
        let id = timer as u32;
        let Some(p) = self.pending.iter_mut().find(|p| p.id == id) else {
            return;
        };
        if p.others.is_empty() {
            // Nobody else announced it: forget, so a later announce restarts.
            let i = self.pending.iter().position(|p| p.id == id).unwrap_or(0);
            self.pending.swap_remove(i);
            self.set_state(id, UNKNOWN);
            return;
        }
        let next = p.others.remove(0);
        p.timer = cx.set_timer(self.config.request_timeout, u64::from(id));
        cx.emit(Event::new("gossip.retry").with("item", id).with("peer", next.0));
        cx.send(next, GossipMsg::Request(id));
    }

    fn on_crash(&mut self) {
        // Requests in flight are forgotten; held items are kept (persisted).
        for p in self.pending.drain(..) {
            if let Some(s) = self.state.get_mut(p.id as usize) {
                *s = UNKNOWN;
            }
        }
    }
}
