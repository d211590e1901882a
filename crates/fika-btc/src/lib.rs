//! The Bitcoin-like chain of fika: a sans-IO chain core.
//!
//! Real formats and real crypto throughout (`bitcoin` types and consensus
//! encoding, secp256k1 signatures, Bitcoin Core's script engine through
//! libbitcoinconsensus); no networking, clocks or global randomness — every
//! function takes the time it needs as an argument.
//!
//! * [`params`]: chain constants and presets ([`ChainParams`]).
//! * [`pow`]: compact targets, chain work, retargeting, PoW checks.
//! * [`utxo`]: the UTXO set with per-block undo.
//! * [`validate`]: transaction and block validation rules.
//! * [`chain`]: the block tree, best chain, reorgs and orphans ([`ChainState`]).
//! * [`mempool`]: unconfirmed transactions ([`Mempool`]).
//! * [`template`]: block templates for miners.
//! * [`sign`]: P2WPKH / P2PKH signing helpers.
//! * [`merkle`]: merkle roots and SPV partial-merkle-tree proofs.
//! * [`journal`]: what a node changed in a step, for a durable store.

pub mod attack;
pub mod blockdb;
pub mod chain;
pub mod consensus;
pub mod journal;
pub mod mempool;
pub mod merkle;
pub mod msg;
pub mod node;
pub mod params;
pub mod pow;
pub mod sign;
pub mod template;
pub mod utxo;
pub mod validate;
pub mod wallet_node;

pub use chain::{AcceptOutcome, ChainError, ChainState, Disposition, HeaderOutcome, genesis_block};
pub use mempool::{Mempool, MempoolConfig, MempoolError};
pub use params::{ChainParams, GenesisSpec, PowMode, ScriptFlags};
pub use template::{BlockTemplate, build_template, mine_block};
pub use utxo::{BlockUndo, Coin, CoinView, UtxoSet};
pub use validate::{BlockError, TxError};
pub mod spv;
pub mod wallet;
