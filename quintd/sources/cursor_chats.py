"""What cursor-agent's chat directory says of one chat: its ``store.db`` (the ``meta`` row
``"0"``: name, model, creation time, workspace) and its ``meta.json`` (cwd, creation time,
title), read into a :class:`Chat`; and the directory names it derives from a cwd. The
reader (``cursor_agent.py``) decides when to read them and which process runs which chat.
"""

from __future__ import annotations

import hashlib
import re
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from quintd.model import Status
from quintd.sources.changes import lmtime
from quintd.sources.conversation_files import Transcript
from quintd.sources.files import (
    ReadStats,
    identifier,
    parse_json,
    parse_object,
    path_text,
    read_json_file,
    text,
)
from quintd.sources.sqlite_files import UnreadableDatabase, columns, read_database
from quintd.sources.times import parse_time

MAX_META_CHARS = 512 * 1024
# The name a chat has until one is generated (agentprotocol writes it for an untitled one).
PLACEHOLDER_NAMES = frozenset({"New Agent"})


def cwd_hash(cwd: str) -> str:
    """The name of a project's directory under ``chats``: the lower-hex MD5 of the cwd."""
    return hashlib.md5(cwd.encode("utf-8", "surrogateescape"), usedforsecurity=False).hexdigest()


def project_slug(cwd: str) -> str:
    """The name of a project's directory under ``projects``."""
    return re.sub(r"[^A-Za-z0-9]+", "-", cwd).strip("-")


@dataclass
class Chat:
    native_id: str
    directory: Path
    cwd: str | None = None
    name: str | None = None
    model: str | None = None
    created: float | None = None
    written: float = 0.0  # wall time its files were last modified
    owner: int | None = None
    signature: tuple[float, ...] = ()
    store_read_at: float = -1e18  # monotonic
    store_pending: bool = False  # changed since the last read, read when due
    transcript: Transcript | None = None
    transcript_at: float = 0.0
    status: Status | None = None


def chat_times(chat: Chat) -> tuple[float, ...]:
    """When each of the chat's files (and its directory) was last modified."""
    d = chat.directory
    return (
        lmtime(d / "store.db"),
        lmtime(d / "store.db-wal"),
        lmtime(d / "meta.json"),
        lmtime(d),
    )


def read_meta_json(chat: Chat, root: Path, stats: ReadStats) -> None:
    found = read_json_file(chat.directory / "meta.json", root, stats)
    if found is None:
        return
    data = found.data
    chat.owner = found.owner
    chat.cwd = path_text(data.get("cwd")) or chat.cwd
    chat.created = parse_time(data.get("createdAtMs")) or chat.created
    title = text(data.get("title"))
    chat.name = chat.name or (None if title in PLACEHOLDER_NAMES else title)


def read_store(chat: Chat, root: Path, stats: ReadStats) -> None:
    try:
        value, owner = read_database(root, chat.directory / "store.db", _meta_row, stats)
    except UnreadableDatabase:
        return
    chat.owner = owner
    meta = _decode_meta(value)
    if meta is None:
        if value is not None:
            stats.garbage += 1
        return
    agent = identifier(meta.get("agentId"))
    if agent is not None and agent != chat.native_id:
        stats.garbage += 1
        return
    name = text(meta.get("name"))
    chat.name = (None if name in PLACEHOLDER_NAMES else name) or chat.name
    chat.model = _model(meta.get("lastUsedModel")) or chat.model
    chat.created = chat.created or parse_time(meta.get("createdAt"))
    chat.cwd = chat.cwd or path_text(meta.get("workspacePath"))


def _meta_row(conn: sqlite3.Connection) -> object:
    if not {"key", "value"} <= columns(conn, "meta"):
        return None
    row = conn.execute(
        f"SELECT CASE WHEN length(value) <= {MAX_META_CHARS} THEN value END "
        "FROM meta WHERE key = '0'"
    ).fetchone()
    return row[0] if row else None


def _decode_meta(value: object) -> dict[str, Any] | None:
    """meta "0": hex-encoded UTF-8 JSON, or plain JSON (text or bytes)."""
    if isinstance(value, str):
        value = value.strip().encode("utf-8", "replace")
    if not isinstance(value, bytes) or not value:
        return None
    if not value.startswith(b"{"):
        try:
            value = bytes.fromhex(value.decode("ascii"))
        except (ValueError, UnicodeDecodeError):
            return None
    return parse_object(value)


def _model(value: object) -> str | None:
    if isinstance(value, dict):
        for key in ("modelId", "model", "name", "id"):
            found = _model(value.get(key))
            if found:
                return found
        return None
    if isinstance(value, str) and value.startswith("{"):
        return _model(parse_json(value))
    return text(value)
