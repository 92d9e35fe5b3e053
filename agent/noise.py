"""Exploration noise of AMC: a truncated normal around the actor's action, decaying per episode."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri
from stable_baselines3.common.noise import ActionNoise


class DecayingTruncatedNormalNoise(ActionNoise):
    """sigma starts at `sigma0` and is multiplied by `decay` at every episode end after warm-up.

    `around(action)` draws from N(action, sigma) truncated to [low, high], so exploration never
    leaves the action box (AMC); `__call__` gives plain zero-mean noise for SB3's generic path.
    The generator is its own, so its state can be checkpointed and restored exactly.
    """

    def __init__(self, sigma0: float = 0.5, decay: float = 0.95, warmup_episodes: int = 0,
                 low: float = -1.0, high: float = 1.0, seed: int | None = None):
        super().__init__()
        self.sigma0, self.decay, self.warmup_episodes = sigma0, decay, warmup_episodes
        self.low, self.high = low, high
        self.episodes = 0
        self.rng = np.random.default_rng(seed)

    @property
    def sigma(self) -> float:
        return self.sigma0 * self.decay ** max(0, self.episodes - self.warmup_episodes)

    def __call__(self) -> np.ndarray:
        return self.rng.normal(0.0, self.sigma, size=1)

    def around(self, action: np.ndarray) -> np.ndarray:
        """Inverse-CDF draw from N(action, sigma) truncated to [low, high] (one uniform per
        value; scipy.stats.truncnorm gives the same law at ~10x the cost:
        scripts/time_search_parts.py)."""
        mean = np.clip(np.asarray(action, dtype=np.float64), self.low, self.high)
        sigma = self.sigma
        if sigma < 1e-8:
            return mean.astype(np.float32)
        lo, hi = ndtr((self.low - mean) / sigma), ndtr((self.high - mean) / sigma)
        u = lo + (hi - lo) * self.rng.random(mean.shape)
        sample = np.clip(mean + sigma * ndtri(u), self.low, self.high)
        return sample.astype(np.float32).reshape(np.shape(action))

    def reset(self) -> None:
        """Called by SB3 at the end of every episode: one more episode, sigma decays."""
        self.episodes += 1

    def state_dict(self) -> dict:
        return {"episodes": self.episodes, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self.episodes = state["episodes"]
        self.rng.bit_generator.state = state["rng"]

    def __repr__(self) -> str:
        return f"DecayingTruncatedNormalNoise(sigma={self.sigma:.4f}, episodes={self.episodes})"
