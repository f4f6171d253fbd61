"""Zed's threads table (``threads/threads.db``, see ``zed.py`` for whose it is and the
sources it was built from): the rows a read takes, within its bounds, and what a thread's
data says (its model, busy or idle).

- ``threads(id, parent_id, folder_paths, folder_paths_order, summary, updated_at,
  data_type, data, created_at)``: ``id`` a UUID; ``parent_id`` the thread a sub-agent works
  for; times RFC 3339; ``data_type`` ``zstd`` (what Zed writes) or ``json`` (older rows);
  ``data`` the serialised ``DbThread``: ``messages`` (``{"User": ...}``, ``{"Agent":
  {"content": [..., {"ToolUse": {"id": ...}}], "tool_results": {id: ...}}}`` or
  ``"Resume"``), ``model`` (``{"provider", "model"}``), ``subagent_context``.
- Zed rewrites a thread's row on every change it notifies, many times a second while an
  answer streams; ``updated_at`` moves only when an answer (a model response, with its tool
  results) is flushed into ``messages``: a prompt alone keeps the old time.

Reading: the database is checked with one ``lstat`` a pass and read (read-only, immutable,
through :func:`read_database`) only when it changed; a read during which Zed wrote (a
``-journal`` beside it, or the file changed) is dropped and tried again. Of the
:data:`MAX_THREADS` threads updated last only the columns stored before ``data`` are read
(a column after it walks the blob's pages), and the data's length of the
:data:`MAX_SIZED` newest; the rest of a row only for a live candidate (updated since the
oldest Zed started, or changed since the last read), and its data when its row changed, at
most every :data:`DECODE_EVERY_S` (Zed rewrites it many times a second while an answer
streams): at most :data:`MAX_BLOB_BYTES` compressed and :data:`MAX_JSON_BYTES`
decompressed (``zstd_json``), charged to the pass's read budget.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from quintd.model import Status
from quintd.sources.files import PASS_BUDGET, ReadStats, identifier, parse_json, text
from quintd.sources.sqlite_files import columns, quote_name
from quintd.sources.sqlite_sessions import Database, MissingColumns, Session, column
from quintd.sources.times import parse_time
from quintd.sources.zstd_json import UNAVAILABLE, Undecodable, decompress

MAX_THREADS = 256  # threads read per pass (the ones updated last)
MAX_SIZED = 64  # ... of which the data's length is read (a rewrite without a new time)
# A thread's data is decoded at most this often: Zed rewrites it many times a second while
# an answer streams, and 1 MiB of JSON costs ~0.1 s to check and parse.
DECODE_EVERY_S = 5.0
MAX_DECODES = 32  # threads whose data is decoded in one read (the rest at the next)
MAX_BLOB_BYTES = 4 * 1024 * 1024  # a thread's compressed data beyond this is not read
MAX_JSON_BYTES = 8 * 1024 * 1024  # ... nor its JSON beyond this
CANCELLED = "Tool canceled by user"  # thread.rs TOOL_CANCELED_MESSAGE
GARBAGE = "garbage"  # a thread's data that is not what Zed writes


@dataclass
class Thread(Session):
    """A thread's row as the reads found it, and what its data said."""

    size: int = 0  # the data's length
    data_type: str = ""
    blob: bytes | None = None  # the data read for decoding (until after the read)
    decoded: bool = False  # its data was looked at (decodable or not) at this signature
    model: str | None = None
    state: Status | None = None  # from the last message; None: unknown
    seen_at: float | None = None  # monotonic: when a read first found it
    pending: bool = False  # a live candidate whose row's rest or data is still to read
    placed: bool = False  # its parent and creation time were read (live candidates only)
    decoded_at: float | None = None  # monotonic: when its data was last decoded

    def signature(self) -> tuple[object, ...]:
        return (self.updated, self.size, self.data_type)


def decode(thread: Thread, now: float) -> str | None:
    """Decode the data read for a thread into its model and state. None: done, or left
    for the next read (the pass's budget is spent); else why it could not be decoded:
    ``zstd_json.UNAVAILABLE`` (no zstandard module) or :data:`GARBAGE`."""
    blob, thread.blob = thread.blob, None
    granted = PASS_BUDGET.take(len(blob or b""))
    if blob is None or granted < len(blob):
        return None  # the pass's budget is spent: decoded at the next read
    thread.decoded, thread.pending, thread.decoded_at = True, False, now
    try:
        raw = blob if thread.data_type == "json" else decompress(blob, MAX_JSON_BYTES)
    except Undecodable as exc:
        return UNAVAILABLE if exc.reason == UNAVAILABLE else GARBAGE
    if len(raw) > MAX_JSON_BYTES:
        return GARBAGE
    PASS_BUDGET.take(len(raw))
    data = parse_json(raw)
    if not isinstance(data, dict):
        return GARBAGE
    thread.model = _model(data.get("model"))
    thread.state = _status(data.get("messages"))
    return None


def read_threads(
    conn: sqlite3.Connection,
    db: Database[Thread],
    horizon: float,
    now: float,
    stats: ReadStats,
) -> list[Thread]:
    """The threads updated last, by their columns before ``data`` only (a column after it
    walks the blob's pages, for every row); then, for the live candidates alone, the rest
    of the row and their data (at most every :data:`DECODE_EVERY_S`)."""
    cols = columns(conn, "threads")
    if not {"id", "updated_at"} <= cols:
        raise MissingColumns
    kind = column("data_type" if "data_type" in cols else None)
    stamp = quote_name("updated_at")
    rows = conn.execute(
        f"SELECT id, {stamp}, {kind} FROM threads ORDER BY {stamp} DESC LIMIT {MAX_THREADS}"
    ).fetchall()
    # The data's length tells a row rewritten with the same updated_at (an answer streaming,
    # a prompt): it costs a look at the blob's pages, so only for the threads updated last.
    sizes: dict[object, object] = {}
    if "data" in cols:
        sizes = dict(
            conn.execute(
                f"SELECT id, length(data) FROM threads ORDER BY {stamp} DESC LIMIT {MAX_SIZED}"
            ).fetchall()
        )
    threads: list[Thread] = []
    for row in rows:
        thread = _thread((*row, sizes.get(row[0])))
        if thread is None:
            stats.garbage += 1
            continue
        threads.append(thread)
    wanted: list[Thread] = []
    for thread in threads:
        old = db.sessions.get(thread.native_id)
        changed = old is not None and old.signature() != thread.signature()
        if old is not None:
            thread.seen_at, thread.decoded_at = old.seen_at, old.decoded_at
            thread.placed, thread.parent, thread.created = old.placed, old.parent, old.created
            thread.model, thread.state = old.model, old.state  # until decoded again
            if not changed:
                thread.decoded, thread.pending = old.decoded, old.pending
        # Live candidates only: used since the oldest process started, or written since the
        # last read (a prompt to an old thread), or left to read by a spent budget.
        candidate = thread.updated >= horizon or changed or thread.pending
        stale = not thread.decoded and "data" in cols
        if candidate and (stale or not thread.placed):
            thread.pending = True  # to read: its row's rest, its data
            if not thread.placed or due(thread, now):
                wanted.append(thread)
    rest = ", ".join(
        column(c if c in cols else None) for c in ("parent_id", "created_at", "data_type")
    )
    blob = f"CASE WHEN length(data) <= {MAX_BLOB_BYTES} THEN data END" if "data" in cols else "NULL"
    for thread in wanted[:MAX_DECODES]:
        decode = not thread.decoded and due(thread, now)
        found = conn.execute(
            f"SELECT {rest}, {blob if decode else 'NULL'} FROM threads WHERE id = ?",
            (thread.native_id,),
        )
        row = found.fetchone()
        if row is None:
            continue
        parent, created, _kind, data = row
        thread.placed, thread.parent = True, identifier(parent)
        created_s = parse_time(created)
        thread.created = created_s if created_s is not None else thread.updated
        if not decode:
            thread.pending = not thread.decoded  # its data at a later read
        elif isinstance(data, bytes | str) and len(data) > 0:
            thread.blob = data.encode("utf-8", "replace") if isinstance(data, str) else data
        else:
            thread.decoded, thread.pending = True, False  # no data, or too large
    return threads


def due(thread: Thread, now: float) -> bool:
    return thread.decoded_at is None or now - thread.decoded_at >= DECODE_EVERY_S


def _thread(row: Sequence[object]) -> Thread | None:
    native_id, updated, data_type, size = row
    ident = identifier(native_id)
    updated_s = parse_time(updated)
    if ident is None or updated_s is None:
        return None
    return Thread(
        native_id=ident,
        created=updated_s,
        updated=updated_s,
        size=size if isinstance(size, int) else 0,
        data_type=data_type if data_type in ("json", "zstd") else "zstd",
    )


# -- the data ---------------------------------------------------------------------------------


def _model(value: object) -> str | None:
    return text(value.get("model")) if isinstance(value, dict) else None


def _status(messages: object) -> Status | None:
    """Busy while a turn runs, from the last message; None if it cannot tell."""
    if not isinstance(messages, list):
        return None
    if not messages:
        return "idle"
    last = messages[-1]
    if last == "Resume" or (isinstance(last, dict) and "User" in last):
        return "busy"  # a prompt (or a retry) waiting for its answer
    agent = last.get("Agent") if isinstance(last, dict) else None
    if not isinstance(agent, dict):
        return None
    content = agent.get("content")
    results = agent.get("tool_results")
    if not isinstance(content, list):
        return None
    results = results if isinstance(results, dict) else {}
    calls = [
        item["ToolUse"].get("id")
        for item in content
        if isinstance(item, dict) and isinstance(item.get("ToolUse"), dict)
    ]
    # Calls whose results went back to the model: the turn goes on. Calls the user
    # cancelled (flush_pending_message gives them CANCELLED) end it.
    going_on = any(
        not _cancelled(results.get(call) if isinstance(call, str) else None) for call in calls
    )
    return "busy" if going_on else "idle"


def _cancelled(result: object) -> bool:
    if not isinstance(result, dict):
        return False
    content = result.get("content")
    return content == CANCELLED or content == {"Text": CANCELLED}
