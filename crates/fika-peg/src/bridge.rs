//! The Bridge's state and rules: its SPV view of Bitcoin, the federation
//! and its UTXOs, processed peg-ins, the locking cap, fees, RBTC accounting
//! and the refund queue — the whole state as one value.
//!
//! [`BridgeState`] is persistent: its maps are `imbl` ordered maps, so a
//! clone is O(1) and shares structure. A sidechain keeps one per block and
//! a sidechain reorganisation reverts the Bridge by taking the state of the
//! fork block. Everything is ordered (keys, insertion), nothing depends on a
//! hash order; [`BridgeState::digest`] is a keccak-256 of a canonical
//! encoding of the whole state.
//!
//! Methods carry Rootstock's names. The fund model is Rootstock's: the
//! Bridge starts with 21M RBTC and a peg-in transfers RBTC out of it
//! ([`Registration::credits`]); "locked" BTC is `21M − Bridge balance`.
//!
//! Peg-in rules (`registerBtcTransaction`, as in rskj's `BridgeSupport` after
//! RSKIP379/459):
//!
//! 1. not already processed; at least `pegin_confirmations` confirmations;
//!    the partial merkle tree proves the tx under the best-chain header at
//!    `height`; the tx pays at least one live federation output.
//!    Failing these is an error and changes nothing.
//! 2. every output to the federation ≥ `minimum_pegin_sat`, else rejected
//!    (`INVALID_AMOUNT`) and not refunded;
//! 3. a malformed v1 payload is rejected (`PEGIN_V1_INVALID_PAYLOAD`) and
//!    refunded to the sender if known;
//! 4. a legacy peg-in credits the sender's key's address (P2PKH,
//!    P2SH-P2WPKH, native P2WPKH if enabled); multisig senders are refunded
//!    (`LEGACY_PEGIN_MULTISIG_SENDER`); unknown senders are not
//!    (`LEGACY_PEGIN_UNDETERMINED_SENDER`); a v1 peg-in credits its
//!    destination;
//! 5. a peg-in that would take the locked amount over the locking cap is
//!    refunded (`PEGIN_CAP_SURPASSED`) to the v1 refund address or the
//!    sender, or not refunded if neither is known.
//!
//! Processed peg-ins (credited, refunded or not) are marked with the
//! sidechain block number ([`BridgeState::begin_block`]).
//!
//! A transaction spending an output reserved by a peg-out the Bridge created
//! is not a peg-in: if it is that peg-out (the same transaction up to its
//! scriptSigs and witnesses) and the peg-out was released, it is registered
//! back ([`PeginOutcome::Pegout`]); otherwise it is refused. The peg-out
//! half of the rules — requests, batches, signatures — is in
//! [`crate::pegout`].

use std::sync::Arc;

use bitcoin::block::Header;
use bitcoin::hashes::Hash;
use bitcoin::merkle_tree::PartialMerkleTree;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Address, Amount, BlockHash, OutPoint, ScriptBuf, Transaction, Txid};
use fika_btc::ChainParams;
use fika_btc::merkle::{MerkleError, verify_tx_inclusion};
use imbl::{OrdMap, Vector};
use thiserror::Error;
use tiny_keccak::{Hasher, Keccak};

use crate::btc_spv::{BtcSpv, Checkpoint, HeadersOutcome, SpvError};
use crate::fedchange::FedChangeState;
use crate::federation::Federation;
use crate::params::{PegParams, PegParamsError};
use crate::pegin::{SenderKind, parse_pegin_instructions, parse_sender};
use crate::pegout::{PegoutState, RejectedPegoutReason};
use crate::side::{SideAddress, WEI_PER_SAT, sat_to_wei};

/// An output the federation controls, as the Bridge records it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct FederationUtxo {
    /// The output.
    pub outpoint: OutPoint,
    /// Its value.
    pub value: Amount,
    /// Height of the Bitcoin block that holds it.
    pub height: u32,
}

/// Why a peg-in was rejected (Rootstock's `RejectedPeginReason`; the
/// discriminant is the event's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum RejectedPeginReason {
    /// The peg-in would take the locked amount over the locking cap.
    PeginCapSurpassed = 1,
    /// A legacy peg-in from a multisig sender.
    LegacyPeginMultisigSender = 2,
    /// A legacy peg-in whose sender cannot be determined.
    LegacyPeginUndeterminedSender = 3,
    /// A malformed peg-in v1 payload.
    PeginV1InvalidPayload = 4,
    /// An output to the federation below the minimum.
    InvalidAmount = 5,
}

impl RejectedPeginReason {
    /// The numeric code logged in `rejected_pegin`.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// Why a rejected peg-in is not refunded (Rootstock's
/// `NonRefundablePeginReason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum UnrefundablePeginReason {
    /// No sender address to refund to.
    LegacyPeginUndeterminedSender = 1,
    /// A v1 peg-in without a refund address (and no known sender).
    PeginV1RefundAddressNotSet = 2,
    /// Below the minimum: never refunded.
    InvalidAmount = 3,
}

impl UnrefundablePeginReason {
    /// The numeric code logged in `unrefundable_pegin`.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// An event the Bridge logs (encoded as an EVM log by
/// [`crate::abi::event_log`]).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum BridgeEvent {
    /// `pegin_btc(address indexed receiver, bytes32 indexed btcTxHash,
    /// int256 amount, int256 protocolVersion)`.
    PeginBtc {
        /// Who got the RBTC.
        receiver: SideAddress,
        /// The peg-in.
        btc_txid: Txid,
        /// Amount, in satoshis.
        amount: Amount,
        /// 0 (legacy) or 1 (v1).
        protocol_version: u8,
    },
    /// `rejected_pegin(bytes32 indexed btcTxHash, int256 reason)`.
    RejectedPegin {
        /// The peg-in.
        btc_txid: Txid,
        /// Why.
        reason: RejectedPeginReason,
    },
    /// `unrefundable_pegin(bytes32 indexed btcTxHash, int256 reason)`.
    UnrefundablePegin {
        /// The peg-in.
        btc_txid: Txid,
        /// Why.
        reason: UnrefundablePeginReason,
    },
    /// `release_request_received(address indexed sender, string
    /// btcDestinationAddress, uint256 amount)`: a queued peg-out request.
    ReleaseRequestReceived {
        /// Who sent the RBTC.
        sender: SideAddress,
        /// The destination, as a Bitcoin address string.
        btc_destination: String,
        /// The value sent, in wei.
        amount_wei: u128,
    },
    /// `release_request_rejected(address indexed sender, uint256 amount,
    /// int256 reason)`: a refused peg-out request (the value went back).
    ReleaseRequestRejected {
        /// Who sent the RBTC.
        sender: SideAddress,
        /// The value sent (and returned), in wei.
        amount_wei: u128,
        /// Why.
        reason: RejectedPegoutReason,
    },
    /// `update_collections(address sender)`.
    UpdateCollections {
        /// The caller.
        sender: SideAddress,
    },
    /// `release_requested(bytes32 indexed rskTxHash, bytes32 indexed
    /// btcTxHash, uint256 amount)`: a peg-out transaction was created.
    ReleaseRequested {
        /// The peg-out's key (the creating sidechain transaction).
        rsk_tx_hash: [u8; 32],
        /// The unsigned transaction's txid.
        btc_txid: Txid,
        /// The requested amount it serves, in satoshis.
        amount: Amount,
    },
    /// `batch_pegout_created(bytes32 indexed btcTxHash, bytes
    /// releaseRskTxHashes)`.
    BatchPegoutCreated {
        /// The batch's txid.
        btc_txid: Txid,
        /// The requests' sidechain transactions, concatenated in the log.
        rsk_tx_hashes: Vec<[u8; 32]>,
    },
    /// `pegout_transaction_created(bytes32 indexed btcTxHash, bytes
    /// utxoOutpointValues)`: the spent values, compact-size encoded.
    PegoutTransactionCreated {
        /// The txid.
        btc_txid: Txid,
        /// Values of the spent outputs, in input order.
        utxo_outpoint_values: Vec<Amount>,
    },
    /// `pegout_confirmed(bytes32 indexed btcTxHash, uint256
    /// pegoutCreationRskBlockNumber)`: enough sidechain confirmations, now
    /// waiting for signatures.
    PegoutConfirmed {
        /// The txid.
        btc_txid: Txid,
        /// Sidechain block of its creation.
        creation_block: u64,
    },
    /// `add_signature(bytes32 indexed releaseRskTxHash, address indexed
    /// federatorRskAddress, bytes federatorBtcPublicKey)`.
    AddSignature {
        /// The peg-out's key.
        rsk_tx_hash: [u8; 32],
        /// The member's sidechain address.
        federator: SideAddress,
        /// The member's key.
        federator_public_key: PublicKey,
    },
    /// `release_btc(bytes32 indexed releaseRskTxHash, bytes
    /// btcRawTransaction)`: the fully signed transaction.
    ReleaseBtc {
        /// The peg-out's key.
        rsk_tx_hash: [u8; 32],
        /// The signed transaction, consensus-encoded (with witnesses).
        raw_tx: Vec<u8>,
    },
    /// `commit_federation(bytes oldFederationBtcPublicKeys, string
    /// oldFederationBtcAddress, bytes newFederationBtcPublicKeys, string
    /// newFederationBtcAddress, int256 activationHeight)`: a new federation
    /// was committed (keys concatenated, compressed, in canonical order).
    CommitFederation {
        /// The active federation's keys.
        old_keys: Vec<PublicKey>,
        /// Its address.
        old_address: String,
        /// The new federation's keys.
        new_keys: Vec<PublicKey>,
        /// Its address.
        new_address: String,
        /// The sidechain block from which it is active.
        activation_height: u64,
    },
}

/// A rejected peg-in waiting to be paid back: its own federation outputs go
/// to `destination` through the peg-out machinery (which builds, confirms and
/// signs the Bitcoin transaction).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RefundRequest {
    /// The peg-in being refunded.
    pub btc_txid: Txid,
    /// Why it was rejected.
    pub reason: RejectedPeginReason,
    /// Where the refund goes.
    pub destination: ScriptBuf,
    /// Total of `utxos`.
    pub amount: Amount,
    /// The peg-in's outputs to the federation, spent by the refund.
    pub utxos: Vec<FederationUtxo>,
    /// Sidechain block in which the refund was queued.
    pub created_at_block: u64,
    /// The federation whose outputs `utxos` are (it signs the refund).
    pub federation: Arc<Federation>,
}

/// What happened to a registered peg-in.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PeginOutcome {
    /// RBTC was credited.
    Registered {
        /// Who got it.
        receiver: SideAddress,
        /// How much, in satoshis.
        amount: Amount,
        /// 0 (legacy) or 1 (v1).
        protocol_version: u8,
    },
    /// Rejected; a refund was queued.
    Refunded {
        /// Why.
        reason: RejectedPeginReason,
        /// Where the refund goes.
        destination: ScriptBuf,
        /// How much (before fees).
        amount: Amount,
    },
    /// Rejected; no refund.
    Rejected {
        /// Why.
        reason: RejectedPeginReason,
        /// Why there is no refund.
        unrefundable: UnrefundablePeginReason,
        /// The value left at the federation address, unaccounted.
        amount: Amount,
    },
    /// Not a peg-in: a released peg-out (or refund) transaction registered
    /// back from Bitcoin; the peg-out is done.
    Pegout {
        /// The peg-out's key.
        rsk_tx_hash: [u8; 32],
        /// The change that joined (or had joined) the federation's UTXOs.
        change: Option<Amount>,
    },
}

/// The result of a processed `registerBtcTransaction`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Registration {
    /// The Bitcoin transaction.
    pub btc_txid: Txid,
    /// What happened.
    pub outcome: PeginOutcome,
    /// Events logged, in order.
    pub events: Vec<BridgeEvent>,
    /// RBTC transfers out of the Bridge, in wei, for the sidechain to apply.
    pub credits: Vec<(SideAddress, u128)>,
}

/// A `registerBtcTransaction` that was not processed (nothing changed).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum RegisterError {
    /// Registration is restricted to federation members and the caller is
    /// not one.
    #[error("{0} may not register transactions (not a federation member)")]
    Unauthorized(SideAddress),
    /// The transaction does not decode or is not a valid transaction.
    #[error("bad transaction: {0}")]
    BadTransaction(String),
    /// Already processed.
    #[error("transaction {txid} was already processed in sidechain block {at_block}")]
    AlreadyProcessed {
        /// The transaction.
        txid: Txid,
        /// When.
        at_block: u64,
    },
    /// Too few confirmations.
    #[error(
        "transaction at height {height} has too few confirmations (best height {best_height}, {required} required)"
    )]
    NotEnoughConfirmations {
        /// The claimed height.
        height: u32,
        /// The view's best height.
        best_height: u32,
        /// Confirmations required.
        required: u32,
    },
    /// No best-chain header at that height (below the checkpoint).
    #[error("no best-chain header at height {height}")]
    HeightNotInView {
        /// The claimed height.
        height: u32,
    },
    /// The partial merkle tree does not decode or is malformed.
    #[error("bad partial merkle tree: {0}")]
    BadPartialMerkleTree(String),
    /// The tree does not contain the transaction.
    #[error("transaction {0} is not proven by the partial merkle tree")]
    NotInProof(Txid),
    /// The tree's root is not the merkle root of the best-chain header at
    /// `height`.
    #[error("merkle root of the proof for {txid} does not match best-chain block {block} at height {height}")]
    MerkleRootMismatch {
        /// The transaction.
        txid: Txid,
        /// The claimed height.
        height: u32,
        /// The best-chain block at that height.
        block: BlockHash,
    },
    /// No output pays a live federation.
    #[error("transaction {0} pays no federation output: not a peg-in")]
    NotAPegin(Txid),
    /// The transaction spends a federation UTXO but is not the Bridge's
    /// peg-out of it.
    #[error("transaction {txid} spends federation output {outpoint} but is not the Bridge's peg-out of it")]
    SpendsFederationUtxo {
        /// The transaction.
        txid: Txid,
        /// The federation output it spends.
        outpoint: OutPoint,
    },
    /// The transaction is a peg-out the Bridge has not released yet.
    #[error("transaction {txid} is peg-out {} which is not released yet", hex::encode(.rsk_tx_hash))]
    PegoutNotReleased {
        /// The transaction.
        txid: Txid,
        /// The peg-out's key.
        rsk_tx_hash: [u8; 32],
    },
}

/// An error of a Bridge method (a reverted call).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BridgeError {
    /// The method is for federation members only.
    #[error("{caller} is not a federation member and may not call {method}")]
    Unauthorized {
        /// The caller.
        caller: SideAddress,
        /// The method.
        method: &'static str,
    },
    /// `getBtcBlockchainBlockHashAtDepth` with a depth out of range.
    #[error("depth {depth} out of range (0..={max})")]
    DepthOutOfRange {
        /// The requested depth.
        depth: i64,
        /// The deepest known.
        max: u32,
    },
    /// Bad calldata.
    #[error("bad calldata: {0}")]
    Abi(#[from] crate::abi::AbiError),
    /// A header in `receiveHeaders` is not 80 bytes of header.
    #[error("header {index} of receiveHeaders is malformed: {reason}")]
    BadHeader {
        /// Its index in the call.
        index: usize,
        /// What is wrong.
        reason: String,
    },
    /// The method does not accept value.
    #[error("method {method} is not payable (value {value} wei)")]
    NonPayable {
        /// The method.
        method: &'static str,
        /// The value sent.
        value: u128,
    },
    /// The method exists in Rootstock but is not implemented here (for
    /// `releaseBtc` through [`BridgeState::call`], which lacks the signer's
    /// key: use [`BridgeState::call_with_env`]).
    #[error("method {0} is not implemented")]
    NotImplemented(&'static str),
    /// A peg-out request from an externally owned account without the
    /// signer's public key.
    #[error("releaseBtc needs the transaction signer's public key")]
    MissingSignerKey,
    /// The signer's public key is not the caller's.
    #[error("the signer's public key does not belong to {caller}")]
    SignerKeyMismatch {
        /// The caller.
        caller: SideAddress,
    },
    /// A value the Bridge cannot have received (its balance would exceed
    /// the initial 21M).
    #[error("value {value} wei would take the bridge above its initial balance")]
    ValueTooLarge {
        /// The value.
        value: u128,
    },
    /// A malformed argument (a public key or signature that does not parse,
    /// an empty signature list).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
}

/// An error building a [`BridgeState`].
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum BridgeInitError {
    /// Bad peg parameters.
    #[error(transparent)]
    Params(#[from] PegParamsError),
    /// Bad checkpoint.
    #[error(transparent)]
    Spv(#[from] SpvError),
}

/// A broken conservation law.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum ConservationError {
    /// The Bridge's RBTC balance exceeds what it started with.
    #[error("bridge balance {balance_wei} wei exceeds the initial {max_wei} wei")]
    BalanceAboveMax {
        /// The balance.
        balance_wei: u128,
        /// The initial balance.
        max_wei: u128,
    },
    /// RBTC out of the Bridge ≠ RBTC credited by peg-ins and burned, less
    /// what peg-out requests brought back.
    #[error("RBTC out of the bridge is {out_wei} wei but the peg accounts for {credited_wei} wei")]
    BalanceMismatch {
        /// `max − balance`.
        out_wei: u128,
        /// Credited by peg-ins + burned − locked back by peg-out requests
        /// (0 if negative).
        credited_wei: u128,
    },
    /// BTC at the federation ≠ RBTC minted plus what peg-outs still owe.
    #[error("the federation holds {utxo_sat} sat but owes {credited_sat} sat (minted + owed to peg-outs)")]
    UtxoMismatch {
        /// Available UTXOs plus the change of peg-outs whose change has not
        /// joined them yet (0 if negative).
        utxo_sat: u64,
        /// RBTC minted (credited + burned − locked back) plus queued
        /// requests (0 if negative).
        credited_sat: u64,
    },
    /// A peg-out record is inconsistent with its transaction or the UTXO
    /// set.
    #[error("peg-out {}: {reason}", hex::encode(.rsk_tx_hash))]
    PegoutMismatch {
        /// The peg-out's key.
        rsk_tx_hash: [u8; 32],
        /// What is wrong.
        reason: String,
    },
    /// A refund's amount ≠ its UTXOs.
    #[error("refund of {txid} claims {amount_sat} sat but its UTXOs hold {utxo_sat} sat")]
    RefundMismatch {
        /// The refunded peg-in.
        txid: Txid,
        /// The refund's amount.
        amount_sat: u64,
        /// Its UTXOs' total.
        utxo_sat: u64,
    },
}

/// The Bridge: all of its state as one persistent value.
#[derive(Clone, Debug)]
pub struct BridgeState {
    pub(crate) params: Arc<PegParams>,
    spv: BtcSpv,
    pub(crate) federation: Arc<Federation>,
    pub(crate) utxos: OrdMap<OutPoint, FederationUtxo>,
    pub(crate) processed: OrdMap<Txid, u64>,
    locking_cap_sat: u64,
    pub(crate) fee_per_kb_sat: u64,
    pub(crate) balance_wei: u128,
    pub(crate) pegged_in_sat: u64,
    unrefunded_sat: u64,
    pub(crate) refunds: Vector<RefundRequest>,
    pub(crate) block_number: u64,
    pub(crate) pegout: PegoutState,
    pub(crate) fedchange: FedChangeState,
}

impl BridgeState {
    /// A fresh Bridge: the SPV view at `checkpoint` of a Bitcoin chain with
    /// `btc` parameters, `federation` active, the Bridge holding
    /// `max_rbtc_sat` (21M RBTC), cap and fee from `params`.
    pub fn new(
        params: PegParams,
        btc: ChainParams,
        checkpoint: Checkpoint,
        federation: Federation,
    ) -> Result<Self, BridgeInitError> {
        params.check()?;
        let spv = BtcSpv::new(btc, checkpoint)?;
        Ok(BridgeState {
            locking_cap_sat: params.initial_locking_cap_sat,
            fee_per_kb_sat: params.fee_per_kb_sat,
            balance_wei: sat_to_wei(params.max_rbtc_sat),
            params: Arc::new(params),
            spv,
            federation: Arc::new(federation),
            utxos: OrdMap::new(),
            processed: OrdMap::new(),
            pegged_in_sat: 0,
            unrefunded_sat: 0,
            refunds: Vector::new(),
            block_number: 0,
            pegout: PegoutState::default(),
            fedchange: FedChangeState::default(),
        })
    }

    /// Sets the sidechain block being executed (processed peg-ins and
    /// refunds are stamped with it). Call before the block's transactions.
    pub fn begin_block(&mut self, number: u64) {
        self.block_number = number;
        self.activate_due_federation();
    }

    /// The sidechain block being executed.
    pub fn block_number(&self) -> u64 {
        self.block_number
    }

    /// The peg parameters.
    pub fn params(&self) -> &PegParams {
        &self.params
    }

    /// The SPV view of Bitcoin.
    pub fn spv(&self) -> &BtcSpv {
        &self.spv
    }

    /// The active federation.
    pub fn federation(&self) -> &Federation {
        &self.federation
    }

    /// The active federation's UTXOs, by outpoint.
    pub fn utxos(&self) -> impl Iterator<Item = &FederationUtxo> {
        self.utxos.values()
    }

    /// Number of federation UTXOs.
    pub fn utxo_count(&self) -> usize {
        self.utxos.len()
    }

    /// Queued refunds, oldest first.
    pub fn refunds(&self) -> impl Iterator<Item = &RefundRequest> {
        self.refunds.iter()
    }

    /// The sidechain block in which `txid` was processed, if it was.
    pub fn processed_at(&self, txid: &Txid) -> Option<u64> {
        self.processed.get(txid).copied()
    }

    /// The Bridge's RBTC balance, in wei.
    pub fn bridge_balance_wei(&self) -> u128 {
        self.balance_wei
    }

    /// BTC locked in the federation as the Bridge reckons it
    /// (`21M − Bridge balance`), in satoshis (rounded down).
    pub fn locked(&self) -> Amount {
        let out = sat_to_wei(self.params.max_rbtc_sat).saturating_sub(self.balance_wei);
        Amount::from_sat(u64::try_from(out / WEI_PER_SAT).unwrap_or(u64::MAX))
    }

    /// Total RBTC credited by peg-ins.
    pub fn pegged_in(&self) -> Amount {
        Amount::from_sat(self.pegged_in_sat)
    }

    /// BTC sent to the federation by rejected, unrefunded peg-ins (not part
    /// of the federation's spendable funds).
    pub fn unrefunded(&self) -> Amount {
        Amount::from_sat(self.unrefunded_sat)
    }

    /// Whether `addr` is the sidechain address of a member of a live
    /// federation (the active or the retiring one).
    pub fn is_federation_member(&self, addr: &SideAddress) -> bool {
        self.federation.has_member_address(addr)
            || self.fedchange.retiring.as_ref().is_some_and(|r| r.federation.has_member_address(addr))
    }

    /// `receiveHeaders`: pegnatories feed Bitcoin headers to the SPV view.
    /// Bad headers are skipped and reported (as in Rootstock).
    pub fn receive_headers(
        &mut self,
        caller: SideAddress,
        headers: &[Header],
    ) -> Result<HeadersOutcome, BridgeError> {
        if !self.is_federation_member(&caller) {
            return Err(BridgeError::Unauthorized { caller, method: "receiveHeaders" });
        }
        Ok(self.spv.receive_headers(headers))
    }

    /// `registerBtcTransaction(tx, height, pmt)`: registers a peg-in whose
    /// transaction `tx_bytes` (consensus encoding, witness allowed) is in the
    /// best-chain Bitcoin block at `height`, proven by the partial merkle
    /// tree `pmt_bytes`. See the module docs for the rules.
    pub fn register_btc_transaction(
        &mut self,
        caller: SideAddress,
        tx_bytes: &[u8],
        height: u32,
        pmt_bytes: &[u8],
    ) -> Result<Registration, RegisterError> {
        if !self.params.register_btc_transaction_public && !self.is_federation_member(&caller) {
            return Err(RegisterError::Unauthorized(caller));
        }
        let tx: Transaction = bitcoin::consensus::deserialize(tx_bytes)
            .map_err(|e| RegisterError::BadTransaction(e.to_string()))?;
        fika_btc::validate::check_transaction(&tx, self.spv.params())
            .map_err(|e| RegisterError::BadTransaction(e.to_string()))?;
        let txid = tx.compute_txid();
        if let Some(at_block) = self.processed_at(&txid) {
            return Err(RegisterError::AlreadyProcessed { txid, at_block });
        }
        let best_height = self.spv.best_height();
        let required = self.params.pegin_confirmations;
        let confirmations = best_height.checked_sub(height).map_or(0, |d| d.saturating_add(1));
        if confirmations < required {
            return Err(RegisterError::NotEnoughConfirmations { height, best_height, required });
        }
        let header = *self.spv.header_at_height(height).ok_or(RegisterError::HeightNotInView { height })?;
        let pmt: PartialMerkleTree = bitcoin::consensus::deserialize(pmt_bytes)
            .map_err(|e| RegisterError::BadPartialMerkleTree(e.to_string()))?;
        verify_tx_inclusion(&header.header, &pmt, txid).map_err(|e| match e {
            MerkleError::RootMismatch { .. } => {
                RegisterError::MerkleRootMismatch { txid, height, block: header.hash }
            }
            MerkleError::NotIncluded(_) => RegisterError::NotInProof(txid),
            other => RegisterError::BadPartialMerkleTree(other.to_string()),
        })?;
        if let Some((spent, key)) = tx
            .input
            .iter()
            .find_map(|i| self.pegout.reserved.get(&i.previous_output).map(|k| (i.previous_output, *k)))
        {
            return self.register_pegout(&tx, txid, height, spent, key);
        }
        if let Some(spent) = tx.input.iter().find(|i| self.is_available_coin(&i.previous_output)) {
            return Err(RegisterError::SpendsFederationUtxo { txid, outpoint: spent.previous_output });
        }
        // Outputs to the active federation and, while it exists, to the
        // retiring one.
        let fed_utxos: Vec<(FederationUtxo, Arc<Federation>)> = tx
            .output
            .iter()
            .enumerate()
            .filter_map(|(vout, o)| {
                let (fed, _) = self.live_federation_of(&o.script_pubkey)?;
                let utxo =
                    FederationUtxo { outpoint: OutPoint::new(txid, vout as u32), value: o.value, height };
                Some((utxo, fed))
            })
            .collect();
        if fed_utxos.is_empty() {
            return Err(RegisterError::NotAPegin(txid));
        }
        Ok(self.process_pegin(&tx, txid, fed_utxos))
    }

    /// Applies the peg-in rules to a proven transaction paying `fed_utxos`
    /// (each with the live federation it pays).
    fn process_pegin(
        &mut self,
        tx: &Transaction,
        txid: Txid,
        fed_utxos: Vec<(FederationUtxo, Arc<Federation>)>,
    ) -> Registration {
        // check_transaction bounds every output and their sum by max money.
        let total = Amount::from_sat(fed_utxos.iter().map(|(u, _)| u.value.to_sat()).sum());
        let minimum = Amount::from_sat(self.params.minimum_pegin_sat);
        if fed_utxos.iter().any(|(u, _)| u.value < minimum) {
            return self.reject_unrefundable(
                txid,
                total,
                RejectedPeginReason::InvalidAmount,
                UnrefundablePeginReason::InvalidAmount,
            );
        }
        let mut sender = parse_sender(tx);
        if sender.kind == SenderKind::P2wpkh && !self.params.native_p2wpkh_sender {
            sender = crate::pegin::Sender { kind: SenderKind::Unknown, script: None, side_address: None };
        }
        match parse_pegin_instructions(tx) {
            Err(_) => match sender.script {
                Some(dest) => {
                    self.refund(txid, fed_utxos, total, RejectedPeginReason::PeginV1InvalidPayload, dest)
                }
                None => self.reject_unrefundable(
                    txid,
                    total,
                    RejectedPeginReason::PeginV1InvalidPayload,
                    UnrefundablePeginReason::LegacyPeginUndeterminedSender,
                ),
            },
            Ok(Some(v1)) => {
                let refund_to = v1.refund.or(sender.script);
                self.credit_within_cap(txid, fed_utxos, total, v1.destination, 1, refund_to)
            }
            Ok(None) => match (sender.kind, sender.side_address) {
                (SenderKind::P2pkh | SenderKind::P2shP2wpkh | SenderKind::P2wpkh, Some(receiver)) => {
                    self.credit_within_cap(txid, fed_utxos, total, receiver, 0, sender.script)
                }
                (kind, _) if kind.is_multisig() => match sender.script {
                    Some(dest) => self.refund(
                        txid,
                        fed_utxos,
                        total,
                        RejectedPeginReason::LegacyPeginMultisigSender,
                        dest,
                    ),
                    None => self.reject_unrefundable(
                        txid,
                        total,
                        RejectedPeginReason::LegacyPeginMultisigSender,
                        UnrefundablePeginReason::LegacyPeginUndeterminedSender,
                    ),
                },
                _ => self.reject_unrefundable(
                    txid,
                    total,
                    RejectedPeginReason::LegacyPeginUndeterminedSender,
                    UnrefundablePeginReason::LegacyPeginUndeterminedSender,
                ),
            },
        }
    }

    /// Credits `receiver` unless the locking cap would be surpassed, in which
    /// case the peg-in is refunded to `refund_to` (or not refunded).
    fn credit_within_cap(
        &mut self,
        txid: Txid,
        fed_utxos: Vec<(FederationUtxo, Arc<Federation>)>,
        total: Amount,
        receiver: SideAddress,
        protocol_version: u8,
        refund_to: Option<ScriptBuf>,
    ) -> Registration {
        let wei = sat_to_wei(total.to_sat());
        let over_cap = self.locked().to_sat().saturating_add(total.to_sat()) > self.locking_cap_sat;
        if over_cap || wei > self.balance_wei {
            let reason = RejectedPeginReason::PeginCapSurpassed;
            return match refund_to {
                Some(dest) => self.refund(txid, fed_utxos, total, reason, dest),
                None => {
                    let unrefundable = if protocol_version == 1 {
                        UnrefundablePeginReason::PeginV1RefundAddressNotSet
                    } else {
                        UnrefundablePeginReason::LegacyPeginUndeterminedSender
                    };
                    self.reject_unrefundable(txid, total, reason, unrefundable)
                }
            };
        }
        self.balance_wei -= wei;
        self.pegged_in_sat += total.to_sat();
        if fed_utxos.iter().any(|(_, fed)| *fed != self.federation) {
            self.fedchange.retiring_pegins += 1;
        }
        for (utxo, fed) in fed_utxos {
            self.add_federation_coin(utxo, fed.script_pubkey());
        }
        self.processed.insert(txid, self.block_number);
        Registration {
            btc_txid: txid,
            outcome: PeginOutcome::Registered { receiver, amount: total, protocol_version },
            events: vec![BridgeEvent::PeginBtc { receiver, btc_txid: txid, amount: total, protocol_version }],
            credits: vec![(receiver, wei)],
        }
    }

    /// Queues the refund of a rejected peg-in: one refund per federation it
    /// paid (each federation signs for its own coins).
    fn refund(
        &mut self,
        txid: Txid,
        utxos: Vec<(FederationUtxo, Arc<Federation>)>,
        amount: Amount,
        reason: RejectedPeginReason,
        destination: ScriptBuf,
    ) -> Registration {
        let mut by_federation: Vec<(Arc<Federation>, Vec<FederationUtxo>)> = Vec::new();
        for (u, fed) in utxos {
            match by_federation.iter_mut().find(|(f, _)| *f == fed) {
                Some((_, v)) => v.push(u),
                None => by_federation.push((fed, vec![u])),
            }
        }
        for (federation, utxos) in by_federation {
            let part = Amount::from_sat(utxos.iter().map(|u| u.value.to_sat()).sum());
            self.refunds.push_back(RefundRequest {
                btc_txid: txid,
                reason,
                destination: destination.clone(),
                amount: part,
                utxos,
                created_at_block: self.block_number,
                federation,
            });
        }
        self.processed.insert(txid, self.block_number);
        Registration {
            btc_txid: txid,
            outcome: PeginOutcome::Refunded { reason, destination, amount },
            events: vec![BridgeEvent::RejectedPegin { btc_txid: txid, reason }],
            credits: Vec::new(),
        }
    }

    fn reject_unrefundable(
        &mut self,
        txid: Txid,
        amount: Amount,
        reason: RejectedPeginReason,
        unrefundable: UnrefundablePeginReason,
    ) -> Registration {
        self.unrefunded_sat = self.unrefunded_sat.saturating_add(amount.to_sat());
        self.processed.insert(txid, self.block_number);
        Registration {
            btc_txid: txid,
            outcome: PeginOutcome::Rejected { reason, unrefundable, amount },
            events: vec![
                BridgeEvent::RejectedPegin { btc_txid: txid, reason },
                BridgeEvent::UnrefundablePegin { btc_txid: txid, reason: unrefundable },
            ],
            credits: Vec::new(),
        }
    }

    /// `getBtcBlockchainBestChainHeight`.
    pub fn get_btc_blockchain_best_chain_height(&self) -> u32 {
        self.spv.best_height()
    }

    /// `getBtcBlockchainBlockHashAtDepth`: the best-chain block `depth` below
    /// the tip; depths below 0 or beyond the checkpoint are errors.
    pub fn get_btc_blockchain_block_hash_at_depth(&self, depth: i64) -> Result<BlockHash, BridgeError> {
        let max = self.spv.best_height() - self.spv.checkpoint_height();
        u32::try_from(depth)
            .ok()
            .and_then(|d| self.spv.hash_at_depth(d))
            .ok_or(BridgeError::DepthOutOfRange { depth, max })
    }

    /// `getFederationAddress`.
    pub fn get_federation_address(&self) -> Address {
        self.federation.address(self.params.btc_network)
    }

    /// `getFederationSize`.
    pub fn get_federation_size(&self) -> usize {
        self.federation.size()
    }

    /// `getFederationThreshold`.
    pub fn get_federation_threshold(&self) -> usize {
        self.federation.threshold()
    }

    /// `getMinimumLockTxValue`: the minimum peg-in.
    pub fn get_minimum_lock_tx_value(&self) -> Amount {
        Amount::from_sat(self.params.minimum_pegin_sat)
    }

    /// `getLockingCap`.
    pub fn get_locking_cap(&self) -> Amount {
        Amount::from_sat(self.locking_cap_sat)
    }

    /// `getFeePerKb`.
    pub fn get_fee_per_kb(&self) -> Amount {
        Amount::from_sat(self.fee_per_kb_sat)
    }

    /// The peg's conservation law (see also [`crate::pegout`]):
    ///
    /// * RBTC out of the Bridge (`21M − balance`) equals RBTC credited by
    ///   peg-ins, plus RBTC burned, minus RBTC locked back by accepted
    ///   peg-out requests (whose sub-satoshi remainders stay in the Bridge);
    /// * BTC at the federation (available UTXOs and the inputs reserved by
    ///   peg-outs not yet released) equals RBTC minted plus RBTC locked back
    ///   but still owed in BTC (queued requests, what unreleased peg-outs pay
    ///   out) plus change in flight; checked as: available UTXOs and the
    ///   change of peg-outs whose change has not joined them equal minted
    ///   and queued requests;
    /// * every peg-out's inputs equal its outputs and fee, its inputs are
    ///   reserved for it and not selectable, and a batch pays exactly its
    ///   requests;
    /// * every queued refund carries exactly its UTXOs' value.
    pub fn conservation(&self) -> Result<(), ConservationError> {
        let max_wei = sat_to_wei(self.params.max_rbtc_sat);
        if self.balance_wei > max_wei {
            return Err(ConservationError::BalanceAboveMax { balance_wei: self.balance_wei, max_wei });
        }
        let out_wei = max_wei - self.balance_wei;
        let expected_out = sat_to_wei(self.pegged_in_sat) as i128
            + sat_to_wei(self.pegout.burned_sat) as i128
            - sat_to_wei(self.pegout.requested_sat) as i128
            - self.pegout.remainder_wei as i128;
        if out_wei as i128 != expected_out {
            return Err(ConservationError::BalanceMismatch {
                out_wei,
                credited_wei: u128::try_from(expected_out).unwrap_or(0),
            });
        }
        let (fed_side, owed) = self
            .pegout_balances()
            .map_err(|(rsk_tx_hash, reason)| ConservationError::PegoutMismatch { rsk_tx_hash, reason })?;
        if fed_side != owed {
            return Err(ConservationError::UtxoMismatch {
                utxo_sat: u64::try_from(fed_side).unwrap_or(0),
                credited_sat: u64::try_from(owed).unwrap_or(0),
            });
        }
        for r in &self.refunds {
            let utxo_sat = r.utxos.iter().fold(0u64, |acc, u| acc.saturating_add(u.value.to_sat()));
            if utxo_sat != r.amount.to_sat() {
                return Err(ConservationError::RefundMismatch {
                    txid: r.btc_txid,
                    amount_sat: r.amount.to_sat(),
                    utxo_sat,
                });
            }
        }
        Ok(())
    }

    /// keccak-256 of a canonical encoding of the whole state (parameters,
    /// federation, every SPV header, best chain, UTXOs, processed peg-ins,
    /// refunds, cap, fee, balances, block number). O(state size).
    pub fn digest(&self) -> [u8; 32] {
        let mut h = Keccak::v256();
        let mut put = |bytes: &[u8]| h.update(bytes);
        put(b"fika-peg/bridge/v1");
        put(serde_json::to_string(&*self.params).unwrap_or_default().as_bytes());
        let fed = &self.federation;
        put(&(fed.redeem_script().len() as u64).to_be_bytes());
        put(fed.redeem_script().as_bytes());
        put(&(self.spv.len() as u64).to_be_bytes());
        for s in self.spv.iter() {
            put(s.hash.as_byte_array());
            put(&s.height.to_be_bytes());
            put(&s.chain_work);
        }
        put(self.spv.best_hash().as_byte_array());
        put(&(self.utxos.len() as u64).to_be_bytes());
        for u in self.utxos.values() {
            put(u.outpoint.txid.as_byte_array());
            put(&u.outpoint.vout.to_be_bytes());
            put(&u.value.to_sat().to_be_bytes());
            put(&u.height.to_be_bytes());
        }
        put(&(self.processed.len() as u64).to_be_bytes());
        for (txid, block) in &self.processed {
            put(txid.as_byte_array());
            put(&block.to_be_bytes());
        }
        put(&(self.refunds.len() as u64).to_be_bytes());
        for r in &self.refunds {
            put(r.btc_txid.as_byte_array());
            put(&[r.reason.code()]);
            put(&(r.destination.len() as u64).to_be_bytes());
            put(r.destination.as_bytes());
            put(&r.amount.to_sat().to_be_bytes());
            put(&r.created_at_block.to_be_bytes());
            put(r.federation.redeem_script().as_bytes());
            put(&(r.utxos.len() as u64).to_be_bytes());
            for u in &r.utxos {
                put(u.outpoint.txid.as_byte_array());
                put(&u.outpoint.vout.to_be_bytes());
                put(&u.value.to_sat().to_be_bytes());
                put(&u.height.to_be_bytes());
            }
        }
        put(&self.locking_cap_sat.to_be_bytes());
        put(&self.fee_per_kb_sat.to_be_bytes());
        put(&self.balance_wei.to_be_bytes());
        put(&self.pegged_in_sat.to_be_bytes());
        put(&self.unrefunded_sat.to_be_bytes());
        put(&self.block_number.to_be_bytes());
        self.pegout.digest_into(&mut put);
        self.fedchange.digest_into(&mut put);
        let mut out = [0u8; 32];
        h.finalize(&mut out);
        out
    }
}
