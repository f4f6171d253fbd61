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
import time
from pathlib import Path
from typing import Any

import pytest
from conftest import Agents, wait_until
from editor_fixture import FIXTURES, GEN, lay_out, regenerate, steps
from replay import MACHINE, Rec, Replay, agents, story

from quintd.identity import native_session_id
from quintd.model import ConversationFacts
from quintd.platforms import BUILTIN_PLATFORMS, match_process
from quintd.scanner import Scanner
from quintd.sources import copilot_chat, copilot_chat_log, cursor_composers, editor_tasks
from quintd.sources.editors import CURSOR_SPEC, VSCODE_SPEC, WINDSURF_SPEC, VsCodeState
from quintd.sources.manager import SourceManager
from quintd.sources.spec import ReaderContext
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


# -- what the stories do not show ---------------------------------------------------------


def _cursor_state(user: Path, clock: list[float]) -> cursor_composers.CursorComposers:
    return cursor_composers.CursorComposers(user, ReaderContext(lambda: clock[0]))


def _editor(start: float = T0, exe: str = CURSOR) -> Any:
    [proc] = agents(_electron(4100, exe, start)[:1], Path("/nonexistent"))
    return proc


def test_a_long_history_costs_a_bounded_read(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An editor started on thousands of old conversations: the first read looks at the
    FRESH most recently written values only; later reads only at what was written since."""
    user = tmp_path / "User"
    cursor = GEN.CursorUser(user, GEN.WORKSPACE)
    old = []
    for n in range(300):
        composer = GEN.Composer(f"00000000-0000-4000-8000-{n:012d}", T0 - 5 * 86_400)
        composer.ask(f"o-{n}", T0 - 5 * 86_400)
        old.append(composer)
    cursor.save(*old)
    looked: list[str] = []
    real = cursor_composers.json_fields
    monkeypatch.setattr(
        cursor_composers,
        "json_fields",
        lambda conn, table, key, paths: looked.append(key) or real(conn, table, key, paths),
    )
    clock = [100.0]
    state = _cursor_state(user, clock)
    proc = _editor()
    state.prepare([proc])
    assert len(looked) == cursor_composers.FRESH and state.facts(proc) is None
    fresh = GEN.Composer(GEN.COMPOSER_A, T0 + 10)
    fresh.ask("a-1", T0 + 10)
    cursor.save(fresh)
    looked.clear()
    clock[0] += 5
    state.poll()
    state.prepare([proc])
    assert looked == [f"composerData:{GEN.COMPOSER_A}"]
    found = state.facts(proc)
    assert found is not None and [c.native_id for c in found] == [GEN.COMPOSER_A]
    assert found[0].status == "busy" and found[0].last_write == clock[0]
    looked.clear()
    clock[0] += 5
    state.prepare([proc])
    assert looked == []  # nothing changed: nothing read


def test_cursor_values_too_big_or_garbage_are_skipped_and_counted(tmp_path: Path) -> None:
    user = tmp_path / "User"
    cursor = GEN.CursorUser(user, GEN.WORKSPACE)
    good = GEN.Composer(GEN.COMPOSER_A, T0 + 10)
    good.ask("a-1", T0 + 10)
    cursor.save(good)
    huge = GEN.Composer(GEN.COMPOSER_B, T0 + 10)
    huge.ask("b-1", T0 + 10)
    huge.data["originalFileStates"] = {"x": "y" * (17 * 1024 * 1024)}  # over the guard's cap
    cursor.save(huge)
    GEN.store_items(
        cursor.global_db,
        {
            f"composerData:{GEN.SUB_A}": "{not json",
            "composerData:d4e5f6a7-0004-4000-8000-00000000000d": json.dumps(
                {"composerId": "someone-else", "status": "generating"}
            ),
            "composerData:e5f6a7b8-0005-4000-8000-00000000000e": json.dumps(
                {"status": ["generating"], "lastUpdatedAt": (T0 + 9) * 1000}
            ),
        },
        "cursorDiskKV",
    )
    state = _cursor_state(user, [100.0])
    proc = _editor()
    state.prepare([proc])
    found = state.facts(proc)
    assert found is not None and [c.native_id for c in found] == [GEN.COMPOSER_A]
    assert state.stats.refused == 1 and state.stats.garbage == 3


def test_cursor_without_its_table_reads_nothing(tmp_path: Path) -> None:
    user = tmp_path / "User"
    GEN.store_items(user / "globalStorage" / "state.vscdb", {"a": "b"})  # VS Code's shape
    state = _cursor_state(user, [100.0])
    proc = _editor()
    state.prepare([proc])
    assert state.facts(proc) is None and state.stats.garbage == 1


def _chat_state(user: Path, clock: list[float]) -> copilot_chat.CopilotChat:
    return copilot_chat.CopilotChat(user, ReaderContext(lambda: clock[0]))


def _one(found: Any) -> ConversationFacts:
    assert found is not None
    [conv] = [c for c in found if not c.over]
    assert isinstance(conv, ConversationFacts)
    return conv


def test_a_compacted_log_is_read_again_from_its_start(tmp_path: Path) -> None:
    user = tmp_path / "User"
    code = GEN.VsCodeUser(user)
    code.workspace(GEN.WORKSPACE, PROJECT)
    chat = GEN.ChatSession(GEN.FIRST, T0 + 10)
    chat.ask("request_1", T0 + 11, GEN.MODEL)
    code.store(GEN.WORKSPACE, chat)
    clock = [100.0]
    state = _chat_state(user, clock)
    proc = _editor(exe=CODE)
    state.prepare([proc])
    assert _one(state.facts(proc)).status == "busy"
    for n in range(40):  # many turns: the log grows past its compaction
        chat.settle(GEN.COMPLETE, T0 + 20 + n)
        chat.ask(f"request_{n + 2}", T0 + 21 + n, "copilot/o3")
        chat.stream("x" * 50)
        chat.log.COMPACT_AFTER = 100
        code.store(GEN.WORKSPACE, chat)
        state.poll()
        clock[0] += 1
        state.prepare([proc])
    chat.settle(GEN.COMPLETE, T0 + 90)
    chat.log.entries = 10_000  # compacted now: the file written again as one line
    chat.stream("y" * 20_000)  # longer than what was read of it
    code.store(GEN.WORKSPACE, chat)
    lines = (user / "workspaceStorage" / GEN.WORKSPACE / "chatSessions").glob("*.jsonl")
    assert [len(p.read_text().splitlines()) for p in lines] == [1]
    state.poll()
    clock[0] += 1
    state.prepare([proc])
    conv = _one(state.facts(proc))
    assert (conv.status, conv.model) == ("idle", "copilot/o3")
    assert state.stats.garbage == 0
    assert len(state._chats[GEN.FIRST].session.requests) == 41


def test_an_old_session_counts_once_it_is_used_again(tmp_path: Path) -> None:
    user = tmp_path / "User"
    code = GEN.VsCodeUser(user)
    code.workspace(GEN.WORKSPACE, PROJECT)
    chat = GEN.ChatSession(GEN.FIRST, T0 - 86_400)
    chat.ask("request_1", T0 - 86_400, GEN.MODEL)
    chat.settle(GEN.COMPLETE, T0 - 86_000)
    code.store(GEN.WORKSPACE, chat)
    log = user / "workspaceStorage" / GEN.WORKSPACE / "chatSessions" / f"{GEN.FIRST}.jsonl"
    os.utime(log, (T0 - 86_000, T0 - 86_000))
    clock = [100.0]
    state = _chat_state(user, clock)
    proc = _editor(start=time.time() - 60, exe=CODE)
    state.prepare([proc])
    assert state.facts(proc) is None  # history: not used since the editor started
    chat.ask("request_2", time.time(), GEN.MODEL)
    code.store(GEN.WORKSPACE, chat)
    state.changed(log)
    clock[0] += 1
    state.prepare([proc])
    conv = _one(state.facts(proc))
    assert (conv.native_id, conv.status, conv.last_write) == (GEN.FIRST, "busy", None)


def test_a_flat_session_file_of_older_versions(tmp_path: Path) -> None:
    """Before VS Code 1.109 (or with chat.useLogSessionStorage false): the whole session in
    <sessionId>.json, rewritten at each save."""
    user = tmp_path / "User"
    directory = user / "workspaceStorage" / GEN.WORKSPACE / "chatSessions"
    directory.mkdir(parents=True)
    chat = GEN.ChatSession(GEN.FIRST, T0 + 10)
    chat.ask("request_1", T0 + 11, GEN.MODEL)
    chat.settle(GEN.NEEDS_INPUT, T0 + 12)
    (directory / f"{GEN.FIRST}.json").write_text(GEN.js(chat.data))
    (directory / f"{GEN.SECOND}.json").write_text(
        json.dumps({"sessionId": "another", "requests": [{"timestamp": (T0 + 5) * 1000}]})
    )
    (directory / "not-a-session.txt").write_text("{}")
    state = _chat_state(user, [100.0])
    proc = _editor(exe=CODE)
    state.prepare([proc])
    conv = _one(state.facts(proc))
    assert (conv.native_id, conv.status, conv.model) == (GEN.FIRST, "waiting", GEN.MODEL)
    assert state.stats.garbage == 1  # a session under another's name


def test_log_mutations_that_make_no_sense_are_counted() -> None:
    session = copilot_chat_log.ChatSession()
    for bad in (
        {"kind": 1, "k": "requests", "v": []},
        {"kind": 9, "k": ["requests"]},
        {"kind": 1, "k": ["requests", -1, "modelState"], "v": {"value": 0}},
        {"kind": 1, "k": ["requests", True, "modelState"], "v": {"value": 0}},
        {"kind": 0, "v": []},
    ):
        with pytest.raises(ValueError):
            session.apply(bad)
    session.apply({"kind": 1, "k": ["requests", 3, "modelState"], "v": {"value": 0}})
    session.apply({"kind": 2, "k": ["pendingRequests"], "v": [{"id": "q"}], "i": 0})
    assert session.status == "busy" and session.queued == 1
    session.apply({"kind": 3, "k": ["pendingRequests"]})
    session.apply({"kind": 1, "k": ["requests", 3, "modelState"], "v": {"value": "0"}})
    assert session.status == "idle"
    session.apply({"kind": 2, "k": ["requests"], "i": 0})
    assert session.requests == {} and session.last is None


def test_the_editors_user_directory_per_os() -> None:
    from quintd.sources.registry import user_dir

    assert user_dir("Code", "linux") == ".config/Code/User"
    assert user_dir("Cursor", "darwin") == "Library/Application Support/Cursor/User"
    assert user_dir("Windsurf", "win32") == "AppData/Roaming/Windsurf/User"


def test_the_composite_routes_changes_to_the_parts_that_watch_them(tmp_path: Path) -> None:
    state = VsCodeState(tmp_path, ReaderContext(lambda: 0.0))
    part, tasks = state._parts
    assert isinstance(part, copilot_chat.CopilotChat)
    assert isinstance(tasks, editor_tasks.ExtensionTasks)  # the extensions' agents, last
    state.changed(tmp_path / "workspaceStorage" / "abc")
    assert part._relist
    part._relist = False
    state.changed(tmp_path / "globalStorage" / "state.vscdb")  # no part of VS Code's
    assert not part._relist
    assert set(part.watch_dirs()) <= state.flat_dirs()


def test_log_mutations_of_requests_as_vs_code_writes_them() -> None:
    session = copilot_chat_log.ChatSession()
    first = {"requestId": "r1", "timestamp": 1000, "modelId": "m1", "modelState": {"value": 1}}
    session.apply({"kind": 0, "v": {"sessionId": "s", "requests": [first]}})
    second = {"requestId": "r2", "timestamp": 2000, "modelId": "m2", "modelState": {"value": 0}}
    session.apply({"kind": 2, "k": ["requests"], "v": [second]})  # appended
    assert sorted(session.requests) == [0, 1] and session.status == "busy"
    session.apply({"kind": 1, "k": ["requests", 1, "timestamp"], "v": int(T0 * 1000)})
    session.apply({"kind": 1, "k": ["requests", 1, "modelId"], "v": "m3"})
    last = session.last
    assert last is not None and (last.timestamp, last.model) == (T0, "m3")
    session.apply({"kind": 1, "k": ["requests", 1], "v": None})  # replaced by nothing
    assert sorted(session.requests) == [0]
    session.apply({"kind": 2, "k": ["requests"], "v": [second, second], "i": 0})  # cut, then pushed
    assert sorted(session.requests) == [0, 1]


def test_a_workspace_without_chat_sessions_is_watched_until_it_has_some(tmp_path: Path) -> None:
    user = tmp_path / "User"
    code = GEN.VsCodeUser(user)
    workspace = code.workspace(GEN.WORKSPACE, PROJECT)
    state = _chat_state(user, [100.0])
    state.prepare([_editor(start=time.time() - 60, exe=CODE)])
    assert workspace in state.watch_dirs()
    (workspace / "chatSessions").mkdir()
    state.changed(workspace / "chatSessions")
    assert workspace / "chatSessions" in state.watch_dirs()
    assert workspace not in state.watch_dirs()


def test_cursor_reads_at_most_every_few_seconds(tmp_path: Path) -> None:
    user = tmp_path / "User"
    cursor = GEN.CursorUser(user, GEN.WORKSPACE)
    composer = GEN.Composer(GEN.COMPOSER_A, T0 + 10)
    composer.ask("a-1", T0 + 10)
    cursor.save(composer)
    clock = [100.0]
    state = _cursor_state(user, clock)
    proc = _editor()
    state.prepare([proc])
    composer.answer("a-2", T0 + 20, done=True)
    cursor.save(composer)
    state.poll()
    clock[0] += cursor_composers.READ_EVERY_S / 2
    state.prepare([proc])
    assert _one(state.facts(proc)).status == "busy"  # not read again yet
    clock[0] += cursor_composers.READ_EVERY_S
    state.prepare([proc])
    assert _one(state.facts(proc)).status == "idle"
