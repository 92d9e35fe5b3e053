"""A fork server: `rlprune` processes without paying the imports each time."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from support.assets import PROCESS_TIMEOUT, Assets
from support.runners import Done


def serve() -> None:
    """Fork server, run as `python -c "from support.forkserver import serve; serve()"`.

    Every `rlprune` process pays seconds of imports (torch, stable-baselines3, fvcore,
    matplotlib, torch._dynamo on the first optimizer). This process pays them once, then forks
    one child per request line on stdin ({"id", "argv", "cwd", "out", "err"}); each child runs
    `rlprune.service.cli.main(argv)` in its own session with stdout/stderr sent to the named
    files and exits with its return code. Replies on stdout: {"id", "pid"} when forked,
    {"pid", "code"}
    when reaped (code as subprocess reports it: negative for a signal).
    """
    import threading

    import rlprune.models.data
    import rlprune.service.cli.commands
    import rlprune.service.cli.console
    import rlprune.service.cli.main
    import rlprune.service.jobs.dense_loader
    import rlprune.service.jobs.lifecycle  # noqa: F401  (the point is to import them)

    rlprune.models.data.load_dataset("digits")  # reads its file once; no threads
    torch.optim.Adam([torch.zeros(1, requires_grad=True)])  # imports torch._dynamo
    out, lock = sys.stdout, threading.Lock()

    def send(msg: dict) -> None:
        with lock:
            out.write(json.dumps(msg) + "\n")
            out.flush()

    def reap() -> None:
        while True:
            try:
                pid, status = os.wait()
            except ChildProcessError:
                time.sleep(0.01)
                continue
            send({"pid": pid, "code": os.waitstatus_to_exitcode(status)})

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
    code = 1
    try:
        os.setsid()
        os.chdir(request["cwd"])
        for fd, name in ((1, "out"), (2, "err")):
            target = os.open(request[name], os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
            os.dup2(target, fd)
            os.close(target)
        sys.stdout = open(1, "w", closefd=False)  # fresh objects: no lock held by another
        sys.stderr = open(2, "w", closefd=False)  # thread of the server
        sys.stdin = open(os.devnull)
        from rlprune.service.cli.main import main

        code = main(request["argv"])
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code or 0)


class Child:
    """A forked `rlprune` process, with the parts of Popen the tests use."""

    def __init__(self, server: ForkServer, pid: int, argv: list[str], out: Path, err: Path):
        self.server, self.pid, self.args, self.out, self.err = server, pid, argv, out, err

    @property
    def returncode(self) -> int | None:
        return self.server.codes.get(self.pid)

    def poll(self) -> int | None:
        return self.returncode

    def kill(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)

    def stderr_text(self) -> str:
        return self.err.read_text() if self.err.exists() else ""


class ForkServer:
    def __init__(self, assets: Assets, logs: Path):
        import threading

        self.logs, self.codes, self.pids = logs, {}, {}
        self.changed = threading.Condition()
        env = assets.env()
        env["PYTHONPATH"] += os.pathsep + str(Path(__file__).resolve().parent.parent)
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from support.forkserver import serve; serve()"],
            env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
            start_new_session=True)
        self.ready = False
        threading.Thread(target=self._read, daemon=True).start()
        self._next = 0

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
                self.changed.notify_all()
        with self.changed:
            self.changed.notify_all()

    def _wait_for(self, predicate, timeout: float, what: str):
        with self.changed:
            if not self.changed.wait_for(lambda: predicate() or self.proc.poll() is not None,
                                         timeout):
                pytest.fail(f"fork server: {what} took over {timeout}s")
            if not predicate():
                pytest.fail(f"fork server died ({self.proc.returncode}) waiting for {what}")
            return predicate()

    def spawn(self, cwd: Path, *argv: str) -> Child:
        self._wait_for(lambda: self.ready, PROCESS_TIMEOUT, "start-up")
        self._next += 1
        rid = self._next
        out, err = self.logs / f"{rid}.out", self.logs / f"{rid}.err"
        request = {"id": rid, "argv": list(argv), "cwd": str(cwd), "out": str(out),
                   "err": str(err)}
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        pid = self._wait_for(lambda: self.pids.get(rid), 30.0, "a fork")
        return Child(self, pid, list(argv), out, err)

    def finish(self, child: Child, timeout: float = PROCESS_TIMEOUT) -> Done:
        try:
            self._wait_for(lambda: child.pid in self.codes, timeout, f"{child.args}")
        except BaseException:
            child.kill()
            raise
        return Done(tuple(child.args), child.pid, self.codes[child.pid],
                    child.out.read_text(), child.err.read_text())

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


