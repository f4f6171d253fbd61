"""The SQLite store: events and sessions in one durable transaction, a real file."""

from __future__ import annotations

import sqlite3
import stat
from datetime import UTC, datetime
from pathlib import Path

import pytest

from quintd.model import LifecycleEvent, Session
from quintd.store import Store

T0 = datetime(2026, 11, 28, 12, 0, 0, tzinfo=UTC)


def event(sid: str = "s1", state: str = "active") -> LifecycleEvent:
    return LifecycleEvent(
        session_id=sid,
        state=state,
        timestamp=T0,  # type: ignore[arg-type]
        platform="codex",
    )


def session(sid: str = "s1") -> Session:
    return Session(
        session_id=sid,
        platform="codex",
        pid=7,
        start_time_ms=123,
        state="active",
        started_at=T0,
        last_seen=T0,
        session_name="proj",
    )


def test_events_survive_reopen_in_order_with_stable_ids(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = Store(path)
    assert store.apply([event("a"), event("b"), event("a", "ended")]) == 3
    before = store.peek(10)
    store.close()
    store = Store(path)
    after = store.peek(10)
    assert [(e.session_id, e.state) for e in after] == [
        ("a", "active"),
        ("b", "active"),
        ("a", "ended"),
    ]
    assert [e.event_id for e in after] == [e.event_id for e in before]
    assert len({e.event_id for e in after}) == 3
    assert after[0].body == event("a").body()


def test_wal_and_full_sync(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    db = sqlite3.connect(tmp_path / "q.db")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store._conn.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL


def test_file_is_owner_only(tmp_path: Path) -> None:
    Store(tmp_path / "q.db").apply([event()])
    for path in tmp_path.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path


def test_ack_deletes_only_named_events(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    store.apply([event("a"), event("b")])
    first, second = store.peek(10)
    store.ack([first.seq])
    assert [e.seq for e in store.peek(10)] == [second.seq]
    stats = store.stats()
    assert stats.depth == 1 and stats.bytes == len(second.body)


def test_dead_letter_moves_with_reason(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    store.apply([event("a")])
    [queued] = store.peek(1)
    store.dead_letter(queued, 400, "bad_request: timestamp")
    assert store.peek(10) == []
    assert store.stats().dead_letters == 1
    row = store._conn.execute("SELECT event_id, status, reason FROM dead_letters").fetchone()
    assert row == (queued.event_id, 400, "bad_request: timestamp")


def test_sessions_and_events_change_together(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = Store(path)
    store.apply([event("s1")], upserts=[session("s1")])
    assert [s.session_id for s in store.load_sessions()] == ["s1"]
    store.apply([event("s1", "ended")], removals=["s1"])
    assert store.load_sessions() == []
    assert [e.state for e in store.peek(10)] == ["active", "ended"]


def test_failed_transaction_leaves_nothing(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")

    bad = session("s2")
    bad.platform = None  # type: ignore[assignment]  # violates NOT NULL after the INSERT
    with pytest.raises(sqlite3.IntegrityError):
        store.apply([event("s2")], upserts=[bad])
    assert store.peek(10) == [] and store.load_sessions() == []


def test_touch_records_last_seen(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    s = session()
    store.apply([], upserts=[s])
    s.last_seen = datetime(2026, 11, 28, 13, 0, 0, 250000, tzinfo=UTC)
    store.touch_sessions([s])
    [loaded] = store.load_sessions()
    assert loaded.last_seen == datetime(2026, 11, 28, 13, 0, 0, 250000, tzinfo=UTC)
    assert loaded.session_name == "proj" and loaded.pid == 7
