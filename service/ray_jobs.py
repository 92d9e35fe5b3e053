"""rlprune's jobs on a Ray cluster: a bench's cells as Ray tasks, and the service's executor
whose jobs are Ray tasks (`rlprune serve --executor ray`).

Both need the run folders on a filesystem every node shares (a local Ray instance does).
Ray is imported only here, and only when asked for (`rlprune.agent.ray_workers`).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from rlprune.agent.config import SearchConfig
from rlprune.agent.ray_workers import connect, import_ray
from rlprune.models.dense import Dense
from rlprune.service.registry import JobRecord, Registry
from rlprune.service.scheduler import LocalExecutor, start_worker


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


# -- the service ------------------------------------------------------------------------------
def _job_task(request: str, log: str, stop: str, env: dict[str, str] | None) -> int:
    """A service job on a Ray node: the same worker process as the local executor's, stopped
    (SIGTERM: at its next episode boundary) once the `stop` file appears. Its exit code."""
    proc = start_worker(request, log, env)
    asked = False
    while proc.poll() is None:
        if not asked and os.path.exists(stop):
            proc.send_signal(signal.SIGTERM)
            asked = True
        time.sleep(0.2)
    return proc.returncode


class RayJob:
    """A running service job on Ray, as the executor sees a local worker process."""

    pid = None  # it runs on some node of the cluster

    def __init__(self, ray, ref, stop: Path):
        self.ray, self.ref, self.stop_file = ray, ref, stop
        self.code: int | None = None

    def poll(self) -> int | None:
        if self.code is None:
            ready, _ = self.ray.wait([self.ref], timeout=0)
            if ready:
                try:
                    self.code = self.ray.get(ready[0])
                except self.ray.exceptions.RayError:  # its node or worker died
                    self.code = -signal.SIGKILL
        return self.code

    def terminate(self) -> None:
        self.stop_file.touch()


class RayExecutor(LocalExecutor):
    """The local executor's queue, states, cancel and resume, with each job a Ray task (one
    CPU per env worker of its search) on the cluster at `address`."""

    def __init__(self, runs: Path, registry: Registry, *, address: str, **kwargs):
        super().__init__(runs, registry, **kwargs)
        self.ray = import_ray()
        self.started_ray = connect(address)
        self.task = self.ray.remote(max_retries=0)(_job_task)

    def stop(self) -> None:
        super().stop()
        if self.started_ray:
            self.ray.shutdown()

    def _spawn(self, job: JobRecord, request: Path, log: Path) -> RayJob:
        stop = request.with_suffix(".stop")
        stop.unlink(missing_ok=True)
        cpus = int((job.config or {}).get("workers", 1) or 1)
        ref = self.task.options(num_cpus=cpus).remote(str(request), str(log), str(stop),
                                                      self.env)
        return RayJob(self.ray, ref, stop)
