#!/usr/bin/env python3
"""Self-test for whip_receiver.py: publish synthetic H.264 to it with aiortc and check it.

    python tests/peers/selftest.py            # ~15 s, exit 0 on success
    python tests/peers/selftest.py --vanish   # also measure how long a publisher that
                                              # vanishes (SIGKILL) keeps its key (~30-40 s)
    python tests/peers/selftest.py --host 192.0.2.1   # inside a network namespace that
                                              # has that address (receiver and publisher)

The receiver runs as a subprocess on --host (default 127.0.0.1) with a free port; the
publisher's candidates are restricted to the same address. Every wait is bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any, Optional
from urllib.parse import urljoin

import aiohttp
import av
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)

HERE = Path(__file__).resolve().parent
RECEIVER = HERE / "whip_receiver.py"
sys.path.insert(0, str(HERE))
from whip_receiver import restrict_host_candidates  # noqa: E402  (needs the path above)

TOKEN = "selftest-key"
WIDTH, HEIGHT = 320, 240
HTTP_TIMEOUT = aiohttp.ClientTimeout(total=15)


class Failure(Exception):
    pass


def check(cond: bool, what: str) -> None:
    if not cond:
        raise Failure(what)
    print(f"ok: {what}", flush=True)


class SyntheticVideo(VideoStreamTrack):
    """320x240 moving stripes at 30 fps (VideoStreamTrack paces the timestamps)."""

    def __init__(self) -> None:
        super().__init__()
        ramp = bytes(range(256)) * 4
        # A few distinct luma planes, cycled: enough motion for real P-frames.
        self._planes = [
            b"".join(ramp[(k * 8 + y // 4) % 256:][:WIDTH] for y in range(HEIGHT))
            for k in range(32)
        ]
        self._n = 0

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = av.VideoFrame(WIDTH, HEIGHT, "yuv420p")
        y = frame.planes[0]
        luma = self._planes[self._n % len(self._planes)]
        if y.line_size != WIDTH:  # PyAV may pad lines
            luma = b"".join(luma[r * WIDTH:(r + 1) * WIDTH].ljust(y.line_size, b"\0")
                            for r in range(HEIGHT))
        y.update(luma)
        for chroma in frame.planes[1:]:
            chroma.update(b"\x80" * chroma.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self._n += 1
        return frame


def new_publisher() -> RTCPeerConnection:
    # iceServers=[]: aiortc's default configuration would contact a public STUN server.
    pc = RTCPeerConnection(RTCConfiguration(iceServers=[]))
    transceiver = pc.addTransceiver(SyntheticVideo(), direction="sendonly")
    h264 = [c for c in RTCRtpSender.getCapabilities("video").codecs
            if c.mimeType == "video/H264" and c.parameters.get("profile-level-id") == "42e01f"]
    if not h264:
        raise Failure("aiortc offers no H.264 42e01f codec")
    transceiver.setCodecPreferences(h264)
    return pc


async def make_offer(pc: RTCPeerConnection) -> str:
    await pc.setLocalDescription(await pc.createOffer())  # gathers all candidates
    return pc.localDescription.sdp


async def post(http: aiohttp.ClientSession, url: str, sdp: str,
               key: Optional[str]) -> tuple[int, dict[str, str], str]:
    headers = {"Content-Type": "application/sdp"}
    if key is not None:
        headers["Authorization"] = f"Bearer {key}"
    async with http.post(url, data=sdp, headers=headers) as resp:
        return resp.status, dict(resp.headers), await resp.text()


async def wait_for(predicate, timeout: float, what: str, interval: float = 0.1) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            raise Failure(f"timed out after {timeout:.0f} s waiting for {what}")
        await asyncio.sleep(interval)


async def stats(http: aiohttp.ClientSession, base: str) -> dict[str, Any]:
    async with http.get(f"{base}/control/stats") as resp:
        if resp.status != 200:
            raise Failure(f"/control/stats answered {resp.status}")
        return await resp.json()


def session_stats(st: dict[str, Any], sid: str) -> dict[str, Any]:
    for s in st["sessions"]:
        if s["id"] == sid:
            return s
    raise Failure(f"session {sid} missing from /control/stats")


async def control(http: aiohttp.ClientSession, base: str, path: str, obj: dict) -> dict:
    async with http.post(f"{base}/control/{path}", json=obj) as resp:
        body = await resp.text()
        if resp.status != 200:
            raise Failure(f"/control/{path} answered {resp.status}: {body}")
        return await resp.json(content_type=None)


async def start_receiver(host: str, stderr_file) -> tuple[asyncio.subprocess.Process, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(RECEIVER), "--listen", f"{host}:0", "--token", TOKEN,
        stdout=asyncio.subprocess.PIPE, stderr=stderr_file)
    try:
        line = await asyncio.wait_for(proc.stdout.readline(), 30)
    except asyncio.TimeoutError:
        proc.kill()
        raise Failure("receiver printed no READY line within 30 s")
    parts = line.decode().split()
    if len(parts) != 2 or parts[0] != "READY":
        proc.kill()
        raise Failure(f"unexpected first stdout line from receiver: {line!r}")
    return proc, parts[1]


async def stop_receiver(proc: asyncio.subprocess.Process) -> int:
    if proc.returncode is not None:
        return proc.returncode
    proc.send_signal(signal.SIGTERM)
    try:
        return await asyncio.wait_for(proc.wait(), 15)
    except asyncio.TimeoutError:
        proc.kill()
        await proc.wait()
        raise Failure("receiver did not exit within 15 s of SIGTERM")


async def publish(http: aiohttp.ClientSession, whip: str) -> tuple[RTCPeerConnection, str]:
    """Publish and wait until connected; returns the pc and the absolute resource URL."""
    pc = new_publisher()
    status, headers, body = await post(http, whip, await make_offer(pc), TOKEN)
    if status != 201:
        await pc.close()
        raise Failure(f"POST answered {status}: {body}")
    await pc.setRemoteDescription(RTCSessionDescription(sdp=body, type="answer"))

    async def connected() -> bool:
        if pc.connectionState == "failed":
            raise Failure("publisher connection failed")
        return pc.connectionState == "connected"

    await wait_for(connected, 15, "the publisher to connect")
    return pc, urljoin(whip, headers["Location"])


async def run_tests(base: str, host: str, vanish: bool, cycles: int) -> None:
    whip = f"{base}/api/whip"
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        # --- a real publisher, with Broadcast Box's answer headers
        pc = new_publisher()
        offer = await make_offer(pc)
        status, headers, answer = await post(http, whip, offer, TOKEN)
        check(status == 201, f"POST with the right key answers 201 (got {status}: {answer[:80]!r})")
        check(headers.get("Content-Type", "").startswith("application/sdp"), "answer is application/sdp")
        location = headers.get("Location", "")
        check(location.startswith("/api/whip/"), f"Location is relative: {location}")
        sid = location.rsplit("/", 1)[1]
        check(f"</api/sse/{sid}>" in headers.get("Link", ""), "Link header points to /api/sse/<id>")
        check("a=candidate:" in answer and f" {host} " in answer, f"answer carries {host} candidates")
        other = [ln for ln in answer.splitlines()
                 if ln.startswith("a=candidate:") and f" {host} " not in ln]
        check(not other, f"answer has only {host} candidates {other}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=answer, type="answer"))

        async def connected() -> bool:
            return pc.connectionState == "connected"
        await wait_for(connected, 15, "the publisher to connect")
        t_connected = time.monotonic()

        # --- Broadcast Box's request rules
        second = new_publisher()
        try:
            status, _, body = await post(http, whip, await make_offer(second), TOKEN)
        finally:
            await second.close()
        check(status == 400 and "session already has a host" in body,
              f"second publisher on a live key gets 400 'session already has a host' ({status} {body!r})")
        status, _, _ = await post(http, whip, offer, "wrong-key")
        check(status == 401, f"wrong key gets 401 (got {status})")
        status, _, _ = await post(http, whip, offer, None)
        check(status == 400, f"missing Authorization gets 400 (got {status})")
        status, _, _ = await post(http, whip, "this is not sdp", TOKEN)
        check(status == 400, f"unparsable SDP gets 400 (got {status})")

        # --- decoding
        await asyncio.sleep(max(0.0, 4.0 - (time.monotonic() - t_connected)))
        st = await stats(http, base)
        s = session_stats(st, sid)
        check(s["frames_decoded"] >= 60, f"decoded {s['frames_decoded']} frames in ~4 s (>= 60)")
        check((s["width"], s["height"]) == (WIDTH, HEIGHT), f"frame size {s['width']}x{s['height']}")
        check((st["width"], st["height"]) == (WIDTH, HEIGHT), "totals report the frame size")
        check(s["keyframes"] >= 1, f"{s['keyframes']} key frame(s) counted")
        check(len(st["frame_times"]) == st["frames_decoded"], "frame_times has one entry per frame")
        check(len(st["frame_lumas"]) == len(st["frame_times"])
              and all(0.0 <= y <= 255.0 for y in st["frame_lumas"]),
              "frame_lumas has one mean luma (0-255) per frame")
        check(s["state"] == "connected", f"session state {s['state']}")
        now = time.monotonic()
        check(abs(st["last_frame_t"] - now) < 1.0,
              "last_frame_t is on this process's CLOCK_MONOTONIC")

        # --- PLI flood: aiortc's publisher forces a key frame on every PLI, so key frames
        # must pile up (this proves both the PLIs and the key-frame detection).
        kf_before = s["keyframes"]
        flood = await control(http, base, "pli_flood", {"duration_s": 1.0, "interval_ms": 20})
        await asyncio.sleep(1.5)
        st = await stats(http, base)
        s = session_stats(st, sid)
        check(st["plis_sent"] >= 30, f"{st['plis_sent']} PLIs sent in a 1 s flood at 20 ms")
        in_flood = [t for t in s["keyframe_times"] if flood["start_t"] <= t <= flood["until_t"] + 0.3]
        check(len(in_flood) >= 5 and s["keyframes"] - kf_before >= 5,
              f"{len(in_flood)} key frames during the flood (an uncoalescing publisher)")

        # --- scripted answers
        await control(http, base, "script", {"posts": [{"status": 503, "retry_after": 1}]})
        status, headers, _ = await post(http, whip, offer, TOKEN)
        check(status == 503 and headers.get("Retry-After") == "1",
              f"scripted 503 with Retry-After: 1 (got {status}, {headers.get('Retry-After')})")
        st = await stats(http, base)
        check(st["posts"][-1]["status"] == 503 and st["posts"][-1]["scripted"],
              "scripted POST recorded")

        # --- DELETE frees the key
        resource = urljoin(whip, location)
        async with http.delete(resource) as resp:
            check(resp.status == 204, f"DELETE answers 204 (got {resp.status})")
        async with http.delete(resource) as resp:
            check(resp.status == 404, f"second DELETE answers 404 (got {resp.status})")
        async with http.put(resource) as resp:
            check(resp.status == 405, f"PUT on the resource answers 405 (got {resp.status})")
        await pc.close()
        st = await stats(http, base)
        s = session_stats(st, sid)
        check(s["ended_t"] is not None and s["end_reason"] == "deleted", "session ended by DELETE")
        check(st["deletes"][0]["status"] == 204, "DELETE recorded")

        pc2, resource2 = await publish(http, whip)
        check(True, "a new publisher on the freed key connects")
        async with http.delete(resource2) as resp:
            check(resp.status == 204, "DELETE of the second session")
        await pc2.close()

        # --- reset
        await control(http, base, "reset", {})
        st = await stats(http, base)
        check(not st["posts"] and st["frames_decoded"] == 0 and not st["sessions"],
              "reset clears the stats")

        if vanish:
            await measure_vanish(http, base, host, whip)
        if cycles:
            await reconnect_cycles(http, base, whip, cycles)


async def reconnect_cycles(http: aiohttp.ClientSession, base: str, whip: str, n: int) -> None:
    """Publish, wait for a decoded frame, DELETE; n times (the daemon's reconnect pattern)."""
    start = time.monotonic()
    for i in range(n):
        pc, resource = await publish(http, whip)
        sid = resource.rsplit("/", 1)[1]

        async def decoded() -> bool:
            return session_stats(await stats(http, base), sid)["frames_decoded"] > 0
        await wait_for(decoded, 10, f"a decoded frame in cycle {i}", 0.05)
        async with http.delete(resource) as resp:
            if resp.status != 204:
                raise Failure(f"cycle {i}: DELETE answered {resp.status}")
        await pc.close()
    st = await stats(http, base)
    live = st["live_sessions"]
    check(not live, f"{n} reconnect cycles in {time.monotonic() - start:.1f} s, no live session left")


async def measure_vanish(http: aiohttp.ClientSession, base: str, host: str, whip: str) -> None:
    """SIGKILL a publisher process and time how long until the receiver frees its key."""
    child = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "--publisher", whip, "--host", host,
        stdout=asyncio.subprocess.PIPE)
    try:
        line = await asyncio.wait_for(child.stdout.readline(), 30)
        check(line.startswith(b"PUBLISHING "), f"child publisher is up ({line!r})")
        sid = line.split()[1].decode().rsplit("/", 1)[1]
        child.kill()
        await child.wait()
        killed = time.monotonic()

        async def ended() -> bool:
            return session_stats(await stats(http, base), sid)["ended_t"] is not None
        await wait_for(ended, 90, "the receiver to notice the vanished publisher", 0.5)
        s = session_stats(await stats(http, base), sid)
        print(f"vanished publisher: session ended after {time.monotonic() - killed:.1f} s "
              f"(reason {s['end_reason']}, state {s['state']})", flush=True)
        pc, resource = await publish(http, whip)
        check(True, "the key is free again after the vanished publisher")
        async with http.delete(resource):
            pass
        await pc.close()
    finally:
        if child.returncode is None:
            child.kill()
            await child.wait()


async def publisher_main(whip: str, host: str) -> None:
    """Child mode for --vanish: publish until killed."""
    restrict_host_candidates(host)
    async with aiohttp.ClientSession(timeout=HTTP_TIMEOUT) as http:
        pc, resource = await publish(http, whip)
        print(f"PUBLISHING {resource}", flush=True)
        await asyncio.sleep(3600)
        await pc.close()


async def main_async(host: str, vanish: bool, cycles: int) -> int:
    restrict_host_candidates(host)
    with tempfile.TemporaryFile() as err:
        proc, base = await start_receiver(host, err)
        print(f"receiver at {base}", flush=True)
        failure: Optional[BaseException] = None
        try:
            budget = 50 + (100 if vanish else 0) + cycles * 2
            await asyncio.wait_for(run_tests(base, host, vanish, cycles), budget)
        except (Failure, asyncio.TimeoutError, aiohttp.ClientError) as exc:
            failure = exc
        except Exception as exc:  # a bug in the test or an unexpected answer: show it all
            traceback.print_exc()
            failure = exc
        finally:
            code = await stop_receiver(proc)
        if failure is None and code != 0:
            failure = Failure(f"receiver exited with {code} after SIGTERM")
        if failure is not None:
            err.seek(0)
            sys.stderr.write("---- receiver stderr ----\n")
            sys.stderr.write(err.read().decode(errors="replace")[-20000:])
            kind = "timeout" if isinstance(failure, asyncio.TimeoutError) else type(failure).__name__
            print(f"FAIL ({kind}): {failure}", file=sys.stderr, flush=True)
            return 1
        check(True, "receiver exited 0 on SIGTERM")
    print("PASS", flush=True)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--vanish", action="store_true",
                        help="also time how long a SIGKILLed publisher keeps its key")
    parser.add_argument("--cycles", type=int, default=0, metavar="N",
                        help="also run N publish/DELETE reconnect cycles")
    parser.add_argument("--host", default="127.0.0.1",
                        help="IP for the receiver and the publisher's candidates (default 127.0.0.1)")
    parser.add_argument("--publisher", metavar="WHIP_URL", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.publisher:
        asyncio.run(publisher_main(args.publisher, args.host))
        return 0
    start = time.monotonic()
    code = asyncio.run(main_async(args.host, args.vanish, args.cycles))
    print(f"selftest took {time.monotonic() - start:.1f} s", flush=True)
    return code


if __name__ == "__main__":
    sys.exit(main())
