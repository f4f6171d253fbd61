"""Reading agent files as the untrusted input they are: incrementally, from the last
offset, a half-written last line left for later, garbage lines skipped and counted,
never through a symlink out of the agent's state directory, never too much at once."""

from __future__ import annotations

import json
import os
import stat
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MAX_LINE_BYTES = 4 * 1024 * 1024  # a longer line is skipped, not buffered
READ_BUDGET_BYTES = 8 * 1024 * 1024  # per file per pass; the rest next pass
MAX_JSON_FILE_BYTES = 256 * 1024  # whole-file JSON (registries, metas)


@dataclass
class ReadStats:
    lines: int = 0
    garbage: int = 0  # lines that are not JSON objects, or too long
    refused: int = 0  # files refused: symlinks out, not regular, too large


def inside(path: Path, root: Path) -> bool:
    """Whether path, with every symlink resolved, stays under root."""
    try:
        return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))
    except (OSError, ValueError):
        return False


def _open(path: Path, root: Path, stats: ReadStats) -> int | None:
    if not inside(path, root):
        stats.refused += 1
        return None
    try:
        fd = os.open(
            path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_NONBLOCK", 0)
        )
    except OSError:
        return None
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        os.close(fd)
        stats.refused += 1
        return None
    return fd


def read_json_file(path: Path, root: Path, stats: ReadStats) -> dict[str, Any] | None:
    """A small JSON object file, or None (absent, refused, too large or garbage)."""
    fd = _open(path, root, stats)
    if fd is None:
        return None
    try:
        if os.fstat(fd).st_size > MAX_JSON_FILE_BYTES:
            stats.refused += 1
            return None
        raw = os.read(fd, MAX_JSON_FILE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        data = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        stats.garbage += 1
        return None
    if not isinstance(data, dict):
        stats.garbage += 1
        return None
    return data


@dataclass
class JsonlTail:
    """The new complete lines of a growing JSONL file, as JSON objects."""

    path: Path
    root: Path
    offset: int = 0
    identity: tuple[int, int] | None = None  # (device, inode)
    partial: bytes = b""
    skipping: bool = False  # inside a line too long to keep
    stats: ReadStats = field(default_factory=ReadStats)

    def read_new(self, budget: int = READ_BUDGET_BYTES) -> tuple[list[dict[str, Any]], bool]:
        """New records since the last call, and whether more is left to read."""
        fd = _open(self.path, self.root, self.stats)
        if fd is None:
            return [], False
        try:
            info = os.fstat(fd)
            identity = (info.st_dev, info.st_ino)
            if identity != self.identity or info.st_size < self.offset:
                # Replaced or truncated: start over.
                self.identity, self.offset, self.partial, self.skipping = identity, 0, b"", False
            want = min(budget, info.st_size - self.offset)
            data = os.pread(fd, want, self.offset) if want > 0 else b""
        finally:
            os.close(fd)
        self.offset += len(data)
        records = self._split(data)
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
        if len(line) > MAX_LINE_BYTES:
            self.stats.garbage += 1
            return None
        try:
            record = json.loads(line)
        except (ValueError, UnicodeDecodeError):
            self.stats.garbage += 1
            return None
        if not isinstance(record, dict):
            self.stats.garbage += 1
            return None
        return record


def text(value: Any, limit: int = 200) -> str | None:
    """A string field from untrusted JSON, or None; bounded and single-line."""
    if not isinstance(value, str):
        return None
    cleaned = " ".join(value.split())
    return cleaned[:limit] or None
