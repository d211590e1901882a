//! The genesis state: arbitrary pre-funded accounts and contracts.
//!
//! Rootstock's fund model pre-funds the Bridge with the whole supply of 21
//! million RBTC; a peg-in is then a transfer out of the Bridge and a
//! peg-out a transfer into it ([`Genesis::with_bridge_fund`]).

use std::collections::BTreeMap;

use revm::primitives::U256;

use crate::state::{BRIDGE_ADDRESS, RBTC_SUPPLY_WEI, WorldState};

/// One pre-allocated account.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct GenesisAccount {
    /// Balance in wei.
    pub balance: u128,
    /// Nonce.
    pub nonce: u64,
    /// Runtime code (empty for none).
    pub code: Vec<u8>,
    /// Storage slots.
    pub storage: BTreeMap<U256, U256>,
}

/// The genesis block's contents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Genesis {
    /// Timestamp of the genesis block (Unix seconds).
    pub timestamp: u64,
    /// Difficulty of the genesis block (the first block's difficulty is
    /// derived from it).
    pub difficulty: U256,
    /// Coinbase of the genesis block.
    pub coinbase: [u8; 20],
    /// Pre-allocated accounts.
    pub alloc: BTreeMap<[u8; 20], GenesisAccount>,
}

impl Genesis {
    /// An empty genesis at `timestamp` with `difficulty`.
    pub fn new(timestamp: u64, difficulty: U256) -> Genesis {
        Genesis { timestamp, difficulty, coinbase: [0u8; 20], alloc: BTreeMap::new() }
    }

    /// Adds `wei` to an account's genesis balance.
    pub fn with_balance(mut self, address: [u8; 20], wei: u128) -> Genesis {
        let acc = self.alloc.entry(address).or_default();
        acc.balance = acc.balance.saturating_add(wei);
        self
    }

    /// Sets an account wholesale.
    pub fn with_account(mut self, address: [u8; 20], account: GenesisAccount) -> Genesis {
        self.alloc.insert(address, account);
        self
    }

    /// Pre-funds the Bridge ([`BRIDGE_ADDRESS`]) with 21 million RBTC.
    pub fn with_bridge_fund(self) -> Genesis {
        self.with_balance(BRIDGE_ADDRESS, RBTC_SUPPLY_WEI)
    }

    /// The genesis account state.
    pub fn world_state(&self) -> WorldState {
        let mut world = WorldState::new();
        for (addr, acc) in &self.alloc {
            world.set_account(addr, U256::from(acc.balance), acc.nonce, &acc.code, &acc.storage);
        }
        world
    }
}
