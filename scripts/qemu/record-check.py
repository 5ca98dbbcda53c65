#!/usr/bin/env python3
"""Judge scripts/qemu/record-check.sh: what the receiver got while the box recorded, and what a
recording copied off the box decodes to. Standard library and ffprobe only.

  stream --url URL --from T1 --to T2 --fps F
      frames the receiver decoded between T1 and T2 (its CLOCK_MONOTONIC) as a share of F, the
      longest gap, and the sessions: prints "share=0.99 gap=0.21 posts=N live=ID[,ID]"
  decode --file F --sidecar S [--cut T]
      the pictures ffprobe decodes from F, their span, and the last one's wall-clock time from
      the sidecar's start line; with --cut (the box's wall clock) how long before it the file
      ends: prints "frames=N span=S last=T before_cut=D"
"""

import argparse
import json
import subprocess
import sys
import urllib.request


def cmd_stream(a) -> int:
    with urllib.request.urlopen(a.url.rstrip("/") + "/control/stats", timeout=10) as r:
        st = json.load(r)
    times = [t for t in st["frame_times"] if a.start <= t <= a.end]
    edges = [a.start] + times + [a.end]
    gap = max(b - x for x, b in zip(edges, edges[1:]))
    live = [s["id"] for s in st["sessions"] if s["ended_t"] is None]
    share = len(times) / ((a.end - a.start) * a.fps)
    print(f"share={share:.3f} gap={gap:.2f} posts={len(st['posts'])} live={','.join(live) or '-'}")
    return 0


def cmd_decode(a) -> int:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "frame=pts_time",
         "-of", "csv=p=0", a.file],
        capture_output=True, text=True, timeout=120)
    pts = []
    for line in out.stdout.splitlines():
        try:
            pts.append(float(line.strip().rstrip(",")))
        except ValueError:
            pass
    start = None
    with open(a.sidecar) as f:
        for line in f:
            words = line.split()
            if len(words) >= 2 and words[0] == "start":
                start = float(words[1])
    if not pts or start is None:
        print(f"frames={len(pts)} span=0 last=none before_cut=none")
        return 1
    last = start + pts[-1]
    before = f"{a.cut - last:.2f}" if a.cut is not None else "none"
    print(f"frames={len(pts)} span={pts[-1] - pts[0]:.2f} last={last:.3f} before_cut={before}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--url", required=True)
    s.add_argument("--from", dest="start", type=float, required=True)
    s.add_argument("--to", dest="end", type=float, required=True)
    s.add_argument("--fps", type=float, required=True)
    d = sub.add_parser("decode")
    d.add_argument("--file", required=True)
    d.add_argument("--sidecar", required=True)
    d.add_argument("--cut", type=float)
    a = ap.parse_args()
    return {"stream": cmd_stream, "decode": cmd_decode}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
