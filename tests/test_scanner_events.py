"""The scanner fed by the kernel's process events (as root on Linux): agents found from
their exec without listing /proc, one that exits before a pass reported once, shells at
the next pass, agents' tools followed from their fork, the looks' rate limit and the
queue's bound, lost events, and the same agents as the scan finds."""

from __future__ import annotations

import contextlib
import os
import select
import shutil
import subprocess
import sys
import textwrap
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest
from conftest import SLEEP, Agents, node_binary, wait_until

from quintd.model import AgentProcess
from quintd.proc_events import EventBatch, ProcEvents
from quintd.scanner import Scanner

pytestmark = pytest.mark.skipif(
    sys.platform != "linux" or os.geteuid() != 0, reason="the process connector: Linux, as root"
)
CAT = shutil.which("cat") or "/bin/cat"
NEVER = 3600.0  # no scheduled listing during a test: what is found, events found


class Fed:
    """A scanner and the events that feed it, as the daemon's loop would run them."""

    def __init__(self, **tuning: float) -> None:
        self.events = ProcEvents.open()
        self.scanner = Scanner()
        self.scanner.follow_events(NEVER, **tuning)  # type: ignore[arg-type]
        self.scanner.scan()  # the first pass lists /proc
        self.batches: list[EventBatch] = []

    def pump(self) -> None:
        """Feed what has come (waiting a little for it)."""
        select.select([self.events.fileno()], [], [], 0.05)
        while True:
            batch = self.events.read()
            if not batch.events:
                return
            self.scanner.feed(batch)
            self.batches.append(batch)

    def fed(self, probe: Callable[[EventBatch], bool]) -> bool:
        return any(probe(b) for b in self.batches)

    def until(self, probe: Callable[[], object], what: str) -> None:
        wait_until(lambda: (self.pump(), probe())[1], what=what)

    def scan_for(self, procs: list[subprocess.Popen[bytes]]) -> list[AgentProcess]:
        self.pump()
        return mine(self.scanner.scan(), procs)

    def close(self) -> None:
        self.events.close()


@pytest.fixture
def fed() -> Iterator[Fed]:
    f = Fed()
    yield f
    f.close()


def mine(agents: list[AgentProcess], procs: list[subprocess.Popen[bytes]]) -> list[AgentProcess]:
    """The agents of the process trees a test started."""
    roots = {p.pid for p in procs}
    result = []
    for agent in agents:
        pids = {agent.pid}
        with contextlib.suppress(psutil.Error):  # exited: its own pid says it
            pids.update(p.pid for p in psutil.Process(agent.pid).parents())
        if pids & roots:
            result.append(agent)
    return result


def held(agents: Agents, name: str) -> subprocess.Popen[bytes]:
    """A native agent (a copy of cat named ``name``) that exits when its stdin closes."""
    binary = agents.root / "bin" / name
    binary.parent.mkdir(exist_ok=True)
    if not binary.exists():
        shutil.copy(CAT, binary)
    proc = subprocess.Popen(
        [str(binary)], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, start_new_session=True
    )
    agents.procs.append(proc)
    return proc


def test_an_agent_started_after_the_first_pass_is_found_from_its_exec(
    fed: Fed, agents: Agents
) -> None:
    proc = agents.binary("amp")
    fed.until(lambda: fed.scanner.knows(proc.pid), "amp looked at from its exec")
    [agent] = fed.scan_for([proc])
    assert (agent.pid, agent.platform, agent.matched_by) == (proc.pid, "amp", "exe")
    assert fed.scanner.stats.listings == 1  # the first pass's only
    assert fed.scanner.stats.looked_at_once >= 1


def test_an_agent_that_exits_before_any_pass_is_reported_once_then_gone(
    fed: Fed, agents: Agents
) -> None:
    proc = held(agents, "amp")
    fed.until(lambda: fed.scanner.knows(proc.pid), "amp looked at from its exec")
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()
    fed.until(lambda: fed.fed(lambda b: proc.pid in b.exits), "its exit fed")
    [agent] = fed.scan_for([proc])  # exited: reported as it was seen, once
    assert (agent.pid, agent.platform) == (proc.pid, "amp")
    assert agent.signing_settled
    assert fed.scan_for([proc]) == []
    assert not fed.scanner.knows(proc.pid)


def test_an_agent_known_to_a_pass_is_forgotten_at_its_exit(fed: Fed, agents: Agents) -> None:
    proc = held(agents, "codex")
    fed.until(lambda: fed.scanner.knows(proc.pid), "codex looked at")
    assert [a.pid for a in fed.scan_for([proc])] == [proc.pid]
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait()
    fed.until(lambda: not fed.scanner.knows(proc.pid), "codex forgotten at its exit")
    assert fed.scan_for([proc]) == []


def test_a_shell_hosted_agent_is_found_at_the_next_pass(fed: Fed, agents: Agents) -> None:
    script = agents.root / "claude"
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    script.write_text(f"read x < {fifo}\n")
    proc = agents.spawn(["sh", str(script)])
    fed.until(lambda: fed.fed(lambda b: proc.pid in b.execs), "its exec fed")
    assert not fed.scanner.knows(proc.pid)  # a shell: not looked at as it came
    [agent] = fed.scan_for([proc])
    assert (agent.pid, agent.platform, agent.matched_by) == (proc.pid, "claude-code", "script")
    assert fed.scanner.stats.listings == 1
    with open(fifo, "w") as fh:
        fh.write("x\n")


def test_execs_that_cannot_be_agents_are_never_looked_at(fed: Fed) -> None:
    procs = [subprocess.Popen([SLEEP, "600"]) for _ in range(50)]
    try:
        fed.until(
            lambda: all(fed.fed(lambda b, p=p: p.pid in b.execs) for p in procs),
            "the sleeps' execs fed",
        )
        fed.scanner.scan()
        assert not any(fed.scanner.knows(p.pid) for p in procs)
        assert fed.scanner.stats.execs_skipped >= 50
    finally:
        for p in procs:
            p.kill()
            p.wait()


def test_an_agent_that_execs_into_another_program_is_no_longer_one(
    fed: Fed, agents: Agents
) -> None:
    script = agents.root / "bin" / "gemini"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\nread x\nexec {SLEEP} 600\n")
    script.chmod(0o755)
    proc = subprocess.Popen([str(script)], stdin=subprocess.PIPE, start_new_session=True)
    agents.procs.append(proc)
    fed.until(lambda: fed.scanner.knows(proc.pid), "gemini looked at")
    assert [a.platform for a in fed.scan_for([proc])] == ["gemini-cli"]
    assert proc.stdin is not None
    proc.stdin.write(b"x\n")
    proc.stdin.close()
    fed.until(lambda: psutil.Process(proc.pid).name() == "sleep", "the exec into sleep")
    wait_until(lambda: fed.scan_for([proc]) == [], what="gemini gone from the scan")


def test_tools_an_agent_starts_count_as_its_work(fed: Fed, agents: Agents) -> None:
    """The agent idles while a tool child, started after the listing, burns CPU: its
    fork is followed, so the tree's CPU grows without a listing."""
    script = agents.root / "claude"
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    burner = agents.root / "burn.py"
    burner.write_text(
        "import time\nt = time.process_time()\nwhile time.process_time() - t < 3:\n    pass\n"
    )
    script.write_text(f"read x < {fifo}; {sys.executable} {burner}\n")
    proc = agents.spawn(["sh", str(script)])
    before = wait_until(lambda: fed.scan_for([proc]), what="claude")[0]
    with open(fifo, "w") as fh:
        fh.write("x\n")
    wait_until(lambda: psutil.Process(proc.pid).children(), what="tool child")
    own = psutil.Process(proc.pid).cpu_times()
    grown = wait_until(
        lambda: next((a for a in fed.scan_for([proc]) if a.cpu_time - before.cpu_time > 0.5), None),
        what="tree CPU to grow",
    )
    assert grown.cpu_time - (own.user + own.system) > 0.5  # not the shell's own CPU
    assert fed.scanner.stats.listings == 1


def test_looks_beyond_the_rate_wait_for_the_next_pass(agents: Agents) -> None:
    fed = Fed(looks_per_s=0.001, looks_burst=1)
    try:
        procs = [held(agents, "goose") for _ in range(3)]
        fed.until(lambda: all(fed.fed(lambda b, p=p: p.pid in b.execs) for p in procs), "execs fed")
        assert fed.scanner.stats.put_off >= 2
        found = fed.scan_for(procs)
        assert sorted(a.pid for a in found) == sorted(p.pid for p in procs)
    finally:
        fed.close()


def test_lost_events_make_the_next_passes_list_proc(agents: Agents) -> None:
    fed = Fed(queue_max=1)
    try:
        # Started unseen: its events are never fed (as if the kernel dropped them).
        unseen = agents.binary("crush")
        wait_until(lambda: psutil.Process(unseen.pid).name() == "crush", what="crush running")
        assert fed.scanner.feed(EventBatch(lost=True))  # a pass should come soon
        found = wait_until(lambda: mine(fed.scanner.scan(), [unseen]), what="crush by a listing")
        assert [a.platform for a in found] == ["crush"]
        # (a listing or more: the queue of one may be taken by another new process)
        assert fed.scanner.stats.listings >= 2 and fed.scanner.stats.lost_events == 1
        listings = fed.scanner.stats.listings
        # A full queue leaves the rest to a listing too.
        shells = [agents.spawn(["sh", "-c", f"{SLEEP} 600; true"]) for _ in range(3)]
        fed.until(lambda: all(fed.fed(lambda b, p=p: p.pid in b.execs) for p in shells), "shells")
        assert fed.scanner.stats.left_to_listing >= 2
        wait_until(
            lambda: (fed.scanner.scan(), fed.scanner.stats.listings)[1] > listings, what="list"
        )
    finally:
        fed.close()


NODE_AGENT = textwrap.dedent("""
    const { spawn } = require('child_process');
    if (process.env.FAKE_RELAUNCH && !process.env.FAKE_CHILD) {
      spawn(process.execPath, [__filename], { env: { ...process.env, FAKE_CHILD: '1' },
                                             stdio: 'ignore' });
    }
    if (process.env.FAKE_NATIVE) {
      spawn(process.env.FAKE_NATIVE, ['600'], { stdio: 'ignore' });
    }
    setInterval(() => {}, 1 << 30);
""")


def test_events_find_the_same_agents_as_the_scan(fed: Fed, agents: Agents) -> None:
    """Started after the events scanner's listing: a node-hosted Claude Code, gemini's
    relaunched child, codex's wrapper and native child, a shell-hosted Claude Code and a
    native binary under it. The events scanner then sees what a scan from scratch sees."""
    node = node_binary()

    def package(relative: str) -> Path:
        script = agents.root / "node_modules" / relative
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(NODE_AGENT)
        return script

    native = agents.root / "vendor" / "@openai" / "codex" / "vendor" / "codex"
    native.parent.mkdir(parents=True)
    shutil.copy(SLEEP, native)
    agents.prepare("amp")
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    wrapper = agents.root / "claude"
    wrapper.write_text(f"{agents.root / 'bin' / 'amp'} 600 & read x < {fifo}\n")
    env = dict(os.environ)
    procs = [
        agents.spawn([node, str(package("@anthropic-ai/claude-code/cli.js"))]),
        agents.spawn(
            [node, str(package("@google/gemini-cli/dist/index.js"))],
            env={**env, "FAKE_RELAUNCH": "1"},
        ),
        agents.spawn(
            [node, str(package("@openai/codex/bin/codex.js"))],
            env={**env, "FAKE_NATIVE": str(native)},
        ),
        agents.spawn(["sh", str(wrapper)]),
    ]
    expected_count = 5  # claude, gemini, codex, claude (sh), amp under it

    def same() -> bool:
        events = sorted((a.platform, a.pid, a.parent_pid) for a in fed.scan_for(procs))
        scan = sorted((a.platform, a.pid, a.parent_pid) for a in mine(Scanner().scan(), procs))
        return len(events) == expected_count and events == scan

    wait_until(same, what="the same agents from events and from a scan")
    assert fed.scanner.stats.listings == 1
    # The wrapper is left waiting on its fifo: the teardown stops its process group while
    # its leader runs, with the amp it started (a wrapper that had exited would leave it).


def test_back_to_scanning_every_pass_lists_proc_every_pass(fed: Fed, agents: Agents) -> None:
    fed.scanner.follow_scan()
    proc = agents.binary("amp")
    assert not fed.scanner.feed(EventBatch(execs={proc.pid: None}))  # ignored now
    found = wait_until(lambda: mine(fed.scanner.scan(), [proc]), what="amp by the scan")
    assert [a.pid for a in found] == [proc.pid]
    listings = fed.scanner.stats.listings
    fed.scanner.scan()
    assert fed.scanner.stats.listings == listings + 1
