"""Fine-tune each kept policy of a bench with several fine-tune seeds, to tell a better
allocation from a lucky fine-tune.

    python scripts/finetune_seeds.py --target 0.95 runs/bench3-vgg-mini runs/bench4-vgg-mini

Prints, per run, the test accuracy after the bench's fine-tune for each seed and their mean.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from agent.config import SearchConfig
from agent.finalize import prune_and_finetune
from agent.search import load_dense


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("benches", type=Path, nargs="+")
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--method", default="ddpg")
    parser.add_argument("--finetune-seeds", type=int, default=3)
    args = parser.parse_args()
    print("| run | " + " | ".join(f"fine-tune seed {f}" for f in range(args.finetune_seeds))
          + " | mean |")
    print("|---|" + "---:|" * (args.finetune_seeds + 1))
    for bench in args.benches:
        for run in sorted((bench / "runs").glob(f"{args.method}-{args.target:g}-seed*")):
            config = SearchConfig.from_json(json.loads((run / "config.json").read_text()))
            dense = load_dense(config)
            policy = json.loads((run / "policy.json").read_text())
            accs = [prune_and_finetune(dense.model, policy, dense.data,
                                       epochs=config.finetune_epochs, lr=config.finetune_lr,
                                       seed=f, bn_batches=config.bn_recalibration_batches)
                    .finetuned_accuracy for f in range(args.finetune_seeds)]
            print(f"| {bench.name}/{run.name} | "
                  + " | ".join(f"{100 * a:.1f}" for a in accs) + f" | {100 * np.mean(accs):.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
