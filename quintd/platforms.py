"""The agent signature table, as data, and the matcher that applies it to one process.

A process matches a platform by, in order: the realpath of its executable, the
basename of argv[0], its process name, or (for interpreters such as node, bun,
deno, python and sh) the script the interpreter runs. First match wins, in table
order, rule by rule.

Never an agent, whatever its names say: a package manager at work (``npm install
@github/copilot`` sets its process title to that line, whose last word is an agent's
name; ``npx``, pnpm, yarn, bun's installer, pip, pipx, uv, brew), an install step's
lifecycle script (``npm_lifecycle_event`` in its environment: the scanner checks it), and
an agent asked only for its version or its help.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True)
class SigningRule:
    """A code-signing identity: the identifier and the team that must have signed it.
    Both must match: anyone can claim an identifier, only the team can sign for it."""

    identifier: str
    team_id: str


@dataclass(frozen=True)
class Platform:
    id: str
    # Basenames of the executable, argv[0], process name, or an interpreter's script.
    names: tuple[str, ...] = ()
    # Substrings of the executable's realpath (with "/" separators).
    path_fragments: tuple[str, ...] = ()
    # Substrings of the path of the script an interpreter runs.
    script_fragments: tuple[str, ...] = ()
    # Verified code-signing identities (macOS identifier + team id).
    signing: tuple[SigningRule, ...] = ()
    # Arguments (exact, or prefixes ending in "*") marking a helper process of the agent:
    # part of an agent, never a session of its own.
    helper_args: tuple[str, ...] = ()
    # Substrings of the executable's path (or of argv[0]) marking a helper process.
    helper_paths: tuple[str, ...] = ()


def _sign(team_id: str, *identifiers: str) -> tuple[SigningRule, ...]:
    return tuple(SigningRule(identifier, team_id) for identifier in identifiers)


ANTHROPIC, OPENAI = "Q6L2SF6YDW", "2DC432GLL2"
# An Electron editor's helpers run its own executable (Linux) or a helper app beside it
# (macOS) with `--type=renderer|gpu-process|utility|zygote...`: the extension host and
# the language servers are utility processes. Its command-line launcher runs the same
# executable as node (`ELECTRON_RUN_AS_NODE=1 code cli.js --ms-enable-electron-run-as-node
# ...`) and hands over to the main process. Only the main process is the editor; a helper
# left behind by a main process that exited is nobody's session.
ELECTRON_HELPERS = ("--type=*", "--ms-enable-electron-run-as-node")

# Order matters only between rules of the same kind: the first platform whose rule
# matches wins. More specific entries (claude-code before claude-desktop's bundle,
# cursor-agent before cursor) come first where they could overlap.
BUILTIN_PLATFORMS: tuple[Platform, ...] = (
    Platform(
        id="claude-code",
        names=("claude",),
        path_fragments=(
            "/claude-code/bin/claude",
            "/.local/share/claude/versions/",
            "/resources/native-binary/claude",
        ),
        # The entry points, not the whole package: its install script (install.cjs, run
        # with its cwd in the package) is no agent.
        script_fragments=(
            "/@anthropic-ai/claude-code/cli.js",
            "/@anthropic-ai/claude-code/cli-wrapper.cjs",
            "/@anthropic-ai/claude-code/bin/",
        ),
        signing=_sign(ANTHROPIC, "com.anthropic.claude-code"),
        helper_args=("--bg-*",),
    ),
    Platform(
        id="claude-desktop",
        names=("Claude",),
        path_fragments=("/Claude.app/Contents/MacOS/", "/AnthropicClaude/"),
        signing=_sign(
            ANTHROPIC, "com.anthropic.claudefordesktop", "com.anthropic.claudefordesktop.helper"
        ),
    ),
    Platform(
        id="codex",
        names=("codex",),
        path_fragments=("/@openai/codex/", "/Codex.app/Contents/MacOS/"),
        script_fragments=("/@openai/codex/bin/",),
        signing=_sign(OPENAI, "com.openai.codex"),
        # The TUI's shared app-server daemon and its pid loop outlive the TUI (orphaned
        # under pid 1): they run turns for TUIs, they are not sessions themselves. Codex
        # runs them from its own copy under ~/.codex/packages/app-server-daemon/.
        # `codex app-server daemon start|stop`, `codex login`: commands, not sessions.
        helper_args=("--managed-daemon", "pid-update-loop", "daemon", "login", "logout"),
        helper_paths=("/app-server-daemon/",),
    ),
    Platform(
        id="chatgpt",
        names=("ChatGPT",),
        path_fragments=("/ChatGPT.app/Contents/MacOS/",),
        signing=_sign(OPENAI, "com.openai.chat"),
    ),
    Platform(
        id="gemini-cli",
        names=("gemini",),
        script_fragments=("/@google/gemini-cli/bundle/", "/@google/gemini-cli/dist/"),
        # Its commands that print and exit (0.61.0's --help): not sessions.
        helper_args=(
            "--list-sessions",
            "--delete-session",
            "--list-extensions",
            "mcp",
            "extensions",
            "extension",
            "skills",
            "skill",
            "hooks",
            "hook",
        ),
    ),
    Platform(
        id="copilot-cli",
        names=("copilot", "github-copilot", "ghcs"),
        script_fragments=("/@github/copilot/npm-loader.js", "/@github/copilot/index.js"),
    ),
    Platform(
        id="cursor-agent",
        names=("cursor-agent",),
        path_fragments=("/cursor-agent/versions/", "/.local/share/cursor-agent/"),
        script_fragments=("/cursor-agent/versions/",),
    ),
    Platform(
        id="cursor",
        names=("Cursor", "cursor"),
        path_fragments=("/Cursor.app/Contents/", "/cursor/cursor", "/Cursor/Cursor.exe"),
        signing=_sign("VDXQ22DGB9", "com.todesktop.230313mzl4w4u92"),
        helper_args=ELECTRON_HELPERS,
    ),
    Platform(
        id="windsurf",
        names=("Windsurf", "windsurf", "Devin"),
        path_fragments=("/Windsurf.app/Contents/", "/Devin.app/Contents/", "/windsurf/windsurf"),
        signing=_sign("83Z2LHX6XW", "com.exafunction.windsurf"),
        helper_args=ELECTRON_HELPERS,
    ),
    Platform(
        id="vscode-copilot",
        names=("code", "Code", "code-insiders"),
        path_fragments=(
            "/Visual Studio Code.app/Contents/",
            "/usr/share/code/",
            "/Microsoft VS Code/Code.exe",
        ),
        signing=_sign("UBF8T346G9", "com.microsoft.VSCode", "com.microsoft.VSCodeInsiders"),
        helper_args=ELECTRON_HELPERS,
    ),
    Platform(
        id="vscodium",
        names=("codium", "VSCodium"),
        path_fragments=("/VSCodium.app/Contents/", "/usr/share/codium/", "/VSCodium/VSCodium.exe"),
        helper_args=ELECTRON_HELPERS,
    ),
    Platform(
        id="aider",
        names=("aider",),
        script_fragments=("/site-packages/aider/",),
    ),
    Platform(
        id="amp",
        names=("amp", "amp-local"),
        script_fragments=("/@sourcegraph/amp/",),
    ),
    Platform(
        id="opencode",
        names=("opencode",),
        path_fragments=("/.opencode/bin/opencode", "/opencode-ai/bin/"),
        # npm's package runs its binary through bin/; its postinstall.mjs is no agent.
        script_fragments=("/opencode-ai/bin/",),
    ),
    Platform(
        id="goose",
        names=("goose", "Goose"),
        path_fragments=("/Goose.app/Contents/",),
    ),
    Platform(
        id="kiro",
        names=("kiro-cli", "kiro-cli-chat", "Kiro", "kiro"),
        path_fragments=("/Kiro.app/Contents/",),
        signing=_sign("94KV3E626L", "dev.kiro.desktop"),
    ),
    Platform(
        id="zed",
        names=("zed", "Zed", "zed-editor"),
        path_fragments=("/Zed.app/Contents/MacOS/",),
        signing=_sign("MQ55VZLNZQ", "dev.zed.Zed"),
        # The editor runs itself as its crash handler and as git's askpass helper
        # (crates/zed/src/main.rs): parts of it, never sessions.
        helper_args=("--crash-handler", "--askpass"),
    ),
    Platform(
        id="auggie",
        names=("auggie",),
        script_fragments=("/@augmentcode/auggie/",),
    ),
    Platform(
        id="qwen-code",
        names=("qwen",),
        script_fragments=(
            "/@qwen-code/qwen-code/cli.js",
            "/@qwen-code/qwen-code/cli-entry.js",
            "/@qwen-code/qwen-code/dist/",
        ),
    ),
    Platform(
        id="crush",
        names=("crush",),
        script_fragments=("/@charmland/crush/",),
        # `crush server` (client/server mode) runs detached and outlives its clients.
        helper_args=("server",),
    ),
    Platform(
        id="continue",
        names=("cn",),
        script_fragments=("/@continuedev/cli/",),
    ),
    Platform(
        id="cline",
        # Not ".cline", the Bun binary the npm package's postinstall links into its bin/:
        # the wrapper runs it as a child, and an orphan of a wrapper killed lingers a few
        # seconds after it (Cline 3.0.65): it would be a phantom session.
        names=("cline",),
        script_fragments=("/node_modules/cline/bin/",),
        # Cline 3's hub daemon runs sessions for every CLI and outlives them; its
        # subcommands (`cline history update`, `cline hub stop`, `cline auth`) are commands.
        helper_args=("--cline-hub-daemon", "history", "hub", "auth", "config", "mcp"),
    ),
)

# Interpreters whose own name says nothing: the agent is the script they run.
_INTERPRETER = re.compile(r"^(node|nodejs|bun|deno|python[0-9.]*|pythonw?|sh|bash|dash|zsh)$")
# The shells among them: run by almost every script and build, seldom an agent's host.
SHELLS = frozenset({"sh", "bash", "dash", "zsh"})
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


# Programs that install, update or fetch packages: never an agent, even when their command
# line names one (`npm install @github/copilot`, `npx -y opencode-ai`, `uvx aider`). What
# they start (the agent's own process, under `npm exec`) is looked at on its own.
PACKAGE_MANAGERS = frozenset(
    {
        "npm",
        "npx",
        "pnpm",
        "pnpx",
        "yarn",
        "yarnpkg",
        "bunx",
        "corepack",
        "pip",
        "pip3",
        "pipx",
        "uv",
        "uvx",
        "brew",
    }
)
# bun is also an interpreter: only these subcommands are its package manager.
_BUN_PACKAGE_COMMANDS = frozenset(
    {"install", "i", "add", "a", "remove", "rm", "update", "upgrade", "link", "pm", "x", "create"}
)
# npm's lifecycle events of an install, update or removal (pnpm, yarn and bun set the same
# variable): a script run for one of them is part of the install, never an agent. A
# user's own `npm run <script>` that starts an agent has another event name.
INSTALL_LIFECYCLE_EVENTS = frozenset(
    {
        "preinstall",
        "install",
        "postinstall",
        "prepare",
        "preprepare",
        "postprepare",
        "preuninstall",
        "uninstall",
        "postuninstall",
        "prepack",
        "postpack",
        "prepublish",
        "prepublishOnly",
        "dependencies",
    }
)
# An agent asked only for these is no session: it prints and exits. Not "-v": Cline's
# `cline -v` is its verbose TUI. `--binary-version`: Copilot CLI's first run, unpacking.
_INFORMATIONAL = frozenset({"--version", "--help", "-h", "--binary-version"})


def process_argv(argv: Sequence[str], exe: str = "") -> list[str]:
    """The command line as the matcher reads it. A program that set its process title
    (npm does: ``npm install opencode-ai @github/copilot``) leaves one string in
    ``/proc/<pid>/cmdline``, padded with NULs: it is split into words, so that its last
    word is not taken for the program's name."""
    words = list(argv)
    while len(words) > 1 and words[-1] == "":
        words.pop()
    if len(words) == 1 and " " in words[0] and words[0] != exe:
        return words[0].split()
    return words


def package_manager(argv: Sequence[str]) -> bool:
    """Whether the command line is a package manager's (by its program, or the script an
    interpreter runs)."""
    if not argv:
        return False
    program = basename(argv[0])
    if program in PACKAGE_MANAGERS:
        return True
    if program == "bun" and len(argv) > 1 and argv[1] in _BUN_PACKAGE_COMMANDS:
        return True
    if _INTERPRETER.match(program):
        script = interpreter_script(argv)
        if script is not None:
            name = basename(script)
            stem = name.split(".", 1)[0]
            if name in PACKAGE_MANAGERS or stem in ("npm-cli", "npx-cli", "pnpm", "yarn"):
                return True
    return False


def lifecycle_script(environ: dict[str, str] | None) -> bool:
    """Whether a process runs as an install's lifecycle script (from its environment)."""
    if not environ:
        return False
    return environ.get("npm_lifecycle_event", "") in INSTALL_LIFECYCLE_EVENTS


def informational(argv: Sequence[str], script: str | None) -> bool:
    """Whether the agent is asked only for its version or help (``claude --version``)."""
    args = list(argv[1:])
    if script is not None:
        # An interpreter's own options come before the script: look after it.
        for i, arg in enumerate(args):
            if arg == script or basename(arg) == basename(script):
                args = args[i + 1 :]
                break
    return bool(args) and all(arg in _INFORMATIONAL for arg in args)


@dataclass(frozen=True)
class Match:
    platform: str
    matched_by: str  # "signing", "exe", "argv0", "name" or "script"
    script: str | None = None  # the script an interpreter runs, when that matched
    helper: bool = False  # a helper process of the agent, never a session of its own


def basename(path: str) -> str:
    return path.replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]


def is_interpreter_name(name: str) -> bool:
    """Whether a program of this (base)name is an interpreter whose script says what the
    process is (node, bun, deno, python, the shells)."""
    return bool(_INTERPRETER.match(name))


def is_interpreter(exe: str, argv: Sequence[str]) -> bool:
    """Whether the process is an interpreter whose script says what it is."""
    return bool(
        _INTERPRETER.match(basename(exe)) or (argv and _INTERPRETER.match(basename(argv[0])))
    )


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
    signing: tuple[str, str] | None = None,
) -> Match | None:
    """Apply the cascade to one process; exe should already be a realpath. ``signing`` is
    a verified (identifier, team id) pair, when one is known. ``argv`` as
    :func:`process_argv` gives it."""
    if package_manager(argv):
        return None
    match = _match(platforms, name, exe, argv, cwd, signing)
    if match is None:
        return None
    if informational(argv, interpreter_script(argv) if is_interpreter(exe, argv) else None):
        return None
    if match.script is None and _INTERPRETER.match(basename(exe)):
        # Matched by name (Linux names a shebang script's process after the script): the
        # agent's identity is still its script, not the interpreter.
        script = interpreter_script(argv)
        if script:
            resolved = _resolve_script(script, cwd)
            match = Match(match.platform, match.matched_by, resolved)
    platform = next(p for p in platforms if p.id == match.platform)
    if (platform.helper_args and _is_helper(platform.helper_args, argv)) or (
        platform.helper_paths
        and any(f in path for f in platform.helper_paths for path in (exe, *argv[:1]))
    ):
        return Match(match.platform, match.matched_by, match.script, helper=True)
    return match


def _match(
    platforms: Sequence[Platform],
    name: str,
    exe: str,
    argv: Sequence[str],
    cwd: str | None,
    signing: tuple[str, str] | None,
) -> Match | None:
    if signing is not None:
        for platform in platforms:
            if any((rule.identifier, rule.team_id) == signing for rule in platform.signing):
                return Match(platform.id, "signing")
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
    if is_interpreter(exe_path, argv):
        script = interpreter_script(argv)
        if script:
            return _match_script(platforms, script, cwd)
    return None


def _is_helper(patterns: Sequence[str], argv: Sequence[str]) -> bool:
    for arg in argv[1:]:
        for pattern in patterns:
            if arg == pattern or (pattern.endswith("*") and arg.startswith(pattern[:-1])):
                return True
    return False


def _resolve_script(script: str, cwd: str | None) -> str | None:
    """The script's real path, when it can be known."""
    try:
        full = script if os.path.isabs(script) or not cwd else os.path.join(cwd, script)
        return os.path.realpath(full) if os.path.isabs(full) else None
    except (OSError, ValueError):
        return None


def _match_script(platforms: Sequence[Platform], script: str, cwd: str | None) -> Match | None:
    candidates = [script.replace("\\", "/")]
    # A global npm install runs the agent through a bin symlink (/usr/bin/gemini ->
    # ../lib/node_modules/@google/gemini-cli/dist/index.js): look through it.
    resolved = _resolve_script(script, cwd)
    if resolved is not None and resolved != script:
        candidates.append(resolved.replace("\\", "/"))
    for platform in platforms:
        for candidate in candidates:
            if basename(candidate) in platform.names or any(
                frag in candidate for frag in platform.script_fragments
            ):
                return Match(platform.id, "script", script=resolved)
    return None
