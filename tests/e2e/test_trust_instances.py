"""Isolated instances, end to end through the CLI on a one-host lab (issue 14, trust).

Two tenants (VPCs `a` and `b`) run automatons on the same host. Each instance runs as a
uid/gid of its own with no capability, in a cgroup of its own: the attacks are what a
tenant's code would try from inside its instance (`autonet exec`), each paired with
the same probe where it is allowed.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator
from typing import Any

import pytest

from autonet.agent.supervisor import process_start_time
from autonet.model import naming
from tests.e2e.lab import Lab, wait_for

pytestmark = pytest.mark.lab

TENANTS = """
kind: Vpc
name: a
spec: {cidrs: [100.81.0.0/16]}
---
kind: Network
name: a-net
spec: {vpc: a, cidrs: [100.81.1.0/24]}
---
kind: Vpc
name: b
spec: {cidrs: [100.82.0.0/16]}
---
kind: Network
name: b-net
spec: {vpc: b, cidrs: [100.82.1.0/24]}
---
kind: Automaton
name: atk
spec: {network: a-net, command: [sleep, infinity], replicas: 1}
---
kind: Automaton
name: victim
spec:
  network: b-net
  command: [sleep, infinity]
  env: {SECRET: b-tenant-secret}
---
kind: Automaton
name: hog
spec:
  network: b-net
  # Allocates 200 MB when told (SIGUSR1), over its 32 MB.
  command: [python3, -c, "import signal\\nheld = []\\nsignal.signal(signal.SIGUSR1, lambda *_: held.append(bytearray(200 << 20)))\\nwhile True:\\n    signal.pause()\\n"]
  resources: {memory_mb: 32}
---
kind: Automaton
name: forker
spec:
  network: a-net
  command: [sleep, infinity]
  resources: {pids: 8}
"""

KILL_ALL = "import os, signal; os.kill(-1, signal.SIGKILL); print('sent')"

READ_ENVIRON = (
    "import sys\n"
    "try:\n"
    "    data = open(f'/proc/{sys.argv[1]}/environ', 'rb').read()\n"
    "except OSError as exc:\n"
    "    sys.exit(type(exc).__name__)\n"
    "print(data.replace(b'\\0', b' ').decode())\n"
)

FORKS = (
    "import os, time\n"
    "made = 0\n"
    "try:\n"
    "    for _ in range(20):\n"
    "        if os.fork() == 0:\n"
    "            os.close(1); os.close(2); time.sleep(2); os._exit(0)\n"
    "        made += 1\n"
    "except BlockingIOError:\n"
    "    print('refused after', made)\n"
    "else:\n"
    "    print('all', made)\n"
)


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    # A restarted agent must find its instances still placed on it (not Lost and replaced).
    with Lab(hosts=1, env={"AUTONET_HOST_TIMEOUT": "30"}) as lab:
        lab.apply(TENANTS)
        yield lab


def inst(lab: Lab, name: str) -> dict[str, Any]:
    found: dict[str, Any] = lab.json("get", "instance", name)
    return found


def serving_again(lab: Lab, name: str, before: dict[str, Any]) -> dict[str, Any]:
    """The instance's status once its process was restarted and it serves again."""

    def probe() -> dict[str, Any]:
        status: dict[str, Any] = inst(lab, name)["status"]
        serving = status["state"] == "Provisioned" and status["restarts"] > before["restarts"]
        return status if serving else {}

    found: dict[str, Any] = wait_for(probe, 30, f"{name} restarted")
    return found


def proc_status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as handle:
        return {k: v.strip() for k, _, v in (line.partition(":") for line in handle)}


def test_each_instance_runs_as_its_own_uid_with_no_capability(lab: Lab) -> None:
    rows = {name: inst(lab, f"{name}-0")["status"] for name in ("atk", "victim", "hog", "forker")}
    uids = [row["process_uid"] for row in rows.values()]
    assert len(set(uids)) == 4 and min(uids) >= 1000
    for row in rows.values():
        status = proc_status(row["pid"])  # as the kernel holds it (read as root, from the host)
        assert status["Uid"].split() == [str(row["process_uid"])] * 4
        assert status["Gid"].split() == [str(row["process_uid"])] * 4
        for caps in ("CapEff", "CapPrm", "CapBnd", "CapAmb"):
            assert status[caps] == "0000000000000000"
        assert status["NoNewPrivs"] == "1"
    # Exec runs as the instance's own user; the CLI has no way to choose another.
    assert lab.exec_in("atk-0", "id", "-u").out.strip() == str(rows["atk"]["process_uid"])
    refused = lab.cli("exec", "--user", "root", "atk-0", "--", "id", "-u")
    assert refused.code != 0 and "No such option: --user" in refused.err


def test_kill_all_from_one_tenant_leaves_the_other_tenants_process(lab: Lab) -> None:
    victim, atk = inst(lab, "victim-0")["status"], inst(lab, "atk-0")["status"]
    victim_start = process_start_time(victim["pid"])
    result = lab.exec_in("atk-0", "python3", "-c", KILL_ALL)
    assert result.code == 0 and result.out.strip() == "sent", result.err
    # Control: kill(-1) did kill what it may, its own instance's process (then restarted).
    restarted = serving_again(lab, "atk-0", atk)
    assert restarted["pid"] != atk["pid"]
    assert "killed by signal 9" in restarted["last_exit"]
    # The other tenant's process: the same PID, the same process, never restarted.
    after = inst(lab, "victim-0")["status"]
    assert (after["pid"], after["restarts"]) == (victim["pid"], victim["restarts"])
    assert process_start_time(victim["pid"]) == victim_start


def test_an_instance_cannot_read_another_ones_environment(lab: Lab) -> None:
    victim = inst(lab, "victim-0")["status"]
    stolen = lab.exec_in("atk-0", "python3", "-c", READ_ENVIRON, str(victim["pid"]))
    assert stolen.code != 0 and stolen.err.strip() == "PermissionError"
    assert "b-tenant-secret" not in stolen.out
    # Control: the same read of its own process works (and the victim's own can read its).
    own = lab.exec_in("atk-0", "python3", "-c", READ_ENVIRON, str(inst(lab, "atk-0")["status"]["pid"]))
    assert own.code == 0 and "AUTONET_INSTANCE=atk-0" in own.out
    theirs = lab.exec_in("victim-0", "python3", "-c", READ_ENVIRON, str(victim["pid"]))
    assert theirs.code == 0 and "SECRET=b-tenant-secret" in theirs.out


def test_over_its_memory_an_instance_is_killed_and_restarted_its_neighbours_untouched(lab: Lab) -> None:
    hog, victim = inst(lab, "hog-0")["status"], inst(lab, "victim-0")["status"]
    os.kill(hog["pid"], signal.SIGUSR1)  # "allocate now"
    restarted = serving_again(lab, "hog-0", hog)
    assert restarted["last_exit"] == "killed by signal 9 (out of memory: over its resources.memory_mb)"
    assert restarted["pid"] != hog["pid"]
    after = inst(lab, "victim-0")["status"]
    assert (after["pid"], after["restarts"]) == (victim["pid"], victim["restarts"])
    # Control: within its limit the same instance runs (its new process is ready, and a
    # 4 MB allocation in it succeeds).
    small = lab.exec_in("hog-0", "python3", "-c", "b = bytearray(4 << 20); print('ok')")
    assert small.out.strip() == "ok"


def test_a_pids_limit_makes_fork_fail_beyond_it(lab: Lab) -> None:
    limited = lab.exec_in("forker-0", "python3", "-c", FORKS)
    # 8 tasks in its cgroup: its own process (sleep), this python, and 6 children.
    assert limited.out.strip() == "refused after 6", limited.err
    # Control: the same program in an instance with no pids limit forks every time.
    free = lab.exec_in("victim-0", "python3", "-c", FORKS)
    assert free.out.strip() == "all 20", free.err


def test_a_restarted_agent_keeps_each_instance_on_its_uid_and_in_its_cgroup(lab: Lab) -> None:
    before = {name: inst(lab, name)["status"] for name in ("atk-0", "victim-0")}
    status_uid = {name: inst(lab, name)["metadata"]["uid"] for name in before}
    lab.ok("lab", "kill", "h1")
    lab.ok("lab", "restart", "h1")
    wait_for(lambda: lab.json("get", "host", "h1")["status"]["state"] == "Ready", 30, "h1 Ready")
    tag = naming.host_tag(lab.name, "h1")
    for name, status in before.items():
        assert inst(lab, name)["metadata"]["uid"] == status_uid[name]  # the same instance
        # The process was adopted, not restarted, and exec finds the same uid in the table.
        assert proc_status(status["pid"])["Uid"].split()[0] == str(status["process_uid"])
        assert lab.exec_in(name, "id", "-u").out.strip() == str(status["process_uid"])
        with open(f"/proc/{status['pid']}/cgroup") as handle:
            assert f"memory:/autonet/{tag}/{status['netns']}\n" in handle.read()


def test_uids_are_freed_on_scale_in_and_reused(lab: Lab) -> None:
    lab.ok("scale", "atk", "2", "--wait")
    first, second = (inst(lab, f"atk-{n}")["status"]["process_uid"] for n in (0, 1))
    assert first != second
    lab.ok("scale", "atk", "1", "--wait")
    wait_for(lambda: not any(i["name"] == "atk-1" for i in lab.instances("atk")), 30, "atk-1 gone")
    lab.ok("scale", "victim", "2", "--wait")
    assert inst(lab, "victim-1")["status"]["process_uid"] == second  # the freed uid, leased again
    lab.ok("scale", "victim", "1", "--wait")
