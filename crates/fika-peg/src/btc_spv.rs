//! The Bridge's SPV view of Bitcoin: a header tree grown from a checkpoint.
//!
//! Headers arrive through `receiveHeaders`; each must connect to a known
//! header, carry the bits the retarget rule expects (`fika_btc::pow`), and
//! pass the proof-of-work check of the chain's [`PowMode`](fika_btc::PowMode)
//! (simulated: bits only; real: also `hash ≤ target`). The best chain is the
//! one with the most chain work (ties keep the first seen), stored as a
//! 32-byte big-endian integer — Rootstock once stored it in 12 bytes and the
//! 2024 overflow halted the peg. Reorganisations to any depth above the
//! checkpoint are followed.
//!
//! The view is a persistent value (`imbl` ordered maps): cloning it is O(1)
//! and clones share structure, so a sidechain can keep one per block.
//! Iteration order is the key order, never a hash order.
//!
//! Not checked (as in Rootstock's Bridge, which has no clock): header time
//! against the median time past or a wall clock.

use std::sync::Arc;

use bitcoin::BlockHash;
use bitcoin::block::Header;
use fika_btc::ChainParams;
use fika_btc::pow::{self, PowError};
use imbl::OrdMap;
use thiserror::Error;

/// Chain work as a 32-byte big-endian unsigned integer.
pub type ChainWork = [u8; 32];

/// `a + b` for 256-bit big-endian integers; `None` on overflow.
pub fn add_work(a: &ChainWork, b: &ChainWork) -> Option<ChainWork> {
    let mut out = [0u8; 32];
    let mut carry = 0u16;
    for i in (0..32).rev() {
        let sum = u16::from(a[i]) + u16::from(b[i]) + carry;
        out[i] = (sum & 0xff) as u8;
        carry = sum >> 8;
    }
    (carry == 0).then_some(out)
}

/// The trusted starting point of the view.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Checkpoint {
    /// The checkpoint header.
    pub header: Header,
    /// Its height.
    pub height: u32,
    /// Total chain work up to and including it.
    pub chain_work: ChainWork,
}

impl Checkpoint {
    /// The genesis block of `params` as a checkpoint.
    pub fn genesis(params: &ChainParams) -> Result<Self, SpvError> {
        let header = fika_btc::genesis_block(params).header;
        let work = pow::header_work(&header).map_err(|error| SpvError::BadCheckpoint { error })?;
        Ok(Checkpoint { header, height: 0, chain_work: work.to_be_bytes() })
    }
}

/// A header the view knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct StoredHeader {
    /// The header.
    pub header: Header,
    /// Its hash.
    pub hash: BlockHash,
    /// Its height.
    pub height: u32,
    /// Total chain work up to and including it.
    pub chain_work: ChainWork,
}

/// A refused header (or checkpoint); carries the offending hash.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SpvError {
    /// The parent is not known.
    #[error("header {hash} does not connect: parent {parent} unknown")]
    UnknownParent {
        /// The header.
        hash: BlockHash,
        /// Its parent.
        parent: BlockHash,
    },
    /// Bad bits or proof of work.
    #[error("header {hash}: {error}")]
    BadPow {
        /// The header.
        hash: BlockHash,
        /// What failed.
        error: PowError,
    },
    /// A retarget needs the time of an ancestor below the checkpoint.
    #[error("header {hash} at height {height} needs a retarget ancestor below the checkpoint")]
    MissingRetargetAncestor {
        /// The header.
        hash: BlockHash,
        /// Its height.
        height: u32,
    },
    /// Chain work would overflow 256 bits.
    #[error("header {hash}: chain work overflows 256 bits")]
    ChainWorkOverflow {
        /// The header.
        hash: BlockHash,
    },
    /// Height would overflow.
    #[error("header {hash}: height overflows")]
    HeightOverflow {
        /// The header.
        hash: BlockHash,
    },
    /// With retargeting, the checkpoint must be the first block of a
    /// retarget interval so that the next retarget's first block is known.
    #[error("checkpoint height {height} is not a multiple of the retarget interval {interval}")]
    CheckpointNotAtRetargetBoundary {
        /// The checkpoint height.
        height: u32,
        /// The interval.
        interval: u32,
    },
    /// The checkpoint's bits are not a valid target.
    #[error("bad checkpoint: {error}")]
    BadCheckpoint {
        /// What failed.
        error: PowError,
    },
}

/// A reorganisation of the best chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Reorg {
    /// Height of the last common block.
    pub fork_height: u32,
    /// Best-chain blocks that left the best chain (old tip first).
    pub disconnected: Vec<BlockHash>,
}

/// One accepted header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderAccepted {
    /// Its hash.
    pub hash: BlockHash,
    /// Its height.
    pub height: u32,
    /// Whether it was new to the view.
    pub is_new: bool,
    /// Whether it became the best tip.
    pub best_changed: bool,
    /// The reorganisation it caused, if the old tip left the best chain.
    pub reorg: Option<Reorg>,
}

/// What a batch of headers did. Like Rootstock's `receiveHeaders`, a bad
/// header does not stop the batch; it is reported and the next one is tried.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HeadersOutcome {
    /// The headers accepted (new or already known), in order.
    pub accepted: Vec<HeaderAccepted>,
    /// The headers refused, with why.
    pub rejected: Vec<SpvError>,
    /// Whether the best tip moved.
    pub best_changed: bool,
    /// The deepest reorganisation (blocks disconnected), 0 if none.
    pub max_reorg_depth: u32,
}

/// The Bridge's SPV view of Bitcoin.
#[derive(Clone, Debug)]
pub struct BtcSpv {
    params: Arc<ChainParams>,
    checkpoint_height: u32,
    headers: OrdMap<BlockHash, StoredHeader>,
    best_chain: OrdMap<u32, BlockHash>,
    best: StoredHeader,
}

impl BtcSpv {
    /// A view holding only `checkpoint`. With retargeting, the checkpoint
    /// height must be a multiple of the retarget interval.
    pub fn new(params: ChainParams, checkpoint: Checkpoint) -> Result<Self, SpvError> {
        pow::decode_compact(checkpoint.header.bits.to_consensus())
            .map_err(|error| SpvError::BadCheckpoint { error })?;
        let interval = params.retarget_interval.max(1);
        if params.retargeting && checkpoint.height % interval != 0 {
            return Err(SpvError::CheckpointNotAtRetargetBoundary { height: checkpoint.height, interval });
        }
        let hash = checkpoint.header.block_hash();
        let stored = StoredHeader {
            header: checkpoint.header,
            hash,
            height: checkpoint.height,
            chain_work: checkpoint.chain_work,
        };
        let mut headers = OrdMap::new();
        headers.insert(hash, stored);
        let mut best_chain = OrdMap::new();
        best_chain.insert(checkpoint.height, hash);
        Ok(BtcSpv {
            params: Arc::new(params),
            checkpoint_height: checkpoint.height,
            headers,
            best_chain,
            best: stored,
        })
    }

    /// The chain parameters the view checks headers against.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// The checkpoint's height (the lowest height the view knows).
    pub fn checkpoint_height(&self) -> u32 {
        self.checkpoint_height
    }

    /// Number of headers known (all branches).
    pub fn len(&self) -> usize {
        self.headers.len()
    }

    /// Whether only the checkpoint is known.
    pub fn is_empty(&self) -> bool {
        self.headers.len() <= 1
    }

    /// The best tip.
    pub fn best(&self) -> &StoredHeader {
        &self.best
    }

    /// Height of the best tip (`getBtcBlockchainBestChainHeight`).
    pub fn best_height(&self) -> u32 {
        self.best.height
    }

    /// Hash of the best tip.
    pub fn best_hash(&self) -> BlockHash {
        self.best.hash
    }

    /// Chain work of the best tip.
    pub fn best_chain_work(&self) -> ChainWork {
        self.best.chain_work
    }

    /// A known header, on any branch.
    pub fn get(&self, hash: &BlockHash) -> Option<&StoredHeader> {
        self.headers.get(hash)
    }

    /// The best-chain block hash at `height`.
    pub fn hash_at_height(&self, height: u32) -> Option<BlockHash> {
        self.best_chain.get(&height).copied()
    }

    /// The best-chain header at `height`.
    pub fn header_at_height(&self, height: u32) -> Option<&StoredHeader> {
        self.best_chain.get(&height).and_then(|h| self.headers.get(h))
    }

    /// The best-chain block `depth` blocks below the tip (0 = the tip), as
    /// Rootstock's `getBtcBlockchainBlockHashAtDepth`: `None` if deeper than
    /// the checkpoint.
    pub fn hash_at_depth(&self, depth: u32) -> Option<BlockHash> {
        let height = self.best.height.checked_sub(depth)?;
        if height < self.checkpoint_height {
            return None;
        }
        self.hash_at_height(height)
    }

    /// Height of `hash` if it is on the best chain.
    pub fn height_of(&self, hash: &BlockHash) -> Option<u32> {
        let stored = self.headers.get(hash)?;
        (self.best_chain.get(&stored.height) == Some(hash)).then_some(stored.height)
    }

    /// Whether `hash` is on the best chain.
    pub fn is_on_best_chain(&self, hash: &BlockHash) -> bool {
        self.height_of(hash).is_some()
    }

    /// Iterates over all known headers in hash order.
    pub fn iter(&self) -> impl Iterator<Item = &StoredHeader> {
        self.headers.values()
    }

    /// The ancestor of `hash` at `height` (any branch), if known.
    pub fn ancestor(&self, hash: &BlockHash, height: u32) -> Option<&StoredHeader> {
        let mut cur = self.headers.get(hash)?;
        loop {
            if cur.height == height {
                return Some(cur);
            }
            if cur.height < height {
                return None;
            }
            // Once on the best chain, jump by index.
            if self.best_chain.get(&cur.height) == Some(&cur.hash) {
                return self.header_at_height(height);
            }
            cur = self.headers.get(&cur.header.prev_blockhash)?;
        }
    }

    /// The bits a child of `parent` must carry.
    fn expected_bits(
        &self,
        parent: &StoredHeader,
        hash: BlockHash,
    ) -> Result<bitcoin::CompactTarget, SpvError> {
        let mut missing = false;
        let bits = pow::next_work_required(
            &self.params,
            parent.height,
            parent.header.bits,
            parent.header.time,
            |h| {
                let t = self.ancestor(&parent.hash, h).map(|s| s.header.time);
                missing = t.is_none();
                t
            },
        );
        if missing {
            return Err(SpvError::MissingRetargetAncestor { hash, height: parent.height.saturating_add(1) });
        }
        Ok(bits)
    }

    /// Checks and adds one header; moves the best chain if it has more work.
    pub fn receive_header(&mut self, header: &Header) -> Result<HeaderAccepted, SpvError> {
        let hash = header.block_hash();
        if let Some(known) = self.headers.get(&hash) {
            return Ok(HeaderAccepted {
                hash,
                height: known.height,
                is_new: false,
                best_changed: false,
                reorg: None,
            });
        }
        let parent = *self
            .headers
            .get(&header.prev_blockhash)
            .ok_or(SpvError::UnknownParent { hash, parent: header.prev_blockhash })?;
        let height = parent.height.checked_add(1).ok_or(SpvError::HeightOverflow { hash })?;
        let expected = self.expected_bits(&parent, hash)?;
        pow::check_pow(header, &self.params, expected).map_err(|error| SpvError::BadPow { hash, error })?;
        let work = pow::header_work(header).map_err(|error| SpvError::BadPow { hash, error })?;
        let chain_work =
            add_work(&parent.chain_work, &work.to_be_bytes()).ok_or(SpvError::ChainWorkOverflow { hash })?;
        let stored = StoredHeader { header: *header, hash, height, chain_work };
        self.headers.insert(hash, stored);
        let mut accepted = HeaderAccepted { hash, height, is_new: true, best_changed: false, reorg: None };
        if chain_work > self.best.chain_work {
            accepted.reorg = self.set_best(stored);
            accepted.best_changed = true;
        }
        Ok(accepted)
    }

    /// Adds headers in order, reporting each refusal and going on.
    pub fn receive_headers(&mut self, headers: &[Header]) -> HeadersOutcome {
        let mut out = HeadersOutcome::default();
        for header in headers {
            match self.receive_header(header) {
                Ok(acc) => {
                    out.best_changed |= acc.best_changed;
                    if let Some(r) = &acc.reorg {
                        out.max_reorg_depth = out.max_reorg_depth.max(r.disconnected.len() as u32);
                    }
                    out.accepted.push(acc);
                }
                Err(e) => out.rejected.push(e),
            }
        }
        out
    }

    /// Makes `tip` the best tip, rewriting the height index from the fork.
    fn set_best(&mut self, tip: StoredHeader) -> Option<Reorg> {
        let mut branch = Vec::new();
        let mut cur = tip;
        // The checkpoint is an ancestor of every header, so this ends.
        while self.best_chain.get(&cur.height) != Some(&cur.hash) {
            branch.push((cur.height, cur.hash));
            match self.headers.get(&cur.header.prev_blockhash) {
                Some(p) => cur = *p,
                None => break,
            }
        }
        let fork_height = cur.height;
        let mut disconnected = Vec::new();
        let mut h = self.best.height;
        while h > fork_height {
            if let Some(old) = self.best_chain.remove(&h) {
                disconnected.push(old);
            }
            h -= 1;
        }
        for (height, hash) in branch {
            self.best_chain.insert(height, hash);
        }
        self.best = tip;
        (!disconnected.is_empty()).then_some(Reorg { fork_height, disconnected })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn work_addition_carries_and_detects_overflow() {
        let mut a = [0u8; 32];
        a[31] = 0xff;
        let mut one = [0u8; 32];
        one[31] = 1;
        let s = add_work(&a, &one).unwrap();
        assert_eq!(s[30], 1);
        assert_eq!(s[31], 0);
        assert_eq!(add_work(&[0xff; 32], &one), None);
        // Values above 2^96 (the width that overflowed in Rootstock) are fine.
        let mut big = [0u8; 32];
        big[19] = 0x80;
        let sum = add_work(&big, &big).unwrap();
        assert_eq!(sum[18], 1);
    }
}
