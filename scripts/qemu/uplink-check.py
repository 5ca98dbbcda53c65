#!/usr/bin/env python3
"""Judge the field-uplink scenarios (scripts/qemu/wifi-check.sh) from the receiver's view.

Run inside the test's network namespace, next to tests/peers/whip_receiver.py. Every time is
CLOCK_MONOTONIC of the host, the receiver's clock (`now` prints it). Standard library only.

  now                                  print the receiver machine's monotonic time
  state                                print "posts=N live=ID[,ID] frames=N"
  first-frame --since T [--count N]    wait for N decoded frames after T; print the first one's
              [--timeout S]            time and how long after T it came
  gap --from T1 --to T2 --max S        the longest gap between decoded frames in [T1, T2]:
                                       "PASS <figures>" or "FAIL <why, figures>"
"""

import argparse
import json
import sys
import time
import urllib.request


def stats(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/control/stats", timeout=10) as r:
        return json.load(r)


def live_ids(st: dict) -> list:
    return [s["id"] for s in st["sessions"] if s["ended_t"] is None]


def cmd_state(a) -> int:
    st = stats(a.url)
    print(f"posts={len(st['posts'])} live={','.join(live_ids(st)) or '-'} "
          f"frames={st['frames_decoded']}")
    return 0


def cmd_first_frame(a) -> int:
    deadline = time.monotonic() + a.timeout
    while True:
        try:
            st = stats(a.url)
        except OSError as e:
            st = None
            why = f"receiver unreachable: {e}"
        if st is not None:
            after = [t for t in st["frame_times"] if t > a.since]
            if len(after) >= a.count:
                posts = [p["t"] for p in st["posts"] if p["t"] > a.since]
                first_post = f"{posts[0] - a.since:.2f}" if posts else "-"
                print(f"OK first={after[0]:.3f} after={after[0] - a.since:.2f} "
                      f"first_post_after={first_post} posts={len(posts)} "
                      f"live={','.join(live_ids(st)) or '-'}")
                return 0
            why = f"{len(after)} frames after {a.since:.3f}, {len(st['posts'])} POSTs"
        if time.monotonic() > deadline:
            print(f"TIMEOUT {why}")
            return 1
        time.sleep(0.5)


def cmd_gap(a) -> int:
    st = stats(a.url)
    times = [t for t in st["frame_times"] if a.start <= t <= a.end]
    edges = [a.start] + times + [a.end]
    gaps = [(b - x, x) for x, b in zip(edges, edges[1:])]
    gap, at = max(gaps)
    posts = [p for p in st["posts"] if a.start <= p["t"] <= a.end]
    rate = len(times) / (a.end - a.start) if a.end > a.start else 0.0
    figures = (f"longest gap {gap:.2f} s (from {at - a.start:+.2f} s), {len(times)} frames in "
               f"{a.end - a.start:.1f} s ({rate:.1f} fps), {len(posts)} POST(s)")
    if gap > a.max:
        print(f"FAIL longest gap {gap:.2f} s > {a.max} s — {figures}")
        return 1
    print(f"PASS {figures}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://192.0.2.1:8080")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("now")
    sub.add_parser("state")
    f = sub.add_parser("first-frame")
    f.add_argument("--since", type=float, required=True)
    f.add_argument("--count", type=int, default=1)
    f.add_argument("--timeout", type=float, default=60)
    g = sub.add_parser("gap")
    g.add_argument("--from", dest="start", type=float, required=True)
    g.add_argument("--to", dest="end", type=float, required=True)
    g.add_argument("--max", type=float, required=True)
    a = ap.parse_args()
    if a.cmd == "now":
        print(f"{time.monotonic():.3f}")
        return 0
    return {"state": cmd_state, "first-frame": cmd_first_frame, "gap": cmd_gap}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
