#!/usr/bin/env bash
# Every test, from a fresh Debian bookworm machine: set-up, formatting and lint, the unit and
# integration tests (real GStreamer pipelines, the independent WHIP receiver, network
# namespaces as root), the receiver's own self-test, and the aarch64 cross build with the unit
# tests under qemu-user.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t0=$SECONDS

step "set-up"
bash scripts/setup.sh

step "format and lint"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "test receiver self-test"
.venv/bin/python tests/peers/selftest.py

step "unit and integration tests"
if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root: the network-namespace tests will skip themselves and say so"
fi
cargo test --locked

if [ -x scripts/test-cross.sh ]; then
  step "aarch64 cross build and unit tests under qemu-user"
  bash scripts/test-cross.sh
fi

step "all tests passed in $((SECONDS - t0)) s"
