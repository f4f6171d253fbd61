"""Codex rollouts and Gemini CLI chats, written in the shapes agents.md describes, matched
to real processes by working directory and start time."""

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


def _agent(agents: Agents, name: str, cwd: Path) -> AgentProcess:
    proc = agents.binary(name, cwd=cwd)
    return wait_until(
        lambda: next((a for a in Scanner().scan() if a.pid == proc.pid), None), what=name
    )


def _iso(epoch: float) -> str:
    return datetime.fromtimestamp(epoch, UTC).isoformat().replace("+00:00", "Z")


def test_codex_rollout_gives_id_and_model(tmp_path: Path, agents: Agents) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    codex = _agent(agents, "codex", project)
    root = tmp_path / ".codex"
    day = root / "sessions" / time.strftime("%Y/%m/%d")
    day.mkdir(parents=True)
    clock = [0.0]
    state = CodexState(root, lambda: clock[0])
    # An older rollout of the same project, begun long before this process: not it.
    old = day / "rollout-2026-11-28T09-00-00-old.jsonl"
    old.write_text(
        json.dumps(
            {
                "timestamp": _iso(codex.start_time - 3600),
                "type": "session_meta",
                "payload": {
                    "id": "old-id",
                    "cwd": str(project),
                    "timestamp": _iso(codex.start_time - 3600),
                },
            }
        )
        + "\n"
    )
    state.prepare([codex])
    assert state.facts(codex) is None
    mine = day / "rollout-2026-11-28T10-00-00-new.jsonl"
    with open(mine, "w") as fh:
        fh.write(
            json.dumps(
                {
                    "timestamp": _iso(codex.start_time + 1),
                    "type": "session_meta",
                    "payload": {
                        "id": "0199-abc",
                        "cwd": str(project),
                        "timestamp": _iso(codex.start_time + 1),
                    },
                }
            )
            + "\n"
        )
        fh.write("garbage line\n")
    clock[0] = 5.0
    state.changed(mine)
    state.prepare([codex])
    facts = state.facts(codex)
    assert facts is not None and facts.native_id == "0199-abc" and facts.model is None
    with open(mine, "a") as fh:
        fh.write(
            json.dumps(
                {
                    "timestamp": _iso(time.time()),
                    "type": "turn_context",
                    "payload": {"model": "gpt-5-codex", "cwd": str(project)},
                }
            )
            + "\n"
        )
    clock[0] = 6.0
    state.changed(mine)
    state.prepare([codex])
    facts = state.facts(codex)
    assert facts is not None
    assert (facts.model, facts.last_write) == ("gpt-5-codex", 6.0)
    assert state.stats.garbage == 1


def test_codex_rollout_of_another_directory_is_not_matched(tmp_path: Path, agents: Agents) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    here.mkdir()
    there.mkdir()
    codex = _agent(agents, "codex", here)
    root = tmp_path / ".codex"
    day = root / "sessions" / "2026" / "11" / "28"
    day.mkdir(parents=True)
    (day / "rollout-x.jsonl").write_text(
        json.dumps(
            {
                "type": "session_meta",
                "payload": {"id": "x", "cwd": str(there), "timestamp": _iso(time.time())},
            }
        )
        + "\n"
    )
    state = CodexState(root, time.monotonic)
    state.prepare([codex])
    assert state.facts(codex) is None


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
    state = GeminiState(root, time.monotonic)
    state.prepare([gemini])
    facts = state.facts(gemini)
    assert facts is not None
    assert (facts.native_id, facts.model) == ("g-123", "gemini-2.5-pro")


def test_two_codex_processes_in_one_directory_keep_their_own_rollouts(
    tmp_path: Path, agents: Agents
) -> None:
    """Started in the same second: only the open rollout file can tell them apart."""
    import os

    project = tmp_path / "proj"
    project.mkdir()
    root = tmp_path / ".codex"
    day = root / "sessions" / "2026" / "11" / "28"
    day.mkdir(parents=True)
    fifo = tmp_path / "go"
    os.mkfifo(fifo)
    script = tmp_path / "codex"  # keeps its rollout open, as codex does
    script.write_text(f'exec 3>>"$1"; read x < {fifo}\n')
    procs = [
        agents.spawn(["sh", str(script), str(day / f"rollout-{n}.jsonl")], cwd=project)
        for n in "ab"
    ]
    scanner = Scanner()
    found = wait_until(
        lambda: (
            len(mine := [a for a in scanner.scan() if a.pid in {p.pid for p in procs}]) == 2
            and mine
        ),
        what="two codex processes",
    )
    by_pid = {a.pid: a for a in found}
    first, second = by_pid[procs[0].pid], by_pid[procs[1].pid]
    wait_until(lambda: all((day / f"rollout-{n}.jsonl").exists() for n in "ab"), what="opened")
    for name in "ab":
        with open(day / f"rollout-{name}.jsonl", "a") as fh:
            fh.write(
                json.dumps(
                    {
                        "type": "session_meta",
                        "payload": {
                            "id": f"id-{name}",
                            "cwd": str(project),
                            "timestamp": _iso(max(first.start_time, second.start_time) + 0.5),
                        },
                    }
                )
                + "\n"
            )
    state = CodexState(root, time.monotonic)
    state.prepare([first, second])
    assert state.facts(first).native_id == "id-a"  # type: ignore[union-attr]
    assert state.facts(second).native_id == "id-b"  # type: ignore[union-attr]
    with open(fifo, "w") as fh:
        fh.write("x\nx\n")


def test_a_garbage_timestamp_is_skipped_not_fatal(tmp_path: Path, agents: Agents) -> None:
    project = tmp_path / "proj"
    project.mkdir()
    codex = _agent(agents, "codex", project)
    root = tmp_path / ".codex"
    day = root / "sessions" / "2026" / "11" / "28"
    day.mkdir(parents=True)
    (day / "rollout-x.jsonl").write_text(
        json.dumps(
            {
                "type": "session_meta",
                "payload": {"id": "x", "cwd": str(project), "timestamp": 10**400},
            }
        )
        + "\n"
        + json.dumps(
            {
                "type": "session_meta",
                "payload": {"id": "x", "cwd": str(project), "timestamp": _iso(time.time())},
            }
        )
        + "\n"
    )
    state = CodexState(root, time.monotonic)
    state.prepare([codex])
    facts = state.facts(codex)
    assert facts is not None and facts.native_id == "x"
