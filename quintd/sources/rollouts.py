"""Codex and Gemini CLI: conversation files matched to the running process.

- codex: ``${CODEX_HOME:-~/.codex}/sessions/YYYY/MM/DD/rollout-<ts>-<uuid>.jsonl``, lines
  ``{timestamp, type, payload}``: ``session_meta`` gives id and cwd, ``turn_context``
  the model; ``session_index.jsonl`` gives titles (``thread_name``).
- gemini-cli: ``~/.gemini/tmp/<project>/chats/session-*.jsonl``: the first line has
  sessionId, projectHash (SHA-256 of the project directory) and startTime; messages
  carry ``model``.

A file belongs to a process when it names the process's working directory and began
after the process started; of several, the one written last.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

from quintd.scanner import AgentProcess
from quintd.sessions import ConversationFacts
from quintd.sources.files import JsonlTail, ReadStats, text

_CLOCK_SLACK_S = 10.0  # a file may carry a start time slightly before the process's


@dataclass
class Conversation:
    tail: JsonlTail
    native_id: str | None = None
    cwd: str | None = None
    project_hash: str | None = None
    started: float | None = None  # epoch seconds
    model: str | None = None
    title: str | None = None
    last_write: float | None = None  # monotonic


def _epoch(value: Any) -> float | None:
    if isinstance(value, int | float):
        return float(value) / (1000 if value > 1e11 else 1)
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            return None
    return None


class _ConversationFiles:
    platform = ""
    pattern = ""

    def __init__(self, root: Path, clock: Callable[[], float]) -> None:
        self.root = root
        self._clock = clock
        self.stats = ReadStats()
        self._files: dict[Path, Conversation] = {}
        self._dirty: set[Path] = set()
        self._scanned = False

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

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        self._refresh()
        best: Conversation | None = None
        for conv in self._files.values():
            if conv.native_id is None or not self._belongs(conv, proc):
                continue
            if best is None or (conv.last_write or 0) > (best.last_write or 0):
                best = conv
        if best is None or best.native_id is None:
            return None
        return ConversationFacts(
            native_id=best.native_id, name=best.title, model=best.model, last_write=best.last_write
        )

    def _belongs(self, conv: Conversation, proc: AgentProcess) -> bool:
        raise NotImplementedError

    def _refresh(self) -> None:
        if not self._scanned:
            self._scanned = True
            for directory in self.watch_dirs():
                if directory.is_dir():
                    self._dirty.update(directory.glob(f"**/{Path(self.pattern).name}"))
        dirty, self._dirty = self._dirty, set()
        for path in dirty:
            conv = self._files.get(path)
            if conv is None:
                conv = self._files[path] = Conversation(
                    JsonlTail(path, self.root, stats=self.stats)
                )
            records, more = conv.tail.read_new()
            if more:
                self._dirty.add(path)
            if records:
                conv.last_write = self._clock()
            for record in records:
                self._record(conv, record)

    def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
        raise NotImplementedError


class CodexState(_ConversationFiles):
    platform = "codex"
    pattern = "rollout-*.jsonl"

    def watch_dirs(self) -> list[Path]:
        return [self.root / "sessions"]

    def _belongs(self, conv: Conversation, proc: AgentProcess) -> bool:
        return (
            conv.cwd is not None
            and conv.cwd == proc.cwd
            and conv.started is not None
            and conv.started >= proc.start_time - _CLOCK_SLACK_S
        )

    def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
        payload = record.get("payload")
        if not isinstance(payload, dict):
            return
        kind = record.get("type")
        if kind == "session_meta":
            conv.native_id = text(payload.get("id"), 128) or conv.native_id
            conv.cwd = text(payload.get("cwd"), 4096) or conv.cwd
            conv.started = _epoch(payload.get("timestamp")) or _epoch(record.get("timestamp"))
        elif kind == "turn_context":
            conv.model = text(payload.get("model")) or conv.model


class GeminiState(_ConversationFiles):
    platform = "gemini-cli"
    pattern = "session-*.jsonl"

    def watch_dirs(self) -> list[Path]:
        return [self.root / "tmp"]

    def _belongs(self, conv: Conversation, proc: AgentProcess) -> bool:
        if proc.cwd is None or conv.started is None:
            return False
        digest = hashlib.sha256(proc.cwd.encode()).hexdigest()
        same_project = conv.project_hash == digest or conv.tail.path.parent.parent.name == digest
        return same_project and conv.started >= proc.start_time - _CLOCK_SLACK_S

    def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
        if conv.native_id is None and isinstance(record.get("sessionId"), str):
            conv.native_id = text(record.get("sessionId"), 128)
            conv.project_hash = text(record.get("projectHash"), 128)
            conv.started = _epoch(record.get("startTime"))
        model = text(record.get("model"))
        if model:
            conv.model = model
