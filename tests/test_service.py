"""Running as a service: the notify protocol on a real datagram socket, SIGHUP reload
both ways, the unit and plists (systemd-analyze, plistlib), `quintd service`, and logs."""

from __future__ import annotations

import itertools
import json
import os
import plistlib
import shutil
import signal
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import (
    TOKEN,
    Agents,
    DaemonProcess,
    clean_env,
    required_tool,
    run_cli,
    wait_until,
    write_config,
)
from ingest_server import IngestServer

from quintd.notify import Notifier
from quintd.service import quintd_command, render_launchd, render_systemd

ROOT = Path(__file__).resolve().parent.parent

# Linux's <asm-generic/socket.h> (Python's socket module does not name it).
SO_TIMESTAMPNS = getattr(socket, "SO_TIMESTAMPNS", 35)


class NotifySocket:
    """What systemd listens on: a datagram socket at $NOTIFY_SOCKET."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        # Each datagram stamped by the kernel as it arrives: when the test gets round to
        # reading it (on a loaded machine, seconds later) does not matter.
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.messages: list[tuple[float, str]] = []

    def _receive(self) -> tuple[float, str]:
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(16))
        at = time.time()  # only if the kernel gave no stamp
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS:
                seconds, nanoseconds = struct.unpack("qq", raw[:16])
                at = seconds + nanoseconds / 1e9
        return at, data.decode()

    def wait_for(self, wanted: str, timeout: float = 30.0) -> float:
        """Receive until a datagram contains `wanted`; returns when it arrived (wall
        clock, stamped by the kernel)."""
        deadline = time.monotonic() + timeout
        for at, message in self.messages:
            if wanted in message.splitlines():
                return at
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no {wanted} within {timeout}s; got {self.messages}")
            self.sock.settimeout(remaining)
            try:
                at, message = self._receive()
            except TimeoutError:
                continue
            self.messages.append((at, message))
            if wanted in message.splitlines():
                return at

    def close(self) -> None:
        self.sock.close()


def test_notify_ready_watchdog_stopping(short_tmp: Path, agents: Agents, daemons) -> None:
    # Running before the daemon: READY means it is known. (A process-only agent: a young
    # Claude Code would rightly wait a few seconds for its registry.)
    early = agents.binary("amp")
    notify = NotifySocket(short_tmp / "notify")
    env = clean_env(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000")
    config = write_config(short_tmp, endpoint="http://127.0.0.1:9", token=None, interval=1.0)
    daemon: DaemonProcess = daemons(config, env).start()
    try:
        notify.wait_for("READY=1")
        status = daemon.status()
        assert status is not None
        assert early.pid in [s["pid"] for s in status["sessions"]]  # first scan done
        first = notify.wait_for("WATCHDOG=1")
        pings = _collect(notify, "WATCHDOG=1", 4)
        # About half of WATCHDOG_USEC apart (1 s), as they arrived: never a gap systemd
        # would kill the service for (2 s), never a flood.
        gaps = [b - a for a, b in itertools.pairwise(pings)]
        assert all(0.3 < gap < 2.0 for gap in gaps), gaps
        assert first <= pings[0]
        assert daemon.terminate(signal.SIGTERM) == 0
        notify.wait_for("STOPPING=1")
    finally:
        notify.close()


def _collect(notify: NotifySocket, wanted: str, count: int) -> list[float]:
    """The arrival times of `count` further datagrams carrying `wanted`."""
    times: list[float] = []
    notify.messages.clear()
    while len(times) < count:
        at = notify.wait_for(wanted)
        times.append(at)
        notify.messages.clear()
    return times


def test_watchdog_pid_of_another_process_disables_pings() -> None:
    env = {
        "NOTIFY_SOCKET": "/nonexistent",
        "WATCHDOG_USEC": "1000000",
        "WATCHDOG_PID": str(os.getpid() + 1),
    }
    notifier = Notifier(env)
    assert notifier.watchdog_interval is None
    assert "NOTIFY_SOCKET" not in env  # children do not inherit it
    mine = Notifier(
        {"NOTIFY_SOCKET": "/x", "WATCHDOG_USEC": "1000000", "WATCHDOG_PID": str(os.getpid())}
    )
    assert mine.watchdog_interval == 0.5
    assert Notifier({}).send("READY=1") is False  # outside systemd: a no-op


def test_sighup_reload_both_ways(short_tmp: Path, agents: Agents, daemons) -> None:
    with IngestServer(token="qt_deploy_old") as old, IngestServer(token=TOKEN) as new:
        config = write_config(short_tmp, endpoint=old.url, token="qt_deploy_wrong")
        daemon = daemons(config).start()
        daemon.wait_ready()
        agents.binary("claude")
        # The old server refuses the token: delivery pauses, everything is kept.
        wait_until(lambda: (s := daemon.status()) and s["delivery"]["paused"], what="401 pause")
        assert old.events == []
        assert daemon.proc is not None

        # A good config: new endpoint and token; delivery resumes at once, nothing lost.
        write_config(short_tmp, endpoint=new.url, token=TOKEN, idle_after=1800.0)
        os.kill(daemon.proc.pid, signal.SIGHUP)
        new.wait_for(lambda evs: len(evs) >= 1, what="the kept event, at the new endpoint")
        status = wait_until(
            lambda: (s := daemon.status()) and s["reloads"] == 1 and s, what="reload counted"
        )
        assert status["endpoint"] == new.url
        assert status["delivery"]["paused"] is None

        # A broken config: rejected with its reason; the running one stays. (`quintd
        # status` itself refuses a broken config, so it reads a good copy from here on.)
        good = short_tmp / "good.toml"
        shutil.copy(config, good)
        daemon.config = good
        config.write_text(config.read_text().replace("interval = 0.2", 'interval = "fast"'))
        os.kill(daemon.proc.pid, signal.SIGHUP)
        status = wait_until(
            lambda: (s := daemon.status()) and s["last_reload_error"] and s,
            what="rejected reload",
        )
        assert "scan.interval" in status["last_reload_error"]
        assert status["reloads"] == 1 and status["endpoint"] == new.url
        codex = agents.binary("codex")
        sid = wait_until(
            lambda: next(
                (
                    x["session_id"]
                    for x in (daemon.status() or {}).get("sessions", [])
                    if x["pid"] == codex.pid
                ),
                None,
            ),
            what="still scanning",
        )
        new.wait_for(
            lambda evs: any(r.event["session_id"] == sid for r in evs), what="still delivering"
        )
        assert daemon.terminate() == 0
    assert "reload rejected" in daemon.log, daemon.log
    assert TOKEN not in daemon.log and "qt_deploy_wrong" not in daemon.log


# -- unit files ------------------------------------------------------------------------


def test_committed_unit_and_plists_are_the_rendered_templates() -> None:
    unit = (ROOT / "systemd" / "quintd.service").read_text()
    assert unit == render_systemd(["/opt/quintd/bin/quintd"])
    home = Path("/Users/USERNAME")
    for name, scope in (
        ("dev.quintai.quintd.plist", "system"),
        ("dev.quintai.quintd.agent.plist", "user"),
    ):
        committed = (ROOT / "launchd" / name).read_text()
        assert committed == render_launchd(["/opt/homebrew/bin/quintd"], scope, home)  # type: ignore[arg-type]


@pytest.mark.skipif(sys.platform != "linux", reason="systemd is Linux's")
@pytest.mark.parametrize("scope", ["system", "user"])
def test_unit_passes_systemd_analyze_verify(tmp_path: Path, scope: str) -> None:
    required_tool("systemd-analyze")
    exe = shutil.which("quintd") or sys.executable  # verify wants an executable that exists
    unit = tmp_path / "quintd.service"
    unit.write_text(render_systemd([exe], scope))  # type: ignore[arg-type]
    result = subprocess.run(
        ["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, check=False
    )
    assert result.returncode == 0, result.stderr
    text = unit.read_text()
    for setting in (
        "Type=notify",
        "WatchdogSec=",
        "Restart=on-failure",
        "RestartPreventExitStatus=78",
        "ExecReload=" + exe + " reload --pid $MAINPID",
        "StateDirectory=quintd",
        "RuntimeDirectory=quintd",
    ):
        assert setting in text
    if scope == "system":
        assert "ProtectSystem=strict" in text and "NoNewPrivileges=yes" in text
        assert "CapabilityBoundingSet=CAP_SYS_PTRACE CAP_DAC_READ_SEARCH" in text
        assert "\nProtectProc=invisible" not in text
    else:
        assert "CapabilityBoundingSet" not in text and "WantedBy=default.target" in text


@pytest.mark.parametrize("name", ["dev.quintai.quintd.plist", "dev.quintai.quintd.agent.plist"])
def test_plists_parse(name: str) -> None:
    path = ROOT / "launchd" / name
    data = plistlib.loads(path.read_bytes())
    assert data["Label"] == "dev.quintai.quintd"
    assert data["ProgramArguments"] == ["/opt/homebrew/bin/quintd", "run"]
    assert data["RunAtLoad"] is True
    assert data["KeepAlive"] == {"SuccessfulExit": False}
    assert data["ThrottleInterval"] == 10
    assert data["StandardErrorPath"].endswith("quintd.log")


# -- quintd service ----------------------------------------------------------------------


def test_service_install_and_uninstall_into_a_root(tmp_path: Path) -> None:
    dry = run_cli(
        "service", "install", "--system", "--dry-run", "--root", str(tmp_path), "--os", "linux"
    )
    assert dry.returncode == 0 and "would write" in dry.stdout
    assert list(tmp_path.iterdir()) == []  # a dry run writes nothing

    done = run_cli("service", "install", "--system", "--root", str(tmp_path), "--os", "linux")
    assert done.returncode == 0, done.stderr
    unit = tmp_path / "etc/systemd/system/quintd.service"
    assert "ExecStart=" in unit.read_text() and " run\n" in unit.read_text()
    assert "next: systemctl enable --now quintd" in done.stdout

    gone = run_cli("service", "uninstall", "--system", "--root", str(tmp_path), "--os", "linux")
    assert gone.returncode == 0 and not unit.exists()


def test_service_install_macos_daemon_and_agent(tmp_path: Path) -> None:
    for scope, relative in (
        ("--system", "Library/LaunchDaemons/dev.quintai.quintd.plist"),
        ("--user", None),
    ):
        result = run_cli("service", "install", scope, "--root", str(tmp_path), "--os", "macos")
        assert result.returncode == 0, result.stderr
        if relative is None:
            [path] = list(tmp_path.rglob("LaunchAgents/dev.quintai.quintd.plist"))
        else:
            path = tmp_path / relative
        data = plistlib.loads(path.read_bytes())
        assert data["ProgramArguments"][-1] == "run"
        assert Path(data["ProgramArguments"][0]).is_absolute()
        assert "launchctl bootstrap" in result.stdout


def test_service_command_points_at_a_real_quintd() -> None:
    command = quintd_command()
    assert Path(command[0]).is_file() and os.access(command[0], os.X_OK)


# -- logs ----------------------------------------------------------------------------------


def test_json_logs_and_no_token(short_tmp: Path, agents: Agents) -> None:
    with IngestServer(token=TOKEN) as server:
        config = write_config(short_tmp, endpoint=server.url)
        log = short_tmp / "log"
        with open(log, "wb") as out:
            proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "quintd",
                    "run",
                    "--config",
                    str(config),
                    "--log-format",
                    "json",
                ],
                stdout=out,
                stderr=out,
                env=clean_env(),
            )
        try:
            claude = agents.binary("claude")
            server.wait_for(
                lambda evs: any(r.event.get("platform") == "claude-code" for r in evs),
                what="the agent's event",
            )
            agents.stop(claude)
            server.wait_for(
                lambda evs: any(
                    r.event["state"] == "ended" and r.event.get("platform") == "claude-code"
                    for r in evs
                ),
                what="ended",
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(30) == 0
    lines = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    assert {"ts", "level", "component", "msg"} <= set(lines[0])
    started = next(entry for entry in lines if entry["msg"] == "started")
    assert started["component"] == "daemon" and started["token_set"] is True
    # Its own: other agents on the machine (another user's, another run's) end too.
    ends = [e for e in lines if e["msg"] == "session end" and e.get("pid") == claude.pid]
    assert ends and ends[0]["state"] == "ended" and ends[0]["platform"] == "claude-code"
    assert TOKEN not in log.read_text()


def test_token_is_scrubbed_from_tracebacks_too(capsys: pytest.CaptureFixture[str]) -> None:
    import logging

    from quintd.logs import register_secret, setup_logging

    secret = 'qt_deploy_"tricky\\secret'
    register_secret(secret)
    for log_format in ("text", "json"):
        setup_logging("info", log_format)  # type: ignore[arg-type]
        try:
            raise RuntimeError(f"failed with token {secret}")
        except RuntimeError:
            logging.getLogger("quintd.test").exception("boom", extra={"fields": {"t": secret}})
    err = capsys.readouterr().err
    assert "boom" in err and "<redacted>" in err
    assert secret not in err and json.dumps(secret)[1:-1] not in err


def _syscalls(group: str, seen: set[str] | None = None) -> set[str]:
    """The system calls of a systemd syscall group, its nested groups expanded."""
    required_tool("systemd-analyze")
    seen = seen if seen is not None else set()
    if group in seen:
        return set()
    seen.add(group)
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", group], capture_output=True, text=True, check=True
    ).stdout
    calls: set[str] = set()
    for line in out.splitlines()[1:]:
        item = line.strip()
        if not item or item.startswith("#"):
            continue
        calls |= _syscalls(item, seen) if item.startswith("@") else {item}
    return calls


@pytest.mark.skipif(sys.platform != "linux", reason="systemd is Linux's")
def test_the_syscall_filter_allows_exit_notification_and_file_watching() -> None:
    """The system unit's SystemCallFilter= must not refuse what the main loop waits with
    (a refusal would not break quintd, but exits would come late, from the scan)."""
    allowed: set[str] = set()
    denied: set[str] = set()
    for line in render_systemd(["/usr/bin/quintd"], "system").splitlines():
        if not line.startswith("SystemCallFilter="):
            continue
        value = line.split("=", 1)[1]
        deny = value.startswith("~")
        for item in value.lstrip("~").split():
            calls = _syscalls(item) if item.startswith("@") else {item}
            (denied if deny else allowed).update(calls)
    assert allowed, "no SystemCallFilter= in the unit"
    needed = {"pidfd_open", "ppoll", "poll", "pipe2", "inotify_init1", "inotify_add_watch"}
    assert needed <= allowed - denied, needed - (allowed - denied)


@pytest.mark.skipif(sys.platform != "linux", reason="systemd is Linux's")
def test_the_readmes_metrics_timer_passes_systemd_analyze(tmp_path: Path) -> None:
    """The node_exporter textfile units the README gives, as written there."""
    required_tool("systemd-analyze")
    text = (ROOT / "README.md").read_text()
    units = {}
    for block in text.split("```ini\n")[1:]:
        body = block.split("```", 1)[0]
        first = body.splitlines()[0]
        if first.startswith("# /etc/systemd/system/quintd-metrics."):
            units[first.rsplit("/", 1)[1]] = body
    assert set(units) == {"quintd-metrics.service", "quintd-metrics.timer"}
    for name, body in units.items():
        (tmp_path / name).write_text(body)
    result = subprocess.run(
        ["systemd-analyze", "verify", *(str(tmp_path / name) for name in units)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
