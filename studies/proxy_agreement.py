"""How far the default proxy path's scores are from the plain path's (docs/decisions.md).

    python studies/proxy_agreement.py [allocations=20] [model=vgg-mini dataset=mnist5k]
        [cells=weight:0.9,channel:0.5,channel:0.8]

For each cell (granularity and target; vgg-mini on mnist5k by default): the same random
episodes played in the search's env with the default proxy (`auto`: fast, or slim in channel
mode) and in one with `proxy="plain", eval_batch_size=2048` (the path before), and for each the
val images whose class differs and the relative change of the val loss.
"""

from __future__ import annotations

import sys

import numpy as np
from study_tools import search_env

import rlprune


def play(env, actions) -> dict:
    env.reset(seed=0)
    for a in actions:
        *_, info = env.step(np.array([a], dtype=np.float32))
    return info


def main() -> None:
    opts = dict(a.split("=", 1) for a in sys.argv[1:])
    n = int(opts.get("allocations", "20"))
    source = {"model": opts.get("model", "vgg-mini"), "dataset": opts.get("dataset", "mnist5k")}
    dense = rlprune.load_dense(**source)
    for cell in opts.get("cells", "weight:0.9,channel:0.5,channel:0.8").split(","):
        granularity, target = cell.split(":")
        config = rlprune.SearchConfig(**source, granularity=granularity, target=float(target))
        fast = search_env(config, dense)
        plain = search_env(config, dense, proxy="plain", eval_batch_size=2048)
        images = len(dense.data.val)
        rng = np.random.default_rng(1)
        flipped, loss = [], []
        for _ in range(n):
            actions = rng.uniform(-1, 1, len(fast.agent_layers))
            f, p = play(fast, actions), play(plain, actions)
            flipped.append(round(abs(f["proxy_accuracy"] - p["proxy_accuracy"]) * images))
            loss.append(abs(f["proxy_loss"] - p["proxy_loss"]) / p["proxy_loss"])
        print(f"{granularity} {config.target:g} ({config.proxy_path}): {n} allocations, val "
              f"images changing class: max {max(flipped)}, total {sum(flipped)}; loss relative "
              f"change median {np.median(loss):.1e}, max {max(loss):.1e}", flush=True)


if __name__ == "__main__":
    main()
