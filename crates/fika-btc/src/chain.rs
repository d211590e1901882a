//! The chain state: a tree of headers and blocks keyed by hash, the best
//! (most-work) chain, its UTXO set, reorganisations and an orphan pool.
//!
//! * Headers enter with [`ChainState::accept_header`] (headers-first relay,
//!   SPV) or together with their block via [`ChainState::accept_block`].
//! * A block is fully validated against the UTXO set only when it is
//!   connected to the best chain, as in Bitcoin Core. The best chain is the
//!   valid chain with the most cumulative work whose blocks are all
//!   available; on equal work the tip seen first stays.
//! * Reorganisations go to any depth using per-block undo data. If a block
//!   of the new branch is invalid, it and its descendants are marked
//!   invalid and the chain returns to the best valid chain.
//! * Blocks whose parent is unknown wait in a bounded orphan pool and are
//!   processed when the parent arrives.
//!
//! All containers are ordered (`BTreeMap`, `BTreeSet`, `Vec`), and ties are
//! broken by an explicit arrival sequence number, so the same inputs always
//! give the same chain.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bitcoin::block::Header;
use bitcoin::blockdata::constants;
use bitcoin::pow::{CompactTarget, Work};
use bitcoin::{Block, BlockHash, Network, OutPoint};
use thiserror::Error;

use crate::params::{ChainParams, GenesisSpec};
use crate::pow;
use crate::utxo::{BlockUndo, Coin, CoinView, UtxoSet};
use crate::validate::{self, BlockError, ParentInfo, TxContext};

/// Default bound of the orphan pool.
pub const DEFAULT_MAX_ORPHANS: usize = 128;

/// The genesis block of a chain with these params (deterministic).
///
/// [`GenesisSpec::BitcoinMainnet`] and [`GenesisSpec::BitcoinRegtest`] give
/// the real blocks. [`GenesisSpec::Synthetic`] puts Bitcoin's genesis
/// coinbase under a header with the given time and `pow_limit_bits`; if that
/// target is easy (at most 2^16 expected hashes) the nonce is ground so the
/// header also meets it, independent of the PoW mode.
pub fn genesis_block(params: &ChainParams) -> Block {
    match params.genesis {
        GenesisSpec::BitcoinMainnet => constants::genesis_block(Network::Bitcoin),
        GenesisSpec::BitcoinRegtest => constants::genesis_block(Network::Regtest),
        GenesisSpec::Synthetic { time } => {
            let mut block = constants::genesis_block(Network::Regtest);
            block.header.time = time;
            block.header.bits = params.pow_limit();
            block.header.nonce = 0;
            if pow::expected_hashes(block.header.bits) <= 65_536.0 {
                pow::grind(&mut block.header, 1 << 20);
            }
            block
        }
    }
}

/// What is known about a block's validity.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Validity {
    /// The header is valid; the block was not connected yet.
    Unchecked,
    /// The block was connected to the best chain at least once.
    Valid,
    /// The block itself is invalid.
    Invalid(BlockError),
    /// An ancestor is invalid.
    InvalidAncestor(BlockHash),
}

impl Validity {
    /// Whether the block or an ancestor is known invalid.
    pub fn is_invalid(&self) -> bool {
        matches!(self, Validity::Invalid(_) | Validity::InvalidAncestor(_))
    }
}

/// A node of the block tree.
#[derive(Clone, Debug)]
pub struct BlockEntry {
    /// The header.
    pub header: Header,
    /// Its hash.
    pub hash: BlockHash,
    /// Height (genesis = 0).
    pub height: u32,
    /// Cumulative work from genesis up to and including this block.
    pub chain_work: Work,
    /// Median time past at this block (median of the last `mtp_window`
    /// header times ending with this one).
    pub mtp: u32,
    /// Arrival order (first seen = lowest).
    pub seq: u64,
    /// What is known about its validity.
    pub validity: Validity,
    block: Option<Arc<Block>>,
    undo: Option<BlockUndo>,
    children: Vec<BlockHash>,
    /// This block and all its ancestors have their data.
    data_chain: bool,
}

impl BlockEntry {
    /// The full block, if its data has arrived.
    pub fn block(&self) -> Option<&Arc<Block>> {
        self.block.as_ref()
    }

    /// Whether the block data is stored.
    pub fn has_data(&self) -> bool {
        self.block.is_some()
    }

    /// Hashes of known children, in arrival order.
    pub fn children(&self) -> &[BlockHash] {
        &self.children
    }
}

/// A failure to accept a header or block.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The block (with data) is already stored, or the orphan already pooled.
    #[error("block {0} is already known")]
    Duplicate(BlockHash),
    /// The block is already known to be invalid.
    #[error("block {hash} is known invalid")]
    KnownInvalid {
        /// The block.
        hash: BlockHash,
    },
    /// The header's parent is unknown (headers must connect).
    #[error("header {hash} has unknown parent {parent}")]
    UnknownParent {
        /// The header.
        hash: BlockHash,
        /// Its missing parent.
        parent: BlockHash,
    },
    /// The parent is known invalid.
    #[error("block {hash} builds on invalid block {parent}")]
    InvalidParent {
        /// The block.
        hash: BlockHash,
        /// Its invalid parent.
        parent: BlockHash,
    },
    /// The header fails its checks (PoW, bits, time).
    #[error("invalid header {hash}: {error}")]
    InvalidHeader {
        /// The header.
        hash: BlockHash,
        /// Why.
        error: Box<BlockError>,
    },
    /// The block is invalid and the chain did not change.
    #[error("invalid block {hash}: {error}")]
    InvalidBlock {
        /// The block.
        hash: BlockHash,
        /// Why.
        error: Box<BlockError>,
    },
    /// An ancestor of the block turned out invalid while trying to connect
    /// it, and the chain did not change.
    #[error("block {hash} rejected: ancestor {ancestor} is invalid: {error}")]
    InvalidAncestor {
        /// The submitted block.
        hash: BlockHash,
        /// The invalid ancestor.
        ancestor: BlockHash,
        /// Why the ancestor is invalid.
        error: Box<BlockError>,
    },
    /// An internal inconsistency (a bug).
    #[error("internal chain error: {0}")]
    Internal(String),
}

/// What happened to the submitted block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Disposition {
    /// Stored in the tree (and connected if it is on the best chain).
    Stored,
    /// Held in the orphan pool until its parent arrives.
    Orphan {
        /// The parent to fetch.
        missing_parent: BlockHash,
    },
}

/// The result of [`ChainState::accept_block`]: the net change of the best
/// chain, for a mempool or wallet to follow.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptOutcome {
    /// The submitted block.
    pub hash: BlockHash,
    /// Where it went.
    pub disposition: Disposition,
    /// False if the submitted block ended up invalid (then see `invalid`).
    pub accepted: bool,
    /// Blocks removed from the best chain, old tip first.
    pub disconnected: Vec<BlockHash>,
    /// Blocks added to the best chain, lowest first.
    pub connected: Vec<BlockHash>,
    /// Whether the best tip changed.
    pub tip_changed: bool,
    /// The best tip afterwards.
    pub tip: BlockHash,
    /// Its height.
    pub tip_height: u32,
    /// Blocks found invalid while processing (not their descendants).
    pub invalid: Vec<(BlockHash, BlockError)>,
    /// Orphans that were taken out of the pool and stored.
    pub orphans_stored: Vec<BlockHash>,
}

/// The result of [`ChainState::accept_header`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HeaderOutcome {
    /// The header's hash.
    pub hash: BlockHash,
    /// Its height.
    pub height: u32,
    /// False if it was already known.
    pub is_new: bool,
    /// Whether it became the most-work header.
    pub best_header_changed: bool,
}

#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Candidate {
    work: Reverse<Work>,
    seq: u64,
    hash: BlockHash,
}

#[derive(Clone, Debug, Default)]
struct OrphanPool {
    blocks: BTreeMap<BlockHash, (u64, Arc<Block>)>,
    by_seq: BTreeMap<u64, BlockHash>,
    by_parent: BTreeMap<BlockHash, BTreeSet<(u64, BlockHash)>>,
}

impl OrphanPool {
    fn insert(&mut self, seq: u64, block: Arc<Block>, max: usize) -> Vec<BlockHash> {
        let hash = block.block_hash();
        let parent = block.header.prev_blockhash;
        self.blocks.insert(hash, (seq, block));
        self.by_seq.insert(seq, hash);
        self.by_parent.entry(parent).or_default().insert((seq, hash));
        let mut evicted = Vec::new();
        while self.blocks.len() > max {
            let Some((_, oldest)) = self.by_seq.first_key_value().map(|(s, h)| (*s, *h)) else {
                break;
            };
            self.remove(&oldest);
            evicted.push(oldest);
        }
        evicted
    }

    fn remove(&mut self, hash: &BlockHash) -> Option<Arc<Block>> {
        let (seq, block) = self.blocks.remove(hash)?;
        self.by_seq.remove(&seq);
        let parent = block.header.prev_blockhash;
        if let Some(set) = self.by_parent.get_mut(&parent) {
            set.remove(&(seq, *hash));
            if set.is_empty() {
                self.by_parent.remove(&parent);
            }
        }
        Some(block)
    }

    fn children_of(&self, parent: &BlockHash) -> Vec<BlockHash> {
        self.by_parent.get(parent).map(|s| s.iter().map(|(_, h)| *h).collect()).unwrap_or_default()
    }
}

/// The chain: block tree, best chain and its UTXO set.
#[derive(Clone, Debug)]
pub struct ChainState {
    params: ChainParams,
    entries: BTreeMap<BlockHash, BlockEntry>,
    active: Vec<BlockHash>,
    utxo: UtxoSet,
    candidates: BTreeSet<Candidate>,
    best_header: BlockHash,
    orphans: OrphanPool,
    max_orphans: usize,
    next_seq: u64,
}

impl CoinView for ChainState {
    fn coin(&self, outpoint: &OutPoint) -> Option<Coin> {
        self.utxo.coin(outpoint)
    }
}

impl ChainState {
    /// A chain holding only the genesis block of `params` (whose coinbase,
    /// as in Bitcoin, is not spendable).
    pub fn new(params: ChainParams) -> Self {
        let genesis = genesis_block(&params);
        let hash = genesis.block_hash();
        let work = pow::header_work(&genesis.header).unwrap_or(Work::from_be_bytes([0; 32]));
        let entry = BlockEntry {
            header: genesis.header,
            hash,
            height: 0,
            chain_work: work,
            mtp: genesis.header.time,
            seq: 0,
            validity: Validity::Valid,
            block: Some(Arc::new(genesis)),
            undo: Some(BlockUndo::default()),
            children: Vec::new(),
            data_chain: true,
        };
        let mut entries = BTreeMap::new();
        entries.insert(hash, entry);
        let mut candidates = BTreeSet::new();
        candidates.insert(Candidate { work: Reverse(work), seq: 0, hash });
        ChainState {
            params,
            entries,
            active: vec![hash],
            utxo: UtxoSet::new(),
            candidates,
            best_header: hash,
            orphans: OrphanPool::default(),
            max_orphans: DEFAULT_MAX_ORPHANS,
            next_seq: 1,
        }
    }

    /// Sets the orphan pool bound (default [`DEFAULT_MAX_ORPHANS`]).
    pub fn set_max_orphans(&mut self, max: usize) {
        self.max_orphans = max;
    }

    // ---- accessors -------------------------------------------------------

    /// The chain parameters.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// The UTXO set of the best chain.
    pub fn utxo(&self) -> &UtxoSet {
        &self.utxo
    }

    /// The genesis hash.
    pub fn genesis_hash(&self) -> BlockHash {
        self.active[0]
    }

    /// The best tip's hash.
    pub fn tip_hash(&self) -> BlockHash {
        self.active[self.active.len() - 1]
    }

    /// The best tip's height.
    pub fn tip_height(&self) -> u32 {
        (self.active.len() - 1) as u32
    }

    /// The best tip.
    pub fn tip(&self) -> &BlockEntry {
        self.entry_unchecked(&self.tip_hash())
    }

    fn entry_unchecked(&self, hash: &BlockHash) -> &BlockEntry {
        match self.entries.get(hash) {
            Some(e) => e,
            None => unreachable!("active chain block {hash} missing from the tree"),
        }
    }

    /// Median time past at the best tip.
    pub fn median_time_past(&self) -> u32 {
        self.tip().mtp
    }

    /// Median time past at height `height` of the best chain (clamped to
    /// the tip).
    pub fn mtp_at_height(&self, height: u32) -> u32 {
        let h = (height as usize).min(self.active.len() - 1);
        self.entry_unchecked(&self.active[h]).mtp
    }

    /// The tree node of `hash`, if known (header or block).
    pub fn entry(&self, hash: &BlockHash) -> Option<&BlockEntry> {
        self.entries.get(hash)
    }

    /// Whether `hash` is in the tree.
    pub fn contains(&self, hash: &BlockHash) -> bool {
        self.entries.contains_key(hash)
    }

    /// Whether the block data of `hash` is stored (or it is a pooled orphan).
    pub fn has_block(&self, hash: &BlockHash) -> bool {
        self.entries.get(hash).is_some_and(BlockEntry::has_data) || self.orphans.blocks.contains_key(hash)
    }

    /// The stored block `hash`.
    pub fn block(&self, hash: &BlockHash) -> Option<&Arc<Block>> {
        self.entries.get(hash).and_then(|e| e.block.as_ref())
    }

    /// Number of blocks and headers in the tree.
    pub fn tree_len(&self) -> usize {
        self.entries.len()
    }

    /// Number of pooled orphan blocks.
    pub fn orphan_count(&self) -> usize {
        self.orphans.blocks.len()
    }

    /// Whether `hash` is on the best chain.
    pub fn is_on_best_chain(&self, hash: &BlockHash) -> bool {
        self.entries.get(hash).is_some_and(|e| self.active.get(e.height as usize) == Some(hash))
    }

    /// The hash at `height` on the best chain.
    pub fn hash_at_height(&self, height: u32) -> Option<BlockHash> {
        self.active.get(height as usize).copied()
    }

    /// The block at `height` on the best chain.
    pub fn block_at_height(&self, height: u32) -> Option<&Arc<Block>> {
        self.hash_at_height(height).and_then(|h| self.block(&h))
    }

    /// The hashes of the best chain from genesis to tip.
    pub fn best_chain(&self) -> &[BlockHash] {
        &self.active
    }

    /// The ancestor of `hash` at `height` (itself if `height` is its own),
    /// on whatever branch `hash` is.
    pub fn ancestor_at_height(&self, hash: &BlockHash, height: u32) -> Option<BlockHash> {
        self.ancestor_entry(hash, height).map(|e| e.hash)
    }

    fn ancestor_entry(&self, hash: &BlockHash, height: u32) -> Option<&BlockEntry> {
        let mut cur = self.entries.get(hash)?;
        if height > cur.height {
            return None;
        }
        loop {
            if cur.height == height {
                return Some(cur);
            }
            if self.active.get(cur.height as usize) == Some(&cur.hash) {
                // On the best chain: jump.
                return self.active.get(height as usize).and_then(|h| self.entries.get(h));
            }
            cur = self.entries.get(&cur.header.prev_blockhash)?;
        }
    }

    /// The most-work valid-so-far header (may be ahead of the best block
    /// chain when only headers arrived).
    pub fn best_header(&self) -> &BlockEntry {
        self.entry_unchecked(&self.best_header)
    }

    /// The bits a child of the best tip must carry.
    pub fn next_bits(&self) -> CompactTarget {
        self.next_bits_after(&self.tip_hash()).unwrap_or(self.params.pow_limit())
    }

    /// The bits a child of `parent` must carry.
    pub fn next_bits_after(&self, parent: &BlockHash) -> Option<CompactTarget> {
        let p = self.entries.get(parent)?;
        Some(pow::next_work_required(&self.params, p.height, p.header.bits, p.header.time, |h| {
            self.ancestor_entry(parent, h).map(|e| e.header.time)
        }))
    }

    /// A block locator for the best chain (Core's `GetLocator`): the tip,
    /// then back with doubling steps after the first ten, ending at genesis.
    pub fn locator(&self) -> Vec<BlockHash> {
        self.locator_from(&self.tip_hash())
    }

    /// A block locator starting at `hash` (e.g. the best header).
    pub fn locator_from(&self, hash: &BlockHash) -> Vec<BlockHash> {
        let mut out = Vec::new();
        let Some(start) = self.entries.get(hash) else {
            return out;
        };
        let mut height = i64::from(start.height);
        let mut step = 1i64;
        while height > 0 {
            if let Some(h) = self.ancestor_at_height(hash, height as u32) {
                out.push(h);
            }
            if out.len() >= 10 {
                step *= 2;
            }
            height -= step;
        }
        out.push(self.genesis_hash());
        out
    }

    /// The last locator entry on the best chain (where to start serving
    /// headers/blocks to a peer), genesis if none matches.
    pub fn find_fork_in_locator(&self, locator: &[BlockHash]) -> BlockHash {
        locator.iter().find(|h| self.is_on_best_chain(h)).copied().unwrap_or_else(|| self.genesis_hash())
    }

    /// Best-chain hashes after `start` (exclusive), at most `max`.
    pub fn hashes_after(&self, start: &BlockHash, max: usize) -> Vec<BlockHash> {
        let Some(e) = self.entries.get(start).filter(|_| self.is_on_best_chain(start)) else {
            return Vec::new();
        };
        self.active.iter().skip(e.height as usize + 1).take(max).copied().collect()
    }

    // ---- acceptance ------------------------------------------------------

    fn parent_info(&self, parent: &BlockEntry) -> ParentInfo {
        ParentInfo {
            hash: parent.hash,
            height: parent.height,
            mtp: parent.mtp,
            expected_bits: self.next_bits_after(&parent.hash).unwrap_or(self.params.pow_limit()),
        }
    }

    fn compute_mtp(&self, header: &Header) -> u32 {
        let mut times = vec![header.time];
        let mut cur = header.prev_blockhash;
        while times.len() < self.params.mtp_window {
            let Some(e) = self.entries.get(&cur) else {
                break;
            };
            times.push(e.header.time);
            if e.height == 0 {
                break;
            }
            cur = e.header.prev_blockhash;
        }
        times.sort_unstable();
        times[times.len() / 2]
    }

    /// Validates `header` against its (known) parent and inserts it into the
    /// tree. Does not touch the best chain.
    fn insert_header(&mut self, header: &Header, now: u64) -> Result<BlockHash, ChainError> {
        let hash = header.block_hash();
        let parent_hash = header.prev_blockhash;
        let Some(parent) = self.entries.get(&parent_hash) else {
            return Err(ChainError::UnknownParent { hash, parent: parent_hash });
        };
        if parent.validity.is_invalid() {
            return Err(ChainError::InvalidParent { hash, parent: parent_hash });
        }
        let info = self.parent_info(parent);
        validate::check_header_context(header, &info, &self.params, now)
            .map_err(|error| ChainError::InvalidHeader { hash, error: Box::new(error) })?;
        let work = pow::header_work(header)
            .map_err(|e| ChainError::InvalidHeader { hash, error: Box::new(BlockError::Pow(e)) })?;
        let chain_work = parent.chain_work + work;
        let height = parent.height + 1;
        let mtp = self.compute_mtp(header);
        let seq = self.next_seq;
        self.next_seq += 1;
        self.entries.insert(
            hash,
            BlockEntry {
                header: *header,
                hash,
                height,
                chain_work,
                mtp,
                seq,
                validity: Validity::Unchecked,
                block: None,
                undo: None,
                children: Vec::new(),
                data_chain: false,
            },
        );
        if let Some(p) = self.entries.get_mut(&parent_hash) {
            p.children.push(hash);
        }
        if chain_work > self.best_header().chain_work {
            self.best_header = hash;
        }
        Ok(hash)
    }

    /// Accepts a header whose parent is known (headers-first relay, SPV):
    /// checks bits, PoW per mode and time, and adds it to the tree. The best
    /// block chain does not move; [`ChainState::best_header`] may.
    pub fn accept_header(&mut self, header: &Header, now: u64) -> Result<HeaderOutcome, ChainError> {
        let hash = header.block_hash();
        if let Some(e) = self.entries.get(&hash) {
            if e.validity.is_invalid() {
                return Err(ChainError::KnownInvalid { hash });
            }
            return Ok(HeaderOutcome { hash, height: e.height, is_new: false, best_header_changed: false });
        }
        let before = self.best_header;
        self.insert_header(header, now)?;
        let height = self.entries.get(&hash).map(|e| e.height).unwrap_or_default();
        // Orphan blocks waiting for this header can now be stored. They
        // cannot connect yet (this block's data is missing), so the best
        // chain does not move.
        let mut scratch = self.empty_outcome(hash);
        self.process_orphans(hash, now, &mut scratch);
        Ok(HeaderOutcome { hash, height, is_new: true, best_header_changed: self.best_header != before })
    }

    /// Accepts a chain of headers in order; stops at the first error.
    pub fn accept_headers(&mut self, headers: &[Header], now: u64) -> Result<Vec<HeaderOutcome>, ChainError> {
        headers.iter().map(|h| self.accept_header(h, now)).collect()
    }

    fn empty_outcome(&self, hash: BlockHash) -> AcceptOutcome {
        AcceptOutcome {
            hash,
            disposition: Disposition::Stored,
            accepted: true,
            disconnected: Vec::new(),
            connected: Vec::new(),
            tip_changed: false,
            tip: self.tip_hash(),
            tip_height: self.tip_height(),
            invalid: Vec::new(),
            orphans_stored: Vec::new(),
        }
    }

    /// Accepts a block at wall-clock time `now` (Unix seconds): validates
    /// it, stores it, and moves the best chain to the most-work valid tip
    /// (reorganising to any depth). A block with an unknown parent goes to
    /// the orphan pool.
    ///
    /// `Err` means the block was rejected and the best chain did not change.
    /// If the block was found invalid only while connecting a branch that
    /// changed the best chain anyway, the result is `Ok` with
    /// `accepted == false` and the failure in `invalid`.
    pub fn accept_block(
        &mut self,
        block: impl Into<Arc<Block>>,
        now: u64,
    ) -> Result<AcceptOutcome, ChainError> {
        let block: Arc<Block> = block.into();
        let hash = block.block_hash();
        if let Some(e) = self.entries.get(&hash) {
            if e.validity.is_invalid() {
                return Err(ChainError::KnownInvalid { hash });
            }
            if e.has_data() {
                return Err(ChainError::Duplicate(hash));
            }
        }
        let parent = block.header.prev_blockhash;
        let old_tip = self.tip_hash();
        let mut outcome = self.empty_outcome(hash);
        if !self.entries.contains_key(&parent) {
            if self.orphans.blocks.contains_key(&hash) {
                return Err(ChainError::Duplicate(hash));
            }
            // Cheap checks before pooling so the pool cannot be filled with junk.
            pow::check_pow_target(&block.header, &self.params)
                .map_err(|e| ChainError::InvalidHeader { hash, error: Box::new(BlockError::Pow(e)) })?;
            validate::check_block(&block, &self.params)
                .map_err(|error| ChainError::InvalidBlock { hash, error: Box::new(error) })?;
            let seq = self.next_seq;
            self.next_seq += 1;
            self.orphans.insert(seq, block, self.max_orphans);
            outcome.disposition = Disposition::Orphan { missing_parent: parent };
            return Ok(outcome);
        }
        self.store_block(block, now, &mut outcome)?;
        self.process_orphans(hash, now, &mut outcome);
        self.activate_best_chain(&mut outcome);
        self.finish_outcome(old_tip, &mut outcome)?;
        if let Some(e) = self.entries.get(&hash) {
            let failure = match &e.validity {
                Validity::Invalid(error) => {
                    Some(ChainError::InvalidBlock { hash, error: Box::new(error.clone()) })
                }
                Validity::InvalidAncestor(anc) => {
                    let error = match self.entries.get(anc).map(|a| &a.validity) {
                        Some(Validity::Invalid(err)) => err.clone(),
                        _ => BlockError::NoTransactions,
                    };
                    Some(ChainError::InvalidAncestor { hash, ancestor: *anc, error: Box::new(error) })
                }
                _ => None,
            };
            if let Some(err) = failure {
                outcome.accepted = false;
                if !outcome.tip_changed {
                    return Err(err);
                }
            }
        }
        Ok(outcome)
    }

    /// Header + body checks and storage of a block whose parent is in the
    /// tree. Errors leave the best chain unchanged.
    fn store_block(
        &mut self,
        block: Arc<Block>,
        now: u64,
        outcome: &mut AcceptOutcome,
    ) -> Result<(), ChainError> {
        let hash = block.block_hash();
        let parent_hash = block.header.prev_blockhash;
        if let Some(p) = self.entries.get(&parent_hash) {
            if p.validity.is_invalid() {
                return Err(ChainError::InvalidParent { hash, parent: parent_hash });
            }
        }
        if !self.entries.contains_key(&hash) {
            self.insert_header(&block.header, now)?;
        }
        let (height, parent_mtp) = match (self.entries.get(&hash), self.entries.get(&parent_hash)) {
            (Some(e), Some(p)) => (e.height, p.mtp),
            _ => {
                return Err(ChainError::Internal(format!("block {hash} or its parent missing after insert")));
            }
        };
        let checked = validate::check_block(&block, &self.params)
            .and_then(|_| validate::contextual_check_block(&block, height, parent_mtp, &self.params));
        if let Err(error) = checked {
            if !error.may_be_malleated() {
                self.mark_invalid(hash, error.clone(), outcome);
            }
            return Err(ChainError::InvalidBlock { hash, error: Box::new(error) });
        }
        let parent_data_chain = self.entries.get(&parent_hash).is_some_and(|p| p.data_chain);
        if let Some(e) = self.entries.get_mut(&hash) {
            e.block = Some(block);
        }
        if parent_data_chain {
            self.mark_data_chain(hash);
        }
        Ok(())
    }

    /// Marks `hash` and every descendant with data whose chain is now
    /// complete, adding them as best-chain candidates.
    fn mark_data_chain(&mut self, hash: BlockHash) {
        let tip_work = self.tip().chain_work;
        let mut queue = VecDeque::from([hash]);
        while let Some(h) = queue.pop_front() {
            let Some(e) = self.entries.get_mut(&h) else {
                continue;
            };
            if !e.has_data() || e.data_chain || e.validity.is_invalid() {
                continue;
            }
            e.data_chain = true;
            if e.chain_work >= tip_work {
                self.candidates.insert(Candidate { work: Reverse(e.chain_work), seq: e.seq, hash: h });
            }
            queue.extend(e.children.iter().copied());
        }
    }

    /// Marks `hash` invalid and its descendants as having an invalid ancestor.
    fn mark_invalid(&mut self, hash: BlockHash, error: BlockError, outcome: &mut AcceptOutcome) {
        let mut queue = VecDeque::new();
        if let Some(e) = self.entries.get_mut(&hash) {
            e.validity = Validity::Invalid(error.clone());
            self.candidates.remove(&Candidate { work: Reverse(e.chain_work), seq: e.seq, hash });
            queue.extend(e.children.iter().copied());
        }
        outcome.invalid.push((hash, error));
        while let Some(h) = queue.pop_front() {
            if let Some(e) = self.entries.get_mut(&h) {
                e.validity = Validity::InvalidAncestor(hash);
                self.candidates.remove(&Candidate { work: Reverse(e.chain_work), seq: e.seq, hash: h });
                queue.extend(e.children.iter().copied());
            }
        }
        if self.entries.get(&self.best_header).is_none_or(|e| e.validity.is_invalid()) {
            // Recompute the best header among valid-so-far entries (first seen wins ties).
            let best = self
                .entries
                .values()
                .filter(|e| !e.validity.is_invalid())
                .max_by(|a, b| a.chain_work.cmp(&b.chain_work).then(b.seq.cmp(&a.seq)))
                .map(|e| e.hash);
            self.best_header = best.unwrap_or_else(|| self.genesis_hash());
        }
    }

    /// Stores pooled orphans descending from `parent`, breadth first.
    fn process_orphans(&mut self, parent: BlockHash, now: u64, outcome: &mut AcceptOutcome) {
        let mut queue = VecDeque::from([parent]);
        while let Some(p) = queue.pop_front() {
            for child in self.orphans.children_of(&p) {
                let Some(block) = self.orphans.remove(&child) else {
                    continue;
                };
                match self.store_block(block, now, outcome) {
                    Ok(()) => {
                        outcome.orphans_stored.push(child);
                        queue.push_back(child);
                    }
                    Err(
                        ChainError::InvalidBlock { hash, error } | ChainError::InvalidHeader { hash, error },
                    ) => {
                        if !outcome.invalid.iter().any(|(h, _)| *h == hash) {
                            outcome.invalid.push((hash, *error));
                        }
                    }
                    Err(_) => {}
                }
            }
        }
    }

    /// Moves the best chain to the most-work valid candidate.
    fn activate_best_chain(&mut self, outcome: &mut AcceptOutcome) {
        loop {
            let tip_work = self.tip().chain_work;
            let Some(best) = self.candidates.first().cloned() else {
                break;
            };
            let Some(entry) = self.entries.get(&best.hash) else {
                self.candidates.remove(&best);
                continue;
            };
            if entry.validity.is_invalid() {
                self.candidates.remove(&best);
                continue;
            }
            if best.work.0 <= tip_work {
                break;
            }
            // Fork point with the best chain.
            let mut path = Vec::new();
            let mut cur = best.hash;
            while !self.is_on_best_chain(&cur) {
                path.push(cur);
                match self.entries.get(&cur) {
                    Some(e) => cur = e.header.prev_blockhash,
                    None => break,
                }
            }
            let fork_height = self.entries.get(&cur).map(|e| e.height).unwrap_or(0);
            while self.tip_height() > fork_height {
                if let Err(e) = self.disconnect_tip() {
                    // Undo data inconsistent: cannot happen unless there is a bug.
                    debug_assert!(false, "{e}");
                    return;
                }
            }
            for h in path.into_iter().rev() {
                if let Err(error) = self.connect_block(h) {
                    self.mark_invalid(h, error, outcome);
                    break;
                }
            }
        }
        // Candidates with less work than the tip can never win again.
        let tip_work = self.tip().chain_work;
        self.candidates.retain(|c| c.work.0 >= tip_work);
    }

    /// Connects the stored block `hash`, a child of the tip.
    fn connect_block(&mut self, hash: BlockHash) -> Result<(), BlockError> {
        let (block, height) = match self.entries.get(&hash) {
            Some(e) => match &e.block {
                Some(b) => (Arc::clone(b), e.height),
                None => return Err(BlockError::NoTransactions),
            },
            None => return Err(BlockError::NoTransactions),
        };
        let prev_mtp = self.tip().mtp;
        let mtp_at = |h: u32| self.mtp_at_height(h);
        let ctx =
            TxContext { spend_height: height, prev_mtp, mtp_at: &mtp_at, flags: self.params.script_flags };
        validate::check_block_inputs(&block, &self.utxo, &ctx, &self.params)?;
        let undo = self.utxo.apply_block(&block, height)?;
        if let Some(e) = self.entries.get_mut(&hash) {
            e.undo = Some(undo);
            e.validity = Validity::Valid;
        }
        self.active.push(hash);
        Ok(())
    }

    fn disconnect_tip(&mut self) -> Result<(), ChainError> {
        if self.active.len() <= 1 {
            return Err(ChainError::Internal("cannot disconnect genesis".into()));
        }
        let hash = self.tip_hash();
        let entry = self.entry_unchecked(&hash);
        let (Some(block), Some(undo)) = (entry.block.clone(), entry.undo.clone()) else {
            return Err(ChainError::Internal(format!("no block or undo data for tip {hash}")));
        };
        self.utxo
            .undo_block(&block, &undo)
            .map_err(|e| ChainError::Internal(format!("undo of {hash} failed: {e}")))?;
        if let Some(e) = self.entries.get_mut(&hash) {
            e.undo = None;
        }
        self.active.pop();
        Ok(())
    }

    /// Fills the net connected/disconnected lists relative to `old_tip`.
    fn finish_outcome(&self, old_tip: BlockHash, outcome: &mut AcceptOutcome) -> Result<(), ChainError> {
        let new_tip = self.tip_hash();
        outcome.tip = new_tip;
        outcome.tip_height = self.tip_height();
        outcome.tip_changed = new_tip != old_tip;
        outcome.disconnected.clear();
        outcome.connected.clear();
        if !outcome.tip_changed {
            return Ok(());
        }
        // Walk the old tip back to the best chain.
        let mut cur = old_tip;
        while !self.is_on_best_chain(&cur) {
            outcome.disconnected.push(cur);
            cur = self
                .entries
                .get(&cur)
                .map(|e| e.header.prev_blockhash)
                .ok_or_else(|| ChainError::Internal(format!("old tip ancestor {cur} missing")))?;
        }
        let fork_height = self.entries.get(&cur).map(|e| e.height).unwrap_or(0);
        outcome.connected = self.active[fork_height as usize + 1..].to_vec();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn mainnet_genesis_is_the_real_one() {
        let chain = ChainState::new(ChainParams::mainnet());
        assert_eq!(
            chain.tip_hash().to_string(),
            "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"
        );
        assert_eq!(chain.tip_height(), 0);
        assert!(chain.utxo().is_empty());
    }

    #[test]
    fn synthetic_genesis_is_deterministic_and_meets_easy_target() {
        let p = ChainParams::regtest_fast();
        let a = genesis_block(&p);
        let b = genesis_block(&p);
        assert_eq!(a.block_hash(), b.block_hash());
        assert_eq!(a.header.time, 1_700_000_000);
        assert!(pow::decode_compact(a.header.bits.to_consensus()).unwrap().is_met_by(a.block_hash()));
        assert_ne!(genesis_block(&ChainParams::litecoin()).block_hash(), a.block_hash());
    }
}
