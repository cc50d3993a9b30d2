"""Automaton processes: start inside the instance netns, watch, restart with backoff, stop.

A process is started through dataplane/nsexec.py (netns, resolv.conf, cgroups, user), in
its own session so that stopping it reaches its children, with stdout and stderr appended to
the instance's log file. Exits are noticed through a pidfd, without polling. A process
that outlives a crashed agent is adopted again by PID and start time. An instance of an
image runs as `podman run` in the foreground (dataplane/containers.py), supervised the
same way; its container is removed before each start and when it stops, so none that
outlived its `podman run` stands in the way. A process ended by
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

from autonet.agent import logs
from autonet.dataplane import containers
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
    image: str = ""  # a container image to run (command: its arguments) with podman
    container: str = ""  # the container's name, with an image
    host_tag: str = ""  # its host's, on the container's label
    resources: dict[str, float] = field(default_factory=dict)  # an image's podman limits

    def argv(self) -> list[str]:
        if self.image:
            return containers.run_argv(
                name=self.container,
                image=self.image,
                command=self.command,
                netns=self.netns,
                user=self.user,
                env=self.env,
                resolv_conf=self.resolv_conf,
                host_tag=self.host_tag,
                resources=self.resources,
            )
        return launcher_argv(self.netns, self.command, self.user, self.resolv_conf, self.cgroups)


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
            what = f"{self.spec.image} {self.spec.command}" if self.spec.image else self.spec.command
            logfile.write(f"--- {time.strftime('%Y-%m-%dT%H:%M:%S')} start {what}\n".encode())
            logfile.flush()
            proc = subprocess.Popen(
                self.spec.argv(),
                stdin=subprocess.DEVNULL,
                stdout=logfile,
                stderr=subprocess.STDOUT,
                # A container's environment is in its argv, not podman's.
                env=agent_path_env({} if self.spec.image else self.spec.env),
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

    async def _remove_container(self) -> None:
        """The instance's container, if one outlived its `podman run` (or is still
        stopping): gone before the next start, and when the instance stops."""
        if not self.spec.container:
            return
        complaint = await asyncio.to_thread(containers.remove, [self.spec.container], containers.STOP_TIMEOUT)
        if complaint:
            log.warning("%s: cannot remove container %s: %s", self.name, self.spec.container, complaint)

    def _container_exit_reason(self) -> str:
        """What podman's exit code says (the container is gone with `--rm`, its state too)."""
        if self.last_exit == f"exited with code {containers.PODMAN_FAILED}":
            return f" (podman: {self._last_log_line()})"
        if self.last_exit == f"exited with code {containers.KILLED}" and self.spec.resources.get("memory_mb"):
            return " (killed: SIGKILL, e.g. by the OOM killer over its resources.memory_mb)"
        return ""

    def _last_log_line(self) -> str:
        """Podman's own error (e.g. an image not in local storage) is its output's last line."""
        try:
            return logs.tail(self.spec.log_path, 1, 500).decode(errors="replace").strip()
        except OSError:
            return "see the instance's log"

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
                    await self._remove_container()
                    self._spawn()
                except (OSError, ValueError) as exc:
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
                elif self.spec.image:
                    self.last_exit += self._container_exit_reason()
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
        with contextlib.suppress(OSError):
            await self._remove_container()
        self.state = "stopped"
        self.pid = 0
