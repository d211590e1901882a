//! What a node changed in one step, for a durable store at the edge.
//!
//! Nodes are sans-IO: they never write a file. A node whose [`Journal`] is
//! enabled appends a [`Change`] for every piece of state a process must not
//! lose — a block it accepted, a transaction entering or leaving its
//! mempool, a wallet's filter, a proof a wallet accepted, a payment it
//! made — and the runtime drains the journal after each step (start,
//! message, timer) and writes the changes before the step's messages leave.
//! A disabled journal (the default, and the simulator's) records nothing
//! and costs one branch per change.

use std::sync::Arc;

use bitcoin::{ScriptBuf, Transaction};
use fika_core::NodeId;

use crate::blockdb::{BlockId, TxIdx};
use crate::msg::FilteredBlock;

/// One change of a node's durable state.
#[derive(Clone, Debug)]
pub enum Change {
    /// A full node validated block `id` of its store and keeps it (on its
    /// best chain or not). Its tip is read from the node itself.
    Block(BlockId),
    /// A transaction entered a full node's mempool.
    PoolIn(TxIdx),
    /// A transaction left a full node's mempool (confirmed, conflicted,
    /// evicted, or re-checked after a reorganisation).
    PoolOut(TxIdx),
    /// A light wallet (peer) loaded its filter at a full node.
    Filter(NodeId, Vec<ScriptBuf>),
    /// A wallet accepted the header (and, if it carries transactions, the
    /// proof) of a filtered block at Unix time `now`.
    Filtered {
        /// The Unix time the header was checked against.
        now: u64,
        /// The block as received.
        block: Box<FilteredBlock>,
    },
    /// A wallet created and sent a payment.
    Sent(Arc<Transaction>),
    /// A wallet could not make a scheduled or random payment.
    Failed,
}

/// A list of changes, recording only once enabled.
#[derive(Clone, Debug, Default)]
pub struct Journal {
    changes: Option<Vec<Change>>,
}

impl Journal {
    /// Starts recording.
    pub fn enable(&mut self) {
        self.changes.get_or_insert_with(Vec::new);
    }

    /// Whether it records.
    pub fn is_enabled(&self) -> bool {
        self.changes.is_some()
    }

    /// Records a change (built only if recording).
    pub fn record(&mut self, change: impl FnOnce() -> Change) {
        if let Some(v) = &mut self.changes {
            v.push(change());
        }
    }

    /// Takes the changes recorded since the last call, oldest first.
    pub fn take(&mut self) -> Vec<Change> {
        self.changes.as_mut().map(std::mem::take).unwrap_or_default()
    }
}

/// Why a node could not be restored from what a store kept.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RestoreError {
    /// A kept block could not enter the block store (unknown parent, bad bits).
    #[error("kept block {hash}: {reason}")]
    Block {
        /// The block.
        hash: bitcoin::BlockHash,
        /// Why.
        reason: String,
    },
    /// A kept block fails validation.
    #[error("kept block {hash} is invalid: {reason}")]
    Invalid {
        /// The block.
        hash: bitcoin::BlockHash,
        /// Why.
        reason: String,
    },
    /// The kept tip is not among the kept valid blocks.
    #[error("kept tip {0} is not a kept valid block")]
    NoTip(bitcoin::BlockHash),
    /// A kept proof or header is refused by the wallet's light client.
    #[error("kept filtered block {hash}: {reason}")]
    Filtered {
        /// The block.
        hash: bitcoin::BlockHash,
        /// Why.
        reason: String,
    },
    /// The node is not of the kind the store describes.
    #[error("the store holds a {stored} node, this is a {node} node")]
    WrongKind {
        /// The kind kept.
        stored: &'static str,
        /// The node's kind.
        node: &'static str,
    },
}
