"""Instance isolation, the logic: uid leases (lease, free, reuse, persist), the
automaton's `user` and `resources`, cgroup placement and limits against a temporary
tree standing in for /sys/fs/cgroup, lab hosts' uid blocks, and Exec's refusal of a
caller-chosen user."""

from __future__ import annotations

import asyncio
import itertools
import pwd
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest

from autonet.agent.hollow import HollowHost, HollowServicer
from autonet.agent.rpc import agent_pb2 as pb
from autonet.agent.server import AgentServicer
from autonet.agent.state import InstanceRecord, InstanceTable, UidsExhausted, parse_uid_range
from autonet.dataplane import cgroups
from autonet.dataplane.nsexec import launcher_argv
from autonet.model import naming
from autonet.model.errors import ValidationError
from autonet.model.kinds import KindRegistry, builtin_kinds
from tests.unit.test_agent_state import record as named_record
from tests.unit.test_api import API, client  # noqa: F401  (client: the API in-process)


# -- uid leases ------------------------------------------------------------------------------
def record(uid: str) -> InstanceRecord:
    return named_record(uid, f"web-{uid}")


def test_uids_are_leased_lowest_first_freed_with_the_instance_and_reused(tmp_path: Path) -> None:
    table = InstanceTable(tmp_path, (300_000, 300_009))
    leased = []
    for uid in ("a", "b", "c"):
        rec = record(uid)
        leased.append(table.lease_uid(rec))
        table.save(rec)
    assert leased == [300_000, 300_001, 300_002]
    table.remove("b")  # scale-in: its uid is free again
    again = record("d")
    assert table.lease_uid(again) == 300_001
    table.save(again)
    # Leasing is idempotent: a record keeps its uid.
    assert table.lease_uid(table.records["a"]) == 300_000


def test_a_restarted_agent_keeps_every_instance_on_its_uid(tmp_path: Path) -> None:
    table = InstanceTable(tmp_path, (300_000, 300_009))
    for uid in ("a", "b"):
        rec = record(uid)
        table.lease_uid(rec)
        table.save(rec)
    reread = InstanceTable(tmp_path, (300_000, 300_009))
    assert {r.uid: r.process_uid for r in reread.records.values()} == {"a": 300_000, "b": 300_001}
    fresh = record("c")
    assert reread.lease_uid(fresh) == 300_002


def test_a_full_range_refuses_and_a_user_of_the_machine_is_never_leased(tmp_path: Path) -> None:
    nobody = pwd.getpwnam("nobody").pw_uid  # in /etc/passwd: never leased, so this range is full
    table = InstanceTable(tmp_path, (nobody, nobody))
    with pytest.raises(UidsExhausted, match=f"no free uid in {nobody}-{nobody}"):
        table.lease_uid(record("a"))
    small = InstanceTable(tmp_path / "two", (300_000, 300_000))
    first = record("a")
    small.lease_uid(first)
    small.save(first)
    with pytest.raises(UidsExhausted):
        small.lease_uid(record("b"))


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("200000-299999", None),
        ("5-10", "1000 <= FIRST"),
        ("300-200", "1000 <= FIRST"),
        ("200000", "expected FIRST-LAST"),
        ("a-b", "expected FIRST-LAST"),
        ("2000-4294967295", "< 2147483647"),
    ],
)
def test_uid_ranges_are_checked(text: str, error: str | None) -> None:
    if error is None:
        assert parse_uid_range(text) == (200_000, 299_999)
    else:
        with pytest.raises(ValueError, match=error):
            parse_uid_range(text)


def test_lab_hosts_lease_from_disjoint_blocks_below_2_to_the_31() -> None:
    tags = {naming.host_tag(lab, host) for lab in ("a", "b", "demo") for host in ("h1", "h2", "h3")}
    blocks = sorted(naming.lab_uid_range(tag) for tag in tags)
    assert all(last - first == 999 for first, last in blocks)
    assert all(prev[1] < nxt[0] for prev, nxt in itertools.pairwise(blocks))
    assert naming.lab_uid_range("zzzz")[1] < 2**31 - 1
    assert naming.lab_uid_range("0000")[0] > 299_999  # above the default range of `autonet agent`


# -- the automaton's user and resources ---------------------------------------------------------
def automaton(**extra: Any) -> dict[str, Any]:
    return KindRegistry(builtin_kinds())["Automaton"].validate_spec(
        "web", {"network": "n", "command": ["sleep", "9"], **extra}
    )


def test_user_is_the_instances_own_unless_root_is_asked() -> None:
    assert "user" not in automaton()
    assert automaton(user="root")["user"] == "root"
    for other in ("nobody", "www-data", "0"):
        with pytest.raises(ValidationError) as err:
            automaton(user=other)
        assert str(err.value).startswith('Automaton "web": spec.user: ')
        assert 'only "root" may be named' in str(err.value)


def test_resources_are_validated() -> None:
    assert automaton(resources={"memory_mb": 32, "pids": 10, "cpu": 0.5})["resources"] == {
        "memory_mb": 32,
        "pids": 10,
        "cpu": 0.5,
    }
    bad = [
        ({"memory_mb": 4}, "spec.resources.memory_mb: Input should be greater than or equal to 8"),
        ({"pids": 0}, "spec.resources.pids: Input should be greater than or equal to 1"),
        ({"cpu": 0.001}, "spec.resources.cpu: Input should be greater than or equal to 0.01"),
        (
            {"cpu": "lots"},
            "spec.resources.cpu: Input should be a valid number, unable to parse string as a number",
        ),
        ({"disk_mb": 9}, "spec.resources.disk_mb: unknown field"),
    ]
    for resources, message in bad:
        with pytest.raises(ValidationError) as err:
            automaton(resources=resources)
        assert str(err.value) == f'Automaton "web": {message}'


# -- cgroups, against a temporary tree ------------------------------------------------------------
def v1_tree(base: Path, controllers: tuple[str, ...] = cgroups.CONTROLLERS) -> Path:
    for controller in controllers:
        (base / controller).mkdir(parents=True)
        (base / controller / "cgroup.procs").write_text("")
    (base / "unified").mkdir()
    (base / "unified" / "cgroup.controllers").write_text("")  # hybrid: v2 with no controller
    return base


def test_a_hybrid_host_uses_its_v1_controllers(tmp_path: Path) -> None:
    hierarchy = cgroups.detect(v1_tree(tmp_path))
    assert hierarchy.controllers == {c: (1, tmp_path / c) for c in cgroups.CONTROLLERS}
    group = cgroups.Group(hierarchy, "t1ab", "anit1abxyz")
    dirs = group.create(cgroups.Limits(memory_mb=32, pids=20, cpu=0.5))
    assert dirs == [tmp_path / c / "autonet" / "t1ab" / "anit1abxyz" for c in cgroups.CONTROLLERS]
    memory, pids, cpu = dirs
    assert (memory / "memory.limit_in_bytes").read_text() == str(32 * 1024 * 1024)
    assert (pids / "pids.max").read_text() == "20"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "50000"
    assert (cpu / "cpu.cfs_period_us").read_text() == "100000"
    # No limits: every one lifted (a changed automaton reuses the group).
    group.create(cgroups.Limits())
    assert (memory / "memory.limit_in_bytes").read_text() == "-1"
    assert (pids / "pids.max").read_text() == "max"
    assert (cpu / "cpu.cfs_quota_us").read_text() == "-1"
    (memory / "memory.oom_control").write_text("oom_kill_disable 0\nunder_oom 0\noom_kill 2\n")
    assert group.oom_kills() == 2


def test_a_v2_host_delegates_the_controllers_down_to_the_group(tmp_path: Path) -> None:
    (tmp_path / "cgroup.controllers").write_text("cpuset cpu io memory hugetlb pids rdma\n")
    hierarchy = cgroups.detect(tmp_path)
    assert hierarchy.controllers == {c: (2, tmp_path) for c in cgroups.CONTROLLERS}
    group = cgroups.Group(hierarchy, "t1ab", "anit1abxyz")
    (path,) = group.create(cgroups.Limits(memory_mb=64, pids=5, cpu=1.5))
    assert path == tmp_path / "autonet" / "t1ab" / "anit1abxyz"
    assert (path / "memory.max").read_text() == str(64 * 1024 * 1024)
    assert (path / "pids.max").read_text() == "5"
    assert (path / "cpu.max").read_text() == "150000 100000"
    for parent in (tmp_path, tmp_path / "autonet", tmp_path / "autonet" / "t1ab"):
        assert (parent / "cgroup.subtree_control").exists()
    (path / "memory.events").write_text("low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n")
    assert group.oom_kills() == 1


def test_a_limit_whose_controller_is_missing_is_refused_not_ignored(tmp_path: Path) -> None:
    hierarchy = cgroups.detect(v1_tree(tmp_path, ("memory",)))
    group = cgroups.Group(hierarchy, "t1ab", "anit1abxyz")
    with pytest.raises(cgroups.CgroupError, match="this host has no cgroup controller pids, cpu"):
        group.create(cgroups.Limits(memory_mb=32, pids=5, cpu=1))
    assert not group.exists()  # nothing made
    group.create(cgroups.Limits(memory_mb=32))  # control: what the host has works
    assert group.exists()


def test_a_host_removes_only_its_own_groups(tmp_path: Path) -> None:
    hierarchy = cgroups.detect(v1_tree(tmp_path))
    for tag, name in (("t1ab", "anit1ab1"), ("t1ab", "anit1ab2"), ("t2cd", "anit2cd1")):
        cgroups.Group(hierarchy, tag, name).create(cgroups.Limits(pids=9))
    assert cgroups.groups_of_host(hierarchy, "t1ab") == {"anit1ab1", "anit1ab2"}
    assert cgroups.remove_host(hierarchy, "t1ab") == 2
    assert cgroups.groups_of_host(hierarchy, "t1ab") == set()
    assert not (tmp_path / "pids" / "autonet" / "t1ab").exists()
    assert cgroups.groups_of_host(hierarchy, "t2cd") == {"anit2cd1"}  # another host's stay
    assert (tmp_path / "pids" / "autonet").is_dir()


def test_the_launcher_joins_every_cgroup_given() -> None:
    argv = launcher_argv("anitest", ["sleep", "1"], "300000", "/r.conf", ["/cg/memory/x", "/cg/pids/x"])
    assert argv[4:] == [
        "--netns", "anitest", "--user", "300000", "--resolv-conf", "/r.conf",
        "--cgroup", "/cg/memory/x", "--cgroup", "/cg/pids/x", "--cwd", "/", "--", "sleep", "1",
    ]  # fmt: skip


# -- exec: never as a user the caller chooses -----------------------------------------------------
class Aborted(Exception):
    pass


class Context:
    def __init__(self) -> None:
        self.code: grpc.StatusCode | None = None
        self.details = ""

    async def abort(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        raise Aborted(details)


def test_exec_refuses_a_caller_chosen_user_before_anything_runs() -> None:
    servicer = AgentServicer(agent=None)  # type: ignore[arg-type]  # refused before the agent is asked

    async def call(request: pb.ExecRequest) -> Context:
        context = Context()
        with pytest.raises(Aborted):
            async for _ in servicer.Exec(request, context):
                pass
        return context

    context = asyncio.run(call(pb.ExecRequest(instance_uid="i1", command=["id"], user="root")))
    assert context.code == grpc.StatusCode.INVALID_ARGUMENT
    assert context.details == "exec runs as the instance's own user: `user` is refused"


def test_hollow_hosts_lease_uids_as_the_agent_does() -> None:
    host = HollowHost("h", "t1ab", "100.127.0.1")
    servicer = HollowServicer(host)
    context = Context()

    async def wire(uid: str) -> int:
        endpoint = pb.Endpoint(
            instance_uid=uid, instance_name=uid, router_netns="anrt1ab1", netns=f"ani{uid}"
        )
        return (await servicer.EnsureEndpoint(endpoint, context)).process_uid

    async def scenario() -> list[int]:
        first = [await wire(u) for u in ("a", "b", "c")]
        await servicer.DeleteInstance(pb.InstanceRef(instance_uid="b"), context)
        process = pb.Process(instance_uid="a", command=["x"], user="root", resources=pb.Resources(pids=5))
        assert (await servicer.EnsureProcess(process, context)).process_uid == 0  # root: uid 0
        return [*first, await wire("d")]

    assert asyncio.run(scenario()) == [200_000, 200_001, 200_002, 200_001]


async def test_the_api_takes_no_user_for_exec(client: httpx.AsyncClient) -> None:  # noqa: F811
    chosen = await client.post(f"{API}/instances/web-0/exec", json={"command": ["id"], "user": "root"})
    assert chosen.status_code == 422 and "user" in chosen.text
    # Control: the same body without `user` passes validation (and finds no instance).
    plain = await client.post(f"{API}/instances/web-0/exec", json={"command": ["id"]})
    assert plain.status_code == 404
