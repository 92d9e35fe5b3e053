"""Choosing the result by recovered accuracy: successive halving over candidate allocations.

The reward an episode gets (val accuracy or loss before fine-tuning) ranks allocations poorly
near the top, so a search can end with a selection stage (docs/decisions.md): its top
allocations by reward and the seed policies' allocations each get a short masked fine-tune
on `train` and are scored on `val`; the better half goes on to a fine-tune twice as long, and
so on until one is left. Only `train` and `val` are read here; `test` never is.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from rlprune.env.evaluate import ProxyEvaluator, recalibrate_bn
from rlprune.env.masks import hold_masks
from rlprune.models.splits import Split
from rlprune.models.train import TrainConfig, train


@dataclass
class Candidate:
    """An allocation in the selection: where it came from, and its score at each rung."""

    name: str  # "episode 231" or "seed lamp"
    sparsities: dict
    reward: float | None = None  # its search reward (None for a seed policy not played)
    episode: int | None = None
    scores: list[dict] = field(default_factory=list)  # per rung: steps, val_accuracy, val_loss

    def to_json(self) -> dict:
        return {"name": self.name, "reward": self.reward, "episode": self.episode,
                "scores": self.scores}

    def last(self) -> tuple[float, float]:
        """Its latest score as a sort key: higher val accuracy, then lower val loss."""
        s = self.scores[-1]
        return (-s["val_accuracy"], s["val_loss"])


Score = Callable[[Candidate, int], tuple[float, float]]


def halving_scorings(candidates: int, rungs: int = 64) -> int:
    """How many scorings `successive_halving` makes of `candidates` fresh candidates."""
    total, alive = 0, candidates
    for rung in range(rungs):
        if alive <= 1:
            break
        total += alive
        alive = 1 if rung == rungs - 1 else -(-alive // 2)
    return total


def successive_halving(candidates: list[Candidate], score: Score, first_steps: int, *,
                       rungs: int = 64,
                       on_scored: Callable[[Candidate], None] | None = None) -> Candidate:
    """The candidate left when each rung keeps the better half (ties: the earlier in
    `candidates`), each rung's fine-tune twice as long as the one before; after `rungs` rungs
    the best of those still in. `score(c, steps)` gives (val accuracy, val loss) after `steps`
    masked SGD steps; a candidate that already holds a score for a rung (a resumed selection)
    is not scored again; `on_scored` is called after every new score."""
    alive, steps = list(candidates), first_steps
    for rung in range(rungs):
        if len(alive) == 1:
            break
        for candidate in alive:
            if len(candidate.scores) <= rung:
                accuracy, loss = score(candidate, steps)
                candidate.scores.append({"steps": steps, "val_accuracy": accuracy,
                                         "val_loss": loss})
                if on_scored is not None:
                    on_scored(candidate)
        order = sorted(range(len(alive)), key=lambda i: (alive[i].last(), i))
        keep = 1 if rung == rungs - 1 else -(-len(alive) // 2)
        alive = [alive[i] for i in sorted(order[:keep])]
        steps *= 2
    return alive[0]


def short_finetune(model: nn.Module, masks: dict, train_split: Split, val: Split, *,
                   steps: int, lr: float, seed: int, bn_batches: int, bn_batch_size: int
                   ) -> tuple[float, float]:
    """(val accuracy, val loss) of `model` (pruned, its `masks` held) after `steps` SGD steps
    on `train_split`, BatchNorm first re-estimated as the search scored it. Modifies
    `model`."""
    recalibrate_bn(model, train_split, bn_batches, bn_batch_size, np.random.default_rng(seed))
    hold_masks(model, masks)
    epochs = -(-steps * 128 // max(1, len(train_split)))
    train(model, train_split, TrainConfig(epochs=max(1, epochs), lr=lr, seed=seed,
                                          max_steps=steps))
    device = next(model.parameters()).device
    with torch.inference_mode():
        return ProxyEvaluator(val, device).score(model)
