#!/usr/bin/env bash
# Benchmark, beside bench-publish.sh: what recording costs. onair streams 1280x720@30 (test
# pattern "noise", so x264 really makes 2500 kbps, the test tone in Opus 128 kbps) to the local
# receiver for SECONDS, once with recording off and once with it on (to a temporary directory),
# and prints:
#   - CPU of the recording's own threads (the muxer pipeline's streaming threads "rec-video:src"
#     and "rec-audio:src", where h264parse, matroskamux and the file writes with their fdatasync
#     run), as % of a core;
#   - onair's total CPU with recording off and on (the lane's task runs on the runtime's threads,
#     so the difference is the lane's whole cost, within the run-to-run noise);
#   - bytes written, and per hour; the pictures ffprobe decodes from the recording;
#   - frames the receiver decoded in both runs (recording must not cost the live stream any).
#   scripts/bench-record.sh [SECONDS]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
seconds="${1:-30}"
width=1280 height=720 fps=30 bitrate=2500

bash scripts/setup.sh >/dev/null
cargo build --release --locked --quiet
source scripts/lib/run.sh
tck=$(getconf CLK_TCK)

start_receiver 127.0.0.1:0 bench
base="$receiver_base"

# One run for $seconds s; $1 names it, $2 is its "record" block.
run_onair() {
  local name="$1" record="$2"
  cat >"$work/onair-$name.json" <<JSON
{"source": {"kind": "test", "pattern": "noise", "width": $width, "height": $height, "fps": $fps},
 "encoder": {"kind": "x264", "bitrate_kbps": $bitrate, "keyframe_interval_ms": 2000, "adapt": false},
 "audio": {"kind": "test", "bitrate_kbps": 128},
 "output": {"kind": "whip", "url": "$base/api/whip", "token": "bench"},
 "record": $record,
 "status": {"socket": "$work/status.sock"}, "state_dir": "$work/state"}
JSON
  curl -s -X POST "$base/control/reset" >/dev/null
  echo "bench: ${width}x${height}@${fps} x264 ${bitrate} kbps + Opus, recording $name, ${seconds} s"
  RUST_LOG=warn ./target/release/onair run --config "$work/onair-$name.json" 2>"$work/onair-$name.log" &
  onair_pid=$!
  sleep 3
  # Measured from here, the start-up left out.
  local t0 total0 rec0
  t0=$(date +%s.%N)
  read -r total0 rec0 < <(cpu)
  sleep "$seconds"
  local t1 total1 rec1
  read -r total1 rec1 < <(cpu)
  t1=$(date +%s.%N)
  ./target/release/onair status --json --socket "$work/status.sock" >"$work/status-$name.json"
  kill -TERM "$onair_pid"; wait "$onair_pid" || true; onair_pid=""
  curl -s "$base/control/stats" >"$work/stats-$name.json"
  echo "$t0 $t1 $total0 $total1 $rec0 $rec1" >"$work/cpu-$name"
}

# Ticks of the whole process and of the recording's streaming threads (rec-*).
cpu() {
  local total rec
  total=$(awk '{print $14+$15}' "/proc/$onair_pid/stat")
  rec=$(for t in "/proc/$onair_pid/task/"*; do
    printf '%s\t%s\n' "$(cat "$t/comm")" "$(awk '{print $14+$15}' "$t/stat")"
  done | awk -F'\t' '$1 ~ /^rec-/ { r += $2 } END { print r + 0 }')
  echo "$total $rec"
}

run_onair off '{"enabled": false}'
run_onair on "{\"enabled\": true, \"to\": \"data\", \"dir\": \"$work/rec\", \"segment_s\": 3600, \"min_free_mb\": 64}"

file=$(ls "$work"/rec/*.mkv | head -1)
decoded=$(ffprobe -v error -count_frames -select_streams v:0 -show_entries stream=nb_read_frames -of csv=p=0 "$file")
sounds=$(ffprobe -v error -count_frames -select_streams a:0 -show_entries stream=nb_read_frames -of csv=p=0 "$file")

.venv/bin/python - "$work" "$tck" "$decoded" "$sounds" "$fps" <<'PY'
import json, sys
work, tck, decoded, sounds, fps = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5])

def run(name):
    t0, t1, c0, c1, r0, r1 = map(float, open(f"{work}/cpu-{name}").read().split())
    stats = json.load(open(f"{work}/stats-{name}.json"))
    status = json.load(open(f"{work}/status-{name}.json"))
    s = stats["sessions"][-1] if stats["sessions"] else {}
    span = t1 - t0
    return dict(span=span, total=(c1 - c0) / tck / span * 100, rec=(r1 - r0) / tck / span * 100,
                status=status, decoded=s.get("frames_decoded", 0), sent=status["frames_sent"])

off, on = run("off"), run("on")
rec = on["status"]["record"]
written = rec["bytes_written"]
# The whole recording ran from the daemon's start; its rate is taken over its own length.
recorded_s = decoded / fps
per_hour = written / max(recorded_s, 1) * 3600
rows = [
    ("recording threads (rec-*), % of a core", "-", f"{on['rec']:.2f} %"),
    ("onair total, % of a core", f"{off['total']:.1f} %", f"{on['total']:.1f} %"),
    ("  difference (the lane's whole cost)", "", f"{on['total'] - off['total']:+.1f} %"),
    ("frames decoded / sent by the receiver", f"{off['decoded']} / {off['sent']}", f"{on['decoded']} / {on['sent']}"),
    ("bytes written", "-", f"{written / 1e6:.1f} MB over {recorded_s:.1f} s of pictures"),
    ("bytes per hour", "-", f"{per_hour / 1e9:.2f} GB ({per_hour * 8 / 3600 / 1000:.0f} kbit/s)"),
    ("recording decoded (ffprobe)", "-", f"{decoded} pictures, {sounds} Opus frames"),
    ("dropped by the recording", "-", str(rec["dropped"])),
]
print(f"\n{'':42} {'recording off':>22} {'recording on':>34}")
for name, a, b in rows:
    print(f"{name:42} {a:>22} {b:>34}")
PY
