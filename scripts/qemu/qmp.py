#!/usr/bin/env python3
"""Send one command to qemu's monitor (QMP) and print its answer as JSON.

    qmp.py --socket RUN/qmp.sock COMMAND [ARGUMENTS_JSON]

The emulated box's harness (scripts/qemu-boot-test.sh) starts qemu with a QMP socket, so the
checks can do to the running box what a person does to a real one: plug a USB device in or
out (device_add / device_del), cut a NIC's carrier (set_link), pull the power (quit).
Standard library only. Exit status: 0 the command succeeded, 1 qemu answered an error,
2 the socket could not be used (qemu not running).
"""

import argparse
import json
import socket
import sys


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--socket", required=True)
    ap.add_argument("--timeout", type=float, default=30.0)
    ap.add_argument("command")
    ap.add_argument("arguments", nargs="?", default="{}")
    a = ap.parse_args()
    try:
        arguments = json.loads(a.arguments)
    except json.JSONDecodeError as e:
        print(f"qmp.py: arguments are not JSON: {e}", file=sys.stderr)
        return 2
    try:
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.settimeout(a.timeout)
        s.connect(a.socket)
        f = s.makefile("rwb")
    except OSError as e:
        print(f"qmp.py: cannot connect to {a.socket}: {e}", file=sys.stderr)
        return 2

    def send(obj: dict) -> dict:
        f.write(json.dumps(obj).encode() + b"\n")
        f.flush()
        # Events (asynchronous messages) may come before the answer: skip them.
        while True:
            line = f.readline()
            if not line:
                raise OSError("qemu closed the monitor")
            msg = json.loads(line)
            if "return" in msg or "error" in msg:
                return msg

    try:
        greeting = json.loads(f.readline() or b"{}")
        if "QMP" not in greeting:
            print(f"qmp.py: not a QMP greeting: {greeting}", file=sys.stderr)
            return 2
        send({"execute": "qmp_capabilities"})
        msg = {"execute": a.command}
        if arguments:
            msg["arguments"] = arguments
        answer = send(msg)
    except (OSError, ValueError) as e:
        # "quit" closes the socket before or instead of answering: that is its success.
        if a.command == "quit":
            print("{}")
            return 0
        print(f"qmp.py: {a.command}: {e}", file=sys.stderr)
        return 2
    if "error" in answer:
        print(json.dumps(answer["error"]))
        return 1
    print(json.dumps(answer["return"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
