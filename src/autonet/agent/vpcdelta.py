"""Incremental VPC syncs on the agent's side: a delta applied to the state it patches.

The controller numbers every VPC sync it sends a host (one sequence per host). A
snapshot (`SyncVpc`) carries the whole VPC state and its number; a delta
(`SyncVpcDelta`) carries what changed since the sync numbered `base_seq`. A router
applies a delta only on top of exactly that sync: if its state has another number (a
delta was lost, the agent restarted without its state, the router was made anew), it
applies nothing and answers that it needs a snapshot. So a router never holds a state
the controller did not mean, whatever was lost on the wire.

Epochs. With several controllers, every sync carries the epoch of the controller that
owns the VPC (control/shards.py). A router keeps the highest epoch it has applied (in
its state, so on disk too) and refuses a sync of a lower one (:class:`StaleEpoch`, which
the RPC answers with FAILED_PRECONDITION): a controller that lost the VPC cannot undo
what its successor synced. One controller sends epoch 0, which is never below anything
it sent.

States and deltas are handled in their JSON form (`MessageToDict` with the proto's
field names), which is also what the agent saves on disk: zero values are absent and
64-bit numbers are strings there.

Nothing of a sync is trusted: `validate` checks every value that reaches the kernel
(transports from a fixed set, ports and identities as ints in range, addresses parsed
by `ipaddress`, interface names of a strict pattern) before anything is applied or
saved, and a sync that fails is refused whole (INVALID_ARGUMENT), leaving the router as
it was.
"""

from __future__ import annotations

import re
from typing import Any

from autonet.dataplane import nftables as nf

State = dict[str, Any]

RuleKey = tuple[int, int, str, int]


class StaleEpoch(Exception):
    """A sync from a controller whose epoch is lower than one the router has seen."""

    def __init__(self, epoch: int, seen: int) -> None:
        super().__init__(f"stale epoch {epoch} < {seen}")
        self.epoch, self.seen = epoch, seen


def sequence(state: State | None) -> int:
    """The number of the sync a state was made by (0: unnumbered, or no state)."""
    return 0 if state is None else int(state.get("seq", 0))


def epoch(state: State | None) -> int:
    """The epoch of the controller whose sync made a state (0: none, or no state)."""
    return 0 if state is None else int(state.get("epoch", 0))


def check_epoch(seen: int, incoming: int) -> None:
    """:class:`StaleEpoch` unless a sync of epoch ``incoming`` may apply over ``seen``."""
    if incoming < seen:
        raise StaleEpoch(incoming, seen)


def rule_key(rule: dict[str, Any]) -> RuleKey:
    return (
        int(rule.get("source_identity", 0)),
        int(rule.get("destination_identity", 0)),
        str(rule.get("transport", "")),
        int(rule.get("port", 0)),
    )


def _patched(
    entries: list[dict[str, Any]], key: str, changed: list[dict[str, Any]], removed: list[str]
) -> list[dict[str, Any]]:
    by_key = {entry[key]: entry for entry in entries}
    for name in removed:
        by_key.pop(name, None)
    for entry in changed:
        by_key[entry[key]] = entry
    return [by_key[name] for name in sorted(by_key)]


def apply_delta(state: State, delta: State) -> State:
    """The state that `delta` makes of `state` (which the caller checked is its base)."""
    rules = {rule_key(r): r for r in state.get("rules", [])}
    for rule in delta.get("removed_rules", []):
        rules.pop(rule_key(rule), None)
    for rule in delta.get("added_rules", []):
        rules[rule_key(rule)] = rule
    patched = dict(state)
    patched["peers"] = _patched(
        state.get("peers", []), "host", delta.get("peers", []), delta.get("removed_peers", [])
    )
    patched["members"] = _patched(
        state.get("members", []), "address", delta.get("members", []), delta.get("removed_members", [])
    )
    patched["services"] = _patched(
        state.get("services", []), "name", delta.get("services", []), delta.get("removed_services", [])
    )
    patched["rules"] = [rules[key] for key in sorted(rules)]
    patched["seq"] = str(int(delta.get("seq", 0)))
    if highest := max(epoch(state), epoch(delta)):  # (absent when 0, as in the JSON form)
        patched["epoch"] = str(highest)
    return patched


_MAC = re.compile(r"[0-9a-fA-F]{2}(:[0-9a-fA-F]{2}){5}")


def _vtep(vtep: Any) -> None:
    if not isinstance(vtep, dict):
        raise ValueError(f"vtep {vtep!r} is not a message")
    for key in ("underlay", "ipv4", "ipv6"):
        nf.address(vtep.get(key))
    if not isinstance(vtep.get("mac"), str) or not _MAC.fullmatch(vtep["mac"]):
        raise ValueError(f"vtep MAC {vtep.get('mac')!r} is not valid")


def _rule(rule: dict[str, Any]) -> None:
    nf.transport(rule.get("transport"))
    nf.port(rule.get("port"))
    nf.mark(rule.get("source_identity", 0))
    nf.mark(rule.get("destination_identity", 0))


def validate(message: State) -> None:
    """ValueError (one line) unless every value of a VPC state or delta is well formed."""
    for key in ("rules", "added_rules", "removed_rules"):
        for rule in message.get(key, []):
            _rule(rule)
    for member in message.get("members", []):
        nf.address(member.get("address"))
        nf.mark(member.get("identity", 0))
    for address in message.get("removed_members", []):
        nf.address(address)
    for service in message.get("services", []):
        for vip in (service.get("vip4"), service.get("vip6")):
            if vip:
                nf.address(vip)
        for port in service.get("ports", []):
            nf.transport(port.get("transport"))
            nf.port(port.get("port"))
            for backend in port.get("backends", []):
                nf.address(backend)
    for peer in message.get("peers", []):
        _vtep(peer.get("vtep"))
        for address in peer.get("addresses", []):
            nf.address(address)
    if "vxlan_ifname" in message:
        nf.ifname(message["vxlan_ifname"])
    if "vni" in message:
        nf.number(message["vni"], 1, (1 << 24) - 1, "VNI")
    if "mtu" in message:
        nf.number(message["mtu"], 68, 65535, "MTU")
    if "local" in message:
        _vtep(message["local"])
