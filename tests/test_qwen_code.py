"""Qwen Code, as the real CLI behaved (``../shared/fixtures/qwen-code``, Qwen Code 0.24.4):
every recorded step replayed in order with its process tree (tests/replay.py), the exact
events asserted; then the reader alone against the same files, changed the ways a real
machine changes them (stale registries, two agents in one project, garbage, links), and a
real wrapper -> child process pair watched through watchdog.

The story: start (the registry names the conversation at once), a prompt, a tool running, a
background sub-agent, ``/rename``, ``/clear`` (a new conversation in the same process), a
prompt, ``/quit``.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from conftest import Agents, fake_agent, needs_fixtures, wait_until
from replay import MACHINE, Rec, Replay, at_size, files_txt, load_processes, story

from quintd.identity import native_session_id
from quintd.model import AgentProcess, ConversationFacts
from quintd.procfs import start_ticks
from quintd.scanner import Scanner
from quintd.sources import pid_registry, qwen_code
from quintd.sources.manager import SourceManager
from quintd.sources.processes import LiveProcesses, TcpSocket
from quintd.sources.qwen_code import SPEC, QwenCodeState, project_dir_name
from quintd.sources.spec import ReaderContext
from quintd.sources.times import parse_time as epoch

FIXTURES = needs_fixtures("qwen-code")
PROJECT = "/home/dev2/src/shop-api"
PROJECT_DIR = "-home-dev2-src-shop-api"
CHATS = f".qwen/projects/{PROJECT_DIR}/chats"
FIRST = "aebdaf8d-8bce-4c41-99b2-61d18803bd0a"
SECOND = "31ebda36-01d0-4275-a161-3e455f1e07a8"
SUBAGENT = "general-purpose-call_1795923167839084151"
SUBAGENTS = f".qwen/projects/{PROJECT_DIR}/subagents/{FIRST}"
WRAPPER, CHILD = 17870, 17885  # node .../bin/qwen, and the node child it re-spawned
CHILD_TICKS = "276284"  # the child's start in clock ticks: the registry's procStart
# Not in the recording: the README's "started 03:32:31"; the child's first conversation
# began at 03:32:31.58 (its runtime.json), so it was running by then.
WRAPPER_START = 1795923151.0
CHILD_START = 1795923151.3

# step, recorded process tree (the snapshots without one ran the same three processes)
PLAN = [
    ("00-started", "00-started-idle"),
    ("01-first-prompt-busy", "01-first-prompt-busy"),
    ("02-first-prompt-idle", "01-first-prompt-busy"),
    ("03-tool-running", "03-tool-running"),
    ("04-subagent-running", "04-subagent-running"),
    ("05-subagent-done", "01-first-prompt-busy"),
    ("06-renamed", "01-first-prompt-busy"),
    ("07-after-clear", "01-first-prompt-busy"),
    ("08-second-conversation-idle", "08-second-conversation-idle"),
    ("09-after-quit", "09-after-quit"),
]
READ = (".qwen/sessions/", ".qwen/projects/")  # what the reader looks at


def lay_out(step: str, home: Path) -> None:
    """~/.qwen as it stood at a step: the snapshot's files over the previous step's; where
    the snapshot lists every file (files.txt), the others removed and the missing ones cut
    from the final files (they only grew)."""
    snapshot = FIXTURES / "snapshots" / step
    if (snapshot / "home").is_dir():
        shutil.copytree(snapshot / "home", home, dirs_exist_ok=True)
    listing = snapshot / "files.txt"
    if not listing.exists():
        return
    listed = {rel: size for rel, (size, _mod) in files_txt(listing).items()}
    for path in list(home.rglob("*")):
        rel = str(path.relative_to(home))
        if path.is_file() and rel.startswith(READ) and rel not in listed:
            path.unlink()
    for rel, size in listed.items():
        final = FIXTURES / "home" / rel
        target = home / rel
        taken = (snapshot / "home" / rel).exists()
        if rel.startswith(READ) and final.exists() and not taken and _size(target) != size:
            at_size(final, target, size)


def _size(path: Path) -> int | None:
    return path.stat().st_size if path.exists() else None


def latest_time(home: Path) -> float:
    """The newest moment the files carry: when that step was taken."""
    latest = 0.0
    for path in (home / ".qwen").rglob("*.jsonl"):
        for line in path.read_text().splitlines():
            moment = epoch(json.loads(line).get("timestamp"))
            latest = max(latest, moment or 0.0)
    for path in (home / ".qwen" / "sessions").glob("*.json"):
        latest = max(latest, json.loads(path.read_text())["startedAt"] / 1000)
    return latest


def recorded(tree: str) -> list[Rec]:
    recs = load_processes(
        FIXTURES / "processes" / f"{tree}.json", {WRAPPER: WRAPPER_START, CHILD: CHILD_START}
    )
    for rec in recs:
        if rec.pid == CHILD:
            rec.start_ticks = CHILD_TICKS  # what /proc/<pid>/stat said (as procStart)
    return recs


MIDDLE = 17880  # npm's shim layout: the process between the wrapper and the registry's


def through_npm_shim(recs: list[Rec]) -> list[Rec]:
    """The same tree as npm's ``node_modules/.bin/qwen`` runs it (seen here, Qwen Code
    0.24.4): ``cli-entry.js`` starts ``node --expose-gc cli.js``, which relaunches itself,
    so the process the registry names is the wrapper's grandchild."""
    out = []
    for rec in recs:
        if rec.pid == WRAPPER:
            out.append(
                replace(
                    rec,
                    argv=["node", "/home/dev2/src/shop-api/node_modules/.bin/qwen"],
                )
            )
            out.append(
                replace(
                    rec,
                    pid=MIDDLE,
                    ppid=WRAPPER,
                    argv=[
                        "/home/dev2/.nvm/versions/node/v22.23.5/bin/node",
                        "--expose-gc",
                        "/home/dev2/src/shop-api/node_modules/@qwen-code/qwen-code/cli.js",
                    ],
                    start_time=rec.start_time + 0.1,
                )
            )
        elif rec.ppid == WRAPPER:
            out.append(replace(rec, ppid=MIDDLE))
        else:
            out.append(rec)
    return out


def replay_story(
    home: Path,
    restart_after: str | None = None,
    idle_after: float = 3600.0,
    layout: Callable[[list[Rec]], list[Rec]] = lambda recs: recs,
) -> tuple[Replay, dict[str, Any]]:
    replay = Replay(home, WRAPPER_START, idle_after=idle_after, readers=(SPEC,))
    seen: dict[str, Any] = {}
    at = WRAPPER_START
    for step, tree in PLAN:
        lay_out(step, home)
        at = max(at + 1.0, latest_time(home) + 0.5)
        replay.step(layout(recorded(tree)), at)
        facts, _ = replay.sources.observe(replay.agents)
        seen[step] = facts.get(WRAPPER)
        if step == restart_after:
            replay.restart()
    return replay, seen


@pytest.mark.parametrize(
    ("restart_after", "layout"),
    [
        (None, "bin/qwen is cli.js"),
        ("02-first-prompt-idle", "bin/qwen is cli.js"),
        ("04-subagent-running", "bin/qwen is cli.js"),
        ("07-after-clear", "bin/qwen is cli.js"),
        (None, "npm's .bin/qwen is cli-entry.js"),
        ("04-subagent-running", "npm's .bin/qwen is cli-entry.js"),
    ],
)
def test_qwen_start_prompt_tool_subagent_rename_clear_quit(
    tmp_path: Path, restart_after: str | None, layout: str
) -> None:
    """With a restart of quintd in the middle, nothing changes: same ids, same events. In
    either install layout: the registry's process is the wrapper's child, or (npm's shim)
    its grandchild."""
    replay, _ = replay_story(
        tmp_path / "home",
        restart_after,
        layout=through_npm_shim if layout.startswith("npm") else lambda recs: recs,
    )
    assert story(replay.events) == [
        ("s1", "active", "shop-api", None, None),  # at start-up: the registry names it
        ("s1", "active", "shop-api", "qwen3-coder-plus", None),  # the model answered
        ("s2", "active", "Survey the project", "qwen3-coder-plus", "s1"),  # the sub-agent
        ("s2", "ended", "Survey the project", "qwen3-coder-plus", "s1"),  # it completed
        ("s1", "active", "Token expiry fix", "qwen3-coder-plus", None),  # /rename
        ("s3", "active", "shop-api", None, None),  # /clear: a new conversation
        ("s1", "ended", "Token expiry fix", "qwen3-coder-plus", None),
        ("s3", "active", "shop-api", "qwen3-coder-plus", None),  # its first answer
        ("s3", "ended", "shop-api", "qwen3-coder-plus", None),  # /quit
    ]
    uid = os.getuid()
    ids = [
        native_session_id(MACHINE, "qwen-code", FIRST, uid=uid),
        native_session_id(MACHINE, "qwen-code", FIRST, SUBAGENT, uid=uid),
        native_session_id(MACHINE, "qwen-code", SECOND, uid=uid),
    ]
    assert list(dict.fromkeys(e.session_id for e in replay.events)) == ids
    assert {a.pid for a in replay.agents} == set()  # all gone after /quit
    assert replay.sources.stats()["garbage_lines"] == 0
    assert replay.sources.stats()["errors"] == 0


def test_qwen_busy_and_idle_from_the_last_records(tmp_path: Path) -> None:
    _, seen = replay_story(tmp_path / "home")
    statuses = {step: getattr(found, "status", None) for step, found in seen.items()}
    assert statuses == {
        "00-started": "idle",  # waiting for the first prompt
        "01-first-prompt-busy": "busy",  # a prompt, no answer yet
        "02-first-prompt-idle": "idle",  # an answer with text
        "03-tool-running": "busy",  # an answer calling a tool, no result yet
        "04-subagent-running": "busy",  # the prompt that delegates, no answer yet
        "05-subagent-done": "idle",  # the answer to the sub-agent's notification
        "06-renamed": "idle",  # /rename is no turn
        "07-after-clear": "idle",  # the new conversation waits for its first prompt
        "08-second-conversation-idle": "idle",
        "09-after-quit": None,  # no process
    }
    running = seen["04-subagent-running"]
    assert isinstance(running, ConversationFacts)
    [sub] = running.subagents
    assert (sub.agent_id, sub.name, sub.done, sub.status, sub.model) == (
        SUBAGENT,
        "Survey the project",
        False,
        "busy",
        "qwen3-coder-plus",
    )
    done = seen["05-subagent-done"]
    assert isinstance(done, ConversationFacts) and done.subagents[0].done


def test_qwen_goes_idle_when_quiet_and_active_when_its_transcript_grows(tmp_path: Path) -> None:
    """With a short idle_after, the quiet between steps shows: a busy status or a growing
    transcript is work; an idle status and no growth is quiet."""
    home = tmp_path / "home"
    replay = Replay(home, WRAPPER_START, idle_after=5.0, readers=(SPEC,))
    lay_out("00-started", home)
    start = latest_time(home) + 0.5
    replay.step(recorded("00-started-idle"), start)
    assert [e.state for e in replay.advance(10.0)] == ["idle"]  # no prompt yet
    lay_out("01-first-prompt-busy", home)
    assert [e.state for e in replay.advance(1.0)] == ["active"]  # the transcript came
    assert replay.advance(10.0) == []  # busy: the model owes an answer
    lay_out("02-first-prompt-idle", home)
    assert [(e.state, e.model) for e in replay.advance(1.0)] == [("active", "qwen3-coder-plus")]
    assert [e.state for e in replay.advance(10.0)] == ["idle"]


# -- the reader alone ---------------------------------------------------------------------


class View:
    """A ProcessView of made-up processes: children and start ticks."""

    def __init__(self) -> None:
        self.kids: dict[int, list[int]] = {}
        self.ticks: dict[int, str] = {}
        self.calls: list[str] = []

    def uid(self, pid: int) -> int | None:
        return os.getuid()

    def environ(self, pid: int) -> dict[str, str] | None:
        return {}

    def start_ticks(self, pid: int) -> str | None:
        self.calls.append(f"start_ticks {pid}")
        return self.ticks.get(pid)

    def exe(self, pid: int) -> str | None:
        return None

    def argv(self, pid: int) -> list[str]:
        return []

    def children(self, pid: int) -> list[int]:
        self.calls.append(f"children {pid}")
        return list(self.kids.get(pid, []))

    def open_files(self, pid: int) -> set[str]:
        return set()

    def tcp(self, pid: int) -> list[TcpSocket]:
        return []


def agent(pid: int, start: float = WRAPPER_START) -> AgentProcess:
    return AgentProcess(
        platform="qwen-code",
        pid=pid,
        ppid=1,
        start_time=start,
        user="dev",
        exe="/usr/bin/node",
        cwd=PROJECT,
        name="node",
        matched_by="script",
        uid=os.getuid(),
    )


class Reader:
    """A QwenCodeState over a temporary ~/.qwen, with a settable clock."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.now = 100.0
        self.view = View()
        self.state = QwenCodeState(root, ReaderContext(lambda: self.now, self.view))
        (root / "sessions").mkdir(parents=True, exist_ok=True)
        self.chats = root / "projects" / PROJECT_DIR / "chats"
        self.chats.mkdir(parents=True, exist_ok=True)

    def registry(self, file_pid: int, session_id: object = FIRST, **changes: object) -> Path:
        """sessions/<pid>.json: the fixture's registry, with changes (``pid=`` too)."""
        source = FIXTURES / "snapshots" / "00-started" / "home" / ".qwen" / "sessions"
        data = json.loads((source / f"{CHILD}.json").read_text())
        data.update({"pid": file_pid, "sessionId": session_id})
        data.update(changes)
        path = self.root / "sessions" / f"{file_pid}.json"
        path.write_text(json.dumps(data))
        self.state.changed(path)
        return path

    def lines(self, session_id: str, start: int, stop: int | None = None) -> Path:
        """Append lines [start:stop] of the final transcript to its copy."""
        source = FIXTURES / "home" / CHATS / f"{session_id}.jsonl"
        target = self.chats / f"{session_id}.jsonl"
        with open(target, "a") as fh:
            fh.writelines(source.read_text().splitlines(keepends=True)[start:stop])
        self.state.changed(target)
        return target

    def facts(self, proc: AgentProcess) -> ConversationFacts | None:
        self.state.prepare([proc])
        return self.state.facts(proc)


def _records(session_id: str) -> list[dict[str, Any]]:
    path = FIXTURES / "home" / CHATS / f"{session_id}.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()]


def _index(session_id: str, kind: str, subtype: str | None = None) -> int:
    return next(
        i
        for i, r in enumerate(_records(session_id))
        if r["type"] == kind and r.get("subtype") == subtype
    )


def test_the_registry_of_the_re_spawned_child_names_the_wrappers_conversation(
    tmp_path: Path,
) -> None:
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    reader.view.ticks[CHILD] = CHILD_TICKS
    assert reader.facts(wrapper) is None  # no registry yet
    reader.registry(CHILD)
    facts = reader.facts(wrapper)
    assert facts is not None
    assert (facts.native_id, facts.status, facts.name, facts.model) == (FIRST, "idle", None, None)
    assert facts.owner_uid == os.getuid()
    # The registry's own name ("shop-api-57") is derived from the directory: never a title.
    reader.lines(FIRST, 0, _index(FIRST, "assistant") + 1)
    facts = reader.facts(wrapper)
    assert facts is not None
    assert (facts.status, facts.model, facts.name) == ("idle", "qwen3-coder-plus", None)
    assert facts.last_write == reader.now  # the transcript appeared after the first look


def test_no_relaunch_the_registry_is_the_process_own(tmp_path: Path) -> None:
    """With QWEN_CODE_NO_RELAUNCH set by the user there is one process: it is the agent."""
    reader = Reader(tmp_path / ".qwen")
    reader.view.ticks[CHILD] = CHILD_TICKS
    reader.registry(CHILD)
    facts = reader.facts(agent(CHILD))
    assert facts is not None and facts.native_id == FIRST


def test_stale_and_foreign_registries_are_ignored(tmp_path: Path) -> None:
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    reader.view.ticks[CHILD] = "999999"  # the pid was reused: another process's start
    reader.registry(CHILD)  # left by a crash of the first one
    assert reader.facts(wrapper) is None
    # Another qwen's registry, for a pid that is not this wrapper's child.
    reader.view.ticks[4242] = CHILD_TICKS
    reader.registry(4242, SECOND, procStart=f"boot:{CHILD_TICKS}")
    assert reader.facts(wrapper) is None
    # A registry whose pid field names another process: garbage.
    reader.view.ticks[CHILD] = CHILD_TICKS
    reader.registry(CHILD, pid=1)
    assert reader.facts(wrapper) is None
    assert reader.state.stats.garbage == 1
    # A later format of the record: skipped (not garbage), as the protocol asks.
    reader.registry(CHILD, schemaVersion=2)
    assert reader.facts(wrapper) is None
    assert reader.state.stats.garbage == 1
    # The real one at last.
    reader.registry(CHILD, procStart=f"eae19e95-ad47-4f05-81c5-e1570a918339:{CHILD_TICKS}")
    facts = reader.facts(wrapper)
    assert facts is not None and facts.native_id == FIRST


def test_two_agents_in_one_project_each_run_their_own(tmp_path: Path) -> None:
    reader = Reader(tmp_path / ".qwen")
    first, second = agent(WRAPPER), agent(20000, WRAPPER_START + 30)
    reader.view.kids = {WRAPPER: [CHILD], 20000: [20001]}
    reader.view.ticks = {CHILD: CHILD_TICKS, 20001: "280000"}
    reader.registry(CHILD)
    reader.registry(20001, SECOND, procStart="eae19e95:280000")
    reader.lines(FIRST, 0)
    reader.lines(SECOND, 0)
    reader.state.prepare([first, second])
    one, two = reader.state.facts(first), reader.state.facts(second)
    assert one is not None and two is not None
    assert (one.native_id, one.name) == (FIRST, "Token expiry fix")
    assert (two.native_id, two.name) == (SECOND, None)


def test_clear_names_the_new_conversation_and_the_old_one_is_forgotten(tmp_path: Path) -> None:
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    reader.view.ticks[CHILD] = CHILD_TICKS
    reader.registry(CHILD)
    reader.lines(FIRST, 0)
    assert reader.facts(wrapper).name == "Token expiry fix"  # type: ignore[union-attr]
    reader.registry(CHILD, SECOND)  # /clear rewrites it
    facts = reader.facts(wrapper)
    assert facts is not None and (facts.native_id, facts.name) == (SECOND, None)
    reader.state.prepare([wrapper])
    assert set(reader.state._transcripts) == {SECOND}
    # A rewrite caught half way (or the deletion at exit) keeps the last good registry.
    (reader.root / "sessions" / f"{CHILD}.json").write_text("")
    reader.state.changed(reader.root / "sessions" / f"{CHILD}.json")
    assert reader.facts(wrapper).native_id == SECOND  # type: ignore[union-attr]
    reader.state.prepare([])  # the process is gone: nothing is kept
    assert not reader.state._transcripts and not reader.state._registries


def test_an_interrupted_turn_is_not_busy_forever(tmp_path: Path) -> None:
    """The last record is a prompt: busy, while the transcript grows; after
    BUSY_QUIET_S of silence nothing says so any more (the CPU decides)."""
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    reader.view.ticks[CHILD] = CHILD_TICKS
    reader.registry(CHILD)
    reader.lines(FIRST, 0, 1)
    assert reader.facts(wrapper).status == "busy"  # type: ignore[union-attr]
    reader.now += qwen_code.BUSY_QUIET_S - 1
    assert reader.facts(wrapper).status == "busy"  # type: ignore[union-attr]
    reader.now += 2
    assert reader.facts(wrapper).status is None  # type: ignore[union-attr]
    reader.lines(FIRST, 1, _index(FIRST, "assistant") + 1)
    assert reader.facts(wrapper).status == "idle"  # type: ignore[union-attr]


def _subagent_setup(reader: Reader, meta: dict[str, Any]) -> Path:
    directory = reader.root / "projects" / PROJECT_DIR / "subagents" / FIRST
    directory.mkdir(parents=True)
    source = FIXTURES / "home" / SUBAGENTS / f"agent-{SUBAGENT}"
    shutil.copy(source.with_suffix(".jsonl"), directory / f"agent-{SUBAGENT}.jsonl")
    data = json.loads(source.with_suffix(".meta.json").read_text())
    data.update(meta)
    (directory / f"agent-{SUBAGENT}.meta.json").write_text(json.dumps(data))
    reader.state.changed(directory)
    return directory


@pytest.mark.parametrize("how", ["notification", "foreground result"])
def test_a_subagent_is_done_when_the_transcript_says_so(tmp_path: Path, how: str) -> None:
    """Where the meta still says "running" (or has no final status), the completion
    notification, or for a foreground sub-agent the tool's result, ends it."""
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    reader.view.ticks[CHILD] = CHILD_TICKS
    reader.registry(CHILD)
    delegate = next(
        i
        for i, r in enumerate(_records(FIRST))
        if r["type"] == "assistant"
        and "functionCall" in json.dumps(r)
        and '"agent"' in json.dumps(r)
    )
    reader.lines(FIRST, 0, delegate + 1)
    foreground = how == "foreground result"
    _subagent_setup(reader, {"status": "running", "isBackgrounded": not foreground})
    facts = reader.facts(wrapper)
    assert facts is not None
    [sub] = facts.subagents
    assert (sub.agent_id, sub.done, sub.status) == (SUBAGENT, False, "busy")
    result = next(
        i for i, r in enumerate(_records(FIRST)) if i > delegate and r["type"] == "tool_result"
    )
    reader.lines(FIRST, delegate + 1, result + 1)
    assert reader.facts(wrapper).subagents[0].done is foreground  # type: ignore[union-attr]
    reader.lines(FIRST, result + 1, _index(FIRST, "user", "notification") + 1)
    assert reader.facts(wrapper).subagents[0].done is True  # type: ignore[union-attr]


def test_subagent_growth_is_work_and_its_stream_file_is_ignored(tmp_path: Path) -> None:
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    reader.view.ticks[CHILD] = CHILD_TICKS
    reader.registry(CHILD)
    reader.lines(FIRST, 0, 16)
    directory = reader.root / "projects" / PROJECT_DIR / "subagents" / FIRST
    directory.mkdir(parents=True)
    source = FIXTURES / "home" / SUBAGENTS / f"agent-{SUBAGENT}.jsonl"
    lines = source.read_text().splitlines(keepends=True)
    (directory / f"agent-{SUBAGENT}.jsonl").write_text(lines[0])
    (directory / f"agent-{SUBAGENT}.jsonl.stream").write_text('{"v":1}\n')
    reader.state.changed(directory)
    [sub] = reader.facts(wrapper).subagents  # type: ignore[union-attr]
    assert (sub.agent_id, sub.last_write, sub.done, sub.name) == (SUBAGENT, None, False, None)
    reader.now += 1
    with open(directory / f"agent-{SUBAGENT}.jsonl", "a") as fh:
        fh.writelines(lines[1:])
    reader.state.changed(directory / f"agent-{SUBAGENT}.jsonl")
    [sub] = reader.facts(wrapper).subagents  # type: ignore[union-attr]
    assert (sub.last_write, sub.model) == (reader.now, None)  # the model is in the meta only


def test_garbage_links_and_odd_files_never_break_the_reader(tmp_path: Path) -> None:
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    reader.view.ticks[CHILD] = CHILD_TICKS
    # A registry that is a link out of the state directory: refused.
    outside = tmp_path / "secret.json"
    outside.write_text(json.dumps({"pid": CHILD, "sessionId": FIRST, "cwd": PROJECT}))
    (reader.root / "sessions" / f"{CHILD}.json").symlink_to(outside)
    reader.state.changed(reader.root / "sessions" / f"{CHILD}.json")
    assert reader.facts(wrapper) is None
    assert reader.state.stats.refused == 1
    (reader.root / "sessions" / f"{CHILD}.json").unlink()
    # Session ids that would be paths, and registries that are not objects.
    for bad in ("../../etc/passwd", "a/b", "", 7):
        reader.registry(CHILD, bad)
        assert reader.facts(wrapper) is None
    (reader.root / "sessions" / f"{CHILD}.json").write_text("[1, 2]")
    reader.state.changed(reader.root / "sessions" / f"{CHILD}.json")
    assert reader.facts(wrapper) is None
    assert reader.state.stats.garbage == 5
    # A transcript with garbage lines and odd shapes among the real records.
    reader.registry(CHILD)
    target = reader.chats / f"{FIRST}.jsonl"
    real = (FIXTURES / "home" / CHATS / f"{FIRST}.jsonl").read_text().splitlines(keepends=True)
    odd = [
        "not json\n",
        "[1]\n",
        json.dumps({"type": "assistant", "model": {"x": 1}, "message": {"parts": "no"}}) + "\n",
        json.dumps({"type": "user", "subtype": "notification", "message": []}) + "\n",
        json.dumps({"type": "system", "subtype": "custom_title", "systemPayload": []}) + "\n",
        json.dumps({"type": "tool_result", "message": {"parts": [{"functionResponse": 3}]}}) + "\n",
        json.dumps(
            {
                "type": "system",
                "subtype": "custom_title",
                "systemPayload": {
                    "customTitle": "\u202eevil\x1b[31m  title\n",
                    "titleSource": "manual",
                },
            }
        )
        + "\n",
    ]
    target.write_text("".join(odd + real[:6]))
    reader.state.changed(target)
    facts = reader.facts(wrapper)
    assert facts is not None
    assert (facts.name, facts.model, facts.status) == ("evil[31m title", "qwen3-coder-plus", "idle")
    assert reader.state.stats.garbage == 5 + 2
    # A subagents entry that is a directory, or a link, where a file should be.
    directory = reader.root / "projects" / PROJECT_DIR / "subagents" / FIRST
    (directory / "agent-x.jsonl").mkdir(parents=True)
    (directory / "agent-y.meta.json").symlink_to(outside)
    reader.state.poll()
    facts = reader.facts(wrapper)
    assert facts is not None
    assert {s.agent_id for s in facts.subagents} == {"x", "y"}
    assert not any(s.name for s in facts.subagents)


def test_an_idle_agent_costs_no_reads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Once bound, a pass with nothing changed reads no file and asks /proc nothing."""
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    reader.view.ticks[CHILD] = CHILD_TICKS
    reader.registry(CHILD)
    reader.lines(FIRST, 0)
    assert reader.facts(wrapper) is not None
    opened: list[Path] = []
    real_open = pid_registry.read_json_file

    def counting(path: Path, root: Path, stats: Any) -> Any:
        opened.append(path)
        return real_open(path, root, stats)

    monkeypatch.setattr(pid_registry, "read_json_file", counting)
    reader.view.calls.clear()
    monkeypatch.setattr(os, "open", _refuse)
    for _ in range(5):
        assert reader.facts(wrapper) is not None
    assert opened == [] and reader.view.calls == []
    # A process with no registry asks again only after a registry changed.
    monkeypatch.undo()
    lone = agent(30000)
    reader.state.prepare([wrapper, lone])
    assert reader.state.facts(lone) is None
    reader.view.calls.clear()
    for _ in range(3):
        reader.state.prepare([wrapper, lone])
        assert reader.state.facts(lone) is None
    assert reader.view.calls == []


def _refuse(*args: object, **kwargs: object) -> int:
    raise AssertionError(f"opened {args[0]!r} in an idle pass")


def test_project_dir_name() -> None:
    assert project_dir_name(PROJECT) == PROJECT_DIR
    assert project_dir_name("/a b/c.d_e") == "-a-b-c-d-e"
    assert project_dir_name("/tmp/é/😀") == "-tmp---" + "--"  # UTF-16 units, as in node


def test_procstart_forms() -> None:
    assert pid_registry.proc_ticks("eae19e95-ad47-4f05-81c5-e1570a918339:276284") == "276284"
    assert pid_registry.proc_ticks("276284") == "276284"
    assert pid_registry.proc_ticks(276284) == "276284"
    for bad in ("x:y", ":", "1:2:3", True, -1, None, "a" * 100 + ":1"):
        assert pid_registry.proc_ticks(bad) is None


# -- real processes, watched ------------------------------------------------------------


@pytest.fixture
def wrapper_and_child(tmp_path: Path, agents: Agents) -> Iterator[tuple[int, Path]]:
    """A ``qwen`` script (its process is named after it) that starts a ``qwen`` binary as
    its child and waits, the way the node wrapper re-spawns the real CLI."""
    home = tmp_path / "home"
    (home / ".qwen").mkdir(parents=True)
    bindir, child_dir = tmp_path / "bin", tmp_path / "lib"
    bindir.mkdir()
    child_dir.mkdir()
    fake_agent(child_dir / "qwen")
    script = bindir / "qwen"
    script.write_text(f"#!/bin/sh\n{child_dir / 'qwen'} 600 &\nwait\n")
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    proc = agents.spawn([str(script)], cwd=tmp_path, env=dict(os.environ, HOME=str(home)))
    yield proc.pid, home


def test_real_wrapper_and_child_through_watchdog(
    tmp_path: Path, wrapper_and_child: tuple[int, Path]
) -> None:
    """The real path: the wrapper is the agent (its child folded into it), HOME from its
    environment, the child's registry found among its children, checked against the
    child's start in /proc, and changes seen by watchdog."""
    pid, home = wrapper_and_child
    scanner = Scanner()

    def found() -> AgentProcess | None:
        return next((a for a in scanner.scan() if a.pid == pid), None)

    wrapper = wait_until(found, what="the qwen wrapper")
    assert wrapper.platform == "qwen-code"
    child = wait_until(lambda: next(iter(LiveProcesses().children(pid)), None), what="the child")
    manager = SourceManager(readers=(SPEC,))
    try:
        facts, _ = manager.observe([wrapper])
        assert facts == {}
        root = home / ".qwen"
        (root / "sessions").mkdir()
        data = {
            "pid": child,
            "procStart": f"boot:{start_ticks(child)}",
            "sessionId": FIRST,
            "cwd": str(tmp_path),
            "startedAt": int(wrapper.start_time * 1000),
        }
        (root / "sessions" / f"{child}.json").write_text(json.dumps(data))
        facts = wait_until(lambda: manager.observe([wrapper])[0], what="registry via watchdog")
        assert facts[pid].native_id == FIRST  # type: ignore[union-attr]
        chats = root / "projects" / project_dir_name(str(tmp_path)) / "chats"
        chats.mkdir(parents=True)
        (chats / f"{FIRST}.jsonl").write_text(
            (FIXTURES / "home" / CHATS / f"{FIRST}.jsonl").read_text()
        )
        wait_until(
            lambda: (
                getattr(manager.observe([wrapper])[0].get(pid), "name", None) == "Token expiry fix"
            ),
            what="the transcript via watchdog",
        )
    finally:
        manager.close()


# -- the registry base's finer points (written for the survivors of the mutation run) ------


def _bound(tmp_path: Path) -> tuple[Reader, AgentProcess]:
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    reader.view.ticks[CHILD] = CHILD_TICKS
    reader.registry(CHILD)
    return reader, wrapper


def test_procstart_zero_is_a_start() -> None:
    assert pid_registry.proc_ticks(0) == "0"
    assert pid_registry.proc_ticks("boot:0") == "0"


@pytest.mark.parametrize(
    ("registry_pid", "started_at", "fresh"),
    [
        (WRAPPER, 0, True),  # startedAt within a minute of the agent's start
        (WRAPPER, 59_999, True),
        (WRAPPER, -59_999, True),
        (WRAPPER, 60_000, False),  # a minute off: a dead process's
        (WRAPPER, -60_000, False),
        (WRAPPER, None, True),  # nothing to tell: the process's own pid is its own
        (WRAPPER, True, True),  # not a time: as if absent
        (WRAPPER, "soon", True),
        (CHILD, None, False),  # a child's, with nothing to tell it from a stale one
        (CHILD, 0, True),
    ],
)
def test_without_procstart_startedat_tells_a_fresh_registry(
    tmp_path: Path, registry_pid: int, started_at: object, fresh: bool
) -> None:
    """Where the registry has no procStart (elsewhere than Linux, or an older version),
    startedAt (ms) within a minute of the agent's start says the registry is this
    process's; the start ticks /proc has for the pid (if any) are not asked."""
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    when = (
        wrapper.start_time_ms + started_at
        if isinstance(started_at, int) and not isinstance(started_at, bool)
        else started_at
    )
    reader.registry(registry_pid, procStart=None, startedAt=when)
    facts = reader.facts(wrapper)
    assert (facts is not None) is fresh
    assert reader.state.stats.garbage == 0


def test_what_is_polled_and_what_is_listed_once(tmp_path: Path) -> None:
    """Sub-agent files are listed once (then each one's own events, or its directory's,
    say what changed); poll() stands in for events: every known file looked at again."""
    reader, wrapper = _bound(tmp_path)
    assert reader.state.has_registry_dir()
    reader.lines(FIRST, 0, 16)
    assert reader.facts(wrapper).subagents == ()  # type: ignore[union-attr]
    directory = reader.root / "projects" / PROJECT_DIR / "subagents" / FIRST
    directory.mkdir(parents=True)
    source = FIXTURES / "home" / SUBAGENTS / f"agent-{SUBAGENT}.jsonl"
    lines = source.read_text().splitlines(keepends=True)
    (directory / f"agent-{SUBAGENT}.jsonl").write_text(lines[0])
    (directory / "agent-other.meta.json").write_text("{}")
    reader.state.changed(directory)  # the directory came
    facts = reader.facts(wrapper)
    assert facts is not None
    assert {s.agent_id for s in facts.subagents} == {SUBAGENT, "other"}
    (directory / "agent-late.meta.json").write_text("{}")  # no event for it
    reader.now += 1
    with open(directory / f"agent-{SUBAGENT}.jsonl", "a") as fh:
        fh.writelines(lines[1:])  # no event either
    facts = reader.facts(wrapper)
    assert facts is not None and {s.agent_id for s in facts.subagents} == {SUBAGENT, "other"}
    reader.state.poll()
    facts = reader.facts(wrapper)
    assert facts is not None
    assert {s.agent_id for s in facts.subagents} == {SUBAGENT, "other", "late"}
    [grown] = [s for s in facts.subagents if s.agent_id == SUBAGENT]
    assert grown.last_write == reader.now


def test_a_cleared_conversation_leaves_nothing_behind(tmp_path: Path) -> None:
    reader, wrapper = _bound(tmp_path)
    reader.lines(FIRST, 0)
    _subagent_setup(reader, {})
    assert reader.facts(wrapper) is not None
    reader.registry(CHILD, SECOND)  # /clear
    reader.lines(SECOND, 0)
    assert reader.facts(wrapper).native_id == SECOND  # type: ignore[union-attr]
    reader.state.prepare([wrapper])  # the next pass forgets what no process runs
    assert set(reader.state._by_path) == {reader.chats / f"{SECOND}.jsonl"}
    current = reader.state._transcripts[SECOND]
    assert all(c is current for c in reader.state._sub_dirs.values())


def test_registry_events_that_are_no_registry_cost_nothing(tmp_path: Path) -> None:
    """A process without a registry looks again after a registry changed: sessions/<pid>
    .json, a pid of fewer than 12 digits. Other names are no registry (and no crash)."""
    reader, wrapper = _bound(tmp_path)
    lone = agent(30000)
    reader.state.prepare([wrapper, lone])
    assert reader.state.facts(lone) is None
    reader.view.calls.clear()
    for name in ("abc.json", "123456789012.json", "٣.json", "1.txt"):
        reader.state.changed(reader.root / "sessions" / name)
        reader.state.prepare([wrapper, lone])
        assert reader.state.facts(lone) is None
    assert reader.view.calls == []
    reader.state.changed(reader.root / "sessions" / "12345678901.json")
    reader.state.prepare([wrapper, lone])
    assert reader.state.facts(lone) is None
    assert "children 30000" in reader.view.calls


def test_a_changed_registry_is_read_once_and_the_pass_tree_is_shared(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from quintd.sources.attribution import Pass

    reader, wrapper = _bound(tmp_path)
    reader.view.kids[CHILD] = []
    # Another reader already walked this pass's tree: this one walks it no more.
    now = Pass.of([wrapper], reader.view, lambda: reader.now)
    assert now.tree(WRAPPER) == [CHILD]
    reader.view.calls.clear()
    reader.state.prepare(now)
    assert reader.state.facts(wrapper) is not None
    assert not [c for c in reader.view.calls if c.startswith("children")]
    opened: list[Path] = []
    real_open = pid_registry.read_json_file

    def counting(path: Path, root: Path, stats: Any) -> Any:
        opened.append(path)
        return real_open(path, root, stats)

    monkeypatch.setattr(pid_registry, "read_json_file", counting)
    reader.registry(CHILD, status="whatever")
    for _ in range(3):
        assert reader.facts(wrapper) is not None
    assert opened == [reader.root / "sessions" / f"{CHILD}.json"]


def test_a_transcript_past_the_read_budget_is_read_on_over_the_next_passes(
    tmp_path: Path,
) -> None:
    from quintd.sources.files import READ_BUDGET_BYTES

    reader, wrapper = _bound(tmp_path)
    filler = json.dumps({"type": "system", "subtype": "ui_telemetry", "pad": "x" * 1000})
    title = {"type": "system", "subtype": "custom_title"}
    title["systemPayload"] = {"customTitle": "Far down", "titleSource": "manual"}
    with open(reader.chats / f"{FIRST}.jsonl", "w") as fh:
        fh.writelines(filler + "\n" for _ in range(READ_BUDGET_BYTES // 1000 + 10))
        fh.write(json.dumps(title) + "\n")
    assert reader.facts(wrapper).name is None  # type: ignore[union-attr]  # a budget read
    assert reader.facts(wrapper).name == "Far down"  # type: ignore[union-attr]  # no event


# -- each rule of the records on its own (the story's files never single them out) ---------


def _append(reader: Reader, *records: dict[str, Any]) -> None:
    """Records appended to the first conversation's transcript, as Qwen Code writes them."""
    path = reader.chats / f"{FIRST}.jsonl"
    with open(path, "a") as fh:
        fh.writelines(json.dumps({"sessionId": FIRST, **r}) + "\n" for r in records)
    reader.state.changed(path)


def _title(text: str, source: str | None) -> dict[str, Any]:
    payload = {"customTitle": text} | ({} if source is None else {"titleSource": source})
    return {"type": "system", "subtype": "custom_title", "systemPayload": payload}


ANSWER = {"type": "assistant", "model": "qwen3-coder-plus", "message": {"parts": [{"text": "ok"}]}}


def test_project_dir_name_at_the_edge_of_the_bmp() -> None:
    assert project_dir_name("\uffff") == "-"  # the last unit of the BMP: one
    assert project_dir_name("\U00010000") == "--"  # the first beyond it: a surrogate pair


def test_a_manual_title_wins_over_an_automatic_one_in_either_order(tmp_path: Path) -> None:
    reader, wrapper = _bound(tmp_path)
    _append(reader, _title("Guessed", "auto"))
    assert reader.facts(wrapper).name == "Guessed"  # type: ignore[union-attr]
    _append(reader, _title("Chosen", "manual"), _title("Guessed again", "auto"))
    assert reader.facts(wrapper).name == "Chosen"  # type: ignore[union-attr]
    _append(reader, _title("Older record", None))  # no titleSource: the user's
    assert reader.facts(wrapper).name == "Older record"  # type: ignore[union-attr]


def test_only_custom_title_records_name_the_conversation(tmp_path: Path) -> None:
    reader, wrapper = _bound(tmp_path)
    other = _title("Not a title", "manual") | {"subtype": "ui_telemetry"}
    _append(reader, other)
    assert reader.facts(wrapper).name is None  # type: ignore[union-attr]


def test_sidechain_records_in_the_transcript_are_no_turn_of_its_own(tmp_path: Path) -> None:
    reader, wrapper = _bound(tmp_path)
    _append(reader, {"type": "user", "message": {"parts": [{"text": "hi"}]}}, ANSWER)
    assert reader.facts(wrapper).status == "idle"  # type: ignore[union-attr]
    _append(reader, {"type": "user", "isSidechain": True, "message": {"parts": []}})
    assert reader.facts(wrapper).status == "idle"  # type: ignore[union-attr]
    _append(reader, {"type": "user", "isSidechain": False, "message": {"parts": []}})
    assert reader.facts(wrapper).status == "busy"  # type: ignore[union-attr]


def test_a_tool_result_asks_the_model_for_an_answer(tmp_path: Path) -> None:
    """Busy after a tool_result even where the record before it said idle."""
    reader, wrapper = _bound(tmp_path)
    _append(reader, ANSWER)
    assert reader.facts(wrapper).status == "idle"  # type: ignore[union-attr]
    result = {"type": "tool_result", "message": {"parts": [{"functionResponse": {"id": "c1"}}]}}
    _append(reader, result)
    assert reader.facts(wrapper).status == "busy"  # type: ignore[union-attr]


def test_busy_holds_to_the_quiet_limit_and_idle_holds_past_it(tmp_path: Path) -> None:
    reader, wrapper = _bound(tmp_path)
    _append(reader, {"type": "user", "message": {"parts": [{"text": "hi"}]}})
    assert reader.facts(wrapper).status == "busy"  # type: ignore[union-attr]
    reader.now += qwen_code.BUSY_QUIET_S  # exactly the limit: still busy
    assert reader.facts(wrapper).status == "busy"  # type: ignore[union-attr]
    _append(reader, ANSWER)
    assert reader.facts(wrapper).status == "idle"  # type: ignore[union-attr]
    reader.now += qwen_code.BUSY_QUIET_S + 1  # idle stays idle, however long the quiet
    assert reader.facts(wrapper).status == "idle"  # type: ignore[union-attr]


def _delegated(reader: Reader, meta: dict[str, Any]) -> None:
    """The transcript up to the call that starts the sub-agent, and its files."""
    delegate = next(
        i
        for i, r in enumerate(_records(FIRST))
        if r["type"] == "assistant" and '"agent"' in json.dumps(r)
    )
    reader.lines(FIRST, 0, delegate + 1)
    _subagent_setup(reader, meta)


@pytest.mark.parametrize("status", ["completed", "Failed", "cancelled"])
def test_a_final_meta_status_alone_ends_a_subagent(tmp_path: Path, status: str) -> None:
    reader, wrapper = _bound(tmp_path)
    _delegated(reader, {"status": status})
    [sub] = reader.facts(wrapper).subagents  # type: ignore[union-attr]
    assert (sub.done, sub.status) == (True, None)


def _notification(*parts: dict[str, Any], payload: dict[str, Any] | None = None) -> dict[str, Any]:
    record: dict[str, Any] = {"type": "user", "subtype": "notification"}
    record["message"] = {"role": "user", "parts": list(parts)}
    if payload is not None:
        record["systemPayload"] = payload
    return record


TOOL_USE = SUBAGENT.removeprefix("general-purpose-")  # the meta's toolUseId


def test_a_notification_names_its_subagent_in_the_payload_alone(tmp_path: Path) -> None:
    reader, wrapper = _bound(tmp_path)
    _delegated(reader, {"status": "running"})
    assert not reader.facts(wrapper).subagents[0].done  # type: ignore[union-attr]
    _append(reader, _notification(payload={"backgroundTask": {"toolUseId": TOOL_USE}}))
    assert reader.facts(wrapper).subagents[0].done  # type: ignore[union-attr]


def test_a_notification_text_counts_only_as_a_task_notification(tmp_path: Path) -> None:
    """The tag is taken from a ``<task-notification>`` text, and within its first 4096
    characters; a text that only quotes it, and parts without text, name nothing."""
    reader, wrapper = _bound(tmp_path)
    _delegated(reader, {"status": "running"})
    tag = f"<tool-use-id>{TOOL_USE}</tool-use-id>"
    head = "<task-notification>\n"
    beyond = head + "x" * (4097 - len(head) - len(tag)) + tag  # ends at character 4097
    for parts in ({"text": "quoted: " + tag}, {"functionCall": {"id": "x"}}, {"text": beyond}):
        _append(reader, _notification(parts))
        assert not reader.facts(wrapper).subagents[0].done  # type: ignore[union-attr]
    within = head + "x" * (4096 - len(head) - len(tag)) + tag  # ends at character 4096
    _append(reader, _notification({"text": within}))
    assert reader.facts(wrapper).subagents[0].done  # type: ignore[union-attr]
    assert reader.state.stats.garbage == 0


@pytest.mark.parametrize("cwd", [None, ""])
def test_a_registry_without_a_cwd_names_its_conversation_without_a_transcript(
    tmp_path: Path, cwd: str | None
) -> None:
    """No cwd, no project directory to find the transcript in: the registry alone says
    which conversation runs (waiting, as far as anything tells)."""
    reader = Reader(tmp_path / ".qwen")
    wrapper = agent(WRAPPER)
    reader.view.kids[WRAPPER] = [CHILD]
    reader.view.ticks[CHILD] = CHILD_TICKS
    reader.registry(CHILD, cwd=cwd)
    reader.lines(FIRST, 0)  # in the project that cwd would name: not looked for
    facts = reader.facts(wrapper)
    assert facts is not None
    assert (facts.native_id, facts.status, facts.name, facts.model, facts.owner_uid) == (
        FIRST,
        "idle",
        None,
        None,
        os.getuid(),
    )
