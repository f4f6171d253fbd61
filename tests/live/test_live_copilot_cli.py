"""GitHub Copilot CLI, the real CLI from npm, through a day under a real quintd.

BYOK mode: ``COPILOT_PROVIDER_BASE_URL`` points it at the stand-in (OpenAI Chat Completions,
streamed), ``COPILOT_OFFLINE=true`` keeps it off GitHub (no login, no update, no telemetry).
It asks for no title: the conversation is named after its first prompt until ``/rename``,
and quintd sends only a name the user gave (the directory's until then).

Layouts: the nvm-style prefix (the whole day: ``bin/copilot`` -> ``npm-loader.js`` -> the
native binary of ``@github/copilot-linux-x64``, which holds the conversations), npm's
project-local ``node_modules/.bin/copilot`` (the same two processes) and the native binary
run directly. The native binary unpacks itself (235 MB) into ``~/.cache/copilot/pkg`` at its
first run: that is done once, before the days, into the live user's own ``~/.cache`` (the
days' homes are fresh: ``XDG_CACHE_HOME`` points there), so the TUIs start at once.
``copilot --version`` during a day is no session: in the full day, and in the native day
with an empty cache, where the binary unpacks itself in a child, ``copilot
--binary-version`` (1-3 s; it was a session when it outlived the 3 s quintd gives a young
Copilot process to name its conversation: on a loaded machine).

Quitting: ``/exit`` (the full day, the native binary), or closing the terminal (npm's
project layout: SIGHUP, the loader dies before its native binary).

``/new`` keeps the first conversation open beside the new one; ``/exit`` closes the current
one and shows the other; a second ``/exit`` quits.
"""

from __future__ import annotations

import contextlib
import functools
import json
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from day import Day, ExitWatch, live_day
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

PLATFORM = "copilot-cli"
PACKAGE = "@github/copilot"
MODEL = "gpt-4.1"
IDENTITY = f"npm:{PACKAGE}"
# The status line of an empty prompt (it reads "@ files · # issues" while text is typed).
READY = r"/ commands"
SEPARATOR = re.compile(r"^\s*─{20,}\s*$")
# An empty cache in the day's home: a --version there unpacks the binary.
FRESH_CACHE = "fresh-cache"


class CopilotBrain(Brain):
    def __call__(self, req: Request) -> Reply:
        # Copilot puts context before the prompt (<current_datetime>...</current_datetime>).
        req.user_text = re.sub(r"<([a-z_]+)>.*?</\1>", "", req.user_text, flags=re.S).strip()
        return super().__call__(req)

    def delegate_call(self, req: Request) -> tuple[str, dict[str, Any]] | None:
        if "task" not in req.tools:
            return None
        args: dict[str, Any] = {
            "description": "Survey the project",
            "prompt": "List the files of the project HOLD-sub",
            "agent_type": "general-purpose",
            "name": "survey",
            "mode": "sync",
        }
        schema = req.tools["task"].get("properties") or {}
        return "task", {k: v for k, v in args.items() if not schema or k in schema}

    def after_tool(self, req: Request) -> Reply:
        return Reply(f"Finished: {plain(req.user_text)[:40]}.")


def env(day: Day, path: str) -> dict[str, str]:
    found = day.base_env(path)
    found.update(
        COPILOT_PROVIDER_BASE_URL=f"{day.model.url}/v1",
        COPILOT_PROVIDER_API_KEY="sk-live-fake",
        COPILOT_MODEL=MODEL,
        COPILOT_OFFLINE="true",
        COPILOT_AUTO_UPDATE="false",
        XDG_CACHE_HOME=str(unpacked()),
    )
    return found


def settings(day: Day) -> None:
    """The project is trusted (else a first-run dialog asks)."""
    day.write(".copilot/config.json", json.dumps({"trustedFolders": [str(day.project)]}) + "\n")


@functools.cache
def unpacked() -> Path:
    """The native binary unpacked once (``copilot --version`` as the live user, before any
    day): into the live user's own ``~/.cache`` (``XDG_CACHE_HOME`` for the days, whose
    homes are fresh), as a user's first run leaves it. The days' TUIs start at once."""
    user = LiveUser.get()
    install = installed("prefix")
    cache = user.account_home / ".cache"
    environ = {
        "HOME": str(user.account_home),
        "PATH": install.path(),
        "LANG": "C.UTF-8",
        "XDG_CACHE_HOME": str(cache),
        "COPILOT_OFFLINE": "true",
        "COPILOT_AUTO_UPDATE": "false",
    }
    done = user.run([*install.command(PLATFORM), "--version"], environ, cwd=user.account_home)
    assert done.returncode == 0, done.stderr
    assert (cache / "copilot" / "pkg").is_dir(), f"nothing unpacked in {cache}"
    return cache


def version(day: Day, argv: list[str], environ: dict[str, str], unpack: bool = False) -> None:
    """``copilot --version`` as the live user while quintd runs: the loader and the native
    binary, each asked its version. ``unpack``: with nothing unpacked in its cache (a
    user's first run), where the native binary unpacks itself in a child of its own,
    ``copilot --binary-version`` (``COPILOT_SEA_EXTRACT_ONLY=1``, 1-3 s). None is a
    session."""
    if unpack:
        environ = {**environ, "XDG_CACHE_HOME": str(day.home / FRESH_CACHE)}
    done = day.user.run([*argv, "--version"], environ, cwd=day.project)
    assert done.returncode == 0, done.stderr
    assert "1.0.102" in done.stdout, done.stdout
    if unpack:
        assert (day.home / FRESH_CACHE / "copilot" / "pkg").is_dir(), "nothing unpacked"


def assert_no_other_session(day: Day, expected: set[str], after: str) -> None:
    others = {
        sid: sorted({str(e.get("session_name")) for e in events})
        for sid, events in day.sessions().items()
        if sid not in expected
    }
    assert not others, f"sessions that are no conversation ({after}): {others}"


STORY = """Start; copilot --version; a prompt held by the stand-in (busy), answered (idle,
the model); a sub-agent (the task tool) held, then done; /rename; /new (both conversations
open); a prompt in the second, answered; /exit (the second ends, the first is shown
again); /exit (quits: the first ends)."""
SHORT_STORY = """Start; a prompt held by the stand-in (busy), answered (idle, the model);
quit (the project layout: the terminal closed; native: /exit)."""


@contextlib.contextmanager
def copilot_day(live_user: LiveUser, layout: str, story: str) -> Iterator[Day]:
    """A day with the project trusted; a binary unpacked in the day is removed after it
    (235 MB: the day's home is left in /tmp)."""
    unpacked()
    home: Path | None = None
    try:
        with live_day(PLATFORM, live_user, CopilotBrain(), layout, story) as day:
            home = day.home
            day.make_project()
            settings(day)
            yield day
    finally:
        if home is not None:
            shutil.rmtree(home / FRESH_CACHE, ignore_errors=True)


def input_box(screen: str) -> str:
    """The prompt's text: what is between the last two rules of the screen."""
    lines = screen.splitlines()
    rules = [i for i, line in enumerate(lines) if SEPARATOR.match(line)]
    if len(rules) < 2:
        return ""
    return "\n".join(lines[rules[-2] + 1 : rules[-1]])


def submit(day: Day, text: str) -> None:
    """Types a line and Enter once the prompt is ready (its status line: a turn is over; a
    command typed while the answer is still being written is queued, and a queued /exit
    never runs), then the input box must empty: the TUI took the line (an Enter read as
    part of a paste leaves the text in the box, the status line "@ files")."""
    day.terminal.wait_for(READY, 60)
    day.terminal.type(text)
    probe = text[-16:]
    day.wait(
        lambda _: probe not in input_box(day.terminal.screen()),
        f"Copilot to take the line {text!r} (its box still holds it: Enter lost?)",
        15,
    )


def states_since(day: Day, session_id: str, count: int) -> list[str]:
    """The states of the session's events after its first ``count`` ones."""
    return [e["state"] for e in day.sessions().get(session_id, [])[count:]]


def test_copilot_cli_day_nvm_prefix(live_user: LiveUser) -> None:
    """Start, --version, a held turn, a sub-agent, /rename, /new (both open), a turn in the
    second conversation, /exit (the second ends), /exit (quits: the first ends)."""
    install = installed("prefix")
    with copilot_day(live_user, "nvm_prefix", STORY) as day:
        environ = env(day, install.path())
        pid = day.start(install.command(PLATFORM), environ)
        first = first_session(day, PLATFORM, name="shop-api")
        assert first["signing_id"] == IDENTITY, first
        s1 = first["session_id"]
        day.terminal.wait_for(READY, 120)
        version(day, install.command(PLATFORM), environ)
        day.snapshot("01-started", "the TUI at its prompt, no conversation yet")

        submit(day, "Fix auth middleware token expiry HOLD-a")
        day.wait(lambda _: day.model.holding("a"), "the model to be asked", 60)
        assert_stays_busy(day, s1)
        assert_no_other_session(day, {s1}, "copilot --version")
        day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
        day.model.release("a")
        answered = day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("model") == MODEL,
            "the model, once it answered",
        )
        assert answered["state"] == "active"
        wait_state(day, s1, "idle")
        # Copilot names it after the prompt: not a name the user gave, it stays home.
        assert {e.get("session_name") for e in day.sessions()[s1]} == {"shop-api"}
        day.snapshot("03-idle", "the answer written: idle, the model known")

        submit(day, "Survey the codebase DELEGATE")
        sub = day.wait_session(
            lambda e: e.get("parent_id") == s1 and e["state"] == "active",
            "the sub-agent's session",
            60,
        )
        assert sub["platform"] == PLATFORM
        assert sub.get("session_name") == "Survey the project", sub
        day.wait(lambda _: day.model.holding("sub"), "the sub-agent's own request", 60)
        day.snapshot("04-subagent-busy", "a sub-agent (the task tool), its turn held")
        day.model.release("sub")
        day.wait_session(
            lambda e: e["session_id"] == sub["session_id"] and e["state"] == "ended",
            "the sub-agent's end",
            60,
        )
        day.terminal.wait_for(r"Finished: ", 60)
        wait_state(day, s1, "idle", timeout=60)
        day.snapshot("05-subagent-done", "the sub-agent done, its parent idle")

        submit(day, "/rename Token expiry fix")
        day.terminal.wait_for(r"Session renamed to: Token expiry fix", 30)
        day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("session_name") == "Token expiry fix",
            "the /rename",
        )
        day.snapshot("06-renamed", "/rename Token expiry fix")

        submit(day, "/new")
        day.terminal.wait_for(r"Started a new session", 30)
        s2 = day.wait_session(
            lambda e: (
                e["session_id"] not in (s1, sub["session_id"])
                and e["state"] == "active"
                and e.get("parent_id") is None
            ),
            "the new conversation",
        )["session_id"]
        assert (day.latest(s1) or {}).get("state") != "ended", "/new keeps the first open"
        day.snapshot("07-after-new", "/new: a second conversation, the first still open")

        submit(day, "Add rate limiting HOLD-b")
        day.wait(lambda _: day.model.holding("b"), "the second turn", 60)
        day.model.release("b")
        day.wait_session(
            lambda e: e["session_id"] == s2 and e.get("model") == MODEL, "the second model"
        )
        wait_state(day, s2, "idle")
        day.snapshot("08-second-idle", "a prompt in the second conversation, answered")

        # /exit closes the current conversation (the second); the first is shown again.
        seen_s2 = len(day.sessions()[s2])
        submit(day, "/exit")
        day.wait_session(
            lambda e: e["session_id"] == s2 and e["state"] == "ended", "the second's /exit"
        )
        day.terminal.wait_for(r"Survey the codebase DELEGATE", 30)
        assert states_since(day, s2, seen_s2) == ["ended"], "an idle conversation just ends"
        assert (day.latest(s1) or {}).get("state") == "idle", "the first stays open, idle"
        day.snapshot("09-second-closed", "/exit: the second conversation closed")

        # The second /exit quits: the first ends (it closes, the process exits), and only
        # then: its one event since the keystroke is its end.
        seen_s1 = len(day.sessions()[s1])
        day.terminal.wait_for(READY, 60)  # the turn is over: /exit is not queued
        exited = quit_and_time(day, pid, "/exit")
        assert_ended_on_exit(day, exited, [s1])
        assert states_since(day, s1, seen_s1) == ["ended"], "an idle conversation just ends"
        assert_no_other_session(day, {s1, sub["session_id"], s2}, "the end of the day")
        day.snapshot("10-quit", "/exit again: the process exited")


def _native(package_dir: Path) -> list[str]:
    return [str(package_dir / "node_modules" / "@github" / "copilot-linux-x64" / "copilot")]


def close_and_time(day: Day, pid: int) -> float:
    """Closes the agent's terminal (SIGHUP to the loader and its native binary, as a user
    closing the window); the moment (monotonic) the last of them exited."""
    children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    watches = [ExitWatch(p).start() for p in [pid, *map(int, children)]]
    closed = time.monotonic()
    day.terminal.close()
    exits = [watch.wait(60) for watch in watches]
    day.notes.append(f"terminal closed -> exits: {[round(t - closed, 2) for t in exits]} s")
    return max(exits)


@pytest.mark.parametrize("layout", ["project", "native"])
def test_copilot_cli_other_layouts(live_user: LiveUser, layout: str) -> None:
    """npm's project shim (loader + native binary; quit by closing the terminal) and the
    native binary alone (/exit): start -> active with its identity, a prompt -> the model,
    quit -> ended. The native binary, known to quintd by then, is asked its --version with
    nothing unpacked (its unpacking child): no session."""
    install = installed("prefix" if layout == "native" else layout)
    if layout == "native":
        argv = _native(install.package_dir(PLATFORM))
        assert Path(argv[0]).is_file(), argv
    else:
        argv = install.command(PLATFORM)
    with copilot_day(live_user, layout, SHORT_STORY) as day:
        environ = env(day, install.path())
        pid = day.start(argv, environ)
        first = first_session(day, PLATFORM, name="shop-api")
        assert first["signing_id"] == IDENTITY, first
        s1 = first["session_id"]
        day.terminal.wait_for(READY, 120)
        if layout == "native":
            # Its identity known (the first event has it): an unpacking child that lives
            # past the young process's grace would be announced at once.
            version(day, argv, environ, unpack=True)
        if day.recording:  # the turn held, so that it is recorded busy
            day.snapshot("01-started", "the TUI at its prompt, no conversation yet")
            submit(day, "Fix auth middleware token expiry HOLD-a")
            day.wait(lambda _: day.model.holding("a"), "the model to be asked", 60)
            wait_state(day, s1, "active")
            day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
            day.model.release("a")
        else:
            submit(day, "Fix auth middleware token expiry")
        day.wait_session(lambda e: e["session_id"] == s1 and e.get("model") == MODEL, "the model")
        day.terminal.wait_for(r"Done: Fix auth", 30)
        day.terminal.wait_for(READY, 60)  # the turn is over: /exit is not queued
        if day.recording:
            wait_state(day, s1, "idle")
            day.snapshot("03-idle", "the answer written: idle, the model known")
        if layout == "native":
            exited = quit_and_time(day, pid, "/exit")
        else:
            exited = close_and_time(day, pid)
        assert_ended_on_exit(day, exited, [s1])
        # The loader may die before its native binary: the session is still the same one.
        assert {e.get("signing_id") for e in day.sessions()[s1]} == {IDENTITY}
        assert_no_other_session(day, {s1}, "the end of the day")
        day.snapshot("04-quit", "the processes exited")
