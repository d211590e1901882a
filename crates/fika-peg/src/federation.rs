//! The federation: its multisig and emergency (ERP) scripts, addresses, and
//! the helpers that sign and spend its outputs.
//!
//! Keys are kept in Rootstock's canonical order — sorted by their serialized
//! (compressed) bytes, as bitcoinj's `PUBKEY_COMPARATOR` does — and the
//! threshold is `M = N/2 + 1`. Three script forms exist, as in Rootstock's
//! history:
//!
//! * [`ScriptForm::P2shMultisig`]: `<M> <keys> <N> OP_CHECKMULTISIG` under P2SH;
//! * [`ScriptForm::P2shErp`]: the ERP script under P2SH;
//! * [`ScriptForm::P2shP2wshErp`] (current): the ERP script as the witness
//!   script of a P2WSH program nested in P2SH.
//!
//! The ERP script is
//! `OP_NOTIF <M> <keys> <N> OP_CHECKMULTISIG OP_ELSE <csv> OP_CHECKSEQUENCEVERIFY
//! OP_DROP <3> <emergency keys> <4> OP_CHECKMULTISIG OP_ENDIF`: an empty
//! (false) selector takes the normal branch, a true one the emergency branch,
//! which needs the input's `nSequence ≥ csv` and transaction version 2.

use bitcoin::ecdsa;
use bitcoin::hashes::Hash;
use bitcoin::opcodes::all::{OP_CHECKMULTISIG, OP_CSV, OP_DROP, OP_ELSE, OP_ENDIF, OP_NOTIF};
use bitcoin::script::{Builder, PushBytesBuf};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey, Signing, Verification};
use bitcoin::sighash::{EcdsaSighashType, SighashCache};
use bitcoin::transaction::Version;
use bitcoin::{Address, Amount, ScriptBuf, Sequence, Transaction, Witness};
use serde::{Deserialize, Serialize};
use thiserror::Error;

use crate::params::BtcNetwork;
use crate::side::SideAddress;

/// Most keys a `CHECKMULTISIG` accepts (Core's `MAX_PUBKEYS_PER_MULTISIG`).
pub const MAX_MULTISIG_KEYS: usize = 20;

/// Largest P2SH redeem script (Core's `MAX_SCRIPT_ELEMENT_SIZE`).
pub const MAX_P2SH_REDEEM_SCRIPT: usize = 520;

/// How the federation's script is wrapped into an output.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ScriptForm {
    /// Plain `M-of-N` multisig under P2SH (the original federation).
    P2shMultisig,
    /// The ERP script under P2SH.
    P2shErp,
    /// The ERP script as a P2WSH witness script nested in P2SH (current).
    P2shP2wshErp,
}

/// Which branch of the ERP script a spend takes.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SpendBranch {
    /// The federation's `M-of-N`.
    Normal,
    /// The emergency keys' `3-of-4` after the CSV delay.
    Emergency,
}

/// A federation error; carries the offending input.
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum FederationError {
    /// A key list is empty.
    #[error("the {which} key list is empty")]
    NoKeys {
        /// `members` or `emergency`.
        which: &'static str,
    },
    /// Too many keys for `CHECKMULTISIG`.
    #[error("{count} {which} keys, at most {max} allowed")]
    TooManyKeys {
        /// `members` or `emergency`.
        which: &'static str,
        /// How many were given.
        count: usize,
        /// The limit.
        max: usize,
    },
    /// A key appears twice.
    #[error("duplicate key {0}")]
    DuplicateKey(PublicKey),
    /// The CSV delay is zero.
    #[error("the emergency CSV delay must be in 1..=65535, got 0")]
    ZeroCsv,
    /// A P2SH redeem script is over 520 bytes (unspendable).
    #[error("redeem script of {size} bytes exceeds the P2SH limit of {max}")]
    RedeemScriptTooLarge {
        /// Its size.
        size: usize,
        /// The limit.
        max: usize,
    },
    /// The form has no emergency branch.
    #[error("the {0:?} form has no emergency branch")]
    NoEmergencyBranch(ScriptForm),
    /// A signature's key is not a key of the branch.
    #[error("{0} is not a signer of this branch")]
    NotASigner(PublicKey),
    /// Two signatures by the same key.
    #[error("two signatures by {0}")]
    DuplicateSignature(PublicKey),
    /// Fewer signatures than the branch's threshold.
    #[error("{got} signatures, the branch needs {need}")]
    NotEnoughSignatures {
        /// Signatures given.
        got: usize,
        /// The threshold.
        need: usize,
    },
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

/// What goes into a spending input: its scriptSig and its witness.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SpendData {
    /// The input's scriptSig.
    pub script_sig: ScriptBuf,
    /// The input's witness (empty for the legacy P2SH forms).
    pub witness: Witness,
}

/// A PowPeg federation: members, emergency keys, CSV delay and script form.
///
/// Built only through [`Federation::new`], which sorts and checks the keys;
/// the scripts are computed once.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Federation {
    members: Vec<PublicKey>,
    /// Each member's sidechain key, in member order (the Bitcoin key unless
    /// set by [`Federation::with_rsk_keys`]).
    rsk_keys: Vec<PublicKey>,
    emergency: Vec<PublicKey>,
    csv: u16,
    form: ScriptForm,
    redeem_script: ScriptBuf,
    script_pubkey: ScriptBuf,
}

/// `<threshold> <keys> <n> OP_CHECKMULTISIG` appended to `builder`.
fn push_multisig(builder: Builder, threshold: usize, keys: &[PublicKey]) -> Builder {
    let mut b = builder.push_int(threshold as i64);
    for key in keys {
        b = b.push_slice(key.serialize());
    }
    b.push_int(keys.len() as i64).push_opcode(OP_CHECKMULTISIG)
}

/// The Rootstock order of keys: by serialized compressed bytes.
fn sort_keys(keys: &[PublicKey], which: &'static str) -> Result<Vec<PublicKey>, FederationError> {
    if keys.is_empty() {
        return Err(FederationError::NoKeys { which });
    }
    if keys.len() > MAX_MULTISIG_KEYS {
        return Err(FederationError::TooManyKeys { which, count: keys.len(), max: MAX_MULTISIG_KEYS });
    }
    let mut sorted = keys.to_vec();
    sorted.sort_by_key(|k| k.serialize());
    for pair in sorted.windows(2) {
        if pair[0] == pair[1] {
            return Err(FederationError::DuplicateKey(pair[0]));
        }
    }
    Ok(sorted)
}

/// The threshold of an `n`-key multisig in the PowPeg: `n/2 + 1`.
pub fn threshold_of(n: usize) -> usize {
    n / 2 + 1
}

impl Federation {
    /// A federation of `members` with `emergency` keys and the emergency
    /// delay `csv` (Bitcoin blocks) in script form `form`. Keys are sorted
    /// canonically; duplicates, empty or oversized key lists, a zero CSV and
    /// a P2SH redeem script over 520 bytes are errors. The emergency keys and
    /// CSV are ignored by [`ScriptForm::P2shMultisig`] (but still checked).
    pub fn new(
        members: &[PublicKey],
        emergency: &[PublicKey],
        csv: u16,
        form: ScriptForm,
    ) -> Result<Self, FederationError> {
        let members = sort_keys(members, "members")?;
        let emergency = sort_keys(emergency, "emergency")?;
        if csv == 0 {
            return Err(FederationError::ZeroCsv);
        }
        let redeem_script = match form {
            ScriptForm::P2shMultisig => push_multisig(Builder::new(), threshold_of(members.len()), &members),
            ScriptForm::P2shErp | ScriptForm::P2shP2wshErp => {
                let b = push_multisig(
                    Builder::new().push_opcode(OP_NOTIF),
                    threshold_of(members.len()),
                    &members,
                )
                .push_opcode(OP_ELSE)
                .push_int(i64::from(csv))
                .push_opcode(OP_CSV)
                .push_opcode(OP_DROP);
                push_multisig(b, threshold_of(emergency.len()), &emergency).push_opcode(OP_ENDIF)
            }
        }
        .into_script();
        let script_pubkey = match form {
            ScriptForm::P2shMultisig | ScriptForm::P2shErp => {
                if redeem_script.len() > MAX_P2SH_REDEEM_SCRIPT {
                    return Err(FederationError::RedeemScriptTooLarge {
                        size: redeem_script.len(),
                        max: MAX_P2SH_REDEEM_SCRIPT,
                    });
                }
                redeem_script.to_p2sh()
            }
            ScriptForm::P2shP2wshErp => redeem_script.to_p2wsh().to_p2sh(),
        };
        let rsk_keys = members.clone();
        Ok(Federation { members, rsk_keys, emergency, csv, form, redeem_script, script_pubkey })
    }

    /// The current Rootstock form: ERP under P2SH-P2WSH.
    pub fn p2sh_p2wsh_erp(
        members: &[PublicKey],
        emergency: &[PublicKey],
        csv: u16,
    ) -> Result<Self, FederationError> {
        Self::new(members, emergency, csv, ScriptForm::P2shP2wshErp)
    }

    /// The members' keys, in canonical order.
    pub fn members(&self) -> &[PublicKey] {
        &self.members
    }

    /// This federation with distinct sidechain keys for some members
    /// (Rootstock's multikey members): `pairs` maps a member's Bitcoin key
    /// to its sidechain key, whose address authorises the member's Bridge
    /// calls. A key that is not a member's is an error.
    pub fn with_rsk_keys(mut self, pairs: &[(PublicKey, PublicKey)]) -> Result<Self, FederationError> {
        for (btc, rsk) in pairs {
            let i = self.members.iter().position(|k| k == btc).ok_or(FederationError::NotASigner(*btc))?;
            self.rsk_keys[i] = *rsk;
        }
        Ok(self)
    }

    /// The members' sidechain keys, in member order.
    pub fn rsk_keys(&self) -> &[PublicKey] {
        &self.rsk_keys
    }

    /// The emergency keys, in canonical order.
    pub fn emergency(&self) -> &[PublicKey] {
        &self.emergency
    }

    /// The emergency branch's relative timelock, in Bitcoin blocks.
    pub fn csv(&self) -> u16 {
        self.csv
    }

    /// The script form.
    pub fn form(&self) -> ScriptForm {
        self.form
    }

    /// Number of members `N`.
    pub fn size(&self) -> usize {
        self.members.len()
    }

    /// Signatures a normal spend needs: `M = N/2 + 1`.
    pub fn threshold(&self) -> usize {
        threshold_of(self.members.len())
    }

    /// Signatures an emergency spend needs (3 of 4 emergency keys).
    pub fn emergency_threshold(&self) -> usize {
        threshold_of(self.emergency.len())
    }

    /// Whether `pk` is a member.
    pub fn is_member(&self, pk: &PublicKey) -> bool {
        self.members.contains(pk)
    }

    /// The sidechain addresses of the members (of their sidechain keys,
    /// which are their Bitcoin keys unless set otherwise), in member order.
    pub fn member_addresses(&self) -> Vec<SideAddress> {
        self.rsk_keys.iter().map(SideAddress::from_public_key).collect()
    }

    /// Whether `addr` is a member's sidechain address.
    pub fn has_member_address(&self, addr: &SideAddress) -> bool {
        self.rsk_keys.iter().any(|k| SideAddress::from_public_key(k) == *addr)
    }

    /// The redeem script (P2SH forms) or witness script (P2SH-P2WSH): what
    /// signatures commit to.
    pub fn redeem_script(&self) -> &ScriptBuf {
        &self.redeem_script
    }

    /// The plain `M-of-N` multisig script of the members.
    pub fn multisig_script(&self) -> ScriptBuf {
        push_multisig(Builder::new(), self.threshold(), &self.members).into_script()
    }

    /// The output script funds are locked to.
    pub fn script_pubkey(&self) -> &ScriptBuf {
        &self.script_pubkey
    }

    /// The federation's address (always a P2SH address, `3…` on mainnet).
    pub fn address(&self, network: BtcNetwork) -> Address {
        match self.form {
            ScriptForm::P2shMultisig | ScriptForm::P2shErp => {
                Address::p2sh_from_hash(self.redeem_script.script_hash(), network.network())
            }
            ScriptForm::P2shP2wshErp => Address::p2shwsh(&self.redeem_script, network.network()),
        }
    }

    /// The `nSequence` an emergency spend's input needs (the CSV delay in
    /// blocks).
    pub fn emergency_sequence(&self) -> Sequence {
        Sequence::from_height(self.csv)
    }

    /// Prepares input `index` of `tx` for an emergency spend: transaction
    /// version 2 and the input's sequence set to the CSV delay.
    pub fn prepare_emergency_input(&self, tx: &mut Transaction, index: usize) -> Result<(), FederationError> {
        let inputs = tx.input.len();
        let input = tx.input.get_mut(index).ok_or(FederationError::NoSuchInput { index, inputs })?;
        input.sequence = self.emergency_sequence();
        if tx.version.0 < 2 {
            tx.version = Version::TWO;
        }
        Ok(())
    }

    /// The message a signer signs to spend input `index` of `tx`, an output
    /// of this federation holding `value` (SIGHASH_ALL; legacy sighash over
    /// the redeem script for the P2SH forms, BIP143 over the witness script
    /// for P2SH-P2WSH).
    pub fn sighash(&self, tx: &Transaction, index: usize, value: Amount) -> Result<Message, FederationError> {
        if index >= tx.input.len() {
            return Err(FederationError::NoSuchInput { index, inputs: tx.input.len() });
        }
        let mut cache = SighashCache::new(tx);
        let digest = match self.form {
            ScriptForm::P2shMultisig | ScriptForm::P2shErp => cache
                .legacy_signature_hash(index, &self.redeem_script, EcdsaSighashType::All.to_u32())
                .map_err(|e| FederationError::Sighash(e.to_string()))?
                .to_byte_array(),
            ScriptForm::P2shP2wshErp => cache
                .p2wsh_signature_hash(index, &self.redeem_script, value, EcdsaSighashType::All)
                .map_err(|e| FederationError::Sighash(e.to_string()))?
                .to_byte_array(),
        };
        Ok(Message::from_digest(digest))
    }

    /// One signer's SIGHASH_ALL signature for input `index` (what a PowHSM
    /// produces).
    pub fn sign_input<C: Signing>(
        &self,
        secp: &Secp256k1<C>,
        tx: &Transaction,
        index: usize,
        value: Amount,
        sk: &SecretKey,
    ) -> Result<ecdsa::Signature, FederationError> {
        let msg = self.sighash(tx, index, value)?;
        Ok(ecdsa::Signature { signature: secp.sign_ecdsa(&msg, sk), sighash_type: EcdsaSighashType::All })
    }

    /// Whether `sig` is `pk`'s valid signature for input `index`.
    pub fn verify_signature<C: Verification>(
        &self,
        secp: &Secp256k1<C>,
        tx: &Transaction,
        index: usize,
        value: Amount,
        pk: &PublicKey,
        sig: &ecdsa::Signature,
    ) -> bool {
        sig.sighash_type == EcdsaSighashType::All
            && self
                .sighash(tx, index, value)
                .is_ok_and(|msg| secp.verify_ecdsa(&msg, &sig.signature, pk).is_ok())
    }

    fn branch_keys(&self, branch: SpendBranch) -> Result<(&[PublicKey], usize), FederationError> {
        match (branch, self.form) {
            (SpendBranch::Normal, _) => Ok((&self.members, self.threshold())),
            (SpendBranch::Emergency, ScriptForm::P2shMultisig) => {
                Err(FederationError::NoEmergencyBranch(self.form))
            }
            (SpendBranch::Emergency, _) => Ok((&self.emergency, self.emergency_threshold())),
        }
    }

    /// Orders `sigs` as `CHECKMULTISIG` needs them (by the position of their
    /// key in the branch) and keeps the first `threshold`. Errors if a key
    /// is not a signer of the branch, signs twice, or too few signed.
    pub fn order_signatures(
        &self,
        branch: SpendBranch,
        sigs: &[(PublicKey, ecdsa::Signature)],
    ) -> Result<Vec<ecdsa::Signature>, FederationError> {
        let (keys, need) = self.branch_keys(branch)?;
        let mut indexed = Vec::with_capacity(sigs.len());
        for (pk, sig) in sigs {
            let pos = keys.iter().position(|k| k == pk).ok_or(FederationError::NotASigner(*pk))?;
            if indexed.iter().any(|(p, _)| *p == pos) {
                return Err(FederationError::DuplicateSignature(*pk));
            }
            indexed.push((pos, *sig));
        }
        if indexed.len() < need {
            return Err(FederationError::NotEnoughSignatures { got: indexed.len(), need });
        }
        indexed.sort_by_key(|(pos, _)| *pos);
        Ok(indexed.into_iter().take(need).map(|(_, s)| s).collect())
    }

    /// The scriptSig and witness spending this federation's output through
    /// `branch` with `ordered_sigs` exactly as given (no key or count check —
    /// a spend with too few or wrong signatures is built as asked and fails
    /// in the script engine). Layouts:
    ///
    /// * P2SH multisig: scriptSig `OP_0 <sigs> <redeem>`;
    /// * P2SH-ERP: scriptSig `OP_0 <sigs> <selector> <redeem>`;
    /// * P2SH-P2WSH-ERP: scriptSig `<0x0020‖sha256(witness script)>`,
    ///   witness `[<>, sigs…, selector, witness script]`;
    ///
    /// where the selector is empty (false: `OP_NOTIF` runs the normal branch)
    /// or `0x01` (the emergency branch).
    pub fn spend_data(
        &self,
        branch: SpendBranch,
        ordered_sigs: &[ecdsa::Signature],
    ) -> Result<SpendData, FederationError> {
        self.branch_keys(branch)?;
        let selector: &[u8] = match branch {
            SpendBranch::Normal => &[],
            SpendBranch::Emergency => &[1],
        };
        match self.form {
            ScriptForm::P2shMultisig | ScriptForm::P2shErp => {
                let mut b = Builder::new().push_int(0);
                for sig in ordered_sigs {
                    b = b.push_slice(push_bytes(sig.to_vec())?);
                }
                if self.form == ScriptForm::P2shErp {
                    b = match branch {
                        SpendBranch::Normal => b.push_int(0),
                        SpendBranch::Emergency => b.push_int(1),
                    };
                }
                let b = b.push_slice(push_bytes(self.redeem_script.to_bytes())?);
                Ok(SpendData { script_sig: b.into_script(), witness: Witness::new() })
            }
            ScriptForm::P2shP2wshErp => {
                let program = self.redeem_script.to_p2wsh();
                let script_sig = Builder::new().push_slice(push_bytes(program.to_bytes())?).into_script();
                let mut witness = Witness::new();
                witness.push([]);
                for sig in ordered_sigs {
                    witness.push(sig.to_vec());
                }
                witness.push(selector);
                witness.push(self.redeem_script.as_bytes());
                Ok(SpendData { script_sig, witness })
            }
        }
    }

    /// Sets input `index` of `tx` to spend this federation's output through
    /// `branch` with the given signatures, checked and ordered by
    /// [`order_signatures`](Self::order_signatures). For the emergency
    /// branch, call [`prepare_emergency_input`](Self::prepare_emergency_input)
    /// before signing.
    pub fn apply_signatures(
        &self,
        tx: &mut Transaction,
        index: usize,
        branch: SpendBranch,
        sigs: &[(PublicKey, ecdsa::Signature)],
    ) -> Result<(), FederationError> {
        let inputs = tx.input.len();
        if index >= inputs {
            return Err(FederationError::NoSuchInput { index, inputs });
        }
        let ordered = self.order_signatures(branch, sigs)?;
        let data = self.spend_data(branch, &ordered)?;
        set_spend_data(tx, index, data)
    }
}

/// Writes `data` into input `index` of `tx`.
pub fn set_spend_data(tx: &mut Transaction, index: usize, data: SpendData) -> Result<(), FederationError> {
    let inputs = tx.input.len();
    let input = tx.input.get_mut(index).ok_or(FederationError::NoSuchInput { index, inputs })?;
    input.script_sig = data.script_sig;
    input.witness = data.witness;
    Ok(())
}

fn push_bytes(bytes: Vec<u8>) -> Result<PushBytesBuf, FederationError> {
    let len = bytes.len();
    PushBytesBuf::try_from(bytes)
        .map_err(|_| FederationError::RedeemScriptTooLarge { size: len, max: MAX_P2SH_REDEEM_SCRIPT })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bitcoin::hashes::sha256;

    fn keys(tag: u8, n: u8) -> Vec<PublicKey> {
        let secp = Secp256k1::new();
        (0..n)
            .map(|i| {
                let sk = SecretKey::from_slice(&sha256::Hash::hash(&[tag, i]).to_byte_array()).unwrap();
                PublicKey::from_secret_key(&secp, &sk)
            })
            .collect()
    }

    #[test]
    fn keys_are_sorted_and_thresholds_follow_n_over_2_plus_1() {
        let m = keys(1, 9);
        let e = keys(2, 4);
        let fed = Federation::p2sh_p2wsh_erp(&m, &e, 52_560).unwrap();
        assert_eq!(fed.size(), 9);
        assert_eq!(fed.threshold(), 5);
        assert_eq!(fed.emergency_threshold(), 3);
        assert!(fed.members().windows(2).all(|w| w[0].serialize() < w[1].serialize()));
        // Order of input does not matter.
        let mut rev = m.clone();
        rev.reverse();
        assert_eq!(Federation::p2sh_p2wsh_erp(&rev, &e, 52_560).unwrap(), fed);
        for (n, t) in [(1, 1), (2, 2), (3, 2), (4, 3), (15, 8), (20, 11)] {
            assert_eq!(threshold_of(n), t);
        }
    }

    #[test]
    fn erp_script_layout() {
        let m = keys(1, 9);
        let e = keys(2, 4);
        let fed = Federation::p2sh_p2wsh_erp(&m, &e, 52_560).unwrap();
        let s = fed.redeem_script().to_asm_string();
        assert!(s.starts_with("OP_NOTIF OP_PUSHNUM_5 OP_PUSHBYTES_33"), "{s}");
        assert!(
            s.contains(
                "OP_PUSHNUM_9 OP_CHECKMULTISIG OP_ELSE OP_PUSHBYTES_3 50cd00 OP_CSV OP_DROP OP_PUSHNUM_3"
            ),
            "{s}"
        );
        assert!(s.ends_with("OP_PUSHNUM_4 OP_CHECKMULTISIG OP_ENDIF"), "{s}");
        let addr = fed.address(BtcNetwork::Bitcoin).to_string();
        assert!(addr.starts_with('3'), "{addr}");
        assert_eq!(fed.address(BtcNetwork::Bitcoin).script_pubkey(), *fed.script_pubkey());
        let plain = Federation::new(&m, &e, 52_560, ScriptForm::P2shMultisig).unwrap();
        assert_eq!(*plain.redeem_script(), plain.multisig_script());
        assert_eq!(plain.address(BtcNetwork::Bitcoin).script_pubkey(), *plain.script_pubkey());
    }

    #[test]
    fn bad_federations_are_refused() {
        let m = keys(1, 9);
        let e = keys(2, 4);
        assert_eq!(Federation::p2sh_p2wsh_erp(&[], &e, 5), Err(FederationError::NoKeys { which: "members" }));
        assert_eq!(Federation::p2sh_p2wsh_erp(&m, &e, 0), Err(FederationError::ZeroCsv));
        let mut dup = m.clone();
        dup.push(m[3]);
        assert_eq!(Federation::p2sh_p2wsh_erp(&dup, &e, 5), Err(FederationError::DuplicateKey(m[3])));
        let many = keys(3, 21);
        assert!(matches!(
            Federation::p2sh_p2wsh_erp(&many, &e, 5),
            Err(FederationError::TooManyKeys { count: 21, .. })
        ));
        // 15 members + 4 emergency keys do not fit a legacy P2SH redeem script,
        // but do fit P2SH-P2WSH.
        let fifteen = keys(4, 15);
        assert!(matches!(
            Federation::new(&fifteen, &e, 5, ScriptForm::P2shErp),
            Err(FederationError::RedeemScriptTooLarge { .. })
        ));
        assert!(Federation::p2sh_p2wsh_erp(&fifteen, &e, 5).is_ok());
    }
}
