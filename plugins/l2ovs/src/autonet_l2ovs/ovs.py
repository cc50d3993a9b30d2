"""Open vSwitch on one host: its daemons, bridges, ports and flows (userspace datapath).

The daemons run in the agent's (the host's) network namespace with their database,
sockets and logs under the agent's state directory, so several lab hosts on one
machine each have their own. There is no openvswitch kernel module here: bridges use
`datapath_type=netdev`, and transmit checksum offload is turned off on both ends of
every veth the bridge uses (the userspace datapath does not fill in checksums).
Commands go through ovs-vsctl / ovs-ofctl; this is the plugin's control path, never
the packet path.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

SCHEMA = "/usr/share/openvswitch/vswitch.ovsschema"


class OvsError(RuntimeError):
    pass


class Ovs:
    def __init__(self, state_dir: Path) -> None:
        self.dir = state_dir / "ovs"
        self.run_dir = self.dir / "run"
        self.db_sock = self.run_dir / "db.sock"

    def _run(self, *argv: str, check: bool = True) -> str:
        env = {
            **os.environ,
            "OVS_RUNDIR": str(self.run_dir),
            "OVS_LOGDIR": str(self.dir / "log"),
            "OVS_DBDIR": str(self.dir / "db"),
        }
        result = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=30)
        if check and result.returncode != 0:
            raise OvsError(f"{' '.join(argv[:3])}: {result.stderr.strip() or result.stdout.strip()}")
        return result.stdout

    def vsctl(self, *args: str) -> str:
        return self._run("ovs-vsctl", f"--db=unix:{self.db_sock}", "--timeout=10", *args)

    def ofctl(self, bridge: str, *args: str, stdin: str | None = None) -> str:
        # OpenFlow 1.3: rules in several tables (goto by resubmit) need table ids in flow
        # mods, which the OpenFlow 1.0 default cannot carry.
        target = f"unix:{self.run_dir / bridge}.mgmt"
        if stdin is None:
            return self._run("ovs-ofctl", "-O", "OpenFlow13", args[0], target, *args[1:])
        path = self.dir / f"{bridge}.flows"
        path.write_text(stdin)
        return self._run("ovs-ofctl", "-O", "OpenFlow13", args[0], target, str(path))

    def _alive(self, daemon: str) -> bool:
        pidfile = self.run_dir / f"{daemon}.pid"
        try:
            pid = int(pidfile.read_text())
            os.kill(pid, 0)
            return True
        except (OSError, ValueError):
            return False

    def start(self) -> None:
        for sub in ("run", "log", "db"):
            (self.dir / sub).mkdir(parents=True, exist_ok=True)
        db = self.dir / "db" / "conf.db"
        if not db.exists():
            self._run("ovsdb-tool", "create", str(db), SCHEMA)
        if not self._alive("ovsdb-server"):
            self._run(
                "ovsdb-server", str(db), f"--remote=punix:{self.db_sock}",
                f"--pidfile={self.run_dir / 'ovsdb-server.pid'}", f"--unixctl={self.run_dir / 'ovsdb-server.ctl'}",
                f"--log-file={self.dir / 'log' / 'ovsdb-server.log'}", "--detach",
            )  # fmt: skip
            self.vsctl("--no-wait", "init")
        if not self._alive("ovs-vswitchd"):
            self._run(
                "ovs-vswitchd", f"unix:{self.db_sock}",
                f"--pidfile={self.run_dir / 'ovs-vswitchd.pid'}", f"--unixctl={self.run_dir / 'ovs-vswitchd.ctl'}",
                f"--log-file={self.dir / 'log' / 'ovs-vswitchd.log'}", "--detach",
            )  # fmt: skip

    def running(self) -> bool:
        return self._alive("ovsdb-server") and self._alive("ovs-vswitchd")

    def version(self) -> str:
        return self._run("ovs-vswitchd", "--version").splitlines()[0]

    def ensure_bridge(self, bridge: str) -> None:
        # fail_mode=secure: never the NORMAL (learning switch) fallback, even before the
        # first rules arrive; the bridge forwards only what its rules allow.
        settings = ["datapath_type=netdev", "fail_mode=secure"]
        self.vsctl("--may-exist", "add-br", bridge, "--", "set", "bridge", bridge, *settings)

    def bridges(self) -> list[str]:
        return self.vsctl("list-br").split()

    def ports(self, bridge: str) -> list[str]:
        return self.vsctl("list-ports", bridge).split()

    def add_port(self, bridge: str, port: str) -> None:
        self.vsctl("--may-exist", "add-port", bridge, port)

    def del_port(self, bridge: str, port: str) -> None:
        self.vsctl("--if-exists", "del-port", bridge, port)

    def replace_flows(self, bridge: str, flows: list[str]) -> None:
        """Only flows that differ are touched: counters of unchanged flows keep counting."""
        self.ofctl(bridge, "replace-flows", stdin="\n".join(flows) + "\n")

    def dump_flows(self, bridge: str) -> list[str]:
        lines = self.ofctl(bridge, "dump-flows", "--no-names").splitlines()
        return [line.strip() for line in lines if "actions=" in line]
