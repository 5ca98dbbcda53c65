#!/usr/bin/env bash
# Recording on the emulated box, with real block drivers (issue 25). Two phases, one boot apart:
#
# RECORD_PHASE=cut (on the booted box):
#   1. recording switched on by SIGHUP (`record.to: "usb"`, no disk yet: /data/recordings); a
#      USB disk labelled ONAIR-REC (vfat, a file on the host) hot-plugged through qemu's monitor
#      (blockdev-add + device_add usb-storage on the xhci controller): the daemon mounts it and
#      the recording moves to it.
#   2. the disk unplugged mid-write (device_del): the recording falls back to /data/recordings,
#      the same daemon goes on (no restart), the stream keeps its session and >= 90 % of its
#      frames; the stick's image, read on the host, is a file system fsck.vfat reads and mtools
#      lists, and its last recording decodes.
#   Then, recording to /data again, the imported config is put back on the disk (no SIGHUP: the
#   daemon records on), and the power is pulled (`qmp quit`). The cut time (on the box's clock)
#   and the file being written go to $RUN/record-cut.env.
# RECORD_PHASE=after (after the harness booted the box again):
#   3. that file, copied off the box, decodes up to at most 1 s before the cut.
#
# Run by scripts/qemu-boot-test.sh (scenario_check), with the usual scenario arguments.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TAG=record
source "$SCRIPT_DIR/lib.sh"
scenario_args "$@"
[ -n "$RUN" ] && [ -n "$QMP_SOCK" ] || { echo "record-check.sh needs --run and --qmp" >&2; exit 2; }

WIDTH=320 HEIGHT=240 FPS=15 LABEL=ONAIR-REC
USB_IMG=$RUN/rec-usb.vfat
CUT_ENV=$RUN/record-cut.env
SAVED_CONFIG=/data/onair/onair.json.before-record
judge() { ip netns exec "$NS" python3 "$SCRIPT_DIR/record-check.py" "$@"; }
rec() { # the status's record fields as key=value words
    python3 -c 'import json,sys
r = (json.loads(sys.argv[1] or "{}").get("record") or {})
print(" ".join("%s=%s" % (k, str(r.get(k)).replace(" ", "_")) for k in
      ("state", "location", "file", "file_bytes", "free_mb", "dropped", "last_error")))' "$1" 2>/dev/null ||
        echo "state=?"
}
wait_rec() { # SECONDS PATTERN [NOT_FILE]: until the record fields match (grep -E), with
    # another file than NOT_FILE; prints them
    local until=$((SECONDS + $1)) r
    while :; do
        r=$(rec "$(status_json)")
        if grep -qE "$2" <<<"$r" && { [ -z "${3:-}" ] || [ "$(kv file "$r")" != "$3" ]; }; then
            echo "$r"
            return 0
        fi
        [ $SECONDS -lt "$until" ] || { echo "$r"; return 1; }
        sleep 1
    done
}
daemon_pid() { box "systemctl show -p MainPID --value onair.service; systemctl show -p NRestarts --value onair.service" | tr '\n' ' '; }
mono_add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a + b }'; }

cleanup() {
    ip netns exec "$NS" ssh "${SSH_OPTS[@]}" -i "$KEY" -O exit "root@$BOX" 2>/dev/null || true
    rm -rf "$CONTROL_DIR"
}
trap cleanup EXIT

# ------------------------------------------------------------------ phase 3: after the cut
if [ "${RECORD_PHASE:-cut}" = after ]; then
    # shellcheck disable=SC1090
    . "$CUT_ENV"
    out=$RUN/record-after-cut.mkv
    if box "cat /data/recordings/$CUT_FILE" >"$out" && box "cat /data/recordings/${CUT_FILE%.mkv}.txt" >"$out.txt" &&
        d=$(judge decode --file "$out" --sidecar "$out.txt" --cut "$CUT_AT"); then
        before=$(kv before_cut "$d")
        if awk -v b="$before" 'BEGIN { exit !(b <= 1.0) }'; then
            result PASS "record 3. power cut (qmp quit) while recording to /data: after the next boot $CUT_FILE ($(stat -c %s "$out") bytes) decodes $(kv frames "$d") pictures, the last ${before} s before the cut"
        else
            result FAIL "record 3. power cut: $CUT_FILE ends ${before} s before the cut ($d)"
        fi
    else
        result FAIL "record 3. power cut: $CUT_FILE could not be read back or decoded after the boot (${d:-})"
    fi
    exit $failed
fi

# ------------------------------------------------------------------ phase 1: on, then the disk
rm -f "$USB_IMG" "$CUT_ENV"
mkfs.vfat -n "$LABEL" -C "$USB_IMG" $((64 * 1024)) >/dev/null
box "cp /data/onair/onair.json $SAVED_CONFIG"
t=$(now)
box "cat >/data/onair/onair.json.new <<EOF
{
  \"source\": {\"kind\": \"test\", \"width\": $WIDTH, \"height\": $HEIGHT, \"fps\": $FPS},
  \"encoder\": {\"kind\": \"x264\", \"bitrate_kbps\": 500},
  \"output\": {\"kind\": \"whip\", \"url\": \"$URL/api/whip\", \"token\": \"$TOKEN\"},
  \"record\": {\"enabled\": true, \"to\": \"usb\", \"usb_label\": \"$LABEL\", \"segment_s\": 60, \"min_free_mb\": 8}
}
EOF
onair check-config /data/onair/onair.json.new && mv /data/onair/onair.json.new /data/onair/onair.json &&
systemctl kill -s HUP onair.service"
if ! r=$(wait_rec 60 '^state=recording location=data'); then
    box "journalctl -b -u onair.service -o cat | tail -n 25" 2>&1 | sed 's/^/    /' >&2 || true
    result FAIL "record 1. recording to /data never started after the SIGHUP ($r)"
    exit 1
fi
say "recording to /data without a disk: $r"
pid_before=$(daemon_pid)

sync_clock || say "   clocks: no answer, times are off by the SSH round trip"
t_plug=$(now)
qmp blockdev-add "{\"driver\": \"raw\", \"node-name\": \"recdisk\", \"file\": {\"driver\": \"file\", \"filename\": \"$USB_IMG\"}}" >/dev/null &&
    qmp device_add '{"driver": "usb-storage", "id": "recusb", "bus": "xhci.0", "drive": "recdisk"}' >/dev/null ||
    { result FAIL "record 1. the USB disk could not be plugged in through the monitor"; exit 1; }
# A new file on the stick, not the /data one that runs on until the next key frame.
data_file=$(kv file "$r")
if r=$(wait_rec 60 '^state=recording location=usb file=onair-' "$data_file"); then
    moved=$(awk -v a="$(now)" -v b="$t_plug" 'BEGIN { printf "%.1f", a - b }')
    mounted=$(box "grep ' /run/onair/usb ' /proc/\$(systemctl show -p MainPID --value onair.service)/mounts | cut -d' ' -f1-3" 2>/dev/null | head -1)
    seen=$(box "grep -c ' /run/onair/usb ' /proc/self/mounts" 2>/dev/null || true)
    result PASS "record 1. USB disk $LABEL (vfat) hot-plugged through the monitor: recording moved to it ${moved} s later (the daemon's mount: $mounted; seen from SSH: ${seen:-0}; $r)"
else
    box "journalctl -b -u onair.service -o cat | grep -i record | tail -n 15" 2>&1 | sed 's/^/    /' >&2 || true
    result FAIL "record 1. USB disk hot-plugged: the recording did not move to it within 60 s ($r)"
fi

# ------------------------------------------------------------------ phase 2: pulled mid-write
sleep 6
usb_file=$(kv file "$(rec "$(status_json)")")
t_pull=$(now)
qmp device_del '{"id": "recusb"}' >/dev/null || say "device_del failed"
r=$(wait_rec 60 '^state=recording location=data file=onair-' "$usb_file") && back=1 || back=0
t_back=$(now)
sleep 3
t_end=$(now)
pid_after=$(daemon_pid)
s=$(judge stream --url "$URL" --from "$t_pull" --to "$t_end" --fps $FPS)
for _ in 1 2 3 4 5 6 7 8 9 10; do qmp blockdev-del '{"node-name": "recdisk"}' >/dev/null 2>&1 && break; sleep 1; done
fsck=$(fsck.vfat -n "$USB_IMG" 2>&1 | tail -n 2 | tr '\n' ' ') || true
listed=$(mdir -b -i "$USB_IMG" ::/recordings 2>/dev/null | sed 's|^::/recordings/||' | tr '\n' ' ') || listed=""
stick_decodes="none"
if [ -n "$usb_file" ] && [ "$usb_file" != None ] &&
    mcopy -n -i "$USB_IMG" "::/recordings/$usb_file" "$RUN/record-usb.mkv" 2>/dev/null &&
    mcopy -n -i "$USB_IMG" "::/recordings/${usb_file%.mkv}.txt" "$RUN/record-usb.txt" 2>/dev/null; then
    stick_decodes=$(judge decode --file "$RUN/record-usb.mkv" --sidecar "$RUN/record-usb.txt" || true)
fi
say "stream: $s; stick: fsck.vfat: $fsck; files: $listed; $usb_file: $stick_decodes"
if [ $back = 1 ] && [ "$pid_before" = "$pid_after" ] &&
    awk -v x="$(kv share "$s")" 'BEGIN { exit !(x >= 0.9) }' && [ "$(kv live "$s")" != - ] &&
    [[ " $listed " == *" $usb_file "* ]] && [ "$(kv frames "$stick_decodes")" -gt 0 ] 2>/dev/null; then
    result PASS "record 2. USB disk pulled mid-write: recording back on /data $(awk -v a="$t_back" -v b="$t_pull" 'BEGIN { printf "%.1f", a - b }') s later, same daemon (MainPID, NRestarts: $pid_after), stream $(kv share "$s") of $FPS fps on session $(kv live "$s") (longest gap $(kv gap "$s") s); the stick: mtools lists $usb_file, it decodes $(kv frames "$stick_decodes") pictures; fsck.vfat -n: $fsck"
else
    result FAIL "record 2. USB disk pulled: back=$back ($r), daemon $pid_before -> $pid_after, stream $s, stick files '$listed', $usb_file: $stick_decodes"
fi

# ------------------------------------------------------------------ the power cut
r=$(wait_rec 30 '^state=recording location=data file=onair-.* file_bytes=[1-9]') || true
sleep 4
file=$(kv file "$(rec "$(status_json)")")
# The imported config back on the disk for the next boot (and for the boot test's last check);
# the running daemon is not told.
box "cp $SAVED_CONFIG /data/onair/onair.json && rm -f $SAVED_CONFIG && sync"
sync_clock || say "   clocks: no answer, times are off by the SSH round trip"
t_cut=$(now)
qmp quit >/dev/null || true
cut_at=$(awk -v a="$t_cut" -v o="$OFFSET" 'BEGIN { printf "%.3f\n", a + o }')
printf 'CUT_FILE=%s\nCUT_AT=%s\n' "$file" "$cut_at" >"$CUT_ENV"
say "power pulled while recording $file ($r)"
exit $failed
