"""The installed package is one name, `rlprune`, and works inside a project that has its own
`models/` and `env/` packages (where `--model mypkg.module:factory` is typically used)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SOURCES = ("pyproject.toml", "README.md", "rlprune", "models", "env", "agent", "service")

USER_MODELS_INIT = '''"""A user's own `models` package: rlprune must never import it as its own."""
USER_PACKAGE = True
'''
USER_NET = '''import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, num_classes=10, in_channels=1, image_size=28):
        super().__init__()
        self.c1 = nn.Conv2d(in_channels, 4, 3, stride=2, padding=1)
        self.c2 = nn.Conv2d(4, 8, 3, stride=2, padding=1)
        self.head = nn.Linear(8, num_classes)

    def forward(self, x):
        x = torch.relu(self.c2(torch.relu(self.c1(x))))
        return self.head(x.mean((2, 3)))


def make(num_classes=10, in_channels=1, image_size=28):
    return Net(num_classes, in_channels, image_size)
'''
USER_ENV_INIT = '''raise ImportError("the user's env package was imported by rlprune")
'''


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    """The wheel, built from a copy of the sources (the checkout is left as it is)."""
    src = tmp_path_factory.mktemp("src")
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name,
                            ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, src / name)
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", str(src), "-w", str(out)], check=True, capture_output=True,
                   timeout=300)
    (path,) = out.glob("rlprune-*.whl")
    return path


def test_the_wheel_holds_one_top_level_name(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    top = {name.split("/")[0] for name in names}
    assert top == {"rlprune", wheel.name.split("-py3")[0] + ".dist-info"}, top
    for package in ("rlprune", "rlprune/models", "rlprune/env", "rlprune/agent",
                    "rlprune/service"):
        assert f"{package}/__init__.py" in names
    assert "rlprune/__main__.py" in names


@pytest.fixture(scope="module")
def user_project(tmp_path_factory) -> Path:
    """A folder with the user's own `models/` (holding their net) and `env/` packages."""
    root = tmp_path_factory.mktemp("user_project")
    (root / "models").mkdir()
    (root / "models" / "__init__.py").write_text(USER_MODELS_INIT)
    (root / "models" / "mynet.py").write_text(USER_NET)
    (root / "env").mkdir()
    (root / "env" / "__init__.py").write_text(USER_ENV_INIT)
    return root


def _run(cwd: Path, pythonpath: list[Path], *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, pythonpath)),
           "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    return subprocess.run(list(argv), cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


TINY_SEARCH = ("search", "--model", "models.mynet:make", "--dataset", "digits",
               "--target", "0.5", "--fc-rule", "agent", "--episodes", "3", "--warmup", "1",
               "--finetune-epochs", "0", "--quiet", "--run-dir", "run")


def _check_install(run_root: Path, pythonpath: list[Path], rlprune: list[str],
                   expected_root: Path) -> None:
    cwd = run_root
    cwd.mkdir()
    done = _run(cwd, pythonpath, *rlprune, "--help")
    assert done.returncode == 0, done.stderr
    assert "search" in done.stdout
    done = _run(cwd, pythonpath, sys.executable, "-c",
                "import rlprune.service.cli.main, rlprune.models.registry, models, sys; "
                "print(rlprune.__file__); print(models.USER_PACKAGE)")
    assert done.returncode == 0, done.stderr
    where, user = done.stdout.split()
    assert Path(where).resolve().is_relative_to(expected_root.resolve()), where
    assert user == "True"  # `models` is still the user's own package
    done = _run(cwd, pythonpath, *rlprune, *TINY_SEARCH)
    assert done.returncode == 0, done.stderr
    assert (cwd / "run" / "policy.json").is_file()


@pytest.mark.slow  # an install and a search in a fresh folder: run with -m slow
def test_editable_install_beside_a_users_models_and_env(user_project, tmp_path):
    """The checkout's own install (editable, as the README's commands make it)."""
    _check_install(tmp_path / "editable", [user_project],
                   [sys.executable, "-m", "rlprune"], REPO)


@pytest.mark.slow
def test_wheel_install_beside_a_users_models_and_env(user_project, wheel, tmp_path):
    """The wheel installed into a folder of its own, put on the path after the user's
    project (and before the editable install, which it then hides)."""
    target = tmp_path / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target",
                    str(target), str(wheel)], check=True, capture_output=True, timeout=300)
    script = target / "bin" / "rlprune"
    assert script.is_file()
    _check_install(tmp_path / "wheel", [user_project, target],
                   [sys.executable, str(script)], target)
