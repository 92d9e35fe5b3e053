"""Where the allocation matters, and which score ranks what fine-tuning recovers (issue 26).

For one cell (model, granularity, target, fine-tune epochs): the heuristics' allocations and
RANDOM random feasible ones (random actions through the env's clamp, as random search draws
them). Each allocation gets its search reward (the env's, before fine-tuning), its val
accuracy after a short masked fine-tune of each of STEPS SGD steps (the selection stage's
score), and then the full fine-tune of EPOCHS epochs for each of SEEDS seeds, scored on test.

Printed per cell: the spread of the allocations' mean test accuracy (standard deviation across
allocations, and best minus worst) against the seed-to-seed standard deviation (the mean over
allocations of the standard deviation across seeds): a cell separates allocations when the
spread is at least 3x the seed noise. Then the Spearman correlation of each score with the
mean fine-tuned test accuracy, over all allocations and over the better half by that score.

    python docs/studies/separating_cells.py out=runs/cells/vgg-mini-channel-0.8.json \
        granularity=channel target=0.8 epochs=3 [model=vgg-mini dataset=mnist5k random=20 \
        seeds=3 steps=8,16,32 fc_rule=3sigma criterion=l1]
    python docs/studies/separating_cells.py report=runs/cells/a.json,runs/cells/b.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from scipy.stats import spearmanr

from rlprune.agent.config import SearchConfig
from rlprune.agent.search import seed_actions
from rlprune.env.finalize import prune_and_finetune, pruned_copy
from rlprune.env.make import make_env
from rlprune.env.selection import short_finetune
from rlprune.service.jobs.dense_loader import load_dense
from rlprune.service.jobs.job_policy import job_policy


def _args(argv: list[str]) -> dict:
    return dict(a.split("=", 1) for a in argv)


def play(env, actions) -> tuple[float, dict]:
    env.reset()
    for a in actions:
        _, reward, done, _, info = env.step(np.array([a], np.float32))
    assert done
    return float(reward), info


def measure(args: dict) -> dict:
    torch.set_num_threads(int(args.get("threads", 1)))
    config = SearchConfig(model=args.get("model", "vgg-mini"),
                          dataset=args.get("dataset", "mnist5k"),
                          granularity=args.get("granularity", "channel"),
                          target=float(args["target"]), device="cpu",
                          **{k: args[k] for k in ("fc_rule", "criterion") if k in args})
    config.validate()
    epochs, seeds = int(args.get("epochs", 3)), int(args.get("seeds", 3))
    steps = [int(s) for s in args.get("steps", "8,16,32").split(",")]
    dense = load_dense(config)
    data = dense.data
    env = make_env(dense.model, data.val, dense.input_shape, config.env_config(),
                   calibration=data.train)
    env.reset(seed=0)
    names = list(config.seed_policies_for())
    allocations = [(f"seed {n}", *play(env, a)) for n, a in zip(names, seed_actions(env, names))]
    rng = np.random.default_rng(int(args.get("seed", 0)))
    layers = len(env.agent_layers)
    for i in range(int(args.get("random", 20))):
        allocations.append((f"random {i}", *play(env, rng.uniform(-1, 1, layers))))
    rows = []
    for name, reward, info in allocations:
        chosen = {"sparsities": info["sparsities"], "reward": reward, "episode": None,
                  "proxy_accuracy": info["proxy_accuracy"]}
        policy = job_policy("ddpg", config, dense, env, None, chosen=chosen)
        short = {}
        for n in steps:
            model, masks = pruned_copy(dense.model, policy, "cpu", data.input_shape)
            short[str(n)] = short_finetune(model, masks, data.train, data.val, steps=n,
                                           lr=config.finetune_lr, seed=0,
                                           bn_batches=config.bn_recalibration_batches,
                                           bn_batch_size=config.bn_batch_size)
        tests = [prune_and_finetune(dense.model, policy, data, epochs=epochs,
                                    lr=config.finetune_lr, seed=s).finetuned_accuracy
                 for s in range(seeds)]
        rows.append({"name": name, "reward": reward, "proxy_accuracy": info["proxy_accuracy"],
                     "proxy_loss": info["proxy_loss"], "sparsities": info["sparsities"],
                     "short": {k: {"val_accuracy": a, "val_loss": lo}
                               for k, (a, lo) in short.items()},
                     "test": tests})
        print(f"{name:12} reward {reward:8.4f}  short "
              f"{' '.join(f'{100 * v[0]:.1f}' for v in short.values())}  test "
              f"{' '.join(f'{100 * t:.1f}' for t in tests)}", flush=True)
    return {"cell": {"model": config.model, "dataset": config.dataset,
                     "granularity": config.granularity, "target": config.target,
                     "epochs": epochs},
            "seeds": seeds, "steps": steps, "rows": rows}


def _spearman(score: np.ndarray, target: np.ndarray) -> tuple[float, float]:
    """Over all rows, and over the better half by `score`."""
    half = np.argsort(-score)[: max(3, len(score) // 2)]
    return (float(spearmanr(score, target)[0]), float(spearmanr(score[half], target[half])[0]))


def report(cell: dict) -> list[str]:
    rows = cell["rows"]
    tests = np.array([r["test"] for r in rows]) * 100
    mean, noise = tests.mean(1), tests.std(1, ddof=1).mean()
    c = cell["cell"]
    head = (f"{c['model']} {c['granularity']} {float(c['target']):g}, {c['epochs']} epochs, "
            f"{len(rows)} allocations x {cell['seeds']} seeds")
    spread = mean.std(ddof=1)
    top = np.sort(mean)[len(mean) // 2:]  # the better half: allocations a search would keep
    lines = [f"{head}: spread {spread:.2f} pts (best - worst {np.ptp(mean):.2f}), seed noise "
             f"{noise:.2f} pts, ratio {spread / noise:.2f}; better half by test: spread "
             f"{top.std(ddof=1):.2f} pts, ratio {top.std(ddof=1) / noise:.2f}"]
    scores = {"search reward": [r["reward"] for r in rows]}
    for n in cell["steps"]:
        scores[f"val acc after {n} steps"] = [r["short"][str(n)]["val_accuracy"] for r in rows]
    for name, values in scores.items():
        every, better = _spearman(np.array(values, float), mean)
        lines.append(f"  Spearman with the mean test accuracy, {name}: {every:+.2f} (better "
                     f"half {better:+.2f})")
    return lines


if __name__ == "__main__":
    args = _args(sys.argv[1:])
    if "report" in args:
        for path in args["report"].split(","):
            print("\n".join(report(json.loads(Path(path).read_text()))))
    else:
        cell = measure(args)
        Path(args["out"]).parent.mkdir(parents=True, exist_ok=True)
        Path(args["out"]).write_text(json.dumps(cell, indent=1))
        print("\n".join(report(cell)))
