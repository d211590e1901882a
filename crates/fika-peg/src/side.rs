//! Sidechain-side primitives the peg needs: 20-byte account addresses,
//! keccak-256, and the satoshi/wei conversion.
//!
//! A sidechain address is derived from a secp256k1 public key as in
//! Ethereum and Rootstock: the last 20 bytes of keccak-256 of the
//! uncompressed public key without its `0x04` prefix. The same key thus
//! owns a Bitcoin address and a sidechain address, which is how a legacy
//! peg-in finds its receiver.

use std::fmt;
use std::str::FromStr;

use bitcoin::secp256k1::PublicKey;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use tiny_keccak::{Hasher, Keccak};

/// Wei per satoshi: RBTC has 18 decimals, BTC 8.
pub const WEI_PER_SAT: u128 = 10_000_000_000;

/// keccak-256 of `data`.
pub fn keccak256(data: &[u8]) -> [u8; 32] {
    let mut hasher = Keccak::v256();
    hasher.update(data);
    let mut out = [0u8; 32];
    hasher.finalize(&mut out);
    out
}

/// Satoshis as wei.
pub fn sat_to_wei(sat: u64) -> u128 {
    u128::from(sat) * WEI_PER_SAT
}

/// A 20-byte sidechain (EVM) account address.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
pub struct SideAddress(pub [u8; 20]);

impl SideAddress {
    /// The all-zero address.
    pub const ZERO: SideAddress = SideAddress([0; 20]);

    /// The address of a public key: the last 20 bytes of keccak-256 of its
    /// uncompressed serialization without the `0x04` prefix.
    pub fn from_public_key(pk: &PublicKey) -> Self {
        let uncompressed = pk.serialize_uncompressed();
        let hash = keccak256(&uncompressed[1..]);
        let mut out = [0u8; 20];
        out.copy_from_slice(&hash[12..]);
        SideAddress(out)
    }

    /// The address as a 32-byte ABI word (left-padded with zeros).
    pub fn to_word(&self) -> [u8; 32] {
        let mut word = [0u8; 32];
        word[12..].copy_from_slice(&self.0);
        word
    }

    /// The raw bytes.
    pub fn as_bytes(&self) -> &[u8; 20] {
        &self.0
    }
}

impl fmt::Display for SideAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "0x{}", hex::encode(self.0))
    }
}

impl fmt::Debug for SideAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

/// A string that is not a 20-byte hex address.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[error("not a 20-byte hex address: `{0}`")]
pub struct ParseAddressError(pub String);

impl FromStr for SideAddress {
    type Err = ParseAddressError;

    /// Parses 40 hex digits with an optional `0x` prefix.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let digits = s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")).unwrap_or(s);
        let mut out = [0u8; 20];
        hex::decode_to_slice(digits, &mut out).map_err(|_| ParseAddressError(s.to_owned()))?;
        Ok(SideAddress(out))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bitcoin::secp256k1::{Secp256k1, SecretKey};

    #[test]
    fn keccak_matches_known_vectors() {
        assert_eq!(
            hex::encode(keccak256(b"")),
            "c5d2460186f7233c927e7db2dcc703c0e500b653ca82273b7bfad8045d85a470"
        );
    }

    #[test]
    fn address_of_private_key_one_matches_ethereum() {
        // Private key 1 is the well-known 0x7E5F4552091A69125d5DfCb7b8C2659029395Bdf.
        let secp = Secp256k1::new();
        let mut bytes = [0u8; 32];
        bytes[31] = 1;
        let sk = SecretKey::from_slice(&bytes).unwrap();
        let addr = SideAddress::from_public_key(&PublicKey::from_secret_key(&secp, &sk));
        assert_eq!(addr.to_string(), "0x7e5f4552091a69125d5dfcb7b8c2659029395bdf");
        assert_eq!("0x7e5f4552091a69125d5dfcb7b8c2659029395bdf".parse::<SideAddress>().unwrap(), addr);
        assert!("0x12".parse::<SideAddress>().is_err());
    }
}
