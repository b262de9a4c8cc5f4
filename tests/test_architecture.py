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
    ],
)
def test_not_even_indirectly(module: str, forbidden: str) -> None:
    code = f"import sys, {module}; sys.exit(1 if {forbidden!r} in sys.modules else 0)"
    assert subprocess.run([sys.executable, "-c", code], check=False).returncode == 0
