#!/usr/bin/env python3
"""What the viewers saw while the emulated box updated itself (scripts/qemu/update-check.sh).

Run inside the test's network namespace, next to tests/peers/whip_receiver.py. Every time is
CLOCK_MONOTONIC of the host, the receiver's clock (`now` prints it). Standard library only.

  now                                   print the receiver machine's monotonic time
  window --from T1 --to T2 [--fps F]    frames decoded between T1 and T2: count, the count
                                        expected at F fps, the longest gap (the window's ends
                                        count as frames), the sessions they came from
  wait-live --since T [--count N]       wait until N frames after T have been decoded; print
              [--timeout S]             the last frame before T, the first after it, and its
                                        session ("last_before=... first_after=... session=...")

  live                                  the live session and how many frames it decoded
                                        ("session=... frames_decoded=N")

Each prints one line of key=value pairs and exits 0, or 1 when waiting timed out.
"""

import argparse
import json
import sys
import time
import urllib.request


def stats(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/control/stats", timeout=10) as r:
        return json.load(r)


def session_of(st: dict, t: float):
    """The session a frame decoded at t belongs to: the last one that started before it."""
    best = None
    for s in st["sessions"]:
        start = s.get("created_t") or 0.0
        if start <= t and (best is None or start >= best[0]):
            best = (start, s["id"])
    return best[1] if best else "?"


def cmd_window(a) -> int:
    st = stats(a.url)
    times = [t for t in st["frame_times"] if a.start <= t <= a.end]
    marks = [a.start] + times + [a.end]
    gap = max(b - x for x, b in zip(marks, marks[1:]))
    sessions = sorted({session_of(st, t) for t in times})
    expected = (a.end - a.start) * a.fps
    print(
        f"frames={len(times)} expected={expected:.0f} longest_gap={gap:.2f} "
        f"seconds={a.end - a.start:.1f} sessions={','.join(sessions) or '-'} "
        f"posts={len(st['posts'])}"
    )
    return 0


def cmd_wait_live(a) -> int:
    deadline = time.monotonic() + a.timeout
    while True:
        st = stats(a.url)
        ft = st["frame_times"]
        after = [t for t in ft if t > a.since]
        if len(after) >= a.count:
            before = [t for t in ft if t <= a.since]
            last = f"{before[-1]:.3f}" if before else "none"
            print(
                f"last_before={last} first_after={after[0]:.3f} "
                f"session={session_of(st, after[0])} frames={len(after)}"
            )
            return 0
        if time.monotonic() > deadline:
            print(f"timeout frames_after={len(after)}")
            return 1
        time.sleep(0.5)


def cmd_live(a) -> int:
    st = stats(a.url)
    live = [s for s in st["sessions"] if s["ended_t"] is None]
    if len(live) != 1:
        print(f"sessions_live={len(live)}")
        return 1
    print(f"session={live[0]['id']} frames_decoded={live[0]['frames_decoded']}")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://192.0.2.1:8080")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("now")
    sub.add_parser("live")
    w = sub.add_parser("window")
    w.add_argument("--from", dest="start", type=float, required=True)
    w.add_argument("--to", dest="end", type=float, required=True)
    w.add_argument("--fps", type=float, default=15)
    lv = sub.add_parser("wait-live")
    lv.add_argument("--since", type=float, required=True)
    lv.add_argument("--count", type=int, default=15)
    lv.add_argument("--timeout", type=float, default=300)
    a = ap.parse_args()
    if a.cmd == "now":
        print(f"{time.monotonic():.3f}")
        return 0
    return {"window": cmd_window, "wait-live": cmd_wait_live, "live": cmd_live}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
