"""Qwen Code, the real CLI from npm, through a day under a real quintd.

Layouts: the nvm-style prefix (the whole day), and npm's project-local
``node_modules/.bin/qwen`` (``cli-entry.js`` -> ``node --expose-gc cli.js`` -> its
relaunched self: three node processes, the registry naming the third), which quintd once
misread: no model, ``/clear`` unseen.

Qwen Code starts in Auto mode: before a tool runs, it asks the model's classifier
(``respond_in_schema {shouldBlock}``); after a turn it asks a memory extractor. Both are
answered here; neither is a turn of the conversation.
"""

from __future__ import annotations

from typing import Any

import pytest
from day import Day, live_day
from live_user import LiveUser
from scenes import (
    assert_ended_on_exit,
    assert_stays_busy,
    first_session,
    installed,
    live_user_fixture,  # noqa: F401  (the fixture)
    quit_and_time,
    wait_state,
)
from standin import Brain, Reply, Request, plain

PLATFORM = "qwen-code"
MODEL = "qwen3-coder-plus"


class QwenBrain(Brain):
    def __call__(self, req: Request) -> Reply:
        # The prompt is the last line: Qwen puts its reminders before it.
        lines = [line for line in req.user_text.splitlines() if line.strip()]
        req.user_text = lines[-1] if lines else ""
        return super().__call__(req)

    def auxiliary(self, req: Request) -> Reply | None:
        if "respond_in_schema" in req.tools:  # the Auto mode classifier: allow
            schema = req.tools["respond_in_schema"].get("properties") or {}
            answer: dict[str, Any] = {"shouldBlock": False}
            answer.update({k: "allowed" for k in schema if k != "shouldBlock"})
            return Reply("", ("respond_in_schema", answer))
        if "memory extraction" in req.system:
            return Reply("Nothing to save.")
        return None

    def delegate_call(self, req: Request) -> tuple[str, dict[str, Any]] | None:
        if "agent" not in req.tools:
            return None
        return "agent", {
            "description": "Survey the project",
            "prompt": "List the files of the project HOLD-sub",
            "subagent_type": "general-purpose",
        }

    def after_tool(self, req: Request) -> Reply:
        return Reply(f"Finished: {plain(req.user_text)[:40]}.")


def env(day: Day, path: str) -> dict[str, str]:
    found = day.base_env(path)
    found.update(
        OPENAI_BASE_URL=f"{day.model.url}/v1",
        OPENAI_API_KEY="sk-live-fake",
        OPENAI_MODEL=MODEL,
    )
    return found


READY = r"Type your message"
STORY = """Start; a prompt held by the stand-in (busy), answered (idle, the model); /rename;
a sub-agent (the agent tool) held, then done; /clear (the first conversation ends, a new
one starts); a prompt in the new conversation; /quit."""
SHORT_STORY = """Start; a prompt held by the stand-in (busy), answered (idle, the model); /clear
(the first conversation ends, a new one starts); /quit."""


@pytest.mark.timeout(600)
def test_qwen_code_day_nvm_prefix(live_user: LiveUser) -> None:
    """Start, a held turn, /rename, a sub-agent, /clear, a second conversation, /quit."""
    install = installed("prefix")
    with live_day(PLATFORM, live_user, QwenBrain(), "nvm_prefix", STORY) as day:
        day.make_project()
        pid = day.start(install.command(PLATFORM), env(day, install.path()))
        first = first_session(day, PLATFORM, name="shop-api")
        s1 = first["session_id"]
        day.terminal.wait_for(READY, 120)
        if day.recording:
            wait_state(day, s1, "idle")
        day.snapshot("01-started", "the TUI at its prompt, no conversation yet")

        day.terminal.submit(
            "Fix auth middleware token expiry HOLD-a", lambda: day.model.holding("a")
        )
        assert_stays_busy(day, s1)
        day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
        day.model.release("a")
        answered = day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("model") == MODEL,
            "the model, once it answered",
        )
        assert answered["state"] == "active"
        wait_state(day, s1, "idle")
        day.snapshot("03-idle", "the answer written: idle, the model known")

        day.terminal.type("/rename Token expiry fix")
        day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("session_name") == "Token expiry fix",
            "the /rename",
        )
        day.snapshot("04-renamed", "/rename Token expiry fix")

        day.terminal.type("Survey the codebase DELEGATE")
        day.terminal.wait_for(r"Yes, allow once|HOLD-sub|Survey the project", 60)
        sub = day.wait_session(
            lambda e: e.get("parent_id") == s1 and e["state"] == "active",
            "the sub-agent's session",
            60,
        )
        assert sub["platform"] == PLATFORM
        if day.recording:
            day.wait(lambda _: day.model.holding("sub"), "the sub-agent's turn", 60)
        day.snapshot("05-subagent-busy", "a sub-agent (the agent tool), its turn held")
        day.model.release("sub")
        day.wait_session(
            lambda e: e["session_id"] == sub["session_id"] and e["state"] == "ended",
            "the sub-agent's end",
            60,
        )
        wait_state(day, s1, "idle", timeout=60)
        day.snapshot("06-subagent-done", "the sub-agent done, the parent idle")

        day.terminal.type("/clear")
        day.wait_session(lambda e: e["session_id"] == s1 and e["state"] == "ended", "/clear")
        s2 = day.wait_session(
            lambda e: (
                e["session_id"] not in (s1, sub["session_id"])
                and e["state"] == "active"
                and e.get("parent_id") is None
            ),
            "the new conversation",
        )["session_id"]
        if day.recording:
            wait_state(day, s2, "idle")
        day.snapshot("07-after-clear", "/clear: the first conversation ended, a new one")

        day.terminal.submit("Add rate limiting HOLD-b", lambda: day.model.holding("b"))
        day.model.release("b")
        day.wait_session(
            lambda e: e["session_id"] == s2 and e.get("model") == MODEL, "the second model"
        )
        if day.recording:
            wait_state(day, s2, "idle")
        day.snapshot("08-second-idle", "a prompt in the new conversation, answered")

        exited = quit_and_time(day, pid, "/quit")
        assert_ended_on_exit(day, exited, [s2])
        assert set(day.sessions()) == {s1, sub["session_id"], s2}, "no other session"
        day.snapshot("09-quit", "/quit: the process exited")


@pytest.mark.timeout(600)
@pytest.mark.parametrize("layout", ["project"])
def test_qwen_code_other_layouts(live_user: LiveUser, layout: str) -> None:
    """npm's own shim (the three-process tree): the model and /clear are seen."""
    install = installed(layout)
    with live_day(PLATFORM, live_user, QwenBrain(), layout, SHORT_STORY) as day:
        day.make_project()
        pid = day.start(install.command(PLATFORM), env(day, install.path()))
        s1 = first_session(day, PLATFORM, name="shop-api")["session_id"]
        day.terminal.wait_for(READY, 120)
        if day.recording:  # the turn held, so that it is recorded busy
            wait_state(day, s1, "idle")
            day.snapshot("01-started", "the TUI at its prompt, no conversation yet")
            day.terminal.submit(
                "Fix auth middleware token expiry HOLD-a", lambda: day.model.holding("a")
            )
            wait_state(day, s1, "active")
            day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
            day.model.release("a")
        else:
            day.terminal.type("Fix auth middleware token expiry")
        day.wait_session(lambda e: e["session_id"] == s1 and e.get("model") == MODEL, "the model")
        if day.recording:
            wait_state(day, s1, "idle")
            day.snapshot("03-idle", "the answer written: idle, the model known")
        day.terminal.type("/clear")
        day.wait_session(lambda e: e["session_id"] == s1 and e["state"] == "ended", "/clear")
        s2 = day.wait_session(
            lambda e: e["session_id"] != s1 and e["state"] == "active", "the new conversation"
        )["session_id"]
        if day.recording:
            wait_state(day, s2, "idle")
            day.snapshot("04-after-clear", "/clear: the first conversation ended, a new one")
        exited = quit_and_time(day, pid, "/quit")
        assert_ended_on_exit(day, exited, [s2])
        assert set(day.sessions()) == {s1, s2}, "no other session"
        day.snapshot("05-quit", "/quit: the process exited")
