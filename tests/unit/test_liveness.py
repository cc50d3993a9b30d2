"""Host liveness and the loss of a host, against a real SQLite store and no agent."""

from __future__ import annotations

import asyncio
import contextlib

from autonet.control.context import Context
from autonet.control.liveness import HostLiveness
from autonet.control.registry import PluginAPI, load_plugins
from autonet.control.runner import Runner
from autonet.model.objects import Object
from autonet.store import Put, Store


async def put(store: Store, obj: Object) -> None:
    await store.commit([Put(obj.kind, obj.name, obj.to_data(), None)])


def host(name: str, state: str = "Ready") -> Object:
    # rpc on loopback: an agent call from a unit test must never leave the machine
    spec = {"underlay": "100.64.0.11", "rpc": "127.0.0.1:9", "tag": "abcd"}
    status = {"state": state, "index": 1, "boot_id": "b1", "booted": "b1"}
    return Object(kind="Host", name=name, spec=spec, status=status)


async def state_of(store: Store, kind: str, name: str) -> str:
    record = await store.get(kind, name)
    assert record is not None
    return str(record.data["status"]["state"])


async def test_a_silent_host_is_lost_and_a_beating_one_stays_ready(store: Store) -> None:
    api = load_plugins(PluginAPI(), only=["builtin"])
    ctx = Context(store=store, kinds=api.kinds)
    liveness = ctx.liveness = HostLiveness(timeout=0.4)
    await put(store, host("quiet"))
    await put(store, host("busy"))
    runner = Runner(ctx, api)
    task = asyncio.create_task(runner.run())
    try:
        for _ in range(20):  # 1 s: 2.5 timeouts
            liveness.beat("busy")
            await asyncio.sleep(0.05)
        assert await state_of(store, "Host", "busy") == "Ready"
        assert await state_of(store, "Host", "quiet") == "Lost"
        record = await store.get("Host", "quiet")
        assert record is not None and "no heartbeat for" in record.data["status"]["reason"]
        liveness.beat("quiet")  # heard again: back through Init (whose agent is not there)
        for _ in range(40):
            if await state_of(store, "Host", "quiet") != "Lost":
                break
            await asyncio.sleep(0.05)
        assert await state_of(store, "Host", "quiet") == "Init"
    finally:
        await runner.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_a_started_controller_gives_every_host_one_timeout_of_grace() -> None:
    liveness = HostLiveness(timeout=0.3)
    assert liveness.silent_for("never-heard") < 0.3
    await asyncio.sleep(0.35)
    assert liveness.silent_for("never-heard") > 0.3
    liveness.beat("never-heard")
    assert liveness.silent_for("never-heard") < 0.1


async def test_a_lost_hosts_instances_are_lost_and_replaced_not_deleted(store: Store) -> None:
    """The Host Lost operator, through the real runner: instances on the lost host turn
    `Lost` (keeping their addresses), and their automaton creates replacements."""
    api = load_plugins(PluginAPI(), only=["builtin"])
    ctx = Context(store=store, kinds=api.kinds)
    await put(store, host("gone", state="Lost"))
    vpc_spec = {"cidrs": ["100.80.0.0/16"]}
    await put(store, Object(kind="Vpc", name="v", spec=vpc_spec, status={"state": "Provisioned", "vni": 7}))
    network_spec = {"vpc": "v", "cidrs": ["100.80.1.0/24"]}
    await put(store, Object(kind="Network", name="n", spec=network_spec, status={"state": "Provisioned"}))
    automaton = Object(
        kind="Automaton",
        name="web",
        spec={"network": "n", "command": ["true"], "replicas": 2},
        status={"state": "Provisioned", "vpc": "v"},
    )
    await put(store, automaton)
    for ordinal in (0, 1):
        inst = Object(
            kind="Instance",
            name=f"web-{ordinal}",
            spec={"automaton": "web", "ordinal": ordinal},
            status={"state": "Provisioned", "host": "gone", "ipv4": f"100.80.1.{ordinal + 1}"},
        )
        await put(store, inst)
    runner = Runner(ctx, api)
    task = asyncio.create_task(runner.run())
    try:
        for _ in range(100):
            states = {n: await state_of(store, "Instance", n) for n in ("web-0", "web-1")}
            if set(states.values()) == {"Lost"} and await store.get("Instance", "web-3"):
                break
            await asyncio.sleep(0.05)
        assert states == {"web-0": "Lost", "web-1": "Lost"}
        lost = await store.get("Instance", "web-0")
        assert lost is not None and lost.data["status"]["ipv4"] == "100.80.1.1"  # still held
        assert "host gone is lost" in lost.data["status"]["reason"]
        # Replacements, with the lowest free ordinals (no host is Ready: they wait in Init).
        assert await store.get("Instance", "web-2") is not None
        assert await store.get("Instance", "web-3") is not None
    finally:
        await runner.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
