"""Optuna's TPE over the same env's per-layer actions: the black-box comparison a learned
search must beat at equal evaluations (`rlprune baseline --method tpe`).

One trial is one episode: an action in [-1, 1] per agent layer, played through the env (so
the same action mapping, budget clamp and reward as the DDPG search), its reward told to the
study. The seed policies are enqueued as the first trials, as the search plays them first.
The sampler is seeded from the job's seed in a stream of its own; after Optuna's 10 random
start-up trials TPE models the rewards so far. It has the `Search` interface the lifecycle
uses (`run`, `load`, `state`, `best`, `stopped`, `saved_at`) and checkpoints the study (its
trials and the pickled sampler, random state included), so a resumed run gives the same
trials as an uninterrupted one.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from rlprune.agent import checkpoint
from rlprune.agent.config import SearchConfig
from rlprune.agent.methods import Method, register
from rlprune.agent.search_state import (
    CheckpointSink,
    DamagedCheckpoint,
    SearchState,
    agent_seed,
    check_fingerprint,
    fingerprint,
    seed_actions,
)
from rlprune.env.make import make_env
from rlprune.models.dense import Dense
from rlprune.models.train import resolve_device

TPE_STREAM = 2  # the sampler's stream: not the search's, not random search's
STARTUP_TRIALS = 10  # Optuna's default: random trials before TPE models the rewards
STUDY_FILE = "tpe-study.pkl"


class TpeSearch:
    """`config.episodes` trials of TPE on `dense`'s problem (see the module).

    :param config: every setting (the env's included); `workers` is 1 (the lifecycle refuses
        more)
    :param dense: the trained model and its data (never modified)
    :param on_episode: called after every episode with the same dict as `Search`'s
    :param should_stop: polled between episodes; True stops there (after a checkpoint)
    """

    def __init__(self, config: SearchConfig, dense: Dense, *,
                 on_episode: Callable[[dict], None] | None = None,
                 should_stop: Callable[[], bool] | None = None):
        import optuna

        self.config, self.dense = config, dense
        self.on_episode, self.should_stop = on_episode, should_stop
        self.env = make_env(dense.model, dense.data.val, dense.input_shape,
                            config.env_config(), calibration=dense.data.train,
                            device=resolve_device(config.device))
        self.state = SearchState()
        self.stopped = False
        self.saved_at: int | None = None
        self.episodes_at_start = 0
        self.sampler = optuna.samplers.TPESampler(
            seed=agent_seed(config.seed, TPE_STREAM), n_startup_trials=STARTUP_TRIALS)
        self.trials: list = []  # the study's finished trials (FrozenTrial)
        self._env_rng: dict | None = None
        self._checkpoints: CheckpointSink | None = None

    @property
    def best(self) -> dict | None:
        return self.state.best

    def stop_requested(self) -> bool:
        return bool(self.should_stop and self.should_stop())

    # -- checkpoints -----------------------------------------------------------------------
    def load(self, folder: Path) -> None:
        """Load checkpoint `folder` (DamagedCheckpoint if a file does not load; UserError if
        it was made for another problem)."""
        try:
            saved = checkpoint.read_state(folder)
            state = SearchState(**saved["search"])
            with open(folder / STUDY_FILE, "rb") as fh:
                study = pickle.load(fh)  # our own file, written by _save below
            sampler, trials, env_rng = study["sampler"], study["trials"], saved["rng"]["env"]
        except Exception as exc:  # a damaged file can fail in many ways
            raise DamagedCheckpoint(folder, exc) from None
        check_fingerprint(folder, saved["fingerprint"],
                          fingerprint(self.config, self.dense, self.env))
        self.state, self.sampler, self.trials, self._env_rng = state, sampler, trials, env_rng
        checkpoint.set_global_rng_state(saved["rng"]["global"])

    def _save(self) -> None:
        if self._checkpoints is None:
            return
        state = {"format": checkpoint.STATE_FORMAT, "search": self.state.__dict__,
                 "fingerprint": fingerprint(self.config, self.dense, self.env),
                 "rng": {"global": checkpoint.global_rng_state(),
                         "env": self.env.np_random.bit_generator.state}}

        def write(folder: Path) -> None:
            with open(folder / STUDY_FILE, "wb") as fh:
                pickle.dump({"sampler": self.sampler, "trials": self.trials}, fh)
            torch.save(state, folder / "state.pt")

        self._checkpoints.save(self.state.episode, write)
        self.saved_at = self.state.episode

    # -- the loop --------------------------------------------------------------------------
    def run(self, *, checkpoints: CheckpointSink | None = None, tb_dir: Path | None = None,
            resume_from: Path | None = None) -> None:
        """Play trials until `config.episodes` are done or a stop is asked for (`stopped`).
        `tb_dir` is not used (TPE has no training curves of its own)."""
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # library code does not print
        self._checkpoints = checkpoints
        if resume_from is not None and self._env_rng is None:  # not load()ed already
            self.load(resume_from)
        self.saved_at = self.state.episode if resume_from is not None else None
        self.episodes_at_start = self.state.episode
        if self._env_rng is not None:
            self.env.reset()
            self.env.np_random.bit_generator.state = self._env_rng
        else:
            self.env.reset(seed=self.config.seed)
        study = optuna.create_study(direction="maximize", sampler=self.sampler)
        study.add_trials(self.trials)
        layers = len(self.env.agent_layers)
        names = [f"a{t:03d}" for t in range(layers)]
        demos = seed_actions(self.env, self.config.seed_policies_for())
        for demo in demos[self.state.episode:]:
            study.enqueue_trial(dict(zip(names, map(float, demo))))
        every = self.config.checkpoint_every
        while self.state.episode < self.config.episodes:
            if self.stop_requested():
                self.stopped = True
                break
            trial = study.ask()
            actions = [trial.suggest_float(name, -1.0, 1.0) for name in names]
            reward, info = self._play(actions)
            study.tell(trial, reward)
            self.trials = study.get_trials(deepcopy=False,
                                           states=(optuna.trial.TrialState.COMPLETE,))
            self.state.record(reward, info)
            if self.on_episode is not None:
                self.on_episode(self.state.episode_record(self.config.episodes, info))
            if self.state.episode % every == 0:
                self._save()
        if self.saved_at != self.state.episode:
            self._save()

    def _play(self, actions: list[float]) -> tuple[float, dict]:
        """One episode with these per-layer actions; its reward and final info."""
        self.env.reset()
        for action in actions:
            _, reward, terminated, _, info = self.env.step(np.array([action], np.float32))
        assert terminated  # one action per agent layer ends the episode
        return float(reward), info

    def close(self) -> None:
        pass


register(Method("tpe", search=TpeSearch, one_worker=True))
