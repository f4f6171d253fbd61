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

The database is a user's, and SQL is code: a view over an endless recursive query, a
trigger, a virtual table or a 100 MB value would make the root daemon run or hold what the
user wrote. So (:func:`_guard`): only plain tables are read (an authorizer refuses views,
recursive queries and virtual tables); a progress handler aborts a query past its budget
(VM steps and wall time) or when the daemon stops; values longer than
:data:`MAX_VALUE_BYTES` are refused (``sqlite3.Connection.setlimit``). The query runs on a
thread of its own, which the caller waits for at most :data:`QUERY_DEADLINE_S` (a thread
stuck in an ``open()`` of a FIFO swapped in is left behind, never waited for); a database
that fails any of this is set aside (:data:`SET_ASIDE`), with a back-off, and counted.
A database read in place, immutable, is opened through the descriptor that was checked
(``/proc/self/fd/N``), never by its path again.
"""

from __future__ import annotations

import os
import sqlite3
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

from quintd.sources.files import ReadStats, Refused, open_under

T = TypeVar("T")
BUSY_TIMEOUT_S = 0.2
MAX_COPY_BYTES = 256 * 1024 * 1024
# One query's budget: SQLite VM steps (checked every PROGRESS_EVERY) and wall time. The
# agents' own queries here take well under 10 ms and 10^6 steps.
QUERY_STEPS = 20_000_000
PROGRESS_EVERY = 10_000
QUERY_DEADLINE_S = 2.0
MAX_VALUE_BYTES = 16 * 1024 * 1024  # a longer string or blob is refused, never loaded
# A database that failed the guard is not read again for this long (doubling per failure).
SET_ASIDE_S = 30.0
MAX_SET_ASIDE_S = 900.0
# Set when the daemon stops: a running query is aborted at its next progress check.
STOPPING = threading.Event()


@dataclass
class _Aside:
    until: float
    strikes: int
    reason: str
    uid: int  # whose file failed
    changed_ns: int  # its st_ctime_ns then: a file written since is another database


@dataclass
class SetAside:
    """Databases set aside (by device and inode), and how many times any was.

    An inode is reused once its file is deleted: a database set aside blocks only a file
    of the same owner at that inode (another user's new database there is read), and
    after a single failure only while it is unchanged (a new database of the same user is
    read too). A database that failed twice stays set aside, however often it is written:
    rewriting it must not buy another slow guarded read each pass."""

    files: dict[tuple[int, int], _Aside] = field(default_factory=dict)
    count: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def blocked(self, key: tuple[int, int], uid: int = -1, changed_ns: int = 0) -> bool:
        with self.lock:
            entry = self.files.get(key)
            if entry is None or time.monotonic() >= entry.until or entry.uid != uid:
                return False
            return entry.strikes >= 2 or entry.changed_ns == changed_ns

    def strike(self, key: tuple[int, int], reason: str, uid: int = -1, changed_ns: int = 0) -> None:
        with self.lock:
            entry = self.files.get(key)
            same = entry is not None and entry.uid == uid
            strikes = entry.strikes + 1 if entry is not None and same else 1
            wait = min(SET_ASIDE_S * 2 ** (strikes - 1), MAX_SET_ASIDE_S)
            self.files[key] = _Aside(time.monotonic() + wait, strikes, reason, uid, changed_ns)
            self.count += 1

    def reasons(self) -> dict[str, int]:
        """Databases set aside now, by reason."""
        now = time.monotonic()
        out: dict[str, int] = {}
        with self.lock:
            for entry in self.files.values():
                if entry.until > now:
                    out[entry.reason] = out.get(entry.reason, 0) + 1
        return out


SET_ASIDE = SetAside()


@dataclass(frozen=True)
class DatabaseRead:
    value: object
    owner: int  # the uid owning the database file


class UnreadableDatabase(Exception):
    """The database could not be read this time (locked, torn, missing, refused)."""


def _status(root: Path, path: Path) -> os.stat_result | None:
    try:
        fd, info = open_under(root, path)
    except OSError:
        return None
    os.close(fd)
    return info


def _identity(root: Path, path: Path) -> tuple[int, int, int] | None:
    info = _status(root, path)
    return None if info is None else (info.st_dev, info.st_ino, info.st_uid)


def read_database(
    root: Path,
    path: Path,
    query: Callable[[sqlite3.Connection], T],
    stats: ReadStats | None = None,
) -> tuple[T, int]:
    """Run ``query`` on a read-only connection to the database at ``path`` (under the
    agent's directory ``root``); returns its result and the owner's uid. Raises
    :class:`UnreadableDatabase` when it cannot be read safely now."""
    status = _status(root, path)
    if status is None:
        if stats is not None and _is_refused(root, path):
            stats.refused += 1
        raise UnreadableDatabase(f"{path}: cannot be opened safely")
    before = (status.st_dev, status.st_ino, status.st_uid)
    key = (status.st_dev, status.st_ino)
    if SET_ASIDE.blocked(key, status.st_uid, status.st_ctime_ns):
        raise UnreadableDatabase(f"{path}: set aside (it failed the guard)")
    wal = Path(str(path) + "-wal")
    shm = Path(str(path) + "-shm")
    try:
        if _regular(shm) and _regular(wal) and _in_use(shm):
            # In place, with its -wal and -shm: SQLite needs the name to find them.
            result = _query(lambda: f"file:{quote(str(path))}?mode=ro", query)
        elif _regular(wal) and os.lstat(wal).st_size > 0:
            result = _query_copy(root, path, wal, query)
        else:
            result = _query_checked(root, path, query)
    except Guarded as exc:
        SET_ASIDE.strike(key, exc.reason, status.st_uid, status.st_ctime_ns)
        if stats is not None:
            stats.garbage += 1
        raise UnreadableDatabase(f"{path}: {exc}") from None
    except sqlite3.Error as exc:
        raise UnreadableDatabase(f"{path}: {exc}") from None
    if _identity(root, path) != before:
        raise UnreadableDatabase(f"{path}: replaced while it was read")
    return result, before[2]


class Guarded(sqlite3.Error):
    """A query the guard stopped (``reason``: past its budget, a view, too big...)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def _query_checked(root: Path, path: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    """Immutable, through the descriptor checked: nothing is resolved by path again."""
    try:
        fd, _ = open_under(root, path)
    except OSError as exc:
        raise sqlite3.OperationalError(str(exc)) from None
    try:
        return _query(lambda: f"file:/proc/self/fd/{fd}?mode=ro&immutable=1", query)
    finally:
        os.close(fd)


def _query(uri: Callable[[], str], query: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``query`` guarded, on a thread of its own; wait for it within the deadline."""
    outcome: dict[str, Any] = {}
    connection: list[sqlite3.Connection] = []
    done = threading.Event()

    def work() -> None:
        try:
            conn = sqlite3.connect(uri(), uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)
        except BaseException as exc:
            outcome["error"] = exc
            done.set()
            return
        connection.append(conn)
        try:
            _guard(conn)
            outcome["value"] = query(conn)
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            conn.close()
            done.set()

    thread = threading.Thread(target=work, name="quintd-sqlite", daemon=True)
    thread.start()
    if not done.wait(QUERY_DEADLINE_S + 0.5):
        if connection:
            connection[0].interrupt()  # a query: stops at its next step
        # A thread stuck in open() (a FIFO swapped in) is left behind, never waited for.
        raise Guarded("past its deadline")
    error = outcome.get("error")
    if error is not None:
        if isinstance(error, sqlite3.Error) and "interrupted" in str(error):
            raise Guarded(_GUARD_REASONS.get(id(connection[0]), "past its budget")) from None
        message = str(error)
        if isinstance(error, sqlite3.DatabaseError):
            # The authorizer's refusals: "not authorized", or "access to <table>.<column>
            # is prohibited" (a virtual table's column).
            if "not authorized" in message or "is prohibited" in message:
                raise Guarded("not a plain table") from None
            if "too big" in message:
                raise Guarded("a value too big") from None
        raise error
    value: T = outcome["value"]
    return value


_GUARD_REASONS: dict[int, str] = {}


def _guard(conn: sqlite3.Connection) -> None:
    """Plain tables only, a budget of steps and time, no value over MAX_VALUE_BYTES."""
    conn.setlimit(sqlite3.SQLITE_LIMIT_LENGTH, MAX_VALUE_BYTES)
    conn.setlimit(sqlite3.SQLITE_LIMIT_SQL_LENGTH, 100_000)
    conn.setlimit(sqlite3.SQLITE_LIMIT_COMPOUND_SELECT, 16)
    conn.setlimit(sqlite3.SQLITE_LIMIT_ATTACHED, 0)
    conn.execute("PRAGMA query_only=ON")
    virtual = {
        str(name)
        for (name,) in conn.execute(
            "SELECT name FROM sqlite_master WHERE type = 'table' AND sql LIKE 'CREATE VIRTUAL%'"
        )
    }
    ends = time.monotonic() + QUERY_DEADLINE_S
    steps = [0]

    def progress() -> int:
        steps[0] += PROGRESS_EVERY
        if steps[0] > QUERY_STEPS:
            _GUARD_REASONS[id(conn)] = "past its budget of steps"
            return 1
        if time.monotonic() > ends:
            _GUARD_REASONS[id(conn)] = "past its deadline"
            return 1
        if STOPPING.is_set():
            _GUARD_REASONS[id(conn)] = "the daemon stops"
            return 1
        return 0

    def authorize(
        action: int, arg1: str | None, arg2: str | None, db: str | None, source: str | None
    ) -> int:
        if action == sqlite3.SQLITE_READ and (source is not None or arg1 in virtual):
            return sqlite3.SQLITE_DENY  # through a view or trigger, or a virtual table
        if action == sqlite3.SQLITE_RECURSIVE:
            return sqlite3.SQLITE_DENY
        return sqlite3.SQLITE_OK

    conn.set_authorizer(authorize)
    conn.set_progress_handler(progress, PROGRESS_EVERY)


def _query_copy(root: Path, path: Path, wal: Path, query: Callable[[sqlite3.Connection], T]) -> T:
    """Read a copy: nobody has the database open, and reading it in place would make
    SQLite create a ``-shm`` beside it. The copy is root's disk and time, spent at a user's
    will: the bytes copied are counted as they are copied (a file grown after its size
    was checked stops at the cap), a database is copied again only once it changed, and
    one user's databases at most :data:`COPY_BUDGET_BYTES` a minute (touching a 250 MB
    database's ``-wal`` ten times once made root write 4 GB); what is refused is counted
    (:data:`COPIES`)."""
    ident = _identity(root, path)
    if ident is None:
        raise sqlite3.OperationalError(f"{path}: gone")
    COPIES.admit(_signature(path, wal), ident[2])
    with tempfile.TemporaryDirectory(prefix="quintd-db-") as private:
        target = Path(private) / "copy.db"
        copied = 0
        for source, dest in ((path, target), (wal, Path(str(target) + "-wal"))):
            try:
                fd, info = open_under(root, source)
            except OSError as exc:
                raise sqlite3.OperationalError(str(exc)) from None
            try:
                room = MAX_COPY_BYTES - copied
                if info.st_size > room:
                    COPIES.refuse("too large to copy")
                    raise Guarded("too large to copy")
                try:
                    copied += copy_capped(fd, dest, room)
                except Guarded:
                    COPIES.spent(ident[2], MAX_COPY_BYTES)  # what it cost until it stopped
                    raise
            finally:
                os.close(fd)
        COPIES.spent(ident[2], copied)
        return _query(lambda: f"file:{quote(str(target))}?mode=ro", query)


def copy_capped(fd: int, dest: Path, cap: int) -> int:
    """Copy what ``fd`` reads into ``dest``, counting the bytes as they come: past ``cap``
    it stops (a file extended, sparsely, after its size was checked once made root write
    2,500 MiB) and raises :class:`Guarded`. Returns the bytes copied."""
    copied = 0
    with open(dest, "wb") as out:
        while True:
            chunk = os.read(fd, min(COPY_CHUNK, cap + 1 - copied))
            if not chunk:
                return copied
            copied += len(chunk)
            if copied > cap:
                COPIES.refuse("too large to copy")
                raise Guarded("too large to copy (it grew)")
            out.write(chunk)


COPY_CHUNK = 1024 * 1024


@dataclass
class CopyBudget:
    """What copying agents' databases may cost: once per database per interval, and so many
    bytes per user per minute."""

    last: dict[tuple[int, ...], float] = field(default_factory=dict)
    spending: dict[int, list[tuple[float, int]]] = field(default_factory=dict)
    refused: dict[str, int] = field(default_factory=dict)
    bytes_copied: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def admit(self, key: tuple[int, ...], uid: int) -> None:
        now = time.monotonic()
        with self.lock:
            copied_at = self.last.get(key)
            if copied_at is not None and now - copied_at < RECOPY_AFTER_S:
                # Copied as it stands a moment ago: a reader asking again (its query
                # failed, or it wants another row) waits for a change or the interval.
                self._refuse("unchanged since its last copy")
                raise sqlite3.OperationalError("unchanged since its last copy")
            recent = [(t, n) for t, n in self.spending.get(uid, []) if now - t < 60.0]
            self.spending[uid] = recent
            if sum(n for _, n in recent) >= COPY_BUDGET_BYTES:
                self._refuse("the user's copy budget is spent")
                raise sqlite3.OperationalError("this user's copy budget is spent for now")
            self.last[key] = now
            if len(self.last) > 10_000:
                self.last = {k: t for k, t in self.last.items() if now - t < 600.0}

    def spent(self, uid: int, count: int) -> None:
        with self.lock:
            self.spending.setdefault(uid, []).append((time.monotonic(), count))
            self.bytes_copied += count

    def refuse(self, reason: str) -> None:
        with self.lock:
            self._refuse(reason)

    def _refuse(self, reason: str) -> None:
        self.refused[reason] = self.refused.get(reason, 0) + 1


COPY_BUDGET_BYTES = 512 * 1024 * 1024  # per user per minute
RECOPY_AFTER_S = 60.0  # an unchanged database is copied again after this long at the soonest
COPIES = CopyBudget()


def _signature(path: Path, wal: Path) -> tuple[int, ...]:
    """What a copy was of: the database and its ``-wal`` as they stand (a link is not
    followed: a replaced file is another signature)."""
    out: list[int] = []
    for each in (path, wal):
        try:
            info = os.lstat(each)
        except OSError:
            out += [0, 0, 0, 0]
            continue
        out += [info.st_ino, info.st_size, info.st_mtime_ns, info.st_ctime_ns]
    return tuple(out)


WAL_INDEX_HEADER = 48  # bytes: the first copy of the WAL index header in the -shm


def wal_identity(root: Path, path: Path) -> object:
    """What changes whenever the database's writer commits: the database's and the WAL's
    inode, size and modification time, and the WAL index header (its change counter) in
    the ``-shm`` (reached safely from ``root``). As cheap as a stat, and blind to readers:
    quintd's own reads open the files (a file event) but change none of this."""
    seen: list[object] = []
    for each in (path, Path(str(path) + "-wal")):
        try:
            info = os.lstat(each)
            seen.append((info.st_ino, info.st_size, info.st_mtime_ns))
        except OSError:
            seen.append(None)
    try:
        fd, _info = open_under(root, Path(str(path) + "-shm"))
    except OSError:
        return (*seen, None)
    try:
        seen.append(os.pread(fd, WAL_INDEX_HEADER, 0))
    except OSError:
        seen.append(None)
    finally:
        os.close(fd)
    return tuple(seen)


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
