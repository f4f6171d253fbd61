"""The agents' own state, read as their files change: one reader module per agent, each
only its agent's format, on a shared kit.

- ``spec.py``: what a reader is (the ``AgentState`` protocol, the ``Reader`` base and the
  ``ReaderSpec`` value); ``registry.py``: the list of readers;
- ``manager.py``: finds each agent process's state directory, watches it, and hands each
  directory's reader one :class:`~quintd.sources.attribution.Pass` a pass;
- the kit: ``attribution.py`` (the pass; which process a lock, registry or conversation is
  of), ``times.py`` (the time parser and slacks), ``changes.py`` (what changed since),
  ``processes.py`` (the process table, one tree walk), ``files.py`` / ``sqlite_files.py`` /
  ``yaml_files.py`` (reading untrusted files), and the bases ``conversation_files.py``
  (JSONL conversations), ``pid_registry.py`` (a live registry and transcripts) and
  ``sqlite_sessions.py`` (sessions in SQLite);
- one module per agent: ``claude_code.py``, ``codex.py``, ``gemini_cli.py`` ... No reader
  imports another (``tests/test_architecture.py``).
"""
