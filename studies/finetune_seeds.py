"""Fine-tune each kept policy of a bench with several fine-tune seeds, to tell a better
allocation from a lucky fine-tune.

    python studies/finetune_seeds.py --target 0.95 runs/bench3-vgg-mini runs/bench4-vgg-mini

Prints, per run, the test accuracy after the bench's fine-tune for each seed and their mean.
`--epochs E` fine-tunes for E epochs instead of the run's budget; `--own-seed` uses only the
run's own seed (as the bench did), to set another budget beside a bench of baselines run with
`--finetune-epochs E`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
from study_tools import finalize_with

import rlprune


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("benches", type=Path, nargs="+")
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--method", default="ddpg")
    parser.add_argument("--finetune-seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=None, help="default: the run's budget")
    parser.add_argument("--own-seed", action="store_true", help="only the run's own seed")
    args = parser.parse_args()
    columns = ["own seed"] if args.own_seed else [
        f"fine-tune seed {f}" for f in range(args.finetune_seeds)]
    print("| run | " + " | ".join(columns) + " | mean |")
    print("|---|" + "---:|" * (len(columns) + 1))
    for bench in args.benches:
        for run in sorted((bench / "runs").glob(f"{args.method}-{args.target:g}-seed*")):
            config = rlprune.SearchConfig.from_json(json.loads((run / "config.json").read_text()))
            dense = rlprune.load_dense(config)
            policy = json.loads((run / "policy.json").read_text())
            seeds = [config.seed] if args.own_seed else range(args.finetune_seeds)
            accs = [finalize_with(config, dense, policy, epochs=args.epochs, seed=f)
                    .finetuned_accuracy for f in seeds]
            print(f"| {bench.name}/{run.name} | "
                  + " | ".join(f"{100 * a:.1f}" for a in accs) + f" | {100 * np.mean(accs):.2f} |",
                  flush=True)


if __name__ == "__main__":
    main()
