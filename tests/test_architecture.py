"""Module boundaries: providers know HTTP, the collector knows Prometheus."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "exporter"


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


@pytest.mark.parametrize(
    ("pattern", "forbidden"),
    [
        ("providers/*.py", "prometheus_client"),
        ("signing/*.py", "prometheus_client"),
        ("signing/*.py", "aiohttp"),
        ("simulator/*.py", "prometheus_client"),
        ("collector.py", "aiohttp"),
        ("exposition.py", "aiohttp"),
        ("gzip_segments.py", "aiohttp"),
        ("gzip_segments.py", "prometheus_client"),
        ("store.py", "aiohttp"),
        ("model.py", "aiohttp"),
        ("model.py", "prometheus_client"),
    ],
)
def test_modules_do_not_import_across_the_boundary(pattern: str, forbidden: str) -> None:
    files = sorted(PACKAGE.glob(pattern))
    assert files, pattern
    for path in files:
        assert forbidden not in _imports(path), f"{path.relative_to(PACKAGE)} imports {forbidden}"


@pytest.mark.parametrize(
    ("module", "forbidden"),
    [
        ("exporter.collector", "aiohttp"),
        ("exporter.exposition", "aiohttp"),
        ("exporter.providers.registry", "prometheus_client"),
        # The registry imports provider and simulator modules only when they are used.
        ("exporter.clouds", "aiohttp"),
        ("exporter.config", "aiohttp"),
    ],
)
def test_not_even_indirectly(module: str, forbidden: str) -> None:
    code = f"import sys, {module}; sys.exit(1 if {forbidden!r} in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _type_checking_only(tree: ast.Module) -> set[ast.AST]:
    """Imports under `if TYPE_CHECKING:`, which never run."""
    skipped: set[ast.AST] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                skipped.update(ast.walk(child))
    return skipped


def _import_graph() -> dict[str, set[str]]:
    """Which exporter modules each exporter module imports when it runs, at module level or in a
    function; importing a module also imports the packages above it."""
    paths = {_module_name(path): path for path in PACKAGE.rglob("*.py")}
    graph: dict[str, set[str]] = {}
    for name, path in paths.items():
        tree = ast.parse(path.read_text(), str(path))
        skipped = _type_checking_only(tree)
        targets: set[str] = set()
        for node in ast.walk(tree):
            if node in skipped:
                continue
            if isinstance(node, ast.Import):
                targets.update(alias.name for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets.add(node.module)
                targets.update(f"{node.module}.{alias.name}" for alias in node.names)
        edges: set[str] = set()
        for target in targets:
            parts = target.split(".")
            edges.update(
                ".".join(parts[:end]) for end in range(1, len(parts) + 1)
            )  # the module and the packages above it
        package = name.rpartition(".")[0]
        ancestors = {package} if package else set()
        graph[name] = {edge for edge in edges if edge in paths} - {name} - ancestors
    return graph


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle, as the modules along it, or None."""
    done: set[str] = set()
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        if node in path:
            return [*path[path.index(node) :], node]
        if node in done:
            return None
        path.append(node)
        for target in sorted(graph[node]):
            found = visit(target)
            if found:
                return found
        path.pop()
        done.add(node)
        return None

    for node in sorted(graph):
        found = visit(node)
        if found:
            return found
    return None


def test_the_package_has_no_import_cycle() -> None:
    graph = _import_graph()
    assert "exporter.providers.registry" in graph["exporter.runtime"]  # the graph sees imports
    assert "exporter.providers.tencent_ci" in graph["exporter.clouds"]  # function-level ones too
    cycle = _cycle(graph)
    assert cycle is None, " -> ".join(cycle or [])


def test_the_cycle_check_finds_a_cycle() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert _cycle(graph) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set()}) is None
