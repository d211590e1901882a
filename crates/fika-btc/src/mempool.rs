//! The memory pool of unconfirmed transactions.
//!
//! * [`Mempool::accept`] fully validates a transaction against the best
//!   chain's UTXO set plus the pool (unconfirmed parents are allowed), with
//!   scripts through Core's engine, and refuses any transaction spending an
//!   outpoint another pool transaction already spends (no RBF).
//! * [`Mempool::select_for_block`] picks transactions for a block template
//!   by ancestor-package fee rate (Core's `addPackageTxs`), parents always
//!   before children.
//! * A byte limit evicts the lowest fee-rate transactions (with their
//!   descendants); equal rates evict the most recent arrival first.
//! * [`Mempool::update_for_chain`] follows an [`AcceptOutcome`]: removes
//!   confirmed and conflicting transactions, and after a reorganisation
//!   re-adds the transactions of disconnected blocks.
//!
//! Every ordering is by fee rate, then arrival sequence, then txid: no hash
//! map iteration influences any result.

use std::cmp::{Ordering, Reverse};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use bitcoin::{Amount, Block, OutPoint, Transaction, Txid};
use thiserror::Error;

use crate::chain::{AcceptOutcome, ChainState};
use crate::utxo::{Coin, CoinView};
use crate::validate::{self, TxContext, TxError};

/// Mempool settings.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct MempoolConfig {
    /// Limit on the sum of serialized transaction sizes, in bytes.
    pub max_bytes: u64,
    /// Minimum fee rate, in satoshis per 1000 virtual bytes.
    pub min_fee_rate_sat_per_kvb: u64,
    /// Largest number of in-pool ancestors a transaction may have.
    pub max_ancestors: usize,
    /// Whether to apply the policy-only script rules as well.
    pub policy_scripts: bool,
}

impl Default for MempoolConfig {
    fn default() -> Self {
        MempoolConfig {
            max_bytes: 300_000_000,
            min_fee_rate_sat_per_kvb: 1000,
            max_ancestors: 25,
            policy_scripts: true,
        }
    }
}

/// Why a transaction was not accepted.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MempoolError {
    /// Already in the pool.
    #[error("transaction {0} is already in the mempool")]
    AlreadyInPool(Txid),
    /// Its outputs are already in the UTXO set.
    #[error("transaction {0} is already confirmed")]
    AlreadyConfirmed(Txid),
    /// Spends an outpoint another pool transaction spends.
    #[error("double spend: {outpoint} is already spent by mempool transaction {existing}")]
    Conflict {
        /// The contested outpoint.
        outpoint: OutPoint,
        /// The pool transaction spending it.
        existing: Txid,
    },
    /// Fails validation.
    #[error("invalid transaction {txid}: {error}")]
    Invalid {
        /// The transaction.
        txid: Txid,
        /// Why.
        error: TxError,
    },
    /// Pays less than the minimum fee rate.
    #[error("fee {fee} for {vsize} vB is below the minimum {min_sat_per_kvb} sat/kvB")]
    FeeTooLow {
        /// Its fee.
        fee: Amount,
        /// Its virtual size.
        vsize: u64,
        /// The minimum rate.
        min_sat_per_kvb: u64,
    },
    /// Too many unconfirmed ancestors.
    #[error("transaction {txid} has {count} unconfirmed ancestors (max {max})")]
    TooManyAncestors {
        /// The transaction.
        txid: Txid,
        /// Its ancestor count.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// The pool is full and this transaction's fee rate is among the lowest.
    #[error("mempool full: transaction {txid} evicted at once")]
    MempoolFull {
        /// The refused transaction.
        txid: Txid,
        /// Other transactions evicted while trying.
        evicted: Vec<Txid>,
    },
}

/// A fee rate as an exact fraction, ordered by value.
#[derive(Clone, Copy, Debug)]
pub struct FeeRate {
    /// Fee in satoshis.
    pub fee: u64,
    /// Virtual size in vbytes (at least 1).
    pub vsize: u64,
}

impl FeeRate {
    /// Satoshis per virtual byte, as a float (for display).
    pub fn sat_per_vb(&self) -> f64 {
        self.fee as f64 / self.vsize.max(1) as f64
    }
}

impl PartialEq for FeeRate {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}
impl Eq for FeeRate {}
impl PartialOrd for FeeRate {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for FeeRate {
    fn cmp(&self, other: &Self) -> Ordering {
        (u128::from(self.fee) * u128::from(other.vsize.max(1)))
            .cmp(&(u128::from(other.fee) * u128::from(self.vsize.max(1))))
    }
}

/// A pooled transaction.
#[derive(Clone, Debug)]
pub struct MempoolEntry {
    /// The transaction.
    pub tx: Arc<Transaction>,
    /// Its txid.
    pub txid: Txid,
    /// Its fee.
    pub fee: Amount,
    /// Virtual size (vbytes).
    pub vsize: u64,
    /// Weight units.
    pub weight: u64,
    /// Serialized size in bytes.
    pub size: u64,
    /// Legacy sigop cost ([`validate::legacy_sigop_cost`]).
    pub sigop_cost: u64,
    /// Arrival sequence number.
    pub seq: u64,
    parents: BTreeSet<Txid>,
    children: BTreeSet<Txid>,
}

impl MempoolEntry {
    /// Its own fee rate.
    pub fn fee_rate(&self) -> FeeRate {
        FeeRate { fee: self.fee.to_sat(), vsize: self.vsize }
    }

    /// In-pool parents.
    pub fn parents(&self) -> &BTreeSet<Txid> {
        &self.parents
    }

    /// In-pool children.
    pub fn children(&self) -> &BTreeSet<Txid> {
        &self.children
    }
}

/// A successful [`Mempool::accept`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Accepted {
    /// The transaction.
    pub txid: Txid,
    /// Its fee.
    pub fee: Amount,
    /// Its virtual size.
    pub vsize: u64,
    /// Transactions evicted to make room.
    pub evicted: Vec<Txid>,
}

/// What a chain update did to the pool.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PoolUpdate {
    /// Removed because a connected block contains them.
    pub confirmed: Vec<Txid>,
    /// Removed because a connected block spends one of their inputs (with
    /// their descendants).
    pub conflicted: Vec<Txid>,
    /// Transactions of disconnected blocks now back in the pool.
    pub readded: Vec<Txid>,
    /// Transactions dropped on revalidation after a reorganisation.
    pub dropped: Vec<Txid>,
}

/// The mempool.
#[derive(Clone, Debug, Default)]
pub struct Mempool {
    config: MempoolConfig,
    entries: BTreeMap<Txid, MempoolEntry>,
    spent_by: BTreeMap<OutPoint, Txid>,
    by_rate: BTreeSet<(FeeRate, Reverse<u64>, Txid)>,
    total_bytes: u64,
    next_seq: u64,
}

struct PoolView<'a> {
    chain: &'a ChainState,
    pool: &'a Mempool,
    height: u32,
}

impl CoinView for PoolView<'_> {
    fn coin(&self, outpoint: &OutPoint) -> Option<Coin> {
        if let Some(e) = self.pool.entries.get(&outpoint.txid) {
            return e.tx.output.get(outpoint.vout as usize).map(|o| Coin {
                txout: o.clone(),
                height: self.height,
                is_coinbase: false,
            });
        }
        self.chain.coin(outpoint)
    }
}

impl Mempool {
    /// An empty pool.
    pub fn new(config: MempoolConfig) -> Self {
        Mempool { config, ..Default::default() }
    }

    /// The settings.
    pub fn config(&self) -> &MempoolConfig {
        &self.config
    }

    /// Number of transactions.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the pool is empty.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of serialized sizes, in bytes.
    pub fn total_bytes(&self) -> u64 {
        self.total_bytes
    }

    /// Whether `txid` is pooled.
    pub fn contains(&self, txid: &Txid) -> bool {
        self.entries.contains_key(txid)
    }

    /// The entry of `txid`.
    pub fn get(&self, txid: &Txid) -> Option<&MempoolEntry> {
        self.entries.get(txid)
    }

    /// The pool transaction spending `outpoint`, if any.
    pub fn spender_of(&self, outpoint: &OutPoint) -> Option<Txid> {
        self.spent_by.get(outpoint).copied()
    }

    /// All entries in arrival order.
    pub fn entries_by_arrival(&self) -> Vec<&MempoolEntry> {
        let mut v: Vec<&MempoolEntry> = self.entries.values().collect();
        v.sort_by_key(|e| e.seq);
        v
    }

    /// Validates `tx` against `chain` and the pool and adds it.
    pub fn accept(
        &mut self,
        tx: impl Into<Arc<Transaction>>,
        chain: &ChainState,
    ) -> Result<Accepted, MempoolError> {
        let tx: Arc<Transaction> = tx.into();
        let txid = tx.compute_txid();
        let invalid = |error| MempoolError::Invalid { txid, error };
        if self.entries.contains_key(&txid) {
            return Err(MempoolError::AlreadyInPool(txid));
        }
        let params = chain.params();
        validate::check_transaction(&tx, params).map_err(invalid)?;
        if tx.is_coinbase() {
            return Err(invalid(TxError::UnexpectedCoinbase(txid)));
        }
        for input in &tx.input {
            if let Some(existing) = self.spent_by.get(&input.previous_output) {
                return Err(MempoolError::Conflict { outpoint: input.previous_output, existing: *existing });
            }
        }
        if (0..tx.output.len()).any(|v| chain.utxo().contains(&OutPoint::new(txid, v as u32))) {
            return Err(MempoolError::AlreadyConfirmed(txid));
        }
        let parents: BTreeSet<Txid> = tx
            .input
            .iter()
            .map(|i| i.previous_output.txid)
            .filter(|t| self.entries.contains_key(t))
            .collect();
        let ancestors = self.ancestors_of_parents(&parents);
        if ancestors.len() > self.config.max_ancestors {
            return Err(MempoolError::TooManyAncestors {
                txid,
                count: ancestors.len(),
                max: self.config.max_ancestors,
            });
        }
        let height = chain.tip_height() + 1;
        let flags =
            if self.config.policy_scripts { params.script_flags.with_policy() } else { params.script_flags };
        let mtp_at = |h: u32| chain.mtp_at_height(h);
        let ctx =
            TxContext { spend_height: height, prev_mtp: chain.median_time_past(), mtp_at: &mtp_at, flags };
        let view = PoolView { chain, pool: self, height };
        let spent = validate::validate_tx_in_context(&tx, &view, &ctx, params).map_err(invalid)?;
        let vsize = tx.vsize() as u64;
        let fee = spent.fee;
        if u128::from(fee.to_sat()) * 1000
            < u128::from(self.config.min_fee_rate_sat_per_kvb) * u128::from(vsize)
        {
            return Err(MempoolError::FeeTooLow {
                fee,
                vsize,
                min_sat_per_kvb: self.config.min_fee_rate_sat_per_kvb,
            });
        }
        self.insert(tx, txid, fee, parents);
        let evicted = self.trim();
        if evicted.contains(&txid) {
            return Err(MempoolError::MempoolFull { txid, evicted });
        }
        Ok(Accepted { txid, fee, vsize, evicted })
    }

    fn ancestors_of_parents(&self, parents: &BTreeSet<Txid>) -> BTreeSet<Txid> {
        let mut out = BTreeSet::new();
        let mut queue: VecDeque<Txid> = parents.iter().copied().collect();
        while let Some(t) = queue.pop_front() {
            if out.insert(t) {
                if let Some(e) = self.entries.get(&t) {
                    queue.extend(e.parents.iter().copied());
                }
            }
        }
        out
    }

    fn insert(&mut self, tx: Arc<Transaction>, txid: Txid, fee: Amount, parents: BTreeSet<Txid>) {
        let seq = self.next_seq;
        self.next_seq += 1;
        for input in &tx.input {
            self.spent_by.insert(input.previous_output, txid);
        }
        for p in &parents {
            if let Some(pe) = self.entries.get_mut(p) {
                pe.children.insert(txid);
            }
        }
        let entry = MempoolEntry {
            txid,
            fee,
            vsize: tx.vsize() as u64,
            weight: tx.weight().to_wu(),
            size: tx.total_size() as u64,
            sigop_cost: validate::legacy_sigop_cost(&tx),
            seq,
            parents,
            children: BTreeSet::new(),
            tx,
        };
        self.total_bytes += entry.size;
        self.by_rate.insert((entry.fee_rate(), Reverse(seq), txid));
        self.entries.insert(txid, entry);
    }

    /// Removes one transaction (not its descendants); returns it.
    fn remove_one(&mut self, txid: &Txid) -> Option<MempoolEntry> {
        let e = self.entries.remove(txid)?;
        self.total_bytes -= e.size;
        self.by_rate.remove(&(e.fee_rate(), Reverse(e.seq), *txid));
        for input in &e.tx.input {
            if self.spent_by.get(&input.previous_output) == Some(txid) {
                self.spent_by.remove(&input.previous_output);
            }
        }
        for p in &e.parents {
            if let Some(pe) = self.entries.get_mut(p) {
                pe.children.remove(txid);
            }
        }
        for c in &e.children {
            if let Some(ce) = self.entries.get_mut(c) {
                ce.parents.remove(txid);
            }
        }
        Some(e)
    }

    /// Removes `txid` and all its in-pool descendants; returns the removed
    /// txids (the given one first).
    pub fn remove_with_descendants(&mut self, txid: &Txid) -> Vec<Txid> {
        let mut order = Vec::new();
        let mut seen = BTreeSet::new();
        let mut queue = VecDeque::from([*txid]);
        while let Some(t) = queue.pop_front() {
            if !seen.insert(t) {
                continue;
            }
            if let Some(e) = self.entries.get(&t) {
                order.push(t);
                queue.extend(e.children.iter().copied());
            }
        }
        for t in &order {
            self.remove_one(t);
        }
        order
    }

    /// Evicts lowest fee-rate transactions (with descendants) until the pool
    /// fits its byte limit.
    fn trim(&mut self) -> Vec<Txid> {
        let mut evicted = Vec::new();
        while self.total_bytes > self.config.max_bytes {
            let Some((_, _, worst)) = self.by_rate.first().copied() else {
                break;
            };
            evicted.extend(self.remove_with_descendants(&worst));
        }
        evicted
    }

    /// Removes the transactions `block` confirms, then those conflicting
    /// with it (and their descendants).
    pub fn remove_for_block(&mut self, block: &Block) -> PoolUpdate {
        let mut update = PoolUpdate::default();
        for tx in block.txdata.iter().skip(1) {
            let txid = tx.compute_txid();
            if self.remove_one(&txid).is_some() {
                update.confirmed.push(txid);
            }
        }
        for tx in block.txdata.iter().skip(1) {
            for input in &tx.input {
                if let Some(spender) = self.spent_by.get(&input.previous_output).copied() {
                    update.conflicted.extend(self.remove_with_descendants(&spender));
                }
            }
        }
        update
    }

    /// Follows a change of the best chain reported by
    /// [`ChainState::accept_block`]. Without disconnected blocks this only
    /// removes confirmed/conflicting transactions. After a reorganisation it
    /// also re-validates the whole pool: transactions of disconnected blocks
    /// (oldest block first) are offered again, then the previous pool in
    /// arrival order.
    pub fn update_for_chain(&mut self, outcome: &AcceptOutcome, chain: &ChainState) -> PoolUpdate {
        let mut update = PoolUpdate::default();
        for hash in &outcome.connected {
            if let Some(block) = chain.block(hash) {
                let u = self.remove_for_block(block);
                update.confirmed.extend(u.confirmed);
                update.conflicted.extend(u.conflicted);
            }
        }
        if outcome.disconnected.is_empty() {
            return update;
        }
        let mut resurrect: Vec<Arc<Transaction>> = Vec::new();
        for hash in outcome.disconnected.iter().rev() {
            if let Some(block) = chain.block(hash) {
                resurrect.extend(block.txdata.iter().skip(1).map(|t| Arc::new(t.clone())));
            }
        }
        let old: Vec<Arc<Transaction>> =
            self.entries_by_arrival().into_iter().map(|e| Arc::clone(&e.tx)).collect();
        let old_ids: BTreeSet<Txid> = old.iter().map(|t| t.compute_txid()).collect();
        self.entries.clear();
        self.spent_by.clear();
        self.by_rate.clear();
        self.total_bytes = 0;
        for tx in resurrect {
            let txid = tx.compute_txid();
            if self.accept(tx, chain).is_ok() && !old_ids.contains(&txid) {
                update.readded.push(txid);
            }
        }
        for tx in old {
            let txid = tx.compute_txid();
            match self.accept(tx, chain) {
                Ok(_) | Err(MempoolError::AlreadyInPool(_)) => {}
                Err(_) => update.dropped.push(txid),
            }
        }
        update
    }

    /// Transactions for a block of at most `max_weight` weight units and
    /// `max_sigop_cost` legacy sigop cost, by ancestor-package fee rate (Core's `addPackageTxs`): repeatedly take
    /// the transaction whose not-yet-selected ancestors plus itself pay the
    /// best rate, and add that package parents first. Ties go to the
    /// earlier arrival.
    pub fn select_for_block(&self, max_weight: u64, max_sigop_cost: u64) -> Vec<Arc<Transaction>> {
        // All in-pool ancestors of every entry.
        let mut ancestors: BTreeMap<Txid, BTreeSet<Txid>> = BTreeMap::new();
        for e in self.entries_by_arrival() {
            let anc = self.ancestors_of_parents(&e.parents);
            ancestors.insert(e.txid, anc);
        }
        let included_set = BTreeSet::new();
        let score = |txid: &Txid, included: &BTreeSet<Txid>| -> FeeRate {
            let mut fee = 0u64;
            let mut vsize = 0u64;
            let own = std::iter::once(txid);
            let anc = ancestors.get(txid).into_iter().flatten();
            for t in own.chain(anc) {
                if included.contains(t) {
                    continue;
                }
                if let Some(e) = self.entries.get(t) {
                    fee += e.fee.to_sat();
                    vsize += e.vsize;
                }
            }
            FeeRate { fee, vsize: vsize.max(1) }
        };
        let mut heap: BTreeSet<(Reverse<FeeRate>, u64, Txid)> = BTreeSet::new();
        let mut key: BTreeMap<Txid, (Reverse<FeeRate>, u64, Txid)> = BTreeMap::new();
        for e in self.entries.values() {
            let k = (Reverse(score(&e.txid, &included_set)), e.seq, e.txid);
            heap.insert(k);
            key.insert(e.txid, k);
        }
        let mut included: BTreeSet<Txid> = BTreeSet::new();
        let mut failed: BTreeSet<Txid> = BTreeSet::new();
        let mut out: Vec<Arc<Transaction>> = Vec::new();
        let mut weight = 0u64;
        let mut sigops = 0u64;
        while let Some((_, _, txid)) = heap.pop_first() {
            key.remove(&txid);
            let mut package: Vec<&MempoolEntry> = std::iter::once(&txid)
                .chain(ancestors.get(&txid).into_iter().flatten())
                .filter(|t| !included.contains(*t))
                .filter_map(|t| self.entries.get(t))
                .collect();
            if package.iter().any(|e| failed.contains(&e.txid)) {
                failed.insert(txid);
                continue;
            }
            let w: u64 = package.iter().map(|e| e.weight).sum();
            let c: u64 = package.iter().map(|e| e.sigop_cost).sum();
            if weight + w > max_weight || sigops + c > max_sigop_cost {
                failed.insert(txid);
                continue;
            }
            // Topological: fewer ancestors first, then arrival.
            package.sort_by_key(|e| (ancestors.get(&e.txid).map_or(0, BTreeSet::len), e.seq));
            weight += w;
            sigops += c;
            let mut touched = BTreeSet::new();
            for e in &package {
                included.insert(e.txid);
                out.push(Arc::clone(&e.tx));
                if let Some(k) = key.remove(&e.txid) {
                    heap.remove(&k);
                }
            }
            for e in &package {
                let mut queue: VecDeque<Txid> = e.children.iter().copied().collect();
                while let Some(d) = queue.pop_front() {
                    if included.contains(&d) || !touched.insert(d) {
                        continue;
                    }
                    if let Some(de) = self.entries.get(&d) {
                        queue.extend(de.children.iter().copied());
                    }
                }
            }
            for d in touched {
                if let (Some(old), Some(de)) = (key.get(&d).copied(), self.entries.get(&d)) {
                    heap.remove(&old);
                    let k = (Reverse(score(&d, &included)), de.seq, d);
                    heap.insert(k);
                    key.insert(d, k);
                }
            }
        }
        out
    }
}
