"""The pure parts of cli/takeover.py: what counts as two owners, a transition, a duplicate."""

from __future__ import annotations

from typing import Any

from autonet.cli import takeover
from autonet.model import manifest


def event(kind: str, key: str, revision: int, member: str = "c1") -> dict[str, Any]:
    return {"type": kind, "key": key, "revision": revision, "lease": 1, "value": member}


def test_alternating_puts_and_deletes_are_no_overlap() -> None:
    events = [
        event("put", "/autonet/owners/vpc/a", 5),
        event("put", "/autonet/owners/vpc/b", 6),
        event("delete", "/autonet/owners/vpc/a", 9),
        event("put", "/autonet/owners/vpc/a", 10, "c2"),
    ]
    assert takeover.owner_overlaps(list(reversed(events))) == []  # sorted by revision


def test_a_put_over_a_live_owner_key_is_an_overlap() -> None:
    events = [event("put", "/autonet/owners/vpc/a", 5), event("put", "/autonet/owners/vpc/a", 7, "c2")]
    (problem,) = takeover.owner_overlaps(events)
    assert problem.startswith("/autonet/owners/vpc/a: put at revision 7 while")
    assert takeover.owner_overlaps([event("delete", "/autonet/owners/hosts", 3)]) == [
        "/autonet/owners/hosts: deleted at revision 3 while absent"
    ]


def test_moved_ignores_placements() -> None:
    before = {"w-0": "Provisioned", "w-1": "Init"}
    assert not takeover.moved(before, {"w-0": "Provisioned", "w-1": "Scheduled"})
    assert takeover.moved(before, {"w-0": "Provisioned", "w-1": "Addressed"})
    assert takeover.moved(before, {**before, "w-2": "Init"})  # created by the automaton's owner


def test_duplicate_addresses() -> None:
    def inst(name: str, v4: str, v6: str | None) -> dict[str, Any]:
        return {"name": name, "status": {"ipv4": v4, "ipv6": v6}}

    found = takeover.duplicate_addresses(
        [
            inst("a", "100.100.1.1", "fd00:a0:0:1::1"),
            inst("b", "100.100.1.1", None),
            inst("c", "100.100.1.3", None),
        ]
    )
    assert found == {"100.100.1.1": ["a", "b"]}


def test_the_vpcs_manifest_is_valid_and_disjoint() -> None:
    docs = manifest.parse(takeover.vpcs_manifest(4, replicas=3))
    assert [d["kind"] for d in docs] == ["Vpc", "Network", "Automaton"] * 4
    cidrs = [c for d in docs if d["kind"] == "Vpc" for c in d["spec"]["cidrs"]]
    assert len(set(cidrs)) == 8
    assert all(d["spec"]["replicas"] == 3 for d in docs if d["kind"] == "Automaton")
