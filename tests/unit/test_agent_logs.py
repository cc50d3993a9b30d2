"""Instance logs: copytruncate rotation under a cap, tail by lines, follow across rotations."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from autonet.agent import logs, server
from autonet.agent.host import HostAgent
from autonet.agent.rpc import agent_pb2 as pb
from autonet.agent.server import AgentServicer
from autonet.agent.state import InstanceRecord


class Writer:
    """An instance process's view of its log: a file opened O_APPEND, never reopened."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        self.next = 0

    def lines(self, count: int) -> None:
        data = b"".join(b"line %d\n" % (self.next + i) for i in range(count))
        self.next += count
        os.write(self.fd, data)

    def raw(self, data: bytes) -> None:
        os.write(self.fd, data)

    def close(self) -> None:
        os.close(self.fd)


def numbers(data: bytes) -> list[int]:
    return [int(line.split()[1]) for line in data.decode().splitlines()]


def test_rotation_keeps_the_log_under_the_cap_and_the_newest_lines(tmp_path: Path) -> None:
    path = tmp_path / "web-0.log"
    writer = Writer(path)
    cap = 4096
    for _ in range(50):
        writer.lines(100)  # ~1 KiB per batch: a rotation every few batches
        logs.rotate_if_larger(path, cap)
        assert path.stat().st_size <= cap
    assert logs.rotated(path).stat().st_size <= cap + 1200
    writer.lines(3)  # the writer goes on at the new end, not at its old offset
    assert path.stat().st_size <= cap
    assert path.read_bytes().startswith(b"line ")
    assert numbers(logs.tail(path, 5)) == list(range(writer.next - 5, writer.next))
    kept = numbers(logs.rotated(path).read_bytes() + path.read_bytes())
    assert kept == list(range(kept[0], writer.next))  # consecutive: nothing lost or repeated
    assert sorted(os.listdir(tmp_path)) == ["web-0.log", "web-0.log.1"]
    writer.close()


def test_no_rotation_under_the_cap_or_with_cap_zero(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    Writer(path).lines(10)
    assert not logs.rotate_if_larger(path, 1 << 20)
    assert not logs.rotate_if_larger(path, 0)
    assert not logs.rotate_if_larger(tmp_path / "missing.log", 1)
    assert not logs.rotated(path).exists()


def test_tail_counts_lines_and_reaches_into_the_rotated_file(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    writer = Writer(path)
    writer.lines(10)
    writer.raw(b"line 10 begun")
    logs.rotate_if_larger(path, 1)
    writer.raw(b" and ended\n")
    writer.lines(0)
    writer.raw(b"line 11\nline 12")  # a last line without its newline is a line
    assert logs.tail(path, 1) == b"line 12"
    assert logs.tail(path, 3) == b"line 10 begun and ended\nline 11\nline 12"
    assert logs.tail(path, 5) == b"line 8\nline 9\nline 10 begun and ended\nline 11\nline 12"
    everything = logs.tail(path, 0)
    assert everything.startswith(b"line 0\n") and everything.endswith(b"line 12")
    assert logs.tail(path, 1000) == everything
    assert logs.tail(tmp_path / "missing.log", 5) == b""


def test_tail_limit_cuts_at_a_line_start(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    Writer(path).lines(1000)
    data = logs.tail(path, 0, limit=100)
    assert len(data) <= 100
    assert data.startswith(b"line ") and data.endswith(b"line 999\n")


def test_follower_reads_across_rotations_without_loss_or_repeats(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    writer = Writer(path)
    writer.lines(5)
    follower = logs.Follower(path)
    seen = b""
    for step in range(40):
        writer.lines(7)
        if step % 3 == 0:
            logs.rotate_if_larger(path, 64)
            writer.lines(2)
        seen += follower.read(1 << 20)
    assert numbers(seen) == list(range(5, writer.next))
    follower.close()


def test_a_follower_left_behind_by_two_rotations_goes_on_in_order(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    writer = Writer(path)
    follower = logs.Follower(path)
    writer.lines(20)
    assert len(follower.read(30)) == 30
    for _ in range(2):  # the first rotation's file is gone before the follower reads it
        writer.lines(20)
        logs.rotate_if_larger(path, 64)
    writer.lines(5)
    rest = b""
    while chunk := follower.read(1 << 20):
        rest += chunk
    assert numbers(rest) == list(range(40, writer.next))  # lines 0-39 went with the first .1
    follower.close()


def test_follower_in_small_reads_with_rotations_between_them(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    writer = Writer(path)
    follower = logs.Follower(path)
    seen = b""
    for _ in range(30):
        writer.lines(20)
        seen += follower.read(50)  # part of the rotated file is still unread ...
        logs.rotate_if_larger(path, 100)  # ... when the next rotation replaces it
        seen += follower.read(50)
    while chunk := follower.read(50):
        seen += chunk
    assert numbers(seen) == list(range(writer.next))
    follower.close()


def agent_with_instance(tmp_path: Path, cap: int = 1024) -> tuple[HostAgent, InstanceRecord]:
    agent = HostAgent("h1", "test", tmp_path, log_max_bytes=cap)
    endpoint = {
        "netns": "anitest1",
        "router_netns": "anrtest1",
        "router_ifname": "i1",
        "mac": "02:00:00:00:00:01",
        "router_mac": "02:00:00:00:00:02",
    }
    record = InstanceRecord(uid="u1", name="web-0", endpoint=endpoint)
    agent.table.save(record)
    return agent, record


async def test_logs_rpc_gives_the_newest_lines_after_rotation(tmp_path: Path) -> None:
    agent, record = agent_with_instance(tmp_path)
    writer = Writer(agent.log_path(record.name))
    for _ in range(20):
        writer.lines(50)
        agent.rotate_logs()
    assert agent.log_path(record.name).stat().st_size <= 1024
    servicer = AgentServicer(agent)
    reply = await servicer.Logs(pb.LogsRequest(instance_uid="u1", tail_lines=5), None)
    assert numbers(reply.data) == list(range(writer.next - 5, writer.next))
    # More lines than the current file holds: the rotated file makes up the rest.
    current = len(agent.log_path(record.name).read_bytes().splitlines())
    reply = await servicer.Logs(pb.LogsRequest(instance_uid="u1", tail_lines=current + 10), None)
    assert numbers(reply.data) == list(range(writer.next - current - 10, writer.next))
    writer.close()


async def test_follow_logs_streams_new_output_across_rotation_until_deleted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "FOLLOW_POLL", 0.01)
    agent, record = agent_with_instance(tmp_path, cap=200)
    writer = Writer(agent.log_path(record.name))
    writer.lines(10)
    stream: Any = AgentServicer(agent).FollowLogs(
        pb.LogsRequest(instance_uid="u1", tail_lines=2, follow=True), None
    )
    seen = (await anext(stream)).data
    assert numbers(seen) == [8, 9]
    for _ in range(10):
        writer.lines(30)
        agent.rotate_logs()
        seen += (await anext(stream)).data
    agent.table.remove("u1")
    async for reply in stream:  # ends once the instance is gone
        seen += reply.data
    assert numbers(seen) == list(range(8, writer.next))
    writer.close()


async def test_logs_without_follow_end_after_the_tail(tmp_path: Path) -> None:
    agent, record = agent_with_instance(tmp_path)
    Writer(agent.log_path(record.name)).lines(3)
    replies = [r.data async for r in AgentServicer(agent).FollowLogs(pb.LogsRequest(instance_uid="u1"), None)]
    assert b"".join(replies) == b"line 0\nline 1\nline 2\n"


def test_logs_of_instances_the_table_does_not_hold_are_removed(tmp_path: Path) -> None:
    agent, record = agent_with_instance(tmp_path)
    keep = agent.log_path(record.name)
    Writer(keep).lines(1)
    logs.rotated(keep).write_bytes(b"old\n")
    gone = agent.log_path("web-9")
    Writer(gone).lines(1)
    logs.rotated(gone).write_bytes(b"old\n")
    assert agent._remove_stray_logs() == 2
    assert sorted(os.listdir(keep.parent)) == ["web-0.log", "web-0.log.1"]
