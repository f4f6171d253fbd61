"""Opening the file an identity is taken from, as the untrusted input it is.

The daemon is root; the file is a user's. A binary is read through ``/proc/<pid>/exe``:
the file the kernel ran, even if its path was replaced since. A script (what an
interpreter runs) is opened by its path, but without following a link on its last
component, without blocking (a FIFO named like an agent's script must not hang the
examination), only if it is a regular file that the process's own user could read (a
link to ``/etc/shadow`` run through a copy of ``tail`` named ``node`` is never hashed),
only up to a size cap, and never when it is mostly holes (a sparse 4 GiB "script"). Every
refusal names its reason; the resolver counts them.

Reading runs against a deadline: a file that takes too long is given up, not waited for.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
_CHUNK = 1024 * 1024

# The largest file examined: agents' native binaries are 100-300 MB (Claude Code's 245 MB).
MAX_EXAMINED_BYTES = 1024 * 1024 * 1024
# Seconds one file's examination may take (hashing 245 MB takes ~1 s; a tarball to check it
# against, ~2 s more).
FILE_DEADLINE_S = 30.0


class Refused(Exception):
    """A file that is not examined, and why (``reason``: a short, fixed phrase)."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}{': ' + detail if detail else ''}")
        self.reason = reason


class Deadline:
    def __init__(self, seconds: float = FILE_DEADLINE_S) -> None:
        self.ends = time.monotonic() + seconds

    def check(self) -> None:
        if time.monotonic() > self.ends:
            raise Refused("deadline passed")


@dataclass(frozen=True)
class Target:
    """What to examine. ``path`` names the file (its package is found from it); ``opened``
    is what is opened (``/proc/<pid>/exe`` for a binary). ``uid``/``gids``: the process's
    user, who must be able to read a script (None: the daemon's own check only)."""

    path: str
    opened: str = ""
    uid: int | None = None
    gids: frozenset[int] = field(default_factory=frozenset)
    npm_caches: tuple[str, ...] = ()  # the process's own npm cache (npm_config_cache, ~/.npm)

    @property
    def open_path(self) -> str:
        return self.opened or self.path

    @property
    def through_kernel(self) -> bool:
        return self.open_path.startswith("/proc/") and self.open_path.endswith("/exe")


def binary(pid: int, path: str, uid: int | None = None, npm_caches: tuple[str, ...] = ()) -> Target:
    """The executable a process runs: opened through ``/proc/<pid>/exe``."""
    return Target(path=path, opened=f"/proc/{pid}/exe", uid=uid, npm_caches=npm_caches)


def readable_by(info: os.stat_result, uid: int | None, gids: frozenset[int]) -> bool:
    """Whether the user could read the file (by its mode bits; root only by its own)."""
    if uid is None or uid == 0:
        return True
    if info.st_uid == uid:
        return bool(info.st_mode & stat.S_IRUSR)
    if info.st_gid in gids:
        return bool(info.st_mode & stat.S_IRGRP)
    return bool(info.st_mode & stat.S_IROTH)


def open_target(target: Target) -> tuple[int, os.stat_result]:
    """The descriptor of the file to examine, and its ``fstat``; :class:`Refused` for
    anything but a regular, readable, bounded, dense file.

    Opening a device can have effects (a watchdog device starts its timer), so nothing is
    opened for reading before it is known to be a regular file: on Linux the path is first
    opened with ``O_PATH`` (which opens nothing), checked, and the same inode then reopened
    through ``/proc/self/fd``; elsewhere ``lstat`` first, then the open, then the same inode
    checked again."""
    follow = 0 if target.through_kernel else _O_NOFOLLOW  # /proc/<pid>/exe must be followed
    o_path = getattr(os, "O_PATH", 0)
    try:
        if o_path:
            handle = os.open(target.open_path, o_path | follow | _O_CLOEXEC)
            try:
                check(os.fstat(handle), target)
                fd = os.open(f"/proc/self/fd/{handle}", os.O_RDONLY | _O_NONBLOCK | _O_CLOEXEC)
            finally:
                os.close(handle)
        else:
            before = os.stat(target.open_path, follow_symlinks=target.through_kernel)
            check(before, target)
            fd = os.open(target.open_path, os.O_RDONLY | _O_NONBLOCK | _O_CLOEXEC | follow)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.ENOTDIR):
            raise Refused("a link", target.path) from exc
        raise Refused("cannot be opened", str(exc)) from exc
    try:
        info = os.fstat(fd)
        check(info, target)
        if not o_path and (info.st_dev, info.st_ino) != (before.st_dev, before.st_ino):
            raise Refused("replaced while opened", target.path)
    except BaseException:
        os.close(fd)
        raise
    return fd, info


def check(info: os.stat_result, target: Target) -> None:
    if stat.S_ISLNK(info.st_mode):
        raise Refused("a link", target.path)
    if not stat.S_ISREG(info.st_mode):
        raise Refused("not a regular file", target.path)
    if not target.through_kernel and not readable_by(info, target.uid, target.gids):
        raise Refused("not readable by its user", target.path)
    allocated = getattr(info, "st_blocks", 0) * 512
    if info.st_size > 16 * _CHUNK and allocated < info.st_size // 2:
        raise Refused("mostly holes (sparse)", f"{allocated} of {info.st_size} bytes")
    if info.st_size > MAX_EXAMINED_BYTES:
        raise Refused("too large", f"{info.st_size} bytes")


def chunks(fd: int, deadline: Deadline, limit: int = MAX_EXAMINED_BYTES) -> Iterator[bytes]:
    """The file's bytes from its start, chunk by chunk, within the deadline."""
    os.lseek(fd, 0, os.SEEK_SET)
    read = 0
    while read < limit:
        deadline.check()
        chunk = os.read(fd, min(_CHUNK, limit - read))
        if not chunk:
            return
        read += len(chunk)
        yield chunk


def digest(fd: int, deadline: Deadline, algorithm: str = "sha256") -> str:
    h = hashlib.new(algorithm)
    for chunk in chunks(fd, deadline):
        h.update(chunk)
    return h.hexdigest()
