"""Change tracking, for every reader alike: what changed under its directory since it last
looked, and what that change was (as watchdog's ``DirectorySnapshotDiff`` is one object).

- :class:`Changes`: the paths watchdog reported since the last pass (``mark``), or every
  known one where the directory is not watched (``poll``), and whether the first listing
  was made (``scanned``); a database is its own: ``sqlite_sessions.WatchedDatabase``
  (its identity compared with the last read's);
- :func:`listing`, :func:`find_files`: what is there, never through a link;
  :func:`lstat_signature`: a file's inode, size and modification time;
- :func:`diff_writes`: a re-read's rows against the last read's: which were written since
  (work: ``last_write`` is now), which are as they were.
"""

from __future__ import annotations

import fnmatch
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Protocol, TypeVar

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
MAX_SCAN_DEPTH = 6  # how deep under a watched directory files are looked for

Signature = tuple[int, int, int] | None


def lmtime(path: Path) -> float:
    """Modification time of the path itself (a link is not followed); 0.0 if none."""
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def lstat_signature(path: Path) -> Signature:
    """(inode, size, modification time in ns) of the path itself, or None."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return (info.st_ino, info.st_size, info.st_mtime_ns)


def find_files(directory: Path, pattern: str | tuple[str, ...], newer_than: float) -> list[Path]:
    """Files named like ``pattern`` (or one of several) under ``directory`` (not through
    links, at most :data:`MAX_SCAN_DEPTH` levels down), modified at or after
    ``newer_than``."""
    patterns = (pattern,) if isinstance(pattern, str) else pattern
    found: list[Path] = []
    base = len(directory.parts)
    for current, dirs, files in os.walk(directory, followlinks=False):
        if len(Path(current).parts) - base >= MAX_SCAN_DEPTH:
            dirs[:] = []
        for name in files:
            if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                path = Path(current) / name
                if lmtime(path) >= newer_than:
                    found.append(path)
    return found


def listing(
    directory: Path,
    names: re.Pattern[str] | None = None,
    newer_than: float | None = None,
    kind: Callable[[int], bool] | None = None,
    limit: int | None = None,
) -> list[tuple[str, os.stat_result | None]]:
    """The entries of a real directory (never listed through a link): those
    whose name ``names`` matches, of ``kind`` (``stat.S_ISDIR`` ...) and modified at or
    after ``newer_than`` (both by ``lstat``: a link is no directory and no file), at most
    ``limit`` (the first by name); with their ``lstat`` where it was taken. [] where it
    cannot be listed."""
    try:  # opened without following a link, listed and looked into through that fd
        fd = os.open(directory, os.O_RDONLY | _O_DIRECTORY | _O_NOFOLLOW | _O_CLOEXEC)
    except OSError:
        return []
    entries: list[tuple[str, os.stat_result | None]] = []
    try:
        found = os.listdir(fd)
        if limit is not None:
            found.sort()  # which ones: the same every time
        for name in found:
            if names is not None and not names.match(name):
                continue
            info = None
            if newer_than is not None or kind is not None:
                try:
                    info = os.stat(name, dir_fd=fd, follow_symlinks=False)
                except OSError:
                    continue
                if (kind is not None and not kind(info.st_mode)) or (
                    newer_than is not None and info.st_mtime < newer_than
                ):
                    continue
            entries.append((name, info))
            if limit is not None and len(entries) >= limit:
                break
    except OSError:
        return []
    finally:
        os.close(fd)
    return entries


class Changes:
    """What changed since the reader last looked."""

    def __init__(self) -> None:
        self.dirty: set[Path] = set()
        self.scanned = False  # the first listing (again after a poll) is done

    def mark(self, path: Path) -> None:
        self.dirty.add(path)

    def poll(self, known: Iterable[Path] = ()) -> None:
        """No events from there: list again, and look at every known file again."""
        self.scanned = False
        self.dirty.update(known)

    def take(self) -> set[Path]:
        """The paths changed since the last call."""
        dirty, self.dirty = self.dirty, set()
        return dirty


class Written(Protocol):
    last_write: float | None


W = TypeVar("W", bound=Written)


def diff_writes(
    before: dict[str, W],
    after: dict[str, W],
    now: float,
    first: bool,
    worked: Callable[[W, W], bool],
) -> None:
    """Each row of a re-read (``after``) gets its ``last_write``: the last read's where it
    did not work since (``worked(old, new)``); ``now`` where it did, or where it is new
    since the first read (``first``: what the first read finds is history, not work)."""
    for key, row in after.items():
        old = before.get(key)
        if old is not None:
            row.last_write = now if worked(old, row) else old.last_write
        elif not first:
            row.last_write = now
