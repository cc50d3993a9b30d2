"""Instance cgroups: one per instance, under `autonet/<host tag>/`, with its limits.

Each instance has a cgroup named after its network namespace, below a parent per host
(`autonet/<host tag>/<instance netns>`), so lab hosts sharing a kernel and labs side by
side never touch each other's groups. The controllers used are `memory`, `pids` and
`cpu`; each is taken where the kernel has it: a cgroup v1 hierarchy mounted for it
(`/sys/fs/cgroup/<controller>`), else the cgroup v2 hierarchy (`/sys/fs/cgroup` on a
pure v2 host, `/sys/fs/cgroup/unified` on a hybrid one) if it lists the controller. A
limit that needs a controller the host lacks is refused (`CgroupError`), never ignored.

The process launcher (dataplane/nsexec.py) joins the group before it drops its
privileges, so an instance's process and every `exec` in it are charged to it and
cannot leave it (cgroup.procs is root's). Removing a group kills what is left in it.
Limits: `memory_mb` (memory.limit_in_bytes and, with swap accounting, the memory+swap
limit on v1; memory.max and memory.swap.max = 0 on v2: over it the kernel's OOM killer
ends a process of the group), `pids` (pids.max: fork fails beyond it), `cpu` in cores
(a CFS quota per 100 ms period).
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path

BASE = Path("/sys/fs/cgroup")
PARENT = "autonet"
CONTROLLERS = ("memory", "pids", "cpu")
CFS_PERIOD_US = 100_000
MIB = 1024 * 1024
KILL_ROUNDS = 100  # a group whose processes keep forking is killed again, this many times at most
RMDIR_WAIT = 2.0  # seconds a group may stay busy after its last process was killed


class CgroupError(Exception):
    """A cgroup cannot be made or limited as asked (a missing controller, a kernel refusal)."""


@dataclass(frozen=True)
class Limits:
    """An instance's limits; 0 is no limit."""

    memory_mb: int = 0
    pids: int = 0
    cpu: float = 0.0

    def needs(self) -> list[str]:
        """The controllers these limits need."""
        return [c for c, v in zip(CONTROLLERS, (self.memory_mb, self.pids, self.cpu), strict=True) if v]


@dataclass(frozen=True)
class Hierarchy:
    """Where each controller is: `controller -> (cgroup version, mount point)`."""

    controllers: dict[str, tuple[int, Path]]

    def root(self, controller: str) -> Path | None:
        place = self.controllers.get(controller)
        return place[1] if place else None


def detect(base: Path = BASE) -> Hierarchy:
    """The controllers this host has, v1 mounts first (a controller bound to a v1
    hierarchy is not available in v2)."""
    found: dict[str, tuple[int, Path]] = {}
    for controller in CONTROLLERS:
        if (base / controller / "cgroup.procs").exists():
            found[controller] = (1, base / controller)
    for unified in (base, base / "unified"):
        listed = unified / "cgroup.controllers"
        if listed.exists():
            for controller in set(listed.read_text().split()) & set(CONTROLLERS):
                found.setdefault(controller, (2, unified))
            break
    return Hierarchy(found)


def host_path(tag: str) -> str:
    """The parent of a host's instance groups, relative to a hierarchy's root."""
    return f"{PARENT}/{tag}"


def _write(path: Path, value: str) -> None:
    try:
        with open(path, "w") as handle:
            handle.write(value)
    except OSError as exc:
        raise CgroupError(f"cannot write {value!r} to {path}: {exc.strerror}") from None


def _read_int(path: Path, key: str) -> int:
    """The value of `key` in a flat keyed file (memory.events, memory.oom_control); 0 if absent."""
    try:
        for line in path.read_text().splitlines():
            name, _, value = line.partition(" ")
            if name == key:
                return int(value)
    except (OSError, ValueError):
        pass
    return 0


class Group:
    """One instance's cgroup in every hierarchy that holds one of our controllers."""

    def __init__(self, hierarchy: Hierarchy, tag: str, name: str) -> None:
        self.hierarchy = hierarchy
        self.tag = tag
        self.name = name

    def path(self, controller: str) -> Path | None:
        root = self.hierarchy.root(controller)
        return root / host_path(self.tag) / self.name if root else None

    def dirs(self) -> list[Path]:
        """Each directory of the group once (v2 holds every controller in one)."""
        seen: list[Path] = []
        for controller in CONTROLLERS:
            path = self.path(controller)
            if path is not None and path not in seen:
                seen.append(path)
        return seen

    def exists(self) -> bool:
        return any(path.is_dir() for path in self.dirs())

    def create(self, limits: Limits) -> list[Path]:
        """Make the group (idempotent) and set its limits (no limit where 0); returns the
        directories a process joins. CgroupError if a limit needs a missing controller."""
        missing = [c for c in limits.needs() if c not in self.hierarchy.controllers]
        if missing:
            raise CgroupError(f"this host has no cgroup controller {', '.join(missing)}")
        for controller, (version, root) in self.hierarchy.controllers.items():
            path = root / host_path(self.tag) / self.name
            if version == 2:
                self._enable_v2(root, controller)
            for _ in range(3):  # a concurrent removal of an empty parent: make it again
                try:
                    path.mkdir(parents=True, exist_ok=True)
                    break
                except FileNotFoundError:
                    continue
            self._limit(controller, version, path, limits)
        return self.dirs()

    def _enable_v2(self, root: Path, controller: str) -> None:
        """v2: a controller works in a group only if every ancestor delegates it."""
        here = root
        for part in ("", PARENT, self.tag):
            here = here / part if part else here
            here.mkdir(exist_ok=True)
            enabled = here / "cgroup.subtree_control"
            if not enabled.exists() or controller not in enabled.read_text().split():
                _write(enabled, f"+{controller}")

    @staticmethod
    def _limit(controller: str, version: int, path: Path, limits: Limits) -> None:
        if controller == "memory":
            size = limits.memory_mb * MIB
            if version == 2:
                _write(path / "memory.max", str(size) if size else "max")
                if (path / "memory.swap.max").exists():
                    _write(path / "memory.swap.max", "0" if size else "max")
                return
            memsw = path / "memory.memsw.limit_in_bytes"  # present with swap accounting only
            value = str(size) if size else "-1"
            # memory+swap may never be below memory: raise it first, lower it last.
            order = [path / "memory.limit_in_bytes", memsw]
            try:
                for file in order:
                    if file is order[0] or file.exists():
                        _write(file, value)
            except CgroupError:
                for file in reversed(order):
                    if file is order[0] or file.exists():
                        _write(file, value)
        elif controller == "pids":
            _write(path / "pids.max", str(limits.pids) if limits.pids else "max")
        elif controller == "cpu":
            quota = max(1000, round(limits.cpu * CFS_PERIOD_US)) if limits.cpu else 0
            if version == 2:
                _write(path / "cpu.max", f"{quota or 'max'} {CFS_PERIOD_US}")
            else:
                _write(path / "cpu.cfs_period_us", str(CFS_PERIOD_US))
                _write(path / "cpu.cfs_quota_us", str(quota or -1))

    def pids(self) -> set[int]:
        found: set[int] = set()
        for path in self.dirs():
            with contextlib.suppress(OSError, ValueError):
                found |= {int(p) for p in (path / "cgroup.procs").read_text().split()}
        return found

    def oom_kills(self) -> int:
        """How many processes of the group the OOM killer ended so far."""
        place = self.hierarchy.controllers.get("memory")
        path = self.path("memory")
        if place is None or path is None:
            return 0
        return _read_int(path / ("memory.events" if place[0] == 2 else "memory.oom_control"), "oom_kill")

    def kill(self) -> None:
        """SIGKILL every process of the group, again until none is left (or we give up)."""
        for _ in range(KILL_ROUNDS):
            pids = self.pids()
            if not pids:
                return
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            time.sleep(0.01)

    def remove(self) -> None:
        """Kill what is left in the group and remove its directories."""
        self.kill()
        for path in self.dirs():
            _rmdir(path)


def _rmdir(path: Path) -> None:
    deadline = time.monotonic() + RMDIR_WAIT
    while True:
        try:
            path.rmdir()
            return
        except FileNotFoundError:
            return
        except OSError as exc:
            if exc.errno == errno.ENOTEMPTY:
                # Only an ordinary directory says so (cgroupfs's control files never
                # hold a group up): a tree standing in for cgroupfs, as in unit tests.
                for child in path.iterdir():
                    _rmdir(child) if child.is_dir() else child.unlink()
                continue
            # EBUSY: the killed processes are still leaving it.
            if exc.errno != errno.EBUSY or time.monotonic() > deadline:
                raise CgroupError(f"cannot remove {path}: {exc.strerror}") from None
            time.sleep(0.02)


def groups_of_host(hierarchy: Hierarchy, tag: str) -> set[str]:
    """The names of the instance groups under the host's parent, in any hierarchy."""
    names: set[str] = set()
    for root in {root for _, root in hierarchy.controllers.values()}:
        parent = root / host_path(tag)
        if parent.is_dir():
            names |= {child.name for child in parent.iterdir() if child.is_dir()}
    return names


def remove_host(hierarchy: Hierarchy, tag: str) -> int:
    """Remove every instance group of a host and the host's parent (what `lab down` and
    an agent's clean-up leave nothing of); returns the number of groups removed. The
    shared `autonet` parent goes too once empty (another host's group keeps it)."""
    names = groups_of_host(hierarchy, tag)
    for name in names:
        Group(hierarchy, tag, name).remove()
    for root in {root for _, root in hierarchy.controllers.values()}:
        with contextlib.suppress(CgroupError):
            _rmdir(root / host_path(tag))
        with contextlib.suppress(OSError):
            (root / PARENT).rmdir()
    return len(names)
