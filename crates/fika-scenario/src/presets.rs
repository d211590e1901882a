//! Named presets: tables of defaults a scenario section refers to by name
//! (`preset = "simblock-2019"`) and overrides field by field. They are data,
//! written in the same TOML as scenarios, so the resolved scenario shows
//! exactly what a preset contributed.

use toml::Table;

/// Network presets: `[network] preset = "…"`.
pub const NETWORK: &[(&str, &str)] = &[
    (
        "simblock-2019",
        r#"
latency = { model = "regions", spread_ms = 5.0 }
extra_latency_ms = 10.0
bandwidth = { model = "regions" }
processing_ms = 2.0
loss = 0.0
regions = "simblock-2019"
region_shares = "bitcoin-2019"
"#,
    ),
    (
        "simblock-2015",
        r#"
latency = { model = "regions", spread_ms = 5.0 }
extra_latency_ms = 10.0
bandwidth = { model = "regions" }
processing_ms = 2.0
loss = 0.0
regions = "simblock-2015"
region_shares = "bitcoin-2015"
"#,
    ),
    (
        "lan",
        r#"
latency = { model = "constant", ms = 0.5 }
extra_latency_ms = 0.0
bandwidth = { model = "uniform", upload_bps = 1_000_000_000, download_bps = 1_000_000_000 }
processing_ms = 0.0
loss = 0.0
"#,
    ),
    (
        "wan",
        r#"
latency = { model = "uniform", min_ms = 20.0, max_ms = 200.0 }
extra_latency_ms = 0.0
bandwidth = { model = "uniform", upload_bps = 10_000_000, download_bps = 50_000_000 }
processing_ms = 0.0
loss = 0.0
"#,
    ),
];

/// Bitcoin presets: `[bitcoin] preset = "…"`: a chain and relay settings.
/// The SimBlock-derived ones carry SimBlock's block sizes as modelled
/// content (`block_fill_bytes`) and relay without compact blocks.
pub const BITCOIN: &[(&str, &str)] = &[
    (
        "bitcoin-mainnet",
        r#"
chain = "bitcoin-mainnet"
[relay]
compact_blocks = true
block_fill_bytes = 1_000_000
"#,
    ),
    (
        "bitcoin-2015",
        r#"
chain = "bitcoin-mainnet"
[relay]
compact_blocks = false
block_fill_bytes = 535_000
"#,
    ),
    (
        "litecoin",
        r#"
chain = "litecoin"
[relay]
compact_blocks = false
block_fill_bytes = 6_110
"#,
    ),
    (
        "dogecoin",
        r#"
chain = "dogecoin"
[relay]
compact_blocks = false
block_fill_bytes = 8_000
"#,
    ),
    (
        "regtest-fast",
        r#"
chain = "regtest-fast"
[relay]
compact_blocks = true
block_fill_bytes = 0
tx_trickle_s = 0.5
"#,
    ),
];

/// Looks a preset up in `table`; returns its parsed TOML.
pub fn lookup(table: &[(&str, &str)], name: &str) -> Option<Table> {
    let text = table.iter().find(|(n, _)| *n == name)?.1;
    // Presets are compiled in and covered by tests; a parse failure is a bug.
    toml::from_str(text).ok()
}

/// The names in a preset table, for error messages.
pub fn names(table: &[(&str, &str)]) -> String {
    table.iter().map(|(n, _)| format!("\"{n}\"")).collect::<Vec<_>>().join(", ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_preset_parses() {
        for (name, text) in NETWORK.iter().chain(BITCOIN) {
            assert!(toml::from_str::<Table>(text).is_ok(), "preset {name}");
            assert!(lookup(NETWORK, name).is_some() || lookup(BITCOIN, name).is_some());
        }
    }
}
