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

from quintd.errors import QuintdError
from quintd.schema import SCHEMA_VERSION, SchemaTooNewError
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
    with IngestServer(token=TOKEN) as server:
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
