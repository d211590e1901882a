//! Serving a running node to the outside: calls into the node loop.
//!
//! A node's protocol state and its [`Context`] belong to the runtime's
//! loop ([`crate::runtime`]); services such as the JSON-RPC server
//! ([`crate::rpc`]) run as tasks beside it on the same thread and never
//! touch the node directly. They hand the loop a [`NodeCall`] through a
//! [`Caller`]: the loop runs it between two protocol events with the node,
//! its context and a [`NetView`] (the connections as the runtime sees
//! them), and the answer comes back over a one-shot channel.

use std::net::SocketAddr;

use fika_btc::msg::BtcMsg;
use fika_btc::node::BtcNode;
use fika_core::{Context, NodeId, SimTime};
use tokio::sync::{mpsc, oneshot};

use crate::runtime::RunStats;

/// One call on a Bitcoin node, with a context.
pub type BtcCall<'a> = Box<dyn FnOnce(&mut BtcNode, &mut dyn Context<BtcMsg>) + 'a>;

/// A node type that holds a Bitcoin-like node services may call into: the
/// node itself, or a wrapper such as [`crate::durable::DurableNode`], which
/// runs the call as one durable step (what it changes is committed before
/// its messages leave and before the answer is given).
pub trait BtcHost: fika_core::Node<Msg = BtcMsg> + 'static {
    /// Runs `f` with the Bitcoin node and a context (may not run it if the
    /// node has stopped taking input).
    fn with_btc(&mut self, cx: &mut dyn Context<BtcMsg>, f: BtcCall<'_>);
}

impl BtcHost for BtcNode {
    fn with_btc(&mut self, cx: &mut dyn Context<BtcMsg>, f: BtcCall<'_>) {
        f(self, cx);
    }
}

/// Work for the node loop: runs with the node, its context (for messages
/// `M`) and the network view, on the loop's thread.
pub type NodeCall<N, M = BtcMsg> = Box<dyn FnOnce(&mut N, &mut dyn Context<M>, &NetView)>;

/// Calls queued for the loop before callers wait.
pub const CALL_QUEUE: usize = 64;

/// One connected peer, as the runtime sees it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerView {
    /// The peer's node id.
    pub id: NodeId,
    /// Its name (from its handshake).
    pub name: String,
    /// The remote address of the connection.
    pub addr: SocketAddr,
    /// Whether the peer dialed this node.
    pub inbound: bool,
    /// The protocol version agreed in the handshake.
    pub version: u16,
    /// When the connection was established, Unix seconds.
    pub since_unix: u64,
    /// Bytes written to this connection.
    pub bytes_sent: u64,
    /// Bytes read from this connection.
    pub bytes_received: u64,
}

/// The runtime's side of a node at the moment of a call.
#[derive(Clone, Debug, PartialEq)]
pub struct NetView {
    /// The node's id.
    pub id: NodeId,
    /// Its name.
    pub name: String,
    /// Whether the node has started ([`fika_core::Node::on_start`] ran).
    pub started: bool,
    /// Node time now.
    pub now: SimTime,
    /// Node seconds per wall-clock second.
    pub speed: f64,
    /// The peers the node is configured with.
    pub configured_peers: usize,
    /// The connected peers, by id.
    pub peers: Vec<PeerView>,
    /// The runtime's counters so far.
    pub stats: RunStats,
    /// When the runtime started, Unix seconds.
    pub runtime_started_unix: u64,
}

/// Why a call did not come back.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum CallError {
    /// The node loop has ended (the node is stopping).
    #[error("the node is shutting down")]
    Stopped,
}

/// Hands work to the node loop (cheap to clone; one per service task) of a
/// node `N` speaking messages `M`.
pub struct Caller<N, M = BtcMsg> {
    tx: mpsc::Sender<NodeCall<N, M>>,
}

impl<N, M> Clone for Caller<N, M> {
    fn clone(&self) -> Self {
        Caller { tx: self.tx.clone() }
    }
}

impl<N: 'static, M: 'static> Caller<N, M> {
    /// A caller and the receiving end the loop polls.
    pub fn channel() -> (Self, mpsc::Receiver<NodeCall<N, M>>) {
        let (tx, rx) = mpsc::channel(CALL_QUEUE);
        (Caller { tx }, rx)
    }

    /// Runs `f` on the node loop and returns its result.
    pub async fn call<R: 'static>(
        &self,
        f: impl FnOnce(&mut N, &mut dyn Context<M>, &NetView) -> R + 'static,
    ) -> Result<R, CallError> {
        let (tx, rx) = oneshot::channel();
        let call: NodeCall<N, M> = Box::new(move |node, cx, net| {
            let _ = tx.send(f(node, cx, net));
        });
        self.tx.send(call).await.map_err(|_| CallError::Stopped)?;
        rx.await.map_err(|_| CallError::Stopped)
    }
}
