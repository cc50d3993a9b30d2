"""Rate limits on a veth with tc: one htb class, changed in place.

    root htb 1: (default 1:10) -> class 1:10 rate R ceil R burst B prio P

Changing the rate is `change-class` on the existing class, so a running transfer is
reshaped at once. `None` removes the shaping (the root qdisc goes back to the default).
The burst is sized for about 10 ms at the rate (at least 32 KiB) so that GSO-sized
packets of a fast veth are not throttled below the rate.
"""

from __future__ import annotations

from pyroute2.netlink.exceptions import NetlinkError

from autonet.dataplane.netlink import ENOENT, Netlink, call, link_index

PRIORITIES = {"high": 0, "normal": 1, "low": 2}
ROOT = 0x10000
CLASS = 0x10010


def burst_bytes(mbps: float) -> int:
    return max(32 * 1024, int(mbps * 1_000_000 / 8 / 100))


async def set_rate(
    nl: Netlink, namespace: str, ifname: str, mbps: float | None, priority: str = "normal"
) -> None:
    ipr = await nl.ns(namespace)
    index = await link_index(ipr, ifname)
    if index is None:
        raise FileNotFoundError(f"no {ifname} in {namespace}")
    if mbps is None:
        await call(ipr.tc("del", index=index, handle=ROOT), ENOENT, 22)
        return
    rate = f"{int(mbps * 1000)}kbit"
    args = {"index": index, "handle": CLASS, "parent": ROOT, "rate": rate, "ceil": rate}
    args.update(burst=burst_bytes(mbps), cburst=burst_bytes(mbps), prio=PRIORITIES.get(priority, 1))
    try:
        await ipr.tc("change-class", "htb", **args)
    except NetlinkError:
        await call(ipr.tc("del", index=index, handle=ROOT), ENOENT, 22)
        await ipr.tc("add", "htb", index=index, handle=ROOT, default=0x10)
        await ipr.tc("add-class", "htb", **args)
