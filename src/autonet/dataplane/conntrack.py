"""Connections as the kernel tracks them in a namespace (ctnetlink, with accounting).

The VPC router sees every connection of its local instances, so its conntrack table is
the flow table: original and reply tuples (the reply source is the real backend of a
service connection), byte and packet counters per direction (nf_conntrack_acct) and the
start time (nf_conntrack_timestamp), both switched on in router namespaces.

`delete_where` is how a revocation takes effect (as kube-proxy clears UDP entries of a
stale endpoint): the entries of flows that are no longer allowed are deleted, so the
next packet of such a flow is a new connection to the router's policy, which refuses it.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

from pyroute2.netlink.exceptions import NetlinkError
from pyroute2.netlink.nfnetlink.nfctsocket import AsyncNFCTSocket, NFCTAttrTuple

from autonet.dataplane import netns

NETLINK_NETFILTER = 12
PROTOCOLS = {1: "icmp", 6: "tcp", 17: "udp", 58: "icmpv6", 132: "sctp"}
TCP_STATES = [
    "NONE", "SYN_SENT", "SYN_RECV", "ESTABLISHED", "FIN_WAIT", "CLOSE_WAIT", "LAST_ACK", "TIME_WAIT", "CLOSE",
    "SYN_SENT2",
]  # fmt: skip


@dataclass(frozen=True)
class Tuple:
    src: str
    dst: str
    sport: int
    dport: int


@dataclass(frozen=True)
class Connection:
    id: int
    protocol: str
    orig: Tuple
    reply: Tuple
    orig_bytes: int
    orig_packets: int
    reply_bytes: int
    reply_packets: int
    start_ns: int
    state: str = ""  # TCP state; empty for other protocols

    @property
    def key(self) -> tuple[int, int]:
        return self.id, self.start_ns


def _tuple(msg: object, which: str, version: int) -> Tuple:
    get = msg.get_nested  # type: ignore[attr-defined]
    field = "CTA_IP_V4_" if version == 4 else "CTA_IP_V6_"
    return Tuple(
        str(get(which, "CTA_TUPLE_IP", field + "SRC")),
        str(get(which, "CTA_TUPLE_IP", field + "DST")),
        int(get(which, "CTA_TUPLE_PROTO", "CTA_PROTO_SRC_PORT") or 0),
        int(get(which, "CTA_TUPLE_PROTO", "CTA_PROTO_DST_PORT") or 0),
    )


def _tcp_state(msg: object) -> str:
    value = msg.get_nested("CTA_PROTOINFO", "CTA_PROTOINFO_TCP", "CTA_PROTOINFO_TCP_STATE")  # type: ignore[attr-defined]
    return TCP_STATES[value] if isinstance(value, int) and value < len(TCP_STATES) else ""


class ConntrackReader:
    """A ctnetlink socket inside one namespace, kept open."""

    def __init__(self, namespace: str) -> None:
        self.namespace = namespace
        self._socket: AsyncNFCTSocket | None = None
        # One request at a time on the socket: a flow report's dump and a revocation
        # may run together, and answers to two dumps would interleave.
        self._busy = asyncio.Lock()

    async def _open(self) -> AsyncNFCTSocket:
        if self._socket is None:

            def work() -> socket.socket:
                netns._enter(self.namespace)
                return socket.socket(
                    socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, NETLINK_NETFILTER
                )

            sock = netns.run_in_thread(work)
            self._socket = AsyncNFCTSocket(fileno=sock.detach())
            await self._socket.setup_endpoint()
        return self._socket

    async def _entries(self) -> AsyncIterator[tuple[int, object, Connection]]:
        """(address family, the kernel's message, the connection) of every entry."""
        ct = await self._open()
        for family, version in ((socket.AF_INET, 4), (socket.AF_INET6, 6)):
            ct._nfgen_family = family
            found = []
            async for msg in await ct.dump():
                get = msg.get_nested
                number = int(get("CTA_TUPLE_ORIG", "CTA_TUPLE_PROTO", "CTA_PROTO_NUM") or 0)
                connection = Connection(
                    id=int(msg.get_attr("CTA_ID") or 0),
                    protocol=PROTOCOLS.get(number, str(number)),
                    orig=_tuple(msg, "CTA_TUPLE_ORIG", version),
                    reply=_tuple(msg, "CTA_TUPLE_REPLY", version),
                    orig_bytes=int(get("CTA_COUNTERS_ORIG", "CTA_COUNTERS_BYTES") or 0),
                    orig_packets=int(get("CTA_COUNTERS_ORIG", "CTA_COUNTERS_PACKETS") or 0),
                    reply_bytes=int(get("CTA_COUNTERS_REPLY", "CTA_COUNTERS_BYTES") or 0),
                    reply_packets=int(get("CTA_COUNTERS_REPLY", "CTA_COUNTERS_PACKETS") or 0),
                    start_ns=int(get("CTA_TIMESTAMP", "CTA_TIMESTAMP_START") or 0),
                    state=_tcp_state(msg) if number == 6 else "",
                )
                found.append((family, msg, connection))
            # The whole dump is read before the caller acts: a request on the socket in
            # the middle of a dump would interleave with its answers.
            for entry in found:
                yield entry

    async def dump(self) -> list[Connection]:
        async with self._busy:
            return [connection async for _, _, connection in self._entries()]

    async def delete_where(self, revoked: Callable[[Connection], bool]) -> list[Connection]:
        """Delete the entries of the connections `revoked` picks; returns them."""
        async with self._busy:
            ct = await self._open()
            deleted = []
            async for family, msg, connection in self._entries():
                if not revoked(connection):
                    continue
                ct._nfgen_family = family
                orig = NFCTAttrTuple.from_netlink(family, msg.get_attr("CTA_TUPLE_ORIG"))  # type: ignore[attr-defined]
                try:
                    await ct.entry("del", tuple_orig=orig)
                except NetlinkError as exc:
                    if exc.code != 2:  # ENOENT: it ended meanwhile
                        raise
                deleted.append(connection)
            return deleted

    def close(self) -> None:
        if self._socket is not None:
            self._socket.close()
            self._socket = None
