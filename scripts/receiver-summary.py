#!/usr/bin/env python3
"""Prints what the test receiver decoded, per session, from its /control/stats JSON on stdin.

Used by scripts/demo.sh and the benchmarks: a person reads these lines to see that the
picture arrived, at which size and rate, and how soon.
   receiver-summary.py FPS < stats.json
"""
import json
import sys


def main() -> int:
    fps = float(sys.argv[1])
    stats = json.load(sys.stdin)
    sessions = stats["sessions"]
    print("the receiver got:")
    if not sessions:
        print("  nothing: no session was created")
        return 1
    for s in sessions:
        sid = s["id"][:8]
        first, last = s["first_frame_t"], s["last_frame_t"]
        if first is None:
            print(f"  session {sid}: no frame decoded (state {s['state']})")
            continue
        span = last - first
        expected = span * fps + 1
        pct = 100.0 * s["frames_decoded"] / expected
        print(
            f"  session {sid}: {s['frames_decoded']} frames decoded at {s['width']}x{s['height']}"
            f" over {span:.1f} s ({pct:.0f}% of {fps:g} fps), {s['keyframes']} key frames,"
            f" first picture {first - s['created_t']:.2f} s after the POST, ended: {s['end_reason']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
