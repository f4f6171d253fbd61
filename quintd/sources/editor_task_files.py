"""One Cline, Roo Code or Kilo Code task as the files of its directory tell it, and the
conversation a task with its sub-tasks makes (the reader that finds the tasks, follows
their directories and binds them to an editor's processes is ``editor_tasks.py``; the
storage code each format comes from is cited there).

What is read, under ``User/globalStorage/<extension id>/tasks/<task id>/``:

- ``ui_messages.json`` (and ``api_conversation_history.json``): a task is live for an
  editor process when they were written since that process started (an editor opening
  with a long history has none live); their growth is work (``last_write``). Only the
  last 64 KiB of ``ui_messages.json`` is read, for its last message: ``partial`` or an
  ``api_req_started`` without ``cost`` or ``cancelReason`` (a request under way, as Roo's
  own resume logic reads it) is ``busy``; an ``ask`` waits for the user (``idle`` after a
  completion, else ``waiting``); anything else says nothing (``idle``: the files' growth
  alone tells work; the editor's CPU never does). A busy word unchanged for
  :data:`STALE_BUSY_S` is no longer believed (an extension host that died mid-request).
- ``task_metadata.json``: ``model_usage[-1].model_id`` is the model (Cline's; Roo records
  no model in a task's files).
- ``history_item.json`` (Roo, Kilo): ``parentTaskId``/``rootTaskId`` make a task a
  sub-conversation of its root (nested children are flattened onto the root: a session
  has one level of sub-agents); ``status`` ``completed`` ends a child, ``delegated``
  makes its parent wait.
- Names: neither extension lets the user title a task (``task`` is the first prompt,
  never sent), so no conversation has a name.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quintd.model import ConversationFacts, Status, SubagentFacts
from quintd.sources.changes import listing, lstat_signature
from quintd.sources.files import (
    PASS_BUDGET,
    ReadStats,
    open_counted,
    parse_json,
    parse_object,
    read_json_file,
    read_whole,
    text,
)


@dataclass(frozen=True)
class Extension:
    ext_id: str  # its directory under globalStorage
    prefix: str  # of its native ids


UI_MESSAGES = "ui_messages.json"
API_HISTORY = "api_conversation_history.json"
HISTORY_ITEM = "history_item.json"
METADATA = "task_metadata.json"
TAIL_BYTES = 64 * 1024  # of ui_messages.json: its last message
MAX_METADATA_BYTES = 1024 * 1024  # task_metadata.json also lists the files in context
STALE_BUSY_S = 600.0  # a busy last message unchanged this long is not believed
# A task id: Cline's is the ms epoch of its creation, Roo's a UUID v7 (its first 48 bits
# the ms epoch); ``_index.json`` and hidden entries are not tasks.
TASK_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_MS_ID = re.compile(r"^\d{13}$")
_UUID7 = re.compile(r"^([0-9a-f]{8})-([0-9a-f]{4})-7[0-9a-f]{3}-[0-9a-f]{4}-[0-9a-f]{12}$")
_DONE_ASKS = frozenset({"completion_result", "resume_task", "resume_completed_task"})
_LAST_MESSAGE = b'{"ts":'  # every message is written with ``ts`` first

Signature = tuple[int, int, int] | None


@dataclass
class Task:
    ext: Extension
    task_id: str
    owner: int  # the uid owning its transcript
    created: float  # epoch seconds
    updated: float  # epoch seconds: its transcript last written
    transcript: tuple[Signature, Signature]  # ui_messages, api history
    last_write: float | None = None  # monotonic: when it last grew
    said: Status | None = None  # what its last message says
    said_at: float = 0.0  # monotonic: when that was read
    model: str | None = None
    metadata: Signature = None  # task_metadata.json, as last read
    item: Signature = None  # history_item.json, as last read
    parent: str | None = None  # its root task (Roo, Kilo)
    status: str | None = None  # Roo's history status: active, completed, delegated

    @property
    def native_id(self) -> str:
        return f"{self.ext.prefix}:{self.task_id}"


def last_word(path: Path, root: Path, stats: ReadStats) -> Status | None:
    """What the last message of ``ui_messages.json`` says (from its last
    :data:`TAIL_BYTES`)."""
    opened = open_counted(root, path, stats)
    if opened is None:
        return None
    fd, info = opened
    try:
        want = PASS_BUDGET.take(min(TAIL_BYTES, info.st_size))
        tail = os.pread(fd, want, info.st_size - want) if want > 0 else b""
    finally:
        os.close(fd)
    body = tail.rstrip()
    start = body.rfind(_LAST_MESSAGE)
    if not body.endswith(b"]") or start < 0:
        return None  # not a whole array's end, or a last message longer than the tail
    message = parse_object(body[start:-1])
    if message is None:
        stats.garbage += 1
        return None
    stats.lines += 1
    return _says(message)


def read_item(task: Task, directory: Path, root: Path, stats: ReadStats) -> bool:
    """Roo's and Kilo's ``history_item.json``: the root task and the status. False
    when it is gone (removed from history) after it was there."""
    path = directory / HISTORY_ITEM
    signature = lstat_signature(path)
    if signature is None:
        return task.item is None or rewriting(directory, HISTORY_ITEM)
    if signature == task.item:
        return True
    found = read_json_file(path, root, stats)
    if found is None:
        return True  # refused or garbage (counted): what was known stands
    task.item = signature
    parent = found.data.get("rootTaskId") or found.data.get("parentTaskId")
    task.parent = parent if isinstance(parent, str) and TASK_ID.match(parent) else None
    if task.parent == task.task_id:
        task.parent = None
    status = found.data.get("status")
    task.status = status if status in ("active", "completed", "delegated") else None
    return True


def read_metadata(task: Task, directory: Path, root: Path, stats: ReadStats) -> None:
    """Cline's ``task_metadata.json``: the model of the last request."""
    path = directory / METADATA
    signature = lstat_signature(path)
    if signature is None or signature == task.metadata:
        return
    task.metadata = signature
    whole = read_whole(path, root, stats, MAX_METADATA_BYTES)
    if whole is None or whole.raw is None:
        return
    data = parse_object(whole.raw)
    if data is None:
        if whole.raw.strip():
            stats.garbage += 1
        return
    usage = data.get("model_usage")
    if isinstance(usage, list) and usage and isinstance(usage[-1], dict):
        task.model = text(usage[-1].get("model_id")) or task.model


def conversation(root: Task, members: list[Task], clock: float) -> ConversationFacts:
    children = tuple(
        SubagentFacts(
            agent_id=child.task_id,
            done=child.status == "completed",
            last_write=child.last_write,
            status=_status(child, clock),
            model=child.model,
        )
        for child in sorted(members, key=lambda t: (t.created, t.task_id))
        if child is not root
    )
    return ConversationFacts(
        native_id=root.native_id,
        # Delegated: it waits for its child (whose work is its work too).
        status="waiting" if root.status == "delegated" else _status(root, clock),
        model=root.model,
        last_write=root.last_write,
        subagents=children,
        owner_uid=root.owner,
    )


def _status(task: Task, clock: float) -> Status:
    """Its last message's word (a busy word not believed once stale); else idle: its
    files' growth alone tells work."""
    if task.said == "busy" and clock - task.said_at >= STALE_BUSY_S:
        return "idle"
    return task.said or "idle"


def _says(message: dict[str, Any]) -> Status | None:
    if message.get("partial") is True:
        return "busy"  # streaming
    if message.get("type") == "ask":
        return "idle" if message.get("ask") in _DONE_ASKS else "waiting"
    if message.get("say") == "api_req_started":
        info = parse_json(message.get("text"), TAIL_BYTES)
        if isinstance(info, dict) and "cost" not in info and "cancelReason" not in info:
            return "busy"  # a request under way
    return None


def family_root(task: Task, tasks: dict[tuple[Extension, str], Task]) -> tuple[Extension, str]:
    """The topmost live ancestor of a task (itself when it has none, or when its parents
    make a cycle: files someone wrote, not a delegation)."""
    start, seen = task, {task.task_id}
    while task.parent is not None and (task.ext, task.parent) in tasks:
        if task.parent in seen:
            return (start.ext, start.task_id)
        seen.add(task.parent)
        task = tasks[(task.ext, task.parent)]
    return (task.ext, task.task_id)


def signature(info: os.stat_result | None) -> Signature:
    return None if info is None else (info.st_ino, info.st_size, info.st_mtime_ns)


def rewriting(directory: Path, name: str) -> bool:
    """Roo's ``safeWriteJson`` renames the file away before renaming its new text in: a
    ``.<name>.bak_...`` or ``.<name>.new_...`` beside it means it is being rewritten."""
    pattern = re.compile(re.escape(f".{name}.") + r"(?:bak|new)_")
    return bool(listing(directory, pattern, limit=1))


def created(task_id: str, fallback: float) -> float:
    """When a task was created: from its id (Cline's ms epoch, Roo's UUID v7), else when
    it was first seen written."""
    if _MS_ID.match(task_id):
        return int(task_id) / 1000
    uuid7 = _UUID7.match(task_id)
    if uuid7 is not None:
        return int(uuid7.group(1) + uuid7.group(2), 16) / 1000
    return fallback
