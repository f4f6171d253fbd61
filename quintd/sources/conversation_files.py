"""The shared base of readers whose agent writes one JSONL file per conversation (Gemini
CLI's chats, and others of that shape): files found under watched directories, read
incrementally, and matched to the running process they belong to.

A subclass names its file pattern and directories, parses one record at a time into a
:class:`Conversation`, and says whether a conversation can belong to a process. Of the
processes a file can belong to, it goes to the one that holds it open, else to the last
one started before the file began (two agents in one directory each keep their own); a
process runs the conversation it wrote last.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from quintd.model import AgentProcess, ConversationFacts, Status
from quintd.sources.files import READ_BUDGET_BYTES, JsonlTail, ReadStats
from quintd.sources.spec import ReaderContext

CLOCK_SLACK_S = 10.0  # a file may carry a start time slightly before the process's
PASS_BUDGET_BYTES = 32 * 1024 * 1024  # read per pass over all files; the rest next pass
MAX_SCAN_DEPTH = 6  # how deep under a watched directory files are looked for


class RecordSource(Protocol):
    """Where a conversation's records come from: a growing JSONL file (``JsonlTail``), or
    a subclass's own (a whole JSON document rewritten in place, say)."""

    path: Path
    offset: int  # bytes read so far (the pass's read budget counts them)
    owner: int | None  # the uid owning the file, from its last read
    stats: ReadStats

    def read_new(self, budget: int = READ_BUDGET_BYTES) -> tuple[list[dict[str, Any]], bool]:
        """Records not seen yet, and whether more is left to read."""
        ...


@dataclass
class Conversation:
    tail: RecordSource
    native_id: str | None = None
    cwd: str | None = None
    project_hash: str | None = None
    started: float | None = None  # epoch seconds
    model: str | None = None
    title: str | None = None
    status: Status | None = None  # busy/idle, where the file tells
    last_write: float | None = None  # monotonic; growth after the first read only
    read_once: bool = False
    extra: dict[str, Any] = field(default_factory=dict)  # a subclass's own bookkeeping


def epoch(value: Any) -> float | None:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value) / (1000 if value > 1e11 else 1)
            return seconds if 0 < seconds < 1e10 else None
        if isinstance(value, str) and len(value) < 64:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return None


def lmtime(path: Path) -> float:
    """Modification time of the path itself (a link is not followed)."""
    try:
        return os.lstat(path).st_mtime
    except OSError:
        return 0.0


def find_files(directory: Path, pattern: str | tuple[str, ...], newer_than: float) -> list[Path]:
    """Files named like ``pattern`` (or one of several) under ``directory`` (not through
    links, at most :data:`MAX_SCAN_DEPTH` levels down), modified at or after
    ``newer_than``."""
    patterns = (pattern,) if isinstance(pattern, str) else pattern
    found: list[Path] = []
    base = len(directory.parts)
    for current, dirs, files in os.walk(directory, followlinks=False):
        if len(Path(current).parts) - base >= MAX_SCAN_DEPTH:
            dirs[:] = []
        for name in files:
            if any(fnmatch.fnmatchcase(name, p) for p in patterns):
                path = Path(current) / name
                if lmtime(path) >= newer_than:
                    found.append(path)
    return found


class ConversationFiles:
    platform = ""
    pattern: str | tuple[str, ...] = ""  # file name pattern(s), e.g. "session-*.jsonl"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        self.root = root
        self._clock = context.clock
        self._processes = context.processes
        self.stats = ReadStats()
        self._files: dict[Path, Conversation] = {}
        self._dirty: set[Path] = set()
        self._scanned = False
        self._owner: dict[Path, int] = {}  # file -> pid of the process it belongs to
        self._oldest_start = 0.0

    def watch_dirs(self) -> list[Path]:
        raise NotImplementedError

    def changed(self, path: Path) -> None:
        patterns = (self.pattern,) if isinstance(self.pattern, str) else self.pattern
        if any(fnmatch.fnmatchcase(path.name, p) for p in patterns):
            self._dirty.add(path)

    def poll(self) -> None:
        """No change events: look for new files and read the known ones again."""
        self._scanned = False
        self._dirty.update(self._files)

    def has_registry_dir(self) -> bool:
        return any(d.is_dir() for d in self.watch_dirs())

    def prepare(self, processes: list[AgentProcess]) -> None:
        """Before this pass's facts: read what changed, and give each file to one
        process."""
        self._oldest_start = min((p.start_time for p in processes), default=0.0)
        self._refresh()
        self._owner = {}
        holders: dict[int, set[str]] = {}
        if len(processes) > 1:  # only needed to tell two processes apart
            holders = {p.pid: self._processes.open_files(p.pid) for p in processes}
        for path, conv in self._files.items():
            if conv.native_id is None:
                continue
            owners = [p for p in processes if self._belongs(conv, p)]
            holding = [p for p in owners if str(path) in holders.get(p.pid, ())]
            if len(holding) == 1:
                owners = holding  # the agent has its conversation file open: certain
            if owners:
                self._owner[path] = max(owners, key=lambda p: p.start_time).pid

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        mine = [self._files[path] for path, pid in self._owner.items() if pid == proc.pid]
        if not mine:
            return None
        best = max(mine, key=lambda conv: (conv.started or 0.0, lmtime(conv.tail.path)))
        assert best.native_id is not None
        return ConversationFacts(
            native_id=best.native_id,
            status=best.status,
            name=best.title,
            model=best.model,
            last_write=best.last_write,
            owner_uid=best.tail.owner,
        )

    def _belongs(self, conv: Conversation, proc: AgentProcess) -> bool:
        raise NotImplementedError

    def _refresh(self) -> None:
        horizon = self._oldest_start - CLOCK_SLACK_S
        if not self._scanned:
            self._scanned = True
            for directory in self.watch_dirs():
                if directory.is_dir() and not directory.is_symlink():
                    # Only conversations that can belong to a running process: history
                    # older than the oldest of them is never read.
                    self._dirty.update(find_files(directory, self.pattern, horizon))
        for path in [p for p in self._files if lmtime(p) < horizon]:
            del self._files[path]  # finished long ago: forget it
        budget = PASS_BUDGET_BYTES
        dirty, self._dirty = self._dirty, set()
        for path in sorted(dirty, key=lmtime, reverse=True):
            if budget <= 0:
                self._dirty.add(path)  # the next pass goes on
                continue
            conv = self._files.get(path)
            if conv is None:
                if lmtime(path) < horizon or not path.is_relative_to(self.root):
                    continue
                conv = self._files[path] = Conversation(self._source(path))
            before = conv.tail.offset
            records, more = conv.tail.read_new(min(budget, READ_BUDGET_BYTES))
            budget -= max(conv.tail.offset - before, 0)
            if more:
                self._dirty.add(path)
            if records and conv.read_once:
                conv.last_write = self._clock()
            conv.read_once = conv.read_once or not more
            for record in records:
                try:
                    self._record(conv, record)
                except (ValueError, TypeError, OverflowError, OSError, KeyError):
                    conv.tail.stats.garbage += 1

    def _source(self, path: Path) -> RecordSource:
        """How a conversation file is read: as growing JSONL, unless a subclass says."""
        return JsonlTail(path, self.root, stats=self.stats)

    def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
        raise NotImplementedError
