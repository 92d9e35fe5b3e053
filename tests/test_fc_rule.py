"""The k-sigma FC rule: fixed k, and `auto` picking the largest feasible k costing <= 1 point."""

from __future__ import annotations

import pytest
import torch
from conftest import TINY_INPUT

from rlprune.env.config import parse_k
from rlprune.env.fc_rule import AUTO_KS, choose_fc_rule, sigma_masks
from rlprune.env.layers import describe

pytestmark = pytest.mark.usefixtures("one_thread")


class FakeAccuracy:
    """Proxy accuracy as a function of which k's masks are on the FC layers (by zero count)."""

    def __init__(self, layers, by_k: dict[float, float], dense: float):
        self.layers = layers
        self.by_count = {sum(int((~m).sum()) for m in sigma_masks(layers, k).values()): acc
                         for k, acc in by_k.items()}
        assert len(self.by_count) == len(by_k), "every k must prune a different count"
        self.dense = dense
        self.calls = 0

    def __call__(self, model) -> float:
        self.calls += 1
        zeros = sum(int((layer.module.weight == 0).sum()) for layer in self.layers)
        return self.dense if zeros == 0 else self.by_count[zeros]


@pytest.fixture
def fc_setup(tiny_model):
    layers = describe(tiny_model, TINY_INPUT, "3sigma").owned_by("fc-rule")
    assert [layer.name for layer in layers] == ["f1", "f2"]
    dense = {layer.name: layer.module.weight.detach().clone() for layer in layers}
    counts = {k: sum(int((~m).sum()) for m in sigma_masks(layers, k).values()) for k in AUTO_KS}
    return tiny_model, layers, dense, counts


def _choose(setup, k, by_k, feasible=lambda pruned: True, dense_acc=0.992):
    model, layers, dense, _ = setup
    acc = FakeAccuracy(layers, by_k, dense_acc)
    rule = choose_fc_rule(layers, k, feasible=feasible, accuracy=acc, model=model)
    for layer in layers:  # whatever auto tried, the FC weights are back to dense
        assert torch.equal(layer.module.weight, dense[layer.name])
    return rule, acc


def _assert_masks(rule, layers, k):
    expected = sigma_masks(layers, k)
    assert rule.k == k
    assert set(rule.masks) == set(expected)
    assert all(torch.equal(rule.masks[n], expected[n]) for n in expected)
    assert rule.pruned == sum(int((~m).sum()) for m in expected.values())


def test_larger_k_prunes_more(fc_setup):
    counts = fc_setup[3]
    ordered = [counts[k] for k in AUTO_KS]
    assert ordered == sorted(ordered, reverse=True) and len(set(ordered)) == len(ordered)


def test_auto_picks_largest_k_within_one_point(fc_setup):
    # 0.992 -> 0.982 is exactly one point (a float difference of 0.010000000000000009).
    by_k = {3.0: 0.90, 2.5: 0.97, 2.0: 0.982, 1.5: 0.992, 1.0: 0.992}
    rule, _ = _choose(fc_setup, "auto", by_k)
    _assert_masks(rule, fc_setup[1], 2.0)
    assert [t["k"] for t in rule.trials] == [3.0, 2.5, 2.0]
    assert rule.trials[0]["accuracy_drop"] == pytest.approx(0.092)
    assert rule.trials[2]["proxy_accuracy"] == 0.982


def test_auto_prefers_the_largest_qualifying_k(fc_setup):
    by_k = {3.0: 0.99, 2.5: 0.992, 2.0: 0.992, 1.5: 0.992, 1.0: 0.992}
    rule, _ = _choose(fc_setup, "auto", by_k)
    _assert_masks(rule, fc_setup[1], 3.0)


def test_auto_rejects_just_over_one_point(fc_setup):
    by_k = {3.0: 0.5, 2.5: 0.5, 2.0: 0.9819, 1.5: 0.9821, 1.0: 0.99}
    rule, _ = _choose(fc_setup, "auto", by_k)
    _assert_masks(rule, fc_setup[1], 1.5)


def test_auto_skips_infeasible_k_without_measuring(fc_setup):
    counts = fc_setup[3]
    by_k = dict.fromkeys(AUTO_KS, 0.992)
    rule, acc = _choose(fc_setup, "auto", by_k, feasible=lambda pruned: pruned <= counts[2.0])
    _assert_masks(rule, fc_setup[1], 2.0)
    assert [t["feasible"] for t in rule.trials] == [False, False, True]
    assert "proxy_accuracy" not in rule.trials[0] and "proxy_accuracy" not in rule.trials[1]
    assert acc.calls == 2  # the dense model and k=2 only


def test_auto_returns_none_when_nothing_qualifies(fc_setup):
    by_k = {3.0: 0.1, 2.5: 0.2, 2.0: 0.5, 1.5: 0.9, 1.0: 0.98}
    rule, _ = _choose(fc_setup, "auto", by_k)
    assert rule.k is None and rule.masks == {} and rule.pruned == 0
    assert [t["k"] for t in rule.trials] == list(AUTO_KS)
    assert all(t["accuracy_drop"] > 0.01 for t in rule.trials)


def test_auto_returns_none_when_nothing_is_feasible(fc_setup):
    rule, acc = _choose(fc_setup, "auto", dict.fromkeys(AUTO_KS, 0.992),
                        feasible=lambda pruned: False)
    assert rule.k is None and rule.masks == {}
    assert acc.calls == 1


def test_fixed_k_measures_nothing(fc_setup):
    rule, acc = _choose(fc_setup, 2.5, dict.fromkeys(AUTO_KS, 0.0))
    _assert_masks(rule, fc_setup[1], 2.5)
    assert acc.calls == 0 and rule.trials == []


def test_parse_k():
    assert parse_k("auto") == "auto"
    assert parse_k("2.5") == 2.5
    assert parse_k(3) == 3.0
    for bad in ("0", "-1", "x", "nan"):
        with pytest.raises(ValueError):
            parse_k(bad)
