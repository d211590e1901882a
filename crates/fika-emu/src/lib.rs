//! Emulation: every node a real OS process speaking a framed wire protocol
//! over real TCP, running the same sans-IO protocol code as the simulator.
//!
//! * [`wire`]: the frame format, the handshake and the payload codecs
//!   (Bitcoin's real P2P encodings); [`wire::fuzz_decode`] for the fuzz crate.
//! * [`runtime`]: a tokio (current-thread) runtime driving one
//!   [`fika_core::Node`] in real time — its [`fika_core::Context`] is the
//!   emulator's counterpart of the simulator's.
//! * [`build`]: rebuilding one node of a Bitcoin scenario, exactly as the
//!   simulator's runner builds it (same keys, premine and hashrates).
//! * [`store`]: a node's durable store (redb) in its data directory, and
//!   [`durable`]: the node wrapper that commits each step's changes to it
//!   before the step's messages leave.
//! * [`process`]: the node process — [`process::NodeProcessConfig`] and
//!   [`process::run_node_process`], what `fika-node --config FILE` (and
//!   `fika node`) runs.
//! * [`service`]: calls from services (the RPC server) into the node loop.
//! * [`rpc`]: a Bitcoin Core-compatible JSON-RPC server in every node, and
//!   a blocking client.
//! * [`orchestrate`]: [`orchestrate::emulate`] starts every node of a
//!   scenario as its own process on loopback, stops them, merges their
//!   events and measures them.
//! * [`netns`]: with `--netns`, a network namespace per node and a veth
//!   pair per link, shaped by `tc netem` (the thesis's jails and epairs).

pub mod build;
pub mod durable;
pub mod error;
pub mod netns;
pub mod orchestrate;
pub mod process;
pub mod rpc;
pub mod runtime;
pub mod service;
pub mod store;
pub mod wire;

pub use build::{build_btc_node, build_btc_node_with_db, peers_of};
pub use error::EmuError;
pub use orchestrate::{EmulateOptions, EmulationReport, NodeReport, emulate};
pub use process::{NodeProcessConfig, ProcessReport, run_node_process};
pub use runtime::{Control, Hooks, RunStats, RuntimeConfig, StartRule, Status, run_node, run_node_with};
