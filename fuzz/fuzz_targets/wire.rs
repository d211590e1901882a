//! Emulation frames from the network: decoding never panics, and every
//! decoded frame re-encodes to bytes that decode to the same frame.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| fika_emu::wire::fuzz_decode(data));
