//! Running a PowPeg network: Bitcoin with merge-mining pools, the
//! sidechain with its Bridge, the federation's pegnatories and users
//! pegging in — and measuring peg-in latency and the peg's conservation.

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::path::Path;

use bitcoin::hashes::Hash;
use bitcoin::{ScriptBuf, Transaction};
use fika_core::{Event, EventSink, NodeId, SimTime, Value};
use fika_peg::contract::BridgeContract;
use fika_peg::network::PegNode;
use fika_side::SideChain;
use serde::Serialize;

use crate::RunError;

/// Collects what the peg metrics need from the event stream.
#[derive(Default)]
pub struct PegCollector {
    side_mined: BTreeMap<[u8; 32], u64>,
    btc_created: BTreeMap<[u8; 32], u64>,
    violations: u64,
    /// Peg-out requests users sent: sidechain tx hash → time.
    pegout_sent: BTreeMap<[u8; 32], u64>,
    /// Released peg-outs first broadcast: txid (internal order) → (time, fee).
    pegout_broadcast: BTreeMap<[u8; 32], (u64, u64)>,
    /// Peg-outs first seen in a Bitcoin block by a pegnatory: txid → time.
    pegout_included: BTreeMap<[u8; 32], u64>,
    /// Digests of every signature a PowHSM produced.
    hsm_signatures: BTreeSet<[u8; 32]>,
    hsm_refusals: u64,
    /// Transactions (txid, internal order) a PowHSM signed an input of.
    hsm_signed_txids: BTreeSet<[u8; 32]>,
    /// Pegnatories that halted peg-outs, with when.
    halted: BTreeMap<NodeId, u64>,
    /// Signatures a pegnatory's PowHSM produced after it halted.
    signatures_after_halt: u64,
    /// Deepest sidechain reorganisation any node saw.
    deepest_reorg: u64,
    /// Peg-outs an attacking pegnatory asked its PowHSM to sign.
    attack_targets: BTreeSet<[u8; 32]>,
    /// Blocks of attacking pegnatories' private forks.
    attack_fork_blocks: u64,
    /// Users that learned a new federation address.
    users_switched: u64,
    /// Fewest sidechain blocks (release block to the signer's tip) under
    /// which a PowHSM signed.
    min_work_signed: Option<u64>,
}

impl EventSink for PegCollector {
    fn record(&mut self, at: SimTime, node: Option<NodeId>, event: &Event) {
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
            "peg.pegout.sent" => {
                if let Some(Value::Hash(h)) = event.field("tx") {
                    self.pegout_sent.entry(*h).or_insert(at.as_nanos());
                }
            }
            "peg.pegout.broadcast" => {
                if let (Some(Value::Hash(h)), Some(Value::U64(fee))) =
                    (event.field("txid"), event.field("fee"))
                {
                    self.pegout_broadcast.entry(*h).or_insert((at.as_nanos(), *fee));
                }
            }
            "peg.pegout.included" => {
                if let Some(Value::Hash(h)) = event.field("txid") {
                    self.pegout_included.entry(*h).or_insert(at.as_nanos());
                }
            }
            "peg.hsm.signed" => {
                if let Some(Value::Hash(h)) = event.field("sig") {
                    self.hsm_signatures.insert(*h);
                }
                if let Some(Value::Hash(h)) = event.field("txid") {
                    self.hsm_signed_txids.insert(*h);
                }
                if let Some(Value::U64(w)) = event.field("work_blocks") {
                    self.min_work_signed = Some(self.min_work_signed.map_or(*w, |m| m.min(*w)));
                }
                if node.is_some_and(|n| self.halted.contains_key(&n)) {
                    self.signatures_after_halt += 1;
                }
            }
            "peg.hsm.refused" => self.hsm_refusals += 1,
            "peg.halted" => {
                if let Some(n) = node {
                    self.halted.entry(n).or_insert(at.as_nanos());
                }
            }
            "side.reorg" => {
                if let Some(Value::U64(d)) = event.field("depth") {
                    self.deepest_reorg = self.deepest_reorg.max(*d);
                }
            }
            "peg.attack.target" => {
                if let Some(Value::Hash(h)) = event.field("txid") {
                    self.attack_targets.insert(*h);
                }
            }
            "peg.attack.fork_block" => self.attack_fork_blocks += 1,
            "peg.user.federation" => self.users_switched += 1,
            _ => {}
        }
    }
}

pub use fika_scenario::peg::{Built, build};

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
    /// Peg-out requests users sent to the Bridge.
    pub pegouts_sent: u64,
    /// Requests the Bridge accepted (`release_request_received`).
    pub pegouts_requested: u64,
    /// Requests the Bridge refused and refunded.
    pub pegouts_rejected: u64,
    /// Accepted requests in a batch whose Bitcoin transaction was released
    /// (fully signed, `release_btc`).
    pub pegouts_released: u64,
    /// Of those, in a Bitcoin block (as a pegnatory saw it).
    pub pegouts_confirmed: u64,
    /// Peg-out Bitcoin transactions created / released / in a Bitcoin block
    /// / registered back by the Bridge.
    pub pegout_txs: [u64; 4],
    /// Seconds from the request to `release_btc`: median, p90.
    pub pegout_release_latency_s: [Option<f64>; 2],
    /// Seconds from the request to the Bitcoin block: median, p90.
    pub pegout_confirm_latency_s: [Option<f64>; 2],
    /// Bitcoin fees of the released peg-outs, BTC.
    pub pegout_fees_btc: f64,
    /// Fee per request, satoshis: median.
    pub pegout_fee_per_request_sat: Option<f64>,
    /// Released transactions whose every input spends a federation coin
    /// (a registered peg-in or earlier peg-out) through a federation's
    /// script, and which pay every request of their batch to the
    /// requester's P2PKH (or, for a migration, pay the new federation).
    pub pegout_txs_well_formed: u64,
    /// Signatures in the released transactions / of those produced by a PowHSM.
    pub release_signatures: [u64; 2],
    /// Commands the PowHSMs refused.
    pub hsm_refusals: u64,
    /// BTC at federation addresses by the Bridge, including change of
    /// released peg-outs not yet registered back.
    pub federation_btc_final: f64,
    /// Federation changes activated.
    pub federation_activations: u64,
    /// Whether a retiring federation still exists at the end.
    pub retiring_federation_live: bool,
    /// BTC still held by the retiring federation at the end.
    pub retiring_btc_final: f64,
    /// Credited peg-ins that paid the retiring federation.
    pub pegins_to_retiring: u64,
    /// Migration transactions the Bridge created.
    pub migrations: u64,
    /// Bitcoin fees the federation paid for migrations, BTC.
    pub migration_fees_btc: f64,
    /// BTC left at a retired federation (too small to migrate).
    pub stranded_btc: f64,
    /// Users that learned a new federation address and switched to it.
    pub users_switched_federation: u64,
    /// Sidechain fees paid to the federation's members (REMASC-like
    /// share), in wei, along the best chain.
    pub pegnatory_fee_share_wei: u64,
    /// Deepest sidechain reorganisation any node saw, in blocks.
    pub deepest_side_reorg: u64,
    /// Pegnatories that halted peg-outs after a reorganisation deeper than
    /// peg-out finality.
    pub pegnatories_halted: u64,
    /// PowHSM signatures of a halted pegnatory after it halted (must be 0).
    pub hsm_signatures_after_halt: u64,
    /// Transactions a PowHSM signed that the best chain never asked for
    /// (no `release_requested` names them; must be 0).
    pub hsm_signed_off_chain: u64,
    /// Peg-outs an attacking pegnatory asked its PowHSM to sign / of those,
    /// unknown to the best chain / of those, signed by the PowHSM.
    pub attack_targets: [u64; 3],
    /// Blocks of the attacking pegnatories' private forks.
    pub attack_fork_blocks: u64,
    /// The fewest sidechain blocks, from a release's block to the signing
    /// node's tip, under which any PowHSM signature was made (at least the
    /// PowHSM's required confirmations: nothing is signed without the work).
    pub hsm_min_work_signed: Option<u64>,
    /// Sidechain block of the last federation commit (the active
    /// federation's creation block), if the federation changed.
    pub federation_commit_block: Option<u64>,
    /// First sidechain block at which the new federation was active.
    pub federation_active_block: Option<u64>,
}

/// Computes the peg report from the first sidechain node's view; writes `pegins.csv`.
pub fn report(built: &Built, collector: &PegCollector, dir: Option<&Path>) -> Result<PegReport, RunError> {
    // A plain sidechain node if there is one, else a node not mining a
    // private fork.
    let side = built
        .nodes
        .iter()
        .find_map(|n| match n {
            PegNode::Side(s, _) => Some(&**s),
            _ => None,
        })
        .or_else(|| {
            built.nodes.iter().find_map(|n| match n {
                PegNode::Pegnatory(p, _, _) if !p.side.is_private() => Some(&p.side),
                PegNode::Miner(m, _, _) if !m.side.is_private() => Some(&m.side),
                _ => None,
            })
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
    let po = pegout_report(built, chain, collector);
    // Every transaction the best chain asked to be signed (internal order).
    let requested: BTreeSet<[u8; 32]> = chain
        .logs(
            Some(fika_peg::BRIDGE_ADDRESS.0),
            Some(fika_peg::abi::event_topic(fika_peg::abi::RELEASE_REQUESTED_SIGNATURE)),
        )
        .iter()
        .filter_map(|l| l.log.topics.get(2).map(display_to_internal))
        .collect();
    let off_chain = |set: &BTreeSet<[u8; 32]>| set.iter().filter(|t| !requested.contains(*t)).count() as u64;
    let fork_only: BTreeSet<[u8; 32]> =
        collector.attack_targets.iter().filter(|t| !requested.contains(*t)).copied().collect();
    let fee_share: u128 =
        (0..=chain.best_number()).filter_map(|n| chain.hash_at(n).and_then(|h| chain.fee_share_at(&h))).sum();
    let halted =
        built.nodes.iter().filter(|n| matches!(n, PegNode::Pegnatory(p, _, _) if p.is_halted())).count()
            as u64;
    let report = PegReport {
        federation_activations: bridge.federation_activations(),
        retiring_federation_live: bridge.retiring_federation().is_some(),
        retiring_btc_final: bridge.retiring_balance().to_sat() as f64 / 1e8,
        pegins_to_retiring: bridge.retiring_pegins(),
        migrations: bridge.migrations(),
        migration_fees_btc: bridge.migration_fees().to_sat() as f64 / 1e8,
        stranded_btc: bridge.stranded().to_sat() as f64 / 1e8,
        users_switched_federation: collector.users_switched,
        pegnatory_fee_share_wei: u64::try_from(fee_share).unwrap_or(u64::MAX),
        deepest_side_reorg: collector.deepest_reorg,
        pegnatories_halted: halted,
        hsm_signatures_after_halt: collector.signatures_after_halt,
        hsm_signed_off_chain: off_chain(&collector.hsm_signed_txids),
        attack_targets: [
            collector.attack_targets.len() as u64,
            fork_only.len() as u64,
            fork_only.iter().filter(|t| collector.hsm_signed_txids.contains(*t)).count() as u64,
        ],
        attack_fork_blocks: collector.attack_fork_blocks,
        hsm_min_work_signed: collector.min_work_signed,
        federation_commit_block: (bridge.federation_activations() > 0)
            .then(|| bridge.get_federation_creation_block_number()),
        federation_active_block: (0..=chain.best_number()).find(|n| {
            chain
                .hash_at(*n)
                .and_then(|h| chain.state_at(&h))
                .is_some_and(|st| st.system.state().federation_activations() > 0)
        }),
        pegouts_sent: collector.pegout_sent.len() as u64,
        pegouts_requested: po.requested,
        pegouts_rejected: count(fika_peg::abi::RELEASE_REQUEST_REJECTED_SIGNATURE),
        pegouts_released: po.released,
        pegouts_confirmed: po.confirmed,
        pegout_txs: po.txs,
        pegout_release_latency_s: po.release_latency,
        pegout_confirm_latency_s: po.confirm_latency,
        pegout_fees_btc: po.fees_sat as f64 / 1e8,
        pegout_fee_per_request_sat: po.fee_per_request,
        pegout_txs_well_formed: po.well_formed,
        release_signatures: po.signatures,
        hsm_refusals: collector.hsm_refusals,
        federation_btc_final: bridge.federation_balance().to_sat() as f64 / 1e8,
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
        let path = dir.join("pegouts.csv");
        fs::write(&path, &po.csv).map_err(crate::out_err(&path))?;
        let path = dir.join("federation.csv");
        fs::write(&path, federation_csv(chain, built.start_unix)).map_err(crate::out_err(&path))?;
    }
    Ok(report)
}

/// What the report knows of peg-outs.
#[derive(Default)]
struct PegoutNumbers {
    requested: u64,
    released: u64,
    confirmed: u64,
    txs: [u64; 4],
    release_latency: [Option<f64>; 2],
    confirm_latency: [Option<f64>; 2],
    fees_sat: u64,
    fee_per_request: Option<f64>,
    well_formed: u64,
    signatures: [u64; 2],
    csv: String,
}

fn display_to_internal(word: &[u8; 32]) -> [u8; 32] {
    let mut h = *word;
    h.reverse();
    h
}

/// Follows every peg-out request on the reporting node's best chain: the
/// batch that pays it, the release, the Bitcoin block; checks the released
/// transactions.
fn pegout_report(built: &Built, chain: &SideChain<BridgeContract>, c: &PegCollector) -> PegoutNumbers {
    use fika_peg::abi::{
        BATCH_PEGOUT_CREATED_SIGNATURE, RELEASE_BTC_SIGNATURE, RELEASE_REQUEST_RECEIVED_SIGNATURE,
        event_topic,
    };
    use fika_peg::network::abi_bytes_at;
    let bridge_addr = Some(fika_peg::BRIDGE_ADDRESS.0);
    let logs = |sig: &str| chain.logs(bridge_addr, Some(event_topic(sig)));
    let mut n = PegoutNumbers::default();
    // Accepted requests: user tx hash → destination script.
    let mut destination: BTreeMap<[u8; 32], ScriptBuf> = BTreeMap::new();
    for l in logs(RELEASE_REQUEST_RECEIVED_SIGNATURE) {
        let script = abi_bytes_at(&l.log.data, 0)
            .and_then(|b| std::str::from_utf8(b).ok())
            .and_then(|a| a.parse::<bitcoin::Address<bitcoin::address::NetworkUnchecked>>().ok())
            .map(|a| a.assume_checked().script_pubkey())
            .unwrap_or_default();
        destination.insert(l.tx_hash, script);
    }
    n.requested = destination.len() as u64;
    // Batches: btc txid (internal) → request tx hashes.
    let mut batches: BTreeMap<[u8; 32], Vec<[u8; 32]>> = BTreeMap::new();
    for l in logs(BATCH_PEGOUT_CREATED_SIGNATURE) {
        let Some(word) = l.log.topics.get(1) else { continue };
        let hashes = abi_bytes_at(&l.log.data, 0)
            .map(|b| b.chunks_exact(32).filter_map(|c| c.try_into().ok()).collect())
            .unwrap_or_default();
        batches.insert(display_to_internal(word), hashes);
    }
    n.txs[0] = batches.len() as u64;
    // Federation-funded transactions: registered peg-ins and released peg-outs.
    let mut funded: BTreeSet<[u8; 32]> = chain
        .logs(bridge_addr, Some(event_topic(fika_peg::abi::PEGIN_BTC_SIGNATURE)))
        .iter()
        .filter_map(|l| l.log.topics.get(2).map(display_to_internal))
        .collect();
    let released: Vec<(u64, Transaction)> = logs(RELEASE_BTC_SIGNATURE)
        .iter()
        .filter_map(|l| {
            let tx: Transaction = bitcoin::consensus::deserialize(abi_bytes_at(&l.log.data, 0)?).ok()?;
            Some((c.side_mined.get(&l.block_hash).copied()?, tx))
        })
        .collect();
    for (_, tx) in &released {
        funded.insert(tx.compute_txid().to_byte_array());
    }
    n.txs[1] = released.len() as u64;
    // The witness scripts of every federation of the run.
    let redeems: Vec<Vec<u8>> = std::iter::once(&built.federation)
        .chain(built.next_federation.as_ref())
        .map(|f| f.redeem_script().as_bytes().to_vec())
        .collect();
    let mut release_lat = Vec::new();
    let mut confirm_lat = Vec::new();
    let mut per_request_fee = Vec::new();
    let mut csv = String::from("request_tx,btc_txid,sent_s,released_s,btc_included_s,fee_share_sat\n");
    for (released_at, tx) in &released {
        let txid = tx.compute_txid().to_byte_array();
        let included = c.pegout_included.get(&txid).copied();
        if included.is_some() {
            n.txs[2] += 1;
        }
        if chain.system().state().processed_at(&tx.compute_txid()).is_some() {
            n.txs[3] += 1;
        }
        let fee = c.pegout_broadcast.get(&txid).map(|(_, f)| *f);
        n.fees_sat += fee.unwrap_or(0);
        // Signatures: every non-empty witness item but the script is one.
        for input in &tx.input {
            let items: Vec<&[u8]> = input.witness.iter().collect();
            for item in items.iter().take(items.len().saturating_sub(1)) {
                if item.len() < 9 {
                    continue;
                }
                let Ok(sig) = bitcoin::ecdsa::Signature::from_slice(item) else { continue };
                n.signatures[0] += 1;
                let digest = fika_peg::side::keccak256(&sig.signature.serialize_compact());
                if c.hsm_signatures.contains(&digest) {
                    n.signatures[1] += 1;
                }
            }
        }
        let requests = batches.get(&txid).cloned().unwrap_or_default();
        let spends_federation = tx.input.iter().all(|i| {
            funded.contains(&i.previous_output.txid.to_byte_array())
                && i.witness.last().is_some_and(|w| redeems.iter().any(|r| w == r.as_slice()))
        });
        // A batch pays each of its requests; a migration (no requests)
        // pays a federation.
        let pays_all = match requests.is_empty() {
            false => requests.iter().all(|r| {
                destination
                    .get(r)
                    .is_some_and(|d| !d.is_empty() && tx.output.iter().any(|o| o.script_pubkey == *d))
            }),
            true => built
                .next_federation
                .as_ref()
                .is_some_and(|f| tx.output.len() == 1 && tx.output[0].script_pubkey == *f.script_pubkey()),
        };
        if spends_federation && pays_all {
            n.well_formed += 1;
        }
        let share = fee.map(|f| f / requests.len().max(1) as u64);
        for r in &requests {
            n.released += 1;
            if let Some(f) = share {
                per_request_fee.push(f as f64);
            }
            if included.is_some() {
                n.confirmed += 1;
            }
            let sent = c.pegout_sent.get(r).copied();
            if let Some(t) = sent {
                release_lat.push(released_at.saturating_sub(t) as f64 / 1e9);
                if let Some(i) = included {
                    confirm_lat.push(i.saturating_sub(t) as f64 / 1e9);
                }
            }
            let secs = |x: Option<u64>| x.map_or(String::new(), |v| format!("{:.3}", v as f64 / 1e9));
            csv += &format!(
                "{},{},{},{},{},{}\n",
                hex(r),
                hex(&display_to_internal(&txid)),
                secs(sent),
                secs(Some(*released_at)),
                secs(included),
                share.map_or(String::new(), |f| f.to_string())
            );
        }
    }
    for v in [&mut release_lat, &mut confirm_lat, &mut per_request_fee] {
        v.sort_by(f64::total_cmp);
    }
    let q = |v: &[f64]| [fika_report::quantile(v, 0.5), fika_report::quantile(v, 0.9)];
    n.release_latency = q(&release_lat);
    n.confirm_latency = q(&confirm_lat);
    n.fee_per_request = fika_report::quantile(&per_request_fee, 0.5);
    n.csv = csv;
    n
}

/// The federation's BTC by the Bridge along the reporting node's best
/// chain, about 2,000 samples.
fn federation_csv(chain: &SideChain<BridgeContract>, start_unix: u64) -> String {
    let mut out = String::from(
        "side_block,time_s,federation_btc,reserved_btc,pegged_in_btc,pegged_out_btc,retiring_btc,federation_changes\n",
    );
    let best = chain.best_number();
    let step = (best / 2000).max(1);
    let mut k = 0;
    while k <= best {
        if let Some(h) = chain.hash_at(k) {
            if let (Some(st), Some(hd)) = (chain.state_at(&h), chain.header(&h)) {
                let b = st.system.state();
                let reserved: u64 = b.reserved_utxos().map(|u| u.value.to_sat()).sum();
                out += &format!(
                    "{},{},{:.8},{:.8},{:.8},{:.8},{:.8},{}\n",
                    k,
                    hd.timestamp.saturating_sub(start_unix),
                    b.federation_balance().to_sat() as f64 / 1e8,
                    reserved as f64 / 1e8,
                    b.pegged_in().to_sat() as f64 / 1e8,
                    b.pegged_out().to_sat() as f64 / 1e8,
                    b.retiring_balance().to_sat() as f64 / 1e8,
                    b.federation_activations(),
                );
            }
        }
        k = if k == best { best + 1 } else { (k + step).min(best) };
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}
