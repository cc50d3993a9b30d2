"""Automaton processes: start inside the instance netns, watch, restart with backoff, stop.

A process is started through dataplane/nsexec.py (netns, resolv.conf, cgroups, user), in
its own session so that stopping it reaches its children, with stdout and stderr appended to
the instance's log file. Exits are noticed through a pidfd, without polling. A process
that outlives a crashed agent is adopted again by PID and start time. A process ended by
the OOM killer of its cgroup (its count of OOM kills went up while it ran) says so in
its `last_exit`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from autonet.dataplane.nsexec import launcher_argv

log = logging.getLogger(__name__)

BACKOFF_START = 0.5
BACKOFF_MAX = 30.0
STABLE_AFTER = 10.0  # a process that ran this long resets the backoff
GIVE_UP_AFTER = 3  # consecutive quick failures before reporting "failed" (it keeps retrying)
STOP_GRACE = 3.0


def process_start_time(pid: int) -> int:
    """Field 22 of /proc/PID/stat (start time in clock ticks), 0 if there is no such process."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return 0
    return int(stat.rsplit(")", 1)[1].split()[19])


def agent_path_env(extra: dict[str, str]) -> dict[str, str]:
    """The environment of instance processes: the agent's Python first on PATH."""
    env = {
        "PATH": os.pathsep.join(
            [
                os.path.dirname(sys.executable),
                "/usr/local/sbin",
                "/usr/local/bin",
                "/usr/sbin",
                "/usr/bin",
                "/sbin",
                "/bin",
            ]
        ),
        "LANG": "C.UTF-8",
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


@dataclass
class Spec:
    netns: str
    command: list[str]
    user: str
    env: dict[str, str]
    resolv_conf: str | None
    log_path: Path
    cgroups: list[str] = field(default_factory=list)  # the directories of its cgroup
    oom_kills: Callable[[], int] | None = None  # its cgroup's count of OOM kills so far


class Supervised:
    """One automaton process and its restart loop."""

    def __init__(self, name: str, spec: Spec, on_change: Callable[[Supervised], None]) -> None:
        self.name = name
        self.spec = spec
        self.on_change = on_change
        self.pid = 0
        self.pid_start = 0
        self.restarts = 0
        self.quick_failures = 0
        self.last_exit = ""
        self.state = "none"
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def start(self, adopt_pid: int = 0, adopt_start: int = 0) -> None:
        if self._task is None or self._task.done():
            self._stopping = False
            self._task = asyncio.get_running_loop().create_task(self._loop(adopt_pid, adopt_start))

    def _spawn(self) -> None:
        self.spec.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.spec.log_path, "ab") as logfile:
            logfile.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start {self.spec.command}\n".encode())
            logfile.flush()
            proc = subprocess.Popen(
                launcher_argv(
                    self.spec.netns,
                    self.spec.command,
                    self.spec.user,
                    self.spec.resolv_conf,
                    self.spec.cgroups,
                ),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                env=agent_path_env(self.spec.env),
                start_new_session=True,
                close_fds=True,
            )
        self.pid = proc.pid
        self.pid_start = process_start_time(proc.pid)
        # Popen would reap it in __del__-time polling; we reap through waitpid ourselves.
        proc.returncode = 0

    async def _wait_exit(self, pid: int, child: bool) -> str:
        loop = asyncio.get_running_loop()
        try:
            pidfd = os.pidfd_open(pid)
        except ProcessLookupError:
            return "exited (status unknown)"
        done: asyncio.Future[None] = loop.create_future()

        def exited() -> None:
            if not done.done():
                done.set_result(None)

        loop.add_reader(pidfd, exited)
        try:
            await done
        finally:
            loop.remove_reader(pidfd)
            os.close(pidfd)
        if not child:
            return "exited (status unknown)"
        try:
            _, status = os.waitpid(pid, 0)
        except ChildProcessError:
            return "exited (status unknown)"
        if os.WIFSIGNALED(status):
            return f"killed by signal {os.WTERMSIG(status)}"
        return f"exited with code {os.WEXITSTATUS(status)}"

    def _oom_kills(self) -> int:
        return self.spec.oom_kills() if self.spec.oom_kills else 0

    async def _loop(self, adopt_pid: int, adopt_start: int) -> None:
        backoff = BACKOFF_START
        adopted = bool(adopt_pid) and process_start_time(adopt_pid) == adopt_start != 0
        while not self._stopping:
            if adopted:
                self.pid, self.pid_start, child = adopt_pid, adopt_start, False
                adopted = False
                log.info("%s: adopted running process %d", self.name, self.pid)
            else:
                try:
                    self._spawn()
                except OSError as exc:
                    self.last_exit = f"cannot start: {exc}"
                    self.pid = 0
                child = True
            started = time.monotonic()
            ooms = self._oom_kills()
            self.state = "running"
            self.on_change(self)
            if self.pid:
                self.last_exit = await self._wait_exit(self.pid, child)
                if self._oom_kills() > ooms:
                    self.last_exit += " (out of memory: over its resources.memory_mb)"
            self.pid = 0
            if self._stopping:
                break
            self.restarts += 1
            ran = time.monotonic() - started
            if ran >= STABLE_AFTER:
                backoff, self.quick_failures = BACKOFF_START, 0
            else:
                self.quick_failures += 1
            self.state = "failed" if self.quick_failures >= GIVE_UP_AFTER else "backoff"
            log.info("%s: process %s; restart in %.1fs", self.name, self.last_exit, backoff)
            self.on_change(self)
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, BACKOFF_MAX)
        self.state = "stopped"

    async def stop(self) -> None:
        """SIGTERM the process group, SIGKILL after a grace period; reap it."""
        self._stopping = True
        task, pid = self._task, self.pid
        alive = bool(pid) and process_start_time(pid) == self.pid_start
        if alive:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
        if task is not None and not task.done():
            if alive:
                try:
                    await asyncio.wait_for(asyncio.shield(task), STOP_GRACE)
                except TimeoutError:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(asyncio.shield(task), STOP_GRACE)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self.state = "stopped"
        self.pid = 0
