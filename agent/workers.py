"""K copies of the pruning env stepped side by side: a stable-baselines3 VecEnv whose envs live
in worker processes or Ray actors, and that survives a worker's death.

Every env is built in its worker by the same factory (the dense model, the data and the env's
settings), so all K start identical. A round is K episodes stepped in lockstep; only the last
step of each (the proxy evaluation) costs much, and those run in parallel. A worker that dies
is replaced: the new one builds its env, puts back the generator state the episode started
with, replays the episode's actions so far and then takes the step that was lost, so the
result is the one the dead worker would have given (an env's episode is a function of its
start state and its actions).

The backends: `ProcessBackend` (local processes, the default; `rlprune.agent.process_workers`)
and `RayBackend` (`rlprune.agent.ray_workers`). A backend starts a worker around an `EnvHost`
and passes requests to it; a lost worker raises `WorkerLost`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, cast

import gymnasium as gym
import numpy as np
from stable_baselines3.common.vec_env.base_vec_env import VecEnv

MAX_RESTARTS = 3  # replacements of one worker for one request before the search gives up


class WorkerLost(RuntimeError):
    """A worker process or actor died (or its connection broke) during a request."""


class ClusterLost(RuntimeError):
    """The workers' cluster stopped answering (a lost Ray node): no replacement can help, so
    the search stops where its last checkpoint is, resumable."""


class EnvHost:
    """The env inside a worker; `handle(request)` serves one request of `EnvWorkers`.

    Requests: ("reset", seed, options) → (obs, info, rng); ("step", action) → (obs, reward,
    terminated, truncated, info, rng) with an automatic reset after the last step (`rng`: the
    generator state the next episode starts with, else None); ("get_rng",) and
    ("set_rng", state); ("get_attr", name), ("set_attr", name, value) and
    ("call", name, args, kwargs) for SB3's generic access.
    """

    def __init__(self, factory: Callable[[], gym.Env], threads: int = 1):
        import torch

        torch.set_num_threads(max(1, threads))
        self.env = factory()

    def _rng(self) -> dict:
        return self.env.np_random.bit_generator.state

    def handle(self, request: tuple) -> Any:
        kind, *args = request
        env = self.env
        if kind == "reset":
            seed, options = args
            obs, info = env.reset(seed=seed, options=options or None)
            return obs, info, self._rng()
        if kind == "step":
            obs, reward, terminated, truncated, info = env.step(args[0])
            rng = None
            if terminated or truncated:
                info["terminal_observation"] = obs
                obs, _ = env.reset()
                rng = self._rng()
            return obs, reward, terminated, truncated, info, rng
        if kind == "get_rng":
            return self._rng()
        if kind == "set_rng":
            env.np_random.bit_generator.state = args[0]
            return None
        if kind == "get_attr":
            return getattr(env, args[0])
        if kind == "set_attr":
            setattr(env, args[0], args[1])
            return None
        if kind == "call":
            name, call_args, call_kwargs = args
            return getattr(env, name)(*call_args, **call_kwargs)
        raise ValueError(f"unknown request {kind!r}")


class Backend(Protocol):
    """Starts workers around an EnvHost and passes requests to them."""

    def start(self, index: int) -> Any: ...

    def ready(self, worker: Any) -> None: ...

    def send(self, worker: Any, request: tuple) -> Any: ...

    def receive(self, worker: Any, pending: Any) -> Any: ...

    def stop(self, worker: Any) -> None: ...

    def kill(self, worker: Any) -> None: ...


class EnvWorkers(VecEnv):
    """`n` envs made by `factory`, each in its own worker of `backend` (see the module)."""

    def __init__(self, backend: Backend, n: int, observation_space: gym.Space,
                 action_space: gym.Space):
        self.num_envs = n
        self.backend = backend
        self.workers: list[Any] = [None] * n
        self.restarts = 0  # workers replaced so far (for reports and tests)
        self._start_rng: list[dict | None] = [None] * n  # generator state each episode began with
        self._actions: list[list[np.ndarray]] = [[] for _ in range(n)]
        self._pending_actions: np.ndarray | None = None
        try:
            for i in range(n):  # all start together: each builds its env meanwhile
                self.workers[i] = backend.start(i)
            for worker in self.workers:
                backend.ready(worker)
        except BaseException:
            self.close()
            raise
        super().__init__(n, observation_space, action_space)  # asks the envs' render_mode

    # -- requests, with replacement of a lost worker ----------------------------------------
    def _call_all(self, requests: Sequence[tuple | None]) -> list[Any]:
        """Send request i to worker i (None: skip), all at once, then collect the replies."""
        pending = {}
        for i, request in enumerate(requests):
            if request is not None:
                pending[i] = self._send(i, request)
        replies: list[Any] = [None] * self.num_envs
        for i, token in pending.items():
            replies[i] = self._receive(i, cast(tuple, requests[i]), token)  # one that was sent
        return replies

    def _send(self, i: int, request: tuple) -> Any:
        try:
            return self.backend.send(self.workers[i], request)
        except WorkerLost:
            return None  # received (and replaced) below

    def _receive(self, i: int, request: tuple, token: Any) -> Any:
        for _ in range(MAX_RESTARTS + 1):
            if token is not None:
                try:
                    return self.backend.receive(self.workers[i], token)
                except WorkerLost:
                    pass
            try:
                self._replace(i)
            except WorkerLost:
                token = None  # the replacement died too: try another
                continue
            token = self._send(i, request)
        raise WorkerLost(f"env worker {i} died {MAX_RESTARTS + 1} times in a row; giving up")

    def _replace(self, i: int) -> None:
        """A new worker for env i, brought to where the lost one was before its request."""
        self.restarts += 1
        try:
            self.backend.stop(self.workers[i])
        except Exception:  # it is dead already
            pass
        worker = self.backend.start(i)
        self.workers[i] = worker
        self.backend.ready(worker)
        rng = self._start_rng[i]
        b = self.backend
        b.receive(worker, b.send(worker, ("reset", None, None)))
        if rng is not None:
            b.receive(worker, b.send(worker, ("set_rng", rng)))
        for action in self._actions[i]:
            b.receive(worker, b.send(worker, ("step", action)))

    # -- the VecEnv interface ---------------------------------------------------------------
    def reset(self):
        requests = [("reset", self._seeds[i], self._options[i]) for i in range(self.num_envs)]
        replies = self._call_all(requests)
        obs = []
        for i, (o, info, rng) in enumerate(replies):
            self._start_rng[i] = rng  # a replay reset()s, then puts `rng` back
            self._actions[i] = []
            self.reset_infos[i] = info
            obs.append(o)
        self._reset_seeds()
        self._reset_options()
        return np.stack(obs)

    def step_async(self, actions: np.ndarray) -> None:
        self._pending_actions = np.asarray(actions)

    def step_wait(self):
        actions = self._pending_actions
        replies = self._call_all([("step", actions[i]) for i in range(self.num_envs)])
        obs, rewards, dones, infos = [], [], [], []
        for i, (o, reward, terminated, truncated, info, rng) in enumerate(replies):
            done = terminated or truncated
            info["TimeLimit.truncated"] = truncated and not terminated
            if done:
                self._start_rng[i] = rng
                self._actions[i] = []
            else:
                self._actions[i].append(actions[i])
            obs.append(o)
            rewards.append(reward)
            dones.append(done)
            infos.append(info)
        return (np.stack(obs), np.asarray(rewards, dtype=np.float32), np.asarray(dones),
                infos)

    def rng_states(self) -> list[dict]:
        """Every env's generator state (at an episode boundary: what its episode starts with)."""
        return self._call_all([("get_rng",)] * self.num_envs)

    def set_rng_states(self, states: list[dict]) -> None:
        """Put back generator states from `rng_states` (at an episode boundary)."""
        if len(states) != self.num_envs:
            raise ValueError(f"{len(states)} env generator states for {self.num_envs} envs")
        self._call_all([("set_rng", state) for state in states])
        for i, state in enumerate(states):
            self._start_rng[i] = state

    def kill_worker(self, i: int) -> None:
        """Kill env i's worker (as a crash would); the next request replaces it."""
        self.backend.kill(self.workers[i])

    def close(self) -> None:
        for worker in self.workers:
            if worker is not None:
                try:
                    self.backend.stop(worker)
                except Exception:  # closing after a crash: nothing left to stop
                    pass
        self.workers = [None] * self.num_envs

    def _indices(self, indices) -> list[int]:
        if indices is None:
            return list(range(self.num_envs))
        return [indices] if isinstance(indices, int) else list(indices)

    def _each(self, request: tuple, indices) -> list[Any]:
        chosen = set(self._indices(indices))
        replies = self._call_all([request if i in chosen else None
                                  for i in range(self.num_envs)])
        return [replies[i] for i in sorted(chosen)]

    def get_attr(self, attr_name: str, indices=None) -> list[Any]:
        return self._each(("get_attr", attr_name), indices)

    def set_attr(self, attr_name: str, value: Any, indices=None) -> None:
        self._each(("set_attr", attr_name, value), indices)

    def env_method(self, method_name: str, *method_args, indices=None, **method_kwargs):
        return self._each(("call", method_name, method_args, method_kwargs), indices)

    def env_is_wrapped(self, wrapper_class, indices=None) -> list[bool]:
        return [False] * len(self._indices(indices))
