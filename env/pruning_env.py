"""The Gymnasium environment in which an agent chooses one sparsity per layer."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rlprune.env.baselines import METHODS as BASELINES
from rlprune.env.budget import Budget
from rlprune.env.config import S_MAX_FLOOR, EnvConfig
from rlprune.env.episode import EpisodeEnv, normalise_columns, unit
from rlprune.env.fc_rule import choose_fc_rule
from rlprune.env.layers import Layer, Network, describe, nonzero_costs
from rlprune.env.masks import MagnitudePruner, apply_masks
from rlprune.models.errors import SettingError, UserError
from rlprune.models.splits import Split


def resolve_action_mapping(mapping: str, sizes: list[int]) -> str:
    """`auto` → `feasible` if a layer other than the last holds most of the agent's weights,
    else `absolute`; any other mapping is returned as it is.

    Such a layer's budget window is narrow whatever the others do (LeNet-5's FC1, 93% of the
    weights, may only take 0.95-0.99 at a 0.95 target), so AMC's mapping cuts nearly all of
    its actions and, below the window, pushes the later layers to s_max; there the actor
    collapsed. Elsewhere (vgg-mini's conv layers, the last of which is the largest) AMC's
    mapping fine-tuned better at 0.95 (docs/decisions.md).
    """
    if mapping != "auto":
        return mapping
    return "feasible" if any(2 * n > sum(sizes) for n in sizes[:-1]) else "absolute"


class PruningEnv(EpisodeEnv):
    """Choose a weight sparsity for each agent-controlled layer of a trained network.

    One episode is one pass over the agent's layers (every Conv2d, plus the Linear layers with
    `fc_rule="agent"`) in forward order; one step prunes one layer.

    Observation: `Box(0, 1, (12,), float32)` describing the layer about to be pruned: index,
    type (0 conv, 1 fc), in channels, out channels, kernel size, stride, output height·width,
    params, FLOPs (each min-max normalised over the agent's layers), then reduced (weights
    pruned so far / N), rest (weights in later agent layers / N) and the previous layer's
    sparsity.

    Action: `Box(-1, 1, (1,), float32)`. With `action_mapping="absolute"` (AMC) it maps
    linearly onto a sparsity in [s_min, s_max] (`env.s_max`: `auto` resolved, see
    EnvConfig.s_max), which is then clamped from both sides (see
    `env.budget`); with `"feasible"` it maps linearly onto the range of weights the budget
    leaves this layer, so every action is applied as asked; `"auto"` picks one of the two
    from the layer sizes (`resolve_action_mapping`; the choice is `env.action_mapping`).
    Either way the episode ends with exactly round(target·N) weights pruned in scope,
    whatever the actions were.

    Pruning: magnitude masks; each layer's |w| order is sorted once and `dense * mask` is
    written into the working copy of the model in place. Layers owned by the FC rule get their
    k-sigma masks once (during the search or only afterwards, `fc_during_search`).

    Reward: 0 on every step but the last; on the last, the proxy score on the val split:
    minus the cross-entropy (`loss`, the default), the accuracy (`acc`), or
    `-(1 - acc)·log(non-zero FLOPs or params)`. BatchNorm statistics are
    first re-estimated on `bn_recalibration_batches` train batches (the same batches in every
    episode with `bn_fixed_batches`, so the reward depends on the allocation alone).

    Termination: `terminated=True` after the last agent layer; never truncated.

    Info: each step has `layer`, `sparsity` (applied) and `requested` (asked for, before the
    clamp); the last step adds `sparsities` (every prunable layer), `achieved_sparsity`,
    `pruned`, `proxy_accuracy`, `proxy_loss` (val cross-entropy), `reward`, `params` and
    `flops` (dense and non-zero), `eval_s` (the reward evaluation's wall time). A search
    keeps the episode with the highest reward, and of equal rewards the one with the lowest
    `proxy_loss`.

    The model passed in is copied once; it is never modified.
    """

    def __init__(self, model: nn.Module, val: Split, input_shape: tuple[int, int, int],
                 config: EnvConfig | None = None, *, calibration: Split | None = None,
                 device: str | torch.device = "cpu"):
        config = config or EnvConfig()
        super().__init__(model, val, config, calibration=calibration, device=device)
        self.net: Network = describe(self.model, input_shape, config.fc_rule)
        self.agent_layers: list[Layer] = self.net.owned_by("agent")
        # the agent layers' dense weights, kept before anything is masked
        self.pruner = MagnitudePruner([layer.module.weight for layer in self.agent_layers])
        fc_layers = self.net.owned_by("fc-rule")
        in_scope = self.net.layers if config.scope == "total" else self.agent_layers
        n_total = sum(layer.params for layer in in_scope)
        sizes = [layer.params for layer in self.agent_layers]

        # `auto` starts from the floor: the FC rule's k is chosen as with s_max 0.99
        self.s_max = S_MAX_FLOOR if config.s_max == "auto" else float(config.s_max)

        def budget_for(fixed: int) -> Budget:
            counted = fixed if config.scope == "total" else 0
            return Budget(config.target, n_total, counted, sizes, config.s_min, self.s_max)

        def feasible(fixed: int) -> bool:
            try:
                budget_for(fixed).check()
            except UserError:
                return False
            return True

        self.fc = choose_fc_rule(fc_layers, config.fc_k,
                                 feasible=feasible, accuracy=self.evaluator.accuracy,
                                 model=self.model)
        self.budget = budget_for(self.fc.pruned)
        if config.s_max == "auto" and sizes and 0 <= self.budget.agent_goal <= sum(sizes):
            self.s_max = max(S_MAX_FLOOR, self._baseline_max_sparsity())
            self.budget = budget_for(self.fc.pruned)
        self.action_mapping = resolve_action_mapping(config.action_mapping, sizes)
        try:
            self.budget.check(fix=self._infeasible_fix())
        except SettingError as exc:
            if not self.fc.trials:
                raise
            tried = "; ".join(
                f"k={t['k']:g}: {'feasible' if t['feasible'] else 'infeasible'}"
                + (f", -{100 * t['accuracy_drop']:.1f} pts" if "accuracy_drop" in t else "")
                for t in self.fc.trials)
            # the budget's refusal, its settings still marked, so the CLI names their flags
            raise SettingError("fc_k", f"auto found no usable k ({tried}) and with dense FC "
                               f"layers: {exc.text(lambda name: f'`{name}`')}",
                               others=(exc.setting, *exc.others)) from None
        if config.fc_during_search:
            apply_masks(self.model, self.fc.masks)
        self._keep_dense_statistics()
        self._static = self._static_features()

    def _computed_flops(self) -> int:
        return self.net.flops_total  # masked weights are multiplied all the same

    def _infeasible_fix(self) -> str:
        """What to change when the target needs more weights than the agent's layers hold."""
        c = self.config
        if c.fc_rule == "3sigma" and c.fc_k == "auto":
            return ("prune every layer with the agent (`fc_rule` agent, the setting "
                    "docs/benchmarks.md uses for LeNet-5), or give a fixed `fc_k` (a smaller k "
                    "prunes the FC layers harder)")
        if c.fc_rule == "3sigma":
            return ("a smaller `fc_k` prunes the FC layers harder, `fc_rule` agent prunes "
                    "every layer with the agent; or lower `target`")
        if c.fc_rule == "none":
            return ("`fc_rule` agent or 3sigma lets the FC layers be pruned too; or lower "
                    "`target`")
        return "lower `target`"

    def baseline_counts(self, method: str) -> list[int]:
        """Weights the baseline `method` (env.baselines.METHODS) prunes in each agent layer,
        on this env's exact budget; from the dense weights, whatever the last episode masked."""
        weights = self.pruner.dense
        return BASELINES[method](weights, self.budget.agent_goal)

    def _baseline_max_sparsity(self) -> float:
        """The largest layer sparsity of the LAMP and ERK allocations on this budget."""
        return max(n / layer.params for method in ("lamp", "erk")
                   for n, layer in zip(self.baseline_counts(method), self.agent_layers))

    # -- spaces -------------------------------------------------------------------------
    def _static_features(self) -> np.ndarray:
        return normalise_columns([
            [i, layer.kind == "fc", layer.in_channels, layer.out_channels, layer.kernel,
             layer.stride, layer.fmap, layer.params, layer.flops]
            for i, layer in enumerate(self.agent_layers)])

    def _observation(self) -> np.ndarray:
        n = self.budget.total
        t = min(self._t, len(self.agent_layers) - 1)
        rest = sum(self.budget.sizes[self._t + 1:])
        dynamic = [(self.budget.fixed + self._pruned) / n, rest / n, self._prev]
        return np.concatenate([self._static[t], np.asarray(dynamic, np.float32)]).clip(0, 1)

    def action_to_sparsity(self, action: np.ndarray | float) -> float:
        """The `absolute` mapping: [-1, 1] linearly onto [s_min, s_max]."""
        a = unit(action)
        return self.config.s_min + a * (self.s_max - self.config.s_min)

    def _prune_count(self, t: int, action) -> tuple[int, float]:
        """Weights layer t prunes for `action`, and the sparsity the action asked for."""
        if self.action_mapping == "feasible":
            lo, hi = self._bounds(t, self._counts)
            n = lo + int(round(unit(action) * (hi - lo)))
            return n, n / self.budget.sizes[t]
        requested = self.action_to_sparsity(action)
        return self.budget.clamp(t, self._pruned, requested), requested

    def _bounds(self, t: int, counts_before: list[int]) -> tuple[int, int]:
        return self.budget.bounds(t, sum(counts_before))

    # -- episode ------------------------------------------------------------------------
    @property
    def _pruned(self) -> int:
        """Weights the agent's steps have pruned so far this episode."""
        return sum(self._counts)

    def _cut(self, t: int, action) -> tuple[int, float]:
        n, requested = self._prune_count(t, action)
        self.pruner.apply(t, n)
        return n, requested

    def sparsities(self, counts: list[int] | None = None) -> dict[str, float]:
        """Every prunable layer's sparsity (FC rule included) with `counts` weights pruned in
        the agent's layers: by default, those of the episode so far."""
        out = {layer.name: 0.0 for layer in self.net.layers}
        for layer, n in zip(self.agent_layers, self._counts if counts is None else counts):
            out[layer.name] = n / layer.params
        for name, mask in self.fc.masks.items():
            out[name] = float((~mask).sum()) / mask.numel()
        return out

    def _finish(self, info: dict[str, Any]) -> float:
        sparsity = self.sparsities()
        pruned = self.budget.fixed + self._pruned
        return self._score_episode(info, nonzero_costs(self.net, sparsity),
                                   sparsities=sparsity, pruned=pruned,
                                   achieved_sparsity=pruned / self.budget.total)
