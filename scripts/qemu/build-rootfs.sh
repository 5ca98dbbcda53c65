#!/usr/bin/env bash
# Build (or reuse) the aarch64 root file system of the qemu boot test from Debian's arm64
# packages, with the box's rootfs overlay and the cross-built daemon in it.
#
#   scripts/qemu/build-rootfs.sh --bin PATH/TO/aarch64/onair --cache DIR
#
# Two stages, each cached in DIR under a key computed from its inputs:
#   1. debian-<key1>.tar   mmdebstrap --arch=arm64 bookworm, minbase + the packages in
#                          scripts/qemu/debian-packages.txt (kernel and initramfs included).
#                          key1 = suite, mirrors, package list, the stage-1 code of this
#                          script, scripts/qemu/initramfs-hook. Slow (minutes:
#                          the packages' maintainer scripts run under qemu-user via binfmt_misc).
#   2. image-<key2>/       rootfs.ext4 (read-only root, label onair-root, fixed UUID), vmlinuz,
#                          initrd.img, cmdline. key2 = key1 + the overlays (names, modes,
#                          content) + the onair binary + this script. Fast (~30 s), and
#                          needs no emulation.
# Stage 2 does for Debian what Buildroot does for the qemu-aarch64 image: the overlays
# board/common/rootfs-overlay then board/qemu-aarch64/rootfs-overlay (copied with Buildroot's
# rsync options), /usr/bin/onair, the post-build steps (/data, ~root/.ssh -> /data/ssh/root-keys,
# the clock's floor /usr/lib/clock-epoch), `systemctl preset` of the units 50-onair.preset
# names (enable and disable), the post-fakeroot password check, and a read-only root with
# tmpfs on /tmp and /var (Buildroot: BR2_INIT_SYSTEMD_VAR_FACTORY).
#
# Prints progress on stderr and, last, on stdout: IMAGE_DIR=<DIR/image-key2>.
# Runs as root (mmdebstrap --mode=root, device nodes, file ownership). Old cache entries
# of the same kind are deleted when a new one is made (an image is ~1 GB).
# Environment: ONAIR_QEMU_MIRROR (default http://deb.debian.org/debian),
#   ONAIR_QEMU_SECURITY_MIRROR (default http://deb.debian.org/debian-security),
#   ONAIR_QEMU_REBUILD=1 (ignore both caches).
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/../.." && pwd)

SUITE=bookworm
MIRROR=${ONAIR_QEMU_MIRROR:-http://deb.debian.org/debian}
SECURITY_MIRROR=${ONAIR_QEMU_SECURITY_MIRROR:-http://deb.debian.org/debian-security}
PACKAGES_FILE=$SCRIPT_DIR/debian-packages.txt
OVERLAYS=("$REPO_ROOT/board/common/rootfs-overlay" "$REPO_ROOT/board/qemu-aarch64/rootfs-overlay")
# The root file system's UUID, named on the kernel command line (root=UUID=...).
ROOT_UUID=6f6e6169-0000-4000-8000-000000000002
ROOT_LABEL=onair-root

log() { printf '[build-rootfs] %s\n' "$*" >&2; }
die() { printf '[build-rootfs] ERROR: %s\n' "$*" >&2; exit 1; }

BIN="" CACHE="" STAGE1_ONLY=0
while [ $# -gt 0 ]; do
    case $1 in
    --bin) BIN=$2; shift 2 ;;
    --cache) CACHE=$2; shift 2 ;;
    # Only the Debian tarball (no binary needed): the test command builds it while cargo
    # compiles, since neither waits for the other.
    --stage1-only) STAGE1_ONLY=1; shift ;;
    *) die "unknown argument $1 (usage: $0 --bin ONAIR_AARCH64_BINARY --cache DIR | --stage1-only --cache DIR)" ;;
    esac
done
[ -n "$CACHE" ] || die "usage: $0 --bin ONAIR_AARCH64_BINARY --cache DIR | --stage1-only --cache DIR"
if [ $STAGE1_ONLY = 0 ]; then
    [ -n "$BIN" ] || die "usage: $0 --bin ONAIR_AARCH64_BINARY --cache DIR"
    [ -f "$BIN" ] || die "no such binary: $BIN"
fi
[ "$(id -u)" -eq 0 ] || die "must run as root (mmdebstrap --mode=root, device nodes, ownership)"
for tool in mmdebstrap mke2fs rsync systemctl systemd-sysusers sha256sum openssl; do
    command -v "$tool" >/dev/null || die "$tool not found (scripts/qemu-boot-test.sh installs the prerequisites)"
done
mkdir -p "$CACHE"
CACHE=$(cd "$CACHE" && pwd)

work=""
binfmt_registered=0
# Called by the EXIT trap.
# shellcheck disable=SC2317
cleanup() {
    [ -z "$work" ] || rm -rf "$work"
    if [ $binfmt_registered = 1 ]; then
        echo -1 >/proc/sys/fs/binfmt_misc/qemu-aarch64 2>/dev/null &&
            log "unregistered the qemu-aarch64 binfmt_misc entry this script had registered"
    fi
}
trap cleanup EXIT

packages() { sed -e 's/#.*//' -e '/^[[:space:]]*$/d' "$PACKAGES_FILE" | tr -s ' \t' '\n' | sed '/^$/d'; }
sources() {
    echo "deb $MIRROR $SUITE main"
    echo "deb $MIRROR $SUITE-updates main"
    echo "deb $SECURITY_MIRROR $SUITE-security main"
}

# ------------------------------------------------------------------ stage 1: Debian
key1=$( {
    # this script's stage-1 code (from the stage 1 heading to the stage 2 heading)
    sed -n '/^# -* stage 1:/,/^# -* stage 2:/p' "${BASH_SOURCE[0]}"
    cat "$SCRIPT_DIR/initramfs-hook"
    sources
    packages | sort
} | sha256sum | cut -c1-16)
tarball=$CACHE/debian-$key1.tar

# mmdebstrap runs arm64 maintainer scripts in the chroot: the kernel must hand aarch64 ELF
# files to qemu-aarch64-static (binfmt_misc). Register the entry Debian's qemu-user-static
# ships if it is missing, and remove it again at exit (the machine is left as found).
ensure_binfmt() {
    local bm=/proc/sys/fs/binfmt_misc conf=/usr/lib/binfmt.d/qemu-aarch64.conf
    if [ ! -e $bm/register ]; then
        mount -t binfmt_misc binfmt_misc $bm 2>/dev/null ||
            die "cannot mount binfmt_misc on $bm (in a container? needed by mmdebstrap --arch=arm64)"
    fi
    if [ -e $bm/qemu-aarch64 ]; then
        grep -qx enabled $bm/qemu-aarch64 || die "binfmt_misc entry qemu-aarch64 exists but is disabled"
        return 0
    fi
    [ -f $conf ] || die "$conf missing (package qemu-user-static)"
    # Flag F (fix binary): the kernel opens the interpreter now, so it works in the chroot.
    grep -q ':OPF$\|:F$\|:[A-Z]*F[A-Z]*$' $conf || die "$conf has no F flag; the chroot could not find the interpreter"
    tr -d '\n' <$conf >$bm/register ||
        die "cannot register qemu-aarch64 in $bm (needs root outside a restricted container)"
    binfmt_registered=1
    log "registered binfmt_misc entry qemu-aarch64 (from $conf) for the build"
}

if [ "${ONAIR_QEMU_REBUILD:-0}" != 1 ] && [ -s "$tarball" ]; then
    log "stage 1: reusing $(basename "$tarball") ($(du -h "$tarball" | cut -f1))"
else
    t=$SECONDS
    log "stage 1: mmdebstrap $SUITE arm64 ($(packages | wc -l) packages + minbase) -> $(basename "$tarball")"
    ensure_binfmt
    work=$(mktemp -d "$CACHE/.stage1.XXXXXX")
    mapfile -t src < <(sources)
    # The initramfs: under qemu-user, mkinitramfs with Debian's MODULES=most takes minutes,
    # and dpkg triggers run it several times. So update-initramfs is diverted to a no-op
    # while the packages install, and run once at the end with MODULES=list and only what
    # qemu's virt machine needs to mount the root (virtio PCI + block, ext4).
    # No Recommends (as Buildroot: only what is asked for). The last hook empties the apt
    # lists and caches so the tarball holds only the system.
    # The hooks' $1 (the chroot) is expanded by mmdebstrap, hence the single quotes.
    # shellcheck disable=SC2016
    # Bounded: a stalled mirror must not hang CI (a cold build takes ~7 min on 2 cores).
    timeout 2400 mmdebstrap --mode=root --arch=arm64 --variant=minbase \
        --include="$(packages | paste -sd, -)" \
        --aptopt='APT::Install-Recommends "false"' \
        --dpkgopt='path-exclude=/usr/share/doc/*' \
        --dpkgopt='path-include=/usr/share/doc/*/copyright' \
        --dpkgopt='path-exclude=/usr/share/man/*' \
        --dpkgopt='path-exclude=/usr/share/locale/*' \
        --essential-hook='chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs' \
        --essential-hook='printf "#!/bin/sh\n# diverted while mmdebstrap installs\nexit 0\n" >"$1/usr/sbin/update-initramfs" && chmod 755 "$1/usr/sbin/update-initramfs"' \
        --essential-hook='mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/etc/initramfs-tools/hooks"' \
        --essential-hook='echo MODULES=list >"$1/etc/initramfs-tools/conf.d/onair-qemu"' \
        --essential-hook="cp '$SCRIPT_DIR/initramfs-hook' \"\$1/etc/initramfs-tools/hooks/onair-qemu\" && chmod 755 \"\$1/etc/initramfs-tools/hooks/onair-qemu\"" \
        --customize-hook='rm -f "$1/usr/sbin/update-initramfs"' \
        --customize-hook='chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs' \
        --customize-hook='chroot "$1" update-initramfs -c -k all' \
        --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin' \
        "$SUITE" "$work/debian.tar" "${src[@]}" >"$work/mmdebstrap.log" 2>&1 || {
        tail -n 40 "$work/mmdebstrap.log" >&2
        die "mmdebstrap failed (last lines above)"
    }
    rm -f "$CACHE"/debian-*.tar
    mv "$work/debian.tar" "$tarball"
    rm -rf "$work"; work=""
    log "stage 1: done in $((SECONDS - t))s ($(du -h "$tarball" | cut -f1))"
fi

if [ $STAGE1_ONLY = 1 ]; then
    echo "STAGE1=$tarball"
    exit 0
fi

# ------------------------------------------------------------------ stage 2: the box
overlay_digest() {
    local o
    for o in "${OVERLAYS[@]}"; do
        (cd "$o" && find . -print0 | LC_ALL=C sort -z | while IFS= read -r -d '' f; do
            if [ -L "$f" ]; then
                printf 'L %s -> %s\n' "$f" "$(readlink "$f")"
            elif [ -f "$f" ]; then
                printf 'F %s %s %s\n' "$f" "$(stat -c %a "$f")" "$(sha256sum <"$f" | cut -c1-64)"
            else
                printf 'D %s %s\n' "$f" "$(stat -c %a "$f")"
            fi
        done)
    done
}
# A/B updates: the emulated box trusts a development signing pair made once in the cache;
# the update check (scripts/qemu/update-check.sh) signs its bundles with it.
UPDATE_KEYS=$CACHE/update-keys
if [ ! -s "$UPDATE_KEYS/cert.pem" ] || [ ! -s "$UPDATE_KEYS/key.pem" ]; then
    mkdir -p "$UPDATE_KEYS"
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
        -keyout "$UPDATE_KEYS/key.pem" -out "$UPDATE_KEYS/cert.pem" -days 3650 \
        -subj "/O=onair/CN=onair emulated box update signing (development)" 2>/dev/null ||
        die "openssl could not make the emulated box's update signing pair"
    log "made the emulated box's update signing pair in $UPDATE_KEYS"
fi
key2=$( {
    echo "$key1"
    overlay_digest
    sha256sum <"$BIN"
    sha256sum <"${BASH_SOURCE[0]}"
    sha256sum <"$SCRIPT_DIR/rauc-system.conf"
    sha256sum <"$UPDATE_KEYS/cert.pem"
} | sha256sum | cut -c1-16)
image=$CACHE/image-$key2

if [ "${ONAIR_QEMU_REBUILD:-0}" != 1 ] && [ -f "$image/done" ]; then
    log "stage 2: reusing $(basename "$image")"
    echo "IMAGE_DIR=$image"
    exit 0
fi

t=$SECONDS
log "stage 2: overlay + onair -> $(basename "$image")/rootfs.ext4"
work=$(mktemp -d "$CACHE/.stage2.XXXXXX")
root=$work/root
mkdir "$root"
tar -C "$root" --xattrs --xattrs-include='*' --numeric-owner -xpf "$tarball"

# The overlays, exactly as Buildroot copies them (support/scripts/... BR2_ROOTFS_OVERLAY).
# --keep-dirlinks: Debian's /lib, /bin, /sbin are links into /usr.
for o in "${OVERLAYS[@]}"; do
    rsync -a --ignore-times --keep-dirlinks --chmod=u=rwX,go=rX --exclude .empty --exclude '*~' \
        --no-owner --no-group "$o/" "$root/"
done
install -m 0755 -o 0 -g 0 "$BIN" "$root/usr/bin/onair"
# The groups of the overlay's sysusers.d (onair-status, the status socket's): made here,
# as Buildroot makes them at build time (ONAIR_USERS), since the root is read-only at boot.
systemd-sysusers --root="$root"

# board/common/post-build.sh, for OpenSSH instead of dropbear: /data is the data partition's
# mount point, root's ~/.ssh lives on it (onair-import writes authorized_keys there); the
# clock's floor.
# OpenSSH's host keys stay in /etc/ssh (made at package install time, read-only root).
mkdir -p "$root/data"
root_home="$root/root"
rm -rf "$root_home/.ssh"
ln -s /data/ssh/root-keys "$root_home/.ssh"
# The clock's floor, as post-build.sh: systemd starts the clock no earlier than the image's
# build date (mke2fs -d keeps the mtime).
touch "$root/usr/lib/clock-epoch"
{
    echo "board=qemu-aarch64 (Debian $SUITE rootfs, scripts/qemu/build-rootfs.sh)"
    echo "version=qemu-$key2"
    echo "debian=$key1"
    echo "onair_sha256=$(sha256sum <"$BIN" | cut -c1-64)"
} >"$root/etc/onair/build-info"
# board/common/post-build.sh's RAUC part, for the emulated box's disks.
install -D -m 0644 "$SCRIPT_DIR/rauc-system.conf" "$root/etc/rauc/system.conf"
install -D -m 0644 "$UPDATE_KEYS/cert.pem" "$root/etc/rauc/keyring.pem"

echo onair >"$root/etc/hostname"
printf '127.0.0.1\tlocalhost\n127.0.1.1\tonair\n::1\t\tlocalhost ip6-localhost ip6-loopback\n' >"$root/etc/hosts"
# Read-only root as on the box: the kernel mounts it "ro" and fstab does not remount it.
# Buildroot's image has tmpfs on /tmp and a tmpfs /var filled by systemd-tmpfiles; Debian
# does not use /var/lib etc. at run time here, so a tmpfs /var is the same.
cat >"$root/etc/fstab" <<'EOF'
# Written by scripts/qemu/build-rootfs.sh: the root stays read-only (as mounted by the
# kernel); writable state is in RAM or on /data (mounted by onair-data.service).
tmpfs /tmp tmpfs mode=1777,nosuid,nodev,size=64m 0 0
tmpfs /var tmpfs mode=0755,nosuid,nodev,size=64m 0 0
EOF
# An empty machine-id: systemd makes a new one at every boot on the read-only root, like
# on the box (the kernel command line also says systemd.firstboot=off: nothing prompts).
: >"$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"

# Enable and disable what 50-onair.preset says, when the rootfs has the unit (dropbear is not in
# this rootfs: Debian's OpenSSH ssh.service takes its place).
preset=$root/usr/lib/systemd/system-preset/50-onair.preset
[ -f "$preset" ] || die "overlay lacks usr/lib/systemd/system-preset/50-onair.preset"
enabled=() disabled=() skipped=()
while read -r verb unit; do
    case $verb in enable | disable) ;; *) continue ;; esac
    if [ -e "$root/usr/lib/systemd/system/$unit" ] || [ -e "$root/lib/systemd/system/$unit" ]; then
        # In file order, as preset-all has it: enabling systemd-networkd enables its
        # wait-online unit too (Also=), which a later line disables again.
        systemctl --root="$root" --quiet preset "$unit"
        if [ "$verb" = enable ]; then enabled+=("$unit"); else disabled+=("$unit"); fi
    else
        skipped+=("$unit")
    fi
done < <(sed 's/#.*//' "$preset")
log "stage 2: systemctl preset ${enabled[*]}; disabled ${disabled[*]:-none} (not in this rootfs: ${skipped[*]:-none})"
for unit in onair-data.service onair-clock.service onair-import.service onair.service ssh.service \
    systemd-networkd.service systemd-timesyncd.service; do
    [ -n "$(find "$root/etc/systemd/system" -name "$unit" -type l)" ] ||
        die "$unit is not enabled after systemctl preset"
done

# board/common/post-fakeroot.sh's rule: no account has a usable password, nor an empty one.
bad=$(awk -F: '$2 != "*" && substr($2, 1, 1) != "!" { printf " %s", $1 }' "$root/etc/shadow")
[ -z "$bad" ] || die "accounts with a password, or with none at all, in /etc/shadow:$bad"

# Kernel and initramfs for qemu -kernel/-initrd (Debian's arm64 vmlinuz is a gzipped Image,
# which qemu's loader unpacks).
kernels=("$root"/boot/vmlinuz-*)
{ [ ${#kernels[@]} = 1 ] && [ -f "${kernels[0]}" ]; } || die "expected one kernel in /boot, found: ${kernels[*]}"
kver=${kernels[0]##*/vmlinuz-}
[ -f "$root/boot/initrd.img-$kver" ] || die "no /boot/initrd.img-$kver (initramfs-tools did not run?)"
mkdir -p "$work/image"
cp "${kernels[0]}" "$work/image/vmlinuz"
cp "$root/boot/initrd.img-$kver" "$work/image/initrd.img"
echo "$kver" >"$work/image/kernel-version"
echo "root=UUID=$ROOT_UUID rootfstype=ext4 ro rootwait console=ttyAMA0 systemd.firstboot=off panic=-1" \
    >"$work/image/cmdline"

# The ext4 image: the tree's size plus room for metadata; nothing is written to it later.
used_mb=$(du -sm --apparent-size "$root" | cut -f1)
size_mb=$((used_mb + used_mb / 4 + 64))
mke2fs -q -t ext4 -L "$ROOT_LABEL" -U "$ROOT_UUID" -m 0 -E root_owner=0:0 >/dev/null \
    -d "$root" "$work/image/rootfs.ext4" "${size_mb}M" ||
    die "mke2fs -d failed"
rm -rf "$root"

rm -rf "$CACHE"/image-*
mv "$work/image" "$image"
: >"$image/done"
rm -rf "$work"; work=""
log "stage 2: done in $((SECONDS - t))s (rootfs.ext4 ${size_mb} MB, kernel $kver)"
echo "IMAGE_DIR=$image"
