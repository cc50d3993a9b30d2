"""Fixtures of the fleet tests: controllers in this process on the session's etcd."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest

from ..store.etcd_server import EtcdServer, needs_etcd
from .harness import Node, new_root

pytestmark = needs_etcd


@pytest.fixture
def url(etcd: EtcdServer) -> str:
    """A store URL of its own for the test."""
    return new_root(etcd)


@pytest.fixture
async def nodes(url: str) -> AsyncIterator[Callable[..., Node]]:
    """``nodes(id, api=None, ttl=2.0)``: a controller on the test's store (stopped at the end)."""
    made: list[Node] = []

    def make(member_id: str, **options: Any) -> Node:
        node = Node(url, member_id, **options)
        made.append(node)
        return node

    yield make
    for node in made:
        await node.stop(leave=True)
