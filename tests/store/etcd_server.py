"""A real etcd server for tests: one process on 127.0.0.1 with free ports, and test PKI.

Tests start their own etcd (never a system-wide one) from Debian's ``etcd-server``
package, which ``make`` installs; without it the tests that need it are skipped.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import os
import shutil
import socket
import ssl
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

ETCD = Path("/usr/bin/etcd")
needs_etcd = pytest.mark.skipif(
    not ETCD.exists(), reason=f"{ETCD} is missing: `make deps` installs Debian's etcd-server"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@dataclass(frozen=True)
class ServerTls:
    """PEM files of an etcd server that requires client certificates."""

    cacert: Path  # the CA whose client certificates the server accepts
    cert: Path
    key: Path


@dataclass
class EtcdServer:
    endpoint: str  # host:port of its client URL
    proc: subprocess.Popen[bytes]
    data_dir: Path
    log: Path


def _die_with_parent() -> list[str]:
    """A prefix that makes etcd end if pytest is killed (util-linux's setpriv sets
    PR_SET_PDEATHSIG and execs etcd, so the PID stays etcd's)."""
    setpriv = shutil.which("setpriv")
    return [setpriv, "--pdeathsig", "KILL", "--"] if setpriv else []


def _scratch_dir() -> Path:
    """A data dir on tmpfs when there is one: etcd fsyncs every write."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="autonet-etcd-test.", dir=base))


def _healthy(url: str, tls: ServerTls | None, client: tuple[Path, Path] | None) -> bool:
    context = None
    if tls is not None:
        context = ssl.create_default_context(cafile=tls.cacert)
        if client is not None:
            context.load_cert_chain(client[0], client[1])
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=1, context=context) as response:
            return b'"true"' in response.read()
    except OSError:
        return False


def start(tls: ServerTls | None = None, client: tuple[Path, Path] | None = None) -> EtcdServer:
    """Start etcd and wait until it serves; ``client`` (cert, key) is for the health check
    of a server with ``tls``. Retries with other ports if the chosen ones were taken."""
    for _attempt in range(3):
        data_dir = _scratch_dir()
        client_port, peer_port = free_port(), free_port()
        scheme = "https" if tls else "http"
        client_url, peer_url = f"{scheme}://127.0.0.1:{client_port}", f"http://127.0.0.1:{peer_port}"
        argv = [
            *_die_with_parent(),
            str(ETCD),
            "--name", "test",
            "--data-dir", str(data_dir / "data"),
            "--listen-client-urls", client_url,
            "--advertise-client-urls", client_url,
            "--listen-peer-urls", peer_url,
            "--initial-advertise-peer-urls", peer_url,
            "--initial-cluster", f"test={peer_url}",
            "--initial-cluster-state", "new",
            "--auto-compaction-retention", "0",  # off: the tests compact when they mean to
            "--logger", "zap",
            "--log-outputs", "stderr",
            "--log-level", "warn",
        ]  # fmt: skip
        if tls:
            argv += ["--cert-file", str(tls.cert), "--key-file", str(tls.key)]
            argv += ["--client-cert-auth", "--trusted-ca-file", str(tls.cacert)]
        log = data_dir / "etcd.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        server = EtcdServer(f"127.0.0.1:{client_port}", proc, data_dir, log)
        deadline = time.monotonic() + 20
        while proc.poll() is None and time.monotonic() < deadline:
            if _healthy(client_url, tls, client):
                return server
            time.sleep(0.05)
        output = log.read_text(errors="replace")[-2000:]
        stop(server)
        if "address already in use" not in output:
            raise RuntimeError(f"etcd did not start (exit {proc.returncode}):\n{output}")
    raise RuntimeError("etcd did not start: its ports were taken three times")


def stop(server: EtcdServer) -> None:
    """Kill the server by its PID and remove its data."""
    if server.proc.poll() is None:
        server.proc.kill()
    server.proc.wait(timeout=10)
    shutil.rmtree(server.data_dir, ignore_errors=True)


@contextlib.contextmanager
def running(tls: ServerTls | None = None, client: tuple[Path, Path] | None = None) -> Iterator[EtcdServer]:
    if not ETCD.exists():
        pytest.skip(f"{ETCD} is missing: `make deps` installs Debian's etcd-server")
    server = start(tls, client)
    try:
        yield server
    finally:
        stop(server)


# -- test PKI ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Issued:
    cert: Path
    key: Path


class TestCa:
    """A throwaway CA (EC P-256) that issues server and client certificates into ``folder``."""

    __test__ = False  # not a test class, whatever its name

    def __init__(self, folder: Path, name: str) -> None:
        self.folder, self.name = folder, name
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self._subject = subject
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cacert = folder / f"{name}-ca.pem"
        self.cacert.write_bytes(self._cert.public_bytes(serialization.Encoding.PEM))

    def issue(self, common_name: str, *, server: bool) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(self._subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            names = [x509.IPAddress(ipaddress.ip_address("127.0.0.1")), x509.DNSName("localhost")]
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(
            self.folder / f"{self.name}-{common_name}.pem", self.folder / f"{self.name}-{common_name}-key.pem"
        )
        issued.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        issued.key.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
        )
        issued.key.chmod(0o600)
        return issued
