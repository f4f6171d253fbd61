"""`quintd service install|uninstall`: the systemd unit or launchd plist for this OS.

System-wide when run as root (a systemd system unit, a LaunchDaemon), per user
otherwise (a systemd user unit, a LaunchAgent). ``root`` prefixes every path, for
packaging and tests; ``dry_run`` only says what would happen.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

from quintd.errors import QuintdError

TargetOS = Literal["linux", "macos"]
LABEL = "dev.quintai.quintd"


@dataclass(frozen=True)
class ServiceFile:
    path: Path  # where it goes (under root)
    content: str
    scope: Literal["system", "user"]
    target_os: TargetOS

    def next_steps(self, installed: bool) -> list[str]:
        plain = self.path
        if self.target_os == "linux":
            user = " --user" if self.scope == "user" else ""
            if installed:
                return [f"systemctl{user} daemon-reload", f"systemctl{user} enable --now quintd"]
            return [f"systemctl{user} disable --now quintd", f"systemctl{user} daemon-reload"]
        domain = "system" if self.scope == "system" else f"gui/{os.getuid()}"
        if installed:
            return [f"launchctl bootstrap {domain} {plain}"]
        return [f"launchctl bootout {domain}/{LABEL}"]


def current_os() -> TargetOS:
    if sys.platform == "darwin":
        return "macos"
    if sys.platform.startswith("linux"):
        return "linux"
    raise QuintdError(f"quintd service: no service manager support on {sys.platform}")


def quintd_command() -> list[str]:
    """The command a service manager should run to start this very quintd."""
    argv0 = Path(sys.argv[0])
    if argv0.name == "quintd" and argv0.exists():
        return [str(argv0.absolute())]
    found = shutil.which("quintd")
    if found:
        return [str(Path(found).absolute())]
    return [sys.executable, "-m", "quintd"]


def _template(name: str) -> str:
    return resources.files("quintd").joinpath("service_files", name).read_text()


def render_systemd(command: list[str], scope: Literal["system", "user"] = "system") -> str:
    text = _template("quintd.service").replace("@QUINTD@", " ".join(command))
    if scope == "user":
        # A user manager cannot apply the privileged sandboxing (capabilities, mount
        # namespaces) and a user's quintd only watches that user: drop that block.
        lines, keep = [], True
        for line in text.splitlines():
            if line.startswith("# Hardening"):
                keep = False
            elif line.startswith("["):
                keep = True
            if keep:
                lines.append(line)
        text = "\n".join(lines).replace("WantedBy=multi-user.target", "WantedBy=default.target")
        text = text.replace("Wants=network-online.target\nAfter=network-online.target\n", "")
        text += "\n"
    return text


def render_launchd(command: list[str], scope: Literal["system", "user"], home: Path) -> str:
    if scope == "system":
        text = _template(f"{LABEL}.plist")
    else:
        text = _template(f"{LABEL}.agent.plist").replace("@LOGDIR@", str(home / "Library/Logs"))
    program = "\n".join(f"        <string>{_xml(arg)}</string>" for arg in command)
    return text.replace("        <string>@QUINTD@</string>", program)


def _xml(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def service_file(
    *,
    target_os: TargetOS,
    scope: Literal["system", "user"],
    root: Path,
    home: Path,
    command: list[str],
) -> ServiceFile:
    def under_root(path: Path) -> Path:
        return root / path.relative_to(path.anchor)

    if target_os == "linux":
        if scope == "system":
            path = Path("/etc/systemd/system/quintd.service")
        else:
            path = home / ".config/systemd/user/quintd.service"
        return ServiceFile(under_root(path), render_systemd(command, scope), scope, target_os)
    if scope == "system":
        path = Path(f"/Library/LaunchDaemons/{LABEL}.plist")
    else:
        path = home / f"Library/LaunchAgents/{LABEL}.plist"
    return ServiceFile(under_root(path), render_launchd(command, scope, home), scope, target_os)


def install(file: ServiceFile, *, dry_run: bool, act: bool) -> list[str]:
    """Write the file; ``act``: also run the service manager's reload (only on the live
    system). Returns what was (or would be) done, for the user."""
    done = [f"{'would write' if dry_run else 'wrote'} {file.path}"]
    if dry_run:
        # The whole file, between rulers: what would be installed, to read or to diff.
        shown = [f"--- {file.path} ---", *file.content.rstrip("\n").splitlines(), "---"]
        return done + shown + ["then: " + step for step in file.next_steps(True)]
    file.path.parent.mkdir(parents=True, exist_ok=True)
    tmp = file.path.with_suffix(file.path.suffix + ".tmp")
    tmp.write_text(file.content)
    os.chmod(tmp, 0o644)  # units and plists are world-readable by convention
    os.replace(tmp, file.path)
    steps = file.next_steps(True)
    if act and file.target_os == "linux" and Path("/run/systemd/system").is_dir():
        _run(steps[0].split())
        done.append(f"ran {steps[0]}")
        steps = steps[1:]
    return done + ["next: " + step for step in steps]


def uninstall(file: ServiceFile, *, dry_run: bool, act: bool) -> list[str]:
    if not file.path.exists():
        return [f"nothing to remove at {file.path}"]
    stop, *after = file.next_steps(False)
    if dry_run:
        return [f"would run {stop}", f"would remove {file.path}"] + [f"then: {s}" for s in after]
    live = act and file.target_os == "linux" and Path("/run/systemd/system").is_dir()
    done = []
    if live:
        _run(stop.split(), check=False)  # not loaded is fine
        done.append(f"ran {stop}")
    else:
        done.append(f"stop it if it runs: {stop}")
    file.path.unlink()
    done.append(f"removed {file.path}")
    for step in after:
        if live:
            _run(step.split())
            done.append(f"ran {step}")
        else:
            done.append(f"next: {step}")
    return done


def _run(argv: list[str], check: bool = True) -> None:
    result = subprocess.run(argv, capture_output=True, text=True, check=False)
    if check and result.returncode != 0:
        raise QuintdError(f"{' '.join(argv)} failed: {result.stderr.strip()}")
