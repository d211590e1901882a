//! The plain-text summary table printed at the end of a run.

use std::fmt;

/// Rows of `label  value`, aligned.
#[derive(Default, Debug, Clone)]
pub struct SummaryTable {
    rows: Vec<(String, String)>,
}

impl SummaryTable {
    /// An empty table.
    pub fn new() -> Self {
        Self::default()
    }
    /// Adds a row.
    pub fn row(&mut self, label: impl Into<String>, value: impl fmt::Display) -> &mut Self {
        self.rows.push((label.into(), value.to_string()));
        self
    }
    /// The rows.
    pub fn rows(&self) -> &[(String, String)] {
        &self.rows
    }
}

impl fmt::Display for SummaryTable {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let w = self.rows.iter().map(|(l, _)| l.chars().count()).max().unwrap_or(0);
        let total = w + 2 + self.rows.iter().map(|(_, v)| v.chars().count()).max().unwrap_or(0);
        writeln!(f, "{}", "─".repeat(total))?;
        for (l, v) in &self.rows {
            writeln!(f, "{l:<w$}  {v}")?;
        }
        write!(f, "{}", "─".repeat(total))
    }
}
