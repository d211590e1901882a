//! Signed sidechain transactions: Ethereum's legacy format with EIP-155
//! replay protection, as Rootstock uses it.
//!
//! A transaction is `rlp([nonce, gasPrice, gasLimit, to, value, data, v, r,
//! s])`. It is signed over `keccak256(rlp([nonce, gasPrice, gasLimit, to,
//! value, data, chainId, 0, 0]))` with secp256k1 (deterministic RFC 6979
//! nonces), and `v = chainId · 2 + 35 + recoveryId`. Unprotected
//! transactions (`v` = 27 or 28, signed over the six-field list) are decoded
//! too. A sender is `keccak256(uncompressed public key without its 0x04
//! prefix)[12..]`.
//!
//! `gasPrice` and `value` are limited to 128 bits (3.4·10³⁸ wei, far above
//! the 2.1·10²⁵ wei of the whole RBTC supply); a larger value is a decoding
//! error.

use std::sync::OnceLock;

use bitcoin::secp256k1::ecdsa::{RecoverableSignature, RecoveryId};
use bitcoin::secp256k1::{All, Message, PublicKey, Secp256k1, SecretKey};
use thiserror::Error;

use crate::keccak256;
use crate::rlp::{self, RlpError};

/// Half the secp256k1 group order: signatures with a larger `s` are refused
/// (EIP-2).
const HALF_N: [u8; 32] = [
    0x7f, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x5d,
    0x57, 0x6e, 0x73, 0x57, 0xa4, 0x50, 0x1d, 0xdf, 0xe9, 0x2f, 0x46, 0x68, 0x1b, 0x20, 0xa0,
];

/// The process-wide secp256k1 context (signing and verification; never
/// randomised, so deterministic).
pub(crate) fn secp() -> &'static Secp256k1<All> {
    static CTX: OnceLock<Secp256k1<All>> = OnceLock::new();
    CTX.get_or_init(Secp256k1::new)
}

/// A bad transaction: malformed bytes or an invalid signature.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum TxError {
    /// The RLP encoding is malformed.
    #[error("malformed transaction encoding: {0}")]
    Rlp(#[from] RlpError),
    /// The `to` field is neither empty nor 20 bytes.
    #[error("`to` field of {0} bytes (expected 0 or 20)")]
    BadTo(usize),
    /// `v` is neither 27/28 nor an EIP-155 value (≥ 35).
    #[error("invalid signature v value {0}")]
    BadV(u64),
    /// `r` or `s` is zero or out of range, or `s` is in the upper half of the
    /// group order (EIP-2).
    #[error("invalid signature values r={r} s={s}")]
    BadSignatureValues {
        /// `r`, hex.
        r: String,
        /// `s`, hex.
        s: String,
    },
    /// Public key recovery failed.
    #[error("signature does not recover a public key: {0}")]
    Recovery(String),
}

/// A transaction before signing.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct UnsignedTx {
    /// The sender's nonce.
    pub nonce: u64,
    /// Price of a unit of gas, in wei.
    pub gas_price: u128,
    /// Maximum gas the transaction may use.
    pub gas_limit: u64,
    /// Recipient; `None` creates a contract.
    pub to: Option<[u8; 20]>,
    /// Value transferred, in wei.
    pub value: u128,
    /// Call data or contract init code.
    pub data: Vec<u8>,
    /// EIP-155 chain id; `None` signs an unprotected transaction.
    pub chain_id: Option<u64>,
}

fn encode_fields(tx: &UnsignedTx, out: &mut Vec<u8>) {
    rlp::encode_u64(out, tx.nonce);
    rlp::encode_u128(out, tx.gas_price);
    rlp::encode_u64(out, tx.gas_limit);
    match &tx.to {
        Some(to) => rlp::encode_bytes(out, to),
        None => rlp::encode_bytes(out, &[]),
    }
    rlp::encode_u128(out, tx.value);
    rlp::encode_bytes(out, &tx.data);
}

impl UnsignedTx {
    /// The hash that is signed: EIP-155's nine-field form when a chain id is
    /// set, the six-field form otherwise.
    pub fn signing_hash(&self) -> [u8; 32] {
        let mut payload = Vec::with_capacity(64 + self.data.len());
        encode_fields(self, &mut payload);
        if let Some(id) = self.chain_id {
            rlp::encode_u64(&mut payload, id);
            rlp::encode_u64(&mut payload, 0);
            rlp::encode_u64(&mut payload, 0);
        }
        keccak256(&rlp::list(&payload))
    }

    /// Signs with `key` (deterministic, low-S).
    pub fn sign(self, key: &SecretKey) -> SignedTx {
        let msg = Message::from_digest(self.signing_hash());
        let sig = secp().sign_ecdsa_recoverable(&msg, key);
        let (recid, compact) = sig.serialize_compact();
        let recid = recid.to_i32() as u64;
        let v = match self.chain_id {
            Some(id) => id.saturating_mul(2).saturating_add(35).saturating_add(recid),
            None => 27 + recid,
        };
        let mut r = [0u8; 32];
        let mut s = [0u8; 32];
        r.copy_from_slice(&compact[..32]);
        s.copy_from_slice(&compact[32..]);
        SignedTx { tx: self, v, r, s }
    }
}

/// A signed transaction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SignedTx {
    /// The signed fields (its `chain_id` is derived from `v`).
    pub tx: UnsignedTx,
    /// Signature `v` (27/28, or `chainId · 2 + 35 + recoveryId`).
    pub v: u64,
    /// Signature `r`, big-endian.
    pub r: [u8; 32],
    /// Signature `s`, big-endian.
    pub s: [u8; 32],
}

fn strip(b: &[u8; 32]) -> &[u8] {
    let skip = b.iter().take_while(|x| **x == 0).count();
    &b[skip..]
}

fn word(item: rlp::Item<'_>) -> Result<[u8; 32], RlpError> {
    let b = item.bytes()?;
    if b.len() > 32 {
        return Err(RlpError::IntegerOverflow { len: b.len(), max: 32 });
    }
    if b.first() == Some(&0) {
        return Err(RlpError::LeadingZero);
    }
    let mut out = [0u8; 32];
    out[32 - b.len()..].copy_from_slice(b);
    Ok(out)
}

impl SignedTx {
    /// The RLP encoding (what is hashed, relayed and put in blocks).
    pub fn encode(&self) -> Vec<u8> {
        let mut payload = Vec::with_capacity(128 + self.tx.data.len());
        encode_fields(&self.tx, &mut payload);
        rlp::encode_u64(&mut payload, self.v);
        rlp::encode_bytes(&mut payload, strip(&self.r));
        rlp::encode_bytes(&mut payload, strip(&self.s));
        rlp::list(&payload)
    }

    /// Decodes a canonical encoding; never panics. The signature's values
    /// are checked by [`SignedTx::recover_sender`], not here.
    pub fn decode(bytes: &[u8]) -> Result<SignedTx, TxError> {
        let items = rlp::decode_list_of(bytes, 9)?;
        Self::from_items(&items)
    }

    /// Decodes the nine RLP items of a transaction.
    pub(crate) fn from_items(items: &[rlp::Item<'_>]) -> Result<SignedTx, TxError> {
        let [nonce, gas_price, gas_limit, to, value, data, v, r, s] = items else {
            return Err(RlpError::BadItemCount { expected: 9, found: items.len() }.into());
        };
        let to = match to.bytes()? {
            [] => None,
            b => Some(<[u8; 20]>::try_from(b).map_err(|_| TxError::BadTo(b.len()))?),
        };
        let v = v.u64()?;
        let chain_id = match v {
            27 | 28 => None,
            v if v >= 35 => Some((v - 35) / 2),
            v => return Err(TxError::BadV(v)),
        };
        Ok(SignedTx {
            tx: UnsignedTx {
                nonce: nonce.u64()?,
                gas_price: gas_price.u128()?,
                gas_limit: gas_limit.u64()?,
                to,
                value: value.u128()?,
                data: data.bytes()?.to_vec(),
                chain_id,
            },
            v,
            r: word(*r)?,
            s: word(*s)?,
        })
    }

    /// The transaction hash: `keccak256` of the encoding.
    pub fn tx_hash(&self) -> [u8; 32] {
        keccak256(&self.encode())
    }

    /// The EIP-155 chain id, if protected.
    pub fn chain_id(&self) -> Option<u64> {
        self.tx.chain_id
    }

    fn recovery_id(&self) -> Result<RecoveryId, TxError> {
        let raw = match self.v {
            27 | 28 => self.v - 27,
            v if v >= 35 => (v - 35) % 2,
            v => return Err(TxError::BadV(v)),
        };
        RecoveryId::from_i32(raw as i32).map_err(|e| TxError::Recovery(e.to_string()))
    }

    /// Recovers the signer's public key, refusing zero, out-of-range and
    /// high-`s` signatures.
    pub fn recover_pubkey(&self) -> Result<PublicKey, TxError> {
        let bad = || TxError::BadSignatureValues { r: hex::encode(self.r), s: hex::encode(self.s) };
        if self.r == [0u8; 32] || self.s == [0u8; 32] || self.s > HALF_N {
            return Err(bad());
        }
        let mut compact = [0u8; 64];
        compact[..32].copy_from_slice(&self.r);
        compact[32..].copy_from_slice(&self.s);
        let sig = RecoverableSignature::from_compact(&compact, self.recovery_id()?).map_err(|_| bad())?;
        let msg = Message::from_digest(self.tx.signing_hash());
        secp().recover_ecdsa(&msg, &sig).map_err(|e| TxError::Recovery(e.to_string()))
    }

    /// Recovers the sender's address.
    pub fn recover_sender(&self) -> Result<[u8; 20], TxError> {
        Ok(address_of(&self.recover_pubkey()?))
    }
}

/// The address of a public key: the last 20 bytes of `keccak256` of its
/// uncompressed encoding without the `0x04` prefix.
pub fn address_of(pubkey: &PublicKey) -> [u8; 20] {
    let full = pubkey.serialize_uncompressed();
    let h = keccak256(&full[1..]);
    let mut out = [0u8; 20];
    out.copy_from_slice(&h[12..]);
    out
}

/// The address controlled by a secret key.
pub fn address_of_secret(key: &SecretKey) -> [u8; 20] {
    address_of(&PublicKey::from_secret_key(secp(), key))
}

/// The address of a contract created by `sender` with `nonce`:
/// `keccak256(rlp([sender, nonce]))[12..]`.
pub fn contract_address(sender: &[u8; 20], nonce: u64) -> [u8; 20] {
    let mut payload = Vec::with_capacity(32);
    rlp::encode_bytes(&mut payload, sender);
    rlp::encode_u64(&mut payload, nonce);
    let h = keccak256(&rlp::list(&payload));
    let mut out = [0u8; 20];
    out.copy_from_slice(&h[12..]);
    out
}
