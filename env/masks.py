"""Pruning primitives: magnitude masks, the 3-sigma rule, and masks that hold while training.

A mask is a bool tensor shaped like the weight; True keeps the weight, False prunes it.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.utils import prune


def count_for(numel: int, sparsity: float) -> int:
    """How many of `numel` weights a sparsity removes (nearest whole weight)."""
    return min(numel, max(0, int(round(sparsity * numel))))


def magnitude_order(weight: torch.Tensor) -> torch.Tensor:
    """Flat indices of `weight` from smallest to largest |w| (stable, so ties are reproducible)."""
    return torch.argsort(weight.detach().abs().flatten(), stable=True)


def magnitude_mask(weight: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Keep-mask that removes the `sparsity` fraction of smallest-magnitude weights."""
    mask = torch.ones(weight.numel(), dtype=torch.bool, device=weight.device)
    mask[magnitude_order(weight)[:count_for(weight.numel(), sparsity)]] = False
    return mask.view_as(weight)


def sigma_mask(weight: torch.Tensor, k: float) -> torch.Tensor:
    """Keep-mask of the k-sigma rule: prune every w with mu - k*sigma < w < mu + k*sigma."""
    w = weight.detach().double()
    mu, sigma = w.mean(), w.std(unbiased=False)
    return ~((w > mu - k * sigma) & (w < mu + k * sigma))


class MagnitudePruner:
    """Turns sparsities into masks by index, for layers whose dense weights never change.

    The |w| order of each layer is sorted once; pruning a layer writes `dense * mask` into the
    live weight in place, so a search makes no model copies per episode.
    """

    def __init__(self, weights: list[torch.Tensor]):
        self.weights = weights  # the live parameters, written in place
        self.dense = [w.detach().clone() for w in weights]
        self.orders = [magnitude_order(w) for w in self.dense]

    @torch.no_grad()
    def apply(self, index: int, n_pruned: int) -> None:
        live = self.weights[index]
        live.copy_(self.dense[index])
        live.view(-1)[self.orders[index][:n_pruned]] = 0


def hold_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Register masks with torch's pruning machinery so they hold through fine-tuning.

    The forward pass computes weight = weight_orig * mask, so pruned weights are exactly zero
    in every forward pass and after every optimizer step, momentum and weight decay included.
    """
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        prune.custom_from_mask(modules[name], "weight", mask.to(modules[name].weight.device))


def make_permanent(model: nn.Module) -> None:
    """Fold held masks into plain weights (zeros stay) and drop the pruning hooks."""
    for module in model.modules():
        if prune.is_pruned(module) and hasattr(module, "weight_mask"):
            prune.remove(module, "weight")


@torch.no_grad()
def apply_masks(model: nn.Module, masks: dict[str, torch.Tensor]) -> None:
    """Zero the masked weights in place (no hooks; for evaluation only)."""
    modules = dict(model.named_modules())
    for name, mask in masks.items():
        modules[name].weight.mul_(mask.to(modules[name].weight.dtype))


def mean_distance_mask(weight: torch.Tensor, count: int) -> torch.Tensor:
    """Keep-mask pruning the `count` weights closest to the layer's mean.

    On the weights a k-sigma mask was made from, this is the same mask with count = its pruned
    weights (the rule removes exactly those with |w - mu| < k*sigma); on other weights it keeps
    the rule's spirit and the recorded sparsity exactly.
    """
    w = weight.detach().double().flatten()
    order = torch.argsort((w - w.mean()).abs(), stable=True)
    mask = torch.ones(w.numel(), dtype=torch.bool, device=weight.device)
    mask[order[:count]] = False
    return mask.view_as(weight)
