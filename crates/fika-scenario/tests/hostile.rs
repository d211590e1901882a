//! Hostile scenario text: loading never panics, and what loads survives a
//! round trip through the resolved form.

use proptest::prelude::*;

const VALID: &str = r#"
duration = "10m"
protocol = "gossip"
[topology]
kind = "ring"
[[nodes]]
count = 5
[gossip]
floods = 2
"#;

proptest! {
    #[test]
    fn arbitrary_text_never_panics(text in "\\PC{0,400}") {
        let _ = fika_scenario::load_str(&text, "fuzz");
    }

    #[test]
    fn mutated_valid_scenarios_never_panic(pos in 0usize..200, junk in "[\\[\\]=\"a-z0-9.,{} \n-]{0,12}") {
        let mut text = VALID.to_owned();
        let p = pos.min(text.len());
        if text.is_char_boundary(p) {
            text.insert_str(p, &junk);
        }
        if let Ok(s) = fika_scenario::load_str(&text, "fuzz") {
            let again = fika_scenario::load_str(&fika_scenario::to_toml(&s), "resolved");
            prop_assert_eq!(Some(s), again.ok());
        }
    }
}

#[test]
fn the_valid_base_loads() {
    assert!(fika_scenario::load_str(VALID, "base").is_ok());
}
