//! `report.html` of a sweep: one self-contained page drawn from `sweep.csv`
//! (one row per grid point and metric: the parameter values, then
//! `metric, n, mean, sd, ci_low, ci_high`).
//!
//! Every metric is plotted against the first parameter, its mean with the
//! 95 % confidence interval as whiskers, one series per combination of the
//! other parameters. A metric given closed forms (`overlays`) gets one plot
//! per combination instead, the measurement beside its closed forms drawn
//! dashed; the closed forms get no plot of their own. A non-numeric first
//! parameter is drawn at its position in the grid (0, 1, 2, …).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::path::{Path, PathBuf};

use crate::html::{CSS, ReportError, note, plot, section, table};
use crate::svg::{LinePlot, escape};

/// Splits one CSV line, honouring double quotes (`""` inside quotes is a quote).
fn split_csv(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(ch) = chars.next() {
        match (ch, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            ('"', _) => quoted = !quoted,
            (',', false) => out.push(std::mem::take(&mut cur)),
            _ => cur.push(ch),
        }
    }
    out.push(cur);
    out
}

/// One aggregated row of `sweep.csv`.
#[derive(Clone, Debug, PartialEq)]
struct Row {
    values: Vec<String>,
    metric: String,
    mean: Option<f64>,
    ci: Option<(f64, f64)>,
}

/// `sweep.csv`, parsed: parameter names and rows.
fn parse(text: &str) -> (Vec<String>, Vec<Row>, Vec<Vec<String>>) {
    let mut lines = text.lines().filter(|l| !l.trim().is_empty());
    let header = lines.next().map(split_csv).unwrap_or_default();
    let k = header.iter().position(|h| h == "metric").unwrap_or(header.len());
    let params = header[..k].to_vec();
    let mut rows = Vec::new();
    let mut raw = Vec::new();
    for l in lines {
        let cells = split_csv(l);
        if cells.len() < k + 6 {
            continue;
        }
        let num = |i: usize| cells[i].trim().parse::<f64>().ok().filter(|v| v.is_finite());
        rows.push(Row {
            values: cells[..k].to_vec(),
            metric: cells[k].clone(),
            mean: num(k + 2),
            ci: num(k + 4).zip(num(k + 5)),
        });
        raw.push(cells);
    }
    (params, rows, raw)
}

/// The page for `sweep.csv` text; `title` heads it, `overlays` pairs a
/// measured metric with the metrics holding its closed forms.
pub fn render_sweep(title: &str, csv: &str, overlays: &[(&str, &[&str])]) -> String {
    let (params, rows, raw) = parse(csv);
    let mut out = String::with_capacity(64 * 1024);
    let _ = write!(
        out,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>fika sweep — {t}</title><style>{CSS}</style></head><body><header><h1>{t}</h1>\
         <p>sweep over {p}</p></header><main>",
        t = escape(title),
        p = escape(&if params.is_empty() { "nothing".to_owned() } else { params.join(" × ") }),
    );
    // The first parameter's values in grid order, as x positions.
    let mut firsts: Vec<String> = Vec::new();
    for r in &rows {
        if let Some(v) = r.values.first() {
            if !firsts.contains(v) {
                firsts.push(v.clone());
            }
        }
    }
    let numeric = firsts.iter().all(|v| v.parse::<f64>().is_ok());
    let x_of = |v: &str| -> f64 {
        if numeric {
            v.parse().unwrap_or(f64::NAN)
        } else {
            firsts.iter().position(|f| f == v).unwrap_or(0) as f64
        }
    };
    let x_label = match params.first() {
        Some(p) if numeric => p.clone(),
        Some(p) => format!("{p} (position in the grid)"),
        None => String::new(),
    };
    // Metrics in order of first appearance; series keys: the other parameters.
    let mut metrics: Vec<&str> = Vec::new();
    for r in &rows {
        if !metrics.contains(&r.metric.as_str()) {
            metrics.push(&r.metric);
        }
    }
    let overlaid: Vec<&str> = overlays.iter().flat_map(|(_, c)| c.iter().copied()).collect();
    let rest_key = |r: &Row| -> String {
        params.iter().zip(&r.values).skip(1).map(|(p, v)| format!("{p}={v}")).collect::<Vec<_>>().join(", ")
    };
    type Points = BTreeMap<String, Vec<(f64, f64, f64, f64)>>;
    let series_of = |metric: &str| -> Points {
        let mut by: Points = BTreeMap::new();
        for r in rows.iter().filter(|r| r.metric == metric) {
            let (Some(x), Some(y)) = (r.values.first().map(|v| x_of(v)), r.mean) else { continue };
            let (lo, hi) = r.ci.unwrap_or((f64::NAN, f64::NAN));
            by.entry(rest_key(r)).or_default().push((x, y, lo, hi));
        }
        for v in by.values_mut() {
            v.sort_by(|a, b| a.0.total_cmp(&b.0));
        }
        by
    };
    section(&mut out, "plots", "Metrics against the first parameter");
    if params.is_empty() || rows.is_empty() {
        note(&mut out, "No parameter was swept: see the table below.");
    } else {
        note(
            &mut out,
            "Mean over the seeds of each grid point, with its 95 % confidence interval; \
             dashed lines are closed forms computed for the same parameters.",
        );
        out.push_str("<div class=\"plots\">");
        for m in metrics.iter().filter(|m| !overlaid.contains(m)) {
            let closed = overlays.iter().find(|(k, _)| k == m).map(|(_, c)| *c).unwrap_or(&[]);
            let measured = series_of(m);
            if closed.is_empty() {
                let mut p = LinePlot::new(*m, x_label.clone(), *m);
                for (key, pts) in measured {
                    p = p.series_with_intervals(if key.is_empty() { "mean".to_owned() } else { key }, pts);
                }
                plot(&mut out, p.to_svg());
                continue;
            }
            let closed_series: Vec<(&str, Points)> = closed.iter().map(|c| (*c, series_of(c))).collect();
            for (key, pts) in measured {
                let title = if key.is_empty() { (*m).to_owned() } else { format!("{m} — {key}") };
                let mut p = LinePlot::new(title, x_label.clone(), *m).series_with_intervals("measured", pts);
                for (c, by) in &closed_series {
                    if let Some(cp) = by.get(&key) {
                        p = p.dashed_series(*c, cp.iter().map(|(x, y, _, _)| (*x, *y)).collect());
                    }
                }
                plot(&mut out, p.to_svg());
            }
        }
        out.push_str("</div>");
    }
    out.push_str("</section>");
    section(&mut out, "table", "sweep.csv");
    let mut header: Vec<String> = params.clone();
    header.extend(["metric", "n", "mean", "sd", "ci_low", "ci_high"].map(String::from));
    let _ = write!(out, "<details><summary>{} rows</summary>", raw.len());
    table(&mut out, &header, &raw, params.len() + 1);
    out.push_str("</details></section>");
    out.push_str("</main><footer>Generated by fika-report from sweep.csv.</footer></body></html>\n");
    out
}

/// Reads `dir/sweep.csv` and writes `dir/report.html`; returns its path.
pub fn write_sweep_report(
    dir: &Path,
    title: &str,
    overlays: &[(&str, &[&str])],
) -> Result<PathBuf, ReportError> {
    let src = dir.join("sweep.csv");
    let csv = std::fs::read_to_string(&src).map_err(|source| ReportError::Io { path: src, source })?;
    let path = dir.join("report.html");
    std::fs::write(&path, render_sweep(title, &csv, overlays))
        .map_err(|source| ReportError::Io { path: path.clone(), source })?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "\
a,b,metric,n,mean,sd,ci_low,ci_high
1,x,success,10,0.5,0.1,0.4,0.6
1,x,theory,10,0.45,0,0.45,0.45
2,x,success,10,0.2,0.1,0.1,0.3
2,x,theory,10,0.25,0,0.25,0.25
1,\"y,z\",success,10,0.7,0.1,0.6,0.8
1,\"y,z\",theory,10,0.65,0,0.65,0.65
2,\"y,z\",success,10,0.4,0.1,0.3,0.5
2,\"y,z\",theory,10,0.35,0,0.35,0.35
1,x,stale,10,0.01,,,
2,x,stale,10,0.02,,,
";

    #[test]
    fn quoted_cells_split_right() {
        assert_eq!(split_csv("1,\"y,z\",\"a \"\"q\"\"\""), vec!["1", "y,z", "a \"q\""]);
    }

    #[test]
    fn closed_forms_are_drawn_beside_each_measurement() {
        let html = render_sweep("demo", CSV, &[("success", &["theory"])]);
        // One plot per value of b for the overlaid metric, one for stale.
        assert_eq!(html.matches("<svg").count(), 3, "{html}");
        assert!(html.contains("success — b=x") && html.contains("success — b=y,z"));
        assert!(!html.contains("<title>theory"), "closed forms get no plot of their own");
        assert_eq!(html.matches("stroke-dasharray").count(), 2, "one dashed closed form per plot");
        // Whiskers for the measured points with intervals (4 success points).
        assert_eq!(html.matches("class=\"interval").count(), 4);
        assert!(html.contains("<details><summary>10 rows</summary>"));
    }

    #[test]
    fn empty_or_unswept_csv_gives_a_page_without_plots() {
        let html = render_sweep("none", "metric,n,mean,sd,ci_low,ci_high\nstale,3,0.1,0.01,0.09,0.11\n", &[]);
        assert!(!html.contains("<svg") && html.contains("No parameter was swept"));
        let html = render_sweep("empty", "", &[]);
        assert!(html.contains("</html>"));
    }
}
