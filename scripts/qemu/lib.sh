# shellcheck shell=bash
# What the emulated box's scenario scripts (v4l2-scenarios.sh, alsa-check.sh) share: their
# arguments, their verdict lines, one SSH connection to the box, and the box's clock turned into
# the receiver's. Sourced, not run. Before sourcing set TAG (the progress lines' prefix) and
# optionally BOX_TIMEOUT (seconds for one command on the box; default 60); BOX_FUNCS (shell
# functions sent with `at_box` commands) may be set before or after.
#   source "$SCRIPT_DIR/lib.sh"; scenario_args "$@"

# scenario_args --netns NS --key SSH_KEY --box IP --receiver URL --token TOKEN
#               [--qmp SOCKET] [--run DIR]
# --qmp is qemu's monitor socket (`qmp COMMAND [JSON]` below), --run the run's log directory.
# shellcheck disable=SC2034 # NS, KEY, BOX, URL, TOKEN, QMP_SOCK and RUN are the caller's
scenario_args() {
    NS="" KEY="" BOX="" URL="" TOKEN="" QMP_SOCK="" RUN=""
    while [ $# -gt 0 ]; do
        case $1 in
        --netns) NS=$2; shift 2 ;;
        --key) KEY=$2; shift 2 ;;
        --box) BOX=$2; shift 2 ;;
        --receiver) URL=$2; shift 2 ;;
        --token) TOKEN=$2; shift 2 ;;
        --qmp) QMP_SOCK=$2; shift 2 ;;
        --run) RUN=$2; shift 2 ;;
        *) echo "unknown argument $1" >&2; exit 2 ;;
        esac
    done
    for v in NS KEY BOX URL TOKEN; do
        [ -n "${!v}" ] || { echo "missing --${v,,}" >&2; exit 2; }
    done
}

t0=$SECONDS
say() { printf '[%s %4ds] %s\n' "$TAG" $((SECONDS - t0)) "$*"; }
# shellcheck disable=SC2034 # the caller exits with it
failed=0
result() { # PASS|FAIL text
    echo "$1 $2"
    [ "$1" = PASS ] || failed=1
}

# One SSH connection for all the commands (a new one costs about a second under emulation).
# The caller removes CONTROL_DIR when it is done.
CONTROL_DIR=$(mktemp -d)
SSH_OPTS=(-F /dev/null -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null
    -o LogLevel=ERROR -o ConnectTimeout=10 -o BatchMode=yes -o IdentitiesOnly=yes
    -o ControlMaster=auto -o "ControlPath=$CONTROL_DIR/%C" -o ControlPersist=300)
box() { timeout "${BOX_TIMEOUT:-60}" ip netns exec "$NS" ssh "${SSH_OPTS[@]}" -i "$KEY" "root@$BOX" "$@"; }
# The receiver-side checker (input-loss-check.py): frames, sessions, clocks.
check() { ip netns exec "$NS" python3 "$SCRIPT_DIR/input-loss-check.py" --url "$URL" "$@"; }
now() { check now; }
kv() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }
# qmp COMMAND [ARGUMENTS_JSON]: a command to qemu's monitor (plug, unplug, set_link, quit).
qmp() {
    [ -n "$QMP_SOCK" ] || { echo "qmp: no --qmp socket given" >&2; return 2; }
    python3 "$SCRIPT_DIR/qmp.py" --socket "$QMP_SOCK" "$@"
}
status_json() { box onair status --json 2>/dev/null || true; }

# The box's clock against the receiver's: a command run on the box prints `date +%s.%N` right
# after it changed the input, and that instant is turned into the receiver's clock, so the
# measured times do not include SSH under emulation (a second or two).
OFFSET=0
sync_clock() {
    local out
    out=$(check offset -- ssh "${SSH_OPTS[@]}" -i "$KEY" "root@$BOX") || return 1
    OFFSET=$(kv offset "$out")
    say "   clocks: $out"
}
# at_box CMD...: runs the commands on the box (with BOX_FUNCS), then prints the instant they
# were done on the receiver's clock.
at_box() {
    local t
    t=$(box "${BOX_FUNCS:-}
{ $*; } >&2 && date +%s.%N" | tail -n 1) || return 1
    awk -v t="$t" -v o="$OFFSET" 'BEGIN { printf "%.3f\n", t - o }'
}
