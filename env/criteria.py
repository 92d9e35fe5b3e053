"""Which channels of a group go first: a score per root channel, the lowest pruned first.

- `l1`: the filter L1 norm (Li et al. 2017): the mean |w| of the channel's rows in the
  group's producing layers (its convolution filters, Linear rows, BatchNorm scales).
- `taylor`: the first-order Taylor estimate of the loss change when a channel is removed,
  |a · dL/da| averaged over positions and images of a few train batches (Molchanov et al.
  2017; the Taylor-guided filter pruning of Zhang et al. 2021).
- `similarity`: a channel whose feature map duplicates a more important channel's is
  redundant (the ECS-attention + feature-similarity pruning of Wang and Li): each channel's
  attention is its mean |activation| (squeeze-style channel attention, normalised to the
  group's largest), and its score is that attention times (1 - the largest cosine similarity
  of its map with a channel of higher attention).

Scores are computed once, on the dense network, from the group's activation layer (its
first BatchNorm, else its root).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from rlprune.env.channels import ChannelGraph
from rlprune.env.config import CRITERIA  # noqa: F401  (the criteria this module scores)
from rlprune.models.splits import Split

CALIBRATION_SEED = 0  # the same seed as the BatchNorm calibration batches (env.episode)


def l1_scores(model: nn.Module, graph: ChannelGraph) -> list[torch.Tensor]:
    modules = dict(model.named_modules())
    scores = []
    for g in graph.groups:
        total = torch.zeros(g.channels, dtype=torch.float64)
        count = torch.zeros(g.channels, dtype=torch.float64)
        for name, rows, owner in g.rows:
            weight = modules[name].weight.detach().double().cpu()
            per_row = weight.abs().reshape(weight.shape[0], -1).mean(1)
            total.index_add_(0, owner, per_row[rows])
            count.index_add_(0, owner, torch.ones(len(owner), dtype=torch.float64))
        scores.append(total / count.clamp_min(1))
    return scores


def _batches(data: Split, batches: int, batch_size: int):
    rng = np.random.default_rng(CALIBRATION_SEED)
    for _ in range(batches):
        idx = torch.from_numpy(rng.choice(len(data), size=min(batch_size, len(data)),
                                          replace=False))
        yield data.x[idx], data.y[idx]


def _with_activations(model: nn.Module, graph: ChannelGraph, fn) -> None:
    """Run `fn(outputs)` with forward hooks recording each group's activation layer's output
    (`outputs[name]`), keeping its gradient."""
    modules = dict(model.named_modules())
    outputs: dict[str, torch.Tensor] = {}

    def keep(name: str):
        def hook(module, inputs, out) -> None:
            if out.requires_grad:
                out.retain_grad()
            outputs[name] = out
        return hook

    names = {g.activation for g in graph.groups}
    hooks = [modules[name].register_forward_hook(keep(name)) for name in names]
    try:
        fn(outputs)
    finally:
        for h in hooks:
            h.remove()


def _per_channel(activation: torch.Tensor) -> torch.Tensor:
    """N x C x ... -> C x (N * positions)."""
    return activation.transpose(0, 1).reshape(activation.shape[1], -1)


def _root_order(g, device) -> torch.Tensor:
    """The activation layer's channel of each root channel (they are the same channels)."""
    for name, rows, owner in g.rows:
        if name == g.activation:
            out = torch.empty(g.channels, dtype=torch.long)
            out[owner] = rows
            return out.to(device)
    return torch.arange(g.channels, device=device)


def taylor_scores(model: nn.Module, graph: ChannelGraph, data: Split, *, batches: int = 4,
                  batch_size: int = 64) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    sums = [torch.zeros(g.channels, dtype=torch.float64) for g in graph.groups]
    was_training = model.training
    model.eval()

    def run(outputs: dict[str, torch.Tensor]) -> None:
        for x, y in _batches(data, batches, batch_size):
            model.zero_grad(set_to_none=True)
            loss = nn.functional.cross_entropy(model(x.to(device)), y.to(device))
            loss.backward()
            for s, g in zip(sums, graph.groups):
                a = outputs[g.activation]
                if a.grad is None:
                    continue
                taylor = (a * a.grad).detach()
                if taylor.dim() > 2:
                    taylor = taylor.flatten(2).mean(2)  # the mean over positions, per image
                per = taylor.abs().mean(0).double().cpu()
                s += per[_root_order(g, "cpu")]

    try:
        _with_activations(model, graph, run)
    finally:
        model.zero_grad(set_to_none=True)
        model.train(was_training)
    return [s / batches for s in sums]


@torch.no_grad()
def similarity_scores(model: nn.Module, graph: ChannelGraph, data: Split, *,
                      batches: int = 2, batch_size: int = 64) -> list[torch.Tensor]:
    device = next(model.parameters()).device
    maps: list[list[torch.Tensor]] = [[] for _ in graph.groups]
    was_training = model.training
    model.eval()

    def run(outputs: dict[str, torch.Tensor]) -> None:
        for x, _ in _batches(data, batches, batch_size):
            model(x.to(device))
            for m, g in zip(maps, graph.groups):
                a = outputs[g.activation].detach()
                m.append(_per_channel(a)[_root_order(g, a.device)].double().cpu())

    try:
        _with_activations(model, graph, run)
    finally:
        model.train(was_training)
    return [redundancy_scores(torch.cat(m, 1)) for m in maps]


def redundancy_scores(features: torch.Tensor) -> torch.Tensor:
    """Scores of channels from their feature maps (C x samples): attention (mean |a|, over
    the largest) x (1 - the largest |cosine| with a channel of higher attention; ties by
    index, the earlier channel counts as higher)."""
    attention = features.abs().mean(1)
    attention = attention / attention.max().clamp_min(1e-12)
    unit = features / features.norm(dim=1, keepdim=True).clamp_min(1e-12)
    cosine = (unit @ unit.T).abs()
    n = len(attention)
    order = torch.argsort(-attention, stable=True)
    rank = torch.empty(n, dtype=torch.long)
    rank[order] = torch.arange(n)
    above = rank.unsqueeze(1) > rank.unsqueeze(0)  # [j, k]: k has higher attention than j
    redundancy = torch.where(above, cosine, torch.zeros_like(cosine)).amax(1)
    return attention * (1.0 - redundancy)


def channel_scores(criterion: str, model: nn.Module, graph: ChannelGraph,
                   data: Split | None) -> list[torch.Tensor]:
    """Each group's scores by `criterion` (CRITERIA); data-driven ones need `data`."""
    if criterion == "l1":
        return l1_scores(model, graph)
    if data is None:
        raise ValueError(f"criterion {criterion} needs train data")
    if criterion == "taylor":
        return taylor_scores(model, graph, data)
    return similarity_scores(model, graph, data)


def removal_orders(scores: list[torch.Tensor]) -> list[torch.Tensor]:
    """Per group, root channels from the first to go (lowest score) to the last."""
    return [torch.argsort(s, stable=True) for s in scores]
