#!/usr/bin/env bash
# Every test, from a fresh Debian bookworm machine: set-up, formatting and lint, the unit and
# integration tests (real GStreamer pipelines, the independent WHIP receiver, network
# namespaces as root), the receiver's own self-test, the aarch64 cross build with the unit
# tests under qemu-user, and the emulated box (qemu-system-aarch64).
#
# The emulated box's Debian root file system (minutes of downloads and package scripts under
# qemu-user, no compiling) is built in the background while cargo compiles, and waited for
# before any test runs: no timed test shares the machine with it.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
t0=$SECONDS

step "set-up"
bash scripts/setup.sh
if [ -x scripts/test-cross.sh ]; then
  bash scripts/setup-cross.sh
fi

# The emulated box needs what a container may not grant: a tap device and binfmt_misc for the
# arm64 package scripts. Where the machine cannot host it, say so plainly and go on; a check
# that runs and fails still fails the suite.
why_not=""
if [ "$(id -u)" -ne 0 ]; then why_not="needs root"
elif [ ! -c /dev/net/tun ]; then why_not="no /dev/net/tun for the tap device"
elif [ ! -e /proc/sys/fs/binfmt_misc/register ] \
     && ! mount -t binfmt_misc binfmt_misc /proc/sys/fs/binfmt_misc 2>/dev/null; then
  why_not="binfmt_misc cannot be mounted here"
fi
prepare_pid="" prepare_log="$repo/target/qemu-prepare.log"
if [ -z "$why_not" ]; then
  step "emulated box: prerequisites and its Debian root file system (in the background)"
  mkdir -p "$repo/target"
  bash scripts/qemu-boot-test.sh --prepare >"$prepare_log" 2>&1 &
  prepare_pid=$!
  trap '[ -z "$prepare_pid" ] || kill "$prepare_pid" 2>/dev/null || true' EXIT
  echo "log: $prepare_log"
fi

step "format and lint"
cargo fmt --all -- --check
cargo clippy --locked --all-targets -- -D warnings

step "build the tests and the aarch64 release binary"
cargo test --locked --no-run
if [ -x scripts/test-cross.sh ]; then
  cargo build --locked --release --target aarch64-unknown-linux-gnu
fi

prepared=1
if [ -n "$prepare_pid" ]; then
  step "emulated box: waiting for its root file system"
  if ! wait "$prepare_pid"; then
    prepared=0
    tail -n 40 "$prepare_log"
    echo "FAILED: scripts/qemu-boot-test.sh --prepare (log above)"
  fi
  prepare_pid=""
fi

step "test receiver self-test"
.venv/bin/python tests/peers/selftest.py

step "unit and integration tests"
if [ "$(id -u)" -ne 0 ]; then
  echo "note: not root: the network-namespace tests will skip themselves and say so"
fi
cargo test --locked

if [ -x scripts/test-cross.sh ]; then
  step "aarch64 cross build and unit tests under qemu-user"
  ONAIR_CROSS_SKIP_SETUP=1 bash scripts/test-cross.sh
fi

step "emulated boot test (qemu-system-aarch64)"
if [ -n "$why_not" ]; then
  echo "SKIPPED: scripts/qemu-boot-test.sh: $why_not (run it on a machine that allows it)"
elif [ "$prepared" = 0 ]; then
  echo "FAILED: the emulated box could not be prepared (see above)"
  exit 1
else
  bash scripts/qemu-boot-test.sh --no-setup
fi

step "all tests passed in $((SECONDS - t0)) s"
