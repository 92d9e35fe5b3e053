"""Where the allocation matters, and which score ranks what fine-tuning recovers (issue 26).

For one cell (model, granularity, target, fine-tune epochs): the heuristics' allocations and
RANDOM random feasible ones (random actions through the env's clamp, as random search draws
them). Each allocation gets its search reward (the env's, before fine-tuning), its val
accuracy after a short masked fine-tune of each of STEPS SGD steps (the selection stage's
score: rlprune's fine-tune, one pass over STEPS train batches drawn by seed 0), and then the
full fine-tune of EPOCHS epochs for each of SEEDS seeds, scored on test.

Printed per cell: the spread of the allocations' mean test accuracy (standard deviation across
allocations, and best minus worst) against the seed-to-seed standard deviation (the mean over
allocations of the standard deviation across seeds): a cell separates allocations when the
spread is at least 3x the seed noise. Then the Spearman correlation of each score with the
mean fine-tuned test accuracy, over all allocations and over the better half by that score.

    python studies/separating_cells.py out=runs/cells/vgg-mini-channel-0.8.json \
        granularity=channel target=0.8 epochs=3 [model=vgg-mini dataset=mnist5k random=20 \
        seeds=3 steps=8,16,32 fc_rule=3sigma criterion=l1]
    python studies/separating_cells.py report=runs/cells/a.json,runs/cells/b.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from study_tools import accuracy, score, search_env, spearman

import rlprune


def _args(argv: list[str]) -> dict:
    return dict(a.split("=", 1) for a in argv)


def play(env, actions) -> tuple[float, dict]:
    env.reset()
    for a in actions:
        _, reward, done, _, info = env.step(np.array([a], np.float32))
    assert done
    return float(reward), info


def seed_actions(env, names: tuple[str, ...]) -> list[list[float]]:
    """Per baseline, the actions that make the env prune exactly the baseline's counts."""
    return [[env.action_for(t, counts[:t], c) for t, c in enumerate(counts)]
            for counts in map(env.baseline_counts, names)]


def short_score(dense, policy: dict, steps: int, lr: float) -> tuple[float, float]:
    """(val accuracy, val loss) after rlprune's masked fine-tune of one pass over `steps`
    train batches drawn by seed 0 (at most the whole train split; BatchNorm re-estimated on
    them first)."""
    train = dense.data.train
    idx = torch.randperm(len(train), generator=torch.Generator().manual_seed(0))[:steps * 128]
    part = rlprune.Data((train.x[idx], train.y[idx]), dense.data.val, dense.data.test,
                        spec=dense.data.spec)
    return score(rlprune.apply(policy, dense.model, part, 1, seed=0, lr=lr), dense.data.val)


def measure(args: dict) -> dict:
    torch.set_num_threads(int(args.get("threads", 1)))
    config = rlprune.SearchConfig(model=args.get("model", "vgg-mini"),
                                  dataset=args.get("dataset", "mnist5k"),
                                  granularity=args.get("granularity", "channel"),
                                  target=float(args["target"]), device="cpu",
                                  **{k: args[k] for k in ("fc_rule", "criterion") if k in args})
    config.validate()
    epochs, seeds = int(args.get("epochs", 3)), int(args.get("seeds", 3))
    steps = [int(s) for s in args.get("steps", "8,16,32").split(",")]
    dense = rlprune.load_dense(config)
    data = dense.data
    env = search_env(config, dense)
    env.reset(seed=0)
    names = list(config.seed_policies_for())
    allocations = [(f"seed {n}", *play(env, a)) for n, a in zip(names, seed_actions(env, names))]
    rng = np.random.default_rng(int(args.get("seed", 0)))
    layers = len(env.agent_layers)
    for i in range(int(args.get("random", 20))):
        allocations.append((f"random {i}", *play(env, rng.uniform(-1, 1, layers))))
    rows = []
    for name, reward, info in allocations:
        policy = rlprune.policy_of(env, info["sparsities"], model=config.model,
                                   dataset=config.dataset, method=name)
        short = {str(n): short_score(dense, policy, n, config.finetune_lr) for n in steps}
        tests = [accuracy(rlprune.apply(policy, dense.model, data, epochs,
                                        lr=config.finetune_lr, seed=s), data.test)
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
    return spearman(score, target), spearman(score[half], target[half])


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
