"""Exploration noise of AMC: a truncated normal around the actor's action, decaying per episode."""

from __future__ import annotations

import numpy as np
from scipy.special import ndtr, ndtri
from stable_baselines3.common.noise import ActionNoise


class DecayingTruncatedNormalNoise(ActionNoise):
    """sigma starts at `sigma0` and is multiplied by `decay` at every episode end after warm-up.

    `around(action)` draws from N(action, sigma) truncated to [low, high], so exploration never
    leaves the action box (AMC); `__call__` gives plain zero-mean noise for SB3's generic path.
    With `n_envs` > 1, row i of a batch of actions (env i) draws from generator i, so the K
    envs of a round explore independently; sigma follows the episodes of all of them. The
    generators are the noise's own, so their states can be checkpointed and restored exactly.
    """

    def __init__(self, sigma0: float = 0.5, decay: float = 0.95, warmup_episodes: int = 0,
                 low: float = -1.0, high: float = 1.0, seed: int | None = None,
                 n_envs: int = 1):
        super().__init__()
        self.sigma0, self.decay, self.warmup_episodes = sigma0, decay, warmup_episodes
        self.low, self.high = low, high
        self.episodes = 0
        # env 0 keeps the single-env generator, so K = 1 draws what it always drew
        self.rngs = [np.random.default_rng(seed if i == 0 or seed is None else [seed, i])
                     for i in range(n_envs)]

    @property
    def rng(self) -> np.random.Generator:
        return self.rngs[0]

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
        u = lo + (hi - lo) * self._uniforms(mean.shape)
        sample = np.clip(mean + sigma * ndtri(u), self.low, self.high)
        return sample.astype(np.float32).reshape(np.shape(action))

    def _uniforms(self, shape: tuple[int, ...]) -> np.ndarray:
        if len(self.rngs) == 1:
            return self.rngs[0].random(shape)
        if not shape or shape[0] != len(self.rngs):
            raise ValueError(f"expected {len(self.rngs)} rows of actions, got shape {shape}")
        return np.stack([rng.random(shape[1:]) for rng in self.rngs])

    def reset(self, indices=None) -> None:
        """Called by SB3 at the end of every episode (with `indices`, the env that finished,
        when there are several): one more episode each, sigma decays."""
        self.episodes += 1 if indices is None else len(indices)

    def state_dict(self) -> dict:
        state = {"episodes": self.episodes, "rng": self.rngs[0].bit_generator.state}
        if len(self.rngs) > 1:
            state["rngs"] = [rng.bit_generator.state for rng in self.rngs]
        return state

    def load_state_dict(self, state: dict) -> None:
        self.episodes = state["episodes"]
        saved = state.get("rngs", [state["rng"]])
        if len(saved) != len(self.rngs):
            raise ValueError(f"the noise state is for {len(saved)} envs, not {len(self.rngs)}")
        for rng, rng_state in zip(self.rngs, saved):
            rng.bit_generator.state = rng_state

    def __repr__(self) -> str:
        return f"DecayingTruncatedNormalNoise(sigma={self.sigma:.4f}, episodes={self.episodes})"
