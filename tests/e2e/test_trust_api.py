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

from autonet.cli import paths
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


def ca(lab: Lab) -> str:
    return str(paths.lab_ca(lab.name))


def remote(
    lab: Lab, *args: str, token: str | None = None, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """The CLI run on host h2, against c1 over HTTPS, with `token` only."""
    env = {**os.environ, "AUTONET_LAB": "an-no-lab"}
    env.pop("AUTONET_TOKEN", None)
    env.pop("AUTONET_API", None)
    creds = ["--token", token] if token else []
    argv = [sys.executable, "-m", "autonet.cli.main", "--api", url(lab), "--ca", ca(lab), *creds, *args]
    return subprocess.run(
        ["ip", "netns", "exec", lab.info.netns("h2"), *argv],
        input=stdin, capture_output=True, text=True, env=env, timeout=60,
    )  # fmt: skip


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
    control = remote(lab, "get", "vpcs", "-o", "json", token=admin)
    assert control.returncode == 0, control.stderr
    assert {v["name"] for v in json.loads(control.stdout)} == {"a", "b"}

    missing = remote(lab, "get", "vpcs")
    assert missing.returncode == 1 and missing.stderr.strip().startswith("error: a bearer token is required")
    assert missing.stderr.count("\n") == 1
    status, challenge, _ = probe(lab, "GET", "/api/v1/objects/vpcs")
    assert (status, challenge) == ("401", 'Bearer_realm="autonet"')

    admin_id = admin.split(".")[1]
    for forged in (f"ant.{admin_id}.{'x' * 43}", "ant.0123456789ab.secret", admin + "x"):
        status, challenge, body = probe(lab, "GET", "/api/v1/objects/vpcs", token=forged)
        assert (status, json.loads(body)) == ("401", {"error": "invalid or revoked token"}), forged

    reader = token(lab, "--role", "reader")
    assert remote(lab, "get", "vpcs", token=reader).returncode == 0  # control: it works, then ...
    reader_id = reader.split(".")[1]
    assert reader_id in lab.ok("token", "list") and reader not in lab.ok("token", "list", "-o", "json")
    lab.ok("token", "revoke", reader_id)
    revoked = remote(lab, "get", "vpcs", token=reader)
    assert revoked.returncode == 1 and revoked.stderr.strip() == "error: invalid or revoked token"

    brief = token(lab, "--role", "admin", "--ttl", "2s")
    assert remote(lab, "get", "vpcs", token=brief).returncode == 0
    time.sleep(2.5)
    expired = remote(lab, "get", "vpcs", token=brief)
    assert expired.returncode == 1 and "has expired" in expired.stderr


def test_a_tenant_token_reaches_only_its_vpc(lab: Lab) -> None:
    tenant = token(lab, "--role", "tenant", "--vpc", "a")
    listed = remote(lab, "get", "automatons", "-o", "json", token=tenant)
    assert [o["name"] for o in json.loads(listed.stdout)] == ["a-app"], listed.stderr
    assert json.loads(remote(lab, "get", "hosts", "-o", "json", token=tenant).stdout) == []
    instances = {i["spec"]["automaton"]: i["name"] for i in lab.instances()}

    for args, stdin in (
        (("apply", "-f", "-"), vpc("b", 92).replace("infinity", '"999"')),
        (("scale", "b-app", "2"), None),
        (("exec", instances["b-app"], "--", "true"), None),
        (("delete", "automaton", "b-app"), None),
    ):
        refused = remote(lab, *args, token=tenant, stdin=stdin)
        assert refused.returncode == 1, (args, refused.stdout)
        assert refused.stderr.startswith("error: forbidden:") and refused.stderr.count("\n") == 1, (
            refused.stderr
        )
    b_app = lab.json("get", "automaton", "b-app")
    assert b_app["spec"]["command"] == ["sleep", "infinity"] and b_app["spec"].get("replicas", 1) == 1
    assert not b_app["metadata"]["deleting"]

    # The same in its own VPC succeeds.
    ran = remote(lab, "exec", instances["a-app"], "--", "echo", "mine", token=tenant)
    assert ran.returncode == 0 and ran.stdout.strip() == "mine", ran.stderr
    extra = (
        vpc("a", 91)
        + "---\nkind: Automaton\nname: a-extra\nspec: {network: a-n, command: [sleep, infinity]}\n"
    )
    assert remote(lab, "apply", "-f", "-", token=tenant, stdin=extra).returncode == 0
    assert remote(lab, "scale", "a-extra", "0", token=tenant).returncode == 0
    deleted = remote(lab, "delete", "automaton", "a-extra", token=tenant)
    assert deleted.returncode == 0, deleted.stderr


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
