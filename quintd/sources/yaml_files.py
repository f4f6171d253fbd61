"""YAML from agents' files (Copilot CLI's ``workspace.yaml``), through PyYAML's safe loader
(libyaml's parser where PyYAML has it), as untrusted input:

- the text is capped before it is parsed (:data:`MAX_YAML_BYTES`, :data:`MAX_YAML_LINES`),
  and a file caught half written (no final newline) is not parsed at all;
- its events are counted first, by the parser alone (an event stream, no recursion, nothing
  built): a document nested deeper than :data:`MAX_YAML_DEPTH`, with more than
  :data:`MAX_YAML_ALIASES` aliases or :data:`MAX_YAML_EVENTS` events (an alias or nesting
  bomb) is refused before anything is constructed;
- the loader is the safe one, taking every plain scalar as the text it is (but null): no
  tags, no objects, no dates or numbers to convert back.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, ClassVar

import yaml

from quintd.sources.files import MAX_JSON_FILE_BYTES

MAX_YAML_BYTES = MAX_JSON_FILE_BYTES
MAX_YAML_LINES = 4096
MAX_YAML_DEPTH = 16
MAX_YAML_ALIASES = 64
MAX_YAML_EVENTS = 50_000

_Safe: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_NULL = "tag:yaml.org,2002:null"


class _TextLoader(_Safe):  # type: ignore[misc]
    """The safe loader, with null as the only implicit type: ``true``, ``2026-11-29`` and
    ``12`` stay the text they are."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[Any, Any]]]] = {
        first: [(tag, rx) for tag, rx in resolvers if tag == _NULL]
        for first, resolvers in _Safe.yaml_implicit_resolvers.items()
    }


def _bounded(text: str) -> bool:
    """Whether the document stays within the depth, alias and event bounds, by its
    events alone."""
    depth = aliases = 0
    for count, event in enumerate(yaml.parse(text, Loader=_TextLoader)):
        if count > MAX_YAML_EVENTS:
            return False
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                return False
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_YAML_ALIASES:
                return False
    return True


def parse_flat_yaml(raw: bytes, wanted: Iterable[str]) -> dict[str, str | None] | None:
    """The top-level ``key: scalar`` pairs of a YAML mapping whose keys are in ``wanted``,
    as text (trimmed); a key whose value is null or anything but a scalar (a nested
    mapping or list) is None. The first document only. None for the whole file when it is
    not YAML, not a mapping, too large or too nested, or was caught half written (it does
    not end with a newline). Never raises."""
    if len(raw) > MAX_YAML_BYTES or not raw.endswith(b"\n"):
        return None
    text = raw.decode("utf-8", "replace")
    if text.count("\n") > MAX_YAML_LINES:
        return None
    try:
        if not _bounded(text):
            return None
        document = next(iter(yaml.load_all(text, Loader=_TextLoader)), None)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError):
        return None
    if not isinstance(document, dict):
        return None
    keep = frozenset(wanted)
    return {
        key: value.strip() if isinstance(value, str) else None
        for key, value in document.items()
        if isinstance(key, str) and key in keep
    }
