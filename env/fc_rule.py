"""The k-sigma rule for fully-connected layers, with k fixed or chosen automatically."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from rlprune.env.layers import Layer
from rlprune.env.masks import sigma_mask

AUTO_KS = (3.0, 2.5, 2.0, 1.5, 1.0)
AUTO_MAX_DROP = 0.01  # at most one point of proxy accuracy for the FC layers alone
_EPS = 1e-9  # accuracies are ratios of counts: 0.992 - 0.982 must count as one point


@dataclass
class FcRule:
    k: float | None  # None: the FC layers stay dense
    masks: dict[str, torch.Tensor]
    trials: list[dict] = field(default_factory=list)  # what `auto` measured for each k

    @property
    def pruned(self) -> int:
        return sum(int((~m).sum()) for m in self.masks.values())


def sigma_masks(layers: list[Layer], k: float) -> dict[str, torch.Tensor]:
    return {layer.name: sigma_mask(layer.module.weight, k) for layer in layers}


@torch.no_grad()
def choose_fc_rule(layers: list[Layer], k: float | str, *, feasible: Callable[[int], bool],
                   accuracy: Callable[[nn.Module], float], model: nn.Module) -> FcRule:
    """The FC rule's masks for a fixed k, or for `auto` the largest k in AUTO_KS that leaves
    the agent a feasible budget and costs at most one proxy-accuracy point with only the FC
    layers pruned. If none qualifies, the FC layers stay dense (k=None); `trials` says why.
    """
    if not layers:
        return FcRule(None, {})
    if k != "auto":
        return FcRule(float(k), sigma_masks(layers, float(k)))
    dense = {layer.name: layer.module.weight.detach().clone() for layer in layers}
    base = accuracy(model)
    trials = []
    for candidate in AUTO_KS:
        masks = sigma_masks(layers, candidate)
        pruned = sum(int((~m).sum()) for m in masks.values())
        trial = {"k": candidate, "pruned": pruned, "feasible": feasible(pruned)}
        if trial["feasible"]:
            for layer in layers:
                layer.module.weight.mul_(masks[layer.name])
            trial["proxy_accuracy"] = accuracy(model)
            for layer in layers:
                layer.module.weight.copy_(dense[layer.name])
            trial["accuracy_drop"] = base - trial["proxy_accuracy"]
        trials.append(trial)
        if trial["feasible"] and trial["accuracy_drop"] <= AUTO_MAX_DROP + _EPS:
            return FcRule(candidate, masks, trials)
    return FcRule(None, {}, trials)
