"""The agent's instance table, kept on disk so a restarted agent knows what it owns.

One JSON file per instance under `<state dir>/instances/`, written atomically (see
`write_atomically`). It holds what the controller asked for (endpoint and process) and
the PID and start time of the process, so that after a crash the agent re-adopts
processes that still run, and the uid/gid leased to the instance from the agent's range
(`--uid-range`): the lowest number of the range that no other instance of the table
holds and /etc/passwd does not name; it is freed with the record (a later instance may
get it again) and kept across agent restarts. A file that cannot be read back (torn, edited, from another
version) is set aside as `<file>.corrupt` with a warning: the agent starts without that
instance, removes what is left of it in the kernel, and the controller, which no longer
sees it in the agent's report, has it wired again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import pwd
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

ENDPOINT_KEYS = ("netns", "router_netns", "router_ifname", "mac", "router_mac")
DEFAULT_UID_RANGE = (200_000, 299_999)  # above the usual /etc/subuid blocks of one or two users


class UidsExhausted(Exception):
    """Every uid of the agent's range is leased to an instance."""


def parse_uid_range(text: str) -> tuple[int, int]:
    """`FIRST-LAST` (inclusive) -> (first, last); ValueError saying what is wrong."""
    first, sep, last = text.partition("-")
    if not sep or not first.strip().isdigit() or not last.strip().isdigit():
        raise ValueError(f"{text!r}: expected FIRST-LAST, e.g. 200000-299999")
    low, high = int(first), int(last)
    if not 1000 <= low <= high <= 2**31 - 2:
        raise ValueError(f"{text!r}: must satisfy 1000 <= FIRST <= LAST < 2147483647")
    return low, high


def write_atomically(path: Path, data: bytes, durable_rename: bool = True) -> None:
    """Replace `path` with `data` so that a crash at any point leaves the old or the new file.

    The data reaches the disk before the rename, and (with `durable_rename`) the rename
    before we return: after a power cut the file is never empty or half written (as it
    can be when a rename overtakes the data it points to). Without `durable_rename` a
    power cut may bring back the previous version of the file, never a torn one: the
    instance table takes that, since the agent repairs an instance from the controller
    (and the directory fsync on every save was a fifth of the agent's time in a bulk
    apply).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    # One writer per file at a time (the agent serialises per instance and per router),
    # so a fixed temporary name will do; tempfile's random names cost a retry loop.
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        with open(tmp, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    if durable_rename:
        sync_directory(path.parent)


def sync_directory(directory: Path) -> None:
    """Make renames and removals in `directory` durable."""
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def remove_stale_temporaries(directory: Path) -> None:
    """Temporary files of `write_atomically` left by a crash mid-write."""
    for path in directory.glob(".*.tmp"):
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


@dataclass
class InstanceRecord:
    uid: str
    name: str
    endpoint: dict[str, Any]
    process: dict[str, Any] | None = None
    pid: int = 0
    pid_start: int = 0  # /proc/PID/stat start time: tells a re-used PID from ours
    restarts: int = 0
    process_uid: int = 0  # the uid and gid leased to the instance (0: not leased yet)

    @property
    def netns(self) -> str:
        return str(self.endpoint["netns"])

    @property
    def router_netns(self) -> str:
        return str(self.endpoint["router_netns"])


def parse_record(path: Path) -> InstanceRecord:
    """The record stored in `path`; ValueError saying what is wrong if it is not usable."""
    try:
        data = json.loads(path.read_bytes())
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("not a JSON object")
    try:
        record = InstanceRecord(**data)
    except TypeError as exc:
        raise ValueError(str(exc)) from None
    if not isinstance(record.uid, str) or record.uid != path.stem:
        raise ValueError(f"uid {record.uid!r} does not match the file name")
    if not isinstance(record.name, str) or not record.name:
        raise ValueError("no instance name")
    if not isinstance(record.endpoint, dict):
        raise ValueError("endpoint is not an object")
    missing = [key for key in ENDPOINT_KEYS if not isinstance(record.endpoint.get(key), str)]
    if missing:
        raise ValueError(f"endpoint lacks {', '.join(missing)}")
    if record.process is not None and not (
        isinstance(record.process, dict) and isinstance(record.process.get("command"), list)
    ):
        raise ValueError("process has no command")
    for key in ("pid", "pid_start", "restarts", "process_uid"):
        if not isinstance(getattr(record, key), int):
            raise ValueError(f"{key} is not an integer")
    return record


class InstanceTable:
    def __init__(self, state_dir: Path, uid_range: tuple[int, int] = DEFAULT_UID_RANGE) -> None:
        self.uid_range = uid_range
        self.dir = state_dir / "instances"
        self.dir.mkdir(parents=True, exist_ok=True)
        remove_stale_temporaries(self.dir)
        self.records: dict[str, InstanceRecord] = {}
        for path in sorted(self.dir.glob("*.json")):
            try:
                record = parse_record(path)
            except (OSError, ValueError) as exc:
                aside = path.with_name(path.name + ".corrupt")
                log.warning("instance file %s is unreadable (%s): set aside as %s", path, exc, aside.name)
                try:
                    os.replace(path, aside)
                except OSError as err:
                    log.warning("cannot set %s aside: %s", path, err)
                continue
            self.records[record.uid] = record

    def save(self, record: InstanceRecord) -> None:
        self.records[record.uid] = record
        write_atomically(
            self.dir / f"{record.uid}.json", json.dumps(asdict(record)).encode(), durable_rename=False
        )

    def remove(self, uid: str) -> None:
        self.records.pop(uid, None)
        (self.dir / f"{uid}.json").unlink(missing_ok=True)
        # A removal lost in a crash would bring a deleted instance back at the next start.
        sync_directory(self.dir)

    def lease_uid(self, record: InstanceRecord) -> int:
        """Give `record` a uid of the range if it has none (or one outside the range, after
        the range changed); the caller saves it. UidsExhausted if none is free."""
        low, high = self.uid_range
        if record.process_uid and low <= record.process_uid <= high:
            return record.process_uid
        taken = {r.process_uid for r in self.records.values() if r is not record}
        for number in range(low, high + 1):
            if number not in taken and not _in_passwd(number):
                record.process_uid = number
                return number
        raise UidsExhausted(f"no free uid in {low}-{high}: every one is leased to an instance")

    def get(self, uid: str) -> InstanceRecord | None:
        return self.records.get(uid)

    def routers(self) -> set[str]:
        return {record.router_netns for record in self.records.values()}


def _in_passwd(number: int) -> bool:
    """A uid /etc/passwd names belongs to someone else (a user, a service): never leased."""
    try:
        pwd.getpwuid(number)
    except KeyError:
        return False
    return True
