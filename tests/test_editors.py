"""The VS Code-family editors' readers: Cursor's composers and VS Code's chat, each
conversation a session of the editor's main process. No editor runs here: the files are
written as each editor's storage code writes them (tests/fixtures/editors, its README),
replayed step by step with recorded processes (tests/replay.py), and followed live with a
real process standing for the editor (the real scanner, watchdog, readers and tracker).
Unverified against a running editor."""

from __future__ import annotations

import filecmp
import json
import os
import signal
from pathlib import Path
from typing import Any

import pytest
from conftest import Agents, wait_until
from editor_fixture import FIXTURES, GEN, lay_out, regenerate, steps
from replay import MACHINE, Rec, Replay, agents, story

from quintd.identity import native_session_id
from quintd.platforms import BUILTIN_PLATFORMS, match_process
from quintd.scanner import Scanner
from quintd.sources import cursor_composers
from quintd.sources.editors import CURSOR_SPEC, VSCODE_SPEC, WINDSURF_SPEC
from quintd.sources.manager import SourceManager
from quintd.tracker import SessionTracker

T0 = GEN.T0
PROJECT = "/home/dev/src/shop"
CODE = "/usr/share/code/code"
CURSOR = "/usr/share/cursor/cursor"


def _electron(pid: int, exe: str, start: float = T0) -> list[Rec]:
    """An Electron editor as Linux shows it: the main process, its zygote and renderer,
    and the extension host (a utility process), all one executable."""
    comm = os.path.basename(exe)
    return [
        Rec(pid, 1, comm, exe, [exe], PROJECT, start),
        Rec(pid + 1, pid, comm, exe, [exe, "--type=zygote", "--no-zygote-sandbox"], None, start),
        Rec(pid + 2, pid + 1, comm, exe, [exe, "--type=renderer", "--lang=en-US"], None, start),
        Rec(
            pid + 3,
            pid,
            comm,
            exe,
            [exe, "--type=utility", "--utility-sub-type=node.mojom.NodeService"],
            None,
            start,
        ),
    ]


def _replay(tmp_path: Path, editor: str, idle_after: float = 20.0) -> Replay:
    spec = {"vscode-copilot": VSCODE_SPEC, "cursor": CURSOR_SPEC}[editor]
    return Replay(tmp_path / "home", T0, idle_after=idle_after, readers=(spec,))


def _play(
    tmp_path: Path,
    editor: str,
    exe: str,
    restart_after: str | None = None,
    idle_steps: tuple[str, ...] = (),
) -> Replay:
    replay = _replay(tmp_path, editor)
    procs = _electron(4100, exe)
    for name, at in steps(editor):
        lay_out(editor, name, replay.home)
        if name.endswith("editor-exit"):
            replay.step([], at)
            continue
        replay.step(procs, at)
        if name in idle_steps:
            replay.advance(30.0)  # quiet, past idle_after
        if name == restart_after:
            replay.restart()
    return replay


# -- the stories, replayed ---------------------------------------------------------------


@pytest.mark.parametrize("restart_after", [None, "01-generating", "03-second-conversation"])
def test_vscode_chat_story_replayed(tmp_path: Path, restart_after: str | None) -> None:
    replay = _play(
        tmp_path,
        "vscode-copilot",
        CODE,
        restart_after,
        idle_steps=("00-start", "02-idle", "04-needs-input"),
    )
    assert story(replay.events) == [
        ("s1", "active", "shop", None, None),  # the editor, before any conversation
        ("s1", "idle", "shop", None, None),
        # its first conversation (written at the storage's flush, while it answers) takes
        # the editor's session over; the old workspace's history is not reported
        ("s1", "active", "shop", GEN.MODEL, None),
        ("s1", "idle", "shop", GEN.MODEL, None),  # answered; its generated title not sent
        ("s2", "active", "shop", "copilot/claude-sonnet-4", None),  # a second conversation
        ("s2", "idle", "shop", "copilot/claude-sonnet-4", None),  # waits for a confirmation
        ("s2", "active", "shop", "copilot/claude-sonnet-4", None),  # confirmed, it went on
        ("s1", "ended", "shop", GEN.MODEL, None),  # deleted
        ("s2", "ended", "shop", "copilot/claude-sonnet-4", None),  # the editor exits
    ]
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    assert ids[1] == _native_id("vscode-copilot", GEN.SECOND)


@pytest.mark.parametrize("restart_after", [None, "03-sub-conversation"])
def test_cursor_composer_story_replayed(tmp_path: Path, restart_after: str | None) -> None:
    replay = _play(
        tmp_path,
        "cursor",
        CURSOR,
        restart_after,
        idle_steps=(
            "00-start",
            "02-idle",
            "04-second-conversation",
            "05-first-archived",
            "06-second-deleted",
        ),
    )
    model = GEN.CURSOR_MODEL
    assert story(replay.events) == [
        ("s1", "active", "shop", None, None),
        ("s1", "idle", "shop", None, None),
        ("s1", "active", "shop", model, None),  # a composer generating: it took s1 over
        ("s1", "idle", "shop", model, None),
        ("s1", "active", "shop", model, None),  # asked again, and it runs a sub-composer
        ("s2", "active", None, "gpt-5", "s1"),
        ("s3", "active", "shop", None, None),  # a second conversation (Cursor picks its model)
        ("s2", "ended", None, "gpt-5", "s1"),  # the sub-composer completed
        ("s1", "idle", "shop", model, None),
        ("s1", "ended", "shop", model, None),  # archived
        ("s3", "idle", "shop", None, None),  # answered
        ("s4", "active", "shop", None, None),  # the second deleted: the editor on its own
        ("s3", "ended", "shop", None, None),
        ("s4", "idle", "shop", None, None),
        ("s4", "ended", "shop", None, None),  # the editor exits
    ]


def _native_id(platform: str, native: str) -> str:
    return native_session_id(MACHINE, platform, native, uid=os.getuid())


def test_the_committed_snapshots_are_what_the_writers_make(tmp_path: Path) -> None:
    regenerate(tmp_path)
    for editor in ("vscode-copilot", "cursor"):
        left, right = FIXTURES / editor, tmp_path / editor
        assert json.loads((left / "steps.json").read_text()) == json.loads(
            (right / "steps.json").read_text()
        )
        for path in sorted((left / "snapshots").rglob("*")):
            twin = right / path.relative_to(left)
            assert twin.exists(), twin
            if path.is_file():
                assert filecmp.cmp(path, twin, shallow=False), path
        made = {p.relative_to(right) for p in (right / "snapshots").rglob("*")}
        kept = {p.relative_to(left) for p in (left / "snapshots").rglob("*")}
        assert made == kept


def test_only_the_main_process_of_an_electron_tree_is_an_editor() -> None:
    for exe in (CODE, CURSOR, "/usr/share/codium/codium"):
        found = agents(_electron(4100, exe), Path("/nonexistent"))
        assert [(a.pid, a.parent_pid) for a in found] == [(4100, None)], exe
        # Orphaned helpers (their main process gone) are still nobody's session.
        assert agents(_electron(4100, exe)[1:], Path("/nonexistent")) == []
    launcher = match_process(
        BUILTIN_PLATFORMS,
        name="code",
        exe=CODE,
        argv=[CODE, "/usr/share/code/resources/app/out/cli.js", "--ms-enable-electron-run-as-node"],
    )
    assert launcher is not None and launcher.helper  # `code .` hands over to the main process


# -- live: a real process stands for the editor ---------------------------------------------

IDLE_AFTER = 1.0


class Live:
    """A fake editor's main process (a marked copy of sleep named like the editor, in its
    project directory), found by the real scanner; its ``User`` directory read by the real
    manager (watchdog's events) and reader; the sessions decided by the real tracker."""

    def __init__(self, agents: Agents, name: str, spec: Any) -> None:
        project = agents.home / "src" / "shop"
        project.mkdir(parents=True, exist_ok=True)
        self.proc = agents.binary(name, cwd=project)
        self.scanner = Scanner()
        self.agent = wait_until(self._find, what=f"the fake {name} found by the scanner")
        self.manager = SourceManager(readers=(spec,))
        self.tracker = SessionTracker(MACHINE, idle_after=IDLE_AFTER)
        self.events: list[Any] = []

    def _find(self) -> Any:
        return next((a for a in self.scanner.scan() if a.pid == self.proc.pid), None)

    def step(self) -> None:
        procs = [a for a in self.scanner.scan() if a.pid == self.proc.pid]
        facts, pending = self.manager.observe(procs)
        changes = self.tracker.observe(procs, facts, pending, self.manager.waiting)
        self.events += changes.events

    def sessions(self) -> dict[str | None, str]:
        return {s.native_id: s.state for s in self.tracker.sessions}

    def until(self, want: dict[str | None, str], what: str) -> None:
        def probe() -> bool:
            self.step()
            return self.sessions() == want

        try:
            wait_until(probe, timeout=30.0, what=what)
        except AssertionError:
            raise AssertionError(f"{what}: {self.sessions()} (wanted {want})") from None

    def exit(self) -> None:
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)
        self.until({}, "the editor exits: every session ends")

    def close(self) -> None:
        self.manager.close()


def test_vscode_chat_live(agents: Agents) -> None:
    live = Live(agents, "code", VSCODE_SPEC)
    user = agents.home / ".config" / "Code" / "User"
    sub = f"{GEN.SECOND}"
    wanted = {
        "00-start": {None: "idle"},  # the editor alone: a session of its own, quiet
        "01-generating": {GEN.FIRST: "active"},
        "02-idle": {GEN.FIRST: "idle"},
        "03-second-conversation": {GEN.FIRST: "idle", sub: "active"},
        "04-needs-input": {GEN.FIRST: "idle", sub: "idle"},
        "05-first-deleted": {sub: "idle"},
    }

    def step(name: str, at: float) -> None:
        if name in wanted:
            live.until(wanted[name], name)

    try:
        GEN.vscode_story(user, live.agent.start_time, step)
        live.exit()
    finally:
        live.close()
    assert [e.state for e in live.events if e.kind in ("start", "end")] == [
        "active",
        "active",
        "ended",
        "ended",
    ]
    models = {e.model for e in live.events}
    assert models == {None, GEN.MODEL, "copilot/claude-sonnet-4"}
    assert {e.session_name for e in live.events} == {"shop"}  # the generated title is not sent


def test_cursor_composers_live(agents: Agents, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(cursor_composers, "READ_EVERY_S", 0.1)
    live = Live(agents, "cursor", CURSOR_SPEC)
    user = agents.home / ".config" / "Cursor" / "User"
    a, b, sub = GEN.COMPOSER_A, GEN.COMPOSER_B, f"{GEN.COMPOSER_A}:agent:{GEN.SUB_A}"
    wanted = {
        "00-start": {None: "idle"},
        "01-generating": {a: "active"},
        "02-idle": {a: "idle"},
        "03-sub-conversation": {a: "active", sub: "active"},
        "04-second-conversation": {a: "idle", b: "active"},
        "05-first-archived": {b: "idle"},
        "06-second-deleted": {None: "idle"},
    }

    def step(name: str, at: float) -> None:
        if name in wanted:
            live.until(wanted[name], name)

    try:
        GEN.cursor_story(user, live.agent.start_time, step)
        live.exit()
    finally:
        live.close()
    subagent = [e for e in live.events if e.parent_id is not None]
    assert [(e.state, e.model) for e in subagent] == [("active", "gpt-5"), ("ended", "gpt-5")]


def test_an_editor_without_conversations_stays_a_session_of_its_own(agents: Agents) -> None:
    """Windsurf has no part that reads its conversations: its process is the session, as
    before the readers, active by its CPU (never held as waiting for a conversation)."""
    live = Live(agents, "windsurf", WINDSURF_SPEC)
    (agents.home / ".config" / "Windsurf" / "User" / "globalStorage").mkdir(parents=True)
    try:
        live.until({None: "idle"}, "the editor's own session")
        assert live.manager.waiting == set()
    finally:
        live.close()


FAKE_ELECTRON = """#!/bin/sh
# A fake Electron editor: the main process starts a zygote (which starts a renderer) and an
# extension host, each the same executable with --type=...
case "$1" in
--type=zygote) "$0" --type=renderer & ;;
--type=*) ;;
*) "$0" --type=zygote & "$0" --type=utility --utility-sub-type=node.mojom.NodeService & ;;
esac
sleep 600 &
wait
"""


def test_the_real_process_tree_of_an_editor_is_one_agent(tmp_path: Path, agents: Agents) -> None:
    """The scanner over a real tree: the main process is the editor; its helpers (same
    executable, ``--type=...``) are part of it, and stay nobody's once it is gone."""
    script = tmp_path / "cursor"
    script.write_text(FAKE_ELECTRON)
    script.chmod(0o755)
    main = agents.spawn([str(script)])
    scanner = Scanner()

    def helpers() -> list[int]:
        found = []
        for pid in os.listdir("/proc"):
            if not pid.isdigit():
                continue
            try:
                argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if str(script).encode() in argv and any(a.startswith(b"--type=") for a in argv):
                found.append(int(pid))
        return sorted(found)

    wait_until(lambda: len(helpers()) == 3, what="the zygote, renderer and extension host")
    seen = wait_until(
        lambda: [a for a in scanner.scan() if a.pid == main.pid or a.pid in helpers()],
        what="the editor",
    )
    assert [(a.pid, a.platform) for a in seen] == [(main.pid, "cursor")]
    orphans = helpers()
    os.kill(main.pid, signal.SIGKILL)  # the main process dies; its helpers linger
    main.wait(timeout=10)
    wait_until(lambda: main.pid not in {a.pid for a in scanner.scan()}, what="the main gone")
    assert [a for a in scanner.scan() if a.pid in orphans] == []
    for pid in orphans:
        os.kill(pid, signal.SIGKILL)
