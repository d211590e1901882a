//! The Bridge as a precompile: ABI calldata in, return data, logs and
//! credits out; reverts leave the state untouched.

#![allow(clippy::unwrap_used)]

mod common;

use bitcoin::consensus::serialize;
use fika_peg::abi::{
    BridgeCall, PEGIN_BTC_SIGNATURE, encode_call, event_topic, word_hash, word_i64, word_u128,
};
use fika_peg::side::sat_to_wei;
use fika_peg::{BridgeError, PegParams};

use common::{Lock, User, World};

const BTC: u64 = 100_000_000;

#[track_caller]
fn read_int(output: &[u8]) -> u128 {
    assert_eq!(output.len(), 32, "one int256 word");
    let mut b = [0u8; 16];
    b.copy_from_slice(&output[16..]);
    assert!(output[..16].iter().all(|x| *x == 0));
    u128::from_be_bytes(b)
}

#[track_caller]
fn read_bytes(output: &[u8]) -> Vec<u8> {
    assert_eq!(read_int(&output[..32]), 32, "offset word");
    let len = read_int(&output[32..64]) as usize;
    assert_eq!(output.len(), 64 + len.div_ceil(32) * 32, "padded");
    output[64..64 + len].to_vec()
}

#[test]
fn a_pegin_through_calldata_logs_pegin_btc_and_credits_the_receiver() {
    let mut w = World::new(PegParams::rootstock_mainnet());
    let user = User::new(&w.secp, 1);
    let tx = w.pegin(&user, Lock::P2pkh, vec![w.to_fed(3 * BTC)]);
    w.mine();
    let (height, block) = w.height_of_tx(tx.compute_txid());
    while w.tip_height() < height + 99 {
        w.mine();
    }
    // Headers through calldata, as a pegnatory's transaction would send them.
    let headers = w.best_headers(1, w.tip_height()).iter().map(serialize).collect();
    let call = encode_call(&BridgeCall::ReceiveHeaders { headers });
    let stranger = User::new(&w.secp, 99).side_address();
    let digest = w.bridge.digest();
    assert!(matches!(w.bridge.call(stranger, 0, &call), Err(BridgeError::Unauthorized { .. })));
    assert_eq!(w.bridge.digest(), digest, "a reverted call changes nothing");
    let out = w.bridge.call(w.pegnatory(), 0, &call).unwrap();
    assert!(out.output.is_empty() && out.logs.is_empty());
    let best =
        w.bridge.call(stranger, 0, &encode_call(&BridgeCall::GetBtcBlockchainBestChainHeight)).unwrap();
    assert_eq!(read_int(&best.output), u128::from(w.tip_height()));

    // Registration by anyone (public since RSKIP199).
    let call = encode_call(&BridgeCall::RegisterBtcTransaction {
        tx: serialize(&tx),
        height: i64::from(height),
        pmt: World::pmt(&block, tx.compute_txid()),
    });
    let out = w.bridge.call(stranger, 0, &call).unwrap();
    assert_eq!(out.credits, vec![(user.side_address(), sat_to_wei(3 * BTC))]);
    assert_eq!(out.logs.len(), 1);
    let log = &out.logs[0];
    assert_eq!(
        log.topics,
        vec![event_topic(PEGIN_BTC_SIGNATURE), user.side_address().to_word(), word_hash(&tx.compute_txid())]
    );
    // btcTxHash in display order, as explorers show the txid.
    assert_eq!(hex::encode(log.topics[2]), tx.compute_txid().to_string());
    assert_eq!(log.data, [word_u128(u128::from(3 * BTC)), word_i64(0)].concat());
    w.assert_conservation();

    // Registering again succeeds as a call but does nothing (Rootstock logs
    // a warning and returns).
    let digest = w.bridge.digest();
    let again = w.bridge.call(stranger, 0, &call).unwrap();
    assert!(again.logs.is_empty() && again.credits.is_empty());
    assert_eq!(w.bridge.digest(), digest);
    // A negative height: no effect either.
    let neg =
        encode_call(&BridgeCall::RegisterBtcTransaction { tx: serialize(&tx), height: -1, pmt: vec![] });
    assert!(w.bridge.call(stranger, 0, &neg).unwrap().logs.is_empty());
}

#[test]
fn getters_return_rootstock_values() {
    let mut w = World::new(PegParams::rootstock_mainnet());
    w.sync_bridge();
    let anyone = User::new(&w.secp, 5).side_address();
    let mut bridge = w.bridge.clone();
    let mut get = |call: BridgeCall| bridge.call(anyone, 0, &encode_call(&call)).unwrap().output;
    assert_eq!(read_int(&get(BridgeCall::GetFederationSize)), 9);
    assert_eq!(read_int(&get(BridgeCall::GetFederationThreshold)), 5);
    assert_eq!(read_int(&get(BridgeCall::GetMinimumLockTxValue)), 500_000);
    assert_eq!(read_int(&get(BridgeCall::GetLockingCap)), 300 * BTC as u128);
    assert_eq!(read_int(&get(BridgeCall::GetFeePerKb)), 500_000);
    let addr = String::from_utf8(read_bytes(&get(BridgeCall::GetFederationAddress))).unwrap();
    assert_eq!(addr, w.fed.address(fika_peg::BtcNetwork::Bitcoin).to_string());
    assert!(addr.starts_with('3'));
    let at0 = read_bytes(&get(BridgeCall::GetBtcBlockchainBlockHashAtDepth { depth: 0 }));
    assert_eq!(at0, word_hash(&w.btc.tip_hash()).to_vec());
    let at5 = read_bytes(&get(BridgeCall::GetBtcBlockchainBlockHashAtDepth { depth: 5 }));
    let h = w.btc.hash_at_height(w.tip_height() - 5).unwrap();
    assert_eq!(at5, word_hash(&h).to_vec());
    let deepest = i64::from(w.tip_height());
    let genesis = read_bytes(&get(BridgeCall::GetBtcBlockchainBlockHashAtDepth { depth: deepest }));
    assert_eq!(genesis, word_hash(&w.btc.genesis_hash()).to_vec());
    for bad in [-1, deepest + 1, i64::MAX] {
        let r = w.bridge.call(
            anyone,
            0,
            &encode_call(&BridgeCall::GetBtcBlockchainBlockHashAtDepth { depth: bad }),
        );
        assert!(matches!(r, Err(BridgeError::DepthOutOfRange { .. })), "{bad}: {r:?}");
    }
}

#[test]
fn malformed_calls_revert() {
    let mut w = World::new(PegParams::rootstock_mainnet());
    let p = w.pegnatory();
    let digest = w.bridge.digest();
    assert!(matches!(w.bridge.call(p, 0, &[0xde, 0xad]), Err(BridgeError::Abi(_))));
    assert!(matches!(w.bridge.call(p, 0, &[0xde, 0xad, 0xbe, 0xef]), Err(BridgeError::Abi(_))));
    assert!(matches!(w.bridge.call(p, 5, &[]), Err(BridgeError::NotImplemented("releaseBtc"))));
    let size = encode_call(&BridgeCall::GetFederationSize);
    assert!(matches!(w.bridge.call(p, 1, &size), Err(BridgeError::NonPayable { .. })));
    // A 79-byte header reverts the whole batch.
    let good = serialize(&w.best_headers(1, 1)[0]);
    let call = encode_call(&BridgeCall::ReceiveHeaders { headers: vec![good, vec![0; 79]] });
    assert!(matches!(w.bridge.call(p, 0, &call), Err(BridgeError::BadHeader { index: 1, .. })));
    // Truncated calldata (the decoder does not insist on the zero padding
    // after the last argument: 22 bytes of it may go).
    let reg =
        encode_call(&BridgeCall::RegisterBtcTransaction { tx: vec![1; 100], height: 5, pmt: vec![2; 10] });
    assert!(w.bridge.call(p, 0, &reg[..reg.len() - 22]).is_ok());
    for cut in [4, 36, 100, reg.len() - 23] {
        assert!(matches!(w.bridge.call(p, 0, &reg[..cut]), Err(BridgeError::Abi(_))), "cut {cut}");
    }
    assert_eq!(w.bridge.digest(), digest);
}

#[test]
fn bridge_state_is_send_and_sync() {
    fn assert_send_sync<T: Send + Sync + Clone>() {}
    assert_send_sync::<fika_peg::BridgeState>();
}

mod hostile {
    use super::*;
    use bitcoin::block::{Header, Version};
    use bitcoin::hashes::Hash;
    use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxMerkleNode, TxOut, Witness};
    use fika_btc::ChainParams;
    use fika_peg::{BridgeState, Checkpoint};
    use proptest::prelude::*;

    /// A Bridge whose view has 150 headers (no block data needed).
    fn bridge_with_headers() -> (BridgeState, fika_peg::SideAddress, Vec<Header>) {
        let secp = bitcoin::secp256k1::Secp256k1::new();
        let (fed, _, _) = common::federation_9(&secp, 10, fika_peg::ScriptForm::P2shP2wshErp);
        let params = ChainParams::regtest_fast();
        let cp = Checkpoint::genesis(&params).unwrap();
        let mut bridge = BridgeState::new(PegParams::rootstock_mainnet(), params, cp, fed.clone()).unwrap();
        let mut prev = cp.header;
        let mut headers = Vec::new();
        for i in 0..150u32 {
            let h = Header {
                version: Version::from_consensus(0x2000_0000),
                prev_blockhash: prev.block_hash(),
                merkle_root: TxMerkleNode::hash(&i.to_be_bytes()),
                time: prev.time + 10,
                bits: prev.bits,
                nonce: 0,
            };
            headers.push(h);
            prev = h;
        }
        let member = fika_peg::SideAddress::from_public_key(&fed.members()[0]);
        assert!(bridge.receive_headers(member, &headers).unwrap().rejected.is_empty());
        (bridge, member, headers)
    }

    fn script() -> impl Strategy<Value = ScriptBuf> {
        prop_oneof![
            proptest::collection::vec(any::<u8>(), 0..80).prop_map(ScriptBuf::from_bytes),
            proptest::collection::vec(any::<u8>(), 0..46).prop_map(|mut d| {
                let mut s = vec![0x6a, (d.len() + 4) as u8];
                s.extend_from_slice(b"RSKT");
                s.append(&mut d);
                ScriptBuf::from_bytes(s)
            }),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        #[test]
        fn registration_never_panics_on_hostile_bytes(
            tx in proptest::collection::vec(any::<u8>(), 0..300),
            pmt in proptest::collection::vec(any::<u8>(), 0..200),
            height in 0u32..200,
        ) {
            let (mut bridge, member, _) = bridge_with_headers();
            let digest = bridge.digest();
            prop_assert!(bridge.register_btc_transaction(member, &tx, height, &pmt).is_err());
            prop_assert_eq!(bridge.digest(), digest);
        }

        #[test]
        fn hostile_transactions_never_panic_and_never_credit_without_a_proof(
            script_sig in script(),
            witness in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..80), 0..4),
            outputs in proptest::collection::vec(script(), 1..4),
            pmt in proptest::collection::vec(any::<u8>(), 0..120),
            height in 0u32..151,
        ) {
            let (mut bridge, member, _) = bridge_with_headers();
            let tx = Transaction {
                version: bitcoin::transaction::Version::TWO,
                lock_time: bitcoin::absolute::LockTime::ZERO,
                input: vec![TxIn {
                    previous_output: OutPoint::new(bitcoin::Txid::hash(b"x"), 0),
                    script_sig,
                    sequence: Sequence::MAX,
                    witness: Witness::from_slice(&witness),
                }],
                output: outputs.into_iter().map(|s| TxOut { value: Amount::from_sat(600_000), script_pubkey: s }).collect(),
            };
            let _ = fika_peg::pegin::parse_sender(&tx);
            let _ = fika_peg::pegin::parse_pegin_instructions(&tx);
            let digest = bridge.digest();
            prop_assert!(bridge.register_btc_transaction(member, &serialize(&tx), height, &pmt).is_err());
            prop_assert_eq!(bridge.digest(), digest);
        }
    }
}
