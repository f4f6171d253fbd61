"""OpenCode, the real CLI from npm, through a day under a real quintd.

``opencode-ai`` ships a native (Bun) binary: npm links ``bin/opencode`` (the prefix) and
``node_modules/.bin/opencode`` (a project) straight to ``opencode-ai/bin/opencode.exe``, a
hard link of the platform package's ``opencode-linux-x64/bin/opencode``; ``npx`` runs it
under ``npm exec`` and ``sh -c``. In every layout the agent process is that binary, whose
identity is ``npm:opencode-ai`` (checked against the platform package's tarball in npm's
cache: 185 MB to hash, seconds on a busy machine).

OpenCode keeps its conversations in one SQLite database (``~/.local/share/opencode``),
written at a conversation's first prompt, not at start-up nor at ``/new``. Its model is a
custom provider in ``~/.config/opencode/opencode.json`` (Chat Completions, the stand-in).
At each top-level conversation's first prompt it asks the small model for a title (a
request with no tools, system "You are a title generator"): the default brain answers it,
and quintd reports the title as the session's name. Its sub-agent (the ``task`` tool) is a
child session, "<description> (@general subagent)", run inside the same process.

What would reach the network is turned off: the models.dev catalogue, the self-update, the
LSP downloads, sharing (environment and settings), and the install of ``@opencode-ai/plugin``
into the config directory that OpenCode makes at start unless a ``node_modules/`` and a
``package-lock.json`` listing it are there (written here, with no module in it); traced,
its only connections are then the stand-in's. Bun unpacks
its native libraries (19 MB a start) into ``$TMPDIR``: the day's home keeps them.

Some checks of quintd are made ``later`` (``Later``): a failure is asserted at the end of the
day, so that one defect does not hide what the rest of the day shows.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import time
from collections.abc import Iterator
from typing import Any

import pytest
from day import IDLE_AFTER, Day, live_day
from installs import SYSTEM_PATH
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
from standin import MODEL, Brain, Request

PLATFORM = "opencode"
VERSION = "1.18.33"
PLATFORM_PACKAGE = "opencode-linux-x64"  # the binary's own package (x64 Linux)
IDENTITY = "npm:opencode-ai"

READY = r"Ask anything"  # the empty prompt
# The first turn of a process goes out 6-30 s after Enter (OpenCode is still setting up its
# project; over a minute on a loaded machine): the held request is waited for, never a clock.
FIRST_TURN_S = 90


class OpenCodeBrain(Brain):
    def delegate_call(self, req: Request) -> tuple[str, dict[str, Any]] | None:
        if "task" not in req.tools:
            return None  # the sub-agent itself is offered no task tool
        return "task", {
            "description": "Survey the project",
            "prompt": "List the files of the project HOLD-sub",
            "subagent_type": "general",
        }


class Later:
    """Checks whose failure is asserted at the end of the day (``done``); each is in the
    day's notes at once (printed if the day fails sooner)."""

    def __init__(self, day: Day) -> None:
        self.day = day
        self.failed: list[str] = []

    @contextlib.contextmanager
    def check(self, what: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.failed.append(f"{what}: {exc}")
            self.day.notes.append(f"FAILED (asserted at the end): {what}: {exc}")

    def done(self) -> None:
        assert not self.failed, "\n".join(self.failed)


def settings(day: Day) -> None:
    """The loopback provider as the model, and nothing that would reach the network."""
    config = {
        "provider": {
            "loopback": {
                "npm": "@ai-sdk/openai-compatible",
                "name": "Loopback",
                "options": {"baseURL": f"{day.model.url}/v1", "apiKey": "sk-live-fake"},
                "models": {MODEL: {"name": "Stand-in Coder", "tool_call": True}},
            }
        },
        "model": f"loopback/{MODEL}",
        "small_model": f"loopback/{MODEL}",
        "autoupdate": False,
        "share": "disabled",
    }
    day.write(".config/opencode/opencode.json", json.dumps(config, indent=2))
    # The plugin install at start (npm, 20-30 s) is skipped when node_modules/ exists and
    # the lock file lists every dependency of package.json.
    plugin = {"@opencode-ai/plugin": VERSION}
    day.write(".config/opencode/package.json", json.dumps({"dependencies": plugin}))
    day.write(
        ".config/opencode/package-lock.json",
        json.dumps({"lockfileVersion": 3, "packages": {"": {"dependencies": plugin}}}),
    )
    for directory in (".config/opencode/node_modules", "tmp"):
        (day.home / directory).mkdir(parents=True)
    day.user.own(day.home)


def env(day: Day, path: str) -> dict[str, str]:
    found = day.base_env(path)
    found.update(
        OPENCODE_DISABLE_AUTOUPDATE="1",
        OPENCODE_DISABLE_MODELS_FETCH="1",
        OPENCODE_DISABLE_LSP_DOWNLOAD="1",
        OPENCODE_DISABLE_SHARE="1",
        TMPDIR=str(day.home / "tmp"),
    )
    return found


STORY = """Start; a prompt held by the stand-in (busy; opencode --version beside it),
answered (idle, the model, OpenCode's own title); a rename (the command palette); a
sub-agent (the task tool) held, then done; /new and a prompt held (the first conversation
ends, a new one starts), answered; /exit."""
SHORT_STORY = """Start; a prompt held by the stand-in (busy), answered (idle, the model);
/exit."""


def command(day: Day, layout: str) -> tuple[list[str], dict[str, str]]:
    """The command and environment a user of ``layout`` starts OpenCode with."""
    if layout == "npx":
        # npm's exec cache in the live user's own ~/.npm (where the installs left the
        # tarballs): once it holds the package, npx asks the registry for nothing.
        found = env(day, SYSTEM_PATH)
        found.update(
            npm_config_cache=str(day.user.account_home / ".npm"),
            npm_config_prefer_offline="true",
            npm_config_update_notifier="false",
            npm_config_fund="false",
            npm_config_audit="false",
            npm_config_loglevel="warn",
        )
        return ["npx", "-y", f"opencode-ai@{VERSION}"], found
    install = installed("project" if layout == "native" else layout)
    if layout == "native":
        binary = install.modules / PLATFORM_PACKAGE / "bin" / "opencode"
        return [str(binary)], env(day, install.path())
    return install.command(PLATFORM), env(day, install.path())


def signing_note(day: Day) -> None:
    """How long quintd took to identify the binary (its log says)."""
    for record in day.daemon.log_records():
        msg = str(record.get("msg", ""))
        if msg.startswith("signing:") and "opencode" in msg:
            day.notes.append(msg)


def start(day: Day, argv: list[str], environment: dict[str, str], later: Later) -> tuple[int, str]:
    """OpenCode in the project: its pid and its session, once it shows its empty prompt.
    The first event is ``active``, named after the project, with the identity (later: on a
    busy machine the binary's first check outlasts the announcement's wait)."""
    day.make_project()
    settings(day)
    began = time.monotonic()
    pid = day.start(argv, environment)
    first = day.wait(
        lambda events: next((e for e in events if e.get("platform") == PLATFORM), None),
        "OpenCode's first event",
        120,  # npx unpacks the package first (185 MB twice), once per machine
    )
    day.notes.append(f"start -> first event: {time.monotonic() - began:.2f} s")
    with later.check("the first event"):
        first_session(day, PLATFORM, name="shop-api")
    sid: str = first["session_id"]
    known = day.wait_session(
        lambda e: e["session_id"] == sid and e.get("signing_id") is not None,
        "the identity",
        60,
    )
    day.notes.append(f"start -> identity: {time.monotonic() - began:.2f} s")
    assert known["signing_id"] == IDENTITY, known
    day.terminal.wait_for(READY, 120)
    day.notes.append(f"start -> ready: {time.monotonic() - began:.2f} s")
    signing_note(day)
    return pid, sid


def assert_unprompted_idle(day: Day, sid: str, text: str, window: float = 2.5) -> None:
    """Waiting for its first prompt, the TUI is not working (it has no conversation yet):
    idle soon after it shows its prompt, and still idle while the user types ``text`` (its
    redraws are no work). Enter is left to the caller."""
    wait_state(day, sid, "idle", timeout=IDLE_AFTER + 4)
    seen = len(day.sessions()[sid])
    day.terminal.type(text, enter=False)
    deadline = time.monotonic() + window  # more than two of quintd's passes
    while time.monotonic() < deadline:  # an observation window, not a synchronisation
        states = [e["state"] for e in since(day, sid, seen)]
        assert states.count("idle") == len(states), f"not idle while it waits: {states}"
        time.sleep(0.1)  # polling interval


def prompt(
    day: Day, text: str, tag: str, timeout: float = FIRST_TURN_S, typed: bool = False
) -> None:
    """Types a prompt (or only Enter, ``typed``) whose turn the stand-in holds on ``tag``,
    and waits for that request."""
    began = time.monotonic()
    if typed:
        day.terminal.keys("Enter")
    else:
        day.terminal.type(text)
    day.wait(lambda _: day.model.holding(tag), f"the model to be asked ({tag})", timeout)
    day.notes.append(f"Enter -> model request {tag}: {time.monotonic() - began:.2f} s")


def since(day: Day, sid: str, count: int) -> list[dict[str, Any]]:
    """The session's events after its first ``count``."""
    return day.sessions().get(sid, [])[count:]


@pytest.mark.timeout(300)  # OpenCode starts slowly on a busy machine (a minute to its prompt)
def test_opencode_day_nvm_prefix(live_user: LiveUser) -> None:
    """Start, a held turn and its title, a rename, a sub-agent, ``--version`` beside it,
    /new and a second conversation, /exit."""
    install = installed("prefix")
    with live_day(PLATFORM, live_user, OpenCodeBrain(), "nvm_prefix", STORY) as day:
        later = Later(day)
        environment = env(day, install.path())
        pid, s1 = start(day, install.command(PLATFORM), environment, later)
        day.snapshot("01-started", "the TUI at its prompt, no conversation yet")
        first_prompt = "Fix auth middleware token expiry HOLD-a"
        with later.check("the unprompted TUI"):
            assert_unprompted_idle(day, s1, first_prompt)
        typed = first_prompt in day.terminal.screen()
        prompt(day, first_prompt, "a", typed=typed)
        # The same user's `opencode --version` meanwhile (seconds of a 185 MB binary): no
        # session.
        version = subprocess.Popen(
            [
                *day.user.as_user(),
                "env",
                "-i",
                *(f"{k}={v}" for k, v in environment.items()),
                *install.command(PLATFORM),
                "--version",
            ],
            cwd=day.project,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert_stays_busy(day, s1)
        day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
        day.model.release("a")
        answered = day.wait_session(
            lambda e: (
                e["session_id"] == s1
                and e.get("model") == MODEL
                and e.get("session_name") == "Fix auth middleware token expiry"
            ),
            "the model and OpenCode's own title",
        )
        assert answered["state"] == "active", answered
        wait_state(day, s1, "idle")
        out, _ = version.communicate(timeout=60)
        assert out.strip() == VERSION, out
        day.snapshot("03-idle", "the answer written: idle, the model and the title known")

        # The rename: the command palette (this version has no /rename). A new name is an
        # update, not work.
        before = len(day.sessions()[s1])
        day.terminal.keys("C-p")
        day.terminal.wait_for(r"Commands", 10)
        day.terminal.type("Rename session")
        day.terminal.wait_for(r"Rename Session", 10)
        day.terminal.keys("C-u")
        day.terminal.type("Token expiry fix")
        day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("session_name") == "Token expiry fix",
            "the rename",
        )
        wait_state(day, s1, "idle")
        with later.check("the rename"):
            states = [e["state"] for e in since(day, s1, before)]
            assert "active" not in states, f"a rename made it active: {states}"
        day.snapshot("04-renamed", "renamed Token expiry fix (the command palette)")

        day.terminal.type("Survey the codebase DELEGATE")
        day.wait(lambda _: day.model.holding("sub"), "the sub-agent's model request", 60)
        sub = day.wait_session(
            lambda e: e.get("parent_id") == s1 and e["state"] == "active",
            "the sub-agent's session",
        )
        assert sub["platform"] == PLATFORM
        assert sub.get("session_name") == "Survey the project (@general subagent)", sub
        assert sub.get("signing_id") == IDENTITY, sub
        assert (day.latest(s1) or {}).get("state") == "active", "the parent works meanwhile"
        day.snapshot("05-subagent-busy", "a sub-agent (the task tool), its turn held")
        day.model.release("sub")
        day.wait_session(
            lambda e: e["session_id"] == sub["session_id"] and e["state"] == "ended",
            "the sub-agent's end",
        )
        wait_state(day, s1, "idle")
        day.snapshot("06-subagent-done", "the sub-agent done, its parent idle")

        # /new writes nothing until the new conversation's first prompt: then the old one
        # ends and the new one starts.
        day.terminal.type("/new")
        day.terminal.wait_for(READY, 30)
        prompt(day, "Add rate limiting HOLD-b", "b")
        day.wait_session(lambda e: e["session_id"] == s1 and e["state"] == "ended", "/new")
        s2 = day.wait_session(
            lambda e: (
                e["session_id"] not in (s1, sub["session_id"])
                and e.get("parent_id") is None
                and e["state"] == "active"
            ),
            "the new conversation",
        )["session_id"]
        day.snapshot("07-second-busy", "/new and a prompt, held: the first ended, a new one")
        day.model.release("b")
        second = day.wait_session(
            lambda e: (
                e["session_id"] == s2
                and e.get("model") == MODEL
                and e.get("session_name") == "Add rate limiting"
            ),
            "the second conversation's model and title",
        )
        assert second["signing_id"] == IDENTITY, second
        wait_state(day, s2, "idle")
        day.snapshot("08-second-idle", "the second conversation answered")

        exited = quit_and_time(day, pid, "/exit")
        assert_ended_on_exit(day, exited, [s2])
        assert set(day.sessions()) == {s1, sub["session_id"], s2}, "no other session"
        day.snapshot("09-quit", "/exit: the process exited")
        later.done()
        print("\n".join(day.notes))


@pytest.mark.timeout(300)
@pytest.mark.parametrize("layout", ["project", "native", "npx"])
def test_opencode_other_layouts(live_user: LiveUser, layout: str) -> None:
    """npm's project shim, the platform package's binary run directly, and npx: start ->
    active with the identity, a prompt -> the model, /exit -> ended."""
    with live_day(PLATFORM, live_user, OpenCodeBrain(), layout, SHORT_STORY) as day:
        later = Later(day)
        argv, environment = command(day, layout)
        pid, s1 = start(day, argv, environment, later)
        day.snapshot("01-started", "the TUI at its prompt, no conversation yet")
        prompt(day, "Layout check HOLD-a", "a")
        if day.recording:
            wait_state(day, s1, "active")
            day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
        day.model.release("a")
        day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("model") == MODEL, "the model", 30
        )
        if day.recording:
            wait_state(day, s1, "idle")
            day.snapshot("03-idle", "the answer written: idle, the model known")
        exited = quit_and_time(day, pid, "/exit")
        assert_ended_on_exit(day, exited, [s1])
        assert set(day.sessions()) == {s1}, "no other session"
        day.snapshot("04-quit", "/exit: the process exited")
        later.done()
        print("\n".join(day.notes))
