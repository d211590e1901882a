//! System contracts: native code at a fixed address (Rootstock's Bridge is
//! one), reached by transactions and by EVM contracts.
//!
//! A [`SystemContract`] value *is* the contract's state. The chain keeps a
//! clone of it in every block's post-state snapshot, beside the account
//! state, so a sidechain reorg reverts it with everything else; it should
//! therefore be cheap to clone (persistent maps such as `imbl`, or `Arc`s).
//!
//! How calls reach it (see [`crate::exec`] for the mechanism):
//!
//! * a transaction whose `to` is the contract's address, and a `CALL` from
//!   an EVM contract, run [`SystemContract::call`]. The call's value is
//!   first credited to the contract's address (an ordinary account balance);
//!   the outcome's `transfers` move wei out of that balance, and its logs are
//!   emitted from the contract's address. If the call returns `Err`, or a
//!   transfer exceeds the balance, the call reverts: the value goes back,
//!   nothing is logged and the contract's state is restored;
//! * a `STATICCALL`, and the chain's read-only [`call`](crate::SideChain::call),
//!   run [`SystemContract::read_only_call`];
//! * `DELEGATECALL` and `CALLCODE` to the address revert.
//!
//! A mutation made inside an EVM call frame that later reverts is undone
//! too, exactly like EVM storage.

use crate::receipt::Log;

/// Gas charged for a system call when [`SystemContract::gas_cost`] is not
/// overridden (on top of the transaction's intrinsic gas when called by a
/// transaction).
pub const DEFAULT_SYSTEM_CALL_GAS: u64 = 10_000;

/// What a system contract sees of the block and transaction it runs in.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub struct BlockEnvInfo {
    /// Number of the block being executed.
    pub number: u64,
    /// Its timestamp (Unix seconds).
    pub timestamp: u64,
    /// Its miner.
    pub coinbase: [u8; 20],
    /// Hash of its parent.
    pub parent_hash: [u8; 32],
    /// Hash of the transaction being executed (zero in read-only calls).
    pub tx_hash: [u8; 32],
    /// Index of the transaction in the block (0 in read-only calls).
    pub tx_index: u32,
    /// The transaction's signer (`tx.origin`); a caller different from it
    /// is a contract.
    pub tx_origin: [u8; 20],
    /// The signer's compressed public key (`None` in read-only calls).
    pub tx_origin_pubkey: Option<[u8; 33]>,
    /// The system contract's own balance in wei when called (after the
    /// call's value was credited).
    pub contract_balance: u128,
}

impl BlockEnvInfo {
    /// An environment for block `number` at `timestamp` mined by
    /// `coinbase` on `parent_hash`, outside any transaction.
    pub fn new(number: u64, timestamp: u64, coinbase: [u8; 20], parent_hash: [u8; 32]) -> BlockEnvInfo {
        BlockEnvInfo {
            number,
            timestamp,
            coinbase,
            parent_hash,
            tx_hash: [0u8; 32],
            tx_index: 0,
            tx_origin: [0u8; 20],
            tx_origin_pubkey: None,
            contract_balance: 0,
        }
    }
}

/// The effects of a successful mutating system call.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash)]
pub struct SystemCallOutcome {
    /// Return data.
    pub output: Vec<u8>,
    /// Logs to emit; their `address` is replaced by the contract's address.
    /// At most four topics each (more makes the call revert).
    pub logs: Vec<Log>,
    /// Wei to move out of the contract's balance, in order.
    pub transfers: Vec<([u8; 20], u128)>,
}

/// Native code at a fixed address whose value is its own state.
pub trait SystemContract {
    /// The contract's address.
    fn address(&self) -> [u8; 20];

    /// Gas charged for a call with `data` (all of it is consumed, success
    /// or not). If the caller passes less, the call fails out of gas.
    fn gas_cost(&self, data: &[u8]) -> u64 {
        let _ = data;
        DEFAULT_SYSTEM_CALL_GAS
    }

    /// A mutating call by `caller` sending `value` wei with `data`. On `Err`
    /// the call reverts with the message's bytes as revert data and the
    /// state is restored (implementations need not undo partial changes).
    fn call(
        &mut self,
        caller: [u8; 20],
        value: u128,
        data: &[u8],
        block: &BlockEnvInfo,
    ) -> Result<SystemCallOutcome, String>;

    /// A read-only call (`STATICCALL`, `eth_call`); returns the output.
    fn read_only_call(&self, caller: [u8; 20], data: &[u8], block: &BlockEnvInfo) -> Result<Vec<u8>, String>;

    /// A digest of the contract's state, folded into the block's state
    /// root so that nodes disagreeing on it reject each other's blocks.
    fn state_digest(&self) -> [u8; 32];

    /// Accounts that share the block's fees, in equal parts, when the chain
    /// has a fee share ([`ChainConfig::fee_share_divisor`](crate::ChainConfig::fee_share_divisor)):
    /// in Rootstock, the PowPeg's members (REMASC's federation share). Read
    /// from the state after the block's transactions. None by default.
    fn fee_recipients(&self) -> Vec<[u8; 20]> {
        Vec::new()
    }
}

/// The address [`NoSystemContract`] claims (Rootstock's precompile range,
/// unused there).
pub const NO_SYSTEM_CONTRACT_ADDRESS: [u8; 20] =
    [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0];

/// A chain without a system contract: calls to
/// [`NO_SYSTEM_CONTRACT_ADDRESS`] revert.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct NoSystemContract;

impl SystemContract for NoSystemContract {
    fn address(&self) -> [u8; 20] {
        NO_SYSTEM_CONTRACT_ADDRESS
    }

    fn call(
        &mut self,
        _: [u8; 20],
        _: u128,
        _: &[u8],
        _: &BlockEnvInfo,
    ) -> Result<SystemCallOutcome, String> {
        Err("no system contract".into())
    }

    fn read_only_call(&self, _: [u8; 20], _: &[u8], _: &BlockEnvInfo) -> Result<Vec<u8>, String> {
        Err("no system contract".into())
    }

    fn state_digest(&self) -> [u8; 32] {
        [0u8; 32]
    }
}
