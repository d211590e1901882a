//! Build metadata and link options of the `fika` package's binaries.
//!
//! * `FIKA_BUILD_ID`: an id that changes whenever any crate of the
//!   workspace (or the lock file) changes. `fika emulate` starts its nodes
//!   with the `fika-node` beside it only if that one reports the same id,
//!   so a `fika-node` left over from an earlier build (`cargo run` rebuilds
//!   only `fika`) is never used.
//! * `fika-node` is linked with packed relative relocations.

use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let manifest = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
    let root = Path::new(&manifest).join("../..");
    println!("cargo:rerun-if-changed={}", root.join("Cargo.lock").display());
    if let Ok(crates) = std::fs::read_dir(root.join("crates")) {
        for c in crates.flatten() {
            for part in ["src", "Cargo.toml"] {
                let p = c.path().join(part);
                if p.exists() {
                    println!("cargo:rerun-if-changed={}", p.display());
                }
            }
        }
    }
    let now = SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos());
    println!("cargo:rustc-env=FIKA_BUILD_ID={now:x}-{}", std::process::id());

    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed (DT_RELR, glibc 2.36+; older linkers
        // ignore the option): the dynamic loader reads a few KiB at start-up
        // instead of a quarter MiB of relocation entries, in every process.
        println!("cargo:rustc-link-arg-bin=fika-node=-Wl,-z,pack-relative-relocs");
    }
}
