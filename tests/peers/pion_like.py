"""What makes whip_receiver.py behave like Broadcast Box's pion stack, and a path delay.

Kept apart from the receiver's HTTP and session code: each function patches one aiortc
receiver (or one peer connection's ICE) in place, through the same internals the receiver
already relies on (aiortc/aioice pinned in requirements.txt).

- NACKs like pion's generator (pion/interceptor pkg/nack, as Broadcast Box registers it): every
  100 ms, a NACK for every packet still missing within the last 512 sequence numbers, with no
  limit on how often one packet is asked for. aiortc's own generator asks once per new gap
  (for everything missing at that moment); GStreamer's rtpjitterbuffer asks on its own timers.
- Receiver reports like Broadcast Box's: LSR = 0 and DLSR = 0 ("no sender report received"),
  because Broadcast Box never reads the RTCP of the tracks it receives, so pion's report
  interceptor never sees the sender's reports.
- An answer that does not accept RTX: Broadcast Box registers no RTX format, so the box
  resends on the media SSRC (whip_receiver.py leaves video/rtx out of its codec preferences
  in pion mode).
- A path delay (netem is not in this kernel): every packet the receiver sends (RTCP and STUN)
  leaves `delay` seconds late, as if the path back to the box were that much longer. The
  receiver's own round trip is measured on its ICE consent checks, which cross the same delay.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from typing import Any, Callable, Optional

from aiortc.rtcrtpreceiver import NackGenerator
from aiortc.utils import uint16_add, uint16_gt

PION_NACK_INTERVAL_S = 0.1
PION_NACK_WINDOW = 512


class PionNackGenerator(NackGenerator):
    """aiortc's gap tracking with pion's window; never asks on a new gap (the timer asks)."""

    def add(self, packet: Any) -> bool:
        if self.max_seq is None:
            self.max_seq = packet.sequence_number
            return False
        if uint16_gt(packet.sequence_number, self.max_seq):
            seq = uint16_add(self.max_seq, 1)
            while uint16_gt(packet.sequence_number, seq):
                self.missing.add(seq)
                seq = uint16_add(seq, 1)
            self.max_seq = packet.sequence_number
        else:
            self.missing.discard(packet.sequence_number)
        oldest = uint16_add(self.max_seq, -PION_NACK_WINDOW)
        for seq in [s for s in self.missing if uint16_gt(oldest, s)]:
            self.missing.discard(seq)
        return False


def pion_nacks(receiver: Any) -> Callable[[], Any]:
    """Replaces the receiver's NACK generator with pion's; returns the coroutine function
    that asks every 100 ms (the caller runs it as a task of the session)."""
    generator = PionNackGenerator()
    name = "_RTCRtpReceiver__nack_generator"
    if not hasattr(receiver, name):
        raise RuntimeError("aiortc RTCRtpReceiver has no NACK generator: unsupported aiortc version")
    setattr(receiver, name, generator)
    ssrc: dict[str, Optional[int]] = {"media": None}
    original_rtp = receiver._handle_rtp_packet

    async def noting_ssrc(packet: Any, *args: Any, **kwargs: Any) -> None:
        # The media SSRC (after RTX unwrapping the generator sees the same one).
        if ssrc["media"] is None and packet.payload_type < 96 + 32:
            ssrc["media"] = packet.ssrc
        await original_rtp(packet, *args, **kwargs)

    receiver._handle_rtp_packet = noting_ssrc

    async def ask_every_100_ms() -> None:
        while True:
            await asyncio.sleep(PION_NACK_INTERVAL_S)
            if generator.missing and ssrc["media"] is not None:
                await receiver._send_rtcp_nack(ssrc["media"], sorted(generator.missing))

    return ask_every_100_ms


def no_report_timestamps(receiver: Any) -> None:
    """Receiver reports say LSR = 0, DLSR = 0, like Broadcast Box's."""
    original = receiver._handle_rtcp_packet
    lsr = getattr(receiver, "_RTCRtpReceiver__lsr", None)
    if lsr is None:
        raise RuntimeError("aiortc RTCRtpReceiver keeps no LSR: unsupported aiortc version")

    async def forgetting(packet: Any) -> None:
        await original(packet)
        lsr.clear()

    receiver._handle_rtcp_packet = forgetting


class PathDelay:
    """Holds every packet the receiver sends for `delay_s` (changeable at any time), and
    measures the receiver's own round trip on its STUN transactions."""

    def __init__(self) -> None:
        self.delay_s = 0.0
        # The STUN transactions' round trips: [when measured, ms], the last 100.
        self.own_rtts: deque = deque(maxlen=100)

    def _later(self, send: Callable[..., Any], *args: Any) -> None:
        if self.delay_s <= 0:
            send(*args)
        else:
            asyncio.get_running_loop().call_later(self.delay_s, send, *args)

    def install_rtcp(self, receiver: Any) -> None:
        transport = receiver.transport
        if getattr(transport, "_onair_delayed", False):
            return
        transport._onair_delayed = True
        original = transport._send_rtp

        async def delayed(data: bytes) -> None:
            if self.delay_s <= 0:
                await original(data)
                return

            def send() -> None:
                asyncio.ensure_future(original(data))

            asyncio.get_running_loop().call_later(self.delay_s, send)

        transport._send_rtp = delayed

    def install_ice(self, pc: Any) -> None:
        """Delays the STUN the receiver sends (answers to the box's consent checks included)
        and times the receiver's own requests."""
        for transceiver in pc.getTransceivers():
            connection = transceiver.receiver.transport.transport._connection
            for protocol in getattr(connection, "_protocols", []):
                if getattr(protocol, "_onair_delayed", False):
                    continue
                protocol._onair_delayed = True
                send_stun = protocol.send_stun
                request = protocol.request

                def delayed_stun(message: Any, addr: Any, _send: Any = send_stun) -> None:
                    self._later(_send, message, addr)

                async def timed_request(*args: Any, _request: Any = request, **kwargs: Any) -> Any:
                    t0 = time.monotonic()
                    result = await _request(*args, **kwargs)
                    now = time.monotonic()
                    self.own_rtts.append([now, round((now - t0) * 1000.0, 2)])
                    return result

                protocol.send_stun = delayed_stun
                protocol.request = timed_request
