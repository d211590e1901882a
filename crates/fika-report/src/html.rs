//! `report.html`: one self-contained page (inline CSS and SVG, no scripts,
//! fonts or network) built from whatever a run left in its output
//! directory — `metrics.json`, the CSV tables and `scenario.resolved.toml`.
//!
//! Missing files leave their sections out; malformed files are noted on the
//! page instead of failing the report. Every text taken from a file is
//! escaped.

use std::fmt::Write;
use std::io;
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::svg::{BarChart, Cdf, Histogram, LinePlot, Mark, escape};

/// Most points a line plot draws per series; longer series are thinned
/// evenly (keeping the first and last point).
pub const MAX_LINE_POINTS: usize = 2000;

/// Tables longer than this are folded (`<details>`), with a plot beside them where one helps.
pub const LONG_TABLE: usize = 25;

/// Why a report could not be written.
#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    /// Reading an input or writing `report.html` failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
}

/// Reads the run outputs in `dir` and writes `dir/report.html`; returns its path.
pub fn write_report(dir: &Path) -> Result<PathBuf, ReportError> {
    let html = render_report(dir)?;
    let path = dir.join("report.html");
    std::fs::write(&path, html).map_err(|source| ReportError::Io { path: path.clone(), source })?;
    Ok(path)
}

/// A parsed CSV table (plain comma-separated, no quoting, as fika writes them).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Csv {
    /// Column names.
    pub header: Vec<String>,
    /// Rows of cells.
    pub rows: Vec<Vec<String>>,
}

impl Csv {
    /// Parses CSV text; blank lines are skipped.
    pub fn parse(text: &str) -> Csv {
        let mut lines = text.lines().map(str::trim_end).filter(|l| !l.is_empty());
        let header =
            lines.next().map(|h| h.split(',').map(|s| s.trim().to_string()).collect()).unwrap_or_default();
        let rows = lines.map(|l| l.split(',').map(|s| s.trim().to_string()).collect()).collect();
        Csv { header, rows }
    }

    /// Index of a column.
    pub fn col(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|h| h == name)
    }

    /// A cell of row `r` by column name (empty if missing).
    pub fn cell<'a>(&'a self, row: &'a [String], name: &str) -> &'a str {
        self.col(name).and_then(|i| row.get(i)).map_or("", String::as_str)
    }

    /// A numeric cell, if present and finite.
    pub fn num(&self, row: &[String], name: &str) -> Option<f64> {
        self.cell(row, name).parse::<f64>().ok().filter(|v| v.is_finite())
    }

    /// The finite values of a column.
    pub fn column(&self, name: &str) -> Vec<f64> {
        self.rows.iter().filter_map(|r| self.num(r, name)).collect()
    }

    /// `(x, y)` pairs of two columns, where both are finite.
    pub fn pairs(&self, x: &str, y: &str) -> Vec<(f64, f64)> {
        self.rows.iter().filter_map(|r| Some((self.num(r, x)?, self.num(r, y)?))).collect()
    }
}

/// Keeps at most `max` points, evenly spaced, including the first and last.
fn thin(points: Vec<(f64, f64)>, max: usize) -> Vec<(f64, f64)> {
    let n = points.len();
    if n <= max || max < 2 {
        return points;
    }
    (0..max).map(|k| points[k * (n - 1) / (max - 1)]).collect()
}

fn read_opt(dir: &Path, name: &str) -> Result<Option<String>, ReportError> {
    let path = dir.join(name);
    match std::fs::read_to_string(&path) {
        Ok(s) => Ok(Some(s)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(ReportError::Io { path, source }),
    }
}

/// The run's inputs, as read from its directory.
struct Inputs {
    metrics: Option<Value>,
    warnings: Vec<String>,
    scenario_toml: Option<String>,
    csv: Vec<(&'static str, Csv)>,
}

impl Inputs {
    fn read(dir: &Path) -> Result<Inputs, ReportError> {
        let mut warnings = Vec::new();
        let metrics = match read_opt(dir, "metrics.json")? {
            Some(text) => match serde_json::from_str::<Value>(&text) {
                Ok(v) => Some(v),
                Err(e) => {
                    warnings.push(format!("metrics.json could not be parsed: {e}"));
                    None
                }
            },
            None => None,
        };
        let mut csv = Vec::new();
        for name in [
            "propagation.csv",
            "blocks.csv",
            "confirmations.csv",
            "miners.csv",
            "wallets.csv",
            "mempool.csv",
            "pegins.csv",
            "pegouts.csv",
            "federation.csv",
        ] {
            if let Some(text) = read_opt(dir, name)? {
                csv.push((name, Csv::parse(&text)));
            }
        }
        Ok(Inputs { metrics, warnings, scenario_toml: read_opt(dir, "scenario.resolved.toml")?, csv })
    }

    fn csv(&self, name: &str) -> Option<&Csv> {
        self.csv.iter().find(|(n, _)| *n == name).map(|(_, c)| c)
    }

    fn m(&self, path: &[&str]) -> Option<&Value> {
        let mut v = self.metrics.as_ref()?;
        for k in path {
            v = v.get(k)?;
        }
        (!v.is_null()).then_some(v)
    }

    fn f(&self, path: &[&str]) -> Option<f64> {
        self.m(path)?.as_f64().filter(|v| v.is_finite())
    }
}

/// Renders the page for the outputs in `dir` without writing it.
pub fn render_report(dir: &Path) -> Result<String, ReportError> {
    let inp = Inputs::read(dir)?;
    Ok(render(&inp))
}

fn fmt_num(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    if v == v.trunc() && v.abs() < 1e15 {
        return group_digits(&format!("{}", v as i64));
    }
    let a = v.abs();
    if a >= 1000.0 {
        group_digits(&format!("{v:.0}"))
    } else if a >= 1.0 {
        format!("{v:.3}")
    } else if a >= 1e-3 {
        format!("{v:.6}")
    } else {
        format!("{v:.3e}")
    }
}

fn group_digits(s: &str) -> String {
    let (sign, digits) = s.strip_prefix('-').map_or(("", s), |d| ("-", d));
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push('\u{202f}');
        }
        out.push(ch);
    }
    format!("{sign}{out}")
}

fn fmt_secs(v: f64) -> String {
    if !v.is_finite() {
        return "–".into();
    }
    let a = v.abs();
    if a >= 3600.0 {
        format!("{:.2} h", v / 3600.0)
    } else if a >= 60.0 {
        format!("{:.1} min", v / 60.0)
    } else if a >= 1.0 {
        format!("{v:.3} s")
    } else if a >= 1e-3 {
        format!("{:.3} ms", v * 1e3)
    } else if a > 0.0 {
        format!("{:.1} µs", v * 1e6)
    } else {
        "0 s".into()
    }
}

fn fmt_bytes(v: f64) -> String {
    const U: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = v;
    let mut u = 0;
    while v.abs() >= 1024.0 && u < U.len() - 1 {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 { format!("{v:.0} B") } else { format!("{v:.1} {}", U[u]) }
}

fn value_text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Number(n) => n.as_f64().map_or_else(|| n.to_string(), fmt_num),
        Value::Bool(b) => b.to_string(),
        Value::Null => "–".into(),
        other => other.to_string(),
    }
}

/// A `<dl>`-style grid of key figures; values are escaped here.
fn cards(out: &mut String, items: &[(&str, String)]) {
    out.push_str("<div class=\"cards\">");
    for (k, v) in items {
        let _ = write!(
            out,
            "<div class=\"card\"><div class=\"k\">{}</div><div class=\"v\">{}</div></div>",
            escape(k),
            escape(v)
        );
    }
    out.push_str("</div>");
}

/// An HTML table; every cell is escaped.
pub(crate) fn table(out: &mut String, header: &[String], rows: &[Vec<String>], numeric_from: usize) {
    out.push_str("<div class=\"tablewrap\"><table><thead><tr>");
    for h in header {
        let _ = write!(out, "<th>{}</th>", escape(h));
    }
    out.push_str("</tr></thead><tbody>");
    for r in rows {
        out.push_str("<tr>");
        for (i, cell) in r.iter().enumerate() {
            let cls = if i >= numeric_from { " class=\"num\"" } else { "" };
            let _ = write!(out, "<td{cls}>{}</td>", escape(cell));
        }
        out.push_str("</tr>");
    }
    out.push_str("</tbody></table></div>");
}

pub(crate) fn plot(out: &mut String, svg: String) {
    let _ = write!(out, "<figure>{svg}</figure>");
}

pub(crate) fn section(out: &mut String, id: &str, title: &str) {
    let _ = write!(out, "<section id=\"{id}\"><h2>{}</h2>", escape(title));
}

pub(crate) fn note(out: &mut String, text: &str) {
    let _ = write!(out, "<p class=\"note\">{}</p>", escape(text));
}

/// `(name, description)` from the resolved scenario.
fn scenario_meta(toml_text: Option<&str>) -> (Option<String>, Option<String>, Option<String>) {
    let Some(t) = toml_text else { return (None, None, None) };
    let Ok(v) = t.parse::<toml::Table>() else { return (None, None, None) };
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).map(str::to_string);
    (s("name"), s("description"), s("protocol"))
}

pub(crate) const CSS: &str = "\
:root{--fg:#1d2330;--mut:#5b6475;--bg:#f6f7f9;--card:#fff;--ok:#1f8a4c;--bad:#c62828;--unk:#8a8f99}\
*{box-sizing:border-box}body{margin:0;font:14px/1.45 system-ui,-apple-system,'Segoe UI',sans-serif;color:var(--fg);background:var(--bg)}\
header{background:#1d2330;color:#fff;padding:20px 32px}header h1{margin:0 0 4px;font-size:24px}header p{margin:0;color:#c9cfdb}\
main{max-width:1360px;margin:0 auto;padding:8px 32px 48px}\
section{background:var(--card);border-radius:10px;box-shadow:0 1px 3px rgba(0,0,0,.08);padding:16px 20px;margin:18px 0}\
h2{margin:0 0 12px;font-size:18px}h3{margin:16px 0 8px;font-size:15px;color:var(--mut)}\
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px}\
.card{border:1px solid #e3e6eb;border-radius:8px;padding:8px 12px}.card .k{color:var(--mut);font-size:12px}\
.card .v{font-size:17px;font-weight:600;overflow-wrap:anywhere}\
.badges{display:flex;flex-wrap:wrap;gap:10px}.badge{padding:8px 14px;border-radius:20px;color:#fff;font-weight:600}\
.badge.ok{background:var(--ok)}.badge.bad{background:var(--bad)}.badge.unknown{background:var(--unk)}\
.plots{display:grid;grid-template-columns:repeat(auto-fill,minmax(520px,1fr));gap:14px}\
figure{margin:0}figure svg{width:100%;height:auto;border:1px solid #eceef2;border-radius:6px}\
.tablewrap{overflow-x:auto}table{border-collapse:collapse;font-size:13px;margin:4px 0}\
th,td{padding:4px 10px;border-bottom:1px solid #eceef2;text-align:left}th{background:#f0f2f5}td.num{text-align:right;font-variant-numeric:tabular-nums}\
code,.mono{font-family:ui-monospace,Menlo,Consolas,monospace;font-size:12px;overflow-wrap:anywhere}\
.note{color:var(--mut);font-style:italic}.warn{color:var(--bad)}pre{background:#f0f2f5;padding:10px;border-radius:6px;overflow:auto;font-size:12px}\
footer{color:var(--mut);text-align:center;font-size:12px;padding:12px}";

fn render(inp: &Inputs) -> String {
    let (toml_name, description, protocol) = scenario_meta(inp.scenario_toml.as_deref());
    let name = inp
        .m(&["scenario"])
        .and_then(Value::as_str)
        .map(str::to_string)
        .or(toml_name)
        .unwrap_or_else(|| "run".into());
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>fika report — {n}</title><style>{CSS}</style></head><body><header><h1>{n}</h1>",
        n = escape(&name)
    );
    if let Some(d) = &description {
        let _ = write!(out, "<p>{}</p>", escape(d));
    }
    out.push_str("</header><main>");
    for w in &inp.warnings {
        let _ = write!(out, "<p class=\"warn\">{}</p>", escape(w));
    }
    summary(&mut out, inp, protocol.as_deref());
    invariants(&mut out, inp);
    propagation(&mut out, inp);
    bitcoin(&mut out, inp);
    powpeg(&mut out, inp);
    network(&mut out, inp);
    if let Some(t) = &inp.scenario_toml {
        section(&mut out, "scenario", "Resolved scenario");
        let _ = write!(
            out,
            "<details><summary>scenario.resolved.toml</summary><pre>{}</pre></details></section>",
            escape(t)
        );
    }
    out.push_str(
        "</main><footer>Generated by fika-report from the run's output files.</footer></body></html>\n",
    );
    out
}

fn summary(out: &mut String, inp: &Inputs, protocol: Option<&str>) {
    section(out, "summary", "Run summary");
    if inp.metrics.is_none() {
        note(out, "No metrics.json in this directory.");
    }
    let mut items: Vec<(&str, String)> = Vec::new();
    if let Some(p) = protocol {
        items.push(("protocol", p.to_string()));
    }
    let opt = |k: &str| inp.m(&[k]).map(value_text);
    for (label, key) in [("seed", "seed"), ("nodes", "nodes"), ("links", "links")] {
        if let Some(v) = opt(key) {
            items.push((label, v));
        }
    }
    if let Some(v) = inp.f(&["virtual_time_s"]) {
        items.push(("virtual time", fmt_secs(v)));
    }
    if let Some(v) = inp.f(&["wall_s"]) {
        items.push(("wall time", fmt_secs(v)));
    }
    if let Some(v) = inp.f(&["stats", "events"]) {
        items.push(("events", fmt_num(v)));
    }
    if let Some(v) = inp.f(&["events_per_s"]) {
        items.push(("events / s", fmt_num(v.round())));
    }
    if let Some(v) = inp.f(&["stats", "messages_sent"]) {
        items.push(("messages sent", fmt_num(v)));
    }
    if let Some(v) = inp.f(&["stats", "bytes_sent"]) {
        items.push(("bytes sent", fmt_bytes(v)));
    }
    if let Some(v) = inp.f(&["peak_rss_bytes"]) {
        items.push(("peak memory", fmt_bytes(v)));
    }
    if !items.is_empty() {
        cards(out, &items);
    }
    if let Some(d) = opt("digest") {
        let _ = write!(out, "<p>Trace digest: <code>{}</code></p>", escape(&d));
    }
    out.push_str("</section>");
}

fn invariants(out: &mut String, inp: &Inputs) {
    let mut badges: Vec<(String, Option<bool>)> = Vec::new();
    if inp.m(&["bitcoin"]).is_some() {
        badges.push((
            "Value conservation (Bitcoin UTXO set)".into(),
            inp.m(&["bitcoin", "conservation_ok"]).and_then(Value::as_bool),
        ));
    }
    if inp.m(&["powpeg"]).is_some() {
        let ok = inp.m(&["powpeg", "conservation_ok"]).and_then(Value::as_bool);
        let viol = inp.f(&["powpeg", "conservation_violations"]).unwrap_or(0.0);
        let label = if viol > 0.0 {
            format!("Peg conservation ({} violating blocks)", fmt_num(viol))
        } else {
            "Peg conservation (federation BTC + in flight = RBTC minted)".to_string()
        };
        badges.push((label, ok.map(|o| o && viol == 0.0)));
        if let Some(off) = inp.f(&["powpeg", "hsm_signed_off_chain"]) {
            badges.push(("PowHSMs sign only what the best chain requested".into(), Some(off == 0.0)));
        }
        if let Some(after) = inp.f(&["powpeg", "hsm_signatures_after_halt"]) {
            badges.push(("Halted pegnatories sign nothing".into(), Some(after == 0.0)));
        }
    }
    if badges.is_empty() {
        return;
    }
    section(out, "invariants", "Invariants");
    out.push_str("<div class=\"badges\">");
    for (label, ok) in badges {
        let (cls, mark) = match ok {
            Some(true) => ("ok", "✔ holds"),
            Some(false) => ("bad", "✘ VIOLATED"),
            None => ("unknown", "? unknown"),
        };
        let _ = write!(out, "<span class=\"badge {cls}\">{}: {mark}</span>", escape(&label));
    }
    out.push_str("</div></section>");
}

fn propagation(out: &mut String, inp: &Inputs) {
    let csv = inp.csv("propagation.csv");
    let summary = inp.m(&["propagation"]);
    if csv.is_none() && summary.is_none() {
        return;
    }
    section(out, "propagation", "Propagation");
    if let Some(s) = summary {
        let lv = |k: &str, i: usize| {
            s.get(k).and_then(|a| a.get(i)).and_then(Value::as_f64).map_or("–".to_string(), fmt_secs)
        };
        let header: Vec<String> = ["share of nodes", "median", "p90", "mean", "items not reaching it"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        let rows: Vec<Vec<String>> = ["50 %", "90 %", "95 %", "99 %"]
            .iter()
            .enumerate()
            .map(|(i, l)| {
                vec![
                    l.to_string(),
                    lv("median_s", i),
                    lv("p90_s", i),
                    lv("mean_s", i),
                    s.get("not_reached").and_then(|a| a.get(i)).map_or("–".into(), value_text),
                ]
            })
            .collect();
        if let Some(n) = s.get("items") {
            let _ = write!(
                out,
                "<p>Time from creation to reaching a share of nodes, over {} items.</p>",
                escape(&value_text(n))
            );
        }
        table(out, &header, &rows, 1);
    }
    if let Some(c) = csv {
        if c.rows.is_empty() {
            note(out, "propagation.csv has no items.");
        } else {
            out.push_str("<div class=\"plots\">");
            let mut cdf =
                Cdf::new("Time to reach a share of nodes (CDF over items)", "seconds after creation");
            for (col, label) in [("t50_s", "50 %"), ("t90_s", "90 %"), ("t99_s", "99 %")] {
                cdf = cdf.series(label, c.column(col));
            }
            plot(out, cdf.to_svg());
            let reached = c.pairs("created_s", "reached");
            if !reached.is_empty() {
                plot(
                    out,
                    LinePlot::new("Nodes reached per item", "item created at (s)", "nodes reached")
                        .series("", reached)
                        .mark(Mark::Dots)
                        .y_from_zero()
                        .to_svg(),
                );
            }
            out.push_str("</div>");
        }
    }
    out.push_str("</section>");
}

fn bitcoin(out: &mut String, inp: &Inputs) {
    let names = ["blocks.csv", "miners.csv", "confirmations.csv", "mempool.csv", "wallets.csv"];
    let b = inp.m(&["bitcoin"]);
    if b.is_none() && names.iter().all(|n| inp.csv(n).is_none()) {
        return;
    }
    section(out, "bitcoin", "Bitcoin chain");
    if b.is_some() {
        let f = |k: &str| inp.f(&["bitcoin", k]);
        let mut items: Vec<(&str, String)> = Vec::new();
        for (label, key) in [
            ("best height", "best_height"),
            ("blocks mined", "blocks_mined"),
            ("stale blocks", "stale_blocks"),
            ("transactions created", "txs_created"),
            ("transactions confirmed", "txs_confirmed"),
            ("mempool max (txs)", "mempool_txs_max"),
        ] {
            if let Some(v) = f(key) {
                items.push((label, fmt_num(v)));
            }
        }
        if let Some(v) = f("stale_rate") {
            items.push(("stale rate", format!("{:.2} %", v * 100.0)));
        }
        if let Some(v) = f("mean_block_interval_s") {
            items.push(("mean block interval", fmt_secs(v)));
        }
        if let Some(v) = f("throughput_tps") {
            items.push(("throughput", format!("{v:.4} tx/s")));
        }
        for (label, key) in [
            ("1st confirmation (median / p90)", "confirmation_1_s"),
            ("6th confirmation (median / p90)", "confirmation_6_s"),
        ] {
            if let Some(a) = inp.m(&["bitcoin", key]).and_then(Value::as_array) {
                let s: Vec<String> = a.iter().map(|v| v.as_f64().map_or("–".into(), fmt_secs)).collect();
                items.push((label, s.join(" / ")));
            }
        }
        if let (Some(h), Some(r)) = (f("selfish_hashrate_share"), f("selfish_revenue_share")) {
            items.push((
                "selfish miners: hashrate → revenue",
                format!("{:.1} % → {:.1} %", h * 100.0, r * 100.0),
            ));
        }
        cards(out, &items);
    }
    out.push_str("<div class=\"plots\">");
    let mut any_plot = false;
    // Fork and reorg histograms, from metrics.json.
    for (key, title, x) in [
        ("fork_lengths", "Stale branches by length", "branch length (blocks)"),
        ("reorgs", "Reorganizations by depth", "depth (blocks)"),
    ] {
        if let Some(m) = inp.m(&["bitcoin", key]).and_then(Value::as_object).filter(|m| !m.is_empty()) {
            let mut kv: Vec<(u64, f64)> =
                m.iter().filter_map(|(k, v)| Some((k.parse::<u64>().ok()?, v.as_f64()?))).collect();
            kv.sort_by_key(|p| p.0);
            let chart = BarChart::new(title, x, "count")
                .categories(kv.iter().map(|p| p.0.to_string()).collect())
                .series("", kv.iter().map(|p| p.1).collect());
            plot(out, chart.to_svg());
            any_plot = true;
        }
    }
    if let Some(c) = inp.csv("blocks.csv").filter(|c| !c.rows.is_empty()) {
        let mut best = Vec::new();
        let mut stale = Vec::new();
        for r in &c.rows {
            if let (Some(t), Some(h)) = (c.num(r, "mined_s"), c.num(r, "height")) {
                if c.cell(r, "on_best_chain") == "false" { stale.push((t, h)) } else { best.push((t, h)) }
            }
        }
        let mut p = LinePlot::new("Blocks mined", "time (s)", "height").mark(Mark::Dots);
        p = p.series("best chain", thin(best, MAX_LINE_POINTS));
        if !stale.is_empty() {
            p = p.series("stale", thin(stale, MAX_LINE_POINTS));
        }
        plot(out, p.to_svg());
        any_plot = true;
    }
    if let Some(c) = inp.csv("miners.csv").filter(|c| !c.rows.is_empty()) {
        let chart = BarChart::new("Revenue share vs hashrate share", "miner", "share")
            .categories(c.rows.iter().map(|r| c.cell(r, "node").to_string()).collect())
            .series(
                "hashrate share",
                c.rows.iter().map(|r| c.num(r, "hashrate_share").unwrap_or(0.0)).collect(),
            )
            .series(
                "revenue share",
                c.rows.iter().map(|r| c.num(r, "revenue_share").unwrap_or(0.0)).collect(),
            );
        plot(out, chart.to_svg());
        any_plot = true;
    }
    if let Some(c) = inp.csv("confirmations.csv").filter(|c| !c.rows.is_empty()) {
        let h = Histogram::new("Confirmation latency", "seconds after the transaction was created")
            .series("1st confirmation", c.column("first_confirmation_s"))
            .series("6th confirmation", c.column("sixth_confirmation_s"));
        plot(out, h.to_svg());
        any_plot = true;
    }
    if let Some(c) = inp.csv("mempool.csv").filter(|c| !c.rows.is_empty()) {
        let p = LinePlot::new("Mempool size over time", "time (s)", "transactions")
            .series("mean over nodes", thin(c.pairs("time_s", "mean_txs"), MAX_LINE_POINTS))
            .series("max over nodes", thin(c.pairs("time_s", "max_txs"), MAX_LINE_POINTS))
            .y_from_zero();
        plot(out, p.to_svg());
        any_plot = true;
    }
    out.push_str("</div>");
    if !any_plot {
        note(out, "No chain data to plot.");
    }
    if let Some(c) = inp.csv("miners.csv").filter(|c| !c.rows.is_empty()) {
        out.push_str("<h3 id=\"miners\">Miners</h3>");
        if c.rows.len() > LONG_TABLE {
            let _ = write!(out, "<details><summary>all {} miners</summary>", c.rows.len());
            table(out, &c.header, &c.rows, 1);
            out.push_str("</details>");
        } else {
            table(out, &c.header, &c.rows, 1);
        }
    }
    if let Some(c) = inp.csv("wallets.csv") {
        out.push_str("<h3 id=\"wallets\">Wallet balances</h3>");
        if c.rows.is_empty() {
            note(out, "No wallets.");
        } else if c.rows.len() > LONG_TABLE {
            out.push_str("<div class=\"plots\">");
            plot(
                out,
                Histogram::new("Wallet balances", "confirmed BTC")
                    .series("", c.column("confirmed_btc"))
                    .to_svg(),
            );
            out.push_str("</div>");
            let _ = write!(out, "<details><summary>all {} wallets</summary>", c.rows.len());
            table(out, &c.header, &c.rows, 1);
            out.push_str("</details>");
        } else {
            table(out, &c.header, &c.rows, 1);
        }
    }
    out.push_str("</section>");
}

fn powpeg(out: &mut String, inp: &Inputs) {
    let p = inp.m(&["powpeg"]);
    let names = ["pegins.csv", "pegouts.csv", "federation.csv"];
    if p.is_none() && names.iter().all(|n| inp.csv(n).is_none()) {
        return;
    }
    section(out, "powpeg", "PowPeg");
    if p.is_some() {
        let f = |k: &str| inp.f(&["powpeg", k]);
        let mut items: Vec<(&str, String)> = Vec::new();
        for (label, key) in [
            ("sidechain height", "side_height"),
            ("peg-ins sent", "pegins_sent"),
            ("peg-ins credited", "pegins_credited"),
            ("peg-ins refunded", "pegins_refunded"),
            ("peg-outs requested", "pegouts_requested"),
            ("peg-outs released", "pegouts_released"),
            ("peg-outs confirmed", "pegouts_confirmed"),
            ("PowHSM refusals", "hsm_refusals"),
            ("federation changes", "federation_activations"),
            ("migrations", "migrations"),
            ("pegnatories halted", "pegnatories_halted"),
            ("pegnatories' fee share (wei)", "pegnatory_fee_share_wei"),
        ] {
            if let Some(v) = f(key) {
                items.push((label, fmt_num(v)));
            }
        }
        for (label, key) in [
            ("federation BTC", "federation_btc_final"),
            ("RBTC credited", "rbtc_credited"),
            ("peg-out fees", "pegout_fees_btc"),
        ] {
            if let Some(v) = f(key) {
                items.push((label, format!("{v:.8} BTC")));
            }
        }
        if let Some(a) = inp.m(&["powpeg", "pegin_latency_s"]).and_then(Value::as_array) {
            let s: Vec<String> = a.iter().take(2).map(|v| v.as_f64().map_or("–".into(), fmt_secs)).collect();
            items.push(("peg-in latency (median / p90)", s.join(" / ")));
        }
        cards(out, &items);
    }
    out.push_str("<div class=\"plots\">");
    if let Some(c) = inp.csv("pegins.csv") {
        let mut lat = c.column("latency_s");
        if lat.is_empty() {
            lat = c.rows.iter().filter_map(|r| Some(c.num(r, "credited_s")? - c.num(r, "sent_s")?)).collect();
        }
        let _ = write!(out, "<div id=\"pegins\">");
        plot(
            out,
            Histogram::new("Peg-in latency (BTC payment → RBTC credit)", "seconds").series("", lat).to_svg(),
        );
        out.push_str("</div>");
    }
    if let Some(c) = inp.csv("pegouts.csv") {
        let d = |to: &str| -> Vec<f64> {
            c.rows.iter().filter_map(|r| Some(c.num(r, to)? - c.num(r, "sent_s")?)).collect()
        };
        let _ = write!(out, "<div id=\"pegouts\">");
        plot(
            out,
            Histogram::new("Peg-out latency (request → …)", "seconds after the request")
                .series("released (signed)", d("released_s"))
                .series("in a Bitcoin block", d("btc_included_s"))
                .to_svg(),
        );
        out.push_str("</div>");
    }
    if let Some(c) = inp.csv("federation.csv") {
        let mut p = LinePlot::new("Federation balance over time", "time (s)", "BTC").y_from_zero();
        for (col, label) in [
            ("federation_btc", "federation BTC"),
            ("reserved_btc", "reserved for peg-outs"),
            ("pegged_in_btc", "pegged in (cumulative)"),
            ("pegged_out_btc", "pegged out (cumulative)"),
            ("retiring_btc", "retiring federation BTC"),
        ] {
            if c.col(col).is_some() {
                p = p.series(label, thin(c.pairs("time_s", col), MAX_LINE_POINTS));
            }
        }
        let _ = write!(out, "<div id=\"federation\">");
        plot(out, p.to_svg());
        out.push_str("</div>");
    }
    out.push_str("</div></section>");
}

fn network(out: &mut String, inp: &Inputs) {
    let Some(kinds) = inp.m(&["stats", "by_kind"]).and_then(Value::as_array).filter(|k| !k.is_empty()) else {
        return;
    };
    section(out, "network", "Network traffic");
    let name = |k: &Value| k.get("kind").map(value_text).unwrap_or_default();
    let num = |k: &Value, f: &str| k.get(f).and_then(Value::as_f64).unwrap_or(0.0);
    out.push_str("<div class=\"plots\">");
    let cats: Vec<String> = kinds.iter().map(name).collect();
    plot(
        out,
        BarChart::new("Messages by kind", "message kind", "messages")
            .categories(cats.clone())
            .series("", kinds.iter().map(|k| num(k, "count")).collect())
            .to_svg(),
    );
    plot(
        out,
        BarChart::new("Bytes by kind", "message kind", "MiB")
            .categories(cats)
            .series("", kinds.iter().map(|k| num(k, "bytes") / (1024.0 * 1024.0)).collect())
            .to_svg(),
    );
    out.push_str("</div>");
    let mut items: Vec<(&str, String)> = Vec::new();
    for (label, key) in [
        ("delivered", "messages_delivered"),
        ("dropped (loss)", "dropped_loss"),
        ("dropped (partition)", "dropped_partition"),
        ("dropped (node down)", "dropped_down"),
        ("dropped (no link)", "dropped_unlinked"),
    ] {
        if let Some(v) = inp.f(&["stats", key]) {
            items.push((label, fmt_num(v)));
        }
    }
    cards(out, &items);
    out.push_str("</section>");
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fika-report-test-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).expect("mkdir");
        d
    }

    const METRICS: &str = r#"{
      "scenario": "demo<script>alert(1)</script>", "seed": 7, "nodes": 5, "links": 4,
      "virtual_time_s": 300.0, "wall_s": 0.5, "events_per_s": 1234.5, "peak_rss_bytes": 1048576,
      "stats": {"events": 10, "messages_sent": 8, "messages_delivered": 8, "bytes_sent": 2048,
        "dropped_loss": 0, "dropped_partition": 0, "dropped_down": 0, "dropped_unlinked": 0,
        "by_kind": [{"kind": "inv", "count": 3, "bytes": 100}, {"kind": "block", "count": 2, "bytes": 900}]},
      "propagation": {"items": 2, "median_s": [0.1, 0.2, 0.2, 0.3], "p90_s": [0.1, 0.2, 0.2, 0.3],
        "mean_s": [0.1, 0.2, 0.2, 0.3], "not_reached": [0, 0, 0, 1]},
      "bitcoin": {"best_height": 3, "blocks_mined": 4, "stale_blocks": 1, "stale_rate": 0.25,
        "fork_lengths": {"1": 1}, "reorgs": {"1": 2}, "mean_block_interval_s": 100.0, "txs_created": 1,
        "txs_confirmed": 1, "throughput_tps": 0.003, "confirmation_1_s": [5.0, 5.0],
        "confirmation_6_s": [100.0, 100.0], "mempool_txs_max": 2, "mempool_txs_mean": 1.0,
        "conservation_ok": false},
      "powpeg": {"side_height": 10, "pegins_sent": 2, "pegins_credited": 2, "conservation_violations": 0,
        "conservation_ok": true, "pegin_latency_s": [400.0, 500.0, 410.0], "federation_btc_final": 0.5},
      "digest": "abc123"
    }"#;

    fn write_all(d: &Path) {
        let files = [
            ("metrics.json", METRICS),
            (
                "propagation.csv",
                "item,created_s,origin,reached,t50_s,t90_s,t95_s,t99_s\n1,0.5,0,5,0.1,0.2,0.2,0.3\n2,60.0,1,4,0.1,0.2,0.2,\n",
            ),
            (
                "blocks.csv",
                "hash,height,miner,mined_s,txs,size_bytes,on_best_chain\naa,1,m1,1.0,1,173,true\nbb,2,m2,9.0,1,173,true\ncc,2,m1,9.5,1,173,false\ndd,3,m1,20.0,1,173,true\n",
            ),
            (
                "confirmations.csv",
                "txid,created_s,first_confirmation_s,sixth_confirmation_s\nff,30.0,5.0,100.0\nee,31.0,,\n",
            ),
            (
                "miners.csv",
                "node,hashrate_share,mined,on_best_chain,revenue_share\nm1,0.5,3,2,0.666667\n<b>m2</b>,0.5,1,1,0.333333\n",
            ),
            (
                "wallets.csv",
                "wallet,confirmed_btc,unconfirmed_btc,payments_sent,payments_failed\nalice&bob,59.0,0.0,1,0\n",
            ),
            (
                "mempool.csv",
                "time_s,nodes,mean_txs,max_txs,mean_vbytes\n0,5,0.0,0,0.0\n10,5,1.5,2,300.0\n20,5,0.5,1,100.0\n",
            ),
            (
                "pegins.csv",
                "btc_txid,sent_s,credited_s,latency_s\naa,100.0,500.0,400.0\nbb,200.0,700.0,500.0\n",
            ),
            (
                "pegouts.csv",
                "request_tx,btc_txid,sent_s,released_s,btc_included_s,fee_share_sat\naa,bb,100.0,400.0,450.0,1000\n",
            ),
            (
                "federation.csv",
                "side_block,time_s,federation_btc,reserved_btc,pegged_in_btc,pegged_out_btc\n0,0,0.0,0.0,0.0,0.0\n1,3,0.5,0.0,0.5,0.0\n",
            ),
            (
                "scenario.resolved.toml",
                "name = \"demo\"\ndescription = \"a <tiny> run\"\nprotocol = \"bitcoin\"\n",
            ),
        ];
        for (n, t) in files {
            std::fs::write(d.join(n), t).expect("write");
        }
    }

    #[test]
    fn full_directory_gives_every_section() {
        let d = tempdir("full");
        write_all(&d);
        let path = write_report(&d).expect("report");
        assert_eq!(path, d.join("report.html"));
        let html = std::fs::read_to_string(&path).expect("read");
        for id in [
            "summary",
            "invariants",
            "propagation",
            "bitcoin",
            "miners",
            "wallets",
            "powpeg",
            "pegins",
            "pegouts",
            "federation",
            "network",
            "scenario",
        ] {
            assert!(html.contains(&format!("id=\"{id}\"")), "missing section {id}");
        }
        for title in [
            "Time to reach a share of nodes",
            "Revenue share vs hashrate share",
            "Confirmation latency",
            "Mempool size over time",
            "Stale branches by length",
            "Reorganizations by depth",
            "Blocks mined",
            "Peg-in latency",
            "Peg-out latency",
            "Federation balance over time",
            "Messages by kind",
        ] {
            assert!(html.contains(title), "missing plot {title}");
        }
        // Summary figures and invariants.
        assert!(html.contains(">seed</div><div class=\"v\">7<"));
        assert!(html.contains("abc123"));
        assert!(html.contains("badge bad\">Value conservation"));
        assert!(html.contains("badge ok\">Peg conservation"));
        // Self-contained, clean.
        assert!(!html.contains("<script"), "script tag found");
        assert!(!html.contains("NaN") && !html.contains("inf\""));
        assert!(!html.contains("src=") && !html.contains("<link"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn text_from_files_is_escaped() {
        let d = tempdir("escape");
        write_all(&d);
        let html = render_report(&d).expect("render");
        assert!(html.contains("demo&lt;script&gt;alert(1)&lt;/script&gt;"));
        assert!(html.contains("&lt;b&gt;m2&lt;/b&gt;"));
        assert!(html.contains("alice&amp;bob"));
        assert!(html.contains("a &lt;tiny&gt; run"));
        assert!(!html.contains("<b>m2") && !html.contains("<tiny>") && !html.contains("alice&bob"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn empty_directory_gives_page_without_plots() {
        let d = tempdir("empty");
        let html = std::fs::read_to_string(write_report(&d).expect("report")).expect("read");
        assert!(html.starts_with("<!DOCTYPE html>") && html.trim_end().ends_with("</html>"));
        assert!(html.contains("id=\"summary\""));
        assert!(!html.contains("<svg"));
        // Header-only CSVs and a broken metrics.json still give a page.
        std::fs::write(d.join("metrics.json"), "{not json").expect("w");
        std::fs::write(d.join("propagation.csv"), "item,created_s,origin,reached,t50_s,t90_s,t95_s,t99_s\n")
            .expect("w");
        std::fs::write(d.join("wallets.csv"), "wallet,confirmed_btc\n").expect("w");
        std::fs::write(d.join("mempool.csv"), "").expect("w");
        let html = render_report(&d).expect("render");
        assert!(html.contains("metrics.json could not be parsed"));
        assert!(html.contains("No wallets."));
        assert!(!html.contains("<svg"));
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn many_wallets_are_folded_with_a_histogram() {
        let d = tempdir("wallets");
        let mut t = String::from("wallet,confirmed_btc,unconfirmed_btc,payments_sent,payments_failed\n");
        for i in 0..40 {
            t += &format!("w{i},{}.0,0.0,1,0\n", i % 4);
        }
        std::fs::write(d.join("wallets.csv"), t).expect("w");
        let html = render_report(&d).expect("render");
        assert!(html.contains("all 40 wallets") && html.contains("Wallet balances</text>"));
        assert_eq!(html.matches("<td>w").count(), 40);
        let _ = std::fs::remove_dir_all(&d);
    }

    #[test]
    fn csv_parsing_and_thinning() {
        let c = Csv::parse("a,b\n1,2\n\n3,x\n4,\n");
        assert_eq!(c.rows.len(), 3);
        assert_eq!(c.column("a"), vec![1.0, 3.0, 4.0]);
        assert_eq!(c.pairs("a", "b"), vec![(1.0, 2.0)]);
        let pts: Vec<(f64, f64)> = (0..10_000).map(|i| (f64::from(i), 0.0)).collect();
        let t = thin(pts, 100);
        assert_eq!(t.len(), 100);
        assert_eq!((t[0].0, t[99].0), (0.0, 9999.0));
    }
}
