"""The agent's files on disk: atomic writes, and torn or foreign files that must not stop it."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest

from autonet.agent.host import HostAgent
from autonet.agent.state import InstanceRecord, InstanceTable, write_atomically


def record(uid: str, name: str) -> InstanceRecord:
    endpoint = {
        "netns": f"anitest{uid}",
        "router_netns": "anrtest1",
        "router_ifname": f"i{uid}",
        "mac": "02:00:00:00:00:01",
        "router_mac": "02:00:00:00:00:02",
    }
    return InstanceRecord(uid=uid, name=name, endpoint=endpoint, process={"command": ["sleep", "9"]})


def test_write_atomically_replaces_and_leaves_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "file.json"
    write_atomically(path, b"one")
    write_atomically(path, b"two")
    assert path.read_bytes() == b"two"
    assert os.listdir(path.parent) == ["file.json"]


def test_a_write_that_fails_midway_keeps_the_old_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "file.json"
    write_atomically(path, b"good")

    def crash(src: object, dst: object) -> None:
        raise OSError("simulated crash before the rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated"):
        write_atomically(path, b"new data that never lands")
    assert path.read_bytes() == b"good"
    assert os.listdir(tmp_path) == ["file.json"]


def test_a_temporary_left_by_a_crash_is_ignored_and_cleaned(tmp_path: Path) -> None:
    table = InstanceTable(tmp_path)
    table.save(record("u1", "web-0"))
    (table.dir / ".u2.json.x1y2.tmp").write_bytes(b'{"uid": "u2", "na')
    again = InstanceTable(tmp_path)
    assert set(again.records) == {"u1"}
    assert sorted(os.listdir(table.dir)) == ["u1.json"]


@pytest.mark.parametrize(
    "contents",
    [
        b'{"uid": "u2", "name": "web-1", "endpo',  # torn
        b"\xff\xfe not even text",
        b"[1, 2]",
        b'{"uid": "u2", "name": "web-1"}',  # no endpoint
        b'{"uid": "u2", "name": "web-1", "endpoint": {"netns": "x"}}',  # endpoint lacks keys
        b'{"uid": "u2", "name": "web-1", "endpoint": {}, "colour": "red"}',  # unknown field
        b'{"uid": "other", "name": "web-1", "endpoint": {}}',  # not the file's instance
    ],
)
def test_an_unreadable_instance_file_is_set_aside_and_the_others_load(
    tmp_path: Path, contents: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    table = InstanceTable(tmp_path)
    table.save(record("u1", "web-0"))
    table.save(record("u3", "web-2"))
    (table.dir / "u2.json").write_bytes(contents)
    with caplog.at_level(logging.WARNING):
        again = InstanceTable(tmp_path)
    assert set(again.records) == {"u1", "u3"}
    assert again.records["u1"] == record("u1", "web-0")
    assert (table.dir / "u2.json.corrupt").read_bytes() == contents
    assert not (table.dir / "u2.json").exists()
    assert any("u2.json" in message for message in caplog.messages)


def test_removed_instances_stay_removed(tmp_path: Path) -> None:
    table = InstanceTable(tmp_path)
    table.save(record("u1", "web-0"))
    table.remove("u1")
    assert InstanceTable(tmp_path).records == {}


def test_an_unreadable_overlay_file_counts_as_absent(tmp_path: Path) -> None:
    agent = HostAgent("h1", "test", tmp_path)
    assert agent.saved_vpc("anrtest1") is None
    path = agent.overlay_path("anrtest1")
    path.parent.mkdir(parents=True)
    for bad in (b'{"vni": 7, "vxlan', b"\x00\x01", b"[]", b'{"vni": 7}'):
        path.write_bytes(bad)
        assert agent.saved_vpc("anrtest1") is None
    good = {"vxlan_ifname": "vx", "vni": 7, "local": {}, "mtu": 1450, "rules": []}
    path.write_text(json.dumps(good))
    assert agent.saved_vpc("anrtest1") == good
