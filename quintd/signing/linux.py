"""Linux has no code signing: report the package that owns the file, else its SHA-256."""

from __future__ import annotations

import os
import shutil
import subprocess

from quintd.signing.digest import sha256_file
from quintd.signing.info import SigningInfo

# Files outside these trees are never package-owned; skip the package query there.
_PACKAGE_ROOTS = ("/usr/", "/bin/", "/sbin/", "/lib", "/opt/", "/etc/")


def linux_info(path: str) -> SigningInfo:
    real = os.path.realpath(path)
    package = package_owner(real)
    if package is not None:
        return SigningInfo(signing_id=package, source=package.split(":", 1)[0])
    digest = sha256_file(real)
    return SigningInfo(signing_id=f"sha256:{digest}", source="sha256")


def package_owner(path: str) -> str | None:
    """``deb:<package>`` or ``rpm:<package>`` for a file a package installed."""
    if not path.startswith(_PACKAGE_ROOTS):
        return None
    if shutil.which("dpkg-query"):
        # With merged /usr, dpkg may know the file under its /bin alias or vice versa.
        for candidate in _usrmerge_aliases(path):
            owner = _run(["dpkg-query", "-S", candidate])
            if owner:
                return f"deb:{parse_dpkg_search(owner)}"
    if shutil.which("rpm"):
        owner = _run(["rpm", "-qf", "--qf", "%{NAME}\\n", path])
        if owner and "not owned" not in owner:
            return f"rpm:{owner.strip().splitlines()[0]}"
    return None


def parse_dpkg_search(output: str) -> str:
    """``coreutils: /bin/sleep`` -> ``coreutils``; ``a, b: /x`` -> ``a``;
    ``libc6:amd64: /lib/...`` -> ``libc6:amd64``."""
    lines = [ln for ln in output.strip().splitlines() if not ln.startswith("diversion by")]
    packages = (lines or [""])[0].rsplit(": ", 1)[0]
    return packages.split(",")[0].strip()


def _usrmerge_aliases(path: str) -> list[str]:
    aliases = [path]
    for short in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if path.startswith("/usr" + short):
            aliases.append(path[len("/usr") :])
        elif path.startswith(short):
            aliases.append("/usr" + path)
    return aliases


def _run(argv: list[str]) -> str | None:
    try:
        result = subprocess.run(
            argv,
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env={"LC_ALL": "C", "PATH": os.environ.get("PATH", "")},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout if result.returncode == 0 and result.stdout.strip() else None
