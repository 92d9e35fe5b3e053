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

from rlprune.agent.ray_reaper import start_reaper
from rlprune.agent.workers import ClusterLost, EnvHost, WorkerLost
from rlprune.models.errors import SettingError

# An actor's start (a fresh process importing torch, building its env, maybe waiting for a
# CPU another actor is giving back) is not a sign of a lost node: it gets at least this long.
STARTUP_FLOOR_S = 60.0


def import_ray():
    try:
        import ray
    except ImportError:
        raise SettingError("ray_address", "needs Ray: pip install 'ray>=2.40' (or the "
                           "project's `ray` extra)") from None
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
            start_reaper()  # what this instance starts ends with this process, even killed
        else:
            ray.init(address=address, **kwargs)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise SettingError("ray_address", f"cannot reach the Ray cluster at `ray_address` "
                           f"{address} ({str(exc).splitlines()[0][:160]})",
                           lead=False) from None
    return True


def probe(address: str, timeout_s: float = 5.0) -> None:
    """A host:port that answers nothing is refused at once (Ray itself retries for minutes)."""
    host, colon, port = address.rpartition(":")
    if address in ("auto", "local") or "://" in address or not colon or not port.isdigit():
        return
    try:
        socket.create_connection((host, int(port)), timeout=timeout_s).close()
    except OSError as exc:
        raise SettingError("ray_address", f"cannot reach the Ray cluster at `ray_address` "
                           f"{address} ({exc.strerror or exc})", lead=False) from None


class _Host(EnvHost):
    def pid(self) -> int:
        return os.getpid()


class RayBackend:
    """Env workers as Ray actors, one CPU (and `gpus` GPUs) each.

    Every wait on an actor is bounded: while a request runs, the actor is pinged every
    `timeout_s / 6` seconds (it serves pings on a second thread); an actor that answers none
    for `timeout_s`, or one that does not start within `4 * timeout_s`, means its node is
    lost, and `ClusterLost` stops the search (a dead actor on a live node is `WorkerLost`,
    and is replaced).

    :param factory: builds one env (put in Ray's object store once, shared by every actor)
    :param threads: torch threads per actor
    :param gpus: GPUs per actor (the env then runs on `cuda`, which Ray points at its GPU)
    :param timeout_s: how long an actor may go without answering
    """

    def __init__(self, factory: Callable[[], gym.Env], threads: int = 1, gpus: float = 0.0,
                 timeout_s: float = 60.0):
        self.ray = import_ray()
        self.factory = self.ray.put(factory)
        self.threads = threads
        self.timeout_s = timeout_s
        self.actor_class = self.ray.remote(num_cpus=1, num_gpus=gpus, max_restarts=0,
                                           max_concurrency=2)(_Host)

    def start(self, index: int):
        return self.actor_class.remote(self.factory, self.threads)

    def ready(self, worker) -> None:
        ray = self.ray
        start_s = max(4 * self.timeout_s, STARTUP_FLOOR_S)
        try:
            ray.get(worker.pid.remote(), timeout=start_s)
        except ray.exceptions.GetTimeoutError:
            raise ClusterLost(f"an env actor did not start within {start_s:g} s "
                              "(no Ray node answers, or none has a free CPU)") from None
        except ray.exceptions.RayError as exc:
            raise WorkerLost(f"env actor did not start ({type(exc).__name__})") from None

    def send(self, worker, request: tuple):
        return worker.handle.remote(request)

    def receive(self, worker, pending):
        ray = self.ray
        heartbeat = self.timeout_s / 6
        silent = 0.0  # seconds the actor has gone without answering a ping
        while not ray.wait([pending], timeout=heartbeat)[0]:
            silent = 0.0 if self._answers(worker, heartbeat) else silent + 2 * heartbeat
            if silent >= self.timeout_s:
                raise ClusterLost(f"an env actor answered nothing for {self.timeout_s:g} s: "
                                  "its Ray node is taken as lost")
        try:
            return ray.get(pending)
        except (ray.exceptions.RayActorError, ray.exceptions.WorkerCrashedError,
                ray.exceptions.ObjectLostError) as exc:
            raise WorkerLost(f"env actor died ({type(exc).__name__})") from None
        except ray.exceptions.RayTaskError as exc:
            raise RuntimeError(f"env actor: {exc.cause!r}") from None

    def _answers(self, worker, timeout_s: float) -> bool:
        """Whether the actor answers a ping within `timeout_s` (WorkerLost if it is dead)."""
        ray = self.ray
        try:
            ray.get(worker.pid.remote(), timeout=timeout_s)
            return True
        except ray.exceptions.GetTimeoutError:
            return False
        except ray.exceptions.RayError as exc:
            raise WorkerLost(f"env actor died ({type(exc).__name__})") from None

    def stop(self, worker) -> None:
        self.ray.kill(worker)

    def kill(self, worker) -> None:
        """Kill the actor's process (SIGKILL), as a crash would."""
        os.kill(self.ray.get(worker.pid.remote()), signal.SIGKILL)

    def pause(self, worker) -> int:
        """Stop the actor's process (SIGSTOP), as a node cut off from the network would look;
        its pid (SIGCONT resumes it)."""
        pid = self.ray.get(worker.pid.remote())
        os.kill(pid, signal.SIGSTOP)
        return pid
