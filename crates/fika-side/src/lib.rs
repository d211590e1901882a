//! The merge-mined EVM sidechain of fika: a sans-IO chain core modelled on
//! Rootstock.
//!
//! Deterministic throughout: ordered containers, no clocks or randomness
//! (every time is an argument), real formats (Ethereum legacy transactions
//! with EIP-155, secp256k1 signatures, Bitcoin headers and coinbases) and
//! the revm EVM.
//!
//! * [`rlp`]: a strict RLP codec.
//! * [`tx`]: signed transactions ([`SignedTx`]), signing and sender
//!   recovery.
//! * [`block`]: headers ([`SideHeader`]), blocks and merge-mining proofs
//!   ([`verify_merge_mining`], [`merge_mining_tag`]).
//! * [`merkle`], [`receipt`]: transactions and receipts roots, receipts,
//!   logs and receipt proofs.
//! * [`state`]: account state as persistent maps, per-block snapshots and
//!   the state root.
//! * [`system`]: the system-contract hook ([`SystemContract`]).
//! * [`exec`]: block execution with revm.
//! * [`genesis`]: pre-funded genesis allocations.
//! * [`chain`]: the block tree, best chain, reorgs, orphans, templates and
//!   queries ([`SideChain`]).

pub mod block;
pub mod chain;
pub mod exec;
pub mod genesis;
pub mod merkle;
pub mod receipt;
pub mod rlp;
pub mod state;
pub mod system;
pub mod tx;

pub use block::{
    MergeMiningProof, MmError, SideBlock, SideHeader, add_merge_mining_tag, difficulty_to_target,
    merge_mining_tag, verify_merge_mining,
};
pub use chain::{
    AcceptOutcome, BlockStatus, BlockTemplate, ChainConfig, ChainError, DifficultyRule, LogRecord,
    ReceiptInfo, SideChain, TipChange,
};
pub use exec::{CallOutput, TxExecError, TxInfo};
pub use fika_btc::PowMode;
pub use genesis::{Genesis, GenesisAccount};
pub use merkle::MerkleProof;
pub use receipt::{Log, Receipt, receipt_proof, receipts_root, verify_receipt_proof};
pub use revm::primitives::U256;
pub use revm::primitives::hardfork::SpecId;
pub use state::{BRIDGE_ADDRESS, RBTC_SUPPLY_WEI, Snapshot, WEI_PER_RBTC, WorldState};
pub use system::{BlockEnvInfo, NoSystemContract, SystemCallOutcome, SystemContract};
pub use tx::{SignedTx, TxError, UnsignedTx, address_of, address_of_secret, contract_address};

/// `keccak256` of `data`.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    use tiny_keccak::{Hasher, Keccak};
    let mut k = Keccak::v256();
    k.update(data);
    let mut out = [0u8; 32];
    k.finalize(&mut out);
    out
}
