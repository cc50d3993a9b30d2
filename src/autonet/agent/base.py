"""What the parts of the host agent share: who the host is, its state and its paths.

`HostAgent` (agent/host.py) is made of parts, one module a concern, each a class that
`HostAgent` inherits from. `AgentBase` is what they all use: the attributes
`HostAgent.__init__` sets for every part (declared here for the type checker) and the
paths of the files the agent keeps under its state directory.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from autonet.agent.state import InstanceRecord, InstanceTable, UidsExhausted
from autonet.agent.supervisor import Supervised
from autonet.dataplane import cgroups
from autonet.dataplane.netlink import Netlink
from autonet.model import naming


class AgentBase:
    host: str
    tag: str
    state_dir: Path
    table: InstanceTable
    nl: Netlink
    processes: dict[str, Supervised]
    _instance_locks: dict[str, asyncio.Lock]
    hierarchy: cgroups.Hierarchy  # where the cgroup controllers are

    # -- paths ---------------------------------------------------------------------------
    def log_path(self, name: str) -> Path:
        return self.state_dir / "logs" / f"{name}.log"

    def resolv_path(self, uid: str) -> Path:
        return self.state_dir / "resolv" / f"{uid}.conf"

    def overlay_path(self, router_netns: str) -> Path:
        return self.state_dir / "overlay" / f"{router_netns}.json"

    def cgroup(self, record: InstanceRecord) -> cgroups.Group:
        """The instance's cgroup: `autonet/<host tag>/<instance netns>` in each hierarchy."""
        return cgroups.Group(self.hierarchy, self.tag, record.netns)

    def run_as(self, record: InstanceRecord) -> str:
        """Who the instance's process and every exec in it run as: root if its automaton
        says `user: root`, else the uid leased to it (never a name the caller chooses)."""
        if (record.process or {}).get("user") == "root":
            return "root"
        if not record.process_uid:  # never root by default
            raise UidsExhausted(f"instance {record.name} has no uid leased")
        return str(record.process_uid)

    def owns_netns(self, name: str) -> bool:
        return name.startswith((f"ani{self.tag}", f"anr{self.tag}", naming.attached_netns_prefix(self.tag)))
