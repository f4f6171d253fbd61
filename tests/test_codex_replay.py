"""Codex, as the real CLI behaved: every recorded step of two runs replayed in order with
its process tree (tests/replay.py), and the exact events asserted.

- ``../shared/fixtures/codex``: one TUI; a prompt, a rename, a tool, ``/new``, a prompt,
  ``/quit`` (the daemon lives on), the daemon stopped.
- ``tests/fixtures/codex-two-tuis``: two TUIs in one directory at once; prompts in both,
  ``/new`` in A, B quits, A quits.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import needs_fixtures
from replay import (
    MACHINE,
    Replay,
    at_size,
    clock_time,
    day_of,
    files_txt,
    load_processes,
    set_mtime,
    story,
    uuid7_time,
)

from quintd.identity import native_session_id, process_session_id
from quintd.model import LifecycleEvent

TWO = Path(__file__).parent / "fixtures" / "codex-two-tuis"
KEEP = (
    "thread-writer-locks/0",
    "tui-thread-reference-capabilities/",
    "session_index.jsonl",
    "sessions/",
)


def _lay_out(
    root: Path,
    listed: dict[str, tuple[int, str | None]],
    snapshot: Path,
    final: Path,
    mtime: dict[str, float],
) -> None:
    """~/.codex as it stood: the files listed at that step (sizes as listed: they only
    grew), copied from the snapshot where it has them, else cut from the final file."""
    wanted = {
        rel.removeprefix(".codex/"): size
        for rel, (size, _mod) in listed.items()
        if rel.removeprefix(".codex/").startswith(KEEP)
    }
    for path in list(root.rglob("*")):
        if path.is_file() and str(path.relative_to(root)) not in wanted:
            path.unlink()
    for rel, size in wanted.items():
        target = root / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        if (snapshot / rel).exists():
            shutil.copyfile(snapshot / rel, target)
        elif (final / rel).exists():
            at_size(final / rel, target, size)
        elif not target.exists() or target.stat().st_size != size:
            target.write_bytes(b"")
        if rel in mtime:
            set_mtime(target, mtime[rel])


def _captured_run(
    fixture: Path, tmp_path: Path, idle_after: float = 3600.0
) -> Iterator[tuple[str, Replay, list[LifecycleEvent]]]:
    """A captured Codex run replayed step by step: ~/.codex laid out as it stood at each
    step, then a pass with that step's processes; yields the step, the replay (to restart
    or look into between steps) and the step's events."""
    steps = sorted(p.stem for p in (fixture / "processes").glob("*.json"))
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    first_taken = json.loads((fixture / "processes" / f"{steps[0]}.json").read_text())["taken"]
    replay = Replay(home, first_taken - 30, idle_after=idle_after)
    for step in steps:
        taken = json.loads((fixture / "processes" / f"{step}.json").read_text())["taken"]
        listed = files_txt(fixture / "snapshots" / step / "files.txt")
        day = day_of(taken)
        mtimes = {
            rel.removeprefix(".codex/"): clock_time(day, mod)
            for rel, (_size, mod) in listed.items()
            if mod
        }
        _lay_out(
            home / ".codex",
            listed,
            fixture / "snapshots" / step / "home" / ".codex",
            fixture / "home" / ".codex",
            mtimes,
        )
        events = replay.step(load_processes(fixture / "processes" / f"{step}.json"), taken)
        yield step, replay, events


@pytest.mark.parametrize("restart_after", [None, "03-a-prompt-idle", "06-a-new", "09-b-quit"])
def test_two_tuis_in_one_directory(tmp_path: Path, restart_after: str | None) -> None:
    """With a restart of quintd in the middle, nothing changes: same ids, same events."""
    per_step = {}
    for step, replay, events in _captured_run(TWO, tmp_path):
        per_step[step] = events
        if step == restart_after:
            replay.restart()
        # The shared daemon, its pid loop and tool processes are never sessions.
        assert {a.pid for a in replay.agents} <= {17550, 17982}, step
    assert len(per_step) == 14

    a1, b1, a2 = (
        "01a22595-1795-7cf3-8949-85231c666704",
        "01a22595-32c1-7303-832d-d098b1c42134",
        "01a22595-c42e-7950-b6fc-e29d93b28534",
    )
    uid = os.getuid()
    by_label = {}
    for e in replay.events:
        by_label.setdefault(e.session_id, []).append(e)
    assert story(replay.events) == [
        ("s1", "active", "shop-api", None, None),  # A, thread A1
        ("s2", "active", "shop-api", None, None),  # B, thread B1
        ("s1", "active", "Fix auth middleware token expiry", "gpt-6.2-sol", None),
        ("s2", "active", "Run the integration tests", "gpt-6.2-sol", None),
        ("s3", "active", "shop-api", None, None),  # A's /new: thread A2
        ("s1", "ended", "Fix auth middleware token expiry", "gpt-6.2-sol", None),
        ("s3", "active", "Add rate limiting to the API", "gpt-6.2-sol", None),
        ("s2", "ended", "Run the integration tests", "gpt-6.2-sol", None),  # B quit
        ("s3", "ended", "Add rate limiting to the API", "gpt-6.2-sol", None),  # A quit
    ]
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    # Each conversation under the id of its own thread (the threads were there at once),
    # bound to the user who owns the files.
    assert ids == [native_session_id(MACHINE, "codex", t, uid=uid) for t in (a1, b1, a2)]
    assert [e.state for e in per_step["06-a-new"]] == ["active", "ended"]  # at /new, at once
    assert [e.state for e in per_step["09-b-quit"]] == ["ended"]  # B's exit, not the unload
    assert [e.state for e in per_step["11-a-quit"]] == ["ended"]
    assert all(e.signing_id for e in replay.events)


def test_two_tuis_busy_and_idle_follow_the_turns(tmp_path: Path) -> None:
    """The same run with a short idle_after: busy between task_started and task_complete."""
    facts_seen = {}
    for step, replay, _events in _captured_run(TWO, tmp_path, idle_after=5.0):
        facts, _ = replay.sources.observe(replay.agents)
        facts_seen[step] = {pid: getattr(f, "status", None) for pid, f in facts.items()}
    assert facts_seen["02-a-prompt-busy"][17550] == "busy"
    assert facts_seen["03-a-prompt-idle"][17550] == "idle"
    assert facts_seen["04-b-tool-running"][17982] == "busy"
    assert facts_seen["05-b-prompt-idle"][17982] == "idle"
    assert facts_seen["07-a2-prompt-busy"][17550] == "busy"
    states = [(e.state, e.kind) for e in replay.events if e.kind != "update"]
    assert ("idle", "transition") in states and ("active", "transition") in states


@pytest.mark.parametrize("restart_after", [None, "03-renamed", "05-after-new"])
def test_one_tui_prompt_rename_tool_new_quit(tmp_path: Path, restart_after: str | None) -> None:
    fixtures = needs_fixtures("codex")
    t1 = uuid7_time("01a22545-bd15-7ed3-b9a3-18a00ba9ff23")
    t2 = uuid7_time("01a22545-ec59-78f3-a27a-9eed6dff0a1e")
    # The recording has no start times: the story (README) has the TUI start ~2 s before
    # its first thread and the daemon just after; a capability file is written just after
    # its thread is created.
    starts = {26753: t1 - 2.5, 26755: t1 - 2.2, 26767: t1 - 2.1, 26798: t1 - 1.0, 26877: t1 - 0.9}
    mtimes = {
        f"tui-thread-reference-capabilities/{t}": uuid7_time(t) + 0.1
        for t in ("01a22545-bd15-7ed3-b9a3-18a00ba9ff23", "01a22545-ec59-78f3-a27a-9eed6dff0a1e")
    }
    plan = [  # step, its time, the process tree recorded nearest before it, files.txt
        ("00-started", t1 + 1, "00-started-idle", "00-started"),
        ("01-first-prompt-busy", t1 + 3, "01-first-prompt-busy", "01-first-prompt-busy"),
        ("02-first-prompt-idle", t1 + 6, "01-first-prompt-busy", None),
        ("03-renamed", t1 + 8, "01-first-prompt-busy", None),
        ("04-tool-running", t1 + 10, "04-tool-running", None),
        ("05-after-new", t2 + 1, "06-second-conversation-idle", "05-after-new"),
        (
            "06-second-conversation-idle",
            t2 + 6,
            "06-second-conversation-idle",
            "06-second-conversation-idle",
        ),
        ("07-after-quit", t2 + 12, "07-after-quit", "07-after-quit"),
        ("08-daemon-stopped", t2 + 17, "07-after-quit", "08-daemon-stopped"),
    ]
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    replay = Replay(home, t1 - 10)
    listed: dict[str, tuple[int, str | None]] = {}
    events = {}
    for step, at, tree, listing in plan:
        if listing is not None:
            listed = files_txt(fixtures / "snapshots" / listing / "files.txt")
        snapshot = fixtures / "snapshots" / step / "home" / ".codex"
        # Snapshots without a listing hold the files that changed: as long as they are.
        for path in snapshot.rglob("*.jsonl") if snapshot.is_dir() else ():
            rel = ".codex/" + str(path.relative_to(snapshot))
            listed[rel] = (path.stat().st_size, None)
        _lay_out(home / ".codex", listed, snapshot, fixtures / "home" / ".codex", mtimes)
        recs = load_processes(fixtures / "processes" / f"{tree}.json", starts)
        events[step] = replay.step(recs, at)
        if step == restart_after:
            replay.restart()
        assert {a.pid for a in replay.agents} <= {26755}, step  # never the daemon
    uid = os.getuid()
    first = native_session_id(MACHINE, "codex", "01a22545-bd15-7ed3-b9a3-18a00ba9ff23", uid=uid)
    second = native_session_id(MACHINE, "codex", "01a22545-ec59-78f3-a27a-9eed6dff0a1e", uid=uid)
    assert story(replay.events) == [
        ("s1", "active", "shop-api", None, None),
        ("s1", "active", "Fix auth middleware token expiry", "gpt-6.2-sol", None),
        ("s1", "active", "Token expiry fix", "gpt-6.2-sol", None),  # /rename
        ("s2", "active", "shop-api", None, None),  # /new
        ("s1", "ended", "Token expiry fix", "gpt-6.2-sol", None),
        ("s2", "active", "Add rate limiting to the API", "gpt-6.2-sol", None),
        ("s2", "ended", "Add rate limiting to the API", "gpt-6.2-sol", None),  # /quit
    ]
    assert list(dict.fromkeys(e.session_id for e in replay.events)) == [first, second]
    assert events["07-after-quit"] and events["08-daemon-stopped"] == []


def test_the_tui_is_announced_before_its_thread_and_keeps_that_id(tmp_path: Path) -> None:
    """A TUI seen before it attached its first thread is announced as its process; the
    thread, when it appears, takes that session over: one session, not two."""
    steps = sorted(p.stem for p in (TWO / "processes").glob("*.json"))
    home = tmp_path / "home"
    (home / ".codex").mkdir(parents=True)
    recs = load_processes(TWO / "processes" / f"{steps[0]}.json")
    tui_start = next(r.start_time for r in recs if r.pid == 17550)
    replay = Replay(home, tui_start)
    [start] = replay.step(recs, tui_start + 3.5)  # no capability file yet, grace over
    assert start.session_id == process_session_id(MACHINE, "codex", 17550, round(tui_start * 1000))
    taken = json.loads((TWO / "processes" / f"{steps[0]}.json").read_text())["taken"]
    listed = files_txt(TWO / "snapshots" / steps[0] / "files.txt")
    day = day_of(taken)
    mtimes = {r.removeprefix(".codex/"): clock_time(day, m) for r, (_s, m) in listed.items() if m}
    _lay_out(
        home / ".codex",
        listed,
        TWO / "snapshots" / steps[0] / "home" / ".codex",
        TWO / "home" / ".codex",
        mtimes,
    )
    assert replay.step(recs, taken) == []  # the thread took the session over: no event
    [live] = replay.tracker.sessions
    assert live.session_id == start.session_id
    assert live.native_id == "01a22595-1795-7cf3-8949-85231c666704"


@pytest.mark.parametrize("argv", [["codex", "exec", "fix it"], ["codex", "app-server"]])
def test_exec_and_an_editors_app_server_run_the_rollouts_they_hold(
    tmp_path: Path, argv: list[str]
) -> None:
    home = tmp_path / "home"
    day = home / ".codex" / "sessions" / "2026" / "11" / "29"
    day.mkdir(parents=True)
    thread = "01a22595-1795-7cf3-8949-85231c666704"
    rollout = day / f"rollout-2026-11-29T04-34-17-{thread}.jsonl"
    final = TWO / "home" / ".codex" / "sessions" / "2026" / "11" / "29" / rollout.name
    shutil.copyfile(final, rollout)
    shutil.copyfile(
        TWO / "home" / ".codex" / "session_index.jsonl", home / ".codex" / "session_index.jsonl"
    )
    start = uuid7_time(thread) - 1
    from replay import Rec

    rec = Rec(
        pid=4242,
        ppid=1,
        comm="codex",
        exe="/usr/local/bin/codex",
        argv=argv,
        cwd="/home/dev/src/shop-api",
        start_time=start,
        open_files=[f"/home/dev/.codex/sessions/2026/11/29/{rollout.name}"],
    )
    replay = Replay(home, start)
    replay.step([rec], start + 60)
    [session] = replay.tracker.sessions
    assert (session.native_id, session.session_name, session.model) == (
        thread,
        "Fix auth middleware token expiry",
        "gpt-6.2-sol",
    )


def test_a_spawned_sub_agent_is_a_child_of_the_conversation_that_spawned_it(
    tmp_path: Path,
) -> None:
    """A sub-agent's thread names its parent in its ``session_meta`` (``source.subagent.
    thread_spawn.parent_thread_id``, the shape of Codex's own serde types): it is a child
    session of that conversation, named by its nickname, with its own model and turns,
    never a conversation of its own; it ends when the daemon unloads it."""
    home = tmp_path / "home"
    codex = home / ".codex"
    day = codex / "sessions" / "2026" / "11" / "29"
    day.mkdir(parents=True)
    (codex / "thread-writer-locks").mkdir()
    parent = "01a22595-1795-7cf3-8949-85231c666704"
    child = "01a22595-32c1-7303-832d-d098b1c42134"
    final = TWO / "home" / ".codex" / "sessions" / "2026" / "11" / "29"
    parent_rollout = day / f"rollout-2026-11-29T04-34-17-{parent}.jsonl"
    shutil.copyfile(final / parent_rollout.name, parent_rollout)
    child_rollout = day / f"rollout-2026-11-29T04-34-24-{child}.jsonl"
    lines = (final / child_rollout.name).read_text().splitlines()
    meta = json.loads(lines[0])
    assert meta["type"] == "session_meta" and meta["payload"]["id"] == child
    spawn = {"parent_thread_id": parent, "depth": 1, "agent_path": None}
    spawn |= {"agent_nickname": "Ada", "agent_role": "explorer"}
    meta["payload"] |= {"source": {"subagent": {"thread_spawn": spawn}}, "agent_nickname": "Ada"}
    busy = [line for line in lines[1:] if '"task_complete"' not in line]
    child_rollout.write_text("\n".join([json.dumps(meta), *busy]) + "\n")
    lock = codex / "thread-writer-locks" / f"{child}.lock"
    lock.touch()
    start = uuid7_time(parent) - 1
    from replay import Rec

    held = [
        f"/home/dev/.codex/sessions/2026/11/29/{p.name}" for p in (parent_rollout, child_rollout)
    ]
    rec = Rec(
        pid=4242,
        ppid=1,
        comm="codex",
        exe="/usr/local/bin/codex",
        argv=["codex", "exec", "fix it"],
        cwd="/home/dev/src/shop-api",
        start_time=start,
        open_files=held,
    )
    replay = Replay(home, start)
    replay.step([rec], start + 60)
    by_native = {s.native_id: s for s in replay.tracker.sessions}
    top = by_native[parent]
    sub = by_native[f"{parent}:agent:{child}"]
    assert set(by_native) == {parent, f"{parent}:agent:{child}"}  # no session of its own
    assert (top.parent_id, sub.parent_id) == (None, top.session_id)
    assert (sub.session_name, sub.model, sub.state) == ("Ada", "gpt-6.2-sol", "active")
    # Its turn completes and the daemon unloads it: the child ends, the parent goes on.
    with child_rollout.open("a") as out:
        out.write(next(line for line in lines if '"task_complete"' in line) + "\n")
    replay.step([rec], start + 70)
    assert by_native[f"{parent}:agent:{child}"].session_id in {
        s.session_id for s in replay.tracker.sessions
    }
    lock.unlink()
    ended = replay.step([rec], start + 80)
    assert [(e.session_id, e.state) for e in ended] == [(sub.session_id, "ended")]
    assert [s.native_id for s in replay.tracker.sessions] == [parent]


SUB = Path(__file__).parent / "fixtures" / "codex-subagent"


def _replay_sub_agent_run(tmp_path: Path, idle_after: float) -> tuple[Replay, dict[str, Any]]:
    seen: dict[str, Any] = {}
    for step, replay, _events in _captured_run(SUB, tmp_path, idle_after):
        facts, _ = replay.sources.observe(replay.agents)
        seen[step] = list(facts.values())
        assert {a.pid for a in replay.agents} <= {18114}, step  # the TUI (its npm wrapper)
    assert len(seen) == 12
    return replay, seen


def test_a_real_sub_agent_is_a_child_of_its_parent_conversation(tmp_path: Path) -> None:
    """Codex 0.171.0 (tests/fixtures/codex-subagent): the parent spawns a sub-agent
    (``collaboration.spawn_agent``) that the shared daemon runs in a thread of its own;
    the parent waits for it, follows up, and the user quits. The sub-agent is a child
    session of the parent conversation (its ``session_meta`` names the parent), named by its
    nickname, busy while its turns run; it ends with its parent (the daemon keeps it loaded
    until the parent's thread unloads)."""
    replay, seen = _replay_sub_agent_run(tmp_path, idle_after=3600.0)
    parent, child = "01a226da-7ac7-7603-b42b-0c0f8143e8fb", "01a226da-943b-79a3-ba08-0249cb8177ce"
    assert story(replay.events) == [
        ("s1", "active", "shop-api", None, None),  # the TUI's thread, before any prompt
        ("s1", "active", "Audit the billing module", "gpt-6.2-sol", None),  # title, model
        ("s2", "active", "Epicurus", "gpt-6.2-sol", "s1"),  # spawned: the parent's child
        ("s2", "ended", "Epicurus", "gpt-6.2-sol", "s1"),  # /quit: with its parent
        ("s1", "ended", "Audit the billing module", "gpt-6.2-sol", None),
    ]
    uid = os.getuid()
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    assert ids[0] == native_session_id(MACHINE, "codex", parent, uid=uid)
    assert {e.parent_id for e in replay.events if e.session_id == ids[1]} == {ids[0]}
    assert ids[1] == native_session_id(MACHINE, "codex", parent, child, uid=uid)
    facts = {step: [f for f in found if f is not None] for step, found in seen.items()}
    [(sub, sub_step)] = [
        (f.subagents[0], step) for step, fs in facts.items() for f in fs if f.subagents
    ][:1]
    assert (sub.agent_id, sub.name, sub.model, sub_step) == (
        child,
        "Epicurus",
        "gpt-6.2-sol",
        "01-spawn-requested",
    )

    def child_status(step: str) -> str | None:
        [conv] = facts[step]
        [only] = conv.subagents
        return only.status

    assert child_status("02-child-busy") == "busy"
    assert child_status("03-child-finished") == "idle"
    assert child_status("05-followup-child-busy") == "busy"
    assert child_status("06-followup-idle") == "idle"
    assert [f.native_id for f in facts["04-parent-idle"]] == [parent]  # never the TUI's own
