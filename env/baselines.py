"""Baseline sparsity allocations over the agent's layers, each landing exactly on the budget.

Each function takes the agent layers' dense weights and the number of weights to prune among
them (`Budget.agent_goal`), and returns how many weights to prune in each layer. Which weights
go within a layer is always magnitude order, as for the agent.
"""

from __future__ import annotations

import numpy as np
import torch

from rlprune.env.masks import count_for


def uniform(weights: list[torch.Tensor], n_prune: int) -> list[int]:
    """Every layer at the same sparsity; the rounding remainder goes to the largest layers."""
    sizes = np.array([w.numel() for w in weights])
    counts = np.floor(n_prune / sizes.sum() * sizes).astype(np.int64)
    for i in np.argsort(-sizes, kind="stable")[: n_prune - counts.sum()]:
        counts[i] += 1
    return counts.tolist()


def _global_lowest(scores: list[torch.Tensor], n_prune: int) -> list[int]:
    """Per-layer counts of the `n_prune` lowest scores over all layers (stable on ties)."""
    flat = torch.cat([s.flatten().double() for s in scores])
    owner = torch.cat([torch.full((s.numel(),), i) for i, s in enumerate(scores)])
    chosen = owner[torch.argsort(flat, stable=True)[:n_prune]]
    return torch.bincount(chosen, minlength=len(scores)).tolist()


def global_magnitude(weights: list[torch.Tensor], n_prune: int) -> list[int]:
    """One threshold on |w| across layers (`torch.nn.utils.prune.global_unstructured`)."""
    return _global_lowest([w.detach().abs() for w in weights], n_prune)


def lamp_scores(weight: torch.Tensor) -> torch.Tensor:
    """LAMP (Lee et al. 2021): with a layer's weights sorted by |w| ascending, the score of
    weight u is w_u² / Σ_{v ≥ u} w_v². Returned in the weight's own layout."""
    sq = weight.detach().double().flatten() ** 2
    order = torch.argsort(sq, stable=True)
    sorted_sq = sq[order]
    suffix = torch.flip(torch.cumsum(torch.flip(sorted_sq, [0]), 0), [0])
    scores = torch.empty_like(sq)
    scores[order] = sorted_sq / suffix.clamp_min(torch.finfo(torch.float64).tiny)
    return scores.view_as(weight)


def lamp(weights: list[torch.Tensor], n_prune: int) -> list[int]:
    return _global_lowest([lamp_scores(w) for w in weights], n_prune)


def erk_densities(shapes: list[tuple[int, ...]], n_keep: int) -> list[float]:
    """ERK (Evci et al. 2020): density ∝ (n_in + n_out + k_h + k_w) / (n_in·n_out·k_h·k_w),
    scaled so the layers keep `n_keep` weights; layers that would exceed density 1 are made
    dense and the rest re-solved."""
    sizes = np.array([int(np.prod(s)) for s in shapes], dtype=np.float64)
    raw = np.array([sum(s) / np.prod(s) for s in shapes], dtype=np.float64)
    dense = np.zeros(len(shapes), dtype=bool)
    while True:
        budget = n_keep - sizes[dense].sum()
        eps = budget / (raw[~dense] * sizes[~dense]).sum()
        density = np.where(dense, 1.0, eps * raw)
        over = (density > 1.0) & ~dense
        if not over.any():
            return density.tolist()
        dense |= over


def erk(weights: list[torch.Tensor], n_prune: int) -> list[int]:
    """ERK densities turned into whole counts that sum exactly to `n_prune`."""
    sizes = [w.numel() for w in weights]
    density = erk_densities([tuple(w.shape) for w in weights], sum(sizes) - n_prune)
    counts = [count_for(n, 1.0 - d) for n, d in zip(sizes, density)]
    # Rounding can leave a few weights over or under: settle them in the layers with room.
    for i in np.argsort(sizes, kind="stable")[::-1]:
        gap = n_prune - sum(counts)
        if gap == 0:
            break
        counts[i] = min(sizes[i], max(0, counts[i] + gap))
    return counts


METHODS = {"uniform": uniform, "global": global_magnitude, "lamp": lamp, "erk": erk}
