#!/usr/bin/env bash
# Benchmark: what ORC saves on the box's capture conversions. GStreamer's videoconvert,
# videoscale and audioconvert run their inner loops as ORC programs, compiled at run time to
# SIMD code; ORC_CODE=backup makes them run the plain C fallbacks instead, which is what a
# GStreamer built without ORC runs (Buildroot's, before the defconfigs selected
# BR2_PACKAGE_ORC). Same pipelines, both ways, on this machine's Debian GStreamer:
#   video: an HDMI bridge's picture (UYVY 1920x1080, one frame repeated, so the source costs
#          nothing) -> videoconvert -> videoscale (with borders) -> I420 1280x720, as the
#          daemon's capture chain does (src/media/source.rs), FRAMES frames as fast as they go;
#   audio: the TC358743's I2S card's format (S32LE 48 kHz stereo, from memory) -> audioconvert
#          -> S16LE, SECONDS of sound.
# Prints the CPU time (user + system) of each run, the median of RUNS, and what that is per
# frame and as a share of one core at 30 fps.
#   scripts/bench-orc.sh [RUNS] [FRAMES] [SECONDS]
set -euo pipefail

runs="${1:-5}"
frames="${2:-300}"
seconds="${3:-600}"
command -v gst-launch-1.0 >/dev/null || { echo "bench-orc: gst-launch-1.0 is missing (scripts/setup.sh)" >&2; exit 2; }

# video N: the video pipeline for N frames (N=1 measures GStreamer's start-up, taken off).
video() {
    echo videotestsrc num-buffers=1 pattern=smpte \
        ! video/x-raw,format=UYVY,width=1920,height=1080,framerate=30/1 \
        ! imagefreeze num-buffers="$1" ! videoconvert ! videoscale add-borders=true \
        ! video/x-raw,width=1280,height=720,pixel-aspect-ratio=1/1,format=I420 \
        ! fakesink sync=false
}
# 1024-sample buffers of a 48 kHz tone, generated once and repeated (imagefreeze is for video:
# audiotestsrc's own cost is the same both ways and is measured apart and taken off).
audio_buffers=$((seconds * 48000 / 1024))
audio=(audiotestsrc num-buffers="$audio_buffers" samplesperbuffer=1024 wave=sine
    ! audio/x-raw,format=S32LE,rate=48000,channels=2,layout=interleaved
    ! audioconvert ! audio/x-raw,format=S16LE ! fakesink sync=false)
audio_source=(audiotestsrc num-buffers="$audio_buffers" samplesperbuffer=1024 wave=sine
    ! audio/x-raw,format=S32LE,rate=48000,channels=2,layout=interleaved
    ! fakesink sync=false)

# cpu VAR=VALUE... -- PIPELINE...: CPU seconds (user + system) of one gst-launch run.
cpu() {
    local env=()
    while [ "$1" != -- ]; do env+=("$1"); shift; done
    shift
    /usr/bin/time -f '%U %S' -o "$work/time" env "${env[@]}" gst-launch-1.0 -q "$@" >/dev/null 2>&1 ||
        { echo "bench-orc: gst-launch-1.0 $* failed" >&2; exit 1; }
    cat "$work/time"
}
median() { sort -n | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

measure() { # LABEL ENV -- PIPELINE...
    local label=$1 all=() t
    shift
    for _ in $(seq "$runs"); do
        t=$(cpu "$@" | awk '{ printf "%.2f", $1 + $2 }')
        all+=("$t")
    done
    printf '%s\n' "${all[@]}" | median >"$work/$label"
    echo "  $label: median $(cat "$work/$label") s CPU (runs: ${all[*]})"
}

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
echo "GStreamer $(gst-launch-1.0 --gst-version | awk '{ print $NF }'), ORC $(pkg-config --modversion orc-0.4 2>/dev/null || echo '?'), $(nproc) CPUs ($(sed -n 's/^model name[[:space:]]*: //p' /proc/cpuinfo | head -n 1)), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "video: $frames frames UYVY 1920x1080 -> I420 1280x720 (videoconvert, videoscale), $runs runs each; start-up (1 frame) taken off"
# shellcheck disable=SC2046 # the pipeline's words
{
    measure video-start-orc ORC_CODE= -- $(video 1)
    measure video-start-backup ORC_CODE=backup -- $(video 1)
    measure video-orc ORC_CODE= -- $(video "$frames")
    measure video-backup ORC_CODE=backup -- $(video "$frames")
}
echo "audio: ${seconds} s S32LE 48 kHz stereo -> S16LE (audioconvert), $runs runs each; the source alone taken off"
measure audio-source-orc ORC_CODE= -- "${audio_source[@]}"
measure audio-source-backup ORC_CODE=backup -- "${audio_source[@]}"
measure audio-orc ORC_CODE= -- "${audio[@]}"
measure audio-backup ORC_CODE=backup -- "${audio[@]}"

r() { cat "$work/$1"; }
awk -v frames="$frames" -v secs="$seconds" \
    -v vo="$(r video-orc)" -v vb="$(r video-backup)" -v vso="$(r video-start-orc)" -v vsb="$(r video-start-backup)" \
    -v ao="$(r audio-orc)" -v ab="$(r audio-backup)" -v aso="$(r audio-source-orc)" -v asb="$(r audio-source-backup)" 'BEGIN {
    o = (vo - vso) / (frames - 1); b = (vb - vsb) / (frames - 1)
    printf "RESULT video: ORC %.2f ms/frame (%.1f %% of a core at 30 fps), C fallback %.2f ms/frame (%.1f %%): %.1fx\n",
        o * 1000, o * 30 * 100, b * 1000, b * 30 * 100, b / o
    a = ao - aso; c = ab - asb
    printf "RESULT audio: ORC %.3f %% of a core, C fallback %.3f %% (%.2f and %.2f s CPU for %d s of sound)\n",
        a / secs * 100, c / secs * 100, a, c, secs
}'
