//! The PowPeg's parameters: every number of the peg as plain data.
//!
//! A [`PegParams`] value is serde data with `deny_unknown_fields`, so a
//! scenario starts from a named preset ([`PegParams::by_name`]) and overrides
//! any field ([`PegParams::with_overrides`]). The `rootstock-mainnet` preset
//! carries the values Rootstock's mainnet uses (see
//! `shared/reference/powpeg.md`).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Satoshis per bitcoin.
pub const SAT_PER_BTC: u64 = 100_000_000;

/// Which Bitcoin network the federation's addresses are rendered for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum BtcNetwork {
    /// Bitcoin mainnet (addresses `1…`, `3…`, `bc1…`).
    Bitcoin,
    /// Bitcoin testnet (addresses `m…`, `n…`, `2…`, `tb1…`).
    Testnet,
    /// Bitcoin signet (testnet prefixes).
    Signet,
    /// Bitcoin regtest (testnet base58 prefixes, `bcrt1…`).
    Regtest,
}

impl BtcNetwork {
    /// The `bitcoin` crate's network.
    pub fn network(self) -> bitcoin::Network {
        match self {
            BtcNetwork::Bitcoin => bitcoin::Network::Bitcoin,
            BtcNetwork::Testnet => bitcoin::Network::Testnet,
            BtcNetwork::Signet => bitcoin::Network::Signet,
            BtcNetwork::Regtest => bitcoin::Network::Regtest,
        }
    }
}

/// The numbers of the PowPeg (Rootstock's `BridgeConstants` and the
/// pegnatory node's timings).
///
/// Amounts are in satoshis; sidechain durations in sidechain blocks; Bitcoin
/// durations in Bitcoin blocks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PegParams {
    /// Preset name, for logs and reports.
    pub name: String,
    /// The Bitcoin network the federation addresses belong to.
    pub btc_network: BtcNetwork,
    /// Bitcoin confirmations a peg-in needs before it can be registered:
    /// `best_height − tx_height + 1 ≥ pegin_confirmations`.
    pub pegin_confirmations: u32,
    /// Smallest value, in satoshis, of every output a peg-in sends to a live
    /// federation (inclusive); below it the peg-in is rejected and not
    /// refunded.
    pub minimum_pegin_sat: u64,
    /// Smallest peg-out request, in satoshis (inclusive).
    pub minimum_pegout_sat: u64,
    /// Percentage of a peg-out's value that must survive the fee (Rootstock's
    /// `minimumPegoutValuePercentageToReceiveAfterFee`, 80).
    pub minimum_pegout_value_percentage_after_fee: u64,
    /// The locking cap at start, in satoshis: the most BTC the federation may
    /// hold through peg-ins.
    pub initial_locking_cap_sat: u64,
    /// A locking cap increase may at most multiply the current cap by this.
    pub locking_cap_increments_multiplier: u64,
    /// Fee per kilobyte for peg-out transactions at start, in satoshis.
    pub fee_per_kb_sat: u64,
    /// Largest fee per kilobyte the voters may set, in satoshis.
    pub max_fee_per_kb_sat: u64,
    /// Sidechain blocks between peg-out batches.
    pub pegout_batch_interval_blocks: u64,
    /// Sidechain confirmations of a peg-out (or refund) before it is signed.
    pub pegout_confirmations: u64,
    /// Largest peg-out transaction, in bytes; bigger batches are split.
    pub max_pegout_tx_size: u64,
    /// The emergency (ERP) branch's relative timelock, in Bitcoin blocks
    /// (1..=65,535).
    pub erp_csv: u16,
    /// Sidechain blocks between committing a new federation and its
    /// activation.
    pub federation_activation_delay_blocks: u64,
    /// Sidechain blocks in which a retiring federation's funds move to the
    /// new federation.
    pub migration_window_blocks: u64,
    /// During the migration window, a retiring federation's coins are
    /// migrated only while they hold more than this, in satoshis (rskj's
    /// `MINIMUM_FUNDS_TO_MIGRATE`, one cent of a bitcoin); after the window
    /// everything left is swept.
    #[serde(default = "default_minimum_funds_to_migrate")]
    pub minimum_funds_to_migrate_sat: u64,
    /// One pegnatory's turn, in seconds (the round-robin period is this times
    /// the federation size).
    pub pegnatory_turn_secs: u64,
    /// Bitcoin headers a pegnatory sends the Bridge per turn.
    pub max_headers_per_turn: u32,
    /// Peg-ins a pegnatory registers per turn.
    pub max_pegins_per_turn: u32,
    /// RBTC the Bridge holds at genesis (the fund model: 21M BTC), in
    /// satoshis.
    pub max_rbtc_sat: u64,
    /// Whether anyone may call `registerBtcTransaction` (Rootstock: since
    /// RSKIP199) or only federation members.
    pub register_btc_transaction_public: bool,
    /// Whether a native P2WPKH input 0 identifies a legacy peg-in's sender.
    /// Rootstock does not (its sender kinds are P2PKH, P2SH-P2WPKH, P2SH
    /// multisig, P2SH-P2WSH), so the mainnet preset says `false`. Note that a
    /// native P2WPKH sender's key is read from witness data, which the txid
    /// does not commit to.
    pub native_p2wpkh_sender: bool,
    /// When a peg-out's change output joins the federation's spendable
    /// UTXOs: `false` (Rootstock) when the peg-out transaction is registered
    /// back from Bitcoin (`registerBtcTransaction` with the usual
    /// confirmations and proof); `true` as soon as the Bridge releases the
    /// fully signed transaction (`release_btc`), so that the next peg-out may
    /// chain on the unconfirmed change.
    #[serde(default)]
    pub pegout_change_on_release: bool,
    /// The federation's members share `1 / federation_fee_divisor` of every
    /// sidechain block's fees (Rootstock's REMASC federation share: 100,
    /// i.e. 1 %); 0 for none.
    #[serde(default = "default_federation_fee_divisor")]
    pub federation_fee_divisor: u64,
}

fn default_federation_fee_divisor() -> u64 {
    100
}

fn default_minimum_funds_to_migrate() -> u64 {
    1_000_000
}

/// An error building peg parameters.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum PegParamsError {
    /// The preset name is not known.
    #[error("unknown peg preset `{0}` (known: {known})", known = PegParams::PRESETS.join(", "))]
    UnknownPreset(String),
    /// The overrides are not a table/object.
    #[error("peg parameter overrides must be a table, got {0}")]
    NotATable(String),
    /// A field is unknown or has the wrong type.
    #[error("bad peg parameters: {0}")]
    Invalid(#[from] serde_json::Error),
    /// A value is out of its allowed range.
    #[error("bad peg parameter `{field}`: {reason}")]
    OutOfRange {
        /// The offending field.
        field: &'static str,
        /// What was expected.
        reason: String,
    },
}

impl PegParams {
    /// The names [`PegParams::by_name`] understands.
    pub const PRESETS: [&'static str; 2] = ["rootstock-mainnet", "rootstock-regtest"];

    /// Rootstock mainnet's values.
    pub fn rootstock_mainnet() -> Self {
        PegParams {
            name: "rootstock-mainnet".into(),
            btc_network: BtcNetwork::Bitcoin,
            pegin_confirmations: 100,
            minimum_pegin_sat: 500_000,
            minimum_pegout_sat: 400_000,
            minimum_pegout_value_percentage_after_fee: 80,
            initial_locking_cap_sat: 300 * SAT_PER_BTC,
            locking_cap_increments_multiplier: 2,
            fee_per_kb_sat: 500_000,
            max_fee_per_kb_sat: 5_000_000,
            pegout_batch_interval_blocks: 360,
            pegout_confirmations: 4000,
            max_pegout_tx_size: 100_000,
            erp_csv: 52_560,
            federation_activation_delay_blocks: 40_320,
            migration_window_blocks: 10_585,
            minimum_funds_to_migrate_sat: default_minimum_funds_to_migrate(),
            pegnatory_turn_secs: 180,
            max_headers_per_turn: 25,
            max_pegins_per_turn: 40,
            max_rbtc_sat: 21_000_000 * SAT_PER_BTC,
            register_btc_transaction_public: true,
            native_p2wpkh_sender: false,
            pegout_change_on_release: false,
            federation_fee_divisor: default_federation_fee_divisor(),
        }
    }

    /// A fast preset for small scenarios and tests: mainnet rules with
    /// regtest addresses, 6 peg-in confirmations, 10 sidechain blocks of
    /// peg-out confirmations, a 20-block batching interval, a 10-block ERP
    /// delay, short federation-change windows, and native P2WPKH senders
    /// accepted.
    pub fn rootstock_regtest() -> Self {
        PegParams {
            name: "rootstock-regtest".into(),
            btc_network: BtcNetwork::Regtest,
            pegin_confirmations: 6,
            pegout_batch_interval_blocks: 20,
            pegout_confirmations: 10,
            erp_csv: 10,
            federation_activation_delay_blocks: 40,
            migration_window_blocks: 20,
            native_p2wpkh_sender: true,
            ..Self::rootstock_mainnet()
        }
    }

    /// A preset by name: `rootstock-mainnet` (also `rootstock`, `mainnet`),
    /// `rootstock-regtest` (also `regtest`).
    pub fn by_name(name: &str) -> Option<Self> {
        match name {
            "rootstock-mainnet" | "rootstock" | "mainnet" => Some(Self::rootstock_mainnet()),
            "rootstock-regtest" | "regtest" => Some(Self::rootstock_regtest()),
            _ => None,
        }
    }

    /// A preset by name, or an error naming the known presets.
    pub fn preset(name: &str) -> Result<Self, PegParamsError> {
        Self::by_name(name).ok_or_else(|| PegParamsError::UnknownPreset(name.to_owned()))
    }

    /// These params with some fields replaced by the (JSON) object
    /// `overrides`, e.g. `{"pegin_confirmations": 6}`. Unknown fields and
    /// wrong types are errors naming the field; the result is
    /// [`check`](Self::check)ed.
    pub fn with_overrides(&self, overrides: &serde_json::Value) -> Result<Self, PegParamsError> {
        let serde_json::Value::Object(over) = overrides else {
            return Err(PegParamsError::NotATable(overrides.to_string()));
        };
        let mut base = serde_json::to_value(self)?;
        if let serde_json::Value::Object(b) = &mut base {
            for (key, value) in over {
                b.insert(key.clone(), value.clone());
            }
        }
        let params: PegParams = serde_json::from_value(base)?;
        params.check()?;
        Ok(params)
    }

    /// Checks the values for internal consistency.
    pub fn check(&self) -> Result<(), PegParamsError> {
        let oor = |field, reason: &str| Err(PegParamsError::OutOfRange { field, reason: reason.into() });
        if self.pegin_confirmations == 0 {
            return oor("pegin_confirmations", "must be at least 1");
        }
        if self.erp_csv == 0 {
            return oor("erp_csv", "must be in 1..=65535");
        }
        if self.fee_per_kb_sat > self.max_fee_per_kb_sat {
            return oor("fee_per_kb_sat", "must not exceed max_fee_per_kb_sat");
        }
        if self.initial_locking_cap_sat > self.max_rbtc_sat {
            return oor("initial_locking_cap_sat", "must not exceed max_rbtc_sat");
        }
        if self.max_rbtc_sat > 21_000_000 * SAT_PER_BTC {
            return oor("max_rbtc_sat", "must not exceed 21,000,000 BTC");
        }
        if self.minimum_pegout_value_percentage_after_fee > 100 {
            return oor("minimum_pegout_value_percentage_after_fee", "must be a percentage (0..=100)");
        }
        if self.locking_cap_increments_multiplier == 0 {
            return oor("locking_cap_increments_multiplier", "must be at least 1");
        }
        if self.pegout_batch_interval_blocks == 0 {
            return oor("pegout_batch_interval_blocks", "must be at least 1");
        }
        if self.max_pegout_tx_size == 0 {
            return oor("max_pegout_tx_size", "must be at least 1");
        }
        if self.pegnatory_turn_secs == 0 {
            return oor("pegnatory_turn_secs", "must be at least 1");
        }
        Ok(())
    }
}

impl Default for PegParams {
    fn default() -> Self {
        Self::rootstock_mainnet()
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mainnet_preset_has_rootstock_values() {
        let p = PegParams::rootstock_mainnet();
        assert_eq!(p.pegin_confirmations, 100);
        assert_eq!(p.minimum_pegin_sat, 500_000);
        assert_eq!(p.minimum_pegout_sat, 400_000);
        assert_eq!(p.initial_locking_cap_sat, 300 * SAT_PER_BTC);
        assert_eq!(p.fee_per_kb_sat, 500_000);
        assert_eq!(p.max_fee_per_kb_sat, 5_000_000);
        assert_eq!(p.pegout_batch_interval_blocks, 360);
        assert_eq!(p.pegout_confirmations, 4000);
        assert_eq!(p.max_pegout_tx_size, 100_000);
        assert_eq!(p.erp_csv, 52_560);
        assert_eq!(p.federation_activation_delay_blocks, 40_320);
        assert_eq!(p.migration_window_blocks, 10_585);
        assert_eq!(p.pegnatory_turn_secs, 180);
        assert_eq!(p.max_rbtc_sat, 2_100_000_000_000_000);
        p.check().unwrap();
    }

    #[test]
    fn presets_round_trip_and_overrides_name_bad_fields() {
        for name in PegParams::PRESETS {
            let p = PegParams::by_name(name).unwrap();
            assert_eq!(p.name, name);
            p.check().unwrap();
            let back: PegParams = serde_json::from_str(&serde_json::to_string(&p).unwrap()).unwrap();
            assert_eq!(back, p);
        }
        assert!(matches!(PegParams::preset("nope"), Err(PegParamsError::UnknownPreset(_))));
        let p = PegParams::rootstock_mainnet()
            .with_overrides(&serde_json::json!({"pegin_confirmations": 6, "btc_network": "regtest"}))
            .unwrap();
        assert_eq!(p.pegin_confirmations, 6);
        assert_eq!(p.btc_network, BtcNetwork::Regtest);
        let err = PegParams::rootstock_mainnet()
            .with_overrides(&serde_json::json!({"pegin_confirmation": 6}))
            .unwrap_err();
        assert!(err.to_string().contains("pegin_confirmation"), "{err}");
        let err = PegParams::rootstock_mainnet()
            .with_overrides(&serde_json::json!({"erp_csv": 70_000}))
            .unwrap_err();
        assert!(err.to_string().contains("erp_csv") || err.to_string().contains("70000"), "{err}");
        let err =
            PegParams::rootstock_mainnet().with_overrides(&serde_json::json!({"erp_csv": 0})).unwrap_err();
        assert!(err.to_string().contains("erp_csv"), "{err}");
        let err = PegParams::rootstock_mainnet()
            .with_overrides(&serde_json::json!({"fee_per_kb_sat": 6_000_000}))
            .unwrap_err();
        assert!(err.to_string().contains("fee_per_kb_sat"), "{err}");
    }
}
