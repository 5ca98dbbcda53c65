# Sourced by the demo and benchmark scripts (from the repository root): a work directory that
# is removed on exit together with the processes the script started, and the independent WHIP
# receiver (tests/peers/whip_receiver.py).

work="$(mktemp -d)"
receiver_pid="" onair_pid=""
cleanup() {
  [ -n "$onair_pid" ] && kill "$onair_pid" 2>/dev/null || true
  [ -n "$receiver_pid" ] && kill "$receiver_pid" 2>/dev/null || true
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

# CLOCK_MONOTONIC seconds, the clock the receiver reports its times on.
mono() { .venv/bin/python -c 'import time; print(time.monotonic())'; }

#   start_receiver LISTEN TOKEN [NETNS]
# Starts the receiver and waits until it listens; sets receiver_pid and receiver_base (e.g.
# http://127.0.0.1:41213). Exits with the receiver's log if it does not start within 10 s.
start_receiver() {
  local listen="$1" token="$2" netns="${3:-}"
  local -a prefix=()
  [ -n "$netns" ] && prefix=(ip netns exec "$netns")
  : >"$work/receiver.out"
  "${prefix[@]}" .venv/bin/python tests/peers/whip_receiver.py --listen "$listen" --token "$token" \
    >"$work/receiver.out" 2>"$work/receiver.log" &
  receiver_pid=$!
  for _ in $(seq 100); do grep -q '^READY ' "$work/receiver.out" && break; sleep 0.1; done
  receiver_base="$(sed -n 's/^READY //p' "$work/receiver.out")"
  if [ -z "$receiver_base" ]; then
    echo "the test receiver did not start:" >&2
    cat "$work/receiver.log" >&2
    exit 1
  fi
}
