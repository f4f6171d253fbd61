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

import os
import sqlite3
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

from quintd.sessions import LifecycleEvent, Session, State, format_timestamp, parse_timestamp

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    event_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    state TEXT NOT NULL,
    body BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    batch_key TEXT  -- set when claimed for a batch body: the batch's Idempotency-Key
);
CREATE TABLE IF NOT EXISTS dead_letters (
    seq INTEGER PRIMARY KEY,
    event_id TEXT NOT NULL UNIQUE,
    session_id TEXT NOT NULL,
    state TEXT NOT NULL,
    body BLOB NOT NULL,
    enqueued_at REAL NOT NULL,
    failed_at REAL NOT NULL,
    status INTEGER,
    reason TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS sessions (
    session_id TEXT PRIMARY KEY,
    platform TEXT NOT NULL,
    pid INTEGER NOT NULL,
    start_time_ms INTEGER NOT NULL,
    state TEXT NOT NULL,
    started_at TEXT NOT NULL,
    last_seen TEXT NOT NULL,
    session_name TEXT,
    model TEXT,
    signing_id TEXT,
    parent_id TEXT
);
"""


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
class QueueStats:
    depth: int
    bytes: int
    oldest_enqueued_at: float | None
    dead_letters: int


class Store:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)
        # Owner-only from the first byte: create the file before SQLite does.
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        self._conn = sqlite3.connect(
            path, check_same_thread=False, isolation_level=None, timeout=30.0
        )
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=FULL")
        if sys.platform == "darwin":
            self._conn.execute("PRAGMA fullfsync=ON")
        self._conn.executescript(_SCHEMA)
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR IGNORE INTO meta(key, value) VALUES ('schema_version', ?)",
                (str(SCHEMA_VERSION),),
            )
        for suffix in ("-wal", "-shm"):
            _chmod_owner_only(Path(str(path) + suffix))

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # -- sessions + events, together ----------------------------------------------

    def apply(
        self,
        events: Iterable[LifecycleEvent],
        upserts: Iterable[Session] = (),
        removals: Iterable[str] = (),
        now: float | None = None,
    ) -> int:
        """Enqueue events and update the session table in one durable transaction.
        Returns the number of events enqueued."""
        enqueued_at = time.time() if now is None else now
        rows = [(str(uuid.uuid4()), e.session_id, e.state, e.body(), enqueued_at) for e in events]
        upsert_rows = [_session_row(s) for s in upserts]
        removal_rows = [(sid,) for sid in removals]
        if not rows and not upsert_rows and not removal_rows:
            return 0
        with self._transaction() as conn:
            conn.executemany(
                "INSERT INTO events(event_id, session_id, state, body, enqueued_at) "
                "VALUES (?, ?, ?, ?, ?)",
                rows,
            )
            conn.executemany(
                "INSERT OR REPLACE INTO sessions(session_id, platform, pid, start_time_ms, "
                "state, started_at, last_seen, session_name, model, signing_id, parent_id) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                upsert_rows,
            )
            conn.executemany("DELETE FROM sessions WHERE session_id = ?", removal_rows)
        return len(rows)

    def load_sessions(self) -> list[Session]:
        with self._lock:
            cursor = self._conn.execute(
                "SELECT session_id, platform, pid, start_time_ms, state, started_at, "
                "last_seen, session_name, model, signing_id, parent_id FROM sessions"
            )
            rows = cursor.fetchall()
        return [_session_from_row(row) for row in rows]

    def touch_sessions(self, sessions: Iterable[Session]) -> None:
        """Record when live sessions were last seen (the stamp of their `ended` event
        should they die while quintd is down)."""
        rows = [(format_timestamp(s.last_seen), s.session_id) for s in sessions]
        if not rows:
            return
        with self._transaction() as conn:
            conn.executemany("UPDATE sessions SET last_seen = ? WHERE session_id = ?", rows)

    # -- the queue ------------------------------------------------------------------

    def peek(self, limit: int) -> list[QueuedEvent]:
        """The oldest queued events, in enqueue order."""
        with self._lock:
            rows = self._conn.execute(
                "SELECT seq, event_id, session_id, state, body, enqueued_at, attempts "
                "FROM events ORDER BY seq LIMIT ?",
                (limit,),
            ).fetchall()
        return [QueuedEvent(*row) for row in rows]

    def claim_batch(self, limit: int, max_bytes: int) -> tuple[str, list[QueuedEvent]]:
        """The next batch for a batch body, with its Idempotency-Key. A batch claimed
        before (and not yet delivered) comes back whole, under the same key, so a retry
        never re-sends stored events under a new key."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT batch_key FROM events WHERE batch_key IS NOT NULL ORDER BY seq LIMIT 1"
            ).fetchone()
            if row is not None:
                key = str(row[0])
                rows = conn.execute(
                    "SELECT seq, event_id, session_id, state, body, enqueued_at, attempts "
                    "FROM events WHERE batch_key = ? ORDER BY seq",
                    (key,),
                ).fetchall()
                return key, [QueuedEvent(*r) for r in rows]
            rows = conn.execute(
                "SELECT seq, event_id, session_id, state, body, enqueued_at, attempts "
                "FROM events ORDER BY seq LIMIT ?",
                (limit,),
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
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE events SET batch_key = ? WHERE seq = ?", [(key, seq) for seq in seqs]
            )
        return key

    def ack(self, seqs: Iterable[int]) -> None:
        """Delete delivered events (after a 2xx for them)."""
        with self._transaction() as conn:
            conn.executemany("DELETE FROM events WHERE seq = ?", [(s,) for s in seqs])

    def record_attempt(self, seqs: Iterable[int]) -> None:
        with self._transaction() as conn:
            conn.executemany(
                "UPDATE events SET attempts = attempts + 1 WHERE seq = ?", [(s,) for s in seqs]
            )

    def dead_letter(self, event: QueuedEvent, status: int | None, reason: str) -> None:
        """Move an event the server will never accept out of the queue, with the reason."""
        with self._transaction() as conn:
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
            conn.execute("DELETE FROM events WHERE seq = ?", (event.seq,))

    def stats(self) -> QueueStats:
        with self._lock:
            depth, size, oldest = self._conn.execute(
                "SELECT COUNT(*), COALESCE(SUM(LENGTH(body)), 0), MIN(enqueued_at) FROM events"
            ).fetchone()
            (dead,) = self._conn.execute("SELECT COUNT(*) FROM dead_letters").fetchone()
        return QueueStats(int(depth), int(size), oldest, int(dead))


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
    )


def _session_from_row(row: tuple[object, ...]) -> Session:
    (session_id, platform, pid, start_ms, state, started, seen, name, model, signing, parent) = row
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
