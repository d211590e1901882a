//! The wire format: every message type round-trips; hostile bytes never
//! panic and are refused with an error naming what was wrong.

use std::sync::Arc;

use bitcoin::block::{Header, Version as BlockVersion};
use bitcoin::hashes::Hash;
use bitcoin::merkle_tree::PartialMerkleTree;
use bitcoin::{
    Amount, Block, BlockHash, CompactTarget, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxMerkleNode,
    TxOut, Txid, Witness,
};
use fika_btc::blockdb::SimBlock;
use fika_btc::msg::{BtcMsg, FilteredBlock, Inv};
use fika_core::NodeId;
use fika_emu::wire::{
    self, Body, DEFAULT_MAX_PAYLOAD, Frame, HEADER_LEN, Hello, WireError, decode_frame, decode_frame_limited,
    encode_frame, fuzz_decode, msg_type, negotiate,
};
use proptest::prelude::*;

fn arb_hash() -> impl Strategy<Value = [u8; 32]> {
    any::<[u8; 32]>()
}

fn arb_bytes(max: usize) -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 0..max)
}

fn arb_tx() -> impl Strategy<Value = Transaction> {
    let input = (
        arb_hash(),
        any::<u32>(),
        arb_bytes(40),
        any::<u32>(),
        proptest::collection::vec(arb_bytes(20), 0..3),
    )
        .prop_map(|(h, vout, sig, seq, wit)| TxIn {
            previous_output: OutPoint::new(Txid::from_byte_array(h), vout),
            script_sig: ScriptBuf::from_bytes(sig),
            sequence: Sequence(seq),
            witness: Witness::from_slice(&wit),
        });
    let output = (0..2_100_000_000_000_000u64, arb_bytes(40))
        .prop_map(|(v, s)| TxOut { value: Amount::from_sat(v), script_pubkey: ScriptBuf::from_bytes(s) });
    (
        any::<i32>(),
        proptest::collection::vec(input, 1..4),
        proptest::collection::vec(output, 0..4),
        any::<u32>(),
    )
        .prop_map(|(v, input, output, lt)| Transaction {
            version: bitcoin::transaction::Version(v),
            lock_time: bitcoin::absolute::LockTime::from_consensus(lt),
            input,
            output,
        })
}

fn arb_header() -> impl Strategy<Value = Header> {
    (any::<i32>(), arb_hash(), arb_hash(), any::<u32>(), any::<u32>(), any::<u32>()).prop_map(
        |(v, prev, root, time, bits, nonce)| Header {
            version: BlockVersion::from_consensus(v),
            prev_blockhash: BlockHash::from_byte_array(prev),
            merkle_root: TxMerkleNode::from_byte_array(root),
            time,
            bits: CompactTarget::from_consensus(bits),
            nonce,
        },
    )
}

fn arb_sim_block() -> impl Strategy<Value = Arc<SimBlock>> {
    (arb_header(), proptest::collection::vec(arb_tx(), 0..4), any::<u32>())
        .prop_map(|(header, txdata, filler)| Arc::new(SimBlock::new(Block { header, txdata }, filler)))
}

fn arb_inv() -> impl Strategy<Value = Inv> {
    prop_oneof![
        arb_hash().prop_map(|h| Inv::Tx(Txid::from_byte_array(h))),
        arb_hash().prop_map(|h| Inv::Block(BlockHash::from_byte_array(h))),
        arb_hash().prop_map(|h| Inv::CmpctBlock(BlockHash::from_byte_array(h))),
    ]
}

fn arb_filtered() -> impl Strategy<Value = FilteredBlock> {
    (arb_header(), any::<u32>(), proptest::collection::vec((arb_hash(), any::<bool>()), 1..9), 0..3usize)
        .prop_flat_map(|(header, height, leaves, ntx)| {
            proptest::collection::vec(arb_tx(), ntx).prop_map(move |txs| {
                let txids: Vec<Txid> = leaves.iter().map(|(h, _)| Txid::from_byte_array(*h)).collect();
                let matches: Vec<bool> = leaves.iter().map(|(_, m)| *m).collect();
                FilteredBlock {
                    header,
                    height,
                    proof: PartialMerkleTree::from_txids(&txids, &matches),
                    txs: txs.into_iter().map(Arc::new).collect(),
                }
            })
        })
}

fn arb_msg() -> impl Strategy<Value = BtcMsg> {
    prop_oneof![
        proptest::collection::vec(arb_inv(), 0..20).prop_map(|v| BtcMsg::Inv(v.into())),
        proptest::collection::vec(arb_inv(), 0..20).prop_map(BtcMsg::GetData),
        arb_sim_block().prop_map(BtcMsg::Block),
        arb_tx().prop_map(|t| BtcMsg::Tx(Arc::new(t))),
        proptest::collection::vec(arb_hash(), 0..30)
            .prop_map(|v| BtcMsg::GetHeaders(v.into_iter().map(BlockHash::from_byte_array).collect())),
        proptest::collection::vec(arb_header(), 0..10).prop_map(BtcMsg::Headers),
        Just(BtcMsg::SendCmpct),
        arb_sim_block().prop_map(BtcMsg::CmpctBlock),
        (arb_hash(), proptest::collection::btree_set(any::<u32>(), 0..10)).prop_map(|(h, set)| {
            BtcMsg::GetBlockTxn(Box::new((BlockHash::from_byte_array(h), set.into_iter().collect())))
        }),
        (arb_sim_block(), proptest::collection::vec(arb_tx(), 0..3))
            .prop_map(|(b, txs)| BtcMsg::BlockTxn(Box::new((b, txs.into_iter().map(Arc::new).collect())))),
        proptest::collection::vec(arb_bytes(60), 0..5)
            .prop_map(|v| BtcMsg::FilterLoad(v.into_iter().map(ScriptBuf::from_bytes).collect())),
        arb_filtered().prop_map(|f| BtcMsg::FilteredBlock(Box::new(f))),
    ]
}

fn frame_of(msg: BtcMsg) -> Frame {
    Frame::btc(NodeId(7), wire::VERSION_MAX, msg)
}

/// `msg` as Bitcoin's own encoding gives it back: a partial merkle tree's
/// flag bits come back padded to whole bytes.
fn normalized(msg: &BtcMsg) -> String {
    match msg {
        BtcMsg::FilteredBlock(f) => {
            let proof = bitcoin::consensus::serialize(&f.proof);
            let proof = bitcoin::consensus::deserialize(&proof).expect("bitcoin round trip");
            format!("{:?}", BtcMsg::FilteredBlock(Box::new(FilteredBlock { proof, ..(**f).clone() })))
        }
        m => format!("{m:?}"),
    }
}

/// Decodes `bytes` as one frame and checks it is `msg` again.
fn assert_round_trip(msg: &BtcMsg) -> Vec<u8> {
    let bytes = encode_frame(&frame_of(msg.clone())).expect("encodes");
    let (frame, used) = decode_frame(&bytes).expect("decodes");
    assert_eq!(used, bytes.len());
    assert_eq!(frame.sender, NodeId(7));
    assert_eq!(frame.version, wire::VERSION_MAX);
    let Body::Msg(back) = frame.body else { panic!("not a bitcoin message") };
    assert_eq!(format!("{back:?}"), normalized(msg));
    assert_eq!(encode_frame(&frame_of(back)).expect("re-encodes"), bytes);
    bytes
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn every_message_round_trips(msg in arb_msg()) {
        assert_round_trip(&msg);
    }

    #[test]
    fn hello_round_trips(id in any::<u32>(), name in "[a-z0-9 é]{0,40}", protocol in any::<u8>(), v in any::<[u16; 2]>()) {
        let h = Hello { node_id: NodeId(id), name, protocol, versions: v };
        let bytes = encode_frame(&Frame::hello(h.clone())).expect("encodes");
        let (f, used) = decode_frame(&bytes).expect("decodes");
        prop_assert_eq!(used, bytes.len());
        prop_assert!(matches!(f.body, Body::Hello(ref back) if *back == h));
    }

    #[test]
    fn every_prefix_is_incomplete(msg in arb_msg(), cut in any::<prop::sample::Index>()) {
        let bytes = encode_frame(&frame_of(msg)).expect("encodes");
        let k = cut.index(bytes.len());
        let e = decode_frame(&bytes[..k]).err();
        prop_assert!(e.as_ref().is_some_and(WireError::is_incomplete), "{:?}", e);
    }

    #[test]
    fn concatenated_frames_decode_in_order(a in arb_msg(), b in arb_msg()) {
        let mut bytes = encode_frame(&frame_of(a.clone())).expect("a");
        let first = bytes.len();
        bytes.extend(encode_frame(&frame_of(b.clone())).expect("b"));
        let (fa, used) = decode_frame(&bytes).expect("first");
        prop_assert_eq!(used, first);
        let (fb, used2) = decode_frame(&bytes[used..]).expect("second");
        prop_assert_eq!(used + used2, bytes.len());
        let text = |body: &Body| match body {
            Body::Msg(m) => format!("{m:?}"),
            Body::Hello(h) => format!("{h:?}"),
        };
        prop_assert_eq!(text(&fa.body), normalized(&a));
        prop_assert_eq!(text(&fb.body), normalized(&b));
    }

    #[test]
    fn random_bytes_never_panic(data in arb_bytes(512)) {
        if let Ok((_, used)) = decode_frame(&data) {
            prop_assert!(used <= data.len());
        }
        fuzz_decode(&data);
    }

    #[test]
    fn random_payloads_behind_a_valid_header_never_panic(code in 0u8..=msg_type::LAST, payload in arb_bytes(400)) {
        let mut data = b"fika".to_vec();
        data.push(wire::PROTOCOL_BITCOIN);
        data.extend_from_slice(&wire::VERSION_MAX.to_le_bytes());
        data.extend_from_slice(&3u32.to_le_bytes());
        data.push(code);
        data.extend_from_slice(&(payload.len() as u32).to_le_bytes());
        data.extend_from_slice(&payload);
        match decode_frame(&data) {
            Ok((_, used)) => prop_assert_eq!(used, data.len()),
            Err(e) => prop_assert!(!e.is_incomplete(), "a whole frame is never incomplete: {e}"),
        }
        fuzz_decode(&data);
    }

    #[test]
    fn mutated_frames_never_panic(
        msg in arb_msg(),
        edits in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>(), 0u8..3), 1..6),
    ) {
        let mut bytes = encode_frame(&frame_of(msg)).expect("encodes");
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
        let _ = decode_frame(&bytes);
        fuzz_decode(&bytes);
    }
}

fn header(code: u8, protocol: u8, version: u16, len: u32) -> Vec<u8> {
    let mut d = b"fika".to_vec();
    d.push(protocol);
    d.extend_from_slice(&version.to_le_bytes());
    d.extend_from_slice(&1u32.to_le_bytes());
    d.push(code);
    d.extend_from_slice(&len.to_le_bytes());
    d
}

fn frame(code: u8, payload: &[u8]) -> Vec<u8> {
    let mut d = header(code, wire::PROTOCOL_BITCOIN, 1, payload.len() as u32);
    d.extend_from_slice(payload);
    d
}

#[test]
fn bad_headers_are_refused_before_the_payload_arrives() {
    assert!(matches!(decode_frame(b"fik!"), Err(WireError::BadMagic { found }) if found == b"fik!"));
    assert!(matches!(decode_frame(b"x"), Err(WireError::BadMagic { .. })));
    assert!(decode_frame(b"fi").is_err_and(|e| e.is_incomplete()));
    assert!(matches!(decode_frame(&header(1, 9, 1, 0)), Err(WireError::UnknownProtocol { protocol: 9 })));
    assert!(matches!(
        decode_frame(&header(1, 1, 7, 0)),
        Err(WireError::UnsupportedVersion { version: 7, .. })
    ));
    assert!(matches!(
        decode_frame(&header(99, 1, 1, 0)),
        Err(WireError::UnknownMessageType { msg_type: 99 })
    ));
    // Too large: refused from the header alone.
    assert!(matches!(
        decode_frame(&header(3, 1, 1, DEFAULT_MAX_PAYLOAD + 1)),
        Err(WireError::PayloadTooLarge { len, max: DEFAULT_MAX_PAYLOAD }) if len == u64::from(DEFAULT_MAX_PAYLOAD) + 1
    ));
    assert!(matches!(
        decode_frame_limited(&header(3, 1, 1, 2000), 1024),
        Err(WireError::PayloadTooLarge { .. })
    ));
}

#[test]
fn huge_counts_are_refused_without_allocating() {
    // inv announcing 2^32 - 1 entries in five bytes.
    let e = decode_frame(&frame(msg_type::INV, &[0xfe, 0xff, 0xff, 0xff, 0xff])).expect_err("refused");
    assert!(matches!(e, WireError::TooMany { field: "inventory", count: 0xffff_ffff, .. }), "{e}");
    // An inv count within the protocol limit but beyond the bytes present.
    let e = decode_frame(&frame(msg_type::INV, &[0xfd, 0x10, 0x27])).expect_err("refused");
    assert!(matches!(e, WireError::TooMany { count: 10_000, limit: 0, .. }), "{e}");
    // A merkleblock announcing four million flag bytes.
    let mut p = vec![0u8; 80];
    p.extend_from_slice(&1u32.to_le_bytes());
    p.push(0); // no hashes
    p.extend_from_slice(&[0xfe, 0x00, 0x09, 0x3d, 0x00]); // 4,000,000 flag bytes
    let e = decode_frame(&frame(msg_type::MERKLEBLOCK, &p)).expect_err("refused");
    assert!(matches!(e, WireError::TooMany { field: "merkle flag bytes", .. }), "{e}");
    // A block announcing a million transactions in a few bytes.
    let mut p = vec![0u8; 80];
    p.extend_from_slice(&[0xfe, 0x40, 0x42, 0x0f, 0x00]);
    let e = decode_frame(&frame(msg_type::BLOCK, &p)).expect_err("refused");
    assert!(matches!(e, WireError::TooMany { field: "block transactions", .. }), "{e}");
}

#[test]
fn payload_errors_name_the_field() {
    let mut inv = vec![1];
    inv.extend_from_slice(&3u32.to_le_bytes());
    inv.extend_from_slice(&[0; 32]);
    assert!(matches!(decode_frame(&frame(msg_type::INV, &inv)), Err(WireError::BadInvType { code: 3, .. })));
    // Trailing bytes.
    let mut p = encode_frame(&frame_of(BtcMsg::SendCmpct)).expect("encodes")[HEADER_LEN..].to_vec();
    p.push(0);
    assert!(matches!(
        decode_frame(&frame(msg_type::SENDCMPCT, &p)),
        Err(WireError::TrailingBytes { msg: "sendcmpct", extra: 1 })
    ));
    // Low-bandwidth sendcmpct cannot be represented.
    let mut p = vec![0];
    p.extend_from_slice(&2u64.to_le_bytes());
    let e = decode_frame(&frame(msg_type::SENDCMPCT, &p)).expect_err("refused");
    assert!(matches!(e, WireError::Malformed { field: "announce", .. }), "{e}");
    // A getheaders with a stop hash.
    let mut p = 70016u32.to_le_bytes().to_vec();
    p.push(0);
    p.extend_from_slice(&[1; 32]);
    let e = decode_frame(&frame(msg_type::GETHEADERS, &p)).expect_err("refused");
    assert!(e.to_string().contains("stop hash"), "{e}");
    // A hello whose name is not UTF-8.
    let mut p = 1u32.to_le_bytes().to_vec();
    p.extend_from_slice(&[2, 0xff, 0xfe, 1, 1, 0, 1, 0]);
    let mut d = header(msg_type::HELLO, 1, 1, p.len() as u32);
    d.extend_from_slice(&p);
    let e = decode_frame(&d).expect_err("refused");
    assert!(matches!(e, WireError::Malformed { msg: "hello", field: "name", .. }), "{e}");
    // Compact blocks with short ids cannot be resolved here.
    let mut p = vec![0u8; 88];
    p.push(1);
    p.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
    p.push(0);
    p.extend_from_slice(&0u32.to_le_bytes());
    let e = decode_frame(&frame(msg_type::CMPCTBLOCK, &p)).expect_err("refused");
    assert!(matches!(e, WireError::Malformed { field: "short ids", .. }), "{e}");
    // A blocktxn whose hash is not its block's.
    let genesis = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest);
    let msg = BtcMsg::BlockTxn(Box::new((Arc::new(SimBlock::new(genesis, 0)), Vec::new())));
    let mut bytes = encode_frame(&frame_of(msg)).expect("encodes");
    let n = bytes.len();
    bytes[n - 2] ^= 1; // inside the block hash (the last byte is the empty tx count)
    let e = decode_frame(&bytes).expect_err("refused");
    assert!(matches!(e, WireError::Malformed { field: "block hash", .. }), "{e}");
}

#[test]
fn encoding_refuses_what_decoding_would() {
    let msg = BtcMsg::GetBlockTxn(Box::new((BlockHash::all_zeros(), vec![5, 3])));
    assert!(matches!(encode_frame(&frame_of(msg)), Err(WireError::Unencodable { msg: "getblocktxn", .. })));
    let msg = BtcMsg::GetHeaders(vec![BlockHash::all_zeros(); wire::MAX_LOCATOR + 1]);
    assert!(matches!(encode_frame(&frame_of(msg)), Err(WireError::Unencodable { .. })));
    let big = Arc::new(SimBlock::new(
        Block {
            header: bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest).header,
            txdata: vec![
                Transaction {
                    version: bitcoin::transaction::Version::TWO,
                    lock_time: bitcoin::absolute::LockTime::ZERO,
                    input: vec![TxIn::default()],
                    output: vec![TxOut {
                        value: Amount::ZERO,
                        script_pubkey: ScriptBuf::from_bytes(vec![0; 5000])
                    }],
                };
                3
            ],
        },
        0,
    ));
    let mut out = vec![9];
    let e = wire::encode_frame_into(&frame_of(BtcMsg::Block(big)), &mut out, 4096).expect_err("refused");
    assert!(matches!(e, WireError::PayloadTooLarge { max: 4096, .. }));
    assert_eq!(out, [9], "a refused frame leaves the buffer as it was");
}

#[test]
fn real_bitcoin_encodings() {
    // A block payload is the consensus block plus the filler count.
    let genesis = bitcoin::blockdata::constants::genesis_block(bitcoin::Network::Regtest);
    let consensus = bitcoin::consensus::serialize(&genesis);
    let bytes = assert_round_trip(&BtcMsg::Block(Arc::new(SimBlock::new(genesis.clone(), 1234))));
    assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + consensus.len()], &consensus[..]);
    assert_eq!(&bytes[HEADER_LEN + consensus.len()..], &1234u32.to_le_bytes());
    // inv: count, then type 2 + hash.
    let h = genesis.block_hash();
    let bytes = assert_round_trip(&BtcMsg::Inv(vec![Inv::Block(h)].into()));
    assert_eq!(bytes[HEADER_LEN], 1);
    assert_eq!(&bytes[HEADER_LEN + 1..HEADER_LEN + 5], &2u32.to_le_bytes());
    assert_eq!(&bytes[HEADER_LEN + 5..], &h.to_byte_array());
    // getdata of a compact block uses MSG_CMPCT_BLOCK = 4.
    let bytes = assert_round_trip(&BtcMsg::GetData(vec![Inv::CmpctBlock(h)]));
    assert_eq!(&bytes[HEADER_LEN + 1..HEADER_LEN + 5], &4u32.to_le_bytes());
    // A filtered block starts with a real merkleblock.
    let txids: Vec<Txid> = genesis.txdata.iter().map(Transaction::compute_txid).collect();
    let proof = PartialMerkleTree::from_txids(&txids, &[true]);
    let mb = bitcoin::MerkleBlock { header: genesis.header, txn: proof.clone() };
    let mb_bytes = bitcoin::consensus::serialize(&mb);
    let f = FilteredBlock {
        header: genesis.header,
        height: 0,
        proof,
        txs: vec![Arc::new(genesis.txdata[0].clone())],
    };
    let bytes = assert_round_trip(&BtcMsg::FilteredBlock(Box::new(f)));
    assert_eq!(&bytes[HEADER_LEN..HEADER_LEN + mb_bytes.len()], &mb_bytes[..]);
    // A compact block is a BIP152 HeaderAndShortIDs with every transaction prefilled.
    let bytes = assert_round_trip(&BtcMsg::CmpctBlock(Arc::new(SimBlock::new(genesis.clone(), 0))));
    let cmpct: bitcoin::bip152::HeaderAndShortIds =
        bitcoin::consensus::deserialize(&bytes[HEADER_LEN..bytes.len() - 4]).expect("BIP152");
    assert_eq!(cmpct.header, genesis.header);
    assert_eq!(cmpct.prefilled_txs.len(), 1);
    // getblocktxn is a BIP152 BlockTransactionsRequest.
    let bytes = assert_round_trip(&BtcMsg::GetBlockTxn(Box::new((h, vec![1, 2, 5]))));
    let req: bitcoin::bip152::BlockTransactionsRequest =
        bitcoin::consensus::deserialize(&bytes[HEADER_LEN..]).expect("BIP152");
    assert_eq!(req.indexes, [1, 2, 5]);
}

#[test]
fn versions_are_negotiated() {
    let h = |v: [u16; 2]| Hello { node_id: NodeId(1), name: "a".into(), protocol: 1, versions: v };
    assert_eq!(negotiate(&h([1, 3]), &h([2, 5])), Ok(3));
    assert_eq!(negotiate(&h([1, 1]), &h([1, 1])), Ok(1));
    let e = negotiate(&h([1, 2]), &h([3, 4])).expect_err("refused");
    assert_eq!(e.to_string(), "no common wire version: we speak 1..=2, the peer speaks 3..=4");
    assert!(negotiate(&h([1, 2]), &h([2, 1])).is_err(), "an inverted range is refused");
    let other = Hello { protocol: 2, ..h([1, 1]) };
    assert!(matches!(negotiate(&h([1, 1]), &other), Err(WireError::ProtocolMismatch { ours: 1, theirs: 2 })));
}
