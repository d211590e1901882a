//! Network namespaces: the thesis's jails and epairs, on Linux.
//!
//! With `fika emulate --netns` every node process lives in its own network
//! namespace (`ip netns`), and every link of the topology is a veth pair
//! whose ends sit in the two nodes' namespaces — a virtual cable, as the
//! thesis's FreeBSD `epair` is. Each link is its own /30 subnet of
//! 10.0.0.0/8 (link `k`: the lower node id gets `10.0.0.0 + 4k + 1`, the
//! other `+ 2`), so a node reaches a peer at the peer's address on their
//! shared cable and nowhere else. Each end's egress gets a `tc netem` queue
//! shaped by the scenario's network model for that direction (see
//! [`LinkShape::of`]): the link's one-way delay, its jitter, its loss and,
//! with a bandwidth model, a rate.
//!
//! [`NetnsPlan`] is the pure part — names, addresses, shapes and the exact
//! `ip` / `tc` command lines — so it is tested without privileges.
//! [`Netns::create`] runs the commands (root only) and deletes every
//! namespace it made when dropped; deleting a namespace destroys the veth
//! ends inside it, so nothing is left behind. Namespaces are named
//! `fika<pid>n<node>`, with the orchestrator's process id: [`sweep_stale`]
//! removes those of orchestrators no longer alive (killed with SIGKILL, say).

use std::net::Ipv4Addr;
use std::path::Path;
use std::process::Command;

use fika_sim::{BandwidthModel, LatencyModel, NetworkModel};

use crate::EmuError;

/// The shape of one direction of a link, as `tc netem` applies it.
#[derive(Clone, Debug, PartialEq)]
pub struct LinkShape {
    /// Mean one-way delay, milliseconds.
    pub delay_ms: f64,
    /// Jitter around the mean (netem's uniform spread), milliseconds.
    pub jitter_ms: f64,
    /// Loss probability, percent.
    pub loss_pct: f64,
    /// Rate limit, bits per second (none: unlimited).
    pub rate_bps: Option<u64>,
}

impl LinkShape {
    /// The shape of messages from `from` to `to` under `model`, whose nodes
    /// lie in `region` (by node id).
    ///
    /// Delay: the latency model's mean plus the fixed extra latency and the
    /// receiver's processing time (which the simulator adds per message).
    /// Constant latency has no jitter; uniform becomes its midpoint ± half
    /// its width; SimBlock's Pareto draw (and the region model with a
    /// spread) becomes its mean ± the spread — netem's jitter is uniform, so
    /// the long tail of the Pareto draw is not reproduced, only its centre
    /// and width. Rate: the sender's upload bandwidth, per link (the
    /// simulator shares one upload among all of a node's links; netem
    /// shapes each cable on its own).
    pub fn of(model: &NetworkModel, region: &[u8], from: u32, to: u32) -> LinkShape {
        let r = |n: u32| region.get(n as usize).copied().unwrap_or(0) as usize;
        let region_mean = || {
            model
                .regions
                .as_ref()
                .and_then(|t| t.latency_ms.get(r(from)).and_then(|row| row.get(r(to))).copied())
                .unwrap_or(0.0)
        };
        let (mean, jitter) = match &model.latency {
            LatencyModel::Constant { ms } => (*ms, 0.0),
            LatencyModel::Uniform { min_ms, max_ms } => ((min_ms + max_ms) / 2.0, (max_ms - min_ms) / 2.0),
            LatencyModel::Pareto { mean_ms, spread_ms } => (*mean_ms, *spread_ms),
            LatencyModel::Regions { spread_ms } => (region_mean(), *spread_ms),
        };
        let rate_bps = match &model.bandwidth {
            BandwidthModel::Unlimited => None,
            BandwidthModel::Uniform { upload_bps, .. } => Some(*upload_bps),
            BandwidthModel::Regions => {
                model.regions.as_ref().and_then(|t| t.upload_bps.get(r(from)).copied())
            }
        };
        LinkShape {
            delay_ms: mean + model.extra_latency_ms + model.processing_ms,
            jitter_ms: jitter.min(mean.max(0.0)),
            loss_pct: model.loss * 100.0,
            rate_bps: rate_bps.filter(|b| *b > 0),
        }
    }

    /// netem's arguments for this shape (after `netem`).
    pub fn netem_args(&self) -> Vec<String> {
        let mut a = vec!["delay".to_string(), format!("{:.3}ms", self.delay_ms.max(0.0))];
        if self.jitter_ms > 0.0 {
            a.push(format!("{:.3}ms", self.jitter_ms));
        }
        if self.loss_pct > 0.0 {
            a.extend(["loss".to_string(), format!("{:.4}%", self.loss_pct)]);
        }
        if let Some(bps) = self.rate_bps {
            a.extend(["rate".to_string(), format!("{bps}bit")]);
        }
        // Room for a burst of full-size frames at any delay.
        a.extend(["limit".to_string(), "100000".to_string()]);
        a
    }
}

/// One link of the plan.
#[derive(Clone, Debug, PartialEq)]
pub struct PlannedLink {
    /// The lower node id.
    pub a: u32,
    /// The higher node id.
    pub b: u32,
    /// Shape of a → b (on a's end).
    pub a_to_b: LinkShape,
    /// Shape of b → a (on b's end).
    pub b_to_a: LinkShape,
}

/// Namespaces, cables, addresses and shapes for one emulation.
#[derive(Clone, Debug, PartialEq)]
pub struct NetnsPlan {
    /// Namespace name prefix (`fika<pid>`).
    pub prefix: String,
    /// Number of nodes.
    pub nodes: usize,
    /// Every link, in order (link `k` is `links[k]`).
    pub links: Vec<PlannedLink>,
    /// Whether to shape the cables with netem (off: plain veth pairs, for
    /// kernels without `sch_netem`).
    pub shape: bool,
}

/// Most links one plan addresses (/30 subnets of 10.0.0.0/8).
pub const MAX_LINKS: usize = 1 << 22;

impl NetnsPlan {
    /// The plan for nodes whose peers are `adjacency` (symmetric, by id),
    /// in `region`, under `model`; namespaces named `<prefix>n<id>`.
    pub fn new(
        prefix: &str,
        adjacency: &[Vec<u32>],
        region: &[u8],
        model: &NetworkModel,
    ) -> Result<NetnsPlan, EmuError> {
        let mut links = Vec::new();
        for (a, peers) in adjacency.iter().enumerate() {
            let a = a as u32;
            let mut ps: Vec<u32> = peers.iter().copied().filter(|b| *b > a).collect();
            ps.sort_unstable();
            ps.dedup();
            for b in ps {
                links.push(PlannedLink {
                    a,
                    b,
                    a_to_b: LinkShape::of(model, region, a, b),
                    b_to_a: LinkShape::of(model, region, b, a),
                });
            }
        }
        if links.len() > MAX_LINKS {
            return Err(EmuError::BadValue {
                field: "topology",
                value: format!("{} links", links.len()),
                expected: "at most 4,194,304 links for --netns (one /30 of 10.0.0.0/8 each)",
            });
        }
        Ok(NetnsPlan { prefix: prefix.to_string(), nodes: adjacency.len(), links, shape: true })
    }

    /// Node `id`'s namespace.
    pub fn namespace(&self, id: u32) -> String {
        format!("{}n{id}", self.prefix)
    }

    /// The name, inside a node's namespace, of its cable to `peer`.
    pub fn interface(peer: u32) -> String {
        format!("fk{peer}")
    }

    /// The address of `side` (0 = lower id, 1 = higher) on link `k`.
    pub fn address(k: usize, side: u8) -> Ipv4Addr {
        let base = u32::from(Ipv4Addr::new(10, 0, 0, 0)) + 4 * k as u32;
        Ipv4Addr::from(base + 1 + u32::from(side))
    }

    /// The address at which `me` reaches `peer` (the peer's end of their
    /// cable), if they are linked.
    pub fn peer_address(&self, me: u32, peer: u32) -> Option<Ipv4Addr> {
        let (a, b) = if me < peer { (me, peer) } else { (peer, me) };
        let k = self.links.binary_search_by(|l| (l.a, l.b).cmp(&(a, b))).ok()?;
        Some(Self::address(k, u8::from(peer == b)))
    }

    /// Every command that builds the plan, in order (`ip …` / `tc …`).
    pub fn commands(&self) -> Vec<Vec<String>> {
        let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
        let mut cmds = Vec::new();
        for i in 0..self.nodes as u32 {
            let ns = self.namespace(i);
            cmds.push(s(&["ip", "netns", "add", &ns]));
            cmds.push(s(&["ip", "-n", &ns, "link", "set", "lo", "up"]));
        }
        for (k, l) in self.links.iter().enumerate() {
            let (na, nb) = (self.namespace(l.a), self.namespace(l.b));
            let (ia, ib) = (Self::interface(l.b), Self::interface(l.a));
            cmds.push(s(&[
                "ip", "link", "add", &ia, "netns", &na, "type", "veth", "peer", "name", &ib, "netns", &nb,
            ]));
            for (ns, iface, side, shape) in [(&na, &ia, 0u8, &l.a_to_b), (&nb, &ib, 1u8, &l.b_to_a)] {
                let addr = format!("{}/30", Self::address(k, side));
                cmds.push(s(&["ip", "-n", ns, "addr", "add", &addr, "dev", iface]));
                cmds.push(s(&["ip", "-n", ns, "link", "set", iface, "up"]));
                if !self.shape {
                    continue;
                }
                let mut tc = s(&["tc", "-n", ns, "qdisc", "add", "dev", iface, "root", "netem"]);
                tc.extend(shape.netem_args());
                cmds.push(tc);
            }
        }
        cmds
    }
}

/// Why `--netns` cannot be used here, if it cannot: not root, no
/// iproute2, or no permission to create a namespace (tried).
pub fn check_privileges() -> Result<(), EmuError> {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let euid = status
        .lines()
        .find_map(|l| l.strip_prefix("Uid:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u32>().ok());
    if euid != Some(0) {
        return Err(EmuError::Netns {
            step: "check privileges".into(),
            reason: "--netns needs root (network namespaces, veth pairs and tc netem)".into(),
        });
    }
    for tool in ["ip", "tc"] {
        let ok = Command::new(tool).arg("-V").output().is_ok_and(|o| o.status.success());
        if !ok {
            return Err(EmuError::Netns {
                step: format!("find `{tool}`"),
                reason: format!("`{tool}` (iproute2) is not installed; scripts/setup-debian.sh installs it"),
            });
        }
    }
    // Root in a container may still lack the capability: try one.
    let probe = format!("fika{}probe", std::process::id());
    let made = run(&["ip".into(), "netns".into(), "add".into(), probe.clone()]);
    let _ = run(&["ip".into(), "netns".into(), "del".into(), probe]);
    made.map_err(|e| EmuError::Netns {
        step: "create a network namespace".into(),
        reason: format!("not permitted here ({e})"),
    })
}

fn run(cmd: &[String]) -> Result<(), EmuError> {
    let (prog, args) = cmd
        .split_first()
        .ok_or_else(|| EmuError::Netns { step: "run a command".into(), reason: "empty command".into() })?;
    let out = Command::new(prog)
        .args(args)
        .output()
        .map_err(|e| EmuError::Netns { step: cmd.join(" "), reason: e.to_string() })?;
    if out.status.success() {
        Ok(())
    } else {
        Err(EmuError::Netns {
            step: cmd.join(" "),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }
}

/// Whether this kernel has netem (`sch_netem`): tries it in a scratch
/// namespace. Root only; `false` otherwise.
pub fn netem_available() -> bool {
    let ns = format!("fika{}probe", std::process::id());
    let s = |v: &[&str]| v.iter().map(|x| x.to_string()).collect::<Vec<_>>();
    let ok = run(&s(&["ip", "netns", "add", &ns])).is_ok()
        && run(&s(&["tc", "-n", &ns, "qdisc", "add", "dev", "lo", "root", "netem", "delay", "1ms"])).is_ok();
    let _ = run(&s(&["ip", "netns", "del", &ns]));
    ok
}

/// The namespaces of one emulation, deleted (with their cables) on drop.
#[derive(Debug)]
pub struct Netns {
    made: Vec<String>,
}

impl Netns {
    /// Builds `plan` (root only). On failure, whatever was made is removed
    /// again and the error names the command that failed.
    pub fn create(plan: &NetnsPlan) -> Result<Netns, EmuError> {
        let mut me = Netns { made: Vec::new() };
        for cmd in plan.commands() {
            run(&cmd)?;
            if cmd.len() == 4 && cmd[1] == "netns" && cmd[2] == "add" {
                me.made.push(cmd[3].clone());
            }
        }
        Ok(me)
    }

    /// The namespaces made, by node id.
    pub fn namespaces(&self) -> &[String] {
        &self.made
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        for ns in self.made.drain(..).rev() {
            let _ = Command::new("ip").args(["netns", "del", &ns]).output();
        }
    }
}

/// Deletes namespaces named `fika<pid>n…` whose orchestrator `pid` is no
/// longer alive (left by an orchestrator killed with SIGKILL). Returns how
/// many were removed.
pub fn sweep_stale() -> usize {
    let Ok(dir) = std::fs::read_dir("/run/netns") else { return 0 };
    let mut names: Vec<String> = dir.flatten().filter_map(|e| e.file_name().into_string().ok()).collect();
    names.sort();
    let mut removed = 0;
    for name in names {
        let Some(pid) = name.strip_prefix("fika").and_then(|r| r.split('n').next()) else { continue };
        if pid.is_empty() || !pid.bytes().all(|b| b.is_ascii_digit()) {
            continue;
        }
        if !Path::new("/proc").join(pid).exists()
            && Command::new("ip").args(["netns", "del", &name]).output().is_ok_and(|o| o.status.success())
        {
            removed += 1;
        }
    }
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring3() -> Vec<Vec<u32>> {
        vec![vec![1, 2], vec![0, 2], vec![1, 0]]
    }

    #[test]
    fn constant_latency_has_no_jitter_and_adds_the_fixed_parts() {
        let model = NetworkModel {
            latency: LatencyModel::Constant { ms: 40.0 },
            extra_latency_ms: 10.0,
            processing_ms: 2.0,
            loss: 0.01,
            ..NetworkModel::default()
        };
        let s = LinkShape::of(&model, &[], 0, 1);
        assert_eq!(s, LinkShape { delay_ms: 52.0, jitter_ms: 0.0, loss_pct: 1.0, rate_bps: None });
        assert_eq!(s.netem_args(), ["delay", "52.000ms", "loss", "1.0000%", "limit", "100000"]);
    }

    #[test]
    fn uniform_and_region_models_give_per_direction_shapes() {
        let uniform = NetworkModel {
            latency: LatencyModel::Uniform { min_ms: 10.0, max_ms: 30.0 },
            bandwidth: BandwidthModel::Uniform { upload_bps: 8_000_000, download_bps: 8_000_000 },
            ..NetworkModel::default()
        };
        let s = LinkShape::of(&uniform, &[], 0, 1);
        assert_eq!((s.delay_ms, s.jitter_ms, s.rate_bps), (20.0, 10.0, Some(8_000_000)));
        assert_eq!(&s.netem_args()[..5], ["delay", "20.000ms", "10.000ms", "rate", "8000000bit"]);

        let table = fika_sim::regions::RegionTable::preset("simblock-2019").expect("preset");
        let regional = NetworkModel {
            latency: LatencyModel::Regions { spread_ms: 0.0 },
            bandwidth: BandwidthModel::Regions,
            regions: Some(table.clone()),
            ..NetworkModel::default()
        };
        let region = [0u8, 3];
        let ab = LinkShape::of(&regional, &region, 0, 1);
        let ba = LinkShape::of(&regional, &region, 1, 0);
        assert_eq!(ab.delay_ms, table.latency_ms[0][3]);
        assert_eq!(ba.delay_ms, table.latency_ms[3][0]);
        assert_eq!(ab.rate_bps, Some(table.upload_bps[0]));
        assert_eq!(ba.rate_bps, Some(table.upload_bps[3]));
    }

    #[test]
    fn every_link_is_its_own_subnet_and_peers_meet_on_it() {
        let plan = NetnsPlan::new("fika42", &ring3(), &[], &NetworkModel::default()).expect("plan");
        assert_eq!(plan.links.iter().map(|l| (l.a, l.b)).collect::<Vec<_>>(), [(0, 1), (0, 2), (1, 2)]);
        // Link 2 is 1–2: 10.0.0.9 and 10.0.0.10.
        assert_eq!(plan.peer_address(1, 2), Some(Ipv4Addr::new(10, 0, 0, 10)));
        assert_eq!(plan.peer_address(2, 1), Some(Ipv4Addr::new(10, 0, 0, 9)));
        assert_eq!(plan.peer_address(0, 1), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(plan.peer_address(0, 0), None);
        let far = NetnsPlan::address(1 << 20, 1);
        assert_eq!(far, Ipv4Addr::new(10, 64, 0, 2));
    }

    #[test]
    fn commands_make_namespaces_then_cables_with_addresses_and_netem() {
        let plan = NetnsPlan::new("fika7", &ring3(), &[], &NetworkModel::default()).expect("plan");
        let cmds: Vec<String> = plan.commands().iter().map(|c| c.join(" ")).collect();
        assert_eq!(cmds[0], "ip netns add fika7n0");
        assert_eq!(cmds[1], "ip -n fika7n0 link set lo up");
        assert!(
            cmds.contains(&"ip link add fk1 netns fika7n0 type veth peer name fk0 netns fika7n1".to_string())
        );
        assert!(cmds.contains(&"ip -n fika7n1 addr add 10.0.0.2/30 dev fk0".to_string()));
        assert!(
            cmds.contains(
                &"tc -n fika7n2 qdisc add dev fk1 root netem delay 50.000ms limit 100000".to_string()
            )
        );
        // 3 nodes × 2 + 3 links × (1 + 2 × 3).
        assert_eq!(cmds.len(), 6 + 3 * 7);
        let plain = NetnsPlan { shape: false, ..plan };
        let cmds: Vec<String> = plain.commands().iter().map(|c| c.join(" ")).collect();
        assert_eq!(cmds.len(), 6 + 3 * 5);
        assert!(cmds.iter().all(|c| !c.starts_with("tc ")));
    }
}
