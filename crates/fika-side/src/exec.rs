//! Executing a block's transactions with revm, with the system contract
//! hooked in as a custom precompile.
//!
//! Each block runs on a clone of its parent's [`Snapshot`] (O(1) thanks to
//! the persistent maps): one revm `Evm` per block over a database that
//! reads the snapshot, one `transact` per transaction, whose changes are
//! folded back into the snapshot (keeping the state digest up to date).
//! Fees are paid to the block's coinbase by revm (legacy transactions and a
//! base fee of zero: the miner gets `gasPrice · gasUsed`). Failed
//! transactions still pay; their receipts have status 0 and no logs.
//!
//! # System contract hook
//!
//! The system contract is a revm precompile at its address (revm 43's
//! `PrecompileProvider` gives precompiles the journal), so a transaction to
//! it and a `CALL` from a contract take the same path: revm moves the call's
//! value into the address, the hook runs [`SystemContract::call`], moves the
//! outcome's transfers out of the address through the journal, emits its
//! logs through the journal and charges [`SystemContract::gas_cost`].
//!
//! The contract's state is a Rust value outside revm's journal, so reverts
//! are tracked explicitly: before each mutating call the state is cloned
//! onto an undo stack, and a marker storage slot of the contract's address
//! (`2²⁵⁶ − 1 − k` for the k-th mutation of the transaction) is written
//! through the journal. A frame that reverts reverts its markers with it,
//! and revm reverts journal entries newest-first, so the reverted mutations
//! are always a suffix of the stack: at the next system call and at the end
//! of the transaction the hook drops the entries whose marker is gone and
//! restores the oldest dropped state. A failed transaction restores the
//! state from before its first call. Markers never reach the account state.

use std::collections::BTreeMap;
use std::convert::Infallible;

use revm::context::result::ExecutionResult;
use revm::context::{BlockEnv, CfgEnv, ContextTr, Evm, JournalTr, TxEnv};
use revm::handler::instructions::EthInstructions;
use revm::handler::{EthFrame, EthPrecompiles, PrecompileProvider, precompile_output_to_interpreter_result};
use revm::interpreter::interpreter::EthInterpreter;
use revm::interpreter::{CallInputs, CallValue, InterpreterResult};
use revm::precompile::{PrecompileHalt, PrecompileOutput};
use revm::primitives::hardfork::SpecId;
use revm::primitives::{Address, AddressSet, B256, Bytes, Log as EvmLog, TxKind, U256};
use revm::state::{AccountInfo, Bytecode, EvmState};
use revm::{Context, Database, ExecuteEvm, Journal};
use thiserror::Error;

use crate::receipt::{Log, Receipt};
use crate::state::{Snapshot, WorldState};
use crate::system::{BlockEnvInfo, SystemContract};
use crate::tx::{SignedTx, TxError, address_of};

/// Why a transaction cannot be included in a block.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TxExecError {
    /// The signature is invalid.
    #[error("bad signature: {0}")]
    Signature(#[from] TxError),
    /// The transaction is signed for another chain.
    #[error("transaction for chain {got}, this chain is {expected}")]
    WrongChainId {
        /// This chain's id.
        expected: u64,
        /// The transaction's.
        got: u64,
    },
    /// The transaction's gas limit exceeds the gas left in the block.
    #[error("transaction gas limit {gas_limit} exceeds the {remaining} gas left in the block")]
    BlockGasExceeded {
        /// The transaction's gas limit.
        gas_limit: u64,
        /// Gas left in the block.
        remaining: u64,
    },
    /// revm refused the transaction (nonce, balance, intrinsic gas, …).
    #[error("invalid transaction: {0}")]
    Invalid(String),
}

/// The block-level inputs of execution.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ExecEnv {
    /// Chain id (EIP-155, `CHAINID`).
    pub chain_id: u64,
    /// EVM rules.
    pub spec: SpecId,
    /// Block number.
    pub number: u64,
    /// Block timestamp.
    pub timestamp: u64,
    /// Miner, paid the fees.
    pub coinbase: [u8; 20],
    /// Block gas limit.
    pub gas_limit: u64,
    /// Block difficulty (returned by `DIFFICULTY`/`PREVRANDAO`).
    pub difficulty: U256,
    /// Parent block hash.
    pub parent_hash: [u8; 32],
    /// Hashes of up to 256 ancestors by number, for `BLOCKHASH`.
    pub block_hashes: BTreeMap<u64, [u8; 32]>,
    /// The share of the block's fees paid to the system contract's
    /// [`fee_recipients`](SystemContract::fee_recipients): `fees /
    /// fee_share_divisor` (0: no share).
    pub fee_share_divisor: u64,
}

impl ExecEnv {
    fn block_info(&self) -> BlockEnvInfo {
        BlockEnvInfo::new(self.number, self.timestamp, self.coinbase, self.parent_hash)
    }

    fn block_env(&self) -> BlockEnv {
        BlockEnv {
            number: U256::from(self.number),
            beneficiary: Address::new(self.coinbase),
            timestamp: U256::from(self.timestamp),
            gas_limit: self.gas_limit,
            basefee: 0,
            difficulty: self.difficulty,
            prevrandao: Some(B256::from(self.difficulty.to_be_bytes::<32>())),
            ..Default::default()
        }
    }
}

/// What a transaction did, beside its receipt.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TxInfo {
    /// The transaction hash.
    pub hash: [u8; 32],
    /// Its sender.
    pub sender: [u8; 20],
    /// The created contract, for a successful creation.
    pub contract_address: Option<[u8; 20]>,
}

/// The result of executing a list of transactions on a parent state.
#[derive(Clone, Debug)]
pub struct BlockOutput<S> {
    /// The post-state.
    pub snapshot: Snapshot<S>,
    /// The included transactions (all of them in strict mode).
    pub transactions: Vec<SignedTx>,
    /// One receipt per included transaction.
    pub receipts: Vec<Receipt>,
    /// One entry per included transaction.
    pub tx_info: Vec<TxInfo>,
    /// Total gas used.
    pub gas_used: u64,
    /// Wei moved from the block's miner to the fee recipients.
    pub fee_share: u128,
    /// In lenient mode, the skipped transactions (index in the input, why).
    pub rejected: Vec<(usize, TxExecError)>,
}

/// The database revm reads: a snapshot being modified in place.
#[derive(Debug)]
pub(crate) struct ExecDb {
    world: WorldState,
    block_hashes: BTreeMap<u64, [u8; 32]>,
}

impl Database for ExecDb {
    type Error = Infallible;

    fn basic(&mut self, address: Address) -> Result<Option<AccountInfo>, Infallible> {
        Ok(self.world.account(&address.into_array()).map(|a| AccountInfo {
            balance: a.balance,
            nonce: a.nonce,
            code_hash: B256::from(a.code_hash),
            code: self.world.code_by_hash(&a.code_hash).cloned(),
            ..Default::default()
        }))
    }

    fn code_by_hash(&mut self, code_hash: B256) -> Result<Bytecode, Infallible> {
        Ok(self.world.code_by_hash(&code_hash.0).cloned().unwrap_or_default())
    }

    fn storage(&mut self, address: Address, index: U256) -> Result<U256, Infallible> {
        Ok(self.world.storage(&address.into_array(), &index))
    }

    fn block_hash(&mut self, number: u64) -> Result<B256, Infallible> {
        Ok(self.block_hashes.get(&number).map(|h| B256::from(*h)).unwrap_or_default())
    }
}

type SideCtx = Context<BlockEnv, TxEnv, CfgEnv, ExecDb, Journal<ExecDb>, ()>;
type SideEvm<S> =
    Evm<SideCtx, (), EthInstructions<EthInterpreter, SideCtx>, SysPrecompiles<S>, EthFrame<EthInterpreter>>;

fn marker_key(k: u64) -> U256 {
    U256::MAX - U256::from(k)
}

/// Ethereum's precompiles plus the system contract.
pub(crate) struct SysPrecompiles<S> {
    eth: EthPrecompiles,
    warm: AddressSet,
    address: Address,
    sys: S,
    undo: Vec<(U256, S)>,
    next_marker: u64,
    env: BlockEnvInfo,
    read_only: bool,
}

impl<S: SystemContract + Clone> SysPrecompiles<S> {
    fn new(spec: SpecId, sys: S, env: BlockEnvInfo, read_only: bool) -> Self {
        let eth = EthPrecompiles::new(spec);
        let address = Address::new(sys.address());
        let mut warm = eth.warm_addresses().clone();
        warm.insert(address);
        SysPrecompiles { eth, warm, address, sys, undo: Vec::new(), next_marker: 0, env, read_only }
    }

    /// Drops the undo entries whose marker the journal no longer holds and
    /// restores the oldest dropped state.
    fn sync_with_journal(&mut self, ctx: &mut SideCtx) {
        let journal = ctx.journal_mut();
        let _ = journal.load_account(self.address);
        let mut restore = None;
        while let Some((key, _)) = self.undo.last() {
            let present =
                journal.sload_skip_cold_load(self.address, *key, false).map(|v| v.data).unwrap_or_default();
            if !present.is_zero() {
                break;
            }
            restore = self.undo.pop().map(|(_, s)| s);
        }
        if let Some(s) = restore {
            self.sys = s;
        }
    }

    /// Called after each transaction with its final state changes: rolls
    /// back reverted mutations and strips the markers.
    fn end_tx(&mut self, success: bool, state: Option<&mut EvmState>) {
        let account = state.and_then(|s| s.get_mut(&self.address));
        if !success {
            if let Some((_, first)) = self.undo.drain(..).next() {
                self.sys = first;
            }
        }
        let mut restore = None;
        match account {
            Some(acc) => {
                while let Some((key, _)) = self.undo.last() {
                    if acc.storage.get(key).is_some_and(|s| !s.present_value().is_zero()) {
                        break;
                    }
                    restore = self.undo.pop().map(|(_, s)| s);
                }
                for k in 0..self.next_marker {
                    acc.storage.remove(&marker_key(k));
                }
            }
            None => restore = self.undo.drain(..).next().map(|(_, s)| s),
        }
        if let Some(s) = restore {
            self.sys = s;
        }
        self.undo.clear();
        self.next_marker = 0;
    }

    fn run_system(&mut self, ctx: &mut SideCtx, inputs: &CallInputs, data: &[u8]) -> PrecompileOutput {
        let reservoir = inputs.reservoir;
        let gas = self.sys.gas_cost(data);
        if gas > inputs.gas_limit {
            return PrecompileOutput::halt(PrecompileHalt::OutOfGas, reservoir);
        }
        let revert =
            |msg: &str| PrecompileOutput::revert(gas, Bytes::copy_from_slice(msg.as_bytes()), reservoir);
        if inputs.target_address != self.address {
            return revert("system contract cannot be delegate-called");
        }
        self.sync_with_journal(ctx);
        let caller = inputs.caller.into_array();
        let mut env = self.env.clone();
        env.contract_balance = ctx
            .journal_mut()
            .load_account(self.address)
            .map(|a| u128::try_from(a.data.info.balance).unwrap_or(u128::MAX))
            .unwrap_or(0);
        if inputs.is_static || self.read_only {
            return match self.sys.read_only_call(caller, data, &env) {
                Ok(out) => PrecompileOutput::new(gas, out.into(), reservoir),
                Err(e) => revert(&e),
            };
        }
        let value = match inputs.value {
            CallValue::Transfer(v) | CallValue::Apparent(v) => v,
        };
        let Ok(value) = u128::try_from(value) else {
            return revert("call value above 2^128 wei");
        };
        let pre = self.sys.clone();
        let outcome = match self.sys.call(caller, value, data, &env) {
            Ok(o) => o,
            Err(e) => {
                self.sys = pre;
                return revert(&e);
            }
        };
        if outcome.logs.iter().any(|l| l.topics.len() > 4) {
            self.sys = pre;
            return revert("system contract log with more than four topics");
        }
        for (to, wei) in &outcome.transfers {
            match ctx.journal_mut().transfer(self.address, Address::new(*to), U256::from(*wei)) {
                Ok(None) => {}
                Ok(Some(err)) => {
                    self.sys = pre;
                    return revert(&format!("system contract transfer of {wei} wei failed: {err:?}"));
                }
                Err(never) => match never {},
            }
        }
        for log in outcome.logs {
            let topics = log.topics.into_iter().map(B256::from).collect();
            ctx.journal_mut().log(EvmLog::new_unchecked(self.address, topics, log.data.into()));
        }
        let key = marker_key(self.next_marker);
        self.next_marker += 1;
        let _ = ctx.journal_mut().sstore_skip_cold_load(self.address, key, U256::from(1u8), false);
        self.undo.push((key, pre));
        PrecompileOutput::new(gas, outcome.output.into(), reservoir)
    }
}

impl<S: SystemContract + Clone> PrecompileProvider<SideCtx> for SysPrecompiles<S> {
    type Output = InterpreterResult;

    fn set_spec(&mut self, spec: SpecId) -> bool {
        let changed = <EthPrecompiles as PrecompileProvider<SideCtx>>::set_spec(&mut self.eth, spec);
        if changed {
            self.warm = self.eth.warm_addresses().clone();
            self.warm.insert(self.address);
        }
        changed
    }

    fn run(
        &mut self,
        context: &mut SideCtx,
        inputs: &CallInputs,
    ) -> Result<Option<InterpreterResult>, String> {
        if inputs.bytecode_address != self.address {
            return <EthPrecompiles as PrecompileProvider<SideCtx>>::run(&mut self.eth, context, inputs);
        }
        let data = inputs.input.as_bytes(context).to_vec();
        let out = self.run_system(context, inputs, &data);
        Ok(Some(precompile_output_to_interpreter_result(out, inputs.gas_limit)))
    }

    fn warm_addresses(&self) -> &AddressSet {
        &self.warm
    }

    fn contains(&self, address: &Address) -> bool {
        self.warm.contains(address)
    }
}

/// Folds one transaction's changes into the world state (post-Spurious
/// Dragon rules: self-destructed accounts vanish, created ones start with
/// empty storage, touched empty ones are removed).
fn apply_changes(world: &mut WorldState, state: EvmState) {
    let mut changes: Vec<_> = state.into_iter().filter(|(_, acc)| acc.is_touched()).collect();
    changes.sort_by_key(|(addr, _)| *addr);
    for (addr, acc) in changes {
        let address = addr.into_array();
        if acc.is_selfdestructed() {
            world.remove_account(&address);
            continue;
        }
        let created = acc.is_created();
        let mut slots: Vec<(U256, U256)> = acc
            .storage
            .iter()
            .filter(|(_, s)| s.is_changed())
            .map(|(k, s)| (*k, s.present_value()))
            .collect();
        slots.sort_unstable();
        world.update_account(&address, |e| {
            if created {
                e.clear_storage();
            }
            e.set_balance(acc.info.balance);
            e.set_nonce(acc.info.nonce);
            e.set_code_hash(acc.info.code_hash.0, acc.info.code.as_ref());
            for (k, v) in slots {
                e.set_storage(k, v);
            }
        });
    }
}

fn build_evm<S: SystemContract + Clone>(env: &ExecEnv, parent: &Snapshot<S>, read_only: bool) -> SideEvm<S> {
    let db = ExecDb { world: parent.world.clone(), block_hashes: env.block_hashes.clone() };
    let chain_id = env.chain_id;
    let ctx = SideCtx::new(db, env.spec)
        .modify_cfg_chained(|cfg| {
            cfg.chain_id = chain_id;
            cfg.tx_chain_id_check = true;
            cfg.disable_nonce_check = read_only;
        })
        .with_block(env.block_env());
    let precompiles = SysPrecompiles::new(env.spec, parent.system.clone(), env.block_info(), read_only);
    Evm::new(ctx, EthInstructions::new_mainnet_with_spec(env.spec), precompiles)
}

fn convert_logs(logs: &[EvmLog]) -> Vec<Log> {
    logs.iter()
        .map(|l| Log {
            address: l.address.into_array(),
            topics: l.data.topics().iter().map(|t| t.0).collect(),
            data: l.data.data.to_vec(),
        })
        .collect()
}

/// Whether invalid transactions fail the whole block or are skipped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExecMode {
    /// Any invalid transaction fails execution (validating a block).
    Strict,
    /// Invalid transactions are skipped (building a block).
    Lenient,
}

/// Executes `txs` in order on `parent`. In [`ExecMode::Strict`] the first
/// invalid transaction is returned as `Err((index, error))`.
pub fn execute<S: SystemContract + Clone>(
    env: &ExecEnv,
    parent: &Snapshot<S>,
    txs: &[SignedTx],
    mode: ExecMode,
) -> Result<BlockOutput<S>, (usize, TxExecError)> {
    let mut evm = build_evm(env, parent, false);
    let mut out_txs = Vec::with_capacity(txs.len());
    let mut receipts = Vec::with_capacity(txs.len());
    let mut tx_info = Vec::with_capacity(txs.len());
    let mut rejected = Vec::new();
    let mut cumulative = 0u64;
    let mut fees: u128 = 0;
    for (index, tx) in txs.iter().enumerate() {
        let tx_index = u32::try_from(out_txs.len()).unwrap_or(u32::MAX);
        match execute_one(env, &mut evm, tx, tx_index, cumulative) {
            Ok((receipt_gas, status, logs, info)) => {
                cumulative = cumulative.saturating_add(receipt_gas);
                fees = fees.saturating_add(u128::from(receipt_gas).saturating_mul(tx.tx.gas_price));
                receipts.push(Receipt {
                    status,
                    cumulative_gas_used: cumulative,
                    gas_used: receipt_gas,
                    logs,
                });
                tx_info.push(info);
                out_txs.push(tx.clone());
            }
            Err(e) => match mode {
                ExecMode::Strict => return Err((index, e)),
                ExecMode::Lenient => rejected.push((index, e)),
            },
        }
    }
    let mut world = std::mem::take(&mut evm.ctx.db_mut().world);
    let system = evm.precompiles.sys;
    let fee_share = share_fees(env, &mut world, &system, fees);
    Ok(BlockOutput {
        snapshot: Snapshot { world, system },
        transactions: out_txs,
        receipts,
        tx_info,
        gas_used: cumulative,
        fee_share,
        rejected,
    })
}

/// Pays `fees / fee_share_divisor` of the block's `fees` (which the miner
/// received) in equal parts to the system contract's fee recipients, the
/// remainder of the division staying with the miner — Rootstock's REMASC
/// share of the federation (1 %), paid at once rather than after REMASC's
/// maturity delay. Returns the wei moved. Nothing moves if there are no
/// recipients, no share, or the miner no longer holds it.
fn share_fees<S: SystemContract>(env: &ExecEnv, world: &mut WorldState, system: &S, fees: u128) -> u128 {
    if env.fee_share_divisor == 0 || fees == 0 {
        return 0;
    }
    let recipients = system.fee_recipients();
    let n = recipients.len() as u128;
    if n == 0 {
        return 0;
    }
    let each = fees / u128::from(env.fee_share_divisor) / n;
    let total = each * n;
    if each == 0 || world.balance(&env.coinbase) < U256::from(total) {
        return 0;
    }
    world.update_account(&env.coinbase, |a| a.set_balance(a.balance().saturating_sub(U256::from(total))));
    for r in &recipients {
        world.credit(r, U256::from(each));
    }
    total
}

fn execute_one<S: SystemContract + Clone>(
    env: &ExecEnv,
    evm: &mut SideEvm<S>,
    tx: &SignedTx,
    tx_index: u32,
    cumulative: u64,
) -> Result<(u64, bool, Vec<Log>, TxInfo), TxExecError> {
    let pubkey = tx.recover_pubkey()?;
    let sender = address_of(&pubkey);
    if let Some(id) = tx.chain_id() {
        if id != env.chain_id {
            return Err(TxExecError::WrongChainId { expected: env.chain_id, got: id });
        }
    }
    let remaining = env.gas_limit.saturating_sub(cumulative);
    if tx.tx.gas_limit > remaining {
        return Err(TxExecError::BlockGasExceeded { gas_limit: tx.tx.gas_limit, remaining });
    }
    let hash = tx.tx_hash();
    let tx_env = TxEnv {
        tx_type: 0,
        caller: Address::new(sender),
        gas_limit: tx.tx.gas_limit,
        gas_price: tx.tx.gas_price,
        kind: match tx.tx.to {
            Some(to) => TxKind::Call(Address::new(to)),
            None => TxKind::Create,
        },
        value: U256::from(tx.tx.value),
        data: Bytes::copy_from_slice(&tx.tx.data),
        nonce: tx.tx.nonce,
        chain_id: tx.chain_id(),
        ..Default::default()
    };

    let mut info = env.block_info();
    info.tx_hash = hash;
    info.tx_index = tx_index;
    info.tx_origin = sender;
    info.tx_origin_pubkey = Some(pubkey.serialize());
    evm.precompiles.env = info;

    match evm.transact(tx_env) {
        Err(e) => {
            evm.precompiles.end_tx(false, None);
            Err(TxExecError::Invalid(e.to_string()))
        }
        Ok(res) => {
            let mut state = res.state;
            let result: ExecutionResult = res.result;
            let success = result.is_success();
            evm.precompiles.end_tx(success, Some(&mut state));
            apply_changes(&mut evm.ctx.db_mut().world, state);
            let logs = if success { convert_logs(result.logs()) } else { Vec::new() };
            let contract_address = result.created_address().map(|a| a.into_array());
            Ok((result.tx_gas_used(), success, logs, TxInfo { hash, sender, contract_address }))
        }
    }
}

/// The result of a read-only call.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CallOutput {
    /// Whether the call succeeded.
    pub success: bool,
    /// Return data (revert data on failure).
    pub output: Vec<u8>,
    /// Gas used.
    pub gas_used: u64,
}

/// Runs a call on `state` without keeping any effect: no nonce check, a
/// gas price of zero, the block gas limit as gas. Calls reaching the system
/// contract run [`SystemContract::read_only_call`].
pub fn read_only_call<S: SystemContract + Clone>(
    env: &ExecEnv,
    state: &Snapshot<S>,
    from: [u8; 20],
    to: [u8; 20],
    value: u128,
    data: &[u8],
) -> Result<CallOutput, TxExecError> {
    let mut evm = build_evm(env, state, true);
    let tx_env = TxEnv {
        tx_type: 0,
        caller: Address::new(from),
        gas_limit: env.gas_limit,
        gas_price: 0,
        kind: TxKind::Call(Address::new(to)),
        value: U256::from(value),
        data: Bytes::copy_from_slice(data),
        nonce: state.world.nonce(&from),
        chain_id: Some(env.chain_id),
        ..Default::default()
    };
    let mut info = env.block_info();
    info.tx_origin = from;
    evm.precompiles.env = info;
    let res = evm.transact(tx_env).map_err(|e| TxExecError::Invalid(e.to_string()))?;
    let result = res.result;
    let gas_used = result.tx_gas_used();
    let (success, output) = match result {
        ExecutionResult::Success { output, .. } => (true, output.into_data().to_vec()),
        ExecutionResult::Revert { output, .. } => (false, output.to_vec()),
        ExecutionResult::Halt { .. } => (false, Vec::new()),
    };
    Ok(CallOutput { success, output, gas_used })
}
