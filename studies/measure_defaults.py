"""Measurements behind two defaults (docs/decisions.md): the FC rule's k, and BatchNorm
recalibration. Run from the repository root after `rlprune pretrain --model vgg-mini`:

    python studies/measure_defaults.py [--weights runs/pretrained/vgg-mini-mnist5k-seed0.pt]
        [--model vgg-mini] [--dataset mnist5k] [--episodes 12] [--batches 0,1,2,4]

The FC rule's table is what `--fc-k auto` measures when the env is built (`env.fc.trials`:
the k it tried, largest first, until one cost at most one point).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

import rlprune


def fc_table(name: str, env: rlprune.PruningEnv) -> None:
    """What the env's `--fc-k auto` measured: each k's pruned FC weights and proxy accuracy
    with only the FC layers pruned (dense BatchNorm statistics)."""
    print(f"{name}: proxy accuracy with only the FC layers pruned by the k-sigma rule")
    print("| k | FC weights pruned | proxy accuracy | drop (points) |")
    print("|---|---:|---:|---:|")
    total = sum(layer.params for layer in env.net.owned_by("fc-rule"))
    for t in env.fc.trials:
        if not t["feasible"]:  # the agent could not make up the target with it
            print(f"| {t['k']:g} | {100 * t['pruned'] / total:.2f}% | infeasible | |")
            continue
        print(f"| {t['k']:g} | {100 * t['pruned'] / total:.2f}% | "
              f"{100 * t['proxy_accuracy']:.1f}% | {100 * t['accuracy_drop']:.1f} |")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="vgg-mini")
    parser.add_argument("--dataset", default="mnist5k")
    parser.add_argument("--weights", "--checkpoint", default=None)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--episodes", type=int, default=12)
    # the table in docs/decisions.md was measured with the accuracy reward (the default then)
    parser.add_argument("--reward", default="acc", choices=("acc", "loss"))
    parser.add_argument("--batches", default="0,1,2,4", help="recalibration batches to try")
    args = parser.parse_args()
    dense = rlprune.load_dense(model=args.model, dataset=args.dataset, weights=args.weights)
    model, data, shape = dense.model, dense.data, dense.input_shape
    fc_table(args.model, rlprune.PruningEnv(model, data.val, shape,
                                            rlprune.EnvConfig(target=args.target, fc_k="auto")))

    print(f"\n{args.model}: {args.reward} reward of {args.episodes} uniform-random policies at "
          f"target {args.target:g} (FC rule auto), by BatchNorm recalibration batches (128 images)")
    print("| batches | mean reward | min | max | seconds per episode |")
    print("|---:|---:|---:|---:|---:|")
    for batches in map(int, args.batches.split(",")):
        env = rlprune.PruningEnv(model, data.val, shape,
                                 rlprune.EnvConfig(target=args.target, reward=args.reward,
                                                   bn_recalibration_batches=batches),
                                 calibration=data.train)
        rng, rewards = np.random.default_rng(0), []
        start = time.perf_counter()
        for episode in range(args.episodes):
            env.reset(seed=episode)
            done = False
            while not done:
                _, reward, done, _, _ = env.step(rng.uniform(-1, 1, 1).astype(np.float32))
            rewards.append(reward)
        seconds = (time.perf_counter() - start) / args.episodes
        print(f"| {batches} | {np.mean(rewards):.3f} | {np.min(rewards):.3f} | "
              f"{np.max(rewards):.3f} | {seconds:.3f} |")


if __name__ == "__main__":
    main()
