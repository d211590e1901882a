//! The sidechain's block tree: validation, execution, best chain by
//! cumulative difficulty, reorgs through snapshots, orphans, block
//! templates for miners, and queries.
//!
//! Every connected block keeps its post-state [`Snapshot`] (accounts and
//! system contract), so switching to a heavier branch of any depth is a
//! pointer switch: nothing is re-executed or undone. The best chain is the
//! one of most cumulative difficulty; on a tie the block seen first stays.
//! Blocks whose parent is unknown wait in a bounded orphan pool (oldest
//! evicted first) and are connected when the parent arrives.
//!
//! Mining goes through a template: [`SideChain::build_template`] executes
//! the transactions and fills the header except the merge-mining fields;
//! the Bitcoin miner puts [`merge_mining_tag`](crate::block::merge_mining_tag)
//! of [`BlockTemplate::hash_for_merged_mining`] in its coinbase; then
//! [`BlockTemplate::finish`] adds the Bitcoin header, coinbase and branch.
//! The chain remembers the last few templates' execution, so accepting
//! one's own block does not execute it again.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

use fika_btc::PowMode;
use revm::primitives::U256;
use revm::primitives::hardfork::SpecId;
use thiserror::Error;

use crate::block::{self, MergeMiningProof, MmError, SideBlock, SideHeader};
use crate::exec::{self, BlockOutput, CallOutput, ExecEnv, ExecMode, TxExecError, TxInfo};
use crate::genesis::Genesis;
use crate::merkle::MerkleProof;
use crate::receipt::{self, Log, Receipt};
use crate::state::Snapshot;
use crate::system::SystemContract;
use crate::tx::SignedTx;

/// Number of ancestors whose hashes `BLOCKHASH` can read.
const BLOCKHASH_WINDOW: u64 = 256;

/// Number of block templates whose execution is remembered.
const TEMPLATE_CACHE: usize = 8;

/// How each block's difficulty follows from its parent's.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum DifficultyRule {
    /// Every block has the genesis difficulty.
    Fixed,
    /// Rootstock's rule without uncles: if the block came less than
    /// `duration_limit` seconds after its parent the difficulty rises by
    /// `parent / bound_divisor`, if more it falls by as much, never below
    /// `min_difficulty`.
    Adjusting {
        /// Target spacing in seconds.
        duration_limit: u64,
        /// Divisor of the step.
        bound_divisor: u64,
        /// Floor.
        min_difficulty: U256,
    },
}

/// Chain parameters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChainConfig {
    /// EIP-155 chain id (Rootstock: 30 mainnet, 31 testnet, 33 regtest).
    pub chain_id: u64,
    /// EVM rules.
    pub spec: SpecId,
    /// Gas limit of every block.
    pub block_gas_limit: u64,
    /// Whether merge-mining proofs must meet the target.
    pub pow_mode: PowMode,
    /// Difficulty adjustment.
    pub difficulty: DifficultyRule,
    /// Most orphan blocks kept.
    pub max_orphans: usize,
    /// The system contract's fee recipients get `fees / fee_share_divisor`
    /// of each block's fees (Rootstock's REMASC gives the federation 1 %:
    /// 100); 0 for no share.
    pub fee_share_divisor: u64,
    /// Genesis contents.
    pub genesis: Genesis,
}

impl ChainConfig {
    /// A regtest-like chain: chain id 33, Shanghai EVM rules, a 6,800,000
    /// gas limit, simulated PoW, fixed difficulty 1, 100 orphans, an empty
    /// genesis at Unix time 1,700,000,000.
    pub fn regtest() -> ChainConfig {
        ChainConfig {
            chain_id: 33,
            spec: SpecId::SHANGHAI,
            block_gas_limit: 6_800_000,
            pow_mode: PowMode::Simulated,
            difficulty: DifficultyRule::Fixed,
            max_orphans: 100,
            fee_share_divisor: 0,
            genesis: Genesis::new(1_700_000_000, U256::from(1u8)),
        }
    }

    /// A mainnet-shaped chain: chain id 30, the adjusting difficulty rule
    /// with a 14 s duration limit and divisor 50, otherwise as
    /// [`ChainConfig::regtest`]; the genesis difficulty is `difficulty`.
    pub fn mainnet_like(difficulty: U256) -> ChainConfig {
        ChainConfig {
            chain_id: 30,
            difficulty: DifficultyRule::Adjusting {
                duration_limit: 14,
                bound_divisor: 50,
                min_difficulty: U256::from(1u8),
            },
            genesis: Genesis::new(1_700_000_000, difficulty),
            ..ChainConfig::regtest()
        }
    }

    /// The difficulty a child of `parent` at `timestamp` must have.
    pub fn expected_difficulty(&self, parent: &SideHeader, timestamp: u64) -> U256 {
        match &self.difficulty {
            DifficultyRule::Fixed => parent.difficulty,
            DifficultyRule::Adjusting { duration_limit, bound_divisor, min_difficulty } => {
                let delta = timestamp.saturating_sub(parent.timestamp);
                let step = parent.difficulty / U256::from((*bound_divisor).max(1));
                let d = match delta.cmp(duration_limit) {
                    std::cmp::Ordering::Less => parent.difficulty.saturating_add(step),
                    std::cmp::Ordering::Greater => parent.difficulty.saturating_sub(step),
                    std::cmp::Ordering::Equal => parent.difficulty,
                };
                d.max(*min_difficulty)
            }
        }
    }
}

/// A block rejected, or a query about an unknown block.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ChainError {
    /// The block was already found invalid.
    #[error("block {} is known to be invalid", hex::encode(.0))]
    KnownInvalid([u8; 32]),
    /// The block's parent is invalid.
    #[error("block {} has invalid parent {}", hex::encode(.block), hex::encode(.parent))]
    InvalidParent {
        /// The block.
        block: [u8; 32],
        /// Its parent.
        parent: [u8; 32],
    },
    /// No block with this hash is known.
    #[error("unknown block {}", hex::encode(.0))]
    UnknownBlock([u8; 32]),
    /// The number is not the parent's plus one.
    #[error("block number {got}, expected {expected}")]
    BadNumber {
        /// Parent's number plus one.
        expected: u64,
        /// The header's.
        got: u64,
    },
    /// The timestamp is not after the parent's.
    #[error("timestamp {got} is not after the parent's {parent}")]
    TimestampNotAfterParent {
        /// The parent's timestamp.
        parent: u64,
        /// The header's.
        got: u64,
    },
    /// The difficulty does not follow the difficulty rule.
    #[error("difficulty {got}, expected {expected}")]
    BadDifficulty {
        /// What the rule gives.
        expected: U256,
        /// The header's.
        got: U256,
    },
    /// The gas limit is not the chain's.
    #[error("gas limit {got}, expected {expected}")]
    BadGasLimit {
        /// The chain's block gas limit.
        expected: u64,
        /// The header's.
        got: u64,
    },
    /// The merge-mining proof is invalid.
    #[error("merge mining: {0}")]
    MergeMining(#[from] MmError),
    /// The transactions do not match the header's transactions root.
    #[error("transactions root {}, header has {}", hex::encode(.computed), hex::encode(.header))]
    BadTransactionsRoot {
        /// The header's root.
        header: [u8; 32],
        /// Root of the block's transactions.
        computed: [u8; 32],
    },
    /// A transaction cannot be executed.
    #[error("transaction {index}: {error}")]
    Transaction {
        /// Its index in the block.
        index: usize,
        /// Why.
        error: TxExecError,
    },
    /// The gas used differs from the header's.
    #[error("gas used {computed}, header has {header}")]
    BadGasUsed {
        /// The header's.
        header: u64,
        /// Execution's.
        computed: u64,
    },
    /// The receipts root differs from the header's.
    #[error("receipts root {}, header has {}", hex::encode(.computed), hex::encode(.header))]
    BadReceiptsRoot {
        /// The header's.
        header: [u8; 32],
        /// Execution's.
        computed: [u8; 32],
    },
    /// The state root differs from the header's.
    #[error("state root {}, header has {}", hex::encode(.computed), hex::encode(.header))]
    BadStateRoot {
        /// The header's.
        header: [u8; 32],
        /// Execution's.
        computed: [u8; 32],
    },
}

/// What happened to a submitted block.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BlockStatus {
    /// Already in the tree.
    AlreadyKnown,
    /// Parent unknown: kept in the orphan pool.
    Orphan,
    /// Validated and connected to the tree.
    Connected,
}

/// A change of best tip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TipChange {
    /// The tip before.
    pub old_tip: [u8; 32],
    /// The tip after.
    pub new_tip: [u8; 32],
    /// The last common block.
    pub fork_point: [u8; 32],
    /// Blocks that left the best chain, old tip first.
    pub disconnected: Vec<[u8; 32]>,
    /// Blocks that joined the best chain, lowest first.
    pub connected: Vec<[u8; 32]>,
}

impl TipChange {
    /// Whether blocks left the best chain.
    pub fn is_reorg(&self) -> bool {
        !self.disconnected.is_empty()
    }
}

/// The result of [`SideChain::accept_block`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AcceptOutcome {
    /// The submitted block's hash.
    pub hash: [u8; 32],
    /// What happened to it.
    pub status: BlockStatus,
    /// Blocks connected by this call: the block, then orphans it unlocked.
    pub connected: Vec<[u8; 32]>,
    /// Orphans unlocked by this block that turned out invalid.
    pub rejected_orphans: Vec<([u8; 32], ChainError)>,
    /// The best-tip change, if any.
    pub tip_change: Option<TipChange>,
}

/// A block ready for merge mining, missing only its merge-mining fields.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BlockTemplate {
    /// The header (`merge_mining` is `None`).
    pub header: SideHeader,
    /// The included transactions.
    pub transactions: Vec<SignedTx>,
    /// Their receipts.
    pub receipts: Vec<Receipt>,
    /// Transactions left out: hash and reason.
    pub rejected: Vec<([u8; 32], TxExecError)>,
}

impl BlockTemplate {
    /// The hash the Bitcoin miner must commit to.
    pub fn hash_for_merged_mining(&self) -> [u8; 32] {
        self.header.hash_for_merged_mining()
    }

    /// The block, with the Bitcoin evidence.
    pub fn finish(self, merge_mining: MergeMiningProof) -> SideBlock {
        let mut header = self.header;
        header.merge_mining = Some(merge_mining);
        SideBlock { header, transactions: self.transactions }
    }
}

/// A receipt with its place in the best chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReceiptInfo {
    /// The receipt.
    pub receipt: Receipt,
    /// The transaction hash.
    pub tx_hash: [u8; 32],
    /// Index in its block.
    pub tx_index: u32,
    /// The block's hash.
    pub block_hash: [u8; 32],
    /// The block's number.
    pub block_number: u64,
    /// The sender.
    pub sender: [u8; 20],
    /// The created contract, if any.
    pub contract_address: Option<[u8; 20]>,
}

/// A log with its place in the best chain.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogRecord {
    /// The log.
    pub log: Log,
    /// The block's number.
    pub block_number: u64,
    /// The block's hash.
    pub block_hash: [u8; 32],
    /// The transaction's hash.
    pub tx_hash: [u8; 32],
    /// The transaction's index in the block.
    pub tx_index: u32,
    /// The log's index in the block.
    pub log_index: u32,
}

struct Execution<S> {
    snapshot: Snapshot<S>,
    receipts: Arc<Vec<Receipt>>,
    tx_info: Arc<Vec<TxInfo>>,
    gas_used: u64,
    fee_share: u128,
}

impl<S> Clone for Execution<S>
where
    S: Clone,
{
    fn clone(&self) -> Self {
        Execution {
            snapshot: self.snapshot.clone(),
            receipts: Arc::clone(&self.receipts),
            tx_info: Arc::clone(&self.tx_info),
            gas_used: self.gas_used,
            fee_share: self.fee_share,
        }
    }
}

struct Entry<S> {
    block: Arc<SideBlock>,
    exec: Execution<S>,
    total_difficulty: U256,
}

impl<S: Clone> Clone for Entry<S> {
    fn clone(&self) -> Self {
        Entry {
            block: Arc::clone(&self.block),
            exec: self.exec.clone(),
            total_difficulty: self.total_difficulty,
        }
    }
}

/// The sidechain: block tree, states, best chain. Cloning copies the tree's
/// index but shares blocks and (persistent) states.
#[derive(Clone)]
pub struct SideChain<S> {
    config: ChainConfig,
    genesis_hash: [u8; 32],
    blocks: BTreeMap<[u8; 32], Entry<S>>,
    best: [u8; 32],
    best_chain: Vec<[u8; 32]>,
    best_txs: BTreeMap<[u8; 32], ([u8; 32], u32)>,
    orphans: BTreeMap<[u8; 32], SideBlock>,
    orphan_order: VecDeque<[u8; 32]>,
    invalid: BTreeSet<[u8; 32]>,
    templates: VecDeque<([u8; 32], Execution<S>)>,
}

impl<S> std::fmt::Debug for SideChain<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SideChain")
            .field("chain_id", &self.config.chain_id)
            .field("best", &hex::encode(self.best))
            .field("best_number", &(self.best_chain.len() - 1))
            .field("blocks", &self.blocks.len())
            .field("orphans", &self.orphans.len())
            .finish()
    }
}

impl<S: SystemContract + Clone> SideChain<S> {
    /// A chain holding only the genesis block built from `config.genesis`
    /// with `system` as the system contract's initial state.
    pub fn new(config: ChainConfig, system: S) -> SideChain<S> {
        let snapshot = Snapshot { world: config.genesis.world_state(), system };
        let header = SideHeader {
            parent_hash: [0u8; 32],
            number: 0,
            timestamp: config.genesis.timestamp,
            coinbase: config.genesis.coinbase,
            state_root: snapshot.state_root(),
            transactions_root: block::transactions_root(&[]),
            receipts_root: receipt::receipts_root(&[]),
            gas_used: 0,
            gas_limit: config.block_gas_limit,
            difficulty: config.genesis.difficulty,
            merge_mining: None,
        };
        let block = SideBlock { header, transactions: Vec::new() };
        let hash = block.hash();
        let total_difficulty = block.header.difficulty;
        let entry = Entry {
            block: Arc::new(block),
            exec: Execution {
                snapshot,
                receipts: Arc::default(),
                tx_info: Arc::default(),
                gas_used: 0,
                fee_share: 0,
            },
            total_difficulty,
        };
        let mut blocks = BTreeMap::new();
        blocks.insert(hash, entry);
        SideChain {
            config,
            genesis_hash: hash,
            blocks,
            best: hash,
            best_chain: vec![hash],
            best_txs: BTreeMap::new(),
            orphans: BTreeMap::new(),
            orphan_order: VecDeque::new(),
            invalid: BTreeSet::new(),
            templates: VecDeque::new(),
        }
    }

    /// The chain parameters.
    pub fn config(&self) -> &ChainConfig {
        &self.config
    }

    /// The genesis hash.
    pub fn genesis_hash(&self) -> [u8; 32] {
        self.genesis_hash
    }

    /// The best tip's hash.
    pub fn best_hash(&self) -> [u8; 32] {
        self.best
    }

    /// The best tip's number.
    pub fn best_number(&self) -> u64 {
        self.best_chain.len() as u64 - 1
    }

    /// The best tip's header.
    pub fn best_header(&self) -> &SideHeader {
        &self.entry(&self.best).block.header
    }

    /// The best chain's hash at `number`.
    pub fn hash_at(&self, number: u64) -> Option<[u8; 32]> {
        usize::try_from(number).ok().and_then(|n| self.best_chain.get(n)).copied()
    }

    /// Whether the block is in the tree (not counting orphans).
    pub fn contains(&self, hash: &[u8; 32]) -> bool {
        self.blocks.contains_key(hash)
    }

    /// Whether the block is in the orphan pool.
    pub fn is_orphan(&self, hash: &[u8; 32]) -> bool {
        self.orphans.contains_key(hash)
    }

    /// Number of orphans held.
    pub fn orphan_count(&self) -> usize {
        self.orphans.len()
    }

    /// Number of blocks in the tree.
    pub fn block_count(&self) -> usize {
        self.blocks.len()
    }

    /// Whether the block is on the best chain.
    pub fn is_on_best_chain(&self, hash: &[u8; 32]) -> bool {
        self.blocks.get(hash).is_some_and(|e| self.hash_at(e.block.header.number) == Some(*hash))
    }

    /// A block in the tree.
    pub fn block(&self, hash: &[u8; 32]) -> Option<&SideBlock> {
        self.blocks.get(hash).map(|e| e.block.as_ref())
    }

    /// A header in the tree.
    pub fn header(&self, hash: &[u8; 32]) -> Option<&SideHeader> {
        self.block(hash).map(|b| &b.header)
    }

    /// Cumulative difficulty up to and including the block.
    pub fn total_difficulty(&self, hash: &[u8; 32]) -> Option<U256> {
        self.blocks.get(hash).map(|e| e.total_difficulty)
    }

    /// A block's receipts.
    pub fn receipts(&self, hash: &[u8; 32]) -> Option<&[Receipt]> {
        self.blocks.get(hash).map(|e| e.exec.receipts.as_slice())
    }

    /// A block's per-transaction info (hash, sender, created contract).
    pub fn tx_info(&self, hash: &[u8; 32]) -> Option<&[TxInfo]> {
        self.blocks.get(hash).map(|e| e.exec.tx_info.as_slice())
    }

    /// Wei a block paid its system contract's fee recipients (its share of
    /// the block's fees).
    pub fn fee_share_at(&self, hash: &[u8; 32]) -> Option<u128> {
        self.blocks.get(hash).map(|e| e.exec.fee_share)
    }

    /// The post-state of a known block.
    pub fn state_at(&self, hash: &[u8; 32]) -> Option<&Snapshot<S>> {
        self.blocks.get(hash).map(|e| &e.exec.snapshot)
    }

    /// The best tip's post-state.
    pub fn state(&self) -> &Snapshot<S> {
        &self.entry(&self.best).exec.snapshot
    }

    /// The system contract's state at the best tip.
    pub fn system(&self) -> &S {
        &self.state().system
    }

    /// Balance in wei at the best tip (saturating at `u128::MAX`).
    pub fn balance(&self, address: &[u8; 20]) -> u128 {
        u128::try_from(self.state().world.balance(address)).unwrap_or(u128::MAX)
    }

    /// Nonce at the best tip.
    pub fn nonce(&self, address: &[u8; 20]) -> u64 {
        self.state().world.nonce(address)
    }

    /// Code at the best tip.
    pub fn code(&self, address: &[u8; 20]) -> Vec<u8> {
        self.state().world.code(address)
    }

    /// A storage slot at the best tip.
    pub fn storage(&self, address: &[u8; 20], key: &U256) -> U256 {
        self.state().world.storage(address, key)
    }

    /// A transaction's receipt, if the transaction is on the best chain.
    pub fn receipt(&self, tx_hash: &[u8; 32]) -> Option<ReceiptInfo> {
        let (block_hash, index) = self.best_txs.get(tx_hash)?;
        let e = self.blocks.get(block_hash)?;
        let i = usize::try_from(*index).ok()?;
        let info = e.exec.tx_info.get(i)?;
        Some(ReceiptInfo {
            receipt: e.exec.receipts.get(i)?.clone(),
            tx_hash: *tx_hash,
            tx_index: *index,
            block_hash: *block_hash,
            block_number: e.block.header.number,
            sender: info.sender,
            contract_address: info.contract_address,
        })
    }

    /// Receipt `index` of a block and its proof against the block's
    /// receipts root.
    pub fn receipt_proof(&self, block_hash: &[u8; 32], index: usize) -> Option<(Receipt, MerkleProof)> {
        let receipts = self.receipts(block_hash)?;
        Some((receipts.get(index)?.clone(), receipt::receipt_proof(receipts, index)?))
    }

    /// Logs on the best chain from `address` (if given) with `topic` among
    /// their topics (if given), oldest first. A linear scan of the chain.
    pub fn logs(&self, address: Option<[u8; 20]>, topic: Option<[u8; 32]>) -> Vec<LogRecord> {
        self.logs_in_range(0, self.best_number(), address, topic)
    }

    /// [`SideChain::logs`] restricted to best-chain blocks `from..=to`.
    pub fn logs_in_range(
        &self,
        from: u64,
        to: u64,
        address: Option<[u8; 20]>,
        topic: Option<[u8; 32]>,
    ) -> Vec<LogRecord> {
        let mut out = Vec::new();
        let to = to.min(self.best_number());
        for number in from..=to {
            let Some(hash) = self.hash_at(number) else { continue };
            let e = self.entry(&hash);
            let mut log_index = 0u32;
            for (tx_index, (r, info)) in e.exec.receipts.iter().zip(e.exec.tx_info.iter()).enumerate() {
                for log in &r.logs {
                    let matches = address.is_none_or(|a| a == log.address)
                        && topic.is_none_or(|t| log.topics.contains(&t));
                    if matches {
                        out.push(LogRecord {
                            log: log.clone(),
                            block_number: number,
                            block_hash: hash,
                            tx_hash: info.hash,
                            tx_index: tx_index as u32,
                            log_index,
                        });
                    }
                    log_index += 1;
                }
            }
        }
        out
    }

    /// A read-only call at the best tip from the zero address.
    pub fn call(&self, to: &[u8; 20], data: &[u8]) -> Result<CallOutput, ChainError> {
        self.call_at(&self.best, [0u8; 20], *to, 0, data)
    }

    /// A read-only call on the post-state of `block`, in that block's
    /// environment.
    pub fn call_at(
        &self,
        block: &[u8; 32],
        from: [u8; 20],
        to: [u8; 20],
        value: u128,
        data: &[u8],
    ) -> Result<CallOutput, ChainError> {
        let e = self.blocks.get(block).ok_or(ChainError::UnknownBlock(*block))?;
        let h = &e.block.header;
        let env = self.exec_env(h.parent_hash, h.number, h.timestamp, h.coinbase, h.difficulty);
        exec::read_only_call(&env, &e.exec.snapshot, from, to, value, data)
            .map_err(|error| ChainError::Transaction { index: 0, error })
    }

    fn entry(&self, hash: &[u8; 32]) -> &Entry<S> {
        // Internal invariant: callers pass hashes of the tree (the best tip,
        // best-chain hashes, parents of stored blocks).
        match self.blocks.get(hash) {
            Some(e) => e,
            None => unreachable!("block {} missing from the tree", hex::encode(hash)),
        }
    }

    fn exec_env(
        &self,
        parent_hash: [u8; 32],
        number: u64,
        timestamp: u64,
        coinbase: [u8; 20],
        difficulty: U256,
    ) -> ExecEnv {
        let mut block_hashes = BTreeMap::new();
        let mut h = parent_hash;
        let mut n = number;
        while n > 0 && number - n < BLOCKHASH_WINDOW {
            let Some(e) = self.blocks.get(&h) else { break };
            n -= 1;
            block_hashes.insert(n, h);
            h = e.block.header.parent_hash;
        }
        ExecEnv {
            chain_id: self.config.chain_id,
            spec: self.config.spec,
            number,
            timestamp,
            coinbase,
            gas_limit: self.config.block_gas_limit,
            difficulty,
            parent_hash,
            block_hashes,
            fee_share_divisor: self.config.fee_share_divisor,
        }
    }

    /// Executes `txs` on top of `parent` and returns a template for a block
    /// mined by `miner` at `timestamp` (raised to the parent's timestamp
    /// plus one if not above it). Invalid transactions are left out and
    /// listed in [`BlockTemplate::rejected`].
    pub fn build_template(
        &mut self,
        parent: &[u8; 32],
        txs: &[SignedTx],
        miner: [u8; 20],
        timestamp: u64,
    ) -> Result<BlockTemplate, ChainError> {
        let p = self.blocks.get(parent).ok_or(ChainError::UnknownBlock(*parent))?;
        let ph = &p.block.header;
        let timestamp = timestamp.max(ph.timestamp.saturating_add(1));
        let number = ph.number + 1;
        let difficulty = self.config.expected_difficulty(ph, timestamp);
        let env = self.exec_env(*parent, number, timestamp, miner, difficulty);
        let out: BlockOutput<S> = match exec::execute(&env, &p.exec.snapshot, txs, ExecMode::Lenient) {
            Ok(out) => out,
            Err((index, error)) => return Err(ChainError::Transaction { index, error }),
        };
        let header = SideHeader {
            parent_hash: *parent,
            number,
            timestamp,
            coinbase: miner,
            state_root: out.snapshot.state_root(),
            transactions_root: block::transactions_root(&out.transactions),
            receipts_root: receipt::receipts_root(&out.receipts),
            gas_used: out.gas_used,
            gas_limit: self.config.block_gas_limit,
            difficulty,
            merge_mining: None,
        };
        let rejected = out.rejected.into_iter().map(|(i, e)| (txs[i].tx_hash(), e)).collect();
        let template = BlockTemplate {
            header,
            transactions: out.transactions,
            receipts: out.receipts.clone(),
            rejected,
        };
        let exec = Execution {
            snapshot: out.snapshot,
            receipts: Arc::new(out.receipts),
            tx_info: Arc::new(out.tx_info),
            gas_used: out.gas_used,
            fee_share: out.fee_share,
        };
        if self.templates.len() >= TEMPLATE_CACHE {
            self.templates.pop_front();
        }
        self.templates.push_back((template.hash_for_merged_mining(), exec));
        Ok(template)
    }

    /// Builds a template, has `merge_mine` produce the Bitcoin evidence for
    /// its hash for merged mining, and returns the finished block (not yet
    /// accepted).
    pub fn build_block(
        &mut self,
        parent: &[u8; 32],
        txs: &[SignedTx],
        miner: [u8; 20],
        timestamp: u64,
        merge_mine: impl FnOnce(&[u8; 32]) -> MergeMiningProof,
    ) -> Result<SideBlock, ChainError> {
        let template = self.build_template(parent, txs, miner, timestamp)?;
        let proof = merge_mine(&template.hash_for_merged_mining());
        Ok(template.finish(proof))
    }

    /// Checks that depend on the block alone: the merge-mining proof
    /// against the header's own difficulty, and the transactions root.
    fn check_context_free(&self, block: &SideBlock) -> Result<(), ChainError> {
        let h = &block.header;
        block::verify_merge_mining(h, self.config.pow_mode, &h.target())?;
        let computed = block.compute_transactions_root();
        if computed != h.transactions_root {
            return Err(ChainError::BadTransactionsRoot { header: h.transactions_root, computed });
        }
        Ok(())
    }

    /// Validates and stores a block: header linkage, number, timestamp,
    /// difficulty, gas limit, merge-mining proof, transactions root, then
    /// execution on the parent's state and the gas used, receipts root and
    /// state root. Moves the best tip if the block's branch is heavier.
    /// A block with an unknown parent is kept as an orphan; orphans waiting
    /// for this block are connected after it.
    pub fn accept_block(&mut self, block: SideBlock) -> Result<AcceptOutcome, ChainError> {
        let hash = block.hash();
        let mut outcome = AcceptOutcome {
            hash,
            status: BlockStatus::AlreadyKnown,
            connected: Vec::new(),
            rejected_orphans: Vec::new(),
            tip_change: None,
        };
        if self.blocks.contains_key(&hash) {
            return Ok(outcome);
        }
        if self.invalid.contains(&hash) {
            return Err(ChainError::KnownInvalid(hash));
        }
        if self.orphans.contains_key(&hash) {
            outcome.status = BlockStatus::Orphan;
            return Ok(outcome);
        }
        if let Err(e) = self.check_context_free(&block) {
            // A header-only failure condemns the hash; a body that does not
            // match its header says nothing about the header.
            if !matches!(e, ChainError::BadTransactionsRoot { .. }) {
                self.invalid.insert(hash);
            }
            return Err(e);
        }
        let parent = block.header.parent_hash;
        if self.invalid.contains(&parent) {
            self.invalid.insert(hash);
            return Err(ChainError::InvalidParent { block: hash, parent });
        }
        if !self.blocks.contains_key(&parent) {
            self.add_orphan(hash, block);
            outcome.status = BlockStatus::Orphan;
            return Ok(outcome);
        }
        let old_tip = self.best;
        if let Err(e) = self.connect(hash, block) {
            self.drop_orphan_descendants(hash);
            return Err(e);
        }
        outcome.status = BlockStatus::Connected;
        outcome.connected.push(hash);
        // Connect the orphans this block unlocks, breadth first.
        let mut queue = VecDeque::from([hash]);
        while let Some(p) = queue.pop_front() {
            let children: Vec<[u8; 32]> = self
                .orphan_order
                .iter()
                .filter(|h| self.orphans.get(*h).is_some_and(|b| b.header.parent_hash == p))
                .copied()
                .collect();
            for child in children {
                let Some(b) = self.orphans.remove(&child) else { continue };
                self.orphan_order.retain(|h| *h != child);
                match self.connect(child, b) {
                    Ok(()) => {
                        outcome.connected.push(child);
                        queue.push_back(child);
                    }
                    Err(e) => {
                        self.drop_orphan_descendants(child);
                        outcome.rejected_orphans.push((child, e));
                    }
                }
            }
        }
        if self.best != old_tip {
            outcome.tip_change = Some(self.tip_change(old_tip, self.best));
        }
        Ok(outcome)
    }

    fn add_orphan(&mut self, hash: [u8; 32], block: SideBlock) {
        if self.config.max_orphans == 0 {
            return;
        }
        while self.orphans.len() >= self.config.max_orphans {
            let Some(old) = self.orphan_order.pop_front() else { break };
            self.orphans.remove(&old);
        }
        self.orphans.insert(hash, block);
        self.orphan_order.push_back(hash);
    }

    /// Marks the orphans descending from an invalid block invalid and drops
    /// them.
    fn drop_orphan_descendants(&mut self, bad: [u8; 32]) {
        self.invalid.insert(bad);
        let mut queue = VecDeque::from([bad]);
        while let Some(p) = queue.pop_front() {
            let children: Vec<[u8; 32]> = self
                .orphan_order
                .iter()
                .filter(|h| self.orphans.get(*h).is_some_and(|b| b.header.parent_hash == p))
                .copied()
                .collect();
            for c in children {
                self.orphans.remove(&c);
                self.orphan_order.retain(|h| *h != c);
                self.invalid.insert(c);
                queue.push_back(c);
            }
        }
    }

    /// Validates a block whose parent is in the tree and stores it.
    fn connect(&mut self, hash: [u8; 32], block: SideBlock) -> Result<(), ChainError> {
        let result = self.validate_and_execute(&block);
        let exec = match result {
            Ok(exec) => exec,
            Err(e) => {
                self.invalid.insert(hash);
                return Err(e);
            }
        };
        let parent_td = self.entry(&block.header.parent_hash).total_difficulty;
        let total_difficulty = parent_td.saturating_add(block.header.difficulty);
        self.blocks.insert(hash, Entry { block: Arc::new(block), exec, total_difficulty });
        if total_difficulty > self.entry(&self.best).total_difficulty {
            self.set_best(hash);
        }
        Ok(())
    }

    fn validate_and_execute(&mut self, block: &SideBlock) -> Result<Execution<S>, ChainError> {
        let h = &block.header;
        let ph = &self.entry(&h.parent_hash).block.header;
        if h.number != ph.number + 1 {
            return Err(ChainError::BadNumber { expected: ph.number + 1, got: h.number });
        }
        if h.timestamp <= ph.timestamp {
            return Err(ChainError::TimestampNotAfterParent { parent: ph.timestamp, got: h.timestamp });
        }
        let expected = self.config.expected_difficulty(ph, h.timestamp);
        if h.difficulty != expected {
            return Err(ChainError::BadDifficulty { expected, got: h.difficulty });
        }
        if h.gas_limit != self.config.block_gas_limit {
            return Err(ChainError::BadGasLimit { expected: self.config.block_gas_limit, got: h.gas_limit });
        }
        let mm_hash = h.hash_for_merged_mining();
        let cached = self.templates.iter().position(|(k, _)| *k == mm_hash);
        let exec = match cached.and_then(|i| self.templates.remove(i)) {
            // The hash for merged mining commits to the parent, environment,
            // transactions root and results: the cached execution is this
            // block's.
            Some((_, exec)) => exec,
            None => {
                let env = self.exec_env(h.parent_hash, h.number, h.timestamp, h.coinbase, h.difficulty);
                let parent = &self.entry(&h.parent_hash).exec.snapshot;
                let out = exec::execute(&env, parent, &block.transactions, ExecMode::Strict)
                    .map_err(|(index, error)| ChainError::Transaction { index, error })?;
                Execution {
                    snapshot: out.snapshot,
                    receipts: Arc::new(out.receipts),
                    tx_info: Arc::new(out.tx_info),
                    gas_used: out.gas_used,
                    fee_share: out.fee_share,
                }
            }
        };
        if exec.gas_used != h.gas_used {
            return Err(ChainError::BadGasUsed { header: h.gas_used, computed: exec.gas_used });
        }
        let receipts_root = receipt::receipts_root(&exec.receipts);
        if receipts_root != h.receipts_root {
            return Err(ChainError::BadReceiptsRoot { header: h.receipts_root, computed: receipts_root });
        }
        let state_root = exec.snapshot.state_root();
        if state_root != h.state_root {
            return Err(ChainError::BadStateRoot { header: h.state_root, computed: state_root });
        }
        Ok(exec)
    }

    /// Makes `new_tip` the best tip, updating the best-chain index.
    fn set_best(&mut self, new_tip: [u8; 32]) {
        let mut branch = Vec::new();
        let mut h = new_tip;
        loop {
            let header = &self.entry(&h).block.header;
            if self.hash_at(header.number) == Some(h) {
                break;
            }
            branch.push(h);
            h = header.parent_hash;
        }
        let fork_number = self.entry(&h).block.header.number as usize;
        let removed: Vec<[u8; 32]> = self.best_chain.drain(fork_number + 1..).collect();
        for b in removed {
            let infos = Arc::clone(&self.entry(&b).exec.tx_info);
            for info in infos.iter() {
                self.best_txs.remove(&info.hash);
            }
        }
        for b in branch.into_iter().rev() {
            let txs: Vec<([u8; 32], u32)> =
                self.entry(&b).exec.tx_info.iter().enumerate().map(|(i, t)| (t.hash, i as u32)).collect();
            for (tx, i) in txs {
                self.best_txs.insert(tx, (b, i));
            }
            self.best_chain.push(b);
        }
        self.best = new_tip;
    }

    /// The path from `old` to `new`: blocks left, fork point, blocks joined.
    fn tip_change(&self, old: [u8; 32], new: [u8; 32]) -> TipChange {
        let mut a = old;
        let mut b = new;
        let mut disconnected = Vec::new();
        let mut connected = Vec::new();
        while a != b {
            let ha = &self.entry(&a).block.header;
            let hb = &self.entry(&b).block.header;
            if ha.number >= hb.number {
                disconnected.push(a);
                a = ha.parent_hash;
            } else {
                connected.push(b);
                b = hb.parent_hash;
            }
        }
        connected.reverse();
        TipChange { old_tip: old, new_tip: new, fork_point: a, disconnected, connected }
    }
}
