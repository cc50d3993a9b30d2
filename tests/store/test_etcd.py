"""What the etcd backend promises beyond the contract: URLs, endpoint failover, revisions
counted from the store's origin, bounded history, leases, etcd's limits, and generated
code that matches etcd's protos."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import grpc
import pytest

import autonet.store.etcd as etcd_backend
from autonet.store import Compacted, Put, StoreError, open_store
from autonet.store.etcd import EtcdStore, parse_url, with_tls
from autonet.store.etcdclient import METHODS, RANGE, TXN, EtcdError, Method, prefix_end
from autonet.store.etcdrpc import rpc_pb2

from .etcd_server import EtcdServer, free_port, needs_etcd
from .test_contract import take

ROOT = Path(__file__).resolve().parents[2]
ETCDRPC = ROOT / "src" / "autonet" / "store" / "etcdrpc"


def etcd_store(server: EtcdServer, root: str, query: str = "") -> EtcdStore:
    store = open_store(f"etcd://{server.endpoint}{root}{query}")
    assert isinstance(store, EtcdStore)
    return store


# -- no server needed ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "endpoints", "root", "options"),
    [
        ("etcd://127.0.0.1:2379", ["127.0.0.1:2379"], "/autonet", {}),
        ("etcd://a,b:2380/", ["a:2379", "b:2380"], "/autonet", {}),
        ("etcd://[fd00::1]:23790,[fd00::2]/x/y/", ["[fd00::1]:23790", "[fd00::2]:2379"], "/x/y", {}),
        ("etcd://h:1/r?cacert=/ca.pem&timeout=2", ["h:1"], "/r", {"cacert": "/ca.pem", "timeout": "2"}),
    ],
)
def test_parse_url(url: str, endpoints: list[str], root: str, options: dict[str, str]) -> None:
    assert parse_url(url) == (endpoints, root, options)


@pytest.mark.parametrize(
    "url",
    [
        "etcd://",
        "etcd://h:port",
        "etcd://h:70000",
        "etcd://h:1,:2",
        "etcd://h:1?colour=blue",
        "etcd://h:1?history=-1",
        "etcd://h:1?timeout=soon",
        "etcds://h:1",
    ],
)
def test_bad_urls_are_store_errors(url: str) -> None:
    with pytest.raises(StoreError):
        open_store(url)


def test_with_tls_adds_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ca.pem", "c.pem", "c-key.pem"):
        (tmp_path / name).write_text("not checked until connecting\n")
    monkeypatch.chdir(tmp_path)
    url = with_tls("etcd://h:1/r", Path("ca.pem"), Path("c.pem"), Path("c-key.pem"))
    _, root, options = parse_url(url)
    assert root == "/r"
    assert options == {
        "cacert": f"{tmp_path}/ca.pem",
        "cert": f"{tmp_path}/c.pem",
        "key": f"{tmp_path}/c-key.pem",
    }
    assert with_tls("etcd://h:1", None, None, None) == "etcd://h:1"
    with pytest.raises(StoreError, match="needs its key"):
        with_tls("etcd://h:1", Path("ca.pem"), Path("c.pem"), None)
    with pytest.raises(StoreError, match="cannot read"):
        with_tls("etcd://h:1", Path("nope.pem"), None, None)


def test_prefix_end() -> None:
    assert prefix_end(b"/autonet/objects/") == b"/autonet/objects0"
    assert prefix_end(b"a\xff\xff") == b"b"
    assert prefix_end(b"\xff") == b"\0"


def test_kinds_cannot_hold_a_slash() -> None:
    store = open_store("etcd://127.0.0.1:1")
    assert isinstance(store, EtcdStore)
    with pytest.raises(StoreError):
        store.key("Vpc/x", "a")
    with pytest.raises(StoreError):
        store.key("", "a")
    assert store.key("Vpc", "a/b") == b"/autonet/objects/Vpc/a/b"


def test_wire_paths_are_etcds_and_messages_match_its_services() -> None:
    """The stubs live under autonet_etcd.* but the calls go to etcd's own service names."""
    services = rpc_pb2.DESCRIPTOR.services_by_name
    assert rpc_pb2.DESCRIPTOR.package == "autonet_etcd.etcdserverpb"
    for method in METHODS:
        assert method.path == f"/etcdserverpb.{method.service}/{method.name}"
        declared = services[method.service].methods_by_name[method.name]
        assert declared.input_type is method.request.DESCRIPTOR
        assert declared.output_type is method.response.DESCRIPTOR


def test_generated_messages_match_the_protos(tmp_path: Path) -> None:
    pytest.importorskip("grpc_tools")
    package = tmp_path / "autonet" / "store" / "etcdrpc"
    shutil.copytree(ETCDRPC, package, ignore=shutil.ignore_patterns("*_pb2*", "__pycache__"))
    protos = [str(package / f"{name}.proto") for name in ("kv", "auth", "rpc")]
    outputs = [f"--python_out={tmp_path}", f"--pyi_out={tmp_path}"]
    result = subprocess.run(
        [sys.executable, "-m", "grpc_tools.protoc", f"-I{tmp_path}", *outputs, *protos],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    for name in ("kv", "auth", "rpc"):
        for suffix in ("_pb2.py", "_pb2.pyi"):
            fresh = (package / f"{name}{suffix}").read_text()
            assert fresh == (ETCDRPC / f"{name}{suffix}").read_text(), f"{name}{suffix}: run make proto"


async def test_no_endpoint_answers() -> None:
    dead = [f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"]
    store = open_store(f"etcd://{','.join(dead)}?timeout=2")
    try:
        with pytest.raises(EtcdError) as info:
            await store.get("Vpc", "a")
        assert info.value.code == grpc.StatusCode.UNAVAILABLE
        assert "no etcd endpoint answers" in str(info.value) and all(d in str(info.value) for d in dead)
    finally:
        await store.close()


# -- against a real etcd -------------------------------------------------------------------


class Proxy:
    """A TCP relay to ``target`` that can be cut: an etcd endpoint that goes away."""

    def __init__(self, target: str) -> None:
        self.target = target
        self.writers: set[asyncio.StreamWriter] = set()
        self.server: asyncio.Server | None = None
        self.endpoint = ""

    async def start(self) -> Proxy:
        self.server = await asyncio.start_server(self._relay, "127.0.0.1", 0)
        self.endpoint = f"127.0.0.1:{self.server.sockets[0].getsockname()[1]}"
        return self

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        host, port = self.target.rsplit(":", 1)
        upstream_reader, upstream_writer = await asyncio.open_connection(host, int(port))
        self.writers |= {writer, upstream_writer}

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.close()

        await asyncio.gather(pipe(reader, upstream_writer), pipe(upstream_reader, writer))

    async def cut(self) -> None:
        assert self.server is not None
        self.server.close()
        for writer in self.writers:
            writer.transport.abort()
        await self.server.wait_closed()


@needs_etcd
async def test_the_first_endpoint_that_answers_is_used(etcd: EtcdServer) -> None:
    dead = f"127.0.0.1:{free_port()}"
    store = open_store(f"etcd://{dead},{etcd.endpoint}/first-answers")
    assert isinstance(store, EtcdStore)
    try:
        record = await store.put("Vpc", "a", {"n": 1})
        assert await store.get("Vpc", "a") == record
        assert store.client.endpoint == etcd.endpoint
    finally:
        await store.close()


@needs_etcd
async def test_fails_over_when_the_endpoint_in_use_goes_away(etcd: EtcdServer) -> None:
    proxy = await Proxy(etcd.endpoint).start()
    store = open_store(f"etcd://{proxy.endpoint},{etcd.endpoint}/failover")
    assert isinstance(store, EtcdStore)
    try:
        a = await store.put("Vpc", "a", {"n": 1})
        assert store.client.endpoint == proxy.endpoint
        async with contextlib.aclosing(store.watch(0)) as stream:  # type: ignore[type-var]
            async with asyncio.timeout(10):
                assert (await anext(stream)).record == a
                await proxy.cut()
                assert await store.get("Vpc", "a") == a  # a read retries on the next endpoint
                assert store.client.endpoint == etcd.endpoint
                b = await store.put("Vpc", "b", {"n": 2})
                assert (await anext(stream)).record == b  # the watch resumed, nothing lost or repeated
    finally:
        await store.close()


@needs_etcd
async def test_a_write_lost_on_the_way_is_reported_not_repeated(
    etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = etcd_store(etcd, "/lost")
    try:
        a = await store.put("Vpc", "a", {})  # connected now
        real = store.client._unary
        calls: list[str] = []

        async def flaky(channel: Any, method: Method[Any, Any], request: Any) -> Any:
            calls.append(method.name)
            if calls.count(method.name) == 1 and method in (RANGE, TXN):  # each fails once
                metadata = grpc.aio.Metadata()
                raise grpc.aio.AioRpcError(
                    grpc.StatusCode.UNAVAILABLE, metadata, metadata, "connection reset"
                )
            return await real(channel, method, request)

        monkeypatch.setattr(store.client, "_unary", flaky)
        with pytest.raises(EtcdError, match="may or may not have been applied"):
            await store.put("Vpc", "b", {})
        assert calls == ["Txn"]  # sent once, not repeated
        assert await store.get("Vpc", "a") == a  # a read is retried
        assert calls[1:] == ["Range", "Range"]
    finally:
        await store.close()


@needs_etcd
async def test_revisions_count_from_the_stores_origin(etcd: EtcdServer) -> None:
    first = etcd_store(etcd, "/origin/one")
    second = etcd_store(etcd, "/origin/two")
    try:
        a = await first.put("Vpc", "a", {})
        assert a.revision == 1 and await second.revision() == 0  # second's origin is after a
        b = await second.put("Vpc", "b", {})
        assert b.revision == 1 and await first.revision() == 3  # global: b counts for first too
        assert [r.name for r in await first.list()] == ["a"]
        assert [r.name for r in await second.list()] == ["b"]
        assert await second.origin() == await first.origin() + 2
    finally:
        await first.close()
        await second.close()

    again = etcd_store(etcd, "/origin/one")  # a reopened store keeps its origin and revisions
    try:
        assert await again.get("Vpc", "a") == a
        assert await again.revision() == 3
    finally:
        await again.close()


@needs_etcd
async def test_list_reads_in_pages_at_one_revision(etcd: EtcdServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(etcd_backend, "_PAGE", 3)
    store = etcd_store(etcd, "/pages")
    try:
        names = [f"i-{n:02}" for n in range(10)]
        for name in names:
            await store.put("Instance", name, {})
        await store.put("Host", "i-host", {})
        assert [r.name for r in await store.list("Instance")] == names
        assert [(r.kind, r.name) for r in await store.list(prefix="i-")] == [
            ("Host", "i-host"),
            *[("Instance", name) for name in names],
        ]
    finally:
        await store.close()


@needs_etcd
async def test_history_is_bounded(etcd: EtcdServer) -> None:
    store = etcd_store(etcd, "/bounded", "?history=5")
    try:
        for n in range(10):
            await store.put("Vpc", "a", {"n": n})
        with pytest.raises(Compacted):
            await take(store, 0, 1)
        events = await take(store, 4, 6)  # the last history (5) revisions, and one more
        assert [e.record.revision for e in events] == [5, 6, 7, 8, 9, 10]
    finally:
        await store.close()


@needs_etcd
async def test_compact(etcd: EtcdServer) -> None:
    store = etcd_store(etcd, "/compact", "?history=0")  # history=0: only explicit compaction
    try:
        for n in range(6):
            await store.put("Vpc", "a", {"n": n})
        await store.compact(4)  # drops the history before revision 4
        with pytest.raises(Compacted, match="cannot watch from revision 2"):
            await take(store, 2, 1)
        assert [e.record.data for e in await take(store, 3, 3)] == [{"n": 3}, {"n": 4}, {"n": 5}]
        await store.compact(2)  # already compacted: nothing to do
        assert (await store.get("Vpc", "a")).data == {"n": 5}  # type: ignore[union-attr]
    finally:
        await store.close()


@needs_etcd
async def test_leases(etcd: EtcdServer) -> None:
    store = etcd_store(etcd, "/leases")
    try:
        lease, ttl = await store.lease_grant(5)
        assert ttl == 5
        assert 0 < await store.lease_keepalive(lease) <= 5
        member = store.root + b"members/c1"
        await store.client.put(member, b"{}", lease=lease)
        assert (await store.client.range(member)).kvs[0].lease == lease
        await store.lease_revoke(lease)
        assert (await store.client.range(member)).kvs == []  # the key went with its lease
        assert await store.lease_keepalive(lease) == 0
    finally:
        await store.close()


@needs_etcd
async def test_a_commit_over_etcds_limit_names_the_flag(etcd: EtcdServer) -> None:
    store = etcd_store(etcd, "/limits")
    try:
        with pytest.raises(EtcdError, match="--max-txn-ops"):
            await store.commit([Put("Instance", f"i-{n}", {}) for n in range(200)])
        assert await store.revision() == 0
    finally:
        await store.close()


@needs_etcd
async def test_a_closed_store_fails_its_watchers(etcd: EtcdServer) -> None:
    store = etcd_store(etcd, "/closing")
    stream = store.watch(0)
    waiting = asyncio.ensure_future(anext(stream))  # type: ignore[arg-type]
    await asyncio.sleep(0.1)
    await store.close()
    with pytest.raises(StoreError, match="closed"):
        await asyncio.wait_for(waiting, 5)
    with pytest.raises(StoreError, match="closed"):
        await store.get("Vpc", "a")
