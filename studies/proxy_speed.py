"""The proxy evaluation, step by step, beside a matmul (docs/benchmarks.md "The proxy
evaluation").

    python docs/studies/proxy_speed.py [repeats=30] [out=docs/bench/proxy/steps.json]
        [channel_targets=0.3,0.5,0.7,0.8] [compile=0] [profile=0]

Weight mode: the default job's env (vgg-mini on mnist5k, 0.9), one allocation (an episode of
random actions), scored by each step in turn, every step applied on top of the one before:

    plain, batch 2048 (the path before issue 20) · plain, batch 128 · channels_last copy ·
    + BatchNorm folded · + batches side by side on the threads (the `fast` path)

Channel mode: at each FLOPs target, one allocation (an episode of zero actions), scored by
the masked `fast` path and by `slim` (rebuilt with the channels removed, every call).

The variants are timed round-robin (`repeats` rounds, median per variant) with a 2048x2048
fp32 matmul in every round, so machine noise hits them alike. GFLOP/s count 2 FLOPs per
multiply-add (fvcore counts 1) for the proxy and for the matmul. Each variant's score is
printed beside the plain one's. With compile=1, also `torch.compile` of the folded copy:
its compile time and its evaluation time. With profile=1, also `torch.profiler`'s table of
the fast path's val pass (5 passes), by operator and input shape.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from rlprune.agent.config import SearchConfig
from rlprune.env.episode import CALIBRATION_SEED
from rlprune.env.evaluate import ProxyEvaluator, proxy_score
from rlprune.env.fast_proxy import FastProxy
from rlprune.service.jobs.dense_loader import load_dense
from rlprune.service.jobs.lifecycle import JobRunner
from rlprune.service.jobs.measure import matmul_gflops


def env_after_episode(config: SearchConfig, actions):
    dense = load_dense(config)
    env = JobRunner(config, dense, "ddpg").env
    env.reset(seed=0)
    for a in actions(len(env.agent_layers)):
        env.step(np.array([a], dtype=np.float32))
    return env, dense


def scorer(env, proxy):
    c = env.config

    def score():
        rng = np.random.default_rng(CALIBRATION_SEED)
        if isinstance(proxy, ProxyEvaluator):
            return proxy_score(env.model, proxy, env.calibration,
                               batches=c.bn_recalibration_batches, batch_size=c.bn_batch_size,
                               rng=rng, dense_statistics=env._bn_state)
        return proxy.score(env.calibration, batches=c.bn_recalibration_batches,
                           batch_size=c.bn_batch_size, rng=rng)
    return score


def race(variants: dict, repeats: int) -> tuple[dict, float]:
    """Median seconds per variant and the matmul's median GFLOP/s, timed round-robin."""
    times = {k: [] for k in variants}
    matmul = []
    for f in variants.values():
        f()
    for _ in range(repeats):
        matmul.append(matmul_gflops(repeats=1))
        for name, f in variants.items():
            start = time.perf_counter()
            f()
            times[name].append(time.perf_counter() - start)
    return {k: float(np.median(v)) for k, v in times.items()}, float(np.median(matmul))


def rows_for(env, variants: dict, repeats: int, flops: dict, label: str) -> list[dict]:
    seconds, matmul = race(variants, repeats)
    reference = variants[next(iter(variants))]()
    rows = []
    for name, f in variants.items():
        acc, loss = f()
        gflops = flops[name] / seconds[name] / 1e9
        row = {"mode": label, "variant": name, "ms": 1000 * seconds[name], "gflops": gflops,
               "matmul_gflops": matmul, "efficiency": gflops / matmul,
               "proxy_accuracy": acc, "proxy_loss": loss,
               "loss_rel_diff": abs(loss - reference[1]) / reference[1]}
        rows.append(row)
        print(f"| {label} | {name} | {row['ms']:.1f} | {gflops:.1f} | {matmul:.0f} | "
              f"{row['efficiency']:.2f} | {acc:.3f} | {loss:.6f} |", flush=True)
    return rows


def main() -> None:
    opts = dict(a.split("=", 1) for a in sys.argv[1:])
    repeats = int(opts.get("repeats", "30"))
    out = Path(opts.get("out", "docs/bench/proxy/steps.json"))
    targets = [float(t) for t in opts.get("channel_targets", "0.3,0.5,0.7,0.8").split(",") if t]
    threads = torch.get_num_threads()
    print(f"torch {torch.__version__}, {threads} threads")
    print("| mode | variant | ms | GFLOP/s | matmul GFLOP/s | efficiency | val acc | val loss |")
    print("|---|---|---:|---:|---:|---:|---:|---:|")
    rng = np.random.default_rng(0)
    env, dense = env_after_episode(SearchConfig(), lambda n: rng.uniform(-1, 1, n))
    val, device = dense.data.val, env.device
    flops = env.proxy_flops()
    steps = {
        "plain, batch 2048": scorer(env, ProxyEvaluator(val, device, 2048)),
        "plain, batch 128": scorer(env, ProxyEvaluator(val, device, 128)),
        "channels_last copy": scorer(env, FastProxy(env.model, val, device, 128,
                                                    fold_bn=False)),
        "+ BatchNorm folded": scorer(env, FastProxy(env.model, val, device, 128)),
        f"+ batches side by side on {threads} threads (fast)": scorer(
            env, FastProxy(env.model, val, device, 128, threads=threads)),
    }
    rows = rows_for(env, steps, repeats, dict.fromkeys(steps, flops), "weight 0.9")
    if opts.get("profile") == "1":
        from torch.profiler import profile
        fast = FastProxy(env.model, val, device, 128)
        scorer(env, fast)()
        with profile(record_shapes=True) as prof:
            for _ in range(5):
                fast.evaluator.score(fast.folds.module)
        print(prof.key_averages(group_by_input_shape=True).table(
            sort_by="self_cpu_time_total", row_limit=25))
    if opts.get("compile") == "1":
        fast = FastProxy(env.model, val, device, 128)
        start = time.perf_counter()
        fast.folds.module = torch.compile(fast.folds.module)
        scorer(env, fast)()
        compile_s = time.perf_counter() - start
        compiled = rows_for(env, {"+ BatchNorm folded": scorer(env, FastProxy(
            env.model, val, device, 128)), "torch.compile of it": scorer(env, fast)},
            repeats, dict.fromkeys(["+ BatchNorm folded", "torch.compile of it"], flops),
            "weight 0.9")
        compiled[-1]["compile_s"] = compile_s
        print(f"torch.compile: {compile_s:.1f} s to compile")
        rows += compiled
    for target in targets:
        env, dense = env_after_episode(SearchConfig(granularity="channel", target=target),
                                       lambda n: np.zeros(n))
        masked = FastProxy(env.model, val, device, 128, threads=threads)
        slim = FastProxy(env.model, val, device, 128, threads=threads, slim=env._slim_copy)
        variants = {"plain, batch 2048": scorer(env, ProxyEvaluator(val, device, 2048)),
                    "fast (masked)": scorer(env, masked), "slim": scorer(env, slim)}
        slim_flops = env.proxy_flops()  # what the slimmed network computes
        dense_flops = slim_flops * env.graph.total["flops"] / env._computed_flops()
        rows += rows_for(env, variants, repeats,
                         {"plain, batch 2048": dense_flops, "fast (masked)": dense_flops,
                          "slim": slim_flops}, f"channel {target:g}")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"torch": torch.__version__, "threads": threads,
                               "repeats": repeats, "rows": rows}, indent=1) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
