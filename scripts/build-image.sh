#!/bin/sh
# Builds the onair firmware image with Buildroot.
#
#   scripts/build-image.sh [options] BOARD      BOARD: rpi4 | rpi5 | qemu-aarch64
#
# Checks the host tools Buildroot needs, fetches a pinned Buildroot release
# (or uses --buildroot DIR), configures it with this repository's
# br2-external tree (buildroot/) and the board's defconfig, builds in an
# output directory outside the Buildroot tree, and prints where sdcard.img is
# and where the signed update bundle made from the same build is
# (images/onair-BOARD-VERSION.raucb, for `onair update` on a box in the field).
#
# This needs the internet: Buildroot itself, the cross toolchain, the Linux
# kernel, every package's source and the daemon's crates are downloaded
# (a few GB on the first build, then cached in the download directory).
# Without internet: run it with --download-only where there is, copy the
# work directory over, and build. A first build takes one to several hours.
#
# Options:
#   --buildroot DIR  use this Buildroot source tree instead of downloading the
#                    pinned release (it should be the release pinned as BR_VERSION here)
#   --output DIR     Buildroot output directory (default: $ONAIR_BUILD_DIR/BOARD)
#   --reconfigure    load the board's defconfig again, dropping changes made
#                    with `make menuconfig` in the output directory
#   --signing-cert FILE, --signing-key FILE_OR_PKCS11_URI
#                    the pair that signs update bundles (env ONAIR_SIGNING_CERT,
#                    ONAIR_SIGNING_KEY). Without them a DEVELOPMENT pair is made
#                    on the first build in $ONAIR_BUILD_DIR/keys/ and used, with a
#                    warning, on every build: boxes flashed with such an image
#                    take updates from anyone who has that directory
#   --keyring FILE   the certificates the box trusts for updates (env
#                    ONAIR_UPDATE_KEYRING; default: the signing certificate).
#                    With a production CA, give its certificate here and sign
#                    with a key it certified
#   --download-only  fetch everything the build needs and build nothing:
#                    Buildroot, every package's source (make source) and the
#                    daemon's crates (cargo vendor, into $BR2_DL_DIR/onair-crates);
#                    then copy $ONAIR_BUILD_DIR to a machine without internet
#                    and build there
#   -h, --help       this text
# Environment: ONAIR_BUILD_DIR (where the pinned Buildroot, the downloads and
# the output directories go; default ~/onair-build, outside the repository:
# a build writes gigabytes there while it runs), BR2_DL_DIR (download cache
# shared by the boards, default $ONAIR_BUILD_DIR/dl; it also holds the crates
# fetched by --download-only, onair-crates: see README, "Building the image").

set -eu

BR_VERSION=2026.05.1
BR_URL=https://buildroot.org/downloads/buildroot-$BR_VERSION.tar.xz

REPO=$(cd "$(dirname "$0")/.." && pwd)
WORK=${ONAIR_BUILD_DIR:-${HOME:?}/onair-build}

usage() {
	sed -n '2,/^$/{s/^# \{0,1\}//;p}' "$0" | sed '$d'
	exit "${1:-0}"
}

die() {
	echo "build-image: $*" >&2
	exit 1
}

BUILDROOT=
OUTPUT=
RECONFIGURE=0
DOWNLOAD_ONLY=0
BOARD=
SIGNING_CERT=${ONAIR_SIGNING_CERT:-}
SIGNING_KEY=${ONAIR_SIGNING_KEY:-}
KEYRING=${ONAIR_UPDATE_KEYRING:-}
while [ $# -gt 0 ]; do
	case $1 in
	--buildroot)
		[ $# -ge 2 ] || die "--buildroot needs a directory"
		BUILDROOT=$2
		shift 2
		;;
	--output)
		[ $# -ge 2 ] || die "--output needs a directory"
		OUTPUT=$2
		shift 2
		;;
	--reconfigure)
		RECONFIGURE=1
		shift
		;;
	--download-only)
		DOWNLOAD_ONLY=1
		shift
		;;
	--signing-cert | --signing-key | --keyring)
		[ $# -ge 2 ] || die "$1 needs a file"
		case $1 in
		--signing-cert) SIGNING_CERT=$2 ;;
		--signing-key) SIGNING_KEY=$2 ;;
		--keyring) KEYRING=$2 ;;
		esac
		shift 2
		;;
	-h | --help) usage 0 ;;
	-*) die "unknown option $1 (see --help)" ;;
	*)
		[ -z "$BOARD" ] || die "one board at a time (see --help)"
		BOARD=$1
		shift
		;;
	esac
done

case $BOARD in
rpi4) DEFCONFIG=onair_rpi4_64_defconfig ;;
rpi5) DEFCONFIG=onair_rpi5_defconfig ;;
qemu-aarch64) DEFCONFIG=onair_qemu_aarch64_virt_defconfig ;;
"") usage 2 ;;
*) die "unknown board '$BOARD': rpi4, rpi5 or qemu-aarch64" ;;
esac
[ -f "$REPO/buildroot/configs/$DEFCONFIG" ] || die "missing $REPO/buildroot/configs/$DEFCONFIG"

# --- host prerequisites (Buildroot manual, "System requirements") ----------
missing=
for tool in which sed make gcc g++ diff bash patch gzip bzip2 perl tar cpio \
	unzip rsync file bc find awk wget git python3 xz; do
	command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
	echo "build-image: missing host tools:$missing" >&2
	echo "  On Debian/Ubuntu: sudo apt-get install build-essential bc bzip2 cpio debianutils diffutils file findutils gawk git gzip openssl patch perl python3 rsync tar unzip wget xz-utils" >&2
	exit 1
fi
if [ "$(id -u)" = 0 ]; then
	echo "build-image: warning: building as root is not needed and not advised" >&2
fi

OUTPUT=${OUTPUT:-$WORK/$BOARD}
export BR2_DL_DIR="${BR2_DL_DIR:-$WORK/dl}"
mkdir -p "$OUTPUT" "$BR2_DL_DIR"
OUTPUT=$(cd "$OUTPUT" && pwd)
case $OUTPUT/ in
"$REPO"/*)
	echo "build-image: note: $OUTPUT is inside the repository: keep it outside, or name it target-* (git and the package's copy of the source leave those out)" >&2
	;;
esac

avail_kb=$(df -Pk "$OUTPUT" | awk 'NR == 2 { print $4 }')
if [ "${avail_kb:-0}" -lt 20000000 ]; then
	echo "build-image: warning: less than 20 GB free under $OUTPUT; a full build needs about that much" >&2
fi

# --- Buildroot -------------------------------------------------------------
if [ -z "$BUILDROOT" ]; then
	BUILDROOT=$WORK/buildroot-$BR_VERSION
	if [ ! -f "$BUILDROOT/Makefile" ]; then
		tarball=$BR2_DL_DIR/buildroot-$BR_VERSION.tar.xz
		if [ ! -f "$tarball" ]; then
			echo "build-image: downloading Buildroot $BR_VERSION (needs the internet)"
			wget -O "$tarball.part" "$BR_URL" ||
				die "cannot download $BR_URL (no internet? use --buildroot DIR with a Buildroot $BR_VERSION tree)"
			wget -O "$tarball.sign" "$BR_URL.sign" ||
				die "cannot download $BR_URL.sign"
			# The .sign file is a PGP-signed list of the tarball's hashes:
			# the tarball's SHA-256 must be in it.
			have=$(sha256sum "$tarball.part" | awk '{ print $1 }')
			grep -qi "$have" "$tarball.sign" ||
				die "the SHA-256 of buildroot-$BR_VERSION.tar.xz ($have) is not in $BR_URL.sign"
			if command -v gpg >/dev/null 2>&1; then
				gpg --verify "$tarball.sign" 2>/dev/null ||
					echo "build-image: warning: could not verify the PGP signature of $BR_URL.sign (import the Buildroot release key to check it)" >&2
			fi
			mv "$tarball.part" "$tarball"
		fi
		rm -rf "$BUILDROOT.tmp"
		mkdir -p "$BUILDROOT.tmp"
		tar -xJf "$tarball" -C "$BUILDROOT.tmp" --strip-components=1
		mv "$BUILDROOT.tmp" "$BUILDROOT"
	fi
fi
[ -f "$BUILDROOT/Makefile" ] || die "$BUILDROOT is not a Buildroot source tree"
BUILDROOT=$(cd "$BUILDROOT" && pwd)
br_version=$(sed -n 's/^export BR2_VERSION := //p' "$BUILDROOT/Makefile")
if [ "$br_version" != "$BR_VERSION" ]; then
	echo "build-image: warning: $BUILDROOT is Buildroot $br_version, the defconfigs were written for $BR_VERSION" >&2
fi

# --- the update signing pair and the version ---------------------------------
# Bundles are signed with SIGNING_KEY; the box trusts KEYRING (installed as
# /etc/rauc/keyring.pem by post-build.sh) and refuses anything else.
if [ -z "$SIGNING_CERT" ] && [ -z "$SIGNING_KEY" ]; then
	SIGNING_CERT=$WORK/keys/development.cert.pem
	SIGNING_KEY=$WORK/keys/development.key.pem
	if [ ! -f "$SIGNING_CERT" ] || [ ! -f "$SIGNING_KEY" ]; then
		command -v openssl >/dev/null 2>&1 || die "openssl is needed to make the development signing pair"
		mkdir -p "$WORK/keys"
		chmod 0700 "$WORK/keys"
		# A self-signed certificate is its own keyring. Valid from now for 10 years
		# (the box checks it at the bundle's signing time: use-bundle-signing-time).
		openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes \
			-keyout "$SIGNING_KEY" -out "$SIGNING_CERT" -days 3650 \
			-subj "/O=onair/CN=onair development update signing $(hostname)" 2>/dev/null ||
			die "openssl could not make the development signing pair"
		chmod 0600 "$SIGNING_KEY"
		echo "build-image: made a development update signing pair in $WORK/keys/" >&2
	fi
	cat >&2 <<EOF
build-image: ************************************************************
build-image: WARNING: update bundles are signed with the DEVELOPMENT pair
build-image:   $SIGNING_CERT
build-image: Boxes flashed with this image install updates signed by
build-image: whoever has that key. For boxes in the field, build with
build-image: --signing-cert/--signing-key (or ONAIR_SIGNING_CERT/_KEY):
build-image: a production pair kept off this machine (a PKCS#11 URI works).
build-image: ************************************************************
EOF
fi
{ [ -n "$SIGNING_CERT" ] && [ -n "$SIGNING_KEY" ]; } ||
	die "give both --signing-cert and --signing-key (or neither, for the development pair)"
[ -f "$SIGNING_CERT" ] || die "no signing certificate $SIGNING_CERT"
case $SIGNING_KEY in
pkcs11:*) ;;
*) [ -f "$SIGNING_KEY" ] || die "no signing key $SIGNING_KEY" ;;
esac
KEYRING=${KEYRING:-$SIGNING_CERT}
[ -f "$KEYRING" ] || die "no keyring $KEYRING"
ONAIR_UPDATE_KEYRING=$(cd "$(dirname "$KEYRING")" && pwd)/$(basename "$KEYRING")
# The system's version: its build-info and its bundle's manifest say the same.
ONAIR_VERSION=${ONAIR_VERSION:-$(date -u +%Y.%m.%d.%H%M)-$(git -C "$REPO" describe --always --dirty 2>/dev/null || echo unknown)}
export ONAIR_UPDATE_KEYRING ONAIR_VERSION

# --- configure and build ---------------------------------------------------
brmake() {
	make -C "$BUILDROOT" O="$OUTPUT" "$@"
}

if [ "$RECONFIGURE" = 1 ] || [ ! -f "$OUTPUT/.config" ]; then
	brmake BR2_EXTERNAL="$REPO/buildroot" "$DEFCONFIG"
fi

if [ "$DOWNLOAD_ONLY" = 1 ]; then
	brmake source
	# A local package downloads nothing in `make source`: vendor the daemon's crates where
	# the package looks for them (buildroot/package/onair/onair.mk, ONAIR_CARGO_VENDOR).
	command -v cargo >/dev/null 2>&1 ||
		die "cargo is needed to fetch the daemon's crates (install Rust with rustup)"
	crates=$BR2_DL_DIR/onair-crates
	rm -rf "$crates.tmp"
	mkdir -p "$crates.tmp"
	(cd "$REPO" && cargo vendor --locked "$crates.tmp/vendor" >/dev/null) ||
		die "cargo vendor failed (no access to crates.io?)"
	cp "$REPO/Cargo.lock" "$crates.tmp/Cargo.lock"
	rm -rf "$crates"
	mv "$crates.tmp" "$crates"
	echo
	echo "build-image: everything the $BOARD build downloads is in $BR2_DL_DIR (crates: $crates)"
	echo "build-image: copy $WORK to the machine without internet (same path, or set ONAIR_BUILD_DIR) and run $0 $BOARD there"
	exit 0
fi
# The daemon's source is this working tree (site method local): Buildroot
# cannot see that it changed, so sync and rebuild it on every run.
if [ -d "$OUTPUT/build" ] && ls -d "$OUTPUT"/build/onair-* >/dev/null 2>&1; then
	brmake onair-rebuild
fi
brmake

image=$OUTPUT/images/sdcard.img
[ -f "$image" ] || die "the build finished but $image is missing"

# --- the update bundle -------------------------------------------------------
# The same system as a signed RAUC bundle (board/common/make-bundle.sh), made
# with Buildroot's host rauc. Pis: each slot's boot partition and root file
# system; qemu: the root file system (qemu loads the kernel itself).
brmake host-rauc
bundle=$OUTPUT/images/onair-$BOARD-$ONAIR_VERSION.raucb
case $BOARD in
qemu-aarch64) set -- rootfs="$OUTPUT/images/rootfs.ext4" ;;
*) set -- boot="$OUTPUT/images/boot.vfat" rootfs="$OUTPUT/images/rootfs.ext4" ;;
esac
PATH=$OUTPUT/host/bin:$OUTPUT/host/sbin:$PATH "$REPO/board/common/make-bundle.sh" \
	--compatible "onair-$BOARD" --version "$ONAIR_VERSION" \
	--cert "$SIGNING_CERT" --key "$SIGNING_KEY" --keyring "$ONAIR_UPDATE_KEYRING" \
	--rauc "$OUTPUT/host/bin/rauc" "$bundle" "$@" ||
	die "making the update bundle failed"

echo
echo "build-image: $BOARD image: $image"
echo "build-image: $BOARD update bundle (version $ONAIR_VERSION): $bundle"
echo "build-image: a box running an older image takes it with: scp $(basename "$bundle") root@BOX:/data/ && ssh root@BOX onair update /data/$(basename "$bundle")"
case $BOARD in
qemu-aarch64) echo "build-image: boot it with $OUTPUT/images/start-qemu.sh" ;;
*) echo "build-image: write it to an SD card with: sudo $REPO/scripts/flash.sh $image /dev/sdX" ;;
esac
