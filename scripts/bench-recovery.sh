#!/usr/bin/env bash
# Benchmark: how fast the picture comes back after the box's cable is pulled and plugged back.
# For outages of 2, 10 and 30 s, the time from link-up to the first frame the independent
# receiver decodes, median of RUNS runs, with netlink triggering on (the box sees the link come
# back) and off (the backoff timer alone, as OBS and most encoders do). Prints a table and the
# ratio. Needs root (network namespaces); nothing leaves the two namespaces it creates.
#   scripts/bench-recovery.sh [RUNS] [OUTAGES...]        (default: 3 runs; 2 10 30)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
[ "$(id -u)" -eq 0 ] || { echo "bench-recovery: needs root for network namespaces" >&2; exit 1; }
runs="${1:-3}"; shift || true
outages=("${@:-}")
[ -n "${outages[0]}" ] || outages=(2 10 30)

bash scripts/setup.sh >/dev/null
cargo build --release --locked --quiet
source scripts/lib/run.sh
box="oa-bench-box-$$" srv="oa-bench-srv-$$"
source scripts/lib/lab.sh

stats() { ip netns exec "$srv" curl -s --max-time 5 http://192.0.2.1:8080/control/stats; }

# One run: prints the seconds from link-up to the first decoded frame (or "fail").
one_run() {
  local outage="$1" netlink="$2"
  lab_up
  start_receiver 192.0.2.1:8080 bench "$srv"
  cat >"$work/onair.json" <<JSON
{"source": {"kind": "test", "width": 640, "height": 360, "fps": 30},
 "encoder": {"kind": "x264", "bitrate_kbps": 1000, "keyframe_interval_ms": 2000},
 "output": {"kind": "whip", "url": "http://192.0.2.1:8080/api/whip", "token": "bench"},
 "network": {"netlink": $netlink},
 "status": {"socket": "$work/status.sock"}, "state_dir": "$work/state"}
JSON
  RUST_LOG=warn ip netns exec "$box" ./target/release/onair run --config "$work/onair.json" 2>"$work/onair.log" &
  onair_pid=$!
  local live=""
  for _ in $(seq 200); do
    if ./target/release/onair status --json --socket "$work/status.sock" 2>/dev/null | grep -q '"state":"live"'; then
      live=1; break; fi
    sleep 0.1
  done
  if [ -z "$live" ]; then echo fail; teardown; return; fi
  sleep 3
  ip -n "$srv" link set eth0 down
  sleep "$outage"
  local t_up; t_up=$(mono)
  ip -n "$srv" link set eth0 up
  local delay=""
  for _ in $(seq 600); do
    delay=$(stats | .venv/bin/python -c '
import json, sys
t = float(sys.argv[1])
after = [f for f in json.load(sys.stdin)["frame_times"] if f >= t]
print(f"{after[0] - t:.2f}" if after else "")' "$t_up" 2>/dev/null || true)
    [ -n "$delay" ] && break
    sleep 0.1
  done
  echo "${delay:-fail}"
  teardown
}

median() { printf '%s\n' "$@" | grep -v fail | sort -n | awk '{a[NR]=$1} END {if (NR==0) print "fail"; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "bench-recovery: ${runs} runs per cell; outages ${outages[*]} s; 640x360@30 x264 over a veth pair"
declare -A result
for outage in "${outages[@]}"; do
  for netlink in true false; do
    samples=()
    for run in $(seq "$runs"); do
      d=$(one_run "$outage" "$netlink")
      samples+=("$d")
      echo "  outage ${outage}s netlink=${netlink} run ${run}: ${d} s"
    done
    result["$outage-$netlink"]="$(median "${samples[@]}") (${samples[*]})"
  done
done

printf '\n%-10s %-30s %-30s %s\n' "outage" "netlink on: median (runs)" "timer only: median (runs)" "timer / netlink"
for outage in "${outages[@]}"; do
  on="${result[$outage-true]}" off="${result[$outage-false]}"
  ratio=$(awk -v a="${on%% *}" -v b="${off%% *}" 'BEGIN { if (a+0 > 0 && b+0 > 0) printf "%.1f", b/a; else print "-" }')
  printf '%-10s %-30s %-30s %s\n' "${outage} s" "$on" "$off" "$ratio"
done
