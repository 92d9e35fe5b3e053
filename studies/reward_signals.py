"""Which score before fine-tuning ranks allocations as the fine-tune does? No search needed.

Candidates: the four baselines, `random=N` allocations from uniformly random actions in the
search's env (seeded), and any policy.json files given with `policies=GLOB[,GLOB...]`. Each
is scored on the val split (accuracy and cross-entropy: the `acc` and `loss` rewards) and on 2,000
train images, then fine-tuned (the job's budget) with two fine-tune seeds; the printed rank
correlations are with the mean fine-tuned test accuracy, over all candidates and over those
whose val accuracy is within `top=POINTS` of the best (where a search's choice is made).

    python studies/reward_signals.py out=runs/signals-lenet5-0.95.json model=lenet5 \
        fc_rule=agent target=0.95 random=40 top=3

Any SearchConfig field can be set as key=value (as in rank_candidates.py).
`python studies/reward_signals.py rescore=STUDY.json [top=3]` prints a saved study's table.
"""

from __future__ import annotations

import glob
import json
import sys
from pathlib import Path

import numpy as np
import torch
from study_tools import (
    Part,
    baseline_sparsities,
    config_from,
    finalize_with,
    score,
    search_env,
    spearman,
)

import rlprune

SIGNALS = {"val accuracy (acc)": ("val_acc", 1), "val cross-entropy (loss)": ("val_loss", -1),
           "train accuracy": ("train_acc", 1), "train cross-entropy": ("train_loss", -1)}


def candidates(env, n_random: int, pattern: str | None) -> dict[str, dict[str, float]]:
    out = {m: baseline_sparsities(m, env) for m in ("uniform", "global", "lamp", "erk")}
    paths = sorted({p for one in (pattern or "").split(",") if one for p in glob.glob(one)})
    for path in paths:
        policy = json.loads(Path(path).read_text())
        out[path] = {layer["name"]: layer["sparsity"] for layer in policy["layers"]}
    rng = np.random.default_rng(0)
    for i in range(n_random):
        env.reset()
        done = False
        while not done:
            *_, done, _, info = env.step(rng.uniform(-1, 1, 1).astype(np.float32))
        out[f"random{i}"] = info["sparsities"]
    return out


def correlations(rows: list[dict], top: float, signals: dict[str, tuple[str, int]] = SIGNALS
                 ) -> dict[str, dict[str, float]]:
    """Spearman of each signal (row key, sign) with the mean fine-tuned accuracy, over all rows,
    over those whose val accuracy is within `top` points of the best, and over the given
    policy.json files; and how well two fine-tune seeds agree (the ceiling of any signal)."""
    best = max(r["val_acc"] for r in rows)
    groups = {"all": rows, f"val within {top:g} pts of best": [
        r for r in rows if r["val_acc"] >= best - top / 100]}
    given = [r for r in rows if r["name"].endswith(".json")]
    if len(given) >= 3:
        groups["the given policies"] = given
    table = {}
    for group, sub in groups.items():
        y = [np.mean(r["finetuned"]) for r in sub]
        table[group] = {"n": len(sub), **{
            name: round(spearman([sign * r[key] for r in sub], y), 2)
            for name, (key, sign) in signals.items()},
            "fine-tune seed 0 vs seed 1": round(spearman(
                [r["finetuned"][0] for r in sub], [r["finetuned"][1] for r in sub]), 2)}
    return table


def main(pairs: list[str]) -> None:
    opts = dict(p.split("=", 1) for p in pairs)
    if "rescore" in opts:  # the table of a saved study, fine-tuning nothing
        study = json.loads(Path(opts["rescore"]).read_text())
        for group, values in correlations(study["rows"], float(opts.get("top", 3))).items():
            print(f"{group}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
        return
    out = opts.pop("out")
    n_random, top = int(opts.pop("random", 40)), float(opts.pop("top", 3))
    pattern = opts.pop("policies", None)
    config = config_from([f"{k}={v}" for k, v in opts.items()])
    torch.manual_seed(0)
    dense = rlprune.load_dense(config)
    env = search_env(config, dense)
    pool = candidates(env, n_random, pattern)
    idx = torch.randperm(len(dense.data.train), generator=torch.Generator().manual_seed(0))
    train = Part(dense.data.train.x[idx[:2000]], dense.data.train.y[idx[:2000]])
    rows = []
    for name, sparsities in pool.items():
        policy = rlprune.policy_of(env, sparsities, model=config.model,
                                   dataset=config.dataset, method=name)
        pruned = finalize_with(config, dense, policy, epochs=0).model
        val_acc, val_loss = score(pruned, dense.data.val)
        train_acc, train_loss = score(pruned, train)
        tuned = [finalize_with(config, dense, policy, seed=s).finetuned_accuracy for s in (0, 1)]
        rows.append(dict(name=name, val_acc=val_acc, val_loss=val_loss, train_acc=train_acc,
                         train_loss=train_loss, finetuned=tuned, sparsities=sparsities))
        print(json.dumps({k: v for k, v in rows[-1].items() if k != "sparsities"}), flush=True)
    table = correlations(rows, top)
    with open(out, "w") as f:
        json.dump({"config": config.to_json(), "rows": rows, "spearman": table}, f, indent=1)
    for group, values in table.items():
        print(f"{group}: " + ", ".join(f"{k} {v}" for k, v in values.items()))


if __name__ == "__main__":
    main(sys.argv[1:])
