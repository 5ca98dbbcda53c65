#!/usr/bin/env bash
# The demo: start the independent WHIP receiver on loopback, stream the test pattern to it
# with onair for a while, stop, and print what the receiver decoded.
#   scripts/demo.sh [SECONDS] [WIDTHxHEIGHT@FPS]      (default: 20 1280x720@30)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds="${1:-20}"
mode="${2:-1280x720@30}"
[[ "$seconds" =~ ^[0-9]+$ ]] || { echo "demo: SECONDS must be a number, not '$seconds'" >&2; exit 2; }
[[ "$mode" =~ ^([0-9]+)x([0-9]+)@([0-9]+)$ ]] || { echo "demo: mode must look like 1280x720@30, not '$mode'" >&2; exit 2; }
width="${BASH_REMATCH[1]}" height="${BASH_REMATCH[2]}" fps="${BASH_REMATCH[3]}"

bash scripts/setup.sh
echo "demo: building onair (release)"
cargo build --release --locked --quiet

source scripts/lib/run.sh

token="demo-$RANDOM$RANDOM"
start_receiver 127.0.0.1:0 "$token"
base="$receiver_base"
echo "demo: receiver listening at $base"

cat >"$work/onair.json" <<JSON
{
  "source": {"kind": "test", "width": $width, "height": $height, "fps": $fps},
  "encoder": {"kind": "auto", "bitrate_kbps": 2500, "keyframe_interval_ms": 2000},
  "output": {"kind": "whip", "url": "$base/api/whip", "token": "$token"},
  "leds": {"backend": "console"},
  "status": {"socket": "$work/status.sock"},
  "state_dir": "$work/state"
}
JSON

echo "demo: streaming ${width}x${height}@${fps} for ${seconds}s (Ctrl-C stops early)"
./target/release/onair run --config "$work/onair.json" &
onair_pid=$!
trap 'kill -TERM "$onair_pid" 2>/dev/null || true' INT
sleep "$seconds" || true
if [ -S "$work/status.sock" ]; then ./target/release/onair status --socket "$work/status.sock" || true; fi
kill -TERM "$onair_pid" 2>/dev/null || true
wait "$onair_pid" || true
onair_pid=""
trap cleanup EXIT

curl -s "$base/control/stats" | .venv/bin/python scripts/receiver-summary.py "$fps"
