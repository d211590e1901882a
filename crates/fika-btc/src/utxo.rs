//! The UTXO set with per-block undo data.
//!
//! [`UtxoSet::apply_block`] spends a block's inputs and adds its outputs,
//! returning the [`BlockUndo`] (the spent coins, in order) that
//! [`UtxoSet::undo_block`] needs to restore the previous set exactly. Both
//! are atomic: on error the set is unchanged. Provably unspendable outputs
//! (OP_RETURN, or scripts over 10 000 bytes) are never added, as in Core.
//! Storage is a `BTreeMap`, so every listing is in outpoint order.

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::{Amount, Block, OutPoint, Script, Transaction, TxOut};
use thiserror::Error;

/// Largest script size that can still be spent (Core's `MAX_SCRIPT_SIZE`).
pub const MAX_SCRIPT_SIZE: usize = 10_000;

/// An unspent transaction output and where it was created.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Coin {
    /// The output itself.
    pub txout: TxOut,
    /// Height of the block that created it.
    pub height: u32,
    /// Whether it is an output of a coinbase transaction.
    pub is_coinbase: bool,
}

/// The coins a block spent, in spending order; enough to undo the block.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BlockUndo {
    /// `(outpoint, coin)` for every input of every non-coinbase transaction.
    pub spent: Vec<(OutPoint, Coin)>,
}

/// A failure applying or undoing a block.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum UtxoError {
    /// An input spends an outpoint that is not in the set.
    #[error("input spends missing or already spent output {0}")]
    MissingInput(OutPoint),
    /// An output would overwrite an unspent coin (BIP30).
    #[error("output {0} would overwrite an unspent coin (BIP30)")]
    Overwrite(OutPoint),
    /// The undo data does not fit the block.
    #[error("undo data does not match block: {0}")]
    BadUndo(String),
}

/// Read access to a set of coins (the UTXO set, or a view over it).
pub trait CoinView {
    /// The unspent coin at `outpoint`, if any.
    fn coin(&self, outpoint: &OutPoint) -> Option<Coin>;
}

/// Whether an output can never be spent, so it is not stored (Core's
/// `CScript::IsUnspendable`).
pub fn is_unspendable(script: &Script) -> bool {
    script.is_op_return() || script.len() > MAX_SCRIPT_SIZE
}

/// The set of unspent transaction outputs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UtxoSet {
    coins: BTreeMap<OutPoint, Coin>,
}

impl CoinView for UtxoSet {
    fn coin(&self, outpoint: &OutPoint) -> Option<Coin> {
        self.coins.get(outpoint).cloned()
    }
}

impl UtxoSet {
    /// An empty set.
    pub fn new() -> Self {
        Self::default()
    }

    /// The coin at `outpoint`, if unspent.
    pub fn get(&self, outpoint: &OutPoint) -> Option<&Coin> {
        self.coins.get(outpoint)
    }

    /// Whether `outpoint` is unspent.
    pub fn contains(&self, outpoint: &OutPoint) -> bool {
        self.coins.contains_key(outpoint)
    }

    /// Number of unspent outputs.
    pub fn len(&self) -> usize {
        self.coins.len()
    }

    /// Whether the set is empty.
    pub fn is_empty(&self) -> bool {
        self.coins.is_empty()
    }

    /// All coins, in outpoint order.
    pub fn iter(&self) -> impl Iterator<Item = (&OutPoint, &Coin)> {
        self.coins.iter()
    }

    /// Sum of all unspent values.
    pub fn total_value(&self) -> Amount {
        Amount::from_sat(self.coins.values().map(|c| c.txout.value.to_sat()).sum())
    }

    /// Unspent outputs paying exactly `script_pubkey`, in outpoint order.
    pub fn coins_for_script(&self, script_pubkey: &Script) -> Vec<(OutPoint, Coin)> {
        self.coins
            .iter()
            .filter(|(_, c)| c.txout.script_pubkey.as_script() == script_pubkey)
            .map(|(o, c)| (*o, c.clone()))
            .collect()
    }

    /// Total unspent value paying exactly `script_pubkey` (a wallet's
    /// balance, counting immature coinbase outputs too).
    pub fn balance(&self, script_pubkey: &Script) -> Amount {
        Amount::from_sat(
            self.coins
                .values()
                .filter(|c| c.txout.script_pubkey.as_script() == script_pubkey)
                .map(|c| c.txout.value.to_sat())
                .sum(),
        )
    }

    /// Like [`UtxoSet::balance`], but only coins spendable in a block at
    /// `spend_height` (coinbase outputs need `maturity` confirmations).
    pub fn spendable_balance(&self, script_pubkey: &Script, spend_height: u32, maturity: u32) -> Amount {
        Amount::from_sat(
            self.coins
                .values()
                .filter(|c| c.txout.script_pubkey.as_script() == script_pubkey)
                .filter(|c| !c.is_coinbase || spend_height.saturating_sub(c.height) >= maturity)
                .map(|c| c.txout.value.to_sat())
                .sum(),
        )
    }

    /// Adds the spendable outputs of `tx` created at `height`. Refuses to
    /// overwrite (BIP30); atomic.
    pub fn add_tx_outputs(&mut self, tx: &Transaction, height: u32) -> Result<(), UtxoError> {
        let txid = tx.compute_txid();
        let is_coinbase = tx.is_coinbase();
        for (vout, _) in tx.output.iter().enumerate() {
            let op = OutPoint::new(txid, vout as u32);
            if self.coins.contains_key(&op) {
                return Err(UtxoError::Overwrite(op));
            }
        }
        for (vout, txout) in tx.output.iter().enumerate() {
            if is_unspendable(&txout.script_pubkey) {
                continue;
            }
            self.coins
                .insert(OutPoint::new(txid, vout as u32), Coin { txout: txout.clone(), height, is_coinbase });
        }
        Ok(())
    }

    /// Applies a block at `height`: spends every input of its non-coinbase
    /// transactions, adds every spendable output, and returns the undo data.
    /// On error the set is unchanged.
    pub fn apply_block(&mut self, block: &Block, height: u32) -> Result<BlockUndo, UtxoError> {
        let mut undo = BlockUndo::default();
        let mut added: Vec<OutPoint> = Vec::new();
        let result = self.apply_inner(block, height, &mut undo, &mut added);
        if let Err(e) = result {
            // Roll back: remove what was added, restore what was spent.
            for op in added.iter().rev() {
                self.coins.remove(op);
            }
            for (op, coin) in undo.spent.into_iter().rev() {
                self.coins.insert(op, coin);
            }
            return Err(e);
        }
        Ok(undo)
    }

    fn apply_inner(
        &mut self,
        block: &Block,
        height: u32,
        undo: &mut BlockUndo,
        added: &mut Vec<OutPoint>,
    ) -> Result<(), UtxoError> {
        for tx in &block.txdata {
            if !tx.is_coinbase() {
                for input in &tx.input {
                    let coin = self.coins.remove(&input.previous_output);
                    match coin {
                        Some(coin) => undo.spent.push((input.previous_output, coin)),
                        None => return Err(UtxoError::MissingInput(input.previous_output)),
                    }
                }
            }
            let txid = tx.compute_txid();
            let is_coinbase = tx.is_coinbase();
            for (vout, txout) in tx.output.iter().enumerate() {
                let op = OutPoint::new(txid, vout as u32);
                if self.coins.contains_key(&op) {
                    return Err(UtxoError::Overwrite(op));
                }
                if is_unspendable(&txout.script_pubkey) {
                    continue;
                }
                self.coins.insert(op, Coin { txout: txout.clone(), height, is_coinbase });
                added.push(op);
            }
        }
        Ok(())
    }

    /// Undoes a block previously applied with [`UtxoSet::apply_block`]:
    /// removes its outputs and restores the coins it spent (outputs created
    /// and spent within the block stay absent). Atomic: the undo data is
    /// checked against the block and the set before anything changes.
    pub fn undo_block(&mut self, block: &Block, undo: &BlockUndo) -> Result<(), UtxoError> {
        let inputs: Vec<OutPoint> = block
            .txdata
            .iter()
            .filter(|tx| !tx.is_coinbase())
            .flat_map(|tx| tx.input.iter().map(|i| i.previous_output))
            .collect();
        if inputs.len() != undo.spent.len() || inputs.iter().zip(&undo.spent).any(|(a, (b, _))| a != b) {
            return Err(UtxoError::BadUndo(format!(
                "block {} spends {} inputs, undo has {}",
                block.block_hash(),
                inputs.len(),
                undo.spent.len()
            )));
        }
        let mut created: BTreeSet<OutPoint> = BTreeSet::new();
        for tx in &block.txdata {
            let txid = tx.compute_txid();
            for (vout, txout) in tx.output.iter().enumerate() {
                if !is_unspendable(&txout.script_pubkey) {
                    created.insert(OutPoint::new(txid, vout as u32));
                }
            }
        }
        // Outputs of the block still unspent must be in the set; coins the
        // block spent from earlier blocks must not be.
        let spent_inside: BTreeSet<OutPoint> =
            undo.spent.iter().map(|(op, _)| *op).filter(|op| created.contains(op)).collect();
        for op in created.difference(&spent_inside) {
            if !self.coins.contains_key(op) {
                return Err(UtxoError::BadUndo(format!("output {op} of the block is not unspent")));
            }
        }
        for (op, _) in undo.spent.iter().filter(|(op, _)| !created.contains(op)) {
            if self.coins.contains_key(op) {
                return Err(UtxoError::BadUndo(format!("spent coin {op} is already unspent")));
            }
        }
        for op in created.difference(&spent_inside) {
            self.coins.remove(op);
        }
        for (op, coin) in undo.spent.iter().filter(|(op, _)| !created.contains(op)) {
            self.coins.insert(*op, coin.clone());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::hashes::Hash;
    use bitcoin::transaction::Version;
    use bitcoin::{ScriptBuf, Sequence, TxIn, Witness};
    use proptest::prelude::*;

    fn coinbase(tag: u8, outs: &[u64]) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::from_bytes(vec![1, tag, 0]),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: outs
                .iter()
                .map(|v| TxOut {
                    value: Amount::from_sat(*v),
                    script_pubkey: ScriptBuf::from_bytes(vec![0x51]),
                })
                .collect(),
        }
    }

    fn spend(inputs: &[OutPoint], outs: &[u64]) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: inputs
                .iter()
                .map(|o| TxIn {
                    previous_output: *o,
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: outs
                .iter()
                .map(|v| TxOut {
                    value: Amount::from_sat(*v),
                    script_pubkey: ScriptBuf::from_bytes(vec![0x52]),
                })
                .collect(),
        }
    }

    fn block(txs: Vec<Transaction>) -> Block {
        Block {
            header: bitcoin::block::Header {
                version: bitcoin::block::Version::TWO,
                prev_blockhash: bitcoin::BlockHash::all_zeros(),
                merkle_root: bitcoin::TxMerkleNode::all_zeros(),
                time: 0,
                bits: bitcoin::CompactTarget::from_consensus(0x207f_ffff),
                nonce: 0,
            },
            txdata: txs,
        }
    }

    #[test]
    fn apply_failure_leaves_set_unchanged() {
        let mut set = UtxoSet::new();
        let cb = coinbase(1, &[50, 60]);
        set.apply_block(&block(vec![cb.clone()]), 1).unwrap();
        let before = set.clone();
        let txid = cb.compute_txid();
        let missing = OutPoint::new(txid, 7);
        let b =
            block(vec![coinbase(2, &[1]), spend(&[OutPoint::new(txid, 0)], &[10]), spend(&[missing], &[1])]);
        assert_eq!(set.apply_block(&b, 2), Err(UtxoError::MissingInput(missing)));
        assert_eq!(set, before);
        // Double spend within one block.
        let op = OutPoint::new(txid, 0);
        let b = block(vec![coinbase(3, &[1]), spend(&[op], &[10]), spend(&[op], &[9])]);
        assert_eq!(set.apply_block(&b, 2), Err(UtxoError::MissingInput(op)));
        assert_eq!(set, before);
        // BIP30 overwrite.
        assert_eq!(
            set.apply_block(&block(vec![cb.clone()]), 2),
            Err(UtxoError::Overwrite(OutPoint::new(txid, 0)))
        );
        assert_eq!(set, before);
    }

    #[test]
    fn undo_of_a_block_spending_its_own_outputs() {
        let mut set = UtxoSet::new();
        let cb = coinbase(1, &[50]);
        set.apply_block(&block(vec![cb.clone()]), 1).unwrap();
        let before = set.clone();
        let t1 = spend(&[OutPoint::new(cb.compute_txid(), 0)], &[20, 30]);
        let t2 = spend(&[OutPoint::new(t1.compute_txid(), 1)], &[25]);
        let b = block(vec![coinbase(2, &[7]), t1.clone(), t2.clone()]);
        let undo = set.apply_block(&b, 2).unwrap();
        assert!(!set.contains(&OutPoint::new(t1.compute_txid(), 1)));
        assert!(set.contains(&OutPoint::new(t1.compute_txid(), 0)));
        // Bad undo data is refused without changing anything.
        let mut wrong = undo.clone();
        wrong.spent.pop();
        let after = set.clone();
        assert!(matches!(set.undo_block(&b, &wrong), Err(UtxoError::BadUndo(_))));
        assert_eq!(set, after);
        set.undo_block(&b, &undo).unwrap();
        assert_eq!(set, before);
    }

    #[test]
    fn op_return_outputs_are_not_stored() {
        let mut set = UtxoSet::new();
        let mut cb = coinbase(1, &[50]);
        cb.output.push(TxOut { value: Amount::ZERO, script_pubkey: ScriptBuf::new_op_return([1u8, 2, 3]) });
        let b = block(vec![cb]);
        let undo = set.apply_block(&b, 1).unwrap();
        assert_eq!(set.len(), 1);
        set.undo_block(&b, &undo).unwrap();
        assert!(set.is_empty());
    }

    #[test]
    fn balance_by_script() {
        let mut set = UtxoSet::new();
        let cb = coinbase(1, &[50, 70]);
        set.apply_block(&block(vec![cb.clone()]), 1).unwrap();
        let one = ScriptBuf::from_bytes(vec![0x51]);
        assert_eq!(set.balance(&one), Amount::from_sat(120));
        assert_eq!(set.spendable_balance(&one, 100, 100), Amount::ZERO);
        assert_eq!(set.spendable_balance(&one, 101, 100), Amount::from_sat(120));
        assert_eq!(set.coins_for_script(&one).len(), 2);
        assert_eq!(set.total_value(), Amount::from_sat(120));
    }

    proptest! {
        /// Random chains of blocks: applying then undoing in reverse restores every intermediate set.
        #[test]
        fn apply_undo_round_trip(plan in proptest::collection::vec((1usize..4, proptest::collection::vec(0usize..64, 0..6)), 1..12)) {
            let mut set = UtxoSet::new();
            let mut history: Vec<(UtxoSet, Block, BlockUndo)> = Vec::new();
            for (h, (n_out, picks)) in plan.iter().enumerate() {
                let height = h as u32 + 1;
                let mut txs = vec![coinbase(h as u8, &vec![1000; *n_out])];
                // Spendable: the set plus outputs of earlier txs of this block.
                let mut available: Vec<OutPoint> = set.iter().map(|(o, _)| *o).collect();
                let mut used = std::collections::BTreeSet::new();
                for p in picks {
                    if available.is_empty() { break; }
                    let op = available[p % available.len()];
                    if used.insert(op) {
                        let tx = spend(&[op], &[400, 500]);
                        let txid = tx.compute_txid();
                        available.extend([OutPoint::new(txid, 0), OutPoint::new(txid, 1)]);
                        txs.push(tx);
                    }
                }
                let b = block(txs);
                let before = set.clone();
                let undo = set.apply_block(&b, height).unwrap();
                history.push((before, b, undo));
            }
            while let Some((before, b, undo)) = history.pop() {
                set.undo_block(&b, &undo).unwrap();
                prop_assert_eq!(&set, &before);
            }
            prop_assert!(set.is_empty());
        }
    }
}
