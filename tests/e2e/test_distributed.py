"""Issue 13's acceptance, end to end: 3 hosts, 3 controllers, 3 etcd members, 4 VPCs.

One lab serves the whole file; the tests run in order and each leaves the lab whole for
the next (a killed or paused daemon is back, and a member again, when a test ends):

- every VPC is owned by exactly one live controller, and every controller acts;
- kill -9 of a VPC's owner during a scale of its automaton from 10 to 30 (through the
  CLI, which fails over): all 30 Provisioned, no address leased twice, the VPC owned by
  a live controller under a higher epoch, which every host's router of it holds; the
  takeover time is printed, not asserted (its p50 over runs is `autonet bench failover
  --controllers 3`'s); restarted, the killed controller is a member again;
- SIGSTOP of a VPC's owner for 10 s while the VPC is scaled through another controller:
  meanwhile a read through the CLI listing it first is answered by another; after SIGCONT its late writes are rejected (or it made none), no instance or address
  is duplicated (in the store or in the kernel), and it acts again within seconds;
- kill -9 of the etcd leader: apply and scale keep working; restarted, it catches up;
- etcd's history of the owner keys over all of the above (a watch from revision 1)
  never shows a shard's owner key put while another existed.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from autonet.cli import labetcd
from autonet.cli.client import Client
from autonet.cli.takeover import (
    duplicate_addresses,
    owner_history,
    owner_of,
    owner_overlaps,
    owners,
    takeover,
    vpcs_manifest,
)
from tests.e2e.lab import Lab, wait_for
from tests.store.etcd_server import needs_etcd

pytestmark = [pytest.mark.lab, needs_etcd]

VPCS = 4
REJECTED = "rejected: no longer its owner"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=3, controllers=3) as lab:
        print(f"lab up --hosts 3 --controllers 3: {lab.up_seconds:.1f}s")
        yield lab
        for log in sorted((lab.info.dir / "logs").glob("*.log")):  # for the record, before `down`
            text = log.read_text(errors="replace")
            if "Traceback" in text or " ERROR " in text:
                bad = [line for line in text.splitlines() if "Traceback" in line or " ERROR " in line]
                print(f"{log.name}: {len(bad)} ERROR/Traceback lines, the first: {bad[0]}")


def client(lab: Lab, role: str | None = None) -> Client:
    """A client of the whole lab (failing over), or of one controller's API only."""
    info = lab.info
    return Client(info.controller_api(info.index(role)) if role else info.api, timeout=10)


def daemon(lab: Lab, role: str) -> dict[str, Any]:
    found = [d for d in lab.json("lab", "status", "--name", lab.name)["daemons"] if d["role"] == role]
    return found[0]


def acting(lab: Lab) -> set[str]:
    return {row["id"] for row in lab.json("get", "controllers") if row["state"] == "acting"}


def settled(lab: Lab) -> dict[str, str]:
    """VPC -> its owner once every controller acts and every VPC has one acting owner."""
    rows = lab.json("get", "controllers")
    if {row["id"] for row in rows if row["state"] == "acting"} != set(lab.info.controller_names()):
        return {}
    found = owners(rows)
    if any(len(found.get(f"tk{n}", [])) != 1 for n in range(VPCS)):
        return {}
    return {vpc: held[0][0] for vpc, held in found.items()}


def router_epochs(lab: Lab, vpc: str) -> dict[str, int]:
    """Host -> the epoch its router of `vpc` holds (the agents' saved VPC state)."""
    found = {}
    for host in lab.info.host_names():
        for path in (lab.info.dir / "hosts" / host / "overlay").glob("*.json"):
            with contextlib.suppress(OSError, ValueError):  # being replaced: read it next time
                state = json.loads(path.read_text())
                if state.get("vpc_name") == vpc:
                    found[host] = int(state.get("epoch", 0))
    return found


def assert_no_duplicates(lab: Lab) -> None:
    """No address leased twice, and as many instance namespaces in the kernel as instances."""
    instances = lab.instances()
    assert duplicate_addresses(instances) == {}
    names = {i["name"] for i in instances}
    assert len(names) == len(instances)
    wait_for(
        lambda: len([n for n in lab.kernel_netns() if n.startswith("ani")]) == len(instances),
        20,
        f"{len(instances)} instance namespaces in the kernel",
    )


def test_every_vpc_is_owned_by_one_live_controller(lab: Lab) -> None:
    lab.apply(vpcs_manifest(VPCS), timeout=120)
    owned = wait_for(lambda: settled(lab), 20, "one acting owner per VPC")
    print(f"owners: {owned}")
    assert set(owned) == {f"tk{n}" for n in range(VPCS)}
    assert set(owned.values()) <= set(lab.info.controller_names())
    assert acting(lab) == {"c1", "c2", "c3"}


def test_killing_a_vpcs_owner_during_a_scale(lab: Lab) -> None:
    lab.ok("scale", "tk0-w", "10", "--wait", "--timeout", "90")
    figures = takeover(
        lab.name, client(lab), "tk0", "tk0-w", 30, lambda: lab.ok("scale", "tk0-w", "30"), timeout=120
    )
    print(f"takeover after kill -9 of {figures['killed']}: {figures}")
    instances = lab.instances("tk0-w")  # through the CLI, which fails over from the dead one
    assert len(instances) == 30 and {i["status"]["state"] for i in instances} == {"Provisioned"}
    assert duplicate_addresses(lab.instances()) == {}
    live = set(lab.info.controller_names()) - {figures["killed"]}
    assert figures["owner"] in live and figures["epoch"] > figures["old_epoch"]
    after = owners(lab.json("get", "controllers"))["tk0"]
    assert [(m, e) for m, e, state in after if state == "acting"] == [(figures["owner"], figures["epoch"])]
    # Every host's router of tk0 holds the new owner's epoch (so it refuses the old one's).
    hosts = {i["status"]["host"] for i in instances}
    wait_for(
        lambda: router_epochs(lab, "tk0") == dict.fromkeys(hosts, figures["epoch"]),
        10,
        f"the routers of tk0 at epoch {figures['epoch']}",
    )
    lab.ok("lab", "restart", figures["killed"])
    wait_for(lambda: figures["killed"] in acting(lab), 15, f"{figures['killed']} acting again")
    wait_for(lambda: settled(lab), 20, "one acting owner per VPC")
    assert_no_duplicates(lab)


def test_a_paused_owner_is_fenced_and_rejoins(lab: Lab) -> None:
    owned = wait_for(lambda: settled(lab), 20, "one acting owner per VPC")
    vpc, paused = next((v, c) for v, c in sorted(owned.items()) if v != "tk0")
    other = next(c for c in lab.info.controller_names() if c != paused)
    automaton = f"{vpc}-w"
    before = len(lab.instances(automaton))
    info = daemon(lab, paused)
    log, pid = info["log"], info["pid"]
    offset = os.path.getsize(log)
    # Work in flight on the owner, then it freezes (before its handlers are done).
    client(lab, paused).request("POST", f"/automatons/{automaton}/scale", json={"replicas": before + 4})
    os.kill(pid, signal.SIGSTOP)
    stopped = time.monotonic()
    try:
        # Reads through the CLI go on through a live controller, the paused one listed first:
        # its socket still accepts connections, but nothing answers.
        paused_api, other_api = (lab.info.controller_api(lab.info.index(c)) for c in (paused, other))
        began = time.monotonic()
        listed = lab.cli("--api", f"{paused_api},{other_api}", "get", "instances", "-o", "json", timeout=60)
        read = time.monotonic() - began
        assert listed.code == 0 and time.monotonic() - stopped < 10, (read, listed.err)
        lab.ok("--api", other_api, "scale", automaton, str(before + 8), "--wait", "--timeout", "60")
        scaled = time.monotonic() - stopped
        owner = owner_of(client(lab, other), vpc)
        assert owner is not None and owner[0] != paused, owner
        time.sleep(max(0.0, 10 - (time.monotonic() - stopped)))
    finally:
        os.kill(pid, signal.SIGCONT)
    resumed = time.monotonic()
    wait_for(lambda: paused in acting(lab), 15, f"{paused} acting again")
    rejoined = time.monotonic() - resumed
    time.sleep(2)  # its late writes, if any, come now
    with open(log, encoding="utf-8", errors="replace") as f:
        f.seek(offset)
        late = [line.strip() for line in f if REJECTED in line]
    print(
        f"{paused} paused 10 s owning {vpc}: a read listing it first took {read:.1f}s;"
        f" the scale through {other} done after {scaled:.1f}s;"
        f" acting again {rejoined:.1f}s after SIGCONT; late writes rejected: {late or 'none made'}"
    )
    instances = lab.instances(automaton)
    assert len(instances) == before + 8, [i["name"] for i in instances]
    assert {i["status"]["state"] for i in instances} == {"Provisioned"}
    assert daemon(lab, paused)["alive"]
    # The routers of the VPC end at its current owner's epoch: nothing older won.
    hosts = {i["status"]["host"] for i in instances}

    def at_the_owners_epoch() -> bool:
        owner = owner_of(client(lab), vpc)
        return owner is not None and router_epochs(lab, vpc) == dict.fromkeys(hosts, owner[1])

    wait_for(at_the_owners_epoch, 10, f"the routers of {vpc} at its owner's epoch")
    assert_no_duplicates(lab)


def etcd_status(lab: Lab, member: str) -> dict[str, Any]:
    admin = labetcd.AdminClient.of(lab.info.pki())
    _, data = admin.request(
        lab.info.netns("h1"), lab.info.etcd_members()[member], "/v3/maintenance/status", {}
    )
    status: dict[str, Any] = data
    return status


def etcd_leader(lab: Lab) -> str:
    """The member that leads (by etcd's status; e1 if no member tells)."""
    for name in lab.info.etcd_names():
        with contextlib.suppress(OSError):
            status = etcd_status(lab, name)
            if status.get("leader") and status["leader"] == status["header"]["member_id"]:
                return name
    return "e1"


def revisions(lab: Lab) -> dict[str, int]:
    return {name: int(etcd_status(lab, name)["header"]["revision"]) for name in lab.info.etcd_names()}


def test_apply_and_scale_work_with_the_etcd_leader_killed(lab: Lab) -> None:
    leader = etcd_leader(lab)
    lab.ok("lab", "kill", leader)
    began = time.monotonic()
    lab.apply(
        "kind: Automaton\nname: tk1-x\nspec: {network: tk1-a, command: [sleep, infinity], replicas: 2}\n"
    )
    lab.ok("scale", "tk2-w", str(len(lab.instances("tk2-w")) + 2), "--wait", "--timeout", "90")
    worked = time.monotonic() - began
    assert {i["status"]["state"] for i in lab.instances()} == {"Provisioned"}
    lab.ok("lab", "restart", leader)  # returns once it is healthy
    caught_up = wait_for(lambda: len(set(revisions(lab).values())) == 1, 20, f"{leader} to catch up")
    print(f"etcd leader {leader} killed: apply and scale took {worked:.1f}s; caught up: {caught_up}")
    assert_no_duplicates(lab)


def test_owner_keys_never_had_two_owners(lab: Lab) -> None:
    events = owner_history(lab.info, lab.info.netns("h1"))
    claims = [e for e in events if e["type"] == "put" and e["key"].endswith("/vpc/tk0")]
    print(f"owner keys' history: {len(events)} events, {len(claims)} claims of vpc/tk0")
    assert len(claims) >= 2  # the first owner's and its successor's, at least
    assert owner_overlaps(events) == []
