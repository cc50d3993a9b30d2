"""Instance logs: size cap with copytruncate rotation, tail by lines, and follow.

An instance's process writes its stdout and stderr straight into `<name>.log`, opened
with O_APPEND, so that it keeps running (and logging) while the agent is down. The
agent therefore cannot rotate by renaming (the process would go on writing into the
renamed file): when the log grows past the cap it copies it to `<name>.log.1`
(replacing the previous one) and truncates it to zero; the process's next write lands
at the new end. Output written between the end of the copy and the truncation is lost,
which the agent keeps to a few microseconds by truncating as soon as the copy is done.

Rotation and followers run in the agent's event loop and rotation never yields in the
middle, so a follower sees a log either before or after a rotation, never in between;
it tells that there was one (or more) from a count of rotations kept per log.
"""

from __future__ import annotations

import logging
import os
import shutil
from collections import deque
from pathlib import Path
from typing import BinaryIO

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES = 10 * 1024 * 1024
CHUNK = 64 * 1024
COPY_BUFFER = 1024 * 1024


# Rotations done by this process, per log: how a follower knows what `.1` holds for it.
_rotations: dict[Path, int] = {}


def rotated(path: Path) -> Path:
    return path.with_name(path.name + ".1")


def files_of(path: Path) -> tuple[Path, Path]:
    """The files that make up the log at `path`: the current one and the rotated one."""
    return path, rotated(path)


def rotate_if_larger(path: Path, max_bytes: int) -> bool:
    """Copy the log to `<log>.1` and truncate it if it holds more than `max_bytes`."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        return False
    if max_bytes <= 0 or size <= max_bytes:
        return False
    target = rotated(path)
    tmp = target.with_name(target.name + ".tmp")
    with open(path, "r+b") as source, open(tmp, "wb") as copy:
        shutil.copyfileobj(source, copy, COPY_BUFFER)
        # Truncate right after the copy reached the end: what the process writes in
        # between is lost, so nothing else (not even the rename) happens in between.
        os.ftruncate(source.fileno(), 0)
    os.replace(tmp, target)
    _rotations[path] = _rotations.get(path, 0) + 1
    return True


def remove(path: Path) -> None:
    for each in files_of(path):
        each.unlink(missing_ok=True)
    _rotations.pop(path, None)


def _ending(path: Path, lines: int, limit: int, end: int | None = None) -> bytes:
    """The end of a file (up to byte `end`) holding at least `lines` whole lines (all of it
    if it is shorter, or if `lines` is 0), at most `limit` bytes."""
    try:
        handle = open(path, "rb")  # noqa: SIM115 (a with-block would swallow the missing file)
    except FileNotFoundError:
        return b""
    with handle:
        size = handle.seek(0, os.SEEK_END)
        position = size if end is None else min(end, size)
        data = b""
        # One newline more than lines: the last line may lack its newline.
        while position > 0 and len(data) < limit and (lines == 0 or data.count(b"\n") <= lines):
            step = min(CHUNK, position, limit - len(data))
            position -= step
            handle.seek(position)
            data = handle.read(step) + data
    return data


def split_lines(data: bytes) -> list[bytes]:
    """Lines with their newline; a last line without one is a line too (as for `tail -n`)."""
    parts = data.split(b"\n")
    lines = [part + b"\n" for part in parts[:-1]]
    if parts[-1]:
        lines.append(parts[-1])
    return lines


def tail(path: Path, lines: int = 0, limit: int = 0, end: int | None = None) -> bytes:
    """The last `lines` lines of the log (0: all of it), reaching into `<log>.1` if the
    current file holds fewer; at most `limit` bytes (0: no limit), cut at a line start.
    `end`: read the current file only up to there (where a `Follower` starts)."""
    limit = limit or 1 << 62
    data = _ending(path, lines, limit, end)
    # With exactly `lines` newlines the first line may be the rest of one begun in `.1`.
    if lines == 0 or data.count(b"\n") <= lines:
        # The rotated file ends where the current one starts (maybe within a line).
        data = _ending(rotated(path), lines, limit - len(data)) + data
    if lines:
        data = b"".join(split_lines(data)[-lines:])
    if len(data) >= limit:
        newline = data.find(b"\n")
        if 0 <= newline < len(data) - 1:
            data = data[newline + 1 :]
    return data


class Follower:
    """Reads what is appended to a log after a starting point, across rotations.

    After a rotation, what was written after our offset and before the rotation is in
    `<log>.1` from the same offset: a handle to it is opened at the next read (so that
    a further rotation does not take it away) and read before the current file from its
    start. If several rotations came between two reads, the output of all but the last
    is gone: the newest `.1` is read from its start. A `read` runs without yielding to
    the event loop, so the agent's rotations happen between reads, never within one.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = self._size()
        self.rotations = _rotations.get(path, 0)
        self._pending: deque[BinaryIO] = deque()  # rotated files not read to their end

    def _size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0

    def _notice_rotation(self) -> None:
        rotations = _rotations.get(self.path, 0)
        if rotations == self.rotations:
            return
        start = self.offset if rotations == self.rotations + 1 else 0
        if start == 0 and self.offset:
            log.debug("%s: rotated faster than followed; some output skipped", self.path)
        self.rotations = rotations
        self.offset = 0
        try:
            handle = open(rotated(self.path), "rb")  # noqa: SIM115 (kept open across reads)
        except FileNotFoundError:
            return
        handle.seek(start)
        self._pending.append(handle)

    def read(self, limit: int = CHUNK) -> bytes:
        """What was written since the last call, at most `limit` bytes."""
        self._notice_rotation()
        out = b""
        while self._pending and len(out) < limit:
            chunk = self._pending[0].read(limit - len(out))
            if chunk:
                out += chunk
            else:
                self._pending.popleft().close()
        if self._pending or len(out) >= limit:
            return out
        if self._size() < self.offset:  # truncated by someone else: start over
            self.offset = 0
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.offset)
                chunk = handle.read(limit - len(out))
        except FileNotFoundError:
            chunk = b""
        self.offset += len(chunk)
        return out + chunk

    def close(self) -> None:
        while self._pending:
            self._pending.popleft().close()
