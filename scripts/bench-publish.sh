#!/usr/bin/env bash
# Benchmark: stream 1280x720@30 (test pattern, software x264) for 30 s to the local
# independent receiver and print what it cost and what arrived:
#   frames decoded / frames sent, onair CPU seconds split into capture, encoder and the rest
#   (WebRTC, HTTP, control), peak RSS, and time from start to the first decoded frame;
# side by side with a reference: the same capture+encoder run by gst-launch-1.0 alone.
#   scripts/bench-publish.sh [SECONDS] [WIDTHxHEIGHT@FPS]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds="${1:-30}"
mode="${2:-1280x720@30}"
[[ "$mode" =~ ^([0-9]+)x([0-9]+)@([0-9]+)$ ]] || { echo "bench: mode must look like 1280x720@30" >&2; exit 2; }
width="${BASH_REMATCH[1]}" height="${BASH_REMATCH[2]}" fps="${BASH_REMATCH[3]}"
bitrate=2500

bash scripts/setup.sh >/dev/null
cargo build --release --locked --quiet
source scripts/lib/run.sh
tck=$(getconf CLK_TCK)

start_receiver 127.0.0.1:0 bench
base="$receiver_base"

cat >"$work/onair.json" <<JSON
{"source": {"kind": "test", "width": $width, "height": $height, "fps": $fps},
 "encoder": {"kind": "x264", "bitrate_kbps": $bitrate, "keyframe_interval_ms": 2000},
 "output": {"kind": "whip", "url": "$base/api/whip", "token": "bench"},
 "status": {"socket": "$work/status.sock"}, "state_dir": "$work/state"}
JSON

echo "bench: onair ${width}x${height}@${fps} x264 ${bitrate} kbps for ${seconds} s -> local receiver"
t_start=$(mono)
RUST_LOG=warn ./target/release/onair run --config "$work/onair.json" 2>"$work/onair.log" &
onair_pid=$!
sleep "$seconds"

# Per-thread CPU, grouped by the names GStreamer and tokio give their threads: the capture's
# source, the encoder (the streaming thread of the appsrc "pictures" that feeds it, and the
# x264 threads it starts), and the rest (the frame pump, WebRTC, HTTP, control).
read -r capture encoder other < <(
  for t in /proc/$onair_pid/task/*; do
    printf '%s\t%s\n' "$(cat "$t/comm")" "$(awk '{print $14+$15}' "$t/stat")"
  done | awk -F'\t' -v tck="$tck" '
    $1 ~ /^source-/    { c += $2; next }
    $1 ~ /^pictures/   { e += $2; next }
                       { o += $2 }
    END { printf "%.2f %.2f %.2f\n", c/tck, e/tck, o/tck }')
total=$(awk -v tck="$tck" '{printf "%.2f", ($14+$15)/tck}' "/proc/$onair_pid/stat")
peak_rss=$(awk '/^VmHWM:/ {print $2}' "/proc/$onair_pid/status")
status_json="$(./target/release/onair status --json --socket "$work/status.sock")"
kill -TERM "$onair_pid"; wait "$onair_pid" || true; onair_pid=""

curl -s "$base/control/stats" > "$work/stats.json"
echo "$status_json" > "$work/status.json"

# The reference: the same capture and encoder settings, no WebRTC, frames thrown away.
frames=$((seconds * fps))
/usr/bin/time -f '%U %S %M' -o "$work/ref.time" gst-launch-1.0 -q videotestsrc is-live=true num-buffers="$frames" \
  ! "video/x-raw,width=$width,height=$height,framerate=$fps/1" ! videoconvert ! video/x-raw,format=I420 \
  ! queue max-size-buffers=3 leaky=downstream \
  ! x264enc tune=zerolatency speed-preset=superfast bitrate=$bitrate key-int-max=$((fps * 2)) bframes=0 option-string=scenecut=0 \
  ! video/x-h264,profile=constrained-baseline ! h264parse ! fakesink >/dev/null
read -r ref_user ref_sys ref_rss < "$work/ref.time"

.venv/bin/python - "$work" "$t_start" "$seconds" "$total" "$capture" "$encoder" "$other" "$peak_rss" \
  "$ref_user" "$ref_sys" "$ref_rss" <<'PY'
import json, sys
work, t_start, secs, total, cap, enc, other, rss, ru, rs, rrss = sys.argv[1:]
stats = json.load(open(f"{work}/stats.json"))
status = json.load(open(f"{work}/status.json"))
s = stats["sessions"][0] if stats["sessions"] else {}
sent = status["frames_sent"]
decoded = s.get("frames_decoded", 0)
first = s.get("first_frame_t")
ttf = f"{first - float(t_start):.2f} s" if first else "never"
ref_cpu = float(ru) + float(rs)
rows = [
    ("frames decoded / sent", f"{decoded} / {sent} ({100.0 * decoded / max(sent, 1):.1f} %)", "-"),
    ("decoded size", f"{s.get('width')}x{s.get('height')}", "-"),
    ("start to first decoded frame", ttf, "-"),
    ("CPU total (s)", f"{float(total):.2f}", f"{ref_cpu:.2f}"),
    ("  capture + convert (s)", cap, "-"),
    ("  x264 encoder (s)", enc, "-"),
    ("  frame pump, WebRTC, HTTP, control (s)", other, "-"),
    ("CPU per second of stream", f"{float(total) / float(secs) * 100:.0f} % of a core", f"{ref_cpu / float(secs) * 100:.0f} % of a core"),
    ("peak RSS", f"{int(rss) / 1024:.1f} MiB", f"{int(rrss) / 1024:.1f} MiB"),
]
print(f"\n{'':32} {'onair':>28} {'reference (gst-launch)':>24}")
for name, a, b in rows:
    print(f"{name:32} {a:>28} {b:>24}")
PY
