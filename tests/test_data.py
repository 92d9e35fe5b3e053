"""Embedded datasets, their fixed disjoint splits, and refusing data that is not there."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from rlprune.models.data import SPLIT_SEED, _stratified, load_dataset, spec_of
from rlprune.models.errors import UserError


def _rows(x: torch.Tensor) -> set[bytes]:
    return {row.numpy().tobytes() for row in x.flatten(1)}


def test_mnist5k_sizes_and_types(mnist5k):
    assert mnist5k.name == "mnist5k"
    assert (len(mnist5k.train), len(mnist5k.val), len(mnist5k.test)) == (3500, 500, 1000)
    for split in (mnist5k.train, mnist5k.val, mnist5k.test):
        assert split.x.shape[1:] == (1, 28, 28)
        assert split.x.dtype == torch.float32 and split.y.dtype == torch.int64
        assert set(split.y.tolist()) == set(range(10))
    # Normalised with the MNIST mean/std: roughly zero mean, unit variance.
    assert abs(mnist5k.train.x.mean().item()) < 0.1
    assert abs(mnist5k.train.x.std().item() - 1.0) < 0.1


def test_mnist5k_splits_are_disjoint_by_content(mnist5k):
    train, val, test = (_rows(s.x) for s in (mnist5k.train, mnist5k.val, mnist5k.test))
    # All 5,000 images are distinct, so a shared image would mean a shared index.
    assert len(train) + len(val) + len(test) == 5000
    assert not (train & val) and not (train & test) and not (val & test)


def test_mnist5k_class_balance(mnist5k):
    # 500 images per class overall: a stratified split keeps the 10% mix in val and test.
    for split, per_class in ((mnist5k.val, 50), (mnist5k.test, 100), (mnist5k.train, 350)):
        counts = torch.bincount(split.y, minlength=10)
        assert (counts - per_class).abs().max().item() <= 1, counts


def test_mnist5k_identical_across_loads(mnist5k):
    again = load_dataset("mnist5k")
    for a, b in ((mnist5k.train, again.train), (mnist5k.val, again.val),
                 (mnist5k.test, again.test)):
        assert torch.equal(a.x, b.x) and torch.equal(a.y, b.y)


@pytest.mark.parametrize("n, sizes", [(5000, (3500, 500, 1000)), (1797, (1197, 300, 300)),
                                      (103, (80, 13, 10))])
def test_stratified_indices_are_disjoint_cover_and_fixed(n, sizes):
    rng = np.random.default_rng(123)
    y = rng.integers(0, 7, n)
    parts = _stratified(y, sizes, SPLIT_SEED)
    assert [len(p) for p in parts] == list(sizes)
    joined = np.concatenate(parts)
    assert len(np.unique(joined)) == n  # disjoint ...
    assert set(joined.tolist()) == set(range(n))  # ... and covering
    again = _stratified(y, sizes, SPLIT_SEED)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))
    other = _stratified(y, sizes, SPLIT_SEED + 1)
    assert not all(np.array_equal(a, b) for a, b in zip(parts, other))
    # Every part holds each class in about the overall proportion (within 1 image + rounding).
    overall = np.bincount(y, minlength=7) / n
    for part in parts:
        counts = np.bincount(y[part], minlength=7)
        assert np.all(np.abs(counts - overall * len(part)) <= 1.5), (counts, overall * len(part))


def test_digits_loads_upsampled():
    data = load_dataset("digits")
    assert (len(data.train), len(data.val), len(data.test)) == (1197, 300, 300)
    assert data.train.x.shape[1:] == (1, 28, 28)
    assert spec_of("digits").image_size == 28
    for split in (data.val, data.test):
        counts = torch.bincount(split.y, minlength=10)
        assert counts.min().item() >= 25 and counts.max().item() <= 35
    again = load_dataset("digits")
    assert torch.equal(data.val.x, again.val.x) and torch.equal(data.test.y, again.test.y)


def test_cifar10_missing_is_refused_and_writes_nothing(tmp_path):
    data_dir = tmp_path / "data"
    with pytest.raises(UserError, match="pass `download`") as info:  # the CLI: --download
        load_dataset("cifar10", data_dir, download=False)
    assert "cifar10" in str(info.value) and info.value.setting == "data_dir"
    assert not data_dir.exists() or not any(data_dir.rglob("*"))
    assert [p.name for p in tmp_path.iterdir()] in ([], ["data"])


@pytest.mark.parametrize("name, words", [("nope", "unknown dataset"),
                                         ("imagenet-shape", "shape for `inspect` only"),
                                         ("imagefolder:/no/such/folder", "not a folder")])
def test_bad_datasets_are_refused(name, words):
    with pytest.raises(UserError, match=words):
        load_dataset(name)


def test_unknown_dataset_lists_choices():
    with pytest.raises(UserError) as info:
        spec_of("nope")
    for name in ("mnist5k", "digits", "cifar10", "cifar100", "imagefolder"):
        assert name in str(info.value)
