"""Cline CLI, the real CLI from npm, through a day under a real quintd.

Cline 3.0.65 (npm ``cline``). Layouts: the nvm-style prefix (the whole day): ``bin/cline``
is a Node wrapper that runs the Bun binary ``bin/.cline`` (the postinstall's hard link of
``@cline/cli-linux-x64/bin/cline``) as its child. npm's project shim
``node_modules/.bin/cline`` and npx's (``npx -y cline@<version>``: ``npm exec`` -> ``sh -c
cline``) are links to the platform package's binary itself, no wrapper: they run the native
binary directly (so no third short day runs it by its path). Every layout's identity is
``npm:cline``.

Its model is an OpenAI-compatible provider (``~/.cline/data/settings/providers.json``, as
``cline auth -p openai-compatible -k <key> -m <model> -b <url>`` writes it): the stand-in's
Chat Completions, one request per turn (no title, no classifier); ``spawn_agent`` starts a
sub-agent inside the same process (a child row of ``sessions.db``). Cline names a
conversation after its first prompt; the TUI has no rename: ``cline history update
--title`` (a command of its own, run beside the TUI) renames it, and only such a name is
sent. ``/clear`` marks the conversation completed at once and the next prompt starts a new
one; ``/fork`` (confirmed with ``y``) goes on in a copy titled "<first prompt> (fork)";
``/quit`` and a Ctrl-C at an empty prompt quit.

The first ``cline`` of a home finds no hub: it runs its conversations itself ("local mode")
and starts the **hub daemon** (``.cline --cline-hub-daemon``), which outlives it and runs the
conversations of every later ``cline`` ("hub mode": the rows name the hub's pid). The hub is
no session; it is stopped at the end of a day as a user would (SIGTERM to the pid of its
discovery record).

Start-up: the empty prompt ("What can I do for you?") is drawn before Cline has chosen its
runtime host (local or hub: its log, ``data/logs/cline.log``, says "CLI core runtime
routing selected"); an Enter before that is lost. The prompts are typed once the log says
so (and an Enter that was still lost, the text left in the box and no turn running, would
be pressed again and noted: not seen so far).

What would reach the network is turned off: the update check and the ClinePass notice
(environment), telemetry and auto-update (``global-settings.json``), the first-run notices
(``cli-notices.json``). The model catalogue (models.dev) and Cline's own API (feature
flags) have no switch: a proxy that does not exist (loopback, port 9) takes them, and
``NO_PROXY`` keeps the stand-in and the hub (loopback) direct.

Some checks of quintd are made ``later`` (``Later``): a failure is asserted at the end of the
day, so that one defect does not hide what the rest of the day shows.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import re
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from day import IDLE_AFTER, Day, ExitWatch, live_day, wait_until
from installs import SYSTEM_PATH, Install, npm_env
from live_user import LiveUser
from scenes import (
    assert_ended_on_exit,
    assert_stays_busy,
    installed,
    live_user_fixture,  # noqa: F401  (the fixture)
    quit_and_time,
    status_session,
    wait_state,
)
from standin import MODEL, Brain, Request

PLATFORM = "cline"
VERSION = "3.0.65"
IDENTITY = "npm:cline"
READY = r"What can I do for you\?"  # the empty prompt (also after /clear)
BUSY = "esc to cancel"  # the status line while a turn runs
ROUTED = "CLI core runtime routing selected"  # cline.log: the runtime host is chosen
HUB_ROUTE = "Using discovered local hub runtime host"
LOCAL_ROUTE = "Falling back to local runtime host"
CLINE_LOG = Path(".cline/data/logs/cline.log")
SESSIONS = Path(".cline/data/sessions")
HUB_RECORD = Path(".cline/data/locks/hub/production.json")
RULE = re.compile(r"^\s*─{20,}\s*$")
STORY = """Start (local mode: the first cline of a home); a prompt held by the stand-in
(busy; cline --version beside it), answered (idle, the model); the rename from another
shell (cline history update); a sub-agent (spawn_agent) held, then done; /clear and a
prompt held (the first conversation ends, a new one starts), answered; /quit (the hub it
started runs on); a second TUI served by the hub: a prompt held, answered; /fork (a new
conversation); Ctrl-C; the hub stopped."""
SHORT_STORY = """One of two layouts run one after the other in one home (the project's
cline first, in local mode, starting the hub; then npx's, served by that hub): start; a
prompt held by the stand-in (busy), answered (idle, the model); quit (/quit, Ctrl-C)."""


class ClineBrain(Brain):
    def delegate_call(self, req: Request) -> tuple[str, dict[str, Any]] | None:
        if "spawn_agent" not in req.tools:
            return None
        return "spawn_agent", {
            "task": "List the files of the project HOLD-sub",
            "systemPrompt": "You survey a project and list its files.",
        }


class Later:
    """Checks whose failure is asserted at the end of the day (``done``)."""

    def __init__(self) -> None:
        self.failed: list[str] = []

    @contextlib.contextmanager
    def check(self, what: str) -> Iterator[None]:
        try:
            yield
        except AssertionError as exc:
            self.failed.append(f"{what}: {exc}")

    def done(self, day: Day) -> None:
        day.notes.extend(f"FAILED (later): {f}" for f in self.failed)
        print("\n".join(day.notes))
        assert not self.failed, "\n".join(self.failed)


def settings(day: Day) -> None:
    """The stand-in as the model (what ``cline auth`` writes), no telemetry, no update, the
    tools approved (Cline's default), the first-run notices shown."""
    provider = {
        "provider": "openai-compatible",
        "apiKey": "sk-live-fake",
        "model": MODEL,
        "baseUrl": f"{day.model.url}/v1",
    }
    providers = {
        "version": 1,
        "lastUsedProvider": "openai-compatible",
        "modes": {},
        "providers": {
            "openai-compatible": {
                "settings": provider,
                "updatedAt": "2026-01-01T00:00:00.000Z",
                "tokenSource": "manual",
            }
        },
    }
    day.write(".cline/data/settings/providers.json", json.dumps(providers, indent=2))
    day.write(
        ".cline/data/settings/global-settings.json",
        json.dumps({"autoUpdateEnabled": False, "telemetryOptOut": True, "toolAutoApprove": True}),
    )
    notices = {"cline-cli-cline-pass-intro": True, "cline-cli-desktop-launch": True}
    day.write(".cline/data/settings/cli-notices.json", json.dumps({"shown": notices}))


def env(day: Day, path: str) -> dict[str, str]:
    found = day.base_env(path)
    found.update(
        CLINE_NO_AUTO_UPDATE="1",
        CLINE_DISABLE_CLINE_PASS_NOTICE="1",
        # No switch turns off the model catalogue and the feature flags: a dead proxy.
        HTTPS_PROXY="http://127.0.0.1:9",
        HTTP_PROXY="http://127.0.0.1:9",
        NO_PROXY="127.0.0.1,localhost",
    )
    return found


def run_cline(day: Day, install: Install, environment: dict[str, str], *args: str) -> str:
    """``cline <args>`` as the live user in the project (a command, not the TUI)."""
    done = day.user.run([*install.command(PLATFORM), *args], environment, day.project, 120)
    assert done.returncode == 0, f"cline {' '.join(args)}: {done.stdout}{done.stderr}"
    return done.stdout


def log_lines(day: Day, text: str) -> int:
    """How many lines of Cline's own log say ``text``."""
    try:
        return (day.home / CLINE_LOG).read_text(errors="replace").count(text)
    except OSError:
        return 0


def log_tail(day: Day, name: str, lines: int = 15) -> str:
    """The end of one of Cline's logs (what a failure shows)."""
    try:
        text = (day.home / CLINE_LOG.parent / name).read_text(errors="replace")
    except OSError:
        return f"({name}: none)"
    return f"-- {name}:\n" + "\n".join(line[:300] for line in text.splitlines()[-lines:])


def first_event(day: Day, known: set[str], what: str) -> dict[str, Any]:
    """The first event of a new top-level session: ``active``, named after the project."""
    first: dict[str, Any] = day.wait(
        lambda events: next(
            (e for e in events if e["session_id"] not in known and e.get("platform") == PLATFORM),
            None,
        ),
        f"{what}: the first event",
        60,
    )
    assert first["state"] == "active", first
    assert first.get("parent_id") is None, first
    assert first.get("session_name") == "shop-api", first
    return first


def start(
    day: Day, argv: list[str], environment: dict[str, str], what: str, later: Later
) -> tuple[int, str]:
    """Cline in the project, once it has chosen its runtime host: its pid and session. The
    identity on the first event is checked later (:func:`assert_identified`). Waiting for
    its first prompt, the TUI is not working: idle, and no more active (its start-up, 10-20
    s of CPU on a busy machine, is no work)."""
    known = set(day.sessions())
    routed = log_lines(day, ROUTED)
    began = time.monotonic()
    pid = day.start(argv, environment)
    sid: str = first_event(day, known, what)["session_id"]
    day.notes.append(f"{what}: start -> first event: {time.monotonic() - began:.2f} s")
    day.terminal.wait_for(READY, 120)
    day.wait(lambda _: log_lines(day, ROUTED) > routed, f"{what}: the runtime host", 60)
    day.notes.append(f"{what}: start -> ready: {time.monotonic() - began:.2f} s")
    with later.check(f"{what}: idle before the first prompt"):
        wait_state(day, sid, "idle", timeout=IDLE_AFTER + 4)
        seen = states(day, sid)
        assert "active" not in seen[seen.index("idle") :], f"states: {seen}"
    return pid, sid


def assert_identified(day: Day, sessions: dict[str, str], later: Later) -> None:
    """Every session's identity is Cline's (waited for while its process lives: a machine
    busy hashing other agents' binaries takes tens of seconds), and on its first event
    (later: quintd holds an announcement 2 s for it; then the identity follows as an
    update)."""
    for sid, what in sessions.items():

        def identified(e: dict[str, Any], sid: str = sid) -> bool:
            return e["session_id"] == sid and e.get("signing_id") is not None

        known = day.wait_session(identified, f"{what}: the identity", 90)
        assert known["signing_id"] == IDENTITY, known
        first = day.sessions()[sid][0]
        with later.check(f"{what}: the identity on the first event"):
            assert first.get("signing_id") == IDENTITY, first


def input_box(screen: str) -> str:
    """The prompt's text: what is between the last two rules of the screen."""
    lines = screen.splitlines()
    rules = [i for i, line in enumerate(lines) if RULE.match(line)]
    if len(rules) < 2:
        return ""
    return "\n".join(lines[rules[-2] + 1 : rules[-1]])


def prompt(day: Day, text: str, tag: str, timeout: float = 60) -> None:
    """Types a prompt whose turn the stand-in holds on ``tag``, and waits for that request.
    An Enter that Cline did not take (the box still holds the text, no turn runs) is
    pressed again, and noted."""
    typed = time.monotonic()
    day.terminal.type(text)
    deadline = typed + timeout
    while not day.model.holding(tag):
        screen = day.terminal.screen()
        if (
            time.monotonic() - typed > 3
            and text[-16:] in input_box(screen)
            and BUSY not in screen
            and not day.model.holding(tag)
        ):
            day.notes.append(f"Enter lost for {text!r}: pressed again")
            day.terminal.keys("Enter")
            typed = time.monotonic()
        if time.monotonic() > deadline:
            raise AssertionError(
                f"the model was never asked ({tag}):\n{screen}\n== Cline's logs ==\n"
                + "\n".join(log_tail(day, name) for name in ("cline.log", "hub-daemon.log"))
            )
        time.sleep(0.1)  # polling interval of a deadline wait
    day.notes.append(f"Enter -> model request {tag}: {time.monotonic() - typed:.2f} s")


def command(day: Day, text: str, shown: str) -> None:
    """A slash command, once the TUI shows it was done (``shown``)."""
    day.terminal.type(text)
    day.terminal.wait_for(shown, 30)


def conversation_ids(day: Day) -> set[str]:
    """Cline's own ids of the top-level conversations (a directory each)."""
    try:
        return {p.name for p in (day.home / SESSIONS).iterdir() if p.is_dir()}
    except OSError:
        return set()


def hub_pid(day: Day) -> int | None:
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        pid = json.loads((day.home / HUB_RECORD).read_text())["pid"]
        return int(pid)
    return None


def stop_hub(day: Day) -> None:
    """The hub daemon (it outlives every TUI) is stopped: SIGTERM to the pid of its
    discovery record, on which it removes the record and exits."""
    pid = hub_pid(day)
    assert pid is not None, "no hub discovery record"
    watch = ExitWatch(pid).start()
    os.kill(pid, signal.SIGTERM)
    watch.wait(30)


def quiesced(day: Day) -> None:
    """quintd has looked at the machine twice since now and sent all it had."""

    def status(part: str) -> dict[str, Any]:
        found: dict[str, Any] = (day.daemon.status() or {}).get(part) or {}
        return found

    passes = status("scan").get("passes", 0)
    wait_until(lambda: status("scan").get("passes", 0) >= passes + 2, 30, "two scans of quintd")
    wait_until(lambda: status("queue").get("depth") == 0, 30, "quintd's queue to drain")


def states(day: Day, sid: str, since: int = 0) -> list[str]:
    return [e["state"] for e in day.sessions().get(sid, [])[since:]]


def is_model(e: dict[str, Any], sid: str) -> bool:
    return e["session_id"] == sid and e.get("model") == MODEL


@pytest.mark.timeout(300)  # a busy machine: Cline takes 20 s to its prompt, and starts twice
def test_cline_day_nvm_prefix(live_user: LiveUser) -> None:
    """Start (local mode), a held turn with ``cline --version`` beside it, the rename
    (``cline history update``), a sub-agent, /clear and a second conversation, /quit; then
    a second TUI served by the hub the first one left, /fork, Ctrl-C; the hub stopped."""
    install = installed("prefix")
    later = Later()
    with live_day(PLATFORM, live_user, ClineBrain(), "nvm_prefix", STORY) as day:
        day.make_project()
        settings(day)
        environment = env(day, install.path())
        pid, s1 = start(day, install.command(PLATFORM), environment, "local", later)
        assert log_lines(day, LOCAL_ROUTE) == 1, "the first cline of a home runs locally"
        day.snapshot("01-started", "the TUI at its prompt (local mode), no conversation yet")
        prompt(day, "Fix auth middleware token expiry HOLD-a", "a")

        # The same user's `cline --version` meanwhile (for longer than two of quintd's
        # scans): no session.
        began, runs = time.monotonic(), 0
        while runs == 0 or time.monotonic() - began < 2.5:
            out = run_cline(day, install, environment, "--version")
            assert VERSION in out, out
            runs += 1
        day.notes.append(f"cline --version: {runs} runs in {time.monotonic() - began:.1f} s")
        assert_stays_busy(day, s1)
        day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
        day.model.release("a")
        answered = day.wait_session(lambda e: is_model(e, s1), "the model, once it answered")
        assert answered["state"] == "active", answered
        wait_state(day, s1, "idle")
        assert answered.get("session_name") == "shop-api", "the prompt is never a name"
        assert_identified(day, {s1: "local"}, later)
        day.snapshot("03-idle", "the answer written: idle, the model known")

        # The rename, from another shell: `cline history update` (a command, no session).
        (native_id,) = day.wait(lambda _: conversation_ids(day), "the conversation's id")
        count = len(day.sessions()[s1])
        began = time.monotonic()
        run_cline(
            day, install, environment, "history", "update",
            "--session-id", native_id, "--title", "Token expiry fix",
        )  # fmt: skip
        day.notes.append(f"cline history update: {time.monotonic() - began:.1f} s")
        day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("session_name") == "Token expiry fix",
            "the rename",
        )
        wait_state(day, s1, "idle")
        with later.check("the rename is no work"):
            assert "active" not in states(day, s1, count), f"states: {states(day, s1, count)}"
        day.snapshot("04-renamed", "cline history update --title Token expiry fix")

        # A sub-agent (spawn_agent): a child session while it works, ended when done.
        day.terminal.type("Survey the codebase DELEGATE")
        day.wait(lambda _: day.model.holding("sub"), "the sub-agent's model request", 60)
        sub = day.wait_session(
            lambda e: e.get("parent_id") == s1 and e["state"] == "active",
            "the sub-agent's session",
        )
        child = sub["session_id"]
        assert sub["platform"] == PLATFORM, sub
        assert sub.get("signing_id") == IDENTITY, sub
        assert (status_session(day, s1) or {}).get("state") == "active", "the parent works"
        day.snapshot("05-subagent-busy", "a sub-agent (spawn_agent), its turn held")
        day.model.release("sub")
        day.wait_session(
            lambda e: e["session_id"] == child and e["state"] == "ended", "the sub-agent's end"
        )
        wait_state(day, s1, "idle")
        day.snapshot("06-subagent-done", "the sub-agent done, its parent idle")

        # /clear: Cline marks the conversation completed at once; the next prompt starts
        # the new one.
        command(day, "/clear", READY)
        with later.check("/clear ends the conversation before the next prompt"):
            day.wait_session(lambda e: e["session_id"] == s1 and e["state"] == "ended", "/clear", 8)
        prompt(day, "Add rate limiting HOLD-b", "b")
        day.wait_session(lambda e: e["session_id"] == s1 and e["state"] == "ended", "/clear")
        s2 = day.wait_session(
            lambda e: (
                e["session_id"] not in (s1, child)
                and e.get("parent_id") is None
                and e["state"] == "active"
            ),
            "the new conversation",
        )["session_id"]
        day.snapshot("07-second-busy", "/clear and a prompt, held: the first ended, a new one")
        day.model.release("b")
        second = day.wait_session(lambda e: is_model(e, s2), "the second model")
        assert second.get("signing_id") == IDENTITY, second
        wait_state(day, s2, "idle")
        day.snapshot("08-second-idle", "the second conversation answered")

        exited = quit_and_time(day, pid, "/quit")
        assert_ended_on_exit(day, exited, [s2])
        assert hub_pid(day) is not None, "the first cline left its hub"
        day.snapshot("09-quit", "/quit: the TUI exited, the hub it started runs on")

        # A second TUI: the hub runs its conversation (the row names the hub's pid).
        day.terminal.close()
        pid, s3 = start(day, install.command(PLATFORM), environment, "hub", later)
        assert log_lines(day, HUB_ROUTE) == 1, "the second cline uses the hub"
        day.snapshot("10-hub-started", "a second TUI, served by the hub")
        prompt(day, "Check the order totals HOLD-c", "c")
        with later.check("hub mode: busy while the model works"):
            assert_stays_busy(day, s3)
        day.snapshot("11-hub-busy", "a prompt in hub mode, its answer held")
        day.model.release("c")
        day.wait_session(lambda e: is_model(e, s3), "hub mode: the model")
        wait_state(day, s3, "idle")
        assert_identified(day, {s3: "hub"}, later)
        day.snapshot("12-hub-idle", "answered: idle, the model known")

        # /fork: the TUI goes on in a copy of the conversation, which Cline titles
        # "<first prompt> (fork)": prompt text, never a name.
        known = set(day.sessions())
        command(day, "/fork", r"Create a fork of the current conversation\?")
        day.terminal.keys("y")  # its confirmation (a question each time, no setting)
        s4 = day.wait_session(
            lambda e: e["session_id"] not in known and e.get("parent_id") is None,
            "the fork's session",
        )["session_id"]
        wait_state(day, s4, "idle")
        with later.check("/fork: no prompt text as a name"):
            names = {e.get("session_name") for e in day.sessions()[s4]}
            assert names == {"shop-api"}, f"the fork's names: {names}"
        day.snapshot("13-forked", "/fork: the TUI goes on in a copy of the conversation")
        exited = quit_and_time(day, pid, "keys:C-c")
        assert_ended_on_exit(day, exited, [s3, s4])
        day.snapshot("14-hub-tui-quit", "Ctrl-C: the second TUI exited")

        stop_hub(day)
        quiesced(day)
        assert set(day.sessions()) == {s1, child, s2, s3, s4}, "no other session"
        day.snapshot("15-hub-stopped", "the hub stopped")
        assert_identified(day, {s2: "after /clear"}, later)
        later.done(day)


@functools.cache
def npx_unpacked() -> None:
    """``npx -y cline@<version> --version`` as the live user once, before any day: npx
    unpacks the package into ``~/.npm/_npx`` (from npm's cache when the installs left the
    tarballs there, else from the registry), as a user's first ``npx`` leaves it. The days'
    npx then runs it without the network."""
    user = LiveUser.get()
    package = installed("project").packages[PLATFORM]
    environment = npm_env(user)
    environment.update(CLINE_NO_AUTO_UPDATE="1", npm_config_prefer_offline="true")
    argv = ["npx", "-y", f"{package.name}@{package.version}", "--version"]
    done = user.run(argv, environment, cwd=user.account_home, timeout=600)
    assert done.returncode == 0, f"{' '.join(argv)}: {done.stdout}{done.stderr}"
    assert VERSION in done.stdout, done.stdout


def npx_command(day: Day, install: Install) -> tuple[list[str], dict[str, str]]:
    """``npx -y cline@<version>`` as the live user (the machine's Node and npm), with its
    own npm cache (where npx unpacked the package, and quintd finds the tarball): the
    unpacked package is used without asking the registry."""
    npx_unpacked()
    package = install.packages[PLATFORM]
    found = env(day, SYSTEM_PATH)
    found.update(
        npm_config_cache=str(day.user.account_home / ".npm"),
        npm_config_prefer_offline="true",
        npm_config_update_notifier="false",
        npm_config_fund="false",
        npm_config_audit="false",
        npm_config_loglevel="warn",
    )
    return ["npx", "-y", f"{package.name}@{package.version}"], found


def short_day(
    day: Day,
    argv: list[str],
    environment: dict[str, str],
    what: str,
    quit_keys: str,
    later: Later,
) -> str:
    """Start -> active with the identity, a prompt -> the model, quit -> ended."""
    day.record_layout(what, SHORT_STORY)
    pid, sid = start(day, argv, environment, what, later)
    day.snapshot("01-started", "the TUI at its prompt, no conversation yet")
    prompt(day, f"Check the {what} layout HOLD-{what}", what, timeout=90)
    if day.recording:
        wait_state(day, sid, "active")
        day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
    day.model.release(what)
    day.wait_session(lambda e: is_model(e, sid), f"{what}: the model")
    wait_state(day, sid, "idle")
    assert_identified(day, {sid: what}, later)
    day.snapshot("03-idle", "the answer written: idle, the model known")
    exited = quit_and_time(day, pid, quit_keys)
    assert_ended_on_exit(day, exited, [sid])
    day.snapshot("04-quit", "the TUI exited")
    day.terminal.close()
    return sid


@pytest.mark.timeout(300)  # the first npx unpacks the package (once per machine and user)
def test_cline_other_layouts(live_user: LiveUser) -> None:
    """npm's project shim (the platform binary itself, local mode: it starts the hub), then
    npx (wrapper under ``npm exec``, served by that hub): start -> active with the identity,
    a prompt -> the model, quit -> ended; the hub stopped; no other session."""
    project = installed("project")
    npx_unpacked()
    later = Later()
    with live_day(PLATFORM, live_user, ClineBrain(), "project", SHORT_STORY) as day:
        day.make_project()
        settings(day)
        argv, environment = project.command(PLATFORM), env(day, project.path())
        s1 = short_day(day, argv, environment, "project", "/quit", later)
        assert log_lines(day, LOCAL_ROUTE) == 1
        argv, environment = npx_command(day, project)
        s2 = short_day(day, argv, environment, "npx", "keys:C-c", later)
        assert log_lines(day, HUB_ROUTE) == 1, "npx's cline uses the hub"
        stop_hub(day)
        quiesced(day)
        assert set(day.sessions()) == {s1, s2}, "no other session"
        later.done(day)
