"""Schema migrations: a database written by quintd 0.1.0 (schema 1), with events queued,
opened by today's store and drained through a real server on 127.0.0.1."""

from __future__ import annotations

import json
import shutil
import sqlite3
from pathlib import Path

import pytest
from conftest import TOKEN, wait_until
from ingest_server import IngestServer

from quintd import schema
from quintd.errors import QuintdError
from quintd.schema import MIGRATIONS, SCHEMA_VERSION, SchemaTooNewError
from quintd.shipper import DeliverySettings, Shipper
from quintd.store import Store

V1 = Path(__file__).parent / "fixtures" / "store-v1" / "quintd-0.1.0.db"


def _copy(tmp_path: Path) -> Path:
    path = tmp_path / "quintd.db"
    shutil.copy(V1, path)
    return path


def _rows(path: Path, sql: str) -> list[tuple]:
    conn = sqlite3.connect(path)
    try:
        return conn.execute(sql).fetchall()
    finally:
        conn.close()


def test_the_fixture_is_schema_1_with_events_queued() -> None:
    assert _rows(V1, "SELECT value FROM meta WHERE key = 'schema_version'") == [("1",)]
    assert len(_rows(V1, "SELECT * FROM events")) == 3


def test_a_v1_queue_is_delivered_once_under_its_keys_with_its_bodies(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    queued = _rows(path, "SELECT event_id, body FROM events ORDER BY seq")
    dead_before = _rows(path, "SELECT event_id, body, reason FROM dead_letters ORDER BY seq")
    store = Store(path)
    assert _rows(path, "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]
    # What 0.1.0 knew is still there: live sessions (no owner recorded then), ended ids.
    sessions = store.load_sessions()
    assert len(sessions) == 2 and all(s.uid is None for s in sessions)
    assert len(store.load_ended()) == 3
    # The fixture's events name the signing identity of the sleep binary that made them
    # (Debian's /bin/sleep): this run's own only if an earlier test happened to run that
    # binary unmarked. No agent runs here, only the store's events are sent: all are ours.
    with IngestServer(token=TOKEN, own_only=False) as server:
        settings = DeliverySettings(endpoint=server.url, token=TOKEN, timeout=5.0, start_jitter=0.0)
        shipper = Shipper(store, settings)
        shipper.start()
        try:
            server.wait_for(lambda evs: len(evs) == len(queued), what="the v1 queue")
            wait_until(lambda: store.stats().depth == 0, what="acks recorded")
        finally:
            shipper.stop(2.0)
        got = [(r.idempotency_key, r.event) for r in server.events]
        expected = [(key, json.loads(body)) for key, body in queued]
        assert sorted(got, key=str) == sorted(expected, key=str)  # each once, byte for byte
        for session in {e["session_id"] for _, e in expected}:  # each session in order
            assert [k for k, e in got if e["session_id"] == session] == [
                k for k, e in expected if e["session_id"] == session
            ]
        assert server.violations == []
    # Dead letters are kept as they were.
    assert [(d.event_id, d.body, d.reason) for d in store.dead_letters()] == dead_before
    store.close()


def test_migrating_twice_changes_nothing(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    Store(path).close()
    before = _rows(path, "SELECT seq, event_id, body FROM events")
    Store(path).close()
    assert _rows(path, "SELECT seq, event_id, body FROM events") == before


def test_a_database_from_a_newer_quintd_is_refused_untouched(tmp_path: Path) -> None:
    path = _copy(tmp_path)
    conn = sqlite3.connect(path)
    conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    conn.commit()
    conn.close()
    before = path.read_bytes()
    with pytest.raises(SchemaTooNewError, match="schema version 99 is newer") as info:
        Store(path)
    assert isinstance(info.value, QuintdError)
    assert path.read_bytes() == before
    assert not list(tmp_path.glob("*.corrupt-*"))  # not mistaken for a damaged file


def test_a_new_database_starts_at_the_latest_schema(tmp_path: Path) -> None:
    Store(tmp_path / "new.db").close()
    assert _rows(tmp_path / "new.db", "SELECT value FROM meta WHERE key = 'schema_version'") == [
        (str(SCHEMA_VERSION),)
    ]


def _version(path: Path) -> list[tuple]:
    return _rows(path, "SELECT value FROM meta WHERE key = 'schema_version'")


def _tables(path: Path) -> set[str]:
    return {row[0] for row in _rows(path, "SELECT name FROM sqlite_master WHERE type = 'table'")}


def test_a_migration_that_fails_half_way_leaves_the_last_one_that_succeeded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A schema-1 database and a (made-up) migration 3 that fails after its first
    statement: 2 is applied and stamped 2, nothing of 3 stays, and the next start
    (with 3 fixed) applies 3. Stamping 2 with the last version (3) would skip 3 for ever."""
    path = _copy(tmp_path)
    broken = "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(schema, "MIGRATIONS", (*MIGRATIONS, (3, broken)))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    with pytest.raises(sqlite3.OperationalError, match="no such table: no_such_table"):
        Store(path)
    assert _version(path) == [("2",)]
    assert "signing_cache" in _tables(path)  # 2 went through
    assert "half_done" not in _tables(path)  # 3 did not, not even its first statement
    fixed = "CREATE TABLE half_done (x INTEGER);"
    monkeypatch.setattr(schema, "MIGRATIONS", (*MIGRATIONS, (3, fixed)))
    store = Store(path)
    store.close()
    assert _version(path) == [("3",)]
    assert "half_done" in _tables(path)
    assert len(_rows(path, "SELECT * FROM events")) == 3  # the queue untouched throughout


# -- migrate() itself (written for the survivors of the mutation run) ------------------------


def test_the_version_of_a_database_without_one_is_zero(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "x.db")
    try:
        assert schema.schema_version(conn) == 0  # no meta table
        conn.execute("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        assert schema.schema_version(conn) == 0  # a meta table, no version in it
        conn.execute("INSERT INTO meta VALUES ('schema_version', 'two')")
        with pytest.raises(sqlite3.DatabaseError, match="corrupt: schema_version 'two'"):
            schema.schema_version(conn)
    finally:
        conn.close()


def test_migrate_says_which_versions_it_applied(tmp_path: Path) -> None:
    fresh = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    old = sqlite3.connect(_copy(tmp_path), isolation_level=None)
    try:
        assert schema.migrate(fresh, "new.db") == [version for version, _ in MIGRATIONS]
        assert schema.migrate(fresh, "new.db") == []
        assert schema.migrate(old, "v1.db") == [2]
    finally:
        fresh.close()
        old.close()


def test_a_failed_migration_leaves_no_transaction_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broken = "CREATE TABLE half_done (x INTEGER);\nINSERT INTO no_such_table VALUES (1);"
    monkeypatch.setattr(schema, "MIGRATIONS", (*MIGRATIONS, (3, broken)))
    monkeypatch.setattr(schema, "SCHEMA_VERSION", 3)
    conn = sqlite3.connect(tmp_path / "x.db", isolation_level=None)
    try:
        with pytest.raises(sqlite3.OperationalError):
            schema.migrate(conn, "x.db")
        assert not conn.in_transaction
        # The same connection sees what was committed, and nothing of 3.
        assert schema.schema_version(conn) == 2
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master")}
        assert "half_done" not in tables
    finally:
        conn.close()
