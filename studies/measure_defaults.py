"""Measurements behind two defaults (docs/decisions.md): the FC rule's k, and BatchNorm
recalibration. Run from the repository root after `rlprune pretrain --model vgg-mini`:

    python docs/studies/measure_defaults.py [--weights runs/pretrained/vgg-mini-mnist5k-seed0.pt]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from rlprune.env.config import EnvConfig
from rlprune.env.fc_rule import choose_fc_rule
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.data import load_dataset
from rlprune.models.pretrain import default_weights_path, model_for
from rlprune.models.train import load_weights


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--model", default="vgg-mini")
    parser.add_argument("--weights", "--checkpoint", default=None)
    parser.add_argument("--target", type=float, default=0.9)
    parser.add_argument("--episodes", type=int, default=12)
    # the table in docs/decisions.md was measured with the accuracy reward (the default then)
    parser.add_argument("--reward", default="acc", choices=("acc", "loss"))
    args = parser.parse_args()
    data = load_dataset("mnist5k")
    model = model_for(args.model, data)
    load_weights(model, args.weights or default_weights_path(args.model, "mnist5k"))
    shape = (1, 28, 28)

    env = PruningEnv(model, data.val, shape, EnvConfig(target=args.target, fc_k=3.0,
                                                        fc_during_search=False))
    rule = choose_fc_rule(env.net.owned_by("fc-rule"), "auto", feasible=lambda n: True,
                          accuracy=env.evaluator.accuracy, model=env.model)
    print(f"{args.model}: proxy accuracy with only the FC layers pruned by the k-sigma rule")
    print("| k | FC weights pruned | proxy accuracy | drop (points) |")
    print("|---|---:|---:|---:|")
    total = sum(layer.params for layer in env.net.owned_by("fc-rule"))
    for t in rule.trials:
        print(f"| {t['k']:g} | {100 * t['pruned'] / total:.2f}% | "
              f"{100 * t['proxy_accuracy']:.1f}% | {100 * t['accuracy_drop']:.1f} |")

    print(f"\n{args.model}: {args.reward} reward of {args.episodes} uniform-random policies at "
          f"target {args.target:g} (FC rule auto), by BatchNorm recalibration batches (128 images)")
    print("| batches | mean reward | min | max | seconds per episode |")
    print("|---:|---:|---:|---:|---:|")
    for batches in (0, 1, 2, 4):
        env = PruningEnv(model, data.val, shape,
                         EnvConfig(target=args.target, bn_recalibration_batches=batches,
                                   reward=args.reward),
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
