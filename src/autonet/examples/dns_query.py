"""Ask the instance's DNS server (from /etc/resolv.conf) one question, like a tiny dig.

    python3 -m autonet.examples.dns_query web.blue.autonet [A|AAAA]

Prints `NXDOMAIN`, or one address per line (nothing for NOERROR without records); exits
0 unless the server did not answer.
"""

from __future__ import annotations

import argparse
import ipaddress
import random
import socket
import struct
import sys

TYPES = {"A": 1, "AAAA": 28}


def nameserver() -> str:
    with open("/etc/resolv.conf") as handle:
        for line in handle:
            parts = line.split()
            if parts[:1] == ["nameserver"]:
                return parts[1]
    return "127.0.0.1"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("name")
    parser.add_argument("type", nargs="?", default="A", choices=sorted(TYPES))
    parser.add_argument("--server", default=None)
    args = parser.parse_args()
    ident = random.randrange(1 << 16)
    qname = (
        b"".join(bytes([len(label)]) + label.encode() for label in args.name.rstrip(".").split(".")) + b"\0"
    )
    query = (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0) + qname + struct.pack("!HH", TYPES[args.type], 1)
    )
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(2)
        try:
            sock.sendto(query, (args.server or nameserver(), 53))
            reply = sock.recv(4096)
        except OSError as exc:
            print(f"dns_query: no answer: {exc}", file=sys.stderr)
            sys.exit(2)
    _, flags, _, ancount, _, _ = struct.unpack_from("!HHHHHH", reply)
    if flags & 0xF == 3:
        print("NXDOMAIN")
        return
    offset = 12 + len(qname) + 4
    for _ in range(ancount):
        _, _, _, _, length = struct.unpack_from("!HHHIH", reply, offset)
        offset += 12
        print(ipaddress.ip_address(reply[offset : offset + length]))
        offset += length


if __name__ == "__main__":
    main()
