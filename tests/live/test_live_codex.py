"""Codex CLI, the real CLI from npm, through a day under a real quintd.

Codex 0.171.0: ``node bin/codex.js`` (npm's entry) becomes the native TUI of the platform
package ``@openai/codex-linux-x64`` (``execve`` on Node 22: one process; a child on older
Node), whose identity is ``npm:@openai/codex`` in every layout. In a fresh home the TUI
first copies that binary into ``~/.codex/packages`` (~400 MB, seconds) and starts an
app-server daemon (``codex app-server --listen ... --managed-daemon``) and its updater
(``app-server daemon pid-update-loop``): both outlive the TUI, the daemon runs the turns
(and the tools), and neither is a session. The model API is OpenAI's Responses API
(``api_responses``): its WebSocket first, HTTP as the fallback.

What a day sees: the TUI's conversation (its first thread is created once the daemon runs:
the footer names the model then); the generated title (a request of its own,
``thread_source: thread_title``), then ``/rename``; a tool run by the daemon; a sub-agent
(``collaboration.spawn_agent``, then ``wait_agent``): a thread of the daemon's with its
parent named in its rollout, kept loaded (``idle``, it can be given a follow-up) until its
parent's conversation ends; ``/new`` (a worktree choice first: the current one) ends the
conversation and its sub-agent, the new thread is the TUI's conversation; ``/quit``.

Layouts: the nvm-style prefix (the whole day); npm's project ``node_modules/.bin/codex``,
the platform package's native binary run directly, the prefix's ``codex`` under the
machine's Node 20 (wrapper and child), and ``npx -y @openai/codex@<version>`` (short days
in one home: the daemon package is copied once).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import api_responses  # noqa: F401  (the stand-in's Responses API and its WebSocket)
from api_responses import answered_call, turn_metadata
from day import Day, live_day, wait_until
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
from standin import Brain, Reply, Request, title_of

PLATFORM = "codex"
MODEL = "gpt-6.2-sol"  # Codex's default model: the stand-in answers whatever is asked
SIGNING_ID = "npm:@openai/codex"  # every layout: the platform package's binary is its owner's
# The footer names the model once the TUI's first thread exists (in a fresh home, after the
# daemon package is copied: a /quit typed before that waits for it).
READY = r"GPT-6\.2-Sol default"
# The platform package (an npm alias: its package.json names ``@openai/codex``), nested in
# the package that installed it in a global prefix (hoisted beside it in a project and in
# npx's cache), and its binary.
PLATFORM_PACKAGE = Path("node_modules/@openai/codex-linux-x64")
NATIVE = Path("vendor/x86_64-unknown-linux-musl/bin/codex")


class CodexBrain(Brain):
    """Codex's own requests: the title (``{"title"}`` in a JSON schema), the code-mode
    shell (``exec``: JavaScript calling ``tools.exec_command``), the sub-agent
    (``spawn_agent``, then ``wait_agent`` until it is done)."""

    def auxiliary(self, req: Request) -> Reply | None:
        if turn_metadata(req.body).get("thread_source") == "thread_title":
            prompt = req.user_text.rsplit("User prompt:", 1)[-1]
            return Reply(json.dumps({"title": title_of(prompt)[:36]}))
        return None

    def shell_call(self, req: Request, command: str) -> tuple[str, dict[str, Any]] | None:
        if "exec" not in req.tools:
            return None
        code = f"const r = await tools.exec_command({json.dumps({'cmd': command})});\n"
        return "exec", {"input": code + "text(r.output);\n"}

    def delegate_call(self, req: Request) -> tuple[str, dict[str, Any]] | None:
        if "spawn_agent" not in req.tools:
            return None
        task = {"task_name": "worker_1", "message": "List the project files HOLD-sub"}
        return "spawn_agent", {**task, "fork_turns": "none"}

    def after_tool(self, req: Request) -> Reply:
        if answered_call(req) == "spawn_agent":
            return Reply("", ("wait_agent", {"timeout_ms": 60000}))
        return Reply("Done.")


def configure(day: Day) -> None:
    """The stand-in as the API, an API key (what ``codex login --with-api-key`` writes), the
    project trusted (no trust dialog), no update check, analytics, plugins or apps."""
    day.write(
        ".codex/config.toml",
        "\n".join(
            [
                f'openai_base_url = "{day.model.url}/v1"',
                "check_for_update_on_startup = false",
                "[analytics]",
                "enabled = false",
                "[features]",
                "plugins = false",
                "remote_plugin = false",
                "apps = false",
                f'[projects."{day.project}"]',
                'trust_level = "trusted"',
                "",
            ]
        ),
    )
    day.write(
        ".codex/auth.json",
        json.dumps({"auth_mode": "apikey", "OPENAI_API_KEY": "sk-live-fake"}),
    )


def first_event(day: Day, layout: str, known: set[str]) -> dict[str, Any]:
    """The TUI's first event: ``active``, no parent, named after the project. Its identity is
    checked at the end of the day (:func:`assert_identified`), so that the rest of the day
    (and the other sessions' identities) is still checked when it is missing."""
    first: dict[str, Any] = day.wait(
        lambda events: next(
            (e for e in events if e["session_id"] not in known and e.get("platform") == PLATFORM),
            None,
        ),
        f"{layout}: the first event",
        60,
    )
    assert first["state"] == "active" and first.get("parent_id") is None, first
    assert first.get("session_name") == "shop-api", first
    return first


def assert_identified(day: Day, sessions: dict[str, str]) -> None:
    """Each session's identity is on its first event (the announcement waits for it):
    ``sessions`` maps a session to what it is (its layout)."""
    problems = []
    for sid, what in sessions.items():
        events = day.sessions()[sid]
        first = events[0]
        if first.get("signing_id") == SIGNING_ID:
            continue
        later = next((e for e in events if e.get("signing_id")), {"signing_id": None})
        problems.append(
            f"{what} ({sid}): the first event has signing_id {first.get('signing_id')!r}; "
            f"later {later['signing_id']!r} at {later.get('timestamp')} (first at "
            f"{first['timestamp']})"
        )
    assert not problems, "identity not on the first event:\n" + "\n".join(problems)


def tool_output(req: Request) -> str:
    """The output of the shell call the request answers (code mode's ``exec``)."""
    if not req.after_tool or answered_call(req) != "exec":
        return ""
    outputs = [i for i in req.body["input"] if i.get("type") == "custom_tool_call_output"]
    return json.dumps(outputs[-1].get("output")) if outputs else ""


def is_model(e: dict[str, Any], sid: str) -> bool:
    return e["session_id"] == sid and e.get("model") == MODEL


def quiesced(day: Day) -> None:
    """quintd has looked at the machine twice since now, and sent all it had: a session it
    would give a process of that time has arrived by then."""

    def status(part: str) -> dict[str, Any]:
        found: dict[str, Any] = (day.daemon.status() or {}).get(part) or {}
        return found

    start = status("scan").get("passes", 0)
    wait_until(lambda: status("scan").get("passes", 0) >= start + 2, 30, "two scans of quintd")
    wait_until(lambda: status("queue").get("depth") == 0, 30, "quintd's queue to drain")


def run_codex(day: Day, install: Install, *args: str) -> None:
    """``codex <args>`` as the live user in the day's home (a command, not the TUI)."""
    env = day.base_env(install.path())
    done = day.user.run([*install.command(PLATFORM), *args], env, day.project, timeout=60)
    assert done.returncode == 0, f"codex {' '.join(args)}: {done.stdout}{done.stderr}"


STORY = """Start; a prompt held by the stand-in (busy), answered (idle, the model, Codex's
own title); /rename; codex --version (2.5 s of it); a prompt whose held answer calls the
shell tool (run by Codex's app-server daemon), then done; a sub-agent (spawn_agent) held,
then done (idle, kept); /new (the conversation and its sub-agent end, a new one starts); a
prompt in the new conversation; /quit; `codex app-server daemon stop`."""
SHORT_STORY = """One of several layouts run one after the other in one home (the app-server
daemon started by the first TUI serves the others; the conversations of the layouts before
are in the home): start; a prompt held by the stand-in (busy), answered (idle, the model);
/quit."""


@contextlib.contextmanager
def codex_day(user: LiveUser, layout: str = "nvm_prefix", story: str = "") -> Iterator[Day]:
    """A live day whose home is removed afterwards: it holds ~400 MB (the daemon package
    Codex copies into it)."""
    home: Path | None = None
    try:
        with live_day(PLATFORM, user, CodexBrain(), layout, story) as day:
            home = day.home
            yield day
    finally:
        if home is not None:
            shutil.rmtree(home.parent, ignore_errors=True)


def test_codex_day_nvm_prefix(live_user: LiveUser) -> None:
    """Start, a held turn, the title and /rename, a tool, a sub-agent, /new, a second
    conversation, /quit; ``--version`` and the daemon are no sessions."""
    install = installed("prefix")
    with codex_day(live_user, "nvm_prefix", STORY) as day:
        day.make_project()
        configure(day)
        started = time.monotonic()
        pid = day.start(install.command(PLATFORM), day.base_env(install.path()))
        first = first_event(day, "prefix", set())
        s1 = first["session_id"]
        day.terminal.wait_for(READY, 90)
        day.notes.append(f"start -> the footer (daemon up): {time.monotonic() - started:.1f} s")
        day.snapshot("01-started", "the TUI at its prompt (its app-server daemon up)")

        # A turn the model holds: busy past idle_after; the model; the generated title.
        day.terminal.submit(
            "Fix auth middleware token expiry HOLD-a", lambda: day.model.holding("a")
        )
        assert_stays_busy(day, s1)
        day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
        day.model.release("a")
        assert day.wait_session(lambda e: is_model(e, s1), "the model")["state"] == "active"
        day.wait_session(
            lambda e: (
                e["session_id"] == s1
                and e.get("session_name") == "Fix auth middleware token expiry"
            ),
            "Codex's own title",
        )
        wait_state(day, s1, "idle")
        day.snapshot("03-idle", "the answer written: idle, the model and the title known")

        day.terminal.type("/rename Token expiry fix")
        day.wait_session(
            lambda e: e["session_id"] == s1 and e.get("session_name") == "Token expiry fix",
            "the /rename",
        )
        day.snapshot("04-renamed", "/rename Token expiry fix")

        # --version while the TUI runs: long enough that quintd's scans see it.
        deadline, runs = time.monotonic() + 2.5, 0
        while time.monotonic() < deadline:
            run_codex(day, install, "--version")
            runs += 1
        day.notes.append(f"codex --version: {runs} runs in 2.5 s")

        # A tool, run by the daemon (its process is no session of its own).
        day.terminal.submit(
            "Run the checks HOLD-t BASH:echo checks-ok", lambda: day.model.holding("t")
        )
        wait_state(day, s1, "active")
        day.snapshot("05-tool-busy", "a prompt whose answer (a shell call) is held")
        day.model.release("t")
        day.wait(
            lambda _: any("checks-ok" in tool_output(r) for r in day.model.requests),
            "the tool's output to reach the model",
            60,
        )
        wait_state(day, s1, "idle", timeout=60)
        day.snapshot("06-tool-done", "the tool ran (in the daemon), the turn over: idle")

        # A sub-agent: a child session while it works; kept (idle) once done.
        day.terminal.type("Survey the codebase DELEGATE")
        sub = day.wait_session(
            lambda e: e.get("parent_id") == s1 and e["state"] == "active",
            "the sub-agent's session",
            60,
        )
        child = sub["session_id"]
        assert sub["platform"] == PLATFORM and sub.get("session_name"), sub  # its nickname
        day.wait(lambda _: day.model.holding("sub"), "the sub-agent's turn", 60)
        assert (status_session(day, s1) or {}).get("state") == "active"
        day.snapshot("07-subagent-busy", "a sub-agent (spawn_agent), its turn held")
        day.model.release("sub")
        day.wait(
            lambda _: any(answered_call(r) == "wait_agent" for r in day.model.requests),
            "the parent to hear from its sub-agent",
            60,
        )
        wait_state(day, child, "idle", timeout=60)
        wait_state(day, s1, "idle", timeout=60)
        day.snapshot("08-subagent-done", "the sub-agent done (kept, idle), its parent idle")

        # /new: the conversation and its sub-agent end, a new one is the TUI's.
        day.terminal.type("/new")
        day.terminal.wait_for(r"Use current Git worktree", 30)
        day.terminal.keys("Enter")
        day.wait_session(lambda e: e["session_id"] == s1 and e["state"] == "ended", "/new")
        day.wait_session(
            lambda e: e["session_id"] == child and e["state"] == "ended",
            "the sub-agent's end with its parent",
        )
        s2 = day.wait_session(
            lambda e: (
                e["session_id"] not in (s1, child)
                and e["state"] == "active"
                and e.get("parent_id") is None
            ),
            "the new conversation",
        )["session_id"]
        day.snapshot("09-after-new", "/new: the conversation and its sub-agent ended, a new one")

        day.terminal.submit("Add rate limiting HOLD-b", lambda: day.model.holding("b"))
        day.model.release("b")
        day.wait_session(lambda e: is_model(e, s2), "the second model")
        if day.recording:
            wait_state(day, s2, "idle")
        day.snapshot("10-second-idle", "a prompt in the new conversation, answered")

        exited = quit_and_time(day, pid, "/quit")
        assert_ended_on_exit(day, exited, [s2])
        day.snapshot("11-quit", "/quit: the TUI exited (its daemon runs on)")

        # The daemon outlives the TUI: stopped the way a user stops it.
        run_codex(day, install, "app-server", "daemon", "stop")
        quiesced(day)
        assert set(day.sessions()) == {s1, child, s2}, "no other session"
        day.snapshot("12-daemon-stopped", "codex app-server daemon stop")
        assert_identified(day, {s1: "conversation", child: "sub-agent", s2: "after /new"})


def npx_command(user: LiveUser, install: Install) -> tuple[list[str], dict[str, str]]:
    """``npx -y @openai/codex@<version>`` as the live user, with its own npm cache (where
    npx unpacks the package, and quintd finds the tarball); a cached package is used
    without asking the registry."""
    package = install.packages[PLATFORM]
    env = npm_env(user, install.path())
    env["npm_config_cache"] = str(user.account_home / ".npm")
    env["npm_config_prefer_offline"] = "true"
    return ["npx", "-y", f"{package.name}@{package.version}"], env


def short_day(day: Day, argv: list[str], env: dict[str, str], layout: str) -> str:
    """Start -> active (its identity checked at the end), a prompt -> the model, /quit ->
    ended."""
    day.record_layout(layout, SHORT_STORY)
    known = set(day.sessions())
    pid = day.start(argv, env)
    sid: str = first_event(day, layout, known)["session_id"]
    day.terminal.wait_for(READY, 120)
    if day.recording:  # the turn held, so that it is recorded busy
        day.snapshot("01-started", "the TUI at its prompt")
        day.terminal.submit(
            f"Check the {layout} layout HOLD-{layout}", lambda: day.model.holding(layout)
        )
        wait_state(day, sid, "active")
        day.snapshot("02-busy", "a prompt, its answer held by the stand-in")
        day.model.release(layout)
    else:
        day.terminal.type(f"Check the {layout} layout")
    day.wait_session(lambda e: is_model(e, sid), f"{layout}: the model")
    wait_state(day, sid, "idle")
    day.snapshot("03-idle", "the answer written: idle, the model known")
    exited = quit_and_time(day, pid, "/quit")
    assert_ended_on_exit(day, exited, [sid])
    day.snapshot("04-quit", "/quit: the TUI exited")
    day.terminal.close()
    return sid


def test_codex_other_layouts(live_user: LiveUser) -> None:
    """npm's project shim; the native binary run directly (the prefix's); the prefix's
    ``codex`` under the machine's Node 20 (``codex.js`` stays, the TUI is its child); npx:
    one day, one home (the daemon started by the first TUI serves the others)."""
    project, prefix = installed("project"), installed("prefix")
    with codex_day(live_user) as day:
        day.make_project()
        configure(day)
        env = day.base_env(project.path())
        native = prefix.package_dir(PLATFORM) / PLATFORM_PACKAGE / NATIVE
        npx, npx_env = npx_command(live_user, project)
        npx_env.update({k: v for k, v in env.items() if k != "PATH"})
        node20 = {**env, "PATH": SYSTEM_PATH}  # the machine's Node 20: no execve
        sessions = {
            short_day(day, project.command(PLATFORM), env, "project"): "project",
            short_day(day, [str(native)], env, "native"): "native",
            short_day(day, prefix.command(PLATFORM), node20, "node20"): "node20",
            short_day(day, npx, npx_env, "npx"): "npx",
        }
        run_codex(day, project, "app-server", "daemon", "stop")
        quiesced(day)
        assert set(day.sessions()) == set(sessions), "no other session"
        assert_identified(day, sessions)
