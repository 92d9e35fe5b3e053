"""The search job, top to bottom: data and dense model → DDPG search with checkpoints →
best policy → FC rule → masked fine-tune → policy.json, report.md, pruned.pt.
"""

from __future__ import annotations

import hashlib
import math
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rlprune.agent.config import SearchConfig
from rlprune.agent.ddpg import AmcDDPG, make_agent, rng_state, set_rng_state
from rlprune.agent.finalize import finalize_with
from rlprune.agent.policy import build_policy, save_policy
from rlprune.env.layers import nonzero_costs
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.data import Dataset, load_dataset
from rlprune.models.errors import UserError
from rlprune.models.pretrain import default_checkpoint_path, model_for, pretrain
from rlprune.models.registry import arch_fingerprint
from rlprune.models.train import evaluate, load_weights, save_checkpoint
from rlprune.service import checkpoints as checkpoint
from rlprune.service.baseline import baseline_counts
from rlprune.service.jobs import Job
from stable_baselines3.common.callbacks import BaseCallback
from stable_baselines3.common.vec_env import DummyVecEnv
from torch import nn


@dataclass
class Dense:
    """The trained dense model a search starts from."""

    data: Dataset
    model: nn.Module
    checkpoint: Path
    test_accuracy: float

    @property
    def input_shape(self) -> tuple[int, int, int]:
        s = self.data.spec
        return (s.in_channels, s.image_size, s.image_size)


def load_dense(config: SearchConfig, on_pretrain_epoch=None) -> Dense:
    """Load the dense model from --checkpoint, or the cached pre-trained one (training it once).

    `config.checkpoint` is then pinned to the weights' absolute path, so that a saved config
    (and a resume from it) finds the same file from any working folder."""
    data = load_dataset(config.dataset, config.data_dir, config.download)
    model = model_for(config.model, data)
    path = Path(config.checkpoint) if config.checkpoint else default_checkpoint_path(
        config.model, config.dataset)
    if config.checkpoint or path.is_file():
        load_weights(model, path)
    else:
        model, _ = pretrain(config.model, data, path, on_epoch=on_pretrain_epoch)
        model = model.cpu()
    model.eval()
    config.checkpoint = str(path.resolve())
    return Dense(data, model, path, evaluate(model, data.test))


def weights_digest(model: nn.Module) -> str:
    """sha256 of the dense weights' values: a retrained checkpoint is another problem."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()


def fingerprint(config: SearchConfig, dense: Dense, env: PruningEnv) -> dict:
    """What a checkpoint must match to be resumed: the problem, not the agent's settings."""
    c = config
    return {"model": c.model, "dataset": c.dataset, "target": c.target, "scope": c.scope,
            "arch": arch_fingerprint(dense.model), "weights": weights_digest(dense.model),
            "layers": [[layer.name, layer.params] for layer in env.agent_layers],
            "fc_rule": [c.fc_rule, env.fc.k, c.fc_during_search],
            "reward": [c.reward, c.s_min, c.s_max, c.bn_recalibration_batches,
                       c.bn_fixed_batches], "action_mapping": env.action_mapping}


@dataclass
class SearchState:
    episode: int = 0
    rewards: list[float] = field(default_factory=list)
    proxy: list[float] = field(default_factory=list)
    best: dict | None = None  # reward, episode (1-based), sparsities, proxy_accuracy


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
        if self.locals["dones"][0]:
            info = self.locals["infos"][0]
            self.on_episode_end(info["reward"], info)
        return True


class Search:
    """One search job in one run folder; `run()` starts it or continues it from a checkpoint."""

    def __init__(self, config: SearchConfig, dense: Dense, *, progress: bool = True,
                 label: str = "search"):
        """Builds the environment (which refuses infeasible targets) before any file is written.
        `progress`: a tqdm bar on stderr named `label`."""
        self.config, self.dense, self.progress, self.label = config, dense, progress, label
        self.env = PruningEnv(dense.model, dense.data.val, dense.input_shape,
                              config.env_config(), calibration=dense.data.train,
                              device=config.device)
        self.state = SearchState()
        self.stop_requested = False
        self._pending_rng: dict | None = None
        self.job: Job | None = None  # set by run()
        self.episodes_at_start = 0
        self.saved_at: int | None = None  # episode of the last checkpoint written
        self._bar = None

    # -- set-up ------------------------------------------------------------------------
    def _new_agent(self) -> AmcDDPG:
        c = self.config
        vec = DummyVecEnv([lambda: self.env])
        return make_agent(vec, layers=len(self.env.agent_layers), warmup_episodes=c.warmup,
                          buffer_episodes=c.buffer_episodes, sigma0=c.noise_sigma,
                          sigma_decay=c.noise_decay, hidden=c.hidden, batch_size=c.batch_size,
                          tau=c.tau, learning_rate=c.learning_rate,
                          baseline_decay=c.baseline_decay, seed=c.seed, device="cpu",
                          tensorboard_log=str(self.job.path / "tb"))

    def check_resumable(self, path: Path) -> dict:
        """The checkpoint's state, if it was made for this model, data, target and layers."""
        try:
            saved = checkpoint.read_state(path)
        except Exception as exc:  # a damaged file can fail in many ways
            raise UserError(f"checkpoint {path} cannot be read ({exc})") from None
        mine = fingerprint(self.config, self.dense, self.env)
        theirs = saved.get("fingerprint", {})
        differ = [k for k in mine if theirs.get(k) != mine[k]]
        if differ:
            raise UserError(f"checkpoint {path} does not match this run's {', '.join(differ)}; "
                            "refusing to resume it")
        return saved

    def _load_agent(self, path: Path) -> AmcDDPG:
        saved = self.check_resumable(path)
        vec = DummyVecEnv([lambda: self.env])
        agent = AmcDDPG.load(path / "agent.zip", env=vec, device="cpu")
        agent.load_replay_buffer(path / "replay_buffer.pkl")
        agent.tensorboard_log = str(self.job.path / "tb")
        self.state = SearchState(**saved["search"])
        self._pending_rng = saved["rng"]  # applied at the first episode boundary, see below
        return agent

    def demonstrations(self) -> list[np.ndarray]:
        """The seed policies as actions: per layer, the action that makes the env prune exactly
        the baseline's count, whichever action mapping the env uses."""
        env = self.env
        demos = []
        for name in self.config.seed_policies:
            actions, pruned = [], 0
            for t, count in enumerate(baseline_counts(name, env)):
                actions.append(env.action_for(t, pruned, count))
                pruned += count
            demos.append(np.array(actions))
        return demos

    # -- the loop ----------------------------------------------------------------------
    def run(self, job: Job, resume_from: Path | None = None) -> None:
        """Search until `config.episodes` are done or a signal stops it (`stop_requested`)."""
        self.job = job
        agent = self._load_agent(resume_from) if resume_from else self._new_agent()
        self.agent = agent
        self.episodes_at_start = self.state.episode  # after a resume: the checkpoint's
        if resume_from:
            self.saved_at = self.state.episode
        self.write_status("running")
        agent.boundary_hook = self._at_boundary
        agent.demonstrations = self.demonstrations()
        layers = len(self.env.agent_layers)
        remaining = (self.config.episodes - self.state.episode) * layers
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            if remaining > 0:
                self._open_bar()
                agent.learn(remaining, callback=_EpisodeCallback(self._on_episode_end),
                            log_interval=None, tb_log_name="search", reset_num_timesteps=False)
            if self.saved_at != self.state.episode:  # e.g. a stop during the last episode
                self._save()
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
            if self._bar is not None:
                self._bar.close()

    def _at_boundary(self) -> bool:
        """Between two episodes: restore RNGs after a resume, checkpoint, honour a stop."""
        if self._pending_rng is not None:
            # After SB3's load and learn set-up have reseeded things, put back exactly the
            # generator states the interrupted run had at this boundary.
            checkpoint.set_global_rng_state(self._pending_rng["global"])
            set_rng_state(self.agent, self.env, self._pending_rng["local"])
            self._pending_rng = None
        episode = self.state.episode
        if self.stop_requested:
            self._save()
            return False
        if episode and episode % self.config.checkpoint_every == 0:
            self._save()
        return True

    def _save(self) -> None:
        state = {"search": self.state.__dict__, "fingerprint": fingerprint(
                     self.config, self.dense, self.env),
                 "rng": {"global": checkpoint.global_rng_state(),
                         "local": rng_state(self.agent, self.env)}}
        self.agent.replay_buffer.discard_pending()
        checkpoint.save(self.job.checkpoints, self.state.episode, self.agent, state)
        self.saved_at = self.state.episode
        self.write_status()

    def _on_episode_end(self, reward: float, info: dict) -> None:
        s = self.state
        s.episode += 1
        s.rewards.append(reward)
        s.proxy.append(info["proxy_accuracy"])
        if s.best is None or _better(reward, info["proxy_loss"], s.best):
            s.best = {"reward": reward, "episode": s.episode, "sparsities": info["sparsities"],
                      "proxy_accuracy": info["proxy_accuracy"], "proxy_loss": info["proxy_loss"]}
        logger = self.agent.logger
        logger.record("search/reward", reward)
        logger.record("search/best_reward", s.best["reward"])
        logger.record("search/proxy_accuracy", info["proxy_accuracy"])
        logger.record("search/proxy_loss", info["proxy_loss"])
        logger.record("search/noise_sigma", self.agent.action_noise.sigma)
        logger.dump(step=s.episode)
        if self._bar is not None:
            self._bar.set_postfix(best=f"{s.best['reward']:.4f}", last=f"{reward:.4f}")
            self._bar.update()
        self.write_status()

    def _on_signal(self, signum: int, frame) -> None:
        if self.stop_requested:  # a second ^C: stop now, keep the last checkpoint
            raise KeyboardInterrupt
        self.stop_requested = True
        print(f"\nrlprune: {signal.Signals(signum).name}: stopping after this episode and "
              "saving a checkpoint (again to stop at once)", file=sys.stderr)

    def _open_bar(self) -> None:
        if not self.progress:
            return
        from tqdm import tqdm

        self._bar = tqdm(total=self.config.episodes, initial=self.state.episode,
                         desc=self.label, unit="ep", file=sys.stderr, dynamic_ncols=True)

    def write_status(self, state: str = "running", **extra) -> None:
        if self.job is None:  # failed before run() began: there is no run to report on
            return
        s = self.state
        self.job.write_status(state, episodes_done=s.episode, episodes=self.config.episodes,
                              best_reward=s.best["reward"] if s.best else None,
                              best_episode=s.best["episode"] if s.best else None,
                              target=self.config.target, **extra)

    # -- after the search --------------------------------------------------------------
    def finish(self, on_finetune_epoch=None) -> dict:
        """Apply the best policy, fine-tune, write policy.json and pruned.pt; the policy."""
        c, env, best = self.config, self.env, self.state.best
        if best is None:
            raise UserError("the search ran no episode; nothing to export")
        costs = nonzero_costs(env.net, best["sparsities"])
        policy = build_policy(
            model=c.model, dataset=c.dataset, fingerprint=arch_fingerprint(self.dense.model),
            method="ddpg", target=c.target, scope=c.scope, net=env.net,
            sparsities=best["sparsities"], fc_rule=c.fc_rule, fc_k=env.fc.k, costs=costs,
            accuracy={"dense": self.dense.test_accuracy, "proxy": best["proxy_accuracy"]},
            search={"episodes": self.state.episode, "best_episode": best["episode"],
                    "best_reward": best["reward"], "seed": c.seed,
                    "action_mapping": env.action_mapping, "s_max": env.s_max})
        done = finalize_with(c, self.dense, policy, on_epoch=on_finetune_epoch)
        policy["accuracy"].update(pruned=done.pruned_accuracy, finetuned=done.finetuned_accuracy)
        save_policy(policy, self.job.path / "policy.json")
        save_checkpoint(self.job.path / "pruned.pt", done.model,
                        {"model": c.model, "dataset": c.dataset,
                         "accuracy": {"test": done.finetuned_accuracy},
                         "policy": {layer["name"]: layer["sparsity"]
                                    for layer in policy["layers"]}})
        return policy
