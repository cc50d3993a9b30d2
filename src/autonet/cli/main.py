"""`autonet`: the command line. Every command exits 0 on success, else prints one line.

The daemons (`autonet controller`, `autonet agent`) are commands of the same program.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from autonet.cli import output, paths
from autonet.cli.client import API, ApiError, Client, CliError, api_address, credentials
from autonet.cli.config import ConfigOpt
from autonet.cli.progress import WaitProgress
from autonet.model.errors import ValidationError

if TYPE_CHECKING:
    from autonet.agent.rpc.tls import TlsFiles

app = typer.Typer(
    name="autonet",
    help="Run automatons as instances in network namespaces, composed over protocols.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
lab_app = typer.Typer(
    help="Simulated multi-host labs on this machine (namespaces, real agents); with "
    "`up --controllers N` several controllers on a 3-member etcd cluster (mTLS). "
    "Roles: c1..cN (c1 is also `controller`), e1..e3 (etcd members), h1..hN (host agents). "
    "Fault injection: `kill ROLE` (SIGKILL a daemon), `restart ROLE`, `fail HOST` (the host "
    "crashes), `partition HOST` (it loses its underlay), `heal HOST` (it comes back); "
    "see docs/operations.md.",
    no_args_is_help=True,
)
app.add_typer(lab_app, name="lab")

ApiOpt = Annotated[
    str | None,
    typer.Option(
        "--api",
        help="API address: unix:/path, https://host:port or http://host:port; several separated by "
        "commas, tried in turn when one cannot be reached [env AUTONET_API; default: every "
        "controller of the lab]",
    ),
]
TokenOpt = Annotated[
    str | None,
    typer.Option(
        "--token",
        help="Bearer token for the API over TCP [env AUTONET_TOKEN; default: the lab's admin token]."
        " Not needed on the Unix socket",
    ),
]
CaOpt = Annotated[
    str | None,
    typer.Option(
        "--ca", help="CA certificate (PEM) of https API endpoints [env AUTONET_CA; default: the lab's]"
    ),
]
LabOpt = Annotated[str | None, typer.Option("--lab", help="Talk to the lab of this name [env AUTONET_LAB]")]
OutOpt = Annotated[str, typer.Option("-o", "--output", help="table, json or yaml")]

state: dict[str, Any] = {}


@app.callback()
def main_options(api: ApiOpt = None, lab: LabOpt = None, token: TokenOpt = None, ca: CaOpt = None) -> None:
    state["api"], state["lab"], state["token"], state["ca"] = api, lab, token, ca


def client() -> Client:
    creds = credentials(state.get("token"), state.get("ca"), state.get("lab"))
    return Client(api_address(state.get("api"), state.get("lab")), creds=creds)


def fail(message: str) -> None:
    raise CliError(message)


# --- objects -------------------------------------------------------------------------------
def read_manifest(path: Path) -> list[dict[str, Any]]:
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror}") from None
    try:
        from autonet.model import manifest  # (pydantic's models load for the commands that need them)

        docs = manifest.parse(text)
    except ValidationError as exc:
        raise CliError(f"{path}: {exc}") from None
    if not docs:
        raise CliError(f"{path}: no objects in the manifest")
    return docs


def kinds_info(c: Client) -> dict[str, dict[str, Any]]:
    return {k["kind"]: k for k in c.request("GET", "/kinds")}


def wait_for(c: Client, targets: list[tuple[str, str]], timeout: float, deleting: bool = False) -> None:
    """Until every target is done (or gone, when deleting); a Failed object ends the wait.
    Progress (converged / total, the slowest one's state and reason) goes to stderr."""
    done_states = {k: set(v["done"]) for k, v in kinds_info(c).items()}
    deadline = time.monotonic() + timeout
    progress = WaitProgress("deleting" if deleting else "waiting")
    pending: dict[str, str] = {}
    try:
        while time.monotonic() < deadline:
            pending = {}
            for kind, name in targets:
                why = _pending(c, kind, name, done_states, deleting)
                if why:
                    pending[f"{kind} {name}"] = why
            if not pending:
                return
            progress.update(pending, len(targets))
            time.sleep(0.1)
    finally:
        progress.close()
    fail(f"timed out after {timeout:.0f}s waiting for: {', '.join(list(pending.values())[:5])}")


def _pending(c: Client, kind: str, name: str, done_states: dict[str, set[str]], deleting: bool) -> str:
    """Why one target is not there yet ("" when it is); fails the wait on a Failed one."""
    obj = c.get(kind, name)
    if deleting:
        return f"{kind} {name} ({obj['status'].get('state')})" if obj is not None else ""
    if obj is None:
        fail(f"{kind} {name} disappeared")
    assert obj is not None
    st = obj["status"]
    if st.get("state") == "Failed":
        fail(f'{kind} "{name}" failed: {st.get("reason")}')
    if st.get("state") not in done_states.get(kind, {"Provisioned"}):
        return f"{kind} {name} ({st.get('state')}{': ' + st['reason'] if st.get('reason') else ''})"
    if kind == "Automaton":
        # The API counts the automaton's instances; they are fetched only to name
        # a failed one (listing every instance each round costs the fleet's size).
        if st.get("failed"):
            mine = c.request("GET", "/objects/instances", params={"automaton": name})
            for inst in mine:
                if inst["status"].get("state") == "Failed":
                    fail(f'Instance "{inst["name"]}" failed: {inst["status"].get("reason")}')
        wanted = obj["spec"].get("replicas", 1)
        if st.get("ready") != wanted or st.get("instances") != wanted:
            return f"Automaton {name} ({st.get('ready')}/{wanted} instances provisioned)"
    return ""


@app.command()
def apply(
    file: Annotated[
        Path, typer.Option("-f", "--file", help="Manifest (YAML, several documents); - for stdin")
    ],
    wait: Annotated[bool, typer.Option("--wait", help="Return when everything is provisioned")] = False,
    timeout: Annotated[float, typer.Option("--timeout", help="Seconds to wait")] = 120.0,
) -> None:
    """Create or update the objects of a manifest: all of them, or none if any is invalid."""
    docs = read_manifest(file)
    c = client()
    reply = c.request("POST", "/apply", json={"documents": docs})
    for result in reply["results"]:
        typer.echo(f"{result['kind'].lower()}/{result['name']} {result['action']}")
    if wait:
        wait_for(c, [(r["kind"], r["name"]) for r in reply["results"]], timeout)
        typer.echo("all provisioned")


@app.command()
def delete(
    kind: Annotated[str | None, typer.Argument(help="Kind (singular or plural)")] = None,
    name: Annotated[str | None, typer.Argument(help="Object name")] = None,
    file: Annotated[
        Path | None, typer.Option("-f", "--file", help="Delete the objects of this manifest")
    ] = None,
    wait: Annotated[bool, typer.Option("--wait", help="Return when they are gone")] = False,
    timeout: Annotated[float, typer.Option("--timeout")] = 120.0,
) -> None:
    """Delete objects (their instances, addresses and kernel state go with them)."""
    c = client()
    if file is not None:
        docs = [{"kind": d.get("kind"), "name": d.get("name")} for d in read_manifest(file)]
        reply = c.request("POST", "/delete", json={"documents": list(reversed(docs))})
    elif kind and name:
        reply = c.request("DELETE", f"/objects/{kind}/{name}")
    else:
        fail("give KIND NAME or -f FILE")
    for result in reply["results"]:
        typer.echo(f"{result['kind'].lower()}/{result['name']} {result['action']}")
    if wait:
        wait_for(
            c,
            [(r["kind"], r["name"]) for r in reply["results"] if r["action"] != "not found"],
            timeout,
            deleting=True,
        )
        typer.echo("deleted")


@app.command()
def get(
    kind: Annotated[
        str,
        typer.Argument(help="hosts, vpcs, networks, automatons, compositions, instances ..., or controllers"),
    ],
    name: Annotated[str | None, typer.Argument()] = None,
    fmt: OutOpt = "table",
) -> None:
    """List objects of a kind, or show one.

    `get controllers`: the cluster's controllers (its members), a row each:
    ID, STATE (acting or stopped), ENDPOINT (where its API is),
    SHARDS (the VPCs it owns, as vpc/NAME@EPOCH), LEASE LEFT (seconds left on its etcd lease).
    """
    if fmt not in ("table", "json", "yaml"):
        fail("-o: must be table, json or yaml")
    c = client()
    if kind.lower() in ("controller", "controllers"):
        get_controllers(c, name, fmt)
        return
    if name:
        obj = c.request("GET", f"/objects/{kind}/{name}")
        typer.echo(output.table(obj["kind"], [obj]) if fmt == "table" else output.render(obj, fmt))
        return
    objs = c.request("GET", f"/objects/{kind}")
    if fmt == "table":
        real_kind = objs[0]["kind"] if objs else kind
        typer.echo(output.table(real_kind, objs) if objs else f"no {kind}")
    else:
        typer.echo(output.render(objs, fmt))


def get_controllers(c: Client, name: str | None, fmt: str) -> None:
    """The cluster's members (GET /api/v1/controllers), or one of them."""
    try:
        members: list[dict[str, Any]] = c.request("GET", "/controllers")
    except ApiError as exc:
        if exc.status != 404:
            raise
        line = f"this controller runs alone (no membership): {c.address} has no {API}/controllers"
        if fmt == "table":
            typer.echo(line)
        else:
            typer.echo(line, err=True)
            typer.echo(output.render([], fmt))
        return
    if name:
        members = [m for m in members if m.get("id") == name]
        if not members:
            fail(f'controller "{name}" is not a member')
    if fmt == "table":
        typer.echo(output.controllers(members) if members else "no controllers")
    else:
        typer.echo(output.render(members[0] if name else members, fmt))


@app.command()
def describe(kind: str, name: str) -> None:
    """Show an object in detail with what belongs to it."""
    c = client()
    obj = c.request("GET", f"/objects/{kind}/{name}")
    related: dict[str, list[dict[str, Any]]] = {}
    if obj["kind"] == "Automaton":
        related["Instance"] = [i for i in c.objects("instances") if i["spec"]["automaton"] == name]
    elif obj["kind"] == "Host":
        related["Instance"] = [i for i in c.objects("instances") if i["status"].get("host") == name]
    elif obj["kind"] == "Network":
        related["Automaton"] = [a for a in c.objects("automatons") if a["spec"]["network"] == name]
    elif obj["kind"] == "Vpc":
        related["Network"] = [n for n in c.objects("networks") if n["spec"]["vpc"] == name]
    text = output.describe(obj, related)
    if obj["kind"] == "Composition":
        matrix = c.request("GET", f"/compositions/{name}/matrix")
        rows = [
            f"  {m['source']} -> {m['target']}  {m['transport']}/{m['port']}  ({m['protocol']})"
            for m in matrix
        ]
        text += "\nAllowed (everything else between instances is denied):\n" + (
            "\n".join(rows) or "  (nothing)"
        )
    typer.echo(text)


@app.command()
def scale(
    automaton: str,
    replicas: int,
    wait: Annotated[bool, typer.Option("--wait")] = False,
    timeout: Annotated[float, typer.Option("--timeout")] = 120.0,
) -> None:
    """Set the number of instances of an automaton."""
    if replicas < 0:
        fail("replicas: must be >= 0")
    c = client()
    c.request("POST", f"/automatons/{automaton}/scale", json={"replicas": replicas})
    typer.echo(f"automaton/{automaton} scaled to {replicas}")
    if wait:
        wait_for(c, [("Automaton", automaton)], timeout)


@app.command(
    "exec",
    context_settings={"allow_interspersed_args": False},
)
def exec_(
    instance: str,
    command: Annotated[list[str], typer.Argument(help="Command and arguments (after --)")],
    stdin: Annotated[bool, typer.Option("-i", "--stdin", help="Pass standard input to the command")] = False,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Kill the command after this many seconds")
    ] = 0.0,
) -> None:
    """Run a command inside an instance's network namespace; its exit code is passed through.

    It runs as the instance's own user and in its cgroup (root only if the automaton says
    `user: root`): no more than the instance's process could do."""
    if command and command[0] == "--":
        command = command[1:]
    if not command:
        fail("give the command after --, e.g. autonet exec web-0 -- ip addr")
    data = sys.stdin.buffer.read() if stdin else b""
    code = 1
    for key, chunk in client().exec(instance, command, timeout, data):
        if key == "exit":
            code = int(chunk)
        else:
            out = sys.stdout.buffer if key == "stdout" else sys.stderr.buffer
            out.write(chunk)  # type: ignore[arg-type]
            out.flush()
    raise typer.Exit(code)


@app.command()
def logs(
    instance: str,
    tail: Annotated[
        int, typer.Option("--tail", "-n", help="Only the last N lines (0: all the log kept)")
    ] = 0,
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new output until Ctrl-C")
    ] = False,
) -> None:
    """Print the output (stdout and stderr) of an instance's process.

    Kept: the current log and the one rotated before it (agent --log-max-bytes); at most 3 MiB without -f.
    """
    if tail < 0:
        fail("--tail: must be >= 0")
    params: dict[str, Any] = {"tail": tail}
    if not follow:
        typer.echo(client().request("GET", f"/instances/{instance}/logs", params=params), nl=False)
        return
    out = sys.stdout.buffer
    try:
        for chunk in client().stream_bytes(
            "GET", f"/instances/{instance}/logs", params={**params, "follow": "true"}
        ):
            out.write(chunk)
            out.flush()
    except KeyboardInterrupt:
        pass  # the way to stop following: not an error
    except BrokenPipeError:
        # The reader went away (`| head`): quiet, and no second error when Python flushes stdout.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# --- flows, load, QoS ---------------------------------------------------------------------------
def _rate(bps: float) -> str:
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if bps >= scale:
            return f"{bps / scale:.1f}{unit}"
    return f"{bps:.0f}"


@app.command()
def flows(instance: str, fmt: OutOpt = "table") -> None:
    """An instance's flows (connections) with their peers and counters, from conntrack."""
    rows = client().request("GET", f"/instances/{instance}/flows")
    if fmt != "table":
        typer.echo(output.render(rows, fmt))
        return
    if not rows:
        typer.echo(f"no flows for {instance}")
        return
    header = f"{'FLOW ID':<20} {'PROTO':<6} {'STATE':<12} {'DIR':<8} {'LOCAL':<28} {'PEER':<28} {'PEER INSTANCE':<16} {'TX BYTES':>12} {'RX BYTES':>12} {'AGE':>7}"
    typer.echo(header)
    for r in rows:
        local = f"{r['local_address']}:{r['local_port']}"
        peer = f"{r['peer_address']}:{r['peer_port']}"
        who = r["peer_instance"] or "-"
        typer.echo(
            f"{r['flow_id']:<20} {r['protocol']:<6} {r['state'] or '-':<12} {r['direction']:<8} {local:<28} {peer:<28} {who:<16} "
            f"{int(r['tx_bytes']):>12} {int(r['rx_bytes']):>12} {r['age_seconds']:>6.1f}s"
        )


@app.command()
def top(fmt: OutOpt = "table") -> None:
    """Load per host, automaton and instance: bit/s and packet/s each way, active flows."""
    snapshot = client().request("GET", "/load")
    if fmt != "table":
        typer.echo(output.render(snapshot, fmt))
        return
    for scope in ("host", "automaton", "instance"):
        typer.echo(
            f"{scope.upper():<20} {'RX bit/s':>10} {'TX bit/s':>10} {'RX pkt/s':>10} {'TX pkt/s':>10} {'FLOWS':>6}"
        )
        for row in snapshot[f"{scope}s"]:
            typer.echo(
                f"{row[scope]:<20} {_rate(row['rx_bps']):>10} {_rate(row['tx_bps']):>10} "
                f"{row['rx_pps']:>10.0f} {row['tx_pps']:>10.0f} {row['flows']:>6}"
            )
        typer.echo("")


@app.command()
def graph(
    out: Annotated[
        Path | None,
        typer.Option("-o", "--output", help="Write FILE.svg, FILE.png or FILE.dot (default: DOT on stdout)"),
    ] = None,
) -> None:
    """The composition graph: automatons (instances per host), links, VPCs and networks."""
    from autonet.cli import graph as graphs

    fmt = graphs.output_format(out)
    data = graphs.render(graphs.build_dot(graphs.fetch(client())), fmt)
    if out is None:
        sys.stdout.write(data.decode())
        return
    out.write_bytes(data)
    typer.echo(f"graph written to {out}")


@app.command()
def ui(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1 (0: any free one)")] = 7090,
) -> None:
    """Serve the live dashboard on 127.0.0.1 and print its URL (with a session token)."""
    from autonet.cli import ui as dashboard  # here: fastapi and uvicorn load only for this command

    dashboard.serve(client(), port)


@app.command()
def qos(
    automaton: str,
    ingress: Annotated[float | None, typer.Option("--ingress", help="Mbit/s toward each instance")] = None,
    egress: Annotated[float | None, typer.Option("--egress", help="Mbit/s from each instance")] = None,
    priority: Annotated[str, typer.Option("--priority", help="high, normal or low")] = "normal",
) -> None:
    """Set an automaton's rate limits while it runs (no limit given: remove them)."""
    body: dict[str, Any] = {"priority": priority}
    if ingress is not None:
        body["ingress_mbps"] = ingress
    if egress is not None:
        body["egress_mbps"] = egress
    reply = client().request("PUT", f"/automatons/{automaton}/qos", json=body)
    typer.echo(f"automaton/{automaton} qos {reply['qos'] or 'removed'}")


# --- policy ----------------------------------------------------------------------------------
policy_app = typer.Typer(help="Composition security: who may talk to whom.", no_args_is_help=True)
app.add_typer(policy_app, name="policy")


@policy_app.command("check")
def policy_check(
    source: Annotated[str, typer.Argument(metavar="FROM", help="Client automaton")],
    target: Annotated[str, typer.Argument(metavar="TO", help="Server automaton")],
    port: Annotated[int | None, typer.Option("--port", help="Destination port")] = None,
    transport: Annotated[str | None, typer.Option("--transport", help="tcp or udp")] = None,
) -> None:
    """Say whether FROM's instances may open connections to TO's, and why. Exit 1 if not."""
    params: dict[str, Any] = {"source": source, "target": target}
    if port is not None:
        params["port"] = port
    if transport is not None:
        params["transport"] = transport
    verdict = client().request("GET", "/policy/check", params=params)
    typer.echo(verdict["reason"])
    raise typer.Exit(0 if verdict["allowed"] else 1)


# --- API tokens ------------------------------------------------------------------------------
token_app = typer.Typer(
    help="Bearer tokens for the API over TCP: admin (everything), tenant (only the objects of "
    "its VPCs), reader (GET only). Stored hashed; the secret is printed once, at create. "
    "Admin only (or root on the Unix socket). See docs/security.md.",
    no_args_is_help=True,
)
app.add_typer(token_app, name="token")


@token_app.command("create")
def token_create(
    role: Annotated[str, typer.Option("--role", help="admin, tenant or reader")],
    vpcs: Annotated[
        list[str] | None, typer.Option("--vpc", help="A VPC a tenant token reaches (repeatable; tenant only)")
    ] = None,
    ttl: Annotated[
        str | None, typer.Option("--ttl", help="Lifetime: 30s, 15m, 1h, 7d, 2w [default: no expiry]")
    ] = None,
    fmt: OutOpt = "table",
) -> None:
    """Make a token; prints it (only this once: the store keeps its hash) and its id."""
    made = client().request("POST", "/tokens", json={"role": role, "vpcs": vpcs or [], "ttl": ttl})
    if fmt != "table":
        typer.echo(output.render(made, fmt))
        return
    typer.echo(made["token"])
    typer.echo(
        f"id {made['id']}, role {made['role']}"
        + (f", VPCs {', '.join(made['vpcs'])}" if made["vpcs"] else "")
        + (f", expires {_when(made['expires'])}" if made["expires"] else ""),
        err=True,
    )


def _when(epoch: float | None) -> str:
    import datetime as dt

    if epoch is None:
        return "never"
    return dt.datetime.fromtimestamp(epoch, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@token_app.command("list")
def token_list(fmt: OutOpt = "table") -> None:
    """Every token: id, role, VPCs, expiry, creation (never the secret)."""
    rows = client().request("GET", "/tokens")
    if fmt != "table":
        typer.echo(output.render(rows, fmt))
        return
    typer.echo(
        output.grid(
            ["ID", "ROLE", "VPCS", "EXPIRES", "CREATED"],
            [
                [r["id"], r["role"], ",".join(r["vpcs"]) or "-", _when(r["expires"]), r["created"]]
                for r in rows
            ],
        )
    )


@token_app.command("revoke")
def token_revoke(token_id: Annotated[str, typer.Argument(help="The token's id (token list)")]) -> None:
    """Revoke a token: every controller refuses it from the next request on."""
    client().request("DELETE", f"/tokens/{token_id}")
    typer.echo(f"token {token_id} revoked")


# --- PKI -------------------------------------------------------------------------------------
pki_app = typer.Typer(
    help="The cluster PKI: one CA and certificates for agents, controllers, etcd and admins "
    "(files in DIR: ca.pem, ca-key.pem, NAME.pem, NAME-key.pem; see docs/operations.md).",
    no_args_is_help=True,
)
app.add_typer(pki_app, name="pki")
PkiDirOpt = Annotated[Path, typer.Option("--dir", help="The PKI directory")]


@contextlib.contextmanager
def pki_errors() -> Iterator[None]:
    """A PKI or file error becomes the command's one line."""
    from autonet.model.pki import PkiError

    try:
        yield
    except PkiError as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{exc.filename}: {exc.strerror}")


@pki_app.command("init")
def pki_init(
    directory: PkiDirOpt,
    days: Annotated[int, typer.Option("--days", help="Validity of the CA in days")] = 3650,
) -> None:
    """Make the cluster CA (EC P-256) in DIR (made 0700 if missing); prints its files.

    An existing CA is never overwritten.
    """
    from autonet.model import pki

    d = pki.PkiDir(directory)
    with pki_errors():
        d.init(days=days)
    typer.echo(f"{d.ca_cert}\n{d.ca_key}")


@pki_app.command("issue")
def pki_issue(
    directory: PkiDirOpt,
    role: Annotated[
        str,
        typer.Option(
            "--role",
            help="agent, controller, etcd (server and client use) or admin (client use only); "
            "recorded as the subject's OU",
        ),
    ],
    name: Annotated[
        str, typer.Option("--name", help="The holder's name (CN, first DNS SAN, file name): e.g. a host name")
    ],
    sans: Annotated[
        list[str] | None,
        typer.Option("--san", help="Another subject alternative name: an IPv4/IPv6 address or DNS name"),
    ] = None,
    days: Annotated[int, typer.Option("--days", help="Validity in days (not past the CA's)")] = 365,
) -> None:
    """Issue a key and a certificate signed by DIR's CA; prints their files.

    Issuing again for a NAME replaces its pair (rotation): each file atomically, the key first.
    """
    from autonet.model import pki

    d = pki.PkiDir(directory)
    with pki_errors():
        d.issue(role, name, sans or (), days)
    typer.echo(f"{d.cert(name)}\n{d.key(name)}")


# --- labs ------------------------------------------------------------------------------------
LabName = Annotated[str, typer.Option("--name", help="Lab name [env AUTONET_LAB]", envvar="AUTONET_LAB")]


@lab_app.command("up")
def lab_up(
    name: LabName = paths.DEFAULT_LAB,
    hosts: Annotated[int, typer.Option("--hosts", help="Number of simulated hosts")] = 1,
    underlay: Annotated[str, typer.Option("--underlay", help="ipv4 or ipv6")] = "ipv4",
    overwatch: Annotated[
        list[str] | None, typer.Option("--overwatch", help="Enable an Overwatch plugin in the controllers")
    ] = None,
    controllers: Annotated[
        int,
        typer.Option(
            "--controllers",
            help=f"Number of controllers, c1..cN (1 to {paths.MAX_LAB_CONTROLLERS}); more than one implies --store etcd",
        ),
    ] = 1,
    store: Annotated[
        str | None,
        typer.Option(
            "--store",
            help="sqlite (one controller; the default) or etcd: a 3-member etcd cluster e1..e3 with "
            "mutual TLS and the lab's own PKI (labs/NAME/pki)",
        ),
    ] = None,
) -> None:
    """Build a lab: underlay switch, controllers (and etcd), one agent per host, in namespaces."""
    started = time.monotonic()
    from autonet.cli import lab as labs

    info = labs.up(
        name,
        hosts,
        underlay,
        overwatch=overwatch,
        controllers=controllers,
        store=store,
        membership=controller_takes_membership(),
    )
    typer.echo(
        f"lab {info.name} up: {info.hosts} host(s), {info.controllers} controller(s) on {info.store}, "
        f"{info.underlay} underlay, API {info.api} ({time.monotonic() - started:.1f}s)"
    )


def controller_takes_membership() -> bool:
    """Whether `autonet controller` takes --id and --advertise (controller membership):
    a lab passes them to its controllers only then."""
    command = typer.main.get_command(app)
    options = {opt for param in command.commands["controller"].params for opt in param.opts}  # type: ignore[attr-defined]
    return {"--id", "--advertise"} <= options


@lab_app.command("down")
def lab_down(name: LabName = paths.DEFAULT_LAB) -> None:
    """Stop a lab's daemons and processes; remove its namespaces and files."""
    from autonet.cli import lab as labs

    typer.echo(f"lab {name} down" if labs.down(name) else f"lab {name} is not up")


@lab_app.command("status")
def lab_status(name: LabName = paths.DEFAULT_LAB, fmt: OutOpt = "table") -> None:
    """Show a lab's daemons (controllers, etcd members, agents: PID, running or dead) and hosts."""
    from autonet.cli import lab as labs

    info = labs.status(name)
    if fmt != "table":
        typer.echo(output.render(info, fmt))
        return
    typer.echo(
        f"lab {info['name']}: {info['hosts']} host(s), {info['controllers']} controller(s) on "
        f"{info['store']}, {info['underlay']} underlay"
    )
    rows = [
        [d["role"], d["kind"], d["pid"] or "-", "running" if d["alive"] else "DEAD", d["serves"]]
        for d in info["daemons"]
    ]
    typer.echo(output.grid(["ROLE", "KIND", "PID", "STATE", "SERVES"], rows))
    if info["pki"]:
        typer.echo(f"PKI: {info['pki']} (hN: agents, cN: controllers, admin: etcd's admin client)")
    try:
        hosts = Client(info["api"]).objects("hosts")
    except CliError as exc:
        typer.echo(f"hosts: unknown ({exc})")
        return
    if hosts:
        typer.echo(output.table("Host", hosts))


@lab_app.command("restart")
def lab_restart(
    role: Annotated[
        str, typer.Argument(help="controller (= c1), c2..cN, an etcd member e1..e3, or a host h1, h2 ...")
    ],
    name: LabName = paths.DEFAULT_LAB,
) -> None:
    """Restart one of a lab's daemons (it resumes from the store, its instance table or its data).

    Returns once a restarted controller's API answers, or a restarted etcd member is healthy.
    """
    from autonet.cli import lab as labs

    proc = labs.respawn(name, role)
    typer.echo(f"lab {name}: {role} restarted (pid {proc.pid})")


HostArg = Annotated[str, typer.Argument(help="a host of the lab: h1, h2 ...")]


@lab_app.command("kill")
def lab_kill(
    role: Annotated[
        str, typer.Argument(help="controller (= c1), c2..cN, an etcd member e1..e3, or a host's agent h1 ...")
    ],
    name: LabName = paths.DEFAULT_LAB,
) -> None:
    """kill -9 a lab daemon and leave it dead (`lab restart ROLE` starts it again)."""
    from autonet.cli import lab as labs

    proc = labs.kill(name, role)
    typer.echo(f"lab {name}: {role} killed (pid {proc.pid})")


@lab_app.command("fail")
def lab_fail(host: HostArg, name: LabName = paths.DEFAULT_LAB) -> None:
    """A host crashes: SIGKILL to its agent and instances, underlay link down (namespaces stay)."""
    from autonet.cli import lab as labs

    killed = labs.fail(name, host)
    typer.echo(f"lab {name}: {host} failed ({killed} process(es) killed, underlay down)")


@lab_app.command("partition")
def lab_partition(host: HostArg, name: LabName = paths.DEFAULT_LAB) -> None:
    """A host loses its underlay link; its agent and instances keep running."""
    from autonet.cli import lab as labs

    labs.partition(name, host)
    typer.echo(f"lab {name}: {host} partitioned (underlay down)")


@lab_app.command("heal")
def lab_heal(host: HostArg, name: LabName = paths.DEFAULT_LAB) -> None:
    """A failed or partitioned host comes back: underlay up, a dead agent started again."""
    from autonet.cli import lab as labs

    proc = labs.heal(name, host)
    started = f", agent started (pid {proc.pid})" if proc else ""
    typer.echo(f"lab {name}: {host} healed (underlay up{started})")


@lab_app.command("list")
def lab_list() -> None:
    """The labs that are up on this machine."""
    from autonet.cli import lab as labs

    for name in labs.list_labs():
        typer.echo(name)


# --- demo and daemons ------------------------------------------------------------------------
@app.command()
def demo(keep: Annotated[bool, typer.Option("--keep", help="Leave the lab up afterwards")] = False) -> None:
    """The main job end to end on a fresh lab, saying what it does."""
    from autonet.cli.demo import run

    run(keep)


@app.command()
def bench(
    sections: Annotated[
        list[str] | None, typer.Argument(help="provision, throughput, policy, maglev, failover, scale or all")
    ] = None,
    quick: Annotated[
        bool, typer.Option("--quick", help="Fewer samples: ends within about 3 minutes")
    ] = False,
    out: Annotated[
        Path, typer.Option("-o", "--output", help="Results JSON (a PNG chart is written beside it)")
    ] = Path("bench-results/results.json"),
    hosts: Annotated[
        int | None, typer.Option("--hosts", min=1, help="scale: hollow hosts [50; --quick: 10]")
    ] = None,
    instances: Annotated[
        int | None, typer.Option("--instances", min=2, help="scale: instances in all [2000; --quick: 300]")
    ] = None,
    vpcs: Annotated[
        int | None, typer.Option("--vpcs", min=1, help="scale: VPCs the instances are spread over [M/500]")
    ] = None,
    budget: Annotated[
        float, typer.Option("--timeout", min=10, help="scale: seconds for the whole section (a bound)")
    ] = 840.0,
    controllers: Annotated[
        int,
        typer.Option(
            "--controllers",
            min=1,
            max=9,
            help="failover: with N > 1, the takeover of a killed controller's VPC on N controllers"
            " and etcd, instead of host faults",
        ),
    ] = 1,
) -> None:
    """Benchmarks, as ratios to baselines measured in the same run (raw kernel, CNI, veth).

    `bench scale` measures the control plane at fleet size on hollow hosts (no kernel work,
    no root): convergence, memory per instance, placement time, resync after a controller
    restart and per-event cost as the fleet grows (docs/performance.md).
    """
    from autonet.cli.bench import SECTIONS, ScaleOptions, run

    wanted = [s for s in (sections or ["all"])]
    which = list(SECTIONS) if "all" in wanted else wanted
    results = run(which, quick, out, ScaleOptions(hosts, instances, vpcs, budget), controllers)
    typer.echo(output.render(results["sections"], "yaml"))
    typer.echo(f"results: {out} and {out.with_suffix('.png')}")
    if "scale" in results["sections"]:
        from autonet.cli.bench import scale_chart_path

        typer.echo(f"scale chart: {scale_chart_path(out)}")


def _logging(level: str) -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)


TlsCertOpt = Annotated[
    Path | None,
    typer.Option(
        "--tls-cert",
        help="This daemon's certificate (PEM): the agents' mutual-TLS gRPC, and the controller's https"
        " API (a controller's serves it; an agent's proves which host reports)",
    ),
]
TlsKeyOpt = Annotated[Path | None, typer.Option("--tls-key", help="Key (PEM) of --tls-cert")]
DaemonCaOpt = Annotated[
    Path | None, typer.Option("--ca", help="The cluster CA (PEM) that verifies the peers' certificates")
]


def tls_files(cert: Path | None, key: Path | None, ca: Path | None) -> TlsFiles | None:
    """--tls-cert/--tls-key/--ca: all three (checked readable, the key the certificate's) or none."""
    from autonet.agent.rpc.tls import TlsFiles

    with pki_errors():
        files = TlsFiles.of(cert, key, ca)
        if files is not None:
            files.load()
    return files


@app.command()
def controller(
    config: ConfigOpt = None,
    store: Annotated[
        str,
        typer.Option(
            "--store",
            help="sqlite:///path.db (one controller), or etcd://HOST:PORT,HOST:PORT/ROOT for several"
            " controllers (comma-separated endpoints: the first that answers is used; /ROOT, the key"
            " prefix, defaults to /autonet)",
        ),
    ] = "sqlite:////var/lib/autonet/store.db",
    etcd_cacert: Annotated[
        Path | None, typer.Option("--etcd-cacert", help="CA certificate (PEM) that verifies the etcd servers")
    ] = None,
    etcd_cert: Annotated[
        Path | None, typer.Option("--etcd-cert", help="Client certificate (PEM) for mutual TLS to etcd")
    ] = None,
    etcd_key: Annotated[Path | None, typer.Option("--etcd-key", help="Key (PEM) of --etcd-cert")] = None,
    listen: Annotated[
        list[str] | None, typer.Option("--listen", help="unix:/path or tcp:host:port (repeatable)")
    ] = None,
    overwatch: Annotated[
        list[str] | None, typer.Option("--overwatch", help="Enable an Overwatch plugin: NAME[:key=value,...]")
    ] = None,
    host_timeout: Annotated[
        float,
        typer.Option(
            "--host-timeout",
            envvar="AUTONET_HOST_TIMEOUT",
            help="Seconds without a heartbeat after which a host is Lost",
        ),
    ] = 3.0,
    handler_timeout: Annotated[
        float,
        typer.Option(
            "--handler-timeout",
            min=0.001,
            help="Seconds an operator's handler may run before it is cancelled and retried",
        ),
    ] = 60.0,  # control.runner.HANDLER_TIMEOUT, not imported here: it would slow every command
    member_id: Annotated[
        str | None,
        typer.Option(
            "--id",
            help="This controller's member id, unique in the cluster (default: the host name)",
        ),
    ] = None,
    advertise: Annotated[
        list[str] | None,
        typer.Option(
            "--advertise",
            help="An API endpoint other controllers and clients reach this one at, e.g."
            " http://100.64.0.21:8080 (repeatable; default: the --listen addresses)",
        ),
    ] = None,
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    ca: DaemonCaOpt = None,
    member_ttl: Annotated[
        float | None,
        typer.Option(
            "--member-ttl",
            min=2.0,
            help="Seconds of the etcd membership lease (renewed every third of it); a controller"
            " silent that long loses its VPCs to the others. Default 3; etcd store only",
        ),
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
) -> None:
    """Run the controller: the operators, the API and /metrics.

    The Unix socket (--listen unix:...) is root's: no token. Over TCP every request needs
    a bearer token (autonet token create) or, for agents' reports, the host's certificate.
    With --tls-cert/--tls-key/--ca (a controller certificate) the TCP listeners serve
    HTTPS and the controller calls the agents over mutual TLS; without, both are plaintext.

    With an etcd store, several controllers run at once, each owning a share of the VPCs."""
    import asyncio

    from autonet.api.controller import serve

    if store.startswith("etcd://"):
        from autonet.store import StoreError
        from autonet.store.etcd import with_tls

        try:
            store = with_tls(store, etcd_cacert, etcd_cert, etcd_key)
        except StoreError as exc:
            fail(str(exc))
    elif etcd_cacert or etcd_cert or etcd_key:
        fail("--etcd-cacert/--etcd-cert/--etcd-key need an etcd:// --store")
    elif member_ttl is not None:
        fail("--member-ttl needs an etcd:// --store (one controller on SQLite has no membership)")
    if member_id is not None and (not member_id or "/" in member_id):
        fail(f"--id {member_id!r}: it must be non-empty and without '/'")
    tls = tls_files(tls_cert, tls_key, ca)
    _logging(log_level)
    asyncio.run(
        serve(
            store,
            listen or ["unix:/run/autonet/api.sock"],
            overwatch,
            host_timeout,
            handler_timeout,
            member_id=member_id,
            advertise=advertise or (),
            member_ttl=member_ttl or 3.0,
            tls=tls,
        )
    )


@app.command()
def agent(
    config: ConfigOpt = None,
    name: Annotated[str, typer.Option("--name", help="This host's name")] = os.uname().nodename,
    cluster: Annotated[
        str, typer.Option("--cluster", help="Cluster (lab) name, part of kernel object names")
    ] = "default",
    underlay: Annotated[str, typer.Option("--underlay", help="This host's underlay address")] = "",
    listen: Annotated[str, typer.Option("--listen", help="gRPC address host:port")] = "",
    controller: Annotated[
        str | None,
        typer.Option(
            "--controller",
            help="Controller API URL to register with; several separated by commas (each gets the heartbeats)",
        ),
    ] = None,
    state_dir: Annotated[Path, typer.Option("--state-dir")] = Path("/var/lib/autonet/agent"),
    capacity: Annotated[int | None, typer.Option("--capacity", help="Most instances this host takes")] = None,
    metrics: Annotated[
        str, typer.Option("--metrics", help="Prometheus endpoint host:port ('' to disable)")
    ] = "",
    log_level: Annotated[str, typer.Option("--log-level")] = "info",
    log_max_bytes: Annotated[
        int,
        typer.Option(
            "--log-max-bytes",
            envvar="AUTONET_LOG_MAX_BYTES",
            help="Rotate an instance log past this size, keeping one older file (0: never)",
        ),
    ] = 10 * 1024 * 1024,
    warm_pool: Annotated[
        int,
        typer.Option(
            "--warm-pool",
            envvar="AUTONET_WARM_POOL",
            help="Network namespaces kept made ahead for new instances (0: none)",
        ),
    ] = 8,
    uid_range: Annotated[
        str,
        typer.Option(
            "--uid-range",
            envvar="AUTONET_UID_RANGE",
            help="Uids (and gids) leased to instances, one each: FIRST-LAST, none of them a user's",
        ),
    ] = "200000-299999",
    tls_cert: TlsCertOpt = None,
    tls_key: TlsKeyOpt = None,
    ca: DaemonCaOpt = None,
    insecure: Annotated[
        bool,
        typer.Option(
            "--insecure",
            help="Serve plaintext gRPC without --tls-cert/--tls-key/--ca on a non-loopback address:"
            " anyone who reaches it may call the agent (root on this host). Tests only",
        ),
    ] = False,
) -> None:
    """Run the per-host agent (gRPC server programming this host).

    With --tls-cert/--tls-key/--ca (this host's agent certificate, CN = --name) the gRPC
    port is mutual TLS and answers controller certificates only, and the agent presents
    the certificate to the controllers' https API, which takes this host's reports only
    from it; the files are loaded again when they change. Without them it serves
    plaintext on loopback only, unless --insecure."""
    import asyncio

    from autonet.agent.rpc.tls import is_loopback
    from autonet.agent.server import serve
    from autonet.agent.state import parse_uid_range

    if not underlay:
        fail("--underlay: required (this host's underlay address)")
    listen = listen or (f"[{underlay}]:7070" if ":" in underlay else f"{underlay}:7070")
    tls = tls_files(tls_cert, tls_key, ca)
    if tls is not None and insecure:
        fail("--insecure: not with --tls-cert/--tls-key/--ca")
    if tls is None and not insecure and not is_loopback(listen):
        fail(
            f"--listen {listen}: plaintext gRPC off loopback lets anyone on the network call the"
            " agent; give --tls-cert/--tls-key/--ca (or --insecure for a test)"
        )
    _logging(log_level)
    metrics = metrics or (f"[{underlay}]:9101" if ":" in underlay else f"{underlay}:9101")
    if log_max_bytes < 0:
        fail("--log-max-bytes: must be >= 0")
    if warm_pool < 0:
        fail("--warm-pool: must be >= 0")
    try:
        uids = parse_uid_range(uid_range)
    except ValueError as exc:
        fail(f"--uid-range: {exc}")
    asyncio.run(
        serve(
            name,
            cluster,
            listen,
            underlay,
            state_dir,
            controller,
            capacity,
            metrics,
            log_max_bytes,
            warm_pool,
            uids,
            tls,
        )
    )


@app.command()
def hollow(
    controller: Annotated[str, typer.Option("--controller", help="Controller API URL to register with")],
    hosts: Annotated[int, typer.Option("--hosts", min=1, help="How many hollow hosts this process runs")] = 1,
    first: Annotated[
        int, typer.Option("--first", min=0, help="Index of the first host (names, underlays)")
    ] = 0,
    cluster: Annotated[
        str, typer.Option("--cluster", help="Cluster name, part of the host tags")
    ] = "default",
    prefix: Annotated[
        str, typer.Option("--prefix", help="Host names: PREFIX0000, PREFIX0001 ...")
    ] = "hollow-",
    underlay: Annotated[str, typer.Option("--underlay", help="Made-up underlays: ipv4 or ipv6")] = "ipv4",
    status: Annotated[
        Path | None, typer.Option("--status", help="Write what every host holds here (JSON, every second)")
    ] = None,
    log_level: Annotated[str, typer.Option("--log-level")] = "warning",
) -> None:
    """Run hollow hosts: the real agent protocol with a no-op data plane (docs/performance.md)."""
    import asyncio

    from autonet.agent.hollow import make_hosts, run_fleet

    if underlay not in ("ipv4", "ipv6"):
        fail("--underlay: ipv4 or ipv6")
    _logging(log_level)
    asyncio.run(run_fleet(make_hosts(hosts, first, cluster, prefix, underlay), controller, status))


def main() -> None:
    try:
        app()
    except CliError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
