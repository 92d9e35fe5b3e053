"""Move pruned weights from one layer to another in kept policies, then fine-tune again.

    python studies/shift_sparsity.py \
        "runs/bench4-vgg-mini/runs/ddpg-0.95-*,runs/bench5-vgg-mini-0.95/runs/ddpg-0.95-*" \
        --layer features.17 --sparsity 0.93 --compensate features.10

Sets LAYER to SPARSITY in each run's policy and changes COMPENSATE so the total number of
pruned weights stays the same; fine-tunes with the run's own seed and budget. Prints, per run,
the recorded accuracies and the shifted policy's (test before and after fine-tuning), to test
whether one layer's density matters after fine-tuning more than the reward says.
"""

from __future__ import annotations

import argparse
import copy
import glob
import json
from pathlib import Path

import numpy as np
from study_tools import finalize_with

import rlprune


def shifted(policy: dict, layer: str, sparsity: float, compensate: str) -> dict:
    policy = copy.deepcopy(policy)
    by_name = {entry["name"]: entry for entry in policy["layers"]}
    a, b = by_name[layer], by_name[compensate]
    moved = (a["sparsity"] - sparsity) * a["params"]  # weights no longer pruned in `layer`
    a["sparsity"] = sparsity
    b["sparsity"] = b["sparsity"] + moved / b["params"]
    if not 0.0 <= b["sparsity"] <= 1.0:
        raise SystemExit(f"{compensate} would need sparsity {b['sparsity']:.3f}")
    return policy


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("runs", help="glob(s) of run folders, comma-separated (quote it)")
    parser.add_argument("--layer", required=True)
    parser.add_argument("--sparsity", type=float, required=True)
    parser.add_argument("--compensate", required=True)
    args = parser.parse_args()
    print(f"| run | {args.layer} | {args.compensate} | test, no fine-tune | fine-tuned | "
          f"shifted: {args.compensate} | test, no fine-tune | fine-tuned |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    gains = []
    for run in sorted(Path(p) for one in args.runs.split(",") for p in glob.glob(one)):
        config = rlprune.SearchConfig.from_json(json.loads((run / "config.json").read_text()))
        dense = rlprune.load_dense(config)
        policy = json.loads((run / "policy.json").read_text())
        new = shifted(policy, args.layer, args.sparsity, args.compensate)
        done = finalize_with(config, dense, new)
        old = {e["name"]: e["sparsity"] for e in policy["layers"]}
        comp = {e["name"]: e["sparsity"] for e in new["layers"]}[args.compensate]
        gains.append(done.finetuned_accuracy - policy["accuracy"]["finetuned"])
        print(f"| {run.parent.parent.name}/{run.name} | {old[args.layer]:.3f} | "
              f"{old[args.compensate]:.3f} | {100 * policy['accuracy']['pruned']:.1f} | "
              f"{100 * policy['accuracy']['finetuned']:.1f} | {comp:.3f} | "
              f"{100 * done.pruned_accuracy:.1f} | {100 * done.finetuned_accuracy:.1f} |",
              flush=True)
    print(f"\nmean change after fine-tuning: {100 * np.mean(gains):+.2f} points over "
          f"{len(gains)} runs")


if __name__ == "__main__":
    main()
