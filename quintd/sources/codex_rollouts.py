"""Codex CLI's rollouts (``sessions/YYYY/MM/DD/rollout-<time>-<thread>.jsonl``, see
``codex.py`` for the processes and which thread is whose): what one transcript says of its
thread, record by record.

- ``session_meta``: the thread's cwd and start; a sub-agent's names the thread that
  spawned it and the sub-agent's nickname or role.
- ``turn_context``: the model.
- ``event_msg`` ``task_started`` / ``task_complete`` / ``turn_aborted``: a turn opens and
  closes (busy in between).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from quintd.model import Status
from quintd.sources.conversation_files import Transcript
from quintd.sources.files import identifier, path_text, text
from quintd.sources.times import parse_time

THREAD_ID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
ROLLOUT_NAME = re.compile(f"^rollout-.*-({THREAD_ID})\\.jsonl$")


@dataclass
class Rollout(Transcript):
    """A thread as its rollout tells it so far (the tail read up to its last line)."""

    cwd: str | None = None
    started: float | None = None
    model: str | None = None
    open_turns: set[str] = field(default_factory=set)
    seen_turn: bool = False
    parent: str | None = None  # a sub-agent's: the thread that spawned it
    agent_name: str | None = None  # a sub-agent's nickname or role

    @property
    def status(self) -> Status:
        return "busy" if self.open_turns else "idle"


def rollout_record(rollout: Rollout, record: dict[str, Any]) -> None:
    """One line of the rollout, into what is known of its thread."""
    payload = record.get("payload")
    if not isinstance(payload, dict):
        return
    kind = record.get("type")
    if kind == "session_meta":
        rollout.cwd = path_text(payload.get("cwd")) or rollout.cwd
        rollout.started = parse_time(payload.get("timestamp")) or parse_time(
            record.get("timestamp")
        )
        rollout.parent, rollout.agent_name = _spawned_by(payload)
    elif kind == "turn_context":
        rollout.model = text(payload.get("model")) or rollout.model
    elif kind == "event_msg":
        turn = identifier(payload.get("turn_id")) or "?"
        if payload.get("type") == "task_started":
            rollout.open_turns.add(turn)
        elif payload.get("type") in ("task_complete", "turn_aborted"):
            rollout.open_turns.discard(turn)


def _spawned_by(meta: dict[str, Any]) -> tuple[str | None, str | None]:
    """The parent thread and the name of a sub-agent's thread, from its ``session_meta``:
    ``source: {"subagent": {"thread_spawn": {parent_thread_id, depth, agent_nickname,
    agent_role, agent_path}}}`` (Codex 0.90 on; the nickname and role also at the top
    level from 0.105), or a top-level ``parent_thread_id`` with ``thread_source:
    "subagent"`` (later versions). Other sources (``cli``, ``exec``, a review's
    ``{"subagent": "review"}``) name no parent: (None, None)."""
    source = meta.get("source")
    subagent = source.get("subagent") if isinstance(source, dict) else None
    spawn = subagent.get("thread_spawn") if isinstance(subagent, dict) else None
    spawn = spawn if isinstance(spawn, dict) else {}
    parent = identifier(spawn.get("parent_thread_id"))
    if parent is None and meta.get("thread_source") == "subagent":
        parent = identifier(meta.get("parent_thread_id"))
    if parent is None:
        return None, None
    name = next(
        (
            text(where.get(key))
            for key in ("agent_nickname", "agent_role")
            for where in (meta, spawn)
            if text(where.get(key))
        ),
        None,
    )
    return parent, name
