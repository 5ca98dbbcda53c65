#!/usr/bin/env bash
# Benchmark: stream 1280x720@30 (test pattern, software x264) for 30 s to the local
# independent receiver, once without sound and once with the test tone in Opus (128 kbps),
# and print what it cost and what arrived:
#   frames decoded / frames sent, audio samples decoded, onair CPU seconds split into capture,
#   encoder, the audio path and the rest (WebRTC, HTTP, control), peak RSS, and time from start
#   to the first decoded frame;
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

# One run of the daemon for $seconds s; $1 names it, $2 is its "audio" block.
run_onair() {
  local name="$1" audio="$2"
  cat >"$work/onair-$name.json" <<JSON
{"source": {"kind": "test", "width": $width, "height": $height, "fps": $fps},
 "encoder": {"kind": "x264", "bitrate_kbps": $bitrate, "keyframe_interval_ms": 2000},
 "audio": $audio,
 "output": {"kind": "whip", "url": "$base/api/whip", "token": "bench"},
 "status": {"socket": "$work/status.sock"}, "state_dir": "$work/state"}
JSON
  curl -s -X POST "$base/control/reset" >/dev/null
  echo "bench: onair ${width}x${height}@${fps} x264 ${bitrate} kbps, audio $audio, for ${seconds} s -> local receiver"
  local t_start
  t_start=$(mono)
  RUST_LOG=warn ./target/release/onair run --config "$work/onair-$name.json" 2>"$work/onair-$name.log" &
  onair_pid=$!
  sleep "$seconds"
  # Per-thread CPU, grouped by the names GStreamer and tokio give their threads: the capture's
  # source, the encoder (the streaming thread of the appsrc "pictures" that feeds it, and the
  # x264 threads it starts), the audio path (its capture "audio-src", the encoder's appsrc
  # "audio-pcm" running level and opusenc, the 20 ms pump "onair-audio"), and the rest (the
  # frame pump, WebRTC, HTTP, control).
  local capture encoder audio other total peak_rss
  read -r capture encoder audio other < <(
    for t in /proc/$onair_pid/task/*; do
      printf '%s\t%s\n' "$(cat "$t/comm")" "$(awk '{print $14+$15}' "$t/stat")"
    done | awk -F'\t' -v tck="$tck" '
      $1 ~ /^source-/                  { c += $2; next }
      $1 ~ /^pictures/                 { e += $2; next }
      $1 ~ /^(audio-|onair-audio)/     { a += $2; next }
                                       { o += $2 }
      END { printf "%.2f %.2f %.2f %.2f\n", c/tck, e/tck, a/tck, o/tck }')
  total=$(awk -v tck="$tck" '{printf "%.2f", ($14+$15)/tck}' "/proc/$onair_pid/stat")
  peak_rss=$(awk '/^VmHWM:/ {print $2}' "/proc/$onair_pid/status")
  ./target/release/onair status --json --socket "$work/status.sock" > "$work/status-$name.json"
  kill -TERM "$onair_pid"; wait "$onair_pid" || true; onair_pid=""
  curl -s "$base/control/stats" > "$work/stats-$name.json"
  echo "$t_start $total $capture $encoder $audio $other $peak_rss" > "$work/cpu-$name"
}

run_onair video '{"kind": "none"}'
run_onair audio '{"kind": "test", "bitrate_kbps": 128}'

# The reference: the same capture and encoder settings, no WebRTC, frames thrown away.
frames=$((seconds * fps))
/usr/bin/time -f '%U %S %M' -o "$work/ref.time" gst-launch-1.0 -q videotestsrc is-live=true num-buffers="$frames" \
  ! "video/x-raw,width=$width,height=$height,framerate=$fps/1" ! videoconvert ! video/x-raw,format=I420 \
  ! queue max-size-buffers=3 leaky=downstream \
  ! x264enc tune=zerolatency speed-preset=superfast bitrate=$bitrate key-int-max=$((fps * 2)) bframes=0 option-string=scenecut=0 \
  ! video/x-h264,profile=constrained-baseline ! h264parse ! fakesink >/dev/null
read -r ref_user ref_sys ref_rss < "$work/ref.time"

.venv/bin/python - "$work" "$seconds" "$ref_user" "$ref_sys" "$ref_rss" <<'PY'
import json, sys
work, secs, ru, rs, rrss = sys.argv[1:]
secs = float(secs)

def run(name):
    t_start, total, cap, enc, audio, other, rss = open(f"{work}/cpu-{name}").read().split()
    stats = json.load(open(f"{work}/stats-{name}.json"))
    status = json.load(open(f"{work}/status-{name}.json"))
    s = stats["sessions"][-1] if stats["sessions"] else {}
    return dict(t_start=float(t_start), total=float(total), cap=cap, enc=enc, audio=audio,
                other=other, rss=int(rss), s=s, status=status)

v, a = run("video"), run("audio")
ref_cpu = float(ru) + float(rs)

def frames(r):
    sent, decoded = r["status"]["frames_sent"], r["s"].get("frames_decoded", 0)
    return f"{decoded} / {sent} ({100.0 * decoded / max(sent, 1):.1f} %)"

def ttf(r):
    first = r["s"].get("first_frame_t")
    return f"{first - r['t_start']:.2f} s" if first else "never"

def samples(r):
    s = r["s"]
    if not s.get("audio_samples"):
        return "-"
    span = (s["last_audio_t"] - s["first_audio_t"]) * 48000
    return f"{s['audio_samples']} ({100.0 * s['audio_samples'] / max(span, 1):.1f} %)"

pct = lambda cpu: f"{float(cpu) / secs * 100:.1f} %"
rows = [
    ("frames decoded / sent", frames(v), frames(a), "-"),
    ("audio samples decoded", "-", samples(a), "-"),
    ("start to first decoded frame", ttf(v), ttf(a), "-"),
    ("CPU total (s)", f"{v['total']:.2f}", f"{a['total']:.2f}", f"{ref_cpu:.2f}"),
    ("  capture + convert (s)", v["cap"], a["cap"], "-"),
    ("  x264 encoder (s)", v["enc"], a["enc"], "-"),
    ("  audio: capture, pump, Opus (s)", v["audio"], a["audio"], "-"),
    ("  frame pump, WebRTC, HTTP, control (s)", v["other"], a["other"], "-"),
    ("CPU total, % of a core", pct(v["total"]), pct(a["total"]), pct(ref_cpu)),
    ("  audio path, % of a core", pct(v["audio"]), pct(a["audio"]), "-"),
    ("peak RSS", f"{v['rss'] / 1024:.1f} MiB", f"{a['rss'] / 1024:.1f} MiB", f"{int(rrss) / 1024:.1f} MiB"),
]
print(f"\n{'':40} {'onair, no audio':>24} {'onair + Opus 128k':>24} {'reference (gst-launch)':>24}")
for name, x, y, z in rows:
    print(f"{name:40} {x:>24} {y:>24} {z:>24}")
PY
