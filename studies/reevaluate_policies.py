"""Re-score a bench's policies with fresh BatchNorm calibration batches (docs/benchmarks.md).

The search reports the proxy (val) accuracy its best episode scored. Scoring the same
allocation again, with 5 other single calibration batches and with 8 batches, shows how much
of that score was the batch: a search keeps the maximum of hundreds of noisy scores.

    python studies/reevaluate_policies.py runs/bench2-vgg-mini \
        [--targets 0.9 0.95] [--methods ddpg]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from study_tools import accuracy, pruned_copy, recalibrate_bn

import rlprune


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bench", type=Path)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.9, 0.95])
    # Only searches keep run folders with a policy; baselines are not picked by their score.
    parser.add_argument("--methods", default="ddpg,ddpg-only")
    args = parser.parse_args()
    report = json.loads((args.bench / "bench.json").read_text())
    dense = rlprune.load_dense(model=report["model"], dataset=report["dataset"])
    data = dense.data
    print("| method | target | seed | reported proxy | val, 5 fresh batches | test, same "
          "| val, 8 batches | test, 8 batches |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for target in args.targets:
        for method in args.methods.split(","):
            for seed in sorted({r["seed"] for r in report["results"]}):
                path = args.bench / "runs" / f"{method}-{target:g}-seed{seed}" / "policy.json"
                if not path.is_file():
                    continue
                policy = json.loads(path.read_text())
                val, test = [], []
                for r in range(5):  # BatchNorm re-estimated on one batch drawn by seed 100 + r
                    model = rlprune.apply(policy, dense.model, data, seed=100 + r)
                    val.append(accuracy(model, data.val))
                    test.append(accuracy(model, data.test))
                model = pruned_copy(dense, policy)
                recalibrate_bn(model, data.train, 8, 128, np.random.default_rng(7))
                print(f"| {method} | {target:g} | {seed} | "
                      f"{100 * policy['accuracy']['proxy']:.1f} | "
                      f"{100 * np.mean(val):.1f} ± {100 * np.std(val):.1f} | "
                      f"{100 * np.mean(test):.1f} ± {100 * np.std(test):.1f} | "
                      f"{100 * accuracy(model, data.val):.1f} | "
                      f"{100 * accuracy(model, data.test):.1f} |", flush=True)


if __name__ == "__main__":
    main()
