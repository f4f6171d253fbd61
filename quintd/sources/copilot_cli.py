"""GitHub Copilot CLI, as 1.0.102 really behaves (``../shared/fixtures/copilot-cli``: one TUI;
two prompts, a tool awaiting approval then running, a sub-agent, ``/rename``, ``/new``, a
prompt, ``/exit`` twice; its README tells the run).

Processes. ``node .../bin/copilot`` (npm) runs the native binary
``.../@github/copilot-<os>-<arch>/copilot`` (comm ``MainThread``), which the scanner folds into
it; a standalone install runs the native binary alone. The native process holds the
conversations: its pid is in their lock files, sub-agents run inside it, tool processes are its
children (with ``COPILOT_AGENT_SESSION_ID``).

Files under ``${COPILOT_HOME:-~/.copilot}`` (``--config-dir`` on the command line is not
followed):
- ``session-state/<session id>/``: one directory per conversation, made when the
  conversation opens (at start-up, and at ``/new``), named by its id (a UUID: the native id).
  - ``inuse.<pid>.lock`` (the pid as text) and ``inuse.<pid>.hold`` (empty, held open by the
    process): the process that has the conversation open. Written when it opens it, deleted
    when it closes it (``/exit``); a crash leaves them behind.
  - ``workspace.yaml``: flat YAML (``id``, ``cwd``, ``branch``, ``name``, ``user_named``,
    ``created_at``, ...), written at once and rewritten. ``name`` is the title: the first
    prompt, then the ``/rename`` (no event is written for a rename). Read through PyYAML's
    safe loader, capped and bounded (``copilot_workspace.py``).
  - ``events.jsonl``, from the first prompt: one event per line (``copilot_events.py``:
    what they say about the conversation and its sub-agents).
- ``open-sessions-state.json``: ``{<session id>: {openedAt, refreshedAt, working}}`` for the
  conversations open in running CLIs; ``working`` is true while a turn runs or waits for
  approval. Checked by a stat each pass while a conversation is open, read when it changed.
- Not read: ``session-store.db`` (the same titles), ``sidebar-sessions-state/``, ``logs/``.

Reading. ``session-state`` is watched; a lock event lists its directory again (names and
``lstat`` only: a lock is never opened), a ``workspace.yaml`` or ``events.jsonl`` event reads
that file if its inode, size or time changed (watchdog also reports opens and closes, our own
reads' among them: those cost a stat, never a read). Directories are looked for once (and
when polling), among those changed since the oldest running process started.

Which process runs a conversation (``copilot_locks.py``): the pid its lock names, when that pid
is the agent process or one of its descendants (the native binary under the npm loader); the
lock must be younger than the process (an older one, left by a dead process whose pid came
back, is stale); and where the pid's open files can be read and it holds ``inuse.*.hold``
files, it must hold this conversation's (a new lock is looked at again for a few seconds: its
hold may come just after it). Done when locks, hold files or processes change, not every pass.
A conversation opened by two live processes goes to the later lock. A process runs several
conversations at once: ``/new`` keeps the old one open beside the new one. Each ends when its
lock goes or its ``session.shutdown`` is written (``/exit``), all of them when the process
exits. They are given oldest first (by lock time): the last is the current one.

Status: ``idle`` when ``working`` is false; ``waiting`` while a ``permission.requested`` has no
``permission.completed``; else ``busy`` when ``working`` is true; where the conversation has no
entry there, from the events: busy from a prompt until its turn ends with no tool or sub-agent
running. A sub-agent is busy until it is done (waiting while its own request is).

Sub-agents (``task`` tool) live in the same ``events.jsonl``: a ``subagent.started`` with an
``agentId`` (else the ``toolCallId``) is a child session named by its ``agentDescription``; done
at ``subagent.completed`` / ``subagent.failed``, at the task's ``tool.execution_complete``, or
at ``session.shutdown``. Events carrying its ``agentId`` are its work.

Known limits: a live process that keeps a lock on a conversation it does not run (reported for
1.0.40 after "Go back" from the "session in use" warning) is taken at its word, unless it
holds other conversations' hold files but not that one's. Seen with one TUI (BYOK, no GitHub
login: no generated titles); sub-agents failing, ``session.resume`` and several CLIs at once
are inferred from the event names, not seen.
"""

from __future__ import annotations

import re
import stat
import time
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.attribution import Pass
from quintd.sources.changes import listing, lstat_signature
from quintd.sources.copilot_events import Conversation, apply_event
from quintd.sources.copilot_locks import (
    HOLD_FILE,
    LOCK_FILE,
    STATE,
    Lock,
    ProcessKey,
    claim,
    locks_of,
)
from quintd.sources.copilot_workspace import WORKSPACE, read_workspace
from quintd.sources.files import JsonlTail, identifier, read_json_file, stat_under
from quintd.sources.registry import spec
from quintd.sources.spec import Reader, ReaderContext

OPEN_STATE = "open-sessions-state.json"
EVENTS = "events.jsonl"
_SESSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
MAX_OPEN_SESSIONS = 4096  # entries read from open-sessions-state.json


class CopilotState(Reader):
    """One Copilot CLI state directory (``~/.copilot`` or ``$COPILOT_HOME``)."""

    platform = "copilot-cli"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._wall = time.time  # lock files carry wall-clock times
        self._locks: dict[str, dict[int, Lock]] = {}  # conversation -> lock pid -> lock
        self._relist: set[str] = set()  # conversation directories to list again
        self._keys: frozenset[ProcessKey] = frozenset()
        self._rebind = True
        self._bound: dict[ProcessKey, list[tuple[str, int]]] = {}  # -> (conversation, lock pid)
        self._conversations: dict[str, Conversation] = {}
        self._working: dict[str, bool] = {}
        self._open_identity: tuple[int, int, int] | None = None
        self._horizon = 0.0

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self.root / STATE]

    def has_registry_dir(self) -> bool:
        return (self.root / STATE).is_dir()

    def changed(self, path: Path) -> None:
        try:
            parts = path.relative_to(self.root / STATE).parts
        except ValueError:
            return
        if not parts or not _SESSION.match(parts[0]):
            return
        session = parts[0]
        if len(parts) == 1 or (len(parts) == 2 and LOCK_FILE.match(parts[1])):
            self._relist.add(session)  # the directory, or a lock, came or went
            return
        if len(parts) == 2 and HOLD_FILE.match(parts[1]):
            self._rebind = True  # a hold file made, opened or removed: who holds what
            return
        conversation = self._conversations.get(session)
        if conversation is None or len(parts) != 2:
            return
        if parts[1] == WORKSPACE:
            conversation.workspace_dirty = True
        elif parts[1] == EVENTS:
            conversation.events_dirty = True

    def poll(self) -> None:
        """No change events: look for conversation directories again, re-list the known
        ones, and look at every file read so far."""
        self.changes.scanned = False
        self._relist.update(self._locks)
        for conversation in self._conversations.values():
            conversation.events_dirty = conversation.workspace_dirty = True

    def begin(self, now: Pass) -> None:
        self._horizon = now.horizon
        if not self.changes.scanned:
            self._scan()
        if self._relist:
            self._list_locks()
        if self._rebind or now.keys != self._keys:
            self._keys, self._rebind = now.keys, False
            self._bind(now)
        if not self._bound:
            return  # nothing open: not even a stat
        self._read_open_state()
        for conversation in self._conversations.values():
            if conversation.workspace_dirty:
                conversation.workspace_dirty = False
                read_workspace(conversation, self.root, self.stats)
            if conversation.events_dirty:
                conversation.events_dirty = False
                self._read_events(conversation)

    def facts(self, proc: AgentProcess) -> tuple[ConversationFacts, ...] | None:
        found = []
        for session, pid in self._bound.get(proc.key, ()):
            conversation = self._conversations.get(session)
            lock = self._locks.get(session, {}).get(pid)
            if conversation is None or lock is None or conversation.closed:
                continue
            order = (lock.mtime, conversation.created or 0.0, session)
            found.append((order, self._facts(conversation, lock.owner)))
        found.sort(key=lambda item: item[0])
        return tuple(facts for _order, facts in found) or None

    # -- which conversations are open, and where -------------------------------------------

    def _scan(self) -> None:
        """Conversation directories changed since the oldest running process started (a
        lock made since then changed its directory): the only ones that can be open."""
        self.changes.scanned = True
        found = listing(self.root / STATE, _SESSION, self._horizon, stat.S_ISDIR)
        self._relist.update(name for name, _ in found)

    def _list_locks(self) -> None:
        dirty, self._relist = self._relist, set()
        for session in dirty:
            locks = locks_of(self.root, session, self._horizon)
            if locks != self._locks.get(session, {}):
                self._rebind = True
            if locks:
                self._locks[session] = locks
            else:
                self._locks.pop(session, None)

    def _bind(self, now: Pass) -> None:
        """Each lock to the running process it belongs to, if any (see the module
        docstring); only when locks or processes changed."""
        self._locks = {  # none older than every running process: their writers are gone
            session: locks
            for session, locks in self._locks.items()
            if any(lock.mtime >= self._horizon for lock in locks.values())
        }
        claims, again = claim(self._locks, now, self._wall())
        self._rebind = self._rebind or again
        bound: dict[ProcessKey, list[tuple[str, int]]] = {}
        for session, (_mtime, key, pid) in sorted(claims.items()):
            bound.setdefault(key, []).append((session, pid))
        self._bound = bound
        for session in [s for s in self._conversations if s not in claims]:
            del self._conversations[session]  # closed: forget it
        for session in claims:
            if session not in self._conversations:
                path = self.root / STATE / session / EVENTS
                tail = JsonlTail(path, self.root, stats=self.stats)
                self._conversations[session] = Conversation(tail, session_id=session)

    def _read_open_state(self) -> None:
        """``open-sessions-state.json``: a stat each pass, read when it changed."""
        path = self.root / OPEN_STATE
        info = stat_under(self.root, path)
        identity = (info.st_ino, info.st_size, info.st_mtime_ns) if info is not None else None
        if identity == self._open_identity:
            return
        if info is None:
            self._open_identity, self._working = None, {}
            return
        self._open_identity = identity  # read once per version of the file
        found = read_json_file(path, self.root, self.stats)
        if found is None:
            return  # caught half written, or garbage (counted): the last good one holds
        working: dict[str, bool] = {}
        for key, value in list(found.data.items())[:MAX_OPEN_SESSIONS]:
            session = identifier(key)
            if session is not None and isinstance(value, dict):
                flag = value.get("working")
                if isinstance(flag, bool):
                    working[session] = flag
        self._working = working

    # -- one conversation's files -----------------------------------------------------------

    def _read_events(self, conversation: Conversation) -> None:
        seen = lstat_signature(conversation.tail.path)
        if seen is not None and seen == conversation.events_seen:
            return  # read to its end as it is now (the event was our own read)
        clock = self._clock()
        now = clock if conversation.read_once else None  # None: history
        if conversation.read(clock, lambda record: apply_event(conversation, record, now)):
            conversation.events_dirty = True  # the rest next pass
        else:
            conversation.events_seen = seen

    def _facts(self, conversation: Conversation, owner: int) -> ConversationFacts:
        waiting_for = set(conversation.permissions.values())
        subagents = tuple(
            SubagentFacts(
                agent_id=sub.agent_id,
                name=sub.name,
                done=False,
                last_write=sub.last_write,
                status="waiting" if sub.agent_id in waiting_for else "busy",
                model=sub.model or conversation.model,
            )
            for sub in conversation.running()
        )
        return ConversationFacts(
            native_id=conversation.session_id,
            status=self._status(conversation),
            name=conversation.name,
            model=conversation.model,
            last_write=conversation.last_write,
            subagents=subagents,
            owner_uid=owner,
        )

    def _status(self, conversation: Conversation) -> Status:
        working = self._working.get(conversation.session_id)
        if working is False:
            return "idle"  # its turn is over: a request left without an answer is stale
        if conversation.permissions:
            return "waiting"
        if working:
            return "busy"
        busy = (
            conversation.prompt_open
            or conversation.turn_open
            or bool(conversation.tools)
            or bool(conversation.running())
        )
        return "busy" if busy else "idle"


SPEC = spec("copilot-cli")  # where it keeps its state: the registry's line
