"""Named network namespaces, created and entered without forking.

`ip netns add` and pyroute2 fork a helper process to create a namespace or to open a
socket inside one. We do both in a short-lived thread instead: network namespaces are
per thread, so a thread may `unshare(CLONE_NEWNET)`, bind-mount its namespace under
/run/netns and open a netlink socket there; the socket stays bound to that namespace
after the thread is gone. This is about 1 ms per namespace instead of ~10 ms.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import os
import socket
import threading
from collections.abc import Callable
from typing import TypeVar

NETNS_RUN_DIR = "/run/netns"
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_BIND = 4096
MS_REC = 16384
MS_SHARED = 1 << 20
MNT_DETACH = 2

T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)
_rundir_ready = False
_rundir_lock = threading.Lock()


def _check(result: int, what: str, target: str = "") -> None:
    if result != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}", target)


def netns_path(name: str) -> str:
    return os.path.join(NETNS_RUN_DIR, name)


def _prepare_rundir() -> None:
    """Make /run/netns a shared mount point, as iproute2 does, once per process."""
    global _rundir_ready
    with _rundir_lock:
        if _rundir_ready:
            return
        os.makedirs(NETNS_RUN_DIR, exist_ok=True)
        rundir = NETNS_RUN_DIR.encode()
        if _libc.mount(b"", rundir, b"none", MS_SHARED | MS_REC, None) != 0:
            _check(_libc.mount(rundir, rundir, b"none", MS_BIND | MS_REC, None), "bind", NETNS_RUN_DIR)
            _check(_libc.mount(b"", rundir, b"none", MS_SHARED | MS_REC, None), "share", NETNS_RUN_DIR)
        _rundir_ready = True


def run_in_thread(work: Callable[[], T]) -> T:
    """Run `work` in a fresh thread and return its result (namespace changes die with it)."""
    box: dict[str, object] = {}

    def runner() -> None:
        try:
            box["result"] = work()
        except BaseException as exc:  # re-raised in the caller
            box["error"] = exc

    thread = threading.Thread(target=runner, name="autonet-netns")
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["result"]  # type: ignore[return-value]


def _enter(name: str) -> None:
    fd = os.open(netns_path(name), os.O_RDONLY | os.O_CLOEXEC)
    try:
        _check(_libc.setns(fd, CLONE_NEWNET), "setns", name)
    finally:
        os.close(fd)


def netlink_socket() -> socket.socket:
    sock = socket.socket(socket.AF_NETLINK, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC, 0)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 1 << 20)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 20)
    return sock


def exists(name: str) -> bool:
    return os.path.exists(netns_path(name))


def list_names(prefix: str = "") -> list[str]:
    try:
        return sorted(n for n in os.listdir(NETNS_RUN_DIR) if n.startswith(prefix))
    except FileNotFoundError:
        return []


def create(name: str) -> socket.socket:
    """Create namespace `name` (or open it if it exists); return a netlink socket inside it."""
    _prepare_rundir()
    path = netns_path(name)

    def work() -> socket.socket:
        if os.path.exists(path):
            _enter(name)
            return netlink_socket()
        _check(_libc.unshare(CLONE_NEWNET), "unshare", name)
        fd = os.open(path, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
        os.close(fd)
        source = f"/proc/self/task/{threading.get_native_id()}/ns/net".encode()
        try:
            _check(_libc.mount(source, path.encode(), b"none", MS_BIND, None), "mount", name)
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(path)
            raise
        return netlink_socket()

    return run_in_thread(work)


def open_socket(name: str) -> socket.socket:
    """A netlink socket inside the existing namespace `name`."""

    def work() -> socket.socket:
        _enter(name)
        return netlink_socket()

    return run_in_thread(work)


def delete(name: str) -> bool:
    """Remove namespace `name`; True if it existed. Idempotent."""
    path = netns_path(name)
    if not os.path.exists(path):
        return False
    _libc.umount2(path.encode(), MNT_DETACH)
    try:
        os.unlink(path)
    except FileNotFoundError:
        return False
    return True


def rename(old: str, new: str) -> None:
    """Give namespace `old` the name `new` (bind its nsfs file at the new path, then
    detach the old one): no thread, no namespace creation. Used to hand a pre-created
    namespace to an instance."""
    _prepare_rundir()
    target = netns_path(new)
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    try:
        _check(_libc.mount(netns_path(old).encode(), target.encode(), b"none", MS_BIND, None), "mount", new)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise
    delete(old)


NS_GET_NSTYPE = 0xB703  # ioctl on a namespace file: which kind of namespace it is


def is_network_namespace(path: str) -> bool:
    """Whether `path` is a network namespace file (/run/netns/X, /proc/PID/ns/net)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return False
    try:
        return fcntl.ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET
    except OSError:
        return False
    finally:
        os.close(fd)


def not_adoptable(path: str, managed: tuple[str, ...]) -> str:
    """Why the namespace at `path` must not be handed to an attachment ('' if it may):
    it is the machine's initial namespace, this process's own (the host's), or one named
    with a `managed` prefix (autonet's own: an instance's, a router's, a lab host's, or
    one attached already). An attachment wires and addresses the namespace it is given, so any of
    these would hand a caller the host's own network or another instance's."""
    if not is_network_namespace(path):
        return f"{path}: not a network namespace"

    def same(other: str) -> bool:  # the same namespace: the same nsfs inode
        with contextlib.suppress(OSError):
            return os.path.samefile(path, other)
        return False

    for own, what in (("/proc/1/ns/net", "the machine's initial"), ("/proc/self/ns/net", "the host's own")):
        if same(own):
            return f"{path}: {what} network namespace"
    for name in (n for n in list_names() if n.startswith(managed)):
        if same(netns_path(name)):
            return f"{path}: a namespace autonet manages ({name})"
    return ""


def adopt(name: str, path: str) -> None:
    """Give the namespace at `path` (a container runtime's) the name `name` too, by a
    bind mount; `delete(name)` later drops only that name, never the runtime's namespace."""
    if not is_network_namespace(path):
        raise ValueError(f"{path}: not a network namespace")
    _prepare_rundir()
    target = netns_path(name)
    if os.path.exists(target):
        return
    fd = os.open(target, os.O_RDONLY | os.O_CREAT | os.O_EXCL, 0)
    os.close(fd)
    try:
        _check(_libc.mount(path.encode(), target.encode(), b"none", MS_BIND, None), "mount", name)
    except OSError:
        with contextlib.suppress(OSError):
            os.unlink(target)
        raise


def call_in(name: str, work: Callable[[], T]) -> T:
    """Run `work` in a thread that has entered namespace `name` (e.g. to write /proc/sys/net)."""

    def entered() -> T:
        _enter(name)
        return work()

    return run_in_thread(entered)


def write_sysctls(name: str, values: dict[str, str]) -> None:
    """Set per-namespace sysctls such as net.ipv4.ip_forward inside namespace `name`."""

    def work() -> None:
        for key, value in values.items():
            path = "/proc/sys/" + key.replace(".", "/")
            with open(path, "w") as handle:
                handle.write(value)

    call_in(name, work)


def inode(name: str) -> int:
    """The namespace's inode, to recognise processes living in it (/proc/PID/ns/net)."""
    return os.stat(netns_path(name)).st_ino


def pids_in(name: str) -> list[int]:
    """PIDs of processes whose network namespace is `name`."""
    try:
        target = inode(name)
    except FileNotFoundError:
        return []
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}/ns/net").st_ino == target:
                found.append(int(entry))
        except OSError as exc:
            if exc.errno not in (errno.ENOENT, errno.ESRCH, errno.EACCES):
                raise
    return found


def connect_tcp(name: str, address: tuple[str, int], timeout: float) -> socket.socket:
    """A TCP connection opened from inside namespace `name` (the socket stays in it):
    how a process on this machine talks to an address only that namespace can reach."""

    def connect() -> socket.socket:
        return socket.create_connection(address, timeout=timeout)

    return call_in(name, connect)
