"""Bulk transfer with an integrity check: the sink answers with the SHA-256 of what it got.

    python3 -m autonet.examples.bulk serve --port 9000
    python3 -m autonet.examples.bulk send HOST PORT --megabytes 100

`send` streams pseudo-random bytes, half-closes, reads the sink's digest and compares
it with its own; it prints `ok <MB> MB <digest>` and exits 0 only when they match.
"""

from __future__ import annotations

import argparse
import hashlib
import random
import socket
import socketserver
import sys
import time

from autonet.examples.dualstack import TcpServer

CHUNK = 1 << 16


class Sink(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        digest = hashlib.sha256()
        while data := self.request.recv(CHUNK):
            digest.update(data)
        self.request.sendall(digest.hexdigest().encode())


def send(host: str, port: int, megabytes: int, timeout: float) -> int:
    rng = random.Random(port)
    block = rng.randbytes(CHUNK)
    digest = hashlib.sha256()
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    started = time.monotonic()
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect((host, port))
        for _ in range(megabytes * (1 << 20) // CHUNK):
            sock.sendall(block)
            digest.update(block)
        sock.shutdown(socket.SHUT_WR)
        reply = b""
        while data := sock.recv(256):
            reply += data
    seconds = time.monotonic() - started
    if reply.decode() != digest.hexdigest():
        print(f"mismatch: sent {digest.hexdigest()} got {reply.decode()!r}")
        return 1
    print(f"ok {megabytes} MB {digest.hexdigest()} {megabytes * 8 / seconds:.0f} Mbit/s")
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    sub = parser.add_subparsers(dest="mode", required=True)
    serve_p = sub.add_parser("serve")
    serve_p.add_argument("--port", type=int, default=9000)
    send_p = sub.add_parser("send")
    send_p.add_argument("host")
    send_p.add_argument("port", type=int)
    send_p.add_argument("--megabytes", type=int, default=100)
    send_p.add_argument("--timeout", type=float, default=20.0)
    args = parser.parse_args()
    if args.mode == "serve":
        print(f"bulk sink listening on port {args.port}", flush=True)
        TcpServer(("::", args.port), Sink).serve_forever()
    else:
        sys.exit(send(args.host, args.port, args.megabytes, args.timeout))


if __name__ == "__main__":
    main()
