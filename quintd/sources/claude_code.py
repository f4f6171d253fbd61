"""Claude Code's own state: the live registry and the project transcripts.

- ``<root>/sessions/<pid>.json``: pid, sessionId, cwd, startedAt, procStart, status
  (busy/idle/waiting), name. Rewritten with a new sessionId on ``/clear``; deleted on a
  clean exit; left behind after a crash (stale: its pid is gone or started at another
  time, and it is ignored).
- ``<root>/projects/<cwd, non-alphanumerics as '-'>/<sessionId>.jsonl``: the
  transcript. Name: the user's ``custom-title`` over the generated ``ai-title`` over a
  ``summary``; model: the latest ``assistant`` record's ``message.model``.
- ``.../<sessionId>/subagents/agent-<id>.jsonl`` and ``.meta.json``: sub-agents; done
  when the parent transcript holds the result for the meta's ``toolUseId``.

Only titles, models, ids and statuses are taken: prompt text is never read into quintd's
state.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quintd.model import ConversationFacts, Status, SubagentFacts
from quintd.sources.conversation_files import Subagent
from quintd.sources.files import text
from quintd.sources.pid_registry import Conversation, Registry, RegistryTranscripts
from quintd.sources.registry import spec

_STATUSES: dict[str, Status] = {"busy": "busy", "idle": "idle", "waiting": "waiting"}


def project_dir_name(cwd: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


@dataclass
class Transcript(Conversation):
    custom_title: str | None = None
    ai_title: str | None = None
    summary: str | None = None

    @property
    def title(self) -> str | None:
        return self.custom_title or self.ai_title or self.summary


class ClaudeCodeState(RegistryTranscripts[Transcript]):
    """One Claude Code state directory (``~/.claude`` or ``$CLAUDE_CONFIG_DIR``)."""

    platform = "claude-code"
    conversation = Transcript
    # npm's ``cli-wrapper.cjs`` runs the native binary as a child, and the registry names
    # that child.
    registry_depth = 1

    def project_dir_name(self, cwd: str) -> str:
        return project_dir_name(cwd)

    def transcript_path(self, project: Path, session_id: str) -> Path:
        return project / f"{session_id}.jsonl"

    def subagent_dir(self, project: Path, session_id: str) -> Path:
        return project / session_id / "subagents"

    def describe(self, registry: Registry, data: dict[str, Any]) -> None:
        status = data.get("status")
        registry.status = _STATUSES.get(status) if isinstance(status, str) else None
        # A name generated from the directory: the project name says as much.
        registry.name = None if data.get("nameSource") == "derived" else text(data.get("name"))

    def is_work(self, record: dict[str, Any]) -> bool:
        """A record of a turn: a prompt, an answer, a tool's result. Not a title, a rename,
        a slash command or what ``/exit`` writes (they sent an `active` that no work was)."""
        kind = record.get("type")
        if kind == "assistant":
            return True
        if kind != "user" or record.get("isMeta"):
            return False
        message = record.get("message")
        content = message.get("content") if isinstance(message, dict) else None
        return not (
            isinstance(content, str) and content.lstrip().startswith(("<command-", "<local-"))
        )

    def record(self, conversation: Transcript, record: dict[str, Any]) -> None:
        kind = record.get("type")
        if kind == "custom-title":
            conversation.custom_title = text(record.get("customTitle")) or conversation.custom_title
        elif kind == "ai-title":
            conversation.ai_title = text(record.get("aiTitle")) or conversation.ai_title
        elif kind == "summary":
            conversation.summary = text(record.get("summary")) or conversation.summary
        elif kind == "assistant":
            message = record.get("message")
            if isinstance(message, dict):
                conversation.model = text(message.get("model")) or conversation.model
        elif kind == "user":
            conversation.finished_tools.update(_tool_results(record))

    def meta(self, sub: Subagent, meta: dict[str, Any]) -> None:
        sub.name = text(meta.get("description")) or text(meta.get("agentType"))
        sub.tool_use_id = text(meta.get("toolUseId"), 256)

    def conversation_facts(
        self, registry: Registry, conversation: Transcript | None
    ) -> ConversationFacts:
        if conversation is None:
            return ConversationFacts(
                native_id=registry.session_id,
                status=registry.status,
                name=registry.name,
                owner_uid=registry.owner,
            )
        return ConversationFacts(
            native_id=registry.session_id,
            status=registry.status,
            name=conversation.title or registry.name,
            model=conversation.model,
            last_write=conversation.last_write,
            subagents=tuple(
                _subagent_facts(sub, conversation, registry)
                for sub in conversation.subagents.values()
            )
            if conversation.read_once
            else (),
            owner_uid=registry.owner,
        )


def _subagent_facts(sub: Subagent, transcript: Transcript, registry: Registry) -> SubagentFacts:
    done = sub.tool_use_id is not None and sub.tool_use_id in transcript.finished_tools
    return SubagentFacts(
        agent_id=sub.agent_id,
        name=sub.name,
        done=done,
        last_write=sub.last_write,
        # Running while its parent's turn waits for it: a sub-agent waiting for the model
        # writes nothing, and is still at work (it flipped idle/active while it ran).
        status="busy" if not done and registry.status == "busy" else None,
    )


def _tool_results(record: dict[str, Any]) -> set[str]:
    message = record.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return set()
    return {
        item["tool_use_id"]
        for item in message["content"]
        if isinstance(item, dict)
        and item.get("type") == "tool_result"
        and isinstance(item.get("tool_use_id"), str)
    }


SPEC = spec("claude-code")  # where it keeps its state: the registry's line
