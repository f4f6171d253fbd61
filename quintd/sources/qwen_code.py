"""Qwen Code's own state: the live registry, the chat transcripts and the sub-agents (seen
with Qwen Code 0.24.4 on Linux; ``../shared/fixtures/qwen-code``; the registry's contract is
``docs/users/features/cross-session-protocol.md`` of QwenLM/qwen-code).

- ``<root>/sessions/<pid>.json``: a live registry, written at start-up, rewritten with a new
  ``sessionId`` on ``/clear``, deleted at exit: ``{pid, procStart: "<boot id>:<start time in
  clock ticks>", sessionId, cwd, name, startedAt (ms), kind, ...}``. ``name`` is derived
  (the directory's name, ``-``, two hex digits of the SHA-256 of the first sessionId:
  ``shop-api-57``, kept across ``/clear``), not a title: it is not used.
- The process: ``qwen`` is a node wrapper that re-spawns itself (the child has
  ``QWEN_CODE_NO_RELAUNCH=true``). The registry names the process that does the work; the
  scanner folds it into the wrapper, so the agent process is the wrapper. That is the child
  where ``bin/qwen`` is ``cli.js`` (the fixture), and the grandchild where npm's shim runs
  ``cli-entry.js`` first (``npm install @qwen-code/qwen-code``, seen here: ``cli-entry.js``
  -> ``node --expose-gc cli.js`` -> its relaunched self). Its registry is the one of the
  process itself (no relaunch) or of one of its descendants (nearest first, a bounded walk),
  taken only when it is fresh: the
  file's pid is that process, and its start time in clock ticks (``/proc/<pid>/stat``) is the
  one ``procStart`` records (elsewhere than Linux: ``startedAt`` within a minute of the
  agent's start). A registry left by a dead process, or by an earlier process with the same
  pid, is ignored. Tool children (``QWEN_CODE=1``, their own session and pty) have none.
  A record with a ``schemaVersion`` above 1 is skipped. Processes hosting several sessions
  (``qwen --acp``, ``qwen serve``) write ``<pid>-<8 hex>.json`` records instead (from the
  protocol page, unverified against a real run): they are not read, so such a process stays
  a session of its own.
- ``<root>/projects/<cwd, each non-alphanumeric as '->/chats/<sessionId>.jsonl``: the
  transcript, created at the first prompt (``sanitizeCwd`` in
  ``packages/core/src/utils/paths.ts`` of QwenLM/qwen-code: one ``-`` per UTF-16 unit).
  Records ``{uuid, parentUuid, sessionId, timestamp, type, subtype?, ...}``:
  ``user`` (a prompt; ``subtype: notification``: a background sub-agent's completion,
  naming its ``<tool-use-id>``), ``assistant`` (``model``; ``message.parts`` with ``text``
  and ``functionCall``), ``tool_result`` (``functionResponse {id}``), ``system``
  (``custom_title``: ``systemPayload {customTitle, titleSource}``; ``ui_telemetry``,
  ``slash_command`` ...). The ``<sessionId>.runtime.json`` beside it is left behind at exit
  and is not needed.
- Name: the last ``/rename`` (``custom_title`` with ``titleSource`` ``manual`` or none) over
  the last automatic title (``titleSource: auto``); else none (the project's name).
  Model: the latest ``assistant`` record's ``model``.
- Busy/idle is not recorded; it is read from the last records: busy after a ``user`` or
  ``tool_result`` record (the model owes an answer) and after an ``assistant`` record with a
  ``functionCall`` (a tool runs or awaits approval); idle after an ``assistant`` record
  without one, and before the first prompt. No record marks an interrupted turn, so an
  inferred "busy" with no growth of the transcript for :data:`BUSY_QUIET_S` becomes unknown
  (the CPU of the process tree decides).
- ``/clear`` is a new ``sessionId`` in the registry: the process runs the new conversation
  and the old one ends.
- ``<root>/projects/<cwd>/subagents/<parent sessionId>/agent-<agentId>.jsonl`` (same
  record format, ``isSidechain: true``) and ``.meta.json`` ``{agentId, agentType,
  description, toolUseId, status: running|completed, isBackgrounded, model}``: sub-agents.
  Done when the meta's status is a final one, when the parent transcript holds a completion
  notification for its ``toolUseId``, or (a foreground sub-agent) the tool's result.
  ``.jsonl.stream`` files are ignored. Verified: ``running`` -> ``completed`` of a
  background sub-agent; from the source, unverified against a real run: the other final
  statuses, the notification and foreground results as the only sign, ``titleSource: auto``.

The directory is ``~/.qwen`` (the fixture's run). Qwen's source also honours
``QWEN_RUNTIME_DIR`` (then ``QWEN_HOME``) for ``sessions/`` and ``projects/``; with either
set, this reader finds nothing and the process is a session of its own.

Only titles, models, ids and statuses are taken: prompt text is never kept.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.files import JsonlTail, ReadStats, identifier, path_text, read_json_file, text
from quintd.sources.processes import descendants
from quintd.sources.spec import ReaderContext, ReaderSpec

# An inferred "busy" (the last record asks for an answer) holds this long after the
# transcript last grew: a turn interrupted by the user, or an API error, writes nothing.
BUSY_QUIET_S = 300.0
# Meta statuses of a sub-agent that has finished (0.24.4 writes "running", "completed").
FINAL_STATUSES = frozenset(
    {"completed", "failed", "error", "cancelled", "canceled", "killed", "aborted", "stopped"}
)
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")
_AGENT_FILE = re.compile(r"^agent-([A-Za-z0-9_.-]{1,160})\.(jsonl|meta\.json)$")
_NOTIFIED = re.compile(r"<tool-use-id>([A-Za-z0-9_.:-]{1,128})</tool-use-id>")
_TICKS = re.compile(r"^(?:[0-9A-Za-z-]{1,64}:)?([0-9]{1,30})$")


def project_dir_name(cwd: str) -> str:
    """Qwen Code's ``sanitizeCwd``: every UTF-16 code unit but ASCII letters and digits
    becomes ``-`` (so a character beyond the BMP becomes two)."""
    return "".join(
        ch if ch.isascii() and ch.isalnum() else ("--" if ord(ch) > 0xFFFF else "-") for ch in cwd
    )


@dataclass
class Registry:
    pid: int
    session_id: str
    cwd: str
    proc_ticks: str | None  # start time in clock ticks since boot, from procStart
    started_at_ms: int | None
    owner: int  # the uid owning the registry file: whose conversation this is


@dataclass
class Subagent:
    agent_id: str
    name: str | None = None
    status: str | None = None  # the meta's status, as written (cleaned)
    tool_use_id: str | None = None
    backgrounded: bool = False
    model: str | None = None
    tail: JsonlTail | None = None
    last_write: float | None = None


@dataclass
class Transcript:
    tail: JsonlTail
    project: Path  # <root>/projects/<cwd>
    manual_title: str | None = None
    auto_title: str | None = None
    model: str | None = None
    status: Status = "idle"  # before the first prompt: waiting for it
    grew_at: float | None = None  # monotonic: the last read that found records
    last_write: float | None = None  # monotonic: growth after the first read
    finished_tools: set[str] = field(default_factory=set)
    notified: set[str] = field(default_factory=set)  # tool-use ids of finished sub-agents
    subagents: dict[str, Subagent] = field(default_factory=dict)
    subagents_listed: bool = False
    # Until the first read has reached the end of the file, what is read is history, not
    # new work, and the completions of sub-agents may still be ahead.
    caught_up: bool = False

    @property
    def title(self) -> str | None:
        return self.manual_title or self.auto_title


class QwenCodeState:
    """One Qwen Code state directory (``~/.qwen``)."""

    platform = "qwen-code"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        self.root = root
        self._clock = context.clock
        self._processes = context.processes
        self.stats = ReadStats()
        self._registries: dict[int, Registry] = {}  # by registry pid: bound ones only
        self._reload: set[int] = set()  # bound registries changed since last read
        self._bindings: dict[tuple[int, int], int] = {}  # agent process -> registry pid
        # Agent processes without a registry yet, and the registry generation they were
        # last looked up at: looked up again only after a registry changed.
        self._searched: dict[tuple[int, int], int] = {}
        self._generation = 0
        self._transcripts: dict[str, Transcript] = {}
        self._dirty: set[Path] = set()

    def watch_dirs(self) -> list[Path]:
        return [self.root / "sessions", self.root / "projects"]

    def changed(self, path: Path) -> None:
        """A file event under the root (from watchdog)."""
        self._dirty.add(path)

    def has_registry_dir(self) -> bool:
        return (self.root / "sessions").is_dir()

    def poll(self) -> None:
        """No change events for this directory: treat every known file as changed."""
        self._reload.update(self._registries)
        self._generation += 1
        for transcript in self._transcripts.values():
            self._dirty.add(transcript.tail.path)
            transcript.subagents_listed = False

    def prepare(self, processes: list[AgentProcess]) -> None:
        """Read what changed; forget the processes that are gone, and every conversation
        no running process runs."""
        self._apply_changes()
        live = {p.key for p in processes}
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
            del self._transcripts[session_id]

    # -- facts ------------------------------------------------------------------------

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        self._apply_changes()
        registry = self._registry_of(proc)
        if registry is None:
            return None
        transcript = self._transcript(registry)
        if transcript is None:
            return ConversationFacts(
                native_id=registry.session_id, status="idle", owner_uid=registry.owner
            )
        status: Status | None = transcript.status
        if (
            status == "busy"
            and transcript.grew_at is not None
            and self._clock() - transcript.grew_at > BUSY_QUIET_S
        ):
            status = None  # an interrupted turn leaves no record: let the CPU decide
        subagents = (
            tuple(self._subagent_facts(transcript, sub) for sub in transcript.subagents.values())
            if transcript.caught_up
            else ()
        )
        return ConversationFacts(
            native_id=registry.session_id,
            status=status,
            name=transcript.title,
            model=transcript.model,
            last_write=transcript.last_write,
            subagents=subagents,
            owner_uid=registry.owner,
        )

    @staticmethod
    def _subagent_facts(transcript: Transcript, sub: Subagent) -> SubagentFacts:
        finished = sub.tool_use_id is not None and (
            sub.tool_use_id in transcript.notified
            or (not sub.backgrounded and sub.tool_use_id in transcript.finished_tools)
        )
        return SubagentFacts(
            agent_id=sub.agent_id,
            name=sub.name,
            done=sub.status in FINAL_STATUSES or finished,
            last_write=sub.last_write,
            status="busy" if sub.status == "running" else None,
            model=sub.model,
        )

    # -- the registry -------------------------------------------------------------------

    def _registry_of(self, proc: AgentProcess) -> Registry | None:
        """The registry of the process, or of the process it re-spawned itself as: its
        child (``bin/qwen`` -> ``cli.js``), or its grandchild (npm's ``.bin/qwen`` is
        ``cli-entry.js``, which starts ``node --expose-gc cli.js``, which relaunches itself)."""
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
        for candidate in (proc.pid, *descendants(self._processes, proc.pid)):
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
        data = found.data
        version = data.get("schemaVersion")
        if isinstance(version, int) and not isinstance(version, bool) and version > 1:
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
        return Registry(
            pid=pid,
            session_id=session_id,
            cwd=path_text(data.get("cwd")) or "",
            proc_ticks=_ticks(data.get("procStart")),
            started_at_ms=started
            if isinstance(started, int) and not isinstance(started, bool)
            else None,
            owner=found.owner,
        )

    def _fresh(self, registry: Registry, proc: AgentProcess) -> bool:
        """A registry written by this very process (or its child), not a leftover of a
        dead one whose pid was reused."""
        if registry.proc_ticks is not None and sys.platform.startswith("linux"):
            return self._processes.start_ticks(registry.pid) == registry.proc_ticks
        if registry.started_at_ms is not None:
            return abs(registry.started_at_ms - proc.start_time_ms) < 60_000
        return True

    # -- transcripts ----------------------------------------------------------------------

    def _transcript(self, registry: Registry) -> Transcript | None:
        transcript = self._transcripts.get(registry.session_id)
        if transcript is None:
            if not registry.cwd:
                return None
            project = self.root / "projects" / project_dir_name(registry.cwd)
            path = project / "chats" / f"{registry.session_id}.jsonl"
            transcript = Transcript(JsonlTail(path, self.root, stats=self.stats), project)
            self._transcripts[registry.session_id] = transcript
            self._read_transcript(transcript)
        if not transcript.subagents_listed:
            self._list_subagents(transcript)
        return transcript

    def _read_transcript(self, transcript: Transcript) -> None:
        records, more = transcript.tail.read_new()
        if more:
            self._dirty.add(transcript.tail.path)  # the rest next pass
        if records:
            transcript.grew_at = self._clock()
            if transcript.caught_up:
                transcript.last_write = transcript.grew_at
        if not more:
            transcript.caught_up = True
        for record in records:
            try:
                _record(transcript, record)
            except (ValueError, TypeError, KeyError, AttributeError):
                self.stats.garbage += 1

    def _list_subagents(self, transcript: Transcript) -> None:
        transcript.subagents_listed = True
        directory = self._subagent_dir(transcript)
        try:
            names = sorted(p.name for p in directory.iterdir())
        except OSError:
            return
        for name in names:
            self._subagent_file(transcript, directory / name)

    @staticmethod
    def _subagent_dir(transcript: Transcript) -> Path:
        return transcript.project / "subagents" / transcript.tail.path.name[: -len(".jsonl")]

    def _subagent_file(self, transcript: Transcript, path: Path) -> None:
        match = _AGENT_FILE.match(path.name)
        if match is None:
            return  # .jsonl.stream, and anything else
        agent_id, kind = match.groups()
        sub = transcript.subagents.get(agent_id)
        if sub is None:
            sub = transcript.subagents[agent_id] = Subagent(agent_id)
        if kind == "meta.json":
            found = read_json_file(path, self.root, self.stats)
            if found is not None:
                meta = found.data
                sub.name = (
                    text(meta.get("description"))
                    or text(meta.get("agentType"))
                    or text(meta.get("subagentName"))
                )
                status = text(meta.get("status"), 32)
                sub.status = status.lower() if status else None
                sub.tool_use_id = identifier(meta.get("toolUseId"))
                sub.backgrounded = meta.get("isBackgrounded") is True
                sub.model = text(meta.get("model")) or sub.model
            return
        first = sub.tail is None
        if sub.tail is None:
            sub.tail = JsonlTail(path, self.root, stats=self.stats)
        records, more = sub.tail.read_new()
        if more:
            self._dirty.add(path)
        if records and not first:  # a first read is history; growth after it is work
            sub.last_write = self._clock()

    # -- changes --------------------------------------------------------------------------

    def _apply_changes(self) -> None:
        if not self._dirty:
            return
        dirty, self._dirty = self._dirty, set()
        for path in dirty:
            self._changed(path)

    def _changed(self, path: Path) -> None:
        try:
            parts = path.relative_to(self.root).parts
        except ValueError:
            return
        if len(parts) == 2 and parts[0] == "sessions" and parts[1].endswith(".json"):
            stem = parts[1][: -len(".json")]
            if stem.isascii() and stem.isdigit() and len(stem) < 12:
                self._generation += 1  # processes without a registry look again
                if int(stem) in self._registries:
                    self._reload.add(int(stem))  # reloaded when next asked for
            return
        if len(parts) < 4 or parts[0] != "projects":
            return
        if parts[2] == "chats" and len(parts) == 4 and parts[3].endswith(".jsonl"):
            transcript = self._transcripts.get(parts[3][: -len(".jsonl")])
            if transcript is not None and transcript.tail.path == path:
                self._read_transcript(transcript)
            return
        if parts[2] == "subagents":
            transcript = self._transcripts.get(parts[3])
            if transcript is None or transcript.project != self.root / "projects" / parts[1]:
                return
            if len(parts) == 4:
                transcript.subagents_listed = False  # its directory came (or went)
            elif len(parts) == 5:
                self._subagent_file(transcript, path)


def _record(transcript: Transcript, record: dict[str, Any]) -> None:
    """One transcript record: what it says about the title, model, status, sub-agents."""
    if record.get("isSidechain") is True:
        return  # a sub-agent's record: not the conversation's own turn
    kind = record.get("type")
    if kind == "assistant":
        transcript.model = text(record.get("model")) or transcript.model
        calls = [p for p in _parts(record) if isinstance(p.get("functionCall"), dict)]
        transcript.status = "busy" if calls else "idle"
    elif kind == "user":
        transcript.status = "busy"  # a prompt or a notification: the model answers next
        if record.get("subtype") == "notification":
            transcript.notified.update(_notified(record))
    elif kind == "tool_result":
        transcript.status = "busy"  # the result goes back to the model
        for part in _parts(record):
            response = part.get("functionResponse")
            if isinstance(response, dict):
                call_id = identifier(response.get("id"))
                if call_id is not None:
                    transcript.finished_tools.add(call_id)
    elif kind == "system" and record.get("subtype") == "custom_title":
        payload = record.get("systemPayload")
        if isinstance(payload, dict):
            title = text(payload.get("customTitle"))
            if title is None:
                return
            if payload.get("titleSource") == "auto":
                transcript.auto_title = title
            else:  # "manual", or a record older than the field: the user's
                transcript.manual_title = title


def _parts(record: dict[str, Any]) -> list[dict[str, Any]]:
    message = record.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("parts"), list):
        return []
    return [part for part in message["parts"] if isinstance(part, dict)]


def _notified(record: dict[str, Any]) -> set[str]:
    """The tool-use ids a sub-agent completion notification names."""
    found: set[str] = set()
    payload = record.get("systemPayload")
    task = payload.get("backgroundTask") if isinstance(payload, dict) else None
    if isinstance(task, dict):
        tool_use_id = identifier(task.get("toolUseId"))
        if tool_use_id is not None:
            found.add(tool_use_id)
    for part in _parts(record):
        body = part.get("text")
        if isinstance(body, str) and body.startswith("<task-notification>"):
            found.update(_NOTIFIED.findall(body, 0, 4096))
    return found


def _ticks(value: object) -> str | None:
    """procStart as recorded: ``<boot id>:<ticks>`` (or bare ticks) -> the ticks."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.isascii():
        match = _TICKS.match(value)
        if match:
            return str(int(match.group(1)))
    return None


SPEC = ReaderSpec(
    platform="qwen-code",
    env_dir=None,
    home_dir=".qwen",
    factory=QwenCodeState,
    writes_at_start=True,  # the registry, as it starts
)
