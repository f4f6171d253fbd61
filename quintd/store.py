"""The on-disk state: the session table and the event queue, in one SQLite database.

Both change in one transaction, so a crash can neither lose a transition nor
announce it twice. An event counts as emitted once :meth:`Store.apply` returns:
by then it is committed with ``synchronous=FULL`` in WAL mode. Each event gets a
stable id when enqueued; it is the ``Idempotency-Key`` of every send, and the body
bytes are stored as sent, so retries are identical.

One connection, guarded by a lock: the main loop, the shipper thread and the
control thread take turns, which keeps SQLite to a single writer.
"""

from __future__ import annotations

import logging
import os
import shutil
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from quintd.model import LifecycleEvent, Session, State, format_timestamp, parse_timestamp
from quintd.part_settings import PartSettings, setting
from quintd.private_files import open_private_file
from quintd.schema import migrate, refuse_newer


@dataclass(frozen=True)
class QueuedEvent:
    seq: int
    event_id: str  # the Idempotency-Key
    session_id: str
    state: str
    body: bytes
    enqueued_at: float
    attempts: int


@dataclass(frozen=True)
class DeadLetter:
    seq: int
    event_id: str
    session_id: str
    state: str
    body: bytes
    enqueued_at: float
    failed_at: float
    status: int | None
    reason: str


@dataclass(frozen=True)
class QueueStats:
    depth: int
    bytes: int
    oldest_enqueued_at: float | None
    dead_letters: int
    max_bytes: int
    produced: int  # events ever enqueued in this database
    coalesced: int  # intermediate idle/active events dropped at the bound
    refused: int  # transitions not queued at the bound
    refused_by_state: dict[str, int]  # the same, by the state they carried
    lost_databases: int  # corrupt databases moved aside
    last_loss: str | None  # what the last move-aside said


_EVENT_COLUMNS = "seq, event_id, session_id, state, body, enqueued_at, attempts"
_COUNTERS = (
    "produced",
    "coalesced",
    "refused",
    "refused:active",
    "refused:idle",
    "refused:ended",
    "lost_databases",
)
# Above this many queued bytes a drain to zero gives the space back to the filesystem.
_RECLAIM_AFTER_BYTES = 4 * 1024 * 1024
_CORRUPT = ("malformed", "not a database", "corrupt", "encrypted")

log = logging.getLogger("quintd.store")


def free_disk_bytes(path: Path) -> int:
    return shutil.disk_usage(path).free


class StoreSettings(PartSettings):
    max_bytes: int = setting(
        256 * 1024 * 1024,
        file="queue.max_bytes",
        ge=1024 * 1024,
        doc='Bound on the queued event bodies (at least 1 MiB). See "At the bound".',
    )
    min_free_disk: int = setting(
        64 * 1024 * 1024,
        file="queue.min_free_disk",
        ge=0,
        doc="Free bytes to leave on the state dir's filesystem; below it the same bound "
        "policy applies.",
    )


class Store:
    """Both tables, one connection. ``max_bytes`` bounds the queued bodies; below
    ``min_free_disk`` free bytes on the database's filesystem the same policy applies."""

    def __init__(
        self,
        path: Path,
        settings: StoreSettings | None = None,
        *,
        free_disk: Callable[[Path], int] = free_disk_bytes,
    ) -> None:
        self.path = path
        self.settings = settings or StoreSettings()
        self._free_disk = free_disk
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        loss: str | None = None
        try:
            self._conn = self._connect()
        except sqlite3.DatabaseError as exc:
            if not _is_corrupt(exc):
                raise
            loss = self._move_aside(str(exc))
            self._conn = self._connect()
        if loss is not None:
            with self.transaction() as conn:
                _bump(conn, "lost_databases", 1)
                conn.execute(
                    "INSERT OR REPLACE INTO meta(key, value) VALUES ('last_loss', ?)", (loss,)
                )
        self._bytes = int(
            self._conn.execute("SELECT COALESCE(SUM(LENGTH(body)), 0) FROM events").fetchone()[0]
        )
        self._peak_bytes = self._bytes

    def reconfigure(self, settings: StoreSettings) -> None:
        self.settings = settings

    @property
    def max_bytes(self) -> int:
        return self.settings.max_bytes

    @property
    def min_free_disk(self) -> int:
        return self.settings.min_free_disk

    def _connect(self) -> sqlite3.Connection:
        # Owner-only from the first byte: create the file before SQLite does; never open
        # it through a link or take over someone else's file.
        os.close(open_private_file(self.path))
        conn = sqlite3.connect(
            self.path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        try:
            refuse_newer(conn, self.path)
            # Before any table exists, so a new database can give space back later.
            conn.execute("PRAGMA auto_vacuum=INCREMENTAL")
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute("PRAGMA synchronous=FULL")
            if sys.platform == "darwin":
                conn.execute("PRAGMA fullfsync=ON")
            (verdict,) = conn.execute("PRAGMA quick_check").fetchone()
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed: {verdict}")
            for version in migrate(conn, self.path):
                if version > 1:
                    log.info("database migrated to schema version %d", version)
        except BaseException:
            conn.close()
            raise
        for suffix in ("-wal", "-shm"):
            _chmod_owner_only(Path(str(self.path) + suffix))
        return conn

    def _move_aside(self, reason: str) -> str:
        """Keep an unreadable database for inspection and say what was lost."""
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.path.with_name(f"{self.path.name}.corrupt-{stamp}")
        lost = _count_events(self.path)
        for suffix in ("", "-wal", "-shm"):
            source = Path(str(self.path) + suffix)
            if source.exists():
                os.replace(source, Path(str(target) + suffix))
        what = "an unknown number of" if lost is None else str(lost)
        message = (
            f"{time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())} database unreadable "
            f"({reason}); moved to {target}; {what} queued events lost"
        )
        log.error("%s", message)
        return message

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction on the database's one connection (the store's parts and
        the signing cache share it, and its lock)."""
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                # SQLite rolls back on its own after some errors (SQLITE_FULL): a second
                # rollback would raise and hide the error that matters.
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise
            try:
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    # -- sessions + events, together ----------------------------------------------

    def apply(
        self,
        events: Iterable[LifecycleEvent],
        upserts: Iterable[Session] = (),
        removals: Iterable[str] = (),
        now: float | None = None,
    ) -> int:
        """Enqueue events and update the session table in one durable transaction (one
        commit for the whole group). Returns the number of events enqueued.

        At the bound (``max_bytes`` of queued bodies, or less than ``min_free_disk`` free
        on disk): first drop queued intermediate idle/active events of sessions that have
        newer ones queued (coalesced); if still at the bound, do not queue transitions and
        updates (refused). A session's first event and its ``ended`` are always queued.
        Both are counted and shown by ``quintd status``."""
        enqueued_at = time.time() if now is None else now
        pending = [(e, e.body()) for e in events]
        upsert_rows = [_session_row(s) for s in upserts]
        removal_rows = [(sid,) for sid in removals]
        if not pending and not upsert_rows and not removal_rows:
            return 0
        with self.transaction() as conn:
            incoming = sum(len(body) for _, body in pending)
            refused = 0
            if pending and self._over_bound(incoming):
                self._bytes -= _coalesce(conn)
                if self._over_bound(incoming):
                    kept = [(e, b) for e, b in pending if e.kind in ("start", "end")]
                    refused = len(pending) - len(kept)
                    for event, _ in pending:
                        if event.kind not in ("start", "end"):
                            _bump(conn, f"refused:{event.state}", 1)
                    pending = kept
            rows = [
                (str(uuid.uuid4()), e.session_id, e.state, body, enqueued_at) for e, body in pending
            ]
            conn.executemany(
                "INSERT INTO events(event_id, session_id, state, body, enqueued_at) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(
                "INSERT OR REPLACE INTO sessions(session_id, platform, pid, start_time_ms, "
                "state, started_at, last_seen, session_name, model, signing_id, parent_id, "
                "native_id, uid) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                upsert_rows,
            )
            conn.executemany("DELETE FROM sessions WHERE session_id = ?", removal_rows)
            # Remembered so that a conversation coming back never reuses an ended id.
            conn.executemany(
                "INSERT OR REPLACE INTO ended_sessions(session_id, ended_at) VALUES (?, ?)",
                [(sid, enqueued_at) for (sid,) in removal_rows],
            )
            if refused:
                _bump(conn, "refused", refused)
            if rows:
                _bump(conn, "produced", len(rows))
            # Under the lock, with the rows: the shipper thread changes it too.
            self._bytes += sum(len(body) for _, body in pending)
            self._peak_bytes = max(self._peak_bytes, self._bytes)
        if refused:
            log.warning("queue at its bound: %d transition(s) not queued", refused)
        return len(rows)

    def _over_bound(self, incoming: int) -> bool:
        if self._bytes + incoming > self.max_bytes:
            return True
        try:
            return self._free_disk(self.path.parent) < self.min_free_disk
        except OSError:
            return False

    def load_sessions(self) -> list[Session]:
        with self._lock:
            cursor = self._conn.execute(
                "SELECT session_id, platform, pid, start_time_ms, state, started_at, "
                "last_seen, session_name, model, signing_id, parent_id, native_id, uid "
                "FROM sessions"
            )
            rows = cursor.fetchall()
        return [_session_from_row(row) for row in rows]

    def load_ended(self, max_age_s: float = 90 * 86400) -> list[str]:
        """Ids of sessions that ended in the last ``max_age_s`` seconds (older ones are
        forgotten: a conversation resumed after that long is far past any server's
        memory of it)."""
        cutoff = time.time() - max_age_s
        with self.transaction() as conn:
            conn.execute("DELETE FROM ended_sessions WHERE ended_at < ?", (cutoff,))
            conn.execute("DELETE FROM delivered_ends WHERE delivered_at < ?", (cutoff,))
            rows = conn.execute("SELECT session_id FROM ended_sessions ORDER BY ended_at")
            return [str(r[0]) for r in rows.fetchall()]

    def touch_sessions(self, sessions: Iterable[Session]) -> None:
        """Record when live sessions were last seen (the stamp of their `ended` event
        should they die while quintd is down)."""
        rows = [(format_timestamp(s.last_seen), s.session_id) for s in sessions]
        if not rows:
            return
        with self.transaction() as conn:
            conn.executemany("UPDATE sessions SET last_seen = ? WHERE session_id = ?", rows)

    # -- the queue ------------------------------------------------------------------

    def peek(self, limit: int) -> list[QueuedEvent]:
        """The oldest queued events, in enqueue order."""
        with self._lock:
            rows = self._conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
        return [QueuedEvent(*row) for row in rows]

    def claim_batch(self, limit: int, max_bytes: int) -> tuple[str, list[QueuedEvent]]:
        """The next batch for a batch body, with its Idempotency-Key. A batch claimed
        before (and not yet delivered) comes back whole, under the same key, so a retry
        never re-sends stored events under a new key."""
        with self.transaction() as conn:
            # Through the partial index: claimed rows are few, unclaimed ones many.
            row = conn.execute(
                "SELECT batch_key FROM events INDEXED BY events_claimed "
                "WHERE batch_key IS NOT NULL ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is not None:
                key = str(row[0])
                rows = conn.execute(
                    f"SELECT {_EVENT_COLUMNS} FROM events WHERE batch_key = ? ORDER BY seq",
                    (key,),
                ).fetchall()
                return key, [QueuedEvent(*r) for r in rows]
            rows = conn.execute(
                f"SELECT {_EVENT_COLUMNS} FROM events ORDER BY seq LIMIT ?", (limit,)
            ).fetchall()
            chosen: list[QueuedEvent] = []
            size = 16
            for r in rows:
                event = QueuedEvent(*r)
                size += len(event.body) + 1
                if chosen and size > max_bytes:
                    break
                chosen.append(event)
            key = str(uuid.uuid4())
            conn.executemany(
                "UPDATE events SET batch_key = ? WHERE seq = ?", [(key, e.seq) for e in chosen]
            )
            return key, chosen

    def rekey(self, seqs: Iterable[int]) -> str:
        """Give claimed events a batch of their own (a split batch's half), with a new
        key kept on disk so that its retries use it too."""
        key = str(uuid.uuid4())
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE events SET batch_key = ? WHERE seq = ?", [(key, seq) for seq in seqs]
            )
        return key

    def ack(self, seqs: Iterable[int]) -> None:
        """Delete delivered events (after a 2xx for them), in one commit."""
        wanted = list(seqs)
        if not wanted:
            return
        with self.transaction() as conn:
            freed = 0
            for chunk in _chunks(wanted):
                marks = ",".join("?" * len(chunk))
                # Remembered so that a requeue never sends anything after a delivered end.
                conn.execute(
                    "INSERT OR REPLACE INTO delivered_ends(session_id, delivered_at) "
                    f"SELECT session_id, ? FROM events WHERE state = 'ended' AND seq IN ({marks})",
                    (time.time(), *chunk),
                )
                (size,) = conn.execute(
                    f"SELECT COALESCE(SUM(LENGTH(body)), 0) FROM events WHERE seq IN ({marks})",
                    chunk,
                ).fetchone()
                freed += int(size)
                conn.execute(f"DELETE FROM events WHERE seq IN ({marks})", chunk)
            self._bytes -= freed
            drained = self._bytes <= 0 and self._peak_bytes >= _RECLAIM_AFTER_BYTES
        if drained:
            self.reclaim_space()

    def reclaim_space(self) -> None:
        """Give the space of a drained queue back to the filesystem."""
        with self._lock:
            # execute() steps the pragma once (one page); executescript runs it to the end.
            self._conn.executescript("PRAGMA incremental_vacuum;")
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
            self._peak_bytes = max(self._bytes, 0)

    def record_attempt(self, seqs: Iterable[int]) -> None:
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE events SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs]
            )

    def dead_letter(self, event: QueuedEvent, status: int | None, reason: str) -> None:
        """Move an event the server will never accept out of the queue, with the reason."""
        with self.transaction() as conn:
            deleted = conn.execute("DELETE FROM events WHERE seq = ?", (event.seq,)).rowcount
            if not deleted:
                return  # gone already (coalesced meanwhile)
            conn.execute(
                "INSERT OR REPLACE INTO dead_letters(seq, event_id, session_id, state, body, "
                "enqueued_at, failed_at, status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    event.seq,
                    event.event_id,
                    event.session_id,
                    event.state,
                    event.body,
                    event.enqueued_at,
                    time.time(),
                    status,
                    reason[:2000],
                ),
            )
            self._bytes -= len(event.body)

    def dead_letters(self) -> list[DeadLetter]:
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, event_id, session_id, state, body, enqueued_at, failed_at, "
                "status, reason FROM dead_letters ORDER BY seq"
            ).fetchall()
        return [DeadLetter(*row) for row in rows]

    def requeue(
        self, seqs: Iterable[int] | None = None, force: bool = False
    ) -> tuple[int, list[tuple[int, str]]]:
        """Put dead letters back in the queue (all of them when ``seqs`` is None), each at
        its original place in the queue's order and with its original Idempotency-Key, so
        that its session's later events still follow it. An event whose session's `ended`
        has already been delivered is refused (it would arrive after the end) unless
        ``force``. Returns how many moved, and (seq, reason) for those refused."""
        refused: list[tuple[int, str]] = []
        with self.transaction() as conn:
            if seqs is None:
                chosen = [r[0] for r in conn.execute("SELECT seq FROM dead_letters ORDER BY seq")]
            else:
                chosen = list(seqs)
            moved = 0
            for seq in chosen:
                row = conn.execute(
                    "SELECT seq, event_id, session_id, state, body, enqueued_at "
                    "FROM dead_letters WHERE seq = ?",
                    (seq,),
                ).fetchone()
                if row is None:
                    refused.append((seq, "no such dead letter"))
                    continue
                ended = conn.execute(
                    "SELECT 1 FROM delivered_ends WHERE session_id = ?", (row[2],)
                ).fetchone()
                if ended is not None and not force:
                    refused.append(
                        (
                            seq,
                            "its session's `ended` was delivered already: it would arrive "
                            "after the end (use --force to send it anyway)",
                        )
                    )
                    continue
                conn.execute(
                    "INSERT INTO events(seq, event_id, session_id, state, body, enqueued_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    row,
                )
                conn.execute("DELETE FROM dead_letters WHERE seq = ?", (seq,))
                self._bytes += len(row[4])
                moved += 1
        return moved, refused

    def stats(self) -> QueueStats:
        with self._lock:
            depth, size, oldest = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MIN(enqueued_at) FROM events"
            ).fetchone()
            (dead,) = self._conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
            meta = dict(self._conn.execute("SELECT key, value FROM meta").fetchall())
        return QueueStats(
            depth=int(depth),
            bytes=int(size),
            oldest_enqueued_at=oldest,
            dead_letters=int(dead),
            max_bytes=self.max_bytes,
            produced=int(meta.get("produced", 0)),
            coalesced=int(meta.get("coalesced", 0)),
            refused=int(meta.get("refused", 0)),
            refused_by_state={
                state: int(meta.get(f"refused:{state}", 0))
                for state in ("active", "idle", "ended")
                if int(meta.get(f"refused:{state}", 0))
            },
            lost_databases=int(meta.get("lost_databases", 0)),
            last_loss=meta.get("last_loss"),
        )


def _coalesce(conn: sqlite3.Connection) -> int:
    """Drop queued idle/active events that a newer queued event of the same session
    supersedes (each event carries the full current state), keeping each session's
    first queued event and every `ended`, and leaving claimed batches whole.
    Returns the bytes freed."""
    victims = conn.execute(
        """
        SELECT e.seq, LENGTH(e.body) FROM events e
        WHERE e.state != 'ended' AND e.batch_key IS NULL
          AND e.seq > (SELECT MIN(f.seq) FROM events f WHERE f.session_id = e.session_id)
          AND e.seq < (SELECT MAX(g.seq) FROM events g WHERE g.session_id = e.session_id)
        """
    ).fetchall()
    if not victims:
        return 0
    for chunk in _chunks([seq for seq, _ in victims]):
        conn.execute(f"DELETE FROM events WHERE seq IN ({','.join('?' * len(chunk))})", chunk)
    _bump(conn, "coalesced", len(victims))
    log.warning("queue at its bound: coalesced %d intermediate event(s)", len(victims))
    return sum(int(size) for _, size in victims)


def _bump(conn: sqlite3.Connection, key: str, by: int) -> None:
    assert key in _COUNTERS
    conn.execute(
        "INSERT INTO meta(key, value) VALUES (?, ?) "
        "ON CONFLICT(key) DO UPDATE SET value = CAST(value AS INTEGER) + ?",
        (key, str(by), by),
    )


def _chunks(values: list[int], size: int = 500) -> Iterator[list[int]]:
    for start in range(0, len(values), size):
        yield values[start : start + size]


def _is_corrupt(exc: sqlite3.DatabaseError) -> bool:
    return isinstance(exc, sqlite3.DatabaseError) and any(
        word in str(exc).lower() for word in _CORRUPT
    )


def _count_events(path: Path) -> int | None:
    """How many events an unreadable database held, if that much can still be read."""
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=1.0)
        try:
            return int(conn.execute("SELECT COUNT(*) FROM events").fetchone()[0])
        finally:
            conn.close()
    except sqlite3.Error:
        return None


def _session_row(s: Session) -> tuple[object, ...]:
    return (
        s.session_id,
        s.platform,
        s.pid,
        s.start_time_ms,
        s.state,
        format_timestamp(s.started_at),
        format_timestamp(s.last_seen),
        s.session_name,
        s.model,
        s.signing_id,
        s.parent_id,
        s.native_id,
        s.uid,
    )


def _session_from_row(row: tuple[object, ...]) -> Session:
    (
        session_id,
        platform,
        pid,
        start_ms,
        state,
        started,
        seen,
        name,
        model,
        signing,
        parent,
        native,
        uid,
    ) = row
    return Session(
        session_id=str(session_id),
        platform=str(platform),
        pid=int(pid),  # type: ignore[call-overload]
        start_time_ms=int(start_ms),  # type: ignore[call-overload]
        state=_state(state),
        started_at=parse_timestamp(str(started)),
        last_seen=parse_timestamp(str(seen)),
        session_name=None if name is None else str(name),
        model=None if model is None else str(model),
        signing_id=None if signing is None else str(signing),
        parent_id=None if parent is None else str(parent),
        native_id=None if native is None else str(native),
        uid=None if uid is None else int(uid),  # type: ignore[call-overload]
    )


def _state(value: object) -> State:
    if value == "idle":
        return "idle"
    if value == "ended":
        return "ended"
    return "active"


def _chmod_owner_only(path: Path) -> None:
    with suppress(FileNotFoundError):
        os.chmod(path, 0o600)
