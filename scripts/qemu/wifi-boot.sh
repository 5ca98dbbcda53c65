# shellcheck shell=bash
# Check 13 of scripts/qemu-boot-test.sh (sourced by it, after boot 1's poweroff): the field
# uplinks, in one more boot. Uses the test script's RUN, NS, QMP_SOCK, CMDLINE, QEMU_EXTRA,
# TOKEN, HOST_IP, PORT, WIDTH, HEIGHT, FPS, BOX_SSH, SSH_OPTS and its functions (phase, log,
# pass, fail, start_qemu, wait_ssh, power_off, qemu_alive, qmp, scenario_check).
#
# The box as a person takes it to a venue: the card holds a config whose only network is the
# venue's Wi-Fi (WPA2-PSK, a fresh random passphrase), no cable carries anything (the wired
# NIC's carrier is cut through qemu's monitor the moment qemu starts, before the guest's
# kernel runs), and the venue is where the box is: scripts/qemu/venue.sh, handed in through
# qemu's fw_cfg (with the passphrases, which so never appear on the kernel command line or in
# the journal) and run at boot by systemd.run=, makes two mac80211_hwsim radios and plays the
# access point on the second one in a namespace, with DHCP and a route to the receiver over
# the box's second NIC (tap1 here, 198.51.100.129/25). SSH reaches the box over that path
# (198.51.100.10). scripts/qemu/wifi-check.sh then runs tests 1-4 of issue 22; after the
# poweroff the card must have no trace of the passphrase.
#
# uplink_boots N (ONAIR_QEMU_UPLINK_BENCH=N): N more boots on the cable and N on Wi-Fi only,
# each timed from power-on to the first picture decoded by the receiver; the medians and the
# first of each's `systemd-analyze critical-chain onair.service` are printed.

WIFI_BOX_IP=198.51.100.10
WIFI_CHECKS=7

# _wifi_setup: the host side (tap1 for the venue's upstream), the card's config, the venue
# script with its passphrases; sets WIFI_ARGS (qemu) and WIFI_CMDLINE.
_wifi_setup() {
    WIFI_PSK=$(od -An -N12 -tx1 /dev/urandom | tr -d ' \n')
    WIFI_SAE=sae-$(od -An -N9 -tx1 /dev/urandom | tr -d ' \n')
    export WIFI_PSK WIFI_SAE
    ip -n "$NS" tuntap add dev tap1 mode tap
    ip -n "$NS" addr add 198.51.100.129/25 dev tap1
    ip -n "$NS" link set tap1 up
    ip -n "$NS" route add 198.51.100.0/25 via 198.51.100.130 dev tap1 onlink
    cat >"$RUN/onair-wifi.json" <<EOF
{
  "source": {"kind": "test", "width": $WIDTH, "height": $HEIGHT, "fps": $FPS},
  "encoder": {"kind": "x264", "bitrate_kbps": 500},
  "output": {"kind": "whip", "url": "http://$HOST_IP:$PORT/api/whip", "token": "$TOKEN"},
  "network": {"wifi_country": "DE", "settle_ms": 30000,
              "wifi": [{"ssid": "onair-venue", "psk": "$WIFI_PSK"}]}
}
EOF
    {
        echo '#!/bin/sh'
        echo "VENUE_PSK='$WIFI_PSK'"
        echo "VENUE_SAE='$WIFI_SAE'"
        tail -n +2 "$SCRIPT_DIR/qemu/venue.sh"
    } >"$RUN/venue.sh"
    WIFI_ARGS=(-fw_cfg "name=opt/onair/venue,file=$RUN/venue.sh"
        -netdev tap,id=venue,ifname=tap1,script=no,downscript=no
        -device virtio-net-pci,netdev=venue,mac=52:54:00:6f:61:03,romfile=)
    # The venue at boot (test only); the kernel command line carries no secret.
    WIFI_CMDLINE="$CMDLINE systemd.run=\"/bin/sh -c 'modprobe qemu_fw_cfg; exec /bin/sh /sys/firmware/qemu_fw_cfg/by_name/opt/onair/venue/raw setup'\" systemd.run_success_action=none systemd.run_failure_action=none systemd.unit=multi-user.target systemd.wants=kernel-command-line.service"
}

# _cut_cable: the wired NIC without carrier from the start (qemu's monitor answers within a
# fraction of a second; the guest's kernel needs many seconds to reach its NIC).
_cut_cable() {
    local _
    for _ in $(seq 50); do
        qmp set_link '{"name": "net0", "up": false}' >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    return 1
}

# _boot_wifi / _boot_wired: power on (the box must be off) and wait for SSH.
_boot_wifi() {
    local saved=$CMDLINE
    CMDLINE=$WIFI_CMDLINE
    BOX_SSH=(ip netns exec "$NS" ssh "${SSH_OPTS[@]}" -o BatchMode=yes -o IdentitiesOnly=yes
        -i "$RUN/id_ed25519" "root@$WIFI_BOX_IP")
    start_qemu "${WIFI_ARGS[@]}"
    CMDLINE=$saved
    _cut_cable || fail "wifi: could not cut the wired link through qemu's monitor"
    wait_ssh
}
# SSH to the box's wired address again: the checks after this one boot on the cable.
_ssh_wired() {
    BOX_SSH=(ip netns exec "$NS" ssh "${SSH_OPTS[@]}" -o BatchMode=yes -o IdentitiesOnly=yes
        -i "$RUN/id_ed25519" "root@$BOX_IP")
}
_boot_wired() {
    _ssh_wired
    start_qemu
    wait_ssh
}

wifi_boot() {
    phase "field uplinks: boot $((boots + 1)) with Wi-Fi only (issue 22, tests 1-4)"
    _wifi_setup
    # The card as the person leaves it: a new onair.json with the venue's Wi-Fi.
    mcopy -o -i "$RUN/boot.vfat" "$RUN/onair-wifi.json" ::/onair.json
    _boot_wifi
    if [ "$ssh_ok" != 1 ]; then
        fail "wifi: no SSH over the venue's Wi-Fi within ${BOOT_TIMEOUT}s (the box did not join, or the venue did not come up: console-$boots.log)"
        power_off hard || true
        _ssh_wired
        return
    fi
    local box_ip=$BOX_IP
    BOX_IP=$WIFI_BOX_IP
    export QEMU_START_MONO=$qemu_start_mono
    scenario_check wifi wifi-check.sh $((WIFI_CHECKS - 1))
    BOX_IP=$box_ip
    phase "field uplinks: poweroff, the card afterwards"
    power_off || fail "wifi: the box did not power off"
    _ssh_wired
    local files report traces
    files=$(mdir -b -i "$RUN/boot.vfat" ::/ 2>&1 | sed 's|^::/||' | sort | tr '\n' ' ')
    report=$(mtype -i "$RUN/boot.vfat" ::/onair-import.txt 2>&1 | tr -d '\r') || true
    printf '%s\n' "$report" | sed 's/^/    onair-import.txt: /'
    # The whole card image, free clusters included: the imported onair.json was overwritten
    # with zeros before it was deleted.
    traces=$(grep -c -a -F -e "$WIFI_PSK" -e "$WIFI_SAE" "$RUN/boot.vfat" || true)
    if [[ " $files " != *" onair.json "* ]] && grep -q 'imported onair.json' <<<"$report" &&
        ! grep -q -F -e "$WIFI_PSK" -e "$WIFI_SAE" <<<"$report" && [ "$traces" = 0 ]; then
        pass "wifi: the card afterwards: onair.json with the Wi-Fi passphrase imported, overwritten and deleted; onair-import.txt says so without it; the passphrase in 0 places of the card image"
    else
        fail "wifi: the card afterwards: files $files; the passphrase found $traces time(s) in the card image; report: $(tr '\n' ' ' <<<"$report")"
    fi
}

# A median of numbers.
_median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

uplink_boots() {
    local n=$1 kind i out first secs wired=() wifi=() chain
    phase "benchmark: power-on to first picture, $n boots each on the cable and on Wi-Fi only"
    [ -n "${WIFI_ARGS+x}" ] || _wifi_setup
    for i in $(seq "$n"); do
        for kind in wired wifi; do
            if qemu_alive; then power_off; fi
            qemu_pid=""
            # Every boot imports the same card (the Wi-Fi config streams on either uplink).
            mcopy -o -i "$RUN/boot.vfat" "$RUN/onair-wifi.json" ::/onair.json
            if [ $kind = wired ]; then _boot_wired; else _boot_wifi; fi
            out=$(ip netns exec "$NS" python3 "$SCRIPT_DIR/qemu/uplink-check.py" --url "http://$HOST_IP:$PORT" \
                first-frame --since "$qemu_start_mono" --count 15 --timeout 240) || true
            first=$(sed -n 's/.* after=\([^ ]*\).*/\1/p' <<<"$out")
            log "  $kind boot $i: first picture ${first:-never} s after power-on (SSH after ${boot_secs}s)"
            if [ -n "$first" ]; then
                if [ $kind = wired ]; then wired+=("$first"); else wifi+=("$first"); fi
            fi
            if [ "$i" = 1 ]; then
                chain=$(timeout 60 "${BOX_SSH[@]}" "systemd-analyze critical-chain onair.service --no-pager; \
                    systemd-analyze critical-chain onair-wifi@wlan0.service --no-pager 2>/dev/null; \
                    systemd-analyze blame --no-pager | head -n 12" 2>&1) || true
                printf '%s\n' "$chain" | sed "s/^/    $kind: /"
            fi
        done
    done
    if qemu_alive; then power_off; fi
    secs="wired median $(printf '%s\n' "${wired[@]}" | _median) s (${wired[*]}), Wi-Fi only median $(printf '%s\n' "${wifi[@]}" | _median) s (${wifi[*]})"
    if [ ${#wired[@]} = "$n" ] && [ ${#wifi[@]} = "$n" ]; then
        pass "benchmark: power-on to the first decoded picture: $secs"
    else
        fail "benchmark: not every boot streamed: $secs"
    fi
}
