"""Typed status models: writes are checked against the kind's model, plugins extend it."""

from __future__ import annotations

import asyncio
import contextlib

import pydantic
import pytest

from autonet.control.context import Context
from autonet.control.outcomes import Advance, Outcome
from autonet.control.registry import PluginAPI, load_plugins
from autonet.control.runner import Runner
from autonet.model.errors import StatusError
from autonet.model.kinds import KindInfo, Stage
from autonet.model.objects import Object
from autonet.model.status import AddressedStatus, InstanceStatus, Status
from autonet.store import Put, Store


def builtin() -> PluginAPI:
    return load_plugins(PluginAPI(), only=["builtin"])


def instance(**status: object) -> Object:
    return Object(kind="Instance", name="web-0", spec={"automaton": "web", "ordinal": 0}, status=status)


def test_every_builtin_kind_declares_its_status() -> None:
    for kind in builtin().kinds.all():
        model = kind.status()
        assert model is not None and issubclass(model, Status), kind.name
        assert {"state", "reason"} <= set(model.model_fields)


@pytest.mark.parametrize(
    ("status", "message"),
    [
        ({"hots": "h1"}, 'Instance "web-0": status.hots: unknown key (not in InstanceStatus;'),
        ({"mtu": "1450"}, 'Instance "web-0": status.mtu: Input should be a valid integer'),
        ({"host": 7}, 'Instance "web-0": status.host: Input should be a valid string (got 7)'),
        ({"pid": True}, "status.pid: Input should be a valid integer"),
        ({"network_hosts": ["h1", 2]}, "status.network_hosts.1: Input should be a valid string"),
    ],
)
def test_an_unknown_key_or_a_wrong_type_is_refused(status: dict[str, object], message: str) -> None:
    kind = builtin().kinds["Instance"]
    with pytest.raises(StatusError) as refused:
        kind.check_status("web-0", {"state": "Wired", **status}, None)
    assert message in str(refused.value)


def test_only_the_keys_a_write_changes_are_checked() -> None:
    """A key an older version wrote (not declared any more) does not block later writes."""
    kind = builtin().kinds["Instance"]
    before = {"state": "Wired", "legacy": 1}
    kind.check_status("web-0", {"state": "Routed", "legacy": 1}, before)
    with pytest.raises(StatusError, match=r"status\.legacy: unknown key"):
        kind.check_status("web-0", {"state": "Routed", "legacy": 2}, before)


def test_a_plugin_declares_the_keys_it_adds() -> None:
    api = builtin()
    kind = api.kinds["Instance"]
    with pytest.raises(StatusError, match=r"status\.l2_port: unknown key"):
        kind.check_status("web-0", {"l2_port": "anq1"}, None)
    api.extend_status("Instance", "l2_port", str)
    kind.check_status("web-0", {"l2_port": "anq1"}, None)
    with pytest.raises(StatusError, match=r"status\.l2_port: Input should be a valid string"):
        kind.check_status("web-0", {"l2_port": 1}, None)
    with pytest.raises(ValueError, match=r"Instance\.status\.l2_port already exists"):
        api.extend_status("Instance", "l2_port", str)
    with pytest.raises(ValueError, match=r"Instance\.status\.host already exists"):
        api.extend_status("Instance", "host", str)
    # the typed view keeps a plugin's keys
    assert InstanceStatus.of(instance(state="Wired", l2_port="anq1")).model_extra == {"l2_port": "anq1"}


def test_a_kind_without_a_status_model_is_not_checked() -> None:
    api = PluginAPI()
    api.add_kind(KindInfo("Widget", "widgets", pydantic.BaseModel, [Stage("Init")]))
    api.kinds["Widget"].check_status("w", {"anything": object()}, None)
    with pytest.raises(ValueError, match="Widget has no status model"):
        api.extend_status("Widget", "size", int)


def test_the_typed_view_reads_what_is_stored_and_changes_nothing() -> None:
    inst = instance(state="Addressed", host="h1", ipv4="100.80.1.2", mtu=1450, network_hosts=["h1"])
    s = InstanceStatus.of(inst)
    assert (s.state, s.host, s.ipv4, s.ipv6, s.mtu, s.network_hosts) == (
        "Addressed", "h1", "100.80.1.2", None, 1450, ["h1"]
    )  # fmt: skip
    assert inst.to_data()["status"] == {
        "state": "Addressed", "host": "h1", "ipv4": "100.80.1.2", "mtu": 1450, "network_hosts": ["h1"]
    }  # fmt: skip
    # Wiring needs what IPAM wrote: a missing key is named.
    with pytest.raises(pydantic.ValidationError, match="vpc_uid"):
        AddressedStatus.of(inst)


async def test_a_refused_write_writes_nothing(store: Store) -> None:
    ctx = Context(store=store, kinds=builtin().kinds)
    inst = instance(state="Init")
    await ctx.store.commit([Put(inst.kind, inst.name, inst.to_data(), 0)])
    stored = await ctx.get("Instance", "web-0")
    assert stored is not None
    typo = stored.with_status(hots="h1")
    with pytest.raises(StatusError, match=r"status\.hots: unknown key"):
        await ctx.store.commit([Put(typo.kind, typo.name, typo.to_data(), stored.metadata.revision)])
    record = await store.get("Instance", "web-0")
    assert record is not None and record.data["status"] == {"state": "Init"}
    placed = stored.with_status(host="h1")
    await ctx.store.commit([Put(placed.kind, placed.name, placed.to_data(), stored.metadata.revision)])


async def test_a_handler_that_writes_an_undeclared_key_does_not_advance(store: Store) -> None:
    """In the runner the refusal is loud: the object stays, its reason names the key."""
    api = PluginAPI()
    api.add_kind(
        KindInfo("Widget", "widgets", pydantic.BaseModel, [Stage("Init"), Stage("Done")], status_model=Status)
    )

    @api.operator("Widget", "Init")
    async def misspell(obj: Object, ctx: Context) -> Outcome:
        return Advance(status={"colour": "red"})

    widget = Object(kind="Widget", name="w", status={"state": "Init"})
    await store.commit([Put(widget.kind, widget.name, widget.to_data(), 0)])
    runner = Runner(Context(store=store, kinds=api.kinds), api)
    task = asyncio.create_task(runner.run())
    try:
        for _ in range(100):
            record = await store.get("Widget", "w")
            assert record is not None
            if record.data["status"].get("reason"):
                break
            await asyncio.sleep(0.02)
        assert record.data["status"]["state"] == "Init"
        assert "StatusError" in record.data["status"]["reason"]
        assert 'Widget "w": status.colour: unknown key' in record.data["status"]["reason"]
    finally:
        await runner.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
