"""The guards on what quintd reads from users' files, one by one (fast): SQL only on plain
tables and within its budget, copies that stop at their cap and do not repeat, sparse
files and lines without end skipped once, and one pass's bytes bounded. The same attacks,
run as a user against the root daemon, are in test_hostile_users.py."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from quintd.sources import sqlite_files, zstd_json
from quintd.sources.files import (
    MAX_LINE_BYTES,
    JsonlTail,
    PassBudget,
    ReadStats,
    open_under,
    sparse,
)
from quintd.sources.sqlite_files import (
    CopyBudget,
    Guarded,
    UnreadableDatabase,
    copy_capped,
    read_database,
)


def _db(path: Path, script: str) -> Path:
    conn = sqlite3.connect(path)
    conn.executescript(script)
    conn.commit()
    conn.close()
    return path


def _all(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
    return list(conn.execute("SELECT * FROM sessions"))


@pytest.fixture(autouse=True)
def _fresh_guards(monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test with its own set-aside list and copy budget (they are process-wide)."""
    monkeypatch.setattr(sqlite_files, "SET_ASIDE", sqlite_files.SetAside())
    monkeypatch.setattr(sqlite_files, "COPIES", CopyBudget())


# -- SQL --------------------------------------------------------------------------------


def test_a_plain_table_is_read(tmp_path: Path) -> None:
    path = _db(
        tmp_path / "a.db", "CREATE TABLE sessions(id TEXT); INSERT INTO sessions VALUES ('x');"
    )
    rows, owner = read_database(tmp_path, path, _all)
    assert rows == [("x",)] and owner == os.getuid()


def test_a_view_over_an_endless_query_is_stopped_and_set_aside(tmp_path: Path) -> None:
    path = _db(
        tmp_path / "a.db",
        "CREATE VIEW sessions AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1"
        " FROM r) SELECT n AS id FROM r;",
    )
    stats = ReadStats()
    began = time.monotonic()
    with pytest.raises(UnreadableDatabase, match="not a plain table"):
        read_database(tmp_path, path, _all, stats)
    assert time.monotonic() - began < 1.0  # refused by the authorizer, not run
    assert stats.garbage == 1
    with pytest.raises(UnreadableDatabase, match="set aside"):
        read_database(tmp_path, path, _all, stats)  # not tried again during its back-off
    assert sqlite_files.SET_ASIDE.reasons() == {"not a plain table": 1}


def test_a_new_database_at_a_set_aside_inode_is_read_unless_the_file_failed_twice(
    tmp_path: Path,
) -> None:
    """Inodes are reused: a database written where a bad one failed once is another
    database (read); one that failed twice stays aside however it is rewritten (a user
    rewriting it each pass must not buy a guarded read each pass)."""
    bad = "CREATE TABLE t(id TEXT); CREATE VIEW sessions AS SELECT id FROM t;"
    good = "CREATE TABLE sessions(id TEXT); INSERT INTO sessions VALUES ('x');"
    path = _db(tmp_path / "a.db", bad)
    inode = path.stat().st_ino
    with pytest.raises(UnreadableDatabase, match="not a plain table"):
        read_database(tmp_path, path, _all)
    _rewrite(path, good)
    assert path.stat().st_ino == inode  # the same inode, as a reused one would be
    assert read_database(tmp_path, path, _all)[0] == [("x",)]

    _rewrite(path, bad)
    with pytest.raises(UnreadableDatabase, match="not a plain table"):
        read_database(tmp_path, path, _all)  # its second failure at this inode
    _rewrite(path, good)
    with pytest.raises(UnreadableDatabase, match="set aside"):
        read_database(tmp_path, path, _all)


def test_another_users_file_at_a_set_aside_inode_is_not_blocked() -> None:
    aside = sqlite_files.SetAside()
    aside.strike((1, 42), "not a plain table", uid=1000, changed_ns=5)
    aside.strike((1, 42), "not a plain table", uid=1000, changed_ns=6)
    assert aside.blocked((1, 42), 1000, 7)  # twice: aside, even rewritten
    assert not aside.blocked((1, 42), 1001, 6)  # the inode reused by another user
    aside.strike((1, 42), "not a plain table", uid=1001, changed_ns=8)
    assert aside.files[(1, 42)].strikes == 1  # the other user's first, not a third


def _rewrite(path: Path, script: str) -> None:
    """The same file (its inode kept) with a new database in it."""
    fresh = path.with_suffix(".new")
    _db(fresh, script)
    path.write_bytes(fresh.read_bytes())
    fresh.unlink()


def test_a_trigger_or_virtual_table_is_not_read(tmp_path: Path) -> None:
    path = _db(
        tmp_path / "a.db",
        "CREATE VIRTUAL TABLE sessions USING fts5(id); INSERT INTO sessions VALUES ('x');",
    )
    with pytest.raises(UnreadableDatabase, match="not a plain table"):
        read_database(tmp_path, path, _all)


def test_a_query_past_its_budget_of_steps_is_aborted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A plain table too large to scan in the budget (a self-join: a quadratic query on a
    user's rows). The budget is lowered so that the test is fast; the mechanism is the
    same progress handler."""
    monkeypatch.setattr(sqlite_files, "QUERY_STEPS", 200_000)
    path = _db(
        tmp_path / "a.db",
        "CREATE TABLE sessions(id INT);"
        " WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r LIMIT 5000)"
        " INSERT INTO sessions SELECT n FROM r;",
    )
    with pytest.raises(UnreadableDatabase, match="budget of steps"):
        read_database(
            tmp_path, path, lambda c: list(c.execute("SELECT count(*) FROM sessions a, sessions b"))
        )


def test_a_value_over_the_cap_is_refused_not_loaded(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_files, "MAX_VALUE_BYTES", 1024 * 1024)
    path = _db(tmp_path / "a.db", "CREATE TABLE sessions(id TEXT);")
    conn = sqlite3.connect(path)
    conn.execute("INSERT INTO sessions VALUES (?)", ("x" * (2 * 1024 * 1024),))
    conn.commit()
    conn.close()
    with pytest.raises(UnreadableDatabase, match="too big"):
        read_database(tmp_path, path, _all)


def test_a_stopping_daemon_aborts_the_query_under_way(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_files, "QUERY_STEPS", 10**12)
    monkeypatch.setattr(sqlite_files, "QUERY_DEADLINE_S", 60.0)
    path = _db(
        tmp_path / "a.db",
        "CREATE TABLE sessions(id INT);"
        " WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r LIMIT 20000)"
        " INSERT INTO sessions SELECT n FROM r;",
    )
    stop = threading.Timer(0.3, sqlite_files.STOPPING.set)
    stop.start()
    began = time.monotonic()
    try:
        with pytest.raises(UnreadableDatabase, match="the daemon stops"):
            read_database(
                tmp_path,
                path,
                lambda c: list(c.execute("SELECT count(*) FROM sessions a, sessions b")),
            )
    finally:
        stop.cancel()
        sqlite_files.STOPPING.clear()
    assert time.monotonic() - began < 5.0


def test_a_link_swapped_in_after_the_check_reaches_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database is opened through the descriptor checked (/proc/self/fd/N), never by
    its path again: a link swapped in between the check and SQLite's open (the attacker's
    timing, made exact here by swapping just before the query runs) is not what is read,
    and what was read is dropped (the file was replaced)."""
    path = _db(
        tmp_path / "a.db", "CREATE TABLE sessions(id TEXT); INSERT INTO sessions VALUES ('x');"
    )
    _db(
        tmp_path / "secret.db",
        "CREATE TABLE sessions(id TEXT); INSERT INTO sessions VALUES ('secret');",
    )
    real_query = sqlite_files._query

    def swap_then_query(uri, query):  # type: ignore[no-untyped-def]
        path.rename(tmp_path / "moved.db")
        path.symlink_to(tmp_path / "secret.db")
        return real_query(uri, query)

    monkeypatch.setattr(sqlite_files, "_query", swap_then_query)
    seen: list[tuple[object, ...]] = []

    def query(conn: sqlite3.Connection) -> list[tuple[object, ...]]:
        seen.extend(_all(conn))
        return seen

    with pytest.raises(UnreadableDatabase, match="replaced"):
        read_database(tmp_path, path, query)
    assert seen == [("x",)]


# -- copies -------------------------------------------------------------------------------


def test_a_copy_stops_at_its_cap_whatever_the_size_checked(tmp_path: Path) -> None:
    """The race of the review: the size is checked, then the file grows (sparsely); the
    copy counts what it reads and stops at the cap."""
    grown = tmp_path / "grown.db"
    with open(grown, "wb") as fh:
        fh.truncate(8 * 1024 * 1024)
    fd, _ = open_under(tmp_path, grown)
    dest = tmp_path / "copy.db"
    try:
        with pytest.raises(Guarded, match="grew"):
            copy_capped(fd, dest, 3 * 1024 * 1024)
    finally:
        os.close(fd)
    assert dest.stat().st_size <= 3 * 1024 * 1024


def test_an_unchanged_database_is_copied_once_and_a_users_copies_are_budgeted() -> None:
    budget = CopyBudget()
    budget.admit((1, 2, 3), uid=1000)
    with pytest.raises(sqlite3.OperationalError, match="unchanged"):
        budget.admit((1, 2, 3), uid=1000)
    budget.spent(1000, sqlite_files.COPY_BUDGET_BYTES)
    with pytest.raises(sqlite3.OperationalError, match="budget"):
        budget.admit((1, 2, 4), uid=1000)  # changed, but the user's minute is spent
    budget.admit((5, 6, 7), uid=1001)  # another user's are not
    assert budget.refused == {
        "unchanged since its last copy": 1,
        "the user's copy budget is spent": 1,
    }


# -- files ----------------------------------------------------------------------------------


def test_a_sparse_file_is_garbage_a_dense_one_is_not(tmp_path: Path) -> None:
    holes = tmp_path / "holes.jsonl"
    with open(holes, "wb") as fh:
        fh.truncate(64 * 1024 * 1024)
        fh.write(b'{"type": "user"}\n')
    dense = tmp_path / "dense.jsonl"
    with open(dense, "wb") as fh:
        line = b'{"type": "user"}' + b" " * 1000 + b"\n"
        fh.write(line * (17 * 1024))
    for path, expected in ((holes, True), (dense, False)):
        fd = os.open(path, os.O_RDONLY)
        try:
            assert sparse(fd, os.fstat(fd)) is expected, path
        finally:
            os.close(fd)
    stats = ReadStats()
    tail = JsonlTail(holes, tmp_path, stats=stats)
    assert tail.read_new() == ([], False)
    assert stats.garbage == 1
    assert tail.read_new() == ([], False)  # skipped once: not read again
    assert stats.garbage == 1


def test_a_line_without_end_is_skipped_to_the_end_once(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"x" * (MAX_LINE_BYTES + 10))
    stats = ReadStats()
    tail = JsonlTail(path, tmp_path, stats=stats)
    reads = 0
    more = True
    while more and reads < 10:
        _, more = tail.read_new()
        reads += 1
    assert reads <= 2 and tail.offset == path.stat().st_size
    with open(path, "ab") as fh:
        fh.write(b'xx\n{"type": "user"}\n')
    records, _ = tail.read_new()
    assert records == [{"type": "user"}]  # the rest of the long line skipped, then read on
    assert stats.garbage == 1


def test_one_pass_reads_at_most_its_budget_over_every_file() -> None:
    budget = PassBudget(size=10)
    assert [budget.take(4), budget.take(4), budget.take(4), budget.take(4)] == [4, 4, 2, 0]
    budget.refill()
    assert budget.exhausted == 1 and budget.take(4) == 4


# -- an editor's state.vscdb (sources/vscdb.py) ------------------------------------------


def test_one_value_too_big_or_not_json_costs_only_its_key(tmp_path: Path) -> None:
    from quintd.sources.vscdb import Unusable, json_fields, keys_with_prefix

    path = _db(
        tmp_path / "state.vscdb",
        "CREATE TABLE cursorDiskKV (key TEXT UNIQUE ON CONFLICT REPLACE, value BLOB);",
    )
    conn = sqlite3.connect(path)
    conn.executemany(
        "INSERT INTO cursorDiskKV VALUES (?, ?)",
        [
            ("composerData:a", '{"status": "generating", "pad": "' + "x" * 17_000_000 + '"}'),
            ("composerData:b", "{not json"),
            ("composerData:c", '{"status": "none", "subComposerIds": ["d"]}'),
            ("bubbleId:c:1", '{"type": 1}'),
        ],
    )
    conn.commit()
    conn.close()

    def query(conn: sqlite3.Connection) -> list[object]:
        keys = [k.key for k in keys_with_prefix(conn, "cursorDiskKV", "composerData:")]
        return [
            json_fields(conn, "cursorDiskKV", k, ("$.status", "$.subComposerIds")) for k in keys
        ]

    found, _owner = read_database(tmp_path, path, query)
    assert found == [Unusable.TOO_BIG, Unusable.NOT_JSON, ["none", ["d"]]]
    assert sqlite_files.SET_ASIDE.reasons() == {}  # the database itself is fine


def test_a_view_in_place_of_an_editors_table_is_refused(tmp_path: Path) -> None:
    from quintd.sources.vscdb import keys_with_prefix

    path = _db(
        tmp_path / "state.vscdb",
        "CREATE VIEW cursorDiskKV AS WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1"
        " FROM r) SELECT 'composerData:' || n AS key, n AS value, n AS rowid FROM r;",
    )
    with pytest.raises(UnreadableDatabase, match="not a plain table"):
        read_database(
            tmp_path, path, lambda conn: keys_with_prefix(conn, "cursorDiskKV", "composerData:")
        )


# -- zstd-compressed values (Zed's threads) -----------------------------------------------


def _raw_frame(window_exponent: int, payload: bytes) -> bytes:
    """One zstd frame by hand: no content size, a window of 2**(10 + exponent) bytes
    declared, one raw block."""
    header = bytes([0x00, window_exponent << 3])
    block = ((len(payload) << 3) | 1).to_bytes(3, "little")  # last block, raw
    return zstd_json.ZSTD_MAGIC + header + block + payload


def test_a_zstd_value_is_capped_in_output_and_window() -> None:
    import zstandard

    # A 16 KiB frame that claims 256 MiB: stopped at the cap, in well under a second.
    bomb = zstandard.ZstdCompressor(level=19).compress(b"\0" * (256 << 20))
    started = time.monotonic()
    with pytest.raises(zstd_json.Undecodable) as refused:
        zstd_json.decompress(bomb, 1 << 20)
    assert refused.value.reason == zstd_json.TOO_LARGE
    assert time.monotonic() - started < 1.0
    assert zstd_json.decompress(_raw_frame(13, b"abc"), 3) == b"abc"  # an 8 MiB window: fine
    # A header asking for a 1 GiB window is refused before anything is allocated.
    with pytest.raises(zstd_json.Undecodable) as refused:
        zstd_json.decompress(_raw_frame(20, b"abc"), 100)
    assert refused.value.reason == zstd_json.CORRUPT
    with pytest.raises(zstd_json.Undecodable):
        zstd_json.decompress(b"not zstd", 100)
    with pytest.raises(zstd_json.Undecodable) as refused:
        zstd_json.decompress(_raw_frame(13, b"abcd"), 3)  # one byte over
    assert refused.value.reason == zstd_json.TOO_LARGE


def test_without_zstandard_values_are_unavailable_not_garbage(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import builtins

    real_import = builtins.__import__

    def no_zstandard(name: str, *args: object, **kwargs: object) -> object:
        if name == "zstandard":
            raise ImportError("No module named 'zstandard'")
        return real_import(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(zstd_json, "_module", [])
    monkeypatch.setattr(builtins, "__import__", no_zstandard)
    with pytest.raises(zstd_json.Undecodable) as refused:
        zstd_json.decompress(_raw_frame(13, b"abc"), 100)
    assert refused.value.reason == zstd_json.UNAVAILABLE
    assert zstd_json._module == [None]  # tried once, not at every value


def test_the_depth_checks_string_pattern_matches_as_the_plain_one_did() -> None:
    """The unrolled string pattern (files._TOKENS) finds the very tokens the plain one did,
    escapes, unterminated strings and stray backslashes included."""
    import re

    from hypothesis import given, settings
    from hypothesis import strategies as st

    from quintd.sources import files

    plain = re.compile(rb'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)
    alphabet = st.sampled_from([b'"', b"\\", b"[", b"]", b"{", b"}", b"a", b"\n", b"\xff"])

    @settings(max_examples=500, deadline=None, derandomize=True)
    @given(st.lists(alphabet, max_size=40).map(b"".join))
    def same(raw: bytes) -> None:
        tokens = [(m.start(), m.group()) for m in files._TOKENS.finditer(raw)]
        assert tokens == [(m.start(), m.group()) for m in plain.finditer(raw)]

    same()


# -- YAML (sources/yaml_files.py): each bound is where it says ----------------------------


def _nested_yaml(depth: int) -> bytes:
    """A top-level mapping (one level) whose ``name`` nests ``depth - 1`` flow mappings."""
    inner = depth - 1
    return b"id: x\nname: " + b"{a: " * inner + b"v" + b"}" * inner + b"\n"


def test_yaml_nesting_up_to_its_bound_is_read() -> None:
    from quintd.sources.yaml_files import MAX_YAML_DEPTH, parse_flat_yaml

    assert parse_flat_yaml(_nested_yaml(MAX_YAML_DEPTH), {"id", "name"}) == {
        "id": "x",
        "name": None,  # a mapping, not a scalar
    }
    assert parse_flat_yaml(_nested_yaml(MAX_YAML_DEPTH + 1), {"id", "name"}) is None
    # A collection closed before it does not make room for one more level.
    assert parse_flat_yaml(b"k: {a: b}\n" + _nested_yaml(MAX_YAML_DEPTH + 1), {"id"}) is None
    # Depth is nesting, not a count of collections: many siblings at level two are read.
    siblings = b"".join(b"k%d: {a: b}\n" % i for i in range(3 * MAX_YAML_DEPTH)) + b"id: x\n"
    assert parse_flat_yaml(siblings, {"id"}) == {"id": "x"}


def test_yaml_aliases_up_to_their_bound_are_read() -> None:
    from quintd.sources.yaml_files import MAX_YAML_ALIASES, parse_flat_yaml

    def doc(aliases: int) -> bytes:
        return b"id: &i x\nlist: [" + b", ".join([b"*i"] * aliases) + b"]\n"

    assert parse_flat_yaml(doc(MAX_YAML_ALIASES), {"id"}) == {"id": "x"}
    assert parse_flat_yaml(doc(MAX_YAML_ALIASES + 1), {"id"}) is None


def test_yaml_events_up_to_their_bound_are_read() -> None:
    from quintd.sources.yaml_files import MAX_YAML_EVENTS, parse_flat_yaml

    def doc(scalars: int) -> bytes:
        # Events: stream, document and mapping starts, the key, the sequence's start,
        # its scalars, and four ends: scalars + 9, numbered from 0.
        return b"id: x\nlist: [" + b",".join([b"y"] * scalars) + b"]\n"

    most = MAX_YAML_EVENTS - 8 - 2  # the last event numbered MAX_YAML_EVENTS (id: x is 2)
    assert parse_flat_yaml(doc(most), {"id"}) == {"id": "x"}
    assert parse_flat_yaml(doc(most + 1), {"id"}) is None


def test_yaml_size_and_lines_up_to_their_bounds_are_read() -> None:
    from quintd.sources.yaml_files import MAX_YAML_BYTES, MAX_YAML_LINES, parse_flat_yaml

    head = b"id: x\npad: "
    full = head + b"p" * (MAX_YAML_BYTES - len(head) - 1) + b"\n"
    assert len(full) == MAX_YAML_BYTES
    assert parse_flat_yaml(full, {"id"}) == {"id": "x"}
    assert parse_flat_yaml(full[:-1] + b"p\n", {"id"}) is None
    lines = b"id: x\n" + b"".join(b"k%d: v\n" % i for i in range(MAX_YAML_LINES - 1))
    assert lines.count(b"\n") == MAX_YAML_LINES
    assert parse_flat_yaml(lines, {"id"}) == {"id": "x"}
    assert parse_flat_yaml(lines + b"z: v\n", {"id"}) is None


def test_yaml_keeps_only_wanted_text_keys_trimmed() -> None:
    from quintd.sources.yaml_files import parse_flat_yaml

    raw = b"id: ' padded '\n~: a null key\nother: kept out\nname: [a]\n"
    assert parse_flat_yaml(raw, {"id", "name"}) == {"id": "padded", "name": None}
