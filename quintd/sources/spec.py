"""What a reader of an agent's own state is: the protocol every reader implements, the base
most readers build on, and the spec value the registry lists for each agent."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from quintd.model import AgentProcess, ConversationFacts
from quintd.sources.attribution import Pass
from quintd.sources.changes import Changes
from quintd.sources.files import ReadStats
from quintd.sources.processes import LiveProcesses, ProcessView


class AgentState(Protocol):
    """One agent state directory (``~/.claude``, ``$CODEX_HOME`` ...), read as it changes.

    The manager calls, each pass: :meth:`changed` for every file event under ``root``
    since the last pass; :meth:`prepare` once with the pass (the processes that use this
    directory, their trees, the horizon, the clock; a reader used alone may be handed the
    processes only); then :meth:`facts` for each of them. :meth:`poll` stands in for file
    events where the directory cannot be watched."""

    root: Path
    stats: ReadStats

    def watch_dirs(self) -> list[Path]:
        """Directories to watch, with their subdirectories (a reader may also define
        ``flat_dirs() -> set[Path]``: those of them to watch without subdirectories)."""
        ...

    def changed(self, path: Path) -> None: ...

    def prepare(self, processes: Pass | Iterable[AgentProcess]) -> None: ...

    def facts(
        self, proc: AgentProcess
    ) -> ConversationFacts | Sequence[ConversationFacts] | None: ...

    def has_registry_dir(self) -> bool: ...

    def poll(self) -> None: ...


@dataclass(frozen=True)
class ReaderContext:
    """What a reader is given besides its directory."""

    clock: Callable[[], float]  # monotonic seconds: when a file grew
    processes: ProcessView = field(default_factory=LiveProcesses)


class Reader:
    """The base of a reader: its directory, its counts, its change tracking, and the pass
    it was last handed (:attr:`now`). A reader implements :meth:`begin` (read what changed,
    bind conversations to processes) and :meth:`facts`."""

    platform = ""

    def __init__(self, root: Path, context: ReaderContext) -> None:
        self.root = root
        self.stats = ReadStats()
        self.changes = Changes()
        self._clock = context.clock
        self._processes = context.processes
        self.now = Pass.of((), context.processes, context.clock)

    def watch_dirs(self) -> list[Path]:
        return []

    def has_registry_dir(self) -> bool:
        return any(d.is_dir() for d in self.watch_dirs())

    def changed(self, path: Path) -> None:
        self.changes.mark(path)

    def poll(self) -> None:
        self.changes.poll()

    def prepare(self, processes: Pass | Iterable[AgentProcess]) -> None:
        self.now = (
            processes
            if isinstance(processes, Pass)
            else Pass.of(processes, self._processes, self._clock)
        )
        self.begin(self.now)

    def begin(self, now: Pass) -> None:
        """This pass's reading, before its facts."""


# (state directory, context) -> the reader of that directory
StateFactory = Callable[[Path, ReaderContext], AgentState]


@dataclass(frozen=True)
class ReaderClass:
    """A reader class named, imported when the first directory of its agent is read: a
    machine runs a few of the agents quintd knows, and every reader module loaded for
    nothing is resident memory of the daemon (the footprint budget of ``tests/bench/scan.py``).
    Called as the class would be."""

    module: str  # quintd.sources.<agent>
    name: str  # the class of that module that reads one state directory

    def load(self) -> StateFactory:
        factory: StateFactory = getattr(importlib.import_module(self.module), self.name)
        return factory

    def __call__(self, root: Path, context: ReaderContext) -> AgentState:
        return self.load()(root, context)


@dataclass(frozen=True)
class ReaderSpec:
    """How to find and read one platform's state: one line of the registry
    (``registry.py``), which each reader module also exports as ``SPEC``."""

    platform: str  # a platform id of the signature table (quintd/platforms.py)
    env_dir: str | None  # an environment variable naming the state directory
    home_dir: str  # else this directory in the home directory
    factory: StateFactory  # the registry's: a ReaderClass (imported when first needed)
    # The agent writes its state as it starts (a registry, a session file): a young
    # process gets no session until that state names its conversation (or the grace
    # period ends), so its first event already carries it.
    writes_at_start: bool = False
