"""Baseline allocations on small hand-made weight sets, checked against values by hand."""

import pytest
import torch

from rlprune.env.baselines import (
    METHODS,
    erk,
    erk_densities,
    global_magnitude,
    lamp,
    lamp_scores,
    uniform,
)


def test_lamp_scores_by_hand():
    # sorted squares 1, 4, 9 -> suffix sums 14, 13, 9
    w = torch.tensor([3.0, -1.0, 2.0])
    assert torch.allclose(lamp_scores(w), torch.tensor([9 / 9, 1 / 14, 4 / 13],
                                                       dtype=torch.float64))


def test_lamp_scores_keep_layout_and_largest_is_one():
    w = torch.tensor([[0.5, -2.0], [1.0, 0.1]])
    s = lamp_scores(w)
    assert s.shape == w.shape
    assert s[0, 1] == 1.0  # the largest weight of a layer always scores 1
    # squares .01 .25 1 4 -> suffix 5.26 5.25 5 4
    expected = torch.tensor([[0.25 / 5.25, 1.0], [1.0 / 5.0, 0.01 / 5.26]], dtype=torch.float64)
    assert torch.allclose(s, expected)


def test_lamp_prunes_lowest_scores_across_layers():
    a = torch.tensor([1.0, 2.0, 3.0])  # scores 1/14, 4/13, 1
    b = torch.tensor([10.0, 10.0])  # scores 100/200 = 0.5, 1
    # three lowest: 1/14 (a), 4/13 (a), 0.5 (b)
    assert lamp([a, b], 3) == [2, 1]


def test_global_magnitude_is_one_threshold():
    a = torch.tensor([0.1, 5.0, 0.3])
    b = torch.tensor([0.2, 0.05, 4.0, 0.4])
    # the four smallest |w| overall: 0.05, 0.1, 0.2, 0.3
    assert global_magnitude([a, b], 4) == [2, 2]


def test_global_magnitude_matches_torch_global_unstructured():
    from torch import nn
    from torch.nn.utils import prune

    torch.manual_seed(0)
    layers = [nn.Linear(7, 5), nn.Linear(5, 3)]
    weights = [layer.weight.detach().clone() for layer in layers]
    n = 20
    prune.global_unstructured([(layer, "weight") for layer in layers],
                              pruning_method=prune.L1Unstructured, amount=n)
    expected = [int((layer.weight_mask == 0).sum()) for layer in layers]
    assert global_magnitude(weights, n) == expected


def test_uniform_same_sparsity_and_exact_total():
    ws = [torch.randn(10), torch.randn(30), torch.randn(60)]
    counts = uniform(ws, 50)
    assert counts == [5, 15, 30]
    counts = uniform(ws, 51)  # remainder goes to the largest layer
    assert sum(counts) == 51 and counts[2] == 31


def test_erk_densities_by_hand():
    # conv (4, 2, 3, 3): (4+2+3+3)/(4*2*3*3) = 1/6, 72 weights
    # fc (10, 20): 30/200 = 0.15, 200 weights; keep 50 -> eps = 50 / (12 + 30)
    d = erk_densities([(4, 2, 3, 3), (10, 20)], 50)
    eps = 50 / 42
    assert d == pytest.approx([eps / 6, eps * 0.15])


def test_erk_makes_over_dense_layers_dense_and_resolves():
    # (2,1,1,1): raw 5/2 = 2.5 on 2 weights; (10, 20): 0.15 on 200; keep 30
    # first eps = 30/35 -> density 2.14 > 1, so that layer is dense and the rest re-solved:
    # 28 weights left for the fc layer -> density 0.14
    d = erk_densities([(2, 1, 1, 1), (10, 20)], 30)
    assert d == pytest.approx([1.0, 0.14])
    counts = erk([torch.randn(2, 1, 1, 1), torch.randn(10, 20)], 202 - 30)
    assert counts == [0, 172]


@pytest.mark.parametrize("method", sorted(METHODS))
@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.9, 0.99])
def test_every_method_hits_its_count_exactly(method, fraction):
    g = torch.Generator().manual_seed(1)
    ws = [torch.randn(8, 1, 3, 3, generator=g), torch.randn(16, 8, 3, 3, generator=g),
          torch.randn(10, 64, generator=g)]
    total = sum(w.numel() for w in ws)
    n = int(round(fraction * total))
    counts = METHODS[method](ws, n)
    assert sum(counts) == n
    assert all(0 <= c <= w.numel() for c, w in zip(counts, ws))
