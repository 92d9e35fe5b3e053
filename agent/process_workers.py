"""The env workers as local processes (`ProcessBackend`, the default backend of `EnvWorkers`):
each serves an `EnvHost` over a pipe."""

from __future__ import annotations

import multiprocessing as mp
import os
import pickle
from collections.abc import Callable
from typing import cast

import gymnasium as gym

from rlprune.agent.workers import EnvHost, WorkerLost

PARENT_CHECK_S = 1.0  # how often an idle worker checks that its search is still there


def _serve(connection, factory: Callable[[], gym.Env] | bytes, threads: int) -> None:
    """A worker process: build the env, then answer requests until the pipe closes or the
    process that started it is gone (a forked sibling holds that end of the pipe too, so a
    SIGKILLed search would never read as EOF here)."""
    parent = os.getppid()
    if isinstance(factory, bytes):
        factory = cast(Callable[[], gym.Env], pickle.loads(factory))
    host = EnvHost(factory, threads)
    connection.send(("ready", None))
    while True:
        try:
            while not connection.poll(PARENT_CHECK_S):
                if os.getppid() != parent:
                    return
            request = connection.recv()
        except (EOFError, OSError):
            return
        if request is None:
            return
        try:
            connection.send(("ok", host.handle(request)))
        except Exception as exc:  # sent back, raised in the search
            connection.send(("error", f"{type(exc).__name__}: {exc}"))


class ProcessBackend:
    """Workers as local processes talking over pipes.

    On the CPU they are forked (as torch's DataLoader workers are): they start in a moment and
    the caller's script is not imported again, so the Python API needs no `__main__` guard.
    Once CUDA is initialised a fork cannot use it, so workers then come from a forkserver
    (the factory pickled; a script must then guard its entry point, as for any
    multiprocessing start method but fork).

    :param factory: builds one env
    :param threads: torch threads per worker
    """

    def __init__(self, factory: Callable[[], gym.Env], threads: int = 1):
        import torch

        self.threads = threads
        if torch.cuda.is_available() and torch.cuda.is_initialized():
            self.context: mp.context.ForkServerContext | mp.context.ForkContext = \
                mp.get_context("forkserver")
            self.context.set_forkserver_preload(["torch", "rlprune.agent.process_workers"])
            self.payload: Callable[[], gym.Env] | bytes = pickle.dumps(factory)
        else:
            self.context = mp.get_context("fork")
            self.payload = factory

    def start(self, index: int):
        parent, child = self.context.Pipe()
        process = self.context.Process(target=_serve, args=(child, self.payload, self.threads),
                                       name=f"rlprune-env-{index}", daemon=True)
        process.start()
        child.close()  # so that the worker's death reads as EOF here
        return process, parent

    def ready(self, worker) -> None:
        self.receive(worker, None)  # its "ready", once its env is built

    def send(self, worker, request: tuple):
        try:
            worker[1].send(request)
        except (BrokenPipeError, ConnectionError, OSError) as exc:
            raise WorkerLost(str(exc)) from None
        return True

    def receive(self, worker, pending):
        try:
            status, payload = worker[1].recv()
        except (EOFError, ConnectionError, OSError) as exc:
            raise WorkerLost(f"env worker {worker[0].name} died ({exc!r})") from None
        if status == "error":
            raise RuntimeError(f"env worker {worker[0].name}: {payload}")
        return payload

    def stop(self, worker) -> None:
        process, connection = worker
        try:
            connection.send(None)
        except (BrokenPipeError, ConnectionError, OSError):
            pass
        connection.close()
        process.join(timeout=5)
        if process.is_alive():
            process.kill()
            process.join()

    def kill(self, worker) -> None:
        worker[0].kill()
        worker[0].join()
