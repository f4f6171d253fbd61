"""The Claude Code reader against files the real CLI wrote (../shared/fixtures/claude-code),
replayed file by file, line by line, into a temporary home, for a real process."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest
from claude_fixture import FIRST, FIXTURES, HOME, PROJECT_DIR, SECOND, SUBAGENT
from conftest import Agents, fake_agent, wait_until

from quintd.model import AgentProcess, ConversationFacts
from quintd.procfs import start_ticks as linux_start_ticks
from quintd.scanner import Scanner
from quintd.sources.claude_code import ClaudeCodeState, project_dir_name
from quintd.sources.manager import SourceManager
from quintd.sources.spec import ReaderContext


class Replay:
    """A temporary ~/.claude filled step by step from the fixtures."""

    def __init__(self, root: Path, pid: int) -> None:
        self.root = root
        self.pid = pid
        self.clock = 0.0
        self.state = ClaudeCodeState(root, ReaderContext(lambda: self.clock))
        (root / "sessions").mkdir(parents=True)
        self.project = root / "projects" / PROJECT_DIR
        self.project.mkdir(parents=True)

    def registry(self, snapshot: str, **changes: object) -> None:
        source = FIXTURES / "registry-snapshots" / snapshot
        data = json.loads(source.read_text())
        data.update({"pid": self.pid, "procStart": linux_start_ticks(self.pid), **changes})
        path = self.root / "sessions" / f"{self.pid}.json"
        path.write_text(json.dumps(data))
        self.state.changed(path)

    def lines(self, relative: str, start: int, stop: int | None = None) -> None:
        """Append lines [start:stop] of a fixture transcript to its copy."""
        source = HOME / "projects" / PROJECT_DIR / relative
        target = self.project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        chosen = source.read_text().splitlines(keepends=True)[start:stop]
        with open(target, "a") as fh:
            fh.writelines(chosen)
        self.clock += 1.0
        self.state.changed(target)

    def copy(self, relative: str) -> None:
        target = self.project / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(HOME / "projects" / PROJECT_DIR / relative, target)
        self.state.changed(target)

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        return self.state.facts(proc)


def _lines(relative: str) -> list[dict]:
    return [json.loads(line) for line in (HOME / "projects" / PROJECT_DIR / relative).open()]


def _index(relative: str, kind: str) -> int:
    return next(i for i, r in enumerate(_lines(relative)) if r.get("type") == kind)


@pytest.fixture
def claude(agents: Agents) -> AgentProcess:
    proc = agents.binary("claude")
    return wait_until(
        lambda: next((a for a in Scanner().scan() if a.pid == proc.pid), None),
        what="the claude process",
    )


def test_fixture_story_replayed(tmp_path: Path, claude: AgentProcess) -> None:
    replay = Replay(tmp_path / ".claude", claude.pid)
    assert replay.facts(claude) is None  # no registry yet

    replay.registry("session-busy.json")
    facts = replay.facts(claude)
    assert facts is not None
    assert (facts.native_id, facts.status) == (FIRST, "busy")
    assert facts.name is None  # "shop-api-94" is derived: the project name says as much
    assert facts.model is None and facts.last_write is None

    transcript = f"{FIRST}.jsonl"
    first_assistant = _index(transcript, "assistant")
    replay.lines(transcript, 0, first_assistant + 1)
    facts = replay.facts(claude)
    assert facts is not None
    assert facts.name == "Fix auth middleware token expiry"  # ai-title
    assert facts.model == "claude-opus-4-8"
    assert facts.last_write == 1.0

    replay.registry("session-idle.json")
    assert replay.facts(claude).status == "idle"  # type: ignore[union-attr]

    custom = _index(transcript, "custom-title")
    replay.lines(transcript, first_assistant + 1, custom + 1)
    replay.registry("session-renamed.json")
    facts = replay.facts(claude)
    assert facts is not None and facts.name == "Token expiry fix"  # custom over ai-title
    assert facts.last_write == 1.0  # a turn's end and a rename are no work (no `active`)

    # Delegation: the Agent tool_use, then the sub-agent's files, then its result.
    tool_use = next(
        i
        for i, r in enumerate(_lines(transcript))
        if r.get("type") == "assistant"
        and "tool_use" in json.dumps(r)
        and '"Agent"' in json.dumps(r)
    )
    replay.lines(transcript, custom + 1, tool_use + 1)
    replay.copy(f"{FIRST}/subagents/agent-{SUBAGENT}.meta.json")
    replay.lines(f"{FIRST}/subagents/agent-{SUBAGENT}.jsonl", 0, 2)
    facts = replay.facts(claude)
    assert facts is not None
    [sub] = facts.subagents
    assert (sub.agent_id, sub.name, sub.done) == (SUBAGENT, "sub task", False)
    assert sub.last_write is None  # what was there at first sight is history
    replay.lines(f"{FIRST}/subagents/agent-{SUBAGENT}.jsonl", 2)
    assert replay.facts(claude).subagents[0].last_write == replay.clock  # type: ignore[union-attr]
    replay.lines(transcript, tool_use + 1)  # the tool_result: the sub-agent is done
    facts = replay.facts(claude)
    assert facts is not None and facts.subagents[0].done is True

    # /clear: the registry names a new conversation.
    replay.registry("session-after-clear.json")
    replay.lines(f"{SECOND}.jsonl", 0)
    facts = replay.facts(claude)
    assert facts is not None
    assert facts.native_id == SECOND
    assert facts.name == "Token expiry fix"  # carried into the new transcript
    assert facts.subagents == ()
    assert replay.state.stats.garbage == 0


def test_stale_registry_is_ignored(tmp_path: Path, claude: AgentProcess) -> None:
    replay = Replay(tmp_path / ".claude", claude.pid)
    replay.registry("session-busy.json", procStart="12345")  # another process's start
    assert replay.facts(claude) is None
    replay.registry("session-busy.json")
    assert replay.facts(claude) is not None
    # The fixture's own file: pid 8262, long dead (or someone else) here.
    shutil.copy(HOME / "sessions" / "8262.json", replay.root / "sessions" / "8262.json")
    ghost = AgentProcess(
        platform="claude-code",
        pid=8262,
        ppid=1,
        start_time=claude.start_time,
        user=None,
        exe=None,
        cwd=None,
        name="claude",
        matched_by="name",
    )
    assert replay.facts(ghost) is None


def test_garbage_and_truncated_lines(tmp_path: Path, claude: AgentProcess) -> None:
    replay = Replay(tmp_path / ".claude", claude.pid)
    replay.registry("session-busy.json")
    path = replay.project / f"{FIRST}.jsonl"
    ai_title = (HOME / "projects" / PROJECT_DIR / f"{FIRST}.jsonl").read_text().splitlines()[0]
    half = len(ai_title) // 2
    with open(path, "w") as fh:
        fh.write("this is not json\n[1, 2, 3]\n\x00\xff garbage\n")
        fh.write(ai_title[:half])  # a write caught half way: no newline yet
    replay.state.changed(path)
    facts = replay.facts(claude)
    assert facts is not None and facts.name is None
    assert replay.state.stats.garbage == 3
    with open(path, "a") as fh:
        fh.write(ai_title[half:] + "\n")
    replay.state.changed(path)
    assert replay.facts(claude).name == "Fix auth middleware token expiry"  # type: ignore[union-attr]
    # A registry caught half rewritten is skipped and counted; the last good one holds
    # until the write completes.
    registry = replay.root / "sessions" / f"{claude.pid}.json"
    good = registry.read_text()
    registry.write_text(good[: len(good) // 2])
    replay.state.changed(registry)
    facts = replay.facts(claude)
    assert facts is not None and facts.native_id == FIRST
    assert replay.state.stats.garbage == 4
    # Garbage from the start is no registry at all.
    other = Replay(tmp_path / "other", claude.pid)
    (other.root / "sessions" / f"{claude.pid}.json").write_text("{not json")
    assert other.facts(claude) is None
    assert other.state.stats.garbage == 1


def test_symlink_out_of_the_state_dir_is_refused(tmp_path: Path, claude: AgentProcess) -> None:
    replay = Replay(tmp_path / ".claude", claude.pid)
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"pid": claude.pid, "sessionId": "x"}))
    (replay.root / "sessions" / f"{claude.pid}.json").symlink_to(outside)
    assert replay.facts(claude) is None
    assert replay.state.stats.refused == 1


def test_project_dir_name() -> None:
    assert project_dir_name("/home/dev/src/shop-api") == PROJECT_DIR
    assert project_dir_name("/a b/c.d_e") == "-a-b-c-d-e"


def test_manager_finds_state_from_the_process_environment_and_watches_it(
    tmp_path: Path, agents: Agents
) -> None:
    """The real path: HOME from the agent's own environment, changes seen by watchdog."""
    home = tmp_path / "home"
    root = home / ".claude"
    (root / "sessions").mkdir(parents=True)
    fake_agent(tmp_path / "claude")
    proc = agents.spawn([str(tmp_path / "claude"), "600"], env=dict(os.environ, HOME=str(home)))
    scanner = Scanner()
    agent = wait_until(
        lambda: next((a for a in scanner.scan() if a.pid == proc.pid), None), what="claude"
    )
    manager = SourceManager()
    try:
        facts, pending = manager.observe([agent])
        assert facts == {} and pending == {agent.pid}  # young, and its state dir exists
        data = json.loads((FIXTURES / "registry-snapshots" / "session-busy.json").read_text())
        data.update(pid=agent.pid, procStart=linux_start_ticks(agent.pid))
        (root / "sessions" / f"{agent.pid}.json").write_text(json.dumps(data))
        facts = wait_until(lambda: manager.observe([agent])[0], what="registry via watchdog")
        assert facts[agent.pid].native_id == FIRST
        data["status"] = "idle"
        (root / "sessions" / f"{agent.pid}.json").write_text(json.dumps(data))
        wait_until(
            lambda: manager.observe([agent])[0][agent.pid].status == "idle",
            what="status change via watchdog",
        )
        assert manager.stats()["watched_dirs"] >= 1
    finally:
        manager.close()


@pytest.mark.parametrize("late", [False, True])
def test_first_run_one_session_from_the_first_event(
    tmp_path: Path, agents: Agents, late: bool
) -> None:
    """Claude Code's first run on a machine: no ~/.claude yet when the process starts.
    Whether its registry appears within the grace period (the first event names the
    conversation) or after it (the process was announced: the conversation takes that
    session over), the launch is one session, never one ended seconds later."""
    from datetime import UTC, datetime

    from quintd.tracker import SessionTracker

    home = tmp_path / "home"
    home.mkdir()
    fake_agent(tmp_path / "claude")
    proc = agents.spawn([str(tmp_path / "claude"), "600"], env=dict(os.environ, HOME=str(home)))
    agent = wait_until(
        lambda: next((a for a in Scanner().scan() if a.pid == proc.pid), None), what="claude"
    )
    wall = [agent.start_time + 0.5]

    class Clock:
        def wall(self) -> datetime:
            return datetime.fromtimestamp(wall[0], UTC)

        def monotonic(self) -> float:
            return wall[0]

    manager = SourceManager(clock=lambda: wall[0], wall=lambda: wall[0])
    tracker = SessionTracker("0" * 32, idle_after=3600, clock=Clock())
    events = []
    try:
        events += tracker.observe([agent], *manager.observe([agent])).events
        assert events == []  # young, and Claude Code writes its registry as it starts
        if late:
            wall[0] += 5.0  # the grace is over: announced as its process
            events += tracker.observe([agent], *manager.observe([agent])).events
            assert [e.state for e in events] == ["active"]
        root = home / ".claude"
        (root / "sessions").mkdir(parents=True)  # the first run creates it all
        data = json.loads((FIXTURES / "registry-snapshots" / "session-busy.json").read_text())
        data.update(pid=agent.pid, procStart=linux_start_ticks(agent.pid))
        (root / "sessions" / f"{agent.pid}.json").write_text(json.dumps(data))
        for _ in range(3):
            wall[0] += 1.0
            facts, pending = wait_until(
                lambda: (found := manager.observe([agent]))[0] and found, what="the registry"
            )
            events += tracker.observe([agent], facts, pending).events
        assert [e.state for e in events] == ["active"]  # one session, never ended
        [session] = tracker.sessions
        assert session.session_id == events[0].session_id and session.native_id == FIRST
    finally:
        manager.close()


# -- the finer points (written for the survivors of the mutation run) -----------------------


def _append(replay: Replay, records: list[dict]) -> None:
    """Append records to the first conversation's transcript, one pass later."""
    path = replay.project / f"{FIRST}.jsonl"
    with open(path, "a") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in records)
    replay.clock += 1.0
    replay.state.changed(path)


def _user(content: object, **extra: object) -> dict:
    return {"type": "user", "message": {"role": "user", "content": content}, **extra}


def test_the_registry_name_unless_derived_and_without_a_cwd(
    tmp_path: Path, claude: AgentProcess
) -> None:
    replay = Replay(tmp_path / ".claude", claude.pid)
    replay.registry("session-renamed.json", cwd=None)  # no cwd: no transcript to look for
    facts = replay.facts(claude)
    assert facts is not None
    assert (facts.native_id, facts.status, facts.name) == (FIRST, "idle", "Token expiry fix")
    assert facts.owner_uid == os.getuid()
    replay.registry("session-renamed.json")  # a transcript with no title yet
    _append(replay, [_user("hi")])
    facts = replay.facts(claude)
    assert facts is not None and facts.name == "Token expiry fix"
    replay.registry("session-renamed.json", nameSource="derived")
    assert replay.facts(claude).name is None  # type: ignore[union-attr]


def test_which_records_are_work(tmp_path: Path, claude: AgentProcess) -> None:
    """After the first read, an answer or a prompt is work (last_write moves); a slash
    command, a meta record, a title or a rename is not."""
    replay = Replay(tmp_path / ".claude", claude.pid)
    replay.registry("session-busy.json")
    _append(replay, [_user("first prompt")])
    assert replay.facts(claude).last_write is None  # type: ignore[union-attr]  # history
    for record, work in [
        ({"type": "assistant", "message": {"model": "claude-x"}}, True),
        (_user("<command-name>/model</command-name>"), False),
        (_user("  <local-command-stdout>ok</local-command-stdout>"), False),
        (_user("a prompt", isMeta=True), False),
        ({"type": "custom-title", "customTitle": "Renamed"}, False),
        (_user("another prompt"), True),
        (_user([{"type": "tool_result", "tool_use_id": "t1", "content": "ok"}]), True),
    ]:
        before = replay.facts(claude).last_write  # type: ignore[union-attr]
        _append(replay, [record])
        after = replay.facts(claude).last_write  # type: ignore[union-attr]
        assert after == (replay.clock if work else before), record


def test_a_summary_names_the_conversation_and_a_bad_one_keeps_it(
    tmp_path: Path, claude: AgentProcess
) -> None:
    replay = Replay(tmp_path / ".claude", claude.pid)
    replay.registry("session-busy.json")
    _append(replay, [{"type": "summary", "summary": "Token work"}])
    assert replay.facts(claude).name == "Token work"  # type: ignore[union-attr]
    _append(replay, [{"type": "summary", "summary": 7}, {"type": "summary"}])
    assert replay.facts(claude).name == "Token work"  # type: ignore[union-attr]
    _append(replay, [{"type": "ai-title", "aiTitle": "Generated"}])
    assert replay.facts(claude).name == "Generated"  # type: ignore[union-attr]
    assert replay.state.stats.garbage == 0


def _with_subagent(replay: Replay, tool_use_id: str) -> None:
    subagents = replay.project / FIRST / "subagents"
    subagents.mkdir(parents=True)
    meta = {"agentType": "general-purpose", "toolUseId": tool_use_id}
    (subagents / "agent-a1.meta.json").write_text(json.dumps(meta))
    (subagents / "agent-a1.jsonl").write_text(json.dumps(_user("sub task")) + "\n")
    replay.state.changed(subagents)


def test_a_subagent_is_busy_while_its_parent_waits_for_it(
    tmp_path: Path, claude: AgentProcess
) -> None:
    replay = Replay(tmp_path / ".claude", claude.pid)
    replay.registry("session-busy.json")
    _append(replay, [_user("delegate")])
    _with_subagent(replay, "toolu_1")
    [sub] = replay.facts(claude).subagents  # type: ignore[union-attr]
    assert (sub.name, sub.done, sub.status) == ("general-purpose", False, "busy")
    replay.registry("session-idle.json")  # the parent waits for the user: not for it
    [sub] = replay.facts(claude).subagents  # type: ignore[union-attr]
    assert (sub.done, sub.status) == (False, None)
    replay.registry("session-busy.json")
    # Odd content (a string, a non-dict item, another kind of item) is no result, and no
    # garbage either.
    _append(
        replay,
        [
            {"type": "user", "message": "not a message"},
            {"type": "user", "message": {"content": 5}},
            _user(
                ["text", {"type": "text", "text": "x"}, {"type": "text", "tool_use_id": "toolu_1"}]
            ),
            _user([{"type": "tool_result", "tool_use_id": 7}]),
        ],
    )
    [sub] = replay.facts(claude).subagents  # type: ignore[union-attr]
    assert (sub.done, sub.status) == (False, "busy")
    assert replay.state.stats.garbage == 0
    _append(replay, [_user([{"type": "tool_result", "tool_use_id": "toolu_1"}])])
    [sub] = replay.facts(claude).subagents  # type: ignore[union-attr]
    assert (sub.done, sub.status) == (True, None)  # its result is in: done, busy or not


@pytest.mark.parametrize(("length", "done"), [(256, True), (257, False)])
def test_a_tool_use_id_is_capped_at_256(
    tmp_path: Path, claude: AgentProcess, length: int, done: bool
) -> None:
    """An id past the cap is cut, and so never matches a result: such a sub-agent is never
    called done (its own writes still count)."""
    replay = Replay(tmp_path / ".claude", claude.pid)
    replay.registry("session-busy.json")
    tool_id = "t" * length
    _append(replay, [_user("delegate")])
    _with_subagent(replay, tool_id)
    _append(replay, [_user([{"type": "tool_result", "tool_use_id": tool_id}])])
    [sub] = replay.facts(claude).subagents  # type: ignore[union-attr]
    assert sub.done is done
