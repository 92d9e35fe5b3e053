"""The trained dense model a pruning job starts from, with the data it was trained on."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from rlprune.models.data import Data
from rlprune.models.errors import UserError
from rlprune.models.train import evaluate


@dataclass
class Dense:
    """A trained model (on the CPU, in eval mode; never modified by a job) and its data.

    `weights` is the file the weights came from, if any; `test_accuracy` is measured once."""

    data: Data
    model: nn.Module
    weights: Path | None
    test_accuracy: float

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return self.data.input_shape

    @classmethod
    def of(cls, model: nn.Module, data: Data, weights: Path | None = None) -> Dense:
        """A private CPU copy of `model` (the caller's object is left as it is), checked
        against the data: it must take its images and give at least its classes."""
        if not isinstance(model, nn.Module):
            raise UserError(f"model is a {type(model).__name__}, not a torch.nn.Module")
        own = copy.deepcopy(model).cpu().eval()
        check_model(own, data)
        return cls(data, own, weights, evaluate(own, data.test))


@torch.inference_mode()
def check_model(model: nn.Module, data: Data) -> None:
    """Refuse a model with nothing to prune (no Conv2d or Linear layer), or one that cannot
    take the data's images or has fewer outputs than the data has classes."""
    if not any(isinstance(m, nn.Conv2d | nn.Linear) for m in model.modules()):
        raise UserError(f"the model ({type(model).__name__}) has no Conv2d or Linear layer, so "
                        "nothing to prune")
    try:
        out = model(data.val.x[:2])
    except Exception as exc:  # a user's forward pass can fail in any way
        raise UserError(f"the model cannot take {data.name}'s images "
                        f"({'x'.join(map(str, data.input_shape))}): "
                        f"{type(exc).__name__}: {exc}") from None
    if not isinstance(out, torch.Tensor) or out.dim() != 2:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise UserError(f"the model's output is {shape}; expected logits, batch x classes")
    assert data.spec is not None  # set by Data.__post_init__
    if out.shape[1] < data.spec.num_classes:
        raise UserError(f"the model gives {out.shape[1]} outputs but {data.name} has "
                        f"{data.spec.num_classes} classes; build it with num_classes="
                        f"{data.spec.num_classes}")
