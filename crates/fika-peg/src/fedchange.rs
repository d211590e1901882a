//! Federation change: authorised votes create, fill and commit a pending
//! federation; after the activation delay it becomes the active federation
//! and the old one retires; during the migration window the Bridge moves the
//! retiring federation's coins to the new address.
//!
//! Rootstock's rules (`BridgeSupport.voteFederationChange`,
//! `FederationSupport`, `processFundsMigration`), sans-IO:
//!
//! * **Votes** ([`BridgeState::vote_federation_change`]): only the
//!   federation-change authorisers may vote (anyone else gets
//!   [`GENERIC_ERROR`]). A vote is first dry-run; if the dry run fails its
//!   code is returned and nothing is recorded. Otherwise the vote is
//!   recorded (once per voter and vote) and, when `n/2 + 1` authorisers
//!   voted for the same call with the same arguments, the call executes and
//!   its votes are cleared. Calls: `create` ([`FederationChangeVote::Create`]),
//!   `add` ([`FederationChangeVote::Add`], Rootstock's
//!   `addFederatorPublicKey` / `addFederatorPublicKeyMultikey`), `commit`
//!   ([`FederationChangeVote::Commit`] with the pending federation's hash)
//!   and `rollback`. `create`, `commit` and `rollback` clear every vote.
//! * **Codes**: `1` success (or vote recorded); `create`: `-1` a pending
//!   federation exists, `-2` a committed federation awaits activation, `-3`
//!   a retiring federation is still migrating (not in Rootstock, which
//!   cannot retire two federations at once either); `add`: `-1` no pending
//!   federation, `-2` a key is already in it; `commit`: `-1` no pending
//!   federation, `-2` fewer than [`MIN_PENDING_MEMBERS`] members, `-3` the
//!   hash is not the pending federation's; `rollback`: `-1` no pending
//!   federation; [`GENERIC_ERROR`] (`-10`) for an unauthorised caller, a
//!   repeated vote, a malformed argument or a federation that cannot be
//!   built.
//! * **Commit**: the new federation has the pending members' keys, the
//!   active federation's emergency keys, CSV delay and script form; its
//!   creation block is the commit's block. Logs `commit_federation` with
//!   both federations' keys and addresses and the activation height.
//! * **Activation**: at the first Bridge call in a block `≥ creation +
//!   federation_activation_delay_blocks`, the new federation becomes active
//!   (peg-ins, batches and change go to it) and the old one retiring, with
//!   its available coins.
//! * **Migration** (at each `updateCollections`): while the active
//!   federation's age `a = block − creation` is in `(delay, delay + window)`
//!   and the retiring federation holds more than
//!   [`PegParams::minimum_funds_to_migrate_sat`](crate::PegParams::minimum_funds_to_migrate_sat),
//!   one migration transaction spends its coins (in selection order, halved
//!   until under the size limit) to the active federation's address, the fee
//!   taken from the amount; once `a ≥ delay + window`, whatever is left is
//!   swept the same way, and coins too small to pay their own migration fee
//!   are stranded (counted, never spent). Migrations are peg-outs of kind
//!   [`PegoutKind::Migration`](crate::pegout::PegoutKind::Migration): they
//!   log `release_requested` and `pegout_transaction_created`, wait the
//!   peg-out confirmations, and are signed by the *retiring* federation's
//!   members (each peg-out remembers the federation it spends).
//! * **Peg-ins** to the retiring federation's address count while it
//!   exists; their coins join the retiring federation's set and are
//!   migrated.
//! * **Retirement**: once past the window, the retiring federation is
//!   removed when it holds nothing, none of its peg-outs (migrations, or
//!   peg-outs it had started) still waits for signatures, and no change owed
//!   to it is outstanding. Rootstock removes it at the end of the window
//!   outright (and keeps its script to recognise late transactions); here
//!   it lingers until nothing it must sign or receive is in flight, so that
//!   no coin is left behind.
//!
//! The fee of a migration is paid by the federation, not by a user: the
//! Bridge counts it ([`BridgeState::migration_fees`]) and the conservation
//! law includes it, as it includes stranded coins
//! ([`BridgeState::stranded`]).

use std::sync::Arc;

use bitcoin::hashes::Hash;
use bitcoin::secp256k1::PublicKey;
use bitcoin::{Amount, OutPoint, ScriptBuf};
use imbl::{OrdMap, Vector};

use crate::bridge::{BridgeEvent, BridgeState, FederationUtxo};
use crate::federation::Federation;
use crate::pegout::{BuildError, Effects, PegoutKind, PegoutStatus, build_refund, sorted_for_selection};
use crate::side::{SideAddress, keccak256};

/// The result code of a refused federation-change call (Rootstock's
/// `FEDERATION_CHANGE_GENERIC_ERROR_CODE`).
pub const GENERIC_ERROR: i64 = -10;

/// Members a pending federation needs before it can be committed
/// (Rootstock's `PendingFederation.MIN_MEMBERS_REQUIRED`).
pub const MIN_PENDING_MEMBERS: usize = 2;

/// A member of a pending federation: Rootstock's multikey.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PendingMember {
    /// The key of the Bitcoin multisig.
    pub btc: PublicKey,
    /// The key whose sidechain address authorises the member's Bridge calls.
    pub rsk: PublicKey,
    /// The key of the merged-mining (MST) role; kept, unused here.
    pub mst: PublicKey,
}

impl PendingMember {
    /// A member with one key for all three roles (`addFederatorPublicKey`).
    pub fn single(key: PublicKey) -> Self {
        PendingMember { btc: key, rsk: key, mst: key }
    }
}

/// The federation being assembled by votes (Rootstock's `PendingFederation`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PendingFederation {
    members: Vec<PendingMember>,
}

impl PendingFederation {
    /// Members in the order they were added.
    pub fn members(&self) -> &[PendingMember] {
        &self.members
    }

    /// The Bitcoin keys in canonical order (sorted by their compressed
    /// serialization).
    pub fn btc_keys(&self) -> Vec<PublicKey> {
        let mut keys: Vec<PublicKey> = self.members.iter().map(|m| m.btc).collect();
        keys.sort_by_key(|k| k.serialize());
        keys
    }

    /// The hash a `commit` vote names: keccak-256 of the RLP list of the
    /// compressed Bitcoin keys in canonical order (Rootstock's
    /// `PendingFederation.getHash`, which serializes only the BTC keys).
    pub fn hash(&self) -> [u8; 32] {
        let mut payload = Vec::with_capacity(self.members.len() * 34);
        for k in self.btc_keys() {
            fika_side::rlp::encode_bytes(&mut payload, &k.serialize());
        }
        keccak256(&fika_side::rlp::list(&payload))
    }

    /// Whether it has enough members to be committed.
    pub fn is_complete(&self) -> bool {
        self.members.len() >= MIN_PENDING_MEMBERS
    }

    fn has_any_key_of(&self, m: &PendingMember) -> bool {
        self.members
            .iter()
            .any(|x| [x.btc, x.rsk, x.mst].iter().any(|k| *k == m.btc || *k == m.rsk || *k == m.mst))
    }
}

/// A federation-change call an authoriser votes for (Rootstock's
/// `ABICallSpec` of the federation election).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[non_exhaustive]
pub enum FederationChangeVote {
    /// `createFederation()`: start an empty pending federation.
    Create,
    /// `addFederatorPublicKey(Multikey)`: add a member to it.
    Add(PendingMember),
    /// `commitFederation(hash)`: commit it (the hash must be its hash).
    Commit([u8; 32]),
    /// `rollbackFederation()`: drop it.
    Rollback,
}

impl FederationChangeVote {
    /// Rootstock's function name in the election.
    pub fn function(&self) -> &'static str {
        match self {
            FederationChangeVote::Create => "create",
            FederationChangeVote::Add(_) => "add",
            FederationChangeVote::Commit(_) => "commit",
            FederationChangeVote::Rollback => "rollback",
        }
    }
}

/// The retiring federation and the coins it still holds.
#[derive(Clone, Debug)]
pub struct Retiring {
    /// The federation.
    pub federation: Arc<Federation>,
    /// Its available (not yet migrated) coins.
    pub utxos: OrdMap<OutPoint, FederationUtxo>,
}

/// The federation-change part of the Bridge's state.
#[derive(Clone, Debug, Default)]
pub(crate) struct FedChangeState {
    /// Sidechain addresses allowed to vote.
    pub(crate) authorizers: Arc<Vec<SideAddress>>,
    /// Votes: call → voters in voting order.
    pub(crate) election: OrdMap<FederationChangeVote, Vector<SideAddress>>,
    /// The federation being assembled.
    pub(crate) pending: Option<PendingFederation>,
    /// A committed federation waiting for activation, with its creation
    /// block.
    pub(crate) proposed: Option<(Arc<Federation>, u64)>,
    /// The retiring federation, while it exists.
    pub(crate) retiring: Option<Retiring>,
    /// Creation block of the active federation (0 for the genesis one).
    pub(crate) active_created_at: u64,
    /// Satoshis migrations paid in Bitcoin fees.
    pub(crate) migration_fees_sat: u64,
    /// Satoshis left at a retired federation because they could not pay
    /// their own migration.
    pub(crate) stranded_sat: u64,
    /// Federation changes activated so far.
    pub(crate) activations: u64,
    /// Credited peg-ins that paid a retiring federation.
    pub(crate) retiring_pegins: u64,
    /// Migration transactions created.
    pub(crate) migrations: u64,
}

impl FedChangeState {
    /// Feeds the canonical encoding of the state to `put`.
    pub(crate) fn digest_into(&self, put: &mut dyn FnMut(&[u8])) {
        put(b"fedchange/v1");
        put(&(self.authorizers.len() as u64).to_be_bytes());
        for a in self.authorizers.iter() {
            put(&a.0);
        }
        put(&(self.election.len() as u64).to_be_bytes());
        for (vote, voters) in &self.election {
            put(vote.function().as_bytes());
            match vote {
                FederationChangeVote::Add(m) => {
                    put(&m.btc.serialize());
                    put(&m.rsk.serialize());
                    put(&m.mst.serialize());
                }
                FederationChangeVote::Commit(h) => put(h),
                FederationChangeVote::Create | FederationChangeVote::Rollback => {}
            }
            put(&(voters.len() as u64).to_be_bytes());
            for v in voters {
                put(&v.0);
            }
        }
        match &self.pending {
            Some(p) => {
                put(&[1]);
                put(&(p.members.len() as u64).to_be_bytes());
                for m in &p.members {
                    put(&m.btc.serialize());
                    put(&m.rsk.serialize());
                    put(&m.mst.serialize());
                }
            }
            None => put(&[0]),
        }
        match &self.proposed {
            Some((f, at)) => {
                put(&[1]);
                put(f.redeem_script().as_bytes());
                put(&at.to_be_bytes());
            }
            None => put(&[0]),
        }
        match &self.retiring {
            Some(r) => {
                put(&[1]);
                put(r.federation.redeem_script().as_bytes());
                put(&(r.utxos.len() as u64).to_be_bytes());
                for u in r.utxos.values() {
                    put(u.outpoint.txid.as_byte_array());
                    put(&u.outpoint.vout.to_be_bytes());
                    put(&u.value.to_sat().to_be_bytes());
                    put(&u.height.to_be_bytes());
                }
            }
            None => put(&[0]),
        }
        put(&self.active_created_at.to_be_bytes());
        put(&self.migration_fees_sat.to_be_bytes());
        put(&self.stranded_sat.to_be_bytes());
        put(&self.activations.to_be_bytes());
        put(&self.retiring_pegins.to_be_bytes());
        put(&self.migrations.to_be_bytes());
    }
}

impl BridgeState {
    /// This Bridge with `authorizers` as the federation-change voters
    /// (Rootstock's `federationChangeAuthorizer`; a majority, `n/2 + 1`, of
    /// them decides). Without any, the federation never changes.
    pub fn with_federation_change_authorizers(mut self, authorizers: Vec<SideAddress>) -> Self {
        self.fedchange.authorizers = Arc::new(authorizers);
        self
    }

    /// The federation-change voters.
    pub fn federation_change_authorizers(&self) -> &[SideAddress] {
        &self.fedchange.authorizers
    }

    /// Votes needed to decide: `n/2 + 1` of the authorisers.
    pub fn federation_change_majority(&self) -> usize {
        self.fedchange.authorizers.len() / 2 + 1
    }

    /// Who voted for `vote` and is still counted.
    pub fn federation_change_votes(&self, vote: &FederationChangeVote) -> Vec<SideAddress> {
        self.fedchange.election.get(vote).map(|v| v.iter().copied().collect()).unwrap_or_default()
    }

    /// The federation being assembled, if any.
    pub fn pending_federation(&self) -> Option<&PendingFederation> {
        self.fedchange.pending.as_ref()
    }

    /// A committed federation waiting for activation and its creation block.
    pub fn proposed_federation(&self) -> Option<(&Federation, u64)> {
        self.fedchange.proposed.as_ref().map(|(f, at)| (&**f, *at))
    }

    /// The retiring federation, if one exists.
    pub fn retiring_federation(&self) -> Option<&Federation> {
        self.fedchange.retiring.as_ref().map(|r| &*r.federation)
    }

    /// The retiring federation's available coins (empty without one).
    pub fn retiring_utxos(&self) -> impl Iterator<Item = &FederationUtxo> {
        self.fedchange.retiring.iter().flat_map(|r| r.utxos.values())
    }

    /// Total of the retiring federation's available coins.
    pub fn retiring_balance(&self) -> Amount {
        Amount::from_sat(self.retiring_utxos().fold(0u64, |a, u| a.saturating_add(u.value.to_sat())))
    }

    /// `getFederationCreationBlockNumber`: the creation block of the active
    /// federation (0 for the genesis federation).
    pub fn get_federation_creation_block_number(&self) -> u64 {
        self.fedchange.active_created_at
    }

    /// Federation changes activated so far.
    pub fn federation_activations(&self) -> u64 {
        self.fedchange.activations
    }

    /// Credited peg-ins that paid a retiring federation (during its
    /// migration window).
    pub fn retiring_pegins(&self) -> u64 {
        self.fedchange.retiring_pegins
    }

    /// Migration transactions created.
    pub fn migrations(&self) -> u64 {
        self.fedchange.migrations
    }

    /// Bitcoin fees the federation paid for migrations.
    pub fn migration_fees(&self) -> Amount {
        Amount::from_sat(self.fedchange.migration_fees_sat)
    }

    /// Coins left behind at a retired federation because they could not pay
    /// their own migration.
    pub fn stranded(&self) -> Amount {
        Amount::from_sat(self.fedchange.stranded_sat)
    }

    /// Whether `addr` may vote on federation changes.
    pub fn is_federation_change_authorizer(&self, addr: &SideAddress) -> bool {
        self.fedchange.authorizers.contains(addr)
    }

    /// The first block at which the proposed federation becomes active, if
    /// one is proposed.
    pub fn federation_activation_height(&self) -> Option<u64> {
        let delay = self.params.federation_activation_delay_blocks;
        self.fedchange.proposed.as_ref().map(|(_, at)| at.saturating_add(delay))
    }

    /// Makes a proposed federation active once its delay has passed
    /// (called by [`BridgeState::begin_block`]).
    pub(crate) fn activate_due_federation(&mut self) {
        let due = self.federation_activation_height().is_some_and(|h| self.block_number >= h);
        if !due {
            return;
        }
        let Some((new, created_at)) = self.fedchange.proposed.take() else { return };
        let old = std::mem::replace(&mut self.federation, new);
        let utxos = std::mem::take(&mut self.utxos);
        // Coins of an older retiring federation (not expected: `create` is
        // refused while one exists) stay with it.
        match &mut self.fedchange.retiring {
            Some(r) if r.federation == old => r.utxos = r.utxos.clone().union(utxos),
            _ => self.fedchange.retiring = Some(Retiring { federation: old, utxos }),
        }
        self.fedchange.active_created_at = created_at;
        self.fedchange.activations += 1;
    }

    /// `voteFederationChange`: `caller` votes for `vote`. Returns the result
    /// code (see the module docs) and the events of an executed call.
    pub fn vote_federation_change(
        &mut self,
        caller: SideAddress,
        vote: FederationChangeVote,
    ) -> (i64, Effects) {
        let mut fx = Effects::default();
        if !self.is_federation_change_authorizer(&caller) {
            return (GENERIC_ERROR, fx);
        }
        let dry = self.execute_federation_change(&vote, true, &mut fx);
        if dry != 1 {
            return (dry, fx);
        }
        let mut voters = self.fedchange.election.get(&vote).cloned().unwrap_or_default();
        if voters.contains(&caller) {
            return (GENERIC_ERROR, fx);
        }
        voters.push_back(caller);
        let won = voters.len() >= self.federation_change_majority();
        self.fedchange.election.insert(vote.clone(), voters);
        if !won {
            return (1, fx);
        }
        self.fedchange.election.remove(&vote);
        let code = self.execute_federation_change(&vote, false, &mut fx);
        (code, fx)
    }

    fn execute_federation_change(
        &mut self,
        vote: &FederationChangeVote,
        dry_run: bool,
        fx: &mut Effects,
    ) -> i64 {
        match vote {
            FederationChangeVote::Create => {
                if self.fedchange.pending.is_some() {
                    return -1;
                }
                if self.fedchange.proposed.is_some() {
                    return -2;
                }
                if self.fedchange.retiring.is_some() {
                    return -3;
                }
                if !dry_run {
                    self.fedchange.pending = Some(PendingFederation::default());
                    self.fedchange.election = OrdMap::new();
                }
                1
            }
            FederationChangeVote::Add(member) => {
                let Some(p) = &self.fedchange.pending else { return -1 };
                if p.has_any_key_of(member) {
                    return -2;
                }
                if !dry_run {
                    if let Some(p) = &mut self.fedchange.pending {
                        p.members.push(*member);
                    }
                }
                1
            }
            FederationChangeVote::Commit(hash) => {
                let Some(p) = &self.fedchange.pending else { return -1 };
                if !p.is_complete() {
                    return -2;
                }
                if p.hash() != *hash {
                    return -3;
                }
                let active = &self.federation;
                let rsk: Vec<(PublicKey, PublicKey)> = p.members.iter().map(|m| (m.btc, m.rsk)).collect();
                let built = Federation::new(&p.btc_keys(), active.emergency(), active.csv(), active.form())
                    .and_then(|f| f.with_rsk_keys(&rsk));
                let Ok(new) = built else { return GENERIC_ERROR };
                if dry_run {
                    return 1;
                }
                let network = self.params.btc_network;
                let delay = self.params.federation_activation_delay_blocks;
                fx.events.push(BridgeEvent::CommitFederation {
                    old_keys: self.federation.members().to_vec(),
                    old_address: self.federation.address(network).to_string(),
                    new_keys: new.members().to_vec(),
                    new_address: new.address(network).to_string(),
                    activation_height: self.block_number.saturating_add(delay),
                });
                self.fedchange.proposed = Some((Arc::new(new), self.block_number));
                self.fedchange.pending = None;
                self.fedchange.election = OrdMap::new();
                1
            }
            FederationChangeVote::Rollback => {
                if self.fedchange.pending.is_none() {
                    return -1;
                }
                if !dry_run {
                    self.fedchange.pending = None;
                    self.fedchange.election = OrdMap::new();
                }
                1
            }
        }
    }

    /// The migration step of `updateCollections` (see the module docs).
    pub(crate) fn process_funds_migration(&mut self, rsk_tx_hash: Option<[u8; 32]>, fx: &mut Effects) {
        let Some(retiring) = self.fedchange.retiring.clone() else { return };
        let block = self.block_number;
        let delay = self.params.federation_activation_delay_blocks;
        let window = self.params.migration_window_blocks;
        let age = block.saturating_sub(self.fedchange.active_created_at);
        let in_window = age > delay && age < delay.saturating_add(window);
        let past = age >= delay.saturating_add(window);
        let balance = self.retiring_balance().to_sat();
        let due = (in_window && balance > self.params.minimum_funds_to_migrate_sat) || (past && balance > 0);
        if due {
            let utxos = sorted_for_selection(retiring.utxos.values().copied());
            let to = self.federation.script_pubkey().clone();
            let build = |n: usize| {
                build_refund(
                    &retiring.federation,
                    &utxos[..n],
                    &to,
                    self.fee_per_kb_sat,
                    self.params.max_pegout_tx_size,
                )
            };
            let mut n = utxos.len();
            let mut result = build(n);
            while n > 1 && matches!(result, Err(BuildError::TooLarge { .. })) {
                n /= 2;
                result = build(n);
            }
            match result {
                Ok(mut built) => {
                    // The single output is the new federation's coin.
                    built.change = Some(0);
                    let key = match rsk_tx_hash {
                        Some(h) if !self.pegout.pegouts.contains_key(&h) => h,
                        _ => self.derived_key(b"migration"),
                    };
                    let amount = built.tx.output.first().map_or(Amount::ZERO, |o| o.value);
                    self.fedchange.migration_fees_sat =
                        self.fedchange.migration_fees_sat.saturating_add(built.fee.to_sat());
                    self.fedchange.migrations += 1;
                    self.settle(
                        key,
                        PegoutKind::Migration,
                        Arc::clone(&retiring.federation),
                        built,
                        amount,
                        fx,
                    );
                }
                Err(BuildError::DustOutput { .. }) if past => {
                    // Too little to pay its own fee: left behind for good.
                    self.fedchange.stranded_sat = self.fedchange.stranded_sat.saturating_add(balance);
                    if let Some(r) = &mut self.fedchange.retiring {
                        r.utxos = OrdMap::new();
                    }
                }
                Err(_) => {}
            }
        }
        if past && self.retiring_is_done() {
            self.fedchange.retiring = None;
        }
    }

    /// Whether the retiring federation holds nothing and nothing it must
    /// sign or receive is in flight.
    fn retiring_is_done(&self) -> bool {
        let Some(r) = &self.fedchange.retiring else { return true };
        let script = r.federation.script_pubkey();
        r.utxos.is_empty()
            && !self.refunds.iter().any(|q| q.federation.script_pubkey() == script)
            && !self.pegout.pegouts.values().any(|p| {
                let unsigned = p.federation.script_pubkey() == script
                    && !matches!(p.status, PegoutStatus::Released { .. });
                let owed = !p.change_added
                    && p.change
                        .and_then(|i| p.tx.output.get(i as usize))
                        .is_some_and(|o| o.script_pubkey == *script);
                unsigned || owed
            })
    }

    /// The live federation (active or retiring) whose output script is
    /// `script`, and whether it is the retiring one.
    pub(crate) fn live_federation_of(&self, script: &ScriptBuf) -> Option<(Arc<Federation>, bool)> {
        if self.federation.script_pubkey() == script {
            return Some((Arc::clone(&self.federation), false));
        }
        self.fedchange
            .retiring
            .as_ref()
            .filter(|r| r.federation.script_pubkey() == script)
            .map(|r| (Arc::clone(&r.federation), true))
    }

    /// Adds a coin paid to `script` to the set of the live federation it
    /// belongs to; `false` if it belongs to none.
    pub(crate) fn add_federation_coin(&mut self, utxo: FederationUtxo, script: &ScriptBuf) -> bool {
        if self.federation.script_pubkey() == script {
            self.utxos.insert(utxo.outpoint, utxo);
            return true;
        }
        match &mut self.fedchange.retiring {
            Some(r) if r.federation.script_pubkey() == script => {
                r.utxos.insert(utxo.outpoint, utxo);
                true
            }
            _ => false,
        }
    }

    /// Whether `outpoint` is an available coin of a live federation.
    pub(crate) fn is_available_coin(&self, outpoint: &OutPoint) -> bool {
        self.utxos.contains_key(outpoint)
            || self.fedchange.retiring.as_ref().is_some_and(|r| r.utxos.contains_key(outpoint))
    }

    /// Removes `outpoint` from whichever live federation's set holds it.
    pub(crate) fn take_coin(&mut self, outpoint: &OutPoint) {
        self.utxos.remove(outpoint);
        if let Some(r) = &mut self.fedchange.retiring {
            r.utxos.remove(outpoint);
        }
    }
}
