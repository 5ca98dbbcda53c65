#!/usr/bin/env python3
"""Judge the ALSA check of scripts/qemu/alsa-check.sh from the receiver's view: what a listener
heard (the receiver's `audio_levels`: one [t, peak, samples] per 0.25 s of decoded Opus) and
whether the pictures went on. Times are the receiver's CLOCK_MONOTONIC
(scripts/qemu/input-loss-check.py `now`/`offset` give it). Standard library only.

  wait-tone --since T [--new-session] --timeout S
        wait until a live session carries the tone for 1 s after T (every 0.25 s of sound
        louder than LOUD_DBFS); print "session=ID posts=N heard=T"
  window --session ID --from T1 --to T2 --expect tone|quiet --fps F --posts N
        the sound between T1 and T2 must be all tone (every 0.25 s louder than LOUD_DBFS)
        or all quiet (every 0.25 s below QUIET_DBFS), at 48 kHz (samples per second of the
        receiver's clock within 10 %), with pictures at >= 90 % of F and no gap over 1 s,
        on session ID with no POST after the N-th; prints "PASS <figures>" or
        "FAIL <why; figures>" and exits 0 or 1.
"""

import argparse
import json
import math
import sys
import time
import urllib.request

# The tone the box plays is 1 kHz at -6 dBFS. Louder than -20 dBFS is the tone; digital
# silence through Opus decodes to (near) zero, far below -50 dBFS.
LOUD_DBFS = -20.0
QUIET_DBFS = -50.0
RATE = 48000


def dbfs(peak: int) -> float:
    return 20 * math.log10(peak / 32768.0) if peak > 0 else -math.inf


def stats(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/control/stats", timeout=10) as r:
        return json.load(r)


def fmt(v: float) -> str:
    return "-inf" if v == -math.inf else f"{v:.1f}"


def cmd_wait_tone(a) -> int:
    deadline = time.monotonic() + a.timeout
    last = "no session"
    while time.monotonic() < deadline:
        st = stats(a.url)
        for s in reversed(st["sessions"]):
            if s["ended_t"] is not None or (a.new_session and s["created_t"] < a.since):
                continue
            levels = [lv for lv in s.get("audio_levels", []) if lv[0] > a.since]
            run_start = None
            for t, peak, _ in levels:
                if dbfs(peak) > LOUD_DBFS:
                    run_start = t if run_start is None else run_start
                    if t - run_start >= 1.0:
                        # The first quarter second of the run ended at run_start.
                        print(f"session={s['id']} posts={len(st['posts'])} "
                              f"heard={run_start - 0.25:.3f}")
                        return 0
                else:
                    run_start = None
            last = (f"session {s['id']}: {s['audio_samples']} samples, "
                    f"peak {s['audio_peak_dbfs']} dBFS, {len(levels)} levels after since")
            break
        time.sleep(0.25)
    print(f"no tone within {a.timeout}s ({last})")
    return 1


def cmd_window(a) -> int:
    st = stats(a.url)
    s = next((x for x in st["sessions"] if x["id"] == a.session), None)
    if s is None:
        print(f"FAIL session {a.session} unknown")
        return 1
    levels = [lv for lv in s.get("audio_levels", []) if a.start < lv[0] <= a.end]
    frames = [t for t in st["frame_times"] if a.start <= t <= a.end]
    span = a.end - a.start
    problems = []
    if len(levels) < 2:
        print(f"FAIL only {len(levels)} quarter seconds of sound between {a.start:.1f} and {a.end:.1f}")
        return 1
    peaks = [dbfs(p) for _, p, _ in levels]
    # Samples per second over the buckets after the first (each bucket's samples arrived
    # since the previous one ended).
    rate = sum(n for _, _, n in levels[1:]) / (levels[-1][0] - levels[0][0])
    times = [a.start] + frames + [a.end]
    gap = max(b - x for x, b in zip(times, times[1:]))
    fps = len(frames) / span
    figures = (f"{len(levels)} x 0.25 s of sound, peak {fmt(min(peaks))}..{fmt(max(peaks))} dBFS, "
               f"{rate:.0f} samples/s ({s['audio_rate']} Hz x {s['audio_channels']} ch), "
               f"pictures {fps:.1f} fps, longest gap {gap:.2f} s, session {a.session[:8]}")
    if a.expect == "tone" and min(peaks) <= LOUD_DBFS:
        problems.append(f"not the tone throughout (quietest 0.25 s {fmt(min(peaks))} dBFS <= {LOUD_DBFS})")
    if a.expect == "quiet" and max(peaks) >= QUIET_DBFS:
        problems.append(f"not silent (loudest 0.25 s {fmt(max(peaks))} dBFS >= {QUIET_DBFS})")
    if s["audio_rate"] != RATE or abs(rate - RATE) > 0.1 * RATE:
        problems.append(f"sound not at {RATE} Hz")
    if fps < 0.9 * a.fps or gap > 1.0:
        problems.append("pictures stopped or slowed")
    if s["ended_t"] is not None:
        problems.append("the session ended")
    if len(st["posts"]) != a.posts:
        problems.append(f"{len(st['posts']) - a.posts} new POST(s)")
    if problems:
        print(f"FAIL {'; '.join(problems)}; {figures}")
        return 1
    print(f"PASS {figures}")
    return 0


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="the receiver, e.g. http://192.0.2.1:8080")
    sub = p.add_subparsers(dest="cmd", required=True)
    w = sub.add_parser("wait-tone")
    w.add_argument("--since", type=float, required=True)
    w.add_argument("--new-session", action="store_true")
    w.add_argument("--timeout", type=float, default=60)
    v = sub.add_parser("window")
    v.add_argument("--session", required=True)
    v.add_argument("--from", dest="start", type=float, required=True)
    v.add_argument("--to", dest="end", type=float, required=True)
    v.add_argument("--expect", choices=("tone", "quiet"), required=True)
    v.add_argument("--fps", type=float, required=True)
    v.add_argument("--posts", type=int, required=True)
    a = p.parse_args()
    return {"wait-tone": cmd_wait_tone, "window": cmd_window}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
