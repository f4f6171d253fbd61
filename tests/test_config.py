"""Config lookup, validation, environment overrides, and every error path (exit 78)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from conftest import clean_env, run_cli

from quintd.config import DEFAULT_ENDPOINT, find_config_file, load_config, render_config
from quintd.errors import EXIT_CONFIG, ConfigError


def _write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


# -- lookup -----------------------------------------------------------------------------


def test_explicit_path_wins_over_env(tmp_path: Path) -> None:
    a = _write(tmp_path, "", "a.toml")
    b = _write(tmp_path, "", "b.toml")
    assert find_config_file(str(a), {"QUINTD_CONFIG": str(b)}, as_root=True) == a


def test_env_path_used_without_explicit(tmp_path: Path) -> None:
    b = _write(tmp_path, "", "b.toml")
    system = _write(tmp_path, "", "system.toml")
    assert find_config_file(None, {"QUINTD_CONFIG": str(b)}, as_root=True, system_path=system) == b


def test_root_uses_system_file(tmp_path: Path) -> None:
    system = _write(tmp_path, "", "system.toml")
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    _write(user_dir, "")
    assert find_config_file(None, {}, as_root=True, system_path=system, user_dir=user_dir) == system


def test_non_root_uses_user_dir_not_system_file(tmp_path: Path) -> None:
    system = _write(tmp_path, "", "system.toml")
    user_dir = tmp_path / "user"
    user_dir.mkdir()
    user_file = _write(user_dir, "")
    assert (
        find_config_file(None, {}, as_root=False, system_path=system, user_dir=user_dir)
        == user_file
    )


def test_no_file_means_defaults(tmp_path: Path) -> None:
    loaded = load_config(None, {}, as_root=False, user_dir=tmp_path / "nothing")
    assert loaded.source is None
    assert loaded.endpoint == DEFAULT_ENDPOINT
    assert loaded.token is None
    assert loaded.config.scan.interval == 1.0
    assert loaded.config.cloud.batch_body is False


def test_root_defaults_use_system_dirs(tmp_path: Path) -> None:
    loaded = load_config(None, {}, as_root=True, system_path=tmp_path / "absent.toml")
    assert loaded.source is None
    if os.uname().sysname == "Linux":
        assert loaded.state_dir == Path("/var/lib/quintd")
        assert loaded.runtime_dir == Path("/run/quintd")


def test_systemd_directories_are_honoured(tmp_path: Path) -> None:
    env = {"STATE_DIRECTORY": str(tmp_path / "s"), "RUNTIME_DIRECTORY": str(tmp_path / "r")}
    loaded = load_config(None, env, as_root=True, system_path=tmp_path / "absent.toml")
    assert loaded.state_dir == tmp_path / "s"
    assert loaded.socket_path == tmp_path / "r" / "quintd.sock"


@pytest.mark.parametrize("var", ["--config", "QUINTD_CONFIG"])
def test_named_file_must_exist(tmp_path: Path, var: str) -> None:
    missing = str(tmp_path / "missing.toml")
    with pytest.raises(ConfigError, match="config file not found"):
        if var == "--config":
            load_config(missing, {})
        else:
            load_config(None, {"QUINTD_CONFIG": missing})


# -- values and overrides ---------------------------------------------------------------


def test_full_file_loads(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        f"""
[cloud]
endpoint = "https://ingest.example.com/"
token = "qt_deploy_abc"
timeout = 3
batch_body = true

[scan]
interval = 0.5

[sessions]
idle_after = 30

[queue]
batch_size = 50
flush_interval = 2.0
max_bytes = 10485760

[paths]
state_dir = "{tmp_path / "state"}"
runtime_dir = "{tmp_path / "run"}"

[log]
level = "debug"
""",
    )
    loaded = load_config(str(path), {})
    cfg = loaded.config
    assert loaded.endpoint == "https://ingest.example.com"  # trailing slash dropped
    assert loaded.token == "qt_deploy_abc"
    assert cfg.cloud.timeout == 3.0 and cfg.cloud.batch_body is True
    assert cfg.scan.interval == 0.5 and cfg.sessions.idle_after == 30
    assert (cfg.queue.batch_size, cfg.queue.flush_interval, cfg.queue.max_bytes) == (
        50,
        2.0,
        10485760,
    )
    assert loaded.state_dir == tmp_path / "state"
    assert loaded.database_path == tmp_path / "state" / "quintd.db"
    assert loaded.socket_path == tmp_path / "run" / "quintd.sock"
    assert cfg.log.level == "debug"


def test_env_overrides_token_and_endpoint(tmp_path: Path) -> None:
    path = _write(tmp_path, '[cloud]\ntoken = "from_file"\nendpoint = "https://a.example"\n')
    loaded = load_config(
        str(path), {"QUINTD_TOKEN": "from_env\n", "QUINTD_ENDPOINT": "http://127.0.0.1:8080"}
    )
    assert loaded.token == "from_env"
    assert loaded.endpoint == "http://127.0.0.1:8080"


def test_env_endpoint_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"QUINTD_ENDPOINT.*loopback"):
        load_config(None, {"QUINTD_ENDPOINT": "http://10.1.2.3"}, as_root=False, user_dir=tmp_path)


def test_token_file_read_and_permissions_enforced(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("qt_deploy_secret\n")
    os.chmod(token_file, 0o600)
    path = _write(tmp_path, '[cloud]\ntoken_file = "token"\n')  # relative to the config
    assert load_config(str(path), {}).token == "qt_deploy_secret"
    os.chmod(token_file, 0o644)
    with pytest.raises(ConfigError, match="readable by group or others") as info:
        load_config(str(path), {})
    assert "secret" not in str(info.value)


def test_token_and_token_file_together_rejected(tmp_path: Path) -> None:
    path = _write(tmp_path, '[cloud]\ntoken = "a"\ntoken_file = "/x"\n')
    with pytest.raises(ConfigError, match="both set"):
        load_config(str(path), {})


def test_show_redacts_token(tmp_path: Path) -> None:
    path = _write(tmp_path, '[cloud]\ntoken = "qt_deploy_very_secret"\n')
    text = render_config(load_config(str(path), {}))
    assert "qt_deploy_very_secret" not in text
    assert 'token = "<redacted>"' in text
    assert f"source: {path}" in text


# -- every error names the file, key and line, and exits 78 -------------------------------

BROKEN = [
    ("syntax", "[cloud]\nendpoint = \n", ["invalid TOML", "line 2"]),
    ("wrong type", '[scan]\ninterval = "fast"\n', ["scan.interval", "line 2", "number"]),
    (
        "unknown key",
        '[cloud]\n\nendpont = "https://x"\n',
        ["cloud.endpont", "line 3", "unknown key"],
    ),
    ("unknown table", "[clouds]\nx = 1\n", ["clouds", "line 1", "unknown key"]),
    ("bad url", '[cloud]\nendpoint = "ftp://x"\n', ["cloud.endpoint", "line 2", "http(s)"]),
    (
        "http to remote",
        '[cloud]\nendpoint = "http://example.com"\n',
        ["cloud.endpoint", "loopback"],
    ),
    (
        "url with credentials",
        '[cloud]\nendpoint = "https://u:p@example.com"\n',
        ["cloud.endpoint", "credentials"],
    ),
    ("negative interval", "[scan]\ninterval = -1\n", ["scan.interval", "greater than 0"]),
    ("batch too big", "[queue]\nbatch_size = 501\n", ["queue.batch_size", "line 2"]),
    ("bad level", '[log]\nlevel = "loud"\n', ["log.level", "line 2"]),
    ("string bool", '[cloud]\nbatch_body = "yes"\n', ["cloud.batch_body", "line 2"]),
    ("token with space", '[cloud]\ntoken = "qt_deploy_x y"\n', ["cloud.token", "whitespace"]),
    ("not a table", "scan = 1\n", ["scan", "line 1"]),
    ("non-ascii token", '[cloud]\ntoken = "qt_déploy"\n', ["cloud.token", "ASCII"]),
    (
        "unicode endpoint",
        '[cloud]\nendpoint = "https://ex\u200bample.com"\n',
        ["cloud.endpoint", "ASCII"],
    ),
    (
        "platform without rules",
        '[[platforms]]\nid = "x"\n',
        ["platforms.0", "line 1", "at least one of"],
    ),
    (
        "platform bad id",
        '[[platforms]]\nid = "x"\nnames = ["a"]\n\n[[platforms]]\nid = "Bad Id"\nnames = ["b"]\n',
        ["platforms.1.id", "line 6"],
    ),
    (
        "platform duplicate",
        '[[platforms]]\nid = "x"\nnames = ["a"]\n[[platforms]]\nid = "x"\nnames = ["b"]\n',
        ["platforms", "unique"],
    ),
    (
        "platform empty name",
        '[[platforms]]\nid = "x"\nnames = [""]\n',
        ["platforms.0", "empty strings"],
    ),
    (
        "platform signing half",
        '[[platforms]]\nid = "x"\nsigning = [{identifier = "a.b"}]\n',
        ["platforms.0.signing.0.team_id", "required"],
    ),
]


@pytest.mark.parametrize(("name", "text", "expected"), BROKEN, ids=[b[0] for b in BROKEN])
def test_broken_config_message(tmp_path: Path, name: str, text: str, expected: list[str]) -> None:
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(str(path), {})
    message = str(info.value)
    assert message.startswith(str(path))
    for fragment in expected:
        assert fragment in message, (fragment, message)
    assert "qt_deploy_x y" not in message  # a token is never echoed
    assert info.value.exit_code == EXIT_CONFIG


def test_not_utf8(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'[cloud]\nendpoint = "\xff"\n')
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_config(str(path), {})


@pytest.mark.parametrize(
    "command", [["config", "check"], ["config", "show"], ["scan"], ["status"], ["run"]]
)
def test_every_command_exits_78_on_broken_config(tmp_path: Path, command: list[str]) -> None:
    path = _write(tmp_path, '[cloud]\ntimeout = "slow"\n')
    result = run_cli(*command, "--config", str(path))
    assert result.returncode == 78, result
    assert f"{path}, line 2: cloud.timeout" in result.stderr


def test_config_check_and_show_ok(tmp_path: Path) -> None:
    path = _write(tmp_path, '[cloud]\ntoken = "qt_deploy_zzz"\n')
    check = run_cli("config", "check", "--config", str(path))
    assert check.returncode == 0 and f"{path}: ok" in check.stdout
    show = run_cli("config", "show", "--config", str(path))
    assert show.returncode == 0
    assert "qt_deploy_zzz" not in show.stdout and "<redacted>" in show.stdout


def test_quintd_config_env_var_is_used(tmp_path: Path) -> None:
    path = _write(tmp_path, "[scan]\ninterval = 7.5\n")
    show = run_cli("config", "show", env=clean_env(QUINTD_CONFIG=str(path)))
    assert show.returncode == 0, show.stderr
    assert "interval = 7.5" in show.stdout


def test_usage_error_exits_2() -> None:
    assert run_cli("frobnicate").returncode == 2
    assert run_cli("status", "--bogus").returncode == 2


def test_relative_paths_are_relative_to_the_config_file(tmp_path: Path) -> None:
    path = _write(tmp_path, '[paths]\nstate_dir = "state"\nruntime_dir = "run"\n')
    loaded = load_config(str(path), {})
    assert loaded.state_dir == tmp_path.resolve() / "state"
    assert loaded.runtime_dir == tmp_path.resolve() / "run"


def test_long_runtime_dir_is_a_config_error(tmp_path: Path) -> None:
    path = _write(tmp_path, f'[paths]\nruntime_dir = "/tmp/{"x" * 120}"\n')
    with pytest.raises(ConfigError, match=r"paths.runtime_dir.*longer than"):
        load_config(str(path), {})


def test_custom_platforms_come_first_and_replace_builtins(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """
[[platforms]]
id = "my-agent"
names = ["myagent"]
script_fragments = ["/my-agent/"]

[[platforms]]
id = "codex"
names = ["codex-fork"]
signing = [{identifier = "com.openai.codex", team_id = "2DC432GLL2"}]
""",
    )
    platforms = load_config(str(path), {}).platforms
    ids = [p.id for p in platforms]
    assert ids[:2] == ["my-agent", "codex"]
    assert ids.count("codex") == 1 and "claude-code" in ids
    codex = platforms[1]
    assert codex.names == ("codex-fork",)
    assert codex.signing[0].team_id == "2DC432GLL2"


def test_readme_documents_every_key() -> None:
    from quintd.config import config_keys

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    missing = [
        f"{section}.{name}"
        for section, names in config_keys().items()
        for name in names
        if f"| `[{section}]` `{name}` |" not in readme
    ]
    assert missing == []
