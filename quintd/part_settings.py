"""How a part declares its settings: one frozen pydantic model per part, beside the code
that uses it, each field declared once with its default, bounds, meaning, and, for a
configuration key, where it lives in the file, whether a reload changes it and which
environment variable overrides it.

Everything else is made from these declarations: the configuration file's schema and its
errors (``quintd/config/``), ``config show`` and ``config schema``, the daemon's settings
(:func:`quintd.settings.build_settings`), what a reload may change, and the README's
tables of keys (``python -m quintd.config --write``, checked by a test).

To add a configuration key: add a field to the part's settings model with
:func:`setting` (``file="table.key"``), use it in the part, test it, and run
``python -m quintd.config --write`` to refresh the README.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic.fields import FieldInfo

_META = "x-quintd"  # where a field's declaration keeps what pydantic has no word for


class PartSettings(BaseModel):
    """A part's settings: immutable, strict (``"10"`` is no number), nothing unknown."""

    model_config = ConfigDict(
        frozen=True,
        extra="forbid",
        strict=True,
        allow_inf_nan=False,
        arbitrary_types_allowed=True,
    )


def setting(
    default: Any,
    *,
    doc: str,
    file: str | None = None,
    reload: bool = True,
    env: str | None = None,
    shown: str | None = None,
    key: str | None = None,
    **constraints: Any,
) -> Any:
    """One setting. ``file``: its key in the configuration file (``"table.key"``), None
    for a value the daemon derives or fixes itself; ``reload``: whether SIGHUP changes it
    (else it waits for a restart); ``env``: the environment variable that overrides it;
    ``shown``: its default as the README says it (when the value alone does not tell);
    ``key``: the configuration key a derived setting comes from (for messages: a resolved
    path); ``constraints``: pydantic's (``gt``, ``le``, ``min_length``...)."""
    meta: dict[str, Any] = {
        "file": file,
        "reload": reload,
        "env": env,
        "shown": shown,
        "key": key or file,
    }
    extra: Any = {_META: meta}
    return Field(default, description=doc, json_schema_extra=extra, **constraints)


@dataclass(frozen=True)
class FileKey:
    """A setting that is a key of the configuration file."""

    table: str
    name: str
    part: type[PartSettings]
    field: str  # its name in the part's model
    info: FieldInfo

    @property
    def path(self) -> str:
        return f"{self.table}.{self.name}"

    @property
    def doc(self) -> str:
        return self.info.description or ""

    @property
    def default(self) -> Any:
        return self.info.default

    @property
    def reload(self) -> bool:
        return bool(_meta(self.info).get("reload", True))

    @property
    def env(self) -> str | None:
        value = _meta(self.info).get("env")
        return str(value) if value else None

    @property
    def shown_default(self) -> str:
        """The default as a reader should see it."""
        shown = _meta(self.info).get("shown")
        if shown:
            return str(shown)
        value = self.default
        if value is None:
            return "none"
        if isinstance(value, bool):
            return f"`{str(value).lower()}`"
        return f"`{value}`"


def file_keys(parts: Iterable[type[PartSettings]]) -> list[FileKey]:
    """The configuration keys the parts declare, in declaration order."""
    found = []
    for part in parts:
        for name, info in part.model_fields.items():
            where = _meta(info).get("file")
            if where:
                table, _, key = str(where).partition(".")
                found.append(FileKey(table, key, part, name, info))
    return found


def declared(info: FieldInfo) -> dict[str, Any]:
    """What a field's declaration says beyond pydantic: file, reload, env, shown, key."""
    return _meta(info)


def _meta(info: FieldInfo) -> dict[str, Any]:
    extra = info.json_schema_extra
    if isinstance(extra, dict):
        meta = extra.get(_META)
        if isinstance(meta, dict):
            return meta
    return {}
