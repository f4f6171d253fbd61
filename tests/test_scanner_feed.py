"""The scanner fed by process events, with the batches written by the test: each batch
says what real processes, started by the test, did (an exec, a fork, a rename, an exit),
as the kernel's process connector would, but at the moment the test chooses. No root
needed, and no event of another process on the machine reaches the scanner: after the
first listing it looks only at what it is fed."""

from __future__ import annotations

import os
import subprocess
import threading
from pathlib import Path

import psutil
import pytest
from conftest import SLEEP, Agents, node_binary, wait_until

from quintd import scanner as scanner_module
from quintd.platforms import BUILTIN_PLATFORMS, Platform
from quintd.proc_events import EventBatch
from quintd.scanner import Scanner, ScannerSettings
from quintd.signing.examine import Target
from quintd.signing.info import SigningInfo
from quintd.signing.resolver import SigningResolver

NEVER = 3600.0  # no scheduled listing during a test
LOOKS_BUDGET_S = scanner_module.LOOKS_BUDGET_S


@pytest.fixture(autouse=True)
def unhurried(monkeypatch: pytest.MonkeyPatch) -> None:
    """A loaded machine may stop a test for longer than the 20 ms a feed or a pass gives
    its looks: here they are never cut short, but where a test says so."""
    monkeypatch.setattr(scanner_module, "LOOKS_BUDGET_S", 60.0)


NO_LOOKS = {"looks_per_s": 1e-9, "looks_burst": 0}  # every look at once is put off


def fed_scanner(**tuning: float) -> Scanner:
    """Fed by events; the first pass has listed /proc (what runs now is known)."""
    scanner = Scanner()
    scanner.follow_events(NEVER, **tuning)  # type: ignore[arg-type]
    scanner.scan()
    return scanner


def running(proc: subprocess.Popen[bytes], name: str) -> None:
    """Wait until the process runs the program ``name`` (its exec is done)."""
    wait_until(lambda: psutil.Process(proc.pid).name() == name, what=f"{name} running")


def new_to(scanner: Scanner, *procs: subprocess.Popen[bytes] | psutil.Process) -> None:
    """Feed what the kernel says before these processes start: the exit of whatever had
    their pids before. (Other tests start processes all the time, and pids wrap at
    pid_max: a pid the first listing saw may be a new process's by now.)"""
    stale = {p.pid for p in procs if scanner.knows(p.pid)}
    if stale:
        scanner.feed(EventBatch(exits=stale))


def found(scanner: Scanner, *procs: subprocess.Popen[bytes]) -> set[int]:
    wanted = {p.pid for p in procs}
    return {a.pid for a in scanner.scan() if a.pid in wanted}


def test_what_a_batch_asks_for(agents: Agents) -> None:
    """feed() is True when a pass should come soon: an agent found, put off or exited;
    not for the exit of a process it does not know, nor for a known agent renaming
    itself."""
    scanner = fed_scanner()
    stranger = agents.binary("not-an-agent")
    running(stranger, "not-an-agent")
    new_to(scanner, stranger)
    agents.stop(stranger)
    assert scanner.feed(EventBatch(exits={stranger.pid})) is False
    codex = agents.binary("codex")
    running(codex, "codex")
    new_to(scanner, codex)
    assert scanner.feed(EventBatch(execs={codex.pid: None})) is True  # looked at once
    assert scanner.knows(codex.pid)
    assert scanner.feed(EventBatch(comms={codex.pid: "claude"})) is False
    assert found(scanner, codex) == {codex.pid}
    agents.stop(codex)
    assert scanner.feed(EventBatch(exits={codex.pid})) is True
    assert found(scanner, codex) == set()


def test_looks_beyond_the_limit_are_counted_and_come_first_in_the_next_pass(
    agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An agent's build forks thousands of processes (queued for the next pass); an
    agent's exec then waits for its look behind the limit: it is looked at first."""
    monkeypatch.setattr(scanner_module, "LOOKS_BUDGET_S", LOOKS_BUDGET_S)  # the real one
    codex = agents.binary("codex")
    running(codex, "codex")
    scanner = fed_scanner(queue_max=1_000_000, **NO_LOOKS)
    assert codex.pid in found(scanner, codex)
    # Forks of the agent, exited since (pids that no process has: beyond pid_max).
    forks = {pid: codex.pid for pid in range(5_000_000, 5_200_000)}
    assert scanner.feed(EventBatch(forks=forks)) is False
    claudes = [agents.binary("claude"), agents.binary("claude")]
    for proc in claudes:
        running(proc, "claude")
    new_to(scanner, *claudes)
    assert scanner.feed(EventBatch(execs={p.pid: None for p in claudes})) is True
    assert (scanner.stats.put_off, scanner.stats.looked_at_once) == (2, 0)
    assert not scanner.knows(claudes[0].pid)
    scanner.scan()  # one pass drains the queues for a few milliseconds: the agents first
    assert scanner.knows(claudes[0].pid)


def test_a_tool_of_an_agent_that_execs_is_looked_at_again(agents: Agents) -> None:
    """A known process that execs a program that cannot be an agent (sleep): under an
    agent it is the agent's tool (looked at again in the next pass: its CPU counts),
    elsewhere it is skipped."""
    fifo, other_fifo = agents.root / "go", agents.root / "go-other"
    os.mkfifo(fifo)
    os.mkfifo(other_fifo)
    script = agents.root / "claude"  # a shell-hosted agent that runs one tool
    script.write_text(f"sh -c 'read x < {fifo}; exec {SLEEP} 600' & wait\n")
    agent = agents.spawn(["sh", str(script)])
    other = agents.spawn(["sh", "-c", f"read x < {other_fifo}; exec {SLEEP} 600"])
    [tool] = wait_until(lambda: psutil.Process(agent.pid).children(), what="the tool")
    scanner = fed_scanner()
    assert found(scanner, agent) == {agent.pid}
    assert scanner.knows(tool.pid) and scanner.knows(other.pid)
    for path in (fifo, other_fifo):
        Path(path).write_text("x\n")
    wait_until(lambda: tool.name() == "sleep", what="the tool's exec")
    running(other, "sleep")
    skipped = scanner.stats.execs_skipped
    assert scanner.feed(EventBatch(execs={tool.pid: None, other.pid: None})) is False
    assert scanner.stats.execs_skipped == skipped + 1  # the other one
    scanner.scan()
    assert scanner.knows(tool.pid)
    assert not scanner.knows(other.pid)


def test_a_process_that_renames_itself_like_an_agent_is_looked_at(agents: Agents) -> None:
    """node setting its process title to an agent's name: looked at again, known or not;
    a rename read after the process is gone leaves nothing known of it."""
    code = (
        "process.stdin.once('data', () => { process.title = 'claude' });"
        "setInterval(() => {}, 1 << 30)"
    )
    node = node_binary()

    def renaming() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([node, "-e", code], stdin=subprocess.PIPE, start_new_session=True)
        agents.procs.append(proc)
        return proc

    known = renaming()
    running(known, "node")
    gone = agents.binary("not-an-agent")
    running(gone, "not-an-agent")
    scanner = fed_scanner()
    assert scanner.knows(known.pid) and found(scanner, known) == set()
    unknown = renaming()  # after the listing: not known
    running(unknown, "node")
    new_to(scanner, unknown)
    for proc in (known, unknown):
        assert proc.stdin is not None
        proc.stdin.write(b"x")
        proc.stdin.flush()
        running(proc, "claude")
    renames = {known.pid: "claude", unknown.pid: "claude"}
    assert scanner.feed(EventBatch(comms=renames)) is True
    assert found(scanner, known, unknown) == {known.pid, unknown.pid}
    assert scanner.knows(gone.pid)
    agents.stop(gone)
    assert scanner.feed(EventBatch(comms={gone.pid: "claude"})) is False
    assert not scanner.knows(gone.pid)


def test_events_followed_again_start_with_a_listing_and_empty_queues(agents: Agents) -> None:
    """Back to scanning (the events stopped), then events again: the first pass lists
    /proc (what ran meanwhile), and nothing put off before is still queued."""
    scanner = fed_scanner(**NO_LOOKS)
    claude = agents.binary("claude")
    running(claude, "claude")
    new_to(scanner, claude)
    assert scanner.feed(EventBatch(execs={claude.pid: None})) is True  # put off
    scanner.follow_scan()
    assert found(scanner, claude) == {claude.pid}  # by the listing
    shell = agents.spawn(["sh", "-c", f"{SLEEP} 600; true"])
    running(shell, "sh")
    new_to(scanner, shell)
    scanner.follow_events(NEVER, queue_max=1, **NO_LOOKS)  # type: ignore[arg-type]
    scanner.feed(EventBatch(execs={shell.pid: None}))  # queued for the next pass
    assert scanner.stats.left_to_listing == 0  # the queue (of one) was empty
    listings = scanner.stats.listings
    scanner.scan()
    assert scanner.stats.listings == listings + 1
    assert scanner.knows(shell.pid)


@pytest.mark.parametrize("gone_before_the_pass", [False, True])
def test_a_queued_process_is_looked_at_if_it_still_runs(
    agents: Agents, gone_before_the_pass: bool
) -> None:
    scanner = fed_scanner()
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    (agents.root / "claude").write_text(f"read x < {fifo}\n")
    shell = agents.spawn(["sh", str(agents.root / "claude")])
    running(shell, "sh")
    new_to(scanner, shell)
    assert scanner.feed(EventBatch(execs={shell.pid: None})) is False  # a shell: later
    assert not scanner.knows(shell.pid)
    if gone_before_the_pass:
        agents.stop(shell)
        assert found(scanner, shell) == set()
    else:
        assert found(scanner, shell) == {shell.pid}
        fifo.write_text("x\n")


def test_an_agent_that_exits_before_its_identity_is_announced_without_it(
    agents: Agents,
) -> None:
    """Its identity is still being examined when it exits: there is nothing left to wait
    for, so the pass that reports it (once) reports it settled, without an identity."""
    gate = threading.Event()
    agents.prepare("codex")
    mine = str(agents.root / "bin" / "codex")

    def backend(target: Target) -> SigningInfo:
        if target.path == mine:
            gate.wait(30)  # a large binary's hash: longer than the agent lives
        return SigningInfo(signing_id=f"id:{Path(target.path).name}", source="test")

    resolver = SigningResolver(backend)
    try:
        settings = ScannerSettings(signing_budget=0.01, signing_wait=3600)
        scanner = Scanner(settings, resolver)
        scanner.follow_events(NEVER)
        scanner.scan()
        codex = agents.binary("codex")
        running(codex, "codex")
        new_to(scanner, codex)
        assert scanner.feed(EventBatch(execs={codex.pid: None})) is True
        agents.stop(codex)
        assert scanner.feed(EventBatch(exits={codex.pid})) is True
        [agent] = [a for a in scanner.scan() if a.pid == codex.pid]
        assert (agent.signing_id, agent.signing_settled) == (None, True)
    finally:
        gate.set()
        resolver.close()


def test_a_new_signature_table_is_applied_at_the_next_pass(agents: Agents) -> None:
    """Fed by events, a reconfigure with a new table lists /proc at the next pass (the
    processes already running are looked at again, with the new table), and forgets the
    queue (that listing looks at them)."""
    proc = agents.binary("acme-agent")
    running(proc, "acme-agent")
    scanner = fed_scanner(queue_max=1)
    assert scanner.knows(proc.pid) and found(scanner, proc) == set()
    shells = [agents.spawn(["sh", "-c", f"{SLEEP} 600; true"]) for _ in range(2)]
    for shell in shells:
        running(shell, "sh")
    new_to(scanner, *shells)
    scanner.feed(EventBatch(execs={shells[0].pid: None}))  # queued for the next pass
    acme = Platform(id="acme-agent", names=("acme-agent",))
    scanner.reconfigure(ScannerSettings(platforms=(acme, *BUILTIN_PLATFORMS)))
    scanner.feed(EventBatch(execs={shells[1].pid: None}))
    assert scanner.stats.left_to_listing == 0  # the queue (of one) was empty again
    assert found(scanner, proc) == {proc.pid}


def test_the_forks_of_an_agent_found_from_events_are_followed(agents: Agents) -> None:
    """A shell-hosted agent, found by the pass after its exec: what it forks is looked at
    in the next pass (its tools' CPU is its work); a fork elsewhere is not."""
    scanner = fed_scanner()
    fifo = agents.root / "go"
    os.mkfifo(fifo)
    (agents.root / "claude").write_text(f"read x < {fifo}; {SLEEP} 600\n")
    agent = agents.spawn(["sh", str(agents.root / "claude")])
    stranger = agents.spawn(["sh", "-c", f"{SLEEP} 600; true"])
    running(agent, "sh")
    new_to(scanner, agent, stranger)
    assert scanner.feed(EventBatch(execs={agent.pid: None})) is False  # a shell: later
    assert found(scanner, agent) == {agent.pid}
    fifo.write_text("x\n")
    [tool] = wait_until(lambda: psutil.Process(agent.pid).children(), what="the tool")
    [other] = wait_until(lambda: psutil.Process(stranger.pid).children(), what="a fork")
    new_to(scanner, tool, other)
    scanner.feed(EventBatch(forks={tool.pid: agent.pid, other.pid: stranger.pid}))
    scanner.scan()
    assert scanner.knows(tool.pid)
    assert not scanner.knows(other.pid)


def test_a_listing_after_lost_events_queues_what_it_finds(agents: Agents) -> None:
    """After the first, a listing is a safety net: the processes it finds wait in the
    queue for their look like the rest (beyond the queue's bound: counted, and /proc is
    listed again soon, not at the next scheduled listing)."""
    scanner = fed_scanner(queue_max=1)
    unseen = [agents.binary("not-an-agent") for _ in range(3)]
    for proc in unseen:
        running(proc, "not-an-agent")
    assert scanner.feed(EventBatch(lost=True)) is True
    wait_until(lambda: (scanner.scan(), scanner.stats.listings)[1] == 2, what="a listing")
    assert scanner.stats.left_to_listing >= 2  # (the queue holds one)
    wait_until(lambda: (scanner.scan(), scanner.stats.listings)[1] == 3, what="a relisting")


def test_a_listing_puts_the_children_of_a_new_agent_in_its_tree(agents: Agents) -> None:
    """A shell with a child becomes an agent by its exec; once a listing has rebuilt the
    agents' trees, the child is the agent's: its exec into a tool is followed."""
    agents.prepare("claude")
    go, go_child = agents.root / "go", agents.root / "go-child"
    os.mkfifo(go)
    os.mkfifo(go_child)
    child = f"sh -c 'read y < {go_child}; exec {SLEEP} 600'"
    outer = agents.spawn(
        ["sh", "-c", f"{child} & read x < {go}; exec {agents.root / 'bin' / 'claude'} 600"]
    )
    [inner] = wait_until(lambda: psutil.Process(outer.pid).children(), what="the child")
    scanner = fed_scanner()
    assert scanner.knows(inner.pid)
    go.write_text("x\n")
    running(outer, "claude")
    assert scanner.feed(EventBatch(execs={outer.pid: None})) is True
    assert scanner.feed(EventBatch(lost=True)) is True
    wait_until(lambda: (scanner.scan(), scanner.stats.listings)[1] == 2, what="a listing")
    go_child.write_text("x\n")
    wait_until(lambda: inner.name() == "sleep", what="the child's exec")
    scanner.feed(EventBatch(execs={inner.pid: None}))
    scanner.scan()
    assert scanner.knows(inner.pid)  # looked at again: the agent's tool


def test_an_agent_found_from_its_exec_gets_its_identity_in_the_next_pass(
    agents: Agents,
) -> None:
    """The pass after the look waits for its identity (within its budget) as it does for
    an agent a listing found."""

    def backend(target: Target) -> SigningInfo:
        return SigningInfo(signing_id=f"id:{Path(target.path).name}", source="test")

    resolver = SigningResolver(backend)
    try:
        scanner = Scanner(ScannerSettings(signing_budget=30, signing_wait=3600), resolver)
        scanner.follow_events(NEVER)
        scanner.scan()
        codex = agents.binary("codex")
        running(codex, "codex")
        new_to(scanner, codex)
        assert scanner.feed(EventBatch(execs={codex.pid: None})) is True
        [agent] = [a for a in scanner.scan() if a.pid == codex.pid]
        assert (agent.signing_id, agent.signing_settled) == ("id:codex", True)
    finally:
        resolver.close()


def test_lost_events_make_one_listing_not_one_a_pass(
    agents: Agents, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(scanner_module, "RELIST_GAP_S", 0.0)  # no wait between listings
    scanner = fed_scanner()
    assert scanner.feed(EventBatch(lost=True)) is True
    scanner.scan()
    assert scanner.stats.listings == 2
    scanner.scan()
    scanner.scan()
    assert scanner.stats.listings == 2  # the loss was made good by the one listing
