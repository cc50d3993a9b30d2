"""Agent gRPC on a lab: mutual TLS, controllers only, certificates rotated live.

The attacker sits on the underlay: a Python process with grpcio in another lab host's
namespace (`anl<lab>h2`), calling h1's agent with raw method paths (no stubs of ours):
in plaintext, with a certificate of a foreign CA, and with h2's own agent certificate
(right CA, wrong role). Each attempt is paired with the same call made with a controller
certificate, which is answered. Then the controller's own work over TLS (an automaton
Provisioned, exec), and the rotation of h1's and the controller's certificates with
`autonet pki issue` while everything runs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from autonet.cli import lab as labs
from autonet.model import pki
from tests.e2e.lab import Lab, wait_for

pytestmark = pytest.mark.lab

# What an attacker runs: grpcio alone. argv: address, method, target name, [cert key ca].
PROBE = r"""
import json, sys, grpc
address, method, target, *tls = sys.argv[1:]
if tls:
    cert, key, ca = (open(p, "rb").read() for p in tls)
    creds = grpc.ssl_channel_credentials(ca, key, cert)
    channel = grpc.secure_channel(address, creds, options=[("grpc.ssl_target_name_override", target)])
else:
    channel = grpc.insecure_channel(address)
try:
    reply = channel.unary_unary(method)(b"", timeout=5)
    print(json.dumps({"code": "OK", "reply": reply.decode("latin-1")}))
except grpc.RpcError as exc:
    print(json.dumps({"code": exc.code().name, "details": exc.details() or ""}))
"""

# The certificate a new TLS connection is shown (as a controller would connect).
SERIAL = r"""
import socket, ssl, sys
from cryptography import x509
address, port, target, cert, key, ca = sys.argv[1:]
context = ssl.create_default_context(cafile=ca)
context.load_cert_chain(cert, key)
context.set_alpn_protocols(["h2"])
with socket.create_connection((address, int(port)), timeout=5) as raw:
    with context.wrap_socket(raw, server_hostname=target) as conn:
        print(x509.load_der_x509_certificate(conn.getpeercert(binary_form=True)).serial_number)
"""

REPORT = "/autonet.agent.v1.Agent/Report"
L2_DUMP = "/autonet.l2ovs.v1.L2/Dump"  # a plugin's service on the same server

APP = """
kind: Vpc
name: trust
spec: {cidrs: [100.84.0.0/16]}
---
kind: Network
name: trust-a
spec: {vpc: trust, cidrs: [100.84.1.0/24]}
---
kind: Automaton
name: sleeper
spec: {network: trust-a, command: [sleep, infinity], replicas: 2}
"""


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    with Lab(hosts=2) as lab:
        yield lab


def in_netns(lab: Lab, role: str, script: str, *args: str) -> str:
    netns = lab.info.netns(role)
    proc = subprocess.run(
        ["ip", "netns", "exec", netns, sys.executable, "-c", script, *args],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout.strip().splitlines()[-1]


def probe(lab: Lab, method: str, tls: tuple[Path, Path, Path] | None, target: str = "h1") -> dict[str, Any]:
    """The call from h2's namespace to h1's agent."""
    address = f"{lab.info.address(11)}:{labs.AGENT_PORT}"
    files = [str(p) for p in tls] if tls else []
    result: dict[str, Any] = json.loads(in_netns(lab, "h2", PROBE, address, method, target, *files))
    return result


def pair(certs: pki.PkiDir, name: str) -> tuple[Path, Path, Path]:
    return certs.cert(name), certs.key(name), certs.ca_cert


def agent_log(lab: Lab, host: str) -> str:
    return (lab.info.dir / "logs" / f"{host}.log").read_text(errors="replace")


def presented_serial(lab: Lab) -> int:
    certs = lab.info.pki()
    args = (lab.info.address(11), str(labs.AGENT_PORT), "h1", *map(str, pair(certs, "c1")))
    return int(in_netns(lab, "controller", SERIAL, *args))


def test_only_controllers_get_an_answer_from_an_agent(lab: Lab, tmp_path: Path) -> None:
    certs = lab.info.pki()
    controller = pair(certs, "c1")
    # The control: a controller's certificate is answered, by the agent and by a plugin.
    answered = probe(lab, REPORT, controller)
    assert answered["code"] == "OK" and "h1" in answered["reply"], answered
    plugin = probe(lab, L2_DUMP, controller)
    assert plugin["code"] != "PERMISSION_DENIED", plugin

    # (a) Plaintext: the TLS port closes on it; no service is reached.
    plain = probe(lab, REPORT, None)
    assert plain["code"] == "UNAVAILABLE" and "Socket closed" in plain["details"], plain

    # (b) A foreign CA's certificate, even with our CA's name and the controller's CN;
    # the attacker trusts our (public) CA, so the failure is the agent refusing it.
    foreign = pki.PkiDir(tmp_path / "foreign")
    foreign.init(common_name=f"autonet lab CA ({lab.name})")
    foreign.issue(pki.Role.CONTROLLER, "c1", [lab.info.address(12)])
    alien = probe(lab, REPORT, (foreign.cert("c1"), foreign.key("c1"), certs.ca_cert))
    assert alien["code"] == "UNAVAILABLE" and "Socket closed" in alien["details"], alien
    # Both ended in the agent's TLS handshake (gRPC's own log of it), before any service.
    handshakes = agent_log(lab, "h1")
    assert "WRONG_VERSION_NUMBER" in handshakes  # plaintext where TLS was expected
    assert "CERTIFICATE_VERIFY_FAILED" in handshakes  # a client certificate our CA did not sign

    # (c) h2's own agent certificate: the handshake passes, the role check does not, on
    # every service of the server.
    for method in (REPORT, L2_DUMP):
        denied = probe(lab, method, pair(certs, "h2"))
        assert denied["code"] == "PERMISSION_DENIED", denied
        assert 'certificate "h2" (agent): only controller may do this' in denied["details"]
    assert "refused a call from ipv4:" + lab.info.address(12) in agent_log(lab, "h1")

    # (d) h2 answering for h1: a controller that dials h1 refuses h2's certificate (the
    # name check), while the same controller certificate is answered by h2 as h2.
    as_h2 = probe(lab, REPORT, controller, target="h2")
    assert as_h2["code"] == "UNAVAILABLE", as_h2


def test_the_controller_drives_agents_over_tls_and_survives_rotation(lab: Lab) -> None:
    lab.apply(APP)
    sleepers = lab.instances("sleeper")
    assert {i["status"]["state"] for i in sleepers} == {"Provisioned"}
    on_h1 = next(i for i in sleepers if i["status"]["host"] == "h1")
    assert lab.exec_in(on_h1["name"], "echo", "over-tls").out.strip() == "over-tls"

    # Rotate h1's agent certificate and the controller's, with the daemons running.
    before = presented_serial(lab)
    pkidir = lab.info.pki().path
    lab.ok(
        "pki", "issue", "--dir", str(pkidir), "--role", "agent", "--name", "h1", "--san", lab.info.address(11)
    )
    lab.ok(
        "pki",
        "issue",
        "--dir",
        str(pkidir),
        "--role",
        "controller",
        "--name",
        "c1",
        "--san",
        lab.info.address(1),
    )
    rotated = lab.info.pki().load("h1").cert.serial_number
    assert rotated != before
    assert presented_serial(lab) == rotated  # the next handshake shows the new certificate

    # The controller's new channels (its certificate changed) meet h1's new certificate.
    lab.ok("scale", "sleeper", "4", "--wait", "--timeout", "90")
    sleepers = lab.instances("sleeper")
    assert len(sleepers) == 4 and {i["status"]["state"] for i in sleepers} == {"Provisioned"}
    assert lab.exec_in(on_h1["name"], "echo", "after-rotation").out.strip() == "after-rotation"
    log = (lab.info.dir / "logs" / "controller.log").read_text()
    assert "re-creating channels" in log
    # Neither daemon was restarted.
    for role in ("controller", "h1"):
        proc = lab.info.process(role)
        assert proc is not None and labs._alive(proc)


def test_restarted_daemons_speak_tls_again(lab: Lab) -> None:
    controller = pair(lab.info.pki(), "c1")
    for role in ("h1", "controller"):
        lab.ok("lab", "restart", role, "--name", lab.name)
    wait_for(lambda: probe(lab, REPORT, controller)["code"] == "OK", 30, "h1's agent answering again")
    assert probe(lab, REPORT, None)["code"] == "UNAVAILABLE"

    def ready() -> bool:
        return all(h["status"].get("state") == "Ready" for h in lab.json("get", "hosts"))

    wait_for(ready, 30, "every host Ready after the restarts")
