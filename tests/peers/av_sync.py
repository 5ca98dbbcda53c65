#!/usr/bin/env python3
"""Measures A/V sync in a recorded stream of onair's sync pattern (a white frame once a second
on black, a 1 kHz beep starting at the same instant): decodes the file with PyAV and prints one
JSON object: the codecs, audio format, each flash and beep onset (seconds on the file's own
timeline) and, for each flash, the offset of the nearest onset in milliseconds (positive: the
sound is late).

Usage: av_sync.py FILE
"""

from __future__ import annotations

import array
import json
import sys

import av

FLASH_LUMA = 128.0
DARK_LUMA = 64.0
ONSET_LEVEL = 3000  # about -21 dBFS
ONSET_QUIET_S = 0.2


def mean_luma(frame: av.VideoFrame) -> float:
    plane = frame.planes[0]
    data = memoryview(plane)
    total = count = 0
    for row in range(0, plane.height, max(1, plane.height // 16)):
        start = row * plane.line_size
        line = data[start:start + plane.width]
        total += sum(line[::4])
        count += len(line[::4])
    return total / count if count else -1.0


def first_channel(frame: av.AudioFrame) -> tuple[array.array, float]:
    """The first channel's samples and the onset level in their unit."""
    fmt = frame.format.name
    raw = bytes(frame.planes[0])
    step = 1 if frame.format.is_planar else len(frame.layout.channels)
    if fmt.startswith("flt"):
        return array.array("f", raw)[: frame.samples * step][::step], ONSET_LEVEL / 32768.0
    if fmt.startswith("s16"):
        return array.array("h", raw)[: frame.samples * step][::step], float(ONSET_LEVEL)
    raise SystemExit(f"unexpected audio sample format {fmt}")


def main() -> int:
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        return 2
    container = av.open(sys.argv[1])
    vstream = next((s for s in container.streams if s.type == "video"), None)
    astream = next((s for s in container.streams if s.type == "audio"), None)
    flashes: list[float] = []
    onsets: list[float] = []
    last_luma = 0.0
    quiet = 0
    rate = channels = None
    samples = 0
    streams = [s for s in (vstream, astream) if s is not None]
    for packet in container.demux(*streams):
        for frame in packet.decode():
            if frame.time is None:
                continue
            if isinstance(frame, av.VideoFrame):
                luma = mean_luma(frame.reformat(format="gray"))
                if luma > FLASH_LUMA and last_luma < DARK_LUMA:
                    flashes.append(frame.time)
                last_luma = luma
            elif isinstance(frame, av.AudioFrame):
                rate = frame.sample_rate
                channels = len(frame.layout.channels)
                samples += frame.samples
                data, level = first_channel(frame)
                need = int(ONSET_QUIET_S * rate)
                for i, v in enumerate(data):
                    if abs(v) > level:
                        if quiet >= need:
                            onsets.append(frame.time + i / rate)
                        quiet = 0
                    else:
                        quiet += 1
    offsets = []
    for f in flashes:
        near = min(onsets, key=lambda o: abs(o - f), default=None)
        if near is not None and abs(near - f) < 0.5:
            offsets.append(round((near - f) * 1000.0, 1))
    print(json.dumps({
        "video_codec": vstream.codec_context.name if vstream else None,
        "audio_codec": astream.codec_context.name if astream else None,
        "audio_rate": rate,
        "audio_channels": channels,
        "audio_samples": samples,
        "flashes": flashes,
        "onsets": onsets,
        "av_offsets_ms": offsets,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
