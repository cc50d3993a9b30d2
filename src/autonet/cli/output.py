"""Rendering objects for people (tables, describe) and for programs (JSON, YAML)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import yaml

Row = dict[str, Any]


def _join(values: Any) -> str:
    return ",".join(str(v) for v in values or [])


COLUMNS: dict[str, list[tuple[str, Callable[[Row], Any]]]] = {
    "Host": [
        ("UNDERLAY", lambda o: o["spec"].get("underlay")),
        ("INSTANCES", lambda o: o["status"].get("instances", 0)),
        ("CAPACITY", lambda o: o["spec"].get("capacity", "-")),
    ],
    "Vpc": [("CIDRS", lambda o: _join(o["spec"]["cidrs"])), ("VNI", lambda o: o["status"].get("vni", ""))],
    "Network": [("VPC", lambda o: o["spec"]["vpc"]), ("CIDRS", lambda o: _join(o["spec"]["cidrs"]))],
    "Automaton": [
        ("NETWORK", lambda o: o["spec"]["network"]),
        ("REPLICAS", lambda o: o["spec"].get("replicas", 1)),
        ("READY", lambda o: o["status"].get("ready", 0)),
        (
            "PROVIDES",
            lambda o: _join(
                f"{p['protocol']}/{p['transport']}:{p['port']}" for p in o["spec"].get("provides", [])
            ),
        ),
    ],
    "Composition": [
        (
            "LINKS",
            lambda o: _join(
                f"{lk['from']}->{lk['to']}({lk['protocol']})" for lk in o["spec"].get("links", [])
            ),
        )
    ],
    "Instance": [
        ("AUTOMATON", lambda o: o["spec"]["automaton"]),
        ("HOST", lambda o: o["status"].get("host", "")),
        ("IPV4", lambda o: o["status"].get("ipv4", "")),
        ("IPV6", lambda o: o["status"].get("ipv6", "")),
        ("NETNS", lambda o: o["status"].get("netns", "")),
    ],
}


def table(kind: str, rows: list[Row]) -> str:
    columns: list[tuple[str, Callable[[Row], Any]]] = [
        ("NAME", lambda o: o["name"]),
        ("STATE", lambda o: o["status"].get("state", "")),
        *COLUMNS.get(kind, []),
    ]
    if any(o["status"].get("reason") for o in rows):
        columns.append(("REASON", lambda o: o["status"].get("reason", "")))
    return grid([h for h, _ in columns], [[f(o) for _, f in columns] for o in rows])


def grid(header: list[str], rows: list[list[Any]]) -> str:
    """Aligned columns under a header (None shows as nothing)."""
    cells = [header] + [["" if v is None else str(v) for v in row] for row in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def controllers(members: list[Row]) -> str:
    """`autonet get controllers`: one row per member (GET /api/v1/controllers).

    SHARDS lists `shard@epoch`; LEASE LEFT is the time left on the member's etcd lease."""
    rows = []
    for member in members:
        endpoints = member.get("endpoints") or []
        endpoint = endpoints[0] if endpoints else "-"
        if len(endpoints) > 1:
            endpoint += f" (+{len(endpoints) - 1})"
        shards = ",".join(f"{s.get('shard')}@{s.get('epoch')}" for s in member.get("shards") or [])
        lease = member.get("lease_left_s")
        rows.append(
            [
                member.get("id"),
                member.get("state"),
                endpoint,
                shards or "-",
                "-" if lease is None else f"{float(lease):.1f}s",
            ]
        )
    return grid(["ID", "STATE", "ENDPOINT", "SHARDS", "LEASE LEFT"], rows)


def render(data: Any, fmt: str) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2)
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False).rstrip()
    raise ValueError(f"unknown output format {fmt!r}")


def describe(obj: Row, related: dict[str, list[Row]]) -> str:
    lines = [
        f"Kind:     {obj['kind']}",
        f"Name:     {obj['name']}",
        f"State:    {obj['status'].get('state', '')}",
    ]
    if obj["status"].get("reason"):
        lines.append(f"Reason:   {obj['status']['reason']}")
    lines.append(f"UID:      {obj['metadata']['uid']}")
    lines.append(f"Created:  {obj['metadata']['created']}")
    lines.append("Spec:")
    lines += ["  " + line for line in yaml.safe_dump(obj["spec"], sort_keys=False).splitlines()]
    status = {k: v for k, v in obj["status"].items() if k not in ("state", "reason")}
    if status:
        lines.append("Status:")
        lines += ["  " + line for line in yaml.safe_dump(status, sort_keys=False).splitlines()]
    for kind, rows in related.items():
        lines.append(f"{kind}s:")
        lines += ["  " + line for line in table(kind, rows).splitlines()] if rows else ["  (none)"]
    return "\n".join(lines)
