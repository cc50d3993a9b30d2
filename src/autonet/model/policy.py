"""Who may talk to whom: the allowed matrix of compositions, and why a pair may or may not.

A link `from -> to` over protocol P allows `from`'s instances to open connections to
`to`'s instances on every (transport, port) that `to` provides for P. Nothing else is
allowed between instances (replies of allowed connections excepted).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from autonet.model.objects import Object


@dataclass(frozen=True)
class Opening:
    source: str
    target: str
    protocol: str
    transport: str
    port: int
    composition: str

    def __str__(self) -> str:
        return f"{self.source} -> {self.target}: {self.protocol} ({self.transport}/{self.port}) by {self.composition}"


def openings(compositions: Iterable[Object], automatons: dict[str, Object]) -> list[Opening]:
    found = []
    for composition in compositions:
        if composition.metadata.deleting:
            continue
        for link in composition.spec.get("links", []):
            target = automatons.get(link["to"])
            if target is None or link["from"] not in automatons:
                continue
            for provide in target.spec.get("provides", []):
                if provide["protocol"] == link["protocol"]:
                    found.append(
                        Opening(
                            link["from"], link["to"], link["protocol"], provide["transport"], int(provide["port"]),
                            composition.name,
                        )
                    )  # fmt: skip
    return sorted(set(found), key=lambda o: (o.source, o.target, o.port, o.transport, o.composition))


def check(
    source: str,
    target: str,
    compositions: Iterable[Object],
    automatons: dict[str, Object],
    port: int | None = None,
    transport: str | None = None,
) -> tuple[bool, str]:
    """(allowed, the reason in one sentence)."""
    for name in (source, target):
        if name not in automatons:
            return False, f'no automaton "{name}"'
    mine = [o for o in openings(compositions, automatons) if o.source == source and o.target == target]
    if not mine:
        reverse = [o for o in openings(compositions, automatons) if o.source == target and o.target == source]
        hint = f" (only {target} -> {source} is linked)" if reverse else ""
        return False, f"denied: no composition links {source} -> {target}{hint}"
    fits = [
        o
        for o in mine
        if (port is None or o.port == port) and (transport is None or o.transport == transport)
    ]
    if not fits:
        offered = ", ".join(f"{o.transport}/{o.port}" for o in mine)
        return False, f"denied: {source} -> {target} is linked only on {offered}"
    return True, "allowed: " + "; ".join(str(o) for o in fits)
