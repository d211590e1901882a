//! A small plotting library that renders self-contained SVG: line plots,
//! histograms, CDFs and grouped bar charts, with axes, ticks, axis labels
//! and a legend.
//!
//! Output is deterministic (fixed-precision coordinates, no randomness, no
//! clock) and never contains `NaN` or infinities: non-finite input values are
//! dropped, and a plot without data renders a framed "no data" note.
//! All text is escaped.

use std::fmt::Write;

/// Width of every plot, in SVG user units.
pub const WIDTH: f64 = 640.0;
/// Height of every plot, in SVG user units.
pub const HEIGHT: f64 = 340.0;
const ML: f64 = 72.0;
const MR: f64 = 18.0;
const MT: f64 = 34.0;
const MB: f64 = 62.0;

/// Series colours, in order.
pub const PALETTE: [&str; 8] =
    ["#4269d0", "#efb118", "#ff725c", "#3ca951", "#a463f2", "#6cc5b0", "#ff8ab7", "#9c6b4e"];

/// Most points a CDF draws per series; larger samples are drawn through
/// evenly spaced quantiles.
pub const CDF_MAX_STEPS: usize = 1000;

/// Escapes `&`, `<`, `>`, `"` and `'` for use in HTML/SVG text and attributes.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A coordinate, with one decimal; non-finite values become 0.
fn c(v: f64) -> String {
    if v.is_finite() { format!("{:.1}", v + 0.0) } else { "0.0".into() }
}

/// Nice tick positions covering `[lo, hi]`: returns the widened range and
/// the ticks (steps of 1, 2 or 5 times a power of ten).
pub fn nice_ticks(lo: f64, hi: f64, target: usize) -> (f64, f64, Vec<f64>) {
    let (mut lo, mut hi) = if lo.is_finite() && hi.is_finite() { (lo, hi) } else { (0.0, 1.0) };
    if hi < lo {
        std::mem::swap(&mut lo, &mut hi);
    }
    if hi - lo <= f64::EPSILON * hi.abs().max(lo.abs()).max(1e-300) {
        let d = if lo == 0.0 { 1.0 } else { lo.abs() * 0.1 };
        lo -= d;
        hi += d;
    }
    let raw = (hi - lo) / target.max(1) as f64;
    let mag = 10f64.powf(raw.log10().floor());
    let norm = raw / mag;
    let step = mag
        * if norm <= 1.0 {
            1.0
        } else if norm <= 2.0 {
            2.0
        } else if norm <= 5.0 {
            5.0
        } else {
            10.0
        };
    let first = (lo / step + 1e-9).floor();
    let last = (hi / step - 1e-9).ceil();
    let n = (last - first).round().clamp(1.0, 1000.0) as usize;
    let ticks: Vec<f64> = (0..=n).map(|i| (first + i as f64) * step + 0.0).collect();
    (ticks[0], ticks[n], ticks)
}

/// Formats a tick value, with as many decimals as the tick step needs;
/// large and tiny magnitudes use exponent notation (`2e9`, `1.5e-7`).
pub fn format_tick(v: f64, step: f64) -> String {
    if !v.is_finite() {
        return String::new();
    }
    if v.abs() < step.abs() * 1e-6 || v == 0.0 {
        return "0".into();
    }
    let step_exp = if step > 0.0 && step.is_finite() { step.log10().floor() } else { 0.0 };
    if v.abs() >= 1e6 || v.abs() < 1e-4 {
        let e = v.abs().log10().floor();
        let m = v / 10f64.powf(e);
        let decimals = (e - step_exp).clamp(0.0, 6.0) as usize;
        let m = trim_zeros(format!("{m:.decimals$}"));
        return format!("{m}e{e}");
    }
    let decimals = (-step_exp).clamp(0.0, 9.0) as usize;
    trim_zeros(format!("{v:.decimals$}"))
}

fn trim_zeros(s: String) -> String {
    if s.contains('.') { s.trim_end_matches('0').trim_end_matches('.').to_string() } else { s }
}

/// Axes: data ranges mapped onto the plot area.
struct Frame {
    x: (f64, f64),
    y: (f64, f64),
}

impl Frame {
    fn px(&self, x: f64) -> f64 {
        ML + (x - self.x.0) / (self.x.1 - self.x.0) * (WIDTH - ML - MR)
    }
    fn py(&self, y: f64) -> f64 {
        HEIGHT - MB - (y - self.y.0) / (self.y.1 - self.y.0) * (HEIGHT - MT - MB)
    }
}

fn open(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" class=\"plot\" viewBox=\"0 0 {W} {H}\" \
         width=\"{W}\" height=\"{H}\" role=\"img\" font-family=\"system-ui, sans-serif\" font-size=\"11\">\
         <title>{t}</title><rect class=\"bg\" x=\"0\" y=\"0\" width=\"{W}\" height=\"{H}\" fill=\"#fff\"/>\
         <text class=\"plot-title\" x=\"{tx}\" y=\"20\" text-anchor=\"middle\" font-size=\"14\" font-weight=\"600\">{t}</text>",
        W = WIDTH,
        H = HEIGHT,
        t = escape(title),
        tx = c(WIDTH / 2.0),
    );
}

fn no_data(title: &str) -> String {
    let mut out = String::new();
    open(&mut out, title);
    let _ = write!(
        out,
        "<rect x=\"{ML}\" y=\"{MT}\" width=\"{w}\" height=\"{h}\" fill=\"none\" stroke=\"#ccc\"/>\
         <text class=\"no-data\" x=\"{x}\" y=\"{y}\" text-anchor=\"middle\" fill=\"#888\" font-size=\"13\">no data</text></svg>",
        w = c(WIDTH - ML - MR),
        h = c(HEIGHT - MT - MB),
        x = c(WIDTH / 2.0),
        y = c(HEIGHT / 2.0),
    );
    out
}

/// Draws grid, ticks, tick labels and axis labels. `x_cats` replaces the
/// numeric x ticks with category labels centred at the given x positions.
fn axes(
    out: &mut String,
    f: &Frame,
    xt: &[f64],
    yt: &[f64],
    x_cats: Option<&[(f64, String)]>,
    x_label: &str,
    y_label: &str,
) {
    let (l, r, t, b) = (ML, WIDTH - MR, MT, HEIGHT - MB);
    let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
    for &v in yt {
        let y = f.py(v);
        let _ = write!(
            out,
            "<line class=\"grid\" x1=\"{}\" y1=\"{y}\" x2=\"{}\" y2=\"{y}\" stroke=\"#e6e6e6\"/>\
             <text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"end\" fill=\"#444\">{}</text>",
            c(l),
            c(r),
            c(l - 6.0),
            c(y + 4.0),
            escape(&format_tick(v, ystep)),
            y = c(y),
        );
    }
    match x_cats {
        Some(cats) => {
            let rotate = cats.len() > 6;
            for (x, name) in cats {
                let max = if rotate { 12 } else { 16 };
                let name: String = if name.chars().count() > max {
                    name.chars().take(max - 1).chain(['…']).collect()
                } else {
                    name.clone()
                };
                if rotate {
                    let _ = write!(
                        out,
                        "<text class=\"tick\" x=\"{x}\" y=\"{y}\" text-anchor=\"end\" fill=\"#444\" \
                         transform=\"rotate(-30 {x} {y})\">{}</text>",
                        escape(&name),
                        x = c(*x),
                        y = c(b + 14.0),
                    );
                } else {
                    let _ = write!(
                        out,
                        "<text class=\"tick\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
                        c(*x),
                        c(b + 16.0),
                        escape(&name)
                    );
                }
            }
        }
        None => {
            let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
            for &v in xt {
                let x = f.px(v);
                let _ = write!(
                    out,
                    "<line class=\"grid\" x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#f0f0f0\"/>\
                     <line x1=\"{x}\" y1=\"{}\" x2=\"{x}\" y2=\"{}\" stroke=\"#444\"/>\
                     <text class=\"tick\" x=\"{x}\" y=\"{}\" text-anchor=\"middle\" fill=\"#444\">{}</text>",
                    c(t),
                    c(b),
                    c(b),
                    c(b + 4.0),
                    c(b + 16.0),
                    escape(&format_tick(v, xstep)),
                    x = c(x),
                );
            }
        }
    }
    let _ = write!(
        out,
        "<polyline class=\"axis\" points=\"{},{} {},{} {},{}\" fill=\"none\" stroke=\"#444\"/>\
         <text class=\"axis-label\" x=\"{}\" y=\"{}\" text-anchor=\"middle\" fill=\"#222\" font-size=\"12\">{}</text>\
         <text class=\"axis-label\" x=\"{yx}\" y=\"{yy}\" text-anchor=\"middle\" fill=\"#222\" font-size=\"12\" \
         transform=\"rotate(-90 {yx} {yy})\">{}</text>",
        c(l),
        c(t),
        c(l),
        c(b),
        c(r),
        c(b),
        c((l + r) / 2.0),
        c(HEIGHT - 6.0),
        escape(x_label),
        escape(y_label),
        yx = c(16.0),
        yy = c((t + b) / 2.0),
    );
}

fn legend(out: &mut String, labels: &[&str]) {
    let labels: Vec<(usize, &str)> =
        labels.iter().copied().enumerate().filter(|(_, l)| !l.is_empty()).collect();
    if labels.is_empty() {
        return;
    }
    let longest = labels.iter().map(|(_, l)| l.chars().count()).max().unwrap_or(0).min(40);
    let w = 28.0 + longest as f64 * 6.2;
    let x0 = WIDTH - MR - w - 6.0;
    let y0 = MT + 6.0;
    let _ = write!(
        out,
        "<g class=\"legend\"><rect x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"#fff\" fill-opacity=\"0.85\" stroke=\"#ccc\"/>",
        c(x0),
        c(y0),
        c(w),
        c(labels.len() as f64 * 16.0 + 6.0)
    );
    for (k, (i, l)) in labels.iter().enumerate() {
        let y = y0 + 12.0 + k as f64 * 16.0;
        let _ = write!(
            out,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"10\" fill=\"{}\"/><text x=\"{}\" y=\"{}\" fill=\"#222\">{}</text>",
            c(x0 + 6.0),
            c(y - 8.0),
            PALETTE[i % PALETTE.len()],
            c(x0 + 24.0),
            c(y + 1.0),
            escape(l)
        );
    }
    out.push_str("</g>");
}

fn finite(v: &[f64]) -> Vec<f64> {
    v.iter().copied().filter(|x| x.is_finite()).collect()
}

fn min_max(it: impl Iterator<Item = f64>) -> Option<(f64, f64)> {
    it.fold(None, |acc, v| match acc {
        None => Some((v, v)),
        Some((lo, hi)) => Some((lo.min(v), hi.max(v))),
    })
}

/// One named series of `(x, y)` points.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Series {
    /// Legend label (empty: not in the legend).
    pub label: String,
    /// Points, drawn in order.
    pub points: Vec<(f64, f64)>,
    /// Drawn dashed (e.g. a closed form beside measurements).
    pub dashed: bool,
    /// Intervals drawn as whiskers: `(x, low, high)`.
    pub intervals: Vec<(f64, f64, f64)>,
}

/// How a [`LinePlot`] draws its series.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mark {
    /// A polyline through the points.
    #[default]
    Line,
    /// A polyline plus a dot at every point.
    LineDots,
    /// Dots only (a scatter plot).
    Dots,
}

/// Line plot of one or more series against numeric axes.
///
/// Each series becomes one `<polyline class="series">` (unless
/// [`Mark::Dots`]) whose `points` hold exactly the finite input points.
#[derive(Clone, Debug, Default)]
pub struct LinePlot {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// The series.
    pub series: Vec<Series>,
    /// How to draw.
    pub mark: Mark,
    /// Fixed y range; `None` fits the data.
    pub y_range: Option<(f64, f64)>,
    /// Whether the fitted y range includes zero.
    pub y_from_zero: bool,
}

impl LinePlot {
    /// An empty plot with a title and axis labels.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        LinePlot {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Default::default()
        }
    }

    /// Adds a series.
    pub fn series(mut self, label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series { label: label.into(), points, ..Series::default() });
        self
    }

    /// Adds a dashed series.
    pub fn dashed_series(mut self, label: impl Into<String>, points: Vec<(f64, f64)>) -> Self {
        self.series.push(Series { label: label.into(), points, dashed: true, ..Series::default() });
        self
    }

    /// Adds a series with an interval at each point, `(x, y, low, high)`,
    /// drawn as whiskers (e.g. a 95 % confidence interval).
    pub fn series_with_intervals(
        mut self,
        label: impl Into<String>,
        points: Vec<(f64, f64, f64, f64)>,
    ) -> Self {
        let intervals = points.iter().map(|(x, _, lo, hi)| (*x, *lo, *hi)).collect();
        let points = points.iter().map(|(x, y, _, _)| (*x, *y)).collect();
        self.series.push(Series { label: label.into(), points, intervals, dashed: false });
        self
    }

    /// Sets how series are drawn.
    pub fn mark(mut self, mark: Mark) -> Self {
        self.mark = mark;
        self
    }

    /// Makes the fitted y range include zero.
    pub fn y_from_zero(mut self) -> Self {
        self.y_from_zero = true;
        self
    }

    /// Whether no series has a finite point.
    pub fn is_empty(&self) -> bool {
        self.series.iter().all(|s| s.points.iter().all(|(x, y)| !x.is_finite() || !y.is_finite()))
    }

    /// Renders the plot as a standalone `<svg>` element.
    pub fn to_svg(&self) -> String {
        let series: Vec<Vec<(f64, f64)>> = self
            .series
            .iter()
            .map(|s| s.points.iter().copied().filter(|(x, y)| x.is_finite() && y.is_finite()).collect())
            .collect();
        let Some((x_lo, x_hi)) = min_max(series.iter().flatten().map(|p| p.0)) else {
            return no_data(&self.title);
        };
        let whiskers: Vec<Vec<(f64, f64, f64)>> = self
            .series
            .iter()
            .map(|s| {
                s.intervals
                    .iter()
                    .copied()
                    .filter(|(x, a, b)| x.is_finite() && a.is_finite() && b.is_finite())
                    .collect()
            })
            .collect();
        let ys = series
            .iter()
            .flatten()
            .map(|p| p.1)
            .chain(whiskers.iter().flatten().flat_map(|(_, a, b)| [*a, *b]));
        let (mut y_lo, mut y_hi) = min_max(ys).unwrap_or((0.0, 1.0));
        if self.y_from_zero {
            y_lo = y_lo.min(0.0);
            y_hi = y_hi.max(0.0);
        }
        if let Some((a, b)) = self.y_range.filter(|(a, b)| a.is_finite() && b.is_finite() && a < b) {
            (y_lo, y_hi) = (a, b);
        }
        let (x0, x1, xt) = nice_ticks(x_lo, x_hi, 8);
        let (y0, y1, yt) = nice_ticks(y_lo, y_hi, 6);
        let f = Frame { x: (x0, x1), y: (y0, y1) };
        let mut out = String::new();
        open(&mut out, &self.title);
        axes(&mut out, &f, &xt, &yt, None, &self.x_label, &self.y_label);
        for (i, pts) in series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            for (x, lo, hi) in &whiskers[i] {
                let (px, a, b) = (c(f.px(*x)), c(f.py(*lo)), c(f.py(*hi)));
                let (l, r) = (c(f.px(*x) - 3.0), c(f.px(*x) + 3.0));
                let _ = write!(
                    out,
                    "<path class=\"interval s{i}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1\" \
                     d=\"M{px},{a}V{b}M{l},{a}H{r}M{l},{b}H{r}\"/>"
                );
            }
            if self.mark != Mark::Dots && !pts.is_empty() {
                let dash = if self.series[i].dashed { " stroke-dasharray=\"6 4\"" } else { "" };
                let _ = write!(
                    out,
                    "<polyline class=\"series s{i}\" fill=\"none\" stroke=\"{color}\" stroke-width=\"1.8\"{dash} points=\""
                );
                for (k, (x, y)) in pts.iter().enumerate() {
                    if k > 0 {
                        out.push(' ');
                    }
                    let _ = write!(out, "{},{}", c(f.px(*x)), c(f.py(*y)));
                }
                out.push_str("\"/>");
            }
            if self.mark != Mark::Line {
                for (x, y) in pts {
                    let _ = write!(
                        out,
                        "<circle class=\"dot s{i}\" cx=\"{}\" cy=\"{}\" r=\"2.5\" fill=\"{color}\"/>",
                        c(f.px(*x)),
                        c(f.py(*y))
                    );
                }
            }
        }
        if self.series.len() > 1 || self.series.iter().any(|s| !s.label.is_empty()) {
            legend(&mut out, &self.series.iter().map(|s| s.label.as_str()).collect::<Vec<_>>());
        }
        out.push_str("</svg>");
        out
    }
}

/// Empirical cumulative distribution of one or more samples.
///
/// A sample of `n` finite values (`n ≤` [`CDF_MAX_STEPS`]) is drawn as a
/// step polyline of `2n` points, rising by `1/n` at each value.
#[derive(Clone, Debug, Default)]
pub struct Cdf {
    /// Title above the plot.
    pub title: String,
    /// X axis label (the measured quantity).
    pub x_label: String,
    /// Named samples.
    pub series: Vec<(String, Vec<f64>)>,
}

impl Cdf {
    /// An empty CDF plot.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>) -> Self {
        Cdf { title: title.into(), x_label: x_label.into(), series: Vec::new() }
    }

    /// Adds a sample.
    pub fn series(mut self, label: impl Into<String>, values: Vec<f64>) -> Self {
        self.series.push((label.into(), values));
        self
    }

    /// The step points of one sample's CDF.
    pub fn steps(values: &[f64]) -> Vec<(f64, f64)> {
        let mut v = finite(values);
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n == 0 {
            return Vec::new();
        }
        let picks: Vec<(f64, f64)> = if n <= CDF_MAX_STEPS {
            v.iter().enumerate().map(|(i, x)| (*x, (i + 1) as f64 / n as f64)).collect()
        } else {
            (1..=CDF_MAX_STEPS)
                .map(|k| {
                    let idx = (k * n).div_ceil(CDF_MAX_STEPS) - 1;
                    (v[idx], (idx + 1) as f64 / n as f64)
                })
                .collect()
        };
        let mut pts = Vec::with_capacity(picks.len() * 2);
        let mut prev = 0.0;
        for (x, p) in picks {
            pts.push((x, prev));
            pts.push((x, p));
            prev = p;
        }
        pts
    }

    /// Renders the plot as a standalone `<svg>` element.
    pub fn to_svg(&self) -> String {
        let mut p = LinePlot::new(&self.title, &self.x_label, "fraction ≤ x");
        p.y_range = Some((0.0, 1.0));
        for (label, v) in &self.series {
            p = p.series(label, Self::steps(v));
        }
        p.to_svg()
    }
}

/// Histogram of one or more samples over shared, equal-width bins.
///
/// Draws `bins` `<rect class="bar">` per series (empty bins with height 0);
/// several series overlap with transparency.
#[derive(Clone, Debug, Default)]
pub struct Histogram {
    /// Title above the plot.
    pub title: String,
    /// X axis label (the measured quantity).
    pub x_label: String,
    /// Named samples.
    pub series: Vec<(String, Vec<f64>)>,
    /// Number of bins; 0 picks `ceil(sqrt(n))` within 5..=40.
    pub bins: usize,
}

impl Histogram {
    /// An empty histogram.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>) -> Self {
        Histogram { title: title.into(), x_label: x_label.into(), series: Vec::new(), bins: 0 }
    }

    /// Adds a sample.
    pub fn series(mut self, label: impl Into<String>, values: Vec<f64>) -> Self {
        self.series.push((label.into(), values));
        self
    }

    /// Sets the number of bins.
    pub fn bins(mut self, bins: usize) -> Self {
        self.bins = bins;
        self
    }

    /// The bin edges `(lo, width, bins)` and per-series counts.
    pub fn counts(&self) -> Option<(f64, f64, usize, Vec<Vec<u64>>)> {
        let data: Vec<Vec<f64>> = self.series.iter().map(|(_, v)| finite(v)).collect();
        let (lo, hi) = min_max(data.iter().flatten().copied())?;
        let n = data.iter().map(Vec::len).max().unwrap_or(0);
        let bins = if self.bins > 0 { self.bins } else { ((n as f64).sqrt().ceil() as usize).clamp(5, 40) };
        let (lo, hi) = if hi > lo {
            (lo, hi)
        } else {
            let d = if lo == 0.0 { 0.5 } else { lo.abs() * 0.05 };
            (lo - d, hi + d)
        };
        let w = (hi - lo) / bins as f64;
        let counts = data
            .iter()
            .map(|v| {
                let mut c = vec![0u64; bins];
                for x in v {
                    let b = (((x - lo) / w).floor().max(0.0) as usize).min(bins - 1);
                    c[b] += 1;
                }
                c
            })
            .collect();
        Some((lo, w, bins, counts))
    }

    /// Renders the plot as a standalone `<svg>` element.
    pub fn to_svg(&self) -> String {
        let Some((lo, w, bins, counts)) = self.counts() else {
            return no_data(&self.title);
        };
        let hi = lo + w * bins as f64;
        let max = counts.iter().flatten().copied().max().unwrap_or(0).max(1) as f64;
        let (x0, x1, xt) = nice_ticks(lo, hi, 8);
        let (y0, y1, mut yt) = nice_ticks(0.0, max, 5);
        // Counts are whole numbers: drop fractional ticks.
        if yt.len() > 1 && yt[1] - yt[0] < 1.0 {
            yt.retain(|v| v.fract() == 0.0);
        }
        let f = Frame { x: (x0, x1), y: (y0, y1) };
        let mut out = String::new();
        open(&mut out, &self.title);
        axes(&mut out, &f, &xt, &yt, None, &self.x_label, "count");
        let opacity = if counts.len() > 1 { 0.55 } else { 0.85 };
        let xstep = if xt.len() > 1 { xt[1] - xt[0] } else { 1.0 };
        for (i, cs) in counts.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            for (b, n) in cs.iter().enumerate() {
                let a = lo + w * b as f64;
                let (px0, px1) = (f.px(a), f.px(a + w));
                let (py, pz) = (f.py(*n as f64), f.py(0.0));
                let _ = write!(
                    out,
                    "<rect class=\"bar s{i}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{color}\" \
                     fill-opacity=\"{opacity}\" stroke=\"#fff\" stroke-width=\"0.5\"><title>{}</title></rect>",
                    c(px0),
                    c(py),
                    c((px1 - px0).max(0.0)),
                    c((pz - py).max(0.0)),
                    escape(&format!(
                        "{}{}–{}: {n}",
                        if self.series[i].0.is_empty() {
                            String::new()
                        } else {
                            format!("{}: ", self.series[i].0)
                        },
                        format_tick(a, xstep / 10.0),
                        format_tick(a + w, xstep / 10.0)
                    )),
                );
            }
        }
        if self.series.len() > 1 || self.series.iter().any(|s| !s.0.is_empty()) {
            legend(&mut out, &self.series.iter().map(|s| s.0.as_str()).collect::<Vec<_>>());
        }
        out.push_str("</svg>");
        out
    }
}

/// Grouped bar chart: one group per category, one bar per series.
///
/// Draws `categories × series` `<rect class="bar">` elements.
#[derive(Clone, Debug, Default)]
pub struct BarChart {
    /// Title above the plot.
    pub title: String,
    /// X axis label.
    pub x_label: String,
    /// Y axis label.
    pub y_label: String,
    /// Category names, along the x axis.
    pub categories: Vec<String>,
    /// Named series, one value per category (missing or non-finite: 0).
    pub series: Vec<(String, Vec<f64>)>,
}

impl BarChart {
    /// An empty chart.
    pub fn new(title: impl Into<String>, x_label: impl Into<String>, y_label: impl Into<String>) -> Self {
        BarChart {
            title: title.into(),
            x_label: x_label.into(),
            y_label: y_label.into(),
            ..Default::default()
        }
    }

    /// Sets the categories.
    pub fn categories(mut self, categories: Vec<String>) -> Self {
        self.categories = categories;
        self
    }

    /// Adds a series.
    pub fn series(mut self, label: impl Into<String>, values: Vec<f64>) -> Self {
        self.series.push((label.into(), values));
        self
    }

    /// Renders the chart as a standalone `<svg>` element.
    pub fn to_svg(&self) -> String {
        if self.categories.is_empty() || self.series.is_empty() {
            return no_data(&self.title);
        }
        let val = |s: &[f64], k: usize| s.get(k).copied().filter(|v| v.is_finite()).unwrap_or(0.0);
        let all = self.series.iter().flat_map(|(_, s)| (0..self.categories.len()).map(|k| val(s, k)));
        let (lo, hi) = min_max(all.chain([0.0])).unwrap_or((0.0, 1.0));
        let hi = if hi == lo { lo + 1.0 } else { hi };
        let (y0, y1, yt) = nice_ticks(lo, hi, 6);
        let ncat = self.categories.len() as f64;
        let f = Frame { x: (0.0, ncat), y: (y0, y1) };
        let cats: Vec<(f64, String)> =
            self.categories.iter().enumerate().map(|(k, n)| (f.px(k as f64 + 0.5), n.clone())).collect();
        let mut out = String::new();
        open(&mut out, &self.title);
        axes(&mut out, &f, &[], &yt, Some(&cats), &self.x_label, &self.y_label);
        let group = 0.8 / self.series.len() as f64;
        let ystep = if yt.len() > 1 { yt[1] - yt[0] } else { 1.0 };
        for (i, (label, s)) in self.series.iter().enumerate() {
            let color = PALETTE[i % PALETTE.len()];
            for k in 0..self.categories.len() {
                let v = val(s, k);
                let a = k as f64 + 0.1 + group * i as f64;
                let (px0, px1) = (f.px(a), f.px(a + group));
                let (ya, yb) = (f.py(v.max(0.0)), f.py(v.min(0.0)));
                let _ = write!(
                    out,
                    "<rect class=\"bar s{i}\" x=\"{}\" y=\"{}\" width=\"{}\" height=\"{}\" fill=\"{color}\"><title>{}</title></rect>",
                    c(px0),
                    c(ya),
                    c((px1 - px0 - 1.0).max(0.5)),
                    c((yb - ya).max(0.0)),
                    escape(&format!(
                        "{}{}: {}",
                        if label.is_empty() { String::new() } else { format!("{label}, ") },
                        self.categories[k],
                        format_tick(v, ystep / 100.0)
                    )),
                );
            }
        }
        if self.series.len() > 1 || self.series.iter().any(|s| !s.0.is_empty()) {
            legend(&mut out, &self.series.iter().map(|s| s.0.as_str()).collect::<Vec<_>>());
        }
        out.push_str("</svg>");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn count(s: &str, pat: &str) -> usize {
        s.matches(pat).count()
    }

    fn polyline_points(svg: &str) -> Vec<usize> {
        svg.split("<polyline class=\"series")
            .skip(1)
            .map(|rest| {
                let p = rest.split("points=\"").nth(1).expect("points");
                p[..p.find('"').expect("end")].split(' ').count()
            })
            .collect()
    }

    fn assert_clean(svg: &str) {
        assert!(svg.starts_with("<svg") && svg.ends_with("</svg>"));
        for bad in ["NaN", "inf", "-0.0\"", "-0 "] {
            assert!(!svg.contains(bad), "{bad} in {svg}");
        }
    }

    #[test]
    fn line_plot_has_points_ticks_labels_and_legend() {
        let svg = LinePlot::new("Mempool", "time (s)", "txs")
            .series("mean", vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0), (f64::NAN, 1.0)])
            .series("max", vec![(0.0, 2.0), (1.0, f64::INFINITY), (2.0, 5.0)])
            .to_svg();
        assert_clean(&svg);
        assert_eq!(polyline_points(&svg), vec![3, 2]);
        assert!(svg.contains(">time (s)</text>") && svg.contains(">txs</text>"));
        assert_eq!(count(&svg, "class=\"axis-label\""), 2);
        assert!(svg.contains(">Mempool</text>"));
        assert!(
            svg.contains("class=\"legend\"") && svg.contains(">mean</text>") && svg.contains(">max</text>")
        );
        // x ticks 0, 0.5, …, 2 and y ticks 1..5.
        assert!(count(&svg, "class=\"tick\"") >= 6);
        assert!(svg.contains(">0</text>") && svg.contains(">2</text>") && svg.contains(">5</text>"));
        // Deterministic.
        assert_eq!(
            svg,
            LinePlot::new("Mempool", "time (s)", "txs")
                .series("mean", vec![(0.0, 1.0), (1.0, 3.0), (2.0, 2.0), (f64::NAN, 1.0)])
                .series("max", vec![(0.0, 2.0), (1.0, f64::INFINITY), (2.0, 5.0)])
                .to_svg()
        );
    }

    #[test]
    fn dots_draw_circles_not_lines() {
        let svg =
            LinePlot::new("t", "x", "y").series("", vec![(1.0, 1.0), (2.0, 2.0)]).mark(Mark::Dots).to_svg();
        assert_eq!(count(&svg, "<circle"), 2);
        assert!(polyline_points(&svg).is_empty());
        assert!(!svg.contains("class=\"legend\""));
    }

    #[test]
    fn cdf_steps_twice_per_value() {
        let svg = Cdf::new("Propagation", "seconds")
            .series("t50", vec![3.0, 1.0, 2.0])
            .series("t90", vec![2.0, 4.0, 6.0, 8.0])
            .to_svg();
        assert_clean(&svg);
        assert_eq!(polyline_points(&svg), vec![6, 8]);
        assert_eq!(Cdf::steps(&[2.0, 1.0]), vec![(1.0, 0.0), (1.0, 0.5), (2.0, 0.5), (2.0, 1.0)]);
        assert!(svg.contains(">seconds</text>") && svg.contains(">fraction ≤ x</text>"));
        // Large samples are thinned to CDF_MAX_STEPS steps, ending at 1.
        let big: Vec<f64> = (0..5000).map(f64::from).collect();
        let s = Cdf::steps(&big);
        assert_eq!(s.len(), 2 * CDF_MAX_STEPS);
        assert_eq!(s.last(), Some(&(4999.0, 1.0)));
    }

    #[test]
    fn histogram_bins_and_counts() {
        let h =
            Histogram::new("Latency", "seconds").series("", vec![0.0, 1.0, 1.5, 2.5, 4.0, f64::NAN]).bins(4);
        let (lo, w, bins, counts) = h.counts().expect("data");
        assert_eq!((lo, w, bins), (0.0, 1.0, 4));
        assert_eq!(counts, vec![vec![1, 2, 1, 1]]);
        let svg = h.to_svg();
        assert_clean(&svg);
        assert_eq!(count(&svg, "<rect class=\"bar"), 4);
        assert!(svg.contains(">count</text>") && svg.contains(">seconds</text>"));
        // Two series share bins.
        let svg2 = h.clone().series("b", vec![1.0, 2.0]).to_svg();
        assert_eq!(count(&svg2, "<rect class=\"bar"), 8);
        // A single repeated value still gives a finite, one-bin-wide range.
        let one = Histogram::new("x", "y").series("", vec![5.0, 5.0]).bins(3).to_svg();
        assert_clean(&one);
        assert_eq!(count(&one, "<rect class=\"bar"), 3);
    }

    #[test]
    fn bar_chart_groups() {
        let svg = BarChart::new("Shares", "miner", "share")
            .categories(vec!["a".into(), "b<c".into(), "d".into()])
            .series("hashrate", vec![0.2, 0.3, 0.5])
            .series("revenue", vec![0.25, 0.25])
            .to_svg();
        assert_clean(&svg);
        assert_eq!(count(&svg, "<rect class=\"bar"), 6);
        assert!(svg.contains(">b&lt;c</text>") && !svg.contains("b<c"));
        assert!(svg.contains(">miner</text>") && svg.contains(">share</text>"));
        assert!(svg.contains(">hashrate</text>") && svg.contains(">revenue</text>"));
    }

    #[test]
    fn empty_inputs_render_no_data() {
        for svg in [
            LinePlot::new("a", "x", "y").to_svg(),
            LinePlot::new("a", "x", "y").series("s", vec![(f64::NAN, 1.0)]).to_svg(),
            Cdf::new("a", "x").series("s", vec![]).to_svg(),
            Histogram::new("a", "x").to_svg(),
            Histogram::new("a", "x").series("s", vec![f64::INFINITY]).to_svg(),
            BarChart::new("a", "x", "y").to_svg(),
        ] {
            assert_clean(&svg);
            assert!(svg.contains("class=\"no-data\""), "{svg}");
            assert!(!svg.contains("<rect class=\"bar") && !svg.contains("class=\"series"));
        }
    }

    #[test]
    fn ticks_are_nice_and_formatted() {
        let (lo, hi, t) = nice_ticks(0.3, 9.7, 5);
        assert_eq!((lo, hi), (0.0, 10.0));
        assert_eq!(t, vec![0.0, 2.0, 4.0, 6.0, 8.0, 10.0]);
        // Data on a tick gets no extra tick beyond it.
        let (lo, hi, t) = nice_ticks(0.0, 1.0, 5);
        assert_eq!((lo, hi, t.len()), (0.0, 1.0, 6));
        let (lo, hi, _) = nice_ticks(3.0, 3.0, 5);
        assert!(lo < 3.0 && hi > 3.0);
        let (lo, hi, _) = nice_ticks(f64::NAN, 1.0, 5);
        assert!(lo.is_finite() && hi.is_finite());
        assert_eq!(format_tick(0.0005, 0.0001), "0.0005");
        assert_eq!(format_tick(0.00002, 0.00001), "2e-5");
        assert_eq!(format_tick(0.25, 0.05), "0.25");
        assert_eq!(format_tick(1500.0, 500.0), "1500");
        assert_eq!(format_tick(2e9, 1e9), "2e9");
        assert_eq!(format_tick(-0.0, 1.0), "0");
    }

    #[test]
    fn escape_covers_markup() {
        assert_eq!(escape("<a href='x'>\"&\"</a>"), "&lt;a href=&#39;x&#39;&gt;&quot;&amp;&quot;&lt;/a&gt;");
    }
}
