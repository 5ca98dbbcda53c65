#!/usr/bin/env python3
"""An HTTPS server whose answers carry the Date a test chooses (onair's clock tests).

Every request is answered 200 with an empty body and a `Date` header: the server's own time
(`--date now`, the default), a fixed instant (`--date UNIX_SECONDS`), or none at all
(`--date none`). The certificate and key are the test's (PEM files). Stdlib only.

    dated_https.py --listen 127.0.0.1:0 --cert leaf.pem --key key.pem [--date now|none|SECONDS]

prints `READY https://HOST:PORT` on stdout once it listens, and one line per request on stderr.
"""

from __future__ import annotations

import argparse
import email.utils
import http.server
import ssl
import sys


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "dated-https"
    sys_version = ""

    def send_response(self, code: int, message: str | None = None) -> None:
        self.log_request(code)
        self.send_response_only(code, message)
        self.send_header("Server", self.version_string())
        date = self.server.date  # type: ignore[attr-defined]
        if date == "now":
            self.send_header("Date", self.date_time_string())
        elif date != "none":
            self.send_header("Date", email.utils.formatdate(float(date), usegmt=True))

    def answer(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_HEAD = answer
    do_GET = answer
    do_OPTIONS = answer
    do_POST = answer

    def log_message(self, format: str, *args: object) -> None:
        sys.stderr.write("dated_https: " + (format % args) + "\n")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--listen", required=True, help="HOST:PORT (PORT 0 picks a free port)")
    parser.add_argument("--cert", required=True, help="the certificate chain, PEM")
    parser.add_argument("--key", required=True, help="its private key, PEM")
    parser.add_argument("--date", default="now", help="now, none, or UNIX seconds")
    args = parser.parse_args()
    if args.date not in ("now", "none"):
        float(args.date)
    host, _, port = args.listen.rpartition(":")
    server = http.server.ThreadingHTTPServer((host, int(port)), Handler)
    server.date = args.date  # type: ignore[attr-defined]
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(args.cert, args.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    print(f"READY https://{host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main())
