"""Accuracy before fine-tuning (proxy = val, pruned = test), mean over seeds, from bench.json.

    python studies/bench_summary.py docs/bench/vgg-mini/bench.json
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict

import numpy as np


def main(path: str) -> None:
    report = json.loads(open(path).read())
    groups: dict[tuple[str, float], list[dict]] = defaultdict(list)
    for row in report["results"]:
        groups[(row["method"], row["target"])].append(row)
    print("| method | target | proxy (val), no fine-tune | test, no fine-tune | "
          "test, fine-tuned |")
    print("|---|---:|---:|---:|---:|")
    for (method, target), rows in sorted(groups.items(), key=lambda kv: (kv[0][1], kv[0][0])):
        cells = [100 * np.mean([r[k] for r in rows])
                 for k in ("proxy_accuracy", "pruned_accuracy", "test_accuracy")]
        print(f"| {method} | {target:g} | " + " | ".join(f"{c:.2f}" for c in cells) + " |")


if __name__ == "__main__":
    main(sys.argv[1])
