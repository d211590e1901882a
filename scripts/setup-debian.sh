#!/usr/bin/env bash
# Installs the system packages fika's build needs on a Debian machine that
# already has Rust: a C/C++ compiler for the crates that build C (secp256k1,
# the mimalloc allocator) and C++ (Bitcoin Core's script engine), and
# iproute2 (`ip`, `tc`) for `fika emulate --netns`. Does nothing when they are present.
set -euo pipefail
need=()
command -v cc >/dev/null 2>&1 || need+=(gcc)
# g++ also brings libstdc++.a, which the static link of libstdc++ needs
# (.cargo/config.toml).
command -v g++ >/dev/null 2>&1 || need+=(g++)
if command -v g++ >/dev/null 2>&1 && [ ! -e "$(g++ -print-file-name=libstdc++.a)" ]; then
  need+=(g++)
fi
command -v make >/dev/null 2>&1 || need+=(make)
command -v ip >/dev/null 2>&1 || need+=(iproute2)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  $sudo apt-get update -q
  $sudo apt-get install -y -q "${need[@]}"
fi
