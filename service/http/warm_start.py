"""Warm starts: a process that has done a job's imports once forks each job's worker.

Every fresh `python -m rlprune.service.http.worker` pays about six CPU-seconds of imports
(torch, stable-baselines3, matplotlib, torch._dynamo on the first optimizer) before its job
does anything. The warm server (`python -m rlprune.service.http.warm_start`, started by the
service) pays them once and forks one child per request; a job starts in a few milliseconds.
It imports none of the user's code: each child imports what its job names, as a fresh worker
would.

Protocol, one JSON object per line. Requests on the server's stdin: {"id", "main", "argv",
"cwd", "out", "err", "append", "blocked"}: the child runs `main(argv)` of the module named
`main` (one of rlprune's), its stdout and stderr go to the files `out` and `err` (appended to
or truncated), its stdin is /dev/null, it has a session of its own and exits with main's
return code. With `blocked` SIGTERM and SIGINT stay blocked until main unblocks them (as the
worker does once its handlers are in place, so a cancel during its start-up stops it
cleanly). Replies on stdout: {"ready": true} once warm, {"id", "pid"} when forked, {"id",
"code"} when reaped (code as subprocess reports it: negative for a signal). The server dies
with its parent (PR_SET_PDEATHSIG) and ends when its stdin closes; a worker dies with the
server.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

STOP_SIGNALS = {signal.SIGTERM, signal.SIGINT}


def _warm_up() -> None:
    """The imports every job makes, made once here (no threads started, no user code)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot  # noqa: F401
    import stable_baselines3  # noqa: F401
    import torch
    import torch.utils.tensorboard  # noqa: F401

    import rlprune.service.http.worker  # noqa: F401
    import rlprune.service.jobs.dense_loader  # noqa: F401
    import rlprune.service.jobs.lifecycle  # noqa: F401
    import rlprune.service.jobs.resume  # noqa: F401

    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo


def serve() -> None:
    """The server's main loop (see the module's docstring)."""
    from rlprune.service.http.worker import die_with_parent

    die_with_parent()
    _warm_up()
    out, lock = sys.stdout, threading.Lock()
    ids: dict[int, int] = {}  # pid -> request id, for the reaper

    def send(msg: dict) -> None:
        out.write(json.dumps(msg) + "\n")
        out.flush()

    def reap() -> None:
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                threading.Event().wait(0.05)
                continue
            with lock:
                send({"id": ids.pop(pid), "code": os.waitstatus_to_exitcode(status)})

    threading.Thread(target=reap, daemon=True).start()
    with lock:
        send({"ready": True})
    for line in sys.stdin:
        request = json.loads(line)
        # Fork with the stop signals blocked (the child inherits the mask) and with the lock
        # held (the reaper never writes, nor looks a pid up, while a child is being made).
        with lock:
            blocked = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
            pid = os.fork()
            if pid == 0:
                _child(request)
            signal.pthread_sigmask(signal.SIG_SETMASK, blocked)
            ids[pid] = request["id"]
            send({"id": request["id"], "pid": pid})


def _child(request: dict) -> None:
    def body() -> int:
        os.setsid()
        os.chdir(request["cwd"])
        redirect(request["out"], request["err"], append=bool(request.get("append")))
        if not request.get("blocked"):
            signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
        if not request["main"].startswith("rlprune."):
            raise ValueError(f"not one of rlprune's modules: {request['main']}")
        return importlib.import_module(request["main"]).main(list(request["argv"]))

    run_and_exit(body)


def redirect(out: str, err: str, *, append: bool = False) -> None:
    """A forked child's stdout and stderr into the files `out` and `err` (one file if they
    are the same, as subprocess's stderr=STDOUT), its stdin from /dev/null."""
    mode = os.O_WRONLY | os.O_CREAT | (os.O_APPEND if append else os.O_TRUNC)
    for fd, name in ((1, out), (2, err)):
        if fd == 2 and err == out:
            os.dup2(1, 2)
            continue
        target = os.open(name, mode, 0o644)
        os.dup2(target, fd)
        os.close(target)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    # fresh objects: the server's hold its pipe, and a lock another thread may have held
    sys.stdin = open(0, closefd=False)
    sys.stdout = open(1, "w", closefd=False)
    sys.stderr = open(2, "w", closefd=False)


def run_and_exit(body: Callable[[], int | None]) -> NoReturn:
    """Run a forked child's `body` and end the process with its code as the interpreter
    would (SystemExit's code: None is 0, text is printed and 1; an exception's traceback and
    1), its output flushed, without running the parent's exit handlers."""
    code = 1
    try:
        code = body() or 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        if not isinstance(exc.code, int | None):
            print(exc.code, file=sys.stderr)
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


class WarmChild:
    """A forked process, with the parts of `subprocess.Popen` the executor uses."""

    def __init__(self, starter: WarmStarter, rid: int, pid: int):
        self.starter, self.rid, self.pid = starter, rid, pid

    @property
    def returncode(self) -> int | None:
        return self.starter.codes.get(self.rid)

    def poll(self) -> int | None:
        return self.returncode

    def send_signal(self, signum: int) -> None:
        if self.poll() is None:  # never a signal to a pid the system may have reused
            os.kill(self.pid, signum)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def wait(self, timeout: float | None = None) -> int:
        if not self.starter.wait_for(lambda: self.rid in self.starter.codes, timeout):
            raise subprocess.TimeoutExpired(f"warm child {self.pid}", timeout or 0)
        return self.starter.codes[self.rid]


class WarmStarter:
    """The client side: starts the warm server and forks children through it.

    :param env: the server's environment (its children inherit it); None: this process's
    """

    def __init__(self, env: dict[str, str] | None = None):
        self.codes: dict[int, int] = {}
        self._pids: dict[int, int] = {}
        self._next = 0
        self.ready = False
        self.changed = threading.Condition()
        self.proc = subprocess.Popen([sys.executable, "-m", "rlprune.service.http.warm_start"],
                                     env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, start_new_session=True)
        threading.Thread(target=self._read, name="rlprune-warm-start", daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            msg = json.loads(line)
            with self.changed:
                if "ready" in msg:
                    self.ready = True
                elif "pid" in msg:
                    self._pids[msg["id"]] = msg["pid"]
                else:
                    self.codes[msg["id"]] = msg["code"]
                self.changed.notify_all()
        with self.changed:
            self.ready = False
            self.changed.notify_all()

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_for(self, predicate, timeout: float | None) -> bool:
        """Wait until `predicate()` holds or the server ends; whether it holds."""
        with self.changed:
            self.changed.wait_for(lambda: predicate() or self.proc.poll() is not None, timeout)
            return bool(predicate())

    def spawn(self, main: str, argv: list[str], *, cwd: str | Path, out: str | Path,
              err: str | Path, append: bool = False, blocked: bool = False,
              timeout: float = 30.0) -> WarmChild:
        """Fork a child running `main(argv)` of the module named `main` (see the module's
        docstring). Raises OSError if the server is not warm (not yet, or no longer): the
        caller starts a fresh process instead."""
        with self.changed:
            if not self.ready or self.proc.poll() is not None:
                raise OSError("the warm server is not ready")
            self._next += 1
            rid = self._next
        request = {"id": rid, "main": main, "argv": list(argv), "cwd": str(cwd),
                   "out": str(out), "err": str(err), "append": append, "blocked": blocked}
        assert self.proc.stdin is not None
        try:
            self.proc.stdin.write(json.dumps(request) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError) as exc:
            raise OSError(f"the warm server is gone ({exc})") from None
        if not self.wait_for(lambda: rid in self._pids, timeout):
            raise OSError("the warm server did not fork within "
                          f"{timeout:g} s")
        return WarmChild(self, rid, self._pids[rid])

    def close(self) -> None:
        with contextlib.suppress(Exception):
            assert self.proc.stdin is not None
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


if __name__ == "__main__":
    serve()
