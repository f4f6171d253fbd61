"""The command line as a user runs it: a real subprocess each time."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import Agents, run_cli, wait_until, write_config

from quintd import __version__

SCAN_FIELDS = {
    "platform",
    "pid",
    "ppid",
    "started_at",
    "user",
    "exe",
    "cwd",
    "signing_id",
    "matched_by",
}


def test_version() -> None:
    result = run_cli("--version")
    assert result.returncode == 0 and result.stdout.strip() == f"quintd {__version__}"


def test_version_imports_neither_httpx_nor_pydantic() -> None:
    """A command line that only answers its version starts fast: the delivery and
    configuration libraries are imported by the commands that use them."""
    code = (
        "import sys\n"
        "from quintd.cli import main\n"
        "try:\n    main(['--version'])\nexcept SystemExit:\n    pass\n"
        "print(sorted({m.split('.')[0] for m in sys.modules} & {'httpx', 'pydantic', 'yaml'}))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_scan_json_lists_fake_agent(agents: Agents, short_tmp: Path) -> None:
    proc = agents.binary("claude", cwd=short_tmp)
    config = write_config(short_tmp)

    def found() -> dict | None:
        result = run_cli("scan", "--json", "--config", str(config))
        assert result.returncode == 0, result.stderr
        return next((a for a in json.loads(result.stdout) if a["pid"] == proc.pid), None)

    agent = wait_until(found, what="claude in scan --json")
    assert set(agent) >= SCAN_FIELDS
    assert agent["platform"] == "claude-code"
    assert agent["matched_by"] == "exe"
    assert agent["cwd"] == str(short_tmp)
    assert agent["started_at"].endswith("Z")
    # The identity, where it came from and what was checked: a copy of sleep owned by
    # no package is its own SHA-256, nothing to verify.
    identity = agent["identity"]
    assert identity["signing_id"] == agent["signing_id"]
    assert identity["signing_id"].startswith("sha256:") and identity["source"] == "sha256"
    assert (identity["package"], identity["version"], identity["verified"]) == (None, None, None)

    table = run_cli("scan", "--config", str(config))
    assert table.returncode == 0
    header, *rows = table.stdout.splitlines()
    assert header.split()[:3] == ["PLATFORM", "PID", "PPID"]
    assert any(row.split()[:2] == ["claude-code", str(proc.pid)] for row in rows)


def test_status_without_daemon_exits_3(short_tmp: Path) -> None:
    config = write_config(short_tmp)
    result = run_cli("status", "--config", str(config))
    assert result.returncode == 3
    assert "not running" in result.stderr
    as_json = run_cli("status", "--json", "--config", str(config))  # JSON, on stdout
    assert as_json.returncode == 3 and '"running": false' in as_json.stdout


def test_scan_finds_a_platform_added_in_config(agents: Agents, short_tmp: Path) -> None:
    proc = agents.binary("my-agent")
    config = write_config(
        short_tmp, extra='[[platforms]]\nid = "acme-agent"\nnames = ["my-agent"]\n'
    )

    def found() -> dict | None:
        result = run_cli("scan", "--json", "--config", str(config))
        assert result.returncode == 0, result.stderr
        return next((a for a in json.loads(result.stdout) if a["pid"] == proc.pid), None)

    agent = wait_until(found, what="custom agent in scan --json")
    assert (agent["platform"], agent["matched_by"]) == ("acme-agent", "exe")
    assert agent["signing_id"].startswith("sha256:")
