"""The database schema and its migrations, oldest first.

A database records its ``schema_version`` in ``meta``. Opening one runs, in order and each
in its own transaction, every migration above that version; a database written by a newer
quintd (a version above the last one here) is refused, never changed. A migration never
touches the queued events' ids or bodies: what was queued before an upgrade is delivered
after it under its original Idempotency-Key, byte for byte.
"""

from __future__ import annotations

import sqlite3

from quintd.errors import QuintdError

# Version 1: quintd 0.1.0.
_V1 = """
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
CREATE TABLE IF NOT EXISTS ended_sessions (
    session_id TEXT PRIMARY KEY,
    ended_at REAL NOT NULL
);
CREATE INDEX IF NOT EXISTS events_claimed ON events(batch_key) WHERE batch_key IS NOT NULL;
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
    parent_id TEXT,
    native_id TEXT
);
"""

# Version 2: the owner of each session; signing identities kept across restarts; the
# session ids that conversations took over from their process; delivered sessions' ends.
_V2 = """
ALTER TABLE sessions ADD COLUMN uid INTEGER;
CREATE TABLE signing_cache (
    dev INTEGER NOT NULL,
    ino INTEGER NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    ctime_ns INTEGER NOT NULL,
    info TEXT NOT NULL,  -- JSON of the SigningInfo
    seen_at REAL NOT NULL,
    PRIMARY KEY (dev, ino, size, mtime_ns, ctime_ns)
);
CREATE TABLE session_aliases (
    alias TEXT PRIMARY KEY,  -- what names a conversation: platform, owner, native id
    session_id TEXT NOT NULL,  -- the id it is announced under
    created_at REAL NOT NULL
);
CREATE TABLE delivered_ends (
    session_id TEXT PRIMARY KEY,  -- its `ended` reached the server
    delivered_at REAL NOT NULL
);
"""

MIGRATIONS: tuple[tuple[int, str], ...] = ((1, _V1), (2, _V2))
SCHEMA_VERSION = MIGRATIONS[-1][0]


class SchemaTooNewError(QuintdError):
    """The database was written by a newer quintd."""


def schema_version(conn: sqlite3.Connection) -> int:
    """The version a database records (0: empty, a new file)."""
    has_meta = conn.execute(
        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'meta'"
    ).fetchone()
    if has_meta is None:
        return 0
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    try:
        return int(row[0]) if row is not None else 0
    except (TypeError, ValueError):
        raise sqlite3.DatabaseError(f"database corrupt: schema_version {row[0]!r}") from None


def refuse_newer(conn: sqlite3.Connection, path: object) -> int:
    """The database's version; a database from a newer quintd is refused before anything
    writes to it."""
    current = schema_version(conn)
    if current > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"{path}: database schema version {current} is newer than this quintd "
            f"understands ({SCHEMA_VERSION}); run the newer quintd, or move the file aside"
        )
    return current


def migrate(conn: sqlite3.Connection, path: object) -> list[int]:
    """Bring a database to :data:`SCHEMA_VERSION`; the versions applied, in order."""
    current = refuse_newer(conn, path)
    applied = []
    for version, script in MIGRATIONS:
        if version <= current:
            continue
        try:
            conn.executescript(
                "BEGIN IMMEDIATE;\n"
                + script
                + "\nINSERT OR REPLACE INTO meta(key, value) VALUES ('schema_version', "
                + f"'{version}');\nCOMMIT;"
            )
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        applied.append(version)
    return applied
