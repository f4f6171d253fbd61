"""Reading agent files as the untrusted input they are.

Any local user writes the files quintd reads, and quintd may run as root. So:
- a file is opened by walking directory descriptors from the agent's state directory:
  ``openat`` with ``O_NOFOLLOW`` on every component, then ``fstat`` for its type and owner.
  A symlink anywhere on the way, or a directory swapped in between two steps, is refused;
  nothing is ever resolved first and opened after (no check-then-open race);
- sizes are bounded before anything is parsed: whole-file JSON at 256 KiB, a JSONL line at
  4 MiB, a read at 8 MiB per file per pass; nesting deeper than 64 levels is refused before
  the JSON parser sees it (a crafted file must not make the parser recurse without end);
- a bad file or line is skipped and counted, the good lines around it are kept, and a
  warning is logged at most once per file per change: never a traceback per pass;
- JSONL files are read incrementally from the last offset; a half-written last line waits
  for its newline.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quintd.model import clean_text

log = logging.getLogger("quintd.sources")

MAX_LINE_BYTES = 4 * 1024 * 1024  # a longer line is skipped, not buffered
READ_BUDGET_BYTES = 8 * 1024 * 1024  # per file per pass; the rest next pass
# Read per pass over every reader and file (:data:`PASS_BUDGET`): twenty users' 4 GiB
# transcripts cannot make one pass read 160 MB.
PASS_BUDGET_BYTES = 32 * 1024 * 1024


class PassBudget:
    """The bytes all readers may still read in this pass (the manager refills it at each
    pass; a reader used alone finds it refilled after a second)."""

    def __init__(self, size: int = PASS_BUDGET_BYTES) -> None:
        self.size = size
        self.left = size
        self.refilled = time.monotonic()
        self.exhausted = 0  # passes that ran out (the rest waited for the next)

    def refill(self) -> None:
        if self.left <= 0:
            self.exhausted += 1
        self.left = self.size
        self.refilled = time.monotonic()

    def take(self, wanted: int) -> int:
        if time.monotonic() - self.refilled > 1.0:
            self.refill()
        granted = max(0, min(wanted, self.left))
        self.left -= granted
        return granted


PASS_BUDGET = PassBudget()


SPARSE_MIN_BYTES = 16 * 1024 * 1024
_MAX_EXTENTS = 256


def sparse(fd: int, info: os.stat_result) -> bool:
    """Mostly holes: a large file whose holes (``SEEK_HOLE``) make up half its size or
    more, or that is cut into more than :data:`_MAX_EXTENTS` pieces (written by truncate
    or seeks, never by an agent appending lines). Holes, not allocated blocks: a file on a
    compressing filesystem (ZFS, btrfs) takes less disk than its size and is no less a
    transcript. A filesystem that cannot tell holes reports none."""
    if info.st_size <= SPARSE_MIN_BYTES or not hasattr(os, "SEEK_HOLE"):
        return False
    holes = offset = 0
    try:
        for _ in range(_MAX_EXTENTS):
            hole = os.lseek(fd, offset, os.SEEK_HOLE)
            if hole >= info.st_size:
                return holes * 2 >= info.st_size
            try:
                data = os.lseek(fd, hole, os.SEEK_DATA)
            except OSError as exc:  # ENXIO: holes to the end
                if exc.errno != errno.ENXIO:
                    raise
                data = info.st_size
            holes += data - hole
            if holes * 2 >= info.st_size:
                return True
            offset = data
    except OSError:
        return False  # cannot tell: the read budget bounds what it costs
    return True


MAX_JSON_FILE_BYTES = 256 * 1024  # whole-file JSON (registries, metas)
MAX_JSON_DEPTH = 64

_O_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_O_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
_O_NONBLOCK = getattr(os, "O_NONBLOCK", 0)
_O_CLOEXEC = getattr(os, "O_CLOEXEC", 0)
# A string (the loop unrolled: a 1 MiB document is scanned 4x faster than with
# `"(?:[^"\\]|\\.)*"`, the same matches) or a bracket.
_TOKENS = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}]', re.DOTALL)


@dataclass
class ReadStats:
    lines: int = 0
    garbage: int = 0  # lines or files that are not JSON objects, too long or too deep
    refused: int = 0  # files refused: symlinks on the way, not regular, too large


class Refused(OSError):
    """A path that may not be read: a link, a non-regular file, a path out of the root."""


def open_under(root: Path, path: Path) -> tuple[int, os.stat_result]:
    """Open ``path`` (which must lie under ``root``) read-only by walking directory
    descriptors with ``O_NOFOLLOW``; returns the descriptor and its ``fstat``. Raises
    :class:`Refused` for a link, a ``..``, or anything but a regular file, and
    ``OSError`` (``FileNotFoundError`` ...) as the system says."""
    try:
        parts = path.relative_to(root).parts
    except ValueError:
        raise Refused(f"{path} is not under {root}") from None
    if not parts or any(p in ("..", ".", "") for p in parts):
        raise Refused(f"{path}: not a plain path under {root}")
    flags = os.O_RDONLY | _O_NOFOLLOW | _O_CLOEXEC
    try:
        dir_fd = os.open(root, flags | _O_DIRECTORY)
    except OSError as exc:
        raise _refusal(exc, root) from None
    try:
        for part in parts[:-1]:
            try:
                next_fd = os.open(part, flags | _O_DIRECTORY, dir_fd=dir_fd)
            except OSError as exc:
                raise _refusal(exc, path) from None
            os.close(dir_fd)
            dir_fd = next_fd
        try:
            fd = os.open(parts[-1], flags | _O_NONBLOCK, dir_fd=dir_fd)
        except OSError as exc:
            raise _refusal(exc, path) from None
    finally:
        os.close(dir_fd)
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode):
        os.close(fd)
        raise Refused(f"{path} is not a regular file")
    return fd, info


def _refusal(exc: OSError, path: Path) -> OSError:
    # ELOOP (EMLINK on some BSDs): a symlink where O_NOFOLLOW forbids one; ENOTDIR: a link
    # or a file where a directory should be.
    if exc.errno in (errno.ELOOP, errno.EMLINK, errno.ENOTDIR):
        return Refused(f"{path}: a link or a non-directory on the way")
    return exc


def open_counted(root: Path, path: Path, stats: ReadStats) -> tuple[int, os.stat_result] | None:
    """:func:`open_under`, for a reader: a refused file (a link, another user's, not a
    regular file) is counted in ``stats``; an absent or unreadable one is None too."""
    try:
        return open_under(root, path)
    except Refused:
        stats.refused += 1
    except OSError:
        pass
    return None


def stat_under(root: Path, path: Path) -> os.stat_result | None:
    """``fstat`` of a regular file reached safely, or None."""
    try:
        fd, info = open_under(root, path)
    except OSError:
        return None
    os.close(fd)
    return info


def depth_ok(raw: bytes, limit: int = MAX_JSON_DEPTH) -> bool:
    """Whether JSON text nests no deeper than ``limit`` (strings are skipped whole). Cheap
    for ordinary text: only a text with more brackets than the limit is scanned."""
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return True
    depth = 0
    for match in _TOKENS.finditer(raw):
        token = match.group()
        if token in (b"[", b"{"):
            depth += 1
            if depth > limit:
                return False
        elif token in (b"]", b"}"):
            depth -= 1
    return True


def parse_json(value: object, limit: int | None = None) -> Any:
    """A JSON value from an untrusted string or UTF-8 bytes (a column, a part of a file),
    or None: not text, longer than ``limit``, nested too deep, not JSON."""
    if isinstance(value, bytes):
        try:
            value = value.decode("utf-8")
        except UnicodeDecodeError:
            return None
    if not isinstance(value, str) or (limit is not None and len(value) > limit):
        return None
    if not depth_ok(value.encode("utf-8", "replace")):
        return None
    try:
        return json.loads(value)
    except (ValueError, RecursionError):
        return None


def parse_object(raw: bytes) -> dict[str, Any] | None:
    """A JSON object from untrusted bytes, or None (not JSON, not an object, too deep)."""
    if not depth_ok(raw):
        return None
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return None
    return data if isinstance(data, dict) else None


class Complaints:
    """At most one warning per file per change: a garbage file rewritten every second by a
    hostile user must not flood the journal."""

    def __init__(self, size: int = 1024) -> None:
        self._seen: OrderedDict[Path, tuple[int, int]] = OrderedDict()
        self._size = size

    def warn(self, path: Path, info: os.stat_result | None, what: str) -> None:
        identity = (info.st_size, info.st_mtime_ns) if info is not None else (0, 0)
        if self._seen.get(path) == identity:
            return
        self._seen[path] = identity
        self._seen.move_to_end(path)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
        log.warning("skipped %s in %s", what, clean_text(str(path), 1000))


COMPLAINTS = Complaints()


@dataclass(frozen=True)
class JsonFile:
    data: dict[str, Any]
    owner: int  # the uid owning the file


@dataclass(frozen=True)
class WholeFile:
    raw: bytes | None  # None: larger than it may be (refused, counted)
    info: os.stat_result
    signature: tuple[int, int, int]  # (inode, size, modification time in ns)


def read_whole(
    path: Path,
    root: Path,
    stats: ReadStats,
    limit: int = MAX_JSON_FILE_BYTES,
    unless: tuple[int, int, int] | None = None,
) -> WholeFile | None:
    """A small file read whole, safely (:func:`open_counted`); None when absent, refused,
    or (``unless``) its signature is still that one. A file over ``limit`` is not read:
    its ``raw`` is None, counted as refused and complained of once."""
    opened = open_counted(root, path, stats)
    if opened is None:
        return None
    fd, info = opened
    try:
        signature = (info.st_ino, info.st_size, info.st_mtime_ns)
        if signature == unless:
            return None
        if info.st_size > limit:
            stats.refused += 1
            COMPLAINTS.warn(path, info, "a file too large to be what it should")
            return WholeFile(None, info, signature)
        return WholeFile(read_all(fd, limit), info, signature)
    finally:
        os.close(fd)


def read_json_file(path: Path, root: Path, stats: ReadStats) -> JsonFile | None:
    """A small JSON object file, or None (absent, refused, too large or garbage)."""
    whole = read_whole(path, root, stats)
    if whole is None or whole.raw is None:
        return None
    raw, info = whole.raw, whole.info
    data = parse_object(raw)
    if data is None:
        if raw.strip():  # an empty file is a rewrite caught half way, not garbage
            stats.garbage += 1
            COMPLAINTS.warn(path, info, "a file that is not a JSON object")
        return None
    return JsonFile(data, info.st_uid)


@dataclass
class JsonlTail:
    """The new complete lines of a growing JSONL file, as JSON objects."""

    path: Path
    root: Path
    offset: int = 0
    identity: tuple[int, int] | None = None  # (device, inode)
    partial: bytes = b""
    skipping: bool = False  # inside a line too long to keep
    owner: int | None = None  # the uid owning the file, from its last read
    stats: ReadStats = field(default_factory=ReadStats)

    def read_new(self, budget: int = READ_BUDGET_BYTES) -> tuple[list[dict[str, Any]], bool]:
        """New records since the last call, and whether more is left to read."""
        opened = open_counted(self.root, self.path, self.stats)
        if opened is None:
            return [], False
        fd, info = opened
        try:
            identity = (info.st_dev, info.st_ino)
            if identity != self.identity or info.st_size < self.offset:
                # Replaced or truncated: start over.
                self.identity, self.offset, self.partial, self.skipping = identity, 0, b"", False
            self.owner = info.st_uid
            if self.offset < info.st_size and sparse(fd, info):
                # Garbage, not a transcript: skipped to its end once, counted.
                self.offset, self.partial, self.skipping = info.st_size, b"", True
                self.stats.garbage += 1
                COMPLAINTS.warn(self.path, info, "a sparse file (mostly holes)")
                return [], False
            want = PASS_BUDGET.take(min(budget, info.st_size - self.offset))
            data = os.pread(fd, want, self.offset) if want > 0 else b""
        finally:
            os.close(fd)
        self.offset += len(data)
        bad_before = self.stats.garbage
        records = self._split(data)
        if self.skipping and not self.partial and b"\n" not in data:
            # Inside a line past the cap: the rest written so far is skipped at once,
            # not read 8 MiB a pass (a 4 GiB line without a newline).
            self.offset = max(self.offset, info.st_size)
        if self.stats.garbage > bad_before:
            COMPLAINTS.warn(self.path, info, f"{self.stats.garbage - bad_before} bad line(s)")
        return records, self.offset < info.st_size

    def _split(self, data: bytes) -> list[dict[str, Any]]:
        records: list[dict[str, Any]] = []
        chunks = (self.partial + data).split(b"\n")
        self.partial = chunks.pop()  # no newline yet: wait for it
        for chunk in chunks:
            if self.skipping:  # the end of an over-long line
                self.skipping = False
                continue
            record = self._parse(chunk)
            if record is not None:
                records.append(record)
        if len(self.partial) > MAX_LINE_BYTES:
            self.partial, self.skipping = b"", True
            self.stats.garbage += 1
        return records

    def _parse(self, line: bytes) -> dict[str, Any] | None:
        if not line.strip():
            return None
        self.stats.lines += 1
        record = parse_object(line) if len(line) <= MAX_LINE_BYTES else None
        if record is None:
            self.stats.garbage += 1
        return record


def text(value: Any, limit: int = 200) -> str | None:
    """A string field from untrusted JSON, or None: cleaned (no controls, no bidi
    overrides, one line) and capped."""
    return clean_text(value, limit)


def path_text(value: Any, limit: int = 4096) -> str | None:
    """A path from untrusted JSON, kept as written (it names files; it is never sent or
    printed raw): a string of at most ``limit`` characters without NUL, or None."""
    if not isinstance(value, str) or not value or len(value) > limit or "\x00" in value:
        return None
    return value


def identifier(value: Any, limit: int = 128) -> str | None:
    """An id from untrusted JSON: letters, digits, ``-``, ``_``, ``.``, ``:``, ``$`` only."""
    if not isinstance(value, str) or not value or len(value) > limit:
        return None
    return value if _IDENT.fullmatch(value) else None


_IDENT = re.compile(r"[A-Za-z0-9_.:$-]+")


def trusted_dir(path: Path, uid: int, *, absent: bool = False) -> bool:
    """Whether ``path`` is a real directory (not a link) owned by ``uid``: another user's
    files are never read in a process's name. ``absent``: the answer for a directory that
    does not exist yet (True where the agent will create it as its user and it is checked
    again once it is there); a directory that cannot be looked at (inside a home we may
    not enter) is never trusted."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return absent
    except OSError:
        return False
    return stat.S_ISDIR(info.st_mode) and info.st_uid == uid


def real_dir(path: Path) -> bool:
    """A directory, not a link to one."""
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def regular(path: Path) -> os.stat_result | None:
    """The path's own metadata, if it is a regular file (not a link)."""
    try:
        info = os.lstat(path)
    except OSError:
        return None
    return info if stat.S_ISREG(info.st_mode) else None


def read_all(fd: int, limit: int) -> bytes:
    """What ``fd`` reads, up to ``limit`` bytes and one more (so that a file grown past
    the limit shows it)."""
    chunks = []
    total = 0
    while total <= limit:
        chunk = os.read(fd, limit + 1 - total)
        if not chunk:
            break
        chunks.append(chunk)
        total += len(chunk)
    return b"".join(chunks)
