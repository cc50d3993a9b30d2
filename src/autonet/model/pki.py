"""The cluster PKI: one EC CA and the certificates it issues to agents, controllers, etcd and admins.

Every certificate names its holder's **role** in the subject (`OU=<role>`, under `O=autonet`)
and its name in the CN, so a server that has verified a peer's chain can also authorise it
by role ("only controller certificates may call the agent"). The role fixes the extended
key usages:

    agent        serverAuth + clientAuth   gRPC server; registers with the controller as a client
    controller   serverAuth + clientAuth   serves the API; calls agents and etcd
    etcd         serverAuth + clientAuth   etcd members are each other's servers and clients (peers)
    admin        clientAuth                an operator's tools (etcdctl, debugging clients)

Keys are EC P-256; the CA is self-signed with `CA:true, pathlen:0` (it signs leaves only).
Every leaf carries its name as a DNS SAN, plus the DNS names and IP addresses asked for.

A PKI directory holds `ca.pem`, `ca-key.pem`, `<name>.pem` and `<name>-key.pem` (`PkiDir`).
Files are written atomically (a temporary file beside the target, fsynced, renamed over it),
keys with mode 0600 from the moment they exist. Issuing again for a name replaces its pair:
the key first, then the certificate, so a daemon that reloads when the certificate changes
finds the matching key already in place (`load_pair` refuses a mismatched pair).

Pure logic over the `cryptography` package and files: nothing here opens a socket.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import ipaddress
import os
import re
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from cryptography.x509.verification import (
    Criticality,
    ExtensionPolicy,
    PolicyBuilder,
    Store,
    VerificationError,
)

ORGANIZATION = "autonet"
CA_COMMON_NAME = "autonet cluster CA"
CA_DAYS = 3650
LEAF_DAYS = 365
# Certificates start a little in the past: the clocks of a cluster's hosts are not exact.
CLOCK_SKEW = dt.timedelta(minutes=5)

CA_FILE = "ca.pem"
CA_KEY_FILE = "ca-key.pem"
CERT_MODE = 0o644
KEY_MODE = 0o600

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class Role(StrEnum):
    """Who holds a certificate; recorded as the subject's OU."""

    AGENT = "agent"
    CONTROLLER = "controller"
    ETCD = "etcd"
    ADMIN = "admin"


USAGE_NAMES = {ExtendedKeyUsageOID.SERVER_AUTH: "serverAuth", ExtendedKeyUsageOID.CLIENT_AUTH: "clientAuth"}
SERVER_AND_CLIENT = (ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH)
USAGES: dict[Role, tuple[x509.ObjectIdentifier, ...]] = {
    Role.AGENT: SERVER_AND_CLIENT,
    Role.CONTROLLER: SERVER_AND_CLIENT,
    Role.ETCD: SERVER_AND_CLIENT,
    Role.ADMIN: (ExtendedKeyUsageOID.CLIENT_AUTH,),
}

# A name is a DNS name (it is also the certificate's first SAN) and a file name in a PKI dir.
_LABEL = r"[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
DNS_RE = re.compile(rf"^{_LABEL}(\.{_LABEL})*$")
DNS_MAX = 253


class PkiError(ValueError):
    """A PKI operation that cannot be done; `str()` is one line for the user."""


class UntrustedError(PkiError):
    """A certificate the CA does not vouch for: another CA's, expired, or not fit for its role."""


class UnauthorizedError(PkiError):
    """A trusted certificate whose role may not do what it asked."""


@dataclass(frozen=True)
class Pair:
    """A certificate and its private key."""

    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    def cert_pem(self) -> bytes:
        return self.cert.public_bytes(serialization.Encoding.PEM)

    def key_pem(self) -> bytes:
        return self.key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )


@dataclass(frozen=True)
class Identity:
    """What a leaf certificate says of its holder."""

    role: Role
    name: str
    dns: tuple[str, ...]
    ips: tuple[IPAddress, ...]
    not_after: dt.datetime


def now_utc() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


# --- making certificates -------------------------------------------------------------------------
def is_dns(text: str) -> bool:
    """A host name: letters, digits, inner "-", labels joined by "."; not ending in a number."""
    return len(text) <= DNS_MAX and bool(DNS_RE.match(text)) and not text.rsplit(".", 1)[-1].isdigit()


def check_dns(text: str) -> str:
    if not is_dns(text):
        raise PkiError(f'name "{text}": not a DNS name (letters, digits, inner "-", labels joined by ".")')
    return text


def parse_san(text: str) -> x509.GeneralName:
    """A subject alternative name from an IP address (v4 or v6) or a DNS name."""
    try:
        return x509.IPAddress(ipaddress.ip_address(text))
    except ValueError:
        if not is_dns(text):
            raise PkiError(f'SAN "{text}": neither an IP address nor a DNS name') from None
        return x509.DNSName(text)


def _days(days: int) -> dt.timedelta:
    if days < 1:
        raise PkiError(f"days: {days}: must be at least 1")
    return dt.timedelta(days=days)


def _subject(common_name: str, role: Role | None = None) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, ORGANIZATION)]
    if role is not None:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role.value))
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _key_usage(*, sign_certificates: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not sign_certificates,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=sign_certificates,
        crl_sign=sign_certificates,
        encipher_only=False,
        decipher_only=False,
    )


def _builder(
    subject: x509.Name, issuer: x509.Name, key: ec.EllipticCurvePrivateKey, start: dt.datetime, days: int
) -> x509.CertificateBuilder:
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start - CLOCK_SKEW)
        .not_valid_after(start + _days(days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def new_key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def make_ca(common_name: str = CA_COMMON_NAME, days: int = CA_DAYS, now: dt.datetime | None = None) -> Pair:
    """A self-signed CA that may sign leaf certificates only (pathlen 0)."""
    key = new_key()
    name = _subject(common_name)
    cert = (
        _builder(name, name, key, now or now_utc(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(sign_certificates=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    return Pair(cert, key)


def role_of(text: str) -> Role:
    try:
        return Role(text)
    except ValueError:
        raise PkiError(f'role "{text}": must be one of {", ".join(r.value for r in Role)}') from None


def issue(
    ca: Pair,
    role: Role | str,
    name: str,
    sans: Sequence[str] = (),
    days: int = LEAF_DAYS,
    now: dt.datetime | None = None,
) -> Pair:
    """A new key and a certificate for it, signed by `ca`: CN `name`, OU `role`, SANs `name` + `sans`.

    The certificate may not outlive the CA: that is refused, not shortened in silence.
    """
    role = role_of(role) if isinstance(role, str) else role
    check_dns(name)
    start = now or now_utc()
    if start + _days(days) > ca.cert.not_valid_after_utc:
        raise PkiError(
            f"days: {days}: the certificate would outlive its CA (valid until "
            f"{ca.cert.not_valid_after_utc:%Y-%m-%d}); ask for fewer days"
        )
    names: list[x509.GeneralName] = [x509.DNSName(name)]
    for text in sans:
        san = parse_san(text)
        if san not in names:
            names.append(san)
    key = new_key()
    cert = (
        _builder(_subject(name, role), ca.cert.subject, key, start, days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(sign_certificates=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(list(USAGES[role])), critical=False)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return Pair(cert, key)


# --- reading and checking certificates ---------------------------------------------------------
def _attribute(cert: x509.Certificate, oid: x509.ObjectIdentifier) -> str | None:
    values = cert.subject.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None


def common_name(cert: x509.Certificate) -> str:
    return _attribute(cert, NameOID.COMMON_NAME) or ""


def identity(cert: x509.Certificate) -> Identity:
    """The role, name and SANs a certificate states. Trusts it: `verify` first, or let TLS have."""
    ou = _attribute(cert, NameOID.ORGANIZATIONAL_UNIT_NAME)
    if ou is None:
        raise PkiError(f'certificate "{common_name(cert)}": names no role (no OU in its subject)')
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        sans = x509.SubjectAlternativeName([])
    return Identity(
        role=role_of(ou),
        name=common_name(cert),
        dns=tuple(sans.get_values_for_type(x509.DNSName)),
        ips=tuple(a for a in sans.get_values_for_type(x509.IPAddress) if isinstance(a, IPAddress)),
        not_after=cert.not_valid_after_utc,
    )


def verify(cert: x509.Certificate, ca: x509.Certificate, now: dt.datetime | None = None) -> Identity:
    """Check that `ca` signed `cert`, that it is valid `now` and fit for its role; its identity.

    Raises `UntrustedError` otherwise (a foreign CA, even one with the same name; expired;
    a role whose usages the certificate lacks).
    """
    # RFC 5280 / Web PKI checks, with the EKU left to the role check below (the stock
    # client policy would insist on clientAuth whatever the role).
    leaf_policy = ExtensionPolicy.webpki_defaults_ee().require_present(
        x509.ExtendedKeyUsage, Criticality.AGNOSTIC, None
    )
    verifier = (
        PolicyBuilder()
        .store(Store([ca]))
        .time(now or now_utc())
        .extension_policies(ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=leaf_policy)
        .build_client_verifier()
    )
    who = common_name(cert)
    try:
        verifier.verify(cert, [])
    except VerificationError as exc:
        reason = str(exc).removeprefix("validation failed: ").split(" (encountered processing")[0]
        raise UntrustedError(f'certificate "{who}" is not trusted by this CA: {reason}') from None
    ident = identity(cert)
    usages = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    missing = [USAGE_NAMES[oid] for oid in USAGES[ident.role] if oid not in usages]
    if missing:
        raise UntrustedError(f'certificate "{who}": role {ident.role} needs {", ".join(missing)}')
    return ident


def authorize(cert: x509.Certificate | bytes, roles: Iterable[Role]) -> Identity:
    """The identity of a peer whose chain TLS has verified, if its role is one of `roles`.

    `cert` may be PEM bytes, as gRPC gives them (`context.auth_context()["x509_pem_cert"]`).
    Raises `UnauthorizedError` for another role.
    """
    if isinstance(cert, bytes):
        cert = load_certificate(cert)
    ident = identity(cert)
    allowed = set(roles)
    if ident.role not in allowed:
        wanted = " or ".join(sorted(r.value for r in allowed))
        raise UnauthorizedError(f'certificate "{ident.name}" ({ident.role}): only {wanted} may do this')
    return ident


def load_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as exc:
        raise PkiError(f"not a PEM certificate: {exc}") from None


def load_pair(cert_pem: bytes, key_pem: bytes) -> Pair:
    """A certificate and its key, checked to belong together."""
    cert = load_certificate(cert_pem)
    try:
        key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError) as exc:
        raise PkiError(f"not an unencrypted PEM private key: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise PkiError("not an EC private key")
    if key.public_key() != cert.public_key():
        raise PkiError(f'certificate "{common_name(cert)}": the key is not this certificate\'s')
    return Pair(cert, key)


# --- files ---------------------------------------------------------------------------------------
def write_file(path: Path, data: bytes, mode: int, *, replace: bool = True) -> None:
    """Write `path` atomically: a temporary file beside it (made 0600, then given `mode`,
    fsynced) renamed over it, so a reader sees the old file or the new one, never a part,
    and a key is never readable by others, not even for a moment.

    With `replace` false an existing file is left alone and `FileExistsError` raised.
    """
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        if replace:
            os.replace(tmp, path)
        else:
            os.link(tmp, path)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise PkiError(f"cannot read {path}: {exc.strerror}") from None


@dataclass(frozen=True)
class PkiDir:
    """A PKI directory: `ca.pem`, `ca-key.pem`, and `<name>.pem` + `<name>-key.pem` per holder."""

    path: Path

    @property
    def ca_cert(self) -> Path:
        return self.path / CA_FILE

    @property
    def ca_key(self) -> Path:
        return self.path / CA_KEY_FILE

    def cert(self, name: str) -> Path:
        return self.path / f"{self._file_name(name)}.pem"

    def key(self, name: str) -> Path:
        return self.path / f"{self._file_name(name)}-key.pem"

    @staticmethod
    def _file_name(name: str) -> str:
        check_dns(name)
        if name == "ca" or name.endswith("-key"):
            raise PkiError(f'name "{name}": reserved in a PKI directory (ca, *-key)')
        return name

    def init(self, common_name: str = CA_COMMON_NAME, days: int = CA_DAYS) -> Pair:
        """Make the directory's CA; an existing CA (or half of one) is never overwritten."""
        for path in (self.ca_cert, self.ca_key):
            if path.exists():
                raise PkiError(
                    f"{path} exists: {self.path} has a CA already (to start anew, remove "
                    f"{CA_FILE} and {CA_KEY_FILE} and issue every certificate again)"
                )
        ca = make_ca(common_name, days)
        self.path.mkdir(mode=0o700, parents=True, exist_ok=True)
        try:
            write_file(self.ca_key, ca.key_pem(), KEY_MODE, replace=False)
            write_file(self.ca_cert, ca.cert_pem(), CERT_MODE, replace=False)
        except FileExistsError as exc:
            raise PkiError(f"{exc.filename}: made meanwhile by another process; not overwritten") from None
        return ca

    def load_ca(self) -> Pair:
        if not self.ca_cert.exists():
            raise PkiError(f"{self.path}: no CA here (autonet pki init --dir {self.path})")
        return load_pair(_read(self.ca_cert), _read(self.ca_key))

    def trust(self) -> x509.Certificate:
        """The CA certificate alone (what a peer needs to verify the others)."""
        return load_certificate(_read(self.ca_cert))

    def issue(self, role: Role | str, name: str, sans: Sequence[str] = (), days: int = LEAF_DAYS) -> Pair:
        """Issue a pair for `name` and write it, replacing (rotating) any pair of that name.

        The key is replaced before the certificate: a daemon that reloads on a new
        certificate file then finds its key in place.
        """
        cert_path, key_path = self.cert(name), self.key(name)
        pair = issue(self.load_ca(), role, name, sans, days)
        write_file(key_path, pair.key_pem(), KEY_MODE)
        write_file(cert_path, pair.cert_pem(), CERT_MODE)
        return pair

    def load(self, name: str) -> Pair:
        return load_pair(_read(self.cert(name)), _read(self.key(name)))
