"""Instances that run a container image: the podman command lines that start, enter and
remove them.

An automaton with `image:` has each instance run that image with podman (rootful, from
local storage only: `--pull never`), in the foreground, so that the agent supervises the
`podman run` process exactly as it supervises a bare command: the container's output is
podman's output (the instance's log file), the container's exit is podman's exit (and its
code), and a signal to podman is passed on to the container (`--sig-proxy`, the default),
whose PID 1 is podman's init (catatonit) so that it reaches the image's command.

The container joins the instance's network namespace (`--network ns:/run/netns/NAME`), so
its addresses, routes, composition security, services, DNS and QoS are the instance's;
the VPC's resolv.conf is mounted over its /etc/resolv.conf. It runs as the instance's own
uid/gid with no capability and no way to gain one (`--cap-drop all`,
`no-new-privileges`), as a bare process does; `user: root` keeps podman's default
capabilities and gives up that isolation. `resources` become podman's own limits
(`--memory`, `--pids-limit`, `--cpus`).

Containers are named after the instance (`an-<instance uid>`), so a container left behind
by a crash (podman's monitor outlives a killed `podman run`) is found and removed before
the instance's next start and when it is deleted. Each also carries the label
`io.autonet.host=<host tag>`, by which a restarting agent removes the containers of
instances it no longer holds, and `lab down` those of a lab's hosts (whose podman
monitors it kills, so that podman's own `--rm` cannot run).

Two flags are there for hosts like this project's CI machine and harm nowhere else:
`--runtime runc` (crun refuses a hybrid cgroup v1/v2 layout) with `--cgroup-manager
cgroupfs` (no systemd need run), and explicit `--ulimit`s (podman's defaults can exceed
the hard limits it is given).
"""

from __future__ import annotations

import shutil
import subprocess
import time
from collections.abc import Iterable

from autonet.model.kinds import valid_image

PODMAN = "podman"
NAME_PREFIX = "an-"
HOST_LABEL = "io.autonet.host"
HOST_FLAGS = (
    "--runtime", "runc",
    "--cgroup-manager", "cgroupfs",
)  # fmt: skip
LIMITS = ("--ulimit", "nofile=1024:1024", "--ulimit", "nproc=4096:4096")
PODMAN_FAILED = 125  # podman's exit code when it could not run the container at all
KILLED = 128 + 9  # the container's command ended by SIGKILL (the OOM killer's signal)
STOP_TIMEOUT = 2  # seconds `podman rm -f` gives a container between SIGTERM and SIGKILL


def container_name(instance_uid: str) -> str:
    return f"{NAME_PREFIX}{instance_uid}"


def available() -> bool:
    return shutil.which(PODMAN) is not None


def _who(user: str) -> list[str]:
    """`root` keeps podman's default capabilities; a uid runs as uid:uid with none."""
    if user == "root":
        return ["--user", "0:0"]
    if not user.isdigit():
        raise ValueError(f"a container runs as root or as a leased uid, not {user!r}")
    return ["--user", f"{user}:{user}", "--cap-drop", "all", "--security-opt", "no-new-privileges"]


def run_argv(
    *,
    name: str,
    image: str,
    command: list[str],
    netns: str,
    user: str,
    env: dict[str, str],
    resolv_conf: str | None,
    host_tag: str,
    resources: dict[str, float] | None = None,
) -> list[str]:
    """`podman run` in the foreground: `image` (with `command`, else the image's own) in
    the instance's namespace, as `user` (a leased uid, or root), with `env` and limits."""
    if not valid_image(image):
        raise ValueError(f"image {image!r} is not a local image reference")  # never a flag
    argv = [PODMAN, *HOST_FLAGS, "run", "--rm", "--init", "--name", name, "--pull", "never"]
    argv += ["--label", f"{HOST_LABEL}={host_tag}"]
    argv += ["--network", f"ns:/run/netns/{netns}", "--log-driver", "none", *LIMITS, *_who(user)]
    if resolv_conf:
        argv += ["--volume", f"{resolv_conf}:/etc/resolv.conf:ro"]
    for key, value in sorted(env.items()):
        argv += ["--env", f"{key}={value}"]
    limits = resources or {}
    if limits.get("memory_mb"):
        # Swap as much as memory: over memory_mb the OOM killer ends it, as for a process.
        mem = f"{int(limits['memory_mb'])}m"
        argv += ["--memory", mem, "--memory-swap", mem]
    if limits.get("pids"):
        argv += ["--pids-limit", str(int(limits["pids"]))]
    if limits.get("cpu"):
        argv += ["--cpus", str(float(limits["cpu"]))]
    return [*argv, image, *command]


def exec_argv(name: str, command: list[str], user: str, env: dict[str, str]) -> list[str]:
    """`podman exec` of `command` in the running container `name`, as `user`, stdin open."""
    argv = [PODMAN, *HOST_FLAGS, "exec", "--interactive", *_who(user)[:2]]
    for key, value in sorted(env.items()):
        argv += ["--env", f"{key}={value}"]
    return [*argv, name, *command]


def remove_argv(*names: str, grace: int = STOP_TIMEOUT) -> list[str]:
    """Remove these containers if they are there (SIGTERM, SIGKILL after `grace` s)."""
    return [PODMAN, *HOST_FLAGS, "rm", "--force", "--ignore", "--time", str(grace), *names]


def of_hosts(host_tags: Iterable[str]) -> list[str]:
    """The names of the containers (running or not) of these hosts' instances (one
    `podman ps` for them all)."""
    tags = set(host_tags)
    if not tags or not available():
        return []
    listed = subprocess.run(
        [PODMAN, *HOST_FLAGS, "ps", "--all", "--filter", f"label={HOST_LABEL}",
         "--format", f'{{{{.Names}}}} {{{{index .Labels "{HOST_LABEL}"}}}}'],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    found = (line.split() for line in listed.stdout.splitlines())
    return [
        fields[0]
        for fields in found
        if len(fields) == 2 and fields[1] in tags and fields[0].startswith(NAME_PREFIX)
    ]


def remove(names: list[str], grace: int = 0) -> str:
    """Remove these containers, whether they run or not (SIGKILL after `grace` s);
    podman's complaint if it could not."""
    if not names:
        return ""
    try:
        done = subprocess.run(
            remove_argv(*names, grace=grace), capture_output=True, text=True, timeout=120, check=False
        )
    except subprocess.TimeoutExpired:
        return "podman rm did not return within 120 s"
    return done.stderr.strip() if done.returncode else ""


def remove_of_hosts(host_tags: Iterable[str], attempts: int = 5) -> list[str]:
    """Remove every container of these hosts, again while some are left (one may still
    be busy in podman's own cleanup when first asked); the names still there after that."""
    tags = list(host_tags)
    left = of_hosts(tags)
    for attempt in range(attempts):
        if not left:
            break
        remove(left)
        if attempt:
            time.sleep(0.5 * attempt)
        left = of_hosts(tags)
    return left
