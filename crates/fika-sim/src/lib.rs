//! The deterministic discrete-event simulation engine of fika.
//!
//! - [`queue`]: the event queue, ordered by `(time, sequence)`, with O(1)
//!   cancellation by tombstone;
//! - [`net`]: latency, bandwidth (one upload at a time per node), loss and
//!   partitions;
//! - [`topology`] and [`regions`]: graph generators, degree tables and the
//!   published region tables;
//! - [`fault`]: crashes, restarts, partitions and link changes on a schedule;
//! - `fastmath`: the inline `exp` of the latency draw, and `ahead`: the
//!   heavy-tailed delays drawn ahead, on a second thread for large networks;
//! - [`engine`]: the runtime that drives `fika_core::Node`s in virtual time.

mod ahead;
pub mod engine;
mod fastmath;
pub mod fault;
pub mod net;
pub mod queue;
pub mod regions;
pub mod topology;

pub use engine::{KindStats, Progress, SimStats, Simulation};
pub use fault::{Fault, FaultAction};
pub use net::{BandwidthModel, LatencyModel, Net, NetError, NetworkModel};
