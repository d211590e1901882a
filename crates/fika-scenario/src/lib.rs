//! Scenario files: the TOML schema, named presets, validation that reports
//! every error with its field path, and the [`Layout`] a runtime builds from.
//!
//! Data flows one way: file → [`load_file`] → [`Scenario`] → [`layout`] →
//! runtime.

pub mod btc;
pub mod build;
pub mod check;
pub mod load;
pub mod peg;
pub mod presets;
pub mod scenario;

pub use build::{BuildError, Layout, layout};
pub use check::FieldError;
pub use load::{ScenarioError, load_file, load_str, to_toml};
pub use scenario::*;
