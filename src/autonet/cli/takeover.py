"""A VPC's controller dies: who takes the VPC over, how fast, and what etcd saw.

Shared by `autonet bench failover --controllers N` (which reports the figures) and
`tests/e2e/test_distributed.py` (which asserts what must hold); both run on a lab with
several controllers on etcd:

- `vpcs_manifest`: VPCs `tk0`.. each with a network and an automaton `tkN-w`
  (`sleep infinity`), in disjoint CIDRs of the lab ranges;
- `owners` / `owner_of`: the live owner of each VPC and its epoch, from
  `GET /api/v1/controllers`;
- `takeover`: kill -9 a VPC's owner right after a scale of its automaton was accepted,
  then measure kill -> a live controller owns the VPC under a higher epoch (`claim_s`),
  kill -> the first transition by that owner (`takeover_s`: the first change of the
  automaton's instances after the claim other than a placement, which the owner of
  `hosts` makes) and kill -> all replicas Provisioned (`complete_s`);
- `duplicate_addresses`: addresses leased to more than one instance;
- `owner_history` / `owner_overlaps`: etcd's history of the owner keys (a watch from
  revision 1, read with the lab's admin certificate from inside a lab namespace) and the
  places where a shard's owner key was put while another one existed.
"""

from __future__ import annotations

import collections
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from autonet.cli import lab as labs
from autonet.cli import labetcd
from autonet.cli.client import Client, wait_until
from autonet.dataplane.nsexec import launcher_argv

OWNERS_PREFIX = "/autonet/owners/"
PLACEMENT = frozenset({"Init", "Scheduled"})  # states the owner of `hosts` writes, not the VPC's

# etcd's history of a prefix from revision 1, as JSON lines: a watch of the past has no
# end, so it stops once no event came for IDLE seconds.
HISTORY = """
import asyncio, json, sys
from pathlib import Path
from autonet.store.etcdclient import EtcdClient, Tls, prefix_end

IDLE = 1.5

async def main():
    endpoints, prefix = sys.argv[1].split(","), sys.argv[2].encode()
    tls = Tls(*(Path(p) for p in sys.argv[3:6]))
    client = EtcdClient(endpoints, tls=tls, timeout=5)
    events = client.watch(prefix, prefix_end(prefix), start_revision=1, prev_kv=True)
    try:
        while True:
            try:
                response = await asyncio.wait_for(anext(events), IDLE)
            except asyncio.TimeoutError:
                break
            for event in response.events:
                kv = event.kv
                print(json.dumps({
                    "type": "delete" if event.type else "put",
                    "key": kv.key.decode(),
                    "revision": kv.mod_revision,
                    "lease": kv.lease,
                    "value": kv.value.decode(errors="replace"),
                }), flush=True)
    finally:
        await events.aclose()
        await client.close()

asyncio.run(main())
"""


def vpcs_manifest(count: int, replicas: int = 2) -> str:
    """`count` VPCs `tk0`.., each with a network `tkN-a` and an automaton `tkN-w`."""
    docs = []
    for n in range(count):
        docs.append(
            f"kind: Vpc\nname: tk{n}\nspec: {{cidrs: [100.{100 + n}.0.0/16, 'fd00:{0xA0 + n:x}::/48']}}\n"
            f"---\nkind: Network\nname: tk{n}-a\n"
            f"spec: {{vpc: tk{n}, cidrs: [100.{100 + n}.1.0/24, 'fd00:{0xA0 + n:x}:0:1::/64']}}\n"
            f"---\nkind: Automaton\nname: tk{n}-w\n"
            f"spec: {{network: tk{n}-a, command: [sleep, infinity], replicas: {replicas}}}\n"
        )
    return "---\n".join(docs)


def controllers(client: Client) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = client.request("GET", "/controllers")
    return rows


def owners(rows: list[dict[str, Any]]) -> dict[str, list[tuple[str, int, str]]]:
    """VPC -> every (member, epoch, state) that lists it among its shards."""
    found: dict[str, list[tuple[str, int, str]]] = collections.defaultdict(list)
    for row in rows:
        for held in row["shards"]:
            if held["shard"].startswith("vpc/"):
                found[held["shard"].removeprefix("vpc/")].append((row["id"], held["epoch"], row["state"]))
    return found


def owner_of(client: Client, vpc: str) -> tuple[str, int] | None:
    """The acting member that owns `vpc` and its epoch (None: no one acting owns it)."""
    held = [(m, e) for m, e, state in owners(controllers(client)).get(vpc, []) if state == "acting"]
    return held[0] if len(held) == 1 else None


def states(client: Client, automaton: str) -> dict[str, str]:
    return {
        i["name"]: str(i["status"].get("state"))
        for i in client.objects("instances")
        if i["spec"]["automaton"] == automaton
    }


def provisioned(client: Client, automaton: str, replicas: int) -> bool:
    return list(states(client, automaton).values()).count("Provisioned") == replicas


def moved(before: dict[str, str], now: dict[str, str]) -> bool:
    """Whether the VPC's owner made a transition between the two views: a new instance
    (the automaton's handler) or a state change other than a placement."""
    return any(
        name not in before or (state != before[name] and state not in PLACEMENT)
        for name, state in now.items()
    )


def takeover(
    lab: str,
    client: Client,
    vpc: str,
    automaton: str,
    replicas: int,
    scale: Callable[[], object],
    timeout: float = 120.0,
) -> dict[str, Any]:
    """kill -9 the owner of `vpc` just after `scale()` was accepted; the figures (seconds
    since the kill) and who owned the VPC before and after."""
    before = owner_of(client, vpc)
    if before is None:
        raise AssertionError(f"{vpc} has no single acting owner: {controllers(client)}")
    killed, old_epoch = before
    scale()
    began = time.monotonic()
    labs.kill(lab, killed)
    at_kill = list(states(client, automaton).values()).count("Provisioned")

    def new_owner() -> tuple[str, int] | None:
        found = owner_of(client, vpc)
        return found if found and found[0] != killed and found[1] > old_epoch else None

    found = wait_until(new_owner, timeout, f"a new owner of {vpc}", every=0.05)
    assert found is not None
    owner, epoch = found
    claim = time.monotonic() - began
    at_claim = states(client, automaton)
    first: float | None = None
    while time.monotonic() - began < timeout:
        now = states(client, automaton)
        if first is None and moved(at_claim, now):
            first = time.monotonic() - began
        if list(now.values()).count("Provisioned") == replicas:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"{automaton}: {replicas} not Provisioned {timeout:.0f}s after the kill")
    return {
        "killed": killed,
        "old_epoch": old_epoch,
        "owner": owner,
        "epoch": epoch,
        "provisioned_at_kill": at_kill,  # how far the scale had gone (read just after the kill)
        "claim_s": round(claim, 2),
        "takeover_s": None if first is None else round(first, 2),
        "complete_s": round(time.monotonic() - began, 2),
    }


def duplicate_addresses(instances: list[dict[str, Any]]) -> dict[str, list[str]]:
    """Address -> the instances that hold it, for addresses held by more than one."""
    holders: dict[str, list[str]] = collections.defaultdict(list)
    for i in instances:
        for family in ("ipv4", "ipv6"):
            if i["status"].get(family):
                holders[i["status"][family]].append(i["name"])
    return {address: names for address, names in holders.items() if len(names) > 1}


def owner_history(info: labs.LabInfo, namespace: str) -> list[dict[str, Any]]:
    """Every put and delete of an owner key since revision 1, oldest first, read from
    inside `namespace` (the lab's addresses are reachable only from its namespaces)."""
    ours = info.pki()
    endpoints = ",".join(f"{labetcd.bracket(a)}:{labetcd.CLIENT_PORT}" for a in info.etcd_members().values())
    files = [str(p) for p in (ours.ca_cert, ours.cert(labetcd.ADMIN), ours.key(labetcd.ADMIN))]
    argv = launcher_argv(namespace, [sys.executable, "-c", HISTORY, endpoints, OWNERS_PREFIX, *files])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=os.environ.copy())
    if done.returncode != 0:
        raise AssertionError(f"reading the owner keys' history failed: {done.stderr.strip()[-500:]}")
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def owner_overlaps(events: list[dict[str, Any]]) -> list[str]:
    """Where a shard's owner key was put while one existed, or deleted while none did:
    what two owners of one shard at once would look like in etcd's history."""
    held: dict[str, dict[str, Any]] = {}
    problems = []
    for event in sorted(events, key=lambda e: e["revision"]):
        key = event["key"]
        if event["type"] == "put":
            if key in held:
                problems.append(f"{key}: put at revision {event['revision']} while {held[key]} held it")
            held[key] = {"revision": event["revision"], "value": event["value"]}
        else:
            if key not in held:
                problems.append(f"{key}: deleted at revision {event['revision']} while absent")
            held.pop(key, None)
    return problems
