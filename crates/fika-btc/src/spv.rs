//! A light (SPV) client: a header chain plus merkle proofs, feeding a
//! [`Wallet`].
//!
//! * Headers enter through [`SpvClient::accept_headers`], which validates
//!   them with [`ChainState::accept_header`] (bits, PoW per mode, time) and
//!   follows the most-work header chain.
//! * Transactions enter only with a proof: [`SpvClient::accept_merkle_proof`]
//!   checks a BIP37 partial merkle tree against a *known* header's merkle
//!   root and checks that every given transaction is among the proven
//!   matches; a transaction that was tampered with has another txid and is
//!   refused. Nothing is stored unless the whole proof is valid.
//! * The wallet always reflects exactly the proven blocks on the best header
//!   chain, in height order. When the best header chain changes (a
//!   reorganisation), wallet blocks that left it are disconnected (tip
//!   first) and proven blocks that joined it are applied; proofs for side
//!   branches are kept, so switching back restores them. Proofs may arrive
//!   in any order: a proof for a block below the wallet's last applied block
//!   disconnects down to it and re-applies.
//!
//! Like the rest of the crate this is sans-IO: the caller passes the time
//! (`now`, Unix seconds) and all state lives in ordered containers.

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::block::Header;
use bitcoin::merkle_tree::{MerkleBlock, PartialMerkleTree};
use bitcoin::{BlockHash, Transaction, Txid};
use thiserror::Error;

use crate::chain::{ChainError, ChainState};
use crate::merkle::{self, MerkleError};
use crate::params::ChainParams;
use crate::wallet::{Balance, Wallet, WalletError};

/// Why a header batch or proof was refused.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SpvError {
    /// A header was refused (unknown parent, bad bits or PoW, bad time…).
    #[error("header refused: {0}")]
    Header(#[from] ChainError),
    /// A proof refers to a header the client does not have.
    #[error("proof for unknown header {0}")]
    UnknownHeader(BlockHash),
    /// The partial merkle tree is malformed or its root is not the
    /// header's merkle root.
    #[error("proof for block {block} refused: {error}")]
    Proof {
        /// The block the proof claims.
        block: BlockHash,
        /// Why.
        error: MerkleError,
    },
    /// A given transaction is not among the proof's matches (it was
    /// altered, or belongs to another block).
    #[error("transaction {txid} is not proven in block {block}")]
    NotInProof {
        /// The block.
        block: BlockHash,
        /// The unproven transaction.
        txid: Txid,
    },
    /// A coinbase transaction not at index 0, or another one at index 0.
    #[error("transaction {txid} at index {index} of block {block}: coinbase position mismatch")]
    CoinbasePosition {
        /// The block.
        block: BlockHash,
        /// The transaction.
        txid: Txid,
        /// Its proven index.
        index: u32,
    },
    /// The proof came without transactions.
    #[error("proof for block {0} carries no transactions")]
    NoTransactions(BlockHash),
    /// The wallet refused a block (a bug: the client feeds it in order).
    #[error("wallet: {0}")]
    Wallet(#[from] WalletError),
}

/// What a header batch or proof changed.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct SpvUpdate {
    /// Headers that were new.
    pub new_headers: usize,
    /// The best header afterwards.
    pub best: BlockHash,
    /// Its height.
    pub best_height: u32,
    /// Proven blocks disconnected from the wallet, highest first.
    pub disconnected: Vec<BlockHash>,
    /// Proven blocks applied to the wallet, lowest first.
    pub connected: Vec<BlockHash>,
}

/// The result of [`SpvClient::accept_merkle_proof`].
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct ProofOutcome {
    /// The block.
    pub block: BlockHash,
    /// Its height.
    pub height: u32,
    /// The given transactions with their proven index, in block order.
    pub proven: Vec<(u32, Txid)>,
    /// Whether the block is on the best header chain (so the wallet has it).
    pub on_best_chain: bool,
    /// Wallet changes caused by the proof.
    pub update: SpvUpdate,
}

#[derive(Clone, Debug)]
struct ProvenBlock {
    height: u32,
    /// Proven transactions by index in the block.
    txs: BTreeMap<u32, Transaction>,
}

/// A light client: header chain, verified proofs and the wallet they feed.
#[derive(Clone, Debug)]
pub struct SpvClient {
    headers: ChainState,
    /// The best header chain, genesis first.
    best_chain: Vec<BlockHash>,
    proven: BTreeMap<BlockHash, ProvenBlock>,
    tx_blocks: BTreeMap<Txid, BTreeSet<BlockHash>>,
    /// Proven blocks applied to the wallet, lowest first.
    applied: Vec<(BlockHash, u32)>,
    wallet: Wallet,
}

impl SpvClient {
    /// A client at the genesis header of `params`, feeding `wallet` (which
    /// should have no blocks applied yet).
    pub fn new(params: ChainParams, wallet: Wallet) -> Self {
        let headers = ChainState::new(params);
        let best_chain = vec![headers.genesis_hash()];
        SpvClient {
            headers,
            best_chain,
            proven: BTreeMap::new(),
            tx_blocks: BTreeMap::new(),
            applied: Vec::new(),
            wallet,
        }
    }

    /// The wallet.
    pub fn wallet(&self) -> &Wallet {
        &self.wallet
    }

    /// The wallet, mutably (for payments and pending transactions). Blocks
    /// must not be applied or disconnected through it: the client does that.
    pub fn wallet_mut(&mut self) -> &mut Wallet {
        &mut self.wallet
    }

    /// The header tree (a [`ChainState`] holding headers only).
    pub fn headers(&self) -> &ChainState {
        &self.headers
    }

    /// The best header's hash.
    pub fn best_hash(&self) -> BlockHash {
        self.headers.best_header().hash
    }

    /// The best header's height.
    pub fn best_height(&self) -> u32 {
        self.headers.best_header().height
    }

    /// The header `hash`, if known.
    pub fn header(&self, hash: &BlockHash) -> Option<&Header> {
        self.headers.entry(hash).map(|e| &e.header)
    }

    /// Whether `hash` is on the best header chain.
    pub fn is_on_best_chain(&self, hash: &BlockHash) -> bool {
        self.headers.entry(hash).is_some_and(|e| self.best_chain.get(e.height as usize) == Some(hash))
    }

    /// The hash at `height` on the best header chain.
    pub fn hash_at_height(&self, height: u32) -> Option<BlockHash> {
        self.best_chain.get(height as usize).copied()
    }

    /// The wallet's balance at the best header height.
    pub fn balance(&self) -> Balance {
        self.wallet.balance(self.best_height())
    }

    /// The proven blocks fed to the wallet, `(hash, height)`, lowest first.
    pub fn applied_blocks(&self) -> &[(BlockHash, u32)] {
        &self.applied
    }

    /// Confirmations of a proven transaction on the best header chain
    /// (best height − block height + 1), or 0 if it is not proven in a
    /// block of that chain.
    pub fn confirmations(&self, txid: &Txid) -> u32 {
        let best = self.best_height();
        self.tx_blocks
            .get(txid)
            .into_iter()
            .flatten()
            .filter(|b| self.is_on_best_chain(b))
            .filter_map(|b| self.proven.get(b))
            .map(|p| best.saturating_sub(p.height) + 1)
            .max()
            .unwrap_or(0)
    }

    /// A proven transaction and the blocks proving it (best chain first).
    pub fn transaction(&self, txid: &Txid) -> Option<(&Transaction, Vec<BlockHash>)> {
        let blocks = self.tx_blocks.get(txid)?;
        let mut hashes: Vec<BlockHash> = blocks.iter().copied().collect();
        hashes.sort_by_key(|b| !self.is_on_best_chain(b));
        let tx = hashes
            .iter()
            .filter_map(|b| self.proven.get(b))
            .flat_map(|p| p.txs.values())
            .find(|t| t.compute_txid() == *txid)?;
        Some((tx, hashes))
    }

    /// Accepts one header; see [`SpvClient::accept_headers`].
    pub fn accept_header(&mut self, header: &Header, now: u64) -> Result<SpvUpdate, SpvError> {
        self.accept_headers(std::slice::from_ref(header), now)
    }

    /// Accepts headers in order (each parent must be known) at time `now`
    /// (Unix seconds), then moves the wallet to the new best header chain.
    /// On a refused header the ones before it stay accepted, the wallet is
    /// still brought up to date, and the error is returned.
    pub fn accept_headers(&mut self, headers: &[Header], now: u64) -> Result<SpvUpdate, SpvError> {
        let mut new_headers = 0;
        let mut failure = None;
        for h in headers {
            match self.headers.accept_header(h, now) {
                Ok(o) => new_headers += usize::from(o.is_new),
                Err(e) => {
                    failure = Some(SpvError::Header(e));
                    break;
                }
            }
        }
        let mut update = match self.refresh_best_chain() {
            Some(fork) => self.resync(fork)?,
            None => self.empty_update(),
        };
        update.new_headers = new_headers;
        match failure {
            Some(e) => Err(e),
            None => Ok(update),
        }
    }

    /// Accepts a BIP37 merkle block (its header must be known) proving
    /// `txs`; see [`SpvClient::accept_merkle_proof`].
    pub fn accept_merkle_block(
        &mut self,
        proof: &MerkleBlock,
        txs: &[Transaction],
    ) -> Result<ProofOutcome, SpvError> {
        self.accept_merkle_proof(proof.header.block_hash(), &proof.txn, txs)
    }

    /// Verifies that every transaction of `txs` is committed by `pmt` under
    /// the merkle root of the known header `header_hash`, stores them, and
    /// hands them to the wallet if the block is on the best header chain.
    /// Refuses (changing nothing) proofs for unknown headers, proofs whose
    /// root does not match, and transactions not among the matches.
    pub fn accept_merkle_proof(
        &mut self,
        header_hash: BlockHash,
        pmt: &PartialMerkleTree,
        txs: &[Transaction],
    ) -> Result<ProofOutcome, SpvError> {
        let block = header_hash;
        let entry = self.headers.entry(&block).ok_or(SpvError::UnknownHeader(block))?;
        let (header, height) = (entry.header, entry.height);
        if txs.is_empty() {
            return Err(SpvError::NoTransactions(block));
        }
        let matches =
            merkle::verify_partial_tree(&header, pmt).map_err(|error| SpvError::Proof { block, error })?;
        let mut proven: BTreeMap<u32, Transaction> = BTreeMap::new();
        for tx in txs {
            let txid = tx.compute_txid();
            let index = matches
                .iter()
                .find(|(_, t)| *t == txid)
                .map(|(i, _)| *i)
                .ok_or(SpvError::NotInProof { block, txid })?;
            if (index == 0) != tx.is_coinbase() {
                return Err(SpvError::CoinbasePosition { block, txid, index });
            }
            proven.insert(index, tx.clone());
        }
        let entry = self.proven.entry(block).or_insert_with(|| ProvenBlock { height, txs: BTreeMap::new() });
        let mut added = false;
        for (index, tx) in &proven {
            if !entry.txs.contains_key(index) {
                entry.txs.insert(*index, tx.clone());
                self.tx_blocks.entry(tx.compute_txid()).or_default().insert(block);
                added = true;
            }
        }
        let on_best_chain = self.is_on_best_chain(&block);
        let update = if added && on_best_chain { self.resync(height)? } else { self.empty_update() };
        Ok(ProofOutcome {
            block,
            height,
            proven: proven.iter().map(|(i, tx)| (*i, tx.compute_txid())).collect(),
            on_best_chain,
            update,
        })
    }

    fn empty_update(&self) -> SpvUpdate {
        SpvUpdate {
            new_headers: 0,
            best: self.best_hash(),
            best_height: self.best_height(),
            disconnected: Vec::new(),
            connected: Vec::new(),
        }
    }

    /// Makes the wallet's blocks the proven blocks of the best header
    /// chain again, assuming they already are below `from`: disconnects
    /// applied blocks at `from` and above (highest first), then applies the
    /// proven blocks of the best chain from `from` up (lowest first). Costs
    /// O(best height − `from`).
    fn resync(&mut self, from: u32) -> Result<SpvUpdate, SpvError> {
        let mut update = self.empty_update();
        while let Some(&(hash, h)) = self.applied.last() {
            if h < from {
                break;
            }
            self.wallet.disconnect_block(hash)?;
            self.applied.pop();
            update.disconnected.push(hash);
        }
        for height in from as usize..self.best_chain.len() {
            let hash = self.best_chain[height];
            let Some(p) = self.proven.get(&hash) else {
                continue;
            };
            let txs: Vec<Transaction> = p.txs.values().cloned().collect();
            self.wallet.apply_block(hash, height as u32, &txs)?;
            self.applied.push((hash, height as u32));
            update.connected.push(hash);
        }
        Ok(update)
    }

    /// Updates `best_chain` to end at the best header; returns the lowest
    /// height whose hash changed or was added (`None` if nothing changed).
    fn refresh_best_chain(&mut self) -> Option<u32> {
        let best = self.headers.best_header().hash;
        if self.best_chain.last() == Some(&best) {
            return None;
        }
        let mut branch = Vec::new();
        let mut cur = best;
        while let Some(e) = self.headers.entry(&cur) {
            if self.best_chain.get(e.height as usize) == Some(&cur) {
                self.best_chain.truncate(e.height as usize + 1);
                break;
            }
            branch.push(cur);
            if e.height == 0 {
                self.best_chain.clear();
                break;
            }
            cur = e.header.prev_blockhash;
        }
        let fork = self.best_chain.len() as u32;
        self.best_chain.extend(branch.into_iter().rev());
        Some(fork)
    }
}
