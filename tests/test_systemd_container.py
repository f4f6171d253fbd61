"""quintd under a real systemd: the .deb installed with dpkg in a Debian 12 container
(minbase with systemd, booted by systemd-nspawn) and run by its PID 1, as a new user
would. The tests run in order, on one boot: install and start, the watchdog, Restart=,
reload, what the sandbox must still allow (other users' agents, their files, pidfds,
dpkg-query, the database, the socket, a loopback ingest server in the container), stop,
an upgrade over a running daemon, the journal, purge.

One setting differs from the packaged unit: WatchdogSec is 5 s (a drop-in in /run), so
that a frozen daemon is caught in seconds rather than 30.

Needs root, systemd-nspawn (systemd-container), debootstrap and nsenter (.ci/run installs
the first two), and Debian's packages the first time (README: Tests).
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import stat
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import pytest
from conftest import DEBIAN_LIKE, required_tool
from systemd_container import SUITE_PYTHON, BootFailed, Container, cached_rootfs, poll_until

from quintd import __version__

T = TypeVar("T")

ROOT = Path(__file__).resolve().parent.parent
TESTS = Path(__file__).resolve().parent
BUILD = ROOT / "build"

NEWER = f"{__version__}+systemd.1"  # a newer package version, dpkg-wise
WATCHDOG_S = 5
SHARED = "/srv/quintd-test"  # in the container: packages, server scripts, its output
OUT = f"{SHARED}/out"
USER_UID = 1500
FAKE_PACKAGE = "qd-fake-claude"

pytestmark = [
    pytest.mark.skipif(sys.platform != "linux", reason="systemd-nspawn is Linux's"),
    # debootstrap (the first run in a checkout) and a whole boot: well over a test's 180 s.
    pytest.mark.timeout(900),
]


def _requirements() -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root: systemd-nspawn boots the container")
    if not DEBIAN_LIKE:
        pytest.skip("not a Debian-like system: no debootstrap or dpkg (README: Set up)")
    for tool in ("systemd-nspawn", "debootstrap", "nsenter", "dpkg-deb"):
        required_tool(tool)


def _build(out: Path, version: str) -> subprocess.Popen[str]:
    required_tool("nfpm")
    return subprocess.Popen(
        [
            *("bash", str(ROOT / "packaging" / "build.sh"), "--out", str(out)),
            *("--version", version, "--pythons", SUITE_PYTHON),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
    )


def _finish(build: subprocess.Popen[str]) -> None:
    stdout, stderr = build.communicate(timeout=600)
    assert build.returncode == 0, stdout + stderr


def _fake_agent_package(rootfs: Path, directory: Path) -> Path:
    """A package of the container's own `sleep` installed as /usr/bin/claude, with dpkg's
    md5sums: what quintd finds with dpkg-query and checks against dpkg's record."""
    stage = directory / FAKE_PACKAGE
    (stage / "DEBIAN").mkdir(parents=True)
    (stage / "usr/bin").mkdir(parents=True)
    binary = stage / "usr/bin/claude"
    shutil.copy(rootfs / "usr/bin/sleep", binary)
    binary.chmod(0o755)
    digest = hashlib.md5(binary.read_bytes()).hexdigest()
    (stage / "DEBIAN/md5sums").write_text(f"{digest}  usr/bin/claude\n")
    (stage / "DEBIAN/control").write_text(
        f"Package: {FAKE_PACKAGE}\nVersion: 1.0\nArchitecture: all\n"
        "Maintainer: quintd tests <tests@quintai.dev>\n"
        "Description: a stand-in agent for quintd's tests\n"
    )
    deb = directory / f"{FAKE_PACKAGE}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "--build", str(stage), str(deb)],
        check=True,
        capture_output=True,
    )
    return deb


@dataclass
class Scene:
    box: Container
    token: str
    url: str
    old_deb: str
    new_deb: str
    agents: dict[str, int] = field(default_factory=dict)  # unit -> pid in the container
    titles: dict[str, str] = field(default_factory=dict)  # user -> session title
    notes: list[str] = field(default_factory=list)

    # -- the container's systemd and quintd --------------------------------------------

    def run(self, *argv: str, check: bool = True, timeout: float = 120.0) -> Any:
        return self.box.run(*argv, check=check, timeout=timeout)

    def unit(self, *properties: str) -> dict[str, str]:
        return self.box.show("quintd.service", *properties)

    def status(self) -> dict[str, Any] | None:
        result = self.run("quintd", "status", "--json", check=False)
        if result.returncode != 0:
            return None
        data: dict[str, Any] = json.loads(result.stdout)
        return data

    def write(self, inside: str, text: str, mode: int = 0o644, owner: int = 0) -> None:
        path = self.box.path(inside)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(text)
        os.chmod(tmp, mode)
        os.chown(tmp, owner, owner)
        tmp.rename(path)

    def config(self, extra: str = "") -> None:
        """/etc/quintd/config.toml: the loopback server, a token, no start-up jitter (one
        machine, not a fleet), and `extra`."""
        text = (
            f'[cloud]\nendpoint = "{self.url}"\ntoken = "{self.token}"\n\n'
            f"[queue]\nstart_jitter = 0.0\n\n{extra}"
        )
        self.write("/etc/quintd/config.toml", text, mode=0o600)

    def mode(self, mode: str) -> None:
        self.write(f"{OUT}/mode", mode + "\n")

    def events(self) -> list[dict[str, Any]]:
        try:
            text = self.box.path(f"{OUT}/events.jsonl").read_text()
        except FileNotFoundError:
            return []
        return [json.loads(line) for line in text.splitlines(keepends=True) if line[-1:] == "\n"]

    def violations(self) -> list[str]:
        path = self.box.path(f"{OUT}/violations.jsonl")
        return [json.loads(line) for line in path.read_text().splitlines()]

    def wait(self, probe: Callable[[], T | None], what: str, timeout: float = 30.0) -> T:
        """poll_until, and on a timeout what quintd's unit and journal say."""
        try:
            return poll_until(probe, timeout, what, interval=0.1)
        except AssertionError as exc:
            raise AssertionError(f"{exc}\n{self.diagnosis()}") from None

    def diagnosis(self) -> str:
        unit = self.run("systemctl", "status", "--no-pager", "-n", "0", "quintd", check=False)
        journal = self.run("journalctl", "--no-pager", "-n", "40", "-u", "quintd", check=False)
        return (
            f"--- systemctl status quintd\n{unit.stdout}\n--- journalctl -u quintd\n"
            f"{journal.stdout}\n--- server events\n{self.events()}"
        )

    # -- agents ---------------------------------------------------------------------------

    def start_agent(self, unit: str, user: str, cwd: str) -> int:
        """/usr/bin/claude (the fake package's) as `user`, a unit of the container's
        systemd; its pid in the container."""
        self.run(
            "systemd-run",
            f"--unit={unit}",
            "--property=Type=exec",
            f"--property=User={user}",
            f"--property=WorkingDirectory={cwd}",
            "/usr/bin/claude",
            "600",
        )
        pid = int(self.box.show(unit, "MainPID")["MainPID"])
        assert pid > 0, unit
        self.agents[unit] = pid
        return pid

    def start_ticks(self, pid: int) -> str:
        stat_line = self.box.path(f"/proc/{pid}/stat").read_text()
        return stat_line.rsplit(")", 1)[1].split()[19]

    def session_of(self, pid: int) -> dict[str, Any] | None:
        status = self.status() or {}
        return next((s for s in status.get("sessions", []) if s["pid"] == pid), None)


def _events_of(scene: Scene, session_id: str, state: str | None = None) -> list[dict[str, Any]]:
    return [
        e
        for e in scene.events()
        if e["event"]["session_id"] == session_id and state in (None, e["event"]["state"])
    ]


@pytest.fixture(scope="module")
def scene() -> Iterator[Scene]:
    _requirements()
    work = Path(tempfile.mkdtemp(prefix="qd-nspawn-"))
    packages = work / "packages"
    # The packages build while debootstrap runs (the first time in a checkout).
    builds = [_build(packages / "old", __version__), _build(packages / "new", NEWER)]
    try:
        started = time.monotonic()
        rootfs, made = cached_rootfs(BUILD)
        took = time.monotonic() - started
        for build in builds:
            _finish(build)
        arch = _deb_arch()
        old = packages / "old" / f"quintd_{__version__}_{arch}.deb"
        new = packages / "new" / f"quintd_{NEWER}_{arch}.deb"
        fake = _fake_agent_package(rootfs, work)
        box = Container(rootfs, work)
        try:
            box.boot()
        except BootFailed as exc:
            pytest.skip(f"systemd-nspawn cannot boot a container on this machine: {exc}")
        try:
            scene = _prepare(box, old, new, fake)
            how = "made by debootstrap in" if made else "cached, found in"
            scene.notes.append(f"root tree {how} {took:.1f}s")
            yield scene
        finally:
            box.poweroff()
    finally:
        for build in builds:
            if build.poll() is None:
                build.kill()
                build.wait()
        shutil.rmtree(work, ignore_errors=True)


def _deb_arch() -> str:
    return subprocess.run(
        ["dpkg", "--print-architecture"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _prepare(box: Container, old: Path, new: Path, fake: Path) -> Scene:
    shared = box.path(SHARED)
    (shared / "out").mkdir(parents=True)
    for source in (old, new, fake):
        shutil.copy(source, shared / source.name)
    for script in ("container_ingest.py", "ingest_server.py", "own_agents.py"):
        shutil.copy(TESTS / script, shared / script)
    token = f"qt_deploy_systemd_{secrets.token_hex(12)}"
    token_file = shared / "out" / "token"
    token_file.write_text(token)
    token_file.chmod(0o600)
    box.run(
        "systemd-run",
        "--unit=qd-ingest",
        "--property=Type=exec",
        f"--property=WorkingDirectory={SHARED}",
        "/usr/bin/python3",
        f"{SHARED}/container_ingest.py",
        OUT,
    )
    url_file = box.path(f"{OUT}/url")
    url = poll_until(lambda: url_file.is_file() and url_file.read_text(), 30, "the ingest server")
    assert url.startswith("http://127.0.0.1:"), url  # loopback, in the container
    return Scene(box, token, url, f"{SHARED}/{old.name}", f"{SHARED}/{new.name}")


# -- 1. install, enable --now ---------------------------------------------------------------


def test_the_deb_installs_and_enable_now_reaches_active_on_ready(scene: Scene) -> None:
    box = scene.box
    # What the issue found: a minimal system has no kill(1) (procps), and reload must
    # work all the same.
    assert not box.path("/bin/kill").exists() and not box.path("/usr/bin/kill").exists()
    assert box.run("python3", "--version").stdout.split()[1].startswith(SUITE_PYTHON)

    installed = scene.run("dpkg", "-i", scene.old_deb)
    assert "systemctl enable --now quintd" in installed.stdout
    # The package never starts the service itself.
    assert scene.unit("ActiveState", "UnitFileState") == {
        "ActiveState": "inactive",
        "UnitFileState": "disabled",
    }
    scene.config()
    scene.write(
        "/run/systemd/system/quintd.service.d/watchdog.conf",
        f"[Service]\nWatchdogSec={WATCHDOG_S}s\n",
    )
    scene.run("systemctl", "daemon-reload")

    scene.run("systemctl", "enable", "--now", "quintd")  # returns once the unit is active
    unit = scene.unit(
        "Type", "ActiveState", "SubState", "StatusText", "NRestarts", "WatchdogUSec", "MainPID"
    )
    # Type=notify: active only once READY=1 came; STATUS= came with it, from quintd.
    assert unit["Type"] == "notify"
    assert (unit["ActiveState"], unit["SubState"]) == ("active", "running"), scene.diagnosis()
    assert unit["StatusText"].startswith("tracking "), unit
    assert unit["NRestarts"] == "0" and unit["WatchdogUSec"] == f"{WATCHDOG_S}s"
    status = scene.status()
    assert status is not None and status["pid"] == int(unit["MainPID"])
    assert status["state_dir"] == "/var/lib/quintd" and status["token_set"] is True
    print(*scene.notes)


# -- 2. the watchdog, Restart= --------------------------------------------------------------


def test_the_watchdog_keeps_it_running_and_restarts_it_when_frozen(scene: Scene) -> None:
    first = scene.unit("MainPID", "ExecMainStartTimestampMonotonic", "NRestarts")
    pid, started = int(first["MainPID"]), int(first["ExecMainStartTimestampMonotonic"])

    # Fed: still pinging, the same process, after its first period would have run out.
    def fed_past_a_period() -> bool:
        now = scene.unit("MainPID", "NRestarts", "WatchdogTimestampMonotonic")
        assert (now["MainPID"], now["NRestarts"]) == (str(pid), first["NRestarts"]), now
        return int(now["WatchdogTimestampMonotonic"]) - started > 1.5 * WATCHDOG_S * 1_000_000

    scene.wait(fed_past_a_period, "watchdog pings past a period", timeout=4 * WATCHDOG_S)

    # Frozen: the pings stop; systemd aborts it and Restart=on-failure starts it again.
    scene.run("systemctl", "kill", "--kill-who=main", "--signal=SIGSTOP", "quintd")
    restarted = scene.wait(
        lambda: (
            (u := scene.unit("MainPID", "NRestarts", "ActiveState"))["NRestarts"] == "1"
            and u["ActiveState"] == "active"
            and u["MainPID"] not in ("0", str(pid))
            and u
        ),
        "a restart after the watchdog's timeout",
        timeout=WATCHDOG_S + 60,
    )
    journal = scene.box.journal("-u", "quintd", "-o", "cat")
    assert "Watchdog timeout" in journal, journal[-2000:]
    status = scene.wait(scene.status, "the restarted daemon's status")
    assert status["pid"] == int(restarted["MainPID"])


def test_a_killed_daemon_is_restarted(scene: Scene) -> None:
    before = scene.unit("MainPID", "NRestarts")
    scene.run("systemctl", "kill", "--kill-who=main", "--signal=SIGKILL", "quintd")
    scene.wait(
        lambda: (
            (u := scene.unit("MainPID", "NRestarts", "ActiveState"))["NRestarts"]
            == str(int(before["NRestarts"]) + 1)
            and u["ActiveState"] == "active"
            and u["MainPID"] not in ("0", before["MainPID"])
        ),
        "a restart after SIGKILL",
        timeout=60,
    )
    journal = scene.box.journal("-u", "quintd", "-o", "cat")
    assert "code=killed, status=9/KILL" in journal, journal[-2000:]
    scene.wait(scene.status, "the restarted daemon's status")


# -- 3. reload --------------------------------------------------------------------------------


def test_systemctl_reload_applies_a_changed_setting_and_refuses_a_broken_one(
    scene: Scene,
) -> None:
    reload_line = scene.unit("ExecReload")["ExecReload"]
    assert "/opt/quintd/bin/quintd reload --pid" in reload_line and "kill" not in reload_line
    pid = scene.unit("MainPID")["MainPID"]
    before = scene.status()
    assert before is not None and before["settings"]["idle_after"] != 1234.0

    scene.config("[sessions]\nidle_after = 1234.0\n")
    done = scene.run("systemctl", "reload", "quintd", check=False)
    assert done.returncode == 0, done.stderr + scene.diagnosis()
    # systemctl returned after the daemon had reloaded: no waiting here.
    after = scene.status()
    assert after is not None
    assert after["settings"]["idle_after"] == 1234.0
    assert after["reloads"] == before["reloads"] + 1 and after["pid"] == int(pid)

    scene.config('[sessions]\nidle_after = 1234.0\n\n[scan]\ninterval = "fast"\n')
    refused = scene.run("systemctl", "reload", "quintd", check=False)
    assert refused.returncode != 0, "a broken configuration was reported as reloaded"
    unit = scene.unit("ActiveState", "MainPID")
    assert unit == {"ActiveState": "active", "MainPID": pid}  # runs on, the same process
    broken = scene.status()  # `status` still finds it, the file notwithstanding
    assert broken is not None and "scan.interval" in (broken["last_reload_error"] or "")
    assert broken["settings"]["idle_after"] == 1234.0

    scene.config("[sessions]\nidle_after = 1234.0\n")
    scene.run("systemctl", "reload", "quintd")
    fixed = scene.status()
    assert fixed is not None and fixed["last_reload_error"] is None
    assert fixed["reloads"] == before["reloads"] + 2
    journal = scene.box.journal("-u", "quintd", "-o", "cat")
    assert "configuration reloaded" in journal and "reload rejected" in journal


# -- 4. what the sandbox must still allow -----------------------------------------------------


def _claude_state(scene: Scene, uid: int, home: str, title: str) -> str:
    """~/.claude as Claude Code keeps it: private directories, the transcript with the
    conversation's title; returns the conversation id."""
    session = str(uuid.uuid4())
    project = home.replace("/", "-")
    for directory in (
        ".claude",
        ".claude/sessions",
        ".claude/projects",
        f".claude/projects/{project}",
    ):
        path = scene.box.path(f"{home}/{directory}")
        path.mkdir(exist_ok=True)
        os.chown(path, uid, uid)
        path.chmod(0o700)
    record = {"type": "custom-title", "customTitle": title, "sessionId": session}
    scene.write(
        f"{home}/.claude/projects/{project}/{session}.jsonl",
        json.dumps(record) + "\n",
        mode=0o600,
        owner=uid,
    )
    return session


def _registry(scene: Scene, home: str, uid: int, pid: int, session: str, cwd: str) -> None:
    registry = {
        "pid": pid,
        "sessionId": session,
        "cwd": cwd,
        "procStart": scene.start_ticks(pid),
        "status": "idle",
        "startedAt": int(time.time() * 1000),
    }
    scene.write(f"{home}/.claude/sessions/{pid}.json", json.dumps(registry), 0o600, uid)


def _mount_options(mountinfo: str, path: str) -> list[str]:
    """The options of the mount `path` is on (the last of the longest mount points)."""
    best, options = "", []
    for line in mountinfo.splitlines():
        fields = line.split()
        point = fields[4].replace("\\040", " ")
        inside = path == point or path.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, options = point, fields[5].split(",")
    return options


def test_other_users_agents_become_sessions_under_the_units_sandbox(scene: Scene) -> None:
    scene.run("useradd", "--create-home", "--uid", str(USER_UID), "--shell", "/bin/sh", "alice")
    scene.box.path("/home/alice").chmod(0o700)  # private: only CAP_DAC_READ_SEARCH reads it
    scene.run("dpkg", "-i", f"{SHARED}/{FAKE_PACKAGE}.deb")
    for user, uid, home in (("alice", USER_UID, "/home/alice"), ("root", 0, "/root")):
        title = f"{user}'s conversation under PID 1"
        session = _claude_state(scene, uid, home, title)
        pid = scene.start_agent(f"qd-agent-{user}", user, home)
        _registry(scene, home, uid, pid, session, home)
        scene.titles[user] = title

    def named(title: str) -> dict[str, Any] | None:
        return next(
            (e["event"] for e in scene.events() if e["event"].get("session_name") == title),
            None,
        )

    for user, title in scene.titles.items():
        event = scene.wait(lambda t=title: named(t), f"{user}'s session, named from its files")
        assert event["platform"] == "claude-code"
        # dpkg-query ran in the sandbox, and dpkg's md5sums were read and matched.
        assert event["signing_id"] == f"deb:{FAKE_PACKAGE}", event
    assert scene.violations() == []

    status = scene.status()
    assert status is not None
    pids = {s["pid"] for s in status["sessions"]}
    assert {scene.agents["qd-agent-alice"], scene.agents["qd-agent-root"]} <= pids
    agent_state = status["agent_state"]
    assert agent_state["errors"] == 0 and agent_state["files_refused"] == 0, agent_state
    assert agent_state["unwatchable_dirs"] == 0 and agent_state["watched_dirs"] >= 2, agent_state
    assert status["scan"]["exits_from"] == "pidfd" and status["scan"]["errors"] == 0

    # Its files: the database in StateDirectory, the socket in RuntimeDirectory.
    state = scene.box.path("/var/lib/quintd")
    database = scene.box.path("/var/lib/quintd/quintd.db")
    assert stat.S_IMODE(state.stat().st_mode) == 0o700
    assert database.is_file() and stat.S_IMODE(database.stat().st_mode) == 0o600
    assert stat.S_ISSOCK(scene.box.path("/run/quintd/quintd.sock").stat().st_mode)

    # It did all that confined: the unit's hardening is in force, not skipped.
    main = scene.unit("MainPID")["MainPID"]
    proc_status = scene.box.path(f"/proc/{main}/status").read_text()
    fields = dict(line.split(":\t", 1) for line in proc_status.splitlines() if ":\t" in line)
    cap_sys_ptrace, cap_dac_read_search = 19, 2
    assert int(fields["CapBnd"], 16) == (1 << cap_sys_ptrace) | (1 << cap_dac_read_search)
    assert fields["NoNewPrivs"].strip() == "1" and fields["Seccomp"].strip() == "2"
    mountinfo = scene.box.path(f"/proc/{main}/mountinfo").read_text()
    for path, wanted in (("/home/alice", "ro"), ("/root", "ro"), ("/var/lib/quintd", "rw")):
        assert _mount_options(mountinfo, path)[0] == wanted, (path, mountinfo)

    # alice's agent exits: `ended` at once (its pidfd), with the session it had.
    alice_pid = scene.agents["qd-agent-alice"]
    session = scene.session_of(alice_pid)
    assert session is not None
    scene.run("systemctl", "stop", "qd-agent-alice")
    scene.wait(lambda: _events_of(scene, session["session_id"], "ended"), "alice's `ended`", 10)


# -- 5. stop ----------------------------------------------------------------------------------


def test_stop_drains_and_exits_within_timeout_stop_sec(scene: Scene) -> None:
    scene.wait(lambda: (s := scene.status()) and s["queue"]["depth"] == 0, "an empty queue")
    scene.mode("delay 3")  # accepted at once, answered 3 s later
    pid = scene.start_agent("qd-agent-drain", "root", "/")
    session = scene.wait(lambda: scene.session_of(pid), "the new agent's session")
    session_id = session["session_id"]
    scene.wait(lambda: _events_of(scene, session_id, "active"), "its `active`, in flight")
    timeout_stop = scene.unit("TimeoutStopUSec")["TimeoutStopUSec"]
    assert timeout_stop == "30s"
    started = time.monotonic()
    scene.run("systemctl", "stop", "quintd")
    took = time.monotonic() - started
    unit = scene.unit("ActiveState", "Result", "ExecMainCode", "ExecMainStatus")
    # It exited by itself, with 0, after its last flush: not killed at TimeoutStopSec.
    assert unit == {
        "ActiveState": "inactive",
        "Result": "success",
        "ExecMainCode": "1",  # CLD_EXITED
        "ExecMainStatus": "0",
    }, unit
    assert took < 30, took
    scene.mode("ok")
    scene.run("systemctl", "start", "quintd")
    status = scene.wait(scene.status, "the daemon again")
    # The answer that came during the drain was recorded: nothing to send again.
    assert status["queue"]["depth"] == 0, status["queue"]
    assert len(_events_of(scene, session_id, "active")) == 1
    print(f"stop with a request in flight took {took:.1f}s")


# -- 6. upgrade -------------------------------------------------------------------------------


def test_an_upgrade_keeps_the_queue_and_the_sessions(scene: Scene) -> None:
    scene.mode("refuse 401")  # delivery pauses; what is queued stays queued
    pid = scene.start_agent("qd-agent-queued", "alice", "/home/alice")
    scene.wait(
        lambda: (s := scene.status()) and s["delivery"]["paused"] and s["queue"]["depth"] >= 1,
        "delivery paused with the new session's `active` queued",
    )
    before = scene.status()
    assert before is not None
    queued = scene.session_of(pid)
    assert queued is not None and not _events_of(scene, queued["session_id"])
    old_pid = scene.unit("MainPID")["MainPID"]
    sessions = {s["session_id"]: s["state"] for s in before["sessions"]}
    upgraded_at = time.time()

    scene.run("dpkg", "-i", scene.new_deb, timeout=300)
    version = scene.run("dpkg-query", "--showformat=${Version}", "--show", "quintd").stdout
    assert version == NEWER
    unit = scene.unit("ActiveState", "MainPID")
    assert unit["ActiveState"] == "active" and unit["MainPID"] != old_pid  # restarted
    after = scene.wait(scene.status, "the upgraded daemon")
    assert {s["session_id"]: s["state"] for s in after["sessions"]} == sessions
    assert after["queue"]["depth"] == before["queue"]["depth"], (before["queue"], after["queue"])

    scene.mode("ok")
    scene.run("systemctl", "reload", "quintd")  # a reload ends the 401 pause
    scene.wait(lambda: (s := scene.status()) and s["queue"]["depth"] == 0, "the queue sent")
    [delivered] = _events_of(scene, queued["session_id"], "active")
    # The event queued before the upgrade, not a new one.
    stamp = delivered["event"]["timestamp"].replace("Z", "+00:00")
    assert datetime.fromisoformat(stamp).timestamp() < upgraded_at
    # Nothing announced again: one `active` per session, across restarts and the upgrade.
    for session_id in sessions:
        assert len(_events_of(scene, session_id, "active")) == 1, session_id
    assert scene.violations() == []


# -- 7. the journal ---------------------------------------------------------------------------


def test_the_journal_has_the_start_line_and_never_the_token(scene: Scene) -> None:
    lines = scene.box.journal("-u", "quintd", "-o", "cat").splitlines()
    starts = [line for line in lines if line.startswith("INFO daemon: started version=")]
    assert starts and all("token_set=True" in line for line in starts), lines[-20:]
    # Every field of every entry of the whole journal (the command lines of the processes
    # that logged among them): no token.
    everything = scene.run("journalctl", "--no-pager", "-o", "export").stdout
    assert scene.token not in everything
    main = scene.unit("MainPID")["MainPID"]
    for name in ("cmdline", "environ"):
        assert scene.token.encode() not in scene.box.path(f"/proc/{main}/{name}").read_bytes()


# -- 8. purge ---------------------------------------------------------------------------------


def test_apt_purge_removes_what_the_readme_says(scene: Scene) -> None:
    # The test's own drop-in goes first: what is left is the package's doing.
    shutil.rmtree(scene.box.path("/run/systemd/system/quintd.service.d"))
    scene.run("systemctl", "daemon-reload")
    scene.run("apt-get", "purge", "--yes", "quintd")
    assert scene.unit("LoadState", "ActiveState") == {
        "LoadState": "not-found",
        "ActiveState": "inactive",
    }
    for gone in (
        "/opt/quintd",
        "/usr/bin/quintd",
        "/lib/systemd/system/quintd.service",
        "/etc/systemd/system/multi-user.target.wants/quintd.service",
        "/etc/quintd",
        "/var/lib/quintd",
        "/run/quintd",
    ):
        path = scene.box.path(gone)
        assert not path.exists() and not path.is_symlink(), gone
    listed = scene.run("dpkg-query", "--show", "quintd", check=False)
    assert listed.returncode != 0 or listed.stdout.strip() == "", listed.stdout
    for entry in scene.box.path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes()
            except OSError:
                continue
            assert b"quintd\0run" not in cmdline, entry.name
