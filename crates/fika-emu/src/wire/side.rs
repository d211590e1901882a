//! The sidechain's payloads (protocol [`PROTOCOL_SIDECHAIN`]) and the
//! PowPeg's two-protocol connections.
//!
//! Sidechain payloads (version 1), by message type ([`side_type`]):
//!
//! * `block` (1): the block's RLP ([`fika_side::SideBlock::encode`]: header
//!   with its merge-mining proof, then the transactions).
//! * `tx` (2): the signed transaction's RLP (what `eth_sendRawTransaction`
//!   takes).
//! * `getblock` (3): a 32-byte block hash.
//! * `balance` (4): a 20-byte account.
//! * `balancereply` (5): the 20-byte account, its balance in wei (`u128`,
//!   little endian) and its next nonce (`u64`, little endian).
//! * `fedquery` (6): empty.
//! * `fedreply` (7): the federation's output script, consensus-encoded
//!   (compact-size length, at most [`MAX_SCRIPT_BYTES`]).
//!
//! A PowPeg connection ([`PegMsg`]) announces [`PROTOCOL_POWPEG`] in its
//! hello; each frame carries the protocol id of the part of the message it
//! holds ([`PROTOCOL_BITCOIN`] or [`PROTOCOL_SIDECHAIN`]) and that
//! protocol's type code and payload.

use std::sync::Arc;

use bitcoin::ScriptBuf;
use fika_btc::msg::BtcMsg;
use fika_peg::network::{PegMsg, SharedBlock, SideMsg};
use fika_side::{SideBlock, SignedTx};

use super::{
    MAX_SCRIPT_BYTES, PROTOCOL_BITCOIN, PROTOCOL_POWPEG, PROTOCOL_SIDECHAIN, Reader, WireError, WireMessage,
    protocol_refused, put,
};

/// Sidechain message type codes (the frame header's type byte).
pub mod side_type {
    /// A block.
    pub const BLOCK: u8 = 1;
    /// A transaction.
    pub const TX: u8 = 2;
    /// A request for a block by hash.
    pub const GETBLOCK: u8 = 3;
    /// A light client's balance query.
    pub const BALANCE: u8 = 4;
    /// Its answer.
    pub const BALANCE_REPLY: u8 = 5;
    /// A light client's federation-address query.
    pub const FEDERATION: u8 = 6;
    /// Its answer.
    pub const FEDERATION_REPLY: u8 = 7;
    /// The largest assigned code.
    pub const LAST: u8 = FEDERATION_REPLY;
}

/// The type code of a sidechain message.
pub fn side_code(m: &SideMsg) -> u8 {
    match m {
        SideMsg::Block(_) => side_type::BLOCK,
        SideMsg::Tx(_) => side_type::TX,
        SideMsg::GetBlock(_) => side_type::GETBLOCK,
        SideMsg::BalanceQuery(_) => side_type::BALANCE,
        SideMsg::BalanceReply { .. } => side_type::BALANCE_REPLY,
        SideMsg::FederationQuery => side_type::FEDERATION,
        SideMsg::FederationReply(_) => side_type::FEDERATION_REPLY,
    }
}

/// The command name of a sidechain type code.
pub fn side_type_name(code: u8) -> &'static str {
    match code {
        0 => "hello",
        side_type::BLOCK => "sideblock",
        side_type::TX => "sidetx",
        side_type::GETBLOCK => "getsideblock",
        side_type::BALANCE => "balance",
        side_type::BALANCE_REPLY => "balancereply",
        side_type::FEDERATION => "fedquery",
        side_type::FEDERATION_REPLY => "fedreply",
        _ => "unknown",
    }
}

fn encode_side(m: &SideMsg, out: &mut Vec<u8>) -> Result<(), WireError> {
    match m {
        SideMsg::Block(b) => out.extend_from_slice(&b.block.encode()),
        SideMsg::Tx(t) => out.extend_from_slice(&t.encode()),
        SideMsg::GetBlock(h) => out.extend_from_slice(h),
        SideMsg::BalanceQuery(a) => out.extend_from_slice(a),
        SideMsg::BalanceReply { address, balance, nonce } => {
            out.extend_from_slice(address);
            out.extend_from_slice(&balance.to_le_bytes());
            out.extend_from_slice(&nonce.to_le_bytes());
        }
        SideMsg::FederationQuery => {}
        SideMsg::FederationReply(script) => {
            if script.len() > MAX_SCRIPT_BYTES {
                return Err(WireError::Unencodable {
                    msg: "fedreply",
                    reason: format!("script of {} bytes exceeds {MAX_SCRIPT_BYTES}", script.len()),
                });
            }
            put(out, script);
        }
    }
    Ok(())
}

fn decode_side(code: u8, payload: &[u8]) -> Result<SideMsg, WireError> {
    let mut r = Reader { buf: payload, pos: 0, msg: side_type_name(code) };
    let m = match code {
        side_type::BLOCK => {
            let block = SideBlock::decode(payload).map_err(|e| r.malformed("block", e.to_string()))?;
            r.pos = payload.len();
            SideMsg::Block(SharedBlock::new(block))
        }
        side_type::TX => {
            let tx = SignedTx::decode(payload).map_err(|e| r.malformed("transaction", e.to_string()))?;
            r.pos = payload.len();
            SideMsg::Tx(Arc::new(tx))
        }
        side_type::GETBLOCK => SideMsg::GetBlock(r.hash("block hash")?),
        side_type::BALANCE => SideMsg::BalanceQuery(r.array("account")?),
        side_type::BALANCE_REPLY => SideMsg::BalanceReply {
            address: r.array("account")?,
            balance: u128::from_le_bytes(r.array("balance")?),
            nonce: r.u64("nonce")?,
        },
        side_type::FEDERATION => SideMsg::FederationQuery,
        side_type::FEDERATION_REPLY => {
            let mut probe = Reader { buf: r.buf, pos: r.pos, msg: r.msg };
            probe.count("script bytes", MAX_SCRIPT_BYTES, 1)?;
            SideMsg::FederationReply(r.consensus::<ScriptBuf>("script")?)
        }
        other => return Err(WireError::UnknownMessageType { msg_type: other }),
    };
    r.finish(m)
}

fn side_accepts(code: u8) -> Result<(), WireError> {
    if code == 0 || code > side_type::LAST {
        return Err(WireError::UnknownMessageType { msg_type: code });
    }
    Ok(())
}

impl WireMessage for SideMsg {
    const PROTOCOL: u8 = PROTOCOL_SIDECHAIN;
    const NAME: &'static str = "sidechain";

    fn header(&self) -> (u8, u8) {
        (PROTOCOL_SIDECHAIN, side_code(self))
    }

    fn accepts(protocol: u8, code: u8) -> Result<(), WireError> {
        side_accepts(code)?;
        if protocol != PROTOCOL_SIDECHAIN {
            return Err(protocol_refused::<Self>(protocol));
        }
        Ok(())
    }

    fn type_name(_protocol: u8, code: u8) -> &'static str {
        side_type_name(code)
    }

    fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        encode_side(self, out)
    }

    fn decode_payload(_protocol: u8, code: u8, payload: &[u8]) -> Result<Self, WireError> {
        decode_side(code, payload)
    }
}

impl WireMessage for PegMsg {
    const PROTOCOL: u8 = PROTOCOL_POWPEG;
    const NAME: &'static str = "powpeg";

    fn header(&self) -> (u8, u8) {
        match self {
            PegMsg::Btc(m) => m.header(),
            PegMsg::Side(m) => m.header(),
        }
    }

    fn accepts(protocol: u8, code: u8) -> Result<(), WireError> {
        match protocol {
            PROTOCOL_BITCOIN => <BtcMsg as WireMessage>::accepts(protocol, code),
            PROTOCOL_SIDECHAIN => <SideMsg as WireMessage>::accepts(protocol, code),
            _ => Err(protocol_refused::<Self>(protocol)),
        }
    }

    fn type_name(protocol: u8, code: u8) -> &'static str {
        match protocol {
            PROTOCOL_SIDECHAIN => side_type_name(code),
            _ => super::type_name(code),
        }
    }

    fn encode_payload(&self, out: &mut Vec<u8>) -> Result<(), WireError> {
        match self {
            PegMsg::Btc(m) => m.encode_payload(out),
            PegMsg::Side(m) => m.encode_payload(out),
        }
    }

    fn decode_payload(protocol: u8, code: u8, payload: &[u8]) -> Result<Self, WireError> {
        match protocol {
            PROTOCOL_BITCOIN => Ok(PegMsg::Btc(BtcMsg::decode_payload(protocol, code, payload)?)),
            PROTOCOL_SIDECHAIN => Ok(PegMsg::Side(SideMsg::decode_payload(protocol, code, payload)?)),
            _ => Err(protocol_refused::<Self>(protocol)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::{
        Body, DEFAULT_MAX_PAYLOAD, Frame, Hello, VERSION_MAX, decode_frame, decode_frame_as, encode_frame,
        fuzz_decode,
    };
    use bitcoin::hashes::Hash;
    use bitcoin::secp256k1::SecretKey;
    use fika_core::NodeId;
    use fika_side::{MergeMiningProof, SideHeader, U256, UnsignedTx};
    use proptest::prelude::*;

    fn arb_tx() -> impl Strategy<Value = SignedTx> {
        (
            any::<u64>(),
            any::<u128>(),
            any::<u64>(),
            proptest::option::of(any::<[u8; 20]>()),
            any::<u128>(),
            proptest::collection::vec(any::<u8>(), 0..64),
            proptest::option::of(0u64..1_000_000),
            1u8..=255,
        )
            .prop_map(|(nonce, gas_price, gas_limit, to, value, data, chain_id, k)| {
                let mut key = [0u8; 32];
                key[31] = k;
                let key = SecretKey::from_slice(&key).unwrap_or_else(|_| unreachable!("1..=255 is a key"));
                UnsignedTx { nonce, gas_price, gas_limit, to, value, data, chain_id }.sign(&key)
            })
    }

    fn arb_block() -> impl Strategy<Value = SideBlock> {
        (
            any::<[u8; 32]>(),
            any::<u64>(),
            any::<u64>(),
            any::<[u8; 20]>(),
            any::<[[u8; 32]; 3]>(),
            any::<(u64, u64, u64)>(),
            proptest::option::of((any::<u32>(), proptest::collection::vec(any::<[u8; 32]>(), 0..4))),
            proptest::collection::vec(arb_tx(), 0..3),
        )
            .prop_map(
                |(parent, number, timestamp, coinbase, roots, (gu, gl, d), mm, transactions)| {
                    let merge_mining = mm.map(|(nonce, branch)| {
                        let btc_coinbase = fika_btc::template::coinbase_tx(
                            7,
                            &fika_side::merge_mining_tag(&parent),
                            bitcoin::Amount::from_sat(5),
                            b"",
                        );
                        MergeMiningProof {
                            btc_header: bitcoin::block::Header {
                                version: bitcoin::block::Version::from_consensus(0x2000_0000),
                                prev_blockhash: bitcoin::BlockHash::all_zeros(),
                                merkle_root: bitcoin::TxMerkleNode::all_zeros(),
                                time: 1,
                                bits: bitcoin::CompactTarget::from_consensus(0x207f_ffff),
                                nonce,
                            },
                            btc_coinbase,
                            coinbase_branch: branch,
                        }
                    });
                    SideBlock {
                        header: SideHeader {
                            parent_hash: parent,
                            number,
                            timestamp,
                            coinbase,
                            state_root: roots[0],
                            transactions_root: roots[1],
                            receipts_root: roots[2],
                            gas_used: gu,
                            gas_limit: gl,
                            difficulty: U256::from(d),
                            merge_mining,
                        },
                        transactions,
                    }
                },
            )
    }

    fn arb_side() -> impl Strategy<Value = SideMsg> {
        prop_oneof![
            arb_block().prop_map(|b| SideMsg::Block(SharedBlock::new(b))),
            arb_tx().prop_map(|t| SideMsg::Tx(Arc::new(t))),
            any::<[u8; 32]>().prop_map(SideMsg::GetBlock),
            any::<[u8; 20]>().prop_map(SideMsg::BalanceQuery),
            (any::<[u8; 20]>(), any::<u128>(), any::<u64>())
                .prop_map(|(address, balance, nonce)| SideMsg::BalanceReply { address, balance, nonce }),
            Just(SideMsg::FederationQuery),
            proptest::collection::vec(any::<u8>(), 0..80)
                .prop_map(|s| SideMsg::FederationReply(ScriptBuf::from_bytes(s))),
        ]
    }

    /// What identifies a message (a block by its encoding).
    fn text(m: &SideMsg) -> String {
        match m {
            SideMsg::Block(b) => format!("block {:?} {}", b.block.encode(), b.size),
            m => format!("{m:?}"),
        }
    }

    fn round_trip<M: WireMessage>(msg: M) -> (Frame<M>, Vec<u8>) {
        let bytes = encode_frame(&Frame::message(NodeId(4), VERSION_MAX, msg)).expect("encodes");
        let (frame, used) = decode_frame_as::<M>(&bytes, DEFAULT_MAX_PAYLOAD).expect("decodes");
        assert_eq!(used, bytes.len());
        assert_eq!(frame.sender, NodeId(4));
        assert_eq!(encode_frame(&frame).expect("re-encodes"), bytes);
        (frame, bytes)
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(200))]

        #[test]
        fn every_sidechain_message_round_trips(msg in arb_side()) {
            let (frame, bytes) = round_trip(msg.clone());
            prop_assert_eq!(frame.protocol, PROTOCOL_SIDECHAIN);
            let Body::Msg(back) = frame.body else { panic!("not a message") };
            prop_assert_eq!(text(&back), text(&msg));
            // The same message inside a PowPeg connection: the same bytes.
            let (pframe, pbytes) = round_trip(PegMsg::Side(msg.clone()));
            prop_assert_eq!(pbytes, bytes.clone());
            prop_assert!(matches!(pframe.body, Body::Msg(PegMsg::Side(ref m)) if text(m) == text(&msg)));
            // Every prefix is incomplete, never an error or a panic.
            for k in [0, 4, 15, 16, bytes.len() / 2, bytes.len() - 1].into_iter().filter(|k| *k < bytes.len()) {
                let e = decode_frame_as::<SideMsg>(&bytes[..k], DEFAULT_MAX_PAYLOAD).err();
                prop_assert!(e.as_ref().is_some_and(WireError::is_incomplete), "{:?}", e);
            }
        }

        #[test]
        fn hostile_sidechain_payloads_never_panic(code in 0u8..=9, protocol in 0u8..=4, payload in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut data = b"fika".to_vec();
            data.push(protocol);
            data.extend_from_slice(&VERSION_MAX.to_le_bytes());
            data.extend_from_slice(&3u32.to_le_bytes());
            data.push(code);
            data.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            data.extend_from_slice(&payload);
            for r in [
                decode_frame_as::<SideMsg>(&data, DEFAULT_MAX_PAYLOAD).map(|(_, n)| n),
                decode_frame_as::<PegMsg>(&data, DEFAULT_MAX_PAYLOAD).map(|(_, n)| n),
            ] {
                match r {
                    Ok(n) => prop_assert_eq!(n, data.len()),
                    Err(e) => prop_assert!(!e.is_incomplete(), "a whole frame is never incomplete: {e}"),
                }
            }
            fuzz_decode(&data);
        }

        #[test]
        fn mutated_sidechain_frames_never_panic(
            msg in arb_side(),
            edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
        ) {
            let mut bytes = encode_frame(&Frame::message(NodeId(1), VERSION_MAX, msg)).expect("encodes");
            for (at, byte, op) in edits {
                if bytes.is_empty() {
                    break;
                }
                let i = at.index(bytes.len());
                match op {
                    0 => bytes[i] ^= byte | 1,
                    1 => bytes.insert(i, byte),
                    _ => {
                        bytes.remove(i);
                    }
                }
            }
            fuzz_decode(&bytes);
        }
    }

    #[test]
    fn protocols_are_kept_apart() {
        let (_, side) = round_trip(SideMsg::GetBlock([9; 32]));
        // A Bitcoin connection refuses a sidechain frame, and the other way round.
        assert!(matches!(
            decode_frame(&side),
            Err(WireError::UnexpectedProtocol { protocol: PROTOCOL_SIDECHAIN, connection: "bitcoin" })
        ));
        let (_, btc) = round_trip(BtcMsg::SendCmpct);
        assert!(matches!(
            decode_frame_as::<SideMsg>(&btc, DEFAULT_MAX_PAYLOAD),
            Err(WireError::UnexpectedProtocol { protocol: PROTOCOL_BITCOIN, connection: "sidechain" })
        ));
        // A PowPeg connection takes both, each under its own protocol id.
        let (f, _) = round_trip(PegMsg::Btc(BtcMsg::SendCmpct));
        assert_eq!(f.protocol, PROTOCOL_BITCOIN);
        assert!(
            matches!(decode_frame_as::<PegMsg>(&side, DEFAULT_MAX_PAYLOAD), Ok((_, n)) if n == side.len())
        );
        let mut bad = side.clone();
        bad[4] = 9;
        assert!(matches!(
            decode_frame_as::<PegMsg>(&bad, DEFAULT_MAX_PAYLOAD),
            Err(WireError::UnknownProtocol { protocol: 9 })
        ));
        // Hellos announce the connection's protocol.
        let h = Hello::new(PegMsg::PROTOCOL, NodeId(2), "pool1");
        let bytes = encode_frame(&Frame::<PegMsg>::hello_of(h.clone())).expect("hello");
        assert!(matches!(decode_frame_as::<PegMsg>(&bytes, DEFAULT_MAX_PAYLOAD),
            Ok((Frame { body: Body::Hello(ref back), .. }, _)) if *back == h && back.protocol == PROTOCOL_POWPEG));
    }

    #[test]
    fn malformed_sidechain_payloads_name_the_field() {
        let frame = |code: u8, payload: &[u8]| {
            let mut d = b"fika".to_vec();
            d.push(PROTOCOL_SIDECHAIN);
            d.extend_from_slice(&1u16.to_le_bytes());
            d.extend_from_slice(&1u32.to_le_bytes());
            d.push(code);
            d.extend_from_slice(&(payload.len() as u32).to_le_bytes());
            d.extend_from_slice(payload);
            decode_frame_as::<SideMsg>(&d, DEFAULT_MAX_PAYLOAD).map(|_| ()).map_err(|e| e.to_string())
        };
        let e = frame(side_type::TX, &[0xc0]).expect_err("an empty list is no transaction");
        assert!(e.contains("sidetx: malformed transaction"), "{e}");
        let e = frame(side_type::BLOCK, &[0x01, 0x02]).expect_err("not a block");
        assert!(e.contains("sideblock: malformed block"), "{e}");
        let e = frame(side_type::GETBLOCK, &[0; 31]).expect_err("short hash");
        assert!(e.contains("block hash"), "{e}");
        let e = frame(side_type::BALANCE, &[0; 21]).expect_err("trailing byte");
        assert!(e.contains("1 trailing bytes"), "{e}");
        let e = frame(side_type::FEDERATION_REPLY, &[0xfd, 0x11, 0x27]).expect_err("huge script");
        assert!(e.contains("exceeds 10000"), "{e}");
        assert_eq!(frame(99, &[]).expect_err("unknown type"), "unknown message type 99");
        assert_eq!(frame(side_type::FEDERATION, &[]), Ok(()));
    }
}
