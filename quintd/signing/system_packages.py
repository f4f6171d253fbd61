"""The system's package managers: dpkg and rpm own files under the system's trees, and
record a digest of each (dpkg's ``info/<package>.md5sums``, rpm's database)."""

from __future__ import annotations

import os
import shutil
import subprocess

from quintd.signing.examine import Deadline, Target, chunks, open_target

# Files outside these trees are never package-owned; skip the package query there.
PACKAGE_ROOTS = ("/usr/", "/bin/", "/sbin/", "/lib", "/opt/", "/etc/")
MAX_MD5SUMS = 16 * 1024 * 1024


def package_owner(path: str, root: str = "/") -> str | None:
    """``deb:<package>`` or ``rpm:<package>`` for a file a package installed (``path`` as
    seen from ``root``: a system image of the tests' own)."""
    if not path.startswith(PACKAGE_ROOTS):
        return None
    if shutil.which("dpkg-query"):
        # With merged /usr, dpkg may know the file under its /bin alias or vice versa.
        for candidate in usrmerge_aliases(path):
            owner = _run(["dpkg-query", "--admindir", _admindir(root), "-S", candidate])
            if owner:
                return f"deb:{parse_dpkg_search(owner)}"
    if shutil.which("rpm") and root == "/":
        owner = _run(["rpm", "-qf", "--qf", "%{NAME}\\n", path])
        if owner and "not owned" not in owner:
            return f"rpm:{owner.strip().splitlines()[0]}"
    return None


def _admindir(root: str) -> str:
    return os.path.join(root, "var/lib/dpkg")


def parse_dpkg_search(output: str) -> str:
    """``coreutils: /bin/sleep`` -> ``coreutils``; ``a, b: /x`` -> ``a``;
    ``libc6:amd64: /lib/...`` -> ``libc6:amd64``."""
    lines = [ln for ln in output.strip().splitlines() if not ln.startswith("diversion by")]
    packages = (lines or [""])[0].rsplit(": ", 1)[0]
    return packages.split(",")[0].strip()


def usrmerge_aliases(path: str) -> list[str]:
    aliases = [path]
    for short in ("/bin/", "/sbin/", "/lib/", "/lib64/"):
        if path.startswith("/usr" + short):
            aliases.append(path[len("/usr") :])
        elif path.startswith(short):
            aliases.append("/usr" + path)
    return aliases


def dpkg_md5(package: str, path: str, root: str = "/") -> str | None:
    """The MD5 dpkg recorded for the file, or None (no record: a conffile, a file the
    package's scripts made)."""
    info = os.path.join(_admindir(root), "info")
    name = package
    arch_less = package.split(":", 1)[0]
    wanted = {p.lstrip("/") for p in usrmerge_aliases(path)}
    for candidate in (f"{name}.md5sums", f"{arch_less}.md5sums", *_arch_files(info, arch_less)):
        text = _read(os.path.join(info, candidate))
        if text is None:
            continue
        for line in text.splitlines():
            digest, _, listed = line.partition("  ")
            if listed.strip() in wanted:
                return digest.strip().lower()
    return None


def _arch_files(info: str, package: str) -> list[str]:
    try:
        return [
            n for n in os.listdir(info) if n.startswith(f"{package}:") and n.endswith(".md5sums")
        ]
    except OSError:
        return []


def rpm_verify(path: str) -> bool | None:
    """rpm's own check of the file: True (unchanged), False (its digest differs), None (no
    answer)."""
    out = _run(["rpm", "-Vf", "--nodeps", "--noscripts", path], ok_codes=(0, 1))
    if out is None:
        return None
    return parse_rpm_verify(out, path)


def parse_rpm_verify(output: str, path: str) -> bool:
    """``rpm -V`` lists only what changed (``S.5....T.  /usr/bin/x``): the file is
    unchanged unless its line shows a digest (``5``) or size (``S``) change."""
    for line in output.splitlines():
        flags, _, listed = line.partition(" ")
        if listed.strip().split()[-1:] == [path] and ("5" in flags[:9] or "S" in flags[:1]):
            return False
    return True


def _read(path: str) -> str | None:
    try:
        fd, info = open_target(Target(path))
    except Exception:
        return None
    try:
        if info.st_size > MAX_MD5SUMS:
            return None
        return b"".join(chunks(fd, Deadline(), MAX_MD5SUMS)).decode("utf-8", "replace")
    except OSError:
        return None
    finally:
        os.close(fd)


def _run(argv: list[str], ok_codes: tuple[int, ...] = (0,)) -> str | None:
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
    if result.returncode not in ok_codes:
        return None
    return result.stdout if result.stdout.strip() or result.returncode == 0 else None
