"""The process launcher (dataplane/nsexec.py) with real namespaces and cgroups: a process
dropped to an instance's uid has no capability left and no way to gain one; it runs in
its cgroup, whose limits the kernel enforces. Root: run under the lab lock. Every
namespace and cgroup made here is removed when the test ends, even on failure."""

from __future__ import annotations

import os
import subprocess
import uuid
from collections.abc import Iterator

import pytest

from autonet.dataplane import cgroups, netns
from autonet.dataplane.nsexec import launcher_argv

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root")

UID = 1_999_999_000 + os.getpid() % 900  # far from any user and from the labs' blocks

KEYS = ("Uid", "Gid", "Groups", "CapInh", "CapPrm", "CapEff", "CapBnd", "CapAmb", "NoNewPrivs")


def proc_status(pid: int) -> dict[str, str]:
    """What the kernel holds for a process (/proc/PID/status, read by root from outside)."""
    with open(f"/proc/{pid}/status") as handle:
        lines = [line.split(":", 1) for line in handle.read().splitlines()]
    return {key: " ".join(value.split()) for key, value in lines if key in KEYS}


@pytest.fixture
def space() -> Iterator[tuple[str, str]]:
    """A fresh namespace and a host tag for cgroups, both removed afterwards."""
    name = f"antl{uuid.uuid4().hex[:8]}"
    tag = f"t{uuid.uuid4().hex[:3]}"
    netns.create(name).close()
    try:
        yield name, tag
    finally:
        netns.delete(name)
        cgroups.remove_host(cgroups.detect(), tag)


def run(
    name: str, command: list[str], user: str = str(UID), groups: list[str] | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        launcher_argv(name, command, user, cgroups=groups), capture_output=True, text=True, timeout=60
    )


def status_of_sleep(name: str, user: str) -> dict[str, str]:
    """proc_status of a `sleep` the launcher runs as `user`, once it runs."""
    sleeper = subprocess.Popen(launcher_argv(name, ["sleep", "30"], user))
    try:
        for _ in range(200):  # until the launcher has exec'd sleep
            if os.readlink(f"/proc/{sleeper.pid}/exe").endswith("/sleep"):
                break
            subprocess.run(["sleep", "0.01"])
        return proc_status(sleeper.pid)
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_dropped_process_has_no_capability_and_cannot_gain_one(space: tuple[str, str]) -> None:
    name, _ = space
    seen = status_of_sleep(name, str(UID))
    ids = " ".join([str(UID)] * 4)  # real, effective, saved and file-system ids
    empty = "0000000000000000"
    assert seen == {
        "Uid": ids, "Gid": ids, "Groups": "", "CapInh": empty, "CapPrm": empty, "CapEff": empty,
        "CapBnd": empty, "CapAmb": empty, "NoNewPrivs": "1",
    }  # fmt: skip
    # Control: the launcher as root keeps root's capabilities (the `user: root` hatch).
    assert status_of_sleep(name, "root")["CapEff"] != empty
    # A binary with a file capability (ping: cap_net_raw) cannot give one back: the
    # kernel refuses to run it at all, rather than run it without what it expects.
    ping = run(name, ["ping", "-c", "1", "127.0.0.1"])
    assert ping.returncode == 127 and ("Permission denied" in ping.stderr or "not permitted" in ping.stderr)
    # Raw sockets need CAP_NET_RAW: refused. Control: the same as root works.
    raw = "import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_UDP); print('raw')"
    denied = run(name, ["python3", "-c", raw])
    assert "PermissionError" in denied.stderr
    assert run(name, ["python3", "-c", raw], user="root").stdout.strip() == "raw"
    # ICMP echo through datagram sockets (ping_group_range, set for the instance's group).
    dgram = (
        "import socket; socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP); print('icmp')"
    )
    assert run(name, ["python3", "-c", dgram]).stdout.strip() == "icmp"


def test_the_process_is_in_its_cgroup_and_cannot_leave_it(space: tuple[str, str]) -> None:
    name, tag = space
    group = cgroups.Group(cgroups.detect(), tag, name)
    dirs = [str(d) for d in group.create(cgroups.Limits(pids=50))]
    out = run(
        name, ["sh", "-c", "cat /proc/self/cgroup; echo $$ > /sys/fs/cgroup/pids/cgroup.procs"], groups=dirs
    )
    assert f"pids:/autonet/{tag}/{name}" in out.stdout
    assert "Permission denied" in out.stderr  # a process that is not root cannot move itself out
    # Control: the same write, as root, is allowed (it is the uid that stops it).
    moved = run(name, ["sh", "-c", f"echo $$ > {dirs[0]}/cgroup.procs && echo moved"], user="root")
    assert moved.stdout.strip() == "moved"


def test_over_its_memory_limit_a_process_is_oom_killed_and_counted(space: tuple[str, str]) -> None:
    name, tag = space
    group = cgroups.Group(cgroups.detect(), tag, name)
    dirs = [str(d) for d in group.create(cgroups.Limits(memory_mb=32))]
    hog = "b = bytearray(200 * 1024 * 1024); print('survived')"
    result = run(name, ["python3", "-c", hog], groups=dirs)
    assert result.returncode == -9 and "survived" not in result.stdout
    assert group.oom_kills() == 1
    # Control: within the limit, the same program runs to the end.
    small = run(name, ["python3", "-c", hog.replace("200", "4")], groups=dirs)
    assert small.stdout.strip() == "survived"
    assert group.oom_kills() == 1


def test_pids_limit_makes_fork_fail_beyond_it(space: tuple[str, str]) -> None:
    name, tag = space
    group = cgroups.Group(cgroups.detect(), tag, name)
    dirs = [str(d) for d in group.create(cgroups.Limits(pids=5))]
    forks = (
        "import os, time\n"
        "made = 0\n"
        "try:\n"
        "    for _ in range(20):\n"
        "        if os.fork() == 0:\n"
        "            os.close(1); os.close(2); time.sleep(3); os._exit(0)\n"
        "        made += 1\n"
        "except BlockingIOError:\n"
        "    print('refused after', made)\n"
    )
    out = run(name, ["python3", "-c", forks], groups=dirs)
    assert out.stdout.strip() == "refused after 4"  # 5 tasks: the parent and 4 children
    group.kill()
    # Control: without the cgroup, the same program forks 20 times.
    free = run(name, ["python3", "-c", forks + "else:\n    print('all', made)\n"])
    assert free.stdout.strip() == "all 20"


def test_removing_a_group_kills_what_is_left_in_it(space: tuple[str, str]) -> None:
    name, tag = space
    hierarchy = cgroups.detect()
    group = cgroups.Group(hierarchy, tag, name)
    dirs = [str(d) for d in group.create(cgroups.Limits(cpu=0.5))]
    sleeper = subprocess.Popen(
        launcher_argv(name, ["sh", "-c", "sleep 60 & sleep 60"], str(UID), cgroups=dirs)
    )
    for _ in range(100):
        if len(group.pids()) == 3:  # sh and its two sleeps
            break
        subprocess.run(["sleep", "0.02"])
    assert len(group.pids()) == 3
    assert cgroups.groups_of_host(hierarchy, tag) == {name}
    cgroups.remove_host(hierarchy, tag)
    sleeper.wait(timeout=5)
    assert not group.exists()
    assert cgroups.groups_of_host(hierarchy, tag) == set()
    assert not any((root / "autonet" / tag).exists() for _, root in hierarchy.controllers.values())


BUSY = (
    "import os, time\n"
    "end = time.monotonic() + 1.0\n"
    "while time.monotonic() < end:\n"
    "    pass\n"
    "t = os.times()\n"
    "print(round(t.user + t.system, 2))\n"
)


def test_a_cpu_quota_caps_the_time_a_busy_process_gets(space: tuple[str, str]) -> None:
    name, tag = space
    group = cgroups.Group(cgroups.detect(), tag, name)
    dirs = [str(d) for d in group.create(cgroups.Limits(cpu=0.2))]
    limited = float(run(name, ["python3", "-c", BUSY], groups=dirs).stdout)
    assert limited < 0.35  # 0.2 core for 1 s (+ start-up, charged before the quota bites)
    # Control: without the quota the same loop gets most of a core (the machine is shared).
    free = float(run(name, ["python3", "-c", BUSY]).stdout)
    assert free > 0.5 and free > 2 * limited
