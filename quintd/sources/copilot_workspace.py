"""A Copilot CLI conversation's ``workspace.yaml`` (flat YAML, rewritten in place): the
name the user gave it and when it was created, read once per version of the file.
"""

from __future__ import annotations

from pathlib import Path

from quintd.sources.changes import lstat_signature
from quintd.sources.copilot_events import Conversation
from quintd.sources.copilot_locks import STATE
from quintd.sources.files import COMPLAINTS, MAX_JSON_FILE_BYTES, ReadStats, read_whole, text
from quintd.sources.times import parse_time
from quintd.sources.yaml_files import parse_flat_yaml

WORKSPACE = "workspace.yaml"
MAX_WORKSPACE_BYTES = MAX_JSON_FILE_BYTES
_WORKSPACE_KEYS = frozenset({"id", "name", "user_named", "created_at"})


def read_workspace(conversation: Conversation, root: Path, stats: ReadStats) -> None:
    """A conversation's ``workspace.yaml``, when it changed: its name (only one the user
    gave) and creation time."""
    path = root / STATE / conversation.session_id / WORKSPACE
    if conversation.workspace is not None and lstat_signature(path) == conversation.workspace:
        return  # unchanged (the event was our own read): not opened again
    whole = read_whole(path, root, stats, MAX_WORKSPACE_BYTES, conversation.workspace)
    if whole is None or (whole.raw is not None and not whole.raw.endswith(b"\n")):
        return  # unchanged, or caught half written: the next change brings the rest
    conversation.workspace, info = whole.signature, whole.info  # once per version
    if whole.raw is None:
        return  # too large (counted)
    values = parse_flat_yaml(whole.raw, _WORKSPACE_KEYS)
    if values is None or values.get("id") not in (None, conversation.session_id):
        stats.garbage += 1
        COMPLAINTS.warn(path, info, "a workspace.yaml that is not what it should be")
        return
    # Copilot names a conversation after its first prompt until the user renames it
    # (`user_named: true`): only a name the user gave leaves the machine.
    named = str(values.get("user_named", "")).strip().lower() == "true"
    conversation.name = text(values.get("name")) if named else None
    conversation.created = parse_time(values.get("created_at")) or conversation.created
