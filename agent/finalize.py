"""From a policy to a pruned, fine-tuned model: shared by search, `apply` and baselines."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from rlprune.agent.policy import policy_masks
from rlprune.env.evaluate import recalibrate_bn
from rlprune.env.masks import apply_masks, hold_masks, make_permanent
from rlprune.models.data import Dataset
from rlprune.models.train import TrainConfig, evaluate, train
from torch import nn

if TYPE_CHECKING:
    from rlprune.agent.config import SearchConfig
    from rlprune.agent.search import Dense


@dataclass
class Finalized:
    model: nn.Module
    proxy_accuracy: float  # val, masks applied, before fine-tuning
    pruned_accuracy: float  # test, masks applied, before fine-tuning
    finetuned_accuracy: float  # test, after fine-tuning with masks held


def prune_and_finetune(dense: nn.Module, policy: dict, data: Dataset, *, epochs: int,
                       lr: float = 0.01, seed: int = 0, bn_batches: int = 1,
                       bn_batch_size: int = 128, device: str = "cpu",
                       on_epoch=None) -> Finalized:
    """Apply `policy` to a copy of `dense` (BatchNorm statistics re-estimated on `bn_batches`
    train batches, as during the search), score it on test, fine-tune with masks held."""
    model = copy.deepcopy(dense).to(device)
    masks = policy_masks(model, policy)
    apply_masks(model, masks)
    recalibrate_bn(model, data.train, bn_batches, bn_batch_size, np.random.default_rng(seed))
    proxy = evaluate(model, data.val)
    pruned = evaluate(model, data.test)
    finetuned = pruned
    if epochs > 0:
        hold_masks(model, masks)
        train(model, data.train, TrainConfig(epochs=epochs, lr=lr, seed=seed), on_epoch)
        make_permanent(model)
        finetuned = evaluate(model, data.test)
    return Finalized(model, proxy, pruned, finetuned)


def finalize_with(config: SearchConfig, dense: Dense, policy: dict, *, epochs: int | None = None,
                  seed: int | None = None, on_epoch=None) -> Finalized:
    """`prune_and_finetune` with a job's settings (fine-tune budget, learning rate, seed,
    BatchNorm recalibration, device); `epochs` and `seed` override the job's."""
    return prune_and_finetune(
        dense.model, policy, dense.data,
        epochs=config.finetune_epochs if epochs is None else epochs, lr=config.finetune_lr,
        seed=config.seed if seed is None else seed, bn_batches=config.bn_recalibration_batches,
        device=config.device, on_epoch=on_epoch)
