"""Kiro CLI (``kiro-cli``, the successor of Amazon Q Developer CLI; closed source):
``~/.kiro/sessions/cli/<uuid>.json`` / ``.jsonl`` / ``.lock`` (the "v2" engine that runs the
TUI and ``kiro-cli acp``). Built from third-party readers and writers tested against real
kiro-cli 2.21-2.28 builds, as no Kiro source is public: ``inference-sh/agentprotocol``
``transcript/kiro/kiro.go`` and its kiro-written test files (``testdata/home/.kiro/sessions/
cli/e53ccf60-....json``/``.jsonl`` at ``16279d6e5fd3eec16fda44f360466a2e547d1edd``, kiro-cli-chat
2.24.0), ``BjoernSchotte/agentglass`` ``src/harness/kiro.ts`` at
``22359053907a08cd1ad0ecad7cfec23f63d01406``, ``ksrikanthcnc/nagents``
``sources/kiro-cli-v2/scan.py``. **Unverified against a real run** (kiro-cli is downloaded
from AWS, unreachable here). The v1 engine's SQLite store
(``~/.local/share/kiro-cli/data.sqlite3``) is not read.

Files (``<id>`` = a uuid, the conversation id):
- ``<id>.json``: the sidecar, ``{session_id, cwd, created_at, updated_at (RFC 3339, ns),
  title, parent_session_id (sub-agents), session_created_reason, session_state:
  {conversation_metadata: {user_turn_metadatas: [{model, end_timestamp, ...}]},
  rts_model_state: {model_info: {model_id, model_name}}, ...}}``. It grows with every turn;
  past 256 KiB only its top-level fields before ``session_state`` (head) and the last
  ``model_id`` (tail) are read.
- ``<id>.jsonl``: ``{"version": "v1", "kind": K, "data": {...}}`` per line; K is
  ``Prompt``, ``AssistantMessage`` (content items ``text``, ``toolUse``, ``thinking``),
  ``ToolResults``, ``Compaction``, ``Clear`` (``/clear``: same id), ``CancelledPrompt``;
  other kinds are ignored.
- ``<id>.lock``: ``{"pid": N}`` while a kiro process has the session open; deleted on a
  clean exit, left behind by a killed one.

- Owning process: the lock's pid, if it is the kiro process or one of its descendants
  (``kiro-cli`` runs ``kiro-cli-chat`` and a bun TUI) and the lock is not older than that
  process (a pid reused after a crash); a session with no lock: the kiro process in its
  ``cwd`` running when it was last written (the last started before it began). A process's
  conversation is its top-level session written last; a rewind forks a new session (new
  id), which ends the old one; ``/clear`` keeps the id.
- name: ``title`` (kiro sets it to the first prompt; internal sessions' prompts such as
  ``[AGENT SYSTEM PROMPT]`` are not names); model: ``rts_model_state.model_info.model_id``,
  else the last turn's ``model``.
- busy: the last transcript record is a prompt, tool results, or an answer with a tool
  call; idle: an answer with text only, a cancelled prompt, ``Clear``, ``Compaction``. A
  transcript not written since the process started says nothing: idle.
- sub-agents: sessions with ``parent_session_id`` (not ``session_created_reason``, which
  top-level ACP sessions carry too); done when their last record is an answer, or their
  lock went away.
- exit: the process's exit ends its conversations.

Files are found by one listing at start (only those written since the oldest running kiro
started) and then read as watchdog reports changes; transcripts are read incrementally.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.attribution import Pass, latest, owner_of
from quintd.sources.changes import listing, lmtime
from quintd.sources.files import JsonlTail, read_json_file
from quintd.sources.kiro_sessions import SESSION_ID, KiroSession, read_sidecar, record
from quintd.sources.registry import spec
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.times import START_SLACK_S as SLACK_S

_SUFFIXES = (".jsonl", ".json", ".lock")


class KiroState(Reader):
    platform = "kiro"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._dir = root / "sessions" / "cli"
        self._sessions: dict[str, KiroSession] = {}
        self._dirty: dict[str, set[str]] = {}  # id -> suffixes changed
        # Each lock's process, until a lock or the processes change.
        self._lock_owners: dict[str, AgentProcess | None] = {}
        self._keys: frozenset[tuple[int, int]] = frozenset()
        self._current: dict[tuple[int, int], tuple[str, float]] = {}

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self._dir]

    def changed(self, path: Path) -> None:
        if path.parent != self._dir:
            return
        for suffix in _SUFFIXES:
            if path.name.endswith(suffix):
                match = SESSION_ID.match(path.name[: -len(suffix)])
                if match:
                    self._dirty.setdefault(match.group(1), set()).add(suffix)
                return

    def poll(self) -> None:
        self.changes.scanned = False
        for native_id in self._sessions:
            self._dirty.setdefault(native_id, set()).update(_SUFFIXES)

    def has_registry_dir(self) -> bool:
        return self._dir.is_dir()

    def begin(self, now: Pass) -> None:
        if not self.changes.scanned:
            self.changes.scanned = True
            self._scan(now.horizon)
        if self._read_changes(now.horizon) or now.keys != self._keys:
            self._keys, self._lock_owners = now.keys, {}
        self._assign(now)

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        found = self._current.get(proc.key)
        if found is None:
            return None
        native_id, since = found
        session = self._sessions.get(native_id)
        if session is None:
            return None
        subagents = tuple(
            SubagentFacts(
                agent_id=child.native_id,
                name=child.title,
                done=child.answered or (child.had_lock and child.lock_pid is None),
                last_write=child.last_write,
                status=self._status(child, since),
                model=child.model,
            )
            for child in self._sessions.values()
            if child.parent == native_id
        )
        return ConversationFacts(
            native_id=native_id,
            status=self._status(session, since),
            name=session.title,
            model=session.model,
            last_write=session.last_write,
            subagents=subagents,
            owner_uid=session.owner,
        )

    # -- files ----------------------------------------------------------------------------

    def _scan(self, horizon: float) -> None:
        for name, _ in listing(self._dir, newer_than=horizon):
            self.changed(self._dir / name)

    def _read_changes(self, horizon: float) -> bool:
        """Read what changed; whether a lock changed (ownership to be looked at again)."""
        relock = False
        for native_id in [i for i, s in self._sessions.items() if s.written < horizon]:
            if native_id not in self._dirty:
                del self._sessions[native_id]  # finished before any running kiro started
        dirty, self._dirty = self._dirty, {}
        for native_id, suffixes in dirty.items():
            session = self._sessions.get(native_id)
            base = self._dir / native_id
            if session is None:
                if max(lmtime(Path(str(base) + s)) for s in _SUFFIXES) < horizon:
                    continue
                tail = JsonlTail(Path(str(base) + ".jsonl"), self.root, stats=self.stats)
                session = self._sessions[native_id] = KiroSession(tail, native_id=native_id)
                suffixes = set(_SUFFIXES)
            if ".json" in suffixes:
                read_sidecar(session, self._dir / f"{native_id}.json", self.root, self.stats)
            if ".jsonl" in suffixes:
                self._read_transcript(session)
            if ".lock" in suffixes:
                self._read_lock(session)
                relock = True
        return relock

    def _read_transcript(self, session: KiroSession) -> None:
        if session.read(self._clock(), partial(record, session)):
            self._dirty.setdefault(session.native_id, set()).add(".jsonl")
        session.transcript_at = lmtime(session.tail.path)
        session.written = max(session.written, session.transcript_at)
        if session.owner is None:
            session.owner = session.tail.owner

    def _read_lock(self, session: KiroSession) -> None:
        path = self._dir / f"{session.native_id}.lock"
        session.lock_pid = None
        when = lmtime(path)
        if when == 0.0:
            return  # none, or removed: a clean exit (or the session was closed)
        found = read_json_file(path, self.root, self.stats)
        if found is None:
            return  # refused, or garbage (counted), or caught half written
        pid = found.data.get("pid")
        if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
            self.stats.garbage += 1
            return
        session.lock_pid, session.lock_time, session.had_lock = pid, when, True
        session.written = max(session.written, when)
        if session.owner is None:
            session.owner = found.owner

    # -- which process runs which session -------------------------------------------------

    def _assign(self, now: Pass) -> None:
        claims: list[tuple[AgentProcess, KiroSession]] = []
        processes = now.processes
        for session in self._sessions.values():
            if session.parent is not None:
                continue
            owner: AgentProcess | None = None
            if session.lock_pid is not None:
                # The kiro process, or one of its descendants; a lock older than that
                # process was left by a dead one whose pid came back.
                if session.native_id not in self._lock_owners:
                    self._lock_owners[session.native_id] = now.runner(
                        session.lock_pid, session.lock_time
                    )
                owner = self._lock_owners[session.native_id]
            elif session.cwd is not None and not session.had_lock:
                here = [p for p in processes if p.cwd == session.cwd]
                created = session.created or session.written
                owner = owner_of(created, max(session.written, session.updated or 0.0), here)
            if owner is not None:
                claims.append((owner, session))
        self._current = latest(claims, lambda s: (s.written, s.created or 0.0, s.native_id))

    def _status(self, session: KiroSession, since: float) -> Status | None:
        if session.status == "busy" and session.transcript_at < since - SLACK_S:
            return "idle"  # a turn a killed kiro left open: not this process's work
        return session.status


SPEC = spec("kiro")  # where it keeps its state: the registry's line
