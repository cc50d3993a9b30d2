"""Throwaway routers and instances for the dataplane tests, named with a test file's own
prefix (other tests may be making namespaces meanwhile) and removed when it ends."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from autonet.dataplane import endpoint as ep
from autonet.dataplane import netns
from autonet.dataplane.netlink import Netlink
from autonet.model.addressing import mac_for


class Scratch:
    """Names under `prefix`; instance `index` gets 100.64.<subnet>.index and fd00:<subnet>::index."""

    def __init__(self, prefix: str, subnet: int) -> None:
        self.prefix, self.subnet = prefix, subnet

    def unique(self, kind: str) -> str:
        return f"{self.prefix}{kind}{uuid.uuid4().hex[: 15 - len(self.prefix) - len(kind)]}"

    def spec(self, router: str, index: int) -> ep.EndpointSpec:
        uid = uuid.uuid4().hex
        return ep.EndpointSpec(
            netns=self.unique("i"),
            router_netns=router,
            router_ifname=f"anv{uid[:8]}",
            mac=mac_for(uid),
            router_mac=mac_for("gw" + uid),
            ipv4=f"100.64.{self.subnet}.{index}",
            ipv6=f"fd00:{self.subnet}::{index}",
            mtu=1450,
        )


async def cleaned(prefix: str) -> AsyncIterator[Netlink]:
    """A netlink cache for a test; every namespace under `prefix` it made goes when it
    ends, even on failure."""
    made_before = set(netns.list_names(prefix))
    link = Netlink()
    try:
        yield link
    finally:
        link.close()
        for name in set(netns.list_names(prefix)) - made_before:
            netns.delete(name)
