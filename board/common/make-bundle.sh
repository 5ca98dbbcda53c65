#!/bin/sh
# Makes a signed RAUC update bundle (verity format) from a board's images.
#
#   board/common/make-bundle.sh --compatible C --version V --cert FILE --key FILE_OR_PKCS11_URI
#       [--keyring FILE] [--rauc PROGRAM] [--mksquashfs-args ARGS] OUTPUT.raucb CLASS=IMAGE...
#
# CLASS is the slot class the image goes to (rootfs=rootfs.ext4, boot=boot.vfat); C must be
# the box's `compatible` (onair-<board> in its /etc/rauc/system.conf) and V the version the
# image carries in /etc/onair/build-info. The images are hard-linked into a temporary
# directory beside OUTPUT (copied where that is not possible), next to the manifest.
# scripts/build-image.sh runs it after a build; the emulated box's update check runs it
# with its own images. --keyring checks the signature right after signing.

set -eu

COMPATIBLE="" VERSION="" CERT="" KEY="" KEYRING="" RAUC=rauc MKSQUASHFS_ARGS=""
die() {
	echo "make-bundle: $*" >&2
	exit 1
}
while [ $# -gt 0 ]; do
	case $1 in
	--compatible) COMPATIBLE=$2 && shift 2 ;;
	--version) VERSION=$2 && shift 2 ;;
	--cert) CERT=$2 && shift 2 ;;
	--key) KEY=$2 && shift 2 ;;
	--keyring) KEYRING=$2 && shift 2 ;;
	--rauc) RAUC=$2 && shift 2 ;;
	--mksquashfs-args) MKSQUASHFS_ARGS=$2 && shift 2 ;;
	--) shift && break ;;
	-*) die "unknown option $1" ;;
	*) break ;;
	esac
done
[ $# -ge 2 ] || die "usage: $0 --compatible C --version V --cert FILE --key KEY OUTPUT.raucb CLASS=IMAGE..."
OUTPUT=$1
shift
for v in COMPATIBLE VERSION CERT KEY; do
	eval "[ -n \"\$$v\" ]" || die "--$(echo "$v" | tr 'A-Z' 'a-z') is required"
done
case $OUTPUT in
*.raucb) ;;
*) die "$OUTPUT: a bundle's name must end in .raucb" ;;
esac
[ -f "$CERT" ] || die "no certificate $CERT"
case $KEY in
pkcs11:*) ;;
*) [ -f "$KEY" ] || die "no key $KEY" ;;
esac
command -v "$RAUC" >/dev/null 2>&1 || die "$RAUC not found (Buildroot: make host-rauc; Debian: apt install rauc)"

content=$(mktemp -d "$(dirname "$OUTPUT")/.bundle.XXXXXX")
trap 'rm -rf "$content"' EXIT
{
	echo "[update]"
	echo "compatible=$COMPATIBLE"
	echo "version=$VERSION"
	echo
	echo "[bundle]"
	echo "format=verity"
} >"$content/manifest.raucm"
for spec in "$@"; do
	class=${spec%%=*}
	image=${spec#*=}
	[ "$class" != "$spec" ] && [ -n "$class" ] || die "$spec: give images as CLASS=FILE (rootfs=rootfs.ext4)"
	[ -f "$image" ] || die "no image $image"
	name=$(basename "$image")
	ln "$image" "$content/$name" 2>/dev/null || cp "$image" "$content/$name"
	printf '\n[image.%s]\nfilename=%s\n' "$class" "$name" >>"$content/manifest.raucm"
done

rm -f "$OUTPUT"
set -- bundle --cert="$CERT" --key="$KEY"
[ -z "$KEYRING" ] || set -- "$@" --keyring="$KEYRING"
[ -z "$MKSQUASHFS_ARGS" ] || set -- "$@" --mksquashfs-args="$MKSQUASHFS_ARGS"
"$RAUC" "$@" "$content" "$OUTPUT" >&2 || die "rauc bundle failed"
echo "make-bundle: $OUTPUT ($COMPATIBLE, version $VERSION, $(du -h "$OUTPUT" | cut -f1))" >&2
