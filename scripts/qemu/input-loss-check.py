#!/usr/bin/env python3
"""Judge the input-loss scenarios of scripts/qemu/v4l2-scenarios.sh from the receiver's view.

Run inside the test's network namespace, next to tests/peers/whip_receiver.py. Every time is
CLOCK_MONOTONIC of the host, the receiver's clock (`now` prints it). Standard library only.

  now                                      print the receiver machine's monotonic time
  offset -- SSH-COMMAND...                 the box's realtime clock minus this machine's
                                           monotonic one (best of 5 round trips), to turn a
                                           time the box printed into the receiver's clock
  state                                    print "posts=N live=ID[,ID] frames=N"
  wait-bright --since T --count N          wait for N bright frames after T (the live input)
  loss --cut T1 --back T2 --replugged T3   a loss with the slate: same session, rate, return
  change --at T1 --until T2 --width W ...  a resolution change: same session, same size
  disconnect --cut T1 --back T2            on_loss=disconnect: session closed, a new one after

`loss`, `change` and `disconnect` print one line, "PASS <figures>" or "FAIL <why, figures>",
and exit 0 or 1.
"""

import argparse
import json
import sys
import time
import urllib.request

# The slate's mean luma is about 55-65, vivid's colour bars (scaled, with borders)
# about 75-125.
BRIGHT = 70.0


def stats(url: str) -> dict:
    with urllib.request.urlopen(url.rstrip("/") + "/control/stats", timeout=10) as r:
        return json.load(r)


def frames(st: dict) -> list:
    return list(zip(st["frame_times"], st["frame_lumas"]))


def live_ids(st: dict) -> list:
    return [s["id"] for s in st["sessions"] if s["ended_t"] is None]


def longest_gap(f: list, start: float, end: float) -> float:
    times = [start] + [t for t, _ in f if start <= t <= end] + [end]
    return max(b - a for a, b in zip(times, times[1:]))


def first_bright_after(f: list, t: float):
    return next((ft for ft, y in f if ft > t and y > BRIGHT), None)


def session(st: dict, sid: str) -> dict:
    return next(s for s in st["sessions"] if s["id"] == sid)


def key_near(s: dict, t: float) -> bool:
    return any(t - 0.1 <= k <= t + 0.5 for k in s["keyframe_times"])


def cmd_offset(a) -> int:
    """Runs `date +%s.%N` on the box through the given command, five times, and keeps the
    round trip with the smallest delay: offset = box time - middle of the round trip."""
    import subprocess
    best = None
    for _ in range(5):
        before = time.monotonic()
        out = subprocess.run(a.command + ["date +%s.%N"], capture_output=True, text=True,
                             timeout=60).stdout.strip()
        after = time.monotonic()
        try:
            box = float(out)
        except ValueError:
            continue
        rtt = after - before
        if best is None or rtt < best[1]:
            best = (box - (before + after) / 2, rtt)
    if best is None:
        print("no answer from the box")
        return 1
    print(f"offset={best[0]:.3f} rtt={best[1]:.3f}")
    return 0


def cmd_state(a) -> int:
    st = stats(a.url)
    print(f"posts={len(st['posts'])} live={','.join(live_ids(st)) or '-'} "
          f"frames={st['frames_decoded']}")
    return 0


def cmd_wait_bright(a) -> int:
    deadline = time.monotonic() + a.timeout
    while True:
        st = stats(a.url)
        since = a.since
        if a.new_session:
            posts = [p["t"] for p in st["posts"] if p["t"] > a.since]
            since = posts[0] if posts else float("inf")
        bright = [t for t, y in frames(st) if t > since and y > BRIGHT]
        if len(bright) >= a.count:
            print(f"OK first={bright[0]:.3f} posts={len(st['posts'])} live={','.join(live_ids(st))}")
            return 0
        if time.monotonic() > deadline:
            print(f"TIMEOUT {len(bright)} bright frames after {a.since:.3f}; "
                  f"posts={len(st['posts'])} live={','.join(live_ids(st)) or '-'}")
            return 1
        time.sleep(0.5)


def cmd_loss(a) -> int:
    """The input gone from `cut` to `back` (`replugged`: when the device was back, if later)."""
    st = stats(a.url)
    f = frames(st)
    problems = []
    posts = len(st["posts"])
    if posts != a.posts:
        problems.append(f"{posts - a.posts} new POST(s)")
    if live_ids(st) != [a.session]:
        problems.append(f"live sessions {live_ids(st)} instead of {a.session}")
    during = [(t, y) for t, y in f if a.cut <= t < a.back]
    expected = a.fps * (a.back - a.cut)
    rate = len(during) / expected if expected else 0.0
    if rate < 0.9:
        problems.append(f"{len(during)} frames in {a.back - a.cut:.1f} s = {100 * rate:.0f} % of {a.fps:g} fps")
    slate = [t for t, y in during if y <= BRIGHT]
    if not slate:
        problems.append("no slate frame decoded")
    first_slate = slate[0] if slate else None
    slate_rate = (len(slate) / (a.fps * (a.back - first_slate))
                  if first_slate and a.back > first_slate else 0.0)
    gap = longest_gap(f, a.cut, a.back)
    returned = first_bright_after(f, a.back)
    since_back = returned - a.back if returned else None
    # With --replugged (the device back *and* set as before), a picture that came back even
    # earlier (at the device's default settings) counts as back at once.
    since_replug = (max(0.0, returned - a.replugged)
                    if returned and a.replugged else since_back)
    if returned is None:
        problems.append("the live picture never came back")
    elif since_replug > a.max_return:
        problems.append(f"live picture {since_replug:.2f} s after the input returned (> {a.max_return} s)")
    s = session(st, a.session)
    keys = "key frames at both switches" if (
        first_slate and returned and key_near(s, first_slate) and key_near(s, returned)
    ) else "key frames: " + ("slate " if first_slate and key_near(s, first_slate) else "") + (
        "input" if returned and key_near(s, returned) else "")
    figures = (
        f"{len(during)} frames in {a.back - a.cut:.1f} s of loss ({100 * rate:.0f} % of {a.fps:g} fps), "
        f"slate from {first_slate - a.cut:.2f} s ({100 * slate_rate:.0f} % of the rate), "
        if first_slate else f"{len(during)} frames in {a.back - a.cut:.1f} s, "
    ) + (
        f"longest gap {gap:.2f} s, same session {a.session[:8]} ({posts} POSTs), "
        + (f"live picture back {since_replug:.2f} s after the input returned"
           + (f" ({since_back:.2f} s after the device came back)" if a.replugged else "")
           if returned else "no live picture")
        + f", {keys}"
    )
    print(("FAIL " + "; ".join(problems) + " — " if problems else "PASS ") + figures)
    return 1 if problems else 0


def cmd_change(a) -> int:
    """New timings at `at`; judged up to `until`."""
    st = stats(a.url)
    f = frames(st)
    problems = []
    posts = len(st["posts"])
    if posts != a.posts:
        problems.append(f"{posts - a.posts} new POST(s)")
    if live_ids(st) != [a.session]:
        problems.append(f"live sessions {live_ids(st)} instead of {a.session}")
    s = session(st, a.session)
    if (s["width"], s["height"]) != (a.width, a.height):
        problems.append(f"output {s['width']}x{s['height']} instead of {a.width}x{a.height}")
    window = [(t, y) for t, y in f if a.at <= t < a.until]
    expected = a.fps * (a.until - a.at)
    rate = len(window) / expected if expected else 0.0
    if rate < 0.9:
        problems.append(f"{100 * rate:.0f} % of {a.fps:g} fps")
    gap = longest_gap(f, a.at, a.until)
    slate = sum(1 for _, y in window if y <= BRIGHT)
    bright_after = [t for t, y in window if y > BRIGHT]
    if not bright_after:
        problems.append("no live picture after the change")
    figures = (f"output {s['width']}x{s['height']}, same session {a.session[:8]} ({posts} POSTs), "
               f"{len(window)} frames in {a.until - a.at:.1f} s ({100 * rate:.0f} % of {a.fps:g} fps), "
               f"longest gap {gap:.2f} s, {slate} slate frames meanwhile")
    print(("FAIL " + "; ".join(problems) + " — " if problems else "PASS ") + figures)
    return 1 if problems else 0


def cmd_disconnect(a) -> int:
    """on_loss=disconnect: the session closes after `cut`, nothing is POSTed until `back`,
    then a new session brings the picture."""
    st = stats(a.url)
    f = frames(st)
    problems = []
    old = session(st, a.session)
    if old["ended_t"] is None:
        problems.append("the old session is still live")
    ended_after = old["ended_t"] - a.cut if old["ended_t"] else None
    if ended_after is not None and ended_after > a.max_end:
        problems.append(f"the old session ended {ended_after:.2f} s after the cut (> {a.max_end} s)")
    posts = st["posts"]
    during = [p for p in posts[a.posts:] if a.cut <= p["t"] < a.back]
    if during:
        problems.append(f"{len(during)} POST(s) while the input was gone")
    after = [p for p in posts[a.posts:] if p["t"] >= a.back]
    if not after:
        problems.append("no new POST after the input came back")
    slate = [t for t, y in f if t >= a.cut and y <= BRIGHT]
    if slate:
        problems.append(f"{len(slate)} slate frames reached the receiver")
    returned = first_bright_after(f, a.back)
    if returned is None:
        problems.append("no live picture after the return")
    figures = (f"old session ended {ended_after:.2f} s after the cut ({old['end_reason']}), "
               if ended_after is not None else "") + (
        f"{len(during)} POSTs while gone, {len(after)} after; "
        + (f"picture back {returned - a.back:.2f} s after the replug on a new session"
           if returned else "no picture"))
    print(("FAIL " + "; ".join(problems) + " — " if problems else "PASS ") + figures)
    return 1 if problems else 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--url", default="http://192.0.2.1:8080")
    sub = ap.add_subparsers(dest="cmd", required=True)
    sub.add_parser("now")
    sub.add_parser("state")
    o = sub.add_parser("offset")
    o.add_argument("command", nargs="+", help="the ssh command line that reaches the box")
    w = sub.add_parser("wait-bright")
    w.add_argument("--since", type=float, required=True)
    w.add_argument("--new-session", action="store_true",
                   help="count only frames after the first POST made after --since")
    w.add_argument("--count", type=int, default=15)
    w.add_argument("--timeout", type=float, default=60)
    for name in ("loss", "change", "disconnect"):
        p = sub.add_parser(name)
        p.add_argument("--session", required=True)
        p.add_argument("--posts", type=int, required=True, help="POSTs before the scenario")
        p.add_argument("--fps", type=float, default=15)
    loss = sub.choices["loss"]
    loss.add_argument("--cut", type=float, required=True)
    loss.add_argument("--back", type=float, required=True)
    loss.add_argument("--replugged", type=float, default=None)
    loss.add_argument("--max-return", type=float, default=2.0)
    change = sub.choices["change"]
    change.add_argument("--at", type=float, required=True)
    change.add_argument("--until", type=float, required=True)
    change.add_argument("--width", type=int, required=True)
    change.add_argument("--height", type=int, required=True)
    disc = sub.choices["disconnect"]
    disc.add_argument("--cut", type=float, required=True)
    disc.add_argument("--back", type=float, required=True)
    disc.add_argument("--max-end", type=float, default=5.0)
    a = ap.parse_args()
    if a.cmd == "now":
        print(f"{time.monotonic():.3f}")
        return 0
    return {"state": cmd_state, "offset": cmd_offset, "wait-bright": cmd_wait_bright, "loss": cmd_loss,
            "change": cmd_change, "disconnect": cmd_disconnect}[a.cmd](a)


if __name__ == "__main__":
    sys.exit(main())
