//! The PowPeg: Rootstock's two-way peg between Bitcoin and a merge-mined
//! sidechain, as sans-IO logic.
//!
//! Nothing here touches the network, a clock or global randomness; every
//! number is a parameter ([`PegParams`], with a `rootstock-mainnet` preset);
//! state is ordered and persistent so that runs are deterministic and a
//! sidechain can keep the Bridge's state per block.
//!
//! * [`params`]: the peg's parameters and presets.
//! * [`side`]: sidechain addresses (keccak of a public key), wei.
//! * [`federation`]: federation keys, the ERP redeem script, P2SH /
//!   P2SH-P2WSH addresses, signing and spending helpers.
//! * [`btc_spv`]: the Bridge's SPV view of Bitcoin from a checkpoint.
//! * [`pegin`]: reading a peg-in's sender and v1 instructions.
//! * [`bridge`]: the Bridge's state and rules ([`BridgeState`]).
//! * [`pegout`]: peg-out requests, batches, signatures, releases.
//! * [`fedchange`]: federation change — votes, activation, migration.
//! * [`hsm`]: the PowHSM, signing only what enough sidechain work commands.
//! * [`network`]: the PowPeg network's nodes (pools, sidechain nodes,
//!   pegnatories, users) for the simulator.
//! * [`abi`]: the Bridge as a precompile: Solidity ABI, event logs,
//!   [`BridgeState::call`] at [`BRIDGE_ADDRESS`].

pub mod abi;
pub mod bridge;
pub mod btc_spv;
pub mod contract;
pub mod fedchange;
pub mod federation;
pub mod hsm;
pub mod network;
pub mod params;
pub mod pegin;
pub mod pegout;
pub mod side;

pub use abi::{BRIDGE_ADDRESS, BridgeCall, BridgeMethod, CallOutcome, Log};
pub use bridge::{
    BridgeError, BridgeEvent, BridgeState, ConservationError, FederationUtxo, PeginOutcome, RefundRequest,
    RegisterError, Registration, RejectedPeginReason, UnrefundablePeginReason,
};
pub use btc_spv::{BtcSpv, Checkpoint, SpvError};
pub use federation::{Federation, FederationError, ScriptForm, SpendBranch};
pub use params::{BtcNetwork, PegParams};
pub use side::SideAddress;
