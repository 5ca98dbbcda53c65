#!/usr/bin/env bash
# Benchmark: the box's primary uplink is pulled while the secondary is up. For each run, the
# longest gap between frames the independent receiver decodes around the pull, and the time
# from the pull to the first frame of the new session; median and max over RUNS runs, with
# path awareness on (`network.paths: steer`, the default) and off (`ignore`: the connection
# is left to notice the dead path by itself, as before path awareness). Optionally a third
# column for another build of onair (BASELINE=/path/to/onair, run with its own defaults and no
# `network.paths` key), e.g. the main branch before this feature.
#
# The lab: a box namespace with eth0 (192.0.2.2, metric 100) and wlan0 (198.51.100.2, metric
# 200) to a server namespace whose address 203.0.113.1 is on its lo, with strict reverse-path
# filtering (a packet with the other uplink's source address is dropped). The box kernel
# ignores routes through an interface without carrier (ignore_routes_with_linkdown=1, as a
# box whose network manager drops a dead link's routes): without it the kernel would keep
# routing into the dead eth0 and a box without steering would stay offline. Needs root;
# nothing leaves the namespaces it creates.
#   scripts/bench-uplink.sh [RUNS]        (default: 5 runs)
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
[ "$(id -u)" -eq 0 ] || { echo "bench-uplink: needs root for network namespaces" >&2; exit 1; }
runs="${1:-5}"
window=15

bash scripts/setup.sh >/dev/null
cargo build --release --locked --quiet
source scripts/lib/run.sh
box="oa-up-box-$$" srv="oa-up-srv-$$"
source scripts/lib/lab.sh

# The two-uplink lab described above.
lab_up_two_uplinks() {
  ip netns add "$box"; ip netns add "$srv"
  for ns in "$box" "$srv"; do ip -n "$ns" link set lo up; done
  ip netns exec "$srv" sysctl -qw net.ipv4.conf.all.rp_filter=1 net.ipv4.conf.default.rp_filter=1
  ip netns exec "$box" sysctl -qw net.ipv4.conf.all.ignore_routes_with_linkdown=1 \
    net.ipv4.conf.default.ignore_routes_with_linkdown=1
  ip -n "$srv" addr add 203.0.113.1/32 dev lo
  ip -n "$box" link add eth0 index 7101 type veth peer name isp-a index 7102 netns "$srv"
  ip -n "$box" link add wlan0 index 7201 type veth peer name isp-b index 7202 netns "$srv"
  ip -n "$box" addr add 192.0.2.2/24 dev eth0; ip -n "$srv" addr add 192.0.2.1/24 dev isp-a
  ip -n "$box" addr add 198.51.100.2/24 dev wlan0; ip -n "$srv" addr add 198.51.100.1/24 dev isp-b
  for i in isp-a isp-b; do ip -n "$srv" link set "$i" up; done
  for i in eth0 wlan0; do ip -n "$box" link set "$i" up; done
  ip -n "$box" route add default via 192.0.2.1 dev eth0 metric 100
  ip -n "$box" route add default via 198.51.100.1 dev wlan0 metric 200
}

stats() { ip netns exec "$srv" curl -s --max-time 5 http://203.0.113.1:8080/control/stats; }

# One run: prints "<longest gap> <pull to first frame of a new session>" in seconds (or "fail").
one_run() {
  local bin="$1" paths="$2"
  lab_up_two_uplinks
  start_receiver 203.0.113.1:8080 bench "$srv"
  local network=""
  [ -n "$paths" ] && network="\"network\": {\"paths\": \"$paths\"},"
  cat >"$work/onair.json" <<JSON
{"source": {"kind": "test", "width": 640, "height": 360, "fps": 30},
 "encoder": {"kind": "x264", "bitrate_kbps": 1000, "keyframe_interval_ms": 2000},
 "output": {"kind": "whip", "url": "http://203.0.113.1:8080/api/whip", "token": "bench"},
 $network
 "status": {"socket": "$work/status.sock"}, "state_dir": "$work/state"}
JSON
  RUST_LOG=warn ip netns exec "$box" "$bin" run --config "$work/onair.json" 2>"$work/onair.log" &
  onair_pid=$!
  local live=""
  for _ in $(seq 200); do
    if "$bin" status --json --socket "$work/status.sock" 2>/dev/null | grep -q '"state":"live"'; then
      live=1; break; fi
    sleep 0.1
  done
  if [ -z "$live" ]; then echo fail; teardown; return; fi
  sleep 3
  local t_pull; t_pull=$(mono)
  ip -n "$srv" link set isp-a down
  sleep "$window"
  stats | .venv/bin/python -c '
import json, sys
t, window = float(sys.argv[1]), float(sys.argv[2])
s = json.load(sys.stdin)
frames = [f for f in s["frame_times"] if f <= t + window]
before = [f for f in frames if f < t]
prev = before[-1] if before else t
gap = 0.0
for f in [f for f in frames if f >= t] + [t + window]:
    gap = max(gap, f - prev)
    prev = f
firsts = [x["first_frame_t"] for x in s.get("sessions", []) if x.get("first_frame_t") and x["first_frame_t"] > t]
print(f"{gap:.2f} {min(firsts) - t:.2f}" if firsts else f"{gap:.2f} -")' "$t_pull" "$window" 2>/dev/null || echo fail
  teardown
}

median() { printf '%s\n' "$@" | grep -v -e fail -e - | sort -n | awk '{a[NR]=$1} END {if (NR==0) print "-"; else if (NR%2) print a[(NR+1)/2]; else printf "%.2f\n", (a[NR/2]+a[NR/2+1])/2}'; }
maximum() { printf '%s\n' "$@" | grep -v -e fail -e - | sort -n | tail -1; }

arms=("steer" "ignore")
declare -A bins=([steer]="./target/release/onair" [ignore]="./target/release/onair")
declare -A paths=([steer]="steer" [ignore]="ignore")
if [ -n "${BASELINE:-}" ]; then
  arms+=("baseline"); bins[baseline]="$BASELINE"; paths[baseline]=""
fi

echo "bench-uplink: ${runs} runs per arm; eth0 pulled with wlan0 up; 640x360@30 x264; window ${window} s"
declare -A gaps firsts
for arm in "${arms[@]}"; do
  g=() f=()
  for run in $(seq "$runs"); do
    result=$(one_run "${bins[$arm]}" "${paths[$arm]}")
    read -r gap first <<<"$result"
    g+=("${gap:-fail}"); f+=("${first:--}")
    echo "  ${arm} run ${run}: longest gap ${gap:-fail} s, first frame of the new session ${first:--} s after the pull"
  done
  gaps[$arm]="${g[*]}"; firsts[$arm]="${f[*]}"
done

printf '\n%-34s' ""
for arm in "${arms[@]}"; do
  case "$arm" in baseline) label="BASELINE build" ;; *) label="paths: ${arm}" ;; esac
  printf '%-30s' "$label"
done
printf '\n%-34s' "longest gap, median (max)"
for arm in "${arms[@]}"; do
  # shellcheck disable=SC2086
  printf '%-30s' "$(median ${gaps[$arm]}) s ($(maximum ${gaps[$arm]}) s)"
done
printf '\n%-34s' "pull -> new session's first frame"
for arm in "${arms[@]}"; do
  # shellcheck disable=SC2086
  printf '%-30s' "$(median ${firsts[$arm]}) s ($(maximum ${firsts[$arm]}) s)"
done
printf '\n%-34s' "runs (longest gaps)"
for arm in "${arms[@]}"; do printf '%-30s' "${gaps[$arm]}"; done
echo
