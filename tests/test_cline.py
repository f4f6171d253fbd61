"""Cline CLI 3.0.65, as the real CLI behaved (``tests/fixtures/cline``; its README tells the
run): every recorded step replayed in order with its process tree (tests/replay.py), the
exact events asserted.

The story: a TUI running its sessions itself (no hub yet: it starts one), a prompt, a tool
awaiting approval then running, a sub-agent, a rename from another shell, ``/clear`` and a
second conversation, ``/quit``; a one-shot run by the hub; TUIs routed to the hub (one
killed while busy, one quits without a prompt, one with a tool, a sub-agent and a
teammate); TUIs killed in local mode (their rows left ``running``/``idle``); an Esc-cancel.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import sqlite3
from datetime import UTC, datetime
from pathlib import Path

import pytest
from replay import MACHINE, Rec, Replay, agents, clock_time, load_processes, story

from quintd.identity import native_session_id, process_session_id
from quintd.model import AgentProcess, ConversationFacts, format_timestamp
from quintd.platforms import BUILTIN_PLATFORMS, match_process
from quintd.sources import cline, cline_processes, cline_rows, cline_sessions, sqlite_sessions
from quintd.sources.attribution import Pass
from quintd.sources.files import MAX_JSON_FILE_BYTES, ReadStats
from quintd.sources.processes import TcpSocket
from quintd.sources.spec import ReaderContext
from quintd.sources.sqlite_files import read_database
from quintd.sources.times import parse_time as epoch

FIXTURES = Path(__file__).parent / "fixtures" / "cline"
DAY = "2026-11-29"
STEPS = sorted(p.stem for p in (FIXTURES / "processes").glob("*.json"))
HUBS = {18665, 24544, 26603, 1123}
CLIS = {18459, 22234, 22694, 24403, 25671, 26546, 28108, 1048}  # the node wrappers
TUI1, TUI6 = "1795926878578_jru6m", "1795927086263_ipyql"


def _boot() -> float:
    """The recorded process table has start times in clock ticks since boot: boot is when
    the earliest ``CLI run started`` log line, less its process's ticks, says (100 Hz)."""
    ticks = {}
    for step in STEPS:
        for row in json.loads((FIXTURES / "processes" / f"{step}.json").read_text()):
            ticks[row["pid"]] = row["starttime_ticks"]
    boots = []
    for line in (FIXTURES / "cline-log.excerpt.jsonl").read_text().splitlines():
        record = json.loads(line)
        if record["msg"] == "CLI run started" and record["pid"] in ticks:
            started = epoch(record["time"])
            assert started is not None
            boots.append(started - float(ticks[record["pid"]]) / 100)
    return min(boots) - 0.1


BOOT = _boot()


def _recs(step: str) -> list[Rec]:
    path = FIXTURES / "processes" / f"{step}.json"
    rows = json.loads(path.read_text())
    starts = {r["pid"]: BOOT + r["starttime_ticks"] / 100 for r in rows}
    recs = load_processes(path, starts)
    ticks = {r["pid"]: str(r["starttime_ticks"]) for r in rows}
    return [dataclasses.replace(r, start_ticks=ticks[r.pid]) for r in recs]


def _agents_of(step: str) -> list[AgentProcess]:
    return agents(_recs(step), Path("/nonexistent"))


def _step_time(step: str) -> float:
    """Just after the newest file of the step was written."""
    lines = (FIXTURES / "snapshots" / step / "files.txt").read_text().splitlines()
    newest = max(line.split()[1] for line in lines if len(line.split()) == 3)  # size time path
    return clock_time(DAY, newest) + 1.0


def _lay_out(root: Path, step: str) -> None:
    """~/.cline as the snapshot holds it: files rewritten in place (the database keeps its
    inode, as the live one does), files the snapshot lacks removed."""
    source = FIXTURES / "snapshots" / step / "home" / ".cline"
    wanted = {p.relative_to(source) for p in source.rglob("*") if p.is_file()}
    for path in list(root.rglob("*")):
        if path.is_file() and path.relative_to(root) not in wanted:
            path.unlink()
    for rel in wanted:
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(source / rel, target)


def _replay(
    tmp_path: Path, restart_after: str | None = None, idle_after: float = 3600.0
) -> tuple[Replay, dict[str, list[tuple[str, str, str | None, str | None, str | None]]]]:
    home = tmp_path / "home"
    (home / ".cline").mkdir(parents=True)
    replay = Replay(home, _step_time(STEPS[0]) - 30, idle_after, readers=(cline.SPEC,))
    per_step = {}
    at = 0.0
    for step in STEPS:
        _lay_out(home / ".cline", step)
        at = max(at + 0.5, _step_time(step))
        before = len(replay.events)
        replay.step(_recs(step), at)
        per_step[step] = story(replay.events)[before:]
        if restart_after in (step, "every step"):
            replay.restart()
        # The hub daemons and the Bun children are never sessions: only the CLIs.
        assert {a.pid for a in replay.agents} <= CLIS, step
    return replay, per_step


# Cline titles a conversation with its first prompt: prompt text never leaves the machine,
# so only a title the user set (`cline history update --title`) is a name; the rest are
# named after their directory (sub-agents, whose title is their task: no name).
STORY = [
    ("s1", "active", "shop-api", None, None),  # TUI1 (local mode) before its first prompt
    ("s1", "active", "shop-api", "stand-in-coder", None),
    ("s2", "active", None, "stand-in-coder", "s1"),  # sub-agent
    ("s2", "ended", None, "stand-in-coder", "s1"),
    ("s1", "active", "Token expiry fix", "stand-in-coder", None),  # renamed from a shell
    ("s3", "active", "shop-api", "stand-in-coder", None),  # /clear
    ("s1", "ended", "Token expiry fix", "stand-in-coder", None),
    ("s3", "ended", "shop-api", "stand-in-coder", None),  # /quit
    ("s4", "active", "shop-api", "stand-in-coder", None),  # one-shot
    ("s4", "ended", "shop-api", "stand-in-coder", None),
    ("s5", "active", "shop-api", None, None),  # TUI2, routed to the hub
    ("s5", "active", "shop-api", "stand-in-coder", None),
    ("s5", "ended", "shop-api", "stand-in-coder", None),  # kill -9
    ("s6", "active", "shop-api", None, None),  # TUI3, local again (a new hub)
    ("s6", "active", "shop-api", "stand-in-coder", None),
    ("s6", "ended", "shop-api", "stand-in-coder", None),  # kill -9
    ("s7", "active", "shop-api", None, None),  # TUI4 (hub): dead TUI3's idle row is not its
    ("s7", "ended", "shop-api", None, None),
    ("s8", "active", "shop-api", "stand-in-coder", None),  # TUI5
    ("s8", "ended", "shop-api", "stand-in-coder", None),
    ("s9", "active", "shop-api", None, None),  # TUI6 (hub)
    ("s9", "active", "shop-api", "stand-in-coder", None),
    ("s10", "active", None, "stand-in-coder", "s9"),
    ("s10", "ended", None, "stand-in-coder", "s9"),
    ("s11", "active", None, "stand-in-coder", "s9"),  # the teammate
    ("s11", "ended", None, "stand-in-coder", "s9"),
    ("s9", "ended", "shop-api", "stand-in-coder", None),
    ("s12", "active", "shop-api", "stand-in-coder", None),  # TUI7
    ("s12", "ended", "shop-api", "stand-in-coder", None),
]


@pytest.mark.parametrize(
    "restart_after",
    [
        None,
        "08-subagent-running",
        "11-after-clear",
        "19-tui2-busy",
        "37-tui6-subagent-running",
        "every step",
    ],
)
def test_every_step_local_and_hub_mode(tmp_path: Path, restart_after: str | None) -> None:
    """With a restart of quintd in the middle, nothing changes: same ids, same events."""
    replay, per_step = _replay(tmp_path, restart_after)
    assert story(replay.events) == STORY
    # When each thing happened: the conversation at its first prompt (its row), its end at
    # the next conversation's first prompt (after /clear there is no row yet) or the exit.
    assert [(s, st) for s, st, *_ in per_step["02-first-prompt-busy"]] == [("s1", "active")]
    assert per_step["11-after-clear"] == []
    assert [(s, st) for s, st, *_ in per_step["12-second-conversation-busy"]] == [
        ("s3", "active"),
        ("s1", "ended"),
    ]
    assert [(s, st) for s, st, *_ in per_step["19-tui2-busy"]] == [("s5", "active")]
    assert [(s, st) for s, st, *_ in per_step["20-tui2-killed"]] == [("s5", "ended")]
    assert per_step["27-tui4-started"][0][:2] == ("s7", "active")
    assert per_step["41-tui6-quit"] == [STORY[26]]  # the hub keeps the row idle: the exit ends it
    uid = os.getuid()
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    # Each conversation under its own Cline id, bound to the user who owns sessions.db; the
    # first conversation of a process announced before it had one keeps the process's id.
    tui1 = next(a for a in _agents_of("00-started") if a.pid == 18459)
    assert ids[0] == process_session_id(MACHINE, "cline", 18459, tui1.start_time_ms)
    assert ids[1] == native_session_id(
        MACHINE, "cline", TUI1, "agent_1795926904366_wgly6i", uid=uid
    )
    assert ids[2] == native_session_id(MACHINE, "cline", "1795926926707_r9w3j", uid=uid)
    assert ids[3] == native_session_id(MACHINE, "cline", "1795926941383_gqr7k", uid=uid)
    assert ids[7] == native_session_id(MACHINE, "cline", "1795927041046_8fs93", uid=uid)
    assert ids[10] == native_session_id(
        MACHINE, "cline", TUI6, "teamtask__reviewer__0DyyF9", uid=uid
    )
    assert ids[11] == native_session_id(MACHINE, "cline", "1795927205975_qqyek", uid=uid)
    assert all(e.signing_id for e in replay.events)


def test_busy_waiting_and_idle_come_from_the_status_column(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".cline").mkdir(parents=True)
    replay = Replay(home, _step_time(STEPS[0]) - 30, 2.0, readers=(cline.SPEC,))
    seen: dict[str, dict[int, object]] = {}
    at = 0.0
    for step in STEPS:
        _lay_out(home / ".cline", step)
        at = max(at + 0.5, _step_time(step))
        replay.step(_recs(step), at)
        facts, _ = replay.sources.observe(replay.agents)
        seen[step] = {pid: getattr(f, "status", None) for pid, f in facts.items()}
    assert seen["00-started"] == {}  # no row before the first prompt
    assert seen["02-first-prompt-busy"] == {18459: "busy"}
    assert seen["03-first-prompt-idle"] == {18459: "idle"}
    assert seen["04-waiting-for-approval"] == {18459: "waiting"}
    assert seen["05-tool-running"] == {18459: "busy"}
    assert seen["11-after-clear"] == {18459: "idle"}  # completed: kept until the next one
    assert seen["15-oneshot-busy"] == {22234: "busy"}
    assert seen["19-tui2-busy"] == {22694: "busy"}
    assert seen["27-tui4-started"] == {}  # the dead TUI3's idle row is not TUI4's
    assert seen["35-tui6-tool-running"] == {28108: "busy"}
    assert seen["36-tui6-tool-done"] == {28108: "idle"}
    assert seen["44-tui7-cancelled"] == {1048: "idle"}
    states = [(e.state, e.kind) for e in replay.events if e.kind != "update"]
    assert ("idle", "transition") in states and ("active", "transition") in states


def test_sub_agents_carry_their_status(tmp_path: Path) -> None:
    home = tmp_path / "home"
    (home / ".cline").mkdir(parents=True)
    replay = Replay(home, _step_time(STEPS[0]) - 30, readers=(cline.SPEC,))
    at = 0.0
    found = {}
    for step in STEPS[: STEPS.index("40-tui6-team-done") + 1]:
        _lay_out(home / ".cline", step)
        at = max(at + 0.5, _step_time(step))
        replay.step(_recs(step), at)
        facts, _ = replay.sources.observe(replay.agents)
        found[step] = facts
    conv = found["39-tui6-team-running"][28108]
    assert isinstance(conv, ConversationFacts)
    assert conv.native_id == TUI6
    subs = {s.agent_id: (s.name, s.done, s.status) for s in conv.subagents}
    assert subs == {
        "agent_1795927098138_dx691e": (None, True, None),  # a task, not a name
        "teamtask__reviewer__0DyyF9": (None, False, "busy"),
    }


# -- processes -------------------------------------------------------------------------------


def test_the_recorded_processes_match_cline_and_the_hub_is_no_session() -> None:
    """The node wrapper is the agent (by its script); its Bun child and every hub daemon
    match nothing, so the hub is never a session, even orphaned."""
    for step in STEPS:
        for rec in _recs(step):
            found = match_process(
                BUILTIN_PLATFORMS, name=rec.comm, exe=rec.exe, argv=rec.argv, cwd=rec.cwd
            )
            if rec.pid in CLIS:
                assert found is not None and found.platform == "cline", (step, rec.pid)
            elif rec.pid in HUBS or rec.comm == ".cline":
                assert found is None or found.helper, (step, rec.pid)


def _fallback_install(rec: Rec) -> Rec:
    """Without the postinstall link (``npm i --ignore-scripts``), the wrapper runs the
    platform package's binary, named ``cline`` (bin/cline: "Walk up node_modules to find the
    platform-specific package"): then the binary itself matches by name."""
    if rec.comm != ".cline":
        return rec
    exe = (
        "/home/clinedev/.npm-global/lib/node_modules/cline/node_modules/@cline/cli-linux-x64/cline"
    )
    return dataclasses.replace(rec, exe=exe, comm="cline", argv=[exe, *rec.argv[1:]])


def test_a_hub_named_cline_is_a_helper_with_the_proposed_platform_entry() -> None:
    """The hub outlives its TUI (ppid 1): where the binary is named ``cline``, only
    ``helper_args=("--cline-hub-daemon",)`` keeps it from being a session. Checked with a
    local table holding that entry (the change proposed for quintd/platforms.py)."""
    builtin = next(p for p in BUILTIN_PLATFORMS if p.id == "cline")
    proposed = dataclasses.replace(
        builtin, helper_args=tuple(dict.fromkeys((*builtin.helper_args, "--cline-hub-daemon")))
    )
    table = tuple(proposed if p.id == "cline" else p for p in BUILTIN_PLATFORMS)
    recs = [_fallback_install(r) for r in _recs("35-tui6-tool-running")]
    hub = next(r for r in recs if r.pid == 26603)
    assert hub.ppid == 1
    matched = match_process(table, name=hub.comm, exe=hub.exe, argv=hub.argv, cwd=hub.cwd)
    assert matched is not None and matched.helper
    tui = next(r for r in recs if r.pid == 28116)
    matched = match_process(table, name=tui.comm, exe=tui.exe, argv=tui.argv, cwd=tui.cwd)
    assert matched is not None and not matched.helper  # folded into its node wrapper
    # Through the scanner's folding with the real table the hub would stand alone:
    lone = [a.pid for a in agents(recs, Path("/nonexistent"))]
    if not any(
        p.id == "cline" and "--cline-hub-daemon" in p.helper_args for p in BUILTIN_PLATFORMS
    ):
        assert 26603 in lone  # today's gap (reported)
    else:
        assert 26603 not in lone


# -- the reader alone ------------------------------------------------------------------------


class View:
    """A hand-made process table for the reader."""

    def __init__(self) -> None:
        self.argvs: dict[int, list[str]] = {}
        self.kids: dict[int, list[int]] = {}
        self.files: dict[int, set[str]] = {}

    def uid(self, pid: int) -> int | None:
        return os.getuid()

    def environ(self, pid: int) -> dict[str, str] | None:
        return {}

    def start_ticks(self, pid: int) -> str | None:
        return None

    def exe(self, pid: int) -> str | None:
        return None

    def argv(self, pid: int) -> list[str]:
        return list(self.argvs.get(pid, []))

    def children(self, pid: int) -> list[int]:
        return list(self.kids.get(pid, []))

    def open_files(self, pid: int) -> set[str]:
        return set(self.files.get(pid, set()))

    def tcp(self, pid: int) -> list[TcpSocket]:
        return []


SCHEMA = (FIXTURES / "schema.sql").read_text().split("CREATE TABLE subagent_spawn_queue")[0]


def _cli(pid: int, start: float, cwd: str = "/src/app") -> AgentProcess:
    return AgentProcess(
        platform="cline",
        pid=pid,
        ppid=1,
        start_time=start,
        user="dev",
        exe="/usr/bin/node",
        cwd=cwd,
        name="node",
        matched_by="script",
        uid=os.getuid(),
    )


def _iso(seconds: float) -> str:
    return format_timestamp(datetime.fromtimestamp(seconds, UTC))


def _insert(db: Path, sid: str, pid: int, status: str, **extra: object) -> None:
    """A row as Cline writes it; ``updated_at`` a second after the id's time."""
    created = int(sid.split("_")[0]) / 1000 if sid[:13].isdigit() else T0
    row: dict[str, object] = {
        "session_id": sid,
        "source": "cli",
        "pid": pid,
        "started_at": _iso(created),
        "status": status,
        "interactive": 1,
        "provider": "openai-compatible",
        "model": "m1",
        "cwd": "/src/app",
        "workspace_root": "/src/app",
        "enable_tools": 1,
        "enable_spawn": 1,
        "enable_teams": 1,
        "hook_path": "",
        "updated_at": _iso(created + 1),
        "metadata_json": json.dumps({"title": f"title of {sid}"}),
        # Its first prompt: the title is not in it (a title the user gave: a name).
        "prompt": '<user_input mode="act">fix the login bug</user_input>',
        **extra,
    }
    with sqlite3.connect(db) as conn:
        keys = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        conn.execute(
            f"INSERT OR REPLACE INTO sessions ({keys}) VALUES ({marks})", list(row.values())
        )
    conn.close()


def _reader(tmp_path: Path, view: View) -> tuple[cline.ClineState, Path]:
    root = tmp_path / ".cline"
    (root / "data" / "db").mkdir(parents=True)
    db = root / "data" / "db" / "sessions.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA)
    conn.close()
    return cline.ClineState(root, ReaderContext(clock=lambda: 100.0, processes=view)), db


T0 = 1795926000.0  # 2026-11-29T04:20:00Z


def test_two_hub_tuis_in_one_directory_each_get_their_own(tmp_path: Path) -> None:
    view = View()
    view.argvs[900] = [".cline", "--cline-hub-daemon", "--cwd", "/src/app"]
    reader, db = _reader(tmp_path, view)
    a, b = _cli(10, T0), _cli(20, T0 + 30)
    view.kids = {10: [11], 20: [21]}
    _insert(db, f"{int((T0 + 1) * 1000)}_aaaaa", 900, "running")
    _insert(db, f"{int((T0 + 31) * 1000)}_bbbbb", 900, "idle")
    reader.poll()
    reader.prepare([a, b])
    fa, fb = reader.facts(a), reader.facts(b)
    assert fa is not None and fa.native_id.endswith("_aaaaa") and fa.status == "busy"
    assert fb is not None and fb.native_id.endswith("_bbbbb") and fb.status == "idle"
    assert fa.name == f"title of {fa.native_id}" and fa.model == "m1"
    # A third TUI elsewhere takes nothing; a row created before it started is not its own.
    c = _cli(30, T0 + 60, cwd="/src/other")
    reader.prepare([a, b, c])
    assert reader.facts(c) is None


def test_a_local_tui_takes_no_hub_conversation(tmp_path: Path) -> None:
    """A TUI whose Bun child holds sessions.db open runs its sessions itself."""
    view = View()
    view.argvs[900] = [".cline", "--cline-hub-daemon"]
    reader, db = _reader(tmp_path, view)
    local, routed = _cli(10, T0), _cli(20, T0 + 0.5)
    view.kids = {10: [11, 900], 20: [21]}  # the local TUI started the hub
    view.files = {11: {str(db)}}
    _insert(db, f"{int((T0 + 1.5) * 1000)}_hhhhh", 900, "running")
    reader.poll()
    reader.prepare([local, routed])
    assert reader.facts(local) is None
    found = reader.facts(routed)
    assert found is not None and found.native_id.endswith("_hhhhh")


def test_stale_rows_bind_to_nothing(tmp_path: Path) -> None:
    """A crashed TUI's row keeps ``running`` with a dead pid, or the pid of a hub that is
    gone (or whose pid a later hub reuses: its discovery record says when it started)."""
    view = View()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, T0 + 100)
    view.kids = {10: [11]}
    _insert(db, f"{int((T0 + 101) * 1000)}_dead1", 4242, "running")  # pid gone
    # A row of an earlier TUI whose Bun child had the pid this TUI's child has now:
    _insert(db, f"{int((T0 + 95) * 1000)}_old11", 11, "running")
    record = tmp_path / ".cline" / "data" / "locks" / "hub" / "production.json"
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"pid": 900, "startedAt": "2026-11-29T04:23:00.000Z"}))
    view.argvs[900] = [".cline", "--cline-hub-daemon"]
    _insert(db, f"{int((T0 + 102) * 1000)}_early", 900, "running")  # before this hub began
    reader.poll()
    reader.prepare([tui])
    assert reader.facts(tui) is None
    # Without the discovery record, the hub's row is the TUI's: the record is what said no.
    record.unlink()
    fresh = cline.ClineState(reader.root, ReaderContext(clock=lambda: 100.0, processes=view))
    fresh.poll()
    fresh.prepare([tui])
    found = fresh.facts(tui)
    assert found is not None and found.native_id.endswith("_early")


def test_garbage_rows_and_a_changed_schema_are_counted_not_raised(tmp_path: Path) -> None:
    view = View()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    _insert(db, "bad id with spaces", 11, "running")
    _insert(db, f"{int((T0 + 1) * 1000)}_ok123", 11, "running", metadata_json="{not json")
    _insert(db, f"{int((T0 + 2) * 1000)}_ok456", 11, "weird\u202estatus")
    reader.poll()
    reader.prepare([tui])
    found = reader.facts(tui)
    assert found is not None and found.native_id.endswith("_ok456")
    assert found.status is None and found.name == f"title of {found.native_id}"
    assert (reader.stats.garbage, reader.stats.lines) == (1, 2)  # the bad id; the others
    with sqlite3.connect(db) as conn:
        conn.execute("ALTER TABLE sessions RENAME COLUMN status TO state")
    conn.close()
    reader.poll()
    reader.prepare([tui])  # no exception: counted, the facts known so far kept
    assert (reader.stats.garbage, reader.stats.lines) == (2, 2)
    assert reader.facts(tui) == found


def test_nothing_is_read_while_nothing_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    view = View()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    _insert(db, f"{int((T0 + 1) * 1000)}_aaaaa", 11, "idle")
    reads = []
    real = read_database

    def counting(*args: object, **kwargs: object) -> object:
        reads.append(1)
        return real(*args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(sqlite_sessions, "read_database", counting)
    reader.poll()
    reader.prepare([tui])
    assert reader.facts(tui) is not None and len(reads) == 1
    for _ in range(5):
        reader.poll()  # watching off: a stat per pass, no query
        reader.prepare([tui])
        reader.facts(tui)
    assert len(reads) == 1
    _insert(db, f"{int((T0 + 1) * 1000)}_aaaaa", 11, "running", updated_at=_iso(T0 + 9))
    reader.changed(db)
    reader.prepare([tui])
    found = reader.facts(tui)
    assert len(reads) == 2 and found is not None and found.status == "busy"


def test_after_clear_in_hub_mode_the_new_conversation_goes_to_the_tui_that_ended_one(
    tmp_path: Path,
) -> None:
    """(Inferred: the recorded /clear ran in local mode.) Two hub TUIs in one directory:
    a new row goes to the one whose conversation /clear just completed."""
    view = View()
    view.argvs[900] = [".cline", "--cline-hub-daemon"]
    reader, db = _reader(tmp_path, view)
    a, b = _cli(10, T0), _cli(20, T0 + 30)
    view.kids = {10: [11], 20: [21]}
    _insert(db, f"{int((T0 + 1) * 1000)}_aaaaa", 900, "idle")
    _insert(db, f"{int((T0 + 31) * 1000)}_bbbbb", 900, "idle")
    reader.poll()
    reader.prepare([a, b])
    _insert(db, f"{int((T0 + 1) * 1000)}_aaaaa", 900, "completed", updated_at=_iso(T0 + 90))
    _insert(db, f"{int((T0 + 95) * 1000)}_ccccc", 900, "running")
    reader.poll()
    reader.prepare([a, b])
    fa, fb = reader.facts(a), reader.facts(b)
    assert fa is not None and fa.native_id.endswith("_ccccc") and fa.status == "busy"
    assert fb is not None and fb.native_id.endswith("_bbbbb")


def test_a_resumed_conversation_is_the_resuming_tuis(tmp_path: Path) -> None:
    """``cline --id <old>`` in local mode: the old row gets the new TUI's pid."""
    view = View()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, T0 + 100)
    view.kids = {10: [11]}
    _insert(db, f"{int((T0 + 2) * 1000)}_older", 7777, "completed")  # before the TUI: not read
    reader.poll()
    reader.prepare([tui])
    assert reader.facts(tui) is None
    _insert(db, f"{int((T0 + 2) * 1000)}_older", 11, "running", updated_at=_iso(T0 + 120))
    reader.poll()
    reader.prepare([tui])
    found = reader.facts(tui)
    assert found is not None and found.native_id.endswith("_older") and found.status == "busy"


def test_the_live_wal_database_is_read_in_place_without_side_files(tmp_path: Path) -> None:
    """As Cline keeps it: WAL mode, never checkpointed while it runs (the rows live in the
    -wal), the -shm present because Cline has it open."""
    view = View()
    root = tmp_path / ".cline"
    (root / "data" / "db").mkdir(parents=True)
    db = root / "data" / "db" / "sessions.db"
    writer = sqlite3.connect(db, isolation_level=None)
    writer.execute("PRAGMA journal_mode=WAL")
    writer.execute("PRAGMA wal_autocheckpoint=0")
    writer.executescript(SCHEMA)
    _insert(db, f"{int((T0 + 1) * 1000)}_walrw", 11, "pending")
    try:
        listed = sorted(p.name for p in db.parent.iterdir())
        assert listed == ["sessions.db", "sessions.db-shm", "sessions.db-wal"]
        reader = cline.ClineState(root, ReaderContext(clock=lambda: 100.0, processes=view))
        tui = _cli(10, T0)
        view.kids = {10: [11]}
        reader.poll()
        reader.prepare([tui])
        found = reader.facts(tui)
        assert found is not None and found.status == "waiting"
        assert sorted(p.name for p in db.parent.iterdir()) == listed
    finally:
        writer.close()


def test_a_fork_or_a_row_without_a_prompt_never_sends_its_title(tmp_path: Path) -> None:
    """`/fork` makes a row with no prompt of its own and the title "<first prompt> (fork)"
    (seen with Cline 3.0.65): that title is prompt text, and was sent as the name."""
    view = View()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    original = f"{int((T0 + 1) * 1000)}_orig1"
    prompt = "Secret customer list for ACME"
    _insert(
        db,
        original,
        11,
        "completed",
        prompt=f'<user_input mode="act">{prompt}</user_input>',
        metadata_json=json.dumps({"title": prompt}),
    )
    fork = f"{int((T0 + 2) * 1000)}_fork1"
    _insert(
        db,
        fork,
        11,
        "idle",
        prompt=None,
        metadata_json=json.dumps(
            {"title": f"{prompt} (fork)", "fork": {"forkedFromSessionId": original}}
        ),
    )
    reader.poll()
    reader.prepare([tui])
    found = reader.facts(tui)
    assert isinstance(found, ConversationFacts) and found.native_id == fork
    assert found.name is None
    # A row with no prompt and nothing to compare its title with: withheld too.
    _insert(db, fork, 11, "idle", prompt=None, metadata_json=json.dumps({"title": "x y"}))
    reader.poll()
    reader.prepare([tui])
    found = reader.facts(tui)
    assert isinstance(found, ConversationFacts) and found.name is None


def test_a_conversation_cleared_while_its_cli_runs_is_over_after_a_moment(tmp_path: Path) -> None:
    """/clear marks the current row completed; the next row comes with the next prompt.
    Closed for a while with its CLI alive, it is over (its session ends); /quit's, a moment
    before the exit, is not (no phantom session for the last instant of the process)."""
    view = View()
    root = tmp_path / ".cline"
    (root / "data" / "db").mkdir(parents=True)
    db = root / "data" / "db" / "sessions.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA)
    conn.close()
    now = [100.0]
    reader = cline.ClineState(root, ReaderContext(clock=lambda: now[0], processes=view))
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    sid = f"{int((T0 + 1) * 1000)}_first"
    _insert(db, sid, 11, "idle")
    reader.poll()
    reader.prepare([tui])
    assert getattr(reader.facts(tui), "over", None) is False
    _insert(db, sid, 11, "completed", updated_at=_iso(T0 + 5))  # /clear
    reader.poll()
    reader.prepare([tui])
    assert getattr(reader.facts(tui), "over", None) is False  # a moment: perhaps /quit
    now[0] += cline.CLOSE_GRACE_S
    reader.prepare([tui])
    found = reader.facts(tui)
    assert isinstance(found, ConversationFacts) and found.native_id == sid and found.over


# -- the processes alone ---------------------------------------------------------------------


def _pass(view: View, *procs: AgentProcess) -> Pass:
    return Pass.of(procs, view, lambda: 100.0)


def test_the_runners_are_the_cli_and_its_own_children_kept_for_its_life(tmp_path: Path) -> None:
    """Its Bun child (not a hub it started, not a tool the child runs) runs its sessions;
    a CLI with no child yet is asked again."""
    view = View()
    view.argvs[900] = [".cline", "--cline-hub-daemon"]
    view.kids = {10: [11, 900], 11: [12]}
    clis = cline_processes.ClineProcesses(tmp_path, tmp_path / "sessions.db", ReadStats())
    tui, lone = _cli(10, T0), _cli(20, T0)
    assert clis.runner_pids(_pass(view, tui), tui) == (10, 11)
    assert clis.runner_pids(_pass(view, lone), lone) == (20,)
    view.kids = {20: [21]}  # 10's child gone from this view: still its runner
    assert clis.runner_pids(_pass(view, tui), tui) == (10, 11)
    assert clis.runner_pids(_pass(view, lone), lone) == (20, 21)


def test_a_cli_seen_running_locally_stays_local_while_it_runs(tmp_path: Path) -> None:
    db = tmp_path / "sessions.db"
    view = View()
    view.argvs[900] = [".cline", "--cline-hub-daemon"]
    view.kids = {10: [11]}
    clis = cline_processes.ClineProcesses(tmp_path, db, ReadStats())
    tui, other, hub = _cli(10, T0), _cli(20, T0), _cli(900, T0)
    now = _pass(view, tui, other, hub)
    assert not clis.runs_locally(now, tui) and not clis.runs_locally(now, other)
    view.files = {11: {str(db)}}  # its Bun child opens the database
    assert clis.runs_locally(now, tui)
    view.files = {}
    assert clis.runs_locally(now, tui)  # closed between two passes: still local
    clis.seen_local(other)
    assert clis.runs_locally(now, other)
    live = {p.key: p for p in (tui, other, hub)}
    clis.update(now, live, set(live))
    assert clis.hubs == {hub.key} and clis.runs_locally(now, tui)
    clis.update(now, {tui.key: tui}, set())  # the others exited
    assert clis.hubs == set() and not clis.runs_locally(now, other)
    assert clis.runs_locally(now, tui) and clis.runner_pids(now, tui) == (10, 11)
    clis.update(now, {}, set())
    view.kids = {}
    later = _pass(view, tui)  # gone from the live set: forgotten, runners and all
    assert not clis.runs_locally(later, tui) and clis.runner_pids(later, tui) == (10,)


def test_the_hub_record_says_when_the_hub_with_its_pid_started(tmp_path: Path) -> None:
    clis = cline_processes.ClineProcesses(tmp_path, tmp_path / "sessions.db", ReadStats())
    assert clis.hub_started(900) is None  # no record
    record = tmp_path / cline_processes.HUB_RECORD
    record.parent.mkdir(parents=True)
    record.write_text(json.dumps({"pid": 900, "startedAt": "2026-11-29T04:23:00.000Z"}))
    assert clis.hub_started(900) == T0 + 180
    assert clis.hub_started(901) is None


# -- the rows alone ----------------------------------------------------------------------------


def test_a_turn_between_two_reads_is_seen_by_the_status_lock(tmp_path: Path) -> None:
    """Grown by TURN_WRITES or more while not running now (and not over): a turn began and
    ended unseen: work, at this read. Less, or running, or terminal: the row's own."""
    view = View()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    sid = f"{int((T0 + 1) * 1000)}_turns"

    _insert(db, sid, 11, "idle", status_lock=1)
    reader.poll()
    reader.prepare([tui])
    assert reader._table.rows[sid].last_write is None  # the first read: history
    rows = reader._table
    turn = cline_rows.TURN_WRITES
    for lock, status, seen in [
        (1 + turn - 1, "idle", False),  # one short of a turn
        (turn + turn, "idle", True),  # exactly a turn
        (3 * turn, "running", False),
        (4 * turn, "completed", False),
    ]:
        before = rows.rows[sid]
        before.last_write = 42.0  # what earlier reads saw: kept unless a turn is seen
        _insert(db, sid, 11, status, status_lock=lock, updated_at=_iso(T0 + 2 + lock))
        reader.poll()
        reader.prepare([tui])
        assert (rows.rows[sid].lock, rows.rows[sid].last_write) == (
            lock,
            100.0 if seen else 42.0,
        ), (lock, status)
    assert reader.stats.lines == 5  # the row, read five times


# -- a row as the query returns it, and the query on a real table ------------------------------

_ROOT_ID = "1795926000000_abcde"


def _raw(**fields: object) -> dict[str, object]:
    names = [*cline_sessions._REQUIRED, *cline_sessions._OPTIONAL, "metadata", "title_is_prompt"]
    raw: dict[str, object] = dict.fromkeys(names)
    raw.update(session_id=_ROOT_ID, pid=11, status="idle")
    raw.update(fields)
    return raw


def test_a_row_is_parsed_with_its_status_bounded() -> None:
    assert (row := cline_sessions.parse_row(_raw(status="W" * 32))) is not None
    assert row.status == "w" * 32
    assert cline_sessions.parse_row(_raw(status="w" * 33)) is None
    assert cline_sessions.parse_row(_raw(status=None)) is None
    assert cline_sessions.parse_row(_raw(session_id="bad id")) is None


def test_a_rows_numbers_are_ints_not_bools() -> None:
    row = cline_sessions.parse_row(_raw(pid=12, status_lock=4))
    assert row is not None and (row.pid, row.lock) == (12, 4)
    row = cline_sessions.parse_row(_raw(pid=True, status_lock=True))
    assert row is not None and (row.pid, row.lock) == (None, None)


def test_a_rows_times_come_from_its_id_else_started_at() -> None:
    row = cline_sessions.parse_row(_raw(updated_at="2026-11-29T04:20:05.000Z"))
    assert row is not None and (row.created, row.updated) == (1795926000.0, T0 + 5)
    row = cline_sessions.parse_row(
        _raw(session_id="task-one", started_at="2026-11-29T04:20:02.000Z")
    )
    assert row is not None and (row.created, row.updated, row.last_seen) == (T0 + 2, None, T0 + 2)


def test_a_sub_agent_rows_root_and_agent() -> None:
    sid = f"{_ROOT_ID}__agent7"
    row = cline_sessions.parse_row(_raw(session_id=sid, is_subagent=1, agent_id="other"))
    assert row is not None and (row.parent, row.agent_id) == (_ROOT_ID, "agent7")
    row = cline_sessions.parse_row(_raw(session_id=sid, is_subagent=0, agent_id="other"))
    assert row is not None and (row.parent, row.agent_id) == (None, "other")
    row = cline_sessions.parse_row(_raw(session_id=sid, parent_session_id=sid))
    assert row is not None and row.parent is None  # its own parent: none
    row = cline_sessions.parse_row(_raw(session_id="x__y", parent_session_id=_ROOT_ID))
    assert row is not None and (row.parent, row.agent_id) == (_ROOT_ID, None)


def test_a_rows_title_unless_it_is_the_prompt_and_its_source_capped() -> None:
    meta = json.dumps({"title": "Login fix"})
    for is_prompt, title in [(None, "Login fix"), (0, "Login fix"), (1, None)]:
        row = cline_sessions.parse_row(_raw(metadata=meta, title_is_prompt=is_prompt))
        assert row is not None and row.title == title
    row = cline_sessions.parse_row(_raw(source="s" * 70))
    assert row is not None and row.source == "s" * 64


def test_cline_times_as_text() -> None:
    assert cline_sessions.iso_time(T0 + 0.25) == "2026-11-29T04:20:00.250Z"
    assert cline_sessions.iso_time(-5.0) == "1970-01-01T00:00:00.000Z"
    assert cline_sessions.iso_time(1e20) == ""


def test_the_query_reads_since_the_cursor_oldest_first_and_bounds_the_metadata(
    tmp_path: Path,
) -> None:
    db = tmp_path / "sessions.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA)
    conn.close()
    limit = MAX_JSON_FILE_BYTES
    big = json.dumps({"title": "t", "pad": ""})
    big = big[:-2] + "x" * (limit - len(big)) + '"}'
    assert len(big) == limit
    _insert(db, "1795926001000_aaaaa", 11, "idle", metadata_json=big, prompt=None)
    _insert(db, "1795926002000_bbbbb", 11, "idle", metadata_json=big[:-2] + 'x"}', prompt=None)
    _insert(db, "1795926000000_ccccc", 11, "idle")
    conn = sqlite3.connect(db)
    try:
        rows = cline_sessions.query_sessions(conn, _iso(T0 + 1.5))
        assert [r["session_id"] for r in rows] == ["1795926001000_aaaaa", "1795926002000_bbbbb"]
        assert [r["metadata"] is not None for r in rows] == [True, False]
        conn.execute("ALTER TABLE sessions DROP COLUMN pid")
        with pytest.raises(sqlite_sessions.MissingColumns):
            cline_sessions.query_sessions(conn, "")
        conn.execute("DROP TABLE sessions")
        conn.execute("CREATE TABLE sessions (session_id TEXT, pid INTEGER, status TEXT)")
        conn.execute("INSERT INTO sessions VALUES ('1795926000000_ddddd', 11, 'idle')")
        [only] = cline_sessions.query_sessions(conn, "")  # the required columns and no more
        assert (only["session_id"], only["updated_at"], only["metadata"]) == (
            "1795926000000_ddddd",
            None,
            None,
        )
        # No updated_at: the newest rows (by rowid) up to the bound, oldest first.
        count = cline_sessions.MAX_ROWS + 1
        conn.executemany(
            "INSERT INTO sessions VALUES (?, 11, 'idle')", [(f"s{n:05d}",) for n in range(count)]
        )
        rows = cline_sessions.query_sessions(conn, "")
        assert len(rows) == cline_sessions.MAX_ROWS
        assert (rows[0]["session_id"], rows[-1]["session_id"]) == ("s00001", f"s{count - 1:05d}")
    finally:
        conn.close()


# -- the binding rules, at their edges (issue 24: mutation survivors) --------------------------


def _sid(at: float, tag: str) -> str:
    """A Cline id created at ``at`` (epoch seconds, to the millisecond)."""
    return f"{round(at * 1000)}_{tag}"


def _hub_view() -> View:
    view = View()
    view.argvs[900] = [".cline", "--cline-hub-daemon"]
    return view


def test_the_directory_of_sessions_db_is_watched(tmp_path: Path) -> None:
    reader, db = _reader(tmp_path, View())
    assert reader.watch_dirs() == [db.parent]
    assert reader.has_registry_dir()


def test_a_hub_among_the_agent_processes_is_no_session_and_no_runner(tmp_path: Path) -> None:
    """A hub the scanner reports (a binary named ``cline``) runs hub conversations for the
    CLIs: its own pid in a row names it as the hub, not as a CLI running its own."""
    view = _hub_view()
    reader, db = _reader(tmp_path, view)
    hub, tui = _cli(900, T0), _cli(10, T0 + 1)
    view.kids = {10: [11]}
    sid = _sid(T0 + 2, "viahb")
    _insert(db, sid, 900, "running")
    reader.poll()
    reader.prepare([hub, tui])
    assert reader.facts(hub) is None
    found = reader.facts(tui)
    assert found is not None and found.native_id == sid


def test_rows_no_running_cli_can_own_are_forgotten_when_the_oldest_exits(tmp_path: Path) -> None:
    view = View()
    reader, db = _reader(tmp_path, view)
    a, b = _cli(10, T0), _cli(20, T0 + 100)
    view.kids = {10: [11], 20: [21]}
    mine, dead, later = _sid(T0 + 1, "aaaaa"), _sid(T0 + 3, "dead1"), _sid(T0 + 101, "bbbbb")
    _insert(db, mine, 11, "idle")
    _insert(db, dead, 4242, "running")  # a crashed CLI's: bound to nothing, kept to try again
    _insert(db, later, 21, "idle")
    reader.poll()
    reader.prepare([a, b])
    assert set(reader._table.rows) == {mine, dead, later} and set(reader._unplaced) == {dead}
    reader.prepare([b])  # the oldest CLI exits: nothing before b's horizon can be anyone's
    assert set(reader._table.rows) == {later} and reader._unplaced == {}
    found = reader.facts(b)
    assert found is not None and found.native_id == later


def test_the_facts_of_a_pass_are_one_answer(tmp_path: Path) -> None:
    """Asked twice in one pass, a process's facts are the same, even with time gone by:
    the next pass looks again."""
    view = View()
    root = tmp_path / ".cline"
    (root / "data" / "db").mkdir(parents=True)
    db = root / "data" / "db" / "sessions.db"
    with sqlite3.connect(db) as conn:
        conn.executescript(SCHEMA)
    conn.close()
    now = [100.0]
    reader = cline.ClineState(root, ReaderContext(clock=lambda: now[0], processes=view))
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    _insert(db, _sid(T0 + 1, "clear"), 11, "completed")
    reader.poll()
    reader.prepare([tui])
    first = reader.facts(tui)
    assert first is not None and not first.over
    now[0] += cline.CLOSE_GRACE_S
    assert reader.facts(tui) == first
    reader.prepare([tui])
    again = reader.facts(tui)
    assert again is not None and again.over


def test_a_row_created_at_the_horizon_is_not_history(tmp_path: Path) -> None:
    """The horizon is the oldest CLI's start less CLOCK_SLACK_S: a finished row created
    exactly there is still placed (when changed since its CLI started, it is its own); a
    millisecond earlier it is history."""
    view = View()
    tui = _cli(10, T0 + 100)  # horizon: T0 + 90
    view.kids = {10: [11]}
    for at, bound in [(T0 + 90, True), (T0 + 89.999, False)]:
        reader, db = _reader(tmp_path / str(bound), view)
        sid = _sid(at, "edge1")
        _insert(db, sid, 11, "completed", updated_at=_iso(T0 + 101))
        reader.poll()
        reader.prepare([tui])
        found = reader.facts(tui)
        assert (found.native_id if found else None) == (sid if bound else None), at


def test_a_row_without_a_creation_time_is_placed_by_when_it_changed(tmp_path: Path) -> None:
    """Neither a timed id nor ``started_at``: older than every CLI, placed (when at work) by
    its ``updated_at``. On a clock near 1970 (a board without RTC, before NTP) too."""
    view = View()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, 10.5)  # the horizon is 0.5 s after the epoch
    view.kids = {10: [11]}
    _insert(db, "task-one", 11, "running", started_at="", updated_at=_iso(20.0))
    reader.poll()
    reader.prepare([tui])
    found = reader.facts(tui)
    assert found is not None and found.native_id == "task-one" and found.status == "busy"


def test_a_conversation_resumed_through_the_hub_goes_to_the_resuming_cli(tmp_path: Path) -> None:
    """``cline --id <row>`` in hub mode: the row, created long before, moves to the hub's
    pid; placed by when it moved, it is the new CLI's, no longer the old one's."""
    view = _hub_view()
    reader, db = _reader(tmp_path, view)
    old, new = _cli(10, T0), _cli(20, T0 + 99)
    view.kids = {10: [11], 20: [21]}
    sid = _sid(T0 + 1, "resum")
    _insert(db, sid, 11, "idle")
    reader.poll()
    reader.prepare([old, new])
    found = reader.facts(old)
    assert found is not None and found.native_id == sid and reader.facts(new) is None
    _insert(db, sid, 900, "running", updated_at=_iso(T0 + 100))
    reader.poll()
    reader.prepare([old, new])
    assert reader.facts(old) is None
    found = reader.facts(new)
    assert found is not None and found.native_id == sid and found.status == "busy"


def test_a_hub_row_read_late_is_placed_by_its_creation(tmp_path: Path) -> None:
    """Read a while after its first prompt (``updated_at`` later): still the first
    conversation of the CLI started just before it was created."""
    view = _hub_view()
    reader, db = _reader(tmp_path, view)
    a, b = _cli(10, T0), _cli(20, T0 + 30)
    view.kids = {10: [11], 20: [21]}
    sid = _sid(T0 + 31, "late1")
    _insert(db, sid, 900, "idle", updated_at=_iso(T0 + 45))
    reader.poll()
    reader.prepare([a, b])
    found = reader.facts(b)
    assert found is not None and found.native_id == sid
    assert reader.facts(a) is None and reader.ambiguous == 0


def test_rows_waiting_for_their_cli_are_bounded(tmp_path: Path) -> None:
    view = View()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    count = cline.MAX_UNPLACED + 5
    with sqlite3.connect(db) as conn:
        conn.executemany(
            "INSERT INTO sessions (session_id, source, pid, started_at, status, interactive,"
            " provider, model, cwd, workspace_root, enable_tools, enable_spawn, enable_teams,"
            " hook_path, updated_at) VALUES (?, 'cli', 4242, ?, 'running', 1, 'p', 'm1',"
            " '/src/app', '/src/app', 1, 1, 1, '', ?)",
            [
                (_sid(T0 + 1 + n / 100, f"d{n:04d}"), _iso(T0 + 1), _iso(T0 + 2))
                for n in range(count)
            ],
        )
    conn.close()
    reader.poll()
    reader.prepare([tui])
    assert len(reader._table.rows) == count  # read, and none is anyone's (the pid is dead)
    assert len(reader._unplaced) == cline.MAX_UNPLACED
    assert reader.facts(tui) is None


def test_a_row_waiting_for_its_cli_is_kept_while_created_since_the_horizon(
    tmp_path: Path,
) -> None:
    """A row whose CLI's Bun child was not seen yet waits; the oldest CLI exits and the
    horizon moves up: created exactly there it still waits, and binds when the child is
    seen; created a millisecond earlier it is history, waiting no more."""
    for at, bound in [(T0, True), (T0 - 0.001, False)]:
        view = View()
        reader, db = _reader(tmp_path / str(bound), view)
        a, b = _cli(10, T0), _cli(20, T0 + 10)  # after a exits, the horizon is T0
        view.kids = {10: [11]}  # b has no child yet
        sid = _sid(at, "waits")
        _insert(db, sid, 21, "running", updated_at=_iso(T0 + 15))
        reader.poll()
        reader.prepare([a, b])
        assert reader.facts(b) is None and set(reader._unplaced) == {sid}
        reader.prepare([b])
        view.kids = {20: [21]}
        other = _cli(30, T0 + 50, cwd="/src/other")
        reader.prepare([b, other])  # a new process: rows waiting are placed again
        found = reader.facts(b)
        assert (found.native_id if found else None) == (sid if bound else None), at


def test_a_rows_pid_must_name_a_process(tmp_path: Path) -> None:
    """Not a number, 0 or negative: no process (whatever a process table says of pid 0); 1
    is one (a CLI that is its container's init)."""
    view = _hub_view()
    view.argvs[0] = view.argvs[900]
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    for pid in ["x", 0, -11]:
        reader, db = _reader(tmp_path / str(pid), view)
        _insert(db, _sid(T0 + 1, "nopid"), pid, "running")  # type: ignore[arg-type]
        reader.poll()
        reader.prepare([tui])
        assert reader.facts(tui) is None, pid
    init = _cli(1, T0)
    reader, db = _reader(tmp_path / "init", view)
    sid = _sid(T0 + 1, "init1")
    _insert(db, sid, 1, "running")
    reader.poll()
    reader.prepare([init])
    found = reader.facts(init)
    assert found is not None and found.native_id == sid


def test_a_local_row_is_the_clis_from_start_slack_before_it_started(tmp_path: Path) -> None:
    """A row of the CLI's own runner pid last changed START_SLACK_S before the CLI started
    is its own (clocks differ); a millisecond earlier it is an earlier process's."""
    view = View()
    tui = _cli(10, T0 + 100)
    view.kids = {10: [11]}
    for at, bound in [(T0 + 98, True), (T0 + 97.999, False)]:
        reader, db = _reader(tmp_path / str(bound), view)
        sid = _sid(at, "slack")
        _insert(db, sid, 11, "idle", updated_at=_iso(at))
        reader.poll()
        reader.prepare([tui])
        found = reader.facts(tui)
        assert (found.native_id if found else None) == (sid if bound else None), at


def test_a_cli_seen_running_its_own_conversation_takes_no_hub_row(tmp_path: Path) -> None:
    """Not holding sessions.db open at the moment, but seen running a conversation of its
    own: in local mode, so a hub row in its directory is not its."""
    view = _hub_view()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    own = _sid(T0 + 1, "local")
    _insert(db, own, 11, "idle")
    reader.poll()
    reader.prepare([tui])
    _insert(db, _sid(T0 + 5, "hubrw"), 900, "running")
    reader.poll()
    reader.prepare([tui])
    found = reader.facts(tui)
    assert found is not None and found.native_id == own and reader.ambiguous == 0


def test_a_hub_row_from_start_slack_before_the_hub_started_is_its(tmp_path: Path) -> None:
    """The discovery record says when the hub with the row's pid started: a row created
    START_SLACK_S before that is the hub's; a millisecond earlier, an earlier hub's."""
    view = _hub_view()
    tui = _cli(10, T0 + 177)
    view.kids = {10: [11]}
    for at, bound in [(T0 + 178, True), (T0 + 177.999, False)]:
        reader, db = _reader(tmp_path / str(bound), view)
        record = reader.root / cline_processes.HUB_RECORD
        record.parent.mkdir(parents=True)
        record.write_text(json.dumps({"pid": 900, "startedAt": _iso(T0 + 180)}))
        sid = _sid(at, "hubed")
        _insert(db, sid, 900, "running")
        reader.poll()
        reader.prepare([tui])
        found = reader.facts(tui)
        assert (found.native_id if found else None) == (sid if bound else None), at


def test_a_hub_row_of_no_clis_directory_goes_to_the_cli_that_just_started(
    tmp_path: Path,
) -> None:
    """No CLI in the row's directory: the one started just before it was created."""
    view = _hub_view()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    sid = _sid(T0 + 1, "there")
    _insert(db, sid, 900, "running", cwd="/src/elsewhere", workspace_root="/src/elsewhere")
    reader.poll()
    reader.prepare([tui])
    found = reader.facts(tui)
    assert found is not None and found.native_id == sid


def test_a_hub_row_goes_to_the_only_cli_in_its_directory_not_a_fresh_one_elsewhere(
    tmp_path: Path,
) -> None:
    view = _hub_view()
    reader, db = _reader(tmp_path, view)
    here, there = _cli(10, T0), _cli(20, T0 + 30, cwd="/src/other")
    view.kids = {10: [11], 20: [21]}
    sid = _sid(T0 + 31, "mydir")
    _insert(db, sid, 900, "running")
    reader.poll()
    reader.prepare([here, there])
    found = reader.facts(here)
    assert found is not None and found.native_id == sid
    assert reader.facts(there) is None and reader.ambiguous == 0


def test_a_hub_row_two_clis_could_own_is_counted_and_given_to_neither(tmp_path: Path) -> None:
    view = _hub_view()
    reader, db = _reader(tmp_path, view)
    a, b = _cli(10, T0), _cli(20, T0 + 30)
    view.kids = {10: [11], 20: [21]}
    _insert(db, _sid(T0 + 60, "which"), 900, "running")  # neither's first conversation
    reader.poll()
    reader.prepare([a, b])
    assert reader.facts(a) is None and reader.facts(b) is None
    assert reader.ambiguous == 1


def test_sub_agents_are_ordered_by_creation_then_id(tmp_path: Path) -> None:
    """A sub-agent with no creation time first; then by time (not by id)."""
    view = View()
    reader, db = _reader(tmp_path, view)
    tui = _cli(10, T0)
    view.kids = {10: [11]}
    root = _sid(T0 + 1, "rooty")
    _insert(db, root, 11, "running")
    for sid, started in [
        ("sub-c", _iso(T0 + 5)),
        ("sub-d", _iso(T0 + 3)),
        ("sub-a", "1970-01-01T00:00:00.500Z"),
        ("sub-b", ""),
    ]:
        _insert(
            db,
            sid,
            11,
            "running",
            started_at=started,
            parent_session_id=root,
            is_subagent=1,
            updated_at=_iso(T0 + 6),
        )
    reader.poll()
    reader.prepare([tui])
    found = reader.facts(tui)
    assert found is not None and found.native_id == root
    assert [s.agent_id for s in found.subagents] == ["sub-b", "sub-a", "sub-d", "sub-c"]
