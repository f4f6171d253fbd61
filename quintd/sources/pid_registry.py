"""The base of readers whose agent keeps a live registry, one file a process, and a JSONL
transcript a conversation (Claude Code; Qwen Code, which follows its design).

- ``<root>/sessions/<pid>.json``: ``{pid, sessionId, cwd, procStart, startedAt, ...}``,
  written as the process starts, rewritten with a new ``sessionId`` on ``/clear``, deleted
  at exit, left behind by a crash. A process's registry is its own, or that of the
  nearest of its descendants (a wrapper runs the agent as a child) up to
  :attr:`RegistryTranscripts.registry_depth` levels down; it is taken only when fresh: its
  pid runs now with the start time (clock ticks) ``procStart`` records (elsewhere than
  Linux: ``startedAt`` within a minute of the agent's start). A registry left by a dead
  process, or by an earlier one with the same pid, is ignored. Once bound, a process's
  registry is read again only when it changed; a process without one looks again only
  after some registry changed.
- the transcript, named by the registry's ``sessionId`` and ``cwd``; its sub-agents'
  ``agent-<id>.jsonl`` and ``agent-<id>.meta.json`` in a directory of their own.

A subclass says where the transcript and the sub-agents' directory are, what one record of
the transcript and one sub-agent's meta say, and what the facts are.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from quintd.model import AgentProcess, ConversationFacts, Status
from quintd.sources.attribution import Pass
from quintd.sources.conversation_files import Subagent, Transcript
from quintd.sources.files import JsonFile, JsonlTail, path_text, read_json_file
from quintd.sources.processes import MAX_TREE_DEPTH, descendants
from quintd.sources.spec import Reader, ReaderContext

_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_TICKS = re.compile(r"^(?:[0-9A-Za-z-]{1,64}:)?([0-9]{1,30})$")
FRESH_WITHOUT_TICKS_MS = 60_000  # startedAt against the process's start, off Linux


@dataclass
class Registry:
    pid: int
    session_id: str
    cwd: str
    proc_ticks: str | None  # start time in clock ticks since boot, from procStart
    started_at_ms: int | None
    owner: int  # the uid owning the registry file: whose conversation this is
    status: Status | None = None  # where the agent records it
    name: str | None = None


@dataclass
class Conversation(Transcript):
    """A transcript, and what the reader keeps of it (``read_once``: until the first read
    reached the end, what is read is history, and results of sub-agents may be ahead)."""

    model: str | None = None
    finished_tools: set[str] = field(default_factory=set)
    subagents: dict[str, Subagent] = field(default_factory=dict)
    subagents_listed: bool = False


C = TypeVar("C", bound=Conversation)


def proc_ticks(value: object) -> str | None:
    """procStart as recorded: ``<boot id>:<ticks>`` or bare ticks -> the ticks."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.isascii():
        match = _TICKS.match(value)
        if match:
            return str(int(match.group(1)))
    return None


class RegistryTranscripts(Reader, Generic[C]):
    conversation: type[C]  # the subclass's conversation, with what it keeps
    agent_file: ClassVar[re.Pattern[str]] = re.compile(
        r"^agent-([A-Za-z0-9_-]{1,128})\.(jsonl|meta\.json)$"
    )
    registry_depth: ClassVar[int] = MAX_TREE_DEPTH  # how far below the agent to look
    max_schema: ClassVar[int | None] = None  # a registry of a later schema is skipped

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._registries: dict[int, Registry] = {}  # by registry pid: bound ones only
        self._reload: set[int] = set()  # bound registries changed since last read
        self._bindings: dict[tuple[int, int], int] = {}  # agent process -> registry pid
        # Agent processes without a registry yet, and the registry generation they were
        # last looked up at: looked up again only after a registry changed.
        self._searched: dict[tuple[int, int], int] = {}
        self._generation = 0
        self._transcripts: dict[str, C] = {}
        self._by_path: dict[Path, C] = {}
        self._sub_dirs: dict[Path, C] = {}

    # -- what a subclass says -------------------------------------------------------------

    def project_dir_name(self, cwd: str) -> str:
        raise NotImplementedError

    def transcript_path(self, project: Path, session_id: str) -> Path:
        raise NotImplementedError

    def subagent_dir(self, project: Path, session_id: str) -> Path:
        raise NotImplementedError

    def describe(self, registry: Registry, data: dict[str, Any]) -> None:
        """What else the registry says (status, name)."""

    def record(self, conversation: C, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def is_work(self, record: dict[str, Any]) -> bool:
        return True

    def meta(self, sub: Subagent, meta: dict[str, Any]) -> None:
        raise NotImplementedError

    def conversation_facts(self, registry: Registry, conversation: C | None) -> ConversationFacts:
        raise NotImplementedError

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self.root / "sessions", self.root / "projects"]

    def has_registry_dir(self) -> bool:
        return (self.root / "sessions").is_dir()

    def poll(self) -> None:
        """No change events for this directory: treat every known file as changed."""
        self._reload.update(self._registries)
        self._generation += 1
        for conversation in self._transcripts.values():
            self.changes.mark(conversation.tail.path)
            for sub in conversation.subagents.values():
                if sub.tail is not None:
                    self.changes.mark(sub.tail.path)
            conversation.subagents_listed = False

    def begin(self, now: Pass) -> None:
        """Read what changed; forget the processes that are gone, and every conversation
        no running process runs."""
        self._apply_changes()
        live = now.keys
        for key in self._bindings.keys() - live:
            del self._bindings[key]
        for key in self._searched.keys() - live:
            del self._searched[key]
        bound = set(self._bindings.values())
        for pid in self._registries.keys() - bound:
            del self._registries[pid]
        self._reload &= bound
        current = {self._registries[pid].session_id for pid in bound}
        for session_id in self._transcripts.keys() - current:
            conversation = self._transcripts.pop(session_id)
            self._by_path.pop(conversation.tail.path, None)
            self._sub_dirs = {d: c for d, c in self._sub_dirs.items() if c is not conversation}

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        self._apply_changes()
        registry = self._registry_of(proc)
        if registry is None:
            return None
        return self.conversation_facts(registry, self._conversation(registry))

    # -- the registry -------------------------------------------------------------------

    def _registry_of(self, proc: AgentProcess) -> Registry | None:
        pid = self._bindings.get(proc.key)
        if pid is not None:
            if pid in self._reload:
                self._reload.discard(pid)
                loaded = self._load_registry(pid)
                # Rewritten in place (/clear): a read can catch it empty or half written,
                # and it is deleted at exit just before the process ends. Either way the
                # last good one still holds.
                if loaded is not None and self._fresh(loaded, proc):
                    self._registries[pid] = loaded
            return self._registries.get(pid)
        if self._searched.get(proc.key) == self._generation:
            return None  # no registry has changed since the last look
        self._searched[proc.key] = self._generation
        if proc.key in self.now.keys:
            below = self.now.tree(proc.pid, self.registry_depth)
        else:  # asked for alone, outside a pass
            below = descendants(self.now.view, proc.pid, depth=self.registry_depth)
        for candidate in (proc.pid, *below):
            registry = self._load_registry(candidate)
            if registry is not None and self._fresh(registry, proc):
                del self._searched[proc.key]
                self._bindings[proc.key] = candidate
                self._registries[candidate] = registry
                return registry
        return None

    def _load_registry(self, pid: int) -> Registry | None:
        found = read_json_file(self.root / "sessions" / f"{pid}.json", self.root, self.stats)
        if found is None:
            return None
        return self._registry(pid, found)

    def _registry(self, pid: int, found: JsonFile) -> Registry | None:
        data = found.data
        version = data.get("schemaVersion")
        if (
            self.max_schema is not None
            and isinstance(version, int)
            and not isinstance(version, bool)
            and version > self.max_schema
        ):
            return None  # a later format: skipped, as the protocol asks of readers
        session_id = data.get("sessionId")
        if (
            data.get("pid") != pid
            or not isinstance(session_id, str)
            or not _SESSION_ID.match(session_id)
        ):
            self.stats.garbage += 1
            return None
        started = data.get("startedAt")
        registry = Registry(
            pid=pid,
            session_id=session_id,
            cwd=path_text(data.get("cwd")) or "",
            proc_ticks=proc_ticks(data.get("procStart")),
            started_at_ms=started
            if isinstance(started, int) and not isinstance(started, bool)
            else None,
            owner=found.owner,
        )
        self.describe(registry, data)
        return registry

    def _fresh(self, registry: Registry, proc: AgentProcess) -> bool:
        """A registry written by this very process (or its child), not a leftover of a
        dead one whose pid was reused."""
        if registry.proc_ticks is not None and sys.platform.startswith("linux"):
            return self.now.view.start_ticks(registry.pid) == registry.proc_ticks
        if registry.started_at_ms is not None:
            return abs(registry.started_at_ms - proc.start_time_ms) < FRESH_WITHOUT_TICKS_MS
        return registry.pid == proc.pid  # nothing to tell a child's from a stale one

    # -- transcripts ----------------------------------------------------------------------

    def _conversation(self, registry: Registry) -> C | None:
        conversation = self._transcripts.get(registry.session_id)
        if conversation is None:
            if not registry.cwd:
                return None
            project = self.root / "projects" / self.project_dir_name(registry.cwd)
            path = self.transcript_path(project, registry.session_id)
            conversation = self.conversation(JsonlTail(path, self.root, stats=self.stats))
            self._transcripts[registry.session_id] = conversation
            self._by_path[path] = conversation
            self._sub_dirs[self.subagent_dir(project, registry.session_id)] = conversation
            self._read(conversation)
        if not conversation.subagents_listed:
            self._list_subagents(conversation)
        return conversation

    def _read(self, conversation: C) -> None:
        more = conversation.read(
            self._clock(), lambda r: self.record(conversation, r), self.is_work
        )
        if more:
            self.changes.mark(conversation.tail.path)  # the rest next pass

    def _list_subagents(self, conversation: C) -> None:
        conversation.subagents_listed = True
        directory = next(d for d, c in self._sub_dirs.items() if c is conversation)
        try:
            names = sorted(p.name for p in directory.iterdir())
        except OSError:
            return
        for name in names:
            self._subagent_file(conversation, directory / name)

    def _subagent_file(self, conversation: C, path: Path) -> None:
        match = self.agent_file.match(path.name)
        if match is None:
            return  # .jsonl.stream, and anything else
        agent_id, kind = match.groups()
        sub = conversation.subagents.setdefault(agent_id, Subagent(agent_id))
        if kind == "meta.json":
            found = read_json_file(path, self.root, self.stats)
            if found is not None:
                self.meta(sub, found.data)
            return
        first = sub.tail is None
        if sub.tail is None:
            sub.tail = JsonlTail(path, self.root, stats=self.stats)
        records, more = sub.tail.read_new()
        if more:
            self.changes.mark(path)
        if records and not first:  # a first read is history; growth after it is work
            sub.last_write = self._clock()

    # -- changes --------------------------------------------------------------------------

    def _apply_changes(self) -> None:
        for path in self.changes.take():
            self._changed(path)

    def _changed(self, path: Path) -> None:
        if path.parent == self.root / "sessions" and path.name.endswith(".json"):
            stem = path.name[: -len(".json")]
            if stem.isascii() and stem.isdigit() and len(stem) < 12:
                self._generation += 1  # processes without a registry look again
                if int(stem) in self._registries:
                    self._reload.add(int(stem))  # reloaded when next asked for
            return
        conversation = self._by_path.get(path)
        if conversation is not None:
            self._read(conversation)
        elif path in self._sub_dirs:
            self._sub_dirs[path].subagents_listed = False  # its directory came (or went)
        elif path.parent in self._sub_dirs:
            self._subagent_file(self._sub_dirs[path.parent], path)
