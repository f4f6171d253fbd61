"""npm: which package installed a file, and whether the file is what that package shipped.

- The package: the nearest ``package.json`` above the file, in a directory that is a
  package of a ``node_modules`` tree (a global prefix, nvm's ``lib/node_modules``, a
  project's, npx's cache ``_npx/<hash>/node_modules``).
- The package the user installed: a platform package (``@openai/codex-linux-x64``, which
  holds Codex's native binary) is an optional dependency of the package that names it
  (``@openai/codex``), nested in that package's ``node_modules`` (global installs) or
  beside it (a project's, where ``node_modules/.package-lock.json`` says who needs it).
- The record: the package's tarball as npm downloaded it, in the user's npm cache
  (``_cacache``), found by its ``integrity`` (from ``.package-lock.json``, else the cache's
  own index for the registry's tarball URL). The tarball is checked against that
  integrity, and the file against the tarball's entry at the same place in the package
  (or, for a binary an install script linked into place, the same bytes in one of the
  package's platform packages).

What that proves: the file is byte for byte what the tarball the user's npm cache holds for
that package had. The lockfile, the cache and the package directory are the user's: a user
who crafts all three can fake a package of any name; a copy of a real package with one
file changed cannot pass.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import PurePosixPath
from typing import Any

from quintd.signing.examine import Deadline, Refused, Target, chunks, open_target

MAX_PACKAGE_JSON = 1024 * 1024
MAX_LOCKFILE = 32 * 1024 * 1024
MAX_INDEX_FILE = 4 * 1024 * 1024
MAX_TARBALL = 512 * 1024 * 1024
MAX_UNPACKED = 2 * 1024 * 1024 * 1024  # read from one tarball, at most
_MAX_LEVELS = 24
DEFAULT_REGISTRY = "https://registry.npmjs.org/"


@dataclass(frozen=True)
class NpmPackage:
    directory: str  # the package's directory
    name: str  # as its package.json says (an alias's directory is named otherwise)
    version: str | None
    optional: tuple[str, ...] = ()  # its optionalDependencies' names

    @property
    def installed_as(self) -> str:
        """The name npm installed it under: its directory's (``@openai/codex-linux-x64``
        for an alias of ``@openai/codex@0.171.0-linux-x64``)."""
        base = os.path.basename(self.directory)
        scope = os.path.basename(os.path.dirname(self.directory))
        return f"{scope}/{base}" if scope.startswith("@") else base

    @property
    def modules(self) -> str:
        """The node_modules directory that holds it."""
        parent = os.path.dirname(self.directory)
        return os.path.dirname(parent) if os.path.basename(parent).startswith("@") else parent


@dataclass
class Verdict:
    package: NpmPackage  # what the user installed (the identity)
    verified: bool | None  # True: matches the record; False: differs; None: no record
    detail: str = ""
    checked: list[str] = field(default_factory=list)


def read_json(path: str, cap: int) -> Any:
    """A JSON file read safely (no link, regular, capped), or None."""
    try:
        fd, info = open_target(Target(path))
    except Refused:
        return None
    try:
        if info.st_size > cap:
            return None
        raw = b"".join(chunks(fd, Deadline(), cap))
    except (OSError, Refused):
        return None
    finally:
        os.close(fd)
    try:
        return json.loads(raw)
    except (ValueError, RecursionError):
        return None


def _in_node_modules(directory: str) -> bool:
    parent = os.path.dirname(directory)
    if os.path.basename(parent) == "node_modules":
        return True
    return os.path.basename(parent).startswith("@") and (
        os.path.basename(os.path.dirname(parent)) == "node_modules"
    )


def package_at(directory: str) -> NpmPackage | None:
    data = read_json(os.path.join(directory, "package.json"), MAX_PACKAGE_JSON)
    if not isinstance(data, dict) or not isinstance(data.get("name"), str):
        return None
    version = data.get("version")
    optional = data.get("optionalDependencies")
    return NpmPackage(
        directory=directory,
        name=data["name"],
        version=version if isinstance(version, str) else None,
        optional=tuple(k for k in optional if isinstance(k, str))
        if isinstance(optional, dict)
        else (),
    )


def find_package(path: str) -> NpmPackage | None:
    """The package of a node_modules tree that holds ``path``."""
    directory = os.path.dirname(path)
    for _ in range(_MAX_LEVELS):
        if "node_modules" not in directory.split(os.sep):
            return None
        if _in_node_modules(directory):
            found = package_at(directory)
            if found is not None:
                return found
        parent = os.path.dirname(directory)
        if parent == directory:
            return None
        directory = parent
    return None


def installed_by(package: NpmPackage) -> NpmPackage:
    """The package the user installed: ``package`` itself, or the one that has it as an
    optional (platform) dependency."""
    # Nested: <owner>/node_modules/<package>
    owner_dir = os.path.dirname(package.modules)
    if _in_node_modules(owner_dir):
        owner = package_at(owner_dir)
        if owner is not None and package.installed_as in owner.optional:
            return owner
    # Hoisted: node_modules/<owner> beside node_modules/<package>
    lock = _lockfile(package.modules)
    if lock is not None:
        for key, entry in lock.items():
            if not isinstance(entry, dict) or "node_modules/" not in key:
                continue
            optional = entry.get("optionalDependencies")
            if isinstance(optional, dict) and package.installed_as in optional:
                owner_dir = os.path.join(os.path.dirname(package.modules), key)
                if os.path.dirname(_modules_of(owner_dir)) == os.path.dirname(package.modules):
                    owner = package_at(owner_dir)
                    if owner is not None:
                        return owner
    return package


def _modules_of(directory: str) -> str:
    parent = os.path.dirname(directory)
    return os.path.dirname(parent) if os.path.basename(parent).startswith("@") else parent


def _lockfile(modules: str) -> dict[str, Any] | None:
    data = read_json(os.path.join(modules, ".package-lock.json"), MAX_LOCKFILE)
    if isinstance(data, dict) and isinstance(data.get("packages"), dict):
        packages: dict[str, Any] = data["packages"]
        return packages
    return None


def integrity_of(package: NpmPackage, cache: str, registry: str) -> str | None:
    """The package's tarball integrity: from the lockfile beside it, else from the npm
    cache's index for the registry's tarball URL."""
    lock = _lockfile(package.modules)
    if lock is not None:
        top = os.path.dirname(package.modules)
        key = os.path.relpath(package.directory, top).replace(os.sep, "/")
        entry = lock.get(key)
        if isinstance(entry, dict) and entry.get("version") == package.version:
            value = entry.get("integrity")
            if isinstance(value, str):
                return value
    if package.version is None:
        return None
    short = package.name.rsplit("/", 1)[-1]
    url = f"{registry.rstrip('/')}/{package.name}/-/{short}-{package.version}.tgz"
    return _cache_index(cache, f"make-fetch-happen:request-cache:{url}")


def _cache_index(cache: str, key: str) -> str | None:
    digest = hashlib.sha256(key.encode()).hexdigest()
    path = os.path.join(cache, "_cacache", "index-v5", digest[:2], digest[2:4], digest[4:])
    try:
        fd, info = open_target(Target(path))
    except Refused:
        return None
    try:
        if info.st_size > MAX_INDEX_FILE:
            return None
        raw = b"".join(chunks(fd, Deadline(), MAX_INDEX_FILE))
    except (OSError, Refused):
        return None
    finally:
        os.close(fd)
    found = None
    for line in raw.decode("utf-8", "replace").splitlines():
        _, _, body = line.partition("\t")
        with contextlib.suppress(ValueError):
            entry = json.loads(body)
            if isinstance(entry, dict) and entry.get("key") == key:
                value = entry.get("integrity")
                found = value if isinstance(value, str) else None  # the last line wins
    return found


def tarball_path(cache: str, integrity: str) -> tuple[str, str, str] | None:
    """(path, algorithm, hex digest) of the cached tarball with this integrity."""
    for item in integrity.split():
        algorithm, _, b64 = item.partition("-")
        if algorithm not in ("sha512", "sha384", "sha256", "sha1"):
            continue
        try:
            hexed = base64.b64decode(b64, validate=True).hex()
        except (ValueError, binascii.Error):
            continue
        path = os.path.join(cache, "_cacache", "content-v2", algorithm, hexed[:2], hexed[2:4])
        return os.path.join(path, hexed[4:]), algorithm, hexed
    return None


def entry_digests(
    cache: str, integrity: str, wanted_size: int, deadline: Deadline, entry: str | None
) -> dict[str, str] | None:
    """sha256 of the tarball's files of ``wanted_size`` bytes (``package/<path>`` -> hex),
    only ``entry`` when given; None when the tarball is missing or not what its
    integrity says."""
    found = tarball_path(cache, integrity)
    if found is None:
        return None
    path, algorithm, expected = found
    # Here, not at the top: tarfile (with its compressors) is resident memory, and most
    # machines' identities are settled by the package's own files without a tarball.
    import tarfile

    try:
        fd, info = open_target(Target(path))
    except Refused:
        return None
    try:
        if info.st_size > MAX_TARBALL:
            return None
        h = hashlib.new(algorithm)
        for chunk in chunks(fd, deadline, MAX_TARBALL):
            h.update(chunk)
        if h.hexdigest() != expected:
            return None  # the cache holds something else under this name
        os.lseek(fd, 0, os.SEEK_SET)
        with os.fdopen(os.dup(fd), "rb") as raw:
            return _digests(raw, wanted_size, deadline, entry)
    except (OSError, tarfile.TarError, EOFError):
        return None
    finally:
        os.close(fd)


def _digests(raw: Any, size: int, deadline: Deadline, entry: str | None) -> dict[str, str]:
    import tarfile  # already loaded by the caller

    out: dict[str, str] = {}
    unpacked = 0
    with tarfile.open(fileobj=raw, mode="r|gz") as archive:
        for member in archive:
            deadline.check()
            if not member.isfile() or member.size != size:
                continue
            if entry is not None and _strip(member.name) != entry:
                continue
            source = archive.extractfile(member)
            if source is None:
                continue
            h = hashlib.sha256()
            while True:
                deadline.check()
                block = source.read(1024 * 1024)
                if not block:
                    break
                unpacked += len(block)
                if unpacked > MAX_UNPACKED:
                    raise Refused("tarball too large unpacked")
                h.update(block)
            out[_strip(member.name)] = h.hexdigest()
            if entry is not None:
                break
    return out


def _strip(name: str) -> str:
    """``package/bin/x`` -> ``bin/x`` (npm tarballs put everything under one directory)."""
    parts = PurePosixPath(name).parts
    return "/".join(parts[1:]) if len(parts) > 1 else name


def verify(
    file_path: str,
    file_sha256: str,
    file_size: int,
    package: NpmPackage,
    owner: NpmPackage,
    cache: str,
    registry: str,
    deadline: Deadline,
) -> Verdict:
    """Whether the file is what ``package`` shipped (or, for a binary linked into place by
    an install script, what one of ``owner``'s platform packages shipped)."""
    verdict = Verdict(owner, None)
    relative = os.path.relpath(file_path, package.directory).replace(os.sep, "/")
    own = _digests_of(package, cache, registry, file_size, deadline, relative)
    if own is not None:
        verdict.checked.append(f"{package.name}@{package.version}")
        if own.get(relative) == file_sha256:
            verdict.verified = True
            verdict.detail = f"matches {package.name}@{package.version}'s tarball"
            return verdict
    # A binary an install script linked into place (Claude Code's bin/claude.exe) is
    # vouched for by the platform package it came from.
    for platform in _platform_packages(owner, package):
        found = _digests_of(platform, cache, registry, file_size, deadline, None)
        if found is None:
            continue
        verdict.checked.append(f"{platform.name}@{platform.version}")
        if file_sha256 in found.values():
            verdict.verified = True
            verdict.detail = f"matches {platform.name}@{platform.version}'s tarball"
            return verdict
    if own is not None:
        verdict.verified = False  # its own package's record says otherwise
        verdict.detail = "differs from the tarballs of " + ", ".join(verdict.checked)
    else:
        verdict.detail = "no tarball of the package in the npm cache"
    return verdict


def _digests_of(
    package: NpmPackage,
    cache: str,
    registry: str,
    size: int,
    deadline: Deadline,
    entry: str | None,
) -> dict[str, str] | None:
    integrity = integrity_of(package, cache, registry)
    if integrity is None:
        return None
    return entry_digests(cache, integrity, size, deadline, entry)


def _platform_packages(owner: NpmPackage, package: NpmPackage) -> list[NpmPackage]:
    found = []
    for name in owner.optional:
        for directory in (
            os.path.join(owner.directory, "node_modules", name),  # nested (global)
            os.path.join(owner.modules, name),  # hoisted (a project's)
        ):
            platform = package_at(directory) if os.path.isdir(directory) else None
            if platform is not None and platform.directory != package.directory:
                found.append(platform)
                break
    return found
