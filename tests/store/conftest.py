"""Fixtures for the store contract tests: one ``store`` per backend.

Adding a backend to the contract is one more entry in ``BACKENDS``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from autonet.store import Store, open_store

BACKENDS: dict[str, Callable[[Path], Store]] = {
    "sqlite": lambda tmp_path: open_store(f"sqlite://{tmp_path / 'store.db'}"),
}


@pytest.fixture(params=sorted(BACKENDS))
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Store]:
    """A fresh, empty store of each backend."""
    backend = BACKENDS[request.param](tmp_path)
    yield backend
    await backend.close()
