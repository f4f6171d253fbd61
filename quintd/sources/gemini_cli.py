"""Gemini CLI: ``~/.gemini/tmp/<project>/chats/session-*.jsonl``.

The first line has sessionId, projectHash (SHA-256 of the project directory) and
startTime; messages carry ``model``.
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
from quintd.sources.files import text
from quintd.sources.spec import ReaderSpec


class GeminiState(ConversationFiles):
    platform = "gemini-cli"
    pattern = "session-*.jsonl"

    def watch_dirs(self) -> list[Path]:
        return [self.root / "tmp"]

    def _belongs(self, conv: Conversation, proc: AgentProcess) -> bool:
        if proc.cwd is None or conv.started is None:
            return False
        digest = hashlib.sha256(proc.cwd.encode()).hexdigest()
        same_project = conv.project_hash == digest or conv.tail.path.parent.parent.name == digest
        return same_project and conv.started >= proc.start_time - CLOCK_SLACK_S

    def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
        if conv.native_id is None and isinstance(record.get("sessionId"), str):
            conv.native_id = text(record.get("sessionId"), 128)
            conv.project_hash = text(record.get("projectHash"), 128)
            conv.started = epoch(record.get("startTime"))
        model = text(record.get("model"))
        if model:
            conv.model = model


SPEC = ReaderSpec(platform="gemini-cli", env_dir=None, home_dir=".gemini", factory=GeminiState)
