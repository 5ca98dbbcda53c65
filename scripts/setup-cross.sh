#!/usr/bin/env bash
# Prepare a Debian bookworm x86_64 machine to cross-build onair for aarch64
# (Raspberry Pi 4/5) and to run its aarch64 tests under qemu-user.
#
# Idempotent: a re-run on a prepared machine only checks and returns.
# Runs as root (CI) or as a user with sudo. Safe for the native build: it
# refuses to continue if apt would remove any package (the amd64 GStreamer dev
# packages in particular must stay).
#
# What it sets up (the paths are fixed, .cargo/config.toml refers to them):
#   * host tools:  gcc-aarch64-linux-gnu, libc6-dev-arm64-cross, qemu-user-static
#                  (only the static qemu binary is used; binfmt is NOT required)
#   * dpkg foreign architecture arm64, and via multiarch the arm64 GStreamer
#     core dev files, runtime libraries and plugins (base/good/bad/ugly)
#   * $CROSS_ROOT (/opt/onair-cross/aarch64-linux-gnu): arm64 packages that can
#     not be co-installed with their amd64 counterparts (they are not
#     Multi-Arch: same), unpacked with dpkg-deb -x:
#       - libgstreamer-plugins-base1.0-dev:arm64  (.pc files, .so links, headers)
#       - gstreamer1.0-tools:arm64                (gst-launch-1.0 for smoke tests)
#     Kept outside the clone so that `cargo clean` cannot break the build and
#     every clone/worktree shares it; it belongs with the apt state it mirrors.
#   * rustup target aarch64-unknown-linux-gnu (for the invoking user)
set -euo pipefail

SCRIPT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
REPO_ROOT=$(cd "$SCRIPT_DIR/.." && pwd)

RUST_TARGET=aarch64-unknown-linux-gnu
DEB_ARCH=arm64
MULTIARCH=aarch64-linux-gnu
# Must match PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu in .cargo/config.toml.
CROSS_ROOT=/opt/onair-cross/$MULTIARCH
STAMP=$CROSS_ROOT/.onair-cross-stamp

# Host (amd64) packages. Arch-qualified: once arm64 is enabled, some of them
# (libc6-dev, pkg-config) also get installed as :arm64 dependencies.
HOST_PKGS=(
    gcc:amd64 libc6-dev:amd64 pkg-config:amd64 file:amd64   # native part (build scripts)
    gcc-aarch64-linux-gnu:amd64 libc6-dev-arm64-cross binutils-aarch64-linux-gnu:amd64
    qemu-user-static:amd64
)
# arm64 packages that co-install with the amd64 ones (Multi-Arch: same).
ARM64_PKGS=(
    libgstreamer1.0-dev:arm64                # gstreamer-1.0/-base-1.0 .pc, glib/unwind/dw dev deps
    liborc-0.4-dev:arm64                     # Requires.private of gstreamer-video-1.0
    libgstreamer-plugins-base1.0-0:arm64     # libgstvideo/libgstapp runtime
    gstreamer1.0-plugins-base:arm64          # videotestsrc videoconvert appsrc appsink
    gstreamer1.0-plugins-good:arm64          # flvmux rtph264pay ...
    gstreamer1.0-plugins-bad:arm64           # h264parse rtmp2sink ...
    gstreamer1.0-plugins-ugly:arm64          # x264enc
)
# arm64 packages that conflict with their amd64 counterpart: unpacked into
# $CROSS_ROOT instead. Format: <package>=<installed arm64 package whose version it must match>
EXTRACT_PKGS=(
    libgstreamer-plugins-base1.0-dev=libgstreamer-plugins-base1.0-0
    gstreamer1.0-tools=libgstreamer1.0-0
)

log()  { printf '[setup-cross] %s\n' "$*"; }
die()  { printf '[setup-cross] ERROR: %s\n' "$*" >&2; exit 1; }
t0=$SECONDS
cur_step="" step_start=$SECONDS
# Print the duration of the previous step, then the title of the next one.
step() {
    [ -z "$cur_step" ] || log "   ... $((SECONDS - step_start))s"
    cur_step=$*; step_start=$SECONDS
    [ -z "$cur_step" ] || log "== $cur_step"
}
tmp=""
trap 'log "FAILED: command \"$BASH_COMMAND\" at line $LINENO"' ERR
trap '[ -z "$tmp" ] || rm -rf "$tmp"' EXIT

# ---------------------------------------------------------------- preflight
# Root is only needed when something has to change (a prepared machine can be
# checked by any user).
as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    elif command -v sudo >/dev/null 2>&1; then
        log "sudo $*"
        sudo -- "$@"
    else
        die "need root for '$*': run as root, or as a user with sudo (neither is the case)"
    fi
}
apt_get() {
    as_root env DEBIAN_FRONTEND=noninteractive apt-get -q -o DPkg::Lock::Timeout=600 "$@"
}

[ -r /etc/os-release ] || die "/etc/os-release missing: this script supports Debian bookworm only"
. /etc/os-release
if [ "${ID:-}" != debian ] || [ "${VERSION_CODENAME:-}" != bookworm ]; then
    if [ "${ONAIR_CROSS_ANY_DISTRO:-0}" = 1 ]; then
        log "WARNING: ${PRETTY_NAME:-unknown distro} is not Debian bookworm; continuing (ONAIR_CROSS_ANY_DISTRO=1)"
    else
        die "expects Debian bookworm, found '${PRETTY_NAME:-unknown}' (set ONAIR_CROSS_ANY_DISTRO=1 to try anyway)"
    fi
fi
command -v dpkg >/dev/null || die "dpkg not found"
[ "$(dpkg --print-architecture)" = amd64 ] || die "host architecture must be amd64, is $(dpkg --print-architecture)"
grep -q "$CROSS_ROOT/" "$REPO_ROOT/.cargo/config.toml" 2>/dev/null \
    || die "$REPO_ROOT/.cargo/config.toml does not refer to $CROSS_ROOT; script and config are out of sync"

# Packages not installed (or half-installed) among the arguments.
missing_pkgs() {
    local p st
    for p in "$@"; do
        st=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        [ "$st" = "ii " ] || echo "$p"
    done
}
pkg_version() { dpkg-query -W -f='${Version}' "$1" 2>/dev/null || true; }

# Expected content of the stamp: every extracted package with its version.
expected_stamp() {
    local e pkg dep v
    for e in "${EXTRACT_PKGS[@]}"; do
        pkg=${e%%=*}; dep=${e#*=}
        v=$(pkg_version "$dep:$DEB_ARCH")
        [ -n "$v" ] || return 1
        echo "$pkg:$DEB_ARCH=$v"
    done
}

rust_target_installed() {
    if command -v rustup >/dev/null 2>&1; then
        grep -qx "$RUST_TARGET" <<<"$(cd "$REPO_ROOT" && rustup target list --installed)"
    else
        [ -d "$(rustc --print sysroot)/lib/rustlib/$RUST_TARGET/lib" ]
    fi
}

# ---------------------------------------------------------------- fast path
step "checking current state"
command -v rustc >/dev/null 2>&1 || die "rustc not found in PATH (install Rust with rustup first)"
have_arch=0
grep -qx "$DEB_ARCH" <<<"$(dpkg --print-foreign-architectures)" && have_arch=1
missing=""
if [ $have_arch = 1 ]; then
    missing=$(missing_pkgs "${HOST_PKGS[@]}" "${ARM64_PKGS[@]}")
else
    missing="(arm64 architecture not enabled)"
fi
stamp_ok=0
if want=$(expected_stamp) && [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    stamp_ok=1
fi
rust_ok=0
rust_target_installed && rust_ok=1

if [ -z "$missing" ] && [ $stamp_ok = 1 ] && [ $rust_ok = 1 ]; then
    step ""
    log "everything already in place (packages, $CROSS_ROOT, rust target $RUST_TARGET)"
    log "total $((SECONDS - t0))s"
    exit 0
fi

# ---------------------------------------------------------------- apt
if [ -n "$missing" ]; then
    log "to install: $(echo $missing)"
    # Record which native GStreamer dev packages are present, to verify afterwards.
    native_dev_before=$(dpkg-query -W -f='${db:Status-Abbrev} ${binary:Package}\n' \
        libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev libgstreamer-plugins-bad1.0-dev 2>/dev/null \
        | awk '$1=="ii"{print $2}' || true)

    if [ $have_arch = 0 ]; then
        step "dpkg --add-architecture $DEB_ARCH"
        as_root dpkg --add-architecture "$DEB_ARCH"
    fi

    step "apt-get update"
    apt_get update

    step "apt-get install (dry run, checking that nothing gets removed)"
    sim=$(apt_get install -s --no-install-recommends "${HOST_PKGS[@]}" "${ARM64_PKGS[@]}" 2>&1) \
        || { printf '%s\n' "$sim" >&2; die "apt cannot resolve the package set (see above)"; }
    if grep -q '^Remv ' <<<"$sim"; then
        grep '^Remv ' <<<"$sim" >&2
        die "apt would REMOVE the packages above; refusing (the native amd64 build needs them)"
    fi
    upgrades=$(awk -v a=":$DEB_ARCH" '/^Inst / && $3 ~ /^\[/ && index($2, a) == 0 {print $2}' <<<"$sim")
    if [ -n "$upgrades" ]; then
        log "note: amd64 packages upgraded to match their arm64 twins (Multi-Arch: same needs equal versions):"
        log "  $(echo $upgrades)"
    fi
    log "$(grep -E '^[0-9]+ upgraded' <<<"$sim" || true)"

    step "apt-get install"
    apt_get install -y --no-install-recommends "${HOST_PKGS[@]}" "${ARM64_PKGS[@]}"

    still=$(missing_pkgs "${HOST_PKGS[@]}" "${ARM64_PKGS[@]}")
    [ -z "$still" ] || die "packages still not installed after apt-get: $(echo $still)"
    for p in $native_dev_before; do
        [ -z "$(missing_pkgs "$p")" ] || die "native package $p was installed before and is gone now"
    done
fi

# ---------------------------------------------------------------- extracted packages
want=$(expected_stamp) || die "cannot determine versions of the arm64 runtime packages (${EXTRACT_PKGS[*]})"
if [ -f "$STAMP" ] && [ "$(cat "$STAMP")" = "$want" ]; then
    log "$CROSS_ROOT is up to date"
else
    step "unpacking non-co-installable arm64 packages into $CROSS_ROOT"
    tmp=$(mktemp -d)
    chmod 755 "$tmp"
    stage=$tmp/root
    mkdir -p "$stage"
    for e in "${EXTRACT_PKGS[@]}"; do
        pkg=${e%%=*}; dep=${e#*=}
        v=$(pkg_version "$dep:$DEB_ARCH")
        log "downloading $pkg:$DEB_ARCH=$v (must equal installed $dep:$DEB_ARCH)"
        # _apt cannot write into a root-owned mktemp dir; download unsandboxed.
        (cd "$tmp" && apt_get -o APT::Sandbox::User=root download "$pkg:$DEB_ARCH=$v") \
            || die "apt-get download $pkg:$DEB_ARCH=$v failed (is that version still in the archive? run 'apt-get update' and re-run)"
        deb=$(ls "$tmp"/"${pkg}"_*_"$DEB_ARCH".deb)
        dpkg-deb -x "$deb" "$stage"
    done

    libdir=$stage/usr/lib/$MULTIARCH
    # .pc files: prefix=/usr -> $CROSS_ROOT/usr, so libdir/includedir point at
    # the unpacked files and not at the host's /usr.
    for pc in "$libdir"/pkgconfig/*.pc; do
        grep -qx 'prefix=/usr' "$pc" || die "unexpected prefix in $pc"
        sed -i "s|^prefix=/usr\$|prefix=$CROSS_ROOT/usr|" "$pc"
    done
    # Development symlinks (libgstvideo-1.0.so -> libgstvideo-1.0.so.0) are
    # relative; the real libraries are installed by apt in /usr/lib/$MULTIARCH.
    for l in "$libdir"/*.so; do
        [ -L "$l" ] || continue
        t=$(readlink "$l")
        case $t in /*) ;; *) t=/usr/lib/$MULTIARCH/$t ;; esac
        [ -e "$t" ] || die "$(basename "$l") -> $t: target missing (arm64 runtime package not installed?)"
        ln -sfn "$t" "$l"
    done
    printf '%s\n' "$want" > "$stage/.onair-cross-stamp"

    as_root mkdir -p "$(dirname "$CROSS_ROOT")"
    as_root rm -rf "$CROSS_ROOT.old"
    [ -e "$CROSS_ROOT" ] && as_root mv "$CROSS_ROOT" "$CROSS_ROOT.old"
    as_root cp -a "$stage" "$CROSS_ROOT"
    as_root chown -R 0:0 "$CROSS_ROOT"
    as_root rm -rf "$CROSS_ROOT.old"
fi

# ---------------------------------------------------------------- rust target
if ! rust_target_installed; then
    step "rustup target add $RUST_TARGET"
    command -v rustup >/dev/null 2>&1 \
        || die "rustup not found and the Rust std for $RUST_TARGET is missing; install it (rustup target add $RUST_TARGET)"
    (cd "$REPO_ROOT" && rustup target add "$RUST_TARGET")
fi

# ---------------------------------------------------------------- verify
step "verifying"
command -v aarch64-linux-gnu-gcc >/dev/null || die "aarch64-linux-gnu-gcc not in PATH"
command -v qemu-aarch64-static >/dev/null || die "qemu-aarch64-static not in PATH"
[ -e /lib/ld-linux-aarch64.so.1 ] || die "/lib/ld-linux-aarch64.so.1 missing (libc6:arm64 not installed?)"
pc_libdir=$(sed -n 's/^PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu *= *"\(.*\)"/\1/p' "$REPO_ROOT/.cargo/config.toml")
[ -n "$pc_libdir" ] || die "PKG_CONFIG_LIBDIR_aarch64_unknown_linux_gnu not found in .cargo/config.toml"
libs=$(env -u PKG_CONFIG_PATH -u PKG_CONFIG_SYSROOT_DIR PKG_CONFIG_LIBDIR="$pc_libdir" \
    pkg-config --libs gstreamer-1.0 gstreamer-base-1.0 gstreamer-app-1.0 gstreamer-video-1.0) \
    || die "pkg-config cannot resolve the arm64 GStreamer libraries with PKG_CONFIG_LIBDIR=$pc_libdir"
case $libs in *x86_64*) die "pkg-config returned host paths for the arm64 target: $libs" ;; esac
log "arm64 pkg-config --libs: $libs"
# The native build must still find the amd64 GStreamer (when it was there).
if [ -e /usr/lib/x86_64-linux-gnu/pkgconfig/gstreamer-video-1.0.pc ]; then
    pkg-config --exists gstreamer-video-1.0 || die "native pkg-config no longer finds gstreamer-video-1.0"
fi
log "$(aarch64-linux-gnu-gcc --version | head -1)"
log "$(qemu-aarch64-static --version | head -1)"
step ""
log "setup complete in $((SECONDS - t0))s"
