"""CPU speed of channel-pruned networks against their dense model, side by side.

    python studies/channel_speed.py BENCH_DIR [method=ddpg] [threads=2] [repeats=50]

For every run of `method` under BENCH_DIR/runs/ (a `rlprune bench --granularity channel`
folder): the dense model and the run's pruned model (its pruned.rlprune, or an older run's
pruned.pt: a torch.export program, fixed in eval mode), timed one after the other in this
process (median of `repeats` forward passes after warm-up, batch 1 and 32), and the FLOPs
removed. Prints one row per run and the mean speedup per target; the ratio speedup /
(1 / (1 - FLOPs removed)) says how much of the FLOPs reduction the CPU turns into time.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import torch
from study_tools import latency_ms

import rlprune


def main() -> None:
    bench = Path(sys.argv[1])
    opts = dict(a.split("=", 1) for a in sys.argv[2:])
    method, threads = opts.get("method", "ddpg"), int(opts.get("threads", "2"))
    repeats = int(opts.get("repeats", "50"))
    torch.set_num_threads(threads)
    rows = []
    dense = None
    for run in sorted((bench / "runs").glob(f"{method}-*")):
        config = rlprune.SearchConfig.from_json(json.loads((run / "config.json").read_text()))
        policy = json.loads((run / "policy.json").read_text())
        if dense is None:
            dense = rlprune.load_dense(config)
        pruned = rlprune.load_model(run)  # the run's pruned model: a program, in eval mode
        row = {"run": run.name, "target": config.target,
               "removed": policy["achieved"]["sparsity"]}
        for batch in (1, 32):
            d = latency_ms(dense.model, dense.input_shape, batch, repeats=repeats, budget_s=10)
            p = latency_ms(pruned, dense.input_shape, batch, repeats=repeats, budget_s=10)
            row[f"dense_b{batch}"], row[f"pruned_b{batch}"] = d, p
            row[f"speedup_b{batch}"] = d / p
        rows.append(row)
        print(f"{run.name:<28} removed {row['removed']:.3f}  batch 1 {row['speedup_b1']:.2f}x  "
              f"batch 32 {row['speedup_b32']:.2f}x  (dense {row['dense_b32']:.2f} ms, "
              f"pruned {row['pruned_b32']:.2f} ms)", flush=True)
    print("| FLOPs removed | runs | speedup, batch 1 | speedup, batch 32 | of the FLOPs "
          "reduction (batch 32) |")
    for target in sorted({r["target"] for r in rows}):
        part = [r for r in rows if r["target"] == target]
        ideal = 1.0 / (1.0 - np.mean([r["removed"] for r in part]))
        b1 = np.mean([r["speedup_b1"] for r in part])
        b32 = np.mean([r["speedup_b32"] for r in part])
        print(f"| {target:g} | {len(part)} | {b1:.2f}x | {b32:.2f}x | {b32 / ideal:.2f} |")


if __name__ == "__main__":
    main()
