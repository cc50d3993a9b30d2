"""Who is calling the API, and what they may do: bearer tokens, agent certificates, roles.

Every request gets a **principal** before any route runs (`Authenticate`, an ASGI
middleware: deny by default, so a route added tomorrow is not open by accident):

- over the controller's Unix socket (root-only, mode 0600): `root`, allowed everything;
- over TCP, `Authorization: Bearer <token>`: the token's role (`admin`, `tenant` with its
  VPCs, `reader`); a forged, revoked or expired token is a 401 with `WWW-Authenticate`;
- over TCP without a token, a client certificate the TLS handshake verified against the
  cluster CA: an agent's (`OU=agent`) is the host named by its CN (`host` principal, which
  may only report for itself); an admin's (`OU=admin`) is `admin`. Anything else is a 401.

Each route then states who may call it with one `Rule` dependency (`ALLOW_*` below); a
unit test enumerates the app's routes and fails on a route without one. Tenant scoping
(which VPC an object belongs to) is in api/scope.py.

Tokens are `ant.<id>.<secret>`: the id names the store record (kind `ApiToken`, never a
user kind, so no listing or watch of user objects shows it); the record holds the
SHA-256 of the 256-bit secret, never the secret. Every request reads the record from the
store (not a cache), so a revocation (the record deleted) holds at every controller on
the next request.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import re
import secrets
import time
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from typing import Any

from fastapi import Request

from autonet.api.state import ApiError, ApiState
from autonet.model import pki
from autonet.model.errors import ValidationError
from autonet.model.kinds import check_name
from autonet.model.objects import Object
from autonet.store import Conflict, Delete, Put, Store

TOKEN_KIND = "ApiToken"
TOKEN_PREFIX = "ant"
ROLES = ("admin", "tenant", "reader")
# The ASGI extension a transport sets: {"local": True} on the Unix socket's server.
EXTENSION = "autonet"
# The ASGI TLS extension (asgiref's spec): the peer's verified certificate chain, PEM.
TLS_EXTENSION = "tls"
PRINCIPAL_KEY = "autonet.principal"
# The dashboard's static files (api/routes/ui.py) hold no data: a browser loads them
# without credentials, and the page then calls the API with its token.
PUBLIC_PATHS = ("/ui", "/ui/")
CHALLENGE = 'Bearer realm="autonet"'
TTL_RE = re.compile(r"^([1-9][0-9]{0,6})([smhdw])$")
TTL_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Principal:
    """Who a request comes from: `root` (the Unix socket), `admin`, `tenant`, `reader`,
    or `host` (an agent's certificate, `host` its CN)."""

    role: str
    vpcs: frozenset[str] = field(default_factory=frozenset)
    host: str = ""
    token: str = ""  # the token id, if a token authenticated it

    @property
    def unlimited(self) -> bool:
        """Root and admin: everything, everywhere."""
        return self.role in ("root", "admin")

    @property
    def tenant(self) -> bool:
        return self.role == "tenant"


ROOT = Principal("root")
ANONYMOUS = Principal("anonymous")  # only for PUBLIC_PATHS


class Unauthenticated(ApiError):
    """A 401: no credential, or one that does not hold."""

    def __init__(self, message: str) -> None:
        super().__init__(401, message)


# -- tokens ------------------------------------------------------------------------------------
def parse_ttl(text: str) -> int:
    """Seconds of a lifetime written `30s`, `15m`, `1h`, `7d`, `2w`."""
    found = TTL_RE.match(text.strip())
    if not found:
        raise ApiError(422, f"ttl {text!r}: expected a number and a unit (s, m, h, d, w), e.g. 1h or 7d")
    return int(found.group(1)) * TTL_UNITS[found.group(2)]


def digest(secret: str) -> str:
    """What the store keeps of a token's secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def new_token() -> tuple[str, str, str]:
    """(id, secret, the token a user holds)."""
    token_id = secrets.token_hex(6)
    secret = secrets.token_urlsafe(32)  # 256 bits: a plain hash is enough (no guessing)
    return token_id, secret, f"{TOKEN_PREFIX}.{token_id}.{secret}"


def check_vpc_names(vpcs: list[str]) -> list[str]:
    """The VPC names of a tenant token, checked as object names are."""
    try:
        return sorted({check_name("Vpc", v) for v in vpcs})
    except ValidationError as exc:
        raise ApiError(422, str(exc)) from None


def token_view(obj: Object) -> dict[str, Any]:
    """A token as `token list` shows it: never the secret nor its hash."""
    spec = obj.spec
    return {
        "id": obj.name,
        "role": spec["role"],
        "vpcs": spec.get("vpcs", []),
        "expires": spec.get("expires"),
        "created": obj.metadata.created,
    }


async def create_token(
    store: Store, role: str, vpcs: list[str], ttl: str | None, now: float | None = None
) -> dict[str, Any]:
    """A new token (its secret in `token`, shown this once) and its record in the store."""
    if role not in ROLES:
        raise ApiError(422, f"role {role!r}: expected one of {', '.join(ROLES)}")
    names = check_vpc_names(vpcs)
    if role == "tenant" and not names:
        raise ApiError(422, "a tenant token needs at least one --vpc")
    if role != "tenant" and names:
        raise ApiError(422, f"--vpc applies to tenant tokens only, not {role}")
    expires = (time.time() if now is None else now) + parse_ttl(ttl) if ttl else None
    token_id, secret, token = new_token()
    obj = Object(
        kind=TOKEN_KIND,
        name=token_id,
        spec={"role": role, "vpcs": names, "expires": expires, "sha256": digest(secret)},
    )
    await store.commit([Put(TOKEN_KIND, token_id, obj.to_data(), 0)])
    return {**token_view(obj), "token": token}


async def list_tokens(store: Store) -> list[dict[str, Any]]:
    records = await store.list(TOKEN_KIND)
    return [token_view(Object.from_data(r.data, r.revision)) for r in records]


async def revoke_token(store: Store, token_id: str) -> None:
    record = await store.get(TOKEN_KIND, token_id)
    if record is None:
        raise ApiError(404, f'token "{token_id}" not found')
    try:
        await store.commit([Delete(TOKEN_KIND, token_id, record.revision)])
    except Conflict:
        raise ApiError(409, f'token "{token_id}" changed meanwhile; revoke again') from None


async def principal_of_token(store: Store, token: str, now: float | None = None) -> Principal:
    """The principal a bearer token stands for; `Unauthenticated` if it does not hold."""
    prefix, _, rest = token.partition(".")
    token_id, _, secret = rest.partition(".")
    if prefix != TOKEN_PREFIX or not token_id or not secret or not re.fullmatch(r"[0-9a-f]{1,32}", token_id):
        raise Unauthenticated("malformed bearer token (expected ant.<id>.<secret>)")
    record = await store.get(TOKEN_KIND, token_id)
    # The same answer for an unknown id and a wrong secret: nothing to learn from trying.
    if record is None or not hmac.compare_digest(str(record.data["spec"].get("sha256", "")), digest(secret)):
        raise Unauthenticated("invalid or revoked token")
    spec = record.data["spec"]
    expires = spec.get("expires")
    if expires is not None and (time.time() if now is None else now) >= float(expires):
        raise Unauthenticated(f"token {token_id} has expired")
    return Principal(str(spec["role"]), frozenset(spec.get("vpcs", [])), token=token_id)


def principal_of_certificate(pem: str) -> Principal | None:
    """The principal of a client certificate TLS verified; None for a role that is none."""
    try:
        ident = pki.identity(pki.load_certificate(pem.encode()))
    except pki.PkiError:
        return None
    if ident.role == pki.Role.AGENT:
        return Principal("host", host=ident.name)
    if ident.role == pki.Role.ADMIN:
        return Principal("admin")
    return None


# -- the middleware ----------------------------------------------------------------------------
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def peer_certificate(scope: Scope) -> str | None:
    """The verified client certificate (PEM) the TLS transport put in the scope, if any."""
    chain = scope.get("extensions", {}).get(TLS_EXTENSION, {}).get("client_cert_chain") or []
    return str(chain[0]) if chain else None


async def authenticate(scope: Scope, store: Store) -> Principal:
    if scope.get("extensions", {}).get(EXTENSION, {}).get("local"):
        return ROOT
    headers = dict(scope.get("headers") or [])
    authorization = headers.get(b"authorization", b"").decode("latin-1").strip()
    if authorization:
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise Unauthenticated("expected Authorization: Bearer <token>")
        return await principal_of_token(store, token.strip())
    pem = peer_certificate(scope)
    if pem is not None:
        found = principal_of_certificate(pem)
        if found is not None:
            return found
    raise Unauthenticated("a bearer token is required (autonet token create; --token or AUTONET_TOKEN)")


class Authenticate:
    """The ASGI middleware that gives every HTTP request its principal or answers 401."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        state = scope["app"].state.autonet
        assert isinstance(state, ApiState)
        try:
            path = str(scope.get("path", ""))
            if path in PUBLIC_PATHS or path.startswith("/ui/"):
                principal = ANONYMOUS
            else:
                principal = await authenticate(scope, state.ctx.store)
        except Unauthenticated as exc:
            body = json.dumps({"error": exc.message}).encode()
            await send(
                {
                    "type": "http.response.start",
                    "status": 401,
                    "headers": [
                        (b"content-type", b"application/json"),
                        (b"content-length", str(len(body)).encode()),
                        (b"www-authenticate", CHALLENGE.encode()),
                    ],
                }
            )
            await send({"type": "http.response.body", "body": body})
            return
        scope.setdefault("state", {})[PRINCIPAL_KEY] = principal
        await self.app(scope, receive, send)


def local(app: ASGIApp) -> ASGIApp:
    """The app as the Unix socket serves it: every request is root's (the socket is 0600)."""

    async def serve(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            scope = {**scope, "extensions": {**(scope.get("extensions") or {}), EXTENSION: {"local": True}}}
        await app(scope, receive, send)

    return serve


# -- authorization: one rule per route ---------------------------------------------------------
class Rule:
    """Who may call a route (a FastAPI dependency that returns the caller).

    `roles`: the principals' roles let through; `host_self`: a host principal only for its
    own name (the route's `name` path parameter; registration checks its body itself)."""

    def __init__(self, name: str, *roles: str, host_self: bool = False) -> None:
        self.name = name
        self.roles = frozenset(roles) | {"root"}
        self.host_self = host_self

    def __repr__(self) -> str:
        return f"Rule({self.name})"

    async def __call__(self, request: Request) -> Principal:
        principal = request.scope.get("state", {}).get(PRINCIPAL_KEY)
        if not isinstance(principal, Principal):  # (the middleware always sets it)
            raise Unauthenticated("not authenticated")
        if principal.role not in self.roles:
            raise ApiError(403, f"forbidden: {self.name} is not allowed with a {principal.role} credential")
        if principal.role == "host" and self.host_self:
            name = request.path_params.get("name")
            if name is not None and name != principal.host:
                raise ApiError(
                    403,
                    f'forbidden: the certificate of host "{principal.host}" cannot report for host "{name}"',
                )
        return principal


ANYONE = ("admin", "tenant", "reader", "host")
ALLOW_READ = Rule("reading", "admin", "tenant", "reader")  # tenants: filtered by the route
ALLOW_WRITE = Rule("changing objects", "admin", "tenant")  # tenants: scoped by the route
ALLOW_OPERATE = Rule("operating instances", "admin", "tenant")  # exec: no reader
ALLOW_CLUSTER_READ = Rule("reading cluster-wide figures", "admin", "reader")
ALLOW_ADMIN = Rule("this admin operation", "admin")
ALLOW_HEALTH = Rule("health", *ANYONE)
ALLOW_HOST = Rule("host reports", "host", host_self=True)
# A container runtime's attachments name a namespace on a host: only that host (its
# certificate; the route checks the body's host) or an admin may, never a tenant, who
# could otherwise pull another tenant's container namespace into its own VPC.
ALLOW_ATTACH = Rule("attaching a runtime's container", "admin", "host")
ALLOW_PUBLIC = Rule("the dashboard's files", "anonymous", *ANYONE)
RULES = (
    ALLOW_READ,
    ALLOW_WRITE,
    ALLOW_OPERATE,
    ALLOW_CLUSTER_READ,
    ALLOW_ADMIN,
    ALLOW_HEALTH,
    ALLOW_HOST,
    ALLOW_ATTACH,
    ALLOW_PUBLIC,
)
