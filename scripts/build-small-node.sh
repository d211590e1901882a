#!/usr/bin/env bash
# Builds `fika` and `fika-node` for emulations of hundreds of node processes:
# glibc linked statically (no shared C library, math library or dynamic
# loader to map and relocate in every process) and the `node-small` profile
# of Cargo.toml (code optimized for size, linked as one unit). The
# simulator in this build is slower; use the release build for `fika run`.
#
#   bash scripts/build-small-node.sh
#   target/<host triple>/node-small/fika emulate SCENARIO …
#
# `fika emulate` starts its nodes with the `fika-node` beside it, so run the
# `fika` this script prints.
set -euo pipefail
cd "$(dirname "$0")/.."
host=$(rustc -vV | sed -n 's/^host: //p')
case "$host" in
  *-linux-gnu) ;;
  *) echo "error: a static glibc build needs a *-linux-gnu host; this one is $host" >&2; exit 2 ;;
esac
# An explicit --target keeps the static flag off build scripts and
# procedural macros, which must stay dynamic.
RUSTFLAGS="${RUSTFLAGS:-} -C target-feature=+crt-static" \
  cargo build --profile node-small --target "$host" --bin fika --bin fika-node
echo "built: target/$host/node-small/fika and target/$host/node-small/fika-node"
