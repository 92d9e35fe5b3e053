"""stable-baselines3 DDPG (or TD3), set up as AMC: warm-up, truncated-normal noise, relabelled
rewards."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import numpy as np
from stable_baselines3 import DDPG, TD3
from stable_baselines3.common.type_aliases import RolloutReturn

from rlprune.agent.buffer import EpisodeRewardReplayBuffer
from rlprune.agent.noise import DecayingTruncatedNormalNoise

if TYPE_CHECKING:  # what the mixin's super() calls reach (SB3's DDPG is a TD3)
    from stable_baselines3 import TD3 as _AmcBase
else:
    _AmcBase = object


class _Amc(_AmcBase):
    """What AMC changes in SB3's DDPG and TD3, three narrow changes, each at an episode
    boundary or in action sampling:

    - exploration draws from a normal around the actor's action truncated to the action box
      (instead of adding noise and clipping);
    - `boundary_hook`, if set, runs before every episode (every rollout is one episode); it may
      checkpoint, and returning False stops training cleanly between two episodes;
    - `learn()` does not advance the noise schedule (SB3 resets the noise when learning
      starts; that must not count as an episode, or a resumed run would drift).
    """

    action_noise: Any  # SB3's ActionNoise or None, set by its __init__
    boundary_hook: Callable[[], bool] | None = None
    demonstrations: list[np.ndarray] | None = None
    """Optional per-episode actions (one per layer) that replace the first warm-up episodes'
    random actions, e.g. heuristic allocations to start the search from."""

    def _sample_action(self, learning_starts: int, action_noise=None, n_envs: int = 1):
        # Always draw the warm-up sample first, so the random streams do not depend on
        # whether an episode was a demonstration.
        action, buffer_action = super()._sample_action(learning_starts, None, n_envs)
        demos = self.demonstrations or []
        if demos and self.num_timesteps < learning_starts:
            # env i of round r plays episode r·K + i; its step is the round's step
            steps = len(demos[0])
            rnd, step = divmod(self.num_timesteps // n_envs, steps)
            played = False
            for i in range(n_envs):
                episode = rnd * n_envs + i
                if episode < len(demos):
                    buffer_action[i] = demos[episode][step]
                    played = True
            if played:
                return self.policy.unscale_action(buffer_action), buffer_action
        if action_noise is not None and self.num_timesteps >= learning_starts:
            buffer_action = action_noise.around(buffer_action)
            action = self.policy.unscale_action(buffer_action)
        return action, buffer_action

    def collect_rollouts(self, *args: Any, **kwargs: Any) -> RolloutReturn:
        if self.boundary_hook is not None and self.boundary_hook() is False:
            return RolloutReturn(0, 0, continue_training=False)
        return super().collect_rollouts(*args, **kwargs)

    def _excluded_save_params(self) -> list[str]:
        return [*super()._excluded_save_params(), "boundary_hook", "demonstrations"]

    def _setup_learn(self, *args: Any, **kwargs: Any):
        noise = self.action_noise
        saved = noise.state_dict() if isinstance(noise, DecayingTruncatedNormalNoise) else None
        out = super()._setup_learn(*args, **kwargs)
        if saved is not None:
            # SB3 wraps a single-env noise into K copies for K envs; ours draws per env itself
            self.action_noise = noise
            noise.load_state_dict(saved)
        return out


class AmcDDPG(_Amc, DDPG):
    """SB3's DDPG with AMC's changes (`_Amc`): the search's agent, as the design names it."""


class AmcTD3(_Amc, TD3):
    """SB3's TD3 (twin critics, delayed actor updates, target smoothing) with AMC's changes:
    the comparison beside DDPG (`--agent td3`)."""


AGENTS: dict[str, type[AmcDDPG] | type[AmcTD3]] = {"ddpg": AmcDDPG, "td3": AmcTD3}


def make_agent(env, *, layers: int, warmup_episodes: int, buffer_episodes: int,
               sigma0: float, sigma_decay: float, hidden: tuple[int, ...], batch_size: int,
               tau: float, learning_rate: float, baseline_decay: float, seed: int,
               device: str, tensorboard_log: str | None,
               agent: str = "ddpg") -> AmcDDPG | AmcTD3:
    """The search's agent for `env` (a VecEnv of K copies of one pruning env; one step per
    layer). With K > 1 a rollout is one round (K episodes side by side) and the update after it
    takes K·layers gradient steps, as K single episodes would; the warm-up is rounded up to
    whole rounds. `agent` names the algorithm (`AGENTS`: ddpg, td3)."""
    k = env.num_envs
    noise = DecayingTruncatedNormalNoise(sigma0, sigma_decay, warmup_episodes, seed=seed,
                                         n_envs=k)
    return AGENTS[agent](
        "MlpPolicy", env,
        learning_rate=learning_rate,
        buffer_size=max(buffer_episodes * layers, batch_size),
        learning_starts=-(-warmup_episodes // k) * k * layers,
        batch_size=batch_size, tau=tau,
        gamma=0.0,  # every transition carries its episode's (relabelled) return already
        # one update per step, after the episode (SB3 counts a round of K envs in steps)
        train_freq=(1, "episode") if k == 1 else (layers, "step"), gradient_steps=-1,
        action_noise=noise,
        replay_buffer_class=EpisodeRewardReplayBuffer,
        replay_buffer_kwargs={"baseline_decay": baseline_decay},
        policy_kwargs={"net_arch": list(hidden)},
        tensorboard_log=tensorboard_log, seed=seed, device=device, verbose=0,
    )


def rng_state(agent: AmcDDPG | AmcTD3, env) -> dict:
    """The generators an episode draws from, besides the global ones (see checkpoint.py);
    `env` is the search's one env (K = 1) or its EnvWorkers (the K envs' generators)."""
    envs = env.rng_states() if hasattr(env, "rng_states") else env.np_random.bit_generator.state
    return {"action_space": agent.action_space.np_random.bit_generator.state,
            "env": envs, "noise": agent.action_noise.state_dict()}


def set_rng_state(agent: AmcDDPG | AmcTD3, env, state: dict) -> None:
    agent.action_space.np_random.bit_generator.state = state["action_space"]
    if hasattr(env, "set_rng_states"):
        env.set_rng_states(state["env"])
    else:
        env.np_random.bit_generator.state = state["env"]
    agent.action_noise.load_state_dict(state["noise"])


