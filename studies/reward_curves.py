"""How each search of a bench went, from its TensorBoard events: the best warm-up reward, the
mean reward per 50 episodes after warm-up, and the episode the search kept.

    python docs/studies/reward_curves.py runs/bench4-lenet5-agent

A learning actor's post-warm-up means climb towards its best; a collapsed one sits far below
its own warm-up (e.g. 0.51 on LeNet-5 with absolute actions, where warm-up reached 0.95).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator


def rewards(run: Path) -> np.ndarray:
    events = EventAccumulator(str(next((run / "tb").glob("*")))).Reload()
    by_step = {e.step: e.value for e in events.Scalars("search/reward")}  # last write wins
    return np.array([by_step[k] for k in sorted(by_step)])


def main(bench: str) -> None:
    print("| run | warm-up best | mean per 50 episodes after warm-up | kept: episode (reward) |")
    print("|---|---:|---|---|")
    for run in sorted(Path(bench, "runs").iterdir()):
        if not (run / "tb").is_dir():
            continue
        config = json.loads((run / "config.json").read_text())
        status = json.loads((run / "status.json").read_text())
        r, w = rewards(run), config["warmup"]
        means = " ".join(f"{r[i:i + 50].mean():.3f}" for i in range(w, len(r), 50))
        print(f"| {run.name} | {r[:w].max():.3f} | {means} | "
              f"{status['best_episode']} ({status['best_reward']:.3f}) |")


if __name__ == "__main__":
    main(sys.argv[1])
