"""The controller's API over TCP as an attacker on the underlay meets it (issue 14).

Everything here runs from host h2's namespace, another machine on the lab's underlay,
against c1's HTTPS listener: the `autonet` CLI with `--api https://...` (no lab token:
AUTONET_LAB names no lab), and raw requests for what the CLI would not send (a forged
token, another host's registration). Each refusal is paired with the same request
succeeding where it is allowed.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autonet.model import pki
from tests.e2e.lab import Lab

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="labs need root")


def vpc(name: str, octet: int) -> str:
    return f"""
kind: Vpc
name: {name}
spec: {{cidrs: [100.{octet}.0.0/16]}}
---
kind: Network
name: {name}-n
spec: {{vpc: {name}, cidrs: [100.{octet}.1.0/24]}}
---
kind: Automaton
name: {name}-app
spec:
  network: {name}-n
  command: [sleep, infinity]
"""


# A raw HTTPS request: argv = method url body-json ca [cert key] ; env TOKEN. Prints
# `<status> <www-authenticate> <body>` or `tls: <error>` when the handshake fails.
PROBE = """
import json, os, ssl, sys, urllib.request, urllib.error
method, url, body, ca = sys.argv[1:5]
context = ssl.create_default_context(cafile=ca)
if len(sys.argv) > 5:
    context.load_cert_chain(sys.argv[5], sys.argv[6])
request = urllib.request.Request(url, method=method, data=body.encode() if body else None)
request.add_header("Content-Type", "application/json")
if os.environ.get("TOKEN"):
    request.add_header("Authorization", "Bearer " + os.environ["TOKEN"])
try:
    reply = urllib.request.urlopen(request, context=context, timeout=10)
    print(reply.status, "-", reply.read().decode())
except urllib.error.HTTPError as exc:
    print(exc.code, exc.headers.get("WWW-Authenticate", "-").replace(" ", "_"), exc.read().decode())
except (ssl.SSLError, urllib.error.URLError, ConnectionError) as exc:
    print("tls:", exc)
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=2) as lab:
        lab.apply(vpc("a", 91) + "---" + vpc("b", 92))
        yield lab


def url(lab: Lab) -> str:
    return f"https://{lab.info.address(1)}:7080"


def probe(
    lab: Lab, method: str, path: str, body: Any = None, token: str = "", cert: str = ""
) -> tuple[str, str, str]:
    """A raw request from h2's namespace: (status, WWW-Authenticate, body)."""
    certs = lab.info.pki()
    who = [str(Path(cert)), str(Path(cert).with_name(Path(cert).stem + "-key.pem"))] if cert else []
    argv = [sys.executable, "-c", PROBE, method, url(lab) + path, json.dumps(body) if body is not None else "",
            str(certs.ca_cert), *who]  # fmt: skip
    env = {**os.environ, "TOKEN": token}
    done = subprocess.run(
        ["ip", "netns", "exec", lab.info.netns("h2"), *argv],
        capture_output=True,
        text=True,
        env=env,
        timeout=30,
    )
    status, _, rest = done.stdout.strip().partition(" ")
    challenge, _, text = rest.partition(" ")
    return status, challenge, text


def token(lab: Lab, *args: str) -> str:
    """A token made by root on c1's Unix socket (the admin's way in)."""
    return lab.ok("token", "create", *args).strip()


def test_tcp_needs_a_valid_token(lab: Lab) -> None:
    admin = token(lab, "--role", "admin")
    control = lab.remote("get", "vpcs", "-o", "json", token=admin)
    assert control.code == 0, control.err
    assert {v["name"] for v in json.loads(control.out)} == {"a", "b"}

    missing = lab.remote("get", "vpcs")
    assert missing.code == 1 and missing.err.strip().startswith("error: a bearer token is required")
    assert missing.err.count("\n") == 1
    status, challenge, _ = probe(lab, "GET", "/api/v1/objects/vpcs")
    assert (status, challenge) == ("401", 'Bearer_realm="autonet"')

    admin_id = admin.split(".")[1]
    for forged in (f"ant.{admin_id}.{'x' * 43}", "ant.0123456789ab.secret", admin + "x"):
        status, challenge, body = probe(lab, "GET", "/api/v1/objects/vpcs", token=forged)
        assert (status, json.loads(body)) == ("401", {"error": "invalid or revoked token"}), forged

    reader = token(lab, "--role", "reader")
    assert lab.remote("get", "vpcs", token=reader).code == 0  # control: it works, then ...
    reader_id = reader.split(".")[1]
    assert reader_id in lab.ok("token", "list") and reader not in lab.ok("token", "list", "-o", "json")
    lab.ok("token", "revoke", reader_id)
    revoked = lab.remote("get", "vpcs", token=reader)
    assert revoked.code == 1 and revoked.err.strip() == "error: invalid or revoked token"

    brief = token(lab, "--role", "admin", "--ttl", "2s")
    assert lab.remote("get", "vpcs", token=brief).code == 0
    time.sleep(2.5)
    expired = lab.remote("get", "vpcs", token=brief)
    assert expired.code == 1 and "has expired" in expired.err


def test_a_tenant_token_reaches_only_its_vpc(lab: Lab) -> None:
    tenant = token(lab, "--role", "tenant", "--vpc", "a")
    listed = lab.remote("get", "automatons", "-o", "json", token=tenant)
    assert [o["name"] for o in json.loads(listed.out)] == ["a-app"], listed.err
    assert json.loads(lab.remote("get", "hosts", "-o", "json", token=tenant).out) == []
    instances = {i["spec"]["automaton"]: i["name"] for i in lab.instances()}

    for args, stdin in (
        (("apply", "-f", "-"), vpc("b", 92).replace("infinity", '"999"')),
        (("scale", "b-app", "2"), None),
        (("exec", instances["b-app"], "--", "true"), None),
        (("delete", "automaton", "b-app"), None),
    ):
        refused = lab.remote(*args, token=tenant, stdin=stdin)
        assert refused.code == 1, (args, refused.out)
        assert refused.err.startswith("error: forbidden:") and refused.err.count("\n") == 1, refused.err
    b_app = lab.json("get", "automaton", "b-app")
    assert b_app["spec"]["command"] == ["sleep", "infinity"] and b_app["spec"].get("replicas", 1) == 1
    assert not b_app["metadata"]["deleting"]

    # The same in its own VPC succeeds.
    ran = lab.remote("exec", instances["a-app"], "--", "echo", "mine", token=tenant)
    assert ran.code == 0 and ran.out.strip() == "mine", ran.err
    extra = (
        vpc("a", 91)
        + "---\nkind: Automaton\nname: a-extra\nspec: {network: a-n, command: [sleep, infinity]}\n"
    )
    assert lab.remote("apply", "-f", "-", token=tenant, stdin=extra).code == 0
    assert lab.remote("scale", "a-extra", "0", token=tenant).code == 0
    deleted = lab.remote("delete", "automaton", "a-extra", token=tenant)
    assert deleted.code == 0, deleted.err


def test_a_host_registers_only_itself(lab: Lab) -> None:
    certs = lab.info.pki()
    h1_before = lab.json("get", "host", "h1")
    h2 = lab.json("get", "host", "h2")
    hijack = {**h1_before["spec"], "name": "h1", "rpc": f"{lab.info.address(12)}:7070", "boot_id": "forged"}
    status, _, body = probe(lab, "POST", "/api/v1/hosts/register", hijack, cert=str(certs.cert("h2")))
    assert (status, json.loads(body)) == (
        "403",
        {"error": 'forbidden: the certificate of host "h2" cannot register host "h1"'},
    )
    status, _, body = probe(
        lab, "POST", "/api/v1/hosts/h1/heartbeat", {"boot_id": "forged"}, cert=str(certs.cert("h2"))
    )
    assert status == "403" and 'cannot report for host "h1"' in json.loads(body)["error"]
    # Control: h2's certificate registers h2 (as its agent does every time it starts).
    own = {**h2["spec"], "name": "h2", "boot_id": h2["status"]["boot_id"], "mtu": h2["status"]["mtu"]}
    status, _, body = probe(lab, "POST", "/api/v1/hosts/register", own, cert=str(certs.cert("h2")))
    assert status == "200", body
    h1_after = lab.json("get", "host", "h1")
    assert (
        h1_after["spec"] == h1_before["spec"]
        and h1_after["status"]["boot_id"] == h1_before["status"]["boot_id"]
    )

    # A certificate of another CA with h1's name: no TLS session at all.
    foreign = pki.PkiDir(lab.info.dir / "foreign")
    foreign.init()
    foreign.issue(pki.Role.AGENT, "h1")
    status, _, _ = probe(lab, "POST", "/api/v1/hosts/register", hijack, cert=str(foreign.cert("h1")))
    assert status == "tls:"
    assert lab.json("get", "host", "h1")["spec"] == h1_before["spec"]
