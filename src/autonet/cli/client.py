"""The CLI's view of the API: where it is, and requests whose errors are one line.

The API is found from `--api` / AUTONET_API (`unix:/path` or `http://host:port`), else
from `--lab` / AUTONET_LAB (a lab's name), else the default lab's socket.
"""

from __future__ import annotations

import base64
import json
import os
import time
from collections.abc import Callable, Iterator
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


def api_address(api: str | None, lab: str | None) -> str:
    api = api or os.environ.get("AUTONET_API")
    if api:
        return api
    lab = lab or os.environ.get("AUTONET_LAB") or paths.DEFAULT_LAB
    return "unix:" + str(paths.lab_dir(lab) / "api.sock")


class Client:
    def __init__(self, address: str, timeout: float = 30.0) -> None:
        self.address = address
        if address.startswith("unix:"):
            path = address.removeprefix("unix:")
            if not os.path.exists(path):
                raise CliError(f"no API at {path}: is the lab up? (autonet lab up, or set --lab/--api)")
            transport = httpx.HTTPTransport(uds=path)
            self.http = httpx.Client(base_url="http://autonet", transport=transport, timeout=timeout)
        else:
            self.http = httpx.Client(base_url=address.rstrip("/"), timeout=timeout)

    def request(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            reply = self.http.request(method, API + path, **kwargs)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {self.address}: {exc}") from None
        return self._decode(reply)

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
            raise CliError(str(message))
        if reply.headers.get("content-type", "").startswith("application/json"):
            return reply.json()
        return reply.text

    def stream(self, method: str, path: str, **kwargs: Any) -> Iterator[dict[str, Any]]:
        try:
            with self.http.stream(method, API + path, timeout=None, **kwargs) as reply:
                if reply.status_code >= 400:
                    reply.read()
                    self._decode(reply)
                for line in reply.iter_lines():
                    if line:
                        yield json.loads(line)
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {self.address}: {exc}") from None

    def stream_bytes(self, method: str, path: str, **kwargs: Any) -> Iterator[bytes]:
        """A streamed reply's body as it comes (the API's errors raised as one line)."""
        try:
            with self.http.stream(method, API + path, timeout=None, **kwargs) as reply:
                if reply.status_code >= 400:
                    reply.read()
                    self._decode(reply)
                yield from reply.iter_bytes()
        except httpx.HTTPError as exc:
            raise CliError(f"cannot reach the API at {self.address}: {exc}") from None

    def exec(
        self, instance: str, command: list[str], user: str = "", timeout: float = 0.0, stdin: bytes = b""
    ) -> Iterator[tuple[str, bytes | int]]:
        """Run `command` in an instance: ("stdout" | "stderr", bytes) chunks as they come,
        then ("exit", code)."""
        body = {
            "command": command,
            "stdin": base64.b64encode(stdin).decode(),
            "user": user,
            "timeout": timeout,
        }
        for line in self.stream("POST", f"/instances/{instance}/exec", json=body):
            if "error" in line:
                raise CliError(line["error"])
            for key in ("stdout", "stderr"):
                if key in line:
                    yield key, base64.b64decode(line[key])
            if "exit" in line:
                yield "exit", int(line["exit"])

    def run(self, instance: str, command: list[str], user: str = "", timeout: float = 0.0) -> tuple[int, str]:
        """Run `command` in an instance to the end: (exit code, standard output)."""
        out, code = b"", 1
        for key, data in self.exec(instance, command, user, timeout):
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
