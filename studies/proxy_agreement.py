"""How far the default proxy path's scores are from the plain path's (docs/decisions.md).

    python docs/studies/proxy_agreement.py [allocations=20]

For vgg-mini on mnist5k in weight mode at 0.9 and channel mode at 0.5 and 0.8: the same
random episodes played in an env with the default proxy (`auto`: fast, or slim in channel
mode) and in one with `--proxy plain --eval-batch-size 2048` (the path before), and for each
the val images whose class differs and the relative change of the val loss.
"""

from __future__ import annotations

import sys

import numpy as np

from rlprune.agent.config import SearchConfig
from rlprune.service.jobs.dense_loader import load_dense
from rlprune.service.jobs.lifecycle import JobRunner


def play(env, actions) -> dict:
    env.reset(seed=0)
    for a in actions:
        *_, info = env.step(np.array([a], dtype=np.float32))
    return info


def main() -> None:
    opts = dict(a.split("=", 1) for a in sys.argv[1:])
    n = int(opts.get("allocations", "20"))
    for granularity, target in (("weight", 0.9), ("channel", 0.5), ("channel", 0.8)):
        config = SearchConfig(granularity=granularity, target=target)
        dense = load_dense(config)
        fast = JobRunner(config, dense, "ddpg").env
        plain = JobRunner(SearchConfig(granularity=granularity, target=target, proxy="plain",
                                       eval_batch_size=2048), dense, "ddpg").env
        images = len(fast.evaluator.y)
        rng = np.random.default_rng(1)
        flipped, loss = [], []
        for _ in range(n):
            actions = rng.uniform(-1, 1, len(fast.agent_layers))
            f, p = play(fast, actions), play(plain, actions)
            flipped.append(round(abs(f["proxy_accuracy"] - p["proxy_accuracy"]) * images))
            loss.append(abs(f["proxy_loss"] - p["proxy_loss"]) / p["proxy_loss"])
        print(f"{granularity} {target:g} ({fast.config.proxy_path}): {n} allocations, val images "
              f"changing class: max {max(flipped)}, total {sum(flipped)}; loss relative "
              f"change median {np.median(loss):.1e}, max {max(loss):.1e}", flush=True)


if __name__ == "__main__":
    main()
