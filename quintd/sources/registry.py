"""The readers quintd has: for each agent, where it keeps its state and which class reads
it. The reader modules are imported only when an agent of theirs is found (a machine runs a
few of the agents quintd knows; each module loaded for nothing is resident memory), so the
facts the manager needs before that (platform, directories, whether the agent writes its
state as it starts) are written here, not in the modules.

Adding an agent's reader: one new module under ``quintd/sources/`` with its reader class
and ``SPEC = spec("<platform>")``, one line here, and its fixture test."""

from __future__ import annotations

import sys

from quintd.sources.spec import ReaderClass, ReaderSpec


def _reader(module: str, name: str) -> ReaderClass:
    return ReaderClass(f"quintd.sources.{module}", name)


def user_dir(editor: str, platform: str = sys.platform) -> str:
    """A VS Code-family editor's ``User`` directory, relative to the home directory, on
    this OS."""
    if platform == "darwin":
        return f"Library/Application Support/{editor}/User"
    if platform == "win32":
        return f"AppData/Roaming/{editor}/User"
    return f".config/{editor}/User"


def _editor(platform: str, editor: str, name: str) -> ReaderSpec:
    """An editor's ``User`` directory, read by its parts (``editors.py``). Where they find
    no conversation, the editor is a session of its own, active by its CPU."""
    return ReaderSpec(
        platform=platform,
        env_dir=None,
        home_dir=user_dir(editor),
        factory=_reader("editors", name),
        waits_without_conversation=False,
    )


READERS: tuple[ReaderSpec, ...] = (
    ReaderSpec(
        platform="claude-code",
        env_dir="CLAUDE_CONFIG_DIR",
        home_dir=".claude",
        factory=_reader("claude_code", "ClaudeCodeState"),
        writes_at_start=True,  # the registry, as it starts (or once ~/.claude exists)
    ),
    ReaderSpec(
        platform="codex",
        env_dir="CODEX_HOME",
        home_dir=".codex",
        factory=_reader("codex", "CodexState"),
        writes_at_start=True,  # the TUI attaches its first thread within seconds
    ),
    ReaderSpec(
        platform="gemini-cli",
        env_dir=None,
        home_dir=".gemini",
        factory=_reader("gemini_cli", "GeminiState"),
        writes_at_start=True,
    ),
    ReaderSpec(
        platform="copilot-cli",
        env_dir="COPILOT_HOME",
        home_dir=".copilot",
        factory=_reader("copilot_cli", "CopilotState"),
        writes_at_start=True,  # the conversation's directory and lock, as it starts
    ),
    ReaderSpec(
        platform="opencode",
        env_dir=None,  # XDG_DATA_HOME and OPENCODE_DB are read per process (see prepare)
        home_dir=".local/share/opencode",
        factory=_reader("opencode", "OpenCodeState"),
        writes_at_start=False,  # a conversation is written at its first prompt, not at start
    ),
    ReaderSpec(
        platform="qwen-code",
        env_dir=None,
        home_dir=".qwen",
        factory=_reader("qwen_code", "QwenCodeState"),
        writes_at_start=True,  # the registry, as it starts
    ),
    ReaderSpec(
        platform="cline",
        env_dir="CLINE_DIR",
        home_dir=".cline",
        factory=_reader("cline", "ClineState"),
        # The row appears at the first prompt, not at start: a young CLI is its process's
        # session until then, and its first conversation takes that session over.
        writes_at_start=False,
    ),
    ReaderSpec(
        platform="crush",
        env_dir="CRUSH_GLOBAL_DATA",
        home_dir=".local/share/crush",
        factory=_reader("crush", "CrushState"),
    ),
    ReaderSpec(
        platform="goose",
        env_dir=None,  # GOOSE_PATH_ROOT and XDG_DATA_HOME are read per process in prepare
        home_dir=".local/share/goose",
        factory=_reader("goose", "GooseState"),
        writes_at_start=True,  # the CLI creates its session before the first prompt
    ),
    ReaderSpec(
        platform="kiro",
        env_dir=None,  # KIRO_HOME is reported by one third party only: not trusted yet
        home_dir=".kiro",
        factory=_reader("kiro", "KiroState"),
    ),
    ReaderSpec(
        platform="cursor-agent",
        env_dir=None,
        home_dir=".cursor",
        factory=_reader("cursor_agent", "CursorAgentState"),
    ),
    _editor("cursor", "Cursor", "CursorState"),
    _editor("vscode-copilot", "Code", "VsCodeState"),
    _editor("windsurf", "Windsurf", "WindsurfState"),
    _editor("vscodium", "VSCodium", "VsCodiumState"),
    ReaderSpec(
        platform="zed",
        env_dir=None,  # --user-data-dir and XDG_DATA_HOME are read per process (zed.find)
        home_dir=(
            "Library/Application Support/Zed" if sys.platform == "darwin" else ".local/share/zed"
        ),
        factory=_reader("zed", "ZedState"),
        waits_without_conversation=False,  # an editor: without a thread, its own session
    ),
)


def readers_by_platform(readers: tuple[ReaderSpec, ...] = READERS) -> dict[str, ReaderSpec]:
    return {spec.platform: spec for spec in readers}


def spec(platform: str) -> ReaderSpec:
    """The registry's line for this platform (what its reader module exports as SPEC)."""
    return readers_by_platform()[platform]
