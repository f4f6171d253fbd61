"""Gemini CLI 0.61.0 as the live tier captured it (``tests/fixtures/gemini-cli-subagent``):
a prompt, a tool call answered with text first (the tool call is written only once it
finished), a sub-agent (``invoke_agent``: a file of its own under its parent's id),
``/clear``, a prompt, ``/quit``; each step replayed with its recorded process tree."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from replay import MACHINE, Rec, RecordedProcesses, Replay, parse_started, story

from quintd.identity import native_session_id
from quintd.model import AgentProcess, ConversationFacts
from quintd.sources.gemini_cli import SPEC, GeminiState
from quintd.sources.spec import ReaderContext
from quintd.sources.times import parse_time as epoch

HERE = Path(__file__).parent / "fixtures" / "gemini-cli-subagent"
PROJECT = "/home/livegemini/src/shop-api"
CHATS = ".gemini/tmp/shop-api/chats"
FIRST = "1af3f1ae-c90c-4589-b5b1-9620bcfcce34"
SUB = "5bc02e60-730b-4f65-8f97-99b873addd63"
WRAPPER = 5339

# snapshot -> the timeline's step taken then (timeline.jsonl)
PLAN = [
    ("01-started-idle", "session-file"),
    ("02-p1-busy", "p1-held-at-stand-in"),
    ("03-p1-idle", "p1-answered"),
    ("04-awaiting-approval", "approval-dialog"),
    ("05-tool-running", "approved"),
    ("06-subagent-busy", "sub-held-at-stand-in"),
    ("07-subagent-done", "delegate-answered"),
    ("08-after-clear", "clear-new-file"),
    ("09-second-session-idle", "p3-answered"),
    ("10-after-quit", "processes-gone"),
]


def timeline() -> dict[str, float]:
    lines = (HERE / "timeline.jsonl").read_text().splitlines()
    return {row["step"]: row["t"] for row in map(json.loads, lines)}


def processes(step: str) -> list[Rec]:
    """The live user's processes at a step, from its ``ps --forest`` (the agent's tree)."""
    recs = []
    for line in (HERE / "snapshots" / step / "ps.txt").read_text().splitlines()[1:]:
        fields = line.split()
        if "\\_ " not in line or len(fields) < 12:
            continue  # the tmux server: not under the agent
        args = line.rsplit("\\_ ", 1)[1].split()
        program = args[0]
        recs.append(
            Rec(
                pid=int(fields[0]),
                ppid=int(fields[1]),
                comm=os.path.basename(program)[:15],
                exe="/usr/bin/node" if program.endswith("node") else f"/usr/bin/{program}",
                argv=args,
                cwd=PROJECT,
                start_time=parse_started(_iso(fields[6:11])),
            )
        )
    return recs


def _iso(lstart: list[str]) -> str:
    """``Mon Dec 7 16:55:04 2026`` -> ISO 8601 (the machine ran in UTC)."""
    from datetime import datetime

    return datetime.strptime(" ".join(lstart), "%a %b %d %H:%M:%S %Y").isoformat() + "+00:00"


def lay_out(step: str, home: Path) -> None:
    chats = home / CHATS
    if chats.exists():
        shutil.rmtree(chats)
    shutil.copytree(HERE / "snapshots" / step / "chats", chats)


def test_a_sub_agent_a_tool_call_and_a_clear_as_the_real_cli_wrote_them(tmp_path: Path) -> None:
    home = tmp_path / "home"
    times = timeline()
    replay = Replay(home, times["session-file"] - 1.0, readers=(SPEC,))
    statuses = {}
    subagents = {}
    for step, moment in PLAN:
        lay_out(step, home)
        replay.step(processes(step), times[moment] + 0.2)
        facts, _ = replay.sources.observe(replay.agents)
        found = facts.get(WRAPPER)
        statuses[step] = found.status if isinstance(found, ConversationFacts) else None
        if isinstance(found, ConversationFacts):
            subagents[step] = [(s.agent_id, s.done) for s in found.subagents]
    assert story(replay.events) == [
        ("s1", "active", "shop-api", None, None),  # at start-up: the file names it
        ("s1", "active", "shop-api", "gemini-3.8-flash", None),  # the model answered
        ("s2", "active", None, "gemini-3.8-flash", "s1"),  # the sub-agent (parent's model)
        ("s2", "ended", None, "gemini-3-flash-preview", "s1"),  # done: its own model
        ("s3", "active", "shop-api", None, None),  # /clear: a new file at once
        ("s1", "ended", "shop-api", "gemini-3.8-flash", None),
        ("s3", "active", "shop-api", "gemini-3.8-flash", None),
        ("s3", "ended", "shop-api", "gemini-3.8-flash", None),  # /quit
    ]
    uid = os.getuid()
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    assert ids[1] == native_session_id(MACHINE, "gemini-cli", FIRST, SUB, uid=uid)
    assert statuses == {
        "01-started-idle": "idle",
        "02-p1-busy": "busy",  # a prompt, no answer yet
        "03-p1-idle": "idle",
        "04-awaiting-approval": "idle",  # text written, the call not: waiting for the user
        "05-tool-running": "busy",  # text written, the call not: but its shell runs
        "06-subagent-busy": "busy",  # text written, the call not: but its sub-agent runs
        "07-subagent-done": "idle",
        "08-after-clear": "idle",
        "09-second-session-idle": "idle",
        "10-after-quit": None,
    }
    assert subagents["06-subagent-busy"] == [(SUB, False)]
    assert subagents["07-subagent-done"] == [(SUB, True)]


def test_a_gemini_started_right_after_a_quit_does_not_take_the_ended_conversation(
    tmp_path: Path,
) -> None:
    """A new process in the same project within the clock slack of the last conversation's
    start once claimed it (`gemini --list-sessions`, 0.4 s after a quit: the ended
    session's name and model came back under it)."""
    home = tmp_path / "home"
    times = timeline()
    replay = Replay(home, times["session-file"] - 1.0, readers=(SPEC,))
    for step, moment in PLAN[-3:]:  # /clear, a prompt, /quit
        lay_out(step, home)
        replay.step(processes(step), times[moment] + 0.2)
    ended = {e.session_id for e in replay.events if e.state == "ended"}
    quit_at = times["processes-gone"] + 0.4
    last = next((home / CHATS).glob("session-*-3085e9dd.jsonl"))
    began = epoch(json.loads(last.read_text().splitlines()[0])["startTime"])
    assert began is not None
    newcomer = Rec(
        pid=31337,
        ppid=1,
        comm="node",
        exe="/usr/bin/node",
        argv=["node", "/home/livegemini/.npm-global/bin/gemini"],
        cwd=PROJECT,
        # As if it had started within the clock slack of that conversation's start (a
        # conversation quit 9 s after it began, in the run that showed it).
        start_time=began + 5.0,
    )
    events = replay.step([newcomer], quit_at + 5.0)  # past the start-up grace: a session
    assert [(e.state, e.model) for e in events] == [("active", None)]
    assert not ({e.session_id for e in events} & ended)


# -- the rules, exactly (written for the survivors of the mutation run) -------------------

CLI = ["node", "/usr/bin/gemini"]
NEW_PROJECT = "/home/dev/src/new-api"
NEW_HASH = hashlib.sha256(NEW_PROJECT.encode()).hexdigest()
# An hour ago: the chats the tests write now are within the processes' horizon.
START = float(int(time.time())) - 3600.0


def _stamp(moment: float) -> str:
    return datetime.fromtimestamp(moment, UTC).isoformat().replace("+00:00", "Z")


def _session(number: int) -> str:
    return f"{number:08x}-0000-4000-8000-000000000000"


class Home:
    """A Gemini home whose chats the test writes record by record, the reader of it (read
    again each pass, as when there are no file events) and the processes it is shown."""

    def __init__(self, tmp_path: Path, project_dir: str = "new-api") -> None:
        self.home = tmp_path / "home"
        self.chats = self.home / ".gemini" / "tmp" / project_dir / "chats"
        self.chats.mkdir(parents=True)
        self.view = RecordedProcesses(self.home)
        self.clock = 1000.0
        context = ReaderContext(lambda: self.clock, self.view)
        self.reader = GeminiState(self.home / ".gemini", context)

    def write(self, name: str, *records: dict[str, Any]) -> Path:
        path = self.chats / name
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as out:
            out.writelines(json.dumps(r) + "\n" for r in records)
        return path

    def chat(self, number: int, started: float = START + 1, **header: Any) -> str:
        """A new chat file with its header; its name."""
        sid = _session(number)
        name = f"session-2026-12-07T16-55-{sid[:8]}.jsonl"
        self.write(name, _header(sid, started, **header))
        return name

    def step(self, *recs: Rec) -> dict[int, ConversationFacts | None]:
        """A pass over these processes: the CLIs (under pid 1), and what runs under them."""
        self.clock += 1.0
        self.view.show(recs)
        agents = [_agent(r) for r in recs if r.ppid == 1]
        self.reader.poll()
        self.reader.prepare(agents)
        return {a.pid: self.reader.facts(a) for a in agents}


def _header(sid: str, started: float, **extra: Any) -> dict[str, Any]:
    return {"sessionId": sid, "projectHash": NEW_HASH, "startTime": _stamp(started), **extra}


def _cli(pid: int = 700, start: float = START, cwd: str | None = NEW_PROJECT) -> Rec:
    return Rec(pid, 1, "node", "/usr/bin/node", list(CLI), cwd, start)


def _child(pid: int, ppid: int, *argv: str) -> Rec:
    return Rec(pid, ppid, argv[0][:15] if argv else "", "/usr/bin/x", list(argv), None, START)


def _agent(rec: Rec) -> AgentProcess:
    return AgentProcess(
        "gemini-cli", rec.pid, rec.ppid, rec.start_time, "dev", rec.exe, rec.cwd, "node", "exe",
        uid=os.getuid(),
    )  # fmt: skip


def _status(found: ConversationFacts | None) -> str | None:
    assert found is not None
    return found.status


def test_a_tool_under_the_cli_makes_an_answered_conversation_busy(tmp_path: Path) -> None:
    home = Home(tmp_path)
    name = home.chat(1)
    home.write(name, {"id": "u", "type": "user", "content": [{"text": "go"}]})
    home.write(name, {"id": "g", "type": "gemini", "content": "Running it."})
    assert _status(home.step(_cli())[700]) == "idle"
    # The CLI relaunched under itself (its first words name it) is not a tool ...
    relaunched = _child(701, 700, "/usr/bin/node", "--max-old-space", "/usr/bin/gemini")
    assert _status(home.step(_cli(), relaunched)[700]) == "idle"
    # ... nor a child whose command line cannot be read (gone, or a kernel's).
    assert _status(home.step(_cli(), _child(702, 700))[700]) == "idle"
    # A shell is, even when a later word names gemini (`grep -r x ... gemini`).
    shell = _child(703, 700, "grep", "-r", "-n", "x", "gemini")
    assert _status(home.step(_cli(), shell)[700]) == "busy"
    # So is one four levels down (under the relaunched CLI), not one further.
    chain = [_child(710 + i, 709 + i if i else 700, *CLI) for i in range(3)]
    deep = _child(713, 712, "bash", "-c", "make")
    assert _status(home.step(_cli(), *chain, deep)[700]) == "busy"
    chain.append(_child(713, 712, *CLI))
    deeper = _child(714, 713, "bash", "-c", "make")
    assert _status(home.step(_cli(), *chain, deeper)[700]) == "idle"


def test_an_ended_conversation_is_taken_over_only_when_written_again(tmp_path: Path) -> None:
    home = Home(tmp_path)
    name = home.chat(1)
    first = home.step(_cli(700))[700]
    assert first is not None and first.native_id == _session(1)
    # The process quits as its last record is written: over, not written since.
    home.write(name, {"id": "g", "type": "gemini", "content": "Bye."})
    assert home.step() == {}
    newcomer = _cli(800, START + 5)  # within the clock slack of the chat's start
    assert home.step(newcomer) == {800: None}
    assert home.step(newcomer) == {800: None}
    # Resumed: written again, it is the newcomer's.
    home.write(name, {"id": "u2", "type": "user", "content": "more"})
    again = home.step(newcomer)[800]
    assert again is not None and (again.native_id, again.status) == (_session(1), "busy")


def test_a_chat_belongs_to_a_process_of_its_project_started_before_it(tmp_path: Path) -> None:
    home = Home(tmp_path)
    home.chat(1, started=START - 10.0)  # begun at the clock slack's edge: still its own
    assert home.step(_cli(700))[700] is not None
    for proc in (_cli(701, cwd=None), _cli(702, cwd="/home/dev/src/other")):
        assert home.step(proc) == {proc.pid: None}
    late = Home(tmp_path / "late")
    late.chat(1, started=START - 10.5)  # before the process started, past the slack
    assert late.step(_cli(700)) == {700: None}
    unstarted = Home(tmp_path / "unstarted")
    unstarted.write("session-x.jsonl", {"sessionId": _session(1), "projectHash": NEW_HASH})
    assert unstarted.step(_cli(700)) == {700: None}
    # Before 0.29 the project's directory was named by the hash, and no header had one.
    hashed = Home(tmp_path / "hashed", project_dir=NEW_HASH)
    hashed.chat(1, projectHash=None)
    assert hashed.step(_cli(700))[700] is not None


def test_a_sub_agent_is_busy_until_its_result_and_keeps_the_parent_busy(tmp_path: Path) -> None:
    home = Home(tmp_path)
    name = home.chat(1)
    home.write(name, {"id": "g", "type": "gemini", "content": "Asking an agent.", "model": "m"})
    sub = f"{_session(1)}/{_session(2)}.jsonl"
    home.write(sub, _header(_session(2), START + 2, kind="subagent"))
    home.write(sub, {"id": "s", "type": "gemini", "content": "Looking.", "model": "small"})
    found = home.step(_cli())[700]
    assert found is not None and (found.native_id, found.status) == (_session(1), "busy")
    [running] = found.subagents
    assert (running.agent_id, running.done, running.status, running.model) == (
        _session(2),
        False,
        "busy",
        "small",
    )
    home.write(sub, {"$set": {"summary": None}})  # not a result yet
    found = home.step(_cli())[700]
    assert found is not None and found.subagents[0].done is False
    home.write(sub, {"$set": {"summary": "Found it."}})  # its result: not a title
    found = home.step(_cli())[700]
    assert found is not None and (found.status, found.name) == ("idle", None)
    [done] = found.subagents
    assert (done.done, done.status, done.last_write) == (True, None, home.clock)


def test_a_sub_agent_file_outside_a_session_directory_is_a_conversation(tmp_path: Path) -> None:
    home = Home(tmp_path)
    stray = f"not-a-session/{_session(3)}.jsonl"
    home.write(stray, _header(_session(3), START + 2, kind="subagent"))
    home.write(stray, {"$set": {"summary": "A title"}})
    found = home.step(_cli())[700]
    assert found is not None and (found.native_id, found.name) == (_session(3), "A title")


def test_the_record_rules_of_a_chat(tmp_path: Path) -> None:
    home = Home(tmp_path)
    name = "session-2026-12-07T16-55-00000001.jsonl"
    home.write(name, {"id": "early", "type": "user", "content": "before the header"})
    home.write(name, _header(_session(1), START + 1))
    found = home.step(_cli())[700]
    assert found is not None and (found.native_id, found.status) == (_session(1), "idle")
    steps: list[tuple[dict[str, Any], tuple[str | None, str | None, str | None]]] = [
        ({"$set": {"summary": "Fix the login"}}, ("idle", "Fix the login", None)),
        ({"$set": {"summary": ""}}, ("idle", "Fix the login", None)),  # no title: kept
        ({"id": "u", "type": "user", "content": "go"}, ("busy", "Fix the login", None)),
        ({"id": "g", "type": "gemini", "content": "", "model": "pro"}, ("busy", None, "pro")),
        ({"id": "g", "type": "gemini", "content": "Done.", "model": ""}, ("idle", None, "pro")),
        ({"id": "i", "type": "info", "content": "a note"}, ("idle", None, "pro")),
        (
            {"id": "t", "type": "gemini", "content": "On it.", "toolCalls": [{"id": "c"}]},
            ("busy", None, "pro"),  # a call without its result: running
        ),
        (
            {"id": "t", "type": "gemini", "content": "On it.", "toolCalls": [{"result": []}]},
            ("busy", None, "pro"),
        ),
        (
            {"id": "t", "type": "gemini", "content": "Ok.", "toolCalls": [{"result": ["r"]}]},
            ("idle", None, "pro"),
        ),
        (
            {"id": "t", "type": "gemini", "content": "Ok.", "toolCalls": "garbage"},
            ("idle", None, "pro"),
        ),
        ({"id": "t", "type": "gemini", "content": "   "}, ("busy", None, "pro")),
        ({"id": "t", "type": "gemini", "content": [{"text": " \n"}, "x"]}, ("busy", None, "pro")),
        ({"id": "t", "type": "gemini", "content": [{"text": 5}]}, ("busy", None, "pro")),
        ({"id": "t", "type": "gemini", "content": {"text": "x"}}, ("busy", None, "pro")),
        ({"id": "t", "type": "gemini", "content": [{}, {"text": "Yes."}]}, ("idle", None, "pro")),
    ]
    for record, (status, title, model) in steps:
        home.write(name, record)
        found = home.step(_cli())[700]
        assert found is not None, record
        assert (found.status, found.model) == (status, model), record
        if title is not None:
            assert found.name == title, record
    assert found.name == "Fix the login"
