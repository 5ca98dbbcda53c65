# Sourced by the demo and benchmark scripts: starts the independent WHIP receiver
# (tests/peers/whip_receiver.py) and waits until it listens.
#   start_receiver WORKDIR LISTEN TOKEN [NETNS]
# Sets receiver_pid and receiver_base (e.g. http://127.0.0.1:41213); exits with the
# receiver's log if it does not start within 10 s.
start_receiver() {
  local work="$1" listen="$2" token="$3" netns="${4:-}"
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
