//! How a full node applies an attack strategy (see [`crate::attack`]): the
//! private-chain races (double spend, majority reorg), eclipse filtering,
//! censorship, and the honest nodes' γ tie-break. The decisions are the
//! pure machines' of `attack`; this module only feeds them what the node
//! sees and carries out what they return.

use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::Secp256k1;
use bitcoin::sighash::EcdsaSighashType;
use bitcoin::{Amount, OutPoint, Transaction, TxIn, TxOut, Txid};
use fika_core::{Context, Event, NodeId, SimTime};
use rand::Rng;

use super::{FullNode, TX_DONE, TX_POOL, slot};
use crate::attack::{
    CensorPlan, DoubleSpendPlan, EclipsePlan, MajorityPlan, Race, RaceOutcome, RaceStep, Strategy,
};
use crate::blockdb::{BlockDb, BlockId};
use crate::msg::{BtcMsg, Inv};

/// Timer of a race attack's start.
pub(super) const TIMER_ATTACK: fika_core::TimerId = 4;

/// What a race attacker did, for reports.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RaceRecord {
    /// When the private mining started (and, for a double spend, the payment was sent).
    pub started: Option<SimTime>,
    /// When the race ended (release or give-up).
    pub ended: Option<SimTime>,
    /// Height of the block the private chain forks from.
    pub fork_height: Option<u32>,
    /// How it ended.
    pub outcome: Option<RaceOutcome>,
    /// The payment to the merchant (double spend).
    pub payment: Option<Txid>,
    /// The conflicting transaction paying the attacker back (double spend).
    pub conflict: Option<Txid>,
    /// Confirmations the payment had on the public chain when the race ended.
    pub confirmations_at_end: Option<u32>,
    /// Why the attack could not start, if it could not.
    pub failed: Option<String>,
}

/// A race attack's plan.
#[derive(Clone, Debug)]
enum RacePlan {
    DoubleSpend(DoubleSpendPlan),
    Majority(MajorityPlan),
}

/// A race attack in progress.
pub(super) struct RaceAttack {
    plan: RacePlan,
    race: Option<Race>,
    /// The best block received from peers.
    public_tip: BlockId,
    record: RaceRecord,
}

/// The attack a node follows (selfish mining has its own field).
pub(super) enum Attack {
    Race(Box<RaceAttack>),
    Eclipse(EclipsePlan),
    Censor(CensorPlan),
}

impl FullNode {
    /// Makes this node follow `strategy` from now on (replacing any other).
    pub fn set_strategy(&mut self, strategy: Strategy) {
        self.attack = None;
        self.set_selfish(false);
        let race = |plan| {
            Some(Attack::Race(Box::new(RaceAttack {
                plan,
                race: None,
                public_tip: 0,
                record: RaceRecord::default(),
            })))
        };
        match strategy {
            Strategy::Honest => {}
            Strategy::Selfish => self.set_selfish(true),
            Strategy::DoubleSpend(p) => self.attack = race(RacePlan::DoubleSpend(p)),
            Strategy::Majority(p) => self.attack = race(RacePlan::Majority(p)),
            Strategy::Eclipse(p) => self.attack = Some(Attack::Eclipse(p)),
            Strategy::Censor(p) => self.attack = Some(Attack::Censor(p)),
        }
        // `message` consults `cut_off` only when this is set.
        self.hot.filtered = matches!(self.attack, Some(Attack::Eclipse(_)));
    }

    /// The name of the strategy this node follows.
    pub fn strategy_name(&self) -> &'static str {
        match &self.attack {
            _ if self.selfish.is_some() => "selfish",
            None => "honest",
            Some(Attack::Race(r)) => match r.plan {
                RacePlan::DoubleSpend(_) => "double-spend",
                RacePlan::Majority(_) => "majority",
            },
            Some(Attack::Eclipse(_)) => "eclipse",
            Some(Attack::Censor(_)) => "censor",
        }
    }

    /// Sets the γ tie-break rule (honest nodes; `None`: first seen wins).
    pub fn set_tie_break(&mut self, rule: Option<crate::attack::TieBreak>) {
        self.tie_break = rule;
    }

    /// The race machine of a double spend or majority attack, once started.
    pub fn race(&self) -> Option<&Race> {
        match &self.attack {
            Some(Attack::Race(r)) => r.race.as_ref(),
            _ => None,
        }
    }

    /// What a double spend or majority attack did.
    pub fn race_record(&self) -> Option<&RaceRecord> {
        match &self.attack {
            Some(Attack::Race(r)) => Some(&r.record),
            _ => None,
        }
    }

    /// The censorship plan, for a censoring miner.
    pub fn censor_plan(&self) -> Option<&CensorPlan> {
        match &self.attack {
            Some(Attack::Censor(c)) => Some(c),
            _ => None,
        }
    }

    /// The eclipse plan, for an eclipsing node.
    pub fn eclipse_plan(&self) -> Option<&EclipsePlan> {
        match &self.attack {
            Some(Attack::Eclipse(e)) => Some(e),
            _ => None,
        }
    }

    /// Schedules a race attack's start (at start-up).
    pub(super) fn schedule_attack(&mut self, cx: &mut dyn Context<BtcMsg>) {
        let Some(Attack::Race(r)) = &self.attack else { return };
        if r.race.is_some() || r.record.failed.is_some() {
            return;
        }
        let at = match &r.plan {
            RacePlan::DoubleSpend(p) => p.at,
            RacePlan::Majority(p) => p.at,
        };
        let now = cx.now();
        let after = if at > now { at - now } else { std::time::Duration::ZERO };
        cx.set_timer(after, TIMER_ATTACK);
    }

    /// Whether a race is on: blocks from peers do not move the tip.
    pub(super) fn racing(&self) -> bool {
        self.race().is_some_and(Race::is_running)
    }

    /// Whether block `id` is withheld by a race.
    pub(super) fn race_hidden(&self, id: BlockId) -> bool {
        self.race().is_some_and(|r| r.is_hidden(id))
    }

    /// Starts the race: pays the merchant (double spend) and begins mining
    /// privately on the current tip.
    pub(super) fn begin_attack(&mut self, cx: &mut dyn Context<BtcMsg>) {
        let tip = self.tip;
        let fork = self.db.borrow().rec(tip).height;
        let Some(Attack::Race(r)) = &self.attack else { return };
        if r.race.is_some() {
            return;
        }
        let plan = r.plan.clone();
        let mut record = RaceRecord { started: Some(cx.now()), fork_height: Some(fork), ..r.record.clone() };
        let race = match &plan {
            RacePlan::Majority(p) => Race::new(fork, Some(fork.saturating_add(p.depth)), p.give_up),
            RacePlan::DoubleSpend(p) => match self.double_spend_txs(p) {
                Ok((pay, conflict)) => {
                    let (pay_id, conflict_id) = (pay.compute_txid(), conflict.compute_txid());
                    // The conflicting transaction goes into this node's own
                    // mempool only (never announced), so its private blocks hold it.
                    let idx = self.db.borrow_mut().intern_tx(Arc::new(conflict), cx.now().as_nanos());
                    if let Err(e) = self.accept_to_pool(idx) {
                        record.failed = Some(format!("the conflicting transaction is refused: {e}"));
                    } else {
                        *slot(&mut self.txs, idx) = TX_POOL;
                        let pay = Arc::new(pay);
                        let pidx = self.db.borrow_mut().intern_tx(Arc::clone(&pay), cx.now().as_nanos());
                        *slot(&mut self.txs, pidx) = TX_DONE;
                        for k in 0..cx.peer_count() {
                            let peer = cx.peer(k);
                            if !self.wallets.iter().any(|(w, _)| *w == peer) {
                                cx.send(peer, BtcMsg::Tx(Arc::clone(&pay)));
                            }
                        }
                        record.payment = Some(pay_id);
                        record.conflict = Some(conflict_id);
                    }
                    Race::new(fork, None, p.give_up)
                }
                Err(e) => {
                    record.failed = Some(e);
                    Race::new(fork, None, p.give_up)
                }
            },
        };
        let failed = record.failed.clone();
        let mut ev = Event::new("btc.attack.start").with("fork_height", fork);
        if let Some(t) = record.payment {
            ev = ev.with("payment", t.to_byte_array());
        }
        if let Some(Attack::Race(r)) = &mut self.attack {
            r.record = record;
            r.public_tip = tip;
            if failed.is_none() {
                r.race = Some(race);
            }
        }
        match failed {
            Some(reason) => cx.emit(Event::new("btc.attack.failed").with("reason", reason)),
            None => cx.emit(ev),
        }
    }

    /// The payment to the merchant and the conflicting payment to self.
    fn double_spend_txs(&self, p: &DoubleSpendPlan) -> Result<(Transaction, Transaction), String> {
        let secp = Secp256k1::signing_only();
        let me = crate::sign::p2wpkh_script(&p.key.public_key(&secp));
        let change = p.value.checked_sub(p.amount).and_then(|v| v.checked_sub(p.fee)).ok_or_else(|| {
            format!("the coin ({}) cannot pay {} and a fee of {}", p.value, p.amount, p.fee)
        })?;
        let back = p.value.checked_sub(p.fee).unwrap_or(Amount::ZERO);
        let input = TxIn { previous_output: p.coin, sequence: bitcoin::Sequence::MAX, ..TxIn::default() };
        let tx = |outputs: Vec<TxOut>| Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![input.clone()],
            output: outputs,
        };
        let mut pay = tx(vec![
            TxOut { value: p.amount, script_pubkey: p.merchant.clone() },
            TxOut { value: change, script_pubkey: me.clone() },
        ]);
        let mut conflict = tx(vec![TxOut { value: back, script_pubkey: me }]);
        for t in [&mut pay, &mut conflict] {
            crate::sign::sign_p2wpkh_input(&secp, t, 0, &p.key, p.value, EcdsaSighashType::All)
                .map_err(|e| e.to_string())?;
        }
        Ok((pay, conflict))
    }

    /// During a race, the attacker found block `id`: returns the older
    /// blocks to announce now if the race is released (the new block
    /// itself is announced as the new tip).
    pub(super) fn race_mined(&mut self, cx: &mut dyn Context<BtcMsg>, id: BlockId) -> Vec<BlockId> {
        if !self.racing() {
            return Vec::new();
        }
        let height = self.db.borrow().rec(id).height;
        let step = match &mut self.attack {
            Some(Attack::Race(r)) => {
                r.race.as_mut().map_or(RaceStep::Continue, |race| race.on_mined(id, height))
            }
            _ => RaceStep::Continue,
        };
        match step {
            RaceStep::Release(blocks) => {
                self.race_ended(cx);
                blocks.into_iter().filter(|b| *b != id).collect()
            }
            // Mining cannot make the attacker fall behind.
            RaceStep::GiveUp | RaceStep::Continue => Vec::new(),
        }
    }

    /// During a race, block `b` arrived from a peer: track the public chain
    /// and the payment's confirmations; release or give up as the race says.
    pub(super) fn race_public(&mut self, cx: &mut dyn Context<BtcMsg>, b: BlockId) {
        let (public_tip, height, target) = {
            let db = self.db.borrow();
            let Some(Attack::Race(r)) = &self.attack else { return };
            let public_tip = if db.rec(b).work > db.rec(r.public_tip).work { b } else { r.public_tip };
            let target = match &r.plan {
                RacePlan::DoubleSpend(p) => r
                    .record
                    .payment
                    .and_then(|t| payment_height(&db, public_tip, t))
                    .map(|h| h.saturating_add(p.confirmations.saturating_sub(1))),
                RacePlan::Majority(_) => r.race.as_ref().and_then(Race::target),
            };
            (public_tip, db.rec(public_tip).height, target)
        };
        let mut steps = Vec::new();
        if let Some(Attack::Race(r)) = &mut self.attack {
            r.public_tip = public_tip;
            if let Some(race) = r.race.as_mut() {
                steps.push(race.on_public(height));
                steps.push(race.set_target(target));
            }
        }
        for step in steps {
            match step {
                RaceStep::Continue => {}
                RaceStep::Release(blocks) => {
                    self.race_ended(cx);
                    for p in blocks {
                        self.announce_block(cx, p, None);
                    }
                }
                RaceStep::GiveUp => {
                    self.race_ended(cx);
                    if public_tip != self.tip {
                        self.set_tip(cx, public_tip, None);
                    }
                }
            }
        }
    }

    /// Records the end of a race and emits it.
    fn race_ended(&mut self, cx: &mut dyn Context<BtcMsg>) {
        let now = cx.now();
        let db = std::rc::Rc::clone(&self.db);
        let db = db.borrow();
        let Some(Attack::Race(r)) = &mut self.attack else { return };
        let Some(outcome) = r.race.as_ref().and_then(Race::outcome) else { return };
        r.record.ended = Some(now);
        r.record.outcome = Some(outcome);
        r.record.confirmations_at_end = r.record.payment.map(|t| {
            payment_height(&db, r.public_tip, t)
                .map_or(0, |h| (db.rec(r.public_tip).height + 1).saturating_sub(h))
        });
        let (kind, private, public) = match outcome {
            RaceOutcome::Released { private, public } => ("btc.attack.release", private, public),
            RaceOutcome::GaveUp { private, public } => ("btc.attack.give-up", private, public),
        };
        cx.emit(Event::new(kind).with("private", private).with("public", public));
    }

    /// Whether block traffic with `peer` is cut (an eclipse attacker and its victim).
    pub(super) fn cut_off(&self, now: SimTime, peer: NodeId) -> bool {
        match &self.attack {
            Some(Attack::Eclipse(e)) => now >= e.at && e.victims.contains(&peer),
            _ => false,
        }
    }

    /// What an eclipse attacker lets through from a victim: transactions only.
    pub(super) fn filter_from_victim(msg: BtcMsg) -> Option<BtcMsg> {
        match msg {
            BtcMsg::Tx(_) => Some(msg),
            BtcMsg::Inv(items) => {
                let txs: Vec<Inv> = items.iter().copied().filter(|i| matches!(i, Inv::Tx(_))).collect();
                (!txs.is_empty()).then(|| BtcMsg::Inv(txs.into()))
            }
            BtcMsg::GetData(items) => {
                let txs: Vec<Inv> = items.into_iter().filter(|i| matches!(i, Inv::Tx(_))).collect();
                (!txs.is_empty()).then_some(BtcMsg::GetData(txs))
            }
            _ => None,
        }
    }

    /// Whether this node's blocks leave `tx` out (censorship).
    pub(super) fn censors(&self, db: &BlockDb, tx: &Transaction) -> bool {
        match &self.attack {
            Some(Attack::Censor(c)) => c.censors_tx(db, tx),
            _ => false,
        }
    }

    /// A tie between the tip and the new block `b` of equal work, under a
    /// γ tie-break: returns whether to switch to `b`. The favoured block is
    /// passed on even when the node keeps the other.
    pub(super) fn tie_switch(
        &mut self,
        cx: &mut dyn Context<BtcMsg>,
        b: BlockId,
        from: Option<NodeId>,
    ) -> bool {
        let (tip_pay, new_pay) = {
            let db = self.db.borrow();
            if db.rec(b).work != db.rec(self.tip).work {
                return false;
            }
            let payout = |id: BlockId| {
                db.rec(id)
                    .data
                    .block
                    .txdata
                    .first()
                    .and_then(|cb| cb.output.first())
                    .map(|o| o.script_pubkey.clone())
            };
            match (payout(self.tip), payout(b)) {
                (Some(t), Some(n)) => (t, n),
                _ => return false,
            }
        };
        if !self.tie_break.as_ref().is_some_and(|r| r.applies(&tip_pay, &new_pay)) {
            return false;
        }
        // One draw per tie the rule decides (none otherwise).
        let u: f64 = cx.rng().r#gen();
        let Some(switch) = self.tie_break.as_ref().and_then(|r| r.decide(&tip_pay, &new_pay, u)) else {
            return false;
        };
        let new_favoured = self.tie_break.as_ref().is_some_and(|r| r.gamma(&new_pay).is_some());
        if !switch && new_favoured {
            self.announce_block(cx, b, from);
        }
        switch
    }
}

/// Height of the block holding payment `t` on the chain ending at `tip`
/// (found through its change output, which the attacker never spends), if any.
fn payment_height(db: &BlockDb, tip: BlockId, t: Txid) -> Option<u32> {
    let utxo = db.utxo(tip)?;
    [0, 1].iter().find_map(|v| utxo.0.get(&OutPoint::new(t, *v)).map(|c| c.height))
}
