"""What wakes the daemon between scans: an agent's exit (from the kernel) and an agent's
first write (from the file watcher). The scan interval here is 300 s, so an event that
arrives within the test's deadline can only have come from one of them."""

from __future__ import annotations

import json
import os
import signal
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Agents, DaemonProcess, clean_env, wait_until, write_config
from ingest_server import IngestServer

from quintd.procfs import read_stat, start_ticks

pytestmark = pytest.mark.skipif(not hasattr(os, "pidfd_open"), reason="pidfd is Linux 5.3+")

NEVER = 300.0  # the scan interval: no pass comes from it during a test


def start(short_tmp: Path, server: IngestServer, agents: Agents) -> DaemonProcess:
    config = write_config(short_tmp, endpoint=server.url, interval=NEVER)
    # A per-user daemon watches its user's home: the agents' home here.
    daemon = DaemonProcess(config, clean_env(HOME=str(agents.home))).start()
    daemon.wait_ready()
    return daemon


def states(server: IngestServer, session_id: str) -> list[str]:
    return [r.event["state"] for r in server.events if r.event["session_id"] == session_id]


def test_an_exit_is_sent_at_once_even_before_the_parent_reaps_it(
    short_tmp: Path, agents: Agents
) -> None:
    with IngestServer() as server:
        amp = agents.binary("amp")  # there at the daemon's first pass
        daemon = start(short_tmp, server, agents)
        try:
            # Its own session (other agents on the machine are reported too).
            sid = wait_until(
                lambda: next(
                    (
                        s["session_id"]
                        for s in (daemon.status() or {"sessions": []})["sessions"]
                        if s["pid"] == amp.pid
                    ),
                    None,
                ),
                what="its session",
            )
            server.wait_for(lambda evs: states(server, sid) == ["active"], what="active")
            os.kill(amp.pid, signal.SIGKILL)  # not reaped: a zombie, still in /proc
            server.wait_for(
                lambda evs: any(
                    r.event["session_id"] == sid and r.event["state"] == "ended" for r in evs
                ),
                what="ended",
            )
            stat = read_stat(amp.pid)
            assert stat is not None and stat.state == "Z"  # it was still a zombie
            status = daemon.status()
            assert status is not None
            assert status["scan"]["exits_from"] == "pidfd"
            assert status["scan"]["early_passes"] >= 1
            assert status["scan"]["passes"] <= 1 + status["scan"]["early_passes"]
            assert states(server, sid) == ["active", "ended"]
        finally:
            amp.wait()
            daemon.terminate()


def test_an_agent_that_writes_its_state_as_it_starts_is_seen_at_once(
    short_tmp: Path, agents: Agents
) -> None:
    sessions = agents.home / ".claude" / "sessions"
    sessions.mkdir(parents=True)  # Claude Code has run here before
    with IngestServer() as server:
        daemon = start(short_tmp, server, agents)
        try:
            claude = agents.binary("claude")
            conversation = str(uuid.uuid4())
            record: dict[str, Any] = {
                "pid": claude.pid,
                "sessionId": conversation,
                "cwd": str(agents.home),
                "startedAt": 1_795_877_218_508,
                "procStart": start_ticks(claude.pid),
                "kind": "interactive",
                "name": "wakeup-test",
                "status": "busy",
            }
            (sessions / f"{claude.pid}.json").write_text(json.dumps(record))
            # (Other users' agents may be reported too, before their identity is known:
            # this agent's session is the one its registry names.)
            server.wait_for(
                lambda evs: any(r.event.get("session_name") == "wakeup-test" for r in evs),
                what="active",
            )
            active = next(r for r in server.events if r.event.get("session_name") == "wakeup-test")
            assert active.event["state"] == "active"
            assert active.event["platform"] == "claude-code"
            sid = active.event["session_id"]
            status = daemon.status()
            assert status is not None and status["scan"]["early_passes"] >= 1
            agents.stop(claude)  # and its end, from the kernel
            server.wait_for(lambda evs: states(server, sid) == ["active", "ended"], what="ended")
        finally:
            daemon.terminate()


def _registry(sessions: Path, pid: int, name: str, session_id: str | None = None) -> None:
    record: dict[str, Any] = {
        "pid": pid,
        "sessionId": session_id or str(uuid.uuid5(uuid.NAMESPACE_OID, str(pid))),
        "cwd": str(sessions.parent.parent),
        "startedAt": 1_795_877_218_508,
        "procStart": start_ticks(pid),
        "kind": "interactive",
        "name": name,
        "status": "idle",
    }
    (sessions / f"{pid}.json").write_text(json.dumps(record))


def test_a_state_dir_deleted_and_created_again_is_watched_again(
    short_tmp: Path, agents: Agents
) -> None:
    """`rm -rf ~/.claude` while the daemon runs (seen with Claude Code, Codex, Copilot CLI
    and OpenCode: quintd read each new file once, when it first needed it, and never saw a
    change again in that home until it restarted: no title, no model, no busy/idle)."""
    import shutil

    root = agents.home / ".claude"
    sessions = root / "sessions"
    sessions.mkdir(parents=True)
    with IngestServer() as server:
        config = write_config(short_tmp, endpoint=server.url, interval=0.5)
        daemon = DaemonProcess(config, clean_env(HOME=str(agents.home))).start()
        daemon.wait_ready()
        try:
            first = agents.binary("claude")
            _registry(sessions, first.pid, "before")
            server.wait_for(
                lambda evs: any(r.event.get("session_name") == "before" for r in evs),
                what="the first agent's session",
            )
            agents.stop(first)
            server.wait_for(
                lambda evs: any(
                    r.event["state"] == "ended" and r.event.get("session_name") == "before"
                    for r in evs
                ),
                what="its end",
            )
            shutil.rmtree(root)
            sessions.mkdir(parents=True)  # perhaps under the same inode number
            second = agents.binary("claude")
            _registry(sessions, second.pid, "after")  # read once, when the agent is found
            server.wait_for(
                lambda evs: any(r.event.get("session_name") == "after" for r in evs),
                what="the agent in the re-created directory",
            )
            _registry(sessions, second.pid, "renamed")  # a change: only a watch sees it
            server.wait_for(
                lambda evs: any(r.event.get("session_name") == "renamed" for r in evs),
                timeout=20,
                what="a change in the re-created directory",
            )
        finally:
            daemon.terminate()
