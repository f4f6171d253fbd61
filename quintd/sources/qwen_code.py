"""Qwen Code's own state: the live registry, the chat transcripts and the sub-agents (seen
with Qwen Code 0.24.4 on Linux; ``../shared/fixtures/qwen-code``; the registry's contract is
``docs/users/features/cross-session-protocol.md`` of QwenLM/qwen-code).

- ``<root>/sessions/<pid>.json``: a live registry, written at start-up, rewritten with a new
  ``sessionId`` on ``/clear``, deleted at exit: ``{pid, procStart: "<boot id>:<start time in
  clock ticks>", sessionId, cwd, name, startedAt (ms), kind, ...}``. ``name`` is derived
  (the directory's name, ``-``, two hex digits of the SHA-256 of the first sessionId:
  ``shop-api-57``, kept across ``/clear``), not a title: it is not used.
- The process: ``qwen`` is a node wrapper that re-spawns itself (the child has
  ``QWEN_CODE_NO_RELAUNCH=true``). The registry names the process that does the work; the
  scanner folds it into the wrapper, so the agent process is the wrapper. That is the child
  where ``bin/qwen`` is ``cli.js`` (the fixture), and the grandchild where npm's shim runs
  ``cli-entry.js`` first (``npm install @qwen-code/qwen-code``, seen here: ``cli-entry.js``
  -> ``node --expose-gc cli.js`` -> its relaunched self). Its registry is the one of the
  process itself (no relaunch) or of one of its descendants (nearest first, a bounded walk),
  taken only when it is fresh: the
  file's pid is that process, and its start time in clock ticks (``/proc/<pid>/stat``) is the
  one ``procStart`` records (elsewhere than Linux: ``startedAt`` within a minute of the
  agent's start). A registry left by a dead process, or by an earlier process with the same
  pid, is ignored. Tool children (``QWEN_CODE=1``, their own session and pty) have none.
  A record with a ``schemaVersion`` above 1 is skipped. Processes hosting several sessions
  (``qwen --acp``, ``qwen serve``) write ``<pid>-<8 hex>.json`` records instead (from the
  protocol page, unverified against a real run): they are not read, so such a process stays
  a session of its own.
- ``<root>/projects/<cwd, each non-alphanumeric as '->/chats/<sessionId>.jsonl``: the
  transcript, created at the first prompt (``sanitizeCwd`` in
  ``packages/core/src/utils/paths.ts`` of QwenLM/qwen-code: one ``-`` per UTF-16 unit).
  Records ``{uuid, parentUuid, sessionId, timestamp, type, subtype?, ...}``:
  ``user`` (a prompt; ``subtype: notification``: a background sub-agent's completion,
  naming its ``<tool-use-id>``), ``assistant`` (``model``; ``message.parts`` with ``text``
  and ``functionCall``), ``tool_result`` (``functionResponse {id}``), ``system``
  (``custom_title``: ``systemPayload {customTitle, titleSource}``; ``ui_telemetry``,
  ``slash_command`` ...). The ``<sessionId>.runtime.json`` beside it is left behind at exit
  and is not needed.
- Name: the last ``/rename`` (``custom_title`` with ``titleSource`` ``manual`` or none) over
  the last automatic title (``titleSource: auto``); else none (the project's name).
  Model: the latest ``assistant`` record's ``model``.
- Busy/idle is not recorded; it is read from the last records: busy after a ``user`` or
  ``tool_result`` record (the model owes an answer) and after an ``assistant`` record with a
  ``functionCall`` (a tool runs or awaits approval); idle after an ``assistant`` record
  without one, and before the first prompt. No record marks an interrupted turn, so an
  inferred "busy" with no growth of the transcript for :data:`BUSY_QUIET_S` becomes unknown
  (the CPU of the process tree decides).
- ``/clear`` is a new ``sessionId`` in the registry: the process runs the new conversation
  and the old one ends.
- ``<root>/projects/<cwd>/subagents/<parent sessionId>/agent-<agentId>.jsonl`` (same
  record format, ``isSidechain: true``) and ``.meta.json`` ``{agentId, agentType,
  description, toolUseId, status: running|completed, isBackgrounded, model}``: sub-agents.
  Done when the meta's status is a final one, when the parent transcript holds a completion
  notification for its ``toolUseId``, or (a foreground sub-agent) the tool's result.
  ``.jsonl.stream`` files are ignored. Verified: ``running`` -> ``completed`` of a
  background sub-agent; from the source, unverified against a real run: the other final
  statuses, the notification and foreground results as the only sign, ``titleSource: auto``.

The directory is ``~/.qwen`` (the fixture's run). Qwen's source also honours
``QWEN_RUNTIME_DIR`` (then ``QWEN_HOME``) for ``sessions/`` and ``projects/``; with either
set, this reader finds nothing and the process is a session of its own.

Only titles, models, ids and statuses are taken: prompt text is never kept.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quintd.model import ConversationFacts, Status, SubagentFacts
from quintd.sources.conversation_files import Subagent
from quintd.sources.files import identifier, text
from quintd.sources.pid_registry import Conversation, Registry, RegistryTranscripts
from quintd.sources.registry import spec

# An inferred "busy" (the last record asks for an answer) holds this long after the
# transcript last grew: a turn interrupted by the user, or an API error, writes nothing.
BUSY_QUIET_S = 300.0
# Meta statuses of a sub-agent that has finished (0.24.4 writes "running", "completed").
FINAL_STATUSES = frozenset(
    {"completed", "failed", "error", "cancelled", "canceled", "killed", "aborted", "stopped"}
)
_NOTIFIED = re.compile(r"<tool-use-id>([A-Za-z0-9_.:-]{1,128})</tool-use-id>")


def project_dir_name(cwd: str) -> str:
    """Qwen Code's ``sanitizeCwd``: every UTF-16 code unit but ASCII letters and digits
    becomes ``-`` (so a character beyond the BMP becomes two)."""
    return "".join(
        ch if ch.isascii() and ch.isalnum() else ("--" if ord(ch) > 0xFFFF else "-") for ch in cwd
    )


@dataclass
class Transcript(Conversation):
    manual_title: str | None = None
    auto_title: str | None = None
    status: Status = "idle"  # before the first prompt: waiting for it
    notified: set[str] = field(default_factory=set)  # tool-use ids of finished sub-agents

    @property
    def title(self) -> str | None:
        return self.manual_title or self.auto_title


class QwenCodeState(RegistryTranscripts[Transcript]):
    """One Qwen Code state directory (``~/.qwen``). The registry is the process's own, or
    that of the process it re-spawned itself as: its child (``bin/qwen`` -> ``cli.js``), or
    its grandchild (npm's ``.bin/qwen`` is ``cli-entry.js``, which starts ``node
    --expose-gc cli.js``, which relaunches itself)."""

    platform = "qwen-code"
    conversation = Transcript
    agent_file = re.compile(r"^agent-([A-Za-z0-9_.-]{1,160})\.(jsonl|meta\.json)$")
    max_schema = 1

    def project_dir_name(self, cwd: str) -> str:
        return project_dir_name(cwd)

    def transcript_path(self, project: Path, session_id: str) -> Path:
        return project / "chats" / f"{session_id}.jsonl"

    def subagent_dir(self, project: Path, session_id: str) -> Path:
        return project / "subagents" / session_id

    def record(self, conversation: Transcript, record: dict[str, Any]) -> None:
        _record(conversation, record)

    def meta(self, sub: Subagent, meta: dict[str, Any]) -> None:
        sub.name = (
            text(meta.get("description"))
            or text(meta.get("agentType"))
            or text(meta.get("subagentName"))
        )
        status = text(meta.get("status"), 32)
        sub.status = status.lower() if status else None
        sub.tool_use_id = identifier(meta.get("toolUseId"))
        sub.backgrounded = meta.get("isBackgrounded") is True
        sub.model = text(meta.get("model")) or sub.model

    def conversation_facts(
        self, registry: Registry, conversation: Transcript | None
    ) -> ConversationFacts:
        if conversation is None:
            return ConversationFacts(
                native_id=registry.session_id, status="idle", owner_uid=registry.owner
            )
        status: Status | None = conversation.status
        if (
            status == "busy"
            and conversation.grew_at is not None
            and self._clock() - conversation.grew_at > BUSY_QUIET_S
        ):
            status = None  # an interrupted turn leaves no record: let the CPU decide
        return ConversationFacts(
            native_id=registry.session_id,
            status=status,
            name=conversation.title,
            model=conversation.model,
            last_write=conversation.last_write,
            subagents=tuple(
                _subagent_facts(conversation, sub) for sub in conversation.subagents.values()
            )
            if conversation.read_once
            else (),
            owner_uid=registry.owner,
        )


def _subagent_facts(transcript: Transcript, sub: Subagent) -> SubagentFacts:
    finished = sub.tool_use_id is not None and (
        sub.tool_use_id in transcript.notified
        or (not sub.backgrounded and sub.tool_use_id in transcript.finished_tools)
    )
    return SubagentFacts(
        agent_id=sub.agent_id,
        name=sub.name,
        done=sub.status in FINAL_STATUSES or finished,
        last_write=sub.last_write,
        status="busy" if sub.status == "running" else None,
        model=sub.model,
    )


def _record(transcript: Transcript, record: dict[str, Any]) -> None:
    """One transcript record: what it says about the title, model, status, sub-agents."""
    if record.get("isSidechain") is True:
        return  # a sub-agent's record: not the conversation's own turn
    kind = record.get("type")
    if kind == "assistant":
        transcript.model = text(record.get("model")) or transcript.model
        calls = [p for p in _parts(record) if isinstance(p.get("functionCall"), dict)]
        transcript.status = "busy" if calls else "idle"
    elif kind == "user":
        transcript.status = "busy"  # a prompt or a notification: the model answers next
        if record.get("subtype") == "notification":
            transcript.notified.update(_notified(record))
    elif kind == "tool_result":
        transcript.status = "busy"  # the result goes back to the model
        for part in _parts(record):
            response = part.get("functionResponse")
            if isinstance(response, dict):
                call_id = identifier(response.get("id"))
                if call_id is not None:
                    transcript.finished_tools.add(call_id)
    elif kind == "system" and record.get("subtype") == "custom_title":
        payload = record.get("systemPayload")
        if isinstance(payload, dict):
            title = text(payload.get("customTitle"))
            if title is None:
                return
            if payload.get("titleSource") == "auto":
                transcript.auto_title = title
            else:  # "manual", or a record older than the field: the user's
                transcript.manual_title = title


def _parts(record: dict[str, Any]) -> list[dict[str, Any]]:
    message = record.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("parts"), list):
        return []
    return [part for part in message["parts"] if isinstance(part, dict)]


def _notified(record: dict[str, Any]) -> set[str]:
    """The tool-use ids a sub-agent completion notification names."""
    found: set[str] = set()
    payload = record.get("systemPayload")
    task = payload.get("backgroundTask") if isinstance(payload, dict) else None
    if isinstance(task, dict):
        tool_use_id = identifier(task.get("toolUseId"))
        if tool_use_id is not None:
            found.add(tool_use_id)
    for part in _parts(record):
        body = part.get("text")
        if isinstance(body, str) and body.startswith("<task-notification>"):
            found.update(_NOTIFIED.findall(body, 0, 4096))
    return found


SPEC = spec("qwen-code")  # where it keeps its state: the registry's line
