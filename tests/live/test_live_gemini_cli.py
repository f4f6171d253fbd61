"""Gemini CLI, the real CLI from npm, through a day under a real quintd.

Layouts: the nvm-style prefix (the whole day: ``bin/gemini`` -> ``bundle/gemini.js``, which
relaunches itself as a child ``node --max-old-space-size=... gemini.js``), npm's
project-local ``node_modules/.bin/gemini`` and ``npx -y @google/gemini-cli@<version>``
(``npm exec`` -> ``sh -c gemini`` -> the CLI -> its relaunch): short days.

The model API is the Gemini API (``api_gemini.py``). Before each prompt the CLI's model
router asks a classifier (``generateContent`` in JSON mode to a flash-lite model, a schema
``{complexity_reasoning, complexity_score}``); a low score routes the turn to
``gemini-3.8-flash``, the model quintd reports. The sub-agent is ``invoke_agent`` ->
``codebase_investigator`` (its own model, ``chats/<parent sessionId>/<its sessionId>.jsonl``):
its requests offer ``complete_task``, and it ends only when the model calls that tool with a
report built from its schema.

Gemini CLI's own title of a conversation (``$set: {summary}`` in its chat file) is written
only for a finished conversation, at the CLI's next start or by ``gemini --list-sessions``
(there is no /rename; ``/chat save`` makes a checkpoint, not a title): the day runs
``--list-sessions`` after the quit and checks that the title, written into the ended
conversation's file, brings no event (a session never comes back after ``ended``) and that
the command is no session.

First-run dialogs are pre-empted by ``~/.gemini/settings.json`` (the API key auth, folder
trust, no update check, no telemetry, no IDE nudge) and ``~/.gemini/trustedFolders.json``.
Keystrokes: the CLI reads an Enter that comes within 30 ms of a typed key as a pasted
newline, not a submit; the day's Enter comes 0.1 s after the echo (``enter``).
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path
from typing import Any

import api_gemini
import pytest
from day import Day, live_day
from installs import PASSED_ON, PINNED, SYSTEM_PATH
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
from standin import Brain, Reply, Request, plain, title_of

PLATFORM = "gemini-cli"
VERSION = "0.61.0"
MODEL = "gemini-3.8-flash"  # where the router sends a simple prompt
READY = r"Type your message or @path/to/file"
# Gemini CLI takes an Enter read within 30 ms of a typed key for a newline, not a submit
# (bufferFastReturn: a paste's newlines): the Enter goes this long after the echo.
ENTER_GAP_S = 0.1

STORY = """gemini --version; start; a prompt held by the stand-in (busy), answered (idle,
the model); /clear (the first conversation ends, a new one starts); a prompt answered with
a sub-agent (invoke_agent -> codebase_investigator), held, then done; /quit; gemini
--list-sessions (the CLI writes the ended conversation's title: no event)."""
SHORT_STORY = """Start; a prompt held by the stand-in (busy), answered (idle, the model);
/quit."""

SETTINGS = {
    "security": {"auth": {"selectedType": "gemini-api-key"}, "folderTrust": {"enabled": True}},
    "general": {"enableAutoUpdate": False, "enableAutoUpdateNotification": False},
    "privacy": {"usageStatisticsEnabled": False},
    "telemetry": {"enabled": False},
    "ide": {"enabled": False, "hasSeenNudge": True},
    "ui": {"showCompatibilityWarnings": False},
}


class GeminiBrain(Brain):
    def __call__(self, req: Request) -> Reply:
        if "complete_task" in req.tools:  # a sub-agent's turn: it ends by complete_task
            hold = None if req.after_tool else re.search(r"HOLD-([A-Za-z0-9]+)", req.user_text)
            return Reply(
                "Investigation done.",
                ("complete_task", self.report(req.tools["complete_task"])),
                hold.group(1) if hold else None,
            )
        aux = self.auxiliary(req)
        if aux is not None:
            return aux
        # The first prompt of a conversation comes after the CLI's <session_context> in the
        # same message: the prompt is the last line.
        lines = [line for line in req.user_text.splitlines() if line.strip()]
        req.user_text = lines[-1] if lines else ""
        return super().__call__(req)

    def auxiliary(self, req: Request) -> Reply | None:
        answer = api_gemini.json_reply(
            req, {"complexity_score": 1, "complexity_reasoning": "A simple, local change."}
        )
        if answer is not None:  # the model router's classifier (or another JSON request)
            return Reply(answer)
        if not req.stream:  # a utility request: the summary that titles a conversation
            if "Summary (max 80 chars)" in req.user_text:
                users = re.findall(r"^User: (?!<)(.+)$", req.user_text, re.M)
                return Reply(title_of(users[0]) if users else "Untitled")
            return Reply("ok")
        return None

    def delegate_call(self, req: Request) -> tuple[str, dict[str, Any]] | None:
        if "invoke_agent" not in req.tools:
            return None
        return "invoke_agent", {
            "agent_name": "codebase_investigator",
            "prompt": "List the files of the project HOLD-sub",
        }

    def after_tool(self, req: Request) -> Reply:
        return Reply(f"Finished: {plain(req.user_text)[:40] or 'the tool'}.")

    @staticmethod
    def report(schema: dict[str, Any]) -> dict[str, Any]:
        args = api_gemini.from_schema(schema)
        assert isinstance(args, dict)
        if isinstance(args.get("report"), dict):
            args["report"]["SummaryOfFindings"] = "Two files: README.md and auth.py."
        elif isinstance(args.get("result"), dict):
            args["result"]["response"] = "Two files: README.md and auth.py."
        elif "result" in args:
            args["result"] = "Two files: README.md and auth.py."
        return args


def prepare(day: Day) -> None:
    """The project, and the settings that pre-empt every first-run dialog."""
    day.make_project()
    day.write(".gemini/settings.json", json.dumps(SETTINGS, indent=2))
    trusted = day.write(
        ".gemini/trustedFolders.json", json.dumps({str(day.project): "TRUST_FOLDER"})
    )
    os.chmod(trusted, 0o600)


def env(day: Day, path: str) -> dict[str, str]:
    found = day.base_env(path)
    found.update(GOOGLE_GEMINI_BASE_URL=day.model.url, GEMINI_API_KEY="live-fake-key")
    return found


def chats(day: Day) -> list[Path]:
    """The conversations' files, oldest first."""
    return sorted(day.home.glob(".gemini/tmp/*/chats/session-*.jsonl"), key=os.path.getmtime)


def wait_chat(day: Day, seen: int, what: str) -> Path:
    """A new conversation's file (the CLI writes it 2-5 s after its prompt shows: the day
    waits for it before the first prompt, and after /clear)."""
    found: list[Path] = day.wait(lambda _: len(chats(day)) > seen and chats(day), what, 60)
    return found[-1]


def start(day: Day, argv: list[str], environment: dict[str, str]) -> tuple[int, str]:
    """The CLI in its terminal, ready for a prompt: its pid and its session."""
    pid = day.start(argv, environment)
    s1 = first_session(day, PLATFORM, name="shop-api")["session_id"]
    day.terminal.wait_for(READY, 120)
    wait_chat(day, 0, "the conversation's file")
    return pid, s1


def scan_passes(day: Day) -> int:
    return int(((day.daemon.status() or {}).get("scan") or {}).get("passes") or 0)


def looked_again(day: Day) -> None:
    """Until quintd has made two passes over the processes and files since now."""
    passes = scan_passes(day)
    day.wait(lambda _: scan_passes(day) >= passes + 2, "quintd to look again")


def enter(day: Day, text: str) -> None:
    """Types a line and submits it as a person does: the Enter well after the last key
    (the terminal's own ``type`` sends it as soon as the echo shows)."""
    day.terminal.type(text, enter=False)
    time.sleep(ENTER_GAP_S)  # a keystroke's pace, not a wait for a state
    day.terminal.keys("Enter")


def quit_cli(day: Day, pid: int) -> float:
    """``/quit``: the moment the process exited (timed from the Enter)."""
    day.terminal.type("/quit", enter=False)
    time.sleep(ENTER_GAP_S)
    return quit_and_time(day, pid, "keys:Enter")


def prompt(day: Day, text: str, tag: str) -> None:
    """Types a held prompt and waits until the model has it."""
    enter(day, text)
    day.wait(lambda _: day.model.holding(tag), f"the model to be asked ({tag})", 60)


def test_gemini_cli_day_nvm_prefix(live_user: LiveUser) -> None:
    """--version, start, a held turn, /clear, a sub-agent, /quit, --list-sessions (the
    title)."""
    install = installed("prefix")
    with live_day(PLATFORM, live_user, GeminiBrain(), "nvm_prefix", STORY) as day:
        prepare(day)
        version = live_user.run(
            [*install.command(PLATFORM), "--version"], env(day, install.path()), day.project, 120
        )
        assert version.returncode == 0 and version.stdout.strip() == VERSION, version
        looked_again(day)
        assert not day.sessions(), "gemini --version is no session"

        pid, s1 = start(day, install.command(PLATFORM), env(day, install.path()))
        day.snapshot("01-started", "the TUI at its prompt, its conversation's file written")

        prompt(day, "Fix auth middleware token expiry HOLD-a", "a")
        assert_stays_busy(day, s1)
        day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
        day.model.release("a")
        answered = day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("model") == MODEL,
            "the model, once it answered",
        )
        assert answered["state"] == "active"
        wait_state(day, s1, "idle")
        day.terminal.wait_for(r"Done: Fix auth middleware token expiry")
        day.snapshot("03-idle", "the answer written: idle, the model known")

        enter(day, "/clear")
        day.wait_session(lambda e: e["session_id"] == s1 and e["state"] == "ended", "/clear")
        s2 = day.wait_session(
            lambda e: e["session_id"] != s1 and e["state"] == "active",
            "the new conversation",
        )["session_id"]
        assert (day.latest(s2) or {}).get("parent_id", "?") is None, "a conversation, no child"
        wait_chat(day, 1, "the new conversation's file")
        day.snapshot("04-after-clear", "/clear: the first conversation ended, a new one")

        # The model answers with text and the call (as models do): the conversation is busy
        # while its sub-agent works, and the sub-agent is a session of its own.
        prompt(day, "Survey the codebase DELEGATE", "sub")
        sub = day.wait_session(
            lambda e: e.get("parent_id") == s2 and e["state"] == "active",
            "the sub-agent's session",
            30,
        )
        assert sub["platform"] == PLATFORM
        assert_stays_busy(day, s2)
        day.snapshot("05-subagent-busy", "a sub-agent (invoke_agent), its turn held")
        day.model.release("sub")
        day.wait_session(
            lambda e: e["session_id"] == sub["session_id"] and e["state"] == "ended",
            "the sub-agent's end",
        )
        assert (day.latest(s2) or {}).get("model") == MODEL
        wait_state(day, s2, "idle")
        # (a slash command typed while the CLI still answers is refused: "cannot be queued")
        day.terminal.wait_for(r"Finished: ")
        day.snapshot("06-subagent-done", "the sub-agent done, its parent idle")

        before_quit = len(day.sessions()[s2])
        exited = quit_cli(day, pid)
        assert_ended_on_exit(day, exited, [s2])
        last = [e["state"] for e in day.sessions()[s2][before_quit:]]
        assert last == ["ended"], f"quit -> ended, nothing before it: {last}"
        day.snapshot("07-quit", "/quit: the processes exited")

        # The CLI's own title, written into the ended conversation's file.
        counts = {sid: len(events) for sid, events in day.sessions().items()}
        began = time.monotonic()
        listed = live_user.run(
            [*install.command(PLATFORM), "--list-sessions"],
            env(day, install.path()),
            day.project,
            120,
        )
        day.notes.append(f"--list-sessions: {time.monotonic() - began:.2f} s")
        assert listed.returncode == 0, listed
        title = title_of("Survey the codebase DELEGATE")
        assert title in listed.stdout, listed.stdout
        assert any('"summary":"' + title + '"' in chat.read_text() for chat in chats(day)), (
            "the title is in the conversation's file"
        )
        looked_again(day)
        after = {sid: len(day.sessions().get(sid, [])) for sid in counts}
        assert after == counts, "no event after the title: its session has ended"
        day.snapshot("08-titled", "gemini --list-sessions wrote the ended conversation's title")
        others = {k: v for k, v in day.sessions().items() if k not in (s1, s2, sub["session_id"])}
        assert not others, f"no other session (gemini --version, --list-sessions): {others}"


def npx_env(day: Day) -> dict[str, str]:
    """``npx`` as the live user runs it: the machine's Node and npm, npm's cache in the
    user's own ~/.npm (where quintd finds the tarball), a cached package used as it is."""
    found = env(day, SYSTEM_PATH)
    found.update(
        {k: os.environ[k] for k in PASSED_ON if k in os.environ},
        npm_config_cache=str(day.user.account_home / ".npm"),
        npm_config_prefer_offline="true",
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
        npm_config_loglevel="warn",
    )
    return found


NPX = ["npx", "-y", f"{PINNED[PLATFORM].name}@{VERSION}"]


def npx_filled(day: Day) -> bool:
    """Whether npx's exec cache holds the package already."""
    cache = day.user.account_home / ".npm" / "_npx"
    for manifest in cache.glob("*/node_modules/@google/gemini-cli/package.json"):
        try:
            if json.loads(manifest.read_text()).get("version") == VERSION:
                return True
        except (OSError, ValueError):
            continue
    return False


def command(day: Day, layout: str) -> tuple[list[str], dict[str, str]]:
    if layout == "npx":
        if not npx_filled(day):
            # npx unpacks the package into its exec cache once per machine (40 s and
            # more): done first, by a version query, not inside the day's waits.
            filled = day.user.run([*NPX, "--version"], npx_env(day), day.project, 600)
            assert filled.returncode == 0 and filled.stdout.strip() == VERSION, filled
        return NPX, npx_env(day)
    install = installed(layout)
    return install.command(PLATFORM), env(day, install.path())


@pytest.mark.parametrize("layout", ["project", "npx"])
def test_gemini_cli_other_layouts(live_user: LiveUser, layout: str) -> None:
    """npm's own shim, npx: start -> active with its identity, a prompt -> the model,
    /quit -> ended."""
    with live_day(PLATFORM, live_user, GeminiBrain(), layout, SHORT_STORY) as day:
        prepare(day)
        argv, environment = command(day, layout)
        pid, s1 = start(day, argv, environment)
        if day.recording:  # the turn held, so that it is recorded busy
            day.snapshot("01-started", "the TUI at its prompt, its conversation's file written")
            prompt(day, f"Check the {layout} layout HOLD-a", "a")
            wait_state(day, s1, "active")
            day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
            day.model.release("a")
        else:
            enter(day, f"Check the {layout} layout")
        day.wait_session(lambda e: e["session_id"] == s1 and e.get("model") == MODEL, "the model")
        if day.recording:
            wait_state(day, s1, "idle")
            day.terminal.wait_for(r"Done: Check the")
            day.snapshot("03-idle", "the answer written: idle, the model known")
        exited = quit_cli(day, pid)
        assert_ended_on_exit(day, exited, [s1])
        assert set(day.sessions()) == {s1}, "no other session"
        day.snapshot("04-quit", "/quit: the processes exited")
