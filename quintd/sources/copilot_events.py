"""What Copilot CLI's ``events.jsonl`` says about one conversation: its model, whether a
prompt, a turn, a tool call or a permission request is open, its sub-agents (``task`` tool)
and whether it was shut down. The reader (``copilot_cli.py``) finds the conversations and
their processes; each line read is handed to :func:`apply_event`.

Events (one JSON object per line: ``{type, data, id, timestamp, parentId}``, and
``agentId`` on a sub-agent's own events): ``session.start``/``session.resume``
(``selectedModel``), ``session.model_change`` (``newModel``), ``user.message``,
``assistant.turn_start``/``assistant.turn_end``, ``assistant.message`` (``model``),
``tool.execution_start``/``tool.execution_complete`` (``toolCallId``),
``permission.requested``/``permission.completed`` (``requestId``), ``subagent.started``/
``subagent.configured``/``subagent.completed``/``subagent.failed``, ``session.shutdown``.
Every set and table here is bounded: a garbage file never grows them without end.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from quintd.sources.conversation_files import Subagent, Transcript
from quintd.sources.files import identifier, text

MAX_SUBAGENTS = 256  # per conversation
MAX_OPEN = 1024  # pending tools or permission requests per conversation


@dataclass
class Conversation(Transcript):
    session_id: str = ""
    workspace: tuple[int, int, int] | None = None  # (inode, size, mtime) last parsed
    events_seen: tuple[int, int, int] | None = None  # (inode, size, mtime) read to its end
    name: str | None = None
    created: float | None = None
    model: str | None = None
    prompt_open: bool = False
    turn_open: bool = False
    tools: set[str] = field(default_factory=set)
    permissions: dict[str, str | None] = field(default_factory=dict)  # request -> agent id
    subagents: dict[str, Subagent] = field(default_factory=dict)
    closed: bool = False
    events_dirty: bool = True
    workspace_dirty: bool = True

    def running(self) -> list[Subagent]:
        return [s for s in self.subagents.values() if not s.done]


def apply_event(conversation: Conversation, record: dict[str, Any], now: float | None) -> None:
    """One line of ``events.jsonl``. ``now``: the clock when the line is new work, None while
    reading history."""
    kind = record.get("type")
    data = record.get("data")
    if not isinstance(kind, str) or not isinstance(data, dict):
        return
    agent = identifier(record.get("agentId"))
    if kind.startswith("subagent."):
        _subagent_event(conversation, kind, data, agent, now)
    elif agent is not None:  # a sub-agent's own work
        sub = conversation.subagents.get(agent)
        if sub is not None:
            if now is not None:
                sub.last_write = now
            if kind in ("assistant.message", "session.model_change"):
                sub.model = text(data.get("model")) or text(data.get("newModel")) or sub.model
        _permission(conversation, kind, data, agent)
    elif kind in ("session.start", "session.resume"):
        conversation.closed = False
        conversation.model = text(data.get("selectedModel")) or conversation.model
    elif kind == "session.model_change":
        conversation.model = text(data.get("newModel")) or conversation.model
    elif kind == "user.message":
        conversation.prompt_open = True
        conversation.closed = False
    elif kind == "assistant.turn_start":
        conversation.turn_open, conversation.prompt_open = True, False
    elif kind == "assistant.turn_end":
        conversation.turn_open = False
    elif kind == "assistant.message":
        conversation.model = text(data.get("model")) or conversation.model
    elif kind == "tool.execution_start":
        call = identifier(data.get("toolCallId"))
        if call is not None:
            _bounded_add(conversation.tools, call)
    elif kind == "tool.execution_complete":
        call = identifier(data.get("toolCallId"))
        conversation.tools.discard(call or "")
        for sub in conversation.subagents.values():
            if call is not None and sub.tool_use_id == call:
                sub.done = True  # the task tool returned: its sub-agent is over
    elif kind == "session.shutdown":
        conversation.closed = True
        conversation.prompt_open = conversation.turn_open = False
        conversation.tools.clear()
        conversation.permissions.clear()
        for sub in conversation.subagents.values():
            sub.done = True
    else:
        _permission(conversation, kind, data, None)


def _subagent_event(
    conversation: Conversation,
    kind: str,
    data: dict[str, Any],
    agent: str | None,
    now: float | None,
) -> None:
    call = identifier(data.get("toolCallId"))
    key = agent or call
    if key is None:
        return
    if kind == "subagent.started":
        started = conversation.subagents.get(key) or Subagent(key)
        started.tool_use_id = call or started.tool_use_id
        started.name = (
            text(data.get("agentDescription"))
            or text(data.get("agentDisplayName"))
            or text(data.get("agentName"))
            or started.name
        )
        started.model = text(data.get("model")) or started.model
        started.done = False
        conversation.subagents[key] = started
        _prune(conversation.subagents)
        return
    sub = conversation.subagents.get(key)
    if sub is None:
        return
    if kind in ("subagent.completed", "subagent.failed"):
        sub.done = True
    elif kind == "subagent.configured":
        sub.model = text(data.get("model")) or sub.model
    if now is not None:
        sub.last_write = now


def _permission(
    conversation: Conversation, kind: str, data: dict[str, Any], agent: str | None
) -> None:
    request = identifier(data.get("requestId"))
    if request is None:
        return
    if kind == "permission.requested":
        if len(conversation.permissions) >= MAX_OPEN:
            conversation.permissions.clear()  # garbage: never a growing table
        conversation.permissions[request] = agent
    elif kind == "permission.completed":
        conversation.permissions.pop(request, None)


def _bounded_add(values: set[str], value: str) -> None:
    if len(values) >= MAX_OPEN:
        values.clear()
    values.add(value)


def _prune(subagents: dict[str, Subagent]) -> None:
    """At most MAX_SUBAGENTS: the finished ones go first, then the oldest."""
    if len(subagents) <= MAX_SUBAGENTS:
        return
    for key in [k for k, s in subagents.items() if s.done]:
        if len(subagents) <= MAX_SUBAGENTS:
            return
        del subagents[key]
    while len(subagents) > MAX_SUBAGENTS:
        del subagents[next(iter(subagents))]
