"""Run folders and job state: the one place that creates `runs/<job-id>/` and writes status.

A job holds an exclusive `flock` on `RUN/.lock` for as long as its process lives; the kernel
drops it when the process dies, even by SIGKILL. So "running" is decided by the lock, not by
status.json, and a job whose process died shows as interrupted.
"""

from __future__ import annotations

import fcntl
import os
import re
import socket
import time
from dataclasses import dataclass, field
from pathlib import Path

from rlprune.models.errors import UserError
from rlprune.service.files import read_json, write_json

RUNS_ROOT = Path("runs")
STATES = ("running", "finished", "failed", "interrupted")


def new_job_id(model: str, dataset: str, target: float) -> str:
    stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{model}-{dataset}-{target:g}")
    return f"{stem}-{time.strftime('%Y%m%d-%H%M%S')}"


@dataclass
class Job:
    path: Path
    _lock_fd: int | None = field(default=None, repr=False)

    # -- creation and locking ----------------------------------------------------------
    @classmethod
    def create(cls, run_dir: str | Path | None, job_id: str) -> Job:
        """A new, empty run folder; refuses one that exists and is not empty."""
        if run_dir is None:
            RUNS_ROOT.mkdir(parents=True, exist_ok=True)
            for i in range(100):
                path = RUNS_ROOT / (job_id if i == 0 else f"{job_id}-{i}")
                try:
                    path.mkdir()
                    break
                except FileExistsError:
                    continue
            else:
                raise UserError(f"cannot find a free run folder name for {job_id}")
        else:
            path = Path(run_dir)
            path.mkdir(parents=True, exist_ok=True)
            if any(p.name != ".lock" for p in path.iterdir()):
                raise UserError(f"run folder {path} is not empty; choose another --run-dir "
                                "or `rlprune resume` it")
        job = cls(path)
        job.acquire()
        if run_dir is not None and any(p.name != ".lock" for p in path.iterdir()):
            job.release()  # another job filled it between our check and our lock
            raise UserError(f"run folder {path} is in use by another job")
        (path / "checkpoints").mkdir(exist_ok=True)
        return job

    @classmethod
    def open(cls, run: str | Path) -> Job:
        path = Path(run)
        if not path.is_dir() and (RUNS_ROOT / str(run)).is_dir():
            path = RUNS_ROOT / str(run)
        if not (path / "config.json").is_file():
            raise UserError(f"no run at {run} (expected a folder with config.json)")
        return cls(path)

    def acquire(self) -> None:
        fd = os.open(self.path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            msg = f"run {self.path} is already running (another process holds it)"
            raise UserError(msg) from None
        self._lock_fd = fd

    def release(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)
            self._lock_fd = None

    def __enter__(self) -> Job:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    def is_running(self) -> bool:
        """True if some process holds the run's lock (this one included)."""
        if self._lock_fd is not None:
            return True
        lock = self.path / ".lock"
        if not lock.exists():
            return False
        fd = os.open(lock, os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)
        return False

    # -- files -------------------------------------------------------------------------
    @property
    def checkpoints(self) -> Path:
        return self.path / "checkpoints"

    @property
    def tb(self) -> Path:
        return self.path / "tb"

    def write_config(self, config: dict) -> None:
        write_json(self.path / "config.json", config)

    def config(self) -> dict:
        return read_json(self.path / "config.json")

    def write_status(self, state: str, **fields: object) -> None:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        status = {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
                  "heartbeat": time.time(), **fields}
        write_json(self.path / "status.json", status)

    def status(self) -> dict:
        """status.json, with a dead 'running' job reported as interrupted."""
        path = self.path / "status.json"
        status = read_json(path) if path.is_file() else {"state": "interrupted"}
        if status.get("state") == "running" and not self.is_running():
            status["state"] = "interrupted"
        return status


def list_jobs(root: Path = RUNS_ROOT) -> list[Job]:
    if not root.is_dir():
        return []
    return sorted((Job(p) for p in root.iterdir() if (p / "config.json").is_file()),
                  key=lambda j: j.path.name)
