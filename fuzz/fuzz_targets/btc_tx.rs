//! Transactions from the wire: decoding and the context-free checks must
//! never panic; what decodes re-encodes to the same bytes.
#![no_main]

use bitcoin::consensus::{deserialize, serialize};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(tx) = deserialize::<bitcoin::Transaction>(data) {
        assert_eq!(serialize(&tx), data);
        let _ = fika_btc::validate::check_transaction(&tx, &fika_btc::ChainParams::mainnet());
    }
});
