"""Model: naming, addressing, MACs, flow IDs, kinds and manifest validation.

Address reuse is checked through the leases and the instance operator that release them
(control), on a real SQLite store: the model only picks the lowest free address.
"""

from __future__ import annotations

import asyncio
import ipaddress
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from autonet.control import leases
from autonet.control.context import Context
from autonet.control.leases import LEASE, PENDING_SECONDS, lease_addresses
from autonet.control.operators.instances import ip_pool
from autonet.control.registry import PluginAPI, load_plugins
from autonet.control.runner import Runner
from autonet.model import naming
from autonet.model.addressing import mac_for, pick_address, pick_vni
from autonet.model.errors import ExhaustedError, ValidationError
from autonet.model.flowid import FlowIdGenerator, host_of
from autonet.model.kinds import KindRegistry, builtin_kinds
from autonet.model.manifest import overlay, parse, validate
from autonet.model.objects import Object
from autonet.store import Put, open_store

KINDS = KindRegistry(builtin_kinds())


@given(st.text(min_size=1, max_size=60), st.text(min_size=1, max_size=60), st.uuids())
def test_kernel_names_fit_ifnamsiz_and_carry_the_prefix(cluster: str, host: str, uid: object) -> None:
    tag = naming.host_tag(cluster, host)
    for name in (
        naming.instance_netns(tag, str(uid)),
        naming.router_netns(tag, str(uid)),
        naming.router_ifname(str(uid)),
        naming.lab_netns(cluster, "h200"),
    ):
        assert len(name.encode()) <= 15
        assert name.startswith("an")
        assert name.isascii() and name.isalnum()


def test_kernel_names_do_not_collide_across_hosts_vpcs_and_labs() -> None:
    import uuid

    uids = [uuid.uuid4().hex for _ in range(2000)]
    tags = {naming.host_tag(lab, f"h{i}") for lab in ("a", "b", "c") for i in range(1, 30)}
    assert len(tags) == 3 * 29
    names = {naming.instance_netns(tag, uid) for tag in list(tags)[:5] for uid in uids}
    assert len(names) == 5 * 2000
    assert len({naming.router_ifname(uid) for uid in uids}) == 2000


def test_addresses_skip_network_and_broadcast_and_exhaust_clearly() -> None:
    taken: set[str] = set()
    for _ in range(6):
        taken.add(pick_address("100.64.7.0/29", taken))
    assert taken == {f"100.64.7.{n}" for n in range(1, 7)}
    with pytest.raises(ExhaustedError, match=r"100\.64\.7\.0/29 is exhausted"):
        pick_address("100.64.7.0/29", taken)


def test_ipv6_addresses_skip_the_subnet_router_anycast() -> None:
    first = pick_address("fd00:1::/64", set())
    assert first == "fd00:1::1"
    assert pick_address("fd00:1::/64", {first}) == "fd00:1::2"


async def test_the_address_an_instance_releases_when_removed_is_leased_again_lowest_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = open_store(f"sqlite:///{tmp_path / 'store.db'}")
    api = load_plugins(PluginAPI(), only=["builtin"])
    ctx = Context(store=store, kinds=api.kinds)
    pool, cidrs = ip_pool("n"), {4: "100.64.7.0/24"}
    try:
        for name, state in (("a", "Provisioned"), ("b", "Terminating"), ("c", "Provisioned")):
            inst = Object(kind="Instance", name=name, status={"state": state, "network": "n"})
            held, ops = await lease_addresses(ctx, pool, cidrs, inst, 'network "n"')
            inst = inst.with_status(ipv4=held[4])
            await store.commit([Put("Instance", name, inst.to_data(), 0), *ops])
        assert sorted(lease.name for lease in await ctx.list(LEASE)) == [
            f"ip/n/100.64.7.{i}" for i in (1, 2, 3)
        ]

        # The Terminating instance's own operator removes it, through the runner.
        runner = Runner(ctx, api)
        task = asyncio.create_task(runner.run())
        deadline = asyncio.get_running_loop().time() + 5
        while await store.get("Instance", "b") is not None:
            assert asyncio.get_running_loop().time() < deadline, "instance b was not removed"
            await asyncio.sleep(0.01)
        await runner.stop()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert sorted(lease.name for lease in await ctx.list(LEASE)) == ["ip/n/100.64.7.1", "ip/n/100.64.7.3"]

        # This controller keeps its own recent picks aside for a few seconds; past those:
        later = time.monotonic() + PENDING_SECONDS + 1
        monkeypatch.setattr(leases, "time", SimpleNamespace(monotonic=lambda: later))
        newcomer = Object(kind="Instance", name="d", status={"state": "Scheduled"})
        held, ops = await lease_addresses(ctx, pool, cidrs, newcomer, 'network "n"')
        assert held == {4: "100.64.7.2"}
        assert [op.name for op in ops if isinstance(op, Put)] == ["ip/n/100.64.7.2"]
    finally:
        await store.close()


@given(st.uuids())
def test_macs_are_locally_administered_unicast(uid: object) -> None:
    first = int(mac_for(str(uid)).split(":")[0], 16)
    assert first & 0x01 == 0  # unicast
    assert first & 0x02 == 0x02  # locally administered


def test_vnis_are_unique_and_a_wanted_one_is_checked() -> None:
    assert pick_vni({4096, 4097}) == 4098
    assert pick_vni(set(), 5000) == 5000
    with pytest.raises(ExhaustedError, match="5000 is already in use"):
        pick_vni({5000}, 5000)


def test_flow_ids_are_unique_across_hosts_and_threads() -> None:
    generators = [FlowIdGenerator(i) for i in range(4)]
    seen: list[int] = []
    lock = threading.Lock()

    def mint(gen: FlowIdGenerator) -> None:
        ids = [gen.next() for _ in range(5000)]
        with lock:
            seen.extend(ids)

    threads = [threading.Thread(target=mint, args=(g,)) for g in generators for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(seen) == len(set(seen)) == 40000
    assert {host_of(i) for i in seen} == {0, 1, 2, 3}


def test_flow_ids_grow_even_when_the_clock_steps_back() -> None:
    times = iter([1_800_000_000.0, 1_799_999_999.0, 1_800_000_000.5])
    gen = FlowIdGenerator(1, clock=lambda: next(times))
    a, b, c = gen.next(), gen.next(), gen.next()
    assert a < b < c


def test_pipeline_stage_inserted_only_for_matching_objects() -> None:
    kinds = KindRegistry(builtin_kinds())
    kinds["Instance"].insert_stage("L2AgentReady", after="Wired", when=lambda o: o.status.get("l2") == "ovs")
    plain = Object(kind="Instance", name="a", status={"state": "Wired"})
    ovs = Object(kind="Instance", name="b", status={"state": "Wired", "l2": "ovs"})
    assert kinds["Instance"].next_state(plain) == "Routed"
    assert kinds["Instance"].next_state(ovs) == "L2AgentReady"
    ovs.status["state"] = "L2AgentReady"
    assert kinds["Instance"].next_state(ovs) == "Routed"


def test_kinds_resolve_singular_plural_any_case() -> None:
    assert KINDS.resolve("Instances").name == "Instance"
    assert KINDS.resolve("vpc").name == "Vpc"
    with pytest.raises(ValidationError, match="unknown kind 'widgets'"):
        KINDS.resolve("widgets")


SHOP = """
kind: Vpc
name: blue
spec: {cidrs: [100.80.0.0/16, "fd00:80::/48"]}
---
kind: Network
name: blue-a
spec: {vpc: blue, cidrs: [100.80.1.0/24, "fd00:80:0:1::/64"]}
---
kind: Automaton
name: web
spec:
  network: blue-a
  command: [python3, -m, autonet.examples.http_echo]
  provides: [{protocol: http, transport: tcp, port: 8080}]
---
kind: Automaton
name: client
spec: {network: blue-a, command: [sleep, infinity], consumes: [http]}
---
kind: Composition
name: shop
spec:
  links: [{from: client, to: web, protocol: http}]
"""


def test_valid_manifest_validates() -> None:
    objs = validate(parse(SHOP), KINDS, [])
    assert [o.kind for o in objs] == ["Vpc", "Network", "Automaton", "Automaton", "Composition"]
    assert objs[2].spec["replicas"] == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            ("web", "protocol: http, transport", "protocol: grpc, transport"),
            '"web" does not provide protocol "http"',
        ),
        (("client", "consumes: [http]", "consumes: [dns]"), '"client" does not consume protocol "http"'),
        (("links", "to: web", "to: nobody"), 'spec.links[0].to: unknown automaton "nobody"'),
        (("cidr", "100.80.1.0/24", "100.80.1.0/33"), "spec.cidrs"),
        (("port", "port: 8080", "port: 70000"), "spec.provides.0.port"),
        (("field", "command: [sleep", "comand: [sleep"), "spec.comand: unknown field"),
    ],
)
def test_invalid_manifests_name_the_field(change: tuple[str, str, str], message: str) -> None:
    _, old, new = change
    with pytest.raises(ValidationError) as err:
        validate(parse(SHOP.replace(old, new, 1)), KINDS, [])
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def test_immutable_fields_cannot_change() -> None:
    existing = validate(parse(SHOP), KINDS, [])
    changed = SHOP.replace("100.80.0.0/16", "100.81.0.0/16").replace("100.80.1.0/24", "100.81.1.0/24")
    with pytest.raises(ValidationError, match=r'Vpc "blue": spec.cidrs: cannot be changed'):
        validate(parse(changed), KINDS, existing)


def test_invalid_yaml_is_reported_with_its_line() -> None:
    with pytest.raises(ValidationError, match="not valid YAML at line"):
        parse("kind: Vpc\nname: [unclosed\n")


def test_network_must_hold_at_most_one_cidr_per_family() -> None:
    bad = SHOP.replace('cidrs: [100.80.1.0/24, "fd00:80:0:1::/64"]', "cidrs: [100.80.1.0/24, 100.80.2.0/24]")
    with pytest.raises(ValidationError, match="at most one IPv4 and one IPv6"):
        validate(parse(bad), KINDS, [])


def test_networks_of_different_vpcs_may_overlap() -> None:
    two = SHOP + SHOP.replace("blue", "green").replace("web", "web2").replace("client", "client2").replace(
        "shop", "shop2"
    )
    networks = [o for o in validate(parse(two), KINDS, []) if o.kind == "Network"]
    assert [n.spec["vpc"] for n in networks] == ["blue", "green"]
    assert ipaddress.ip_network(networks[0].spec["cidrs"][0]) == ipaddress.ip_network(
        networks[1].spec["cidrs"][0]
    )


def test_placement_prefers_the_host_with_less_traffic() -> None:
    from autonet.control.placement import choose_host, host_load

    hosts = [Object(kind="Host", name=n, status={"state": "Ready"}) for n in ("h1", "h2")]
    instances = [
        Object(kind="Instance", name=f"i{n}", status={"host": h}) for n, h in enumerate(["h1", "h2"])
    ]
    load = host_load(instances)
    assert choose_host(hosts, load).name == "h1"  # type: ignore[union-attr]
    busy = {"h1": 2e9, "h2": 0.0}
    assert choose_host(hosts, load, busy).name == "h2"  # type: ignore[union-attr]
    full = [Object(kind="Host", name="h3", spec={"capacity": 1}, status={"state": "Ready"})]
    assert choose_host(full, host_load([Object(kind="Instance", name="x", status={"host": "h3"})])) is None


def test_overlay_replaces_documents_by_kind_and_name_and_appends_the_rest() -> None:
    base = parse(SHOP)
    changes = parse(
        'kind: Automaton\nname: client\nspec: {network: blue-a, command: ["true"], consumes: [http, pg]}\n'
        '---\nkind: Automaton\nname: db\nspec: {network: blue-a, command: ["true"]}\n'
    )
    merged = overlay(base, changes)
    assert [(d["kind"], d["name"]) for d in merged] == [
        *((d["kind"], d["name"]) for d in base if d["name"] != "client"),
        ("Automaton", "client"),
        ("Automaton", "db"),
    ]
    assert next(d for d in merged if d["name"] == "client")["spec"]["consumes"] == ["http", "pg"]
    validate(merged, KINDS, [])  # still one manifest: no name twice
