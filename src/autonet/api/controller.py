"""The controller daemon: the pipeline runner and the REST API in one asyncio process.

`autonet controller --store sqlite:///... --listen unix:/path/api.sock --listen tcp:HOST:PORT
[--tls-cert C --tls-key K --ca CA]`. The API is served by one uvicorn server per transport:
the Unix sockets plainly, root only (mode 0600; every request is root's); the TCP
listeners over HTTPS when given a certificate, client certificates optional and verified
against `--ca` when presented (an agent's registers its host), bearer tokens otherwise
(api/auth.py). The runner resumes every object from the state the store holds.

With an etcd store the controller is one member of several (`--id`, `--advertise`,
`--member-ttl`): it keeps its membership lease (control/members.py), claims and hands
over shards (control/shards.py), relays the heartbeats it hears (control/relay.py), and
on a clean stop revokes its lease, so that its shards move at once. With SQLite it is
alone and owns everything, as it always did.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import socket
import ssl
from collections.abc import Sequence
from typing import Any

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from autonet.agent.rpc.tls import ClientTls, TlsFiles
from autonet.api import auth
from autonet.api.app import create_app
from autonet.api.state import Identity
from autonet.control import overwatch
from autonet.control.agents import AgentClients
from autonet.control.cache import CachedWrites, ObjectCache
from autonet.control.context import Context
from autonet.control.liveness import DEFAULT_HOST_TIMEOUT, HostLiveness
from autonet.control.members import DEFAULT_TTL, Membership
from autonet.control.registry import PluginAPI, load_plugins
from autonet.control.relay import HeartbeatRelay
from autonet.control.runner import HANDLER_TIMEOUT, Runner
from autonet.control.shards import Shards
from autonet.store import open_store
from autonet.store.etcd import EtcdStore

log = logging.getLogger(__name__)


def bind(listen: str) -> socket.socket:
    """A listening socket for `unix:/path` or `tcp:host:port` (IPv6 hosts in brackets)."""
    if listen.startswith("unix:"):
        path = listen.removeprefix("unix:")
        os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.bind(path)
        os.chmod(path, 0o600)  # root's: a request here is root's (api/auth.py)
    elif listen.startswith("tcp:"):
        host, _, port = listen.removeprefix("tcp:").rpartition(":")
        host = host.strip("[]")
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        sock = socket.socket(family, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, int(port)))
    else:
        raise ValueError(f"listen address {listen!r}: expected unix:/path or tcp:host:port")
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def advertised(listens: Sequence[str], tls: bool = False) -> list[str]:
    """The API endpoints of the listen addresses: `https://HOST:PORT` (`http` without
    TLS), `unix:/path`."""
    scheme = "https" if tls else "http"
    return [
        f"{scheme}://{listen.removeprefix('tcp:')}" if listen.startswith("tcp:") else listen
        for listen in listens
    ]


class PeerCertificate(H11Protocol):
    """uvicorn's HTTP/1.1 protocol that hands the client certificate TLS verified to the
    app, as the ASGI TLS extension (`scope["extensions"]["tls"]["client_cert_chain"]`):
    uvicorn does not, and the certificate is all an agent authenticates with."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        ssl_object = transport.get_extra_info("ssl_object")
        der = ssl_object.getpeercert(binary_form=True) if ssl_object is not None else None
        if not der:
            return
        pem = ssl.DER_cert_to_PEM_cert(der)
        app = self.app

        async def with_peer(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "http":
                tls = {"client_cert_chain": [pem], "server_cert": None}
                scope = {**scope, "extensions": {**(scope.get("extensions") or {}), auth.TLS_EXTENSION: tls}}
            await app(scope, receive, send)

        self.app = with_peer


def servers(
    app: Any, listens: list[str], tls: TlsFiles | None
) -> list[tuple[uvicorn.Server, list[socket.socket]]]:
    """One uvicorn server for the Unix sockets (root's), one for the TCP listeners."""
    local = [bind(listen) for listen in listens if listen.startswith("unix:")]
    remote = [bind(listen) for listen in listens if not listen.startswith("unix:")]
    common: dict[str, Any] = {"log_level": "warning", "lifespan": "off", "timeout_graceful_shutdown": 1}
    found = []
    if local:
        found.append((uvicorn.Server(uvicorn.Config(auth.local(app), **common)), local))
    if remote:
        secure: dict[str, Any] = {}
        if tls is not None:
            secure = {
                "ssl_certfile": str(tls.cert),
                "ssl_keyfile": str(tls.key),
                "ssl_ca_certs": str(tls.ca),
                "ssl_cert_reqs": ssl.CERT_OPTIONAL,
                "http": PeerCertificate,
            }
        found.append((uvicorn.Server(uvicorn.Config(app, **common, **secure)), remote))
    return found


async def serve(
    store_url: str,
    listens: list[str],
    overwatch_specs: list[str] | None = None,
    host_timeout: float = DEFAULT_HOST_TIMEOUT,
    handler_timeout: float = HANDLER_TIMEOUT,
    member_id: str | None = None,
    advertise: Sequence[str] = (),
    member_ttl: float = DEFAULT_TTL,
    tls: TlsFiles | None = None,
) -> None:
    """`tls`: the controller's certificate, key and CA: its channels to the agents are
    mutual TLS with them, and its TCP listeners serve HTTPS with them (plaintext without)."""
    agents = AgentClients(tls=ClientTls(tls) if tls is not None else None)
    store = open_store(store_url)
    plugins = load_plugins(PluginAPI())
    liveness = HostLiveness(host_timeout)
    identity = Identity(
        member_id or socket.gethostname(), tuple(advertise or advertised(listens, tls is not None))
    )
    fleet: list[asyncio.Task[None]] = []
    membership = None
    if isinstance(store, EtcdStore):  # one of several controllers
        membership = Membership(store, identity.id, identity.endpoints, member_ttl)
        cache = ObjectCache(store)
        shards = Shards(store, membership, cache)
        writes = CachedWrites(store, cache, plugins.kinds)
        ctx = Context(store=writes, kinds=plugins.kinds, agents=agents, liveness=liveness, shards=shards)
        relay = HeartbeatRelay(store, membership, liveness)
        fleet += [
            asyncio.create_task(membership.run(), name="membership"),
            asyncio.create_task(shards.run(), name="shards"),
            asyncio.create_task(relay.run(), name="heartbeat-relay"),
        ]
    else:
        ctx = Context(store=store, kinds=plugins.kinds, agents=agents, liveness=liveness)
    runner = Runner(ctx, plugins, handler_timeout=handler_timeout)
    app = create_app(ctx, plugins, identity)
    api = servers(app, listens, tls)

    tasks = [*fleet, asyncio.create_task(runner.run(), name="runner")]
    tasks += [asyncio.create_task(loop(ctx), name="plugin-background") for loop in plugins.background]
    watchers = [overwatch.load(spec) for spec in overwatch_specs or []]
    if watchers:
        tasks.append(asyncio.create_task(overwatch.run(ctx, watchers), name="overwatch"))
    api_tasks = [
        asyncio.create_task(server.serve(sockets=sockets), name=f"api-{n}")
        for n, (server, sockets) in enumerate(api)
    ]
    log.info(
        "controller %s serving on %s, store %s, plugins %s",
        identity.id,
        ", ".join(listens),
        store_url,
        plugins.plugins,
    )

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    watched = [*tasks, *api_tasks]
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*watched, waiter], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not waiter and task.exception() is not None:
            log.error("controller task %s died: %r", task.get_name(), task.exception())
    for server, _ in api:
        server.should_exit = True
    await runner.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, *api_tasks, return_exceptions=True)
    if membership is not None:  # its member and owner keys go now: its shards move at once
        await membership.leave()
    waiter.cancel()
    await ctx.agents.close()
    await store.close()
