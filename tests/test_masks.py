"""Pruning primitives: magnitude masks, the in-place pruner, k-sigma masks, masks that hold."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from rlprune.env.masks import (
    MagnitudePruner,
    apply_masks,
    count_for,
    hold_masks,
    magnitude_mask,
    make_permanent,
    sigma_mask,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def test_count_for_rounds_and_clips():
    assert count_for(10, 0.34) == 3
    assert count_for(10, 0.36) == 4
    assert count_for(10, 0.0) == 0
    assert count_for(10, 1.0) == 10
    assert count_for(10, 1.5) == 10
    assert count_for(10, -0.2) == 0


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.9, 0.99, 1.0])
def test_magnitude_mask_removes_the_smallest(sparsity):
    w = torch.randn(12, 5, 3, 3, generator=torch.Generator().manual_seed(0))
    mask = magnitude_mask(w, sparsity)
    assert mask.shape == w.shape and mask.dtype == torch.bool
    n_pruned = int((~mask).sum())
    assert n_pruned == round(sparsity * w.numel())
    if 0 < n_pruned < w.numel():
        assert w.abs()[~mask].max() <= w.abs()[mask].min()


def test_magnitude_mask_by_hand():
    w = torch.tensor([[0.5, -0.1, 3.0], [-2.0, 0.05, -0.7]])
    expected = torch.tensor([[False, False, True], [True, False, True]])
    assert torch.equal(magnitude_mask(w, 0.5), expected)


def test_magnitude_pruner_writes_dense_times_mask_in_place():
    gen = torch.Generator().manual_seed(1)
    layers = [nn.Parameter(torch.randn(8, 4, 3, 3, generator=gen)),
              nn.Parameter(torch.randn(16, 32, generator=gen))]
    dense = [p.detach().clone() for p in layers]
    pointers = [p.data_ptr() for p in layers]
    pruner = MagnitudePruner(layers)
    for n in (100, 7, 288, 0, 250):  # not cumulative: each call starts from the dense weights
        pruner.apply(0, n)
        mask = magnitude_mask(dense[0], n / dense[0].numel())
        assert torch.equal(layers[0].data, dense[0] * mask)
        assert int((layers[0] == 0).sum()) == n
        assert torch.equal(layers[1].data, dense[1])  # the other layer is untouched
    pruner.apply(1, 400)
    assert int((layers[1] == 0).sum()) == 400
    assert [p.data_ptr() for p in layers] == pointers  # in place, no copies
    pruner.apply(0, 0)
    pruner.apply(1, 0)  # pruning nothing gives back the dense weights
    assert all(torch.equal(p.data, d) for p, d in zip(layers, dense))


def _gaussian(n: int = 1_000_000, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("k, tol", [(1.0, 2e-3), (2.0, 1e-3), (3.0, 3e-4)])
def test_sigma_mask_on_gaussian_weights(k, tol):
    expected = math.erf(k / math.sqrt(2))  # P(|z| < k): 68.27%, 95.45%, 99.73%
    for w in (_gaussian(), 0.3 + 0.02 * _gaussian(seed=1)):  # any mean and scale
        removed = (~sigma_mask(w, k)).double().mean().item()
        assert abs(removed - expected) < tol, (k, removed, expected)


def test_sigma_mask_by_hand():
    w = torch.tensor([-10.0, -1.0, 0.0, 1.0, 10.0])
    sigma = math.sqrt((100 + 1 + 0 + 1 + 100) / 5)  # population std, mean 0
    assert sigma > 1.0
    assert torch.equal(sigma_mask(w, 1.0), torch.tensor([True, False, False, False, True]))
    assert not sigma_mask(w, 10.0 / sigma + 0.01).any()  # every weight inside the band
    assert torch.equal(sigma_mask(w.view(5, 1), 1.0).flatten(), sigma_mask(w, 1.0))


def _small_net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(),
                         nn.Linear(4 * 6 * 6, 10))


def test_hold_masks_survive_momentum_and_weight_decay():
    model = _small_net()
    masks = {"0": magnitude_mask(model[0].weight, 0.5),
             "4": magnitude_mask(model[4].weight, 0.8)}
    hold_masks(model, masks)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-2)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 1, 8, 8, generator=gen), torch.randint(0, 10, (32,), generator=gen)
    kept_before = model[4].weight.detach()[masks["4"]].clone()
    model.train()
    for _ in range(6):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        model(x)  # the forward pass recomputes the effective weight
        for name, mask in masks.items():
            weight = dict(model.named_modules())[name].weight
            assert torch.all(weight[~mask] == 0)
            assert torch.all(weight[mask] != 0)
    # Training happened, and weight decay moved the hidden originals under the mask.
    assert not torch.equal(model[4].weight.detach()[masks["4"]], kept_before)
    assert torch.all(model[4].weight_orig.detach()[~masks["4"]] != 0)

    make_permanent(model)
    for name, mask in masks.items():
        module = dict(model.named_modules())[name]
        assert isinstance(module.weight, nn.Parameter)
        assert not hasattr(module, "weight_orig") and not hasattr(module, "weight_mask")
        assert torch.all(module.weight[~mask] == 0)
        assert int((module.weight == 0).sum()) == int((~mask).sum())
    assert set(model.state_dict()) == set(_small_net().state_dict())
    model(x)  # still a working model, and the zeros are still zeros
    assert torch.all(model[0].weight[~masks["0"]] == 0)


def test_apply_masks_zeroes_in_place():
    model = _small_net()
    dense = model[4].weight.detach().clone()
    mask = magnitude_mask(dense, 0.25)
    apply_masks(model, {"4": mask})
    assert torch.equal(model[4].weight.detach(), dense * mask)
    assert not hasattr(model[4], "weight_mask")
