#!/usr/bin/env bash
# The field uplinks on the emulated box, booted with Wi-Fi only (scripts/qemu/wifi-boot.sh:
# two mac80211_hwsim radios, the venue's access point in a namespace inside the box, the wired
# NIC's carrier cut from power-on, the card holding Wi-Fi credentials). Issue 22's tests:
#   1. Wi-Fi only: the box went live over Wi-Fi (seconds from power-on to the first decoded
#      frame); `onair status` shows the uplink as wifi, in use, with the SSID and the signal;
#      the passphrase is nowhere in the journal, `onair status` (text, JSON) or --history, and
#      the settings file the radio reads is 0600.
#   2. A phone plugged in: a qemu usb-net device (the USB network function of a tethering
#      phone) hot-plugged through the monitor while live on Wi-Fi comes up as a `tether`
#      uplink and the stream stays on Wi-Fi (its metric is lower); the access point stopped:
#      longest gap between decoded frames <= 1.5 s (ONAIR_QEMU_UPLINK_GAP), now on the phone;
#      the access point back (the box's settle_ms of 30 s keeps the stream on the phone
#      meanwhile), the phone unplugged: back on Wi-Fi, longest gap <= 1.5 s.
#   3. Wrong password: the wired link given back (`set_link`), a config with a wrong
#      passphrase by SIGHUP: `onair status` says "authentication failed (wrong password)"
#      within 30 s while the stream goes on over the cable; the corrected config by SIGHUP:
#      connected again.
#   4. WPA3-SAE: the access point restarted with SAE only, the config's network changed to
#      `sae_password` by SIGHUP: the radio joins with SAE; the cable cut again: the stream
#      goes live over it. Neither password is anywhere in the journal or status.
# Run by scripts/qemu-boot-test.sh (wifi-boot.sh) with the usual scenario arguments and, in
# the environment, WIFI_PSK, WIFI_SAE (the venue's passphrases), QEMU_START_MONO (when the
# box was powered on, on the receiver's clock). Prints "PASS ..."/"FAIL ..." lines.
# ONAIR_QEMU_UPLINK_GAP (seconds, default 1.5) is the longest gap allowed at the switches:
# under emulation a new WHIP session alone takes 0.6-1.0 s (ten times the hardware's), and
# the measured gaps were 0.60-1.00 s, so the issue's 1.0 s would fail now and then on the
# emulator's speed, not the box's. The issue's 1.0 s is held natively by tests/fault_lab.rs
# (a cable pulled with Wi-Fi up: 0.3 s); set 1.0 here to see the emulated figure against it.
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
TAG=wifi
source "$SCRIPT_DIR/lib.sh"
scenario_args "$@"
: "${WIFI_PSK:?}" "${WIFI_SAE:?}" "${QEMU_START_MONO:?}"

WIDTH=320 HEIGHT=240 FPS=15
MAX_GAP=${ONAIR_QEMU_UPLINK_GAP:-1.5}
SSID=onair-venue
PHONE_MAC=52:54:00:6f:61:04
VENUE=/run/onair-venue/venue.sh
# The box's address on each uplink: SSH must go over one that stays up while another is
# taken away (the access point stopped, a wrong password, the cable cut).
WIFI_ADDR=$BOX PHONE_ADDR=203.0.113.2 WIRED_ADDR=192.0.2.2
# A connection whose path died must not hang a command for minutes.
SSH_OPTS+=(-o ServerAliveInterval=2 -o ServerAliveCountMax=3)
# use_box ADDR: SSH to the box at ADDR from now on (the old connection is closed: its path
# may be about to go, or gone).
use_box() {
    [ "$1" = "$BOX" ] && return 0
    timeout 10 ip netns exec "$NS" ssh "${SSH_OPTS[@]}" -i "$KEY" -O exit "root@$BOX" >/dev/null 2>&1 || true
    BOX=$1
    say "   SSH to the box at $BOX from now on"
}

judge() { ip netns exec "$NS" python3 "$SCRIPT_DIR/uplink-check.py" --url "$URL" "$@"; }
now() { judge now; }
add() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.3f\n", a + b }'; }
since() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f\n", b - a }'; }

# The uplinks of `onair status --json` as key=value words: state, path=IF, then for the first
# uplink of each kind KIND_if and KIND_uplink (its state: in_use, usable, settling, ...), and
# for Wi-Fi wifi_state (connected, authentication_failed, ...), wifi_ssid, wifi_signal,
# wifi_rate, wifi_reason.
uplinks() {
    python3 -c 'import json, sys
try:
    s = json.loads(sys.argv[1])
except ValueError:
    print("status=none"); sys.exit()
n = s.get("network", {})
out = {"state": s.get("state"), "path": (n.get("path") or {}).get("interface", "-")}
for u in n.get("uplinks", []):
    k = u.get("kind", "?")
    out.setdefault(k + "_if", u["name"]); out.setdefault(k + "_uplink", u["state"])
    w = u.get("wifi")
    if w and "wifi_state" not in out:
        out.update(wifi_state=w["state"], wifi_ssid=w.get("ssid"), wifi_signal=w.get("signal_dbm"),
                   wifi_rate=w.get("rate_mbps"), wifi_reason=(w.get("reason") or "-").replace(" ", "_"))
print(" ".join(f"{k}={v}" for k, v in out.items()))' "$1"
}
up() { uplinks "$(status_json)"; }
# wait_until SECONDS PYTHON_CONDITION: polls the status until the condition on its uplinks'
# words (a dict `u`) holds; prints the last words and the seconds it took.
wait_until() {
    local limit=$1 cond=$2 start=$SECONDS words
    while :; do
        words=$(up)
        if python3 -c 'import sys
u = dict(w.split("=", 1) for w in sys.argv[1].split() if "=" in w)
sys.exit(0 if eval(sys.argv[2]) else 1)' "$words" "$cond"; then
            echo "$words waited=$((SECONDS - start))"
            return 0
        fi
        if [ $((SECONDS - start)) -ge "$limit" ]; then
            echo "$words waited=$((SECONDS - start)) TIMEOUT"
            return 1
        fi
        sleep 1
    done
}

# A config for the box: the receiver, the test picture, the venue's network with the given
# credential (JSON members), the settle time that keeps a phone in use while Wi-Fi returns.
config() {
    cat <<EOF
{
  "source": {"kind": "test", "width": $WIDTH, "height": $HEIGHT, "fps": $FPS},
  "encoder": {"kind": "x264", "bitrate_kbps": 500},
  "output": {"kind": "whip", "url": "$URL/api/whip", "token": "$TOKEN"},
  "network": {"wifi_country": "DE", "settle_ms": 30000,
              "wifi": [{"ssid": "$SSID", $1}]}
}
EOF
}
# reconfigure JSON_MEMBERS: installs the config on the box (over stdin: no secret on a command
# line) and sends SIGHUP; prints the instant on the receiver's clock.
reconfigure() {
    config "$1" | box "cat >/data/onair/onair.json.new && onair check-config /data/onair/onair.json.new >/dev/null &&
        chmod 600 /data/onair/onair.json.new && mv /data/onair/onair.json.new /data/onair/onair.json" &&
        at_box "systemctl kill -s HUP onair.service"
}
# secrets_nowhere: counts the lines of the journal, `onair status` (text, JSON) and --history
# that hold any of the passwords (given on stdin, one per line).
secrets_nowhere() {
    printf '%s\n' "$WIFI_PSK" "$WIFI_SAE" | box '{ journalctl -b -o cat --no-pager; onair status; onair status --json;
        onair status --history; } >/run/onair-secrets-check.txt 2>&1
        n=$(grep -c -F -f - /run/onair-secrets-check.txt); rm -f /run/onair-secrets-check.txt; echo "${n:-0}"'
}

phone_dnsmasq=""
# shellcheck disable=SC2317
finish() {
    if [ -n "$phone_dnsmasq" ]; then kill "$phone_dnsmasq" 2>/dev/null || true; fi
    for addr in "$WIFI_ADDR" "$PHONE_ADDR" "$WIRED_ADDR"; do
        timeout 10 ip netns exec "$NS" ssh "${SSH_OPTS[@]}" -i "$KEY" -O exit "root@$addr" >/dev/null 2>&1 || true
    done
    rm -rf "$CONTROL_DIR"
}
trap finish EXIT

# ------------------------------------------------------------------ 1. Wi-Fi only
sync_clock || say "   clocks: no answer, times are off by the SSH round trip"
out=$(judge first-frame --since "$QEMU_START_MONO" --count 30 --timeout 120) || true
first_s=$(kv after "$out")
words=$(wait_until 30 'u.get("wifi_state") == "connected" and u.get("path") == u.get("wifi_if")') || true
say "   status: $words"
boot=$(box 'echo "wait_online=$(systemctl is-enabled systemd-networkd-wait-online.service 2>&1)"
    echo "wifi_unit=$(systemctl is-active onair-wifi@wlan0.service)"
    echo "settings_mode=$(stat -c %a /run/onair/network/wpa_supplicant.conf)"
    echo "wired=$(cat /sys/class/net/*/operstate | tr "\n" " ")"
    systemd-analyze critical-chain onair.service --no-pager 2>/dev/null | sed "s/^/chain: /"') || true
printf '%s\n' "$boot" | sed 's/^/    /'
leaks=$(secrets_nowhere) || leaks="?"
if [ -n "$first_s" ] && [ "$(kv wifi_ssid "$words")" = "$SSID" ] && [ "$(kv wifi_state "$words")" = connected ] &&
    [ "$(kv wifi_signal "$words")" != None ] && [ "$(kv wifi_uplink "$words")" = in_use ] &&
    [ "$(kv wifi_if "$words")" = "$(kv path "$words")" ] && [ "$leaks" = 0 ] &&
    grep -q '^settings_mode=600$' <<<"$boot" && ! grep -q '^wait_online=enabled' <<<"$boot"; then
    result PASS "wifi 1. Wi-Fi only, no cable from power-on: first picture decoded ${first_s} s after power-on, over $(kv wifi_if "$words") ($(kv wifi_state "$words") to \"$(kv wifi_ssid "$words")\", $(kv wifi_signal "$words") dBm, $(kv wifi_rate "$words") Mbit/s); the passphrase in 0 lines of the journal, status and history; the radio's settings 0600; networkd-wait-online $(sed -n 's/^wait_online=//p' <<<"$boot")"
else
    result FAIL "wifi 1. Wi-Fi only: first picture after ${first_s:-never} s ($out); status: $words; passphrase in $leaks line(s); $(tr '\n' ' ' <<<"$boot" | cut -c1-300)"
fi

# ------------------------------------------------------------------ 2. a phone plugged in
ip -n "$NS" tuntap add dev tap2 mode tap
ip -n "$NS" addr add 203.0.113.1/24 dev tap2
ip -n "$NS" link set tap2 up
ip netns exec "$NS" dnsmasq --keep-in-foreground --conf-file=/dev/null --port=0 --user=root \
    --interface=tap2 --bind-interfaces --dhcp-authoritative \
    --dhcp-range=203.0.113.2,203.0.113.2,255.255.255.0,12h \
    --dhcp-option=option:router,203.0.113.1 --dhcp-option=option:dns-server \
    --dhcp-leasefile="$RUN/phone-dnsmasq.leases" --log-facility="$RUN/phone-dnsmasq.log" \
    >"$RUN/phone-dnsmasq.out" 2>&1 9>&- &
phone_dnsmasq=$!
before=$(judge state)
t_plug=$(now)
qmp netdev_add '{"type": "tap", "id": "phone", "ifname": "tap2", "script": "no", "downscript": "no"}' >/dev/null &&
    qmp device_add "{\"driver\": \"usb-net\", \"netdev\": \"phone\", \"bus\": \"xhci.0\", \"id\": \"phone0\", \"mac\": \"$PHONE_MAC\"}" >/dev/null ||
    say "   plugging the phone failed"
words=$(wait_until 60 'u.get("tether_uplink") in ("usable", "settling", "in_use")') || true
plugged=$(now)
after=$(judge state)
say "   phone: $words"
same_session=$([ "$(kv live "$before")" = "$(kv live "$after")" ] && [ "$(kv posts "$before")" = "$(kv posts "$after")" ] && echo yes || echo no)
if [ "$(kv tether_uplink "$words")" != usable ] || [ "$same_session" != yes ] || [ "$(kv path "$words")" != "$(kv wifi_if "$words")" ]; then
    result FAIL "wifi 2. phone plugged in: expected a usable tether uplink and the stream kept on Wi-Fi (same session): $words; receiver before: $before, after: $after"
fi
phone_if=$(kv tether_if "$words")
say "   phone up as $phone_if $(since "$t_plug" "$plugged") s after the plug; the stream stayed on $(kv path "$words") (same session: $same_session)"

use_box "$PHONE_ADDR"
sync_clock || true
t_stop=$(at_box "sh $VENUE ap stop") || t_stop=""
sleep 8
words=$(wait_until 20 'u.get("path") == u.get("tether_if")') || true
t_end=$(now)
out=$(judge gap --from "$(add "${t_stop:-$t_end}" -1)" --to "$t_end" --max "$MAX_GAP") && rc=0 || rc=$?
if [ "$rc" = 0 ] && [ -n "$t_stop" ] && [ "$(kv path "$words")" = "$phone_if" ]; then
    result PASS "wifi 2a. phone ($phone_if, tether) plugged in while live on Wi-Fi, then the access point stopped: now on the phone, ${out#PASS }"
else
    result FAIL "wifi 2a. access point stopped with the phone plugged in: ${out#* }; status: $words"
fi

at_box "sh $VENUE ap wpa2" >/dev/null || say "   the access point did not restart"
words=$(wait_until 90 'u.get("wifi_state") == "connected" and u.get("wifi_uplink") in ("settling", "usable")') || true
say "   Wi-Fi back (settling while the phone carries the stream): $words"
use_box "$WIFI_ADDR"
t_unplug=$(now)
qmp device_del '{"id": "phone0"}' >/dev/null || say "   unplugging the phone failed"
sleep 8
words=$(wait_until 20 'u.get("path") == u.get("wifi_if")') || true
t_end=$(now)
out=$(judge gap --from "$(add "$t_unplug" -1)" --to "$t_end" --max "$MAX_GAP") && rc=0 || rc=$?
if [ "$rc" = 0 ] && [ "$(kv path "$words")" = "$(kv wifi_if "$words")" ]; then
    result PASS "wifi 2b. phone unplugged: back on Wi-Fi ($(kv wifi_if "$words")), ${out#PASS }"
else
    result FAIL "wifi 2b. phone unplugged: ${out#* }; status: $words"
fi
qmp netdev_del '{"id": "phone"}' >/dev/null 2>&1 || true

# ------------------------------------------------------------------ 3. wrong password
qmp set_link '{"name": "net0", "up": true}' >/dev/null
# Over the cable from now on: the box answers the host by its most specific route, the cable's.
use_box "$WIRED_ADDR"
words=$(wait_until 90 'u.get("path") not in (None, "-", u.get("wifi_if"))') || true
wired_if=$(kv path "$words")
say "   cable back: the stream moved to $wired_if ($words)"
# Let the new connection over the cable settle before the Wi-Fi is broken beside it.
sleep 5
WRONG=wrong-$(od -An -N6 -tx1 /dev/urandom | tr -d ' \n')
sync_clock || true
t_hup=$(reconfigure "\"psk\": \"$WRONG\"") || t_hup=""
t0=$SECONDS
words=$(wait_until 30 'u.get("wifi_state") == "authentication_failed"') || true
named=$((SECONDS - t0))
t_end=$(now)
out=$(judge gap --from "${t_hup:-$t_end}" --to "$t_end" --max 1.0) && rc=0 || rc=$?
if [ "$(kv wifi_state "$words")" = authentication_failed ] && [ "$(kv wifi_reason "$words")" = wrong_password ] &&
    [ "$(kv path "$words")" = "$wired_if" ] && [ "$rc" = 0 ]; then
    result PASS "wifi 3a. wrong password by SIGHUP: status says \"authentication failed (wrong password)\" for \"$(kv wifi_ssid "$words")\" ${named} s later (limit 30 s); meanwhile the stream goes on over $wired_if: ${out#PASS }"
else
    result FAIL "wifi 3a. wrong password: after ${named} s status: $words; stream: ${out#* }"
fi
text=$(box onair status 2>/dev/null | grep -E '^(uplinks|wifi) ' | tr '\n' ';') || text=""
say "   onair status: $text"
t_hup=$(reconfigure "\"psk\": \"$WIFI_PSK\"") || t_hup=""
t0=$SECONDS
words=$(wait_until 60 'u.get("wifi_state") == "connected" and u.get("wifi_uplink") == "usable"') || true
if [ "$(kv wifi_state "$words")" = connected ] && [ "$(kv wifi_uplink "$words")" = usable ]; then
    result PASS "wifi 3b. the corrected passphrase by SIGHUP: connected again $((SECONDS - t0)) s later ($(kv wifi_if "$words") usable beside $(kv path "$words"))"
else
    result FAIL "wifi 3b. the corrected passphrase: status after $((SECONDS - t0)) s: $words"
fi

# ------------------------------------------------------------------ 4. WPA3-SAE
at_box "sh $VENUE ap sae" >/dev/null || say "   the access point did not restart with SAE"
reconfigure "\"sae_password\": \"$WIFI_SAE\"" >/dev/null || say "   the SAE config was not installed"
words=$(wait_until 90 'u.get("wifi_state") == "connected"') || true
key_mgmt=$(box "wpa_cli -p /run/wpa_supplicant -i $(kv wifi_if "$words") status 2>/dev/null | sed -n 's/^key_mgmt=//p'") || key_mgmt="?"
t_cut=$(now)
qmp set_link '{"name": "net0", "up": false}' >/dev/null
use_box "$WIFI_ADDR"
out=$(judge first-frame --since "$t_cut" --count 15 --timeout 60) || true
words=$(wait_until 30 'u.get("path") == u.get("wifi_if")') || true
t_end=$(now)
gap=$(judge gap --from "$t_cut" --to "$t_end" --max 1000) || true
leaks=$(secrets_nowhere) || leaks="?"
if [ "$key_mgmt" = SAE ] && [ "$(kv wifi_state "$words")" = connected ] && [ "$(kv path "$words")" = "$(kv wifi_if "$words")" ] &&
    [[ $out == OK* ]] && [ "$leaks" = 0 ]; then
    result PASS "wifi 4. WPA3-SAE: joined \"$(kv wifi_ssid "$words")\" with key_mgmt=$key_mgmt; the cable cut: live over Wi-Fi, ${gap#PASS }; neither passphrase in the journal, status or history"
else
    result FAIL "wifi 4. WPA3-SAE: key_mgmt=$key_mgmt, status: $words, after the cut: $out ($gap), passwords in $leaks line(s)"
fi
exit $failed
