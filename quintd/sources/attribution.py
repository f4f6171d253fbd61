"""Which process runs a conversation: what readers share to tell.

An agent seldom writes down the process of a conversation. What it does write, and what
the readers use:
- a lock or registry naming a pid (Kiro, Copilot CLI, Cline, Claude Code, Qwen Code): the
  pid is the agent process or one of its descendants (npm's loaders and wrappers run the
  real agent as a child), and the file must not be older than that process (a pid reused
  after a crash);
- a file the process holds open (Cursor's ``store.db``, Codex's rollout, Copilot's hold);
- times alone (Crush, goose, OpenCode, Gemini CLI, a Cline hub's conversations): the
  conversation goes to the process running when it was last written that started last
  before it was created (:func:`owner_of`); a process's first conversation is made within
  seconds of its start (:func:`first_conversation`);
- the command line (``--session <id>``): :func:`flag_value`.

The manager hands each reader one :class:`Pass` a pass: the processes of its directory,
their trees (walked once, when first asked for), the horizon and the clock.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, TypeVar

from quintd.model import AgentProcess
from quintd.sources.files import path_text
from quintd.sources.processes import MAX_TREE_DEPTH, ProcessView, Trees
from quintd.sources.times import START_SLACK_S, horizon

ProcessKey = tuple[int, int]


class Named(Protocol):
    native_id: str


T = TypeVar("T", bound=Named)

# A process's first conversation is made this soon after it starts (Codex's first thread,
# Cline's first conversation id).
FIRST_CONVERSATION_S = 10.0


@dataclass(frozen=True)
class Pass:
    """One pass, as a reader is handed it: the agent processes that use its directory, the
    trees below them, the horizon (nothing written before it can be theirs) and the clock
    (monotonic seconds: when files grew)."""

    processes: tuple[AgentProcess, ...]
    view: ProcessView
    now: float
    horizon: float
    trees: Trees = field(compare=False)

    @classmethod
    def of(
        cls,
        processes: Iterable[AgentProcess],
        view: ProcessView,
        clock: Callable[[], float],
        trees: Trees | None = None,
    ) -> Pass:
        procs = tuple(processes)
        return cls(
            processes=procs,
            view=view,
            now=clock(),
            horizon=horizon([p.start_time for p in procs]),
            trees=trees if trees is not None else Trees(view),
        )

    def __iter__(self) -> Iterator[AgentProcess]:
        return iter(self.processes)

    def __len__(self) -> int:
        return len(self.processes)

    @property
    def keys(self) -> frozenset[ProcessKey]:
        return frozenset(p.key for p in self.processes)

    def tree(self, pid: int, depth: int = MAX_TREE_DEPTH) -> list[int]:
        """The descendants of ``pid``, nearest first (walked once a pass)."""
        return self.trees.below(pid, depth)

    def family(self, proc: AgentProcess, depth: int = MAX_TREE_DEPTH) -> tuple[int, ...]:
        """The process and its descendants, nearest first."""
        return (proc.pid, *self.tree(proc.pid, depth))

    def runner(self, pid: int, written: float | None = None) -> AgentProcess | None:
        """The agent process that is ``pid``, or runs it below (a lock or registry's pid):
        itself first, then the first whose tree holds it. With ``written`` (epoch seconds,
        when the file naming the pid was written), a file older than that process is a
        dead one's whose pid came back: None."""
        found = next((p for p in self.processes if p.pid == pid), None)
        if found is None:
            found = next((p for p in self.processes if pid in self.tree(p.pid)), None)
        if found is None or (written is not None and written < found.start_time - START_SLACK_S):
            return None
        return found

    def holding(self, proc: AgentProcess, family: bool = True) -> dict[int, set[str]]:
        """The files the process (and, with ``family``, each of its descendants) holds
        open, by pid."""
        pids = self.family(proc) if family else (proc.pid,)
        return {pid: self.view.open_files(pid) for pid in pids}


def owner_of(created: float, updated: float, procs: Sequence[AgentProcess]) -> AgentProcess | None:
    """The process that ran a conversation (created, last touched: epoch seconds): of the
    processes running when it was last touched, the last started before it was created;
    for one created before all of them (resumed), the last started."""
    alive = [p for p in procs if p.start_time - START_SLACK_S <= updated]
    if not alive:
        return None
    before = [p for p in alive if p.start_time - START_SLACK_S <= created]
    return max(before or alive, key=lambda p: (p.start_time, p.pid))


def latest(
    claims: Iterable[tuple[AgentProcess, T]], order: Callable[[T], Any]
) -> dict[ProcessKey, tuple[str, float]]:
    """Each process's conversation: of those claimed for it (process, conversation), the
    latest by ``order``, as (its ``native_id``, the process's start time)."""
    best: dict[ProcessKey, tuple[AgentProcess, T]] = {}
    for proc, item in claims:
        known = best.get(proc.key)
        if known is None or order(item) > order(known[1]):
            best[proc.key] = (proc, item)
    return {key: (item.native_id, proc.start_time) for key, (proc, item) in best.items()}


def first_conversation(
    when: float,
    candidates: Iterable[AgentProcess],
    taken: Iterable[ProcessKey],
    window: float = FIRST_CONVERSATION_S,
) -> list[AgentProcess]:
    """The candidates for which a conversation begun at ``when`` (epoch seconds) can be the
    first: started at most ``window`` before it, and running none yet."""
    busy = set(taken)
    return [
        p
        for p in candidates
        if p.key not in busy and -START_SLACK_S <= when - p.start_time <= window
    ]


def flag_values(argv: Sequence[str], names: Iterable[str]) -> list[str]:
    """Every value of a command-line flag (``-s x``, ``--session x``, ``--session=x``), in
    order; paths as written (:func:`path_text`)."""
    wanted = tuple(names)
    found = []
    for i, arg in enumerate(argv[1:], 1):
        for name in wanted:
            value = None
            if arg == name and i + 1 < len(argv):
                value = argv[i + 1]
            elif arg.startswith(name + "=") and name.startswith("--"):
                value = arg[len(name) + 1 :]
            cleaned = path_text(value)
            if cleaned is not None:
                found.append(cleaned)
    return found


def flag_value(argv: Sequence[str], names: Iterable[str]) -> str | None:
    """The first value of a command-line flag, or None."""
    found = flag_values(argv, names)
    return found[0] if found else None


def subcommand(argv: Sequence[str], with_value: Iterable[str] = ()) -> str | None:
    """The first word of a command line that is neither a flag, a flag's value (of the
    flags ``with_value``) nor the script a ``node`` wrapper runs."""
    takes = set(with_value)
    skip = False
    for arg in argv[1:]:
        if skip:
            skip = False
            continue
        if arg in takes:
            skip = True
            continue
        if arg.startswith("-") or arg.endswith((".js", ".cjs", ".mjs")):
            continue
        return arg
    return None
