//! Signing helpers: real secp256k1 ECDSA signatures for P2WPKH and P2PKH
//! inputs via `bitcoin::sighash::SighashCache`, plus deterministic key
//! generation from a caller-supplied RNG.

use bitcoin::ecdsa;
use bitcoin::hashes::Hash;
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey, Signing};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::{Amount, CompressedPublicKey, ScriptBuf, Transaction, Witness};
use rand::RngCore;
use thiserror::Error;

/// A signing failure.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum SignError {
    /// The input index is out of range.
    #[error("input index {index} out of range ({inputs} inputs)")]
    NoSuchInput {
        /// Requested index.
        index: usize,
        /// Number of inputs.
        inputs: usize,
    },
    /// Sighash computation failed.
    #[error("sighash: {0}")]
    Sighash(String),
}

/// A fresh secret key drawn from `rng` (deterministic for a seeded RNG).
pub fn secret_key_from_rng(rng: &mut impl RngCore) -> SecretKey {
    loop {
        let mut bytes = [0u8; 32];
        rng.fill_bytes(&mut bytes);
        if let Ok(sk) = SecretKey::from_slice(&bytes) {
            return sk;
        }
    }
}

/// The P2WPKH scriptPubKey of a public key.
pub fn p2wpkh_script(pk: &PublicKey) -> ScriptBuf {
    ScriptBuf::new_p2wpkh(&CompressedPublicKey(*pk).wpubkey_hash())
}

/// The P2PKH scriptPubKey of a (compressed) public key.
pub fn p2pkh_script(pk: &PublicKey) -> ScriptBuf {
    ScriptBuf::new_p2pkh(&bitcoin::PublicKey::new(*pk).pubkey_hash())
}

fn check_index(tx: &Transaction, index: usize) -> Result<(), SignError> {
    if index >= tx.input.len() {
        return Err(SignError::NoSuchInput { index, inputs: tx.input.len() });
    }
    Ok(())
}

/// Signs input `index` of `tx`, which spends a P2WPKH output of `value`
/// locked to `sk`'s public key: sets the witness to `[signature, pubkey]`
/// (BIP143 sighash).
pub fn sign_p2wpkh_input<C: Signing>(
    secp: &Secp256k1<C>,
    tx: &mut Transaction,
    index: usize,
    sk: &SecretKey,
    value: Amount,
    sighash_type: EcdsaSighashType,
) -> Result<(), SignError> {
    check_index(tx, index)?;
    let pk = PublicKey::from_secret_key(secp, sk);
    let spk = p2wpkh_script(&pk);
    let sighash = SighashCache::new(&*tx)
        .p2wpkh_signature_hash(index, &spk, value, sighash_type)
        .map_err(|e| SignError::Sighash(e.to_string()))?;
    let msg = Message::from_digest(sighash.to_byte_array());
    let signature = ecdsa::Signature { signature: secp.sign_ecdsa(&msg, sk), sighash_type };
    tx.input[index].witness = Witness::p2wpkh(&signature, &pk);
    Ok(())
}

/// Signs input `index` of `tx`, which spends a P2PKH output locked to
/// `sk`'s (compressed) public key: sets the scriptSig to
/// `<signature> <pubkey>` (legacy sighash).
pub fn sign_p2pkh_input<C: Signing>(
    secp: &Secp256k1<C>,
    tx: &mut Transaction,
    index: usize,
    sk: &SecretKey,
    sighash_type: EcdsaSighashType,
) -> Result<(), SignError> {
    check_index(tx, index)?;
    let pk = PublicKey::from_secret_key(secp, sk);
    let spk = p2pkh_script(&pk);
    let sighash = SighashCache::new(&*tx)
        .legacy_signature_hash(index, &spk, sighash_type.to_u32())
        .map_err(|e| SignError::Sighash(e.to_string()))?;
    let msg = Message::from_digest(sighash.to_byte_array());
    let signature = ecdsa::Signature { signature: secp.sign_ecdsa(&msg, sk), sighash_type };
    let sig_push =
        PushBytesBuf::try_from(signature.to_vec()).map_err(|e| SignError::Sighash(e.to_string()))?;
    tx.input[index].script_sig = Builder::new().push_slice(sig_push).push_slice(pk.serialize()).into_script();
    Ok(())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::params::ScriptFlags;
    use crate::validate::{TxError, verify_scripts};
    use bitcoin::absolute::LockTime;
    use bitcoin::transaction::Version;
    use bitcoin::{OutPoint, Sequence, TxIn, TxOut, Txid};
    use rand::SeedableRng;

    fn tx_spending(n: usize) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: (0..n)
                .map(|i| TxIn {
                    previous_output: OutPoint::new(Txid::hash(&[i as u8]), 0),
                    script_sig: ScriptBuf::new(),
                    sequence: Sequence::MAX,
                    witness: Witness::new(),
                })
                .collect(),
            output: vec![TxOut {
                value: Amount::from_sat(1000),
                script_pubkey: ScriptBuf::new_op_return([]),
            }],
        }
    }

    #[test]
    fn signatures_verify_with_core_and_tampering_fails() {
        let secp = Secp256k1::new();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        let sk = secret_key_from_rng(&mut rng);
        let pk = PublicKey::from_secret_key(&secp, &sk);
        let prevs = vec![
            TxOut { value: Amount::from_sat(5000), script_pubkey: p2wpkh_script(&pk) },
            TxOut { value: Amount::from_sat(7000), script_pubkey: p2pkh_script(&pk) },
        ];
        let mut tx = tx_spending(2);
        sign_p2wpkh_input(&secp, &mut tx, 0, &sk, prevs[0].value, EcdsaSighashType::All).unwrap();
        sign_p2pkh_input(&secp, &mut tx, 1, &sk, EcdsaSighashType::All).unwrap();
        let flags = ScriptFlags::ALL_CONSENSUS.with_policy();
        verify_scripts(&tx, &prevs, &flags).unwrap();
        // Wrong amount for the segwit input breaks its signature.
        let mut wrong = prevs.clone();
        wrong[0].value = Amount::from_sat(5001);
        assert!(matches!(verify_scripts(&tx, &wrong, &flags), Err(TxError::ScriptFailed { input: 0, .. })));
        // Changing an output breaks both.
        tx.output[0].value = Amount::from_sat(999);
        assert!(matches!(verify_scripts(&tx, &prevs, &flags), Err(TxError::ScriptFailed { input: 0, .. })));
        assert_eq!(
            sign_p2pkh_input(&secp, &mut tx, 2, &sk, EcdsaSighashType::All),
            Err(SignError::NoSuchInput { index: 2, inputs: 2 })
        );
    }
}
