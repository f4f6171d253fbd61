"""Every reader against hostile input: random bytes, truncations, and mutations of the
real files the agents wrote (Hypothesis, thousands of cases in all, deterministic).

For each reader, a home laid out from a real fixture (or, for the agents that cannot run
here, in the shape their source defines) and a process it belongs to; each case replaces
one of the reader's files with fuzzed bytes and runs a pass. A reader must never raise
(the manager counts what escapes as an error), and whatever it reports must already be
clean: ids, names and models that need no further cleaning.
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from conftest import needs_fixtures
from editor_fixture import GEN
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from replay import Rec, RecordedProcesses, agents
from zed_threads import Thread, ZedThreads, rfc3339

from quintd.model import ConversationFacts, clean_text
from quintd.sources import (
    claude_code,
    cline,
    codex,
    copilot_cli,
    crush,
    cursor_agent,
    editor_tasks,
    editors,
    gemini_cli,
    goose,
    kiro,
    opencode,
    qwen_code,
    zed,
)
from quintd.sources.manager import SourceManager, SourceSettings
from quintd.sources.spec import ReaderSpec

EXAMPLES = 150  # per file: 22 files -> 3,300 cases
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
T0 = 1_795_920_000.0


@dataclass
class Target:
    spec: ReaderSpec
    home: Path  # the test's home, laid out from real files
    recorded_home: str  # the home the processes were recorded with
    processes: list[Rec]
    files: list[Path]  # the reader's files to fuzz (each in turn)


def _copy(source: Path, home: Path, relative: str) -> None:
    shutil.copytree(source / relative, home / relative, dirs_exist_ok=True)


def _claude(tmp: Path) -> Target:
    fixtures = needs_fixtures("claude-code")
    home = tmp / "claude"
    _copy(fixtures / "home", home, ".claude")
    registry = home / ".claude" / "sessions" / "8262.json"
    ticks = str(json.loads(registry.read_text())["procStart"])
    project = home / ".claude" / "projects" / "-home-dev-src-shop-api"
    proc = Rec(
        8262,
        1,
        "claude",
        "/usr/bin/claude",
        ["claude"],
        "/home/dev/src/shop-api",
        T0,
        start_ticks=ticks,
    )
    files = [
        registry,
        *sorted(project.glob("*.jsonl"))[:1],
        *sorted(project.rglob("agent-*.meta.json"))[:1],
    ]
    return Target(claude_code.SPEC, home, "/home/dev", [proc], files)


def _codex(tmp: Path) -> Target:
    source = Path(__file__).parent / "fixtures" / "codex-two-tuis" / "home"
    home = tmp / "codex"
    _copy(source, home, ".codex")
    rollout = sorted((home / ".codex" / "sessions").rglob("rollout-*.jsonl"))[0]
    held = "/home/dev/" + str(rollout.relative_to(home))
    proc = Rec(
        4242,
        1,
        "codex",
        "/usr/local/bin/codex",
        ["codex", "exec", "go"],
        "/home/dev/src/shop-api",
        T0,
        open_files=[held],
    )
    return Target(
        codex.SPEC, home, "/home/dev", [proc], [rollout, home / ".codex" / "session_index.jsonl"]
    )


def _gemini(tmp: Path) -> Target:
    fixtures = needs_fixtures("gemini-cli")
    home = tmp / "gemini"
    _copy(fixtures / "snapshots" / "02-first-prompt-idle" / "home", home, ".gemini")
    chat = sorted((home / ".gemini" / "tmp").rglob("session-*.jsonl"))[0]
    started = json.loads(chat.read_text().splitlines()[0])["startTime"]
    from quintd.sources.times import parse_time as epoch

    proc = Rec(
        27707,
        1,
        "node",
        "/usr/bin/node",
        ["node", "/home/dev/.npm-global/bin/gemini"],
        "/home/dev/src/shop-api",
        (epoch(started) or T0) - 1,
    )
    # Gemini CLI before 0.39: the same chat as one JSON document (tests/test_gemini_legacy.py).
    records = [json.loads(line) for line in chat.read_text().splitlines()]
    header = {k: records[0][k] for k in ("sessionId", "projectHash", "startTime")}
    header["sessionId"] = "0dd5e551-0000-4000-8000-000000000001"  # a conversation of its own
    messages = [r for r in records[1:] if "type" in r]
    legacy = chat.with_name(chat.name.replace(".jsonl", "-old.json"))
    legacy.write_text(json.dumps({**header, "messages": messages, "summary": "t"}, indent=2))
    return Target(gemini_cli.SPEC, home, "/home/dev", [proc], [chat, legacy])


def _copilot(tmp: Path) -> Target:
    fixtures = needs_fixtures("copilot-cli")
    home = tmp / "copilot"
    _copy(fixtures / "snapshots" / "02-first-prompt-idle" / "home", home, ".copilot")
    state = next((home / ".copilot" / "session-state").iterdir())
    loader = Rec(
        17478,
        1,
        "node",
        "/usr/bin/node",
        ["node", "/home/dev2/.npm-global/bin/copilot"],
        "/home/dev2/src/shop-api",
        T0 - 10**6,
    )
    native = Rec(
        17491,
        17478,
        "MainThread",
        "/opt/copilot/copilot",
        ["copilot"],
        "/home/dev2/src/shop-api",
        T0 - 10**6,
        open_files=[f"/home/dev2/.copilot/session-state/{state.name}/inuse.17491.hold"],
    )
    return Target(
        copilot_cli.SPEC,
        home,
        "/home/dev2",
        [loader, native],
        [
            state / "workspace.yaml",
            state / "events.jsonl",
            home / ".copilot" / "open-sessions-state.json",
        ],
    )


def _qwen(tmp: Path) -> Target:
    fixtures = needs_fixtures("qwen-code")
    home = tmp / "qwen"
    _copy(fixtures / "snapshots" / "01-first-prompt-busy" / "home", home, ".qwen")
    registry = home / ".qwen" / "sessions" / "17885.json"
    ticks = str(json.loads(registry.read_text())["procStart"]).rsplit(":", 1)[-1]
    wrapper = Rec(
        17870,
        1,
        "node",
        "/usr/bin/node",
        ["node", "/home/dev2/bin/qwen"],
        "/home/dev2/src/shop-api",
        T0 - 10**6,
    )
    child = Rec(
        17885,
        17870,
        "node",
        "/usr/bin/node",
        ["node", "/home/dev2/bin/qwen"],
        "/home/dev2/src/shop-api",
        T0 - 10**6,
        start_ticks=ticks,
    )
    chat = sorted((home / ".qwen" / "projects").rglob("chats/*.jsonl"))[0]
    return Target(qwen_code.SPEC, home, "/home/dev2", [wrapper, child], [registry, chat])


def _opencode(tmp: Path) -> Target:
    fixtures = needs_fixtures("opencode")
    home = tmp / "opencode"
    data = ".local/share/opencode"
    (home / data).mkdir(parents=True)
    for suffix in ("", "-wal"):
        shutil.copy(
            fixtures / "home" / data / f"opencode.db{suffix}", home / data / f"opencode.db{suffix}"
        )
    proc = Rec(
        11826,
        1,
        "opencode",
        "/home/dev2/.opencode/bin/opencode",
        ["opencode"],
        "/home/dev2/src/shop-api",
        T0 - 10**6,
    )
    return Target(
        opencode.SPEC,
        home,
        "/home/dev2",
        [proc],
        [home / data / "opencode.db-wal", home / data / "opencode.db"],
    )


def _cline(tmp: Path) -> Target:
    step = "02-first-prompt-busy"  # local mode: the row names the CLI's own Bun child
    source = Path(__file__).parent / "fixtures" / "cline" / "snapshots" / step / "home"
    home = tmp / "cline"
    (home / ".cline" / "data" / "db").mkdir(parents=True)
    shutil.copy(
        source / ".cline" / "data" / "db" / "sessions.db",
        home / ".cline" / "data" / "db" / "sessions.db",
    )
    npm = "/home/clinedev/.npm-global"
    wrapper = Rec(
        18459,
        1,
        "node",
        "/usr/bin/node",
        ["node", f"{npm}/bin/cline"],
        "/home/clinedev/src/shop-api",
        1_795_926_870.0,
    )
    bun = Rec(
        18470,
        18459,
        ".cline",
        f"{npm}/lib/node_modules/cline/bin/.cline",
        [f"{npm}/lib/node_modules/cline/bin/.cline"],
        "/home/clinedev/src/shop-api",
        1_795_926_870.5,
    )
    return Target(
        cline.SPEC,
        home,
        "/home/clinedev",
        [wrapper, bun],
        [home / ".cline" / "data" / "db" / "sessions.db"],
    )


def _sqlite_home(tmp: Path, name: str, relative: str, ddl: list[str], rows: list[str]) -> Path:
    path = tmp / name / relative
    path.parent.mkdir(parents=True)
    conn = sqlite3.connect(path)
    for statement in [*ddl, *rows]:
        conn.execute(statement)
    conn.commit()
    conn.close()
    return path


def _goose(tmp: Path) -> Target:
    db = _sqlite_home(
        tmp,
        "goose",
        ".local/share/goose/sessions/sessions.db",
        [
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, name TEXT, description TEXT, "
            "working_dir TEXT, created_at TEXT, updated_at TEXT, session_type TEXT, "
            "model_config_json TEXT, parent_session_id TEXT)",
            "CREATE TABLE messages (id INTEGER PRIMARY KEY, session_id TEXT, role TEXT, "
            "content_json TEXT, created_timestamp INTEGER)",
        ],
        [
            "INSERT INTO sessions VALUES ('20261129_1', 'Fix auth', '', '/home/dev/src/shop-api',"
            " '2026-11-29 04:00:00', '2026-11-29 04:00:05', 'user',"
            ' \'{"model_name": "m"}\', NULL)',
            "INSERT INTO messages VALUES (1, '20261129_1', 'user', '[]', 1795924805)",
        ],
    )
    proc = Rec(
        3131,
        1,
        "goose",
        "/usr/local/bin/goose",
        ["goose", "session"],
        "/home/dev/src/shop-api",
        T0 - 10**6,
    )
    return Target(goose.SPEC, tmp / "goose", "/home/dev", [proc], [db])


def _crush(tmp: Path) -> Target:
    db = _sqlite_home(
        tmp,
        "crush",
        "src/shop-api/.crush/crush.db",
        [
            "CREATE TABLE sessions (id TEXT PRIMARY KEY, parent_session_id TEXT, title TEXT, "
            "message_count INTEGER, created_at INTEGER, updated_at INTEGER)",
            "CREATE TABLE messages (id TEXT PRIMARY KEY, session_id TEXT, role TEXT, "
            "parts TEXT, model TEXT, provider TEXT, created_at INTEGER, updated_at INTEGER, "
            "finished_at INTEGER)",
        ],
        [
            "INSERT INTO sessions VALUES ('s1', NULL, 'Fix auth', 2, 1795924800, 1795924805)",
            "INSERT INTO messages VALUES ('m1', 's1', 'assistant', '[]', 'm', 'p', 1795924800,"
            " 1795924805, NULL)",
        ],
    )
    project = tmp / "crush" / "src" / "shop-api"  # crush finds .crush from the cwd
    (project / ".git").mkdir()
    registry = tmp / "crush" / ".local" / "share" / "crush"
    registry.mkdir(parents=True)
    entry = {"path": str(project), "data_dir": str(project / ".crush"), "last_accessed": "x"}
    (registry / "projects.json").write_text(json.dumps({"projects": [entry]}))
    proc = Rec(3232, 1, "crush", "/usr/local/bin/crush", ["crush"], str(project), T0 - 10**6)
    return Target(crush.SPEC, tmp / "crush", "/home/dev", [proc], [db, registry / "projects.json"])


def _kiro(tmp: Path) -> Target:
    home = tmp / "kiro"
    folder = home / ".kiro" / "sessions" / "cli"
    folder.mkdir(parents=True)
    sid = "1f462fd5-3052-469d-af49-dadaeafab645"
    (folder / f"{sid}.json").write_text(
        json.dumps(
            {
                "session_id": sid,
                "cwd": "/home/dev/src/shop-api",
                "title": "Fix auth",
                "created_at": "2026-11-29T04:00:00.000000000Z",
                "updated_at": "2026-11-29T04:00:05.000000000Z",
            }
        )
    )
    (folder / f"{sid}.jsonl").write_text(
        json.dumps({"kind": "Prompt", "data": {"message_id": "p1"}})
        + "\n"
        + json.dumps({"kind": "AssistantMessage", "data": {"content": [{"text": "ok"}]}})
        + "\n"
    )
    (folder / f"{sid}.lock").write_text(json.dumps({"pid": 3333}))
    proc = Rec(
        3333,
        1,
        "kiro-cli",
        "/usr/local/bin/kiro-cli",
        ["kiro-cli", "chat"],
        "/home/dev/src/shop-api",
        T0 - 10**6,
    )
    return Target(
        kiro.SPEC,
        home,
        "/home/dev",
        [proc],
        [folder / f"{sid}.json", folder / f"{sid}.jsonl", folder / f"{sid}.lock"],
    )


def _cursor(tmp: Path) -> Target:
    import hashlib

    digest = hashlib.md5(b"/home/dev/src/shop-api").hexdigest()
    chat = "0b9d1f9e-1f6a-4b6e-9c9b-2f0a3c4d5e6f"
    relative = f".cursor/chats/{digest}/{chat}/store.db"
    meta = (
        json.dumps(
            {"agentId": chat, "name": "Fix auth", "createdAt": 1795924800000, "lastUsedModel": "m"}
        )
        .encode()
        .hex()
    )
    db = _sqlite_home(
        tmp,
        "cursor",
        relative,
        [
            "CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
            "CREATE TABLE blobs (id TEXT PRIMARY KEY, data BLOB)",
        ],
        [f"INSERT INTO meta VALUES ('0', '{meta}')"],
    )
    proc = Rec(
        3434,
        1,
        "cursor-agent",
        "/home/dev/.local/share/cursor-agent/versions/1/cursor-agent",
        ["cursor-agent"],
        "/home/dev/src/shop-api",
        T0 - 10**6,
        open_files=["/home/dev/" + relative],
    )
    return Target(cursor_agent.SPEC, tmp / "cursor", "/home/dev", [proc], [db])


def _editor_rec(exe: str) -> list[Rec]:
    """An editor's main process and one of its helpers (never handed the files)."""
    return [
        Rec(5150, 1, os.path.basename(exe), exe, [exe], "/home/dev/src/shop-api", T0 - 100),
        Rec(5151, 5150, os.path.basename(exe), exe, [exe, "--type=renderer"], None, T0 - 100),
    ]


def _cursor_editor(tmp: Path) -> Target:
    home = tmp / "cursor-editor"
    user = home / ".config" / "Cursor" / "User"
    cursor = GEN.CursorUser(user, GEN.WORKSPACE)
    parent = GEN.Composer(GEN.COMPOSER_A, T0)
    parent.ask("a-1", T0)
    sub = GEN.Composer(GEN.SUB_A, T0)
    sub.ask("s-1", T0)
    parent.data["subComposerIds"] = [GEN.SUB_A]
    cursor.save(parent, sub)
    exe = "/usr/share/cursor/cursor"
    return Target(editors.CURSOR_SPEC, home, "/home/dev", _editor_rec(exe), [cursor.global_db])


def _vscode_editor(tmp: Path) -> Target:
    home = tmp / "vscode-editor"
    user = home / ".config" / "Code" / "User"
    code = GEN.VsCodeUser(user)
    code.workspace(GEN.WORKSPACE, "/home/dev/src/shop-api")
    chat = GEN.ChatSession(GEN.FIRST, T0)
    chat.ask("request_1", T0 + 1, GEN.MODEL)
    code.store(GEN.WORKSPACE, chat)
    chat.stream("(an answer)")
    chat.settle(GEN.COMPLETE, T0 + 2)
    chat.title("A generated title")
    code.store(GEN.WORKSPACE, chat)
    log = user / "workspaceStorage" / GEN.WORKSPACE / "chatSessions" / f"{GEN.FIRST}.jsonl"
    flat = log.with_name(f"{GEN.SECOND}.json")
    second = GEN.ChatSession(GEN.SECOND, T0)
    second.ask("request_2", T0 + 1, GEN.MODEL)
    flat.write_text(GEN.js(second.data))
    exe = "/usr/share/code/code"
    return Target(editors.VSCODE_SPEC, home, "/home/dev", _editor_rec(exe), [log, flat])


def _no_part_editor(tmp: Path, name: str, spec: ReaderSpec, exe: str) -> Target:
    """An editor none of whose parts are written yet: its User directory, untouched."""
    home = tmp / name
    db = home / ".config" / name / "User" / "globalStorage" / "state.vscdb"
    GEN.store_items(db, {"a": "b"})
    return Target(spec, home, "/home/dev", _editor_rec(exe), [db])


def _editor_tasks(tmp: Path) -> Target:
    """Cline's and Roo Code's tasks inside an editor (a part of the editor readers, not a
    reader of its own), laid out from tests/fixtures/editor_tasks."""
    source = Path(__file__).parent / "fixtures" / "editor_tasks"
    home = tmp / "editor"
    storage = home / ".config" / "Code" / "User" / "globalStorage"
    cline_tasks = storage / editor_tasks.CLINE.ext_id / "tasks"
    roo_tasks = storage / editor_tasks.ROO.ext_id / "tasks"
    shutil.copytree(source / "cline", cline_tasks)
    shutil.copytree(source / "roo", roo_tasks)
    parent, child = sorted(p for p in roo_tasks.iterdir() if p.is_dir())
    spec = ReaderSpec(
        platform="vscode-copilot",
        env_dir=None,
        home_dir=".config/Code/User",
        factory=editor_tasks.ExtensionTasks,
    )
    proc = Rec(3535, 1, "code", "/usr/share/code/code", ["code"], "/home/dev/proj", T0 - 10**6)
    cline_task = next(cline_tasks.iterdir())
    files = [
        cline_task / "ui_messages.json",
        cline_task / "task_metadata.json",
        parent / "history_item.json",
        child / "history_item.json",
        child / "ui_messages.json",
    ]
    return Target(spec, home, "/home/dev", [proc], files)


# The parts readers are made of (not in the registry themselves).
PARTS = {"editor-tasks"}


def _zed(tmp: Path) -> Target:
    path = tmp / "zed" / ".local/share/zed/threads/threads.db"
    db = ZedThreads(path)
    parent = Thread(id="7d1f0e2a-0000-4000-8000-000000000001", title="Fix auth", updated_at=T0)
    parent.prompt("Fix the login")
    parent.answer(T0, calls=1)
    db.save(parent)
    child = Thread(id="7d1f0e2a-0000-4000-8000-000000000002", updated_at=T0, parent=parent.id)
    child.prompt("Find the auth module")
    db.save(child)
    db.close()
    proc = Rec(
        3535, 1, "zed-editor", "/usr/libexec/zed-editor", ["zed-editor"], "/home/dev", T0 - 10**6
    )
    return Target(zed.SPEC, tmp / "zed", "/home/dev", [proc], [path])


BUILDERS: dict[str, Callable[[Path], Target]] = {
    "claude-code": _claude,
    "codex": _codex,
    "gemini-cli": _gemini,
    "copilot-cli": _copilot,
    "qwen-code": _qwen,
    "opencode": _opencode,
    "cline": _cline,
    "goose": _goose,
    "crush": _crush,
    "kiro": _kiro,
    "cursor-agent": _cursor,
    "cursor": _cursor_editor,
    "vscode-copilot": _vscode_editor,
    "windsurf": lambda tmp: _no_part_editor(
        tmp, "Windsurf", editors.WINDSURF_SPEC, "/usr/share/windsurf/windsurf"
    ),
    "vscodium": lambda tmp: _no_part_editor(
        tmp, "VSCodium", editors.VSCODIUM_SPEC, "/usr/share/codium/codium"
    ),
    "editor-tasks": _editor_tasks,
    "zed": _zed,
}


def test_every_reader_is_fuzzed() -> None:
    from quintd.sources.registry import READERS

    assert {spec.platform for spec in READERS} == set(BUILDERS) - PARTS


def _mutations(seed: bytes) -> st.SearchStrategy[bytes]:
    lines = seed.splitlines(keepends=True) or [b""]

    def replace_line(index: int, new: bytes) -> bytes:
        chosen = list(lines)
        chosen[index % len(chosen)] = new
        return b"".join(chosen)

    def flip(args: tuple[int, bytes]) -> bytes:
        at, junk = args
        at %= max(len(seed), 1)
        return seed[:at] + junk + seed[at + len(junk) :]

    hostile = [
        b"[" * 100_000 + b"]" * 100_000 + b"\n",
        b'{"a":' * 20_000 + b"\n",
        b"\xff\xfe\x00" * 300 + b"\n",
        b'{"type": "user", "message": {"content": "\\ud800\\udfff\\u202e\\u001b[2J"}}\n',
        b'{"sessionId": "' + b"A" * 5000 + b'"}\n',
        b"null\n[]\n1e999999\n",
        b"",
    ]
    return st.one_of(
        st.binary(max_size=2048),
        st.integers(0, len(seed)).map(lambda n: seed[:n]),  # cut anywhere (a torn write)
        st.tuples(st.integers(0, 10**9), st.binary(min_size=1, max_size=32)).map(flip),
        st.tuples(st.integers(0, 10**9), st.sampled_from(hostile)).map(
            lambda args: replace_line(*args)
        ),
        st.lists(st.sampled_from(lines), max_size=30).map(b"".join),  # reordered, repeated
        st.sampled_from(hostile),
    )


def _cases() -> list[tuple[str, int]]:
    sizes = {
        "claude-code": 3,
        "codex": 2,
        "gemini-cli": 2,
        "copilot-cli": 3,
        "qwen-code": 2,
        "opencode": 2,
        "cline": 1,
        "goose": 1,
        "crush": 1,
        "kiro": 3,
        "cursor-agent": 1,
        "cursor": 1,
        "vscode-copilot": 2,
        "windsurf": 1,
        "vscodium": 1,
        "editor-tasks": 5,
        "zed": 1,
    }
    return [(name, n) for name, count in sizes.items() for n in range(count)]


@pytest.mark.parametrize(("platform", "which"), _cases())
def test_a_reader_never_raises_and_reports_only_clean_facts(
    tmp_path: Path, platform: str, which: int
) -> None:
    target = BUILDERS[platform](tmp_path)
    victim = target.files[which]
    seed = victim.read_bytes()
    view = RecordedProcesses(target.home)
    view.recorded = target.recorded_home  # type: ignore[attr-defined]
    view.show(target.processes)
    recs = [
        Rec(
            **{
                **r.__dict__,
                "open_files": [
                    f.replace(target.recorded_home, str(target.home), 1) for f in r.open_files
                ],
            }
        )
        for r in target.processes
    ]
    view.show(recs)
    procs = agents(recs, target.home)
    assert procs, f"the recorded {platform} process does not match the platform table"

    @FUZZ
    @given(data=_mutations(seed))
    def run(data: bytes) -> None:
        victim.write_bytes(data)
        manager = SourceManager(
            SourceSettings(watch=False),
            readers=(target.spec,),
            processes=view,
            wall=lambda: T0 + 1,
        )
        try:
            for _ in range(2):  # a first read, and a pass after it
                facts, _pending = manager.observe(procs)
        finally:
            manager.close()
        assert manager.errors == 0, f"{platform} raised on {data[:200]!r}"
        for found in facts.values():
            for conv in (found,) if isinstance(found, ConversationFacts) else tuple(found):
                for value in (conv.name, conv.model):
                    assert value is None or value == clean_text(value)
                assert conv.native_id and len(conv.native_id) <= 1024
                for sub in conv.subagents:
                    assert sub.name is None or sub.name == clean_text(sub.name)

    try:
        run()
    finally:
        victim.write_bytes(seed)


# -- rows, not files: Zed's threads (the database well-formed, its values hostile) -----------

_IDS = st.one_of(
    st.uuids().map(str),
    st.text(max_size=40),
    st.binary(max_size=40),
    st.integers(),
    st.none(),
)
_TIMES = st.one_of(
    st.floats(T0 - 5, T0 + 5).map(rfc3339),
    st.text(max_size=40),
    st.integers(-(2**63), 2**63 - 1),
    st.none(),
)
_DATA = st.one_of(
    st.binary(max_size=512),
    st.binary(max_size=256).map(lambda b: b"\x28\xb5\x2f\xfd" + b),  # a zstd magic, then junk
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(max_size=20),
        lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner),
        max_leaves=20,
    ).map(lambda v: __import__("zstandard").ZstdCompressor().compress(json.dumps(v).encode())),
)


@settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    rows=st.lists(
        st.tuples(_IDS, _TIMES, st.sampled_from(["zstd", "json", "x", None]), _DATA),
        max_size=6,
    )
)
def test_zed_garbage_rows_are_skipped_and_counted(rows: list[tuple[object, ...]]) -> None:
    """Each row a thread with a hostile id, time, type or data: a row without a usable id
    or time is skipped and counted; data that cannot be decoded is counted and its thread
    reported without it (idle, no model); nothing reported needs cleaning."""
    import tempfile

    from quintd.sources.files import identifier
    from quintd.sources.times import parse_time

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp)
        db = ZedThreads(home / ".local/share/zed/threads/threads.db")
        kept: dict[str, None] = {}
        for native, updated, kind, data in rows:
            try:
                db.raw(
                    native, "t", updated if isinstance(updated, str) else str(updated), kind, data
                )
            except (sqlite3.Error, OverflowError, UnicodeEncodeError):
                continue  # a second row with the same id, a NULL where Zed has NOT NULL ...
        stored = db.conn.execute("SELECT id, updated_at FROM threads").fetchall()
        db.close()
        bad = 0
        for native, updated in stored:
            if identifier(native) is None or parse_time(updated) is None:
                bad += 1
            elif parse_time(updated) >= T0 - 10**6 - 2:
                kept[native] = None
        view = RecordedProcesses(home)
        recs = [
            Rec(3535, 1, "zed-editor", "/usr/libexec/zed-editor", ["zed-editor"], "/", T0 - 10**6)
        ]
        view.show(recs)
        procs = agents(recs, home)
        manager = SourceManager(
            SourceSettings(watch=False), readers=(zed.SPEC,), processes=view, wall=lambda: T0 + 1
        )
        try:
            facts, _ = manager.observe(procs)
        finally:
            manager.close()
        assert manager.errors == 0
        convs = [c for f in facts.values() for c in (f if isinstance(f, list) else [f])]
        assert {c.native_id for c in convs} == set(kept)
        for conv in convs:
            assert conv.status in ("busy", "idle")
            assert conv.model is None or conv.model == clean_text(conv.model)
        [state] = manager._states.values()
        assert isinstance(state, zed.ZedState)
        assert state.stats.garbage == bad + state.undecodable
