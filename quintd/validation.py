"""A small, strict checker for configuration tables: types as TOML gives them, ranges,
choices, unknown keys; every problem with its key path.

quintd used pydantic for this; the configuration is a few flat tables, and pydantic cost
the long-running daemon about 10 MiB of memory and the command line ~80 ms per start. The
checker keeps its semantics: strict types (``"1"`` is no number; an integer is a number),
no infinities or NaN, unknown keys refused, every problem reported (not just the first).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

Loc = tuple[str | int, ...]
MISSING: Any = object()  # no input to show


@dataclass(frozen=True)
class Problem:
    loc: Loc
    message: str
    got: Any = MISSING  # the offending input, when there is one to show
    kind: str = "value"  # "unknown", "missing", "type", "value"


class Invalid(Exception):
    def __init__(self, problems: Sequence[Problem]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, p.loc))}: {p.message}" for p in problems))
        self.problems = list(problems)


class Secret:
    """A value that never shows itself in a repr, a log or an error."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def get_secret_value(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('**********')"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


@dataclass(frozen=True)
class Rule:
    """How one key is checked. ``kind``: "float", "int", "str", "bool", "path", "secret",
    "choice" (one of ``choices``), "strings" (a list of strings), "table" (a nested table
    checked by ``table``), "tables" (a list of those). ``check``: a further test that
    returns the value (maybe normalised) or raises ValueError with the reason."""

    kind: str
    gt: float | None = None
    ge: float | None = None
    le: float | None = None
    min_length: int | None = None
    pattern: str | None = None
    choices: tuple[str, ...] = ()
    check: Callable[[Any], Any] | None = None
    table: Table | None = None
    required: bool = False


@dataclass(frozen=True)
class Table:
    """A table's keys and rules, and what to build of the checked values."""

    rules: Mapping[str, Rule]
    build: Callable[..., Any]
    after: Callable[[Any], None] | None = None  # a check of the whole table
    fields: tuple[str, ...] = field(default=())


def check_table(data: Any, table: Table, loc: Loc = ()) -> tuple[Any, list[Problem]]:
    """The built value of a table (None when it has problems) and every problem in it."""
    if not isinstance(data, dict):
        return None, [Problem(loc, "Input should be a valid dictionary", data, "type")]
    problems: list[Problem] = []
    values: dict[str, Any] = {}
    for key in data:
        if key not in table.rules:
            problems.append(Problem((*loc, key), "unknown key", kind="unknown"))
    for key, rule in table.rules.items():
        if key not in data:
            if rule.required:
                problems.append(Problem((*loc, key), "Field required", kind="missing"))
            continue
        value, found = _check_value(data[key], rule, (*loc, key))
        problems += found
        if not found:
            values[key] = value
    if problems:
        return None, problems
    built = table.build(**values)
    if table.after is not None:
        try:
            table.after(built)
        except ValueError as exc:
            return None, [Problem(loc, str(exc), data)]
    return built, []


def _check_value(value: Any, rule: Rule, loc: Loc) -> tuple[Any, list[Problem]]:
    kind = rule.kind
    if kind == "table":
        assert rule.table is not None
        return check_table(value, rule.table, loc)
    if kind == "tables":
        assert rule.table is not None
        if not isinstance(value, list):
            return None, [Problem(loc, "Input should be a valid list", value, "type")]
        items, problems = [], []
        for index, item in enumerate(value):
            built, found = check_table(item, rule.table, (*loc, index))
            items.append(built)
            problems += found
        if problems:
            return None, problems
        if rule.check is not None:
            try:
                return rule.check(tuple(items)), []
            except ValueError as exc:
                return None, [Problem(loc, str(exc))]
        return tuple(items), []
    if kind == "strings":
        if not isinstance(value, list):
            return None, [Problem(loc, "Input should be a valid list", value, "type")]
        bad = [
            Problem((*loc, i), "Input should be a valid string", v, "type")
            for i, v in enumerate(value)
            if not isinstance(v, str)
        ]
        return (tuple(value), []) if not bad else (None, bad)
    checked, message = _scalar(value, rule)
    if message is not None:
        return None, [Problem(loc, message, value, "type")]
    if rule.check is not None:
        try:
            checked = rule.check(checked)
        except ValueError as exc:
            return None, [Problem(loc, str(exc), value)]
    return checked, []


def _scalar(value: Any, rule: Rule) -> tuple[Any, str | None]:
    kind = rule.kind
    if kind in ("float", "int"):
        wanted_int = kind == "int"
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None, "Input should be a valid integer" if wanted_int else (
                "Input should be a valid number"
            )
        if wanted_int and not isinstance(value, int):
            return None, "Input should be a valid integer"
        if isinstance(value, float) and not math.isfinite(value):
            return None, "Input should be a finite number"
        number = float(value) if not wanted_int else value
        failed = (
            (rule.gt is not None and not number > rule.gt, "greater than", rule.gt),
            (rule.ge is not None and not number >= rule.ge, "greater than or equal to", rule.ge),
            (rule.le is not None and not number <= rule.le, "less than or equal to", rule.le),
        )
        for bad, words, bound in failed:
            if bad and bound is not None:
                shown = int(bound) if float(bound).is_integer() else bound
                return None, f"Input should be {words} {shown}"
        return number, None
    if kind == "bool":
        return (
            (value, None) if isinstance(value, bool) else (None, "Input should be a valid boolean")
        )
    if not isinstance(value, str):
        return None, "Input should be a valid string"
    if rule.min_length is not None and len(value) < rule.min_length:
        return None, f"String should have at least {rule.min_length} character"
    if rule.pattern is not None and not re.fullmatch(rule.pattern, value):
        return None, f"String should match pattern '{rule.pattern}'"
    if kind == "choice":
        if value not in rule.choices:
            options = [repr(c) for c in rule.choices]
            return None, f"Input should be {', '.join(options[:-1])} or {options[-1]}"
        return value, None
    if kind == "path":
        return Path(value), None
    if kind == "secret":
        return Secret(value), None
    return value, None
