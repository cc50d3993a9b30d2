"""Fixtures for the store contract tests: one ``store`` per backend.

Adding a backend to the contract is one more entry in ``BACKENDS``. The etcd backend runs
against one real etcd process for the whole session (the ``etcd`` fixture of
tests/conftest.py: started on first use, killed at the end); every test gets its own key
root in it, so its store starts empty at revision 0.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from autonet.store import Store, open_store

from . import etcd_server

_roots = itertools.count()


def _etcd(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    server: etcd_server.EtcdServer = request.getfixturevalue("etcd")
    return open_store(f"etcd://{server.endpoint}/test/{next(_roots)}")


BACKENDS: dict[str, Callable[[pytest.FixtureRequest, Path], Store]] = {
    "sqlite": lambda request, tmp_path: open_store(f"sqlite://{tmp_path / 'store.db'}"),
    "etcd": _etcd,
}


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, empty store of each backend."""
    backend = BACKENDS[request.param](request, tmp_path)
    yield backend
    await backend.close()
