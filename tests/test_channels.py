"""Channel mode on small networks whose groups are known (tests/usermodels/channel_nets.py):
groups, exact costs, masking equal to removal, the budget clamp, the criteria, baselines."""

from __future__ import annotations

import copy
import random
import sys

import numpy as np
import pytest
import torch
from gymnasium.utils.env_checker import check_env
from hypothesis import given, settings
from hypothesis import strategies as st
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from support import USER_MODELS
from torch import nn

from rlprune.env.channel_budget import ChannelBudget
from rlprune.env.channel_env import ChannelPruningEnv, _uniform
from rlprune.env.channel_mode import summary as channel_summary
from rlprune.env.channels import ChannelGraph, Masker, network_flops, prune_channels
from rlprune.env.config import EnvConfig
from rlprune.env.criteria import l1_scores, redundancy_scores, taylor_scores
from rlprune.env.masks import count_for
from rlprune.models.errors import UserError
from rlprune.models.registry import build_model
from rlprune.models.splits import Split

sys.path.insert(0, str(USER_MODELS))
import channel_nets  # noqa: E402

SHAPE = (1, 8, 8)
NETS = {"residual": channel_nets.residual, "depthwise": channel_nets.depthwise,
        "concat": channel_nets.concat}


@pytest.fixture(autouse=True)
def _one_thread(one_thread):
    yield


def split(n: int = 64, seed: int = 0, classes: int = 4) -> Split:
    gen = torch.Generator().manual_seed(seed)
    return Split(torch.randn(n, *SHAPE, generator=gen),
                 torch.randint(0, classes, (n,), generator=gen))


def random_removal(graph: ChannelGraph, rng: random.Random) -> dict[str, list[int]]:
    return {g.name: sorted(rng.sample(range(g.channels), rng.randint(0, g.channels - 1)))
            for g in graph.groups}


def test_coupled_layers_form_one_group_and_the_output_layer_none():
    groups = {g.name: set(g.layers) for g in ChannelGraph(channel_nets.residual(), SHAPE).groups}
    stream = next(layers for layers in groups.values() if "stem" in layers)
    # the residual stream: the stem and both blocks' second convolutions lose the same channels
    assert {"stem", "bn", "blocks.0.c2", "blocks.0.n2", "blocks.1.c2", "blocks.1.n2",
            "down", "proj"} <= stream
    dw = ChannelGraph(channel_nets.depthwise(), SHAPE)
    assert [set(g.layers) >= {"c1", "n1", "dw", "n2"} for g in dw.groups][0]  # dw with input
    assert dw.output_layer == "head"
    for graph in (dw, ChannelGraph(channel_nets.concat(), SHAPE)):
        assert "head" not in {g.name for g in graph.groups}  # the classes never go
    assert [g.name for g in ChannelGraph(channel_nets.concat(), SHAPE).groups] == [
        "a", "b", "mix"]


@pytest.mark.parametrize("name", [*NETS, "resnet56", "vgg-mini", "lenet5"])
def test_masking_computes_what_removal_does_and_costs_are_exact(name):
    if name in NETS:
        model, shape = NETS[name](), SHAPE
    else:
        torch.manual_seed(0)
        shape = (3, 32, 32) if name == "resnet56" else (1, 28, 28)
        model = channel_nets._bn_init(build_model(name, 10, shape[0], shape[1]), 0)
    graph = ChannelGraph(model, shape)
    rng = random.Random(0)
    for _ in range(2 if name in NETS else 1):
        removed = random_removal(graph, rng)
        slim = prune_channels(model, shape, removed)
        masked = copy.deepcopy(model)
        masker = Masker(masked, graph)
        for i, g in enumerate(graph.groups):
            masker.apply(i, torch.tensor(removed[g.name], dtype=torch.long))
        x = torch.randn(4, *shape)
        with torch.no_grad():
            assert torch.allclose(masked(x), slim(x), atol=1e-5)
        kept = [g.channels - len(removed[g.name]) for g in graph.groups]
        assert graph.cost(kept, "params") == pytest.approx(
            sum(p.numel() for p in slim.parameters()), abs=1e-6)
        # FLOPs: exact but for pooling, which the model keeps fixed (under 0.01% of the dense
        # network's FLOPs here)
        assert abs(graph.cost(kept, "flops") - network_flops(slim, shape)) <= (
            1e-4 * graph.total["flops"])
    assert sum(p.numel() for p in model.parameters()) == graph.total["params"]  # untouched


def test_restoring_a_group_brings_back_its_dense_channels():
    model = channel_nets.residual()
    graph = ChannelGraph(model, SHAPE)
    work = copy.deepcopy(model)
    masker = Masker(work, graph)
    masker.apply(0, torch.tensor([1, 3]))
    masker.apply(0, torch.tensor([], dtype=torch.long))
    assert all(torch.equal(a, b) for a, b in zip(work.state_dict().values(),
                                                 model.state_dict().values()))


def _marginal(graph: ChannelGraph, budget: str, step: int = 1) -> float:
    """The most `step` channels of one group can cost (at the dense network, where it is
    most)."""
    dense = [g.channels for g in graph.groups]
    worst = 0.0
    for i in range(len(dense)):
        kept = list(dense)
        kept[i] -= min(step, kept[i] - 1)
        worst = max(worst, graph.cost(dense, budget) - graph.cost(kept, budget))
    return worst


@settings(max_examples=60, deadline=None)
@given(name=st.sampled_from(sorted(NETS)), budget=st.sampled_from(["flops", "params"]),
       target=st.floats(0.05, 0.6), actions=st.lists(st.floats(-1, 1), min_size=6,
                                                       max_size=6),
       mapping=st.sampled_from(["absolute", "feasible"]), round_to=st.sampled_from([1, 2, 4]))
def test_every_episode_lands_on_the_target_within_one_channel(name, budget, target, actions,
                                                              mapping, round_to):
    """... within one rounding step of one group, where widths are rounded (`round_to`),
    every group keeping a multiple of it or all its channels."""
    graph = GRAPHS[name]
    b = ChannelBudget(graph, budget, target, 0.0, 0.99, round_to)
    try:
        b.check()
    except UserError:
        return  # a target beyond what the groups can give is refused up front
    removed: list[int] = []
    for t in range(len(graph.groups)):
        lo, hi = b.bounds(t, removed)
        a = (actions[t] + 1) / 2
        want = lo + round(a * (hi - lo)) if mapping == "feasible" else round(
            a * 0.99 * b.sizes[t])
        removed.append(b.clamp(t, removed, want))
        assert b.lows[t] <= removed[-1] <= b.highs[t]
        kept = b.sizes[t] - removed[-1]
        assert kept == b.sizes[t] or kept % round_to == 0
    assert abs(b.cost(removed) - b.goal) <= _marginal(graph, budget, round_to) + 1e-6


GRAPHS = {name: ChannelGraph(make(), SHAPE) for name, make in NETS.items()}


def test_a_target_beyond_the_groups_is_refused_with_the_fix():
    b = ChannelBudget(GRAPHS["concat"], "flops", 0.999, 0.0, 0.99)
    with pytest.raises(UserError, match="lower `target`") as info:  # the CLI: --target
        b.check()
    assert info.value.setting == "target"


# -- criteria on hand-made layers ----------------------------------------------------------
class _Probe(nn.Module):
    """conv (4 channels, fixed filters) -> BN -> ReLU -> mean -> head (fixed weights)."""

    def __init__(self, filters: list[float], head: list[float]):
        super().__init__()
        self.conv = nn.Conv2d(1, 4, 1, bias=False)
        self.bn = nn.BatchNorm2d(4)
        self.head = nn.Linear(4, 2)
        with torch.no_grad():
            self.conv.weight.copy_(torch.tensor(filters).view(4, 1, 1, 1))
            self.head.weight.copy_(torch.tensor([head, [-h for h in head]]))
            self.head.bias.zero_()

    def forward(self, x):
        return self.head(torch.relu(self.bn(self.conv(x))).mean((2, 3)))


def _probe_graph(model):
    return ChannelGraph(model, (1, 4, 4))


def test_l1_orders_filters_by_their_norm():
    model = _Probe([0.5, -3.0, 0.1, 2.0], [1, 1, 1, 1]).eval()
    (scores,) = l1_scores(model, _probe_graph(model))[:1]
    assert torch.argsort(scores).tolist() == [2, 0, 3, 1]  # |0.1| < |0.5| < |2| < |-3|


def test_taylor_orders_by_activation_times_gradient():
    """Equal activations; the head reads channel 1 hardest, channel 3 not at all: |a·dL/da|
    orders them by the head's weight."""
    model = _Probe([1.0, 1.0, 1.0, 1.0], [0.5, 2.0, 1.0, 0.0])
    model.bn.eval()
    with torch.no_grad():
        model.bn.running_mean.zero_()
        model.bn.running_var.fill_(1.0)
    x = torch.rand(32, 1, 4, 4) + 0.5  # positive inputs: every channel active
    data = Split(x, torch.zeros(32, dtype=torch.long))
    (scores,) = taylor_scores(model, _probe_graph(model), data, batches=1, batch_size=32)[:1]
    assert torch.argsort(scores).tolist() == [3, 0, 2, 1]


def test_similarity_drops_the_duplicate_of_a_stronger_channel_first():
    """Channel 2 repeats channel 0 at half the strength; 1 and 3 are their own, 3 weak."""
    gen = torch.Generator().manual_seed(0)
    base = torch.randn(3, 500, generator=gen).abs()
    features = torch.stack([2.0 * base[0], 1.5 * base[1], 1.0 * base[0], 0.6 * base[2]])
    order = torch.argsort(redundancy_scores(features)).tolist()
    assert order[0] == 2  # the duplicate goes first, though 3 is weaker
    assert order[-1] == 0 and set(order[1:3]) == {1, 3}


# -- the environment and its baselines -------------------------------------------------------
def channel_env(name: str = "residual", **overrides) -> ChannelPruningEnv:
    config = EnvConfig(**{"granularity": "channel", "target": 0.4, **overrides})
    return ChannelPruningEnv(NETS[name](), split(64, 1), SHAPE, config,
                             calibration=split(128, 2))


def test_the_env_passes_the_checkers_and_lands_on_the_target():
    env = channel_env()
    check_env(env)
    sb3_check_env(env)
    rng = np.random.default_rng(0)
    env.reset(seed=0)
    done = False
    while not done:
        *_, done, _, info = env.step(rng.uniform(-1, 1, 1))
    assert abs(info["achieved_sparsity"] - 0.4) * env.budget.total <= _marginal(
        env.graph, "flops") + 1e-6
    assert set(info["sparsities"]) == {g.name for g in env.graph.groups}
    assert info["flops"]["nonzero"] < info["flops"]["dense"]


@pytest.mark.parametrize("criterion", ["l1", "taylor", "similarity"])
@pytest.mark.parametrize("budget", ["flops", "params"])
def test_baselines_land_on_the_budget(criterion, budget):
    env = channel_env(criterion=criterion, budget=budget)
    delta = _marginal(env.graph, budget)
    for method in ("uniform", "global-l1", "global-taylor"):
        counts = env.baseline_counts(method)
        assert abs(env.budget.cost(counts) - env.budget.goal) <= delta + 1e-6, method
        # replayed as actions (the search's seed policies), the env prunes exactly them
        actions = [env.action_for(t, counts[:t], c) for t, c in enumerate(counts)]
        env.reset()
        for a in actions:
            *_, info = env.step(np.array([a]))
        assert info["removed"] == counts, method
    # uniform: one fraction for every group (whole channels), then only the landing clamp
    b = env.budget
    wanted = _uniform(b)
    shares = [c / n for c, n in zip(wanted, b.sizes)]
    assert any(all(count_for(n, f) == c for n, c in zip(b.sizes, wanted)) for f in shares)
    landed = []
    for t, want in enumerate(wanted):
        landed.append(b.clamp(t, landed, want))
    assert landed == env.baseline_counts("uniform")


def test_channels_go_in_criterion_order():
    env = channel_env(criterion="l1")
    removed = env.removed_channels({env.graph.groups[0].name: 0.5})
    first = env.graph.groups[0]
    scores = env.scores["l1"][0]
    expect = sorted(torch.argsort(scores, stable=True)[: first.channels // 2].tolist())
    assert removed[first.name] == expect


def test_the_auto_reward_is_accuracy_for_channels_and_loss_for_weights():
    """Measured (docs/decisions.md): for channels the val loss ranked collapsed networks
    above recoverable ones; accuracy did not."""
    assert EnvConfig().reward_kind == "loss"
    assert EnvConfig(granularity="channel").reward_kind == "acc"
    assert EnvConfig(granularity="channel", reward="loss").reward_kind == "loss"
    env = channel_env()
    env.reset()
    done = False
    while not done:
        *_, done, _, info = env.step(np.array([0.0]))
    assert info["reward"] == info["proxy_accuracy"]


def random_episode(env: ChannelPruningEnv, rng: np.random.Generator) -> dict:
    """One episode of uniform random actions; the last step's info."""
    env.reset()
    done = False
    while not done:
        *_, done, _, info = env.step(rng.uniform(-1, 1, 1))
    return info


def test_auto_s_max_keeps_a_fifth_of_every_group_where_the_target_allows():
    """AMC's bound (docs/decisions.md: the most-pruned group decided the fine-tuned accuracy);
    a target out of its reach falls back to the design's 0.99, an explicit cap is kept."""
    env = channel_env()  # target 0.4
    assert env.s_max == 0.8
    rng = np.random.default_rng(1)
    for _ in range(20):
        info = random_episode(env, rng)
        for g, removed in zip(env.graph.groups, info["removed"]):
            assert removed <= count_for(g.channels, 0.8), g.name
    assert channel_env(s_max=0.99).s_max == 0.99
    graph = GRAPHS["residual"]
    beyond = next(t for t in np.arange(0.5, 1.0, 0.01)
                  if not ChannelBudget(graph, "flops", t, 0.0, 0.8).reachable())
    assert ChannelBudget(graph, "flops", beyond, 0.0, 0.99).reachable()
    assert channel_env(target=float(beyond)).s_max == 0.99


def test_auto_round_to_keeps_multiples_of_8_where_every_group_has_16_channels():
    """vgg-mini (groups of 16 to 128 channels): every group keeps a multiple of 8 or all its
    channels, and the episode still lands on the target; the tests' small nets (groups of 4 to
    8) are not rounded; an explicit round_to is kept."""
    torch.manual_seed(0)
    vgg = channel_nets._bn_init(build_model("vgg-mini", 10, 1, 28), 0)
    config = EnvConfig(granularity="channel", target=0.5)
    x = torch.randn(64, 1, 28, 28)
    data = Split(x, torch.randint(0, 10, (64,)))
    env = ChannelPruningEnv(vgg, data, (1, 28, 28), config, calibration=data)
    assert env.round_to == 8 and "keeps a multiple of 8" in channel_summary(config, env)
    rng = np.random.default_rng(0)
    for _ in range(5):
        info = random_episode(env, rng)
        for g, removed in zip(env.graph.groups, info["removed"]):
            assert (g.channels - removed) % 8 == 0, g.name
        assert abs(info["achieved_sparsity"] - 0.5) * env.budget.total <= _marginal(
            env.graph, "flops", 8) + 1e-6
    assert channel_env().round_to == 1
    assert channel_env(round_to=2).round_to == 2
