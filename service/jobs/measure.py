"""What a user ships: size on disk and CPU latency of a model, measured side by side."""

from __future__ import annotations

import io
import math
import os
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


def interleaved_ms(runners: dict[str, Callable[[np.ndarray], object]],
                   input_shape: tuple[int, ...], batches: tuple[int, ...] = LATENCY_BATCHES, *,
                   threads: int = 1, warmup: int = 2, rounds: int = 25,
                   budget_s: float = 20.0, conditions: dict | None = None
                   ) -> dict[str, dict[int, float]]:
    """Median milliseconds of one call of each runner (a function of a float32 batch) per
    batch size, the runners called in turn round by round so that a load that comes and goes
    on a shared machine hits them alike; at most `rounds` rounds per batch size, fewer where
    they would take more than `budget_s` (at least 5). PyTorch runs on `threads` threads (as
    ONNX Runtime sessions are opened) and is put back afterwards. `conditions`, if given, is
    filled with the machine's load and the repeats' spread (`machine_load`, `spread`):
    `spread` per batch size, the widest of the runners'."""
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    out: dict[str, dict[int, float]] = {name: {} for name in runners}
    load, others = machine_load(), _OtherWork()
    spreads: dict[str, float] = {}
    try:
        for batch in batches:
            times = _rounds(runners, np.random.default_rng(0).standard_normal(
                (batch, *input_shape), np.float32), warmup=warmup, rounds=rounds,
                budget_s=budget_s / len(batches))
            for name, seconds in times.items():
                out[name][batch] = 1000.0 * float(np.median(seconds))
            spreads[str(batch)] = max(spread(seconds) for seconds in times.values())
    finally:
        torch.set_num_threads(before)
    if conditions is not None:
        after = machine_load()
        conditions.update(load_1min=max(load["load_1min"], after["load_1min"]),
                          cpus=load["cpus"], spread=spreads)
        busy = others.cores()
        if busy is not None:
            conditions["others_cores"] = busy
    return out


def _rounds(runners: dict[str, Callable[[np.ndarray], object]], x: np.ndarray, *, warmup: int,
            rounds: int, budget_s: float) -> dict[str, list[float]]:
    """Seconds of each runner's calls on `x`, called in turn round by round."""
    for run in runners.values():
        for _ in range(warmup):
            run(x)
    times: dict[str, list[float]] = {name: [] for name in runners}
    first = times[next(iter(runners))]
    start = time.perf_counter()
    while len(first) < rounds and (len(first) < 5 or time.perf_counter() - start < budget_s):
        for name, run in runners.items():
            t = time.perf_counter()
            run(x)
            times[name].append(time.perf_counter() - t)
    return times


def machine_load() -> dict:
    """The 1-minute load average and the CPUs this process may run on, now."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        cpus = os.cpu_count() or 1
    return {"load_1min": os.getloadavg()[0], "cpus": cpus}


class _OtherWork:
    """How many cores other processes kept busy from now to `cores()`: the machine's busy CPU
    time (/proc/stat) less this process's own (its threads, ONNX Runtime's included), over
    the wall time. Unlike the load average, it does not count the job's own work before."""

    def __init__(self) -> None:
        self.start = self._now()

    @staticmethod
    def _now() -> tuple[float, float, float] | None:
        try:
            with open("/proc/stat") as fh:
                ticks = [int(v) for v in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None  # not Linux
        busy = (sum(ticks) - ticks[3] - (ticks[4] if len(ticks) > 4 else 0))
        own = os.times()
        return busy / os.sysconf("SC_CLK_TCK"), own.user + own.system, time.perf_counter()

    def cores(self) -> float | None:
        end = self._now()
        if self.start is None or end is None or end[2] <= self.start[2]:
            return None
        busy, own, wall = (b - a for a, b in zip(self.start, end))
        return max(0.0, busy - own) / wall


def spread(times: list[float]) -> float:
    """How far repeats of one measurement disagree: (p90 - p10) / median."""
    p10, median, p90 = np.percentile(times, [10, 50, 90])
    return float((p90 - p10) / median) if median > 0 else 0.0


def torch_runner(model: nn.Module) -> Callable[[np.ndarray], object]:
    """`model` (on the CPU, in the mode it is in: an int8 graph has no train/eval switch) as
    a function of a numpy batch, for `interleaved_ms`."""

    @torch.inference_mode()
    def run(x: np.ndarray) -> object:
        return model(torch.from_numpy(x))

    return run


def deployment(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...]) -> dict:
    """Size (MB of the state_dict) and CPU latency (ms, batch 1 and 32, on torch's current
    threads) of both models, timed interleaved round by round so that a load on the machine
    slows both alike, and the speedups; `conditions`: the machine's load and the repeats'
    spread while they were timed (`interleaved_ms`)."""
    dense, pruned = dense.cpu().eval(), pruned.cpu().eval()
    out: dict[str, Any] = {
        "size_mb": {"dense": state_bytes(dense) / 1e6, "pruned": state_bytes(pruned) / 1e6},
        "latency_ms": {}}
    conditions: dict = {}
    ms = interleaved_ms({"dense": torch_runner(dense), "pruned": torch_runner(pruned)},
                        input_shape, threads=torch.get_num_threads(), budget_s=8.0,
                        conditions=conditions)
    out["conditions"] = conditions
    for batch in LATENCY_BATCHES:
        d, p = ms["dense"][batch], ms["pruned"][batch]
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


MATMUL_N = 2048  # the reference: a 2048x2048 fp32 matmul, what this machine computes at its best
PANEL_ROWS = 128  # fewer rows of it run below the whole matmul's GFLOP/s (1 thread: 30 at 64)


def proxy_speed(env, repeats: int = 5, budget_s: float = 2.0, least: int = 3) -> dict:
    """One reward computation as the env does it (`env.proxy_score()`: BatchNorm
    recalibration + val) and a 2048x2048 fp32 matmul, timed alternately round by round so that
    a load that comes and goes (another job on the machine) slows both alike.

    A round: the proxy `m` times, then a panel of the matmul (its first `rows` rows, as fast
    per FLOP as the whole from 128 rows up), sized from the round before (the first from one
    call of each, which also warms them up) so that the two take about as long. Up to
    `repeats` rounds, fewer where they would take more than `budget_s`, but at least `least`.

    Reported is the round with the median ratio: `proxy_eval_s` (one evaluation),
    `proxy_gflops` (`env.proxy_flops()`, 2 per multiply-add, over that), `matmul_gflops`, and
    `proxy_efficiency` = `proxy_gflops / matmul_gflops`; `rounds` counts them. The env's
    generator is put back afterwards, so timing changes nothing in the search."""
    saved = env.np_random.bit_generator.state
    flops = env.proxy_flops()
    generator = torch.Generator().manual_seed(0)
    a, b = (torch.rand(MATMUL_N, MATMUL_N, generator=generator) for _ in range(2))
    out = torch.empty(MATMUL_N, MATMUL_N)

    def panel(rows: int) -> float:  # the matmul's GFLOP/s on its first `rows` rows
        start = time.perf_counter()
        torch.mm(a[:rows], b, out=out[:rows])
        return 2 * rows * MATMUL_N**2 / (time.perf_counter() - start) / 1e9

    start = time.perf_counter()
    proxy_s = run_times(env.proxy_score, warmup=0, repeats=1)[0]  # also the warm-up
    rate = panel(PANEL_ROWS)
    found: list[tuple[float, float, float]] = []  # (efficiency, proxy seconds, matmul GFLOP/s)
    while len(found) < repeats and (len(found) < least
                                    or time.perf_counter() - start < budget_s):
        rows = _panel_rows(proxy_s, rate)
        m = max(1, round(2 * rows * MATMUL_N**2 / (rate * 1e9) / proxy_s))
        proxy_s = float(np.sum(run_times(env.proxy_score, warmup=0, repeats=m))) / m
        rate = panel(rows)
        found.append((flops / proxy_s / 1e9 / rate, proxy_s, rate))
    env.np_random.bit_generator.state = saved
    _, seconds, matmul = sorted(found)[len(found) // 2]
    gflops = flops / seconds / 1e9
    return {"proxy_eval_s": seconds, "proxy_gflops": gflops, "matmul_gflops": matmul,
            "proxy_efficiency": gflops / matmul, "rounds": len(found)}


def _panel_rows(seconds: float, gflops: float) -> int:
    """Rows of the matmul (a multiple of PANEL_ROWS, at most all) that take about `seconds`."""
    rows = PANEL_ROWS * round(seconds * gflops * 1e9 / (2 * MATMUL_N**2) / PANEL_ROWS)
    return int(min(MATMUL_N, max(PANEL_ROWS, rows)))


def in_search(search_s: float, evals_s: list[float]) -> dict:
    """A search's own evaluations against its wall time, both taken in the same run:
    `evals` (count), `evals_s` (their durations summed) and `overhead_ratio` (search wall time
    over that; None without evaluations). A load on the machine slows both alike."""
    total = float(sum(evals_s))
    return {"evals": len(evals_s), "evals_s": total,
            "overhead_ratio": search_s / total if total > 0 else None}
