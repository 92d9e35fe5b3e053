"""From a policy to a pruned (and, with data, fine-tuned) model: shared by every method and
both granularities (weight masks held through the fine-tune, or channels removed for real)."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
from torch import nn

from rlprune.env.channel_checks import check_fingerprint
from rlprune.env.channels import prune_channels
from rlprune.env.evaluate import recalibrate_bn
from rlprune.env.granularity import granularity_named
from rlprune.env.masks import apply_masks, hold_masks, make_permanent
from rlprune.env.policy import granularity_of, policy_masks
from rlprune.models.data import Data
from rlprune.models.train import TrainConfig, evaluate, train


@dataclass
class Finalized:
    model: nn.Module
    proxy_accuracy: float  # val, masks applied, before fine-tuning
    pruned_accuracy: float  # test, masks applied, before fine-tuning
    finetuned_accuracy: float  # test, after fine-tuning with masks held


def pruned_copy(dense: nn.Module, policy: dict, device: str = "cpu",
                input_shape: tuple[int, ...] | None = None):
    """A copy of `dense` pruned by the policy (its granularity's way), and its weight masks to
    hold while fine-tuning ({} where the pruning is physical, as for channels)."""
    return granularity_named(granularity_of(policy)).pruned_copy(dense, policy, device,
                                                                 input_shape)


def masked_copy(dense: nn.Module, policy: dict, device: str = "cpu",
                input_shape: tuple[int, ...] | None = None):
    """A weight policy's copy: every layer masked to its sparsity; the masks."""
    model = copy.deepcopy(dense).to(device)
    masks = policy_masks(model, policy)
    apply_masks(model, masks)
    return model, masks


def slim_copy(dense: nn.Module, policy: dict, device: str = "cpu",
              input_shape: tuple[int, ...] | None = None):
    """A channel policy's copy, its channels removed for real (the `input_shape` traces the
    model); no masks."""
    if input_shape is None:
        raise ValueError("a channel policy needs the input shape")
    check_fingerprint(dense, policy)
    removed = {g["name"]: g["removed"] for g in policy["groups"]}
    return prune_channels(dense, input_shape, removed).to(device), {}


def prune_and_finetune(dense: nn.Module, policy: dict, data: Data, *, epochs: int,
                       lr: float = 0.01, seed: int = 0, bn_batches: int = 1,
                       bn_batch_size: int = 128, device: str = "cpu",
                       on_epoch=None) -> Finalized:
    """Apply `policy` to a copy of `dense` (BatchNorm statistics re-estimated on `bn_batches`
    train batches, as during the search), score it on test, fine-tune (weight masks held; a
    channel-pruned network is simply smaller)."""
    model, masks = pruned_copy(dense, policy, device, data.input_shape)
    recalibrate_bn(model, data.train, bn_batches, bn_batch_size, np.random.default_rng(seed))
    proxy = evaluate(model, data.val)
    pruned = evaluate(model, data.test)
    finetuned = pruned
    if epochs > 0:
        hold_masks(model, masks)
        train(model, data.train, TrainConfig(epochs=epochs, lr=lr, seed=seed), on_epoch)
        make_permanent(model)
        finetuned = evaluate(model, data.test)
    model.eval()
    return Finalized(model, proxy, pruned, finetuned)
