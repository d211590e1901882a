//! Blocks from the wire: decoding and the context-free block checks must
//! never panic.
#![no_main]

use bitcoin::consensus::deserialize;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(block) = deserialize::<bitcoin::Block>(data) {
        let _ = fika_btc::validate::check_block(&block, &fika_btc::ChainParams::regtest_fast());
    }
});
