#!/usr/bin/env bash
# Input loss on a real V4L2 driver: the emulated box streams `source.kind: "v4l2"` from vivid
# (the kernel's virtual video test driver) to the WHIP receiver, and the input is taken away
# and given back over SSH, as a person at the box would, while the receiver says what the
# viewers got (scripts/qemu/input-loss-check.py):
#   1. HDMI signal lost for 10 s (vivid's "DV Timings Signal Mode": No Signal), then back:
#      the receiver decodes the slate at >= 90 % of the configured rate throughout, on the
#      same session (no new POST); the live picture is back <= 2 s after the signal.
#   2. The HDMI source changes resolution and rate (640x480p60 -> 720x576p50): same session,
#      output size unchanged.
#   3. The device unplugged (driver unbound, module removed) for 10 s and plugged back
#      (module loaded): as 1 — and the module can only be removed if the daemon let go of
#      every handle on the device.
#   4. With source.on_loss = "disconnect", a USB webcam unplugged (driver unbound) and back:
#      the session is closed, nothing is POSTed while it is gone, a new session brings the
#      picture back.
# Times are taken on the box right after the command that changed the input (`date`, turned
# into the receiver's clock through the offset of the quickest of five SSH round trips), so
# they do not include SSH under emulation.
# It also checks that onair status shows the input lost and back, and that the flight recorder
# has the transitions.
#
# Run by scripts/qemu-boot-test.sh on its booted box (sharing its VM, receiver and root file
# system), which passes what it set up:
#   v4l2-scenarios.sh --netns NS --key SSH_KEY --box IP --receiver URL --token TOKEN
# Prints progress lines and one "PASS ..." or "FAIL ..." line per scenario (the boot test puts
# those in its summary); exits 1 if any failed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TAG=v4l2 BOX_TIMEOUT=120
source "$SCRIPT_DIR/lib.sh"
scenario_args "$@"

WIDTH=320 HEIGHT=240 FPS=15
LOSS_S=10
# vivid: one instance with one HDMI input (/dev/video10), one with a webcam (/dev/video11).
VIVID_OPTS="n_devs=2 node_types=0x1,0x1 num_inputs=1,1 input_types=0x3,0x0 vid_cap_nr=10,11"
HDMI=/dev/video10 CAM=/dev/video11

# Functions the box runs (sent with every command that needs them).
# menu_index DEV CONTROL LABEL-PREFIX: the index of a menu entry, from v4l2-ctl's listing.
# vivid_source DEV: the HDMI source as the tests want it: 640x480p60 (QUERY_DV_TIMINGS answers
# the "Selected DV Timings"), 100 % colour bars (bright, unlike the slate).
BOX_FUNCS=$(cat <<'EOF'
menu_index() {
    v4l2-ctl -d "$1" --list-ctrls-menus | awk -v c="$2" -v l="$3" '
        $1 == c { inside = 1; next }
        inside && /^[ \t]+[0-9]+: / { i = $1; sub(":", "", i); $1 = ""; sub(/^ +/, "");
                                      if (index($0, l) == 1) { print i; exit } next }
        inside { inside = 0 }'
}
bars() {
    v4l2-ctl -d "$1" -c test_pattern="$(menu_index "$1" test_pattern "100% Colorbar")"
}
hdmi_source() { # DEV TIMINGS-LABEL
    bars "$1"
    v4l2-ctl -d "$1" -c dv_timings="$(menu_index "$1" dv_timings "$2")" \
        -c dv_timings_signal_mode="$(menu_index "$1" dv_timings_signal_mode "Selected DV Timings")"
}
signal_mode() { # DEV LABEL
    v4l2-ctl -d "$1" -c dv_timings_signal_mode="$(menu_index "$1" dv_timings_signal_mode "$2")"
}
wait_node() { # DEV: udev made it (and vivid registered it)
    for _ in $(seq 100); do [ -e "$1" ] && v4l2-ctl -d "$1" --all >/dev/null 2>&1 && return 0; sleep 0.1; done
    return 1
}
unplug() { # PLATFORM-DEVICE: as a USB unplug: the driver lets go under the open handles
    # (vivid's instances all hang off one platform device, vivid.0)
    echo "$1" >/sys/bus/platform/drivers/vivid/unbind
}
remove_module() { # the module goes once nothing holds the device any more
    for _ in $(seq 100); do modprobe -r vivid 2>/dev/null && return 0; sleep 0.1; done
    lsmod | grep -w vivid; return 1
}
EOF
)
bx() { box "$BOX_FUNCS
$*"; }

field() { python3 -c 'import json,sys
d = json.loads(sys.argv[1] or "{}")
for k in sys.argv[2].split("."):
    d = d.get(k) if isinstance(d, dict) else None
print(d)' "$1" "$2" 2>/dev/null || echo "?"; }

# Writes the box's config and makes the daemon read it (SIGHUP: a new source restarts the
# stream, as when a person edits /data/onair/onair.json).
configure() { # DEVICE ON_LOSS
    box "cat >/data/onair/onair.json.new <<EOF
{
  \"source\": {\"kind\": \"v4l2\", \"device\": \"$1\", \"width\": $WIDTH, \"height\": $HEIGHT, \"fps\": $FPS, \"on_loss\": \"$2\"},
  \"encoder\": {\"kind\": \"x264\", \"bitrate_kbps\": 500},
  \"output\": {\"kind\": \"whip\", \"url\": \"$URL/api/whip\", \"token\": \"$TOKEN\"}
}
EOF
onair check-config /data/onair/onair.json.new && mv /data/onair/onair.json.new /data/onair/onair.json &&
systemctl kill -s HUP onair.service"
}

# Waits for the live picture on a session and prints "session posts".
wait_live() { # SINCE WHAT
    local out
    if out=$(check wait-bright --since "$1" --new-session --count 30 --timeout 120); then
        say "$2: live picture decoded ($out)"
        echo "$(kv live "$out") $(kv posts "$out")" >"$STATE"
        return 0
    fi
    say "$2: no live picture: $out"
    box "journalctl -b -u onair.service -o cat | tail -n 25" 2>&1 | sed 's/^/    /' >&2 || true
    return 1
}
STATE=$(mktemp) saved=0
# Ends the shared SSH connection and removes what this script made.
# shellcheck disable=SC2317
# The box is left as the boot test found it: its imported config back (the boot test checks
# the data disk against it later), the daemon on it again, vivid unloaded.
finish() {
    if [ "$saved" = 1 ]; then
        box "cp $SAVED_CONFIG /data/onair/onair.json && rm -f $SAVED_CONFIG &&
            systemctl kill -s HUP onair.service && sleep 3 && modprobe -r vivid" >/dev/null 2>&1 || true
    fi
    ip netns exec "$NS" ssh "${SSH_OPTS[@]}" -i "$KEY" -O exit "root@$BOX" 2>/dev/null || true
    rm -rf "$STATE" "$CONTROL_DIR"
}
trap finish EXIT
session() { cut -d' ' -f1 "$STATE"; }
posts() { cut -d' ' -f2 "$STATE"; }

# ------------------------------------------------------------------ set-up
SAVED_CONFIG=/run/onair-v4l2-scenarios-saved.json saved=0
box "cp /data/onair/onair.json $SAVED_CONFIG" && saved=1
say "loading vivid ($VIVID_OPTS)"
if ! bx "modprobe vivid $VIVID_OPTS && wait_node $HDMI && wait_node $CAM && hdmi_source $HDMI 640x480p59 && bars $CAM" 2>&1 | sed 's/^/    /'; then
    result FAIL "v4l2: vivid could not be loaded and set up on the box"
    exit 1
fi
box "v4l2-ctl -d $HDMI --query-dv-timings 2>&1 | head -3; v4l2-ctl -d $CAM --info | sed -n 's/^\t*Card type *: /card: /p'" 2>&1 | sed 's/^/    /'

t=$(now)
configure "$HDMI" slate
wait_live "$t" "vivid HDMI 640x480p60 -> ${WIDTH}x$HEIGHT@$FPS" || {
    result FAIL "v4l2: the box did not stream from vivid's HDMI input"
    exit 1
}
st=$(status_json)
say "onair status: state=$(field "$st" state) input=$(field "$st" input.signal) format=$(field "$st" input.format)"

# ------------------------------------------------------------------ 1. signal lost
say "1. HDMI signal lost for ${LOSS_S}s"
sync_clock
cut=$(at_box "signal_mode $HDMI 'No Signal'")
sleep 4
st=$(status_json)
lost_state="state=$(field "$st" state) input=$(field "$st" input.signal) showing=$(field "$st" input.showing) reason=\"$(field "$st" input.reason)\""
say "   during: $lost_state"
sleep $((LOSS_S - 4))
back=$(at_box "signal_mode $HDMI 'Selected DV Timings'")
check wait-bright --since "$back" --count 15 --timeout 30 >/dev/null || true
sleep 2
out=$(check loss --session "$(session)" --posts "$(posts)" --fps $FPS --cut "$cut" --back "$back") && rc=0 || rc=$?
if [ "$rc" = 0 ] && grep -q 'state=no_input input=lost showing=slate' <<<"$lost_state"; then
    result PASS "v4l2 1. HDMI signal lost ${LOSS_S}s: ${out#PASS }; onair status during the loss: $lost_state"
else
    result FAIL "v4l2 1. HDMI signal lost ${LOSS_S}s: ${out#FAIL }; onair status during the loss: $lost_state"
fi

# ------------------------------------------------------------------ 2. resolution change
say "2. HDMI source changes to 720x576p50"
at=$(at_box "hdmi_source $HDMI 720x576p50")
sleep 8
until=$(now)
st=$(status_json)
format=$(field "$st" input.format)
out=$(check change --session "$(session)" --posts "$(posts)" --fps $FPS --at "$at" --until "$until" \
    --width $WIDTH --height $HEIGHT) && rc=0 || rc=$?
if [ "$rc" = 0 ] && [[ $format == 720x576* ]]; then
    result PASS "v4l2 2. resolution change 640x480p60 -> 720x576p50: ${out#PASS }; the box captures $format"
else
    result FAIL "v4l2 2. resolution change 640x480p60 -> 720x576p50: ${out#FAIL }; the box captures $format"
fi
bx "hdmi_source $HDMI 640x480p59" >/dev/null
check wait-bright --since "$(now)" --count 15 --timeout 30 >/dev/null || true

# ------------------------------------------------------------------ benchmark (optional)
# ONAIR_QEMU_V4L2_RUNS=N: the signal lost for 3 s and back N times; the time from its return
# to the first live picture the receiver decodes, each and the median (README, Benchmarks).
runs=${ONAIR_QEMU_V4L2_RUNS:-0}
if [ "$runs" -gt 0 ]; then
    say "benchmark: HDMI signal back -> live picture, $runs runs"
    sync_clock
    times=()
    for _ in $(seq "$runs"); do
        at_box "signal_mode $HDMI 'No Signal'" >/dev/null
        sleep 3
        back=$(at_box "signal_mode $HDMI 'Selected DV Timings'")
        out=$(check wait-bright --since "$back" --count 1 --timeout 30) || continue
        times+=("$(awk -v f="$(kv first "$out")" -v b="$back" 'BEGIN { printf "%.2f", f - b }')")
        sleep 2
    done
    median=$(printf '%s\n' "${times[@]}" | sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }')
    echo "BENCH v4l2 signal back -> live picture at the receiver: median ${median} s (${times[*]}), vivid under TCG"
fi

# ------------------------------------------------------------------ 3. unplug
say "3. device unplugged (vivid unbound, module removed) for ${LOSS_S}s"
sync_clock
if cut=$(at_box "unplug vivid.0"); then
    # The module goes only once the daemon has let go of every handle on the device.
    if ! bx "remove_module" 2>&1 | sed 's/^/    /'; then
        result FAIL "v4l2 3. unplug: vivid could not be removed: something still holds the device"
    fi
    sleep "$LOSS_S"
    back=$(at_box "modprobe vivid $VIVID_OPTS")
    # A reloaded vivid starts at its default timings (1280x720p60, 75 % bars): the source is
    # back as it was once it is set again, and the return is measured from then.
    replugged=$(at_box "wait_node $HDMI && hdmi_source $HDMI 640x480p59 && bars $CAM")
    check wait-bright --since "$replugged" --count 15 --timeout 30 >/dev/null || true
    sleep 2
    out=$(check loss --session "$(session)" --posts "$(posts)" --fps $FPS --cut "$cut" --back "$back" \
        --replugged "$replugged") && rc=0 || rc=$?
    result "$([ "$rc" = 0 ] && echo PASS || echo FAIL)" "v4l2 3. device unplugged ${LOSS_S}s (module removed) and replugged: ${out#* }"
else
    result FAIL "v4l2 3. unplug: vivid.0 could not be unbound"
fi

history=$(box onair status --history 2>/dev/null || true)
if grep -q 'went away' <<<"$history" && grep -q 'appeared' <<<"$history" &&
    grep -q 'source change' <<<"$history" && grep -q 'no_input -> live' <<<"$history"; then
    result PASS "v4l2 flight recorder: device gone and back, source changes, no_input -> live ($(grep -c . <<<"$history") entries)"
else
    printf '%s\n' "$history" | tail -n 20 | sed 's/^/    /'
    result FAIL "v4l2 flight recorder: missing input transitions (last entries above)"
fi

# ------------------------------------------------------------------ 4. on_loss = disconnect
say "4. on_loss=disconnect, USB webcam ($CAM) unplugged for ${LOSS_S}s"
t=$(now)
configure "$CAM" disconnect
if wait_live "$t" "vivid webcam -> ${WIDTH}x$HEIGHT@$FPS"; then
    sync_clock
    # vivid's two instances live on one platform device: unbinding it unplugs both.
    cut=$(at_box "unplug vivid.0")
    sleep 4
    st=$(status_json)
    lost_state="state=$(field "$st" state) input=$(field "$st" input.signal)"
    sleep $((LOSS_S - 4))
    back=$(at_box "echo vivid.0 >/sys/bus/platform/drivers/vivid/bind")
    bx "wait_node $CAM && bars $CAM" || true
    check wait-bright --since "$back" --count 15 --timeout 60 >/dev/null || true
    out=$(check disconnect --session "$(session)" --posts "$(posts)" --fps $FPS --cut "$cut" --back "$back") && rc=0 || rc=$?
    if [ "$rc" = 0 ] && [ "$lost_state" = "state=no_input input=lost" ]; then
        result PASS "v4l2 4. on_loss=disconnect, webcam unplugged ${LOSS_S}s: ${out#PASS }; onair status meanwhile: $lost_state"
    else
        result FAIL "v4l2 4. on_loss=disconnect, webcam unplugged ${LOSS_S}s: ${out#FAIL }; onair status meanwhile: $lost_state"
    fi
else
    result FAIL "v4l2 4. on_loss=disconnect: the box did not stream from vivid's webcam"
fi

say "done"
exit $failed
