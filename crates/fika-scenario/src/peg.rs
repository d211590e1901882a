//! Building the nodes of a PowPeg scenario: Bitcoin nodes and merge-mining
//! pools, sidechain nodes with the Bridge, the federation's pegnatories
//! (keys, PowHSMs) and users — what the simulator runs, and what an
//! emulated node rebuilds in its own process to take its own node.
//!
//! Everything is derived from the scenario and its seed (keys through
//! [`derive_rng`]), so every process builds the same federation, genesis
//! and Bridge.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;
use std::time::Duration;

use bitcoin::{Amount, ScriptBuf, Transaction, TxOut};
use fika_btc::blockdb::BlockDb;
use fika_btc::node::{BtcNode, FullNode, Payout};
use fika_btc::sign::secret_key_from_rng;
use fika_btc::spv::SpvClient;
use fika_btc::wallet::{ScriptKind, Wallet, WalletConfig};
use fika_btc::wallet_node::{WalletNode, Workload};
use fika_core::{NodeId, SimTime, derive_rng};
use fika_peg::contract::BridgeContract;
use fika_peg::hsm::{HsmParams, PowHsm, min_cumulative_for};
use fika_peg::network::{
    FederationChangePlan, ForkAttack, MergeMiner, Peers, PegNode, PegUser, Pegnatory, PegoutWorkload,
    SideNode, SideSettings,
};
use fika_peg::{BridgeState, Checkpoint, Federation};
use fika_side::{ChainConfig, Genesis, U256};

use crate::{BuildError, Layout, Scenario};

/// The nodes of a PowPeg run and what the report needs.
pub struct Built {
    /// The nodes.
    pub nodes: Vec<PegNode>,
    /// The Bitcoin block store.
    pub db: Rc<RefCell<BlockDb>>,
    /// Bitcoin relaying nodes (for propagation shares).
    pub btc_relays: usize,
    /// The federation.
    pub federation: Federation,
    /// The federation voted in during the run, if any.
    pub next_federation: Option<Federation>,
    /// Unix time at virtual time zero.
    pub start_unix: u64,
}

fn to_sat(btc: f64) -> Amount {
    Amount::from_sat((btc * 1e8).round().max(0.0) as u64)
}

/// Builds the nodes of a PowPeg scenario.
pub fn build(s: &Scenario, layout: &Layout) -> Result<Built, BuildError> {
    let bad = BuildError::Topology;
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
    // With a federation change, pegnatories that `join` start outside the
    // federation; the initial members are the change's authorised voters.
    let change = peg.federation_change.as_ref();
    let named = |list: fn(&crate::FederationChangeSpec) -> &Vec<String>, i: usize| {
        change.is_some_and(|c| list(c).contains(&layout.names[i]))
    };
    let joins = |i: usize| named(|c| &c.join, i);
    let leaves = |i: usize| named(|c| &c.leave, i);
    let public = |k: usize| peg_keys[k].public_key(&secp);
    let initial: Vec<usize> = (0..peg_ids.len()).filter(|k| !joins(peg_ids[*k])).collect();
    let members: Vec<_> = initial.iter().map(|k| public(*k)).collect();
    let federation = Federation::p2sh_p2wsh_erp(&members, &emergency, peg.params.erp_csv)
        .map_err(|e| bad(format!("federation: {e}")))?;
    let next_federation = match change {
        Some(_) => {
            let keys: Vec<_> = (0..peg_ids.len()).filter(|k| !leaves(peg_ids[*k])).map(public).collect();
            Some(
                Federation::p2sh_p2wsh_erp(&keys, &emergency, peg.params.erp_csv)
                    .map_err(|e| bad(format!("the next federation: {e}")))?,
            )
        }
        None => None,
    };
    let fed_script: ScriptBuf = federation.script_pubkey().clone();
    let fed_for_hsm = federation.clone();
    // Users: legacy P2PKH wallets (the sender key gives the sidechain address).
    let mut wallets: BTreeMap<usize, (Wallet, bitcoin::secp256k1::SecretKey)> = BTreeMap::new();
    let mut outputs = Vec::new();
    for i in (0..n).filter(|i| role(*i) == "user") {
        let sk = secret_key_from_rng(&mut derive_rng(s.seed, "wallet-key", i as u64));
        let cfg = WalletConfig::for_params(&params).with_receive_kind(ScriptKind::P2pkh);
        if let Ok(w) = Wallet::new(cfg, &[sk]) {
            let bal = s.nodes[layout.group[i]].balance.unwrap_or(0.0);
            if bal > 0.0 {
                outputs.push(TxOut { value: to_sat(bal), script_pubkey: w.receive_script() });
            }
            wallets.insert(i, (w, sk));
        }
    }
    let premine: Vec<Transaction> = fika_btc::blockdb::premine_tx(s.seed, outputs).into_iter().collect();
    let db = Rc::new(RefCell::new(BlockDb::new(params.clone(), &premine)));
    let genesis = db.borrow().rec(0).data.block.clone();
    // The Bridge, from Bitcoin's genesis as its checkpoint.
    let checkpoint = Checkpoint::genesis(&params).map_err(|e| bad(format!("checkpoint: {e}")))?;
    let authorizers = federation.member_addresses();
    let bridge = BridgeState::new(peg.params.clone(), params.clone(), checkpoint, federation)
        .map_err(|e| bad(format!("bridge: {e}")))?
        .with_federation_change_authorizers(if change.is_some() { authorizers } else { Vec::new() });
    let bridge_min_pegout = bridge.minimum_pegout().0.to_sat();
    let contract = BridgeContract::new(bridge);
    let mut genesis_alloc = Genesis::new(u64::from(relay.start_unix), U256::from(1u8)).with_bridge_fund();
    for k in &peg_keys {
        genesis_alloc = genesis_alloc.with_balance(fika_side::address_of_secret(k), fika_side::WEI_PER_RBTC);
    }
    for (address, rbtc) in &peg.side_accounts {
        let a: fika_peg::SideAddress = address.parse().map_err(|e| bad(format!("side_accounts: {e}")))?;
        let wei = (rbtc * 1e8).round() as u128 * (fika_side::WEI_PER_RBTC / 100_000_000);
        genesis_alloc = genesis_alloc.with_balance(a.0, wei);
    }
    let side_config = ChainConfig {
        genesis: genesis_alloc,
        fee_share_divisor: peg.params.federation_fee_divisor,
        ..ChainConfig::regtest()
    };
    let settings = Rc::new(SideSettings {
        block_interval: peg.side_block_interval,
        start_unix: u64::from(relay.start_unix),
        chain_id: side_config.chain_id,
        turn: Duration::from_secs(peg.params.pegnatory_turn_secs),
        max_headers: peg.params.max_headers_per_turn as usize,
        max_pegins: peg.params.max_pegins_per_turn as usize,
        confirmations: peg.params.pegin_confirmations,
        hsm_interval: peg.hsm_interval,
        hsm_batch: peg.hsm_batch as usize,
        pegout: peg.pegout.as_ref().map(|w| PegoutWorkload {
            interval: w.interval,
            start: w.start,
            amount_fraction: w.amount_fraction,
            min_sat: bridge_min_pegout,
        }),
        federation_change: change
            .zip(next_federation.as_ref())
            .map(|(c, f)| FederationChangePlan { at: c.at, members: f.members().to_vec() }),
        halt_reorg_depth: peg.params.pegout_confirmations.max(1),
        // With a federation change, users look the address up once per
        // peg-in interval (on average, a user pegs in once with what it knew).
        address_refresh: change.map(|_| peg.pegin.interval.max(Duration::from_secs(1))),
    });
    let attack = |i: usize| {
        peg.attack.as_ref().filter(|a| a.node == layout.names[i]).map(|a| ForkAttack {
            start: a.start,
            publish: a.publish,
            rate: a.rate,
            pegout_sat: to_sat(a.pegout).to_sat(),
        })
    };
    // Each PowHSM starts from the sidechain's genesis and wants
    // `hsm_confirmations` blocks of the chain's (fixed) difficulty on top.
    let side_genesis = fika_side::SideChain::new(side_config.clone(), contract.clone()).genesis_hash();
    let block_difficulty = side_config.genesis.difficulty;
    let mut hsm_params = HsmParams::regtest(
        side_genesis,
        fed_for_hsm.clone(),
        min_cumulative_for(peg.hsm_confirmations, block_difficulty),
    );
    hsm_params.btc_network = peg.params.btc_network;
    // Hashrate shares of the pools.
    let mut weights = vec![0.0f64; n];
    for (i, w) in weights.iter_mut().enumerate() {
        if role(i) != "miner" {
            continue;
        }
        *w = match &s.nodes[layout.group[i]].hashrate {
            Some(h) => h.weight(s.seed, i),
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
                let Some((mut w, sk)) = wallets.remove(&i) else { continue };
                let _ = w.apply_block(genesis.block_hash(), 0, &premine);
                let spv = SpvClient::new(params.clone(), w);
                let wn = WalletNode::new(spv, relay.start_unix, Some(workload.clone()), Vec::new());
                let wallet = BtcNode::Wallet(Box::new(wn));
                if settings.pegout.is_some() || settings.address_refresh.is_some() {
                    PegNode::User(
                        Box::new(PegUser::new(wallet, sk)),
                        Peers { btc: btc_peers, side: side_peers },
                        Rc::clone(&settings),
                    )
                } else {
                    PegNode::Btc(wallet, btc_peers)
                }
            }
            "full" => {
                let f = FullNode::new(Rc::clone(&db), Rc::clone(&relay), 0.0, payout);
                PegNode::Btc(BtcNode::Full(f), btc_peers)
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
                    Box::new(MergeMiner { btc, side, share, address, attack: attack(i), fork_point: 0 }),
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
                // A joining pegnatory's device is provisioned for the next
                // federation.
                let mut device = hsm_params.clone();
                if let (true, Some(next)) = (joins(i), &next_federation) {
                    device.federation = next.clone();
                }
                let hsm = PowHsm::new(peg_keys[k], device)
                    .map_err(|e| bad(format!("PowHSM of pegnatory {k}: {e}")))?;
                let mut p = Pegnatory::new(
                    side,
                    peg_keys[k],
                    hsm,
                    k as u32,
                    peg_ids.len() as u32,
                    fed_script.clone(),
                    genesis.header,
                );
                p.set_censor(s.nodes[layout.group[i]].censor.unwrap_or(false));
                p.set_attack(attack(i));
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
    Ok(Built {
        nodes,
        db,
        btc_relays,
        federation: fed_for_hsm,
        next_federation,
        start_unix: u64::from(relay.start_unix),
    })
}
