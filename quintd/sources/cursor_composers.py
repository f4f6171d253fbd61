"""Cursor's composers: the agent and chat conversations of the Cursor editor, a part of its
``User`` directory's reader (``editors.py``).

Cursor is closed source. Its storage is known from third-party readers of real Cursor
databases, which this follows: michaeldhood/chatrxiv ``docs/cursor/storage-reference.md``
at ``d28513a810b19068cc68e126dc3cfe369ae45fa4`` (composerData ``_v: 10``, observed
2025-12-26) and pppp606/cursor-efficiency ``docs/vscdbRelation.md`` at
``0b7ee3c2ca9e083202db4d080ae295478e289da7`` (Cursor 0.50.5). **Unverified against a
running Cursor**: no editor runs here.

- ``User/globalStorage/state.vscdb`` (``vscdb.py``), table ``cursorDiskKV``, one key per
  conversation: ``composerData:<composerId>``, a JSON value: ``composerId``, ``createdAt``
  and ``lastUpdatedAt`` (ms), ``status`` (``none``, ``generating``, ``completed``,
  ``error``, ``aborted``), ``generatingBubbleIds``, ``isArchived``,
  ``modelConfig.modelName`` (``default``: Cursor picks; no model named),
  ``subComposerIds`` (sub-conversations), ``fullConversationHeadersOnly`` (its messages;
  older: ``conversation``), ``name``.
- which process: the editor's main process (helpers are no agents: ``platforms.py``). A
  conversation counts once it has a message and was written since that process started
  (``lastUpdatedAt``): an editor opened on a long history reports only what is used now.
- busy while ``status`` is ``generating`` (or a bubble is generating), idle otherwise;
  archived (``isArchived``) or deleted (the key gone): it ends.
- sub-conversations: the composers a conversation's ``subComposerIds`` name, each a child
  session, busy while generating, done once ``completed``, ``aborted`` or ``error``.
- model: ``modelConfig.modelName``. Name: none. Cursor names conversations itself from
  the first prompt and the readers above disagree on whether ``name`` is only the user's
  rename; nothing in the value tells which, so no name is sent.

Reading: only when the database changed (``WatchedDatabase``), at most every
:data:`READ_EVERY_S` (Cursor writes it many times a second while it generates). The keys
are listed from their index with their rowids (a key's rowid grows each time it is
written); only the :data:`FRESH` most recently written composers and those already known
to be live have their value looked at, a few paths each (``json_extract``): a history of
thousands of conversations is never read.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.attribution import Pass
from quintd.sources.changes import lstat_signature
from quintd.sources.files import identifier, parse_json, text
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.sqlite_sessions import MissingColumns, WatchedDatabase
from quintd.sources.times import START_SLACK_S, parse_time
from quintd.sources.vscdb import (
    DISK_KV,
    STATE_DB,
    Unusable,
    has_table,
    json_fields,
    keys_with_prefix,
)

PREFIX = "composerData:"
FRESH = 64  # the most recently written composers whose values one read looks at
MAX_LIVE = 256  # composers followed at once (live ones and their sub-conversations)
MAX_SUBS = 32  # sub-conversations of one conversation
READ_EVERY_S = 2.0
# A conversation archived or deleted is reported closed this long (``over``): the editor's
# process, left with none, is then a session of its own again.
CLOSED_S = 60.0
# Cursor's "Auto": it picks the model per request; the composer names none.
NO_MODEL = frozenset({"default", "auto"})
DONE = frozenset({"completed", "aborted", "error"})
PATHS = (
    "$.composerId",
    "$.status",
    "$.isArchived",
    "$.createdAt",
    "$.lastUpdatedAt",
    "$.modelConfig.modelName",
    "$.subComposerIds",
    "$.generatingBubbleIds[0]",
    "$.fullConversationHeadersOnly[0].type",
    "$.conversation[0].type",
)


@dataclass
class Composer:
    native_id: str
    status: str | None
    archived: bool
    created: float | None  # epoch seconds
    updated: float | None
    model: str | None
    subs: tuple[str, ...]
    generating: bool
    has_messages: bool
    last_write: float | None = None  # monotonic: when it last worked, after the first read

    @property
    def busy(self) -> bool:
        return self.status == "generating" or self.generating

    def worked_since(self, old: Composer) -> bool:
        return (self.updated, self.busy, self.status) != (old.updated, old.busy, old.status)


@dataclass
class _Read:
    """What one read found: every composer key's rowid, and the values looked at."""

    rowids: dict[str, int]
    values: dict[str, list[Any] | Unusable] = field(default_factory=dict)


class CursorComposers(Reader):
    platform = "cursor"

    def __init__(self, user_dir: Path, context: ReaderContext) -> None:
        super().__init__(user_dir, context)
        self._path = user_dir / "globalStorage" / STATE_DB
        self._db = WatchedDatabase(user_dir, self._path, self.stats)
        self._rowids: dict[str, int] = {}
        self._composers: dict[str, Composer] = {}  # live, and their sub-conversations
        self._read_once = False
        self._read_at = float("-inf")
        self._closed: dict[str, float] = {}  # archived or deleted: when (monotonic)

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self._path.parent]

    def flat_dirs(self) -> set[Path]:
        # globalStorage/ also holds every extension's directory: its own files only.
        return {self._path.parent}

    def changed(self, path: Path) -> None:
        if path.parent == self._path.parent and path.name.startswith(STATE_DB):
            self._db.poll()  # the database, its journal or its WAL

    def poll(self) -> None:
        self._db.poll()

    def has_registry_dir(self) -> bool:
        return lstat_signature(self._path) is not None

    def begin(self, now: Pass) -> None:
        self._closed = {k: t for k, t in self._closed.items() if now.now - t < CLOSED_S}
        if not now.processes or now.now - self._read_at < READ_EVERY_S:
            return  # what changed meanwhile stays due
        seen = self._db.due(now.now)
        if seen is None:
            return
        if lstat_signature(self._path) is None:
            self._db.skip(seen)
            self._composers, self._rowids = {}, {}
            return
        self._read_at = now.now
        known, live, first = dict(self._rowids), set(self._composers), not self._read_once
        try:
            found = self._db.read(seen, now.now, lambda c: _query(c, known, live, first))
        except MissingColumns:
            self._composers, self._rowids = {}, {}
            return
        if found is not None:
            self._apply(found, now)

    def facts(self, proc: AgentProcess) -> list[ConversationFacts] | None:
        children = {sub for c in self._composers.values() for sub in c.subs}
        since = proc.start_time - START_SLACK_S
        live = sorted(
            (
                c
                for c in self._composers.values()
                if c.native_id not in children
                and c.has_messages
                and not c.archived
                and (c.updated or 0.0) >= since
            ),
            key=lambda c: (c.created or c.updated or 0.0, c.native_id),
        )
        closed = [
            ConversationFacts(native_id=k, over=True, owner_uid=self._db.owner)
            for k in self._closed
        ]
        return [*closed, *(self._conversation(c) for c in live)] or None

    # -- reading ----------------------------------------------------------------------------

    def _apply(self, found: _Read, now: Pass) -> None:
        first = not self._read_once
        self._read_once = True
        before = self._live(now.horizon)
        self._rowids = found.rowids
        composers = {k: c for k, c in self._composers.items() if k in found.rowids}
        for native_id, values in found.values.items():
            if isinstance(values, Unusable):
                if values is Unusable.TOO_BIG:
                    self.stats.refused += 1
                elif values is Unusable.NOT_JSON:
                    self.stats.garbage += 1
                composers.pop(native_id, None)
                continue
            composer = _composer(native_id, values)
            if composer is None:
                self.stats.garbage += 1
                composers.pop(native_id, None)
                continue
            old = composers.get(native_id)
            if old is not None:
                composer.last_write = now.now if composer.worked_since(old) else old.last_write
            elif not first:
                composer.last_write = now.now  # new since the first read: work
            composers[native_id] = composer
        # Kept: the conversations written since the horizon (archived ones too: their
        # sub-conversations are theirs, never conversations of their own), and their
        # sub-conversations.
        top = {k: c for k, c in composers.items() if (c.updated or c.created or 0.0) >= now.horizon}
        subs = {s for c in top.values() for s in c.subs}
        kept = {k: c for k, c in composers.items() if k in top or k in subs}
        self._composers = dict(sorted(kept.items(), key=lambda kv: -found.rowids[kv[0]])[:MAX_LIVE])
        for native_id in before - self._live(now.horizon):
            gone = composers.get(native_id)
            if gone is None or gone.archived:
                self._closed[native_id] = now.now

    def _live(self, horizon: float) -> set[str]:
        """The conversations (not sub-conversations) used since the horizon."""
        children = {sub for c in self._composers.values() for sub in c.subs}
        return {
            k
            for k, c in self._composers.items()
            if k not in children
            and c.has_messages
            and not c.archived
            and (c.updated or 0.0) >= horizon
        }

    def _conversation(self, composer: Composer) -> ConversationFacts:
        subagents = []
        for sub_id in composer.subs:
            sub = self._composers.get(sub_id)
            if sub is None or sub.archived:
                continue
            subagents.append(
                SubagentFacts(
                    agent_id=sub.native_id,
                    done=not sub.busy and sub.status in DONE,
                    last_write=sub.last_write,
                    status=_status(sub),
                    model=sub.model,
                )
            )
        return ConversationFacts(
            native_id=composer.native_id,
            status=_status(composer),
            model=composer.model,
            last_write=composer.last_write,
            subagents=tuple(subagents),
            owner_uid=self._db.owner,
        )


def _query(conn: sqlite3.Connection, known: dict[str, int], live: set[str], first: bool) -> _Read:
    """Runs inside ``read_database``: the composer keys' rowids, and the values of those
    written since the last read (on the first read: the most recent) and of those live."""
    if not has_table(conn, DISK_KV):
        raise MissingColumns(DISK_KV)
    rowids = {}
    for row in keys_with_prefix(conn, DISK_KV, PREFIX):
        native_id = identifier(row.key[len(PREFIX) :])
        if native_id is not None:
            rowids[native_id] = row.rowid
    written = [k for k, rowid in rowids.items() if first or known.get(k) != rowid]
    fresh = sorted(written, key=lambda k: -rowids[k])[:FRESH]
    found = _Read(rowids)
    for native_id in dict.fromkeys([*fresh, *sorted(k for k in live if k in rowids)]):
        found.values[native_id] = json_fields(conn, DISK_KV, PREFIX + native_id, PATHS)
    # The sub-conversations of those: read with their parents.
    for values in list(found.values.values()):
        if isinstance(values, Unusable):
            continue
        for sub in _ids(values[6])[:MAX_SUBS]:
            if sub in rowids and sub not in found.values:
                found.values[sub] = json_fields(conn, DISK_KV, PREFIX + sub, PATHS)
    return found


def _composer(native_id: str, values: list[Any]) -> Composer | None:
    """A composer from its value's paths (:data:`PATHS`), or None when it is not one."""
    composer_id, status, archived, created, updated, model, subs, generating = values[:8]
    if composer_id is not None and composer_id != native_id:
        return None  # a value stored under another composer's key
    if status is not None and not isinstance(status, str):
        return None
    name = text(model, 100)
    return Composer(
        native_id=native_id,
        status=text(status, 32),
        archived=archived is True or archived == 1,
        created=parse_time(created),
        updated=parse_time(updated),
        model=None if name is None or name.lower() in NO_MODEL else name,
        subs=tuple(s for s in _ids(subs) if s != native_id),
        generating=generating is not None,
        has_messages=values[8] is not None or values[9] is not None,
    )


def _ids(value: Any) -> list[str]:
    """Composer ids from ``subComposerIds`` (JSON text of a list, as ``json_extract`` gives
    an array)."""
    if isinstance(value, str):
        value = parse_json(value, 64 * 1024)
    if not isinstance(value, list):
        return []
    return [i for i in (identifier(v) for v in value[: MAX_SUBS * 2]) if i is not None]


def _status(composer: Composer) -> Status:
    return "busy" if composer.busy else "idle"
