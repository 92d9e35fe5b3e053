"""Time the two non-evaluation costs of a search step on this machine (docs/benchmarks.md):
SB3's DDPG update (8 gradient steps at batch 64) for AMC's 300-300 networks and our 128-128
default, under a few torch settings, and one exploration draw.

    python docs/studies/time_search_parts.py
"""

from __future__ import annotations

import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DDPG

from rlprune.agent.noise import DecayingTruncatedNormalNoise


class _Dummy(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (12,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(12, np.float32), {}

    def step(self, action):
        return np.zeros(12, np.float32), 0.0, True, False, {}


def time_update(hidden: list[int], threads: int, flush_denormal: bool, foreach: bool,
                repeats: int = 50) -> float:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)
    kwargs = {"net_arch": hidden}
    if foreach:
        kwargs["optimizer_kwargs"] = {"foreach": True}
    agent = DDPG("MlpPolicy", _Dummy(), buffer_size=800, learning_starts=0, batch_size=64,
                 tau=0.01, gamma=0.0, policy_kwargs=kwargs, device="cpu", seed=0)
    agent.learn(200)
    agent.train(gradient_steps=8, batch_size=64)
    start = time.perf_counter()
    for _ in range(repeats):
        agent.train(gradient_steps=8, batch_size=64)
    return (time.perf_counter() - start) / repeats


def main() -> None:
    default_threads = torch.get_num_threads()
    print("| hidden | threads | flush denormal | foreach Adam | ms per 8 gradient steps |")
    print("|---|---:|---|---|---:|")
    for hidden in ([300, 300], [128, 128]):
        for threads in sorted({1, default_threads}):
            for flush in (False, True):
                for foreach in (False, True):
                    ms = 1000 * time_update(hidden, threads, flush, foreach)
                    print(f"| {hidden[0]}-{hidden[1]} | {threads} | {flush} | {foreach} | "
                          f"{ms:.1f} |")
    torch.set_num_threads(default_threads)
    torch.set_flush_denormal(False)

    from scipy.stats import truncnorm

    noise = DecayingTruncatedNormalNoise(seed=0)
    action = np.array([[0.7]], dtype=np.float32)
    start = time.perf_counter()
    for _ in range(5000):
        noise.around(action)
    ours = (time.perf_counter() - start) / 5000
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for _ in range(500):
        truncnorm.rvs(-3.4, 0.6, loc=0.7, scale=0.5, random_state=rng)
    scipy = (time.perf_counter() - start) / 500
    print(f"\nexploration draw: inverse CDF {1e6 * ours:.0f} us, "
          f"scipy.stats.truncnorm.rvs {1e6 * scipy:.0f} us")


if __name__ == "__main__":
    main()
