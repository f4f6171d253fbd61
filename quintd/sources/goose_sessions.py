"""goose's ``sessions.db``: what a row of ``sessions`` and a session's newest message say
(name, kind, cwd, model, busy or idle), and the bounded queries that read them. The reader
(``goose.py``) finds the database and ties its sessions to processes.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from quintd.model import Status
from quintd.sources.files import identifier, parse_json, path_text, text
from quintd.sources.sqlite_files import columns, pick, quote_name
from quintd.sources.sqlite_sessions import MissingColumns, Session, column
from quintd.sources.times import START_SLACK_S, parse_time

MAX_SESSIONS = 256
MAX_CONTENT_CHARS = 256 * 1024
PLACEHOLDER_NAMES = frozenset({"CLI Session", "New Chat"})
SUB_AGENT = "sub_agent"


@dataclass(frozen=True)
class LastMessage:
    """The newest message of a session."""

    rowid: int
    role: str
    created: float | None
    tool_request: bool | None  # None: the content could not be read
    count: int


@dataclass
class GooseSession(Session):
    """A row of ``sessions`` with its newest message."""

    name: str | None = None
    kind: str = "user"
    cwd: str | None = None
    model: str | None = None
    last: LastMessage | None = None

    def signature(self) -> tuple[object, ...]:
        last = self.last
        return (self.updated, last.rowid if last else None, last.count if last else 0)

    @property
    def sub_agent(self) -> bool:
        return self.kind == SUB_AGENT or self.parent is not None

    def status(self, since: float) -> Status | None:
        last = self.last
        if last is None:
            return "busy" if self.sub_agent else "idle"
        if last.role == "assistant":
            if last.tool_request is None:
                return None
            if not last.tool_request:
                return "idle"
        elif last.role != "user":
            return None
        fresh = last.created is None or last.created >= since - START_SLACK_S
        return "busy" if fresh else "idle"

    @property
    def answered(self) -> bool:
        last = self.last
        return last is not None and last.role == "assistant" and last.tool_request is False


def query_sessions(conn: sqlite3.Connection, horizon: float) -> tuple[list[GooseSession], bool]:
    """The sessions touched since ``horizon`` (at most MAX_SESSIONS) with their newest
    message; whether the database records ``parent_session_id``."""
    scols = columns(conn, "sessions")
    mcols = columns(conn, "messages")
    updated = pick(scols, "updated_at", "created_at")
    if (
        "id" not in scols
        or "working_dir" not in scols
        or updated is None
        or not {"session_id", "role"} <= mcols
    ):
        raise MissingColumns
    wanted = (
        "id",
        pick(scols, "name"),
        pick(scols, "description"),
        pick(scols, "session_type"),
        "working_dir",
        pick(scols, "created_at", "updated_at"),
        updated,
        pick(scols, "model_config_json"),
        pick(scols, "parent_session_id"),
    )
    select = ", ".join(column(c) for c in wanted)
    since = datetime.fromtimestamp(max(horizon, 0.0), UTC).strftime("%Y-%m-%d %H:%M:%S")
    stamp = quote_name(updated)
    rows = conn.execute(
        f"SELECT {select} FROM sessions WHERE {stamp} >= ? "
        f"OR typeof({stamp}) IN ('integer', 'real') "
        f"ORDER BY {stamp} DESC LIMIT {MAX_SESSIONS}",
        (since,),
    ).fetchall()
    sessions = [s for s in (_session(row, horizon) for row in rows) if s is not None]
    content = (
        f"CASE WHEN length(content_json) <= {MAX_CONTENT_CHARS} THEN content_json END"
        if "content_json" in mcols
        else "NULL"
    )
    created = quote_name("created_timestamp") if "created_timestamp" in mcols else "NULL"
    for session in sessions:
        row = conn.execute(
            f"SELECT rowid, role, {content}, {created} FROM messages "
            "WHERE session_id = ? ORDER BY rowid DESC LIMIT 1",
            (session.native_id,),
        ).fetchone()
        if row is None or not isinstance(row[0], int):
            continue
        count = conn.execute(
            "SELECT count(*) FROM messages WHERE session_id = ?", (session.native_id,)
        ).fetchone()
        session.last = LastMessage(
            rowid=row[0],
            role=row[1] if isinstance(row[1], str) else "",
            created=parse_time(row[3]),
            tool_request=_tool_request(row[2]),
            count=count[0] if count and isinstance(count[0], int) else 0,
        )
    return sessions, "parent_session_id" in scols


def _session(row: Sequence[object], horizon: float) -> GooseSession | None:
    native_id, name, description, kind, cwd, created, updated, model_json, parent = row
    ident = identifier(native_id)
    updated_s = parse_time(updated)
    if ident is None or updated_s is None or updated_s < horizon:
        return None
    created_s = parse_time(created)
    title = text(name) or text(description)
    return GooseSession(
        native_id=ident,
        name=None if title in PLACEHOLDER_NAMES else title,
        kind=text(kind, 64) or "user",
        cwd=path_text(cwd),
        created=created_s if created_s is not None else updated_s,
        updated=updated_s,
        model=_model(model_json),
        parent=identifier(parent),
    )


def _model(value: object) -> str | None:
    data = parse_json(value, 64 * 1024)
    return text(data.get("model_name")) if isinstance(data, dict) else None


def _tool_request(content: object) -> bool | None:
    """Whether a message's content holds a tool request; None if it cannot be read."""
    items = parse_json(content)
    if not isinstance(items, list):
        return None
    return any(isinstance(i, dict) and i.get("type") == "toolRequest" for i in items)
