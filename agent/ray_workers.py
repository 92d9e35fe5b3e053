"""Ray for rlprune: connecting to a cluster (or starting a local instance), and env workers as
Ray actors (the `RayBackend` of `rlprune.agent.workers.EnvWorkers`).

Ray is an optional dependency (`pip install "rlprune[ray]"`); nothing here imports it before
it is asked for.
"""

from __future__ import annotations

import os
import signal
import socket
from collections.abc import Callable

import gymnasium as gym

from rlprune.agent.workers import EnvHost, WorkerLost
from rlprune.models.errors import UserError


def import_ray():
    try:
        import ray
    except ImportError:
        raise UserError("--ray-address needs Ray: pip install 'ray>=2.40' (or the project's "
                        "`ray` extra)") from None
    return ray


def connect(address: str, *, num_cpus: int | None = None) -> bool:
    """Join the Ray cluster at `address` (`auto`: the one this machine belongs to; `local`: a
    new Ray instance on this machine, with `num_cpus` CPUs if given). Returns True when this
    call started Ray (the caller then shuts it down); joining twice is a no-op."""
    ray = import_ray()
    probe(address)  # even when Ray is up in this process: a wrong address is still wrong
    if ray.is_initialized():
        return False
    kwargs = {"include_dashboard": False, "log_to_driver": False,
              "configure_logging": False}
    try:
        if address == "local":
            ray.init(num_cpus=num_cpus, **kwargs)
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot reach the Ray cluster at --ray-address {address} "
                        f"({str(exc).splitlines()[0][:160]})") from None
    return True


def probe(address: str, timeout_s: float = 5.0) -> None:
    """A host:port that answers nothing is refused at once (Ray itself retries for minutes)."""
    host, colon, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not colon or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at --ray-address {address} "
                        f"({exc.strerror or exc})") from None


class _Host(EnvHost):
    def pid(self) -> int:
        return os.getpid()


class RayBackend:
    """Env workers as Ray actors, one CPU (and `gpus` GPUs) each.

    :param factory: builds one env (put in Ray's object store once, shared by every actor)
    :param threads: torch threads per actor
    :param gpus: GPUs per actor (the env then runs on `cuda`, which Ray points at its GPU)
    """

    def __init__(self, factory: Callable[[], gym.Env], threads: int = 1, gpus: float = 0.0):
        self.ray = import_ray()
        self.factory = self.ray.put(factory)
        self.threads = threads
        self.actor_class = self.ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0)(_Host)

    def start(self, index: int):
        return self.actor_class.remote(self.factory, self.threads)

    def ready(self, worker) -> None:
        try:
            self.ray.get(worker.pid.remote())
        except self.ray.exceptions.RayError as exc:
            raise WorkerLost(f"env actor did not start ({type(exc).__name__})") from None

    def send(self, worker, request: tuple):
        return worker.handle.remote(request)

    def receive(self, worker, pending):
        ray = self.ray
        try:
            return ray.get(pending)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.ObjectLostError) as exc:
            raise WorkerLost(f"env actor died ({type(exc).__name__})") from None
        except ray.exceptions.RayTaskError as exc:
            raise RuntimeError(f"env actor: {exc.cause!r}") from None

    def stop(self, worker) -> None:
        self.ray.kill(worker)

    def kill(self, worker) -> None:
        """Kill the actor's process (SIGKILL), as a crash would."""
        os.kill(self.ray.get(worker.pid.remote()), signal.SIGKILL)
