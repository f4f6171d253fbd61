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
    safe loader, capped and bounded (``yaml_files.py``).
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

Which process runs a conversation: the pid its lock names, when that pid is the agent process
or one of its descendants (the native binary under the npm loader); the lock must be younger
than the process (an older one, left by a dead process whose pid came back, is stale); and
where the pid's open files can be read and it holds ``inuse.*.hold`` files, it must hold this
conversation's (a new lock is looked at again for a few seconds: its hold may come just
after it). Done when locks, hold files or processes change, not every pass. A conversation
opened by two live processes goes to the later lock. A process runs several conversations at
once: ``/new`` keeps the old one open beside the new one. Each ends when its lock goes or its
``session.shutdown`` is written (``/exit``), all of them when the process exits. They are given
oldest first (by lock time): the last is the current one.

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
from dataclasses import dataclass
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.attribution import Pass
from quintd.sources.changes import listing, lstat_signature
from quintd.sources.copilot_events import Conversation, apply_event
from quintd.sources.files import (
    COMPLAINTS,
    MAX_JSON_FILE_BYTES,
    JsonlTail,
    identifier,
    read_json_file,
    read_whole,
    real_dir,
    stat_under,
    text,
)
from quintd.sources.registry import spec
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.times import parse_time
from quintd.sources.yaml_files import parse_flat_yaml

STATE = "session-state"
OPEN_STATE = "open-sessions-state.json"
WORKSPACE = "workspace.yaml"
EVENTS = "events.jsonl"
_SESSION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]{0,127}$")
_LOCK = re.compile(r"^inuse\.([0-9]{1,10})\.lock$")
_HOLD = re.compile(r"^inuse\.[0-9]{1,10}\.hold$")
MAX_LOCKS = 64  # per conversation directory
MAX_OPEN_SESSIONS = 4096  # entries read from open-sessions-state.json
MAX_WORKSPACE_BYTES = MAX_JSON_FILE_BYTES
HOLD_GRACE_S = 5.0  # a new lock's hold file may be opened just after it is written
_WORKSPACE_KEYS = frozenset({"id", "name", "user_named", "created_at"})

ProcessKey = tuple[int, int]


@dataclass(frozen=True)
class _Lock:
    mtime: float
    owner: int  # the uid owning the lock file


class CopilotState(Reader):
    """One Copilot CLI state directory (``~/.copilot`` or ``$COPILOT_HOME``)."""

    platform = "copilot-cli"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._wall = time.time  # lock files carry wall-clock times
        self._locks: dict[str, dict[int, _Lock]] = {}  # conversation -> lock pid -> lock
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
        if len(parts) == 1 or (len(parts) == 2 and _LOCK.match(parts[1])):
            self._relist.add(session)  # the directory, or a lock, came or went
            return
        if len(parts) == 2 and _HOLD.match(parts[1]):
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
                self._read_workspace(conversation)
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
            locks = self._locks_of(session)
            if locks != self._locks.get(session, {}):
                self._rebind = True
            if locks:
                self._locks[session] = locks
            else:
                self._locks.pop(session, None)

    def _locks_of(self, session: str) -> dict[int, _Lock]:
        """The lock files of a conversation directory that a running process may have
        written (none older than the oldest of them)."""
        if not real_dir(self.root / STATE):
            return {}
        # Their metadata only (lstat: a link is no lock), never opened: opening one would be
        # a change event of its own, and the next pass would look again.
        found = listing(self.root / STATE / session, _LOCK, self._horizon, stat.S_ISREG, MAX_LOCKS)
        return {
            int(name.split(".")[1]): _Lock(info.st_mtime, info.st_uid)
            for name, info in found
            if info is not None
        }

    def _bind(self, now: Pass) -> None:
        """Each lock to the running process it belongs to, if any (see the module
        docstring); only when locks or processes changed."""
        self._locks = {  # none older than every running process: their writers are gone
            session: locks
            for session, locks in self._locks.items()
            if any(lock.mtime >= self._horizon for lock in locks.values())
        }
        holds: dict[int, list[str]] = {}
        claims: dict[str, tuple[float, ProcessKey, int]] = {}
        wall = self._wall()
        for session, locks in self._locks.items():
            for pid, lock in locks.items():
                # The agent process or one under it (the native binary under its loader);
                # a lock older than it was left by a dead process whose pid came back.
                proc = now.runner(pid, lock.mtime)
                if proc is None:
                    continue
                if pid not in holds:
                    holds[pid] = [f for f in now.view.open_files(pid) if _HOLD.match(_base(f))]
                if holds[pid] and not any(_holds(f, session, pid) for f in holds[pid]):
                    # The process holds other conversations' files, not this one's: a lock
                    # it left behind, or one it has just made (look again while it is new).
                    self._rebind = self._rebind or 0 <= wall - lock.mtime < HOLD_GRACE_S
                    continue
                if session not in claims or claims[session][0] < lock.mtime:
                    claims[session] = (lock.mtime, proc.key, pid)
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

    def _read_workspace(self, conversation: Conversation) -> None:
        path = self.root / STATE / conversation.session_id / WORKSPACE
        if conversation.workspace is not None and lstat_signature(path) == conversation.workspace:
            return  # unchanged (the event was our own read): not opened again
        whole = read_whole(path, self.root, self.stats, MAX_WORKSPACE_BYTES, conversation.workspace)
        if whole is None or (whole.raw is not None and not whole.raw.endswith(b"\n")):
            return  # unchanged, or caught half written: the next change brings the rest
        conversation.workspace, info = whole.signature, whole.info  # once per version
        if whole.raw is None:
            return  # too large (counted)
        values = parse_flat_yaml(whole.raw, _WORKSPACE_KEYS)
        if values is None or values.get("id") not in (None, conversation.session_id):
            self.stats.garbage += 1
            COMPLAINTS.warn(path, info, "a workspace.yaml that is not what it should be")
            return
        # Copilot names a conversation after its first prompt until the user renames it
        # (`user_named: true`): only a name the user gave leaves the machine.
        named = str(values.get("user_named", "")).strip().lower() == "true"
        conversation.name = text(values.get("name")) if named else None
        conversation.created = parse_time(values.get("created_at")) or conversation.created

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


def _base(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def _holds(path: str, session: str, pid: int) -> bool:
    """Whether an open file is this conversation's hold file. By its last three components:
    the process may see its home through another path (a symlinked /home)."""
    return path.replace("\\", "/").endswith(f"/{STATE}/{session}/inuse.{pid}.hold")


SPEC = spec("copilot-cli")  # where it keeps its state: the registry's line
