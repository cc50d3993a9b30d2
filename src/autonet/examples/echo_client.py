"""Send a message to an echo server over TCP or UDP and print the reply.

python3 -m autonet.examples.echo_client HOST PORT [--udp] [--message TEXT]
"""

from __future__ import annotations

import argparse
import socket
import sys


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("host")
    parser.add_argument("port", type=int)
    parser.add_argument("--udp", action="store_true")
    parser.add_argument("--message", default="ping")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args()
    family = socket.AF_INET6 if ":" in args.host else socket.AF_INET
    kind = socket.SOCK_DGRAM if args.udp else socket.SOCK_STREAM
    data = args.message.encode()
    try:
        with socket.socket(family, kind) as sock:
            sock.settimeout(args.timeout)
            sock.connect((args.host, args.port))
            sock.sendall(data)
            reply = sock.recv(65536)
    except OSError as exc:
        sys.stderr.write(f"echo_client: {args.host}:{args.port}: {exc}\n")
        sys.exit(1)
    sys.stdout.write(reply.decode() + "\n")


if __name__ == "__main__":
    main()
