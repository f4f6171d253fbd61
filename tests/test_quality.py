"""The code stays typed (mypy --strict) and lint-clean (ruff)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )


def test_mypy_strict() -> None:
    result = _run("mypy", "--strict", "quintd")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ruff() -> None:
    result = _run("ruff", "check", "quintd", "tests")
    assert result.returncode == 0, result.stdout + result.stderr


def test_ci_runs_exactly_the_readmes_test_command() -> None:
    readme = (ROOT / "README.md").read_text()
    setup = readme.split("## Set up\n", 1)[1].split("\n## ", 1)[0]
    blocks = [b.split("```", 1)[0].strip() for b in setup.split("```sh\n")[1:]]
    assert len(blocks) == 2, "two commands: install and run, test"
    install, test = blocks
    assert "quintd run" in install and "pytest" in test
    ci = [line for line in (ROOT / ".ci" / "run").read_text().splitlines() if line.strip()]
    assert ci[-1] == test


def test_the_readme_names_every_status_field() -> None:
    """`status --json`'s shape is defined once (quintd/protocol.py); the README lists it."""
    import dataclasses

    from quintd import protocol

    readme = (ROOT / "README.md").read_text()
    parts = [
        protocol.StatusReport,
        protocol.QueueReport,
        protocol.DeliveryReport,
        protocol.AgentStateReport,
        protocol.ScanReport,
        protocol.SettingsReport,
    ]
    missing = [
        f"{part.__name__}.{field.name}"
        for part in parts
        for field in dataclasses.fields(part)
        if f"`{field.name}`" not in readme
    ]
    assert missing == []
