"""The configuration: a TOML file plus environment overrides, checked strictly against
the keys the parts declare (:mod:`quintd.part_settings`).

One module a job: :mod:`~quintd.config.locate` (which file, which directories),
:mod:`~quintd.config.schema` (the file's schema, made from the parts' declarations),
:mod:`~quintd.config.secrets` (the token), :mod:`~quintd.config.problems` (errors that
name the file, the line and the key: exit 78), :mod:`~quintd.config.load` (all of it,
in order), :mod:`~quintd.config.render` (``config show``, ``config schema``, the README's
tables).
"""

from __future__ import annotations

from quintd.config.load import LoadedConfig, load_config
from quintd.config.locate import find_config_file, locate_daemon, running_as_root
from quintd.config.render import as_dict, json_schema, render_config
from quintd.config.schema import config_keys, file_model, validate
from quintd.shipper import DEFAULT_ENDPOINT

__all__ = [
    "DEFAULT_ENDPOINT",
    "LoadedConfig",
    "as_dict",
    "config_keys",
    "file_model",
    "find_config_file",
    "json_schema",
    "load_config",
    "locate_daemon",
    "render_config",
    "running_as_root",
    "validate",
]
