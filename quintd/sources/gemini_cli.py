"""Gemini CLI: ``~/.gemini/tmp/<project>/chats/session-<start>-<id8>.jsonl`` (seen with
0.61.0; ``../shared/fixtures/gemini-cli``).

- The file is written at start-up: the conversation is known at once. Line 0 is the
  header ``{sessionId, projectHash, startTime, lastUpdated, kind}``; ``projectHash`` is the
  SHA-256 of the project directory (the process's cwd).
- ``{"$set": {...}}`` records update metadata: ``summary`` is the title. Gemini writes it
  into the *previous* session's file at the next start: that file belongs to a process
  that has gone, so it never produces an event after that session's ``ended``.
- Message records ``{id, type, ...}``: ``user`` (a prompt, or a tool's functionResponse),
  ``gemini`` (``content``, ``toolCalls``, ``model``), ``info``. A record may be written
  again with the same id when it changes (the last one wins).
- Busy is not recorded; it is read from the last message: a ``user`` record with no answer
  yet, or a ``gemini`` record with neither text nor tool calls (a tool pending, or
  waiting for approval), is busy; a ``gemini`` record with text is idle.
- ``/clear`` starts a new file at once: the process's conversation is the file it began
  last.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess
from quintd.sources.conversation_files import (
    CLOCK_SLACK_S,
    Conversation,
    ConversationFiles,
    epoch,
)
from quintd.sources.files import identifier, text
from quintd.sources.spec import ReaderSpec


class GeminiState(ConversationFiles):
    platform = "gemini-cli"
    pattern = "session-*.jsonl"

    def watch_dirs(self) -> list[Path]:
        return [self.root / "tmp"]

    def _belongs(self, conv: Conversation, proc: AgentProcess) -> bool:
        if proc.cwd is None or conv.started is None:
            return False
        digest = hashlib.sha256(proc.cwd.encode("utf-8", "surrogateescape")).hexdigest()
        same_project = conv.project_hash == digest or conv.tail.path.parent.parent.name == digest
        return same_project and conv.started >= proc.start_time - CLOCK_SLACK_S

    def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
        if conv.native_id is None:
            if "sessionId" not in record:
                return  # not a header: a file must begin with one
            conv.native_id = identifier(record.get("sessionId"))
            conv.project_hash = identifier(record.get("projectHash"))
            conv.started = epoch(record.get("startTime"))
            conv.status = "idle"  # waiting for its first prompt
            return
        updates = record.get("$set")
        if isinstance(updates, dict):
            conv.title = text(updates.get("summary")) or conv.title
            return
        kind = record.get("type")
        if kind == "user":
            conv.status = "busy"  # a prompt, or a tool's result going back to the model
        elif kind == "gemini":
            conv.model = text(record.get("model")) or conv.model
            content = record.get("content")
            answered = isinstance(content, str) and bool(content.strip())
            calls = record.get("toolCalls")
            if answered and not (isinstance(calls, list) and _pending(calls)):
                conv.status = "idle"
            else:
                conv.status = "busy"  # thinking, a tool running, or awaiting approval


def _pending(calls: list[Any]) -> bool:
    """Whether a tool call of the record has no result yet."""
    return any(isinstance(c, dict) and c.get("result") in (None, []) for c in calls)


SPEC = ReaderSpec(
    platform="gemini-cli",
    env_dir=None,
    home_dir=".gemini",
    factory=GeminiState,
    writes_at_start=True,
)
