#!/usr/bin/env python3
"""A minimal SNTP server (RFC 4330) for the emulated box's clock check: the host's time.

Answers every NTPv3/v4 client request (mode 3) on UDP with a server reply (mode 4, stratum 2,
no leap warning) carrying the host's clock, the request's transmit time as the origin, and a
small root distance, which is all systemd-timesyncd checks. Standard library only; run inside
the test's network namespace:

    sntp-server.py --listen 192.0.2.1:123

prints `READY udp://HOST:PORT` on stdout, one line per answer on stderr.
"""

import argparse
import socket
import struct
import sys
import time

# Seconds from 1900 (NTP's era 0) to 1970.
NTP_TO_UNIX = 2_208_988_800


def ntp_time(t: float) -> bytes:
    seconds = int(t)
    fraction = int((t - seconds) * 2**32) & 0xFFFFFFFF
    return struct.pack("!II", (seconds + NTP_TO_UNIX) & 0xFFFFFFFF, fraction)


def reply(request: bytes, received: float) -> bytes | None:
    if len(request) < 48:
        return None
    version = (request[0] >> 3) & 0x7
    mode = request[0] & 0x7
    if mode != 3 or version not in (3, 4):
        return None
    header = struct.pack(
        "!BBBbII4s",
        (0 << 6) | (version << 3) | 4,  # no leap warning, the client's version, server
        2,  # stratum: synchronized to a (pretended) stratum-1 server
        request[2],  # the client's poll interval
        -20,  # precision, about a microsecond
        0,  # root delay
        1 << 8,  # root dispersion: 1/256 s
        b"\xc0\x00\x02\x01",  # reference id: 192.0.2.1
    )
    return header + ntp_time(received) + request[40:48] + ntp_time(received) + ntp_time(time.time())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT")
    args = parser.parse_args()
    host, _, port = args.listen.rpartition(":")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, int(port)))
    print(f"READY udp://{host}:{sock.getsockname()[1]}", flush=True)
    while True:
        request, peer = sock.recvfrom(512)
        received = time.time()
        answer = reply(request, received)
        if answer is None:
            continue
        sock.sendto(answer, peer)
        sys.stderr.write(f"sntp: answered {peer[0]}:{peer[1]} at {received:.3f}\n")
        sys.stderr.flush()


if __name__ == "__main__":
    sys.exit(main())
