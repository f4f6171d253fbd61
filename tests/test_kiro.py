"""Kiro CLI: no CLI can run here and no fixture exists, so ``~/.kiro/sessions/cli`` is
built in the shape kiro-cli writes as recorded by third-party readers (the sidecar below
follows inference-sh/agentprotocol's kiro-written testdata
``transcript/kiro/testdata/home/.kiro/sessions/cli/e53ccf60-....json`` at
16279d6e5fd3eec16fda44f360466a2e547d1edd, kiro-cli-chat 2.24.0), step by step, and replayed
with hand-made process records (tests/replay.py). Unverified against a real run."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import pytest
from replay import MACHINE, Rec, RecordedProcesses, Replay, agents, story

from quintd.identity import native_session_id
from quintd.model import ConversationFacts
from quintd.sources import files as files_mod
from quintd.sources import kiro, kiro_sessions
from quintd.sources import times as kiro_times
from quintd.sources.files import JsonlTail, ReadStats
from quintd.sources.spec import ReaderContext

T0 = 1_790_000_000.0
MODEL = "claude-sonnet-4.5"
A = "e53ccf60-1111-4a2b-9c3d-000000000001"
B = "b0b0b0b0-2222-4a2b-9c3d-000000000002"
C = "c0c0c0c0-3333-4a2b-9c3d-000000000003"


def _iso(at: float) -> str:
    return datetime.fromtimestamp(at, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f") + "123Z"


class KiroDir:
    """``~/.kiro/sessions/cli`` written as kiro-cli writes it, with this test's clock for
    file times."""

    def __init__(self, home: Path) -> None:
        self.dir = home / ".kiro" / "sessions" / "cli"
        self.dir.mkdir(parents=True)
        self.turns: dict[str, list[dict]] = {}

    def _write(self, name: str, body: str, at: float, append: bool = False) -> None:
        path = self.dir / name
        with open(path, "a" if append else "w") as fh:
            fh.write(body)
        os.utime(path, (at, at))

    def sidecar(
        self, sid: str, cwd: Path, at: float, title: str = "", parent: str | None = None
    ) -> None:
        data: dict = {
            "session_id": sid,
            "cwd": str(cwd),
            "created_at": _iso(at),
            "updated_at": _iso(at),
            "title": title,
            "session_created_reason": "subagent",
        }
        if parent:
            data["parent_session_id"] = parent
        data["session_state"] = {
            "version": "v1",
            "conversation_metadata": {
                "user_turn_metadatas": self.turns.setdefault(sid, []),
                "last_context_usage": None,
                "user_turn_start_request": None,
                "last_request": None,
            },
            "rts_model_state": {
                "conversation_id": sid,
                "model_info": {
                    "model_name": MODEL,
                    "model_id": MODEL,
                    "context_window_tokens": 200000,
                },
                "context_usage_percentage": None,
            },
            "permissions": {"filesystem": {"allowed_read_paths": [str(cwd)]}},
            "agent_name": "kiro_default",
            "goal": None,
        }
        self._write(f"{sid}.json", json.dumps(data, indent=2), at)

    def turn_ended(self, sid: str, cwd: Path, at: float, title: str) -> None:
        self.turns.setdefault(sid, []).append(
            {"end_reason": "UserTurnEnd", "end_timestamp": _iso(at), "model": MODEL}
        )
        self.sidecar(sid, cwd, at, title)

    def record(self, sid: str, kind: str, at: float, **data: object) -> None:
        line = json.dumps({"version": "v1", "kind": kind, "data": data}) + "\n"
        self._write(f"{sid}.jsonl", line, at, append=True)

    def prompt(self, sid: str, at: float) -> None:
        self.record(
            sid,
            "Prompt",
            at,
            message_id="p1",
            content=[{"kind": "text", "data": "fix it"}],
            meta={"timestamp": int(at)},
        )

    def answer(self, sid: str, at: float, tool: bool = False) -> None:
        content: list[dict] = [{"kind": "text", "data": "ok"}]
        if tool:
            content.append({"kind": "toolUse", "data": {"toolUseId": "t1", "name": "fs_read"}})
        self.record(sid, "AssistantMessage", at, message_id="a1", content=content)

    def lock(self, sid: str, pid: int, at: float) -> None:
        self._write(f"{sid}.lock", json.dumps({"pid": pid}), at)

    def unlock(self, sid: str) -> None:
        (self.dir / f"{sid}.lock").unlink()


def _tree(project: Path, start: float = T0, pid: int = 700) -> list[Rec]:
    """kiro-cli, the kiro-cli-chat it runs (which holds the lock) and its bun TUI."""
    bin_dir = "/home/dev/.local/bin"
    return [
        Rec(pid, 1, "kiro-cli", f"{bin_dir}/kiro-cli", ["kiro-cli"], str(project), start),
        Rec(
            pid + 1,
            pid,
            "kiro-cli-chat",
            f"{bin_dir}/kiro-cli-chat",
            ["kiro-cli-chat", "chat"],
            str(project),
            start + 0.2,
        ),
        Rec(
            pid + 2,
            pid,
            "bun",
            "/home/dev/.local/share/kiro-cli/bun",
            ["bun", "/home/dev/.local/share/kiro-cli/tui/tui.js"],
            str(project),
            start + 0.3,
        ),
    ]


def _setup(tmp_path: Path) -> tuple[Path, Path, KiroDir]:
    home = tmp_path / "home"
    project = home / "src" / "shop"
    project.mkdir(parents=True)
    return home, project, KiroDir(home)


def _id(native: str, agent: str | None = None) -> str:
    return native_session_id(MACHINE, "kiro", native, agent, uid=os.getuid())


def test_kiro_start_prompt_idle_subagent_clear_rewind_and_exit(tmp_path: Path) -> None:
    home, project, files = _setup(tmp_path)
    replay = Replay(home, T0, idle_after=30, readers=(kiro.SPEC,))
    procs = _tree(project)

    replay.step(procs, T0 + 0.4)  # nothing on disk yet: the process's own session
    files.sidecar(A, project, T0 + 1)
    files.lock(A, 701, T0 + 1)  # kiro-cli-chat's pid
    replay.step(procs, T0 + 2)
    files.prompt(A, T0 + 5)
    files.sidecar(A, project, T0 + 5, "Fix the flaky test")
    replay.step(procs, T0 + 6)
    files.answer(A, T0 + 7, tool=True)
    files.record(A, "ToolResults", T0 + 8, message_id="r1", content=[])
    replay.step(procs, T0 + 9)
    files.answer(A, T0 + 10)
    files.turn_ended(A, project, T0 + 10, "Fix the flaky test")
    replay.step(procs, T0 + 11)
    replay.restart()
    replay.step(procs, T0 + 12)
    replay.step(procs, T0 + 45)  # quiet: idle
    # A sub-agent: a session of its own with parent_session_id.
    files.prompt(A, T0 + 50)
    files.answer(A, T0 + 51, tool=True)
    files.sidecar(B, project, T0 + 51, "[AGENT SYSTEM PROMPT] review", parent=A)
    files.lock(B, 701, T0 + 51)
    files.prompt(B, T0 + 51)
    replay.step(procs, T0 + 52)
    replay.restart()
    replay.step(procs, T0 + 53)
    files.answer(B, T0 + 60)
    files.unlock(B)
    files.record(A, "ToolResults", T0 + 60, message_id="r2", content=[])
    files.answer(A, T0 + 61)
    replay.step(procs, T0 + 62)
    files.record(A, "Clear", T0 + 70)  # /clear: same id
    replay.step(procs, T0 + 71)
    # A rewind forks a new session.
    files.sidecar(C, project, T0 + 80, "Fix the flaky test")
    files.lock(C, 701, T0 + 80)
    files.prompt(C, T0 + 80)
    replay.step(procs, T0 + 81)
    files.unlock(A)
    files.unlock(C)
    replay.step([], T0 + 90)

    # Kiro's title is the first prompt: never a name (prompt text stays on the machine).
    name = "shop"
    assert story(replay.events) == [
        ("s1", "active", "shop", None, None),
        ("s1", "active", "shop", MODEL, None),  # the sidecar named the conversation
        ("s1", "idle", name, MODEL, None),
        ("s1", "active", name, MODEL, None),
        ("s2", "active", None, MODEL, "s1"),  # an internal prompt is not a name
        ("s2", "ended", None, MODEL, "s1"),
        ("s3", "active", name, MODEL, None),
        ("s1", "ended", name, MODEL, None),
        ("s3", "ended", name, MODEL, None),
    ]
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    assert ids[1:] == [_id(A, B), _id(C)]


def test_kiro_busy_and_idle_from_the_last_record(tmp_path: Path) -> None:
    home, project, files = _setup(tmp_path)
    files.sidecar(A, project, T0 + 1)
    files.lock(A, 700, T0 + 1)  # the launcher itself may hold it
    replay = Replay(home, T0, readers=(kiro.SPEC,))
    replay.step(_tree(project), T0 + 2)

    def status() -> str | None:
        facts, _ = replay.sources.observe(replay.agents)
        found = facts[700]
        assert isinstance(found, ConversationFacts)
        return found.status

    seen = [status()]
    for kind, at in (
        ("Prompt", 3),
        ("AssistantMessage+tool", 4),
        ("ToolResults", 5),
        ("AssistantMessage", 6),
        ("Prompt", 7),
        ("CancelledPrompt", 8),
        ("SomethingNew", 9),
        ("Compaction", 10),
    ):
        if kind == "AssistantMessage+tool":
            files.answer(A, T0 + at, tool=True)
        elif kind == "AssistantMessage":
            files.answer(A, T0 + at)
        else:
            files.record(A, kind, T0 + at)
        replay.sources._states[next(iter(replay.sources._states))].changed(files.dir / f"{A}.jsonl")
        seen.append(status())
    assert seen == [None, "busy", "busy", "busy", "idle", "busy", "idle", "idle", "idle"]


def test_kiro_stale_locks_are_ignored(tmp_path: Path) -> None:
    """A lock left by a killed kiro (its pid gone, or reused by a later process) names
    nobody; a busy transcript it left is not this process's work."""
    home, project, files = _setup(tmp_path)
    files.sidecar(A, project, T0 - 100, "Killed mid-turn")
    files.prompt(A, T0 - 100)
    files.lock(A, 9999, T0 - 100)  # that pid is gone
    files.sidecar(B, project, T0 - 50, "Pid reused")
    files.lock(B, 700, T0 - 50)  # the new kiro got the same pid, later
    replay = Replay(home, T0, readers=(kiro.SPEC,))
    replay.step(_tree(project), T0 + 4)
    facts, _ = replay.sources.observe(replay.agents)
    assert facts == {}
    assert story(replay.events) == [("s1", "active", "shop", None, None)]


def test_kiro_without_a_lock_cwd_and_time(tmp_path: Path) -> None:
    """No lock (as written by some builds before the first prompt, or never): the kiro in
    the session's cwd running when it was written; a session older than the process is
    not its; an old busy transcript touched again only by its sidecar says idle."""
    home, project, files = _setup(tmp_path)
    files.sidecar(A, project, T0 - 500, "Yesterday")
    files.prompt(A, T0 - 500)
    replay = Replay(home, T0, readers=(kiro.SPEC,))
    replay.step(_tree(project), T0 + 1)
    files.sidecar(C, project, T0 + 2, "Today")
    files.prompt(C, T0 + 2)
    replay.step(_tree(project), T0 + 3)
    assert story(replay.events) == [
        ("s1", "active", "shop", None, None),
        ("s1", "active", "shop", MODEL, None),  # its title (a prompt) is no name
    ]
    files.sidecar(A, project, T0 + 5, "Yesterday")  # resumed: the sidecar rewritten
    replay.sources._states[next(iter(replay.sources._states))].changed(files.dir / f"{A}.json")
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[700]
    assert isinstance(found, ConversationFacts)
    assert (found.native_id, found.status) == (A, "idle")


def test_kiro_a_large_sidecar_is_read_in_part(tmp_path: Path) -> None:
    home, project, files = _setup(tmp_path)
    files.turns[A] = [
        {"end_reason": "UserTurnEnd", "model": "old-model", "result": {"Ok": "x" * 4000}}
        for _ in range(100)
    ]
    files.sidecar(A, project, T0 + 1, 'A "quoted" title')
    files.lock(A, 701, T0 + 1)
    assert (files.dir / f"{A}.json").stat().st_size > 256 * 1024
    replay = Replay(home, T0, readers=(kiro.SPEC,))
    replay.step(_tree(project), T0 + 2)
    assert story(replay.events) == [("s1", "active", "shop", MODEL, None)]


def test_kiro_garbage_never_breaks_the_reader(tmp_path: Path) -> None:
    home, project, files = _setup(tmp_path)
    (files.dir / f"{A}.json").write_text("{not json")
    (files.dir / f"{A}.lock").write_text("[1, 2]")
    (files.dir / f"{A}.jsonl").write_text('not json\n{"kind": 7}\n[]\n')
    files.sidecar(B, project, T0 + 1, "Someone else's id")
    data = json.loads((files.dir / f"{B}.json").read_text())
    data["session_id"] = C
    (files.dir / f"{B}.json").write_text(json.dumps(data))
    files.lock(B, 701, T0 + 1)
    (files.dir / "not-a-uuid.json").write_text("{}")
    (files.dir / f"{C}.lock").write_text(json.dumps({"pid": "701"}))
    replay = Replay(home, T0, readers=(kiro.SPEC,))
    replay.step(_tree(project), T0 + 2)
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[700]
    assert isinstance(found, ConversationFacts)
    assert (found.native_id, found.name) == (B, None)  # the wrong id is not believed
    assert replay.sources.errors == 0
    state = replay.sources._states[next(iter(replay.sources._states))]
    assert state.stats.garbage >= 5


def test_kiro_reads_on_change_events_only(tmp_path: Path) -> None:
    """Watched: a file is read when watchdog reports it, and nothing is read otherwise."""
    home, project, files = _setup(tmp_path)
    view = RecordedProcesses(home)
    view.show(_tree(project))
    state = kiro.KiroState(home / ".kiro", ReaderContext(lambda: T0, view))
    [proc] = agents(view.recs.values(), home)
    files.sidecar(A, project, T0 + 1)
    files.lock(A, 701, T0 + 1)
    state.prepare([proc])  # the first listing
    found = state.facts(proc)
    assert found is not None and found.status is None
    files.prompt(A, T0 + 2)
    state.prepare([proc])
    assert state.facts(proc).status is None  # type: ignore[union-attr]  # no event yet
    state.changed(files.dir / f"{A}.jsonl")
    state.prepare([proc])
    assert state.facts(proc).status == "busy"  # type: ignore[union-attr]
    files.unlock(A)
    state.changed(files.dir / f"{A}.lock")
    state.prepare([proc])
    assert state.facts(proc) is None  # a closed session is not claimed by cwd again


def _session(files: KiroDir, sid: str = A) -> kiro_sessions.KiroSession:
    tail = JsonlTail(files.dir / f"{sid}.jsonl", files.dir)
    return kiro_sessions.KiroSession(tail, native_id=sid)


def test_kiro_sidecar_fields_and_model_fallbacks(tmp_path: Path) -> None:
    """What a sidecar says (cwd, times, parent, model) as read from real files: the model
    from ``model_info.model_id``, else its ``model_name``, else the last turn's ``model``;
    what it does not say leaves what was known."""
    _, project, files = _setup(tmp_path)
    stats = ReadStats()
    files.sidecar(B, project, T0 + 1, parent=A)
    files.sidecar(A, project, T0 + 2)
    session = _session(files, B)
    kiro_sessions.read_sidecar(session, files.dir / f"{B}.json", files.dir, stats)
    assert (session.cwd, session.parent, session.model) == (str(project), A, MODEL)
    assert session.created == session.updated == pytest.approx(T0 + 1, abs=1e-3)
    assert (session.written, session.owner) == (T0 + 1, os.getuid())

    def model_of(state: dict) -> str | None:
        data = {"session_id": A, "cwd": str(project), "session_state": state}
        (files.dir / f"{A}.json").write_text(json.dumps(data))
        found = _session(files)
        kiro_sessions.read_sidecar(found, files.dir / f"{A}.json", files.dir, stats)
        return found.model

    turns = {"user_turn_metadatas": [{"model": "first"}, {"model": "last"}]}
    assert model_of({"rts_model_state": {"model_info": {"model_name": "by-name"}}}) == "by-name"
    assert model_of({"rts_model_state": {"model_info": {}}, "conversation_metadata": turns}) == (
        "last"
    )
    assert model_of({"conversation_metadata": {"user_turn_metadatas": []}}) is None
    assert model_of({"conversation_metadata": {"user_turn_metadatas": ["x"]}}) is None

    known = _session(files)
    known.cwd, known.created, known.updated, known.model = "/kept", 5.0, 6.0, "kept-model"
    (files.dir / f"{A}.json").write_text(json.dumps({"parent_session_id": "not a uuid"}))
    kiro_sessions.read_sidecar(known, files.dir / f"{A}.json", files.dir, stats)
    assert (known.cwd, known.created, known.updated, known.model) == (
        "/kept",
        5.0,
        6.0,
        "kept-model",
    )
    assert known.parent is None
    assert stats.garbage == 0

    (files.dir / f"{A}.json").write_text(json.dumps({"session_id": B, "cwd": "/elsewhere"}))
    kiro_sessions.read_sidecar(known, files.dir / f"{A}.json", files.dir, stats)
    assert (known.cwd, stats.garbage) == ("/kept", 1)  # another session's id: not believed


def test_kiro_a_sidecar_at_and_past_the_size_limits(tmp_path: Path) -> None:
    """Past 256 KiB: the head's fields and the tail's last ``model_id``; up to 64 MiB is read
    (a sparse file: no disk is used), past it refused."""
    _, project, files = _setup(tmp_path)
    path = files.dir / f"{A}.json"
    head = json.dumps({"session_id": A, "cwd": str(project), "created_at": _iso(T0)})[:-1]
    tail = ', "model_id": "old-model"}, {"model_id": "new-model"}]}}'
    for size, model in (
        (kiro_sessions.MAX_SIDECAR_BYTES, "new-model"),
        (kiro_sessions.MAX_SIDECAR_BYTES + 1, None),
        (300 * 1024, "new-model"),
    ):
        with open(path, "wb") as fh:
            fh.write(head.encode() + b', "session_state": {"turns": [')
            fh.seek(size - len(tail))
            fh.write(tail.encode())
        assert path.stat().st_size == size
        stats = ReadStats()
        session = _session(files)
        kiro_sessions.read_sidecar(session, path, files.dir, stats)
        assert session.model == model
        assert session.cwd == (str(project) if model else None)
        assert stats.refused == (0 if model else 1)
        if model:
            assert session.owner == os.getuid()
            assert session.created == pytest.approx(T0, abs=1e-3)


def test_kiro_a_sidecar_of_exactly_256_kib_is_parsed_whole_and_closed(tmp_path: Path) -> None:
    """At the whole-file limit the sidecar is parsed (the model from ``model_info``, not the
    last ``model_id`` in its tail), and every descriptor opened is closed."""
    _, project, files = _setup(tmp_path)
    path = files.dir / f"{A}.json"
    state = {
        "rts_model_state": {"model_info": {"model_id": "current"}},
        "conversation_metadata": {"user_turn_metadatas": [{"model_id": "in-a-turn", "p": ""}]},
    }
    data = {"session_id": A, "cwd": str(project), "session_state": state}
    pad = 256 * 1024 - len(json.dumps(data))
    state["conversation_metadata"]["user_turn_metadatas"][0]["p"] = "x" * pad  # type: ignore[index]
    path.write_text(json.dumps(data))
    assert path.stat().st_size == 256 * 1024
    fds = len(os.listdir("/proc/self/fd"))
    session = _session(files)
    kiro_sessions.read_sidecar(session, path, files.dir, ReadStats())
    assert (session.model, session.cwd) == ("current", str(project))
    assert len(os.listdir("/proc/self/fd")) == fds


def test_kiro_a_large_sidecar_takes_top_level_fields_only_and_closes_its_file(
    tmp_path: Path,
) -> None:
    """Past 256 KiB, only the fields written before ``session_state`` are the sidecar's: a
    ``cwd`` or ``parent_session_id`` inside the state is not the session's; and the
    descriptor of the part read is closed."""
    _, _, files = _setup(tmp_path)
    path = files.dir / f"{A}.json"
    state = '{"tool": {"cwd": "/elsewhere", "parent_session_id": "' + B + '"}, "pad": "'
    tail = '", "model_id": "tail-model"}}'
    with open(path, "wb") as fh:
        fh.write(f'{{"session_id": "{A}", "session_state": {state}'.encode())
        fh.seek(300 * 1024 - len(tail))
        fh.write(tail.encode())
    fds = len(os.listdir("/proc/self/fd"))
    session = _session(files)
    session.cwd = "/kept"
    stats = ReadStats()
    kiro_sessions.read_sidecar(session, path, files.dir, stats)
    assert (session.cwd, session.parent, session.model) == ("/kept", None, "tail-model")
    assert (stats.garbage, stats.refused) == (0, 0)
    assert len(os.listdir("/proc/self/fd")) == fds


def test_kiro_each_record_s_status_and_whether_it_answered(tmp_path: Path) -> None:
    """Read from a real transcript, record by record: (status, answered) after each; only
    an answer with text alone has answered (a sub-agent done), an answer whose content is
    malformed is an answer with no tool call, and a record that tells nothing keeps both."""
    _, _, files = _setup(tmp_path)
    session = _session(files)
    seen = []
    steps: list[tuple[str, dict]] = [
        ("AssistantMessage", {"content": [{"kind": "text"}]}),
        ("SomethingNew", {}),
        ("Prompt", {}),
        ("AssistantMessage", {"content": [{"kind": "text"}, {"kind": "toolUse"}]}),
        ("CancelledPrompt", {}),
        ("AssistantMessage", {"content": ["toolUse", {"kind": "thinking"}]}),
        ("ToolResults", {}),
        ("Clear", {}),
        ("AssistantMessage", {"content": {"kind": "toolUse"}}),
        ("Compaction", {}),
        ("AssistantMessage", {}),
    ]
    for at, (kind, data) in enumerate(steps):
        files.record(A, kind, T0 + at, **data)
        session.read(T0 + at, partial(kiro_sessions.record, session))
        seen.append((session.status, session.answered))
    assert seen == [
        ("idle", True),
        ("idle", True),  # an unknown kind keeps what was said
        ("busy", False),
        ("busy", False),
        ("idle", False),
        ("idle", True),
        ("busy", False),
        ("idle", False),
        ("idle", True),
        ("idle", False),
        ("idle", True),
    ]


@pytest.mark.parametrize("pid", [0, -701, True])
def test_kiro_a_lock_naming_no_process_is_garbage_and_the_cwd_decides(
    tmp_path: Path, pid: object
) -> None:
    """A lock whose pid is no pid (zero, negative, a boolean) is garbage, not a lock: the
    session is the kiro's in its cwd, as if it had none."""
    home, project, files = _setup(tmp_path)
    files.sidecar(A, project, T0 + 1)
    files._write(f"{A}.lock", json.dumps({"pid": pid}), T0 + 1)
    replay = Replay(home, T0, readers=(kiro.SPEC,))
    replay.step(_tree(project), T0 + 2)
    facts, _ = replay.sources.observe(replay.agents)
    assert getattr(facts.get(700), "native_id", None) == A
    state = replay.sources._states[next(iter(replay.sources._states))]
    assert state.stats.garbage >= 1


def test_kiro_a_session_known_by_its_lock_alone_is_owned_by_the_lock_s_user(
    tmp_path: Path,
) -> None:
    home, project, files = _setup(tmp_path)
    files.lock(A, 701, T0 + 1)  # no sidecar, no transcript (yet)
    replay = Replay(home, T0, readers=(kiro.SPEC,))
    replay.step(_tree(project), T0 + 2)
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[700]
    assert isinstance(found, ConversationFacts)
    assert (found.native_id, found.owner_uid) == (A, os.getuid())


def test_kiro_without_a_lock_two_kiros_in_one_cwd(tmp_path: Path) -> None:
    """Two kiros in one project, the second started at T0 + 10, and sessions with no lock:
    one created (``created_at``) before the second started is the first's even when its
    files were written later; one resumed (created before both) is the kiro running when
    it was last touched (its ``updated_at``, if later than its files), the last started.
    A kiro elsewhere runs neither."""
    home, project, files = _setup(tmp_path)
    elsewhere = home / "src" / "other"
    elsewhere.mkdir()

    def sidecar(sid: str, created: float, updated: float, written: float) -> None:
        data = {"session_id": sid, "cwd": str(project)}
        data.update(created_at=_iso(created), updated_at=_iso(updated))
        files._write(f"{sid}.json", json.dumps(data), written)

    sidecar(A, T0 + 2, T0 + 20, T0 + 20)
    sidecar(B, T0 - 100, T0 + 12, T0 + 5)
    replay = Replay(home, T0, readers=(kiro.SPEC,))
    procs = _tree(project) + _tree(project, T0 + 10, 800) + _tree(elsewhere, T0 + 11, 900)
    replay.step(procs, T0 + 21)
    facts, _ = replay.sources.observe(replay.agents)
    assert {pid: getattr(f, "native_id", None) for pid, f in facts.items()} == {700: A, 800: B}


def test_kiro_a_subagent_is_done_when_its_lock_goes_away(tmp_path: Path) -> None:
    """A sub-agent that never answered (cancelled mid-turn) is done once its lock is
    removed; before that, and while its transcript says busy, it is not."""
    home, project, files = _setup(tmp_path)
    files.sidecar(A, project, T0 + 1)
    files.lock(A, 701, T0 + 1)
    files.sidecar(B, project, T0 + 2, parent=A)
    files.lock(B, 701, T0 + 2)
    files.prompt(B, T0 + 2)
    replay = Replay(home, T0, readers=(kiro.SPEC,))
    replay.step(_tree(project), T0 + 3)

    def done() -> list[tuple[str, bool]]:
        found = replay.sources.observe(replay.agents)[0][700]
        assert isinstance(found, ConversationFacts)
        return [(s.agent_id, s.done) for s in found.subagents]

    assert done() == [(B, False)]
    files.unlock(B)
    replay.sources._states[next(iter(replay.sources._states))].changed(files.dir / f"{B}.lock")
    assert done() == [(B, True)]


# -- issue 24: what the sample mutation runs left standing ------------------------------


def _kiro_state(home: Path) -> tuple[RecordedProcesses, list[float], kiro.KiroState]:
    view = RecordedProcesses(home)
    clock = [T0]
    return view, clock, kiro.KiroState(home / ".kiro", ReaderContext(lambda: clock[0], view))


def _native(state: kiro.KiroState, proc: object) -> str | None:
    return getattr(state.facts(proc), "native_id", None)  # type: ignore[arg-type]


def test_kiro_lock_owners_are_looked_up_again_when_a_lock_or_the_processes_change(
    tmp_path: Path,
) -> None:
    """The process a lock names is remembered until that lock changes (here: rewritten by
    the kiro that took the session over) or the processes change (here: a kiro seen only
    after its lock was read)."""
    home, project, files = _setup(tmp_path)
    view, _, state = _kiro_state(home)
    files.sidecar(A, project, T0 + 1)
    files.lock(A, 9999, T0 + 1)  # a pid nobody runs
    view.show(_tree(project))
    [first] = agents(view.recs.values(), home)
    state.prepare([first])
    assert state.facts(first) is None
    files.lock(A, 701, T0 + 2)
    state.changed(files.dir / f"{A}.lock")
    state.prepare([first])
    assert _native(state, first) == A  # the same processes: the lock's change decides
    files.sidecar(B, project, T0 + 6)
    files.lock(B, 901, T0 + 6)  # the kiro-cli-chat of a kiro not yet seen
    state.changed(files.dir / f"{B}.lock")
    state.prepare([first])
    assert _native(state, first) == A
    view.show(_tree(project) + _tree(project, T0 + 5, 900))
    procs = agents(view.recs.values(), home)
    [second] = [p for p in procs if p.pid == 900]
    state.prepare(procs)  # no file changed: the processes did
    assert (_native(state, first), _native(state, second)) == (A, B)


def test_kiro_a_lock_naming_no_process_is_counted_once_a_read(tmp_path: Path) -> None:
    home, project, files = _setup(tmp_path)
    view, _, state = _kiro_state(home)
    files.sidecar(A, project, T0 + 1)
    files._write(f"{A}.lock", json.dumps({"pid": 0}), T0 + 1)
    view.show(_tree(project))
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert state.stats.garbage == 1
    state.prepare([proc])
    assert state.stats.garbage == 1  # not read again without a change
    state.changed(files.dir / f"{A}.lock")
    state.prepare([proc])
    assert state.stats.garbage == 2


def test_kiro_two_sessions_written_at_once_the_one_created_last_is_current(
    tmp_path: Path,
) -> None:
    """Same write time: the session created last wins, whatever its id (B's sorts before
    A's)."""
    home, project, files = _setup(tmp_path)
    view, _, state = _kiro_state(home)
    for sid, created in ((A, T0 + 1), (B, T0 + 5)):
        data = {"session_id": sid, "cwd": str(project), "created_at": _iso(created)}
        files._write(f"{sid}.json", json.dumps(data), T0 + 10)
        files.lock(sid, 701, T0 + 10)
    view.show(_tree(project))
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert _native(state, proc) == B
    assert B < A


@pytest.mark.parametrize(("before", "status"), [(0.0, "busy"), (0.5, "idle")])
def test_kiro_a_turn_begun_at_the_start_s_slack_is_this_process_s(
    tmp_path: Path, before: float, status: str
) -> None:
    """A transcript last written exactly the start's slack before the process started is
    still its work (busy); a moment earlier, a turn a killed kiro left open (idle)."""
    home, project, files = _setup(tmp_path)
    view, _, state = _kiro_state(home)
    files.sidecar(A, project, T0 + 1)
    files.lock(A, 701, T0 + 1)
    files.prompt(A, T0 - kiro.SLACK_S - before)
    view.show(_tree(project))
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    found = state.facts(proc)
    assert found is not None and (found.native_id, found.status) == (A, status)


def test_kiro_sessions_written_before_the_horizon_are_forgotten(tmp_path: Path) -> None:
    """Once every kiro running started later, a session last written before the horizon
    (the oldest start less the clock's slack) is dropped; one written at it is kept."""
    home, project, files = _setup(tmp_path)
    view, _, state = _kiro_state(home)
    for sid, at in ((A, T0 + 1), (B, T0 + 40), (C, T0 + 39)):
        files.sidecar(sid, project, at)
    view.show(_tree(project))
    [first] = agents(view.recs.values(), home)
    state.prepare([first])
    assert set(state._sessions) == {A, B, C}
    view.show(_tree(project, T0 + 40 + kiro_times.CLOCK_SLACK_S, 800))
    [later] = agents(view.recs.values(), home)
    state.prepare([later])  # its horizon: T0 + 40
    assert set(state._sessions) == {B}


def test_kiro_a_transcript_past_the_read_budget_is_read_on_without_an_event(
    tmp_path: Path,
) -> None:
    home, project, files = _setup(tmp_path)
    view, clock, state = _kiro_state(home)
    files.sidecar(A, project, T0 + 1)
    files.lock(A, 701, T0 + 1)
    pad = "x" * (1024 * 1024)
    for _ in range(files_mod.READ_BUDGET_BYTES // len(pad) + 1):
        files.record(A, "Prompt", T0 + 2, message_id="p", content=[{"kind": "text", "data": pad}])
    files.answer(A, T0 + 3)
    assert (files.dir / f"{A}.jsonl").stat().st_size > files_mod.READ_BUDGET_BYTES
    view.show(_tree(project))
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert state.facts(proc).status == "busy"  # type: ignore[union-attr]  # the budget's part
    clock[0] += 1
    state.prepare([proc])  # no event: the rest
    assert state.facts(proc).status == "idle"  # type: ignore[union-attr]


@pytest.mark.parametrize("touched", ["jsonl", "lock"])
def test_kiro_a_transcript_or_lock_written_last_makes_its_session_current(
    tmp_path: Path, touched: str
) -> None:
    """Of two sessions one kiro holds, the one whose file was written last, be it only its
    transcript or its lock."""
    home, project, files = _setup(tmp_path)
    view, _, state = _kiro_state(home)
    files.sidecar(A, project, T0 + 1)
    files.lock(A, 701, T0 + 1)
    files.sidecar(B, project, T0 + 2)
    files.lock(B, 701, T0 + 2)
    if touched == "jsonl":
        files.answer(A, T0 + 5)
    else:
        files.lock(A, 701, T0 + 5)
    view.show(_tree(project))
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert _native(state, proc) == A


@pytest.mark.skipif(os.geteuid() != 0, reason="files of other users need root to be made")
def test_kiro_the_owner_is_the_first_file_read_s(tmp_path: Path) -> None:
    """No sidecar: the transcript's owner, read before the lock's; no transcript either:
    the lock's."""
    home, project, files = _setup(tmp_path)
    view, _, state = _kiro_state(home)
    files.answer(A, T0 + 1)
    files.lock(A, 701, T0 + 1)
    files.lock(B, 701, T0 + 2)
    os.chown(files.dir / f"{A}.jsonl", 4321, 4321)
    os.chown(files.dir / f"{A}.lock", 5432, 5432)
    os.chown(files.dir / f"{B}.lock", 6543, 6543)
    view.show(_tree(project))
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert {s: state._sessions[s].owner for s in (A, B)} == {A: 4321, B: 6543}
