"""The package's import graph: no cycles, dependencies one way (models <- env <- agent <-
service), and nothing below `service` prints, parses arguments or installs signal handlers.

Read from the source with `ast`, every import counts, the ones inside functions included.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"models": "rlprune.models", "env": "rlprune.env", "agent": "rlprune.agent",
           "service": "rlprune.service", "rlprune": "rlprune"}
LAYER = {"rlprune.models": 0, "rlprune.env": 1, "rlprune.agent": 2, "rlprune.service": 3}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        for path in sorted((REPO / folder).glob("*.py")):
            name = package if path.stem == "__init__" else f"{package}.{path.stem}"
            found[name] = path
    return found


MODULES = _modules()


def _imports(path: Path) -> set[str]:
    """The rlprune modules `path` imports."""
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        else:
            continue
        out |= {name for name in names if name in MODULES}
    return out


GRAPH = {name: _imports(path) - {name} for name, path in MODULES.items()}


def _layer(module: str) -> int | None:
    for package, rank in LAYER.items():
        if module == package or module.startswith(package + "."):
            return rank
    return None


def test_the_graph_covers_the_package():
    assert {"rlprune.models.data", "rlprune.env.pruning_env", "rlprune.agent.search",
            "rlprune.service.lifecycle", "rlprune.service.cli"} <= set(MODULES)
    assert GRAPH["rlprune.service.lifecycle"] >= {"rlprune.agent.search",
                                                  "rlprune.service.jobs"}


def test_no_import_cycle():
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(GRAPH[node]):
            if state.get(nxt) == 1:
                cycle = path[path.index(nxt):] + [nxt]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for module in sorted(GRAPH):
        if module not in state:
            visit(module, [module])


def test_dependencies_point_one_way():
    wrong = [f"{a} imports {b}" for a, deps in GRAPH.items() for b in deps
             if _layer(a) is not None and _layer(b) is not None and _layer(b) > _layer(a)]
    assert not wrong, wrong
    # the public face only re-exports: it imports nothing of the package at import time
    assert GRAPH["rlprune"] == set()


@pytest.mark.parametrize("module", [m for m in MODULES if _layer(m) is not None
                                    and _layer(m) < LAYER["rlprune.service"]])
def test_the_library_does_not_print_parse_arguments_or_handle_signals(module):
    tree = ast.parse(MODULES[module].read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            assert not (isinstance(func, ast.Name) and func.id == "print"), (module, node.lineno)
            assert not (isinstance(func, ast.Attribute) and func.attr == "signal"
                        and isinstance(func.value, ast.Name) and func.value.id == "signal"), (
                module, node.lineno)
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""])
            assert "argparse" not in names and "tqdm" not in names, (module, node.lineno)
