#!/usr/bin/env bash
# Cross-build onair for aarch64 and run its unit tests under qemu-user.
# This is what CI runs. Steps:
#   1. scripts/setup-cross.sh                      (idempotent; fast when done)
#   2. cargo build --release --target aarch64-unknown-linux-gnu --locked
#   3. check the binary: ELF aarch64, and its NEEDED libraries / glibc symbol
#      versions exist on the target (Raspberry Pi OS bookworm, Buildroot+glibc)
#   4. GStreamer smoke test under qemu: the arm64 plugins load and
#      videotestsrc ! x264enc ! h264parse runs (tells environment problems
#      apart from code problems)
#   5. cargo test --target aarch64-unknown-linux-gnu --lib --locked (under qemu;
#      the runner is set in .cargo/config.toml)
# Steps 2-5 all run even if one fails; the exit status is non-zero if any failed.
#
# Environment: ONAIR_CROSS_SKIP_SETUP=1 skips step 1.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)
cd "$REPO_ROOT"

TARGET=aarch64-unknown-linux-gnu
CROSS_ROOT=/opt/onair-cross/aarch64-linux-gnu   # see scripts/setup-cross.sh
# Highest glibc symbol version the binary may need: Raspberry Pi OS bookworm
# ships glibc 2.36 (the same as the Debian bookworm arm64 libc we link against).
MAX_GLIBC=2.36
# Shared libraries the binary may depend on. All exist on Raspberry Pi OS with
# GStreamer installed and in Buildroot (glibc toolchain, gstreamer1 +
# gst1-plugins-base). A new entry means a new runtime dependency on the device:
# make sure the image provides it before adding it here.
ALLOWED_NEEDED=(
    ld-linux-aarch64.so.1 libc.so.6 libm.so.6 libgcc_s.so.1
    libpthread.so.0 libdl.so.2 librt.so.1
    libglib-2.0.so.0 libgobject-2.0.so.0 libgmodule-2.0.so.0 libgio-2.0.so.0
    libgstreamer-1.0.so.0 libgstbase-1.0.so.0 libgstapp-1.0.so.0 libgstvideo-1.0.so.0
)

# GStreamer forks+execs its (aarch64) plugin scanner; without binfmt_misc that
# fails under qemu-user. The runner passes this too (qemu -E); exported here
# for the smoke test.
export GST_REGISTRY_FORK=no

log() { printf '[test-cross] %s\n' "$*"; }
failures=()
summary=()
t_all=$SECONDS
# run_step <name> <command...>: runs, times and records one step.
run_step() {
    local name=$1; shift
    local t=$SECONDS rc=0
    log "== $name"
    "$@" || rc=$?
    local d=$((SECONDS - t))
    if [ $rc -eq 0 ]; then
        summary+=("ok     ${d}s  $name")
    else
        summary+=("FAILED ${d}s  $name (exit $rc)")
        failures+=("$name")
    fi
    log "   ... $name: $([ $rc -eq 0 ] && echo ok || echo "FAILED (exit $rc)") in ${d}s"
    return 0
}
finish() {
    log "summary (total $((SECONDS - t_all))s):"
    local s
    for s in "${summary[@]}"; do log "  $s"; done
    if [ ${#failures[@]} -gt 0 ]; then
        log "FAILED: ${failures[*]}"
        exit 1
    fi
    log "all passed"
}

if [ "${ONAIR_CROSS_SKIP_SETUP:-0}" != 1 ]; then
    run_step "setup (scripts/setup-cross.sh)" "$SCRIPT_DIR/setup-cross.sh"
    if [ ${#failures[@]} -gt 0 ]; then
        finish
    fi
fi

target_dir=$(cargo metadata --no-deps --format-version 1 --locked \
    | sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
[ -n "$target_dir" ] || { log "cannot determine cargo's target directory"; exit 1; }
BIN=$target_dir/$TARGET/release/onair

run_step "cargo build --release --target $TARGET" \
    cargo build --release --target "$TARGET" --locked

check_binary() {
    [ -f "$BIN" ] || { log "$BIN not found"; return 1; }
    local desc
    desc=$(file -b "$BIN")
    log "file: $desc"
    case $desc in
        ELF\ 64-bit*ARM\ aarch64*executable*|ELF\ 64-bit*executable*ARM\ aarch64*) ;;
        *) log "not an ELF aarch64 executable"; return 1 ;;
    esac
    local needed bad="" lib
    needed=$(aarch64-linux-gnu-readelf -d "$BIN" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p')
    log "NEEDED: $(echo $needed)"
    for lib in $needed; do
        [[ " ${ALLOWED_NEEDED[*]} " == *" $lib "* ]] || bad+=" $lib"
    done
    if [ -n "$bad" ]; then
        log "unexpected shared library dependencies:$bad"
        log "(make sure the device image provides them, then extend ALLOWED_NEEDED in $0)"
        return 1
    fi
    if aarch64-linux-gnu-readelf -d "$BIN" | grep -qE '\((RPATH|RUNPATH)\)'; then
        log "binary has an RPATH/RUNPATH (build-machine paths must not leak into it)"
        return 1
    fi
    local glibc
    glibc=$(aarch64-linux-gnu-objdump -T "$BIN" | grep -oE 'GLIBC_[0-9]+\.[0-9]+' | sed 's/GLIBC_//' | sort -uV | tail -1)
    log "highest glibc symbol version: ${glibc:-none}"
    if [ -n "$glibc" ] && [ "$(printf '%s\n%s\n' "$glibc" "$MAX_GLIBC" | sort -V | tail -1)" != "$MAX_GLIBC" ]; then
        log "needs glibc $glibc > $MAX_GLIBC (Raspberry Pi OS bookworm)"
        return 1
    fi
}
run_step "check binary (ELF aarch64, NEEDED, glibc)" check_binary

gst_smoke() {
    local out
    out=$(timeout 300 qemu-aarch64-static -L / "$CROSS_ROOT/usr/bin/gst-launch-1.0" -q \
        videotestsrc num-buffers=30 ! video/x-raw,format=I420,width=320,height=240 \
        ! x264enc tune=zerolatency ! h264parse ! fakesink 2>&1) || { printf '%s\n' "$out"; return 1; }
    # Plugins that fail to load only warn; treat any warning/critical as failure.
    if grep -qE 'WARNING|CRITICAL|ERROR' <<<"$out"; then printf '%s\n' "$out"; return 1; fi
    log "videotestsrc ! x264enc ! h264parse ! fakesink: ok"
}
run_step "GStreamer smoke test under qemu (arm64 plugins)" gst_smoke

run_step "cargo test --target $TARGET --lib (under qemu)" \
    cargo test --target "$TARGET" --lib --locked

finish
