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

Which TUI a thread belongs to: the connections the daemon keeps to each TUI's own port
(``codex_tuis.py``). A TUI's conversation is its thread attached last; ``/new`` attaches a
new thread, which ends the old conversation; the TUI's exit ends the last. What a rollout
says of its thread: ``codex_rollouts.py``.
"""

from __future__ import annotations

import os
import re
from functools import partial
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts, SubagentFacts
from quintd.sources.attribution import Pass
from quintd.sources.changes import find_files, listing, lmtime
from quintd.sources.codex_rollouts import ROLLOUT_NAME, THREAD_ID, Rollout, rollout_record
from quintd.sources.codex_tuis import (
    HOST_SUBCOMMANDS,
    Tui,
    choose_tui,
    connection_pairs,
    is_codex_binary,
)
from quintd.sources.files import JsonlTail, identifier, stat_under, text
from quintd.sources.registry import spec
from quintd.sources.spec import Reader, ReaderContext
from quintd.sources.times import CLOCK_SLACK_S

_THREAD = re.compile(f"^{THREAD_ID}$")
CAPABILITIES = "tui-thread-reference-capabilities"
LOCKS = "thread-writer-locks"


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
        self._tuis: dict[tuple[int, int], Tui] = {}
        self._hosts: dict[tuple[int, int], list[str]] = {}  # exec / editor app-server

    # -- the AgentState protocol ----------------------------------------------------------

    def watch_dirs(self) -> list[Path]:
        return [self.root / CAPABILITIES, self.root / "sessions"]

    def has_registry_dir(self) -> bool:
        return (self.root / CAPABILITIES).is_dir()

    def changed(self, path: Path) -> None:
        if path.parent == self.root / CAPABILITIES and _THREAD.match(path.name):
            self._dirty_caps.add(path.name)
        elif ROLLOUT_NAME.match(path.name):
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
        tuis: dict[tuple[int, int], Tui] = {}
        hosts: dict[tuple[int, int], list[str]] = {}
        for proc in processes:
            known = self._tuis.get(proc.key)
            if known is not None:
                tuis[proc.key] = known
                continue
            native, argv = self._native(proc)
            sub = next((a for a in argv[1:] if not a.startswith("-")), None)
            if sub in HOST_SUBCOMMANDS and sub != "resume":
                hosts[proc.key] = self._held_rollouts(native)
            else:
                tuis[proc.key] = Tui(proc, native)
        self._tuis, self._hosts = tuis, hosts

    def _native(self, proc: AgentProcess) -> tuple[int, list[str]]:
        """The native codex process of an agent: itself, or the child of its npm wrapper."""
        argv = self.now.view.argv(proc.pid)
        if is_codex_binary(proc.exe):
            return proc.pid, argv
        for child in self.now.tree(proc.pid, depth=1):
            if is_codex_binary(self.now.view.exe(child)):
                return child, self.now.view.argv(child)
        return proc.pid, argv

    def _held_rollouts(self, pid: int) -> list[str]:
        """Threads whose rollout the process holds open (``codex exec``, an editor's app
        server), oldest first."""
        threads = []
        for path in self.now.view.open_files(pid):
            match = ROLLOUT_NAME.match(os.path.basename(path))
            if match and Path(path).is_relative_to(self.root):
                threads.append(match.group(1))
                self._dirty_rollouts.add(Path(path))
        return sorted(set(threads))

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
            match = ROLLOUT_NAME.match(path.name)
            if match is None or not path.is_relative_to(self.root):
                continue
            thread = match.group(1)
            rollout = self._rollouts.get(thread)
            if rollout is None:
                if lmtime(path) < self._horizon:
                    continue
                tail = JsonlTail(path, self.root, stats=self.stats)
                rollout = self._rollouts[thread] = Rollout(tail)
            if rollout.read(self._clock(), partial(rollout_record, rollout)):
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
                pairs = {
                    key: connection_pairs(self.now.view, tui) for key, tui in self._tuis.items()
                }
            chosen = choose_tui(
                thread, attached, candidates, pairs or {}, self._bound, self._loaded
            )
            if chosen is None:
                self.ambiguous += 1
                continue
            self._bound[thread] = chosen.agent.key

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


SPEC = spec("codex")  # where it keeps its state: the registry's line
