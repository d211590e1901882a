//! What a run leaves behind: the streamed `events.jsonl`, metric collectors
//! fed from the event stream, `metrics.json`, CSV tables and the summary
//! table printed at the end, and `report.html` with its SVG plots (of a
//! run, or of a sweep's `sweep.csv`).

pub mod html;
pub mod jsonl;
pub mod propagation;
pub mod svg;
pub mod sweep;
pub mod table;

pub use html::{ReportError, render_report, write_report};
pub use jsonl::JsonlWriter;
pub use propagation::{PropagationSummary, PropagationTracker};
pub use svg::{BarChart, Cdf, Histogram, LinePlot, Mark, Series};
pub use sweep::{render_sweep, write_sweep_report};
pub use table::SummaryTable;

/// Peak resident memory of this process in bytes (Linux `VmHWM`), if known.
pub fn peak_rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// The `q`-quantile (0..=1) of sorted values, by nearest rank.
pub fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    if sorted.is_empty() {
        return None;
    }
    let rank = (q.clamp(0.0, 1.0) * sorted.len() as f64).ceil() as usize;
    Some(sorted[rank.clamp(1, sorted.len()) - 1])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=10).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), Some(5.0));
        assert_eq!(quantile(&v, 0.9), Some(9.0));
        assert_eq!(quantile(&v, 0.95), Some(10.0));
        assert_eq!(quantile(&v, 0.0), Some(1.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
