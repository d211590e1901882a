//! Account state as persistent maps, so that every block's post-state is a
//! cheap snapshot and a reorg is a switch of snapshot.
//!
//! [`WorldState`] holds accounts (balance in wei — 1 RBTC = 10¹⁸ wei —,
//! nonce, code hash, storage) in `imbl::OrdMap`s: cloning is O(1) and
//! shares structure, iteration is in key order. [`Snapshot`] pairs it with
//! the system contract's state.
//!
//! # State root
//!
//! The state root is not a Merkle-Patricia trie root but a deterministic
//! digest maintained incrementally (O(changes) per block):
//!
//! * a storage slot hashes to `keccak256(address ‖ key ‖ value)` (32-byte
//!   big-endian words); an account's storage digest is the sum of its slots'
//!   hashes modulo 2²⁵⁶;
//! * an account hashes to `keccak256(address ‖ nonce (8 bytes) ‖ balance ‖
//!   code hash ‖ storage digest)`; the accounts digest is the sum of the
//!   accounts' hashes modulo 2²⁵⁶ (an "AdHash" multiset hash);
//! * the state root is `keccak256("fika-side/state" ‖ accounts digest ‖
//!   system contract digest)`.
//!
//! Equal states give equal roots whatever order they were built in, and
//! any difference changes the root except with negligible probability for
//! honest nodes. It is *not* a commitment one can prove single accounts
//! against, and an additive multiset hash is weaker than a trie against a
//! deliberate adversary (generalised-birthday attacks); that is acceptable
//! in a simulator.

use std::collections::BTreeMap;

use imbl::OrdMap;
use revm::bytecode::Bytecode;
use revm::primitives::{KECCAK_EMPTY, U256};

use crate::keccak256;
use crate::system::SystemContract;

/// Wei in one RBTC.
pub const WEI_PER_RBTC: u128 = 1_000_000_000_000_000_000;

/// The whole RBTC supply, 21 million RBTC, in wei.
pub const RBTC_SUPPLY_WEI: u128 = 21_000_000 * WEI_PER_RBTC;

/// Rootstock's Bridge address, `0x0000000000000000000000000000000001000006`.
pub const BRIDGE_ADDRESS: [u8; 20] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0, 0, 0x06];

/// `keccak256` of empty code.
pub const EMPTY_CODE_HASH: [u8; 32] = KECCAK_EMPTY.0;

/// One account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AccountState {
    /// Number of transactions sent (or contracts created, for a contract).
    pub nonce: u64,
    /// Balance in wei.
    pub balance: U256,
    /// `keccak256` of the code ([`EMPTY_CODE_HASH`] for none).
    pub code_hash: [u8; 32],
    storage: OrdMap<U256, U256>,
    storage_digest: U256,
}

impl Default for AccountState {
    fn default() -> Self {
        AccountState {
            nonce: 0,
            balance: U256::ZERO,
            code_hash: EMPTY_CODE_HASH,
            storage: OrdMap::new(),
            storage_digest: U256::ZERO,
        }
    }
}

impl AccountState {
    /// A storage value (zero if unset).
    pub fn storage(&self, key: &U256) -> U256 {
        self.storage.get(key).copied().unwrap_or(U256::ZERO)
    }

    /// The non-zero storage slots, in key order.
    pub fn storage_iter(&self) -> impl Iterator<Item = (&U256, &U256)> {
        self.storage.iter()
    }

    /// Whether the account is empty in the EIP-161 sense.
    pub fn is_empty(&self) -> bool {
        self.nonce == 0 && self.balance.is_zero() && self.code_hash == EMPTY_CODE_HASH
    }
}

fn slot_hash(address: &[u8; 20], key: &U256, value: &U256) -> U256 {
    let mut buf = [0u8; 84];
    buf[..20].copy_from_slice(address);
    buf[20..52].copy_from_slice(&key.to_be_bytes::<32>());
    buf[52..].copy_from_slice(&value.to_be_bytes::<32>());
    U256::from_be_bytes(keccak256(&buf))
}

fn account_hash(address: &[u8; 20], acc: &AccountState) -> U256 {
    let mut buf = [0u8; 124];
    buf[..20].copy_from_slice(address);
    buf[20..28].copy_from_slice(&acc.nonce.to_be_bytes());
    buf[28..60].copy_from_slice(&acc.balance.to_be_bytes::<32>());
    buf[60..92].copy_from_slice(&acc.code_hash);
    buf[92..].copy_from_slice(&acc.storage_digest.to_be_bytes::<32>());
    U256::from_be_bytes(keccak256(&buf))
}

/// All accounts and contract code, as persistent maps.
#[derive(Clone, Debug, Default)]
pub struct WorldState {
    accounts: OrdMap<[u8; 20], AccountState>,
    codes: OrdMap<[u8; 32], Bytecode>,
    digest: U256,
}

impl WorldState {
    /// An empty state.
    pub fn new() -> WorldState {
        WorldState::default()
    }

    /// An account, if it exists.
    pub fn account(&self, address: &[u8; 20]) -> Option<&AccountState> {
        self.accounts.get(address)
    }

    /// All accounts in address order.
    pub fn accounts(&self) -> impl Iterator<Item = (&[u8; 20], &AccountState)> {
        self.accounts.iter()
    }

    /// Number of accounts.
    pub fn account_count(&self) -> usize {
        self.accounts.len()
    }

    /// Balance in wei (zero for a missing account).
    pub fn balance(&self, address: &[u8; 20]) -> U256 {
        self.accounts.get(address).map_or(U256::ZERO, |a| a.balance)
    }

    /// Nonce (zero for a missing account).
    pub fn nonce(&self, address: &[u8; 20]) -> u64 {
        self.accounts.get(address).map_or(0, |a| a.nonce)
    }

    /// A storage value (zero if unset).
    pub fn storage(&self, address: &[u8; 20], key: &U256) -> U256 {
        self.accounts.get(address).map_or(U256::ZERO, |a| a.storage(key))
    }

    /// The account's code (empty for none).
    pub fn code(&self, address: &[u8; 20]) -> Vec<u8> {
        self.accounts
            .get(address)
            .and_then(|a| self.codes.get(&a.code_hash))
            .map(|c| c.original_bytes().to_vec())
            .unwrap_or_default()
    }

    /// Code by hash, as revm wants it.
    pub(crate) fn code_by_hash(&self, hash: &[u8; 32]) -> Option<&Bytecode> {
        self.codes.get(hash)
    }

    /// The accounts digest (see the module docs).
    pub fn digest(&self) -> [u8; 32] {
        self.digest.to_be_bytes::<32>()
    }

    /// Recomputes the digest from scratch (O(state)); equals
    /// [`WorldState::digest`] unless the incremental bookkeeping is broken.
    pub fn recompute_digest(&self) -> [u8; 32] {
        let mut total = U256::ZERO;
        for (addr, acc) in self.accounts.iter() {
            let mut storage = U256::ZERO;
            for (k, v) in acc.storage.iter() {
                storage = storage.wrapping_add(slot_hash(addr, k, v));
            }
            let mut a = acc.clone();
            a.storage_digest = storage;
            total = total.wrapping_add(account_hash(addr, &a));
        }
        total.to_be_bytes::<32>()
    }

    /// Applies `f` to an account (created empty if missing), keeping the
    /// digest up to date; an account left empty and storage-less is removed
    /// (EIP-161).
    pub(crate) fn update_account(&mut self, address: &[u8; 20], f: impl FnOnce(&mut AccountEditor<'_>)) {
        let old = self.accounts.get(address).cloned();
        if let Some(old) = &old {
            self.digest = self.digest.wrapping_sub(account_hash(address, old));
        }
        let mut acc = old.unwrap_or_default();
        {
            let mut editor = AccountEditor { address, acc: &mut acc, codes: &mut self.codes };
            f(&mut editor);
        }
        if acc.is_empty() && acc.storage.is_empty() {
            self.accounts.remove(address);
        } else {
            self.digest = self.digest.wrapping_add(account_hash(address, &acc));
            self.accounts.insert(*address, acc);
        }
    }

    /// Removes an account and its storage.
    pub(crate) fn remove_account(&mut self, address: &[u8; 20]) {
        if let Some(old) = self.accounts.remove(address) {
            self.digest = self.digest.wrapping_sub(account_hash(address, &old));
        }
    }

    /// Adds `wei` to a balance (for genesis and tests; saturating).
    pub fn credit(&mut self, address: &[u8; 20], wei: U256) {
        self.update_account(address, |a| a.set_balance(a.balance().saturating_add(wei)));
    }

    /// Sets an account wholesale (genesis): balance, nonce, code and
    /// storage.
    pub fn set_account(
        &mut self,
        address: &[u8; 20],
        balance: U256,
        nonce: u64,
        code: &[u8],
        storage: &BTreeMap<U256, U256>,
    ) {
        self.remove_account(address);
        self.update_account(address, |a| {
            a.set_balance(balance);
            a.set_nonce(nonce);
            if !code.is_empty() {
                a.set_code(Bytecode::new_legacy(code.to_vec().into()));
            }
            for (k, v) in storage {
                a.set_storage(*k, *v);
            }
        });
    }
}

/// Mutable access to one account that keeps its storage digest in step.
pub(crate) struct AccountEditor<'a> {
    address: &'a [u8; 20],
    acc: &'a mut AccountState,
    codes: &'a mut OrdMap<[u8; 32], Bytecode>,
}

impl AccountEditor<'_> {
    pub(crate) fn balance(&self) -> U256 {
        self.acc.balance
    }

    pub(crate) fn set_balance(&mut self, balance: U256) {
        self.acc.balance = balance;
    }

    pub(crate) fn set_nonce(&mut self, nonce: u64) {
        self.acc.nonce = nonce;
    }

    /// Sets code already hashed by revm.
    pub(crate) fn set_code_hash(&mut self, hash: [u8; 32], code: Option<&Bytecode>) {
        self.acc.code_hash = hash;
        if hash != EMPTY_CODE_HASH && !self.codes.contains_key(&hash) {
            if let Some(code) = code {
                self.codes.insert(hash, code.clone());
            }
        }
    }

    pub(crate) fn set_code(&mut self, code: Bytecode) {
        let hash = keccak256(code.original_byte_slice());
        self.set_code_hash(hash, Some(&code));
    }

    pub(crate) fn clear_storage(&mut self) {
        self.acc.storage = OrdMap::new();
        self.acc.storage_digest = U256::ZERO;
    }

    pub(crate) fn set_storage(&mut self, key: U256, value: U256) {
        let old =
            if value.is_zero() { self.acc.storage.remove(&key) } else { self.acc.storage.insert(key, value) };
        if let Some(old) = old {
            self.acc.storage_digest =
                self.acc.storage_digest.wrapping_sub(slot_hash(self.address, &key, &old));
        }
        if !value.is_zero() {
            self.acc.storage_digest =
                self.acc.storage_digest.wrapping_add(slot_hash(self.address, &key, &value));
        }
    }
}

/// The state after a block: accounts and the system contract's state.
#[derive(Clone, Debug)]
pub struct Snapshot<S> {
    /// Accounts.
    pub world: WorldState,
    /// The system contract (its value is its state).
    pub system: S,
}

impl<S: SystemContract> Snapshot<S> {
    /// The state root: `keccak256("fika-side/state" ‖ accounts digest ‖
    /// system contract digest)`.
    pub fn state_root(&self) -> [u8; 32] {
        let mut buf = Vec::with_capacity(15 + 64);
        buf.extend_from_slice(b"fika-side/state");
        buf.extend_from_slice(&self.world.digest());
        buf.extend_from_slice(&self.system.state_digest());
        keccak256(&buf)
    }
}
