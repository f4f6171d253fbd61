"""What Kiro CLI's session files say of one session (``sessions/cli/<id>.*``): the
:class:`KiroSession` they fill, the sidecar ``<id>.json`` (cwd, times, parent, model; a
large one by its head and tail) and the status a transcript record leaves. The reader
(``kiro.py``) decides when to read them and which process runs which session.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quintd.model import Status
from quintd.sources.conversation_files import Transcript
from quintd.sources.files import (
    MAX_JSON_FILE_BYTES,
    ReadStats,
    open_under,
    parse_json,
    path_text,
    read_json_file,
    text,
)
from quintd.sources.times import parse_time

SESSION_ID = re.compile(
    r"^([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)
MAX_SIDECAR_BYTES = 64 * 1024 * 1024  # larger sidecars are refused
PART_BYTES = 64 * 1024  # head and tail read of a sidecar past 256 KiB
INTERNAL_TITLES = (
    "[AGENT SYSTEM PROMPT]",
    "You are a memory consolidation agent",
    "First, decide: is the following text",
    "[SESSION CONTEXT",
)
_TOP_FIELD = re.compile(
    rb'"(session_id|cwd|created_at|updated_at|title|parent_session_id)"\s*:\s*'
    rb'("(?:[^"\\]|\\.){0,8192}"|null)'
)
_MODEL_ID = re.compile(rb'"model_id"\s*:\s*("(?:[^"\\]|\\.){1,400}")')


@dataclass
class KiroSession(Transcript):
    """One session: what its sidecar, transcript and lock said."""

    native_id: str = ""
    title: str | None = None
    cwd: str | None = None
    created: float | None = None
    updated: float | None = None
    parent: str | None = None
    model: str | None = None
    owner: int | None = None  # the uid owning the sidecar (or the transcript)
    status: Status | None = None
    answered: bool = False  # the last record is an answer with text only
    written: float = 0.0  # wall time one of its files was last modified
    transcript_at: float = 0.0  # wall time the transcript was last modified
    lock_pid: int | None = None
    lock_time: float = 0.0
    had_lock: bool = False


def read_sidecar(session: KiroSession, path: Path, root: Path, stats: ReadStats) -> None:
    """What ``<id>.json`` says of a session: cwd, times, parent, model (a sidecar past
    256 KiB by its head and tail)."""
    try:
        fd, info = open_under(root, path)
    except OSError:
        return
    os.close(fd)
    session.written = max(session.written, info.st_mtime)
    if info.st_size <= MAX_JSON_FILE_BYTES:
        found = read_json_file(path, root, stats)
        if found is None:
            return
        data, session.owner = found.data, found.owner
        model = _model(data.get("session_state"))
    elif info.st_size <= MAX_SIDECAR_BYTES:
        data, model = _large_sidecar(root, path, info.st_size)
        session.owner = info.st_uid
    else:
        stats.refused += 1
        return
    if data.get("session_id") not in (None, session.native_id):
        stats.garbage += 1
        return
    # Kiro's title is the first prompt, verbatim: prompt text never leaves the machine,
    # so it is no name (the project directory names the session instead).
    session.title = None
    session.cwd = path_text(data.get("cwd")) or session.cwd
    session.created = parse_time(data.get("created_at")) or session.created
    session.updated = parse_time(data.get("updated_at")) or session.updated
    parent = data.get("parent_session_id")
    if isinstance(parent, str) and SESSION_ID.match(parent):
        session.parent = parent
    session.model = model or session.model


def _large_sidecar(root: Path, path: Path, size: int) -> tuple[dict[str, Any], str | None]:
    """A sidecar too large to parse whole: its top-level fields (written before
    ``session_state``) from the head, the last ``model_id`` from the tail."""
    try:
        fd, _ = open_under(root, path)
    except OSError:
        return {}, None
    try:
        head = os.pread(fd, PART_BYTES, 0)
        tail = os.pread(fd, PART_BYTES, max(size - PART_BYTES, 0))
    finally:
        os.close(fd)
    head = head.split(b'"session_state"', 1)[0]
    data: dict[str, Any] = {}
    for match in _TOP_FIELD.finditer(head):
        key = match.group(1).decode()
        if key not in data:
            data[key] = _json_string(match.group(2))
    models = _MODEL_ID.findall(tail)
    return data, text(_json_string(models[-1])) if models else None


def record(session: KiroSession, record: dict[str, Any]) -> None:
    kind = record.get("kind")
    if not isinstance(kind, str):
        raise TypeError("a record without a kind")  # counted as garbage
    status, answered = _record_status(kind, record.get("data"))
    if status is not None:
        session.status, session.answered = status, answered


def _record_status(kind: str, data: object) -> tuple[Status | None, bool]:
    """(status, answered) after one transcript record; None for records that tell nothing."""
    if kind in ("Prompt", "ToolResults"):
        return "busy", False
    if kind == "AssistantMessage":
        content = data.get("content") if isinstance(data, dict) else None
        items = content if isinstance(content, list) else []
        tool = any(isinstance(i, dict) and i.get("kind") == "toolUse" for i in items)
        return ("busy", False) if tool else ("idle", True)
    if kind in ("CancelledPrompt", "Clear", "Compaction"):
        return "idle", False
    return None, False


def _model(state: object) -> str | None:
    if not isinstance(state, dict):
        return None
    rts = state.get("rts_model_state")
    info = rts.get("model_info") if isinstance(rts, dict) else None
    if isinstance(info, dict):
        model = text(info.get("model_id")) or text(info.get("model_name"))
        if model:
            return model
    meta = state.get("conversation_metadata")
    turns = meta.get("user_turn_metadatas") if isinstance(meta, dict) else None
    if isinstance(turns, list) and turns and isinstance(turns[-1], dict):
        return text(turns[-1].get("model"))
    return None


def _json_string(raw: bytes) -> str | None:
    value = parse_json(raw)
    return value if isinstance(value, str) else None
