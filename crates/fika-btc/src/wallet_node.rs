//! The light wallet node (the thesis's "client"): an SPV client holding a
//! [`Wallet`], connected to one or more full nodes. It loads its scripts as
//! a filter, verifies the filtered blocks' merkle proofs against its header
//! chain, and pays — on a schedule from the scenario or as a random
//! workload — by signing transactions and handing them to its servers.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use std::collections::BTreeMap;

use bitcoin::{Amount, FeeRate, ScriptBuf, Transaction, Txid};
use fika_core::{Context, Event, NodeId, SimTime, TimerId};
use rand::Rng;

use crate::journal::{Change, Journal, RestoreError};
use crate::msg::{BtcMsg, FilteredBlock};
use crate::spv::SpvClient;
use crate::wallet::{Balance, FeeSpec, Payment, WalletError};

/// Random payments: how often, how much, which fee rate.
#[derive(Clone, Debug, PartialEq)]
pub struct Workload {
    /// Mean time between payments (exponential).
    pub interval: Duration,
    /// When payments start.
    pub start: SimTime,
    /// Amount as a fraction of the spendable balance, uniform in `[min, max]`.
    pub amount_fraction: [f64; 2],
    /// Fee rate in sat/vB, uniform in `[min, max]`.
    pub fee_rate: [f64; 2],
    /// Scripts of every wallet; recipients are drawn from them (never self).
    pub recipients: Rc<Vec<ScriptBuf>>,
}

/// A payment at a fixed time.
#[derive(Clone, Debug, PartialEq)]
pub struct ScheduledPayment {
    /// When.
    pub at: SimTime,
    /// To whom.
    pub to: ScriptBuf,
    /// How much.
    pub amount: Amount,
    /// With which fee.
    pub fee: FeeSpec,
}

const TIMER_WORKLOAD: TimerId = 1 << 40;

/// A light wallet node.
pub struct WalletNode {
    spv: SpvClient,
    start_unix: u32,
    workload: Option<Workload>,
    schedule: Vec<ScheduledPayment>,
    sent: u32,
    failed: u32,
    /// Payments this node made: txid → (amount paid, fee).
    paid: BTreeMap<Txid, (Amount, Amount)>,
    /// What changed, for a durable store (off unless enabled).
    journal: Journal,
}

impl WalletNode {
    /// A wallet node around an SPV client (whose wallet already knows its
    /// initial coins), with its payments.
    pub fn new(
        spv: SpvClient,
        start_unix: u32,
        workload: Option<Workload>,
        schedule: Vec<ScheduledPayment>,
    ) -> Self {
        WalletNode {
            spv,
            start_unix,
            workload,
            schedule,
            sent: 0,
            failed: 0,
            paid: BTreeMap::new(),
            journal: Journal::default(),
        }
    }

    /// The SPV client (header chain and wallet).
    pub fn spv(&self) -> &SpvClient {
        &self.spv
    }

    /// The wallet's balance at its best header.
    pub fn balance(&self) -> Balance {
        self.spv.balance()
    }

    /// Payments sent and payments that could not be made.
    pub fn payments(&self) -> (u32, u32) {
        (self.sent, self.failed)
    }

    /// The amount and fee of a payment this node made.
    pub fn paid(&self, txid: &Txid) -> Option<(Amount, Amount)> {
        self.paid.get(txid).copied()
    }

    /// Replaces the recipients of the random payments (a peg-in user who
    /// learns a new federation address).
    pub fn set_recipients(&mut self, recipients: Rc<Vec<ScriptBuf>>) {
        if let Some(w) = &mut self.workload {
            w.recipients = recipients;
        }
    }

    fn now_unix(&self, now: SimTime) -> u64 {
        u64::from(self.start_unix) + now.as_nanos() / 1_000_000_000
    }

    /// Loads the wallet's scripts as a filter at every server; each answers
    /// with its whole best chain, filtered (a rescan).
    pub fn load_filter(&mut self, cx: &mut dyn Context<BtcMsg>) {
        let scripts: Vec<ScriptBuf> = self.spv.wallet().scripts().cloned().collect();
        for k in 0..cx.peer_count() {
            cx.send(cx.peer(k), BtcMsg::FilterLoad(scripts.clone()));
        }
    }

    /// Hands a signed transaction to every server (recording it as pending
    /// if it touches the wallet).
    pub fn broadcast(&mut self, cx: &mut dyn Context<BtcMsg>, tx: Transaction) -> Result<(), WalletError> {
        self.spv.wallet_mut().add_unconfirmed(tx.clone())?;
        let tx = Arc::new(tx);
        for k in 0..cx.peer_count() {
            cx.send(cx.peer(k), BtcMsg::Tx(Arc::clone(&tx)));
        }
        Ok(())
    }

    /// Handles start: load the filter at every server, schedule payments.
    pub fn start(&mut self, cx: &mut dyn Context<BtcMsg>) {
        self.load_filter(cx);
        let now = cx.now();
        for (i, p) in self.schedule.iter().enumerate() {
            if p.at >= now {
                cx.set_timer(p.at - now, i as TimerId);
            }
        }
        if let Some(w) = &self.workload {
            let first = if w.start > now { w.start - now } else { Duration::ZERO };
            let d = first + exp_draw(cx, w.interval);
            cx.set_timer(d, TIMER_WORKLOAD);
        }
    }

    /// Handles a message from a server.
    pub fn message(&mut self, cx: &mut dyn Context<BtcMsg>, from: NodeId, msg: BtcMsg) {
        if let BtcMsg::FilteredBlock(f) = msg {
            let now = self.now_unix(cx.now());
            if let Err(e) = self.spv.accept_header(&f.header, now) {
                cx.emit(Event::new("btc.wallet.refused").with("peer", from.0).with("reason", e.to_string()));
                return;
            }
            if f.txs.is_empty() {
                self.journal.record(|| Change::Filtered { now, block: f });
                return;
            }
            let txs: Vec<Transaction> = f.txs.iter().map(|t| (**t).clone()).collect();
            match self.spv.accept_merkle_proof(f.header.block_hash(), &f.proof, &txs) {
                Ok(_) => {
                    self.journal.record(|| Change::Filtered { now, block: f });
                    let b = self.spv.balance();
                    cx.emit(
                        Event::new("btc.wallet.balance")
                            .with("confirmed", b.confirmed.to_sat())
                            .with("height", self.spv.best_height()),
                    );
                }
                Err(e) => {
                    // The header stays accepted; keep it without the refused transactions.
                    let header_only = FilteredBlock { txs: Vec::new(), ..*f };
                    self.journal.record(|| Change::Filtered { now, block: Box::new(header_only) });
                    cx.emit(
                        Event::new("btc.wallet.refused").with("peer", from.0).with("reason", e.to_string()),
                    );
                }
            }
        }
    }

    /// Handles a payment timer.
    pub fn timer(&mut self, cx: &mut dyn Context<BtcMsg>, timer: TimerId) {
        if timer == TIMER_WORKLOAD {
            let Some(w) = self.workload.clone() else { return };
            self.random_payment(cx, &w);
            let d = exp_draw(cx, w.interval);
            cx.set_timer(d, TIMER_WORKLOAD);
            return;
        }
        if let Some(p) = self.schedule.get(timer as usize).cloned() {
            self.pay(cx, &p.to, p.amount, p.fee);
        }
    }

    fn random_payment(&mut self, cx: &mut dyn Context<BtcMsg>, w: &Workload) {
        let me: Vec<ScriptBuf> = self.spv.wallet().scripts().cloned().collect();
        let others: Vec<&ScriptBuf> = w.recipients.iter().filter(|s| !me.contains(s)).collect();
        if others.is_empty() {
            return;
        }
        let to = others[cx.rng().gen_range(0..others.len())].clone();
        let spendable = self.spv.balance().confirmed;
        let f = uniform(cx, w.amount_fraction);
        let amount = Amount::from_sat((spendable.to_sat() as f64 * f) as u64);
        let rate = uniform(cx, w.fee_rate);
        let fee = FeeSpec::Rate(FeeRate::from_sat_per_kwu((rate * 250.0).round() as u64));
        self.pay(cx, &to, amount, fee);
    }

    fn pay(&mut self, cx: &mut dyn Context<BtcMsg>, to: &ScriptBuf, amount: Amount, fee: FeeSpec) {
        let _ = self.send(cx, to, amount, fee);
    }

    /// Pays `amount` to `to` now: builds and signs the payment, records it
    /// as pending and hands it to every server (as a scheduled payment
    /// does, with the same events). Returns the payment, or why it could
    /// not be made.
    pub fn send(
        &mut self,
        cx: &mut dyn Context<BtcMsg>,
        to: &ScriptBuf,
        amount: Amount,
        fee: FeeSpec,
    ) -> Result<Payment, WalletError> {
        let tip = self.spv.best_height();
        match self.spv.wallet_mut().create_payment(to, amount, fee, tip, cx.rng()) {
            Ok(p) => {
                self.sent += 1;
                self.paid.insert(p.txid, (amount, p.fee));
                let vsize = p.tx.weight().to_vbytes_ceil();
                cx.emit(
                    Event::new("btc.tx.created")
                        .with("txid", p.txid.to_byte_array())
                        .with("amount", amount.to_sat())
                        .with("fee", p.fee.to_sat())
                        .with("vsize", vsize),
                );
                let tx = Arc::new(p.tx.clone());
                self.journal.record(|| Change::Sent(Arc::clone(&tx)));
                for k in 0..cx.peer_count() {
                    cx.send(cx.peer(k), BtcMsg::Tx(Arc::clone(&tx)));
                }
                Ok(p)
            }
            Err(e) => {
                self.failed += 1;
                self.journal.record(|| Change::Failed);
                cx.emit(
                    Event::new("btc.tx.failed").with("amount", amount.to_sat()).with("reason", e.to_string()),
                );
                Err(e)
            }
        }
    }

    /// Drops nothing: a wallet keeps its keys and coins across a crash.
    pub fn crash(&mut self) {}

    // ----- persistence (see crate::journal) ---------------------------------

    /// Starts recording changes for a durable store.
    pub fn enable_journal(&mut self) {
        self.journal.enable();
    }

    /// The changes recorded since the last call, oldest first.
    pub fn take_journal(&mut self) -> Vec<Change> {
        self.journal.take()
    }

    /// Restores what a durable store kept, before the node starts: keys
    /// (added if missing), the filtered blocks it accepted, replayed in
    /// order through its light client, the payments it made (pending again
    /// unless a kept block confirmed or conflicted them) and its counters.
    pub fn restore(
        &mut self,
        keys: &[bitcoin::secp256k1::SecretKey],
        filtered: &[(u64, FilteredBlock)],
        payments: &[Arc<Transaction>],
        (sent, failed): (u32, u32),
    ) -> Result<(), RestoreError> {
        for k in keys {
            self.spv.wallet_mut().add_key(*k);
        }
        for (now, f) in filtered {
            let hash = f.header.block_hash();
            let refused = |e: crate::spv::SpvError| RestoreError::Filtered { hash, reason: e.to_string() };
            self.spv.accept_header(&f.header, *now).map_err(refused)?;
            if !f.txs.is_empty() {
                let txs: Vec<Transaction> = f.txs.iter().map(|t| (**t).clone()).collect();
                self.spv.accept_merkle_proof(hash, &f.proof, &txs).map_err(refused)?;
            }
        }
        for tx in payments {
            // A payment a kept block confirmed is known; one it conflicted is gone.
            let _ = self.spv.wallet_mut().add_unconfirmed((**tx).clone());
        }
        self.sent = self.sent.max(sent);
        self.failed = self.failed.max(failed);
        Ok(())
    }

    /// Handles the start of a process that restored this node from a
    /// durable store: start as usual (loading the filter brings the
    /// blocks it missed) and send its still pending payments again.
    pub fn resume(&mut self, cx: &mut dyn Context<BtcMsg>) {
        self.start(cx);
        let pending: Vec<Arc<Transaction>> =
            self.spv.wallet().pending_transactions().into_iter().map(|t| Arc::new(t.clone())).collect();
        for tx in pending {
            for k in 0..cx.peer_count() {
                cx.send(cx.peer(k), BtcMsg::Tx(Arc::clone(&tx)));
            }
        }
    }
}

fn exp_draw(cx: &mut dyn Context<BtcMsg>, mean: Duration) -> Duration {
    let u: f64 = 1.0 - cx.rng().r#gen::<f64>();
    Duration::try_from_secs_f64(-u.ln() * mean.as_secs_f64()).unwrap_or(mean)
}

fn uniform(cx: &mut dyn Context<BtcMsg>, [lo, hi]: [f64; 2]) -> f64 {
    if hi > lo { cx.rng().gen_range(lo..hi) } else { lo }
}
