//! Running a PowPeg network: Bitcoin with merge-mining pools, the
//! sidechain with its Bridge, the federation's pegnatories and users
//! pegging in — and measuring peg-in latency and the peg's conservation.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;
use std::rc::Rc;
use std::time::Duration;

use bitcoin::hashes::{Hash, sha256d};
use bitcoin::{Amount, OutPoint, ScriptBuf, Sequence, Transaction, TxIn, TxOut, Txid, Witness};
use fika_btc::blockdb::BlockDb;
use fika_btc::node::{BtcNode, FullNode, Payout};
use fika_btc::sign::secret_key_from_rng;
use fika_btc::spv::SpvClient;
use fika_btc::wallet::{ScriptKind, Wallet, WalletConfig};
use fika_btc::wallet_node::{WalletNode, Workload};
use fika_core::{Event, EventSink, NodeId, SimTime, Value, derive_rng};
use fika_peg::contract::BridgeContract;
use fika_peg::network::{MergeMiner, Peers, PegNode, Pegnatory, SideNode, SideSettings};
use fika_peg::{BridgeState, Checkpoint, Federation};
use fika_scenario::{Hashrate, Layout, Scenario};
use fika_side::{ChainConfig, Genesis, U256};
use rand::Rng;
use serde::Serialize;

use crate::RunError;

/// Collects what the peg metrics need from the event stream.
#[derive(Default)]
pub struct PegCollector {
    side_mined: BTreeMap<[u8; 32], u64>,
    btc_created: BTreeMap<[u8; 32], u64>,
    violations: u64,
}

impl EventSink for PegCollector {
    fn record(&mut self, at: SimTime, _node: Option<NodeId>, event: &Event) {
        match event.kind {
            "side.block.mined" => {
                if let Some(Value::Hash(h)) = event.field("hash") {
                    self.side_mined.entry(*h).or_insert(at.as_nanos());
                }
            }
            "btc.tx.created" => {
                if let Some(Value::Hash(h)) = event.field("txid") {
                    self.btc_created.entry(*h).or_insert(at.as_nanos());
                }
            }
            "peg.conservation.violated" => self.violations += 1,
            _ => {}
        }
    }
}

/// The nodes of a PowPeg run and what the report needs.
pub struct Built {
    /// The nodes.
    pub nodes: Vec<PegNode>,
    /// The Bitcoin block store.
    pub db: Rc<RefCell<BlockDb>>,
    /// Bitcoin relaying nodes (for propagation shares).
    pub btc_relays: usize,
}

fn to_sat(btc: f64) -> Amount {
    Amount::from_sat((btc * 1e8).round().max(0.0) as u64)
}

/// Builds the nodes of a PowPeg scenario.
pub fn build(s: &Scenario, layout: &Layout) -> Result<Built, RunError> {
    let bad = |m: String| RunError::Build(fika_scenario::BuildError::Topology(m));
    let (Some(btc), Some(peg)) = (&s.bitcoin, &s.powpeg) else {
        return Err(bad("a powpeg scenario needs [bitcoin] and [powpeg]".into()));
    };
    let n = layout.names.len();
    let role = |i: usize| s.nodes[layout.group[i]].role.as_str();
    let params = btc.params.clone();
    let relay = Rc::new(btc.relay.clone());
    let secp = bitcoin::secp256k1::Secp256k1::new();
    // The federation: one key per pegnatory, four emergency keys.
    let peg_ids: Vec<usize> = (0..n).filter(|i| role(*i) == "pegnatory").collect();
    let peg_keys: Vec<_> = peg_ids
        .iter()
        .map(|i| secret_key_from_rng(&mut derive_rng(s.seed, "pegnatory-key", *i as u64)))
        .collect();
    let emergency: Vec<_> = (0..4u64)
        .map(|k| secret_key_from_rng(&mut derive_rng(s.seed, "emergency-key", k)).public_key(&secp))
        .collect();
    let members: Vec<_> = peg_keys.iter().map(|k| k.public_key(&secp)).collect();
    let federation = Federation::p2sh_p2wsh_erp(&members, &emergency, peg.params.erp_csv)
        .map_err(|e| bad(format!("federation: {e}")))?;
    let fed_script: ScriptBuf = federation.script_pubkey().clone();
    // Users: legacy P2PKH wallets (the sender key gives the sidechain address).
    let mut wallets: BTreeMap<usize, Wallet> = BTreeMap::new();
    let mut outputs = Vec::new();
    for i in (0..n).filter(|i| role(*i) == "user") {
        let sk = secret_key_from_rng(&mut derive_rng(s.seed, "wallet-key", i as u64));
        let cfg = WalletConfig::for_params(&params).with_receive_kind(ScriptKind::P2pkh);
        if let Ok(w) = Wallet::new(cfg, &[sk]) {
            let bal = s.nodes[layout.group[i]].balance.unwrap_or(0.0);
            if bal > 0.0 {
                outputs.push(TxOut { value: to_sat(bal), script_pubkey: w.receive_script() });
            }
            wallets.insert(i, w);
        }
    }
    let premine: Vec<Transaction> = if outputs.is_empty() {
        Vec::new()
    } else {
        let seed_txid =
            Txid::from_raw_hash(sha256d::Hash::hash(format!("fika premine {}", s.seed).as_bytes()));
        vec![Transaction {
            version: bitcoin::transaction::Version::TWO,
            lock_time: bitcoin::absolute::LockTime::ZERO,
            input: vec![TxIn {
                previous_output: OutPoint::new(seed_txid, 0),
                script_sig: ScriptBuf::new(),
                sequence: Sequence::MAX,
                witness: Witness::new(),
            }],
            output: outputs,
        }]
    };
    let db = Rc::new(RefCell::new(BlockDb::new(params.clone(), &premine)));
    let genesis = db.borrow().rec(0).data.block.clone();
    // The Bridge, from Bitcoin's genesis as its checkpoint.
    let checkpoint = Checkpoint::genesis(&params).map_err(|e| bad(format!("checkpoint: {e}")))?;
    let bridge = BridgeState::new(peg.params.clone(), params.clone(), checkpoint, federation)
        .map_err(|e| bad(format!("bridge: {e}")))?;
    let contract = BridgeContract::new(bridge);
    let mut genesis_alloc = Genesis::new(u64::from(relay.start_unix), U256::from(1u8)).with_bridge_fund();
    for k in &peg_keys {
        genesis_alloc = genesis_alloc.with_balance(fika_side::address_of_secret(k), fika_side::WEI_PER_RBTC);
    }
    let side_config = ChainConfig { genesis: genesis_alloc, ..ChainConfig::regtest() };
    let settings = Rc::new(SideSettings {
        block_interval: peg.side_block_interval,
        start_unix: u64::from(relay.start_unix),
        chain_id: side_config.chain_id,
        turn: Duration::from_secs(peg.params.pegnatory_turn_secs),
        max_headers: peg.params.max_headers_per_turn as usize,
        max_pegins: peg.params.max_pegins_per_turn as usize,
        confirmations: peg.params.pegin_confirmations,
    });
    // Hashrate shares of the pools.
    let mut weights = vec![0.0f64; n];
    for (i, w) in weights.iter_mut().enumerate() {
        if role(i) != "miner" {
            continue;
        }
        *w = match &s.nodes[layout.group[i]].hashrate {
            Some(Hashrate::Fixed(h)) => *h,
            Some(Hashrate::Normal { normal: [m, sd] }) => {
                let mut rng = derive_rng(s.seed, "hashrate", i as u64);
                let u1: f64 = 1.0 - rng.r#gen::<f64>();
                let u2: f64 = rng.r#gen::<f64>();
                (m + sd * (-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()).max(0.0)
            }
            None => 1.0,
        };
    }
    let total: f64 = weights.iter().sum();
    let network_hashrate =
        fika_btc::pow::expected_hashes(genesis.header.bits) / params.block_interval_secs.max(1) as f64;
    // Peers per protocol.
    let adj = layout.graph.adjacency();
    let speaks_btc = |i: usize| matches!(role(i), "full" | "miner" | "user" | "pegnatory");
    let btc_layer = |i: usize| matches!(role(i), "full" | "miner");
    let side_layer = |i: usize| matches!(role(i), "side" | "miner" | "pegnatory");
    let workload = Workload {
        interval: peg.pegin.interval,
        start: SimTime::ZERO + peg.pegin.start,
        amount_fraction: peg.pegin.amount_fraction,
        fee_rate: peg.pegin.fee_rate,
        recipients: Rc::new(vec![fed_script.clone()]),
    };
    let mut nodes = Vec::with_capacity(n);
    for i in 0..n {
        let peers_where = |f: &dyn Fn(usize) -> bool| -> Vec<NodeId> {
            adj[i].iter().filter(|p| f(**p as usize)).map(|p| NodeId(*p)).collect()
        };
        let btc_peers = if btc_layer(i) { peers_where(&speaks_btc) } else { peers_where(&btc_layer) };
        let side_peers = peers_where(&side_layer);
        let payout = Payout::Key(secret_key_from_rng(&mut derive_rng(s.seed, "miner-key", i as u64)));
        let node = match role(i) {
            "user" => {
                let Some(mut w) = wallets.remove(&i) else { continue };
                let _ = w.apply_block(genesis.block_hash(), 0, &premine);
                let spv = SpvClient::new(params.clone(), w);
                let wn = WalletNode::new(spv, relay.start_unix, Some(workload.clone()), Vec::new());
                PegNode::Btc(BtcNode::Wallet(Box::new(wn)), btc_peers)
            }
            "full" => {
                let f = FullNode::new(Rc::clone(&db), Rc::clone(&relay), 0.0, payout);
                PegNode::Btc(BtcNode::Full(Box::new(f)), btc_peers)
            }
            "miner" => {
                let share = if total > 0.0 { weights[i] / total } else { 0.0 };
                let btc = FullNode::new(Rc::clone(&db), Rc::clone(&relay), share * network_hashrate, payout);
                let address = fika_side::address_of_secret(&secret_key_from_rng(&mut derive_rng(
                    s.seed,
                    "pool-side-key",
                    i as u64,
                )));
                let side = SideNode::new(side_config.clone(), contract.clone());
                PegNode::Miner(
                    Box::new(MergeMiner { btc, side, share, address }),
                    Peers { btc: btc_peers, side: side_peers },
                    Rc::clone(&settings),
                )
            }
            "side" => {
                PegNode::Side(Box::new(SideNode::new(side_config.clone(), contract.clone())), side_peers)
            }
            _ => {
                let k = peg_ids.iter().position(|p| *p == i).unwrap_or(0);
                let side = SideNode::new(side_config.clone(), contract.clone());
                let p = Pegnatory::new(
                    side,
                    peg_keys[k],
                    k as u32,
                    peg_ids.len() as u32,
                    fed_script.clone(),
                    genesis.header,
                );
                PegNode::Pegnatory(
                    Box::new(p),
                    Peers { btc: btc_peers, side: side_peers },
                    Rc::clone(&settings),
                )
            }
        };
        nodes.push(node);
    }
    let btc_relays = (0..n).filter(|i| btc_layer(*i)).count();
    Ok(Built { nodes, db, btc_relays })
}

/// The peg's results.
#[derive(Clone, Debug, Serialize)]
pub struct PegReport {
    /// Sidechain best height (at the reporting node).
    pub side_height: u64,
    /// Sidechain blocks mined.
    pub side_blocks_mined: u64,
    /// Peg-in payments users made on Bitcoin.
    pub pegins_sent: u64,
    /// Of those, credited in RBTC on the sidechain's best chain.
    pub pegins_credited: u64,
    /// Peg-ins the Bridge rejected for a refund (e.g. over the locking cap).
    pub pegins_refunded: u64,
    /// Peg-ins the Bridge rejected without refund (e.g. below the minimum).
    pub pegins_unrefundable: u64,
    /// Seconds from the Bitcoin payment to the RBTC credit: median, p90, mean.
    pub pegin_latency_s: [Option<f64>; 3],
    /// BTC at federation addresses registered by the Bridge.
    pub federation_btc: f64,
    /// RBTC credited by the Bridge.
    pub rbtc_credited: f64,
    /// Sidechain blocks at which conservation failed, over all nodes (must be 0).
    pub conservation_violations: u64,
    /// Whether the final Bridge state conserves value.
    pub conservation_ok: bool,
}

/// Computes the peg report from the first sidechain node's view; writes `pegins.csv`.
pub fn report(built: &Built, collector: &PegCollector, dir: Option<&Path>) -> Result<PegReport, RunError> {
    let side = built.nodes.iter().find_map(|n| match n {
        PegNode::Side(s, _) => Some(&**s),
        PegNode::Pegnatory(p, _, _) => Some(&p.side),
        PegNode::Miner(m, _, _) => Some(&m.side),
        PegNode::Btc(..) => None,
    });
    let Some(side) = side else {
        return Err(RunError::Build(fika_scenario::BuildError::Topology("no sidechain node".into())));
    };
    let chain = side.chain();
    let topic = fika_peg::abi::event_topic(fika_peg::abi::PEGIN_BTC_SIGNATURE);
    let logs = chain.logs(Some(fika_peg::BRIDGE_ADDRESS.0), Some(topic));
    let mut latencies = Vec::new();
    let mut rows = String::from("btc_txid,sent_s,credited_s,latency_s\n");
    for l in &logs {
        // topics: [signature, receiver, btc tx hash (display order)]
        let Some(display) = l.log.topics.get(2) else { continue };
        let mut internal = *display;
        internal.reverse();
        let credited = collector.side_mined.get(&l.block_hash).copied();
        let sent = collector.btc_created.get(&internal).copied();
        if let (Some(c), Some(t)) = (credited, sent) {
            let lat = c.saturating_sub(t) as f64 / 1e9;
            latencies.push(lat);
            rows += &format!("{},{:.3},{:.3},{:.3}\n", hex(display), t as f64 / 1e9, c as f64 / 1e9, lat);
        }
    }
    latencies.sort_by(f64::total_cmp);
    let mean = (!latencies.is_empty()).then(|| latencies.iter().sum::<f64>() / latencies.len() as f64);
    let bridge = chain.system().state();
    let federation_btc: u64 = bridge.utxos().map(|u| u.value.to_sat()).sum();
    let count = |sig: &str| {
        chain.logs(Some(fika_peg::BRIDGE_ADDRESS.0), Some(fika_peg::abi::event_topic(sig))).len() as u64
    };
    let report = PegReport {
        pegins_refunded: count(fika_peg::abi::REJECTED_PEGIN_SIGNATURE),
        pegins_unrefundable: count(fika_peg::abi::UNREFUNDABLE_PEGIN_SIGNATURE),
        side_height: chain.best_number(),
        side_blocks_mined: collector.side_mined.len() as u64,
        pegins_sent: collector.btc_created.len() as u64,
        pegins_credited: latencies.len() as u64,
        pegin_latency_s: [
            fika_report::quantile(&latencies, 0.5),
            fika_report::quantile(&latencies, 0.9),
            mean,
        ],
        federation_btc: federation_btc as f64 / 1e8,
        rbtc_credited: bridge.pegged_in().to_sat() as f64 / 1e8,
        conservation_violations: collector.violations,
        conservation_ok: bridge.conservation().is_ok() && collector.violations == 0,
    };
    if let Some(dir) = dir {
        let path = dir.join("pegins.csv");
        fs::write(&path, rows).map_err(crate::out_err(&path))?;
    }
    Ok(report)
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
