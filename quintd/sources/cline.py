"""Cline CLI 3.x, as 3.0.65 (``@cline/core`` 0.0.86) really behaves: verified against the
files and process trees the real CLI left (``tests/fixtures/cline``; its README tells the
run). ``$CLINE_DIR`` (else ``~/.cline``) is the directory, as ``@cline/shared``'s
storage paths have it (``CLINE_DATA_DIR`` / ``CLINE_DB_DATA_DIR`` overrides are not
followed).

Processes (``cline_processes.py``): the npm wrapper is the agent process; a hub daemon
(``--cline-hub-daemon``) is never a session, its conversations go to the CLIs they serve.
Which process a conversation belongs to:

- local mode (no live hub when the CLI started): the CLI's own Bun child runs it, and
  ``sessions.pid`` is that child's pid (a direct child of the wrapper, not a hub), or the
  CLI's own pid. The row must have changed since that CLI started (a row a dead process
  left, whose pid was reused, is not its). Such a CLI holds ``sessions.db`` open.
- hub mode (a hub was running): the hub runs it, ``sessions.pid`` is the hub's pid, and
  the CLI (it has only ``cline.log`` open) is named nowhere on disk. The row goes to a CLI
  in its directory (``cwd``/``workspace_root``) started before the conversation was
  created (the id's millisecond prefix: in hub mode ~1 s after the CLI started, whenever
  the first prompt comes) that is not in local mode: of several, the latest one started at
  most 10 s before that has no conversation yet; else the only one; else the only one
  whose conversation has ended (``/clear``); else none (counted in ``ambiguous``). The
  row's pid must be a live hub (``--cline-hub-daemon`` in its argv); when the hub's
  discovery record ``data/locks/hub/production.json`` (``pid``, ``startedAt``) names that
  pid, the conversation must be younger than that hub (a row left by a dead hub whose pid
  was reused is not bound). The hub's events database links sessions to client ids, but
  no client id to a pid (``hub.client.registered`` carries none): it is not read.
- Only ``source = 'cli'`` rows are bound (the hub also runs desktop, IDE and scheduled
  sessions). A row older than every running CLI is bound only when it is back at work
  (``cline --id`` resumes it: placed by its ``updated_at``).

``data/db/sessions.db``: SQLite in WAL mode, its table ``sessions`` read as
``cline_sessions.py`` says (what each column means, the rows read when it changed).

Conversations. A row is inserted at the conversation's first prompt (its id from the CLI's
start), so a CLI is its process's session until then, and its first conversation takes that
session over. ``/clear`` marks the old row ``completed`` and the next prompt inserts the
new one: a current row closed for ``CLOSE_GRACE_S`` while its CLI runs is over (its session
ends; the CLI is a session of its own again, which its next conversation takes over). Not
at once: ``/quit`` marks it completed a moment before the process exits. A CLI's
conversation is the row bound to it last. Rows of crashed CLIs stay ``running``/``idle``
(their pid dead, or the live hub's): they bind to nothing new, and the CLI's exit ends its
session. Bad rows (ids, statuses) are counted in ``stats.garbage``, as is a table without
``session_id``, ``pid`` or ``status`` (then nothing is known: the CLI is its process's
session)."""

from __future__ import annotations

from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.attribution import Pass, first_conversation
from quintd.sources.cline_processes import ClineProcesses, is_hub
from quintd.sources.cline_rows import SessionRows
from quintd.sources.cline_sessions import Row
from quintd.sources.registry import spec
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.sqlite_sessions import WatchedDatabase, lstat_identity
from quintd.sources.times import START_SLACK_S

DB = Path("data") / "db" / "sessions.db"
MAX_UNPLACED = 1_000
_STATUSES: dict[str, Status] = {"running": "busy", "pending": "waiting", "idle": "idle"}
CLOSE_GRACE_S = 3.0  # a current row closed this long while its CLI runs: /clear, not /quit


class ClineState(Reader):
    """One ``~/.cline`` directory."""

    platform = "cline"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._db = root / DB
        self.ambiguous = 0  # hub conversations no rule could give to one CLI
        # Read when it changed (an event, or unwatched a stat each pass); a read that
        # failed (locked, torn) is tried again the next pass.
        self._file = WatchedDatabase(root, self._db, self.stats, identity=lstat_identity)
        self._table = SessionRows(self._db, self._file, self.stats, self._clock)
        self._again = False  # read it (from the cursor) whatever its identity
        self._closed_at: dict[str, float] = {}  # a current row: when it was first seen closed
        self._closing: set[str] = set()  # closed, not yet over
        self._bound: dict[str, tuple[int, int]] = {}  # root row -> its process's key
        self._order: dict[str, int] = {}  # root row -> when it was bound (sequence)
        self._sequence = 0
        self._unplaced: dict[str, float] = {}  # root rows to bind -> their event time
        self._dirty_binding = False
        self._procs: dict[tuple[int, int], AgentProcess] = {}
        self._clis = ClineProcesses(root, self._db, self.stats)
        self._horizon = 0.0
        self._facts: dict[tuple[int, int], ConversationFacts | None] = {}

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self._db.parent]

    def has_registry_dir(self) -> bool:
        return self._db.parent.is_dir()

    def changed(self, path: Path) -> None:
        if path.parent == self._db.parent and path.name.startswith(DB.name):
            self._file.dirty = True

    def poll(self) -> None:
        self._file.poll()

    def begin(self, now: Pass) -> None:
        processes = now.processes
        live = {p.key: p for p in processes}
        new_procs = live.keys() - self._procs.keys()
        if live.keys() != self._procs.keys():
            self._processes_changed(live, new_procs)
        seen = self._file.due(now.now, force=self._again)
        if seen is not None:
            self._again = False
            self._read(seen, now.now)
        if self._unplaced and (self._dirty_binding or new_procs):
            self._place()
        self._dirty_binding = False
        if self._closing:
            # A closed conversation becomes over with time alone: look again (the facts
            # of this pass add it back while it is still closing).
            self._closing = set()
            self._facts.clear()

    def _processes_changed(
        self, live: dict[tuple[int, int], AgentProcess], new: set[tuple[int, int]]
    ) -> None:
        self._procs = live
        self._clis.update(self.now, live, new)
        for key in [k for k in self._facts if k not in live]:
            del self._facts[key]
        for sid in [sid for sid, key in self._bound.items() if key not in live]:
            del self._bound[sid]
            self._order.pop(sid, None)
        self._facts.clear()
        horizon = self.now.horizon
        if self._table.read_older(horizon):
            self._again = True  # an older CLI appeared: read its rows too
        moved_on = horizon > self._horizon
        self._horizon = horizon
        if moved_on:
            self._forget()

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        if proc.key in self._facts:
            return self._facts[proc.key]
        found = None if proc.key in self._clis.hubs else self._conversation(proc)
        self._facts[proc.key] = found
        return found

    # -- reading --------------------------------------------------------------------------

    @property
    def truncated(self) -> int:
        """Queries that hit MAX_ROWS."""
        return self._table.truncated

    def _read(self, seen: object, now: float) -> None:
        taken = self._table.read(seen, now, self._horizon)
        if taken is None:
            return
        for row, before in taken:
            self._to_place(row, before)
        self._facts.clear()

    def _to_place(self, row: Row, before: Row | None) -> None:
        """A root row read: to be bound to its CLI when it is new or back at work."""
        if row.parent is not None:
            return
        if row.source not in (None, "cli"):
            return  # a desktop, IDE or scheduled session: no CLI runs it
        # A row older than every CLI is placed only if it is back at work (resumed:
        # ``cline --id``), by when it changed; a finished one (reconciled) is history.
        old = (row.created or 0.0) < self._horizon
        reopened = before is not None and before.terminal and not row.terminal
        moved = before is not None and before.pid != row.pid
        if (before is None and not (old and row.terminal)) or reopened or moved:
            if moved or reopened:
                self._bound.pop(row.sid, None)
            when = row.created if before is None and not old else row.updated
            if when is not None and len(self._unplaced) < MAX_UNPLACED:
                self._unplaced[row.sid] = when
                self._dirty_binding = True

    def _forget(self) -> None:
        """Rows that cannot belong to a running CLI: last changed before the oldest one
        started, and not bound."""
        for sid in self._table.forget(self._horizon, self._bound):
            self._unplaced.pop(sid, None)
        for sid in [s for s, when in self._unplaced.items() if when < self._horizon]:
            del self._unplaced[sid]

    # -- binding rows to processes ----------------------------------------------------------

    def _place(self) -> None:
        for sid, when in sorted(self._unplaced.items(), key=lambda item: item[1]):
            row = self._table.rows.get(sid)
            if row is None:
                del self._unplaced[sid]
                continue
            key = self._owner_of(row, when)
            if key is None:
                continue  # its process may not be seen yet: tried again with new ones
            del self._unplaced[sid]
            self._sequence += 1
            self._bound[sid] = key
            self._order[sid] = self._sequence
        self._facts.clear()

    def _owner_of(self, row: Row, when: float) -> tuple[int, int] | None:
        if row.pid is None or row.pid <= 0:
            return None
        clis = [p for p in self._procs.values() if p.key not in self._clis.hubs]
        for proc in clis:
            if row.pid in self._clis.runner_pids(self.now, proc):
                if row.last_seen >= proc.start_time - START_SLACK_S:
                    self._clis.seen_local(proc)
                    return proc.key
                return None  # a row of an earlier process with this pid
        return self._hub_owner(row, row.pid, when, clis)

    def _hub_owner(
        self, row: Row, pid: int, when: float, clis: list[AgentProcess]
    ) -> tuple[int, int] | None:
        if not is_hub(self.now, pid):
            return None  # a dead pid (a crashed CLI), or reused by something else
        hub_started = self._clis.hub_started(pid)
        if hub_started is not None and when < hub_started - START_SLACK_S:
            return None  # older than the hub that has this pid now
        candidates = [
            p
            for p in clis
            if p.start_time - START_SLACK_S <= when and not self._clis.runs_locally(self.now, p)
        ]
        places = {row.cwd, row.workspace} - {None}
        here = [p for p in candidates if p.cwd in places]
        fresh = first_conversation(when, here or candidates, self._bound.values())
        if fresh:
            return max(fresh, key=lambda p: p.start_time).key
        if len(here) == 1:
            return here[0].key
        done = [p for p in here if self._current_ended(p)]
        if len(done) == 1:
            return done[0].key
        if here:
            self.ambiguous += 1
        return None

    def _current_ended(self, proc: AgentProcess) -> bool:
        current = self._current(proc)
        return current is not None and current.terminal

    # -- facts ----------------------------------------------------------------------------

    def _current(self, proc: AgentProcess) -> Row | None:
        mine = [sid for sid, key in self._bound.items() if key == proc.key]
        if not mine:
            return None
        return self._table.rows.get(max(mine, key=lambda sid: self._order.get(sid, 0)))

    def _conversation(self, proc: AgentProcess) -> ConversationFacts | None:
        row = self._current(proc)
        if row is None:
            return None
        over = False
        for sid in [s for s in self._closed_at if s not in self._table.rows]:
            del self._closed_at[sid]
            self._closing.discard(sid)
        if row.terminal:
            # /clear marks the row completed, and the next conversation is written only at
            # the next prompt: closed for a while with its process alive, it is over. Not
            # at once: /quit marks it completed a moment before the process exits.
            since = self._closed_at.setdefault(row.sid, self._clock())
            over = self._clock() - since >= CLOSE_GRACE_S
            if over:
                self._closing.discard(row.sid)
            else:
                self._closing.add(row.sid)
        subs = sorted(
            (
                self._table.rows[s]
                for s in self._table.children.get(row.sid, ())
                if s in self._table.rows
            ),
            key=lambda r: (r.created or 0.0, r.sid),
        )
        return ConversationFacts(
            native_id=row.sid,
            status=_STATUSES.get(row.status, "idle" if row.terminal else None),
            name=row.title,
            model=row.model,
            last_write=row.last_write,
            over=over,
            subagents=tuple(
                SubagentFacts(
                    agent_id=sub.agent_id or sub.sid,
                    name=sub.title,
                    done=sub.terminal,
                    last_write=sub.last_write,
                    status=_STATUSES.get(sub.status),
                    model=sub.model,
                )
                for sub in subs
            ),
            owner_uid=self._file.owner,
        )


SPEC = spec("cline")  # where it keeps its state: the registry's line
