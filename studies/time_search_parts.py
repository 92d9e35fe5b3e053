"""Time the non-evaluation cost of a search step on this machine (docs/decisions.md, "Actor
and critic are 128-128"): SB3's DDPG update (8 gradient steps at the search's batch of 64)
for AMC's 300-300 networks and our 128-128 default, under a few torch settings.

    python studies/time_search_parts.py [repeats=50] [hidden=300-300,128-128] [threads=1,N]

It times stable-baselines3 itself, on a dummy env with the search's observation and action
spaces and its DDPG settings (`rlprune.SearchConfig`'s batch size and tau, gamma 0), after
`warm=200` environment steps. N in `threads` is torch's default thread count.
"""

from __future__ import annotations

import sys
import time

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3 import DDPG

import rlprune


class _Dummy(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (12,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(12, np.float32), {}

    def step(self, action):
        return np.zeros(12, np.float32), 0.0, True, False, {}


def time_update(hidden: list[int], threads: int, flush_denormal: bool, foreach: bool,
                repeats: int = 50, warm: int = 200) -> float:
    torch.set_num_threads(threads)
    torch.set_flush_denormal(flush_denormal)
    kwargs = {"net_arch": hidden}
    if foreach:
        kwargs["optimizer_kwargs"] = {"foreach": True}
    search = rlprune.SearchConfig()
    batch = search.batch_size
    agent = DDPG("MlpPolicy", _Dummy(), buffer_size=800, learning_starts=0, batch_size=batch,
                 tau=search.tau, gamma=0.0, policy_kwargs=kwargs, device="cpu", seed=0)
    agent.learn(warm)
    agent.train(gradient_steps=8, batch_size=batch)
    start = time.perf_counter()
    for _ in range(repeats):
        agent.train(gradient_steps=8, batch_size=batch)
    return (time.perf_counter() - start) / repeats


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv)
    repeats, warm = int(opts.get("repeats", "50")), int(opts.get("warm", "200"))
    hiddens = [[int(w) for w in h.split("-")]
               for h in opts.get("hidden", "300-300,128-128").split(",")]
    default_threads = torch.get_num_threads()
    threads = sorted({int(t) if t != "N" else default_threads
                      for t in opts.get("threads", "1,N").split(",")})
    print("| hidden | threads | flush denormal | foreach Adam | ms per 8 gradient steps |")
    print("|---|---:|---|---|---:|")
    for hidden in hiddens:
        for n in threads:
            for flush in (False, True):
                for foreach in (False, True):
                    ms = 1000 * time_update(hidden, n, flush, foreach, repeats, warm)
                    print(f"| {'-'.join(map(str, hidden))} | {n} | {flush} | {foreach} | "
                          f"{ms:.1f} |", flush=True)
    torch.set_num_threads(default_threads)
    torch.set_flush_denormal(False)


if __name__ == "__main__":
    main(sys.argv[1:])
