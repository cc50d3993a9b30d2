"""Long-lived rtnetlink sockets, one per namespace, on the caller's asyncio loop.

`Netlink.ns(name)` returns an `AsyncIPRoute` bound to namespace `name` (created on first
use, kept open afterwards); `Netlink.host()` the one of the process's own namespace.
Sockets are opened in a thread that entered the namespace (see netns.py), so no
process is forked, and each request is one netlink round trip.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
from collections.abc import Iterator
from typing import Any

from pyroute2 import AsyncIPRoute
from pyroute2.netlink.exceptions import NetlinkError

from autonet.dataplane import netns


def ignore(err: NetlinkError, *codes: int) -> None:
    """Re-raise `err` unless its errno is one of `codes` (for idempotent calls)."""
    if err.code not in codes:
        raise err


EEXIST = errno.EEXIST
ENOENT = errno.ENOENT
ENODEV = errno.ENODEV
ESRCH = errno.ESRCH
EADDRNOTAVAIL = errno.EADDRNOTAVAIL


class Netlink:
    """A cache of rtnetlink sockets keyed by namespace name (None is our own namespace)."""

    def __init__(self) -> None:
        self._sockets: dict[str | None, AsyncIPRoute] = {}
        self._lock = asyncio.Lock()

    async def _open(self, name: str | None, create: bool) -> AsyncIPRoute:
        if name is None:
            sock = netns.netlink_socket()
        elif create:
            sock = netns.create(name)
        else:
            sock = netns.open_socket(name)
        ipr = AsyncIPRoute(fileno=sock.detach())
        await ipr.setup_endpoint()
        return ipr

    async def ns(self, name: str | None, create: bool = False) -> AsyncIPRoute:
        """The socket of namespace `name`; `create=True` creates the namespace if missing."""
        ipr = self._sockets.get(name)
        if ipr is not None and (name is None or netns.exists(name)):
            return ipr
        async with self._lock:
            ipr = self._sockets.get(name)
            if ipr is not None and (name is None or netns.exists(name)):
                return ipr
            if ipr is not None:
                ipr.close()
            ipr = await self._open(name, create)
            self._sockets[name] = ipr
            return ipr

    async def host(self) -> AsyncIPRoute:
        return await self.ns(None)

    def rename(self, old: str, new: str) -> None:
        """Namespace `old` is now called `new` (netns.rename): its socket goes with it."""
        netns.rename(old, new)
        ipr = self._sockets.pop(old, None)
        if ipr is not None:
            self._sockets[new] = ipr

    def forget(self, name: str) -> None:
        """Close the socket of a namespace that is about to go away."""
        ipr = self._sockets.pop(name, None)
        if ipr is not None:
            ipr.close()

    def close(self) -> None:
        for ipr in self._sockets.values():
            ipr.close()
        self._sockets.clear()


@contextlib.contextmanager
def netns_fd(name: str) -> Iterator[int]:
    """An open descriptor of namespace `name`, to create a device directly inside it."""
    fd = os.open(netns.netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        yield fd
    finally:
        os.close(fd)


async def add_veth(
    ipr: AsyncIPRoute,
    ifname: str,
    peer_netns: str,
    peer_ifname: str,
    mtu: int = 1500,
    mac: str | None = None,
    peer_mac: str | None = None,
) -> None:
    """A veth pair: `ifname` in the socket's namespace, its peer born in `peer_netns`
    (creating it there avoids moving a device between namespaces, which serialises on
    a kernel lock)."""
    peer: dict[str, Any] = {"ifname": peer_ifname, "mtu": mtu}
    if peer_mac:
        peer["address"] = peer_mac
    extra = {"address": mac} if mac else {}
    with netns_fd(peer_netns) as fd:
        await ipr.link("add", ifname=ifname, kind="veth", mtu=mtu, peer={**peer, "net_ns_fd": fd}, **extra)


async def link_index(ipr: AsyncIPRoute, ifname: str) -> int | None:
    found = await ipr.link_lookup(ifname=ifname)
    return found[0] if found else None


async def link_names(ipr: AsyncIPRoute) -> list[str]:
    return [str(link.get_attr("IFLA_IFNAME")) async for link in await ipr.get_links()]


async def addresses(ipr: AsyncIPRoute, index: int) -> set[str]:
    """Addresses of link `index` as 'addr/prefixlen' strings."""
    found = set()
    async for msg in await ipr.get_addr(index=index):
        found.add(f"{msg.get_attr('IFA_ADDRESS')}/{msg['prefixlen']}")
    return found


async def call(coro: Any, *ignored: int) -> Any:
    """Await a pyroute2 request, treating the given errnos as success (idempotence)."""
    try:
        return await coro
    except NetlinkError as err:
        ignore(err, *ignored)
        return None
