"""Combine bench runs into one bench.json/md/png (docs/benchmarks.md).

Rows are keyed by method, target and seed; a later file's row replaces an earlier file's
(e.g. the search re-run after a change, beside baselines that do not depend on the search),
and rows of new seeds (`rlprune bench --first-seed`) are added. Speed is kept from the files
that had searches, weighted by their episodes.

    python scripts/merge_bench.py --out docs/bench/vgg-mini A/bench.json B/bench.json ...
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rlprune.service.bench import bench_table, merge_reports, plot_bench


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("inputs", type=Path, nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    merged = merge_reports([(str(p), json.loads(p.read_text())) for p in args.inputs])
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "bench.json").write_text(json.dumps(merged, indent=2) + "\n")
    (args.out / "bench.md").write_text(bench_table(merged))
    plot_bench(merged, args.out / "bench.png")
    print(bench_table(merged), end="")


if __name__ == "__main__":
    main()
