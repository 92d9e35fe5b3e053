"""How well candidate rewards rank channel allocations by their fine-tuned test accuracy.

For each FLOPs target: the three channel baselines plus random feasible allocations (random
actions through the env's clamp, as random search draws them), each scored by candidate
rewards before fine-tuning, then fine-tuned as a bench cell is (3 epochs, masks not needed:
the network is slimmed) and scored on test. Prints the Spearman correlation of each score
with the fine-tuned accuracy, over all allocations and over the better half (by the default
reward), and writes every row to OUT.

    python docs/studies/channel_reward_fidelity.py out=runs/channel-fidelity.json \
        targets=0.5,0.7,0.8 random=27 [model=vgg-mini dataset=mnist5k criterion=l1]

Candidate scores: val cross-entropy after BatchNorm recalibration on 1 (the default) or 8
train batches, val accuracy, and the val cross-entropy after a short fine-tune of the slimmed
network (10 SGD steps on fixed train batches); and, for comparison, minus the largest
fraction of a group's channels the allocation removes (what `--s-max` bounds).

    python docs/studies/channel_reward_fidelity.py \
        rescore=docs/studies/channel-fidelity-vgg-mini.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from rlprune.agent.config import SearchConfig
from rlprune.env.channel_env import CHANNEL_BASELINES, ChannelPruningEnv
from rlprune.env.evaluate import recalibrate_bn
from rlprune.env.finalize import prune_and_finetune
from rlprune.env.policy import build_channel_policy
from rlprune.models.splits import Split
from rlprune.models.train import TrainConfig, train
from rlprune.service.jobs.dense_loader import load_dense


def args(argv: list[str]) -> dict:
    out = {"model": "vgg-mini", "dataset": "mnist5k", "targets": "0.5,0.7,0.8",
           "random": "27", "criterion": "l1", "out": "runs/channel-fidelity.json",
           "seed": "0"}
    out.update(a.split("=", 1) for a in argv)
    return out


def policy_for(env: ChannelPruningEnv, counts: list[int], config: SearchConfig) -> dict:
    removed = env.removed_channels(env.sparsities(counts))
    return build_channel_policy(
        model=config.model, dataset=config.dataset, fingerprint="", method="study",
        target=config.target, budget=config.budget, criterion=config.criterion,
        groups=env.graph.groups, removed=removed, achieved=env.budget.achieved(counts),
        costs=env.costs(counts), accuracy={})


def masked_scores(env: ChannelPruningEnv, counts: list[int]) -> dict:
    env.reset()
    for t, c in enumerate(counts):
        env.step(np.array([env.action_for(t, counts[:t], c)]))
    acc1, loss1 = env.proxy_score()
    cfg = env.config
    rng = np.random.default_rng(0)
    recalibrate_bn(env.model, env.calibration, 8, cfg.bn_batch_size, rng)
    acc8, loss8 = env.evaluator.score(env.model)
    env.model.load_state_dict(env._bn_state, strict=False)
    return {"loss_bn1": -loss1, "acc_bn1": acc1, "loss_bn8": -loss8, "acc_bn8": acc8}


def short_tuned(dense, policy: dict, data, steps: int = 10) -> float:
    model = prune_and_finetune(dense.model, policy, data, epochs=0).model
    sub = Split(data.train.x[: steps * 128], data.train.y[: steps * 128])
    train(model, sub, TrainConfig(epochs=1, lr=0.01, seed=0, shift=0))
    return -float(torch.nn.functional.cross_entropy(model(data.val.x), data.val.y))


def main() -> None:
    a = args(sys.argv[1:])
    torch.set_num_threads(1)
    rows = []
    for target in map(float, a["targets"].split(",")):
        config = SearchConfig(model=a["model"], dataset=a["dataset"], granularity="channel",
                              target=target, criterion=a["criterion"], device="cpu")
        dense = load_dense(config)
        env = ChannelPruningEnv(dense.model, dense.data.val, dense.input_shape,
                                config.env_config(), calibration=dense.data.train)
        allocations = [(name, env.baseline_counts(name)) for name in CHANNEL_BASELINES]
        rng = np.random.default_rng(int(a["seed"]))
        for i in range(int(a["random"])):
            env.reset()
            counts = []
            for t in range(len(env.agent_layers)):
                *_, info = env.step(rng.uniform(-1, 1, 1))
                counts.append(int(round(info["sparsity"] * env.budget.sizes[t])))
            allocations.append((f"random{i}", counts))
        for name, counts in allocations:
            policy = policy_for(env, counts, config)
            row = {"target": target, "allocation": name, "counts": counts,
                   "sizes": env.budget.sizes,
                   **masked_scores(env, counts),
                   "short_tune_loss": short_tuned(dense, policy, dense.data)}
            done = prune_and_finetune(dense.model, policy, dense.data, epochs=3, seed=0)
            row["finetuned"] = done.finetuned_accuracy
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
    print("| target | " + " | ".join(scores) + " |  (all / the better half by that score)")
    for target in sorted({r["target"] for r in rows}):
        group = [r for r in rows if r["target"] == target]
        cells = []
        for s in scores:
            top = sorted(group, key=lambda r: -r[s])[: len(group) // 2]
            rho = [spearmanr([r[s] for r in part], [r["finetuned"] for r in part])[0]
                   for part in (group, top)]
            cells.append(f"{rho[0]:+.2f} / {rho[1]:+.2f}")
        print(f"| {target:g} | " + " | ".join(cells) + " |")

if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1].startswith("rescore="):
        report(json.loads(Path(sys.argv[1].split("=", 1)[1]).read_text()))
    else:
        main()
