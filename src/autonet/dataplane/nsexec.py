"""Exec a command inside a named network namespace and cgroup, as a given user.

Run as a script (`python -S -I nsexec.py --netns N [--resolv-conf F] [--cgroup DIR ...]
[--user U] -- CMD...`) so that it starts in a few milliseconds and imports nothing but
the standard library. In this order, while still root, it enters the network
namespace, gives the command a private mount namespace in which the VPC's resolv.conf
is bind-mounted over /etc/resolv.conf (what `ip netns exec` does with
/etc/netns/NAME), joins the instance's cgroups (a process that is no longer root cannot
leave them), and lets the user's group open ICMP echo sockets in the namespace
(net.ipv4.ping_group_range, per namespace: `ping` works without a capability); then it
drops to the user and execs. Used both for automaton processes and for `autonet exec`,
so both see the same view.

Dropping to a user other than root (`--user UID`, the uid the agent leased the instance,
its gid the same number; or a name from /etc/passwd) leaves the process nothing of
root: no supplementary groups, every capability out of the bounding set (so no setuid
or file-capability binary can give one back) and out of the ambient and inheritable
sets, uid and gid changed for real, effective and saved ids (which empties the
permitted and effective sets), and PR_SET_NO_NEW_PRIVS. `--user root` keeps root with
every capability: the escape hatch for automatons that ask for it, and for the lab's
own daemons.
"""

from __future__ import annotations

import ctypes
import os
import pwd
import sys

CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000
MS_REC = 16384
MS_SLAVE = 1 << 19
MS_BIND = 4096
PR_CAPBSET_DROP = 24
PR_SET_NO_NEW_PRIVS = 38
PR_CAP_AMBIENT = 47
PR_CAP_AMBIENT_CLEAR_ALL = 4
CAP_VERSION_3 = 0x20080522


class _CapHeader(ctypes.Structure):
    _fields_ = [("version", ctypes.c_uint32), ("pid", ctypes.c_int)]


class _CapData(ctypes.Structure):
    _fields_ = [
        ("effective", ctypes.c_uint32),
        ("permitted", ctypes.c_uint32),
        ("inheritable", ctypes.c_uint32),
    ]


def _fail(message: str) -> None:
    sys.stderr.write(f"autonet-nsexec: {message}\n")
    sys.exit(127)


def _check(libc: ctypes.CDLL, result: int, what: str) -> None:
    if result != 0:
        _fail(f"{what}: {os.strerror(ctypes.get_errno())}")


def _who(user: str) -> tuple[int, int, str, str]:
    """uid, gid, home and name of `user`: a number (gid the same) or a name in /etc/passwd."""
    if user.isdigit():
        try:
            entry = pwd.getpwuid(int(user))
        except KeyError:
            return int(user), int(user), "/", user
        return entry.pw_uid, entry.pw_uid, entry.pw_dir, entry.pw_name
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        _fail(f"no such user {user}")
        raise
    return entry.pw_uid, entry.pw_gid, entry.pw_dir, entry.pw_name


def drop_privileges(libc: ctypes.CDLL, uid: int, gid: int) -> None:
    """Become uid/gid with no capability left and no way to gain one (see the docstring)."""
    with open("/proc/sys/kernel/cap_last_cap") as handle:
        last_cap = int(handle.read())
    for cap in range(last_cap + 1):
        _check(libc, libc.prctl(PR_CAPBSET_DROP, cap, 0, 0, 0), f"drop capability {cap}")
    _check(libc, libc.prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0), "clear ambient capabilities")
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    header, data = _CapHeader(CAP_VERSION_3, 0), (_CapData * 2)()
    _check(libc, libc.capset(ctypes.byref(header), data), "clear capabilities")
    _check(libc, libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "set no_new_privs")


def main(argv: list[str]) -> None:
    netns = resolv = user = cwd = None
    cgroups: list[str] = []
    while argv and argv[0] != "--":
        if len(argv) < 2:
            _fail(f"flag {argv[0]} needs a value")
        flag, value, argv = argv[0], argv[1], argv[2:]
        if flag == "--netns":
            netns = value
        elif flag == "--resolv-conf":
            resolv = value
        elif flag == "--user":
            user = value
        elif flag == "--cgroup":
            cgroups.append(value)
        elif flag == "--cwd":
            cwd = value
        else:
            _fail(f"unknown flag {flag}")
    command = argv[1:]
    if not netns or not command:
        _fail("usage: nsexec.py --netns NAME [--resolv-conf FILE] [--cgroup DIR] [--user USER] -- CMD...")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        _fail(f"cannot enter netns {netns}: {os.strerror(ctypes.get_errno())}")
    os.close(fd)
    if resolv:
        _check(libc, libc.unshare(CLONE_NEWNS), "unshare mount namespace")
        libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None)
        if libc.mount(resolv.encode(), b"/etc/resolv.conf", b"none", MS_BIND, None) != 0:
            _fail(f"bind {resolv} over /etc/resolv.conf: {os.strerror(ctypes.get_errno())}")
    for group in cgroups:
        try:
            with open(os.path.join(group, "cgroup.procs"), "w") as handle:
                handle.write("0")  # 0: the writing process
        except OSError as exc:
            _fail(f"cannot join cgroup {group}: {exc.strerror}")
    if user and user != "root":
        uid, gid, home, name = _who(user)
        if uid != 0:
            try:
                with open("/proc/sys/net/ipv4/ping_group_range", "w") as handle:
                    handle.write(f"{gid} {gid}")
            except OSError:
                pass  # ping then needs root; nothing else does
        drop_privileges(libc, uid, gid)
        os.environ["HOME"] = home
        os.environ["USER"] = name
    if cwd:
        os.chdir(cwd)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        _fail(f"cannot run {command[0]}: {exc.strerror}")


def launcher_argv(
    netns: str,
    command: list[str],
    user: str | None = None,
    resolv_conf: str | None = None,
    cgroups: list[str] | None = None,
) -> list[str]:
    """The argv that runs `command` in `netns` (and `cgroups`) as `user` through this script."""
    argv = [sys.executable, "-S", "-I", os.path.abspath(__file__), "--netns", netns]
    if user:
        argv += ["--user", user]
    if resolv_conf:
        argv += ["--resolv-conf", resolv_conf]
    for group in cgroups or []:
        argv += ["--cgroup", group]
    return [*argv, "--cwd", "/", "--", *command]


if __name__ == "__main__":
    main(sys.argv[1:])
