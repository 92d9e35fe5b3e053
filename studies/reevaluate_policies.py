"""Re-score a bench's policies with fresh BatchNorm calibration batches (docs/benchmarks.md).

The search reports the proxy (val) accuracy its best episode scored. Scoring the same
allocation again, with 5 other single calibration batches and with 8 batches, shows how much
of that score was the batch: a search keeps the maximum of hundreds of noisy scores.

    python docs/studies/reevaluate_policies.py runs/bench2-vgg-mini \
        [--targets 0.9 0.95] [--methods ddpg]
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import numpy as np

from rlprune.agent.config import SearchConfig
from rlprune.env.evaluate import recalibrate_bn
from rlprune.env.masks import apply_masks
from rlprune.env.policy import policy_masks
from rlprune.models.train import evaluate
from rlprune.service.jobs.dense_loader import load_dense


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("bench", type=Path)
    parser.add_argument("--targets", type=float, nargs="+", default=[0.9, 0.95])
    # Only searches keep run folders with a policy; baselines are not picked by their score.
    parser.add_argument("--methods", default="ddpg,ddpg-only")
    args = parser.parse_args()
    report = json.loads((args.bench / "bench.json").read_text())
    dense = load_dense(SearchConfig(model=report["model"], dataset=report["dataset"]))
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
                model = copy.deepcopy(dense.model)
                apply_masks(model, policy_masks(model, policy))
                val, test = [], []
                for r in range(5):
                    recalibrate_bn(model, data.train, 1, 128, np.random.default_rng(100 + r))
                    val.append(evaluate(model, data.val))
                    test.append(evaluate(model, data.test))
                recalibrate_bn(model, data.train, 8, 128, np.random.default_rng(7))
                print(f"| {method} | {target:g} | {seed} | "
                      f"{100 * policy['accuracy']['proxy']:.1f} | "
                      f"{100 * np.mean(val):.1f} ± {100 * np.std(val):.1f} | "
                      f"{100 * np.mean(test):.1f} ± {100 * np.std(test):.1f} | "
                      f"{100 * evaluate(model, data.val):.1f} | "
                      f"{100 * evaluate(model, data.test):.1f} |", flush=True)


if __name__ == "__main__":
    main()
