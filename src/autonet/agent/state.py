"""The agent's instance table, kept on disk so a restarted agent knows what it owns.

One JSON file per instance under `<state dir>/instances/`, written atomically. It holds
what the controller asked for (endpoint and process) and the PID and start time of
the process, so that after a crash the agent re-adopts processes that still run.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any


@dataclass
class InstanceRecord:
    uid: str
    name: str
    endpoint: dict[str, Any]
    process: dict[str, Any] | None = None
    pid: int = 0
    pid_start: int = 0  # /proc/PID/stat start time: tells a re-used PID from ours
    restarts: int = 0

    @property
    def netns(self) -> str:
        return str(self.endpoint["netns"])

    @property
    def router_netns(self) -> str:
        return str(self.endpoint["router_netns"])


class InstanceTable:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "instances"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.records: dict[str, InstanceRecord] = {}
        for path in self.dir.glob("*.json"):
            data = json.loads(path.read_text())
            self.records[data["uid"]] = InstanceRecord(**data)

    def save(self, record: InstanceRecord) -> None:
        self.records[record.uid] = record
        path = self.dir / f"{record.uid}.json"
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(record)))
        os.replace(tmp, path)

    def remove(self, uid: str) -> None:
        self.records.pop(uid, None)
        (self.dir / f"{uid}.json").unlink(missing_ok=True)

    def get(self, uid: str) -> InstanceRecord | None:
        return self.records.get(uid)

    def routers(self) -> set[str]:
        return {record.router_netns for record in self.records.values()}
