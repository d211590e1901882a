//! `events.jsonl`: one JSON object per event, streamed through a large
//! buffer (never flushed per event), so a run of millions of events writes
//! at disk speed.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use fika_core::{Event, EventSink, NodeId, SimTime};

/// Streams events as JSON lines, leaving out excluded kinds.
pub struct JsonlWriter {
    out: BufWriter<File>,
    line: String,
    exclude: Vec<String>,
    written: u64,
    error: Option<io::Error>,
}

impl JsonlWriter {
    /// Creates (truncates) `path`.
    pub fn create(path: &Path, exclude: Vec<String>) -> io::Result<Self> {
        Ok(JsonlWriter {
            out: BufWriter::with_capacity(1 << 20, File::create(path)?),
            line: String::with_capacity(256),
            exclude,
            written: 0,
            error: None,
        })
    }

    /// Lines written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Flushes; returns the first write error met during the run, if any.
    pub fn finish(mut self) -> io::Result<u64> {
        if let Some(e) = self.error.take() {
            return Err(e);
        }
        self.out.flush()?;
        Ok(self.written)
    }
}

impl EventSink for JsonlWriter {
    fn record(&mut self, at: SimTime, node: Option<NodeId>, event: &Event) {
        if self.error.is_some() || self.exclude.iter().any(|k| k == event.kind) {
            return;
        }
        self.line.clear();
        event.write_json_line(at, node, &mut self.line);
        match self.out.write_all(self.line.as_bytes()) {
            Ok(()) => self.written += 1,
            Err(e) => self.error = Some(e),
        }
    }
}
