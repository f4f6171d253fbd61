"""GitHub Copilot CLI, as the real CLI behaved (``../shared/fixtures/copilot-cli``, 1.0.102):
every recorded step replayed in order with its process tree (tests/replay.py), the exact
events asserted; then the reader alone against the same files, made stale, hostile or broken.

The story: start-up (the conversation's directory and lock at once), a prompt, a tool awaiting
approval then running, a sub-agent, ``/rename``, ``/new`` (the first conversation stays open
beside the second), a prompt, ``/exit`` (closes the second only), ``/exit`` (quits).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest
from conftest import Agents, needs_fixtures, wait_until
from hypothesis import given, settings
from hypothesis import strategies as st
from replay import MACHINE, Rec, Replay, at_size, clock_time, files_txt, load_processes, story

from quintd.identity import native_session_id, process_session_id
from quintd.model import AgentProcess, ConversationFacts
from quintd.platforms import BUILTIN_PLATFORMS, match_process
from quintd.scanner import Scanner
from quintd.sources import copilot_cli, copilot_events, copilot_workspace, files
from quintd.sources.copilot_cli import SPEC, CopilotState
from quintd.sources.copilot_events import Conversation, apply_event
from quintd.sources.copilot_locks import MAX_LOCKS, Lock, locks_of
from quintd.sources.copilot_workspace import read_workspace
from quintd.sources.files import JsonlTail, ReadStats
from quintd.sources.manager import SourceManager
from quintd.sources.processes import TcpSocket
from quintd.sources.spec import ReaderContext
from quintd.sources.times import parse_time
from quintd.sources.yaml_files import parse_flat_yaml

FIXTURES = needs_fixtures("copilot-cli")
FIRST = "1f462fd5-3052-469d-af49-dadaeafab645"
SECOND = "0d86f1ec-dfc6-4a04-ad2e-9ee3b3c09a20"
SUBAGENT = "bd32bb96-ab45-41ab-a462-0899284594b8"
DAY = "2026-11-29"
LOADER, NATIVE = 17478, 17491
FINAL = FIXTURES / "home" / ".copilot"
SNAPSHOTS = FIXTURES / "snapshots"
# The recording has no start times. The story (README): started 03:31:05; the native
# binary's log is named after its start (process-1795923065943-17491.log); the loader just
# before it; the bash that ran the CLI before that; the tool's `sleep 2` at its approval.
STARTS = {
    17476: 1795923065.0,
    LOADER: 1795923065.5,
    NATIVE: 1795923065.943,
    17595: 1795923076.6,
}
OPENED = {  # each conversation's created_at: when its directory and lock were written
    FIRST: clock_time(DAY, "03:31:05.970"),
    SECOND: clock_time(DAY, "03:31:25.775"),
}
KEEP = ("open-sessions-state.json", "session-state/")  # the rest is never read
PLAN = [  # step, when it was taken, the process tree recorded at (or nearest) that moment
    ("00-started", "03:31:07", "00-started-idle"),
    ("01-first-prompt-busy", "03:31:11", "01-first-prompt-busy"),
    ("02-first-prompt-idle", "03:31:13", "01-first-prompt-busy"),
    ("03-waiting-for-approval", "03:31:15.5", "03-waiting-for-approval"),
    ("04-tool-running", "03:31:17", "04-tool-running"),
    # No snapshot was taken while the sub-agent ran, only its process tree: events.jsonl
    # only grew (README), so its state then is the final file cut after the sub-agent's
    # first turn began; nothing else changed since step 04.
    ("05-subagent-running", "03:31:21.12", "05-subagent-running"),
    ("06-subagent-done", "03:31:22", "05-subagent-running"),
    ("07-renamed", "03:31:24.5", "05-subagent-running"),
    # After /new the CLI holds both conversations' hold files: the tree recorded next (09)
    # shows it; the one before (05) predates the second conversation.
    ("08-after-new", "03:31:26", "09-second-conversation-idle"),
    ("09-second-conversation-idle", "03:31:29.5", "09-second-conversation-idle"),
    ("10-after-first-exit", "03:31:32", "10-after-first-exit"),
    ("11-after-second-exit", "03:31:35", "11-after-second-exit"),
]


def _subagent_running_size() -> int:
    """Where the first conversation's events.jsonl stood while its sub-agent ran: just after
    the sub-agent's first ``assistant.turn_start``."""
    offset = 0
    with open(FINAL / "session-state" / FIRST / "events.jsonl", "rb") as fh:
        for line in fh:
            offset += len(line)
            record = json.loads(line)
            if record["type"] == "assistant.turn_start" and record.get("agentId"):
                return offset
    raise AssertionError("no sub-agent turn in the fixture")


class Home:
    """``~/.copilot`` laid out as it stood at each step: the files a step's ``files.txt``
    lists (else the last listing, with the files its snapshot holds), copied from the
    snapshot, kept from the step before when unchanged, or cut from the final file where
    they only grew (events.jsonl)."""

    def __init__(self, home: Path) -> None:
        self.root = home / ".copilot"
        self.root.mkdir(parents=True, exist_ok=True)
        self.listed: dict[str, int] = {}

    def step(self, step: str) -> None:
        snapshot = SNAPSHOTS / step / "home" / ".copilot"
        listing = SNAPSHOTS / step / "files.txt"
        if listing.exists():
            self.listed = {
                rel.removeprefix(".copilot/"): size
                for rel, (size, _mod) in files_txt(listing).items()
            }
        for path in snapshot.rglob("*") if snapshot.is_dir() else ():
            if path.is_file():
                self.listed[str(path.relative_to(snapshot))] = path.stat().st_size
        if step == "05-subagent-running":
            self.listed[f"session-state/{FIRST}/events.jsonl"] = _subagent_running_size()
        wanted = {rel: size for rel, size in self.listed.items() if rel.startswith(KEEP)}
        for path in list(self.root.rglob("*")):
            if path.is_file() and str(path.relative_to(self.root)) not in wanted:
                path.unlink()
        for rel, size in wanted.items():
            target = self.root / rel
            target.parent.mkdir(parents=True, exist_ok=True)
            if (snapshot / rel).is_file():
                shutil.copyfile(snapshot / rel, target)
            elif target.exists() and target.stat().st_size == size:
                pass  # unchanged since the step before
            elif rel.endswith("/events.jsonl"):
                at_size(FINAL / rel, target, size)
            elif (FINAL / rel).is_file() and (FINAL / rel).stat().st_size == size:
                shutil.copyfile(FINAL / rel, target)  # never changed (checkpoints/index.md)
            elif size == 0:
                target.write_bytes(b"")  # an empty lock file
            else:
                raise AssertionError(f"{step}: no source for {rel} ({size} bytes)")
        self.date()

    def date(self) -> None:
        """Locks and directories as old as the conversations they belong to."""
        for session, opened in OPENED.items():
            directory = self.root / "session-state" / session
            if directory.is_dir():
                for lock in directory.glob("inuse.*"):
                    os.utime(lock, (opened, opened))
                os.utime(directory, (opened, opened))


def _replay(
    tmp_path: Path,
    restart_after: str | None = None,
    idle_after: float = 3600.0,
    quiet_after: tuple[str, ...] = (),
) -> tuple[Replay, dict[str, list[object]], dict[str, dict[int, object]]]:
    home = Home(tmp_path / "home")
    replay = Replay(tmp_path / "home", STARTS[LOADER], idle_after=idle_after, readers=(SPEC,))
    per_step: dict[str, list[object]] = {}
    seen: dict[str, dict[int, object]] = {}
    for step, hms, tree in PLAN:
        home.step(step)
        recs = load_processes(FIXTURES / "processes" / f"{tree}.json", STARTS)
        per_step[step] = list(replay.step(recs, clock_time(DAY, hms)))
        # The loader is the agent; its native binary and the tool child are not sessions.
        assert {a.pid for a in replay.agents} <= {LOADER}, step
        seen[step] = dict(replay.sources.observe(replay.agents)[0])
        if step == restart_after:
            replay.restart()
        if step in quiet_after:
            replay.advance(idle_after + 0.5)  # nothing new on disk for a while
    return replay, per_step, seen


@pytest.mark.parametrize(
    "restart_after",
    [None, "02-first-prompt-idle", "05-subagent-running", "08-after-new", "10-after-first-exit"],
)
def test_copilot_story_replayed(tmp_path: Path, restart_after: str | None) -> None:
    """With a restart of quintd in the middle, nothing changes: same ids, same events."""
    replay, per_step, _seen = _replay(tmp_path, restart_after)
    # Copilot titles a conversation with its first prompt until the user renames it:
    # prompt text never leaves the machine, so only the /rename is a name.
    assert story(replay.events) == [
        ("s1", "active", "shop-api", None, None),  # at start-up: its lock names it at once
        ("s1", "active", "shop-api", "gpt-4.1", None),  # the model answered
        ("s2", "active", "Survey the project", "gpt-4.1", "s1"),  # the sub-agent
        ("s2", "ended", "Survey the project", "gpt-4.1", "s1"),
        ("s1", "active", "Token expiry fix", "gpt-4.1", None),  # /rename
        ("s3", "active", "shop-api", None, None),  # /new: a second conversation, at once
        ("s3", "active", "shop-api", "gpt-4.1", None),
        ("s3", "ended", "shop-api", "gpt-4.1", None),  # /exit
        ("s1", "ended", "Token expiry fix", "gpt-4.1", None),  # /exit again: the CLI quits
    ]
    assert not any("SLOW" in (e.session_name or "") for e in replay.events)
    uid = os.getuid()
    assert list(dict.fromkeys(e.session_id for e in replay.events)) == [
        native_session_id(MACHINE, "copilot-cli", FIRST, uid=uid),
        native_session_id(MACHINE, "copilot-cli", FIRST, SUBAGENT, uid=uid),
        native_session_id(MACHINE, "copilot-cli", SECOND, uid=uid),
    ]
    # /new keeps the first conversation: nothing of it ends there; the first /exit ends
    # only the second; the process's exit ends the first.
    assert [(e.state, e.kind) for e in per_step["08-after-new"]] == [("active", "start")]
    assert [e.session_id for e in per_step["10-after-first-exit"]] == [
        native_session_id(MACHINE, "copilot-cli", SECOND, uid=uid)
    ]
    assert all(e.signing_id for e in replay.events)
    assert replay.sources.stats()["garbage_lines"] == 0


def test_copilot_statuses_follow_the_working_flag_and_approvals(tmp_path: Path) -> None:
    *_, seen = _replay(tmp_path)
    statuses = {step: _statuses(found) for step, found in seen.items()}
    assert statuses == {
        "00-started": [(FIRST, "idle")],
        "01-first-prompt-busy": [(FIRST, "busy")],
        "02-first-prompt-idle": [(FIRST, "idle")],
        "03-waiting-for-approval": [(FIRST, "waiting")],
        "04-tool-running": [(FIRST, "busy")],
        "05-subagent-running": [(FIRST, "busy")],
        "06-subagent-done": [(FIRST, "idle")],
        "07-renamed": [(FIRST, "idle")],
        "08-after-new": [(FIRST, "idle"), (SECOND, "idle")],  # oldest first: the new is current
        "09-second-conversation-idle": [(FIRST, "idle"), (SECOND, "idle")],
        "10-after-first-exit": [(FIRST, "idle")],
        "11-after-second-exit": [],
    }
    [[conversation]] = seen["05-subagent-running"].values()  # type: ignore[misc]
    assert isinstance(conversation, ConversationFacts)
    [sub] = conversation.subagents
    assert (sub.agent_id, sub.name, sub.model, sub.status) == (
        SUBAGENT,
        "Survey the project",
        "gpt-4.1",
        "busy",
    )


def test_copilot_statuses_from_the_events_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where open-sessions-state.json says nothing, the events tell: busy from a prompt to
    the end of its turn, while a tool runs, while a sub-agent runs."""
    monkeypatch.setattr(copilot_cli, "OPEN_STATE", "absent.json")
    *_, seen = _replay(tmp_path)
    statuses = {step: [s for _, s in _statuses(found)] for step, found in seen.items()}
    assert [statuses[step] for step, _hms, _tree in PLAN] == [
        ["idle"],  # no events yet
        ["busy"],  # a turn is open
        ["idle"],
        ["waiting"],  # permission.requested, no permission.completed
        ["busy"],  # the approved tool runs
        ["busy"],
        ["idle"],
        ["idle"],
        ["idle", "idle"],
        ["idle", "idle"],
        ["idle"],
        [],
    ]


def test_copilot_goes_idle_and_comes_back(tmp_path: Path) -> None:
    """With a short idle_after and quiet spells: idle when nothing happens, active again at
    the next sign of work; a tool or a sub-agent running keeps it active."""
    replay, _per_step, _seen = _replay(
        tmp_path,
        idle_after=1.0,
        quiet_after=("02-first-prompt-idle", "04-tool-running", "09-second-conversation-idle"),
    )
    assert [(label, state) for label, state, *_ in story(replay.events)] == [
        ("s1", "active"),
        ("s1", "active"),  # the title and model
        ("s1", "idle"),  # quiet after the first answer
        ("s1", "active"),  # the next prompt (waiting for approval: written to the file)
        ("s2", "active"),  # busy through the tool (the flag): a sub-agent starts
        ("s2", "ended"),
        ("s1", "idle"),  # renamed, nothing else: quiet
        ("s3", "active"),
        ("s3", "active"),
        ("s3", "idle"),
        ("s3", "ended"),
        ("s1", "ended"),
    ]


def test_the_cli_is_announced_before_its_lock_and_keeps_that_id(tmp_path: Path) -> None:
    """Seen before its conversation's lock (the grace over): announced as its process; the
    conversation, when its lock appears, takes that session over: one session, not two."""
    home = tmp_path / "home"
    (home / ".copilot").mkdir(parents=True)
    recs = load_processes(FIXTURES / "processes" / "00-started-idle.json", STARTS)
    replay = Replay(home, STARTS[LOADER], readers=(SPEC,))
    [start] = replay.step(recs, STARTS[LOADER] + 3.5)
    assert start.session_id == process_session_id(
        MACHINE, "copilot-cli", LOADER, round(STARTS[LOADER] * 1000)
    )
    Home(home).step("00-started")
    assert replay.step(recs, clock_time(DAY, "03:31:10")) == []
    [live] = replay.tracker.sessions
    assert (live.session_id, live.native_id) == (start.session_id, FIRST)


def test_the_recorded_processes_match_the_platform() -> None:
    loader = match_process(
        BUILTIN_PLATFORMS,
        name="node",
        exe="/usr/bin/node",
        argv=["node", "/home/dev2/.npm-global/bin/copilot"],
    )
    native = match_process(
        BUILTIN_PLATFORMS,
        name="MainThread",
        exe="/home/dev2/.npm-global/lib/node_modules/@github/copilot-linux-x64/copilot",
        argv=["/home/dev2/.npm-global/lib/node_modules/@github/copilot-linux-x64/copilot"],
    )
    assert loader is not None and loader.platform == "copilot-cli" and not loader.helper
    assert native is not None and native.platform == "copilot-cli"


def _statuses(found: dict[int, object]) -> list[tuple[str, str | None]]:
    out = []
    for facts in found.values():
        for conv in facts if isinstance(facts, tuple) else (facts,):
            assert isinstance(conv, ConversationFacts)
            out.append((conv.native_id, conv.status))
    return out


# -- the reader alone -------------------------------------------------------------------


class View:
    """A ProcessView of made-up processes: pid -> (parent, open files)."""

    def __init__(self, tree: dict[int, tuple[int, list[str] | None]]) -> None:
        self.tree = tree
        self.calls: list[str] = []

    def uid(self, pid: int) -> int | None:
        return os.getuid() if pid in self.tree else None

    def environ(self, pid: int) -> dict[str, str] | None:
        return {}

    def start_ticks(self, pid: int) -> str | None:
        return None

    def exe(self, pid: int) -> str | None:
        return None

    def argv(self, pid: int) -> list[str]:
        return []

    def children(self, pid: int) -> list[int]:
        self.calls.append(f"children {pid}")
        return [p for p, (parent, _files) in self.tree.items() if parent == pid]

    def open_files(self, pid: int) -> set[str]:
        self.calls.append(f"open_files {pid}")
        files = self.tree.get(pid, (0, None))[1]
        return set(files or ())

    def tcp(self, pid: int) -> list[TcpSocket]:
        return []


def _agent(pid: int, start: float) -> AgentProcess:
    return AgentProcess(
        platform="copilot-cli",
        pid=pid,
        ppid=1,
        start_time=start,
        user=None,
        exe=None,
        cwd="/home/dev2/src/shop-api",
        name="node",
        matched_by="script",
        uid=os.getuid(),
    )


def _conversation(
    root: Path, session: str, pid: int, snapshot: str = "02-first-prompt-idle"
) -> Path:
    """A conversation directory from a snapshot, locked by ``pid`` now."""
    source = SNAPSHOTS / snapshot / "home" / ".copilot" / "session-state" / session
    directory = root / "session-state" / session
    directory.mkdir(parents=True, exist_ok=True)
    for name in ("workspace.yaml", "events.jsonl"):
        if (source / name).exists():
            shutil.copyfile(source / name, directory / name)
    (directory / f"inuse.{pid}.lock").write_text(f"{pid}\n")
    (directory / f"inuse.{pid}.hold").write_bytes(b"")
    return directory


def _hold(root: Path, session: str, pid: int) -> str:
    return str(root / "session-state" / session / f"inuse.{pid}.hold")


def _state(root: Path, view: View, clock: list[float] | None = None) -> CopilotState:
    ticks = clock or [0.0]
    return CopilotState(root, ReaderContext(lambda: ticks[0], view))


def _ids(found: object) -> list[str]:
    assert found is None or isinstance(found, tuple)
    return [c.native_id for c in found or ()]


def test_locks_of_dead_or_older_or_other_processes_are_stale(tmp_path: Path) -> None:
    import time

    root = tmp_path / ".copilot"
    now = time.time()
    agent = _agent(100, now - 5)
    directory = _conversation(root, FIRST, 101)
    # The native child holds its hold file: the conversation is its.
    view = View({100: (1, None), 101: (100, [_hold(root, FIRST, 101)])})
    state = _state(root, view)
    state.prepare([agent])
    assert _ids(state.facts(agent)) == [FIRST]
    # A lock older than the process: left by a dead process whose pid came back.
    os.utime(directory / "inuse.101.lock", (now - 60, now - 60))
    state = _state(root, view)
    state.prepare([agent])
    assert state.facts(agent) is None
    os.utime(directory / "inuse.101.lock", (now, now))
    # The pid is no child of the agent (dead, or someone else's).
    state = _state(root, View({100: (1, None), 101: (1, [_hold(root, FIRST, 101)])}))
    state.prepare([agent])
    assert state.facts(agent) is None
    # The process holds another conversation's hold file, not this one's.
    other = _hold(root, SECOND, 101)
    state = _state(root, View({100: (1, None), 101: (100, [other])}))
    state.prepare([agent])
    assert state.facts(agent) is None
    # Its open files cannot be read: the lock and its time decide.
    state = _state(root, View({100: (1, None), 101: (100, None)}))
    state.prepare([agent])
    assert _ids(state.facts(agent)) == [FIRST]


def test_a_new_lock_is_looked_at_again_until_its_hold_is_held(tmp_path: Path) -> None:
    """/new writes the lock, then opens its hold: a bind in between must not lose it."""
    import time

    root = tmp_path / ".copilot"
    now = time.time()
    agent = _agent(100, now - 100)
    _conversation(root, FIRST, 101)
    directory = _conversation(root, SECOND, 101)
    os.utime(directory / "inuse.101.lock", (now - 60, now - 60))  # opened a minute ago
    view = View({100: (1, None), 101: (100, [_hold(root, "someone-else", 101)])})
    state = _state(root, view)
    state.prepare([agent])
    assert state.facts(agent) is None
    view.tree[101] = (100, [_hold(root, FIRST, 101)])  # the new lock's hold, a moment later
    state.prepare([agent])  # no change event needed: the new lock is looked at again
    assert _ids(state.facts(agent)) == [FIRST]
    # The minute-old lock whose hold is not held is stale: not looked at every pass.
    view.calls.clear()
    state.prepare([agent])
    assert view.calls == []


def test_two_clis_each_run_their_own_conversations(tmp_path: Path) -> None:
    import time

    root = tmp_path / ".copilot"
    now = time.time()
    a, b = _agent(100, now - 9), _agent(200, now - 5)
    _conversation(root, FIRST, 101)
    _conversation(root, SECOND, 201, "09-second-conversation-idle")
    standalone = _agent(300, now - 2)  # the native binary itself, no loader
    third = "3b0e2c1d-0000-4000-8000-000000000003"
    _conversation(root, third, 300)
    view = View(
        {100: (1, None), 101: (100, None), 200: (1, None), 201: (200, None), 300: (1, None)}
    )
    state = _state(root, view)
    state.prepare([a, b, standalone])
    assert (_ids(state.facts(a)), _ids(state.facts(b)), _ids(state.facts(standalone))) == (
        [FIRST],
        [SECOND],
        [third],
    )
    # The same conversation opened by both: the later lock has it.
    (root / "session-state" / SECOND / "inuse.101.lock").write_text("101\n")
    state = _state(root, view)
    state.prepare([a, b, standalone])
    assert (_ids(state.facts(a)), _ids(state.facts(b))) == ([FIRST, SECOND], [])


def test_change_events_drive_reading_and_an_idle_pass_costs_one_stat(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import time

    root = tmp_path / ".copilot"
    (root / "session-state").mkdir(parents=True)
    now = time.time()
    agent = _agent(100, now - 5)
    view = View({100: (1, None), 101: (100, None)})
    clock = [10.0]
    state = _state(root, view, clock)
    state.prepare([agent])
    assert state.facts(agent) is None
    directory = _conversation(root, FIRST, 101, "00-started")
    shutil.copyfile(
        SNAPSHOTS / "00-started" / "home" / ".copilot" / "open-sessions-state.json",
        root / "open-sessions-state.json",
    )
    state.changed(directory / "inuse.101.lock")
    state.prepare([agent])
    [facts] = state.facts(agent) or ()
    assert (facts.native_id, facts.name, facts.model, facts.status) == (FIRST, None, None, "idle")
    # The first prompt: workspace.yaml rewritten, events.jsonl begun.
    busy = SNAPSHOTS / "01-first-prompt-busy" / "home" / ".copilot"
    for name in ("workspace.yaml", "events.jsonl"):
        shutil.copyfile(busy / "session-state" / FIRST / name, directory / name)
        state.changed(directory / name)
    shutil.copyfile(busy / "open-sessions-state.json", root / "open-sessions-state.json")
    clock[0] = 11.0
    state.prepare([agent])
    [facts] = state.facts(agent) or ()
    assert (facts.name, facts.model, facts.status, facts.last_write) == (
        None,  # the first prompt is no name (not user_named)
        "gpt-4.1",
        "busy",
        11.0,  # grew after the first read: work
    )
    # Nothing changed: one stat (open-sessions-state.json), no file opened, no process read.
    # Nor when the change events are our own reads' (watchdog reports opens and closes).
    counted: list[str] = []
    real_open, real_listdir = files.open_under, os.listdir
    monkeypatch.setattr(  # every reader's open goes through files.open_under
        files,
        "open_under",
        lambda root, path: counted.append(path.name) or real_open(root, path),
    )
    monkeypatch.setattr(os, "listdir", lambda *a: counted.append("listdir") or real_listdir(*a))
    view.calls.clear()
    for _ in range(3):
        state.prepare([agent])
        state.facts(agent)
    assert counted == ["open-sessions-state.json"] * 3 and view.calls == []
    counted.clear()
    for name in ("workspace.yaml", "events.jsonl"):
        state.changed(directory / name)
    state.prepare([agent])
    assert counted == ["open-sessions-state.json"] and view.calls == []
    monkeypatch.undo()
    # /exit: the lock goes; the conversation is no longer reported, and forgotten.
    (directory / "inuse.101.lock").unlink()
    state.changed(directory / "inuse.101.lock")
    state.prepare([agent])
    assert state.facts(agent) is None and not state._conversations


def test_shutdown_closes_a_conversation_whose_lock_is_still_there(tmp_path: Path) -> None:
    import time

    root = tmp_path / ".copilot"
    directory = _conversation(root, SECOND, 101, "10-after-first-exit")  # ends in shutdown
    agent = _agent(100, time.time() - 5)
    state = _state(root, View({100: (1, None), 101: (100, None)}))
    state.prepare([agent])
    assert state.facts(agent) is None
    with open(directory / "events.jsonl", "a") as fh:  # copilot --resume=<id>
        fh.write(json.dumps({"type": "session.resume", "data": {}, "id": "x"}) + "\n")
    state.changed(directory / "events.jsonl")
    state.prepare([agent])
    assert _ids(state.facts(agent)) == [SECOND]


def test_garbage_hostile_and_half_written_files(tmp_path: Path) -> None:
    import time

    root = tmp_path / ".copilot"
    directory = _conversation(root, FIRST, 101)
    agent = _agent(100, time.time() - 5)
    view = View({100: (1, None), 101: (100, None)})
    with open(directory / "events.jsonl", "ab") as fh:
        fh.write(b"not json\n[1]\n\x00\xff\n")
        fh.write(b'{"type": 3, "data": []}\n{"type": "subagent.started", "data": {}}\n')
        fh.write(b'{"type": "assistant.message", "data": {"model": {"x": 1}}}\n')
        fh.write(b'{"type": "assistant.message", "data": {"model": "gpt-\\u202e5\\u0007"}}\n')
        fh.write(b'{"type": "session.model_change", "data": {"newM')  # half written
    (root / "open-sessions-state.json").write_text("{half")
    state = _state(root, view)
    state.prepare([agent])
    [facts] = state.facts(agent) or ()
    assert (facts.name, facts.model, facts.status) == (
        None,  # the first prompt: no name
        "gpt-5",  # controls and bidi overrides removed
        "idle",  # from the events: the open-sessions file is garbage
    )
    assert state.stats.garbage == 4  # three bad lines, one bad JSON file
    # A workspace.yaml caught half written keeps the last good title; a complete one that
    # is not flat YAML, or names another conversation, is garbage.
    workspace = directory / "workspace.yaml"
    good = workspace.read_bytes()
    for broken, counted in (
        (good[: good.index(b"name:") + 9], 0),
        (b"- a list\n", 1),
        (good.replace(FIRST.encode(), SECOND.encode()), 1),
    ):
        before = state.stats.garbage
        workspace.write_bytes(broken)
        state.changed(workspace)
        state.prepare([agent])
        [facts] = state.facts(agent) or ()
        assert facts.name is None  # the first prompt is never a name
        assert state.stats.garbage - before == counted
    # A link out of the state dir is refused, never followed.
    secret = tmp_path / "secret.yaml"
    secret.write_text(f"id: {FIRST}\nname: secret\n")
    workspace.unlink()
    workspace.symlink_to(secret)
    state = _state(root, view)
    state.prepare([agent])
    [facts] = state.facts(agent) or ()
    assert facts.name is None and state.stats.refused == 1
    # So is a lock that is a link, or a conversation directory that is one.
    lock = directory / "inuse.101.lock"
    lock.unlink()
    (tmp_path / "lock").write_text("101\n")
    lock.symlink_to(tmp_path / "lock")
    state = _state(root, view)
    state.prepare([agent])
    assert state.facts(agent) is None
    lock.unlink()
    lock.write_text("101\n")
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(directory, elsewhere, symlinks=True)
    shutil.rmtree(directory)
    directory.symlink_to(elsewhere)
    state = _state(root, view)
    state.prepare([agent])
    assert state.facts(agent) is None


def test_the_manager_watches_a_real_process_state(tmp_path: Path, agents: Agents) -> None:
    """The real path: HOME from the agent's own environment, locks seen by watchdog, a
    standalone native binary (a copy of sleep named copilot) holding its conversation."""
    proc = agents.binary("copilot")
    agent = wait_until(
        lambda: next((a for a in Scanner().scan() if a.pid == proc.pid), None), what="copilot"
    )
    root = agents.home / ".copilot"
    (root / "session-state").mkdir(parents=True)
    manager = SourceManager(readers=(SPEC,))
    try:
        assert manager.observe([agent])[0] == {}
        _conversation(root, FIRST, agent.pid)
        facts = wait_until(lambda: manager.observe([agent])[0], what="the lock via watchdog")
        [conversation] = facts[agent.pid]  # type: ignore[misc]
        assert conversation.native_id == FIRST and conversation.owner_uid == os.getuid()
        (root / "session-state" / FIRST / f"inuse.{agent.pid}.lock").unlink()
        wait_until(lambda: manager.observe([agent])[0] == {}, what="the lock gone")
        assert manager.stats()["watched_dirs"] >= 1 and manager.errors == 0
    finally:
        manager.close()


# -- workspace.yaml -----------------------------------------------------------------------

WANTED = {"id", "name", "created_at", "user_named"}


def test_flat_yaml_as_the_cli_writes_it() -> None:
    raw = (
        (SNAPSHOTS / "07-renamed" / "home" / ".copilot" / "session-state" / FIRST)
        .joinpath("workspace.yaml")
        .read_bytes()
    )
    assert parse_flat_yaml(raw, WANTED) == {
        "id": FIRST,
        "name": "Token expiry fix",
        "user_named": "true",
        "created_at": "2026-11-29T03:31:05.970Z",
    }


@pytest.mark.parametrize(
    ("line", "value"),
    [
        ("name: plain words # a comment", "plain words"),
        ("name: 'it''s: quoted # not a comment'", "it's: quoted # not a comment"),
        ('name: "tab\\there \\"q\\" \\u00e9\\U0001F600 \\x41"', 'tab\there "q" é😀 A'),
        ("name: >-\n  folded long\n  title\n", "folded long title"),
        ("name: |\n  line one\n\n  line two\n", "line one\n\nline two"),
        ("name: 'two\n  lines'", "two lines"),
        ('name: "joined\\\n  here"', "joinedhere"),
        ("name: continued\n  plain", "continued plain"),
        ("name: ~", None),
        ("name:", None),
        ("name:\n  nested: map\n  other: 1", None),
        ("name: &anchor value", "value"),  # an anchor names the scalar; it is still it
        ("name: [a, b]", None),
    ],
)
def test_flat_yaml_scalars(line: str, value: str | None) -> None:
    raw = f"---\nid: {FIRST}\n{line}\ncreated_at: x\n".encode()
    assert parse_flat_yaml(raw, WANTED) == {"id": FIRST, "name": value, "created_at": "x"}


@pytest.mark.parametrize(
    "raw",
    [
        b"id: x\nname: half",  # no final newline: caught half written
        b"name: 'never closed\n",
        b'name: "never closed\n',
        b"- a\n- b\n",
        b"just text\n",
        b"name: 'x' trailing\n",
        b"name: |bad\n  x\n",
        b"a: 1\n" * 5000,
        # Not YAML, as YAML says (the hand parser before PyYAML took some as a null name):
        b'name: "bad \\q escape"\n',  # an escape YAML does not have
        b'name: "\\ud83d\\ude00 pair"\n',  # surrogates are no characters
        b"name: *alias\n",  # an alias of no anchor
    ],
)
def test_flat_yaml_refuses_what_it_is_not(raw: bytes) -> None:
    assert parse_flat_yaml(raw, WANTED) is None


@pytest.mark.parametrize(
    "raw",
    [
        b"name: " + b"[" * 100_000 + b"\n",  # nesting, in flow
        b"name:\n" + b"".join(b" " * i + b"- \n" for i in range(1, 2000)),  # in blocks
        b"- " * 100_000 + b"x\n",  # in one line
        # A billion laughs: nine levels of nine aliases each.
        b"a: &a [x, x, x, x, x, x, x, x, x]\n"
        + b"".join(
            b"%c: &%c [%s]\n" % (c, c, b", ".join([b"*%c" % (c - 1)] * 9))
            for c in range(ord("b"), ord("j"))
        )
        + b"name: still refused\n",
        b"name: x\n" + b"k: " + b"y" * (300 * 1024) + b"\n",  # past the size cap
    ],
)
def test_flat_yaml_bombs_are_refused_at_once(raw: bytes) -> None:
    """Nesting and alias bombs, and files past the cap, are refused before anything is
    built (the parser's events are counted first), in well under a second each."""
    started = time.monotonic()
    assert parse_flat_yaml(raw, WANTED) is None
    assert time.monotonic() - started < 0.5


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=2000) | st.text(max_size=500).map(lambda s: (s + "\n").encode()))
def test_flat_yaml_never_raises(raw: bytes) -> None:
    found = parse_flat_yaml(raw, WANTED)
    assert found is None or set(found) <= WANTED


def test_recorded_tool_children_carry_their_conversation() -> None:
    """What the README says of tool processes, as recorded (not used: the lock decides)."""
    [tool] = [
        r
        for r in load_processes(FIXTURES / "processes" / "04-tool-running.json", STARTS)
        if r.comm == "sleep"
    ]
    assert isinstance(tool, Rec) and tool.ppid == NATIVE
    assert tool.env["COPILOT_AGENT_SESSION_ID"] == FIRST


# -- events.jsonl, read alone -------------------------------------------------------------


class Events:
    """A conversation's ``events.jsonl`` written line by line, read through its own tail."""

    def __init__(self, root: Path) -> None:
        self.path = root / "events.jsonl"
        root.mkdir(parents=True, exist_ok=True)
        self.path.write_bytes(b"")
        self.conversation = Conversation(JsonlTail(self.path, root), session_id=FIRST)
        self.conversation.read(0.0, lambda r: None)  # the history (none): what comes is work

    def write(self, now: float | None, *events: dict[str, object]) -> Conversation:
        with open(self.path, "a") as fh:
            fh.writelines(json.dumps(e) + "\n" for e in events)
        self.conversation.read(
            now or 0.0, lambda record: apply_event(self.conversation, record, now)
        )
        return self.conversation


def _event(kind: str, agent: str | None = None, **data: object) -> dict[str, object]:
    found: dict[str, object] = {"type": kind, "data": data}
    if agent is not None:
        found["agentId"] = agent
    return found


def test_events_the_main_conversation(tmp_path: Path) -> None:
    events = Events(tmp_path)
    c = events.write(1.0, _event("session.start", selectedModel="gpt-4.1"))
    assert (c.model, c.closed, c.prompt_open, c.turn_open) == ("gpt-4.1", False, False, False)
    c = events.write(2.0, _event("session.model_change", newModel="gpt-5"), _event("user.message"))
    assert (c.model, c.prompt_open, c.turn_open) == ("gpt-5", True, False)
    c = events.write(3.0, _event("assistant.turn_start"))
    assert (c.prompt_open, c.turn_open) == (False, True)
    c = events.write(4.0, _event("assistant.message", model="claude-4"))
    assert c.model == "claude-4"
    c = events.write(5.0, _event("assistant.message", model=""), _event("session.start"))
    assert c.model == "claude-4"  # an empty or missing model keeps the last one
    c = events.write(6.0, _event("tool.execution_start", toolCallId="t1"))
    c = events.write(6.0, _event("tool.execution_start", toolCallId="t2"))
    c = events.write(7.0, _event("tool.execution_complete", toolCallId="t1"))
    assert (c.tools, c.turn_open) == ({"t2"}, True)
    c = events.write(8.0, _event("permission.requested", requestId="r1"))
    c = events.write(8.0, _event("permission.requested", requestId="r2"))
    c = events.write(8.5, _event("permission.completed", requestId="r1"))
    assert c.permissions == {"r2": None}
    c = events.write(9.0, _event("assistant.turn_end"))
    assert (c.turn_open, c.tools, c.permissions) == (False, {"t2"}, {"r2": None})
    c = events.write(9.5, _event("user.message"), _event("assistant.turn_start"))
    c = events.write(9.6, _event("user.message"))  # a prompt queued during the turn
    assert (c.prompt_open, c.turn_open) == (True, True)
    c = events.write(10.0, _event("session.shutdown"))
    assert (c.closed, c.prompt_open, c.turn_open, c.tools, c.permissions) == (
        True,
        False,
        False,
        set(),
        {},
    )
    c = events.write(11.0, _event("session.resume", selectedModel="gpt-4.1"))
    assert (c.closed, c.model) == (False, "gpt-4.1")
    c = events.write(12.0, _event("session.shutdown"), _event("user.message"))
    assert (c.closed, c.prompt_open) == (False, True)  # a prompt reopens it


def test_events_subagents(tmp_path: Path) -> None:
    events = Events(tmp_path)
    c = events.write(
        1.0,
        _event(
            "subagent.started",
            "a1",
            toolCallId="call1",
            agentDescription="Survey",
            agentDisplayName="Explore",
            agentName="explore",
            model="m1",
        ),
        _event("subagent.started", None, toolCallId="call2", agentDisplayName="Display"),
        _event("subagent.started", None, agentName="nobody"),  # no id at all: ignored
        _event("subagent.started", "a3", agentName="named"),
    )
    assert {k: (s.name, s.tool_use_id, s.model, s.done) for k, s in c.subagents.items()} == {
        "a1": ("Survey", "call1", "m1", False),
        "call2": ("Display", "call2", None, False),
        "a3": ("named", None, None, False),
    }
    # A sub-agent's own work: its time and model, never the conversation's.
    c = events.write(2.0, _event("assistant.message", "a1", model="m2"))
    assert (c.subagents["a1"].model, c.subagents["a1"].last_write, c.model) == ("m2", 2.0, None)
    c = events.write(3.0, _event("session.model_change", "a1", newModel="m3"))
    assert c.subagents["a1"].model == "m3"
    c = events.write(3.5, _event("user.message", "a1"), _event("assistant.message", "a1"))
    assert (c.subagents["a1"].model, c.prompt_open) == ("m3", False)
    c = events.write(4.0, _event("subagent.configured", "a3", model="m4"))
    assert (c.subagents["a3"].model, c.subagents["a3"].last_write) == ("m4", 4.0)
    c = events.write(4.5, _event("subagent.configured", "a3"))
    assert c.subagents["a3"].model == "m4"
    # Its permission requests are its own.
    c = events.write(5.0, _event("permission.requested", "a1", requestId="r1"))
    assert c.permissions == {"r1": "a1"}
    c = events.write(5.5, _event("permission.completed", "a1", requestId="r1"))
    assert c.permissions == {}
    # Done: the task tool returned, it failed, it completed; unknown ones are ignored.
    c = events.write(6.0, _event("tool.execution_complete", toolCallId="call1"))
    c = events.write(6.0, _event("subagent.failed", None, toolCallId="call2"))
    c = events.write(6.0, _event("subagent.completed", "unknown"))
    assert {k: s.done for k, s in c.subagents.items()} == {"a1": True, "call2": True, "a3": False}
    assert [s.agent_id for s in c.running()] == ["a3"]
    c = events.write(7.0, _event("subagent.completed", "a3"))
    assert c.running() == [] and set(c.subagents) == {"a1", "call2", "a3"}
    # Started again: running, its call and name kept where the event has none.
    c = events.write(8.0, _event("subagent.started", "a1"))
    again = c.subagents["a1"]
    assert (again.done, again.tool_use_id, again.name, again.model) == (
        False,
        "call1",
        "Survey",
        "m3",
    )
    c = events.write(9.0, _event("session.shutdown"))
    assert c.running() == []


def test_events_read_as_history_are_no_work(tmp_path: Path) -> None:
    events = Events(tmp_path)
    c = events.write(
        None,
        _event("subagent.started", "a1"),
        _event("assistant.message", "a1", model="m"),
        _event("subagent.configured", "a1"),
    )
    assert c.subagents["a1"].last_write is None


def test_events_tables_stay_bounded(tmp_path: Path) -> None:
    c = Events(tmp_path).conversation
    for n in range(copilot_events.MAX_OPEN):
        apply_event(c, _event("tool.execution_start", toolCallId=f"t{n}"), 1.0)
        apply_event(c, _event("permission.requested", requestId=f"r{n}"), 1.0)
    assert len(c.tools) == len(c.permissions) == copilot_events.MAX_OPEN  # all kept
    apply_event(c, _event("tool.execution_start", toolCallId="last"), 1.0)
    apply_event(c, _event("permission.requested", requestId="last"), 1.0)
    assert (c.tools, c.permissions) == ({"last"}, {"last": None})  # garbage: begun again
    most = copilot_events.MAX_SUBAGENTS
    for n in range(most):
        apply_event(c, _event("subagent.started", f"a{n}"), 1.0)
    assert len(c.subagents) == most
    apply_event(c, _event("subagent.completed", "a5"), 1.0)
    apply_event(c, _event("subagent.completed", "a7"), 1.0)
    apply_event(c, _event("subagent.started", "new1"), 1.0)
    assert len(c.subagents) == most and "a5" not in c.subagents and "a7" in c.subagents
    apply_event(c, _event("subagent.started", "new2"), 1.0)
    apply_event(c, _event("subagent.started", "new3"), 1.0)  # none done: the oldest goes
    assert len(c.subagents) == most
    assert "a7" not in c.subagents and "a0" not in c.subagents and "a1" in c.subagents
    assert {"new1", "new2", "new3"} <= set(c.subagents)


def test_events_that_are_not_events(tmp_path: Path) -> None:
    events = Events(tmp_path)
    c = events.write(
        1.0,
        {"type": "user.message"},  # no data
        {"type": 5, "data": {}},
        _event("tool.execution_start"),  # no call id
        _event("tool.execution_complete"),
        _event("permission.requested"),  # no request id
        _event("session.start", "a-nobody", selectedModel="x"),  # an unknown agent's
    )
    assert (c.prompt_open, c.tools, c.permissions, c.model, c.subagents) == (
        False,
        set(),
        {},
        None,
        {},
    )


# -- workspace.yaml, lock files and the reader, alone ------------------------------------

RENAMED = (
    SNAPSHOTS / "07-renamed" / "home" / ".copilot" / "session-state" / FIRST / "workspace.yaml"
)


def test_workspace_read_alone_once_per_version(tmp_path: Path) -> None:
    """Only a name the user gave (``user_named: true``, as YAML writes it), the creation
    time; each version of the file parsed once; garbage and half-written ones keep the
    last good values."""
    root = tmp_path / ".copilot"
    directory = root / "session-state" / FIRST
    directory.mkdir(parents=True)
    workspace = directory / "workspace.yaml"
    good = RENAMED.read_bytes()
    conversation = Conversation(JsonlTail(directory / "events.jsonl", root), session_id=FIRST)
    stats = ReadStats()

    def read(raw: bytes | None = None) -> tuple[str | None, float | None]:
        if raw is not None:
            workspace.write_bytes(raw)
        read_workspace(conversation, root, stats)
        return conversation.name, conversation.created

    created = parse_time("2026-11-29T03:31:05.970Z")
    assert read(good) == ("Token expiry fix", created)
    assert conversation.workspace == (
        workspace.stat().st_ino,
        workspace.stat().st_size,
        workspace.stat().st_mtime_ns,
    )
    conversation.name = "kept"  # the same version again: not parsed again
    assert read() == ("kept", created)
    assert read(good.replace(b"user_named: true", b"user_named: 'True '")) == (
        "Token expiry fix",
        created,
    )
    assert read(good.replace(b"user_named: true", b"user_named: false")) == (None, created)
    unnamed = good.replace(b"user_named: true\n", b"")
    assert read(unnamed.replace(b"created_at", b"made_at")) == (None, created)  # kept
    assert stats.garbage == 0
    # Caught half written: not taken, and read again once complete.
    assert read(good[:-1]) == (None, created) and stats.garbage == 0
    assert read(good) == ("Token expiry fix", created)
    # Another conversation's: garbage, nothing changes. Without an id: taken.
    assert read(good.replace(FIRST.encode(), SECOND.encode())) == ("Token expiry fix", created)
    assert stats.garbage == 1
    assert read(good.replace(f"id: {FIRST}\n".encode(), b"").replace(b"fix", b"fix 2"))[0] == (
        "Token expiry fix 2"
    )
    # Too large: refused, counted once, and the last good values kept.
    big = good + b"summary: " + b"x" * copilot_workspace.MAX_WORKSPACE_BYTES + b"\n"
    refused = stats.refused
    assert read(big) == ("Token expiry fix 2", created)
    assert stats.refused == refused + 1 and stats.garbage == 1
    assert read() == ("Token expiry fix 2", created) and stats.refused == refused + 1


def test_locks_of_reads_names_and_times_only_of_real_lock_files(tmp_path: Path) -> None:
    root = tmp_path / ".copilot"
    assert locks_of(root, FIRST, 0.0) == {}  # no session-state
    directory = root / "session-state" / FIRST
    directory.mkdir(parents=True)
    for pid in (101, 102, 7):
        (directory / f"inuse.{pid}.lock").write_text(f"{pid}\n")
    os.utime(directory / "inuse.101.lock", (1000.0, 1000.0))
    os.utime(directory / "inuse.102.lock", (2000.0, 2000.0))
    os.utime(directory / "inuse.7.lock", (2000.5, 2000.5))
    (directory / "inuse.103.lock").mkdir()  # not a file
    (directory / "inuse.104.lock").symlink_to(directory / "inuse.102.lock")  # a link
    (directory / "inuse.x.lock").write_text("")
    uid = os.getuid()
    assert locks_of(root, FIRST, 0.0) == {
        101: Lock(1000.0, uid),
        102: Lock(2000.0, uid),
        7: Lock(2000.5, uid),
    }
    # Older than the horizon: no running process wrote it.
    assert set(locks_of(root, FIRST, 2000.0)) == {102, 7}
    # A session-state that is a link is not followed.
    elsewhere = tmp_path / "elsewhere"
    (root / "session-state").rename(elsewhere)
    (root / "session-state").symlink_to(elsewhere)
    assert locks_of(root, FIRST, 0.0) == {}
    # At most MAX_LOCKS per directory.
    (root / "session-state").unlink()
    elsewhere.rename(root / "session-state")
    for pid in range(1000, 1000 + MAX_LOCKS):
        (directory / f"inuse.{pid}.lock").write_text("")
    assert len(locks_of(root, FIRST, 0.0)) == MAX_LOCKS


def test_copilot_events_and_polls_tell_what_to_read_again(tmp_path: Path) -> None:
    root = tmp_path / ".copilot"
    view = View({100: (1, None), 101: (100, None)})
    state = _state(root, view)
    assert state.watch_dirs() == [root / "session-state"]
    assert not state.has_registry_dir()
    (root / "session-state").mkdir(parents=True)
    assert state.has_registry_dir()
    agent = _agent(100, time.time() - 5)
    state.prepare([agent])
    assert state.facts(agent) is None
    # A lock comes: nothing until its event (or a poll).
    directory = _conversation(root, FIRST, 101)
    state.prepare([agent])
    assert state.facts(agent) is None
    for ignored in (tmp_path / "elsewhere", root / "session-state", root / "session-state" / ".x"):
        state.changed(ignored)
        state.prepare([agent])
        assert state.facts(agent) is None, ignored
    state.changed(directory)  # the directory itself
    state.prepare([agent])
    assert _ids(state.facts(agent)) == [FIRST]
    # A second conversation, seen by a poll alone.
    second = _conversation(root, SECOND, 101, "09-second-conversation-idle")
    state.prepare([agent])
    assert _ids(state.facts(agent)) == [FIRST]
    state.poll()
    state.prepare([agent])
    assert sorted(_ids(state.facts(agent))) == sorted([FIRST, SECOND])
    # Oldest lock first: the last is the current conversation.
    now = time.time()
    os.utime(directory / "inuse.101.lock", (now + 1, now + 1))
    os.utime(second / "inuse.101.lock", (now, now))
    state.changed(directory / "inuse.101.lock")
    state.changed(second / "inuse.101.lock")
    state.prepare([agent])
    assert _ids(state.facts(agent)) == [SECOND, FIRST]
    # A rename without an event is seen at a poll; a deeper path is no event of its own.
    workspace = directory / "workspace.yaml"
    workspace.write_bytes(workspace.read_bytes().replace(b"user_named: false", b"user_named: true"))
    state.changed(directory / "checkpoints" / "workspace.yaml")
    state.prepare([agent])
    assert [f.name for f in state.facts(agent) or ()] == [None, None]
    state.changed(workspace)
    state.prepare([agent])
    named = [f.name for f in state.facts(agent) or ()]
    assert named[0] is None and named[1] is not None


def test_copilot_open_sessions_state_decides_the_status(tmp_path: Path) -> None:
    root = tmp_path / ".copilot"
    _conversation(root, FIRST, 101)  # its events: a turn over, nothing open
    agent = _agent(100, time.time() - 5)
    state = _state(root, View({100: (1, None), 101: (100, None)}))
    open_state = root / "open-sessions-state.json"

    def status(working: object) -> str | None:
        if working is None:
            open_state.unlink(missing_ok=True)
        else:
            entries = {f"other-{n}": {"working": True} for n in range(3)}
            open_state.write_text(json.dumps({**entries, FIRST: {"working": working}}))
        state.prepare([agent])
        [facts] = state.facts(agent) or ()
        return facts.status

    assert status(True) == "busy"
    assert status(False) == "idle"
    assert status("yes") == "idle"  # not a flag: the events decide
    assert status(True) == "busy"
    assert status(None) == "idle"  # gone: the events decide
