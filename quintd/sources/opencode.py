"""OpenCode, as 1.18.33 really behaves (``../shared/fixtures/opencode``: one TUI; a prompt, a
tool, a sub-agent, a rename, ``/new``, a second prompt, ``/exit``; its README tells the run).

Processes. ``opencode`` (the npm package's native Bun binary ``opencode-ai/bin/opencode.exe``)
is the TUI and its server in one process; sub-agents run inside it, tools are its children.
Nothing ties a process to a conversation: no pid file, lock, tty or open file names one.

State: one SQLite database, ``${XDG_DATA_HOME:-~/.local/share}/opencode/opencode.db`` (or
``$OPENCODE_DB``: an absolute path, or one relative to that directory; ``:memory:`` keeps
nothing on disk), in WAL mode and hardly ever checkpointed: while OpenCode runs, its data is
in ``opencode.db-wal``.

Its tables, and how they are read only when they changed: ``opencode_db.py``.

Rules.

- Read only when the database changed (``opencode_db.py``), the sessions that can belong to
  a running process. Busy: an unanswered prompt, an unfinished answer or a pending tool
  call. OpenCode writes down no "waiting": a permission prompt is a running tool call.
- A sub-agent is a child session: it runs while its parent's ``task`` call for it is pending
  or running, or while it is busy itself; then it is done.
- Owning process: a conversation belongs to the opencode process in its directory (cwd)
  that started last before the conversation was created. One created before all of them
  started (an old conversation continued) belongs to the process whose command line names it
  (``opencode -s <id>``), else to the one that started last before it was written again.
- A process's conversation is its conversation prompted last (its latest user message):
  ``/new`` ends the old one at the new one's first prompt. An older one still busy stays open
  (OpenCode keeps working on it) until it has been idle for a few seconds (an answer's steps
  leave gaps of milliseconds between them).
- Name: the title, unless it is still the placeholder; model: the latest message's, else the
  session's ``model.id``.

Verified against the real files: the tables and columns above, conversation rows made at the
first prompt, busy/idle through a prompt, a tool and a sub-agent, the sub-agent as a child
session, a rename in place, ``/new``. Inferred from the source and unverified against a real
run: ``opencode -s``, ``XDG_DATA_HOME`` and ``OPENCODE_DB``, two processes in one
directory, a conversation kept busy in the background, a database without the ``event``
table (an older or newer schema), a deleted conversation.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, SubagentFacts
from quintd.sources.attribution import Pass, flag_values, owner_of
from quintd.sources.files import (
    identifier,
    trusted_dir,
)
from quintd.sources.opencode_db import Database
from quintd.sources.opencode_queries import Session
from quintd.sources.registry import spec
from quintd.sources.spec import Reader, ReaderContext

DATABASE = "opencode.db"
MAX_SUBAGENTS = 200  # per conversation
MAX_DEPTH = 8  # sub-agents of sub-agents
# A conversation left for another (/new) stays open while OpenCode still works on it, and
# this long after it was seen stopped: between two steps of an answer it looks stopped for
# a few milliseconds, which must not end it.
BACKGROUND_GRACE_S = 5.0

Found = ConversationFacts | tuple[ConversationFacts, ...]


# -- the reader -----------------------------------------------------------------------------


@dataclass
class _Process:
    database: Database | None
    named: frozenset[str]  # sessions its command line names (opencode -s <id>)


class OpenCodeState(Reader):
    platform = "opencode"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self.refused = 0  # processes whose database lies in a directory not theirs
        self._dbs: dict[Path, Database] = {}
        self._procs: dict[tuple[int, int], _Process] = {}
        self._facts: dict[tuple[int, int], Found] = {}
        self._assigned_for: object = None
        self._assigned_at = 0.0
        self._grace_until = 0.0  # until then, a stopped conversation may still be open

    # -- the AgentState protocol ------------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self.root]

    def flat_dirs(self) -> set[Path]:
        """The data dir alone: its snapshot/ git stores would cost thousands of watches."""
        return {self.root}

    def has_registry_dir(self) -> bool:
        return self.root.is_dir()

    def changed(self, path: Path) -> None:
        path = Path(os.path.normpath(path))
        name = path.name
        base = path.with_name(name[: -len("-wal")]) if name.endswith("-wal") else path
        db = self._dbs.get(base)
        if db is not None:
            db.dirty = True

    def poll(self) -> None:
        for db in self._dbs.values():
            db.poll()

    def begin(self, pass_: Pass) -> None:
        processes, horizon = list(pass_), pass_.horizon
        procs = {p.key: self._process(p) for p in processes}
        self._procs = procs
        used = {entry.database.path for entry in procs.values() if entry.database is not None}
        self._dbs = {path: db for path, db in self._dbs.items() if path in used}
        now = self._clock()
        for db in self._dbs.values():
            members = [p for p in processes if procs[p.key].database is db]
            named = set().union(*(procs[p.key].named for p in members))
            if not db.watched:
                db.poll()  # no file events come from outside the state directory
            db.refresh(horizon, named, now)
            db.forget(horizon, named)
        marker = (
            tuple(sorted(p.key for p in processes)),
            tuple((id(db), db.version) for db in self._dbs.values()),
        )
        if marker != self._assigned_for or self._grace_until > self._assigned_at:
            # Also while a stopped conversation is in its grace, until the pass it ends.
            self._assigned_for, self._assigned_at, self._grace_until = marker, now, 0.0
            self._facts = self._assign(processes, now)

    def facts(self, proc: AgentProcess) -> Found | None:
        return self._facts.get(proc.key)

    # -- processes and their databases ------------------------------------------------------

    def _process(self, proc: AgentProcess) -> _Process:
        known = self._procs.get(proc.key)
        if known is not None:
            return known
        argv = self.now.view.argv(proc.pid)
        named = frozenset(filter(None, map(identifier, flag_values(argv, ("-s", "--session")))))
        path = self._database_path(proc)
        if path is None:
            return _Process(None, named)
        db = self._dbs.get(path)
        if db is None:
            if path.is_relative_to(self.root):
                db = Database(self.root, path, watched=True, stats=self.stats)
            elif (uid := self.now.view.uid(proc.pid)) is not None and trusted_dir(path.parent, uid):
                # Out of the state directory: only a real directory of the process's user.
                db = Database(path.parent, path, watched=False, stats=self.stats)
            else:
                self.refused += 1
                self.stats.refused += 1
                return _Process(None, named)
            self._dbs[path] = db
        return _Process(db, named)

    def _database_path(self, proc: AgentProcess) -> Path | None:
        """The database the process uses: from its own environment (``XDG_DATA_HOME``,
        ``OPENCODE_DB``), else the one in the state directory."""
        env = self.now.view.environ(proc.pid) or {}
        data = self.root
        xdg = env.get("XDG_DATA_HOME")
        if xdg and os.path.isabs(xdg) and "\x00" not in xdg:
            data = Path(xdg) / "opencode"
        custom = env.get("OPENCODE_DB")
        if custom == ":memory:":
            return None  # nothing on disk
        if custom and "\x00" not in custom:
            chosen = Path(custom) if os.path.isabs(custom) else data / custom
        else:
            chosen = data / DATABASE
        return Path(os.path.normpath(chosen))

    # -- conversations to processes ---------------------------------------------------------

    def _assign(self, processes: list[AgentProcess], now: float) -> dict[tuple[int, int], Found]:
        found: dict[tuple[int, int], Found] = {}
        for db in self._dbs.values():
            members = [p for p in processes if self._procs[p.key].database is db]
            owned = _owners(db.sessions.values(), members, self._procs)
            children: dict[str, list[Session]] = {}
            for s in db.sessions.values():
                if s.parent is not None:
                    children.setdefault(s.parent, []).append(s)
            for proc in members:
                mine = [s for s in db.sessions.values() if owned.get(s.id) == proc.key]
                if not mine:
                    continue
                named = self._procs[proc.key].named
                mine.sort(key=functools.partial(_order, proc=proc, named=named))
                current = mine[-1]
                open_ = [s for s in mine[:-1] if self._still_open(s, now)] + [current]
                convs = tuple(_facts(s, children, db.sessions, db.owner) for s in open_)
                found[proc.key] = convs[0] if len(convs) == 1 else convs
        return found

    def _still_open(self, s: Session, now: float) -> bool:
        """A conversation the process left (for a newer one) that OpenCode still works on,
        or stopped only a moment ago."""
        if s.running:
            return True
        if s.stopped_at is None or now - s.stopped_at >= BACKGROUND_GRACE_S:
            return False
        self._grace_until = max(self._grace_until, s.stopped_at + BACKGROUND_GRACE_S)
        return True


def _order(s: Session, proc: AgentProcess, named: frozenset[str]) -> tuple[float, float]:
    """A process's conversations in the order they were prompted; the one its command line
    names counts as prompted when the process started."""
    prompted = max(s.prompted, proc.start_time) if s.id in named else s.prompted
    return (prompted, s.updated)


def _owners(
    sessions: Iterable[Session],
    processes: list[AgentProcess],
    procs: dict[tuple[int, int], _Process],
) -> dict[str, tuple[int, int]]:
    """Each top-level conversation's process, by directory and time (see the module)."""
    by_dir: dict[str, list[AgentProcess]] = {}
    for proc in processes:
        if proc.cwd:
            by_dir.setdefault(os.path.normpath(proc.cwd), []).append(proc)
    owned: dict[str, tuple[int, int]] = {}
    for s in sessions:
        if s.parent is not None or s.archived or not s.directory:
            continue
        candidates = by_dir.get(os.path.normpath(s.directory), [])
        if not candidates:
            continue
        named = [p for p in candidates if s.id in procs[p.key].named]
        chosen = max(named, key=lambda p: (p.start_time, p.pid)) if named else None
        chosen = chosen or owner_of(s.created, s.updated, candidates)
        if chosen is not None:
            owned[s.id] = chosen.key
    return owned


def _facts(
    s: Session,
    children: dict[str, list[Session]],
    sessions: dict[str, Session],
    owner: int | None,
) -> ConversationFacts:
    subagents: list[SubagentFacts] = []
    queue = [(s, 0)]
    while queue and len(subagents) < MAX_SUBAGENTS:
        parent, depth = queue.pop(0)
        if depth >= MAX_DEPTH:
            continue
        for child in sorted(children.get(parent.id, ()), key=lambda c: (c.created, c.id)):
            running = child.running or child.id in parent.tasks
            subagents.append(
                SubagentFacts(
                    agent_id=child.id,
                    name=child.title,
                    done=not running,
                    last_write=child.last_write,
                    status="busy" if running else "idle",
                    model=child.model,
                )
            )
            queue.append((child, depth + 1))
    return ConversationFacts(
        native_id=s.id,
        status="busy" if s.running else "idle",
        name=s.title,
        model=s.model,
        last_write=s.last_write,
        subagents=tuple(subagents[:MAX_SUBAGENTS]),
        owner_uid=owner,
    )


SPEC = spec("opencode")  # where it keeps its state: the registry's line
