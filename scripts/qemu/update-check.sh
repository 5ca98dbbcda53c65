# shellcheck shell=bash
# Check 11 of the qemu boot test, sourced by scripts/qemu-boot-test.sh: A/B updates with RAUC
# (issue 26). The harness plays the Raspberry Pi firmware, the test makes its own bundles.
#
# update_setup (before the first boot): two system slots, each a virtio disk named by its
#   serial number (onair-root-a, onair-root-b): slot A a qcow2 overlay over the cached root
#   file system (writable; the cache is never written), slot B empty; autoboot.txt on the
#   ONAIR-BOOT disk as the image has it; and the bundles (board/common/make-bundle.sh, signed
#   with the emulated box's development pair from build-rootfs.sh) on a read-only disk of
#   their own (serial onair-bundles, mounted at /run/bundles on the box, like a USB stick:
#   360 MB over SSH would take 70 s under emulation), with a copy of the good one cut to 64 MB:
#     good     the same root file system, version "2"
#     broken   the same root file system with /etc/default/onair pointing the daemon at a
#              config of its own whose server refuses the connection (port 9 of the
#              receiver's address), so it runs and never goes live (a deliberately broken
#              config), version "3-broken"
#     other    a small bundle signed by another key
#   zstd (level 3) compresses the payload: cheap to make on the host and to read under
#   emulation.
# firmware_pick (start_qemu calls it before each boot): the Pi firmware's part. It reads
#   autoboot.txt from the ONAIR-BOOT disk — [all] boot_partition=, or [tryboot]'s when the
#   one-shot tryboot flag is set — and boots that slot: partition 2 = slot A, 3 = slot B,
#   each with its own root and rauc.slot= on the kernel command line. The flag: the Pi's
#   firmware keeps it in a register that a reboot keeps and a power cut clears, set from
#   the kernel's reboot argument ('0 tryboot') and cleared when the firmware reads it. Here
#   it is read from the kernel's last words in the previous boot's console log ("reboot:
#   Restarting system with command '0 tryboot'"), so it lives exactly one boot, and a power
#   cut (qmp quit) or a poweroff never sets it.
# update_checks (after check 10, on the booted box):
#   (3) a bundle signed by another key and a truncated one: refused with the reason, slot B
#       not written, still live on the same session;
#   (1) the good bundle installed while live: no frame lost during the install; the box
#       reboots into slot B by tryboot, goes live, the checker marks it good (autoboot.txt
#       now boots B); /data unchanged (config, keys, host key fingerprint);
#   (2) the broken bundle (into slot A): tried once, not marked good, the checker's verdict
#       reboots the box, which comes back on slot B and goes live by itself; status says why;
#   (4) the good bundle again, the power cut (qmp quit) in the middle of the install: slot B
#       boots and goes live, status says the install did not finish.
#   Figures: bundle size, install time, downtime from the last frame before the
#   reboot to the first frame on the new slot. ONAIR_QEMU_UPDATE_RUNS=N repeats (1) N times
#   (odd N: slots B, A, B, ...; each run costs an install and a boot) and prints the medians;
#   CI runs it once. ONAIR_QEMU_UPDATE=0 skips the check;
#   ONAIR_QEMU_UPDATE_LIVE_WITHIN (default 45 s) is the trial's live deadline on the test box
#   (a good system there is live about 10 s after the checker starts).

UPDATE_LIVE_WITHIN=${ONAIR_QEMU_UPDATE_LIVE_WITHIN:-45}
UPDATE_KEYS=$QDIR/cache/update-keys
SLOT_A_ID=onair-root-a
SLOT_B_ID=onair-root-b
bundles_pid=""

# qemu arguments for the two slot disks (start_qemu puts them where the root disk was).
update_drives() {
    local d
    ROOT_DRIVES=()
    for d in a b; do
        ROOT_DRIVES+=(-drive "file=$RUN/slot-$d.qcow2,if=none,format=qcow2,id=root$d,discard=unmap,detect-zeroes=unmap"
            -device "virtio-blk-pci,drive=root$d,serial=onair-root-$d")
    done
}

update_setup() {
    local size
    local tool
    for tool in qemu-img rauc mksquashfs openssl debugfs resize2fs mcopy mtype; do
        command -v "$tool" >/dev/null || die "$tool not found (check 11: run without --no-setup to install it, or ONAIR_QEMU_UPDATE=0)"
    done
    [ -s "$UPDATE_KEYS/cert.pem" ] || die "no update signing pair in $UPDATE_KEYS (build-rootfs.sh makes it)"
    size=$(stat -c %s "$IMAGE/rootfs.ext4")
    qemu-img create -q -f qcow2 -F raw -b "$IMAGE/rootfs.ext4" "$RUN/slot-a.qcow2"
    qemu-img create -q -f qcow2 "$RUN/slot-b.qcow2" "$size"
    update_drives
    mcopy -o -i "$RUN/boot.vfat" board/common/boot-files/autoboot.txt ::/autoboot.txt
    # The firmware names the root; the image's root=UUID= would name both slots (same image).
    CMDLINE=$(sed 's/ *root=UUID=[^ ]*//' <<<"$CMDLINE")
    CMDLINE="$CMDLINE systemd.setenv=ONAIR_UPDATE_LIVE_WITHIN_S=$UPDATE_LIVE_WITHIN"
    # The bundles, on a read-only disk of their own (serial onair-bundles), as on a USB stick:
    # copying 360 MB over SSH takes 70 s under emulation, and what `onair update` is given is
    # a file either way (README's way is scp to /data).
    local t=$SECONDS
    # (In the background and waited for, so that its `set -e` holds.)
    make_bundles >"$RUN/bundles.log" 2>&1 9>&- &
    bundles_pid=$!
    wait "$bundles_pid" || { tail -n 20 "$RUN/bundles.log" >&2; die "making the test bundles failed (see $RUN/bundles.log)"; }
    bundles_pid=""
    mkdir -p "$RUN/bundles"
    mv "$RUN/good-2.raucb" "$RUN/broken-3.raucb" "$RUN/other-key.raucb" "$RUN/bundles/"
    head -c 64M "$RUN/bundles/good-2.raucb" >"$RUN/bundles/truncated.raucb"
    mke2fs -q -t ext4 -L onair-bundles -d "$RUN/bundles" "$RUN/bundles.ext4" \
        $(($(du -sm "$RUN/bundles" | cut -f1) + 64))M || die "cannot make the bundles' disk"
    GOOD_MB=$(($(stat -c %s "$RUN/bundles/good-2.raucb") >> 20))
    rm -rf "$RUN/bundles" "$RUN/other-key"
    ROOT_DRIVES+=(-drive "file=$RUN/bundles.ext4,if=none,format=raw,id=bundles,readonly=on"
        -device "virtio-blk-pci,drive=bundles,serial=onair-bundles")
    log "check 11: test bundles made and put on their disk in $((SECONDS - t))s ($GOOD_MB MB each)"
}

make_bundles() {
    local t=$SECONDS sign=(--cert "$UPDATE_KEYS/cert.pem" --key "$UPDATE_KEYS/key.pem"
        --keyring "$UPDATE_KEYS/cert.pem" --compatible onair-qemu-debian
        --mksquashfs-args "-comp zstd -Xcompression-level 3")
    set -e
    board/common/make-bundle.sh "${sign[@]}" --version 2 "$RUN/good-2.raucb" rootfs="$IMAGE/rootfs.ext4"
    echo "good bundle: $((SECONDS - t))s"
    t=$SECONDS
    cp --sparse=always "$IMAGE/rootfs.ext4" "$RUN/broken-rootfs.ext4"
    # A build that ships a wrong default: the daemon runs, answers, and never goes live (its
    # server refuses the connection; an address on the box's own network, so the box is not
    # offline: an unresolvable name would read as a network that is down).
    printf '# Deliberately broken (qemu boot test, check 11).\nONAIR_CONFIG=/etc/onair/broken.json\n' >"$RUN/broken-environment"
    sed "s|http://$HOST_IP:$PORT/api/whip|http://$HOST_IP:9/api/whip|" "$RUN/onair.json" >"$RUN/broken-onair.json"
    grep -q ":9/api/whip" "$RUN/broken-onair.json"
    debugfs -w -R "write $RUN/broken-environment /etc/default/onair" "$RUN/broken-rootfs.ext4" >/dev/null
    debugfs -w -R "write $RUN/broken-onair.json /etc/onair/broken.json" "$RUN/broken-rootfs.ext4" >/dev/null
    board/common/make-bundle.sh "${sign[@]}" --version 3-broken "$RUN/broken-3.raucb" rootfs="$RUN/broken-rootfs.ext4"
    rm -f "$RUN/broken-rootfs.ext4"
    echo "broken bundle: $((SECONDS - t))s"
    mkdir -p "$RUN/other-key/content"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$RUN/other-key/key.pem" -out "$RUN/other-key/cert.pem" -days 2 \
        -subj "/CN=not the box's key" 2>/dev/null
    head -c 4M /dev/urandom >"$RUN/other-key/content/noise"
    mke2fs -q -F -t ext4 -d "$RUN/other-key/content" "$RUN/other-key/rootfs.ext4" 16M
    board/common/make-bundle.sh --cert "$RUN/other-key/cert.pem" --key "$RUN/other-key/key.pem" \
        --compatible onair-qemu-debian --version 9-other-key "$RUN/other-key.raucb" \
        rootfs="$RUN/other-key/rootfs.ext4"
    echo "done"
}

firmware_pick() {
    local prev=$CONSOLE section=all part flag=clear
    if [ "$boots" -gt 0 ] && grep -aq "Restarting system with command '0 tryboot'" "$prev" 2>/dev/null; then
        section=tryboot flag=set
    fi
    part=$(mtype -i "$RUN/boot.vfat" ::/autoboot.txt 2>/dev/null | tr -d '\r' |
        awk -v want="[$section]" '/^\[/ { s = ($0 == want) } s && /^boot_partition=/ { sub(/.*=/, ""); print; exit }')
    case $part in
    2) FIRMWARE_SLOT=A ;;
    3) FIRMWARE_SLOT=B ;;
    *) die "emulated firmware: autoboot.txt names no slot in [$section] (boot_partition=$part)" ;;
    esac
    local id=onair-root-${FIRMWARE_SLOT,,}
    SLOT_CMDLINE="root=/dev/disk/by-id/virtio-$id rauc.slot=$FIRMWARE_SLOT"
    log "emulated firmware: tryboot flag $flag -> autoboot.txt [$section] boot_partition=$part -> slot $FIRMWARE_SLOT"
}

# ---------------------------------------------------------------- helpers for the checks
rx() { in_ns python3 "$SCRIPT_DIR/qemu/update-check.py" --url "http://$HOST_IP:$PORT" "$@"; }
on_box() { timeout "${2:-120}" "${BOX_SSH[@]}" "$1" 2>&1; }
sjson() { # sjson JSON PYTHON-EXPRESSION-ON-d
    python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$1" "$2" 2>/dev/null || echo "?"
}
# The box's own account: booted slot, its version, trial, the last update.
update_state() {
    local js
    js=$(on_box "onair status --json" 60)
    sjson "$js" '"slot=%s version=%s trial=%s phase=%s reason=%s state=%s" % ((d.get("update") or {}).get("slot"), (d.get("update") or {}).get("version"), (d.get("update") or {}).get("trial"), ((d.get("update") or {}).get("last") or {}).get("phase"), (((d.get("update") or {}).get("last") or {}).get("reason") or "").replace(" ", "_"), d.get("state"))'
}
# Waits for the box to reboot by itself (qemu exits: -no-reboot), then powers it on again.
# DOWN_AT: when qemu exited, on the receiver's clock (the old system's last frame is before it).
follow_reboot() { # follow_reboot TIMEOUT
    local f0=$SECONDS
    while qemu_alive && [ $((SECONDS - f0)) -lt "$1" ]; do sleep 0.5; done
    if qemu_alive; then
        return 1
    fi
    DOWN_AT=$(rx now)
    wait "$qemu_pid" 2>/dev/null || true
    qemu_pid=""
    start_qemu
    wait_ssh
}
# The bundles' disk, mounted read-only at /run/bundles (after each boot).
bundles_on_box() { on_box "mountpoint -q /run/bundles || { mkdir -p /run/bundles && mount -o ro /dev/disk/by-id/virtio-onair-bundles /run/bundles; }" 60 >/dev/null; }
slot_b_sum() { on_box "dd if=/dev/disk/by-id/virtio-$SLOT_B_ID bs=1M count=64 2>/dev/null | sha256sum | cut -c1-16" 120; }
data_sums() {
    on_box "sha256sum /data/onair/onair.json /data/ssh/root-keys/authorized_keys | cut -c1-16 | tr '\n' ' '; ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub | cut -d' ' -f2" 60
}
kv2() { sed -n "s/.*\b$1=\([^ ]*\).*/\1/p" <<<"$2"; }

median() { printf '%s\n' "$@" | grep -v '^$' | sort -n | awk '{ v[NR] = $1 } END { print (NR ? v[int((NR + 1) / 2)] : "?") }'; }

# update_good SLOT RUN: check 1 once: the good bundle (on the bundles disk) into SLOT while live,
# no frame lost during the install, the reboot into SLOT by tryboot, live, kept, /data unchanged.
# "No frame lost": every frame the daemon handed to the connection since it started (its
# frames_sent; the session has lasted since then: no reconnect) was decoded by the receiver —
# counted after the install with `--no-reboot`, the receiver read a second after the box. The
# rate and the longest gap at the receiver during the install are reported beside it: under
# emulation on a loaded host the guest itself stalls now and then (frames late, not lost).
# The reboot is then the one `onair update` prints for --no-reboot (check 2 has onair update
# reboot by itself). Sets GOOD_INSTALL_S and GOOD_DOWN_S.
update_good() {
    local target=$1 run=$2 part data0 data1 t_start t_end w lv booted down st autoboot
    [ "$target" = A ] && part=2 || part=3
    data0=$(data_sums)
    local before sent0 rc0
    before=$(on_box "onair status --json" 60)
    sent0=$(sjson "$before" 'd["frames_sent"]') rc0=$(sjson "$before" 'd["reconnects"]')
    t_start=$(rx now)
    bundles_on_box
    timeout 1800 "${BOX_SSH[@]}" onair update --no-reboot /run/bundles/good-2.raucb >"$RUN/update-1-$run.out" 2>&1 || true
    t_end=""
    grep -q '^onair update: installed version' "$RUN/update-1-$run.out" && t_end=$(rx now)
    local after sent1 rc1 live decoded
    after=$(on_box "onair status --json" 60)
    sent1=$(sjson "$after" 'd["frames_sent"]') rc1=$(sjson "$after" 'd["reconnects"]')
    sleep 1
    live=$(rx live) || true
    decoded=$(kv2 frames_decoded "$live")
    sed 's/^/    /' "$RUN/update-1-$run.out" | grep -v '% ' | tail -n 8
    GOOD_INSTALL_S=""
    [ -n "$t_end" ] && GOOD_INSTALL_S=$(awk -v a="$t_start" -v b="$t_end" 'BEGIN { printf "%.0f", b - a }')
    w=$(rx window --from "$t_start" --to "${t_end:-$t_start}")
    log "during the install: $w; daemon sent $sent0 -> $sent1 frames (reconnects $rc0 -> $rc1), receiver decoded $decoded in this session"
    on_box "systemctl reboot --reboot-argument='0 tryboot'" 30 >/dev/null || true
    DOWN_AT=""
    follow_reboot 600 || true
    booted=$FIRMWARE_SLOT
    lv=$(rx wait-live --since "${DOWN_AT:-0}" --count 30 --timeout 300) || true
    GOOD_DOWN_S=$(awk -v a="$(kv2 last_before "$lv")" -v b="$(kv2 first_after "$lv")" 'BEGIN { if (a != "" && b != "") printf "%.1f", b - a }')
    # The checker keeps the system once it is live: wait for its verdict.
    for _ in $(seq 60); do
        st=$(update_state)
        [ "$(kv2 phase "$st")" = updated ] && break
        sleep 2
    done
    data1=$(data_sums)
    autoboot=$(on_box "mkdir -p /run/ab && mount -o ro LABEL=ONAIR-BOOT /run/ab && awk '/^\[/ { s = (\$0 == \"[all]\") } s && /^boot_partition=/' /run/ab/autoboot.txt; umount /run/ab" 60 | tr -d '\r' | tail -n 1)
    local frames expected gap
    frames=$(kv2 frames "$w") expected=$(kv2 expected "$w") gap=$(kv2 longest_gap "$w")
    local lost=$((${sent1:-0} - ${decoded:-0}))
    [ "$lost" -ge 0 ] || lost=0
    if [ -n "$t_end" ] && [ -n "$decoded" ] && [ "$sent1" -gt "$sent0" ] && [ "${decoded:-0}" -ge "$sent1" ] &&
        [ "$rc0" = "$rc1" ] && awk -v f="$frames" -v e="$expected" 'BEGIN { exit !(e > 0 && f >= e * 0.9) }' &&
        [ "$(kv2 sessions "$w")" != "" ] && [[ "$(kv2 sessions "$w")" != *,* ]] &&
        [ "$booted" = "$target" ] && [ "$(kv2 slot "$st")" = "$target" ] && [ "$(kv2 version "$st")" = 2 ] &&
        [ "$(kv2 phase "$st")" = updated ] && [ "$(kv2 trial "$st")" = False ] &&
        [ "$autoboot" = "boot_partition=$part" ] && [ "$data0" = "$data1" ] && [ -n "$data0" ]; then
        pass "update 1 (run $run): $GOOD_MB MB bundle installed into slot $target in ${GOOD_INSTALL_S}s while live: no frame lost (the daemon sent $((sent1 - sent0)) frames during it, $sent1 in the session, the receiver decoded $decoded), $frames decoded in the install's ${GOOD_INSTALL_S}s ($expected at 15 fps), longest gap ${gap}s, one session; tryboot into slot $target, live again ${GOOD_DOWN_S}s after the last frame of the old slot; kept (status: version 2 in slot $target, $(kv2 reason "$st" | tr _ ' '); autoboot.txt $autoboot); /data unchanged (config, keys, host key $(awk '{print $NF}' <<<"$data1"))"
    else
        fail "update 1 (run $run): expected the install without a lost frame ($lost of $sent1 sent not decoded; $w; reconnects $rc0 -> $rc1), tryboot into $target (booted $booted), kept ($st), autoboot.txt boot_partition=$part ($autoboot), /data unchanged ($data0 -> $data1)"
    fi
}

update_checks() {
    local u0=$SECONDS
    local good_mb=$GOOD_MB

    # ---------------------------------------------------------------- (3) refused
    phase "update check 3: other key and truncated bundle refused"
    local sum0 state0 out1 out2 rc1 rc2 sum1 state1 posts0 posts1
    sum0=$(slot_b_sum)
    posts0=$(kv2 posts "$(rx window --from 0 --to 1)")
    bundles_on_box
    out1=$(on_box "onair update /run/bundles/other-key.raucb" 300) && rc1=0 || rc1=$?
    out2=$(on_box "onair update /run/bundles/truncated.raucb" 300) && rc2=0 || rc2=$?
    printf '%s\n' "$out1" "$out2" | sed 's/^/    /'
    sum1=$(slot_b_sum)
    state1=$(update_state)
    posts1=$(kv2 posts "$(rx window --from 0 --to 1)")
    if [ "$rc1" = 1 ] && grep -q "refused /run/bundles/other-key.raucb: it is not signed by a key this box trusts" <<<"$out1" &&
        [ "$rc2" = 1 ] && grep -q "refused /run/bundles/truncated.raucb: it is not a whole bundle" <<<"$out2" &&
        [ "$sum0" = "$sum1" ] && [ -n "$sum0" ] && [ "$(kv2 state "$state1")" = live ] && [ "$posts0" = "$posts1" ]; then
        pass "update 3: a bundle signed by another key and a truncated one (64 of $good_mb MB) refused with the reason, slot B untouched (first 64 MB $sum1), still live on the same session (POSTs $posts0 -> $posts1); status: $(kv2 phase "$state1") $(kv2 reason "$state1" | tr _ ' ')"
    else
        fail "update 3: expected both refused (exit 1 and the reason), slot B unchanged ($sum0 -> $sum1), live with no new POST ($posts0 -> $posts1): $state1"
    fi

    # ---------------------------------------------------------------- (1) good bundle
    local runs=${ONAIR_QEMU_UPDATE_RUNS:-1} run target=B installs=() downs=()
    for run in $(seq "$runs"); do
        phase "update check 1 (run $run of $runs): good bundle into slot $target while live, tryboot, kept"
        update_good "$target" "$run"
        installs+=("$GOOD_INSTALL_S") downs+=("$GOOD_DOWN_S")
        [ "$target" = B ] && target=A || target=B
    done
    # The box now runs the last target; the other slot is the inactive one.
    local cur other
    [ "$target" = B ] && cur=A other=B || cur=B other=A
    UPDATE_FIGURES="install ${installs[*]}s (median $(median "${installs[@]}")), downtime reboot -> live ${downs[*]}s (median $(median "${downs[@]}"))"
    log "update check 1: $UPDATE_FIGURES"

    # ---------------------------------------------------------------- (2) broken bundle
    phase "update check 2: broken bundle tried once, rolled back by itself"
    bundles_on_box
    timeout 1800 "${BOX_SSH[@]}" onair update /run/bundles/broken-3.raucb >"$RUN/update-2.out" 2>&1 || true
    sed 's/^/    /' "$RUN/update-2.out" | grep -v '% ' | tail -n 4
    local trial_slot back_slot t_reboot
    DOWN_AT=""
    follow_reboot 600 || true
    t_reboot=${DOWN_AT:-0}
    trial_slot=$FIRMWARE_SLOT
    # The trial: the checker waits out the live deadline, then systemd reboots.
    follow_reboot $((UPDATE_LIVE_WITHIN + 300)) || true
    back_slot=$FIRMWARE_SLOT
    lv=$(rx wait-live --since "$t_reboot" --count 30 --timeout 300) || true
    st=$(update_state)
    local roll_s
    roll_s=$(awk -v a="$t_reboot" -v b="$(kv2 first_after "$lv")" 'BEGIN { printf "%.0f", b - a }')
    if [ "$trial_slot" = "$other" ] && [ "$back_slot" = "$cur" ] && [ -n "$(kv2 first_after "$lv")" ] &&
        [ "$(kv2 slot "$st")" = "$cur" ] && [ "$(kv2 phase "$st")" = rolled_back ] &&
        [[ "$(kv2 reason "$st")" == not_live_within_${UPDATE_LIVE_WITHIN}_s* ]] && [ "$(kv2 state "$st")" = live ]; then
        pass "update 2: broken bundle (version 3-broken) tried once in slot $other, not kept; the box rebooted itself into slot $cur and was live ${roll_s}s after the update's reboot; status: rolled back: $(kv2 reason "$st" | tr _ ' ')"
    else
        fail "update 2: expected a trial of slot $other ($trial_slot), then slot $cur ($back_slot) live by itself ($lv) with status rolled back, not live within ${UPDATE_LIVE_WITHIN} s ($st)"
    fi

    # ---------------------------------------------------------------- (4) power cut
    phase "update check 4: power cut in the middle of an install"
    local pct="" copying=""
    bundles_on_box
    timeout 1800 "${BOX_SSH[@]}" onair update /run/bundles/good-2.raucb >"$RUN/update-4.out" 2>&1 &
    upd=$!
    # Cut the power while RAUC writes the slot: 10 s after it said it copies the image
    # (check 1's copy took most of its install time).
    for _ in $(seq 1200); do
        if grep -q 'Copying image\|Updating slots' "$RUN/update-4.out"; then copying=1; break; fi
        kill -0 "$upd" 2>/dev/null || break
        sleep 0.5
    done
    [ -z "$copying" ] || sleep 10
    pct=$(grep -o '^onair update: *[0-9]*%.*' "$RUN/update-4.out" | tail -n 1 | sed 's/^onair update: *//')
    log "power cut during: ${pct:-nothing seen of the install}"
    power_off hard || true
    wait "$upd" 2>/dev/null || true
    t_reboot=$(rx now)
    start_qemu
    wait_ssh
    back_slot=$FIRMWARE_SLOT
    lv=$(rx wait-live --since "$t_reboot" --count 30 --timeout 300) || true
    for _ in $(seq 30); do
        st=$(update_state)
        [ "$(kv2 phase "$st")" = failed ] && break
        sleep 2
    done
    if [ -n "$copying" ] && [ "$back_slot" = "$cur" ] && [ -n "$(kv2 first_after "$lv")" ] &&
        [ "$(kv2 slot "$st")" = "$cur" ] && [ "$(kv2 phase "$st")" = failed ] && [ "$(kv2 state "$st")" = live ]; then
        pass "update 4: power cut during \"$pct\" of an install into slot $other: slot $cur booted and went live ($(kv2 first_after "$lv" | awk -v a="$t_reboot" '{ printf "%.0f", $1 - a }')s after power-on); status: failed: $(kv2 reason "$st" | tr _ ' ')"
    else
        fail "update 4: expected slot $cur live after the power cut at ${pct:-no progress seen} (booted $back_slot, $lv, $st)"
    fi
    # The slot disks and the bundles' disk stay: the boots after this check (checks 13 and 9)
    # boot whichever slot the emulated firmware picks, with the same disks. The harness
    # removes them at its end.
    log "update checks took $((SECONDS - u0))s; $UPDATE_FIGURES"
}
