"""The REST API without a lab: every route answered in-process, over a real SQLite store.

No runner runs, so objects stay where the API put them; no agent is reachable, so the
routes that need one are checked up to the point where they would call it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from autonet.api import auth
from autonet.api.app import create_app
from autonet.control.context import Context
from autonet.control.registry import PluginAPI, load_plugins
from autonet.store import Store

API = "/api/v1"

SHOP: list[dict[str, Any]] = [
    {"kind": "Vpc", "name": "blue", "spec": {"cidrs": ["100.80.0.0/16", "fd00:80::/48"]}},
    {"kind": "Network", "name": "blue-a", "spec": {"vpc": "blue", "cidrs": ["100.80.1.0/24"]}},
    {
        "kind": "Automaton",
        "name": "web",
        "spec": {
            "network": "blue-a",
            "command": ["sleep", "infinity"],
            "provides": [{"protocol": "http", "transport": "tcp", "port": 8080}],
            "replicas": 2,
        },
    },
    {
        "kind": "Automaton",
        "name": "client",
        "spec": {"network": "blue-a", "command": ["sleep", "infinity"], "consumes": ["http"]},
    },
    {
        "kind": "Composition",
        "name": "shop",
        "spec": {"links": [{"from": "client", "to": "web", "protocol": "http"}]},
    },
]

HOST = {"name": "h1", "underlay": "100.64.0.11", "rpc": "127.0.0.1:9", "tag": "abcd", "boot_id": "b1"}


@pytest.fixture
async def client(store: Store) -> AsyncIterator[httpx.AsyncClient]:
    plugins = load_plugins(PluginAPI(), only=["builtin"])
    app = create_app(Context(store=store, kinds=plugins.kinds), plugins)
    # As the Unix socket serves it (root): who may do what is tests/unit/test_api_auth.py's.
    transport = httpx.ASGITransport(app=auth.local(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://api") as c:
        yield c


async def test_apply_get_list_and_delete(client: httpx.AsyncClient) -> None:
    health = (await client.get("/healthz")).json()
    assert health["ok"] is True and health["plugins"] == ["builtin"]
    kinds = {k["kind"]: k for k in (await client.get(f"{API}/kinds")).json()}
    assert kinds["Instance"]["states"][0] == "Init" and kinds["Host"]["user_managed"] is False

    applied = (await client.post(f"{API}/apply", json={"documents": SHOP})).json()
    assert [r["action"] for r in applied["results"]] == ["created"] * 5
    again = (await client.post(f"{API}/apply", json={"documents": SHOP})).json()
    assert [r["action"] for r in again["results"]] == ["unchanged"] * 5

    vpc = (await client.get(f"{API}/objects/vpcs/blue")).json()
    assert vpc["status"] == {"state": "Init", "reason": ""} and vpc["metadata"]["revision"] > 0
    automatons = (await client.get(f"{API}/objects/automaton")).json()
    assert {a["name"] for a in automatons} == {"web", "client"}
    # derived figures next to the stored status
    assert all({"ready", "instances", "lost", "failed"} <= set(a["status"]) for a in automatons)
    assert (await client.get(f"{API}/objects/instances", params={"automaton": "web"})).json() == []

    missing = await client.get(f"{API}/objects/vpcs/nope")
    assert missing.status_code == 404 and missing.json() == {"error": 'Vpc "nope" not found'}
    unknown = await client.get(f"{API}/objects/gizmos")
    assert unknown.status_code == 404 and "unknown kind 'gizmos'" in unknown.json()["error"]
    bad = await client.post(f"{API}/apply", json={"documents": [{"kind": "Vpc", "name": "x", "spec": {}}]})
    assert bad.status_code == 422 and bad.json()["error"].startswith('Vpc "x": spec.cidrs')

    scaled = await client.post(f"{API}/automatons/web/scale", json={"replicas": 3})
    assert scaled.json() == {"automaton": "web", "replicas": 3}
    web = (await client.get(f"{API}/objects/automatons/web")).json()
    assert web["spec"]["replicas"] == 3 and web["status"]["state"] == "Init"
    assert (await client.post(f"{API}/automatons/nope/scale", json={"replicas": 1})).status_code == 404

    refused = await client.delete(f"{API}/objects/leases/x")
    assert refused.status_code in (404, 422)
    gone = (await client.delete(f"{API}/objects/compositions/shop")).json()
    assert gone["results"] == [{"kind": "Composition", "name": "shop", "action": "deleting"}]
    many = await client.post(
        f"{API}/delete",
        json={"documents": [{"kind": "Automaton", "name": "client"}, {"kind": "Vpc", "name": "x"}]},
    )
    assert [r["action"] for r in many.json()["results"]] == ["deleting", "not found"]
    client_obj = (await client.get(f"{API}/objects/automatons/client")).json()
    assert client_obj["metadata"]["deleting"] and client_obj["status"]["state"] == "Terminating"
    nameless = await client.post(f"{API}/delete", json={"documents": [{"kind": "Vpc"}]})
    assert nameless.status_code == 422 and nameless.json() == {
        "error": "document 1: kind and name are required"
    }


async def test_policy_routes(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/apply", json={"documents": SHOP})
    check = (await client.get(f"{API}/policy/check", params={"source": "client", "target": "web"})).json()
    assert check["from"] == "client" and check["to"] == "web" and check["allowed"] is True
    denied = (await client.get(f"{API}/policy/check", params={"source": "web", "target": "client"})).json()
    assert denied["allowed"] is False and denied["reason"]
    matrix = (await client.get(f"{API}/compositions/shop/matrix")).json()
    assert [(o["source"], o["target"], o["port"]) for o in matrix] == [("client", "web", 8080)]
    assert (await client.get(f"{API}/compositions/nope/matrix")).status_code == 404


async def test_host_facts(client: httpx.AsyncClient) -> None:
    registered = (await client.post(f"{API}/hosts/register", json=HOST)).json()
    assert registered == {"host": "h1", "state": "Init"}
    host = (await client.get(f"{API}/objects/hosts/h1")).json()
    assert host["status"] == {
        "state": "Init",
        "reason": "",
        "boot_id": "b1",
        "mtu": 1500,
        "hostname": "",
        "instances": 0,
    }
    beat = await client.post(f"{API}/hosts/h1/heartbeat", json={"boot_id": "b1"})
    assert beat.json() == {"host": "h1", "state": "Init"}
    await client.post(f"{API}/hosts/h1/heartbeat", json={"boot_id": "b2"})
    assert (await client.get(f"{API}/objects/hosts/h1")).json()["status"]["boot_id"] == "b2"
    stranger = await client.post(f"{API}/hosts/h9/heartbeat", json={"boot_id": "b1"})
    assert stranger.status_code == 404 and stranger.json() == {"error": 'Host "h9" is not registered'}

    event = {"instance_uid": "u1", "instance": "web-0", "process": "exited", "last_exit": "exit 1"}
    assert (await client.post(f"{API}/hosts/h1/events", json=event)).json() == {"action": "none"}

    sample = {"instances": [{"instance_uid": "u1", "rx_bps": 1.0}]}
    assert (await client.post(f"{API}/hosts/h1/load", json=sample)).json() == {"host": "h1", "instances": 1}
    load = (await client.get(f"{API}/load")).json()
    assert load["instances"] == [] and set(load) >= {"instances", "automatons", "hosts"}
    assert (await client.put(f"{API}/automatons/nope/qos", json={"egress_mbps": 5})).status_code == 404

    deleted = (await client.delete(f"{API}/objects/hosts/h1")).json()
    assert deleted["results"] == [{"kind": "Host", "name": "h1", "action": "deleting"}]


async def test_instance_routes_need_a_wired_instance(client: httpx.AsyncClient) -> None:
    for method, path, body in (
        ("POST", "exec", {"command": ["true"]}),
        ("GET", "logs", None),
        ("GET", "flows", None),
    ):
        answer = await client.request(method, f"{API}/instances/web-0/{path}", json=body)
        assert answer.status_code == 404 and answer.json() == {"error": 'Instance "web-0" not found'}
    assert (await client.get(f"{API}/instances/web-0/logs", params={"tail": -1})).status_code == 422


async def test_measurements(client: httpx.AsyncClient) -> None:
    await client.post(f"{API}/apply", json={"documents": SHOP})
    stats = (await client.get(f"{API}/stats")).json()
    assert set(stats) == {"since", "timings", "gauges", "vpc_syncs"}
    assert stats["vpc_syncs"]["gaps"] == 0
    assert (await client.delete(f"{API}/stats")).json() == {"reset": True}
    metrics = await client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    assert 'autonet_objects{kind="Automaton",state="Init"} 2' in metrics.text
    assert "# TYPE autonet_host_rx_bps gauge" in metrics.text


async def test_one_controller_on_sqlite_is_the_only_one_and_owns_everything(
    client: httpx.AsyncClient,
) -> None:
    (row,) = (await client.get(f"{API}/controllers")).json()
    assert row["self"] and row["state"] == "acting"
    assert row["shards"] == [{"shard": "*", "epoch": 0}] and row["lease_left_s"] is None
