"""The package's shape, checked from its source: who may import whom, no cycles, and the
reader registry naming real platforms."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from quintd.platforms import BUILTIN_PLATFORMS
from quintd.sources.registry import READERS
from quintd.sources.spec import ReaderClass, ReaderSpec

PACKAGE = Path(__file__).resolve().parents[1] / "quintd"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(path: Path) -> set[str]:
    """The quintd modules a file imports when it runs (``if TYPE_CHECKING`` blocks are
    not run), at module level or inside functions."""
    tree = ast.parse(path.read_text())
    found: set[str] = set()
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path.parent)

    def visit(node: ast.AST) -> None:
        if isinstance(node, ast.If) and _is_type_checking(node):
            for child in node.orelse:
                visit(child)
            return
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("quintd"))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            if base.startswith("quintd"):
                found.add(base)
                # `from quintd.sources import codex` imports the module quintd.sources.codex
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    if candidate in MODULES:
                        found.add(candidate)
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


MODULES = {_module_name(p): p for p in PACKAGE.rglob("*.py")}
GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _reachable(start: str) -> set[str]:
    seen: set[str] = set()
    stack = [start]
    while stack:
        for dep in GRAPH.get(stack.pop(), ()):
            if dep not in seen:
                seen.add(dep)
                stack.append(dep)
    return seen


def test_the_graph_is_read() -> None:
    # Guards the checks below against an import reader that finds nothing.
    assert "quintd.model" in GRAPH["quintd.tracker"]
    assert "quintd.sources.registry" in GRAPH["quintd.sources.codex"]
    assert "quintd.daemon" in GRAPH["quintd.cli"]  # imported inside a function


def test_model_imports_nothing_of_quintd_but_errors() -> None:
    assert GRAPH["quintd.model"] <= {"quintd.errors"}


@pytest.mark.parametrize(
    "module",
    sorted(
        m
        for m in MODULES
        if m.startswith(("quintd.sources", "quintd.store", "quintd.shipper", "quintd.scanner"))
    ),
)
def test_stages_never_reach_the_state_machine_the_daemon_or_the_cli(module: str) -> None:
    forbidden = {"quintd.tracker", "quintd.daemon", "quintd.cli"}
    assert not (_reachable(module) & forbidden), (
        f"{module} reaches {_reachable(module) & forbidden}"
    )


def test_no_import_cycles() -> None:
    cycles = sorted(m for m in MODULES if m in _reachable(m) and m != "quintd")
    assert cycles == []


def test_the_cli_module_imports_no_heavy_library_at_load() -> None:
    """``quintd --version`` and ``quintd status`` must not pay for the daemon's libraries:
    the command line imports them inside the subcommand that uses them."""
    tree = ast.parse(MODULES["quintd.cli"].read_text())
    top = {
        alias.name if isinstance(node, ast.Import) else node.module
        for node in tree.body
        if isinstance(node, ast.Import | ast.ImportFrom)
        for alias in node.names
    }
    assert top <= {
        "__future__",
        "argparse",
        "contextlib",
        "json",
        "sys",
        "collections.abc",
        "pathlib",
        "typing",
        "quintd",
        "quintd.errors",
        "errno",
        "os",
        "signal",
    }


def test_every_reader_names_a_builtin_platform_once() -> None:
    ids = {p.id for p in BUILTIN_PLATFORMS}
    platforms = [spec.platform for spec in READERS]
    assert set(platforms) <= ids, set(platforms) - ids
    assert len(platforms) == len(set(platforms))


def _module(spec: ReaderSpec) -> str:
    assert isinstance(spec.factory, ReaderClass), spec  # imported when first needed
    return spec.factory.module


def test_every_reader_is_one_module_exporting_its_spec() -> None:
    for spec in READERS:
        module = _module(spec)
        assert module.startswith("quintd.sources."), module
        reader = importlib.import_module(module)
        # the registry's line, not a copy that may drift (the editors' module reads four
        # editors' User directories: SPECS)
        exported = getattr(reader, "SPECS", None) or (reader.SPEC,)
        assert any(line is spec for line in exported), module
        assert isinstance(spec.factory.load(), type), module


def test_the_daemon_imports_no_reader_before_its_agent_runs() -> None:
    """Reader modules are memory the daemon holds for agents that may never run here: the
    daemon's modules and the registry import none of them."""
    code = (
        "import sys, quintd.daemon, quintd.cli, quintd.sources.manager;"
        "print(','.join(sorted(m for m in sys.modules if m.startswith('quintd.sources.'))))"
    )
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        .stdout.strip()
        .split(",")
    )
    assert loaded, "quintd.sources was not imported at all: the check would prove nothing"
    assert not (loaded & set(READER_MODULES)), loaded & set(READER_MODULES)
    assert "quintd.sources.yaml_files" not in loaded  # PyYAML: Copilot CLI's reader's


def test_the_delivery_client_does_not_bring_zstandard() -> None:
    """httpx imports zstandard where it is installed (the Zed reader's dependency): hidden
    from it, the module is loaded only when a Zed thread is read; and it still is."""
    code = (
        "import sys, quintd.http_client, quintd.shipper, httpx;"
        "print('zstandard' in sys.modules, 'zstd' in httpx._decoders.SUPPORTED_DECODERS);"
        "from quintd.sources.zstd_json import _zstandard; print(_zstandard() is not None)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "True"]


READER_MODULES = sorted({_module(spec) for spec in READERS})


@pytest.mark.parametrize("module", READER_MODULES)
def test_no_reader_imports_another_reader(module: str) -> None:
    """A reader is its agent's format on the shared kit (attribution, changes, the JSONL,
    registry and SQLite bases): what two readers share goes into the kit, never into one
    of them for the other to import."""
    others = set(READER_MODULES) - {module}
    assert not (_reachable(module) & others), f"{module} reaches {_reachable(module) & others}"


def test_the_kit_imports_no_reader() -> None:
    kit = [m for m in MODULES if m.startswith("quintd.sources.") and m not in READER_MODULES]
    for module in kit:
        if module in ("quintd.sources.registry", "quintd.sources.manager"):
            continue  # they list the readers
        assert not (GRAPH[module] & set(READER_MODULES)), module
