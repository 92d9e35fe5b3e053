"""A user's script that prunes their own model through the Python API, into a run folder.

    python api_job.py search RUN_DIR WEIGHTS   # start (and finish) the search
    python api_job.py resume RUN_DIR WEIGHTS   # continue it after it was killed

Prints the result as one JSON line: state, best episode, layer sparsities, rewards per episode.
Every episode sleeps 20 ms so that a test can kill the search while it runs.
"""

from __future__ import annotations

import json
import sys
import time

import torch
import userproject

import rlprune

SETTINGS = {"episodes": 24, "warmup": 6, "checkpoint_every": 4, "finetune_epochs": 0,
            "hidden": (16, 16), "batch_size": 8, "select_top_k": 0, "int8_size": False}


def slow(event: rlprune.Event) -> None:
    if event.kind == "episode":
        time.sleep(0.02)


def outcome(mode: str, run_dir: str, weights: str) -> dict:
    """The run's result as `main` prints it (also called in-process by the tests)."""
    model = userproject.make()
    model.load_state_dict(torch.load(weights, weights_only=True))
    data = rlprune.Data(*userproject.loaders())
    if mode == "search":
        result = rlprune.search(model.eval(), data, target=0.7, run_dir=run_dir, callback=slow,
                                **SETTINGS)
    else:
        result = rlprune.resume(run_dir, model.eval(), data, callback=slow)
    return {"state": result.state, "best_episode": result.policy["search"]["best_episode"],
            "layers": {la["name"]: la["sparsity"] for la in result.policy["layers"]},
            "rewards": [row["reward"] for row in result.history]}


def main(mode: str, run_dir: str, weights: str) -> None:
    torch.set_num_threads(1)
    print(json.dumps(outcome(mode, run_dir, weights)))


if __name__ == "__main__":
    main(*sys.argv[1:])
