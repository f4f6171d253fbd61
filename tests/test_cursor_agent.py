"""cursor-agent: no CLI can run here and no fixture exists, so ``~/.cursor`` is built in the
shape cursor-agent writes as recorded by third-party readers and writers
(inference-sh/agentprotocol ``transcript/sqlite/cursor.go`` at
33ea7b316c5a1119f9aca414b48c4852bf33e2ce, and the cursor-written testdata it reads), step by
step, and replayed with hand-made process records (tests/replay.py). Unverified against a
real run."""

from __future__ import annotations

import json
import os
import sqlite3
from pathlib import Path

from replay import MACHINE, Rec, RecordedProcesses, Replay, agents, story

from quintd.identity import native_session_id
from quintd.model import ConversationFacts
from quintd.sources import cursor_agent, cursor_chats, files, sqlite_sessions
from quintd.sources.cursor_chats import cwd_hash, project_slug
from quintd.sources.spec import ReaderContext

# inference-sh/agentprotocol transcript/sqlite/cursor.go (Write) at
# 33ea7b316c5a1119f9aca414b48c4852bf33e2ce.
DDL = (
    "CREATE TABLE IF NOT EXISTS blobs (id TEXT PRIMARY KEY, data BLOB);"
    " CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);"
)
T0 = 1_790_000_000.0
MODEL = "gpt-5"
X = "287974f9-0000-4000-8000-000000000001"
Y = "287974f9-0000-4000-8000-000000000002"
VERSIONS = "/home/dev/.local/share/cursor-agent/versions/2026.07.16-899851b"


class Cursor:
    """``~/.cursor`` as cursor-agent writes it."""

    def __init__(self, home: Path, cwd: Path) -> None:
        self.home = home
        self.cwd = cwd
        self.root = home / ".cursor"

    def chat_dir(self, chat: str) -> Path:
        return self.root / "chats" / cwd_hash(str(self.cwd)) / chat

    def chat(self, chat: str, at: float, name: str = "New Agent", hex_meta: bool = True) -> Path:
        directory = self.chat_dir(chat)
        directory.mkdir(parents=True)
        conn = sqlite3.connect(directory / "store.db")
        conn.executescript(DDL)
        conn.close()
        self.meta(chat, name, at, hex_meta)
        meta = {
            "schemaVersion": 1,
            "createdAtMs": int(at * 1000),
            "hasConversation": False,
            "updatedAtMs": int(at * 1000),
            "cwd": str(self.cwd),
        }
        (directory / "meta.json").write_text(json.dumps(meta))
        self.stamp(chat, at)
        return directory / "store.db"

    def stamp(self, chat: str, at: float) -> None:
        """File times on this test's clock."""
        directory = self.chat_dir(chat)
        for path in (directory / "store.db", directory / "meta.json", directory):
            if path.exists():
                os.utime(path, (at, at))

    def meta(self, chat: str, name: str, at: float, hex_meta: bool = True) -> None:
        value = json.dumps(
            {
                "agentId": chat,
                "latestRootBlobId": "0" * 64,
                "name": name,
                "mode": "default",
                "createdAt": int(at * 1000),
                "blobEncryptionKey": "ab" * 32,
                "lastUsedModel": MODEL,
            }
        )
        conn = sqlite3.connect(self.chat_dir(chat) / "store.db")
        conn.execute(
            "INSERT OR REPLACE INTO meta (key, value) VALUES ('0', ?)",
            (value.encode().hex() if hex_meta else value,),
        )
        conn.commit()
        conn.close()
        self.stamp(chat, at)

    def transcript(self, chat: str, *rows: dict) -> None:
        base = self.root / "projects" / project_slug(str(self.cwd)) / "agent-transcripts"
        path = base / chat / f"{chat}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in rows)


USER = {"role": "user", "message": {"content": [{"type": "text", "text": "<user_query>…"}]}}
ANSWER = {"role": "assistant", "message": {"content": [{"type": "text", "text": "done"}]}}
ENDED = {"type": "turn_ended", "status": "success"}


def _agent(pid: int, cwd: Path, *open_files: Path, start: float = T0, args: tuple = ()) -> Rec:
    """The bundled node, run by the ``cursor-agent`` wrapper with ``exec -a``."""
    return Rec(
        pid,
        1,
        "node",
        f"{VERSIONS}/node",
        ["cursor-agent", f"{VERSIONS}/index.js", *args],
        str(cwd),
        start,
        open_files=[str(f) for f in open_files],
    )


def _setup(tmp_path: Path) -> tuple[Path, Path, Cursor]:
    home = tmp_path / "home"
    project = home / "src" / "shop"
    project.mkdir(parents=True)
    return home, project, Cursor(home, project)


def _id(native: str) -> str:
    return native_session_id(MACHINE, "cursor-agent", native, uid=os.getuid())


def test_cursor_start_prompt_name_idle_new_chat_and_exit(tmp_path: Path) -> None:
    home, project, cursor = _setup(tmp_path)
    replay = Replay(home, T0, idle_after=30, readers=(cursor_agent.SPEC,))

    replay.step([_agent(800, project)], T0 + 1)
    first = cursor.chat(X, T0 + 1.5)
    procs = [_agent(800, project, first)]  # it holds its chat's store.db open
    replay.step(procs, T0 + 2)
    cursor.transcript(X, USER)
    cursor.meta(X, "Add retries to the client", T0 + 10)
    replay.step(procs, T0 + 10)
    cursor.transcript(X, ANSWER, ENDED)
    replay.step(procs, T0 + 16)
    replay.restart()
    replay.step(procs, T0 + 17)
    replay.step(procs, T0 + 50)  # quiet: idle
    facts, _ = replay.sources.observe(replay.agents)
    assert isinstance(facts[800], ConversationFacts)
    assert facts[800].subagents == ()  # cursor-agent stores none locally
    second = cursor.chat(Y, T0 + 60)  # /new: a new chat directory
    procs = [_agent(800, project, second)]
    replay.step(procs, T0 + 61)
    replay.step([], T0 + 70)

    name = "Add retries to the client"
    assert story(replay.events) == [
        ("s1", "active", "shop", None, None),
        ("s1", "active", "shop", MODEL, None),  # the chat took the process's session over
        ("s1", "active", name, MODEL, None),
        ("s1", "idle", name, MODEL, None),
        ("s2", "active", "shop", MODEL, None),
        ("s1", "ended", name, MODEL, None),
        ("s2", "ended", "shop", MODEL, None),
    ]
    ids = list(dict.fromkeys(e.session_id for e in replay.events))
    assert ids[1:] == [_id(Y)]


def test_cursor_busy_and_idle_from_the_transcript(tmp_path: Path) -> None:
    home, project, cursor = _setup(tmp_path)
    store = cursor.chat(X, T0 + 1)
    replay = Replay(home, T0, readers=(cursor_agent.SPEC,))
    replay.step([_agent(800, project, store)], T0 + 2)

    def status() -> str | None:
        facts, _ = replay.sources.observe(replay.agents)
        found = facts[800]
        assert isinstance(found, ConversationFacts)
        return found.status

    seen = [status()]  # no transcript: unknown, the CPU decides
    cursor.transcript(X, USER)
    seen.append(status())
    cursor.transcript(X, ANSWER)
    seen.append(status())
    cursor.transcript(X, ENDED)
    seen.append(status())
    assert seen == [None, "busy", "busy", "idle"]


def _old_chat(cursor: Cursor) -> None:
    cursor.chat(X, T0 - 100, "Old chat", hex_meta=False)  # plain JSON meta: accepted too


def test_cursor_without_open_files_md5_of_the_cwd_and_time(tmp_path: Path) -> None:
    """Where open files cannot be read: the chat of the process's cwd's directory begun
    after it started, never an older one."""
    home, project, cursor = _setup(tmp_path)
    _old_chat(cursor)
    replay = Replay(home, T0, readers=(cursor_agent.SPEC,))
    replay.step([_agent(800, project)], T0 + 1)
    cursor.chat(Y, T0 + 2, "Fresh chat")
    replay.step([_agent(800, project)], T0 + 3)
    assert story(replay.events) == [
        ("s1", "active", "shop", None, None),
        ("s1", "active", "Fresh chat", MODEL, None),
    ]


def test_cursor_resume_names_an_older_chat(tmp_path: Path) -> None:
    home, project, cursor = _setup(tmp_path)
    _old_chat(cursor)
    replay = Replay(home, T0, readers=(cursor_agent.SPEC,))
    resumed = [_agent(900, project, start=T0 + 20, args=("--resume", X))]
    replay.step(resumed, T0 + 21)
    assert story(replay.events) == [("s1", "active", "shop", None, None)]  # not written yet
    cursor.meta(X, "Old chat", T0 + 22, hex_meta=False)  # the resumed chat is written
    replay.step(resumed, T0 + 23)
    facts, _ = replay.sources.observe(replay.agents)
    assert isinstance(facts[900], ConversationFacts)
    assert (facts[900].native_id, facts[900].name) == (X, "Old chat")


def test_cursor_acp_session_held_open(tmp_path: Path) -> None:
    home, project, cursor = _setup(tmp_path)
    directory = cursor.root / "acp-sessions" / X
    directory.mkdir(parents=True)
    conn = sqlite3.connect(directory / "store.db")
    conn.executescript(DDL)
    meta = {"agentId": X, "name": "ACP work", "lastUsedModel": {"modelId": "claude-4"}}
    conn.execute("INSERT INTO meta VALUES ('0', ?)", (json.dumps(meta).encode().hex(),))
    conn.commit()
    conn.close()
    (directory / "meta.json").write_text(json.dumps({"schemaVersion": 1, "cwd": str(project)}))
    replay = Replay(home, T0, readers=(cursor_agent.SPEC,))
    rec = _agent(800, project, directory / "store.db", args=("acp",))
    replay.step([rec], T0 + 1)
    assert story(replay.events) == [("s1", "active", "ACP work", "claude-4", None)]


def test_cursor_garbage_never_breaks_the_reader(tmp_path: Path) -> None:
    home, project, cursor = _setup(tmp_path)
    bad_db = cursor.chat_dir(X)
    bad_db.mkdir(parents=True)
    (bad_db / "store.db").write_bytes(b"not a database" * 50)
    (bad_db / "meta.json").write_text("[broken")
    odd = cursor.chat(Y, T0 + 1)
    conn = sqlite3.connect(odd)
    conn.execute("UPDATE meta SET value = 'zz-not-hex' WHERE key = '0'")
    conn.commit()
    conn.close()
    other = cursor.chat_dir("other-chat")
    other.mkdir()
    conn = sqlite3.connect(other / "store.db")
    conn.execute("CREATE TABLE meta (k TEXT, v TEXT)")  # renamed columns
    conn.close()
    cursor.transcript(Y, {"role": 5}, USER)
    with open(
        cursor.root
        / "projects"
        / project_slug(str(project))
        / "agent-transcripts"
        / Y
        / f"{Y}.jsonl",
        "a",
    ) as fh:
        fh.write("not json\n")
    replay = Replay(home, T0, readers=(cursor_agent.SPEC,))
    rec = _agent(800, project, bad_db / "store.db", odd, other / "store.db", Path("/etc/passwd"))
    replay.step([rec], T0 + 2)
    facts, _ = replay.sources.observe(replay.agents)
    found = facts[800]
    assert isinstance(found, ConversationFacts)
    assert found.native_id in (X, Y, "other-chat")
    assert replay.sources.errors == 0
    state = replay.sources._states[next(iter(replay.sources._states))]
    assert state.stats.garbage >= 3


def test_cursor_meta_decoding() -> None:
    plain = {"agentId": X, "name": "n"}
    assert cursor_chats._decode_meta(json.dumps(plain)) == plain
    assert cursor_chats._decode_meta(json.dumps(plain).encode().hex()) == plain
    assert cursor_chats._decode_meta(b"\x00\x01") is None
    assert cursor_chats._decode_meta("abc") is None  # odd-length hex
    assert cursor_chats._model({"modelId": "m1"}) == "m1"
    assert cursor_chats._model('{"name": "m2"}') == "m2"
    assert cursor_chats._model(7) is None
    # The real pair in agentprotocol's cursor-written testdata: chats/<this>/ and the
    # transcript's projects/<slug>/ of one run.
    assert cwd_hash("/tmp/harness-test-cursor-956164664/test-repo") == (
        "e87a7c25c9572737645a90bfc8b2ecfd"
    )
    assert project_slug("/tmp/harness-test-cursor-956164664/test-repo") == (
        "tmp-harness-test-cursor-956164664-test-repo"
    )


def test_cursor_reads_on_change_events_and_asks_open_files_rarely(tmp_path: Path) -> None:
    """Watched: the chat directory is listed once, files are read on events, and open
    files are asked of a process only when it is new or a chat appeared."""
    home, project, cursor = _setup(tmp_path)
    store = cursor.chat(X, T0 + 1)
    view = RecordedProcesses(home)
    view.show([_agent(800, project, store)])
    asked = []
    real = view.open_files
    view.open_files = lambda pid: asked.append(pid) or real(pid)  # type: ignore[method-assign]
    clock = [T0]
    state = cursor_agent.CursorAgentState(cursor.root, ReaderContext(lambda: clock[0], view))
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert state.facts(proc).native_id == X  # type: ignore[union-attr]
    assert asked == [800]
    for _ in range(3):
        clock[0] += 10
        state.prepare([proc])
    assert asked == [800]  # idle: nothing asked, nothing read
    cursor.transcript(X, USER)
    state.prepare([proc])
    assert state.facts(proc).status is None  # type: ignore[union-attr]  # no event yet
    path = cursor.root / "projects" / project_slug(str(project)) / "agent-transcripts" / X
    state.changed(path / f"{X}.jsonl")
    state.prepare([proc])
    assert state.facts(proc).status == "busy"  # type: ignore[union-attr]
    second = cursor.chat(Y, T0 + 40)
    view.show([_agent(800, project, second)])
    state.changed(second)
    state.prepare([proc])
    assert state.facts(proc).native_id == Y  # type: ignore[union-attr]
    assert asked == [800, 800]


# -- one chat's files, read alone -------------------------------------------------------


def _chat_files(root: Path, chat: str, meta: object, meta_json: dict | None) -> cursor_chats.Chat:
    """A chat directory under ``root``: a store.db whose meta "0" is ``meta`` (stored as
    given: text, bytes, or None for no row) and, if given, a meta.json."""
    directory = root / "chats" / cwd_hash("/home/dev/src/shop") / chat
    directory.mkdir(parents=True)
    conn = sqlite3.connect(directory / "store.db")
    conn.executescript(DDL)
    if meta is not None:
        conn.execute("INSERT INTO meta (key, value) VALUES ('0', ?)", (meta,))
    conn.commit()
    conn.close()
    if meta_json is not None:
        (directory / "meta.json").write_text(json.dumps(meta_json))
    return cursor_chats.Chat(chat, directory)


def _read_chat(root: Path, chat: cursor_chats.Chat) -> files.ReadStats:
    stats = files.ReadStats()
    cursor_chats.read_meta_json(chat, root, stats)
    cursor_chats.read_store(chat, root, stats)
    return stats


def test_cursor_meta_json_comes_first_and_the_store_fills_the_rest(tmp_path: Path) -> None:
    """meta.json's cwd, creation time and title win; the store's name wins over a title;
    the placeholder name is no name in either."""
    root = tmp_path / ".cursor"
    store = {
        "agentId": X,
        "name": "New Agent",
        "createdAt": 1_700_000_000_000,
        "workspacePath": "/from/the/store",
        "lastUsedModel": MODEL,
    }
    chat = _chat_files(
        root,
        X,
        json.dumps(store).encode().hex(),
        {"cwd": "/from/meta", "createdAtMs": 1_790_000_000_000, "title": "Titled in meta"},
    )
    stats = _read_chat(root, chat)
    assert (chat.cwd, chat.created, chat.name, chat.model) == (
        "/from/meta",
        1_790_000_000.0,
        "Titled in meta",
        MODEL,
    )
    assert chat.owner == os.getuid() and stats.garbage == 0
    # No meta.json: the store's workspace and creation time; still no placeholder name.
    bare = _chat_files(root, Y, json.dumps({**store, "agentId": Y}), None)
    assert _read_chat(root, bare).garbage == 0
    assert (bare.cwd, bare.created, bare.name, bare.model) == (
        "/from/the/store",
        1_700_000_000.0,
        None,
        MODEL,
    )
    assert bare.owner == os.getuid()  # the store's owner
    # No store.db (not written yet): meta.json's owner and title.
    early = _chat_files(root, "early", None, {"title": "Early"})
    (early.directory / "store.db").unlink()
    _read_chat(root, early)
    assert (early.owner, early.name) == (os.getuid(), "Early")
    # A generated name in the store beats meta.json's title; a placeholder title is none.
    named = _chat_files(
        root,
        "named",
        json.dumps({**store, "agentId": None, "name": "From the store"}),
        {"title": "meta"},
    )
    _read_chat(root, named)
    assert named.name == "From the store"
    placeholder = _chat_files(
        root, "placeholder", json.dumps({**store, "agentId": "placeholder"}), {"title": "New Agent"}
    )
    _read_chat(root, placeholder)
    assert placeholder.name is None


def test_cursor_store_of_another_chat_or_too_large_is_not_read(tmp_path: Path) -> None:
    root = tmp_path / ".cursor"
    other = _chat_files(root, X, json.dumps({"agentId": Y, "name": "Y's name"}), None)
    assert _read_chat(root, other).garbage == 1  # copied from another chat: garbage
    assert (other.name, other.model) == (None, None)
    # meta "0" up to the cap is read; one character more is not (and not garbage).
    value = json.dumps({"agentId": "capped", "name": "At the cap"})
    at_cap = _chat_files(root, "capped", value.ljust(cursor_chats.MAX_META_CHARS), None)
    assert _read_chat(root, at_cap).garbage == 0 and at_cap.name == "At the cap"
    over = _chat_files(root, "over", value.ljust(cursor_chats.MAX_META_CHARS + 1), None)
    assert _read_chat(root, over).garbage == 0 and over.name is None
    # No row "0": nothing to say, not garbage; an empty one is garbage.
    assert _read_chat(root, _chat_files(root, "norow", None, None)).garbage == 0
    assert _read_chat(root, _chat_files(root, "empty", "", None)).garbage == 1


def test_cursor_models_and_meta_in_every_shape() -> None:
    assert cursor_chats._model({"modelId": "a", "model": "b", "name": "c", "id": "d"}) == "a"
    assert cursor_chats._model({"model": "b", "name": "c", "id": "d"}) == "b"
    assert cursor_chats._model({"name": "c", "id": "d"}) == "c"
    assert cursor_chats._model({"id": "d"}) == "d"
    assert cursor_chats._model({"modelId": "", "model": {"id": "nested"}}) == "nested"
    assert cursor_chats._model({"other": "x"}) is None
    assert cursor_chats._model("{not json") is None  # JSON-looking garbage is no name
    plain = {"agentId": X}
    assert cursor_chats._decode_meta(b'{"agentId": "%s"}' % X.encode()) == plain  # a BLOB
    assert cursor_chats._decode_meta(f"  {json.dumps(plain)}\n") == plain
    assert cursor_chats._decode_meta(b"") is None
    assert cursor_chats._decode_meta(7) is None
    assert cursor_chats._decode_meta("ff" * 4) is None  # hex, but not of a JSON object


def _acp(cursor: Cursor, chat: str, name: str, cwd: Path) -> Path:
    directory = cursor.root / "acp-sessions" / chat
    directory.mkdir(parents=True)
    conn = sqlite3.connect(directory / "store.db")
    conn.executescript(DDL)
    meta = {"agentId": chat, "name": name, "lastUsedModel": MODEL}
    conn.execute("INSERT INTO meta VALUES ('0', ?)", (json.dumps(meta).encode().hex(),))
    conn.commit()
    conn.close()
    (directory / "meta.json").write_text(json.dumps({"schemaVersion": 1, "cwd": str(cwd)}))
    return directory


def test_cursor_state_dirs_acp_events_and_polling(tmp_path: Path) -> None:
    home, project, cursor = _setup(tmp_path)
    view = RecordedProcesses(home)
    clock = [T0]
    state = cursor_agent.CursorAgentState(cursor.root, ReaderContext(lambda: clock[0], view))
    assert state.watch_dirs() == [
        cursor.root / "chats",
        cursor.root / "acp-sessions",
        cursor.root / "projects",
    ]
    assert not state.has_registry_dir()
    (cursor.root / "chats").mkdir(parents=True)
    assert state.has_registry_dir()
    view.show([_agent(800, project, args=("acp",))])
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert state.facts(proc) is None
    # An ACP session appears: its event asks the process's open files again.
    directory = _acp(cursor, X, "ACP work", project)
    view.show([_agent(800, project, directory / "store.db", args=("acp",))])
    clock[0] += 1
    state.changed(directory)
    state.prepare([proc])
    assert state.facts(proc).name == "ACP work"  # type: ignore[union-attr]
    # It is renamed: its event reads it again, once the store may be read again.
    conn = sqlite3.connect(directory / "store.db")
    meta = {"agentId": X, "name": "Renamed", "lastUsedModel": MODEL}
    conn.execute("UPDATE meta SET value = ? WHERE key = '0'", (json.dumps(meta),))
    conn.commit()
    conn.close()
    os.utime(directory / "store.db", (T0 + 50, T0 + 50))
    clock[0] += 10
    state.changed(directory / "store.db")
    state.prepare([proc])
    assert state.facts(proc).name == "Renamed"  # type: ignore[union-attr]
    # Without events, a poll reads every known file again.
    meta["name"] = "Polled"
    conn = sqlite3.connect(directory / "store.db")
    conn.execute("UPDATE meta SET value = ? WHERE key = '0'", (json.dumps(meta),))
    conn.commit()
    conn.close()
    os.utime(directory / "store.db", (T0 + 60, T0 + 60))
    clock[0] += 10
    state.prepare([proc])
    assert state.facts(proc).name == "Renamed"  # type: ignore[union-attr]  # no event
    state.poll()
    state.prepare([proc])
    assert state.facts(proc).name == "Polled"  # type: ignore[union-attr]


def test_cursor_flat_transcript_and_a_turn_left_open_earlier(tmp_path: Path) -> None:
    """A transcript may lie flat in ``agent-transcripts``; a turn an earlier process left
    open is no work of a process started after it was last written."""
    home, project, cursor = _setup(tmp_path)
    store = cursor.chat(X, T0 + 1)
    base = cursor.root / "projects" / project_slug(str(project)) / "agent-transcripts"
    base.mkdir(parents=True)
    flat = base / f"{X}.jsonl"
    flat.write_text(json.dumps(USER) + "\n")
    os.utime(flat, (T0 + 2, T0 + 2))
    replay = Replay(home, T0, readers=(cursor_agent.SPEC,))
    replay.step([_agent(800, project, store)], T0 + 3)
    facts, _ = replay.sources.observe(replay.agents)
    assert isinstance(facts[800], ConversationFacts) and facts[800].status == "busy"
    # Resumed by a process started long after the open turn was written: idle.
    replay = Replay(home, T0 + 100, readers=(cursor_agent.SPEC,))
    replay.step([_agent(900, project, store, start=T0 + 100)], T0 + 101)
    facts, _ = replay.sources.observe(replay.agents)
    assert isinstance(facts[900], ConversationFacts) and facts[900].status == "idle"
    # ... within the start's slack, still its own: busy.
    replay = Replay(home, T0 + 4, readers=(cursor_agent.SPEC,))
    replay.step([_agent(901, project, store, start=T0 + 4)], T0 + 5)  # 2 s: the slack
    facts, _ = replay.sources.observe(replay.agents)
    assert isinstance(facts[901], ConversationFacts) and facts[901].status == "busy"


def _state_of(home: Path) -> tuple[RecordedProcesses, list[float], cursor_agent.CursorAgentState]:
    view = RecordedProcesses(home)
    clock = [T0]
    root = home / ".cursor"
    return view, clock, cursor_agent.CursorAgentState(root, ReaderContext(lambda: clock[0], view))


def test_cursor_directory_events_list_and_read_again(tmp_path: Path) -> None:
    """An event on a project's directory lists it again; one on a chat's directory reads
    that chat again; one on a flat transcript reads it."""
    home, project, cursor = _setup(tmp_path)
    view, clock, state = _state_of(home)
    cursor.chat(X, T0 + 1)
    view.show([_agent(800, project)])  # its open files cannot tell
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert state.facts(proc).native_id == X  # type: ignore[union-attr]
    cursor.chat(Y, T0 + 20, "Second")
    clock[0] += 10
    state.prepare([proc])
    assert state.facts(proc).native_id == X  # type: ignore[union-attr]  # no event yet
    state.changed(cursor.chat_dir(Y).parent)  # the project's directory
    state.prepare([proc])
    assert state.facts(proc).name == "Second"  # type: ignore[union-attr]
    cursor.meta(Y, "Renamed", T0 + 30)
    clock[0] += 10
    state.changed(cursor.chat_dir(Y))  # the chat's directory
    state.prepare([proc])
    assert state.facts(proc).name == "Renamed"  # type: ignore[union-attr]
    base = cursor.root / "projects" / project_slug(str(project)) / "agent-transcripts"
    base.mkdir(parents=True)
    (base / f"{Y}.jsonl").write_text(json.dumps(USER) + "\n")
    state.changed(base / f"{Y}.jsonl")
    state.prepare([proc])
    assert state.facts(proc).status == "busy"  # type: ignore[union-attr]
    with open(base / f"{Y}.jsonl", "a") as fh:
        fh.write(json.dumps(ENDED) + "\n")
    state.changed(base / f"{Y}.jsonl")
    state.prepare([proc])
    assert state.facts(proc).status == "idle"  # type: ignore[union-attr]


def test_cursor_a_directory_nobody_runs_in_is_listed_again_later(tmp_path: Path) -> None:
    home, project, cursor = _setup(tmp_path)
    view, clock, state = _state_of(home)
    (cursor.chat_dir(X).parent).mkdir(parents=True)
    view.show([_agent(800, project)])
    [first] = agents(view.recs.values(), home)
    state.prepare([first])
    assert state.facts(first) is None
    state.prepare([])  # it exits
    cursor.chat(X, T0 + 30, "Later")  # written while nobody ran there, no event
    view.show([_agent(801, project, start=T0 + 29)])
    [second] = agents(view.recs.values(), home)
    clock[0] += 30
    state.prepare([second])
    assert state.facts(second).name == "Later"  # type: ignore[union-attr]


def test_cursor_a_chat_resumed_inside_a_running_cli_is_asked_again(tmp_path: Path) -> None:
    """/resume in the TUI: an older chat nobody holds is written; the open files are asked
    again (no more than every few seconds) and the process holds it now."""
    home, project, cursor = _setup(tmp_path)
    view, clock, state = _state_of(home)
    old = cursor.chat(X, T0 - 100, "Old chat")
    new = cursor.chat(Y, T0 + 1)
    view.show([_agent(800, project, new)])
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert state.facts(proc).native_id == Y  # type: ignore[union-attr]
    view.show([_agent(800, project, new, old)])  # it opens the old chat
    cursor.meta(X, "Old chat", T0 + 10)
    os.utime(cursor.chat_dir(Y), (T0 + 1, T0 + 1))
    clock[0] += 10
    state.changed(old)
    state.prepare([proc])  # the write is seen: asked again at the next due pass
    clock[0] += sqlite_sessions.RETRY_S
    state.prepare([proc])
    assert state.facts(proc).native_id == X  # type: ignore[union-attr]


# -- issue 24: what the sample mutation runs left standing ------------------------------


def test_cursor_resume_of_a_known_chat_asks_again_after_retry_s_and_not_for_held_writes(
    tmp_path: Path,
) -> None:
    """/resume of a chat already known (written since the process started, so no listing
    finds it anew): its write asks the open files again once ``RETRY_S`` has passed since
    they were last asked, exactly then; a chat the process holds being written asks
    nothing; its store is read again ``RETRY_S`` after the last read, exactly then."""
    retry = sqlite_sessions.RETRY_S
    home, project, cursor = _setup(tmp_path)
    view, clock, state = _state_of(home)
    asked: list[float] = []
    real = view.open_files
    view.open_files = lambda pid: asked.append(clock[0]) or real(pid)  # type: ignore[method-assign]
    first = cursor.chat(X, T0 + 1)
    view.show([_agent(800, project, first)])
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert state.facts(proc).native_id == X  # type: ignore[union-attr]
    clock[0] = T0 + 20  # /new
    second = cursor.chat(Y, T0 + 20)
    view.show([_agent(800, project, second)])
    state.changed(cursor.chat_dir(Y))
    state.prepare([proc])
    assert state.facts(proc).native_id == Y  # type: ignore[union-attr]
    assert asked == [T0, T0 + 20]
    clock[0] = T0 + 22  # /resume X: it holds X now, and X is written
    view.show([_agent(800, project, first)])
    cursor.meta(X, "Resumed", T0 + 22)
    state.changed(first)
    state.prepare([proc])
    assert state.facts(proc).native_id == Y  # type: ignore[union-attr]  # not asked yet
    assert asked == [T0, T0 + 20]
    clock[0] = T0 + 20 + retry
    state.prepare([proc])
    found = state.facts(proc)
    assert found is not None and (found.native_id, found.name) == (X, "Resumed")
    assert asked == [T0, T0 + 20, T0 + 20 + retry]
    clock[0] = T0 + 26  # X streams: its store is read again RETRY_S after the last read
    cursor.meta(X, "Streaming", T0 + 26)
    state.changed(first)
    state.prepare([proc])
    assert state.facts(proc).name == "Resumed"  # type: ignore[union-attr]
    clock[0] = T0 + 22 + retry
    state.prepare([proc])
    assert state.facts(proc).name == "Streaming"  # type: ignore[union-attr]
    clock[0] = T0 + 40  # X, which it holds, written: nothing asked, now or later
    cursor.meta(X, "Streaming", T0 + 40)
    state.changed(first)
    state.prepare([proc])
    clock[0] = T0 + 50
    state.prepare([proc])
    assert asked == [T0, T0 + 20, T0 + 20 + retry]


def test_cursor_a_transcript_past_the_read_budget_is_read_on_without_an_event(
    tmp_path: Path,
) -> None:
    home, project, cursor = _setup(tmp_path)
    view, clock, state = _state_of(home)
    store = cursor.chat(X, T0 + 1)
    pad = {"role": "user", "message": {"content": [{"type": "text", "text": "x" * 2**20}]}}
    cursor.transcript(X, *[pad] * (files.READ_BUDGET_BYTES // 2**20 + 1), ENDED)
    view.show([_agent(800, project, store)])
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert state.facts(proc).status == "busy"  # type: ignore[union-attr]  # the budget's part
    clock[0] += 1
    state.prepare([proc])  # no event: the rest
    assert state.facts(proc).status == "idle"  # type: ignore[union-attr]


def test_cursor_a_chat_held_by_one_process_is_not_another_s_by_cwd(tmp_path: Path) -> None:
    """Two cursor-agents in one project: the chat one holds open is not claimed by the
    other (which holds none) from its cwd and times."""
    home, project, cursor = _setup(tmp_path)
    view, _, state = _state_of(home)
    store = cursor.chat(X, T0 + 5)
    view.show([_agent(800, project, store, start=T0 + 2), _agent(801, project, start=T0)])
    procs = agents(view.recs.values(), home)
    state.prepare(procs)
    found = {p.pid: getattr(state.facts(p), "native_id", None) for p in procs}
    assert found == {800: X, 801: None}


def test_cursor_two_chats_written_at_once_the_one_created_last_is_current(
    tmp_path: Path,
) -> None:
    """Same write time: the chat created last wins, whatever its id (Y's sorts after X's)."""
    home, project, cursor = _setup(tmp_path)
    view, _, state = _state_of(home)
    later, earlier = cursor.chat(X, T0 + 5), cursor.chat(Y, T0 + 1)
    for chat in (X, Y):
        cursor.stamp(chat, T0 + 10)
    view.show([_agent(800, project, later, earlier)])
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    assert state.facts(proc).native_id == X  # type: ignore[union-attr]
    assert X < Y


def test_cursor_a_resume_seen_before_retry_s_is_asked_once_it_is_due(tmp_path: Path) -> None:
    """A resume's write seen too soon after the last ask is not forgotten by the passes
    before the ask is due: the process is asked at the first pass ``RETRY_S`` after it."""
    retry = sqlite_sessions.RETRY_S
    home, project, cursor = _setup(tmp_path)
    view, clock, state = _state_of(home)
    asked: list[float] = []
    real = view.open_files
    view.open_files = lambda pid: asked.append(clock[0]) or real(pid)  # type: ignore[method-assign]
    first = cursor.chat(X, T0 + 1)
    view.show([_agent(800, project, first)])
    [proc] = agents(view.recs.values(), home)
    state.prepare([proc])
    clock[0] = T0 + 20  # /new
    second = cursor.chat(Y, T0 + 20)
    view.show([_agent(800, project, second)])
    state.changed(cursor.chat_dir(Y))
    state.prepare([proc])
    assert state.facts(proc).native_id == Y  # type: ignore[union-attr]
    clock[0] = T0 + 21  # /resume X, once, then nothing is written
    view.show([_agent(800, project, first)])
    cursor.meta(X, "Resumed", T0 + 21)
    state.changed(first)
    state.prepare([proc])
    for at in (22, 23, 24):
        clock[0] = T0 + at
        state.prepare([proc])
        assert state.facts(proc).native_id == Y  # type: ignore[union-attr]  # not due yet
    clock[0] = T0 + 20 + retry
    state.prepare([proc])
    assert state.facts(proc).native_id == X  # type: ignore[union-attr]
    for at in (30, 40, 50):  # asked once: not again
        clock[0] = T0 + at
        state.prepare([proc])
    assert asked == [T0, T0 + 20, T0 + 20 + retry]
