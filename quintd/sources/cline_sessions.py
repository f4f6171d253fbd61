"""Cline CLI's sessions database, as 3.0.65 writes it (see ``cline.py`` for the processes
and which conversation is whose): its rows, read with bounded queries.

``data/db/sessions.db``: SQLite in WAL mode, never checkpointed while Cline runs (the rows
live in the ``-wal``); read only through ``read_database``, re-read when a file event (or,
unwatched, a stat of the database and its ``-wal``) says it changed, from the last
``updated_at`` read (ISO ms text); rows last changed before the oldest running CLI
started are not read. Table ``sessions``:

- ``session_id``: ``<ms epoch>_<5 random>``; a sub-agent ``<root>__<agentId>``, a teammate
  task ``<root>__teamtask__<agent>__<nanoid>`` (``is_subagent = 1``,
  ``parent_session_id`` = the root, the same ``pid``): child sessions of the root's
  session (agent id: the part after ``<root>__``), done when terminal.
- ``status``: ``running`` (busy), ``pending`` (waiting for a tool approval), ``idle``
  (also after Esc); terminal ``completed`` (``/clear``, ``/quit``, one-shot done, hub
  stopped), ``cancelled`` (``/quit`` after Esc), ``failed`` (Cline's stale-session
  reconciler: the pid had died). Terminal rows are reported idle while still current.
- The title of a row with no prompt of its own (a ``/fork``: "<first prompt> (fork)") is
  compared with the prompt of the row it was forked from; with no prompt to compare, it is
  withheld.
- ``status_lock`` counts status writes (seen: +1 to ``running`` or for a rename or
  ``/clear``, +2 to ``idle``, +2 or +3 from ``idle`` to ``pending``): grown by three or
  more since the last read while the row is not ``running`` now, a turn began between
  two passes, unseen: that is work (``last_write``).
- ``json(metadata_json).title``: the first prompt, verbatim, until ``cline history
  update --title`` renames it. Only a renamed title is a name: prompt text never leaves
  the machine (the title is compared with the row's ``prompt`` inside SQLite; neither is
  kept). ``model``: the model.
"""

from __future__ import annotations

import re
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from quintd.model import format_timestamp
from quintd.sources.files import MAX_JSON_FILE_BYTES, identifier, parse_object, path_text, text
from quintd.sources.sqlite_files import columns, quote_name
from quintd.sources.sqlite_sessions import MissingColumns
from quintd.sources.times import parse_time

MAX_ROWS = 10_000  # rows read per query (the newest)
_TERMINAL = frozenset({"completed", "cancelled", "failed"})
_ID_TIME = re.compile(r"^(\d{13})_")
_REQUIRED = ("session_id", "pid", "status")
_OPTIONAL = (
    "started_at",
    "updated_at",
    "cwd",
    "workspace_root",
    "source",
    "model",
    "parent_session_id",
    "is_subagent",
    "agent_id",
    "status_lock",
)


@dataclass
class Row:
    sid: str
    pid: int | None
    status: str
    created: float | None  # epoch seconds: the id's time, else started_at
    updated: float | None
    cwd: str | None
    workspace: str | None
    source: str | None
    model: str | None
    title: str | None
    parent: str | None  # the root conversation, for a sub-agent or teammate
    agent_id: str | None
    lock: int | None
    last_write: float | None = None

    @property
    def terminal(self) -> bool:
        return self.status in _TERMINAL

    @property
    def last_seen(self) -> float:
        return max(self.created or 0.0, self.updated or 0.0)


def iso_time(seconds: float) -> str:
    """Epoch seconds as Cline writes its timestamps (ISO, ms, ``Z``): they compare as text."""
    try:
        return format_timestamp(datetime.fromtimestamp(max(seconds, 0.0), UTC))
    except (OverflowError, OSError, ValueError):
        return ""


def query_sessions(conn: sqlite3.Connection, since: str) -> list[dict[str, Any]]:
    have = columns(conn, "sessions")
    if not set(_REQUIRED) <= have:
        raise MissingColumns(f"sessions lacks {sorted(set(_REQUIRED) - have)}")
    names = [*_REQUIRED, *_OPTIONAL]
    select = [quote_name(n) if n in have else "NULL" for n in names]
    names.append("metadata")
    select.append(
        f"CASE WHEN length(metadata_json) <= {MAX_JSON_FILE_BYTES} THEN metadata_json END"
        if "metadata_json" in have
        else "NULL"
    )
    # A title found in the first prompt (which Cline wraps in <user_input ...>) is the
    # prompt: it never leaves the machine; a title the user gave with `cline history
    # update --title` does.
    # A fork (`/fork`) has no prompt of its own and the title "<title> (fork)": it is
    # compared with the prompt of the conversation it was forked from. Where no prompt is
    # known, the title is taken for one: withheld.
    names.append("title_is_prompt")
    select.append(
        "CASE WHEN json_valid(metadata_json) THEN coalesce(instr(coalesce(prompt, "
        "(SELECT f.prompt FROM sessions f WHERE f.session_id = "
        "json_extract(sessions.metadata_json, '$.fork.forkedFromSessionId'))), "
        "replace(json_extract(metadata_json, '$.title'), ' (fork)', '')) > 0, 1) END"
        if {"metadata_json", "prompt"} <= have
        else "NULL"
    )
    sql = f"SELECT {', '.join(select)} FROM sessions"
    args: tuple[str, ...] = ()
    if "updated_at" in have:
        sql += " WHERE updated_at >= ? ORDER BY updated_at DESC"
        args = (since,)
    else:
        sql += " ORDER BY rowid DESC"  # no cursor: the newest rows, every time
    sql += f" LIMIT {MAX_ROWS}"
    found = [dict(zip(names, values, strict=True)) for values in conn.execute(sql, args)]
    found.reverse()  # oldest first
    return found


def parse_row(raw: dict[str, Any]) -> Row | None:
    sid = identifier(raw.get("session_id"))
    status = raw.get("status")
    if sid is None or not isinstance(status, str) or len(status) > 32:
        return None
    pid = raw.get("pid")
    parent = identifier(raw.get("parent_session_id"))
    if parent is None and raw.get("is_subagent") == 1 and "__" in sid:
        parent = sid.split("__", 1)[0]
    if parent == sid:
        parent = None
    agent_id = identifier(raw.get("agent_id"))
    if parent is not None and sid.startswith(parent + "__"):
        agent_id = sid[len(parent) + 2 :]
    meta = raw.get("metadata")
    data = parse_object(meta.encode("utf-8", "replace")) if isinstance(meta, str) else None
    match = _ID_TIME.match(sid)
    lock = raw.get("status_lock")
    return Row(
        sid=sid,
        pid=pid if isinstance(pid, int) and not isinstance(pid, bool) else None,
        status=status.lower(),
        created=int(match.group(1)) / 1000 if match else parse_time(raw.get("started_at")),
        updated=parse_time(raw.get("updated_at")),
        cwd=path_text(raw.get("cwd")),
        workspace=path_text(raw.get("workspace_root")),
        source=text(raw.get("source"), 64),
        model=text(raw.get("model")),
        title=(
            text(data.get("title"))
            if data is not None and raw.get("title_is_prompt") != 1
            else None
        ),
        parent=parent,
        agent_id=agent_id,
        lock=lock if isinstance(lock, int) and not isinstance(lock, bool) else None,
    )
