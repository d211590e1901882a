//! Scenario files are untrusted input: loading any text must return a
//! scenario or errors, never panic; a loaded scenario must serialize and
//! load again to the same scenario.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(s) = fika_scenario::load_str(text, "fuzz") {
        let again = fika_scenario::load_str(&fika_scenario::to_toml(&s), "resolved")
            .expect("a resolved scenario loads again");
        assert_eq!(s, again);
    }
});
