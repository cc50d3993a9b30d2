"""Who may call the API: every route's rule, tokens (hashing, expiry, revocation), roles,
tenant scoping and hosts' certificates, against the app in-process over a SQLite store.

Requests here come as over TCP (no Unix-socket marker), with the credentials an attacker
would try; a host's certificate is put where the HTTPS transport puts it (the ASGI TLS
extension, api/controller.py's PeerCertificate), as TLS has verified it.
"""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute

from autonet.api import auth, scope
from autonet.api.app import ROUTERS, create_app
from autonet.api.state import ApiError
from autonet.control.context import Context
from autonet.control.registry import PluginAPI, load_plugins
from autonet.model import pki
from autonet.model.objects import Object
from autonet.store import Put, Store

API = "/api/v1"


def vpc_docs(vpc: str, cidr: str) -> list[dict[str, Any]]:
    """A VPC with one network and two linked automatons, names prefixed by the VPC."""
    return [
        {"kind": "Vpc", "name": vpc, "spec": {"cidrs": [f"{cidr}.0.0/16"]}},
        {"kind": "Network", "name": f"{vpc}-n", "spec": {"vpc": vpc, "cidrs": [f"{cidr}.1.0/24"]}},
        {
            "kind": "Automaton",
            "name": f"{vpc}-web",
            "spec": {
                "network": f"{vpc}-n",
                "command": ["sleep", "infinity"],
                "provides": [{"protocol": "http", "port": 80}],
            },
        },
        {
            "kind": "Automaton",
            "name": f"{vpc}-cli",
            "spec": {"network": f"{vpc}-n", "command": ["sleep", "infinity"], "consumes": ["http"]},
        },
        {
            "kind": "Composition",
            "name": f"{vpc}-shop",
            "spec": {"links": [{"from": f"{vpc}-cli", "to": f"{vpc}-web", "protocol": "http"}]},
        },
    ]


Asgi = Callable[..., Any]


def with_certificate(app: Asgi, pem: str) -> Asgi:
    """The app as the HTTPS listener serves a connection whose client presented `pem`."""

    async def serve(scope: Any, receive: Any, send: Any) -> None:
        scope = {**scope, "extensions": {"tls": {"client_cert_chain": [pem]}}}
        await app(scope, receive, send)

    return serve


class Api:
    """The app, and clients to it as root (the Unix socket) and over TCP."""

    def __init__(self, store: Store) -> None:
        plugins = load_plugins(PluginAPI(), only=["builtin"])
        self.store = store
        self.app = create_app(Context(store=store, kinds=plugins.kinds), plugins)
        self.ca = pki.make_ca()

    def client(
        self, token: str | None = None, cert: str | None = None, local: bool = False
    ) -> httpx.AsyncClient:
        app: Asgi = self.app
        if local:
            app = auth.local(app)
        if cert:
            app = with_certificate(app, cert)
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="https://api", headers=headers
        )

    def agent_cert(self, host: str, ca: pki.Pair | None = None) -> str:
        return pki.issue(ca or self.ca, pki.Role.AGENT, host).cert_pem().decode()

    async def token(self, role: str, vpcs: tuple[str, ...] = (), ttl: str | None = None) -> str:
        async with self.client(local=True) as root:
            made = await root.post(f"{API}/tokens", json={"role": role, "vpcs": list(vpcs), "ttl": ttl})
            assert made.status_code == 200, made.text
            return str(made.json()["token"])


@pytest.fixture
async def api(store: Store) -> AsyncIterator[Api]:
    found = Api(store)
    async with found.client(local=True) as root:
        for docs in (vpc_docs("a", "100.81"), vpc_docs("b", "100.82")):
            assert (await root.post(f"{API}/apply", json={"documents": docs})).status_code == 200
    yield found


# -- every route has a rule ----------------------------------------------------------------------
def test_every_route_has_an_authorization_rule(store: Store) -> None:
    """A route without a `Rule` dependency fails here: nobody decided who may call it."""
    routes = [r for router in ROUTERS for r in router.routes]
    assert routes and all(isinstance(r, APIRoute) for r in routes)
    undecided = [
        f"{sorted(r.methods or ())} {r.path}"
        for r in routes
        if isinstance(r, APIRoute)
        and not any(isinstance(d.call, auth.Rule) for d in r.dependant.dependencies)
    ]
    assert undecided == []
    # ... and the app serves exactly these routers' routes (none added around them).
    app = Api(store).app
    served = {(path, method.upper()) for path, ops in app.openapi()["paths"].items() for method in ops}
    declared = {
        (r.path, m)
        for r in routes
        if isinstance(r, APIRoute) and r.include_in_schema
        for m in r.methods or ()
    }
    assert served == declared


# -- authentication ------------------------------------------------------------------------------
async def test_tcp_needs_a_valid_token(api: Api) -> None:
    token = await api.token("admin")
    async with api.client(token) as good:
        control = await good.get(f"{API}/objects/vpcs")
        assert control.status_code == 200 and {v["name"] for v in control.json()} == {"a", "b"}
    token_id = token.split(".")[1]
    forged = [
        None,
        "ant.000000000000.forged",  # unknown id
        f"ant.{token_id}.{'A' * 43}",  # a known id, a guessed secret
        "garbage",
    ]
    for attempt in forged:
        async with api.client(attempt) as c:
            for path in (f"{API}/objects/vpcs", "/healthz", "/openapi.json", "/docs", f"{API}/tokens"):
                reply = await c.get(path)
                assert reply.status_code == 401, (attempt, path)
                assert reply.headers["www-authenticate"] == auth.CHALLENGE
                assert list(reply.json()) == ["error"] and "\n" not in reply.json()["error"]
    async with api.client(f"Basic {token}") as c:  # (the header is then "Bearer Basic ...")
        assert (await c.get(f"{API}/objects/vpcs")).status_code == 401


async def test_tokens_are_stored_hashed_and_revocable(api: Api) -> None:
    token = await api.token("reader")
    _, token_id, secret = token.split(".")
    record = await api.store.get(auth.TOKEN_KIND, token_id)
    assert record is not None and secret not in str(record.data)
    assert record.data["spec"]["sha256"] == hashlib.sha256(secret.encode()).hexdigest()
    async with api.client(local=True) as root:
        listed = (await root.get(f"{API}/tokens")).json()
        assert (
            [t["id"] for t in listed] == [token_id] and "sha256" not in listed[0] and "token" not in listed[0]
        )
        # Tokens are not objects: no listing or watch of objects shows them.
        for kind in ("vpcs", "hosts"):
            assert all(o["kind"] != auth.TOKEN_KIND for o in (await root.get(f"{API}/objects/{kind}")).json())
        async with api.client(token) as reader:
            assert (await reader.get(f"{API}/objects/vpcs")).status_code == 200
            assert (await root.delete(f"{API}/tokens/{token_id}")).json() == {"revoked": token_id}
            revoked = await reader.get(f"{API}/objects/vpcs")
            assert revoked.status_code == 401 and revoked.json() == {"error": "invalid or revoked token"}
        assert (await root.delete(f"{API}/tokens/{token_id}")).status_code == 404


async def test_tokens_expire(api: Api) -> None:
    made = await auth.create_token(api.store, "admin", [], "1h", now=1000.0)
    assert made["expires"] == 1000.0 + 3600
    assert (await auth.principal_of_token(api.store, made["token"], now=1000.0 + 3599)).role == "admin"
    with pytest.raises(auth.Unauthenticated, match="has expired"):
        await auth.principal_of_token(api.store, made["token"], now=1000.0 + 3600)
    short = await auth.create_token(api.store, "admin", [], "1s", now=0.0)  # long past
    async with api.client(short["token"]) as c:
        reply = await c.get(f"{API}/objects/vpcs")
        assert reply.status_code == 401 and "expired" in reply.json()["error"]


def test_ttl_parsing() -> None:
    assert [auth.parse_ttl(t) for t in ("30s", "15m", "1h", "7d", "2w")] == [30, 900, 3600, 604800, 1209600]
    for bad in ("", "0h", "1y", "h", "-1d", "1.5h", "10"):
        with pytest.raises(ApiError, match="ttl"):
            auth.parse_ttl(bad)


async def test_token_requests_are_checked(api: Api) -> None:
    async with api.client(local=True) as root:
        for body, words in (
            ({"role": "god"}, "role 'god'"),
            ({"role": "tenant"}, "at least one --vpc"),
            ({"role": "admin", "vpcs": ["a"]}, "tenant tokens only"),
            ({"role": "tenant", "vpcs": ["A!"]}, "name: only lowercase"),
            ({"role": "admin", "ttl": "forever"}, "ttl 'forever'"),
        ):
            reply = await root.post(f"{API}/tokens", json=body)
            assert reply.status_code == 422 and words in reply.json()["error"], reply.text
        assert (await root.get(f"{API}/tokens")).json() == []  # nothing made


# -- roles -----------------------------------------------------------------------------------------
async def test_reader_reads_only(api: Api) -> None:
    async with api.client(await api.token("reader")) as reader:
        assert len((await reader.get(f"{API}/objects/automatons")).json()) == 4  # control: everything
        assert (await reader.get(f"{API}/stats")).status_code == 200
        for method, path, body in (
            ("POST", f"{API}/apply", {"documents": vpc_docs("c", "100.83")}),
            ("POST", f"{API}/automatons/a-web/scale", {"replicas": 3}),
            ("DELETE", f"{API}/objects/vpcs/a", None),
            ("POST", f"{API}/tokens", {"role": "admin"}),
            ("GET", f"{API}/tokens", None),
        ):
            reply = await reader.request(method, path, json=body)
            assert reply.status_code == 403 and reply.json()["error"].startswith("forbidden:"), (
                path,
                reply.text,
            )
        assert (await reader.get(f"{API}/objects/automatons/a-web")).json()["spec"]["replicas"] == 1


async def test_a_tenant_sees_only_its_vpcs(api: Api) -> None:
    async with api.client(local=True) as root:
        await root.post(f"{API}/hosts/register", json=host_registration("h1"))
    async with api.client(await api.token("tenant", ("a",))) as tenant:
        for kind, mine in (
            ("vpcs", {"a"}),
            ("networks", {"a-n"}),
            ("automatons", {"a-web", "a-cli"}),
            ("compositions", {"a-shop"}),
            ("hosts", set()),  # hosts (their underlay) are not a tenant's to see
        ):
            assert {o["name"] for o in (await tenant.get(f"{API}/objects/{kind}")).json()} == mine, kind
        assert (await tenant.get(f"{API}/objects/automatons/a-web")).status_code == 200
        for path in (
            "objects/automatons/b-web",
            "objects/vpcs/b",
            "objects/hosts/h1",
            "compositions/b-shop/matrix",
        ):
            hidden = await tenant.get(f"{API}/{path}")
            assert hidden.status_code == 404 and "not found" in hidden.json()["error"], path
        for path in ("stats", "load", "controllers", "tokens"):
            assert (await tenant.get(f"{API}/{path}")).status_code == 403, path
        check = await tenant.get(f"{API}/policy/check", params={"source": "a-cli", "target": "a-web"})
        assert check.json()["allowed"] is True
        across = await tenant.get(f"{API}/policy/check", params={"source": "a-cli", "target": "b-web"})
        assert across.status_code == 404


async def test_a_tenant_changes_only_its_vpcs(api: Api) -> None:
    async with api.client(await api.token("tenant", ("a",))) as tenant:
        # Control: the same requests in its own VPC succeed.
        assert (await tenant.post(f"{API}/automatons/a-web/scale", json={"replicas": 2})).status_code == 200
        mine = vpc_docs("a", "100.81")
        mine[2]["spec"]["replicas"] = 3
        assert (await tenant.post(f"{API}/apply", json={"documents": mine})).status_code == 200

        before = {o["name"]: o["metadata"]["revision"] for o in (await api_objects(api, "automatons"))}
        theirs = vpc_docs("b", "100.82")
        theirs[2]["spec"]["replicas"] = 5
        mixed = [*vpc_docs("a", "100.81"), theirs[2]]  # one object outside: nothing changes
        mixed[2]["spec"]["replicas"] = 4
        for method, path, body in (
            ("POST", f"{API}/apply", {"documents": theirs}),
            ("POST", f"{API}/apply", {"documents": mixed}),
            ("POST", f"{API}/apply", {"documents": vpc_docs("c", "100.83")}),  # a VPC outside its list
            ("POST", f"{API}/automatons/b-web/scale", {"replicas": 3}),
            ("DELETE", f"{API}/objects/automatons/b-web", None),
            (
                "POST",
                f"{API}/delete",
                {"documents": [{"kind": "Automaton", "name": "a-cli"}, {"kind": "Vpc", "name": "b"}]},
            ),
            ("PUT", f"{API}/automatons/b-web/qos", {"ingress_mbps": 10}),
        ):
            reply = await tenant.request(method, path, json=body)
            assert reply.status_code == 403, (path, reply.text)
            error = reply.json()["error"]
            assert error.startswith("forbidden:") and "\n" not in error, error
        assert {o["name"]: o["metadata"]["revision"] for o in await api_objects(api, "automatons")} == before
        assert await api.store.get("Vpc", "c") is None
        # A tenant cannot run an automaton as root, even in its own VPC.
        rooted = vpc_docs("a", "100.81")
        rooted[3]["spec"]["user"] = "root"
        refused = await tenant.post(f"{API}/apply", json={"documents": rooted})
        assert refused.status_code == 403 and "user: root" in refused.json()["error"]
        # ... nor register a host.
        assert (await tenant.post(f"{API}/hosts/register", json=host_registration("h1"))).status_code == 403
        gone = await tenant.delete(f"{API}/objects/automatons/a-cli")
        assert gone.status_code == 200


async def api_objects(api: Api, kind: str) -> list[dict[str, Any]]:
    async with api.client(local=True) as root:
        found: list[dict[str, Any]] = (await root.get(f"{API}/objects/{kind}")).json()
        return found


async def test_tenant_instances_are_scoped(api: Api) -> None:
    for name, automaton in (("a-web-0", "a-web"), ("b-web-0", "b-web")):
        inst = Object(kind="Instance", name=name, spec={"automaton": automaton, "ordinal": 0})
        await api.store.commit([Put("Instance", name, inst.to_data(), 0)])
    async with api.client(await api.token("tenant", ("a",))) as tenant:
        assert [i["name"] for i in (await tenant.get(f"{API}/objects/instances")).json()] == ["a-web-0"]
        # Its own instance gets past the scope (and stops at "not wired yet", no agent here).
        own = await tenant.post(f"{API}/instances/a-web-0/exec", json={"command": ["id"]})
        assert own.status_code == 409 and "not wired" in own.json()["error"]
        other = await tenant.post(f"{API}/instances/b-web-0/exec", json={"command": ["id"]})
        assert other.status_code == 403 and 'Instance "b-web-0"' in other.json()["error"]
        for what in ("logs", "flows"):
            assert (await tenant.get(f"{API}/instances/b-web-0/{what}")).status_code == 403
        # Nobody chooses the user of an exec (the instance's own runs it): refused for all.
        rooted = await tenant.post(f"{API}/instances/a-web-0/exec", json={"command": ["id"], "user": "root"})
        assert rooted.status_code == 422


def test_vpc_of_each_kind() -> None:
    objs = [Object(kind=d["kind"], name=d["name"], spec=d["spec"]) for d in vpc_docs("a", "100.81")]
    lookup = scope.index(objs)
    assert [scope.vpcs_of(o, lookup) for o in objs] == [{"a"}] * 5
    inst = Object(kind="Instance", name="i", spec={"automaton": "a-web", "ordinal": 0})
    orphan = Object(kind="Instance", name="j", spec={"automaton": "gone", "ordinal": 0}, status={"vpc": "z"})
    empty = Object(kind="Composition", name="c", spec={"links": []})
    host = Object(kind="Host", name="h1", spec={})
    assert [scope.vpcs_of(o, lookup) for o in (inst, orphan, empty, host)] == [{"a"}, {"z"}, set(), set()]
    tenant = auth.Principal("tenant", frozenset({"a"}))
    assert (
        scope.within(tenant, {"a"})
        and not scope.within(tenant, {"a", "b"})
        and not scope.within(tenant, set())
    )
    assert scope.within(auth.Principal("admin"), set())


# -- hosts: their certificates ---------------------------------------------------------------------
def host_registration(name: str, underlay: str = "100.64.0.11") -> dict[str, Any]:
    return {"name": name, "underlay": underlay, "rpc": f"{underlay}:7070", "tag": "abcd", "boot_id": "b1"}


async def test_hosts_report_only_for_themselves(api: Api) -> None:
    async with api.client(cert=api.agent_cert("h1")) as h1:
        assert (await h1.post(f"{API}/hosts/register", json=host_registration("h1"))).status_code == 200
        assert (await h1.post(f"{API}/hosts/h1/heartbeat", json={"boot_id": "b1"})).status_code == 200
        # A host's certificate is no token: it reads nothing.
        assert (await h1.get(f"{API}/objects/vpcs")).status_code == 403
    before = await api.store.get("Host", "h1")
    async with api.client(cert=api.agent_cert("h2")) as h2:
        hijack = await h2.post(f"{API}/hosts/register", json=host_registration("h1", "100.64.0.66"))
        assert hijack.status_code == 403
        assert hijack.json() == {"error": 'forbidden: the certificate of host "h2" cannot register host "h1"'}
        for what, body in (
            ("heartbeat", {"boot_id": "b9"}),
            ("events", {"instance_uid": "u", "process": "x"}),
            ("load", {"instances": []}),
        ):
            reply = await h2.post(f"{API}/hosts/h1/{what}", json=body)
            assert reply.status_code == 403 and 'cannot report for host "h1"' in reply.json()["error"], what
        assert (
            await h2.post(f"{API}/hosts/register", json=host_registration("h2", "100.64.0.12"))
        ).status_code == 200
    assert await api.store.get("Host", "h1") == before  # h1 stays as it was
    # Admin and tenant tokens do not make a host either.
    async with api.client(await api.token("admin")) as admin:
        assert (await admin.post(f"{API}/hosts/h1/heartbeat", json={"boot_id": "b9"})).status_code == 403


async def test_certificates_that_are_no_host(api: Api) -> None:
    controller = pki.issue(api.ca, pki.Role.CONTROLLER, "c1").cert_pem().decode()
    async with api.client(cert=controller) as c:
        assert (await c.post(f"{API}/hosts/register", json=host_registration("c1"))).status_code == 401


async def test_only_a_hosts_certificate_or_an_admin_attaches_containers(api: Api) -> None:
    edge = {"kind": "Automaton", "name": "a-edge", "spec": {"network": "a-n", "external": True}}
    async with api.client(local=True) as root:
        assert (await root.post(f"{API}/apply", json={"documents": [edge]})).status_code == 200
    async with api.client(cert=api.agent_cert("h1")) as h1:
        assert (await h1.post(f"{API}/hosts/register", json=host_registration("h1"))).status_code == 200
    async with api.client(cert=api.agent_cert("h2")) as h2:
        assert (
            await h2.post(f"{API}/hosts/register", json=host_registration("h2", "100.64.0.12"))
        ).status_code == 200
    attach = f"{API}/automatons/a-edge/attachments"
    body = {"container_id": "c1", "netns": "/run/netns/cni-1", "host": "h1"}
    # A tenant of the automaton's own VPC may not: it would name any namespace on a host.
    async with api.client(await api.token("tenant", ("a",))) as tenant:
        refused = await tenant.post(attach, json=body)
        assert refused.status_code == 403, refused.text
        assert (
            "attaching a runtime's container is not allowed with a tenant credential"
            in refused.json()["error"]
        )
    # h2's certificate may not attach on h1 ...
    async with api.client(cert=api.agent_cert("h2")) as h2:
        elsewhere = await h2.post(attach, json=body)
        assert elsewhere.status_code == 403
        assert (
            'the certificate of host "h2" cannot attach a container on host "h1"' in elsewhere.json()["error"]
        )
    assert [i for i in await api_objects(api, "instances") if i["spec"]["automaton"] == "a-edge"] == []
    # ... the control: h1's certificate may, and reads and detaches what it attached.
    async with api.client(cert=api.agent_cert("h1")) as h1:
        made = await h1.post(attach, json=body)
        assert made.status_code == 200 and made.json()["name"] == "a-edge-0", made.text
        assert (await h1.get(f"{attach}/c1")).status_code == 200
    async with api.client(cert=api.agent_cert("h2")) as h2:
        assert (await h2.get(f"{attach}/c1")).status_code == 403
        assert (await h2.delete(f"{attach}/c1")).status_code == 403
    async with api.client(await api.token("admin")) as admin:
        assert (await admin.delete(f"{attach}/c1")).json()["action"] == "deleting"
