# shellcheck shell=bash
# Check 10 of scripts/qemu-boot-test.sh (sourced by it): the box's clock (issue 22). A box
# whose clock is a year behind, on a network that drops NTP, must still go live over HTTPS
# with a certificate issued today; once NTP answers, its clock is synchronized.
#
# On the running box (over SSH): the test CA goes into the daemon's trust store
# (SSL_CERT_FILE=/data/onair/clock-test-ca.pem in /data/onair/environment, which
# onair.service reads), output.url becomes https://192.0.2.1:8443/api/whip (a second
# whip_receiver.py with a certificate for 192.0.2.1 issued by that CA just now), and the
# clock file timesyncd keeps on /data is deleted with timesyncd stopped (so the next boot has
# nothing but the image's build date: a box that never saved a time). In the namespace: an
# SNTP server on 192.0.2.1:123 (scripts/qemu/sntp-server.py; dnsmasq names it as the network's
# NTP server) and an nftables rule that drops UDP 123 to it, counting.
#
# Then its own boot: `reboot_box -rtc base=<a year ago>` (the PL031 RTC a year behind).
#   1. live: the TLS receiver decodes pictures; on the box's clock (its journal) the daemon
#      is live within 30 s of its start (ONAIR_QEMU_CLOCK_LIVE_S) and within 5 s of its first
#      refused attempt; printed: the seconds from qemu's start to the first picture, beside
#      the first boot's (the emulator's speed, which the host's load decides, is not the box's);
#      `onair status` says `set_by: https-date` from https://192.0.2.1:8443, unsynchronized;
#      onair-clock said the boot's time was the build floor; NTP was tried and dropped; the
#      box's clock is within 3 s of the host's.
#   2. NTP reachable: the drop rule deleted and timesyncd restarted on the box (as at boot):
#      `onair status` says synchronized within 10 s.
# Afterwards the box is as the boot test left it before: the imported config and no
# environment file, the daemon restarted and live on the http receiver (check 5 then powers it
# off), the RTC still a year behind (later checks may share this boot).
# Uses the test script's BOX_SSH, NS, HOST_IP, TOKEN, RUN, SCRIPT_DIR, WIDTH, HEIGHT, stream
# (check 2's result), qemu_start_mono, phase, log, pass, fail, reboot_box and qemu_alive.

CLOCK_PORT=8443
CLOCK_URL=https://$HOST_IP:$CLOCK_PORT

_clock_kv() { sed -n "s/.*\<$1=\([^ ]*\).*/\1/p" <<<"$2" | head -1; }
_clock_box() { timeout "${CLOCK_BOX_TIMEOUT:-120}" "${BOX_SSH[@]}" "$@"; }

# A CA for ten years and a leaf for 192.0.2.1 issued now (openssl x509 -req: notBefore = now).
_clock_pki() {
    local dir=$1
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 3650 \
        -keyout "$dir/ca.key" -out "$dir/ca.pem" -subj "/CN=onair clock test CA" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign" \
        2>/dev/null &&
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$dir/leaf.key" -out "$dir/leaf.csr" -subj "/CN=$HOST_IP" 2>/dev/null &&
        printf 'subjectAltName=IP:%s\nbasicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=serverAuth\n' \
            "$HOST_IP" >"$dir/leaf.ext" &&
        openssl x509 -req -in "$dir/leaf.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -days 30 -extfile "$dir/leaf.ext" -out "$dir/leaf.pem" 2>/dev/null
}

# Started with `timeout` as well as killed at the end: a run that dies half-way leaves nothing.
_clock_start() { # NAME OUTFILE CMD...
    local name=$1 out=$2
    shift 2
    timeout 1200 ip netns exec "$NS" "$@" >"$out" 2>"${out%.out}.log" 9>&- &
    local pid=$!
    for _ in $(seq 60); do
        grep -q '^READY ' "$out" 2>/dev/null && { echo "$pid"; return 0; }
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
    done
    log "clock: $name did not start: $(tail -n 3 "${out%.out}.log" 2>/dev/null)" >&2
    kill "$pid" 2>/dev/null || true
    return 1
}

# Stops what _clock_start started (not this shell's children: they were started in a command
# substitution) and the drop rule. Every step may find its object gone already.
_clock_stop() {
    local pid
    for pid in "$@"; do kill "$pid" 2>/dev/null || true; done
    for pid in "$@"; do
        for _ in $(seq 20); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
    done
    ip netns exec "$NS" nft delete table inet onair_clock 2>/dev/null || true
}

_clock_drop_ntp() {
    ip netns exec "$NS" nft -f - <<'EOF'
table inet onair_clock {
    chain input {
        type filter hook input priority 0; policy accept;
        udp dport 123 counter drop
    }
}
EOF
}

clock_check() {
    local dir=$RUN/clock out tls_pid="" sntp_pid="" rtc_base
    # The first boot's time to its first picture (the test script's check 2), for comparison.
    CLOCK_FIRST_BOOT_S=$(_clock_kv first_frame_s "${stream:-}")
    rm -rf "$dir"
    mkdir -p "$dir"
    if ! _clock_pki "$dir"; then
        fail "clock: could not make the test certificates with openssl"
        return
    fi
    log "clock: certificate for $HOST_IP issued $(openssl x509 -in "$dir/leaf.pem" -noout -startdate | cut -d= -f2)"
    tls_pid=$(_clock_start "the TLS receiver" "$dir/receiver.out" .venv/bin/python \
        tests/peers/whip_receiver.py --listen "$HOST_IP:$CLOCK_PORT" --token "$TOKEN" \
        --ice-host "$HOST_IP" --tls-cert "$dir/leaf.pem" --tls-key "$dir/leaf.key") || {
        fail "clock: the TLS receiver did not start (see $dir/receiver.log)"
        return
    }
    sntp_pid=$(_clock_start "the SNTP server" "$dir/sntp.out" python3 \
        "$SCRIPT_DIR/qemu/sntp-server.py" --listen "$HOST_IP:123") || {
        _clock_stop "$tls_pid"
        fail "clock: the SNTP server did not start (see $dir/sntp.log)"
        return
    }

    # The box: the test CA in the daemon's trust store, output.url on https, and no saved time.
    _clock_box 'cat >/data/onair/clock-test-ca.pem' <"$dir/ca.pem" || true
    out=$(_clock_box sh -s "$HOST_IP" "$CLOCK_PORT" 2>&1 <<'BOX'
set -u
host=$1 port=$2
cp /data/onair/onair.json /data/onair/onair.json.clock-saved
[ ! -e /data/onair/environment ] || cp /data/onair/environment /data/onair/environment.clock-saved
sed "s|http://$host:8080/api/whip|https://$host:$port/api/whip|" /data/onair/onair.json.clock-saved \
    >/data/onair/onair.json
echo "https_config=$(grep -c "https://$host:$port/api/whip" /data/onair/onair.json)"
echo SSL_CERT_FILE=/data/onair/clock-test-ca.pem >>/data/onair/environment
echo "timesync_mount=$(findmnt -n -o SOURCE /var/lib/systemd/timesync | tr ' ' ,)"
echo "clock_file_age=$(( $(date +%s) - $(date -r /data/timesync/clock +%s 2>/dev/null || echo 0) ))"
systemctl stop systemd-timesyncd.service
rm -f /data/timesync/clock
BOX
    ) || true
    printf '%s\n' "$out" | sed 's/^/    /'
    # Before the reboot: the clock file timesyncd saves is on /data (onair-clock's bind mount).
    local mount age
    mount=$(_clock_kv timesync_mount "$out") age=$(_clock_kv clock_file_age "$out")
    if [[ $mount == *timesync* ]] && [ -n "$age" ] && [ "$age" -lt 120 ]; then
        pass "clock: timesyncd's clock file is kept on /data (/var/lib/systemd/timesync is $mount; saved ${age}s ago)"
    else
        fail "clock: timesyncd's clock file is not on /data (mount '$mount', age '$age' s)"
    fi
    if [ "$(_clock_kv https_config "$out")" != 1 ]; then
        fail "clock: could not point the box at $CLOCK_URL"
        _clock_stop "$tls_pid" "$sntp_pid"
        return
    fi
    if ! _clock_drop_ntp; then
        fail "clock: could not drop UDP 123 in $NS (nft)"
        _clock_stop "$tls_pid" "$sntp_pid"
        return
    fi

    rtc_base=$(date -u -d '-365 days' +%Y-%m-%dT%H:%M:%S)
    phase "clock: boot with the RTC at $rtc_base, NTP dropped, WHIP over HTTPS"
    reboot_box -rtc "base=$rtc_base"
    if [ "$ssh_ok" != 1 ]; then
        fail "clock: the box did not come back after the reboot"
        _clock_stop "$tls_pid" "$sntp_pid"
        return
    fi
    _clock_live "$dir"
    _clock_ntp "$dir"
    _clock_restore
    _clock_stop "$tls_pid" "$sntp_pid"
}

# 1: live over HTTPS, and how the time was set.
_clock_live() {
    local dir=$1 stream facts state set_by set_from synced offset drops floor_line
    stream=$(ip netns exec "$NS" env SSL_CERT_FILE="$dir/ca.pem" python3 \
        "$SCRIPT_DIR/qemu/wait-stream.py" --url "$CLOCK_URL" --token "$TOKEN" --frames 30 \
        --width "$WIDTH" --height "$HEIGHT" --timeout 180 --since "$qemu_start_mono") || true
    log "clock: receiver: $stream"
    facts=$(_clock_box sh -s 2>&1 <<'BOX'
onair status --json
echo
echo "box_clock=$(date +%s.%N)"
journalctl -b -o cat | grep -E '^onair-clock:' | sed 's/^/log: /'
journalctl -b -u onair.service -o short-monotonic --no-pager |
    grep -E 'onair-start: starting|attempt [0-9]+ failed|clock: |-> live' | head -n 12 | sed 's/^/journal: /'
BOX
    ) || true
    printf '%s\n' "$facts" | grep -E '^(log|journal): ' | cut -c1-220 | sed 's/^/    /' || true
    read -r state set_by set_from synced < <(python3 -c '
import json, sys
for line in sys.argv[1].splitlines():
    if line.startswith("{"):
        s = json.loads(line)
        c = s.get("clock") or {}
        print(s.get("state"), c.get("set_by"), c.get("set_from"), c.get("synchronized"))
        break
else:
    print("? ? ? ?")' "$facts" 2>/dev/null || echo "? ? ? ?")
    offset=$(awk -v b="$(_clock_kv box_clock "$facts")" -v h="$(date +%s.%N)" \
        'BEGIN { if (b == "") print "?"; else printf "%.1f", b - h }')
    drops=$(ip netns exec "$NS" nft list table inet onair_clock 2>/dev/null |
        sed -n 's/.*udp dport 123 counter packets \([0-9]*\).*/\1/p') || true
    floor_line=$(grep -c 'came from: build-floor' <<<"$facts") || true
    # Seconds on the box's monotonic clock: the daemon's start, its first refusal, the clock
    # set, live.
    local mono
    mono=$(python3 - "$facts" <<'PY'
import re, sys
marks = {}
for line in sys.argv[1].splitlines():
    m = re.match(r"journal: \[\s*([0-9.]+)\]", line)
    if not m:
        continue
    t = float(m.group(1))
    if "onair-start: starting" in line:
        marks.setdefault("start", t)
    elif re.search(r"attempt [0-9]+ failed", line):
        marks.setdefault("refused", t)
    elif "(https-date)" in line:
        marks.setdefault("set", t)
    elif "-> live" in line:
        marks.setdefault("live", t)
s = marks.get("start")
f = lambda k: "%.1f" % (marks[k] - s) if s is not None and k in marks else "?"
print("refused=%s set=%s live=%s start_uptime=%s" % (f("refused"), f("set"), f("live"),
      "%.1f" % s if s is not None else "?"))
PY
    ) || true
    log "clock: daemon (s after it started): $mono"
    # Live within 30 s: on the box's own clock, from the daemon's start — what the emulator's
    # speed does to the boot before it is the host's load, not the box's (the first boot of
    # the same run is the comparison: its first picture is printed too). And the clock's own
    # cost: from the refusal to live at most 5 s.
    local first refused live limit=${ONAIR_QEMU_CLOCK_LIVE_S:-30}
    first=$(_clock_kv first_frame_s "$stream")
    refused=$(_clock_kv refused "$mono") live=$(_clock_kv live "$mono")
    if [[ $stream == OK* ]] &&
        awk -v r="$refused" -v l="$live" -v m="$limit" \
            'BEGIN { exit !(r != "?" && l != "?" && l <= m && l - r <= 5) }' &&
        [ "$set_by" = https-date ] && [ "$set_from" = "$CLOCK_URL" ] &&
        [ "$synced" = False ] && [ "$floor_line" -ge 1 ] && [ "${drops:-0}" -gt 0 ] &&
        awk -v o="$offset" 'BEGIN { exit !(o != "?" && o > -3 && o < 3) }'; then
        pass "clock a year behind, NTP dropped ($drops packets): live over HTTPS with a certificate issued today ${live}s after the daemon started (≤ ${limit}s), $(awk -v r="$refused" -v l="$live" 'BEGIN { printf "%.1f", l - r }')s after its first attempt was refused (≤ 5 s); first picture ${first}s after qemu started (the first boot: ${CLOCK_FIRST_BOOT_S:-?}s); status: unsynchronized, set by $set_by from $set_from; the boot's time was the build floor; box clock ${offset}s from the host's"
    else
        fail "clock a year behind: expected live over HTTPS within ${limit}s of the daemon's start and 5 s of the refusal, the clock set by https-date from $CLOCK_URL (daemon: $mono; stream: $stream; state=$state set_by=$set_by set_from=$set_from synchronized=$synced; build-floor lines: $floor_line; NTP packets dropped: ${drops:-none}; box clock ${offset}s from the host's)"
    fi
}

# 2: NTP reachable.
_clock_ntp() {
    local out secs
    ip netns exec "$NS" nft delete table inet onair_clock 2>/dev/null || true
    out=$(_clock_box sh -s 2>&1 <<'BOX'
t0=$(cut -d' ' -f1 /proc/uptime)
systemctl restart systemd-timesyncd.service
i=0
while [ $i -lt 300 ]; do
    onair status --json 2>/dev/null | grep -q '"synchronized":true' && break
    sleep 0.1
    i=$((i + 1))
done
t1=$(cut -d' ' -f1 /proc/uptime)
echo "synced_after=$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.1f", b - a }') synced=$([ $i -lt 300 ] && echo yes || echo no)"
onair status 2>/dev/null | grep '^clock '
journalctl -b -u systemd-timesyncd -o cat | grep -E 'synchroniz' | tail -n 1 | sed 's/^/log: /'
BOX
    ) || true
    printf '%s\n' "$out" | sed 's/^/    /'
    secs=$(_clock_kv synced_after "$out")
    if [ "$(_clock_kv synced "$out")" = yes ] && awk -v s="$secs" 'BEGIN { exit !(s <= 10) }'; then
        pass "clock: NTP reachable again (the drop rule removed, timesyncd started as at boot): synchronized ${secs}s later, by the network's NTP server from DHCP"
    else
        fail "clock: NTP reachable again, but not synchronized within 10 s (${secs:-?} s; see above)"
    fi
}

# The box as it was: the imported config, no environment file, live on the http receiver.
_clock_restore() {
    local out
    out=$(_clock_box sh -s 2>&1 <<'BOX'
mv -f /data/onair/onair.json.clock-saved /data/onair/onair.json
if [ -e /data/onair/environment.clock-saved ]; then
    mv -f /data/onair/environment.clock-saved /data/onair/environment
else
    rm -f /data/onair/environment
fi
rm -f /data/onair/clock-test-ca.pem
systemctl restart onair.service
i=0
while [ $i -lt 90 ]; do
    state=$(onair status 2>/dev/null | awk '$1 == "state" { print $2; exit }')
    [ "$state" = live ] && break
    sleep 1
    i=$((i + 1))
done
echo "restored_state=${state:-none}"
BOX
    ) || true
    [ "$(_clock_kv restored_state "$out")" = live ] ||
        log "clock: WARNING: after restoring the config the daemon is not live ($out)"
}
