"""The package's import graph: no cycles, dependencies one way (models <- env <- agent <-
service, and inside service jobs <- bench <- http <- cli), and nothing below `service`, nor
`service.jobs`, prints or parses arguments; nothing below `service` installs signal handlers.

Read from the source with `ast`, every import counts, the ones inside functions included.
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
FOLDERS = {"models": "rlprune.models", "env": "rlprune.env", "agent": "rlprune.agent",
           "service": "rlprune.service", "rlprune": "rlprune"}
LAYER = {"rlprune.models": 0, "rlprune.env": 1, "rlprune.agent": 2, "rlprune.service": 3}
# the service's rooms: each imports only the ones before it
ROOMS = {"rlprune.service.jobs": 0, "rlprune.service.bench": 1, "rlprune.service.http": 2,
         "rlprune.service.cli": 3}


def _modules() -> dict[str, Path]:
    found = {}
    for folder, package in FOLDERS.items():
        root = REPO / folder
        for path in sorted(root.rglob("*.py") if folder != "rlprune" else root.glob("*.py")):
            parts = path.relative_to(root).with_suffix("").parts
            if parts[-1] == "__init__":
                parts = parts[:-1]
            found[".".join((package, *parts))] = path
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


def _rank(module: str, ranks: dict[str, int]) -> int | None:
    for package, rank in ranks.items():
        if module == package or module.startswith(package + "."):
            return rank
    return None


def _layer(module: str) -> int | None:
    return _rank(module, LAYER)


def test_the_graph_covers_the_package():
    assert {"rlprune.models.data", "rlprune.env.pruning_env", "rlprune.agent.search",
            "rlprune.service.jobs.lifecycle", "rlprune.service.cli.main"} <= set(MODULES)
    assert GRAPH["rlprune.service.jobs.lifecycle"] >= {"rlprune.agent.search",
                                                  "rlprune.service.jobs.run_folder"}


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


def test_the_service_rooms_point_one_way():
    """jobs <- bench <- http <- cli: the library's run folders import no room above them."""
    wrong = [f"{a} imports {b}" for a, deps in GRAPH.items() for b in deps
             if _rank(a, ROOMS) is not None and _rank(b, ROOMS) is not None
             and _rank(b, ROOMS) > _rank(a, ROOMS)]
    assert not wrong, wrong


def _quiet(module: str) -> bool:
    """The library: everything below the service, and the service's jobs room."""
    layer = _layer(module)
    return layer is not None and (layer < LAYER["rlprune.service"]
                                  or _rank(module, ROOMS) == ROOMS["rlprune.service.jobs"])


@pytest.mark.parametrize("module", [m for m in MODULES if _quiet(m)])
def test_the_library_does_not_print_parse_arguments_or_handle_signals(module):
    """(`jobs.stop` is the one module of the jobs room that installs handlers: the signal
    handling a job's own process uses, whoever starts it.)"""
    tree = ast.parse(MODULES[module].read_text())
    handles_signals = module == "rlprune.service.jobs.stop"
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            func = node.func
            assert not (isinstance(func, ast.Name) and func.id == "print"), (module, node.lineno)
            assert handles_signals or not (
                isinstance(func, ast.Attribute) and func.attr == "signal"
                        and isinstance(func.value, ast.Name) and func.value.id == "signal"), (
                module, node.lineno)
        if isinstance(node, ast.Import | ast.ImportFrom):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""])
            assert "argparse" not in names and "tqdm" not in names, (module, node.lineno)


CLIENT = """
import sys
from rlprune.service.cli.main import main
for argv in (["list", "--server", "http://127.0.0.1:9"], ["status", "x", "--server", "h"],
             ["submit", "--server", "h", "--model", "lenet300"], ["status", sys.argv[1]]):
    main(argv)
print(sorted(m for m in ("torch", "numpy", "stable_baselines3") if m in sys.modules))
"""


def test_the_clis_client_commands_do_not_import_torch(tmp_path):
    """`rlprune list/status/submit --server` and `status RUN` answer in a fraction of a second:
    torch's import alone is seconds (each of these exits 2 here: no token, no run)."""
    env = {k: v for k, v in os.environ.items() if k != "RLPRUNE_TOKEN"}
    done = subprocess.run([sys.executable, "-c", CLIENT, str(tmp_path / "no-run")], env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "[]", done.stdout
    assert done.stderr.count("rlprune: error:") == 4, done.stderr
