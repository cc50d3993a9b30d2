"""Identity-based composition security without a kernel: what the control plane sends
(identities and identity rules, grown with instances + links), the router's element
differences, and identity leases through the real runner on a SQLite store."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable

from autonet.control.context import Context
from autonet.control.operators.automatons import terminate
from autonet.control.operators.network import identities, identity_rules, member_list
from autonet.control.registry import PluginAPI, load_plugins
from autonet.control.runner import Runner
from autonet.dataplane.policy import Allow, _Elements, _elements, _script
from autonet.model.objects import Object
from autonet.model.policy import openings
from autonet.store import Put, Store

# -- what the control plane sends ----------------------------------------------------------


def automaton(name: str, identity: int | None, provides: list[dict[str, object]] | None = None) -> Object:
    status: dict[str, object] = {"state": "Provisioned", "vpc": "v"}
    if identity is not None:
        status["identity"] = identity
    spec = {"network": "n", "command": ["true"], "provides": provides or [], "consumes": ["http"]}
    return Object(kind="Automaton", name=name, spec=spec, status=status)


def instance(automaton: str, ordinal: int, host: str, v4: str, v6: str = "") -> Object:
    status = {"state": "Provisioned", "host": host, "vpc": "v", "ipv4": v4, "ipv6": v6}
    return Object(
        kind="Instance",
        name=f"{automaton}-{ordinal}",
        spec={"automaton": automaton, "ordinal": ordinal},
        status=status,
    )


def composition(*links: tuple[str, str]) -> Object:
    spec = {"links": [{"from": a, "to": b, "protocol": "http"} for a, b in links]}
    return Object(kind="Composition", name="c", spec=spec, status={"state": "Provisioned"})


HTTP = [{"protocol": "http", "transport": "tcp", "port": 8080}]


def test_a_link_between_100_clients_and_100_servers_is_200_identities_and_one_rule() -> None:
    autos = {"cli": automaton("cli", 1), "web": automaton("web", 2, HTTP)}
    wired = [instance("cli", n, "h1", f"100.80.1.{n + 1}", f"fd00:80:1::{n + 1:x}") for n in range(100)]
    wired += [instance("web", n, "h2", f"100.80.2.{n + 1}", f"fd00:80:2::{n + 1:x}") for n in range(100)]
    identity = identities(autos.values())
    members = member_list(wired, identity)
    found = openings([composition(("cli", "web"))], autos)
    for host in ("h1", "h2"):
        rules = identity_rules(
            found, identity, {i.spec["automaton"] for i in wired if i.status["host"] == host}
        )
        assert [(r.source_identity, r.destination_identity, r.transport, r.port) for r in rules] == [
            (1, 2, "tcp", 8080)
        ]
    # Two addresses per instance, each with its automaton's identity: 400 map elements,
    # where the address model needed 100 x 100 x 2 = 20,000 set elements.
    assert len(members) == 400
    assert {m.identity for m in members if m.automaton == "cli"} == {1}
    assert {m.identity for m in members if m.automaton == "web"} == {2}
    rules = {Allow(1, 2, "tcp", 8080)}
    elements = _elements({m.address: m.identity for m in members}, rules)
    assert elements.count() == 400 + 2  # the map, plus one allow and one ping element


def test_a_host_gets_the_rules_of_links_that_touch_its_automatons() -> None:
    autos = {
        "a": automaton("a", 1, HTTP),
        "b": automaton("b", 2, HTTP),
        "c": automaton("c", 3, HTTP),
        "new": automaton("new", None, HTTP),  # no identity yet: no rule, denied
    }
    found = openings([composition(("a", "b"), ("b", "c"), ("a", "new"))], autos)
    identity = identities(autos.values())
    assert identity == {"a": 1, "b": 2, "c": 3}

    def pairs(local: set[str]) -> list[tuple[int, int]]:
        return [(r.source_identity, r.destination_identity) for r in identity_rules(found, identity, local)]

    assert pairs({"a"}) == [(1, 2)]
    assert pairs({"c"}) == [(2, 3)]
    assert pairs({"b"}) == [(1, 2), (2, 3)]
    assert pairs({"new"}) == []
    members = member_list([instance("new", 0, "h1", "100.80.3.1")], identity)
    assert [m.identity for m in members] == [0]  # the agent leaves it out of the map


# -- the router's element differences ----------------------------------------------------


def test_only_changed_elements_are_sent_and_a_moved_address_is_deleted_then_added() -> None:
    rules = {Allow(1, 2, "tcp", 8080)}
    before = _elements({"100.80.1.1": 1, "100.80.1.2": 2, "fd00:80::1": 1}, rules)
    script, added, removed, _ = _script(_Elements(), before)
    assert (added, removed) == (5, 0)
    assert "add element inet autonet id6 { fd00:80::1 : 1 }" in script

    # 100.80.1.2 now belongs to identity 3 (its address was reused); a new instance of 2.
    after = _elements({"100.80.1.1": 1, "100.80.1.2": 3, "100.80.1.3": 2, "fd00:80::1": 1}, rules)
    script, added, removed, revoked = _script(before, after)
    assert (added, removed) == (2, 1)
    assert revoked.addresses == {"100.80.1.2"} and not revoked.rules  # its flows are revoked
    lines = script.splitlines()
    assert lines == [
        "delete element inet autonet id4 { 100.80.1.2 }",
        "add element inet autonet id4 { 100.80.1.2 : 3, 100.80.1.3 : 2 }",
    ]
    assert _script(after, after)[:3] == ("", 0, 0)  # nothing changed: nothing sent


def test_identity_zero_and_unmapped_addresses_hold_no_element() -> None:
    elements = _elements({"100.80.1.1": 0, "100.80.1.2": 2}, {Allow(0, 2, "tcp", 80), Allow(2, 2, "udp", 53)})
    assert elements.maps["id4"] == {"100.80.1.2": 2}
    assert elements.allow == {(2, 2, "udp", 53)}


# -- identity leases -----------------------------------------------------------------------


async def put(store: Store, obj: Object) -> None:
    await store.commit([Put(obj.kind, obj.name, obj.to_data(), None)])


async def tenancy(store: Store, vpc: str, cidr: str) -> None:
    vpc_status = {"state": "Provisioned", "vni": 7}
    await put(store, Object(kind="Vpc", name=vpc, spec={"cidrs": [f"{cidr}.0.0/16"]}, status=vpc_status))
    spec = {"vpc": vpc, "cidrs": [f"{cidr}.1.0/24"]}
    await put(store, Object(kind="Network", name=f"{vpc}-n", spec=spec, status={"state": "Provisioned"}))


def new_automaton(name: str, network: str) -> Object:
    spec = {"network": network, "command": ["true"], "replicas": 0}
    return Object(kind="Automaton", name=name, spec=spec, status={"state": "Init"})


async def until(check: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    for _ in range(int(timeout / 0.05)):
        if await check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("condition not met in time")


@contextlib.asynccontextmanager
async def running(ctx: Context, api: PluginAPI) -> AsyncIterator[None]:
    runner = Runner(ctx, api)
    task = asyncio.create_task(runner.run())
    try:
        yield
    finally:
        await runner.stop()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_identities_are_leased_per_vpc_stable_and_released_with_the_automaton(store: Store) -> None:
    api = load_plugins(PluginAPI(), only=["builtin"])
    ctx = Context(store=store, kinds=api.kinds)
    await tenancy(store, "v", "100.80")
    await tenancy(store, "w", "100.81")
    for name, network in (("a", "v-n"), ("b", "v-n"), ("c", "v-n"), ("x", "w-n")):
        await put(store, new_automaton(name, network))

    async def identity_of(name: str) -> int | None:
        obj = await ctx.get("Automaton", name)
        return None if obj is None or obj.state != "Provisioned" else obj.status.get("identity")

    async def all_provisioned() -> bool:
        return all([await identity_of(n) for n in ("a", "b", "c", "x")])

    async with running(ctx, api):
        await until(all_provisioned)
        held = {n: await identity_of(n) for n in ("a", "b", "c")}
        assert sorted(held.values()) == [1, 2, 3]  # unique in the VPC, 0 never used
        assert await identity_of("x") == 1  # another VPC, another pool
        leases = {lease.name: lease.spec["owner"] for lease in await ctx.list("Lease", prefix="identity/")}
        assert set(leases) == {"identity/v/1", "identity/v/2", "identity/v/3", "identity/w/1"}

        # Stable for its life: the Init handler runs again (a spec change) and keeps it.
        a = await ctx.get("Automaton", "a")
        assert a is not None
        changed = a.model_copy(deep=True)
        changed.spec["replicas"] = 0
        changed.spec["env"] = {"X": "1"}
        changed.status["state"] = "Init"
        await store.commit([Put(a.kind, a.name, changed.to_data(), a.metadata.revision)])
        await until(lambda: _revised(ctx, "a", a.metadata.revision))
        assert await identity_of("a") == held["a"]

        # Released on deletion; the next automaton gets the lowest free number.
        b = await ctx.get("Automaton", "b")
        assert b is not None
        await store.commit([terminate(b)])

        async def b_gone() -> bool:
            return await ctx.get("Automaton", "b") is None

        await until(b_gone)
        assert await ctx.get("Lease", f"identity/v/{held['b']}") is None
        await put(store, new_automaton("d", "v-n"))

        async def d_provisioned() -> bool:
            return bool(await identity_of("d"))

        await until(d_provisioned)
        assert await identity_of("d") == held["b"]


async def _revised(ctx: Context, name: str, revision: int) -> bool:
    obj = await ctx.get("Automaton", name)
    return obj is not None and obj.metadata.revision > revision and obj.state == "Provisioned"


async def test_an_automaton_provisioned_without_identity_is_sent_back_to_get_one(store: Store) -> None:
    """Automatons provisioned before identities existed: their Provisioned operator
    sends them back to Init, whose handler leases an identity (their instances are
    denied meanwhile)."""
    await tenancy(store, "v", "100.80")
    old = Object(
        kind="Automaton",
        name="old",
        spec={"network": "v-n", "command": ["true"], "replicas": 0},
        status={"state": "Provisioned", "vpc": "v"},
    )
    await put(store, old)
    inst = instance("old", 0, "h1", "100.80.1.9")
    inst.status["network"] = "v-n"
    await put(store, inst)
    api = load_plugins(PluginAPI(), only=["builtin"])
    async with running(Context(store=store, kinds=api.kinds), api):

        async def leased() -> bool:
            record = await store.get("Automaton", "old")
            return record is not None and bool(record.data["status"].get("identity"))

        await until(leased)
