"""The VPC's DNS responder on a host: answers A/AAAA for automaton names, NXDOMAIN else.

One per VPC router namespace, listening on the instances' gateway 169.254.1.1:53 (UDP),
which their resolv.conf names. `<automaton>` and `<automaton>.<vpc>.autonet` resolve to
the automaton's service addresses. The socket is opened inside the router namespace
and served by the agent's event loop; answers carry a short TTL (5 s).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import struct
from typing import Any

from autonet.dataplane import netns
from autonet.dataplane.endpoint import GATEWAY_V4

log = logging.getLogger(__name__)

TYPE_A = 1
TYPE_AAAA = 28
CLASS_IN = 1
RCODE_FORMERR = 1
RCODE_NXDOMAIN = 3
RCODE_NOTIMP = 4
TTL = 5


def parse_question(packet: bytes) -> tuple[int, int, str, int, int, int]:
    """(id, flags, qname, qtype, qclass, end offset of the question)."""
    ident, flags, qdcount = struct.unpack_from("!HHH", packet)
    if qdcount != 1:
        raise ValueError("exactly one question expected")
    offset, labels = 12, []
    while True:
        length = packet[offset]
        offset += 1
        if length == 0:
            break
        if length & 0xC0:
            raise ValueError("compressed question names are not supported")
        labels.append(packet[offset : offset + length].decode("ascii", "replace"))
        offset += length
    qtype, qclass = struct.unpack_from("!HH", packet, offset)
    return ident, flags, ".".join(labels).lower(), qtype, qclass, offset + 4


def answer(packet: bytes, records: dict[str, list[str]]) -> bytes:
    try:
        ident, flags, name, qtype, qclass, end = parse_question(packet)
    except (ValueError, IndexError, struct.error):
        ident = struct.unpack_from("!H", packet)[0] if len(packet) >= 2 else 0
        return struct.pack("!HHHHHH", ident, 0x8000 | RCODE_FORMERR, 0, 0, 0, 0)
    question = packet[12:end]
    reply_flags = 0x8000 | 0x0400 | (flags & 0x0100)  # QR, AA, copy RD
    if flags & 0x7800:  # not a standard query
        return struct.pack("!HHHHHH", ident, reply_flags | RCODE_NOTIMP, 1, 0, 0, 0) + question
    addresses = records.get(name.rstrip("."))
    if addresses is None:
        return struct.pack("!HHHHHH", ident, reply_flags | RCODE_NXDOMAIN, 1, 0, 0, 0) + question
    wanted = 4 if qtype == TYPE_A else 6 if qtype == TYPE_AAAA else 0
    answers = b""
    count = 0
    if qclass == CLASS_IN and wanted:
        for address in addresses:
            ip = ipaddress.ip_address(address)
            if ip.version == wanted:
                answers += struct.pack("!HHHIH", 0xC00C, qtype, CLASS_IN, TTL, len(ip.packed)) + ip.packed
                count += 1
    return struct.pack("!HHHHHH", ident, reply_flags, 1, count, 0, 0) + question + answers


class _Protocol(asyncio.DatagramProtocol):
    def __init__(self, responder: DnsResponder) -> None:
        self.responder = responder
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        if self.transport is not None:
            self.transport.sendto(answer(data, self.responder.records), addr)


class DnsResponder:
    def __init__(self, router_netns: str) -> None:
        self.router_netns = router_netns
        self.records: dict[str, list[str]] = {}
        self.transport: asyncio.DatagramTransport | None = None

    async def start(self) -> None:
        if self.transport is not None:
            return

        def bind() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((GATEWAY_V4, 53))
            sock.setblocking(False)
            return sock

        sock = netns.call_in(self.router_netns, bind)
        loop = asyncio.get_running_loop()
        transport, _ = await loop.create_datagram_endpoint(lambda: _Protocol(self), sock=sock)
        self.transport = transport

    def set_services(self, vpc: str, services: list[dict[str, Any]]) -> None:
        records: dict[str, list[str]] = {}
        for service in services:
            addresses = [a for a in (service.get("vip4"), service.get("vip6")) if a]
            records[service["name"]] = addresses
            records[f"{service['name']}.{vpc}.autonet"] = addresses
        self.records = records

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()
            self.transport = None
