"""Combine bench runs into one bench.json/md/png (docs/benchmarks.md).

Rows are taken in order; a later file's rows replace an earlier file's rows of the same method
and target (e.g. the search re-run after a change, beside baselines that do not depend on the
search). Speed is kept from the files that had searches, weighted by their episodes.

    python scripts/merge_bench.py --out docs/bench/vgg-mini A/bench.json B/bench.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from agent.bench import _speed, bench_table, plot_bench


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    merged: dict | None = None
    rows: dict[tuple[str, float], list[dict]] = {}
    speeds = []
    for path in args.inputs:
        report = json.loads(path.read_text())
        if merged is None:
            merged = {k: v for k, v in report.items() if k not in ("results", "speed")}
        elif report["dense_test_accuracy"] != merged["dense_test_accuracy"]:
            raise SystemExit(f"{path}: another dense model; refusing to merge")
        new: dict[tuple[str, float], list[dict]] = {}
        for row in report["results"]:
            new.setdefault((row["method"], row["target"]), []).append(
                {**row, "source": str(path)})
        rows.update(new)
        if report["speed"]["overhead_ratio"] is not None:
            speeds.append(report)
    assert merged is not None
    merged["merged_from"] = [str(p) for p in args.inputs]
    merged["results"] = [row for group in rows.values() for row in group]
    # Per-file aggregates back into per-search records, so bench's own _speed weighs them.
    merged["speed"] = _speed([
        {"episodes": n * r["episodes"], "search_s": n * r["episodes"] * r["speed"]["episode_s"],
         "proxy_eval_s": r["speed"]["proxy_eval_s"]}
        for r in speeds
        if (n := sum(1 for row in r["results"] if row["method"].startswith("ddpg")))])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(merged, indent=2) + "\n")
    (args.out / "bench.md").write_text(bench_table(merged))
    plot_bench(merged, args.out / "bench.png")
    print(bench_table(merged), end="")


if __name__ == "__main__":
    main()
