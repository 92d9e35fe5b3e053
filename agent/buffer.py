"""A replay buffer that stores each transition with its episode's final reward minus a baseline."""

from __future__ import annotations

from typing import Any

import numpy as np
from stable_baselines3.common.buffers import ReplayBuffer


class EpisodeRewardReplayBuffer(ReplayBuffer):
    """Holds an episode's transitions until its last step, then stores every one of them with
    reward = final reward − moving-average baseline (AMC). With gamma = 0 the critic regresses
    that value directly.

    The baseline starts at the first episode's reward and then moves by
    `(1 − baseline_decay) · (reward − baseline)` after each episode. With several envs (a
    search's K episodes of a round) every episode has the same length, so all of them end on
    the same step; the baseline then takes their rewards in env order, as if the K episodes
    had run one after another.
    """

    def __init__(self, *args: Any, baseline_decay: float = 0.95, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.baseline_decay = baseline_decay
        self.baseline: float | None = None
        self._pending: list[tuple] = []

    def add(self, obs: np.ndarray, next_obs: np.ndarray, action: np.ndarray,
            reward: np.ndarray, done: np.ndarray, infos: list[dict[str, Any]]) -> None:
        self._pending.append((np.array(obs), np.array(next_obs), np.array(action),
                              np.array(done), infos))
        done = np.asarray(done).reshape(-1)
        if not done.any():
            return
        if not done.all():
            raise ValueError("the episodes of a round must end on the same step")
        rewards = np.asarray(reward, dtype=np.float64).reshape(-1)
        relabelled = np.empty(self.n_envs, dtype=np.float32)
        for i in range(self.n_envs):
            # The env reports its exact reward in info; SB3's vectorised path passes float32.
            final = float(infos[i].get("reward", rewards[i]))
            if self.baseline is None:
                self.baseline = final
            relabelled[i] = final - self.baseline
            self.baseline += (1.0 - self.baseline_decay) * (final - self.baseline)
        for o, o2, a, d, info in self._pending:
            super().add(o, o2, a, relabelled, d, info)
        self._pending.clear()

    def discard_pending(self) -> None:
        """Drop an unfinished episode (it is replayed from scratch after a resume)."""
        self._pending.clear()
