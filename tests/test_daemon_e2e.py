"""`quintd run` end to end: a fake agent process appears and goes, a real loopback
ingest server receives `active` then `ended` for the same UUID v5 session."""

from __future__ import annotations

import os
import signal
import sqlite3
import stat
import time
import uuid
from pathlib import Path

from conftest import TOKEN, Agents, DaemonProcess, clean_env, wait_until, write_config
from ingest_server import IngestServer, Received


def _states_for(events: list[Received], session_id: str) -> list[str]:
    return [r.event["state"] for r in events if r.event["session_id"] == session_id]


def session_of(daemon: DaemonProcess, pid: int) -> str:
    """The session id the daemon gave the agent process `pid`."""

    def probe() -> str | None:
        status = daemon.status() or {"sessions": []}
        return next((s["session_id"] for s in status["sessions"] if s["pid"] == pid), None)

    return wait_until(probe, what=f"a session for pid {pid}")


def test_agent_start_and_exit_reach_the_server(short_tmp: Path, agents: Agents, daemons) -> None:
    project = short_tmp / "shop-api"
    project.mkdir()
    with IngestServer(token=TOKEN) as server:
        config = write_config(short_tmp, endpoint=server.url)
        daemon: DaemonProcess = daemons(config).start()
        daemon.wait_ready()

        claude = agents.binary("claude", cwd=project)
        session_id = session_of(daemon, claude.pid)
        events = server.wait_for(
            lambda evs: bool(_states_for(evs, session_id)), what="claude-code active"
        )
        first = next(r for r in events if r.event["session_id"] == session_id)
        assert first.event["platform"] == "claude-code"
        assert first.event["state"] == "active"
        assert uuid.UUID(session_id).version == 5
        assert first.event["session_name"] == "shop-api"
        assert first.event["parent_id"] is None
        assert first.idempotency_key

        status = daemon.status()
        assert status is not None
        mine = [s for s in status["sessions"] if s["session_id"] == session_id]
        assert mine == [
            {
                "session_id": session_id,
                "platform": "claude-code",
                "pid": claude.pid,
                "state": "active",
                "session_name": "shop-api",
                "model": None,
                "parent_id": None,
                "started_at": mine[0]["started_at"],
                "in_state_s": mine[0]["in_state_s"],
                "signing_id": first.event.get("signing_id"),
            }
        ]
        assert 0 <= mine[0]["in_state_s"] < 60
        assert status["token_set"] is True
        assert status["endpoint"] == server.url
        assert status["config_file"] == str(config)
        assert TOKEN not in daemon.cli("status", "--json").stdout
        assert TOKEN not in daemon.cli("status").stdout

        agents.stop(claude)
        events = server.wait_for(
            lambda evs: "ended" in _states_for(evs, session_id), what="ended for the claude session"
        )
        assert _states_for(events, session_id) == ["active", "ended"]
        keys = [r.idempotency_key for r in events if r.event["session_id"] == session_id]
        assert len(set(keys)) == 2

        # The queue drains once the server has said 2xx.
        wait_until(
            lambda: (s := daemon.status()) and s["queue"]["depth"] == 0, what="queue to drain"
        )
        assert daemon.terminate(signal.SIGTERM) == 0
        assert server.violations == []
    assert TOKEN not in daemon.log


def test_second_instance_refuses_and_sigint_exits_zero(short_tmp: Path, daemons) -> None:
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9", token=None)
    first = daemons(config).start()
    status = first.wait_ready()
    assert status["token_set"] is False
    assert "waits for a token" in first.cli("status").stdout

    second = daemons(config).start()
    assert second.proc is not None
    assert second.proc.wait(timeout=30) == 1
    assert "already running" in second.log
    assert f"pid {status['pid']}" in second.log
    # The first one is unharmed.
    assert first.status() is not None
    assert first.terminate(signal.SIGINT) == 0
    assert not (short_tmp / "run" / "quintd.sock").exists()


def test_files_are_owner_only(short_tmp: Path, daemons) -> None:
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9")
    daemon = daemons(config).start()
    daemon.wait_ready()
    sock = short_tmp / "run" / "quintd.sock"
    assert stat.S_ISSOCK(sock.stat().st_mode)
    assert stat.S_IMODE(sock.stat().st_mode) == 0o600
    for path in (short_tmp / "state", short_tmp / "run"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o700
    for path in (short_tmp / "state").iterdir():
        assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
    assert daemon.terminate() == 0


def test_no_token_still_detects_and_queues(short_tmp: Path, agents: Agents, daemons) -> None:
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9", token=None)
    daemon = daemons(config).start()
    daemon.wait_ready()
    codex = agents.binary("codex")
    status = wait_until(
        lambda: (s := daemon.status()) and any(x["pid"] == codex.pid for x in s["sessions"]) and s,
        what="codex session in status",
    )
    assert status["queue"]["depth"] >= 1
    assert status["delivery"]["waiting_for_token"] is True
    assert daemon.terminate() == 0
    db = sqlite3.connect(short_tmp / "state" / "quintd.db")
    states = [row[0] for row in db.execute("SELECT state FROM events ORDER BY seq")]
    assert "active" in states


def test_restart_keeps_live_sessions_and_ends_dead_ones(
    short_tmp: Path, agents: Agents, daemons
) -> None:
    with IngestServer(token=TOKEN) as server:
        config = write_config(short_tmp, endpoint=server.url)
        survivor = agents.binary("claude")
        victim = agents.binary("gemini")
        first = daemons(config).start()
        first.wait_ready()
        ids = {
            "claude-code": session_of(first, survivor.pid),
            "gemini-cli": session_of(first, victim.pid),
        }
        server.wait_for(
            lambda evs: all(_states_for(evs, sid) for sid in ids.values()), what="two actives"
        )
        first.kill()  # SIGKILL: no clean shutdown at all

        agents.stop(victim)
        second = daemons(config).start()
        second.wait_ready()
        events = server.wait_for(
            lambda evs: "ended" in _states_for(evs, ids["gemini-cli"]), what="victim ended"
        )
        status = second.status()
        assert status is not None
        mine = [s for s in status["sessions"] if s["session_id"] in ids.values()]
        assert [(s["session_id"], s["pid"]) for s in mine] == [(ids["claude-code"], survivor.pid)]
        assert _states_for(events, ids["claude-code"]) == ["active"]  # not announced again
        assert _states_for(events, ids["gemini-cli"]) == ["active", "ended"]
        assert second.terminate() == 0
        assert server.violations == []


def test_daemon_survives_sighup(short_tmp: Path, daemons) -> None:
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9", token=None)
    daemon = daemons(config).start()
    daemon.wait_ready()
    assert daemon.proc is not None
    os.kill(daemon.proc.pid, signal.SIGHUP)
    # The reload really ran (and SIGHUP did not kill it): counted in status.
    wait_until(lambda: (s := daemon.status()) and s["reloads"] == 1, what="reload counted")
    assert daemon.terminate() == 0


def test_config_error_at_start_exits_78(short_tmp: Path) -> None:
    from conftest import run_cli

    config = short_tmp / "bad.toml"
    config.write_text('[scan]\ninterval = "fast"\n')
    result = run_cli("run", "--config", str(config), env=clean_env())
    assert result.returncode == 78
    assert "scan.interval" in result.stderr and "line 2" in result.stderr


def test_non_utf8_working_directory_does_not_stall_the_pipeline(
    short_tmp: Path, agents: Agents, daemons
) -> None:
    weird = Path(os.fsdecode(bytes(short_tmp) + b"/proj\xff"))
    weird.mkdir()
    normal = short_tmp / "normal"
    normal.mkdir()
    with IngestServer(token=TOKEN) as server:
        daemon = daemons(write_config(short_tmp, endpoint=server.url)).start()
        daemon.wait_ready()
        odd = agents.binary("claude", cwd=weird)
        fine = agents.binary("codex", cwd=normal)
        ids = [session_of(daemon, odd.pid), session_of(daemon, fine.pid)]
        got = server.wait_for(lambda evs: all(_states_for(evs, i) for i in ids), what="both")
        names = {r.event["session_id"]: r.event.get("session_name") for r in got}
        assert names[ids[0]] == "proj\ufffd"
        assert names[ids[1]] == "normal"
        assert daemon.terminate() == 0
        assert server.violations == []


def test_second_daemon_on_same_runtime_dir_refuses(short_tmp: Path, daemons) -> None:
    first_cfg = write_config(short_tmp, endpoint="http://127.0.0.1:9", token=None)
    other = short_tmp / "other"
    other.mkdir()
    second_cfg = other / "config.toml"
    # Its own state dir, but the first one's runtime dir (and so its socket).
    second_cfg.write_text(
        first_cfg.read_text().replace(
            f'state_dir = "{short_tmp / "state"}"', f'state_dir = "{other / "state"}"'
        )
    )
    first = daemons(first_cfg).start()
    first.wait_ready()
    second = daemons(second_cfg).start()
    assert second.proc is not None
    assert second.proc.wait(timeout=30) == 1
    assert "another quintd answers on" in second.log
    assert first.status() is not None  # its socket is still there
    assert first.terminate() == 0


def test_state_dir_that_is_a_file_exits_78(short_tmp: Path) -> None:
    from conftest import run_cli

    blocker = short_tmp / "file"
    blocker.write_text("")
    config = short_tmp / "c.toml"
    config.write_text(f'[paths]\nstate_dir = "{blocker}"\nruntime_dir = "{short_tmp}"\n')
    for command in (["config", "check"], ["run"]):
        result = run_cli(*command, "--config", str(config), env=clean_env())
        assert result.returncode == 78, result
        assert "paths.state_dir" in result.stderr and "not a directory" in result.stderr


def test_corrupt_database_is_set_aside_and_the_daemon_runs(
    short_tmp: Path, agents: Agents, daemons
) -> None:
    state = short_tmp / "state"
    state.mkdir(mode=0o700)
    (state / "quintd.db").write_bytes(b"garbage, not SQLite" * 64)
    with IngestServer(token=TOKEN) as server:
        daemon = daemons(write_config(short_tmp, endpoint=server.url)).start()
        status = daemon.wait_ready()
        assert status["queue"]["lost_databases"] == 1
        assert "moved to" in status["queue"]["last_loss"]
        assert "lost:        1 database(s)" in daemon.cli("status").stdout
        assert [p.name for p in state.iterdir() if ".corrupt-" in p.name]
        claude = agents.binary("claude")
        sid = session_of(daemon, claude.pid)
        server.wait_for(lambda evs: bool(_states_for(evs, sid)), what="delivery works")
        assert daemon.terminate() == 0


def test_dead_letters_listed_and_requeued_through_the_daemon(
    short_tmp: Path, agents: Agents, daemons
) -> None:
    import json

    refusing = {"on": True}
    with IngestServer(
        token=TOKEN, reject=lambda e: "bad_request: no" if refusing["on"] else None
    ) as server:
        daemon = daemons(write_config(short_tmp, endpoint=server.url)).start()
        daemon.wait_ready()
        claude = agents.binary("claude")
        sid = session_of(daemon, claude.pid)

        def mine() -> list[dict]:
            """This test's agent's dead letters (other agents may run on this machine)."""
            listing = daemon.cli("queue", "list", "--json")
            assert listing.returncode == 0
            return [d for d in json.loads(listing.stdout) if d["session_id"] == sid]

        [letter] = wait_until(mine, what="a dead letter")
        assert (letter["session_id"], letter["status"], letter["state"]) == (sid, 400, "active")
        assert "bad_request: no" in letter["reason"]
        assert "bad_request: no" in daemon.cli("queue").stdout  # the table
        refusing["on"] = False
        requeue = daemon.cli("queue", "requeue", str(letter["seq"]))
        assert requeue.returncode == 0 and "requeued 1" in requeue.stdout
        [got] = server.wait_for(lambda evs: len(evs) == 1, what="requeued event delivered")
        assert got.idempotency_key == letter["event_id"]
        assert daemon.terminate() == 0


def test_shutdown_keeps_to_drain_timeout_with_a_request_in_flight(
    short_tmp: Path, agents: Agents, daemons
) -> None:
    """queue.drain_timeout = 2 and cloud.timeout = 30: SIGTERM while a request waits for an
    answer that does not come; the daemon exits 0 within the drain, not at the request's
    timeout. The event stays queued and goes again, under the same key, at the next start."""
    with IngestServer(token=TOKEN) as server:
        config = write_config(short_tmp, endpoint=server.url)
        text = config.read_text()
        assert "\ntimeout = 5.0\n" in text and "\ndrain_timeout = 3.0\n" in text
        text = text.replace("\ntimeout = 5.0\n", "\ntimeout = 30.0\n")
        config.write_text(text.replace("\ndrain_timeout = 3.0\n", "\ndrain_timeout = 2.0\n"))
        server.hold()  # every request waits for its answer
        try:
            daemon = daemons(config).start()
            daemon.wait_ready()
            amp = agents.binary("amp")
            session_id = session_of(daemon, amp.pid)
            server.wait_held(1)
            [held] = server.events
            assert held.event["session_id"] == session_id
            assert daemon.proc is not None
            started = time.monotonic()
            daemon.proc.send_signal(signal.SIGTERM)
            code = daemon.proc.wait(timeout=60)
            took = time.monotonic() - started
        finally:
            server.release()
        assert code == 0, daemon.log
        assert took < 2.0 + 3.0, f"exited {took:.1f} s after SIGTERM"  # the drain, a margin
        again = daemons(config).start()
        again.wait_ready()
        events = server.wait_for(lambda evs: len(evs) >= 2, what="the event sent again")
        assert (events[1].event, events[1].idempotency_key) == (held.event, held.idempotency_key)
