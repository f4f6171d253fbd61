"""The scanner against real processes shaped like each agent."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from typing import Any

import psutil
import pytest
from conftest import SLEEP, Agents, fake_agent, node_binary, required_tool, wait_until

from quintd.model import AgentProcess
from quintd.platforms import BUILTIN_PLATFORMS, Platform
from quintd.procfs import start_ticks
from quintd.scanner import KnownProcess, Scanner, ScannerSettings, fold_trees
from quintd.signing.examine import Target
from quintd.signing.info import SigningInfo
from quintd.signing.resolver import SigningResolver

NODE = node_binary()  # required: the system's, or the test extra's

# A fake node package: optionally re-spawns itself (gemini-cli's relaunch) or starts a
# native child (codex's wrapper), then idles.
NODE_AGENT = textwrap.dedent("""
    const { spawn } = require('child_process');
    if (process.env.FAKE_RELAUNCH && !process.env.FAKE_CHILD) {
      spawn(process.execPath, ['--max-old-space-size=4096', __filename],
            { env: { ...process.env, FAKE_CHILD: '1' }, stdio: 'ignore' });
    }
    if (process.env.FAKE_NATIVE) {
      spawn(process.env.FAKE_NATIVE, ['600'], { stdio: 'ignore' });
    }
    setInterval(() => {}, 1 << 30);
""")


def _mine(agents: list[AgentProcess], *procs: subprocess.Popen[bytes]) -> list[AgentProcess]:
    """Agents in the scan that belong to the process trees this test started."""
    roots = {p.pid for p in procs}
    result = []
    for agent in agents:
        pids = {agent.pid}
        try:
            pids.update(p.pid for p in psutil.Process(agent.pid).parents())
        except psutil.Error:
            continue
        if pids & roots:
            result.append(agent)
    return result


def _package(root: Path, relative: str) -> Path:
    script = root / "node_modules" / relative
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(NODE_AGENT)
    return script


def _wait_scan(scanner: Scanner, predicate, what: str, *procs) -> list[AgentProcess]:
    return wait_until(
        lambda: predicate(found := _mine(scanner.scan(), *procs)) and found, what=what
    )


def test_named_binary_found_with_real_details(agents: Agents, short_tmp: Path) -> None:
    scanner = Scanner()
    proc = agents.binary("claude", cwd=short_tmp)
    [agent] = _wait_scan(scanner, lambda f: len(f) == 1, "claude binary", proc)
    assert agent.platform == "claude-code"
    assert agent.matched_by == "exe"
    assert agent.pid == proc.pid
    assert agent.ppid == os.getpid()
    assert agent.cwd == str(short_tmp)
    assert agent.exe == str(agents.root / "bin" / "claude")
    assert agent.user == psutil.Process().username()
    assert abs(agent.start_time - psutil.Process(proc.pid).create_time()) < 0.01
    assert agent.parent_pid is None


def test_already_running_agent_found_on_first_scan_with_its_start_time(agents: Agents) -> None:
    proc = agents.binary("codex")
    started = wait_until(
        lambda: (
            psutil.Process(proc.pid).name() == "codex" and psutil.Process(proc.pid).create_time()
        ),
        what="codex exec",
    )
    [agent] = _mine(Scanner().scan(), proc)
    assert agent.platform == "codex" and agent.start_time == started


def test_gone_process_disappears(agents: Agents) -> None:
    scanner = Scanner()
    proc = agents.binary("gemini")
    _wait_scan(scanner, lambda f: len(f) == 1, "gemini", proc)
    agents.stop(proc)
    assert not any(a.pid == proc.pid for a in scanner.scan())


def test_sh_script_named_like_agent(agents: Agents) -> None:
    script = agents.root / "gemini"
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    script.write_text(f"read x < {fifo}\n")
    proc = agents.spawn(["sh", str(script)])
    [agent] = _wait_scan(Scanner(), lambda f: len(f) == 1, "sh-hosted gemini", proc)
    assert (agent.platform, agent.matched_by) == ("gemini-cli", "script")
    with open(fifo, "w") as fh:
        fh.write("x\n")


def test_process_that_execs_into_agent_is_found(agents: Agents) -> None:
    """A fork is seen before its exec: a young process is re-checked until it settles."""
    claude = agents.root / "bin" / "claude"
    claude.parent.mkdir()
    fake_agent(claude)
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    proc = agents.spawn(["sh", "-c", f"read x < {fifo}; exec {claude} 600"])
    scanner = Scanner()
    wait_until(
        lambda: proc.pid in psutil.pids() and psutil.Process(proc.pid).name() == "sh",
        what="shell up",
    )
    assert _mine(scanner.scan(), proc) == []  # still the shell
    with open(fifo, "w") as fh:
        fh.write("x\n")
    [agent] = _wait_scan(scanner, lambda f: len(f) == 1, "exec'd claude", proc)
    assert agent.pid == proc.pid and agent.platform == "claude-code"


def test_node_hosted_claude_code(agents: Agents) -> None:
    script = _package(agents.root, "@anthropic-ai/claude-code/cli.js")
    proc = agents.spawn([str(NODE), str(script)])
    [agent] = _wait_scan(Scanner(), lambda f: len(f) == 1, "node claude", proc)
    assert (agent.platform, agent.matched_by) == ("claude-code", "script")


def test_gemini_relaunched_child_counts_once(agents: Agents) -> None:
    script = _package(agents.root, "@google/gemini-cli/dist/index.js")
    env = dict(os.environ, FAKE_RELAUNCH="1")
    proc = agents.spawn([str(NODE), "--no-warnings", str(script)], env=env)
    scanner = Scanner()
    # Wait until the child exists, then check it is folded into the parent.
    wait_until(lambda: len(psutil.Process(proc.pid).children()) == 1, what="relaunch")
    found = _mine(scanner.scan(), proc)
    assert [(a.pid, a.platform) for a in found] == [(proc.pid, "gemini-cli")]


def test_codex_wrapper_and_native_child_count_once(agents: Agents) -> None:
    native = agents.root / "node_modules/@openai/codex/vendor/x86_64-unknown-linux-musl/bin/codex"
    native.parent.mkdir(parents=True)
    fake_agent(native)
    script = _package(agents.root, "@openai/codex/bin/codex.js")
    proc = agents.spawn([str(NODE), str(script)], env=dict(os.environ, FAKE_NATIVE=str(native)))
    scanner = Scanner()
    wait_until(
        lambda: any(c.name() == "codex" for c in psutil.Process(proc.pid).children()),
        what="native codex child",
    )
    found = _mine(scanner.scan(), proc)
    assert [(a.pid, a.platform, a.matched_by) for a in found] == [(proc.pid, "codex", "script")]


def test_agent_started_by_another_agent_is_its_own_with_parent(agents: Agents) -> None:
    claude = agents.root / "bin" / "claude"
    claude.parent.mkdir()
    fake_agent(claude)
    script = _package(agents.root, "@openai/codex/bin/codex.js")
    proc = agents.spawn([str(NODE), str(script)], env=dict(os.environ, FAKE_NATIVE=str(claude)))
    scanner = Scanner()
    found = _wait_scan(scanner, lambda f: len(f) == 2, "codex with claude child", proc)
    by_platform = {a.platform: a for a in found}
    assert by_platform["codex"].parent_pid is None
    assert by_platform["claude-code"].parent_pid == proc.pid
    assert by_platform["claude-code"].ppid == proc.pid


def test_tool_children_of_an_agent_are_not_agents(agents: Agents) -> None:
    script = agents.root / "claude"
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    # A shell-hosted "claude" that runs tools: a sleep and a bash.
    script.write_text(f"{SLEEP} 600 & bash -c 'read x < {fifo}' & wait\n")
    proc = agents.spawn(["sh", str(script)])
    wait_until(lambda: len(psutil.Process(proc.pid).children()) == 2, what="tool children")
    found = _mine(Scanner().scan(), proc)
    assert [(a.pid, a.platform) for a in found] == [(proc.pid, "claude-code")]
    with open(fifo, "w") as fh:
        fh.write("x\n")


def test_exec_into_same_named_interpreter_is_found(agents: Agents) -> None:
    """sh that execs `sh .../claude`: same name before and after, different argv."""
    script = agents.root / "claude"
    fifo, hold = agents.root / "go", agents.root / "hold"
    os.mkfifo(fifo)
    os.mkfifo(hold)
    script.write_text(f"read x < {hold}\n")
    proc = agents.spawn(["sh", "-c", f"read x < {fifo}; exec sh {script}"])
    scanner = Scanner()
    wait_until(lambda: psutil.Process(proc.pid).cmdline()[:2] == ["sh", "-c"], what="sh up")
    assert _mine(scanner.scan(), proc) == []
    with open(fifo, "w") as fh:
        fh.write("x\n")
    [agent] = _wait_scan(scanner, lambda f: len(f) == 1, "exec'd sh claude", proc)
    assert (agent.pid, agent.platform, agent.matched_by) == (proc.pid, "claude-code", "script")
    with open(hold, "w") as fh:
        fh.write("x\n")


def test_agent_cpu_includes_its_working_tools(agents: Agents) -> None:
    """The agent itself idles while a tool child burns CPU: the tree's CPU grows."""
    script = agents.root / "claude"
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    burner = agents.root / "burn.py"
    burner.write_text(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 3:\n    pass\n"
    )
    burn = f"{sys.executable} {burner}"
    script.write_text(f"read x < {fifo}; {burn}\n")
    proc = agents.spawn(["sh", str(script)])
    scanner = Scanner()
    [before] = _wait_scan(scanner, lambda f: len(f) == 1, "claude", proc)
    with open(fifo, "w") as fh:
        fh.write("x\n")
    wait_until(lambda: psutil.Process(proc.pid).children(), what="tool child")
    own = psutil.Process(proc.pid).cpu_times()
    grown = wait_until(
        lambda: next(
            (a for a in _mine(scanner.scan(), proc) if a.cpu_time - before.cpu_time > 0.5), None
        ),
        what="tree CPU to grow",
    )
    assert grown.cpu_time - (own.user + own.system) > 0.5  # not the shell's own CPU


def test_helper_processes_are_never_sessions(agents: Agents) -> None:
    """Claude Code's background workers (`--bg-*` arguments) belong to an agent."""
    script = agents.root / "claude"
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    script.write_text(f"read x < {fifo}\n")
    worker = agents.spawn(["sh", str(script), "--bg-worker"])
    main = agents.spawn(["sh", str(script)])
    scanner = Scanner()
    found = _wait_scan(scanner, lambda f: any(a.pid == main.pid for a in f), "claude", main, worker)
    assert [a.pid for a in found] == [main.pid]
    assert worker.poll() is None  # the worker runs, and is still not a session


def test_python_hosted_aider(agents: Agents) -> None:
    """pipx-style install: a python script named `aider` (run through its shebang)."""
    aider = agents.root / "bin" / "aider"
    aider.parent.mkdir()
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    aider.write_text(f"#!{sys.executable}\nopen({str(fifo)!r}).read()\n")
    aider.chmod(0o755)
    proc = agents.spawn([str(aider), "--model", "sonnet"])
    [agent] = _wait_scan(Scanner(), lambda f: len(f) == 1, "aider", proc)
    # Linux names a shebang script's process after the script, so the name rule matches.
    assert (agent.platform, agent.matched_by) == ("aider", "name")
    assert agent.identity_path == str(aider)  # the script is the identity, not python
    with open(fifo, "w") as fh:
        fh.write("x")


def test_codex_app_server_children_belong_to_codex(agents: Agents) -> None:
    native = agents.root / "node_modules/@openai/codex/vendor/x86_64-unknown-linux-musl/bin/codex"
    native.parent.mkdir(parents=True)
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    # The native binary starts two `codex app-server` children of itself.
    native.write_text(
        f'#!/bin/sh\nif [ "$1" = app-server ]; then read x < {fifo}; exit; fi\n'
        f"{native} app-server --listen & {native} app-server --listen & wait\n"
    )
    native.chmod(0o755)
    script = _package(agents.root, "@openai/codex/bin/codex.js")
    proc = agents.spawn([str(NODE), str(script)], env=dict(os.environ, FAKE_NATIVE=str(native)))
    wait_until(
        lambda: (
            len(
                [
                    p
                    for p in psutil.Process(proc.pid).children(recursive=True)
                    if "app-server" in p.cmdline()
                ]
            )
            == 2
        ),
        what="app-server children",
    )
    found = _mine(Scanner().scan(), proc)
    assert [(a.pid, a.platform) for a in found] == [(proc.pid, "codex")]
    with open(fifo, "w") as fh:
        fh.write("x\nx\n")


def test_npm_with_its_process_title_set_is_no_agent(agents: Agents) -> None:
    """npm sets its process title: /proc/<pid>/cmdline becomes one NUL-padded string whose
    last word was taken for the program (a copilot-cli session, seen with a real npm)."""
    title = "npm install opencode-ai @github/copilot"
    code = f"process.title = {title!r}; setInterval(() => {{}}, 1 << 30); // " + "x" * 64
    proc = agents.spawn([str(NODE), "-e", code])
    cmdline = Path(f"/proc/{proc.pid}/cmdline")
    wait_until(
        lambda: cmdline.read_bytes().startswith(title.encode() + b"\0"), what="the process title"
    )
    assert psutil.Process(proc.pid).cmdline()[0] == title  # as psutil reads it
    assert _mine(Scanner().scan(), proc) == []


def test_an_installs_lifecycle_script_is_no_agent_but_an_agent_npx_started_is(
    agents: Agents,
) -> None:
    agents.prepare("claude")
    claude = [str(agents.root / "bin" / "claude"), "600"]
    installing = agents.spawn(claude, env={**os.environ, "npm_lifecycle_event": "postinstall"})
    via_npx = agents.spawn(claude, env={**os.environ, "npm_lifecycle_event": "npx"})
    found = _wait_scan(
        Scanner(), lambda f: len(f) >= 1, "the agent npx started", installing, via_npx
    )
    assert [a.pid for a in found] == [via_npx.pid]


# -- a reused pid --------------------------------------------------------------------------

# Put before each script run in its own pid namespace: the next process started gets the
# old one's pid, in a later clock tick than the old one's start (else nothing could tell
# the two apart).
PID_HANDOVER = textwrap.dedent("""
    import os, time

    def hand_over_pid(old_pid, old_ticks, deadline):
        tick = os.sysconf("SC_CLK_TCK")
        while int(time.clock_gettime(time.CLOCK_BOOTTIME) * tick) <= int(old_ticks) + 1:
            assert time.monotonic() < deadline, "the clock tick never passed"
            time.sleep(0.005)  # polling interval of a deadline wait
        with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
            fh.write(str(old_pid - 1))
""")

# Run as PID 1 of a pid namespace of its own (unshare), where no other process forks: an
# agent is scanned, exits and is reaped, and the next process is given its pid
# (/proc/sys/kernel/ns_last_pid) before the next pass. The pid is in both passes' listings
# of /proc: only the start time in clock ticks tells the two processes apart.
PID_REUSE = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from quintd.procfs import start_ticks
    from quintd.scanner import Scanner

    first, second = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + 30
    scanner = Scanner()
    old = subprocess.Popen([first, "600"])
    while not (seen := [a for a in scanner.scan() if a.pid == old.pid]):
        assert time.monotonic() < deadline, "the first agent was never scanned"
        time.sleep(0.01)  # polling interval of a deadline wait
    watched = scanner.exit_watch()
    old_ticks = start_ticks(old.pid)
    old.kill()
    old.wait()
    hand_over_pid(old.pid, old_ticks, deadline)
    new = subprocess.Popen([second, "600"])
    after = scanner.scan()
    print(json.dumps({
        "old": [old.pid, old_ticks, watched],
        "new": [new.pid, start_ticks(new.pid)],
        "first": [[a.pid, a.platform, a.start_time] for a in seen],
        "after": [[a.pid, a.platform, a.start_time] for a in after],
    }))
    new.kill()
    new.wait()
""")


def _in_own_pid_namespace(first: Path, second: Path, script: str = PID_REUSE) -> dict[str, Any]:
    """``script`` run in a new pid namespace with its own /proc (root's; otherwise as
    root of a new user namespace)."""
    unshare = required_tool("unshare")
    userns = [] if os.geteuid() == 0 else ["--user", "--map-root-user"]
    namespace = [unshare, *userns, "--pid", "--fork", "--mount-proc", "--kill-child"]
    result = subprocess.run(
        [*namespace, sys.executable, "-c", PID_HANDOVER + script, str(first), str(second)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    data: dict[str, Any] = json.loads(result.stdout)
    return data


@pytest.mark.parametrize("successor", ["claude", "codex", "sleep"])
def test_a_reused_pid_does_not_inherit_the_old_agent(short_tmp: Path, successor: str) -> None:
    """An agent exits and, before the next pass, another process gets its pid: the same
    agent's command again (the same command line: only its start tells it apart; a new
    session, with its own start time), another agent, or no agent at all."""
    bindir = short_tmp / "bin"
    bindir.mkdir()
    for name in ("claude", "codex"):
        shutil.copy(SLEEP, bindir / name)
    second = Path(SLEEP) if successor == "sleep" else bindir / successor
    data = _in_own_pid_namespace(bindir / "claude", second)
    pid, old_ticks, watched = data["old"]
    assert data["new"][0] == pid, "the pid was not reused"
    assert data["new"][1] != old_ticks
    assert watched == {str(pid): old_ticks}  # the exit watch knows which process it is
    [[_pid, platform, old_start]] = data["first"]
    assert platform == "claude-code"
    if successor == "sleep":
        assert data["after"] == []
    else:
        [[new_pid, platform, new_start]] = data["after"]
        assert (new_pid, platform) == (pid, "claude-code" if successor == "claude" else "codex")
        assert new_start > old_start


# Fed by events, which were lost: a process that was no agent exits and is reaped, and the
# next process, an agent, is given its pid; neither the exit nor the exec was read. The
# listing after the loss must look at that pid again (its start ticks changed).
LOST_REUSE = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from quintd.proc_events import EventBatch
    from quintd.procfs import start_ticks
    from quintd.scanner import Scanner

    first, second = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + 30
    old = subprocess.Popen([first, "600"])
    while not start_ticks(old.pid) or os.readlink(f"/proc/{old.pid}/exe") != first:
        assert time.monotonic() < deadline, "the first process never ran"
        time.sleep(0.01)  # polling interval of a deadline wait
    scanner = Scanner()
    scanner.follow_events(3600.0)
    scanner.scan()
    known = scanner.knows(old.pid)
    old_ticks = start_ticks(old.pid)
    old.kill()
    old.wait()
    hand_over_pid(old.pid, old_ticks, deadline)
    new = subprocess.Popen([second, "600"])
    scanner.feed(EventBatch(lost=True))
    found = []
    # The listing comes a second after the last one; 10 s is plenty.
    until = time.monotonic() + 10
    while not found and time.monotonic() < until:
        found = [a.platform for a in scanner.scan() if a.pid == new.pid]
        time.sleep(0.01)  # polling interval of a deadline wait
    print(json.dumps({"reused": new.pid == old.pid, "known": known, "found": found}))
    new.kill()
    new.wait()
""")


def test_after_lost_events_a_reused_pid_is_looked_at_again(short_tmp: Path) -> None:
    claude = short_tmp / "claude"
    shutil.copy(SLEEP, claude)
    data = _in_own_pid_namespace(Path(os.path.realpath(SLEEP)), claude, LOST_REUSE)
    assert data["reused"] and data["known"]
    assert data["found"] == ["claude-code"]


# Fed by events: an agent starts and exits before any pass (both events read), and before
# the next pass another process is given its pid: by its exec event, or by a listing after
# lost events. The agent was never reported: the next pass reports it, once, as it was;
# the new process at its pid comes in the pass after.
PARKED_REUSE = textwrap.dedent("""
    import json, os, subprocess, sys, time
    from quintd import scanner as scanner_module
    from quintd.proc_events import EventBatch
    from quintd.procfs import start_ticks
    from quintd.scanner import Scanner

    first, second = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + 30

    def until(probe, what):
        while not probe():
            assert time.monotonic() < deadline, what
            time.sleep(0.005)  # polling interval of a deadline wait

    def running(proc, program):
        until(lambda: start_ticks(proc.pid) and os.readlink(f"/proc/{proc.pid}/exe") == program,
              program)

    scanner = Scanner()
    scanner.follow_events(3600.0)
    scanner.scan()
    listed = time.monotonic()
    old = subprocess.Popen([first, "600"])
    running(old, first)
    if scanner.knows(old.pid):  # (what had its pid before exited)
        scanner.feed(EventBatch(exits={old.pid}))
    scanner.feed(EventBatch(execs={old.pid: None}))
    old_ticks = start_ticks(old.pid)
    old.kill()
    old.wait()
    scanner.feed(EventBatch(exits={old.pid}))
    hand_over_pid(old.pid, old_ticks, deadline)
    new = subprocess.Popen([second, "600"])
    running(new, os.path.realpath(second))
    if "HOW" == "exec":
        scanner.feed(EventBatch(execs={new.pid: None}))
    else:  # the next pass lists /proc (a listing comes at most once a RELIST_GAP_S)
        until(lambda: time.monotonic() > listed + scanner_module.RELIST_GAP_S, "the gap")
        scanner.feed(EventBatch(lost=True))
    passes = [[[a.pid, a.platform, a.start_time] for a in scanner.scan() if a.pid == new.pid]
              for _ in range(2)]
    print(json.dumps({"reused": new.pid == old.pid, "passes": passes}))
    new.kill()
    new.wait()
""")


@pytest.mark.parametrize("how", ["exec", "listing"])
@pytest.mark.parametrize("successor", ["codex", "sleep"])
def test_an_agent_gone_before_a_pass_is_reported_though_its_pid_was_reused(
    short_tmp: Path, how: str, successor: str
) -> None:
    bindir = short_tmp / "bin"
    bindir.mkdir()
    for name in ("claude", "codex"):
        shutil.copy(SLEEP, bindir / name)
    second = Path(SLEEP) if successor == "sleep" else bindir / successor
    data = _in_own_pid_namespace(bindir / "claude", second, PARKED_REUSE.replace("HOW", how))
    assert data["reused"]
    first, after = data["passes"]
    [[_old_pid, platform, old_start]] = first  # the agent that was, reported once
    assert platform == "claude-code"
    if successor == "sleep":
        assert after == []
    else:
        [[_pid, platform, new_start]] = after
        assert (platform, new_start > old_start) == ("codex", True)


# An agent's tool exits and is forgotten; its pid goes to a process elsewhere (not under
# the agent) that burns CPU: that CPU is not the agent's.
TOOL_PID_REUSE = textwrap.dedent("""
    import json, os, subprocess, sys, time
    import psutil
    from quintd.scanner import Scanner

    agent_script, burner = sys.argv[1], sys.argv[2]
    deadline = time.monotonic() + 30

    def until(probe, what):
        while not (value := probe()):
            assert time.monotonic() < deadline, what
            time.sleep(0.01)  # polling interval of a deadline wait
        return value

    def children():
        return [c.pid for c in psutil.Process(agent.pid).children()]

    agent = subprocess.Popen(["sh", agent_script], stdin=subprocess.PIPE)
    [tool] = until(children, "the tool")
    scanner = Scanner()
    until(lambda: any(a.pid == agent.pid for a in scanner.scan()) and scanner.knows(tool),
          "the agent and its tool")
    agent.stdin.close()  # the tool (cat) exits; the agent goes on
    until(lambda: not os.path.exists(f"/proc/{tool}"), "the tool's exit")
    until(children, "the agent's next command")  # (its pid taken before the reuse)
    [before] = [a.cpu_time for a in scanner.scan() if a.pid == agent.pid]
    assert not scanner.knows(tool)
    with open("/proc/sys/kernel/ns_last_pid", "w") as fh:
        fh.write(str(tool - 1))
    other = subprocess.Popen([sys.executable, burner], stdin=subprocess.PIPE)
    until(lambda: sum(psutil.Process(other.pid).cpu_times()[:2]) >= 1.0, "the burn")
    [after] = [a.cpu_time for a in scanner.scan() if a.pid == agent.pid]
    print(json.dumps({"reused": other.pid == tool, "grown": after - before}))
    other.kill()
    agent.kill()
""")


def test_the_pid_of_an_agents_tool_gone_is_not_its_work_in_another_process(
    short_tmp: Path,
) -> None:
    agent = short_tmp / "claude"
    agent.write_text("cat > /dev/null\nsleep 600\ntrue\n")
    burner = short_tmp / "burn.py"
    burner.write_text(
        "import sys, time\nt = time.process_time()\n"
        "while time.process_time() - t < 1.5:\n    pass\nsys.stdin.read()\n"
    )
    data = _in_own_pid_namespace(agent, burner, TOOL_PID_REUSE)
    assert data["reused"]
    assert data["grown"] < 0.5  # (the other process burned a second and more)


# -- settings and the process table's source (written for the survivors of the mutation run) --


def _pids_of(scanner: Scanner, *procs: subprocess.Popen[bytes]) -> set[int]:
    wanted = {p.pid for p in procs}
    return {a.pid for a in scanner.scan() if a.pid in wanted}


def test_a_new_signature_table_or_user_looks_at_every_process_again(agents: Agents) -> None:
    """Processes already seen are not looked at again, but for a reconfigure that changes
    what makes an agent: the table (a new platform) or whose processes count."""
    proc = agents.binary("acme-agent")
    scanner = Scanner()
    wait_until(lambda: start_ticks(proc.pid), what="started")
    assert _pids_of(scanner, proc) == set()  # no platform knows it
    acme = Platform(id="acme-agent", names=("acme-agent",))
    same_table = ScannerSettings(platforms=scanner.settings.platforms)
    scanner.reconfigure(same_table)
    assert _pids_of(scanner, proc) == set()
    scanner.reconfigure(ScannerSettings(platforms=(acme, *BUILTIN_PLATFORMS)))
    assert _pids_of(scanner, proc) == {proc.pid}  # seen again, with the new table
    other = os.getuid() + 1
    table = scanner.settings.platforms
    scanner.reconfigure(ScannerSettings(platforms=table, only_uid=other))
    assert _pids_of(scanner, proc) == set()  # another user's daemon: not its process
    scanner.reconfigure(ScannerSettings(platforms=table, only_uid=os.getuid()))
    assert _pids_of(scanner, proc) == {proc.pid}
    # (other agents may run on the machine meanwhile: only this one is the test's)
    assert scanner.exit_watch().get(proc.pid) == start_ticks(proc.pid)


def test_without_proc_the_table_comes_from_psutil(
    agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where there is no /proc to list (macOS, the BSDs): psutil's pids, compared with the
    known ones; a start and an exit are both seen."""
    listdir = os.listdir

    def no_proc(path: str = ".") -> list[str]:
        if str(path) == "/proc":
            raise FileNotFoundError(2, "No such file or directory", path)
        return listdir(path)

    monkeypatch.setattr("quintd.scanner.os.listdir", no_proc)
    scanner = Scanner()
    proc = agents.binary("codex")
    wait_until(lambda: _pids_of(scanner, proc) == {proc.pid}, what="the agent, via psutil")
    assert _pids_of(scanner, proc) == {proc.pid}  # known: not lost by the next listing
    agents.stop(proc)
    assert _pids_of(scanner, proc) == set()
    assert proc.pid not in scanner.exit_watch()


class GatedBackend:
    """An identity that takes as long as the test says (a large binary's hash)."""

    def __init__(self) -> None:
        self.gate = threading.Event()

    def __call__(self, target: Target) -> SigningInfo:
        self.gate.wait(30)
        return SigningInfo(signing_id=f"id:{Path(target.path).name}", source="test")


def _agent(scanner: Scanner, proc: subprocess.Popen[bytes]) -> AgentProcess | None:
    return next((a for a in scanner.scan() if a.pid == proc.pid), None)


def test_an_identity_found_in_the_pass_settles_the_agent(agents: Agents) -> None:
    backend = GatedBackend()
    backend.gate.set()
    resolver = SigningResolver(backend)
    try:
        scanner = Scanner(ScannerSettings(signing_budget=30), resolver)
        proc = agents.binary("codex")
        agent = wait_until(lambda: _agent(scanner, proc), what="codex")
        assert (agent.signing_id, agent.signing_settled) == ("id:codex", True)
        assert scanner.identity(proc.pid) == SigningInfo("id:codex", "test")
        assert scanner.identity(os.getpid()) is None  # not an agent
        assert not scanner.settling()
    finally:
        resolver.close()


@pytest.mark.parametrize("wait", [2.0, 30.0])
def test_an_agent_waits_for_its_identity_up_to_signing_wait(agents: Agents, wait: float) -> None:
    """Not settled while its identity is being examined, until signing_wait has passed
    (then announced without it); the identity, when it comes, settles it."""
    backend = GatedBackend()
    resolver = SigningResolver(backend)
    try:
        settings = ScannerSettings(signing_budget=0.01, signing_wait=wait)
        scanner = Scanner(settings, resolver)
        # The first pass looks at every process on the machine (it may take longer than
        # a short signing_wait on a loaded machine): the agent comes after it.
        scanner.scan()
        proc = agents.binary("claude")
        started = time.monotonic()
        agent = wait_until(lambda: _agent(scanner, proc), what="claude")
        assert (agent.signing_id, agent.signing_settled) == (None, False)
        assert scanner.settling()
        if wait < 10:
            settled = wait_until(
                lambda: (a := _agent(scanner, proc)) is not None and a.signing_settled and a,
                what="announced without its identity",
            )
            assert time.monotonic() - started >= wait
            assert settled.signing_id is None
        else:
            for _ in range(3):
                again = _agent(scanner, proc)
                assert again is not None and not again.signing_settled
        backend.gate.set()
        found = wait_until(
            lambda: (a := _agent(scanner, proc)) is not None and a.signing_id and a,
            what="the identity, later",
        )
        assert (found.signing_id, found.signing_settled) == ("id:claude", True)
    finally:
        backend.gate.set()
        resolver.close()


def test_inspections_are_counted_once_per_new_process(agents: Agents) -> None:
    scanner = Scanner()
    scanner.scan()
    before = scanner.stats.inspected
    assert before > 0
    proc = agents.binary("codex")
    wait_until(lambda: _agent(scanner, proc), what="codex")
    assert scanner.stats.inspected > before


def test_without_start_ticks_psutil_tells_a_process_and_its_exit(
    agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where /proc has no start ticks (macOS): psutil's start time, status and CPU."""
    monkeypatch.setattr("quintd.scanner.start_ticks", lambda _pid: None)
    scanner = Scanner()
    burner = agents.root / "burn.py"
    burner.write_text(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 30:\n    pass\n"
    )
    script = agents.root / "claude"  # a script named like the agent, run by sh
    script.write_text(f"{sys.executable} {burner}\n{SLEEP} 600\n")
    agent_proc = agents.spawn(["sh", str(script)])
    first = wait_until(lambda: _agent(scanner, agent_proc), what="claude, via psutil")
    assert scanner.exit_watch()[agent_proc.pid] is None  # no ticks to tell a reuse by
    grown = wait_until(
        lambda: (
            (a := _agent(scanner, agent_proc)) is not None
            and a.cpu_time - first.cpu_time > 0.5
            and a
        ),
        what="its tool's CPU, via psutil",
    )
    assert grown.pid == agent_proc.pid
    [tool] = psutil.Process(agent_proc.pid).children()
    assert tool.is_running()  # counted while it runs, not once reaped
    tool.kill()
    os.kill(agent_proc.pid, signal.SIGKILL)  # a zombie until reaped
    wait_until(lambda: _agent(scanner, agent_proc) is None, what="its exit, via psutil")
    agent_proc.wait()


def test_the_small_readers_of_a_process() -> None:
    from quintd.scanner import _cpu_seconds, _groups, _npm_caches, _relative_script

    class Times:
        user, system, children_user, children_system = 1.0, 2.0, 4.0, 8.0

    class Proc:
        def cpu_times(self) -> Times:
            return Times()

    assert _cpu_seconds(Proc()) == 15.0  # type: ignore[arg-type]
    assert _npm_caches(None) == ()
    assert _npm_caches({"HOME": "/home/dev"}) == ("/home/dev/.npm",)
    assert _npm_caches({"HOME": "relative", "npm_config_cache": "/c"}) == ("/c",)
    assert _npm_caches({"NPM_CONFIG_CACHE": "/C", "HOME": "/h"}) == ("/C", "/h/.npm")
    assert _relative_script("/usr/bin/node", ["node", "cli.js"]) is True
    assert _relative_script("/usr/bin/node", ["node", "/opt/cli.js"]) is False
    assert _relative_script("/usr/bin/codex", ["codex"]) is False
    if os.geteuid() == 0:
        child = subprocess.Popen([SLEEP, "600"], extra_groups=[4242, 4343])
        try:
            groups = _groups(psutil.Process(child.pid))
            assert {4242, 4343, os.getgid()} <= groups
        finally:
            child.kill()
            child.wait()
        # Its real gid, not among its supplementary groups.
        other = subprocess.Popen([SLEEP, "600"], group=4545, extra_groups=[4242])
        try:
            assert {4242, 4545} <= _groups(psutil.Process(other.pid))
        finally:
            other.kill()
            other.wait()
    assert os.getgid() in _groups(psutil.Process())


def test_an_agent_that_exited_is_gone_before_it_is_reaped(agents: Agents) -> None:
    scanner = Scanner()
    proc = agents.binary("codex")
    wait_until(lambda: _agent(scanner, proc), what="codex")
    os.kill(proc.pid, signal.SIGKILL)  # a zombie: still in /proc, not reaped
    wait_until(lambda: _agent(scanner, proc) is None, what="its exit")
    assert proc.pid not in scanner.exit_watch()
    proc.wait()


def _known(pid_start: float, ppid: int, agent: AgentProcess | None) -> KnownProcess:
    return KnownProcess(start_time=pid_start, ppid=ppid, name="x", agent=agent)


def _fake(pid: int, platform: str, start: float) -> AgentProcess:
    return AgentProcess(
        platform=platform,
        pid=pid,
        ppid=0,
        start_time=start,
        user=None,
        exe=None,
        cwd=None,
        name=platform,
        matched_by="exe",
    )


def test_folded_agents_come_oldest_first_and_pid_1_can_be_a_parent() -> None:
    """A container whose PID 1 is an agent: an agent it started runs under it."""
    known = {
        1: _known(100.0, 0, _fake(1, "claude-code", 100.0)),
        40: _known(101.0, 1, _fake(40, "codex", 101.0)),  # under PID 1, another platform
        30: _known(103.0, 1, _fake(30, "claude-code", 103.0)),  # the same platform: folded
        20: _known(100.5, 1, None),
        25: _known(102.0, 20, _fake(25, "gemini-cli", 102.0)),  # under a non-agent
    }
    folded = fold_trees(known, {40, 30, 25, 1})
    # Oldest first (not by pid).
    assert [(a.pid, a.parent_pid) for a in folded] == [(1, None), (40, 1), (25, 1)]


def test_agent_cpu_includes_its_tools_tools(agents: Agents) -> None:
    """A tool's own child (a grandchild of the agent) burning CPU while it runs."""
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    burner = agents.root / "burn.py"
    burner.write_text(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 30:\n    pass\n"
    )
    script = agents.root / "claude"
    script.write_text(f"read x < {fifo}; sh -c '{sys.executable} {burner}; true'\n")
    proc = agents.spawn(["sh", str(script)])
    scanner = Scanner()
    [before] = _wait_scan(scanner, lambda f: len(f) == 1, "claude", proc)
    with open(fifo, "w") as fh:
        fh.write("x\n")

    def burning() -> bool:
        tools = psutil.Process(proc.pid).children()
        return bool(tools) and bool(tools[0].children())

    wait_until(burning, what="the tool's child")
    wait_until(
        lambda: any(a.cpu_time - before.cpu_time > 0.5 for a in _mine(scanner.scan(), proc)),
        what="the grandchild's CPU counted while it runs",
    )
    assert burning()  # still running: its CPU came from the walk, not from a reaped child


def test_an_agent_gone_has_no_identity(agents: Agents) -> None:
    """Not even where the file its identity came from is still there (a script's)."""
    backend = GatedBackend()
    backend.gate.set()
    resolver = SigningResolver(backend)
    script = _package(agents.root, "@anthropic-ai/claude-code/cli.js")
    try:
        scanner = Scanner(ScannerSettings(signing_budget=30), resolver)
        proc = agents.spawn([str(NODE), str(script)])
        wait_until(lambda: _agent(scanner, proc), what="node claude")
        assert scanner.identity(proc.pid) == SigningInfo("id:cli.js", "test")
        agents.stop(proc)
        assert _agent(scanner, proc) is None
        assert scanner.identity(proc.pid) is None  # not the identity of a process gone
    finally:
        resolver.close()


class MineGated:
    """An identity that is quick for every file but the test's agent's, which takes as
    long as the test says (others' agents on the machine are not held up)."""

    def __init__(self, mine: Path) -> None:
        self.mine = str(mine)
        self.gate = threading.Event()

    def __call__(self, target: Target) -> SigningInfo:
        if target.path == self.mine:
            self.gate.wait(30)
        return SigningInfo(signing_id=f"id:{Path(target.path).name}", source="test")


def test_without_start_ticks_an_agent_still_waits_only_up_to_signing_wait(
    agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where psutil's start time tells a reused pid, the same process is not taken for a
    new one at each pass (its wait for an identity would start again, forever)."""
    monkeypatch.setattr("quintd.scanner.start_ticks", lambda _pid: None)
    agents.prepare("claude")
    backend = MineGated(agents.root / "bin" / "claude")
    resolver = SigningResolver(backend)
    try:
        scanner = Scanner(ScannerSettings(signing_budget=0.01, signing_wait=2.0), resolver)
        scanner.scan()  # every process on the machine: the agent comes after
        proc = agents.binary("claude")
        agent = wait_until(lambda: _agent(scanner, proc), what="claude")
        assert not agent.signing_settled
        wait_until(
            lambda: (a := _agent(scanner, proc)) is not None and a.signing_settled,
            what="announced without its identity",
        )
    finally:
        backend.gate.set()
        resolver.close()


def test_a_one_shot_scan_waits_for_the_identities_then_passes_again(agents: Agents) -> None:
    """quintd scan: a pass (too short for the identity here), a wait for the identities,
    and a second pass that carries them."""
    agents.prepare("codex")
    backend = MineGated(agents.root / "bin" / "codex")

    class OpenedByALongWait(SigningResolver):
        """The test's identity is given once someone waits long enough for it (the
        one-shot scan's wait; a pass waits 0.01 s here)."""

        def resolve(self, target: Target | str, timeout: float | None = None) -> Any:
            if timeout is None or timeout > 1:
                backend.gate.set()
            return super().resolve(target, timeout)

    resolver = OpenedByALongWait(backend)
    try:
        scanner = Scanner(ScannerSettings(signing_budget=0.01, signing_wait=0.01), resolver)
        proc = agents.binary("codex")
        wait_until(lambda: psutil.Process(proc.pid).name() == "codex", what="codex running")
        [agent] = [a for a in scanner.scan_complete(30) if a.pid == proc.pid]
        assert agent.signing_id == "id:codex"
        assert scanner.stats.passes == 2
    finally:
        backend.gate.set()
        resolver.close()


def test_a_tools_cpu_counts_after_its_brother_is_gone(agents: Agents) -> None:
    """An agent with two tools: the first exits and is forgotten; the second's CPU, while
    it runs, is still the agent's."""
    first, second = agents.root / "go-first", agents.root / "go-second"
    os.mkfifo(first)
    os.mkfifo(second)
    burner = agents.root / "burn.py"
    burner.write_text(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 30:\n    pass\n"
    )
    script = agents.root / "claude"
    script.write_text(
        f"sh -c 'read x < {first}' & sh -c 'read y < {second}; {sys.executable} {burner}; true' "
        "& wait\n"
    )
    proc = agents.spawn(["sh", str(script)])
    tools = wait_until(
        lambda: len(c := psutil.Process(proc.pid).children()) == 2 and c, what="two tools"
    )
    scanner = Scanner()
    [before] = _wait_scan(scanner, lambda f: len(f) == 1, "claude", proc)
    first_pid = next(t.pid for t in tools if str(first) in " ".join(t.cmdline()))
    first.write_text("x\n")
    wait_until(lambda: not psutil.pid_exists(first_pid), what="the first tool's exit")
    scanner.scan()  # forgets the first tool
    second.write_text("y\n")
    wait_until(
        lambda: any(a.cpu_time - before.cpu_time > 0.5 for a in _mine(scanner.scan(), proc)),
        what="the second tool's CPU counted while it runs",
    )
    [tool] = psutil.Process(proc.pid).children()
    [burning] = tool.children()  # the tool's own child (the walk goes down the tree)
    assert burning.is_running() and "burn.py" in " ".join(burning.cmdline())


# -- macOS app bundles: what only a signature can name (run here from a path shaped so) --


def _app_bundle(root: Path, program: str | None = None) -> Path:
    """A copy of ``program`` (a marked sleep: None) at an app bundle's path
    (Foo.app/Contents/MacOS/foo)."""
    exe = root / "Foo.app" / "Contents" / "MacOS" / "foo"
    exe.parent.mkdir(parents=True, exist_ok=True)
    if program is None:
        return fake_agent(exe)
    shutil.copy(program, exe)
    exe.chmod(0o755)
    return exe


class BundleSigner:
    """The bundle's signature, quick: Anthropic's Claude Code when ``valid``, else a
    signature that vouches for nothing; every other file: a plain identity."""

    def __init__(self, bundle: Path, valid: bool) -> None:
        self.bundle, self.valid = str(bundle), valid

    def __call__(self, target: Target) -> SigningInfo:
        if target.path != self.bundle:
            return SigningInfo(signing_id=f"id:{Path(target.path).name}", source="test")
        return SigningInfo(
            signing_id="id:foo",
            source="codesign",
            identifier="com.anthropic.claude-code",
            team_id="Q6L2SF6YDW",
            valid=self.valid,
        )


def test_an_app_bundle_without_a_resolver_is_no_agent(agents: Agents) -> None:
    exe = _app_bundle(agents.root)
    proc = agents.spawn([str(exe), "600"])
    wait_until(lambda: psutil.Process(proc.pid).exe() == str(exe), what="foo running")
    scanner = Scanner()
    assert _pids_of(scanner, proc) == set()
    assert scanner.knows(proc.pid)


def test_an_app_bundle_signed_by_an_agents_team_is_that_agent(agents: Agents) -> None:
    """Nothing in its name says so: its signature, examined in the background after the
    first look, makes it an agent in a later pass."""
    exe = _app_bundle(agents.root)
    resolver = SigningResolver(BundleSigner(exe, valid=True))
    try:
        scanner = Scanner(ScannerSettings(signing_budget=0.01), resolver)
        proc = agents.spawn([str(exe), "600"])
        wait_until(lambda: psutil.Process(proc.pid).exe() == str(exe), what="foo running")
        agent = wait_until(lambda: _agent(scanner, proc), what="foo, by its signature")
        assert (agent.platform, agent.matched_by) == ("claude-code", "signing")
    finally:
        resolver.close()


def test_a_young_app_bundle_is_still_watched_after_its_signature(
    agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A signature that names no agent ends the wait for it, not the watch of a young
    process, which may still exec into an agent."""
    monkeypatch.setattr("quintd.scanner._SETTLE_SECONDS", 3600.0)  # young all along
    sh = shutil.which("sh") or "/bin/sh"
    exe = _app_bundle(agents.root, os.path.realpath(sh))
    agents.prepare("claude")
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    resolver = SigningResolver(BundleSigner(exe, valid=False))
    try:
        scanner = Scanner(ScannerSettings(signing_budget=0.01), resolver)
        claude = agents.root / "bin" / "claude"
        proc = agents.spawn([str(exe), "-c", f"read x < {fifo}; exec {claude} 600"])
        wait_until(lambda: psutil.Process(proc.pid).exe() == str(exe), what="foo running")
        assert _agent(scanner, proc) is None
        wait_until(lambda: resolver.cached(str(exe)), what="its signature examined")
        assert _agent(scanner, proc) is None  # examined: no agent's
        fifo.write_text("x\n")
        wait_until(lambda: psutil.Process(proc.pid).name() == "claude", what="the exec")
        agent = wait_until(lambda: _agent(scanner, proc), what="the agent it became")
        assert agent.platform == "claude-code"
    finally:
        resolver.close()


def test_a_zombie_seen_first_is_no_agent_and_the_pass_goes_on(agents: Agents) -> None:
    """An agent that exited before any pass and is not reaped yet: its name is still
    there, its exe and command line are not; no agent, and the other agents are found."""
    zombie = agents.binary("claude")
    wait_until(lambda: psutil.Process(zombie.pid).name() == "claude", what="claude running")
    os.kill(zombie.pid, signal.SIGKILL)
    wait_until(lambda: psutil.Process(zombie.pid).status() == psutil.STATUS_ZOMBIE, what="a zombie")
    alive = agents.binary("codex")
    wait_until(lambda: psutil.Process(alive.pid).name() == "codex", what="codex running")
    assert _pids_of(Scanner(), zombie, alive) == {alive.pid}
    zombie.wait()


def test_a_process_gone_is_forgotten_by_the_next_listing(agents: Agents) -> None:
    proc = agents.binary("not-an-agent")
    wait_until(lambda: psutil.Process(proc.pid).name() == "not-an-agent", what="running")
    scanner = Scanner()
    scanner.scan()
    assert scanner.knows(proc.pid)
    agents.stop(proc)
    scanner.scan()
    assert not scanner.knows(proc.pid)
