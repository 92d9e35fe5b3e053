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

from rlprune.models.errors import SettingError, UserError
from rlprune.service.jobs.files import read_json, write_json

RUNS_ROOT = Path("runs")
# the run's pruned model, in rlprune's own format (rlprune.load_model reads it); runs made
# before it had this name hold pruned.pt (weight runs: a torch.save'd state_dict; channel
# runs: a torch.export program), which readers still find through `Job.model_file`
MODEL_FILE = "pruned.rlprune"
OLD_MODEL_FILE = "pruned.pt"
INT8_FILE = "pruned.int8.rlprune"  # a search's int8 model (post-training quantized), to ship
STATES = ("running", "finished", "failed", "interrupted")
# what a run folder may hold before its job is made: its lock, and the event log of the
# set-up (the service's worker logs a pre-training there)
SETUP_FILES = (".lock", "events.jsonl")
# status.json fields that readers format, and the types they must have
STATUS_FIELDS = {"episodes_done": int, "episodes": int, "best_episode": int,
                 "best_reward": float, "achieved_sparsity": float, "target": float,
                 "method": str, "stage": str, "step": int, "steps": int}


class DamagedRun(UserError):
    """A run folder with a file that cannot be read (`rlprune list` shows it as damaged)."""


def read_mapping(path: Path) -> dict:
    """A JSON object from `path`; DamagedRun naming the file and what is wrong."""
    try:
        data = read_json(path)
    except FileNotFoundError:
        raise DamagedRun(f"{path} is missing") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        what = exc.strerror if isinstance(exc, OSError) else "not valid JSON"
        raise DamagedRun(f"{path} cannot be read ({what})") from None
    if not isinstance(data, dict):
        raise DamagedRun(f"{path} holds a {type(data).__name__}, not a JSON object")
    return data


def _check_status(path: Path, status: dict) -> dict:
    if status.get("state") not in STATES:
        raise DamagedRun(f"{path}: unknown state {status.get('state')!r}")
    for key, kind in STATUS_FIELDS.items():
        value = status.get(key)
        if value is not None and not _is(value, kind):
            raise DamagedRun(f"{path}: {key} is {value!r}, not a {kind.__name__}")
    return status


def _is(value: object, kind: type) -> bool:
    """`value` is of `kind` (int counts as float; a bool is neither)."""
    if isinstance(value, bool):
        return False
    return isinstance(value, int | float) if kind is float else isinstance(value, kind)


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
            if any(p.name not in SETUP_FILES for p in path.iterdir()):
                raise SettingError("run_dir", f"run folder {path} is not empty; choose "
                                   "another `run_dir` or `rlprune resume` it", lead=False)
        job = cls(path)
        job.acquire()
        if run_dir is not None and any(p.name not in SETUP_FILES for p in path.iterdir()):
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

    def _open_lock(self, flags: int) -> int:
        lock = self.path / ".lock"
        try:
            return os.open(lock, flags, 0o644)
        except OSError as exc:
            raise DamagedRun(f"{lock} cannot be opened as a lock file ({exc.strerror}); "
                             "remove it if no process uses the run") from None

    def acquire(self) -> None:
        fd = self._open_lock(os.O_RDWR | os.O_CREAT)
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
        if not lock.exists() and not lock.is_symlink():
            return False
        fd = self._open_lock(os.O_RDWR)
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

    @property
    def model_file(self) -> Path:
        """The run's pruned model: `pruned.rlprune`, or the `pruned.pt` of a run made before
        (the one place that knows both names; a job writes `MODEL_FILE`)."""
        new, old = self.path / MODEL_FILE, self.path / OLD_MODEL_FILE
        return old if old.is_file() and not new.is_file() else new

    def write_config(self, config: dict) -> None:
        write_json(self.path / "config.json", config)

    def config(self) -> dict:
        """config.json as a mapping (DamagedRun if it cannot be read)."""
        return read_mapping(self.path / "config.json")

    def write_status(self, state: str, **fields: object) -> None:
        if state not in STATES:
            raise ValueError(f"unknown job state {state!r}")
        status = {"state": state, "pid": os.getpid(), "host": socket.gethostname(),
                  "heartbeat": time.time(), **fields}
        write_json(self.path / "status.json", status)

    def status(self) -> dict:
        """status.json, checked (DamagedRun if it cannot be read), with the lock deciding
        `running`: a 'running' job whose process died reads interrupted, and a job whose
        status is not written yet reads running while its process holds the lock."""
        path = self.path / "status.json"
        running = self.is_running()
        if not path.exists() and not path.is_symlink():
            return {"state": "running" if running else "interrupted"}
        status = _check_status(path, read_mapping(path))
        if status["state"] == "running" and not running:
            status["state"] = "interrupted"
        return status


def list_jobs(root: Path = RUNS_ROOT) -> list[Job]:
    """The run folders under `root`: every folder with a config.json or a status.json (a
    damaged one included)."""
    if not root.is_dir():
        return []
    runs = [p for p in root.iterdir() if p.is_dir() and any(
        (p / name).exists() or (p / name).is_symlink() for name in ("config.json",
                                                                    "status.json"))]
    return sorted((Job(p) for p in runs), key=lambda j: j.path.name)
