"""The CLI's endpoint failover, over real sockets: a dead Unix socket, a missing one, and
live HTTP servers on loopback. A request moves on only when it could not connect; one that
got an HTTP answer (even an error) is never sent to another endpoint."""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from autonet.cli import client as client_module
from autonet.cli import paths
from autonet.cli.client import ApiError, Client, CliError, api_address


class Api:
    """A tiny HTTP server on 127.0.0.1 answering every request with `status` and a JSON
    body (`reply`, else one naming itself); it counts the requests it got."""

    def __init__(self, name: str, status: int = 200, reply: Any = None) -> None:
        self.name, self.status, self.reply, self.requests = name, status, reply, 0
        api = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                api.requests += 1
                length = int(self.headers.get("content-length") or 0)
                self.rfile.read(length)
                if self.path.endswith("/exec"):
                    body = b'{"stdout": "aGk="}\n{"exit": 0}\n'
                    content_type = "application/x-ndjson"
                else:
                    data = (
                        api.reply
                        if api.reply is not None
                        else {"server": api.name, "error": f"{api.name} says no"}
                    )
                    body = json.dumps(data).encode()
                    content_type = "application/json"
                self.send_response(api.status)
                self.send_header("content-type", content_type)
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = _answer

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def live() -> Iterator[Api]:
    api = Api("live")
    yield api
    api.close()


@pytest.fixture
def dead_socket(tmp_path: Path) -> Iterator[str]:
    """A Unix socket file nobody listens on (a killed controller leaves one): connect is refused."""
    path = tmp_path / "dead.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.close()
    yield f"unix:{path}"


@pytest.fixture
def mute_socket(tmp_path: Path) -> Iterator[str]:
    """A Unix socket that takes connections (the kernel's backlog) but never answers: a
    paused (SIGSTOP) controller."""
    path = tmp_path / "mute.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    sock.bind(str(path))
    sock.listen(16)
    yield f"unix:{path}"
    sock.close()


def test_a_dead_socket_fails_over_to_the_next_endpoint_and_stays_there(dead_socket: str, live: Api) -> None:
    client = Client(f"{dead_socket},{live.url}")
    assert client.request("GET", "/objects/hosts")["server"] == "live"
    assert client.address == live.url  # the next request goes straight there
    assert client.request("GET", "/objects/vpcs")["server"] == "live"
    assert live.requests == 2


def test_a_missing_socket_fails_over_too(tmp_path: Path, live: Api) -> None:
    client = Client([f"unix:{tmp_path / 'nobody.sock'}", live.url])
    assert client.request("POST", "/apply", json={"documents": []})["server"] == "live"


def test_streams_fail_over_before_they_start(dead_socket: str, live: Api) -> None:
    client = Client(f"{dead_socket},{live.url}")
    assert list(client.exec("web-0", ["true"])) == [("stdout", b"hi"), ("exit", 0)]


def test_a_read_moves_on_from_an_endpoint_that_does_not_answer(
    mute_socket: str, live: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "READ_FAILOVER_TIMEOUT", 0.3)
    client = Client(f"{mute_socket},{live.url}")
    began = time.monotonic()
    assert client.request("GET", "/objects/hosts")["server"] == "live"
    assert time.monotonic() - began < 2 and client.address == live.url


def test_a_write_to_an_endpoint_that_does_not_answer_is_not_sent_elsewhere(
    mute_socket: str, live: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It may have been taken (a paused controller resumes and acts on it)."""
    monkeypatch.setattr(client_module, "READ_FAILOVER_TIMEOUT", 0.3)
    client = Client(f"{mute_socket},{live.url}", timeout=0.6)
    with pytest.raises(CliError, match=r"cannot reach the API at .*mute\.sock"):
        client.request("POST", "/apply", json={"documents": []})
    assert live.requests == 0


def test_the_last_endpoint_to_try_gets_the_whole_timeout(
    mute_socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "READ_FAILOVER_TIMEOUT", 0.1)
    client = Client(mute_socket, timeout=0.8)
    began = time.monotonic()
    with pytest.raises(CliError, match="cannot reach the API"):
        client.request("GET", "/objects/hosts")
    assert time.monotonic() - began >= 0.7


def test_an_error_names_the_endpoint_that_failed_not_the_one_in_use(
    dead_socket: str, mute_socket: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(client_module, "READ_FAILOVER_TIMEOUT", 0.1)
    client = Client(f"{dead_socket},{mute_socket}", timeout=0.5)
    with pytest.raises(CliError, match=r"cannot reach the API at \S*mute\.sock: "):
        client.request("GET", "/objects/hosts")


def test_an_http_error_answer_is_not_sent_elsewhere(live: Api) -> None:
    refusing = Api("first", status=503)
    try:
        client = Client(f"{refusing.url},{live.url}")
        with pytest.raises(ApiError) as info:
            client.request("POST", "/apply", json={"documents": []})
        assert info.value.status == 503 and str(info.value) == "first says no"
        assert (refusing.requests, live.requests) == (1, 0)
    finally:
        refusing.close()


def test_when_all_are_down_one_line_names_each(dead_socket: str, tmp_path: Path) -> None:
    refused_tcp = Api("gone")
    url = refused_tcp.url
    refused_tcp.close()  # its port is closed now: connect is refused
    missing = tmp_path / "missing.sock"
    client = Client(f"{dead_socket},unix:{missing},{url}")
    with pytest.raises(CliError) as info:
        client.request("GET", "/objects/hosts")
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("no API answers at any of ")
    assert f"{dead_socket.removeprefix('unix:')} (connection refused)" in message
    assert f"{missing} (no socket)" in message
    assert f"{url} (connection refused)" in message


def test_one_endpoint_down_says_so(tmp_path: Path) -> None:
    with pytest.raises(CliError, match=r"^no API answers at .*nobody.sock \(no socket\): is the lab up"):
        Client(f"unix:{tmp_path / 'nobody.sock'}").request("GET", "/objects/hosts")


def test_a_lab_means_all_its_controllers_sockets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUTONET_RUN_DIR", str(tmp_path))
    monkeypatch.delenv("AUTONET_API", raising=False)
    lab = paths.lab_dir("two")
    assert api_address(None, "two") == f"unix:{lab / 'api.sock'}"  # not up: c1's socket
    lab.mkdir(parents=True)
    (lab / paths.LAB_FILE).write_text(json.dumps({"name": "two", "controllers": 3}))
    assert api_address(None, "two").split(",") == [
        f"unix:{lab / 'api.sock'}",
        f"unix:{lab / 'api-c2.sock'}",
        f"unix:{lab / 'api-c3.sock'}",
    ]
    monkeypatch.setenv("AUTONET_API", "unix:/a.sock, http://127.0.0.1:1")
    assert Client(api_address(None, "two")).endpoints == ["unix:/a.sock", "http://127.0.0.1:1"]
