"""Python packages (pip, pipx, uv tool): the distribution whose ``*.dist-info/RECORD``
lists the file, with the SHA-256 it recorded for it (a console script in ``bin/``, or a
module in ``site-packages``)."""

from __future__ import annotations

import base64
import csv
import glob
import io
import os
from dataclasses import dataclass

from quintd.signing.examine import Deadline, Refused, Target, chunks, open_target

MAX_RECORD = 8 * 1024 * 1024
MAX_DISTS = 4000  # dist-info directories looked at in one site-packages
MAX_METADATA = 256 * 1024


@dataclass(frozen=True)
class Distribution:
    name: str
    version: str | None
    recorded_sha256: str | None  # hex, or None when RECORD has no hash for the file


def site_packages_for(path: str) -> list[str]:
    """Where the distribution that installed ``path`` keeps its metadata."""
    parts = path.split(os.sep)
    for i in range(len(parts) - 1, 0, -1):
        if parts[i] in ("site-packages", "dist-packages"):
            return [os.sep.join(parts[: i + 1])]
    directory = os.path.dirname(path)
    if os.path.basename(directory) == "bin":  # a console script: <prefix>/bin/<name>
        prefix = os.path.dirname(directory)
        found = glob.glob(os.path.join(glob.escape(prefix), "lib", "python3*", "site-packages"))
        return sorted(found)[:4]
    return []


def find_distribution(path: str, deadline: Deadline) -> Distribution | None:
    for site in site_packages_for(path):
        try:
            names = sorted(os.listdir(site))
        except OSError:
            continue
        infos = [n for n in names if n.endswith(".dist-info")][:MAX_DISTS]
        for info in infos:
            deadline.check()
            record = _read(os.path.join(site, info, "RECORD"), MAX_RECORD)
            if record is None:
                continue
            recorded = _recorded(record, site, path)
            if recorded is None:
                continue
            name, version = _name_version(os.path.join(site, info), info)
            return Distribution(name, version, recorded or None)
    return None


def _recorded(record: str, site: str, path: str) -> str | None:
    """The file's recorded sha256 (hex; "" when RECORD lists it without a hash), or None
    when RECORD does not list it."""
    try:
        rows = list(csv.reader(io.StringIO(record)))
    except csv.Error:
        return None
    for row in rows:
        if not row:
            continue
        listed = os.path.normpath(os.path.join(site, row[0]))
        if listed != path:
            continue
        digest = row[1] if len(row) > 1 else ""
        algorithm, _, value = digest.partition("=")
        if algorithm != "sha256" or not value:
            return ""
        try:
            return base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).hex()
        except ValueError:
            return ""
    return None


def _name_version(directory: str, info: str) -> tuple[str, str | None]:
    metadata = _read(os.path.join(directory, "METADATA"), MAX_METADATA) or ""
    name = version = None
    for line in metadata.splitlines():
        if not line.strip():
            break  # the headers end at the first empty line
        key, _, value = line.partition(":")
        if key == "Name" and name is None:
            name = value.strip()
        elif key == "Version" and version is None:
            version = value.strip()
    if name is None:
        stem = info[: -len(".dist-info")]
        name, _, version = stem.partition("-")
    return _normalise(name), version or None


def _normalise(name: str) -> str:
    """PEP 503: ``Aider_Chat`` -> ``aider-chat``."""
    out = []
    for ch in name.lower():
        out.append("-" if ch in "_." else ch)
    return "".join(out)


def _read(path: str, cap: int) -> str | None:
    try:
        fd, info = open_target(Target(path))
    except Refused:
        return None
    try:
        if info.st_size > cap:
            return None
        return b"".join(chunks(fd, Deadline(), cap)).decode("utf-8", "replace")
    except (OSError, Refused):
        return None
    finally:
        os.close(fd)
