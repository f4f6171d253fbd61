"""The first judgement of an exec: from the executable's path and the process's name
only. A table of what real installs look like, then real processes."""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import SLEEP, node_binary, wait_until

from quintd.exec_filter import ExecFilter, Verdict, read_comm
from quintd.platforms import BUILTIN_PLATFORMS, Platform

INSPECT, LATER, SKIP = Verdict.INSPECT, Verdict.LATER, Verdict.SKIP
FILTER = ExecFilter(BUILTIN_PLATFORMS)
HOME = "/home/dev"


def judge(exe: str, comm: str) -> Verdict:
    """As :meth:`ExecFilter.examine` decides, from the two values it reads."""
    by_exe = FILTER.by_exe(exe)
    if by_exe is INSPECT:
        return by_exe
    by_name = FILTER.by_name(comm)
    return by_name if by_name is INSPECT or by_exe is None else by_exe


@pytest.mark.parametrize(
    ("exe", "comm", "expected"),
    [
        # What a build, a script or a fork bomb runs: nothing read beyond these two.
        ("/usr/bin/true", "true", SKIP),
        ("/usr/bin/git", "git", SKIP),
        ("/usr/bin/sleep", "sleep", SKIP),
        ("/usr/lib/gcc/x86_64-linux-gnu/12/cc1", "cc1", SKIP),
        ("/usr/lib/jvm/java-17-openjdk-amd64/bin/java", "java", SKIP),
        # Shells: looked at in the next pass if they still run.
        ("/usr/bin/dash", "sh", LATER),
        ("/usr/bin/bash", "bash", LATER),
        ("/usr/bin/zsh", "zsh", LATER),
        # ...unless the script they run is named like an agent (`#!/bin/sh` in `claude`).
        ("/usr/bin/dash", "claude", INSPECT),
        # Interpreters: the script decides, so a look at once (npm, npx, pip agents).
        ("/usr/bin/node", "node", INSPECT),
        (f"{HOME}/.nvm/versions/node/v22.11.0/bin/node", "node", INSPECT),
        (f"{HOME}/.nvm/versions/node/v22.11.0/bin/node", "npm exec claude", INSPECT),
        ("/usr/bin/python3.11", "python3", INSPECT),
        (f"{HOME}/.local/pipx/venvs/aider-chat/bin/python", "aider", INSPECT),
        (f"{HOME}/.bun/bin/bun", "bun", INSPECT),
        ("/usr/local/bin/deno", "deno", INSPECT),
        # `#!/usr/bin/env node` scripts: env runs under the script's name, then execs node.
        ("/usr/bin/env", "claude", INSPECT),
        ("/usr/bin/env", "gemini", INSPECT),
        ("/usr/bin/env", "npm", SKIP),  # npm's own: its node exec is looked at
        ("/usr/bin/env", "npx", SKIP),
        # Native agents, by their executable.
        (f"{HOME}/.local/share/claude/versions/2.1.197", "claude", INSPECT),
        (f"{HOME}/.local/share/claude/versions/2.1.197", "2.1.197", INSPECT),  # by its path
        (
            f"{HOME}/.npm/_npx/3d5f/node_modules/@openai/codex/vendor/"
            "x86_64-unknown-linux-musl/codex/codex",
            "codex",
            INSPECT,
        ),
        (f"{HOME}/.opencode/bin/opencode", "opencode", INSPECT),
        (
            f"{HOME}/.local/share/cursor-agent/versions/2025.09.04/cursor-agent",
            "cursor-agent",
            INSPECT,
        ),
        ("/usr/local/bin/goose", "goose", INSPECT),
        ("/usr/local/bin/kiro-cli-chat", "kiro-cli-chat", INSPECT),
        ("/usr/share/code/code", "code", INSPECT),
        # A symlink named like an agent: its name, not its target, says it.
        ("/opt/tools/runner", "claude", INSPECT),
        # An executable replaced since it started.
        (f"{HOME}/bin/codex (deleted)", "codex", INSPECT),
        # A name that merely contains an agent's: no.
        ("/usr/bin/claude-notes", "claude-notes", SKIP),
    ],
)
def test_the_judgement_of_an_exec(exe: str, comm: str, expected: Verdict) -> None:
    assert judge(exe, comm) is expected


def test_a_long_agent_name_is_known_by_the_15_bytes_the_kernel_keeps() -> None:
    table = (Platform(id="long", names=("my-long-agent-name",)),)
    assert ExecFilter(table).by_name("my-long-agent-n") is INSPECT
    assert ExecFilter(table).by_name("my-long-agent") is SKIP
    assert ExecFilter(()).by_exe("/usr/bin/true") is None  # no table: nothing but interpreters


# -- real processes ---------------------------------------------------------------------


@pytest.fixture
def running(tmp_path: Path) -> Iterator[list[subprocess.Popen[bytes]]]:
    procs: list[subprocess.Popen[bytes]] = []
    yield procs
    for proc in procs:
        proc.kill()
        proc.wait()


def _hold(procs: list[subprocess.Popen[bytes]], argv: list[str], name: str) -> int:
    """Start a process that waits on its stdin; its pid once it runs under ``name``."""
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL)
    procs.append(proc)
    wait_until(lambda: read_comm(proc.pid) == name, what=f"{name} running")
    return proc.pid


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_real_processes_are_judged_from_proc(
    tmp_path: Path, running: list[subprocess.Popen[bytes]]
) -> None:
    cat = shutil.which("cat") or "/bin/cat"
    link = tmp_path / "claude"
    link.symlink_to(cat)  # named claude, runs cat
    versions = tmp_path / ".local" / "share" / "claude" / "versions"
    versions.mkdir(parents=True)
    shutil.copy(cat, versions / "2.1.197")
    script = tmp_path / "bin" / "gemini"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\nread x\n")
    script.chmod(0o755)
    node = node_binary()
    cases = [
        ([cat], "cat", SKIP),
        (["sh", "-c", "read x"], "sh", LATER),
        ([node, "-e", "process.stdin.resume()"], "node", INSPECT),
        # comm: the name it was exec'd by (the venv's python is a symlink)
        (
            [sys.executable, "-c", "import sys; sys.stdin.read()"],
            Path(sys.executable).name,
            INSPECT,
        ),
        ([str(link)], "claude", INSPECT),
        ([str(versions / "2.1.197")], "2.1.197", INSPECT),
        ([str(script)], "gemini", INSPECT),
    ]
    for argv, name, expected in cases:
        pid = _hold(running, argv, name[:15])
        assert FILTER.examine(pid) is expected, argv


@pytest.mark.skipif(sys.platform != "linux", reason="/proc")
def test_a_process_gone_is_skipped_without_a_look() -> None:
    proc = subprocess.Popen([SLEEP, "0"])
    proc.wait()
    assert FILTER.examine(proc.pid) is SKIP
    assert read_comm(proc.pid) is None
