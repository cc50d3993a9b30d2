"""Fixtures of the dataplane tests: a netlink cache, and every `an` namespace a test
made removed when it ends, even on failure (only those under the test module's
`SCRATCH.prefix` when it has one: other tests may be making namespaces meanwhile); and
the processes a test starts, killed when it ends."""

from __future__ import annotations

import subprocess
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from autonet.dataplane.netlink import Netlink
from tests.dataplane.scratch import cleaned


@pytest.fixture
async def nl(request: pytest.FixtureRequest) -> AsyncIterator[Netlink]:
    scratch = getattr(request.module, "SCRATCH", None)
    async for link in cleaned(scratch.prefix if scratch is not None else "an"):
        yield link


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[Any]]]:
    running: list[subprocess.Popen[Any]] = []
    yield running
    for process in running:
        process.kill()
        process.wait()
