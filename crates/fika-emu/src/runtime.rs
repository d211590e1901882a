//! Driving one sans-IO node in real time over TCP.
//!
//! [`run_node`] runs a current-thread tokio runtime around one [`Node`]
//! whose message type has a wire codec ([`WireMessage`]: Bitcoin's
//! [`BtcMsg`](fika_btc::msg::BtcMsg), the sidechain's, the PowPeg's): it listens on the node's address, dials its
//! peers of lower id (each pair of peers has exactly one dialer, so no
//! duplicate connections), retrying with backoff until they answer, and
//! identifies every connection by the [`Hello`] handshake. The node sees
//! the emulator's [`Context`]:
//!
//! * `now()` is the time since the node started, scaled by
//!   [`RuntimeConfig::speed`] (at speed 10, ten seconds of node time pass in
//!   one second of wall time), as a [`SimTime`]; it never goes backwards and
//!   a timer fires no earlier than its deadline in node time;
//! * timers live in a local min-heap; cancelling marks the slot dead;
//! * `rng()` is [`derive_rng`]`(seed, "node", id)`, the simulator's stream;
//! * `send(to, msg)` queues the message to the connection's writer task
//!   (a bounded channel); a message to a peer whose connection is down, or
//!   whose queue is full, is dropped and counted ([`RunStats`]);
//! * `emit(event)` appends a JSON line (time, node, kind, fields) to the
//!   node's events file, flushed periodically and at shutdown.
//!
//! The node starts ([`Node::on_start`]) by a [`StartRule`]: once every peer
//! is connected, at a wall-clock instant shared by all processes (so their
//! clocks agree and their events merge), or on a [`Control::Start`]. It
//! stops at [`RuntimeConfig::duration`] of node time, on [`Control::Stop`],
//! or on SIGTERM / SIGINT.
//!
//! Services beside the node (the JSON-RPC server) start through
//! [`run_node_with`]: they get a [`Caller`] and hand the loop
//! [`NodeCall`](crate::service::NodeCall)s, which run between two protocol
//! events with the node, its context and a [`NetView`] of the connections.
//!
//! The runtime itself emits `emu.*` events: `emu.peer.up`, `emu.peer.down`,
//! `emu.peer.refused`, `emu.start` and `emu.stop` (with the counters).

use std::cell::Cell;
use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, VecDeque};
use std::io::Write as _;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use std::time::{Duration, SystemTime};

use fika_core::{Context, Event, Node, NodeId, NodeRng, SimTime, TimerId, TimerKey, derive_rng};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::time::Instant;

use crate::EmuError;
use crate::error::io_at;
use crate::service::{Caller, NetView, PeerView};
use crate::wire::{self, Body, Frame, Hello, WireError, WireMessage};

/// When the node starts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StartRule {
    /// As soon as every peer is connected, or when
    /// [`RuntimeConfig::connect_timeout`] has passed.
    WhenConnected,
    /// At this wall-clock instant (time zero of the node's clock); several
    /// processes given one instant share one clock.
    At(SystemTime),
    /// When a [`Control::Start`] arrives.
    OnCommand,
}

/// Commands to a running node.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Start at this wall-clock instant (ignored once started).
    Start(SystemTime),
    /// Stop now.
    Stop,
}

/// Milestones reported to [`Hooks::status`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Status {
    /// Listening on this address (the actual one if the port was 0).
    Listening(SocketAddr),
    /// Every peer connected, this long after the runtime started.
    Connected {
        /// Time since the runtime started.
        after: Duration,
    },
    /// [`Node::on_start`] has run.
    Started,
    /// The node is stopping.
    Stopping,
}

/// A callback told each [`Status`] milestone.
pub type StatusFn = Box<dyn FnMut(&Status)>;

/// How a caller watches and steers a running node.
#[derive(Default)]
pub struct Hooks {
    /// Commands (start, stop).
    pub control: Option<mpsc::UnboundedReceiver<Control>>,
    /// Called at each milestone.
    pub status: Option<StatusFn>,
}

/// Everything [`run_node`] needs besides the node.
#[derive(Clone, Debug)]
pub struct RuntimeConfig {
    /// The node's id.
    pub id: NodeId,
    /// The node's name (sent in the handshake).
    pub name: String,
    /// The run seed (the node's random stream derives from it and `id`).
    pub seed: u64,
    /// The address to listen on.
    pub listen: SocketAddr,
    /// The node's peers and their addresses.
    pub peers: Vec<(NodeId, SocketAddr)>,
    /// Node seconds per wall-clock second (> 0).
    pub speed: f64,
    /// Stop after this much node time (none: run until told to stop).
    pub duration: Option<Duration>,
    /// When to start.
    pub start: StartRule,
    /// With [`StartRule::WhenConnected`]: start anyway after this long.
    pub connect_timeout: Duration,
    /// The events file (JSON lines); none: events are counted, not written.
    pub events: Option<PathBuf>,
    /// Largest frame payload sent or accepted.
    pub max_payload: u32,
    /// Messages queued per connection before further ones are dropped.
    pub send_queue: usize,
    /// How often the events file is flushed.
    pub flush_interval: Duration,
    /// Stop on SIGTERM / SIGINT.
    pub handle_signals: bool,
}

impl RuntimeConfig {
    /// A configuration with defaults: no peers, speed 1, no duration, start
    /// when connected (10 s timeout), no events file, 8 MiB frames, 4096
    /// queued messages per peer, flush every 250 ms, no signal handling.
    pub fn new(id: NodeId, name: impl Into<String>, seed: u64, listen: SocketAddr) -> Self {
        RuntimeConfig {
            id,
            name: name.into(),
            seed,
            listen,
            peers: Vec::new(),
            speed: 1.0,
            duration: None,
            start: StartRule::WhenConnected,
            connect_timeout: Duration::from_secs(10),
            events: None,
            max_payload: wire::DEFAULT_MAX_PAYLOAD,
            send_queue: 4096,
            flush_interval: Duration::from_millis(250),
            handle_signals: false,
        }
    }

    /// Checks the values a runtime cannot work with.
    pub fn validate(&self) -> Result<(), EmuError> {
        if !(self.speed.is_finite() && self.speed > 0.0 && self.speed <= 1e6) {
            return Err(EmuError::BadValue {
                field: "speed",
                value: self.speed.to_string(),
                expected: "a number of node seconds per wall-clock second in (0, 1e6]",
            });
        }
        if self.send_queue == 0 {
            return Err(EmuError::BadValue {
                field: "send_queue",
                value: "0".into(),
                expected: "at least one message",
            });
        }
        if (self.max_payload as usize) < 1024 {
            return Err(EmuError::BadValue {
                field: "max_frame_bytes",
                value: self.max_payload.to_string(),
                expected: "at least 1024 bytes",
            });
        }
        if self.flush_interval.is_zero() {
            return Err(EmuError::BadValue {
                field: "flush_interval",
                value: "0".into(),
                expected: "a positive duration",
            });
        }
        if self.name.len() > wire::MAX_NAME_BYTES {
            return Err(EmuError::BadValue {
                field: "name",
                value: self.name.clone(),
                expected: "a node name of at most 256 bytes",
            });
        }
        if let Some((p, _)) = self.peers.iter().find(|(p, _)| *p == self.id) {
            return Err(EmuError::BadValue {
                field: "peers",
                value: p.to_string(),
                expected: "peers other than the node itself",
            });
        }
        Ok(())
    }
}

/// Counters of one node's run.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct RunStats {
    /// Whether the node started.
    pub started: bool,
    /// Node time when it stopped, nanoseconds.
    pub end_ns: u64,
    /// Wall time from the runtime's start to all peers connected, ms.
    pub connected_after_ms: Option<f64>,
    /// Messages handed to a connection.
    pub messages_sent: u64,
    /// Messages delivered to the node.
    pub messages_received: u64,
    /// Bytes written to sockets (frames).
    pub bytes_sent: u64,
    /// Bytes read from sockets.
    pub bytes_received: u64,
    /// Dropped: no connection to the peer.
    pub dropped_down: u64,
    /// Dropped: the peer's send queue was full.
    pub dropped_full: u64,
    /// Dropped: the receiver is not a peer.
    pub dropped_unlinked: u64,
    /// Dropped: the message could not be encoded (too large).
    pub dropped_unencodable: u64,
    /// Timers fired.
    pub timers_fired: u64,
    /// Events emitted (by the node and the runtime).
    pub events: u64,
    /// Connections established.
    pub connections: u64,
    /// Connections lost.
    pub disconnections: u64,
    /// Connections refused in the handshake.
    pub refused: u64,
}

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConnError {
    /// The socket failed.
    #[error("socket error: {0}")]
    Io(#[from] std::io::Error),
    /// The peer sent bytes that are not a frame.
    #[error("bad frame: {0}")]
    Wire(#[from] WireError),
    /// The peer closed the connection in the middle of a frame.
    #[error("closed in the middle of a frame ({have} bytes buffered)")]
    ClosedMidFrame {
        /// Bytes of the partial frame.
        have: usize,
    },
}

/// Why a handshake failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// Reading or writing failed.
    #[error(transparent)]
    Conn(#[from] ConnError),
    /// The hellos do not agree (protocol or versions).
    #[error(transparent)]
    Wire(#[from] WireError),
    /// The peer closed the connection before its hello.
    #[error("closed before the hello")]
    Closed,
    /// The first frame was not a hello.
    #[error("expected a hello, got a {msg_type} frame")]
    NotHello {
        /// Its message type's name.
        msg_type: &'static str,
    },
    /// The peer dialed is someone else.
    #[error("dialed node {expected} but {got} ({name}) answered")]
    WrongPeer {
        /// The peer dialed.
        expected: NodeId,
        /// The peer that answered.
        got: NodeId,
        /// Its name.
        name: String,
    },
    /// The peer is not one of this node's peers.
    #[error("node {id} ({name}) is not a peer of this node")]
    UnknownPeer {
        /// Its id.
        id: NodeId,
        /// Its name.
        name: String,
    },
    /// No hello within the time limit.
    #[error("no hello within {0:?}")]
    Timeout(Duration),
}

impl From<std::io::Error> for HandshakeError {
    fn from(e: std::io::Error) -> Self {
        HandshakeError::Conn(ConnError::Io(e))
    }
}

const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const BACKOFF_MIN: Duration = Duration::from_millis(25);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// Frames batched into one socket write.
const WRITE_BATCH: usize = 256 * 1024;
/// Room made in a connection's read buffer before each socket read. The
/// socket reads straight into the buffer's spare room, so only the pages
/// bytes actually arrive in become resident.
const READ_CHUNK: usize = 16 * 1024;

// ----- timers ---------------------------------------------------------------

#[derive(Clone, Copy)]
struct Slot {
    generation: u32,
    timer: Option<TimerId>,
}

/// A min-heap of deadlines with cancellation by key (dead entries are
/// skipped when they reach the top).
#[derive(Default)]
struct Timers {
    heap: BinaryHeap<Reverse<(u64, u64, u32, u32)>>,
    slots: Vec<Slot>,
    free: Vec<u32>,
    seq: u64,
}

impl Timers {
    fn set(&mut self, at: SimTime, timer: TimerId) -> TimerKey {
        let slot = match self.free.pop() {
            Some(s) => s,
            None => {
                self.slots.push(Slot { generation: 0, timer: None });
                (self.slots.len() - 1) as u32
            }
        };
        let s = &mut self.slots[slot as usize];
        s.timer = Some(timer);
        self.seq += 1;
        self.heap.push(Reverse((at.as_nanos(), self.seq, slot, s.generation)));
        TimerKey { slot, generation: s.generation }
    }

    fn release(&mut self, slot: u32) -> Option<TimerId> {
        let s = &mut self.slots[slot as usize];
        let t = s.timer.take();
        s.generation = s.generation.wrapping_add(1);
        self.free.push(slot);
        t
    }

    fn cancel(&mut self, key: TimerKey) {
        match self.slots.get(key.slot as usize) {
            Some(s) if s.generation == key.generation && s.timer.is_some() => {
                self.release(key.slot);
            }
            _ => {}
        }
    }

    fn live(&self, slot: u32, generation: u32) -> bool {
        self.slots.get(slot as usize).is_some_and(|s| s.generation == generation && s.timer.is_some())
    }

    /// The earliest live deadline.
    fn next(&mut self) -> Option<SimTime> {
        while let Some(Reverse((at, _, slot, generation))) = self.heap.peek().copied() {
            if self.live(slot, generation) {
                return Some(SimTime(at));
            }
            self.heap.pop();
        }
        None
    }

    /// Takes the earliest live timer due at `now`.
    fn pop_due(&mut self, now: SimTime) -> Option<(SimTime, TimerId)> {
        let at = self.next()?;
        if at > now {
            return None;
        }
        let Reverse((_, _, slot, _)) = self.heap.pop()?;
        self.release(slot).map(|t| (at, t))
    }
}

// ----- clock and events -----------------------------------------------------

/// Node time: wall time since `origin`, times `speed`.
#[derive(Clone, Copy)]
struct Clock {
    origin: Instant,
    speed: f64,
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400 * 365)
}

impl Clock {
    fn now(&self) -> SimTime {
        let e = Instant::now().saturating_duration_since(self.origin);
        SimTime::from_nanos((e.as_nanos() as f64 * self.speed) as u64)
    }

    fn instant_at(&self, t: SimTime) -> Instant {
        Duration::try_from_secs_f64(t.as_secs_f64() / self.speed)
            .ok()
            .and_then(|d| self.origin.checked_add(d))
            .unwrap_or_else(far_future)
    }
}

/// The local instant of a wall-clock time.
fn instant_of(t: SystemTime) -> Instant {
    let (now_s, now_i) = (SystemTime::now(), Instant::now());
    match t.duration_since(now_s) {
        Ok(ahead) => now_i.checked_add(ahead).unwrap_or_else(far_future),
        Err(behind) => now_i.checked_sub(behind.duration()).unwrap_or(now_i),
    }
}

struct EventLog {
    file: Option<(PathBuf, std::fs::File)>,
    buf: String,
    error: Option<EmuError>,
}

impl EventLog {
    fn open(path: Option<&Path>) -> Result<Self, EmuError> {
        let file = match path {
            Some(p) => Some((p.to_path_buf(), std::fs::File::create(p).map_err(io_at(p))?)),
            None => None,
        };
        Ok(EventLog { file, buf: String::new(), error: None })
    }

    fn record(&mut self, at: SimTime, node: NodeId, event: &Event) {
        if self.file.is_some() {
            event.write_json_line(at, Some(node), &mut self.buf);
            if self.buf.len() >= 1 << 20 {
                self.flush();
            }
        }
    }

    fn flush(&mut self) {
        let Some((path, f)) = &mut self.file else { return };
        if !self.buf.is_empty() && self.error.is_none() {
            if let Err(e) = f.write_all(self.buf.as_bytes()).and_then(|()| f.flush()) {
                self.error = Some(EmuError::Io { path: path.clone(), source: e });
            }
        }
        self.buf.clear();
    }
}

// ----- connections ----------------------------------------------------------

/// Bytes moved over one connection.
#[derive(Default)]
struct ConnCounters {
    sent: Cell<u64>,
    received: Cell<u64>,
}

/// Who is at the other end of a connection.
struct PeerInfo {
    peer: NodeId,
    name: String,
    addr: SocketAddr,
    inbound: bool,
    version: u16,
}

enum NetEvent<M> {
    Up { info: PeerInfo, conn: u64, tx: mpsc::Sender<M>, counters: Rc<ConnCounters> },
    Msg { peer: NodeId, conn: u64, msg: M },
    Down { peer: NodeId, conn: u64, reason: String },
    Refused { addr: SocketAddr, reason: String },
}

/// What the connection tasks share.
struct NetShared<M> {
    me: NodeId,
    hello: Hello,
    peers: BTreeMap<NodeId, SocketAddr>,
    max_payload: u32,
    send_queue: usize,
    events: mpsc::Sender<NetEvent<M>>,
    next_conn: Cell<u64>,
    bytes_sent: Cell<u64>,
    bytes_received: Cell<u64>,
    unencodable: Cell<u64>,
}

impl<M> NetShared<M> {
    async fn refused(&self, addr: SocketAddr, e: HandshakeError) {
        let _ = self.events.send(NetEvent::Refused { addr, reason: e.to_string() }).await;
    }
}

/// Reads frames from a socket, keeping what follows a frame for the next.
struct FrameReader {
    r: OwnedReadHalf,
    buf: Vec<u8>,
    start: usize,
    max_payload: u32,
    /// Bytes read so far.
    total: u64,
}

impl FrameReader {
    fn new(r: OwnedReadHalf, max_payload: u32) -> Self {
        FrameReader { r, buf: Vec::new(), start: 0, max_payload, total: 0 }
    }

    /// The next frame; `None` when the peer closed between frames.
    async fn next<M: WireMessage>(&mut self, received: &Cell<u64>) -> Result<Option<Frame<M>>, ConnError> {
        loop {
            match wire::decode_frame_as::<M>(&self.buf[self.start..], self.max_payload) {
                Ok((frame, used)) => {
                    self.start += used;
                    return Ok(Some(frame));
                }
                Err(e) if e.is_incomplete() => {}
                Err(e) => return Err(e.into()),
            }
            if self.start > 0 {
                self.buf.drain(..self.start);
                self.start = 0;
            }
            if self.buf.capacity() - self.buf.len() < READ_CHUNK / 8 {
                self.buf.reserve(READ_CHUNK);
            }
            let n = self.r.read_buf(&mut self.buf).await?;
            if n == 0 {
                return match self.buf.len() {
                    0 => Ok(None),
                    have => Err(ConnError::ClosedMidFrame { have }),
                };
            }
            received.set(received.get() + n as u64);
            self.total += n as u64;
        }
    }
}

/// Exchanges hellos: the dialer (`expect` = the peer dialed) speaks first.
async fn handshake<M: WireMessage>(
    shared: &NetShared<M>,
    stream: TcpStream,
    expect: Option<NodeId>,
) -> Result<(FrameReader, OwnedWriteHalf, Hello, u16), HandshakeError> {
    let _ = stream.set_nodelay(true);
    let (r, mut w) = stream.into_split();
    let mut reader = FrameReader::new(r, shared.max_payload);
    let ours = wire::encode_frame(&Frame::<M>::hello_of(shared.hello.clone()))?;
    if expect.is_some() {
        w.write_all(&ours).await?;
    }
    let theirs = match reader.next::<M>(&shared.bytes_received).await? {
        Some(Frame { body: Body::Hello(h), .. }) => h,
        Some(f) => return Err(HandshakeError::NotHello { msg_type: f.type_name() }),
        None => return Err(HandshakeError::Closed),
    };
    if expect.is_none() {
        // Answer even a hello we refuse, so the dialer sees our versions.
        w.write_all(&ours).await?;
    }
    let version = wire::negotiate(&shared.hello, &theirs)?;
    if let Some(expected) = expect.filter(|e| *e != theirs.node_id) {
        return Err(HandshakeError::WrongPeer { expected, got: theirs.node_id, name: theirs.name });
    }
    if theirs.node_id == shared.me || !shared.peers.contains_key(&theirs.node_id) {
        return Err(HandshakeError::UnknownPeer { id: theirs.node_id, name: theirs.name });
    }
    Ok((reader, w, theirs, version))
}

async fn write_loop<M: WireMessage>(
    mut w: OwnedWriteHalf,
    mut rx: mpsc::Receiver<M>,
    shared: Rc<NetShared<M>>,
    version: u16,
    counters: Rc<ConnCounters>,
) {
    // Grows to the largest batch written (and keeps that room).
    let mut buf = Vec::new();
    while let Some(first) = rx.recv().await {
        buf.clear();
        let mut next = Some(first);
        while let Some(msg) = next.take() {
            if wire::encode_frame_into(&Frame::message(shared.me, version, msg), &mut buf, shared.max_payload)
                .is_err()
            {
                shared.unencodable.set(shared.unencodable.get() + 1);
            }
            if buf.len() < WRITE_BATCH {
                next = rx.try_recv().ok();
            }
        }
        if w.write_all(&buf).await.is_err() {
            return;
        }
        shared.bytes_sent.set(shared.bytes_sent.get() + buf.len() as u64);
        counters.sent.set(counters.sent.get() + buf.len() as u64);
    }
    let _ = w.shutdown().await;
}

/// Runs an established connection until it ends.
async fn run_conn<M: WireMessage>(
    shared: Rc<NetShared<M>>,
    mut reader: FrameReader,
    w: OwnedWriteHalf,
    info: PeerInfo,
) {
    let (peer, version) = (info.peer, info.version);
    let conn = shared.next_conn.get();
    shared.next_conn.set(conn + 1);
    let (tx, rx) = mpsc::channel(shared.send_queue);
    let counters = Rc::new(ConnCounters::default());
    counters.received.set(reader.total);
    let writer =
        tokio::task::spawn_local(write_loop(w, rx, Rc::clone(&shared), version, Rc::clone(&counters)));
    let up = NetEvent::Up { info, conn, tx, counters: Rc::clone(&counters) };
    if shared.events.send(up).await.is_err() {
        writer.abort();
        return;
    }
    let reason = loop {
        let next = reader.next::<M>(&shared.bytes_received).await;
        counters.received.set(reader.total);
        match next {
            Ok(Some(f)) if f.sender != peer => {
                break format!("frame claims sender {} on the connection of {peer}", f.sender);
            }
            Ok(Some(f)) if f.version != version => {
                break format!("frame of version {} after agreeing on {version}", f.version);
            }
            Ok(Some(Frame { body: Body::Msg(msg), .. })) => {
                if shared.events.send(NetEvent::Msg { peer, conn, msg }).await.is_err() {
                    writer.abort();
                    return;
                }
            }
            Ok(Some(Frame { body: Body::Hello(_), .. })) => break "a second hello".to_owned(),
            Ok(None) => break "closed by the peer".to_owned(),
            Err(e) => break e.to_string(),
        }
    };
    writer.abort();
    let _ = shared.events.send(NetEvent::Down { peer, conn, reason }).await;
}

async fn dial_loop<M: WireMessage>(shared: Rc<NetShared<M>>, peer: NodeId, addr: SocketAddr) {
    let mut backoff = BACKOFF_MIN;
    loop {
        if let Ok(stream) = TcpStream::connect(addr).await {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&shared, stream, Some(peer))).await {
                Ok(Ok((reader, w, hello, version))) => {
                    backoff = BACKOFF_MIN;
                    let info = PeerInfo { peer, name: hello.name, addr, inbound: false, version };
                    run_conn(Rc::clone(&shared), reader, w, info).await;
                }
                Ok(Err(e)) => shared.refused(addr, e).await,
                Err(_) => shared.refused(addr, HandshakeError::Timeout(HANDSHAKE_TIMEOUT)).await,
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

async fn accept_loop<M: WireMessage>(listener: TcpListener, shared: Rc<NetShared<M>>) {
    loop {
        match listener.accept().await {
            Ok((stream, addr)) => {
                let shared = Rc::clone(&shared);
                tokio::task::spawn_local(async move {
                    match tokio::time::timeout(HANDSHAKE_TIMEOUT, handshake(&shared, stream, None)).await {
                        Ok(Ok((reader, w, hello, version))) => {
                            let info = PeerInfo {
                                peer: hello.node_id,
                                name: hello.name,
                                addr,
                                inbound: true,
                                version,
                            };
                            run_conn(Rc::clone(&shared), reader, w, info).await;
                        }
                        Ok(Err(e)) => shared.refused(addr, e).await,
                        Err(_) => shared.refused(addr, HandshakeError::Timeout(HANDSHAKE_TIMEOUT)).await,
                    }
                });
            }
            // Out of descriptors or similar: try again shortly.
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

async fn signals(tx: mpsc::UnboundedSender<Control>) {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt()))
        else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
    }
    #[cfg(not(unix))]
    {
        if tokio::signal::ctrl_c().await.is_err() {
            return;
        }
    }
    let _ = tx.send(Control::Stop);
}

// ----- the node's context ---------------------------------------------------

struct Conn<M> {
    id: u64,
    tx: mpsc::Sender<M>,
    info: PeerInfo,
    since_unix: u64,
    counters: Rc<ConnCounters>,
}

/// The node loop's state, apart from the node.
struct State<M> {
    id: NodeId,
    peers: Vec<NodeId>,
    conns: BTreeMap<NodeId, Conn<M>>,
    timers: Timers,
    rng: NodeRng,
    log: EventLog,
    stats: RunStats,
    clock: Option<Clock>,
    last_now: SimTime,
}

struct Cx<'a, M> {
    now: SimTime,
    st: &'a mut State<M>,
}

impl<M> State<M> {
    /// The node's time now (zero before it starts), never decreasing.
    fn now(&mut self) -> SimTime {
        if let Some(c) = self.clock {
            self.last_now = self.last_now.max(c.now());
        }
        self.last_now
    }

    fn cx(&mut self) -> Cx<'_, M> {
        let now = self.now();
        Cx { now, st: self }
    }

    fn emit(&mut self, event: Event) {
        let now = self.now();
        self.stats.events += 1;
        self.log.record(now, self.id, &event);
    }
}

impl<M> Context<M> for Cx<'_, M> {
    fn id(&self) -> NodeId {
        self.st.id
    }
    fn now(&self) -> SimTime {
        self.now
    }
    fn rng(&mut self) -> &mut NodeRng {
        &mut self.st.rng
    }
    fn peer_count(&self) -> usize {
        self.st.peers.len()
    }
    fn peer(&self, i: usize) -> NodeId {
        self.st.peers[i]
    }
    fn send(&mut self, to: NodeId, msg: M) {
        let st = &mut *self.st;
        if st.peers.binary_search(&to).is_err() {
            st.stats.dropped_unlinked += 1;
            return;
        }
        let Some(c) = st.conns.get(&to) else {
            st.stats.dropped_down += 1;
            return;
        };
        match c.tx.try_send(msg) {
            Ok(()) => st.stats.messages_sent += 1,
            Err(mpsc::error::TrySendError::Full(_)) => st.stats.dropped_full += 1,
            Err(mpsc::error::TrySendError::Closed(_)) => {
                st.stats.dropped_down += 1;
                st.conns.remove(&to);
            }
        }
    }
    fn set_timer(&mut self, after: Duration, timer: TimerId) -> TimerKey {
        self.st.timers.set(self.now + after, timer)
    }
    fn cancel_timer(&mut self, key: TimerKey) {
        self.st.timers.cancel(key);
    }
    fn emit(&mut self, event: Event) {
        self.st.stats.events += 1;
        self.st.log.record(self.now, self.st.id, &event);
    }
}

fn deliver<N: Node>(node: &mut N, st: &mut State<N::Msg>, from: NodeId, msg: N::Msg) {
    st.stats.messages_received += 1;
    let mut cx = st.cx();
    node.on_message(&mut cx, from, msg);
}

fn on_net<N: Node>(
    node: &mut N,
    st: &mut State<N::Msg>,
    pending: &mut VecDeque<(NodeId, N::Msg)>,
    ev: NetEvent<N::Msg>,
) {
    match ev {
        NetEvent::Up { info, conn, tx, counters } => {
            let (peer, version) = (info.peer, info.version);
            st.stats.connections += 1;
            let since_unix = unix_secs(SystemTime::now());
            st.conns.insert(peer, Conn { id: conn, tx, info, since_unix, counters });
            st.emit(Event::new("emu.peer.up").with("peer", peer.0).with("version", u32::from(version)));
        }
        NetEvent::Msg { peer, conn, msg } => {
            if st.conns.get(&peer).is_none_or(|c| c.id != conn) {
                return; // from a connection already replaced
            }
            if st.clock.is_some() {
                deliver(node, st, peer, msg);
            } else {
                pending.push_back((peer, msg));
            }
        }
        NetEvent::Down { peer, conn, reason } => {
            if st.conns.get(&peer).is_some_and(|c| c.id == conn) {
                st.conns.remove(&peer);
            }
            st.stats.disconnections += 1;
            st.emit(Event::new("emu.peer.down").with("peer", peer.0).with("reason", reason));
        }
        NetEvent::Refused { addr, reason } => {
            st.stats.refused += 1;
            st.emit(Event::new("emu.peer.refused").with("addr", addr.to_string()).with("reason", reason));
        }
    }
}

/// Runs `node` as configured until its duration ends or it is told to
/// stop; returns its counters. Blocks the calling thread (a current-thread
/// tokio runtime runs inside); run several nodes on several threads.
pub fn run_node<N: Node + 'static>(
    node: &mut N,
    cfg: &RuntimeConfig,
    hooks: Hooks,
) -> Result<RunStats, EmuError>
where
    N::Msg: WireMessage,
{
    run_node_with(node, cfg, hooks, |_: Caller<N, N::Msg>| Ok(()))
}

/// [`run_node`] with services beside the node: `services` is called once
/// inside the runtime (so it may `spawn_local` tasks) with a [`Caller`]
/// into the node loop, before the node starts; its error ends the run.
pub fn run_node_with<N: Node + 'static>(
    node: &mut N,
    cfg: &RuntimeConfig,
    hooks: Hooks,
    services: impl FnOnce(Caller<N, N::Msg>) -> Result<(), EmuError>,
) -> Result<RunStats, EmuError>
where
    N::Msg: WireMessage,
{
    cfg.validate()?;
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(EmuError::Runtime)?;
    let local = tokio::task::LocalSet::new();
    let result = local.block_on(&rt, drive(node, cfg, hooks, services));
    // Dropping the set cancels the connection tasks and closes their sockets.
    drop(local);
    result
}

async fn drive<N: Node + 'static>(
    node: &mut N,
    cfg: &RuntimeConfig,
    hooks: Hooks,
    services: impl FnOnce(Caller<N, N::Msg>) -> Result<(), EmuError>,
) -> Result<RunStats, EmuError>
where
    N::Msg: WireMessage,
{
    let t0 = Instant::now();
    let Hooks { control, status } = hooks;
    let mut status = status;
    let mut say = move |s: Status| {
        if let Some(f) = status.as_mut() {
            f(&s);
        }
    };
    let listener =
        TcpListener::bind(cfg.listen).await.map_err(|source| EmuError::Bind { addr: cfg.listen, source })?;
    let local_addr = listener.local_addr().unwrap_or(cfg.listen);
    let log = EventLog::open(cfg.events.as_deref())?;
    let (net_tx, mut net_rx) = mpsc::channel(1024);
    let shared = Rc::new(NetShared {
        me: cfg.id,
        hello: Hello::new(N::Msg::PROTOCOL, cfg.id, cfg.name.clone()),
        peers: cfg.peers.iter().copied().collect(),
        max_payload: cfg.max_payload,
        send_queue: cfg.send_queue,
        events: net_tx,
        next_conn: Cell::new(0),
        bytes_sent: Cell::new(0),
        bytes_received: Cell::new(0),
        unencodable: Cell::new(0),
    });
    tokio::task::spawn_local(accept_loop(listener, Rc::clone(&shared)));
    for (&peer, &addr) in &shared.peers {
        if peer < cfg.id {
            tokio::task::spawn_local(dial_loop(Rc::clone(&shared), peer, addr));
        }
    }
    let (ctl_tx, mut ctl_rx) = mpsc::unbounded_channel();
    if let Some(mut ext) = control {
        let tx = ctl_tx.clone();
        tokio::task::spawn_local(async move {
            while let Some(c) = ext.recv().await {
                if tx.send(c).is_err() {
                    break;
                }
            }
        });
    }
    if cfg.handle_signals {
        tokio::task::spawn_local(signals(ctl_tx.clone()));
    }
    let (caller, mut call_rx) = Caller::channel();
    services(caller)?;
    let mut calls_open = true;
    let runtime_started_unix = unix_secs(SystemTime::now());
    say(Status::Listening(local_addr));

    let mut st = State {
        id: cfg.id,
        peers: shared.peers.keys().copied().collect(),
        conns: BTreeMap::new(),
        timers: Timers::default(),
        rng: derive_rng(cfg.seed, "node", u64::from(cfg.id.0)),
        log,
        stats: RunStats::default(),
        clock: None,
        last_now: SimTime::ZERO,
    };
    let mut pending: VecDeque<(NodeId, N::Msg)> = VecDeque::new();
    let mut planned = match cfg.start {
        StartRule::At(t) => Some(instant_of(t)),
        _ => None,
    };
    let connect_deadline = t0 + cfg.connect_timeout;
    let mut flush = tokio::time::interval(cfg.flush_interval);
    flush.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut end: Option<Instant> = None;
    loop {
        let now_i = Instant::now();
        if st.stats.connected_after_ms.is_none() && st.peers.iter().all(|p| st.conns.contains_key(p)) {
            let after = now_i.saturating_duration_since(t0);
            st.stats.connected_after_ms = Some(after.as_secs_f64() * 1e3);
            say(Status::Connected { after });
        }
        if st.clock.is_none() {
            let go = match cfg.start {
                StartRule::WhenConnected => {
                    st.stats.connected_after_ms.is_some() || now_i >= connect_deadline
                }
                StartRule::At(_) | StartRule::OnCommand => planned.is_some_and(|t| now_i >= t),
            };
            if go {
                let clock = Clock { origin: planned.unwrap_or(now_i), speed: cfg.speed };
                st.clock = Some(clock);
                end = cfg.duration.map(|d| clock.instant_at(SimTime::ZERO + d));
                st.stats.started = true;
                let connected = st.conns.len();
                st.emit(Event::new("emu.start").with("peers", st.peers.len()).with("connected", connected));
                node.on_start(&mut st.cx());
                say(Status::Started);
                while let Some((from, msg)) = pending.pop_front() {
                    deliver(node, &mut st, from, msg);
                }
            }
        }
        if end.is_some_and(|e| Instant::now() >= e) {
            break;
        }
        if st.clock.is_some() {
            let now = st.now();
            let limit = cfg.duration.map_or(now, |d| now.min(SimTime::ZERO + d));
            while let Some((at, timer)) = st.timers.pop_due(limit) {
                st.stats.timers_fired += 1;
                st.last_now = st.last_now.max(at);
                node.on_timer(&mut st.cx(), timer);
            }
        }
        let wake = match st.clock {
            Some(clock) => {
                let t = st.timers.next().map(|t| clock.instant_at(t));
                match (t, end) {
                    (Some(a), Some(b)) => Some(a.min(b)),
                    (a, b) => a.or(b),
                }
            }
            None => match cfg.start {
                StartRule::WhenConnected => Some(connect_deadline),
                _ => planned,
            },
        };
        tokio::select! {
            _ = tokio::time::sleep_until(wake.unwrap_or_else(far_future)), if wake.is_some() => {}
            ev = net_rx.recv() => {
                if let Some(ev) = ev {
                    on_net(node, &mut st, &mut pending, ev);
                }
            }
            call = call_rx.recv(), if calls_open => match call {
                Some(f) => {
                    let view = net_view(&mut st, cfg, &shared, runtime_started_unix);
                    f(node, &mut st.cx(), &view);
                }
                None => calls_open = false,
            },
            c = ctl_rx.recv() => match c {
                Some(Control::Start(t)) if st.clock.is_none() => planned = Some(instant_of(t)),
                Some(Control::Stop) => break,
                _ => {}
            },
            _ = flush.tick() => st.log.flush(),
        }
    }
    say(Status::Stopping);
    let mut stats = std::mem::take(&mut st.stats);
    stats.end_ns = st.now().as_nanos();
    stats.bytes_sent = shared.bytes_sent.get();
    stats.bytes_received = shared.bytes_received.get();
    stats.dropped_unencodable = shared.unencodable.get();
    stats.events += 1;
    let stop = Event::new("emu.stop")
        .with("sent", stats.messages_sent)
        .with("received", stats.messages_received)
        .with("dropped_down", stats.dropped_down)
        .with("dropped_full", stats.dropped_full)
        .with("dropped_unencodable", stats.dropped_unencodable)
        .with("bytes_sent", stats.bytes_sent)
        .with("bytes_received", stats.bytes_received);
    let now = st.now();
    st.log.record(now, st.id, &stop);
    st.log.flush();
    match st.log.error.take() {
        Some(e) => Err(e),
        None => Ok(stats),
    }
}

fn unix_secs(t: SystemTime) -> u64 {
    t.duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// What a [`crate::service::NodeCall`] sees of the runtime.
fn net_view<M>(
    st: &mut State<M>,
    cfg: &RuntimeConfig,
    shared: &NetShared<M>,
    runtime_started_unix: u64,
) -> NetView {
    let mut stats = st.stats.clone();
    stats.end_ns = st.now().as_nanos();
    stats.bytes_sent = shared.bytes_sent.get();
    stats.bytes_received = shared.bytes_received.get();
    stats.dropped_unencodable = shared.unencodable.get();
    NetView {
        id: cfg.id,
        name: cfg.name.clone(),
        started: st.clock.is_some(),
        now: st.now(),
        speed: cfg.speed,
        configured_peers: st.peers.len(),
        peers: st
            .conns
            .values()
            .map(|c| PeerView {
                id: c.info.peer,
                name: c.info.name.clone(),
                addr: c.info.addr,
                inbound: c.info.inbound,
                version: c.info.version,
                since_unix: c.since_unix,
                bytes_sent: c.counters.sent.get(),
                bytes_received: c.counters.received.get(),
            })
            .collect(),
        stats,
        runtime_started_unix,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timers_fire_in_order_and_cancel_by_key() {
        let mut t = Timers::default();
        let a = t.set(SimTime::from_secs(3), 1);
        t.set(SimTime::from_secs(1), 2);
        let c = t.set(SimTime::from_secs(2), 3);
        t.set(SimTime::from_secs(2), 4);
        t.cancel(c);
        assert_eq!(t.next(), Some(SimTime::from_secs(1)));
        assert_eq!(t.pop_due(SimTime::from_secs(2)), Some((SimTime::from_secs(1), 2)));
        assert_eq!(t.pop_due(SimTime::from_secs(2)), Some((SimTime::from_secs(2), 4)));
        assert_eq!(t.pop_due(SimTime::from_secs(2)), None);
        // A reused slot does not honour a stale key.
        let keys: Vec<TimerKey> = (5..8).map(|k| t.set(SimTime::from_secs(k), k)).collect();
        assert!(keys.iter().any(|k| k.slot == c.slot), "the cancelled slot is reused");
        t.cancel(c);
        t.cancel(a);
        for k in 5..8 {
            assert_eq!(t.pop_due(SimTime::MAX), Some((SimTime::from_secs(k), k)));
        }
        assert_eq!(t.pop_due(SimTime::MAX), None);
    }

    #[test]
    fn bad_configurations_are_refused_with_the_value() {
        let addr: SocketAddr = ([127, 0, 0, 1], 0).into();
        let mut c = RuntimeConfig::new(NodeId(0), "a", 1, addr);
        c.speed = 0.0;
        let e = c.validate().map_err(|e| e.to_string());
        assert!(matches!(&e, Err(m) if m.contains("speed = 0")), "{e:?}");
        let mut c = RuntimeConfig::new(NodeId(0), "a", 1, addr);
        c.peers.push((NodeId(0), addr));
        assert!(c.validate().is_err());
    }
}
