//! A small, strict RLP codec (Ethereum's Recursive Length Prefix).
//!
//! Encoding follows the yellow paper. Decoding accepts only the canonical
//! encoding — a single byte below `0x80` encoded as itself, the short form
//! whenever the payload fits in 55 bytes, length prefixes and integers
//! without leading zeros, no trailing bytes — and never panics or
//! over-allocates on hostile input: every length is checked against the
//! bytes actually present before anything is sliced.

use revm::primitives::U256;
use thiserror::Error;

/// A malformed RLP encoding.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RlpError {
    /// The input ended before the item did.
    #[error("input too short: needed {needed} bytes, {available} available")]
    TooShort {
        /// Bytes the item declares.
        needed: usize,
        /// Bytes left in the input.
        available: usize,
    },
    /// The item is not in canonical form.
    #[error("non-canonical encoding: {0}")]
    NonCanonical(&'static str),
    /// Bytes follow the item where none may.
    #[error("{0} trailing bytes after the item")]
    Trailing(usize),
    /// A list was found where a byte string was expected.
    #[error("expected a byte string, found a list")]
    ExpectedBytes,
    /// A byte string was found where a list was expected.
    #[error("expected a list, found a byte string")]
    ExpectedList,
    /// An integer has more bytes than its type holds.
    #[error("integer of {len} bytes does not fit in {max} bytes")]
    IntegerOverflow {
        /// Length of the encoded integer.
        len: usize,
        /// Maximum length of the target type.
        max: usize,
    },
    /// An integer has a leading zero byte.
    #[error("integer with a leading zero byte")]
    LeadingZero,
    /// A fixed-size field has the wrong length.
    #[error("expected {expected} bytes, found {found}")]
    BadLength {
        /// Expected length.
        expected: usize,
        /// Length found.
        found: usize,
    },
    /// A list has the wrong number of items.
    #[error("expected {expected} list items, found {found}")]
    BadItemCount {
        /// Expected count.
        expected: usize,
        /// Count found.
        found: usize,
    },
}

/// One decoded RLP item, borrowing from the input.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Item<'a> {
    /// A byte string.
    Bytes(&'a [u8]),
    /// A list; holds the concatenated encodings of its items.
    List(&'a [u8]),
}

impl<'a> Item<'a> {
    /// The byte string, or [`RlpError::ExpectedBytes`].
    pub fn bytes(self) -> Result<&'a [u8], RlpError> {
        match self {
            Item::Bytes(b) => Ok(b),
            Item::List(_) => Err(RlpError::ExpectedBytes),
        }
    }

    /// The list's items, or [`RlpError::ExpectedList`].
    pub fn list(self) -> Result<Vec<Item<'a>>, RlpError> {
        match self {
            Item::List(payload) => decode_list_payload(payload),
            Item::Bytes(_) => Err(RlpError::ExpectedList),
        }
    }

    /// A canonical unsigned integer (no leading zeros) of at most 8 bytes.
    pub fn u64(self) -> Result<u64, RlpError> {
        let b = int_bytes(self.bytes()?, 8)?;
        Ok(b.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x)))
    }

    /// A canonical unsigned integer of at most 16 bytes.
    pub fn u128(self) -> Result<u128, RlpError> {
        let b = int_bytes(self.bytes()?, 16)?;
        Ok(b.iter().fold(0u128, |acc, x| (acc << 8) | u128::from(*x)))
    }

    /// A canonical unsigned integer of at most 32 bytes.
    pub fn u256(self) -> Result<U256, RlpError> {
        let b = int_bytes(self.bytes()?, 32)?;
        let mut buf = [0u8; 32];
        buf[32 - b.len()..].copy_from_slice(b);
        Ok(U256::from_be_bytes(buf))
    }

    /// A byte string of exactly `N` bytes.
    pub fn fixed<const N: usize>(self) -> Result<[u8; N], RlpError> {
        let b = self.bytes()?;
        <[u8; N]>::try_from(b).map_err(|_| RlpError::BadLength { expected: N, found: b.len() })
    }
}

fn int_bytes(b: &[u8], max: usize) -> Result<&[u8], RlpError> {
    if b.len() > max {
        return Err(RlpError::IntegerOverflow { len: b.len(), max });
    }
    if b.first() == Some(&0) {
        return Err(RlpError::LeadingZero);
    }
    Ok(b)
}

/// Reads a big-endian length of `n` bytes (1..=8) at the start of `input`.
fn read_len(input: &[u8], n: usize) -> Result<usize, RlpError> {
    let bytes = input.get(..n).ok_or(RlpError::TooShort { needed: n, available: input.len() })?;
    if bytes.first() == Some(&0) {
        return Err(RlpError::NonCanonical("length prefix with a leading zero"));
    }
    let len = bytes.iter().fold(0u64, |acc, x| (acc << 8) | u64::from(*x));
    let len = usize::try_from(len)
        .map_err(|_| RlpError::TooShort { needed: usize::MAX, available: input.len() })?;
    if len <= 55 {
        return Err(RlpError::NonCanonical("long form for a payload of at most 55 bytes"));
    }
    Ok(len)
}

fn take(input: &[u8], offset: usize, len: usize) -> Result<(&[u8], &[u8]), RlpError> {
    let end =
        offset.checked_add(len).ok_or(RlpError::TooShort { needed: usize::MAX, available: input.len() })?;
    if end > input.len() {
        return Err(RlpError::TooShort { needed: end, available: input.len() });
    }
    Ok((&input[offset..end], &input[end..]))
}

/// Decodes the first item of `input`; returns it and the remaining bytes.
pub fn decode_item(input: &[u8]) -> Result<(Item<'_>, &[u8]), RlpError> {
    let Some(&prefix) = input.first() else {
        return Err(RlpError::TooShort { needed: 1, available: 0 });
    };
    match prefix {
        0x00..=0x7f => Ok((Item::Bytes(&input[..1]), &input[1..])),
        0x80..=0xb7 => {
            let len = usize::from(prefix - 0x80);
            let (payload, rest) = take(input, 1, len)?;
            if len == 1 && payload[0] < 0x80 {
                return Err(RlpError::NonCanonical("single byte below 0x80 with a prefix"));
            }
            Ok((Item::Bytes(payload), rest))
        }
        0xb8..=0xbf => {
            let n = usize::from(prefix - 0xb7);
            let len = read_len(&input[1..], n)?;
            let (payload, rest) = take(input, 1 + n, len)?;
            Ok((Item::Bytes(payload), rest))
        }
        0xc0..=0xf7 => {
            let len = usize::from(prefix - 0xc0);
            let (payload, rest) = take(input, 1, len)?;
            Ok((Item::List(payload), rest))
        }
        0xf8..=0xff => {
            let n = usize::from(prefix - 0xf7);
            let len = read_len(&input[1..], n)?;
            let (payload, rest) = take(input, 1 + n, len)?;
            Ok((Item::List(payload), rest))
        }
    }
}

/// Decodes exactly one item spanning all of `input`.
pub fn decode_exact(input: &[u8]) -> Result<Item<'_>, RlpError> {
    let (item, rest) = decode_item(input)?;
    if !rest.is_empty() {
        return Err(RlpError::Trailing(rest.len()));
    }
    Ok(item)
}

/// Splits a list payload into its items (not recursing into them).
pub fn decode_list_payload(mut payload: &[u8]) -> Result<Vec<Item<'_>>, RlpError> {
    let mut items = Vec::new();
    while !payload.is_empty() {
        let (item, rest) = decode_item(payload)?;
        items.push(item);
        payload = rest;
    }
    Ok(items)
}

/// Decodes `input` as a list of exactly `n` items.
pub fn decode_list_of(input: &[u8], n: usize) -> Result<Vec<Item<'_>>, RlpError> {
    let items = decode_exact(input)?.list()?;
    if items.len() != n {
        return Err(RlpError::BadItemCount { expected: n, found: items.len() });
    }
    Ok(items)
}

fn encode_length(out: &mut Vec<u8>, len: usize, short_base: u8) {
    if len <= 55 {
        // len <= 55: fits.
        out.push(short_base + len as u8);
    } else {
        let be = (len as u64).to_be_bytes();
        let skip = be.iter().take_while(|b| **b == 0).count();
        out.push(short_base + 55 + (8 - skip) as u8);
        out.extend_from_slice(&be[skip..]);
    }
}

/// Appends the encoding of a byte string.
pub fn encode_bytes(out: &mut Vec<u8>, bytes: &[u8]) {
    if bytes.len() == 1 && bytes[0] < 0x80 {
        out.push(bytes[0]);
    } else {
        encode_length(out, bytes.len(), 0x80);
        out.extend_from_slice(bytes);
    }
}

/// Appends the encoding of an unsigned integer (big-endian, no leading
/// zeros; zero is the empty string).
pub fn encode_u64(out: &mut Vec<u8>, v: u64) {
    let be = v.to_be_bytes();
    let skip = be.iter().take_while(|b| **b == 0).count();
    encode_bytes(out, &be[skip..]);
}

/// Appends the encoding of a `u128` integer.
pub fn encode_u128(out: &mut Vec<u8>, v: u128) {
    let be = v.to_be_bytes();
    let skip = be.iter().take_while(|b| **b == 0).count();
    encode_bytes(out, &be[skip..]);
}

/// Appends the encoding of a 256-bit integer.
pub fn encode_u256(out: &mut Vec<u8>, v: &U256) {
    let be = v.to_be_bytes::<32>();
    let skip = be.iter().take_while(|b| **b == 0).count();
    encode_bytes(out, &be[skip..]);
}

/// Appends a list whose items' encodings are concatenated in `payload`.
pub fn encode_list(out: &mut Vec<u8>, payload: &[u8]) {
    encode_length(out, payload.len(), 0xc0);
    out.extend_from_slice(payload);
}

/// The encoding of a list whose items' encodings are concatenated in
/// `payload`.
pub fn list(payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 9);
    encode_list(&mut out, payload);
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn yellow_paper_examples() {
        let mut out = Vec::new();
        encode_bytes(&mut out, b"dog");
        assert_eq!(out, [0x83, b'd', b'o', b'g']);
        let mut payload = Vec::new();
        encode_bytes(&mut payload, b"cat");
        encode_bytes(&mut payload, b"dog");
        assert_eq!(list(&payload), [0xc8, 0x83, b'c', b'a', b't', 0x83, b'd', b'o', b'g']);
        let mut out = Vec::new();
        encode_u64(&mut out, 0);
        assert_eq!(out, [0x80]);
        let mut out = Vec::new();
        encode_u64(&mut out, 15);
        assert_eq!(out, [0x0f]);
        let mut out = Vec::new();
        encode_u64(&mut out, 1024);
        assert_eq!(out, [0x82, 0x04, 0x00]);
        let long = [b'a'; 56];
        let mut out = Vec::new();
        encode_bytes(&mut out, &long);
        assert_eq!(&out[..2], &[0xb8, 56]);
        assert_eq!(decode_exact(&out).unwrap(), Item::Bytes(&long));
    }

    #[test]
    fn rejects_non_canonical() {
        assert!(matches!(decode_exact(&[0x81, 0x05]), Err(RlpError::NonCanonical(_))));
        assert!(matches!(decode_exact(&[0xb8, 0x02, 1, 2]), Err(RlpError::NonCanonical(_))));
        assert!(matches!(decode_exact(&[0x82, 0x00, 0x01]).unwrap().u64(), Err(RlpError::LeadingZero)));
        assert!(matches!(decode_exact(&[0x83, 1, 2]), Err(RlpError::TooShort { .. })));
        assert!(matches!(decode_exact(&[0x01, 0x02]), Err(RlpError::Trailing(1))));
        assert!(decode_exact(&[0xbf, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
