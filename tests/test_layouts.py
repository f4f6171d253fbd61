"""Every agent in every install layout the live tier runs, as recorded there
(``tests/fixtures/<agent>/<layout>/``, README in each): each step's process tree and agent
files replayed through quintd's real matcher, tree folding, readers and tracker, and the
sessions quintd reports then (platform, parent, state, name, model, how many) are the ones
the live run's quintd delivered by that step.

The layouts differ most in their process trees (npx's ``npm exec`` parents, npm's shims
that start the CLI as a grandchild, native binaries, CLIs that relaunch themselves): a
reader that looks for the agent's state at the wrong process fails here in one layout
while passing in the others."""

from __future__ import annotations

from pathlib import Path

import pytest
from layouts import RecordedDay, recorded_days, replay_day, reports

# What is recorded (a fixture directory lost is a layout no longer covered).
RECORDED = {
    "claude-code/native",
    "claude-code/npx",
    "claude-code/nvm_prefix",
    "claude-code/project",
    "cline/npx",
    "cline/nvm_prefix",
    "cline/project",
    "codex/native",
    "codex/node20",
    "codex/npx",
    "codex/nvm_prefix",
    "codex/project",
    "copilot-cli/native",
    "copilot-cli/nvm_prefix",
    "copilot-cli/project",
    "gemini-cli/npx",
    "gemini-cli/nvm_prefix",
    "gemini-cli/project",
    "opencode/native",
    "opencode/npx",
    "opencode/nvm_prefix",
    "opencode/project",
    "qwen-code/nvm_prefix",
    "qwen-code/project",
}

DAYS = recorded_days()


def test_every_recorded_layout_is_replayed() -> None:
    found = {f"{d.parent.name}/{d.name}" for d in DAYS}
    assert found == RECORDED


@pytest.mark.parametrize("folder", DAYS, ids=[f"{d.parent.name}-{d.name}" for d in DAYS])
def test_the_sessions_of_each_step_are_the_live_runs(folder: Path, tmp_path: Path) -> None:
    day = RecordedDay.load(folder)
    expected = reports(day.expected())
    assert len(day.steps) >= 4, "start, busy, idle and quit at least"
    assert expected[-1], "the live run reported sessions"
    assert any(r[1] == "ended" for r in expected[-1].values()), "and their end"
    got = reports(replay_day(day, tmp_path / "home"))
    for step, want, have in zip(day.steps, expected, got, strict=True):
        assert have == want, (
            f"{day.platform} ({day.layout}), step {step.name} ({step.what}):\n"
            f"  the live run's quintd: {want}\n  the replay's:          {have}"
        )
