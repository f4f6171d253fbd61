"""Crush's ``crush.db`` (see ``crush.py`` for the processes and which session is whose):
its sessions and their newest messages, read with bounded queries, and what they say of a
session's state.

Reading: the database and its ``-wal`` are checked with one ``lstat`` each per pass, and
read (read-only, through :func:`read_database`) only when they changed; only sessions
touched since the oldest running process started are read. Columns are chosen by name
(``PRAGMA table_info``): a database without the columns this needs gives no facts (the
process is then a session of its own) and is counted in ``stats.garbage``. Message parts
are JSON, or zstd-compressed in a later commit (``internal/message/parts_codec.go`` at
``6cbef92df592c255e4649934b14c81ddc83768da``): then the finish reason is unknown and a
finished step counts as idle.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from quintd.model import Status
from quintd.sources.files import identifier, parse_json, text
from quintd.sources.sqlite_files import columns, pick, quote_name
from quintd.sources.sqlite_sessions import MissingColumns, Session, column
from quintd.sources.times import START_SLACK_S, parse_time

MAX_SESSIONS = 256  # sessions read per database per pass (the newest)
MAX_PARTS_CHARS = 256 * 1024  # a message's parts longer than this are not parsed
# "New Agent Session": a sub-agent's until its own title arrives (seen with v0.90.0).
PLACEHOLDER_TITLES = frozenset({"New Session", "Untitled Session", "New Agent Session"})
BUSY_REASONS = frozenset({"tool_use"})


@dataclass(frozen=True)
class CrushMessage:
    """One row of ``messages``: the columns this reads of it."""

    rowid: int
    role: str
    updated: float | None
    finished: float | None
    model: str | None
    reason: str | None  # the finish part's reason, when the parts could be read
    finish_known: bool = True  # the table has finished_at (else only the reason tells)


@dataclass
class CrushSession(Session):
    """One row of ``sessions``, with its newest message and its newest assistant message."""

    title: str | None = None
    last: CrushMessage | None = None  # the newest message
    assistant: CrushMessage | None = None  # the newest assistant message
    result_seen: bool = False  # a sub-agent whose tool result is in its parent

    def messages(self) -> tuple[object, ...]:
        last, asst = self.last, self.assistant
        return (
            last.rowid if last else None,
            last.updated if last else None,
            asst.finished if asst else None,
        )

    def signature(self) -> tuple[object, ...]:
        last, asst = self.last, self.assistant
        return (
            self.updated,
            last.rowid if last else None,
            last.updated if last else None,
            asst.finished if asst else None,
        )

    def status(self, since: float) -> Status | None:
        """busy/idle from the newest messages; ``since``: the process's start (older
        unfinished messages were left by a crash)."""
        last, asst = self.last, self.assistant
        if last is None:
            return None
        if asst is None or last.rowid > asst.rowid:
            if last.role in ("user", "tool"):
                return "busy" if _fresh(last.updated, since) else "idle"
            return None
        if not asst.finish_known and asst.reason is None:
            return None
        if (asst.finished is None and asst.finish_known) or asst.reason in BUSY_REASONS:
            return "busy" if _fresh(asst.updated, since) else "idle"
        return "idle"


def _fresh(moment: float | None, since: float) -> bool:
    """Written by the running process (not left by an earlier one); unknown: assumed so."""
    return moment is None or moment >= since - START_SLACK_S


def model_of(session: CrushSession) -> str | None:
    """The session's model: its newest assistant message's."""
    return session.assistant.model if session.assistant is not None else None


# -- the queries -----------------------------------------------------------------------------


def query_sessions(
    conn: sqlite3.Connection, horizon: float, known: dict[str, CrushSession]
) -> list[CrushSession]:
    """The sessions touched since ``horizon`` (the newest, bounded), each with its newest
    messages; ``known``: the sessions read before (a sub-agent's result seen stays seen)."""
    scols = columns(conn, "sessions")
    mcols = columns(conn, "messages")
    updated = pick(scols, "updated_at", "created_at")
    if "id" not in scols or updated is None or not {"session_id", "role"} <= mcols:
        raise MissingColumns
    created = pick(scols, "created_at", "updated_at") or updated
    parent = pick(scols, "parent_session_id")
    title = pick(scols, "title", "name")
    select = ", ".join(column(c) for c in ("id", parent, title, created, updated))
    rows = conn.execute(
        f"SELECT {select} FROM sessions WHERE {quote_name(updated)} >= ? "
        f"ORDER BY {quote_name(updated)} DESC LIMIT {MAX_SESSIONS}",
        (int(horizon),),
    ).fetchall()
    sessions = []
    for row in rows:
        session = _session(row, horizon)
        if session is not None:
            sessions.append(session)
    message = _message_select(mcols)
    for session in sessions:
        session.last = _newest(conn, message, session.native_id, None)
        session.assistant = _newest(conn, message, session.native_id, "assistant")
    by_id = {s.native_id: s for s in sessions}
    for session in sessions:
        old = known.get(session.native_id)
        if old is not None and old.result_seen:
            session.result_seen = True  # seen once: never asked again
        elif session.parent in by_id:
            session.result_seen = _result_seen(conn, mcols, session)
    return sessions


def _session(row: Sequence[object], horizon: float) -> CrushSession | None:
    native_id, parent, title, created, updated = row
    ident = identifier(native_id)
    updated_s, created_s = parse_time(updated), parse_time(created)
    if ident is None or updated_s is None:
        return None
    if updated_s < horizon:
        return None  # milliseconds compared as seconds above: filtered here
    name = text(title)
    return CrushSession(
        native_id=ident,
        parent=identifier(parent),
        title=None if name in PLACEHOLDER_TITLES else name,
        created=created_s if created_s is not None else updated_s,
        updated=updated_s,
    )


def _message_select(mcols: set[str]) -> str:
    parts = (
        f"CASE WHEN length(parts) <= {MAX_PARTS_CHARS} THEN parts END"
        if "parts" in mcols
        else "NULL"
    )
    fields = [
        "rowid",
        "role",
        column(pick(mcols, "updated_at", "created_at")),
        column(pick(mcols, "finished_at")),
        column(pick(mcols, "model")),
        parts,
    ]
    return ", ".join(fields)


def _newest(
    conn: sqlite3.Connection, select: str, session_id: str, role: str | None
) -> CrushMessage | None:
    where = "session_id = ?" + (" AND role = ?" if role else "")
    args: tuple[str, ...] = (session_id, role) if role else (session_id,)
    row = conn.execute(
        f"SELECT {select} FROM messages WHERE {where} ORDER BY rowid DESC LIMIT 1", args
    ).fetchone()
    if row is None:
        return None
    rowid, kind, updated, finished, model, parts = row
    if not isinstance(rowid, int):
        return None
    return CrushMessage(
        rowid=rowid,
        role=kind if isinstance(kind, str) else "",
        updated=parse_time(updated),
        finished=parse_time(finished),
        model=text(model),
        reason=finish_reason(parts),
        finish_known='"finished_at"' in select,
    )


def _result_seen(conn: sqlite3.Connection, mcols: set[str], child: CrushSession) -> bool:
    """Whether the parent holds the tool result of the call that started a sub-agent."""
    message_id, sep, call = child.native_id.partition("$$")
    if not sep or not call or "parts" not in mcols or child.parent is None:
        return False
    after = "(SELECT rowid FROM messages WHERE id = ?)" if "id" in mcols else "NULL"
    row = conn.execute(
        "SELECT 1 FROM messages WHERE session_id = ? AND role = 'tool' "
        f"AND rowid > COALESCE({after}, 0) AND instr(CAST(parts AS TEXT), ?) > 0 LIMIT 1",
        (child.parent, message_id, json.dumps(call))
        if "id" in mcols
        else (child.parent, json.dumps(call)),
    ).fetchone()
    return row is not None


def finish_reason(parts: object) -> str | None:
    """The reason of the ``finish`` part of a message's parts (JSON ``[{"type", "data"}]``);
    None when there is none or the parts cannot be read (zstd-compressed, garbage)."""
    items = parse_json(parts)
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type") == "finish":
            data = item.get("data")
            return text(data.get("reason"), 64) if isinstance(data, dict) else None
    return None
