//! The peg's conservation law under sidechain reorganisations and pegnatory
//! crashes: random sequences of peg-ins, peg-out requests, sidechain blocks,
//! signatures, Bitcoin blocks, reorganisations shallower than peg-out
//! finality, and members crashing and restarting (forgetting what they
//! signed). The sidechain is a branch of Bridge snapshots, one per block,
//! with the RBTC ledger beside it; a reorganisation drops the newest
//! blocks. Released transactions, once broadcast, stay out there and may be
//! mined whatever the sidechain does.
//!
//! "Shallower than finality" is about the blocks reverted, not one step:
//! no block that ever had `pegout_confirmations` confirmations is reverted
//! (see [`Run::peak`]). Reorganisations in a row, with no block between
//! them, are one deeper reorganisation, which the PowPeg rules out.
//!
//! After every step:
//!
//! * the Bridge's conservation law holds on the current branch;
//! * the sidechain supply of the pegged coin (every account's RBTC, the
//!   burned included) is what left the Bridge;
//! * the federation's coins *on Bitcoin* (the UTXO set of the fully
//!   validating chain) are the Bridge's available coins, plus the inputs of
//!   its peg-outs not mined yet, plus the change of mined peg-outs not
//!   registered back, plus peg-ins mined but not (or no longer) registered
//!   on this branch — nothing appears or vanishes;
//! * no two different released transactions ever spend the same federation
//!   coin, on any branch (no double release).

#![allow(clippy::unwrap_used)]

mod common;

use std::collections::{BTreeMap, BTreeSet};

use bitcoin::consensus::deserialize;
use bitcoin::{Amount, OutPoint, Transaction, Txid};
use fika_peg::bridge::{BridgeEvent, PeginOutcome};
use fika_peg::pegout::{self, AddSignatureError, PegoutStatus, TxOrigin};
use fika_peg::side::{keccak256, sat_to_wei};
use fika_peg::{BridgeState, PegParams, RegisterError, SideAddress};
use proptest::prelude::*;

use common::{Lock, User, World};

const BTC: u64 = 100_000_000;
const USERS: u32 = 6;

#[derive(Clone, Debug)]
enum Op {
    Pegin { user: u8, sat: u64 },
    Request { user: u8, percent: u8 },
    Advance { blocks: u64 },
    Sign { signers: Vec<u8> },
    MineReleased,
    Reorg { depth: u64 },
    Crash { member: u8 },
    Restart { member: u8 },
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => (0u8..USERS as u8, 600_000u64..3 * BTC).prop_map(|(user, sat)| Op::Pegin { user, sat }),
        3 => (0u8..USERS as u8, 10u8..90).prop_map(|(user, percent)| Op::Request { user, percent }),
        3 => (1u64..25).prop_map(|blocks| Op::Advance { blocks }),
        4 => proptest::collection::vec(0u8..9, 3..9).prop_map(|signers| Op::Sign { signers }),
        2 => Just(Op::MineReleased),
        2 => (1u64..10).prop_map(|depth| Op::Reorg { depth }),
        1 => (0u8..9).prop_map(|member| Op::Crash { member }),
        1 => (0u8..9).prop_map(|member| Op::Restart { member }),
    ]
}

/// One sidechain block's post-state: the Bridge and every account's RBTC.
#[derive(Clone)]
struct Block {
    bridge: BridgeState,
    ledger: BTreeMap<SideAddress, u128>,
}

struct Run {
    w: World,
    /// The current branch, genesis first; the tip is also `w.bridge`.
    branch: Vec<Block>,
    ledger: BTreeMap<SideAddress, u128>,
    /// Peg-ins on Bitcoin.
    pegins: Vec<Transaction>,
    /// Released transactions ever broadcast, in release order.
    broadcast: Vec<Transaction>,
    /// Mined on Bitcoin's best chain.
    mined: BTreeSet<Txid>,
    /// Federation coin → the released transaction spending it (any branch).
    spender: BTreeMap<OutPoint, Txid>,
    alive: [bool; 9],
    tag: u64,
    /// Coins two different released transactions spent.
    double_releases: u64,
    /// The highest block number any branch's tip has reached.
    ///
    /// Finality means a block with `pegout_confirmations` confirmations is
    /// never reverted. The signing rules depend on this: a peg-out is
    /// signed only once its creating block is that deep. A reorganisation
    /// replaces the newest blocks, and the model mines the replacement
    /// branch with the ops that follow. So each reorganisation must be
    /// measured from the highest tip ever reached, not from the current
    /// (already shortened) tip. Otherwise reorgs of 5, 4 and 7 in a row
    /// would revert 16 blocks. That is deeper than finality, and the
    /// pegnatories halt on it instead of signing. It would revert the
    /// creation of a peg-out the federation had already signed and
    /// broadcast, and the new branch could batch the same coins
    /// differently (`a_reorg_deeper_than_finality_can_release_a_coin_twice`).
    /// Measuring from the peak is exact. A block below `peak + 2 − finality`
    /// has been on the branch since the tip was at `peak`, so it had
    /// `finality` confirmations then. A block above it never had that many.
    peak: u64,
}

fn users(w: &World) -> Vec<User> {
    (0..USERS).map(|i| User::new(&w.secp, 500 + i)).collect()
}

impl Run {
    fn number(&self) -> u64 {
        self.branch.len() as u64
    }

    /// Opens the next sidechain block.
    fn begin(&mut self) {
        let n = self.number();
        self.w.bridge.begin_block(n);
    }

    /// Closes the block: keeps its post-state on the branch.
    fn end(&mut self) {
        self.branch.push(Block { bridge: self.w.bridge.clone(), ledger: self.ledger.clone() });
        self.peak = self.peak.max(self.number() - 1);
    }

    fn credit(&mut self, credits: &[(SideAddress, u128)]) {
        for (to, wei) in credits {
            *self.ledger.entry(*to).or_default() += wei;
        }
    }

    /// Registers every Bitcoin transaction deep enough and not processed
    /// on this branch (peg-ins, mined releases).
    fn register_all(&mut self) {
        // A pegnatory first sends the headers this branch's Bridge lacks.
        self.w.sync_bridge();
        let mut txs: Vec<Transaction> = self.pegins.clone();
        txs.extend(self.broadcast.iter().filter(|t| self.mined.contains(&t.compute_txid())).cloned());
        let confs = self.w.bridge.params().pegin_confirmations;
        for tx in txs {
            let txid = tx.compute_txid();
            if self.w.bridge.processed_at(&txid).is_some() {
                continue;
            }
            let (height, _) = self.w.height_of_tx(txid);
            if self.w.tip_height() + 1 < height + confs {
                continue;
            }
            match self.w.register(&tx) {
                Ok(reg) => {
                    if let PeginOutcome::Registered { .. } = reg.outcome {
                        self.credit(&reg.credits);
                    }
                }
                // The release was reverted on this branch: later.
                Err(RegisterError::PegoutNotReleased { .. }) => {}
                Err(e) => panic!("registration of {txid} refused: {e}"),
            }
        }
    }

    fn apply(&mut self, op: &Op) {
        let us = users(&self.w);
        match op {
            Op::Pegin { user, sat } => {
                let u = us[usize::from(*user)];
                let out = self.w.to_fed(*sat);
                let tx = self.w.pegin(&u, Lock::P2pkh, vec![out]);
                self.w.mine();
                let h = self.w.tip_height();
                self.begin();
                self.w.confirm(h, self.w.bridge.params().pegin_confirmations);
                self.pegins.push(tx);
                self.register_all();
                self.end();
            }
            Op::Request { user, percent } => {
                let u = us[usize::from(*user)];
                let balance = self.ledger.get(&u.side_address()).copied().unwrap_or(0);
                let wei = balance / 100 * u128::from(*percent);
                if wei == 0 {
                    return;
                }
                self.begin();
                self.tag += 1;
                let origin = TxOrigin::signer(u.pk, keccak256(&self.tag.to_be_bytes()));
                *self.ledger.get_mut(&u.side_address()).unwrap() -= wei;
                let fx = self.w.bridge.release_btc(u.side_address(), wei, &origin).unwrap();
                self.credit(&fx.credits);
                self.end();
            }
            Op::Advance { blocks } => {
                for _ in 0..*blocks {
                    self.begin();
                    let n = self.number();
                    let caller = SideAddress::from_public_key(&self.w.fed.members()[0]);
                    self.tag += 1;
                    let fx =
                        self.w.bridge.update_collections(n, caller, Some(keccak256(&self.tag.to_be_bytes())));
                    for (to, _) in &fx.credits {
                        assert_eq!(*to, pegout::BURN_ADDRESS, "only burns leave the Bridge here");
                    }
                    self.credit(&fx.credits);
                    self.end();
                }
            }
            Op::Sign { signers } => {
                self.begin();
                let keys: Vec<[u8; 32]> =
                    self.w.bridge.pegouts_waiting_for_signatures().map(|p| p.rsk_tx_hash).collect();
                for key in keys {
                    for s in signers {
                        let i = usize::from(*s);
                        if !self.alive[i] {
                            continue;
                        }
                        let Some(p) = self.w.bridge.pegout(&key).cloned() else { break };
                        let sigs: Vec<_> = (0..p.tx.input.len())
                            .map(|k| {
                                p.federation
                                    .sign_input(&self.w.secp, &p.tx, k, p.inputs[k].value, &self.w.fed_sks[i])
                                    .unwrap()
                                    .signature
                            })
                            .collect();
                        let pk = self.w.fed.members()[i];
                        match self.w.bridge.add_signature(SideAddress::from_public_key(&pk), &pk, &sigs, &key)
                        {
                            Ok(fx) => {
                                for e in &fx.events {
                                    if let BridgeEvent::ReleaseBtc { raw_tx, .. } = e {
                                        self.released(deserialize(raw_tx).unwrap());
                                    }
                                }
                            }
                            // A restarted member forgot what it signed.
                            Err(AddSignatureError::AlreadySigned(_))
                            | Err(AddSignatureError::NotWaitingForSignatures(_)) => {}
                            Err(e) => panic!("{e}"),
                        }
                    }
                }
                self.end();
            }
            Op::MineReleased => {
                let fresh: Vec<Transaction> = self
                    .broadcast
                    .iter()
                    .filter(|t| !self.mined.contains(&t.compute_txid()))
                    .cloned()
                    .collect();
                if fresh.is_empty() {
                    return;
                }
                for t in &fresh {
                    self.mined.insert(t.compute_txid());
                }
                // Bitcoin's full validation accepts them (a double spend
                // would fail the block).
                self.w.pending.extend(fresh);
                self.w.mine();
                let h = self.w.tip_height();
                self.begin();
                self.w.confirm(h, self.w.bridge.params().pegin_confirmations);
                self.register_all();
                self.end();
            }
            Op::Reorg { depth } => {
                // Revert only blocks with fewer than `finality` confirmations
                // at the highest tip ever reached: keep every block
                // numbered below `peak + 2 − finality` (see `Run::peak`).
                let finality = self.w.bridge.params().pegout_confirmations;
                let floor = usize::try_from((self.peak + 2).saturating_sub(finality)).unwrap();
                let keep = self.branch.len().saturating_sub(*depth as usize).max(floor).max(1);
                self.branch.truncate(keep);
                let tip = self.branch.last().unwrap().clone();
                self.w.bridge = tip.bridge;
                self.ledger = tip.ledger;
            }
            Op::Crash { member } => self.alive[usize::from(*member)] = false,
            Op::Restart { member } => self.alive[usize::from(*member)] = true,
        }
        self.check();
    }

    /// A fully signed transaction the Bridge released: every member
    /// broadcasts it. Never two different ones for one coin.
    fn released(&mut self, tx: Transaction) {
        let txid = tx.compute_txid();
        for i in &tx.input {
            match self.spender.get(&i.previous_output) {
                Some(other) if *other != txid => self.double_releases += 1,
                Some(_) => {}
                None => {
                    self.spender.insert(i.previous_output, txid);
                }
            }
        }
        if !self.broadcast.iter().any(|t| t.compute_txid() == txid) {
            self.broadcast.push(tx);
        }
    }

    fn check(&self) {
        assert_eq!(self.double_releases, 0, "two released transactions spend one federation coin");
        let b = &self.w.bridge;
        if let Err(e) = b.conservation() {
            panic!("conservation broken: {e}");
        }
        // The sidechain's pegged supply is what left the Bridge.
        let supply: u128 = self.ledger.values().sum();
        assert_eq!(supply, sat_to_wei(b.params().max_rbtc_sat) - b.bridge_balance_wei(), "RBTC supply");
        // The federation's coins on Bitcoin, as the Bridge accounts for them.
        let on_bitcoin = self.w.btc.utxo().balance(self.w.fed.script_pubkey()).to_sat();
        let mut expected = b.federation_balance().to_sat();
        for p in b.pegouts() {
            let txid = match p.status {
                PegoutStatus::Released { signed_txid, .. } => signed_txid,
                _ => p.btc_txid,
            };
            if self.mined.contains(&txid) {
                if !p.change_added {
                    expected += p.change_value().to_sat();
                }
            } else {
                // Its inputs are still on Bitcoin; a change already made
                // available at release is not there yet.
                expected += p.total_in().to_sat();
                if p.change_added {
                    expected -= p.change_value().to_sat();
                }
            }
        }
        for tx in &self.pegins {
            if b.processed_at(&tx.compute_txid()).is_none() {
                expected += tx
                    .output
                    .iter()
                    .filter(|o| o.script_pubkey == *self.w.fed.script_pubkey())
                    .map(|o| o.value.to_sat())
                    .sum::<u64>();
            }
        }
        assert_eq!(on_bitcoin, expected, "the federation's coins on Bitcoin vs the Bridge's account");
        // Every coin the Bridge may select is unspent on Bitcoin (or the
        // change of a released transaction not mined yet).
        for u in b.utxos() {
            let pending_change = !self.mined.contains(&u.outpoint.txid)
                && self.broadcast.iter().any(|t| t.compute_txid() == u.outpoint.txid);
            assert!(
                self.w.btc.utxo().contains(&u.outpoint) || pending_change,
                "available coin {} is spent on Bitcoin",
                u.outpoint
            );
        }
    }

    /// Drives every request to Bitcoin with everyone alive and no more
    /// reorganisations.
    fn finish(&mut self) {
        self.alive = [true; 9];
        for _ in 0..100 {
            let queued: Amount = self.w.bridge.pegout_requests().map(|r| r.amount).sum();
            let idle = self.w.bridge.pegouts().next().is_none()
                && (queued == Amount::ZERO || self.w.bridge.federation_balance() < queued);
            if idle && self.pegins.iter().all(|t| self.w.bridge.processed_at(&t.compute_txid()).is_some()) {
                break;
            }
            self.apply(&Op::Advance { blocks: 25 });
            self.apply(&Op::Sign { signers: (0..9).collect() });
            self.apply(&Op::MineReleased);
            self.apply(&Op::Advance { blocks: 1 });
            self.begin();
            self.register_all();
            self.end();
            self.check();
        }
    }
}

fn setup(change_on_release: bool) -> Run {
    let params = PegParams {
        pegout_change_on_release: change_on_release,
        fee_per_kb_sat: 100_000,
        initial_locking_cap_sat: 1_000 * BTC,
        ..PegParams::rootstock_regtest()
    };
    let w = World::new(params);
    let genesis = Block { bridge: w.bridge.clone(), ledger: BTreeMap::new() };
    Run {
        w,
        branch: vec![genesis],
        ledger: BTreeMap::new(),
        pegins: Vec::new(),
        broadcast: Vec::new(),
        mined: BTreeSet::new(),
        spender: BTreeMap::new(),
        alive: [true; 9],
        tag: 0,
        double_releases: 0,
        peak: 0,
    }
}

fn run(ops: Vec<Op>, change_on_release: bool) {
    let mut r = setup(change_on_release);
    let finality = r.w.bridge.params().pegout_confirmations;
    // Two users start with RBTC.
    r.apply(&Op::Pegin { user: 0, sat: 2 * BTC });
    r.apply(&Op::Pegin { user: 1, sat: 3 * BTC });
    for op in &ops {
        if let Op::Reorg { depth } = op {
            assert!(*depth < finality, "reorganisations stay within peg-out finality");
        }
        r.apply(op);
    }
    r.finish();
    let b = &r.w.bridge;
    if b.get_queued_pegouts_count() == 0 && b.pegouts().next().is_none() {
        // Everything minted is at the federation, on Bitcoin too.
        let minted = b.pegged_in().to_sat() + b.burned().to_sat() - b.pegged_out().to_sat();
        assert_eq!(b.federation_balance().to_sat(), minted);
        assert_eq!(r.w.btc.utxo().balance(r.w.fed.script_pubkey()).to_sat(), minted);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn conservation_holds_through_reorgs_and_crashes(
        ops in proptest::collection::vec(op(), 1..60),
        change_on_release in any::<bool>(),
    ) {
        run(ops, change_on_release);
    }
}

#[test]
fn a_reorg_reverting_a_release_re_releases_the_same_transaction() {
    // Fund, request, batch, confirm, release; reorganise the release away
    // (one block, within finality); a restarted member signs again with the
    // others on the new branch: the same transaction is released again and
    // Bitcoin mines it once.
    let mut r = setup(false);
    r.apply(&Op::Pegin { user: 0, sat: 2 * BTC });
    r.apply(&Op::Request { user: 0, percent: 50 });
    r.apply(&Op::Advance { blocks: 12 });
    assert_eq!(r.w.bridge.pegouts_waiting_for_signatures().count(), 1);
    r.apply(&Op::Sign { signers: (0..9).collect() });
    assert_eq!(r.broadcast.len(), 1, "released");
    let released = r.broadcast[0].compute_txid();
    r.apply(&Op::Reorg { depth: 1 });
    assert_eq!(r.w.bridge.pegouts_waiting_for_signatures().count(), 1, "the release is reverted");
    r.apply(&Op::Crash { member: 0 });
    r.apply(&Op::Restart { member: 0 });
    r.apply(&Op::Advance { blocks: 2 });
    r.apply(&Op::Sign { signers: (0..9).collect() });
    assert_eq!(r.broadcast.len(), 1, "released again: the same transaction");
    assert!(matches!(
        r.w.bridge.pegouts().next().unwrap().status,
        PegoutStatus::Released { signed_txid, .. } if signed_txid == released
    ));
    r.apply(&Op::MineReleased);
    r.apply(&Op::Advance { blocks: 2 });
    r.finish();
    assert!(r.w.bridge.pegouts().next().is_none(), "registered back");
}

#[test]
fn a_reorg_deeper_than_finality_can_release_a_coin_twice() {
    // Why pegnatories halt: revert the block that created a released
    // peg-out, and the new branch batches the same coin into another
    // transaction, which the members would sign too.
    let mut r = setup(false);
    r.apply(&Op::Pegin { user: 0, sat: 2 * BTC });
    r.apply(&Op::Request { user: 0, percent: 50 });
    r.apply(&Op::Advance { blocks: 12 });
    r.apply(&Op::Sign { signers: (0..9).collect() });
    assert_eq!(r.broadcast.len(), 1);
    let finality = r.w.bridge.params().pegout_confirmations;
    // Back to just after the request: deeper than finality.
    let depth = 13;
    assert!(depth >= finality);
    r.branch.truncate(r.branch.len() - depth as usize);
    let tip = r.branch.last().unwrap().clone();
    r.w.bridge = tip.bridge;
    r.ledger = tip.ledger;
    assert!(r.w.bridge.pegouts().next().is_none(), "the peg-out's creation is reverted");
    r.tag += 100;
    let u = users(&r.w)[0];
    let wei = r.ledger[&u.side_address()] / 10;
    *r.ledger.get_mut(&u.side_address()).unwrap() -= wei;
    r.begin();
    r.w.bridge
        .release_btc(u.side_address(), wei, &TxOrigin::signer(u.pk, keccak256(b"another request")))
        .unwrap();
    r.end();
    for _ in 0..12 {
        r.begin();
        let n = r.number();
        r.tag += 1;
        r.w.bridge.update_collections(n, SideAddress([1; 20]), Some(keccak256(&r.tag.to_be_bytes())));
        r.end();
    }
    let keys: Vec<[u8; 32]> = r.w.bridge.pegouts_waiting_for_signatures().map(|p| p.rsk_tx_hash).collect();
    assert_eq!(keys.len(), 1);
    for i in 0..9 {
        let p = r.w.bridge.pegout(&keys[0]).cloned().unwrap();
        let sigs: Vec<_> = (0..p.tx.input.len())
            .map(|k| {
                p.federation
                    .sign_input(&r.w.secp, &p.tx, k, p.inputs[k].value, &r.w.fed_sks[i])
                    .unwrap()
                    .signature
            })
            .collect();
        let pk = r.w.fed.members()[i];
        if let Ok(fx) = r.w.bridge.add_signature(SideAddress::from_public_key(&pk), &pk, &sigs, &keys[0]) {
            for e in &fx.events {
                if let BridgeEvent::ReleaseBtc { raw_tx, .. } = e {
                    r.released(deserialize(raw_tx).unwrap());
                }
            }
        }
    }
    assert_eq!(r.broadcast.len(), 2, "a second, different transaction was released");
    assert!(r.double_releases >= 1, "for the same coin");
}
