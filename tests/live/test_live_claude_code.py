"""Claude Code, the real CLI from npm, through a day under a real quintd.

Claude Code 2.1.197 is a native binary: the npm package's postinstall hard-links the one of
its platform package (``@anthropic-ai/claude-code-linux-x64/claude``) to ``bin/claude.exe``,
which npm's ``bin/claude`` points at. Its model API is Anthropic Messages (api_anthropic.py).

What it does that the day relies on:
- at a conversation's first prompt it asks a small model (claude-haiku-*) for a title, as
  structured output (``{"title": ...}``): the transcript's ``ai-title``, which quintd names
  the session by; the turn itself goes to claude-opus-4-8 (the model quintd reports);
- ``/rename <name>`` writes a ``custom-title``; ``/clear`` starts a new session id at once;
  ``/exit`` quits within a second;
- its ``Agent`` tool starts a sub-agent (a transcript of its own under the parent's), whose
  first request's prompt is the one the parent's call gave it.

Its first-run dialogs (onboarding, the API key, the workspace trust, bypass mode) are
pre-empted by ``~/.claude.json`` and ``~/.claude/settings.json``; the environment turns off
updates, telemetry, error reports and the official plugin marketplace (else a git clone
from GitHub at start-up).
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import api_anthropic
import pytest
from day import Day, live_day
from installs import PASSED_ON, PINNED, SYSTEM_PATH, npm_env
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
from standin import Brain, Reply, Request, title_of

PLATFORM = "claude-code"
PACKAGE = PINNED[PLATFORM]
MODEL = "claude-opus-4-8"  # Claude Code 2.1.197's default model for the conversation
SIGNING_ID = f"npm:{PACKAGE.name}"
API_KEY = "sk-ant-api03-standin-" + "0" * 52 + "-qliveKEY0123456789AB"
READY = r"bypass permissions on"
SESSION = re.compile(r"<session>\s*(.*?)\s*</session>", re.S)


class ClaudeBrain(Brain):
    def auxiliary(self, req: Request) -> Reply | None:
        schema = api_anthropic.json_schema(req) or {}
        if "title" in (schema.get("properties") or {}):  # the conversation's title
            found = SESSION.search(req.user_text)
            return Reply(json.dumps({"title": title_of(found.group(1) if found else "")}))
        return None

    def delegate_call(self, req: Request) -> tuple[str, dict[str, Any]] | None:
        if "Agent" not in req.tools:
            return None
        return "Agent", {
            "description": "Survey the project",
            "prompt": "List the files of the project HOLD-sub",
            "subagent_type": "general-purpose",
        }


def prepare(day: Day) -> None:
    """The project, and the settings that start Claude Code straight at its prompt."""
    day.make_project()
    day.write(
        ".claude.json",
        json.dumps(
            {
                "hasCompletedOnboarding": True,
                "lastOnboardingVersion": PACKAGE.version,
                "lastReleaseNotesSeen": PACKAGE.version,
                "numStartups": 1,
                "customApiKeyResponses": {"approved": [API_KEY[-20:]], "rejected": []},
                "projects": {
                    str(day.project): {
                        "hasTrustDialogAccepted": True,
                        "hasCompletedProjectOnboarding": True,
                        "projectOnboardingSeenCount": 1,
                    }
                },
            }
        ),
    )
    day.write(
        ".claude/settings.json",
        json.dumps(
            {
                "permissions": {"defaultMode": "bypassPermissions"},
                "skipDangerousModePermissionPrompt": True,
            }
        ),
    )


STORY = """Start; claude --version; a prompt held by the stand-in (busy), answered (idle,
the model, the agent's own title); /rename; a sub-agent (the Task tool) held, then done;
/clear (the first conversation ends, a new one starts); a prompt in the new conversation;
/exit."""
SHORT_STORY = """Start; a prompt held by the stand-in (busy), answered (idle, the model);
/exit."""


def env(day: Day, path: str) -> dict[str, str]:
    found = day.base_env(path)
    found.update(
        ANTHROPIC_BASE_URL=day.model.url,
        ANTHROPIC_API_KEY=API_KEY,
        DISABLE_AUTOUPDATER="1",
        CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC="1",
        DISABLE_TELEMETRY="1",
        DISABLE_ERROR_REPORTING="1",
        CLAUDE_CODE_DISABLE_OFFICIAL_MARKETPLACE_AUTOINSTALL="1",
    )
    return found


def start(day: Day, argv: list[str], environ: dict[str, str]) -> tuple[int, str]:
    """The agent started at its prompt: its pid and its first session (``active``, named
    after the project). Its identity on that first event is checked by :func:`identified`,
    at the end of the day (see there)."""
    started = time.monotonic()
    pid = day.start(argv, environ)
    day.terminal.wait_for(READY, 60)
    day.notes.append(f"start -> ready: {time.monotonic() - started:.2f} s")
    received = day.wait(
        lambda _: next((r for r in day.events() if r.event.get("platform") == PLATFORM), None),
        "the first event",
        60,
    )
    day.notes.append(f"start -> first event: {received.received_at - started:.2f} s")
    first: dict[str, Any] = received.event
    assert first["state"] == "active" and first.get("session_name") == "shop-api", first
    return pid, str(first["session_id"])


class Faults:
    """Checks whose failure leaves the rest of the day worth running (a blip of state, the
    identity late): noted as the day goes, asserted at its end, so that one run shows
    every one of them. The day's flow (each wait) fails at once."""

    def __init__(self, day: Day) -> None:
        self.day = day
        self.found: list[str] = []

    @contextlib.contextmanager
    def check(self, what: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.found.append(f"{what}: {exc}")
            self.day.notes.append(f"FAULT {what}: {exc}")

    def assert_none(self) -> None:
        assert not self.found, "\n".join(self.found)


def identified(day: Day) -> None:
    """The first event carried the signing identity: the npm package, verified. Checked at
    the end of the day, the rest of which does not depend on it: quintd holds a new
    session's announcement for its identity for ``signing_wait`` (2 s), and the first
    verification of Claude Code's 245 MB binary against its platform tarball took 2.0-6.4 s
    on a two-core machine (longer when other agents' files were examined first). On
    failure, quintd's log lines say when the session was announced and the file verified."""
    verified = [
        f"{r['ts']} {r['msg']}"
        for r in day.daemon.log_records()
        if r.get("component") == "signing" and "claude-code" in str(r.get("msg"))
    ]
    announced = [
        f"{r['ts']} {r['msg']}"
        for r in day.daemon.log_records()
        if r.get("msg") == "session start" and r.get("uid") == day.user.uid
    ][:1]
    timing = "\n".join(["quintd's log:", *announced, *verified])
    try:
        first = first_session(day, PLATFORM, name="shop-api")
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{timing}") from None
    assert first["signing_id"] == SIGNING_ID, f"{first}\n{timing}"


def states_after(day: Day, session_id: str, count: int) -> list[str]:
    return [e["state"] for e in day.sessions().get(session_id, [])[count:]]


def test_claude_code_day_nvm_prefix(live_user: LiveUser) -> None:
    """Start, a held turn titled by the agent, /rename, a sub-agent, /clear, a second
    conversation, /exit; and ``claude --version`` is no session."""
    install = installed("prefix")
    with live_day(PLATFORM, live_user, ClaudeBrain(), "nvm_prefix", STORY) as day:
        faults = Faults(day)
        prepare(day)
        environ = env(day, install.path())
        pid, s1 = start(day, install.command(PLATFORM), environ)

        version = live_user.run([*install.command(PLATFORM), "--version"], environ, day.project)
        assert PACKAGE.version in version.stdout, version
        day.snapshot("01-started", "the TUI at its prompt, no conversation yet")

        day.terminal.submit(
            "Fix auth middleware token expiry HOLD-a", lambda: day.model.holding("a")
        )
        assert_stays_busy(day, s1)
        day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
        day.model.release("a")
        day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("model") == MODEL,
            "the model, once it answered",
        )
        day.wait_session(
            lambda e: (
                e["session_id"] == s1
                and e.get("session_name") == "Fix auth middleware token expiry"
            ),
            "the agent's own title",
        )
        wait_state(day, s1, "idle")
        day.snapshot("03-idle", "the answer written: idle, the model and the title known")

        seen = len(day.sessions()[s1])
        day.terminal.type("/rename Token expiry fix")
        day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("session_name") == "Token expiry fix",
            "the /rename",
        )
        with faults.check("/rename is no work"):
            renamed = states_after(day, s1, seen)
            assert set(renamed) == {"idle"}, f"after /rename: {renamed}"
        day.snapshot("04-renamed", "/rename Token expiry fix")

        day.terminal.type("Survey the codebase DELEGATE")
        day.wait(lambda _: day.model.holding("sub"), "the sub-agent's model request", 60)
        sub = day.wait_session(
            lambda e: e.get("parent_id") == s1 and e["state"] == "active",
            "the sub-agent's session",
        )
        sub_id = sub["session_id"]
        assert sub["platform"] == PLATFORM and sub["session_name"] == "Survey the project", sub
        with faults.check("the parent busy while its sub-agent works"):
            assert_stays_busy(day, s1)
        with faults.check("the sub-agent busy while its model works"):
            assert_stays_busy(day, sub_id)
        day.snapshot("05-subagent-busy", "a sub-agent (the Task tool), its turn held")
        day.model.release("sub")
        day.wait_session(
            lambda e: e["session_id"] == sub_id and e["state"] == "ended", "the sub-agent's end"
        )
        wait_state(day, s1, "idle")
        day.snapshot("06-subagent-done", "the sub-agent done, its parent idle")

        day.terminal.type("/clear")
        day.wait_session(lambda e: e["session_id"] == s1 and e["state"] == "ended", "/clear")
        s2 = day.wait_session(
            lambda e: (
                e["session_id"] not in (s1, sub_id)
                and e["state"] == "active"
                and e.get("parent_id") is None
            ),
            "the new conversation",
        )["session_id"]
        day.snapshot("07-after-clear", "/clear: the first conversation ended, a new one")

        day.terminal.submit("Add rate limiting HOLD-b", lambda: day.model.holding("b"))
        day.model.release("b")
        day.wait_session(
            lambda e: e["session_id"] == s2 and e.get("model") == MODEL, "the second model"
        )
        wait_state(day, s2, "idle")
        day.snapshot("08-second-idle", "a prompt in the new conversation, answered")
        seen = len(day.sessions()[s2])

        exited = quit_and_time(day, pid, "/exit")
        assert_ended_on_exit(day, exited, [s2])
        with faults.check("/exit: idle -> ended"):
            assert states_after(day, s2, seen) == ["ended"], states_after(day, s2, seen)
        assert set(day.sessions()) == {s1, sub_id, s2}, "no other session"
        day.snapshot("09-quit", "/exit: the process exited")
        with faults.check("the first event's identity"):
            identified(day)
        with faults.check("the sub-agent's identity"):
            assert day.sessions()[sub_id][0].get("signing_id") == SIGNING_ID
        faults.assert_none()


def layout_command(user: LiveUser, layout: str) -> tuple[list[str], str, dict[str, str]]:
    """The command of a layout, its PATH, and what else its environment needs."""
    if layout == "native":  # the platform package's binary, run directly
        prefix = installed("prefix")
        package = prefix.package_dir(PLATFORM)
        binary = package / "node_modules" / "@anthropic-ai" / "claude-code-linux-x64" / "claude"
        return [str(binary)], prefix.path(), {}
    if layout == "npx":  # npm's exec cache, in the live user's ~/.npm (offline once filled)
        npm = npm_env(user)
        extra = {k: v for k, v in npm.items() if k.startswith("npm_config_") or k in PASSED_ON}
        extra.update(
            npm_config_cache=str(user.account_home / ".npm"), npm_config_prefer_offline="true"
        )
        return ["npx", "-y", f"{PACKAGE.name}@{PACKAGE.version}"], SYSTEM_PATH, extra
    install = installed(layout)
    return install.command(PLATFORM), install.path(), {}


@pytest.mark.parametrize("layout", ["project", "native", "npx"])
def test_claude_code_other_layouts(live_user: LiveUser, layout: str) -> None:
    """npm's project shim, the platform package's binary run directly, npx: start ->
    active with its identity, a prompt -> the model, /exit -> ended."""
    argv, path, extra = layout_command(live_user, layout)
    with live_day(PLATFORM, live_user, ClaudeBrain(), layout, SHORT_STORY) as day:
        prepare(day)
        environ = {**env(day, path), **extra}
        pid, s1 = start(day, argv, environ)
        if day.recording:  # the turn held, so that it is recorded busy
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
        wait_state(day, s1, "idle")
        day.snapshot("03-idle", "the answer written: idle, the model known")
        exited = quit_and_time(day, pid, "/exit")
        assert_ended_on_exit(day, exited, [s1])
        assert set(day.sessions()) == {s1}, "no other session"
        day.snapshot("04-quit", "/exit: the process exited")
        identified(day)
