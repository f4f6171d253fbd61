"""The agents' own state, read as their files change: one reader module per agent.

- ``spec.py``: what a reader is (the ``AgentState`` protocol and the ``ReaderSpec`` value);
- ``registry.py``: the list of readers;
- ``manager.py``: finds each agent process's state directory, watches it, and asks the
  right reader for the process's conversation;
- ``files.py``: reading untrusted files safely; ``conversation_files.py``: the shared base
  of readers whose agent writes one JSONL file per conversation;
- one module per agent: ``claude_code.py``, ``codex.py``, ``gemini_cli.py``.
"""
