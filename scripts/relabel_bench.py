"""Copy a bench.json with one method renamed, so that merge_bench.py can set two variants of
the search side by side (bench.md then gives their seed-by-seed difference).

    python scripts/relabel_bench.py runs/bench7-lenet5-agent/bench.json ddpg ddpg-acc \
        runs/relabelled/lenet5-agent-acc.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def main(source: str, old: str, new: str, out: str) -> None:
    report = json.loads(Path(source).read_text())
    report["results"] = [{**row, "method": new} for row in report["results"]
                         if row["method"] == old]
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    Path(out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main(*sys.argv[1:])
