"""Which homes the daemon watches before any agent runs there, and that an existing
state directory in one of them is watched (and one owned by someone else is not)."""

from __future__ import annotations

import json
import os
import pwd
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import Agents, wait_until

from quintd.scanner import Scanner
from quintd.sources.homes import candidate_homes
from quintd.sources.manager import PENDING_GRACE_S, SourceManager

LOGIN_USER = "quintd-home-test"


@pytest.fixture(scope="module")
def login_user() -> Iterator[pwd.struct_passwd]:
    """A login account with a home of its own (created when the tests run as root)."""
    if os.geteuid() != 0:
        pytest.skip("needs root, to create a login account")
    base = Path(tempfile.mkdtemp(prefix="qd-homes-"))
    os.chmod(base, 0o755)
    home = base / LOGIN_USER
    subprocess.run(["userdel", LOGIN_USER], capture_output=True, check=False)
    subprocess.run(
        ["useradd", "--create-home", "--home-dir", str(home), "--shell", "/bin/sh", LOGIN_USER],
        check=True,
        capture_output=True,
    )
    try:
        yield pwd.getpwnam(LOGIN_USER)
    finally:
        subprocess.run(["userdel", LOGIN_USER], capture_output=True, check=False)
        shutil.rmtree(base, ignore_errors=True)


def test_a_per_user_daemon_watches_its_own_home(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", "/some/home")
    assert candidate_homes(only_uid=4321) == [(4321, Path("/some/home"))]
    monkeypatch.setenv("HOME", "relative/home")  # not a path to trust: from the account
    assert candidate_homes(only_uid=os.geteuid()) == [
        (os.geteuid(), Path(pwd.getpwuid(os.geteuid()).pw_dir))
    ]


def test_the_root_daemon_watches_login_accounts_not_system_ones(
    login_user: pwd.struct_passwd,
) -> None:
    homes = candidate_homes(only_uid=None)
    assert (login_user.pw_uid, Path(login_user.pw_dir)) in homes
    assert (0, Path(pwd.getpwuid(0).pw_dir)) in homes
    uids = {uid for uid, _ in homes}
    # daemon, bin, nobody...: system accounts run no agents.
    for entry in pwd.getpwall():
        if 0 < entry.pw_uid < 1000 or entry.pw_uid >= 65534:
            assert entry.pw_uid not in uids, entry.pw_name


def test_a_state_dir_in_a_login_home_is_watched_before_an_agent_runs(
    login_user: pwd.struct_passwd,
) -> None:
    home = Path(login_user.pw_dir)
    own = home / ".claude"
    own.mkdir()
    os.chown(own, login_user.pw_uid, login_user.pw_gid)
    foreign = home / ".gemini"  # root's, in the user's home: not the user's state
    foreign.mkdir()
    manager = SourceManager()
    try:
        assert manager.prospect([(login_user.pw_uid, home)]) == 1
        assert own in manager._watched or own / "sessions" in manager._watched
        assert not any(p.is_relative_to(foreign) for p in manager._watched)
    finally:
        manager.close()
        shutil.rmtree(own)
        shutil.rmtree(foreign)


def test_an_agent_whose_state_names_nothing_of_it_is_waiting_not_unknown(
    tmp_path: Path, agents: Agents
) -> None:
    """The manager tells the two apart: an agent whose state directory exists and names
    no conversation of it (an empty list: it waits), and one whose state there is none of
    (absent: the CPU is all there is)."""
    with_state = tmp_path / "with"
    (with_state / ".claude").mkdir(parents=True)
    without = tmp_path / "without"
    without.mkdir()
    agents.prepare("claude")
    claude = [str(agents.root / "bin" / "claude"), "600"]
    waiting = agents.spawn(claude, env={**os.environ, "HOME": str(with_state)})
    unknown = agents.spawn(claude, env={**os.environ, "HOME": str(without)})
    scanner = Scanner()
    # Past the grace an agent that writes its state as it starts is given (3 s).
    mine = wait_until(
        lambda: (
            len(found := [a for a in scanner.scan() if a.pid in (waiting.pid, unknown.pid)]) == 2
            and all(time.time() - a.start_time > PENDING_GRACE_S + 0.5 for a in found)
            and found
        ),
        what="both agents, past their grace",
    )
    manager = SourceManager()
    try:
        facts, pending = manager.observe(mine)
    finally:
        manager.close()
    assert waiting.pid not in facts and manager.waiting == {waiting.pid}
    assert unknown.pid not in facts and unknown.pid not in pending


def test_a_state_dir_made_after_the_agent_started_is_trusted_only_if_its_users(
    tmp_path: Path, agents: Agents
) -> None:
    """An agent starts before its state directory exists; someone else then makes the
    directory (with a registry naming the agent). Trusted for the agent's user while it
    was missing, the directory is checked again once it is there, and not read: it is not
    the agent's user's. (The decision was cached for the process's life.)"""
    if os.geteuid() != 0:
        pytest.skip("needs root, to make a directory owned by another user")
    from quintd.procfs import start_ticks

    home = tmp_path / "home"
    home.mkdir()
    agents.prepare("claude")
    proc = agents.spawn(
        [str(agents.root / "bin" / "claude"), "600"], env={**os.environ, "HOME": str(home)}
    )
    scanner = Scanner()
    mine = wait_until(lambda: [a for a in scanner.scan() if a.pid == proc.pid], what="the agent")
    manager = SourceManager()
    try:
        facts, _ = manager.observe(mine)
        assert proc.pid not in facts  # nothing there yet
        state = home / ".claude"
        (state / "sessions").mkdir(parents=True)
        registry = state / "sessions" / f"{proc.pid}.json"
        registry.write_text(
            json.dumps(
                {
                    "pid": proc.pid,
                    "sessionId": "00000000-0000-4000-8000-00000000000a",
                    "cwd": "/",
                    "procStart": start_ticks(proc.pid),
                    "status": "busy",
                }
            )
        )
        for path in (state, state / "sessions", registry):
            os.chown(path, 65534, 65534)  # nobody's, not the agent's user's (root)
        facts, _ = manager.observe(mine)
        assert proc.pid not in facts
        assert proc.pid not in manager.waiting
    finally:
        manager.close()
