"""The agent's gRPC behind mutual TLS (agent/rpc/tls.py), on loopback with real handshakes.

The role decision alone, then a real server with the agent's credentials and interceptor
called by a controller (answered), another host's agent (PERMISSION_DENIED), a plaintext
client and a foreign CA's certificate (the handshake fails: UNAVAILABLE), a controller
that dials h1 and meets h2's certificate (refused by the controller), and rotation of
both sides' files with no restart.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509

from autonet.agent.rpc import agent_pb2 as pb
from autonet.agent.rpc import agent_pb2_grpc as pb_grpc
from autonet.agent.rpc import tls
from autonet.control.agents import AgentClients
from autonet.control.outcomes import Retry
from autonet.model import pki

REPORT = "/autonet.agent.v1.Agent/Report"


@pytest.fixture
def certs(tmp_path: Path) -> pki.PkiDir:
    d = pki.PkiDir(tmp_path / "pki")
    d.init()
    for role, name in (("agent", "h1"), ("agent", "h2"), ("controller", "c1"), ("admin", "admin")):
        d.issue(role, name, ["127.0.0.1"])
    return d


def files(d: pki.PkiDir, name: str) -> tls.TlsFiles:
    return tls.TlsFiles(d.cert(name), d.key(name), d.ca_cert)


# --- the decision ------------------------------------------------------------------------------------
def test_only_a_controller_certificate_is_authorised(certs: pki.PkiDir) -> None:
    ident = tls.authorize_peer({"x509_pem_cert": [certs.cert("c1").read_bytes()]})
    assert (ident.role, ident.name) == (pki.Role.CONTROLLER, "c1")
    for name in ("h2", "admin"):
        with pytest.raises(pki.UnauthorizedError, match=f'"{name}" .*only controller may do this'):
            tls.authorize_peer({"x509_pem_cert": [certs.cert(name).read_bytes()]})
    with pytest.raises(pki.UnauthorizedError, match="no client certificate"):
        tls.authorize_peer({"transport_security_type": [b"insecure"]})


def test_tls_flags_come_all_three_or_none(certs: pki.PkiDir) -> None:
    assert tls.TlsFiles.of(None, None, None) is None
    with pytest.raises(pki.PkiError, match="give all three or none"):
        tls.TlsFiles.of(certs.cert("h1"), None, certs.ca_cert)
    mismatched = tls.TlsFiles(certs.cert("h1"), certs.key("h2"), certs.ca_cert)
    with pytest.raises(pki.PkiError, match="the key is not this certificate's"):
        mismatched.load()


@pytest.mark.parametrize(
    ("listen", "loopback"),
    [("127.0.0.1:7070", True), ("[::1]:7070", True), ("localhost:1", True), ("100.64.0.11:7070", False),
     ("[fd00:64::b]:7070", False), ("0.0.0.0:7070", False)],
)  # fmt: skip
def test_plaintext_is_for_loopback(listen: str, loopback: bool) -> None:
    assert tls.is_loopback(listen) is loopback


# --- a real server -----------------------------------------------------------------------------------
class Agent(pb_grpc.AgentServicer):
    async def Report(self, request: pb.ReportRequest, context: Any) -> pb.HostReport:
        return pb.HostReport(host="h1")

    async def FollowLogs(self, request: pb.LogsRequest, context: Any) -> AsyncIterator[pb.LogsReply]:
        yield pb.LogsReply(data=b"one")
        yield pb.LogsReply(data=b"two")


async def start(d: pki.PkiDir) -> tuple[grpc.aio.Server, tls.ServerCredentials, str]:
    server, credentials = tls.secure_server(files(d, "h1"))
    assert credentials is not None
    pb_grpc.add_AgentServicer_to_server(Agent(), server)
    port = server.add_secure_port("127.0.0.1:0", credentials.credentials)
    await server.start()
    return server, credentials, f"127.0.0.1:{port}"


def client_credentials(d: pki.PkiDir, name: str, ca: Path | None = None) -> grpc.ChannelCredentials:
    ca = ca or d.ca_cert
    return grpc.ssl_channel_credentials(ca.read_bytes(), d.key(name).read_bytes(), d.cert(name).read_bytes())


async def report(address: str, credentials: grpc.ChannelCredentials | None, host: str = "h1") -> str:
    """An attacker's call: raw bytes on the method's path, no stubs of ours."""
    if credentials is None:
        channel = grpc.aio.insecure_channel(address)
    else:
        channel = grpc.aio.secure_channel(
            address, credentials, options=[("grpc.ssl_target_name_override", host)]
        )
    async with channel:
        reply = await channel.unary_unary(REPORT)(b"", timeout=5)
    return pb.HostReport.FromString(reply).host


def presented_serial(address: str, d: pki.PkiDir) -> int:
    """The serial of the certificate the server shows a new connection (as a controller)."""
    context = ssl.create_default_context(cafile=str(d.ca_cert))
    context.load_cert_chain(str(d.cert("c1")), str(d.key("c1")))
    context.set_alpn_protocols(["h2"])
    host, port = address.rsplit(":", 1)
    with (
        socket.create_connection((host, int(port)), timeout=5) as raw,
        context.wrap_socket(raw, server_hostname="h1") as conn,
    ):
        der = conn.getpeercert(binary_form=True)
    assert der is not None
    return x509.load_der_x509_certificate(der).serial_number


async def test_controllers_are_answered_and_everyone_else_is_not(certs: pki.PkiDir, tmp_path: Path) -> None:
    server, _, address = await start(certs)
    try:
        assert await report(address, client_credentials(certs, "c1")) == "h1"  # the control
        # Another host's agent certificate: right CA, wrong role.
        with pytest.raises(grpc.aio.AioRpcError) as denied:
            await report(address, client_credentials(certs, "h2"))
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert 'certificate "h2" (agent): only controller may do this' in (denied.value.details() or "")
        # A streaming method is guarded the same way (and works for the controller).
        controller = grpc.aio.secure_channel(
            address, client_credentials(certs, "c1"), options=[("grpc.ssl_target_name_override", "h1")]
        )
        agent = grpc.aio.secure_channel(
            address, client_credentials(certs, "h2"), options=[("grpc.ssl_target_name_override", "h1")]
        )
        async with controller, agent:
            logs = [r.data async for r in pb_grpc.AgentStub(controller).FollowLogs(pb.LogsRequest())]
            assert logs == [b"one", b"two"]
            with pytest.raises(grpc.aio.AioRpcError) as streamed:
                _ = [r async for r in pb_grpc.AgentStub(agent).FollowLogs(pb.LogsRequest())]
            assert streamed.value.code() == grpc.StatusCode.PERMISSION_DENIED
        # Plaintext, and a certificate of a foreign CA (named like ours): no handshake at all.
        with pytest.raises(grpc.aio.AioRpcError) as plain:
            await report(address, None)
        assert plain.value.code() == grpc.StatusCode.UNAVAILABLE
        foreign = pki.PkiDir(tmp_path / "foreign")
        foreign.init()
        foreign.issue("controller", "c1", ["127.0.0.1"])
        with pytest.raises(grpc.aio.AioRpcError) as alien:
            await report(address, client_credentials(foreign, "c1", ca=certs.ca_cert))
        assert alien.value.code() == grpc.StatusCode.UNAVAILABLE
    finally:
        await server.stop(0)


async def test_the_controller_accepts_only_the_host_it_dials(certs: pki.PkiDir) -> None:
    server, _, address = await start(certs)  # serves h1's certificate
    clients = AgentClients(tls=tls.ClientTls(files(certs, "c1")))
    try:
        assert (await clients.get("h1", address).call("Report", pb.ReportRequest(), timeout=5)).host == "h1"
        # The controller means h2 at that address: h1's certificate does not name it.
        with pytest.raises(Retry, match="agent on host h2: Report"):
            await clients.get("h2", address).call("Report", pb.ReportRequest(), timeout=5)
    finally:
        await clients.close()
        await server.stop(0)


async def test_rotation_takes_effect_without_a_restart(
    certs: pki.PkiDir, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(tls, "RECHECK_SECONDS", 0.0)
    server, credentials, address = await start(certs)
    clients = AgentClients(tls=tls.ClientTls(files(certs, "c1")))
    try:
        first = clients.get("h1", address)
        assert (await first.call("Report", pb.ReportRequest(), timeout=5)).host == "h1"
        old_serial = presented_serial(address, certs)

        # The agent's certificate: the next handshake presents the new one.
        new_agent = certs.issue("agent", "h1", ["127.0.0.1"])
        assert new_agent.cert.serial_number != old_serial
        assert await asyncio.to_thread(presented_serial, address, certs) == new_agent.cert.serial_number
        assert credentials.serial == new_agent.cert.serial_number
        assert (await first.call("Report", pb.ReportRequest(), timeout=5)).host == "h1"  # old channel

        # A half-written pair (the key replaced, its certificate not yet) is not loaded.
        certs.key("c1").write_bytes(certs.key("h2").read_bytes())
        assert clients.get("h1", address) is first
        # The controller's certificate: a new channel, which works; the old one still does.
        certs.issue("controller", "c1", ["127.0.0.1"])
        second = clients.get("h1", address)
        assert second is not first
        assert (await second.call("Report", pb.ReportRequest(), timeout=5)).host == "h1"
        assert (await first.call("Report", pb.ReportRequest(), timeout=5)).host == "h1"
    finally:
        await clients.close()
        await server.stop(0)


# --- the command line ------------------------------------------------------------------------------
def test_the_agent_refuses_plaintext_off_loopback_and_half_the_tls_flags(certs: pki.PkiDir) -> None:
    from typer.testing import CliRunner

    from autonet.cli.main import app

    runner = CliRunner()

    def said(result: Any) -> str:  # the command's one line (main() prints a CliError)
        assert result.exit_code != 0
        return str(result.exception)

    plain = runner.invoke(app, ["agent", "--name", "h1", "--underlay", "100.64.0.11"])
    assert "plaintext gRPC off loopback" in said(plain) and "--insecure" in said(plain)
    half = runner.invoke(
        app,
        [
            "agent",
            "--underlay",
            "100.64.0.11",
            "--tls-cert",
            str(certs.cert("h1")),
            "--ca",
            str(certs.ca_cert),
        ],
    )
    assert "give all three or none" in said(half)
    both = runner.invoke(
        app,
        ["agent", "--underlay", "100.64.0.11", "--insecure", "--tls-cert", str(certs.cert("h1")),
         "--tls-key", str(certs.key("h1")), "--ca", str(certs.ca_cert)],
    )  # fmt: skip
    assert "--insecure: not with" in said(both)
    controller = runner.invoke(app, ["controller", "--ca", str(certs.ca_cert)])
    assert "give all three or none" in said(controller)
