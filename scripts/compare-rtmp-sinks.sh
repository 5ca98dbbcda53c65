#!/usr/bin/env bash
# Why the RTMP output uses rtmp2sink and not librtmp's rtmpsink: both elements, fed the same
# H.264, against the failures the watchdog must tell apart. For each case it prints how long the
# element took to fail and what it said. Everything runs on loopback: a private nginx-rtmp from
# tests/rtmp/nginx.conf.in and a TCP listener that accepts and never answers.
#   bash scripts/compare-rtmp-sinks.sh
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh >/dev/null

module=${ONAIR_TEST_NGINX_RTMP_MODULE:-/usr/lib/nginx/modules/ngx_rtmp_module.so}
work="$(mktemp -d)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

free_port() { .venv/bin/python -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
rtmp_port=$(free_port) http_port=$(free_port) silent_port=$(free_port) closed_port=$(free_port)

mkdir -p "$work/tmp"
sed -e "s#@MODULE@#$module#" -e "s#@PREFIX@#$work#g" \
    -e "s#@RTMP_PORT@#$rtmp_port#" -e "s#@HTTP_PORT@#$http_port#" \
    tests/rtmp/nginx.conf.in >"$work/nginx.conf"
nginx -p "$work" -c "$work/nginx.conf" 2>"$work/nginx.err" & pids+=($!)
# A server that completes the TCP handshake and then says nothing (a hung ingest).
.venv/bin/python -c '
import socket, sys, time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
conns = []
while True: conns.append(s.accept()[0])' "$silent_port" & pids+=($!)
for _ in $(seq 50); do
  ss -ltn | grep -q ":$rtmp_port " && ss -ltn | grep -q ":$silent_port " && break; sleep 0.1
done

src="videotestsrc is-live=true ! video/x-raw,width=320,height=240,framerate=30/1 \
 ! x264enc tune=zerolatency speed-preset=ultrafast key-int-max=30 ! h264parse ! flvmux streamable=true"

# The daemon ignores SIGPIPE (Rust does), so the elements are compared that way too; the
# rtmpsink row says when the signal would have killed a process that does not.
try() {
  local sink=$1 url=$2 t0 t1 rc said
  t0=$(date +%s.%N)
  set +e
  (trap '' PIPE; exec timeout 45 gst-launch-1.0 -q $src ! "$sink" location="$url") >"$work/out" 2>&1
  rc=$?
  set -e
  t1=$(date +%s.%N)
  said=$(grep -m1 '^ERROR: from element' "$work/out" | sed -E 's/^ERROR: from element [^ ]+: //' | cut -c1-80)
  [ $rc -eq 124 ] && said="(still running after 45 s)"
  printf '| %-46s | %-9s | %6.2f s | %s |\n' "$3" "$sink" "$(awk "BEGIN { print $t1 - $t0 }")" "$said"
}

echo "| case | element | fails after | what it says |"
echo "| --- | --- | --- | --- |"
for sink in rtmpsink rtmp2sink; do
  try $sink "rtmp://127.0.0.1:$closed_port/live/k" "nothing listens (connection refused)"
  try $sink "rtmp://127.0.0.1:$rtmp_port/hook/k" "publish refused by the server (on_publish 403)"
  try $sink "rtmp://127.0.0.1:$silent_port/live/k" "server accepts TCP, never answers"
done
set +e
(exec timeout 10 gst-launch-1.0 -q $src ! rtmpsink location="rtmp://127.0.0.1:$rtmp_port/hook/k") >/dev/null 2>&1
rc=$?
set -e
[ $rc -eq 141 ] && echo "rtmpsink, SIGPIPE not ignored: the refused publish killed gst-launch with SIGPIPE"
exit 0
