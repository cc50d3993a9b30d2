"""Membership: controllers join with a lease and a member key, see each other, and leave —
at once when they stop cleanly, within the TTL when their keepalives stop."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from types import SimpleNamespace

import pytest

from autonet.control.members import Membership
from autonet.store import StoreError

from .harness import Node, open_etcd, until


async def test_members_join_see_each_other_and_leave(nodes: Callable[..., Node]) -> None:
    a, b, c = [await nodes(name, ttl=2.0).start(runner=False) for name in ("a", "b", "c")]
    await until(lambda: all(set(n.membership.members) == {"a", "b", "c"} for n in (a, b, c)), 5)
    assert a.membership.members["b"].endpoints == ("http://b.test:8080",)
    assert all(n.membership.acting() for n in (a, b, c))

    await b.stop(leave=True)  # a clean stop revokes the lease: gone at once
    took = await until(lambda: set(a.membership.members) == {"a", "c"}, 2)
    assert took < 1.0

    await c.pause_keepalive()  # as if its process stopped: no more keepalives
    paused = time.monotonic()
    await until(lambda: not c.membership.acting(), 3, "c stops acting by itself")
    stopped_acting = time.monotonic() - paused
    await until(lambda: set(a.membership.members) == {"a"}, 5, "c disappears")
    gone = time.monotonic() - paused
    ttl = c.membership.ttl
    assert stopped_acting <= 2 / 3 * ttl + 0.1  # (measured from the last keepalive sent)
    assert stopped_acting < gone <= ttl + 1.0, (stopped_acting, gone)
    assert a.membership.acting()


async def test_a_member_id_is_held_by_one_live_controller(nodes: Callable[..., Node], url: str) -> None:
    await nodes("a").start(runner=False)
    store = open_etcd(url)
    try:
        twin = Membership(store, "a", ttl=2.0)
        with pytest.raises(StoreError, match="held by another live controller"):
            await twin.join()
        assert twin.lease == 0 and not twin.acting()
    finally:
        await store.close()


async def test_an_expired_lease_is_granted_again_and_the_member_rejoins(nodes: Callable[..., Node]) -> None:
    a = await nodes("a", ttl=2.0).start(runner=False)
    old = a.membership.lease
    await a.store.lease_revoke(old)  # as if it had expired while the controller was paused
    await until(lambda: a.membership.lease != old and "a" in a.membership.members, 5, "rejoined")
    assert a.membership.acting()
    await asyncio.sleep(0)


def test_a_member_ttl_below_etcds_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="shorter than 2 s"):
        Membership(None, "a", ttl=1.0)  # type: ignore[arg-type]


async def test_a_keepalive_that_times_out_says_so(caplog: pytest.LogCaptureFixture) -> None:
    """etcd's client times out with an exception that has no message: the log line names it."""
    store = SimpleNamespace(client=None, members_prefix=b"/autonet/members/")
    member = Membership(store, "a", ttl=3.0)  # type: ignore[arg-type]
    member.lease = 1

    async def times_out() -> None:
        raise TimeoutError

    member._keepalive = times_out  # type: ignore[method-assign]
    task = asyncio.create_task(member.keep_alive())
    await until(lambda: "keepalive failed" in caplog.text, 5, "the warning")
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert "member a: keepalive failed: timed out" in caplog.text
