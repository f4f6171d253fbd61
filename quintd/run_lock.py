"""One daemon per state directory: an exclusive ``flock`` held for the daemon's lifetime,
with the holder's pid written in the file so that a second start can name it."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
from pathlib import Path

from quintd.errors import AlreadyRunningError
from quintd.private_files import open_private_file


class StateLock:
    """An exclusive lock on the state directory, held for the daemon's lifetime."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._fd: int | None = None

    def acquire(self) -> None:
        fd = open_private_file(self.path)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = ""
            with contextlib.suppress(OSError, ValueError):
                holder = f" (pid {int(os.pread(fd, 32, 0).decode().strip())})"
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise AlreadyRunningError(
                    f"another quintd is already running{holder} on state dir "
                    f"{self.path.parent}; stop it first or use a different paths.state_dir"
                ) from None
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
