"""Replaying a live day recorded per install layout (``tests/fixtures/<agent>/<layout>/``,
written by ``tests/live/recorder.py`` with ``QUINTD_LIVE_RECORD``): each step's process tree
and agent files through quintd's real pipeline (``replay.Replay``), and the sessions quintd
would report then, in the form the live run's events are compared in.

Sessions are named the same way on both sides, since their ids differ (the live machine's
id, the live user's uid): in the order of the step they first appear in, and within a step
roots before sub-agents, then by what they report (platform, name, model, state)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from replay import Rec, Replay, load_processes

FIXTURES = Path(__file__).parent / "fixtures"

# (platform, state, session name, model, parent label)
Report = tuple[str | None, str, str | None, str | None, str | None]
# (session, parent, platform, state, session name, model): one event, either side's
Seen = tuple[str, str | None, str | None, str, str | None, str | None]


def recorded_days() -> list[Path]:
    """Every recorded layout: ``fixtures/<agent>/<layout>/day.json``."""
    return sorted(p.parent for p in FIXTURES.glob("*/*/day.json"))


@dataclass(frozen=True)
class Step:
    name: str
    what: str
    t: float  # when the snapshot was taken (epoch seconds)
    t_events: float  # when the events were read: two of quintd's passes later


@dataclass
class RecordedDay:
    folder: Path
    platform: str
    layout: str
    version: str | None
    idle_after: float
    steps: list[Step]
    events: list[dict[str, Any]]

    @classmethod
    def load(cls, folder: Path) -> RecordedDay:
        data = json.loads((folder / "day.json").read_text())
        steps = [Step(s["step"], s["what"], s["t"], s["t_events"]) for s in data["steps"]]
        return cls(
            folder,
            data["platform"],
            data["layout"],
            data.get("version"),
            float(data["idle_after"]),
            steps,
            data["events"],
        )

    def snapshot(self, step: Step) -> Path:
        return self.folder / "snapshots" / step.name

    def processes(self, step: Step) -> list[Rec]:
        return load_processes(self.snapshot(step) / "processes.json")

    def expected(self) -> list[list[Seen]]:
        """The live run's events, per step (those that arrived by its events' reading)."""
        per_step: dict[str, list[Seen]] = {s.name: [] for s in self.steps}
        for e in self.events:
            per_step[e["step"]].append(
                (
                    e["session"],
                    e["parent"],
                    e["platform"],
                    e["state"],
                    e["session_name"],
                    e["model"],
                )
            )
        return [per_step[s.name] for s in self.steps]


def lay_out(snapshot: Path, home: Path) -> None:
    """The home as the snapshot holds it: changed files rewritten in place (appended
    transcripts keep their inode, as the agents' do), new ones written, the files the agent
    deleted deleted; modification times as recorded. A SQLite database is kept as its SQL
    text (``<name>.sql``) and built here."""
    times: dict[str, float] = json.loads((snapshot / "files.json").read_text())
    source = snapshot / "home"
    for path in sorted(home.rglob("*"), reverse=True):
        relative = str(path.relative_to(home))
        if path.is_file() and relative not in times:
            path.unlink()
    for relative, mtime in times.items():
        src = source / relative
        dest = home / relative
        dest.parent.mkdir(parents=True, exist_ok=True)
        data = src.read_bytes() if src.exists() else database(Path(f"{src}.sql"))
        if not dest.exists() or dest.read_bytes() != data:
            with open(dest, "r+b" if dest.exists() else "wb") as fh:
                fh.write(data)
                fh.truncate()
        os.utime(dest, (mtime, mtime))


def database(dump: Path) -> bytes:
    """A SQLite database recorded as SQL text, built (the same text, the same bytes)."""
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "built.db"
        conn = sqlite3.connect(path)
        text = dump.read_text()
        try:
            if '"sqlite_sequence"' in text:
                # The dump fills sqlite_sequence but cannot create it (only a table with
                # AUTOINCREMENT does, and the database may have none left: Codex's).
                conn.executescript(
                    'CREATE TABLE "qd seq"(id INTEGER PRIMARY KEY AUTOINCREMENT);'
                    'DROP TABLE "qd seq";'
                )
            conn.executescript(text)
            conn.commit()
        finally:
            conn.close()
        return path.read_bytes()


def reports(steps: Iterable[list[Seen]]) -> list[dict[str, Report]]:
    """For each step, every session reported so far (labelled canonically, see the
    module's docstring): its platform, its last state, name and model, its parent."""
    labels: dict[str, str] = {}
    latest: dict[str, Seen] = {}
    out = []
    for events in steps:
        new: list[str] = []
        for event in events:
            if event[0] not in labels and event[0] not in new:
                new.append(event[0])
            latest[event[0]] = event
        roots = [s for s in new if latest[s][1] is None]
        children = [s for s in new if latest[s][1] is not None]

        def key(sid: str) -> tuple[str, ...]:
            _, parent, platform, state, name, model = latest[sid]
            return (labels.get(parent or "", ""), platform or "", name or "", model or "", state)

        for sid in sorted(roots, key=key):
            labels[sid] = f"S{len(labels) + 1}"
        for sid in sorted(children, key=key):
            labels[sid] = f"S{len(labels) + 1}"
        out.append(
            {
                labels[sid]: (
                    e[2],
                    e[3],
                    e[4],
                    e[5],
                    labels.get(e[1]) if e[1] is not None else None,
                )
                for sid, e in latest.items()
            }
        )
    return out


def replay_day(day: RecordedDay, home: Path) -> list[list[Seen]]:
    """Each step through quintd: the snapshot laid out, one pass when it was taken, one
    when its events were read, and one once ``idle_after`` has passed (while the next step
    is over: a step is recorded where the day stands still (a held turn, an idle prompt, a
    quit: the recorder waits until quintd has sent nothing for longer than ``idle_after``).
    The events of each step."""
    home.mkdir(parents=True, exist_ok=True)
    replay = Replay(home, day.steps[0].t - 1.0, idle_after=day.idle_after)
    per_step: list[list[Seen]] = []
    for step in day.steps:
        lay_out(day.snapshot(step), home)
        recs = day.processes(step)
        before = len(replay.events)
        replay.step(recs, step.t)
        replay.step(recs, step.t_events)
        replay.step(recs, step.t_events + day.idle_after + 0.5)
        per_step.append(
            [
                (
                    e.session_id,
                    e.parent_id,
                    e.platform,
                    e.state,
                    e.session_name,
                    e.model,
                )
                for e in replay.events[before:]
            ]
        )
    return per_step


def clean(home: Path) -> None:
    shutil.rmtree(home, ignore_errors=True)
