"""Where things are: the configuration file to load, and the daemon's state and runtime
directories (from ``[paths]``, systemd's ``STATE_DIRECTORY`` / ``RUNTIME_DIRECTORY``, or the
platform's defaults).

Lookup order for the file: ``--config PATH``, else ``$QUINTD_CONFIG``, else
``/etc/quintd/config.toml`` when running as root, else the platformdirs user config dir. A
missing default file means built-in defaults; a path that was named explicitly must exist.
"""

from __future__ import annotations

import os
import sys
import tomllib
from pathlib import Path
from typing import Annotated

from pydantic import AfterValidator

from quintd.errors import ConfigError
from quintd.part_settings import PartSettings, setting

APP_NAME = "quintd"
SYSTEM_CONFIG_PATH = Path("/etc/quintd/config.toml")
# sun_path is 108 bytes on Linux and 104 on macOS, including the NUL.
MAX_SOCKET_PATH = 103

Environ = dict[str, str] | os._Environ[str]


def _not_empty(value: Path | None) -> Path | None:
    if value is not None and not str(value):
        raise ValueError("is empty")
    return value


class PathsFile(PartSettings):
    """The ``[paths]`` keys; unset, the directories are the platform's (see
    :func:`resolve_dirs`). The daemon holds them open: they wait for a restart."""

    state_dir: Annotated[Path, AfterValidator(_not_empty)] | None = setting(
        None,
        file="paths.state_dir",
        reload=False,
        strict=False,
        shown="see below",
        doc="Database, lock file, generated machine id. A relative path is relative to the "
        "config file.",
    )
    runtime_dir: Annotated[Path, AfterValidator(_not_empty)] | None = setting(
        None,
        file="paths.runtime_dir",
        reload=False,
        strict=False,
        shown="see below",
        doc="Control socket `quintd.sock`. A relative path is relative to the config file. "
        "The socket path must fit in 103 bytes.",
    )


def running_as_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def find_config_file(
    explicit: str | None,
    environ: Environ,
    *,
    as_root: bool,
    system_path: Path = SYSTEM_CONFIG_PATH,
    user_dir: Path | None = None,
) -> Path | None:
    """Return the config file to load, or None for built-in defaults."""
    named = (explicit, "--config") if explicit else (environ.get("QUINTD_CONFIG"), "$QUINTD_CONFIG")
    if named[0]:
        path = Path(named[0])
        if path.is_dir():
            raise ConfigError(
                f"{path}: is a directory, not a config file (named by {named[1]}); "
                f"name the file, e.g. {path / 'config.toml'}"
            )
        if not path.is_file():
            raise ConfigError(f"{path}: config file not found (named by {named[1]})")
        return path
    if as_root:
        return system_path if system_path.is_file() else None
    import platformdirs

    user_path = (user_dir or Path(platformdirs.user_config_dir(APP_NAME))) / "config.toml"
    return user_path if user_path.is_file() else None


def read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def locate_daemon(
    explicit: str | None = None,
    environ: Environ | None = None,
    *,
    as_root: bool | None = None,
) -> tuple[Path | None, Path, Path]:
    """(config file, state dir, runtime dir) of a daemon started with this configuration,
    when the file no longer loads (a broken edit): the paths as far as the file still
    says them, else the defaults. For ``status``, which must find the daemon exactly then."""
    env = os.environ if environ is None else environ
    root = running_as_root() if as_root is None else as_root
    try:
        source = find_config_file(explicit, env, as_root=root)
    except ConfigError:
        source = None
    named: dict[str, Path | None] = {"state_dir": None, "runtime_dir": None}
    if source is not None:
        try:
            text = read_text(source)
        except ConfigError:
            text = ""
        try:
            paths = tomllib.loads(text).get("paths", {})
        except tomllib.TOMLDecodeError:
            paths = _paths_by_lines(text)  # not TOML any more: read what still can be
        for key in named:
            value = paths.get(key) if isinstance(paths, dict) else None
            if isinstance(value, str) and value:
                named[key] = Path(value)
    state_dir, runtime_dir = resolve_dirs(
        named["state_dir"], named["runtime_dir"], env, root, source
    )
    return source, state_dir, runtime_dir


def _paths_by_lines(text: str) -> dict[str, str]:
    """``state_dir = "..."`` and ``runtime_dir = "..."`` of a [paths] table, line by line,
    from a file that is no longer valid TOML (only plain one-line strings)."""
    found: dict[str, str] = {}
    section = ""
    for raw in text.splitlines():
        line = raw.strip()
        if line.startswith("["):
            section = line.strip("[] \t")
            continue
        key, sep, value = line.partition("=")
        key, value = key.strip(), value.strip()
        if section != "paths" or not sep or key not in ("state_dir", "runtime_dir"):
            continue
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            found[key] = value[1:-1]
    return found


def resolve_dirs(
    state: Path | None, runtime: Path | None, env: Environ, as_root: bool, source: Path | None
) -> tuple[Path, Path]:
    base = source.resolve().parent if source is not None else Path.cwd()
    if state is not None:
        # Relative to the config file, like token_file: never to wherever quintd was started.
        state = base / state.expanduser()
    if state is None and env.get("STATE_DIRECTORY"):  # set by systemd's StateDirectory=
        state = Path(env["STATE_DIRECTORY"].split(":")[0])
    if state is None:
        if as_root and sys.platform == "darwin":
            state = Path("/Library/Application Support/quintd")
        elif as_root and sys.platform != "win32":
            state = Path("/var/lib/quintd")
        else:
            import platformdirs

            state = Path(platformdirs.user_state_dir(APP_NAME))
    if runtime is not None:
        runtime = base / runtime.expanduser()
    if runtime is None and env.get("RUNTIME_DIRECTORY"):  # set by systemd's RuntimeDirectory=
        runtime = Path(env["RUNTIME_DIRECTORY"].split(":")[0])
    if runtime is None:
        if as_root and sys.platform != "win32":
            runtime = Path("/var/run/quintd" if sys.platform == "darwin" else "/run/quintd")
        elif env.get("XDG_RUNTIME_DIR"):
            runtime = Path(env["XDG_RUNTIME_DIR"]) / APP_NAME
        else:
            # No per-user runtime dir (e.g. a login without systemd): the owner-only
            # state dir is a safer home for the socket than a guessable /tmp path.
            runtime = state
    return state.expanduser(), runtime.expanduser()


def check_dirs(state_dir: Path, runtime_dir: Path, source: Path | None) -> None:
    where = str(source) if source else "<defaults>"
    for key, path in (("paths.state_dir", state_dir), ("paths.runtime_dir", runtime_dir)):
        if path.exists() and not path.is_dir():
            raise ConfigError(f"{where}: {key}: {path} exists and is not a directory")
    socket = runtime_dir / "quintd.sock"
    if len(os.fsencode(socket)) > MAX_SOCKET_PATH:
        raise ConfigError(
            f"{where}: paths.runtime_dir: the control socket path {socket} is longer than "
            f"{MAX_SOCKET_PATH} bytes; choose a shorter directory"
        )
