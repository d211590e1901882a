//! Transactions, blocks, receipts and proofs: encodings round-trip, the
//! EIP-155 reference vector, sender recovery, and decoders that never panic
//! on hostile bytes.
#![allow(clippy::unwrap_used)]

mod common;

use common::*;
use fika_side::merkle::MerkleProof;
use fika_side::{
    Log, Receipt, SideBlock, SideHeader, SignedTx, TxError, U256, UnsignedTx, address_of_secret,
};
use proptest::prelude::*;

#[track_caller]
fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

/// The example of EIP-155 itself.
#[test]
fn eip155_reference_vector() {
    let key = bitcoin::secp256k1::SecretKey::from_slice(&[0x46; 32]).unwrap();
    let tx = UnsignedTx {
        nonce: 9,
        gas_price: 20 * GWEI,
        gas_limit: 21_000,
        to: Some([0x35; 20]),
        value: 1_000_000_000_000_000_000,
        data: vec![],
        chain_id: Some(1),
    };
    assert_eq!(
        hex::encode(tx.signing_hash()),
        "daf5a779ae972f972197303d7b574746c7ef83eadac0f2791ad23db92e4c8e53"
    );
    let signed = tx.clone().sign(&key);
    let expected = unhex(
        "f86c098504a817c800825208943535353535353535353535353535353535353535880de0b6b3a76400008025a028ef61340bd939bc2195fe537567866003e1a15d3c71ff63e1590620aa636276a067cbe9d8997f761aecb703304b3800ccf555c9f3dc64214b297fb1966a3b6d83",
    );
    assert_eq!(signed.encode(), expected);
    assert_eq!(signed.v, 37);
    let decoded = SignedTx::decode(&expected).unwrap();
    assert_eq!(decoded, signed);
    assert_eq!(decoded.chain_id(), Some(1));
    let sender = decoded.recover_sender().unwrap();
    assert_eq!(hex::encode(sender), "9d8a62f656a8d1615c1294fd71e9cfb3e4855a4f");
    assert_eq!(sender, address_of_secret(&key));
    assert_eq!(decoded.tx_hash(), fika_side::keccak256(&expected));
}

#[test]
fn unprotected_and_tampered_signatures() {
    let tx = UnsignedTx {
        nonce: 0,
        gas_price: 1,
        gas_limit: 21_000,
        to: None,
        value: 0,
        data: vec![1, 2],
        chain_id: None,
    };
    let signed = tx.sign(&key(ALICE));
    assert!(signed.v == 27 || signed.v == 28);
    let decoded = SignedTx::decode(&signed.encode()).unwrap();
    assert_eq!(decoded.chain_id(), None);
    assert_eq!(decoded.recover_sender().unwrap(), addr(ALICE));

    // Changing a signed field changes the recovered sender.
    let mut other = decoded.clone();
    other.tx.value = 1;
    assert_ne!(other.recover_sender().ok(), Some(addr(ALICE)));

    // High s is refused (EIP-2), as are zero r and s.
    let mut high = decoded.clone();
    high.s = [0xff; 32];
    assert!(matches!(high.recover_sender(), Err(TxError::BadSignatureValues { .. })));
    let mut zero = decoded.clone();
    zero.r = [0; 32];
    assert!(matches!(zero.recover_sender(), Err(TxError::BadSignatureValues { .. })));

    // v other than 27, 28 or >= 35 does not decode.
    let mut bad_v = decoded;
    bad_v.v = 30;
    assert!(matches!(SignedTx::decode(&bad_v.encode()), Err(TxError::BadV(30))));
}

#[test]
fn header_and_block_round_trip() {
    let mut chain = new_chain();
    let genesis = chain.genesis_hash();
    let t = transfer(ALICE, 0, addr(BOB), 5);
    let block = build(&mut chain, genesis, &[t], 10);
    let enc = block.encode();
    assert_eq!(SideBlock::decode(&enc).unwrap(), block);
    assert_eq!(SideHeader::decode(&block.header.encode()).unwrap(), block.header);
    // The genesis header (no merge-mining fields) round-trips too.
    let g = chain.header(&genesis).unwrap().clone();
    assert_eq!(SideHeader::decode(&g.encode()).unwrap(), g);
    assert_eq!(g.hash(), genesis);
    // The hash for merged mining ignores the merge-mining fields; the block
    // hash does not.
    let mut other = block.header.clone();
    other.merge_mining = Some(mm_proof(&[9; 32]));
    assert_eq!(other.hash_for_merged_mining(), block.header.hash_for_merged_mining());
    assert_ne!(other.hash(), block.header.hash());
}

#[test]
fn receipt_round_trip() {
    let r = Receipt {
        status: true,
        cumulative_gas_used: 50_000,
        gas_used: 29_000,
        logs: vec![Log { address: [7; 20], topics: vec![[1; 32], [2; 32]], data: vec![0, 1, 2] }],
    };
    assert_eq!(Receipt::decode(&r.encode()).unwrap(), r);
    let failed = Receipt { status: false, cumulative_gas_used: 1, gas_used: 1, logs: vec![] };
    assert_eq!(Receipt::decode(&failed.encode()).unwrap(), failed);
}

fn arb_tx() -> impl Strategy<Value = UnsignedTx> {
    (
        any::<u64>(),
        any::<u128>(),
        any::<u64>(),
        proptest::option::of(any::<[u8; 20]>()),
        any::<u128>(),
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::option::of(0u64..1_000_000),
    )
        .prop_map(|(nonce, gas_price, gas_limit, to, value, data, chain_id)| UnsignedTx {
            nonce,
            gas_price,
            gas_limit,
            to,
            value,
            data,
            chain_id,
        })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn tx_round_trip_and_recovery(tx in arb_tx(), seed in 1u8..=0xfe) {
        let signed = tx.clone().sign(&key(seed));
        let decoded = SignedTx::decode(&signed.encode()).unwrap();
        prop_assert_eq!(&decoded, &signed);
        prop_assert_eq!(&decoded.tx, &tx);
        prop_assert_eq!(decoded.recover_sender().unwrap(), addr(seed));
    }

    #[test]
    fn decoders_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..400)) {
        let _ = SignedTx::decode(&bytes);
        let _ = SideHeader::decode(&bytes);
        let _ = SideBlock::decode(&bytes);
        let _ = Receipt::decode(&bytes);
        let _ = MerkleProof::decode(&bytes);
        let _ = fika_side::rlp::decode_exact(&bytes);
    }

    #[test]
    fn mutated_encodings_never_panic(
        tx in arb_tx(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<prop::sample::Index>(),
    ) {
        let mut enc = tx.sign(&key(3)).encode();
        for (i, b) in flips {
            let i = i.index(enc.len());
            enc[i] ^= b;
        }
        if let Ok(t) = SignedTx::decode(&enc) {
            // Whatever decodes re-encodes to the same bytes (canonical).
            prop_assert_eq!(t.encode(), enc.clone());
            let _ = t.recover_sender();
        }
        let cut = cut.index(enc.len() + 1);
        let _ = SignedTx::decode(&enc[..cut]);
    }

    #[test]
    fn mutated_blocks_never_panic(
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let mut chain = new_chain();
        let g = chain.genesis_hash();
        let block = build(&mut chain, g, &[transfer(ALICE, 0, addr(BOB), 1)], 10);
        let mut enc = block.encode();
        for (i, b) in flips {
            let i = i.index(enc.len());
            enc[i] ^= b;
        }
        if let Ok(b) = SideBlock::decode(&enc) {
            prop_assert_eq!(b.encode(), enc.clone());
            // A hostile block never panics the chain, and only the genuine
            // sidechain content connects. (In simulated PoW the Bitcoin
            // header's version, time, bits and nonce are unconstrained, so a
            // variant differing only there is a valid sibling block.)
            let mut node = new_chain();
            if let Ok(out) = node.accept_block(b.clone()) {
                prop_assert!(
                    out.status != fika_side::BlockStatus::Connected
                        || (b.header.hash_for_merged_mining() == block.header.hash_for_merged_mining()
                            && b.transactions == block.transactions)
                );
            }
        }
    }
}

#[test]
fn value_above_128_bits_does_not_decode() {
    use fika_side::rlp;
    let mut payload = Vec::new();
    rlp::encode_u64(&mut payload, 0); // nonce
    rlp::encode_u64(&mut payload, 1); // gas price
    rlp::encode_u64(&mut payload, 21_000); // gas limit
    rlp::encode_bytes(&mut payload, &[0x35; 20]); // to
    let mut value = vec![0x01];
    value.extend_from_slice(&[0u8; 16]); // 2^128
    rlp::encode_bytes(&mut payload, &value);
    rlp::encode_bytes(&mut payload, &[]); // data
    rlp::encode_u64(&mut payload, 101); // v for chain 33
    rlp::encode_bytes(&mut payload, &[1; 32]);
    rlp::encode_bytes(&mut payload, &[1; 32]);
    let enc = rlp::list(&payload);
    assert!(matches!(
        SignedTx::decode(&enc),
        Err(TxError::Rlp(fika_side::rlp::RlpError::IntegerOverflow { len: 17, max: 16 }))
    ));
    // The same with a 16-byte value decodes.
    let mut payload2 = Vec::new();
    rlp::encode_u64(&mut payload2, 0);
    rlp::encode_u64(&mut payload2, 1);
    rlp::encode_u64(&mut payload2, 21_000);
    rlp::encode_bytes(&mut payload2, &[0x35; 20]);
    rlp::encode_u128(&mut payload2, u128::MAX);
    rlp::encode_bytes(&mut payload2, &[]);
    rlp::encode_u64(&mut payload2, 101);
    rlp::encode_bytes(&mut payload2, &[1; 32]);
    rlp::encode_bytes(&mut payload2, &[1; 32]);
    let t = SignedTx::decode(&rlp::list(&payload2)).unwrap();
    assert_eq!(t.tx.value, u128::MAX);
    assert_eq!(t.chain_id(), Some(33));
    let _ = U256::ZERO;
}
