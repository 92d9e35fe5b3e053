"""PruningEnv on a tiny CNN: API checks, determinism, the budget landing exactly on target,
rewards, info, BatchNorm recalibration, and refusing infeasible targets.

Expected values are recomputed independently: pruned weights are counted as exact zeros in the
env's working model, the proxy accuracy is recomputed on a separately masked copy of the
dense model, and parameter and FLOP counts come from the hand counts in conftest.
"""

from __future__ import annotations

import copy
import math
import warnings

import gymnasium
import numpy as np
import pytest
import torch
from conftest import (
    TINY_CONV,
    TINY_FC,
    TINY_FLOPS,
    TINY_INPUT,
    TINY_PARAMS,
    TINY_WEIGHTS,
    make_tiny,
    tiny_split,
)
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from torch import nn

from rlprune.env.masks import magnitude_mask, sigma_mask
from rlprune.env.pruning_env import EnvConfig, PruningEnv, resolve_action_mapping
from rlprune.models.errors import UserError

pytestmark = pytest.mark.usefixtures("one_thread")

# fvcore's total also counts BatchNorm in eval mode (2 per element with affine: 8 channels x
# 4x4) and the adaptive average pool (1 per input element: 16 channels x 4x4).
TINY_FLOPS_TOTAL = sum(TINY_FLOPS.values()) + 2 * 8 * 16 + 16 * 16
N_ALL = sum(TINY_WEIGHTS.values())  # 3,844 prunable weights
VAL = tiny_split(64, seed=1)


def make_env(**config) -> PruningEnv:
    calibration = config.pop("calibration", None)
    return PruningEnv(make_tiny(0), VAL, TINY_INPUT, EnvConfig(**config),
                      calibration=calibration)


def run_episode(env: PruningEnv, actions, seed: int | None = 0):
    obs, info = env.reset(seed=seed)
    trace = [(obs, 0.0, False, False, info)]
    for i, a in enumerate(actions):
        obs, reward, terminated, truncated, info = env.step(np.array([a], dtype=np.float32))
        trace.append((obs, reward, terminated, truncated, info))
        assert terminated == (i == len(actions) - 1)
    return trace


def zeros(module: nn.Module) -> int:
    return int((module.weight == 0).sum())


def fc_sigma_pruned(k: float) -> dict[str, int]:
    """What the k-sigma rule prunes in each FC layer of the dense tiny model (computed here)."""
    model = make_tiny(0)
    return {name: int((~sigma_mask(getattr(model, name).weight, k)).sum()) for name in TINY_FC}


def accuracy(model: nn.Module) -> float:
    with torch.no_grad():
        return (model.eval()(VAL.x).argmax(1) == VAL.y).float().mean().item()


def expected_accuracy(counts: dict[str, int], fc_masks_k: float | None) -> float:
    """Proxy accuracy recomputed on a fresh dense copy, masked here by magnitude and k-sigma."""
    model = make_tiny(0)
    with torch.no_grad():
        for name, n in counts.items():
            w = getattr(model, name).weight
            w.mul_(magnitude_mask(w, n / w.numel()))
        if fc_masks_k is not None:
            for name in TINY_FC:
                w = getattr(model, name).weight
                w.mul_(sigma_mask(w, fc_masks_k))
    return accuracy(model)


# -- API conformance ----------------------------------------------------------------------------
@pytest.mark.parametrize("config", [
    {"target": 0.9, "fc_k": 3.0},
    {"target": 0.5, "fc_rule": "agent", "scope": "agent"},
])
def test_passes_gymnasium_and_sb3_env_checkers(config, tiny_calibration):
    from gymnasium.utils.env_checker import check_env as gym_check
    from stable_baselines3.common.env_checker import check_env as sb3_check

    env = make_env(**config, bn_recalibration_batches=2, bn_batch_size=16,
                   calibration=tiny_calibration)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any checker complaint fails the test
        gym_check(env, skip_render_check=True)
        sb3_check(make_env(**config), warn=True)
    assert env.observation_space == gymnasium.spaces.Box(0.0, 1.0, (12,), np.float32)
    assert env.action_space == gymnasium.spaces.Box(-1.0, 1.0, (1,), np.float32)


def test_same_seed_same_actions_same_episode(tiny_calibration):
    config = dict(target=0.93, fc_k=3.0, bn_recalibration_batches=2, bn_batch_size=32,
                  calibration=tiny_calibration)
    actions_a, actions_b = [0.3, -0.7, 0.9], [-1.0, 1.0, 0.0]
    one, two = make_env(**config), make_env(**config)
    first = run_episode(one, actions_a, seed=5)
    run_episode(one, actions_b, seed=6)  # a different episode in between changes nothing
    again = run_episode(one, actions_a, seed=5)
    fresh = run_episode(two, actions_a, seed=5)
    for other in (again, fresh):
        for (o1, r1, t1, u1, i1), (o2, r2, t2, u2, i2) in zip(first, other, strict=True):
            assert np.array_equal(o1, o2) and r1 == r2 and (t1, u1) == (t2, u2)
            # all but the evaluation's wall time (`eval_s`), which no replay repeats
            assert {**i1, "eval_s": None} == {**i2, "eval_s": None}
    assert all(torch.equal(a, b) for a, b in zip(one.model.state_dict().values(),
                                                 two.model.state_dict().values()))


def test_env_does_not_modify_the_model_passed_in(tiny_calibration):
    model = make_tiny(0)
    assert accuracy(model) == 1.0  # VAL is labelled by the dense model
    before = copy.deepcopy(model.state_dict())
    # `auto` measures k=1 on the FC layers (in the env's copy), then refuses the target.
    with pytest.raises(UserError, match="auto"):
        PruningEnv(model, VAL, TINY_INPUT, EnvConfig(target=0.5, fc_k="auto"))
    env = PruningEnv(model, VAL, TINY_INPUT,
                     EnvConfig(target=0.9, fc_k=3.0, bn_recalibration_batches=2,
                               bn_batch_size=16),
                     calibration=tiny_calibration)
    run_episode(env, [1.0, 1.0, 1.0])
    run_episode(env, [-1.0, 0.5, 0.0])
    assert env.model is not model
    assert set(before) == set(model.state_dict())
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), name
    assert model.bn.momentum == 0.1 and not model.training
    assert not hasattr(model.c1, "weight_mask")


# -- observations ---------------------------------------------------------------------------------
def test_observation_features_by_hand():
    env = make_env(target=0.9, fc_k=3.0)
    fixed = sum(fc_sigma_pruned(3.0).values())
    assert env.budget.fixed == fixed and env.budget.total == N_ALL
    obs, _ = env.reset(seed=0)
    # index, type, in ch, out ch, kernel, stride, fmap, params, FLOPs, reduced, rest, previous
    # over the agent layers c1 (1->4, s1, 8x8), c2 (4->8, s2, 4x4), c3 (8->16, s1, 4x4).
    expected = [0, 0, 0, 0, 0, 0, 1, 0, 0, fixed / N_ALL, (288 + 1152) / N_ALL, 0]
    np.testing.assert_allclose(obs, expected, rtol=1e-6)
    obs, *_, info = env.step(np.array([1.0], np.float32))
    n0 = round(info["sparsity"] * 36)
    expected = [0.5, 0, (4 - 1) / 7, (8 - 4) / 12, 0, 1, 0, (288 - 36) / (1152 - 36),
                (4608 - 2304) / (18432 - 2304), (fixed + n0) / N_ALL, 1152 / N_ALL, n0 / 36]
    np.testing.assert_allclose(obs, expected, rtol=1e-6)
    obs, *_ = env.step(np.array([-1.0], np.float32))
    assert obs[0] == 1.0 and obs[6] == 0.0 and obs[7] == 1.0 and obs[8] == 1.0
    obs, reward, terminated, truncated, info = env.step(np.array([0.0], np.float32))
    assert terminated and not truncated
    assert env.observation_space.contains(obs)
    assert obs[9] == pytest.approx(round(0.9 * N_ALL) / N_ALL) and obs[10] == 0.0
    with pytest.raises(RuntimeError, match="reset"):
        env.step(np.array([0.0], np.float32))


def test_action_maps_linearly_onto_sparsity_range():
    env = make_env(target=0.5, fc_rule="none", scope="agent", s_min=0.2, s_max=0.8)
    assert env.action_to_sparsity(np.array([-1.0])) == pytest.approx(0.2)
    assert env.action_to_sparsity(np.array([0.0])) == pytest.approx(0.5)
    assert env.action_to_sparsity(np.array([1.0])) == pytest.approx(0.8)
    assert env.action_to_sparsity(np.array([7.0])) == pytest.approx(0.8)


def test_feasible_mapping_spans_what_the_budget_leaves_by_hand():
    """Target 0.5 over the conv layers only (scope agent, no FC rule): goal 738 of 1,476.
    Layer c1 (36) may prune [738 - 0.99*(288+1152), 738] ∩ [0, 36] = [0, 36]; after 36, c2
    (288) may prune [702 - round(0.99*1152), 702] ∩ [0, 285] = [0, 285]; c3 takes the rest."""
    def first_two(a1, a2):
        env = make_env(target=0.5, fc_rule="none", scope="agent", action_mapping="feasible")
        infos = [info for *_, info in run_episode(env, [a1, a2, 0.0])[1:]]
        return [round(i["sparsity"] * w) for i, w in zip(infos, TINY_CONV.values())], infos

    counts, infos = first_two(1.0, -1.0)
    assert counts == [36, 0, 702]
    assert [i["requested"] for i in infos] == [i["sparsity"] for i in infos]
    counts, _ = first_two(1.0, 1.0)
    assert counts == [36, 285, 417]
    counts, _ = first_two(-1.0, 0.0)  # c2 then may prune [738 - 1140, 285] -> [0, 285]
    assert counts == [0, round(0.5 * 285), 738 - round(0.5 * 285)]


def test_absolute_mapping_is_cut_by_the_clamp_by_hand():
    """Target 0.9 of the conv layers (goal 1,328 of 1,476). c1 asks for 0 and may
    (1328 - 285 - 1140 < 0); c2 asks for 0 but must prune at least 1328 - 1140 = 188; c3 must
    then prune 1,140 whatever it asks."""
    env = make_env(target=0.9, fc_rule="none", scope="agent", action_mapping="absolute")
    infos = [info for *_, info in run_episode(env, [-1.0, -1.0, -1.0])[1:]]
    assert [round(i["sparsity"] * w) for i, w in zip(infos, TINY_CONV.values())] == [0, 188, 1140]
    assert [i["requested"] for i in infos] == [0.0, 0.0, 0.0]


def test_auto_mapping_is_feasible_only_when_a_layer_before_the_last_holds_most_weights():
    assert resolve_action_mapping("auto", [10, 100, 5]) == "feasible"  # 100 of 115, not last
    assert resolve_action_mapping("auto", [10, 20, 100]) == "absolute"  # the largest is last
    assert resolve_action_mapping("auto", [50, 30, 20]) == "absolute"  # half is not most
    assert resolve_action_mapping("auto", [51, 29, 20]) == "feasible"
    for mapping in ("absolute", "feasible"):
        assert resolve_action_mapping(mapping, [10, 100, 5]) == mapping


def test_auto_mapping_on_the_tiny_net_and_its_episodes():
    """Every layer: f1 holds 2,048 of 3,844 weights and is not last -> feasible, and the
    episode is the feasible one. Conv layers only: c3 (1,152 of 1,476) is last -> absolute."""
    actions = [0.3, -0.5, 0.1, 0.7, -0.2]
    every = dict(target=0.8, fc_rule="agent", scope="agent")
    auto = make_env(**every)
    assert auto.action_mapping == "feasible"
    *_, info = run_episode(auto, actions)[-1]
    *_, same = run_episode(make_env(**every, action_mapping="feasible"), actions)[-1]
    assert info["sparsities"] == same["sparsities"]
    conv = dict(target=0.8, fc_rule="none", scope="agent")
    assert make_env(**conv).action_mapping == "absolute"
    *_, info = run_episode(make_env(**conv), actions[:3])[-1]
    *_, same = run_episode(make_env(**conv, action_mapping="absolute"), actions[:3])[-1]
    assert info["sparsities"] == same["sparsities"]


@pytest.mark.parametrize("mapping", ["absolute", "feasible"])
def test_action_for_inverts_the_mapping(mapping):
    env = make_env(target=0.7, fc_k=2.0, action_mapping=mapping)
    wanted = [30, 200]  # c1, c2; c3 closes the budget
    actions = [env.action_for(t, wanted[:t], n) for t, n in enumerate(wanted)]
    *_, info = run_episode(env, [*actions, 0.0])[-1]
    assert [round(info["sparsities"][name] * TINY_CONV[name]) for name in ("c1", "c2")] == wanted


def test_proxy_loss_is_the_val_cross_entropy():
    env = make_env(target=0.6, fc_k=2.0)
    *_, info = run_episode(env, [0.2, 0.2, 0.2])[-1]
    with torch.no_grad():
        logits = env.model(VAL.x)
    assert info["proxy_loss"] == pytest.approx(
        nn.functional.cross_entropy(logits, VAL.y).item(), rel=1e-5)


# -- episodes always land on the target (property) ----------------------------------------------
SPARSITY_RANGES = [(0.0, 0.99), (0.0, 1.0), (0.2, 0.8)]


@st.composite
def episodes(draw):
    fc_rule = draw(st.sampled_from(["3sigma", "agent", "none"]))
    n_agent = len(TINY_WEIGHTS) if fc_rule == "agent" else len(TINY_CONV)
    action = st.one_of(st.floats(-1.0, 1.0, width=32), st.sampled_from([-1.0, 0.0, 1.0]))
    return dict(
        scope=draw(st.sampled_from(["total", "agent"])),
        fc_rule=fc_rule,
        fc_k=draw(st.sampled_from([1.0, 2.0, 3.0])),
        fc_during_search=draw(st.booleans()),
        action_mapping=draw(st.sampled_from(["auto", "absolute", "feasible"])),
        target=draw(st.floats(0.01, 0.99)),
        sparsity_range=draw(st.sampled_from(SPARSITY_RANGES)),
        actions=draw(st.lists(action, min_size=n_agent, max_size=n_agent)),
    )


@settings(max_examples=200, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(episodes())
def test_every_episode_lands_exactly_on_target(case):
    scope, fc_rule, k = case["scope"], case["fc_rule"], case["fc_k"]
    target, (s_min, s_max) = case["target"], case["sparsity_range"]
    agent = list(TINY_WEIGHTS) if fc_rule == "agent" else list(TINY_CONV)
    fc_pruned = fc_sigma_pruned(k) if fc_rule == "3sigma" else {}
    # The budget, computed here from the design: N weights in scope, F pruned by the FC rule.
    n_scope = N_ALL if scope == "total" else sum(TINY_WEIGHTS[n] for n in agent)
    f_scope = sum(fc_pruned.values()) if scope == "total" else 0
    goal = round(target * n_scope)
    most = sum(round(s_max * TINY_WEIGHTS[n]) for n in agent)
    fewest = sum(round(s_min * TINY_WEIGHTS[n]) for n in agent)
    feasible = fewest <= goal - f_scope <= most

    config = dict(target=target, scope=scope, fc_rule=fc_rule, fc_k=k, s_min=s_min,
                  s_max=s_max, fc_during_search=case["fc_during_search"],
                  action_mapping=case["action_mapping"])
    event(f"feasible={feasible}, fc_rule={fc_rule}, scope={scope}")
    if not feasible:
        with pytest.raises(UserError):
            make_env(**config)
        return
    env = make_env(**config)
    assert [layer.name for layer in env.agent_layers] == agent
    trace = run_episode(env, case["actions"])
    for obs, *_ in trace:
        assert env.observation_space.contains(obs)
    assert all(r == 0.0 for _, r, *_ in trace[:-1])
    *_, reward, terminated, truncated, info = trace[-1]
    assert terminated and not truncated

    # Count what was really pruned: exact zeros in the env's working model.
    counts = {name: zeros(getattr(env.model, name)) for name in agent}
    for (_, _, _, _, step), name in zip(trace[1:], agent, strict=True):
        w = TINY_WEIGHTS[name]
        assert step["layer"] == name
        assert counts[name] == round(step["sparsity"] * w)
        assert round(s_min * w) <= counts[name] <= round(s_max * w)
        if env.action_mapping == "feasible":  # nothing is cut: applied as asked
            assert step["requested"] == step["sparsity"]
    for name, n in fc_pruned.items():
        assert zeros(getattr(env.model, name)) == (n if case["fc_during_search"] else 0)
    for name in set(TINY_FC) - set(agent) - set(fc_pruned):
        assert zeros(getattr(env.model, name)) == 0
    pruned_in_scope = sum(counts.values()) + f_scope
    assert pruned_in_scope == goal == info["pruned"] == env.budget.goal
    assert info["achieved_sparsity"] == pytest.approx(goal / n_scope)
    assert abs(info["achieved_sparsity"] - target) <= 0.5 / n_scope + 1e-12

    # info: every layer's sparsity, costs, and the proxy accuracy of this masked model.
    everything = {**dict.fromkeys(TINY_WEIGHTS, 0), **fc_pruned, **counts}
    assert info["sparsities"] == pytest.approx(
        {name: n / TINY_WEIGHTS[name] for name, n in everything.items()})
    assert info["params"] == {"dense": TINY_PARAMS,
                              "nonzero": TINY_PARAMS - sum(everything.values())}
    saved = sum(n / TINY_WEIGHTS[name] * TINY_FLOPS[name] for name, n in everything.items())
    assert info["flops"]["dense"] == TINY_FLOPS_TOTAL
    assert abs(info["flops"]["nonzero"] - (TINY_FLOPS_TOTAL - saved)) <= 0.5 + 1e-9
    acc = expected_accuracy(counts, k if fc_pruned and case["fc_during_search"] else None)
    assert info["proxy_accuracy"] == acc
    assert reward == -info["proxy_loss"]  # the default reward, loss


# -- refusals -----------------------------------------------------------------------------------
def test_infeasible_target_fc_rule_alone_is_refused():
    fixed = sum(fc_sigma_pruned(3.0).values())
    target = (fixed - 50) / N_ALL  # the FC rule alone already prunes more than this
    with pytest.raises(UserError, match="FC rule alone prunes") as info:
        make_env(target=target, fc_k=3.0)
    assert f"{fixed:,}" in str(info.value)
    # The same target is fine when the agent's scope is its own layers.
    make_env(target=target, fc_k=3.0, scope="agent")


def test_target_beyond_agent_reach_is_refused():
    reach = sum(round(0.99 * w) for w in TINY_CONV.values())
    with pytest.raises(UserError, match="at most"):
        make_env(target=(reach + 10) / N_ALL, fc_rule="none", s_max=0.99)
    make_env(target=(reach - 10) / N_ALL, fc_rule="none", s_max=0.99)
    # `auto` reaches as far as LAMP and ERK prune, past 0.99 here
    assert make_env(target=(reach + 10) / N_ALL, fc_rule="none").s_max > 0.99


def test_auto_fc_k_falls_back_to_dense_fc_layers():
    # At k=1 the rule prunes fewer weights than any larger k; pick a target below even that
    # which the convolutions can still reach on their own.
    reach = sum(round(0.99 * w) for w in TINY_CONV.values())
    goal = min(sum(fc_sigma_pruned(1.0).values()), reach) - 50
    target = goal / N_ALL
    env = make_env(target=target, fc_k="auto")
    assert env.fc.k is None and env.fc.pruned == 0 and env.budget.fixed == 0
    assert [t["feasible"] for t in env.fc.trials] == [False] * 5
    *_, info = run_episode(env, [0.0, 0.0, 0.0])[-1]
    assert info["sparsities"]["f1"] == 0.0 and zeros(env.model.f1) == 0


def test_auto_fc_k_refusal_explains_each_k():
    # the library names the field (the command line writes its flag, --fc-k)
    with pytest.raises(UserError, match="^fc_k auto found no usable k") as info:
        make_env(target=0.95, fc_k="auto")
    assert "k=3" in str(info.value) and "k=1" in str(info.value)
    assert info.value.setting == "fc_k" and "--" not in str(info.value)


def test_agent_without_layers_is_refused():
    mlp = nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
    with pytest.raises(UserError, match="no layers"):
        PruningEnv(mlp, VAL, TINY_INPUT, EnvConfig(target=0.5, fc_rule="3sigma", fc_k=1.0))
    env = PruningEnv(mlp, VAL, TINY_INPUT, EnvConfig(target=0.5, fc_rule="agent"))
    assert [layer.name for layer in env.agent_layers] == ["1", "3"]


@pytest.mark.parametrize("bad, words", [
    ({"target": 0.0}, "target"), ({"target": 1.0}, "target"), ({"target": 1.5}, "target"),
    ({"target": -0.1}, "target"), ({"scope": "all"}, "scope"), ({"fc_rule": "x"}, "fc_rule"),
    ({"reward": "accuracy"}, "reward"), ({"s_min": 0.5, "s_max": 0.5}, "s_min"),
])
def test_bad_config_is_refused(bad, words):
    with pytest.raises(UserError, match=words):
        make_env(**{"target": 0.9, "fc_k": 3.0, **bad})


# -- rewards --------------------------------------------------------------------------------------
def test_reward_choices():
    actions = [0.2, -0.4, 0.6]
    results = {}
    for reward in ("acc", "loss", "-err*log(flops)", "-err*log(params)"):
        *_, r, _, _, info = run_episode(make_env(target=0.9, fc_k=3.0, reward=reward),
                                        actions)[-1]
        results[reward] = (r, info)
    acc_reward, info = results["acc"]
    acc = info["proxy_accuracy"]
    assert acc_reward == acc and 0.0 < acc < 1.0  # a real error term for the other two
    assert results["loss"][0] == -info["proxy_loss"] and info["proxy_loss"] > 0.0
    # Non-zero params and FLOPs recomputed from the layer sparsities and the hand counts.
    sparsity = info["sparsities"]
    params = TINY_PARAMS - sum(round(s * TINY_WEIGHTS[n]) for n, s in sparsity.items())
    flops = TINY_FLOPS_TOTAL - sum(s * TINY_FLOPS[n] for n, s in sparsity.items())
    assert info["params"]["nonzero"] == params
    assert results["-err*log(params)"][0] == pytest.approx(-(1 - acc) * math.log(params))
    assert results["-err*log(flops)"][0] == pytest.approx(-(1 - acc) * math.log(flops),
                                                          rel=1e-4)
    for _, other in results.values():
        assert other["proxy_accuracy"] == acc and other["sparsities"] == sparsity


# -- BatchNorm recalibration ----------------------------------------------------------------
def test_bn_recalibration_scores_with_fresh_stats_then_restores(tiny_calibration):
    batches, batch_size = 3, 32
    env = make_env(target=0.9, fc_k=3.0, bn_recalibration_batches=batches,
                   bn_batch_size=batch_size, calibration=tiny_calibration, proxy="plain")
    bn = env.model.bn
    bn.momentum = 0.05  # a model's own setting survives recalibration
    dense_stats = {k: v.clone() for k, v in bn.state_dict().items()}
    seen, scored = [], []
    bn.register_forward_hook(lambda m, inputs, out: seen.append(
        (m.training, m.momentum, inputs[0].detach().clone())))
    score = env.evaluator.score

    def spy(model):
        scored.append({k: v.clone() for k, v in model.bn.state_dict().items()})
        return score(model)

    env.evaluator.score = spy
    *_, reward, _, _, info = run_episode(env, [0.5, -0.5, 0.1])[-1]

    calibration_calls = [s for s in seen if s[0]]
    assert len(calibration_calls) == batches
    assert all(m is None and x.shape[0] == batch_size for _, m, x in calibration_calls)
    # Scored with the cumulative average of the calibration batches' statistics ...
    assert len(scored) == 1
    means = torch.stack([x.mean((0, 2, 3)) for *_, x in calibration_calls]).mean(0)
    variances = torch.stack([x.var((0, 2, 3), unbiased=True) for *_, x in calibration_calls])
    torch.testing.assert_close(scored[0]["running_mean"], means)
    torch.testing.assert_close(scored[0]["running_var"], variances.mean(0))
    assert not torch.allclose(scored[0]["running_mean"], dense_stats["running_mean"])
    # ... and that is the accuracy reported.
    check = copy.deepcopy(env.model)
    check.bn.running_mean.copy_(scored[0]["running_mean"])
    check.bn.running_var.copy_(scored[0]["running_var"])
    assert info["proxy_accuracy"] == accuracy(check) and reward == -info["proxy_loss"]
    # Afterwards the working model is back to the dense statistics, in eval mode.
    for key, value in bn.state_dict().items():
        assert torch.equal(value, dense_stats[key]), key
    assert bn.momentum == 0.05 and not bn.training and not env.model.training


def test_bn_recalibration_without_calibration_data_scores_dense_stats():
    env = make_env(target=0.9, fc_k=3.0, bn_recalibration_batches=3)
    *_, reward, _, _, info = run_episode(env, [0.5, -0.5, 0.1])[-1]
    plain = make_env(target=0.9, fc_k=3.0)
    assert reward == run_episode(plain, [0.5, -0.5, 0.1])[-1][1]


def test_last_info_carries_the_documented_keys():
    env = make_env(target=0.9, fc_k=2.0, action_mapping="absolute")
    *_, info = run_episode(env, [0.0, 0.0, 0.0])[-1]
    for key in ("layer", "sparsity", "requested", "sparsities", "achieved_sparsity", "pruned",
                "proxy_accuracy", "proxy_loss", "reward", "params", "flops"):
        assert key in info
    assert set(info["sparsities"]) == set(TINY_WEIGHTS)
    assert set(info["flops"]) == set(info["params"]) == {"dense", "nonzero"}
    assert info["requested"] == pytest.approx(0.495)


@pytest.mark.parametrize("proxy", ["plain", "fast"])
@pytest.mark.parametrize("fixed", [True, False])
def test_bn_calibration_batches_fixed_or_fresh(tiny_calibration, fixed, proxy):
    """Fixed batches: an allocation scores the same in every episode (the reward is a function
    of the allocation); fresh batches: the same allocation gets another calibration each time."""
    env = make_env(target=0.9, fc_k=3.0, bn_recalibration_batches=1, bn_batch_size=8,
                   bn_fixed_batches=fixed, calibration=tiny_calibration, proxy=proxy)
    seen = []
    scoring = env.model if proxy == "plain" else env._fast.copy  # the model recalibrated
    scoring.bn.register_forward_hook(
        lambda m, inputs, out: seen.append(inputs[0].detach().clone()) if m.training else None)
    rewards = [run_episode(env, [0.5, -0.5, 0.1], seed=None)[-1][1] for _ in range(4)]
    same_batches = all(torch.equal(seen[0], x) for x in seen[1:])
    assert len(seen) == 4 and same_batches == fixed
    if fixed:
        assert len(set(rewards)) == 1


def _play(env: PruningEnv, counts: list[int]) -> list[int]:
    """Play the actions that ask for `counts` (as the search's seed policies do)."""
    actions = [env.action_for(t, counts[:t], count) for t, count in enumerate(counts)]
    info = run_episode(env, actions)[-1][-1]
    return [round(info["sparsities"][layer.name] * layer.params) for layer in env.agent_layers]


@pytest.mark.parametrize("mapping", ["absolute", "feasible"])
def test_s_max_auto_makes_room_for_lamp_and_erk(mapping):
    from rlprune.env.baselines import METHODS

    env = make_env(target=0.985, fc_rule="none", scope="agent", action_mapping=mapping)
    weights = [layer.module.weight for layer in env.agent_layers]
    counts = {m: METHODS[m](weights, env.budget.agent_goal) for m in ("lamp", "erk")}
    most = max(n / w.numel() for c in counts.values() for n, w in zip(c, weights))
    assert most > 0.99 and env.s_max == most
    for method, wanted in counts.items():
        assert _play(env, wanted) == wanted, method
    if mapping == "absolute":  # capped at the design's 0.99, LAMP cannot be played
        capped = make_env(target=0.985, fc_rule="none", scope="agent", action_mapping=mapping,
                          s_max=0.99)
        assert capped.s_max == 0.99
        assert _play(capped, counts["lamp"]) != counts["lamp"]


def test_s_max_auto_is_the_design_s_max_where_the_baselines_fit():
    assert make_env(target=0.9, fc_rule="agent", scope="agent").s_max == 0.99
