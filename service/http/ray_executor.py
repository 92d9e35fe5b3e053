"""The service's executor whose jobs are Ray tasks (`rlprune serve --executor ray`).

It needs the run folders on a filesystem every node shares (a local Ray instance does).
Ray is imported only here, and only when asked for (`rlprune.agent.ray_workers`).
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from rlprune.agent.ray_workers import connect, import_ray
from rlprune.service.http.job_registry import JobRecord, Registry
from rlprune.service.http.scheduler import LocalExecutor, start_worker


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
        self.warm_starts = False  # its workers start on Ray's nodes
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
