"""Instance processes: supervision, process states, logs, and what is left in a namespace.

Each instance runs one process, supervised by agent/supervisor.py: started in the
instance's namespace and cgroup (dataplane/cgroups.py, made with the automaton's
`resources` before the process starts) as the instance's own uid (or root, if its
automaton asks), restarted with backoff, adopted again after an agent restart. An automaton with an
`image` has its instances run it with podman in the instance's namespace, as the same
uid (dataplane/containers.py), under the same supervision.
Every change of a process's state is queued in `events` for the controller (a dead
process leaves its service at once), and its PID and restart count are written to the
instance table. The processes' logs are capped by copytruncate rotation
(agent/logs.py); logs of instances the table no longer holds are removed on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import signal
from typing import Any

from autonet.agent import logs
from autonet.agent.base import AgentBase
from autonet.agent.state import InstanceRecord, UidsExhausted
from autonet.agent.supervisor import Spec, Supervised
from autonet.dataplane import cgroups, containers, netns
from autonet.model import naming

log = logging.getLogger(__name__)


class Processes(AgentBase):
    """The part of HostAgent that runs the instances' processes and keeps their logs."""

    log_max_bytes: int
    events: asyncio.Queue[dict[str, Any]]
    _last_state: dict[str, str]

    # -- processes -------------------------------------------------------------------------
    async def ensure_process(self, uid: str, process: dict[str, Any]) -> Supervised:
        async with self._instance_locks[uid]:
            record = self.table.get(uid)
            if record is None:
                raise KeyError(f"instance {uid} is not wired on host {self.host}")
            current = self.processes.get(uid)
            if current is not None and record.process == process:
                current.start()
                return current
            # A limit this host cannot enforce fails here, before anything changed.
            self.instance_cgroup(dataclasses.replace(record, process=process))
            if current is not None:
                await current.stop()
            record.process = process
            self.table.save(record)
            return self._supervise(record)

    def instance_cgroup(self, record: InstanceRecord) -> list[str]:
        """Make (or repair) the instance's cgroup with its automaton's limits; the
        directories its processes join. CgroupError if a limit cannot be enforced."""
        resources = (record.process or {}).get("resources") or {}
        limits = cgroups.Limits(
            memory_mb=int(resources.get("memory_mb") or 0),
            pids=int(resources.get("pids") or 0),
            cpu=float(resources.get("cpu") or 0.0),
        )
        return [str(path) for path in self.cgroup(record).create(limits)]

    def _supervise(self, record: InstanceRecord, adopt: bool = False) -> Supervised:
        assert record.process is not None
        group = self.cgroup(record)
        refused, user = "", ""  # refused: never started
        image = str(record.process.get("image") or "")
        try:
            user = self.run_as(record)
            joined = self.instance_cgroup(record)
        except (cgroups.CgroupError, UidsExhausted) as exc:  # e.g. a host restarted without a controller
            refused, joined = f"cannot start: {exc}", []
        if image and not containers.available():
            refused = f"cannot start: image {image} needs podman, which host {self.host} lacks"
        spec = Spec(
            netns=record.netns,
            command=list(record.process["command"]),
            user=user,
            env=dict(record.process.get("env") or {}),
            resolv_conf=str(self.resolv_path(record.uid)),
            log_path=self.log_path(record.name),
            # podman itself stays out of the instance's cgroup: the container gets the
            # same limits from podman (dataplane/containers.py).
            cgroups=[] if image else joined,
            oom_kills=None if image else group.oom_kills,
            image=image,
            container=containers.container_name(record.uid) if image else "",
            host_tag=self.tag,
            resources=dict(record.process.get("resources") or {}),
        )

        def remember(proc: Supervised) -> None:
            if proc.state != self._last_state.get(record.uid):
                self._last_state[record.uid] = proc.state
                self.events.put_nowait(
                    {
                        "instance_uid": record.uid,
                        "instance": record.name,
                        "process": proc.state,
                        "pid": proc.pid,
                        "last_exit": proc.last_exit,
                    }
                )
            if self.table.get(record.uid) is record and (record.pid, record.restarts) != (
                proc.pid,
                proc.restarts,
            ):
                record.pid, record.pid_start, record.restarts = proc.pid, proc.pid_start, proc.restarts
                self.table.save(record)

        proc = Supervised(record.name, spec, remember)
        proc.restarts = record.restarts
        self.processes[record.uid] = proc
        if refused:  # fail closed: never without its limits
            log.error("%s: %s", record.name, refused)
            proc.state, proc.last_exit = "failed", refused
        elif adopt:
            proc.start(record.pid, record.pid_start)
        else:
            proc.start()
        return proc

    def processes_down(self) -> list[dict[str, Any]]:
        """Every supervised process that is not running, cheaply (no /proc scans): what a
        heartbeat carries (the controller acts only on those; a running one is news only
        in its readiness, which the instance operators check)."""
        return [
            {
                "instance_uid": uid,
                "instance": proc.name,
                "process": proc.state,
                "pid": proc.pid,
                "last_exit": proc.last_exit,
            }
            for uid, proc in self.processes.items()
            if proc.state != "running"
        ]

    async def _remove_cgroup(self, group: cgroups.Group) -> None:
        """The instance's cgroup goes with it (and whatever still ran in it)."""
        try:
            await asyncio.to_thread(group.remove)
        except cgroups.CgroupError as exc:
            log.warning("cgroup of %s: %s", group.name, exc)

    def _kill_namespace_processes(self, name: str) -> None:
        """Processes left in a namespace we remove (e.g. from `exec`) go with it; not in
        an attached container's namespace: its processes are its runtime's."""
        if naming.is_attached_netns(name):
            return
        for pid in netns.pids_in(name):
            if pid != os.getpid():
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    # -- logs ----------------------------------------------------------------------------
    def rotate_logs(self) -> int:
        """Rotate the logs grown past the cap; returns how many were rotated."""
        done = 0
        for name in sorted({record.name for record in self.table.records.values()}):
            try:
                done += logs.rotate_if_larger(self.log_path(name), self.log_max_bytes)
            except OSError as exc:
                log.warning("cannot rotate the log of %s: %s", name, exc)
        return done

    def _remove_stray_logs(self) -> int:
        """Logs of instances the table does not hold (deleted while the agent was down)."""
        kept = {f.name for r in self.table.records.values() for f in logs.files_of(self.log_path(r.name))}
        removed = 0
        directory = self.state_dir / "logs"
        for path in directory.iterdir() if directory.is_dir() else []:
            if path.name not in kept and path.is_file():
                path.unlink(missing_ok=True)
                removed += 1
        return removed
