"""Codex CLI's processes (see ``codex.py`` for the files): which are TUIs and which run
conversations themselves, and which TUI a thread just attached belongs to.

Nothing on disk names a thread's TUI; what does: each TUI listens on a loopback port of its
own (its MCP server for task tools), and the daemon keeps two connections to that port for
each thread it loaded for that TUI. So each attach event (a capability file written) goes
to the TUI that was running by then and still has a pair of connections not taken by its
other loaded threads; failing that, to the TUI that started at most 10 s before (a TUI's
first thread is created 1.5-4 s after it starts); failing that, to the only TUI there is.
Known limit: a second TUI resuming a thread that is loaded already gets no connections of
its own, so that thread stays with the first TUI.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

from quintd.model import AgentProcess
from quintd.sources.attribution import first_conversation
from quintd.sources.processes import ProcessView

# A first argument naming one of these: the process runs conversations itself, no TUI.
HOST_SUBCOMMANDS = frozenset(
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


@dataclass
class Tui:
    """A TUI process (the agent process, or the native child of its npm wrapper)."""

    agent: AgentProcess
    pid: int  # the native TUI's pid


def connection_pairs(view: ProcessView, tui: Tui) -> int:
    """Connections the daemon holds to the TUI's own loopback port, in pairs: one pair
    per thread loaded for this TUI."""
    sockets = view.tcp(tui.pid)
    ports = {s.local for s in sockets if s.state == "LISTEN" and _loopback(s.local)}
    accepted = sum(1 for s in sockets if s.state == "ESTAB" and s.local in ports)
    return accepted // 2


def choose_tui(
    thread: str,
    attached: float,
    candidates: list[Tui],
    pairs: dict[tuple[int, int], int],
    bound: dict[str, tuple[int, int]],
    loaded: Callable[[], set[str]],
) -> Tui | None:
    """The TUI a thread attached at ``attached`` belongs to, of those running by then;
    None when no rule tells. ``bound``: thread -> its TUI's process key so far;
    ``loaded``: the threads the daemon has loaded (listed only when needed)."""
    if len(candidates) == 1:
        return candidates[0]
    loaded_now = loaded()
    spare = []
    for tui in candidates:
        taken = sum(
            1
            for t, key in bound.items()
            if key == tui.agent.key and t != thread and t in loaded_now
        )
        if pairs.get(tui.agent.key, 0) - taken > 0:
            spare.append(tui)
    if len(spare) == 1:
        return spare[0]
    # A TUI's first thread: attached within seconds of its start, and it has none yet.
    pool = {tui.agent.key: tui for tui in (spare or candidates)}
    fresh = first_conversation(attached, [t.agent for t in pool.values()], bound.values())
    return pool[fresh[0].key] if len(fresh) == 1 else None


def is_codex_binary(exe: str | None) -> bool:
    return bool(exe) and os.path.basename(exe or "") == "codex"


def _loopback(address: str) -> bool:
    return address.startswith(("127.", "[00000000000000000000000001000000]", "[::1]"))
