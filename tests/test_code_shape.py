"""The package stays readable: no module over 350 lines, no function over 60 (decorators and
docstrings included), read from the source with `ast`."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = ("models", "env", "agent", "service")
MAX_MODULE_LINES = 350
MAX_FUNCTION_LINES = 60


def _sources() -> list[Path]:
    files = [p for folder in FOLDERS for p in sorted((REPO / folder).rglob("*.py"))]
    return files + sorted((REPO / "rlprune").glob("*.py"))


SOURCES = _sources()


def test_the_package_is_found():
    names = {p.relative_to(REPO).as_posix() for p in SOURCES}
    assert {"agent/search.py", "service/jobs/lifecycle.py", "rlprune/__init__.py"} <= names


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: p.relative_to(REPO).as_posix())
def test_module_and_function_lengths(path):
    text = path.read_text()
    lines = len(text.splitlines())
    assert lines <= MAX_MODULE_LINES, f"{path.name} has {lines} lines"
    long = []
    for node in ast.walk(ast.parse(text)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([node.lineno, *(d.lineno for d in node.decorator_list)])
            length = node.end_lineno - first + 1
            if length > MAX_FUNCTION_LINES:
                long.append(f"{node.name} (line {node.lineno}): {length} lines")
    assert not long, long
