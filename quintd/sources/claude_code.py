"""Claude Code's own state: the live registry and the project transcripts.

- ``<root>/sessions/<pid>.json``: pid, sessionId, cwd, startedAt, procStart, status
  (busy/idle/waiting), name. Rewritten with a new sessionId on ``/clear``; deleted on a
  clean exit; left behind after a crash (stale: its pid is gone or started at another
  time, and it is ignored).
- ``<root>/projects/<cwd, non-alphanumerics as '-'>/<sessionId>.jsonl``: the
  transcript. Name: the user's ``custom-title`` over the generated ``ai-title`` over a
  ``summary``; model: the latest ``assistant`` record's ``message.model``.
- ``.../<sessionId>/subagents/agent-<id>.jsonl`` and ``.meta.json``: sub-agents; done
  when the parent transcript holds the result for the meta's ``toolUseId``.

Only titles, models, ids and statuses are taken: prompt text is never read into quintd's
state.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.files import JsonlTail, ReadStats, path_text, read_json_file, text
from quintd.sources.processes import LiveProcesses, descendants
from quintd.sources.spec import ReaderContext, ReaderSpec

_STATUSES: dict[str, Status] = {"busy": "busy", "idle": "idle", "waiting": "waiting"}
_AGENT_FILE = re.compile(r"^agent-([A-Za-z0-9_-]{1,128})\.(jsonl|meta\.json)$")
_SESSION_ID = re.compile(r"^[A-Za-z0-9_-]{1,128}$")


def _is_work(record: dict[str, Any]) -> bool:
    """A record of a turn: a prompt, an answer, a tool's result. Not a title, a rename, a
    slash command or what ``/exit`` writes (they sent an `active` that no work was)."""
    kind = record.get("type")
    if kind == "assistant":
        return True
    if kind != "user" or record.get("isMeta"):
        return False
    message = record.get("message")
    content = message.get("content") if isinstance(message, dict) else None
    return not (isinstance(content, str) and content.lstrip().startswith(("<command-", "<local-")))


def _subagent_facts(sub: Subagent, transcript: Transcript, registry: Registry) -> SubagentFacts:
    done = sub.tool_use_id is not None and sub.tool_use_id in transcript.finished_tools
    return SubagentFacts(
        agent_id=sub.agent_id,
        name=sub.name,
        done=done,
        last_write=sub.last_write,
        # Running while its parent's turn waits for it: a sub-agent waiting for the model
        # writes nothing, and is still at work (it flipped idle/active while it ran).
        status="busy" if not done and registry.status == "busy" else None,
    )


def project_dir_name(cwd: str) -> str:
    return re.sub(r"[^A-Za-z0-9]", "-", cwd)


@dataclass
class Registry:
    pid: int
    session_id: str
    cwd: str
    status: Status | None
    name: str | None
    proc_start: str | None
    started_at_ms: int | None
    owner: int  # the uid owning the registry file: whose conversation this is


@dataclass
class Subagent:
    agent_id: str
    name: str | None = None
    tool_use_id: str | None = None
    tail: JsonlTail | None = None
    last_write: float | None = None


@dataclass
class Transcript:
    tail: JsonlTail
    custom_title: str | None = None
    ai_title: str | None = None
    summary: str | None = None
    model: str | None = None
    last_write: float | None = None
    finished_tools: set[str] = field(default_factory=set)
    subagents: dict[str, Subagent] = field(default_factory=dict)
    subagents_listed: bool = False
    # Until the first read has reached the end of the file, what is read is history, not
    # new work, and results of sub-agents may still be ahead.
    caught_up: bool = False

    @property
    def title(self) -> str | None:
        return self.custom_title or self.ai_title or self.summary


def linux_start_ticks(pid: int) -> str | None:
    """What Claude Code records as procStart: the start time in ticks since boot."""
    return LiveProcesses().start_ticks(pid)


class ClaudeCodeState:
    """One Claude Code state directory (``~/.claude`` or ``$CLAUDE_CONFIG_DIR``)."""

    platform = "claude-code"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        self.root = root
        self._clock = context.clock
        self._processes = context.processes
        self.stats = ReadStats()
        self._registries: dict[int, Registry | None] = {}
        self._reload: set[int] = set()  # registries changed since last read
        self._transcripts: dict[str, Transcript] = {}
        self._dirty: set[Path] = set()

    def watch_dirs(self) -> list[Path]:
        return [self.root / "sessions", self.root / "projects"]

    def prepare(self, processes: list[AgentProcess]) -> None:
        """Nothing to do before a pass: the registry names each process's conversation."""

    def changed(self, path: Path) -> None:
        """A file event under the root (from watchdog)."""
        self._dirty.add(path)

    # -- facts ------------------------------------------------------------------------

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        self._apply_changes()
        registry = self._registry_of(proc)
        if registry is None:
            return None
        transcript = self._transcript(registry)
        subagents: tuple[SubagentFacts, ...] = ()
        name = registry.name
        model = None
        last_write = None
        if transcript is not None:
            name = transcript.title or name
            model = transcript.model
            last_write = transcript.last_write
            subagents = (
                ()
                if not transcript.caught_up
                else tuple(
                    _subagent_facts(sub, transcript, registry)
                    for sub in transcript.subagents.values()
                )
            )
        return ConversationFacts(
            native_id=registry.session_id,
            status=registry.status,
            name=name,
            model=model,
            last_write=last_write,
            subagents=subagents,
            owner_uid=registry.owner,
        )

    def poll(self) -> None:
        """No change events for this directory: treat every known file as changed."""
        self._reload.update(self._registries)
        for transcript in self._transcripts.values():
            self._dirty.add(transcript.tail.path)
            for sub in transcript.subagents.values():
                if sub.tail is not None:
                    self._dirty.add(sub.tail.path)
            transcript.subagents_listed = False

    def has_registry_dir(self) -> bool:
        return (self.root / "sessions").is_dir()

    # -- the registry -------------------------------------------------------------------

    def _registry_of(self, proc: AgentProcess) -> Registry | None:
        """The process's registry, or its native child's: npm's ``cli-wrapper.cjs`` runs
        the native binary as a child, and the registry names that child."""
        registry = self._registry(proc.pid)
        if registry is not None and self._fresh(registry, proc.pid, proc.start_time_ms):
            return registry
        for child in descendants(self._processes, proc.pid, depth=1):
            registry = self._registry(child)
            if registry is not None and self._fresh(registry, child, None):
                return registry
        return None

    def _registry(self, pid: int) -> Registry | None:
        if pid not in self._registries or pid in self._reload:
            self._reload.discard(pid)
            loaded = self._load_registry(pid)
            # Claude Code rewrites the registry in place: a read can catch it empty or half
            # written (the next change event brings the rest), and it deletes it on /exit
            # just before the process ends. Either way the last good one still holds.
            if loaded is not None or self._registries.get(pid) is None:
                self._registries[pid] = loaded
        return self._registries[pid]

    def _load_registry(self, pid: int) -> Registry | None:
        found = read_json_file(self.root / "sessions" / f"{pid}.json", self.root, self.stats)
        if found is None:
            return None
        data = found.data
        session_id = data.get("sessionId")
        if data.get("pid") != pid or not isinstance(session_id, str):
            self.stats.garbage += 1
            return None
        if not _SESSION_ID.match(session_id):
            self.stats.garbage += 1
            return None
        started = data.get("startedAt")
        name = text(data.get("name"))
        if data.get("nameSource") == "derived":
            name = None  # generated from the directory: the project name says as much
        status = data.get("status")
        return Registry(
            pid=pid,
            session_id=session_id,
            cwd=path_text(data.get("cwd")) or "",
            status=_STATUSES.get(status) if isinstance(status, str) else None,
            name=name,
            proc_start=_proc_start(data.get("procStart")),
            started_at_ms=started if isinstance(started, int) else None,
            owner=found.owner,
        )

    def _fresh(self, registry: Registry, pid: int, start_time_ms: int | None) -> bool:
        """A registry written by this very process, not a leftover of a dead one whose
        pid was reused."""
        if registry.proc_start is not None and sys.platform.startswith("linux"):
            return self._processes.start_ticks(pid) == registry.proc_start
        if registry.started_at_ms is not None and start_time_ms is not None:
            return abs(registry.started_at_ms - start_time_ms) < 60_000
        return start_time_ms is not None

    # -- transcripts ----------------------------------------------------------------------

    def _transcript(self, registry: Registry) -> Transcript | None:
        transcript = self._transcripts.get(registry.session_id)
        if transcript is None:
            if not registry.cwd:
                return None
            path = (
                self.root
                / "projects"
                / project_dir_name(registry.cwd)
                / f"{registry.session_id}.jsonl"
            )
            transcript = Transcript(JsonlTail(path, self.root, stats=self.stats))
            self._transcripts[registry.session_id] = transcript
            self._read_transcript(transcript)
        if not transcript.subagents_listed:
            self._list_subagents(transcript)
        return transcript

    def _read_transcript(self, transcript: Transcript) -> None:
        records, more = transcript.tail.read_new()
        if more:
            self._dirty.add(transcript.tail.path)  # the rest next pass
        if transcript.caught_up and any(_is_work(r) for r in records):
            transcript.last_write = self._clock()
        if not more:
            transcript.caught_up = True
        for record in records:
            kind = record.get("type")
            if kind == "custom-title":
                transcript.custom_title = text(record.get("customTitle")) or transcript.custom_title
            elif kind == "ai-title":
                transcript.ai_title = text(record.get("aiTitle")) or transcript.ai_title
            elif kind == "summary":
                transcript.summary = text(record.get("summary")) or transcript.summary
            elif kind == "assistant":
                message = record.get("message")
                if isinstance(message, dict):
                    transcript.model = text(message.get("model")) or transcript.model
            elif kind == "user":
                transcript.finished_tools.update(_tool_results(record))

    def _list_subagents(self, transcript: Transcript) -> None:
        directory = transcript.tail.path.with_suffix("") / "subagents"
        transcript.subagents_listed = True
        try:
            names = sorted(p.name for p in directory.iterdir())
        except OSError:
            return
        for name in names:
            self._subagent_file(transcript, directory / name)

    def _subagent_file(self, transcript: Transcript, path: Path) -> None:
        match = _AGENT_FILE.match(path.name)
        if match is None:
            return
        agent_id, kind = match.groups()
        sub = transcript.subagents.setdefault(agent_id, Subagent(agent_id))
        if kind == "meta.json":
            found = read_json_file(path, self.root, self.stats)
            if found is not None:
                meta = found.data
                sub.name = text(meta.get("description")) or text(meta.get("agentType"))
                sub.tool_use_id = text(meta.get("toolUseId"), 256)
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
        dirty, self._dirty = self._dirty, set()
        for path in dirty:
            self._changed(path)

    def _changed(self, path: Path) -> None:
        try:
            relative = path.relative_to(self.root)
        except ValueError:
            return
        parts = relative.parts
        if len(parts) == 2 and parts[0] == "sessions" and parts[1].endswith(".json"):
            stem = parts[1][: -len(".json")]
            if stem.isdigit():
                self._reload.add(int(stem))  # reloaded when next asked for
            return
        if len(parts) == 3 and parts[0] == "projects" and parts[2].endswith(".jsonl"):
            transcript = self._transcripts.get(parts[2][: -len(".jsonl")])
            if transcript is not None and transcript.tail.path == path:
                self._read_transcript(transcript)
            return
        if len(parts) == 5 and parts[0] == "projects" and parts[3] == "subagents":
            transcript = self._transcripts.get(parts[2])
            if transcript is not None:
                self._subagent_file(transcript, path)


def _proc_start(value: object) -> str | None:
    """procStart as recorded: clock ticks since boot (digits only)."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return str(value)
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) < 32:
        return value
    return None


def _tool_results(record: dict[str, Any]) -> set[str]:
    message = record.get("message")
    if not isinstance(message, dict) or not isinstance(message.get("content"), list):
        return set()
    return {
        item["tool_use_id"]
        for item in message["content"]
        if isinstance(item, dict)
        and item.get("type") == "tool_result"
        and isinstance(item.get("tool_use_id"), str)
    }


SPEC = ReaderSpec(
    platform="claude-code",
    env_dir="CLAUDE_CONFIG_DIR",
    home_dir=".claude",
    factory=ClaudeCodeState,
    writes_at_start=True,  # the registry, as it starts (or once ~/.claude exists)
)
