"""The controller daemon: the pipeline runner and the REST API in one asyncio process.

`autonet controller --store sqlite:///... --listen unix:/path/api.sock --listen tcp:HOST:PORT`.
The API is served on every listen address by one uvicorn server; the runner resumes
every object from the state the store holds.

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
from collections.abc import Sequence

import uvicorn

from autonet.agent.rpc.tls import ClientTls, TlsFiles
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
        os.chmod(path, 0o660)
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


def advertised(listens: Sequence[str]) -> list[str]:
    """The API endpoints of the listen addresses: `http://HOST:PORT`, `unix:/path`."""
    return [
        f"http://{listen.removeprefix('tcp:')}" if listen.startswith("tcp:") else listen for listen in listens
    ]


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
    """`tls`: the controller's certificate, key and CA; its channels to the agents are
    mutual TLS with them (plaintext without)."""
    agents = AgentClients(tls=ClientTls(tls) if tls is not None else None)
    store = open_store(store_url)
    plugins = load_plugins(PluginAPI())
    liveness = HostLiveness(host_timeout)
    identity = Identity(member_id or socket.gethostname(), tuple(advertise or advertised(listens)))
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
    sockets = [bind(listen) for listen in listens]
    config = uvicorn.Config(app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
    server = uvicorn.Server(config)

    tasks = [*fleet, asyncio.create_task(runner.run(), name="runner")]
    tasks += [asyncio.create_task(loop(ctx), name="plugin-background") for loop in plugins.background]
    watchers = [overwatch.load(spec) for spec in overwatch_specs or []]
    if watchers:
        tasks.append(asyncio.create_task(overwatch.run(ctx, watchers), name="overwatch"))
    api_task = asyncio.create_task(server.serve(sockets=sockets), name="api")
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
    watched = [*tasks, api_task]
    waiter = asyncio.create_task(stop.wait())
    done, _ = await asyncio.wait([*watched, waiter], return_when=asyncio.FIRST_COMPLETED)
    for task in done:
        if task is not waiter and task.exception() is not None:
            log.error("controller task %s died: %r", task.get_name(), task.exception())
    server.should_exit = True
    await runner.stop()
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, api_task, return_exceptions=True)
    if membership is not None:  # its member and owner keys go now: its shards move at once
        await membership.leave()
    waiter.cancel()
    await ctx.agents.close()
    await store.close()
