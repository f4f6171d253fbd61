"""Codex CLI, as 0.171.0 really behaves (``../shared/fixtures/codex``, one TUI, and
``tests/fixtures/codex-two-tuis``, two TUIs in one directory; both README files tell the
runs).

Processes. ``node .../bin/codex`` (npm) runs the native TUI ``.../codex``; the TUI starts a
shared app-server daemon (``codex app-server --listen unix:// ... --managed-daemon``) and its
``app-server daemon pid-update-loop``, which outlive it. The daemon runs the turns: tool
processes descend from it. The daemon and its helpers are never sessions (the platform's
``helper_args``); the TUI is the session's process. ``codex exec`` and a ``codex app-server``
started by an editor (no ``--managed-daemon``) run conversations themselves: theirs are the
rollouts they hold open.

Files under ``${CODEX_HOME:-~/.codex}``:
- ``tui-thread-reference-capabilities/<thread>``: written by a TUI each time it attaches to a
  thread (start-up, ``/new``, resume); never deleted. Its modification time is the moment
  of attaching, its owner the user.
- ``thread-writer-locks/<thread>.lock``: exists while the daemon has the thread loaded
  (until 60 s after the last TUI left it).
- ``sessions/YYYY/MM/DD/rollout-<time>-<thread>.jsonl``: the transcript, from the thread's
  first prompt: ``session_meta`` (id, cwd), ``turn_context`` (model), ``event_msg``
  ``task_started`` / ``task_complete`` (a turn: busy in between).
- ``session_index.jsonl``: ``{id, thread_name}`` for the generated title and every
  ``/rename``; the last line for an id wins.

Sub-agents (``collaboration.spawn_agent``, ``tests/fixtures/codex-subagent``): the daemon
runs each in a thread of its own, with a rollout whose ``session_meta`` names the parent
thread (``source.subagent.thread_spawn.parent_thread_id``, and ``agent_nickname``); no
capability file, no title line. The daemon keeps it loaded until the parent's thread
unloads. It is a child session of the parent conversation, never a TUI's conversation, and
ends with it (or once unloaded with no turn open).

Which TUI a thread belongs to. Nothing on disk names it; what does: each TUI listens on a
loopback port of its own (its MCP server for task tools), and the daemon keeps two
connections to that port for each thread it loaded for that TUI. So each attach event (a
capability file written) goes to the TUI that was running by then and still has a pair of
connections not taken by its other loaded threads; failing that, to the TUI that started
at most 10 s before (a TUI's first thread is created 1.5-4 s after it starts); failing
that, to the only TUI there is. A TUI's conversation is its thread attached last; ``/new``
attaches a new thread, which ends the old conversation; the TUI's exit ends the last.
Known limit: a second TUI resuming a thread that is loaded already gets no connections of
its own, so that thread stays with the first TUI.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

from quintd.model import AgentProcess, ConversationFacts, Status, SubagentFacts
from quintd.sources.attribution import Pass, first_conversation
from quintd.sources.changes import find_files, listing, lmtime
from quintd.sources.conversation_files import Transcript
from quintd.sources.files import JsonlTail, identifier, path_text, stat_under, text
from quintd.sources.registry import spec
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.times import CLOCK_SLACK_S, parse_time

_UUID = r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}"
_THREAD = re.compile(f"^{_UUID}$")
_ROLLOUT = re.compile(f"^rollout-.*-({_UUID})\\.jsonl$")
_SUBCOMMANDS = frozenset(
    {
        "exec",
        "e",
        "app-server",
        "mcp-server",
        "mcp",
        "login",
        "logout",
        "apply",
        "a",
        "sandbox",
        "debug",
        "completion",
        "features",
        "cloud",
        "proto",
        "help",
        "review",
    }
)
CAPABILITIES = "tui-thread-reference-capabilities"
LOCKS = "thread-writer-locks"


@dataclass
class Rollout(Transcript):
    cwd: str | None = None
    started: float | None = None
    model: str | None = None
    open_turns: set[str] = field(default_factory=set)
    seen_turn: bool = False
    parent: str | None = None  # a sub-agent's: the thread that spawned it
    agent_name: str | None = None  # a sub-agent's nickname or role

    @property
    def status(self) -> Status:
        return "busy" if self.open_turns else "idle"


@dataclass
class _Tui:
    """A TUI process (the agent process, or the native child of its npm wrapper)."""

    agent: AgentProcess
    pid: int  # the native TUI's pid


class CodexState(Reader):
    platform = "codex"

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self.ambiguous = 0  # attach events no rule could place
        self._attached: dict[str, float] = {}  # thread -> capability mtime (attach time)
        self._cap_owner: dict[str, int] = {}
        self._bound: dict[str, tuple[int, int]] = {}  # thread -> its TUI's process key
        self._events: list[tuple[float, str]] = []  # attach events not placed yet
        self._rollouts: dict[str, Rollout] = {}
        self._titles: dict[str, str] = {}
        self._index = JsonlTail(self.root / "session_index.jsonl", self.root, stats=self.stats)
        self._index_size = -1
        self._dirty_caps: set[str] = set()
        self._dirty_rollouts: set[Path] = set()
        self._tuis: dict[tuple[int, int], _Tui] = {}
        self._hosts: dict[tuple[int, int], list[str]] = {}  # exec / editor app-server

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self.root / CAPABILITIES, self.root / "sessions"]

    def has_registry_dir(self) -> bool:
        return (self.root / CAPABILITIES).is_dir()

    def changed(self, path: Path) -> None:
        if path.parent == self.root / CAPABILITIES and _THREAD.match(path.name):
            self._dirty_caps.add(path.name)
        elif _ROLLOUT.match(path.name):
            self._dirty_rollouts.add(path)

    def poll(self) -> None:
        self.changes.scanned = False
        self._dirty_rollouts.update(r.tail.path for r in self._rollouts.values())

    def begin(self, now: Pass) -> None:
        self._horizon = now.horizon
        processes = list(now)
        self._classify(processes)
        if not self.changes.scanned:
            self.changes.scanned = True
            self._scan()
        self._read_capabilities()
        self._read_rollouts()
        self._read_titles()
        self._place_events()
        live = set(self._tuis)
        self._bound = {t: key for t, key in self._bound.items() if key in live}

    def facts(self, proc: AgentProcess) -> ConversationFacts | tuple[ConversationFacts, ...] | None:
        if proc.key in self._hosts:
            found = [self._conversation(t) for t in self._hosts[proc.key] if not self._spawned(t)]
            return tuple(f for f in found if f is not None) or None
        # A sub-agent's thread is its parent's child, never the TUI's conversation (even
        # when the TUI shows it).
        mine = [t for t, key in self._bound.items() if key == proc.key and not self._spawned(t)]
        if not mine:
            return None
        current = max(mine, key=lambda t: self._attached.get(t, 0.0))
        return self._conversation(current)

    # -- processes ------------------------------------------------------------------------

    def _classify(self, processes: list[AgentProcess]) -> None:
        """Which agent processes are TUIs, and which host conversations themselves."""
        tuis: dict[tuple[int, int], _Tui] = {}
        hosts: dict[tuple[int, int], list[str]] = {}
        for proc in processes:
            known = self._tuis.get(proc.key)
            if known is not None:
                tuis[proc.key] = known
                continue
            native, argv = self._native(proc)
            sub = next((a for a in argv[1:] if not a.startswith("-")), None)
            if sub in _SUBCOMMANDS and sub != "resume":
                hosts[proc.key] = self._held_rollouts(native)
            else:
                tuis[proc.key] = _Tui(proc, native)
        self._tuis, self._hosts = tuis, hosts

    def _native(self, proc: AgentProcess) -> tuple[int, list[str]]:
        """The native codex process of an agent: itself, or the child of its npm wrapper."""
        argv = self.now.view.argv(proc.pid)
        if _is_codex_binary(proc.exe):
            return proc.pid, argv
        for child in self.now.tree(proc.pid, depth=1):
            if _is_codex_binary(self.now.view.exe(child)):
                return child, self.now.view.argv(child)
        return proc.pid, argv

    def _held_rollouts(self, pid: int) -> list[str]:
        """Threads whose rollout the process holds open (``codex exec``, an editor's app
        server), oldest first."""
        threads = []
        for path in self.now.view.open_files(pid):
            match = _ROLLOUT.match(os.path.basename(path))
            if match and Path(path).is_relative_to(self.root):
                threads.append(match.group(1))
                self._dirty_rollouts.add(Path(path))
        return sorted(set(threads))

    def _pairs(self, tui: _Tui) -> int:
        """Connections the daemon holds to the TUI's own loopback port, in pairs: one pair
        per thread loaded for this TUI."""
        sockets = self.now.view.tcp(tui.pid)
        ports = {s.local for s in sockets if s.state == "LISTEN" and _loopback(s.local)}
        accepted = sum(1 for s in sockets if s.state == "ESTAB" and s.local in ports)
        return accepted // 2

    # -- files ----------------------------------------------------------------------------

    def _scan(self) -> None:
        """Once: the capability files and rollouts that can belong to a running TUI."""
        self._dirty_caps.update(name for name, _ in listing(self.root / CAPABILITIES, _THREAD))
        sessions = self.root / "sessions"
        if sessions.is_dir() and not sessions.is_symlink():
            self._dirty_rollouts.update(find_files(sessions, "rollout-*.jsonl", self._horizon))

    def _read_capabilities(self) -> None:
        dirty, self._dirty_caps = self._dirty_caps, set()
        for thread in dirty:
            info = stat_under(self.root, self.root / CAPABILITIES / thread)
            if info is None:
                continue
            if info.st_mtime < self._horizon:
                continue  # attached before any running TUI started: history
            if self._attached.get(thread) != info.st_mtime:
                self._attached[thread] = info.st_mtime
                self._cap_owner[thread] = info.st_uid
                self._events.append((info.st_mtime, thread))
        for thread in [t for t, at in self._attached.items() if at < self._horizon]:
            self._attached.pop(thread, None)
            self._cap_owner.pop(thread, None)
            self._rollouts.pop(thread, None)
            self._titles.pop(thread, None)

    def _read_rollouts(self) -> None:
        dirty, self._dirty_rollouts = self._dirty_rollouts, set()
        for path in dirty:
            match = _ROLLOUT.match(path.name)
            if match is None or not path.is_relative_to(self.root):
                continue
            thread = match.group(1)
            rollout = self._rollouts.get(thread)
            if rollout is None:
                if lmtime(path) < self._horizon:
                    continue
                tail = JsonlTail(path, self.root, stats=self.stats)
                rollout = self._rollouts[thread] = Rollout(tail)
            if rollout.read(self._clock(), partial(_rollout_record, rollout)):
                self._dirty_rollouts.add(path)

    def _read_titles(self) -> None:
        """``session_index.jsonl``: checked by size each pass, read when it changed. The
        check is a plain ``lstat`` (a fifth of the safe walk's cost): it only decides
        whether to read, and the read itself walks safely (``JsonlTail``)."""
        try:
            size = os.lstat(self._index.path).st_size
        except OSError:
            size = -1
        if size == self._index_size:
            return
        self._index_size = size
        more = True
        while more:
            records, more = self._index.read_new()
            for record in records:
                thread = identifier(record.get("id"))
                title = text(record.get("thread_name"))
                if thread and title and (thread in self._attached or thread in self._rollouts):
                    self._titles[thread] = title

    # -- binding threads to TUIs ----------------------------------------------------------

    def _place_events(self) -> None:
        if not self._events:
            return
        events, self._events = sorted(self._events), []
        pairs: dict[tuple[int, int], int] | None = None
        for attached, thread in events:
            candidates = [
                t for t in self._tuis.values() if t.agent.start_time - CLOCK_SLACK_S <= attached
            ]
            if not candidates:
                if attached > self._horizon and len(events) < 1000:
                    self._events.append((attached, thread))  # its TUI is not seen yet
                continue
            if len(candidates) > 1 and pairs is None:
                pairs = {key: self._pairs(tui) for key, tui in self._tuis.items()}
            chosen = self._choose(thread, attached, candidates, pairs or {})
            if chosen is None:
                self.ambiguous += 1
                continue
            self._bound[thread] = chosen.agent.key

    def _choose(
        self,
        thread: str,
        attached: float,
        candidates: list[_Tui],
        pairs: dict[tuple[int, int], int],
    ) -> _Tui | None:
        if len(candidates) == 1:
            return candidates[0]
        loaded = self._loaded()
        spare = []
        for tui in candidates:
            taken = sum(
                1
                for t, key in self._bound.items()
                if key == tui.agent.key and t != thread and t in loaded
            )
            if pairs.get(tui.agent.key, 0) - taken > 0:
                spare.append(tui)
        if len(spare) == 1:
            return spare[0]
        # A TUI's first thread: attached within seconds of its start, and it has none yet.
        pool = {tui.agent.key: tui for tui in (spare or candidates)}
        fresh = first_conversation(attached, [t.agent for t in pool.values()], self._bound.values())
        return pool[fresh[0].key] if len(fresh) == 1 else None

    def _loaded(self) -> set[str]:
        try:
            names = os.listdir(self.root / LOCKS)
        except OSError:
            return set()
        return {n[: -len(".lock")] for n in names if n.endswith(".lock")}

    def _conversation(self, thread: str) -> ConversationFacts | None:
        rollout = self._rollouts.get(thread)
        owner = self._cap_owner.get(thread)
        if rollout is not None and owner is None:
            owner = rollout.tail.owner
        return ConversationFacts(
            native_id=thread,
            status=rollout.status if rollout is not None else "idle",
            name=self._titles.get(thread),
            model=rollout.model if rollout is not None else None,
            last_write=rollout.last_write if rollout is not None else None,
            subagents=self._subagents(thread),
            owner_uid=owner,
        )

    def _spawned(self, thread: str) -> bool:
        rollout = self._rollouts.get(thread)
        return rollout is not None and rollout.parent is not None

    def _subagents(self, parent: str) -> tuple[SubagentFacts, ...]:
        """The threads this one spawned, by their own rollouts. One is done once the
        daemon no longer has it loaded (its writer lock is gone) and no turn is open."""
        children = [(t, r) for t, r in self._rollouts.items() if r.parent == parent]
        if not children:
            return ()
        loaded = self._loaded()
        return tuple(
            SubagentFacts(
                agent_id=thread,
                name=rollout.agent_name,
                done=thread not in loaded and not rollout.open_turns,
                last_write=rollout.last_write,
                status=rollout.status,
                model=rollout.model,
            )
            for thread, rollout in sorted(children, key=lambda c: c[1].started or 0.0)
        )


def _rollout_record(rollout: Rollout, record: dict[str, Any]) -> None:
    payload = record.get("payload")
    if not isinstance(payload, dict):
        return
    kind = record.get("type")
    if kind == "session_meta":
        rollout.cwd = path_text(payload.get("cwd")) or rollout.cwd
        rollout.started = parse_time(payload.get("timestamp")) or parse_time(
            record.get("timestamp")
        )
        rollout.parent, rollout.agent_name = _spawned_by(payload)
    elif kind == "turn_context":
        rollout.model = text(payload.get("model")) or rollout.model
    elif kind == "event_msg":
        turn = identifier(payload.get("turn_id")) or "?"
        if payload.get("type") == "task_started":
            rollout.open_turns.add(turn)
        elif payload.get("type") in ("task_complete", "turn_aborted"):
            rollout.open_turns.discard(turn)


def _spawned_by(meta: dict[str, Any]) -> tuple[str | None, str | None]:
    """The parent thread and the name of a sub-agent's thread, from its ``session_meta``:
    ``source: {"subagent": {"thread_spawn": {parent_thread_id, depth, agent_nickname,
    agent_role, agent_path}}}`` (Codex 0.90 on; the nickname and role also at the top
    level from 0.105), or a top-level ``parent_thread_id`` with ``thread_source:
    "subagent"`` (later versions). Other sources (``cli``, ``exec``, a review's
    ``{"subagent": "review"}``) name no parent: (None, None)."""
    source = meta.get("source")
    subagent = source.get("subagent") if isinstance(source, dict) else None
    spawn = subagent.get("thread_spawn") if isinstance(subagent, dict) else None
    spawn = spawn if isinstance(spawn, dict) else {}
    parent = identifier(spawn.get("parent_thread_id"))
    if parent is None and meta.get("thread_source") == "subagent":
        parent = identifier(meta.get("parent_thread_id"))
    if parent is None:
        return None, None
    name = next(
        (
            text(where.get(key))
            for key in ("agent_nickname", "agent_role")
            for where in (meta, spawn)
            if text(where.get(key))
        ),
        None,
    )
    return parent, name


def _is_codex_binary(exe: str | None) -> bool:
    return bool(exe) and os.path.basename(exe or "") == "codex"


def _loopback(address: str) -> bool:
    return address.startswith(("127.", "[00000000000000000000000001000000]", "[::1]"))


SPEC = spec("codex")  # where it keeps its state: the registry's line
