//! Consensus variants: who may extend the chain, and when.
//!
//! The chain rules (formats, transactions, coinbase, weight, timestamps)
//! are the same for every variant; what a [`Consensus`] decides is the
//! right to produce the next block:
//!
//! * [`ProofOfWork`] — Bitcoin's: a miner with hashrate `h` finds a block
//!   after an exponential time of rate `h / expected_hashes(bits)`
//!   (simulated PoW) and anyone may extend any block; the chain rules check
//!   the header's `bits` (and, with real PoW, its hash).
//! * [`ProofOfStake`] — stake-weighted leader selection in fixed slots: time
//!   is cut into slots of `slot_secs`; the leader of slot `s` on parent `p`
//!   is drawn from the stake table with the randomness `sha256d(p ‖ s)`,
//!   each validator with probability proportional to its stake, so every
//!   node computes the same leader and can check it. The leader produces
//!   at the slot's start, with the header time the slot's start, and
//!   seals the block: a coinbase `OP_RETURN` output carrying its id, the
//!   slot and an ECDSA signature (secp256k1) over the parent, the slot, its
//!   payout script and the block's other transactions. A block whose seal
//!   is missing, whose producer is not the slot's leader, whose slot is not
//!   after its parent's, or whose signature does not verify is invalid.
//!   Missed slots (a leader offline, or not yet holding the parent) stay
//!   empty; two blocks on different parents in nearby slots fork, and the
//!   longer chain wins, as with PoW at constant difficulty.
//!
//! # Adding a variant
//!
//! Implement [`Consensus`]: [`Consensus::plan`] tells a producer when it
//! next produces on its current tip (it is asked again whenever its tip
//! changes and after every block it produces; [`Plan::Keep`] leaves the
//! current timer running); [`Consensus::header_time`] and
//! [`Consensus::seal`] shape the block it produces; [`Consensus::check`]
//! is the extra validity rule every node applies (through the shared block
//! store, once per block). Give it a name in the scenario's
//! `bitcoin.consensus` table (`fika-scenario`'s `btc` plan builds it) and
//! a test that its producers follow it and its check refuses blocks that
//! break it — see this module's tests.

use std::fmt::Debug;
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::opcodes::all::OP_RETURN;
use bitcoin::script::{Builder, Instruction, PushBytesBuf};
use bitcoin::secp256k1::{Message, PublicKey, Secp256k1, SecretKey, ecdsa};
use bitcoin::{Block, BlockHash, Script, ScriptBuf};
use fika_core::{NodeId, NodeRng, SimTime};
use rand::Rng;

use crate::blockdb::{BlockDb, BlockId};
use crate::pow;

/// What a producer should do with its production timer.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Plan {
    /// Leave the timer as it is (running or not).
    Keep,
    /// Produce after this delay; `key` identifies what the timer was
    /// planned for (handed back as [`Planning::armed`]).
    Arm {
        /// Delay from now.
        after: Duration,
        /// The plan's identity (e.g. the difficulty, or the tip).
        key: u64,
    },
    /// Stop the timer: nothing to produce.
    Disarm,
}

/// What a producer knows when it plans.
pub struct Planning<'a> {
    /// The block store.
    pub db: &'a BlockDb,
    /// The producer's tip.
    pub tip: BlockId,
    /// The producer.
    pub me: NodeId,
    /// Its hashrate (hashes per second; proof of work).
    pub hashrate: f64,
    /// Now.
    pub now: SimTime,
    /// The key of the running timer, if one runs.
    pub armed: Option<u64>,
    /// When this producer last produced a block (valid or not), if ever.
    pub produced_at: Option<SimTime>,
    /// The producer's random stream.
    pub rng: &'a mut NodeRng,
}

/// A block breaking a consensus variant's own rule.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConsensusError {
    /// The block carries no (well-formed) seal.
    #[error("no proof-of-stake seal in the coinbase")]
    NoSeal,
    /// The header time is not the start of the sealed slot.
    #[error("header time {time} is not the start of slot {slot} ({expected})")]
    WrongSlotTime {
        /// The slot in the seal.
        slot: u64,
        /// The header's time.
        time: u32,
        /// The slot's start.
        expected: u64,
    },
    /// The slot is not after the parent's.
    #[error("slot {slot} is not after the parent's slot {parent}")]
    SlotNotAfterParent {
        /// The block's slot.
        slot: u64,
        /// The parent's slot.
        parent: u64,
    },
    /// The producer is not the slot's leader.
    #[error("node {producer} produced slot {slot}, whose leader is node {leader}")]
    NotLeader {
        /// The slot.
        slot: u64,
        /// Who sealed it.
        producer: u32,
        /// Who leads it.
        leader: u32,
    },
    /// The signature does not verify under the producer's key.
    #[error("bad seal signature by node {producer}")]
    BadSignature {
        /// Who claims to have sealed.
        producer: u32,
    },
}

/// A rule for who may produce the next block, and when (see the module
/// documentation).
pub trait Consensus: Debug {
    /// Its name, as scenarios write it.
    fn name(&self) -> &'static str;
    /// When the producer next produces on its tip.
    fn plan(&self, p: &mut Planning<'_>) -> Plan;
    /// The header time of a block produced now (`now_unix`) at `now`.
    fn header_time(&self, _now: SimTime, now_unix: u32) -> u32 {
        now_unix
    }
    /// An extra coinbase output proving the producer's right to a block on
    /// `parent` paying `payout` with transactions `txs` (after the
    /// coinbase), at header time `time`; `None` for none.
    fn seal(
        &self,
        _me: NodeId,
        _parent: &BlockHash,
        _time: u32,
        _payout: &Script,
        _txs: &[bitcoin::Transaction],
    ) -> Option<ScriptBuf> {
        None
    }
    /// The variant's own validity rule for `block` on `parent`.
    fn check(&self, db: &BlockDb, parent: BlockId, block: &Block) -> Result<(), ConsensusError>;
}

/// Bitcoin's proof of work, simulated or real (see the module documentation).
#[derive(Clone, Copy, Debug, Default)]
pub struct ProofOfWork;

impl Consensus for ProofOfWork {
    fn name(&self) -> &'static str {
        "pow"
    }

    /// The waiting time to a block is exponential, hence memoryless: a new
    /// tip does not change when this miner finds its next block, only what
    /// it builds on, so the timer is redrawn only when the difficulty
    /// changes (or was never drawn).
    fn plan(&self, p: &mut Planning<'_>) -> Plan {
        if p.hashrate <= 0.0 {
            return Plan::Keep;
        }
        let bits = p.db.next_bits(p.tip);
        let key = u64::from(bits.to_consensus());
        if p.armed == Some(key) {
            return Plan::Keep;
        }
        let rate = p.hashrate / pow::expected_hashes(bits);
        if !(rate > 0.0 && rate.is_finite()) {
            return Plan::Disarm;
        }
        let u: f64 = 1.0 - p.rng.r#gen::<f64>();
        match Duration::try_from_secs_f64(-u.ln() / rate) {
            Ok(after) => Plan::Arm { after, key },
            Err(_) => Plan::Disarm,
        }
    }

    fn check(&self, _db: &BlockDb, _parent: BlockId, _block: &Block) -> Result<(), ConsensusError> {
        Ok(())
    }
}

/// One validator of a [`ProofOfStake`] chain.
#[derive(Clone, Debug, PartialEq)]
pub struct Validator {
    /// Its node.
    pub node: NodeId,
    /// Its stake (any positive unit; only shares matter).
    pub stake: f64,
    /// Its public key, which checks its seals.
    pub key: PublicKey,
}

/// The tag that starts a proof-of-stake seal.
const SEAL_TAG: &[u8; 4] = b"FPOS";
/// Slots searched ahead for the producer's next leadership.
const SEARCH_SLOTS: u64 = 100_000;

/// Stake-weighted leader selection in fixed slots (see the module
/// documentation).
#[derive(Clone, Debug)]
pub struct ProofOfStake {
    slot_secs: u32,
    start_unix: u32,
    /// Validators by node id.
    validators: Vec<Validator>,
    /// Cumulative stakes, for the draw.
    cumulative: Vec<f64>,
    /// This process's validators' keys (the producer signs with its own).
    secrets: Vec<(NodeId, SecretKey)>,
}

/// The deterministic secret key of validator `node` in a run with `seed`
/// (as wallet keys are derived from the seed).
pub fn validator_key(seed: u64, node: NodeId) -> SecretKey {
    let mut counter = 0u32;
    loop {
        let mut pre = b"fika pos validator".to_vec();
        pre.extend_from_slice(&seed.to_le_bytes());
        pre.extend_from_slice(&node.0.to_le_bytes());
        pre.extend_from_slice(&counter.to_le_bytes());
        if let Ok(sk) = SecretKey::from_slice(sha256d::Hash::hash(&pre).as_byte_array()) {
            return sk;
        }
        counter += 1;
    }
}

/// Why a proof-of-stake configuration is unusable.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum StakeError {
    /// No validator has stake.
    #[error("no validator has a positive stake")]
    NoStake,
    /// A stake is not a finite non-negative number.
    #[error("node {node}: stake {stake} is not a finite non-negative number")]
    BadStake {
        /// The node.
        node: u32,
        /// Its stake.
        stake: f64,
    },
    /// Slots of zero seconds.
    #[error("slot_secs must be at least 1")]
    ZeroSlot,
}

impl ProofOfStake {
    /// Slots of `slot_secs` from Unix time `start_unix` (virtual time zero);
    /// validators `(node, stake)` with keys derived from `seed` by
    /// [`validator_key`]. Nodes with zero stake are left out.
    pub fn new(
        slot_secs: u32,
        start_unix: u32,
        seed: u64,
        stakes: &[(NodeId, f64)],
    ) -> Result<ProofOfStake, StakeError> {
        if slot_secs == 0 {
            return Err(StakeError::ZeroSlot);
        }
        let secp = Secp256k1::signing_only();
        let mut validators = Vec::new();
        let mut secrets = Vec::new();
        let mut sorted: Vec<(NodeId, f64)> = stakes.to_vec();
        sorted.sort_by_key(|(n, _)| *n);
        for (node, stake) in sorted {
            if !(stake.is_finite() && stake >= 0.0) {
                return Err(StakeError::BadStake { node: node.0, stake });
            }
            if stake == 0.0 {
                continue;
            }
            let sk = validator_key(seed, node);
            validators.push(Validator { node, stake, key: PublicKey::from_secret_key(&secp, &sk) });
            secrets.push((node, sk));
        }
        if validators.is_empty() {
            return Err(StakeError::NoStake);
        }
        let mut total = 0.0;
        let cumulative = validators
            .iter()
            .map(|v| {
                total += v.stake;
                total
            })
            .collect();
        Ok(ProofOfStake { slot_secs, start_unix, validators, cumulative, secrets })
    }

    /// The validators, by node id.
    pub fn validators(&self) -> &[Validator] {
        &self.validators
    }

    /// Slot length, seconds.
    pub fn slot_secs(&self) -> u32 {
        self.slot_secs
    }

    /// The slot a header time falls in (times before the start: slot 0).
    pub fn slot_of(&self, time: u32) -> u64 {
        u64::from(time.saturating_sub(self.start_unix)) / u64::from(self.slot_secs)
    }

    /// The Unix time slot `slot` starts.
    pub fn slot_start_unix(&self, slot: u64) -> u64 {
        u64::from(self.start_unix) + slot * u64::from(self.slot_secs)
    }

    /// The leader of slot `slot` on `parent`: a stake-weighted draw from
    /// `sha256d(parent ‖ slot)`.
    pub fn leader(&self, parent: &BlockHash, slot: u64) -> NodeId {
        let mut pre = parent.to_byte_array().to_vec();
        pre.extend_from_slice(&slot.to_le_bytes());
        let h = sha256d::Hash::hash(&pre);
        let mut word = [0u8; 8];
        word.copy_from_slice(&h.as_byte_array()[..8]);
        // 53 random bits → [0, 1).
        let u = (u64::from_le_bytes(word) >> 11) as f64 / (1u64 << 53) as f64;
        let total = self.cumulative.last().copied().unwrap_or(0.0);
        let x = u * total;
        let i = self.cumulative.partition_point(|c| *c <= x).min(self.validators.len() - 1);
        self.validators[i].node
    }

    /// What a seal signs: the parent, the slot, the payout script and the
    /// ids of the block's other transactions.
    fn sealed_message(
        parent: &BlockHash,
        slot: u64,
        payout: &Script,
        txs: &[bitcoin::Transaction],
    ) -> Message {
        let mut pre = Vec::with_capacity(48 + payout.len() + 32 * txs.len());
        pre.extend_from_slice(SEAL_TAG);
        pre.extend_from_slice(&parent.to_byte_array());
        pre.extend_from_slice(&slot.to_le_bytes());
        pre.extend_from_slice(payout.as_bytes());
        for tx in txs {
            pre.extend_from_slice(&tx.compute_txid().to_byte_array());
        }
        Message::from_digest(sha256d::Hash::hash(&pre).to_byte_array())
    }

    /// Reads a seal output: producer, slot, signature.
    fn read_seal(script: &Script) -> Option<(u32, u64, ecdsa::Signature)> {
        let mut ins = script.instructions();
        if !matches!(ins.next(), Some(Ok(Instruction::Op(op))) if op == OP_RETURN) {
            return None;
        }
        let Some(Ok(Instruction::PushBytes(data))) = ins.next() else { return None };
        let d = data.as_bytes();
        if d.len() != 4 + 4 + 8 + 64 || &d[..4] != SEAL_TAG {
            return None;
        }
        let producer = u32::from_le_bytes(d[4..8].try_into().ok()?);
        let slot = u64::from_le_bytes(d[8..16].try_into().ok()?);
        let sig = ecdsa::Signature::from_compact(&d[16..]).ok()?;
        Some((producer, slot, sig))
    }
}

impl Consensus for ProofOfStake {
    fn name(&self) -> &'static str {
        "pos"
    }

    /// The first slot, from now on and after the tip's, that the producer
    /// leads on its tip; replanned whenever the tip changes.
    fn plan(&self, p: &mut Planning<'_>) -> Plan {
        if self.validators.binary_search_by_key(&p.me, |v| v.node).is_err() {
            return Plan::Disarm;
        }
        let tip = p.db.rec(p.tip);
        let tip_hash = tip.data.hash;
        let mut k = [0u8; 8];
        k.copy_from_slice(&tip_hash.to_byte_array()[..8]);
        let key = u64::from_le_bytes(k);
        if p.armed == Some(key) {
            return Plan::Keep;
        }
        let slot_ns = u64::from(self.slot_secs) * 1_000_000_000;
        let now = p.now.as_nanos();
        let from_now = now.div_ceil(slot_ns);
        // Never a slot already produced in (should that block have been
        // refused, producing again at once would not end).
        let after_produced = p.produced_at.map_or(0, |t| t.as_nanos() / slot_ns + 1);
        let after_tip = self.slot_of(tip.data.block.header.time) + 1;
        let first = from_now.max(after_tip).max(after_produced);
        for slot in first..first + SEARCH_SLOTS {
            if self.leader(&tip_hash, slot) == p.me {
                let at = slot.saturating_mul(slot_ns);
                return Plan::Arm { after: Duration::from_nanos(at.saturating_sub(now)), key };
            }
        }
        Plan::Disarm
    }

    fn header_time(&self, now: SimTime, _now_unix: u32) -> u32 {
        let slot = now.as_nanos() / (u64::from(self.slot_secs) * 1_000_000_000);
        u32::try_from(self.slot_start_unix(slot)).unwrap_or(u32::MAX)
    }

    fn seal(
        &self,
        me: NodeId,
        parent: &BlockHash,
        time: u32,
        payout: &Script,
        txs: &[bitcoin::Transaction],
    ) -> Option<ScriptBuf> {
        let (_, sk) = self.secrets.iter().find(|(n, _)| *n == me)?;
        let slot = self.slot_of(time);
        let msg = Self::sealed_message(parent, slot, payout, txs);
        let sig = Secp256k1::signing_only().sign_ecdsa(&msg, sk);
        let mut data = SEAL_TAG.to_vec();
        data.extend_from_slice(&me.0.to_le_bytes());
        data.extend_from_slice(&slot.to_le_bytes());
        data.extend_from_slice(&sig.serialize_compact());
        let push = PushBytesBuf::try_from(data).ok()?;
        Some(Builder::new().push_opcode(OP_RETURN).push_slice(push).into_script())
    }

    fn check(&self, db: &BlockDb, parent: BlockId, block: &Block) -> Result<(), ConsensusError> {
        let coinbase = block.txdata.first().ok_or(ConsensusError::NoSeal)?;
        let (producer, slot, sig) = coinbase
            .output
            .iter()
            .find_map(|o| Self::read_seal(&o.script_pubkey))
            .ok_or(ConsensusError::NoSeal)?;
        let time = block.header.time;
        let expected = self.slot_start_unix(slot);
        if u64::from(time) != expected {
            return Err(ConsensusError::WrongSlotTime { slot, time, expected });
        }
        let p = db.rec(parent);
        let ps = self.slot_of(p.data.block.header.time);
        if slot <= ps {
            return Err(ConsensusError::SlotNotAfterParent { slot, parent: ps });
        }
        let leader = self.leader(&p.data.hash, slot);
        if leader.0 != producer {
            return Err(ConsensusError::NotLeader { slot, producer, leader: leader.0 });
        }
        let key = self
            .validators
            .binary_search_by_key(&leader, |v| v.node)
            .map(|i| self.validators[i].key)
            .map_err(|_| ConsensusError::BadSignature { producer })?;
        let payout = coinbase.output.first().map(|o| o.script_pubkey.as_script()).unwrap_or(Script::new());
        let msg = Self::sealed_message(&p.data.hash, slot, payout, &block.txdata[1..]);
        Secp256k1::verification_only()
            .verify_ecdsa(&msg, &sig, &key)
            .map_err(|_| ConsensusError::BadSignature { producer })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use fika_core::derive_rng;

    fn pos() -> ProofOfStake {
        let stakes = [(NodeId(0), 1.0), (NodeId(1), 3.0), (NodeId(2), 0.0), (NodeId(3), 6.0)];
        ProofOfStake::new(10, 1_700_000_000, 7, &stakes).expect("valid")
    }

    #[test]
    fn leaders_follow_stake_shares() {
        let pos = pos();
        assert_eq!(pos.validators().iter().map(|v| v.node.0).collect::<Vec<_>>(), [0, 1, 3]);
        let parent = BlockHash::all_zeros();
        let mut count = [0u32; 4];
        let n = 20_000;
        for slot in 0..n {
            count[pos.leader(&parent, slot).index()] += 1;
        }
        assert_eq!(count[2], 0, "no stake, never a leader");
        for (i, share) in [(0, 0.1), (1, 0.3), (3, 0.6)] {
            let got = f64::from(count[i]) / n as f64;
            assert!((got - share).abs() < 0.015, "node {i}: {got} vs {share}");
        }
        // Same inputs, same leader; another parent, another sequence.
        let other = BlockHash::from_byte_array([1; 32]);
        let a: Vec<NodeId> = (0..64).map(|s| pos.leader(&parent, s)).collect();
        let b: Vec<NodeId> = (0..64).map(|s| pos.leader(&other, s)).collect();
        assert_eq!(a, (0..64).map(|s| pos.leader(&parent, s)).collect::<Vec<_>>());
        assert_ne!(a, b);
    }

    #[test]
    fn bad_configurations_are_refused() {
        assert_eq!(
            ProofOfStake::new(0, 0, 1, &[(NodeId(0), 1.0)]).expect_err("refused"),
            StakeError::ZeroSlot
        );
        assert_eq!(
            ProofOfStake::new(5, 0, 1, &[(NodeId(0), 0.0)]).expect_err("refused"),
            StakeError::NoStake
        );
        assert!(matches!(
            ProofOfStake::new(5, 0, 1, &[(NodeId(4), f64::NAN)]),
            Err(StakeError::BadStake { node: 4, .. })
        ));
    }

    #[test]
    fn seals_read_back_and_bind_the_payout() {
        let pos = pos();
        let parent = BlockHash::from_byte_array([9; 32]);
        let time = u32::try_from(pos.slot_start_unix(12)).expect("fits");
        let payout = ScriptBuf::from_bytes(vec![0x51]);
        let seal = pos.seal(NodeId(3), &parent, time, &payout, &[]).expect("node 3 signs");
        let (producer, slot, sig) = ProofOfStake::read_seal(&seal).expect("reads");
        assert_eq!((producer, slot), (3, 12));
        let key = pos.validators()[2].key;
        let secp = Secp256k1::verification_only();
        let msg = ProofOfStake::sealed_message(&parent, 12, &payout, &[]);
        assert!(secp.verify_ecdsa(&msg, &sig, &key).is_ok());
        let stolen = ProofOfStake::sealed_message(&parent, 12, &ScriptBuf::from_bytes(vec![0x52]), &[]);
        assert!(secp.verify_ecdsa(&stolen, &sig, &key).is_err(), "another payout breaks the seal");
        assert!(pos.seal(NodeId(2), &parent, time, &payout, &[]).is_none(), "no stake, no key");
        assert!(ProofOfStake::read_seal(&ScriptBuf::from_bytes(vec![0x6a, 0x01, 0x00])).is_none());
    }

    /// A block on genesis in `slot`, sealed by `producer`, paying `payout`.
    fn block_in_slot(
        pos: &ProofOfStake,
        db: &BlockDb,
        producer: u32,
        slot: u64,
        payout: &ScriptBuf,
    ) -> Block {
        let time = u32::try_from(pos.slot_start_unix(slot)).expect("fits");
        let parent = db.rec(db.genesis()).data.hash;
        let header = db.child_header(db.genesis(), time);
        let mut cb = crate::template::coinbase_tx(1, payout, db.params().subsidy(1), &[]);
        let seal = pos.seal(NodeId(producer), &parent, time, payout, &[]).expect("a validator seals");
        cb.output.push(bitcoin::TxOut { value: bitcoin::Amount::ZERO, script_pubkey: seal });
        crate::template::assemble_block(header, cb, vec![])
    }

    fn verdict(db: &mut BlockDb, block: Block) -> Result<(), crate::BlockError> {
        let id =
            db.insert(std::sync::Arc::new(crate::blockdb::SimBlock::new(block, 0)), None).expect("stored");
        db.validate(id)
    }

    #[test]
    fn the_store_accepts_the_leaders_block_and_refuses_every_other() {
        let params = crate::params::ChainParams::regtest_fast();
        let pos = pos();
        let mut db = BlockDb::new(params, &[]);
        db.set_consensus(std::sync::Arc::new(pos.clone()));
        let genesis = db.rec(db.genesis()).data.hash;
        let leader = pos.leader(&genesis, 1).0;
        let other = [0u32, 1, 3].into_iter().find(|n| *n != leader).expect("another validator");
        let payout = ScriptBuf::from_bytes(vec![0x51]);

        let forged = block_in_slot(&pos, &db, other, 1, &payout);
        assert_eq!(
            verdict(&mut db, forged),
            Err(ConsensusError::NotLeader { slot: 1, producer: other, leader }.into())
        );
        // The leader's seal on another payout (a thief's block).
        let mut stolen = block_in_slot(&pos, &db, leader, 1, &ScriptBuf::from_bytes(vec![0x52]));
        stolen.txdata[0].output[0].script_pubkey = payout.clone();
        stolen.header.merkle_root = stolen.compute_merkle_root().expect("root");
        assert_eq!(verdict(&mut db, stolen), Err(ConsensusError::BadSignature { producer: leader }.into()));
        // The leader's block, a second late.
        let mut late = block_in_slot(&pos, &db, leader, 1, &payout);
        late.header.time += 1;
        assert!(matches!(
            verdict(&mut db, late),
            Err(crate::BlockError::Consensus(ConsensusError::WrongSlotTime { .. }))
        ));
        // No seal at all.
        let header = db.child_header(db.genesis(), u32::try_from(pos.slot_start_unix(1)).expect("fits"));
        let cb = crate::template::coinbase_tx(1, &payout, db.params().subsidy(1), &[]);
        let bare = crate::template::assemble_block(header, cb, vec![]);
        assert_eq!(verdict(&mut db, bare), Err(ConsensusError::NoSeal.into()));
        // The leader's own block is valid.
        let good = block_in_slot(&pos, &db, leader, 1, &payout);
        assert_eq!(verdict(&mut db, good), Ok(()));
    }

    #[test]
    fn proof_of_work_keeps_its_timer_until_the_difficulty_changes() {
        let params = crate::params::ChainParams::regtest_fast();
        let db = BlockDb::new(params, &[]);
        let mut rng = derive_rng(1, "node", 0);
        let mut p = Planning {
            db: &db,
            tip: db.genesis(),
            me: NodeId(0),
            hashrate: 1.0,
            now: SimTime::ZERO,
            armed: None,
            produced_at: None,
            rng: &mut rng,
        };
        let Plan::Arm { key, .. } = ProofOfWork.plan(&mut p) else { panic!("a miner arms") };
        p.armed = Some(key);
        assert_eq!(ProofOfWork.plan(&mut p), Plan::Keep);
        p.hashrate = 0.0;
        p.armed = None;
        assert_eq!(ProofOfWork.plan(&mut p), Plan::Keep, "no hashrate: nothing to do");
    }
}
