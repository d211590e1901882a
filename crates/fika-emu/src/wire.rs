//! The emulator's wire format: length-prefixed, versioned frames carrying
//! Bitcoin's real P2P payload encodings, and the sidechain's (see [`side`]).
//!
//! # Frame
//!
//! | bytes | field |
//! |---|---|
//! | 4 | magic, `b"fika"` |
//! | 1 | protocol id ([`PROTOCOL_BITCOIN`] = 1, [`PROTOCOL_SIDECHAIN`] = 2) |
//! | 2 | wire version, little endian |
//! | 4 | sender node id, little endian |
//! | 1 | message type ([`msg_type`]) |
//! | 4 | payload length, little endian, at most the configured maximum ([`DEFAULT_MAX_PAYLOAD`] = 8 MiB) |
//! | n | payload |
//!
//! # Handshake
//!
//! The dialing side sends a [`Hello`] frame; the listening side answers with
//! its own. Both then use the highest version both support ([`negotiate`])
//! and refuse the connection with a [`WireError`] naming both ranges when
//! there is none. Every later frame carries the negotiated version.
//!
//! # Codecs
//!
//! What a connection carries is a node's message type, a [`WireMessage`]:
//! [`BtcMsg`] (protocol 1), the sidechain's [`SideMsg`](fika_peg::network::SideMsg)
//! (protocol 2) and the PowPeg's [`PegMsg`](fika_peg::network::PegMsg),
//! whose hello announces [`PROTOCOL_POWPEG`] = 3 and whose frames carry
//! protocol 1 or 2 by the part of the message they hold. The frame
//! functions that name no message type ([`decode_frame`],
//! [`decode_frame_limited`], [`fuzz_decode`]'s first pass) are Bitcoin's;
//! [`decode_frame_as`] decodes any.
//!
//! # Payloads (version 1)
//!
//! Bitcoin's own encodings wherever the message exists in Bitcoin Core:
//!
//! * `inv` / `getdata`: a compact-size count, then per entry a `u32` type
//!   ([`MSG_TX`], [`MSG_BLOCK`], [`MSG_CMPCT_BLOCK`]) and a 32-byte hash.
//! * `block`: the consensus-encoded block, then a `u32` filler count (the
//!   modelled bytes of a [`SimBlock`]; they are not sent).
//! * `tx`: the consensus-encoded transaction (with witness).
//! * `getheaders`: protocol version `u32`, the locator (count + hashes), a
//!   zero stop hash.
//! * `headers`: count, then per header its 80 bytes and a zero transaction count.
//! * `sendcmpct`: announce flag (must be 1: high-bandwidth) and compact block version (1 or 2).
//! * `cmpctblock`: BIP152 `HeaderAndShortIDs` — header, nonce, short ids,
//!   prefilled transactions — then the `u32` filler count. The sans-IO node
//!   hands its peer the whole block and lets it pick what it lacks, so the
//!   emulator prefills *every* transaction and sends no short ids (a valid
//!   BIP152 message; a decoder refuses short ids it could not resolve).
//! * `getblocktxn`: BIP152 `BlockTransactionsRequest` (hash, differentially
//!   encoded indexes).
//! * `blocktxn`: the block as in `block` (the node's message carries it),
//!   then BIP152 `BlockTransactions` (hash, transactions); the hashes must match.
//! * `filterload`: fika's simplification of BIP37 — the exact scripts, as a
//!   count and consensus-encoded scripts (a bloom filter could not be turned
//!   back into scripts).
//! * `merkleblock`: BIP37 `merkleblock` (header + partial merkle tree), the
//!   block's height as `u32`, then the matched transactions (count + transactions).
//!
//! Decoding never panics and never allocates more than a constant factor of
//! the bytes it was given: every count is checked against the bytes left
//! before anything is reserved.

use std::sync::Arc;

use bitcoin::bip152::{HeaderAndShortIds, PrefilledTransaction};
use bitcoin::block::Header;
use bitcoin::consensus::encode::VarInt;
use bitcoin::consensus::{Decodable, Encodable};
use bitcoin::hashes::Hash;
use bitcoin::merkle_tree::PartialMerkleTree;
use bitcoin::{Block, BlockHash, ScriptBuf, Transaction, Txid};
use fika_btc::blockdb::SimBlock;
use fika_btc::msg::{BtcMsg, FilteredBlock, Inv};
use fika_core::NodeId;

pub mod side;

/// The first four bytes of every frame.
pub const MAGIC: [u8; 4] = *b"fika";
/// Protocol id of the Bitcoin-like protocol.
pub const PROTOCOL_BITCOIN: u8 = 1;
/// Protocol id of the sidechain's protocol.
pub const PROTOCOL_SIDECHAIN: u8 = 2;
/// Protocol id a PowPeg node's hello announces (its frames carry 1 or 2).
pub const PROTOCOL_POWPEG: u8 = 3;
/// Oldest wire version this build speaks.
pub const VERSION_MIN: u16 = 1;
/// Newest wire version this build speaks.
pub const VERSION_MAX: u16 = 1;
/// Bytes of a frame header.
pub const HEADER_LEN: usize = 16;
/// Default largest payload accepted: 8 MiB.
pub const DEFAULT_MAX_PAYLOAD: u32 = 8 * 1024 * 1024;
/// Largest node name in a [`Hello`], bytes.
pub const MAX_NAME_BYTES: usize = 256;
/// Largest `inv` / `getdata` (Bitcoin Core's `MAX_INV_SZ`).
pub const MAX_INV: usize = 50_000;
/// Largest block locator (Bitcoin Core's `MAX_LOCATOR_SZ`).
pub const MAX_LOCATOR: usize = 101;
/// Largest `headers` message (Bitcoin Core's `MAX_HEADERS_RESULTS`).
pub const MAX_HEADERS: usize = 2_000;
/// Most scripts in a `filterload`.
pub const MAX_FILTER_SCRIPTS: usize = 10_000;
/// Largest script in a `filterload` (Bitcoin's `MAX_SCRIPT_SIZE`).
pub const MAX_SCRIPT_BYTES: usize = 10_000;
/// Most transactions in a block-shaped payload or transaction list.
pub const MAX_TXS: usize = 1_000_000;
/// The P2P protocol version written in `getheaders` (Bitcoin Core 0.21+).
pub const P2P_PROTOCOL_VERSION: u32 = 70_016;
/// Compact block version announced in `sendcmpct` (2: witness serialization).
pub const CMPCT_VERSION: u64 = 2;

/// Inventory type of a transaction.
pub const MSG_TX: u32 = 1;
/// Inventory type of a block.
pub const MSG_BLOCK: u32 = 2;
/// Inventory type of a compact block (only in `getdata`).
pub const MSG_CMPCT_BLOCK: u32 = 4;

/// Message type codes (the frame header's type byte).
pub mod msg_type {
    /// Handshake [`super::Hello`].
    pub const HELLO: u8 = 0;
    /// `inv`.
    pub const INV: u8 = 1;
    /// `getdata`.
    pub const GETDATA: u8 = 2;
    /// `block`.
    pub const BLOCK: u8 = 3;
    /// `tx`.
    pub const TX: u8 = 4;
    /// `getheaders`.
    pub const GETHEADERS: u8 = 5;
    /// `headers`.
    pub const HEADERS: u8 = 6;
    /// `sendcmpct`.
    pub const SENDCMPCT: u8 = 7;
    /// `cmpctblock`.
    pub const CMPCTBLOCK: u8 = 8;
    /// `getblocktxn`.
    pub const GETBLOCKTXN: u8 = 9;
    /// `blocktxn`.
    pub const BLOCKTXN: u8 = 10;
    /// `filterload`.
    pub const FILTERLOAD: u8 = 11;
    /// `merkleblock` followed by the matched transactions.
    pub const MERKLEBLOCK: u8 = 12;
    /// The largest assigned code.
    pub const LAST: u8 = MERKLEBLOCK;
}

/// Why bytes are not a frame (or a frame cannot be written, or two
/// handshakes do not agree).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Not an error of the bytes: more are needed to finish the frame.
    #[error("incomplete frame: have {have} bytes, need at least {need}")]
    Incomplete {
        /// Bytes available.
        have: usize,
        /// Bytes needed before decoding can go on (a lower bound).
        need: usize,
    },
    /// The frame does not start with [`MAGIC`].
    #[error("bad magic {found:02x?} (expected \"fika\")")]
    BadMagic {
        /// The bytes found (as many as were available, at most four).
        found: Vec<u8>,
    },
    /// A data frame of a protocol this build does not speak.
    #[error(
        "unknown protocol id {protocol} (this build speaks {PROTOCOL_BITCOIN} = bitcoin, {PROTOCOL_SIDECHAIN} = sidechain)"
    )]
    UnknownProtocol {
        /// The protocol id found.
        protocol: u8,
    },
    /// A data frame of a protocol this build speaks, but not on this connection.
    #[error("a frame of protocol {protocol} on a {connection} connection")]
    UnexpectedProtocol {
        /// The protocol id found.
        protocol: u8,
        /// The connection's protocol.
        connection: &'static str,
    },
    /// A data frame of a version this build does not speak.
    #[error("unsupported wire version {version} (this build speaks {min}..={max})")]
    UnsupportedVersion {
        /// The version found.
        version: u16,
        /// Oldest supported.
        min: u16,
        /// Newest supported.
        max: u16,
    },
    /// An unassigned message type code.
    #[error("unknown message type {msg_type}")]
    UnknownMessageType {
        /// The code found.
        msg_type: u8,
    },
    /// The payload length exceeds the limit.
    #[error("payload of {len} bytes exceeds the limit of {max} bytes")]
    PayloadTooLarge {
        /// The announced (or, when encoding, actual) length.
        len: u64,
        /// The limit.
        max: u32,
    },
    /// A payload field could not be decoded.
    #[error("{msg}: malformed {field} at payload offset {offset}: {reason}")]
    Malformed {
        /// The message type.
        msg: &'static str,
        /// The field.
        field: &'static str,
        /// Byte offset of the field in the payload.
        offset: usize,
        /// What was wrong.
        reason: String,
    },
    /// A count exceeds its limit or the bytes left in the payload.
    #[error("{msg}: {field} count {count} exceeds {limit}")]
    TooMany {
        /// The message type.
        msg: &'static str,
        /// The counted field.
        field: &'static str,
        /// The count found.
        count: u64,
        /// The limit it broke (the protocol's, or what the remaining bytes can hold).
        limit: u64,
    },
    /// An inventory entry of an unknown type.
    #[error("{msg}: unknown inventory type {code} (known: 1 tx, 2 block, 4 compact block)")]
    BadInvType {
        /// The message type.
        msg: &'static str,
        /// The type code found.
        code: u32,
    },
    /// Bytes left over after the payload's last field.
    #[error("{msg}: {extra} trailing bytes after the payload")]
    TrailingBytes {
        /// The message type.
        msg: &'static str,
        /// How many.
        extra: usize,
    },
    /// A message that cannot be encoded (it would break a limit the decoder checks).
    #[error("cannot encode {msg}: {reason}")]
    Unencodable {
        /// The message type.
        msg: &'static str,
        /// Why.
        reason: String,
    },
    /// The two sides speak different protocols.
    #[error("protocol mismatch: we speak {ours}, the peer speaks {theirs}")]
    ProtocolMismatch {
        /// Ours.
        ours: u8,
        /// Theirs.
        theirs: u8,
    },
    /// The two sides share no wire version.
    #[error("no common wire version: we speak {}..={}, the peer speaks {}..={}", ours[0], ours[1], theirs[0], theirs[1])]
    NoCommonVersion {
        /// Our `[min, max]`.
        ours: [u16; 2],
        /// Theirs.
        theirs: [u16; 2],
    },
}

impl WireError {
    /// Whether this only means "read more bytes".
    pub fn is_incomplete(&self) -> bool {
        matches!(self, WireError::Incomplete { .. })
    }
}

/// The handshake message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Hello {
    /// The sender's node id.
    pub node_id: NodeId,
    /// The sender's node name (at most [`MAX_NAME_BYTES`] bytes of UTF-8).
    pub name: String,
    /// The protocol it speaks.
    pub protocol: u8,
    /// The wire versions it speaks, `[min, max]`.
    pub versions: [u16; 2],
}

impl Hello {
    /// A hello for this build's Bitcoin protocol and versions.
    pub fn bitcoin(node_id: NodeId, name: impl Into<String>) -> Self {
        Hello::new(PROTOCOL_BITCOIN, node_id, name)
    }

    /// A hello for `protocol` (a [`WireMessage::PROTOCOL`]) and this build's versions.
    pub fn new(protocol: u8, node_id: NodeId, name: impl Into<String>) -> Self {
        Hello { node_id, name: name.into(), protocol, versions: [VERSION_MIN, VERSION_MAX] }
    }
}

/// A node's message type as the wire carries it: which protocol and type
/// code each message travels under, and its payload codec.
///
/// Decoding never panics and never allocates more than a constant factor
/// of the payload it is given; everything [`WireMessage::encode_payload`]
/// accepts decodes back to an equal message.
pub trait WireMessage: Clone + std::fmt::Debug + Sized + 'static {
    /// The protocol id the connection's hello announces.
    const PROTOCOL: u8;
    /// The protocol's name, for errors.
    const NAME: &'static str;
    /// The frame header's protocol id and message type code of this message.
    fn header(&self) -> (u8, u8);
    /// Whether a frame header of `protocol` and type `code` can carry this
    /// message type (checked before the payload arrives).
    fn accepts(protocol: u8, code: u8) -> Result<(), WireError>;
    /// The command name of type `code` of `protocol`.
    fn type_name(protocol: u8, code: u8) -> &'static str;
    /// Appends the payload; fails, without a partial promise, if the
    /// message breaks a limit its decoder checks.
    fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), WireError>;
    /// Decodes a whole payload of type `code` of `protocol`.
    fn decode_payload(protocol: u8, code: u8, payload: &[u8]) -> Result<Self, WireError>;
}

/// The refusal of a frame of `protocol` on a connection of `M`.
pub(crate) fn protocol_refused<M: WireMessage>(protocol: u8) -> WireError {
    match protocol {
        PROTOCOL_BITCOIN | PROTOCOL_SIDECHAIN => {
            WireError::UnexpectedProtocol { protocol, connection: M::NAME }
        }
        _ => WireError::UnknownProtocol { protocol },
    }
}

impl WireMessage for BtcMsg {
    const PROTOCOL: u8 = PROTOCOL_BITCOIN;
    const NAME: &'static str = "bitcoin";

    fn header(&self) -> (u8, u8) {
        (PROTOCOL_BITCOIN, btc_type(self))
    }

    fn accepts(protocol: u8, code: u8) -> Result<(), WireError> {
        if code > msg_type::LAST {
            return Err(WireError::UnknownMessageType { msg_type: code });
        }
        if protocol != PROTOCOL_BITCOIN {
            return Err(protocol_refused::<Self>(protocol));
        }
        Ok(())
    }

    fn type_name(_protocol: u8, code: u8) -> &'static str {
        type_name(code)
    }

    fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        encode_btc(self, out)
    }

    fn decode_payload(_protocol: u8, code: u8, payload: &[u8]) -> Result<Self, WireError> {
        let mut r = Reader { buf: payload, pos: 0, msg: type_name(code) };
        let m = decode_btc(code, &mut r)?;
        r.finish(m)
    }
}

/// The version two hellos agree on: the highest both speak.
pub fn negotiate(ours: &Hello, theirs: &Hello) -> Result<u16, WireError> {
    if ours.protocol != theirs.protocol {
        return Err(WireError::ProtocolMismatch { ours: ours.protocol, theirs: theirs.protocol });
    }
    let [a0, a1] = ours.versions;
    let [b0, b1] = theirs.versions;
    let (lo, hi) = (a0.max(b0), a1.min(b1));
    if a0 > a1 || b0 > b1 || lo > hi {
        return Err(WireError::NoCommonVersion { ours: ours.versions, theirs: theirs.versions });
    }
    Ok(hi)
}

/// What a frame carries.
#[derive(Clone, Debug)]
pub enum Body<M = BtcMsg> {
    /// The handshake.
    Hello(Hello),
    /// A protocol message (Bitcoin's unless another type is named).
    Msg(M),
}

/// One decoded frame.
#[derive(Clone, Debug)]
pub struct Frame<M = BtcMsg> {
    /// Protocol id from the header.
    pub protocol: u8,
    /// Wire version from the header.
    pub version: u16,
    /// The sending node.
    pub sender: NodeId,
    /// The message.
    pub body: Body<M>,
}

impl<M: WireMessage> Frame<M> {
    /// A hello frame (its header carries the hello's protocol, its newest
    /// version and its node id).
    pub fn hello_of(hello: Hello) -> Self {
        Frame {
            protocol: hello.protocol,
            version: hello.versions[1],
            sender: hello.node_id,
            body: Body::Hello(hello),
        }
    }

    /// A message frame from `sender` at wire `version` (its protocol id is
    /// the message's).
    pub fn message(sender: NodeId, version: u16, msg: M) -> Self {
        Frame { protocol: msg.header().0, version, sender, body: Body::Msg(msg) }
    }

    /// The message type code of the body.
    pub fn type_code(&self) -> u8 {
        match &self.body {
            Body::Hello(_) => msg_type::HELLO,
            Body::Msg(m) => m.header().1,
        }
    }

    /// The command name of the body.
    pub fn type_name(&self) -> &'static str {
        match &self.body {
            Body::Hello(_) => "hello",
            Body::Msg(m) => {
                let (p, c) = m.header();
                M::type_name(p, c)
            }
        }
    }
}

impl Frame {
    /// A hello frame (its header carries the hello's protocol, its newest
    /// version and its node id).
    pub fn hello(hello: Hello) -> Self {
        Frame {
            protocol: hello.protocol,
            version: hello.versions[1],
            sender: hello.node_id,
            body: Body::Hello(hello),
        }
    }

    /// A Bitcoin message frame from `sender` at wire `version`.
    pub fn btc(sender: NodeId, version: u16, msg: BtcMsg) -> Self {
        Frame { protocol: PROTOCOL_BITCOIN, version, sender, body: Body::Msg(msg) }
    }

    /// The message type code of the body.
    pub fn msg_type(&self) -> u8 {
        self.type_code()
    }
}

/// The message type code of a Bitcoin message.
pub fn btc_type(m: &BtcMsg) -> u8 {
    match m {
        BtcMsg::Inv(_) => msg_type::INV,
        BtcMsg::GetData(_) => msg_type::GETDATA,
        BtcMsg::Block(_) => msg_type::BLOCK,
        BtcMsg::Tx(_) => msg_type::TX,
        BtcMsg::GetHeaders(_) => msg_type::GETHEADERS,
        BtcMsg::Headers(_) => msg_type::HEADERS,
        BtcMsg::SendCmpct => msg_type::SENDCMPCT,
        BtcMsg::CmpctBlock(_) => msg_type::CMPCTBLOCK,
        BtcMsg::GetBlockTxn(_) => msg_type::GETBLOCKTXN,
        BtcMsg::BlockTxn(_) => msg_type::BLOCKTXN,
        BtcMsg::FilterLoad(_) => msg_type::FILTERLOAD,
        BtcMsg::FilteredBlock(_) => msg_type::MERKLEBLOCK,
    }
}

/// The P2P command name of a message type code.
pub fn type_name(code: u8) -> &'static str {
    match code {
        msg_type::HELLO => "hello",
        msg_type::INV => "inv",
        msg_type::GETDATA => "getdata",
        msg_type::BLOCK => "block",
        msg_type::TX => "tx",
        msg_type::GETHEADERS => "getheaders",
        msg_type::HEADERS => "headers",
        msg_type::SENDCMPCT => "sendcmpct",
        msg_type::CMPCTBLOCK => "cmpctblock",
        msg_type::GETBLOCKTXN => "getblocktxn",
        msg_type::BLOCKTXN => "blocktxn",
        msg_type::FILTERLOAD => "filterload",
        msg_type::MERKLEBLOCK => "merkleblock",
        _ => "unknown",
    }
}

// ----- encoding -------------------------------------------------------------

/// Appends a consensus encoding (writing to a `Vec` cannot fail).
fn put<T: Encodable + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _ = v.consensus_encode(out);
}

fn put_count(out: &mut Vec<u8>, n: usize) {
    put(out, &VarInt(n as u64));
}

fn check_limit(msg: &'static str, field: &'static str, n: usize, max: usize) -> Result<(), WireError> {
    if n > max {
        return Err(WireError::Unencodable { msg, reason: format!("{n} {field} exceed the limit of {max}") });
    }
    Ok(())
}

fn put_txs<'a>(
    out: &mut Vec<u8>,
    msg: &'static str,
    txs: impl ExactSizeIterator<Item = &'a Transaction>,
) -> Result<(), WireError> {
    check_limit(msg, "transactions", txs.len(), MAX_TXS)?;
    put_count(out, txs.len());
    for tx in txs {
        put(out, tx);
    }
    Ok(())
}

fn put_invs(out: &mut Vec<u8>, msg: &'static str, items: &[Inv]) -> Result<(), WireError> {
    check_limit(msg, "inventory entries", items.len(), MAX_INV)?;
    put_count(out, items.len());
    for inv in items {
        let (code, hash) = match inv {
            Inv::Tx(t) => (MSG_TX, t.to_byte_array()),
            Inv::Block(h) => (MSG_BLOCK, h.to_byte_array()),
            Inv::CmpctBlock(h) => (MSG_CMPCT_BLOCK, h.to_byte_array()),
        };
        out.extend_from_slice(&code.to_le_bytes());
        out.extend_from_slice(&hash);
    }
    Ok(())
}

fn put_sim_block(out: &mut Vec<u8>, msg: &'static str, b: &SimBlock) -> Result<(), WireError> {
    check_limit(msg, "transactions", b.block.txdata.len(), MAX_TXS)?;
    put(out, &b.block);
    out.extend_from_slice(&b.filler.to_le_bytes());
    Ok(())
}

fn encode_payload<M: WireMessage>(body: &Body<M>, out: &mut Vec<u8>) -> Result<(), WireError> {
    match body {
        Body::Hello(h) => {
            if h.name.len() > MAX_NAME_BYTES {
                return Err(WireError::Unencodable {
                    msg: "hello",
                    reason: format!("name of {} bytes exceeds {MAX_NAME_BYTES}", h.name.len()),
                });
            }
            out.extend_from_slice(&h.node_id.0.to_le_bytes());
            put_count(out, h.name.len());
            out.extend_from_slice(h.name.as_bytes());
            out.push(h.protocol);
            out.extend_from_slice(&h.versions[0].to_le_bytes());
            out.extend_from_slice(&h.versions[1].to_le_bytes());
            Ok(())
        }
        Body::Msg(m) => m.encode_payload(out),
    }
}

fn encode_btc(m: &BtcMsg, out: &mut Vec<u8>) -> Result<(), WireError> {
    let msg = type_name(btc_type(m));
    match m {
        BtcMsg::Inv(items) => put_invs(out, msg, items)?,
        BtcMsg::GetData(items) => put_invs(out, msg, items)?,
        BtcMsg::Block(b) => put_sim_block(out, msg, b)?,
        BtcMsg::Tx(tx) => put(out, tx.as_ref()),
        BtcMsg::GetHeaders(locator) => {
            check_limit(msg, "locator hashes", locator.len(), MAX_LOCATOR)?;
            out.extend_from_slice(&P2P_PROTOCOL_VERSION.to_le_bytes());
            put_count(out, locator.len());
            for h in locator {
                out.extend_from_slice(&h.to_byte_array());
            }
            out.extend_from_slice(&[0u8; 32]);
        }
        BtcMsg::Headers(headers) => {
            check_limit(msg, "headers", headers.len(), MAX_HEADERS)?;
            put_count(out, headers.len());
            for h in headers {
                put(out, h);
                out.push(0);
            }
        }
        BtcMsg::SendCmpct => {
            out.push(1);
            out.extend_from_slice(&CMPCT_VERSION.to_le_bytes());
        }
        BtcMsg::CmpctBlock(b) => {
            let txs = &b.block.txdata;
            check_limit(msg, "transactions", txs.len(), MAX_TXS)?;
            put(out, &b.block.header);
            out.extend_from_slice(&0u64.to_le_bytes()); // nonce: no short ids to salt
            put_count(out, 0); // short ids
            put_count(out, txs.len());
            for tx in txs {
                // Differential index: every transaction is prefilled, so each
                // follows the previous one (difference minus one = 0).
                put_count(out, 0);
                put(out, tx);
            }
            out.extend_from_slice(&b.filler.to_le_bytes());
        }
        BtcMsg::GetBlockTxn(req) => {
            let (hash, indexes) = req.as_ref();
            check_limit(msg, "indexes", indexes.len(), MAX_TXS)?;
            out.extend_from_slice(&hash.to_byte_array());
            put_count(out, indexes.len());
            let mut next = 0u64;
            for &i in indexes {
                let i = u64::from(i);
                if i < next {
                    return Err(WireError::Unencodable {
                        msg,
                        reason: format!("indexes must be strictly increasing ({indexes:?})"),
                    });
                }
                put(out, &VarInt(i - next));
                next = i + 1;
            }
        }
        BtcMsg::BlockTxn(b) => {
            let (block, txs) = b.as_ref();
            put_sim_block(out, msg, block)?;
            out.extend_from_slice(&block.hash.to_byte_array());
            put_txs(out, msg, txs.iter().map(|t| t.as_ref()))?;
        }
        BtcMsg::FilterLoad(scripts) => {
            check_limit(msg, "scripts", scripts.len(), MAX_FILTER_SCRIPTS)?;
            put_count(out, scripts.len());
            for s in scripts {
                check_limit(msg, "script bytes", s.len(), MAX_SCRIPT_BYTES)?;
                put(out, s);
            }
        }
        BtcMsg::FilteredBlock(f) => {
            put(out, &f.header);
            put(out, &f.proof);
            out.extend_from_slice(&f.height.to_le_bytes());
            put_txs(out, msg, f.txs.iter().map(|t| t.as_ref()))?;
        }
    }
    Ok(())
}

/// Appends `frame` to `out`; returns the frame's length. Fails, leaving
/// `out` as it was, if the message breaks a limit its decoder checks (so
/// everything encoded decodes) or its payload exceeds `max_payload`.
pub fn encode_frame_into<M: WireMessage>(
    frame: &Frame<M>,
    out: &mut Vec<u8>,
    max_payload: u32,
) -> Result<usize, WireError> {
    let start = out.len();
    out.extend_from_slice(&MAGIC);
    out.push(frame.protocol);
    out.extend_from_slice(&frame.version.to_le_bytes());
    out.extend_from_slice(&frame.sender.0.to_le_bytes());
    out.push(frame.type_code());
    out.extend_from_slice(&[0; 4]);
    if let Err(e) = encode_payload(&frame.body, out) {
        out.truncate(start);
        return Err(e);
    }
    let len = out.len() - start - HEADER_LEN;
    if len as u64 > u64::from(max_payload) {
        out.truncate(start);
        return Err(WireError::PayloadTooLarge { len: len as u64, max: max_payload });
    }
    out[start + 12..start + HEADER_LEN].copy_from_slice(&(len as u32).to_le_bytes());
    Ok(out.len() - start)
}

/// Encodes one frame, with the default payload limit.
pub fn encode_frame<M: WireMessage>(frame: &Frame<M>) -> Result<Vec<u8>, WireError> {
    let mut out = Vec::new();
    encode_frame_into(frame, &mut out, DEFAULT_MAX_PAYLOAD)?;
    Ok(out)
}

// ----- decoding -------------------------------------------------------------

/// A cursor over one payload.
struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    msg: &'static str,
}

impl<'a> Reader<'a> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn malformed(&self, field: &'static str, reason: impl Into<String>) -> WireError {
        WireError::Malformed { msg: self.msg, field, offset: self.pos, reason: reason.into() }
    }

    fn bytes(&mut self, field: &'static str, n: usize) -> Result<&'a [u8], WireError> {
        if self.left() < n {
            return Err(self.malformed(field, format!("needs {n} bytes, {} left", self.left())));
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn array<const N: usize>(&mut self, field: &'static str) -> Result<[u8; N], WireError> {
        let mut a = [0u8; N];
        a.copy_from_slice(self.bytes(field, N)?);
        Ok(a)
    }

    fn u8(&mut self, field: &'static str) -> Result<u8, WireError> {
        Ok(self.array::<1>(field)?[0])
    }

    fn u16(&mut self, field: &'static str) -> Result<u16, WireError> {
        Ok(u16::from_le_bytes(self.array(field)?))
    }

    fn u32(&mut self, field: &'static str) -> Result<u32, WireError> {
        Ok(u32::from_le_bytes(self.array(field)?))
    }

    fn u64(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(u64::from_le_bytes(self.array(field)?))
    }

    /// A consensus-encoded value (from a finite slice, so bitcoin's own
    /// allocation limits apply on top of the payload's length).
    fn consensus<T: Decodable>(&mut self, field: &'static str) -> Result<T, WireError> {
        let mut slice = &self.buf[self.pos..];
        let before = slice.len();
        match T::consensus_decode_from_finite_reader(&mut slice) {
            Ok(v) => {
                self.pos += before - slice.len();
                Ok(v)
            }
            Err(e) => Err(self.malformed(field, e.to_string())),
        }
    }

    fn varint(&mut self, field: &'static str) -> Result<u64, WireError> {
        Ok(self.consensus::<VarInt>(field)?.0)
    }

    /// A count of items of at least `min_bytes` each, at most `max`.
    fn count(&mut self, field: &'static str, max: usize, min_bytes: usize) -> Result<usize, WireError> {
        let n = self.varint(field)?;
        if n > max as u64 {
            return Err(WireError::TooMany { msg: self.msg, field, count: n, limit: max as u64 });
        }
        let fits = (self.left() / min_bytes.max(1)) as u64;
        if n > fits {
            return Err(WireError::TooMany { msg: self.msg, field, count: n, limit: fits });
        }
        Ok(n as usize)
    }

    fn hash(&mut self, field: &'static str) -> Result<[u8; 32], WireError> {
        self.array::<32>(field)
    }

    fn invs(&mut self) -> Result<Vec<Inv>, WireError> {
        let n = self.count("inventory", MAX_INV, 36)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            let code = self.u32("inventory type")?;
            let h = self.hash("inventory hash")?;
            v.push(match code {
                MSG_TX => Inv::Tx(Txid::from_byte_array(h)),
                MSG_BLOCK => Inv::Block(BlockHash::from_byte_array(h)),
                MSG_CMPCT_BLOCK => Inv::CmpctBlock(BlockHash::from_byte_array(h)),
                code => return Err(WireError::BadInvType { msg: self.msg, code }),
            });
        }
        Ok(v)
    }

    /// Transactions: at least 10 bytes each (version, two counts, lock time).
    fn txs(&mut self) -> Result<Vec<Arc<Transaction>>, WireError> {
        let n = self.count("transactions", MAX_TXS, 10)?;
        let mut v = Vec::with_capacity(n);
        for _ in 0..n {
            v.push(Arc::new(self.consensus::<Transaction>("transaction")?));
        }
        Ok(v)
    }

    fn block(&mut self) -> Result<Block, WireError> {
        // Check the transaction count against the bytes left before
        // bitcoin's decoder sees it.
        let mut probe = Reader { buf: self.buf, pos: self.pos, msg: self.msg };
        probe.bytes("block header", 80)?;
        probe.count("block transactions", MAX_TXS, 10)?;
        self.consensus("block")
    }

    fn sim_block(&mut self) -> Result<SimBlock, WireError> {
        let block = self.block()?;
        let filler = self.u32("filler")?;
        Ok(SimBlock::new(block, filler))
    }

    fn partial_tree(&mut self) -> Result<PartialMerkleTree, WireError> {
        // Bitcoin's decoder reserves eight booleans per announced flag byte
        // before reading them: check both lengths against the bytes left.
        let mut probe = Reader { buf: self.buf, pos: self.pos, msg: self.msg };
        probe.u32("merkle transaction count")?;
        let hashes = probe.count("merkle hashes", MAX_TXS * 2, 32)?;
        probe.bytes("merkle hashes", hashes * 32)?;
        probe.count("merkle flag bytes", MAX_TXS, 1)?;
        self.consensus("partial merkle tree")
    }

    fn finish<T>(self, v: T) -> Result<T, WireError> {
        match self.left() {
            0 => Ok(v),
            extra => Err(WireError::TrailingBytes { msg: self.msg, extra }),
        }
    }
}

fn decode_hello(r: &mut Reader<'_>) -> Result<Hello, WireError> {
    let node_id = NodeId(r.u32("node id")?);
    let len = r.count("name", MAX_NAME_BYTES, 1)?;
    let raw = r.bytes("name", len)?;
    let name = std::str::from_utf8(raw).map_err(|e| r.malformed("name", e.to_string()))?.to_owned();
    let protocol = r.u8("protocol")?;
    let versions = [r.u16("min version")?, r.u16("max version")?];
    Ok(Hello { node_id, name, protocol, versions })
}

fn decode_btc(code: u8, r: &mut Reader<'_>) -> Result<BtcMsg, WireError> {
    Ok(match code {
        msg_type::INV => BtcMsg::Inv(r.invs()?.into()),
        msg_type::GETDATA => BtcMsg::GetData(r.invs()?),
        msg_type::BLOCK => BtcMsg::Block(Arc::new(r.sim_block()?)),
        msg_type::TX => BtcMsg::Tx(Arc::new(r.consensus("transaction")?)),
        msg_type::GETHEADERS => {
            let _version = r.u32("protocol version")?;
            let n = r.count("locator", MAX_LOCATOR, 32)?;
            let mut locator = Vec::with_capacity(n);
            for _ in 0..n {
                locator.push(BlockHash::from_byte_array(r.hash("locator hash")?));
            }
            if r.hash("stop hash")? != [0; 32] {
                return Err(r.malformed("stop hash", "a stop hash is not supported (must be zero)"));
            }
            BtcMsg::GetHeaders(locator)
        }
        msg_type::HEADERS => {
            let n = r.count("headers", MAX_HEADERS, 81)?;
            let mut headers = Vec::with_capacity(n);
            for _ in 0..n {
                headers.push(r.consensus::<Header>("header")?);
                let txs = r.varint("header transaction count")?;
                if txs != 0 {
                    return Err(r.malformed("header transaction count", format!("{txs}, must be 0")));
                }
            }
            BtcMsg::Headers(headers)
        }
        msg_type::SENDCMPCT => {
            let announce = r.u8("announce")?;
            let version = r.u64("compact block version")?;
            if announce != 1 {
                return Err(
                    r.malformed("announce", format!("{announce}: only high-bandwidth mode (1) exists"))
                );
            }
            if !(1..=2).contains(&version) {
                return Err(r.malformed("compact block version", format!("{version}, expected 1 or 2")));
            }
            BtcMsg::SendCmpct
        }
        msg_type::CMPCTBLOCK => {
            // Probe the counts before bitcoin's decoder reserves anything.
            let mut probe = Reader { buf: r.buf, pos: r.pos, msg: r.msg };
            probe.bytes("header and nonce", 88)?;
            let shorts = probe.count("short ids", MAX_TXS, 6)?;
            probe.bytes("short ids", shorts * 6)?;
            probe.count("prefilled transactions", MAX_TXS, 11)?;
            let at = r.pos;
            let h: HeaderAndShortIds = r.consensus("compact block")?;
            if !h.short_ids.is_empty() {
                return Err(WireError::Malformed {
                    msg: r.msg,
                    field: "short ids",
                    offset: at + 88,
                    reason: format!(
                        "{} short ids: the emulator's compact blocks prefill every transaction",
                        h.short_ids.len()
                    ),
                });
            }
            let mut txdata = Vec::with_capacity(h.prefilled_txs.len());
            for PrefilledTransaction { idx, tx } in h.prefilled_txs {
                if idx != 0 {
                    return Err(WireError::Malformed {
                        msg: r.msg,
                        field: "prefilled index",
                        offset: at,
                        reason: format!("gap of {idx} transactions with no short ids to fill it"),
                    });
                }
                txdata.push(tx);
            }
            let filler = r.u32("filler")?;
            BtcMsg::CmpctBlock(Arc::new(SimBlock::new(Block { header: h.header, txdata }, filler)))
        }
        msg_type::GETBLOCKTXN => {
            let hash = BlockHash::from_byte_array(r.hash("block hash")?);
            let n = r.count("indexes", MAX_TXS, 1)?;
            let mut indexes = Vec::with_capacity(n);
            let mut next = 0u64;
            for _ in 0..n {
                let d = r.varint("index")?;
                let i = next.checked_add(d).filter(|i| *i <= u64::from(u32::MAX));
                let Some(i) = i else {
                    return Err(r.malformed("index", format!("{next} + {d} exceeds u32")));
                };
                indexes.push(i as u32);
                next = i + 1;
            }
            BtcMsg::GetBlockTxn(Box::new((hash, indexes)))
        }
        msg_type::BLOCKTXN => {
            let block = r.sim_block()?;
            let at = r.pos;
            let hash = BlockHash::from_byte_array(r.hash("block hash")?);
            if hash != block.hash {
                return Err(WireError::Malformed {
                    msg: r.msg,
                    field: "block hash",
                    offset: at,
                    reason: format!("{hash} is not the hash of the enclosed block {}", block.hash),
                });
            }
            let txs = r.txs()?;
            BtcMsg::BlockTxn(Box::new((Arc::new(block), txs)))
        }
        msg_type::FILTERLOAD => {
            let n = r.count("scripts", MAX_FILTER_SCRIPTS, 1)?;
            let mut scripts = Vec::with_capacity(n);
            for _ in 0..n {
                let mut probe = Reader { buf: r.buf, pos: r.pos, msg: r.msg };
                probe.count("script bytes", MAX_SCRIPT_BYTES, 1)?;
                scripts.push(r.consensus::<ScriptBuf>("script")?);
            }
            BtcMsg::FilterLoad(scripts)
        }
        msg_type::MERKLEBLOCK => {
            let header = r.consensus::<Header>("header")?;
            let proof = r.partial_tree()?;
            let height = r.u32("height")?;
            let txs = r.txs()?;
            BtcMsg::FilteredBlock(Box::new(FilteredBlock { header, height, proof, txs }))
        }
        other => return Err(WireError::UnknownMessageType { msg_type: other }),
    })
}

/// Decodes the first frame of `buf` as a Bitcoin frame with the default
/// payload limit; see [`decode_frame_limited`].
pub fn decode_frame(buf: &[u8]) -> Result<(Frame, usize), WireError> {
    decode_frame_limited(buf, DEFAULT_MAX_PAYLOAD)
}

/// Decodes the first frame of `buf` as a Bitcoin frame; see [`decode_frame_as`].
pub fn decode_frame_limited(buf: &[u8], max_payload: u32) -> Result<(Frame, usize), WireError> {
    decode_frame_as::<BtcMsg>(buf, max_payload)
}

/// Decodes the first frame of `buf` carrying messages of type `M` (or a
/// hello), returning it and the bytes it took.
///
/// `buf` may hold a partial frame: then the error is
/// [`WireError::Incomplete`] (check [`WireError::is_incomplete`]) and the
/// caller reads more. A bad header (magic, protocol, version, type, length)
/// is reported as soon as its bytes are present, before the payload arrives.
/// Never panics, whatever the bytes.
pub fn decode_frame_as<M: WireMessage>(buf: &[u8], max_payload: u32) -> Result<(Frame<M>, usize), WireError> {
    let m = buf.len().min(4);
    if buf[..m] != MAGIC[..m] {
        return Err(WireError::BadMagic { found: buf[..m].to_vec() });
    }
    if buf.len() < HEADER_LEN {
        return Err(WireError::Incomplete { have: buf.len(), need: HEADER_LEN });
    }
    let protocol = buf[4];
    let version = u16::from_le_bytes([buf[5], buf[6]]);
    let sender = NodeId(u32::from_le_bytes([buf[7], buf[8], buf[9], buf[10]]));
    let code = buf[11];
    let len = u32::from_le_bytes([buf[12], buf[13], buf[14], buf[15]]);
    if code != msg_type::HELLO {
        M::accepts(protocol, code)?;
        if !(VERSION_MIN..=VERSION_MAX).contains(&version) {
            return Err(WireError::UnsupportedVersion { version, min: VERSION_MIN, max: VERSION_MAX });
        }
    }
    if len > max_payload {
        return Err(WireError::PayloadTooLarge { len: u64::from(len), max: max_payload });
    }
    let total = HEADER_LEN + len as usize;
    if buf.len() < total {
        return Err(WireError::Incomplete { have: buf.len(), need: total });
    }
    let payload = &buf[HEADER_LEN..total];
    let body = if code == msg_type::HELLO {
        let mut r = Reader { buf: payload, pos: 0, msg: "hello" };
        let hello = decode_hello(&mut r)?;
        if hello.node_id != sender {
            return Err(r.malformed(
                "node id",
                format!("{} differs from the header's sender {sender}", hello.node_id),
            ));
        }
        if hello.protocol != protocol {
            return Err(r.malformed(
                "protocol",
                format!("{} differs from the header's protocol {protocol}", hello.protocol),
            ));
        }
        r.finish(Body::Hello(hello))?
    } else {
        Body::Msg(M::decode_payload(protocol, code, payload)?)
    };
    Ok((Frame { protocol, version, sender, body }, total))
}

/// Entry point for the fuzz crate (`fuzz/fuzz_targets/…`): decodes every
/// frame in `data` until the first error, as Bitcoin frames, then as
/// sidechain frames, then as PowPeg frames. It must never panic on any
/// input; it panics on purpose (for the fuzzer to report) if a decoded frame
/// does not re-encode, or if its re-encoding does not decode back to the
/// same bytes.
pub fn fuzz_decode(data: &[u8]) {
    fuzz_decode_as::<BtcMsg>(data);
    fuzz_decode_as::<fika_peg::network::SideMsg>(data);
    fuzz_decode_as::<fika_peg::network::PegMsg>(data);
}

/// [`fuzz_decode`] for messages of type `M`.
pub fn fuzz_decode_as<M: WireMessage>(data: &[u8]) {
    let mut rest = data;
    while let Ok((frame, used)) = decode_frame_as::<M>(rest, DEFAULT_MAX_PAYLOAD) {
        assert!(used >= HEADER_LEN && used <= rest.len(), "frame length {used} out of bounds");
        let Ok(again) = encode_frame(&frame) else {
            panic!("a decoded {} frame does not re-encode", frame.type_name());
        };
        match decode_frame_as::<M>(&again, DEFAULT_MAX_PAYLOAD) {
            Ok((f2, n)) => {
                assert_eq!(n, again.len(), "re-encoded frame length");
                assert_eq!(encode_frame(&f2).ok(), Some(again), "re-encoding is not stable");
            }
            Err(e) => panic!("a re-encoded {} frame does not decode: {e}", frame.type_name()),
        }
        rest = &rest[used..];
    }
}
