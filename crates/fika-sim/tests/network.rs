//! Engine scenarios with a probe node: transfer times, upload queueing,
//! partitions, crashes, loss and timer cancellation.

use std::time::Duration;

use fika_core::{Context, Event, Message, Node, NodeId, SimTime, TimerId, TimerKey};
use fika_sim::net::pareto_ms;
use fika_sim::{BandwidthModel, Fault, FaultAction, LatencyModel, Net, NetworkModel, Simulation};

#[derive(Clone, Debug)]
struct Blob(u32);

impl Message for Blob {
    fn wire_size(&self) -> u32 {
        self.0
    }
    fn kind(&self) -> &'static str {
        "blob"
    }
}

/// Sends a scripted list of messages at start and at timers; records arrivals.
#[derive(Default)]
struct Probe {
    /// (timer delay, destination, size) to send.
    script: Vec<(Duration, NodeId, u32)>,
    /// Timers to set at start and cancel right away.
    cancelled: Vec<Duration>,
    arrivals: Vec<(SimTime, NodeId, u32)>,
    fired: Vec<TimerId>,
    starts: u32,
}

impl Node for Probe {
    type Msg = Blob;
    fn on_start(&mut self, cx: &mut dyn Context<Blob>) {
        self.starts += 1;
        for (i, (after, _, _)) in self.script.iter().enumerate() {
            cx.set_timer(*after, i as TimerId);
        }
        let keys: Vec<TimerKey> = self.cancelled.iter().map(|d| cx.set_timer(*d, 1000)).collect();
        for k in keys {
            cx.cancel_timer(k);
        }
    }
    fn on_message(&mut self, cx: &mut dyn Context<Blob>, from: NodeId, msg: Blob) {
        self.arrivals.push((cx.now(), from, msg.0));
        cx.emit(Event::new("probe.got").with("from", from.0).with("size", msg.0));
    }
    fn on_timer(&mut self, cx: &mut dyn Context<Blob>, timer: TimerId) {
        self.fired.push(timer);
        if let Some((_, to, size)) = self.script.get(timer as usize) {
            cx.send(*to, Blob(*size));
        }
    }
}

fn model(latency_ms: f64, bps: Option<u64>) -> NetworkModel {
    NetworkModel {
        latency: LatencyModel::Constant { ms: latency_ms },
        bandwidth: match bps {
            Some(b) => BandwidthModel::Uniform { upload_bps: b, download_bps: b },
            None => BandwidthModel::Unlimited,
        },
        ..NetworkModel::default()
    }
}

#[track_caller]
fn sim(
    nodes: Vec<Probe>,
    links: &[(u32, u32)],
    m: NetworkModel,
    faults: Vec<Fault>,
) -> Simulation<Probe, Vec<(SimTime, Option<NodeId>, Event)>> {
    let mut adj = vec![Vec::new(); nodes.len()];
    for (a, b) in links {
        adj[*a as usize].push(*b);
        adj[*b as usize].push(*a);
    }
    let net = Net::new(&adj, Vec::new(), m, fika_core::derive_rng(1, "net", 0));
    Simulation::new(1, nodes, net, faults, Vec::new())
}

fn send_at(after_ms: u64, to: u32, size: u32) -> (Duration, NodeId, u32) {
    (Duration::from_millis(after_ms), NodeId(to), size)
}

#[test]
fn one_megabyte_over_8_mbit_with_100_ms_arrives_after_1_1_s() {
    let a = Probe { script: vec![send_at(0, 1, 1_000_000)], ..Probe::default() };
    let mut s = sim(vec![a, Probe::default()], &[(0, 1)], model(100.0, Some(8_000_000)), vec![]);
    s.run_until(SimTime::from_secs(10), &mut |_| {});
    let got = &s.nodes()[1].arrivals;
    assert_eq!(got.len(), 1);
    // 8,000,000 bits at 8 Mbit/s = 1 s on the wire, then 100 ms of latency.
    assert_eq!(got[0].0, SimTime::from_millis(1100));
}

#[test]
fn one_upload_at_a_time_queues_the_second_message() {
    let a = Probe { script: vec![send_at(0, 1, 1_000_000), send_at(0, 2, 1_000_000)], ..Probe::default() };
    let nodes = vec![a, Probe::default(), Probe::default()];
    let mut s = sim(nodes, &[(0, 1), (0, 2)], model(100.0, Some(8_000_000)), vec![]);
    s.run_until(SimTime::from_secs(10), &mut |_| {});
    assert_eq!(s.nodes()[1].arrivals[0].0, SimTime::from_millis(1100));
    assert_eq!(s.nodes()[2].arrivals[0].0, SimTime::from_millis(2100), "waits for the first upload");
}

#[test]
fn bandwidth_is_the_minimum_of_upload_and_download() {
    let a = Probe { script: vec![send_at(0, 1, 1_000_000)], ..Probe::default() };
    let mut m = model(0.0, None);
    m.bandwidth = BandwidthModel::Uniform { upload_bps: 16_000_000, download_bps: 4_000_000 };
    let mut s = sim(vec![a, Probe::default()], &[(0, 1)], m, vec![]);
    s.run_until(SimTime::from_secs(10), &mut |_| {});
    assert_eq!(s.nodes()[1].arrivals[0].0, SimTime::from_secs(2));
}

#[test]
fn a_partitioned_node_receives_nothing_until_healed() {
    // Node 0 sends to node 1 every second for 10 s; 1 is cut off from 3 s to 6 s.
    let script = (0..10).map(|i| send_at(i * 1000, 1, 100)).collect();
    let a = Probe { script, ..Probe::default() };
    let faults = vec![
        Fault { at: SimTime::from_secs(3), action: FaultAction::Partition(vec![vec![NodeId(1)]]) },
        Fault { at: SimTime::from_secs(6), action: FaultAction::Heal },
    ];
    let mut s = sim(vec![a, Probe::default()], &[(0, 1)], model(10.0, None), faults);
    s.run_until(SimTime::from_secs(20), &mut |_| {});
    let times: Vec<u64> = s.nodes()[1].arrivals.iter().map(|(t, _, _)| t.as_millis()).collect();
    assert_eq!(times, vec![10, 1010, 2010, 6010, 7010, 8010, 9010]);
    assert_eq!(s.stats().dropped_partition, 3);
    let kinds: Vec<&str> = s.sink().iter().filter(|(_, n, _)| n.is_none()).map(|(_, _, e)| e.kind).collect();
    assert_eq!(kinds, vec!["sim.partition", "sim.heal"]);
}

#[test]
fn a_message_in_flight_when_a_partition_starts_is_lost() {
    let a = Probe { script: vec![send_at(0, 1, 100)], ..Probe::default() };
    let faults =
        vec![Fault { at: SimTime::from_millis(50), action: FaultAction::Partition(vec![vec![NodeId(0)]]) }];
    let mut s = sim(vec![a, Probe::default()], &[(0, 1)], model(100.0, None), faults);
    s.run_until(SimTime::from_secs(1), &mut |_| {});
    assert!(s.nodes()[1].arrivals.is_empty());
}

#[test]
fn a_crashed_node_misses_messages_and_timers_then_restarts() {
    let script = (0..6).map(|i| send_at(i * 1000, 1, 100)).collect();
    let a = Probe { script, ..Probe::default() };
    // Node 1 has a timer at 2.5 s that must not fire (it is down then).
    let b = Probe { script: vec![send_at(2500, 0, 1)], ..Probe::default() };
    let faults = vec![
        Fault { at: SimTime::from_millis(1500), action: FaultAction::Crash(NodeId(1)) },
        Fault { at: SimTime::from_millis(3500), action: FaultAction::Restart(NodeId(1)) },
    ];
    let mut s = sim(vec![a, b], &[(0, 1)], model(10.0, None), faults);
    s.run_until(SimTime::from_secs(10), &mut |_| {});
    let n1 = &s.nodes()[1];
    let times: Vec<u64> = n1.arrivals.iter().map(|(t, _, _)| t.as_millis()).collect();
    assert_eq!(times, vec![10, 1010, 4010, 5010]);
    assert_eq!(n1.starts, 2, "restart runs on_start again");
    // The old timer died with the crash; the one set at restart (3.5 + 2.5 s) fired.
    assert_eq!(n1.fired, vec![0]);
    assert_eq!(s.nodes()[0].arrivals.iter().map(|(t, _, _)| t.as_millis()).collect::<Vec<_>>(), vec![6010]);
}

#[test]
fn full_loss_drops_everything_and_messages_to_non_peers_are_refused() {
    let a = Probe { script: vec![send_at(0, 1, 10), send_at(0, 2, 10)], ..Probe::default() };
    let mut m = model(1.0, None);
    m.loss = 1.0;
    let mut s = sim(vec![a, Probe::default(), Probe::default()], &[(0, 1)], m, vec![]);
    s.run_until(SimTime::from_secs(1), &mut |_| {});
    assert!(s.nodes()[1].arrivals.is_empty());
    assert!(s.nodes()[2].arrivals.is_empty());
    assert_eq!(s.stats().dropped_loss, 1);
    assert_eq!(s.stats().dropped_unlinked, 1);
}

#[test]
fn a_link_fault_changes_latency_for_that_link_only() {
    let a = Probe {
        script: vec![send_at(0, 1, 10), send_at(0, 2, 10), send_at(2000, 1, 10)],
        ..Probe::default()
    };
    let faults = vec![Fault {
        at: SimTime::from_secs(1),
        action: FaultAction::SetLink { a: NodeId(1), b: NodeId(0), latency_ms: Some(500.0), loss: None },
    }];
    let mut s =
        sim(vec![a, Probe::default(), Probe::default()], &[(0, 1), (0, 2)], model(10.0, None), faults);
    s.run_until(SimTime::from_secs(5), &mut |_| {});
    let t1: Vec<u64> = s.nodes()[1].arrivals.iter().map(|(t, _, _)| t.as_millis()).collect();
    assert_eq!(t1, vec![10, 2500]);
    assert_eq!(s.nodes()[2].arrivals[0].0, SimTime::from_millis(10));
}

#[test]
fn cancelled_timers_never_fire() {
    let a = Probe { cancelled: vec![Duration::from_secs(1), Duration::from_secs(2)], ..Probe::default() };
    let mut s = sim(vec![a], &[], model(1.0, None), vec![]);
    s.run_until(SimTime::from_secs(5), &mut |_| {});
    assert!(s.nodes()[0].fired.is_empty());
}

#[test]
fn simblock_pareto_draw_has_the_table_mean() {
    let mut rng = fika_core::derive_rng(3, "t", 0);
    let n = 400_000;
    for mean in [32.0, 124.0, 325.0] {
        let draws: Vec<f64> = (0..n).map(|_| pareto_ms(&mut rng, mean, 5.0)).collect();
        let avg = draws.iter().sum::<f64>() / n as f64;
        let min = draws.iter().cloned().fold(f64::INFINITY, f64::min);
        assert!((avg - mean).abs() / mean < 0.02, "mean {mean}: got {avg}");
        assert!(min >= mean - 5.0, "minimum is mean − 5 ms");
        // The whole law, not just its mean: Kolmogorov–Smirnov against the
        // Pareto CDF 1 − (scale / x)^shape (1 % critical value 0.0026).
        let (shape, scale) = (mean / 5.0, mean - 5.0);
        let mut sorted = draws;
        sorted.sort_by(f64::total_cmp);
        let d = sorted
            .iter()
            .enumerate()
            .map(|(i, x)| {
                let f = 1.0 - (scale / x).powf(shape);
                (f - i as f64 / n as f64).abs().max((f - (i + 1) as f64 / n as f64).abs())
            })
            .fold(0.0, f64::max);
        assert!(d < 0.0026, "mean {mean}: KS distance {d}");
    }
}
