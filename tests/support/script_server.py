"""A fork server for scripts: `python SCRIPT ARGS` (or `python -m MODULE ARGS`) run in a child
forked from one process that has paid torch's and rlprune's imports once.

The studies' smoke tests run about twenty scripts; each cold start costs 4-6 s of imports on
a two-core machine, a forked one a few milliseconds. A child is a real process: it runs the
script as `__main__` with the script's folder first on `sys.path` (as `python SCRIPT` does),
in its own working folder, its output in files, and exits with the script's exit code.

Run the server as a script (`python tests/support/script_server.py`), so nothing of tests/
lands on its children's path; requests are JSON lines on stdin ({"id", "argv", "cwd", "out",
"err"}), answers JSON lines on stdout ({"ready"}, {"id", "pid"}, {"pid", "code", "cpu"}: the
child's CPU seconds, its own processes' included once it has waited for them).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

# what the children would import each time (seconds each); imported once, before they fork
WARM = ("numpy", "torch", "rlprune", "rlprune.service.cli.main", "rlprune.service.cli.commands",
        "rlprune.service.cli.console", "rlprune.service.bench.runner",
        "rlprune.service.bench.report", "matplotlib.pyplot",
        "torch.utils.tensorboard", "stable_baselines3", "gymnasium")


def serve() -> None:
    import importlib
    import runpy  # noqa: F401  (what the children use, imported before they fork)

    import matplotlib

    matplotlib.use("Agg")
    for module in WARM:
        importlib.import_module(module)
    import torch

    import rlprune

    for name in rlprune.__all__:
        getattr(rlprune, name)  # the lazy exports, imported now
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo
    out, lock = sys.stdout, threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            out.write(json.dumps(msg) + "\n")
            out.flush()

    def reap() -> None:
        while True:
            try:
                pid, status, usage = os.wait4(-1, 0)
            except ChildProcessError:
                time.sleep(0.01)
                continue
            send({"pid": pid, "code": os.waitstatus_to_exitcode(status),
                  "cpu": usage.ru_utime + usage.ru_stime})

    threading.Thread(target=reap, daemon=True).start()
    send({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        with lock:  # never fork while the reaper is writing
            pid = os.fork()
        if pid == 0:
            _child(request)
        send({"id": request["id"], "pid": pid})


def _child(request: dict) -> None:
    import runpy

    from rlprune.service.http.warm_start import redirect, run_and_exit

    def body() -> int:
        os.setsid()
        os.chdir(request["cwd"])
        redirect(request["out"], request["err"])
        argv = request["argv"]
        if argv[0] == "-m":
            sys.argv = argv[1:]
            sys.path[0] = os.getcwd()
            runpy.run_module(argv[1], run_name="__main__", alter_sys=True)
        else:
            sys.argv = list(argv)
            sys.path[0] = str(Path(argv[0]).resolve().parent)
            runpy.run_path(argv[0], run_name="__main__")
        return 0

    run_and_exit(body)


@dataclass
class Done:
    argv: list[str]
    code: int
    out: str
    err: str
    seconds: float  # wall time, from the fork to the exit
    cpu: float  # CPU seconds
    ended: float  # time.perf_counter() when its exit was seen


class ScriptServer:
    """The test side: start the server, run scripts in it, close it."""

    def __init__(self, logs: Path, env: dict[str, str], timeout: float = 120.0):
        self.logs, self.timeout = logs, timeout
        self.pids: dict[int, int] = {}
        self.codes: dict[int, int] = {}
        self.cpu: dict[int, float] = {}
        self.changed = threading.Condition()
        self.ready = False
        self._next = 0
        self.proc = subprocess.Popen([sys.executable, __file__], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     start_new_session=True)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self.changed:
                if "ready" in msg:
                    self.ready = True
                elif "id" in msg:
                    self.pids[msg["id"]] = msg["pid"]
                else:
                    self.codes[msg["pid"]] = msg["code"]
                    self.cpu[msg["pid"]] = msg["cpu"]
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def _wait_for(self, predicate, what: str):
        with self.changed:
            if not self.changed.wait_for(lambda: predicate() or self.proc.poll() is not None,
                                         self.timeout):
                raise AssertionError(f"script server: {what} took over {self.timeout} s")
            if not predicate():
                raise AssertionError(f"script server died ({self.proc.returncode}) waiting "
                                     f"for {what}")
            return predicate()

    def start(self, cwd: Path, *argv: str) -> tuple[int, list[str], float]:
        """Fork `python ARGV` in `cwd`; the handle for `finish`."""
        self._wait_for(lambda: self.ready, "start-up")
        self._next += 1
        rid = self._next
        request = {"id": rid, "argv": list(argv), "cwd": str(cwd),
                   "out": str(self.logs / f"{rid}.out"), "err": str(self.logs / f"{rid}.err")}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        self._wait_for(lambda: self.pids.get(rid), "a fork")
        return rid, list(argv), time.perf_counter()

    def finish(self, handle: tuple[int, list[str], float]) -> Done:
        rid, argv, started = handle
        pid = self.pids[rid]
        try:
            self._wait_for(lambda: pid in self.codes, " ".join(argv))
        except AssertionError:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            raise
        return Done(argv, self.codes[pid], (self.logs / f"{rid}.out").read_text(),
                    (self.logs / f"{rid}.err").read_text(), time.perf_counter() - started,
                    self.cpu[pid], time.perf_counter())

    def run(self, cwd: Path, *argv: str) -> Done:
        return self.finish(self.start(cwd, *argv))

    def wait_any(self, handles: list[tuple[int, list[str], float]]) -> None:
        """Until one of the started `handles` has exited."""
        pids = [self.pids[rid] for rid, _, _ in handles]
        self._wait_for(lambda: any(pid in self.codes for pid in pids),
                       " or ".join(" ".join(argv) for _, argv, _ in handles))

    def exited(self, handle: tuple[int, list[str], float]) -> bool:
        with self.changed:
            return self.pids[handle[0]] in self.codes

    def close(self) -> None:
        """Stop the server; children still running (a test stopped early) are killed with
        their process groups (each child leads its own session)."""
        with self.changed:
            running = [pid for pid in self.pids.values() if pid not in self.codes]
        for pid in running:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@dataclass
class Job:
    """A script's command line (or a function of the working folder that makes it when the
    job starts) and the jobs whose outputs it reads: it starts once they have exited 0."""

    argv: list[str] | Callable[[Path], list[str]]
    after: tuple[str, ...] = ()
    cold: bool = False
    """Run as a plain `python ARGV` at once, beside the server's start-up and outside its
    slots (a long job that waits mostly on processes of its own); `argv` a list, no `after`."""


class Batch:
    """Jobs run in the server in `cwd`, at most `parallel` at a time, in the order given as
    their `after` jobs allow (cold jobs at once, as processes of their own); `result(name)`
    waits for one."""

    def __init__(self, server: ScriptServer, cwd: Path, jobs: dict[str, Job], env: dict,
                 parallel: int = 2):
        self.server, self.cwd, self.parallel = server, cwd, parallel
        self.jobs = {name: job for name, job in jobs.items() if not job.cold}
        self.results: dict[str, Done | str] = {}  # a str: why the job did not run
        self.done = threading.Condition()
        self.cold: list[subprocess.Popen] = []
        for name, job in jobs.items():
            if job.cold:
                self.cold.append(self._start_cold(name, job.argv, env))
        threading.Thread(target=self._run, daemon=True).start()

    def _start_cold(self, name: str, argv: list[str], env: dict) -> subprocess.Popen:
        logs = self.server.logs
        with open(logs / f"{name}.out", "wb") as out, open(logs / f"{name}.err", "wb") as err:
            proc = subprocess.Popen([sys.executable, *argv], cwd=self.cwd, env=env, stdout=out,
                                    stderr=err, start_new_session=True)
        started = time.perf_counter()

        def reap() -> None:
            _, status, usage = os.wait4(proc.pid, 0)
            proc.returncode = os.waitstatus_to_exitcode(status)
            self._settle(name, Done(argv, proc.returncode, (logs / f"{name}.out").read_text(),
                                    (logs / f"{name}.err").read_text(),
                                    time.perf_counter() - started,
                                    usage.ru_utime + usage.ru_stime, time.perf_counter()))

        threading.Thread(target=reap, daemon=True).start()
        return proc

    def close(self) -> None:
        """Kill the cold jobs still running, with their process groups."""
        for proc in self.cold:
            if proc.returncode is None:
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def _settle(self, name: str, result: Done | str) -> None:
        with self.done:
            self.results[name] = result
            self.done.notify_all()

    def _blocked(self, job: Job) -> list[str]:
        return [d for d in job.after if d in self.results and not (
            isinstance(self.results[d], Done) and self.results[d].code == 0)]

    def _run(self) -> None:
        pending, running = dict(self.jobs), {}
        try:
            while pending or running:
                for name, job in list(pending.items()):
                    if len(running) >= self.parallel:
                        break
                    if self._blocked(job):
                        del pending[name]
                        self._settle(name, f"not run: {', '.join(self._blocked(job))} failed")
                    elif all(d in self.results for d in job.after):
                        del pending[name]
                        try:
                            argv = job.argv(self.cwd) if callable(job.argv) else job.argv
                        except Exception as exc:  # its inputs are not what it expects
                            self._settle(name, f"no command line: {type(exc).__name__}: {exc}")
                            continue
                        running[name] = self.server.start(self.cwd, *argv)
                if running:
                    self.server.wait_any(list(running.values()))
                    for name, handle in list(running.items()):
                        if self.server.exited(handle):
                            self._settle(name, self.server.finish(running.pop(name)))
        except BaseException as exc:  # told to every test that waits for one of them
            for name in [*pending, *running]:
                self._settle(name, f"not run: {type(exc).__name__}: {exc}")

    def result(self, name: str, timeout: float = 300.0) -> Done:
        with self.done:
            if not self.done.wait_for(lambda: name in self.results, timeout):
                raise AssertionError(f"{name} did not finish within {timeout} s")
        result = self.results[name]
        if isinstance(result, str):
            raise AssertionError(f"{name}: {result}")
        return result


if __name__ == "__main__":
    serve()
