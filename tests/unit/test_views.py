"""Events, the graph and the dashboard's files, answered in-process (no lab)."""

from __future__ import annotations

import httpx

from autonet.control.cache import ObjectCache
from autonet.control.events import DELETED, EventLog
from autonet.model.objects import Object
from autonet.store import Store
from tests.unit.test_api import SHOP, client  # noqa: F401  (the app fixture)

API = "/api/v1"


async def test_events_follow_state_changes_and_deletes(client: httpx.AsyncClient) -> None:  # noqa: F811
    assert (await client.get(f"{API}/events")).json() == {"events": [], "last": 0}
    assert (await client.post(f"{API}/apply", json={"documents": SHOP})).status_code == 200
    reply = (await client.get(f"{API}/events")).json()
    names = [(e["kind"], e["name"]) for e in reply["events"]]
    assert ("Automaton", "web") in names and ("Composition", "shop") in names
    assert reply["last"] == reply["events"][-1]["seq"] == len(reply["events"])
    assert (await client.delete(f"{API}/objects/composition/shop")).status_code == 200
    newer = (await client.get(f"{API}/events", params={"after": reply["last"]})).json()
    assert [(e["kind"], e["name"]) for e in newer["events"]] == [("Composition", "shop")]
    bad = await client.get(f"{API}/events", params={"after": -1})
    assert bad.status_code == 422


async def test_the_graph_route_draws_the_links_as_dot_and_svg(client: httpx.AsyncClient) -> None:  # noqa: F811
    await client.post(f"{API}/apply", json={"documents": SHOP})
    dot = await client.get(f"{API}/graph", params={"format": "dot"})
    assert dot.status_code == 200
    assert '"automaton/client" -> "automaton/web" [label="http tcp/8080"];' in dot.text
    svg = await client.get(f"{API}/graph")
    assert svg.headers["content-type"].startswith("image/svg+xml") and "<svg" in svg.text
    wrong = await client.get(f"{API}/graph", params={"format": "pdf"})
    assert wrong.status_code == 422 and wrong.json() == {"error": "format: must be one of dot, svg"}


async def test_the_dashboard_files_are_served_and_nothing_else(client: httpx.AsyncClient) -> None:  # noqa: F811
    page = await client.get("/ui/")
    assert page.status_code == 200 and '<script src="/ui/app.js">' in page.text
    script = await client.get("/ui/app.js")
    assert script.status_code == 200 and "Authorization" in script.text
    assert (await client.get("/ui/../state.py")).status_code == 404
    missing = await client.get("/ui/secrets.txt")
    assert missing.status_code == 404 and "no such file" in missing.json()["error"]


async def test_what_the_cache_loaded_is_history_not_news(store: Store) -> None:
    vpc = Object.model_validate({"kind": "Vpc", "name": "old", "spec": {"cidrs": ["100.80.0.0/16"]}})
    await store.put("Vpc", "old", vpc.to_data())
    cache = ObjectCache(store)
    log = EventLog(cache)
    await cache.load()
    assert log.after(0) == []
    record = await store.get("Vpc", "old")
    assert record is not None
    changed = Object.from_data(record.data, record.revision).with_status(state="Failed", reason="no VNI left")
    cache.learn_put(await store.put("Vpc", "old", changed.to_data(), expected_revision=record.revision))
    cache.learn_delete("Vpc", "old", await store.revision())
    assert [(e.name, e.state, e.reason) for e in log.after(0)] == [
        ("old", "Failed", "no VNI left"),
        ("old", DELETED, ""),
    ]
