//! The protocol core of fika: virtual time, node ids, the sans-IO [`Node`] /
//! [`Context`] API, observation [`Event`]s and the run's [`TraceDigest`].
//!
//! Protocol code depends on this crate only; it never touches sockets,
//! threads, wall clocks or a global random number generator. The simulator
//! (`fika-sim`) and the emulator drive the same nodes through [`Context`].

pub mod compose;
pub mod event;
pub mod hint;
pub mod node;
pub mod rng;
pub mod testing;
pub mod time;

pub use compose::{SubContext, split_timer};
pub use event::{Event, EventSink, TraceDigest, Value};
pub use node::{Context, Message, Node, NodeId, Offer, TimerId, TimerKey};
pub use rng::{NodeRng, derive_rng};
pub use time::SimTime;
