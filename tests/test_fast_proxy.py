"""The fast proxy paths (env/fast_proxy.py) against the plain one: the same scores up to float
rounding on many allocations (weight and channel mode, models that fold, that do not trace,
with residual streams), rewards a deterministic function of the allocation, the working model
never written, and the FLOP and speed figures the bench and the report carry."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import TINY_INPUT, make_tiny, tiny_split
from test_channels import NETS, SHAPE, split
from torch import nn

from rlprune.env.channel_env import ChannelPruningEnv
from rlprune.env.config import EnvConfig
from rlprune.env.evaluate import ProxyEvaluator
from rlprune.env.fast_proxy import FastProxy, FoldedBatchNorm
from rlprune.env.pruning_env import PruningEnv
from rlprune.models.errors import SettingError
from rlprune.models.registry import build_model
from rlprune.service.jobs.measure import matmul_gflops, proxy_speed

pytestmark = pytest.mark.usefixtures("one_thread")
VAL = tiny_split(64, seed=1)


def weight_env(proxy: str, calibration, **config) -> PruningEnv:
    return PruningEnv(make_tiny(0), VAL, TINY_INPUT,
                      EnvConfig(target=0.8, fc_k=3.0, proxy=proxy, eval_batch_size=16,
                                **config), calibration=calibration)


def channel_env(net: str, proxy: str, target: float = 0.5, **config) -> ChannelPruningEnv:
    return ChannelPruningEnv(NETS[net](), split(64, seed=1), SHAPE,
                             EnvConfig(granularity="channel", target=target, proxy=proxy,
                                       eval_batch_size=16, **config),
                             calibration=split(256, seed=2))


def play(env, actions) -> tuple[float, dict]:
    env.reset(seed=0)
    for a in actions:
        _, reward, done, _, info = env.step(np.array([a], dtype=np.float32))
    assert done
    return reward, info


def assert_same_score(fast: tuple[float, float], plain: tuple[float, float], images: int):
    """Float rounding only: at most one image changes its class, the loss moves by 1e-4."""
    assert abs(fast[0] - plain[0]) <= 1.0 / images + 1e-12
    assert fast[1] == pytest.approx(plain[1], rel=1e-4, abs=1e-6)


def assert_paths_agree(plain, other, *, episodes: int, seed: int, same: str):
    """The same random episodes in both envs: the same allocation (`info[same]`), and scores
    equal up to rounding."""
    rng = np.random.default_rng(seed)
    for _ in range(episodes):
        actions = rng.uniform(-1, 1, len(plain.agent_layers))
        (_, p), (_, o) = play(plain, actions), play(other, actions)
        assert o[same] == p[same]
        assert_same_score((o["proxy_accuracy"], o["proxy_loss"]),
                          (p["proxy_accuracy"], p["proxy_loss"]), len(plain.evaluator.y))


@pytest.mark.parametrize("threads", [1, 2])
def test_weight_mode_fast_scores_agree_with_the_plain_path(tiny_calibration, threads):
    plain, fast = weight_env("plain", tiny_calibration), weight_env("fast", tiny_calibration)
    fast._fast.evaluator.threads = threads
    assert_paths_agree(plain, fast, episodes=8, seed=0, same="sparsities")
    assert len(fast._fast.folds.pairs) == 1  # c2 -> bn folded for scoring


@pytest.mark.parametrize("net", sorted(NETS))
@pytest.mark.parametrize("proxy", ["fast", "slim"])
def test_channel_mode_fast_and_slim_scores_agree_with_the_plain_path(net, proxy):
    assert_paths_agree(channel_env(net, "plain"), channel_env(net, proxy), episodes=5, seed=1,
                       same="removed")


def test_the_reward_is_a_function_of_the_allocation_on_the_fast_path(tiny_calibration):
    """The same allocation scores the same after other allocations, in another env, and
    with the scoring batches spread over threads or not."""
    a, b = weight_env("fast", tiny_calibration), weight_env("fast", tiny_calibration)
    b._fast.evaluator.threads = 2
    rng = np.random.default_rng(3)
    first = rng.uniform(-1, 1, len(a.agent_layers))
    reward, _ = play(a, first)
    for _ in range(3):
        play(a, rng.uniform(-1, 1, len(a.agent_layers)))
    assert play(a, first)[0] == reward
    assert play(b, first)[0] == reward
    slim = channel_env("residual", "slim")
    actions = rng.uniform(-1, 1, len(slim.agent_layers))
    reward, _ = play(slim, actions)
    play(slim, rng.uniform(-1, 1, len(slim.agent_layers)))
    assert play(slim, actions)[0] == reward


def test_scoring_never_writes_the_working_model(tiny_calibration):
    env = weight_env("fast", tiny_calibration)
    play(env, [0.3, -0.2, 0.5])
    before = {k: v.clone() for k, v in env.model.state_dict().items()}
    env.proxy_score()
    after = env.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


class _ConvBn(nn.Module):
    """A stem, a convolution with its BatchNorm, a head; subclasses wire them unfoldably."""

    def __init__(self):
        super().__init__()
        self.stem, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.Linear(4, 10)
        self.conv, self.bn = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4)


class Untraceable(_ConvBn):
    """Data-dependent control flow: torch.fx cannot trace it; the fast path runs it unfolded."""

    def forward(self, x):
        x = torch.relu(self.bn(self.conv(self.stem(x))))
        if x.sum() > 0:
            x = x * 1.0
        return self.head(x.mean((2, 3)))


class SharedConv(_ConvBn):
    """One convolution called twice, once before a BatchNorm: folding it would change the
    other call."""

    def forward(self, x):
        x = self.stem(x)
        return self.head((self.bn(self.conv(x)) + self.conv(x)).mean((2, 3)))


class Shared(_ConvBn):
    """A convolution whose output feeds the BatchNorm and a skip: it cannot be folded."""

    def forward(self, x):
        y = self.conv(self.stem(x))
        return self.head((torch.relu(self.bn(y)) + y).mean((2, 3)))


@pytest.mark.parametrize("model_class", [Untraceable, Shared, SharedConv])
def test_models_that_cannot_fold_are_scored_unfolded_with_the_same_result(model_class):
    torch.manual_seed(0)
    model = model_class().eval()
    folds = FoldedBatchNorm(model)
    assert folds.pairs == [] and folds.module is model
    data = tiny_split(64, seed=1)
    fast = FastProxy(model, data, "cpu", 16).score(None, batches=0, batch_size=8,
                                                    rng=np.random.default_rng(0))
    assert_same_score(fast, ProxyEvaluator(data, "cpu", 16).score(model), 64)


def test_folding_finds_every_convolution_batchnorm_pair_of_vgg_mini():
    model = build_model("vgg-mini").eval()
    folds = FoldedBatchNorm(model)
    assert len(folds.pairs) == 8
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folds.module.modules()
                   if m not in [bn for *_, bn in folds.pairs])
    x = torch.randn(4, 1, 28, 28)
    folds.refresh()
    with torch.no_grad():
        assert torch.allclose(folds.module(x), model(x), atol=1e-5)


def test_proxy_flops_count_what_each_path_computes(tiny_calibration):
    env = weight_env("fast", tiny_calibration, bn_recalibration_batches=2, bn_batch_size=32)
    assert env.proxy_flops() == 2 * (64 + 2 * 32) * env.net.flops_total
    slim = channel_env("depthwise", "slim", target=0.6)
    dense = slim.proxy_flops()
    play(slim, [0.0] * len(slim.agent_layers))
    kept = np.array(slim.budget.sizes) - np.array(slim._counts)
    assert slim.proxy_flops() == 2 * (64 + 128) * round(slim.graph.cost(kept, "flops"))
    assert slim.proxy_flops() < 0.5 * dense  # 0.6 of the FLOPs are gone and not computed
    masked = channel_env("depthwise", "fast", target=0.6)
    play(masked, [0.0] * len(masked.agent_layers))
    assert masked.proxy_flops() == dense


def test_proxy_speed_measures_the_evaluation_beside_a_matmul(tiny_calibration):
    env = weight_env("fast", tiny_calibration)
    state = env.np_random.bit_generator.state
    speed = proxy_speed(env, repeats=2)
    assert env.np_random.bit_generator.state == state
    assert speed["proxy_eval_s"] > 0 and speed["matmul_gflops"] > 0.1
    assert speed["proxy_gflops"] == pytest.approx(env.proxy_flops() / speed["proxy_eval_s"]
                                                  / 1e9)
    assert speed["proxy_efficiency"] == pytest.approx(speed["proxy_gflops"]
                                                      / speed["matmul_gflops"])
    assert matmul_gflops(n=256, repeats=2) > 0.1


def test_slim_needs_channel_mode():
    # the library names fields (the command line writes --granularity)
    with pytest.raises(SettingError, match="slim needs `granularity` channel") as info:
        EnvConfig(proxy="slim").validate()
    assert info.value.setting == "proxy" and info.value.others == ("granularity",)
    assert EnvConfig().proxy_path == "fast"
    assert EnvConfig(granularity="channel").proxy_path == "slim"

