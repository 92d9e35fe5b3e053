"""Does a short masked fine-tune before scoring rank allocations closer to the real fine-tune?

Reuses a reward_signals.py study (its candidates and their fine-tuned test accuracies): each
candidate is pruned as the search prunes it (BatchNorm recalibrated on one batch), trained for
N SGD steps with its masks held (at most one pass over the train split; batch 128, no
augmentation, the fine-tune's learning rate on a one-cycle schedule, fixed seed), then scored
on the val split. Prints the Spearman correlation of each score with the mean fine-tuned test
accuracy, over all candidates and over the near-best ones (val accuracy before tuning within
`top` points of the best), and the time of one scoring relative to one proxy evaluation.

    python studies/short_tune_signal.py studies/signals/signals-lenet5-agent-0.95.json \
        out=runs/short-tune-lenet5-0.95.json steps=0,5,20,28 top=3
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch
from reward_signals import correlations
from study_tools import Part, pruned_copy, recalibrate_bn, score, search_env, sgd_steps

import rlprune


def short_tuned(dense, policy: dict, steps: int, lr: float, seed: int = 0):
    """The policy applied (BatchNorm re-estimated on one train batch drawn by `seed`), then
    `steps` SGD steps with its masks held on train images drawn by `seed`."""
    train = dense.data.train
    model = pruned_copy(dense, policy)
    recalibrate_bn(model, train, 1, 128, np.random.default_rng(seed))
    if steps > 0:
        idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(seed))
        idx = idx[:steps * 128]
        sgd_steps(model, Part(train.x[idx], train.y[idx]), lr=lr, seed=seed)
    return model


def main(source: str, pairs: list[str]) -> None:
    opts = dict(p.split("=", 1) for p in pairs)
    steps_list = [int(s) for s in opts.get("steps", "0,5,20,28").split(",")]
    top = float(opts.get("top", 3))
    study = json.loads(open(source).read())
    config = rlprune.SearchConfig.from_json(study["config"])  # the old `checkpoint`: `weights`
    torch.manual_seed(0)
    dense = rlprune.load_dense(config)
    env = search_env(config, dense)
    one_pass = -(-len(dense.data.train) // 128)  # the train split holds this many batches
    if any(s > one_pass for s in steps_list):
        print(f"steps capped at one pass over the train split ({one_pass})", flush=True)
        steps_list = sorted({min(s, one_pass) for s in steps_list})
    rows, seconds = study["rows"], {}
    t0 = time.perf_counter()
    for _ in range(20):
        score(dense.model, dense.data.val)
    proxy_s = (time.perf_counter() - t0) / 20
    for row in rows:
        policy = rlprune.policy_of(env, row["sparsities"], model=config.model,
                                   dataset=config.dataset, method=row["name"])
        for steps in steps_list:
            t0 = time.perf_counter()
            acc, loss = score(short_tuned(dense, policy, steps, config.finetune_lr),
                              dense.data.val)
            seconds.setdefault(steps, []).append(time.perf_counter() - t0)
            row[f"val_acc@{steps}"], row[f"val_loss@{steps}"] = acc, loss
        print(row["name"], {k: round(v, 4) for k, v in row.items() if "@" in k}, flush=True)
    table = correlations(rows, top, {
        f"{name}@{s}": (f"{key}@{s}", sign) for s in steps_list
        for name, key, sign in (("acc", "val_acc", 1), ("loss", "val_loss", -1))})
    cost = {s: round(float(np.mean(v)) / proxy_s, 1) for s, v in seconds.items()}
    with open(opts["out"], "w") as f:
        json.dump({"source": source, "rows": rows, "spearman": table,
                   "cost_in_proxy_evals": cost}, f, indent=1)
    for group, values in table.items():
        print(f"{group}: " + ", ".join(f"{k} {v}" for k, v in values.items()))
    print("cost of one scoring, in proxy evaluations:", cost)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])
