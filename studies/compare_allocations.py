"""Mean per-layer sparsity of groups of policies, beside their mean accuracies.

    python studies/compare_allocations.py \
        "feasible=runs/bench4-vgg-mini/runs/ddpg-0.95-*/policy.json" \
        "absolute=runs/bench3-vgg-mini/runs/ddpg-0.95-*/policy.json" \
        "erk=runs/erk-0.95/policy.json"

Each argument is LABEL=GLOB[,GLOB…] (quote it). Prints one markdown row per group: the number of
policies, their mean proxy (val) and test accuracy before fine-tuning and after it (as the
policy files record them), and each layer's mean sparsity.
"""

from __future__ import annotations

import glob
import json
import sys

import numpy as np


def main(groups: list[str]) -> None:
    header = None
    for group in groups:
        label, _, pattern = group.partition("=")
        paths = sorted(p for one in pattern.split(",") for p in glob.glob(one))
        policies = [json.loads(open(p).read()) for p in paths]
        if not policies:
            raise SystemExit(f"{label}: no file matches {pattern}")
        names = [layer["name"] for layer in policies[0]["layers"]]
        if header is None:
            header = names
            print("| policies | n | proxy | test, no fine-tune | fine-tuned | "
                  + " | ".join(names) + " |")
            print("|---|---:|---:|---:|---:|" + "---:|" * len(names))
        elif names != header:
            raise SystemExit(f"{label}: other layers than the first group")
        acc = {k: np.mean([p["accuracy"][k] for p in policies])
               for k in ("proxy", "pruned", "finetuned")}
        sparsity = np.mean([[layer["sparsity"] for layer in p["layers"]] for p in policies], 0)
        print(f"| {label} | {len(policies)} | " + " | ".join(
            f"{100 * acc[k]:.1f}" for k in ("proxy", "pruned", "finetuned")) + " | "
            + " | ".join(f"{s:.3f}" for s in sparsity) + " |")


if __name__ == "__main__":
    main(sys.argv[1:])
