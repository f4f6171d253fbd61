"""Cline CLI's processes (which conversation is whose: ``cline.py``): the hub daemons, the
processes that run a CLI's own conversations, and the CLIs in local mode.

``node .../bin/cline`` (npm) is a wrapper that runs the Bun binary ``bin/.cline`` (without
the postinstall link, ``@cline/cli-<os>-<arch>/.../cline``) as its child and exits with
it; the wrapper is the agent process the scanner reports. A ``cline`` that finds no live
hub starts a **hub daemon**, ``.cline --cline-hub-daemon --cwd <dir> ...`` (its own
session, outliving every CLI), which is never a session. A CLI in local mode runs its
conversations in itself or its Bun child, and holds ``sessions.db`` open. The hub's
discovery record ``data/locks/hub/production.json`` (``pid``, ``startedAt``) tells when
the hub with that pid started.
"""

from __future__ import annotations

from pathlib import Path

from quintd.model import AgentProcess
from quintd.sources.attribution import Pass, ProcessKey
from quintd.sources.files import ReadStats, read_json_file
from quintd.sources.times import parse_time

HUB_ARG = "--cline-hub-daemon"
HUB_RECORD = Path("data") / "locks" / "hub" / "production.json"


class ClineProcesses:
    """What is known of the running Cline processes of one ``~/.cline`` directory."""

    def __init__(self, root: Path, db: Path, stats: ReadStats) -> None:
        self._root = root
        self._db = db
        self._stats = stats
        self.hubs: set[ProcessKey] = set()  # agent processes that are hub daemons
        self._local: set[ProcessKey] = set()  # CLIs seen running their own sessions
        self._runners: dict[ProcessKey, tuple[int, ...]] = {}

    def update(self, now: Pass, live: dict[ProcessKey, AgentProcess], new: set[ProcessKey]) -> None:
        """The agent processes changed: ``live`` run now, ``new`` of them were not before."""
        for key in new:
            if is_hub(now, live[key].pid):
                self.hubs.add(key)
        for key in [k for k in self._runners if k not in live]:
            del self._runners[key]
        self._local &= live.keys()
        self.hubs &= live.keys()

    def runner_pids(self, now: Pass, proc: AgentProcess) -> tuple[int, ...]:
        """The process and its Bun child (the npm wrapper's): who runs a local session."""
        known = self._runners.get(proc.key)
        if known is not None:
            return known
        kids = tuple(c for c in now.tree(proc.pid, 1) if not is_hub(now, c))
        found = (proc.pid, *kids)
        if kids:
            self._runners[proc.key] = found  # the child stays for the wrapper's life
        return found

    def runs_locally(self, now: Pass, proc: AgentProcess) -> bool:
        """The CLI runs its own conversations (seen running one, or holding the database)."""
        if proc.key in self._local:
            return True
        db = str(self._db)
        for pid in self.runner_pids(now, proc):
            if db in now.view.open_files(pid):
                self._local.add(proc.key)
                return True
        return False

    def seen_local(self, proc: AgentProcess) -> None:
        """The CLI was found running a conversation of its own."""
        self._local.add(proc.key)

    def hub_started(self, pid: int) -> float | None:
        """When the hub with this pid started, if its discovery record names it."""
        record = read_json_file(self._root / HUB_RECORD, self._root, self._stats)
        if record is None or record.data.get("pid") != pid:
            return None
        return parse_time(record.data.get("startedAt"))


def is_hub(now: Pass, pid: int) -> bool:
    return HUB_ARG in now.view.argv(pid)
