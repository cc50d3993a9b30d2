"""The etcd backend over mutual TLS: an etcd that requires client certificates from its CA
serves a client with one, and refuses clients without one, with one from a foreign CA, or
that do not trust the server."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest

from autonet.store import Delete, Put, open_store
from autonet.store.etcd import with_tls
from autonet.store.etcdclient import EtcdError

from . import etcd_server
from .etcd_server import EtcdServer, Issued, ServerTls, TestCa, needs_etcd
from .test_contract import summary, take

pytestmark = needs_etcd


@dataclass(frozen=True)
class Pki:
    ca: TestCa
    client: Issued
    foreign: TestCa
    foreign_client: Issued


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    folder = tmp_path_factory.mktemp("etcd-pki")
    ca, foreign = TestCa(folder, "cluster"), TestCa(folder, "foreign")
    return Pki(ca, ca.issue("controller", server=False), foreign, foreign.issue("controller", server=False))


@pytest.fixture(scope="module")
def tls_etcd(pki: Pki) -> Iterator[EtcdServer]:
    issued = pki.ca.issue("etcd", server=True)
    server_tls = ServerTls(pki.ca.cacert, issued.cert, issued.key)
    with etcd_server.running(server_tls, (pki.client.cert, pki.client.key)) as server:
        yield server


def url(server: EtcdServer, root: str, cacert: Path | None, client: Issued | None) -> str:
    cert, key = (client.cert, client.key) if client else (None, None)
    return with_tls(f"etcd://{server.endpoint}{root}?timeout=5", cacert, cert, key)


async def test_the_store_works_over_mutual_tls(tls_etcd: EtcdServer, pki: Pki) -> None:
    store = open_store(url(tls_etcd, "/tls", pki.ca.cacert, pki.client))
    try:
        created = await store.put("Vpc", "blue", {"vni": 7}, expected_revision=0)
        await store.commit([Put("Vpc", "red", {}), Delete("Vpc", "blue", created.revision)])
        assert [r.name for r in await store.list("Vpc")] == ["red"]
        assert summary(await take(store, 0, 3)) == [
            ("put", "Vpc", "blue", 1, {"vni": 7}),
            ("put", "Vpc", "red", 2, {}),
            ("delete", "Vpc", "blue", 2, {"vni": 7}),
        ]
    finally:
        await store.close()


@pytest.mark.parametrize(
    "who",
    [
        "client certificate from a foreign CA",
        "no client certificate",
        "client does not trust the server's CA",
        "plaintext client",
    ],
)
async def test_etcd_refuses(tls_etcd: EtcdServer, pki: Pki, who: str) -> None:
    if who == "client certificate from a foreign CA":
        target = url(tls_etcd, "/tls", pki.ca.cacert, pki.foreign_client)
    elif who == "no client certificate":
        target = url(tls_etcd, "/tls", pki.ca.cacert, None)
    elif who == "client does not trust the server's CA":
        target = url(tls_etcd, "/tls", pki.foreign.cacert, pki.client)
    else:
        target = f"etcd://{tls_etcd.endpoint}/tls?timeout=5"
    store = open_store(target)
    try:
        with pytest.raises(EtcdError) as info:
            await store.put("Vpc", "blue", {})
    finally:
        with contextlib.suppress(EtcdError):
            await store.close()
    # refused at the handshake: the endpoint does not answer this client, nothing was written
    assert info.value.code == grpc.StatusCode.UNAVAILABLE, info.value
    assert "no etcd endpoint answers" in str(info.value)
    if who != "plaintext client":
        assert "a TLS failure" in str(info.value)
