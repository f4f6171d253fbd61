"""The store's finer rules, one test each, on a real SQLite file: bounds at their exact
edge, batches cut at the byte cap, the byte count kept true, the ids remembered and
forgotten, the signing cache, dead letters and requeue, what a damaged file says.

Written for the survivors of the mutation run on quintd/store.py (tests/bench/mutation.py):
each test pins a rule that a one-token change of the code broke without any test failing."""

from __future__ import annotations

import sqlite3
import threading
import time
from pathlib import Path

import pytest
from test_store import event, session

from quintd.schema import SchemaTooNewError
from quintd.signing.cache import StoredSigningCache, signing_from_json
from quintd.signing.info import SigningInfo
from quintd.store import Store, StoreSettings, _is_corrupt

DAY = 86400.0


def body_size(store: Store) -> int:
    return sum(len(e.body) for e in store.peek(1000))


def test_a_new_store_makes_its_directories_and_starts_from_zero(tmp_path: Path) -> None:
    store = Store(tmp_path / "a" / "b" / "q.db")
    stats = store.stats()
    assert (stats.depth, stats.bytes, stats.dead_letters) == (0, 0, 0)
    assert (stats.produced, stats.coalesced, stats.refused, stats.lost_databases) == (0, 0, 0, 0)
    assert stats.refused_by_state == {} and stats.last_loss is None
    assert store.apply([]) == 0
    store.close()
    Store(tmp_path / "a" / "b" / "q.db").close()  # the directory exists now: fine too


def test_a_closed_store_refuses_work(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    store.close()
    with pytest.raises(sqlite3.ProgrammingError):
        store.peek(1)


def test_the_store_is_shared_by_threads(tmp_path: Path) -> None:
    """The main loop, the shipper and the control thread share one connection."""
    store = Store(tmp_path / "q.db")
    errors: list[BaseException] = []

    def enqueue() -> None:
        try:
            store.apply([event("from-thread")])
        except BaseException as exc:
            errors.append(exc)

    worker = threading.Thread(target=enqueue)
    worker.start()
    worker.join()
    assert errors == [] and [e.session_id for e in store.peek(10)] == ["from-thread"]


def test_a_failed_commit_leaves_no_transaction_open(tmp_path: Path) -> None:
    """A COMMIT can fail and leave the transaction open (a deferred constraint, as here;
    a busy or full disk at the last write): the store rolls back, so the next write starts
    its own transaction instead of failing forever with 'within a transaction'."""
    store = Store(tmp_path / "q.db")
    conn = store._conn  # the test's own constraint, checked only at COMMIT
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("CREATE TEMP TABLE owner (id INTEGER PRIMARY KEY)")
    conn.execute(
        "CREATE TEMP TABLE claim (owner_id INTEGER REFERENCES owner(id)"
        " DEFERRABLE INITIALLY DEFERRED)"
    )
    conn.execute(
        "CREATE TEMP TRIGGER break_commit AFTER INSERT ON main.events"
        " BEGIN INSERT INTO claim VALUES (42); END"
    )
    with pytest.raises(sqlite3.IntegrityError, match="FOREIGN KEY"):
        store.apply([event("refused-at-commit")])
    assert not conn.in_transaction
    conn.execute("DROP TRIGGER break_commit")
    assert store.apply([event("after")]) == 1
    assert [e.session_id for e in store.peek(10)] == ["after"]
    store.close()


def test_a_database_from_a_newer_quintd_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
    db.commit()
    db.close()
    with pytest.raises(SchemaTooNewError, match="99"):
        Store(path)


def test_sessions_round_trip_with_their_empty_fields(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    bare = session("bare")
    full = session("full")
    full.model, full.signing_id, full.parent_id, full.native_id, full.uid = (
        "m1",
        "com.example",
        "bare",
        "conv-1",
        1000,
    )
    idle = session("idle")
    idle.state = "idle"
    store.apply([], [bare, full, idle])
    loaded = {s.session_id: s for s in Store(tmp_path / "q.db").load_sessions()}
    assert loaded["bare"] == bare
    back = loaded["bare"]
    assert (back.model, back.native_id, back.uid) == (None, None, None)
    assert loaded["full"] == full and loaded["full"].uid == 1000
    assert loaded["idle"].state == "idle"


# -- the bound, at its exact edge ---------------------------------------------------------


def test_the_byte_bound_is_reached_only_when_passed(tmp_path: Path) -> None:
    exact = len(event("a").body()) + len(event("a", "idle").body())
    bound = StoreSettings.model_construct(max_bytes=exact, min_free_disk=0)  # under 1 MiB
    store = Store(tmp_path / "q.db", bound)
    store.apply([event("a")])
    assert store.apply([event("a", "idle")]) == 1  # exactly at the bound: still queued
    assert store.apply([event("a", "active")]) == 0  # past it: refused
    assert store.stats().refused_by_state == {"active": 1}


def test_the_bound_follows_a_reload(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db", StoreSettings(min_free_disk=0))
    store.apply([event("a")])
    store.reconfigure(StoreSettings.model_construct(max_bytes=1, min_free_disk=0))
    assert store.apply([event("a", "idle"), event("a", "active")]) == 0
    stats = store.stats()
    assert (stats.refused, stats.refused_by_state) == (2, {"idle": 1, "active": 1})


def test_the_free_disk_floor_is_reached_only_below_it(tmp_path: Path) -> None:
    free = [1000]
    store = Store(
        tmp_path / "q.db", StoreSettings(min_free_disk=1000), free_disk=lambda _path: free[0]
    )
    store.apply([event("a")])
    assert store.apply([event("a", "idle")]) == 1  # exactly the floor free: fine
    free[0] = 999
    assert store.apply([event("a", "active")]) == 0


def test_a_failing_free_disk_probe_is_not_a_full_disk(tmp_path: Path) -> None:
    def broken(_path: Path) -> int:
        raise OSError("statvfs failed")

    store = Store(tmp_path / "q.db", StoreSettings(min_free_disk=1 << 40), free_disk=broken)
    store.apply([event("a")])
    assert store.apply([event("a", "idle")]) == 1


def test_the_byte_count_stays_true(tmp_path: Path) -> None:
    """The running byte count decides the bound: after every kind of change it equals
    what is queued (a bound check with nothing to coalesce, a dead letter, a requeue, an
    ack)."""
    store = Store(tmp_path / "q.db", StoreSettings(min_free_disk=0))
    store.apply([event("a"), event("b")])
    assert store._bytes == body_size(store)
    store.reconfigure(StoreSettings.model_construct(max_bytes=1, min_free_disk=0))
    store.apply([event("c")])  # over the bound, nothing to coalesce: refused
    assert store._bytes == body_size(store)
    store.reconfigure(StoreSettings(min_free_disk=0))
    first = store.peek(1)[0]
    store.dead_letter(first, 400, "bad")
    assert store._bytes == body_size(store)
    store.requeue()
    assert store._bytes == body_size(store)
    store.ack([e.seq for e in store.peek(10)])
    assert store._bytes == 0 == body_size(store)


# -- batches ---------------------------------------------------------------------------------


def test_a_batch_is_cut_exactly_at_its_byte_cap(tmp_path: Path) -> None:
    """The body is {"events":[...]}: 16 bytes of frame, each event and its comma."""
    store = Store(tmp_path / "q.db")
    store.apply([event(f"s{i}") for i in range(3)])
    sizes = [len(e.body) for e in store.peek(3)]
    exact = 16 + sum(size + 1 for size in sizes)
    _, batch = store.claim_batch(10, exact)
    assert len(batch) == 3
    other = Store(tmp_path / "other.db")
    other.apply([event(f"s{i}") for i in range(3)])
    _, cut = other.claim_batch(10, exact - 1)
    assert len(cut) == 2


def test_one_event_larger_than_the_cap_goes_alone(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    store.apply([event("a"), event("b")])
    _, batch = store.claim_batch(10, 1)
    assert [e.session_id for e in batch] == ["a"]


def test_a_claimed_batch_comes_back_whole_under_its_key(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    store = Store(path)
    store.apply([event("a"), event("b"), event("c")])
    key, batch = store.claim_batch(2, 1 << 20)
    store.close()
    again = Store(path)  # a restart between the claim and the answer
    assert again.claim_batch(10, 1 << 20) == (key, batch)
    # A split half gets a key of its own, kept on disk, and comes first.
    half = again.rekey([batch[0].seq])
    assert half != key
    assert again.claim_batch(10, 1 << 20) == (half, batch[:1])


def test_failed_tries_are_counted_on_disk(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    store.apply([event("a"), event("b")])
    first = store.peek(1)[0]
    store.record_attempt([first.seq])
    store.record_attempt([first.seq])
    assert [e.attempts for e in store.peek(2)] == [2, 0]


# -- dead letters and requeue -------------------------------------------------------------


def test_a_dead_letter_keeps_at_most_2000_characters_of_reason(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    store.apply([event("a")])
    store.dead_letter(store.peek(1)[0], 400, "x" * 3000)
    [dead] = store.dead_letters()
    assert len(dead.reason) == 2000


def test_requeue_refuses_what_would_follow_a_delivered_end(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    store.apply([event("a"), event("b")])
    active_a = store.peek(1)[0]
    store.dead_letter(active_a, 400, "bad")
    store.apply([event("a", "ended")])
    store.ack([e.seq for e in store.peek(10) if e.session_id == "a"])  # the end went out
    moved, refused = store.requeue([active_a.seq, 12345])
    assert moved == 0
    assert [seq for seq, _ in refused] == [active_a.seq, 12345]
    assert "delivered already" in refused[0][1] and refused[1][1] == "no such dead letter"
    assert store.requeue([active_a.seq], force=True) == (1, [])


def test_delivered_ends_are_forgotten_with_the_ended_ids(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    store.apply([event("a")])
    active_a = store.peek(1)[0]
    store.dead_letter(active_a, 400, "bad")
    store.apply([event("a", "ended")])
    store.ack([e.seq for e in store.peek(10)])
    store.load_ended(max_age_s=-1.0)  # everything older than a second from now
    assert store.requeue([active_a.seq]) == (1, [])


# -- ended ids --------------------------------------------------------------------------------


def test_ended_ids_are_remembered_for_90_days(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    now = time.time()
    store.apply([], removals=["old"], now=now - 91 * DAY)
    store.apply([], removals=["recent"], now=now - 89 * DAY)
    store.apply([], removals=["today"], now=now)
    assert store.load_ended() == ["recent", "today"]
    assert Store(tmp_path / "q.db").load_ended() == ["recent", "today"]  # the old one deleted


# -- the signing cache ------------------------------------------------------------------------


def test_signing_identities_are_kept_and_forgotten(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    info = SigningInfo(
        signing_id="deb:claude-code", source="deb", authorities=("Debian", "dpkg"), valid=True
    )
    key = (1, 2, 3, 4, 5)
    StoredSigningCache(store.transaction).save_signing(key, info)
    assert StoredSigningCache(Store(tmp_path / "q.db").transaction).load_signing() == {key: info}
    with sqlite3.connect(tmp_path / "q.db") as db:
        garbage = "INSERT INTO signing_cache VALUES (9, 9, 9, 9, 9, 'not json', ?)"
        db.execute(garbage, (time.time(),))
        db.execute("UPDATE signing_cache SET seen_at = ? WHERE dev = 1", (time.time() - 91 * DAY,))
    # the old one forgotten, the garbage one skipped
    assert StoredSigningCache(store.transaction).load_signing() == {}


def test_signing_json_is_checked() -> None:
    assert signing_from_json("[]") is None
    assert signing_from_json('{"signing_id": null, "source": "sha256", "bogus": 1}') is None
    parsed = signing_from_json('{"signing_id": "x", "source": "deb", "authorities": ["a"]}')
    assert parsed == SigningInfo(signing_id="x", source="deb", authorities=("a",))


# -- damaged files ----------------------------------------------------------------------------


def test_only_damage_counts_as_a_corrupt_database() -> None:
    assert _is_corrupt(sqlite3.DatabaseError("database disk image is malformed"))
    assert _is_corrupt(sqlite3.DatabaseError("file is not a database"))
    assert not _is_corrupt(sqlite3.OperationalError("database is locked"))
    assert not _is_corrupt(sqlite3.OperationalError("disk I/O error"))


def test_a_file_that_is_no_database_loses_an_unknown_number(tmp_path: Path) -> None:
    path = tmp_path / "q.db"
    path.write_bytes(b"this is not an SQLite file, not even its header" * 100)
    store = Store(path)
    stats = store.stats()
    assert stats.lost_databases == 1
    assert stats.last_loss is not None and "an unknown number of queued events lost" in (
        stats.last_loss
    )


def test_a_damaged_database_whose_events_can_be_counted_says_how_many(
    tmp_path: Path,
) -> None:
    path = tmp_path / "q.db"
    store = Store(path)
    store.apply([event("a"), event("b"), event("c")])
    store.close()
    # Damage the (empty) sessions table's page: quick_check fails, events still count.
    db = sqlite3.connect(path)
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    (page_size,) = db.execute("PRAGMA page_size").fetchone()
    (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'sessions'").fetchone()
    db.close()
    with open(path, "r+b") as fh:
        fh.seek((root - 1) * page_size)
        fh.write(b"\xff" * page_size)
    store = Store(path)
    assert store.stats().lost_databases == 1
    assert "3 queued events lost" in (store.stats().last_loss or "")
