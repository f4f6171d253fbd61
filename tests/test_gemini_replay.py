"""Gemini CLI, as the real CLI behaved (``../shared/fixtures/gemini-cli``): every recorded
step replayed in order with its process tree (tests/replay.py), the exact events asserted.

The story: start (the session file is written at once), a prompt, a tool awaiting approval
then running, ``/clear`` (a new file at once), a prompt, ``/quit``; then a second run, which
writes the title (``summary``) into the previous session's file and starts its own.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from conftest import needs_fixtures
from replay import MACHINE, Replay, at_size, files_txt, load_processes, story

from quintd.identity import native_session_id
from quintd.sources.times import parse_time as epoch

FIXTURES = needs_fixtures("gemini-cli")
CHATS = ".gemini/tmp/shop-api/chats"
FIRST, SECOND, THIRD = "3f11d177", "b834281f", "66018602"


def _header_time(name: str, directory: Path) -> float:
    path = next(directory.glob(f"session-*-{name}.jsonl"))
    started = epoch(json.loads(path.read_text().splitlines()[0])["startTime"])
    assert started is not None
    return started


def _latest_time(home: Path) -> float:
    """The newest timestamp any record of the chats carries: when that step was taken."""
    latest = 0.0
    for path in (home / CHATS).glob("*.jsonl"):
        for line in path.read_text().splitlines():
            record = json.loads(line)
            for key in ("timestamp", "startTime", "lastUpdated"):
                value = record.get(key) or (record.get("$set") or {}).get(key)
                moment = epoch(value) if value else None
                if moment:
                    latest = max(latest, moment)
    return latest


@pytest.mark.parametrize("restart_after", [None, "02-first-prompt-idle", "05-after-clear"])
def test_gemini_start_prompt_tool_clear_quit_and_a_second_run(
    tmp_path: Path, restart_after: str | None
) -> None:
    """With a restart of quintd in the middle, nothing changes: same ids, same events."""
    home = tmp_path / "home"
    final = FIXTURES / "home" / CHATS
    run1 = _header_time(FIRST, final) - 0.5
    run2 = _header_time(THIRD, FIXTURES / "snapshots" / "08-second-run-started" / "home" / CHATS)
    run2 -= 0.5
    starts = {27707: run1, 27722: run1 + 0.3}
    plan = [  # step, process tree, files: a snapshot's home, or sizes from a files.txt
        ("00-started", "00-started-idle", "00-started"),
        ("01-first-prompt-busy", "01-first-prompt-busy", "01-first-prompt-busy"),
        ("02-first-prompt-idle", "01-first-prompt-busy", "02-first-prompt-idle"),
        ("03-waiting-for-approval", "03-waiting-for-approval", "03-waiting-for-approval"),
        ("04-tool-running", "04-tool-running", None),  # the file did not change
        ("05-after-clear", "06-second-session-idle", "05-after-clear"),
        ("06-second-session-idle", "06-second-session-idle", "07-after-quit"),
        ("07-after-quit", "07-after-quit", None),
        ("08-second-run-started", "08-second-run-started", "08-second-run-started"),
    ]
    replay = Replay(home, run1)
    per_step = {}
    at = run1
    for step, tree, files in plan:
        snapshot = FIXTURES / "snapshots" / (files or "") / "home"
        if files and snapshot.is_dir():
            shutil.copytree(snapshot, home, dirs_exist_ok=True)
        elif files:  # sizes only: cut the final files to them (they only grew)
            for rel, (size, _mod) in files_txt(
                FIXTURES / "snapshots" / files / "files.txt"
            ).items():
                if rel.startswith(CHATS) and (FIXTURES / "home" / rel).exists():
                    at_size(FIXTURES / "home" / rel, home / rel, size)
        at = max(at + 1.0, _latest_time(home) + 0.5)
        processes = {**starts, **{p: run2 + 0.3 * i for i, p in enumerate(_pids(tree))}}
        if tree.startswith("08"):
            starts = {}
        recs = load_processes(FIXTURES / "processes" / f"{tree}.json", processes)
        per_step[step] = replay.step(recs, at)
        if step == restart_after:
            replay.restart()

    uid = os.getuid()
    ids = {
        name: native_session_id(MACHINE, "gemini-cli", _session_id(name, home), uid=uid)
        for name in (FIRST, SECOND, THIRD)
    }
    assert story(replay.events) == [
        ("s1", "active", "shop-api", None, None),  # at start-up: the file names it at once
        ("s1", "active", "shop-api", "gemini-3.1-pro-preview", None),  # the model answered
        ("s2", "active", "shop-api", None, None),  # /clear: a new conversation at once
        ("s1", "ended", "shop-api", "gemini-3.1-pro-preview", None),
        ("s2", "active", "shop-api", "gemini-3.1-pro-preview", None),
        ("s2", "ended", "shop-api", "gemini-3.1-pro-preview", None),  # /quit
        ("s3", "active", "shop-api", None, None),  # the second run
    ]
    assert list(dict.fromkeys(e.session_id for e in replay.events)) == [
        ids[FIRST],
        ids[SECOND],
        ids[THIRD],
    ]
    # The title the second run wrote into the ended conversation produced nothing.
    assert [e.session_id for e in per_step["08-second-run-started"]] == [ids[THIRD]]
    assert (home / CHATS).glob(f"*{SECOND}.jsonl")


def test_gemini_busy_while_a_prompt_or_a_tool_waits(tmp_path: Path) -> None:
    home = tmp_path / "home"
    final = FIXTURES / "home" / CHATS
    run1 = _header_time(FIRST, final) - 0.5
    recs = load_processes(
        FIXTURES / "processes" / "01-first-prompt-busy.json", {27707: run1, 27722: run1 + 0.3}
    )
    replay = Replay(home, run1)
    statuses = []
    for snapshot in (
        "00-started",
        "01-first-prompt-busy",
        "02-first-prompt-idle",
        "03-waiting-for-approval",
    ):
        shutil.copytree(FIXTURES / "snapshots" / snapshot / "home", home, dirs_exist_ok=True)
        replay.step(recs, _latest_time(home) + 0.5)
        facts, _ = replay.sources.observe(replay.agents)
        [found] = facts.values()
        statuses.append(getattr(found, "status", None))
    assert statuses == ["idle", "busy", "idle", "busy"]


def _pids(tree: str) -> list[int]:
    data = json.loads((FIXTURES / "processes" / f"{tree}.json").read_text())
    rows = data["processes"] if isinstance(data, dict) else data
    return [r["pid"] for r in rows if r["pid"] not in (27707, 27722)]


def _session_id(short: str, home: Path) -> str:
    path = next((home / CHATS).glob(f"session-*-{short}.jsonl"), None) or next(
        (FIXTURES / "snapshots" / "08-second-run-started" / "home" / CHATS).glob(
            f"session-*-{short}.jsonl"
        )
    )
    sid = json.loads(path.read_text().splitlines()[0])["sessionId"]
    assert isinstance(sid, str) and sid.startswith(short)
    return sid
