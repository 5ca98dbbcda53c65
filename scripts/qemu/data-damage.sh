# shellcheck shell=bash
# Check 9 of scripts/qemu-boot-test.sh (sourced by it; run after check 5, with the box powered
# off and its data disk holding the config imported at the first boot): a damaged data
# partition, as a card that lost power mid-write or wore out leaves it. Two more boots, each
# ended by pulling the power as soon as its checks are done:
#   A. the first superblock zeroed (udev then finds no label: onair-data finds the partition by
#      the label in its backup superblock): `e2fsck -p` repairs it from the backup before it is
#      mounted; the box goes live with the config imported at the first boot; the report says
#      `repaired` (onair status, onair-import.txt on the card).
#   B. the first superblock and the first block group's inode table zeroed: `e2fsck -p` cannot
#      repair that unattended, so the partition is not mounted and a RAM disk takes its place;
#      the owner's onair.json (put on the card again, with LEDs on the console) and the key
#      imported at the first boot (authorized_keys.imported) are taken into it: SSH with the
#      card's key works, the box goes live, `onair status` and the LEDs say the partition
#      cannot be used, onair-import.txt on the card names it and why, and nothing on the card
#      is lost (onair.json stays, with its token, for the next boot).
# ONAIR_QEMU_DATA=0 skips it. Uses the test script's reboot_box, power_off, BOX_SSH, RUN,
# boot_secs, ssh_ok, phase, log, pass, fail and qemu_alive.

# The facts of a booted box, once `onair status` says live (at most 180 s).
_data_facts() {
    timeout 300 "${BOX_SSH[@]}" sh -s 2>&1 <<'BOX'
i=0
while [ $i -lt 180 ]; do
	state=$(onair status 2>/dev/null | awk '$1 == "state" { print $2; exit }')
	[ "$state" = live ] && break
	sleep 1
	i=$((i + 1))
done
echo "state=${state:-none}"
echo "live_after=$i"
echo "report=$(tr '\n' ';' </run/onair/data-partition 2>/dev/null)"
echo "data_mount=$(findmnt -n -o SOURCE,FSTYPE /data | tr ' ' ,)"
echo "config_sum=$(sha256sum </data/onair/onair.json 2>/dev/null | cut -c1-64)"
echo "json_data=$(onair status --json 2>/dev/null | sed -n 's/.*"data_partition":\({[^}]*}\|null\).*/\1/p')"
onair status 2>/dev/null | sed -n 's/^data  */status_data=/p'
journalctl -b -o cat -u onair-data.service -u onair-import.service -u onair.service --no-pager |
	grep -E '^(onair-data|onair-import|leds):' | awk '!seen[$0]++' | sed 's/^/log: /'
BOX
}

# The data disk's name on the box: virtio disks are named in the order they are given, the
# root disk(s) first (one, or check 11's two slots and its bundles), then the card, then data.
_data_dev() {
    local n=0 a
    for a in "${ROOT_DRIVES[@]}"; do [[ $a == virtio-blk-pci* ]] && n=$((n + 1)); done
    printf '/dev/vd%b\n' "\\$(printf '%03o' $((97 + n + 1)))"
}

data_damage_check() {
    local facts fact report files t_boot dev
    dev=$(_data_dev)
    _dd() { sed -n "s/^$1=//p" <<<"$facts" | head -1; }
    local want_sum
    want_sum=$(sha256sum <"$RUN/onair.json" | cut -c1-64)

    # ---- A: the first superblock zeroed: repaired by the check ----
    phase "data partition A: first superblock destroyed -> repaired by e2fsck -p, live"
    dd if=/dev/zero of="$RUN/data.ext4" bs=1024 seek=1 count=1 conv=notrunc status=none
    t_boot=$SECONDS
    reboot_box
    if [ "$ssh_ok" = 1 ]; then
        facts=$(_data_facts) || true
        printf '%s\n' "$facts" | sed 's/^/    /'
        if [ "$(_dd state)" = live ] && [[ $(_dd report) == "state=repaired;device=$dev;"* ]] &&
            [ "$(_dd data_mount)" = "$dev,ext4" ] && [ "$(_dd config_sum)" = "$want_sum" ] &&
            [[ $(_dd status_data) == "$dev repaired at boot" ]] &&
            grep -q 'backup at block 8193 used' <<<"$facts"; then
            pass "data partition A: the first superblock destroyed: found by its backup's label, repaired by e2fsck -p from it, mounted; live with the config imported at the first boot (SSH after ${boot_secs}s, live $(_dd live_after)s after SSH, $((SECONDS - t_boot))s for the boot and checks); onair status: data $(_dd status_data)"
        else
            fail "data partition A: expected state=repaired on $dev, mounted, live with the imported config (see the facts above)"
        fi
    fi
    power_off hard || true
    report=$(mtype -i "$RUN/boot.vfat" ::/onair-import.txt 2>&1 | tr -d '\r') || true
    printf '%s\n' "$report" | sed 's/^/    onair-import.txt: /'
    if grep -q "$dev was damaged and repaired at boot" <<<"$report"; then
        pass "data partition A: onair-import.txt on the card says the partition was repaired at boot"
    else
        fail "data partition A: onair-import.txt does not say the partition was repaired"
    fi

    # ---- B: superblock and inode table zeroed: beyond the check; a RAM disk, the card's files ----
    phase "data partition B: superblock and inode table destroyed -> RAM disk, card's config and key"
    local block table
    block=$(dumpe2fs -h "$RUN/data.ext4" 2>/dev/null | sed -n 's/^Block size: *//p')
    table=$(dumpe2fs "$RUN/data.ext4" 2>/dev/null | sed -n '/^Group 0:/,/^Group 1:/s/.*Inode table at \([0-9]*\)-.*/\1/p')
    if [ -z "$block" ] || [ -z "$table" ]; then
        fail "data partition B: cannot read the data disk's layout (dumpe2fs)"
        return
    fi
    dd if=/dev/zero of="$RUN/data.ext4" bs=1024 seek=1 count=1 conv=notrunc status=none
    dd if=/dev/zero of="$RUN/data.ext4" bs="$block" seek="$table" count=$((65536 / block)) conv=notrunc status=none
    # The owner puts the config on the card again (the first boot deleted it: it holds the
    # token), this time with the LEDs on the console so the journal shows them.
    sed 's/^}$/  ,"leds": {"backend": "console"}\n}/' "$RUN/onair.json" >"$RUN/onair-card.json"
    mcopy -o -i "$RUN/boot.vfat" "$RUN/onair-card.json" ::/onair.json
    want_sum=$(sha256sum <"$RUN/onair-card.json" | cut -c1-64)
    local data_before
    data_before=$(sha256sum <"$RUN/data.ext4" | cut -c1-64)
    t_boot=$SECONDS
    reboot_box
    if [ "$ssh_ok" = 1 ]; then
        facts=$(_data_facts) || true
        printf '%s\n' "$facts" | sed 's/^/    /'
        if [ "$(_dd state)" = live ] && [[ $(_dd report) == "state=ram_disk;device=$dev;"*"exit 4"* ]] &&
            [[ $(_dd data_mount) == *,tmpfs ]] && [ "$(_dd config_sum)" = "$want_sum" ] &&
            [[ $(_dd status_data) == "RAM DISK: the data partition $dev cannot be used"* ]] &&
            [[ $(_dd json_data) == *'"state":"ram_disk"'* ]] &&
            grep -q '^log: leds: live=on status=flash every 2 s (state live, data partition unusable' <<<"$facts"; then
            pass "data partition B: beyond e2fsck -p: not mounted, a RAM disk instead; SSH with the card's key (authorized_keys.imported) after ${boot_secs}s; live with the card's onair.json $(_dd live_after)s after SSH ($((SECONDS - t_boot))s for the boot and checks); onair status: data $(_dd status_data | cut -c1-90)...; LEDs: green on, red flashing every 2 s"
        else
            fail "data partition B: expected a RAM disk, live with the card's config, the partition named in onair status and on the LEDs (see the facts above)"
        fi
    else
        fail "data partition B: the card's key gave no SSH login on a box whose data partition is gone"
    fi
    power_off hard || true
    files=$(mdir -b -i "$RUN/boot.vfat" ::/ 2>&1 | sed 's|^::/||' | sort | tr '\n' ' ')
    report=$(mtype -i "$RUN/boot.vfat" ::/onair-import.txt 2>&1 | tr -d '\r') || true
    printf '%s\n' "$report" | sed 's/^/    onair-import.txt: /'
    if grep -q "the data partition $dev cannot be used: e2fsck -p cannot repair it unattended" <<<"$report" &&
        grep -q "e2fsck -y $dev" <<<"$report" &&
        [[ " $files " == *" onair.json "* ]] && [[ " $files " == *" authorized_keys.imported "* ]]; then
        pass "data partition B: onair-import.txt names $dev and why it cannot be used; onair.json and authorized_keys.imported are still on the card"
    else
        fail "data partition B: onair-import.txt or the card's files are not as expected ($files)"
    fi
    if [ "$(sha256sum <"$RUN/data.ext4" | cut -c1-64)" = "$data_before" ]; then
        log "the damaged data disk was not written at all"
    else
        log "the damaged data disk was written by e2fsck -p (what it repairs unattended) but not mounted"
    fi
}
