#!/usr/bin/env python3
"""Wait until the test WHIP receiver has decoded enough of the box's stream.

Used by scripts/qemu-boot-test.sh, run inside the test's network namespace. Polls
GET /control/stats of tests/peers/whip_receiver.py until one session, created by a POST
that carried the expected token, has decoded at least --frames frames of --width x --height,
or until --timeout seconds have passed. Prints a progress line every --every seconds on stderr
and one final line on stdout: "OK key=value ..." (read by the shell script) or the reason. Standard library only.

Exit status: 0 reached, 1 timed out or wrong stream, 2 receiver unreachable throughout.
"""

import argparse
import json
import sys
import time
import urllib.error
import urllib.request


def fetch(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=10) as resp:
        return json.load(resp)


def describe(stats: dict) -> str:
    posts = stats.get("posts", [])
    sessions = stats.get("sessions", [])
    if not posts:
        return "no WHIP POST yet"
    last = posts[-1]
    parts = [f"{len(posts)} POST(s), last answered {last.get('status')}"]
    for s in sessions[-2:]:
        parts.append(
            f"session {s['id'][:8]} {s['state']}: {s['frames_decoded']} frames"
            + (f" {s['width']}x{s['height']}" if s.get("width") else "")
        )
    return "; ".join(parts)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", required=True, help="receiver base URL, e.g. http://192.0.2.1:8080")
    ap.add_argument("--token", required=True, help="the stream key the box must have sent")
    ap.add_argument("--frames", type=int, required=True)
    ap.add_argument("--width", type=int, required=True)
    ap.add_argument("--height", type=int, required=True)
    ap.add_argument("--timeout", type=float, required=True, help="seconds")
    ap.add_argument("--every", type=float, default=20.0, help="progress line interval, seconds")
    ap.add_argument("--since", type=float, default=None,
                    help="CLOCK_MONOTONIC time qemu started, to report times relative to it")
    args = ap.parse_args()

    stats_url = args.url.rstrip("/") + "/control/stats"
    start = time.monotonic()
    deadline = start + args.timeout
    next_report = start + args.every
    stats = None
    while True:
        now = time.monotonic()
        try:
            stats = fetch(stats_url)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            if now >= deadline:
                print(f"receiver unreachable at {stats_url}: {exc}", flush=True)
                return 2
            time.sleep(1)
            continue
        good = [
            s for s in stats["sessions"]
            if s["key"] == args.token and s["width"] == args.width and s["height"] == args.height
            and s["frames_decoded"] >= args.frames
        ]
        if good:
            s = good[-1]
            since = args.since if args.since is not None else start
            span = (s["last_frame_t"] or 0) - (s["first_frame_t"] or 0)
            fps = (s["frames_decoded"] - 1) / span if span > 0 else 0.0
            first_post = min((p["t"] for p in stats["posts"] if p.get("key") == args.token),
                             default=None)
            facts = {
                "frames": s["frames_decoded"],
                "size": f"{s['width']}x{s['height']}",
                "fps": f"{fps:.1f}",
                "keyframes": s["keyframes"],
                "session": s["id"],
                "posts": len(stats["posts"]),
                "first_post_s": f"{first_post - since:.0f}" if first_post is not None else "?",
                "first_frame_s": f"{s['first_frame_t'] - since:.0f}",
            }
            print("OK " + " ".join(f"{k}={v}" for k, v in facts.items()), flush=True)
            return 0
        if now >= deadline:
            print(f"TIMEOUT after {args.timeout:.0f}s: {describe(stats)}", flush=True)
            bad_keys = {p.get("key") for p in stats["posts"]} - {args.token}
            if bad_keys:
                print(f"  POSTs with another key: {sorted(k for k in bad_keys if k)}",
                      file=sys.stderr, flush=True)
            return 1
        if now >= next_report:
            print(f"  ... {now - start:.0f}s: {describe(stats)}", file=sys.stderr, flush=True)
            next_report = now + args.every
        time.sleep(2)


if __name__ == "__main__":
    sys.exit(main())
