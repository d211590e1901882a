//! Parameter sweeps: run a scenario over a grid of parameter values (the
//! cartesian product of every `--param`) × K seeds, in parallel on std
//! threads, and aggregate each numeric metric of the runs per grid point.
//!
//! A parameter is a dotted path into the *resolved* scenario (what
//! `scenario.resolved.toml` shows): `bitcoin.params.block_interval_secs`,
//! `nodes[1].hashrate`, `network.model.loss`. The scenario is serialized,
//! the value set at the path (the last key may be new: the loader then
//! checks it like any field), and the text validated again with
//! [`fika_scenario::load_str`], so a bad path or value is reported before
//! anything runs. Values are parsed as JSON when they can be (numbers,
//! booleans, `"strings"`, `[arrays]`), else taken as strings (`10m`,
//! `selfish`).
//!
//! Seeds: run `k` of a grid point uses the scenario's seed + `k`, the same
//! at every grid point (common random numbers across the grid).
//!
//! Aggregates per grid point and metric, over the runs that produced the
//! metric (`n`): the mean, the sample standard deviation (n − 1), and a 95 %
//! confidence interval for the mean, `mean ± t(0.975, n − 1) · sd / √n`
//! with Student's t (exact table to 30 degrees of freedom, then 1.96).
//!
//! Every run builds its nodes inside its own thread (nodes hold `Rc`s);
//! only the scenario, which is plain data, crosses threads.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use fika_scenario::Scenario;
use serde_json::Value as Json;

use crate::{RunOptions, RunReport};

/// One swept parameter: a path and its values.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    /// Dotted path into the resolved scenario.
    pub path: String,
    /// The values, as written.
    pub values: Vec<String>,
}

/// Parses `path=v1,v2,...`.
pub fn parse_param(s: &str) -> Result<Param, String> {
    let (path, vals) = s.split_once('=').ok_or_else(|| format!("--param {s}: expected PATH=V1,V2,..."))?;
    let path = path.trim();
    if path.is_empty() {
        return Err(format!("--param {s}: empty path"));
    }
    let values: Vec<String> = vals.split(',').map(|v| v.trim().to_owned()).collect();
    if values.iter().any(String::is_empty) {
        return Err(format!("--param {s}: empty value"));
    }
    Ok(Param { path: path.to_owned(), values })
}

enum Seg {
    Key(String),
    Index(usize),
}

fn segments(path: &str) -> Result<Vec<Seg>, String> {
    let mut out = Vec::new();
    for part in path.split('.') {
        let (key, mut rest) = match part.find('[') {
            Some(i) => (&part[..i], &part[i..]),
            None => (part, ""),
        };
        if key.is_empty() {
            return Err(format!("{path}: empty key"));
        }
        out.push(Seg::Key(key.to_owned()));
        while !rest.is_empty() {
            let close = rest.find(']').ok_or_else(|| format!("{path}: missing ']'"))?;
            let idx = rest[1..close].parse::<usize>().map_err(|_| format!("{path}: bad index"))?;
            out.push(Seg::Index(idx));
            rest = &rest[close + 1..];
            if !rest.is_empty() && !rest.starts_with('[') {
                return Err(format!("{path}: unexpected {rest:?}"));
            }
        }
    }
    Ok(out)
}

fn parse_value(v: &str) -> Json {
    serde_json::from_str::<Json>(v).unwrap_or_else(|_| Json::String(v.to_owned()))
}

fn set_path(root: &mut Json, path: &str, value: Json) -> Result<(), String> {
    let segs = segments(path)?;
    let mut cur = root;
    for (i, seg) in segs.iter().enumerate() {
        let last = i + 1 == segs.len();
        cur = match seg {
            Seg::Key(k) => {
                let Json::Object(map) = cur else {
                    return Err(format!("{path}: no table at {k:?}"));
                };
                if last {
                    map.insert(k.clone(), value);
                    return Ok(());
                }
                map.get_mut(k).ok_or_else(|| format!("{path}: the scenario has no {k:?} here"))?
            }
            Seg::Index(j) => {
                let Json::Array(items) = cur else {
                    return Err(format!("{path}: [{j}] indexes something that is not a list"));
                };
                let n = items.len();
                let slot =
                    items.get_mut(*j).ok_or_else(|| format!("{path}: index {j} out of range ({n} items)"))?;
                if last {
                    *slot = value;
                    return Ok(());
                }
                slot
            }
        };
    }
    Err(format!("{path}: empty path"))
}

/// TOML text of a JSON value, as an inline value.
fn toml_inline(v: &Json, out: &mut String) {
    match v {
        Json::Null => out.push_str("\"\""),
        Json::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        Json::Number(n) => {
            if n.is_f64() {
                let f = n.as_f64().unwrap_or(0.0);
                // Debug keeps a decimal point or exponent: TOML reads a float.
                let _ = write!(out, "{f:?}");
            } else {
                let _ = write!(out, "{n}");
            }
        }
        Json::String(s) => out.push_str(&Json::String(s.clone()).to_string()),
        Json::Array(items) => {
            out.push('[');
            for (i, x) in items.iter().filter(|x| !x.is_null()).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                toml_inline(x, out);
            }
            out.push(']');
        }
        Json::Object(map) => {
            out.push('{');
            for (i, (k, x)) in map.iter().filter(|(_, x)| !x.is_null()).enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                out.push_str(&Json::String(k.clone()).to_string());
                out.push_str(" = ");
                toml_inline(x, out);
            }
            out.push('}');
        }
    }
}

fn to_toml_text(root: &Json) -> String {
    let mut out = String::new();
    if let Json::Object(map) = root {
        for (k, v) in map.iter().filter(|(_, v)| !v.is_null()) {
            out.push_str(&Json::String(k.clone()).to_string());
            out.push_str(" = ");
            toml_inline(v, &mut out);
            out.push('\n');
        }
    }
    out
}

/// The scenario with `path` set to `value` for each assignment, validated.
pub fn apply(s: &Scenario, assignments: &[(&str, &str)]) -> Result<Scenario, String> {
    let mut root = serde_json::to_value(s).map_err(|e| format!("cannot serialize the scenario: {e}"))?;
    for (path, value) in assignments {
        set_path(&mut root, path, parse_value(value))?;
    }
    let text = to_toml_text(&root);
    let what: Vec<String> = assignments.iter().map(|(p, v)| format!("{p}={v}")).collect();
    fika_scenario::load_str(&text, &what.join(" ")).map_err(|e| e.to_string())
}

/// The numeric metrics of a run, by name.
pub fn metrics(r: &RunReport) -> Vec<(String, f64)> {
    let mut m: Vec<(String, f64)> = Vec::new();
    let mut put = |k: &str, v: Option<f64>| {
        if let Some(v) = v.filter(|v| v.is_finite()) {
            m.push((k.to_owned(), v));
        }
    };
    put("virtual_time_s", Some(r.virtual_time_s));
    put("events", Some(r.stats.events as f64));
    if let Some(p) = &r.propagation {
        for (i, lvl) in ["50", "90", "95", "99"].iter().enumerate() {
            put(&format!("propagation_{lvl}_median_s"), p.median_s[i]);
        }
    }
    if let Some(b) = &r.bitcoin {
        put("best_height", Some(f64::from(b.best_height)));
        put("blocks_mined", Some(b.blocks_mined as f64));
        put("stale_rate", Some(b.stale_rate));
        put("mean_block_interval_s", b.mean_block_interval_s);
        put("throughput_tps", Some(b.throughput_tps));
        put("confirmation_1_median_s", b.confirmation_1_s[0]);
        put("confirmation_6_median_s", b.confirmation_6_s[0]);
        put("selfish_hashrate_share", b.selfish_hashrate_share);
        put("selfish_revenue_share", b.selfish_revenue_share);
        // The largest honest miner's revenue relative to its hashrate.
        let honest = b.miners.iter().filter(|x| !x.selfish && x.hashrate_share > 0.0);
        let rev: f64 = honest.clone().map(|x| x.revenue_share).sum();
        let hash: f64 = honest.map(|x| x.hashrate_share).sum();
        put("honest_revenue_per_hashrate", (hash > 0.0).then(|| rev / hash));
        // First-order closed form for the stale rate: a block is lost when
        // another block is found before it reached the other miners, taken
        // as the median time to reach half of the nodes, t50, of blocks
        // found every T: 1 − exp(−t50 / T).
        let t50 = r.propagation.as_ref().and_then(|p| p.median_s[0]);
        put(
            "stale_rate_estimate",
            t50.zip(b.mean_block_interval_s).filter(|(_, t)| *t > 0.0).map(|(d, t)| 1.0 - (-d / t).exp()),
        );
        put("selfish_revenue_closed_form", b.selfish_revenue_closed_form);
        put("max_reorg_depth", Some(b.max_reorg_depth as f64));
        let flag = |x: bool| Some(if x { 1.0 } else { 0.0 });
        if let Some(d) = &b.double_spend {
            put("double_spend_q", Some(d.q));
            put("double_spend_success", flag(d.success));
            put("double_spend_released", flag(d.outcome == "released"));
            put("double_spend_duration_s", d.duration_s);
            put("double_spend_private_blocks", d.private_blocks.map(f64::from));
            put("double_spend_payment_block", d.payment_block.map(f64::from));
            put("double_spend_nakamoto", Some(d.nakamoto));
            put("double_spend_rosenfeld", Some(d.rosenfeld));
            put("double_spend_model", Some(d.model));
        }
        if let Some(m) = &b.majority {
            put("majority_released", flag(m.outcome == "released"));
            put("majority_reorg_blocks", m.public_blocks.map(f64::from));
            put("majority_duration_s", m.started_s.zip(m.ended_s).map(|(a, b)| b - a));
        }
        if let Some(e) = &b.eclipse {
            put("eclipse_lag_blocks", Some(e.mean_lag_blocks));
            put("eclipse_wasted_share", e.wasted_share);
        }
        if let Some(c) = &b.censorship {
            put("censor_hashrate_share", Some(c.censor_hashrate_share));
            put("censored_confirmation_mean_s", c.confirmation_mean_s.0);
            put("uncensored_confirmation_mean_s", c.confirmation_mean_s.1);
            put("censored_expected_s", c.censored_expected_s);
            put("censored_in_censor_blocks", Some(c.censored_in_censor_blocks as f64));
        }
    }
    if let Some(p) = &r.powpeg {
        put("pegin_latency_median_s", p.pegin_latency_s[0]);
        put("pegin_latency_p90_s", p.pegin_latency_s[1]);
        put("pegout_release_latency_median_s", p.pegout_release_latency_s[0]);
        put("pegout_confirm_latency_median_s", p.pegout_confirm_latency_s[0]);
    }
    m
}

/// Student's t quantile t(0.975, df); 1.96 beyond 30 degrees of freedom.
pub fn t975(df: usize) -> f64 {
    const T: [f64; 30] = [
        12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
        2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
        2.045, 2.042,
    ];
    match df {
        0 => f64::NAN,
        d if d <= 30 => T[d - 1],
        _ => 1.96,
    }
}

/// Mean, sample standard deviation and 95 % confidence interval.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Stats {
    /// Values.
    pub n: usize,
    /// Their mean.
    pub mean: f64,
    /// Sample standard deviation (`None` for one value).
    pub sd: Option<f64>,
    /// 95 % confidence interval of the mean (`None` for one value).
    pub ci: Option<(f64, f64)>,
}

/// Aggregates `xs` (at least one value).
pub fn stats(xs: &[f64]) -> Stats {
    let n = xs.len();
    let mean = xs.iter().sum::<f64>() / n as f64;
    if n < 2 {
        return Stats { n, mean, sd: None, ci: None };
    }
    let var = xs.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / (n - 1) as f64;
    let sd = var.sqrt();
    let half = t975(n - 1) * sd / (n as f64).sqrt();
    Stats { n, mean, sd: Some(sd), ci: Some((mean - half, mean + half)) }
}

/// What to sweep.
#[derive(Clone, Debug)]
pub struct SweepSpec {
    /// The parameters; the grid is their cartesian product.
    pub params: Vec<Param>,
    /// Seeds per grid point.
    pub seeds: u32,
    /// Worker threads.
    pub jobs: usize,
}

/// One grid point's scenario.
pub struct Point {
    /// The values of each parameter, in `SweepSpec::params` order.
    pub values: Vec<String>,
    /// The scenario with those values.
    pub scenario: Scenario,
}

/// The grid, validated: every point's scenario is built before anything runs.
pub fn grid(s: &Scenario, params: &[Param]) -> Result<Vec<Point>, String> {
    let mut combos: Vec<Vec<String>> = vec![Vec::new()];
    for p in params {
        combos = combos
            .into_iter()
            .flat_map(|c| {
                p.values.iter().map(move |v| {
                    let mut c = c.clone();
                    c.push(v.clone());
                    c
                })
            })
            .collect();
    }
    combos
        .into_iter()
        .map(|values| {
            let a: Vec<(&str, &str)> =
                params.iter().zip(&values).map(|(p, v)| (p.path.as_str(), v.as_str())).collect();
            apply(s, &a).map(|scenario| Point { values, scenario })
        })
        .collect()
}

/// A run's metrics by name, or why it failed.
pub type RunMetrics = Result<Vec<(String, f64)>, String>;

/// A grid point's values and its runs: (seed, metrics).
pub type PointRuns = (Vec<String>, Vec<(u64, RunMetrics)>);

/// The result of a sweep.
pub struct SweepResult {
    /// Parameter paths (CSV columns).
    pub paths: Vec<String>,
    /// Per grid point: its values and, per run, the seed and its metrics or error.
    pub runs: Vec<PointRuns>,
}

impl SweepResult {
    /// Runs that failed: (grid values, seed, error).
    pub fn failures(&self) -> Vec<(String, u64, String)> {
        let mut out = Vec::new();
        for (vals, runs) in &self.runs {
            for (seed, r) in runs {
                if let Err(e) = r {
                    out.push((vals.join(","), *seed, e.clone()));
                }
            }
        }
        out
    }

    /// `sweep.csv`: one row per grid point and metric.
    pub fn csv(&self) -> String {
        let mut t = String::new();
        for p in &self.paths {
            t += &csv_cell(p);
            t.push(',');
        }
        t += "metric,n,mean,sd,ci_low,ci_high\n";
        let f = |x: Option<f64>| x.map_or(String::new(), |v| format!("{v:.6}"));
        for (vals, runs) in &self.runs {
            let mut by_metric: BTreeMap<&str, Vec<f64>> = BTreeMap::new();
            for (_, r) in runs {
                if let Ok(ms) = r {
                    for (k, v) in ms {
                        by_metric.entry(k.as_str()).or_default().push(*v);
                    }
                }
            }
            for (k, xs) in by_metric {
                let st = stats(&xs);
                for v in vals {
                    t += &csv_cell(v);
                    t.push(',');
                }
                let _ = writeln!(
                    t,
                    "{k},{},{:.6},{},{},{}",
                    st.n,
                    st.mean,
                    f(st.sd),
                    f(st.ci.map(|c| c.0)),
                    f(st.ci.map(|c| c.1))
                );
            }
        }
        t
    }

    /// `runs.csv`: every run's metrics, one row per run and metric.
    pub fn runs_csv(&self) -> String {
        let mut t = String::new();
        for p in &self.paths {
            t += &csv_cell(p);
            t.push(',');
        }
        t += "seed,metric,value\n";
        for (vals, runs) in &self.runs {
            for (seed, r) in runs {
                for (k, v) in r.as_ref().map_or(&[][..], |m| &m[..]) {
                    for v in vals {
                        t += &csv_cell(v);
                        t.push(',');
                    }
                    let _ = writeln!(t, "{seed},{k},{v}");
                }
            }
        }
        t
    }
}

fn csv_cell(s: &str) -> String {
    if s.contains([',', '"', '\n']) { format!("\"{}\"", s.replace('"', "\"\"")) } else { s.to_owned() }
}

/// Runs every grid point × seed on `spec.jobs` threads; `progress(done,
/// total)` is called after each run (from the worker threads).
pub fn sweep(points: Vec<Point>, spec: &SweepSpec, progress: &(dyn Fn(usize, usize) + Sync)) -> SweepResult {
    let seeds = spec.seeds.max(1) as usize;
    let total = points.len() * seeds;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<RunMetrics>>> = Mutex::new(vec![None; total]);
    let jobs = spec.jobs.clamp(1, total.max(1));
    std::thread::scope(|sc| {
        for _ in 0..jobs {
            sc.spawn(|| {
                loop {
                    let j = next.fetch_add(1, Ordering::Relaxed);
                    if j >= total {
                        break;
                    }
                    let (p, k) = (j / seeds, j % seeds);
                    let sc = &points[p].scenario;
                    let opts = RunOptions { seed: Some(sc.seed.wrapping_add(k as u64)), out: None };
                    let r =
                        crate::run(sc, &opts, &mut |_| {}).map(|r| metrics(&r)).map_err(|e| e.to_string());
                    if let Ok(mut v) = results.lock() {
                        v[j] = Some(r);
                    }
                    progress(done.fetch_add(1, Ordering::Relaxed) + 1, total);
                }
            });
        }
    });
    let mut results = results.into_inner().unwrap_or_default().into_iter();
    let runs = points
        .iter()
        .map(|p| {
            let rs = (0..seeds)
                .map(|k| {
                    let r =
                        results.next().flatten().unwrap_or_else(|| Err("the run did not finish".to_owned()));
                    (p.scenario.seed.wrapping_add(k as u64), r)
                })
                .collect();
            (p.values.clone(), rs)
        })
        .collect();
    SweepResult { paths: spec.params.iter().map(|p| p.path.clone()).collect(), runs }
}

/// Measured metrics and the metrics holding their closed forms, drawn
/// side by side in the sweep's `report.html`.
pub const CLOSED_FORMS: &[(&str, &[&str])] = &[
    ("stale_rate", &["stale_rate_estimate"]),
    ("double_spend_success", &["double_spend_model", "double_spend_rosenfeld", "double_spend_nakamoto"]),
    ("selfish_revenue_share", &["selfish_revenue_closed_form", "selfish_hashrate_share"]),
    ("censored_confirmation_mean_s", &["censored_expected_s", "uncensored_confirmation_mean_s"]),
];

/// Writes `sweep.csv`, `runs.csv` and `report.html` (plots of every
/// metric, titled `title`) into `dir`.
pub fn write(dir: &Path, r: &SweepResult, title: &str) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    std::fs::write(dir.join("sweep.csv"), r.csv())?;
    std::fs::write(dir.join("runs.csv"), r.runs_csv())?;
    fika_report::write_sweep_report(dir, title, CLOSED_FORMS).map(|_| ()).map_err(std::io::Error::other)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stats_and_t() {
        let s = stats(&[1.0, 2.0, 3.0]);
        assert_eq!(s.mean, 2.0);
        assert_eq!(s.sd, Some(1.0));
        let (lo, hi) = s.ci.unwrap_or_default();
        assert!((hi - 2.0 - 4.303 / 3f64.sqrt()).abs() < 1e-9 && (2.0 - lo - (hi - 2.0)).abs() < 1e-9);
        assert_eq!(stats(&[5.0]).ci, None);
        assert_eq!(t975(100), 1.96);
    }

    #[test]
    fn params_parse() {
        let p = parse_param("nodes[0].hashrate=1,2.5").unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(p.values, vec!["1", "2.5"]);
        assert!(parse_param("nope").is_err());
        assert!(segments("a[1][2].b").is_ok());
        assert!(segments("a[x]").is_err());
    }
}
