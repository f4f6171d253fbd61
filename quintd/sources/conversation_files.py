"""The JSONL-conversation base: what every reader of an agent that writes its conversations
as growing JSONL files shares (Claude Code, Qwen Code, Codex, Copilot CLI, Kiro, Cursor,
Gemini CLI).

- :class:`Transcript`: one conversation's file, read incrementally (a :class:`RecordSource`:
  ``JsonlTail``, or a reader's own), each record handed to the reader's rule for it. What
  the first read finds (until it reaches the end) is history; records after it are work
  (``last_write``). A record the rule cannot take is counted as garbage, never raised.
- :class:`ConversationFiles`: the base of readers whose agent writes one file per
  conversation and names no process (Gemini CLI): files found under watched directories,
  read incrementally, and matched to the running process they belong to. A subclass names
  its file pattern and directories, parses one record at a time into a
  :class:`Conversation`, and says whether a conversation can belong to a process. Of the
  processes a file can belong to, it goes to the one that holds it open, else to the last
  one started before the file began (two agents in one directory each keep their own); a
  process runs the conversation it wrote last.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Protocol

from quintd.model import AgentProcess, ConversationFacts, Status
from quintd.sources.attribution import Pass
from quintd.sources.changes import find_files, lmtime
from quintd.sources.files import READ_BUDGET_BYTES, JsonlTail, ReadStats
from quintd.sources.spec import Reader, ReaderContext

PASS_BUDGET_BYTES = 32 * 1024 * 1024  # read per pass over all files; the rest next pass
# What a record's rule may raise on a record of the wrong shape: counted, never raised.
GARBAGE = (ValueError, TypeError, KeyError, AttributeError, OverflowError, OSError)


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
class Transcript:
    """A conversation's growing file, and when it last grew."""

    tail: RecordSource
    last_write: float | None = None  # monotonic: growth after the first read only
    grew_at: float | None = None  # monotonic: the last read that found records
    read_once: bool = False  # the first read reached the end: what comes next is work

    def read(
        self,
        now: float,
        rule: Callable[[dict[str, Any]], object],
        is_work: Callable[[dict[str, Any]], bool] | None = None,
        budget: int = READ_BUDGET_BYTES,
    ) -> bool:
        """Read the new records and hand each to ``rule``; records after the first read
        are work (those of them ``is_work`` says are). Returns whether more is left."""
        records, more = self.tail.read_new(budget)
        if records:
            self.grew_at = now
            if self.read_once and (is_work is None or any(is_work(r) for r in records)):
                self.last_write = now
        self.read_once = self.read_once or not more
        for record in records:
            try:
                rule(record)
            except GARBAGE:
                self.tail.stats.garbage += 1
        return more


@dataclass
class Subagent:
    """A sub-agent, as an agent's conversation files tell of it."""

    agent_id: str
    name: str | None = None
    tool_use_id: str | None = None  # the call of the tool that runs it
    model: str | None = None
    status: str | None = None  # as written (cleaned)
    done: bool = False
    backgrounded: bool = False
    last_write: float | None = None  # monotonic: its own work, after the first read
    tail: JsonlTail | None = None  # its own transcript, where it has one


@dataclass
class Conversation(Transcript):
    native_id: str | None = None
    cwd: str | None = None
    project_hash: str | None = None
    started: float | None = None  # epoch seconds
    model: str | None = None
    title: str | None = None
    status: Status | None = None  # busy/idle, where the file tells
    extra: dict[str, Any] = field(default_factory=dict)  # a subclass's own bookkeeping


class ConversationFiles(Reader):
    pattern: str | tuple[str, ...] = ""  # file name pattern(s), e.g. "session-*.jsonl"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._files: dict[Path, Conversation] = {}
        self._owner: dict[Path, int] = {}  # file -> pid of the process it belongs to

    def watch_dirs(self) -> list[Path]:
        raise NotImplementedError

    def changed(self, path: Path) -> None:
        patterns = (self.pattern,) if isinstance(self.pattern, str) else self.pattern
        if any(fnmatch.fnmatchcase(path.name, p) for p in patterns):
            self.changes.mark(path)

    def poll(self) -> None:
        """No change events: look for new files and read the known ones again."""
        self.changes.poll(self._files)

    def begin(self, now: Pass) -> None:
        """Before this pass's facts: read what changed, and give each file to one
        process."""
        processes = now.processes
        self._refresh(now)
        self._owner = {}
        holders: dict[int, set[str]] = {}
        if len(processes) > 1:  # only needed to tell two processes apart
            holders = {p.pid: now.view.open_files(p.pid) for p in processes}
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

    def _refresh(self, now: Pass) -> None:
        horizon = now.horizon
        if not self.changes.scanned:
            self.changes.scanned = True
            for directory in self.watch_dirs():
                if directory.is_dir() and not directory.is_symlink():
                    # Only conversations that can belong to a running process: history
                    # older than the oldest of them is never read.
                    self.changes.dirty.update(find_files(directory, self.pattern, horizon))
        for path in [p for p in self._files if lmtime(p) < horizon]:
            del self._files[path]  # finished long ago: forget it
        budget = PASS_BUDGET_BYTES
        for path in sorted(self.changes.take(), key=lmtime, reverse=True):
            if budget <= 0:
                self.changes.mark(path)  # the next pass goes on
                continue
            conv = self._files.get(path)
            if conv is None:
                if lmtime(path) < horizon or not path.is_relative_to(self.root):
                    continue
                conv = self._files[path] = Conversation(self._source(path))
            before = conv.tail.offset
            more = conv.read(
                now.now, partial(self._record, conv), budget=min(budget, READ_BUDGET_BYTES)
            )
            budget -= max(conv.tail.offset - before, 0)
            if more:
                self.changes.mark(path)

    def _source(self, path: Path) -> RecordSource:
        """How a conversation file is read: as growing JSONL, unless a subclass says."""
        return JsonlTail(path, self.root, stats=self.stats)

    def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
        raise NotImplementedError
