"""The configuration file's schema, made from the parts' declarations: one table model per
``[table]``, a list of ``[[platforms]]`` entries, all strict (TOML's types as they are:
``"10"`` is no number, an integer is one), nothing unknown, no infinity or NaN.

The keys are the fields the parts declare with ``file="table.key"``
(:mod:`quintd.part_settings`); the credentials (:mod:`quintd.config.secrets`) and the
directories (:mod:`quintd.config.locate`) are declared there, the signatures here.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    TypeAdapter,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic.fields import FieldInfo

from quintd.part_settings import FileKey, PartSettings, file_keys
from quintd.platforms import BUILTIN_PLATFORMS, Platform, SigningRule

STRICT = ConfigDict(frozen=True, extra="forbid", strict=True, allow_inf_nan=False)
LOOSE_SEQUENCE = Field(default=(), strict=False)  # TOML arrays are lists: taken as tuples


def _no_empty(values: tuple[str, ...]) -> tuple[str, ...]:
    if any(not value for value in values):
        raise ValueError("empty strings match everything; remove them")
    return values


Strings = Annotated[tuple[str, ...], AfterValidator(_no_empty)]


class SigningEntry(BaseModel):
    model_config = STRICT
    identifier: str = Field(min_length=1)
    team_id: str = Field(min_length=1)


class PlatformEntry(BaseModel):
    """A signature table entry: the same fields as the built-in ones (quintd/platforms.py)."""

    model_config = STRICT
    id: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")
    names: Strings = LOOSE_SEQUENCE
    path_fragments: Strings = LOOSE_SEQUENCE
    script_fragments: Strings = LOOSE_SEQUENCE
    signing: tuple[SigningEntry, ...] = LOOSE_SEQUENCE
    helper_args: Strings = LOOSE_SEQUENCE
    helper_paths: Strings = LOOSE_SEQUENCE

    @model_validator(mode="after")
    def _useful(self) -> PlatformEntry:
        if not (self.names or self.path_fragments or self.script_fragments or self.signing):
            raise ValueError(
                "needs at least one of names, path_fragments, script_fragments, signing"
            )
        return self

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


def _unique(platforms: tuple[PlatformEntry, ...]) -> tuple[PlatformEntry, ...]:
    ids = [p.id for p in platforms]
    repeated = sorted({i for i in ids if ids.count(i) > 1})
    if repeated:
        raise ValueError(f"platform ids must be unique (repeated: {', '.join(repeated)})")
    return platforms


Platforms = Annotated[tuple[PlatformEntry, ...], AfterValidator(_unique)]


def merge_platforms(custom: tuple[PlatformEntry, ...]) -> tuple[Platform, ...]:
    """Config entries first (they win a tie), replacing built-ins with the same id."""
    own = tuple(p.to_platform() for p in custom)
    replaced = {p.id for p in own}
    return own + tuple(p for p in BUILTIN_PLATFORMS if p.id not in replaced)


def file_parts() -> tuple[type[PartSettings], ...]:
    """Every model that declares configuration keys, in the order the file lists them."""
    from quintd.config.locate import PathsFile
    from quintd.config.secrets import Credentials
    from quintd.settings import PARTS

    delivery, *others = PARTS
    return (delivery, Credentials, *others, PathsFile)


@functools.cache
def all_file_keys() -> tuple[FileKey, ...]:
    """Every key of the file, tables in a stable order (cloud first, as the README)."""
    keys = file_keys(file_parts())
    order = ["cloud", "scan", "sessions", "queue", "paths", "log"]
    rank = {table: n for n, table in enumerate(order)}
    return tuple(sorted(keys, key=lambda k: rank.get(k.table, len(order))))


def _file_field(key: FileKey) -> tuple[Any, FieldInfo]:
    """The key's field in its table: the part's type and constraints, its default."""
    info = FieldInfo.merge_field_infos(key.info, json_schema_extra=None)
    annotation = key.part.model_fields[key.field].annotation
    if annotation is Path or annotation == (Path | None):
        info = FieldInfo.merge_field_infos(info, strict=False)  # TOML gives a string
    return annotation, info


@functools.cache
def file_model() -> type[BaseModel]:
    """The whole file: one model per table, ``[[platforms]]``."""
    tables: dict[str, dict[str, Any]] = {}
    for key in all_file_keys():
        tables.setdefault(key.table, {})[key.name] = _file_field(key)
    fields: dict[str, Any] = {"platforms": (Platforms, LOOSE_SEQUENCE)}
    for table, keys in tables.items():
        model = create_model(f"{table.title()}Table", __config__=STRICT, **keys)
        fields[table] = (model, Field(default_factory=model, description=f"[{table}]"))
    return create_model("ConfigFile", __config__=STRICT, **fields)


def config_keys() -> dict[str, tuple[str, ...]]:
    """Every key of the file, by table (``[[platforms]]`` aside)."""
    out: dict[str, list[str]] = {}
    for key in all_file_keys():
        out.setdefault(key.table, []).append(key.name)
    return {table: tuple(names) for table, names in out.items()}


def validate(data: Any) -> Any:
    """The configuration a parsed TOML document describes (an instance of
    :func:`file_model`); raises pydantic's ValidationError with every problem."""
    return file_model().model_validate(data)


def validate_override(key: FileKey, raw: str) -> Any:
    """An environment variable's text as the key's value (lax: it is text; a choice in
    any case)."""
    annotation, info = _file_field(key)
    value: Any = raw.strip()
    if isinstance(info.default, str) and re.fullmatch(r"[A-Za-z]+", value):
        value = value.lower()  # QUINTD_LOG_LEVEL=DEBUG
    target: Any = Annotated[annotation, info]
    adapter: TypeAdapter[Any] = TypeAdapter(target)
    return adapter.validate_python(value, strict=False)


__all__ = [
    "PlatformEntry",
    "ValidationError",
    "all_file_keys",
    "config_keys",
    "file_model",
    "merge_platforms",
    "validate",
    "validate_override",
]
