#!/usr/bin/python3
"""A second independent WHIP receiver for onair's tests: GStreamer's webrtcbin.

Unlike the aiortc receiver (whip_receiver.py), webrtcbin answers transport-wide congestion
control (TWCC) feedback, as Broadcast Box (pion) and browsers do, so the box's congestion
controller can be tested against it. It accepts WHIP publishers on /api/whip, decodes the
H.264 it receives (rtph264depay waits for a key frame after any loss, so only intact pictures
count) and reports the CLOCK_MONOTONIC time of every decoded frame, like whip_receiver.py.

Run it with Debian's python3 (python3-gi, gir1.2-gst-plugins-bad-1.0, gstreamer1.0-nice,
gstreamer1.0-libav; scripts/setup.sh installs them):

    python3 tests/peers/webrtcbin_receiver.py --listen IP:PORT [--token KEY]

It prints `READY http://IP:PORT` once it accepts connections. API:
    POST   /api/whip          offer in, 201 + answer (all candidates) + Location
    DELETE /api/whip/<id>     204 (404 if unknown)
    GET    /control/stats     {"frames_decoded", "frame_times", "posts", "deletes",
                               "sessions": [{"id", "state", "frames_decoded", "width",
                               "height", "twcc": bool, "jitterbuffer": {"num-lost",
                               "num-late", "num-duplicates", "rtx-count",
                               "rtx-success-count"}}], "width", "height"}

Retransmissions are asked for, with `--nack gap` (the default), for a gap in the sequence
numbers only, not for a packet that is merely later than expected (rtpjitterbuffer's
`rtx-next-seqnum`, on by default, is turned off); with `--nack gstreamer`, as GStreamer asks
by default (`rtx-next-seqnum` on: also for the packet it expects next, as soon as it is late).

Networking rule: nothing may leave the machine. No STUN/TURN server; ICE gathers host
candidates on the listen address only (no TCP candidates, no UPnP).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Optional

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstSdp", "1.0")
gi.require_version("GstWebRTC", "1.0")
from gi.repository import GLib, Gst, GstSdp, GstWebRTC  # noqa: E402

# Bounds: an offer larger than this is refused; frame times are kept up to this many.
MAX_BODY = 64 * 1024
MAX_FRAME_TIMES = 1_000_000
GATHER_TIMEOUT_S = 5.0
TWCC_URI = "http://www.ietf.org/id/draft-holmer-rmcat-transport-wide-cc-extensions-01"


def log(*args: Any) -> None:
    print("webrtcbin_receiver:", *args, file=sys.stderr, flush=True)


def twcc_extension_id(sdp_text: str) -> Optional[int]:
    """The id the offer gives the transport-wide sequence number extension, if any."""
    for line in sdp_text.splitlines():
        if line.startswith("a=extmap:") and TWCC_URI in line:
            ident = line[len("a=extmap:"):].split()[0].split("/")[0]
            if ident.isdigit() and 1 <= int(ident) <= 255:
                return int(ident)
    return None


class Session:
    """One publisher: a pipeline with webrtcbin and, once media arrives, a decoder."""

    def __init__(self, rx: "Receiver", sid: str, key: str) -> None:
        self.rx = rx
        self.id = sid
        self.key = key
        self.state = "new"
        self.frames_decoded = 0
        self.width: Optional[int] = None
        self.height: Optional[int] = None
        self.twcc = False
        self.twcc_id: Optional[int] = None
        self.jitterbuffers: list[Any] = []
        self.pipeline = Gst.Pipeline.new(f"session-{sid[:8]}")
        self.webrtc = Gst.ElementFactory.make("webrtcbin", None)
        self.webrtc.set_property("bundle-policy", GstWebRTC.WebRTCBundlePolicy.MAX_BUNDLE)
        self.webrtc.set_property("latency", 200)
        # webrtcbin 1.22 hands out its ICE agent without a reference of its own; keep the
        # Python wrapper (which holds one) as long as the session, or the agent is freed.
        self.ice = self.webrtc.get_property("ice-agent")
        self.ice.set_property("ice-tcp", False)
        if not self.ice.emit("add-local-ip-address", rx.ice_host):
            raise RuntimeError(f"webrtcbin refused the ICE address {rx.ice_host}")
        self.pipeline.add(self.webrtc)
        self.webrtc.connect("pad-added", self._on_pad)
        self.webrtc.connect("on-new-transceiver", self._on_transceiver)
        self.webrtc.connect("notify::connection-state", self._on_state)
        children = self.webrtc.iterate_elements()
        while True:
            result, child = children.next()
            if result != Gst.IteratorResult.OK:
                break
            factory = child.get_factory()
            if factory is not None and factory.get_name() == "rtpbin":
                child.connect("new-jitterbuffer", self._on_jitterbuffer)

    # ---------------------------------------------------------------- negotiation

    def answer(self, offer_text: str) -> str:
        ok, sdp = GstSdp.SDPMessage.new_from_text(offer_text)
        if ok != GstSdp.SDPResult.OK:
            raise ValueError("unparsable SDP offer")
        if not any(sdp.get_media(i).get_media() == "video" for i in range(sdp.medias_len())):
            raise ValueError("offer has no video media section")
        self.twcc_id = twcc_extension_id(offer_text)
        self.pipeline.set_state(Gst.State.PLAYING)
        offer = GstWebRTC.WebRTCSessionDescription.new(GstWebRTC.WebRTCSDPType.OFFER, sdp)
        self._call("set-remote-description", offer)
        reply = self._call("create-answer", None)
        answer = reply.get_value("answer") if reply is not None else None
        if answer is None:
            raise ValueError("webrtcbin made no answer")
        self._call("set-local-description", answer)
        deadline = time.monotonic() + GATHER_TIMEOUT_S
        while (self.webrtc.get_property("ice-gathering-state")
               != GstWebRTC.WebRTCICEGatheringState.COMPLETE):
            if time.monotonic() > deadline:
                raise RuntimeError("ICE gathering did not complete")
            time.sleep(0.02)
        text = self.webrtc.get_property("local-description").sdp.as_text()
        self.twcc = TWCC_URI in text
        return text

    def _call(self, action: str, arg: Any) -> Optional[Gst.Structure]:
        promise = Gst.Promise.new()
        if arg is None:
            self.webrtc.emit(action, None, promise)
        else:
            self.webrtc.emit(action, arg, promise)
        # webrtcbin answers every promise on its own thread, with a reply or an error.
        if promise.wait() != Gst.PromiseResult.REPLIED:
            raise RuntimeError(f"{action} was not answered")
        reply = promise.get_reply()
        if reply is not None and reply.has_field("error"):
            raise ValueError(f"{action}: {reply.get_value('error').message}")
        return reply

    def _on_transceiver(self, _webrtc: Any, transceiver: Any) -> None:
        # Ask for retransmissions and send key-frame requests, as Broadcast Box (pion) does.
        transceiver.set_property("do-nack", True)
        # webrtcbin answers a header extension only if the transceiver's preferences name it:
        # accept the offer's transport-wide sequence numbers, so rtpbin sends TWCC feedback.
        if self.twcc_id is not None:
            caps = Gst.Caps.from_string(
                "application/x-rtp,media=video,encoding-name=H264,clock-rate=90000,"
                f"rtcp-fb-transport-cc=(boolean)true,extmap-{self.twcc_id}=(string){TWCC_URI}"
            )
            transceiver.set_property("codec-preferences", caps)

    def _on_jitterbuffer(self, _rtpbin: Any, jitterbuffer: Any, _session: int, _ssrc: int) -> None:
        # Pion (Broadcast Box) and browsers ask for a retransmission only for a gap in the
        # sequence numbers; rtpjitterbuffer by default also asks for the packet it expects
        # next as soon as it is late, so a queue that grows by a key frame's length reads as
        # loss and the sender resends packets that are still on their way.
        jitterbuffer.set_property("rtx-next-seqnum", self.rx.nack == "gstreamer")
        self.jitterbuffers.append(jitterbuffer)

    def jitter_stats(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for jb in self.jitterbuffers:
            st = jb.get_property("stats")
            for key in ("num-lost", "num-late", "num-duplicates", "rtx-count", "rtx-success-count"):
                ok, value = st.get_uint64(key)
                if ok:
                    out[key] = out.get(key, 0) + value
        return out

    def _on_state(self, *_args: Any) -> None:
        state = self.webrtc.get_property("connection-state")
        self.state = state.value_nick
        log(f"session {self.id[:8]}: {self.state}")

    # ---------------------------------------------------------------- media

    def _on_pad(self, _webrtc: Any, pad: Gst.Pad) -> None:
        if pad.get_direction() != Gst.PadDirection.SRC:
            return
        caps = pad.get_current_caps() or pad.query_caps(None)
        s = caps.get_structure(0)
        if s.get_string("encoding-name") != "H264":
            sink = Gst.ElementFactory.make("fakesink", None)
            self.pipeline.add(sink)
            sink.sync_state_with_parent()
            pad.link(sink.get_static_pad("sink"))
            return
        depay = Gst.ElementFactory.make("rtph264depay", None)
        # After a loss, drop everything until the next key frame, and ask for one: a smeared
        # picture does not count as decoded.
        depay.set_property("wait-for-keyframe", True)
        depay.set_property("request-keyframe", True)
        parse = Gst.ElementFactory.make("h264parse", None)
        dec = Gst.ElementFactory.make("avdec_h264", None)
        sink = Gst.ElementFactory.make("fakesink", None)
        sink.set_property("signal-handoffs", True)
        sink.set_property("sync", False)
        sink.connect("handoff", self._on_frame)
        for e in (depay, parse, dec, sink):
            self.pipeline.add(e)
        depay.link(parse)
        parse.link(dec)
        dec.link(sink)
        for e in (depay, parse, dec, sink):
            e.sync_state_with_parent()
        pad.link(depay.get_static_pad("sink"))

    def _on_frame(self, _sink: Any, _buffer: Gst.Buffer, pad: Gst.Pad) -> None:
        now = time.monotonic()
        if self.width is None:
            caps = pad.get_current_caps()
            if caps is not None:
                st = caps.get_structure(0)
                self.width = st.get_value("width")
                self.height = st.get_value("height")
        self.frames_decoded += 1
        self.rx.frame(now, self.width, self.height)

    def close(self) -> None:
        self.pipeline.set_state(Gst.State.NULL)
        self.state = "closed"

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "state": self.state,
            "frames_decoded": self.frames_decoded,
            "width": self.width,
            "height": self.height,
            "twcc": self.twcc,
            "jitterbuffer": self.jitter_stats(),
        }


class Receiver:
    def __init__(self, token: Optional[str], ice_host: str, nack: str = "gap") -> None:
        self.nack = nack
        self.token = token
        self.ice_host = ice_host
        self.lock = threading.Lock()
        self.live: dict[str, Session] = {}
        self.ended: list[Session] = []
        self.frame_times: list[float] = []
        self.frames_decoded = 0
        self.width: Optional[int] = None
        self.height: Optional[int] = None
        self.posts: list[dict[str, Any]] = []
        self.deletes: list[dict[str, Any]] = []

    def frame(self, now: float, width: Optional[int], height: Optional[int]) -> None:
        with self.lock:
            self.frames_decoded += 1
            if len(self.frame_times) < MAX_FRAME_TIMES:
                self.frame_times.append(now)
            self.width, self.height = width, height

    def stats(self) -> dict[str, Any]:
        with self.lock:
            return {
                "frames_decoded": self.frames_decoded,
                "frame_times": list(self.frame_times),
                "width": self.width,
                "height": self.height,
                "posts": list(self.posts),
                "deletes": list(self.deletes),
                "sessions": [s.to_json() for s in self.ended + list(self.live.values())],
            }


class Handler(BaseHTTPRequestHandler):
    rx: Receiver  # set on the class by main()
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt: str, *args: Any) -> None:
        log(fmt % args)

    def _reply(self, status: int, body: bytes = b"", headers: Optional[dict[str, str]] = None,
               content_type: str = "text/plain") -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(body)

    def _body(self) -> Optional[str]:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            self._reply(413, b"offer too large")
            return None
        return self.rfile.read(length).decode("utf-8", errors="replace")

    def do_POST(self) -> None:
        if self.path != "/api/whip":
            return self._reply(404, b"not found")
        body = self._body()
        if body is None:
            return
        rx = self.rx
        auth = self.headers.get("Authorization", "")
        key = auth[len("Bearer "):] if auth.startswith("Bearer ") else ""
        with rx.lock:
            rx.posts.append({"t": time.monotonic()})
        if not key or (rx.token is not None and key != rx.token):
            return self._reply(401, b"Authorization was invalid")
        with rx.lock:
            if any(s.key == key for s in rx.live.values()):
                return self._reply(400, b"session already has a host")
        session = Session(rx, str(uuid.uuid4()), key)
        try:
            answer = session.answer(body)
        except (ValueError, RuntimeError) as exc:
            session.close()
            return self._reply(400, str(exc).encode())
        with rx.lock:
            rx.live[session.id] = session
        log(f"session {session.id[:8]} created (twcc: {session.twcc})")
        self._reply(201, answer.encode(), {"Location": f"/api/whip/{session.id}"},
                    content_type="application/sdp")

    def do_DELETE(self) -> None:
        rx = self.rx
        sid = self.path.rsplit("/", 1)[-1]
        with rx.lock:
            session = rx.live.pop(sid, None) if self.path.startswith("/api/whip/") else None
            rx.deletes.append({"t": time.monotonic(), "found": session is not None})
        if session is None:
            return self._reply(404, b"no session found")
        session.close()
        with rx.lock:
            rx.ended.append(session)
        self._reply(204)

    def do_GET(self) -> None:
        if self.path != "/control/stats":
            return self._reply(404, b"not found")
        self._reply(200, json.dumps(self.rx.stats()).encode(), content_type="application/json")


def parse_listen(value: str) -> tuple[str, int]:
    host, _, port = value.rpartition(":")
    host = host.strip("[]")
    ipaddress.ip_address(host)
    return host, int(port)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="IP:PORT (PORT 0 picks one)")
    parser.add_argument("--token", help="the only accepted stream key")
    parser.add_argument("--nack", choices=("gap", "gstreamer"), default="gap",
                        help="ask again for gaps only, or as rtpjitterbuffer does by default")
    args = parser.parse_args()
    host, port = parse_listen(args.listen)
    Gst.init(None)
    for element in ("webrtcbin", "nicesrc", "rtph264depay", "avdec_h264"):
        if Gst.ElementFactory.find(element) is None:
            log(f"GStreamer element {element} is missing (run scripts/setup.sh)")
            return 2
    # webrtcbin's ICE agent and promises run on GLib's default main context.
    loop = GLib.MainLoop()
    threading.Thread(target=loop.run, daemon=True).start()
    rx = Receiver(args.token, host, args.nack)
    Handler.rx = rx
    server = ThreadingHTTPServer((host, port), Handler)
    server.daemon_threads = True

    def stop(*_args: Any) -> None:
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    print(f"READY http://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    finally:
        with rx.lock:
            sessions = list(rx.live.values())
        for s in sessions:
            s.close()
        loop.quit()
    return 0


if __name__ == "__main__":
    sys.exit(main())
