#!/usr/bin/env python3
"""Independent WHIP receiver for onair's tests: emulates Glimesh Broadcast Box's ingest.

It accepts WHIP publishers on /api/whip like Broadcast Box does (status codes, headers,
"session already has a host"), decodes the received H.264 with aiortc/PyAV, and offers a
JSON control API under /control/ so a test can script faulty answers, flood PLIs and read
back what was received. See README.md next to this file for the CLI and the API.

Networking rule: nothing may leave the machine. ICE uses no STUN/TURN server, host
candidates are restricted to one address (--ice-host), remote candidates that would need
DNS or mDNS resolution are dropped, and on loopback only loopback remote candidates are kept.
"""

from __future__ import annotations

import argparse
import array
import asyncio
import math
import base64
import binascii
import ipaddress
import json
import logging
import signal
import socket
import sys
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Any, Awaitable, Callable, Optional

import aioice.ice
from aiohttp import web
from aiortc import (
    RTCConfiguration,
    RTCPeerConnection,
    RTCRtpReceiver,
    RTCSessionDescription,
)
from aiortc import sdp as aiortc_sdp
from aiortc.exceptions import InvalidAccessError, InvalidStateError, OperationError
from aiortc.mediastreams import MediaStreamError

import pion_like

log = logging.getLogger("whip_receiver")

# Broadcast Box's Link header (it says "whep" in the rel, although this is the WHIP answer;
# we copy it verbatim because we emulate that server).
SSE_LINK_REL = "urn:ietf:params:whep:ext:core:server-sent-events"

# Memory bounds. frame_times is deliberately bounded only by MAX_FRAME_TIMES (tests read all
# of it); everything else is kept in small ring buffers.
MAX_FRAME_TIMES = 1_000_000
MAX_RECORDS = 10_000  # posts, deletes, patches
MAX_ENDED_SESSIONS = 1_000
MAX_KEYFRAME_TIMES = 10_000  # per session
MAX_SYNC_EVENTS = 10_000  # flashes and beep onsets kept per session
# The decoded sound over time: one [t, peak, samples] per AUDIO_LEVEL_S of it, the last
# MAX_AUDIO_LEVELS of them (10 minutes) per session.
AUDIO_LEVEL_S = 0.25
MAX_AUDIO_LEVELS = 2_400
# A beep onset: a sample above this (about -21 dBFS) after at least ONSET_QUIET_S of quiet.
ONSET_LEVEL = 3000
ONSET_QUIET_S = 0.2
# A flash: a frame brighter than this after a dark one (the sync pattern is black with one
# white frame per second).
FLASH_LUMA = 128.0
DARK_LUMA = 64.0
PC_CLOSE_TIMEOUT_S = 5.0

# Fields a scripted POST answer may carry; anything else is a typo and is refused.
SCRIPT_FIELDS = {
    "status",
    "retry_after",
    "body",
    "no_location",
    "hang",
    "headers",
    "content_type",
    "delay_s",
}


def mean_luma(frame: Any, rows: int = 16, step: int = 4) -> float:
    """Mean of the luma plane, sampled on `rows` evenly spaced lines at every `step`th pixel
    (cheap enough for every frame of a 720p stream)."""
    try:
        plane = frame.planes[0]
        view = memoryview(plane)
        width, height, stride = plane.width, plane.height, plane.line_size
    except (AttributeError, IndexError, TypeError, ValueError):
        return -1.0
    total = count = 0
    for i in range(rows):
        start = (height * (2 * i + 1) // (2 * rows)) * stride
        line = view[start:start + width:step]
        total += sum(line)
        count += len(line)
    return round(total / count, 1) if count else -1.0


def monotonic() -> float:
    # time.monotonic() is CLOCK_MONOTONIC on Linux, so a Rust test can compare these values
    # with its own clock_gettime(CLOCK_MONOTONIC).
    return time.monotonic()


# --------------------------------------------------------------------------------------
# ICE candidate restriction
# --------------------------------------------------------------------------------------


def restrict_host_candidates(ice_host: str) -> None:
    """Make aioice gather exactly one host candidate, on `ice_host`.

    aioice enumerates every interface address in aioice.ice.get_host_addresses() (and
    excludes 127.0.0.1, so by default loopback cannot be used at all). aiortc exposes no
    setting for this, so we replace that module-level function; Connection.gather_candidates
    looks it up at call time. We check afterwards that the gathered candidates are the
    expected ones (see Receiver._check_local_candidates), so a future aioice that stops
    calling it fails loudly instead of leaking other addresses.
    """
    addr = ipaddress.ip_address(ice_host)
    if not callable(getattr(aioice.ice, "get_host_addresses", None)):
        raise RuntimeError(
            "aioice.ice.get_host_addresses is missing: this aioice version gathers host "
            "candidates differently; use the versions pinned in requirements.txt"
        )

    def only_ice_host(use_ipv4: bool, use_ipv6: bool) -> list[str]:
        if (addr.version == 4 and use_ipv4) or (addr.version == 6 and use_ipv6):
            return [str(addr)]
        return []

    aioice.ice.get_host_addresses = only_ice_host


def check_bindable(ice_host: str) -> None:
    """Fail fast with a clear message if --ice-host is not an address of this machine."""
    family = socket.AF_INET6 if ipaddress.ip_address(ice_host).version == 6 else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as s:
        try:
            s.bind((ice_host, 0))
        except OSError as exc:
            raise SystemExit(
                f"whip_receiver: cannot bind UDP on --ice-host {ice_host}: {exc} "
                "(is the address configured in this network namespace?)"
            ) from exc


def filter_remote_candidates(sdp_text: str, loopback_only: bool) -> tuple[str, list[str]]:
    """Drop remote candidates that could make us send packets off the machine or resolve names.

    - mDNS (.local) and other hostnames would be resolved by aioice (multicast or DNS);
    - on loopback, a non-loopback candidate is never reachable and must not be tried.
    Returns the filtered SDP and the dropped candidate lines (for logging).
    """
    kept, dropped = [], []
    for line in sdp_text.splitlines():
        if line.startswith("a=candidate:"):
            parts = line[len("a=candidate:"):].split()
            address = parts[4] if len(parts) > 4 else ""
            try:
                ip = ipaddress.ip_address(address)
            except ValueError:
                dropped.append(line)
                continue
            if loopback_only and not ip.is_loopback:
                dropped.append(line)
                continue
        kept.append(line)
    return "\r\n".join(kept) + "\r\n", dropped


# --------------------------------------------------------------------------------------
# Broadcast Box request rules
# --------------------------------------------------------------------------------------


def resolve_bearer(auth_header: str) -> str:
    """The stream key Broadcast Box derives from an Authorization header ("" = invalid).

    Like its ResolveBearerToken: strip "Bearer ", and if the rest (spaces removed) is valid
    standard base64 use the decoded text (keys with other characters are sent base64);
    spaces become "_".
    """
    prefix = "Bearer "
    if not auth_header.startswith(prefix):
        return ""
    raw = auth_header[len(prefix):]
    try:
        decoded = base64.b64decode(raw.replace(" ", ""), validate=True)
    except (binascii.Error, ValueError):
        return raw.replace(" ", "_")
    # Go converts the bytes to a string whatever they are; keep them distinguishable.
    return decoded.decode("utf-8", errors="backslashreplace").replace(" ", "_")


def validate_offer(sdp_text: str) -> aiortc_sdp.SessionDescription:
    """Parse an SDP offer; raise ValueError with a reason if it is not a usable one.

    aiortc's parser accepts almost anything (even "this is not sdp" parses to an empty
    description), so check the structure ourselves.
    """
    if not sdp_text.strip():
        raise ValueError("empty offer")
    if not sdp_text.lstrip().startswith("v=0"):
        raise ValueError("offer is not SDP (does not start with v=0)")
    try:
        desc = aiortc_sdp.SessionDescription.parse(sdp_text)
    except (ValueError, IndexError, KeyError, TypeError) as exc:
        # aiortc raises whatever its line parsers hit on malformed input.
        raise ValueError(f"unparsable SDP: {type(exc).__name__}: {exc}") from exc
    if not any(m.kind == "video" for m in desc.media):
        raise ValueError("offer has no video media section")
    return desc


# --------------------------------------------------------------------------------------
# State
# --------------------------------------------------------------------------------------


@dataclass
class Session:
    id: str
    key: str  # the stream key as Broadcast Box resolves it (identity for the one-host rule)
    bearer: str  # the token as sent after "Bearer "
    pc: Optional[RTCPeerConnection]  # None once the session has ended
    created_t: float
    state: str = "new"
    connected_t: Optional[float] = None
    ended_t: Optional[float] = None
    end_reason: Optional[str] = None
    remote_ice_ufrag: Optional[str] = None
    offer_video_ssrc: Optional[int] = None
    frames_decoded: int = 0
    first_frame_t: Optional[float] = None
    last_frame_t: Optional[float] = None
    width: Optional[int] = None
    height: Optional[int] = None
    keyframes: int = 0
    keyframe_times: deque = field(default_factory=lambda: deque(maxlen=MAX_KEYFRAME_TIMES))
    audio_frames: int = 0
    # Decoded audio: samples per channel, format, level, and the sync pattern's events as RTP
    # timestamps (mapped to the sender's wall clock with its RTCP sender reports on output).
    audio_samples: int = 0
    audio_rate: Optional[int] = None
    audio_channels: Optional[int] = None
    audio_peak: int = 0
    first_audio_t: Optional[float] = None
    last_audio_t: Optional[float] = None
    audio_quiet: int = 0
    audio_onsets: deque = field(default_factory=lambda: deque(maxlen=MAX_SYNC_EVENTS))
    audio_levels: deque = field(default_factory=lambda: deque(maxlen=MAX_AUDIO_LEVELS))
    level_start_t: Optional[float] = None
    level_peak: int = 0
    level_samples: int = 0
    video_flashes: deque = field(default_factory=lambda: deque(maxlen=MAX_SYNC_EVENTS))
    last_luma: float = 0.0
    # kind -> (sender NTP seconds, RTP timestamp) of the last sender report
    sender_reports: dict = field(default_factory=dict)
    # kind -> the first RTP timestamp received: aiortc's decoded frames carry the RTP
    # timestamp less this origin as pts (its TimestampMapper).
    first_rtp: dict = field(default_factory=dict)
    plis_sent: int = 0
    plis_auto: int = 0
    video_receiver: Optional[RTCRtpReceiver] = None
    # The receiver's original (unwrapped) PLI sender, used by the flood.
    send_pli: Optional[Callable[[int], Awaitable[None]]] = None
    tasks: set = field(default_factory=set)

    @property
    def live(self) -> bool:
        return self.ended_t is None

    def reset_counters(self) -> None:
        self.frames_decoded = 0
        self.first_frame_t = self.last_frame_t = None
        self.width = self.height = None
        self.keyframes = 0
        self.keyframe_times.clear()
        self.audio_frames = 0
        self.audio_samples = 0
        self.audio_peak = 0
        self.first_audio_t = self.last_audio_t = None
        self.audio_onsets.clear()
        self.audio_levels.clear()
        self.level_start_t = None
        self.level_peak = 0
        self.level_samples = 0
        self.video_flashes.clear()
        self.plis_sent = 0
        self.plis_auto = 0

    def _wall(self, kind: str, rtp: int, rate: int) -> Optional[float]:
        """The sender's wall-clock time (NTP seconds) of an RTP timestamp, by the last
        sender report of that kind."""
        sr = self.sender_reports.get(kind)
        if sr is None:
            return None
        ntp, sr_rtp = sr
        diff = (rtp - sr_rtp) & 0xFFFFFFFF
        if diff >= 1 << 31:
            diff -= 1 << 32
        return ntp + diff / rate

    def sync_json(self) -> dict[str, Any]:
        flashes = [t for t in (self._wall("video", r, 90000) for r in self.video_flashes)
                   if t is not None]
        onsets = [t for t in (self._wall("audio", r, self.audio_rate or 48000)
                              for r in self.audio_onsets) if t is not None]
        offsets = []
        for f in flashes:
            near = min(onsets, key=lambda o: abs(o - f), default=None)
            if near is not None and abs(near - f) < 0.5:
                offsets.append(round((near - f) * 1000.0, 1))
        return {"video_flashes": flashes, "audio_onsets": onsets, "av_offsets_ms": offsets}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "key": self.bearer,
            "created_t": self.created_t,
            "connected_t": self.connected_t,
            "state": self.state,
            "ended_t": self.ended_t,
            "end_reason": self.end_reason,
            "frames_decoded": self.frames_decoded,
            "first_frame_t": self.first_frame_t,
            "last_frame_t": self.last_frame_t,
            "width": self.width,
            "height": self.height,
            "keyframes": self.keyframes,
            "keyframe_times": list(self.keyframe_times),
            "audio_frames": self.audio_frames,
            "audio_samples": self.audio_samples,
            "audio_rate": self.audio_rate,
            "audio_channels": self.audio_channels,
            "audio_peak_dbfs": (round(20 * math.log10(self.audio_peak / 32768.0), 1)
                                if self.audio_peak > 0 else None),
            "first_audio_t": self.first_audio_t,
            "last_audio_t": self.last_audio_t,
            "audio_levels": [list(x) for x in self.audio_levels],
            **self.sync_json(),
            "plis_sent": self.plis_sent,
            "plis_auto": self.plis_auto,
        }


class Stats:
    """Everything /control/reset clears."""

    def __init__(self) -> None:
        self.posts: deque = deque(maxlen=MAX_RECORDS)
        self.deletes: deque = deque(maxlen=MAX_RECORDS)
        self.patches: deque = deque(maxlen=MAX_RECORDS)
        self.frame_times: list[float] = []
        # Mean luma (0-255) of each decoded frame, parallel to frame_times: tells a test which
        # picture it was (a dark slate or a bright test pattern) without shipping pictures.
        self.frame_lumas: list[float] = []
        self.frames_decoded = 0
        self.first_frame_t: Optional[float] = None
        self.last_frame_t: Optional[float] = None
        self.width: Optional[int] = None
        self.height: Optional[int] = None
        self.keyframes = 0
        self.plis_sent = 0
        self.plis_auto = 0
        self.pli_floods: deque = deque(maxlen=MAX_RECORDS)
        # Packets asked for again, summed over every NACK sent.
        self.nacked_packets = 0
        self.nacks_sent = 0
        # RTP packets received on the video track by payload type (a resending on the RTX
        # SSRC carries the RTX payload type).
        self.video_payload_types: dict[int, int] = {}


class Receiver:
    def __init__(self, token: Optional[str], ice_host: str, connect_timeout_s: float,
                 nack_mode: str = "aiortc") -> None:
        # "aiortc": aiortc's own NACKs (once per new gap); "pion": Broadcast Box's (pion_like.py).
        self.nack_mode = nack_mode
        self.path_delay = pion_like.PathDelay()
        self.token_key = resolve_bearer("Bearer " + token) if token is not None else None
        self.ice_host = ice_host
        self.loopback_only = ipaddress.ip_address(ice_host).is_loopback
        self.connect_timeout_s = connect_timeout_s
        self.live: dict[str, Session] = {}  # by session id
        self.by_key: dict[str, Session] = {}
        self.ended: deque = deque(maxlen=MAX_ENDED_SESSIONS)
        self.script: deque = deque()
        self.stats = Stats()
        self.flood_task: Optional[asyncio.Task] = None
        self.flood_record: Optional[dict[str, Any]] = None
        self.shutting_down = asyncio.Event()
        self._bg: set = set()  # background tasks, referenced so they are not collected

    # ---------------------------------------------------------------- helpers

    def _spawn(self, coro: Awaitable[Any], owner: Optional[set] = None) -> asyncio.Task:
        task = asyncio.ensure_future(coro)
        bucket = self._bg if owner is None else owner
        bucket.add(task)
        task.add_done_callback(bucket.discard)
        task.add_done_callback(self._log_task_failure)
        return task

    @staticmethod
    def _log_task_failure(task: asyncio.Task) -> None:
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    def _new_pc(self) -> RTCPeerConnection:
        # iceServers=[]: aiortc's default configuration would contact a public STUN server.
        return RTCPeerConnection(RTCConfiguration(iceServers=[]))

    def _check_local_candidates(self, pc: RTCPeerConnection) -> None:
        desc = aiortc_sdp.SessionDescription.parse(pc.localDescription.sdp)
        addrs = {c.ip for m in desc.media for c in m.ice_candidates}
        wanted = ipaddress.ip_address(self.ice_host)
        if not addrs or any(ipaddress.ip_address(a) != wanted for a in addrs):
            raise RuntimeError(
                f"ICE gathered candidates on {sorted(addrs)}, expected only {self.ice_host}: "
                "the host-candidate restriction did not take effect"
            )

    async def _prepare_answer(self, pc: RTCPeerConnection, offer: aiortc_sdp.SessionDescription,
                              offer_text: str) -> str:
        """Negotiate like Broadcast Box: H.264 only for video, Opus only for audio."""
        # Codec negotiation happens inside setRemoteDescription using the preferences of
        # the transceivers that already exist, so create one per offered m-line first.
        for media in offer.media:
            if media.kind not in ("audio", "video"):
                continue
            transceiver = pc.addTransceiver(media.kind, direction="recvonly")
            # Broadcast Box registers no RTX format (its source at 9f43de2), so pion's answer
            # never accepts the publisher's: in pion mode neither does this one.
            video = ("video/h264",) if self.nack_mode == "pion" else ("video/h264", "video/rtx")
            wanted = {"video": video, "audio": ("audio/opus",)}[media.kind]
            caps = RTCRtpReceiver.getCapabilities(media.kind).codecs
            transceiver.setCodecPreferences([c for c in caps if c.mimeType.lower() in wanted])
        filtered, dropped = filter_remote_candidates(offer_text, self.loopback_only)
        for line in dropped:
            log.warning("ignoring remote candidate (not an IP literal in scope): %s", line)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=filtered, type="offer"))
        answer = await pc.createAnswer()
        # setLocalDescription gathers all candidates before returning: the answer is
        # non-trickle, like Broadcast Box's.
        await pc.setLocalDescription(answer)
        self._check_local_candidates(pc)
        return pc.localDescription.sdp

    # ---------------------------------------------------------------- sessions

    async def _create_session(self, key: str, bearer: str, offer: aiortc_sdp.SessionDescription,
                              offer_text: str) -> tuple[Session, str]:
        pc = self._new_pc()
        session = Session(id=str(uuid.uuid4()), key=key, bearer=bearer, pc=pc,
                          created_t=monotonic())
        video = next(m for m in offer.media if m.kind == "video")
        session.remote_ice_ufrag = video.ice.usernameFragment if video.ice else None
        fid = next((g for g in video.ssrc_group if g.semantic == "FID"), None)
        if fid and fid.items:
            session.offer_video_ssrc = int(fid.items[0])
        elif video.ssrc:
            session.offer_video_ssrc = video.ssrc[0].ssrc
        # Reserve the key before the first await, so two concurrent POSTs on one key
        # cannot both succeed.
        self.live[session.id] = session
        self.by_key[key] = session

        @pc.on("connectionstatechange")
        async def on_state() -> None:
            state = pc.connectionState
            if not session.live:
                return
            session.state = state
            log.info("session %s: connection %s", session.id, state)
            if state == "connected" and session.connected_t is None:
                session.connected_t = monotonic()
            elif state in ("failed", "closed"):
                await self.end_session(session, state)

        @pc.on("track")
        def on_track(track: Any) -> None:
            self._spawn(self._consume(session, track), session.tasks)

        try:
            answer = await self._prepare_answer(pc, offer, offer_text)
        except BaseException:
            # Not a session from the client's point of view: free the key, keep no record.
            await self.end_session(session, "offer-rejected", keep_record=False)
            raise
        for transceiver in pc.getTransceivers():
            if transceiver.kind == "video" and session.video_receiver is None:
                self._hook_pli(session, transceiver.receiver)
                self._hook_nacks(session, transceiver.receiver)
            self._hook_sender_reports(session, transceiver.kind, transceiver.receiver)
            if self.nack_mode == "pion":
                pion_like.no_report_timestamps(transceiver.receiver)
            self.path_delay.install_rtcp(transceiver.receiver)
        self.path_delay.install_ice(pc)
        self._spawn(self._connect_watchdog(session), session.tasks)
        return session, answer

    def _hook_pli(self, session: Session, receiver: RTCRtpReceiver) -> None:
        """Count the PLIs aiortc sends on its own (on packet loss / decode errors).

        RTCRtpReceiver has no public PLI API; its internal coroutine _send_rtcp_pli(ssrc)
        is what it calls itself. We keep the original for the flood and shadow it on this
        instance with a counting wrapper.
        """
        original = getattr(receiver, "_send_rtcp_pli", None)
        if original is None:
            raise RuntimeError("aiortc RTCRtpReceiver has no _send_rtcp_pli: unsupported aiortc version")
        session.video_receiver = receiver
        session.send_pli = original

        async def counting_pli(media_ssrc: int) -> None:
            session.plis_auto += 1
            self.stats.plis_auto += 1
            await original(media_ssrc)

        receiver._send_rtcp_pli = counting_pli

    def _hook_nacks(self, session: Session, receiver: RTCRtpReceiver) -> None:
        """Count the NACKs sent (and the packets they ask for); in pion mode, ask like pion."""
        original = getattr(receiver, "_send_rtcp_nack", None)
        if original is None:
            raise RuntimeError("aiortc RTCRtpReceiver has no _send_rtcp_nack: unsupported aiortc version")

        async def counting_nack(media_ssrc: int, lost: list[int]) -> None:
            self.stats.nacks_sent += 1
            self.stats.nacked_packets += len(lost)
            await original(media_ssrc, lost)

        receiver._send_rtcp_nack = counting_nack
        if self.nack_mode == "pion":
            self._spawn(pion_like.pion_nacks(receiver)(), session.tasks)

    def _hook_sender_reports(self, session: Session, kind: str, receiver: RTCRtpReceiver) -> None:
        """Keep each track's last RTCP sender report: it maps the track's RTP clock to the
        sender's wall clock, which is how a player lines sound up with pictures."""
        original = getattr(receiver, "_handle_rtcp_packet", None)
        if original is None:
            raise RuntimeError("aiortc RTCRtpReceiver has no _handle_rtcp_packet: unsupported aiortc version")

        async def recording(packet: Any) -> None:
            info = getattr(packet, "sender_info", None)
            if info is not None:
                ntp = (info.ntp_timestamp >> 32) + (info.ntp_timestamp & 0xFFFFFFFF) / 2**32
                session.sender_reports[kind] = (ntp, info.rtp_timestamp)
            await original(packet)

        receiver._handle_rtcp_packet = recording
        original_rtp = receiver._handle_rtp_packet

        async def first_rtp(packet: Any, *args: Any, **kwargs: Any) -> None:
            session.first_rtp.setdefault(kind, packet.timestamp)
            if kind == "video":
                counts = self.stats.video_payload_types
                counts[packet.payload_type] = counts.get(packet.payload_type, 0) + 1
            await original_rtp(packet, *args, **kwargs)

        receiver._handle_rtp_packet = first_rtp

    @staticmethod
    def _take_audio(session: Session, frame: Any, now: float) -> None:
        samples = frame.samples
        channels = len(frame.layout.channels)
        session.audio_samples += samples
        session.audio_rate = frame.sample_rate
        session.audio_channels = channels
        if session.first_audio_t is None:
            session.first_audio_t = now
        session.last_audio_t = now
        origin = session.first_rtp.get("audio")
        if frame.format.name != "s16" or frame.pts is None or origin is None:
            return
        rtp_base = origin + frame.pts
        data = array.array("h", bytes(frame.planes[0])[: samples * channels * 2])
        quiet_needed = int(ONSET_QUIET_S * frame.sample_rate)
        peak = 0
        for i in range(samples):
            v = abs(data[i * channels])
            if v > peak:
                peak = v
            if v > ONSET_LEVEL:
                if session.audio_quiet >= quiet_needed:
                    session.audio_onsets.append((rtp_base + i) & 0xFFFFFFFF)
                session.audio_quiet = 0
            else:
                session.audio_quiet += 1
        session.audio_peak = max(session.audio_peak, peak)
        if session.level_start_t is None:
            session.level_start_t = now
        session.level_peak = max(session.level_peak, peak)
        session.level_samples += samples
        if now - session.level_start_t >= AUDIO_LEVEL_S:
            session.audio_levels.append((round(now, 3), session.level_peak, session.level_samples))
            session.level_start_t = None
            session.level_peak = 0
            session.level_samples = 0

    async def _connect_watchdog(self, session: Session) -> None:
        # Broadcast Box (pion) gives up on a peer that never connects; aiortc's own ICE
        # checks can take longer, so bound it here to free the key.
        await asyncio.sleep(self.connect_timeout_s)
        if session.live and session.connected_t is None:
            log.warning("session %s: not connected after %.0f s, closing", session.id,
                        self.connect_timeout_s)
            await self.end_session(session, "connect-timeout")

    async def _consume(self, session: Session, track: Any) -> None:
        """Pull decoded frames (the queue inside the track is unbounded, so always drain it)."""
        kind = track.kind
        while True:
            try:
                frame = await track.recv()
            except MediaStreamError:
                return  # the track ended: the peer connection closed
            now = monotonic()
            if kind != "video":
                session.audio_frames += 1
                self._take_audio(session, frame, now)
                continue
            st = self.stats
            session.frames_decoded += 1
            st.frames_decoded += 1
            if session.first_frame_t is None:
                session.first_frame_t = now
            if st.first_frame_t is None:
                st.first_frame_t = now
            session.last_frame_t = st.last_frame_t = now
            session.width = st.width = frame.width
            session.height = st.height = frame.height
            luma = mean_luma(frame)
            if len(st.frame_times) < MAX_FRAME_TIMES:
                st.frame_times.append(now)
                st.frame_lumas.append(luma)
            origin = session.first_rtp.get("video")
            if (luma > FLASH_LUMA and session.last_luma < DARK_LUMA and frame.pts is not None
                    and origin is not None):
                session.video_flashes.append((origin + frame.pts) & 0xFFFFFFFF)
            session.last_luma = luma
            # FFmpeg marks IDR pictures (and recovery points) as key frames.
            if frame.key_frame:
                session.keyframes += 1
                session.keyframe_times.append(now)
                st.keyframes += 1

    async def end_session(self, session: Session, reason: str, keep_record: bool = True) -> None:
        """Forget a session (frees its key) and close its peer connection."""
        if not session.live:
            return
        session.ended_t = monotonic()
        session.end_reason = reason
        self.live.pop(session.id, None)
        if self.by_key.get(session.key) is session:
            del self.by_key[session.key]
        if keep_record:
            self.ended.append(session)
        log.info("session %s ended: %s", session.id, reason)
        try:
            await asyncio.wait_for(session.pc.close(), PC_CLOSE_TIMEOUT_S)
        except asyncio.TimeoutError:
            log.error("session %s: peer connection did not close within %.0f s",
                      session.id, PC_CLOSE_TIMEOUT_S)
        current = asyncio.current_task()
        for task in list(session.tasks):
            if task is not current:
                task.cancel()
        session.state = session.pc.connectionState
        # Drop references to aiortc objects (a closed peer connection still holds its
        # transports, jitter buffers and codecs); only the counters stay in `ended`.
        session.pc = None
        session.video_receiver = None
        session.send_pli = None

    def _media_ssrc(self, session: Session) -> Optional[int]:
        if session.offer_video_ssrc is not None:
            return session.offer_video_ssrc
        receiver = session.video_receiver
        if receiver is None:
            return None
        sources = sorted(receiver.getSynchronizationSources(), key=lambda s: s.timestamp)
        return sources[-1].source if sources else None

    # ---------------------------------------------------------------- PLI flood

    async def _flood(self, record: dict[str, Any], duration_s: float, interval_s: float,
                     session_id: Optional[str]) -> None:
        start = monotonic()
        end = start + duration_s
        next_t = start
        try:
            while True:
                now = monotonic()
                if now >= end:
                    break
                # Looked up on every tick: a publisher that reconnects during the flood
                # gets flooded too, as with Broadcast Box.
                targets = [self.live[session_id]] if session_id in self.live else (
                    [] if session_id else list(self.live.values()))
                for s in targets:
                    ssrc = self._media_ssrc(s)
                    if s.state != "connected" or s.send_pli is None or ssrc is None:
                        continue
                    await s.send_pli(ssrc)
                    s.plis_sent += 1
                    self.stats.plis_sent += 1
                    record["sent"] += 1
                next_t += interval_s
                # Do not burst to catch up after a stall: keep the interval between PLIs.
                next_t = max(next_t, monotonic())
                await asyncio.sleep(next_t - monotonic())
        finally:
            record["end_t"] = monotonic()

    # ---------------------------------------------------------------- shutdown

    async def shutdown(self) -> None:
        self.shutting_down.set()
        if self.flood_task:
            self.flood_task.cancel()
        sessions = list(self.live.values())
        results = await asyncio.gather(*(self.end_session(s, "shutdown") for s in sessions),
                                       return_exceptions=True)
        # Keep shutting the others down, but do not hide a failure.
        for session, result in zip(sessions, results):
            if isinstance(result, BaseException):
                log.error("session %s: error while closing", session.id, exc_info=result)


# --------------------------------------------------------------------------------------
# HTTP handlers
# --------------------------------------------------------------------------------------

def text(status: int, body: str = "", headers: Optional[dict[str, str]] = None) -> web.Response:
    if not body and status >= 400:
        body = f"{status}\n"
    return web.Response(status=status, text=body, headers=headers, content_type="text/plain")


def json_response(obj: Any, status: int = 200) -> web.Response:
    return web.Response(status=status, text=json.dumps(obj), content_type="application/json")


def location_headers(session_id: str) -> dict[str, str]:
    return {
        "Location": f"/api/whip/{session_id}",  # relative, like Broadcast Box
        "Link": f'</api/sse/{session_id}>; rel="{SSE_LINK_REL}"; events="status"',
    }


class Handlers:
    def __init__(self, rx: Receiver) -> None:
        self.rx = rx

    # ------------------------------------------------------------ /api/whip

    async def post_whip(self, request: web.Request) -> web.StreamResponse:
        rx = self.rx
        t, wall = monotonic(), time.time()  # arrival time: tests measure retry intervals
        auth = request.headers.get("Authorization")
        key = resolve_bearer(auth) if auth else ""
        authorized = bool(key) and (rx.token_key is None or key == rx.token_key)
        body = (await request.read()).decode("utf-8", errors="replace")
        record: dict[str, Any] = {
            "t": t,
            "wall": wall,
            "status": None,
            "session": None,
            "authorized": authorized,
            # As sent; Broadcast Box base64-decodes it when it can (see resolve_bearer).
            "key": auth[len("Bearer "):] if auth and auth.startswith("Bearer ") else None,
            "scripted": False,
            "hung": False,
            "content_type": request.headers.get("Content-Type"),
        }
        rx.stats.posts.append(record)
        if rx.script:
            return await self._scripted(request, rx.script.popleft(), record, body)
        response = await self._post_normal(auth, key, authorized, body, record)
        record["status"] = response.status
        return response

    async def _post_normal(self, auth: Optional[str], key: str, authorized: bool, body: str,
                           record: dict[str, Any]) -> web.Response:
        rx = self.rx
        if not auth:
            return text(400, "Authorization was not set")
        if not key:
            return text(401, "Authorization was invalid")
        if not authorized:
            log.info("POST refused: wrong stream key")
            return text(401)
        if not body:
            return text(400, "error reading offer")
        try:
            offer = validate_offer(body)
        except ValueError as exc:
            log.info("POST refused: %s", exc)
            return text(400, str(exc))
        if key in rx.by_key:
            log.info("POST refused: key already has live session %s", rx.by_key[key].id)
            return text(400, "session already has a host")
        try:
            session, answer = await rx._create_session(key, record["key"], offer, body)
        except (ValueError, OperationError, InvalidAccessError, InvalidStateError) as exc:
            # aiortc's verdict on the offer (e.g. no common codec, no ICE credentials).
            log.info("POST refused by aiortc: %s: %s", type(exc).__name__, exc)
            return text(400, f"{type(exc).__name__}: {exc}")
        record["session"] = session.id
        log.info("session %s created for key %r", session.id, record["key"])
        return web.Response(status=201, text=answer, content_type="application/sdp",
                            headers=location_headers(session.id))

    async def _scripted(self, request: web.Request, step: dict[str, Any], record: dict[str, Any],
                        body: str) -> web.StreamResponse:
        record["scripted"] = True
        log.info("POST answered by script: %s", step)
        if step.get("hang"):
            record["hung"] = True
            # Hold the request open until the client gives up (or we shut down). aiohttp
            # does not cancel handlers on disconnect by default, so poll the transport.
            while not self.rx.shutting_down.is_set():
                transport = request.transport
                if transport is None or transport.is_closing():
                    break
                await asyncio.sleep(0.05)
            record["hang_end_t"] = monotonic()
            if request.transport is not None:
                request.transport.close()
            # Nothing is sent: the connection is already closed.
            return web.Response(status=499)
        if step.get("delay_s"):
            await asyncio.sleep(float(step["delay_s"]))
        status = int(step["status"])
        headers = {}
        if "retry_after" in step:
            headers["Retry-After"] = str(step["retry_after"])
        content = step.get("body")
        content_type = step.get("content_type")
        if status == 201:
            fake_id = str(uuid.uuid4())  # never registered: DELETE on it gives 404
            if not step.get("no_location"):
                headers.update(location_headers(fake_id))
            if content is None:
                content = await self._throwaway_answer(body)
            content_type = content_type or "application/sdp"
        response = web.Response(status=status, text=content or "", headers=headers,
                                content_type=content_type or "text/plain")
        # Extra headers last, so a script can override any of the above.
        for name, value in step.get("headers", {}).items():
            response.headers[str(name)] = str(value)
        record["status"] = status
        return response

    async def _throwaway_answer(self, offer_text: str) -> str:
        """A real SDP answer for a scripted 201, from a peer connection closed at once.

        The client can parse it, but its ICE will never connect and no session (and no key
        reservation) exists. Empty if the offer itself is unusable.
        """
        try:
            offer = validate_offer(offer_text)
        except ValueError as exc:
            log.warning("scripted 201: offer unusable (%s), answering with an empty body", exc)
            return ""
        pc = self.rx._new_pc()
        try:
            return await self.rx._prepare_answer(pc, offer, offer_text)
        except (ValueError, OperationError, InvalidAccessError, InvalidStateError) as exc:
            log.warning("scripted 201: aiortc refused the offer (%s), empty body", exc)
            return ""
        finally:
            await pc.close()

    async def delete_resource(self, request: web.Request) -> web.Response:
        rx = self.rx
        sid = request.match_info["id"]
        record = {"t": monotonic(), "wall": time.time(), "session": sid, "status": None}
        rx.stats.deletes.append(record)
        session = rx.live.get(sid)
        if session is None:
            record["status"] = 404
            return text(404, "session not found")
        await rx.end_session(session, "deleted")
        record["status"] = 204
        return web.Response(status=204)

    async def patch_resource(self, request: web.Request) -> web.Response:
        """Trickle ICE (204) and ICE restart (400), as Broadcast Box answers them."""
        rx = self.rx
        sid = request.match_info["id"]
        record = {"t": monotonic(), "wall": time.time(), "session": sid, "status": None}
        rx.stats.patches.append(record)
        body = (await request.read()).decode("utf-8", errors="replace")
        response = await self._patch(sid, request.headers.get("Content-Type", ""), body)
        record["status"] = response.status
        return response

    async def _patch(self, sid: str, content_type: str, body: str) -> web.Response:
        rx = self.rx
        session = rx.live.get(sid)
        if session is None:
            return text(404, "session not found")
        if content_type.split(";")[0].strip().lower() != "application/trickle-ice-sdpfrag":
            return text(400, "Invalid patch request")
        ufrag = next((ln.split(":", 1)[1].strip() for ln in body.splitlines()
                      if ln.startswith("a=ice-ufrag:")), None)
        if ufrag is not None and ufrag != session.remote_ice_ufrag:
            return text(400, "ice restart not supported")
        filtered, dropped = filter_remote_candidates(body, rx.loopback_only)
        for line in dropped:
            log.warning("PATCH: ignoring remote candidate: %s", line)
        mid = next((ln.split(":", 1)[1].strip() for ln in body.splitlines()
                    if ln.startswith("a=mid:")), None)
        if mid is None:
            mid = next((t.mid for t in session.pc.getTransceivers() if t.mid is not None), None)
        for line in filtered.splitlines():
            if line.startswith("a=candidate:"):
                try:
                    candidate = aiortc_sdp.candidate_from_sdp(line[len("a="):])
                except (ValueError, IndexError) as exc:
                    return text(400, f"bad candidate: {exc}")
                candidate.sdpMid = mid
                await session.pc.addIceCandidate(candidate)
        return web.Response(status=204)

    async def method_not_allowed(self, request: web.Request) -> web.Response:
        return text(405, "method not allowed")

    # ------------------------------------------------------------ /control

    async def _json_body(self, request: web.Request) -> dict[str, Any]:
        raw = await request.text()
        if not raw.strip():
            return {}
        try:
            obj = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise web.HTTPBadRequest(text=f"invalid JSON: {exc}") from exc
        if not isinstance(obj, dict):
            raise web.HTTPBadRequest(text="expected a JSON object")
        return obj

    async def control_script(self, request: web.Request) -> web.Response:
        obj = await self._json_body(request)
        posts = obj.get("posts")
        if not isinstance(posts, list):
            raise web.HTTPBadRequest(text='expected {"posts": [ ... ]}')
        for i, step in enumerate(posts):
            problem = script_step_problem(step)
            if problem:
                raise web.HTTPBadRequest(text=f"posts[{i}]: {problem}")
        if obj.get("replace"):
            self.rx.script.clear()
        self.rx.script.extend(posts)
        return json_response({"queued": len(self.rx.script)})

    async def control_stats(self, request: web.Request) -> web.Response:
        rx = self.rx
        st = rx.stats
        sessions = list(rx.ended) + list(rx.live.values())
        sessions.sort(key=lambda s: s.created_t)
        return json_response({
            "now": monotonic(),
            "posts": list(st.posts),
            "deletes": list(st.deletes),
            "patches": list(st.patches),
            "sessions": [s.to_json() for s in sessions],
            "live_sessions": [s.id for s in rx.live.values()],
            "frames_decoded": st.frames_decoded,
            "first_frame_t": st.first_frame_t,
            "last_frame_t": st.last_frame_t,
            "width": st.width,
            "height": st.height,
            "keyframes": st.keyframes,
            "frame_times": st.frame_times,
            "frame_lumas": st.frame_lumas,
            "plis_sent": st.plis_sent,
            "plis_auto": st.plis_auto,
            "pli_floods": list(st.pli_floods),
            "pli_flood_active": bool(rx.flood_task and not rx.flood_task.done()),
            "script_pending": len(rx.script),
            "nack_mode": rx.nack_mode,
            "nacks_sent": st.nacks_sent,
            "nacked_packets": st.nacked_packets,
            "video_payload_types": {str(k): v for k, v in st.video_payload_types.items()},
            "path_delay_ms": round(rx.path_delay.delay_s * 1000.0, 1),
            "own_rtts": list(rx.path_delay.own_rtts),
        })

    async def control_path(self, request: web.Request) -> web.Response:
        body = await self._json_body(request)
        delay = body.get("delay_ms")
        if not isinstance(delay, (int, float)) or not 0 <= delay <= 2000:
            return text(400, "delay_ms: a number of milliseconds, 0 to 2000")
        self.rx.path_delay.delay_s = delay / 1000.0
        return json_response({"delay_ms": delay})

    async def control_pli_flood(self, request: web.Request) -> web.Response:
        rx = self.rx
        obj = await self._json_body(request)
        try:
            duration_s = float(obj.get("duration_s", 2.0))
            interval_ms = float(obj.get("interval_ms", 5))
        except (TypeError, ValueError) as exc:
            raise web.HTTPBadRequest(text=f"duration_s/interval_ms must be numbers: {exc}") from exc
        if not 0 < duration_s <= 600 or not 1 <= interval_ms <= 60_000:
            raise web.HTTPBadRequest(text="need 0 < duration_s <= 600 and 1 <= interval_ms <= 60000")
        session_id = obj.get("session")
        if session_id is not None and session_id not in rx.live:
            raise web.HTTPNotFound(text=f"no live session {session_id}")
        if rx.flood_task and not rx.flood_task.done():
            rx.flood_task.cancel()  # a new flood replaces the running one
        record = {"start_t": monotonic(), "end_t": None, "duration_s": duration_s,
                  "interval_ms": interval_ms, "session": session_id, "sent": 0}
        rx.stats.pli_floods.append(record)
        rx.flood_record = record
        rx.flood_task = rx._spawn(rx._flood(record, duration_s, interval_ms / 1000.0, session_id))
        return json_response({"started": True, "start_t": record["start_t"],
                              "until_t": record["start_t"] + duration_s})

    async def control_drop(self, request: web.Request) -> web.Response:
        """Server-side end of sessions (as if the server dropped them), for fault tests."""
        rx = self.rx
        obj = await self._json_body(request)
        session_id = obj.get("session")
        if session_id is not None and session_id not in rx.live:
            raise web.HTTPNotFound(text=f"no live session {session_id}")
        targets = [rx.live[session_id]] if session_id else list(rx.live.values())
        for s in targets:
            await rx.end_session(s, "dropped")
        return json_response({"dropped": [s.id for s in targets]})

    async def control_reset(self, request: web.Request) -> web.Response:
        rx = self.rx
        rx.stats = Stats()
        if rx.flood_record is not None and rx.flood_task and not rx.flood_task.done():
            rx.stats.pli_floods.append(rx.flood_record)
        rx.ended.clear()
        for s in rx.live.values():
            s.reset_counters()
        return json_response({"reset": True, "t": monotonic()})


def script_step_problem(step: Any) -> Optional[str]:
    if not isinstance(step, dict):
        return "each entry must be an object"
    unknown = set(step) - SCRIPT_FIELDS
    if unknown:
        return f"unknown fields {sorted(unknown)} (known: {sorted(SCRIPT_FIELDS)})"
    if step.get("hang"):
        return None
    status = step.get("status")
    if not isinstance(status, int) or isinstance(status, bool) or not 200 <= status <= 599:
        return "needs an integer status between 200 and 599 (or hang: true)"
    if "body" in step and not isinstance(step["body"], str):
        return "body must be a string"
    if "headers" in step and not (isinstance(step["headers"], dict)):
        return "headers must be an object"
    if "delay_s" in step and not (isinstance(step["delay_s"], (int, float))
                                  and 0 <= step["delay_s"] <= 600):
        return "delay_s must be a number between 0 and 600"
    return None


def build_app(rx: Receiver) -> web.Application:
    h = Handlers(rx)
    app = web.Application()
    app.router.add_post("/api/whip", h.post_whip)
    app.router.add_route("*", "/api/whip", h.method_not_allowed)
    app.router.add_delete("/api/whip/{id}", h.delete_resource)
    app.router.add_patch("/api/whip/{id}", h.patch_resource)
    app.router.add_route("*", "/api/whip/{id}", h.method_not_allowed)
    app.router.add_post("/control/script", h.control_script)
    app.router.add_get("/control/stats", h.control_stats)
    app.router.add_post("/control/pli_flood", h.control_pli_flood)
    app.router.add_post("/control/drop", h.control_drop)
    app.router.add_post("/control/reset", h.control_reset)
    app.router.add_post("/control/path", h.control_path)
    return app


# --------------------------------------------------------------------------------------
# main
# --------------------------------------------------------------------------------------

def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = value.rpartition(":")
    if not sep or not host:
        raise argparse.ArgumentTypeError("expected HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080")
    host = host.strip("[]")
    try:
        ipaddress.ip_address(host)
        port_n = int(port)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"bad --listen {value!r}: {exc} (HOST must be an IP)") from exc
    if not 0 <= port_n <= 65535:
        raise argparse.ArgumentTypeError(f"bad port {port_n}")
    return host, port_n


def tls_context(cert: Optional[str], key: Optional[str]) -> Optional["ssl.SSLContext"]:
    """HTTPS with the test's certificate chain and key (PEM), or plain HTTP without them."""
    if cert is None:
        return None
    import ssl

    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    return context


async def run(args: argparse.Namespace) -> int:
    host, port = args.listen
    ice_host = args.ice_host or host
    if ipaddress.ip_address(ice_host).is_unspecified:
        raise SystemExit("whip_receiver: --listen is a wildcard address; give --ice-host IP")
    check_bindable(ice_host)
    restrict_host_candidates(ice_host)

    rx = Receiver(args.token, ice_host, args.connect_timeout, args.nack)
    app = build_app(rx)
    runner = web.AppRunner(app, access_log=log if args.verbose else None)
    await runner.setup()
    family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise SystemExit(f"whip_receiver: cannot listen on {host}:{port}: {exc}") from exc
    # Bind the socket ourselves so that port 0 works and READY reports the real port.
    tls = tls_context(args.tls_cert, args.tls_key)
    site = web.SockSite(runner, sock, ssl_context=tls)
    await site.start()
    actual_port = sock.getsockname()[1]
    shown = f"[{host}]" if family == socket.AF_INET6 else host
    log.info("listening on %s:%d, ICE host candidate %s, token %s", shown, actual_port,
             ice_host, "required" if args.token is not None else "any")

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    print(f"READY {'https' if tls else 'http'}://{shown}:{actual_port}", flush=True)

    await stop.wait()
    log.info("shutting down")
    await rx.shutdown()
    await runner.cleanup()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, type=parse_listen,
                        help="HOST:PORT for HTTP (PORT 0 picks a free port; see the READY line)")
    parser.add_argument("--token", help="the only accepted stream key (default: any key)")
    parser.add_argument("--ice-host", help="the only IP for host ICE candidates (default: listen host)")
    parser.add_argument("--connect-timeout", type=float, default=30.0,
                        help="end a session that has not connected after this many seconds")
    parser.add_argument("--nack", choices=("aiortc", "pion"), default="aiortc",
                        help="how missing packets are asked for again (see pion_like.py)")
    parser.add_argument("--tls-cert", help="serve HTTPS with this certificate chain (PEM)")
    parser.add_argument("--tls-key", help="the private key of --tls-cert (PEM)")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    args = parser.parse_args()
    if (args.tls_cert is None) != (args.tls_key is None):
        parser.error("--tls-cert and --tls-key go together")
    if args.ice_host is not None:
        try:
            ipaddress.ip_address(args.ice_host)
        except ValueError:
            parser.error(f"--ice-host must be an IP address, got {args.ice_host!r}")
    logging.basicConfig(
        stream=sys.stderr,
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    if not args.verbose:
        # aiortc/aioice log every ICE check at INFO; keep their warnings only.
        for name in ("aioice", "aiortc"):
            logging.getLogger(name).setLevel(logging.WARNING)
    return asyncio.run(run(args))


if __name__ == "__main__":
    sys.exit(main())
