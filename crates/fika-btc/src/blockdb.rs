//! The block store shared by the simulated nodes of one process, with
//! memoized validation.
//!
//! Every block and transaction that exists in a run is stored here once,
//! content-addressed, and shared by `Arc`. Whether a block is valid — given
//! its ancestors, which its hash fixes — is a pure function of its content,
//! so it is computed the first time any node asks and remembered: ten
//! thousand nodes that receive one block validate it once, not ten thousand
//! times. Each block that passes keeps the UTXO set after it as a persistent
//! map sharing structure with its parent's, so any node can read the coins
//! at its own tip, and a reorg of any depth is a switch of snapshot.
//!
//! What stays per node — which blocks it has received, which tip it follows,
//! its mempool, when it learns what — lives in the node, so the network's
//! timing and forks are simulated exactly; only the pure computation is
//! shared. In an emulated network each process has its own store.

use std::sync::Arc;

use bitcoin::block::Header;
use bitcoin::consensus::Encodable;
use bitcoin::pow::{CompactTarget, Work};
use bitcoin::{Amount, Block, BlockHash, OutPoint, Transaction, Txid};
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::chain::genesis_block;
use crate::consensus::{Consensus, ProofOfWork};
use crate::params::ChainParams;
use crate::pow;
use crate::utxo::{Coin, CoinView, is_unspendable};
use crate::validate::{self, BlockError, ParentInfo, TxContext, TxError};

/// Hashes a block hash or txid by its first eight bytes: they are already
/// uniformly random, so no mixing is needed.
#[derive(Default)]
struct PrefixHasher(u64);

impl Hasher for PrefixHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        // Hash types hash their 32-byte array; take its first 8 bytes (a
        // length prefix, if any, comes as its own short write first).
        if bytes.len() >= 8 {
            let mut b = [0u8; 8];
            b.copy_from_slice(&bytes[..8]);
            self.0 ^= u64::from_le_bytes(b);
        } else {
            for x in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(*x);
            }
        }
    }
}

type HashIndex<K> = HashMap<K, u32, BuildHasherDefault<PrefixHasher>>;

/// Dense index of a block in the store.
pub type BlockId = u32;
/// Dense index of a transaction in the store.
pub type TxIdx = u32;

/// A block as it travels: the real block, its hash computed once, and the
/// bytes of modelled-but-not-materialized content.
///
/// `filler` stands for transactions a scenario does not materialize (as
/// SimBlock's blocks have none): it counts toward the block's wire size and
/// weight, never toward its validity.
#[derive(Debug)]
pub struct SimBlock {
    /// The block.
    pub block: Block,
    /// Its hash.
    pub hash: BlockHash,
    /// Serialized size of `block`, in bytes.
    pub base_size: u32,
    /// Modelled extra bytes.
    pub filler: u32,
}

impl SimBlock {
    /// Wraps a block, computing its hash and size once.
    pub fn new(block: Block, filler: u32) -> Self {
        let hash = block.block_hash();
        let base_size = block.total_size() as u32;
        SimBlock { block, hash, base_size, filler }
    }
    /// Bytes on the wire for a full `block` message payload.
    pub fn size(&self) -> u32 {
        self.base_size.saturating_add(self.filler)
    }
    /// Weight including the filler (counted as non-witness bytes).
    pub fn weight(&self) -> u64 {
        self.block.weight().to_wu() + 4 * u64::from(self.filler)
    }
    /// Number of transactions, materialized or modelled (filler at
    /// `avg_tx_bytes` a transaction).
    pub fn tx_count(&self, avg_tx_bytes: u32) -> u32 {
        self.block.txdata.len() as u32 + self.filler / avg_tx_bytes.max(1)
    }
}

/// A handful of coins (the inputs of one transaction), as a view.
#[derive(Clone, Debug, Default)]
pub struct CoinList(pub std::collections::BTreeMap<OutPoint, Coin>);

impl CoinView for CoinList {
    fn coin(&self, outpoint: &OutPoint) -> Option<Coin> {
        self.0.get(outpoint).cloned()
    }
}

/// The initial distribution of a run as one transaction paying `outputs`,
/// treated as confirmed at genesis (see [`BlockDb::new`]); `None` if there
/// is nothing to distribute. Its single input spends an outpoint derived
/// from the seed, which exists nowhere: the coins come from the scenario.
pub fn premine_tx(seed: u64, outputs: Vec<bitcoin::TxOut>) -> Option<Transaction> {
    use bitcoin::hashes::{Hash, sha256d};
    if outputs.is_empty() {
        return None;
    }
    let seed_txid = Txid::from_raw_hash(sha256d::Hash::hash(format!("fika premine {seed}").as_bytes()));
    Some(Transaction {
        version: bitcoin::transaction::Version::TWO,
        lock_time: bitcoin::absolute::LockTime::ZERO,
        input: vec![bitcoin::TxIn {
            previous_output: OutPoint::new(seed_txid, 0),
            script_sig: bitcoin::ScriptBuf::new(),
            sequence: bitcoin::Sequence::MAX,
            witness: bitcoin::Witness::new(),
        }],
        output: outputs,
    })
}

/// The UTXO set after a block, sharing structure with its parent's.
#[derive(Clone, Debug, Default)]
pub struct UtxoSnapshot(pub imbl::OrdMap<OutPoint, Coin>);

impl CoinView for UtxoSnapshot {
    fn coin(&self, outpoint: &OutPoint) -> Option<Coin> {
        self.0.get(outpoint).cloned()
    }
}

impl UtxoSnapshot {
    /// Applies a block's transactions at `height`.
    fn apply(&mut self, block: &Block, height: u32) {
        for tx in &block.txdata {
            if !tx.is_coinbase() {
                for i in &tx.input {
                    self.0.remove(&i.previous_output);
                }
            }
            let txid = tx.compute_txid();
            for (vout, out) in tx.output.iter().enumerate() {
                if !is_unspendable(&out.script_pubkey) {
                    let coin = Coin { txout: out.clone(), height, is_coinbase: tx.is_coinbase() };
                    self.0.insert(OutPoint::new(txid, vout as u32), coin);
                }
            }
        }
    }
}

/// Validation state of a stored block.
#[derive(Clone, Debug)]
pub enum Status {
    /// Not asked yet.
    Unchecked,
    /// Valid with all its ancestors; the UTXO set after it.
    Valid(Arc<UtxoSnapshot>),
    /// Invalid, itself or through an ancestor.
    Invalid(BlockError),
}

/// Who made a block and when (for metrics).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Origin {
    /// The mining node's index.
    pub miner: u32,
    /// Virtual time it was mined, nanoseconds.
    pub at_ns: u64,
}

/// One stored block.
#[derive(Debug)]
pub struct BlockRec {
    /// The block.
    pub data: Arc<SimBlock>,
    /// Its parent, `None` for genesis.
    pub parent: Option<BlockId>,
    /// Height.
    pub height: u32,
    /// Cumulative chain work up to and including it.
    pub work: Work,
    /// Median time past at this block (of it and its ancestors).
    pub mtp: u32,
    /// Validation state.
    pub status: Status,
    /// Fees collected by its transactions, once validated.
    pub fees: Amount,
    /// Who mined it (none for genesis or blocks from outside).
    pub origin: Option<Origin>,
}

/// One stored transaction, with its memoized context-free checks.
#[derive(Debug)]
pub struct TxRec {
    /// The transaction.
    pub tx: Arc<Transaction>,
    /// Its txid.
    pub txid: Txid,
    /// Virtual size (weight / 4, rounded up).
    pub vsize: u32,
    /// Serialized size with witness.
    pub size: u32,
    /// Memoized: scripts and context-free rules against the coins it spends
    /// (unique per outpoint), and its fee.
    pub checked: Option<Result<Amount, TxError>>,
    /// When it was first seen, nanoseconds of virtual time.
    pub first_seen_ns: u64,
}

/// Why the store refused a block.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DbError {
    /// The block's parent is not in the store.
    #[error("block {block} builds on unknown parent {parent}")]
    UnknownParent {
        /// The block.
        block: BlockHash,
        /// Its parent.
        parent: BlockHash,
    },
    /// The header's bits do not decode to a target.
    #[error("block {block}: invalid bits: {reason}")]
    BadBits {
        /// The block.
        block: BlockHash,
        /// Why.
        reason: String,
    },
}

/// The shared store. See the module documentation.
#[derive(Debug)]
pub struct BlockDb {
    params: ChainParams,
    index: HashIndex<BlockHash>,
    blocks: Vec<BlockRec>,
    tx_index: HashIndex<Txid>,
    txs: Vec<TxRec>,
    premine: Amount,
    consensus: Arc<dyn Consensus + Send + Sync>,
}

impl BlockDb {
    /// A store holding the genesis block of `params`, whose UTXO set also
    /// holds `premine` (an initial distribution treated as confirmed at
    /// height 0, spendable at once).
    pub fn new(params: ChainParams, premine: &[Transaction]) -> Self {
        let genesis = genesis_block(&params);
        let mut utxo = UtxoSnapshot::default();
        for tx in premine {
            let txid = tx.compute_txid();
            for (vout, out) in tx.output.iter().enumerate() {
                let coin = Coin { txout: out.clone(), height: 0, is_coinbase: false };
                utxo.0.insert(OutPoint::new(txid, vout as u32), coin);
            }
        }
        let data = Arc::new(SimBlock::new(genesis, 0));
        let work = pow::header_work(&data.block.header).unwrap_or(Work::from_be_bytes([0; 32]));
        let mut db = BlockDb {
            params,
            index: HashIndex::default(),
            blocks: Vec::new(),
            tx_index: HashIndex::default(),
            txs: Vec::new(),
            premine: premine.iter().flat_map(|t| &t.output).map(|o| o.value).sum(),
            consensus: Arc::new(ProofOfWork),
        };
        db.index.insert(data.hash, 0);
        db.blocks.push(BlockRec {
            mtp: data.block.header.time,
            data,
            parent: None,
            height: 0,
            work,
            status: Status::Valid(Arc::new(utxo)),
            fees: Amount::ZERO,
            origin: None,
        });
        for tx in premine {
            db.intern_tx(Arc::new(tx.clone()), 0);
        }
        db
    }

    /// Replaces the consensus variant (proof of work by default); blocks
    /// already validated keep their verdict, so set it before any block.
    pub fn set_consensus(&mut self, consensus: Arc<dyn Consensus + Send + Sync>) {
        self.consensus = consensus;
    }

    /// The consensus variant.
    pub fn consensus(&self) -> &Arc<dyn Consensus + Send + Sync> {
        &self.consensus
    }

    /// The chain parameters.
    pub fn params(&self) -> &ChainParams {
        &self.params
    }

    /// The value of the initial distribution.
    pub fn premine_value(&self) -> Amount {
        self.premine
    }

    /// The genesis block's id (always 0).
    pub fn genesis(&self) -> BlockId {
        0
    }

    /// Number of stored blocks.
    pub fn len(&self) -> usize {
        self.blocks.len()
    }

    /// Whether only... never: the store always holds genesis.
    pub fn is_empty(&self) -> bool {
        self.blocks.is_empty()
    }

    /// The id of a stored block.
    pub fn id_of(&self, hash: &BlockHash) -> Option<BlockId> {
        self.index.get(hash).copied()
    }

    /// A stored block.
    pub fn rec(&self, id: BlockId) -> &BlockRec {
        &self.blocks[id as usize]
    }

    /// Every stored block, by id.
    pub fn blocks(&self) -> &[BlockRec] {
        &self.blocks
    }

    /// Stores a block whose parent is stored; returns its id (the existing
    /// one if it is already stored). Does not validate.
    pub fn insert(&mut self, data: Arc<SimBlock>, origin: Option<Origin>) -> Result<BlockId, DbError> {
        if let Some(id) = self.id_of(&data.hash) {
            return Ok(id);
        }
        let parent_hash = data.block.header.prev_blockhash;
        let Some(parent) = self.id_of(&parent_hash) else {
            return Err(DbError::UnknownParent { block: data.hash, parent: parent_hash });
        };
        let own = pow::header_work(&data.block.header)
            .map_err(|e| DbError::BadBits { block: data.hash, reason: e.to_string() })?;
        let p = &self.blocks[parent as usize];
        let height = p.height + 1;
        let work = p.work + own;
        let id = self.blocks.len() as BlockId;
        let mtp = self.median_time(parent, Some(data.block.header.time));
        self.index.insert(data.hash, id);
        self.blocks.push(BlockRec {
            data,
            parent: Some(parent),
            height,
            work,
            mtp,
            status: Status::Unchecked,
            fees: Amount::ZERO,
            origin,
        });
        Ok(id)
    }

    /// Median of the last `mtp_window` header times ending at `id` (and
    /// `extra`, a child's time, if given — then the window ends there).
    fn median_time(&self, id: BlockId, extra: Option<u32>) -> u32 {
        let window = self.params.mtp_window.max(1);
        let mut times = Vec::with_capacity(window);
        times.extend(extra);
        let mut cur = Some(id);
        while let Some(c) = cur {
            if times.len() >= window {
                break;
            }
            let r = &self.blocks[c as usize];
            times.push(r.data.block.header.time);
            cur = r.parent;
        }
        times.sort_unstable();
        times[times.len() / 2]
    }

    /// The ancestor of `id` at `height` (or `id` itself if lower).
    pub fn ancestor(&self, mut id: BlockId, height: u32) -> BlockId {
        while self.blocks[id as usize].height > height {
            match self.blocks[id as usize].parent {
                Some(p) => id = p,
                None => break,
            }
        }
        id
    }

    /// The last common ancestor of two blocks.
    pub fn fork_point(&self, a: BlockId, b: BlockId) -> BlockId {
        let h = self.rec(a).height.min(self.rec(b).height);
        let (mut a, mut b) = (self.ancestor(a, h), self.ancestor(b, h));
        while a != b {
            match (self.rec(a).parent, self.rec(b).parent) {
                (Some(pa), Some(pb)) => {
                    a = pa;
                    b = pb;
                }
                _ => break,
            }
        }
        a
    }

    /// Whether `ancestor` is `id` or one of its ancestors.
    pub fn is_ancestor(&self, ancestor: BlockId, id: BlockId) -> bool {
        self.ancestor(id, self.rec(ancestor).height) == ancestor
    }

    /// The bits a child of `parent` must carry.
    pub fn next_bits(&self, parent: BlockId) -> CompactTarget {
        let p = self.rec(parent);
        let h = &p.data.block.header;
        pow::next_work_required(&self.params, p.height, h.bits, h.time, |height| {
            Some(self.rec(self.ancestor(parent, height)).data.block.header.time)
        })
    }

    /// A header for a child of `parent` at Unix time `time` (bits and the
    /// median-time-past rule applied), with a zero merkle root.
    pub fn child_header(&self, parent: BlockId, time: u32) -> Header {
        let p = self.rec(parent);
        Header {
            version: bitcoin::block::Version::from_consensus(crate::template::TEMPLATE_VERSION),
            prev_blockhash: p.data.hash,
            merkle_root: bitcoin::hashes::Hash::all_zeros(),
            time: time.max(p.mtp.saturating_add(1)),
            bits: self.next_bits(parent),
            nonce: 0,
        }
    }

    /// The UTXO set after a valid block.
    pub fn utxo(&self, id: BlockId) -> Option<&Arc<UtxoSnapshot>> {
        match &self.rec(id).status {
            Status::Valid(u) => Some(u),
            _ => None,
        }
    }

    /// Validates `id` and its ancestors (each at most once in the store's
    /// life); returns the block's verdict.
    pub fn validate(&mut self, id: BlockId) -> Result<(), BlockError> {
        // Collect the unchecked ancestors, oldest last.
        let mut path = Vec::new();
        let mut cur = id;
        loop {
            match &self.rec(cur).status {
                Status::Valid(_) => break,
                Status::Invalid(e) => {
                    let e = e.clone();
                    for b in path {
                        self.blocks[b as usize].status = Status::Invalid(e.clone());
                    }
                    return Err(e);
                }
                Status::Unchecked => {
                    path.push(cur);
                    match self.rec(cur).parent {
                        Some(p) => cur = p,
                        None => break,
                    }
                }
            }
        }
        let mut verdict: Result<(), BlockError> = Ok(());
        for b in path.into_iter().rev() {
            if let Err(e) = &verdict {
                self.blocks[b as usize].status = Status::Invalid(e.clone());
                continue;
            }
            match self.check_one(b) {
                Ok((utxo, fees)) => {
                    let r = &mut self.blocks[b as usize];
                    r.status = Status::Valid(Arc::new(utxo));
                    r.fees = fees;
                }
                Err(e) => {
                    self.blocks[b as usize].status = Status::Invalid(e.clone());
                    verdict = Err(e);
                }
            }
        }
        match &self.rec(id).status {
            Status::Invalid(e) => Err(e.clone()),
            _ => verdict,
        }
    }

    fn check_one(&self, id: BlockId) -> Result<(UtxoSnapshot, Amount), BlockError> {
        let r = self.rec(id);
        let parent = r.parent.ok_or(BlockError::NoTransactions)?;
        let p = self.rec(parent);
        let block = &r.data.block;
        validate::check_block(block, &self.params)?;
        let info = ParentInfo {
            hash: p.data.hash,
            height: p.height,
            mtp: p.mtp,
            expected_bits: self.next_bits(parent),
        };
        // The future-time rule depends on each node's clock; nodes apply it.
        validate::check_header_context(&block.header, &info, &self.params, u64::MAX / 2)?;
        validate::contextual_check_block(block, r.height, p.mtp, &self.params)?;
        self.consensus.check(self, parent, block)?;
        let weight = r.data.weight();
        if weight > self.params.max_block_weight {
            return Err(BlockError::WeightTooHigh { weight, max: self.params.max_block_weight });
        }
        let base = match &p.status {
            Status::Valid(u) => u.clone(),
            _ => return Err(BlockError::NoTransactions),
        };
        let mtp_at = |h: u32| self.rec(self.ancestor(parent, h)).mtp;
        let ctx = TxContext {
            spend_height: r.height,
            prev_mtp: p.mtp,
            mtp_at: &mtp_at,
            flags: self.params.script_flags,
        };
        let fees = validate::check_block_inputs(block, base.as_ref(), &ctx, &self.params)?;
        let mut utxo = (*base).clone();
        utxo.apply(block, r.height);
        Ok((utxo, fees))
    }

    /// Stores a transaction (or finds it); returns its index.
    pub fn intern_tx(&mut self, tx: Arc<Transaction>, now_ns: u64) -> TxIdx {
        let txid = tx.compute_txid();
        if let Some(i) = self.tx_index.get(&txid) {
            return *i;
        }
        let idx = self.txs.len() as TxIdx;
        let mut buf = Vec::new();
        let size = tx.consensus_encode(&mut buf).unwrap_or(0) as u32;
        let vsize = tx.weight().to_vbytes_ceil() as u32;
        self.txs.push(TxRec { tx, txid, vsize, size, checked: None, first_seen_ns: now_ns });
        self.tx_index.insert(txid, idx);
        idx
    }

    /// The index of a stored transaction.
    pub fn tx_idx(&self, txid: &Txid) -> Option<TxIdx> {
        self.tx_index.get(txid).copied()
    }

    /// A stored transaction.
    pub fn tx(&self, idx: TxIdx) -> &TxRec {
        &self.txs[idx as usize]
    }

    /// Every stored transaction, by index.
    pub fn txs(&self) -> &[TxRec] {
        &self.txs
    }

    /// Context-free rules and scripts of a transaction against the coins it
    /// spends (found in `view`), memoized per transaction: a coin is unique
    /// to its outpoint, so the verdict never changes once inputs are found.
    /// Returns the fee. Missing inputs are reported and not memoized.
    pub fn check_tx(
        &mut self,
        idx: TxIdx,
        view: &impl CoinView,
        spend_height: u32,
    ) -> Result<Amount, TxError> {
        if let Some(v) = &self.txs[idx as usize].checked {
            return v.clone();
        }
        let tx = Arc::clone(&self.txs[idx as usize].tx);
        validate::check_transaction(&tx, &self.params)?;
        let spent = validate::check_tx_inputs(&tx, view, spend_height, &self.params)?;
        let verdict =
            validate::verify_scripts(&tx, &spent.txouts(), &self.params.script_flags).map(|()| spent.fee);
        self.txs[idx as usize].checked = Some(verdict.clone());
        verdict
    }
}
