"""Readers against real processes: Gemini CLI chats matched by project and start time;
Codex TUIs told apart by their own loopback ports, as /proc really shows them."""

from __future__ import annotations

import hashlib
import json
import time
from datetime import UTC, datetime
from pathlib import Path

from conftest import Agents, wait_until

from quintd.model import AgentProcess
from quintd.scanner import Scanner
from quintd.sources.codex import CodexState
from quintd.sources.gemini_cli import GeminiState
from quintd.sources.spec import ReaderContext


def _agent(agents: Agents, name: str, cwd: Path) -> AgentProcess:
    proc = agents.binary(name, cwd=cwd)
    return wait_until(
        lambda: next((a for a in Scanner().scan() if a.pid == proc.pid), None), what=name
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def test_gemini_chat_gives_id_and_model(tmp_path: Path, agents: Agents) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    gemini = _agent(agents, "gemini", project)
    root = tmp_path / ".gemini"
    digest = hashlib.sha256(str(project).encode()).hexdigest()
    chats = root / "tmp" / digest / "chats"
    chats.mkdir(parents=True)
    chat = chats / "session-2026-11-28T10-00-abc.jsonl"
    first = {
        "sessionId": "g-123",
        "projectHash": digest,
        "startTime": _iso(gemini.start_time + 0.5),
        "lastUpdated": _iso(time.time()),
        "kind": "main",
    }
    chat.write_text(
        json.dumps(first)
        + "\n"
        + json.dumps({"type": "gemini", "content": "...", "model": "gemini-2.5-pro"})
        + "\n"
    )
    state = GeminiState(root, ReaderContext(time.monotonic))
    state.prepare([gemini])
    facts = state.facts(gemini)
    assert facts is not None
    assert (facts.native_id, facts.model) == ("g-123", "gemini-2.5-pro")


FAKE_TUI = """
import socket, sys
listener = socket.socket()
listener.bind(("127.0.0.1", 0))
listener.listen()
print(listener.getsockname()[1], flush=True)
held = []
while True:
    conn, _ = listener.accept()
    held.append(conn)
"""

FAKE_DAEMON = """
import socket, sys
held = []
for line in sys.stdin:
    port = int(line)
    for _ in range(2):  # two connections per thread loaded for that TUI
        held.append(socket.create_connection(("127.0.0.1", port)))
    print("ok", flush=True)
"""


def test_codex_tuis_in_one_directory_are_told_apart_by_their_ports(
    tmp_path: Path, agents: Agents
) -> None:
    """Two TUIs in one directory; threads attached while both run go to the TUI the
    daemon connected to (read from /proc/<pid>/fd and /proc/net/tcp)."""
    import os
    import subprocess
    import sys

    project = tmp_path / "proj"
    project.mkdir()
    bindir = tmp_path / "bin"
    bindir.mkdir()
    (bindir / "codex").write_text(FAKE_TUI)  # a script named codex: matched as codex
    (bindir / "daemon.py").write_text(FAKE_DAEMON)
    root = tmp_path / ".codex"
    caps = root / "tui-thread-reference-capabilities"
    caps.mkdir(parents=True)
    (root / "thread-writer-locks").mkdir()
    tuis = []
    for _ in range(2):
        proc = subprocess.Popen(
            [sys.executable, str(bindir / "codex")],
            cwd=project,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        agents.procs.append(proc)  # type: ignore[arg-type]
        assert proc.stdout is not None
        tuis.append((proc, int(proc.stdout.readline())))
    daemon = subprocess.Popen(
        [sys.executable, str(bindir / "daemon.py")],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    agents.procs.append(daemon)  # type: ignore[arg-type]
    scanner = Scanner()
    found = wait_until(
        lambda: (
            len(mine := [a for a in scanner.scan() if a.pid in {p.pid for p, _ in tuis}]) == 2
            and mine
        ),
        what="two codex TUIs",
    )
    by_pid = {a.pid: a for a in found}
    a, b = (by_pid[p.pid] for p, _ in tuis)
    state = CodexState(root, ReaderContext(time.monotonic))

    def attach(tui: int, thread: str, at: float) -> None:
        assert daemon.stdin is not None and daemon.stdout is not None
        daemon.stdin.write(f"{tuis[tui][1]}\n")
        daemon.stdin.flush()
        assert daemon.stdout.readline().strip() == "ok"
        (root / "thread-writer-locks" / f"{thread}.lock").touch()
        (caps / thread).touch()
        wait_until(lambda: _accepted(tuis[tui][0].pid) >= 2, what="connections accepted")
        state.changed(caps / thread)
        # Both TUIs started long before this attach: only the connections can tell.
        later = max(a.start_time, b.start_time) + at
        os.utime(caps / thread, (later, later))

    t = ["01a22595-0000-7000-8000-00000000000" + str(n) for n in range(3)]
    attach(1, t[0], 60)  # B attaches first
    state.prepare([a, b])
    assert state.facts(a) is None and state.facts(b).native_id == t[0]  # type: ignore[union-attr]
    attach(0, t[1], 61)
    state.prepare([a, b])
    assert state.facts(a).native_id == t[1]  # type: ignore[union-attr]
    attach(0, t[2], 62)  # A's /new
    state.prepare([a, b])
    assert state.facts(a).native_id == t[2]  # type: ignore[union-attr]
    assert state.facts(b).native_id == t[0]  # type: ignore[union-attr]
    assert state.ambiguous == 0


def _accepted(pid: int) -> int:
    from quintd.sources.processes import LiveProcesses

    sockets = LiveProcesses().tcp(pid)
    ports = {s.local for s in sockets if s.state == "LISTEN"}
    return sum(1 for s in sockets if s.state == "ESTAB" and s.local in ports)
