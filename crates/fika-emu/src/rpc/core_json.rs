//! Blocks, headers, transactions and scripts in Bitcoin Core's JSON shapes
//! (`getblock`, `getblockheader`, `getrawtransaction`, `decoderawtransaction`):
//! pure functions of the data, with Core's field names and order.

use bitcoin::block::Header;
use bitcoin::consensus::encode::serialize_hex;
use bitcoin::hashes::Hash;
use bitcoin::pow::Work;
use bitcoin::{Address, Block, BlockHash, Network, Script, Transaction};
use fika_btc::params::ChainParams;

use super::json::Json;

/// Core's chain name for a chain: `regtest` for regtest-like chains,
/// `main` for Bitcoin mainnet, else the preset's own name.
pub fn chain_name(params: &ChainParams) -> String {
    match params.name.as_str() {
        n if n.contains("regtest") => "regtest".into(),
        "bitcoin-mainnet" => "main".into(),
        n => n.to_owned(),
    }
}

/// The address format of a chain (regtest: `bcrt1…`; otherwise mainnet's).
pub fn network(params: &ChainParams) -> Network {
    if params.name.contains("regtest") { Network::Regtest } else { Network::Bitcoin }
}

/// Core's `GetDifficulty`: how many times harder than the easiest mainnet
/// target (`0x1d00ffff`) the compact target `bits` is.
pub fn difficulty(bits: u32) -> f64 {
    let mut shift = (bits >> 24) & 0xff;
    let mantissa = bits & 0x00ff_ffff;
    if mantissa == 0 {
        return 0.0;
    }
    let mut d = f64::from(0x0000_ffffu32) / f64::from(mantissa);
    while shift < 29 {
        d *= 256.0;
        shift += 1;
    }
    while shift > 29 {
        d /= 256.0;
        shift -= 1;
    }
    d
}

/// Chain work as Core prints it: 64 hex digits, big-endian.
pub fn chainwork_hex(work: Work) -> String {
    work.to_be_bytes().iter().map(|b| format!("{b:02x}")).collect()
}

/// Core's name of a script's type (`scriptPubKey.type`).
pub fn script_type(s: &Script) -> &'static str {
    if s.is_p2pkh() {
        "pubkeyhash"
    } else if s.is_p2sh() {
        "scripthash"
    } else if s.is_p2wpkh() {
        "witness_v0_keyhash"
    } else if s.is_p2wsh() {
        "witness_v0_scripthash"
    } else if s.is_p2tr() {
        "witness_v1_taproot"
    } else if s.is_op_return() {
        "nulldata"
    } else if s.is_p2pk() {
        "pubkey"
    } else if s.is_multisig() {
        "multisig"
    } else if s.is_witness_program() {
        "witness_unknown"
    } else {
        "nonstandard"
    }
}

/// A `scriptPubKey` object: `asm`, `hex`, `address` (when the script has
/// one) and `type`.
pub fn script_pubkey(s: &Script, network: Network) -> Json {
    let mut o = Json::obj([("asm", Json::Str(s.to_asm_string())), ("hex", Json::Str(s.to_hex_string()))]);
    if let Ok(a) = Address::from_script(s, network) {
        o.push("address", Json::Str(a.to_string()));
    }
    o.push("type", Json::from(script_type(s)));
    o
}

fn witness_json(w: &bitcoin::Witness) -> Json {
    Json::Array(w.iter().map(|item| Json::Str(hex(item))).collect())
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A transaction as Core's `TxToUniv` writes it: `txid`, `hash`, `version`,
/// `size`, `vsize`, `weight`, `locktime`, `vin`, `vout`, then `hex` when
/// asked for. Callers append `blockhash`, `confirmations` and times.
pub fn tx(t: &Transaction, network: Network, include_hex: bool) -> Json {
    let vin: Vec<Json> = t
        .input
        .iter()
        .map(|i| {
            let mut o = if t.is_coinbase() {
                Json::obj([("coinbase", Json::Str(hex(i.script_sig.as_bytes())))])
            } else {
                Json::obj([
                    ("txid", Json::Str(i.previous_output.txid.to_string())),
                    ("vout", Json::from(i.previous_output.vout)),
                    (
                        "scriptSig",
                        Json::obj([
                            ("asm", Json::Str(i.script_sig.to_asm_string())),
                            ("hex", Json::Str(i.script_sig.to_hex_string())),
                        ]),
                    ),
                ])
            };
            if !i.witness.is_empty() {
                o.push("txinwitness", witness_json(&i.witness));
            }
            o.push("sequence", Json::from(i.sequence.0));
            o
        })
        .collect();
    let vout: Vec<Json> = t
        .output
        .iter()
        .enumerate()
        .map(|(n, o)| {
            Json::obj([
                ("value", Json::btc(o.value)),
                ("n", Json::from(n)),
                ("scriptPubKey", script_pubkey(&o.script_pubkey, network)),
            ])
        })
        .collect();
    let mut o = Json::obj([
        ("txid", Json::Str(t.compute_txid().to_string())),
        ("hash", Json::Str(t.compute_wtxid().to_string())),
        ("version", Json::from(t.version.0)),
        ("size", Json::from(t.total_size())),
        ("vsize", Json::from(t.vsize())),
        ("weight", Json::from(t.weight().to_wu())),
        ("locktime", Json::from(t.lock_time.to_consensus_u32())),
        ("vin", Json::Array(vin)),
        ("vout", Json::Array(vout)),
    ]);
    if include_hex {
        o.push("hex", Json::Str(serialize_hex(t)));
    }
    o
}

/// Where a block or header stands, for its JSON.
#[derive(Clone, Debug)]
pub struct BlockPlace {
    /// Its height.
    pub height: u32,
    /// Confirmations: best height − height + 1 on the best chain, −1 off it.
    pub confirmations: i64,
    /// Median time past at the block.
    pub mediantime: u32,
    /// Cumulative chain work up to and including it.
    pub chainwork: Work,
    /// Transactions in it (0 when only the header is known).
    pub n_tx: usize,
    /// The next block on the best chain.
    pub next: Option<BlockHash>,
}

/// A header as `getblockheader` (verbose) writes it.
pub fn header(h: &Header, place: &BlockPlace) -> Json {
    let version = h.version.to_consensus();
    let mut o = Json::obj([
        ("hash", Json::Str(h.block_hash().to_string())),
        ("confirmations", Json::Int(place.confirmations)),
        ("height", Json::from(place.height)),
        ("version", Json::from(version)),
        ("versionHex", Json::Str(format!("{:08x}", version as u32))),
        ("merkleroot", Json::Str(h.merkle_root.to_string())),
        ("time", Json::from(h.time)),
        ("mediantime", Json::from(place.mediantime)),
        ("nonce", Json::from(h.nonce)),
        ("bits", Json::Str(format!("{:08x}", h.bits.to_consensus()))),
        ("difficulty", Json::Float(difficulty(h.bits.to_consensus()))),
        ("chainwork", Json::Str(chainwork_hex(place.chainwork))),
        ("nTx", Json::from(place.n_tx)),
    ]);
    if h.prev_blockhash != BlockHash::all_zeros() {
        o.push("previousblockhash", Json::Str(h.prev_blockhash.to_string()));
    }
    if let Some(n) = place.next {
        o.push("nextblockhash", Json::Str(n.to_string()));
    }
    o
}

/// A block's size without witness data (Core's `strippedsize`).
pub fn stripped_size(b: &Block) -> usize {
    let n = b.txdata.len();
    let varint = match n {
        0..=0xfc => 1,
        0xfd..=0xffff => 3,
        _ if n as u64 <= 0xffff_ffff => 5,
        _ => 9,
    };
    Header::SIZE + varint + b.txdata.iter().map(Transaction::base_size).sum::<usize>()
}

/// A block as `getblock` writes it: verbosity 0 is the hex of its
/// consensus encoding; 1 the header fields, sizes and the txids; 2 the
/// same with every transaction decoded.
pub fn block(b: &Block, place: &BlockPlace, verbosity: u8, network: Network) -> Json {
    if verbosity == 0 {
        return Json::Str(serialize_hex(b));
    }
    let mut o = header(&b.header, place);
    o.push("strippedsize", Json::from(stripped_size(b)));
    o.push("size", Json::from(b.total_size()));
    o.push("weight", Json::from(b.weight().to_wu()));
    let txs = b
        .txdata
        .iter()
        .map(|t| if verbosity >= 2 { tx(t, network, true) } else { Json::Str(t.compute_txid().to_string()) })
        .collect();
    o.push("tx", Json::Array(txs));
    o
}

#[cfg(test)]
mod tests {
    use super::*;
    use bitcoin::consensus::encode::deserialize_hex;

    /// Bitcoin's genesis block and its coinbase, as Core prints them.
    #[test]
    fn genesis_block_has_cores_json() {
        let params = ChainParams::mainnet();
        let g = fika_btc::chain::genesis_block(&params);
        let work = fika_btc::pow::header_work(&g.header).expect("work");
        let place = BlockPlace {
            height: 0,
            confirmations: 1,
            mediantime: g.header.time,
            chainwork: work,
            n_tx: 1,
            next: None,
        };
        let v: serde_json::Value =
            serde_json::from_str(&block(&g, &place, 2, Network::Bitcoin).to_text()).expect("JSON");
        assert_eq!(v["hash"], "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f");
        assert_eq!(v["merkleroot"], "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b");
        assert_eq!(v["versionHex"], "00000001");
        assert_eq!(v["bits"], "1d00ffff");
        assert_eq!(v["difficulty"], 1.0);
        assert_eq!(v["chainwork"], "0000000000000000000000000000000000000000000000000000000100010001");
        assert_eq!(
            (v["size"].as_u64(), v["strippedsize"].as_u64(), v["weight"].as_u64()),
            (Some(285), Some(285), Some(1140))
        );
        assert!(v.get("previousblockhash").is_none() && v.get("nextblockhash").is_none());
        let cb = &v["tx"][0];
        assert_eq!(cb["txid"], "4a5e1e4baab89f3a32518a88c31bc87f618f76673e2cc77ab2127b7afdeda33b");
        assert_eq!(cb["vin"][0]["sequence"], 4294967295u64);
        assert!(cb["vin"][0]["coinbase"].as_str().is_some_and(|c| c.starts_with("04ffff001d0104")));
        assert_eq!(cb["vout"][0]["scriptPubKey"]["type"], "pubkey");
        // Amounts are printed with eight decimals.
        assert!(block(&g, &place, 2, Network::Bitcoin).to_text().contains(r#""value":50.00000000"#));
        // Verbosity 1 lists txids; 0 is the hex that decodes to the block.
        let v1: serde_json::Value =
            serde_json::from_str(&block(&g, &place, 1, Network::Bitcoin).to_text()).expect("JSON");
        assert_eq!(v1["tx"][0], cb["txid"]);
        let Json::Str(h) = block(&g, &place, 0, Network::Bitcoin) else { panic!("hex") };
        assert_eq!(deserialize_hex::<Block>(&h).ok(), Some(g));
    }

    /// A segwit spend (BIP143's P2WPKH example, signed) decodes with Core's fields.
    #[test]
    fn segwit_transaction_has_cores_json() {
        let raw = "01000000000102fff7f7881a8099afa6940d42d1e7f6362bec38171ea3edf433541db4e4ad969f00000000494830450221008b9d1dc26ba6a9cb62127b02742fa9d754cd3bebf337f7a55d114c8e5cdd30be022040529b194ba3f9281a99f2b1c0a19c0489bc22ede944ccf4ecbab4cc618ef3ed01eeffffffef51e1b804cc89d182d279655c3aa89e815b1b309fe287d9b2b55d57b90ec68a0100000000ffffffff02202cb206000000001976a9148280b37df378db99f66f85c95a783a76ac7a6d5988ac9093510d000000001976a9143bde42dbee7e4dbe6a21b2d50ce2f0167faa815988ac000247304402203609e17b84f6a7d30c80bfa610b5b4542f32a8a0d5447a12fb1366d7f01cc44a0220573a954c4518331561406f90300e8f3358f51928d43c212a8caed02de67eebee0121025476c2e83188368da1ff3e292e7acafcdb3566bb0ad253f62fc70f07aeee635711000000";
        let t: Transaction = deserialize_hex(raw).expect("decodes");
        let v: serde_json::Value =
            serde_json::from_str(&tx(&t, Network::Bitcoin, true).to_text()).expect("JSON");
        assert_eq!(v["txid"], "e8151a2af31c368a35053ddd4bdb285a8595c769a3ad83e0fa02314a602d4609");
        assert_ne!(v["hash"], v["txid"], "wtxid differs for a segwit transaction");
        assert_eq!((v["version"].as_i64(), v["locktime"].as_u64()), (Some(1), Some(17)));
        // 233 base bytes + 110 witness bytes: weight 3·233 + 343, vsize ⌈1042 / 4⌉.
        assert_eq!(
            (v["size"].as_u64(), v["vsize"].as_u64(), v["weight"].as_u64()),
            (Some(343), Some(261), Some(1042))
        );
        assert!(v["vin"][0].get("txinwitness").is_none());
        assert_eq!(v["vin"][1]["txinwitness"].as_array().map(Vec::len), Some(2));
        assert_eq!(v["vin"][1]["txid"], "8ac60eb9575db5b2d987e29f301b5b819ea83a5c6579d282d189cc04b8e151ef");
        assert_eq!(v["vin"][1]["vout"], 1);
        assert_eq!(v["vout"][0]["value"], 1.1234);
        assert!(tx(&t, Network::Bitcoin, false).to_text().contains(r#""value":1.12340000"#));
        assert_eq!(v["vout"][1]["scriptPubKey"]["type"], "pubkeyhash");
        assert_eq!(v["vout"][1]["scriptPubKey"]["address"], "16TZ8J6Q5iZKBWizWzFAYnrsaox5Z5aBRV");
        assert_eq!(v["hex"], raw);
        assert!(tx(&t, Network::Bitcoin, false).get("hex").is_none());
    }

    #[test]
    fn difficulty_and_names_follow_core() {
        assert_eq!(difficulty(0x1d00ffff), 1.0);
        assert!((difficulty(0x207fffff) - 4.656542373906925e-10).abs() < 1e-24);
        assert_eq!(chain_name(&ChainParams::regtest_fast()), "regtest");
        assert_eq!(chain_name(&ChainParams::mainnet()), "main");
        assert_eq!(network(&ChainParams::regtest_fast()), Network::Regtest);
    }
}
