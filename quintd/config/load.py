"""Loading the configuration: the file found (:mod:`quintd.config.locate`), parsed as TOML,
checked against the schema the parts declare (:mod:`quintd.config.schema`), the
environment's overrides applied, the token resolved (:mod:`quintd.config.secrets`) and the
directories fixed. Every problem is a :class:`~quintd.errors.ConfigError` naming the file,
the line and the key (:mod:`quintd.config.problems`); ``quintd`` exits 78 on it.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

import quintd.config.locate as locate
import quintd.config.problems as problems
import quintd.config.schema as schema
import quintd.config.secrets as secrets
from quintd.errors import ConfigError
from quintd.platforms import Platform


@dataclass(frozen=True)
class LoadedConfig:
    """The effective configuration plus what the daemon derives from it."""

    config: Any  # the file, checked: an instance of schema.file_model()
    source: Path | None  # None: built-in defaults, no file
    token: str | None  # resolved from env, file or token_file; never log it
    state_dir: Path
    runtime_dir: Path
    # Not errors, but worth saying (logged at start and reload, printed by `config check`).
    warnings: tuple[str, ...] = ()

    def value(self, table: str, key: str) -> Any:
        """One key's effective value."""
        return getattr(getattr(self.config, table), key)

    @property
    def endpoint(self) -> str:
        return str(self.value("cloud", "endpoint"))

    @property
    def platforms(self) -> tuple[Platform, ...]:
        return schema.merge_platforms(self.config.platforms)

    @property
    def socket_path(self) -> Path:
        return self.runtime_dir / "quintd.sock"

    @property
    def database_path(self) -> Path:
        return self.state_dir / "quintd.db"

    @property
    def lock_path(self) -> Path:
        return self.state_dir / "quintd.lock"


def load_config(
    explicit: str | None = None,
    environ: locate.Environ | None = None,
    *,
    as_root: bool | None = None,
    system_path: Path = locate.SYSTEM_CONFIG_PATH,
    user_dir: Path | None = None,
) -> LoadedConfig:
    env = os.environ if environ is None else environ
    root = locate.running_as_root() if as_root is None else as_root
    source = locate.find_config_file(
        explicit, env, as_root=root, system_path=system_path, user_dir=user_dir
    )
    text = ""
    data: dict[str, Any] = {}
    if source is not None:
        text = locate.read_text(source)
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{source}: invalid TOML: {exc}") from None
    try:
        config = schema.validate(data)
    except ValidationError as exc:
        raise ConfigError(problems.describe(exc, text, source)) from None
    config = _apply_env_overrides(config, env)
    token = secrets.resolve_token(config.cloud.token, config.cloud.token_file, env, source)
    state_dir, runtime_dir = locate.resolve_dirs(
        config.paths.state_dir, config.paths.runtime_dir, env, root, source
    )
    locate.check_dirs(state_dir, runtime_dir, source)
    warnings = secrets.inline_token_warning(
        config.cloud.token is not None, source, problems.find_key_line(text, ["cloud", "token"])
    )
    return LoadedConfig(config, source, token, state_dir, runtime_dir, warnings)


def _apply_env_overrides(config: Any, env: locate.Environ) -> Any:
    """The keys declared with an environment variable (``QUINTD_ENDPOINT``,
    ``QUINTD_LOG_LEVEL``...), each checked like the key itself."""
    for key in schema.all_file_keys():
        raw = env.get(key.env) if key.env else None
        if not raw:
            continue
        try:
            value = schema.validate_override(key, raw)
        except ValidationError as exc:
            reason = problems.describe(exc, "", None).split(": ", 2)[-1]
            raise ConfigError(f"{key.env} (environment): {key.path}: {reason}") from None
        table = getattr(config, key.table).model_copy(update={key.name: value})
        config = config.model_copy(update={key.table: table})
    return config
