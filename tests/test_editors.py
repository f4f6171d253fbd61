"""The VS Code-family editors' readers: Cursor's composers and VS Code's chat, each
conversation a session of the editor's main process. No editor runs here: the files are
written as each editor's storage code writes them (tests/fixtures/editors, its README),
replayed step by step with recorded processes (tests/replay.py), and followed live with a
real process standing for the editor (the real scanner, watchdog, readers and tracker).
Unverified against a running editor."""

from __future__ import annotations

import filecmp
import json
import os
import signal
import sqlite3
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import Agents, wait_until
from editor_fixture import FIXTURES, GEN, lay_out, regenerate, steps
from replay import MACHINE, Rec, RecordedProcesses, Replay, agents, story

from quintd.model import ConversationFacts
from quintd.platforms import BUILTIN_PLATFORMS, match_process
from quintd.scanner import Scanner
from quintd.sources import copilot_chat, cursor_composers
from quintd.sources.editors import CURSOR_SPEC, VSCODE_SPEC, WINDSURF_SPEC, VsCodeState
from quintd.sources.manager import SourceManager, SourceSettings
from quintd.sources.spec import ReaderContext
from quintd.tracker import SessionTracker

T0 = GEN.T0
PROJECT = "/home/dev/src/shop"
CODE = "/usr/share/code/code"
CURSOR = "/usr/share/cursor/cursor"


def _electron(pid: int, exe: str, start: float = T0) -> list[Rec]:
    """An Electron editor as Linux shows it: the main process, its zygote and renderer,
    and the extension host (a utility process), all one executable."""
    comm = os.path.basename(exe)
    return [
        Rec(pid, 1, comm, exe, [exe], PROJECT, start),
        Rec(pid + 1, pid, comm, exe, [exe, "--type=zygote", "--no-zygote-sandbox"], None, start),
        Rec(pid + 2, pid + 1, comm, exe, [exe, "--type=renderer", "--lang=en-US"], None, start),
        Rec(
            pid + 3,
            pid,
            comm,
            exe,
            [exe, "--type=utility", "--utility-sub-type=node.mojom.NodeService"],
            None,
            start,
        ),
    ]


def _replay(tmp_path: Path, editor: str, idle_after: float = 20.0) -> Replay:
    spec = {"vscode-copilot": VSCODE_SPEC, "cursor": CURSOR_SPEC}[editor]
    return Replay(tmp_path / "home", T0, idle_after=idle_after, readers=(spec,))


def _play(
    tmp_path: Path,
    editor: str,
    exe: str,
    restart_after: str | None = None,
    idle_steps: tuple[str, ...] = (),
) -> Replay:
    replay = _replay(tmp_path, editor)
    procs = _electron(4100, exe)
    for name, at in steps(editor):
        lay_out(editor, name, replay.home)
        if name.endswith("editor-exit"):
            replay.step([], at)
            continue
        replay.step(procs, at)
        if name in idle_steps:
            replay.advance(30.0)  # quiet, past idle_after
        if name == restart_after:
            replay.restart()
    return replay


# -- the stories, replayed ---------------------------------------------------------------


@pytest.mark.parametrize("restart_after", [None, "01-generating", "03-second-conversation"])
def test_vscode_chat_story_replayed(tmp_path: Path, restart_after: str | None) -> None:
    replay = _play(
        tmp_path,
        "vscode-copilot",
        CODE,
        restart_after,
        idle_steps=("00-start", "02-idle", "04-needs-input"),
    )
    assert story(replay.events) == [
        ("s1", "active", "shop", None, None),  # the editor, before any conversation
        ("s1", "idle", "shop", None, None),
        # its first conversation (written at the storage's flush, while it answers) takes
        # the editor's session over; the old workspace's history is not reported
        ("s1", "active", "shop", GEN.MODEL, None),
        ("s1", "idle", "shop", GEN.MODEL, None),  # answered; its generated title not sent
        ("s2", "active", "shop", "copilot/claude-sonnet-4", None),  # a second conversation
        ("s2", "idle", "shop", "copilot/claude-sonnet-4", None),  # waits for a confirmation
        ("s2", "active", "shop", "copilot/claude-sonnet-4", None),  # confirmed, it went on
        ("s1", "ended", "shop", GEN.MODEL, None),  # deleted
        ("s2", "ended", "shop", "copilot/claude-sonnet-4", None),  # the editor exits
    ]
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    assert ids[1] == GEN_ID("vscode-copilot", GEN.SECOND)


@pytest.mark.parametrize("restart_after", [None, "03-sub-conversation"])
def test_cursor_composer_story_replayed(tmp_path: Path, restart_after: str | None) -> None:
    replay = _play(
        tmp_path,
        "cursor",
        CURSOR,
        restart_after,
        idle_steps=(
            "00-start",
            "02-idle",
            "04-second-conversation",
            "05-first-archived",
            "06-second-deleted",
        ),
    )
    model = GEN.CURSOR_MODEL
    assert story(replay.events) == [
        ("s1", "active", "shop", None, None),
        ("s1", "idle", "shop", None, None),
        ("s1", "active", "shop", model, None),  # a composer generating: it took s1 over
        ("s1", "idle", "shop", model, None),
        ("s1", "active", "shop", model, None),  # asked again, and it runs a sub-composer
        ("s2", "active", None, "gpt-5", "s1"),
        ("s3", "active", "shop", None, None),  # a second conversation (Cursor picks its model)
        ("s2", "ended", None, "gpt-5", "s1"),  # the sub-composer completed
        ("s1", "idle", "shop", model, None),
        ("s1", "ended", "shop", model, None),  # archived
        ("s3", "idle", "shop", None, None),  # answered
        ("s4", "active", "shop", None, None),  # the second deleted: the editor on its own
        ("s3", "ended", "shop", None, None),
        ("s4", "idle", "shop", None, None),
        ("s4", "ended", "shop", None, None),  # the editor exits
    ]


def GEN_ID(platform: str, native: str) -> str:  # noqa: N802 (reads as the constant it makes)
    from quintd.identity import native_session_id

    return native_session_id(MACHINE, platform, native, uid=os.getuid())


def test_the_committed_snapshots_are_what_the_writers_make(tmp_path: Path) -> None:
    regenerate(tmp_path)
    for editor in ("vscode-copilot", "cursor"):
        left, right = FIXTURES / editor, tmp_path / editor
        assert json.loads((left / "steps.json").read_text()) == json.loads(
            (right / "steps.json").read_text()
        )
        for path in sorted((left / "snapshots").rglob("*")):
            twin = right / path.relative_to(left)
            assert twin.exists(), twin
            if path.is_file():
                assert filecmp.cmp(path, twin, shallow=False), path
        made = {p.relative_to(right) for p in (right / "snapshots").rglob("*")}
        kept = {p.relative_to(left) for p in (left / "snapshots").rglob("*")}
        assert made == kept


def test_only_the_main_process_of_an_electron_tree_is_an_editor() -> None:
    for exe in (CODE, CURSOR, "/usr/share/codium/codium"):
        found = agents(_electron(4100, exe), Path("/nonexistent"))
        assert [(a.pid, a.parent_pid) for a in found] == [(4100, None)], exe
        # Orphaned helpers (their main process gone) are still nobody's session.
        assert agents(_electron(4100, exe)[1:], Path("/nonexistent")) == []
    launcher = match_process(
        BUILTIN_PLATFORMS,
        name="code",
        exe=CODE,
        argv=[CODE, "/usr/share/code/resources/app/out/cli.js", "--ms-enable-electron-run-as-node"],
    )
    assert launcher is not None and launcher.helper  # `code .` hands over to the main process
