"""Codex CLI: ``${CODEX_HOME:-~/.codex}/sessions/YYYY/MM/DD/rollout-<ts>-<uuid>.jsonl``.

Lines ``{timestamp, type, payload}``: ``session_meta`` gives the conversation id and cwd,
``turn_context`` the model.
"""

from __future__ import annotations

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


class CodexState(ConversationFiles):
    platform = "codex"
    pattern = "rollout-*.jsonl"

    def watch_dirs(self) -> list[Path]:
        return [self.root / "sessions"]

    def _belongs(self, conv: Conversation, proc: AgentProcess) -> bool:
        return (
            conv.cwd is not None
            and conv.cwd == proc.cwd
            and conv.started is not None
            and conv.started >= proc.start_time - CLOCK_SLACK_S
        )

    def _record(self, conv: Conversation, record: dict[str, Any]) -> None:
        payload = record.get("payload")
        if not isinstance(payload, dict):
            return
        kind = record.get("type")
        if kind == "session_meta":
            conv.native_id = text(payload.get("id"), 128) or conv.native_id
            conv.cwd = text(payload.get("cwd"), 4096) or conv.cwd
            conv.started = epoch(payload.get("timestamp")) or epoch(record.get("timestamp"))
        elif kind == "turn_context":
            conv.model = text(payload.get("model")) or conv.model


SPEC = ReaderSpec(platform="codex", env_dir="CODEX_HOME", home_dir=".codex", factory=CodexState)
