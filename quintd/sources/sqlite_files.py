"""Reading an agent's SQLite database without disturbing the agent.

quintd never writes to an agent's database, never creates a file beside it (as root, a
``-shm`` or journal file quintd created would belong to root and break the agent), never
holds a lock or a read transaction longer than one short query, and never follows a link:

- the file is first reached by walking directory descriptors (:func:`open_under`), which
  also gives its owner;
- a database in WAL mode that a running process has open (its ``-shm`` is locked, as
  ``/proc/locks`` shows) is opened in place, read-only (``mode=ro``), with a short busy
  timeout: a reader's marks in the shared index are what every SQLite reader writes;
- a database with a ``-wal`` that nobody has open is copied, with its ``-wal``, into a
  private directory, and the copy is read: opened in place, SQLite would create or rewrite
  the ``-shm`` beside it;
- a database with neither is read as immutable (no locks, no side files).

After reading, the file is looked up again: if it was replaced meanwhile (a link or another
file swapped in), what was read is discarded.
"""

from __future__ import annotations

import os
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar
from urllib.parse import quote

from quintd.sources.files import ReadStats, Refused, open_under

T = TypeVar("T")
BUSY_TIMEOUT_S = 0.2
MAX_COPY_BYTES = 256 * 1024 * 1024


@dataclass(frozen=True)
class DatabaseRead:
    value: object
    owner: int  # the uid owning the database file


class UnreadableDatabase(Exception):
    """The database could not be read this time (locked, torn, missing, refused)."""


def _identity(root: Path, path: Path) -> tuple[int, int, int] | None:
    try:
        fd, info = open_under(root, path)
    except OSError:
        return None
    os.close(fd)
    return (info.st_dev, info.st_ino, info.st_uid)


def read_database(
    root: Path,
    path: Path,
    query: Callable[[sqlite3.Connection], T],
    stats: ReadStats | None = None,
) -> tuple[T, int]:
    """Run ``query`` on a read-only connection to the database at ``path`` (under the
    agent's directory ``root``); returns its result and the owner's uid. Raises
    :class:`UnreadableDatabase` when it cannot be read safely now."""
    before = _identity(root, path)
    if before is None:
        if stats is not None and _is_refused(root, path):
            stats.refused += 1
        raise UnreadableDatabase(f"{path}: cannot be opened safely")
    wal = Path(str(path) + "-wal")
    shm = Path(str(path) + "-shm")
    try:
        if _regular(shm) and _regular(wal) and _in_use(shm):
            result = _query(f"file:{quote(str(path))}?mode=ro", query)
        elif _regular(wal) and os.lstat(wal).st_size > 0:
            result = _query_copy(root, path, wal, query)
        else:
            result = _query(f"file:{quote(str(path))}?mode=ro&immutable=1", query)
    except sqlite3.Error as exc:
        raise UnreadableDatabase(f"{path}: {exc}") from None
    if _identity(root, path) != before:
        raise UnreadableDatabase(f"{path}: replaced while it was read")
    return result, before[2]


def _query(uri: str, query: Callable[[sqlite3.Connection], T]) -> T:
    conn = sqlite3.connect(uri, uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
    try:
        conn.execute("PRAGMA query_only=ON")
        return query(conn)
    finally:
        conn.close()


def _query_copy(root: Path, path: Path, wal: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    """Read a copy: nobody has the database open, and reading it in place would make
    SQLite create a ``-shm`` beside it."""
    with tempfile.TemporaryDirectory(prefix="quintd-db-") as private:
        target = Path(private) / "copy.db"
        for source, dest in ((path, target), (wal, Path(str(target) + "-wal"))):
            try:
                fd, info = open_under(root, source)
            except OSError as exc:
                raise sqlite3.OperationalError(str(exc)) from None
            try:
                if info.st_size > MAX_COPY_BYTES:
                    raise sqlite3.OperationalError(f"{source}: too large to copy")
                with open(fd, "rb", closefd=False) as src, open(dest, "wb") as out:
                    shutil.copyfileobj(src, out)
            finally:
                os.close(fd)
        return _query(f"file:{quote(str(target))}?mode=ro", query)


def _in_use(shm: Path) -> bool:
    """Whether a process holds a lock on the ``-shm`` (SQLite keeps one while the database
    is open). Linux: from /proc/locks; elsewhere, never assumed (the copy is read)."""
    try:
        info = os.lstat(shm)
        with open("/proc/locks", "rb") as fh:
            table = fh.read()
    except OSError:
        return False
    wanted = f"{os.major(info.st_dev):02x}:{os.minor(info.st_dev):02x}:{info.st_ino}".encode()
    return any(
        len(fields) > 5 and fields[5] == wanted
        for fields in (line.split() for line in table.splitlines())
    )


def _regular(path: Path) -> bool:
    try:
        return stat.S_ISREG(os.lstat(path).st_mode)
    except OSError:
        return False


def _is_refused(root: Path, path: Path) -> bool:
    try:
        fd, _ = open_under(root, path)
    except Refused:
        return True
    except OSError:
        return False
    os.close(fd)
    return False


def columns(conn: sqlite3.Connection, table: str) -> set[str]:
    """The columns a table has (an agent's schema changes between versions: read what is
    there, and fall back where a column is missing or renamed)."""
    return {str(row[1]) for row in conn.execute(f"PRAGMA table_info({quote_name(table)})")}


def quote_name(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def pick(available: set[str], *names: str) -> str | None:
    """The first of ``names`` the table has."""
    return next((n for n in names if n in available), None)


Row = Sequence[object]
