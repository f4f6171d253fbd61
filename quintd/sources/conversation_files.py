"""The shared base of readers whose agent writes one JSONL file per conversation (Codex's
rollouts, Gemini CLI's chats): files found under watched directories, read incrementally,
and matched to the running process they belong to.

A subclass names its file pattern and directories, parses one record at a time into a
:class:`Conversation`, and says whether a conversation belongs to a process. A file belongs
to a process when it names the process's working directory and began after the process
started; of several, the one written last.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import psutil

from quintd.model import AgentProcess, ConversationFacts
from quintd.sources.files import READ_BUDGET_BYTES, JsonlTail, ReadStats

CLOCK_SLACK_S = 10.0  # a file may carry a start time slightly before the process's
PASS_BUDGET_BYTES = 32 * 1024 * 1024  # read per pass over all files; the rest next pass


@dataclass
class Conversation:
    tail: JsonlTail
    native_id: str | None = None
    cwd: str | None = None
    project_hash: str | None = None
    started: float | None = None  # epoch seconds
    model: str | None = None
    title: str | None = None
    last_write: float | None = None  # monotonic; growth after the first read only
    read_once: bool = False


def epoch(value: Any) -> float | None:
    try:
        if isinstance(value, int | float) and not isinstance(value, bool):
            seconds = float(value) / (1000 if value > 1e11 else 1)
            return seconds if 0 < seconds < 1e10 else None
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError, OSError):
        return None
    return None


def _open_files(processes: list[AgentProcess]) -> dict[int, set[Path]]:
    """The files each agent's process tree holds open (codex keeps its rollout open)."""
    result: dict[int, set[Path]] = {}
    for proc in processes:
        paths: set[Path] = set()
        try:
            root = psutil.Process(proc.pid)
            for member in [root, *root.children(recursive=True)]:
                try:
                    paths.update(Path(f.path) for f in member.open_files())
                except (psutil.Error, OSError):
                    continue
        except (psutil.Error, OSError):
            continue
        result[proc.pid] = paths
    return result


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class ConversationFiles:
    platform = ""
    pattern = ""

    def __init__(self, root: Path, clock: Callable[[], float]) -> None:
        self.root = root
        self._clock = clock
        self.stats = ReadStats()
        self._files: dict[Path, Conversation] = {}
        self._dirty: set[Path] = set()
        self._scanned = False
        self._owner: dict[Path, int] = {}  # file -> pid of the process it belongs to
        self._oldest_start = 0.0

    def watch_dirs(self) -> list[Path]:
        raise NotImplementedError

    def changed(self, path: Path) -> None:
        if path.match(self.pattern):
            self._dirty.add(path)

    def poll(self) -> None:
        """No change events: look for new files and read the known ones again."""
        self._scanned = False
        self._dirty.update(self._files)

    def has_registry_dir(self) -> bool:
        return any(d.is_dir() for d in self.watch_dirs())

    def prepare(self, processes: list[AgentProcess]) -> None:
        """Before this pass's facts: read what changed, and give each file to one process,
        the last one started before the file began (two agents in one directory each keep
        their own conversation)."""
        self._oldest_start = min((p.start_time for p in processes), default=0.0)
        self._refresh()
        self._owner = {}
        holders = _open_files(processes) if len(processes) > 1 else {}
        for path, conv in self._files.items():
            if conv.native_id is None:
                continue
            owners = [p for p in processes if self._belongs(conv, p)]
            holding = [p for p in owners if path in holders.get(p.pid, ())]
            if len(holding) == 1:
                owners = holding  # the agent has its conversation file open: certain
            if owners:
                self._owner[path] = max(owners, key=lambda p: p.start_time).pid

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        mine = [self._files[path] for path, pid in self._owner.items() if pid == proc.pid]
        if not mine:
            return None
        best = max(mine, key=lambda conv: _mtime(conv.tail.path))
        assert best.native_id is not None
        return ConversationFacts(
            native_id=best.native_id, name=best.title, model=best.model, last_write=best.last_write
        )

    def _belongs(self, conv: Conversation, proc: AgentProcess) -> bool:
        raise NotImplementedError

    def _refresh(self) -> None:
        horizon = self._oldest_start - CLOCK_SLACK_S
        if not self._scanned:
            self._scanned = True
            for directory in self.watch_dirs():
                if directory.is_dir():
                    # Only conversations that can belong to a running process: history
                    # older than the oldest of them is never read.
                    self._dirty.update(
                        p
                        for p in directory.glob(f"**/{Path(self.pattern).name}")
                        if _mtime(p) >= horizon
                    )
        for path in [p for p, c in self._files.items() if _mtime(p) < horizon]:
            del self._files[path]  # finished long ago: forget it
        budget = PASS_BUDGET_BYTES
        dirty, self._dirty = self._dirty, set()
        for path in sorted(dirty, key=_mtime, reverse=True):
            if budget <= 0:
                self._dirty.add(path)  # the next pass goes on
                continue
            conv = self._files.get(path)
            if conv is None:
                conv = self._files[path] = Conversation(
                    JsonlTail(path, self.root, stats=self.stats)
                )
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
                except (ValueError, TypeError, OverflowError, OSError):
                    conv.tail.stats.garbage += 1

    def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
        raise NotImplementedError
