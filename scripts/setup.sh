#!/usr/bin/env bash
# One-time set-up of a Debian bookworm machine for building, demoing and testing onair:
# GStreamer (dev files and the plugins the pipelines use, audio included; gstreamer1.0-x has textoverlay, which
# draws the input-loss slate's text), the tools the tests drive
# (iproute2, nftables, sysctl, tc, curl, nginx with RTMP, ffprobe; /usr/bin/time for the
# benchmarks; genimage and friends for the image layout test), GStreamer's webrtcbin for the
# second test receiver (it sends TWCC feedback) and the Python virtualenv of the independent
# WHIP receiver (tests/peers).
# Idempotent: a second run only checks.
set -euo pipefail

repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo"

say() { printf '\033[1msetup:\033[0m %s\n' "$*"; }
die() { printf 'setup: error: %s\n' "$*" >&2; exit 1; }

if [ "$(id -u)" -eq 0 ]; then SUDO=""; elif command -v sudo >/dev/null; then SUDO="sudo"; else
  die "run as root or install sudo (apt-get needs root)"; fi

packages=(
  build-essential pkg-config ca-certificates curl
  libgstreamer1.0-dev libgstreamer-plugins-base1.0-dev
  gstreamer1.0-tools gstreamer1.0-plugins-base gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad gstreamer1.0-plugins-ugly gstreamer1.0-x
  gstreamer1.0-alsa  # alsasrc (audio.kind "alsa"); opusenc is in -base, voaacenc in -bad
  python3 python3-venv
  iproute2 nftables procps time
  nginx libnginx-mod-rtmp ffmpeg
  # tests/peers/webrtcbin_receiver.py: webrtcbin through PyGObject, its ICE (libnice), and
  # an H.264 decoder
  python3-gi gir1.2-gst-plugins-bad-1.0 gstreamer1.0-nice gstreamer1.0-libav
  # tests/image_tree.rs: the image's disk layout made by Debian's genimage from fake inputs
  # and read back (sfdisk, mtools, blkid), the package's source copy (make, rsync)
  genimage fdisk mtools dosfstools e2fsprogs util-linux make rsync
  busybox  # tests/import_card.rs runs the first-boot import with the image's shell tools
  # tests/recording.rs: a disk that stalls, as a FUSE file system (tests/peers/stall_fs.py,
  # run with the system Python; libfuse2 comes with it)
  python3-fusepy
)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  say "installing ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  say "Debian packages present"
fi
# Debian starts nginx on install; the tests run their own instances on loopback ports.
if command -v systemctl >/dev/null && systemctl is-active --quiet nginx 2>/dev/null; then
  $SUDO systemctl stop nginx || true
fi

command -v cargo >/dev/null || die "cargo not found: install Rust ≥ 1.92 with rustup (Debian's rustc is too old)"
rustc_minor=$(rustc --version | sed -E 's/^rustc 1\.([0-9]+).*/\1/')
[ "$rustc_minor" -ge 92 ] || die "rustc $(rustc --version) is too old: gstreamer-rs 0.25 needs ≥ 1.92"

for element in videotestsrc x264enc h264parse appsink rtmp2sink flvmux webrtcbin nicesrc avdec_h264; do
  gst-inspect-1.0 "$element" >/dev/null 2>&1 || die "GStreamer element $element is missing"
done

if [ ! -x .venv/bin/python ]; then
  say "creating .venv for the test receiver"
  python3 -m venv .venv
fi
if ! .venv/bin/python -c 'import aiortc, aiohttp, av' 2>/dev/null \
   || ! cmp -s tests/peers/requirements.txt .venv/.requirements 2>/dev/null; then
  say "installing the receiver's Python packages (PyPI)"
  .venv/bin/pip install -q --disable-pip-version-check -r tests/peers/requirements.txt
  cp tests/peers/requirements.txt .venv/.requirements
else
  say "receiver virtualenv up to date"
fi
say "ready"
