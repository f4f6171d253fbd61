"""Linux has no code signing: the identity is the package that installed the code the
process runs, checked against what the machine recorded of it.

In order (the first that owns the file wins):

- ``deb:<package>`` / ``rpm:<package>``: dpkg or rpm owns it (system trees only); checked
  against dpkg's md5sums / ``rpm -V``;
- ``npm:<package>``: an npm package (the one the user installed: a platform package's
  owner); checked against its tarball in the npm cache (npm.py);
- ``pypi:<dist>``: a Python distribution (pip, pipx, uv tool); its ``RECORD``'s sha256;
- ``brew:<formula>``: a Homebrew keg; nothing to check (a receipt, no digest);
- ``snap:<name>``: a snap; the store's assertions are not read yet;
- ``claude-code-installer:claude-code``: Claude Code's native installer; no record on disk;
- ``sha256:<hex>``: nobody owns it: the file itself.

A package id is prefixed ``invalid:`` when the record and the file disagree (a copy of a
real package with one file changed is never that package) and ``unverified:`` when there
is no record to check. Interpreters are never the identity: the scanner examines the
script they run. The version stays local (``quintd scan``): a rule written for an agent
holds across its releases.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pwd
from dataclasses import dataclass

from quintd.signing.examine import Deadline, Refused, Target, chunks, open_target
from quintd.signing.info import SigningInfo
from quintd.signing.npm import (
    DEFAULT_REGISTRY,
    NpmPackage,
    Verdict,
    find_package,
    installed_by,
    verify,
)
from quintd.signing.pypi import find_distribution
from quintd.signing.system_packages import (
    dpkg_md5,
    package_owner,
    rpm_verify,
)

CLAUDE_VERSIONS = os.sep + os.path.join(".local", "share", "claude", "versions") + os.sep


@dataclass(frozen=True)
class Examined:
    path: str  # the file's path, as found (for the package walk)
    sha256: str
    size: int
    owner: int  # the file's owner (whose npm cache recorded it)
    target: Target  # how it was opened (to read it again for dpkg's MD5)


class LinuxIdentity:
    """The Linux backend. ``root``: the system's root (a test's own image of dpkg's
    database); ``npm_registry``: whose tarball URLs the npm cache is keyed by."""

    def __init__(self, root: str = "/", npm_registry: str = DEFAULT_REGISTRY) -> None:
        self.root = root
        self.registry = npm_registry

    def __call__(self, target: Target) -> SigningInfo:
        deadline = Deadline()
        try:
            examined = self._examine(target, deadline)
            return self._identify(examined, target, deadline)
        except Refused as refusal:
            return SigningInfo(signing_id=None, source="refused", detail=refusal.reason)

    def _examine(self, target: Target, deadline: Deadline) -> Examined:
        fd, info = open_target(target)
        try:
            sha = hashlib.sha256()
            for chunk in chunks(fd, deadline):
                sha.update(chunk)
        except OSError as exc:
            raise Refused("cannot be read", str(exc)) from exc
        finally:
            os.close(fd)
        path = target.path
        if target.through_kernel:
            with contextlib.suppress(OSError):
                path = os.readlink(target.open_path).removesuffix(" (deleted)")
        return Examined(path, sha.hexdigest(), info.st_size, info.st_uid, target)

    def _identify(self, file: Examined, target: Target, deadline: Deadline) -> SigningInfo:
        system = self._system_package(file)
        if system is not None:
            return system
        found = find_package(file.path)
        if found is not None:
            return self._npm(file, found, target, deadline)
        dist = find_distribution(file.path, deadline)
        if dist is not None:
            if dist.recorded_sha256 is None:
                verified: bool | None = None
            else:
                verified = dist.recorded_sha256 == file.sha256
            return _package("pypi", dist.name, dist.version, verified, "RECORD")
        keg = _brew_formula(file.path)
        if keg is not None:
            return _package("brew", keg[0], keg[1], None, "a receipt, no digest")
        snap = _snap(file.path)
        if snap is not None:
            return _package("snap", snap, None, None, "assertions not read")
        if CLAUDE_VERSIONS in file.path:
            version = os.path.basename(file.path)
            return _package("claude-code-installer", "claude-code", version, None, "no record")
        return SigningInfo(signing_id=f"sha256:{file.sha256}", source="sha256", detail=None)

    def _system_package(self, file: Examined) -> SigningInfo | None:
        real = file.path
        if self.root != "/" and real.startswith(self.root.rstrip("/") + "/"):
            real = real[len(self.root.rstrip("/")) :]
        owner = package_owner(real, self.root)
        if owner is None:
            return None
        kind, _, name = owner.partition(":")
        if kind == "deb":
            recorded = dpkg_md5(name, real, self.root)
            verified = None if recorded is None else recorded == _md5(file.target)
            return _package("deb", name, None, verified, "dpkg's md5sums")
        return _package("rpm", name, None, rpm_verify(real), "rpm -V")

    def _npm(
        self, file: Examined, found: NpmPackage, target: Target, deadline: Deadline
    ) -> SigningInfo:
        owner = installed_by(found)
        verdict = Verdict(owner, None, "no npm cache found")
        for cache in _npm_caches(target, file.owner):
            verdict = verify(
                file.path, file.sha256, file.size, found, owner, cache, self.registry, deadline
            )
            if verdict.verified is not None:
                break
        return _package("npm", owner.name, owner.version, verdict.verified, verdict.detail)


def _md5(target: Target) -> str:
    """The file's MD5 (dpkg records MD5s; only system files are checked with it)."""
    fd, _ = open_target(target)
    try:
        md5 = hashlib.md5(usedforsecurity=False)
        for chunk in chunks(fd, Deadline()):
            md5.update(chunk)
        return md5.hexdigest()
    except OSError as exc:
        raise Refused("cannot be read", str(exc)) from exc
    finally:
        os.close(fd)


def _package(
    kind: str, name: str, version: str | None, verified: bool | None, how: str
) -> SigningInfo:
    ident = f"{kind}:{name}"
    if verified is False:
        signing_id, state = f"invalid:{ident}", "differs from"
    elif verified is None:
        signing_id, state = f"unverified:{ident}", "no record:"
    else:
        signing_id, state = ident, "matches"
    detail = how if how.startswith(("matches", "differs", "in none", "no ")) else f"{state} {how}"
    return SigningInfo(
        signing_id=signing_id,
        source=kind,
        identifier=name,
        version=version,
        valid=verified,
        detail=detail,
    )


def _npm_caches(target: Target, file_owner: int) -> list[str]:
    """Where npm may have kept the package's tarball: the process's own ``npm_config_cache``
    or home, and the home of the user who owns the installed file."""
    found = list(target.npm_caches)
    try:
        home = pwd.getpwuid(file_owner).pw_dir
        found.append(os.path.join(home, ".npm"))
    except (KeyError, OSError):
        pass
    out = []
    for cache in found:
        if cache and cache not in out and os.path.isdir(os.path.join(cache, "_cacache")):
            out.append(cache)
    return out


def _brew_formula(path: str) -> tuple[str, str | None] | None:
    parts = path.split(os.sep)
    if "Cellar" not in parts:
        return None
    i = parts.index("Cellar")
    if len(parts) <= i + 2:
        return None
    keg = os.sep.join(parts[: i + 3])
    if not os.path.isfile(os.path.join(keg, "INSTALL_RECEIPT.json")):
        return None
    return parts[i + 1], parts[i + 2]


def _snap(path: str) -> str | None:
    parts = path.split(os.sep)
    if len(parts) > 3 and parts[1] == "snap" and parts[2]:
        return parts[2]
    return None
