"""Shared fixtures: every lab a test makes lives under a private run directory; one real
etcd server for the tests that need one (the store's, the controllers')."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.store import etcd_server


@pytest.fixture(scope="session", autouse=True)
def private_run_dir(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Labs of the test suite never share files with a user's labs."""
    path = tmp_path_factory.mktemp("autonet-run")
    os.chmod(path, 0o755)
    old = os.environ.get("AUTONET_RUN_DIR")
    os.environ["AUTONET_RUN_DIR"] = str(path)
    yield path
    if old is None:
        os.environ.pop("AUTONET_RUN_DIR", None)
    else:
        os.environ["AUTONET_RUN_DIR"] = old


@pytest.fixture(scope="session")
def etcd() -> Iterator[etcd_server.EtcdServer]:
    """One etcd server for the session (skips the test if the etcd binary is missing)."""
    with etcd_server.running() as server:
        yield server


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if os.geteuid() == 0:
        return
    skip = pytest.mark.skip(reason="needs root (network namespaces)")
    for item in items:
        if "lab" in item.keywords or "dataplane" in str(item.fspath):
            item.add_marker(skip)
