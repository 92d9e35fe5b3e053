"""Session assets of the run-level tests: the user model modules (real files in
tests/usermodels/, importable as `--model MODULE:make`) and one trained dense model per session
(5 epochs on `digits`, under a second)."""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch

USER_MODELS = Path(__file__).resolve().parent.parent / "usermodels"
MODEL_MODULE = "rlprune_agent_tinynet"
OTHER_MODULE = "rlprune_agent_othernet"  # other layer names and shapes
FC_HEAVY_MODULE = "rlprune_agent_fcheavy"  # FC layers hold most of the weights


# The tiny net's prunable layers and weight counts, counted by hand from MODEL_SOURCE.
TINY_LAYERS = {"c1": 8 * 1 * 9, "c2": 16 * 8 * 9, "c3": 16 * 16 * 9, "f1": 10 * 64}
TINY_PRUNABLE = sum(TINY_LAYERS.values())  # 4,168

TARGET = 0.5
EPISODES, WARMUP, EVERY = 10, 3, 3
# --fc-k 1 prunes about two thirds of f1 and leaves rewards that vary between episodes
# (k=3 prunes all of f1 and every episode would score chance).
SEARCH_FLAGS = ("--dataset", "digits", "--target", str(TARGET), "--fc-k", "1",
                "--episodes", str(EPISODES), "--warmup", str(WARMUP),
                "--checkpoint-every", str(EVERY), "--finetune-epochs", "0", "--quiet",
                # the selection stage is tested on its own (test_selection.py)
                "--select-top-k", "0", "--no-int8-size")
PROCESS_TIMEOUT = 240.0


@dataclass
class Assets:
    """Model modules (importable from `models`) and dense checkpoints, read-only for tests."""

    models: Path
    dense: Path  # the tiny net, trained 5 epochs on digits
    other_dense: Path  # OTHER_MODULE, untrained
    fc_heavy_dense: Path  # FC_HEAVY_MODULE, untrained

    @property
    def model(self) -> str:
        return f"{MODEL_MODULE}:make"

    def env(self) -> dict[str, str]:
        """Environment for subprocesses: the model modules importable, one thread each."""
        path = os.pathsep.join(p for p in (str(self.models), os.environ.get("PYTHONPATH"))
                               if p)
        return {**os.environ, "PYTHONPATH": path, "OMP_NUM_THREADS": "1",
                "MKL_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


_CACHE: dict[str, object] = {}


@contextlib.contextmanager
def one_torch_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def get_assets(tmp_path_factory: pytest.TempPathFactory) -> Assets:
    if "assets" in _CACHE:
        return _CACHE["assets"]  # type: ignore[return-value]
    from rlprune.models.data import load_dataset
    from rlprune.models.pretrain import pretrain
    from rlprune.models.registry import build_model
    from rlprune.models.train import save_weights

    root = tmp_path_factory.mktemp("agent_assets")
    models = USER_MODELS
    data = load_dataset("digits")
    dense, other, heavy = root / "dense.pt", root / "other.pt", root / "fc_heavy.pt"
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        mp.syspath_prepend(str(models))
        pretrain(f"{MODEL_MODULE}:make", data, dense, epochs=5, seed=0)
        torch.manual_seed(0)
        save_weights(other, build_model(f"{OTHER_MODULE}:make"), {"model": "other"})
        save_weights(heavy, build_model(f"{FC_HEAVY_MODULE}:make"), {"model": "fc-heavy"})
    assets = Assets(models, dense, other, heavy)
    _CACHE["assets"] = assets
    return assets


