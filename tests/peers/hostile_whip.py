#!/usr/bin/env python3
"""A hostile WHIP server for onair's tests: answers the way an attacker (or a broken server) would.

Standard library only, raw HTTP/1.1 over asyncio, so every byte it sends is under the test's
control: bodies that never end, a Location on another origin, the token echoed back in headers
and bodies, SDP answers without usable video. It listens on two ports: HOME (the origin the box
is configured with) and OTHER (a stranger's origin). Every request on either port is recorded,
with its Authorization header, so a test can prove the token never went to OTHER.

    hostile_whip.py --listen 127.0.0.1:0 [--max-body-bytes N]

prints one line `READY http://HOME http://OTHER` on stdout once both listen.

Control (HOME only, JSON):
  POST /control/script   {"posts": [step, ...]}  replaces the queue of answers to POST /api/whip
  GET  /control/log      every request seen, and the bytes each endless body managed to send

A step (all fields optional):
  status        HTTP status (default 201)
  location      Location header; "{other}" is OTHER's base URL, "{home}" HOME's, "{token}" the
                bearer the request carried
  body          body text ("{token}" as above)
  answer        "vp8" | "no_video": an SDP answer built from the offer, with only VP8 video /
                only audio (ICE and DTLS attributes present, so it parses as a real answer)
  endless       "close" (no Content-Length, sent until the client hangs up) | "chunked";
                the body starts with `body` (or "v=0\\r\\n" for a 201) and goes on with junk
                lines, up to --max-body-bytes (a safety cap for runs against old builds);
                "stall": the start of the body, then nothing until the client hangs up
  headers       extra headers {name: value}
An unscripted POST gets 500 "no script". DELETE and anything else on /api/whip... gets 204.

Networking rule: it binds only the address given (loopback in the tests) and contacts nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import sys
import time
from typing import Any, Optional

MAX_HEAD = 64 * 1024
MAX_REQUEST_BODY = 1024 * 1024
JUNK = (b"a=x-junk:" + b"z" * 1014 + b"\r\n") * 64  # 64 KiB per write


class State:
    def __init__(self, max_body: int) -> None:
        self.max_body = max_body
        self.script: list[dict[str, Any]] = []
        self.log: list[dict[str, Any]] = []
        self.home = ""
        self.other = ""


def bearer(headers: dict[str, str]) -> str:
    auth = headers.get("authorization", "")
    return auth[len("Bearer "):] if auth.startswith("Bearer ") else ""


def fill(text: str, state: State, token: str) -> str:
    return text.replace("{other}", state.other).replace("{home}", state.home).replace("{token}", token)


def offer_mid(offer: str, kind: str) -> str:
    """The a=mid of the offer's first `kind` section ("0" if none)."""
    section = None
    for line in offer.splitlines():
        if line.startswith("m="):
            section = line[2:].split(" ", 1)[0]
        elif line.startswith("a=mid:") and section == kind:
            return line[len("a=mid:"):].strip()
    return "0"


def crafted_answer(offer: str, kind: str) -> str:
    """An answer that parses (ICE credentials, a DTLS fingerprint, rtcp-mux) but carries either
    only VP8 video or only audio."""
    fingerprint = ":".join(f"{b:02X}" for b in secrets.token_bytes(32))
    common = [
        "c=IN IP4 127.0.0.1",
        f"a=ice-ufrag:{secrets.token_hex(4)}",
        f"a=ice-pwd:{secrets.token_hex(12)}",
        f"a=fingerprint:sha-256 {fingerprint}",
        "a=setup:passive",
        "a=rtcp-mux",
        "a=recvonly",
        "a=candidate:1 1 udp 2130706431 127.0.0.1 9 typ host",
        "a=end-of-candidates",
    ]
    lines = ["v=0", f"o=- {int(time.time())} 1 IN IP4 127.0.0.1", "s=-", "t=0 0"]
    if kind == "vp8":
        mid = offer_mid(offer, "video")
        lines += [f"a=group:BUNDLE {mid}", "m=video 9 UDP/TLS/RTP/SAVPF 96", f"a=mid:{mid}"]
        lines += common + ["a=rtpmap:96 VP8/90000", "a=rtcp-fb:96 nack pli"]
    else:
        mid = offer_mid(offer, "video")
        lines += [f"a=group:BUNDLE {mid}", "m=audio 9 UDP/TLS/RTP/SAVPF 111", f"a=mid:{mid}"]
        lines += common + ["a=rtpmap:111 opus/48000/2"]
    return "\r\n".join(lines) + "\r\n"


async def read_request(reader: asyncio.StreamReader) -> Optional[tuple[str, str, dict[str, str], bytes]]:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
        return None
    if len(head) > MAX_HEAD:
        return None
    lines = head.decode("latin-1").split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) < 2:
        return None
    method, path = parts[0], parts[1]
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if ":" in line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    length = min(int(headers.get("content-length", "0") or 0), MAX_REQUEST_BODY)
    body = await reader.readexactly(length) if length else b""
    return method, path, headers, body


def head(status: int, headers: dict[str, str]) -> bytes:
    reason = {200: "OK", 201: "Created", 204: "No Content", 400: "Bad Request",
              404: "Not Found", 500: "Internal Server Error"}.get(status, "Whatever")
    out = [f"HTTP/1.1 {status} {reason}", "Connection: close"]
    out += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(out) + "\r\n\r\n").encode("latin-1")


async def send(writer: asyncio.StreamWriter, status: int, body: bytes = b"",
               headers: Optional[dict[str, str]] = None) -> None:
    h = dict(headers or {})
    h["Content-Length"] = str(len(body))
    writer.write(head(status, h) + body)
    await writer.drain()


async def send_endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                       status: int, headers: dict[str, str],
                       start: bytes, mode: str, cap: int, record: dict[str, Any]) -> None:
    h = dict(headers)
    if mode == "chunked":
        h["Transfer-Encoding"] = "chunked"
    writer.write(head(status, h))
    sent = 0
    record["endless_bytes"] = 0
    if mode == "stall":
        # The start of a body, then nothing, until the client hangs up (at most a minute).
        writer.write(start)
        await writer.drain()
        record["endless_bytes"] = len(start)
        try:
            await asyncio.wait_for(until_eof(reader), 60)
        except (asyncio.TimeoutError, ConnectionError):
            pass
        record["endless_end_t"] = time.monotonic()
        return
    try:
        first = True
        while sent < cap:
            piece = start + JUNK if first else JUNK
            first = False
            if mode == "chunked":
                writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            else:
                writer.write(piece)
            await writer.drain()
            sent += len(piece)
            record["endless_bytes"] = sent
    except (ConnectionError, OSError):
        pass
    record["endless_end_t"] = time.monotonic()


async def until_eof(reader: asyncio.StreamReader) -> None:
    """Returns once the peer has closed its end."""
    while await reader.read(4096):
        pass


async def handle(state: State, listener: str, reader: asyncio.StreamReader,
                 writer: asyncio.StreamWriter) -> None:
    try:
        req = await read_request(reader)
        if req is None:
            return
        method, path, headers, body = req
        record: dict[str, Any] = {
            "listener": listener, "method": method, "path": path,
            "authorization": headers.get("authorization"), "t": time.monotonic(),
        }
        state.log.append(record)
        if listener == "home" and path == "/control/script" and method == "POST":
            state.script = list(json.loads(body or b"{}").get("posts", []))
            await send(writer, 200, b'{"ok": true}', {"Content-Type": "application/json"})
            return
        if listener == "home" and path == "/control/log":
            await send(writer, 200, json.dumps({"requests": state.log}).encode(),
                       {"Content-Type": "application/json"})
            return
        if method == "POST" and path == "/api/whip":
            await answer_post(state, reader, writer, headers, body.decode("utf-8", "replace"),
                              record)
            return
        await send(writer, 204)
    except (ConnectionError, asyncio.IncompleteReadError, ValueError) as exc:
        print(f"hostile_whip: {listener}: {exc!r}", file=sys.stderr)
    finally:
        try:
            writer.close()
            await writer.wait_closed()
        except (ConnectionError, OSError):
            pass


async def answer_post(state: State, reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                      headers: dict[str, str], offer: str, record: dict[str, Any]) -> None:
    if not state.script:
        await send(writer, 500, b"no script")
        return
    step = state.script.pop(0)
    record["step"] = step
    token = bearer(headers)
    status = int(step.get("status", 201))
    out: dict[str, str] = {"Content-Type": "application/sdp" if status == 201 else "text/plain"}
    if "location" in step:
        out["Location"] = fill(step["location"], state, token)
    out.update({k: fill(v, state, token) for k, v in step.get("headers", {}).items()})
    if step.get("answer"):
        text = crafted_answer(offer, step["answer"])
    else:
        text = fill(step.get("body", ""), state, token)
    if step.get("endless"):
        start = text.encode() if text else (b"v=0\r\n" if status == 201 else b"")
        await send_endless(reader, writer, status, out, start, step["endless"], state.max_body,
                           record)
        return
    await send(writer, status, text.encode(), out)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT of HOME (OTHER: same host, any port)")
    parser.add_argument("--max-body-bytes", type=int, default=512 * 1024 * 1024,
                        help="safety cap of an endless body (default 512 MiB)")
    args = parser.parse_args()
    host, port = args.listen.rsplit(":", 1)
    state = State(args.max_body_bytes)
    home = await asyncio.start_server(lambda r, w: handle(state, "home", r, w), host, int(port))
    other = await asyncio.start_server(lambda r, w: handle(state, "other", r, w), host, 0)
    state.home = f"http://{host}:{home.sockets[0].getsockname()[1]}"
    state.other = f"http://{host}:{other.sockets[0].getsockname()[1]}"
    print(f"READY {state.home} {state.other}", flush=True)
    async with home, other:
        await asyncio.gather(home.serve_forever(), other.serve_forever())
    return 0


if __name__ == "__main__":
    try:
        sys.exit(asyncio.run(main()))
    except KeyboardInterrupt:
        sys.exit(0)
