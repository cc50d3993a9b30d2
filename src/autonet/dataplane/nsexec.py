"""Exec a command inside a named network namespace, as a given user.

Run as a script (`python -S -I nsexec.py --netns N [--resolv-conf F] [--user U] -- CMD...`)
so that it starts in a few milliseconds and imports nothing but the standard library.
It enters the network namespace, gives the command a private mount namespace in which
the VPC's resolv.conf is bind-mounted over /etc/resolv.conf (what `ip netns exec` does
with /etc/netns/NAME), drops to the user, and execs. Used both for automaton processes
and for `autonet exec`, so both see the same view.
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


def _fail(message: str) -> None:
    sys.stderr.write(f"autonet-nsexec: {message}\n")
    sys.exit(127)


def main(argv: list[str]) -> None:
    netns = resolv = user = cwd = None
    while argv and argv[0] != "--":
        flag, value, argv = argv[0], argv[1], argv[2:]
        if flag == "--netns":
            netns = value
        elif flag == "--resolv-conf":
            resolv = value
        elif flag == "--user":
            user = value
        elif flag == "--cwd":
            cwd = value
        else:
            _fail(f"unknown flag {flag}")
    command = argv[1:]
    if not netns or not command:
        _fail("usage: nsexec.py --netns NAME [--resolv-conf FILE] [--user USER] -- CMD...")
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(f"/run/netns/{netns}", os.O_RDONLY)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        _fail(f"cannot enter netns {netns}: {os.strerror(ctypes.get_errno())}")
    os.close(fd)
    if resolv:
        if libc.unshare(CLONE_NEWNS) != 0:
            _fail(f"unshare mount namespace: {os.strerror(ctypes.get_errno())}")
        libc.mount(b"none", b"/", None, MS_REC | MS_SLAVE, None)
        if libc.mount(resolv.encode(), b"/etc/resolv.conf", b"none", MS_BIND, None) != 0:
            _fail(f"bind {resolv} over /etc/resolv.conf: {os.strerror(ctypes.get_errno())}")
    if user and user != "root":
        entry = pwd.getpwuid(int(user)) if user.isdigit() else pwd.getpwnam(user)
        os.setgroups([])
        os.setgid(entry.pw_gid)
        os.setuid(entry.pw_uid)
        os.environ["HOME"] = entry.pw_dir
        os.environ["USER"] = entry.pw_name
    if cwd:
        os.chdir(cwd)
    try:
        os.execvp(command[0], command)
    except OSError as exc:
        _fail(f"cannot run {command[0]}: {exc.strerror}")


def launcher_argv(
    netns: str, command: list[str], user: str | None = None, resolv_conf: str | None = None
) -> list[str]:
    """The argv that runs `command` in `netns` through this script."""
    argv = [sys.executable, "-S", "-I", os.path.abspath(__file__), "--netns", netns]
    if user:
        argv += ["--user", user]
    if resolv_conf:
        argv += ["--resolv-conf", resolv_conf]
    return [*argv, "--cwd", "/", "--", *command]


if __name__ == "__main__":
    main(sys.argv[1:])
