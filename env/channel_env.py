"""The Gymnasium environment in which an agent removes a fraction of each channel group."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from rlprune.env.channel_budget import ChannelBudget
from rlprune.env.channels import ChannelGraph, Masker, prune_channels
from rlprune.env.config import S_MAX_FLOOR, EnvConfig
from rlprune.env.criteria import channel_scores, removal_orders
from rlprune.env.episode import EpisodeEnv, normalise_columns, unit
from rlprune.env.latency_table import LatencyModel
from rlprune.env.layers import Network, describe
from rlprune.env.masks import count_for
from rlprune.models.errors import SettingError
from rlprune.models.splits import Split

CHANNEL_BASELINES = ("uniform", "global-l1", "global-taylor")
# `--s-max auto` in channel mode: AMC's preserve-ratio floor of 0.2. Measured on vgg-mini
# (docs/decisions.md): the most-pruned group's removed fraction ranked 30 allocations by their
# fine-tuned accuracy far better (Spearman -0.80 to -0.94) than the proxy did (+0.64 to +0.77),
# and half the searches at 0.99 cut a 16-channel layer to 1-3 channels.
CHANNEL_S_MAX = 0.8
ROUND_TO = 8  # `round_to` auto: ONNX Runtime's AVX2 kernels take 8 fp32 values at once


class ChannelPruningEnv(EpisodeEnv):
    """Choose how many channels each channel group of a trained network loses.

    Groups come from Torch-Pruning's dependency graph (`env.channels`): layers that must lose
    the same channels (a residual stream, a depthwise convolution and its input) are one
    group and one step; the last layer never loses outputs. One episode is one pass over the
    groups in forward order.

    Observation: `Box(0, 1, (12,), float32)` for the group about to be pruned: index, type
    (0 conv, 1 fc), in channels, channels, kernel, stride, output height·width, params of its
    root layer, its cost (what removing all of it would save; each min-max normalised over
    the groups), then reduced (cost removed so far / total), rest (the later groups' cost /
    total) and the previous group's removed fraction. Cost is `budget`: fvcore's FLOPs, the
    parameters, or the latency estimated from a measured per-layer table
    (`env.latency_table`).

    Action: `Box(-1, 1, (1,), float32)`: `absolute` maps it onto a removed fraction in
    [s_min, s_max] (`env.s_max`: `auto` is 0.8 where the target allows it, else 0.99), then
    the two-sided clamp (`env.channel_budget`) cuts it; `feasible` maps it onto what the
    clamp allows. Either way the episode ends with the cost removed equal to `target` to
    within one channel of one group.

    Pruning: a group's channels go in the order of `criterion` (`env.criteria`, computed once
    on the dense network); they are masked (zeroed) in place, which computes exactly what the
    slimmed network would; no model is rebuilt during a search.

    Reward: 0 on every step but the last; on the last, as in weight mode: minus the val
    cross-entropy (`loss`), the accuracy (`acc`) or AMC's `-err*log(cost)`, after BatchNorm
    recalibration on fixed train batches.

    Termination: after the last group; never truncated. Info: each step has `layer`,
    `sparsity` (removed fraction) and `requested`; the last adds `sparsities` (every group's
    removed fraction), `removed` (channels per group), `achieved_sparsity` (cost removed /
    total), `proxy_accuracy`, `proxy_loss`, `reward`, `params` and `flops` (dense, remaining),
    `eval_s` (the reward evaluation's wall time).

    The model passed in is copied once; it is never modified.
    """

    def __init__(self, model: nn.Module, val: Split, input_shape: tuple[int, int, int],
                 config: EnvConfig | None = None, *, calibration: Split | None = None,
                 device: str | torch.device = "cpu"):
        config = config or EnvConfig(granularity="channel")
        super().__init__(model, val, config, calibration=calibration, device=device)
        self.input_shape = tuple(input_shape)
        self.graph = ChannelGraph(self.model, input_shape)
        if config.budget == "latency":
            if config.latency_table is None:
                raise SettingError("latency_table", "budget latency needs a latency table "
                                   "(a job measures one; rlprune.measure_latency_table)",
                                   lead=False)
            self.graph.add_cost("latency", LatencyModel(self.graph.shares(),
                                                        config.latency_table))
        self.net: Network = describe(self.model, input_shape, "agent")
        self.agent_layers = self.graph.groups  # one step per group
        self.round_to = 1
        self.s_max = self._auto_s_max() if config.s_max == "auto" else float(config.s_max)
        self.round_to = (self._auto_round_to() if config.round_to == "auto"
                         else int(config.round_to))
        self.budget = self._budget(self.s_max)
        self.budget.check()
        self.action_mapping = ("absolute" if config.action_mapping == "auto"
                               else config.action_mapping)
        self.fc = _NoFcRule()
        data = calibration
        self.scores = {name: channel_scores(name, self.model, self.graph, data)
                       for name in {"l1", config.criterion} | (
                           {"taylor"} if data is not None else set())}
        self.orders = removal_orders(self.scores[config.criterion])
        self.masker = Masker(self.model, self.graph)
        self._group_costs = [self.graph.group_cost(i, config.budget)
                             for i in range(len(self.graph.groups))]
        self._keep_dense_statistics()
        self._static = self._static_features()

    def _budget(self, s_max: float) -> ChannelBudget:
        c = self.config
        return ChannelBudget(self.graph, c.budget, c.target, c.s_min, s_max, self.round_to)

    def _auto_round_to(self) -> int:
        """ROUND_TO where every group has at least twice as many channels and the target can
        still be reached and not overshot; else 1 (decisions.md: Settings)."""
        if min((g.channels for g in self.graph.groups), default=0) < 2 * ROUND_TO:
            return 1
        self.round_to = ROUND_TO
        try:
            self._budget(self.s_max).check()
        except SettingError:
            return 1
        finally:
            self.round_to = 1
        return ROUND_TO

    def _auto_s_max(self) -> float:
        """AMC's bound, a group keeps at least a fifth of its channels, where the target can be
        reached so; else the design's floor."""
        if self.config.s_min < CHANNEL_S_MAX and self._budget(CHANNEL_S_MAX).reachable():
            return CHANNEL_S_MAX
        return S_MAX_FLOOR

    # -- features ---------------------------------------------------------------------------
    def _static_features(self) -> np.ndarray:
        modules = dict(self.model.named_modules())
        return normalise_columns([
            [i, g.kind == "fc", g.in_channels, g.channels, g.kernel, g.stride, g.fmap,
             modules[g.name].weight.numel(), self._group_costs[i]]
            for i, g in enumerate(self.graph.groups)])

    def _observation(self) -> np.ndarray:
        b = self.budget
        t = min(self._t, len(self.agent_layers) - 1)
        removed = b.total - b.cost([*self._counts, *[0] * (len(b.sizes) - len(self._counts))])
        rest = sum(self._group_costs[self._t + 1:])
        dynamic = [removed / b.total, rest / b.total, self._prev]
        return np.concatenate([self._static[t], np.asarray(dynamic, np.float32)]).clip(0, 1)

    # -- actions ----------------------------------------------------------------------------
    def _removed_for(self, t: int, action) -> tuple[int, float]:
        lo, hi = self._bounds(t, self._counts)
        a = unit(action)
        if self.action_mapping == "feasible":
            return self.budget.snap(t, lo + int(round(a * (hi - lo))), lo, hi), float("nan")
        requested = self.config.s_min + a * (self.s_max - self.config.s_min)
        n = self.budget.sizes[t]
        return self.budget.snap(t, count_for(n, requested), lo, hi), requested

    def _bounds(self, t: int, counts_before: list[int]) -> tuple[int, int]:
        return self.budget.bounds(t, list(counts_before))

    # -- baselines --------------------------------------------------------------------------
    def baseline_counts(self, method: str) -> list[int]:
        """Channels each group loses under `method` (CHANNEL_BASELINES), landed on this env's
        budget by the same clamp as an episode."""
        b = self.budget
        if method == "uniform":
            wanted = _uniform(b)
        elif method in ("global-l1", "global-taylor"):
            key = method.removeprefix("global-")
            if key not in self.scores:
                raise ValueError(f"{method} needs train data")
            wanted = _global(b, self.scores[key])
        else:
            raise ValueError(f"unknown channel baseline {method!r}")
        counts: list[int] = []
        for t, want in enumerate(wanted):
            counts.append(b.clamp(t, counts, want))
        return counts

    def sparsities(self, counts: list[int] | None = None) -> dict[str, float]:
        """Every group's removed fraction (by default, of the episode so far)."""
        counts = self._counts if counts is None else counts
        return {g.name: (counts[i] / g.channels if i < len(counts) else 0.0)
                for i, g in enumerate(self.graph.groups)}

    def removed_channels(self, sparsities: dict[str, float]) -> dict[str, list[int]]:
        """The root channels each group loses at these removed fractions (criterion order)."""
        out = {}
        for g, order in zip(self.graph.groups, self.orders):
            n = int(round(sparsities.get(g.name, 0.0) * g.channels))
            out[g.name] = sorted(int(i) for i in order[:n])
        return out

    # -- episode ----------------------------------------------------------------------------
    def _cut(self, t: int, action) -> tuple[int, float]:
        n, requested = self._removed_for(t, action)
        self.masker.apply(t, self.orders[t][:n].to(self.device))
        return n, requested

    def _slim_copy(self) -> nn.Module:
        return prune_channels(self.model, self.input_shape, self.masker.removed)

    def _computed_flops(self) -> int:
        if self.config.proxy_path != "slim":  # masked channels are computed all the same
            return int(round(self.graph.total["flops"]))
        kept = [g.channels - len(self.masker.removed.get(g.name, [])) for g in self.graph.groups]
        return int(round(self.graph.cost(kept, "flops")))

    def costs(self, counts: list[int]) -> dict[str, dict[str, int]]:
        kept = np.array(self.budget.sizes) - np.array(counts)
        return {budget: {"dense": int(round(self.graph.total[budget])),
                         "nonzero": int(round(self.graph.cost(kept, budget)))}
                for budget in ("flops", "params")}

    def _finish(self, info: dict[str, Any]) -> float:
        return self._score_episode(info, self.costs(self._counts),
                                   sparsities=self.sparsities(), removed=list(self._counts),
                                   achieved_sparsity=self.budget.achieved(self._counts))


class _NoFcRule:
    """Channel mode has no k-sigma FC rule: Linear layers' outputs are groups too."""

    k = None
    masks: dict = {}
    trials: list = []


def _uniform(b: ChannelBudget) -> list[int]:
    """The one removed fraction for every group that lands nearest the goal (bisection)."""
    lo, hi = 0.0, b.s_max
    for _ in range(40):
        mid = (lo + hi) / 2
        counts = [min(b.highs[i], max(b.lows[i], count_for(n, mid)))
                  for i, n in enumerate(b.sizes)]
        if b.cost(counts) > b.goal:
            lo = mid
        else:
            hi = mid
    return [min(b.highs[i], max(b.lows[i], count_for(n, hi))) for i, n in enumerate(b.sizes)]


def _global(b: ChannelBudget, scores: list[torch.Tensor]) -> list[int]:
    """One threshold over the groups' scores, each normalised by its group's mean: the
    fewest lowest-scored channels whose removal reaches the goal."""
    entries = []
    for g, s in enumerate(scores):
        normal = (s / s.mean().clamp_min(1e-12)).tolist()
        ranked = sorted(normal)[: b.highs[g]]  # a group keeps at least one channel
        entries += [(value, g) for value in ranked]
    entries.sort()

    def counts_for(m: int) -> list[int]:
        taken = [0] * len(b.sizes)
        for _, g in entries[:m]:
            taken[g] += 1
        return [max(lo, t) for lo, t in zip(b.lows, taken)]

    lo, hi = 0, len(entries)
    while lo < hi:  # the smallest m whose removal reaches the goal
        mid = (lo + hi) // 2
        if b.cost(counts_for(mid)) <= b.goal:
            hi = mid
        else:
            lo = mid + 1
    return counts_for(lo)
