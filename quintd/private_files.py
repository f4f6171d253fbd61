"""The daemon's own directories and files: never through a link, never someone else's."""

from __future__ import annotations

import errno
import os
import stat
from pathlib import Path

from quintd.errors import ConfigError


def open_private_file(path: Path) -> int:
    """Open (or create, exclusively) one of the daemon's own files: never through a link,
    only a regular file of the daemon's user with one name."""
    flags = os.O_RDWR | os.O_NOFOLLOW | os.O_CLOEXEC
    try:
        fd = os.open(path, flags)
    except FileNotFoundError:
        fd = os.open(path, flags | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise ConfigError(f"{path}: is a symbolic link; refusing to open it") from None
        raise
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_uid != os.geteuid() or info.st_nlink != 1:
        os.close(fd)
        raise ConfigError(
            f"{path}: not a regular file of this user with a single name; refusing to use it"
        )
    return fd


def ensure_private_dir(path: Path, key: str) -> None:
    """The state or runtime directory: created owner-only if missing; an existing one must
    belong to the daemon's user and be writable by nobody else. It is never changed: a
    chmod of an existing directory could open or close someone else's (``/tmp``)."""
    try:
        path.mkdir(parents=True, mode=0o700)
    except FileExistsError:
        pass
    except OSError as exc:
        raise ConfigError(f"paths.{key}: cannot create {path}: {exc.strerror}") from None
    try:
        info = os.lstat(path)
    except OSError as exc:
        raise ConfigError(f"paths.{key}: cannot use {path}: {exc.strerror}") from None
    if stat.S_ISLNK(info.st_mode):
        raise ConfigError(f"paths.{key}: {path} is a symbolic link; name the directory itself")
    if not stat.S_ISDIR(info.st_mode):
        raise ConfigError(f"paths.{key}: {path} is not a directory")
    if info.st_uid != os.geteuid():
        raise ConfigError(
            f"paths.{key}: {path} belongs to uid {info.st_uid}, not to this daemon's user "
            f"(uid {os.geteuid()}); another user could plant files in it"
        )
    mode = stat.S_IMODE(info.st_mode)
    if mode & 0o022:
        raise ConfigError(
            f"paths.{key}: {path} is writable by group or others (mode {mode:04o}); "
            f"use a directory only this user can write (quintd does not change it)"
        )
