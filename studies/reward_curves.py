"""How each search of a bench went, from its runs' events.jsonl (TensorBoard's events in run
folders older than events.jsonl): the best warm-up reward, the mean reward per 50 episodes
after warm-up, and the episode the search kept.

    python studies/reward_curves.py runs/bench4-lenet5-agent [every=50]

A learning actor's post-warm-up means climb towards its best; a collapsed one sits far below
its own warm-up (e.g. 0.51 on LeNet-5 with absolute actions, where warm-up reached 0.95).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np


def rewards(run: Path) -> np.ndarray:
    """Every episode's reward, in episode order (an episode played again after a resume: its
    last record)."""
    if (run / "events.jsonl").is_file():
        by_episode = {e["episode"]: e["reward"]
                      for e in map(json.loads, (run / "events.jsonl").read_text().splitlines())
                      if e.get("kind") == "episode"}
    else:  # a run folder from before events.jsonl (benches 1-6)
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        events = EventAccumulator(str(next((run / "tb").glob("*")))).Reload()
        by_episode = {e.step: e.value for e in events.Scalars("search/reward")}
    return np.array([by_episode[k] for k in sorted(by_episode)])


def main(bench: str, every: int = 50) -> None:
    print(f"| run | warm-up best | mean per {every} episodes after warm-up | "
          "kept: episode (reward) |")
    print("|---|---:|---|---|")
    for run in sorted(Path(bench, "runs").iterdir()):
        config = json.loads((run / "config.json").read_text())
        status = json.loads((run / "status.json").read_text())
        if status.get("best_episode") is None:  # a baseline: no episodes
            continue
        r, w = rewards(run), config["warmup"]
        means = " ".join(f"{r[i:i + every].mean():.3f}" for i in range(w, len(r), every))
        print(f"| {run.name} | {r[:w].max():.3f} | {means} | "
              f"{status['best_episode']} ({status['best_reward']:.3f}) |")


if __name__ == "__main__":
    opts = dict(a.split("=", 1) for a in sys.argv[2:])
    main(sys.argv[1], int(opts.get("every", 50)))
