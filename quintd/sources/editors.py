"""The VS Code-family editors (Cursor, VS Code, Windsurf, VSCodium): each agent conversation
inside the editor is a session of the editor's main process.

An editor keeps what its agents do in its ``User`` directory (Linux
``~/.config/<Editor>/User``, macOS ``~/Library/Application Support/<Editor>/User``,
Windows ``%APPDATA%\\<Editor>\\User``), each agent in its own corner of it. The reader of
a ``User`` directory (:class:`EditorState`) is made of *parts*, one per agent's storage,
each a :class:`~quintd.sources.spec.Reader` of the same directory: it watches what its
parts watch, hands each change to the parts whose directories hold it, and reports the
conversations of all of them. Which parts an editor has:

- Cursor: its composers (``cursor_composers.py``);
- VS Code: its chat, where GitHub Copilot Chat runs (``copilot_chat.py``);
- Windsurf (Cascade's conversations are encrypted), VSCodium: none of their own;
- in each of them, the extensions' agents (Cline, Roo Code, Kilo Code under
  ``User/globalStorage/<ext id>/``: ``editor_tasks.py``).

Where the parts find no conversation, the editor process is a session of its own, as it
was before these readers (``ReaderSpec`` ``waits_without_conversation``). None of this was
checked against a running editor: the formats come from each project's source (VS Code,
Cline, Roo Code) or from readers of real files (Cursor).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from quintd.model import AgentProcess, ConversationFacts
from quintd.sources.attribution import Pass
from quintd.sources.copilot_chat import CopilotChat
from quintd.sources.cursor_composers import CursorComposers
from quintd.sources.editor_tasks import ExtensionTasks
from quintd.sources.registry import spec
from quintd.sources.spec import AgentState, Reader, ReaderContext, StateFactory


class EditorState(Reader):
    """The reader of one editor's ``User`` directory: the union of its parts."""

    parts: tuple[StateFactory, ...] = ()

    def __init__(self, root: Path, context: ReaderContext) -> None:
        super().__init__(root, context)
        self._parts: list[AgentState] = [part(root, context) for part in self.parts]
        for part in self._parts:
            part.stats = self.stats  # counted as the directory's, as the manager reads it

    def watch_dirs(self) -> list[Path]:
        return list(dict.fromkeys(d for part in self._parts for d in part.watch_dirs()))

    def flat_dirs(self) -> set[Path]:
        return {d for part in self._parts for d in _flat_dirs(part)}

    def changed(self, path: Path) -> None:
        for part in self._parts:
            if any(path.is_relative_to(d) or d.is_relative_to(path) for d in part.watch_dirs()):
                part.changed(path)

    def poll(self) -> None:
        for part in self._parts:
            part.poll()

    def has_registry_dir(self) -> bool:
        return any(part.has_registry_dir() for part in self._parts)

    def begin(self, now: Pass) -> None:
        for part in self._parts:
            part.prepare(now)

    def facts(self, proc: AgentProcess) -> list[ConversationFacts] | None:
        found: list[ConversationFacts] = []
        for part in self._parts:
            facts = part.facts(proc)
            if isinstance(facts, ConversationFacts):
                found.append(facts)
            elif isinstance(facts, Sequence):
                found.extend(facts)
        return found or None


def _flat_dirs(part: AgentState) -> set[Path]:
    flat = getattr(part, "flat_dirs", None)
    return set(flat()) if flat is not None else set()


# The extensions' agents (Cline, Roo Code, Kilo Code) run in any of them: their part last.
class CursorState(EditorState):
    platform = "cursor"
    parts = (CursorComposers, ExtensionTasks)


class VsCodeState(EditorState):
    platform = "vscode-copilot"
    parts = (CopilotChat, ExtensionTasks)


class WindsurfState(EditorState):
    platform = "windsurf"
    parts = (ExtensionTasks,)


class VsCodiumState(EditorState):
    platform = "vscodium"
    parts = (ExtensionTasks,)


# where each editor keeps its User directory: the registry's lines
SPECS = tuple(spec(p) for p in ("cursor", "vscode-copilot", "windsurf", "vscodium"))
CURSOR_SPEC, VSCODE_SPEC, WINDSURF_SPEC, VSCODIUM_SPEC = SPECS
