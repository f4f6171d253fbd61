"""The matcher over each rule and each built-in signature."""

from __future__ import annotations

import pytest

from quintd.platforms import (
    BUILTIN_PLATFORMS,
    interpreter_script,
    lifecycle_script,
    match_process,
    process_argv,
)

CASES = [
    # (name, exe, argv, expected platform, expected rule)
    (
        "claude",
        "/usr/lib/node_modules/@anthropic-ai/claude-code/bin/claude.exe",
        ["claude"],
        "claude-code",
        "exe",
    ),
    ("2.1.197", "/home/u/.local/share/claude/versions/2.1.197", ["claude"], "claude-code", "exe"),
    (
        "claude",
        "/x/anthropic.claude-code-2.1.0/resources/native-binary/claude",
        ["claude"],
        "claude-code",
        "exe",
    ),
    (
        "node",
        "/usr/bin/node",
        ["node", "/usr/lib/node_modules/@anthropic-ai/claude-code/cli.js"],
        "claude-code",
        "script",
    ),
    (
        "node",
        "/usr/bin/node",
        ["node", "/usr/lib/node_modules/@openai/codex/bin/codex.js"],
        "codex",
        "script",
    ),
    (
        "codex",
        "/usr/lib/node_modules/@openai/codex/vendor/x86_64-unknown-linux-musl/bin/codex",
        ["codex", "app-server"],
        "codex",
        "exe",
    ),
    (
        "node",
        "/usr/bin/node",
        ["node", "--no-warnings=DEP0040", "/usr/bin/gemini"],
        "gemini-cli",
        "script",
    ),
    (
        "node",
        "/usr/bin/node",
        [
            "node",
            "--max-old-space-size=4096",
            "/usr/lib/node_modules/@google/gemini-cli/dist/index.js",
        ],
        "gemini-cli",
        "script",
    ),
    ("MainThread", "/usr/bin/node", ["gemini"], "gemini-cli", "argv0"),
    ("claude", "", [], "claude-code", "name"),
]


@pytest.mark.parametrize(("name", "exe", "argv", "platform", "rule"), CASES)
def test_cases(name: str, exe: str, argv: list[str], platform: str, rule: str) -> None:
    match = match_process(BUILTIN_PLATFORMS, name=name, exe=exe, argv=argv)
    assert match is not None
    assert (match.platform, match.matched_by) == (platform, rule)


@pytest.mark.parametrize("platform", BUILTIN_PLATFORMS, ids=lambda p: p.id)
def test_every_signature_matches_its_own_names_and_nothing_else_does(platform) -> None:
    for agent_name in platform.names:
        match = match_process(
            BUILTIN_PLATFORMS, name=agent_name, exe=f"/opt/x/{agent_name}", argv=[agent_name]
        )
        assert match is not None and match.platform == platform.id
    for fragment in platform.script_fragments:
        script = f"/usr/lib/node_modules{fragment}dist/main.js"
        match = match_process(
            BUILTIN_PLATFORMS, name="node", exe="/usr/bin/node", argv=["node", script]
        )
        assert match is not None and match.platform == platform.id
    # ... and nothing else does: no other signature, alone, claims its names or scripts
    # (not just one that the table's order happens to put after it).
    others = [p for p in BUILTIN_PLATFORMS if p.id != platform.id]
    for other in others:
        for agent_name in platform.names:
            stray = match_process(
                [other], name=agent_name, exe=f"/opt/x/{agent_name}", argv=[agent_name]
            )
            assert stray is None, f"{other.id} also claims {agent_name!r}"
        for fragment in platform.script_fragments:
            script = f"/usr/lib/node_modules{fragment}dist/main.js"
            stray = match_process([other], name="node", exe="/usr/bin/node", argv=["node", script])
            assert stray is None, f"{other.id} also claims {script!r}"


@pytest.mark.parametrize(
    "argv",
    [
        ["node", "/srv/app/server.js"],
        ["bash", "-c", "claude --version"],  # inline code is not a script
        ["python3", "-m", "http.server"],
        ["sleep", "100"],
        ["vim", "claude.md"],
        ["node", "-e", "require('/x/@openai/codex/')"],
    ],
)
def test_non_agents_do_not_match(argv: list[str]) -> None:
    exe = f"/usr/bin/{argv[0]}"
    assert match_process(BUILTIN_PLATFORMS, name=argv[0], exe=exe, argv=argv) is None


def test_interpreter_script_parsing() -> None:
    assert interpreter_script(["node", "--require", "x.js", "app.js", "--flag"]) == "app.js"
    assert interpreter_script(["python3", "-u", "-m", "aider", "--model"]) == "aider"
    assert interpreter_script(["deno", "run", "-A", "main.ts"]) == "main.ts"
    assert interpreter_script(["sh", "-c", "exit 0"]) is None
    assert interpreter_script(["node"]) is None


# What npm leaves in /proc/<pid>/cmdline once it has set its process title (psutil's
# reading of it, seen here with npm 11.19): one string, padded with NULs.
def _titled(title: str) -> list[str]:
    return [title, *[""] * 15]


@pytest.mark.parametrize(
    ("name", "exe", "argv", "cwd"),
    [
        # npm's own process, installing, updating or removing agents (its title's last word
        # is an agent's name: it was reported as a copilot-cli session named after the cwd)
        (
            "npm install ope",
            "/usr/bin/node",
            _titled("npm install opencode-ai @github/copilot"),
            None,
        ),
        (
            "npm uninstall o",
            "/usr/bin/node",
            _titled("npm uninstall opencode-ai @github/copilot"),
            None,
        ),
        ("npm update @git", "/usr/bin/node", _titled("npm update @github/copilot"), None),
        ("npm exec @githu", "/usr/bin/node", _titled("npm exec @github/copilot"), None),
        (
            "npm install @an",
            "/usr/bin/node",
            _titled("npm install @anthropic-ai/claude-code"),
            None,
        ),
        # before it sets its title
        ("node", "/usr/bin/node", ["node", "/usr/bin/npm", "install", "@github/copilot"], None),
        ("node", "/usr/bin/node", ["node", "/usr/bin/npx", "-y", "@github/copilot"], None),
        # the install steps' scripts, run with their cwd in the package
        ("node", "/usr/bin/node", ["node", "./postinstall.mjs"], "/p/node_modules/opencode-ai"),
        (
            "node",
            "/usr/bin/node",
            ["node", "install.cjs"],
            "/p/node_modules/@anthropic-ai/claude-code",
        ),
        # other package managers
        ("pnpm", "/usr/bin/node", ["pnpm", "add", "@github/copilot"], None),
        ("yarn", "/usr/bin/node", ["yarn", "global", "add", "@openai/codex"], None),
        ("bun", "/usr/bin/bun", ["bun", "install", "-g", "@google/gemini-cli"], None),
        ("bun", "/usr/bin/bun", ["bun", "x", "@github/copilot"], None),
        ("uvx", "/usr/bin/uvx", ["uvx", "aider"], None),
        ("pipx", "/usr/bin/python3", ["pipx", "run", "aider-chat"], None),
        ("python3", "/usr/bin/python3", ["python3", "-m", "pip", "install", "aider-chat"], None),
        ("brew", "/usr/bin/ruby", ["brew", "install", "gemini-cli"], None),
        # an agent asked only for its version or its help
        ("claude", "/p/@anthropic-ai/claude-code/bin/claude.exe", ["claude", "--version"], None),
        ("codex", "/usr/local/bin/codex", ["codex", "--help"], None),
        ("copilot", "/p/@github/copilot-linux-x64/copilot", ["copilot", "--binary-version"], None),
        (
            "node",
            "/usr/bin/node",
            [
                "node",
                "--max-old-space-size=4096",
                "/usr/lib/node_modules/@google/gemini-cli/bundle/gemini.js",
                "--version",
            ],
            None,
        ),
    ],
)
def test_package_managers_install_scripts_and_version_queries_are_no_agents(
    name: str, exe: str, argv: list[str], cwd: str | None
) -> None:
    words = process_argv(argv, exe)
    assert match_process(BUILTIN_PLATFORMS, name=name, exe=exe, argv=words, cwd=cwd) is None


@pytest.mark.parametrize(
    ("argv", "platform"),
    [
        # what npx starts is the agent (npx's own `npm exec` is not)
        (["node", "/home/u/.npm/_npx/962e8dddf3370479/node_modules/.bin/copilot"], "copilot-cli"),
        (["node", "/usr/lib/node_modules/opencode-ai/bin/opencode"], "opencode"),
        (["node", "/p/node_modules/@qwen-code/qwen-code/cli-entry.js"], "qwen-code"),
        (["node", "--expose-gc", "/p/node_modules/@qwen-code/qwen-code/cli.js"], "qwen-code"),
        (["node", "/p/node_modules/cline/bin/cline"], "cline"),
        (["node", "/p/node_modules/@google/gemini-cli/bundle/gemini.js"], "gemini-cli"),
        (["node", "/p/node_modules/@github/copilot/npm-loader.js"], "copilot-cli"),
        # an agent given a flag that is not a question
        (["node", "/p/node_modules/@google/gemini-cli/bundle/gemini.js", "-m", "x"], "gemini-cli"),
    ],
)
def test_agents_started_by_their_packages_entry_points_still_match(
    argv: list[str], platform: str
) -> None:
    match = match_process(BUILTIN_PLATFORMS, name="node", exe="/usr/bin/node", argv=argv)
    assert match is not None and match.platform == platform


def test_a_process_title_is_split_into_words_but_a_path_with_spaces_is_kept() -> None:
    assert process_argv(_titled("npm install x @github/copilot"), "/usr/bin/node") == [
        "npm",
        "install",
        "x",
        "@github/copilot",
    ]
    assert process_argv(["/opt/My App/app"], "/opt/My App/app") == ["/opt/My App/app"]
    assert process_argv(["node", "a.js", ""], "/usr/bin/node") == ["node", "a.js"]


def test_install_lifecycle_scripts_are_recognised_by_their_event() -> None:
    assert lifecycle_script({"npm_lifecycle_event": "postinstall"})
    assert lifecycle_script({"npm_lifecycle_event": "preinstall"})
    assert not lifecycle_script({"npm_lifecycle_event": "npx"})  # an agent npx started
    assert not lifecycle_script({"npm_lifecycle_event": "agent"})  # a user's `npm run agent`
    assert not lifecycle_script({})
    assert not lifecycle_script(None)


@pytest.mark.parametrize(
    ("argv", "what"),
    [
        (["codex", "app-server", "daemon", "start"], "codex's daemon started by hand"),
        (["codex", "app-server", "daemon", "stop"], "and stopped"),
        (["codex", "login", "--with-api-key"], "codex's login"),
        (["cline", "history", "update", "--title", "x"], "a cline subcommand"),
        (["cline", "hub", "stop"], "another"),
    ],
)
def test_an_agents_own_commands_are_helpers_never_sessions(argv: list[str], what: str) -> None:
    match = match_process(BUILTIN_PLATFORMS, name=argv[0], exe=f"/opt/x/{argv[0]}", argv=argv)
    assert match is not None and match.helper, what


def test_verbose_is_no_version_query() -> None:
    """`cline -v` is Cline's verbose TUI: an agent, not a version query."""
    match = match_process(BUILTIN_PLATFORMS, name="cline", exe="/opt/x/cline", argv=["cline", "-v"])
    assert match is not None and not match.helper and match.platform == "cline"
