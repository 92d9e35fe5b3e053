"""Does a short masked fine-tune before scoring rank allocations closer to the real fine-tune?

Reuses a reward_signals.py study (its candidates and their fine-tuned test accuracies): each
candidate is pruned as the search prunes it (BatchNorm recalibrated on one batch), trained for
N SGD steps with its masks held (at most one pass over the train split; batch 128, no
augmentation, the fine-tune's learning rate on a one-cycle schedule, fixed seed), then scored
on the val split. Prints the Spearman correlation of each score with the mean fine-tuned test
accuracy, over all candidates and over the near-best ones (val accuracy before tuning within
`top` points of the best), and the time of one scoring relative to one proxy evaluation.

    python docs/studies/short_tune_signal.py docs/studies/signals/signals-lenet5-agent-0.95.json \
        out=runs/short-tune-lenet5-0.95.json steps=0,5,20,28 top=3
"""

from __future__ import annotations

import copy
import json
import sys
import time

import numpy as np
import torch
from rank_candidates import candidate_policy
from reward_signals import correlations
from study_tools import baseline_env

from rlprune.agent.config import SearchConfig
from rlprune.env.evaluate import ProxyEvaluator, recalibrate_bn
from rlprune.env.masks import apply_masks, hold_masks
from rlprune.env.policy import policy_masks
from rlprune.models.splits import Split
from rlprune.models.train import TrainConfig, train
from rlprune.service.jobs.dense_loader import load_dense


def short_tuned(dense_model, policy: dict, data, steps: int, lr: float, seed: int = 0):
    model = copy.deepcopy(dense_model)
    masks = policy_masks(model, policy)
    apply_masks(model, masks)
    recalibrate_bn(model, data.train, 1, 128, np.random.default_rng(seed))
    if steps > 0:
        idx = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(seed))
        idx = idx[:steps * 128]
        hold_masks(model, masks)
        train(model, Split(data.train.x[idx], data.train.y[idx]),
              TrainConfig(epochs=1, lr=lr, shift=0, seed=seed))
    return model


def main(source: str, pairs: list[str]) -> None:
    opts = dict(p.split("=", 1) for p in pairs)
    steps_list = [int(s) for s in opts.get("steps", "0,5,20,28").split(",")]
    top = float(opts.get("top", 3))
    study = json.loads(open(source).read())
    config = SearchConfig.from_json(study["config"])  # maps the old `checkpoint` to `weights`
    torch.manual_seed(0)
    dense = load_dense(config)
    env = baseline_env(config, dense)
    one_pass = -(-len(dense.data.train) // 128)  # the train split holds this many batches
    if any(s > one_pass for s in steps_list):
        print(f"steps capped at one pass over the train split ({one_pass})", flush=True)
        steps_list = sorted({min(s, one_pass) for s in steps_list})
    val = ProxyEvaluator(dense.data.val, "cpu")
    rows, seconds = study["rows"], {}
    t0 = time.perf_counter()
    for _ in range(20):
        val.score(dense.model)
    proxy_s = (time.perf_counter() - t0) / 20
    for row in rows:
        policy = candidate_policy(config, dense, env, row["name"], row["sparsities"])
        for steps in steps_list:
            t0 = time.perf_counter()
            acc, loss = val.score(short_tuned(dense.model, policy, dense.data, steps,
                                              config.finetune_lr))
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
