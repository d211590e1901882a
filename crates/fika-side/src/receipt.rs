//! Transaction receipts and logs, their encoding, and receipt proofs
//! against a header's receipts root.
//!
//! A receipt is `rlp([status, cumulativeGasUsed, gasUsed, [log, …]])` with
//! `status` 1 for success and 0 (the empty string) for failure, and a log
//! `rlp([address, [topic, …], data])`. The receipts root is the
//! [`merkle`] root of the receipts' encodings in block order.

use crate::merkle::{self, MerkleProof};
use crate::rlp::{self, RlpError};

/// An EVM log (event).
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Log {
    /// The emitting contract.
    pub address: [u8; 20],
    /// Indexed topics (at most four).
    pub topics: Vec<[u8; 32]>,
    /// Unindexed data.
    pub data: Vec<u8>,
}

impl Log {
    fn encode_into(&self, out: &mut Vec<u8>) {
        let mut payload = Vec::with_capacity(64 + 33 * self.topics.len() + self.data.len());
        rlp::encode_bytes(&mut payload, &self.address);
        let mut topics = Vec::with_capacity(33 * self.topics.len());
        for t in &self.topics {
            rlp::encode_bytes(&mut topics, t);
        }
        rlp::encode_list(&mut payload, &topics);
        rlp::encode_bytes(&mut payload, &self.data);
        rlp::encode_list(out, &payload);
    }

    fn from_item(item: rlp::Item<'_>) -> Result<Log, RlpError> {
        let items = item.list()?;
        let [address, topics, data] = items.as_slice() else {
            return Err(RlpError::BadItemCount { expected: 3, found: items.len() });
        };
        let topics = topics.list()?.into_iter().map(|t| t.fixed::<32>()).collect::<Result<Vec<_>, _>>()?;
        Ok(Log { address: address.fixed::<20>()?, topics, data: data.bytes()?.to_vec() })
    }
}

/// The outcome of one transaction in a block.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Receipt {
    /// Whether the transaction succeeded (a revert or halt is `false`).
    pub status: bool,
    /// Gas used by this and all earlier transactions of the block.
    pub cumulative_gas_used: u64,
    /// Gas used by this transaction.
    pub gas_used: u64,
    /// Logs emitted (empty when `status` is `false`).
    pub logs: Vec<Log>,
}

impl Receipt {
    /// The RLP encoding (the receipts root's leaf).
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(32 + 128 * self.logs.len());
        rlp::encode_u64(&mut payload, u64::from(self.status));
        rlp::encode_u64(&mut payload, self.cumulative_gas_used);
        rlp::encode_u64(&mut payload, self.gas_used);
        let mut logs = Vec::new();
        for l in &self.logs {
            l.encode_into(&mut logs);
        }
        rlp::encode_list(&mut payload, &logs);
        rlp::list(&payload)
    }

    /// Decodes [`Receipt::encode`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<Receipt, RlpError> {
        let items = rlp::decode_list_of(bytes, 4)?;
        let status = match items[0].u64()? {
            0 => false,
            1 => true,
            _ => return Err(RlpError::NonCanonical("receipt status other than 0 or 1")),
        };
        let logs = items[3].list()?.into_iter().map(Log::from_item).collect::<Result<Vec<_>, _>>()?;
        Ok(Receipt { status, cumulative_gas_used: items[1].u64()?, gas_used: items[2].u64()?, logs })
    }
}

/// The receipts root of a block's receipts.
pub fn receipts_root(receipts: &[Receipt]) -> [u8; 32] {
    merkle::root_of(receipts.iter().map(Receipt::encode))
}

/// The proof of receipt `index` under [`receipts_root`]`(receipts)`; `None`
/// if out of range.
pub fn receipt_proof(receipts: &[Receipt], index: usize) -> Option<MerkleProof> {
    let leaves: Vec<[u8; 32]> = receipts.iter().map(|r| merkle::leaf_hash(&r.encode())).collect();
    MerkleProof::build(&leaves, index)
}

/// Whether `receipt` is receipt number `proof.index` of a block whose
/// receipts root is `root`.
pub fn verify_receipt_proof(root: &[u8; 32], receipt: &Receipt, proof: &MerkleProof) -> bool {
    proof.verify(root, &receipt.encode())
}
