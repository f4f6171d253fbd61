"""The deploy token: where it may come from (``$QUINTD_TOKEN``, ``cloud.token``,
``cloud.token_file``), what a token may hold (it travels in an HTTP header), and how its
file is read (the file itself, never through a link; owner-only). It never reaches a log,
an error message, ``config show`` or ``status``.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator, SecretStr

from quintd.errors import ConfigError
from quintd.part_settings import PartSettings, setting

# A token travels in an HTTP header: refuse anything that could break out of it.
_FORBIDDEN = set("\r\n\t \x00")
_MAX_TOKEN_FILE_BYTES = 64 * 1024
PLACEHOLDER = "<redacted>"


def check_token_text(token: str) -> None:
    if not token:
        raise ValueError("is empty")
    if any(ch in _FORBIDDEN for ch in token):
        raise ValueError("contains whitespace or control characters")
    if not (token.isascii() and token.isprintable()):
        raise ValueError("must be printable ASCII (it travels in an HTTP header)")


def _token_rule(value: SecretStr) -> SecretStr:
    check_token_text(value.get_secret_value())
    return value


def _path_rule(value: Path | None) -> Path | None:
    if value is not None and not str(value):
        raise ValueError("is empty")
    return value


class Credentials(PartSettings):
    """The ``[cloud]`` keys that name the token (resolved by :func:`resolve_token`)."""

    token: Annotated[SecretStr, AfterValidator(_token_rule)] | None = setting(
        None,
        file="cloud.token",
        strict=False,
        doc="Deploy token (`qt_deploy_...`), printable ASCII. Without a token, quintd still "
        "detects, tracks and queues; delivery waits until a token is configured.",
    )
    token_file: Annotated[Path, AfterValidator(_path_rule)] | None = setting(
        None,
        file="cloud.token_file",
        strict=False,
        doc="File holding the token; relative paths are relative to the config file. Refused "
        "if group or others can read it, or if it is a symlink. Set `token` or `token_file`, "
        "not both.",
    )


def resolve_token(
    token: SecretStr | None,
    token_file: Path | None,
    env: dict[str, str] | os._Environ[str],
    source: Path | None,
) -> str | None:
    """The token in force: ``$QUINTD_TOKEN``, else ``cloud.token``, else the file's."""
    where = str(source) if source else "<defaults>"
    if token is not None and token_file is not None:
        raise ConfigError(f"{where}: cloud.token and cloud.token_file are both set; keep one")
    from_env = env.get("QUINTD_TOKEN")
    if from_env:
        try:
            check_token_text(from_env.strip())
        except ValueError as exc:
            raise ConfigError(f"QUINTD_TOKEN (environment): {exc}") from None
        return from_env.strip()
    if token is not None:
        return token.get_secret_value()
    if token_file is not None:
        path = token_file
        if not path.is_absolute() and source is not None:
            path = source.parent / path
        return read_token_file(path, where)
    return None


def read_token_file(path: Path, where: str) -> str:
    prefix = f"{where}: cloud.token_file: {path}"
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0))
    except OSError as exc:
        if exc.errno in (errno.ELOOP, errno.EMLINK):
            raise ConfigError(
                f"{prefix}: is a symbolic link; quintd reads a token only from the file "
                f"itself (a link could make the root daemon read, and send, any file): "
                f"set token_file to {os.path.realpath(path)} or copy the token there"
            ) from None
        raise ConfigError(f"{prefix}: cannot open: {exc.strerror}") from None
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ConfigError(f"{prefix}: not a regular file")
        if sys.platform != "win32" and info.st_mode & 0o077:
            raise ConfigError(
                f"{prefix}: readable by group or others (mode {stat.S_IMODE(info.st_mode):04o}); "
                f"run: chmod 600 {path}"
            )
        raw = os.read(fd, _MAX_TOKEN_FILE_BYTES + 1)
    finally:
        os.close(fd)
    if len(raw) > _MAX_TOKEN_FILE_BYTES:
        raise ConfigError(f"{prefix}: too large to be a token")
    try:
        token = raw.decode("utf-8").strip()
        check_token_text(token)
    except (UnicodeDecodeError, ValueError) as exc:
        raise ConfigError(f"{prefix}: token {exc}") from None
    return token


def inline_token_warning(has_token: bool, source: Path | None, line: int | None) -> tuple[str, ...]:
    """A token written in a config file that group or others can read is readable by them."""
    if source is None or not has_token or sys.platform == "win32":
        return ()
    try:
        mode = stat.S_IMODE(source.stat().st_mode)
    except OSError:
        return ()
    if not mode & 0o044:
        return ()
    at = f", line {line}" if line else ""
    return (
        f"{source}{at}: cloud.token: the file is readable by group or others "
        f"(mode {mode:04o}), and so is the token; run: chmod 600 {source} "
        f"(or move the token to cloud.token_file)",
    )
