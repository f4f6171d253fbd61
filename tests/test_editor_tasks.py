"""Cline, Roo Code and Kilo Code tasks inside an editor (quintd/sources/editor_tasks.py): a
real process stands for the editor (a marked copy of `sleep` named `code`, found by the real
scanner), the tasks are written into its ``User/globalStorage`` as each extension writes
them (``tests/fixtures/editor_tasks``; its README cites the storage code), and the real
source manager and tracker turn them into sessions.

The story: the editor starts over a long history (no session for old tasks); a Cline task
starts, generates (busy with no write for longer than idle_after), completes and goes idle;
a Roo task, a sub-task it delegates to (a child session), the child completes (ended); the
Cline task is deleted (ended, the editor goes on); a Kilo task; the Roo task is removed from
history; the editor exits (everything ended)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from conftest import Agents, wait_until
from replay import MACHINE, Clock, story

from quintd.model import AgentProcess, ConversationFacts, LifecycleEvent
from quintd.scanner import Scanner
from quintd.sources import editor_task_files, editor_tasks, editors
from quintd.sources.editor_tasks import ExtensionTasks
from quintd.sources.manager import SourceManager, SourceSettings
from quintd.sources.spec import ReaderContext, ReaderSpec
from quintd.tracker import SessionTracker

FIXTURES = Path(__file__).parent / "fixtures" / "editor_tasks"
CLINE_TASK = FIXTURES / "cline" / "1795930000000"
ROO_PARENT = FIXTURES / "roo" / "019a7b8c-0d00-7e10-8a2b-3c4d5e6f7a80"
ROO_CHILD = FIXTURES / "roo" / "019a7b8c-4e20-7a31-9b4c-5d6e7f8a9b01"
MODEL = "claude-sonnet-4-5-20250929"
IDLE = 60.0
SPEC = ReaderSpec(
    platform="vscode-copilot", env_dir=None, home_dir=".config/Code/User", factory=ExtensionTasks
)


# -- writing as the extensions write ----------------------------------------------------


def _suffix() -> str:
    return f"{int(time.time() * 1000)}.{random.randrange(36**6):x}"


def cline_write(path: Path, data: Any) -> None:
    """Cline's ``atomicWriteFile``: ``<file>.tmp.<ms>.<random>.json`` renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f"{path.name}.tmp.{_suffix()}.json")
    tmp.write_text(json.dumps(data, separators=(",", ":")))
    os.rename(tmp, path)


def roo_write(path: Path, data: Any) -> None:
    """Roo's ``safeWriteJson``: a new temporary file; the old one renamed to a backup, the
    new one renamed in, the backup removed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    new = path.with_name(f".{path.name}.new_{_suffix()}.tmp")
    new.write_text(json.dumps(data, separators=(",", ":")))
    backup = None
    if path.exists():
        backup = path.with_name(f".{path.name}.bak_{_suffix()}.tmp")
        os.rename(path, backup)
    os.rename(new, path)
    if backup is not None:
        backup.unlink()


def load(path: Path) -> Any:
    return json.loads(path.read_text())


def in_flight(messages: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The messages up to the last ``api_req_started``, as saved while that request runs:
    its text without the cost it gets when the answer is in."""
    last = max(i for i, m in enumerate(messages) if m.get("say") == "api_req_started")
    started = dict(messages[last])
    info = json.loads(started["text"])
    started["text"] = json.dumps({k: v for k, v in info.items() if k not in ("cost", "tokensOut")})
    return [*messages[:last], started]


def uuid7(at: float) -> str:
    ms = int(at * 1000)
    raw = (ms << 80) | (0x7 << 76) | (random.getrandbits(12) << 64) | (0b10 << 62)
    return str(uuid.UUID(int=raw | random.getrandbits(62)))


def ms_id() -> str:
    return str(int(time.time() * 1000))


class Editor:
    """An editor process, its User directory, and the real manager and tracker."""

    def __init__(
        self, agents: Agents, tmp_path: Path, *, watch: bool = False, spec: ReaderSpec = SPEC
    ) -> None:
        self.user = agents.home / ".config" / "Code" / "User"
        self.user.mkdir(parents=True, exist_ok=True)
        project = tmp_path / "proj"
        project.mkdir(exist_ok=True)
        self.proc = agents.binary("code", "600", cwd=project)
        self.clock = Clock(time.time())
        self.manager = SourceManager(
            SourceSettings(watch=watch),
            clock=self.clock.monotonic,
            readers=(spec,),
            wall=lambda: self.clock.t,
        )
        self.tracker = SessionTracker(MACHINE, idle_after=IDLE, clock=self.clock)
        scanner = Scanner()
        self.agent: AgentProcess = wait_until(
            lambda: next(
                (a for a in scanner.scan() if a.pid == self.proc.pid and a.signing_settled), None
            ),
            what="the editor process",
        )
        assert self.agent.platform == "vscode-copilot"
        self.events: list[LifecycleEvent] = []
        self.facts: list[ConversationFacts] = []

    def tasks(self, ext: editor_tasks.Extension) -> Path:
        return self.user / "globalStorage" / ext.ext_id / "tasks"

    def step(self, *, alive: bool = True, advance: float = 0.0) -> list[tuple[Any, ...]]:
        """One pass (after ``advance`` seconds): the story lines it added."""
        self.clock.t += advance
        procs = [self.agent] if alive else []
        facts, pending = self.manager.observe(procs)
        found = facts.get(self.agent.pid, [])
        self.facts = [found] if isinstance(found, ConversationFacts) else list(found)
        before = len(story(self.events))
        self.events += self.tracker.observe(procs, facts, pending, self.manager.waiting).events
        return story(self.events)[before:]

    def status(self, native_id: str) -> str | None:
        return next(f.status for f in self.facts if f.native_id == native_id)

    def close(self) -> None:
        self.manager.close()


@pytest.fixture(params=["part", "vscode"])
def editor(agents: Agents, tmp_path: Path, request: pytest.FixtureRequest) -> Any:
    """The part alone, and the part inside VS Code's reader as the registry has it (with
    Copilot Chat's part beside it)."""
    made: list[Editor] = []
    spec = SPEC if request.param == "part" else editors.VSCODE_SPEC

    def make(watch: bool = False) -> Editor:
        made.append(Editor(agents, tmp_path, watch=watch, spec=spec))
        return made[-1]

    yield make
    for one in made:
        one.close()


def lay_history(ed: Editor, count: int) -> None:
    """Old tasks of every extension, last written an hour before the editor started."""
    old = ed.agent.start_time - 3600
    for n in range(count):
        for ext, source in (
            (editor_tasks.CLINE, CLINE_TASK),
            (editor_tasks.ROO, ROO_PARENT),
            (editor_tasks.KILO, ROO_CHILD),
        ):
            task_id = str(int(old * 1000) - n) if ext is editor_tasks.CLINE else uuid7(old - n)
            target = ed.tasks(ext) / task_id
            shutil.copytree(source, target)
            for path in (*target.iterdir(), target):
                os.utime(path, (old, old))


def test_the_story(editor: Any) -> None:
    ed: Editor = editor()
    lay_history(ed, 5)
    # The editor over its history: its own session, no conversation of it.
    assert ed.step() == [("s1", "active", "proj", None, None)]
    assert ed.facts == []

    # A Cline task starts: the first request is under way (busy); the model from its
    # metadata. The editor's session becomes the conversation's (one conversation, one
    # session from its first event).
    cline_id = ms_id()
    cline = ed.tasks(editor_tasks.CLINE) / cline_id
    messages = load(CLINE_TASK / "ui_messages.json")
    cline_write(cline / "ui_messages.json", in_flight(messages[:2]))
    cline_write(
        cline / "api_conversation_history.json",
        load(CLINE_TASK / "api_conversation_history.json")[:1],
    )
    (cline / "task_metadata.json").write_text((CLINE_TASK / "task_metadata.json").read_text())
    assert ed.step() == [("s1", "active", "proj", MODEL, None)]
    assert ed.status(f"cline:{cline_id}") == "busy"

    # Generating: a long request writes nothing for longer than idle_after; still busy.
    assert ed.step(advance=IDLE + 1) == []
    assert ed.status(f"cline:{cline_id}") == "busy"
    # Streaming its answer (a partial message).
    cline_write(cline / "ui_messages.json", [*messages[:2], {**messages[2], "partial": True}])
    assert ed.step(advance=IDLE + 1) == []
    assert ed.status(f"cline:{cline_id}") == "busy"

    # Completed: it asks for nothing but the user's next word: idle after idle_after.
    cline_write(cline / "ui_messages.json", messages)
    cline_write(
        cline / "api_conversation_history.json", load(CLINE_TASK / "api_conversation_history.json")
    )
    assert ed.step(advance=1) == []
    assert ed.status(f"cline:{cline_id}") == "idle"
    assert ed.step(advance=IDLE - 1) == []
    assert ed.step(advance=1.5) == [("s1", "idle", "proj", MODEL, None)]

    # A second conversation: a Roo task (Roo records no model).
    parent_id = uuid7(time.time())
    parent = ed.tasks(editor_tasks.ROO) / parent_id
    parent_item = {**load(ROO_PARENT / "history_item.json"), "id": parent_id, "status": "active"}
    for key in ("delegatedToId", "childIds", "awaitingChildId"):
        del parent_item[key]
    parent_messages = load(ROO_PARENT / "ui_messages.json")
    roo_write(parent / "ui_messages.json", in_flight(parent_messages[:2]))
    roo_write(
        parent / "api_conversation_history.json", load(ROO_PARENT / "api_conversation_history.json")
    )
    roo_write(parent / "history_item.json", parent_item)
    assert ed.step(advance=1) == [("s2", "active", "proj", None, None)]
    assert ed.status(f"roo:{parent_id}") == "busy"

    # It delegates a sub-task: a child session under it; the parent waits for it.
    child_id = uuid7(time.time())
    child = ed.tasks(editor_tasks.ROO) / child_id
    child_item = {
        **load(ROO_CHILD / "history_item.json"),
        "id": child_id,
        "rootTaskId": parent_id,
        "parentTaskId": parent_id,
    }
    child_messages = load(ROO_CHILD / "ui_messages.json")
    roo_write(child / "ui_messages.json", in_flight(child_messages[:2]))
    roo_write(
        child / "api_conversation_history.json", load(ROO_CHILD / "api_conversation_history.json")
    )
    roo_write(child / "history_item.json", child_item)
    roo_write(parent / "ui_messages.json", parent_messages)
    delegated = {**parent_item, "status": "delegated", "delegatedToId": child_id}
    roo_write(
        parent / "history_item.json",
        {**delegated, "childIds": [child_id], "awaitingChildId": child_id},
    )
    assert ed.step(advance=1) == [("s3", "active", None, None, "s2")]
    assert ed.status(f"roo:{parent_id}") == "waiting"
    (sub,) = next(f for f in ed.facts if f.native_id == f"roo:{parent_id}").subagents
    assert (sub.agent_id, sub.status, sub.done) == (child_id, "busy", False)

    # The child completes: its session ends; the parent is active again.
    roo_write(child / "ui_messages.json", child_messages)
    roo_write(child / "history_item.json", {**child_item, "status": "completed"})
    roo_write(
        parent / "history_item.json",
        {**parent_item, "childIds": [child_id], "completedByChildId": child_id},
    )
    assert ed.step(advance=1) == [("s3", "ended", None, None, "s2")]

    # The Cline task is deleted (its files removed): its session ends, the editor goes on.
    for name in ("api_conversation_history.json", "ui_messages.json", "task_metadata.json"):
        (cline / name).unlink()
    cline.rmdir()
    assert ed.step(advance=1) == [("s1", "ended", "proj", MODEL, None)]
    assert f"cline:{cline_id}" not in {f.native_id for f in ed.facts if not f.over}

    # A Kilo Code task (the Roo layout).
    kilo_id = uuid7(time.time())
    kilo = ed.tasks(editor_tasks.KILO) / kilo_id
    roo_write(kilo / "ui_messages.json", in_flight(child_messages[:2]))
    kilo_item = {**load(ROO_CHILD / "history_item.json"), "id": kilo_id}
    del kilo_item["rootTaskId"], kilo_item["parentTaskId"]
    roo_write(kilo / "history_item.json", kilo_item)
    assert ed.step(advance=1) == [("s4", "active", "proj", None, None)]

    # The Roo task is removed from history (its history_item.json unlinked, as
    # TaskHistoryStore.delete does): its session ends.
    (parent / "history_item.json").unlink()
    assert ed.step(advance=1) == [("s2", "ended", "proj", None, None)]

    # The editor exits: the rest ends.
    ed.proc.kill()
    ed.proc.wait()
    assert ed.step(alive=False, advance=1) == [("s4", "ended", "proj", None, None)]
    assert ed.tracker.sessions == []


def test_only_tasks_used_since_the_editor_started(editor: Any) -> None:
    """A long history, then one old task reopened and one new: those two are live."""
    ed: Editor = editor()
    lay_history(ed, 40)
    reopened = sorted(p for p in ed.tasks(editor_tasks.CLINE).iterdir())[0]
    ed.step()
    assert ed.facts == []
    cline_write(reopened / "ui_messages.json", load(CLINE_TASK / "ui_messages.json"))
    new_id = uuid7(time.time())
    roo_write(
        ed.tasks(editor_tasks.ROO) / new_id / "ui_messages.json",
        load(ROO_CHILD / "ui_messages.json"),
    )
    ed.step(advance=1)
    assert sorted(f.native_id for f in ed.facts) == sorted(
        [f"cline:{reopened.name}", f"roo:{new_id}"]
    )


def test_through_watchdog_with_bounded_watches(editor: Any) -> None:
    """Watched, not polled: a new task directory is watched before its first write, its
    growth is seen by its events, an old task resumed is found when the history is
    rewritten, and a long history costs no watches."""
    ed: Editor = editor(watch=True)
    lay_history(ed, 60)
    ed.step()
    task_id = ms_id()
    task = ed.tasks(editor_tasks.CLINE) / task_id
    task.mkdir()
    messages = load(CLINE_TASK / "ui_messages.json")

    def seen(native_id: str, status: str) -> bool:
        ed.step(advance=1)  # (a rewritten history lists the tasks at most every 5 s)
        return any(f.native_id == native_id and f.status == status for f in ed.facts)

    def watched() -> bool:
        ed.step()
        return task in ed.manager._watched

    wait_until(watched, what="the new task's directory watched")
    cline_write(task / "ui_messages.json", in_flight(messages[:2]))
    wait_until(lambda: seen(f"cline:{task_id}", "busy"), what="the task via watchdog")
    cline_write(task / "ui_messages.json", messages)
    wait_until(lambda: seen(f"cline:{task_id}", "idle"), what="its completion via watchdog")

    # An old task resumed: its directory is not watched; Cline rewrites its history.
    old = sorted(ed.tasks(editor_tasks.CLINE).iterdir())[0]
    cline_write(old / "ui_messages.json", in_flight(messages[:2]))
    state = ed.user / "globalStorage" / editor_tasks.CLINE.ext_id / "state"
    cline_write(state / "taskHistory.json", [{"id": old.name, "ts": 1, "task": "t"}])
    wait_until(lambda: seen(f"cline:{old.name}", "busy"), what="the resumed task")

    budgets = ed.manager.budgets()
    # The three tasks directories, Cline's state directory (Roo's and Kilo's absent: the
    # User directory meanwhile) and the two live tasks': not the 180 old tasks.
    assert budgets["watches"] <= 7, budgets
    assert budgets["watches_refused"] == 0


def test_links_and_garbage_are_refused_and_counted(editor: Any, tmp_path: Path) -> None:
    ed: Editor = editor()
    ed.step()
    outside = tmp_path / "outside"
    shutil.copytree(CLINE_TASK, outside)
    tasks = ed.tasks(editor_tasks.CLINE)
    tasks.mkdir(parents=True, exist_ok=True)
    (tasks / ms_id()).symlink_to(outside)  # a linked task directory: never listed
    linked = tasks / str(int(ms_id()) + 1)
    linked.mkdir()
    (linked / "ui_messages.json").symlink_to(outside / "ui_messages.json")
    garbage = tasks / str(int(ms_id()) + 2)
    garbage.mkdir()
    (garbage / "ui_messages.json").write_bytes(
        b'[{"ts":1,"type":"say","say":' + b"\xff" * 100 + b"]"
    )
    (garbage / "task_metadata.json").write_bytes(b"{not json")
    ed.step(advance=1)
    state = next(iter(ed.manager._states.values()))
    assert state.stats.refused >= 1
    assert state.stats.garbage == 2  # counted once, not again while they stay as they are
    assert [f.native_id for f in ed.facts] == [f"cline:{garbage.name}"]
    assert ed.facts[0].status == "idle" and ed.facts[0].model is None


def test_native_ids_do_not_collide_between_extensions(tmp_path: Path) -> None:
    """The same task id under two extensions: two conversations."""
    user = tmp_path / "User"
    task_id = uuid7(time.time())
    for ext in (editor_tasks.ROO, editor_tasks.KILO):
        roo_write(user / "globalStorage" / ext.ext_id / "tasks" / task_id / "ui_messages.json", [])
    reader = ExtensionTasks(user, ReaderContext(clock=time.monotonic))
    proc = AgentProcess(
        platform="vscode-copilot",
        pid=os.getpid(),
        ppid=os.getppid(),
        start_time=time.time() - 5,
        user=None,
        exe=None,
        cwd=None,
        name="code",
        matched_by="name",
        uid=os.getuid(),
    )
    reader.prepare([proc])
    assert sorted(f.native_id for f in reader.facts(proc)) == [f"kilo:{task_id}", f"roo:{task_id}"]


# -- the part alone, on a clock of its own ----------------------------------------------


class Part:
    """The part alone against real files: its clock is the test's."""

    def __init__(self, tmp_path: Path, *starts: float) -> None:
        self.user = tmp_path / "User"
        self.now = 1000.0
        self.reader = ExtensionTasks(self.user, ReaderContext(clock=lambda: self.now))
        self.procs = [
            AgentProcess(
                platform="vscode-copilot",
                pid=os.getpid() if n == 0 else os.getppid(),
                ppid=1,
                start_time=start,
                user=None,
                exe=None,
                cwd=None,
                name="code",
                matched_by="name",
                uid=os.getuid(),
            )
            for n, start in enumerate(starts or (time.time() - 5,))
        ]

    def tasks(self, ext: editor_tasks.Extension) -> Path:
        return self.user / "globalStorage" / ext.ext_id / "tasks"

    def facts(
        self, advance: float = 0.0, procs: list[AgentProcess] | None = None, poll: bool = True
    ) -> Any:
        self.now += advance
        if poll:  # unwatched: every pass looks again (else only what events named)
            self.reader.poll()
        self.reader.prepare(self.procs if procs is None else procs)
        return {p.pid: self.reader.facts(p) for p in self.procs}

    def only(self, **kwargs: Any) -> ConversationFacts:
        (found,) = self.facts(**kwargs)[os.getpid()]
        assert isinstance(found, ConversationFacts)
        return found


def test_a_busy_word_unchanged_for_long_is_not_believed(tmp_path: Path) -> None:
    part = Part(tmp_path)
    task = part.tasks(editor_tasks.CLINE) / ms_id()
    cline_write(task / "ui_messages.json", in_flight(load(CLINE_TASK / "ui_messages.json")))
    assert part.only().status == "busy"
    assert part.only(advance=editor_task_files.STALE_BUSY_S - 1).status == "busy"
    assert part.only(advance=1).status == "idle"


def test_a_file_renamed_away_by_roos_rewrite_is_not_a_deletion(tmp_path: Path) -> None:
    """safeWriteJson renames the old file to a backup before renaming the new one in."""
    part = Part(tmp_path)
    task = part.tasks(editor_tasks.ROO) / uuid7(time.time())
    roo_write(task / "ui_messages.json", load(ROO_CHILD / "ui_messages.json"))
    roo_write(task / "history_item.json", load(ROO_CHILD / "history_item.json"))
    native = f"roo:{task.name}"
    assert part.only().native_id == native
    for name in ("history_item.json", "ui_messages.json"):
        backup = task / f".{name}.bak_{_suffix()}.tmp"
        os.rename(task / name, backup)
        assert part.only(advance=1).native_id == native  # mid-rewrite: still there
        os.rename(backup, task / name)
    (task / "history_item.json").unlink()
    assert part.only(advance=1) == ConversationFacts(native, owner_uid=os.getuid(), over=True)
    # Said again while the process runs; forgotten once it is gone.
    assert part.only(advance=1).over
    other = dataclasses.replace(part.procs[0], pid=os.getppid())
    part.facts(advance=1, procs=[other])
    assert part.facts(advance=1)[os.getpid()] == []


def test_a_live_childs_old_parent_is_its_conversation(tmp_path: Path) -> None:
    """A parent last written before the editor started, its child new: one conversation,
    the parent's, with the child under it (the parent's age is no work)."""
    part = Part(tmp_path)
    old = time.time() - 3600
    parent = part.tasks(editor_tasks.ROO) / uuid7(old)
    roo_write(parent / "ui_messages.json", load(ROO_PARENT / "ui_messages.json"))
    roo_write(
        parent / "history_item.json", {**load(ROO_PARENT / "history_item.json"), "id": parent.name}
    )
    os.utime(parent / "ui_messages.json", (old, old))
    assert part.facts()[os.getpid()] == []
    child = part.tasks(editor_tasks.ROO) / uuid7(time.time())
    item = {**load(ROO_CHILD / "history_item.json"), "id": child.name}
    item["rootTaskId"] = item["parentTaskId"] = parent.name
    roo_write(child / "ui_messages.json", in_flight(load(ROO_CHILD / "ui_messages.json")[:2]))
    roo_write(child / "history_item.json", item)
    found = part.only(advance=1)
    assert found.native_id == f"roo:{parent.name}" and found.last_write is None
    assert found.status == "waiting"  # delegated
    (sub,) = found.subagents
    assert (sub.agent_id, sub.status, sub.last_write) == (child.name, "busy", part.now)


def test_each_task_goes_to_the_editor_that_was_running_when_it_was_created(
    tmp_path: Path,
) -> None:
    """Two editor processes on one User directory: a task goes to the last one started
    before its id's time (Cline's ms epoch, Roo's UUID v7); one created before both goes
    to the last started."""
    now = time.time()
    part = Part(tmp_path, now - 100, now - 10)
    first, second = (p.pid for p in part.procs)
    early = part.tasks(editor_tasks.CLINE) / str(int((now - 50) * 1000))
    early_roo = part.tasks(editor_tasks.ROO) / uuid7(now - 40)
    late = part.tasks(editor_tasks.ROO) / uuid7(now - 5)
    older = part.tasks(editor_tasks.KILO) / uuid7(now - 500)
    other = part.tasks(editor_tasks.KILO) / "not-a-time-id"
    for task in (early, early_roo, late, older, other):
        cline_write(task / "ui_messages.json", [])
    found = part.facts()
    assert sorted(f.native_id for f in found[first]) == [
        f"cline:{early.name}",
        f"roo:{early_roo.name}",
    ]
    assert sorted(f.native_id for f in found[second]) == sorted(
        [f"roo:{late.name}", f"kilo:{older.name}", f"kilo:{other.name}"]
    )


def test_watches_are_bounded_and_parent_cycles_end(tmp_path: Path) -> None:
    part = Part(tmp_path)
    tasks = part.tasks(editor_tasks.ROO)
    ids = [uuid7(time.time() + n) for n in range(editor_tasks.MAX_WATCHED_TASKS + 6)]
    for n, task_id in enumerate(ids):
        roo_write(tasks / task_id / "ui_messages.json", [])
        parent = ids[n - 1] if n % 2 else ids[n + 1]  # pairs naming each other
        roo_write(tasks / task_id / "history_item.json", {"id": task_id, "parentTaskId": parent})
    found = part.facts()[os.getpid()]
    assert len(found) == len(ids) and not any(f.subagents for f in found)
    watched = part.reader.watch_dirs()
    assert len(watched) == 6 + editor_tasks.MAX_WATCHED_TASKS
    assert part.reader.flat_dirs() == set(watched)


def test_what_the_last_message_says(tmp_path: Path) -> None:
    """An approval or a question waits; a completion is idle; a request cancelled before
    its answer (a ``cancelReason``, no cost) is over, not under way."""
    part = Part(tmp_path)
    task = part.tasks(editor_tasks.CLINE) / ms_id()
    messages = load(CLINE_TASK / "ui_messages.json")
    asking = {"ts": 1, "type": "ask", "ask": "tool", "text": "{}", "partial": False}
    cline_write(task / "ui_messages.json", [*messages[:4], asking])
    assert part.only().status == "waiting"
    started = in_flight(messages[:2])[-1]
    cancelled = {**started, "text": json.dumps({"request": "x", "cancelReason": "user_cancelled"})}
    cline_write(task / "ui_messages.json", [messages[0], cancelled])
    assert part.only(advance=1).status == "idle"
    cline_write(task / "ui_messages.json", messages)
    assert part.only(advance=1).status == "idle"


def test_a_task_written_before_its_editor_started_is_not_its(tmp_path: Path) -> None:
    """Within the horizon's slack, but before the editor started: not a conversation of it."""
    start = time.time() - 5
    part = Part(tmp_path, start)
    task = part.tasks(editor_tasks.CLINE) / str(int((start - 6) * 1000))
    cline_write(task / "ui_messages.json", [])
    os.utime(task / "ui_messages.json", (start - 5, start - 5))
    assert part.facts()[os.getpid()] == []


def test_the_conversation_written_last_is_the_current_one(tmp_path: Path) -> None:
    part = Part(tmp_path)
    first = part.tasks(editor_tasks.CLINE) / ms_id()
    second = part.tasks(editor_tasks.CLINE) / str(int(ms_id()) + 1)
    cline_write(first / "ui_messages.json", [])
    cline_write(second / "ui_messages.json", [])
    os.utime(first / "ui_messages.json", (time.time() - 2, time.time() - 2))
    assert [f.native_id for f in part.facts()[os.getpid()]][-1] == f"cline:{second.name}"
    cline_write(first / "ui_messages.json", [messages_of(1)])
    assert [f.native_id for f in part.facts(advance=1)[os.getpid()]][-1] == f"cline:{first.name}"


def messages_of(n: int) -> dict[str, Any]:
    return {"ts": n, "type": "say", "say": "text", "text": "x"}


def test_a_garbage_or_oversized_file_leaves_what_was_known(tmp_path: Path) -> None:
    part = Part(tmp_path)
    child = part.tasks(editor_tasks.ROO) / uuid7(time.time())
    parent = part.tasks(editor_tasks.ROO) / uuid7(time.time() - 1)
    roo_write(parent / "ui_messages.json", [])
    roo_write(child / "ui_messages.json", [])
    item = {**load(ROO_CHILD / "history_item.json"), "id": child.name}
    item["rootTaskId"] = item["parentTaskId"] = parent.name
    roo_write(child / "history_item.json", item)
    assert [s.agent_id for s in part.only().subagents] == [child.name]
    (child / "history_item.json").write_bytes(b"{torn")
    metadata = {"model_usage": [{"model_id": "m" * 10}], "pad": "x" * (1024 * 1024)}
    (parent / "task_metadata.json").write_text(json.dumps(metadata))
    found = part.only(advance=1)
    assert [s.agent_id for s in found.subagents] == [child.name] and found.model is None
    assert part.reader.stats.refused == 1


def test_a_resumed_old_task_is_found_when_its_history_is_rewritten(tmp_path: Path) -> None:
    """Watched (no poll): an old task's directory is not watched; the rewrite of Cline's
    taskHistory.json (or Roo's _index.json) lists the tasks again, at most every 5 s."""
    part = Part(tmp_path)
    old = time.time() - 3600
    task = part.tasks(editor_tasks.CLINE) / str(int(old * 1000))
    cline_write(task / "ui_messages.json", [])
    os.utime(task / "ui_messages.json", (old, old))
    os.utime(task, (old, old))
    assert part.facts(poll=False)[os.getpid()] == []
    cline_write(task / "ui_messages.json", load(CLINE_TASK / "ui_messages.json"))
    assert part.facts(advance=1, poll=False)[os.getpid()] == []  # no event: not seen
    history = part.user / "globalStorage" / editor_tasks.CLINE.ext_id / "state"
    part.reader.changed(history / "taskHistory.json")
    assert part.facts(advance=1, poll=False)[os.getpid()] == []  # listed 2 s ago
    assert part.only(advance=editor_tasks.RELIST_INTERVAL_S, poll=False).native_id == (
        f"cline:{task.name}"
    )
    roo = part.tasks(editor_tasks.ROO)
    other = roo / uuid7(old)
    roo_write(other / "ui_messages.json", [])
    for path in (other / "ui_messages.json", other):
        os.utime(path, (old, old))
    part.facts(advance=editor_tasks.RELIST_INTERVAL_S, poll=False)
    roo_write(other / "ui_messages.json", [messages_of(1)])
    part.reader.changed(roo / "_index.json")
    found = part.facts(advance=editor_tasks.RELIST_INTERVAL_S, poll=False)[os.getpid()]
    assert f"roo:{other.name}" in [f.native_id for f in found]
