"""Settings are declared once, by the part that uses them (quintd/part_settings.py): the
file's schema, the daemon's settings, `config schema` and the README's tables all come
from those declarations."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import typing
from pathlib import Path
from typing import Any

import pytest

from quintd.config import load_config
from quintd.config.render import main as render_main
from quintd.config.schema import all_file_keys
from quintd.errors import ConfigError
from quintd.part_settings import FileKey
from quintd.settings import (
    Settings,
    build_settings,
    restart_only_changes,
    settings_for_reload,
)

ROOT = Path(__file__).resolve().parents[1]


def _other_value(key: FileKey) -> str | None:
    """A valid value for the key that is not its default, as TOML text (None: skip)."""
    default = key.default
    annotation = key.part.model_fields[key.field].annotation
    choices = typing.get_args(annotation) if typing.get_origin(annotation) is typing.Literal else ()
    if choices:
        return json.dumps(next(c for c in choices if c != default))
    if isinstance(default, bool):
        return "false" if default else "true"
    if isinstance(default, int):
        return str(default + 1)
    if isinstance(default, float):
        return repr(default / 2 if default else 0.5)
    if key.path == "cloud.endpoint":
        return '"https://ingest.example.com"'
    return None  # the token, the token file and the directories have tests of their own


def test_every_key_reaches_the_part_that_declares_it(tmp_path: Path) -> None:
    """A value set in the file is what the part's settings hold: no key is lost or
    mixed up between the file and the parts (every key, generically)."""
    tables: dict[str, list[str]] = {}
    expected: dict[str, str] = {}
    for key in all_file_keys():
        value = _other_value(key)
        if value is None:
            continue
        tables.setdefault(key.table, []).append(f"{key.name} = {value}")
        expected[key.path] = value
    text = "".join(f"[{table}]\n" + "\n".join(lines) + "\n" for table, lines in tables.items())
    path = tmp_path / "config.toml"
    path.write_text(text)
    settings = build_settings(load_config(str(path), {}))
    parts = {
        type(getattr(settings, name)): getattr(settings, name)
        for name in type(settings).model_fields
    }
    checked = 0
    for key in all_file_keys():
        if key.path not in expected or key.part not in parts:
            continue
        got = getattr(parts[key.part], key.field)
        assert json.dumps(got) == expected[key.path] or repr(got) == expected[key.path], key.path
        checked += 1
    assert checked >= 15


def test_every_key_is_documented_and_its_default_is_valid() -> None:
    for key in all_file_keys():
        assert len(key.doc) > 10, key.path
        key.part.model_validate({})  # the defaults pass the part's own bounds


def test_the_readme_tables_are_made_from_the_declarations(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert render_main(["--check"]) == 0, capsys.readouterr().out


def test_an_environment_override_is_checked_like_its_key() -> None:
    assert (
        load_config(None, {"QUINTD_LOG_LEVEL": " DEBUG "}, as_root=False).value("log", "level")
        == "debug"
    )
    with pytest.raises(ConfigError, match=r"^QUINTD_LOG_LEVEL \(environment\): log\.level: "):
        load_config(None, {"QUINTD_LOG_LEVEL": "loud"}, as_root=False)


def test_config_schema_describes_every_key_for_editors() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "quintd", "config", "schema", "--help"], capture_output=True
    )
    assert result.returncode == 0
    out = subprocess.run(
        [sys.executable, "-m", "quintd", "config", "schema"], capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    schema: dict[str, Any] = json.loads(out.stdout)
    assert schema["additionalProperties"] is False
    definitions = schema["$defs"]
    for key in all_file_keys():
        table = definitions[schema["properties"][key.table]["$ref"].split("/")[-1]]
        assert table["additionalProperties"] is False, key.table
        described = table["properties"][key.name]
        assert described["description"] == key.doc, key.path
        if key.default is not None:
            assert described["default"] == (
                str(key.default) if isinstance(key.default, Path) else key.default
            ), key.path
    assert "token" not in json.dumps(schema.get("properties", {}).get("cloud", {}))


def _settings(tmp_path: Path, name: str, scan_interval: float, token: str) -> Settings:
    path = tmp_path / f"{name}.toml"
    path.write_text(
        f'[paths]\nstate_dir = "{tmp_path / name / "state"}"\n'
        f'runtime_dir = "{tmp_path / name / "run"}"\n'
        f"[scan]\ninterval = {scan_interval}\n"
        f'[cloud]\ntoken = "{token}"\n'
    )
    return build_settings(load_config(str(path), {}))


def test_a_reload_applies_what_it_may_and_names_what_waits_for_a_restart(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """SIGHUP's path, without a daemon: the directories held open stay as they run (each
    change named by its key, in the log), the rest is the new file's."""
    running = _settings(tmp_path, "a", 1.0, "qt_deploy_first")
    assert running.paths.database_path == tmp_path / "a" / "state" / "quintd.db"
    assert running.paths.lock_path == tmp_path / "a" / "state" / "quintd.lock"
    assert running.paths.socket_path == tmp_path / "a" / "run" / "quintd.sock"
    # A new interval and token (reloadable, and a field with no declaration at all): nothing
    # waits for a restart.
    same_dirs = _settings(tmp_path, "a", 2.5, "qt_deploy_second")
    assert restart_only_changes(running, same_dirs) == []
    moved = _settings(tmp_path, "b", 2.5, "qt_deploy_second")
    assert restart_only_changes(running, moved) == ["paths.state_dir", "paths.runtime_dir"]
    with caplog.at_level(logging.WARNING, logger="quintd.daemon"):
        applied = settings_for_reload(running, moved)
    assert (applied.paths, applied.control) == (running.paths, running.control)
    assert (applied.loop.scan_interval, applied.delivery.token) == (2.5, "qt_deploy_second")
    waiting = [r.getMessage() for r in caplog.records]
    assert waiting == [
        "paths.state_dir changed: it waits for a restart to take effect",
        "paths.runtime_dir changed: it waits for a restart to take effect",
    ]
