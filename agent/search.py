"""The search loop: stable-baselines3 DDPG over the pruning environment, one episode per
allocation, checkpoints at episode boundaries, and a resume that continues exactly.

Read top to bottom: `Search(config, dense)` builds the environment (refusing an impossible
target before anything happens); `run()` makes or loads the agent, plays the seed policies
and random warm-up, then learns, reporting every episode to `on_episode` and checkpointing
through a `CheckpointSink` at episode boundaries; `best` is the allocation to keep.
Nothing here prints, writes files of its own or handles signals: a stop is asked for with
`request_stop()` (or `should_stop`) and honoured between two episodes.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from rlprune.agent import checkpoint
from rlprune.agent.config import TOP_KEPT, SearchConfig
from rlprune.agent.ddpg import AGENTS, AmcDDPG, make_agent, rng_state, set_rng_state
from rlprune.agent.workers import EnvWorkers, ProcessBackend
from rlprune.env.channel_env import ChannelPruningEnv
from rlprune.env.make import make_env
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.data import data_digest
from rlprune.models.dense import Dense
from rlprune.models.errors import UserError
from rlprune.models.registry import arch_fingerprint, weights_digest
from rlprune.models.train import resolve_device


class DamagedCheckpoint(UserError):
    """A checkpoint folder with a file that does not load."""

    def __init__(self, folder: Path, exc: BaseException):
        self.folder, self.reason = folder, f"{type(exc).__name__}: {exc}"[:200]
        super().__init__(f"checkpoint {folder} cannot be loaded ({self.reason})")


class CheckpointSink(Protocol):
    """Where checkpoints go: `save(episode, write)` calls `write(folder)` on a fresh folder."""

    def save(self, episode: int, write: Callable[[Path], None]) -> Path: ...


def fingerprint(config: SearchConfig, dense: Dense, env: PruningEnv | ChannelPruningEnv
                ) -> dict:
    """What a checkpoint must match to be resumed: the problem, not the agent's settings."""
    c = config
    size = "channels" if c.granularity == "channel" else "params"
    # K = 1 and DDPG record nothing, so that older checkpoints stay resumable
    workers = {"workers": c.workers} if c.workers > 1 else {}
    workers.update({"agent": c.agent} if c.agent != "ddpg" else {})
    return {**workers, "model": c.model, "dataset": c.dataset, "target": c.target, "scope": c.scope,
            "arch": arch_fingerprint(dense.model), "weights": weights_digest(dense.model),
            "data": data_digest(dense.data),
            "granularity": [c.granularity, c.budget if c.granularity == "channel" else None,
                            c.criterion if c.granularity == "channel" else None],
            "layers": [[layer.name, getattr(layer, size)] for layer in env.agent_layers],
            "fc_rule": [c.fc_rule, env.fc.k, c.fc_during_search],
            # channel mode's `auto` s_max depends on the target (0.8 or 0.99): record which
            "reward": [c.reward_kind, c.s_min,
                       env.s_max if c.granularity == "channel" else c.s_max,
                       c.bn_recalibration_batches,
                       c.bn_fixed_batches], "action_mapping": env.action_mapping}


def check_fingerprint(folder: Path, theirs: dict, mine: dict) -> None:
    """Refuse a checkpoint made for another problem (or by an rlprune that recorded less)."""
    unknown = [k for k in mine if k not in theirs]
    if unknown:
        raise UserError(f"checkpoint {folder} was written by an earlier rlprune (it records "
                        f"no {', '.join(unknown)}) and cannot be resumed by this one; start "
                        "the search again")
    differ = [k for k in {**theirs, **mine} if theirs.get(k) != mine.get(k)]
    if differ:
        raise UserError(f"checkpoint {folder} does not match this run's "
                        f"{', '.join(differ)}; refusing to resume it")


def seed_actions(env, names: tuple[str, ...]) -> list[np.ndarray]:
    """The seed policies as actions: per layer, the action that makes the env prune exactly
    the baseline's count, whichever action mapping the env uses."""
    demos = []
    for name in names:
        counts = env.baseline_counts(name)
        demos.append(np.array([env.action_for(t, counts[:t], count)
                               for t, count in enumerate(counts)]))
    return demos


RANDOM_STREAM = 1  # random search's stream: its random episodes are not the search's warm-up


def agent_seed(seed: int, stream: int = 0) -> int:
    """The agent's seed for `seed` in `stream`: `seed` itself in stream 0 (the search's), a
    32-bit number drawn from (seed, stream) in any other."""
    if stream == 0:
        return seed
    return int(np.random.SeedSequence([seed, stream]).generate_state(1)[0])


@dataclass
class SearchState:
    episode: int = 0
    rewards: list[float] = field(default_factory=list)
    proxy: list[float] = field(default_factory=list)
    proxy_loss: list[float] = field(default_factory=list)
    best: dict | None = None  # reward, episode (1-based), sparsities, proxy_accuracy, loss
    top: list[dict] = field(default_factory=list)
    """The best `TOP_KEPT` distinct allocations so far, best first (as `best`): the selection
    stage's candidates."""

    def record(self, reward: float, info: dict) -> None:
        """One more episode: its reward and proxy scores, and the best so far."""
        self.episode += 1
        self.rewards.append(reward)
        self.proxy.append(info["proxy_accuracy"])
        self.proxy_loss.append(info["proxy_loss"])
        entry = {"reward": reward, "episode": self.episode, "sparsities": info["sparsities"],
                 "proxy_accuracy": info["proxy_accuracy"], "proxy_loss": info["proxy_loss"]}
        if self.best is None or _better(reward, info["proxy_loss"], self.best):
            self.best = entry
        if all(kept["sparsities"] != entry["sparsities"] for kept in self.top):
            # best first; equal scores keep the earlier episode first
            self.top.append(entry)
            self.top.sort(key=lambda e: (-e["reward"], e["proxy_loss"], e["episode"]))
            del self.top[TOP_KEPT:]

    def episode_record(self, episodes: int, info: dict) -> dict:
        """What `on_episode` gets for the episode just recorded."""
        return {"episode": self.episode, "episodes": episodes, "reward": self.rewards[-1],
                "best_reward": self.best["reward"], "best_episode": self.best["episode"],
                "proxy_accuracy": info["proxy_accuracy"], "proxy_loss": info["proxy_loss"],
                "sparsities": info["sparsities"], "eval_s": info.get("eval_s")}

    def history(self) -> list[dict]:
        """One row per episode: episode, reward, proxy_accuracy, proxy_loss."""
        losses = self.proxy_loss or [None] * len(self.rewards)
        return [{"episode": i + 1, "reward": r, "proxy_accuracy": a, "proxy_loss": lo}
                for i, (r, a, lo) in enumerate(zip(self.rewards, self.proxy, losses))]


def _better(reward: float, loss: float, best: dict) -> bool:
    """A higher reward wins; an equal one wins with a lower val cross-entropy. Accuracy on a few
    hundred images ties often (LeNet-5 at 0.95: the first of seven 95.8% episodes had loss 0.43
    and fine-tuned to 96.4%, the other six had 0.34-0.36 and 96.7-97.0%; docs/decisions.md)."""
    if reward != best["reward"]:
        return reward > best["reward"]
    return loss < best.get("proxy_loss", math.inf)


class _EpisodeCallback(BaseCallback):
    def __init__(self, on_episode_end):
        super().__init__()
        self.on_episode_end = on_episode_end

    def _on_step(self) -> bool:
        # K envs end their episodes on the same step; env i's is episode r·K + i of round r
        for done, info in zip(self.locals["dones"], self.locals["infos"]):
            if done:
                self.on_episode_end(info["reward"], info)
        return True


class Search:
    """One DDPG search over one problem; `run()` starts it or continues it from a checkpoint.

    :param config: every setting (the env's included)
    :param dense: the trained model and its data (never modified)
    :param on_episode: called after every episode with a dict (episode, episodes, reward,
        best_reward, best_episode, proxy_accuracy, proxy_loss, eval_s, noise_sigma)
    :param should_stop: polled between episodes; True stops the search there (after a
        checkpoint, when checkpoints are kept)
    :param stream: which random stream the agent draws from for a seed: 0 (the search's),
        or another number for a comparison that must not replay the search's own warm-up
        (random search uses `RANDOM_STREAM`)
    """

    def __init__(self, config: SearchConfig, dense: Dense, *,
                 on_episode: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None, stream: int = 0):
        self.config, self.dense = config, dense
        self.agent_seed = agent_seed(config.seed, stream)
        self.on_episode, self.should_stop = on_episode, should_stop
        self.env = make_env(dense.model, dense.data.val, dense.input_shape,
                            config.env_config(), calibration=dense.data.train,
                            device=resolve_device(config.device))
        self.seed_policies = config.seed_policies_for()
        self.state = SearchState()
        self.stopped = False  # True when a stop ended the run before its last episode
        self.saved_at: int | None = None  # episode of the last checkpoint written
        self.episodes_at_start = 0
        self._stop = False
        self._pending_rng: dict | None = None
        self._checkpoints: CheckpointSink | None = None
        self._loaded: tuple | None = None  # a checkpoint load()ed for run() to continue
        self._vec: DummyVecEnv | EnvWorkers | None = None
        self._started_ray = False
        if config.workers > 1 and config.ray_address:  # reached now, before any run folder
            from rlprune.agent.ray_workers import connect

            self._started_ray = connect(config.ray_address)
        self.agent: AmcDDPG | None = None

    @property
    def best(self) -> dict | None:
        """The best episode so far: reward, episode, sparsities, proxy_accuracy, proxy_loss."""
        return self.state.best

    def request_stop(self) -> None:
        """Stop at the next episode boundary (safe from a signal handler)."""
        self._stop = True

    @property
    def stop_requested(self) -> bool:
        return self._stop or bool(self.should_stop and self.should_stop())

    # -- set-up ------------------------------------------------------------------------
    def _envs(self) -> DummyVecEnv | EnvWorkers:
        """The env the agent steps: this process's one env (K = 1), or K copies of it in
        worker processes or Ray actors (`rlprune.agent.workers`)."""
        if self._vec is not None:
            return self._vec
        c = self.config
        if c.workers == 1:
            self._vec = DummyVecEnv([lambda: self.env])
            return self._vec
        device = "cuda" if c.gpus_per_worker else resolve_device(c.device)
        d = self.dense
        factory = functools.partial(make_env, d.model, d.data.val, d.input_shape,
                                    c.env_config(), calibration=d.data.train, device=device)
        if c.ray_address:
            from rlprune.agent.ray_workers import RayBackend

            backend = RayBackend(factory, threads=1, gpus=c.gpus_per_worker,
                                 timeout_s=c.ray_timeout_s)
        else:
            backend = ProcessBackend(factory, threads=max(1, torch.get_num_threads() // c.workers))
        self._vec = EnvWorkers(backend, c.workers, self.env.observation_space,
                               self.env.action_space)
        return self._vec

    @property
    def _rng_env(self):
        """Whose env generators a checkpoint holds: the one env's, or the K workers'."""
        return self._vec if isinstance(self._vec, EnvWorkers) else self.env

    def close(self) -> None:
        """Stop the worker processes or actors (and a Ray instance this search started)."""
        if isinstance(self._vec, EnvWorkers):
            self._vec.close()
        self._vec = None
        if self._started_ray:
            from rlprune.agent.ray_workers import import_ray

            import_ray().shutdown()
            self._started_ray = False

    def _new_agent(self, tb_dir: Path | None) -> AmcDDPG:
        c = self.config
        return make_agent(self._envs(), layers=len(self.env.agent_layers), warmup_episodes=c.warmup,
                          buffer_episodes=c.buffer_episodes, sigma0=c.noise_sigma,
                          sigma_decay=c.noise_decay, hidden=c.hidden, batch_size=c.batch_size,
                          tau=c.tau, learning_rate=c.learning_rate,
                          baseline_decay=c.baseline_decay, seed=self.agent_seed, device="cpu",
                          agent=c.agent,
                          tensorboard_log=None if tb_dir is None else str(tb_dir))

    def load(self, folder: Path) -> None:
        """Load checkpoint `folder` whole (state, agent, replay buffer) for `run()` to continue
        from. A file that does not load raises DamagedCheckpoint; a checkpoint made for
        another model, data, target or layers raises UserError."""
        try:
            saved = checkpoint.read_state(folder)
            theirs, search, rng = saved["fingerprint"], saved["search"], saved["rng"]
            state = SearchState(**search)
        except Exception as exc:  # a damaged file can fail in many ways
            raise DamagedCheckpoint(folder, exc) from None
        check_fingerprint(folder, theirs, fingerprint(self.config, self.dense, self.env))
        try:  # without its envs: starting workers or Ray actors is run()'s part, not a check's
            agent = AGENTS[self.config.agent].load(folder / "agent.zip", device="cpu")
            agent.load_replay_buffer(folder / "replay_buffer.pkl")
        except Exception as exc:  # a truncated zip or pickle can fail in many ways
            raise DamagedCheckpoint(folder, exc) from None
        self._loaded = (folder, agent, state, rng)

    def _resumed_agent(self, folder: Path, tb_dir: Path | None) -> AmcDDPG:
        if self._loaded is None or self._loaded[0] != folder:
            self.load(folder)
        _, agent, self.state, self._pending_rng = self._loaded  # RNGs: at the first boundary
        self._loaded = None
        agent.set_env(self._envs())
        agent.tensorboard_log = None if tb_dir is None else str(tb_dir)
        return agent

    def demonstrations(self) -> list[np.ndarray]:
        """The seed policies as actions (`seed_actions`)."""
        return seed_actions(self.env, self.seed_policies)

    # -- the loop ----------------------------------------------------------------------
    def run(self, *, checkpoints: CheckpointSink | None = None, tb_dir: Path | None = None,
            resume_from: Path | None = None) -> None:
        """Search until `config.episodes` are done or a stop is asked for (`stopped`).

        :param checkpoints: where to checkpoint (every `checkpoint_every` episodes, on a stop
            and at the end); None keeps nothing
        :param tb_dir: TensorBoard folder, or None
        :param resume_from: a checkpoint folder to continue from
        """
        self._checkpoints = checkpoints
        try:
            if resume_from:
                self.agent = self._resumed_agent(resume_from, tb_dir)
                self.saved_at = self.state.episode
            else:
                self.agent = self._new_agent(tb_dir)
            self.episodes_at_start = self.state.episode
            self.agent.boundary_hook = self._at_boundary
            self.agent.demonstrations = self.demonstrations()
            remaining = (self.config.episodes - self.state.episode) * len(self.env.agent_layers)
            if remaining > 0:
                self.agent.learn(remaining, callback=_EpisodeCallback(self._on_episode_end),
                                 log_interval=None, tb_log_name="search",
                                 reset_num_timesteps=False)
            if self.saved_at != self.state.episode:  # e.g. a stop during the last episode
                self._save()
        finally:
            self.close()

    def _at_boundary(self) -> bool:
        """Between two episodes: restore RNGs after a resume, checkpoint, honour a stop."""
        if self._pending_rng is not None:
            # After SB3's load and learn set-up have reseeded things, put back exactly the
            # generator states the interrupted run had at this boundary.
            checkpoint.set_global_rng_state(self._pending_rng["global"])
            set_rng_state(self.agent, self._rng_env, self._pending_rng["local"])
            self._pending_rng = None
        episode, every, k = self.state.episode, self.config.checkpoint_every, self.config.workers
        if self.stop_requested and episode < self.config.episodes:
            self.stopped = True
            self._save()
            return False
        if episode and episode // every > (episode - k) // every:  # a multiple of it crossed
            self._save()
        return True

    def _save(self) -> None:
        if self._checkpoints is None:
            return
        state = {"search": self.state.__dict__,
                 "fingerprint": fingerprint(self.config, self.dense, self.env),
                 "rng": {"global": checkpoint.global_rng_state(),
                         "local": rng_state(self.agent, self._rng_env)}}
        self.agent.replay_buffer.discard_pending()
        self._checkpoints.save(self.state.episode,
                               lambda folder: checkpoint.write(folder, self.agent, state))
        self.saved_at = self.state.episode

    def _on_episode_end(self, reward: float, info: dict) -> None:
        s = self.state
        s.record(reward, info)
        logger = self.agent.logger
        logger.record("search/reward", reward)
        logger.record("search/best_reward", s.best["reward"])
        logger.record("search/proxy_accuracy", info["proxy_accuracy"])
        logger.record("search/proxy_loss", info["proxy_loss"])
        logger.record("search/noise_sigma", self.agent.action_noise.sigma)
        logger.dump(step=s.episode)
        if self.on_episode is not None:
            self.on_episode({**s.episode_record(self.config.episodes, info),
                             "noise_sigma": self.agent.action_noise.sigma})
