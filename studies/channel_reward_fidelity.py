"""How well candidate rewards rank channel allocations by their fine-tuned test accuracy.

For each FLOPs target: the three channel baselines plus random feasible allocations (random
actions through the env's clamp, as random search draws them), each scored by candidate
rewards before fine-tuning, then fine-tuned as a bench cell is (`epochs`, 3 by default; masks
not needed: the network is slimmed) and scored on test. Prints the Spearman correlation of
each score with the fine-tuned accuracy, over all allocations and over the better half (by
that score), and writes every row to OUT.

    python studies/channel_reward_fidelity.py out=runs/channel-fidelity.json \
        targets=0.5,0.7,0.8 random=27 [model=vgg-mini dataset=mnist5k criterion=l1 epochs=3]

Candidate scores: val cross-entropy after BatchNorm recalibration on 1 (the default) or 8
train batches (the search's env with `bn_recalibration_batches` 1 or 8), val accuracy, and the
val cross-entropy after a short fine-tune of the slimmed network (`steps`, 10 SGD steps on
fixed train batches); and, for comparison, minus the largest fraction of a group's channels
the allocation removes (what `--s-max` bounds).

    python studies/channel_reward_fidelity.py rescore=studies/channel-fidelity-vgg-mini.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from study_tools import Part, accuracy, score, search_env, sgd_steps, spearman

import rlprune


def args(argv: list[str]) -> dict:
    out = {"model": "vgg-mini", "dataset": "mnist5k", "targets": "0.5,0.7,0.8",
           "random": "27", "criterion": "l1", "out": "runs/channel-fidelity.json",
           "seed": "0", "epochs": "3", "steps": "10"}
    out.update(a.split("=", 1) for a in argv)
    return out


def play(env, counts: list[int]) -> dict:
    """The last step's info of an episode that removes `counts` channels per group."""
    env.reset()
    for t, c in enumerate(counts):
        *_, info = env.step(np.array([env.action_for(t, counts[:t], c)]))
    return info


def masked_scores(env, env8, counts: list[int]) -> dict:
    one, eight = play(env, counts), play(env8, counts)
    return {"loss_bn1": -one["proxy_loss"], "acc_bn1": one["proxy_accuracy"],
            "loss_bn8": -eight["proxy_loss"], "acc_bn8": eight["proxy_accuracy"]}


def short_tuned(dense, policy: dict, steps: int) -> float:
    model = rlprune.apply(policy, dense.model, dense.data, seed=0)  # slimmed, BatchNorm set
    train = dense.data.train
    sgd_steps(model, Part(train.x[: steps * 128], train.y[: steps * 128]), lr=0.01, seed=0,
              hold_zeros=False)
    return -score(model, dense.data.val)[1]


def allocations(env, baselines: tuple[str, ...], n_random: int, seed: int
                ) -> list[tuple[str, list[int]]]:
    """The baselines' channel counts, then `n_random` episodes of uniformly random actions."""
    out = [(name, env.baseline_counts(name)) for name in baselines]
    rng = np.random.default_rng(seed)
    for i in range(n_random):
        env.reset()
        counts = []
        for t in range(len(env.agent_layers)):
            *_, info = env.step(rng.uniform(-1, 1, 1))
            counts.append(int(round(info["sparsity"] * env.budget.sizes[t])))
        out.append((f"random{i}", counts))
    return out


def main() -> None:
    a = args(sys.argv[1:])
    torch.set_num_threads(1)
    rows = []
    dense = None
    for target in map(float, a["targets"].split(",")):
        config = rlprune.SearchConfig(model=a["model"], dataset=a["dataset"],
                                      granularity="channel", target=target,
                                      criterion=a["criterion"], device="cpu")
        dense = dense or rlprune.load_dense(config)
        env = search_env(config, dense)
        env8 = search_env(config, dense, bn_recalibration_batches=8)
        baselines = config.seed_policies_for()  # the channel mode's: uniform, global-l1, ...
        for name, counts in allocations(env, baselines, int(a["random"]), int(a["seed"])):
            policy = rlprune.policy_of(env, env.sparsities(counts), model=config.model,
                                       dataset=config.dataset, method="study")
            row = {"target": target, "allocation": name, "counts": counts,
                   "sizes": env.budget.sizes, **masked_scores(env, env8, counts),
                   "short_tune_loss": short_tuned(dense, policy, int(a["steps"]))}
            tuned = rlprune.apply(policy, dense.model, dense.data, int(a["epochs"]), seed=0)
            row["finetuned"] = accuracy(tuned, dense.data.test)
            rows.append(row)
            print(f"{target:g} {name:<14} loss_bn1 {row['loss_bn1']:.4f} finetuned "
                  f"{100 * row['finetuned']:.2f}", flush=True)
    Path(a["out"]).parent.mkdir(parents=True, exist_ok=True)
    Path(a["out"]).write_text(json.dumps(rows, indent=1))
    report(rows)


def report(rows: list[dict]) -> None:
    for r in rows:  # not a reward: how hard the allocation's most-pruned group is cut
        r["minus_max_removed"] = -max(c / n for c, n in zip(r["counts"], r["sizes"]))
    scores = ("loss_bn1", "acc_bn1", "loss_bn8", "acc_bn8", "short_tune_loss",
              "minus_max_removed")
    print("Spearman with the fine-tuned test accuracy: all / the better half by that score")
    print("| target | " + " | ".join(scores) + " |")
    print("|---:|" + "---:|" * len(scores))
    for target in sorted({r["target"] for r in rows}):
        group = [r for r in rows if r["target"] == target]
        cells = []
        for s in scores:
            top = sorted(group, key=lambda r: -r[s])[: len(group) // 2]
            rho = [spearman([r[s] for r in part], [r["finetuned"] for r in part])
                   for part in (group, top)]
            cells.append(f"{rho[0]:+.2f} / {rho[1]:+.2f}")
        print(f"| {target:g} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("rescore="):
        report(json.loads(Path(sys.argv[1].split("=", 1)[1]).read_text()))
    else:
        main()
