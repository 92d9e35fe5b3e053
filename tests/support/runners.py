"""Running the CLI in this process or as a subprocess, and looking at what it left behind."""

from __future__ import annotations

import hashlib
import json
import shutil
import subprocess
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

from support.assets import PROCESS_TIMEOUT, SEARCH_FLAGS, Assets


# -- running the CLI ----------------------------------------------------------------------
def run_main(capsys: pytest.CaptureFixture, *argv: str) -> tuple[int, str, str]:
    """`rlprune ARGV` in this process: (exit code, stdout, stderr)."""
    from rlprune.service.cli.main import main

    capsys.readouterr()
    try:
        code = main(list(argv))
    except SystemExit as exc:  # argparse errors
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def cli_command(*argv: str) -> list[str]:
    return [sys.executable, "-m", "rlprune", *argv]


def start(assets: Assets, cwd: Path, *argv: str) -> subprocess.Popen:
    """`rlprune ARGV` as a subprocess in `cwd`, output captured."""
    return subprocess.Popen(cli_command(*argv), cwd=cwd, env=assets.env(), text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)


@dataclass
class Done:
    argv: tuple[str, ...]
    pid: int
    returncode: int
    stdout: str
    stderr: str


def finish(proc: subprocess.Popen, timeout: float = PROCESS_TIMEOUT) -> Done:
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        pytest.fail(f"{proc.args} ran past {timeout}s; stderr: {err[-2000:]}")
    return Done(tuple(proc.args), proc.pid, proc.returncode, out, err)


def assert_one_line_error(code: int, err: str) -> str:
    assert code == 2, err
    assert "Traceback" not in err, err
    assert err.startswith("rlprune: error:"), repr(err)
    assert err.endswith("\n") and err.count("\n") == 1, repr(err)
    return err


def search_argv(assets: Assets, run_dir: str | Path, *extra: str) -> list[str]:
    return ["search", "--model", assets.model, "--checkpoint", str(assets.dense),
            *SEARCH_FLAGS, "--run-dir", str(run_dir), *extra]


# -- files -------------------------------------------------------------------------------
def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` with its type, size, mtime and content hash."""
    out = {}
    for path in sorted(folder.rglob("*")):
        st = path.lstat()
        rel = str(path.relative_to(folder))
        if path.is_dir():
            out[rel] = ("dir", st.st_mtime_ns)
        else:
            out[rel] = ("file", st.st_size, st.st_mtime_ns,
                        hashlib.sha256(path.read_bytes()).hexdigest())
    return out


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def run_state(run: Path) -> dict[str, torch.Tensor]:
    """The weights in a weight run's pruned.rlprune, read from the zip's sparse tensors
    (not through `rlprune.load_model`, which rebuilds the network)."""
    from rlprune.models.sparse_io import unpack

    with zipfile.ZipFile(run / "pruned.rlprune") as z:
        assert "meta.json" in z.namelist()
        return unpack({name: z.read(name) for name in z.namelist() if name != "meta.json"})


def latest_episode(run: Path) -> int | None:
    """The episode `RUN/checkpoints/latest` names, or None."""
    try:
        name = (run / "checkpoints" / "latest").read_text().strip()
    except FileNotFoundError:
        return None
    return int(name.removeprefix("ep")) if name.startswith("ep") else None


def episodes_done(run: Path) -> int:
    try:
        return int(read_json(run / "status.json").get("episodes_done") or 0)
    except (FileNotFoundError, json.JSONDecodeError):
        return 0


def final_state(run: Path) -> dict:
    """The search state in the checkpoint `latest` points to."""
    name = (run / "checkpoints" / "latest").read_text().strip()
    return torch.load(run / "checkpoints" / name / "state.pt", map_location="cpu",
                      weights_only=False)


def copy_run(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst, symlinks=True)
    return dst


