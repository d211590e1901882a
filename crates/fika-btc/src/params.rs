//! Chain parameters: the consensus constants of a Bitcoin-like chain.
//!
//! A [`ChainParams`] value is plain data (serde, `deny_unknown_fields`), so a
//! scenario can start from a named preset ([`ChainParams::by_name`]) and
//! override any field ([`ChainParams::with_overrides`]). Nothing here needs a
//! recompile to change.

use bitcoin::pow::CompactTarget;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Satoshis per coin.
pub const COIN: u64 = 100_000_000;

/// How proof of work is treated (DESIGN principle 4).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PowMode {
    /// Headers carry real `bits` and chain work, but no nonce is searched:
    /// the `hash <= target` check is skipped, while `bits` must still equal
    /// the expected next work.
    Simulated,
    /// Nonces are ground until `hash <= target`; the check is enforced.
    Real,
}

/// Script verification flags: the soft forks in force plus optional policy
/// (standardness) rules.
///
/// The consensus flags map one to one onto Bitcoin Core's
/// `SCRIPT_VERIFY_*` bits understood by libbitcoinconsensus. The policy flags
/// are checked by fika itself (see [`crate::validate::check_policy_scripts`]);
/// Bitcoin Core applies them to relay and mempool acceptance only, never to
/// block validity.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScriptFlags {
    /// BIP16 pay-to-script-hash.
    pub p2sh: bool,
    /// BIP66 strict DER signatures.
    pub dersig: bool,
    /// BIP147 CHECKMULTISIG dummy must be empty.
    pub nulldummy: bool,
    /// BIP65 OP_CHECKLOCKTIMEVERIFY.
    pub checklocktimeverify: bool,
    /// BIP112 OP_CHECKSEQUENCEVERIFY (also turns on BIP68 sequence locks).
    pub checksequenceverify: bool,
    /// BIP141/143 segregated witness.
    pub witness: bool,
    /// Policy: no OP_CODESEPARATOR in legacy scripts and no signature that
    /// FindAndDelete would remove from the script code.
    pub const_scriptcode: bool,
    /// Policy: refuse to spend witness programs of unknown (upgradable) versions.
    pub discourage_upgradable_witness_program: bool,
    /// Policy: refuse SIGHASH_SINGLE signatures on inputs without a
    /// corresponding output.
    pub secure_sighash_single: bool,
}

impl ScriptFlags {
    /// Core's `SCRIPT_VERIFY_P2SH` bit.
    pub const VERIFY_P2SH: u32 = 1 << 0;
    /// Core's `SCRIPT_VERIFY_DERSIG` bit.
    pub const VERIFY_DERSIG: u32 = 1 << 2;
    /// Core's `SCRIPT_VERIFY_NULLDUMMY` bit.
    pub const VERIFY_NULLDUMMY: u32 = 1 << 4;
    /// Core's `SCRIPT_VERIFY_CHECKLOCKTIMEVERIFY` bit.
    pub const VERIFY_CHECKLOCKTIMEVERIFY: u32 = 1 << 9;
    /// Core's `SCRIPT_VERIFY_CHECKSEQUENCEVERIFY` bit.
    pub const VERIFY_CHECKSEQUENCEVERIFY: u32 = 1 << 10;
    /// Core's `SCRIPT_VERIFY_WITNESS` bit.
    pub const VERIFY_WITNESS: u32 = 1 << 11;

    /// No flags at all (pre-BIP16 rules).
    pub const NONE: ScriptFlags = ScriptFlags {
        p2sh: false,
        dersig: false,
        nulldummy: false,
        checklocktimeverify: false,
        checksequenceverify: false,
        witness: false,
        const_scriptcode: false,
        discourage_upgradable_witness_program: false,
        secure_sighash_single: false,
    };

    /// All consensus soft forks up to segwit (P2SH, DERSIG, NULLDUMMY, CLTV,
    /// CSV, WITNESS), no policy rules.
    pub const ALL_CONSENSUS: ScriptFlags = ScriptFlags {
        p2sh: true,
        dersig: true,
        nulldummy: true,
        checklocktimeverify: true,
        checksequenceverify: true,
        witness: true,
        const_scriptcode: false,
        discourage_upgradable_witness_program: false,
        secure_sighash_single: false,
    };

    /// The same flags with the policy rules turned on as well, as a mempool
    /// would use them.
    pub fn with_policy(self) -> ScriptFlags {
        ScriptFlags {
            const_scriptcode: true,
            discourage_upgradable_witness_program: true,
            secure_sighash_single: true,
            ..self
        }
    }

    /// The consensus flags as libbitcoinconsensus bits.
    pub fn consensus_bits(&self) -> u32 {
        let mut bits = 0;
        if self.p2sh {
            bits |= Self::VERIFY_P2SH;
        }
        if self.dersig {
            bits |= Self::VERIFY_DERSIG;
        }
        if self.nulldummy {
            bits |= Self::VERIFY_NULLDUMMY;
        }
        if self.checklocktimeverify {
            bits |= Self::VERIFY_CHECKLOCKTIMEVERIFY;
        }
        if self.checksequenceverify {
            bits |= Self::VERIFY_CHECKSEQUENCEVERIFY;
        }
        if self.witness {
            bits |= Self::VERIFY_WITNESS;
        }
        bits
    }

    /// Whether any policy-only rule is on.
    pub fn has_policy(&self) -> bool {
        self.const_scriptcode || self.discourage_upgradable_witness_program || self.secure_sighash_single
    }
}

impl Default for ScriptFlags {
    fn default() -> Self {
        ScriptFlags::ALL_CONSENSUS
    }
}

/// Which genesis block a chain starts from.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum GenesisSpec {
    /// The real Bitcoin mainnet genesis block
    /// (`000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f`).
    BitcoinMainnet,
    /// The real Bitcoin regtest genesis block (bits `0x207fffff`).
    BitcoinRegtest,
    /// A synthetic, deterministic genesis: Bitcoin's genesis coinbase under a
    /// header with this time and the params' `pow_limit_bits`.
    Synthetic {
        /// Header time, seconds since the Unix epoch.
        time: u32,
    },
}

/// The consensus constants of a Bitcoin-like chain.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainParams {
    /// Preset name, for logs and reports.
    pub name: String,
    /// Block subsidy at height 0, in satoshis.
    pub initial_subsidy_sat: u64,
    /// Blocks between subsidy halvings (0 = never halve).
    pub halving_interval: u32,
    /// Largest amount of money (per output and per transaction), in satoshis.
    pub max_money_sat: u64,
    /// Blocks between difficulty retargets.
    pub retarget_interval: u32,
    /// Intended duration of one retarget interval, in seconds.
    pub target_timespan_secs: u64,
    /// Easiest allowed target, as compact bits.
    pub pow_limit_bits: u32,
    /// Whether the difficulty is retargeted at all (regtest: no).
    pub retargeting: bool,
    /// Confirmations before a coinbase output may be spent.
    pub coinbase_maturity: u32,
    /// Largest block weight, in weight units.
    pub max_block_weight: u64,
    /// Largest legacy signature-operation cost per block.
    pub max_block_sigops_cost: u64,
    /// Number of previous blocks whose median time is the median time past.
    pub mtp_window: usize,
    /// How far in the future (relative to the validator's clock) a block's
    /// time may lie, in seconds.
    pub max_future_block_time_secs: u64,
    /// Intended time between blocks, in seconds.
    pub block_interval_secs: u64,
    /// Whether proof of work is simulated or real.
    pub pow_mode: PowMode,
    /// Script verification flags of the active soft forks.
    pub script_flags: ScriptFlags,
    /// The genesis block.
    pub genesis: GenesisSpec,
}

/// An error building chain parameters.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum ParamsError {
    /// The preset name is not known.
    #[error("unknown chain preset `{0}` (known: {known})", known = ChainParams::PRESETS.join(", "))]
    UnknownPreset(String),
    /// The overrides are not a table/object.
    #[error("chain parameter overrides must be a table, got {0}")]
    NotATable(String),
    /// A field is unknown or has the wrong type.
    #[error("bad chain parameters: {0}")]
    Invalid(#[from] serde_json::Error),
    /// A value is out of its allowed range.
    #[error("bad chain parameter `{field}`: {reason}")]
    OutOfRange {
        /// The offending field.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
}

impl ChainParams {
    /// The names [`ChainParams::by_name`] understands.
    pub const PRESETS: [&'static str; 4] = ["bitcoin-mainnet", "regtest-fast", "litecoin", "dogecoin"];

    /// Bitcoin mainnet constants (with simulated PoW).
    pub fn mainnet() -> Self {
        ChainParams {
            name: "bitcoin-mainnet".into(),
            initial_subsidy_sat: 50 * COIN,
            halving_interval: 210_000,
            max_money_sat: 21_000_000 * COIN,
            retarget_interval: 2016,
            target_timespan_secs: 14 * 24 * 60 * 60,
            pow_limit_bits: 0x1d00_ffff,
            retargeting: true,
            coinbase_maturity: 100,
            max_block_weight: 4_000_000,
            max_block_sigops_cost: 80_000,
            mtp_window: 11,
            max_future_block_time_secs: 2 * 60 * 60,
            block_interval_secs: 600,
            pow_mode: PowMode::Simulated,
            script_flags: ScriptFlags::ALL_CONSENSUS,
            genesis: GenesisSpec::BitcoinMainnet,
        }
    }

    /// A fast regtest-like chain: trivial `pow_limit` (`0x207fffff`), no
    /// retargeting, 10 s blocks, halving every 150 blocks like regtest, a
    /// synthetic genesis at 2023-11-14T22:13:20Z (Unix time 1_700_000_000).
    pub fn regtest_fast() -> Self {
        ChainParams {
            name: "regtest-fast".into(),
            halving_interval: 150,
            retarget_interval: 2016,
            target_timespan_secs: 2016 * 10,
            pow_limit_bits: 0x207f_ffff,
            retargeting: false,
            block_interval_secs: 10,
            genesis: GenesisSpec::Synthetic { time: 1_700_000_000 },
            ..Self::mainnet()
        }
    }

    /// Litecoin-like constants: 2.5 min blocks, halving every 840 000 blocks,
    /// 84 M coins, retarget every 2016 blocks over 3.5 days. (PoW stays
    /// SHA-256d; scrypt is not modelled.)
    pub fn litecoin() -> Self {
        ChainParams {
            name: "litecoin".into(),
            halving_interval: 840_000,
            max_money_sat: 84_000_000 * COIN,
            target_timespan_secs: 2016 * 150,
            pow_limit_bits: 0x1e0f_ffff,
            block_interval_secs: 150,
            genesis: GenesisSpec::Synthetic { time: 1_317_972_665 },
            ..Self::mainnet()
        }
    }

    /// Dogecoin-like constants: 1 min blocks, a flat 10 000 coin subsidy
    /// (as after block 600 000), Dogecoin's original 4-hour retarget (240
    /// blocks; DigiShield is not modelled), maturity 240, no segwit.
    pub fn dogecoin() -> Self {
        ChainParams {
            name: "dogecoin".into(),
            initial_subsidy_sat: 10_000 * COIN,
            halving_interval: 0,
            max_money_sat: 10_000_000_000 * COIN,
            retarget_interval: 240,
            target_timespan_secs: 240 * 60,
            pow_limit_bits: 0x1e0f_ffff,
            coinbase_maturity: 240,
            block_interval_secs: 60,
            script_flags: ScriptFlags { witness: false, ..ScriptFlags::ALL_CONSENSUS },
            genesis: GenesisSpec::Synthetic { time: 1_386_325_540 },
            ..Self::mainnet()
        }
    }

    /// A preset by name: `bitcoin-mainnet` (also `mainnet`, `bitcoin`),
    /// `regtest-fast` (also `regtest`), `litecoin`, `dogecoin`.
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "bitcoin-mainnet" | "mainnet" | "bitcoin" => Some(Self::mainnet()),
            "regtest-fast" | "regtest" => Some(Self::regtest_fast()),
            "litecoin" | "litecoin-mainnet" => Some(Self::litecoin()),
            "dogecoin" | "dogecoin-mainnet" => Some(Self::dogecoin()),
            _ => None,
        }
    }

    /// These params with some fields replaced by the (JSON) object
    /// `overrides`, e.g. `{"block_interval_secs": 30}`. Unknown fields and
    /// wrong types are errors naming the field.
    pub fn with_overrides(&self, overrides: &serde_json::Value) -> Result<Self, ParamsError> {
        if !overrides.is_object() {
            return Err(ParamsError::NotATable(overrides.to_string()));
        }
        let mut base = serde_json::to_value(self)?;
        merge(&mut base, overrides);
        let params: ChainParams = serde_json::from_value(base)?;
        params.check()?;
        Ok(params)
    }

    /// Checks the values for internal consistency.
    pub fn check(&self) -> Result<(), ParamsError> {
        let oor = |field, reason: &str| Err(ParamsError::OutOfRange { field, reason: reason.into() });
        if self.retarget_interval < 2 {
            return oor("retarget_interval", "must be at least 2 (Core measures interval - 1 block times)");
        }
        if self.target_timespan_secs == 0 {
            return oor("target_timespan_secs", "must be at least 1");
        }
        if self.mtp_window == 0 {
            return oor("mtp_window", "must be at least 1");
        }
        if crate::pow::decode_compact(self.pow_limit_bits).is_err() {
            return oor("pow_limit_bits", "must be a valid, positive compact target");
        }
        if self.initial_subsidy_sat > self.max_money_sat {
            return oor("initial_subsidy_sat", "must not exceed max_money_sat");
        }
        Ok(())
    }

    /// The pow limit as a [`CompactTarget`].
    pub fn pow_limit(&self) -> CompactTarget {
        CompactTarget::from_consensus(self.pow_limit_bits)
    }

    /// The block subsidy at `height`: `initial_subsidy >> (height / halving_interval)`.
    pub fn subsidy(&self, height: u32) -> bitcoin::Amount {
        let halvings = height.checked_div(self.halving_interval).unwrap_or(0);
        if halvings >= 64 {
            return bitcoin::Amount::ZERO;
        }
        bitcoin::Amount::from_sat(self.initial_subsidy_sat >> halvings)
    }
}

/// Merges `over` into `base`: objects field by field (recursively), other
/// values replace. An object carrying a `kind` tag (an enum such as
/// [`GenesisSpec`]) replaces the old value wholesale.
fn merge(base: &mut serde_json::Value, over: &serde_json::Value) {
    match (base, over) {
        (serde_json::Value::Object(b), serde_json::Value::Object(o)) if !o.contains_key("kind") => {
            for (key, value) in o {
                match b.get_mut(key) {
                    Some(slot) => merge(slot, value),
                    None => {
                        b.insert(key.clone(), value.clone());
                    }
                }
            }
        }
        (slot, value) => *slot = value.clone(),
    }
}

impl Default for ChainParams {
    fn default() -> Self {
        Self::regtest_fast()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn presets_round_trip_and_check() {
        for name in ChainParams::PRESETS {
            let p = ChainParams::by_name(name).unwrap();
            assert_eq!(p.name, name);
            p.check().unwrap();
            let json = serde_json::to_string(&p).unwrap();
            let back: ChainParams = serde_json::from_str(&json).unwrap();
            assert_eq!(back, p);
        }
        assert!(ChainParams::by_name("nope").is_none());
    }

    #[test]
    fn overrides_replace_fields_and_reject_unknown() {
        let p = ChainParams::regtest_fast()
            .with_overrides(&serde_json::json!({"block_interval_secs": 30, "pow_mode": "real"}))
            .unwrap();
        assert_eq!(p.block_interval_secs, 30);
        assert_eq!(p.pow_mode, PowMode::Real);
        let err =
            ChainParams::regtest_fast().with_overrides(&serde_json::json!({"blok_interval": 1})).unwrap_err();
        assert!(err.to_string().contains("blok_interval"), "{err}");
        // Nested tables merge field by field; tagged enums replace.
        let p = ChainParams::dogecoin()
            .with_overrides(&serde_json::json!({
                "script_flags": {"nulldummy": false},
                "genesis": {"kind": "synthetic", "time": 5}
            }))
            .unwrap();
        assert!(!p.script_flags.witness && !p.script_flags.nulldummy && p.script_flags.p2sh);
        assert_eq!(p.genesis, GenesisSpec::Synthetic { time: 5 });
        let p = ChainParams::regtest_fast()
            .with_overrides(&serde_json::json!({"genesis": {"kind": "bitcoin_mainnet"}}))
            .unwrap();
        assert_eq!(p.genesis, GenesisSpec::BitcoinMainnet);
        let err = ChainParams::regtest_fast()
            .with_overrides(&serde_json::json!({"script_flags": {"taproot": true}}))
            .unwrap_err();
        assert!(err.to_string().contains("taproot"), "{err}");
        let err = ChainParams::regtest_fast()
            .with_overrides(&serde_json::json!({"retarget_interval": 0}))
            .unwrap_err();
        assert!(err.to_string().contains("retarget_interval"), "{err}");
    }

    #[test]
    fn subsidy_halves() {
        let p = ChainParams::mainnet();
        assert_eq!(p.subsidy(0).to_sat(), 50 * COIN);
        assert_eq!(p.subsidy(209_999).to_sat(), 50 * COIN);
        assert_eq!(p.subsidy(210_000).to_sat(), 25 * COIN);
        assert_eq!(p.subsidy(210_000 * 64).to_sat(), 0);
        assert_eq!(ChainParams::dogecoin().subsidy(5_000_000).to_sat(), 10_000 * COIN);
    }

    #[test]
    fn consensus_bits_match_core() {
        assert_eq!(ScriptFlags::ALL_CONSENSUS.consensus_bits(), 0b1110_0001_0101);
        assert_eq!(ScriptFlags::NONE.consensus_bits(), 0);
    }
}
