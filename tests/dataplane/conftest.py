"""Fixtures of the dataplane tests: a netlink cache, and every `an` namespace a test
made removed when it ends, even on failure."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from autonet.dataplane import netns
from autonet.dataplane.netlink import Netlink


@pytest.fixture
async def nl() -> AsyncIterator[Netlink]:
    made_before = set(netns.list_names("an"))
    link = Netlink()
    yield link
    link.close()
    for name in set(netns.list_names("an")) - made_before:
        netns.delete(name)
