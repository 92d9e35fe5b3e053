"""A search's speed figures alone and beside a CPU-bound process (docs/benchmarks.md, "Search
speed").

    python studies/speed_under_load.py [model=vgg-mini] [dataset=mnist5k] [episodes=40]
        [warmup=10] [target=0.9] [fc_k=auto] [pairs=2] [core=LAST]
        [out=runs/speed_under_load.json]

One small search (the default job's model and data, target 0.9, one torch thread, no
selection stage, no fine-tune: neither is timed) is run `pairs` times under each load, the
loads interleaved (alone, loaded, arrives, alone, loaded, arrives, ...) so that what else runs
on the machine meets each alike:

    alone    nothing of this script's beside the search
    loaded   a busy loop (`while True: pass`, a second Python process) pinned to the search's
             core from the start: the scheduler gives each about half of it
    arrives  the same busy loop, started at the search's first episode: the proxy speed
             measured before the search ran alone, the search beside the loop (the case that
             made the old overhead ratio read 1.72 and 8.72 beside other jobs)

Per search: its wall time, its evaluations' own durations summed (`evals_s`), the overhead
ratio (the two divided, `Result.proxy_speed["overhead_ratio"]`, what a bench's speed summary
adds up), the ratio as it was computed before (wall time over episodes x one evaluation timed
before the search), and the proxy efficiency (the proxy's GFLOP/s over a 2048x2048 matmul's,
timed alternately round by round before the search). Then each loaded figure's relative
difference from the mean of the `alone` ones. A 2-episode search runs first, unreported (the
first search in a process pays one-off imports). The dense model comes from runs/pretrained/
(trained once if absent).
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

import torch

import rlprune

LOADS = ("alone", "loaded", "arrives")
FIGURES = ("overhead_ratio", "pre_measured_ratio", "proxy_efficiency")


def busy_loop(core: int) -> subprocess.Popen:
    """A CPU-bound process pinned to `core`."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    os.sched_setaffinity(proc.pid, {core})
    return proc


def one_search(dense, settings: dict, load: str, core: int) -> dict:
    proc = busy_loop(core) if load == "loaded" else None

    def callback(event) -> None:
        nonlocal proc
        if load == "arrives" and proc is None and event.kind == "episode":
            proc = busy_loop(core)

    try:
        result = rlprune.search(dense.model, dense.data, callback=callback, **settings)
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()
    sp, search_s = result.proxy_speed, result.timings["search"]
    return {"load": load, "search_s": search_s, "evals": sp["evals"], "evals_s": sp["evals_s"],
            "overhead_ratio": sp["overhead_ratio"],
            "pre_measured_ratio": search_s / (sp["evals"] * sp["proxy_eval_s"]),
            "proxy_eval_ms": 1000 * sp["proxy_eval_s"], "proxy_gflops": sp["proxy_gflops"],
            "matmul_gflops": sp["matmul_gflops"], "proxy_efficiency": sp["proxy_efficiency"],
            "rounds": sp["rounds"]}


def differences(rows: list[dict]) -> dict[str, dict[str, float]]:
    """Per load other than `alone` and figure: the mean relative difference from the mean of
    the `alone` searches, and the largest of any one search."""
    alone = {f: statistics.mean(r[f] for r in rows if r["load"] == "alone") for f in FIGURES}
    out = {}
    for load in LOADS[1:]:
        mine = [r for r in rows if r["load"] == load]
        out[load] = {f: {"mean": statistics.mean(r[f] for r in mine) / alone[f] - 1,
                         "worst": max(abs(r[f] / alone[f] - 1) for r in mine)}
                     for f in FIGURES}
    return out


def main(argv: list[str]) -> None:
    opts = dict(a.split("=", 1) for a in argv)
    core = int(opts.get("core", max(os.sched_getaffinity(0))))
    pairs = int(opts.get("pairs", 2))
    out = Path(opts.get("out", "runs/speed_under_load.json"))
    os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    config = rlprune.SearchConfig(model=opts.get("model", "vgg-mini"),
                                  dataset=opts.get("dataset", "mnist5k"))
    dense = rlprune.load_dense(config)
    settings = {"target": float(opts.get("target", 0.9)), "episodes": int(opts.get("episodes", 40)),
                "warmup": int(opts.get("warmup", 10)), "select_top_k": 0,
                "finetune_epochs": 0, "seed": 0,
                **({"fc_k": float(opts["fc_k"])} if "fc_k" in opts else {})}
    print(f"torch {torch.__version__}, 1 thread, core {core}; {config.model} on "
          f"{config.dataset}, {settings['episodes']} episodes")
    print("| load | search s | evals s | overhead ratio | pre-measured ratio | proxy ms | "
          "matmul GFLOP/s | proxy efficiency |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    # unreported: the first search in a process also imports torch._dynamo (SB3's Adam, ~6 s
    # here), which would fall on the first measured search's wall time alone
    one_search(dense, {**settings, "episodes": 2, "warmup": 2}, "alone", core)
    rows = []
    for _ in range(pairs):
        for load in LOADS:
            r = one_search(dense, settings, load, core)
            rows.append(r)
            print(f"| {load} | {r['search_s']:.1f} | {r['evals_s']:.1f} | "
                  f"{r['overhead_ratio']:.3f} | {r['pre_measured_ratio']:.3f} | "
                  f"{r['proxy_eval_ms']:.1f} | {r['matmul_gflops']:.1f} | "
                  f"{r['proxy_efficiency']:.3f} |", flush=True)
    diffs = differences(rows)
    print("\nRelative difference from the mean alone (mean over the searches; worst one):")
    for load, figures in diffs.items():
        print(f"  {load}: " + ", ".join(f"{f} {100 * d['mean']:+.1f}% ({100 * d['worst']:.1f}%)"
                                        for f, d in figures.items()))
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "core": core, "settings": settings,
                               "rows": rows, "differences": diffs}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main(sys.argv[1:])
