"""The DDPG set-up (agent/ddpg.py, noise.py, buffer.py): AMC settings on stable-baselines3.

Expected values are worked out by hand from the design (DESIGN.md, "The agent"): sigma
0.5 during warm-up and x0.95 per episode after it, rewards relabelled as final reward minus a
moving-average baseline that starts at the first episode's reward.
"""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import DDPG
from stable_baselines3.common.vec_env import DummyVecEnv
from support import MODEL_MODULE, get_assets, one_torch_thread
from torch import nn

from rlprune.agent.buffer import EpisodeRewardReplayBuffer
from rlprune.agent.config import SearchConfig
from rlprune.agent.ddpg import AmcDDPG, make_agent
from rlprune.agent.noise import DecayingTruncatedNormalNoise

LAYERS = 3  # steps per episode of the toy environment


@pytest.fixture(autouse=True)
def _one_thread_in_tmp(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # whatever stable-baselines3 might write lands here
    with one_torch_thread():
        yield


class ToyEnv(gym.Env):
    """Three steps per episode; the reward (last step only) prefers actions near 0.3."""

    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 1.0, (2,), np.float32)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (1,), np.float32)
        self.t, self.actions = 0, []

    def _obs(self):
        return np.array([self.t / LAYERS, 0.5], np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t, self.actions = 0, []
        return self._obs(), {}

    def step(self, action):
        self.actions.append(float(np.asarray(action).reshape(-1)[0]))
        self.t += 1
        done = self.t == LAYERS
        reward = -float(np.mean(np.abs(np.array(self.actions) - 0.3))) if done else 0.0
        return self._obs(), reward, done, False, {}


def toy_agent(warmup: int = 2, seed: int = 0, **overrides) -> AmcDDPG:
    kwargs = dict(layers=LAYERS, warmup_episodes=warmup, buffer_episodes=10, sigma0=0.5,
                  sigma_decay=0.95, hidden=(16, 16), batch_size=4, tau=0.01,
                  learning_rate=1e-3, baseline_decay=0.95, seed=seed, device="cpu",
                  tensorboard_log=None)
    kwargs.update(overrides)
    return make_agent(DummyVecEnv([ToyEnv]), **kwargs)


# -- make_agent through a real Search -------------------------------------------------------
def linear_widths(seq: nn.Module) -> list[int]:
    return [m.out_features for m in seq.modules() if isinstance(m, nn.Linear)]


def test_search_config_defaults_are_amc():
    c = SearchConfig()
    assert (c.episodes, c.warmup) == (400, 100)
    assert (c.noise_sigma, c.noise_decay) == (0.5, 0.95)
    assert tuple(c.hidden) == (128, 128)  # AMC's 300-300 costs 1.6x per update, no better
    assert c.seed_policies_for() == ("uniform", "global", "lamp", "erk")
    assert (c.batch_size, c.tau, c.buffer_episodes, c.baseline_decay) == (64, 0.01, 100, 0.95)


def test_cli_search_defaults():
    from rlprune.service.cli.main import build_parser

    args = build_parser().parse_args(["search"])
    assert (args.episodes, args.warmup, args.target) == (400, 100, 0.9)
    assert args.seed_policies == SearchConfig().seed_policies
    assert build_parser().parse_args(["search", "--seed-policies", "none"]).seed_policies == ()
    assert build_parser().parse_args(["bench", "--out", "x", "--seed-policies", "erk"]
                                     ).seed_policies == ("erk",)
    assert args.action_mapping == SearchConfig().action_mapping == "auto"
    assert build_parser().parse_args(["bench", "--out", "x", "--action-mapping", "absolute"]
                                     ).action_mapping == "absolute"
    # the CLI takes its choices from the env's settings
    from rlprune.env.config import ACTION_MAPPINGS, REWARDS

    for command in (["search"], ["bench", "--out", "x"]):
        for mapping in ACTION_MAPPINGS:
            assert build_parser().parse_args([*command, "--action-mapping", mapping]
                                             ).action_mapping == mapping
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--action-mapping", "relative"])
        # likewise the rewards
        for reward in REWARDS:
            assert build_parser().parse_args([*command, f"--reward={reward}"]).reward == reward
        with pytest.raises(SystemExit):
            build_parser().parse_args([*command, "--reward", "accuracy"])


def test_make_agent_from_search_config(tmp_path_factory, tmp_path):
    """The agent a Search builds from the default SearchConfig has the AMC settings."""
    from rlprune.agent.search import Search
    from rlprune.models.data import load_dataset
    from rlprune.models.dense import Dense
    from rlprune.models.registry import build_model
    from rlprune.models.train import load_weights

    assets = get_assets(tmp_path_factory)
    model = build_model(f"{MODEL_MODULE}:make")
    load_weights(model, assets.dense)
    config = SearchConfig(model=f"{MODEL_MODULE}:make", dataset="digits", target=0.5,
                          fc_k=1.0, warmup=7)
    search = Search(config, Dense(load_dataset("digits"), model.eval(), assets.dense, 0.0))
    layers = len(search.env.agent_layers)
    assert layers == 3  # c1, c2, c3; f1 belongs to the FC rule
    agent = search._new_agent(tmp_path / "tb")

    assert isinstance(agent, AmcDDPG)
    assert agent.gamma == 0.0
    assert agent.learning_starts == 7 * layers
    assert agent.buffer_size == 100 * layers
    assert agent.replay_buffer.buffer_size == 100 * layers
    assert agent.batch_size == 64
    assert agent.tau == pytest.approx(0.01)
    assert linear_widths(agent.actor.mu) == [128, 128, 1]
    assert len(agent.critic.q_networks) == 1
    assert linear_widths(agent.critic.q_networks[0]) == [128, 128, 1]
    assert agent.critic.q_networks[0][0].in_features == 12 + 1  # observation + action
    noise = agent.action_noise
    assert isinstance(noise, DecayingTruncatedNormalNoise)
    assert (noise.sigma0, noise.decay, noise.warmup_episodes) == (0.5, 0.95, 7)
    assert isinstance(agent.replay_buffer, EpisodeRewardReplayBuffer)
    assert agent.replay_buffer.baseline_decay == 0.95
    assert Path(agent.tensorboard_log) == tmp_path / "tb"


# -- noise --------------------------------------------------------------------------------
def test_noise_sigma_schedule_by_hand():
    noise = DecayingTruncatedNormalNoise(0.5, 0.95, warmup_episodes=3, seed=0)
    sigmas = []
    for _ in range(8):
        sigmas.append(noise.sigma)
        noise.reset()
    sigmas.append(noise.sigma)
    # resets 0..3: warm-up, sigma0; then one factor 0.95 per episode
    expected = [0.5, 0.5, 0.5, 0.5, 0.475, 0.45125, 0.4286875, 0.407253125, 0.38689046875]
    assert sigmas == pytest.approx(expected, rel=1e-12)
    for _ in range(12):
        noise.reset()
    assert noise.episodes == 20
    assert noise.sigma == pytest.approx(0.5 * 0.95 ** 17, rel=1e-12)


def test_noise_without_warmup_decays_from_the_first_episode():
    noise = DecayingTruncatedNormalNoise(0.5, 0.95, warmup_episodes=0, seed=0)
    assert noise.sigma == 0.5
    noise.reset()
    assert noise.sigma == pytest.approx(0.475)


@pytest.mark.parametrize(("sigma0", "action"), [(0.5, -1.0), (2.0, -0.95), (0.5, 0.0),
                                                 (2.0, 0.95), (2.0, 1.0), (0.5, 1.7),
                                                 (2.0, -3.0)])
def test_around_stays_inside_the_action_box(sigma0, action):
    noise = DecayingTruncatedNormalNoise(sigma0, 0.95, seed=1)
    samples = np.array([noise.around(np.array([[action]], np.float32)) for _ in range(100)])
    assert samples.shape == (100, 1, 1)
    assert samples.dtype == np.float32
    assert samples.min() >= -1.0 and samples.max() <= 1.0
    assert np.unique(samples).size > 90  # noise, not a clipped constant


@pytest.mark.parametrize("action", [-0.5, 0.6])
def test_around_centres_on_the_action(action):
    noise = DecayingTruncatedNormalNoise(0.1, 0.95, seed=2)
    samples = np.array([noise.around(np.array([action], np.float32))[0] for _ in range(1000)])
    # truncation at +-1 is at least 4 sigma away: a plain N(action, 0.1) in effect
    assert samples.mean() == pytest.approx(action, abs=0.015)  # ~5 standard errors
    assert samples.std() == pytest.approx(0.1, rel=0.1)
    assert np.median(samples) == pytest.approx(action, abs=0.02)


def test_around_near_the_edge_leans_inwards_but_peaks_at_the_action():
    noise = DecayingTruncatedNormalNoise(0.5, 0.95, seed=3)
    samples = np.array([noise.around(np.array([0.9], np.float32))[0] for _ in range(1000)])
    assert samples.max() <= 1.0
    assert samples.mean() < 0.9  # truncation on the right only
    hist, edges = np.histogram(samples, bins=20, range=(-1.0, 1.0))
    assert edges[hist.argmax()] >= 0.6  # the mode is near the action, not at the far side


def test_noise_is_seeded_and_its_state_restores_exactly():
    a = DecayingTruncatedNormalNoise(0.5, 0.95, warmup_episodes=1, seed=7)
    b = DecayingTruncatedNormalNoise(0.5, 0.95, warmup_episodes=1, seed=7)
    x = np.array([0.1], np.float32)
    assert [a.around(x)[0] for _ in range(5)] == [b.around(x)[0] for _ in range(5)]
    a.reset()
    a.reset()
    state = a.state_dict()
    ahead = [a.around(x)[0] for _ in range(5)]
    c = DecayingTruncatedNormalNoise(0.5, 0.95, warmup_episodes=1, seed=99)
    c.load_state_dict(state)
    assert c.sigma == a.sigma == pytest.approx(0.475)
    assert [c.around(x)[0] for _ in range(5)] == ahead


# -- replay buffer ------------------------------------------------------------------------
def make_buffer(size: int = 50) -> EpisodeRewardReplayBuffer:
    return EpisodeRewardReplayBuffer(size, gym.spaces.Box(0.0, 1.0, (2,), np.float32),
                                     gym.spaces.Box(-1.0, 1.0, (1,), np.float32),
                                     device="cpu", n_envs=1, baseline_decay=0.95)


def add_episode(buf: EpisodeRewardReplayBuffer, final: float, tag: float) -> None:
    """Three steps; observations and actions carry `tag` so they can be found again."""
    before = buf.size()
    for t in range(LAYERS):
        done = t == LAYERS - 1
        buf.add(np.array([[tag, t / 10]], np.float32), np.array([[tag, (t + 1) / 10]], np.float32),
                np.array([[tag - t / 10]], np.float32),
                np.array([final if done else 0.0], np.float32), np.array([done]), [{}])
        if not done:
            assert buf.size() == before, "a transition was stored before the episode ended"


def test_buffer_relabels_each_episode_with_final_reward_minus_baseline():
    buf = make_buffer()
    rewards = [0.5, 0.7, 0.3]
    # by hand: baseline b1 = r1 = 0.5, label 0; b stays 0.5.
    # episode 2: label 0.7 - 0.5 = 0.2; b = 0.5 + 0.05 * 0.2 = 0.51.
    # episode 3: label 0.3 - 0.51 = -0.21; b = 0.51 + 0.05 * (-0.21) = 0.4995.
    labels = [0.0, 0.2, -0.21]
    baselines = [0.5, 0.51, 0.4995]
    for i, (r, label, base) in enumerate(zip(rewards, labels, baselines)):
        add_episode(buf, r, tag=0.1 * (i + 1))
        assert buf.size() == LAYERS * (i + 1)
        stored = buf.rewards[LAYERS * i:LAYERS * (i + 1), 0]
        np.testing.assert_allclose(stored, [label] * LAYERS, atol=1e-6)
        assert buf.baseline == pytest.approx(base, abs=1e-6)  # rewards arrive as float32
    # every transition of every episode, in order, with its own observation and action
    for i in range(3):
        tag = np.float32(0.1 * (i + 1))
        for t in range(LAYERS):
            row = LAYERS * i + t
            np.testing.assert_allclose(buf.observations[row, 0], [tag, t / 10], atol=1e-6)
            np.testing.assert_allclose(buf.next_observations[row, 0], [tag, (t + 1) / 10],
                                       atol=1e-6)
            np.testing.assert_allclose(buf.actions[row, 0], [tag - t / 10], atol=1e-6)
            assert buf.dones[row, 0] == (1.0 if t == LAYERS - 1 else 0.0)


def test_buffer_discard_pending_drops_an_unfinished_episode():
    buf = make_buffer()
    add_episode(buf, 0.4, tag=0.1)
    for _ in range(2):  # an episode cut short (a stop between two checkpoints)
        buf.add(np.zeros((1, 2), np.float32), np.zeros((1, 2), np.float32),
                np.full((1, 1), 0.9, np.float32), np.zeros(1, np.float32),
                np.array([False]), [{}])
    buf.discard_pending()
    add_episode(buf, 0.6, tag=0.2)
    assert buf.size() == 2 * LAYERS
    assert not np.any(np.isclose(buf.actions[:buf.size(), 0, 0], 0.9))
    np.testing.assert_allclose(buf.rewards[LAYERS:2 * LAYERS, 0], [0.6 - 0.4] * LAYERS,
                               atol=1e-6)


def test_buffer_with_two_envs_relabels_in_env_order_and_refuses_uneven_episodes():
    """K = 2: both episodes end on one step; the baseline takes their rewards in env order."""
    buf = EpisodeRewardReplayBuffer(10, gym.spaces.Box(0.0, 1.0, (2,), np.float32),
                                    gym.spaces.Box(-1.0, 1.0, (1,), np.float32), n_envs=2)
    obs, act = np.zeros((2, 2), np.float32), np.zeros((2, 1), np.float32)
    buf.add(obs, obs, act, np.zeros(2), np.array([False, False]), [{}, {}])
    assert buf.size() == 0  # held until the episodes end
    buf.add(obs, obs, act, np.zeros(2), np.array([True, True]),
            [{"reward": 1.0}, {"reward": 3.0}])
    # env 0: baseline starts at 1.0 -> 0; env 1: 3.0 - 1.0 = 2; then 1.0 + 0.05 * 2
    assert buf.rewards[:2].tolist() == [[0.0, 2.0], [0.0, 2.0]]
    assert buf.baseline == pytest.approx(1.1)
    with pytest.raises(ValueError, match="same step"):
        buf.add(obs, obs, act, np.zeros(2), np.array([True, False]), [{}, {}])


# -- AmcDDPG ------------------------------------------------------------------------------
def test_setup_learn_does_not_advance_the_noise():
    agent = toy_agent()
    noise = agent.action_noise
    for _ in range(5):
        noise.reset()
    rng_before = noise.rng.bit_generator.state
    agent._setup_learn(total_timesteps=LAYERS, callback=None, reset_num_timesteps=False,
                       tb_log_name="t", progress_bar=False)
    assert noise.episodes == 5
    assert noise.rng.bit_generator.state == rng_before

    # The guard is needed: plain SB3 set-up resets (here: advances) the same noise.
    plain = DDPG("MlpPolicy", DummyVecEnv([ToyEnv]), action_noise=noise, seed=0,
                 policy_kwargs={"net_arch": [8]}, buffer_size=100)
    plain._setup_learn(total_timesteps=LAYERS, callback=None, reset_num_timesteps=False,
                       tb_log_name="t", progress_bar=False)
    assert noise.episodes == 6


def test_learn_advances_the_noise_once_per_episode_and_only_after_warmup_uses_it():
    agent = toy_agent(warmup=2)
    noise = agent.action_noise
    fresh = DecayingTruncatedNormalNoise(seed=0).rng.bit_generator.state
    agent.learn(2 * LAYERS)  # the warm-up: uniform random actions, the noise is not drawn
    assert noise.episodes == 2
    assert agent.num_timesteps == 2 * LAYERS
    assert noise.rng.bit_generator.state == fresh
    assert agent.replay_buffer.size() == 2 * LAYERS
    agent.learn(2 * LAYERS, reset_num_timesteps=False)
    assert noise.episodes == 4  # learn() twice, yet no extra decay
    assert noise.rng.bit_generator.state != fresh
    assert noise.sigma == pytest.approx(0.5 * 0.95 ** 2)
    assert agent.replay_buffer.size() == 4 * LAYERS


def test_boundary_hook_runs_before_each_episode_and_can_stop_between_episodes():
    agent = toy_agent(warmup=1)
    calls = []

    def hook():
        calls.append(agent.num_timesteps)
        return len(calls) < 3  # let two episodes run, stop before the third

    agent.boundary_hook = hook
    agent.learn(10 * LAYERS)
    assert calls == [0, LAYERS, 2 * LAYERS]
    assert agent.num_timesteps == 2 * LAYERS
    assert agent.action_noise.episodes == 2
    assert agent.replay_buffer.size() == 2 * LAYERS


def test_same_seed_same_learning():
    def run(seed):
        agent = toy_agent(warmup=1, seed=seed)
        agent.learn(4 * LAYERS)
        return agent.replay_buffer.actions[:4 * LAYERS].copy(), [
            p.detach().clone() for p in agent.actor.parameters()]

    (a1, p1), (a2, p2), (a3, _) = run(0), run(0), run(1)
    np.testing.assert_array_equal(a1, a2)
    assert all(torch.equal(x, y) for x, y in zip(p1, p2))
    assert not np.array_equal(a1, a3)


def test_demonstrations_replace_the_first_warmup_episodes_only():
    demos = [np.array([0.1, -0.2, 0.3]), np.array([0.5, 0.5, -0.5])]
    agent = toy_agent(warmup=3)
    agent.demonstrations = demos
    agent.learn(3 * LAYERS)
    actions = agent.replay_buffer.actions[:3 * LAYERS, 0, 0]
    np.testing.assert_allclose(actions[:LAYERS], demos[0], atol=1e-6)
    np.testing.assert_allclose(actions[LAYERS:2 * LAYERS], demos[1], atol=1e-6)
    # the third warm-up episode is random, and the same as without demonstrations
    plain = toy_agent(warmup=3)
    plain.learn(3 * LAYERS)
    np.testing.assert_array_equal(actions[2 * LAYERS:],
                                  plain.replay_buffer.actions[2 * LAYERS:3 * LAYERS, 0, 0])
    assert not np.allclose(plain.replay_buffer.actions[:LAYERS, 0, 0], demos[0], atol=1e-3)
