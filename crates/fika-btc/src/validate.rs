//! Transaction and block validation, following Bitcoin Core.
//!
//! * [`check_transaction`]: context-free `CheckTransaction`.
//! * [`check_tx_inputs`]: `Consensus::CheckTxInputs` (inputs unspent,
//!   coinbase maturity, value conservation, fee).
//! * [`verify_scripts`]: every input through Bitcoin Core's script engine
//!   (libbitcoinconsensus) with the given flags; [`check_policy_scripts`]
//!   adds fika's implementation of the policy-only flags.
//! * [`is_final_tx`], [`calculate_sequence_locks`],
//!   [`evaluate_sequence_locks`]: absolute locktime and BIP68.
//! * [`validate_tx_in_context`]: all of the above for one transaction.
//! * Block checks: [`check_block`] (context-free `CheckBlock`),
//!   [`check_header_context`], [`contextual_check_block`] and
//!   [`check_block_inputs`] (the validation half of `ConnectBlock`).

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::block::Header;
use bitcoin::blockdata::opcodes::all as op;
use bitcoin::blockdata::script::Instruction;
use bitcoin::hashes::Hash;
use bitcoin::pow::CompactTarget;
use bitcoin::{Amount, Block, BlockHash, OutPoint, Script, ScriptBuf, Transaction, TxOut, Txid};
use thiserror::Error;

use crate::merkle;
use crate::params::{ChainParams, ScriptFlags};
use crate::pow::{self, PowError};
use crate::utxo::{Coin, CoinView};

/// Core's `WITNESS_SCALE_FACTOR`.
pub const WITNESS_SCALE_FACTOR: u64 = 4;
/// Locktimes below this are block heights, at or above it Unix times.
pub const LOCKTIME_THRESHOLD: u32 = 500_000_000;
/// BIP68: if set, the input's sequence is not a relative lock.
pub const SEQUENCE_LOCKTIME_DISABLE_FLAG: u32 = 1 << 31;
/// BIP68: if set, the relative lock is in units of 512 seconds.
pub const SEQUENCE_LOCKTIME_TYPE_FLAG: u32 = 1 << 22;
/// BIP68: the bits of the sequence holding the lock value.
pub const SEQUENCE_LOCKTIME_MASK: u32 = 0x0000_ffff;
/// BIP68: time locks are in units of `1 << 9` seconds.
pub const SEQUENCE_LOCKTIME_GRANULARITY: u32 = 9;

/// A transaction-level validation failure.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TxError {
    /// No inputs.
    #[error("transaction has no inputs")]
    EmptyInputs,
    /// No outputs.
    #[error("transaction has no outputs")]
    EmptyOutputs,
    /// The stripped size times 4 exceeds the block weight limit.
    #[error("transaction too large: {weight} > {max} weight units (stripped size x 4)")]
    Oversize {
        /// Stripped size x 4.
        weight: u64,
        /// The limit.
        max: u64,
    },
    /// An output value exceeds the money range.
    #[error("output {index} value {value} sat is out of range")]
    OutputValueOutOfRange {
        /// Output index.
        index: usize,
        /// Its value in satoshis (a negative serialized value shows as huge).
        value: u64,
    },
    /// The sum of outputs exceeds the money range.
    #[error("total output value {total} sat is out of range")]
    TotalOutputOutOfRange {
        /// The running total when it left the range.
        total: u64,
    },
    /// Two inputs spend the same outpoint.
    #[error("duplicate input {0}")]
    DuplicateInput(OutPoint),
    /// Coinbase scriptSig length outside `2..=100`.
    #[error("coinbase scriptSig length {0} outside 2..=100")]
    BadCoinbaseScriptLength(usize),
    /// A non-coinbase input has a null prevout.
    #[error("input {input} of a non-coinbase transaction has a null prevout")]
    NullPrevout {
        /// Input index.
        input: usize,
    },
    /// A coinbase transaction where none is allowed (e.g. the mempool).
    #[error("coinbase transaction {0} outside a block")]
    UnexpectedCoinbase(Txid),
    /// An input spends an outpoint that does not exist or is already spent.
    #[error("input spends missing or already spent output {0}")]
    MissingInput(OutPoint),
    /// An input spends an outpoint already spent earlier (in the same block
    /// or the same pool).
    #[error("double spend of {0}")]
    DoubleSpend(OutPoint),
    /// An input spends a coinbase output that is not mature yet.
    #[error("premature spend of coinbase output {outpoint}: depth {depth} < maturity {required}")]
    ImmatureCoinbase {
        /// The coinbase output.
        outpoint: OutPoint,
        /// `spend_height - coin_height`.
        depth: u32,
        /// The required maturity.
        required: u32,
    },
    /// An input value or the input total is out of the money range.
    #[error("input values out of range (total {total} sat)")]
    InputValueOutOfRange {
        /// Total so far.
        total: u64,
    },
    /// Outputs are worth more than inputs.
    #[error("outputs ({output} sat) exceed inputs ({input} sat)")]
    InsufficientInputValue {
        /// Sum of inputs.
        input: u64,
        /// Sum of outputs.
        output: u64,
    },
    /// Script verification failed for an input.
    #[error("script verification failed for input {input}: {reason}")]
    ScriptFailed {
        /// Input index.
        input: usize,
        /// What libbitcoinconsensus reported.
        reason: String,
    },
    /// A policy (standardness) rule refused an input.
    #[error("policy rule {rule} refused input {input}")]
    PolicyFailed {
        /// Input index.
        input: usize,
        /// Which rule.
        rule: PolicyRule,
    },
    /// The transaction's absolute locktime is not yet reached.
    #[error("transaction is not final (lock_time {lock_time} at height {height}, time {time})")]
    NonFinal {
        /// The transaction's nLockTime.
        lock_time: u32,
        /// Height of the block it would be in.
        height: u32,
        /// The locktime cutoff time (median time past).
        time: u32,
    },
    /// A BIP68 relative lock is not yet satisfied.
    #[error("BIP68 sequence lock not satisfied (min height {min_height}, min time {min_time})")]
    SequenceLocked {
        /// Last height at which the tx is still locked (-1 = none).
        min_height: i64,
        /// Last MTP at which the tx is still locked (-1 = none).
        min_time: i64,
    },
    /// The number of spent outputs given does not match the inputs.
    #[error("{given} spent outputs given for {inputs} inputs")]
    SpentOutputsMismatch {
        /// Inputs of the transaction.
        inputs: usize,
        /// Spent outputs given.
        given: usize,
    },
}

/// A policy-only script rule (Core standardness flags).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PolicyRule {
    /// OP_CODESEPARATOR in a legacy script.
    CodeSeparator,
    /// A signature FindAndDelete would strip from the script code.
    SigFindAndDelete,
    /// Spending an unknown (upgradable) witness version.
    UpgradableWitnessProgram,
    /// SIGHASH_SINGLE on an input without a matching output.
    SighashSingleOutOfRange,
}

impl std::fmt::Display for PolicyRule {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PolicyRule::CodeSeparator => "CONST_SCRIPTCODE (OP_CODESEPARATOR)",
            PolicyRule::SigFindAndDelete => "CONST_SCRIPTCODE (FindAndDelete)",
            PolicyRule::UpgradableWitnessProgram => "DISCOURAGE_UPGRADABLE_WITNESS_PROGRAM",
            PolicyRule::SighashSingleOutOfRange => "SECURE_SIGHASH_SINGLE",
        })
    }
}

/// A block-level validation failure.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BlockError {
    /// The block has no transactions.
    #[error("block has no transactions")]
    NoTransactions,
    /// The header's merkle root does not match the transactions.
    #[error("bad merkle root: header has {header}, transactions give {computed}")]
    BadMerkleRoot {
        /// In the header.
        header: bitcoin::TxMerkleNode,
        /// Computed.
        computed: bitcoin::TxMerkleNode,
    },
    /// Duplicate transactions make the merkle tree ambiguous (CVE-2012-2459).
    #[error("mutated merkle tree (duplicate transactions)")]
    MutatedMerkle,
    /// The block is heavier than allowed.
    #[error("block weight {weight} exceeds {max}")]
    WeightTooHigh {
        /// Its weight.
        weight: u64,
        /// The limit.
        max: u64,
    },
    /// Too many legacy signature operations.
    #[error("block sigop cost {cost} exceeds {max}")]
    TooManySigops {
        /// Legacy sigops x 4 (see [`legacy_sigop_cost`]).
        cost: u64,
        /// The limit.
        max: u64,
    },
    /// The first transaction is not a coinbase.
    #[error("first transaction is not a coinbase")]
    FirstTxNotCoinbase,
    /// A coinbase other than the first transaction.
    #[error("transaction {index} is a second coinbase")]
    MultipleCoinbase {
        /// Its index.
        index: usize,
    },
    /// The coinbase does not start with the block height (BIP34).
    #[error("coinbase scriptSig does not start with height {height} (BIP34)")]
    BadCoinbaseHeight {
        /// The expected height.
        height: u32,
    },
    /// The coinbase commits to a witness root, but its witness is not a
    /// single 32-byte reserved value.
    #[error("coinbase witness reserved value must be a single 32-byte item")]
    BadWitnessNonce,
    /// The witness commitment does not match the transactions' witnesses.
    #[error("witness commitment does not match")]
    BadWitnessCommitment,
    /// Witness data in a block without a witness commitment.
    #[error("transaction {index} has witness data but the block has no witness commitment")]
    UnexpectedWitness {
        /// The transaction with witness data.
        index: usize,
    },
    /// A transaction failed a check.
    #[error("transaction {index} ({txid}) invalid: {error}")]
    Tx {
        /// Index in the block.
        index: usize,
        /// Its txid.
        txid: Txid,
        /// The failure.
        error: TxError,
    },
    /// Two transactions of the block spend the same outpoint.
    #[error("double spend of {0} within the block")]
    DoubleSpend(OutPoint),
    /// The coinbase claims more than subsidy plus fees.
    #[error("coinbase overspends: claims {claimed}, allowed {allowed}")]
    CoinbaseOverspend {
        /// Subsidy + fees.
        allowed: Amount,
        /// Sum of coinbase outputs.
        claimed: Amount,
    },
    /// Fees or coinbase outputs overflow the money range.
    #[error("fees out of range")]
    FeesOutOfRange,
    /// A transaction's locktime is not reached.
    #[error("transaction {index} is not final")]
    NonFinalTx {
        /// Index in the block.
        index: usize,
    },
    /// The header time is not after the median time past.
    #[error("block time {time} is not after median time past {mtp}")]
    TimeTooOld {
        /// Header time.
        time: u32,
        /// Median time past of the parent.
        mtp: u32,
    },
    /// The header time is too far in the future.
    #[error("block time {time} is more than the allowed {max} (now + max future)")]
    TimeTooNew {
        /// Header time.
        time: u32,
        /// Latest allowed time.
        max: u64,
    },
    /// The consensus variant's own rule is broken (e.g. a proof-of-stake
    /// block by a validator that does not lead its slot).
    #[error("consensus: {0}")]
    Consensus(#[from] crate::consensus::ConsensusError),
    /// The proof of work is wrong.
    #[error("proof of work: {0}")]
    Pow(#[from] PowError),
    /// Applying the block to the UTXO set failed (BIP30 overwrite or
    /// missing input).
    #[error("utxo update failed: {0}")]
    Utxo(#[from] crate::utxo::UtxoError),
}

// ---------------------------------------------------------------------------
// Transactions.

/// Core's `CheckTransaction`: rules that need no context.
pub fn check_transaction(tx: &Transaction, params: &ChainParams) -> Result<(), TxError> {
    if tx.input.is_empty() {
        return Err(TxError::EmptyInputs);
    }
    if tx.output.is_empty() {
        return Err(TxError::EmptyOutputs);
    }
    let weight = tx.base_size() as u64 * WITNESS_SCALE_FACTOR;
    if weight > params.max_block_weight {
        return Err(TxError::Oversize { weight, max: params.max_block_weight });
    }
    let mut total: u64 = 0;
    for (index, out) in tx.output.iter().enumerate() {
        let value = out.value.to_sat();
        if value > params.max_money_sat {
            return Err(TxError::OutputValueOutOfRange { index, value });
        }
        total = total.saturating_add(value);
        if total > params.max_money_sat {
            return Err(TxError::TotalOutputOutOfRange { total });
        }
    }
    let mut seen = BTreeSet::new();
    for input in &tx.input {
        if !seen.insert(input.previous_output) {
            return Err(TxError::DuplicateInput(input.previous_output));
        }
    }
    if tx.is_coinbase() {
        let len = tx.input[0].script_sig.len();
        if !(2..=100).contains(&len) {
            return Err(TxError::BadCoinbaseScriptLength(len));
        }
    } else {
        for (input, txin) in tx.input.iter().enumerate() {
            if txin.previous_output.is_null() {
                return Err(TxError::NullPrevout { input });
            }
        }
    }
    Ok(())
}

/// What [`check_tx_inputs`] found: the spent coins (in input order) and the fee.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpentCoins {
    /// One coin per input.
    pub coins: Vec<Coin>,
    /// Sum of input values.
    pub value_in: Amount,
    /// Inputs minus outputs.
    pub fee: Amount,
}

impl SpentCoins {
    /// The spent outputs, for [`verify_scripts`].
    pub fn txouts(&self) -> Vec<TxOut> {
        self.coins.iter().map(|c| c.txout.clone()).collect()
    }
}

/// Core's `Consensus::CheckTxInputs` for a non-coinbase transaction spent in
/// a block at `spend_height`: every input exists and is unspent in `view`,
/// coinbase outputs are mature, values are in range and inputs cover outputs.
pub fn check_tx_inputs(
    tx: &Transaction,
    view: &impl CoinView,
    spend_height: u32,
    params: &ChainParams,
) -> Result<SpentCoins, TxError> {
    let mut coins = Vec::with_capacity(tx.input.len());
    let mut value_in: u64 = 0;
    for input in &tx.input {
        let op = input.previous_output;
        let coin = view.coin(&op).ok_or(TxError::MissingInput(op))?;
        if coin.is_coinbase {
            let depth = spend_height.saturating_sub(coin.height);
            if depth < params.coinbase_maturity {
                return Err(TxError::ImmatureCoinbase {
                    outpoint: op,
                    depth,
                    required: params.coinbase_maturity,
                });
            }
        }
        let v = coin.txout.value.to_sat();
        value_in = value_in.saturating_add(v);
        if v > params.max_money_sat || value_in > params.max_money_sat {
            return Err(TxError::InputValueOutOfRange { total: value_in });
        }
        coins.push(coin);
    }
    let value_out: u64 = tx.output.iter().map(|o| o.value.to_sat()).fold(0u64, u64::saturating_add);
    if value_in < value_out {
        return Err(TxError::InsufficientInputValue { input: value_in, output: value_out });
    }
    Ok(SpentCoins {
        coins,
        value_in: Amount::from_sat(value_in),
        fee: Amount::from_sat(value_in - value_out),
    })
}

/// Verifies every input's scripts with Bitcoin Core's engine
/// (libbitcoinconsensus) under `flags`' consensus bits, then fika's policy
/// rules if `flags` has any. `spent[i]` is the output input `i` spends.
pub fn verify_scripts(tx: &Transaction, spent: &[TxOut], flags: &ScriptFlags) -> Result<(), TxError> {
    if spent.len() != tx.input.len() {
        return Err(TxError::SpentOutputsMismatch { inputs: tx.input.len(), given: spent.len() });
    }
    let bytes = bitcoin::consensus::encode::serialize(tx);
    let bits = flags.consensus_bits();
    for (input, prev) in spent.iter().enumerate() {
        bitcoin::consensus::verify_script_with_flags(&prev.script_pubkey, input, prev.value, &bytes, bits)
            .map_err(|e| TxError::ScriptFailed { input, reason: consensus_reason(&e) })?;
    }
    if flags.has_policy() {
        check_policy_scripts(tx, spent, flags)?;
    }
    Ok(())
}

fn consensus_reason(e: &bitcoin::consensus::validation::BitcoinconsensusError) -> String {
    let dbg = format!("{e:?}");
    let what = if dbg.contains("ERR_SCRIPT") {
        "script evaluated to false or failed"
    } else if dbg.contains("ERR_TX_INDEX") {
        "input index out of range"
    } else if dbg.contains("ERR_TX_SIZE_MISMATCH") {
        "transaction size mismatch"
    } else if dbg.contains("ERR_TX_DESERIALIZE") {
        "transaction does not deserialize"
    } else if dbg.contains("ERR_AMOUNT_REQUIRED") {
        "amount required"
    } else if dbg.contains("ERR_INVALID_FLAGS") {
        "invalid flags"
    } else {
        "unknown error"
    };
    format!("{what} ({dbg})")
}

/// fika's implementation of Core's policy-only script flags
/// (`CONST_SCRIPTCODE`, `DISCOURAGE_UPGRADABLE_WITNESS_PROGRAM`, and
/// `SECURE_SIGHASH_SINGLE`), checked statically on the scripts of each input.
///
/// * CONST_SCRIPTCODE: refuses OP_CODESEPARATOR anywhere in a legacy script
///   (scriptSig, scriptPubKey, P2SH redeem script), and a legacy script that
///   both runs a CHECKSIG-family opcode and contains a push of a
///   signature-shaped element (which FindAndDelete would strip).
/// * DISCOURAGE_UPGRADABLE_WITNESS_PROGRAM: refuses spending witness programs
///   of version 1 and above (taproot is not active in fika).
/// * SECURE_SIGHASH_SINGLE: refuses a SIGHASH_SINGLE signature on an input
///   whose index has no corresponding output.
pub fn check_policy_scripts(tx: &Transaction, spent: &[TxOut], flags: &ScriptFlags) -> Result<(), TxError> {
    for (input, (txin, prev)) in tx.input.iter().zip(spent).enumerate() {
        let fail = |rule| Err(TxError::PolicyFailed { input, rule });
        let spk = prev.script_pubkey.as_script();
        let redeem = if flags.p2sh && spk.is_p2sh() { last_push(&txin.script_sig) } else { None };
        if flags.const_scriptcode {
            let mut legacy: Vec<&Script> = vec![txin.script_sig.as_script(), spk];
            if let Some(r) = &redeem {
                legacy.push(r.as_script());
            }
            if legacy.iter().any(|s| has_opcode(s, |o| o == op::OP_CODESEPARATOR)) {
                return fail(PolicyRule::CodeSeparator);
            }
            for s in &legacy {
                let checks_sig = has_opcode(s, |o| {
                    o == op::OP_CHECKSIG
                        || o == op::OP_CHECKSIGVERIFY
                        || o == op::OP_CHECKMULTISIG
                        || o == op::OP_CHECKMULTISIGVERIFY
                });
                if checks_sig && pushes(s).iter().any(|p| looks_like_signature(p)) {
                    return fail(PolicyRule::SigFindAndDelete);
                }
            }
        }
        if flags.discourage_upgradable_witness_program && flags.witness {
            let program = if spk.is_witness_program() { Some(spk.to_owned()) } else { redeem.clone() };
            if let Some(p) = program {
                if p.witness_version().is_some_and(|v| v.to_num() != 0) {
                    return fail(PolicyRule::UpgradableWitnessProgram);
                }
            }
        }
        if flags.secure_sighash_single && input >= tx.output.len() {
            let mut elems = pushes(&txin.script_sig);
            elems.extend(txin.witness.iter().map(|w| w.to_vec()));
            if elems.iter().any(|e| looks_like_signature(e) && e.last().is_some_and(|h| h & 0x1f == 0x03)) {
                return fail(PolicyRule::SighashSingleOutOfRange);
            }
        }
    }
    Ok(())
}

fn has_opcode(script: &Script, pred: impl Fn(bitcoin::opcodes::Opcode) -> bool) -> bool {
    script.instructions().map_while(Result::ok).any(|i| matches!(i, Instruction::Op(o) if pred(o)))
}

fn pushes(script: &Script) -> Vec<Vec<u8>> {
    script
        .instructions()
        .map_while(Result::ok)
        .filter_map(|i| match i {
            Instruction::PushBytes(p) => Some(p.as_bytes().to_vec()),
            Instruction::Op(_) => None,
        })
        .collect()
}

fn last_push(script_sig: &Script) -> Option<ScriptBuf> {
    if !script_sig.is_push_only() {
        return None;
    }
    pushes(script_sig).pop().map(ScriptBuf::from_bytes)
}

/// A DER-encoded ECDSA signature plus sighash byte, loosely.
fn looks_like_signature(e: &[u8]) -> bool {
    (9..=73).contains(&e.len()) && e[0] == 0x30 && usize::from(e[1]) + 3 == e.len()
}

/// Core's `IsFinalTx`: final if the locktime is zero, already passed (as a
/// height below `LOCKTIME_THRESHOLD`, else as a time compared with
/// `block_time`), or every input has a final sequence.
pub fn is_final_tx(tx: &Transaction, block_height: u32, block_time: u32) -> bool {
    let lock = tx.lock_time.to_consensus_u32();
    if lock == 0 {
        return true;
    }
    let cmp = if lock < LOCKTIME_THRESHOLD { block_height } else { block_time };
    if lock < cmp {
        return true;
    }
    tx.input.iter().all(|i| i.sequence.0 == u32::MAX)
}

/// BIP68 locks of a transaction: the last height and time (median time past)
/// at which it is still locked; `-1` means unlocked.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SequenceLock {
    /// Last locked height.
    pub min_height: i64,
    /// Last locked median time past.
    pub min_time: i64,
}

/// Core's `CalculateSequenceLocks`. `prev_heights[i]` is the height of the
/// coin input `i` spends (the next block's height for unconfirmed coins);
/// `mtp_at(h)` is the median time past of the chain's block at height `h`.
/// Only version ≥ 2 transactions with `enforce` (BIP68 active) are locked.
pub fn calculate_sequence_locks(
    tx: &Transaction,
    prev_heights: &[u32],
    mtp_at: &dyn Fn(u32) -> u32,
    enforce: bool,
) -> SequenceLock {
    let mut lock = SequenceLock { min_height: -1, min_time: -1 };
    if !enforce || tx.version.0 < 2 {
        return lock;
    }
    for (txin, coin_height) in tx.input.iter().zip(prev_heights) {
        let seq = txin.sequence.0;
        if seq & SEQUENCE_LOCKTIME_DISABLE_FLAG != 0 {
            continue;
        }
        let value = i64::from(seq & SEQUENCE_LOCKTIME_MASK);
        if seq & SEQUENCE_LOCKTIME_TYPE_FLAG != 0 {
            let coin_time = i64::from(mtp_at(coin_height.saturating_sub(1)));
            lock.min_time = lock.min_time.max(coin_time + (value << SEQUENCE_LOCKTIME_GRANULARITY) - 1);
        } else {
            lock.min_height = lock.min_height.max(i64::from(*coin_height) + value - 1);
        }
    }
    lock
}

/// Core's `EvaluateSequenceLocks`: whether a block at `block_height` whose
/// parent has median time past `prev_mtp` satisfies the lock.
pub fn evaluate_sequence_locks(lock: SequenceLock, block_height: u32, prev_mtp: u32) -> bool {
    lock.min_height < i64::from(block_height) && lock.min_time < i64::from(prev_mtp)
}

/// Where a transaction would be confirmed, for contextual checks.
pub struct TxContext<'a> {
    /// Height of the block that would contain it.
    pub spend_height: u32,
    /// Median time past of that block's parent (locktime cutoff, BIP113).
    pub prev_mtp: u32,
    /// Median time past of the active chain's block at a height (for BIP68).
    pub mtp_at: &'a dyn Fn(u32) -> u32,
    /// Script flags to verify with.
    pub flags: ScriptFlags,
}

/// Everything a non-coinbase transaction must satisfy against a coin view:
/// [`check_tx_inputs`], absolute locktime finality (BIP113: against
/// `ctx.prev_mtp`), BIP68 sequence locks
/// (if CSV is active in `ctx.flags`) and [`verify_scripts`]. Returns the
/// spent coins and fee. (Call [`check_transaction`] first.)
pub fn validate_tx_in_context(
    tx: &Transaction,
    view: &impl CoinView,
    ctx: &TxContext<'_>,
    params: &ChainParams,
) -> Result<SpentCoins, TxError> {
    let spent = check_tx_inputs(tx, view, ctx.spend_height, params)?;
    if !is_final_tx(tx, ctx.spend_height, ctx.prev_mtp) {
        return Err(TxError::NonFinal {
            lock_time: tx.lock_time.to_consensus_u32(),
            height: ctx.spend_height,
            time: ctx.prev_mtp,
        });
    }
    let heights: Vec<u32> = spent.coins.iter().map(|c| c.height).collect();
    let lock = calculate_sequence_locks(tx, &heights, ctx.mtp_at, ctx.flags.checksequenceverify);
    if !evaluate_sequence_locks(lock, ctx.spend_height, ctx.prev_mtp) {
        return Err(TxError::SequenceLocked { min_height: lock.min_height, min_time: lock.min_time });
    }
    verify_scripts(tx, &spent.txouts(), &ctx.flags)?;
    Ok(spent)
}

/// A coin view over a base view plus the outputs created and spent by the
/// transactions of a block (or mempool) processed so far.
pub struct OverlayView<'a, V: CoinView> {
    base: &'a V,
    created: BTreeMap<OutPoint, Coin>,
    spent: BTreeSet<OutPoint>,
}

impl<'a, V: CoinView> OverlayView<'a, V> {
    /// An overlay with nothing created or spent yet.
    pub fn new(base: &'a V) -> Self {
        OverlayView { base, created: BTreeMap::new(), spent: BTreeSet::new() }
    }

    /// Whether `outpoint` was spent through this overlay.
    pub fn is_spent(&self, outpoint: &OutPoint) -> bool {
        self.spent.contains(outpoint)
    }

    /// Records `tx` (at `height`): spends its inputs, creates its outputs.
    pub fn apply(&mut self, tx: &Transaction, height: u32) {
        if !tx.is_coinbase() {
            for i in &tx.input {
                self.spent.insert(i.previous_output);
                self.created.remove(&i.previous_output);
            }
        }
        let txid = tx.compute_txid();
        for (vout, out) in tx.output.iter().enumerate() {
            if crate::utxo::is_unspendable(&out.script_pubkey) {
                continue;
            }
            self.created.insert(
                OutPoint::new(txid, vout as u32),
                Coin { txout: out.clone(), height, is_coinbase: tx.is_coinbase() },
            );
        }
    }
}

impl<V: CoinView> CoinView for OverlayView<'_, V> {
    fn coin(&self, outpoint: &OutPoint) -> Option<Coin> {
        if self.spent.contains(outpoint) {
            return None;
        }
        self.created.get(outpoint).cloned().or_else(|| self.base.coin(outpoint))
    }
}

// ---------------------------------------------------------------------------
// Blocks.

/// Core's `CheckBlock` minus the PoW: merkle root (and mutation), size and
/// weight, exactly one coinbase first, every transaction's
/// [`check_transaction`], and the legacy sigop limit.
pub fn check_block(block: &Block, params: &ChainParams) -> Result<(), BlockError> {
    if block.txdata.is_empty() {
        return Err(BlockError::NoTransactions);
    }
    let txids: Vec<Txid> = block.txdata.iter().map(|t| t.compute_txid()).collect();
    let (computed, mutated) = merkle::merkle_root(&txids);
    if computed != block.header.merkle_root {
        return Err(BlockError::BadMerkleRoot { header: block.header.merkle_root, computed });
    }
    if mutated {
        return Err(BlockError::MutatedMerkle);
    }
    let n = block.txdata.len() as u64;
    let count_len = match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        0x1_0000..=0xffff_ffff => 5,
        _ => 9,
    };
    let stripped: u64 = block.txdata.iter().map(|t| t.base_size() as u64).sum::<u64>() + 80 + count_len;
    if (block.txdata.len() as u64) * WITNESS_SCALE_FACTOR > params.max_block_weight
        || stripped * WITNESS_SCALE_FACTOR > params.max_block_weight
    {
        return Err(BlockError::WeightTooHigh {
            weight: stripped * WITNESS_SCALE_FACTOR,
            max: params.max_block_weight,
        });
    }
    if !block.txdata[0].is_coinbase() {
        return Err(BlockError::FirstTxNotCoinbase);
    }
    for (index, tx) in block.txdata.iter().enumerate().skip(1) {
        if tx.is_coinbase() {
            return Err(BlockError::MultipleCoinbase { index });
        }
    }
    let mut cost: u64 = 0;
    for (index, tx) in block.txdata.iter().enumerate() {
        check_transaction(tx, params).map_err(|error| BlockError::Tx { index, txid: txids[index], error })?;
        cost += legacy_sigop_cost(tx);
    }
    if cost > params.max_block_sigops_cost {
        return Err(BlockError::TooManySigops { cost, max: params.max_block_sigops_cost });
    }
    Ok(())
}

/// Core's legacy signature-operation count of a transaction (scriptSigs and
/// scriptPubKeys, CHECKMULTISIG counted as 20) times the witness scale
/// factor: its cost against `max_block_sigops_cost`.
pub fn legacy_sigop_cost(tx: &Transaction) -> u64 {
    let ins: u64 = tx.input.iter().map(|i| i.script_sig.count_sigops_legacy() as u64).sum();
    let outs: u64 = tx.output.iter().map(|o| o.script_pubkey.count_sigops_legacy() as u64).sum();
    (ins + outs) * WITNESS_SCALE_FACTOR
}

/// What a header's checks need to know about its parent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ParentInfo {
    /// The parent's hash.
    pub hash: BlockHash,
    /// The parent's height.
    pub height: u32,
    /// Median time past at the parent.
    pub mtp: u32,
    /// The bits the child must carry (from [`pow::next_work_required`]).
    pub expected_bits: CompactTarget,
}

/// Core's `ContextualCheckBlockHeader` plus the PoW: bits equal the expected
/// next work, PoW per mode, time after the parent's median time past and
/// not more than `max_future_block_time_secs` after `now` (Unix seconds).
pub fn check_header_context(
    header: &Header,
    parent: &ParentInfo,
    params: &ChainParams,
    now: u64,
) -> Result<(), BlockError> {
    pow::check_pow(header, params, parent.expected_bits)?;
    if header.time <= parent.mtp {
        return Err(BlockError::TimeTooOld { time: header.time, mtp: parent.mtp });
    }
    let max = now.saturating_add(params.max_future_block_time_secs);
    if u64::from(header.time) > max {
        return Err(BlockError::TimeTooNew { time: header.time, max });
    }
    Ok(())
}

/// The scriptSig prefix BIP34 requires of the coinbase at `height`.
pub fn bip34_prefix(height: u32) -> ScriptBuf {
    bitcoin::script::Builder::new().push_int(i64::from(height)).into_script()
}

/// The index of the coinbase output holding the witness commitment (the
/// last output starting `OP_RETURN 0x24 aa21a9ed`), if any.
pub fn witness_commitment_index(coinbase: &Transaction) -> Option<usize> {
    coinbase.output.iter().rposition(|o| {
        let b = o.script_pubkey.as_bytes();
        b.len() >= 38 && b[0] == 0x6a && b[1] == 0x24 && b[2..6] == [0xaa, 0x21, 0xa9, 0xed]
    })
}

/// Core's `ContextualCheckBlock` for a block at `height` whose parent has
/// median time past `prev_mtp`: every transaction final (BIP113: locktimes
/// compare against `prev_mtp`), BIP34 coinbase
/// height, witness commitment (when present it must match; without it no
/// transaction may carry witness data), and the weight limit.
pub fn contextual_check_block(
    block: &Block,
    height: u32,
    prev_mtp: u32,
    params: &ChainParams,
) -> Result<(), BlockError> {
    for (index, tx) in block.txdata.iter().enumerate() {
        if !is_final_tx(tx, height, prev_mtp) {
            return Err(BlockError::NonFinalTx { index });
        }
    }
    let coinbase = block.txdata.first().ok_or(BlockError::NoTransactions)?;
    let prefix = bip34_prefix(height);
    let Some(coinbase_in) = coinbase.input.first() else {
        return Err(BlockError::FirstTxNotCoinbase);
    };
    if !coinbase_in.script_sig.as_bytes().starts_with(prefix.as_bytes()) {
        return Err(BlockError::BadCoinbaseHeight { height });
    }
    let commitment = if params.script_flags.witness { witness_commitment_index(coinbase) } else { None };
    match commitment {
        Some(pos) => {
            let stack: Vec<&[u8]> = coinbase_in.witness.iter().collect();
            if stack.len() != 1 || stack[0].len() != 32 {
                return Err(BlockError::BadWitnessNonce);
            }
            let root = block.witness_root().ok_or(BlockError::BadWitnessCommitment)?;
            let expected = Block::compute_witness_commitment(&root, stack[0]);
            if coinbase.output[pos].script_pubkey.as_bytes()[6..38] != expected.to_byte_array() {
                return Err(BlockError::BadWitnessCommitment);
            }
        }
        None => {
            if let Some(index) =
                block.txdata.iter().position(|t| t.input.iter().any(|i| !i.witness.is_empty()))
            {
                return Err(BlockError::UnexpectedWitness { index });
            }
        }
    }
    let weight = block.weight().to_wu();
    if weight > params.max_block_weight {
        return Err(BlockError::WeightTooHigh { weight, max: params.max_block_weight });
    }
    Ok(())
}

/// The validation half of Core's `ConnectBlock` for a block at
/// `ctx.spend_height` on top of `view`: no input spent twice within the
/// block, every transaction valid in context (inputs, maturity, values,
/// locks, scripts), and the coinbase not claiming more than subsidy + fees.
/// Returns the total fees. Does not modify anything.
pub fn check_block_inputs(
    block: &Block,
    view: &impl CoinView,
    ctx: &TxContext<'_>,
    params: &ChainParams,
) -> Result<Amount, BlockError> {
    let mut overlay = OverlayView::new(view);
    let mut fees: u64 = 0;
    for (index, tx) in block.txdata.iter().enumerate() {
        if index > 0 {
            for input in &tx.input {
                if overlay.is_spent(&input.previous_output) {
                    return Err(BlockError::DoubleSpend(input.previous_output));
                }
            }
            let txid = tx.compute_txid();
            let spent = validate_tx_in_context(tx, &overlay, ctx, params)
                .map_err(|error| BlockError::Tx { index, txid, error })?;
            fees = fees.checked_add(spent.fee.to_sat()).ok_or(BlockError::FeesOutOfRange)?;
            if fees > params.max_money_sat {
                return Err(BlockError::FeesOutOfRange);
            }
        }
        overlay.apply(tx, ctx.spend_height);
    }
    let coinbase = block.txdata.first().ok_or(BlockError::NoTransactions)?;
    let claimed = coinbase.output.iter().map(|o| o.value.to_sat()).fold(0u64, u64::saturating_add);
    let allowed = params.subsidy(ctx.spend_height).to_sat().saturating_add(fees);
    if claimed > allowed {
        return Err(BlockError::CoinbaseOverspend {
            allowed: Amount::from_sat(allowed),
            claimed: Amount::from_sat(claimed),
        });
    }
    Ok(Amount::from_sat(fees))
}

impl BlockError {
    /// Whether the failure may come from a corrupted or malleated copy of
    /// an otherwise valid block (so the header must not be marked invalid).
    pub fn may_be_malleated(&self) -> bool {
        matches!(
            self,
            BlockError::BadMerkleRoot { .. }
                | BlockError::MutatedMerkle
                | BlockError::BadWitnessNonce
                | BlockError::BadWitnessCommitment
                | BlockError::UnexpectedWitness { .. }
                | BlockError::WeightTooHigh { .. }
                | BlockError::NoTransactions
        )
    }
}
