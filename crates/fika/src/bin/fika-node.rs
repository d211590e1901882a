//! `fika-node`: one emulated node, the process `fika emulate` starts per
//! node (`fika-node node --config FILE`, the same arguments as `fika node`).
//!
//! It does what `fika node` does, in a binary that links only the node's
//! code — no command-line parser, simulator front end, reports or
//! sidechain — so each of the hundreds of node processes of an emulation
//! touches fewer pages of code at start-up and stays small.
//!
//! `fika-node --build-id` prints the id of the build it comes from;
//! `fika emulate` uses it only if that matches its own.

use std::path::PathBuf;
use std::process::ExitCode;

const EXIT_RUN_FAILED: u8 = 1;
const EXIT_BAD_INPUT: u8 = 2;
const USAGE: &str = "usage: fika-node [node] --config FILE | fika-node --build-id";

/// The configuration file named on the command line (`[node] --config FILE`
/// or `--config=FILE`), or what is wrong with the arguments.
fn config_arg(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<PathBuf, String> {
    let mut args = args.into_iter().peekable();
    if args.peek().is_some_and(|a| a == "node") {
        args.next();
    }
    let mut config = None;
    while let Some(a) = args.next() {
        let text = a.to_string_lossy();
        let value = if a == "--config" {
            args.next().ok_or_else(|| "--config needs a file".to_owned())?
        } else if let Some(v) = text.strip_prefix("--config=") {
            v.into()
        } else {
            return Err(format!("unexpected argument {text:?}"));
        };
        if config.replace(PathBuf::from(value)).is_some() {
            return Err("--config given twice".to_owned());
        }
    }
    config.ok_or_else(|| "--config FILE is required".to_owned())
}

fn main() -> ExitCode {
    if std::env::args_os().nth(1).is_some_and(|a| a == "--build-id") {
        println!("{}", env!("FIKA_BUILD_ID"));
        return ExitCode::SUCCESS;
    }
    let config = match config_arg(std::env::args_os().skip(1)) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(EXIT_BAD_INPUT);
        }
    };
    match fika_emu::process::NodeProcessConfig::load(&config)
        .and_then(|c| fika_emu::process::run_node_process(&c))
    {
        Ok(_) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: node: {e}");
            ExitCode::from(EXIT_RUN_FAILED)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<PathBuf, String> {
        config_arg(args.iter().map(std::ffi::OsString::from))
    }

    #[test]
    fn takes_the_arguments_of_fika_node() {
        assert_eq!(parse(&["node", "--config", "a.json"]), Ok(PathBuf::from("a.json")));
        assert_eq!(parse(&["--config", "a.json"]), Ok(PathBuf::from("a.json")));
        assert_eq!(parse(&["--config=b.json"]), Ok(PathBuf::from("b.json")));
        assert!(parse(&[]).is_err());
        assert!(parse(&["node"]).is_err());
        assert!(parse(&["node", "--config"]).is_err());
        assert!(parse(&["node", "--config", "a", "--config", "b"]).is_err());
        assert!(parse(&["run", "x.toml"]).is_err());
    }
}
