"""What a user ships: size on disk and CPU latency of a model, measured side by side."""

from __future__ import annotations

import io
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch
from torch import nn

LATENCY_BATCHES = (1, 32)


def state_bytes(model: nn.Module) -> int:
    """Bytes of the model's state_dict as torch.save writes it (what a .pt of it weighs)."""
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.tell()


def run_times(run: Callable[[], object], *, warmup: int, repeats: int,
              budget_s: float = math.inf, least: int = 1) -> list[float]:
    """Seconds of each of up to `repeats` calls of `run` after `warmup` untimed ones; fewer
    where they would take more than `budget_s`, but at least `least`."""
    for _ in range(warmup):
        run()
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < repeats and (len(times) < least
                                    or time.perf_counter() - start < budget_s):
        t = time.perf_counter()
        run()
        times.append(time.perf_counter() - t)
    return times


@torch.inference_mode()
def latency_ms(model: nn.Module, input_shape: tuple[int, ...], batch: int, *,
               warmup: int = 3, repeats: int = 20, budget_s: float = 2.0) -> float:
    """Median wall time of one forward pass on the CPU, after warm-up (at most `repeats`
    runs, fewer where they would take more than `budget_s`)."""
    model.eval()
    tensor = next(iter([*model.parameters(), *model.buffers()]), None)
    x = torch.randn(batch, *input_shape, device="cpu" if tensor is None else tensor.device)
    times = run_times(lambda: model(x), warmup=warmup, repeats=repeats, budget_s=budget_s,
                      least=5)
    return 1000.0 * float(np.median(times))


def deployment(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Size (MB of the state_dict) and CPU latency (ms, batch 1 and 32) of both models,
    measured one after the other on the CPU, and the speedups."""
    dense, pruned = dense.cpu().eval(), pruned.cpu().eval()
    out: dict[str, Any] = {
        "size_mb": {"dense": state_bytes(dense) / 1e6, "pruned": state_bytes(pruned) / 1e6},
        "latency_ms": {}}
    for batch in LATENCY_BATCHES:
        d = latency_ms(dense, input_shape, batch)
        p = latency_ms(pruned, input_shape, batch)
        out["latency_ms"][f"batch{batch}"] = {"dense": d, "pruned": p, "speedup": d / p}
    return out


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """fp32 GFLOP/s of an n x n matmul on the CPU with torch's current threads (2n^3 FLOPs;
    median of `repeats` after one warm-up): what this machine computes at its best."""
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.rand(n, n, generator=generator) for _ in range(2))
    out = torch.empty(n, n)
    times = run_times(lambda: torch.mm(a, b, out=out), warmup=1, repeats=repeats)
    return 2 * n**3 / float(np.median(times)) / 1e9


def proxy_speed(env, repeats: int = 10, budget_s: float = 3.0) -> dict:
    """One reward computation as the env does it (`env.proxy_score()`: BatchNorm
    recalibration + val), timed beside a matmul: the mean of `repeats` after a warm-up, or of
    as many as fit in `budget_s` (at least 2), so a large model's search waits little for it.

    `proxy_gflops` is the evaluation's FLOPs (`env.proxy_flops()`, 2 per multiply-add)
    over its time, `proxy_efficiency` its ratio to `matmul_gflops`. The env's generator is put
    back afterwards, so timing changes nothing in the search."""
    saved = env.np_random.bit_generator.state
    seconds = float(np.mean(run_times(env.proxy_score, warmup=1, repeats=repeats,
                                      budget_s=budget_s, least=2)))
    env.np_random.bit_generator.state = saved
    gflops = env.proxy_flops() / seconds / 1e9
    matmul = matmul_gflops()
    return {"proxy_eval_s": seconds, "proxy_gflops": gflops, "matmul_gflops": matmul,
            "proxy_efficiency": gflops / matmul}
