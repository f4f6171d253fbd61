"""The matcher over each rule and each built-in signature."""

from __future__ import annotations

import pytest

from quintd.platforms import BUILTIN_PLATFORMS, interpreter_script, match_process

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
