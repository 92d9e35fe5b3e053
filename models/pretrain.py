"""Train a dense model from scratch on a dataset and save it with its metadata."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from rlprune.models.data import Data
from rlprune.models.registry import build_model
from rlprune.models.train import TrainConfig, evaluate, save_weights, train

# Epochs that reach the accuracy the README promises on the embedded data (measured).
DEFAULT_EPOCHS: dict[str, int] = {"lenet5": 8, "lenet300": 10, "vgg-mini": 8}
FALLBACK_EPOCHS = 30


def default_epochs(model_name: str) -> int:
    return DEFAULT_EPOCHS.get(model_name, FALLBACK_EPOCHS)


def default_weights_path(model_name: str, dataset_name: str, seed: int = 0,
                            root: str | Path = "runs/pretrained") -> Path:
    safe = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model_name}-{dataset_name}-seed{seed}")
    return Path(root) / f"{safe}.pt"


def model_for(model_name: str, data: Data) -> nn.Module:
    """A fresh `model_name` shaped for `data` (its input shape and classes)."""
    assert data.spec is not None  # set by Data.__post_init__
    return build_model(model_name, **data.spec.model_kwargs())


def pretrain(model_name: str, data: Data, out: str | Path, *, epochs: int | None = None,
             seed: int = 0, device: str = "cpu",
             on_epoch: Callable[[int, float], None] | None = None) -> tuple[nn.Module, dict]:
    """Train `model_name` densely on `data`, save it to `out`; returns the model and metadata."""
    torch.manual_seed(seed)
    model = model_for(model_name, data).to(device)
    config = TrainConfig(epochs=epochs or default_epochs(model_name), seed=seed)
    start = time.perf_counter()
    train(model, data.train, config, on_epoch)
    seconds = time.perf_counter() - start
    assert data.spec is not None  # set by Data.__post_init__
    meta = {
        "model": model_name, "dataset": data.name,
        "num_classes": data.spec.num_classes, "in_channels": data.spec.in_channels,
        "image_size": list(data.spec.input_shape[1:]),
        "accuracy": {"val": evaluate(model, data.val), "test": evaluate(model, data.test)},
        "epochs": config.epochs, "seed": seed, "train_seconds": round(seconds, 2),
    }
    save_weights(out, model, meta)
    return model, meta
