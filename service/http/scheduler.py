"""The service's executor: runs queued jobs as worker processes, at most N at once, in
submission order, and keeps the registry's states true to what the workers did.

A job is `running` while its worker lives; when the worker ends its exit code decides:
finished, failed (with its last log line), or, for a stop, cancelled (when asked) or
interrupted. A worker that dies by a signal (killed alone, or with the whole service) leaves
the job interrupted, and with `auto_resume` it is queued again to continue from its last
checkpoint. On start-up, jobs the registry says were running are interrupted (their workers
died with the service) and resumed the same way; queued jobs stay queued.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

from rlprune.service.http.job_registry import JobRecord, Registry
from rlprune.service.http.warm_start import WarmStarter

TERMINAL = ("finished", "failed", "cancelled")
STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}
# a worker killed by one of these crashed (its own code, or a user's): the job failed; killed
# by any other signal it was stopped from outside and continues from its checkpoint
CRASH_SIGNALS = {signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


def start_worker(request: str | Path, log: str | Path,
                 env: dict[str, str] | None) -> subprocess.Popen:
    """A job's worker process (`python -m rlprune.service.http.worker REQUEST`), its output
    appended to `log`, in a session of its own."""
    # SIGTERM and SIGINT blocked in the child from its first instruction (a thread's signal
    # mask is inherited through fork and exec): a cancel during the worker's start-up waits
    # until the worker's handler is installed, and stops it cleanly instead of killing it
    blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        with open(log, "ab") as out:
            return subprocess.Popen([sys.executable, "-m", "rlprune.service.http.worker",
                                     str(request)], stdout=out, stderr=subprocess.STDOUT,
                                    env=env, start_new_session=True)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, blocked)


class RunningJob(Protocol):
    """A started job as the executor sees it: a worker process, or a Ray task (`RayJob`)."""

    @property
    def pid(self) -> int | None: ...

    def poll(self) -> int | None: ...

    def terminate(self) -> None: ...


class LocalExecutor:
    """Worker processes on this machine (`python -m rlprune.service.http.worker`), forked by
    a warm server (`warm_start`), or fresh interpreters with `warm_starts` False. Queued jobs
    wait while the warm server imports (at most WARM_WAIT_S, then fresh interpreters): a fresh
    one would pay the same imports beside it, on the same cores, and start no sooner."""

    WARM_WAIT_S = 60.0

    def __init__(self, runs: Path, registry: Registry, *, max_running: int = 2,
                 auto_resume: bool = True, poll_s: float = 0.2,
                 env: dict[str, str] | None = None, warm_starts: bool = True):
        self.runs, self.registry = Path(runs), registry
        self.max_running, self.auto_resume, self.poll_s = max_running, auto_resume, poll_s
        self.env, self.warm_starts = env, warm_starts
        self.workers: dict[str, RunningJob] = {}
        self.cancelling: set[str] = set()
        self._resumed_at: dict[str, object] = {}  # a job's progress at its last auto-resume
        self.peak_running = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._warm: WarmStarter | None = None
        self._warm_since = 0.0  # when the warm server was started
        for folder in (".requests", ".logs"):
            (self.runs / folder).mkdir(parents=True, exist_ok=True)

    # -- life ------------------------------------------------------------------------------
    def start(self) -> None:
        if self.warm_starts:
            self._start_warm()
        self.recover()
        self._thread = threading.Thread(target=self._loop, name="rlprune-executor",
                                        daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self._warm is not None:
            self._warm.close()

    def _start_warm(self) -> None:
        self._warm, self._warm_since = WarmStarter(self.env), time.monotonic()

    def worker_starts(self) -> str:
        """How the next job's worker starts: warm, warming (not ready yet) or fresh."""
        warm = self._warm
        if warm is None or not warm.alive():
            return "fresh"
        return "warm" if warm.ready else "warming"

    def recover(self) -> None:
        """Jobs left `running` by a service that died: their workers died with it."""
        for job in self.registry.in_state("running"):
            self._interrupted(job, "the service stopped while it ran")

    def _loop(self) -> None:
        while not self._stop.is_set():
            try:
                self.tick()
            except Exception as exc:  # the loop must outlive any one job's trouble
                print(f"rlprune service: executor: {type(exc).__name__}: {exc}",
                      file=sys.stderr, flush=True)
            self._stop.wait(self.poll_s)

    def tick(self) -> None:
        with self._lock:
            for job_id, proc in list(self.workers.items()):
                code = proc.poll()
                if code is not None:
                    del self.workers[job_id]
                    self._ended(job_id, code)
            free = self.max_running - len(self.workers)
            if (self.worker_starts() == "warming"
                    and time.monotonic() - self._warm_since < self.WARM_WAIT_S):
                free = 0  # queued until the warm server is ready
            for job in self.registry.in_state("queued")[:max(0, free)]:
                self._launch(job)
            self.peak_running = max(self.peak_running, len(self.workers))

    # -- one job ---------------------------------------------------------------------------
    def _launch(self, job: JobRecord) -> None:
        run = Path(job.run_dir)
        # a search or baseline resumes once its folder has its config; a bench keeps its
        # finished cells and continues the stopped one (run_bench's resume)
        resume = bool(job.resume) and (job.kind == "bench" or (run / "config.json").is_file())
        if not resume and run.exists() and job.kind != "bench":
            shutil.rmtree(run)  # a start that died before it wrote anything of use
        request = self.runs / ".requests" / f"{job.id}.json"
        request.write_text(json.dumps({"kind": job.kind, "config": job.config,
                                       "run_dir": str(run), "resume": resume}))
        if not self.registry.set_state(job.id, "running", expect=("queued",),
                                       started=time.time(), error=None):
            return  # no longer queued
        try:
            proc = self._spawn(job, request, self.runs / ".logs" / f"{job.id}.log")
        except Exception as exc:  # e.g. no process could be started: this job's failure
            self.registry.set_state(job.id, "failed", ended=time.time(),
                                    error=f"its worker could not start ({exc})")
            return
        self.workers[job.id] = proc
        self.registry.update(job.id, pid=proc.pid)

    def _spawn(self, job: JobRecord, request: Path, log: Path) -> RunningJob:
        """Start the job's worker; what it returns is polled for the exit code and
        terminate()d (SIGTERM) for a cancel."""
        if self._warm is not None and not self._warm.alive():
            self._start_warm()  # warm again for the jobs after this one
        elif self._warm is not None:
            try:
                return self._warm.spawn("rlprune.service.http.worker", [str(request)],
                                        cwd=os.getcwd(), out=log, err=log, append=True,
                                        blocked=True)
            except OSError:  # not warm after WARM_WAIT_S, or gone: a fresh interpreter
                pass
        return start_worker(request, log, self.env)

    def _ended(self, job_id: str, code: int) -> None:
        """The registry's state for a worker that exited with `code`."""
        job = self.registry.get(job_id)
        assert job is not None  # the registry never forgets a job
        cancelled = job_id in self.cancelling
        self.cancelling.discard(job_id)
        ended: dict[str, Any] = {"ended": time.time(), "pid": None}
        crashed = code < 0 and -code in CRASH_SIGNALS
        if code == 0:
            self.registry.set_state(job_id, "finished", **ended)
        elif cancelled and (code == 130 or code < 0):  # asked to stop: resumable
            self.registry.set_state(job_id, "cancelled", **ended)
        elif code == 130:  # stopped from outside, cleanly: left for a person to resume
            self.registry.set_state(job_id, "interrupted", **ended)
        elif code < 0 and not crashed:  # killed from outside: continue from its checkpoint
            self._interrupted(job, f"its worker was killed ({signal.Signals(-code).name})")
        elif crashed:
            self.registry.set_state(job_id, "failed", **ended, error=f"the worker crashed "
                                    f"({signal.Signals(-code).name}): {self._last_line(job_id)}")
        elif code != 2 and _run_state(job) == "running":
            # it vanished mid-run without writing its end (Ray ends a driver whose raylet died
            # with exit 1): its run folder is intact, so it continues from its checkpoint
            self._interrupted(job, f"its worker ended mid-run (exit code {code}): "
                                   f"{self._last_line(job_id)}")
        else:
            self.registry.set_state(job_id, "failed", **ended, error=self._last_line(job_id))

    def _interrupted(self, job: JobRecord, why: str) -> None:
        done = _run_progress(job)
        if self.auto_resume and self._resumed_at.get(job.id) == done:
            self.registry.set_state(job.id, "failed", pid=None, ended=time.time(),
                                    error=f"{why}; stopped again without progress since its "
                                          "last automatic resume, so it is not resumed again")
        elif self.auto_resume:
            self._resumed_at[job.id] = done
            self.registry.set_state(job.id, "queued", resume=1, pid=None, error=why)
        else:
            self.registry.set_state(job.id, "interrupted", pid=None, error=why,
                                    ended=time.time())

    def _last_line(self, job_id: str) -> str:
        """What the worker said last (its progress lines left out, but the last of them kept
        after it: where the job was when it ended)."""
        from rlprune.service.jobs.events import is_progress_line

        log = self.runs / ".logs" / f"{job_id}.log"
        lines = log.read_text(errors="replace").strip().splitlines() if log.is_file() else []
        said = [line for line in lines if not is_progress_line(line)]
        where = next((line for line in reversed(lines) if is_progress_line(line)), None)
        text = said[-1] if said else "the worker failed"
        return (text + (f" (last progress: {where})" if where else ""))[:500]

    # -- requests --------------------------------------------------------------------------
    def cancel(self, job: JobRecord) -> str:
        """Cancel: a queued job never starts, a running one stops at its next episode boundary
        (resumable). Returns the state it goes to."""
        with self._lock:
            if job.state == "queued" and self.registry.set_state(
                    job.id, "cancelled", expect=("queued",), ended=time.time()):
                return "cancelled"
            proc = self.workers.get(job.id)
            if proc is not None:
                self.cancelling.add(job.id)
                try:
                    proc.terminate()
                except ProcessLookupError:
                    pass
                return "cancelling"
        record = self.registry.get(job.id)
        assert record is not None  # the registry never forgets a job
        return record.state

    def resume(self, job: JobRecord) -> bool:
        return self.registry.set_state(job.id, "queued", expect=("interrupted", "cancelled"),
                                       resume=1, error=None)

    def running(self) -> int:
        with self._lock:
            return len(self.workers)


def _status(job: JobRecord) -> dict:
    """The run folder's status.json as written (not the lock's reading), or {}."""
    try:
        status = json.loads((Path(job.run_dir) / "status.json").read_text())
    except (OSError, ValueError):
        return {}
    return status if isinstance(status, dict) else {}


def _run_state(job: JobRecord) -> str | None:
    return _status(job).get("state")


def _run_progress(job: JobRecord) -> object:
    """How far the run got (episodes done, or its state for a job without episodes)."""
    status = _status(job)
    return status.get("episodes_done", status.get("state"))
