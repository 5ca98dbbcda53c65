#!/bin/sh
# onair post-build script (BR2_ROOTFS_POST_BUILD_SCRIPT): runs on the build
# host after the packages and the rootfs overlays are in the target directory,
# before the filesystem images are made.
# Arguments: $1 target directory, $2 board directory (BR2_ROOTFS_POST_SCRIPT_ARGS).

set -eu

TARGET_DIR=$1
BOARD_DIR=$2

# The root filesystem is mounted read-only; the data partition is mounted on
# /data (by onair-data at boot).
mkdir -p "$TARGET_DIR/data"

# SSH state must persist, so it lives on the data partition:
#   /etc/dropbear -> /data/ssh/dropbear   host keys, made by dropbear -R
#   ~root/.ssh    -> /data/ssh/root-keys  authorized_keys, from onair-import
# (Buildroot points /etc/dropbear at /var/run/dropbear on a read-only root,
# which would give the box new host keys at every boot.)
rm -rf "$TARGET_DIR/etc/dropbear"
ln -s /data/ssh/dropbear "$TARGET_DIR/etc/dropbear"
mkdir -p "$TARGET_DIR/root"
root_home="$TARGET_DIR/root"
rm -rf "$root_home/.ssh"
ln -s /data/ssh/root-keys "$root_home/.ssh"

# The clock's floor. The Pi 4 has no real-time clock: at boot systemd advances
# the clock to no earlier than this file's mtime, the image's build date, so a
# box that never reached NTP still has a time certificates can be checked at
# (and onair-clock restores the later time saved on /data).
mkdir -p "$TARGET_DIR/usr/lib"
touch "$TARGET_DIR/usr/lib/clock-epoch"

# What the image was built from, for `cat /etc/onair/build-info` over SSH.
# version= is the system's version, the same as its update bundle's
# (scripts/build-image.sh sets ONAIR_VERSION for both).
repo="${BR2_EXTERNAL_ONAIR_PATH:-$(dirname "$0")/../../buildroot}/.."
onair=$(git -C "$repo" describe --always --dirty 2>/dev/null || echo unknown)
{
	echo "board=$(basename "$BOARD_DIR")"
	echo "version=${ONAIR_VERSION:-$onair}"
	echo "buildroot=${BR2_VERSION_FULL:-unknown}"
	echo "onair=$onair"
} >"$TARGET_DIR/etc/onair/build-info"

# A/B updates: RAUC's slots for this board, and the keyring the box trusts
# for update bundles (scripts/build-image.sh names it: the development
# certificate it made, or the production keyring or certificate it was
# given). A box without a keyring would refuse every update.
install -D -m 0644 "$BOARD_DIR/rauc-system.conf" "$TARGET_DIR/etc/rauc/system.conf"
if [ -z "${ONAIR_UPDATE_KEYRING:-}" ] || [ ! -f "$ONAIR_UPDATE_KEYRING" ]; then
	echo "onair post-build: ERROR: ONAIR_UPDATE_KEYRING does not name the update keyring" \
		"(build with scripts/build-image.sh, which makes or finds the signing pair)" >&2
	exit 1
fi
install -D -m 0644 "$ONAIR_UPDATE_KEYRING" "$TARGET_DIR/etc/rauc/keyring.pem"
