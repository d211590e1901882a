//! Building layouts: light wallets attach to servers, well-connected groups
//! get their extra links, and everything follows the seed.

use fika_scenario::{layout, load_str};

const TEXT: &str = r#"
duration = "1h"
protocol = "bitcoin"
seed = 3
[topology]
kind = "random"
degree = "bitcoin-2015"
[[nodes]]
role = "miner"
count = 5
name = "pool"
extra_links = 30
[[nodes]]
role = "full"
count = 200
name = "node"
[[nodes]]
role = "wallet"
count = 40
name = "w"
servers = 3
[bitcoin]
preset = "regtest-fast"
"#;

#[test]
fn wallets_attach_to_servers_and_pools_are_well_connected() {
    let s = load_str(TEXT, "t").expect("valid");
    let l = layout(&s).expect("layout");
    let adj = l.graph.adjacency();
    let is_wallet = |i: usize| l.names[i].starts_with('w');
    for (i, peers) in adj.iter().enumerate() {
        if is_wallet(i) {
            assert_eq!(peers.len(), 3, "{} has its three servers", l.names[i]);
            assert!(peers.iter().all(|p| !is_wallet(*p as usize)), "wallets link only to full nodes");
        }
    }
    let mean_full: f64 =
        (5..205).map(|i| adj[i].iter().filter(|p| !is_wallet(**p as usize)).count() as f64).sum::<f64>()
            / 200.0;
    for i in 0..5 {
        let relay_degree = adj[i].iter().filter(|p| !is_wallet(**p as usize)).count() as f64;
        assert!(
            relay_degree >= 30.0 && relay_degree > 2.0 * mean_full,
            "pool {i}: {relay_degree} vs {mean_full}"
        );
    }
    let again = layout(&s).expect("layout");
    assert_eq!(again.graph.edges, l.graph.edges, "same seed, same graph");
}
