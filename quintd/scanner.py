"""Incremental scan of the process table for agent processes.

A pid seen before with the same start time costs a set lookup; only new pids get
the deep look (name, argv, exe, cwd, user), once. Tracked agents are re-read every
pass (start time, to catch pid reuse, and CPU time, for activity). Processes that
are young when first seen are re-checked until they settle, because a fork is
seen before its exec (a shell that becomes `claude` keeps its pid).

Processes under an agent of the same platform (gemini-cli's relaunched node child,
codex's native child) are part of that agent, not agents of their own; an agent
started under a different agent is its own agent with ``parent_pid`` set.

Fed by the kernel's process events (:meth:`Scanner.follow_events`, Linux as root), a pass
lists /proc only on a schedule (a safety net) or after events were lost. In between,
:meth:`Scanner.feed` takes each batch of events as it comes: an exec is judged from its
executable and name (:mod:`quintd.exec_filter`) and, if it may be an agent, looked at at
once, while it still runs (an agent that lives 50 ms is reported, started then ended);
shells and the new children of agents are looked at in the next pass if they still run;
exits forget processes. What a user can make the daemon do this way is bounded: looks at
once are rate-limited (the rest wait for the next pass), the queue for the next pass is
bounded (beyond it: counted, and the next pass lists /proc).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import psutil

from quintd.budgets import TokenBucket
from quintd.exec_filter import ExecFilter, Verdict
from quintd.model import AgentProcess, process_text
from quintd.part_settings import PartSettings, setting
from quintd.platforms import (
    BUILTIN_PLATFORMS,
    Match,
    Platform,
    interpreter_script,
    is_interpreter,
    lifecycle_script,
    match_process,
    process_argv,
)
from quintd.proc_events import EventBatch
from quintd.procfs import read_stat, start_ticks
from quintd.signing import SigningInfo, SigningResolver, Target
from quintd.signing.examine import binary

# A process first seen younger than this may still exec into something else.
_SETTLE_SECONDS = 5.0
_MAX_ANCESTRY_DEPTH = 64
FIRST_PASS_SIGNING_S = 2.0  # the start-up pass's wait for identities (before READY)

# Fed by process events:
FULL_LISTING_S = 30.0  # the default time between two listings of /proc (the safety net)
RELIST_GAP_S = 1.0  # after lost events, /proc is listed again, at most this often
# Execs that may be agents, looked at as they come: this many a second, after a burst of
# so many; beyond that they wait for the next pass (a user exec'ing thousands of programs
# named like an agent cannot make the daemon do thousands of looks a second).
LOOKS_PER_S = 200.0
LOOKS_BURST = 400
QUEUE_MAX = 8192  # processes waiting for the next pass; beyond it they are left to a listing
# Looks in one feed or one pass: at most this long (then the rest wait for the next pass),
# so that the loop comes back to the events soon (an agent that lives 50 ms is looked at
# only if its exec is read while it runs).
LOOKS_BUDGET_S = 0.02

T = TypeVar("T")


@dataclass
class KnownProcess:
    start_time: float
    ppid: int
    name: str
    agent: AgentProcess | None
    settle_until: float = 0.0  # re-check the name until then (wall clock)
    argv_key: int = 0  # hash of argv: an exec into a same-named program changes it
    start_ticks: str | None = None  # Linux: start time in ticks since boot
    helper: bool = False  # a helper process of an agent: part of it, never its own
    awaiting_signing: str | None = None  # exe whose signature may still make it an agent
    inspected_at: float = 0.0  # monotonic: when it was found to be an agent
    reported: bool = False  # an agent a pass has returned
    exited: bool = False  # an agent that exited before any pass returned it (events)


class ScannerSettings(PartSettings):
    # The signature table: `[[platforms]]` of the configuration first, then the built-in
    # ones (the configuration merges them).
    platforms: tuple[Platform, ...] = setting(
        BUILTIN_PLATFORMS, doc="The agent signatures, configured ones first."
    )
    signing_budget: float = setting(
        0.25, gt=0, doc="Seconds one pass waits for new agents' signing identities."
    )
    # A script's identity takes milliseconds; a 300 MB binary checked against its package's
    # tarball takes 2-4 s the first time on a 2-core machine (once per version: identities
    # are kept), the live tier's Codex, Claude Code and OpenCode.
    signing_wait: float = setting(
        10.0,
        gt=0,
        doc="Seconds a new agent's first event may wait for its signing identity (after "
        "that it is announced without, and the identity follows as an update).",
    )
    only_uid: int | None = setting(
        None, doc="A per-user daemon watches only its own user's processes (None: every user's)."
    )


@dataclass
class ScanStats:
    passes: int = 0
    inspected: int = 0
    denied: int = 0
    vanished: int = 0
    errors: int = 0
    last_duration_s: float = 0.0
    listings: int = 0  # passes that listed /proc
    # Fed by process events:
    execs_skipped: int = 0  # execs judged not worth a look
    looked_at_once: int = 0  # execs looked at as they came
    put_off: int = 0  # execs that waited for the next pass (the looks' rate limit)
    left_to_listing: int = 0  # processes the queue had no room for
    lost_events: int = 0  # batches the kernel dropped events from


class Scanner:
    def __init__(
        self,
        settings: ScannerSettings | None = None,
        resolver: SigningResolver | None = None,
    ) -> None:
        """``settings.signing_budget``: seconds one pass may wait for new agents' signing
        identities; what is not done by then is finished in the background and shows up
        later."""
        self.settings = settings or ScannerSettings()
        self._resolver = resolver
        self._known: dict[int, KnownProcess] = {}
        # Indexes kept with _known, so that a pass costs what changed, not what exists:
        self._children: dict[int, set[int]] = {}  # ppid -> pids
        self._agents: set[int] = set()  # pids that are agents (or their helpers)
        self._watch: set[int] = set()  # pids looked at again: young, or awaiting a signature
        # The pids of the last /proc listing (Linux), as its names; fed by events, kept
        # current with the processes looked at since and the exits.
        self._listing: set[str] = set()
        self._targets: dict[int, Target] = {}  # agent pid -> the file its identity is from
        self.stats = ScanStats()
        # Fed by process events (follow_events):
        self._events = False
        self._listing_every = FULL_LISTING_S
        self._next_listing = 0.0  # monotonic; 0: at the next pass
        self._last_listing = float("-inf")
        self._relist = False  # events were lost: list again (and check what is known)
        self._filter = ExecFilter(self.settings.platforms)
        self._looks = TokenBucket(LOOKS_PER_S, LOOKS_BURST)
        self._queue_max = QUEUE_MAX
        # Pids to look at in the next passes, oldest first: the execs that may be agents
        # (put off by the looks' limits) before the rest (shells, agents' children, what a
        # later listing found).
        self._urgent: dict[int, None] = {}
        self._queue: dict[int, None] = {}
        self._cold = True  # the next listing looks at every new process at once
        self._tree: set[int] = set()  # agents and what runs under them: their forks count
        self._fresh: list[int] = []  # agents found since the last pass
        # Agents that exited before a pass reported them, whose pid another process took
        # before that pass: kept aside (the pid's entry is the new process's), reported once.
        self._parked: dict[int, KnownProcess] = {}
        self._looks_until = 0.0  # perf_counter: the end of this feed's looks

    def reconfigure(self, settings: ScannerSettings) -> None:
        """New settings; with a new signature table, every process is looked at again."""
        if settings.platforms != self.settings.platforms or settings.only_uid != (
            self.settings.only_uid
        ):
            self._forget_all()
            self._filter = ExecFilter(settings.platforms)
        self.settings = settings

    # -- fed by process events ------------------------------------------------------------

    def follow_events(
        self,
        full_listing_interval: float = FULL_LISTING_S,
        *,
        looks_per_s: float = LOOKS_PER_S,
        looks_burst: int = LOOKS_BURST,
        queue_max: int = QUEUE_MAX,
    ) -> None:
        """From now on the kernel's process events come through :meth:`feed`: a pass lists
        /proc only every ``full_listing_interval`` seconds (the next pass does), or after
        events were lost."""
        self._events = True
        self._listing_every = full_listing_interval
        self._next_listing = 0.0
        self._looks = TokenBucket(looks_per_s, looks_burst)
        self._queue_max = queue_max

    def follow_scan(self) -> None:
        """Back to listing /proc every pass (the events stopped)."""
        self._events = False
        for pid in (*self._urgent, *self._queue):
            self._listing.discard(str(pid))  # the next listing looks at them
        self._urgent.clear()
        self._queue.clear()

    @property
    def fed_by_events(self) -> bool:
        return self._events

    def knows(self, pid: int) -> bool:
        """Whether the process was looked at (and not forgotten since)."""
        return pid in self._known

    def feed(self, batch: EventBatch) -> bool:
        """Take one batch of process events; look at once at the execs that may be agents.
        True if a pass should come soon: an agent was found or exited, or events were lost.
        Ignored unless :meth:`follow_events` was called."""
        if not self._events:
            return False
        soon = False
        now = time.time()
        self._looks_until = time.perf_counter() + LOOKS_BUDGET_S
        for pid in batch.exits:
            soon |= self._exited(pid)
        for child, parent in batch.forks.items():
            if parent in self._tree:  # what an agent starts counts as its work
                self._enqueue(child)
        for pid in batch.execs:
            soon |= self._exec(pid, now)
        for pid, name in batch.comms.items():
            if pid not in batch.execs:
                soon |= self._renamed(pid, name, now)
        if batch.lost:
            self.stats.lost_events += 1
            self._relist = True
            soon = True
        return soon

    def _exited(self, pid: int) -> bool:
        self._listing.discard(str(pid))
        self._queue.pop(pid, None)
        self._urgent.pop(pid, None)
        known = self._known.get(pid)
        if known is None:
            return False
        if known.agent is None:
            self._remove(pid)
            return False
        if known.reported:
            self._remove(pid)
        else:
            known.exited = True  # reported once, by the next pass, then forgotten
        return True

    def _exec(self, pid: int, now: float) -> bool:
        """A process exec'd: a new program in it (a new process, or a known one)."""
        verdict = self._filter.examine(pid)
        known = self._known.get(pid)
        if known is not None:
            in_tree = pid in self._tree
            was_agent = known.agent is not None
            self._taken(pid)  # what was known of it is of the old program
            if was_agent:
                verdict = Verdict.INSPECT  # an agent became something else: look again
            elif verdict is Verdict.SKIP and in_tree:
                verdict = Verdict.LATER  # a tool an agent runs: its CPU is the agent's work
            elif verdict is Verdict.SKIP:
                self._listing.discard(str(pid))  # the next listing looks at it again
        if verdict is Verdict.SKIP:
            self.stats.execs_skipped += 1
            return False
        if verdict is Verdict.LATER:
            self._enqueue(pid)
            return False
        return self._look_soon(pid, now)

    def _renamed(self, pid: int, name: str, now: float) -> bool:
        """A process renamed itself (node's process.title): a look if the new name may be
        an agent's."""
        known = self._known.get(pid)
        if known is not None and known.agent is not None:
            return False
        if self._filter.by_name(name) is not Verdict.INSPECT:
            return False
        if known is not None:
            self._remove(pid)
        return self._look_soon(pid, now)

    def _look_soon(self, pid: int, now: float) -> bool:
        if time.perf_counter() > self._looks_until or not self._looks.ready(time.monotonic()):
            self.stats.put_off += 1
            self._enqueue(pid, urgent=True)
            return True
        self.stats.looked_at_once += 1
        return self._look(pid, now)

    def _enqueue(self, pid: int, urgent: bool = False) -> None:
        queue = self._urgent if urgent else self._queue
        if pid in queue:
            return
        if len(self._urgent) + len(self._queue) >= self._queue_max:
            self.stats.left_to_listing += 1
            self._listing.discard(str(pid))  # new to the next listing
            self._relist = True
            return
        queue[pid] = None

    def _look(self, pid: int, now: float) -> bool:
        """Look at one process (not known yet); True if it is an agent. The processes it
        runs under are looked at too, if not known: which agent it runs under, if any,
        decides whether it is an agent of its own."""
        known = self._inspect(pid, now)
        if known is None or known.agent is None:
            return False
        self._fresh.append(pid)
        ppid = known.ppid
        for _ in range(_MAX_ANCESTRY_DEPTH):
            if ppid <= 1 or ppid in self._known:
                break
            parent = self._inspect(ppid, now)
            if parent is None:
                break
            if parent.agent is not None:
                self._fresh.append(ppid)
            ppid = parent.ppid
        return True

    def _drain_queue(self, now: float) -> None:
        """Look at the processes waiting for this pass that still run (oldest first, for
        at most LOOKS_BUDGET_S)."""
        until = time.perf_counter() + LOOKS_BUDGET_S
        for queue in (self._urgent, self._queue):
            while queue and time.perf_counter() < until:
                pid = next(iter(queue))
                del queue[pid]
                if pid not in self._known:
                    self._look(pid, now)

    def _listing_due(self, mono: float) -> bool:
        if not self._events or mono >= self._next_listing:
            return True
        return self._relist and mono >= self._last_listing + RELIST_GAP_S

    def _check_known(self) -> None:
        """After lost events: forget what is known of processes that are gone or whose
        pid now names another process (their exits were among the lost)."""
        for pid, known in list(self._known.items()):
            if known.agent is not None:
                continue  # looked at every pass anyway
            current = read_stat(pid)
            if current is None or current.start_ticks != known.start_ticks:
                self._remove(pid)
                self._listing.discard(str(pid))

    def _rebuild_tree(self) -> None:
        """The agents and every known process under them."""
        tree: set[int] = set()
        stack = list(self._agents)
        while stack:
            pid = stack.pop()
            if pid not in tree:
                tree.add(pid)
                stack.extend(self._children.get(pid, ()))
        self._tree = tree

    # -- the process table and its indexes ------------------------------------------------

    def _forget_all(self) -> None:
        self._known.clear()
        self._children.clear()
        self._agents.clear()
        self._watch.clear()
        self._targets.clear()
        self._listing = set()
        self._urgent.clear()
        self._queue.clear()
        self._cold = True
        self._tree.clear()
        self._fresh.clear()
        self._parked.clear()
        self._next_listing = 0.0

    def _add(self, pid: int, known: KnownProcess) -> None:
        self._known[pid] = known
        self._children.setdefault(known.ppid, set()).add(pid)
        if known.agent is not None:
            self._agents.add(pid)
        if known.agent is not None or known.ppid in self._tree:
            self._tree.add(pid)
        if known.awaiting_signing is not None or known.settle_until:
            self._watch.add(pid)
        self._listing.add(str(pid))  # known: the next listing need not look at it again

    def _taken(self, pid: int) -> None:
        """The pid is another process's now: forget the old one, but an agent that exited
        before a pass reported it is kept aside for that pass (else a short-lived agent
        whose pid is reused at once would never be reported)."""
        known = self._known.get(pid)
        if known is not None and known.exited and known.agent is not None:
            self._parked[pid] = known
        self._remove(pid)

    def _remove(self, pid: int) -> None:
        known = self._known.pop(pid, None)
        if known is None:
            return
        siblings = self._children.get(known.ppid)
        if siblings is not None:
            siblings.discard(pid)
            if not siblings:
                del self._children[known.ppid]
        self._agents.discard(pid)
        self._watch.discard(pid)
        self._tree.discard(pid)
        self._targets.pop(pid, None)

    def _pids(self) -> tuple[set[int], set[int]]:
        """The pids that appeared and those that went since the last pass. On Linux from
        one listing of /proc compared as text with the last (no number parsed for a pid
        seen before); elsewhere from psutil."""
        try:
            # Every entry, unfiltered: the set difference runs in C, and only the few
            # names that changed are looked at in Python.
            listing = set(os.listdir("/proc"))
        except OSError:
            pids = set(psutil.pids())
            return pids - self._known.keys(), self._known.keys() - pids
        new = {int(n) for n in listing - self._listing if n.isdigit()}
        gone = {int(n) for n in self._listing - listing if n.isdigit()}
        self._listing = listing
        return new, gone

    def scan(self) -> list[AgentProcess]:
        """One pass: every agent process running now, already folded into trees. Fed by
        events, also the agents that exited since they were found, once."""
        started = time.perf_counter()
        now = time.time()
        mono = time.monotonic()
        new_agents = []
        if self._listing_due(mono):
            new_agents += self._list(now, mono)
        if self._events:
            self._drain_queue(now)
        new_agents += self._fresh  # found by events since the last pass, or just now
        self._fresh = []
        departed = []
        for pid in list(self._agents):
            known = self._known.get(pid)
            if known is None or known.agent is None:
                continue
            if known.exited:
                departed.append(pid)  # no process left to read: as it was last seen
            else:
                self._refresh_agent(pid, known, now)
        for pid in list(self._watch):
            known = self._known.get(pid)
            if known is None:
                continue
            if known.awaiting_signing is not None:
                self._recheck_signing(pid, known, now)
            elif known.settle_until > now:
                self._recheck_young(pid, known, now)
            else:
                self._watch.discard(pid)  # settled
        if new_agents and self._resolver is not None:
            # The first pass (at start-up, before READY) waits a little longer: the agents
            # already running are announced at once, complete, if their identities are
            # quick (READY is not held for a slow one: its session is held, by the
            # later passes, up to signing_wait).
            first = self.stats.passes == 0
            wait = min(self.settings.signing_wait, FIRST_PASS_SIGNING_S)
            budget = wait if first else self.settings.signing_budget
            self._wait_for_signing(new_agents, started + budget)
        parked, self._parked = self._parked, {}
        for known in [self._known[pid] for pid in departed] + list(parked.values()):
            _settle_departed(known)
        self._add_descendant_cpu()
        agents = self._fold_trees()
        if parked:
            # One process a pid per pass: the parked agent's last report now, the new
            # process at its pid in the next pass (not marked reported below).
            agents = [a for a in agents if a.pid not in parked]
            agents += fold_trees({**self._known, **parked}, set(parked))
        for pid in departed:
            self._remove(pid)
        for pid in self._agents:
            if pid not in parked:
                self._known[pid].reported = True
        self.stats.passes += 1
        self.stats.last_duration_s = time.perf_counter() - started
        return agents

    def _list(self, now: float, mono: float) -> list[int]:
        """List /proc: look at the processes it shows that are not known yet, forget the
        ones gone. The agents found."""
        if self._events and self._relist:
            self._check_known()
        # Done with the lost events; the queue's overflow below asks for the next listing.
        self._relist = False
        new, gone = self._pids()
        for pid in gone:
            known = self._known.get(pid)
            if known is not None and known.exited:
                continue  # an agent that exited before a pass saw it: reported first
            self._remove(pid)
        found = []
        # Fed by events, a listing after the first is a safety net: what it finds new waits
        # in the queue like the rest (a pass stays short).
        at_once = not self._events or self._cold
        self._cold = False
        for pid in new:
            if pid in self._known:
                self._taken(pid)  # a stale entry of a reused pid
            if not at_once:
                self._enqueue(pid)
                continue
            known = self._inspect(pid, now)
            if known is not None and known.agent is not None:
                found.append(pid)
        self.stats.listings += 1
        if self._events:
            self._last_listing = mono
            self._next_listing = mono + self._listing_every
            self._rebuild_tree()
        return found

    def _inspect(self, pid: int, now: float) -> KnownProcess | None:
        self.stats.inspected += 1
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                name = proc.name()
                start_time = proc.create_time()
                ppid = proc.ppid()
                exe = _safe(proc.exe, "")
                cmdline: list[str] = _safe(proc.cmdline, [])
                argv = process_argv(cmdline, exe)
                argv_key = hash(tuple(cmdline))
                signing = self._verified_identity(exe)
                # The cwd is read only when needed (most processes are not agents): for an
                # interpreter's relative script, and for the agent record.
                cwd = _safe(proc.cwd, None) if _relative_script(exe, argv) else None
                match = match_process(
                    self.settings.platforms, name=name, exe=exe, argv=argv, cwd=cwd, signing=signing
                )
                if match is not None and not self._watched_user(proc):
                    match = None
                environ = _safe(proc.environ, None) if match is not None else None
                if match is not None and lifecycle_script(environ):
                    match = None  # an install's script (opencode-ai's postinstall.mjs)
                agent = None
                if match is not None:
                    cwd = cwd if cwd is not None else _safe(proc.cwd, None)
                    target = _identity_target(proc, match, exe, environ)
                    if target is not None:
                        self._targets[pid] = target
                    agent = self._agent(proc, match, name, start_time, ppid, exe, cwd)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self.stats.vanished += 1
            return None
        except psutil.AccessDenied:
            self.stats.denied += 1
            return None
        except OSError:
            self.stats.errors += 1
            return None
        # A young process may still exec into something else: looked at again until it
        # settles. Fed by events there is no need: its exec will say so.
        young = now - start_time < _SETTLE_SECONDS and not self._events
        settle = start_time + _SETTLE_SECONDS if young else 0.0
        known = KnownProcess(
            start_time, ppid, name, agent, settle, argv_key=argv_key, inspected_at=time.monotonic()
        )
        if match is not None or self._events:
            # Fed by events, every process's: lost events are checked against it.
            known.start_ticks = start_ticks(pid)
        if match is not None:
            known.helper = match.helper
        elif (
            self._resolver is not None
            and _in_app_bundle(exe)
            and signing is None
            and self._resolver.resolve(exe, timeout=0) is None
        ):
            # Only a signature could still say what this bundle is: ask in the background.
            known.awaiting_signing = exe
        self._add(pid, known)
        return known

    def _watched_user(self, proc: psutil.Process) -> bool:
        """A per-user daemon watches only its own user's processes."""
        only = self.settings.only_uid
        return only is None or _uid(proc) == only

    def _verified_identity(self, exe: str) -> tuple[str, str] | None:
        if self._resolver is None or not _in_app_bundle(exe):
            return None
        info = self._resolver.cached(exe)
        return info.verified_identity if info is not None else None

    def _recheck_signing(self, pid: int, known: KnownProcess, now: float) -> None:
        assert self._resolver is not None and known.awaiting_signing is not None
        info = self._resolver.cached(known.awaiting_signing)
        if info is None:
            return
        known.awaiting_signing = None
        if not known.settle_until:
            self._watch.discard(pid)
        if info.verified_identity is not None:
            self._remove(pid)
            self._inspect(pid, now)

    def _wait_for_signing(self, pids: list[int], deadline: float) -> None:
        """Give new agents their signing identity, within this pass's budget."""
        assert self._resolver is not None
        for pid in pids:
            known = self._known.get(pid)
            target = self._targets.get(pid)
            if known is None or known.agent is None or target is None:
                continue
            remaining = deadline - time.perf_counter()
            info = self._resolver.resolve(target, timeout=max(remaining, 0))
            if info is not None:
                known.agent = replace(known.agent, signing_id=info.signing_id, signing_settled=True)

    def _agent(
        self,
        proc: psutil.Process,
        match: Match,
        name: str,
        start_time: float,
        ppid: int,
        exe: str,
        cwd: str | None,
    ) -> AgentProcess:
        user = _safe(proc.username, None)
        target = self._targets.get(proc.pid)
        identity_path = target.path if target is not None else None
        signing_id = None
        settled = True  # nothing to wait for: no resolver, or no file to examine
        if target is not None and self._resolver is not None:
            cached = self._resolver.cached(target)
            signing_id = cached.signing_id if cached is not None else None
            settled = cached is not None
        return AgentProcess(
            platform=match.platform,
            pid=proc.pid,
            ppid=ppid,
            start_time=start_time,
            user=process_text(user) if user is not None else None,
            exe=process_text(exe) if exe else None,
            cwd=process_text(cwd) if cwd is not None else None,
            name=process_text(name),
            matched_by=match.matched_by,
            cpu_time=_cpu_seconds(proc),
            identity_path=identity_path,
            signing_id=signing_id,
            signing_settled=settled,
            uid=_uid(proc),
        )

    def _refresh_agent(self, pid: int, known: KnownProcess, now: float) -> None:
        assert known.agent is not None
        if known.start_ticks is not None:  # Linux: one read instead of psutil's three
            current = read_stat(pid)
            if current is None or current.state == "Z":
                # Gone, or exited and not yet reaped by its parent: the session is over.
                # A zombie's /proc entry stays, unchanged, so it is not looked at again.
                self._remove(pid)
                return
            if current.start_ticks != known.start_ticks:  # the pid was reused
                self._remove(pid)
                self._inspect(pid, now)
                return
            self._refreshed(known, current.cpu_seconds)
            return
        try:
            proc = psutil.Process(pid)
            with proc.oneshot():
                if self._reused(pid, proc, known):
                    self._remove(pid)
                    self._inspect(pid, now)
                    return
                if proc.status() == psutil.STATUS_ZOMBIE:
                    self._remove(pid)  # exited, not reaped yet: over
                    return
                cpu = _cpu_seconds(proc)
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            self._remove(pid)
            return
        except (psutil.AccessDenied, OSError):
            return
        self._refreshed(known, cpu)

    def _refreshed(self, known: KnownProcess, cpu: float) -> None:
        assert known.agent is not None
        agent = _with_cpu(known.agent, cpu)
        target = self._targets.get(agent.pid)
        if agent.signing_id is None and target is not None and self._resolver is not None:
            info = self._resolver.cached(target)  # finished in the background
            if info is not None:
                agent = replace(agent, signing_id=info.signing_id, signing_settled=True)
        if not agent.signing_settled and (
            time.monotonic() - known.inspected_at >= self.settings.signing_wait
        ):
            # Waited long enough: announce without it; it follows as an update.
            agent = replace(agent, signing_settled=True)
        known.agent = agent

    @staticmethod
    def _reused(pid: int, proc: psutil.Process, known: KnownProcess) -> bool:
        """Whether the pid now belongs to another process. On Linux by the start time in
        clock ticks since boot, which a step of the wall clock does not move; elsewhere by
        the start time, with a tolerance."""
        if known.start_ticks is not None:
            return start_ticks(pid) != known.start_ticks
        return abs(proc.create_time() - known.start_time) > 1.0

    def _recheck_young(self, pid: int, known: KnownProcess, now: float) -> None:
        try:
            argv_key = hash(tuple(psutil.Process(pid).cmdline()))
        except (psutil.Error, OSError):
            return
        if argv_key != known.argv_key:  # it exec'd (perhaps node into node): look again
            self._remove(pid)
            self._inspect(pid, now)

    def _add_descendant_cpu(self) -> None:
        """An agent waiting on its tools is working: count the CPU of its live
        descendants (finished ones are already in its own children_* times)."""
        children = self._children
        for root in self._agents:
            extra = 0.0
            stack = list(children.get(root, ()))
            seen = {root}
            while stack:
                pid = stack.pop()
                if pid in seen:
                    continue
                seen.add(pid)
                current = read_stat(pid) if self._known[root].start_ticks is not None else None
                if current is not None:
                    extra += current.cpu_seconds
                else:
                    try:
                        extra += _cpu_seconds(psutil.Process(pid))
                    except (psutil.Error, OSError):
                        continue
                stack.extend(children.get(pid, ()))
            known = self._known[root]
            if extra and known.agent is not None:
                known.agent = replace(known.agent, cpu_time=known.agent.cpu_time + extra)

    def scan_complete(self, timeout: float) -> list[AgentProcess]:
        """A one-shot scan (``quintd scan``): a pass, then up to ``timeout`` seconds for
        every agent's identity (a first pass waits at most FIRST_PASS_SIGNING_S, the time
        a daemon may hold READY; a busy machine's signing workers take longer), then a
        pass that carries them."""
        agents = self.scan()
        if self._resolver is not None:
            self._wait_for_signing([a.pid for a in agents], time.perf_counter() + timeout)
            agents = self.scan()
        return agents

    def identity(self, pid: int) -> SigningInfo | None:
        """What is known of the identity of an agent process (``quintd scan`` shows it)."""
        target = self._targets.get(pid)
        if target is None or self._resolver is None:
            return None
        return self._resolver.cached(target)

    def settling(self) -> bool:
        """Whether an agent still waits for its signing identity (its announcement is
        held; the next pass may release it)."""
        return any(
            (k := self._known.get(pid)) is not None
            and k.agent is not None
            and not k.agent.signing_settled
            for pid in self._agents
        )

    def exit_watch(self) -> dict[int, str | None]:
        """The agent processes whose exit the kernel may report (pid -> start time in
        clock ticks where known, to tell a reused pid)."""
        return {pid: self._known[pid].start_ticks for pid in self._agents if pid in self._known}

    def _fold_trees(self) -> list[AgentProcess]:
        return fold_trees(self._known, self._agents)


def fold_trees(
    known: dict[int, KnownProcess], agents: set[int] | None = None
) -> list[AgentProcess]:
    """The agents of a process table: drop agents that run under an agent of the same
    platform, and helpers; link the rest to the agent they run under. ``agents``: the
    pids that are agents, when known (else every entry is looked at)."""
    result: list[AgentProcess] = []
    for pid in agents if agents is not None else list(known):
        node = known.get(pid)
        if node is None:
            continue
        agent = node.agent
        if agent is None or node.helper:
            continue
        ancestor = _nearest_agent_ancestor(known, pid)
        if ancestor is not None and ancestor.platform == agent.platform:
            continue
        parent_pid = ancestor.pid if ancestor is not None else None
        if parent_pid != agent.parent_pid:
            agent = _with_parent(agent, parent_pid)
            node.agent = agent
        result.append(agent)
    result.sort(key=lambda a: (a.start_time, a.pid))
    return result


def _nearest_agent_ancestor(known: dict[int, KnownProcess], pid: int) -> AgentProcess | None:
    seen = {pid}
    current = known.get(pid)
    for _ in range(_MAX_ANCESTRY_DEPTH):
        if current is None:
            return None
        ppid = current.ppid
        if ppid in seen or ppid <= 0:
            return None
        seen.add(ppid)
        parent = known.get(ppid)
        if parent is None or parent.start_time > current.start_time + 1.0:
            return None  # parent gone, or the pid was reused after it
        if parent.agent is not None:
            return parent.agent
        current = parent
    return None


def _settle_departed(known: KnownProcess) -> None:
    """An agent that exited before its identity was known: there is nothing left to
    wait for, it is announced with what is known (and ends)."""
    if known.agent is not None and not known.agent.signing_settled:
        known.agent = replace(known.agent, signing_settled=True)


def _safe(getter: Callable[[], T], default: T) -> T:
    try:
        return getter()
    except (psutil.AccessDenied, psutil.ZombieProcess, FileNotFoundError, PermissionError):
        return default


def _uid(proc: psutil.Process) -> int | None:
    try:
        return int(proc.uids().real)
    except (psutil.Error, OSError):
        return None


def _relative_script(exe: str, argv: list[str]) -> bool:
    if not is_interpreter(exe, argv):
        return False
    script = interpreter_script(argv)
    return script is not None and not script.startswith("/")


def _identity_target(
    proc: psutil.Process, match: Match, exe: str, environ: dict[str, str] | None
) -> Target | None:
    """The file an agent's identity is taken from: the script an interpreter runs (opened
    safely, only if the process's user could read it), else the executable the kernel ran
    (``/proc/<pid>/exe`` on Linux, never a path from argv)."""
    caches = _npm_caches(environ)
    uid = _uid(proc)
    if match.script:
        return Target(path=match.script, uid=uid, gids=_groups(proc), npm_caches=caches)
    if not exe:
        return None
    if os.path.exists(f"/proc/{proc.pid}/exe"):
        return binary(proc.pid, exe, uid, caches)
    return Target(path=exe, uid=uid)


def _npm_caches(environ: dict[str, str] | None) -> tuple[str, ...]:
    if not environ:
        return ()
    found = [environ.get("npm_config_cache") or environ.get("NPM_CONFIG_CACHE") or ""]
    home = environ.get("HOME")
    if home and home.startswith("/"):
        found.append(os.path.join(home, ".npm"))
    return tuple(c for c in found if c.startswith("/"))


def _groups(proc: psutil.Process) -> frozenset[int]:
    """The process's groups: its real and effective gid, and its supplementary groups."""
    found: set[int] = set()
    try:
        gids = proc.gids()
        found.update((gids.real, gids.effective))
    except (psutil.Error, OSError):
        pass
    try:
        with open(f"/proc/{proc.pid}/status") as fh:
            for line in fh:
                if line.startswith("Groups:"):
                    found.update(int(g) for g in line.split()[1:])
                    break
    except (OSError, ValueError):
        pass
    return frozenset(found)


def _in_app_bundle(exe: str) -> bool:
    return ".app/Contents/" in exe


def _cpu_seconds(proc: psutil.Process) -> float:
    """User + system CPU of the process and of its children it has already reaped."""
    try:
        times = proc.cpu_times()
    except (psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    return float(times.user + times.system + times.children_user + times.children_system)


def _with_cpu(agent: AgentProcess, cpu: float) -> AgentProcess:
    return agent if cpu == agent.cpu_time else replace(agent, cpu_time=cpu)


def _with_parent(agent: AgentProcess, parent_pid: int | None) -> AgentProcess:
    return replace(agent, parent_pid=parent_pid)
