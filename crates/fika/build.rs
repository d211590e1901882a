//! Link options of the `fika-node` binary, the process `fika emulate`
//! starts per node.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let os = std::env::var("CARGO_CFG_TARGET_OS").unwrap_or_default();
    let env = std::env::var("CARGO_CFG_TARGET_ENV").unwrap_or_default();
    if os == "linux" && env == "gnu" {
        // Relative relocations packed (DT_RELR, glibc 2.36+; older linkers
        // ignore the option): the dynamic loader reads a few KiB at start-up
        // instead of a quarter MiB of relocation entries, in every process.
        println!("cargo:rustc-link-arg-bin=fika-node=-Wl,-z,pack-relative-relocs");
    }
}
