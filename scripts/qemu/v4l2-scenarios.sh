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
#   EDID (issue 24): vivid's HDMI input takes an EDID (VIDIOC_S_EDID) and starts with one of
#   its own. After the daemon first captures from it, after the module is reloaded (3.), and,
#   with source.edid naming another file, after the device is unbound and bound again, the
#   EDID read back from the input is the shipped one (/usr/share/onair/hdmi-edid.bin) or that
#   file, byte for byte (but for the physical address vivid writes into what it reports),
#   `onair status` says which and the source's timing, and the flight recorder has the EDID
#   loaded before the capture that went live — once per appearance or change, not at every
#   capture restart.
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
edid_hex() { # DEV: the EDID read back from DEV's input 0, in hex
    rm -f /run/onair-edid-read.bin
    v4l2-ctl -d "$1" --get-edid=pad=0,format=raw,file=/run/onair-edid-read.bin >/dev/null 2>&1 &&
        od -An -v -tx1 /run/onair-edid-read.bin | tr -d ' \n'
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
configure() { # DEVICE ON_LOSS [EDID-FILE]
    local edid=""
    [ -z "${3:-}" ] || edid=", \"edid\": \"$3\""
    box "cat >/data/onair/onair.json.new <<EOF
{
  \"source\": {\"kind\": \"v4l2\", \"device\": \"$1\", \"width\": $WIDTH, \"height\": $HEIGHT, \"fps\": $FPS, \"on_loss\": \"$2\"$edid},
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
SHIPPED_EDID=/usr/share/onair/hdmi-edid.bin TEST_EDID=/data/onair/test-edid.bin

# edid_same WANTED-HEX HELD-HEX: "same" when the EDID read back is the one wanted, apart from the
# physical address a receiver with CEC writes into what it reports (vivid: 0.0.0.0) and that
# block's checksum; else where it differs.
edid_same() {
    python3 - "$1" "$2" <<'PY'
import sys
want, held = bytes.fromhex(sys.argv[1]), bytes.fromhex(sys.argv[2])
skip = set()
for n in range(1, len(want) // 128):
    b = want[n * 128:(n + 1) * 128]
    i = 4
    while b[0] == 2 and i < b[2]:
        tag, size = b[i] >> 5, b[i] & 31
        if tag == 3 and b[i + 1:i + 4] == bytes([3, 12, 0]):
            skip = {n * 128 + i + 4, n * 128 + i + 5, n * 128 + 127}
        i += 1 + size
if len(want) != len(held) or not want:
    print(f"different: {len(held)} bytes read back, {len(want)} wanted")
else:
    diff = [i for i in range(len(want)) if want[i] != held[i] and i not in skip]
    pa = min(skip) if skip else None
    shown = f" (physical address read back {held[pa] >> 4}.{held[pa] & 15}.{held[pa + 1] >> 4}.{held[pa + 1] & 15})" if pa else ""
    print(f"same{shown}" if not diff else f"different at byte {diff[0]}")
PY
}

# edid_check LABEL FILE DESCRIPTION LOADS: the EDID read back from the HDMI input is FILE, onair
# status says DESCRIPTION... and the source's timing, the flight recorder has the EDID loaded
# before the last input live/back, and has loaded one LOADS times in all (once per appearance
# or change, never at an ordinary capture restart).
edid_check() {
    local label=$1 file=$2 described=$3 loads=$4 st history order readback
    readback=$(edid_same "$(bx "od -An -v -tx1 $file | tr -d ' \\n'")" "$(bx "edid_hex $HDMI" 2>/dev/null)")
    st=$(status_json)
    history=$(box onair status --history 2>/dev/null || true)
    order=$(awk '/EDID loaded/ { edid = NR; n++ } /input: input (live|back):/ { live = NR }
        END { print ((edid && live > edid) ? "loaded-then-live" : "edid@" edid "/live@" live) ", " n + 0 " load(s)" }' <<<"$history")
    local what="read back: $readback as $file; onair status: edid=\"$(field "$st" input.edid | cut -c1-40)\" timing=$(field "$st" input.timing); flight recorder: EDID $order"
    if [[ $readback == same* ]] && [[ $(field "$st" input.edid) == "$described"* ]] &&
        [ "$(field "$st" input.timing)" = 640x480p59.94 ] && [ "$order" = "loaded-then-live, $loads load(s)" ]; then
        result PASS "v4l2 EDID $label: $what"
    else
        grep -E 'EDID|input (live|back)|appeared|went away' <<<"$history" | tail -n 8 | sed 's/^/    /' >&2
        result FAIL "v4l2 EDID $label: $what"
    fi
}
# Ends the shared SSH connection and removes what this script made.
# shellcheck disable=SC2317
# The box is left as the boot test found it: its imported config back (the boot test checks
# the data disk against it later), the daemon on it again, vivid unloaded.
finish() {
    if [ "$saved" = 1 ]; then
        box "cp $SAVED_CONFIG /data/onair/onair.json && rm -f $SAVED_CONFIG $TEST_EDID &&
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
edid_check "1. after vivid appeared (its own EDID replaced before the first capture)" "$SHIPPED_EDID" shipped 1

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
# to the first live picture the receiver decodes, each and the median (scripts/README.md, Benchmarks).
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
    edid_check "2. after the driver was reloaded (3.; not at the capture restarts of 1. and 2.)" "$SHIPPED_EDID" shipped 2
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

# ------------------------------------------------------------------ EDID 3. source.edid, unbind/bind
# Another EDID (the shipped one with another product code) in source.edid; then the device
# unbound and bound again: the daemon loads the file's EDID at its return, before capturing.
say "EDID 3. source.edid = $TEST_EDID, then vivid.0 unbound and bound"
own=$(mktemp)
python3 - "$SCRIPT_DIR/../../board/common/rootfs-overlay/usr/share/onair/hdmi-edid.bin" "$own" <<'PY'
import sys
b = bytearray(open(sys.argv[1], "rb").read())
b[10] ^= 0x5A
b[127] = (-sum(b[:127])) & 0xFF
open(sys.argv[2], "wb").write(bytes(b))
PY
box "cat >$TEST_EDID" <"$own"
rm -f "$own"
t=$(now)
configure "$HDMI" slate "$TEST_EDID"
if wait_live "$t" "vivid HDMI with source.edid"; then
    say "   source.edid after the config change: $(edid_same "$(bx "od -An -v -tx1 $TEST_EDID | tr -d ' \\n'")" "$(bx "edid_hex $HDMI" 2>/dev/null)")"
    t=$(now)
    at_box "unplug vivid.0 && sleep 3 && echo vivid.0 >/sys/bus/platform/drivers/vivid/bind && wait_node $HDMI && hdmi_source $HDMI 640x480p59 && bars $CAM" >/dev/null
    check wait-bright --since "$t" --count 15 --timeout 60 >/dev/null || true
    sleep 1
    edid_check "3. source.edid, after vivid.0 was unbound and bound" "$TEST_EDID" "$TEST_EDID" 4
else
    result FAIL "v4l2 EDID 3. the box did not stream from vivid with source.edid"
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
