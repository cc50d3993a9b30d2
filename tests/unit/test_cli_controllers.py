"""`autonet get controllers` over the membership contract (GET /api/v1/controllers), and
over a controller that has no membership (404): one clear line, exit status 0."""

from __future__ import annotations

import json
from collections.abc import Iterator

import pytest
from typer.testing import CliRunner

from autonet.cli.main import app
from tests.unit.test_cli_client import Api

MEMBERS = [
    {
        "id": "c1",
        "endpoints": ["http://100.64.0.1:7080", "unix:/run/autonet/labs/x/api.sock"],
        "state": "acting",
        "shards": [{"shard": "vpc/blue", "epoch": 7}, {"shard": "vpc/red", "epoch": 2}],
        "lease_left_s": 2.345,
    },
    {
        "id": "c2",
        "endpoints": ["http://100.64.0.2:7080"],
        "state": "stopped",
        "shards": [],
        "lease_left_s": 0,
    },
]


@pytest.fixture
def members() -> Iterator[Api]:
    api = Api("members", reply=MEMBERS)
    yield api
    api.close()


def run(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(app, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_the_table_names_each_member(members: Api) -> None:
    code, out, _ = run("--api", members.url, "get", "controllers")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATE", "ENDPOINT", "SHARDS", "LEASE", "LEFT"]
    assert lines[1].split() == [
        "c1",
        "acting",
        "http://100.64.0.1:7080",
        "(+1)",
        "vpc/blue@7,vpc/red@2",
        "2.3s",
    ]
    assert lines[2].split() == ["c2", "stopped", "http://100.64.0.2:7080", "-", "0.0s"]


def test_json_is_the_list_and_one_member_can_be_asked_for(members: Api) -> None:
    code, out, _ = run("--api", members.url, "get", "controllers", "-o", "json")
    assert code == 0 and json.loads(out) == MEMBERS
    code, out, _ = run("--api", members.url, "get", "controller", "c2", "-o", "json")
    assert code == 0 and json.loads(out) == MEMBERS[1]


def test_a_controller_without_membership_says_it_runs_alone() -> None:
    alone = Api("alone", status=404, reply={"detail": "Not Found"})
    try:
        code, out, _ = run("--api", alone.url, "get", "controllers")
        assert code == 0
        assert out == f"this controller runs alone (no membership): {alone.url} has no /api/v1/controllers\n"
        code, out, err = run("--api", alone.url, "get", "controllers", "-o", "json")
        assert code == 0 and json.loads(out) == [] and "runs alone" in err
    finally:
        alone.close()
