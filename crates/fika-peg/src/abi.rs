//! The Bridge as a precompiled contract: Solidity ABI encoding and decoding
//! of its methods (Rootstock's names, signatures and selectors), its event
//! logs, and [`BridgeState::call`], which a sidechain runs at
//! [`BRIDGE_ADDRESS`].
//!
//! Signatures are Rootstock's (`BridgeMethods`, `BridgeEvents`): selectors are
//! the first four bytes of keccak-256 of the signature, topic 0 of an event
//! is keccak-256 of its signature. Bitcoin hashes (`btcTxHash`, block hashes)
//! are in display byte order, as bitcoinj's `Sha256Hash.getBytes()` gives
//! them. The decoder is total: any byte string decodes to a call or an
//! [`AbiError`], never a panic, and allocates at most in proportion to the
//! input.
//!
//! Semantics of [`BridgeState::call`], following Rootstock's `Bridge`:
//! malformed calldata, an unauthorised caller of a federation-only method, a
//! malformed header, or an out-of-range depth revert (`Err`); a
//! `registerBtcTransaction` that fails the Bridge's validations succeeds
//! with no effect and no logs (Rootstock logs a warning and returns).
//! Methods with calldata are not payable.
//!
//! The peg-out methods ([`crate::pegout`]): empty calldata is `releaseBtc`,
//! a value transfer that needs the transaction's signer, so it runs only
//! through [`BridgeState::call_with_env`] (which a sidechain calls with its
//! `BlockEnvInfo`); it never reverts for a bad request (the value is sent
//! back with `release_request_rejected`). `updateCollections()` may be
//! called by anyone. `addSignature(bytes,bytes[],bytes)` — Rootstock's
//! signature, selector `f10b9c59`, the 32-byte peg-out key being a dynamic
//! `bytes` — reverts for a non-member caller, a public key or DER signature
//! that does not parse, an empty signature list or a key that is not 32
//! bytes; signatures that do not verify, a non-member key, a member signing
//! twice or an unknown peg-out succeed with no effect and no logs, as in
//! Rootstock.
//!
//! The federation-change votes ([`crate::fedchange`]): `createFederation()`,
//! `addFederatorPublicKey(bytes)`, `addFederatorPublicKeyMultikey(bytes,bytes,bytes)`,
//! `commitFederation(bytes)` and `rollbackFederation()` return their result
//! code as an `int256` and never revert (a key that does not parse, or a
//! hash that is not 32 bytes, is the generic error `-10`); a commit logs
//! `commit_federation`.

use bitcoin::block::Header;
use bitcoin::hashes::Hash;
use bitcoin::secp256k1::PublicKey;
use bitcoin::secp256k1::ecdsa::Signature;
use fika_side::BlockEnvInfo;
use thiserror::Error;

use crate::bridge::{BridgeError, BridgeEvent, BridgeState};
use crate::fedchange::{FederationChangeVote, GENERIC_ERROR, PendingMember};
use crate::pegout::{AddSignatureError, Effects, TxOrigin};
use crate::side::{SideAddress, keccak256};

/// The Bridge's address, `0x0000000000000000000000000000000001000006`.
pub const BRIDGE_ADDRESS: SideAddress =
    SideAddress([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0x01, 0x00, 0x00, 0x06]);

/// Largest calldata [`decode_call`] accepts (a sidechain's gas limit bounds
/// it anyway): 4 MiB.
pub const MAX_CALLDATA: usize = 4 << 20;

/// The 4-byte selector of a function signature.
pub fn selector(signature: &str) -> [u8; 4] {
    let h = keccak256(signature.as_bytes());
    [h[0], h[1], h[2], h[3]]
}

/// Topic 0 of an event signature.
pub fn event_topic(signature: &str) -> [u8; 32] {
    keccak256(signature.as_bytes())
}

/// The Bridge methods implemented here.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum BridgeMethod {
    /// `registerBtcTransaction(bytes,int256,bytes)`.
    RegisterBtcTransaction,
    /// `receiveHeaders(bytes[])`.
    ReceiveHeaders,
    /// `getBtcBlockchainBestChainHeight()` → `int256`.
    GetBtcBlockchainBestChainHeight,
    /// `getBtcBlockchainBlockHashAtDepth(int256)` → `bytes` (32).
    GetBtcBlockchainBlockHashAtDepth,
    /// `getFederationAddress()` → `string`.
    GetFederationAddress,
    /// `getFederationSize()` → `int256`.
    GetFederationSize,
    /// `getFederationThreshold()` → `int256`.
    GetFederationThreshold,
    /// `getMinimumLockTxValue()` → `int256`.
    GetMinimumLockTxValue,
    /// `getLockingCap()` → `int256`.
    GetLockingCap,
    /// `getFeePerKb()` → `int256`.
    GetFeePerKb,
    /// `updateCollections()`.
    UpdateCollections,
    /// `addSignature(bytes,bytes[],bytes)` (the last argument, the
    /// peg-out's 32-byte key, is a dynamic `bytes` in Rootstock's ABI).
    AddSignature,
    /// `getEstimatedFeesForNextPegOutEvent()` → `uint256`.
    GetEstimatedFeesForNextPegOutEvent,
    /// `getQueuedPegoutsCount()` → `uint256`.
    GetQueuedPegoutsCount,
    /// `getNextPegoutCreationBlockNumber()` → `uint256`.
    GetNextPegoutCreationBlockNumber,
    /// `createFederation()` → `int256` (a federation-change vote).
    CreateFederation,
    /// `addFederatorPublicKey(bytes)` → `int256` (a vote).
    AddFederatorPublicKey,
    /// `addFederatorPublicKeyMultikey(bytes,bytes,bytes)` → `int256` (a
    /// vote: Bitcoin, sidechain and MST keys).
    AddFederatorPublicKeyMultikey,
    /// `commitFederation(bytes)` → `int256` (a vote naming the pending
    /// federation's 32-byte hash).
    CommitFederation,
    /// `rollbackFederation()` → `int256` (a vote).
    RollbackFederation,
    /// `getPendingFederationHash()` → `bytes` (empty without one).
    GetPendingFederationHash,
    /// `getPendingFederationSize()` → `int256` (−1 without one).
    GetPendingFederationSize,
    /// `getRetiringFederationAddress()` → `string` (empty without one).
    GetRetiringFederationAddress,
    /// `getRetiringFederationSize()` → `int256` (−1 without one).
    GetRetiringFederationSize,
    /// `getFederationCreationBlockNumber()` → `int256`.
    GetFederationCreationBlockNumber,
}

impl BridgeMethod {
    /// Every method.
    pub const ALL: [BridgeMethod; 25] = [
        BridgeMethod::RegisterBtcTransaction,
        BridgeMethod::ReceiveHeaders,
        BridgeMethod::GetBtcBlockchainBestChainHeight,
        BridgeMethod::GetBtcBlockchainBlockHashAtDepth,
        BridgeMethod::GetFederationAddress,
        BridgeMethod::GetFederationSize,
        BridgeMethod::GetFederationThreshold,
        BridgeMethod::GetMinimumLockTxValue,
        BridgeMethod::GetLockingCap,
        BridgeMethod::GetFeePerKb,
        BridgeMethod::UpdateCollections,
        BridgeMethod::AddSignature,
        BridgeMethod::GetEstimatedFeesForNextPegOutEvent,
        BridgeMethod::GetQueuedPegoutsCount,
        BridgeMethod::GetNextPegoutCreationBlockNumber,
        BridgeMethod::CreateFederation,
        BridgeMethod::AddFederatorPublicKey,
        BridgeMethod::AddFederatorPublicKeyMultikey,
        BridgeMethod::CommitFederation,
        BridgeMethod::RollbackFederation,
        BridgeMethod::GetPendingFederationHash,
        BridgeMethod::GetPendingFederationSize,
        BridgeMethod::GetRetiringFederationAddress,
        BridgeMethod::GetRetiringFederationSize,
        BridgeMethod::GetFederationCreationBlockNumber,
    ];

    /// The Solidity signature.
    pub fn signature(self) -> &'static str {
        match self {
            BridgeMethod::RegisterBtcTransaction => "registerBtcTransaction(bytes,int256,bytes)",
            BridgeMethod::ReceiveHeaders => "receiveHeaders(bytes[])",
            BridgeMethod::GetBtcBlockchainBestChainHeight => "getBtcBlockchainBestChainHeight()",
            BridgeMethod::GetBtcBlockchainBlockHashAtDepth => "getBtcBlockchainBlockHashAtDepth(int256)",
            BridgeMethod::GetFederationAddress => "getFederationAddress()",
            BridgeMethod::GetFederationSize => "getFederationSize()",
            BridgeMethod::GetFederationThreshold => "getFederationThreshold()",
            BridgeMethod::GetMinimumLockTxValue => "getMinimumLockTxValue()",
            BridgeMethod::GetLockingCap => "getLockingCap()",
            BridgeMethod::GetFeePerKb => "getFeePerKb()",
            BridgeMethod::UpdateCollections => "updateCollections()",
            BridgeMethod::AddSignature => "addSignature(bytes,bytes[],bytes)",
            BridgeMethod::GetEstimatedFeesForNextPegOutEvent => "getEstimatedFeesForNextPegOutEvent()",
            BridgeMethod::GetQueuedPegoutsCount => "getQueuedPegoutsCount()",
            BridgeMethod::GetNextPegoutCreationBlockNumber => "getNextPegoutCreationBlockNumber()",
            BridgeMethod::CreateFederation => "createFederation()",
            BridgeMethod::AddFederatorPublicKey => "addFederatorPublicKey(bytes)",
            BridgeMethod::AddFederatorPublicKeyMultikey => "addFederatorPublicKeyMultikey(bytes,bytes,bytes)",
            BridgeMethod::CommitFederation => "commitFederation(bytes)",
            BridgeMethod::RollbackFederation => "rollbackFederation()",
            BridgeMethod::GetPendingFederationHash => "getPendingFederationHash()",
            BridgeMethod::GetPendingFederationSize => "getPendingFederationSize()",
            BridgeMethod::GetRetiringFederationAddress => "getRetiringFederationAddress()",
            BridgeMethod::GetRetiringFederationSize => "getRetiringFederationSize()",
            BridgeMethod::GetFederationCreationBlockNumber => "getFederationCreationBlockNumber()",
        }
    }

    /// The method name.
    pub fn name(self) -> &'static str {
        let sig = self.signature();
        sig.split('(').next().unwrap_or(sig)
    }

    /// The 4-byte selector.
    pub fn selector(self) -> [u8; 4] {
        selector(self.signature())
    }

    /// The method with this selector.
    pub fn from_selector(sel: [u8; 4]) -> Option<Self> {
        Self::ALL.into_iter().find(|m| m.selector() == sel)
    }
}

/// A decoded Bridge call.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeCall {
    /// `registerBtcTransaction(tx, height, pmt)`.
    RegisterBtcTransaction {
        /// The serialized Bitcoin transaction.
        tx: Vec<u8>,
        /// The block height (an `int256` that fits `i64`).
        height: i64,
        /// The serialized partial merkle tree.
        pmt: Vec<u8>,
    },
    /// `receiveHeaders(headers)`: serialized 80-byte headers.
    ReceiveHeaders {
        /// The serialized headers.
        headers: Vec<Vec<u8>>,
    },
    /// `getBtcBlockchainBestChainHeight()`.
    GetBtcBlockchainBestChainHeight,
    /// `getBtcBlockchainBlockHashAtDepth(depth)`.
    GetBtcBlockchainBlockHashAtDepth {
        /// The depth (an `int256` that fits `i64`).
        depth: i64,
    },
    /// `getFederationAddress()`.
    GetFederationAddress,
    /// `getFederationSize()`.
    GetFederationSize,
    /// `getFederationThreshold()`.
    GetFederationThreshold,
    /// `getMinimumLockTxValue()`.
    GetMinimumLockTxValue,
    /// `getLockingCap()`.
    GetLockingCap,
    /// `getFeePerKb()`.
    GetFeePerKb,
    /// `updateCollections()`.
    UpdateCollections,
    /// `addSignature(federatorPublicKey, signatures, rskTxHash)`.
    AddSignature {
        /// The member's serialized public key.
        federator_public_key: Vec<u8>,
        /// One DER signature (without sighash byte) per input.
        signatures: Vec<Vec<u8>>,
        /// The peg-out's key.
        rsk_tx_hash: [u8; 32],
    },
    /// `getEstimatedFeesForNextPegOutEvent()`.
    GetEstimatedFeesForNextPegOutEvent,
    /// `getQueuedPegoutsCount()`.
    GetQueuedPegoutsCount,
    /// `getNextPegoutCreationBlockNumber()`.
    GetNextPegoutCreationBlockNumber,
    /// `createFederation()`.
    CreateFederation,
    /// `addFederatorPublicKey(key)`.
    AddFederatorPublicKey {
        /// The serialized public key (all three roles).
        key: Vec<u8>,
    },
    /// `addFederatorPublicKeyMultikey(btcKey, rskKey, mstKey)`.
    AddFederatorPublicKeyMultikey {
        /// The serialized Bitcoin key.
        btc_key: Vec<u8>,
        /// The serialized sidechain key.
        rsk_key: Vec<u8>,
        /// The serialized MST key.
        mst_key: Vec<u8>,
    },
    /// `commitFederation(hash)`.
    CommitFederation {
        /// The pending federation's hash (32 bytes to be valid).
        hash: Vec<u8>,
    },
    /// `rollbackFederation()`.
    RollbackFederation,
    /// `getPendingFederationHash()`.
    GetPendingFederationHash,
    /// `getPendingFederationSize()`.
    GetPendingFederationSize,
    /// `getRetiringFederationAddress()`.
    GetRetiringFederationAddress,
    /// `getRetiringFederationSize()`.
    GetRetiringFederationSize,
    /// `getFederationCreationBlockNumber()`.
    GetFederationCreationBlockNumber,
}

impl BridgeCall {
    /// The method called.
    pub fn method(&self) -> BridgeMethod {
        match self {
            BridgeCall::RegisterBtcTransaction { .. } => BridgeMethod::RegisterBtcTransaction,
            BridgeCall::ReceiveHeaders { .. } => BridgeMethod::ReceiveHeaders,
            BridgeCall::GetBtcBlockchainBestChainHeight => BridgeMethod::GetBtcBlockchainBestChainHeight,
            BridgeCall::GetBtcBlockchainBlockHashAtDepth { .. } => {
                BridgeMethod::GetBtcBlockchainBlockHashAtDepth
            }
            BridgeCall::GetFederationAddress => BridgeMethod::GetFederationAddress,
            BridgeCall::GetFederationSize => BridgeMethod::GetFederationSize,
            BridgeCall::GetFederationThreshold => BridgeMethod::GetFederationThreshold,
            BridgeCall::GetMinimumLockTxValue => BridgeMethod::GetMinimumLockTxValue,
            BridgeCall::GetLockingCap => BridgeMethod::GetLockingCap,
            BridgeCall::GetFeePerKb => BridgeMethod::GetFeePerKb,
            BridgeCall::UpdateCollections => BridgeMethod::UpdateCollections,
            BridgeCall::AddSignature { .. } => BridgeMethod::AddSignature,
            BridgeCall::GetEstimatedFeesForNextPegOutEvent => {
                BridgeMethod::GetEstimatedFeesForNextPegOutEvent
            }
            BridgeCall::GetQueuedPegoutsCount => BridgeMethod::GetQueuedPegoutsCount,
            BridgeCall::GetNextPegoutCreationBlockNumber => BridgeMethod::GetNextPegoutCreationBlockNumber,
            BridgeCall::CreateFederation => BridgeMethod::CreateFederation,
            BridgeCall::AddFederatorPublicKey { .. } => BridgeMethod::AddFederatorPublicKey,
            BridgeCall::AddFederatorPublicKeyMultikey { .. } => BridgeMethod::AddFederatorPublicKeyMultikey,
            BridgeCall::CommitFederation { .. } => BridgeMethod::CommitFederation,
            BridgeCall::RollbackFederation => BridgeMethod::RollbackFederation,
            BridgeCall::GetPendingFederationHash => BridgeMethod::GetPendingFederationHash,
            BridgeCall::GetPendingFederationSize => BridgeMethod::GetPendingFederationSize,
            BridgeCall::GetRetiringFederationAddress => BridgeMethod::GetRetiringFederationAddress,
            BridgeCall::GetRetiringFederationSize => BridgeMethod::GetRetiringFederationSize,
            BridgeCall::GetFederationCreationBlockNumber => BridgeMethod::GetFederationCreationBlockNumber,
        }
    }
}

/// Malformed calldata.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AbiError {
    /// Empty calldata: a plain value transfer (`releaseBtc`).
    #[error("empty calldata (a value transfer: releaseBtc)")]
    Empty,
    /// Fewer than 4 bytes.
    #[error("calldata of {0} bytes has no selector")]
    ShortSelector(usize),
    /// Calldata over [`MAX_CALLDATA`].
    #[error("calldata of {0} bytes is too large")]
    TooLarge(usize),
    /// No Bridge method has this selector.
    #[error("unknown selector 0x{}", hex::encode(.0))]
    UnknownSelector([u8; 4]),
    /// A word lies beyond the data.
    #[error("word at offset {offset} is beyond the {len} bytes of arguments")]
    OutOfBounds {
        /// Its offset.
        offset: usize,
        /// The argument length.
        len: usize,
    },
    /// An offset or length does not fit the data.
    #[error("offset or length {0} out of range")]
    BadOffset(String),
    /// A `bytes` argument of a fixed-size value has the wrong length.
    #[error("expected {expected} bytes, got {got}")]
    WrongLength {
        /// The size required.
        expected: usize,
        /// The size given.
        got: usize,
    },
    /// An `int256` does not fit `i64`.
    #[error("int256 0x{} does not fit 64 bits", hex::encode(.0))]
    IntOutOfRange([u8; 32]),
}

/// An EVM log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Log {
    /// Topics (topic 0 = event signature hash).
    pub topics: Vec<[u8; 32]>,
    /// ABI-encoded non-indexed arguments.
    pub data: Vec<u8>,
}

/// The result of a successful call.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct CallOutcome {
    /// ABI-encoded return data.
    pub output: Vec<u8>,
    /// Logs emitted by the Bridge, in order.
    pub logs: Vec<Log>,
    /// RBTC transfers out of the Bridge (recipient, wei) the sidechain must
    /// apply (debiting [`BRIDGE_ADDRESS`]).
    pub credits: Vec<(SideAddress, u128)>,
}

// ---- words ----

/// An `int256`/`uint256` word of a non-negative integer.
pub fn word_u128(v: u128) -> [u8; 32] {
    let mut w = [0u8; 32];
    w[16..].copy_from_slice(&v.to_be_bytes());
    w
}

/// An `int256` word (two's complement).
pub fn word_i64(v: i64) -> [u8; 32] {
    let mut w = if v < 0 { [0xff; 32] } else { [0; 32] };
    w[24..].copy_from_slice(&v.to_be_bytes());
    w
}

/// A Bitcoin hash (txid, block hash) as a `bytes32` word in display order.
pub fn word_hash<H: Hash<Bytes = [u8; 32]>>(h: &H) -> [u8; 32] {
    let mut b = h.to_byte_array();
    b.reverse();
    b
}

fn word_int_to_i64(w: &[u8; 32]) -> Result<i64, AbiError> {
    let neg = w[0] & 0x80 != 0;
    let fill = if neg { 0xff } else { 0 };
    if w[..24].iter().any(|b| *b != fill) {
        return Err(AbiError::IntOutOfRange(*w));
    }
    let mut b = [0u8; 8];
    b.copy_from_slice(&w[24..]);
    let v = i64::from_be_bytes(b);
    if (v < 0) != neg {
        return Err(AbiError::IntOutOfRange(*w));
    }
    Ok(v)
}

/// A reader over ABI-encoded arguments (after the selector).
struct Reader<'a> {
    data: &'a [u8],
}

impl<'a> Reader<'a> {
    fn word(&self, offset: usize) -> Result<[u8; 32], AbiError> {
        let end = offset.checked_add(32).ok_or_else(|| AbiError::BadOffset(offset.to_string()))?;
        let slice =
            self.data.get(offset..end).ok_or(AbiError::OutOfBounds { offset, len: self.data.len() })?;
        let mut w = [0u8; 32];
        w.copy_from_slice(slice);
        Ok(w)
    }

    /// A word read as an offset/length that must fit within the data.
    fn usize_at(&self, offset: usize) -> Result<usize, AbiError> {
        let w = self.word(offset)?;
        if w[..24].iter().any(|b| *b != 0) {
            return Err(AbiError::BadOffset(format!("0x{}", hex::encode(w))));
        }
        let mut b = [0u8; 8];
        b.copy_from_slice(&w[24..]);
        let v = u64::from_be_bytes(b);
        usize::try_from(v)
            .ok()
            .filter(|v| *v <= self.data.len())
            .ok_or_else(|| AbiError::BadOffset(v.to_string()))
    }

    fn int_at(&self, offset: usize) -> Result<i64, AbiError> {
        word_int_to_i64(&self.word(offset)?)
    }

    /// `bytes` whose length word is at absolute offset `at`.
    fn bytes_at(&self, at: usize) -> Result<&'a [u8], AbiError> {
        let len = self.usize_at(at)?;
        let start = at.checked_add(32).ok_or_else(|| AbiError::BadOffset(at.to_string()))?;
        let end = start.checked_add(len).ok_or_else(|| AbiError::BadOffset(len.to_string()))?;
        self.data.get(start..end).ok_or(AbiError::OutOfBounds { offset: start, len: self.data.len() })
    }

    /// A dynamic `bytes` argument whose head word is at `head`.
    fn bytes_arg(&self, head: usize) -> Result<Vec<u8>, AbiError> {
        let at = self.usize_at(head)?;
        Ok(self.bytes_at(at)?.to_vec())
    }

    /// A dynamic `bytes[]` argument whose head word is at `head`.
    fn bytes_array_arg(&self, head: usize) -> Result<Vec<Vec<u8>>, AbiError> {
        let at = self.usize_at(head)?;
        let count = self.usize_at(at)?;
        let base = at + 32;
        // Each element needs at least a head word: bound the allocation.
        if count > self.data.len().saturating_sub(base) / 32 {
            return Err(AbiError::BadOffset(format!("array of {count} elements")));
        }
        let mut out = Vec::with_capacity(count);
        for i in 0..count {
            let rel = self.usize_at(base + 32 * i)?;
            let elem = base.checked_add(rel).ok_or_else(|| AbiError::BadOffset(rel.to_string()))?;
            out.push(self.bytes_at(elem)?.to_vec());
        }
        Ok(out)
    }
}

/// Decodes calldata into a Bridge call. Total: never panics.
pub fn decode_call(calldata: &[u8]) -> Result<BridgeCall, AbiError> {
    if calldata.is_empty() {
        return Err(AbiError::Empty);
    }
    if calldata.len() > MAX_CALLDATA {
        return Err(AbiError::TooLarge(calldata.len()));
    }
    let (sel, args) = match calldata.split_first_chunk::<4>() {
        Some((sel, args)) => (*sel, args),
        None => return Err(AbiError::ShortSelector(calldata.len())),
    };
    let method = BridgeMethod::from_selector(sel).ok_or(AbiError::UnknownSelector(sel))?;
    let r = Reader { data: args };
    Ok(match method {
        BridgeMethod::RegisterBtcTransaction => BridgeCall::RegisterBtcTransaction {
            tx: r.bytes_arg(0)?,
            height: r.int_at(32)?,
            pmt: r.bytes_arg(64)?,
        },
        BridgeMethod::ReceiveHeaders => BridgeCall::ReceiveHeaders { headers: r.bytes_array_arg(0)? },
        BridgeMethod::GetBtcBlockchainBestChainHeight => BridgeCall::GetBtcBlockchainBestChainHeight,
        BridgeMethod::GetBtcBlockchainBlockHashAtDepth => {
            BridgeCall::GetBtcBlockchainBlockHashAtDepth { depth: r.int_at(0)? }
        }
        BridgeMethod::GetFederationAddress => BridgeCall::GetFederationAddress,
        BridgeMethod::GetFederationSize => BridgeCall::GetFederationSize,
        BridgeMethod::GetFederationThreshold => BridgeCall::GetFederationThreshold,
        BridgeMethod::GetMinimumLockTxValue => BridgeCall::GetMinimumLockTxValue,
        BridgeMethod::GetLockingCap => BridgeCall::GetLockingCap,
        BridgeMethod::GetFeePerKb => BridgeCall::GetFeePerKb,
        BridgeMethod::UpdateCollections => BridgeCall::UpdateCollections,
        BridgeMethod::AddSignature => BridgeCall::AddSignature {
            federator_public_key: r.bytes_arg(0)?,
            signatures: r.bytes_array_arg(32)?,
            rsk_tx_hash: {
                let b = r.bytes_arg(64)?;
                <[u8; 32]>::try_from(b.as_slice())
                    .map_err(|_| AbiError::WrongLength { expected: 32, got: b.len() })?
            },
        },
        BridgeMethod::GetEstimatedFeesForNextPegOutEvent => BridgeCall::GetEstimatedFeesForNextPegOutEvent,
        BridgeMethod::GetQueuedPegoutsCount => BridgeCall::GetQueuedPegoutsCount,
        BridgeMethod::GetNextPegoutCreationBlockNumber => BridgeCall::GetNextPegoutCreationBlockNumber,
        BridgeMethod::CreateFederation => BridgeCall::CreateFederation,
        BridgeMethod::AddFederatorPublicKey => BridgeCall::AddFederatorPublicKey { key: r.bytes_arg(0)? },
        BridgeMethod::AddFederatorPublicKeyMultikey => BridgeCall::AddFederatorPublicKeyMultikey {
            btc_key: r.bytes_arg(0)?,
            rsk_key: r.bytes_arg(32)?,
            mst_key: r.bytes_arg(64)?,
        },
        BridgeMethod::CommitFederation => BridgeCall::CommitFederation { hash: r.bytes_arg(0)? },
        BridgeMethod::RollbackFederation => BridgeCall::RollbackFederation,
        BridgeMethod::GetPendingFederationHash => BridgeCall::GetPendingFederationHash,
        BridgeMethod::GetPendingFederationSize => BridgeCall::GetPendingFederationSize,
        BridgeMethod::GetRetiringFederationAddress => BridgeCall::GetRetiringFederationAddress,
        BridgeMethod::GetRetiringFederationSize => BridgeCall::GetRetiringFederationSize,
        BridgeMethod::GetFederationCreationBlockNumber => BridgeCall::GetFederationCreationBlockNumber,
    })
}

/// Appends `bytes` as a length word plus zero-padded data.
fn push_tail(out: &mut Vec<u8>, bytes: &[u8]) {
    out.extend_from_slice(&word_u128(bytes.len() as u128));
    out.extend_from_slice(bytes);
    let pad = (32 - bytes.len() % 32) % 32;
    out.extend(std::iter::repeat_n(0u8, pad));
}

/// ABI-encodes a single dynamic `bytes` (or `string`) return value.
pub fn encode_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = word_u128(32).to_vec();
    push_tail(&mut out, bytes);
    out
}

/// An ABI argument: a static word or a dynamic `bytes`/`string`.
#[derive(Clone, Copy, Debug)]
pub enum AbiArg<'a> {
    /// A static 32-byte word.
    Word([u8; 32]),
    /// A dynamic `bytes` or `string`.
    Bytes(&'a [u8]),
}

/// ABI-encodes a tuple of arguments: one head word each (the word itself,
/// or the offset of a dynamic value), then the dynamic values' tails.
pub fn encode_args(args: &[AbiArg<'_>]) -> Vec<u8> {
    let mut head = Vec::with_capacity(32 * args.len());
    let mut tail = Vec::new();
    for a in args {
        match a {
            AbiArg::Word(w) => head.extend_from_slice(w),
            AbiArg::Bytes(b) => {
                head.extend_from_slice(&word_u128((32 * args.len() + tail.len()) as u128));
                push_tail(&mut tail, b);
            }
        }
    }
    head.extend_from_slice(&tail);
    head
}

/// Encodes a call as calldata (selector and arguments).
pub fn encode_call(call: &BridgeCall) -> Vec<u8> {
    let mut out = call.method().selector().to_vec();
    match call {
        BridgeCall::RegisterBtcTransaction { tx, height, pmt } => {
            let tx_tail = 32 + tx.len().div_ceil(32) * 32;
            out.extend_from_slice(&word_u128(96));
            out.extend_from_slice(&word_i64(*height));
            out.extend_from_slice(&word_u128((96 + tx_tail) as u128));
            push_tail(&mut out, tx);
            push_tail(&mut out, pmt);
        }
        BridgeCall::ReceiveHeaders { headers } => {
            out.extend_from_slice(&word_u128(32));
            push_bytes_array(&mut out, headers);
        }
        BridgeCall::AddSignature { federator_public_key, signatures, rsk_tx_hash } => {
            let key_tail = 32 + federator_public_key.len().div_ceil(32) * 32;
            let sigs_tail: usize =
                32 + signatures.iter().map(|s| 64 + s.len().div_ceil(32) * 32).sum::<usize>();
            out.extend_from_slice(&word_u128(96));
            out.extend_from_slice(&word_u128((96 + key_tail) as u128));
            out.extend_from_slice(&word_u128((96 + key_tail + sigs_tail) as u128));
            push_tail(&mut out, federator_public_key);
            push_bytes_array(&mut out, signatures);
            push_tail(&mut out, rsk_tx_hash);
        }
        BridgeCall::GetBtcBlockchainBlockHashAtDepth { depth } => out.extend_from_slice(&word_i64(*depth)),
        BridgeCall::AddFederatorPublicKey { key } => {
            out.extend_from_slice(&encode_args(&[AbiArg::Bytes(key)]))
        }
        BridgeCall::AddFederatorPublicKeyMultikey { btc_key, rsk_key, mst_key } => {
            out.extend_from_slice(&encode_args(&[
                AbiArg::Bytes(btc_key),
                AbiArg::Bytes(rsk_key),
                AbiArg::Bytes(mst_key),
            ]))
        }
        BridgeCall::CommitFederation { hash } => out.extend_from_slice(&encode_args(&[AbiArg::Bytes(hash)])),
        BridgeCall::GetBtcBlockchainBestChainHeight
        | BridgeCall::GetFederationAddress
        | BridgeCall::GetFederationSize
        | BridgeCall::GetFederationThreshold
        | BridgeCall::GetMinimumLockTxValue
        | BridgeCall::GetLockingCap
        | BridgeCall::GetFeePerKb
        | BridgeCall::UpdateCollections
        | BridgeCall::GetEstimatedFeesForNextPegOutEvent
        | BridgeCall::GetQueuedPegoutsCount
        | BridgeCall::GetNextPegoutCreationBlockNumber
        | BridgeCall::CreateFederation
        | BridgeCall::RollbackFederation
        | BridgeCall::GetPendingFederationHash
        | BridgeCall::GetPendingFederationSize
        | BridgeCall::GetRetiringFederationAddress
        | BridgeCall::GetRetiringFederationSize
        | BridgeCall::GetFederationCreationBlockNumber => {}
    }
    out
}

/// Appends the tail of a `bytes[]`: count, element offsets (relative to the
/// first offset word), elements.
fn push_bytes_array(out: &mut Vec<u8>, items: &[Vec<u8>]) {
    out.extend_from_slice(&word_u128(items.len() as u128));
    let mut rel = 32 * items.len();
    for h in items {
        out.extend_from_slice(&word_u128(rel as u128));
        rel += 32 + h.len().div_ceil(32) * 32;
    }
    for h in items {
        push_tail(out, h);
    }
}

/// The signature of `pegin_btc`.
pub const PEGIN_BTC_SIGNATURE: &str = "pegin_btc(address,bytes32,int256,int256)";
/// The signature of `rejected_pegin`.
pub const REJECTED_PEGIN_SIGNATURE: &str = "rejected_pegin(bytes32,int256)";
/// The signature of `unrefundable_pegin`.
pub const UNREFUNDABLE_PEGIN_SIGNATURE: &str = "unrefundable_pegin(bytes32,int256)";

/// The signature of `release_request_received`.
pub const RELEASE_REQUEST_RECEIVED_SIGNATURE: &str = "release_request_received(address,string,uint256)";
/// The signature of `release_request_rejected`.
pub const RELEASE_REQUEST_REJECTED_SIGNATURE: &str = "release_request_rejected(address,uint256,int256)";
/// The signature of `update_collections`.
pub const UPDATE_COLLECTIONS_SIGNATURE: &str = "update_collections(address)";
/// The signature of `release_requested`.
pub const RELEASE_REQUESTED_SIGNATURE: &str = "release_requested(bytes32,bytes32,uint256)";
/// The signature of `batch_pegout_created`.
pub const BATCH_PEGOUT_CREATED_SIGNATURE: &str = "batch_pegout_created(bytes32,bytes)";
/// The signature of `pegout_transaction_created`.
pub const PEGOUT_TRANSACTION_CREATED_SIGNATURE: &str = "pegout_transaction_created(bytes32,bytes)";
/// The signature of `pegout_confirmed`.
pub const PEGOUT_CONFIRMED_SIGNATURE: &str = "pegout_confirmed(bytes32,uint256)";
/// The signature of `add_signature`.
pub const ADD_SIGNATURE_SIGNATURE: &str = "add_signature(bytes32,address,bytes)";
/// The signature of `release_btc`.
pub const RELEASE_BTC_SIGNATURE: &str = "release_btc(bytes32,bytes)";
/// The signature of `commit_federation`.
pub const COMMIT_FEDERATION_SIGNATURE: &str = "commit_federation(bytes,string,bytes,string,int256)";

/// Rootstock's `UtxoUtils.encodeOutpointValues`: each value as a Bitcoin
/// compact size, concatenated.
pub fn encode_outpoint_values(values: &[bitcoin::Amount]) -> Vec<u8> {
    let mut out = Vec::with_capacity(values.len() * 5);
    for v in values {
        out.extend_from_slice(&bitcoin::consensus::serialize(&bitcoin::VarInt(v.to_sat())));
    }
    out
}

/// The EVM log of a Bridge event (Rootstock's topics and data layout).
pub fn event_log(event: &BridgeEvent) -> Log {
    match event {
        BridgeEvent::PeginBtc { receiver, btc_txid, amount, protocol_version } => Log {
            topics: vec![event_topic(PEGIN_BTC_SIGNATURE), receiver.to_word(), word_hash(btc_txid)],
            data: [word_u128(u128::from(amount.to_sat())), word_u128(u128::from(*protocol_version))].concat(),
        },
        BridgeEvent::RejectedPegin { btc_txid, reason } => Log {
            topics: vec![event_topic(REJECTED_PEGIN_SIGNATURE), word_hash(btc_txid)],
            data: word_u128(u128::from(reason.code())).to_vec(),
        },
        BridgeEvent::UnrefundablePegin { btc_txid, reason } => Log {
            topics: vec![event_topic(UNREFUNDABLE_PEGIN_SIGNATURE), word_hash(btc_txid)],
            data: word_u128(u128::from(reason.code())).to_vec(),
        },
        BridgeEvent::ReleaseRequestReceived { sender, btc_destination, amount_wei } => {
            let mut data = [word_u128(64), word_u128(*amount_wei)].concat();
            push_tail(&mut data, btc_destination.as_bytes());
            Log { topics: vec![event_topic(RELEASE_REQUEST_RECEIVED_SIGNATURE), sender.to_word()], data }
        }
        BridgeEvent::ReleaseRequestRejected { sender, amount_wei, reason } => Log {
            topics: vec![event_topic(RELEASE_REQUEST_REJECTED_SIGNATURE), sender.to_word()],
            data: [word_u128(*amount_wei), word_u128(u128::from(reason.code()))].concat(),
        },
        BridgeEvent::UpdateCollections { sender } => {
            Log { topics: vec![event_topic(UPDATE_COLLECTIONS_SIGNATURE)], data: sender.to_word().to_vec() }
        }
        BridgeEvent::ReleaseRequested { rsk_tx_hash, btc_txid, amount } => Log {
            topics: vec![event_topic(RELEASE_REQUESTED_SIGNATURE), *rsk_tx_hash, word_hash(btc_txid)],
            data: word_u128(u128::from(amount.to_sat())).to_vec(),
        },
        BridgeEvent::BatchPegoutCreated { btc_txid, rsk_tx_hashes } => Log {
            topics: vec![event_topic(BATCH_PEGOUT_CREATED_SIGNATURE), word_hash(btc_txid)],
            data: encode_bytes(&rsk_tx_hashes.concat()),
        },
        BridgeEvent::PegoutTransactionCreated { btc_txid, utxo_outpoint_values } => Log {
            topics: vec![event_topic(PEGOUT_TRANSACTION_CREATED_SIGNATURE), word_hash(btc_txid)],
            data: encode_bytes(&encode_outpoint_values(utxo_outpoint_values)),
        },
        BridgeEvent::PegoutConfirmed { btc_txid, creation_block } => Log {
            topics: vec![event_topic(PEGOUT_CONFIRMED_SIGNATURE), word_hash(btc_txid)],
            data: word_u128(u128::from(*creation_block)).to_vec(),
        },
        BridgeEvent::AddSignature { rsk_tx_hash, federator, federator_public_key } => Log {
            topics: vec![event_topic(ADD_SIGNATURE_SIGNATURE), *rsk_tx_hash, federator.to_word()],
            data: encode_bytes(&federator_public_key.serialize()),
        },
        BridgeEvent::ReleaseBtc { rsk_tx_hash, raw_tx } => {
            Log { topics: vec![event_topic(RELEASE_BTC_SIGNATURE), *rsk_tx_hash], data: encode_bytes(raw_tx) }
        }
        BridgeEvent::CommitFederation { old_keys, old_address, new_keys, new_address, activation_height } => {
            let flat = |keys: &[PublicKey]| keys.iter().flat_map(|k| k.serialize()).collect::<Vec<u8>>();
            let (old, new) = (flat(old_keys), flat(new_keys));
            let height = i64::try_from(*activation_height).unwrap_or(i64::MAX);
            Log {
                topics: vec![event_topic(COMMIT_FEDERATION_SIGNATURE)],
                data: encode_args(&[
                    AbiArg::Bytes(&old),
                    AbiArg::Bytes(old_address.as_bytes()),
                    AbiArg::Bytes(&new),
                    AbiArg::Bytes(new_address.as_bytes()),
                    AbiArg::Word(word_i64(height)),
                ]),
            }
        }
    }
}

impl BridgeState {
    /// Executes a call to the Bridge precompile by `caller` carrying `value`
    /// wei. `Err` means the call reverts and the state is unchanged.
    ///
    /// Without the transaction's environment the Bridge cannot know the
    /// signer's key, so `releaseBtc` (empty calldata) reverts with
    /// [`BridgeError::NotImplemented`] here: use
    /// [`call_with_env`](Self::call_with_env). Peg-outs created here are
    /// keyed by derived hashes.
    pub fn call(
        &mut self,
        caller: SideAddress,
        value: u128,
        calldata: &[u8],
    ) -> Result<CallOutcome, BridgeError> {
        if calldata.is_empty() {
            return Err(BridgeError::NotImplemented("releaseBtc"));
        }
        self.dispatch(caller, value, calldata, None)
    }

    /// [`call`](Self::call) inside a sidechain transaction described by
    /// `env` (block number, `tx.origin`, the signer's public key, the
    /// transaction hash), as a sidechain runs the precompile. Empty
    /// calldata is `releaseBtc`; `updateCollections` keys its peg-out by
    /// `env.tx_hash`.
    pub fn call_with_env(
        &mut self,
        caller: SideAddress,
        value: u128,
        calldata: &[u8],
        env: &BlockEnvInfo,
    ) -> Result<CallOutcome, BridgeError> {
        self.begin_block(env.number);
        let origin = TxOrigin::from_block_env(env);
        if calldata.is_empty() {
            let fx = self.release_btc(caller, value, &origin)?;
            return Ok(effects_outcome(fx));
        }
        self.dispatch(caller, value, calldata, Some(&origin))
    }

    fn dispatch(
        &mut self,
        caller: SideAddress,
        value: u128,
        calldata: &[u8],
        origin: Option<&TxOrigin>,
    ) -> Result<CallOutcome, BridgeError> {
        let call = decode_call(calldata)?;
        if value != 0 {
            return Err(BridgeError::NonPayable { method: call.method().name(), value });
        }
        let int = |v: u128| CallOutcome { output: word_u128(v).to_vec(), ..CallOutcome::default() };
        Ok(match call {
            BridgeCall::RegisterBtcTransaction { tx, height, pmt } => {
                let Ok(height) = u32::try_from(height) else {
                    return Ok(CallOutcome::default());
                };
                match self.register_btc_transaction(caller, &tx, height, &pmt) {
                    Ok(reg) => CallOutcome {
                        output: Vec::new(),
                        logs: reg.events.iter().map(event_log).collect(),
                        credits: reg.credits,
                    },
                    Err(_) => CallOutcome::default(),
                }
            }
            BridgeCall::ReceiveHeaders { headers } => {
                if !self.is_federation_member(&caller) {
                    return Err(BridgeError::Unauthorized { caller, method: "receiveHeaders" });
                }
                let mut parsed = Vec::with_capacity(headers.len());
                for (index, bytes) in headers.iter().enumerate() {
                    if bytes.len() != 80 {
                        return Err(BridgeError::BadHeader {
                            index,
                            reason: format!("{} bytes", bytes.len()),
                        });
                    }
                    let h: Header = bitcoin::consensus::deserialize(bytes)
                        .map_err(|e| BridgeError::BadHeader { index, reason: e.to_string() })?;
                    parsed.push(h);
                }
                self.receive_headers(caller, &parsed)?;
                CallOutcome::default()
            }
            BridgeCall::GetBtcBlockchainBestChainHeight => {
                int(u128::from(self.get_btc_blockchain_best_chain_height()))
            }
            BridgeCall::GetBtcBlockchainBlockHashAtDepth { depth } => {
                let hash = self.get_btc_blockchain_block_hash_at_depth(depth)?;
                CallOutcome { output: encode_bytes(&word_hash(&hash)), ..CallOutcome::default() }
            }
            BridgeCall::GetFederationAddress => CallOutcome {
                output: encode_bytes(self.get_federation_address().to_string().as_bytes()),
                ..CallOutcome::default()
            },
            BridgeCall::GetFederationSize => int(self.get_federation_size() as u128),
            BridgeCall::GetFederationThreshold => int(self.get_federation_threshold() as u128),
            BridgeCall::GetMinimumLockTxValue => int(u128::from(self.get_minimum_lock_tx_value().to_sat())),
            BridgeCall::GetLockingCap => int(u128::from(self.get_locking_cap().to_sat())),
            BridgeCall::GetFeePerKb => int(u128::from(self.get_fee_per_kb().to_sat())),
            BridgeCall::UpdateCollections => {
                let block = self.block_number();
                effects_outcome(self.update_collections(block, caller, origin.and_then(|o| o.tx_hash)))
            }
            BridgeCall::AddSignature { federator_public_key, signatures, rsk_tx_hash } => {
                if !self.is_federation_member(&caller) {
                    return Err(BridgeError::Unauthorized { caller, method: "addSignature" });
                }
                let federator = PublicKey::from_slice(&federator_public_key).map_err(|e| {
                    BridgeError::InvalidArgument(format!(
                        "public key {} does not parse: {e}",
                        hex::encode(&federator_public_key)
                    ))
                })?;
                if signatures.is_empty() {
                    return Err(BridgeError::InvalidArgument("signatures array is empty".into()));
                }
                let sigs = signatures
                    .iter()
                    .enumerate()
                    .map(|(i, der)| {
                        Signature::from_der(der).map_err(|e| {
                            BridgeError::InvalidArgument(format!("signature {i} is not DER: {e}"))
                        })
                    })
                    .collect::<Result<Vec<_>, _>>()?;
                match self.add_signature(caller, &federator, &sigs, &rsk_tx_hash) {
                    Ok(fx) => effects_outcome(fx),
                    Err(AddSignatureError::Unauthorized(caller)) => {
                        return Err(BridgeError::Unauthorized { caller, method: "addSignature" });
                    }
                    // Rootstock logs and returns: the call succeeds without effect.
                    Err(_) => CallOutcome::default(),
                }
            }
            BridgeCall::GetEstimatedFeesForNextPegOutEvent => {
                int(u128::from(self.get_estimated_fees_for_next_pegout_event().to_sat()))
            }
            BridgeCall::GetQueuedPegoutsCount => int(self.get_queued_pegouts_count() as u128),
            BridgeCall::GetNextPegoutCreationBlockNumber => {
                int(u128::from(self.get_next_pegout_creation_block_number()))
            }
            BridgeCall::CreateFederation => self.vote_call(caller, Some(FederationChangeVote::Create)),
            BridgeCall::RollbackFederation => self.vote_call(caller, Some(FederationChangeVote::Rollback)),
            BridgeCall::AddFederatorPublicKey { key } => {
                let vote = PublicKey::from_slice(&key)
                    .ok()
                    .map(|k| FederationChangeVote::Add(PendingMember::single(k)));
                self.vote_call(caller, vote)
            }
            BridgeCall::AddFederatorPublicKeyMultikey { btc_key, rsk_key, mst_key } => {
                let parse = |b: &[u8]| PublicKey::from_slice(b).ok();
                let vote = match (parse(&btc_key), parse(&rsk_key), parse(&mst_key)) {
                    (Some(btc), Some(rsk), Some(mst)) => {
                        Some(FederationChangeVote::Add(PendingMember { btc, rsk, mst }))
                    }
                    _ => None,
                };
                self.vote_call(caller, vote)
            }
            BridgeCall::CommitFederation { hash } => {
                let vote = <[u8; 32]>::try_from(hash.as_slice()).ok().map(FederationChangeVote::Commit);
                self.vote_call(caller, vote)
            }
            BridgeCall::GetPendingFederationHash => CallOutcome {
                output: encode_bytes(
                    &self.pending_federation().map(|p| p.hash().to_vec()).unwrap_or_default(),
                ),
                ..CallOutcome::default()
            },
            BridgeCall::GetPendingFederationSize => {
                let n = self.pending_federation().map_or(-1, |p| p.members().len() as i64);
                CallOutcome { output: word_i64(n).to_vec(), ..CallOutcome::default() }
            }
            BridgeCall::GetRetiringFederationAddress => {
                let network = self.params().btc_network;
                let addr =
                    self.retiring_federation().map(|f| f.address(network).to_string()).unwrap_or_default();
                CallOutcome { output: encode_bytes(addr.as_bytes()), ..CallOutcome::default() }
            }
            BridgeCall::GetRetiringFederationSize => {
                let n = self.retiring_federation().map_or(-1, |f| f.size() as i64);
                CallOutcome { output: word_i64(n).to_vec(), ..CallOutcome::default() }
            }
            BridgeCall::GetFederationCreationBlockNumber => {
                int(u128::from(self.get_federation_creation_block_number()))
            }
        })
    }

    /// A federation-change vote through the precompile: the result code as
    /// an `int256`, the events of an executed call. A malformed argument
    /// (`None`) is [`GENERIC_ERROR`] without a vote, as in Rootstock.
    fn vote_call(&mut self, caller: SideAddress, vote: Option<FederationChangeVote>) -> CallOutcome {
        let Some(vote) = vote else {
            return CallOutcome { output: word_i64(GENERIC_ERROR).to_vec(), ..CallOutcome::default() };
        };
        let (code, fx) = self.vote_federation_change(caller, vote);
        CallOutcome { output: word_i64(code).to_vec(), ..effects_outcome(fx) }
    }
}

fn effects_outcome(fx: Effects) -> CallOutcome {
    CallOutcome { output: Vec::new(), logs: fx.events.iter().map(event_log).collect(), credits: fx.credits }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn selectors_match_rootstock() {
        let expect = [
            (BridgeMethod::RegisterBtcTransaction, "43dc0656"),
            (BridgeMethod::ReceiveHeaders, "e5400e7b"),
            (BridgeMethod::GetBtcBlockchainBestChainHeight, "14c89c01"),
            (BridgeMethod::GetBtcBlockchainBlockHashAtDepth, "efd44418"),
            (BridgeMethod::GetFederationAddress, "6923fa85"),
            (BridgeMethod::GetFederationSize, "802ad4b6"),
            (BridgeMethod::GetFederationThreshold, "0fd47456"),
            (BridgeMethod::GetMinimumLockTxValue, "2f8d158f"),
            (BridgeMethod::GetLockingCap, "3f9db977"),
            (BridgeMethod::GetFeePerKb, "724ec886"),
            // As Rootstock's transactions and monitors show them.
            (BridgeMethod::UpdateCollections, "0c5a9990"),
            (BridgeMethod::AddSignature, "f10b9c59"),
        ];
        for (m, hex_sel) in expect {
            assert_eq!(hex::encode(m.selector()), hex_sel, "{m:?}");
            assert_eq!(BridgeMethod::from_selector(m.selector()), Some(m));
        }
        assert_eq!(BridgeMethod::RegisterBtcTransaction.name(), "registerBtcTransaction");
    }

    #[test]
    fn event_topics_match_rootstock() {
        // Topic hashes as Rootstock's 2wp-api tests record them.
        assert_eq!(
            hex::encode(event_topic(PEGIN_BTC_SIGNATURE)),
            "44cdc782a38244afd68336ab92a0b39f864d6c0b2a50fa1da58cafc93cd2ae5a"
        );
        assert_eq!(
            hex::encode(event_topic(REJECTED_PEGIN_SIGNATURE)),
            "708ce1ead20561c5894a93be3fee64b326b2ad6c198f8253e4bb56f1626053d6"
        );
        assert_eq!(
            hex::encode(event_topic(UNREFUNDABLE_PEGIN_SIGNATURE)),
            "35be155c87e408cbbcb753dc12f95fc5a242a29460a3d7189e807e63d7c185a7"
        );
    }

    #[test]
    fn pegout_selectors_and_topics_are_the_keccak_of_rootstocks_signatures() {
        for m in [
            BridgeMethod::GetEstimatedFeesForNextPegOutEvent,
            BridgeMethod::GetQueuedPegoutsCount,
            BridgeMethod::GetNextPegoutCreationBlockNumber,
        ] {
            let h = keccak256(m.signature().as_bytes());
            assert_eq!(m.selector(), [h[0], h[1], h[2], h[3]]);
            assert_eq!(BridgeMethod::from_selector(m.selector()), Some(m));
        }
        assert_eq!(
            BridgeMethod::GetEstimatedFeesForNextPegOutEvent.name(),
            "getEstimatedFeesForNextPegOutEvent"
        );
        for sig in [
            RELEASE_REQUEST_RECEIVED_SIGNATURE,
            RELEASE_REQUEST_REJECTED_SIGNATURE,
            UPDATE_COLLECTIONS_SIGNATURE,
            RELEASE_REQUESTED_SIGNATURE,
            BATCH_PEGOUT_CREATED_SIGNATURE,
            PEGOUT_TRANSACTION_CREATED_SIGNATURE,
            PEGOUT_CONFIRMED_SIGNATURE,
            ADD_SIGNATURE_SIGNATURE,
            RELEASE_BTC_SIGNATURE,
        ] {
            assert_eq!(event_topic(sig), keccak256(sig.as_bytes()));
        }
    }

    #[test]
    fn add_signature_calldata_matches_the_standard_layout() {
        let call = BridgeCall::AddSignature {
            federator_public_key: vec![2; 33],
            signatures: vec![vec![0x30; 70], vec![0x31; 71]],
            rsk_tx_hash: [9; 32],
        };
        let data = encode_call(&call);
        assert_eq!(&data[..4], &hex::decode("f10b9c59").unwrap()[..]);
        // head: offsets 0x60, 0x60 + 32 + 64 = 0xc0, 0xc0 + 32 + 2·32 +
        // (32 + 96) + (32 + 96) = 0x220.
        assert_eq!(data[4 + 31], 0x60);
        assert_eq!(data[4 + 63], 0xc0);
        assert_eq!(&data[4 + 94..4 + 96], &[0x02, 0x20]);
        // bytes[]: count 2, offsets 0x40 and 0x40 + 32 + 96 = 0xc0.
        assert_eq!(data[4 + 0xc0 + 31], 2);
        assert_eq!(data[4 + 0xc0 + 63], 0x40);
        assert_eq!(data[4 + 0xc0 + 95], 0xc0);
        // The key: length 32, then its bytes.
        assert_eq!(data[4 + 0x220 + 31], 32);
        assert_eq!(&data[4 + 0x240..], &[9; 32]);
        assert_eq!(decode_call(&data).unwrap(), call);
        // A key that is not 32 bytes does not decode.
        let mut short = data.clone();
        short[4 + 0x220 + 31] = 31;
        assert_eq!(decode_call(&short), Err(AbiError::WrongLength { expected: 32, got: 31 }));
    }

    #[test]
    fn outpoint_values_are_compact_sizes() {
        use bitcoin::Amount;
        let v = [
            Amount::from_sat(1),
            Amount::from_sat(253),
            Amount::from_sat(0x1_0000),
            Amount::from_sat(1 << 32),
        ];
        assert_eq!(hex::encode(encode_outpoint_values(&v)), "01fdfd00fe00000100ff0000000001000000");
    }

    #[test]
    fn bridge_address_is_rootstocks() {
        assert_eq!(BRIDGE_ADDRESS.to_string(), "0x0000000000000000000000000000000001000006");
    }

    #[test]
    fn int_words_round_trip_and_range_is_checked() {
        for v in [0i64, 1, -1, i64::MAX, i64::MIN, 100] {
            assert_eq!(word_int_to_i64(&word_i64(v)).unwrap(), v);
        }
        let mut big = [0u8; 32];
        big[0] = 1;
        assert!(word_int_to_i64(&big).is_err());
        let mut half = [0u8; 32];
        half[24] = 0x80; // 2^63 positive: out of i64
        assert!(word_int_to_i64(&half).is_err());
    }

    #[test]
    fn register_calldata_matches_the_standard_layout() {
        let call = BridgeCall::RegisterBtcTransaction { tx: vec![0xaa; 33], height: 7, pmt: vec![0xbb; 2] };
        let data = encode_call(&call);
        assert_eq!(&data[..4], &hex::decode("43dc0656").unwrap()[..]);
        // head: offset 0x60, height 7, offset 0x60 + 32 + 64 = 0xc0.
        assert_eq!(data[4 + 31], 0x60);
        assert_eq!(data[4 + 63], 7);
        assert_eq!(data[4 + 95], 0xc0);
        assert_eq!(data.len(), 4 + 96 + 32 + 64 + 32 + 32);
        assert_eq!(decode_call(&data).unwrap(), call);
    }

    fn arb_call() -> impl Strategy<Value = BridgeCall> {
        let bytes = || proptest::collection::vec(any::<u8>(), 0..200);
        prop_oneof![
            (bytes(), any::<i64>(), bytes())
                .prop_map(|(tx, height, pmt)| BridgeCall::RegisterBtcTransaction { tx, height, pmt }),
            proptest::collection::vec(bytes(), 0..5)
                .prop_map(|headers| BridgeCall::ReceiveHeaders { headers }),
            any::<i64>().prop_map(|depth| BridgeCall::GetBtcBlockchainBlockHashAtDepth { depth }),
            Just(BridgeCall::GetBtcBlockchainBestChainHeight),
            Just(BridgeCall::GetFederationAddress),
            Just(BridgeCall::GetFeePerKb),
            Just(BridgeCall::UpdateCollections),
            Just(BridgeCall::GetEstimatedFeesForNextPegOutEvent),
            Just(BridgeCall::GetQueuedPegoutsCount),
            Just(BridgeCall::GetNextPegoutCreationBlockNumber),
            Just(BridgeCall::CreateFederation),
            Just(BridgeCall::RollbackFederation),
            Just(BridgeCall::GetPendingFederationHash),
            Just(BridgeCall::GetRetiringFederationAddress),
            bytes().prop_map(|key| BridgeCall::AddFederatorPublicKey { key }),
            bytes().prop_map(|hash| BridgeCall::CommitFederation { hash }),
            (bytes(), bytes(), bytes()).prop_map(|(btc_key, rsk_key, mst_key)| {
                BridgeCall::AddFederatorPublicKeyMultikey { btc_key, rsk_key, mst_key }
            }),
            (bytes(), proptest::collection::vec(bytes(), 0..4), any::<[u8; 32]>()).prop_map(
                |(federator_public_key, signatures, rsk_tx_hash)| BridgeCall::AddSignature {
                    federator_public_key,
                    signatures,
                    rsk_tx_hash
                }
            ),
        ]
    }

    proptest! {
        #[test]
        fn encode_decode_round_trips(call in arb_call()) {
            prop_assert_eq!(decode_call(&encode_call(&call)).unwrap(), call);
        }

        #[test]
        fn decoder_never_panics_on_random_bytes(data in proptest::collection::vec(any::<u8>(), 0..600)) {
            let _ = decode_call(&data);
        }

        #[test]
        fn decoder_never_panics_on_hostile_calldata(
            method in 0usize..BridgeMethod::ALL.len(),
            words in proptest::collection::vec(
                prop_oneof![
                    Just([0u8; 32]),
                    Just([0xff; 32]),
                    any::<u32>().prop_map(|v| word_u128(u128::from(v))),
                    (0u8..200).prop_map(|v| word_u128(u128::from(v))),
                    any::<[u8; 32]>(),
                ],
                0..12,
            ),
            tail in proptest::collection::vec(any::<u8>(), 0..40),
        ) {
            let mut data = BridgeMethod::ALL[method].selector().to_vec();
            for w in &words {
                data.extend_from_slice(w);
            }
            data.extend_from_slice(&tail);
            let _ = decode_call(&data);
        }

        #[test]
        fn truncated_calldata_is_an_error_not_a_panic(call in arb_call(), cut in any::<prop::sample::Index>()) {
            let data = encode_call(&call);
            let n = cut.index(data.len());
            let _ = decode_call(&data[..n]);
        }
    }
}
