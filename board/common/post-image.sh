#!/bin/sh
# onair post-image script (BR2_ROOTFS_POST_IMAGE_SCRIPT): stages the content
# of the FAT partitions and assembles the disk image (sdcard.img) with
# genimage, following the board's genimage.cfg: ONAIR-BOOT (onair-boot-fs:
# autoboot.txt and the files a user edits) and, on the Pis, each system
# slot's boot partition (boot-fs: firmware, kernel, config.txt, cmdline*.txt).
# Arguments: $1 images directory, $2 board directory (BR2_ROOTFS_POST_SCRIPT_ARGS).
# Buildroot puts its host tools (genimage, mtools, mkfs.vfat, mke2fs) on PATH.

set -eu

BINARIES_DIR=$1
BOARD_DIR=$2
COMMON_DIR=$(cd "$(dirname "$0")" && pwd)
BOARD=$(basename "$BOARD_DIR")
STAGE=$BINARIES_DIR/boot-fs
ONAIR_BOOT=$BINARIES_DIR/onair-boot-fs
GENIMAGE_TMP=${BUILD_DIR:-$BINARIES_DIR/..}/genimage.tmp

rm -rf "$STAGE" "$ONAIR_BOOT"
mkdir -p "$STAGE" "$ONAIR_BOOT"

case $BOARD in
rpi4 | rpi5)
	# Firmware, config.txt, cmdline.txt and DT overlays (package rpi-firmware),
	# the board's device trees and the kernel named in config.txt.
	cp -R "$BINARIES_DIR/rpi-firmware/." "$STAGE/"
	cp "$BINARIES_DIR"/*.dtb "$STAGE/"
	kernel=$(sed -n 's/^kernel=//p' "$STAGE/config.txt")
	[ -n "$kernel" ] || {
		echo "onair post-image: no kernel= line in config.txt" >&2
		exit 1
	}
	cp "$BINARIES_DIR/$kernel" "$STAGE/$kernel"
	# Other kernel command lines that config.txt selects for some models or
	# for slot B (cmdline=FILE in a [filter] section), from the board directory.
	sed -n 's/^cmdline=//p' "$STAGE/config.txt" | while read -r cmdline; do
		[ -f "$BOARD_DIR/$cmdline" ] || {
			echo "onair post-image: config.txt names cmdline=$cmdline, missing in $BOARD_DIR" >&2
			exit 1
		}
		cp "$BOARD_DIR/$cmdline" "$STAGE/$cmdline"
	done
	;;
qemu-aarch64)
	# qemu loads the kernel itself, so the slots have no boot partitions: the
	# script plays the Pi firmware's part and boots the root file system that
	# autoboot.txt on ONAIR-BOOT names (partition 2 = slot A, 3 = slot B).
	cat >"$BINARIES_DIR/start-qemu.sh" <<'QEMU'
#!/bin/sh
# Boots the onair qemu image (written by board/common/post-image.sh).
# SSH: ssh -p 2222 root@127.0.0.1 (forwarded on loopback only).
# Extra arguments go to qemu, e.g. -device i6300esb for a watchdog.
# The slot: [all] boot_partition= of autoboot.txt on ONAIR-BOOT (read with
# mtools), or its [tryboot] one with TRYBOOT=1 (what `reboot '0 tryboot'`
# asks the Pi firmware for); slot A without mtools.
cd "$(dirname "$0")" || exit 1
section=all
[ "${TRYBOOT:-0}" = 1 ] && section=tryboot
part=$(mtype -i sdcard.img@@4M ::/autoboot.txt 2>/dev/null | tr -d '\r' |
	awk -v want="[$section]" '/^\[/ { in_s = ($0 == want) } in_s && /^boot_partition=/ { sub(/.*=/, ""); print; exit }')
case $part in
3) slot=B ;;
*) part=2 slot=A ;;
esac
echo "start-qemu.sh: booting slot $slot (partition $part)" >&2
exec qemu-system-aarch64 -M virt -cpu cortex-a53 -smp 2 -m 1024 -nographic \
	-kernel Image \
	-append "root=PARTUUID=6f6e6169-0$part rootfstype=ext4 ro rootwait panic=10 console=ttyAMA0 rauc.slot=$slot" \
	-drive file=sdcard.img,if=none,format=raw,id=hd0 \
	-device virtio-blk-device,drive=hd0 \
	-netdev user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22 \
	-device virtio-net-device,netdev=net0 \
	"$@"
QEMU
	chmod 0755 "$BINARIES_DIR/start-qemu.sh"
	;;
*)
	echo "onair post-image: unknown board $BOARD ($BOARD_DIR)" >&2
	exit 1
	;;
esac

# ONAIR-BOOT: which slot the firmware boots (rewritten only by RAUC's
# backend, rauc-tryboot, when an update is kept), and what a user edits on a
# laptop before the first boot.
cp "$COMMON_DIR/boot-files/autoboot.txt" "$ONAIR_BOOT/"
cp "$COMMON_DIR/boot-files/onair.json.example" "$ONAIR_BOOT/"
cp "$COMMON_DIR/boot-files/ONAIR-README.txt" "$ONAIR_BOOT/"

# genimage resolves srcpath = "boot-fs" from the current directory. Give it
# an empty root path: it would copy a real one in full, and no image here is
# filled from it.
ROOTPATH_TMP=$(mktemp -d)
trap 'rm -rf "$ROOTPATH_TMP"' EXIT
rm -rf "$GENIMAGE_TMP"
cd "$BINARIES_DIR"
genimage \
	--rootpath "$ROOTPATH_TMP" \
	--tmppath "$GENIMAGE_TMP" \
	--inputpath "$BINARIES_DIR" \
	--outputpath "$BINARIES_DIR" \
	--config "$BOARD_DIR/genimage.cfg"

echo "onair: $BOARD image: $BINARIES_DIR/sdcard.img"
