"""Gemini CLI before 0.39 (0.2.0 to 0.38.2): a chat is one JSON document rewritten in place
on every message, ``session-<YYYY-MM-DDTHH-MM>-<id8>.json``, and none exists before the
first message.

- the real run: Gemini CLI 0.38.2, captured here (``tests/fixtures/gemini-legacy``, its
  README tells the run), every step replayed with its process tree;
- the edges it did not show (a rewrite caught half way, the project dir named by the
  SHA-256 of the project before 0.29): documents in the same shape, with the process tree
  of the 0.61.0 run (``../shared/fixtures/gemini-cli``).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_fixtures
from replay import MACHINE, Replay, load_processes, story

from quintd.identity import native_session_id
from quintd.sources.files import ReadStats
from quintd.sources.gemini_cli import MAX_LEGACY_CHAT_BYTES, LegacyChat

FIXTURES = needs_fixtures("gemini-cli")
CWD = "/home/dev/src/shop-api"
PROJECT = hashlib.sha256(CWD.encode()).hexdigest()  # the project dir's name before 0.29
FIRST, SECOND = "5b1f0a4e-9c2d-4e11-8f3a-2d7c9e1b6a01", "c0ffee12-3d4e-4f50-9a6b-7c8d9e0f1a2b"
START = 1_790_000_000.0


def _chat(session: str, started: float, messages: list[dict[str, Any]], **extra: Any) -> str:
    doc = {
        "sessionId": session,
        "projectHash": PROJECT,
        "startTime": _iso(started),
        "lastUpdated": _iso(started + len(messages)),
        "messages": messages,
        **extra,
    }
    return json.dumps(doc, indent=2)  # Gemini writes JSON.stringify(conv, null, 2)


def _iso(moment: float) -> str:
    from datetime import UTC, datetime

    return (
        datetime.fromtimestamp(moment, UTC)
        .isoformat(timespec="milliseconds")
        .replace("+00:00", "Z")
    )


def _user(text: str) -> dict[str, Any]:
    return {"id": text, "timestamp": _iso(START), "type": "user", "content": [{"text": text}]}


def _gemini(text: str, **extra: Any) -> dict[str, Any]:
    return {
        "id": "g-" + text,
        "timestamp": _iso(START),
        "type": "gemini",
        "content": text,
        "model": "gemini-2.5-pro",
        **extra,
    }


def test_an_old_gemini_chat_is_one_conversation_from_its_first_message(tmp_path: Path) -> None:
    home = tmp_path / "home"
    chats = home / ".gemini" / "tmp" / PROJECT / "chats"
    chats.mkdir(parents=True)
    recs = load_processes(
        FIXTURES / "processes" / "01-first-prompt-busy.json", {27707: START, 27722: START + 0.3}
    )
    replay = Replay(home, START)
    # Started, no file yet: announced as a process once the wait for its state is over.
    assert replay.step(recs, START + 1) == []
    [announced] = replay.step(recs, START + 5)
    first = chats / f"session-2026-11-29T10-15-{FIRST[:8]}.json"
    first.write_text(_chat(FIRST, START + 6, [_user("Fix the login bug")]))
    replay.step(recs, START + 7)
    [facts] = replay.sources.observe(replay.agents)[0].values()
    assert (facts.native_id, facts.status) == (FIRST, "busy")  # type: ignore[union-attr]
    # The answer: the model learned. Rewritten in place, as Gemini does.
    inode = first.stat().st_ino
    with first.open("r+") as out:
        out.truncate(0)
        out.write(_chat(FIRST, START + 6, [_user("Fix the login bug"), _gemini("Done.")]))
    assert first.stat().st_ino == inode
    replay.step(recs, START + 9)
    [facts] = replay.sources.observe(replay.agents)[0].values()
    assert facts.status is None  # type: ignore[union-attr]  # a tool may follow: unknown
    # A rewrite caught half way is skipped, counted, and changes nothing.
    whole = first.read_text()
    first.write_text(whole[: len(whole) // 2])
    garbage = replay.sources.stats()["garbage_lines"]
    assert replay.step(recs, START + 10) == []
    assert replay.sources.stats()["garbage_lines"] == garbage + 1
    first.write_text(whole)
    # /clear: a new chat file at its first message, and the first conversation ends.
    second = chats / f"session-2026-11-29T10-16-{SECOND[:8]}.json"
    second.write_text(_chat(SECOND, START + 12, [_user("Add a test")]))
    replay.step(recs, START + 13)
    uid = os.getuid()
    ids = [native_session_id(MACHINE, "gemini-cli", s, uid=uid) for s in (FIRST, SECOND)]
    assert story(replay.events) == [
        ("s1", "active", "shop-api", None, None),  # the process, before any file
        ("s1", "active", "shop-api", "gemini-2.5-pro", None),  # the model answered
        ("s2", "active", "shop-api", None, None),
        ("s1", "ended", "shop-api", "gemini-2.5-pro", None),
    ]
    # The first chat took the process's session over: one session per conversation.
    assert announced.session_id == replay.events[0].session_id
    assert replay.events[2].session_id == ids[1]
    assert {s.native_id for s in replay.tracker.sessions} == {SECOND}
    assert ids[0] not in {e.session_id for e in replay.events}  # it kept the process's id


REAL = Path(__file__).parent / "fixtures" / "gemini-legacy"
REAL_CHATS = ".gemini/tmp/shop-api/chats"


def _recorded(step: str) -> tuple[float, list[Any]]:
    from replay import Rec

    from quintd.sources.times import parse_time as epoch

    data = json.loads((REAL / "processes" / f"{step}.json").read_text())
    recs = [
        Rec(
            pid=row["pid"],
            ppid=row["ppid"],
            comm=row["comm"],
            exe="",
            argv=row["argv"],
            cwd=row["cwd"],
            start_time=epoch(row["start"]) or 0.0,
        )
        for row in data["processes"]
    ]
    return epoch(data["time"]) or 0.0, recs


def test_gemini_0_38_as_it_really_ran(tmp_path: Path) -> None:
    """Gemini CLI 0.38.2 (tests/fixtures/gemini-legacy): every step replayed with its
    process tree. One conversation per chat file: the first prompt's file takes over the
    process's session; /clear starts the next conversation at its first prompt; the summary
    a later run writes into an ended chat produces nothing; a run with no prompt is its
    process alone."""
    home = tmp_path / "home"
    steps = sorted(p.stem for p in (REAL / "processes").glob("*.json"))
    first_at, _ = _recorded(steps[0])
    replay = Replay(home, first_at - 15)
    statuses = {}
    for step in steps:
        at, recs = _recorded(step)
        snapshot = REAL / "snapshots" / step / "home" / REAL_CHATS
        target = home / REAL_CHATS
        target.mkdir(parents=True, exist_ok=True)
        for chat in snapshot.glob("*.json"):
            if not (target / chat.name).exists() or (target / chat.name).read_bytes() != (
                chat.read_bytes()
            ):
                shutil.copyfile(chat, target / chat.name)
        replay.step(recs, at)
        facts, _ = replay.sources.observe(replay.agents)
        statuses[step] = [getattr(f, "status", "-") for f in facts.values()]
    chats = {p.name.split("-")[-1].removesuffix(".json") for p in (home / REAL_CHATS).iterdir()}
    assert chats == {"8ed3091b", "6ff8b9f8", "498573c2"}
    assert story(replay.events) == [
        ("s1", "active", "shop-api", None, None),  # the process: no file before a prompt
        ("s1", "active", "shop-api", "gemini-3.1-pro-preview", None),  # the first answer
        # /clear writes nothing: the next conversation begins at its first prompt (this
        # step's snapshot has its answer too), and the first one ends then.
        ("s2", "active", "shop-api", "gemini-3.1-pro-preview", None),
        ("s1", "ended", "shop-api", "gemini-3.1-pro-preview", None),
        ("s2", "ended", "shop-api", "gemini-3.1-pro-preview", None),  # /quit
        # A run with no prompt: its process. It wrote the summary into the ended chat:
        # nothing comes of that.
        ("s3", "active", "shop-api", None, None),
        ("s3", "ended", "shop-api", None, None),
        ("s4", "active", "shop-api", None, None),  # (the run between was not captured)
        ("s4", "ended", "shop-api", None, None),
    ]
    # Busy while a prompt waits for its answer; after an answer the file cannot tell (a
    # tool awaiting approval or running is written only once it finished): unknown.
    assert statuses["01-prompt-busy"] == ["busy"]
    assert statuses["02-answered-idle"] == [None]
    assert statuses["04-tool-awaiting-approval"] == [None]
    assert statuses["09-clear"] == [None]
    assert statuses["10-new-chat-prompt"] == [None]


# -- the rules, exactly (written for the survivors of the mutation run) -------------------


def test_a_legacy_chat_is_read_whole_once_per_change(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="quintd.sources")
    path = tmp_path / "session-2026-11-29T10-15-5b1f0a4e.json"
    chat = LegacyChat(path, tmp_path, ReadStats())
    assert chat.read_new() == ([], False)  # no file yet
    written = _chat(FIRST, START, [_user("Fix it"), "not a message"])
    path.write_text(written)
    records, more = chat.read_new()
    header = {"sessionId": FIRST, "projectHash": PROJECT, "startTime": _iso(START)}
    assert (records, more) == ([{**header, "$legacy": True}, _user("Fix it")], False)
    assert (chat.offset, chat.owner, chat.stats.lines) == (len(written), os.getuid(), 1)
    assert chat.read_new() == ([], False)  # unchanged: not read again
    # Rewritten with an answer and a summary: every message again, the header not.
    again = _chat(FIRST, START, [_user("Fix it"), _gemini("Done.")], summary="Login fix")
    path.write_text(again)
    records, more = chat.read_new()
    assert records == [_user("Fix it"), _gemini("Done."), {"$set": {"summary": "Login fix"}}]
    assert (chat.offset, chat.stats.lines, chat.stats.garbage) == (len(written + again), 2, 0)
    # Caught half way: garbage, counted and complained of; empty: only read again later.
    path.write_text(again[:40])
    assert chat.read_new() == ([], False)
    assert (chat.stats.garbage, chat.stats.lines) == (1, 2)
    assert "a chat that is not a JSON object" in caplog.text
    path.write_text("")
    assert chat.read_new() == ([], False)
    assert chat.stats.garbage == 1
    path.write_text(json.dumps({"messages": "none", "summary": None}))
    assert chat.read_new() == ([], False)  # no header wanted any more, nothing in it
    # Too large to be parsed whole at every change: refused, never read.
    path.write_text("")
    os.truncate(path, MAX_LEGACY_CHAT_BYTES + 1)
    assert chat.read_new() == ([], False) and chat.stats.refused == 1


def test_a_legacy_chat_without_a_session_is_garbage(tmp_path: Path) -> None:
    path = tmp_path / "session-2026-11-29T10-15-5b1f0a4e.json"
    chat = LegacyChat(path, tmp_path, ReadStats())
    path.write_text(json.dumps({"messages": [_user("x")]}))
    assert chat.read_new() == ([], False) and chat.stats.garbage == 1
    path.write_text(_chat(FIRST, START, []))
    records, _ = chat.read_new()
    assert [r.get("sessionId") for r in records] == [FIRST]
