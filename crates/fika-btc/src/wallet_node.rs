//! The light wallet node (the thesis's "client"): an SPV client holding a
//! [`Wallet`], connected to one or more full nodes. It loads its scripts as
//! a filter, verifies the filtered blocks' merkle proofs against its header
//! chain, and pays — on a schedule from the scenario or as a random
//! workload — by signing transactions and handing them to its servers.

use std::rc::Rc;
use std::sync::Arc;
use std::time::Duration;

use bitcoin::hashes::Hash;
use bitcoin::{Amount, FeeRate, ScriptBuf, Transaction};
use fika_core::{Context, Event, NodeId, SimTime, TimerId};
use rand::Rng;

use crate::msg::BtcMsg;
use crate::spv::SpvClient;
use crate::wallet::{Balance, FeeSpec};

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
        WalletNode { spv, start_unix, workload, schedule, sent: 0, failed: 0 }
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

    /// Handles start: load the filter at every server, schedule payments.
    pub fn start(&mut self, cx: &mut dyn Context<BtcMsg>) {
        let scripts: Vec<ScriptBuf> = self.spv.wallet().scripts().cloned().collect();
        for k in 0..cx.peer_count() {
            cx.send(cx.peer(k), BtcMsg::FilterLoad(scripts.clone()));
        }
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
            let crate::msg::FilteredBlock { header, proof, txs, .. } = *f;
            let now = self.now_unix(cx.now());
            if let Err(e) = self.spv.accept_header(&header, now) {
                cx.emit(Event::new("btc.wallet.refused").with("peer", from.0).with("reason", e.to_string()));
                return;
            }
            if txs.is_empty() {
                return;
            }
            let txs: Vec<Transaction> = txs.iter().map(|t| (**t).clone()).collect();
            match self.spv.accept_merkle_proof(header.block_hash(), &proof, &txs) {
                Ok(_) => {
                    let b = self.spv.balance();
                    cx.emit(
                        Event::new("btc.wallet.balance")
                            .with("confirmed", b.confirmed.to_sat())
                            .with("height", self.spv.best_height()),
                    );
                }
                Err(e) => {
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
        let tip = self.spv.best_height();
        match self.spv.wallet_mut().create_payment(to, amount, fee, tip, cx.rng()) {
            Ok(p) => {
                self.sent += 1;
                let vsize = p.tx.weight().to_vbytes_ceil();
                cx.emit(
                    Event::new("btc.tx.created")
                        .with("txid", p.txid.to_byte_array())
                        .with("amount", amount.to_sat())
                        .with("fee", p.fee.to_sat())
                        .with("vsize", vsize),
                );
                let tx = Arc::new(p.tx);
                for k in 0..cx.peer_count() {
                    cx.send(cx.peer(k), BtcMsg::Tx(Arc::clone(&tx)));
                }
            }
            Err(e) => {
                self.failed += 1;
                cx.emit(
                    Event::new("btc.tx.failed").with("amount", amount.to_sat()).with("reason", e.to_string()),
                );
            }
        }
    }

    /// Drops nothing: a wallet keeps its keys and coins across a crash.
    pub fn crash(&mut self) {}
}

fn exp_draw(cx: &mut dyn Context<BtcMsg>, mean: Duration) -> Duration {
    let u: f64 = 1.0 - cx.rng().r#gen::<f64>();
    Duration::try_from_secs_f64(-u.ln() * mean.as_secs_f64()).unwrap_or(mean)
}

fn uniform(cx: &mut dyn Context<BtcMsg>, [lo, hi]: [f64; 2]) -> f64 {
    if hi > lo { cx.rng().gen_range(lo..hi) } else { lo }
}
