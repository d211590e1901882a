//! The Bridge as the sidechain's system contract: its state lives in every
//! sidechain block's snapshot, so a sidechain reorg reverts it.

use fika_side::{BlockEnvInfo, SystemCallOutcome, SystemContract};

use crate::abi::BRIDGE_ADDRESS;
use crate::bridge::BridgeState;
use crate::side::{SideAddress, keccak256};

/// [`BridgeState`] at [`BRIDGE_ADDRESS`], with a digest that follows every
/// successful mutating call.
///
/// The Bridge's state is a pure function of the calls it has executed
/// since genesis, so a hash chain over those calls commits to it as well as
/// a hash of the whole state would, at O(call) instead of O(state) per block.
#[derive(Clone, Debug)]
pub struct BridgeContract {
    state: BridgeState,
    digest: [u8; 32],
}

impl BridgeContract {
    /// The contract around an initial Bridge state.
    pub fn new(state: BridgeState) -> Self {
        let digest = state.digest();
        BridgeContract { state, digest }
    }

    /// The Bridge's state.
    pub fn state(&self) -> &BridgeState {
        &self.state
    }
}

impl SystemContract for BridgeContract {
    fn address(&self) -> [u8; 20] {
        BRIDGE_ADDRESS.0
    }

    fn gas_cost(&self, data: &[u8]) -> u64 {
        // A flat cost plus calldata, enough for a peg-in registration.
        50_000 + 16 * data.len() as u64
    }

    fn call(
        &mut self,
        caller: [u8; 20],
        value: u128,
        data: &[u8],
        block: &BlockEnvInfo,
    ) -> Result<SystemCallOutcome, String> {
        // The environment carries the signer's key: a value transfer with
        // empty calldata is a peg-out request to its P2PKH.
        let out =
            self.state.call_with_env(SideAddress(caller), value, data, block).map_err(|e| e.to_string())?;
        let mut chained = Vec::with_capacity(32 + 20 + 16 + 8 + data.len());
        chained.extend_from_slice(&self.digest);
        chained.extend_from_slice(&caller);
        chained.extend_from_slice(&value.to_be_bytes());
        chained.extend_from_slice(&block.number.to_be_bytes());
        chained.extend_from_slice(data);
        self.digest = keccak256(&chained);
        Ok(SystemCallOutcome {
            output: out.output,
            logs: out
                .logs
                .into_iter()
                .map(|l| fika_side::Log { address: BRIDGE_ADDRESS.0, topics: l.topics, data: l.data })
                .collect(),
            transfers: out.credits.into_iter().map(|(a, wei)| (a.0, wei)).collect(),
        })
    }

    fn read_only_call(&self, caller: [u8; 20], data: &[u8], block: &BlockEnvInfo) -> Result<Vec<u8>, String> {
        // Run on a copy: whatever a read-only call would change is dropped.
        let mut copy = self.state.clone();
        copy.call_with_env(SideAddress(caller), 0, data, block).map(|o| o.output).map_err(|e| e.to_string())
    }

    fn state_digest(&self) -> [u8; 32] {
        self.digest
    }

    /// The active federation's members share the block fees (REMASC's
    /// federation share; the federation is the one as of the Bridge's last
    /// call).
    fn fee_recipients(&self) -> Vec<[u8; 20]> {
        self.state.federation().member_addresses().into_iter().map(|a| a.0).collect()
    }
}
