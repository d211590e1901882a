//! Reading a peg-in transaction: who sent it (from input 0) and the peg-in
//! v1 instructions of its `OP_RETURN` output (RSKIP170).
//!
//! Sender kinds follow Rootstock's `BtcLockSenderProvider`: P2PKH (the
//! scriptSig's public key), P2SH-P2WPKH (the witness public key, which must
//! hash to the program in the scriptSig), P2SH multisig and P2SH-P2WSH
//! (refund-only senders). Native P2WPKH is recognised too; whether it may
//! peg in is [`PegParams::native_p2wpkh_sender`](crate::params::PegParams).
//!
//! The v1 payload is `52534b54` ("RSKT") ‖ version `01` ‖ 20-byte sidechain
//! destination, optionally ‖ refund type (`01` P2PKH, `02` P2SH) ‖ 20-byte
//! hash: 25 or 46 bytes, in exactly one `OP_RETURN` output.

use bitcoin::hashes::{Hash, hash160, sha256};
use bitcoin::opcodes::all::{OP_CHECKMULTISIG, OP_RETURN};
use bitcoin::script::{Builder, Instruction, PushBytesBuf};
use bitcoin::{PubkeyHash, Script, ScriptBuf, ScriptHash, Transaction, WPubkeyHash};
use thiserror::Error;

use crate::side::SideAddress;

/// The peg-in v1 payload prefix, "RSKT".
pub const PEGIN_V1_PREFIX: [u8; 4] = *b"RSKT";

/// How input 0 of a peg-in spends.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum SenderKind {
    /// Pay-to-public-key-hash.
    P2pkh,
    /// P2WPKH nested in P2SH.
    P2shP2wpkh,
    /// Native P2WPKH.
    P2wpkh,
    /// A multisig redeem script under P2SH.
    P2shMultisig,
    /// A witness script under P2SH-P2WSH.
    P2shP2wsh,
    /// Anything else.
    Unknown,
}

impl SenderKind {
    /// Whether a legacy peg-in from this kind is refunded rather than
    /// credited (the multisig kinds).
    pub fn is_multisig(self) -> bool {
        matches!(self, SenderKind::P2shMultisig | SenderKind::P2shP2wsh)
    }
}

/// The sender of a peg-in, read from input 0.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sender {
    /// The kind of input.
    pub kind: SenderKind,
    /// The sender's output script (where a refund goes), if known.
    pub script: Option<ScriptBuf>,
    /// The sidechain address of the sender's key (single-key kinds only).
    pub side_address: Option<SideAddress>,
}

impl Sender {
    fn unknown() -> Self {
        Sender { kind: SenderKind::Unknown, script: None, side_address: None }
    }
}

fn pushes(script: &Script) -> Option<Vec<&[u8]>> {
    let mut out = Vec::new();
    for ins in script.instructions() {
        match ins.ok()? {
            Instruction::PushBytes(p) => out.push(p.as_bytes()),
            Instruction::Op(_) => return None,
        }
    }
    Some(out)
}

/// Whether `script` is `<m> <keys> <n> OP_CHECKMULTISIG` with 1 ≤ m ≤ n.
pub fn is_multisig_script(script: &Script) -> bool {
    let Ok(ins) = script.instructions().collect::<Result<Vec<_>, _>>() else {
        return false;
    };
    if ins.len() < 4 {
        return false;
    }
    let num = |i: &Instruction<'_>| match i {
        Instruction::Op(op) => {
            let code = op.to_u8();
            (0x51..=0x60).contains(&code).then(|| usize::from(code - 0x50))
        }
        Instruction::PushBytes(_) => None,
    };
    let (Some(m), Some(n)) = (num(&ins[0]), num(&ins[ins.len() - 2])) else {
        return false;
    };
    let keys = &ins[1..ins.len() - 2];
    matches!(ins[ins.len() - 1], Instruction::Op(op) if op == OP_CHECKMULTISIG)
        && m <= n
        && keys.len() == n
        && keys.iter().all(|k| matches!(k, Instruction::PushBytes(p) if p.len() == 33 || p.len() == 65))
}

/// Reads the sender from input 0 of `tx` (Unknown if there is none).
pub fn parse_sender(tx: &Transaction) -> Sender {
    let Some(input) = tx.input.first() else {
        return Sender::unknown();
    };
    let Some(sig_pushes) = pushes(&input.script_sig) else {
        return Sender::unknown();
    };
    let witness: Vec<&[u8]> = input.witness.iter().collect();
    match (sig_pushes.as_slice(), witness.as_slice()) {
        // P2PKH: <sig> <pubkey>.
        ([_, pk], []) => match bitcoin::PublicKey::from_slice(pk) {
            Ok(pk) => Sender {
                kind: SenderKind::P2pkh,
                script: Some(ScriptBuf::new_p2pkh(&pk.pubkey_hash())),
                side_address: Some(SideAddress::from_public_key(&pk.inner)),
            },
            Err(_) => p2sh_multisig(&sig_pushes),
        },
        // P2SH-P2WPKH: <0014‖h160>, witness [sig, pubkey].
        ([redeem], [_, pk]) if redeem.len() == 22 && redeem[0] == 0 && redeem[1] == 0x14 => {
            match bitcoin::CompressedPublicKey::from_slice(pk) {
                Ok(cpk) if cpk.wpubkey_hash().as_byte_array()[..] == redeem[2..] => Sender {
                    kind: SenderKind::P2shP2wpkh,
                    script: Some(ScriptBuf::new_p2sh(&ScriptHash::hash(redeem))),
                    side_address: Some(SideAddress::from_public_key(&cpk.0)),
                },
                _ => Sender::unknown(),
            }
        }
        // P2SH-P2WSH: <0020‖sha256(ws)>, witness [..., ws].
        ([redeem], [.., ws]) if redeem.len() == 34 && redeem[0] == 0 && redeem[1] == 0x20 => {
            if sha256::Hash::hash(ws).as_byte_array()[..] == redeem[2..] {
                Sender {
                    kind: SenderKind::P2shP2wsh,
                    script: Some(ScriptBuf::new_p2sh(&ScriptHash::hash(redeem))),
                    side_address: None,
                }
            } else {
                Sender::unknown()
            }
        }
        // Native P2WPKH: empty scriptSig, witness [sig, pubkey].
        ([], [_, pk]) => match bitcoin::CompressedPublicKey::from_slice(pk) {
            Ok(cpk) => Sender {
                kind: SenderKind::P2wpkh,
                script: Some(ScriptBuf::new_p2wpkh(&cpk.wpubkey_hash())),
                side_address: Some(SideAddress::from_public_key(&cpk.0)),
            },
            Err(_) => Sender::unknown(),
        },
        (_, []) => p2sh_multisig(&sig_pushes),
        _ => Sender::unknown(),
    }
}

/// P2SH multisig: `OP_0 <sigs…> <multisig redeem script>`.
fn p2sh_multisig(sig_pushes: &[&[u8]]) -> Sender {
    match sig_pushes {
        [first, .., redeem] if first.is_empty() && is_multisig_script(Script::from_bytes(redeem)) => Sender {
            kind: SenderKind::P2shMultisig,
            script: Some(ScriptBuf::new_p2sh(&ScriptHash::hash(redeem))),
            side_address: None,
        },
        _ => Sender::unknown(),
    }
}

/// A peg-in v1 refund address type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum RefundType {
    /// `01`: pay-to-public-key-hash.
    P2pkh = 1,
    /// `02`: pay-to-script-hash.
    P2sh = 2,
}

/// Parsed peg-in v1 instructions.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeginV1 {
    /// Where the RBTC goes.
    pub destination: SideAddress,
    /// Where a refund goes, if given.
    pub refund: Option<ScriptBuf>,
}

/// A malformed peg-in v1 payload (Rootstock's
/// `PeginInstructionsParseException`).
#[derive(Clone, Debug, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum PeginInstructionsError {
    /// More than one `OP_RETURN` output carries the prefix.
    #[error("{0} OP_RETURN outputs carry the RSKT prefix; at most one is allowed")]
    MultipleOpReturns(usize),
    /// The payload has no version byte.
    #[error("payload of {0} bytes has no version")]
    NoVersion(usize),
    /// A version other than 1.
    #[error("unsupported peg-in protocol version {0}")]
    UnsupportedVersion(u8),
    /// A v1 payload that is neither 25 nor 46 bytes.
    #[error("v1 payload of {0} bytes (expected 25 or 46)")]
    BadLength(usize),
    /// An unknown refund address type.
    #[error("unknown refund address type {0}")]
    BadRefundType(u8),
}

/// The data of `script` if it is `OP_RETURN <push starting with RSKT>`.
fn rskt_payload(script: &Script) -> Option<&[u8]> {
    let mut ins = script.instructions();
    match ins.next()? {
        Ok(Instruction::Op(op)) if op == OP_RETURN => {}
        _ => return None,
    }
    let data = match ins.next()? {
        Ok(Instruction::PushBytes(p)) => p.as_bytes(),
        _ => return None,
    };
    (ins.next().is_none() && data.starts_with(&PEGIN_V1_PREFIX)).then_some(data)
}

/// The peg-in v1 instructions of `tx`: `Ok(None)` if no output carries the
/// prefix (a legacy peg-in), an error if the payload is malformed.
pub fn parse_pegin_instructions(tx: &Transaction) -> Result<Option<PeginV1>, PeginInstructionsError> {
    let payloads: Vec<&[u8]> = tx.output.iter().filter_map(|o| rskt_payload(&o.script_pubkey)).collect();
    let data = match payloads.as_slice() {
        [] => return Ok(None),
        [one] => *one,
        many => return Err(PeginInstructionsError::MultipleOpReturns(many.len())),
    };
    let version = *data.get(4).ok_or(PeginInstructionsError::NoVersion(data.len()))?;
    if version != 1 {
        return Err(PeginInstructionsError::UnsupportedVersion(version));
    }
    if data.len() != 25 && data.len() != 46 {
        return Err(PeginInstructionsError::BadLength(data.len()));
    }
    let mut dest = [0u8; 20];
    dest.copy_from_slice(&data[5..25]);
    let refund = if data.len() == 46 {
        let mut hash = [0u8; 20];
        hash.copy_from_slice(&data[26..46]);
        Some(match data[25] {
            1 => ScriptBuf::new_p2pkh(&PubkeyHash::from_byte_array(hash)),
            2 => ScriptBuf::new_p2sh(&ScriptHash::from_byte_array(hash)),
            other => return Err(PeginInstructionsError::BadRefundType(other)),
        })
    } else {
        None
    };
    Ok(Some(PeginV1 { destination: SideAddress(dest), refund }))
}

/// The `OP_RETURN` output script of a peg-in v1 to `destination`, with an
/// optional refund address (type and 20-byte hash).
pub fn pegin_v1_script(destination: &SideAddress, refund: Option<(RefundType, [u8; 20])>) -> ScriptBuf {
    let mut data = PushBytesBuf::new();
    // At most 46 bytes: always a valid push.
    let _ = data.extend_from_slice(&PEGIN_V1_PREFIX);
    let _ = data.push(1);
    let _ = data.extend_from_slice(&destination.0);
    if let Some((kind, hash)) = refund {
        let _ = data.push(kind as u8);
        let _ = data.extend_from_slice(&hash);
    }
    Builder::new().push_opcode(OP_RETURN).push_slice(data).into_script()
}

/// The 20-byte hash of a P2PKH/P2WPKH key or P2SH script, for building
/// refund addresses.
pub fn hash160_of(data: &[u8]) -> [u8; 20] {
    hash160::Hash::hash(data).to_byte_array()
}

/// The P2WPKH program hash of a compressed key (helper for tests and
/// wallets).
pub fn wpubkey_hash(pk: &bitcoin::secp256k1::PublicKey) -> WPubkeyHash {
    bitcoin::CompressedPublicKey(*pk).wpubkey_hash()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use bitcoin::absolute::LockTime;
    use bitcoin::transaction::Version;
    use bitcoin::{Amount, OutPoint, Sequence, TxIn, TxOut, Witness};

    fn tx_with_outputs(outs: Vec<ScriptBuf>) -> Transaction {
        Transaction {
            version: Version::TWO,
            lock_time: LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::null(),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: outs.into_iter().map(|s| TxOut { value: Amount::ZERO, script_pubkey: s }).collect(),
        }
    }

    #[test]
    fn v1_payloads_parse_and_malformed_ones_are_errors() {
        let dest = SideAddress([7; 20]);
        let tx = tx_with_outputs(vec![pegin_v1_script(&dest, None)]);
        assert_eq!(parse_pegin_instructions(&tx).unwrap(), Some(PeginV1 { destination: dest, refund: None }));
        let tx = tx_with_outputs(vec![pegin_v1_script(&dest, Some((RefundType::P2sh, [9; 20])))]);
        let v1 = parse_pegin_instructions(&tx).unwrap().unwrap();
        assert_eq!(v1.refund, Some(ScriptBuf::new_p2sh(&ScriptHash::from_byte_array([9; 20]))));
        let two = tx_with_outputs(vec![pegin_v1_script(&dest, None), pegin_v1_script(&dest, None)]);
        assert_eq!(parse_pegin_instructions(&two), Err(PeginInstructionsError::MultipleOpReturns(2)));
        let raw = |bytes: &[u8]| {
            let mut p = PushBytesBuf::new();
            p.extend_from_slice(bytes).unwrap();
            tx_with_outputs(vec![Builder::new().push_opcode(OP_RETURN).push_slice(p).into_script()])
        };
        assert_eq!(parse_pegin_instructions(&raw(b"RSKT")), Err(PeginInstructionsError::NoVersion(4)));
        assert_eq!(
            parse_pegin_instructions(&raw(b"RSKT\x02")),
            Err(PeginInstructionsError::UnsupportedVersion(2))
        );
        assert_eq!(parse_pegin_instructions(&raw(b"RSKT\x01abc")), Err(PeginInstructionsError::BadLength(8)));
        let mut bad_type = b"RSKT\x01".to_vec();
        bad_type.extend([0u8; 20]);
        bad_type.push(3);
        bad_type.extend([0u8; 20]);
        assert_eq!(parse_pegin_instructions(&raw(&bad_type)), Err(PeginInstructionsError::BadRefundType(3)));
        // Other OP_RETURNs are ignored.
        assert_eq!(parse_pegin_instructions(&raw(b"hello world")), Ok(None));
    }

    #[test]
    fn multisig_scripts_are_recognised() {
        let key = [2u8; 33];
        let ms = Builder::new()
            .push_int(1)
            .push_slice(key)
            .push_slice(key)
            .push_int(2)
            .push_opcode(OP_CHECKMULTISIG)
            .into_script();
        assert!(is_multisig_script(&ms));
        let bad = Builder::new()
            .push_int(3)
            .push_slice(key)
            .push_int(1)
            .push_opcode(OP_CHECKMULTISIG)
            .into_script();
        assert!(!is_multisig_script(&bad));
        assert!(!is_multisig_script(Script::from_bytes(&[0xff, 0x01])));
    }
}
