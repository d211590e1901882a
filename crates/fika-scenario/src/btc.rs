//! From a Bitcoin scenario to its nodes: the one place that derives wallet
//! and miner keys from the seed, the initial distribution, hashrate shares,
//! payments and workload. The simulator builds every node from a
//! [`BtcPlan`] on one shared store; an emulated process builds its own node
//! from the same plan on a store of its own, so both start from the same
//! chain and balances.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::sync::Arc;

use bitcoin::{Amount, OutPoint, ScriptBuf, Transaction, TxOut};
use fika_btc::attack::{CensorPlan, DoubleSpendPlan, EclipsePlan, MajorityPlan, Strategy, TieBreak};
use fika_btc::blockdb::BlockDb;
use fika_btc::consensus::{Consensus, ProofOfStake, ProofOfWork};
use fika_btc::node::{BtcNode, FullNode, Payout, RelayConfig, SharedDb};
use fika_btc::sign::{p2wpkh_script, secret_key_from_rng};
use fika_btc::spv::SpvClient;
use fika_btc::wallet::{FeeSpec, Wallet, WalletConfig};
use fika_btc::wallet_node::{ScheduledPayment, WalletNode, Workload};
use fika_btc::{ChainParams, genesis_block};
use fika_core::{NodeId, SimTime, derive_rng};

use crate::{BitcoinSpec, ConsensusSpec, Layout, Scenario};

/// BTC as an amount, rounded to the satoshi.
pub fn to_sat(btc: f64) -> Amount {
    Amount::from_sat((btc * 1e8).round().max(0.0) as u64)
}

/// Everything needed to build any node of a Bitcoin scenario.
pub struct BtcPlan {
    /// Chain parameters.
    pub params: ChainParams,
    /// Relay settings shared by the full nodes.
    pub relay: Rc<RelayConfig>,
    /// Each light node's wallet, by node index, holding its initial coins.
    pub wallets: BTreeMap<usize, Wallet>,
    /// The initial distribution, confirmed at genesis (empty if none).
    pub premine: Vec<Transaction>,
    /// Each node's share of the hashrate.
    pub hash_share: Vec<f64>,
    /// Hashes per second of the whole network: one block per
    /// `block_interval_secs` at the genesis difficulty.
    pub network_hashrate: f64,
    /// Random payments between wallets, if any.
    pub workload: Option<Workload>,
    /// Scripted payments, by paying node index.
    pub schedules: BTreeMap<usize, Vec<ScheduledPayment>>,
    /// Each node's strategy (honest for most).
    pub strategies: Vec<Strategy>,
    /// The γ tie-break honest full nodes follow, when a selfish group sets `gamma`.
    pub tie_break: Option<TieBreak>,
    /// Every script a censoring miner leaves out.
    pub censored_scripts: Vec<ScriptBuf>,
    /// Who may produce blocks (proof of work unless the scenario says
    /// otherwise); every store of the run applies it.
    pub consensus: Arc<dyn Consensus + Send + Sync>,
    seed: u64,
}

impl BtcPlan {
    /// Derives the plan of `s`.
    pub fn new(s: &Scenario, spec: &BitcoinSpec, layout: &Layout) -> Self {
        let n = layout.names.len();
        let params = spec.params.clone();
        let light: Vec<bool> = layout.group.iter().map(|g| s.nodes[*g].is_light()).collect();
        let mut wallets: BTreeMap<usize, Wallet> = BTreeMap::new();
        for i in (0..n).filter(|i| light[*i]) {
            let sk = secret_key_from_rng(&mut derive_rng(s.seed, "wallet-key", i as u64));
            if let Ok(w) = Wallet::new(WalletConfig::for_params(&params), &[sk]) {
                wallets.insert(i, w);
            }
        }
        let mut outputs: Vec<TxOut> = wallets
            .iter()
            .filter_map(|(i, w)| {
                let bal = s.nodes[layout.group[*i]].balance.unwrap_or(0.0);
                (bal > 0.0).then(|| TxOut { value: to_sat(bal), script_pubkey: w.receive_script() })
            })
            .collect();
        // Double spenders' coins come after the wallets' (whose outputs keep their places).
        let strategy_of = |i: usize| s.nodes[layout.group[i]].strategy.as_deref().unwrap_or("honest");
        let secp = bitcoin::secp256k1::Secp256k1::signing_only();
        let mut spender_coins: BTreeMap<usize, (bitcoin::secp256k1::SecretKey, usize, Amount)> =
            BTreeMap::new();
        for i in (0..n).filter(|i| strategy_of(*i) == "double-spend") {
            let sk = secret_key_from_rng(&mut derive_rng(s.seed, "attacker-key", i as u64));
            let value = to_sat(s.nodes[layout.group[i]].balance.unwrap_or(0.0));
            spender_coins.insert(i, (sk, outputs.len(), value));
            outputs.push(TxOut { value, script_pubkey: p2wpkh_script(&sk.public_key(&secp)) });
        }
        let premine: Vec<Transaction> = fika_btc::blockdb::premine_tx(s.seed, outputs).into_iter().collect();
        let genesis_hash = genesis_block(&params).block_hash();
        for w in wallets.values_mut() {
            let _ = w.apply_block(genesis_hash, 0, &premine);
        }
        let pos = matches!(spec.consensus, ConsensusSpec::Pos { .. });
        let weights: Vec<f64> = (0..n)
            .map(|i| {
                let g = &s.nodes[layout.group[i]];
                match (&g.hashrate, g.stake) {
                    _ if light[i] => 0.0,
                    (_, Some(x)) if pos => x,
                    (_, None) if pos => f64::from(u8::from(g.role == "miner")),
                    (Some(h), _) => h.weight(s.seed, i),
                    (None, _) if g.role == "miner" => 1.0,
                    (None, _) => 0.0,
                }
            })
            .collect();
        let consensus: Arc<dyn Consensus + Send + Sync> = match spec.consensus {
            ConsensusSpec::Pow => Arc::new(ProofOfWork),
            ConsensusSpec::Pos { slot_secs } => {
                let stakes: Vec<(NodeId, f64)> =
                    weights.iter().enumerate().map(|(i, w)| (NodeId(i as u32), *w)).collect();
                // The scenario's checks make this succeed.
                match ProofOfStake::new(slot_secs, spec.relay.start_unix, s.seed, &stakes) {
                    Ok(p) => Arc::new(p),
                    Err(_) => Arc::new(ProofOfWork),
                }
            }
        };
        let total: f64 = weights.iter().sum();
        let hash_share = weights.iter().map(|w| if total > 0.0 { w / total } else { 0.0 }).collect();
        let genesis_bits = genesis_block(&params).header.bits;
        let network_hashrate =
            fika_btc::pow::expected_hashes(genesis_bits) / params.block_interval_secs.max(1) as f64;
        let recipients: Rc<Vec<ScriptBuf>> = Rc::new(wallets.values().map(Wallet::receive_script).collect());
        let workload = spec.workload.as_ref().map(|w| Workload {
            interval: w.interval,
            start: SimTime::ZERO + w.start,
            amount_fraction: w.amount_fraction,
            fee_rate: w.fee_rate,
            recipients: Rc::clone(&recipients),
        });
        let mut schedules: BTreeMap<usize, Vec<ScheduledPayment>> = BTreeMap::new();
        for p in &spec.payments {
            let (Some(from), Some(to)) = (layout.id_of(&p.from), layout.id_of(&p.to)) else { continue };
            let Some(to_script) = wallets.get(&to.index()).map(Wallet::receive_script) else { continue };
            let fee = match (p.fee, p.fee_rate) {
                (Some(f), _) => FeeSpec::Absolute(to_sat(f)),
                (None, Some(r)) => {
                    FeeSpec::Rate(bitcoin::FeeRate::from_sat_per_kwu((r * 250.0).round() as u64))
                }
                (None, None) => FeeSpec::sat_per_vb(2),
            };
            schedules.entry(from.index()).or_default().push(ScheduledPayment {
                at: SimTime::ZERO + p.at,
                to: to_script,
                amount: to_sat(p.amount),
                fee,
            });
        }
        let premine_txid = premine.first().map(Transaction::compute_txid);
        let miner_script =
            |i: usize| p2wpkh_script(&secret_key_from_rng(&mut miner_rng(s.seed, i)).public_key(&secp));
        let mut favoured = BTreeMap::new();
        let mut censored_scripts: Vec<ScriptBuf> = Vec::new();
        let mut strategies = Vec::with_capacity(n);
        for i in 0..n {
            let g = &s.nodes[layout.group[i]];
            let a = &g.attack;
            let at = SimTime::ZERO + a.start.unwrap_or_default();
            let give_up = a.give_up.filter(|g| *g > 0);
            let strategy = match strategy_of(i) {
                "selfish" => {
                    if let Some(gamma) = a.gamma {
                        favoured.insert(miner_script(i), gamma);
                    }
                    Strategy::Selfish
                }
                "double-spend" => {
                    let merchant = a
                        .merchant
                        .as_deref()
                        .and_then(|m| layout.id_of(m))
                        .and_then(|m| wallets.get(&m.index()))
                        .map(Wallet::receive_script);
                    match (spender_coins.get(&i), premine_txid, merchant) {
                        (Some((key, vout, value)), Some(txid), Some(merchant)) => {
                            Strategy::DoubleSpend(DoubleSpendPlan {
                                at,
                                key: *key,
                                coin: OutPoint::new(txid, *vout as u32),
                                value: *value,
                                merchant,
                                amount: to_sat(a.amount.unwrap_or(0.0)),
                                fee: to_sat(crate::load::DOUBLE_SPEND_FEE),
                                confirmations: a.confirmations.unwrap_or(6),
                                give_up,
                            })
                        }
                        _ => Strategy::Honest,
                    }
                }
                "majority" => Strategy::Majority(MajorityPlan { at, depth: a.depth.unwrap_or(6), give_up }),
                "eclipse" => Strategy::Eclipse(EclipsePlan {
                    victims: a.victims.iter().flatten().filter_map(|v| layout.id_of(v)).collect(),
                    at,
                }),
                "censor" => {
                    let mut scripts: Vec<ScriptBuf> = Vec::new();
                    for c in a.censored.iter().flatten() {
                        for (w, wallet) in &wallets {
                            let wg = &s.nodes[layout.group[*w]];
                            if layout.names[*w] == *c || wg.name == *c {
                                scripts.extend(wallet.scripts().cloned());
                            }
                        }
                    }
                    scripts.sort();
                    scripts.dedup();
                    censored_scripts.extend(scripts.iter().cloned());
                    Strategy::Censor(CensorPlan { scripts })
                }
                _ => Strategy::Honest,
            };
            strategies.push(strategy);
        }
        censored_scripts.sort();
        censored_scripts.dedup();
        let tie_break = (!favoured.is_empty()).then_some(TieBreak { favoured });
        BtcPlan {
            params,
            relay: Rc::new(spec.relay.clone()),
            wallets,
            premine,
            hash_share,
            network_hashrate,
            workload,
            schedules,
            strategies,
            tie_break,
            censored_scripts,
            consensus,
            seed: s.seed,
        }
    }

    /// A block store of this plan: its chain, its initial distribution and
    /// its consensus variant. The simulator shares one among all nodes; an
    /// emulated process has its own.
    pub fn store(&self) -> SharedDb {
        let mut db = BlockDb::new(self.params.clone(), &self.premine);
        db.set_consensus(Arc::clone(&self.consensus));
        Rc::new(RefCell::new(db))
    }

    /// Node `i`, on the block store `db` (which must hold [`BtcPlan::premine`]).
    pub fn node(&self, i: usize, db: &SharedDb) -> BtcNode {
        if let Some(w) = self.wallets.get(&i) {
            let spv = SpvClient::new(self.params.clone(), w.clone());
            let schedule = self.schedules.get(&i).cloned().unwrap_or_default();
            let node = WalletNode::new(spv, self.relay.start_unix, self.workload.clone(), schedule);
            return BtcNode::Wallet(Box::new(node));
        }
        let payout = Payout::Key(secret_key_from_rng(&mut miner_rng(self.seed, i)));
        let hashrate = self.hash_share.get(i).copied().unwrap_or(0.0) * self.network_hashrate;
        let mut node = FullNode::new(Rc::clone(db), Rc::clone(&self.relay), hashrate, payout);
        match self.strategies.get(i).cloned().unwrap_or_default() {
            Strategy::Honest => node.set_tie_break(self.tie_break.clone()),
            other => node.set_strategy(other),
        }
        BtcNode::Full(node)
    }
}

/// The stream a miner's payout key is drawn from.
fn miner_rng(seed: u64, i: usize) -> fika_core::NodeRng {
    derive_rng(seed, "miner-key", i as u64)
}
