//! The durable store of one emulated node: a redb database in its data
//! directory (`<data_dir>/node.redb`).
//!
//! # What is kept
//!
//! Tables of format version [`FORMAT_VERSION`] (integers little-endian,
//! Bitcoin objects in their consensus encoding):
//!
//! | table | key | value |
//! |---|---|---|
//! | `meta` | name | `format`, `kind`, `scenario`, `node`, `seed`, `genesis`, `mined`, `sent`, `failed`, `seq` |
//! | `blocks` | block hash | height ‖ filler bytes ‖ block |
//! | `best_chain` | height | block hash (the last entry is the tip) |
//! | `utxo` | txid ‖ vout | height ‖ coinbase flag ‖ txout |
//! | `mempool` | txid | acceptance seq ‖ transaction |
//! | `filters` | wallet peer id | its scripts |
//! | `wallet_keys` | index | secret key |
//! | `filtered` | seq | check time ‖ header ‖ height ‖ partial merkle tree ‖ transactions |
//! | `payments` | txid | seq ‖ transaction |
//!
//! A full node keeps every block it accepted (valid, on its best chain or
//! not), its best chain, the UTXO set at its tip, its mempool and its light
//! wallets' filters. A wallet node keeps its keys, every filtered block
//! whose header it accepted (with the proven transactions), its best header
//! chain and the payments it made; its coins follow from those.
//!
//! # Atomic steps
//!
//! [`Store::commit`] writes everything one step of the node changed
//! ([`fika_btc::journal`]) in one redb write transaction, committed with
//! redb's default immediate durability (fsync): a block, the best-chain
//! entries and the UTXO changes of a tip move are present together or not
//! at all, whatever kills the process. The UTXO changes of a tip move are
//! exact and cheap: an outpoint whose coin differs between the old and the
//! new tip is an input or output of a block disconnected or connected, so
//! the store rewrites just those, from the new tip's in-memory UTXO set.
//!
//! # Resuming
//!
//! [`Store::open`] on an existing database checks its format version and
//! that it belongs to this node (scenario, node, seed, genesis), then
//! [`Store::restore`] replays what it kept into a node freshly built from
//! the scenario: blocks are inserted parents first and validated again by
//! the node's block store (the rules, not the file, are the authority; a
//! few hundred blocks take milliseconds), the tip is set, and the UTXO set
//! the replay computes is compared with the kept one — a difference means
//! the file is corrupt or was written by other rules, and is an error. The
//! mempool and the wallet's payments are offered again; what no longer
//! enters is deleted.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use bitcoin::consensus::{Decodable, Encodable, deserialize_partial, serialize};
use bitcoin::hashes::Hash;
use bitcoin::{BlockHash, OutPoint, ScriptBuf, Transaction, TxOut, Txid};
use fika_btc::blockdb::{BlockDb, BlockId, SimBlock};
use fika_btc::journal::{Change, RestoreError};
use fika_btc::msg::FilteredBlock;
use fika_btc::node::{BtcNode, FullNode};
use fika_btc::utxo::{Coin, CoinView};
use fika_btc::wallet_node::WalletNode;
use fika_core::NodeId;
use redb::{Database, ReadableTable, ReadableTableMetadata, TableDefinition};
use serde::{Deserialize, Serialize};

/// The format this code writes and the newest it reads.
pub const FORMAT_VERSION: u32 = 1;
/// The database file in a node's data directory.
pub const FILE_NAME: &str = "node.redb";

/// redb's page cache per store. A node keeps its whole state in memory and
/// reads its store back only when it resumes, so the cache only speeds up
/// the few tree pages each commit touches; redb's default (1 GiB, filled
/// with every page written) would keep the whole file resident in every
/// node process.
const CACHE_BYTES: usize = 256 * 1024;

/// Opens (`create`: or creates) a redb file with the store's cache size.
fn open_db(path: &Path, create: bool) -> Result<Database, redb::DatabaseError> {
    let mut builder = redb::Builder::new();
    builder.set_cache_size(CACHE_BYTES);
    if create { builder.create(path) } else { builder.open(path) }
}

const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const BLOCKS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("blocks");
const BEST: TableDefinition<'_, u32, &[u8; 32]> = TableDefinition::new("best_chain");
const UTXO: TableDefinition<'_, &[u8; 36], &[u8]> = TableDefinition::new("utxo");
const MEMPOOL: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("mempool");
const FILTERS: TableDefinition<'_, u32, &[u8]> = TableDefinition::new("filters");
const KEYS: TableDefinition<'_, u32, &[u8; 32]> = TableDefinition::new("wallet_keys");
const FILTERED: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("filtered");
const PAYMENTS: TableDefinition<'_, &[u8; 32], &[u8]> = TableDefinition::new("payments");

/// Why a store could not be opened, read, written or restored from.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// The data directory could not be created or read.
    #[error("{path}: {source}")]
    Io {
        /// The directory or file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file is not a database redb can open (corrupt, truncated, another
    /// program's file, locked by another process).
    #[error("{path}: cannot open the node database: {reason}")]
    Open {
        /// The file.
        path: PathBuf,
        /// redb's message.
        reason: String,
    },
    /// Reading or writing the database failed.
    #[error("{path}: database {doing}: {reason}")]
    Db {
        /// The file.
        path: PathBuf,
        /// What was being done.
        doing: &'static str,
        /// redb's message.
        reason: String,
    },
    /// The database was written by a newer format of this program.
    #[error("{path}: store format {found} is newer than this program's ({supported}); use a newer fika")]
    NewerFormat {
        /// The file.
        path: PathBuf,
        /// The format found.
        found: u32,
        /// The newest format this program reads.
        supported: u32,
    },
    /// The database belongs to another node, scenario, seed or chain.
    #[error(
        "{path}: this data directory belongs to another node: {what} is {stored:?}, expected {expected:?}"
    )]
    Mismatch {
        /// The file.
        path: PathBuf,
        /// The field that differs.
        what: &'static str,
        /// What the store holds.
        stored: String,
        /// What this node is.
        expected: String,
    },
    /// An entry does not decode, or the tables disagree.
    #[error("{path}: corrupt store: {what}: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The entry or table.
        what: String,
        /// Why.
        reason: String,
    },
    /// The kept state does not replay into the node.
    #[error("{path}: cannot restore the node: {source}")]
    Restore {
        /// The file.
        path: PathBuf,
        /// Why.
        source: RestoreError,
    },
    /// A change names a block or transaction the node's memory lacks (a bug).
    #[error("{path}: change refers to unknown {what}")]
    Unknown {
        /// The file.
        path: PathBuf,
        /// What is unknown.
        what: String,
    },
}

/// Whom a store belongs to; checked when an existing store is opened.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    /// `"full"` or `"wallet"`.
    pub kind: String,
    /// The scenario's name.
    pub scenario: String,
    /// The node's name.
    pub node: String,
    /// The run seed (keys and premine derive from it).
    pub seed: u64,
    /// The chain's genesis block.
    pub genesis: BlockHash,
}

impl Identity {
    /// The identity of `node`, node `name` of `scenario` run with `seed`.
    pub fn of(node: &BtcNode, scenario: &str, name: &str, seed: u64, genesis: BlockHash) -> Self {
        Identity {
            kind: node.kind().to_owned(),
            scenario: scenario.to_owned(),
            node: name.to_owned(),
            seed,
            genesis,
        }
    }
}

/// What a store held when a node resumed from it.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Resumed {
    /// Height of the restored tip (a wallet's best header).
    pub height: u32,
    /// Its hash, hex in display order.
    pub hash: String,
    /// Blocks restored (full nodes) or filtered blocks replayed (wallets).
    pub blocks: usize,
    /// Mempool transactions (full nodes) or pending payments (wallets) back.
    pub pending: usize,
    /// Kept mempool transactions or payments that no longer enter.
    pub dropped: usize,
    /// Wall time to read and replay the store, microseconds.
    pub micros: u64,
}

/// What one commit wrote.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Committed {
    /// Blocks (or filtered blocks) written.
    pub blocks: u32,
    /// Whether the tip moved.
    pub tip_moved: bool,
    /// Other entries written or deleted.
    pub other: u32,
    /// Wall time of the write transaction, microseconds.
    pub micros: u64,
}

/// Totals of a store's commits in one process.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct StoreStats {
    /// Write transactions committed.
    pub commits: u64,
    /// Commits that wrote at least one block.
    pub block_commits: u64,
    /// Blocks written.
    pub blocks: u64,
    /// Wall time of all commits, microseconds.
    pub commit_micros: u64,
    /// Wall time of the commits that wrote blocks, microseconds.
    pub block_commit_micros: u64,
    /// Longest commit, microseconds.
    pub max_commit_micros: u64,
    /// Size of the database file at the end, bytes.
    pub file_bytes: u64,
}

impl StoreStats {
    /// Adds one commit.
    pub fn add(&mut self, c: &Committed) {
        self.commits += 1;
        self.commit_micros += c.micros;
        self.max_commit_micros = self.max_commit_micros.max(c.micros);
        if c.blocks > 0 {
            self.block_commits += 1;
            self.blocks += u64::from(c.blocks);
            self.block_commit_micros += c.micros;
        }
    }
}

/// What [`Store::load`] read.
#[derive(Clone, Debug, Default)]
pub struct Saved {
    /// Kept blocks, parents first (by height).
    pub blocks: Vec<Arc<SimBlock>>,
    /// The best chain, by height.
    pub best_chain: Vec<BlockHash>,
    /// The UTXO set at the tip.
    pub utxo: BTreeMap<OutPoint, Coin>,
    /// The mempool, in acceptance order.
    pub mempool: Vec<(Txid, Arc<Transaction>)>,
    /// Light wallets' filters.
    pub filters: Vec<(NodeId, Vec<ScriptBuf>)>,
    /// Coinbases numbered so far.
    pub mined: u32,
    /// A wallet's keys.
    pub keys: Vec<bitcoin::secp256k1::SecretKey>,
    /// A wallet's filtered blocks, in acceptance order, with their check time.
    pub filtered: Vec<(u64, FilteredBlock)>,
    /// A wallet's payments, in creation order.
    pub payments: Vec<(Txid, Arc<Transaction>)>,
    /// A wallet's payments made and failed.
    pub counters: (u32, u32),
}

/// A node's durable store. See the module documentation.
pub struct Store {
    db: Database,
    path: PathBuf,
    /// The tip the database holds (full nodes), as an id of the node's block store.
    tip: Option<BlockId>,
    /// The best header the database holds (wallets): height and hash.
    best: Option<(u32, BlockHash)>,
    mined: u32,
    keys: usize,
    seq: u64,
    counters: (u32, u32),
}

fn db_err<'a, E: Display>(path: &'a Path, doing: &'static str) -> impl FnOnce(E) -> StoreError + 'a {
    move |e| StoreError::Db { path: path.to_path_buf(), doing, reason: e.to_string() }
}

/// Runs `f`, turning a panic inside redb on a damaged file (some checks
/// there are assertions) into [`StoreError::Open`].
fn guarded<T>(path: &Path, f: impl FnOnce() -> Result<T, StoreError>) -> Result<T, StoreError> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).unwrap_or_else(|panic| {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_default();
        Err(StoreError::Open { path: path.to_path_buf(), reason: format!("the file is damaged ({what})") })
    })
}

fn le_u32(b: &[u8]) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(..4)?.try_into().ok()?))
}

fn le_u64(b: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(b.get(..8)?.try_into().ok()?))
}

fn outpoint_key(op: &OutPoint) -> [u8; 36] {
    let mut k = [0u8; 36];
    k[..32].copy_from_slice(op.txid.as_byte_array());
    k[32..].copy_from_slice(&op.vout.to_le_bytes());
    k
}

fn coin_value(c: &Coin) -> Vec<u8> {
    let mut v = Vec::with_capacity(5 + 9 + c.txout.script_pubkey.len());
    v.extend_from_slice(&c.height.to_le_bytes());
    v.push(u8::from(c.is_coinbase));
    v.extend_from_slice(&serialize(&c.txout));
    v
}

fn block_value(height: u32, b: &SimBlock) -> Vec<u8> {
    let mut v = Vec::with_capacity(8 + b.base_size as usize);
    v.extend_from_slice(&height.to_le_bytes());
    v.extend_from_slice(&b.filler.to_le_bytes());
    // Writing to a Vec cannot fail.
    let _ = b.block.consensus_encode(&mut v);
    v
}

fn seq_tx_value(seq: u64, tx: &Transaction) -> Vec<u8> {
    let mut v = seq.to_le_bytes().to_vec();
    let _ = tx.consensus_encode(&mut v);
    v
}

fn filtered_value(now: u64, f: &FilteredBlock) -> Vec<u8> {
    let mut v = now.to_le_bytes().to_vec();
    let _ = f.header.consensus_encode(&mut v);
    v.extend_from_slice(&f.height.to_le_bytes());
    let _ = f.proof.consensus_encode(&mut v);
    let txs: Vec<Transaction> = f.txs.iter().map(|t| (**t).clone()).collect();
    let _ = txs.consensus_encode(&mut v);
    v
}

fn encode_scripts(scripts: &[ScriptBuf]) -> Vec<u8> {
    let mut v = Vec::new();
    let _ = bitcoin::VarInt(scripts.len() as u64).consensus_encode(&mut v);
    for s in scripts {
        let _ = s.consensus_encode(&mut v);
    }
    v
}

fn decode_scripts(mut bytes: &[u8]) -> Result<Vec<ScriptBuf>, String> {
    let (n, used): (bitcoin::VarInt, usize) = deserialize_partial(bytes).map_err(|e| e.to_string())?;
    bytes = &bytes[used..];
    let mut out = Vec::new();
    for _ in 0..n.0 {
        let (s, used): (ScriptBuf, usize) = deserialize_partial(bytes).map_err(|e| e.to_string())?;
        bytes = &bytes[used..];
        out.push(s);
    }
    if !bytes.is_empty() {
        return Err(format!("{} trailing bytes", bytes.len()));
    }
    Ok(out)
}

/// Decodes one consensus object exactly filling `bytes`.
fn decode_all<T: Decodable>(bytes: &[u8]) -> Result<T, String> {
    let (v, used) = deserialize_partial::<T>(bytes).map_err(|e| e.to_string())?;
    if used != bytes.len() {
        return Err(format!("{} trailing bytes", bytes.len() - used));
    }
    Ok(v)
}

impl Store {
    /// The database file of data directory `dir`.
    pub fn file_in(dir: &Path) -> PathBuf {
        dir.join(FILE_NAME)
    }

    /// Whether `dir` holds a store.
    pub fn exists_in(dir: &Path) -> bool {
        Self::file_in(dir).is_file()
    }

    /// Opens the store of data directory `dir` (creating both if needed)
    /// for `node`. A new store is initialized from the node as built (its
    /// genesis UTXO set, a wallet's keys) and returns `false`; an existing
    /// one is checked (format, identity) and returns `true` — then call
    /// [`Store::restore`] before running the node.
    pub fn open(dir: &Path, id: &Identity, node: &BtcNode) -> Result<(Store, bool), StoreError> {
        std::fs::create_dir_all(dir).map_err(|source| StoreError::Io { path: dir.to_path_buf(), source })?;
        let path = Self::file_in(dir);
        let existed = path.is_file();
        let db = guarded(&path, || {
            let db = open_db(&path, !existed);
            db.map_err(|e| StoreError::Open { path: path.clone(), reason: e.to_string() })
        })?;
        let mut store =
            Store { db, path, tip: None, best: None, mined: 0, keys: 0, seq: 0, counters: (0, 0) };
        if existed {
            store.check(id)?;
        } else {
            store.init(id, node)?;
        }
        Ok((store, existed))
    }

    /// Opens an existing store file for reading only what it holds (no
    /// identity check), e.g. to inspect a node's data after a run.
    pub fn open_file(path: &Path) -> Result<Store, StoreError> {
        let db = guarded(path, || {
            open_db(path, false).map_err(|e| StoreError::Open { path: path.into(), reason: e.to_string() })
        })?;
        let store = Store {
            db,
            path: path.into(),
            tip: None,
            best: None,
            mined: 0,
            keys: 0,
            seq: 0,
            counters: (0, 0),
        };
        store.format()?;
        Ok(store)
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Ends the store of a process about to exit, without redb's closing
    /// write of its free-space map (a commit of the map, some 2.5 MB of
    /// buffers for a moment: the largest peak of a node process's memory).
    /// Nothing is lost: every commit is already durable, and the next
    /// [`Store::open`] rebuilds the map from the file, as it does after a
    /// crash. The database's memory is left to the process's exit.
    pub fn abandon(self) {
        std::mem::forget(self.db);
    }

    /// Size of the database file, bytes.
    pub fn file_bytes(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    fn meta(&self) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let p = &self.path;
        let r = self.db.begin_read().map_err(db_err(p, "read"))?;
        let t = match r.open_table(META) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(BTreeMap::new()),
            Err(e) => return Err(db_err(p, "read meta")(e)),
        };
        let mut out = BTreeMap::new();
        for item in t.iter().map_err(db_err(p, "read meta"))? {
            let (k, v) = item.map_err(db_err(p, "read meta"))?;
            out.insert(k.value().to_owned(), v.value().to_vec());
        }
        Ok(out)
    }

    fn corrupt(&self, what: impl Into<String>, reason: impl Into<String>) -> StoreError {
        StoreError::Corrupt { path: self.path.clone(), what: what.into(), reason: reason.into() }
    }

    /// Checks the format version; returns the meta table.
    fn format(&self) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
        let meta = self.meta()?;
        let Some(f) = meta.get("format") else {
            return Err(self.corrupt("meta", "no format version (not a fika node store)"));
        };
        let found = le_u32(f).ok_or_else(|| self.corrupt("meta format", "not a u32"))?;
        if found > FORMAT_VERSION {
            return Err(StoreError::NewerFormat {
                path: self.path.clone(),
                found,
                supported: FORMAT_VERSION,
            });
        }
        Ok(meta)
    }

    fn check(&mut self, id: &Identity) -> Result<(), StoreError> {
        let meta = self.format()?;
        let text = |k: &str| meta.get(k).map(|v| String::from_utf8_lossy(v).into_owned()).unwrap_or_default();
        let fields: [(&'static str, String, String); 5] = [
            ("kind", text("kind"), id.kind.clone()),
            ("scenario", text("scenario"), id.scenario.clone()),
            ("node", text("node"), id.node.clone()),
            (
                "seed",
                meta.get("seed").and_then(|v| le_u64(v)).map(|s| s.to_string()).unwrap_or_default(),
                id.seed.to_string(),
            ),
            (
                "genesis",
                meta.get("genesis")
                    .and_then(|v| <[u8; 32]>::try_from(v.as_slice()).ok())
                    .map(|b| BlockHash::from_byte_array(b).to_string())
                    .unwrap_or_default(),
                id.genesis.to_string(),
            ),
        ];
        for (what, stored, expected) in fields {
            if stored != expected {
                return Err(StoreError::Mismatch { path: self.path.clone(), what, stored, expected });
            }
        }
        let num = |k: &str| meta.get(k).and_then(|v| le_u64(v)).unwrap_or(0);
        self.mined = num("mined") as u32;
        self.seq = num("seq");
        self.counters = (num("sent") as u32, num("failed") as u32);
        Ok(())
    }

    fn init(&mut self, id: &Identity, node: &BtcNode) -> Result<(), StoreError> {
        let p = self.path.clone();
        let w = self.db.begin_write().map_err(db_err(&p, "begin"))?;
        {
            let mut meta = w.open_table(META).map_err(db_err(&p, "init"))?;
            let g = id.genesis.to_byte_array();
            let pairs: [(&str, &[u8]); 6] = [
                ("format", &FORMAT_VERSION.to_le_bytes()),
                ("kind", id.kind.as_bytes()),
                ("scenario", id.scenario.as_bytes()),
                ("node", id.node.as_bytes()),
                ("seed", &id.seed.to_le_bytes()),
                ("genesis", &g),
            ];
            for (k, v) in pairs {
                meta.insert(k, v).map_err(db_err(&p, "init"))?;
            }
            // Every table exists from the start, so readers never meet a missing one.
            w.open_table(BLOCKS).map_err(db_err(&p, "init"))?;
            w.open_table(MEMPOOL).map_err(db_err(&p, "init"))?;
            w.open_table(FILTERS).map_err(db_err(&p, "init"))?;
            w.open_table(FILTERED).map_err(db_err(&p, "init"))?;
            w.open_table(PAYMENTS).map_err(db_err(&p, "init"))?;
            let mut best = w.open_table(BEST).map_err(db_err(&p, "init"))?;
            let mut utxo = w.open_table(UTXO).map_err(db_err(&p, "init"))?;
            let mut keys = w.open_table(KEYS).map_err(db_err(&p, "init"))?;
            match node {
                BtcNode::Full(n) => {
                    let db = n.db().borrow();
                    let tip = n.tip();
                    for (h, hash) in chain_hashes(&db, tip) {
                        best.insert(h, &hash).map_err(db_err(&p, "init"))?;
                    }
                    let snap = db.utxo(tip).ok_or_else(|| StoreError::Unknown {
                        path: p.clone(),
                        what: "UTXO set of the tip".into(),
                    })?;
                    for (op, coin) in snap.0.iter() {
                        utxo.insert(&outpoint_key(op), coin_value(coin).as_slice())
                            .map_err(db_err(&p, "init"))?;
                    }
                    self.tip = Some(tip);
                    self.mined = n.mined();
                }
                BtcNode::Wallet(wn) => {
                    let spv = wn.spv();
                    for h in 0..=spv.best_height() {
                        if let Some(hash) = spv.hash_at_height(h) {
                            best.insert(h, &hash.to_byte_array()).map_err(db_err(&p, "init"))?;
                        }
                    }
                    for (i, k) in spv.wallet().keys().iter().enumerate() {
                        keys.insert(i as u32, &k.secret_key().secret_bytes()).map_err(db_err(&p, "init"))?;
                    }
                    self.keys = spv.wallet().keys().len();
                    self.best = Some((spv.best_height(), spv.best_hash()));
                    self.counters = wn.payments();
                }
            }
        }
        w.commit().map_err(db_err(&p, "commit"))
    }

    /// Reads everything the store holds.
    pub fn load(&self) -> Result<Saved, StoreError> {
        guarded(&self.path, || self.load_unguarded())
    }

    fn load_unguarded(&self) -> Result<Saved, StoreError> {
        let p = &self.path;
        let meta = self.format()?;
        let r = self.db.begin_read().map_err(db_err(p, "read"))?;
        let mut s = Saved::default();
        let num = |k: &str| meta.get(k).and_then(|v| le_u64(v)).unwrap_or(0);
        s.mined = num("mined") as u32;
        s.counters = (num("sent") as u32, num("failed") as u32);

        let t = r.open_table(BLOCKS).map_err(db_err(p, "read blocks"))?;
        let mut blocks: Vec<(u32, Arc<SimBlock>)> = Vec::with_capacity(t.len().unwrap_or(0) as usize);
        for item in t.iter().map_err(db_err(p, "read blocks"))? {
            let (k, v) = item.map_err(db_err(p, "read blocks"))?;
            let hash = BlockHash::from_byte_array(*k.value());
            let v = v.value();
            let what = || format!("block {hash}");
            let (Some(height), Some(filler)) = (le_u32(v), v.get(4..).and_then(le_u32)) else {
                return Err(self.corrupt(what(), "entry too short"));
            };
            let block: bitcoin::Block = decode_all(&v[8..]).map_err(|e| self.corrupt(what(), e))?;
            let b = SimBlock::new(block, filler);
            if b.hash != hash {
                return Err(self.corrupt(what(), format!("content hashes to {}", b.hash)));
            }
            blocks.push((height, Arc::new(b)));
        }
        blocks.sort_by_key(|(h, b)| (*h, b.hash));
        s.blocks = blocks.into_iter().map(|(_, b)| b).collect();

        let t = r.open_table(BEST).map_err(db_err(p, "read best chain"))?;
        for item in t.iter().map_err(db_err(p, "read best chain"))? {
            let (k, v) = item.map_err(db_err(p, "read best chain"))?;
            if k.value() as usize != s.best_chain.len() {
                return Err(self.corrupt("best_chain", format!("gap before height {}", k.value())));
            }
            s.best_chain.push(BlockHash::from_byte_array(*v.value()));
        }
        if s.best_chain.is_empty() {
            return Err(self.corrupt("best_chain", "empty"));
        }

        let t = r.open_table(UTXO).map_err(db_err(p, "read utxo"))?;
        for item in t.iter().map_err(db_err(p, "read utxo"))? {
            let (k, v) = item.map_err(db_err(p, "read utxo"))?;
            let k = k.value();
            let mut txid = [0u8; 32];
            txid.copy_from_slice(&k[..32]);
            let vout = le_u32(&k[32..]).unwrap_or(0);
            let op = OutPoint::new(Txid::from_byte_array(txid), vout);
            let v = v.value();
            let (Some(height), Some(flag)) = (le_u32(v), v.get(4)) else {
                return Err(self.corrupt(format!("coin {op}"), "entry too short"));
            };
            let txout: TxOut = decode_all(&v[5..]).map_err(|e| self.corrupt(format!("coin {op}"), e))?;
            s.utxo.insert(op, Coin { txout, height, is_coinbase: *flag != 0 });
        }

        s.mempool = self.seq_txs(&r, MEMPOOL, "mempool")?;
        s.payments = self.seq_txs(&r, PAYMENTS, "payments")?;

        let t = r.open_table(FILTERS).map_err(db_err(p, "read filters"))?;
        for item in t.iter().map_err(db_err(p, "read filters"))? {
            let (k, v) = item.map_err(db_err(p, "read filters"))?;
            let scripts = decode_scripts(v.value())
                .map_err(|e| self.corrupt(format!("filter of peer {}", k.value()), e))?;
            s.filters.push((NodeId(k.value()), scripts));
        }

        let t = r.open_table(KEYS).map_err(db_err(p, "read keys"))?;
        for item in t.iter().map_err(db_err(p, "read keys"))? {
            let (k, v) = item.map_err(db_err(p, "read keys"))?;
            let key = bitcoin::secp256k1::SecretKey::from_slice(v.value())
                .map_err(|e| self.corrupt(format!("wallet key {}", k.value()), e.to_string()))?;
            s.keys.push(key);
        }

        let t = r.open_table(FILTERED).map_err(db_err(p, "read filtered"))?;
        for item in t.iter().map_err(db_err(p, "read filtered"))? {
            let (k, v) = item.map_err(db_err(p, "read filtered"))?;
            let what = || format!("filtered block {}", k.value());
            s.filtered.push(self.decode_filtered(v.value()).map_err(|e| self.corrupt(what(), e))?);
        }
        Ok(s)
    }

    fn decode_filtered(&self, v: &[u8]) -> Result<(u64, FilteredBlock), String> {
        let now = le_u64(v).ok_or("entry too short")?;
        let rest = &v[8..];
        let (header, used): (bitcoin::block::Header, usize) =
            deserialize_partial(rest).map_err(|e| e.to_string())?;
        let rest = &rest[used..];
        let height = le_u32(rest).ok_or("entry too short")?;
        let rest = &rest[4..];
        let (proof, used): (bitcoin::merkle_tree::PartialMerkleTree, usize) =
            deserialize_partial(rest).map_err(|e| e.to_string())?;
        let txs: Vec<Transaction> = decode_all(&rest[used..])?;
        Ok((now, FilteredBlock { header, height, proof, txs: txs.into_iter().map(Arc::new).collect() }))
    }

    fn seq_txs(
        &self,
        r: &redb::ReadTransaction,
        table: TableDefinition<'_, &[u8; 32], &[u8]>,
        name: &'static str,
    ) -> Result<Vec<(Txid, Arc<Transaction>)>, StoreError> {
        let p = &self.path;
        let t = r.open_table(table).map_err(db_err(p, name))?;
        let mut out = Vec::new();
        for item in t.iter().map_err(db_err(p, name))? {
            let (k, v) = item.map_err(db_err(p, name))?;
            let txid = Txid::from_byte_array(*k.value());
            let v = v.value();
            let what = || format!("{name} transaction {txid}");
            let seq = le_u64(v).ok_or_else(|| self.corrupt(what(), "entry too short"))?;
            let tx: Transaction = decode_all(&v[8..]).map_err(|e| self.corrupt(what(), e))?;
            if tx.compute_txid() != txid {
                return Err(self.corrupt(what(), "content has another txid"));
            }
            out.push((seq, txid, Arc::new(tx)));
        }
        out.sort_by_key(|(seq, txid, _)| (*seq, *txid));
        Ok(out.into_iter().map(|(_, t, tx)| (t, tx)).collect())
    }

    /// Replays what the store holds into `node`, freshly built from the
    /// scenario (see the module documentation), and deletes kept mempool
    /// transactions and payments that no longer enter.
    pub fn restore(&mut self, node: &mut BtcNode) -> Result<Resumed, StoreError> {
        let t0 = Instant::now();
        let saved = self.load()?;
        let p = self.path.clone();
        let restore_err = |source| StoreError::Restore { path: p.clone(), source };
        let mut r = Resumed { blocks: saved.blocks.len(), ..Default::default() };
        let dropped: Vec<Txid> = match node {
            BtcNode::Full(n) => {
                if !saved.keys.is_empty() || !saved.filtered.is_empty() {
                    return Err(restore_err(RestoreError::WrongKind { stored: "wallet", node: "full" }));
                }
                let tip = *saved.best_chain.last().unwrap_or(&BlockHash::all_zeros());
                n.restore(&saved.blocks, tip, saved.mined, saved.filters.clone()).map_err(restore_err)?;
                self.verify_full(n, &saved)?;
                let txs: Vec<Arc<Transaction>> = saved.mempool.iter().map(|(_, t)| Arc::clone(t)).collect();
                let dropped = n.restore_mempool(&txs);
                r.pending = n.mempool().len();
                let db = n.db().borrow();
                r.height = db.rec(n.tip()).height;
                r.hash = db.rec(n.tip()).data.hash.to_string();
                self.tip = Some(n.tip());
                self.mined = n.mined();
                dropped
            }
            BtcNode::Wallet(w) => {
                if !saved.blocks.is_empty() || !saved.mempool.is_empty() {
                    return Err(restore_err(RestoreError::WrongKind { stored: "full", node: "wallet" }));
                }
                let payments: Vec<Arc<Transaction>> =
                    saved.payments.iter().map(|(_, t)| Arc::clone(t)).collect();
                w.restore(&saved.keys, &saved.filtered, &payments, saved.counters).map_err(restore_err)?;
                let spv = w.spv();
                let replayed: Vec<BlockHash> =
                    (0..=spv.best_height()).filter_map(|h| spv.hash_at_height(h)).collect();
                if replayed != saved.best_chain {
                    return Err(self.corrupt(
                        "best_chain",
                        format!(
                            "kept best header chain (height {}) differs from the replayed one (height {})",
                            saved.best_chain.len().saturating_sub(1),
                            replayed.len().saturating_sub(1)
                        ),
                    ));
                }
                r.blocks = saved.filtered.len();
                r.pending = spv.wallet().pending_transactions().len();
                r.height = spv.best_height();
                r.hash = spv.best_hash().to_string();
                self.best = Some((spv.best_height(), spv.best_hash()));
                self.keys = spv.wallet().keys().len();
                self.counters = w.payments();
                // Payments confirmed or conflicted are history; keep them (they are few).
                Vec::new()
            }
        };
        r.dropped = dropped.len();
        if !dropped.is_empty() {
            let w = self.db.begin_write().map_err(db_err(&p, "begin"))?;
            {
                let mut t = w.open_table(MEMPOOL).map_err(db_err(&p, "write mempool"))?;
                for txid in &dropped {
                    t.remove(txid.as_byte_array()).map_err(db_err(&p, "write mempool"))?;
                }
            }
            w.commit().map_err(db_err(&p, "commit"))?;
        }
        r.micros = t0.elapsed().as_micros() as u64;
        Ok(r)
    }

    /// The replayed best chain and UTXO set must be the kept ones.
    fn verify_full(&self, n: &FullNode, saved: &Saved) -> Result<(), StoreError> {
        let db = n.db().borrow();
        let chain: Vec<BlockHash> =
            chain_hashes(&db, n.tip()).map(|(_, h)| BlockHash::from_byte_array(h)).collect();
        if chain != saved.best_chain {
            return Err(self.corrupt("best_chain", "does not follow the kept blocks' parents"));
        }
        let snap = db.utxo(n.tip()).ok_or_else(|| StoreError::Unknown {
            path: self.path.clone(),
            what: "UTXO set of the tip".into(),
        })?;
        if snap.0.len() != saved.utxo.len()
            || !snap.0.iter().zip(&saved.utxo).all(|(a, b)| a.0 == b.0 && a.1 == b.1)
        {
            let first = snap
                .0
                .iter()
                .map(|(op, _)| *op)
                .find(|op| saved.utxo.get(op) != snap.coin(op).as_ref())
                .or_else(|| saved.utxo.keys().find(|op| snap.coin(op).is_none()).copied());
            return Err(self.corrupt(
                "utxo",
                format!(
                    "kept set ({} coins) differs from the replayed one ({} coins){}",
                    saved.utxo.len(),
                    snap.0.len(),
                    first.map(|op| format!(", first at {op}")).unwrap_or_default()
                ),
            ));
        }
        Ok(())
    }

    /// Writes what one step of `node` changed (`changes`, drained from its
    /// journal) in one durable write transaction; returns `None` if there
    /// was nothing to write. On an error nothing of the step is written.
    pub fn commit(&mut self, node: &BtcNode, changes: &[Change]) -> Result<Option<Committed>, StoreError> {
        match node {
            BtcNode::Full(n) => self.commit_full(n, changes),
            BtcNode::Wallet(w) => self.commit_wallet(w, changes),
        }
    }

    fn unknown(&self, what: String) -> StoreError {
        StoreError::Unknown { path: self.path.clone(), what }
    }

    /// The kept tip as an id of `db` (read from the file if not known yet).
    fn kept_tip(&mut self, db: &BlockDb) -> Result<BlockId, StoreError> {
        if let Some(t) = self.tip {
            return Ok(t);
        }
        let p = &self.path;
        let r = self.db.begin_read().map_err(db_err(p, "read"))?;
        let t = r.open_table(BEST).map_err(db_err(p, "read best chain"))?;
        let last = t.last().map_err(db_err(p, "read best chain"))?.map(|(_, v)| *v.value());
        let hash = BlockHash::from_byte_array(last.ok_or_else(|| self.corrupt("best_chain", "empty"))?);
        let id = db
            .id_of(&hash)
            .ok_or_else(|| self.unknown(format!("kept tip {hash} (restore the node first)")))?;
        self.tip = Some(id);
        Ok(id)
    }

    fn commit_full(&mut self, n: &FullNode, changes: &[Change]) -> Result<Option<Committed>, StoreError> {
        let tip = n.tip();
        self.kept_tip(&n.db().borrow())?;
        if changes.is_empty() && self.tip == Some(tip) && self.mined == n.mined() {
            return Ok(None);
        }
        let t0 = Instant::now();
        let p = self.path.clone();
        let db = n.db().borrow();
        let mut c = Committed::default();
        let mut seq = self.seq;
        let w = self.db.begin_write().map_err(db_err(&p, "begin"))?;
        {
            let mut blocks = w.open_table(BLOCKS).map_err(db_err(&p, "write blocks"))?;
            let mut pool = w.open_table(MEMPOOL).map_err(db_err(&p, "write mempool"))?;
            let mut filters = w.open_table(FILTERS).map_err(db_err(&p, "write filters"))?;
            for ch in changes {
                match ch {
                    Change::Block(id) => {
                        let rec = db
                            .blocks()
                            .get(*id as usize)
                            .ok_or_else(|| self.unknown(format!("block {id}")))?;
                        let v = block_value(rec.height, &rec.data);
                        blocks
                            .insert(rec.data.hash.as_byte_array(), v.as_slice())
                            .map_err(db_err(&p, "write blocks"))?;
                        c.blocks += 1;
                    }
                    Change::PoolIn(idx) => {
                        let tx =
                            db.txs().get(*idx as usize).ok_or_else(|| self.unknown(format!("tx {idx}")))?;
                        seq += 1;
                        let v = seq_tx_value(seq, &tx.tx);
                        pool.insert(tx.txid.as_byte_array(), v.as_slice())
                            .map_err(db_err(&p, "write mempool"))?;
                        c.other += 1;
                    }
                    Change::PoolOut(idx) => {
                        let tx =
                            db.txs().get(*idx as usize).ok_or_else(|| self.unknown(format!("tx {idx}")))?;
                        pool.remove(tx.txid.as_byte_array()).map_err(db_err(&p, "write mempool"))?;
                        c.other += 1;
                    }
                    Change::Filter(peer, scripts) => {
                        filters
                            .insert(peer.0, encode_scripts(scripts).as_slice())
                            .map_err(db_err(&p, "write filters"))?;
                        c.other += 1;
                    }
                    Change::Filtered { .. } | Change::Sent(_) | Change::Failed => {
                        return Err(self.unknown("wallet change from a full node".into()));
                    }
                }
            }
            if let Some(old) = self.tip.filter(|old| *old != tip) {
                self.move_tip(&w, &db, old, tip)?;
                c.tip_moved = true;
            }
            let mut meta = w.open_table(META).map_err(db_err(&p, "write meta"))?;
            meta.insert("mined", u64::from(n.mined()).to_le_bytes().as_slice())
                .map_err(db_err(&p, "write meta"))?;
            meta.insert("seq", seq.to_le_bytes().as_slice()).map_err(db_err(&p, "write meta"))?;
        }
        w.commit().map_err(db_err(&p, "commit"))?;
        self.tip = Some(tip);
        self.mined = n.mined();
        self.seq = seq;
        c.micros = t0.elapsed().as_micros() as u64;
        Ok(Some(c))
    }

    /// Moves the kept best chain and UTXO set from `old` to `new`.
    fn move_tip(
        &self,
        w: &redb::WriteTransaction,
        db: &BlockDb,
        old: BlockId,
        new: BlockId,
    ) -> Result<(), StoreError> {
        let p = &self.path;
        let fork = db.fork_point(old, new);
        let walk = |mut b: BlockId| {
            let mut v = Vec::new();
            while b != fork {
                v.push(b);
                match db.rec(b).parent {
                    Some(parent) => b = parent,
                    None => break,
                }
            }
            v
        };
        let (gone, added) = (walk(old), walk(new));
        let mut best = w.open_table(BEST).map_err(db_err(p, "write best chain"))?;
        for h in db.rec(new).height + 1..=db.rec(old).height {
            best.remove(h).map_err(db_err(p, "write best chain"))?;
        }
        for b in &added {
            let r = db.rec(*b);
            best.insert(r.height, r.data.hash.as_byte_array()).map_err(db_err(p, "write best chain"))?;
        }
        let snap = db.utxo(new).ok_or_else(|| self.unknown(format!("UTXO set of block {new}")))?;
        let mut touched: std::collections::BTreeSet<OutPoint> = std::collections::BTreeSet::new();
        for b in gone.iter().chain(&added) {
            for tx in &db.rec(*b).data.block.txdata {
                if !tx.is_coinbase() {
                    touched.extend(tx.input.iter().map(|i| i.previous_output));
                }
                let txid = tx.compute_txid();
                touched.extend((0..tx.output.len() as u32).map(|v| OutPoint::new(txid, v)));
            }
        }
        let mut utxo = w.open_table(UTXO).map_err(db_err(p, "write utxo"))?;
        for op in &touched {
            match snap.coin(op) {
                Some(coin) => utxo.insert(&outpoint_key(op), coin_value(&coin).as_slice()).map(|_| ()),
                None => utxo.remove(&outpoint_key(op)).map(|_| ()),
            }
            .map_err(db_err(p, "write utxo"))?;
        }
        Ok(())
    }

    fn commit_wallet(
        &mut self,
        wn: &WalletNode,
        changes: &[Change],
    ) -> Result<Option<Committed>, StoreError> {
        let spv = wn.spv();
        let best = (spv.best_height(), spv.best_hash());
        let nkeys = spv.wallet().keys().len();
        if changes.is_empty()
            && self.best == Some(best)
            && self.keys == nkeys
            && self.counters == wn.payments()
        {
            return Ok(None);
        }
        let t0 = Instant::now();
        let p = self.path.clone();
        let mut c = Committed::default();
        let mut seq = self.seq;
        let w = self.db.begin_write().map_err(db_err(&p, "begin"))?;
        {
            let mut filtered = w.open_table(FILTERED).map_err(db_err(&p, "write filtered"))?;
            let mut payments = w.open_table(PAYMENTS).map_err(db_err(&p, "write payments"))?;
            for ch in changes {
                match ch {
                    Change::Filtered { now, block } => {
                        seq += 1;
                        filtered
                            .insert(seq, filtered_value(*now, block).as_slice())
                            .map_err(db_err(&p, "write filtered"))?;
                        c.blocks += 1;
                    }
                    Change::Sent(tx) => {
                        seq += 1;
                        let v = seq_tx_value(seq, tx);
                        payments
                            .insert(tx.compute_txid().as_byte_array(), v.as_slice())
                            .map_err(db_err(&p, "write payments"))?;
                        c.other += 1;
                    }
                    Change::Failed => {}
                    Change::Block(_) | Change::PoolIn(_) | Change::PoolOut(_) | Change::Filter(..) => {
                        return Err(self.unknown("full-node change from a wallet".into()));
                    }
                }
            }
            if self.keys < nkeys {
                let mut keys = w.open_table(KEYS).map_err(db_err(&p, "write keys"))?;
                for (i, k) in spv.wallet().keys().iter().enumerate().skip(self.keys) {
                    keys.insert(i as u32, &k.secret_key().secret_bytes())
                        .map_err(db_err(&p, "write keys"))?;
                }
            }
            if self.best != Some(best) {
                let mut table = w.open_table(BEST).map_err(db_err(&p, "write best chain"))?;
                let old_h = self.best.map_or(0, |b| b.0);
                for h in best.0 + 1..=old_h {
                    table.remove(h).map_err(db_err(&p, "write best chain"))?;
                }
                for h in (0..=best.0).rev() {
                    let Some(hash) = spv.hash_at_height(h) else { continue };
                    let kept = table.get(h).map_err(db_err(&p, "read best chain"))?.map(|v| *v.value());
                    if kept == Some(hash.to_byte_array()) {
                        break;
                    }
                    table.insert(h, &hash.to_byte_array()).map_err(db_err(&p, "write best chain"))?;
                }
                c.tip_moved = true;
            }
            let (sent, failed) = wn.payments();
            let mut meta = w.open_table(META).map_err(db_err(&p, "write meta"))?;
            meta.insert("sent", u64::from(sent).to_le_bytes().as_slice())
                .map_err(db_err(&p, "write meta"))?;
            meta.insert("failed", u64::from(failed).to_le_bytes().as_slice())
                .map_err(db_err(&p, "write meta"))?;
            meta.insert("seq", seq.to_le_bytes().as_slice()).map_err(db_err(&p, "write meta"))?;
        }
        w.commit().map_err(db_err(&p, "commit"))?;
        self.best = Some(best);
        self.keys = nkeys;
        self.seq = seq;
        self.counters = wn.payments();
        c.micros = t0.elapsed().as_micros() as u64;
        Ok(Some(c))
    }
}

/// `(height, hash)` of the best chain ending at `tip`, genesis first.
fn chain_hashes(db: &BlockDb, tip: BlockId) -> impl Iterator<Item = (u32, [u8; 32])> {
    let mut v = Vec::with_capacity(db.rec(tip).height as usize + 1);
    let mut b = Some(tip);
    while let Some(x) = b {
        let r = db.rec(x);
        v.push((r.height, r.data.hash.to_byte_array()));
        b = r.parent;
    }
    v.into_iter().rev()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::durable::DurableNode;
    use fika_btc::msg::BtcMsg;
    use fika_btc::node::SharedDb;
    use fika_core::{Node, TimerId};
    use fika_scenario::{Layout, Scenario};
    use std::time::Duration;

    /// A context that records what the node does.
    type Cx = fika_core::testing::TestContext<BtcMsg>;

    /// Node `id`'s context, with its peers in `layout`.
    fn context_of(layout: &Layout, id: u32) -> Cx {
        let mut cx = Cx::new(id, &[]);
        cx.peers = crate::build::peers_of(layout, NodeId(id));
        cx
    }

    /// The full node's mining timer (see `fika_btc::node`).
    const MINE: TimerId = 1;

    fn demo() -> (Scenario, Layout) {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../scenarios/thesis-demo.toml");
        let s = fika_scenario::load_file(Path::new(path)).expect("thesis demo loads");
        let l = fika_scenario::layout(&s).expect("layout");
        (s, l)
    }

    fn build(s: &Scenario, l: &Layout, i: u32) -> (BtcNode, SharedDb) {
        crate::build::build_btc_node_with_db(s, l, NodeId(i)).expect("node builds")
    }

    fn identity(s: &Scenario, l: &Layout, node: &BtcNode, db: &SharedDb, i: u32) -> Identity {
        let genesis = db.borrow().rec(0).data.hash;
        Identity::of(node, &s.name, &l.names[i as usize], s.seed, genesis)
    }

    fn temp_dir(name: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fika-store-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn full(node: &BtcNode) -> &FullNode {
        match node {
            BtcNode::Full(n) => n,
            BtcNode::Wallet(_) => panic!("a full node"),
        }
    }

    fn tip_hash(node: &BtcNode) -> BlockHash {
        crate::durable::tip_of(node).1
    }

    /// Mines `n` blocks on `node`, ten seconds apart.
    fn mine(node: &mut impl Node<Msg = BtcMsg>, cx: &mut Cx, n: usize) {
        for _ in 0..n {
            cx.advance(Duration::from_secs(10));
            node.on_timer(cx, MINE);
        }
    }

    #[test]
    fn full_node_round_trip_through_a_reorg_with_its_mempool() {
        let (s, l) = demo();
        let dir = temp_dir("full");
        let (a, db) = build(&s, &l, 0);
        let id = identity(&s, &l, &a, &db, 0);
        let (store, existed) = Store::open(&dir, &id, &a).expect("store opens");
        assert!(!existed);
        let mut d = DurableNode::new(a, store, None, None);
        let mut cx = context_of(&l, 0);
        d.on_start(&mut cx);
        mine(&mut d, &mut cx, 3);
        assert_eq!(crate::durable::tip_of(d.node()).0, 3);
        // Blocks were relayed, after their commit.
        assert!(cx.sent.iter().any(|(_, m)| matches!(m, BtcMsg::Inv(_) | BtcMsg::CmpctBlock(_))));

        // client1 pays; server1 takes the payment into its mempool.
        let (mut w, _) = build(&s, &l, 3);
        let mut wcx = context_of(&l, 3);
        w.on_timer(&mut wcx, 0);
        let txs = wcx.take_sent_to(NodeId(0));
        assert_eq!(txs.len(), 1);
        for m in txs {
            d.on_message(&mut cx, NodeId(3), m);
        }
        assert_eq!(full(d.node()).mempool().len(), 1);

        // server2 mined a longer branch on its own: server1 reorganises to it.
        let (mut c, cdb) = build(&s, &l, 1);
        let mut ccx = context_of(&l, 1);
        mine(&mut c, &mut ccx, 5);
        let branch: Vec<Arc<SimBlock>> =
            cdb.borrow().blocks().iter().skip(1).map(|r| Arc::clone(&r.data)).collect();
        for b in branch {
            d.on_message(&mut cx, NodeId(1), BtcMsg::Block(b));
        }
        assert_eq!(tip_hash(d.node()), tip_hash(&c));
        assert_eq!(full(d.node()).mempool().len(), 1, "the payment survives the reorg");
        let pool: Vec<Txid> = {
            let n = full(d.node());
            let db = n.db().borrow();
            n.mempool().entries().keys().map(|i| db.tx(*i).txid).collect()
        };
        let tip = tip_hash(d.node());
        assert!(d.stats().blocks >= 8 && d.stats().file_bytes > 0, "{:?}", d.stats());
        drop(d);

        // A fresh process: rebuilt from the scenario, restored from the store.
        let (mut a2, db2) = build(&s, &l, 0);
        let (mut store, existed) = Store::open(&dir, &id, &a2).expect("store reopens");
        assert!(existed);
        let r = store.restore(&mut a2).expect("restores");
        assert_eq!((r.height, r.hash.clone(), r.blocks, r.pending, r.dropped), (5, tip.to_string(), 8, 1, 0));
        assert_eq!(tip_hash(&a2), tip);
        let n2 = full(&a2);
        let db2 = db2.borrow();
        let pool2: Vec<Txid> = n2.mempool().entries().keys().map(|i| db2.tx(*i).txid).collect();
        assert_eq!(pool2, pool);
        // Both branches are kept.
        assert_eq!((1..db2.len() as u32).filter(|b| n2.has_block(*b)).count(), 8);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_step_is_written_whole_or_not_at_all() {
        let (s, l) = demo();
        let dir = temp_dir("atomic");
        let (mut a, db) = build(&s, &l, 0);
        let id = identity(&s, &l, &a, &db, 0);
        let (mut store, _) = Store::open(&dir, &id, &a).expect("store opens");
        a.enable_journal();
        let mut cx = context_of(&l, 0);
        mine(&mut a, &mut cx, 1);
        let mut changes = a.take_journal();
        assert!(matches!(changes.as_slice(), [Change::Block(1)]), "{changes:?}");
        // A step whose second change fails: the block before it must not be written either.
        changes.push(Change::Block(9_999));
        let e = store.commit(&a, &changes);
        assert!(matches!(e, Err(StoreError::Unknown { .. })), "{e:?}");
        let saved = store.load().expect("loads");
        assert!(saved.blocks.is_empty());
        assert_eq!(saved.best_chain.len(), 1, "the tip did not move");
        assert_eq!(saved.utxo.len(), 2, "the coins did not change");
        // The same step without the bad change: block, best chain and coins together.
        changes.pop();
        let c = store.commit(&a, &changes).expect("commits").expect("wrote");
        assert_eq!((c.blocks, c.tip_moved), (1, true));
        assert_eq!(store.commit(&a, &[]).expect("nothing to do"), None);
        drop(store);
        let (store, _) = Store::open(&dir, &id, &a).expect("reopens");
        let saved = store.load().expect("loads");
        assert_eq!(saved.blocks.len(), 1);
        assert_eq!(saved.best_chain.last(), Some(&tip_hash(&a)));
        let coinbase = saved.blocks[0].block.txdata[0].compute_txid();
        assert!(saved.utxo.contains_key(&OutPoint::new(coinbase, 0)), "the block's coin is kept with it");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn wallet_round_trip_keeps_keys_proofs_and_payments() {
        let (s, l) = demo();
        let dir = temp_dir("wallet");
        let (mut server, _) = build(&s, &l, 0);
        let mut scx = context_of(&l, 0);
        server.on_start(&mut scx);
        scx.sent.clear();
        let (w, wdb) = build(&s, &l, 3);
        let id = identity(&s, &l, &w, &wdb, 3);
        let (store, _) = Store::open(&dir, &id, &w).expect("store opens");
        let mut d = DurableNode::new(w, store, None, None);
        let mut wcx = context_of(&l, 3);
        let deliver = |from: &mut Cx, to: u32, node: &mut dyn FnMut(BtcMsg)| {
            for m in from.take_sent_to(NodeId(to)) {
                node(m);
            }
        };
        d.on_start(&mut wcx);
        deliver(&mut wcx, 0, &mut |m| server.on_message(&mut scx, NodeId(3), m));
        deliver(&mut scx, 3, &mut |m| d.on_message(&mut wcx, NodeId(0), m));
        // The scheduled payment, confirmed by the server's next block.
        d.on_timer(&mut wcx, 0);
        deliver(&mut wcx, 0, &mut |m| server.on_message(&mut scx, NodeId(3), m));
        mine(&mut server, &mut scx, 2);
        deliver(&mut scx, 3, &mut |m| d.on_message(&mut wcx, NodeId(0), m));
        let BtcNode::Wallet(w) = d.node() else { panic!("a wallet") };
        let balance = w.balance();
        assert_eq!(balance.confirmed.to_sat(), 59 * 100_000_000);
        assert_eq!(w.spv().best_height(), 2);
        let best = w.spv().best_hash();
        drop(d);

        let (mut w2, _) = build(&s, &l, 3);
        let (mut store, existed) = Store::open(&dir, &id, &w2).expect("reopens");
        assert!(existed);
        let r = store.restore(&mut w2).expect("restores");
        assert_eq!((r.height, r.hash.clone()), (2, best.to_string()));
        let BtcNode::Wallet(w2) = &w2 else { panic!("a wallet") };
        assert_eq!(w2.balance(), balance);
        assert_eq!(w2.payments(), (1, 0));
        assert_eq!(store.load().expect("loads").keys.len(), w2.spv().wallet().keys().len());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn reopening_refuses_another_node_a_newer_format_and_corrupt_files() {
        let (s, l) = demo();
        let dir = temp_dir("refuse");
        let (a, db) = build(&s, &l, 0);
        let id = identity(&s, &l, &a, &db, 0);
        drop(Store::open(&dir, &id, &a).expect("store opens"));

        // Another seed (so other keys and premine): refused, naming the field.
        let other = Identity { seed: id.seed + 1, ..id.clone() };
        let e = Store::open(&dir, &other, &a).err().map(|e| e.to_string());
        assert!(e.as_deref().is_some_and(|m| m.contains("seed is \"1\", expected \"2\"")), "{e:?}");
        let wrong_node = Identity { node: "server2".into(), ..id.clone() };
        assert!(matches!(Store::open(&dir, &wrong_node, &a), Err(StoreError::Mismatch { what: "node", .. })));

        // A newer format.
        let file = Store::file_in(&dir);
        {
            let db = Database::open(&file).expect("redb opens");
            let w = db.begin_write().expect("write");
            w.open_table(META)
                .expect("meta")
                .insert("format", 99u32.to_le_bytes().as_slice())
                .expect("insert");
            w.commit().expect("commit");
        }
        let e = Store::open(&dir, &id, &a).err();
        assert!(
            matches!(e, Some(StoreError::NewerFormat { found: 99, supported: FORMAT_VERSION, .. })),
            "{e:?}"
        );

        // Not a database at all, an empty file, and a cut-off database.
        let bad = temp_dir("garbage");
        std::fs::create_dir_all(&bad).expect("dir");
        let junk: Vec<u8> = (0..20_000u32).map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8).collect();
        std::fs::write(Store::file_in(&bad), &junk).expect("write");
        assert!(matches!(Store::open(&bad, &id, &a), Err(StoreError::Open { .. })));
        std::fs::write(Store::file_in(&bad), b"").expect("write");
        assert!(Store::open(&bad, &id, &a).is_err());
        let good = std::fs::read(Store::file_in(&dir)).expect("read");
        std::fs::write(Store::file_in(&bad), &good[..good.len() / 3]).expect("write");
        assert!(
            Store::open(&bad, &id, &a).and_then(|(mut st, _)| st.restore(&mut build(&s, &l, 0).0)).is_err()
        );

        // A valid database that is not a node store.
        std::fs::remove_file(Store::file_in(&bad)).expect("rm");
        drop(Database::create(Store::file_in(&bad)).expect("redb creates"));
        let e = Store::open(&bad, &id, &a).err();
        assert!(
            matches!(&e, Some(StoreError::Corrupt { reason, .. }) if reason.contains("no format")),
            "{e:?}"
        );

        // A kept block whose bytes were damaged.
        let dir2 = temp_dir("damaged");
        let (mut a2, _) = build(&s, &l, 0);
        let (mut store, _) = Store::open(&dir2, &id, &a2).expect("opens");
        a2.enable_journal();
        let mut cx = context_of(&l, 0);
        mine(&mut a2, &mut cx, 1);
        let ch = a2.take_journal();
        store.commit(&a2, &ch).expect("commits");
        drop(store);
        {
            let db = Database::open(Store::file_in(&dir2)).expect("redb opens");
            let w = db.begin_write().expect("write");
            {
                let mut t = w.open_table(BLOCKS).expect("blocks");
                let key = tip_hash(&a2).to_byte_array();
                let mut v = t.get(&key).expect("get").expect("kept").value().to_vec();
                let last = v.len() - 1;
                v[last] ^= 0xff;
                t.insert(&key, v.as_slice()).expect("insert");
            }
            w.commit().expect("commit");
        }
        let (mut store, _) = Store::open(&dir2, &id, &a2).expect("opens");
        // Its header still hashes right; replaying it finds the damage.
        let e = store.restore(&mut build(&s, &l, 0).0).err();
        assert!(matches!(e, Some(StoreError::Restore { source: RestoreError::Invalid { .. }, .. })), "{e:?}");
        for d in [dir, dir2, bad] {
            let _ = std::fs::remove_dir_all(d);
        }
    }
}
