"""What the weight and the channel environment share: the working copy of the model, the proxy
score with BatchNorm recalibration, the final reward, and the feature normalisation."""

from __future__ import annotations

import copy
import time
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from torch import nn

from rlprune.env.config import EnvConfig
from rlprune.env.evaluate import ProxyEvaluator, bn_statistics, proxy_score, reward_of
from rlprune.env.fast_proxy import FastProxy
from rlprune.models.splits import Split

N_FEATURES = 12
CALIBRATION_SEED = 0  # picks the fixed BatchNorm calibration batches (bn_fixed_batches)


class EpisodeEnv(gym.Env):
    """A base for environments whose episode is one pass over a network's layers or groups,
    scored once at the end on the val split (see the subclasses for the specification)."""

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, model: nn.Module, val: Split, config: EnvConfig, *,
                 calibration: Split | None, device: str | torch.device):
        super().__init__()
        config.validate()
        self.config = config
        self.device = torch.device(device)
        self.model = copy.deepcopy(model).to(self.device).eval()
        self.evaluator = ProxyEvaluator(val, self.device, config.eval_batch_size)
        self._val = val
        self.calibration = calibration
        self.observation_space = gym.spaces.Box(0.0, 1.0, (N_FEATURES,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self._t, self._prev = 0, 0.0  # the step, and the last step's sparsity
        self._counts: list[int] = []  # what each step removed (weights or channels)
        # the episodes' reward evaluations so far and their wall time (kept across episodes;
        # each episode's is also its last step's info["eval_s"], which crosses workers)
        self.evals, self.evals_s = 0, 0.0

    # -- the episode: one step per agent layer (or group), scored after the last ---------------
    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t, self._prev = 0, 0.0
        self._counts = []
        return self._observation(), {}

    def step(self, action) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        if self._t >= len(self.agent_layers):
            raise RuntimeError("episode is over; call reset()")
        t = self._t
        n, requested = self._cut(t, action)
        self._counts.append(n)
        self._prev = n / self.budget.sizes[t]
        self._t += 1
        info: dict[str, Any] = {"layer": self.agent_layers[t].name, "sparsity": self._prev,
                                "requested": requested}
        terminated = self._t == len(self.agent_layers)
        reward = self._finish(info) if terminated else 0.0
        return self._observation(), reward, terminated, False, info

    def _cut(self, t: int, action) -> tuple[int, float]:
        """Remove what `action` asks of step t's layer (clamped to the budget); returns the
        count removed and the fraction the action requested."""
        raise NotImplementedError

    def _bounds(self, t: int, counts_before: list[int]) -> tuple[int, int]:
        """The fewest and most step t may remove after `counts_before` (the budget's clamp)."""
        raise NotImplementedError

    def action_for(self, t: int, counts_before: list[int], count: int) -> float:
        """The action that makes step t remove `count` (weights or channels) after the earlier
        steps removed `counts_before` (the inverse of the action mapping)."""
        if self.action_mapping == "feasible":
            lo, hi = self._bounds(t, counts_before)
            return 2.0 * (count - lo) / (hi - lo) - 1.0 if hi > lo else 0.0
        span = self.s_max - self.config.s_min
        fraction = count / self.budget.sizes[t]
        return float(np.clip(2.0 * (fraction - self.config.s_min) / span - 1.0, -1.0, 1.0))

    def _observation(self) -> np.ndarray:
        raise NotImplementedError

    def _finish(self, info: dict[str, Any]) -> float:
        """Score the finished episode (see `_score_episode`)."""
        raise NotImplementedError

    def _keep_dense_statistics(self) -> None:
        """Remember the BatchNorm statistics every recalibration is undone to (call once the
        working model holds what every episode starts from)."""
        self._bn_state = bn_statistics(self.model)
        path = self.config.proxy_path
        self._fast = None if path == "plain" else FastProxy(
            self.model, self._val, self.device, self.config.eval_batch_size,
            threads=torch.get_num_threads(), slim=self._slim_copy if path == "slim" else None)

    def _slim_copy(self) -> nn.Module:
        """The working model with its masked channels removed for real (channel mode)."""
        raise NotImplementedError

    def proxy_accuracy(self) -> float:
        """Val accuracy of the working model as it is now masked (see `proxy_score`)."""
        return self.proxy_score()[0]

    def proxy_score(self) -> tuple[float, float]:
        """Val accuracy and cross-entropy of the working model as it is now masked (BatchNorm
        statistics re-estimated first if configured, then put back to the dense ones), by the
        configured path (`EnvConfig.proxy`)."""
        c = self.config
        rng = (np.random.default_rng(CALIBRATION_SEED) if c.bn_fixed_batches
               else self.np_random)
        if self._fast is not None:
            return self._fast.score(self.calibration, batches=c.bn_recalibration_batches,
                                    batch_size=c.bn_batch_size, rng=rng)
        return proxy_score(self.model, self.evaluator, self.calibration,
                           batches=c.bn_recalibration_batches, batch_size=c.bn_batch_size,
                           rng=rng, dense_statistics=self._bn_state)

    def proxy_flops(self) -> int:
        """FLOPs (2 per multiply-add) of one `proxy_score()` as the working model is now: the
        network's forward passes over the val split and the BatchNorm calibration batches."""
        c = self.config
        images = len(self.evaluator.y)
        if c.bn_recalibration_batches and self.calibration is not None:
            images += c.bn_recalibration_batches * min(c.bn_batch_size, len(self.calibration))
        return 2 * images * self._computed_flops()

    def _computed_flops(self) -> int:
        """fvcore's FLOPs of one image through what the proxy computes."""
        raise NotImplementedError

    def _score_episode(self, info: dict[str, Any], costs: dict[str, dict[str, int]],
                       **extra: Any) -> float:
        """Score the masked model, fill the last step's info and return its reward."""
        start = time.perf_counter()
        acc, loss = self.proxy_score()
        if self.config.simulated_eval_s:
            time.sleep(self.config.simulated_eval_s)
        seconds = time.perf_counter() - start
        self.evals += 1
        self.evals_s += seconds
        info.update(proxy_accuracy=acc, proxy_loss=loss, eval_s=seconds, **extra, **costs)
        kind = self.config.reward_kind
        key = "flops" if "flops" in kind else "params"
        reward = reward_of(kind, acc, loss, costs[key]["nonzero"])
        info["reward"] = reward  # exact; vectorised wrappers pass rewards on as float32
        return reward


def normalise_columns(rows: list[list[float]]) -> np.ndarray:
    """Min-max normalise each column of a feature table to [0, 1] (constant columns → 0)."""
    table = np.asarray(rows, dtype=np.float64)
    lo, span = table.min(0), np.ptp(table, 0)
    return ((table - lo) / np.where(span > 0, span, 1.0)).astype(np.float32)


def unit(action) -> float:
    """An action in [-1, 1] (clipped) as a fraction in [0, 1]."""
    return (float(np.clip(np.asarray(action, dtype=np.float64).reshape(-1)[0], -1, 1)) + 1) / 2
