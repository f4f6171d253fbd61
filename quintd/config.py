"""Typed configuration: TOML file + environment overrides, checked strictly
(quintd/validation.py).

Lookup order for the file: ``--config PATH``, else ``$QUINTD_CONFIG``, else
``/etc/quintd/config.toml`` when running as root, else the platformdirs user
config dir. A missing default file means built-in defaults; a path that was
named explicitly must exist.

Every problem becomes a :class:`ConfigError` whose message names the file, the
key path and (where it can be found) the line, so that ``quintd`` can print it
and exit 78.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import tomllib
from collections.abc import Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any, Literal, cast

from quintd.endpoint import validate_endpoint
from quintd.errors import ConfigError
from quintd.platforms import BUILTIN_PLATFORMS, Platform, SigningRule
from quintd.validation import MISSING, Invalid, Problem, Rule, Secret, Table, check_table

APP_NAME = "quintd"
SYSTEM_CONFIG_PATH = Path("/etc/quintd/config.toml")
DEFAULT_ENDPOINT = "https://api.quintai.dev"
TOKEN_PLACEHOLDER = "<redacted>"
LOG_LEVELS = ("debug", "info", "warning", "error")

# A token travels in an HTTP header: refuse anything that could break out of it.
_TOKEN_FORBIDDEN = set("\r\n\t \x00")
_MAX_TOKEN_FILE_BYTES = 64 * 1024


# -- the file's tables: one frozen dataclass each, defaults here -------------------------


@dataclass(frozen=True)
class CloudConfig:
    endpoint: str = DEFAULT_ENDPOINT
    token: Secret | None = None
    token_file: Path | None = None
    timeout: float = 10.0
    batch_body: bool = False


@dataclass(frozen=True)
class ScanConfig:
    interval: float = 1.0
    kernel_exits: bool = True
    watches_per_user: int = 1000


@dataclass(frozen=True)
class SessionsConfig:
    idle_after: float = 120.0
    new_per_user_per_minute: int = 60


@dataclass(frozen=True)
class QueueConfig:
    batch_size: int = 100
    flush_interval: float = 1.0
    max_bytes: int = 256 * 1024 * 1024
    min_free_disk: int = 64 * 1024 * 1024
    drain_timeout: float = 5.0
    in_flight: int = 4
    start_jitter: float = 33.0


@dataclass(frozen=True)
class PathsConfig:
    state_dir: Path | None = None
    runtime_dir: Path | None = None


LogLevel = Literal["debug", "info", "warning", "error"]
LogFormat = Literal["text", "json"]


@dataclass(frozen=True)
class LogConfig:
    level: LogLevel = "info"
    format: LogFormat = "text"


@dataclass(frozen=True)
class SigningConfig:
    identifier: str
    team_id: str


@dataclass(frozen=True)
class PlatformConfig:
    """A signature table entry; the same fields as the built-in ones (quintd/platforms.py)."""

    id: str
    names: tuple[str, ...] = ()
    path_fragments: tuple[str, ...] = ()
    script_fragments: tuple[str, ...] = ()
    signing: tuple[SigningConfig, ...] = ()
    helper_args: tuple[str, ...] = ()
    helper_paths: tuple[str, ...] = ()

    def to_platform(self) -> Platform:
        return Platform(
            id=self.id,
            names=self.names,
            path_fragments=self.path_fragments,
            script_fragments=self.script_fragments,
            signing=tuple(SigningRule(s.identifier, s.team_id) for s in self.signing),
            helper_args=self.helper_args,
            helper_paths=self.helper_paths,
        )


@dataclass(frozen=True)
class Config:
    platforms: tuple[PlatformConfig, ...] = ()
    cloud: CloudConfig = CloudConfig()
    scan: ScanConfig = ScanConfig()
    sessions: SessionsConfig = SessionsConfig()
    queue: QueueConfig = QueueConfig()
    paths: PathsConfig = PathsConfig()
    log: LogConfig = LogConfig()


# -- the rules each key is checked by --------------------------------------------------


def _token_rule(value: Secret) -> Secret:
    check_token_text(value.get_secret_value())
    return value


def _useful_platform(platform: PlatformConfig) -> None:
    rules = (platform.names, platform.path_fragments, platform.script_fragments, platform.signing)
    if not any(rules):
        raise ValueError("needs at least one of names, path_fragments, script_fragments, signing")
    for values in (
        platform.names,
        platform.path_fragments,
        platform.script_fragments,
        platform.helper_args,
        platform.helper_paths,
    ):
        if any(not value for value in values):
            raise ValueError("empty strings match everything; remove them")


def _unique_platforms(platforms: tuple[PlatformConfig, ...]) -> tuple[PlatformConfig, ...]:
    ids = [p.id for p in platforms]
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise ValueError(f"platform ids must be unique (repeated: {', '.join(duplicates)})")
    return platforms


_SIGNING = Table(
    {
        "identifier": Rule("str", min_length=1, required=True),
        "team_id": Rule("str", min_length=1, required=True),
    },
    SigningConfig,
)
_PLATFORM = Table(
    {
        "id": Rule("str", pattern=r"[a-z0-9][a-z0-9._-]{0,63}", required=True),
        "names": Rule("strings"),
        "path_fragments": Rule("strings"),
        "script_fragments": Rule("strings"),
        "signing": Rule("tables", table=_SIGNING),
        "helper_args": Rule("strings"),
        "helper_paths": Rule("strings"),
    },
    PlatformConfig,
    after=_useful_platform,
)
SCHEMA = Table(
    {
        "platforms": Rule("tables", table=_PLATFORM, check=_unique_platforms),
        "cloud": Rule(
            "table",
            table=Table(
                {
                    "endpoint": Rule("str", check=validate_endpoint),
                    "token": Rule("secret", check=_token_rule),
                    "token_file": Rule("path"),
                    "timeout": Rule("float", gt=0, le=300),
                    "batch_body": Rule("bool"),
                },
                CloudConfig,
            ),
        ),
        "scan": Rule(
            "table",
            table=Table(
                {
                    "interval": Rule("float", gt=0, le=3600),
                    "kernel_exits": Rule("bool"),
                    "watches_per_user": Rule("int", ge=0, le=1_000_000),
                },
                ScanConfig,
            ),
        ),
        "sessions": Rule(
            "table",
            table=Table(
                {
                    "idle_after": Rule("float", gt=0),
                    "new_per_user_per_minute": Rule("int", ge=1, le=100_000),
                },
                SessionsConfig,
            ),
        ),
        "queue": Rule(
            "table",
            table=Table(
                {
                    "batch_size": Rule("int", ge=1, le=500),
                    "flush_interval": Rule("float", gt=0, le=3600),
                    "max_bytes": Rule("int", ge=1024 * 1024),
                    "min_free_disk": Rule("int", ge=0),
                    "drain_timeout": Rule("float", ge=0, le=300),
                    "in_flight": Rule("int", ge=1, le=32),
                    "start_jitter": Rule("float", ge=0, le=3600),
                },
                QueueConfig,
            ),
        ),
        "paths": Rule(
            "table",
            table=Table(
                {
                    "state_dir": Rule("path"),
                    "runtime_dir": Rule("path"),
                },
                PathsConfig,
            ),
        ),
        "log": Rule(
            "table",
            table=Table(
                {
                    "level": Rule("choice", choices=LOG_LEVELS),
                    "format": Rule("choice", choices=("text", "json")),
                },
                LogConfig,
            ),
        ),
    },
    Config,
)


def config_keys() -> dict[str, tuple[str, ...]]:
    """Every key of the file, by table (``[[platforms]]`` aside)."""
    return {
        name: tuple(rule.table.rules)
        for name, rule in SCHEMA.rules.items()
        if rule.kind == "table" and rule.table is not None
    }


def as_dict(value: Any) -> Any:
    """A configuration value as plain data (for `config show` and tests)."""
    if isinstance(value, Secret):
        return TOKEN_PLACEHOLDER
    if hasattr(value, "__dataclass_fields__"):
        return {f.name: as_dict(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, tuple | list):
        return [as_dict(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


def merge_platforms(custom: Sequence[PlatformConfig]) -> tuple[Platform, ...]:
    """Config entries first (they win a tie), replacing built-ins with the same id."""
    own = tuple(p.to_platform() for p in custom)
    replaced = {p.id for p in own}
    return own + tuple(p for p in BUILTIN_PLATFORMS if p.id not in replaced)


@dataclass(frozen=True)
class LoadedConfig:
    """The effective configuration plus what the daemon derives from it."""

    config: Config
    source: Path | None  # None: built-in defaults, no file
    token: str | None  # resolved from env, file or token_file; never log it
    state_dir: Path
    runtime_dir: Path
    # Not errors, but worth saying (logged at start and reload, printed by `config check`).
    warnings: tuple[str, ...] = ()

    @property
    def endpoint(self) -> str:
        return self.config.cloud.endpoint

    @property
    def platforms(self) -> tuple[Platform, ...]:
        return merge_platforms(self.config.platforms)

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "quintd.sock"

    @property
    def database_path(self) -> Path:
        return self.state_dir / "quintd.db"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "quintd.lock"


def running_as_root() -> bool:
    geteuid = getattr(os, "geteuid", None)
    return geteuid is not None and geteuid() == 0


def find_config_file(
    explicit: str | None,
    environ: dict[str, str] | os._Environ[str],
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


def load_config(
    explicit: str | None = None,
    environ: dict[str, str] | os._Environ[str] | None = None,
    *,
    as_root: bool | None = None,
    system_path: Path = SYSTEM_CONFIG_PATH,
    user_dir: Path | None = None,
) -> LoadedConfig:
    env = os.environ if environ is None else environ
    root = running_as_root() if as_root is None else as_root
    source = find_config_file(
        explicit, env, as_root=root, system_path=system_path, user_dir=user_dir
    )
    text = ""
    data: dict[str, Any] = {}
    if source is not None:
        text = _read_text(source)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    config = _validate(data, text, source)
    config = _apply_env_overrides(config, env)
    token = _resolve_token(config, env, source)
    state_dir, runtime_dir = _resolve_dirs(config, env, root, source)
    _check_dirs(state_dir, runtime_dir, source)
    warnings = _inline_token_warning(config, source, text)
    return LoadedConfig(config, source, token, state_dir, runtime_dir, warnings)


def locate_daemon(
    explicit: str | None = None,
    environ: dict[str, str] | os._Environ[str] | None = None,
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
            text = _read_text(source)
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
    config = Config(paths=PathsConfig(named["state_dir"], named["runtime_dir"]))
    state_dir, runtime_dir = _resolve_dirs(config, env, root, source)
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


def _inline_token_warning(config: Config, source: Path | None, text: str) -> tuple[str, ...]:
    """A token written in a config file that group or others can read is readable by them."""
    if source is None or config.cloud.token is None or sys.platform == "win32":
        return ()
    try:
        mode = stat.S_IMODE(source.stat().st_mode)
    except OSError:
        return ()
    if not mode & 0o044:
        return ()
    line = find_key_line(text, ["cloud", "token"])
    at = f", line {line}" if line else ""
    return (
        f"{source}{at}: cloud.token: the file is readable by group or others "
        f"(mode {mode:04o}), and so is the token; run: chmod 600 {source} "
        f"(or move the token to cloud.token_file)",
    )


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: not UTF-8 text ({exc.reason} at byte {exc.start})") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config file: {exc.strerror}") from None


def validate(data: Any) -> Config:
    """The configuration a parsed TOML document describes; raises :class:`Invalid` with
    every problem."""
    config, problems = check_table(data, SCHEMA)
    if problems:
        raise Invalid(problems)
    assert isinstance(config, Config)
    return config


def _validate(data: dict[str, Any], text: str, source: Path | None) -> Config:
    try:
        return validate(data)
    except Invalid as exc:
        raise ConfigError(_describe_problems(exc.problems, text, source)) from None


def _describe_problems(problems: list[Problem], text: str, source: Path | None) -> str:
    where = str(source) if source else "<defaults>"
    lines = []
    for problem in problems:
        loc = [str(part) for part in problem.loc]
        key = ".".join(loc) or "(the file)"
        line = find_key_line(text, loc)
        at = f", line {line}" if line else ""
        message = problem.message
        # Never echo a token back, even a malformed one.
        secret = any("token" in part for part in loc)
        shown = problem.got is not MISSING and not isinstance(problem.got, dict | list)
        if problem.kind not in ("missing", "unknown") and not secret and shown:
            message += f" (got {_short_repr(problem.got)})"
        lines.append(f"{where}{at}: {key}: {message}")
    return "\n".join(lines)


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def find_key_line(text: str, loc: list[str]) -> int | None:
    """Best-effort 1-based line of a key path in TOML text written in the usual style
    (``[table]`` and ``[[array]]`` headers, ``key = value`` lines)."""
    if not text or not loc:
        return None
    table: list[str] = []
    arrays: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            is_array = line.startswith("[[")
            name = line.strip("[]").strip()
            table = [p.strip().strip("\"'") for p in name.split(".")]
            if is_array:
                arrays[name] = arrays.get(name, -1) + 1
                table.append(str(arrays[name]))
            if table == loc or (is_array and table[:-1] == loc):
                return number
            continue
        key = line.split("=", 1)[0].strip().strip("\"'")
        path = table + [p.strip().strip("\"'") for p in key.split(".")]
        if path == loc[: len(path)] and "=" in line:
            return number
    return None


def _apply_env_overrides(config: Config, env: dict[str, str] | os._Environ[str]) -> Config:
    endpoint = env.get("QUINTD_ENDPOINT")
    if endpoint:
        try:
            validate_endpoint(endpoint)
        except ValueError as exc:
            raise ConfigError(f"QUINTD_ENDPOINT (environment): cloud.endpoint: {exc}") from None
        cloud = replace(config.cloud, endpoint=endpoint.rstrip("/"))
        config = replace(config, cloud=cloud)
    level = env.get("QUINTD_LOG_LEVEL")
    if level:
        if level.strip().lower() not in LOG_LEVELS:  # DEBUG as well as debug
            raise ConfigError(
                f"QUINTD_LOG_LEVEL (environment): log.level: must be one of "
                f"debug, info, warning, error (got {level!r})"
            )
        chosen = cast(LogLevel, level.strip().lower())
        config = replace(config, log=replace(config.log, level=chosen))
    return config


def check_token_text(token: str) -> None:
    if not token:
        raise ValueError("is empty")
    if any(ch in _TOKEN_FORBIDDEN for ch in token):
        raise ValueError("contains whitespace or control characters")
    if not (token.isascii() and token.isprintable()):
        raise ValueError("must be printable ASCII (it travels in an HTTP header)")


def _resolve_token(
    config: Config, env: dict[str, str] | os._Environ[str], source: Path | None
) -> str | None:
    where = str(source) if source else "<defaults>"
    cloud = config.cloud
    if cloud.token is not None and cloud.token_file is not None:
        raise ConfigError(f"{where}: cloud.token and cloud.token_file are both set; keep one")
    from_env = env.get("QUINTD_TOKEN")
    if from_env:
        try:
            check_token_text(from_env.strip())
        except ValueError as exc:
            raise ConfigError(f"QUINTD_TOKEN (environment): {exc}") from None
        return from_env.strip()
    if cloud.token is not None:
        return cloud.token.get_secret_value()
    if cloud.token_file is not None:
        path = cloud.token_file
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


def _resolve_dirs(
    config: Config, env: dict[str, str] | os._Environ[str], as_root: bool, source: Path | None
) -> tuple[Path, Path]:
    base = source.resolve().parent if source is not None else Path.cwd()
    state = config.paths.state_dir
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
    runtime = config.paths.runtime_dir
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


# sun_path is 108 bytes on Linux and 104 on macOS, including the NUL.
MAX_SOCKET_PATH = 103


def _check_dirs(state_dir: Path, runtime_dir: Path, source: Path | None) -> None:
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


def render_config(loaded: LoadedConfig) -> str:
    """The effective configuration as a TOML file that `config check` accepts, the token
    only as a comment (it is never printed)."""
    data = as_dict(loaded.config)
    data["paths"]["state_dir"] = str(loaded.state_dir)
    data["paths"]["runtime_dir"] = str(loaded.runtime_dir)
    token_from = None
    if loaded.token:
        if os.environ.get("QUINTD_TOKEN"):
            token_from = "$QUINTD_TOKEN"
        elif loaded.config.cloud.token_file is not None:
            token_from = "token_file"
        else:
            token_from = "this key, in the file"
    data["cloud"].pop("token")
    out = [f"# effective configuration; source: {loaded.source or 'built-in defaults'}"]
    custom = data.pop("platforms")
    for section, values in data.items():
        out.append(f"\n[{section}]")
        if section == "cloud":
            out.append(
                f'# token = "{TOKEN_PLACEHOLDER}"  (set, from {token_from}; never printed)'
                if token_from
                else "# token is not set"
            )
        for key, value in values.items():
            if value is None:
                out.append(f"# {key} is not set")
            else:
                out.append(f"{key} = {_toml_value(value)}")
    for platform in custom:
        out.append("\n[[platforms]]")
        for key, value in platform.items():
            if value:
                out.append(f"{key} = {_toml_value(value)}")
    return "\n".join(out) + "\n"


def _toml_value(value: Any) -> str:
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + "}"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    text = str(value).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{text}"'
