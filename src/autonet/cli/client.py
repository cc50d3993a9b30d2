"""The CLI's view of the API: where it is, and requests whose errors are one line.

The API is found from `--api` / AUTONET_API (`unix:/path`, `https://host:port` or
`http://host:port`, or several of them separated by commas), else from `--lab` /
AUTONET_LAB (a lab's name: all its controllers' sockets), else the default lab's.

Over TCP the API wants a bearer token: `--token` / AUTONET_TOKEN, else the lab's admin
token (`<lab dir>/admin.token`, minted at `lab up`); https endpoints are verified against
`--ca` / AUTONET_CA, else the lab's CA. The Unix socket needs no token (it is root's). With several endpoints a request that
cannot connect to one (refused, no socket, connect timeout) goes to the next; one that got
an answer, or broke after it was sent, is never sent again elsewhere.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import ssl
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from autonet.cli import paths

API = "/api/v1"


T = TypeVar("T")


def wait_until(probe: Callable[[], T], timeout: float, what: str, every: float = 0.1) -> T:
    """Poll `probe` until it returns something truthy (and return that); after `timeout`
    seconds fail with one line naming `what`. Waiting for a condition with a deadline,
    never a fixed sleep: a sleep is too short on a loaded machine and wasted elsewhere."""
    deadline = time.monotonic() + timeout
    while True:
        found = probe()
        if found:
            return found
        if time.monotonic() > deadline:
            raise CliError(f"timed out after {timeout:.0f}s waiting for {what} (last: {found!r})")
        time.sleep(every)


class CliError(Exception):
    """Printed as `error: <message>` with a non-zero exit status."""


class ApiError(CliError):
    """The API answered with an HTTP error: `status` is its code, `str()` its message."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def split_endpoints(address: str | Sequence[str]) -> list[str]:
    """API endpoints from `A,B,C` (or a list of them), in order, without blanks."""
    parts = address.split(",") if isinstance(address, str) else list(address)
    return [p.strip() for p in parts if p.strip()]


def api_address(api: str | None, lab: str | None) -> str:
    """Where the API is: `--api`, else AUTONET_API, else every controller socket of
    `--lab` / AUTONET_LAB / the default lab (comma-separated, the first controller's first)."""
    api = api or os.environ.get("AUTONET_API")
    if api:
        return api
    lab = lab or os.environ.get("AUTONET_LAB") or paths.DEFAULT_LAB
    return ",".join("unix:" + str(sock) for sock in paths.lab_api_sockets(lab))


@dataclass(frozen=True)
class Credentials:
    """What a client presents over TCP: a bearer token (or a client certificate), and
    the CA that verifies https."""

    token: str | None = None
    ca: str | None = None
    cert: str | None = None  # a client certificate and its key (a host's, for autonet-cni)
    key: str | None = None


def credentials(token: str | None, ca: str | None, lab: str | None) -> Credentials:
    """`--token` / AUTONET_TOKEN, `--ca` / AUTONET_CA; else the lab's own (its admin token
    and CA, when they are there and readable)."""
    lab = lab or os.environ.get("AUTONET_LAB") or paths.DEFAULT_LAB
    token = token or os.environ.get("AUTONET_TOKEN")
    if not token:
        with contextlib.suppress(OSError):
            token = paths.lab_token(lab).read_text().strip() or None
    ca = ca or os.environ.get("AUTONET_CA")
    if not ca and paths.lab_ca(lab).is_file():
        ca = str(paths.lab_ca(lab))
    return Credentials(token, ca)


# The only failures after which a request goes to the next endpoint: nothing was sent.
# Once a request has been sent (a read timed out, the connection broke, an HTTP answer
# came back), it may have been acted on, so it is reported, never repeated elsewhere.
FAILOVER_ERRORS = (httpx.ConnectError, httpx.ConnectTimeout)
CONNECT_TIMEOUT = 3.0
# A read (GET) that has other endpoints to try waits this long for an answer, then moves
# on: a paused controller's socket still takes connections, but nothing answers. Only
# reads: anything else that was sent may have been acted on.
READ_FAILOVER_TIMEOUT = 5.0
IDEMPOTENT = frozenset({"GET", "HEAD"})


def _connect_failure(exc: Exception) -> str:
    """Why an endpoint could not be reached, in a few words."""
    text = str(exc)
    for marker, why in (
        ("Connection refused", "connection refused"),
        ("No such file", "no socket"),
        ("timed out", "connect timed out"),
    ):
        if marker in text:
            return why
    return text or type(exc).__name__


class Client:
    """Requests to the API at one or several endpoints (`A,B,C`: every controller of a
    cluster). A request goes to the endpoint that answered last; when it cannot connect
    there (refused, no socket, connect timeout) it tries the next ones in turn. A read
    (GET) also moves on when the endpoint took the connection but sent no answer within
    `READ_FAILOVER_TIMEOUT` (a paused controller), unless it is the last one to try."""

    def __init__(
        self,
        address: str | Sequence[str],
        timeout: float = 30.0,
        connect_timeout: float = CONNECT_TIMEOUT,
        creds: Credentials | None = None,
    ) -> None:
        self.creds = creds or Credentials()
        self.endpoints = split_endpoints(address)
        if not self.endpoints:
            raise CliError("no API address given (--api, AUTONET_API or --lab)")
        self.timeout = httpx.Timeout(timeout, connect=min(connect_timeout, timeout))
        self.stream_timeout = httpx.Timeout(None, connect=connect_timeout)
        self.current = 0
        self._clients: dict[str, httpx.Client] = {}

    @property
    def address(self) -> str:
        """The endpoint in use: the one that answered last (else the first)."""
        return self.endpoints[self.current]

    @property
    def http(self) -> httpx.Client:
        """The HTTP client of the endpoint in use (no failover for what is sent through it)."""
        return self._http(self.address)

    def _http(self, address: str) -> httpx.Client:
        client = self._clients.get(address)
        if client is None:
            if address.startswith("unix:"):
                transport = httpx.HTTPTransport(uds=address.removeprefix("unix:"))
                client = httpx.Client(base_url="http://autonet", transport=transport, timeout=self.timeout)
            else:
                headers = {"Authorization": f"Bearer {self.creds.token}"} if self.creds.token else {}
                verify: ssl.SSLContext | bool = True
                if address.startswith("https:") and (self.creds.ca or self.creds.cert):
                    verify = ssl.create_default_context(cafile=self.creds.ca)
                    if self.creds.cert:
                        verify.load_cert_chain(self.creds.cert, self.creds.key)
                client = httpx.Client(
                    base_url=address.rstrip("/"), timeout=self.timeout, headers=headers, verify=verify
                )
            self._clients[address] = client
        return client

    def _attempts(self) -> Iterator[tuple[int, httpx.Client]]:
        """Each endpoint's client, starting at the one in use; a socket file that does not
        exist is passed over (as refused) without a try."""
        count = len(self.endpoints)
        for step in range(count):
            index = (self.current + step) % count
            address = self.endpoints[index]
            if address.startswith("unix:") and not os.path.exists(address.removeprefix("unix:")):
                continue
            yield index, self._http(address)

    def _failover(
        self, send: Callable[[httpx.Client, httpx.Timeout | None], T], idempotent: bool = False
    ) -> T:
        """`send` to the first endpoint that takes the connection, from the one in use on
        (`idempotent`: and answers in time, see the class). `send` gets the timeout to use
        (None: the client's own)."""
        failures: dict[int, str] = {}
        attempts = list(self._attempts())
        for step, (index, http) in enumerate(attempts):
            timeout = None
            if idempotent and step < len(attempts) - 1 and self.timeout.read is not None:
                read = min(self.timeout.read, READ_FAILOVER_TIMEOUT)
                timeout = httpx.Timeout(
                    connect=self.timeout.connect, read=read, write=self.timeout.write, pool=self.timeout.pool
                )
            try:
                result = send(http, timeout)
            except FAILOVER_ERRORS as exc:
                failures[index] = _connect_failure(exc)
                continue
            except httpx.ReadTimeout as exc:
                if timeout is None:
                    raise CliError(self._broke(index, exc)) from None
                failures[index] = f"no answer within {timeout.read:.0f}s"
                continue
            except httpx.HTTPError as exc:  # sent, then broke: never sent elsewhere
                raise CliError(self._broke(index, exc)) from None
            self.current = index
            return result
        raise CliError(self._nobody_answers(failures))

    def _broke(self, index: int, exc: httpx.HTTPError) -> str:
        """The endpoint that took the request and then failed, named (not the one in use)."""
        why = str(exc) or type(exc).__name__
        return f"cannot reach the API at {self.endpoints[index].removeprefix('unix:')}: {why}"

    def _nobody_answers(self, failures: dict[int, str]) -> str:
        named = [
            f"{address.removeprefix('unix:')} ({failures.get(index, 'no socket')})"
            for index, address in enumerate(self.endpoints)
        ]
        where = "at " + named[0] if len(named) == 1 else "at any of " + ", ".join(named)
        return f"no API answers {where}: is the lab up? (autonet lab up, or set --lab/--api)"

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        def send(http: httpx.Client, timeout: httpx.Timeout | None) -> httpx.Response:
            if timeout is None:
                return http.request(method, API + path, **kwargs)
            return http.request(method, API + path, timeout=timeout, **kwargs)

        try:
            reply = self._failover(send, idempotent=method.upper() in IDEMPOTENT and "timeout" not in kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {self.address}: {exc}") from None
        return self._decode(reply)

    @contextlib.contextmanager
    def _stream(self, method: str, path: str, **kwargs: Any) -> Iterator[httpx.Response]:
        """A streamed request, opened on the first endpoint that takes the connection."""
        with contextlib.ExitStack() as stack:

            def send(http: httpx.Client, _: httpx.Timeout | None) -> httpx.Response:
                return stack.enter_context(
                    http.stream(method, API + path, timeout=self.stream_timeout, **kwargs)
                )

            try:
                reply = self._failover(send)
                if reply.status_code >= 400:
                    reply.read()
                    self._decode(reply)
                yield reply
            except httpx.HTTPError as exc:
                raise CliError(f"cannot reach the API at {self.address}: {exc}") from None

    @staticmethod
    def _decode(reply: httpx.Response) -> Any:
        if reply.status_code >= 400:
            try:
                message = reply.json().get("error") or reply.json().get("detail")
            except ValueError:
                message = reply.text
            if isinstance(message, list):  # FastAPI's own request validation
                first = message[0]
                message = f"{'.'.join(str(p) for p in first.get('loc', [])[1:])}: {first.get('msg')}"
            raise ApiError(reply.status_code, str(message))
        if reply.headers.get("content-type", "").startswith("application/json"):
            return reply.json()
        return reply.text

    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        """A streamed NDJSON reply, one object a line as they come."""
        with self._stream(method, path, **kwargs) as reply:
            for line in reply.iter_lines():
                if line:
                    yield json.loads(line)

    def stream_bytes(self, method: str, path: str, **kwargs: Any) -> Iterator[bytes]:
        """A streamed reply's body as it comes (the API's errors raised as one line)."""
        with self._stream(method, path, **kwargs) as reply:
            yield from reply.iter_bytes()

    def exec(
        self, instance: str, command: list[str], timeout: float = 0.0, stdin: bytes = b""
    ) -> Iterator[tuple[str, bytes | int]]:
        """Run `command` in an instance (as the instance's own user): ("stdout" | "stderr",
        bytes) chunks as they come, then ("exit", code)."""
        body = {"command": command, "stdin": base64.b64encode(stdin).decode(), "timeout": timeout}
        for line in self.stream("POST", f"/instances/{instance}/exec", json=body):
            if "error" in line:
                raise CliError(line["error"])
            for key in ("stdout", "stderr"):
                if key in line:
                    yield key, base64.b64decode(line[key])
            if "exit" in line:
                yield "exit", int(line["exit"])

    def run(self, instance: str, command: list[str], timeout: float = 0.0) -> tuple[int, str]:
        """Run `command` in an instance to the end: (exit code, standard output)."""
        out, code = b"", 1
        for key, data in self.exec(instance, command, timeout):
            if key == "stdout":
                out += data  # type: ignore[operator]
            elif key == "exit":
                code = int(data)
        return code, out.decode()

    def objects(self, kind: str) -> list[dict[str, Any]]:
        result: list[dict[str, Any]] = self.request("GET", f"/objects/{kind}")
        return result

    def get(self, kind: str, name: str) -> dict[str, Any] | None:
        try:
            result: dict[str, Any] = self.request("GET", f"/objects/{kind}/{name}")
            return result
        except CliError as exc:
            if "not found" in str(exc):
                return None
            raise
