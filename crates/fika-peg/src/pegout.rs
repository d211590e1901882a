//! The peg-out half of the Bridge: peg-out requests (`releaseBtc`), batching
//! into Bitcoin transactions (`updateCollections`), the sidechain
//! confirmation wait, the federation's signatures (`addSignature`), the
//! release of the signed transaction, and its registration back from
//! Bitcoin — Rootstock's rules (`BridgeSupport`, RSKIP185/219/271/326/375/379),
//! sans-IO, every number from [`PegParams`](crate::PegParams).
//!
//! # Lifecycle
//!
//! 1. **Request** ([`BridgeState::release_btc`]): a plain value transfer to
//!    the Bridge from an externally owned account. The RBTC is locked back
//!    at once (the Bridge balance grows). The destination is the P2PKH of
//!    the public key that signed the sidechain transaction. A contract
//!    caller (`CALLER_CONTRACT`), a value below
//!    `max(minimum_pegout_sat, required)` where
//!    `required = fee + fee · minimum_pegout_value_percentage_after_fee / 100`
//!    and `fee = fee_per_kb · size(2 inputs, 2 outputs) / 1000`
//!    (`FEE_ABOVE_VALUE` when the fee bound is the larger, `LOW_AMOUNT`
//!    otherwise), are rejected and the whole value is transferred back
//!    (`release_request_rejected`; for `CALLER_CONTRACT` too, as
//!    `powpeg.md` states — current rskj only logs that one); otherwise the
//!    request is queued (`release_request_received`, amount in wei).
//! 2. **Batch** ([`BridgeState::update_collections`]): when the block number
//!    reaches `next_pegout_height` and the federation's available balance
//!    covers the whole queue, the queue becomes one Bitcoin transaction (see
//!    *Building* below). If the transaction's estimated virtual size exceeds
//!    `max_pegout_tx_size`, the first half of the list is tried, and so on;
//!    the rest stays queued and is batched at the next call. Once the queue
//!    is empty, `next_pegout_height = block + pegout_batch_interval_blocks`.
//!    Logs: `release_requested`, `pegout_transaction_created`,
//!    `batch_pegout_created`. Queued refunds of rejected peg-ins become one
//!    transaction each (their own UTXOs to the refund address, minus the
//!    fee) in every call, into the same queue.
//! 3. **Confirmations**: each `update_collections` moves at most one
//!    peg-out, the first created with `block − created ≥
//!    pegout_confirmations`, to "waiting for signatures" (`pegout_confirmed`,
//!    Rootstock's event for this step since RSKIP326). Rootstock picks the
//!    first in a legacy hash-set order; here it is creation order.
//! 4. **Signatures** ([`BridgeState::add_signature`]): a member sends one
//!    SIGHASH_ALL signature per input, each checked against the input's
//!    sighash over the federation's script (`add_signature`). When `M`
//!    distinct members have signed, the Bridge assembles the spending data of
//!    every input and logs the fully signed transaction (`release_btc`).
//! 5. **Registration** (`registerBtcTransaction` of the peg-out transaction,
//!    with the usual confirmations and merkle proof): the peg-out is done;
//!    its change output joins the federation's UTXOs (or already did at
//!    release with [`PegParams::pegout_change_on_release`](crate::PegParams::pegout_change_on_release)).
//!    Rootstock logs no event here.
//!
//! # Building
//!
//! Deterministic, as Rootstock's `ReleaseTransactionBuilder` with
//! `recipientsPayFees`:
//!
//! * UTXOs sorted by (parent txid as a big integer — display byte order —,
//!   output index), taken in order until their sum reaches the requested
//!   total; value and age are ignored;
//! * version 2, lock time 0, inputs in that order with sequence `0xffffffff`
//!   (the P2SH-P2WSH form's scriptSig — the push of the witness program — is
//!   already set, so the unsigned txid is the final txid); one output per
//!   request, in queue order, paying its P2PKH; the change, if any, last, to
//!   the active federation;
//! * fee = `fee_per_kb · vsize / 1000` where vsize is the virtual size of
//!   the transaction with every input carrying `M` 72-byte placeholder
//!   signatures (an upper bound: a low-S DER signature and its sighash byte
//!   take at most 72 bytes); the fee is split equally among the requested
//!   outputs, the remainder taken from the first;
//! * a change below Bitcoin Core's dust threshold (3 sat/vB) is raised to it
//!   from the first recipient, and the Bridge burns as much RBTC (a transfer
//!   to [`BURN_ADDRESS`]) so that the federation's surplus stays backed
//!   (Rootstock's `adjustBalancesIfChangeOutputWasDust`); a recipient output
//!   left below its dust threshold fails the build (the requests stay
//!   queued).
//!
//! # Conservation
//!
//! [`BridgeState::conservation`] checks, besides the peg-in laws:
//!
//! * RBTC out of the Bridge equals what peg-ins credited plus what was
//!   burned minus what accepted peg-out requests locked back (in wei; the
//!   sub-satoshi remainders of requests stay in the Bridge);
//! * BTC at the federation (available UTXOs and the inputs reserved by
//!   peg-outs not yet released) equals RBTC minted (`21M − balance`, in
//!   satoshis) plus RBTC locked back but still owed in BTC (queued requests
//!   and what unreleased peg-outs pay out: recipients and fee) plus the
//!   change in flight of released peg-outs. Subtracting what each peg-out
//!   pays out, this reads: available UTXOs plus the change of every peg-out
//!   whose change has not yet joined them equals minted plus queued.

use std::sync::Arc;

use bitcoin::absolute::LockTime;
use bitcoin::ecdsa;
use bitcoin::hashes::Hash;
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{PublicKey, Secp256k1};
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::transaction::Version;
use bitcoin::{Address, Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use fika_side::BlockEnvInfo;
use imbl::{OrdMap, Vector};
use thiserror::Error;

use crate::bridge::{
    BridgeError, BridgeEvent, BridgeState, FederationUtxo, PeginOutcome, RefundRequest, RegisterError,
    Registration, RejectedPeginReason,
};
use crate::federation::{Federation, ScriptForm, SpendBranch, set_spend_data};
use crate::side::{SideAddress, WEI_PER_SAT, keccak256, sat_to_wei};

/// Where the Bridge sends the RBTC it burns to keep the federation's dust
/// surplus backed (`0x0000000000000000000000000000000000000000`).
pub const BURN_ADDRESS: SideAddress = SideAddress::ZERO;

/// Size of a placeholder signature in fee estimates: DER (at most 71 bytes
/// for a low-S signature) plus the sighash byte.
pub const PLACEHOLDER_SIGNATURE_SIZE: usize = 72;

/// The value of the extra request [`BridgeState::get_estimated_fees_for_next_pegout_event`]
/// simulates (1 BTC, as Rootstock).
pub const ESTIMATE_EXTRA_REQUEST: Amount = Amount::from_sat(100_000_000);

/// Why a peg-out request was rejected (Rootstock's `RejectedPegoutReason`;
/// the discriminant is the event's `reason`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum RejectedPegoutReason {
    /// Below `minimum_pegout_sat` (the larger bound).
    LowAmount = 1,
    /// Sent by a contract: no public key to derive a Bitcoin address from.
    CallerContract = 2,
    /// Not enough left after the estimated fee (the larger bound).
    FeeAboveValue = 3,
}

impl RejectedPegoutReason {
    /// The numeric code logged in `release_request_rejected`.
    pub fn code(self) -> u8 {
        self as u8
    }
}

/// What the Bridge learns of the sidechain transaction that called it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TxOrigin {
    /// `tx.origin`: the transaction's signer. A caller different from it is
    /// a contract.
    pub address: SideAddress,
    /// The signer's public key (its P2PKH is a peg-out's destination).
    pub public_key: Option<PublicKey>,
    /// The sidechain transaction's hash; `None` outside a transaction (the
    /// Bridge then derives unique keys).
    pub tx_hash: Option<[u8; 32]>,
}

impl TxOrigin {
    /// A transaction `tx_hash` signed by `public_key` calling the Bridge
    /// directly.
    pub fn signer(public_key: PublicKey, tx_hash: [u8; 32]) -> Self {
        TxOrigin {
            address: SideAddress::from_public_key(&public_key),
            public_key: Some(public_key),
            tx_hash: Some(tx_hash),
        }
    }

    /// The origin a sidechain passes in its block environment
    /// (`tx_origin`, `tx_origin_pubkey`, `tx_hash`; a zero hash means none).
    /// A key that does not parse is treated as absent.
    pub fn from_block_env(env: &BlockEnvInfo) -> Self {
        TxOrigin {
            address: SideAddress(env.tx_origin),
            public_key: env.tx_origin_pubkey.and_then(|k| PublicKey::from_slice(&k).ok()),
            tx_hash: (env.tx_hash != [0u8; 32]).then_some(env.tx_hash),
        }
    }
}

/// A queued peg-out request (Rootstock's `ReleaseRequestQueue.Entry`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PegoutRequest {
    /// The sidechain transaction that made it.
    pub rsk_tx_hash: [u8; 32],
    /// Who sent the RBTC.
    pub sender: SideAddress,
    /// The P2PKH of the signer's key.
    pub destination: ScriptBuf,
    /// The value, in satoshis (the wei value rounded down).
    pub amount: Amount,
    /// Sidechain block of the request.
    pub created_at_block: u64,
}

/// What a peg-out transaction pays.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PegoutKind {
    /// A batch of peg-out requests from the federation's UTXOs.
    Batch {
        /// The requests' sidechain transactions, in output order.
        requests: Vec<[u8; 32]>,
        /// Their total (what the recipients, the fee and any dust raise
        /// come from).
        requested: Amount,
        /// How much the first recipient gave to lift a dust change (burned
        /// as RBTC).
        dust_raise: Amount,
    },
    /// A refund of a rejected peg-in from its own outputs.
    Refund {
        /// The refunded peg-in.
        pegin_txid: Txid,
        /// Why it was rejected.
        reason: RejectedPeginReason,
    },
    /// A migration of a retiring federation's coins to the active
    /// federation (see [`crate::fedchange`]); its single output, the
    /// active federation's new coin, is recorded as the change.
    Migration,
}

/// Where a peg-out stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum PegoutStatus {
    /// Created; waiting `pegout_confirmations` sidechain blocks.
    WaitingForConfirmations,
    /// Confirmed on the sidechain; members are signing.
    WaitingForSignatures {
        /// Sidechain block in which it was moved here.
        since_block: u64,
    },
    /// Fully signed and logged (`release_btc`); waiting to be registered
    /// back from Bitcoin.
    Released {
        /// Sidechain block of the release.
        at_block: u64,
        /// The signed transaction's txid (differs from the unsigned one for
        /// the legacy P2SH forms).
        signed_txid: Txid,
    },
}

/// A peg-out transaction the Bridge created.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pegout {
    /// Its key: the sidechain transaction that created it (the
    /// `updateCollections` of a batch), as `addSignature` names it.
    pub rsk_tx_hash: [u8; 32],
    /// What it pays.
    pub kind: PegoutKind,
    /// The unsigned transaction (what members sign).
    pub tx: Transaction,
    /// Its txid (`btcTxHash` of the events).
    pub btc_txid: Txid,
    /// The outputs it spends, in input order.
    pub inputs: Vec<FederationUtxo>,
    /// Index of the change output, if any.
    pub change: Option<u32>,
    /// Its fee.
    pub fee: Amount,
    /// Sidechain block of creation.
    pub created_at_block: u64,
    /// Where it stands.
    pub status: PegoutStatus,
    /// Whether its change output is already among the federation's UTXOs.
    pub change_added: bool,
    /// Members who signed, in signing order, with one signature per input.
    pub signatures: Vec<(PublicKey, Vec<bitcoin::secp256k1::ecdsa::Signature>)>,
    /// The federation whose coins it spends: its members sign it, its
    /// script enters every sighash.
    pub federation: Arc<Federation>,
}

impl Pegout {
    /// The values of the spent outputs, in input order (what a signer needs
    /// for the BIP143 sighash).
    pub fn input_values(&self) -> Vec<Amount> {
        self.inputs.iter().map(|u| u.value).collect()
    }

    /// Total of the inputs.
    pub fn total_in(&self) -> Amount {
        Amount::from_sat(self.inputs.iter().map(|u| u.value.to_sat()).sum())
    }

    /// Value of the change output (zero if none).
    pub fn change_value(&self) -> Amount {
        self.change.and_then(|i| self.tx.output.get(i as usize)).map_or(Amount::ZERO, |o| o.value)
    }

    /// What leaves the federation: the outputs other than the change, plus
    /// the fee.
    pub fn paid_out(&self) -> Amount {
        self.total_in() - self.change_value()
    }

    /// The members who signed.
    pub fn signers(&self) -> impl Iterator<Item = &PublicKey> {
        self.signatures.iter().map(|(k, _)| k)
    }
}

/// The peg-out part of the Bridge's state.
#[derive(Clone, Debug, Default)]
pub(crate) struct PegoutState {
    /// Queued requests, oldest first.
    pub(crate) requests: Vector<PegoutRequest>,
    /// Every peg-out not yet registered back, by key.
    pub(crate) pegouts: OrdMap<[u8; 32], Pegout>,
    /// Keys of the peg-outs waiting for confirmations, in creation order.
    pub(crate) confirmation_queue: Vector<[u8; 32]>,
    /// Outputs spent by a peg-out not yet registered back → its key.
    pub(crate) reserved: OrdMap<OutPoint, [u8; 32]>,
    /// Rootstock's `nextPegoutHeight`.
    pub(crate) next_pegout_height: u64,
    /// Counter for derived keys.
    pub(crate) seq: u64,
    /// Satoshis of every accepted request (queued or batched).
    pub(crate) requested_sat: u64,
    /// Sub-satoshi wei of accepted requests, kept by the Bridge.
    pub(crate) remainder_wei: u128,
    /// Satoshis of RBTC burned for dust changes.
    pub(crate) burned_sat: u64,
}

impl PegoutState {
    /// Feeds the canonical encoding of the state to `put`.
    pub(crate) fn digest_into(&self, put: &mut dyn FnMut(&[u8])) {
        put(b"pegout/v1");
        put(&(self.requests.len() as u64).to_be_bytes());
        for r in &self.requests {
            put(&r.rsk_tx_hash);
            put(&r.sender.0);
            put(&(r.destination.len() as u64).to_be_bytes());
            put(r.destination.as_bytes());
            put(&r.amount.to_sat().to_be_bytes());
            put(&r.created_at_block.to_be_bytes());
        }
        put(&(self.pegouts.len() as u64).to_be_bytes());
        for (key, p) in &self.pegouts {
            put(key);
            let raw = bitcoin::consensus::serialize(&p.tx);
            put(&(raw.len() as u64).to_be_bytes());
            put(&raw);
            match &p.kind {
                PegoutKind::Batch { requests, requested, dust_raise } => {
                    put(&[0]);
                    put(&(requests.len() as u64).to_be_bytes());
                    for h in requests {
                        put(h);
                    }
                    put(&requested.to_sat().to_be_bytes());
                    put(&dust_raise.to_sat().to_be_bytes());
                }
                PegoutKind::Refund { pegin_txid, reason } => {
                    put(&[1]);
                    put(pegin_txid.as_byte_array());
                    put(&[reason.code()]);
                }
                PegoutKind::Migration => put(&[2]),
            }
            put(p.federation.redeem_script().as_bytes());
            put(&(p.inputs.len() as u64).to_be_bytes());
            for u in &p.inputs {
                put(u.outpoint.txid.as_byte_array());
                put(&u.outpoint.vout.to_be_bytes());
                put(&u.value.to_sat().to_be_bytes());
                put(&u.height.to_be_bytes());
            }
            put(&p.change.map_or(u64::MAX, u64::from).to_be_bytes());
            put(&p.fee.to_sat().to_be_bytes());
            put(&p.created_at_block.to_be_bytes());
            match p.status {
                PegoutStatus::WaitingForConfirmations => put(&[0]),
                PegoutStatus::WaitingForSignatures { since_block } => {
                    put(&[1]);
                    put(&since_block.to_be_bytes());
                }
                PegoutStatus::Released { at_block, signed_txid } => {
                    put(&[2]);
                    put(&at_block.to_be_bytes());
                    put(signed_txid.as_byte_array());
                }
            }
            put(&[u8::from(p.change_added)]);
            put(&(p.signatures.len() as u64).to_be_bytes());
            for (pk, sigs) in &p.signatures {
                put(&pk.serialize());
                for s in sigs {
                    put(&s.serialize_compact());
                }
            }
        }
        put(&(self.confirmation_queue.len() as u64).to_be_bytes());
        for k in &self.confirmation_queue {
            put(k);
        }
        put(&(self.reserved.len() as u64).to_be_bytes());
        for (op, k) in &self.reserved {
            put(op.txid.as_byte_array());
            put(&op.vout.to_be_bytes());
            put(k);
        }
        put(&self.next_pegout_height.to_be_bytes());
        put(&self.seq.to_be_bytes());
        put(&self.requested_sat.to_be_bytes());
        put(&self.remainder_wei.to_be_bytes());
        put(&self.burned_sat.to_be_bytes());
    }
}

/// The effects of a peg-out method: logs and RBTC transfers out of the
/// Bridge.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct Effects {
    /// Events logged, in order.
    pub events: Vec<BridgeEvent>,
    /// RBTC transfers out of the Bridge (recipient, wei), for the sidechain
    /// to apply: refunds of rejected requests and burns.
    pub credits: Vec<(SideAddress, u128)>,
}

/// An `addSignature` that changed nothing. Through the precompile, only
/// [`Unauthorized`](Self::Unauthorized) reverts; the others succeed without
/// effect, as in Rootstock.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum AddSignatureError {
    /// The caller is not a member's sidechain address.
    #[error("{0} is not a federation member and may not call addSignature")]
    Unauthorized(SideAddress),
    /// No peg-out waits for signatures under this key.
    #[error("no peg-out waits for signatures under {}", hex::encode(.0))]
    NotWaitingForSignatures([u8; 32]),
    /// One signature per input is needed.
    #[error("{got} signatures for a transaction of {expected} inputs")]
    SignatureCount {
        /// Inputs.
        expected: usize,
        /// Signatures given.
        got: usize,
    },
    /// The key is not a member's.
    #[error("{0} is not a key of the federation")]
    NotAMember(PublicKey),
    /// This member already signed.
    #[error("{0} already signed this peg-out")]
    AlreadySigned(PublicKey),
    /// A signature does not verify against the input's sighash.
    #[error("the signature for input {input} does not verify")]
    InvalidSignature {
        /// The input.
        input: usize,
    },
}

/// Why a peg-out transaction could not be built.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BuildError {
    /// Nothing to pay.
    #[error("no recipients")]
    NoRecipients,
    /// The UTXOs do not cover the requested total.
    #[error("UTXOs hold {available} sat, {needed} sat needed")]
    InsufficientFunds {
        /// Requested total.
        needed: u64,
        /// What the UTXOs hold.
        available: u64,
    },
    /// The estimated virtual size is over the limit.
    #[error("estimated size {size} vB exceeds {max}")]
    TooLarge {
        /// Estimated virtual size.
        size: u64,
        /// The limit.
        max: u64,
    },
    /// An output would be below its dust threshold after the fee.
    #[error("output {index} would be dust after fees")]
    DustOutput {
        /// The output.
        index: usize,
    },
}

/// A built (unsigned) peg-out transaction.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BuiltPegout {
    /// The unsigned transaction.
    pub tx: Transaction,
    /// The outputs it spends, in input order.
    pub inputs: Vec<FederationUtxo>,
    /// Index of the change output, if any.
    pub change: Option<u32>,
    /// The fee.
    pub fee: Amount,
    /// Estimated virtual size the fee was computed from.
    pub vsize: u64,
    /// How much the first recipient gave to lift a dust change.
    pub dust_raise: Amount,
}

/// The selection order of federation UTXOs: parent txid as a big integer
/// (display byte order), then output index.
pub fn selection_key(outpoint: &OutPoint) -> ([u8; 32], u32) {
    let mut b = outpoint.txid.to_byte_array();
    b.reverse();
    (b, outpoint.vout)
}

/// `utxos` in selection order.
pub fn sorted_for_selection(utxos: impl IntoIterator<Item = FederationUtxo>) -> Vec<FederationUtxo> {
    let mut v: Vec<FederationUtxo> = utxos.into_iter().collect();
    v.sort_by_key(|u| selection_key(&u.outpoint));
    v
}

/// A 72-byte (with its sighash byte) signature used only to size
/// transactions: r has its top bit set (33 DER bytes), s does not (32).
pub fn placeholder_signature() -> ecdsa::Signature {
    let mut compact = [0u8; 64];
    compact[0] = 0x80;
    compact[31] = 1;
    compact[32] = 0x7f;
    compact[63] = 1;
    let signature = bitcoin::secp256k1::ecdsa::Signature::from_compact(&compact)
        .unwrap_or_else(|_| unreachable!("r and s are in range"));
    ecdsa::Signature { signature, sighash_type: EcdsaSighashType::All }
}

/// The scriptSig an unsigned input of `fed` carries: the push of the P2WSH
/// program for the P2SH-P2WSH form (fixed, so the txid does not change when
/// the witness is added), empty for the legacy P2SH forms.
pub fn unsigned_script_sig(fed: &Federation) -> ScriptBuf {
    match fed.form() {
        ScriptForm::P2shP2wshErp => {
            let program = fed.redeem_script().to_p2wsh();
            PushBytesBuf::try_from(program.to_bytes())
                .map(|p| Builder::new().push_slice(p).into_script())
                .unwrap_or_default()
        }
        _ => ScriptBuf::new(),
    }
}

/// `tx` with every input carrying `fed`'s normal-branch spend with `M`
/// placeholder signatures.
pub fn with_placeholder_signatures(fed: &Federation, tx: &Transaction) -> Transaction {
    let mut t = tx.clone();
    let sigs = vec![placeholder_signature(); fed.threshold()];
    if let Ok(data) = fed.spend_data(SpendBranch::Normal, &sigs) {
        for i in 0..t.input.len() {
            let _ = set_spend_data(&mut t, i, data.clone());
        }
    }
    t
}

/// The estimated virtual size of `tx` once `fed` signed it.
pub fn estimated_vsize(fed: &Federation, tx: &Transaction) -> u64 {
    with_placeholder_signatures(fed, tx).vsize() as u64
}

/// `fee_per_kb · vsize / 1000`, rounded down.
pub fn fee_for(fee_per_kb_sat: u64, vsize: u64) -> Amount {
    Amount::from_sat(u64::try_from(u128::from(fee_per_kb_sat) * u128::from(vsize) / 1000).unwrap_or(u64::MAX))
}

fn skeleton(fed: &Federation, inputs: &[FederationUtxo], outputs: Vec<TxOut>) -> Transaction {
    let script_sig = unsigned_script_sig(fed);
    Transaction {
        version: Version::TWO,
        lock_time: LockTime::ZERO,
        input: inputs
            .iter()
            .map(|u| TxIn {
                previous_output: u.outpoint,
                script_sig: script_sig.clone(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            })
            .collect(),
        output: outputs,
    }
}

/// Estimated virtual size of a peg-out of `fed` with `inputs` inputs and
/// `outputs` outputs paying the federation's script (Rootstock's
/// `calculatePegoutTxSize`, which also uses federation outputs).
pub fn pegout_tx_size(fed: &Federation, inputs: usize, outputs: usize) -> u64 {
    let utxo = FederationUtxo { outpoint: OutPoint::null(), value: Amount::ZERO, height: 0 };
    let out = TxOut { value: Amount::ZERO, script_pubkey: fed.script_pubkey().clone() };
    let tx = skeleton(fed, &vec![utxo; inputs], vec![out; outputs]);
    estimated_vsize(fed, &tx)
}

/// Builds a batch paying `recipients` from `utxos` (already in selection
/// order) with change to `fed`; see the module docs.
pub fn build_batch(
    fed: &Federation,
    utxos: &[FederationUtxo],
    recipients: &[(ScriptBuf, Amount)],
    fee_per_kb_sat: u64,
    max_vsize: u64,
) -> Result<BuiltPegout, BuildError> {
    if recipients.is_empty() {
        return Err(BuildError::NoRecipients);
    }
    let needed =
        recipients.iter().try_fold(0u64, |acc, (_, a)| acc.checked_add(a.to_sat())).unwrap_or(u64::MAX);
    let mut selected = Vec::new();
    let mut acc = 0u64;
    for u in utxos {
        if acc >= needed {
            break;
        }
        acc = acc.saturating_add(u.value.to_sat());
        selected.push(*u);
    }
    if acc < needed {
        return Err(BuildError::InsufficientFunds { needed, available: acc });
    }
    let change = acc - needed;
    let mut outputs: Vec<TxOut> =
        recipients.iter().map(|(s, a)| TxOut { value: *a, script_pubkey: s.clone() }).collect();
    let change_index = (change > 0).then(|| {
        outputs.push(TxOut { value: Amount::from_sat(change), script_pubkey: fed.script_pubkey().clone() });
        (outputs.len() - 1) as u32
    });
    let mut tx = skeleton(fed, &selected, outputs);
    let vsize = estimated_vsize(fed, &tx);
    if vsize > max_vsize {
        return Err(BuildError::TooLarge { size: vsize, max: max_vsize });
    }
    let fee = fee_for(fee_per_kb_sat, vsize);
    let n = recipients.len() as u64;
    let (share, rem) = (fee.to_sat() / n, fee.to_sat() % n);
    for (i, out) in tx.output.iter_mut().take(recipients.len()).enumerate() {
        let cut = if i == 0 { share + rem } else { share };
        out.value =
            out.value.checked_sub(Amount::from_sat(cut)).ok_or(BuildError::DustOutput { index: i })?;
    }
    let mut dust_raise = Amount::ZERO;
    if let Some(ci) = change_index {
        let out = &tx.output[ci as usize];
        let dust = out.script_pubkey.minimal_non_dust();
        if out.value < dust {
            dust_raise = dust - out.value;
            tx.output[ci as usize].value = dust;
            tx.output[0].value =
                tx.output[0].value.checked_sub(dust_raise).ok_or(BuildError::DustOutput { index: 0 })?;
        }
    }
    for (index, out) in tx.output.iter().take(recipients.len()).enumerate() {
        if out.value < out.script_pubkey.minimal_non_dust() {
            return Err(BuildError::DustOutput { index });
        }
    }
    Ok(BuiltPegout { tx, inputs: selected, change: change_index, fee, vsize, dust_raise })
}

/// Builds the refund of a rejected peg-in: all of `utxos` to `destination`
/// minus the fee (Rootstock's `buildEmptyWalletTo`).
pub fn build_refund(
    fed: &Federation,
    utxos: &[FederationUtxo],
    destination: &ScriptBuf,
    fee_per_kb_sat: u64,
    max_vsize: u64,
) -> Result<BuiltPegout, BuildError> {
    let total = utxos.iter().fold(0u64, |a, u| a.saturating_add(u.value.to_sat()));
    let mut tx = skeleton(
        fed,
        utxos,
        vec![TxOut { value: Amount::from_sat(total), script_pubkey: destination.clone() }],
    );
    let vsize = estimated_vsize(fed, &tx);
    if vsize > max_vsize {
        return Err(BuildError::TooLarge { size: vsize, max: max_vsize });
    }
    let fee = fee_for(fee_per_kb_sat, vsize);
    let value = Amount::from_sat(total).checked_sub(fee).ok_or(BuildError::DustOutput { index: 0 })?;
    if value < destination.minimal_non_dust() {
        return Err(BuildError::DustOutput { index: 0 });
    }
    tx.output[0].value = value;
    Ok(BuiltPegout { tx, inputs: utxos.to_vec(), change: None, fee, vsize, dust_raise: Amount::ZERO })
}

/// `tx` without scriptSigs and witnesses (what signatures commit to, up to
/// the script code).
fn stripped(tx: &Transaction) -> Transaction {
    let mut t = tx.clone();
    for i in &mut t.input {
        i.script_sig = ScriptBuf::new();
        i.witness = Witness::new();
    }
    t
}

impl BridgeState {
    /// Queued peg-out requests, oldest first.
    pub fn pegout_requests(&self) -> impl Iterator<Item = &PegoutRequest> {
        self.pegout.requests.iter()
    }

    /// `getQueuedPegoutsCount`.
    pub fn get_queued_pegouts_count(&self) -> usize {
        self.pegout.requests.len()
    }

    /// `getNextPegoutCreationBlockNumber`: the first sidechain block at
    /// which `updateCollections` batches the queue.
    pub fn get_next_pegout_creation_block_number(&self) -> u64 {
        self.pegout.next_pegout_height
    }

    /// Every peg-out not yet registered back from Bitcoin, by key.
    pub fn pegouts(&self) -> impl Iterator<Item = &Pegout> {
        self.pegout.pegouts.values()
    }

    /// The peg-out under `rsk_tx_hash`.
    pub fn pegout(&self, rsk_tx_hash: &[u8; 32]) -> Option<&Pegout> {
        self.pegout.pegouts.get(rsk_tx_hash)
    }

    /// Peg-outs waiting for sidechain confirmations, oldest first.
    pub fn pegouts_waiting_for_confirmations(&self) -> impl Iterator<Item = &Pegout> {
        self.pegout.confirmation_queue.iter().filter_map(|k| self.pegout.pegouts.get(k))
    }

    /// What the pegnatories must sign (Rootstock's
    /// `getStateForBtcReleaseClient`): peg-outs waiting for signatures, by
    /// key. Each carries the unsigned transaction, the input values and who
    /// already signed.
    pub fn pegouts_waiting_for_signatures(&self) -> impl Iterator<Item = &Pegout> {
        self.pegout.pegouts.values().filter(|p| matches!(p.status, PegoutStatus::WaitingForSignatures { .. }))
    }

    /// Outputs spent by peg-outs not yet registered back (no longer
    /// available for selection).
    pub fn reserved_utxos(&self) -> impl Iterator<Item = &FederationUtxo> {
        self.pegout.pegouts.values().flat_map(|p| p.inputs.iter())
    }

    /// Total of accepted peg-out requests (queued or batched), in satoshis.
    pub fn pegged_out(&self) -> Amount {
        Amount::from_sat(self.pegout.requested_sat)
    }

    /// RBTC burned to back dust changes, in satoshis.
    pub fn burned(&self) -> Amount {
        Amount::from_sat(self.pegout.burned_sat)
    }

    /// The federation's available (selectable) balance.
    pub fn federation_balance(&self) -> Amount {
        Amount::from_sat(self.utxos.values().fold(0u64, |a, u| a.saturating_add(u.value.to_sat())))
    }

    /// The least a peg-out request may carry, and the reason a smaller one
    /// gets: `max(minimum_pegout_sat, fee + fee · pct / 100)` with
    /// `fee = fee_per_kb · size(2 in, 2 out) / 1000`.
    pub fn minimum_pegout(&self) -> (Amount, RejectedPegoutReason) {
        let size = pegout_tx_size(&self.federation, 2, 2);
        let fee = fee_for(self.fee_per_kb_sat, size).to_sat();
        let required = fee
            .saturating_add(fee.saturating_mul(self.params.minimum_pegout_value_percentage_after_fee) / 100);
        if required >= self.params.minimum_pegout_sat {
            (Amount::from_sat(required), RejectedPegoutReason::FeeAboveValue)
        } else {
            (Amount::from_sat(self.params.minimum_pegout_sat), RejectedPegoutReason::LowAmount)
        }
    }

    pub(crate) fn derived_key(&mut self, tag: &[u8]) -> [u8; 32] {
        let mut data = b"fika-peg/".to_vec();
        data.extend_from_slice(tag);
        data.extend_from_slice(&self.block_number.to_be_bytes());
        data.extend_from_slice(&self.pegout.seq.to_be_bytes());
        self.pegout.seq += 1;
        keccak256(&data)
    }

    /// `releaseBtc`: `sender` transferred `value_wei` to the Bridge with
    /// empty calldata in a transaction described by `origin`. The value is
    /// credited to the Bridge, then either queued as a peg-out request or
    /// transferred back (see the module docs). `Err` (a revert) only if the
    /// call is inconsistent: no signer key for an externally owned caller, a
    /// key that is not the caller's, or a value the Bridge could not have
    /// received.
    pub fn release_btc(
        &mut self,
        sender: SideAddress,
        value_wei: u128,
        origin: &TxOrigin,
    ) -> Result<Effects, BridgeError> {
        let max_wei = sat_to_wei(self.params.max_rbtc_sat);
        if self.balance_wei.checked_add(value_wei).is_none_or(|b| b > max_wei) {
            return Err(BridgeError::ValueTooLarge { value: value_wei });
        }
        // A rejected value arrives and goes straight back.
        let reject = |reason| {
            Ok(Effects {
                events: vec![BridgeEvent::ReleaseRequestRejected { sender, amount_wei: value_wei, reason }],
                credits: if value_wei > 0 { vec![(sender, value_wei)] } else { Vec::new() },
            })
        };
        if sender != origin.address {
            return reject(RejectedPegoutReason::CallerContract);
        }
        let pk = origin.public_key.ok_or(BridgeError::MissingSignerKey)?;
        if SideAddress::from_public_key(&pk) != sender {
            return Err(BridgeError::SignerKeyMismatch { caller: sender });
        }
        let sat = u64::try_from(value_wei / WEI_PER_SAT).unwrap_or(u64::MAX);
        let (minimum, reason) = self.minimum_pegout();
        if sat < minimum.to_sat() {
            return reject(reason);
        }
        let btc_pk = bitcoin::PublicKey::new(pk);
        let destination = ScriptBuf::new_p2pkh(&btc_pk.pubkey_hash());
        let address = Address::p2pkh(btc_pk.pubkey_hash(), self.params.btc_network.network());
        let rsk_tx_hash = match origin.tx_hash {
            Some(h) => h,
            None => self.derived_key(b"release-request"),
        };
        self.balance_wei += value_wei;
        self.pegout.requested_sat += sat;
        self.pegout.remainder_wei += value_wei % WEI_PER_SAT;
        self.pegout.requests.push_back(PegoutRequest {
            rsk_tx_hash,
            sender,
            destination,
            amount: Amount::from_sat(sat),
            created_at_block: self.block_number,
        });
        Ok(Effects {
            events: vec![BridgeEvent::ReleaseRequestReceived {
                sender,
                btc_destination: address.to_string(),
                amount_wei: value_wei,
            }],
            credits: Vec::new(),
        })
    }

    /// `updateCollections` (anyone may call it) in sidechain block
    /// `block_number`, by `caller` in the sidechain transaction
    /// `rsk_tx_hash` (`None`: a key is derived). Logs `update_collections`,
    /// turns queued refunds into refund transactions, batches the request
    /// queue when due, and moves at most one confirmed peg-out to "waiting
    /// for signatures". See the module docs.
    pub fn update_collections(
        &mut self,
        block_number: u64,
        caller: SideAddress,
        rsk_tx_hash: Option<[u8; 32]>,
    ) -> Effects {
        self.begin_block(block_number);
        let mut fx =
            Effects { events: vec![BridgeEvent::UpdateCollections { sender: caller }], ..Effects::default() };
        self.process_funds_migration(rsk_tx_hash, &mut fx);
        self.process_refunds(&mut fx);
        self.process_pegout_requests(rsk_tx_hash, &mut fx);
        self.process_confirmed_pegouts(&mut fx);
        fx
    }

    fn process_refunds(&mut self, fx: &mut Effects) {
        let queued: Vec<RefundRequest> = self.refunds.iter().cloned().collect();
        let mut kept = Vector::new();
        for r in queued {
            let utxos = sorted_for_selection(r.utxos.iter().copied());
            let built = build_refund(
                &r.federation,
                &utxos,
                &r.destination,
                self.fee_per_kb_sat,
                self.params.max_pegout_tx_size,
            );
            match built {
                Ok(b) => {
                    // One refund per peg-in and federation it paid.
                    let mut data = b"fika-peg/refund".to_vec();
                    data.extend_from_slice(r.btc_txid.as_byte_array());
                    data.extend_from_slice(r.federation.script_pubkey().as_bytes());
                    let key = keccak256(&data);
                    let kind = PegoutKind::Refund { pegin_txid: r.btc_txid, reason: r.reason };
                    self.settle(key, kind, Arc::clone(&r.federation), b, r.amount, fx);
                }
                Err(_) => kept.push_back(r),
            }
        }
        self.refunds = kept;
    }

    /// Records a created peg-out spending `federation`'s coins: reserves its
    /// inputs, queues it for confirmations, logs `release_requested` and
    /// `pegout_transaction_created`.
    pub(crate) fn settle(
        &mut self,
        key: [u8; 32],
        kind: PegoutKind,
        federation: Arc<Federation>,
        built: BuiltPegout,
        amount: Amount,
        fx: &mut Effects,
    ) {
        let btc_txid = built.tx.compute_txid();
        for u in &built.inputs {
            self.take_coin(&u.outpoint);
            self.pegout.reserved.insert(u.outpoint, key);
        }
        fx.events.push(BridgeEvent::ReleaseRequested { rsk_tx_hash: key, btc_txid, amount });
        fx.events.push(BridgeEvent::PegoutTransactionCreated {
            btc_txid,
            utxo_outpoint_values: built.inputs.iter().map(|u| u.value).collect(),
        });
        self.pegout.confirmation_queue.push_back(key);
        self.pegout.pegouts.insert(
            key,
            Pegout {
                rsk_tx_hash: key,
                kind,
                tx: built.tx,
                btc_txid,
                inputs: built.inputs,
                change: built.change,
                fee: built.fee,
                created_at_block: self.block_number,
                status: PegoutStatus::WaitingForConfirmations,
                change_added: false,
                signatures: Vec::new(),
                federation,
            },
        );
    }

    fn process_pegout_requests(&mut self, rsk_tx_hash: Option<[u8; 32]>, fx: &mut Effects) {
        let block = self.block_number;
        if block < self.pegout.next_pegout_height {
            return;
        }
        let total = self.pegout.requests.iter().fold(0u64, |a, r| a.saturating_add(r.amount.to_sat()));
        if self.federation_balance().to_sat() < total {
            return;
        }
        if !self.pegout.requests.is_empty() {
            let utxos = sorted_for_selection(self.utxos.values().copied());
            let all: Vec<(ScriptBuf, Amount)> =
                self.pegout.requests.iter().map(|r| (r.destination.clone(), r.amount)).collect();
            let build = |n: usize| {
                build_batch(
                    &self.federation,
                    &utxos,
                    &all[..n],
                    self.fee_per_kb_sat,
                    self.params.max_pegout_tx_size,
                )
            };
            let mut n = all.len();
            let mut result = build(n);
            while n > 1 && matches!(result, Err(BuildError::TooLarge { .. })) {
                n /= 2;
                result = build(n);
            }
            let Ok(built) = result else { return };
            let batch: Vec<PegoutRequest> = self.pegout.requests.iter().take(n).cloned().collect();
            let requested = Amount::from_sat(batch.iter().map(|r| r.amount.to_sat()).sum());
            let key = match rsk_tx_hash {
                Some(h) if !self.pegout.pegouts.contains_key(&h) => h,
                _ => self.derived_key(b"pegout"),
            };
            let dust_raise = built.dust_raise;
            let btc_txid = built.tx.compute_txid();
            let requests: Vec<[u8; 32]> = batch.iter().map(|r| r.rsk_tx_hash).collect();
            let kind = PegoutKind::Batch { requests: requests.clone(), requested, dust_raise };
            self.settle(key, kind, Arc::clone(&self.federation), built, requested, fx);
            self.pegout.requests = self.pegout.requests.skip(n);
            fx.events.push(BridgeEvent::BatchPegoutCreated { btc_txid, rsk_tx_hashes: requests });
            if dust_raise > Amount::ZERO {
                let wei = sat_to_wei(dust_raise.to_sat());
                self.balance_wei -= wei.min(self.balance_wei);
                self.pegout.burned_sat += dust_raise.to_sat();
                fx.credits.push((BURN_ADDRESS, wei));
            }
        }
        if self.pegout.requests.is_empty() {
            self.pegout.next_pegout_height = block.saturating_add(self.params.pegout_batch_interval_blocks);
        }
    }

    fn process_confirmed_pegouts(&mut self, fx: &mut Effects) {
        let block = self.block_number;
        let confirmations = self.params.pegout_confirmations;
        let Some(pos) = self.pegout.confirmation_queue.iter().position(|k| {
            self.pegout
                .pegouts
                .get(k)
                .is_some_and(|p| block >= p.created_at_block && block - p.created_at_block >= confirmations)
        }) else {
            return;
        };
        let key = self.pegout.confirmation_queue.remove(pos);
        if let Some(p) = self.pegout.pegouts.get_mut(&key) {
            p.status = PegoutStatus::WaitingForSignatures { since_block: block };
            fx.events.push(BridgeEvent::PegoutConfirmed {
                btc_txid: p.btc_txid,
                creation_block: p.created_at_block,
            });
        }
    }

    /// `addSignature(federatorPublicKey, signatures, rskTxHash)`: `caller`
    /// (a member's sidechain address) posts `federator`'s signatures, one
    /// per input in order, of the peg-out `rsk_tx_hash`. Each must verify
    /// against the input's SIGHASH_ALL sighash over the federation's script
    /// (low-S). Logs `add_signature`; once `M` distinct members have signed,
    /// assembles every input's spending data and logs `release_btc` with the
    /// signed transaction.
    pub fn add_signature(
        &mut self,
        caller: SideAddress,
        federator: &PublicKey,
        signatures: &[bitcoin::secp256k1::ecdsa::Signature],
        rsk_tx_hash: &[u8; 32],
    ) -> Result<Effects, AddSignatureError> {
        if !self.is_federation_member(&caller) {
            return Err(AddSignatureError::Unauthorized(caller));
        }
        let p = self
            .pegout
            .pegouts
            .get(rsk_tx_hash)
            .filter(|p| matches!(p.status, PegoutStatus::WaitingForSignatures { .. }))
            .ok_or(AddSignatureError::NotWaitingForSignatures(*rsk_tx_hash))?;
        // The federation whose coins it spends signs it.
        let fed = Arc::clone(&p.federation);
        if signatures.len() != p.tx.input.len() {
            return Err(AddSignatureError::SignatureCount {
                expected: p.tx.input.len(),
                got: signatures.len(),
            });
        }
        if !fed.is_member(federator) {
            return Err(AddSignatureError::NotAMember(*federator));
        }
        if p.signers().any(|k| k == federator) {
            return Err(AddSignatureError::AlreadySigned(*federator));
        }
        let secp = Secp256k1::verification_only();
        for (input, (sig, utxo)) in signatures.iter().zip(&p.inputs).enumerate() {
            let sig = ecdsa::Signature { signature: *sig, sighash_type: EcdsaSighashType::All };
            if !fed.verify_signature(&secp, &p.tx, input, utxo.value, federator, &sig) {
                return Err(AddSignatureError::InvalidSignature { input });
            }
        }
        let block = self.block_number;
        let change_on_release = self.params.pegout_change_on_release;
        let mut fx = Effects::default();
        let mut change_utxo: Option<(FederationUtxo, ScriptBuf)> = None;
        if let Some(p) = self.pegout.pegouts.get_mut(rsk_tx_hash) {
            p.signatures.push((*federator, signatures.to_vec()));
            fx.events.push(BridgeEvent::AddSignature {
                rsk_tx_hash: *rsk_tx_hash,
                federator: SideAddress::from_public_key(federator),
                federator_public_key: *federator,
            });
            if p.signatures.len() >= fed.threshold() {
                let mut tx = p.tx.clone();
                for i in 0..tx.input.len() {
                    let sigs: Vec<(PublicKey, ecdsa::Signature)> = p
                        .signatures
                        .iter()
                        .map(|(k, s)| {
                            (*k, ecdsa::Signature { signature: s[i], sighash_type: EcdsaSighashType::All })
                        })
                        .collect();
                    // Keys are members, distinct, at least M: this cannot fail.
                    let _ = fed.apply_signatures(&mut tx, i, SpendBranch::Normal, &sigs);
                }
                let signed_txid = tx.compute_txid();
                fx.events.push(BridgeEvent::ReleaseBtc {
                    rsk_tx_hash: *rsk_tx_hash,
                    raw_tx: bitcoin::consensus::serialize(&tx),
                });
                p.status = PegoutStatus::Released { at_block: block, signed_txid };
                p.signatures.clear();
                if let (true, Some(ci)) = (change_on_release, p.change) {
                    p.change_added = true;
                    let script =
                        p.tx.output.get(ci as usize).map(|o| o.script_pubkey.clone()).unwrap_or_default();
                    let utxo = FederationUtxo {
                        outpoint: OutPoint::new(signed_txid, ci),
                        value: p.change_value(),
                        height: 0,
                    };
                    change_utxo = Some((utxo, script));
                }
            }
        }
        if let Some((u, script)) = change_utxo {
            self.add_federation_coin(u, &script);
        }
        Ok(fx)
    }

    /// The Bitcoin transaction `tx` (proven, confirmed) spends `reserved`, an
    /// input of the peg-out under `key`: registers the peg-out back.
    pub(crate) fn register_pegout(
        &mut self,
        tx: &Transaction,
        txid: Txid,
        height: u32,
        spent: OutPoint,
        key: [u8; 32],
    ) -> Result<Registration, RegisterError> {
        let Some(p) = self.pegout.pegouts.get(&key) else {
            return Err(RegisterError::SpendsFederationUtxo { txid, outpoint: spent });
        };
        if stripped(tx) != stripped(&p.tx) {
            return Err(RegisterError::SpendsFederationUtxo { txid, outpoint: spent });
        }
        if !matches!(p.status, PegoutStatus::Released { .. }) {
            return Err(RegisterError::PegoutNotReleased { txid, rsk_tx_hash: key });
        }
        let p = p.clone();
        for u in &p.inputs {
            self.pegout.reserved.remove(&u.outpoint);
        }
        self.pegout.pegouts.remove(&key);
        self.processed.insert(txid, self.block_number);
        let mut change = None;
        if let (PegoutKind::Batch { .. } | PegoutKind::Migration, Some(ci)) = (&p.kind, p.change) {
            let utxo = FederationUtxo { outpoint: OutPoint::new(txid, ci), value: p.change_value(), height };
            change = Some(utxo.value);
            let script = p.tx.output.get(ci as usize).map(|o| o.script_pubkey.clone()).unwrap_or_default();
            if p.change_added {
                // Added at release with an unknown height; record it now
                // (unless it was spent since).
                if self.is_available_coin(&utxo.outpoint) {
                    self.add_federation_coin(utxo, &script);
                }
            } else {
                self.add_federation_coin(utxo, &script);
            }
        }
        Ok(Registration {
            btc_txid: txid,
            outcome: PeginOutcome::Pegout { rsk_tx_hash: key, change },
            events: Vec::new(),
            credits: Vec::new(),
        })
    }

    /// `getEstimatedFeesForNextPegOutEvent`: the fee of the next batch with
    /// one extra request of [`ESTIMATE_EXTRA_REQUEST`] (inputs − outputs of
    /// the simulated transaction); if it cannot be built, `fee_per_kb ·
    /// size(2 inputs, queued + 2 outputs) / 1000`, as Rootstock.
    pub fn get_estimated_fees_for_next_pegout_event(&self) -> Amount {
        let utxos = sorted_for_selection(self.utxos.values().copied());
        let mut recipients: Vec<(ScriptBuf, Amount)> =
            self.pegout.requests.iter().map(|r| (r.destination.clone(), r.amount)).collect();
        let dummy = ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::from_byte_array([0x42; 20]));
        recipients.push((dummy, ESTIMATE_EXTRA_REQUEST));
        match build_batch(
            &self.federation,
            &utxos,
            &recipients,
            self.fee_per_kb_sat,
            self.params.max_pegout_tx_size,
        ) {
            Ok(b) => b.fee,
            Err(_) => fee_for(
                self.fee_per_kb_sat,
                pegout_tx_size(&self.federation, 2, self.pegout.requests.len() + 2),
            ),
        }
    }

    /// The peg-out part of the conservation law: `(federation side,
    /// obligations)` in satoshis, and the first structural inconsistency.
    pub(crate) fn pegout_balances(&self) -> Result<(i128, i128), ([u8; 32], String)> {
        let mut fed_side: i128 = self.utxos.values().map(|u| i128::from(u.value.to_sat())).sum::<i128>()
            + i128::from(self.retiring_balance().to_sat())
            + i128::from(self.fedchange.migration_fees_sat)
            + i128::from(self.fedchange.stranded_sat);
        for (key, p) in &self.pegout.pegouts {
            let inputs: i128 = p.inputs.iter().map(|u| i128::from(u.value.to_sat())).sum();
            let outputs: i128 = p.tx.output.iter().map(|o| i128::from(o.value.to_sat())).sum();
            if inputs != outputs + i128::from(p.fee.to_sat()) {
                return Err((*key, format!("inputs {inputs} ≠ outputs {outputs} + fee {}", p.fee)));
            }
            if p.tx.input.len() != p.inputs.len()
                || p.tx.input.iter().zip(&p.inputs).any(|(i, u)| i.previous_output != u.outpoint)
            {
                return Err((*key, "transaction inputs differ from the recorded UTXOs".into()));
            }
            for u in &p.inputs {
                if self.is_available_coin(&u.outpoint) {
                    return Err((*key, format!("input {} is still available for selection", u.outpoint)));
                }
                if self.pegout.reserved.get(&u.outpoint) != Some(key) {
                    return Err((*key, format!("input {} is not reserved for it", u.outpoint)));
                }
            }
            if let PegoutKind::Batch { requested, dust_raise, .. } = &p.kind {
                let paid = outputs - i128::from(p.change_value().to_sat()) + i128::from(p.fee.to_sat());
                if paid + i128::from(dust_raise.to_sat()) != i128::from(requested.to_sat()) {
                    return Err((
                        *key,
                        format!("pays {paid} + dust raise {dust_raise} ≠ requested {requested}"),
                    ));
                }
                if !p.change_added {
                    fed_side += i128::from(p.change_value().to_sat());
                }
            }
            if let PegoutKind::Migration = &p.kind {
                if p.change != Some(0) || p.tx.output.len() != 1 {
                    return Err((*key, "a migration has exactly one output, the new federation's".into()));
                }
                if !p.change_added {
                    fed_side += i128::from(p.change_value().to_sat());
                }
            }
        }
        let queued: i128 = self.pegout.requests.iter().map(|r| i128::from(r.amount.to_sat())).sum();
        let minted = i128::from(self.pegged_in_sat) + i128::from(self.pegout.burned_sat)
            - i128::from(self.pegout.requested_sat);
        Ok((fed_side, minted + queued))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bitcoin::hashes::sha256;
    use bitcoin::secp256k1::SecretKey;

    fn fed() -> (Federation, Vec<SecretKey>) {
        let secp = Secp256k1::new();
        let sk =
            |tag: u8, i: u8| SecretKey::from_slice(&sha256::Hash::hash(&[tag, i]).to_byte_array()).unwrap();
        let members: Vec<SecretKey> = (0..5).map(|i| sk(1, i)).collect();
        let mpk: Vec<PublicKey> = members.iter().map(|s| PublicKey::from_secret_key(&secp, s)).collect();
        let epk: Vec<PublicKey> = (0..4).map(|i| PublicKey::from_secret_key(&secp, &sk(2, i))).collect();
        (Federation::p2sh_p2wsh_erp(&mpk, &epk, 100).unwrap(), members)
    }

    fn utxo(tag: u8, vout: u32, sat: u64) -> FederationUtxo {
        FederationUtxo {
            outpoint: OutPoint::new(Txid::hash(&[tag]), vout),
            value: Amount::from_sat(sat),
            height: 1,
        }
    }

    fn p2pkh(tag: u8) -> ScriptBuf {
        ScriptBuf::new_p2pkh(&bitcoin::PubkeyHash::from_byte_array([tag; 20]))
    }

    #[test]
    fn placeholder_signatures_bound_real_ones() {
        assert_eq!(placeholder_signature().to_vec().len(), PLACEHOLDER_SIGNATURE_SIZE);
        let (fed, sks) = fed();
        let u = utxo(1, 0, 100_000_000);
        let built =
            build_batch(&fed, &[u], &[(p2pkh(1), Amount::from_sat(50_000_000))], 1000, 100_000).unwrap();
        let secp = Secp256k1::new();
        let mut tx = built.tx.clone();
        let sigs: Vec<_> = sks
            .iter()
            .map(|sk| {
                (PublicKey::from_secret_key(&secp, sk), fed.sign_input(&secp, &tx, 0, u.value, sk).unwrap())
            })
            .collect();
        fed.apply_signatures(&mut tx, 0, SpendBranch::Normal, &sigs).unwrap();
        assert!(tx.vsize() as u64 <= built.vsize);
        assert!(
            built.vsize - (tx.vsize() as u64) <= 2,
            "the estimate is tight: {} vs {}",
            built.vsize,
            tx.vsize()
        );
        assert_eq!(tx.compute_txid(), built.tx.compute_txid());
    }

    #[test]
    fn selection_order_is_the_displayed_txid_then_the_index() {
        let utxos = vec![utxo(1, 1, 5), utxo(2, 0, 1), utxo(1, 0, 9), utxo(3, 7, 2)];
        let sorted = sorted_for_selection(utxos.clone());
        let shown: Vec<String> = sorted.iter().map(|u| u.outpoint.to_string()).collect();
        let mut expect = shown.clone();
        expect.sort_by_key(|s| {
            let (txid, vout) = s.split_once(':').unwrap();
            (txid.to_owned(), vout.parse::<u32>().unwrap())
        });
        assert_eq!(shown, expect);
    }

    #[test]
    fn the_fee_is_split_equally_with_the_remainder_on_the_first_output() {
        let (fed, _) = fed();
        let utxos = [utxo(1, 0, 10_000_000)];
        let recipients: Vec<(ScriptBuf, Amount)> =
            (1..=3).map(|i| (p2pkh(i), Amount::from_sat(1_000_000 * u64::from(i)))).collect();
        let (rate, built) = (100_000u64..100_100)
            .map(|rate| (rate, build_batch(&fed, &utxos, &recipients, rate, 100_000).unwrap()))
            .find(|(_, b)| b.fee.to_sat() % 3 == 2)
            .unwrap();
        let fee = built.fee.to_sat();
        assert_eq!(fee, rate * built.vsize / 1000);
        assert_eq!(built.vsize, estimated_vsize(&fed, &built.tx));
        let share = fee / 3;
        assert_eq!(built.tx.output[0].value.to_sat(), 1_000_000 - share - 2);
        assert_eq!(built.tx.output[1].value.to_sat(), 2_000_000 - share);
        assert_eq!(built.tx.output[2].value.to_sat(), 3_000_000 - share);
        assert_eq!(built.tx.output[3].value.to_sat(), 4_000_000);
        assert_eq!(built.tx.output[3].script_pubkey, *fed.script_pubkey());
        assert_eq!(built.change, Some(3));
        assert_eq!(built.tx.version, Version::TWO);
        assert!(built.tx.input.iter().all(|i| i.sequence == Sequence::MAX && i.witness.is_empty()));
    }

    #[test]
    fn exact_amounts_have_no_change_and_short_or_dusty_batches_fail() {
        let (fed, _) = fed();
        let utxos = [utxo(1, 0, 1_000_000), utxo(2, 0, 2_000_000)];
        let exact =
            build_batch(&fed, &utxos, &[(p2pkh(1), Amount::from_sat(3_000_000))], 1000, 100_000).unwrap();
        assert_eq!(exact.change, None);
        assert_eq!(exact.tx.output.len(), 1);
        assert_eq!(
            build_batch(&fed, &utxos, &[(p2pkh(1), Amount::from_sat(3_000_001))], 1000, 100_000),
            Err(BuildError::InsufficientFunds { needed: 3_000_001, available: 3_000_000 })
        );
        assert!(matches!(
            build_batch(&fed, &utxos, &[(p2pkh(1), Amount::from_sat(1_000))], 1000, 100),
            Err(BuildError::TooLarge { max: 100, .. })
        ));
        // The fee eats the output.
        assert_eq!(
            build_batch(&fed, &utxos, &[(p2pkh(1), Amount::from_sat(1_000))], 5_000_000, 100_000),
            Err(BuildError::DustOutput { index: 0 })
        );
        assert_eq!(build_batch(&fed, &utxos, &[], 1000, 100_000), Err(BuildError::NoRecipients));
    }

    #[test]
    fn a_dust_change_is_raised_from_the_first_recipient() {
        let (fed, _) = fed();
        let utxos = [utxo(1, 0, 1_000_100)];
        let r = [(p2pkh(1), Amount::from_sat(500_000)), (p2pkh(2), Amount::from_sat(500_000))];
        let b = build_batch(&fed, &utxos, &r, 10_000, 100_000).unwrap();
        let dust = fed.script_pubkey().minimal_non_dust().to_sat();
        assert_eq!(b.dust_raise.to_sat(), dust - 100);
        assert_eq!(b.tx.output[2].value.to_sat(), dust);
        let fee = b.fee.to_sat();
        assert_eq!(b.tx.output[0].value.to_sat(), 500_000 - fee / 2 - fee % 2 - (dust - 100));
        assert_eq!(b.tx.output[1].value.to_sat(), 500_000 - fee / 2);
        let total_out: u64 = b.tx.output.iter().map(|o| o.value.to_sat()).sum();
        assert_eq!(total_out + fee, 1_000_100);
    }

    #[test]
    fn a_refund_sends_everything_but_the_fee() {
        let (fed, _) = fed();
        let utxos = [utxo(1, 0, 700_000), utxo(1, 1, 300_000)];
        let dest = p2pkh(9);
        let b = build_refund(&fed, &utxos, &dest, 10_000, 100_000).unwrap();
        assert_eq!(b.tx.output.len(), 1);
        assert_eq!(b.tx.output[0].value + b.fee, Amount::from_sat(1_000_000));
        assert_eq!(b.fee, fee_for(10_000, b.vsize));
        assert_eq!(
            build_refund(&fed, &utxos, &dest, 5_000_000, 100_000),
            Err(BuildError::DustOutput { index: 0 })
        );
    }
}
