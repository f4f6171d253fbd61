"""A configuration's problems in words: each names the file, the line (where it can be
found), the key path and what is wrong, and never echoes a token. ``quintd`` prints them
and exits 78."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

# pydantic's words for some problems, and ours.
_WORDS = {
    "extra_forbidden": "unknown key",
    "missing": "is required",
}


def describe(error: ValidationError, text: str, source: Path | None) -> str:
    """Every problem of a file, one line each."""
    where = str(source) if source else "<defaults>"
    lines = []
    for problem in error.errors(include_url=False):
        loc = [str(part) for part in problem["loc"] if not _is_wrapper(part)]
        key = ".".join(loc) or "(the file)"
        line = find_key_line(text, loc)
        at = f", line {line}" if line else ""
        kind = problem["type"]
        message = _WORDS.get(kind) or _message(problem)
        # Never echo a token back, even a malformed one.
        secret = any("token" in part for part in loc)
        got = problem.get("input")
        shown = kind not in _WORDS and not secret and not isinstance(got, dict | list | tuple)
        if shown and "input" in problem:
            message += f" (got {_short_repr(got)})"
        lines.append(f"{where}{at}: {key}: {message}")
    return "\n".join(lines)


def _is_wrapper(part: Any) -> bool:
    """pydantic names the branch of a union (``function-after[...]``, ``SecretStr``) in a
    location: no key of the file."""
    return isinstance(part, str) and (
        "[" in part or part in ("SecretStr", "Path", "str", "none", "tuple")
    )


def _message(problem: Any) -> str:
    message = str(problem["msg"])
    for prefix in ("Value error, ", "Assertion failed, "):
        if message.startswith(prefix):
            return message[len(prefix) :]
    return message


def _short_repr(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def find_key_line(text: str, loc: list[str]) -> int | None:
    """Best-effort 1-based line of a key path in TOML text written in the usual style
    (``[table]`` and ``[[array]]`` headers, ``key = value`` lines)."""
    if not text or not loc:
        return None
    table: list[str] = []
    arrays: dict[str, int] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            is_array = line.startswith("[[")
            name = line.strip("[]").strip()
            table = [p.strip().strip("\"'") for p in name.split(".")]
            if is_array:
                arrays[name] = arrays.get(name, -1) + 1
                table.append(str(arrays[name]))
            if table == loc or (is_array and table[:-1] == loc):
                return number
            continue
        key = line.split("=", 1)[0].strip().strip("\"'")
        path = table + [p.strip().strip("\"'") for p in key.split(".")]
        if path == loc[: len(path)] and "=" in line:
            return number
    return None
