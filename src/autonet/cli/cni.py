"""autonet-cni: a CNI 1.0 plugin that attaches a runtime's container to an autonet network.

A container runtime (podman with its CNI backend, cnitool, containerd...) runs it with
`CNI_COMMAND` (ADD, DEL, CHECK, VERSION), `CNI_CONTAINERID`, `CNI_NETNS`, `CNI_IFNAME`
in the environment and the network's configuration on stdin:

    {"cniVersion": "1.0.0", "name": "shop", "type": "autonet-cni",
     "automaton": "edge",               # an automaton with spec.external: true
     "host": "h1",                      # this host's name in autonet (default: hostname)
     "api": "unix:/run/autonet/api.sock" or "lab": "NAME",   # where the API is
     # over HTTPS: "api": "https://ctl:7080", "ca": "/etc/autonet/pki/ca.pem", and the
     # host's certificate "cert": ".../agent.pem", "key": ".../agent-key.pem" (or an
     # admin token's "token_file")
     "timeout": 60}

ADD makes the container an instance of the automaton (POST .../attachments): autonet
leases its addresses, wires the namespace it was given (a veth to the VPC router, as for
any instance), applies composition security, services and DNS, and starts no process;
the plugin waits until the instance is Provisioned and prints the CNI result (interfaces,
IPs, routes, DNS). ADD again for the same container answers the same. DEL detaches it and
waits until it is gone; DEL of what is not attached succeeds (the runtime may repeat it).
CHECK compares the container's interface with what autonet holds and fails on drift.
Errors are CNI error objects on stdout (`code`, `msg`, `details`) with exit status 1.
"""

from __future__ import annotations

import dataclasses
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from typing import Any, NoReturn, TextIO

from autonet.cli.client import Client, CliError, api_address, credentials

CNI_VERSION = "1.0.0"
SUPPORTED_VERSIONS = ["0.4.0", "1.0.0"]
GATEWAY_V4 = "169.254.1.1"  # the router's link-local address on every instance veth
GATEWAY_V6 = "fe80::1"
IFNAME = "eth0"
DEFAULT_TIMEOUT = 60.0
POLL = 0.2

# CNI's well-known error codes (spec, "Error"); 100 and up are the plugin's own.
INCOMPATIBLE_VERSION = 1
UNKNOWN_CONTAINER = 3
INVALID_ENVIRONMENT = 4
DECODING_FAILURE = 6
INVALID_CONFIG = 7
TRY_AGAIN_LATER = 11
ATTACH_FAILED = 100
DRIFT = 101


class CniError(Exception):
    def __init__(self, code: int, msg: str, details: str = "") -> None:
        super().__init__(msg)
        self.code = code
        self.msg = msg
        self.details = details


@dataclass
class Request:
    command: str
    container_id: str
    netns: str
    ifname: str
    config: dict[str, Any]

    @property
    def version(self) -> str:
        return str(self.config.get("cniVersion") or CNI_VERSION)

    @property
    def automaton(self) -> str:
        name = self.config.get("automaton")
        if not isinstance(name, str) or not name:
            raise CniError(
                INVALID_CONFIG, 'network config: "automaton" (an external automaton\'s name) is required'
            )
        return name

    @property
    def host(self) -> str:
        return str(self.config.get("host") or os.uname().nodename)

    @property
    def timeout(self) -> float:
        try:
            return float(self.config.get("timeout", DEFAULT_TIMEOUT))
        except (TypeError, ValueError):
            raise CniError(INVALID_CONFIG, 'network config: "timeout" must be a number of seconds') from None


def read_request(environ: dict[str, str], stdin: TextIO) -> Request:
    command = environ.get("CNI_COMMAND", "")
    if command not in ("ADD", "DEL", "CHECK", "VERSION"):
        raise CniError(INVALID_ENVIRONMENT, f"CNI_COMMAND {command!r}: expected ADD, DEL, CHECK or VERSION")
    config: dict[str, Any] = {}
    if command != "VERSION":
        try:
            loaded = json.load(stdin)
        except json.JSONDecodeError as exc:
            raise CniError(DECODING_FAILURE, f"network config on stdin is not JSON: {exc}") from None
        if not isinstance(loaded, dict):
            raise CniError(DECODING_FAILURE, "network config on stdin must be a JSON object")
        config = loaded
        if str(config.get("cniVersion", CNI_VERSION)) not in SUPPORTED_VERSIONS:
            raise CniError(
                INCOMPATIBLE_VERSION,
                f"cniVersion {config.get('cniVersion')}: autonet-cni speaks {', '.join(SUPPORTED_VERSIONS)}",
            )
    request = Request(
        command=command,
        container_id=environ.get("CNI_CONTAINERID", ""),
        netns=environ.get("CNI_NETNS", ""),
        ifname=environ.get("CNI_IFNAME", ""),
        config=config,
    )
    if command in ("ADD", "CHECK", "DEL") and not request.container_id:
        raise CniError(INVALID_ENVIRONMENT, "CNI_CONTAINERID is required")
    if command in ("ADD", "CHECK"):
        if not request.netns:
            raise CniError(INVALID_ENVIRONMENT, "CNI_NETNS is required")
        if request.ifname != IFNAME:
            raise CniError(INVALID_ENVIRONMENT, f"CNI_IFNAME {request.ifname!r}: autonet-cni wires eth0 only")
    return request


def _path_key(config: dict[str, Any], key: str) -> str | None:
    value = config.get(key)
    if value is not None and (not isinstance(value, str) or not value.startswith("/")):
        raise CniError(INVALID_CONFIG, f"{key}: an absolute path, not {value!r}")
    return value


def client_for(request: Request) -> Client:
    """The API client the config names: a Unix socket, or the controller's HTTPS API with
    the host's own certificate (`cert`, `key`: its agent's) or an admin token read from
    `token_file` (a file only root reads: CNI configs are often world-readable), and the
    cluster CA from `ca`."""
    api = request.config.get("api")
    lab = request.config.get("lab")
    lab = lab if isinstance(lab, str) else None
    token_file, ca = _path_key(request.config, "token_file"), _path_key(request.config, "ca")
    cert, key = _path_key(request.config, "cert"), _path_key(request.config, "key")
    token = None
    if token_file:
        try:
            with open(token_file) as handle:
                token = handle.read().strip() or None
        except OSError as exc:
            raise CniError(INVALID_CONFIG, f"token_file {token_file}: {exc.strerror}") from None
    try:
        creds = dataclasses.replace(credentials(token, ca, lab), cert=cert, key=key)
        return Client(api_address(api if isinstance(api, str) else None, lab), creds=creds)
    except CliError as exc:
        raise CniError(INVALID_CONFIG, str(exc)) from None


def _path(request: Request) -> str:
    return f"/automatons/{request.automaton}/attachments"


def _instance(client: Client, request: Request) -> dict[str, Any] | None:
    try:
        found: dict[str, Any] = client.request("GET", f"{_path(request)}/{request.container_id}")
        return found
    except CliError as exc:
        if "is not attached" in str(exc):
            return None
        raise


def result(request: Request, inst: dict[str, Any]) -> dict[str, Any]:
    """The CNI result of an attached, provisioned instance."""
    status = inst["status"]
    ips: list[dict[str, Any]] = []
    routes: list[dict[str, str]] = []
    if status.get("ipv4"):
        ips.append({"address": f"{status['ipv4']}/32", "gateway": GATEWAY_V4, "interface": 0})
        routes.append({"dst": "0.0.0.0/0", "gw": GATEWAY_V4})
    if status.get("ipv6"):
        ips.append({"address": f"{status['ipv6']}/128", "gateway": GATEWAY_V6, "interface": 0})
        routes.append({"dst": "::/0", "gw": GATEWAY_V6})
    return {
        "cniVersion": request.version,
        "interfaces": [{"name": IFNAME, "mac": status.get("mac", ""), "sandbox": request.netns}],
        "ips": ips,
        "routes": routes,
        "dns": {"nameservers": [GATEWAY_V4], "search": [f"{status.get('vpc')}.autonet"]},
    }


def wait_provisioned(client: Client, request: Request, name: str) -> dict[str, Any]:
    deadline = time.monotonic() + request.timeout
    inst: dict[str, Any] | None = None
    while time.monotonic() < deadline:
        inst = _instance(client, request)
        if inst is None:
            raise CniError(ATTACH_FAILED, f"instance {name} went away while it was being attached")
        state = inst["status"].get("state")
        if state == "Provisioned":
            return inst
        if state == "Failed":
            raise CniError(ATTACH_FAILED, f"instance {name} failed: {inst['status'].get('reason')}")
        time.sleep(POLL)
    where = (inst or {}).get("status", {})
    raise CniError(
        TRY_AGAIN_LATER,
        f"instance {name} not provisioned within {request.timeout:.0f}s",
        f"state {where.get('state')}: {where.get('reason') or ''}".strip(": "),
    )


def add(request: Request) -> dict[str, Any]:
    client = client_for(request)
    body = {
        "container_id": request.container_id,
        "netns": request.netns,
        "host": request.host,
        "ifname": IFNAME,
    }
    inst = client.request("POST", _path(request), json=body)
    return result(request, wait_provisioned(client, request, inst["name"]))


def delete(request: Request) -> None:
    client = client_for(request)
    try:
        reply = client.request("DELETE", f"{_path(request)}/{request.container_id}")
    except CliError as exc:
        if "not found" in str(exc):  # the automaton is gone, and its attachments with it
            return
        raise
    if reply.get("instance") is None:
        return
    deadline = time.monotonic() + request.timeout
    while _instance(client, request) is not None:
        if time.monotonic() > deadline:
            raise CniError(
                TRY_AGAIN_LATER, f"instance {reply['instance']} not gone within {request.timeout:.0f}s"
            )
        time.sleep(POLL)


def interface_in(netns: str) -> dict[str, Any]:
    """The container's eth0 as `ip -j addr` sees it inside its namespace."""
    done = subprocess.run(
        ["nsenter", f"--net={netns}", "ip", "-j", "addr", "show", "dev", IFNAME],
        capture_output=True,
        text=True,
        timeout=10,
        check=False,
    )
    if done.returncode != 0:
        raise CniError(DRIFT, f"{IFNAME} is missing in {netns}", done.stderr.strip())
    links: list[dict[str, Any]] = json.loads(done.stdout or "[]")
    if not links:
        raise CniError(DRIFT, f"{IFNAME} is missing in {netns}")
    return links[0]


def check(request: Request) -> None:
    client = client_for(request)
    inst = _instance(client, request)
    if inst is None:
        raise CniError(
            UNKNOWN_CONTAINER, f"container {request.container_id} is not attached to {request.automaton}"
        )
    status = inst["status"]
    if status.get("state") != "Provisioned":
        raise CniError(
            DRIFT, f"instance {inst['name']} is {status.get('state')}: {status.get('reason') or ''}"
        )
    if inst["spec"]["attachment"]["netns"] != request.netns:
        raise CniError(DRIFT, f"instance {inst['name']} is attached to {inst['spec']['attachment']['netns']}")
    link = interface_in(request.netns)
    have = {a["local"] for a in link.get("addr_info", []) if a.get("scope") == "global"}
    want = {status[key] for key in ("ipv4", "ipv6") if status.get(key)}
    if want - have:
        raise CniError(DRIFT, f"{IFNAME} lacks {', '.join(sorted(want - have))}", f"has {sorted(have)}")
    if status.get("mac") and link.get("address") != status["mac"]:
        raise CniError(DRIFT, f"{IFNAME} has MAC {link.get('address')}, autonet gave {status['mac']}")
    if link.get("operstate") not in ("UP", "UNKNOWN"):
        raise CniError(DRIFT, f"{IFNAME} is {link.get('operstate')}")


def run(environ: dict[str, str], stdin: TextIO, stdout: TextIO) -> int:
    version = CNI_VERSION
    try:
        request = read_request(environ, stdin)
        version = request.version
        if request.command == "VERSION":
            json.dump({"cniVersion": CNI_VERSION, "supportedVersions": SUPPORTED_VERSIONS}, stdout)
        elif request.command == "ADD":
            json.dump(add(request), stdout)
        elif request.command == "DEL":
            delete(request)
        else:
            check(request)
        return 0
    except CniError as exc:
        error = {"cniVersion": version, "code": exc.code, "msg": exc.msg}
        if exc.details:
            error["details"] = exc.details
    except CliError as exc:  # the API's own one-line answer (refused, unknown, unreachable)
        error = {"cniVersion": version, "code": ATTACH_FAILED, "msg": str(exc)}
    json.dump(error, stdout)
    return 1


def main() -> NoReturn:
    sys.exit(run(dict(os.environ), sys.stdin, sys.stdout))


if __name__ == "__main__":
    main()
