//! Binary Keccak merkle trees for the transactions and receipts roots, with
//! inclusion proofs.
//!
//! Leaves and inner nodes are domain-separated (`keccak256(0x00 ‖ item)`,
//! `keccak256(0x01 ‖ left ‖ right)`), an odd node at the end of a level is
//! promoted unchanged (no duplication, so no CVE-2012-2459-style mutation),
//! and the root commits to the number of leaves:
//! `root = keccak256(0x02 ‖ count as u64 big-endian ‖ tree root)` (the tree
//! root of no leaves is 32 zero bytes). Because the count is committed, a
//! proof's `(index, leaf_count)` is authenticated along with the leaf.
//!
//! Rootstock uses a trie for these roots; a merkle tree gives the same
//! guarantee (a receipt is committed by the header) with simpler proofs.

use crate::keccak256;
use crate::rlp::{self, RlpError};

/// Longest proof accepted (a tree of 2³² leaves has 32 levels).
const MAX_PROOF_LEN: usize = 32;

/// The leaf hash of an item's encoding.
pub fn leaf_hash(encoding: &[u8]) -> [u8; 32] {
    let mut buf = Vec::with_capacity(encoding.len() + 1);
    buf.push(0x00);
    buf.extend_from_slice(encoding);
    keccak256(&buf)
}

fn node_hash(left: &[u8; 32], right: &[u8; 32]) -> [u8; 32] {
    let mut buf = [0u8; 65];
    buf[0] = 0x01;
    buf[1..33].copy_from_slice(left);
    buf[33..].copy_from_slice(right);
    keccak256(&buf)
}

fn finish_root(count: u64, tree: &[u8; 32]) -> [u8; 32] {
    let mut buf = [0u8; 41];
    buf[0] = 0x02;
    buf[1..9].copy_from_slice(&count.to_be_bytes());
    buf[9..].copy_from_slice(tree);
    keccak256(&buf)
}

fn next_level(level: &[[u8; 32]]) -> Vec<[u8; 32]> {
    level
        .chunks(2)
        .map(|pair| match pair {
            [l, r] => node_hash(l, r),
            [single] => *single,
            _ => [0u8; 32],
        })
        .collect()
}

/// The root over leaf hashes (see the module docs).
pub fn root_of_leaves(leaves: &[[u8; 32]]) -> [u8; 32] {
    let mut level = leaves.to_vec();
    while level.len() > 1 {
        level = next_level(&level);
    }
    let tree = level.first().copied().unwrap_or([0u8; 32]);
    finish_root(leaves.len() as u64, &tree)
}

/// The root over items' encodings.
pub fn root_of<I, T>(encodings: I) -> [u8; 32]
where
    I: IntoIterator<Item = T>,
    T: AsRef<[u8]>,
{
    let leaves: Vec<[u8; 32]> = encodings.into_iter().map(|e| leaf_hash(e.as_ref())).collect();
    root_of_leaves(&leaves)
}

/// An inclusion proof: the leaf's index, the number of leaves and the
/// sibling hashes from the leaf up (promoted levels contribute none).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct MerkleProof {
    /// Index of the proven leaf.
    pub index: u32,
    /// Number of leaves in the tree.
    pub leaf_count: u32,
    /// Sibling hashes, leaf level first.
    pub siblings: Vec<[u8; 32]>,
}

impl MerkleProof {
    /// Builds the proof of leaf `index`; `None` if out of range.
    pub fn build(leaves: &[[u8; 32]], index: usize) -> Option<MerkleProof> {
        if index >= leaves.len() {
            return None;
        }
        let leaf_count = u32::try_from(leaves.len()).ok()?;
        let mut siblings = Vec::new();
        let mut level = leaves.to_vec();
        let mut i = index;
        while level.len() > 1 {
            let sibling = if i % 2 == 1 { level.get(i - 1) } else { level.get(i + 1) };
            if let Some(s) = sibling {
                siblings.push(*s);
            }
            level = next_level(&level);
            i /= 2;
        }
        Some(MerkleProof { index: index as u32, leaf_count, siblings })
    }

    /// The root this proof gives for `leaf` (a leaf hash); `None` if the
    /// proof's shape does not fit its `(index, leaf_count)`.
    pub fn root_for(&self, leaf: &[u8; 32]) -> Option<[u8; 32]> {
        if self.index >= self.leaf_count || self.siblings.len() > MAX_PROOF_LEN {
            return None;
        }
        let mut cur = *leaf;
        let mut i = u64::from(self.index);
        let mut n = u64::from(self.leaf_count);
        let mut sib = self.siblings.iter();
        while n > 1 {
            if i % 2 == 1 {
                cur = node_hash(sib.next()?, &cur);
            } else if i + 1 < n {
                cur = node_hash(&cur, sib.next()?);
            }
            i /= 2;
            n = n.div_ceil(2);
        }
        if sib.next().is_some() {
            return None;
        }
        Some(finish_root(u64::from(self.leaf_count), &cur))
    }

    /// Whether `encoding` is the item at `self.index` under `root`.
    pub fn verify(&self, root: &[u8; 32], encoding: &[u8]) -> bool {
        self.root_for(&leaf_hash(encoding)).is_some_and(|r| &r == root)
    }

    /// RLP encoding `[index, leaf_count, siblings concatenated]`.
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(16 + 32 * self.siblings.len());
        rlp::encode_u64(&mut payload, u64::from(self.index));
        rlp::encode_u64(&mut payload, u64::from(self.leaf_count));
        rlp::encode_bytes(&mut payload, &self.siblings.concat());
        rlp::list(&payload)
    }

    /// Decodes [`MerkleProof::encode`]; never panics.
    pub fn decode(bytes: &[u8]) -> Result<MerkleProof, RlpError> {
        let items = rlp::decode_list_of(bytes, 3)?;
        let index =
            u32::try_from(items[0].u64()?).map_err(|_| RlpError::IntegerOverflow { len: 8, max: 4 })?;
        let leaf_count =
            u32::try_from(items[1].u64()?).map_err(|_| RlpError::IntegerOverflow { len: 8, max: 4 })?;
        let raw = items[2].bytes()?;
        if raw.len() % 32 != 0 || raw.len() / 32 > MAX_PROOF_LEN {
            return Err(RlpError::BadLength {
                expected: 32 * (raw.len() / 32).min(MAX_PROOF_LEN),
                found: raw.len(),
            });
        }
        let siblings = raw.chunks_exact(32).map(|c| <[u8; 32]>::try_from(c).unwrap_or([0u8; 32])).collect();
        Ok(MerkleProof { index, leaf_count, siblings })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn every_leaf_proves_for_every_size() {
        for n in 1..20usize {
            let items: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; i + 1]).collect();
            let leaves: Vec<[u8; 32]> = items.iter().map(|e| leaf_hash(e)).collect();
            let root = root_of(&items);
            for (i, item) in items.iter().enumerate() {
                let proof = MerkleProof::build(&leaves, i).unwrap();
                assert!(proof.verify(&root, item), "n={n} i={i}");
                assert_eq!(MerkleProof::decode(&proof.encode()).unwrap(), proof);
                // Wrong item, wrong index, wrong count all fail.
                assert!(!proof.verify(&root, b"other"));
                let mut p = proof.clone();
                p.index = (p.index + 1) % n as u32;
                assert!(n == 1 || !p.verify(&root, item));
                let mut p = proof.clone();
                p.leaf_count += 1;
                assert!(!p.verify(&root, item));
            }
        }
        assert!(MerkleProof::build(&[], 0).is_none());
        assert_ne!(root_of::<_, &[u8]>([]), root_of([b"".as_slice()]));
    }
}
