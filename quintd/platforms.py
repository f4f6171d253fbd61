"""The agent signature table, as data, and the matcher that applies it to one process.

A process matches a platform by, in order: the realpath of its executable, the
basename of argv[0], its process name, or (for interpreters such as node, bun,
deno, python and sh) the script the interpreter runs. First match wins, in table
order, rule by rule.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class Platform:
    id: str
    # Basenames of the executable, argv[0], process name, or an interpreter's script.
    names: tuple[str, ...] = ()
    # Substrings of the executable's realpath (with "/" separators).
    path_fragments: tuple[str, ...] = ()
    # Substrings of the path of the script an interpreter runs.
    script_fragments: tuple[str, ...] = ()


BUILTIN_PLATFORMS: tuple[Platform, ...] = (
    Platform(
        id="claude-code",
        names=("claude",),
        path_fragments=(
            "/claude-code/bin/claude",
            "/.local/share/claude/versions/",
            "/resources/native-binary/claude",
        ),
        script_fragments=("/@anthropic-ai/claude-code/",),
    ),
    Platform(
        id="codex",
        names=("codex",),
        path_fragments=("/@openai/codex/",),
        script_fragments=("/@openai/codex/",),
    ),
    Platform(
        id="gemini-cli",
        names=("gemini",),
        script_fragments=("/@google/gemini-cli/",),
    ),
)

# Interpreters whose own name says nothing: the agent is the script they run.
_INTERPRETER = re.compile(r"^(node|nodejs|bun|deno|python[0-9.]*|pythonw?|sh|bash|dash|zsh)$")
# Options of those interpreters that consume the next argument.
_OPTIONS_WITH_VALUE = frozenset(
    {
        "-r",
        "--require",
        "--import",
        "--loader",
        "--experimental-loader",
        "-W",
        "-X",
        "-c",
        "-e",
        "--eval",
        "-p",
        "--print",
        "--config",
        "--conditions",
        "-C",
        "--title",
    }
)
# Options after which there is no script file (inline code).
_INLINE_CODE = frozenset({"-c", "-e", "--eval", "-p", "--print"})


@dataclass(frozen=True)
class Match:
    platform: str
    matched_by: str  # "exe", "argv0", "name" or "script"


def basename(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def interpreter_script(argv: Sequence[str]) -> str | None:
    """The script an interpreter command line runs (``-m module`` gives the module name),
    or None when it runs inline code or nothing."""
    args = iter(argv[1:])
    for arg in args:
        if arg in _INLINE_CODE:
            return None
        if arg == "-m":
            return next(args, None)
        if arg in _OPTIONS_WITH_VALUE:
            next(args, None)
            continue
        if arg.startswith("-"):
            continue
        # deno/bun subcommands: `deno run x.ts`, `bun run x.js`
        if arg in ("run", "x") and basename(argv[0]) in ("deno", "bun"):
            continue
        return arg
    return None


def match_process(
    platforms: Sequence[Platform],
    *,
    name: str,
    exe: str,
    argv: Sequence[str],
    cwd: str | None = None,
) -> Match | None:
    """Apply the cascade to one process; exe should already be a realpath."""
    exe_path = exe.replace("\\", "/")
    exe_base = basename(exe_path) if exe_path else ""
    argv0_base = basename(argv[0]) if argv else ""
    for platform in platforms:
        if exe_path and (
            exe_base in platform.names or any(frag in exe_path for frag in platform.path_fragments)
        ):
            return Match(platform.id, "exe")
    for platform in platforms:
        if argv0_base and argv0_base in platform.names:
            return Match(platform.id, "argv0")
    for platform in platforms:
        if name and name in platform.names:
            return Match(platform.id, "name")
    if _INTERPRETER.match(exe_base) or _INTERPRETER.match(argv0_base):
        script = interpreter_script(argv)
        if script:
            return _match_script(platforms, script, cwd)
    return None


def _match_script(platforms: Sequence[Platform], script: str, cwd: str | None) -> Match | None:
    candidates = [script.replace("\\", "/")]
    # A global npm install runs the agent through a bin symlink (/usr/bin/gemini ->
    # ../lib/node_modules/@google/gemini-cli/dist/index.js): look through it.
    try:
        full = script if os.path.isabs(script) or not cwd else os.path.join(cwd, script)
        real = os.path.realpath(full)
        if real != full:
            candidates.append(real.replace("\\", "/"))
    except (OSError, ValueError):
        pass
    for platform in platforms:
        for candidate in candidates:
            if basename(candidate) in platform.names or any(
                frag in candidate for frag in platform.script_fragments
            ):
                return Match(platform.id, "script")
    return None
