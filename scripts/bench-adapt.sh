#!/usr/bin/env bash
# Benchmark: bitrate adaptation against a token-bucket uplink (tc tbf), adaptation on vs off,
# against the independent receivers: GStreamer's webrtcbin (sends TWCC feedback, as Broadcast
# Box does), aiortc (receiver reports and REMB only) and aiortc asking for retransmissions as
# Broadcast Box's pion does ("pion": every 100 ms for every packet still missing).
#
# Each run: the box streams noise (incompressible) at 640x360@30 with a 2500 kbit/s ceiling.
#   1 Mbit/s   the limit goes on once the box is live; 10 s to adapt, then 30 s judged:
#              frames decoded by the receiver (% of 30 fps), longest freeze, mean rate the
#              uplink sent vs the limit (utilisation), what the box offered the uplink (counted
#              before the bucket by nftables: mean and worst second, over the 40 s from the
#              limit on), seconds until the target was under the limit (converge).
#   lifted     seconds until the target is back at >= 80 % of the ceiling (at most 30 s).
#   600 kbit/s from 3 Mbit/s: 20 s at 600 kbit/s, frames decoded and longest freeze over its
#              last 10 s, seconds until the target was under 600.
# Reconnects over the whole run are counted. Needs root; nothing leaves the namespaces it
# creates (TEST-NET-1 addresses only).
#   scripts/bench-adapt.sh
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"
[ "$(id -u)" -eq 0 ] || { echo "bench-adapt: needs root for network namespaces" >&2; exit 1; }

bash scripts/setup.sh >/dev/null
cargo build --release --locked --quiet
bin="$repo/target/release/onair"
source scripts/lib/run.sh
box="oa-ad-box-$$" srv="oa-ad-srv-$$"
source scripts/lib/lab.sh
# The same bucket as the tests (tests/lab): a few packets of burst, 300 ms of queue.
limit() { ip netns exec "$box" tc qdisc replace dev eth0 root tbf rate "${1}kbit" burst 6kb latency 300ms; }
unlimit() { ip netns exec "$box" tc qdisc del dev eth0 root 2>/dev/null || true; }
tx_bytes() { ip netns exec "$box" cat /sys/class/net/eth0/statistics/tx_bytes; }
# What the box hands eth0 before the bucket (the output hook runs before the qdisc).
count_offered() {
  printf 'table inet bench {\n counter offered {}\n chain out {\n  type filter hook output priority 0; policy accept;\n  oif "eth0" counter name "offered"\n }\n}\n' \
    | ip netns exec "$box" nft -f -
}
offered_bytes() {
  ip netns exec "$box" nft -j list counter inet bench offered \
    | .venv/bin/python -c 'import json,sys; print([e["counter"] for e in json.load(sys.stdin)["nftables"] if "counter" in e][0]["bytes"])'
}
status() { "$bin" status --json --socket "$work/status.sock" 2>/dev/null || echo '{}'; }
field() { .venv/bin/python -c 'import json,sys
s=json.load(sys.stdin)
for k in sys.argv[1].split("."): s=(s or {}).get(k)
print("" if s is None else s)' "$1"; }
stats() { ip netns exec "$srv" curl -s --max-time 5 http://192.0.2.1:8080/control/stats; }

# Seconds (to 0.5 s) until the target satisfies `test` against N, at most $3 s; "-" if never.
#   until_target lt|ge N MAX
until_target() {
  local op="$1" n="$2" max="$3" t0 t
  t0=$(mono)
  for _ in $(seq $((max * 2))); do
    t=$(status | field adapt.target_kbps)
    if [ -n "$t" ] && [ "$t" "-$op" "$n" ]; then
      .venv/bin/python -c "print(f'{$(mono) - $t0:.1f}')"; return; fi
    sleep 0.5
  done
  echo "-"
}

# Frames decoded (% of 30 fps) and the longest freeze between two monotonic instants.
judge() {
  stats | .venv/bin/python -c '
import json, sys
a, b = float(sys.argv[1]), float(sys.argv[2])
t = sorted(x for x in json.load(sys.stdin).get("frame_times", []) if a <= x <= b)
edges = [a] + t + [b]
gap = max(y - x for x, y in zip(edges, edges[1:]))
print(f"{100 * len(t) / ((b - a) * 30):.0f}% {gap:.2f}")' "$1" "$2"
}

# One run: prints a table row.
one_run() {
  local receiver="$1" adapt="$2"
  lab_up
  : >"$work/receiver.out"
  count_offered
  if [ "$receiver" = webrtcbin ]; then
    ip netns exec "$srv" /usr/bin/python3 tests/peers/webrtcbin_receiver.py --listen 192.0.2.1:8080 \
      --token bench >"$work/receiver.out" 2>"$work/receiver.log" &
  else
    local nack=aiortc
    [ "$receiver" = pion ] && nack=pion
    ip netns exec "$srv" .venv/bin/python tests/peers/whip_receiver.py --listen 192.0.2.1:8080 \
      --token bench --nack "$nack" >"$work/receiver.out" 2>"$work/receiver.log" &
  fi
  receiver_pid=$!
  for _ in $(seq 100); do grep -q '^READY ' "$work/receiver.out" && break; sleep 0.1; done
  cat >"$work/onair.json" <<JSON
{"source": {"kind": "test", "width": 640, "height": 360, "fps": 30, "pattern": "noise"},
 "encoder": {"kind": "x264", "bitrate_kbps": 2500, "adapt": $adapt},
 "output": {"kind": "whip", "url": "http://192.0.2.1:8080/api/whip", "token": "bench"},
 "status": {"socket": "$work/status.sock"}, "state_dir": "$work/state"}
JSON
  rm -rf "$work/state"
  RUST_LOG=warn ip netns exec "$box" "$bin" run --config "$work/onair.json" 2>"$work/onair.log" &
  onair_pid=$!
  local live=""
  for _ in $(seq 200); do
    [ "$(status | field state)" = live ] && { live=1; break; }
    sleep 0.1
  done
  if [ -z "$live" ]; then
    printf '| %-9s | %-3s | never live |\n' "$receiver" "$adapt"; teardown; return
  fi
  sleep 3
  # 1 Mbit/s; what is offered is sampled every second in the background.
  limit 1000
  local o_start o_end
  o_start=$(mono)
  ( prev=$(offered_bytes); while :; do sleep 1; now=$(offered_bytes); echo $((now - prev)); prev=$now; done ) \
    >"$work/offered.txt" &
  local sampler=$!
  local converge from to b0 b1 judged util lifted offered
  if [ "$adapt" = true ]; then converge=$(until_target lt 1000 10); else converge="-"; fi
  sleep 10
  from=$(mono); b0=$(tx_bytes)
  sleep 30
  to=$(mono); b1=$(tx_bytes)
  kill "$sampler" 2>/dev/null; wait "$sampler" 2>/dev/null || true
  offered=$(.venv/bin/python -c 'import sys
v = [int(x) * 8 / 1000 for x in open(sys.argv[1]).read().split()]
print(f"{sum(v) / max(len(v), 1):.0f} kbit/s, worst second {max(v or [0]):.0f}")' "$work/offered.txt")
  judged=$(judge "$from" "$to")
  util=$(.venv/bin/python -c "print(f'{($b1 - $b0) * 8 / ($to - $from) / 1000:.0f} kbit/s ({($b1 - $b0) * 8 / ($to - $from) / 10000:.0f}%)')")
  # Lifted.
  unlimit
  if [ "$adapt" = true ]; then lifted=$(until_target ge 2000 30); else lifted="-"; fi
  # 3 Mbit/s, then 600 kbit/s.
  limit 3000; sleep 8
  limit 600
  local step_converge step_from step_judged
  if [ "$adapt" = true ]; then step_converge=$(until_target lt 600 20); else step_converge="-"; fi
  sleep 5
  step_from=$(mono); sleep 10
  step_judged=$(judge "$step_from" "$(mono)")
  limit 3000; sleep 5
  local reconnects
  reconnects=$(status | field reconnects)
  printf '| %-9s | %-3s | %4s decoded, longest freeze %5s s | %s | %s | %s s | %s s | %4s decoded, longest freeze %5s s | %s s | %s |\n' \
    "$receiver" "$([ "$adapt" = true ] && echo on || echo off)" $judged "$util" "$offered" "$converge" "$lifted" \
    $step_judged "$step_converge" "${reconnects:-?}"
  teardown
}

echo "bench-adapt: $(date -u +%F), $(nproc) cores, load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "| receiver | adapt | 1 Mbit/s, 30 s after 10 s | sent (vs 1000 limit) | offered before the bucket, 40 s | under limit after | >= 80 % of ceiling after lift | 600 kbit/s step, last 10 s | under 600 after | reconnects |"
echo "|---|---|---|---|---|---|---|---|---|---|"
for receiver in webrtcbin aiortc pion; do
  for adapt in false true; do
    one_run "$receiver" "$adapt"
  done
done
