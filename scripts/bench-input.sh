#!/usr/bin/env bash
# Benchmark: the input lost and given back, with the slate on air in between. onair streams the
# test pattern (software x264) to the local independent receiver; SIGUSR1 cuts and restores the
# test source's signal (its pictures stop, as a stalled camera's do). Prints:
#   - the time from the signal's return to the first live picture the receiver decodes, RUNS
#     times (each after the slate has been on air for 3 s): median and every run;
#   - what the slate costs: onair's CPU over SECONDS with the live input, then over SECONDS
#     with the slate, split by thread (capture, frame pump, encoder, the rest).
#   scripts/bench-input.sh [RUNS] [WIDTHxHEIGHT@FPS] [SECONDS]
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
runs="${1:-5}"
mode="${2:-1280x720@30}"
seconds="${3:-20}"
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

status() { ./target/release/onair status --json --socket "$work/status.sock" 2>/dev/null || true; }
# Waits until the receiver decoded a frame after T that is dark (the slate) or bright (the
# test pattern); prints its time.
wait_frame() { # dark|bright SINCE TIMEOUT
  .venv/bin/python - "$base" "$@" <<'PY'
import json, sys, time, urllib.request
base, kind, since, timeout = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
deadline = time.monotonic() + timeout
while time.monotonic() < deadline:
    st = json.load(urllib.request.urlopen(base + "/control/stats", timeout=5))
    for t, y in zip(st["frame_times"], st["frame_lumas"]):
        if t > since and ((y < 85) if kind == "dark" else (y > 85)):
            print(f"{t:.4f}")
            sys.exit(0)
    time.sleep(0.02)
sys.exit(1)
PY
}
# CPU ticks by thread group: capture (source-*), pump (onair-frames), encoder (the appsrc's
# streaming thread "pictures:src" and the x264 threads it starts), the rest.
cpu() {
  for t in "/proc/$onair_pid/task/"*; do
    printf '%s\t%s\n' "$(cat "$t/comm")" "$(awk '{print $14+$15}' "$t/stat")"
  done | awk -F'\t' '
    $1 ~ /^source-/      { c += $2; next }
    $1 == "onair-frames" { p += $2; next }
    $1 ~ /^pictures/     { e += $2; next }
                         { o += $2 }
    END { printf "%d %d %d %d\n", c, p, e, o }'
}

echo "bench: onair ${width}x${height}@${fps} x264 ${bitrate} kbps -> local receiver; $runs returns, ${seconds} s CPU windows"
RUST_LOG=warn ./target/release/onair run --config "$work/onair.json" 2>"$work/onair.log" &
onair_pid=$!
wait_frame bright 0 30 >/dev/null || { echo "bench: no picture" >&2; cat "$work/onair.log" >&2; exit 1; }
sleep 3

read -r c0 p0 e0 o0 < <(cpu); sleep "$seconds"; read -r c1 p1 e1 o1 < <(cpu)
live_cpu="$((c1 - c0)) $((p1 - p0)) $((e1 - e0)) $((o1 - o0))"

kill -USR1 "$onair_pid"
t_cut=$(mono)
wait_frame dark "$t_cut" 10 >/dev/null || { echo "bench: the slate never came" >&2; exit 1; }
sleep 3
read -r c0 p0 e0 o0 < <(cpu); sleep "$seconds"; read -r c1 p1 e1 o1 < <(cpu)
slate_cpu="$((c1 - c0)) $((p1 - p0)) $((e1 - e0)) $((o1 - o0))"

returns=()
for i in $(seq "$runs"); do
  if [ "$i" -gt 1 ]; then
    kill -USR1 "$onair_pid"
    t_cut=$(mono)
    wait_frame dark "$t_cut" 10 >/dev/null || { echo "bench: run $i: the slate never came" >&2; exit 1; }
    sleep 3
  fi
  t_back=$(mono)
  kill -USR1 "$onair_pid"
  t_live=$(wait_frame bright "$t_back" 10) || { echo "bench: run $i: the picture never came back" >&2; exit 1; }
  returns+=("$(awk -v a="$t_back" -v b="$t_live" 'BEGIN { printf "%.2f", b - a }')")
  echo "  run $i: live picture ${returns[-1]} s after the signal returned"
  sleep 2
done
posts=$(curl -s "$base/control/stats" | .venv/bin/python -c 'import json,sys; s=json.load(sys.stdin); print(len(s["posts"]), len(s["sessions"]))')
kill -TERM "$onair_pid"; wait "$onair_pid" || true; onair_pid=""

.venv/bin/python - "$tck" "$seconds" "$live_cpu" "$slate_cpu" "$posts" "${returns[@]}" <<'PY'
import statistics, sys
tck, secs = int(sys.argv[1]), float(sys.argv[2])
live = [int(x) for x in sys.argv[3].split()]
slate = [int(x) for x in sys.argv[4].split()]
posts, sessions = sys.argv[5].split()
returns = [float(x) for x in sys.argv[6:]]
pct = lambda ticks: f"{100.0 * ticks / tck / secs:5.1f} %"
print(f"\nsignal back -> live picture at the receiver: median {statistics.median(returns):.2f} s "
      f"({' '.join(f'{r:.2f}' for r in returns)}); {posts} POST(s), {sessions} session(s) in all")
print(f"\nCPU, % of one core over {secs:.0f} s     {'live input':>12} {'slate':>12}")
for name, i in (("capture + convert", 0), ("frame pump", 1), ("x264 encoder", 2),
                ("WebRTC, HTTP, control", 3)):
    print(f"  {name:30} {pct(live[i]):>12} {pct(slate[i]):>12}")
print(f"  {'total':30} {pct(sum(live)):>12} {pct(sum(slate)):>12}")
PY
echo "(the slate column's capture is the stalled test source, still running and dropping its pictures; a camera without signal costs nothing there)"
