//! Merkle roots and SPV proofs.
//!
//! [`merkle_root`] is Core's `ComputeMerkleRoot`, including its detection of
//! the CVE-2012-2459 mutation (a duplicated last pair gives the same root).
//! Proofs are BIP37 partial merkle trees ([`PartialMerkleTree`] /
//! [`MerkleBlock`]), the format Rootstock's Bridge and SPV clients consume.

use bitcoin::block::Header;
use bitcoin::hashes::{Hash, sha256d};
use bitcoin::merkle_tree::{MerkleBlock, PartialMerkleTree};
use bitcoin::{Block, TxMerkleNode, Txid};
use thiserror::Error;

/// A failed proof check.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum MerkleError {
    /// The partial tree is malformed.
    #[error("malformed partial merkle tree: {0}")]
    Malformed(String),
    /// The tree's root is not the header's merkle root.
    #[error("proof root {proof} does not match header merkle root {header}")]
    RootMismatch {
        /// Root computed from the proof.
        proof: TxMerkleNode,
        /// The header's root.
        header: TxMerkleNode,
    },
    /// The transaction is not among the proof's matches.
    #[error("transaction {0} is not proven by this tree")]
    NotIncluded(Txid),
}

/// The merkle root of `txids` and whether the tree is mutated (two equal
/// adjacent hashes at some level, Core's `mutated` flag). Empty input gives
/// the all-zero root.
pub fn merkle_root(txids: &[Txid]) -> (TxMerkleNode, bool) {
    let mut level: Vec<sha256d::Hash> = txids.iter().map(|t| t.to_raw_hash()).collect();
    if level.is_empty() {
        return (TxMerkleNode::all_zeros(), false);
    }
    let mut mutated = false;
    while level.len() > 1 {
        for pair in level.chunks_exact(2) {
            if pair[0] == pair[1] {
                mutated = true;
            }
        }
        if level.len() % 2 == 1 {
            if let Some(last) = level.last().copied() {
                level.push(last);
            }
        }
        level = level
            .chunks_exact(2)
            .map(|pair| {
                let mut buf = [0u8; 64];
                buf[..32].copy_from_slice(pair[0].as_byte_array());
                buf[32..].copy_from_slice(pair[1].as_byte_array());
                sha256d::Hash::hash(&buf)
            })
            .collect();
    }
    (TxMerkleNode::from_raw_hash(level[0]), mutated)
}

/// The merkle root of a block's transactions (not checking mutation).
pub fn block_merkle_root(block: &Block) -> TxMerkleNode {
    let txids: Vec<Txid> = block.txdata.iter().map(|t| t.compute_txid()).collect();
    merkle_root(&txids).0
}

/// A BIP37 merkle block proving the given transactions of `block`.
pub fn build_proof(block: &Block, txids: &[Txid]) -> MerkleBlock {
    MerkleBlock::from_block_with_predicate(block, |t| txids.contains(t))
}

/// A partial merkle tree over `block_txids` proving `matches`.
pub fn build_partial_tree(block_txids: &[Txid], matches: &[Txid]) -> PartialMerkleTree {
    let flags: Vec<bool> = block_txids.iter().map(|t| matches.contains(t)).collect();
    PartialMerkleTree::from_txids(block_txids, &flags)
}

/// Checks a partial merkle tree against a header; returns the proven
/// `(index in block, txid)` pairs.
pub fn verify_partial_tree(
    header: &Header,
    pmt: &PartialMerkleTree,
) -> Result<Vec<(u32, Txid)>, MerkleError> {
    let mut matches = Vec::new();
    let mut indexes = Vec::new();
    let root =
        pmt.extract_matches(&mut matches, &mut indexes).map_err(|e| MerkleError::Malformed(e.to_string()))?;
    if root != header.merkle_root {
        return Err(MerkleError::RootMismatch { proof: root, header: header.merkle_root });
    }
    Ok(indexes.into_iter().zip(matches).collect())
}

/// Checks a merkle block; returns the proven `(index, txid)` pairs.
pub fn verify_proof(proof: &MerkleBlock) -> Result<Vec<(u32, Txid)>, MerkleError> {
    verify_partial_tree(&proof.header, &proof.txn)
}

/// Checks that `txid` is proven by `pmt` under `header`; returns its index
/// in the block.
pub fn verify_tx_inclusion(header: &Header, pmt: &PartialMerkleTree, txid: Txid) -> Result<u32, MerkleError> {
    verify_partial_tree(header, pmt)?
        .into_iter()
        .find(|(_, t)| *t == txid)
        .map(|(i, _)| i)
        .ok_or(MerkleError::NotIncluded(txid))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn txids(n: u8) -> Vec<Txid> {
        (0..n).map(|i| Txid::hash(&[i])).collect()
    }

    #[test]
    fn root_matches_rust_bitcoin_and_detects_mutation() {
        for n in 1..9u8 {
            let ids = txids(n);
            let expected = bitcoin::merkle_tree::calculate_root(ids.iter().map(|t| t.to_raw_hash())).unwrap();
            let (root, mutated) = merkle_root(&ids);
            assert_eq!(root.to_raw_hash(), expected);
            assert!(!mutated);
        }
        // [a, b, c] and [a, b, c, c] share a root; the latter is mutated.
        let mut ids = txids(3);
        let (root3, _) = merkle_root(&ids);
        ids.push(ids[2]);
        let (root4, mutated) = merkle_root(&ids);
        assert_eq!(root3, root4);
        assert!(mutated);
    }

    #[test]
    fn partial_tree_round_trip_and_tamper() {
        let ids = txids(7);
        let header = Header {
            version: bitcoin::block::Version::TWO,
            prev_blockhash: bitcoin::BlockHash::all_zeros(),
            merkle_root: merkle_root(&ids).0,
            time: 0,
            bits: bitcoin::CompactTarget::from_consensus(0x207f_ffff),
            nonce: 0,
        };
        let pmt = build_partial_tree(&ids, &[ids[2], ids[5]]);
        assert_eq!(verify_partial_tree(&header, &pmt).unwrap(), vec![(2, ids[2]), (5, ids[5])]);
        assert_eq!(verify_tx_inclusion(&header, &pmt, ids[5]).unwrap(), 5);
        assert_eq!(verify_tx_inclusion(&header, &pmt, ids[4]), Err(MerkleError::NotIncluded(ids[4])));
        let mut other = header;
        other.merkle_root = merkle_root(&ids[..6]).0;
        assert!(matches!(verify_partial_tree(&other, &pmt), Err(MerkleError::RootMismatch { .. })));
    }
}
