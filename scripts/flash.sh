#!/bin/sh
# Writes an onair image to an SD card (or USB disk), with safety checks.
#
#   sudo scripts/flash.sh [--yes] [--force] IMAGE DEVICE
#
# IMAGE   the disk image, e.g. ~/onair-build/rpi4/images/sdcard.img
# DEVICE  the whole card, e.g. /dev/sdb or /dev/mmcblk0 (not a partition);
#         `lsblk -d -o NAME,SIZE,MODEL,TRAN,RM` lists the candidates
#
# Refuses: a DEVICE that is not a block device, a partition, the disk that
# holds / (or any disk mounted, used as swap or held by LVM/RAID/dm-crypt),
# a device smaller than the image, and, without --force, a device larger
# than 256 GB or one that looks internal (SATA, NVMe, non-removable).
# Shows the device's model and size and asks to type "yes" before writing,
# unless --yes is given (for scripts; the checks still apply).
# Everything on DEVICE is lost. Linux only (lsblk, findmnt, GNU dd).
#
# Options:
#   --yes    do not ask for confirmation
#   --force  allow devices larger than 256 GB or that look internal
#   -h, --help

set -eu

MAX_BYTES=256000000000

usage() {
	sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" | sed '$d'
	exit "${1:-0}"
}

die() {
	echo "flash: $*" >&2
	exit 1
}

YES=0
FORCE=0
IMAGE=
DEVICE=
while [ $# -gt 0 ]; do
	case $1 in
	--yes) YES=1 ;;
	--force) FORCE=1 ;;
	-h | --help) usage 0 ;;
	-*) die "unknown option $1 (see --help)" ;;
	*)
		if [ -z "$IMAGE" ]; then
			IMAGE=$1
		elif [ -z "$DEVICE" ]; then
			DEVICE=$1
		else
			die "too many arguments (see --help)"
		fi
		;;
	esac
	shift
done
if [ -z "$IMAGE" ] || [ -z "$DEVICE" ]; then
	usage 2
fi

for tool in lsblk findmnt dd awk; do
	command -v "$tool" >/dev/null 2>&1 || die "missing $tool (util-linux / coreutils)"
done

# --- the image -----------------------------------------------------------------
[ -f "$IMAGE" ] || die "$IMAGE is not a file"
[ -r "$IMAGE" ] || die "cannot read $IMAGE"
image_bytes=$(wc -c <"$IMAGE" | tr -d ' ')
[ "$image_bytes" -gt 0 ] || die "$IMAGE is empty"

# --- the device ------------------------------------------------------------------
[ -e "$DEVICE" ] || die "$DEVICE does not exist"
dev=$(readlink -f "$DEVICE")
[ -b "$dev" ] || die "$DEVICE is not a block device"

type=$(lsblk -dno TYPE "$dev" | tr -d ' ')
# (FLASH_ALLOW_LOOP=1 accepts loop devices: for testing this script.)
[ "$type" != loop ] || [ "${FLASH_ALLOW_LOOP:-0}" != 1 ] || type=disk
case $type in
disk) ;;
part)
	parent=$(lsblk -no PKNAME "$dev" | head -n 1 | tr -d ' ')
	die "$DEVICE is a partition; give the whole card${parent:+, e.g. /dev/$parent}"
	;;
*) die "$DEVICE is a '$type' device, not a disk" ;;
esac
name=$(basename "$dev")

# The disk(s) under / (through partitions, LVM, dm-crypt, RAID).
root_src=$(findmnt -nvo SOURCE / 2>/dev/null || true)
root_disks=
if [ -n "$root_src" ] && [ -b "$root_src" ]; then
	root_disks=$(lsblk -nsro NAME,TYPE "$root_src" 2>/dev/null |
		awk '$2 == "disk" { print $1 }')
fi
if [ -z "$root_disks" ]; then
	echo "flash: warning: cannot tell which disk holds / ($root_src); relying on the mount checks" >&2
fi
for d in $root_disks; do
	[ "$d" != "$name" ] || die "$DEVICE holds the running system's root filesystem (/)"
done

# Nothing on the device may be in use.
mounted=$(lsblk -nro MOUNTPOINT "$dev" | awk 'NF { printf "%s%s", sep, $0; sep = " " }')
[ -z "$mounted" ] ||
	die "$DEVICE is mounted ($mounted); unmount its partitions first (umount, or udisksctl unmount -b)"
if command -v swapon >/dev/null 2>&1; then
	for s in $(swapon --noheadings --raw --show=NAME 2>/dev/null || true); do
		s=$(readlink -f "$s")
		if lsblk -nro PATH "$dev" 2>/dev/null | grep -qx "$s"; then
			die "$DEVICE is used as swap ($s)"
		fi
	done
fi
for holder in /sys/block/"$name"/holders/* /sys/block/"$name"/"$name"*/holders/*; do
	[ -e "$holder" ] || continue
	die "$DEVICE is in use by $(basename "$holder") (LVM, RAID or dm-crypt)"
done

size=$(lsblk -bdno SIZE "$dev" | tr -d ' ')
[ "${size:-0}" -gt 0 ] || die "$DEVICE has no medium (size 0): is the card inserted?"
[ "$size" -ge "$image_bytes" ] || die "$DEVICE ($size bytes) is smaller than $IMAGE ($image_bytes bytes)"

model=$(lsblk -dno VENDOR,MODEL "$dev" | awk '{$1 = $1; print}')
tran=$(lsblk -dno TRAN "$dev" | tr -d ' ')
removable=$(lsblk -dno RM "$dev" | tr -d ' ')
human=$(lsblk -dno SIZE "$dev" | tr -d ' ')

if [ "$size" -gt "$MAX_BYTES" ] && [ "$FORCE" != 1 ]; then
	die "$DEVICE is $human, larger than an SD card usually is; add --force if it really is the target"
fi
case $tran in
usb | mmc) ;;
*)
	if [ "$removable" != 1 ] && [ "$FORCE" != 1 ]; then
		die "$DEVICE (${tran:-unknown bus}, not removable) looks like an internal disk; add --force if it really is the target"
	fi
	;;
esac

# --- confirm and write -------------------------------------------------------------
echo "Image:  $IMAGE ($image_bytes bytes)"
echo "Device: $dev  ${model:-unknown model}  $human  ${tran:-?}${removable:+ removable=$removable}"
echo "EVERYTHING ON $dev WILL BE ERASED."
if [ "$YES" != 1 ]; then
	printf 'Type yes to write the image: '
	read -r answer || answer=
	[ "$answer" = yes ] || die "not confirmed; nothing written"
fi
[ -w "$dev" ] || die "no permission to write $dev (run with sudo)"

dd if="$IMAGE" of="$dev" bs=4M conv=fsync status=progress
sync
# Let the kernel read the new partition table, so the boot partition
# (ONAIR-BOOT) shows up without unplugging the card.
if command -v blockdev >/dev/null 2>&1; then
	blockdev --rereadpt "$dev" 2>/dev/null || true
fi
echo "flash: done. Before the first boot, put onair.json and authorized_keys on the"
echo "flash: ONAIR-BOOT partition (see ONAIR-README.txt there), then eject the card."
