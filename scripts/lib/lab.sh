# Sourced after scripts/lib/run.sh by the benchmarks that put the box and the server in two
# network namespaces; the caller names them first (box=… srv=…, with its pid in the names).
# `teardown` stops the processes run.sh tracks and deletes both namespaces: between runs, and
# on exit before run.sh's cleanup. Needs root. TEST-NET addresses only.

: "${box:?name the box namespace (box=…) before sourcing lab.sh}"
: "${srv:?name the server namespace (srv=…) before sourcing lab.sh}"

teardown() {
  [ -n "$onair_pid" ] && kill "$onair_pid" 2>/dev/null || true
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  onair_pid="" receiver_pid=""
  ip netns del "$box" 2>/dev/null || true
  ip netns del "$srv" 2>/dev/null || true
}
trap 'teardown; cleanup' EXIT

# One cable: the box's eth0 (192.0.2.2/24) to the server's eth0 (192.0.2.1/24), the box's
# default route through it.
lab_up() {
  ip netns add "$box"; ip netns add "$srv"
  for ns in "$box" "$srv"; do ip -n "$ns" link set lo up; done
  ip -n "$box" link add eth0 type veth peer name eth0 netns "$srv"
  ip -n "$box" addr add 192.0.2.2/24 dev eth0; ip -n "$srv" addr add 192.0.2.1/24 dev eth0
  ip -n "$box" link set eth0 up; ip -n "$srv" link set eth0 up
  ip -n "$box" route add default via 192.0.2.1
}
