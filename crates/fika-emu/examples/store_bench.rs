//! Cost of a node's durable store: mines `N` blocks (default 500) on
//! server1 of the thesis demo, every block committed through its store in a
//! temporary data directory, then restores a fresh node from it.
//!
//! ```sh
//! cargo run --release -p fika-emu --example store_bench -- 500
//! ```
//!
//! Prints microseconds per block commit (mean and max), the database file's
//! size, and the time to reopen, replay and verify the store.

use std::path::Path;
use std::time::{Duration, Instant};

use fika_core::{Node, NodeId};
use fika_emu::durable::DurableNode;
use fika_emu::store::{Identity, Store};

use fika_btc::msg::BtcMsg;
use fika_core::testing::TestContext;

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args().nth(1).map(|a| a.parse()).transpose()?.unwrap_or(500);
    let scenario = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios/thesis-demo.toml");
    let s = fika_scenario::load_file(&scenario)?;
    let layout = fika_scenario::layout(&s)?;
    let dir = std::env::temp_dir().join(format!("fika-store-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);

    let (node, db) = fika_emu::build_btc_node_with_db(&s, &layout, NodeId(0))?;
    let id = Identity::of(&node, &s.name, "server1", s.seed, db.borrow().rec(0).data.hash);
    let (store, _) = Store::open(&dir, &id, &node)?;
    let mut d = DurableNode::new(node, store, None, None);
    let mut cx = TestContext::<BtcMsg>::new(0, &[]);
    cx.rng = fika_core::derive_rng(s.seed, "node", 0);
    let t0 = Instant::now();
    for _ in 0..n {
        cx.now += Duration::from_secs(10);
        cx.timers.clear();
        cx.events.clear();
        // The full node's mining timer.
        d.on_timer(&mut cx, 1);
    }
    let wall = t0.elapsed();
    let st = d.stats();
    drop(d);
    let per_block = st.block_commit_micros.checked_div(st.block_commits).unwrap_or(0);
    println!(
        "{} blocks in {:.2} s: {per_block} µs per block commit (max {} µs), file {} KiB",
        st.blocks,
        wall.as_secs_f64(),
        st.max_commit_micros,
        st.file_bytes / 1024
    );

    let (mut node, _) = fika_emu::build_btc_node_with_db(&s, &layout, NodeId(0))?;
    let t0 = Instant::now();
    let (mut store, _) = Store::open(&dir, &id, &node)?;
    let r = store.restore(&mut node)?;
    println!(
        "reopened at height {} in {:.1} ms (replay and UTXO check {:.1} ms)",
        r.height,
        t0.elapsed().as_secs_f64() * 1e3,
        r.micros as f64 / 1e3
    );
    drop(store);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
