"""The queries on OpenCode's database (run inside ``read_database``'s short read-only
connection, see ``opencode_db.py``): which sessions changed since the last read, each
one's row, and what its latest messages say (busy, its model, its running sub-agents).

Tables (``opencode.db``, WAL mode, hardly ever checkpointed):

- ``session``: one row per conversation, made at its first prompt: ``id`` (``ses_...``),
  ``parent_id`` (a sub-agent: the conversation it works for), ``directory`` (the TUI's cwd),
  ``title`` (``New session - <ISO time>`` until a title is generated, or the user's rename),
  ``model`` (JSON ``{id, providerID}``), ``time_created``, ``time_updated``,
  ``time_archived`` (ms since the epoch);
- ``message``: ``session_id``, ``time_created``, ``data`` JSON: ``role`` user/assistant; one
  answer per model call, with ``modelID`` and, once finished, ``time.completed`` (or an
  ``error``);
- ``part``: ``message_id``, ``data`` JSON; a tool call is ``type: tool`` with ``tool``,
  ``state.status`` and, for ``task`` (a sub-agent), ``state.metadata.sessionId``;
- ``event``: an append-only log of every change, in rowid order; ``aggregate_id`` is the
  session the change belongs to.

Busy: the latest message is a prompt not answered yet, or an answer not finished (no
``time.completed`` and no ``error``) or with a tool call pending or running. The message
JSON is read by SQLite's JSON functions (it never comes to Python); an SQLite without them
gives no status.
"""

from __future__ import annotations

import re
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from quintd.sources.files import identifier, parse_object, path_text, text
from quintd.sources.sqlite_files import columns, pick, quote_name
from quintd.sources.sqlite_sessions import MissingColumns
from quintd.sources.times import parse_time as epoch

MAX_IDS_PER_QUERY = 500
_PLACEHOLDER = re.compile(r"^(New|Child) session - \d{4}-\d\d-\d\dT[0-9:.]+Z$")


@dataclass
class Session:
    id: str
    parent: str | None
    directory: str | None
    title: str | None
    model: str | None
    created: float  # epoch seconds
    updated: float
    archived: bool
    prompted: float  # the latest prompt (epoch seconds); its creation if none is known
    running: bool = False
    tasks: frozenset[str] = frozenset()  # child sessions its running task calls drive
    last_write: float | None = None  # monotonic: when it last changed after the first read
    stopped_at: float | None = None  # monotonic: when it was first seen stopped after running


@dataclass
class Activity:
    running: bool = False
    model: str | None = None
    prompted: float | None = None
    tasks: frozenset[str] = frozenset()


@dataclass
class Batch:
    """What one read found."""

    rows: list[Session] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # ids the read was asked about
    full: bool = False
    event_rowid: int | None = None
    session_rowid: int = 0
    json_ok: bool = True
    bad_rows: int = 0


def read_changes(
    conn: sqlite3.Connection,
    *,
    full: bool,
    horizon_ms: int,
    event_rowid: int | None,
    session_rowid: int,
    wanted: set[str],
    known: set[str],
    json_ok: bool,
) -> Batch:
    tables = {
        str(name) for (name,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
    }
    if "session" not in tables:
        raise MissingColumns("no session table")
    available = columns(conn, "session")
    required = [pick(available, name) for name in ("id", "directory", "time_created")]
    updated = pick(available, "time_updated", "time_created")
    if None in required or updated is None:
        raise MissingColumns("the session table lacks id, directory or time_created")
    chosen = [
        "id",
        pick(available, "parent_id", "parentID"),
        "directory",
        pick(available, "title"),
        pick(available, "model"),
        "time_created",
        updated,
        pick(available, "time_archived"),
    ]
    select = ", ".join(quote_name(c) if c else "NULL" for c in chosen)
    events = "event" in tables and "aggregate_id" in columns(conn, "event")
    batch = Batch(json_ok=json_ok)
    # The high-water marks first: a change made while this read runs is read next time.
    top_session = _scalar(conn, "SELECT max(rowid) FROM session")
    top_event = _scalar(conn, "SELECT max(rowid) FROM event") if events else None
    batch.session_rowid = top_session
    batch.event_rowid = top_event
    if top_event is None or event_rowid is None:
        full = True  # no change log (an older OpenCode), or the first read
    elif top_event < event_rowid or top_session < session_rowid:
        full = True  # rows were deleted at the end: rowids may be used again
    rows: list[tuple[Any, ...]]
    if full:
        batch.full = True
        rows = conn.execute(
            f"SELECT {select} FROM session WHERE {quote_name(updated)} >= ?", (horizon_ms,)
        ).fetchall()
        found = {r[0] for r in rows}
        rows += _by_ids(conn, select, [i for i in wanted if i not in found])
    else:
        changed = {
            str(a)
            for (a,) in conn.execute(
                "SELECT DISTINCT aggregate_id FROM event WHERE rowid > ? AND rowid <= ?",
                (event_rowid, top_event),
            )
            if isinstance(a, str)
        }
        changed |= {
            str(i)
            for (i,) in conn.execute(
                "SELECT id FROM session WHERE rowid > ? AND rowid <= ?",
                (session_rowid, top_session),
            )
            if isinstance(i, str)
        }
        batch.changed = changed & known
        rows = _by_ids(conn, select, sorted(changed | wanted))
    for raw in rows:
        session = _session(raw)
        if session is None:
            batch.bad_rows += 1
            continue
        if batch.json_ok:
            try:
                activity = read_activity(conn, session.id)
            except sqlite3.OperationalError as exc:
                if "json" not in str(exc).lower():
                    raise
                batch.json_ok = False  # an SQLite without JSON functions: no status
                activity = None
            if activity is not None:
                session.running = activity.running
                session.model = activity.model or session.model
                session.prompted = activity.prompted or session.created
                session.tasks = activity.tasks
        batch.rows.append(session)
    return batch


def _scalar(conn: sqlite3.Connection, sql: str) -> int:
    value = conn.execute(sql).fetchone()[0]
    return value if isinstance(value, int) else 0


def _by_ids(conn: sqlite3.Connection, select: str, ids: Sequence[str]) -> list[tuple[Any, ...]]:
    rows: list[tuple[Any, ...]] = []
    for start in range(0, len(ids), MAX_IDS_PER_QUERY):
        chunk = ids[start : start + MAX_IDS_PER_QUERY]
        marks = ", ".join("?" * len(chunk))
        rows += conn.execute(f"SELECT {select} FROM session WHERE id IN ({marks})", chunk)
    return rows


def _session(raw: Sequence[Any]) -> Session | None:
    sid, parent, directory, title, model, created, updated, archived = raw
    sid = identifier(sid)
    created_at = epoch(created) if isinstance(created, int | float) else None
    updated_at = epoch(updated) if isinstance(updated, int | float) else None
    if sid is None or created_at is None:
        return None
    name = text(title)
    return Session(
        id=sid,
        parent=identifier(parent),
        directory=path_text(directory),
        title=None if name is None or _PLACEHOLDER.match(name) else name,
        model=_model_id(model),
        created=created_at,
        updated=max(updated_at or created_at, created_at),
        archived=archived is not None,
        prompted=created_at,
    )


def _model_id(value: Any) -> str | None:
    if not isinstance(value, str) or len(value) > 64 * 1024:
        return None
    data = parse_object(value.encode("utf-8", "replace"))
    return text(data.get("id")) if data is not None else None


# One row per call: the latest message, its own fields extracted by SQLite (the JSON never
# comes to Python). A row whose data is not JSON yields NULLs, never an error.
_LATEST = """
SELECT id,
       CASE WHEN json_valid(data) THEN json_extract(data, '$.role') END,
       CASE WHEN json_valid(data) THEN json_type(data, '$.time.completed') END,
       CASE WHEN json_valid(data) THEN json_type(data, '$.error') END,
       CASE WHEN json_valid(data)
            THEN coalesce(json_extract(data, '$.modelID'), json_extract(data, '$.model.modelID'))
       END
FROM message WHERE session_id = ? ORDER BY time_created DESC, id DESC LIMIT 1
"""
_PROMPTED = """
SELECT time_created FROM message
WHERE session_id = ? AND CASE WHEN json_valid(data) THEN json_extract(data, '$.role') END = 'user'
ORDER BY time_created DESC, id DESC LIMIT 1
"""
_TOOLS = """
SELECT json_extract(data, '$.tool'), json_extract(data, '$.state.status'),
       json_extract(data, '$.state.metadata.sessionId')
FROM part
WHERE message_id = ? AND CASE WHEN json_valid(data) THEN json_extract(data, '$.type') END = 'tool'
"""


def read_activity(conn: sqlite3.Connection, sid: str) -> Activity:
    found = Activity()
    latest = conn.execute(_LATEST, (sid,)).fetchone()
    if latest is None:
        return found  # no message yet: nothing asked of it
    message_id, role, completed, error, model = latest
    found.model = text(model)
    prompted = conn.execute(_PROMPTED, (sid,)).fetchone()
    if prompted is not None and isinstance(prompted[0], int | float):
        found.prompted = epoch(prompted[0])
    if role == "user":
        found.running = True  # a prompt, its answer not begun
    elif role == "assistant":
        tasks = set()
        pending = False
        for tool, status, child in conn.execute(_TOOLS, (message_id,)):
            if status in ("pending", "running"):
                pending = True
                if tool == "task" and identifier(child):
                    tasks.add(str(child))
        found.tasks = frozenset(tasks)
        # An answer that failed (aborted, an API error) is over, finished or not.
        unfinished = completed in (None, "null") and error in (None, "null")
        found.running = unfinished or pending
    return found
