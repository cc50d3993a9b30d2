"""The cluster PKI: chains, roles and SANs, files, and real mTLS handshakes (ssl and gRPC) over loopback.

The attacker of these tests makes a CA of their own with the same name as the cluster's
and issues themselves a controller certificate with the same CN as the real one.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import re
import socket
import ssl
import stat
import threading
from pathlib import Path

import grpc
import pytest
from typer.testing import CliRunner

from autonet.cli.main import app
from autonet.model import pki
from autonet.model.pki import Pair, PkiDir, Role


@pytest.fixture(scope="module")
def ca() -> Pair:
    return pki.make_ca()


@pytest.fixture(scope="module")
def attacker_ca() -> Pair:
    """A foreign CA that copies the cluster CA's subject."""
    return pki.make_ca()


def test_a_chain_verifies_and_states_role_name_and_sans(ca: Pair) -> None:
    pair = pki.issue(ca, "agent", "h1", ["100.64.0.11", "fd00::11", "h1.lab.example"])
    ident = pki.verify(pair.cert, ca.cert)
    assert ident.role is Role.AGENT
    assert ident.name == "h1"
    assert ident.dns == ("h1", "h1.lab.example")
    assert ident.ips == (ipaddress.ip_address("100.64.0.11"), ipaddress.ip_address("fd00::11"))
    assert pki.identity(pki.load_certificate(pair.cert_pem())) == ident


def test_the_ca_signs_leaves_only(ca: Pair) -> None:
    constraints = ca.cert.extensions.get_extension_for_class(pki.x509.BasicConstraints)
    usage = ca.cert.extensions.get_extension_for_class(pki.x509.KeyUsage).value
    assert constraints.critical and constraints.value.ca and constraints.value.path_length == 0
    assert usage.key_cert_sign and not usage.digital_signature
    leaf = pki.issue(ca, Role.ADMIN, "alice")
    assert not leaf.cert.extensions.get_extension_for_class(pki.x509.BasicConstraints).value.ca


@pytest.mark.parametrize(
    ("role", "usages"),
    [
        (Role.AGENT, {"serverAuth", "clientAuth"}),
        (Role.CONTROLLER, {"serverAuth", "clientAuth"}),
        (Role.ETCD, {"serverAuth", "clientAuth"}),
        (Role.ADMIN, {"clientAuth"}),
    ],
)
def test_each_role_gets_the_usages_it_needs(ca: Pair, role: Role, usages: set[str]) -> None:
    cert = pki.issue(ca, role, "x1").cert
    ekus = cert.extensions.get_extension_for_class(pki.x509.ExtendedKeyUsage).value
    assert {pki.USAGE_NAMES[oid] for oid in ekus} == usages
    assert pki.verify(cert, ca.cert).role is role


def test_a_certificate_from_a_foreign_ca_does_not_verify(ca: Pair, attacker_ca: Pair) -> None:
    assert attacker_ca.cert.subject == ca.cert.subject  # the same name does not help
    forged = pki.issue(attacker_ca, Role.CONTROLLER, "c1")
    with pytest.raises(pki.UntrustedError, match=r'"c1" is not trusted by this CA: .*signature'):
        pki.verify(forged.cert, ca.cert)
    assert pki.verify(forged.cert, attacker_ca.cert).role is Role.CONTROLLER  # its own CA would


def test_an_expired_certificate_does_not_verify(ca: Pair) -> None:
    pair = pki.issue(ca, Role.AGENT, "h1", days=1)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(days=2)
    with pytest.raises(pki.UntrustedError, match="not valid at validation time"):
        pki.verify(pair.cert, ca.cert, now=later)


def test_authorize_by_role(ca: Pair) -> None:
    controller = pki.issue(ca, Role.CONTROLLER, "c1")
    agent = pki.issue(ca, Role.AGENT, "h1")
    assert pki.authorize(controller.cert_pem(), [Role.CONTROLLER]).name == "c1"
    with pytest.raises(pki.UnauthorizedError, match=r'"h1" \(agent\): only controller may'):
        pki.authorize(agent.cert, [Role.CONTROLLER])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({"role": "root", "name": "h1"}, 'role "root": must be one of agent, controller, etcd, admin'),
        ({"role": "agent", "name": "h_1"}, 'name "h_1": not a DNS name'),
        ({"role": "agent", "name": "h1", "sans": ["100.64.0.300"]}, 'SAN "100.64.0.300": neither an IP'),
        ({"role": "agent", "name": "h1", "days": 0}, "days: 0: must be at least 1"),
        ({"role": "agent", "name": "h1", "days": 4000}, "would outlive its CA"),
    ],
)
def test_bad_requests_are_refused_with_one_line(ca: Pair, args: dict, message: str) -> None:
    with pytest.raises(pki.PkiError, match=re.escape(message)):
        pki.issue(ca, **args)


def test_a_mismatched_pair_is_refused(ca: Pair) -> None:
    one, other = pki.issue(ca, Role.AGENT, "h1"), pki.issue(ca, Role.AGENT, "h1")
    with pytest.raises(pki.PkiError, match="the key is not this certificate's"):
        pki.load_pair(one.cert_pem(), other.key_pem())


# --- the directory -------------------------------------------------------------------------------
def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def same(one: Pair, other: Pair) -> bool:
    return one.cert == other.cert and one.key_pem() == other.key_pem()


def test_directory_layout_modes_and_rotation(tmp_path: Path) -> None:
    d = PkiDir(tmp_path / "pki")
    ca = d.init()
    assert mode(d.path) == 0o700 and mode(d.ca_key) == 0o600 and mode(d.ca_cert) == 0o644
    first = d.issue(Role.AGENT, "h1", ["100.64.0.11"])
    assert sorted(p.name for p in d.path.iterdir()) == ["ca-key.pem", "ca.pem", "h1-key.pem", "h1.pem"]
    assert mode(d.key("h1")) == 0o600 and mode(d.cert("h1")) == 0o644
    assert same(d.load("h1"), first)
    with d.cert("h1").open("rb") as held:  # a daemon reading the old certificate meanwhile
        second = d.issue(Role.AGENT, "h1", ["100.64.0.12"])  # rotation: the pair is replaced
        assert held.read() == first.cert_pem()  # the old file is whole, not rewritten in place
    assert same(d.load("h1"), second) and second.cert.serial_number != first.cert.serial_number
    assert mode(d.key("h1")) == 0o600
    assert pki.verify(d.load("h1").cert, d.trust()).ips == (ipaddress.ip_address("100.64.0.12"),)
    assert not [p for p in d.path.iterdir() if p.name.startswith(".")]  # no temporary files left
    assert same(d.load_ca(), ca)


def test_init_never_overwrites_a_ca(tmp_path: Path) -> None:
    d = PkiDir(tmp_path)
    d.init()
    before = d.ca_key.read_bytes()
    with pytest.raises(pki.PkiError, match=r"ca\.pem exists: .* has a CA already"):
        d.init()
    d.ca_cert.unlink()  # half a CA is not overwritten either
    with pytest.raises(pki.PkiError, match=r"ca-key\.pem exists"):
        d.init()
    assert d.ca_key.read_bytes() == before


@pytest.mark.parametrize("name", ["ca", "h1-key", "../h1"])
def test_names_that_would_clash_in_the_directory_are_refused(tmp_path: Path, name: str) -> None:
    with pytest.raises(pki.PkiError, match=re.escape(f'name "{name}"')):
        PkiDir(tmp_path).cert(name)


def test_cli_init_and_issue(tmp_path: Path) -> None:
    runner = CliRunner()
    d = PkiDir(tmp_path / "pki")
    result = runner.invoke(app, ["pki", "init", "--dir", str(d.path)])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(d.ca_cert), str(d.ca_key)]
    again = runner.invoke(app, ["pki", "init", "--dir", str(d.path)])
    assert again.exit_code == 1 and "has a CA already" in str(again.exception)
    argv = ["pki", "issue", "--dir", str(d.path), "--role", "etcd", "--name", "e1"]
    result = runner.invoke(app, [*argv, "--san", "100.64.9.1", "--san", "fd00::1", "--days", "30"])
    assert result.exit_code == 0, result.output
    assert result.output.split() == [str(d.cert("e1")), str(d.key("e1"))]
    ident = pki.verify(d.load("e1").cert, d.trust())
    assert (ident.role, ident.name, len(ident.ips)) == (Role.ETCD, "e1", 2)
    assert ident.not_after - dt.datetime.now(dt.UTC) < dt.timedelta(days=30)
    bad = runner.invoke(app, [*argv[:-4], "--role", "root", "--name", "e1"])
    assert bad.exit_code == 1 and "must be one of" in str(bad.exception)


# --- TLS handshakes over loopback ----------------------------------------------------------------
@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    """A PKI directory with an agent (server) and a controller (client) pair."""
    d = PkiDir(tmp_path_factory.mktemp("pki"))
    d.init()
    d.issue(Role.AGENT, "h1", ["127.0.0.1", "::1"])
    d.issue(Role.CONTROLLER, "c1")
    return d


@pytest.fixture(scope="module")
def forged(attacker_ca: Pair, tmp_path_factory: pytest.TempPathFactory) -> PkiDir:
    """The attacker's files: a controller "c1" signed by the look-alike CA."""
    d = PkiDir(tmp_path_factory.mktemp("attacker"))
    for path, data in ((d.ca_cert, attacker_ca.cert_pem()), (d.ca_key, attacker_ca.key_pem())):
        pki.write_file(path, data, pki.KEY_MODE)
    d.issue(Role.CONTROLLER, "c1")
    return d


def ssl_exchange(
    server: PkiDir, client: PkiDir, send_ca: bool = False
) -> tuple[BaseException | str, BaseException | bytes]:
    """One mutual-TLS exchange over loopback: (server's outcome, client's outcome).

    With `send_ca` the client sends its CA after its certificate, as an attacker may, in
    case the server would take the issuer from the chain it is given.
    """
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=server.ca_cert)
    server_ctx.verify_mode = ssl.CERT_REQUIRED
    server_ctx.verify_flags |= ssl.VERIFY_X509_STRICT  # as Python 3.13 makes it by default
    server_ctx.load_cert_chain(server.cert("h1"), server.key("h1"))
    client_ctx = ssl.create_default_context(cafile=server.ca_cert)
    client_ctx.verify_flags |= ssl.VERIFY_X509_STRICT
    chain = client.path / "chain.pem"
    chain.write_bytes(client.cert("c1").read_bytes() + (client.ca_cert.read_bytes() if send_ca else b""))
    client_ctx.load_cert_chain(chain, client.key("c1"))
    outcome: dict[str, BaseException | str] = {}
    with socket.create_server(("127.0.0.1", 0)) as listener:

        def serve() -> None:
            conn, _ = listener.accept()
            try:
                with server_ctx.wrap_socket(conn, server_side=True) as tls:
                    peer = tls.getpeercert()
                    outcome["server"] = dict(x[0] for x in peer["subject"])["commonName"]
                    tls.sendall(b"hello")
            except (ssl.SSLError, OSError) as exc:
                outcome["server"] = exc

        thread = threading.Thread(target=serve)
        thread.start()
        answer: BaseException | bytes
        try:
            with (
                socket.create_connection(listener.getsockname(), timeout=10) as raw,
                client_ctx.wrap_socket(raw, server_hostname="127.0.0.1") as tls,
            ):
                answer = tls.recv(5)
        except (ssl.SSLError, OSError) as exc:
            answer = exc
        thread.join(10)
    return outcome["server"], answer


def test_tls_handshake_with_cluster_certificates(cluster: PkiDir) -> None:
    server, client = ssl_exchange(cluster, cluster)
    assert server == "c1" and client == b"hello"


@pytest.mark.parametrize(
    ("send_ca", "verify_code"),
    [(False, 20), (True, 19)],  # unable to get local issuer certificate; self-signed certificate in chain
)
def test_tls_handshake_refuses_a_foreign_client_certificate(
    cluster: PkiDir, forged: PkiDir, send_ca: bool, verify_code: int
) -> None:
    server, client = ssl_exchange(cluster, forged, send_ca)
    assert isinstance(server, ssl.SSLCertVerificationError), server
    assert server.verify_code == verify_code, server.verify_message
    assert isinstance(client, ssl.SSLError) and client.reason == "TLSV1_ALERT_UNKNOWN_CA", client


# --- gRPC: only controllers may call the agent ---------------------------------------------------
CALLS: list[bytes] = []


async def whoami(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
    """A handler that authorises its caller as the agent will: by role, after TLS verified it."""
    pem = context.auth_context()["x509_pem_cert"][0]
    CALLS.append(pem)
    try:
        ident = pki.authorize(pem, [Role.CONTROLLER])
    except pki.UnauthorizedError as exc:
        await context.abort(grpc.StatusCode.PERMISSION_DENIED, str(exc))
    return ident.name.encode()


async def call_whoami(server: PkiDir, client: PkiDir, name: str) -> bytes:
    credentials = grpc.ssl_server_credentials(
        [(server.key("h1").read_bytes(), server.cert("h1").read_bytes())],
        root_certificates=server.ca_cert.read_bytes(),
        require_client_auth=True,
    )
    grpc_server = grpc.aio.server()
    handler = grpc.unary_unary_rpc_method_handler(whoami)
    grpc_server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.Agent", {"Who": handler})])
    port = grpc_server.add_secure_port("127.0.0.1:0", credentials)
    await grpc_server.start()
    try:
        channel_credentials = grpc.ssl_channel_credentials(
            root_certificates=server.ca_cert.read_bytes(),
            private_key=client.key(name).read_bytes(),
            certificate_chain=client.cert(name).read_bytes() + client.ca_cert.read_bytes(),
        )
        options = [("grpc.ssl_target_name_override", "h1")]  # the agent's name is its DNS SAN
        async with grpc.aio.secure_channel(f"127.0.0.1:{port}", channel_credentials, options) as channel:
            reply: bytes = await channel.unary_unary("/t.Agent/Who")(b"", timeout=10)
            return reply
    finally:
        await grpc_server.stop(None)


async def test_grpc_accepts_a_controller_certificate(cluster: PkiDir) -> None:
    assert await call_whoami(cluster, cluster, "c1") == b"c1"


async def test_grpc_refuses_a_trusted_certificate_of_another_role(cluster: PkiDir) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call_whoami(cluster, cluster, "h1")
    assert info.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "only controller may" in (info.value.details() or "")


async def test_grpc_refuses_a_foreign_controller_certificate(cluster: PkiDir, forged: PkiDir) -> None:
    CALLS.clear()
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call_whoami(cluster, forged, "c1")
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE  # no TLS session, so no call
    assert CALLS == []
