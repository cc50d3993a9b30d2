"""A lab's etcd cluster: its PKI, its members' command lines, and an admin's HTTPS client.

A lab with `--store etcd` runs three etcd members, `e1`..`e3`, each in its own lab
namespace on the underlay switch, with mutual TLS between members (peer port 2380) and
towards clients (client port 2379: etcd's gRPC API and its JSON gateway `/v3/...`).
The lab's PKI (`autonet.model.pki`, in `labs/L/pki/`) holds:

    ca.pem, ca-key.pem          the lab's CA: the only one etcd trusts, for peers and clients
    e1.pem ... e3.pem (+ keys)  role etcd: server and peer certificates, the member's address as SAN
    c1.pem ... cN.pem           role controller: each controller's client certificate
    admin.pem                   role admin: the operator's (and the tests') client certificate

etcd 3.4 cannot skip fsync, so the data dirs go on tmpfs (/dev/shm) when there is one.
The lab's own addresses are reachable only from inside its namespaces: `AdminClient`
opens its connections there (`netns.connect_tcp`).
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import ssl
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from autonet.dataplane import netns
from autonet.model import pki

ETCD = Path("/usr/bin/etcd")
CLIENT_PORT = 2379
PEER_PORT = 2380
MEMBERS = 3
ADMIN = "admin"
# A store commit is one etcd transaction (docs/etcd.md): room for big scales.
MAX_TXN_OPS = 10000
MAX_REQUEST_BYTES = 10 * 1024 * 1024


def bracket(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def member_names() -> list[str]:
    return [f"e{i}" for i in range(1, MEMBERS + 1)]


def client_url(address: str) -> str:
    return f"https://{bracket(address)}:{CLIENT_PORT}"


def peer_url(address: str) -> str:
    return f"https://{bracket(address)}:{PEER_PORT}"


def mint_pki(
    folder: Path, members: dict[str, str], controllers: dict[str, str], agents: dict[str, str] | None = None
) -> pki.PkiDir:
    """A new CA in `folder` and the certificates of the lab's etcd members, controllers and
    agents (name -> underlay address, the address as SAN; an agent's CN is its host name)
    and of its admin."""
    pkidir = pki.PkiDir(folder)
    pkidir.init(common_name=f"autonet lab CA ({folder.parent.name})")
    for name, address in members.items():
        pkidir.issue(pki.Role.ETCD, name, [address])
    for name, address in controllers.items():
        pkidir.issue(pki.Role.CONTROLLER, name, [address])
    for name, address in (agents or {}).items():
        pkidir.issue(pki.Role.AGENT, name, [address])
    pkidir.issue(pki.Role.ADMIN, ADMIN)
    return pkidir


def scratch_dir(lab: str) -> Path:
    """A new directory for the members' data, on tmpfs when there is one (etcd fsyncs
    every write); the caller records it so that `lab down` removes it."""
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix=f"autonet-lab-{lab}-etcd.", dir=base))


def member_argv(
    name: str, members: dict[str, str], data_dir: Path, pkidir: pki.PkiDir, token: str
) -> list[str]:
    """etcd for member `name` of a new cluster of `members` (name -> address), mTLS both ways."""
    address = members[name]
    cluster = ",".join(f"{member}={peer_url(addr)}" for member, addr in members.items())
    cert, key, ca = str(pkidir.cert(name)), str(pkidir.key(name)), str(pkidir.ca_cert)
    return [
        str(ETCD),
        "--name", name,
        "--data-dir", str(data_dir / name),
        "--listen-client-urls", client_url(address),
        "--advertise-client-urls", client_url(address),
        "--listen-peer-urls", peer_url(address),
        "--initial-advertise-peer-urls", peer_url(address),
        "--initial-cluster", cluster,
        "--initial-cluster-state", "new",  # ignored once the data dir holds the member
        "--initial-cluster-token", token,
        "--cert-file", cert, "--key-file", key,
        "--client-cert-auth", "--trusted-ca-file", ca,
        "--peer-cert-file", cert, "--peer-key-file", key,
        "--peer-client-cert-auth", "--peer-trusted-ca-file", ca,
        "--max-txn-ops", str(MAX_TXN_OPS),
        "--max-request-bytes", str(MAX_REQUEST_BYTES),
        "--logger", "zap", "--log-outputs", "stderr", "--log-level", "warn",
    ]  # fmt: skip


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def prefix_end(prefix: bytes) -> bytes:
    """The end of etcd's range of every key that starts with `prefix`."""
    end = bytearray(prefix)
    while end and end[-1] == 0xFF:
        end.pop()
    if not end:
        return b"\0"
    end[-1] += 1
    return bytes(end)


@dataclass(frozen=True)
class AdminClient:
    """Requests to etcd's JSON gateway over mutual TLS, sent from inside a lab namespace.

    `cert`/`key` None: no client certificate. `cacert` is the CA that verifies the server.
    `tls_max`: the newest TLS version offered (with TLS 1.2 a server's refusal of the
    client's certificate ends the handshake itself; with 1.3 it comes after, on the first
    read). Failures are what Python raises: `ssl.SSLError` when TLS refuses, `OSError`
    otherwise.
    """

    cacert: Path
    cert: Path | None
    key: Path | None
    timeout: float = 3.0
    tls_max: ssl.TLSVersion | None = None

    @classmethod
    def of(cls, pkidir: pki.PkiDir, name: str = ADMIN) -> AdminClient:
        return cls(pkidir.ca_cert, pkidir.cert(name), pkidir.key(name))

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.cacert))
        if self.cert is not None:
            context.load_cert_chain(self.cert, self.key)
        if self.tls_max is not None:
            context.maximum_version = self.tls_max
        return context

    def request(
        self,
        namespace: str,
        address: str,
        path: str,
        body: dict[str, Any] | None = None,
        port: int = CLIENT_PORT,
    ) -> tuple[int, Any]:
        """(HTTP status, decoded JSON or text) of GET `path` (POST with a JSON `body`)."""
        raw = netns.connect_tcp(namespace, (address, port), self.timeout)
        with self.context().wrap_socket(raw, server_hostname=address) as tls:
            conn = http.client.HTTPConnection(address, port, timeout=self.timeout)
            conn.sock = tls
            if body is None:
                conn.request("GET", path)
            else:
                conn.request("POST", path, json.dumps(body), {"content-type": "application/json"})
            reply = conn.getresponse()
            data = reply.read()
        try:
            return reply.status, json.loads(data)
        except ValueError:
            return reply.status, data.decode(errors="replace")

    def healthy(self, namespace: str, address: str) -> bool:
        """Whether the member at `address` is up and its cluster has a leader."""
        try:
            status, data = self.request(namespace, address, "/health")
        except OSError:  # ssl.SSLError and socket errors alike: not (yet) serving
            return False
        return status == 200 and isinstance(data, dict) and data.get("health") == "true"

    def members(self, namespace: str, address: str) -> list[dict[str, Any]]:
        """The cluster's members as the member at `address` knows them (a member that has
        not started yet has no name)."""
        _, data = self.request(namespace, address, "/v3/cluster/member/list", {})
        members: list[dict[str, Any]] = data.get("members", [])
        return members

    def keys(self, namespace: str, address: str, prefix: str) -> dict[str, bytes]:
        """Every key under `prefix` and its value, read at the member at `address`."""
        start = prefix.encode()
        body = {"key": _b64(start), "range_end": _b64(prefix_end(start))}
        _, data = self.request(namespace, address, "/v3/kv/range", body)
        return {
            base64.b64decode(kv["key"]).decode(): base64.b64decode(kv.get("value", ""))
            for kv in data.get("kvs", [])
        }
