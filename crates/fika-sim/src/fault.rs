//! Faults scheduled by the scenario: crashes, restarts, partitions, heals and
//! link changes, each at a virtual time. Random choices (which nodes crash)
//! are resolved before the run from the seed, so the schedule is part of the
//! reproducible input.

use fika_core::{NodeId, SimTime};

/// One change to the world at a given time.
#[derive(Clone, Debug, PartialEq)]
#[non_exhaustive]
pub enum FaultAction {
    /// The node stops: it loses volatile state, its timers and incoming messages.
    Crash(NodeId),
    /// A crashed node starts again.
    Restart(NodeId),
    /// Each group becomes an island; nodes in no group stay together.
    Partition(Vec<Vec<NodeId>>),
    /// Every partition is removed.
    Heal,
    /// Changes one link; `None` keeps the model's value.
    SetLink {
        /// One end.
        a: NodeId,
        /// The other end.
        b: NodeId,
        /// Constant latency replacing the model.
        latency_ms: Option<f64>,
        /// Loss replacing the global probability.
        loss: Option<f64>,
    },
    /// Changes the loss probability of every link.
    SetLoss(f64),
}

/// A fault and when it happens.
#[derive(Clone, Debug, PartialEq)]
pub struct Fault {
    /// When.
    pub at: SimTime,
    /// What.
    pub action: FaultAction,
}
