"""Episodes per second against `--workers K` (docs/benchmarks.md, "Scale-out").

    python studies/scaling.py [episodes=80 warmup=20 ks=1,2,4 sleeps=0,1 out=runs/scaling.json]
        [model=vgg-mini dataset=mnist5k target=0.9]

The default job (vgg-mini on mnist5k, target 0.9, its dense model from runs/pretrained/)
searched `episodes` episodes (`warmup` of them warm-up: the default job's quarter) with each
K, local worker processes; then the same with `simulated_eval_s` = each of `sleeps` (a proxy
evaluation made slower by a fixed sleep: a large model's cost). Every (sleep, K) runs in this
one process, one after another, so the ratios are measured side by side. Reports the search's
wall time (the job's `search` timing: worker start-up included, the selection stage and the
fine-tune, both off here, not), episodes/s and the speedup over K = 1.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import rlprune


def main(argv: list[str]) -> None:
    args = dict(a.split("=", 1) for a in argv)
    episodes, warmup = int(args.get("episodes", 80)), int(args.get("warmup", 20))
    ks = [int(k) for k in args.get("ks", "1,2,4").split(",")]
    sleeps = [float(s) for s in args.get("sleeps", "0,1").split(",")]
    out = Path(args.get("out", "runs/scaling.json"))
    source = {k: args[k] for k in ("model", "dataset") if k in args}
    dense = rlprune.load_dense(cache="runs/pretrained", **source)
    target = float(args.get("target", rlprune.SearchConfig().target))
    rows = []
    for sleep in sleeps:
        base = None
        for k in ks:
            result = rlprune.search(dense.model, dense.data, target, episodes=episodes,
                                    warmup=warmup, workers=k, simulated_eval_s=sleep,
                                    select_top_k=0, finetune_epochs=0)
            wall = result.timings["search"]
            rate = episodes / wall
            base = base or rate
            rows.append({"simulated_eval_s": sleep, "workers": k, "episodes": episodes,
                         "search_s": round(wall, 2), "episodes_per_s": round(rate, 3),
                         "speedup": round(rate / base, 3),
                         "best_reward": result.policy["search"]["best_reward"]})
            print(json.dumps(rows[-1]), flush=True)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1) + "\n")
    print("| proxy evaluation | K | search s | episodes/s | speedup |")
    print("|---|---:|---:|---:|---:|")
    for r in rows:
        what = "as is" if not r["simulated_eval_s"] else f"+ {r['simulated_eval_s']:g} s sleep"
        print(f"| {what} | {r['workers']} | {r['search_s']:.1f} | {r['episodes_per_s']:.2f} | "
              f"{r['speedup']:.2f}x |")


if __name__ == "__main__":
    main(sys.argv[1:])
