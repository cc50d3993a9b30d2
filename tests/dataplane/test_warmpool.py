"""The agent's warm pool of namespaces, in throwaway namespaces: made ahead, renamed to
an instance's name on use (its socket with it), refilled, and removed when closed."""

from __future__ import annotations

import asyncio
import subprocess
import uuid

from autonet.agent.warmpool import WarmPool
from autonet.dataplane import netns
from autonet.dataplane.netlink import Netlink, link_index
from autonet.model import naming


async def filled(pool: WarmPool, count: int) -> None:
    async with asyncio.timeout(10):
        while len(pool.ready) < count:
            await asyncio.sleep(0.01)


async def test_a_pooled_namespace_becomes_the_instance_namespace_and_the_pool_refills(nl: Netlink) -> None:
    tag = uuid.uuid4().hex[:4]
    pool = WarmPool(nl, tag, size=2)
    pool.start()
    try:
        await filled(pool, 2)
        pooled = set(pool.ready)
        assert pooled <= set(netns.list_names(naming.pool_netns_prefix(tag)))
        name = naming.instance_netns(tag, uuid.uuid4().hex)
        assert pool.take(name)
        assert netns.exists(name) and len(set(netns.list_names(naming.pool_netns_prefix(tag)))) == 1
        # The socket came along: the namespace answers on it, and it is the same kernel
        # namespace the pool made (lo is up in it), not a new one.
        ipr = await nl.ns(name)
        assert await link_index(ipr, "lo") == 1
        shown = subprocess.run(["ip", "-n", name, "-o", "link", "show", "lo"], capture_output=True, text=True)
        assert "UP" in shown.stdout, shown
        await filled(pool, 2)
        assert pool.taken == 1 and not set(pool.ready) & {name}
    finally:
        await pool.close()
    assert netns.list_names(naming.pool_netns_prefix(tag)) == []  # the rest is gone
    assert netns.exists(name)  # the instance keeps its namespace


async def test_an_empty_pool_says_so_and_the_caller_makes_its_own(nl: Netlink) -> None:
    pool = WarmPool(nl, uuid.uuid4().hex[:4], size=0)
    pool.start()
    assert not pool.take(naming.instance_netns("zzzz", uuid.uuid4().hex))
    await pool.close()
