"""Where a bench's searches found what they kept: per search method, how many picks were a
seed policy's allocation (played in the warm-up or added by the selection stage), how many
best rewards came from the warm-up episodes, and what the episodes after the warm-up gained
in best reward. Reads the bench folders' bench.json and each search cell's events.jsonl.

    python studies/warmup_gain.py runs/b26/w098-e3-s0 runs/b26/w098-e3-s5
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

SEARCHES = ("ddpg", "td3", "tpe", "random")


def best_rewards(events: Path, warmup: int) -> tuple[float, float]:
    """(best reward after the warm-up's episodes, best reward at the end)."""
    rewards = [e for e in map(json.loads, events.read_text().splitlines())
               if e.get("kind") == "episode"]
    early = max(e["reward"] for e in rewards if e["episode"] <= warmup)
    return early, max(e["reward"] for e in rewards)


def main(folders: list[str]) -> None:
    rows, gains = [], {}
    for folder in map(Path, folders):
        bench = json.loads((folder / "bench.json").read_text())
        for row in bench["results"]:
            if row["method"] not in SEARCHES:
                continue
            rows.append({**row, "warmup": bench["warmup"]})
            events = folder / "runs" / f"{row['method']}-{row['target']:g}-seed{row['seed']}"
            early, end = best_rewards(events / "events.jsonl", bench["warmup"])
            gains.setdefault(row["method"], []).append(end - early)
    lamp = {r["seed"]: r["test_accuracy"] for f in folders
            for r in json.loads((Path(f) / "bench.json").read_text())["results"]
            if r["method"] == "lamp"}
    for method in SEARCHES:
        mine = [r for r in rows if r["method"] == method]
        if not mine:
            continue
        seed = [r for r in mine if "seed" in r["chosen"]]
        warm = [r for r in mine if (r.get("best_reward_episode") or 0) <= r["warmup"]]
        own = [r for r in mine if "seed" not in r["chosen"]]
        vs = [100 * (r["test_accuracy"] - lamp[r["seed"]]) for r in own if r["seed"] in lamp]
        g = gains[method]
        print(f"{method}: {len(mine)} runs; picks a seed policy's allocation {len(seed)}; best "
              f"reward from the warm-up {len(warm)}; best reward gained after the warm-up "
              f"{sum(g) / len(g):+.4f} (min {min(g):+.4f}, max {max(g):+.4f}); own picks "
              f"minus LAMP on their seeds: {', '.join(f'{v:+.1f}' for v in vs) or 'none'}")


if __name__ == "__main__":
    main(sys.argv[1:])
