#!/usr/bin/env bash
# Sound from a real ALSA driver: the kernel's loopback card (snd-aloop, in Debian's arm64
# kernel) in the emulated box. A 1 kHz tone at -6 dBFS is played into one side
# (hw:Loopback,0, aplay), the daemon captures the other (`audio: {kind: "alsa", device:
# "hw:Loopback,1"}`, switched to by SIGHUP beside the test picture), and the WHIP receiver
# says what a listener heard (scripts/qemu/alsa-check.py, from its `audio_levels`):
#   1. tone: every 0.25 s of sound louder than -20 dBFS for 3 s, 48 kHz, pictures at >= 90 %
#      of the rate; `onair status` shows the sound `live` from hw:Loopback,1 with its level.
#   2. the player stopped: the card goes on delivering digital silence (snd-aloop's capture
#      side runs on its own timer), so the sound stays `live` with no level, and the receiver
#      hears silence (every 0.25 s below -50 dBFS) on the same session, pictures unaffected.
#      This is also what keeps 1 from passing on silence.
#   3. the player started again: the tone is back on the same session.
#   4. the card unplugged (its platform device unbound: as a USB unplug, the driver lets go
#      under the open handle): the sound turns to `silence` with a reason within the stall
#      time (1 s) plus a margin, the receiver hears silence at 48 kHz and pictures go on, on
#      the same session with no new POST; the card bound again with the tone playing: `live`
#      again and the tone heard, still on the same session.
# Times are taken on the box right after the command that changed the sound (as in
# v4l2-scenarios.sh) and turned into the receiver's clock.
#
# Run by scripts/qemu-boot-test.sh on its booted box:
#   alsa-check.sh --netns NS --key SSH_KEY --box IP --receiver URL --token TOKEN
# Prints progress lines and "PASS ..." or "FAIL ..." lines (the boot test puts those in its
# summary); exits 1 if any failed.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TAG=alsa
source "$SCRIPT_DIR/lib.sh"
scenario_args "$@"

WIDTH=320 HEIGHT=240 FPS=15
CAPTURE=hw:Loopback,1 PLAYBACK=hw:Loopback,0
TONE=/run/onair-alsa-tone.raw
SAVED_CONFIG=/run/onair-alsa-check-saved.json

judge() { ip netns exec "$NS" python3 "$SCRIPT_DIR/alsa-check.py" --url "$URL" "$@"; }

# What the box runs. The player: the one-second tone looped into aplay, in a session of its
# own (setsid) so that it outlives the SSH command and is stopped as a whole.
BOX_FUNCS=$(cat <<EOF
tone_start() {
    setsid sh -c 'while cat $TONE; do :; done | aplay -q -D $PLAYBACK -t raw -f S16_LE -r 48000 -c 2' \
        </dev/null >/dev/null 2>/run/onair-alsa-tone.err &
    echo \$! >/run/onair-alsa-tone.pid
}
tone_stop() {
    [ -s /run/onair-alsa-tone.pid ] || return 0
    kill -- -\$(cat /run/onair-alsa-tone.pid) 2>/dev/null || true
    rm -f /run/onair-alsa-tone.pid
    for _ in \$(seq 50); do pgrep -x aplay >/dev/null || return 0; sleep 0.1; done
    return 1
}
card_wait() { for _ in \$(seq 50); do [ -e /proc/asound/Loopback ] && return 0; sleep 0.1; done; return 1; }
EOF
)
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a + b }'; }
audio_status() { # the status's audio fields as "state=.. source=.. peak=.. reason=.."
    python3 -c 'import json,sys
a = (json.loads(sys.argv[1] or "{}").get("audio") or {})
print("state=%s source=%s peak_dbfs=%s reason=\"%s\"" % tuple(a.get(k) for k in ("state", "source", "peak_dbfs", "reason")))' "$1" 2>/dev/null ||
        echo "state=? (no status)"
}
window() { # FROM TO EXPECT
    judge window --session "$SESSION" --from "$1" --to "$2" --expect "$3" --fps $FPS --posts "$POSTS"
}

saved=0
# The box is left as the boot test found it: the player stopped, its imported config back
# (the boot test checks the data disk against it later), snd-aloop unloaded.
# shellcheck disable=SC2317
finish() {
    if [ "$saved" = 1 ]; then
        box "$BOX_FUNCS
tone_stop; cp $SAVED_CONFIG /data/onair/onair.json && rm -f $SAVED_CONFIG $TONE &&
            systemctl kill -s HUP onair.service && sleep 3; modprobe -r snd-aloop" >/dev/null 2>&1 || true
    fi
    ip netns exec "$NS" ssh "${SSH_OPTS[@]}" -i "$KEY" -O exit "root@$BOX" 2>/dev/null || true
    rm -rf "$CONTROL_DIR"
}
trap finish EXIT

# ------------------------------------------------------------------ set-up
# One second of 1 kHz at -6 dBFS, 48 kHz stereo: a whole number of periods, so it loops
# without a click.
python3 -c 'import math, struct, sys
s = b"".join(struct.pack("<hh", v, v) for v in
             (round(16384 * math.sin(2 * math.pi * 1000 * n / 48000)) for n in range(48000)))
sys.stdout.buffer.write(s)' | box "cat >$TONE"
box "cp /data/onair/onair.json $SAVED_CONFIG" && saved=1
say "loading snd-aloop, playing a 1 kHz tone at -6 dBFS into $PLAYBACK"
if ! box "$BOX_FUNCS
modprobe snd-aloop && card_wait && tone_start && sleep 0.5 && pgrep -x aplay >/dev/null ||
    { cat /run/onair-alsa-tone.err; exit 1; }
sed -n 's/^ *\([0-9]*\) \[Loopback *\]: /card \1: /p' /proc/asound/cards" 2>&1 | sed 's/^/    /'; then
    result FAIL "alsa: snd-aloop could not be loaded or the tone not played on the box"
    exit 1
fi

t=$(now)
box "cat >/data/onair/onair.json.new <<EOF
{
  \"source\": {\"kind\": \"test\", \"width\": $WIDTH, \"height\": $HEIGHT, \"fps\": $FPS},
  \"encoder\": {\"kind\": \"x264\", \"bitrate_kbps\": 500},
  \"audio\": {\"kind\": \"alsa\", \"device\": \"$CAPTURE\"},
  \"output\": {\"kind\": \"whip\", \"url\": \"$URL/api/whip\", \"token\": \"$TOKEN\"}
}
EOF
onair check-config /data/onair/onair.json.new && mv /data/onair/onair.json.new /data/onair/onair.json &&
systemctl kill -s HUP onair.service"
if ! out=$(judge wait-tone --since "$t" --new-session --timeout 60); then
    say "no tone: $out"
    box "journalctl -b -u onair.service -o cat | tail -n 25" 2>&1 | sed 's/^/    /' >&2 || true
    result FAIL "alsa: after the switch to audio $CAPTURE the receiver heard no tone ($out)"
    exit 1
fi
SESSION=$(kv session "$out") POSTS=$(kv posts "$out") heard=$(kv heard "$out")
say "SIGHUP -> tone heard on a new session after $(awk -v a="$heard" -v b="$t" 'BEGIN { printf "%.1f", a - b }') s"

# ------------------------------------------------------------------ 1. the tone
sleep 3
until=$(now)
st=$(audio_status "$(status_json)")
out=$(window "$(add "$until" -3)" "$until" tone) && rc=0 || rc=$?
if [ "$rc" = 0 ] && grep -q "^state=live source=$CAPTURE peak_dbfs=-" <<<"$st" &&
    awk -v p="$(kv peak_dbfs "$st")" 'BEGIN { exit !(p > -20) }'; then
    result PASS "alsa 1. tone from snd-aloop: ${out#PASS }; onair status: $st"
else
    result FAIL "alsa 1. tone from snd-aloop: ${out#* }; onair status: $st"
fi

# ------------------------------------------------------------------ 2. player stopped
sync_clock || say "   clocks: no answer, times are off by the SSH round trip"
stop=$(at_box tone_stop) || stop=""
sleep 3
until=$(now)
st=$(audio_status "$(status_json)")
out=$(window "$(add "$stop" 1)" "$until" quiet) && rc=0 || rc=$?
if [ "$rc" = 0 ] && grep -q "^state=live source=$CAPTURE peak_dbfs=None" <<<"$st"; then
    result PASS "alsa 2. player stopped, the card delivers digital silence: ${out#PASS }; onair status: $st"
else
    result FAIL "alsa 2. player stopped: ${out#* }; onair status: $st"
fi

# ------------------------------------------------------------------ 3. player again
start=$(at_box tone_start) || start=""
if out=$(judge wait-tone --since "$start" --timeout 20) && [ "$(kv session "$out")" = "$SESSION" ]; then
    back=$(kv heard "$out")
    sleep 1.5
    until=$(now)
    out=$(window "$(add "$until" -1.5)" "$until" tone) && rc=0 || rc=$?
    result "$([ "$rc" = 0 ] && echo PASS || echo FAIL)" "alsa 3. player started again: tone heard $(awk -v a="$back" -v b="$start" 'BEGIN { printf "%.2f", a - b }') s later, ${out#* }"
else
    result FAIL "alsa 3. player started again: no tone on session $SESSION ($out)"
fi

# ------------------------------------------------------------------ 4. card unplugged
# The player goes first (aplay would die with the card anyway); unbinding returns once the
# daemon has closed its handle on the card.
cut=$(at_box "tone_stop; timeout 20 sh -c 'echo snd_aloop.0 >/sys/bus/platform/drivers/snd_aloop/unbind'") || cut=""
sleep 3
st=$(audio_status "$(status_json)")
until=$(now)
out=$(window "$(add "$cut" 0.5)" "$until" quiet) && rc=0 || rc=$?
if [ -n "$cut" ] && [ "$rc" = 0 ] && grep -q "^state=silence source=$CAPTURE peak_dbfs=None reason=\"..*\"" <<<"$st"; then
    result PASS "alsa 4. card unplugged (snd_aloop.0 unbound): silence sent, ${out#PASS }; onair status 3 s after: $st"
else
    result FAIL "alsa 4. card unplugged (snd_aloop.0 unbound, at ${cut:-never}): ${out#* }; onair status 3 s after: $st"
fi
back=$(at_box "echo snd_aloop.0 >/sys/bus/platform/drivers/snd_aloop/bind && card_wait && tone_start") || back=0
if out=$(judge wait-tone --since "$back" --timeout 20) && [ "$(kv session "$out")" = "$SESSION" ]; then
    heard=$(kv heard "$out") posts=$(kv posts "$out")
    st=$(audio_status "$(status_json)")
    if [ "$posts" = "$POSTS" ] && grep -q "^state=live source=$CAPTURE peak_dbfs=-" <<<"$st"; then
        result PASS "alsa 4. card plugged back with the tone: heard $(awk -v a="$heard" -v b="$back" 'BEGIN { printf "%.2f", a - b }') s after, same session, no new POST; onair status: $st"
    else
        result FAIL "alsa 4. card plugged back: tone heard, but POSTs $POSTS -> $posts, onair status: $st"
    fi
else
    result FAIL "alsa 4. card plugged back: no tone on session $SESSION within 20 s ($out)"
fi

say "done"
exit $failed
