"""Gemini CLI before 0.39 (0.2.0 to 0.38.2): a chat is one JSON document rewritten in place
on every message, ``session-<YYYY-MM-DDTHH-MM>-<id8>.json``, and none exists before the
first message. The documents here follow Gemini CLI's own types at 0.38.2
(``chatRecordingService.ts``: ``ConversationRecord``, ``MessageRecord``), with the message
records of the real 0.61.0 run (``../shared/fixtures/gemini-cli``), and the process tree
of that run.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

from conftest import needs_fixtures
from replay import MACHINE, Replay, load_processes, story

from quintd.identity import native_session_id

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
    # The answer: idle, and the model learned. Rewritten in place, as Gemini does.
    inode = first.stat().st_ino
    with first.open("r+") as out:
        out.truncate(0)
        out.write(_chat(FIRST, START + 6, [_user("Fix the login bug"), _gemini("Done.")]))
    assert first.stat().st_ino == inode
    replay.step(recs, START + 9)
    [facts] = replay.sources.observe(replay.agents)[0].values()
    assert facts.status == "idle"  # type: ignore[union-attr]
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
