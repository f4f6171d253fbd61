"""A newcomer's first ten minutes (issue 14): what the command line says when there is
no token, no daemon, a broken config file, a closed pipe; `status --watch`; the
Prometheus format; the service file a dry run would write; the pid of a session that
ended while the daemon was down."""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from conftest import (
    TOKEN,
    Agents,
    DaemonProcess,
    clean_env,
    run_cli,
    wait_until,
    write_config,
)
from ingest_server import IngestServer

from quintd import shipper as shipper_module
from quintd.shipper import DeliverySettings, Shipper
from quintd.store import Store


@pytest.fixture
def running(short_tmp: Path, daemons: Callable[..., DaemonProcess]) -> Callable[..., DaemonProcess]:
    """Starts `quintd run` on a config in the test's dir and waits for it to answer; the
    `daemons` fixture kills each one at teardown, whatever the test did."""

    def start(**config: Any) -> DaemonProcess:
        daemon = daemons(write_config(short_tmp, **config)).start()
        daemon.wait_ready()
        return daemon

    return start


# -- no token ----------------------------------------------------------------------------


def test_status_says_first_that_nothing_is_sent_without_a_token(
    short_tmp: Path, agents: Agents, running: Callable[..., DaemonProcess]
) -> None:
    agents.binary("amp")
    daemon = running(token=None, endpoint="http://127.0.0.1:9")
    try:
        text = daemon.cli("status")
        assert text.returncode == 0, text.stderr
        first = text.stdout.splitlines()[0]
        assert first.startswith("NOT SENDING: no token") and "cloud.token_file" in first
        status = daemon.status()
        assert status is not None
        assert status["delivery"]["waiting_for_token"] is True and status["running"] is True
    finally:
        daemon.terminate()
    with_token = running(endpoint="http://127.0.0.1:9")
    try:
        assert "NOT SENDING" not in with_token.cli("status").stdout
    finally:
        with_token.terminate()


def test_the_log_says_again_and_again_that_there_is_no_token(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(shipper_module, "TOKEN_NAG_INTERVAL_S", 0.1)  # 10 minutes, faster
    store = Store(tmp_path / "q.db")
    shipper = Shipper(store, DeliverySettings(endpoint="http://127.0.0.1:9", token=None))
    caplog.set_level(logging.WARNING, logger="quintd.shipper")
    # Seen here whatever another test did to the "quintd" logger's propagation.
    logging.getLogger("quintd.shipper").addHandler(caplog.handler)
    shipper.start()
    try:
        wait_until(
            lambda: sum("not sending: no token" in r.message for r in caplog.records) >= 3,
            what="three reminders",
        )
        nags = [r for r in caplog.records if "not sending: no token" in r.message]
        assert all("0 event(s) queued" in r.message for r in nags)  # (other loggers' aside)
    finally:
        logging.getLogger("quintd.shipper").removeHandler(caplog.handler)
        shipper.stop(0.5)
        store.close()


# -- no daemon, a closed pipe ------------------------------------------------------------


def test_status_json_without_a_daemon_is_json_and_exit_3(short_tmp: Path) -> None:
    config = write_config(short_tmp)
    for args in (["--json"], ["--format", "json"]):
        result = run_cli("status", *args, "--config", str(config))
        assert result.returncode == 3
        reply = json.loads(result.stdout)
        assert reply["running"] is False and reply["socket"].endswith("quintd.sock")
    plain = run_cli("status", "--config", str(config))
    assert plain.returncode == 3 and plain.stdout == "" and "not running" in plain.stderr


def _with_reader_gone(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run the command with its stdout a pipe whose reader is already gone (what `| head -1`
    leaves once it has its line)."""
    read_end, write_end = os.pipe()
    os.close(read_end)
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "quintd", *args],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )
    finally:
        os.close(write_end)
    return proc


def test_a_closed_pipe_ends_quietly(
    short_tmp: Path, agents: Agents, running: Callable[..., DaemonProcess]
) -> None:
    daemon = running(endpoint="http://127.0.0.1:9")
    try:
        config = ["--config", str(daemon.config)]
        for args in (["status", *config], ["queue", "list", *config], ["scan", *config]):
            result = _with_reader_gone(args, daemon.env)
            assert result.returncode == 0, (args, result.stderr)
            assert "Traceback" not in result.stderr and "BrokenPipe" not in result.stderr
    finally:
        daemon.terminate()


# -- a broken config file ----------------------------------------------------------------


@pytest.mark.parametrize("breakage", ["a wrong value", "no longer TOML"])
def test_status_still_finds_the_daemon_when_the_config_breaks(
    short_tmp: Path, breakage: str, running: Callable[..., DaemonProcess]
) -> None:
    daemon = running(endpoint="http://127.0.0.1:9")
    try:
        good = daemon.config.read_text()
        assert "interval = 0.2" in good
        if breakage == "a wrong value":
            daemon.config.write_text(good.replace("interval = 0.2", "interval = -1"))
        else:  # a second [scan] table: the parser gives up on the whole file
            daemon.config.write_text(good + "\n[scan]\ninterval = -1\n")
        result = daemon.cli("status")
        assert result.returncode == 0, result.stderr
        assert "running: pid" in result.stdout
        assert "reload would be rejected" in result.stderr
        assert "scan.interval" in result.stderr or "invalid TOML" in result.stderr
        assert daemon.proc is not None
        daemon.proc.send_signal(signal.SIGHUP)  # the reload the file makes fail
        shown = wait_until(
            lambda: (
                (r := daemon.cli("status", "--json")).returncode == 0
                and json.loads(r.stdout)["last_reload_error"]
            ),
            what="the reload error",
        )
        assert "scan.interval" in shown or "invalid TOML" in shown
        assert "reload:      rejected" in daemon.cli("status").stdout
    finally:
        daemon.terminate()


def test_a_directory_as_config_file_is_named_as_such(tmp_path: Path) -> None:
    result = run_cli("config", "check", "--config", str(tmp_path))
    assert result.returncode == 78
    assert "is a directory, not a config file" in result.stderr


def test_every_line_of_a_multi_error_message_says_quintd(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('[cloud]\ntimeout = "x"\nbatch_body = 3\n[scan]\ninterval = -1\n')
    result = run_cli("config", "check", "--config", str(path))
    lines = result.stderr.splitlines()
    assert result.returncode == 78 and len(lines) == 3
    assert all(line.startswith(f"quintd: {path}, line ") for line in lines), lines


def test_log_level_from_the_environment_ignores_case(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("")
    for level in ("DEBUG", "Warning", "info"):
        result = run_cli(
            "config", "show", "--config", str(path), env=clean_env(QUINTD_LOG_LEVEL=level)
        )
        assert result.returncode == 0, result.stderr
        assert f'level = "{level.lower()}"' in result.stdout


def test_config_show_prints_a_file_that_checks_as_meant(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN)
    token_file.chmod(0o600)
    path = tmp_path / "config.toml"
    path.write_text(f'[cloud]\ntoken_file = "{token_file}"\n[scan]\ninterval = 2.5\n')
    shown = run_cli("config", "show", "--config", str(path))
    assert shown.returncode == 0 and TOKEN not in shown.stdout
    again = tmp_path / "shown.toml"
    again.write_text(shown.stdout)
    check = run_cli("config", "show", "--config", str(again))
    assert check.returncode == 0, check.stderr
    assert check.stdout.splitlines()[1:] == shown.stdout.splitlines()[1:]  # but the source


# -- the service file --------------------------------------------------------------------


def test_service_install_dry_run_prints_the_file(tmp_path: Path) -> None:
    result = run_cli(
        "service", "install", "--dry-run", "--root", str(tmp_path), "--system", "--os", "linux"
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "would write" in out and "[Service]" in out and "ExecStart=" in out
    assert not any(tmp_path.iterdir())  # nothing written
    mac = run_cli("service", "install", "--dry-run", "--root", str(tmp_path), "--os", "macos")
    assert "<plist" in mac.stdout and "<key>ProgramArguments</key>" in mac.stdout


# -- the session that ended while the daemon was down ------------------------------------


def test_a_session_ended_while_down_is_logged_with_its_pid(
    short_tmp: Path, agents: Agents, running: Callable[..., DaemonProcess]
) -> None:
    with IngestServer(token=TOKEN) as server:
        amp = agents.binary("amp")
        first = running(endpoint=server.url)
        sid = wait_until(
            lambda: next(
                (
                    s["session_id"]
                    for s in (first.status() or {"sessions": []})["sessions"]
                    if s["pid"] == amp.pid
                ),
                None,
            ),
            what="its session",
        )

        def states(evs: list[Any]) -> list[str]:
            return [r.event["state"] for r in evs if r.event["session_id"] == sid]

        server.wait_for(lambda evs: states(evs) == ["active"], what="active")
        first.terminate()
        agents.stop(amp)
        second = running(endpoint=server.url)
        try:
            server.wait_for(lambda evs: states(evs) == ["active", "ended"], what="ended")
        finally:
            second.terminate()
    ends = [line for line in second.log.splitlines() if "session end" in line]
    assert ends and f"pid={amp.pid}" in ends[0], second.log


# -- status --watch and --format prometheus ----------------------------------------------


def _watch_frames(daemon: DaemonProcess, count: int = 3) -> list[str]:
    """`quintd status --watch` until it has drawn ``count`` frames, then Ctrl-C: the
    frames (it must exit 0)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "quintd", "status", "--watch", "--config", str(daemon.config)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env=daemon.env,
    )
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + 30
    while seen.count(b"Ctrl-C to quit") < count and time.monotonic() < deadline:
        chunk = os.read(proc.stdout.fileno(), 65536)
        if not chunk:
            break  # it exited: the frames so far are all there will be
        seen += chunk
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=10) == 0
    frames = [f.decode() for f in seen.split(b"\x1b[H")[1:]]
    assert len(frames) >= count, f"{len(frames)} frame(s): {seen[-500:]!r}"
    return frames


def test_status_watch_redraws_until_ctrl_c(
    short_tmp: Path, agents: Agents, running: Callable[..., DaemonProcess]
) -> None:
    agents.binary("amp")
    daemon = running(endpoint="http://127.0.0.1:9")
    frame = _watch_frames(daemon)[-1]
    assert "IN STATE" in frame and "amp" in frame and frame.rstrip().endswith("\x1b[J")
    daemon.terminate()


def test_status_watch_redraws_with_a_config_file_that_no_longer_loads(
    short_tmp: Path, running: Callable[..., DaemonProcess]
) -> None:
    """A broken edit: the watch still finds the daemon started from the file and redraws
    it, the file's problem at the top of every frame."""
    daemon = running(endpoint="http://127.0.0.1:9")
    good = daemon.config.read_text()
    daemon.config.write_text(good.replace("interval = 0.2", "interval = -1"))
    frames = _watch_frames(daemon)
    assert daemon.proc is not None
    for frame in frames:
        assert "scan.interval" in frame.split("running: pid")[0], frame
        assert "keeps the configuration it loaded" in frame
        assert f"running: pid {daemon.proc.pid}" in frame
    daemon.terminate()


def test_status_in_the_prometheus_text_format(
    short_tmp: Path, agents: Agents, running: Callable[..., DaemonProcess]
) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    ours = {agents.binary("amp").pid, agents.binary("amp").pid}
    daemon = running(token=None, endpoint="http://127.0.0.1:9")
    try:
        wait_until(
            lambda: ours <= {x["pid"] for x in (daemon.status() or {}).get("sessions", [])},
            what="our two sessions",
        )
        result = daemon.cli("status", "--format", "prometheus")
    finally:
        daemon.terminate()
    assert result.returncode == 0, result.stderr
    families = {f.name: f for f in text_string_to_metric_families(result.stdout)}
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in families.values()
        for s in family.samples
    }
    # Ours, and any other Amp running on this machine meanwhile.
    assert samples[("quintd_sessions", (("platform", "amp"), ("state", "active")))] >= 2
    assert samples[("quintd_up", ())] == 1
    assert samples[("quintd_delivery_waiting_for_token", ())] == 1
    pace = {
        mode: samples[("quintd_delivery_pace", (("mode", mode),))]
        for mode in ("rounds", "paced", "waiting")
    }
    assert pace == {"rounds": 1, "paced": 0, "waiting": 0}  # nothing refused it yet
    assert samples[("quintd_delivery_pace_rate", ())] == 0
    assert samples[("quintd_queue_events", ())] >= 2  # their `active`, waiting for a token
    assert samples[("quintd_scan_duration_seconds", ())] > 0
    assert families["quintd_scan_passes"].type == "counter"
    for name in (
        "quintd_queue_bytes",
        "quintd_queue_oldest_age_seconds",
        "quintd_delivered_events",
        "quintd_dead_letters",
        "quintd_refused_events",
        "quintd_last_success_timestamp_seconds",
        "quintd_reader_errors",
    ):
        assert name in families, name


def test_prometheus_format_without_a_daemon_says_down(short_tmp: Path) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    result = run_cli("status", "--format", "prometheus", "--config", str(write_config(short_tmp)))
    assert result.returncode == 3 and "not running" in result.stderr
    [family] = text_string_to_metric_families(result.stdout)
    assert family.name == "quintd_up" and [s.value for s in family.samples] == [0]
