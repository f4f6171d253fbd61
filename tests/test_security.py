"""A local user against the root daemon: each finding of the hostile-user review,
reproduced (as an unprivileged user where it matters) and shown fixed.

The tests that need a second user create one (`quintd-test`) when they run as root, and
skip, saying why, otherwise.
"""

from __future__ import annotations

import json
import os
import pwd
import signal
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import pytest
from claude_fixture import FIRST
from claude_fixture import FIXTURES as CLAUDE
from conftest import (
    TOKEN,
    Agents,
    clean_env,
    fake_agent,
    run_cli,
    wait_until,
    write_config,
)
from ingest_server import IngestServer

from quintd.model import LifecycleEvent, clean_text
from quintd.procfs import start_ticks as linux_start_ticks
from quintd.sources.files import Refused, open_under, parse_object
from quintd.store import Store

TEST_USER = "quintd-test"


@pytest.fixture(scope="session")
def other_user() -> tuple[int, int]:
    """An unprivileged user, created for the tests when they run as root."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to create an unprivileged user and act as it")
    try:
        entry = pwd.getpwnam(TEST_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", TEST_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(TEST_USER)
    return entry.pw_uid, entry.pw_gid


def _owned_dir(path: Path, uid: int, gid: int, mode: int = 0o755) -> Path:
    os.chmod(path.parent, 0o711)  # the other user may pass through the test's temp dir
    path.mkdir(parents=True, exist_ok=True)
    os.chown(path, uid, gid)
    os.chmod(path, mode)
    return path


def _spawn_as(
    agents: Agents, argv: list[str], uid: int, gid: int, env: dict[str, str], cwd: Path
) -> subprocess.Popen[bytes]:
    proc = subprocess.Popen(
        argv,
        cwd=cwd,
        env=env,
        user=uid,
        group=gid,
        extra_groups=[],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    agents.procs.append(proc)
    return proc


def _claude_home(home: Path, pid: int, title: str, model: str, cwd: str) -> None:
    """What Claude Code would have written for process `pid`: the registry (naming the
    fixture's conversation) and a transcript with this title and model."""
    root = home / ".claude"
    (root / "sessions").mkdir(parents=True, exist_ok=True)
    data = json.loads((CLAUDE / "registry-snapshots" / "session-idle.json").read_text())
    data.update(pid=pid, procStart=linux_start_ticks(pid), cwd=cwd, name=None)
    (root / "sessions" / f"{pid}.json").write_text(json.dumps(data))
    project = root / "projects" / "".join(c if c.isalnum() else "-" for c in cwd)
    project.mkdir(parents=True, exist_ok=True)
    lines = [
        {"type": "custom-title", "customTitle": title, "sessionId": FIRST},
        {"type": "assistant", "message": {"model": model}, "sessionId": FIRST},
    ]
    (project / f"{FIRST}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))


# -- 1. session hijack ------------------------------------------------------------------


def test_another_user_cannot_take_over_a_conversation(
    short_tmp: Path, agents: Agents, daemons, other_user: tuple[int, int]
) -> None:
    uid, gid = other_user
    shared = _owned_dir(short_tmp / "pub", 0, 0)
    fake_agent(shared / "claude")
    os.chmod(shared / "claude", 0o755)
    victim_home = short_tmp / "victim"
    victim_home.mkdir()
    attacker_home = _owned_dir(shared / "attacker", uid, gid, 0o700)
    with IngestServer(token=TOKEN) as server:
        daemon = daemons(write_config(short_tmp, endpoint=server.url, interval=0.2)).start()
        daemon.wait_ready()
        victim = agents.spawn(
            [str(shared / "claude"), "600"], cwd=victim_home, env={"HOME": str(victim_home)}
        )
        _claude_home(victim_home, victim.pid, "Victim's work", "model-v", str(victim_home))
        # The attacker's process names the victim's conversation id, with its own title
        # and model, in files of its own; a second one points HOME at the victim's home.
        # Its directories are its own before it runs (as an agent's are: it makes them):
        # one seen owned by someone else is never read for that process.
        project = "".join(c if c.isalnum() else "-" for c in str(victim_home))
        for directory in ("sessions", f"projects/{project}"):
            (attacker_home / ".claude" / directory).mkdir(parents=True)
        for path in [attacker_home / ".claude", *(attacker_home / ".claude").rglob("*")]:
            os.chown(path, uid, gid)
        attacker = _spawn_as(
            agents,
            [str(shared / "claude"), "600"],
            uid,
            gid,
            {"HOME": str(attacker_home)},
            attacker_home,
        )
        _claude_home(attacker_home, attacker.pid, "SPOOFED BY USER", "evil-model", str(victim_home))
        for path in attacker_home.rglob("*"):
            os.chown(path, uid, gid)
        intruder = _spawn_as(
            agents,
            [str(shared / "claude"), "600"],
            uid,
            gid,
            {"HOME": str(victim_home)},
            attacker_home,
        )
        victim_id = wait_until(
            lambda: next(
                (
                    r.event["session_id"]
                    for r in server.events
                    if r.event.get("session_name") == "Victim's work"
                ),
                None,
            ),
            what="the victim's conversation",
        )
        wait_until(
            lambda: any(r.event.get("session_name") == "SPOOFED BY USER" for r in server.events),
            what="the attacker's own session",
        )
        settle = time.monotonic() + 3.0  # 15 passes at 0.2 s
        wait_until(lambda: time.monotonic() > settle, what="passes to go by", timeout=10)
        events = list(server.events)
        assert daemon.terminate() == 0
    victim_events = [r.event for r in events if r.event["session_id"] == victim_id]
    assert all(e.get("session_name") != "SPOOFED BY USER" for e in victim_events)
    assert all(e.get("model") != "evil-model" for e in victim_events)
    assert [e["state"] for e in victim_events] == ["active"] * len(victim_events)
    spoofed = {
        r.event["session_id"] for r in events if r.event.get("session_name") == "SPOOFED BY USER"
    }
    assert victim_id not in spoofed and len(spoofed) == 1
    # No flipping back and forth: each session was announced and at most updated once.
    for sid in {r.event["session_id"] for r in events}:
        assert len([r for r in events if r.event["session_id"] == sid]) <= 3
    # The intruder's HOME pointed at a directory it does not own: never read in its name.
    intruder_events = [r for r in events if r.event.get("session_name") == "Victim's work"]
    assert {r.event["session_id"] for r in intruder_events} == {victim_id}
    assert intruder.poll() is None


# -- 2. paths the daemon owns -------------------------------------------------------------


def _run_expecting_config_error(config: Path) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "quintd", "run", "--config", str(config)],
        capture_output=True,
        text=True,
        env=clean_env(),
        timeout=60,
        check=False,
    )
    assert result.returncode == 78, result.stderr
    return result


def test_a_state_dir_of_another_user_is_refused_and_its_planted_link_untouched(
    short_tmp: Path, other_user: tuple[int, int]
) -> None:
    uid, gid = other_user
    state = _owned_dir(short_tmp / "state", uid, gid, 0o700)
    precious = short_tmp / "precious"
    precious.write_text("root's data\n")
    (state / "quintd.lock").symlink_to(precious)
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9")
    result = _run_expecting_config_error(config)
    assert f"paths.state_dir: {state} belongs to uid {uid}" in result.stderr
    assert precious.read_text() == "root's data\n"


@pytest.mark.parametrize(
    ("mode", "key"),
    [(0o1777, "state_dir"), (0o770, "state_dir"), (0o720, "runtime_dir")],  # /tmp; a group's
    ids=["1777-state", "0770-state", "0720-runtime"],
)
def test_a_state_dir_others_can_write_is_refused_and_never_chmodded(
    short_tmp: Path, mode: int, key: str
) -> None:
    directory = short_tmp / ("state" if key == "state_dir" else "run")
    directory.mkdir()
    os.chmod(directory, mode)
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9")
    result = _run_expecting_config_error(config)
    assert f"paths.{key}: {directory} is writable by group or others (mode {mode:04o})" in (
        result.stderr
    )
    assert stat.S_IMODE(directory.stat().st_mode) == mode


def test_a_planted_link_in_our_own_state_dir_is_never_followed(short_tmp: Path) -> None:
    state = short_tmp / "state"
    state.mkdir(mode=0o700)
    precious = short_tmp / "precious"
    precious.write_text("keep\n")
    (state / "quintd.db").symlink_to(precious)
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9")
    result = _run_expecting_config_error(config)
    assert "quintd.db: is a symbolic link" in result.stderr
    assert precious.read_text() == "keep\n"


# -- 3. terminal and log injection --------------------------------------------------------

# Format characters too: a zero-width space, a BOM and "ASCII smuggled" in tag characters.
HOSTILE = "x\x1b]0;owned\x07\x1b[2J\u202eev\u200bil\ufeff\U000e0041\x00\nFORGED ROW " + "y" * 300


def test_hostile_titles_and_directory_names_reach_nobody_raw(
    short_tmp: Path, agents: Agents, daemons
) -> None:
    hostile_dir = short_tmp / ("proj\x1b[31m\u202e\u2060\x07\n" + "z" * 230)
    hostile_dir.mkdir()
    home = short_tmp / "home"
    home.mkdir()
    with IngestServer(token=TOKEN) as server:
        daemon = daemons(write_config(short_tmp, endpoint=server.url)).start()
        daemon.wait_ready()
        plain = agents.binary("amp", cwd=hostile_dir)  # named after its directory
        fake_agent(agents.root / "bin" / "claude")
        titled = agents.spawn(
            [str(agents.root / "bin" / "claude"), "600"], cwd=home, env={"HOME": str(home)}
        )
        _claude_home(home, titled.pid, HOSTILE, "m\x1b[0m", str(home))
        server.wait_for(
            lambda evs: (
                any(r.event.get("platform") == "amp" for r in evs)
                and any("FORGED" in (r.event.get("session_name") or "") for r in evs)
            ),
            what="both sessions, the title learned",
        )
        status_text = daemon.cli("status").stdout
        scan_text = daemon.cli("scan").stdout
        scan_json = daemon.cli("scan", "--json").stdout
        assert daemon.terminate() == 0
        log = daemon.log
        events = list(server.events)
    assert plain.pid
    for event in (r.event for r in events):
        for key in ("session_name", "model", "platform", "signing_id"):
            value = event.get(key)
            if value is not None:
                assert value == clean_text(value), (key, value)  # nothing left to clean
                assert len(value) <= 200
    names = [r.event.get("session_name") or "" for r in events]
    assert any(n.startswith("x]0;owned[2Jevil FORGED ROW") for n in names)
    for text in (status_text, scan_text, log):
        for bad in ("\x1b", "\x07", "\x00", "\u202e", "\u200b", "\ufeff", "\U000e0041", "\u2060"):
            assert bad not in text
    assert "FORGED ROW" not in "".join(line[:2] for line in status_text.splitlines())
    assert "\x1b" not in scan_json and "\u202e" not in scan_json


# -- 4. parser crash loops -----------------------------------------------------------------


def test_deep_nesting_is_refused_before_the_parser() -> None:
    assert parse_object(b"[" * 100_000 + b"]" * 100_000) is None
    assert parse_object(b'{"a": ' * 70 + b"1" + b"}" * 70) is None
    brackets_in_a_string = b'{"ok": "' + b"[" * 100 + b'"}'
    assert parse_object(brackets_in_a_string) == {"ok": "[" * 100}


def test_a_hostile_registry_and_transcript_cost_one_warning_and_keep_the_good_lines(
    short_tmp: Path, agents: Agents, daemons
) -> None:
    home = short_tmp / "home"
    project = home / "work"
    project.mkdir(parents=True)
    with IngestServer(token=TOKEN) as server:
        config = write_config(short_tmp, endpoint=server.url, interval=0.2)
        daemon = daemons(config).start()
        daemon.wait_ready()
        fake_agent(short_tmp / "claude")
        bomb_owner = agents.spawn(
            [str(short_tmp / "claude"), "600"], cwd=project, env={"HOME": str(home)}
        )
        good = agents.spawn(
            [str(short_tmp / "claude"), "600"], cwd=project, env={"HOME": str(home)}
        )
        _claude_home(home, good.pid, "Kept title", "model-k", str(project))
        transcript = next((home / ".claude" / "projects").rglob(f"{FIRST}.jsonl"))
        with open(transcript, "ab") as fh:  # a bomb line between good ones
            fh.write(b"[" * 100_000 + b"]" * 100_000 + b"\n")
            fh.write(json.dumps({"type": "ai-title", "aiTitle": "Still read"}).encode() + b"\n")
        registry = home / ".claude" / "sessions" / f"{bomb_owner.pid}.json"
        registry.write_bytes(b"[" * 100_000 + b"]" * 100_000)
        sid = wait_until(
            lambda: next(
                (
                    r.event["session_id"]
                    for r in server.events
                    if r.event.get("session_name") == "Kept title"
                ),
                None,
            ),
            what="the good conversation, title kept",
        )
        passes = daemon.status()["scan"]["passes"]  # type: ignore[index]
        wait_until(lambda: daemon.status()["scan"]["passes"] >= passes + 10, what="10 passes")  # type: ignore[index]
        status = daemon.status()
        assert status is not None
        assert status["agent_state"]["garbage_lines"] >= 2
        # A restart reads it all again: the live conversation neither ends nor reopens.
        daemon.terminate()
        again = daemons(config).start()
        again.wait_ready()
        wait_until(lambda: (s := again.status()) and s["scan"]["passes"] >= 10, what="passes")
        assert again.terminate() == 0
        events = [r.event for r in server.events if r.event["session_id"] == sid]
    log = daemon.log + again.log
    assert "Traceback" not in log and "RecursionError" not in log
    assert log.count(f"{registry.name}") <= 2  # one warning per daemon for that file
    assert [e["state"] for e in events] == ["active"]  # never ended, never `:resumed`


# -- 5. disk full ---------------------------------------------------------------------------


def _fill(store: Store) -> None:
    """Make the database full: cap its size (SQLite's max_page_count) and use up the room
    left inside its pages, as a full filesystem leaves none."""
    store._conn.execute("CREATE TABLE IF NOT EXISTS filler (x BLOB)")
    (pages,) = store._conn.execute("PRAGMA page_count").fetchone()
    store._conn.execute(f"PRAGMA max_page_count = {pages}")
    for size in (4096, 512, 64, 8, 1):
        while True:
            try:
                store._conn.execute("INSERT INTO filler VALUES (zeroblob(?))", (size,))
            except sqlite3.OperationalError as exc:
                assert "full" in str(exc)
                break


def test_a_full_disk_is_a_state_nothing_is_lost_and_it_recovers(
    short_tmp: Path, agents: Agents
) -> None:
    """The database cannot grow (SQLite's own page limit answers SQLITE_FULL, as a full
    filesystem does): new agents still become sessions and dying ones still end, in
    memory; status counts what waits, by state; one line a minute is logged, no traceback;
    when there is room again everything is stored, in order."""
    from quintd.config import load_config
    from quintd.daemon import Daemon

    config = write_config(short_tmp, endpoint="http://127.0.0.1:9", token=None)
    loaded = load_config(str(config), clean_env())
    daemon = Daemon(loaded)
    daemon.settings.paths.state_dir.mkdir(mode=0o700)
    parts = daemon.build_parts(daemon.settings)
    store, tracker = parts.store, parts.tracker
    try:
        daemon.tick()
        _fill(store)  # full from now on
        procs = [agents.binary("amp") for _ in range(12)]
        mine = {p.pid for p in procs}

        def sessions_of_mine() -> set[str]:
            return {s.session_id for s in tracker.sessions if s.pid in mine}

        wait_until(lambda: (daemon.tick(), len(sessions_of_mine()) == 12)[1], what="12 sessions")
        report = daemon.status_report()
        assert report.queue.disk_full and report.queue.waiting_by_state.get("active", 0) >= 12
        ids = sessions_of_mine()
        dead = [p for p in procs[:5]]
        dead_ids = {s.session_id for s in tracker.sessions if s.pid in {p.pid for p in dead}}
        for proc in dead:  # these die while nothing can be stored
            agents.stop(proc)
        wait_until(
            lambda: (daemon.tick(), not (dead_ids & {s.session_id for s in tracker.sessions}))[1],
            what="the dead ones ended, in memory",
        )
        assert daemon.pass_errors.count == 0  # a state, not a failure
        assert daemon.status_report().queue.waiting_by_state.get("ended", 0) >= 5
        store._conn.execute("PRAGMA max_page_count = 1073741823")  # room again
        daemon.tick()
        assert not daemon.status_report().queue.disk_full
        rows = store._conn.execute("SELECT session_id, state FROM events ORDER BY seq").fetchall()
        stories = {sid: [state for s, state in rows if s == sid] for sid in ids}
        assert all(stories[sid] == ["active", "ended"] for sid in dead_ids)
        assert all(stories[sid] == ["active"] for sid in ids - dead_ids)
    finally:
        store.close()


def test_a_full_disk_logs_one_line_a_minute_not_a_traceback_a_pass(
    short_tmp: Path, agents: Agents, daemons
) -> None:
    import logging

    from quintd.config import load_config
    from quintd.daemon import Daemon

    config = write_config(short_tmp, endpoint="http://127.0.0.1:9", token=None)
    daemon = Daemon(load_config(str(config), clean_env()))
    daemon.settings.paths.state_dir.mkdir(mode=0o700)
    store = daemon.build_parts(daemon.settings).store
    records: list[logging.LogRecord] = []
    handler = logging.Handler()
    handler.emit = records.append  # type: ignore[method-assign]
    logging.getLogger("quintd").addHandler(handler)
    try:
        daemon.tick()
        _fill(store)
        for _ in range(20):
            agents.binary("amp")
            daemon.tick()
        full = [r for r in records if "filesystem full" in r.getMessage()]
        assert len(full) == 1 and not any(r.exc_info for r in records)
    finally:
        logging.getLogger("quintd").removeHandler(handler)
        store.close()


# -- 6. the control socket ------------------------------------------------------------------


def test_a_deleted_socket_comes_back_within_a_scan(short_tmp: Path, daemons) -> None:
    daemon = daemons(write_config(short_tmp, endpoint="http://127.0.0.1:9", interval=0.2)).start()
    daemon.wait_ready()
    (short_tmp / "run" / "quintd.sock").unlink()
    wait_until(lambda: daemon.status(), what="the socket to be bound again", timeout=10)
    # Now that it answers again, a second daemon on the same runtime dir refuses to start.
    other = short_tmp / "other"
    other.mkdir()
    config = write_config(other, endpoint="http://127.0.0.1:9")
    config.write_text(config.read_text().replace(str(other / "run"), str(short_tmp / "run")))
    refused = run_cli("run", "--config", str(config))
    assert refused.returncode == 1 and "another quintd answers" in refused.stderr
    assert daemon.terminate() == 0


def test_status_never_reports_another_daemon(short_tmp: Path, daemons) -> None:
    """The old finding, step by step: A's socket is deleted and, before A binds it again
    (a long scan interval here), B takes the path. `status` for A must not show B."""
    a_dir, b_dir = short_tmp / "a", short_tmp / "b"
    a_dir.mkdir()
    b_dir.mkdir()
    a = daemons(write_config(a_dir, endpoint="http://127.0.0.1:9", interval=3600)).start()
    a.wait_ready()
    assert a.proc is not None
    # A is held still meanwhile: any pass of its (another agent's exit on the machine)
    # would bind its socket again before B takes the path.
    a.proc.send_signal(signal.SIGSTOP)
    (a_dir / "run" / "quintd.sock").unlink()
    b_config = write_config(b_dir, endpoint="http://127.0.0.1:9")
    b_config.write_text(b_config.read_text().replace(str(b_dir / "run"), str(a_dir / "run")))
    b = daemons(b_config).start()
    b.wait_ready()  # B answers on A's path now
    result = a.cli("status")
    a.proc.send_signal(signal.SIGCONT)
    assert result.returncode == 1
    assert f"runs with state dir {b_dir / 'state'}, not {a_dir / 'state'}" in result.stderr
    assert "sessions:" not in result.stdout
    assert b.terminate() == 0 and a.terminate() == 0


# -- 7. requeue keeps each session's story ----------------------------------------------------


def test_requeue_refuses_what_would_follow_a_delivered_end(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    t0 = datetime(2026, 11, 29, tzinfo=UTC)
    store.apply(
        [
            LifecycleEvent("s", "active", t0, platform="goose", kind="start"),
            LifecycleEvent("s", "idle", t0),
            LifecycleEvent("s", "ended", t0, kind="end"),
        ]
    )
    active, idle, ended = store.peek(10)
    store.dead_letter(active, 400, "bad_request")
    store.ack([idle.seq, ended.seq])  # the rest of the story reached the server
    moved, refused = store.requeue()
    assert moved == 0 and [seq for seq, _ in refused] == [active.seq]
    assert "`ended` was delivered already" in refused[0][1]
    assert store.requeue(force=True) == (1, [])
    [back] = store.peek(10)
    assert (back.seq, back.event_id, back.body) == (active.seq, active.event_id, active.body)
    store.close()


def test_requeue_puts_an_event_back_before_its_sessions_later_events(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db")
    t0 = datetime(2026, 11, 29, tzinfo=UTC)
    store.apply([LifecycleEvent("s", "active", t0, kind="start")])
    [active] = store.peek(10)
    store.dead_letter(active, 400, "bad_request")
    store.apply([LifecycleEvent("s", "idle", t0), LifecycleEvent("s", "ended", t0, kind="end")])
    assert store.requeue() == (1, [])
    assert [e.state for e in store.peek(10)] == ["active", "idle", "ended"]
    store.close()


# -- 8. a per-user daemon ----------------------------------------------------------------------


def test_a_per_user_daemon_watches_only_its_own_users_agents(
    short_tmp: Path, agents: Agents, other_user: tuple[int, int]
) -> None:
    """The daemon's own choice of settings, and its scanner, in a child that became the
    unprivileged user (the interpreter already loaded: the user may not read root's)."""
    from quintd.config import load_config
    from quintd.daemon import Daemon
    from quintd.scanner import Scanner

    uid, gid = other_user
    shared = _owned_dir(short_tmp / "pub", 0, 0)
    fake_agent(shared / "amp")
    os.chmod(shared / "amp", 0o755)
    root_agent = agents.spawn([str(shared / "amp"), "600"], cwd=shared)
    user_agent = _spawn_as(agents, [str(shared / "amp"), "600"], uid, gid, {}, shared)
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9")
    loaded = load_config(str(config), clean_env())
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # pragma: no cover - runs in the child
        try:
            os.close(reader)
            os.setgroups([])
            os.setgid(gid)
            os.setuid(uid)
            settings = Daemon._settings_from(loaded).scanner
            found = [a.pid for a in Scanner(settings).scan()]
            os.write(writer, json.dumps({"only_uid": settings.only_uid, "pids": found}).encode())
        finally:
            os._exit(0)
    os.close(writer)
    with os.fdopen(reader) as fh:
        seen = json.loads(fh.read() or "{}")
    os.waitpid(child, 0)
    assert seen["only_uid"] == uid
    assert user_agent.pid in seen["pids"] and root_agent.pid not in seen["pids"]


# -- 9. no check-then-open race --------------------------------------------------------------


def test_a_directory_swapped_for_a_link_is_never_followed(tmp_path: Path) -> None:
    root = tmp_path / "agent"
    inside = root / "projects" / "p"
    inside.mkdir(parents=True)
    (inside / "t.jsonl").write_text('{"type": "mine"}\n')
    secret = tmp_path / "secret" / "p"
    secret.mkdir(parents=True)
    (secret / "t.jsonl").write_text('{"type": "secret"}\n')
    stop = threading.Event()

    def swap() -> None:  # flip projects/ between the real dir and a link out, forever
        real, aside = root / "projects", root / "projects.real"
        while not stop.is_set():
            real.rename(aside)
            real.symlink_to(tmp_path / "secret")
            real.unlink()
            aside.rename(real)

    thread = threading.Thread(target=swap, daemon=True)
    thread.start()
    read = set()
    try:
        for _ in range(3000):
            try:
                fd, _info = open_under(root, inside / "t.jsonl")
            except (Refused, FileNotFoundError):
                continue
            read.add(os.read(fd, 100))
            os.close(fd)
    finally:
        stop.set()
        thread.join()
    assert read and all(b"secret" not in data for data in read)


# -- also seen ---------------------------------------------------------------------------------


def test_config_token_warnings_symlinks_and_infinities(short_tmp: Path) -> None:
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9")
    os.chmod(config, 0o644)
    checked = run_cli("config", "check", "--config", str(config))
    assert checked.returncode == 0
    assert "readable by group or others (mode 0644), and so is the token" in checked.stderr
    assert TOKEN not in checked.stderr + checked.stdout
    token = short_tmp / "token"
    token.write_text("qt_deploy_x\n")
    os.chmod(token, 0o600)
    (short_tmp / "token-link").symlink_to(token)
    linked = short_tmp / "linked.toml"
    linked.write_text(f'[cloud]\ntoken_file = "{short_tmp / "token-link"}"\n')
    result = run_cli("config", "check", "--config", str(linked))
    assert result.returncode == 78
    assert "is a symbolic link; quintd reads a token only from the file itself" in result.stderr
    assert "Too many levels" not in result.stderr
    infinite = short_tmp / "inf.toml"
    infinite.write_text("[sessions]\nidle_after = inf\n")
    result = run_cli("config", "check", "--config", str(infinite))
    assert result.returncode == 78 and "sessions.idle_after" in result.stderr


def test_daemon_logs_the_inline_token_warning_at_start(short_tmp: Path, daemons) -> None:
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9")
    os.chmod(config, 0o640)
    daemon = daemons(config).start()
    daemon.wait_ready()
    assert daemon.terminate(signal.SIGTERM) == 0
    assert "and so is the token" in daemon.log and TOKEN not in daemon.log


def test_the_store_never_follows_a_link_for_its_database(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere.db"
    sqlite3.connect(target).close()
    (tmp_path / "q.db").symlink_to(target)
    with pytest.raises(Exception, match="symbolic link"):
        Store(tmp_path / "q.db")
