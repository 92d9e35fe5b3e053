"""The search loop: stable-baselines3 DDPG over the pruning environment, one episode per
allocation, checkpoints at episode boundaries, and a resume that continues exactly.

Read top to bottom: `Search(config, dense)` builds the environment (refusing an impossible
target before anything happens); `run()` makes or loads the agent, plays the seed policies
and random warm-up, then learns, reporting every episode to `on_episode` and checkpointing
through a `CheckpointSink` at episode boundaries; `best` is the allocation to keep.
Nothing here prints, writes files of its own or handles signals: a stop is asked for with
`should_stop` (whoever runs it asks through it) and honoured between two episodes.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv

from rlprune.agent import checkpoint
from rlprune.agent.config import SearchConfig
from rlprune.agent.ddpg import AGENTS, AmcDDPG, AmcTD3, make_agent, rng_state, set_rng_state
from rlprune.agent.methods import Method, register
from rlprune.agent.process_workers import ProcessBackend
from rlprune.agent.search_state import (
    RANDOM_STREAM,
    CheckpointSink,
    DamagedCheckpoint,
    SearchState,
    agent_seed,
    check_fingerprint,
    fingerprint,
    seed_actions,
)
from rlprune.agent.workers import Backend, EnvWorkers
from rlprune.env.make import make_env
from rlprune.models.dense import Dense
from rlprune.models.train import resolve_device


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
        self.device = resolve_device(config.device)  # once; JobRunner hands it resolved
        self.agent_seed = agent_seed(config.seed, stream)
        self.on_episode, self.should_stop = on_episode, should_stop
        self.env = make_env(dense.model, dense.data.val, dense.input_shape,
                            config.env_config(), calibration=dense.data.train,
                            device=self.device)
        self.seed_policies = config.seed_policies_for()
        self.state = SearchState()
        self.stopped = False  # True when a stop ended the run before its last episode
        self.saved_at: int | None = None  # episode of the last checkpoint written
        self.episodes_at_start = 0
        self._pending_rng: dict | None = None
        self._checkpoints: CheckpointSink | None = None
        self._loaded: tuple | None = None  # a checkpoint load()ed for run() to continue
        self._vec: DummyVecEnv | EnvWorkers | None = None
        self._started_ray = False
        if config.workers > 1 and config.ray_address:  # reached now, before any run folder
            from rlprune.agent.ray_workers import connect

            self._started_ray = connect(config.ray_address)
        self.agent: AmcDDPG | AmcTD3 | None = None

    @property
    def best(self) -> dict | None:
        """The best episode so far: reward, episode, sparsities, proxy_accuracy, proxy_loss."""
        return self.state.best

    def stop_requested(self) -> bool:
        """Whoever runs the search (a `JobRunner`) asks for a stop through `should_stop`."""
        return bool(self.should_stop and self.should_stop())

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
        device = "cuda" if c.gpus_per_worker else self.device
        d = self.dense
        factory = functools.partial(make_env, d.model, d.data.val, d.input_shape,
                                    c.env_config(), calibration=d.data.train, device=device)
        if c.ray_address:
            from rlprune.agent.ray_workers import RayBackend

            backend: Backend = RayBackend(factory, threads=1, gpus=c.gpus_per_worker,
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

    def _new_agent(self, tb_dir: Path | None) -> AmcDDPG | AmcTD3:
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

    def _resumed_agent(self, folder: Path, tb_dir: Path | None) -> AmcDDPG | AmcTD3:
        if self._loaded is None or self._loaded[0] != folder:
            self.load(folder)
        assert self._loaded is not None  # set by load()
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
        assert self.agent is not None  # the hook of the agent run() made
        if self._pending_rng is not None:
            # After SB3's load and learn set-up have reseeded things, put back exactly the
            # generator states the interrupted run had at this boundary.
            checkpoint.set_global_rng_state(self._pending_rng["global"])
            set_rng_state(self.agent, self._rng_env, self._pending_rng["local"])
            self._pending_rng = None
        episode, every, k = self.state.episode, self.config.checkpoint_every, self.config.workers
        if self.stop_requested() and episode < self.config.episodes:
            self.stopped = True
            self._save()
            return False
        if episode and episode // every > (episode - k) // every:  # a multiple of it crossed
            self._save()
        return True

    def _save(self) -> None:
        if self._checkpoints is None:
            return
        assert self.agent is not None  # saved from run(), which made it
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
        assert self.agent is not None and s.best is not None  # in run(), after a recorded episode
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


register(Method("ddpg", search=Search, uses_agent=True, in_default_bench=("weight", "channel")))
# random search: the same episodes and seed allocations, no learning (the ablation any RL
# search must beat), drawing from its own random stream
register(Method("random", search=functools.partial(Search, stream=RANDOM_STREAM), learns=False,
                in_default_bench=("channel",)))
