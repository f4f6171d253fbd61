"""The editors' fixtures (tests/fixtures/editors, see its README): the writers that make the
editors' files as the editors' storage code writes them, and the committed snapshots of
each story, laid out in a test's home."""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import sqlite3
from pathlib import Path
from types import ModuleType
from typing import Any

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "editors"


def _load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("editors_generate", FIXTURES / "generate.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


GEN: Any = _load()
EDITOR_DIRS = {"vscode-copilot": ".config/Code", "cursor": ".config/Cursor"}


def steps(editor: str) -> list[tuple[str, float]]:
    data = json.loads((FIXTURES / editor / "steps.json").read_text())
    return [(s["step"], float(s["at"])) for s in data["steps"]]


def lay_out(editor: str, step: str, home: Path) -> Path:
    """The step's ``User`` directory in ``home`` (files written, databases made from their
    SQL, modification times as the story had them; what the step has not is deleted).
    Returns the ``User`` directory."""
    source = FIXTURES / editor / "snapshots" / step
    base = home / EDITOR_DIRS[editor]
    times: dict[str, float] = json.loads((source / "files.json").read_text())
    wanted = set(times)
    if (base / "User").exists():
        for path in sorted((base / "User").rglob("*"), reverse=True):
            relative = str(path.relative_to(base))
            if path.is_file() and relative not in wanted:
                path.unlink()
    for relative, mtime in times.items():
        target = base / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        if relative.endswith(".vscdb"):
            sql = (source / (relative + ".sql")).read_text()
            fresh = target.with_name(target.name + ".new")
            fresh.unlink(missing_ok=True)
            conn = sqlite3.connect(fresh)
            conn.executescript(sql)
            conn.close()
            os.replace(fresh, target)  # as a write: the database changed
        else:
            data = (source / relative).read_bytes()
            if not target.exists() or target.read_bytes() != data:
                with open(target, "wb") as fh:  # in place: an append or a rewrite
                    fh.write(data)
        os.utime(target, (mtime, mtime))
    _date_directories(base / "User")
    return base / "User"


def _date_directories(user: Path) -> None:
    """A directory's time is its newest entry's (what creating and deleting files in it,
    as a database's journal is, does)."""
    for directory in sorted((p for p in user.rglob("*") if p.is_dir()), reverse=True):
        times = [p.lstat().st_mtime for p in directory.iterdir()]
        if times:
            os.utime(directory, (max(times), max(times)))


def regenerate(target: Path) -> None:
    """The snapshots, made again into ``target``."""
    scratch = target / "scratch"
    GEN.make(target, scratch)
    shutil.rmtree(scratch)
