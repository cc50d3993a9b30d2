"""The VPC's DNS responder on a host: answers A/AAAA for automaton names, NXDOMAIN else.

One per VPC router namespace, listening on the instances' gateway 169.254.1.1:53 (UDP),
which their resolv.conf names. `<automaton>` and `<automaton>.<vpc>.autonet` resolve to
the automaton's service addresses; answers carry a short TTL (5 s).

Instances are untrusted, so the responder is built not to matter to the agent:
- it serves its socket from its own thread, never the agent's event loop: a flood of
  queries costs that thread, not the agent's RPCs and heartbeats;
- every source address has a token bucket (RATE queries a second, BURST at once);
  queries beyond it are dropped unanswered and counted (`counters`);
- queries are parsed by dnspython, not by hand; what it cannot parse is answered with
  FORMERR when its header is readable and dropped otherwise; responses (QR set) are never
  answered (no loops); nothing a query holds can raise out of `answer`.
"""

from __future__ import annotations

import logging
import socket
import struct
import threading
import time
from collections import Counter, OrderedDict
from typing import Any

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from autonet.dataplane import netns
from autonet.dataplane.endpoint import GATEWAY_V4

log = logging.getLogger(__name__)

TTL = 5
RATE = 50.0  # queries a second per source address, sustained
BURST = 100  # queries a source may send at once
MAX_SOURCES = 4096  # buckets kept (least recently seen forgotten first)
POLL = 0.5  # seconds the serving thread waits for a datagram before it checks for close
_HEADER = struct.Struct("!HHHHHH")
_QR = 0x8000


def _error(packet: bytes, rcode: int) -> bytes | None:
    """A bare error for a query whose header we can read (id, opcode, RD kept); None: drop."""
    if len(packet) < _HEADER.size:
        return None
    ident, flags = struct.unpack_from("!HH", packet)
    if flags & _QR:
        return None
    return _HEADER.pack(ident, _QR | (flags & 0x7900) | rcode, 0, 0, 0, 0)


def answer(packet: bytes, records: dict[str, list[str]]) -> bytes | None:
    """The response to one query datagram, or None when it gets none."""
    if len(packet) >= _HEADER.size and (packet[2] >> 3) & 0xF != dns.opcode.QUERY:
        return _error(packet, dns.rcode.NOTIMP)  # UPDATE, NOTIFY ...: not parsed at all
    try:
        query = dns.message.from_wire(packet)
    except Exception:  # dnspython raises many kinds for malformed input: all are FORMERR
        return _error(packet, dns.rcode.FORMERR)
    try:
        return _respond(query, records)
    except Exception:  # a query dnspython parsed but cannot answer (odd EDNS, TSIG ...)
        log.debug("DNS query not answered", exc_info=True)
        return _error(packet, dns.rcode.FORMERR)


def _respond(query: dns.message.Message, records: dict[str, list[str]]) -> bytes | None:
    if query.flags & dns.flags.QR:
        return None
    response = dns.message.make_response(query)
    response.flags |= dns.flags.AA
    if len(query.question) != 1:
        response.set_rcode(dns.rcode.FORMERR)
        return response.to_wire()
    question = query.question[0]
    addresses = records.get(question.name.to_text(omit_final_dot=True).lower())
    if addresses is None:
        response.set_rcode(dns.rcode.NXDOMAIN)
        return response.to_wire()
    wanted = {dns.rdatatype.A: ".", dns.rdatatype.AAAA: ":"}.get(question.rdtype)
    if question.rdclass == dns.rdataclass.IN and wanted:
        found = [a for a in addresses if (":" in a) == (wanted == ":")]
        if found:
            response.answer.append(
                dns.rrset.from_text_list(question.name, TTL, dns.rdataclass.IN, question.rdtype, found)
            )
    return response.to_wire()


class RateLimiter:
    """A token bucket per source address: RATE a second, BURST at once."""

    def __init__(self, rate: float = RATE, burst: int = BURST, max_sources: int = MAX_SOURCES) -> None:
        self.rate, self.burst, self.max_sources = rate, float(burst), max_sources
        self.buckets: OrderedDict[str, tuple[float, float]] = OrderedDict()  # source -> (tokens, when)

    def allow(self, source: str, now: float) -> bool:
        tokens, when = self.buckets.pop(source, (self.burst, now))
        tokens = min(self.burst, tokens + (now - when) * self.rate)
        allowed = tokens >= 1.0
        self.buckets[source] = (tokens - 1.0 if allowed else tokens, now)
        if len(self.buckets) > self.max_sources:
            self.buckets.popitem(last=False)
        return allowed


class DnsResponder:
    def __init__(self, router_netns: str, rate: float = RATE, burst: int = BURST) -> None:
        self.router_netns = router_netns
        self.records: dict[str, list[str]] = {}  # replaced whole: the thread reads it unlocked
        self.limiter = RateLimiter(rate, burst)
        self.counters: Counter[str] = Counter()  # answered, rate_limited, unanswered, errors
        self.sock: socket.socket | None = None
        self.thread: threading.Thread | None = None
        self.stopping = threading.Event()

    async def start(self) -> None:
        if self.sock is not None:
            return

        def bind() -> socket.socket:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((GATEWAY_V4, 53))
            sock.settimeout(POLL)
            return sock

        self.sock = netns.call_in(self.router_netns, bind)
        self.stopping.clear()
        self.thread = threading.Thread(
            target=self._serve, args=(self.sock,), name=f"dns-{self.router_netns}", daemon=True
        )
        self.thread.start()

    def _serve(self, sock: socket.socket) -> None:
        while not self.stopping.is_set():
            try:
                packet, source = sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                break  # closed
            try:
                self.handle(sock, packet, source)
            except Exception:  # never let one datagram end the responder
                self.counters["errors"] += 1
                log.exception("DNS responder in %s", self.router_netns)

    def handle(self, sock: Any, packet: bytes, source: tuple[str, int]) -> None:
        if not self.limiter.allow(source[0], time.monotonic()):
            self.counters["rate_limited"] += 1
            if self.counters["rate_limited"] % 1000 == 1:
                log.warning(
                    "DNS in %s: queries from %s over the rate limit, dropped", self.router_netns, source[0]
                )
            return
        reply = answer(packet, self.records)
        if reply is None:
            self.counters["unanswered"] += 1
            return
        self.counters["answered"] += 1
        sock.sendto(reply, source)

    def set_services(self, vpc: str, services: list[dict[str, Any]]) -> None:
        records: dict[str, list[str]] = {}
        for service in services:
            addresses = [a for a in (service.get("vip4"), service.get("vip6")) if a]
            records[service["name"]] = addresses
            records[f"{service['name']}.{vpc}.autonet"] = addresses
        self.records = records

    def close(self) -> None:
        self.stopping.set()
        if self.sock is not None:
            self.sock.close()
            self.sock = None
        self.thread = None  # it ends within POLL seconds (not joined: close runs on the event loop)
