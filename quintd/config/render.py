"""The configuration written out: ``config show`` (the effective file, the token only as
a comment), ``config schema`` (a JSON Schema of the file, for editors), and the README's
tables of keys and of restart-only keys (``python -m quintd.config --write``;
a test checks that the README holds what this makes)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, SecretStr

import quintd.config.schema as schema
from quintd.config.load import LoadedConfig
from quintd.config.secrets import PLACEHOLDER


def as_dict(value: Any) -> Any:
    """A configuration value as plain data (for `config show` and tests)."""
    if isinstance(value, SecretStr):
        return PLACEHOLDER
    if isinstance(value, BaseModel):
        return {name: as_dict(getattr(value, name)) for name in type(value).model_fields}
    if isinstance(value, tuple | list):
        return [as_dict(v) for v in value]
    if isinstance(value, Path):
        return str(value)
    return value


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
        elif loaded.value("cloud", "token_file") is not None:
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
                f'# token = "{PLACEHOLDER}"  (set, from {token_from}; never printed)'
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


def json_schema() -> dict[str, Any]:
    """A JSON Schema of the file (draft 2020-12), for editors that check TOML against one."""
    found = schema.file_model().model_json_schema(mode="validation")
    found["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    found["title"] = "quintd configuration (config.toml)"
    return found


# -- the README's tables ---------------------------------------------------------------------

KEYS_BEGIN = "<!-- config keys: made by `python -m quintd.config --write` -->"
KEYS_END = "<!-- end of config keys -->"
RESTART_BEGIN = "<!-- restart-only keys: made by `python -m quintd.config --write` -->"
RESTART_END = "<!-- end of restart-only keys -->"
_PLATFORMS_ROW = (
    '| `[[platforms]]` | none | Extra or replacement agent signatures: see "Adding or '
    'overriding platforms". |'
)


def keys_table() -> str:
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key in schema.all_file_keys():
        if key.table == "log" and _PLATFORMS_ROW not in rows:
            rows.append(_PLATFORMS_ROW)  # before [log], as the README always had it
        rows.append(f"| `[{key.table}]` `{key.name}` | {key.shown_default} | {key.doc} |")
    return "\n".join(rows)


def restart_only_list() -> str:
    keys = [key for key in schema.all_file_keys() if not key.reload]
    return "Restart-only keys: " + ", ".join(f"`{k.path}`" for k in keys) + "."


def readme_with_tables(readme: str) -> str:
    """The README with its generated blocks made anew."""
    for begin, end, body in (
        (KEYS_BEGIN, KEYS_END, keys_table()),
        (RESTART_BEGIN, RESTART_END, restart_only_list()),
    ):
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end), re.S)
        if not pattern.search(readme):
            raise ValueError(f"the README has no block {begin!r}")
        found = pattern.search(readme)
        assert found is not None
        readme = readme[: found.start()] + f"{begin}\n{body}\n{end}" + readme[found.end() :]
    return readme


def main(argv: list[str]) -> int:
    """``--write``: refresh README.md's tables; ``--check``: exit 1 if they are stale."""
    readme = Path(__file__).resolve().parents[2] / "README.md"
    text = readme.read_text()
    fresh = readme_with_tables(text)
    if "--write" in argv:
        readme.write_text(fresh)
        return 0
    if fresh != text:
        print("README.md's configuration tables are stale: run python -m quintd.config --write")
        return 1
    print(json.dumps({"keys": len(schema.all_file_keys())}))
    return 0
