#!/usr/bin/env python3
"""Mutation testing of the core modules: does the suite fail when the code is wrong?

For each module, every mutation point of a small set of operators is found in its syntax
tree; each mutant (one change) is written into a private copy of the checkout, and the
module's tests run against it. A mutant is killed when the tests fail (or hang past the
limit), and survives when they pass. Prints the score per module and every survivor, with
its line, so that each one is either killed by a new test or explained as equivalent.

Operators: comparisons (< <=, > >=, == !=, in / not in, is / is not), and/or, dropping a
`not`, True/False, a number n -> n+1 (and 0 -> 1), + and -, * and /, a statement
(assignment, augmented assignment, call, return value) replaced by `pass` / `return None`.
No dependency: the standard library's ast module does the work.

The copies go to the temp dir (TMPDIR=/dev/shm keeps them off the disk); each is removed
once its mutant is judged, and the run stops when the temp dir has under 5 GB free.

Run: python3 tests/bench/mutation.py [--modules tracker,delivery_policy,store]
     (any of TARGETS: the readers and the reader kit, waiter, scanner, private_files,
     model, identity, schema, metrics, part_settings, config/load, settings)
     [--max 200] [--jobs 2] [--timeout 120]
"""

from __future__ import annotations

import argparse
import ast
import atexit
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

ROOT = Path(__file__).resolve().parents[2]
FIXTURES = ROOT.parent / "shared" / "fixtures"

# module -> the tests that guard it (the fast ones: a mutant is judged in seconds)
TARGETS: dict[str, list[str]] = {
    "tracker": [
        "tests/test_sessions.py",
        "tests/test_tracker_rules.py",
        "tests/test_codex_replay.py",
        "tests/test_gemini_replay.py",
    ],
    "delivery_policy": ["tests/test_delivery_policy.py"],
    "store": ["tests/test_store.py", "tests/test_queue.py", "tests/test_store_rules.py"],
    "sources/claude_code": ["tests/test_claude_code.py"],
    "sources/codex": [
        "tests/test_codex.py",
        "tests/test_codex_replay.py",
        "tests/test_rollouts.py",
    ],
    "sources/cline": ["tests/test_cline.py"],
    "sources/cline_sessions": ["tests/test_cline.py"],
    "sources/copilot_cli": ["tests/test_copilot_cli.py"],
    "sources/copilot_events": ["tests/test_copilot_cli.py"],
    "sources/crush": ["tests/test_crush.py"],
    "sources/cursor_agent": ["tests/test_cursor_agent.py"],
    "sources/gemini_cli": [
        "tests/test_gemini_replay.py",
        "tests/test_gemini_legacy.py",
        "tests/test_gemini_subagent.py",
    ],
    "sources/goose": ["tests/test_goose.py"],
    "sources/kiro": ["tests/test_kiro.py"],
    "sources/opencode": ["tests/test_opencode.py"],
    "sources/opencode_db": ["tests/test_opencode.py"],
    "sources/qwen_code": ["tests/test_qwen_code.py"],
    # the editors (issue 27): the User directory's composite, its parts, the state.vscdb kit
    "sources/editors": ["tests/test_editors.py"],
    "sources/cursor_composers": ["tests/test_editors.py"],
    "sources/copilot_chat": ["tests/test_editors.py"],
    "sources/vscdb": ["tests/test_editors.py", "tests/test_read_guards.py"],
    "sources/editor_tasks": ["tests/test_editor_tasks.py"],
    "sources/zed": ["tests/test_zed.py"],
    # Outside the core (issue 24).
    "waiter": ["tests/test_waiter.py"],
    "scanner": [
        "tests/test_scanner_feed.py",  # fed by batches the tests write
        "tests/test_scanner.py",
        "tests/test_scanner_events.py",  # fed by the kernel's events (as root on Linux)
        "tests/test_signing_linux.py",
        "tests/test_identity_linux.py",
    ],
    "private_files": ["tests/test_private_files.py"],
    "model": ["tests/test_model.py"],
    "identity": ["tests/test_identity.py"],
    "schema": ["tests/test_migrations.py", "tests/test_store.py"],
    "metrics": ["tests/test_metrics.py"],
    # the reader kit: the bases with the readers on them, and the kit's own tests
    "sources/pid_registry": ["tests/test_claude_code.py", "tests/test_qwen_code.py"],
    "sources/sqlite_sessions": [
        "tests/test_crush.py",
        "tests/test_goose.py",
        "tests/test_reader_kit.py",
    ],
    "sources/attribution": [
        "tests/test_reader_kit.py",
        "tests/test_kiro.py",
        "tests/test_copilot_cli.py",
    ],
    # the rest of the kit: the files, times and changes every reader stands on
    "sources/conversation_files": [
        "tests/test_reader_kit.py",
        "tests/test_claude_code.py",
        "tests/test_codex.py",
        "tests/test_gemini_legacy.py",
        "tests/test_gemini_replay.py",
    ],
    "sources/changes": ["tests/test_reader_kit.py", "tests/test_codex.py", "tests/test_crush.py"],
    "sources/times": ["tests/test_reader_kit.py", "tests/test_codex.py", "tests/test_crush.py"],
    "sources/yaml_files": ["tests/test_read_guards.py", "tests/test_copilot_cli.py"],
    "sources/files": [
        "tests/test_kit_files.py",
        "tests/test_reader_kit.py",
        "tests/test_read_guards.py",
        "tests/test_qwen_code.py",
    ],
    "sources/sqlite_files": [
        "tests/test_kit_sqlite.py",
        "tests/test_read_guards.py",
        "tests/test_goose.py",
        "tests/test_cline.py",
    ],
    # the modules split out of the readers (issue 23): their readers' tests
    "sources/codex_rollouts": [
        "tests/test_codex.py",
        "tests/test_codex_replay.py",
        "tests/test_rollouts.py",
    ],
    "sources/codex_tuis": [
        "tests/test_codex.py",
        "tests/test_codex_replay.py",
        "tests/test_rollouts.py",
    ],
    "sources/cline_rows": ["tests/test_cline.py"],
    "sources/cline_processes": ["tests/test_cline.py"],
    "sources/copilot_locks": ["tests/test_copilot_cli.py"],
    "sources/copilot_workspace": ["tests/test_copilot_cli.py"],
    "sources/crush_db": ["tests/test_crush.py"],
    "sources/cursor_chats": ["tests/test_cursor_agent.py"],
    "sources/goose_sessions": ["tests/test_goose.py"],
    "sources/kiro_sessions": ["tests/test_kiro.py"],
    "sources/opencode_queries": ["tests/test_opencode.py"],
    "sources/copilot_chat_log": ["tests/test_editors.py"],
    "sources/editor_task_files": ["tests/test_editor_tasks.py"],
    "sources/zed_db": ["tests/test_zed.py"],
    # the settings and their reload path (test_reload's daemons take minutes: not here)
    "part_settings": ["tests/test_config.py", "tests/test_settings_declared.py"],
    "config/load": ["tests/test_config.py", "tests/test_settings_declared.py"],
    "settings": ["tests/test_config.py", "tests/test_settings_declared.py"],
}


@dataclass(frozen=True)
class Mutant:
    module: str
    index: int  # the mutation point's number in the module
    line: int
    what: str


class _Points(ast.NodeTransformer):
    """Walks a module; with ``target`` None it only counts (and describes) the points,
    else it applies the target-th mutation."""

    def __init__(self, target: int | None = None) -> None:
        self.target = target
        self.count = 0
        self.found: list[tuple[int, str]] = []
        self.applied = False

    def _point(self, node: ast.AST, what: str) -> bool:
        index = self.count
        self.count += 1
        self.found.append((getattr(node, "lineno", 0), what))
        return index == self.target

    # comparisons
    _SWAP: ClassVar[dict[type[ast.cmpop], type[ast.cmpop]]] = {
        ast.Lt: ast.LtE, ast.LtE: ast.Lt, ast.Gt: ast.GtE, ast.GtE: ast.Gt,
        ast.Eq: ast.NotEq, ast.NotEq: ast.Eq, ast.In: ast.NotIn, ast.NotIn: ast.In,
        ast.Is: ast.IsNot, ast.IsNot: ast.Is,
    }  # fmt: skip

    def visit_Compare(self, node: ast.Compare) -> ast.AST:
        self.generic_visit(node)
        for i, op in enumerate(node.ops):
            swap = self._SWAP.get(type(op))
            if swap is not None and self._point(node, f"{type(op).__name__} -> {swap.__name__}"):
                node.ops[i] = swap()
                self.applied = True
        return node

    def visit_BoolOp(self, node: ast.BoolOp) -> ast.AST:
        self.generic_visit(node)
        other = ast.Or if isinstance(node.op, ast.And) else ast.And
        if self._point(node, f"{type(node.op).__name__} -> {other.__name__}"):
            node.op = other()
            self.applied = True
        return node

    def visit_UnaryOp(self, node: ast.UnaryOp) -> ast.AST:
        self.generic_visit(node)
        if isinstance(node.op, ast.Not) and self._point(node, "drop not"):
            self.applied = True
            return node.operand
        return node

    def visit_Constant(self, node: ast.Constant) -> ast.AST:
        value = node.value
        if isinstance(value, bool):
            if self._point(node, f"{value} -> {not value}"):
                self.applied = True
                return ast.copy_location(ast.Constant(not value), node)
        elif isinstance(value, int | float) and self._point(node, f"{value!r} -> {value + 1!r}"):
            self.applied = True
            return ast.copy_location(ast.Constant(value + 1), node)
        return node

    _ARITH: ClassVar[dict[type[ast.operator], type[ast.operator]]] = {
        ast.Add: ast.Sub, ast.Sub: ast.Add, ast.Mult: ast.Div, ast.Div: ast.Mult,
    }  # fmt: skip

    def visit_BinOp(self, node: ast.BinOp) -> ast.AST:
        self.generic_visit(node)
        swap = self._ARITH.get(type(node.op))
        if (
            swap is not None
            and not _is_string_op(node)
            and self._point(node, f"{type(node.op).__name__} -> {swap.__name__}")
        ):
            node.op = swap()
            self.applied = True
        return node

    def _statement(self, node: ast.stmt, what: str) -> ast.AST:
        self.generic_visit(node)
        if self._point(node, what):
            self.applied = True
            return ast.copy_location(ast.Pass(), node)
        return node

    def visit_Assign(self, node: ast.Assign) -> ast.AST:
        return self._statement(node, "drop assignment")

    def visit_AugAssign(self, node: ast.AugAssign) -> ast.AST:
        return self._statement(node, "drop augmented assignment")

    def visit_Expr(self, node: ast.Expr) -> ast.AST:
        if isinstance(node.value, ast.Constant):  # a docstring
            return node
        return self._statement(node, "drop call")

    def visit_Return(self, node: ast.Return) -> ast.AST:
        self.generic_visit(node)
        returns_something = node.value is not None and not (
            isinstance(node.value, ast.Constant) and node.value.value is None
        )
        if returns_something and self._point(node, "return None"):
            self.applied = True
            return ast.copy_location(ast.Return(ast.Constant(None)), node)
        return node

    # Behaviour lives in functions: module and class constants (limits, defaults) are
    # settings, not logic, and annotations are not run.
    def visit_Module(self, node: ast.Module) -> ast.AST:
        node.body = [self.visit(s) if _is_def(s) else s for s in node.body]
        return node

    def visit_ClassDef(self, node: ast.ClassDef) -> ast.AST:
        node.body = [self.visit(s) if _is_def(s) else s for s in node.body]
        return node

    def visit_FunctionDef(self, node: ast.FunctionDef) -> ast.AST:
        node.body = [self.visit(s) for s in node.body]
        return node

    def visit_AnnAssign(self, node: ast.AnnAssign) -> ast.AST:
        if node.value is not None:
            node.value = self.visit(node.value)
        return node


def _is_def(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef)


def _is_string_op(node: ast.BinOp) -> bool:
    return any(
        (isinstance(side, ast.Constant) and isinstance(side.value, str))
        or isinstance(side, ast.JoinedStr)
        for side in (node.left, node.right)
    )


def _is_log_call(node: ast.AST) -> bool:
    return (
        isinstance(node, ast.Expr)
        and isinstance(node.value, ast.Call)
        and isinstance(node.value.func, ast.Attribute)
        and isinstance(node.value.func.value, ast.Name)
        and node.value.func.value.id == "log"
    )


def mutants(module: str) -> tuple[str, list[Mutant]]:
    path = ROOT / "quintd" / f"{module}.py"
    source = path.read_text()
    tree = ast.parse(source)
    points = _Points()
    _walk_without_logs(points, tree)
    found = [Mutant(module, i, line, what) for i, (line, what) in enumerate(points.found)]
    return source, found


def _walk_without_logs(points: _Points, tree: ast.Module) -> ast.Module:
    """Visit the module, skipping log calls and the TYPE_CHECKING / __all__ blocks."""
    for node in ast.walk(tree):
        for field_name, value in ast.iter_fields(node):
            if isinstance(value, list):
                setattr(node, field_name, [_Skip(v) if _is_log_call(v) else v for v in value])
    result = points.visit(tree)
    for node in ast.walk(result):
        for field_name, value in ast.iter_fields(node):
            if isinstance(value, list):
                setattr(node, field_name, [v.node if isinstance(v, _Skip) else v for v in value])
    return result


class _Skip(ast.stmt):
    """A statement the walker passes over untouched."""

    _fields = ()

    def __init__(self, node: ast.AST) -> None:
        super().__init__()
        self.node = node
        self.lineno = getattr(node, "lineno", 0)


def mutated_source(source: str, index: int) -> str:
    tree = ast.parse(source)
    points = _Points(target=index)
    tree = _walk_without_logs(points, tree)
    assert points.applied, index
    ast.fix_missing_locations(tree)
    return ast.unparse(tree)


def run_tests(workdir: Path, tests: list[str], timeout: float, show: bool = False) -> str:
    """'killed', 'survived' or 'timeout' (counted as killed); ``show``: the end of a
    failing run's output, on stderr. The tests' temporary files go inside ``workdir``
    (TMPDIR), so that removing the copy removes whatever they leave behind."""
    tmp = workdir / ".tmp"
    tmp.mkdir(exist_ok=True)
    env = dict(
        os.environ,
        PYTHONPATH=str(workdir),
        QUINTD_FIXTURES=str(FIXTURES),
        PYTHONDONTWRITEBYTECODE="1",
        TMPDIR=str(tmp),
    )
    cmd = [
        sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider",
        f"--basetemp={tmp / 'pytest'}", *tests,
    ]  # fmt: skip
    try:
        result = subprocess.run(
            cmd, cwd=workdir, env=env, capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return "timeout"
    if result.returncode != 0 and show:
        tail = result.stdout.decode(errors="replace").splitlines()[-40:]
        print("\n".join(tail), file=sys.stderr)
    return "survived" if result.returncode == 0 else "killed"


MIN_FREE_BYTES = 5 * 1024**3  # below this in the temp dir, the run stops


class DiskLow(RuntimeError):
    """The temp dir's file system is nearly full: no further copy is made."""


class Copies:
    """The private copies of the checkout, one a mutant, under one temp dir: each is
    removed once its mutant is judged, and the dir at exit (normal, an exception,
    Ctrl-C or SIGTERM). A copy is only made while the temp dir keeps
    :data:`MIN_FREE_BYTES` free."""

    _IGNORE = staticmethod(
        # build/ and dist/: what packaging tests build in a checkout (hundreds of MB, not
        # the code under test; a copy reused for every mutant once grew a 46 GB build/)
        shutil.ignore_patterns(
            ".git", ".venv", "*.egg-info", "__pycache__", ".*_cache", ".tmp", "build", "dist"
        )
    )

    def __init__(self) -> None:
        self.base = Path(tempfile.mkdtemp(prefix="quintd-mutation-"))
        self._count = 0
        self._lock = threading.Lock()
        self.stopped = threading.Event()
        atexit.register(self.remove_all)
        # The checkout as it stands now: edits made while the run goes on are not judged.
        self.check_space()
        self.pristine = self.base / "pristine"
        shutil.copytree(ROOT, self.pristine, ignore=self._IGNORE, symlinks=True)

    def check_space(self) -> None:
        free = shutil.disk_usage(self.base).free
        if free < MIN_FREE_BYTES:
            self.stopped.set()
            raise DiskLow(
                f"only {free / 1024**3:.1f} GB free in {self.base.parent} "
                f"(at least {MIN_FREE_BYTES / 1024**3:.0f} GB wanted): mutation run stopped"
            )

    def make(self) -> Path:
        self.check_space()
        with self._lock:
            self._count += 1
            workdir = self.base / f"w{self._count}"
        shutil.copytree(self.pristine, workdir, copy_function=self._copy)
        return workdir

    def _copy(self, source: str, dest: str) -> None:
        """The fixtures (most of the checkout's bytes, never written: tests copy them
        before use) are linked, not copied; everything else is copied."""
        if Path(source).is_relative_to(self.pristine / "tests" / "fixtures"):
            os.link(source, dest)
        else:
            shutil.copy2(source, dest)

    @staticmethod
    def remove(workdir: Path) -> None:
        shutil.rmtree(workdir, ignore_errors=True)

    def remove_all(self) -> None:
        shutil.rmtree(self.base, ignore_errors=True)


def _exit_on_term(signum: int, frame: object) -> None:
    raise SystemExit(128 + signum)  # unwinds, so that atexit removes the copies


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modules", default="tracker,delivery_policy,store")
    parser.add_argument("--max", type=int, default=200, help="mutants per module (sampled)")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=180.0, help="seconds per mutant")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    signal.signal(signal.SIGTERM, _exit_on_term)
    copies = Copies()
    try:
        return _run(args, copies)
    except DiskLow as exc:
        print(f"\n{exc}", file=sys.stderr)
        return 3
    finally:
        copies.remove_all()


def _judge_in_copy(
    copies: Copies, mutant: Mutant | None, source: str, tests: list[str], args: argparse.Namespace
) -> str:
    """The verdict on one mutant (None: the module unmutated), in a fresh copy removed
    after; 'skipped' once the run is stopping."""
    if copies.stopped.is_set():
        return "skipped"
    workdir = copies.make()
    try:
        if mutant is not None:
            target = workdir / "quintd" / f"{mutant.module}.py"
            target.write_text(mutated_source(source, mutant.index))
        return run_tests(workdir, tests, args.timeout, show=mutant is None)
    finally:
        copies.remove(workdir)


def _run(args: argparse.Namespace, copies: Copies) -> int:
    report: list[tuple[str, int, int, int, list[Mutant]]] = []
    failed = 0  # modules whose tests failed unmutated
    started = time.monotonic()
    for module in args.modules.split(","):
        source, found = mutants(module)
        chosen = found
        if len(found) > args.max:
            chosen = sorted(random.Random(args.seed).sample(found, args.max), key=lambda m: m.index)
        tests = TARGETS[module]
        baseline = _judge_in_copy(copies, None, source, tests, args)
        if baseline != "survived":
            # Not a score (a mutant would count as killed): said, and the next module run.
            print(f"{module}: its tests fail unmutated; fix them first", file=sys.stderr)
            failed += 1
            continue

        def judge(mutant: Mutant, source: str = source, tests: list[str] = tests) -> str:
            return _judge_in_copy(copies, mutant, source, tests, args)

        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            verdicts = list(pool.map(judge, chosen))
        survivors = [m for m, v in zip(chosen, verdicts, strict=True) if v == "survived"]
        timeouts = sum(1 for v in verdicts if v == "timeout")
        report.append((module, len(found), len(chosen), timeouts, survivors))
        print(f"{module}: {len(chosen) - len(survivors)}/{len(chosen)} killed", flush=True)
    print()
    print(f"{'module':24}{'points':>8}{'mutants':>9}{'killed':>8}{'score':>8}{'timeouts':>10}")
    for module, points, tried, timeouts, survivors in report:
        killed = tried - len(survivors)
        score = f"{100 * killed / max(tried, 1):.0f}%"
        print(f"{module:24}{points:>8}{tried:>9}{killed:>8}{score:>8}{timeouts:>10}")
    print(f"\n({time.monotonic() - started:.0f} s)")
    for module, _, _, _, survivors in report:
        if survivors:
            print(f"\nsurvivors in quintd/{module}.py:")
            for m in survivors:
                print(f"  line {m.line} (point {m.index}): {m.what}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
