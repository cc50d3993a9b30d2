"""Several controllers on a real etcd cluster, end to end through the CLI.

One lab serves the whole file (1 host, 2 controllers, 3 etcd members, the lab's PKI); the
tests run in order and each leaves the lab whole for the next:

- etcd runs three started members, peers and clients over mutual TLS: an attacker on the
  underlay with a certificate from its own CA (or none) is refused at the TLS handshake,
  on etcd's client port (gRPC and its JSON gateway) and on its peer port, while the same
  probe with the lab's admin certificate is served (the positive control);
- `apply` through the CLI lands in etcd (read back with the admin certificate);
- `lab kill c1`: the CLI fails over to c2, and the host stays Ready (its agent heartbeats
  to c2 too); with both down the CLI says so in one line naming both; `lab restart c1`
  brings c1 back;
- `lab kill e1` (a member): apply and scale still work; restarted, e1 catches up.
"""

from __future__ import annotations

import json
import os
import re
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autonet.cli import labetcd
from autonet.cli.client import Client
from autonet.control.liveness import DEFAULT_HOST_TIMEOUT
from autonet.dataplane.nsexec import launcher_argv
from autonet.model import pki
from autonet.store.etcd import with_tls
from tests.e2e.lab import Lab, wait_for
from tests.store.etcd_server import needs_etcd

pytestmark = [pytest.mark.lab, needs_etcd]

MANIFEST = """
kind: Vpc
name: cblue
spec: {cidrs: [100.81.0.0/16, "fd00:81::/48"]}
---
kind: Network
name: cblue-a
spec: {vpc: cblue, cidrs: [100.81.1.0/24, "fd00:81:0:1::/64"]}
---
kind: Automaton
name: web
spec:
  network: cblue-a
  command: [sleep, infinity]
  replicas: 2
"""

SECOND = """
kind: Automaton
name: late
spec:
  network: cblue-a
  command: [sleep, infinity]
  replicas: 1
"""

# A real etcd gRPC client (autonet's) run from inside a lab namespace: for each
# LABEL URL pair, the Vpc names it lists, or the error it gets.
GRPC_PROBE = """
import asyncio, json, sys
from autonet.store import open_store
from autonet.store.etcdclient import EtcdError

async def probe(url):
    store = open_store(url)
    try:
        return {"vpcs": [r.name for r in await store.list("Vpc")]}
    except EtcdError as exc:
        return {"code": exc.code.name, "error": str(exc)}
    finally:
        try:
            await store.close()
        except EtcdError:
            pass

async def main():
    args = sys.argv[1:]
    print(json.dumps({label: await probe(url) for label, url in zip(args[::2], args[1::2])}))

asyncio.run(main())
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=1, controllers=2) as lab:
        print(f"lab up --controllers 2: {lab.up_seconds:.1f}s")
        yield lab


@pytest.fixture(scope="module")
def attacker(tmp_path_factory: pytest.TempPathFactory) -> pki.PkiDir:
    """A CA of the attacker's own, with a client (admin) and a peer (etcd) certificate."""
    own = pki.PkiDir(tmp_path_factory.mktemp("attacker") / "pki")
    own.init(common_name="autonet lab CA")  # the same name as a lab's CA does not help
    own.issue(pki.Role.ADMIN, "admin")
    own.issue(pki.Role.ETCD, "e1", ["100.64.0.11"])
    return own


def underlay_host(lab: Lab) -> str:
    """Where the probes come from: a lab host's namespace, on the underlay like an attacker."""
    return lab.info.netns("h1")


def member(lab: Lab, name: str) -> str:
    return lab.info.etcd_members()[name]


def admin(lab: Lab) -> labetcd.AdminClient:
    return labetcd.AdminClient.of(lab.info.pki())


def daemons(lab: Lab) -> dict[str, dict[str, Any]]:
    return {d["role"]: d for d in lab.json("lab", "status", "--name", lab.name)["daemons"]}


def grpc_probe(lab: Lab, address: str, **clients: tuple[Path, Path | None, Path | None]) -> dict[str, Any]:
    """Run GRPC_PROBE in the underlay host's namespace: label -> (cacert, cert, key)."""
    args = []
    for label, (cacert, cert, key) in clients.items():
        args += [
            label,
            with_tls(f"etcd://{address}:{labetcd.CLIENT_PORT}/autonet?timeout=3", cacert, cert, key),
        ]
    argv = launcher_argv(underlay_host(lab), [sys.executable, "-c", GRPC_PROBE, *args])
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, env=os.environ.copy())
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_etcd_runs_three_started_members_over_mutual_tls(lab: Lab) -> None:
    roles = daemons(lab)
    assert all(roles[r]["alive"] for r in ("c1", "c2", "e1", "e2", "e3", "h1")), roles
    for name in labetcd.member_names():
        assert admin(lab).healthy(underlay_host(lab), member(lab, name)), f"{name} is not healthy"
    members = admin(lab).members(underlay_host(lab), member(lab, "e2"))
    assert sorted(m.get("name") for m in members) == ["e1", "e2", "e3"]  # started: named
    for m in members:
        assert all(url.startswith("https://") for url in m["clientURLs"] + m["peerURLs"]), m


@pytest.mark.parametrize("port", [labetcd.CLIENT_PORT, labetcd.PEER_PORT])
def test_etcd_refuses_a_foreign_ca_at_the_tls_handshake(lab: Lab, attacker: pki.PkiDir, port: int) -> None:
    """etcd's JSON gateway (client port) and its peer API (peer port, /version), tried as an
    attacker on the underlay would: reachable over TCP, refused by TLS. With TLS 1.2 etcd's
    refusal ends the handshake with a `bad certificate` alert; with 1.3 it comes after the
    handshake (an alert or a cut connection), and never an HTTP answer. The positive
    control: the same request with the lab's own certificate is served (on the peer port
    from a member's own address, since etcd also checks a peer certificate's SAN)."""
    ours = lab.info.pki()
    if port == labetcd.CLIENT_PORT:
        path, mine, theirs, control_from = "/health", "admin", "admin", underlay_host(lab)
    else:
        path, mine, theirs, control_from = "/version", "e2", "e1", lab.info.netns("e2")
    control = labetcd.AdminClient(ours.ca_cert, ours.cert(mine), ours.key(mine))
    status, _ = control.request(control_from, member(lab, "e1"), path, port=port)
    assert status == 200, "positive control: the lab's own certificate is not served"
    for who, cert, key in (
        ("a foreign CA's certificate", attacker.cert(theirs), attacker.key(theirs)),
        ("no certificate", None, None),
    ):
        for tls_max in (ssl.TLSVersion.TLSv1_2, None):
            client = labetcd.AdminClient(ours.ca_cert, cert, key, tls_max=tls_max)
            # Not a timeout, not a refused TCP connect: TLS refuses (1.3: maybe as a reset).
            failures = ssl.SSLError if tls_max else (ssl.SSLError, ConnectionResetError)
            with pytest.raises(failures) as refused:
                client.request(underlay_host(lab), member(lab, "e1"), path, port=port)
            text = f"{who}, {tls_max or 'newest TLS'}: {refused.value!r}"
            assert "CERTIFICATE_VERIFY_FAILED" not in text, f"the client, not etcd, refused: {text}"
            if tls_max is not None:
                assert "BAD_CERTIFICATE" in text, text


def test_etcd_grpc_refuses_a_foreign_ca_and_serves_the_admin(lab: Lab, attacker: pki.PkiDir) -> None:
    ours = lab.info.pki()
    result = grpc_probe(
        lab,
        member(lab, "e3"),
        admin=(ours.ca_cert, ours.cert("admin"), ours.key("admin")),
        foreign=(ours.ca_cert, attacker.cert("admin"), attacker.key("admin")),
    )
    assert "vpcs" in result["admin"], f"positive control: {result['admin']}"
    assert result["foreign"]["code"] == "UNAVAILABLE", result["foreign"]
    assert "a TLS failure" in result["foreign"]["error"], result["foreign"]


def test_apply_through_the_cli_lands_in_etcd(lab: Lab) -> None:
    lab.apply(MANIFEST, timeout=90)
    keys = admin(lab).keys(underlay_host(lab), member(lab, "e2"), "/autonet/objects/")
    for key in ("Vpc/cblue", "Network/cblue-a", "Automaton/web", "Instance/web-0", "Instance/web-1"):
        assert f"/autonet/objects/{key}" in keys, sorted(keys)
    vpc = json.loads(keys["/autonet/objects/Vpc/cblue"])
    assert vpc["spec"]["cidrs"] == ["100.81.0.0/16", "fd00:81::/48"]


def test_a_token_revoked_at_one_controller_is_refused_by_the_other_at_once(lab: Lab) -> None:
    made = json.loads(lab.ok("token", "create", "--role", "reader", "-o", "json"))
    token, token_id = made["token"], made["id"]
    # In etcd, its hash only.
    stored = admin(lab).keys(underlay_host(lab), member(lab, "e2"), "/autonet/objects/ApiToken/")
    record = stored[f"/autonet/objects/ApiToken/{token_id}"]
    assert token.split(".")[2].encode() not in record and json.loads(record)["spec"]["sha256"]
    for controller in (1, 2):  # control: both controllers take it, over HTTPS from h1
        taken = lab.remote("get", "vpcs", token=token, host="h1", controller=controller)
        assert taken.code == 0, taken.err
    lab.ok("--api", lab.info.controller_api(1), "token", "revoke", token_id)
    refused = lab.remote("get", "vpcs", token=token, host="h1", controller=2)  # no wait
    assert refused.code == 1 and refused.err.strip() == "error: invalid or revoked token"


def test_the_cli_fails_over_to_c2_when_c1_is_killed(lab: Lab) -> None:
    lab.ok("lab", "kill", "c1")
    killed = time.monotonic()
    assert not daemons(lab)["c1"]["alive"]
    names = {i["name"]: i["status"]["state"] for i in lab.instances()}  # through c2
    assert names == {"web-0": "Provisioned", "web-1": "Provisioned"}
    assert "web-0" in lab.ok("get", "instances")
    members = lab.cli("get", "controllers")
    assert members.code == 0, members.err
    row = next(line.split() for line in members.out.splitlines() if line.startswith("c2 "))
    assert row[1] == "acting" and re.fullmatch(r"\d+\.\ds", row[-1]), members.out  # lease left
    # The agent heartbeats to c2 as well: with c1 dead for longer than the host timeout,
    # h1 is still Ready and its instances Provisioned (a hold, so a bounded sleep).
    time.sleep(max(0.0, DEFAULT_HOST_TIMEOUT + 1.5 - (time.monotonic() - killed)))
    assert lab.json("get", "host", "h1")["status"]["state"] == "Ready"
    assert {i["status"]["state"] for i in lab.instances()} == {"Provisioned"}
    lab.ok("lab", "kill", "c2")
    down = lab.cli("get", "hosts")
    assert down.code == 1
    assert down.err.count("\n") == 1 and down.err.startswith("error: no API answers at any of ")
    assert f"{lab.info.dir / 'api.sock'} (connection refused)" in down.err, down.err
    assert f"{lab.info.dir / 'api-c2.sock'} (connection refused)" in down.err, down.err


def test_lab_restart_brings_the_controllers_back(lab: Lab) -> None:
    lab.ok("lab", "restart", "c1")
    assert Client(lab.info.controller_api(1), timeout=10).objects("instances")  # c1 itself answers
    lab.ok("lab", "restart", "c2")
    roles = daemons(lab)
    assert roles["c1"]["alive"] and roles["c2"]["alive"]
    wait_for(lambda: lab.json("get", "host", "h1")["status"]["state"] == "Ready", 15, "h1 Ready")


def test_apply_and_scale_work_with_an_etcd_member_down(lab: Lab) -> None:
    lab.ok("lab", "kill", "e1")
    assert not daemons(lab)["e1"]["alive"]
    lab.apply(SECOND, timeout=90)
    lab.ok("scale", "web", "3", "--wait", "--timeout", "90")
    states = {i["name"]: i["status"]["state"] for i in lab.instances()}
    assert states == dict.fromkeys(("web-0", "web-1", "web-2", "late-0"), "Provisioned"), states
    lab.ok("lab", "restart", "e1")  # returns once e1 is healthy
    assert daemons(lab)["e1"]["alive"]
    caught_up = wait_for(
        lambda: (
            "/autonet/objects/Instance/web-2"
            in admin(lab).keys(underlay_host(lab), member(lab, "e1"), "/autonet/objects/Instance/")
        ),
        15,
        "e1 to catch up",
    )
    assert caught_up
