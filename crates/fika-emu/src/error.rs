//! The emulator's errors: each names the file, address, node or value at fault.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use fika_core::NodeId;

/// Why an emulation (or one emulated node) could not run.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmuError {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The node could not listen on its address.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// The OS error.
        source: std::io::Error,
    },
    /// The async runtime could not be built.
    #[error("cannot start the async runtime: {0}")]
    Runtime(std::io::Error),
    /// The scenario file did not load.
    #[error(transparent)]
    Scenario(#[from] fika_scenario::ScenarioError),
    /// The scenario's network could not be laid out.
    #[error("{file}: {source}")]
    Layout {
        /// The scenario file.
        file: PathBuf,
        /// Why.
        source: fika_scenario::BuildError,
    },
    /// The scenario is not one the emulator runs.
    #[error("{scenario}: protocol = \"{protocol}\": the emulator runs bitcoin and powpeg scenarios only")]
    Unsupported {
        /// The scenario (file or name).
        scenario: String,
        /// Its protocol.
        protocol: String,
    },
    /// A node id outside the scenario.
    #[error("node {id} does not exist: the scenario has {nodes} nodes")]
    NoSuchNode {
        /// The id asked for.
        id: NodeId,
        /// How many nodes there are.
        nodes: usize,
    },
    /// A node process configuration file is not valid.
    #[error("{path}: invalid node configuration: {reason}")]
    Config {
        /// The file.
        path: PathBuf,
        /// The parser's message, with line and column.
        reason: String,
    },
    /// A configuration value is out of range.
    #[error("{field} = {value}: expected {expected}")]
    BadValue {
        /// The field.
        field: &'static str,
        /// The value found.
        value: String,
        /// What was expected.
        expected: &'static str,
    },
    /// A node process could not be started.
    #[error("cannot start {exe} for node {node}: {source}")]
    Spawn {
        /// The executable.
        exe: PathBuf,
        /// The node's name.
        node: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// A node process ended before it was told to.
    #[error("node {node} exited early ({status}); its log: {log}")]
    NodeExited {
        /// The node's name.
        node: String,
        /// Its exit status.
        status: String,
        /// Its standard error, captured.
        log: PathBuf,
    },
    /// The node's durable store failed (open, restore or write).
    #[error(transparent)]
    Store(Box<crate::store::StoreError>),
    /// Node processes did not get ready (listening and connected to their peers) in time.
    #[error("nodes not ready after {after:?}: {waiting:?} (their logs are in {logs})")]
    StartupTimeout {
        /// The nodes still waited for.
        waiting: Vec<String>,
        /// How long the emulator waited.
        after: Duration,
        /// Where the logs are.
        logs: PathBuf,
    },
    /// A step of setting up network namespaces failed (`--netns`).
    #[error("--netns: {step}: {reason}")]
    Netns {
        /// The step (often the command line that failed).
        step: String,
        /// Why.
        reason: String,
    },
    /// The emulation was interrupted (Ctrl-C or SIGTERM) before its end.
    #[error("interrupted")]
    Interrupted,
}

impl From<crate::store::StoreError> for EmuError {
    fn from(e: crate::store::StoreError) -> Self {
        EmuError::Store(Box::new(e))
    }
}

/// `map_err` helper for file errors.
pub(crate) fn io_at(path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> EmuError {
    let path = path.into();
    move |source| EmuError::Io { path, source }
}
