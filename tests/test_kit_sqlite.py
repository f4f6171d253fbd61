"""The reader kit's SQLite access (sources/sqlite_files.py) at its edges: which way a
database is read (in place, a copy, immutable), the guard's limits, what sets a database
aside and for how long, the copy budget, and the identity a watcher compares. Real
databases written by sqlite3 in a temporary directory; the guards' attacks themselves are
in test_read_guards.py."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quintd.sources import sqlite_files
from quintd.sources.files import ReadStats
from quintd.sources.sqlite_files import (
    MAX_SET_ASIDE_S,
    SET_ASIDE_S,
    CopyBudget,
    Guarded,
    SetAside,
    UnreadableDatabase,
    columns,
    copy_capped,
    pick,
    quote_name,
    read_database,
    wal_identity,
)


@pytest.fixture(autouse=True)
def _fresh_guards(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_files, "SET_ASIDE", SetAside())
    monkeypatch.setattr(sqlite_files, "COPIES", CopyBudget())


def _db(path: Path, script: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.commit()
    conn.close()
    return path


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def _ids(conn: sqlite3.Connection) -> list[object]:
    return [row[0] for row in conn.execute("SELECT id FROM sessions ORDER BY id")]


ONE_ROW = "CREATE TABLE sessions(id TEXT); INSERT INTO sessions VALUES ('x');"


@pytest.fixture
def live_wal(tmp_path: Path) -> Iterator[tuple[Path, sqlite3.Connection]]:
    """A database in WAL mode held open by a writer (as an agent holds its own), with a
    committed row still in its -wal (no checkpoint)."""
    path = tmp_path / "live.db"
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA wal_autocheckpoint=0")
    conn.execute("CREATE TABLE sessions(id TEXT)")
    conn.execute("INSERT INTO sessions VALUES ('in-wal')")
    try:
        yield path, conn
    finally:
        conn.close()


# -- which way a database is read ---------------------------------------------------------


def test_a_database_open_in_wal_mode_is_read_in_place_and_creates_nothing(
    live_wal: tuple[Path, sqlite3.Connection],
) -> None:
    path, _writer = live_wal
    before = sorted(os.listdir(path.parent))
    assert sorted(before) == ["live.db", "live.db-shm", "live.db-wal"]
    rows, owner = read_database(path.parent, path, _ids)
    assert rows == ["in-wal"] and owner == os.getuid()
    assert sorted(os.listdir(path.parent)) == before
    assert sqlite_files.COPIES.bytes_copied == 0  # read in place: nothing copied


def test_a_wal_database_nobody_has_open_is_read_from_a_copy(
    live_wal: tuple[Path, sqlite3.Connection], tmp_path: Path
) -> None:
    path, _writer = live_wal
    left = tmp_path / "left"  # the database and its -wal, as a crashed agent leaves them
    left.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(str(path) + suffix, str(left / "a.db") + suffix)
    sizes = sum(os.path.getsize(str(left / "a.db") + s) for s in ("", "-wal"))
    rows, _ = read_database(left, left / "a.db", _ids)
    assert rows == ["in-wal"]  # the row in the -wal: it was read with the database
    assert sorted(os.listdir(left)) == ["a.db", "a.db-wal"]  # no -shm made beside it
    assert sqlite_files.COPIES.bytes_copied == sizes
    assert sqlite_files.COPIES.spending[os.getuid()][0][1] == sizes
    # Copied once as it stands: asked again at once, it is not copied again.
    with pytest.raises(UnreadableDatabase, match="unchanged"):
        read_database(left, left / "a.db", _ids)
    # Its -wal written since: another copy.
    with open(left / "a.db-wal", "ab") as fh:
        fh.write(b"\0")
    fds = _open_fds()
    assert read_database(left, left / "a.db", _ids)[0] == ["in-wal"]
    assert _open_fds() == fds


def test_any_wal_written_is_a_reason_to_copy(tmp_path: Path) -> None:
    path = _db(tmp_path / "a.db", ONE_ROW)
    (tmp_path / "a.db-wal").write_bytes(b"\0")  # no valid frame: SQLite ignores it
    assert read_database(tmp_path, path, _ids)[0] == ["x"]
    assert sqlite_files.COPIES.bytes_copied == path.stat().st_size + 1


def test_a_wal_database_with_an_unlocked_shm_is_read_from_a_copy(
    live_wal: tuple[Path, sqlite3.Connection], tmp_path: Path
) -> None:
    path, _writer = live_wal
    left = tmp_path / "left"
    left.mkdir()
    for suffix in ("", "-wal", "-shm"):
        shutil.copyfile(str(path) + suffix, str(left / "a.db") + suffix)
    shm_before = (left / "a.db-shm").read_bytes()
    rows, _ = read_database(left, left / "a.db", _ids)
    assert rows == ["in-wal"]
    assert sqlite_files.COPIES.bytes_copied > 0
    assert (left / "a.db-shm").read_bytes() == shm_before  # not opened in place


def test_an_empty_wal_is_no_reason_to_copy(tmp_path: Path) -> None:
    path = _db(tmp_path / "a.db", ONE_ROW)
    (tmp_path / "a.db-wal").write_bytes(b"")
    fds = _open_fds()
    assert read_database(tmp_path, path, _ids)[0] == ["x"]
    assert _open_fds() == fds  # the descriptor read through is closed
    assert sqlite_files.COPIES.bytes_copied == 0


def test_a_database_too_large_to_copy_is_set_aside(
    live_wal: tuple[Path, sqlite3.Connection], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path, _writer = live_wal
    left = tmp_path / "left"
    left.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(str(path) + suffix, str(left / "a.db") + suffix)
    db_size = os.path.getsize(left / "a.db")
    wal_size = os.path.getsize(left / "a.db-wal")
    # Room for the database and exactly its -wal: copied.
    monkeypatch.setattr(sqlite_files, "MAX_COPY_BYTES", db_size + wal_size)
    assert read_database(left, left / "a.db", _ids)[0] == ["in-wal"]
    # One byte less: the -wal is too large for the room left.
    monkeypatch.setattr(sqlite_files, "COPIES", CopyBudget())
    monkeypatch.setattr(sqlite_files, "MAX_COPY_BYTES", db_size + wal_size - 1)
    stats = ReadStats()
    with pytest.raises(UnreadableDatabase, match="too large to copy"):
        read_database(left, left / "a.db", _ids, stats)
    assert stats.garbage == 1
    assert sqlite_files.COPIES.refused == {"too large to copy": 1}
    assert sqlite_files.SET_ASIDE.reasons() == {"too large to copy": 1}


# -- read_database's own checks -----------------------------------------------------------


def test_a_link_is_counted_as_refused_and_a_missing_file_is_not(tmp_path: Path) -> None:
    _db(tmp_path / "real.db", ONE_ROW)
    (tmp_path / "link.db").symlink_to(tmp_path / "real.db")
    stats = ReadStats()
    with pytest.raises(UnreadableDatabase, match="safely"):
        read_database(tmp_path, tmp_path / "link.db", _ids, stats)
    assert stats.refused == 1
    with pytest.raises(UnreadableDatabase, match="safely"):
        read_database(tmp_path, tmp_path / "missing.db", _ids, stats)
    assert stats.refused == 1
    with pytest.raises(UnreadableDatabase):
        read_database(tmp_path, tmp_path / "link.db", _ids)  # no stats: none counted


def test_the_owner_is_the_database_files(tmp_path: Path) -> None:
    path = _db(tmp_path / "a.db", ONE_ROW)
    os.chown(path, 4321, 4321)
    assert read_database(tmp_path, path, _ids) == (["x"], 4321)


def test_a_database_replaced_while_it_was_read_is_dropped(tmp_path: Path) -> None:
    path = _db(tmp_path / "a.db", ONE_ROW)
    other = _db(tmp_path / "b.db", ONE_ROW)

    def replace_then_read(conn: sqlite3.Connection) -> list[object]:
        other.replace(path)
        return _ids(conn)

    with pytest.raises(UnreadableDatabase, match="replaced"):
        read_database(tmp_path, path, replace_then_read)


def test_an_sql_error_is_unreadable_but_not_set_aside(tmp_path: Path) -> None:
    path = _db(tmp_path / "a.db", "CREATE TABLE other(id TEXT);")
    stats = ReadStats()
    for _ in range(2):
        with pytest.raises(UnreadableDatabase, match="no such table"):
            read_database(tmp_path, path, _ids, stats)
    assert stats.garbage == 0 and sqlite_files.SET_ASIDE.count == 0


def test_a_query_past_its_deadline_is_set_aside(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A query stuck outside SQLite (here: in the caller's own code) is given up at the
    deadline; the thread is left to end on its own."""
    monkeypatch.setattr(sqlite_files, "QUERY_DEADLINE_S", 0.1)
    path = _db(tmp_path / "a.db", ONE_ROW)
    release = time.monotonic() + 30.0
    seen: list[bool] = []

    def stuck(conn: sqlite3.Connection) -> list[object]:
        while not seen and time.monotonic() < release:
            time.sleep(0.01)  # held until the test has seen the outcome
        return []

    stats = ReadStats()
    try:
        with pytest.raises(UnreadableDatabase, match="past its deadline"):
            read_database(tmp_path, path, stuck, stats)
    finally:
        seen.append(True)
    assert stats.garbage == 1
    assert sqlite_files.SET_ASIDE.reasons() == {"past its deadline": 1}


def test_a_query_past_its_wall_time_is_aborted_by_the_progress_handler(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_files, "QUERY_STEPS", 10**12)
    monkeypatch.setattr(sqlite_files, "QUERY_DEADLINE_S", 0.3)
    path = _db(
        tmp_path / "a.db",
        "CREATE TABLE sessions(id INT);"
        " WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r LIMIT 20000)"
        " INSERT INTO sessions SELECT n FROM r;",
    )
    with pytest.raises(UnreadableDatabase, match="past its deadline"):
        read_database(
            tmp_path, path, lambda c: list(c.execute("SELECT count(*) FROM sessions a, sessions b"))
        )


# -- the guard's limits -------------------------------------------------------------------


def _run(tmp_path: Path, sql: str) -> list[tuple[object, ...]]:
    path = tmp_path / "a.db"
    if not path.exists():
        _db(path, ONE_ROW)
    return read_database(tmp_path, path, lambda c: list(c.execute(sql)))[0]


def test_compound_selects_up_to_sixteen(tmp_path: Path) -> None:
    sixteen = " UNION ALL ".join(["SELECT 1"] * 16)
    assert len(_run(tmp_path, sixteen)) == 16
    with pytest.raises(UnreadableDatabase, match="too many terms"):
        _run(tmp_path, sixteen + " UNION ALL SELECT 1")


def test_sql_text_up_to_its_length(tmp_path: Path) -> None:
    head = "SELECT 1 "
    assert _run(tmp_path, head + " " * (100_000 - len(head))) == [(1,)]
    with pytest.raises(UnreadableDatabase, match="too large"):
        _run(tmp_path, head + " " * (100_001 - len(head)))


def test_nothing_is_attached_or_written(tmp_path: Path) -> None:
    with pytest.raises(UnreadableDatabase, match="too many attached"):
        _run(tmp_path, f"ATTACH DATABASE '{tmp_path / 'b.db'}' AS b")
    assert not (tmp_path / "b.db").exists()
    # mode=ro alone lets a temporary table be made: query_only is what refuses it
    with pytest.raises(UnreadableDatabase, match="readonly"):
        _run(tmp_path, "CREATE TEMP TABLE t(x)")


def test_a_trigger_reading_a_table_is_refused_a_plain_read_is_not(tmp_path: Path) -> None:
    path = _db(
        tmp_path / "a.db",
        ONE_ROW + "CREATE TABLE log(x); CREATE VIEW v AS SELECT id FROM sessions;",
    )
    assert read_database(tmp_path, path, _ids)[0] == ["x"]
    with pytest.raises(UnreadableDatabase, match="not a plain table"):
        read_database(tmp_path, path, lambda c: list(c.execute("SELECT * FROM v")))


def test_a_recursive_query_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UnreadableDatabase, match="not a plain table"):
        _run(
            tmp_path,
            "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n FROM r) SELECT n FROM r LIMIT 3",
        )


# -- set aside ----------------------------------------------------------------------------


def test_the_back_off_doubles_up_to_its_cap_and_then_expires() -> None:
    aside = SetAside()
    waits = []
    for _ in range(7):
        before = time.monotonic()
        aside.strike((1, 1), "why", uid=5, changed_ns=9)
        after = time.monotonic()
        until = aside.files[(1, 1)].until
        waits.append((until - after, until - before))
    expected = [min(SET_ASIDE_S * 2**i, MAX_SET_ASIDE_S) for i in range(7)]
    for (low, high), wait in zip(waits, expected, strict=True):
        assert low <= wait <= high
    assert aside.count == 7 and aside.files[(1, 1)].strikes == 7
    assert aside.reasons() == {"why": 1}
    aside.files[(1, 1)].until = time.monotonic() - 0.001  # its back-off is over
    assert aside.blocked((1, 1), 5, 9) is False
    assert aside.reasons() == {}


def test_one_failure_blocks_only_the_unchanged_file_of_its_owner() -> None:
    aside = SetAside()
    assert aside.blocked((1, 1), 5, 9) is False
    aside.strike((1, 1), "why", uid=5, changed_ns=9)
    assert aside.blocked((1, 1), 5, 9)
    assert not aside.blocked((1, 1), 5, 10)  # written since
    assert not aside.blocked((1, 1), 6, 9)  # another user's
    assert not aside.blocked((1, 2), 5, 9)  # another inode
    aside.strike((1, 2), "other", uid=5, changed_ns=1)
    assert aside.reasons() == {"why": 1, "other": 1}
    aside.strike((1, 3), "why", uid=5, changed_ns=1)
    assert aside.reasons() == {"why": 2, "other": 1}


# -- the copy budget ----------------------------------------------------------------------


def test_a_copy_up_to_its_cap_is_whole(tmp_path: Path) -> None:
    source = tmp_path / "src"
    source.write_bytes(b"y" * 3000)
    fd = os.open(source, os.O_RDONLY)
    try:
        assert copy_capped(fd, tmp_path / "dest", 3000) == 3000
    finally:
        os.close(fd)
    assert (tmp_path / "dest").read_bytes() == b"y" * 3000
    fd = os.open(source, os.O_RDONLY)
    try:
        with pytest.raises(Guarded):
            copy_capped(fd, tmp_path / "dest2", 2999)
    finally:
        os.close(fd)


def test_a_copy_is_read_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sqlite_files, "COPY_CHUNK", 7)
    source = tmp_path / "src"
    source.write_bytes(bytes(range(100)))
    fd = os.open(source, os.O_RDONLY)
    try:
        assert copy_capped(fd, tmp_path / "dest", 100) == 100
    finally:
        os.close(fd)
    assert (tmp_path / "dest").read_bytes() == bytes(range(100))


def test_a_users_copy_budget_is_per_minute_and_per_user() -> None:
    budget = CopyBudget()
    budget.spent(1000, sqlite_files.COPY_BUDGET_BYTES - 1)
    budget.admit((1,), uid=1000)  # one byte short of the budget: admitted
    budget.spent(1000, 1)
    with pytest.raises(sqlite3.OperationalError, match="budget"):
        budget.admit((2,), uid=1000)
    assert budget.bytes_copied == sqlite_files.COPY_BUDGET_BYTES
    # A minute later, what was spent then no longer counts.
    budget.spending[1000] = [(t - 60.5, n) for t, n in budget.spending[1000]]
    budget.admit((3,), uid=1000)
    assert budget.spending[1000] == []


def test_an_unchanged_database_is_copied_again_after_the_interval() -> None:
    budget = CopyBudget()
    budget.admit((1,), uid=1000)
    budget.last[(1,)] -= sqlite_files.RECOPY_AFTER_S + 1.0
    budget.admit((1,), uid=1000)
    assert budget.refused == {}


def test_the_copy_times_are_pruned_past_ten_thousand() -> None:
    budget = CopyBudget()
    now = time.monotonic()
    budget.last = {(i,): now - 600.5 for i in range(9_999)}
    budget.last[(-1,)] = now
    budget.admit((-2,), uid=1)  # the ten thousand and first: the old ones go
    assert set(budget.last) == {(-1,), (-2,)}
    budget.last = {(i,): now - 600.5 for i in range(9_999)}
    budget.admit((-2,), uid=1)  # ten thousand: none go
    assert len(budget.last) == 10_000


# -- identities and schema helpers --------------------------------------------------------


def test_the_wal_identity_changes_with_each_commit_and_not_with_reads(
    live_wal: tuple[Path, sqlite3.Connection],
) -> None:
    path, writer = live_wal
    fds = _open_fds()
    first = wal_identity(path.parent, path)
    assert _open_fds() == fds
    assert isinstance(first, tuple) and len(first) == 3
    shm = Path(str(path) + "-shm").read_bytes()
    assert first[2] == shm[: sqlite_files.WAL_INDEX_HEADER]
    read_database(path.parent, path, _ids)
    assert wal_identity(path.parent, path) == first
    writer.execute("INSERT INTO sessions VALUES ('more')")
    assert wal_identity(path.parent, path) != first


def test_the_wal_identity_of_a_database_without_side_files(tmp_path: Path) -> None:
    path = _db(tmp_path / "a.db", ONE_ROW)
    info = path.stat()
    assert wal_identity(tmp_path, path) == (
        (info.st_ino, info.st_size, info.st_mtime_ns),
        None,
        None,
    )
    (tmp_path / "a.db-shm").symlink_to(path)  # a link is not read
    assert wal_identity(tmp_path, path)[2] is None  # type: ignore[index]


def test_columns_quote_and_pick(tmp_path: Path) -> None:
    path = _db(tmp_path / "a.db", 'CREATE TABLE "we""ird"(a TEXT, "b c" INT);')
    conn = sqlite3.connect(path)
    try:
        assert columns(conn, 'we"ird') == {"a", "b c"}
        assert columns(conn, "absent") == set()
    finally:
        conn.close()
    assert quote_name('a"b') == '"a""b"'
    assert pick({"b", "c"}, "a", "c", "b") == "c"
    assert pick({"b"}, "a") is None


def test_a_database_that_cannot_be_opened_says_so_at_once(tmp_path: Path) -> None:
    missing = tmp_path / "missing.db"
    began = time.monotonic()
    with pytest.raises(sqlite3.OperationalError, match="unable to open") as caught:
        sqlite_files._query(lambda: f"file:{missing}?mode=ro", _ids)
    assert not isinstance(caught.value, Guarded)  # its error, not the deadline's
    assert time.monotonic() - began < sqlite_files.QUERY_DEADLINE_S
    assert not missing.exists()


def _big(tmp_path: Path, rows: int) -> Path:
    return _db(
        tmp_path / "a.db",
        "CREATE TABLE sessions(id INT);"
        " WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r LIMIT"
        f" {rows}) INSERT INTO sessions SELECT n FROM r;",
    )


COUNT = "SELECT count(*) FROM sessions WHERE id % 7 = 3"


def test_a_query_within_its_budget_runs_to_its_end(tmp_path: Path) -> None:
    path = _big(tmp_path, 20_000)  # many more steps than one progress check
    assert read_database(tmp_path, path, lambda c: c.execute(COUNT).fetchone())[0] == (2857,)


def test_the_step_budget_is_allowed_in_full(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The query's progress checks counted on a connection of its own; a budget of
    exactly that many steps lets it finish, one check less stops it."""
    path = _big(tmp_path, 20_000)
    conn = sqlite3.connect(f"file:{path}?mode=ro&immutable=1", uri=True)
    calls = [0]

    def count() -> int:
        calls[0] += 1
        return 0

    conn.set_progress_handler(count, sqlite_files.PROGRESS_EVERY)
    conn.execute(COUNT).fetchone()
    conn.close()
    assert calls[0] > 2
    monkeypatch.setattr(sqlite_files, "QUERY_STEPS", calls[0] * sqlite_files.PROGRESS_EVERY)
    query = lambda c: c.execute(COUNT).fetchone()  # noqa: E731
    assert read_database(tmp_path, path, query)[0] == (2857,)
    monkeypatch.setattr(sqlite_files, "QUERY_STEPS", (calls[0] - 1) * sqlite_files.PROGRESS_EVERY)
    with pytest.raises(UnreadableDatabase, match="budget of steps"):
        read_database(tmp_path, path, query)


def test_a_file_grown_while_copied_costs_its_user_the_whole_cap(
    live_wal: tuple[Path, sqlite3.Connection], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The size is checked, then the -wal grows before it is copied (the attacker's
    timing, made exact by growing it just before the copy starts)."""
    path, _writer = live_wal
    left = tmp_path / "left"
    left.mkdir()
    for suffix in ("", "-wal"):
        shutil.copyfile(str(path) + suffix, str(left / "a.db") + suffix)
    monkeypatch.setattr(
        sqlite_files,
        "MAX_COPY_BYTES",
        os.path.getsize(left / "a.db") + os.path.getsize(left / "a.db-wal"),
    )
    real_copy = sqlite_files.copy_capped

    def grow_then_copy(fd: int, dest: Path, cap: int) -> int:
        if dest.name.endswith("-wal"):
            with open(left / "a.db-wal", "ab") as fh:
                fh.write(b"\0" * 4096)
        return real_copy(fd, dest, cap)

    monkeypatch.setattr(sqlite_files, "copy_capped", grow_then_copy)
    fds = _open_fds()
    with pytest.raises(UnreadableDatabase, match="it grew"):
        read_database(left, left / "a.db", _ids)
    assert _open_fds() == fds
    assert sqlite_files.COPIES.spending[os.getuid()][-1][1] == sqlite_files.MAX_COPY_BYTES
    assert sqlite_files.COPIES.refused == {"too large to copy": 1}
