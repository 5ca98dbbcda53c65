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

step "emulated boot test (qemu-system-aarch64)"
# It needs what a container may not grant: a tap device and binfmt_misc for the arm64
# package scripts. Where the machine cannot host it, say so plainly and go on; a check that
# runs and fails still fails the suite.
why_not=""
if [ "$(id -u)" -ne 0 ]; then why_not="needs root"
elif [ ! -c /dev/net/tun ]; then why_not="no /dev/net/tun for the tap device"
elif [ ! -e /proc/sys/fs/binfmt_misc/register ] \
     && ! mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null; then
  why_not="binfmt_misc cannot be mounted here"
fi
if [ -n "$why_not" ]; then
  echo "SKIPPED: scripts/qemu-boot-test.sh: $why_not (run it on a machine that allows it)"
else
  bash scripts/qemu-boot-test.sh
fi

step "all tests passed in $((SECONDS - t0)) s"
