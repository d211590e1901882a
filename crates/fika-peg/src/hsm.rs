//! The PowHSM: one pegnatory's signing device, as a sans-IO component.
//!
//! A [`PowHsm`] holds a secp256k1 secret key that never leaves it (there is
//! no getter, no `Clone`, and `Debug` does not print it) and a tiny SPV
//! view of the sidechain. The only way in is [`PowHsm::execute`], which
//! takes one [`HsmCommand`] and answers one [`HsmResponse`] or an
//! [`HsmError`] — the narrow interface of a device on a serial port. The
//! device signs a peg-out input only when the sidechain commands it with
//! enough cumulative merge-mined work on top.
//!
//! It follows rsk-powhsm's blockchain bookkeeping (`docs/blockchain-bookkeeping.md`
//! and the firmware's `bc_advance.c`, `bc_ancestor.c`, `auth_receipt.c`):
//!
//! * **State** ([`HsmState`]): `best_block` (sufficiently confirmed),
//!   `newest_valid_block` (newest block whose proof of work was checked),
//!   `ancestor_block` and `ancestor_receipts_root` (the block a receipt is
//!   proven against), and the mid-state of an advance in progress
//!   ([`UpdatingState`]). `best_block` and `newest_valid_block` start at
//!   [`HsmParams::checkpoint`]; the ancestor starts unset (zero).
//! * **[`HsmCommand::AdvanceBlockchain`]**: headers newest → oldest, possibly
//!   over several invocations (each must continue where the last stopped).
//!   Each header must link to the next (parent hash and number), and its
//!   merge-mining proof must pass [`verify_merge_mining`] against the target
//!   of its own difficulty (in [`PowMode::Real`] the Bitcoin header hash is
//!   checked; in [`PowMode::Simulated`] only the structure and tag). Headers
//!   at or below the known `newest_valid_block` skip the PoW check, as in the
//!   firmware. Each header's difficulty, capped at
//!   [`HsmParams::block_difficulty_cap`], is added to a running total from
//!   the newest header down; the first header at which the total reaches
//!   [`HsmParams::minimum_cumulative_difficulty`] becomes the candidate best
//!   block. The state changes only when the chain reaches a header whose
//!   parent is the current `best_block`: then `best_block` becomes the
//!   candidate and `newest_valid_block` the newest header. If the chain
//!   reaches `best_block` with too little work, `best_block` stays, the
//!   PoW-checked chain is kept as `newest_valid_block` (partial progress) and
//!   the command fails with [`HsmError::NotEnoughWork`]. Any other failure
//!   resets the advance in progress and leaves the state as it was.
//! * **[`HsmCommand::UpdateAncestor`]**: headers newest → oldest, the first
//!   being `best_block` or the current `ancestor_block`; the last becomes the
//!   ancestor and its receipts root is recorded. Hash linkage from a trusted
//!   block is the proof, so no PoW is checked. Because `best_block` only ever
//!   advances along a chain that links to the previous one, the ancestor is
//!   always `best_block` or one of its ancestors.
//! * **[`HsmCommand::Sign`]**: signs input `input` of a Bitcoin transaction
//!   only if the given receipt (a successful one) holds a log emitted by
//!   [`HsmParams::bridge_address`] with exactly three topics, topic 0 being
//!   [`release_requested_topic`] and topic 2 this transaction's hash, and the
//!   receipt's proof reduces to `ancestor_receipts_root`. The sighash is
//!   computed inside from the transaction, the input, the federation's
//!   script ([`HsmParams::federation`], or the federation the command names
//!   after a federation change, checked against the input) and `value`
//!   (BIP143 over the witness script for the P2SH-P2WSH ERP form),
//!   SIGHASH_ALL.
//! * **[`HsmCommand::Attestation`]**: a signed statement binding the
//!   platform, the public key, `best_block`, the last signed transaction and
//!   a caller's nonce ([`Attestation`]).
//!
//! The transaction hash is the txid of the transaction exactly as presented
//! (the witness excluded; the scriptSigs as they are), in display byte order
//! — what rsk-powhsm's `auth_tx.c` hashes and what Rootstock's Bridge puts in
//! `release_requested` (`btcTx.getHash().getBytes()`, see
//! [`crate::abi::word_hash`]). The event is
//! `release_requested(bytes32 indexed rskTxHash, bytes32 indexed btcTxHash,
//! uint256 amount)`: topics `[keccak256(signature), rskTxHash, btcTxHash]`,
//! data the amount in satoshis ([`release_requested_log`]).
//!
//! Simplifications against rsk-powhsm: one key (no BIP44 paths, no RSK/MST
//! keys), the federation's script is a parameter that a sign request may
//! override with another federation the device's key belongs to, no uncle ("brothers")
//! checks, no heartbeat, the receipt proof is fika's merkle proof rather than
//! a trie proof, and the attestation is self-signed by the device key (no
//! vendor-endorsed attestation key chain). In [`PowMode::Simulated`] a
//! header's difficulty is taken at its word: only the simulator's timing
//! decides how hard a block was to find, so an attacker's headers must come
//! from the simulator's mining model to be meaningful.

use std::fmt;
use std::sync::Arc;

use bitcoin::ecdsa;
use bitcoin::hashes::{Hash, sha256};
use bitcoin::secp256k1::{self, All, Message, PublicKey, Secp256k1, SecretKey};
use bitcoin::{Amount, Transaction, Txid};
use fika_side::{
    Log, MerkleProof, MmError, PowMode, Receipt, SideHeader, U256, difficulty_to_target, verify_merge_mining,
    verify_receipt_proof,
};
use thiserror::Error;

use crate::abi::{BRIDGE_ADDRESS, event_topic, word_hash, word_u128};
use crate::federation::{Federation, FederationError, ScriptForm};
use crate::params::BtcNetwork;
use crate::side::SideAddress;

/// The signature of the Bridge event that commands a peg-out signature
/// (defined with the Bridge's other events in [`crate::abi`]).
pub use crate::abi::RELEASE_REQUESTED_SIGNATURE;

/// Topic 0 of `release_requested`: keccak-256 of
/// [`RELEASE_REQUESTED_SIGNATURE`].
pub fn release_requested_topic() -> [u8; 32] {
    event_topic(RELEASE_REQUESTED_SIGNATURE)
}

/// The `release_requested` log as the Bridge emits it (Rootstock's
/// `BridgeEventLoggerImpl.logReleaseBtcRequested`): from `bridge`, topics
/// `[topic, rsk_tx_hash, btc tx hash (display order)]`, data the amount in
/// satoshis as a `uint256` word.
pub fn release_requested_log(
    bridge: SideAddress,
    rsk_tx_hash: [u8; 32],
    btc_tx: &Txid,
    amount: Amount,
) -> Log {
    Log {
        address: bridge.0,
        topics: vec![release_requested_topic(), rsk_tx_hash, word_hash(btc_tx)],
        data: word_u128(u128::from(amount.to_sat())).to_vec(),
    }
}

/// Rootstock mainnet's per-block difficulty cap: 7 × 10²¹ (7 ZH), rsk-powhsm's
/// `BCDIFF_MBD_MAINNET` and powpeg-node's `NetworkDifficultyCap.MAINNET`.
pub const MAINNET_BLOCK_DIFFICULTY_CAP: U256 = U256::from_limbs([0x7883_c069_1660_0000, 0x17b, 0, 0]);

/// Rootstock testnet's per-block difficulty cap: 10¹⁵ (1 PH).
pub const TESTNET_BLOCK_DIFFICULTY_CAP: U256 = U256::from_limbs([0x0003_8d7e_a4c6_8000, 0, 0, 0]);

/// Rootstock regtest's per-block difficulty cap: 20.
pub const REGTEST_BLOCK_DIFFICULTY_CAP: U256 = U256::from_limbs([20, 0, 0, 0]);

/// The minimum cumulative difficulty of the `rootstock-mainnet` preset:
/// 2.8 × 10²⁵ = 4,000 blocks at the mainnet cap.
///
/// rsk-powhsm takes this number as a build parameter of the signer and the
/// sources consulted do not publish the mainnet value, so this is a
/// documented default: Rootstock's 4,000 peg-out confirmation blocks at the
/// cap, about 74 Bitcoin blocks of work at a Bitcoin difficulty of 8.8 × 10¹³
/// (the seeds speak of "approximately 100 bitcoin blocks").
pub const MAINNET_MIN_CUMULATIVE_DIFFICULTY: U256 =
    U256::from_limbs([0x0a9e_69fd_9c00_0000, 0x17_293b, 0, 0]);

/// The minimum cumulative difficulty that `confirmations` blocks of
/// `block_difficulty` each reach (saturating): a way to size
/// [`HsmParams::minimum_cumulative_difficulty`] for a scenario.
pub fn min_cumulative_for(confirmations: u64, block_difficulty: U256) -> U256 {
    block_difficulty.saturating_mul(U256::from(confirmations))
}

/// The parameters burnt into a PowHSM's firmware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HsmParams {
    /// Platform identifier, bound into attestations (at most 255 bytes).
    pub platform: String,
    /// The sidechain block the device starts from (its initial `best_block`
    /// and `newest_valid_block`).
    pub checkpoint: [u8; 32],
    /// Whether merge-mining proofs must meet the target.
    pub pow_mode: PowMode,
    /// Most difficulty a single block is credited with.
    pub block_difficulty_cap: U256,
    /// Capped difficulty a best block needs on top (itself included).
    pub minimum_cumulative_difficulty: U256,
    /// The Bridge's address: the only emitter whose `release_requested`
    /// logs command a signature.
    pub bridge_address: SideAddress,
    /// The federation whose outputs the device signs; its script (the
    /// P2SH-P2WSH ERP witness script in the current form) enters every
    /// sighash.
    pub federation: Federation,
    /// The Bitcoin network of the federation's address.
    pub btc_network: BtcNetwork,
}

impl HsmParams {
    /// The `rootstock-mainnet` preset: mainnet cap, the documented minimum
    /// cumulative difficulty ([`MAINNET_MIN_CUMULATIVE_DIFFICULTY`]), real
    /// PoW, Rootstock's Bridge address, Bitcoin mainnet.
    pub fn rootstock_mainnet(checkpoint: [u8; 32], federation: Federation) -> HsmParams {
        HsmParams {
            platform: "fika-powhsm".into(),
            checkpoint,
            pow_mode: PowMode::Real,
            block_difficulty_cap: MAINNET_BLOCK_DIFFICULTY_CAP,
            minimum_cumulative_difficulty: MAINNET_MIN_CUMULATIVE_DIFFICULTY,
            bridge_address: BRIDGE_ADDRESS,
            federation,
            btc_network: BtcNetwork::Bitcoin,
        }
    }

    /// A regtest preset: cap 20 (Rootstock regtest's), simulated PoW, a
    /// minimum cumulative difficulty of `min_cumulative`, Bitcoin regtest.
    pub fn regtest(checkpoint: [u8; 32], federation: Federation, min_cumulative: U256) -> HsmParams {
        HsmParams {
            platform: "fika-powhsm".into(),
            checkpoint,
            pow_mode: PowMode::Simulated,
            block_difficulty_cap: REGTEST_BLOCK_DIFFICULTY_CAP,
            minimum_cumulative_difficulty: min_cumulative,
            bridge_address: BRIDGE_ADDRESS,
            federation,
            btc_network: BtcNetwork::Regtest,
        }
    }
}

/// The mid-state of an `advanceBlockchain` spread over several invocations.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct UpdatingState {
    /// Whether an advance is in progress.
    pub in_progress: bool,
    /// Whether the headers reached `newest_valid_block` (below it the PoW
    /// was checked before).
    pub already_validated: bool,
    /// Hash the next invocation's first header must have.
    pub next_expected_block: [u8; 32],
    /// Capped difficulty summed from the newest header down (it stops
    /// growing once the candidate best block is found).
    pub total_difficulty: U256,
    /// Whether the candidate best block was found.
    pub found_best_block: bool,
    /// The candidate best block.
    pub best_block: [u8; 32],
    /// The newest header of this advance.
    pub newest_valid_block: [u8; 32],
}

/// The device's view of the sidechain (rsk-powhsm's `blockchain_state`)
/// and the last transaction it signed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HsmState {
    /// The best block with sufficient confirmations.
    pub best_block: [u8; 32],
    /// The newest block whose proof of work was checked.
    pub newest_valid_block: [u8; 32],
    /// The proven ancestor of `best_block` receipts are checked against
    /// (zero until set).
    pub ancestor_block: [u8; 32],
    /// The ancestor's receipts root (zero until set).
    pub ancestor_receipts_root: [u8; 32],
    /// An advance in progress.
    pub updating: UpdatingState,
    /// The last transaction signed, if any.
    pub last_signed_tx: Option<Txid>,
}

/// A command sent to the device.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HsmCommand {
    /// Feed sidechain headers, newest first (`advanceBlockchain`).
    AdvanceBlockchain {
        /// Complete headers (with merge-mining fields), newest → oldest.
        headers: Vec<SideHeader>,
    },
    /// Abandon an advance in progress (`resetAdvanceBlockchain`).
    ResetAdvanceBlockchain,
    /// Move the ancestor pointer (`updateAncestorBlock`).
    UpdateAncestor {
        /// Headers newest → oldest, the first being `best_block` or the
        /// current ancestor; the last becomes the ancestor.
        headers: Vec<SideHeader>,
    },
    /// Sign a peg-out input commanded by a receipt (`sign`).
    Sign {
        /// The unsigned peg-out transaction, as the Bridge hashed it.
        tx: Transaction,
        /// The input to sign.
        input: usize,
        /// The value of the federation output the input spends (BIP143).
        value: Amount,
        /// The sidechain receipt holding the `release_requested` log.
        receipt: Receipt,
        /// Its proof against the ancestor's receipts root.
        receipt_proof: MerkleProof,
        /// The federation whose output the input spends, when it is not the
        /// one the device was provisioned for (after a federation change:
        /// rsk-powhsm likewise takes the script with each request). The
        /// device must be a member, and for the P2SH-P2WSH form the input's
        /// scriptSig — which the transaction hash, and so the Bridge's
        /// `release_requested`, commits to — must push this federation's
        /// witness program.
        federation: Option<Arc<Federation>>,
    },
    /// Read the blockchain state (`blockchainState`).
    GetState,
    /// Read the parameters (`blockchainParameters`).
    GetParameters,
    /// Read the public key (`getPubKey`).
    GetPublicKey,
    /// Sign an attestation of the device's key and state.
    Attestation {
        /// A caller's challenge, for freshness.
        nonce: [u8; 32],
    },
}

/// What an [`HsmCommand::AdvanceBlockchain`] achieved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum AdvanceOutcome {
    /// The chain reached `best_block` with enough work: the state moved.
    Advanced {
        /// The new `best_block`.
        best_block: [u8; 32],
        /// The new `newest_valid_block`.
        newest_valid_block: [u8; 32],
    },
    /// The headers did not reach `best_block` yet: send the older ones,
    /// starting with `next_expected_block`.
    NeedMoreBlocks {
        /// Hash of the header the next invocation must start with.
        next_expected_block: [u8; 32],
        /// Capped difficulty summed so far.
        total_difficulty: U256,
    },
}

/// The device's answer to a command.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum HsmResponse {
    /// Answer to [`HsmCommand::AdvanceBlockchain`].
    Advance(AdvanceOutcome),
    /// Answer to [`HsmCommand::ResetAdvanceBlockchain`].
    Reset,
    /// Answer to [`HsmCommand::UpdateAncestor`].
    AncestorUpdated {
        /// The new ancestor.
        ancestor_block: [u8; 32],
        /// Its receipts root.
        ancestor_receipts_root: [u8; 32],
    },
    /// Answer to [`HsmCommand::Sign`]: a SIGHASH_ALL signature.
    Signature(ecdsa::Signature),
    /// Answer to [`HsmCommand::GetState`].
    State(Box<HsmState>),
    /// Answer to [`HsmCommand::GetParameters`].
    Parameters(Box<HsmParams>),
    /// Answer to [`HsmCommand::GetPublicKey`].
    PublicKey(PublicKey),
    /// Answer to [`HsmCommand::Attestation`].
    Attestation(Box<Attestation>),
}

/// Why the device refused a command. After any error the blockchain state is
/// as before the command, except that [`HsmError::NotEnoughWork`] keeps the
/// checked chain as `newest_valid_block`; an advance in progress is reset.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum HsmError {
    /// No headers were given.
    #[error("no block headers given")]
    NoHeaders,
    /// The first header does not continue the advance in progress.
    #[error("header {} does not continue the advance in progress, which expects {}", hex::encode(.got), hex::encode(.expected))]
    UnexpectedContinuation {
        /// The hash the advance in progress expects.
        expected: [u8; 32],
        /// The first header's hash.
        got: [u8; 32],
    },
    /// A header's parent is not the next header.
    #[error("header {index} has parent {}, but the next header is {}", hex::encode(.parent_hash), hex::encode(.next_hash))]
    DoesNotLink {
        /// Position of the header in the list.
        index: usize,
        /// Its parent hash.
        parent_hash: [u8; 32],
        /// Hash of the next (older) header.
        next_hash: [u8; 32],
    },
    /// A header's number is not the next header's plus one.
    #[error("header {index} has number {got}, expected {expected}")]
    BadNumber {
        /// Position of the header in the list.
        index: usize,
        /// The next header's number plus one.
        expected: u64,
        /// The header's number.
        got: u64,
    },
    /// A header's merge-mining proof is invalid.
    #[error("header {index} ({}): bad merge mining: {error}", hex::encode(.block))]
    BadMergeMining {
        /// Position of the header in the list.
        index: usize,
        /// Its hash.
        block: [u8; 32],
        /// What is wrong.
        error: MmError,
    },
    /// The headers reach `best_block` with less capped difficulty than the
    /// minimum cumulative difficulty.
    #[error("not enough work: capped cumulative difficulty {have}, need {need}")]
    NotEnoughWork {
        /// Capped difficulty of the headers above `best_block`.
        have: U256,
        /// The minimum cumulative difficulty.
        need: U256,
    },
    /// The cumulative difficulty overflowed 256 bits.
    #[error("cumulative difficulty overflows 256 bits")]
    DifficultyOverflow,
    /// The ancestor headers start neither at `best_block` nor at the
    /// current ancestor.
    #[error("header {} is neither the best block {} nor the ancestor {}", hex::encode(.tip), hex::encode(.best_block), hex::encode(.ancestor_block))]
    TipMismatch {
        /// The first header's hash.
        tip: [u8; 32],
        /// The device's `best_block`.
        best_block: [u8; 32],
        /// The device's `ancestor_block`.
        ancestor_block: [u8; 32],
    },
    /// No ancestor was set: there is no receipts root to prove against.
    #[error("no ancestor block set: update the ancestor first")]
    NoAncestor,
    /// The input index is out of range.
    #[error("input {index} out of range ({inputs} inputs)")]
    NoSuchInput {
        /// Requested input.
        index: usize,
        /// Number of inputs.
        inputs: usize,
    },
    /// The receipt is of a failed transaction.
    #[error("the receipt is of a failed transaction")]
    ReceiptFailed,
    /// The receipt holds no `release_requested` log from the Bridge.
    #[error("the receipt holds no release_requested log from the Bridge")]
    ReceiptMissingRelease,
    /// The receipt's `release_requested` logs name other transactions.
    #[error("release_requested names {}, not this transaction {}", .found.iter().map(hex::encode).collect::<Vec<_>>().join(", "), hex::encode(.expected))]
    WrongTxHash {
        /// This transaction's hash (display order).
        expected: [u8; 32],
        /// The hashes the logs name.
        found: Vec<[u8; 32]>,
    },
    /// The receipt's proof does not reduce to the ancestor's receipts root.
    #[error("the receipt proof does not reduce to the ancestor's receipts root {}", hex::encode(.ancestor_receipts_root))]
    ProofMismatch {
        /// The device's `ancestor_receipts_root`.
        ancestor_receipts_root: [u8; 32],
    },
    /// The sighash cannot be computed.
    #[error("sighash: {0}")]
    Sighash(FederationError),
    /// The device's key is not a member of the federation it would sign
    /// for.
    #[error("the device key {0} is not a member of the federation")]
    NotAFederationMember(PublicKey),
    /// The platform identifier is longer than 255 bytes.
    #[error("platform identifier of {0} bytes, at most 255")]
    PlatformTooLong(usize),
    /// The input's scriptSig does not commit to the given federation's
    /// script.
    #[error("input {input} does not spend the given federation's script")]
    ScriptMismatch {
        /// The input.
        input: usize,
    },
}

/// A signed statement of the device: the platform, its public key, its
/// `best_block`, the last transaction it signed and the verifier's nonce.
///
/// It is signed by the device key itself: it proves possession of the key
/// and binds the state to it, not (as a vendor-endorsed attestation would)
/// that the key lives in genuine hardware.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Attestation {
    /// The platform identifier.
    pub platform: String,
    /// The device's public key.
    pub public_key: PublicKey,
    /// The device's `best_block`.
    pub best_block: [u8; 32],
    /// The last transaction the device signed.
    pub last_signed_tx: Option<Txid>,
    /// The verifier's nonce.
    pub nonce: [u8; 32],
    /// ECDSA signature by `public_key` over sha256 of [`Attestation::message`].
    pub signature: secp256k1::ecdsa::Signature,
}

impl Attestation {
    /// Domain separator of the message.
    pub const DOMAIN: &'static [u8] = b"fika/powhsm/attestation/v1";

    fn encode(
        platform: &str,
        public_key: &PublicKey,
        best_block: &[u8; 32],
        last_signed_tx: Option<&Txid>,
        nonce: &[u8; 32],
    ) -> Vec<u8> {
        let mut m = Vec::with_capacity(Self::DOMAIN.len() + platform.len() + 1 + 33 + 32 + 33 + 32);
        m.extend_from_slice(Self::DOMAIN);
        // The length fits: PowHsm::new refuses longer platform ids.
        m.push(u8::try_from(platform.len()).unwrap_or(u8::MAX));
        m.extend_from_slice(platform.as_bytes());
        m.extend_from_slice(&public_key.serialize());
        m.extend_from_slice(best_block);
        match last_signed_tx {
            Some(txid) => {
                m.push(1);
                m.extend_from_slice(&word_hash(txid));
            }
            None => {
                m.push(0);
                m.extend_from_slice(&[0u8; 32]);
            }
        }
        m.extend_from_slice(nonce);
        m
    }

    /// The signed message: [`Attestation::DOMAIN`] ‖ platform length (1
    /// byte) ‖ platform ‖ compressed public key (33) ‖ best block (32) ‖
    /// 0 or 1 ‖ last signed txid (32, display order; zeros if none) ‖ nonce
    /// (32).
    pub fn message(&self) -> Vec<u8> {
        Self::encode(
            &self.platform,
            &self.public_key,
            &self.best_block,
            self.last_signed_tx.as_ref(),
            &self.nonce,
        )
    }

    /// sha256 of [`Attestation::message`], the digest signed.
    pub fn digest(&self) -> Message {
        Message::from_digest(sha256::Hash::hash(&self.message()).to_byte_array())
    }

    /// Whether the signature is `public_key`'s over the message. A verifier
    /// must also check that `public_key` is the key it expects and that
    /// `nonce` is its own.
    pub fn verify<C: secp256k1::Verification>(&self, secp: &Secp256k1<C>) -> bool {
        secp.verify_ecdsa(&self.digest(), &self.signature, &self.public_key).is_ok()
    }
}

/// A PowHSM: a secret key reachable only through [`PowHsm::execute`].
pub struct PowHsm {
    secp: Secp256k1<All>,
    secret: SecretKey,
    public: PublicKey,
    params: HsmParams,
    state: HsmState,
}

impl fmt::Debug for PowHsm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PowHsm")
            .field("public_key", &self.public)
            .field("best_block", &hex::encode(self.state.best_block))
            .field("ancestor_block", &hex::encode(self.state.ancestor_block))
            .finish_non_exhaustive()
    }
}

impl Drop for PowHsm {
    fn drop(&mut self) {
        self.secret.non_secure_erase();
    }
}

impl PowHsm {
    /// A device provisioned with `secret` (the simulator's stand-in for
    /// on-device key generation: the caller should drop its copy) and burnt
    /// with `params`. Its blockchain state starts at the checkpoint. Fails if
    /// the key is not a member of `params.federation` or the platform
    /// identifier is too long.
    pub fn new(secret: SecretKey, params: HsmParams) -> Result<PowHsm, HsmError> {
        let secp = Secp256k1::new();
        let public = PublicKey::from_secret_key(&secp, &secret);
        if !params.federation.is_member(&public) {
            return Err(HsmError::NotAFederationMember(public));
        }
        if params.platform.len() > usize::from(u8::MAX) {
            return Err(HsmError::PlatformTooLong(params.platform.len()));
        }
        let state = HsmState {
            best_block: params.checkpoint,
            newest_valid_block: params.checkpoint,
            ancestor_block: [0u8; 32],
            ancestor_receipts_root: [0u8; 32],
            updating: UpdatingState::default(),
            last_signed_tx: None,
        };
        Ok(PowHsm { secp, secret, public, params, state })
    }

    /// Runs one command.
    pub fn execute(&mut self, command: HsmCommand) -> Result<HsmResponse, HsmError> {
        match command {
            HsmCommand::AdvanceBlockchain { headers } => {
                let result = self.advance(&headers);
                if result.is_err() {
                    self.state.updating = UpdatingState::default();
                }
                result.map(HsmResponse::Advance)
            }
            HsmCommand::ResetAdvanceBlockchain => {
                self.state.updating = UpdatingState::default();
                Ok(HsmResponse::Reset)
            }
            HsmCommand::UpdateAncestor { headers } => self.update_ancestor(&headers),
            HsmCommand::Sign { tx, input, value, receipt, receipt_proof, federation } => self
                .sign(&tx, input, value, &receipt, &receipt_proof, federation.as_deref())
                .map(HsmResponse::Signature),
            HsmCommand::GetState => Ok(HsmResponse::State(Box::new(self.state.clone()))),
            HsmCommand::GetParameters => Ok(HsmResponse::Parameters(Box::new(self.params.clone()))),
            HsmCommand::GetPublicKey => Ok(HsmResponse::PublicKey(self.public)),
            HsmCommand::Attestation { nonce } => Ok(HsmResponse::Attestation(Box::new(self.attest(nonce)))),
        }
    }

    /// One `advanceBlockchain` invocation; the caller resets the mid-state
    /// on error.
    fn advance(&mut self, headers: &[SideHeader]) -> Result<AdvanceOutcome, HsmError> {
        let Some(last) = headers.last() else {
            return Err(HsmError::NoHeaders);
        };
        let hashes: Vec<[u8; 32]> = headers.iter().map(SideHeader::hash).collect();
        let first_hash = hashes[0];
        let need = self.params.minimum_cumulative_difficulty;
        let cap = self.params.block_difficulty_cap;
        let u = &mut self.state.updating;
        if u.in_progress && first_hash != u.next_expected_block {
            return Err(HsmError::UnexpectedContinuation {
                expected: u.next_expected_block,
                got: first_hash,
            });
        }
        if !u.in_progress {
            *u = UpdatingState {
                in_progress: true,
                newest_valid_block: first_hash,
                ..UpdatingState::default()
            };
        }
        for (index, (header, hash)) in headers.iter().zip(&hashes).enumerate() {
            if let (Some(older), Some(older_hash)) = (headers.get(index + 1), hashes.get(index + 1)) {
                if header.parent_hash != *older_hash {
                    return Err(HsmError::DoesNotLink {
                        index,
                        parent_hash: header.parent_hash,
                        next_hash: *older_hash,
                    });
                }
                let expected = older.number.saturating_add(1);
                if header.number != expected {
                    return Err(HsmError::BadNumber { index, expected, got: header.number });
                }
            }
            if *hash == self.state.newest_valid_block {
                u.already_validated = true;
            }
            if !u.already_validated {
                verify_merge_mining(header, self.params.pow_mode, &difficulty_to_target(&header.difficulty))
                    .map_err(|error| HsmError::BadMergeMining { index, block: *hash, error })?;
            }
            if !u.found_best_block {
                let credit = header.difficulty.min(cap);
                u.total_difficulty =
                    u.total_difficulty.checked_add(credit).ok_or(HsmError::DifficultyOverflow)?;
                if u.total_difficulty >= need {
                    u.found_best_block = true;
                    u.best_block = *hash;
                }
            }
            if header.parent_hash == self.state.best_block {
                let done = std::mem::take(u);
                // The headers are checked down to best_block: they are
                // valid whatever their work.
                self.state.newest_valid_block = done.newest_valid_block;
                if !done.found_best_block {
                    return Err(HsmError::NotEnoughWork { have: done.total_difficulty, need });
                }
                self.state.best_block = done.best_block;
                return Ok(AdvanceOutcome::Advanced {
                    best_block: done.best_block,
                    newest_valid_block: done.newest_valid_block,
                });
            }
        }
        u.next_expected_block = last.parent_hash;
        Ok(AdvanceOutcome::NeedMoreBlocks {
            next_expected_block: u.next_expected_block,
            total_difficulty: u.total_difficulty,
        })
    }

    fn update_ancestor(&mut self, headers: &[SideHeader]) -> Result<HsmResponse, HsmError> {
        let (Some(first), Some(last)) = (headers.first(), headers.last()) else {
            return Err(HsmError::NoHeaders);
        };
        let tip = first.hash();
        if tip != self.state.best_block && tip != self.state.ancestor_block {
            return Err(HsmError::TipMismatch {
                tip,
                best_block: self.state.best_block,
                ancestor_block: self.state.ancestor_block,
            });
        }
        let mut last_hash = tip;
        for (index, pair) in headers.windows(2).enumerate() {
            let older_hash = pair[1].hash();
            if pair[0].parent_hash != older_hash {
                return Err(HsmError::DoesNotLink {
                    index,
                    parent_hash: pair[0].parent_hash,
                    next_hash: older_hash,
                });
            }
            last_hash = older_hash;
        }
        self.state.ancestor_block = last_hash;
        self.state.ancestor_receipts_root = last.receipts_root;
        Ok(HsmResponse::AncestorUpdated {
            ancestor_block: last_hash,
            ancestor_receipts_root: last.receipts_root,
        })
    }

    fn sign(
        &mut self,
        tx: &Transaction,
        input: usize,
        value: Amount,
        receipt: &Receipt,
        proof: &MerkleProof,
        federation: Option<&Federation>,
    ) -> Result<ecdsa::Signature, HsmError> {
        if self.state.ancestor_block == [0u8; 32] {
            return Err(HsmError::NoAncestor);
        }
        if input >= tx.input.len() {
            return Err(HsmError::NoSuchInput { index: input, inputs: tx.input.len() });
        }
        let txid = tx.compute_txid();
        let tx_hash = word_hash(&txid);
        check_release_requested(receipt, &self.params.bridge_address, &tx_hash)?;
        if !verify_receipt_proof(&self.state.ancestor_receipts_root, receipt, proof) {
            return Err(HsmError::ProofMismatch {
                ancestor_receipts_root: self.state.ancestor_receipts_root,
            });
        }
        let federation = match federation {
            None => &self.params.federation,
            Some(f) => {
                if !f.is_member(&self.public) {
                    return Err(HsmError::NotAFederationMember(self.public));
                }
                if f.form() == ScriptForm::P2shP2wshErp
                    && tx.input[input].script_sig != crate::pegout::unsigned_script_sig(f)
                {
                    return Err(HsmError::ScriptMismatch { input });
                }
                f
            }
        };
        let signature =
            federation.sign_input(&self.secp, tx, input, value, &self.secret).map_err(HsmError::Sighash)?;
        self.state.last_signed_tx = Some(txid);
        Ok(signature)
    }

    fn attest(&self, nonce: [u8; 32]) -> Attestation {
        let message = Attestation::encode(
            &self.params.platform,
            &self.public,
            &self.state.best_block,
            self.state.last_signed_tx.as_ref(),
            &nonce,
        );
        let digest = Message::from_digest(sha256::Hash::hash(&message).to_byte_array());
        Attestation {
            platform: self.params.platform.clone(),
            public_key: self.public,
            best_block: self.state.best_block,
            last_signed_tx: self.state.last_signed_tx,
            nonce,
            signature: self.secp.sign_ecdsa(&digest, &self.secret),
        }
    }
}

/// Checks that `receipt` succeeded and holds a `release_requested` log from
/// `bridge` (exactly three topics) naming `tx_hash` as topic 2.
fn check_release_requested(
    receipt: &Receipt,
    bridge: &SideAddress,
    tx_hash: &[u8; 32],
) -> Result<(), HsmError> {
    if !receipt.status {
        return Err(HsmError::ReceiptFailed);
    }
    let topic = release_requested_topic();
    let named: Vec<[u8; 32]> = receipt
        .logs
        .iter()
        .filter(|l| l.address == bridge.0 && l.topics.len() == 3 && l.topics[0] == topic)
        .map(|l| l.topics[2])
        .collect();
    if named.is_empty() {
        return Err(HsmError::ReceiptMissingRelease);
    }
    if !named.contains(tx_hash) {
        return Err(HsmError::WrongTxHash { expected: *tx_hash, found: named });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn preset_constants_are_the_documented_numbers() {
        assert_eq!(MAINNET_BLOCK_DIFFICULTY_CAP, U256::from(7_000_000_000_000_000_000_000u128));
        assert_eq!(TESTNET_BLOCK_DIFFICULTY_CAP, U256::from(1_000_000_000_000_000u128));
        assert_eq!(REGTEST_BLOCK_DIFFICULTY_CAP, U256::from(20u8));
        assert_eq!(
            MAINNET_MIN_CUMULATIVE_DIFFICULTY,
            min_cumulative_for(4_000, MAINNET_BLOCK_DIFFICULTY_CAP)
        );
    }

    #[test]
    fn release_requested_log_is_the_bridges() {
        // The log the HSM looks for is byte for byte the one the Bridge
        // emits (the precompile's logs come out at BRIDGE_ADDRESS).
        let txid = Txid::from_byte_array([7; 32]);
        let ours = release_requested_log(BRIDGE_ADDRESS, [9; 32], &txid, Amount::from_sat(123_456));
        let bridge = crate::abi::event_log(&crate::bridge::BridgeEvent::ReleaseRequested {
            rsk_tx_hash: [9; 32],
            btc_txid: txid,
            amount: Amount::from_sat(123_456),
        });
        assert_eq!(
            (ours.address, &ours.topics, &ours.data),
            (BRIDGE_ADDRESS.0, &bridge.topics, &bridge.data)
        );
    }

    #[test]
    fn release_requested_topic_is_keccak_of_the_signature() {
        assert_eq!(
            release_requested_topic(),
            crate::side::keccak256(b"release_requested(bytes32,bytes32,uint256)")
        );
    }
}
