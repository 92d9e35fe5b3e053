"""A bench's cells as Ray tasks (`rlprune bench --ray-address ADDR`).

It needs the run folders on a filesystem every node shares (a local Ray instance does).
Ray is imported only here, and only when asked for (`rlprune.agent.ray_workers`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from rlprune.agent.config import SearchConfig
from rlprune.agent.ray_workers import connect, import_ray
from rlprune.models.dense import Dense


def _cell_task(run_cell: Callable, method: str, config: SearchConfig, dense: Dense,
               run_dir: Path):
    import torch

    torch.set_num_threads(max(1, config.workers))  # the CPUs the task asked for
    return run_cell(method, config, dense, run_dir)


def run_cells_on_ray(cells: list[tuple[str, SearchConfig, Path]], dense: Dense,
                     base: SearchConfig, run_cell: Callable[..., tuple[dict, dict | None]],
                     done: Callable[[dict, dict | None], None]) -> None:
    """`run_cell(method, config, dense, run_dir)` of every cell as a Ray task (one CPU per
    env worker, `gpus_per_worker` GPUs) on the cluster at `base.ray_address`; `done(row,
    speed)` as each finishes. ^C cancels the rest (a cancelled search stays resumable:
    `rlprune bench --resume`)."""
    ray = import_ray()
    assert base.ray_address is not None  # run_bench comes here only with an address
    started = connect(base.ray_address)
    try:
        task = ray.remote(num_cpus=base.workers, num_gpus=base.gpus_per_worker,
                          max_retries=0)(_cell_task)
        shared = ray.put(dense)
        pending = [task.remote(run_cell, m, c, shared, run_dir) for m, c, run_dir in cells]
        try:
            while pending:
                ready, pending = ray.wait(pending, num_returns=1)
                done(*ray.get(ready[0]))
        except BaseException:
            for ref in pending:
                ray.cancel(ref)
            raise
    finally:
        if started:
            ray.shutdown()
