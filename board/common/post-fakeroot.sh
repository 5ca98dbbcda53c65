#!/bin/sh
# onair post-fakeroot script (BR2_ROOTFS_POST_FAKEROOT_SCRIPT): runs on the
# build host when the root filesystem is complete (users created, systemd
# presets applied), right before the image is made. It stops the build if the
# image could be entered without an SSH key or would not start the box.
# Arguments: $1 target directory, $2 board directory (BR2_ROOTFS_POST_SCRIPT_ARGS).

set -eu

TARGET_DIR=$1

fail() {
	echo "onair post-fakeroot: ERROR: $*" >&2
	exit 1
}

# No account may have a usable password, nor an empty one: the password
# field must be "*" or start with "!" (locked). Root logs in with SSH keys.
bad=$(awk -F: '$2 != "*" && substr($2, 1, 1) != "!" { printf " %s", $1 }' \
	"$TARGET_DIR/etc/shadow")
[ -z "$bad" ] || fail "accounts with a password, or with none at all, in /etc/shadow:$bad"

# dropbear must refuse passwords too.
grep -q '^DROPBEAR_ARGS=.*-s' "$TARGET_DIR/etc/default/dropbear" ||
	fail "/etc/default/dropbear does not pass -s (no password logins) to dropbear"

# systemctl preset-all has run: the box's units must be enabled.
wants=$TARGET_DIR/etc/systemd/system/multi-user.target.wants
for unit in onair-data.service onair-import.service onair.service dropbear.service; do
	[ -L "$wants/$unit" ] || fail "$unit is not enabled (no $wants/$unit)"
done
