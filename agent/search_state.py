"""What a search knows between episodes and keeps in its checkpoints: its state (rewards, the
best and the top allocations), the fingerprint a resume must match, the seed policies as
actions, and the agent's random stream."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from rlprune.agent.config import TOP_KEPT, SearchConfig
from rlprune.agent.methods import METHODS
from rlprune.env.channel_env import ChannelPruningEnv
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.data import data_digest
from rlprune.models.dense import Dense
from rlprune.models.errors import UserError
from rlprune.models.registry import arch_fingerprint, weights_digest


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
    workers: dict[str, Any] = {"workers": c.workers} if c.workers > 1 else {}
    workers.update({"agent": c.agent} if c.agent != "ddpg" else {})
    # no rounding records nothing, so that checkpoints from before `round_to` stay resumable
    round_to = getattr(env, "round_to", 1)
    workers.update({"round_to": round_to} if round_to != 1 else {})
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
        allocate = METHODS[name].allocate
        assert allocate is not None  # a seed policy is a rule (SearchConfig checks the names)
        counts = allocate(env)
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
        assert self.best is not None  # set by record()
        return {"episode": self.episode, "episodes": episodes, "reward": self.rewards[-1],
                "best_reward": self.best["reward"], "best_episode": self.best["episode"],
                "proxy_accuracy": info["proxy_accuracy"], "proxy_loss": info["proxy_loss"],
                "sparsities": info["sparsities"], "eval_s": info.get("eval_s")}

    def history(self) -> list[dict]:
        """One row per episode: episode, reward, proxy_accuracy, proxy_loss."""
        losses: Sequence[float | None] = self.proxy_loss or [None] * len(self.rewards)
        return [{"episode": i + 1, "reward": r, "proxy_accuracy": a, "proxy_loss": lo}
                for i, (r, a, lo) in enumerate(zip(self.rewards, self.proxy, losses))]


def _better(reward: float, loss: float, best: dict) -> bool:
    """A higher reward wins; an equal one wins with a lower val cross-entropy. Accuracy on a few
    hundred images ties often (LeNet-5 at 0.95: the first of seven 95.8% episodes had loss 0.43
    and fine-tuned to 96.4%, the other six had 0.34-0.36 and 96.7-97.0%; docs/decisions.md)."""
    if reward != best["reward"]:
        return reward > best["reward"]
    return loss < best.get("proxy_loss", math.inf)
