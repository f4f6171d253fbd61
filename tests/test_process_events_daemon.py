"""The daemon learns of new processes from the kernel (the netlink process connector, as
root): with a scan interval of 300 s and /proc listed every 300 s, an agent reported
within the test's deadline can only have come from its exec event."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from conftest import Agents, DaemonProcess, clean_env, wait_until, write_config
from ingest_server import IngestServer

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="process events need root")

NEVER = 300.0


def start(
    short_tmp: Path,
    server: IngestServer,
    daemons: Callable[..., DaemonProcess],
    events: bool = True,
) -> DaemonProcess:
    config = write_config(
        short_tmp,
        endpoint=server.url,
        interval=NEVER,
        scan=f"process_events = {str(events).lower()}\nfull_listing_interval = {NEVER}",
    )
    daemon = daemons(config, clean_env()).start()
    daemon.wait_ready()
    return daemon


def story(server: IngestServer, name: str) -> list[str]:
    """The states sent for the agent run in the directory ``name`` (its session's name:
    other agents may run on the machine meanwhile)."""
    return [r.event["state"] for r in server.events if r.event.get("session_name") == name]


def run_in(short_tmp: Path, agents: Agents, name: str, *args: str) -> subprocess.Popen[bytes]:
    project = short_tmp / name
    project.mkdir()
    return agents.binary("amp", *args, cwd=project)


def test_an_agent_that_lives_50_ms_is_reported_started_and_ended(
    short_tmp: Path, agents: Agents, daemons: Callable[..., DaemonProcess]
) -> None:
    with IngestServer() as server:
        daemon = start(short_tmp, server, daemons)
        try:
            status = daemon.status()
            assert status is not None and status["scan"]["process_events"] == "connector"
            listings = status["scan"]["listings"]
            started = time.monotonic()
            amp = run_in(short_tmp, agents, "fifty-ms", "0.05")
            amp.wait(timeout=10)
            lived = time.monotonic() - started
            server.wait_for(lambda _: story(server, "fifty-ms") == ["active", "ended"], what="both")
            first = next(
                r.event for r in server.events if r.event.get("session_name") == "fifty-ms"
            )
            assert first["platform"] == "amp" and first["signing_id"]  # complete at once
            status = daemon.status()
            assert status is not None
            assert status["scan"]["listings"] == listings  # not found by listing /proc
            assert status["scan"]["looked_at_once"] >= 1
            print(f"an agent of {lived * 1000:.0f} ms: {story(server, 'fifty-ms')}")
        finally:
            daemon.terminate()


def test_processes_that_cannot_be_agents_cost_no_look(
    short_tmp: Path, agents: Agents, daemons: Callable[..., DaemonProcess]
) -> None:
    """A storm of short non-agent execs (a shell running /bin/true 3,000 times: fork, exec
    and exit, 9,000 events) is read in batches; an exec is judged on its file alone (one
    gone by the time its batch is read costs nothing at all), never looked at, and an
    agent started in the middle of it is still seen."""
    with IngestServer() as server:
        daemon = start(short_tmp, server, daemons)
        before = daemon.status()
        assert before is not None
        storm = subprocess.Popen(
            ["sh", "-c", "i=0; while [ $i -lt 3000 ]; do /bin/true; i=$((i + 1)); done"]
        )
        try:
            run_in(short_tmp, agents, "in-the-storm")
            server.wait_for(lambda _: story(server, "in-the-storm") == ["active"], what="agent")
            assert storm.wait(timeout=120) == 0
            after = wait_until(
                lambda: (
                    (s := daemon.status())
                    and s["scan"]["events_read"] - before["scan"]["events_read"] >= 9000
                    and s
                ),
                what="the storm's events read",
            )
        finally:
            storm.kill()
            storm.wait()
            daemon.terminate()
        read = after["scan"]["events_read"] - before["scan"]["events_read"]
        skipped = after["scan"]["execs_skipped"] - before["scan"]["execs_skipped"]
        looked = after["scan"]["looked_at_once"] - before["scan"]["looked_at_once"]
        print(
            f"storm: {read} events read, {skipped} execs judged and skipped, {looked} looked at, "
            f"{after['scan']['lost_events']} lost reads, {after['scan']['listings']} listings"
        )
        # The agent, and whatever else the machine ran meanwhile: not the storm.
        assert looked < 100


def test_without_process_events_the_scan_lists_proc(
    short_tmp: Path, daemons: Callable[..., DaemonProcess]
) -> None:
    with IngestServer() as server:
        daemon = start(short_tmp, server, daemons, events=False)
        try:
            status = daemon.status()
            assert status is not None
            assert status["scan"]["process_events"] == "scan"
            assert status["settings"]["process_events"] is False
        finally:
            daemon.terminate()
