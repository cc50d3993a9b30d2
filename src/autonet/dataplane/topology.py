"""Simulated wires: a bridge in a switch namespace and namespaces plugged into it.

Used by the lab to build hosts (namespaces with an underlay address) on an underlay
switch, without touching the root namespace.
"""

from __future__ import annotations

import ipaddress

from autonet.dataplane.endpoint import IFA_F_NODAD
from autonet.dataplane.netlink import EEXIST, Netlink, add_veth, call, link_index


async def ensure_bridge(nl: Netlink, namespace: str, name: str) -> int:
    ipr = await nl.ns(namespace, create=True)
    await call(ipr.link("set", index=1, state="up"))
    index = await link_index(ipr, name)
    if index is None:
        await ipr.link("add", ifname=name, kind="bridge")
        index = await link_index(ipr, name)
    assert index is not None
    await call(ipr.link("set", index=index, state="up"))
    return index


async def plug(
    nl: Netlink,
    switch_ns: str,
    bridge: str,
    port: str,
    target_ns: str,
    ifname: str,
    addresses: list[str],
    mtu: int = 1500,
) -> None:
    """Create namespace `target_ns` with `ifname` cabled to `bridge` in `switch_ns`."""
    switch = await nl.ns(switch_ns)
    target = await nl.ns(target_ns, create=True)
    if await link_index(switch, port) is None:
        await add_veth(switch, port, target_ns, ifname, mtu)
    bridge_index = await link_index(switch, bridge)
    port_index = await link_index(switch, port)
    assert bridge_index is not None and port_index is not None
    await call(switch.link("set", index=port_index, master=bridge_index, state="up"))
    index = await link_index(target, ifname)
    assert index is not None
    await call(target.link("set", index=1, state="up"))
    await call(target.link("set", index=index, state="up"))
    for cidr in addresses:
        iface = ipaddress.ip_interface(cidr)
        flags = IFA_F_NODAD if iface.version == 6 else 0
        await call(
            target.addr(
                "add", index=index, address=str(iface.ip), prefixlen=iface.network.prefixlen, flags=flags
            ),
            EEXIST,
        )
