"""Split a bench's search rows by where each search's pick came from: one of the seed policies
played in the warm-up (which one), or an allocation of the agent's own; for each group, the
search minus each baseline, seed by seed (mean +- standard error).

    python studies/pick_origin.py BENCH.json TARGET REWARD RUN_GLOB...

BENCH.json: a (merged) bench with the baselines; REWARD: the reward of its `ddpg` rows (a
merged bench lists every reward of its parts; `-loss` is the old spelling of `loss`);
RUN_GLOB: the search run folders whose policy.json are those rows (`rlprune bench` keeps them
under OUT/runs/ddpg-T-seedS). A run is matched to its row by seed, reward and fine-tuned
accuracy, so runs of another bench are left out; a seed that two runs still match is refused.
"""

from __future__ import annotations

import glob
import json
import sys
from collections import defaultdict

import numpy as np


def main(bench_path: str, target: float, reward: str, run_globs: list[str]) -> None:
    bench = json.load(open(bench_path))
    acc = {(r["method"], r["seed"]): r["test_accuracy"] for r in bench["results"]
           if r["target"] == target}
    seed_policies = bench.get("seed_policies", [])
    groups: dict[str, list[int]] = defaultdict(list)
    for pattern in run_globs:
        for path in sorted(glob.glob(f"{pattern}/policy.json")):
            policy = json.load(open(path))
            config = json.load(open(path.replace("policy.json", "config.json")))
            seed, episode = policy["search"]["seed"], policy["search"]["best_episode"]
            row = acc.get(("ddpg", seed))
            if (policy["target"]["sparsity"] != target or row is None
                    or config["reward"].replace("-loss", "loss") != reward
                    or abs(policy["accuracy"]["finetuned"] - row) > 1e-9):
                continue
            origin = (f"seed policy {seed_policies[episode - 1]}"
                      if episode <= len(seed_policies) else "the agent's own")
            if any(seed in seeds for seeds in groups.values()):
                sys.exit(f"seed {seed}: more than one run matches its row ({path})")
            groups[origin].append(seed)
    baselines = sorted({m for m, _ in acc} - {"ddpg"} - {m for m, _ in acc if "ddpg" in m})
    print(f"| pick (target {target:g}) | seeds | " + " | ".join(
        f"ddpg − {b}" for b in baselines) + " |")
    print("|---|---:|" + "---:|" * len(baselines))
    for origin, seeds in sorted(groups.items()):
        cells = []
        for b in baselines:
            d = 100 * np.array([acc[("ddpg", s)] - acc[(b, s)] for s in seeds])
            se = d.std(ddof=1) / len(d) ** 0.5 if len(d) > 1 else float("nan")
            cells.append(f"{d.mean():+.3f} ± {se:.3f}")
        print(f"| {origin} | {len(seeds)} ({', '.join(map(str, sorted(seeds)))}) | "
              + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) < 5:
        sys.exit(__doc__)
    main(sys.argv[1], float(sys.argv[2]), sys.argv[3], sys.argv[4:])
