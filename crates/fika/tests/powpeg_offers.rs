//! A PowPeg network gives the same trace whether or not its Bitcoin nodes
//! and pools take block announcements when they are sent (`Node::absorb`):
//! taking one early is only a shortcut, never a change.

use fika_core::testing::Unoffered;
use fika_core::{Event, Node, NodeId, SimTime, derive_rng};
use fika_peg::network::{PegMsg, PegNode};
use fika_sim::{Net, SimStats, Simulation};

type Events = Vec<(SimTime, Option<NodeId>, Event)>;

/// Runs the bundled scenario `name` with its nodes wrapped by `wrap`.
#[track_caller]
fn run<N: Node<Msg = PegMsg>>(name: &str, wrap: fn(PegNode) -> N) -> (Events, SimStats) {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../scenarios").join(name);
    let s = fika_scenario::load_file(&path).expect("a valid scenario");
    let layout = fika_scenario::layout(&s).expect("layout");
    let built = fika::powpeg::build(&s, &layout).expect("a PowPeg network");
    let net = Net::new(
        &layout.graph.adjacency(),
        layout.region.clone(),
        s.network.model.clone(),
        derive_rng(s.seed, "net", 0),
    );
    let nodes: Vec<N> = built.nodes.into_iter().map(wrap).collect();
    let mut sim = Simulation::new(s.seed, nodes, net, layout.faults.clone(), Events::new());
    sim.run_until(SimTime::ZERO + s.duration, &mut |_| {});
    let (_, events, stats) = sim.into_parts();
    (events, stats)
}

#[test]
fn announcements_taken_when_sent_change_no_peg_run() {
    // The full cycle: pools, Bitcoin nodes, pegnatories and users.
    let name = "tests/powpeg-cycle.toml";
    let (events, stats) = run(name, |n| n);
    let (plain_events, plain_stats) = run(name, Unoffered);
    assert!(stats.resolved_at_send > 1_000, "some announcements are taken when sent: {stats:?}");
    assert_eq!(plain_stats.resolved_at_send, 0);
    assert_eq!(events.len(), plain_events.len());
    assert!(events == plain_events, "the traces differ");
    let counters = |s: &SimStats| SimStats { resolved_at_send: 0, ..s.clone() };
    assert_eq!(counters(&stats), counters(&plain_stats));
}
