"""The reader kit's file primitives (sources/files.py), each at its edges: the walk by
descriptors and what it refuses, the JSON bounds, whole files and growing JSONL files, one
complaint per file per change, the read budgets, and the small checks on untrusted fields
and directories. Real files, links, FIFOs and pipes in a temporary directory."""

from __future__ import annotations

import fcntl
import logging
import os
import struct
import termios
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from quintd.sources import files
from quintd.sources.files import (
    MAX_JSON_DEPTH,
    MAX_LINE_BYTES,
    SPARSE_MIN_BYTES,
    Complaints,
    JsonlTail,
    PassBudget,
    ReadStats,
    Refused,
    depth_ok,
    identifier,
    open_counted,
    open_under,
    parse_json,
    parse_object,
    path_text,
    read_all,
    read_json_file,
    read_whole,
    real_dir,
    regular,
    sparse,
    stat_under,
    text,
    trusted_dir,
)


@pytest.fixture
def warnings(caplog: pytest.LogCaptureFixture) -> Iterator[pytest.LogCaptureFixture]:
    """The kit's warnings, as logged."""
    logger = logging.getLogger("quintd.sources")
    caplog.set_level(logging.WARNING, logger="quintd.sources")
    logger.addHandler(caplog.handler)
    try:
        yield caplog
    finally:
        logger.removeHandler(caplog.handler)


@pytest.fixture(autouse=True)
def _fresh_complaints(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(files, "COMPLAINTS", Complaints())
    monkeypatch.setattr(files, "PASS_BUDGET", PassBudget())


def _open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


# -- the walk by descriptors --------------------------------------------------------------


def test_open_under_reads_a_plain_file_and_gives_its_metadata(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    path = tmp_path / "a" / "b" / "f.json"
    path.write_bytes(b"hello")
    fds = _open_fds()
    fd, info = open_under(tmp_path, path)
    try:
        assert os.read(fd, 100) == b"hello"
        assert info.st_ino == path.stat().st_ino and info.st_size == 5
    finally:
        os.close(fd)
    assert _open_fds() == fds  # every directory descriptor on the way was closed


def test_open_under_refuses_what_is_not_a_plain_path_under_its_root(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    (tmp_path / "f").write_bytes(b"x")
    for path in (tmp_path.parent / "elsewhere", tmp_path, tmp_path / "d" / ".." / "f"):
        with pytest.raises(Refused):
            open_under(tmp_path, path)


def test_open_under_refuses_links_on_the_way_and_at_the_end(tmp_path: Path) -> None:
    real = tmp_path / "real"
    real.mkdir()
    (real / "f").write_bytes(b"x")
    (tmp_path / "dirlink").symlink_to(real)
    (tmp_path / "filelink").symlink_to(real / "f")
    (tmp_path / "rootlink").symlink_to(tmp_path)
    (tmp_path / "file").write_bytes(b"x")
    fds = _open_fds()
    for root, path in (
        (tmp_path, tmp_path / "dirlink" / "f"),  # a link where a directory is
        (tmp_path, tmp_path / "filelink"),  # the file itself a link
        (tmp_path, tmp_path / "file" / "f"),  # a file where a directory is
        (tmp_path / "rootlink", tmp_path / "rootlink" / "file"),  # the root a link
    ):
        with pytest.raises(Refused):
            open_under(root, path)
    assert _open_fds() == fds


def test_open_under_refuses_a_directory_or_a_fifo_without_waiting(tmp_path: Path) -> None:
    (tmp_path / "d").mkdir()
    os.mkfifo(tmp_path / "fifo")
    fds = _open_fds()
    for path in (tmp_path / "d", tmp_path / "fifo"):
        with pytest.raises(Refused, match="not a regular file"):
            open_under(tmp_path, path)
    assert _open_fds() == fds  # the descriptor of what was refused is closed


def test_open_under_says_a_missing_file_is_missing_not_refused(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        open_under(tmp_path, tmp_path / "nothing")
    with pytest.raises(FileNotFoundError):
        open_under(tmp_path / "no-root", tmp_path / "no-root" / "f")
    stats = ReadStats()
    assert open_counted(tmp_path, tmp_path / "nothing", stats) is None
    assert stats.refused == 0


def test_open_counted_counts_a_refusal(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"x")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    stats = ReadStats()
    assert open_counted(tmp_path, tmp_path / "link", stats) is None
    assert stats.refused == 1
    opened = open_counted(tmp_path, tmp_path / "f", stats)
    assert opened is not None and stats.refused == 1
    os.close(opened[0])


def test_stat_under_gives_a_regular_files_metadata_only(tmp_path: Path) -> None:
    (tmp_path / "f").write_bytes(b"abc")
    (tmp_path / "link").symlink_to(tmp_path / "f")
    fds = _open_fds()
    info = stat_under(tmp_path, tmp_path / "f")
    assert info is not None and info.st_size == 3
    assert stat_under(tmp_path, tmp_path / "link") is None
    assert stat_under(tmp_path, tmp_path / "nothing") is None
    assert _open_fds() == fds


# -- JSON bounds --------------------------------------------------------------------------


def _nested(depth: int, opener: bytes = b"[", closer: bytes = b"]") -> bytes:
    return opener * depth + closer * depth


def test_depth_is_allowed_up_to_its_limit_for_either_bracket() -> None:
    for opener, closer in ((b"[", b"]"), (b"{", b"}")):
        assert depth_ok(_nested(MAX_JSON_DEPTH, opener, closer))
        assert depth_ok(_nested(MAX_JSON_DEPTH + 1, opener, closer)) is False
    # Mixed brackets count together.
    mixed = b"[{" * (MAX_JSON_DEPTH // 2) + b"[" + b"}]" * (MAX_JSON_DEPTH // 2) + b"]"
    assert not depth_ok(mixed)


def test_depth_counts_nesting_not_brackets_and_skips_strings() -> None:
    # Many siblings: more brackets than the limit, shallow.
    assert depth_ok(b"[" + b",".join([b"[{}]"] * (2 * MAX_JSON_DEPTH)) + b"]")
    # As deep as allowed, with more brackets than the limit around it.
    assert depth_ok(_nested(MAX_JSON_DEPTH) + b"[]" * MAX_JSON_DEPTH)
    # Closed brackets make no room for deeper ones after them.
    assert depth_ok(b"[]" * MAX_JSON_DEPTH + _nested(MAX_JSON_DEPTH + 1)) is False
    # Brackets inside strings (escaped quotes too) are no nesting.
    inside = b'["' + b"[{" * MAX_JSON_DEPTH + b'\\"[[", "x"]'
    assert depth_ok(inside)
    assert depth_ok(b"[" * 3 + b"]" * 3, limit=3) and not depth_ok(b"[" * 4 + b"]" * 4, limit=3)


def test_parse_json_takes_text_or_utf8_bytes_within_its_bounds() -> None:
    assert parse_json('{"a": [1, 2]}') == {"a": [1, 2]}
    assert parse_json(b"[1, 2]") == [1, 2]
    assert parse_json("12") == 12
    assert parse_json(b"\xff\xfe") is None  # not UTF-8
    assert parse_json(12) is None and parse_json(None) is None
    assert parse_json("[1, 2]", limit=6) == [1, 2]
    assert parse_json("[1, 2]", limit=5) is None
    assert parse_json("{not json") is None
    assert parse_json(_nested(MAX_JSON_DEPTH + 1).decode()) is None
    assert parse_json(_nested(MAX_JSON_DEPTH).decode()) is not None


def test_parse_object_takes_only_an_object() -> None:
    assert parse_object(b'{"a": 1}') == {"a": 1}
    assert parse_object(b"[1]") is None
    assert parse_object(b'"text"') is None
    assert parse_object(b"{bad") is None
    assert parse_object(b'{"a": "\xff"}') is None
    assert parse_object(b'{"a": ' + _nested(MAX_JSON_DEPTH) + b"}") is None
    assert parse_object(b'{"a": ' + _nested(MAX_JSON_DEPTH - 1) + b"}") is not None


# -- complaints ---------------------------------------------------------------------------


def _said(caplog: pytest.LogCaptureFixture) -> int:
    count = len({id(r) for r in caplog.records if r.name == "quintd.sources"})
    caplog.clear()
    return count


def test_one_complaint_per_file_per_change(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    complaints = Complaints()
    path = tmp_path / "f"
    path.write_bytes(b"x")
    complaints.warn(path, path.stat(), "garbage")
    assert _said(warnings) == 1
    complaints.warn(path, path.stat(), "garbage")
    assert _said(warnings) == 0
    path.write_bytes(b"xy")  # another size: another file
    complaints.warn(path, path.stat(), "garbage")
    assert _said(warnings) == 1
    complaints.warn(tmp_path / "gone", None, "garbage")
    complaints.warn(tmp_path / "gone", None, "garbage")
    assert _said(warnings) == 1
    # No metadata counts as an empty file of the epoch: no second complaint.
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    os.utime(empty, ns=(0, 0))
    complaints.warn(empty, empty.stat(), "garbage")
    complaints.warn(empty, None, "garbage")
    assert _said(warnings) == 1


def test_complaints_forget_the_least_recent_file_past_their_size(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    complaints = Complaints(size=2)
    a, b, c = (tmp_path / n for n in "abc")
    for path in (a, b, c):
        path.write_bytes(b"x")
    complaints.warn(a, a.stat(), "x")
    complaints.warn(b, b.stat(), "x")
    complaints.warn(a, a.stat(), "x")  # both kept: no complaint again
    assert _said(warnings) == 2
    a.write_bytes(b"changed")
    complaints.warn(a, a.stat(), "x")  # a is now the most recent
    complaints.warn(c, c.stat(), "x")  # b, the least recent, is forgotten
    assert _said(warnings) == 2
    complaints.warn(a, a.stat(), "x")
    assert _said(warnings) == 0
    complaints.warn(b, b.stat(), "x")
    assert _said(warnings) == 1


# -- whole files --------------------------------------------------------------------------


def test_read_whole_reads_up_to_its_limit_and_refuses_more(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"0123456789")
    stats = ReadStats()
    fds = _open_fds()
    whole = read_whole(path, tmp_path, stats, limit=10)
    assert _open_fds() == fds
    assert whole is not None and whole.raw == b"0123456789"
    info = path.stat()
    assert whole.signature == (info.st_ino, info.st_size, info.st_mtime_ns)
    assert whole.info.st_ino == info.st_ino and stats.refused == 0
    assert read_whole(path, tmp_path, stats, limit=10, unless=whole.signature) is None
    assert read_whole(path, tmp_path, stats, limit=10, unless=(0, 0, 0)) is not None
    too_big = read_whole(path, tmp_path, stats, limit=9)
    assert too_big is not None and too_big.raw is None and stats.refused == 1
    assert too_big.signature == whole.signature
    assert _said(warnings) == 1
    assert read_whole(tmp_path / "nothing", tmp_path, stats) is None


def test_read_json_file_counts_garbage_but_not_an_empty_file(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    stats = ReadStats()
    good = tmp_path / "good.json"
    good.write_bytes(b'{"a": 1}')
    found = read_json_file(good, tmp_path, stats)
    assert found is not None and found.data == {"a": 1} and found.owner == os.getuid()
    os.chown(good, 4321, 4321)
    found = read_json_file(good, tmp_path, stats)
    assert found is not None and found.owner == 4321
    empty = tmp_path / "empty.json"
    empty.write_bytes(b" \n")
    assert read_json_file(empty, tmp_path, stats) is None
    assert stats.garbage == 0 and _said(warnings) == 0
    for raw in (b"[1]", b"{bad"):
        bad = tmp_path / "bad.json"
        bad.write_bytes(raw)
        assert read_json_file(bad, tmp_path, stats) is None
    assert stats.garbage == 2 and _said(warnings) == 2
    big = tmp_path / "big.json"
    big.write_bytes(b'{"a": "' + b"x" * files.MAX_JSON_FILE_BYTES + b'"}')
    assert read_json_file(big, tmp_path, stats) is None
    assert stats.refused == 1 and stats.garbage == 2
    assert read_json_file(tmp_path / "nothing", tmp_path, stats) is None


def test_read_all_stops_one_byte_past_its_limit(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 20)
    for limit, expected in ((10, 11), (19, 20), (20, 20), (30, 20)):
        fd = os.open(path, os.O_RDONLY)
        try:
            assert len(read_all(fd, limit)) == expected, limit
        finally:
            os.close(fd)


def _unread(fd: int) -> int:
    raw = fcntl.ioctl(fd, termios.FIONREAD, struct.pack("i", 0))
    count: int = struct.unpack("i", raw)[0]
    return count


def test_read_all_counts_what_short_reads_gave() -> None:
    """A pipe gives what was written so far: exactly the limit at first, and the one more
    byte is still asked for (and no more)."""
    read_end, write_end = os.pipe()
    got: list[bytes] = []
    reader = threading.Thread(target=lambda: got.append(read_all(read_end, 10)))
    try:
        os.write(write_end, b"a" * 10)
        reader.start()
        deadline = time.monotonic() + 30.0
        while _unread(read_end) and time.monotonic() < deadline:
            time.sleep(0.01)  # polling a condition: the reader took the first bytes
        assert _unread(read_end) == 0
        os.write(write_end, b"b" * 20)
        os.close(write_end)
        write_end = -1
        reader.join(30.0)
        assert got == [b"a" * 10 + b"b"]
    finally:
        if write_end >= 0:
            os.close(write_end)
        reader.join(30.0)
        os.close(read_end)


# -- growing JSONL files ------------------------------------------------------------------


def test_a_tail_reads_complete_lines_and_waits_for_a_half_written_one(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"n": 1}\n\n   \n[2]\n{"n": 3}\n{"n": 4')
    files.PASS_BUDGET.refilled = time.monotonic() + 3600.0  # no refill during the test
    stats = ReadStats()
    tail = JsonlTail(path, tmp_path, stats=stats)
    assert tail.read_new() == ([{"n": 1}, {"n": 3}], False)
    assert stats.lines == 3 and stats.garbage == 1  # blank lines are no lines
    assert tail.owner == os.getuid() and tail.offset == path.stat().st_size
    assert next(r.getMessage() for r in warnings.records).startswith("skipped 1 bad line(s)")
    assert _said(warnings) == 1
    with open(path, "ab") as fh:
        fh.write(b"}")
    assert tail.read_new() == ([], False)  # still no newline
    with open(path, "ab") as fh:
        fh.write(b"\n")  # one byte to read: the line is complete
    assert tail.read_new() == ([{"n": 4}], False)
    with open(path, "ab") as fh:
        fh.write(b'{"n": 5}\n')
    assert tail.read_new() == ([{"n": 5}], False)
    assert stats.garbage == 1 and _said(warnings) == 0
    fds = _open_fds()
    assert tail.read_new() == ([], False)
    assert _open_fds() == fds
    with open(path, "ab") as fh:
        fh.write(b"bad\nworse\n")
    assert tail.read_new() == ([], False)
    assert next(r.getMessage() for r in warnings.records).startswith("skipped 2 bad line(s)")
    # Every byte read was taken from the pass's budget, and no more.
    assert files.PASS_BUDGET.left == files.PASS_BUDGET.size - path.stat().st_size


def test_a_missing_tail_reads_nothing_and_has_nothing_left(tmp_path: Path) -> None:
    tail = JsonlTail(tmp_path / "absent.jsonl", tmp_path)
    assert tail.read_new() == ([], False)


def test_a_tail_starts_over_on_a_truncated_or_replaced_file(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"n": 1}\n{"n": 2}\n')
    tail = JsonlTail(path, tmp_path)
    assert tail.read_new()[0] == [{"n": 1}, {"n": 2}]
    path.write_bytes(b'{"n": 3}\n')  # truncated in place: shorter
    assert tail.read_new()[0] == [{"n": 3}]
    other = tmp_path / "new"
    other.write_bytes(b'{"n": 4}\n{"n": 5}\n{"n": 6}\n')
    other.replace(path)  # another file, longer than what was read
    assert tail.read_new()[0] == [{"n": 4}, {"n": 5}, {"n": 6}]


def test_a_tail_reads_within_its_budget_and_says_more_is_left(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    line = b'{"n": 1}\n'
    path.write_bytes(line * 3)
    tail = JsonlTail(path, tmp_path)
    assert tail.read_new(budget=len(line)) == ([{"n": 1}], True)
    assert tail.offset == len(line)
    assert tail.read_new(budget=len(line) + 2) == ([{"n": 1}], True)
    assert tail.read_new(budget=100) == ([{"n": 1}], False)
    assert tail.read_new(budget=0) == ([], False)


def test_a_tail_reads_nothing_once_the_pass_budget_is_spent(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"n": 1}\n')
    files.PASS_BUDGET.left = 0
    files.PASS_BUDGET.refilled = time.monotonic() + 3600.0  # no refill during the test
    tail = JsonlTail(path, tmp_path)
    assert tail.read_new() == ([], True)
    assert tail.offset == 0
    files.PASS_BUDGET.refill()
    assert tail.read_new() == ([{"n": 1}], False)


def test_a_line_at_the_cap_is_read_one_past_it_is_not(tmp_path: Path) -> None:
    head = b'{"pad": "'
    at_cap = head + b"x" * (MAX_LINE_BYTES - len(head) - 2) + b'"}'
    assert len(at_cap) == MAX_LINE_BYTES
    past = at_cap[:-2] + b'x"}'
    path = tmp_path / "t.jsonl"
    path.write_bytes(at_cap + b"\n" + past + b"\n" + b'{"n": 1}\n')
    stats = ReadStats()
    tail = JsonlTail(path, tmp_path, stats=stats)
    records, more = tail.read_new(budget=3 * MAX_LINE_BYTES)
    assert not more and [len(r.get("pad", "")) for r in records] == [len(at_cap) - 11, 0]
    assert records[1] == {"n": 1} and stats.garbage == 1 and stats.lines == 3


def test_a_half_written_line_past_the_cap_is_dropped_and_its_end_skipped(
    tmp_path: Path,
) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b'{"n": 1}\n' + b"x" * MAX_LINE_BYTES)  # no newline: kept as partial
    stats = ReadStats()
    tail = JsonlTail(path, tmp_path, stats=stats)
    assert tail.read_new() == ([{"n": 1}], False)
    assert stats.garbage == 0 and not tail.skipping  # exactly the cap: still waited for
    with open(path, "ab") as fh:
        fh.write(b"x")
    assert tail.read_new() == ([], False)
    assert stats.garbage == 1 and tail.skipping and tail.partial == b""
    with open(path, "ab") as fh:
        fh.write(b'xxx"}\n{"n": 2}\n')
    assert tail.read_new() == ([{"n": 2}], False)
    assert stats.garbage == 1 and not tail.skipping


def test_a_line_without_end_past_the_budget_is_skipped_at_once(tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    path.write_bytes(b"x" * (MAX_LINE_BYTES + 100))
    tail = JsonlTail(path, tmp_path)
    # The first read, within its budget, finds the line past the cap: the rest is skipped.
    assert tail.read_new(budget=MAX_LINE_BYTES + 10) == ([], False)
    assert tail.offset == path.stat().st_size


def test_a_sparse_transcript_is_complained_of_once(
    tmp_path: Path, warnings: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "holes.jsonl"
    with open(path, "wb") as fh:
        fh.truncate(2 * SPARSE_MIN_BYTES)
    tail = JsonlTail(path, tmp_path)
    assert tail.read_new() == ([], False)
    assert _said(warnings) == 1 and tail.stats.garbage == 1


def test_a_sparse_file_is_told_by_its_holes(tmp_path: Path) -> None:
    def is_sparse(path: Path) -> bool:
        fd = os.open(path, os.O_RDONLY)
        try:
            return sparse(fd, os.fstat(fd))
        finally:
            os.close(fd)

    at_min = tmp_path / "at-min"
    with open(at_min, "wb") as fh:
        fh.truncate(SPARSE_MIN_BYTES)
    assert is_sparse(at_min) is False  # not larger than the minimum: never looked at
    past_min = tmp_path / "past-min"
    with open(past_min, "wb") as fh:
        fh.truncate(SPARSE_MIN_BYTES + 1)
    assert is_sparse(past_min) is True
    # Half data, then a hole to the end: half holes is sparse.
    half = tmp_path / "half"
    size = 2 * SPARSE_MIN_BYTES
    with open(half, "wb") as fh:
        fh.write(b"x" * (size // 2))
        fh.truncate(size)
    assert is_sparse(half) is True
    # A hole first, then data to the end: under half holes is not.
    data_last = tmp_path / "data-last"
    with open(data_last, "wb") as fh:
        fh.seek(SPARSE_MIN_BYTES // 2)
        fh.write(b"x" * SPARSE_MIN_BYTES)
    assert is_sparse(data_last) is False
    # Data, a hole of a sixth, data: not sparse (the hole is counted from where it begins).
    middle = tmp_path / "middle"
    with open(middle, "wb") as fh:
        fh.write(b"x" * (SPARSE_MIN_BYTES // 2))
        fh.seek(SPARSE_MIN_BYTES // 2 + SPARSE_MIN_BYTES // 4)
        fh.write(b"x" * (SPARSE_MIN_BYTES // 2))
    assert is_sparse(middle) is False
    # Cut into more pieces than are looked at: sparse, whatever its holes add up to.
    pieces = tmp_path / "pieces"
    with open(pieces, "wb") as fh:
        for i in range(files._MAX_EXTENTS + 20):
            fh.seek(i * 64 * 1024)
            fh.write(b"x" * (60 * 1024))
    assert pieces.stat().st_size > SPARSE_MIN_BYTES
    assert is_sparse(pieces) is True
    # A descriptor that cannot seek: cannot tell, so not sparse.
    read_end, write_end = os.pipe()
    try:
        assert sparse(read_end, past_min.stat()) is False
    finally:
        os.close(read_end)
        os.close(write_end)


# -- pass budget --------------------------------------------------------------------------


def test_the_pass_budget_refills_itself_after_a_second() -> None:
    budget = PassBudget(size=10)
    assert budget.take(10) == 10 and budget.take(1) == 0
    budget.refilled = time.monotonic() - 1.5  # a pass a while ago
    assert budget.take(4) == 4 and budget.exhausted == 1 and budget.left == 6
    assert budget.take(-5) == 0 and budget.left == 6
    budget.refill()  # not exhausted: not counted
    assert budget.exhausted == 1
    assert budget.take(9) == 9
    budget.refill()  # one byte left: not exhausted
    assert budget.exhausted == 1


# -- untrusted fields and directories -----------------------------------------------------


def test_path_text_and_identifier_bounds() -> None:
    assert path_text("/a/b") == "/a/b"
    assert path_text("x" * 10, limit=10) == "x" * 10
    for bad in ("x" * 11, "", "a\x00b", None, 12):
        assert path_text(bad, limit=10) is None
    assert identifier("a-b_c.d:e$f9") == "a-b_c.d:e$f9"
    assert identifier("x" * 10, limit=10) == "x" * 10
    for bad in ("x" * 11, "", "a b", "a/b", None, 12):
        assert identifier(bad, limit=10) is None
    assert text("a\nb", 10) == "a b" and text(3) is None


def test_trusted_and_real_dirs_and_regular_files(tmp_path: Path) -> None:
    uid = os.getuid()
    (tmp_path / "d").mkdir()
    (tmp_path / "link").symlink_to(tmp_path / "d")
    (tmp_path / "f").write_bytes(b"x")
    assert trusted_dir(tmp_path / "d", uid)
    assert not trusted_dir(tmp_path / "d", uid + 1)
    assert not trusted_dir(tmp_path / "link", uid)
    assert not trusted_dir(tmp_path / "f", uid)
    assert trusted_dir(tmp_path / "absent", uid, absent=True)
    assert not trusted_dir(tmp_path / "absent", uid)
    assert trusted_dir(tmp_path / "f" / "under-a-file", uid, absent=True) is False
    assert real_dir(tmp_path / "d")
    assert not real_dir(tmp_path / "link") and not real_dir(tmp_path / "f")
    assert real_dir(tmp_path / "absent") is False
    info = regular(tmp_path / "f")
    assert info is not None and info.st_size == 1
    assert regular(tmp_path / "d") is None and regular(tmp_path / "absent") is None
    (tmp_path / "flink").symlink_to(tmp_path / "f")
    assert regular(tmp_path / "flink") is None
