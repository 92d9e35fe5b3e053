"""Dense pre-training: checkpoints carry metadata; loading refuses weights that do not fit."""

from __future__ import annotations

import pytest
import torch

from rlprune.models.data import load_dataset
from rlprune.models.errors import UserError
from rlprune.models.registry import arch_fingerprint, build_model
from rlprune.models.train import evaluate, load_weights, read_weights, save_weights


def test_pretrain_cli_writes_checkpoint_with_metadata(cli, tmp_path):
    out = tmp_path / "sub" / "x.pt"
    code, stdout, err = cli("pretrain", "--model", "lenet300", "--dataset", "digits",
                            "--epochs", "1", "--device", "cpu", "--out", str(out))
    assert code == 0, err
    assert f"saved {out}" in stdout
    assert [p.name for p in out.parent.iterdir()] == ["x.pt"]  # no temporary left behind
    blob = read_weights(out)
    meta = blob["meta"]
    assert meta["model"] == "lenet300" and meta["dataset"] == "digits"
    assert meta["epochs"] == 1
    fresh = build_model("lenet300", 10, 1, 28)
    assert meta["arch_fingerprint"] == arch_fingerprint(fresh)
    # The recorded accuracies are the loaded model's accuracies on the fixed splits.
    assert load_weights(fresh, out) == meta
    data = load_dataset("digits")
    assert meta["accuracy"]["val"] == evaluate(fresh, data.val)
    assert meta["accuracy"]["test"] == evaluate(fresh, data.test)
    assert meta["accuracy"]["test"] > 0.5  # one epoch of an MLP on digits is far above chance


def _save(model, path):
    save_weights(path, model, {"model": "x", "dataset": "y"})


def test_load_weights_round_trip(tmp_path):
    torch.manual_seed(0)
    src = build_model("lenet5")
    _save(src, tmp_path / "a.pt")
    torch.manual_seed(1)
    dst = build_model("lenet5")
    meta = load_weights(dst, tmp_path / "a.pt")
    assert meta["model"] == "x" and meta["arch_fingerprint"] == arch_fingerprint(src)
    for (name, a), (_, b) in zip(src.state_dict().items(), dst.state_dict().items()):
        assert torch.equal(a, b), name


def test_load_weights_names_missing_and_unexpected_keys(tmp_path):
    _save(build_model("lenet5"), tmp_path / "lenet5.pt")
    model = build_model("lenet300")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(UserError, match="does not fit") as info:
        load_weights(model, tmp_path / "lenet5.pt")
    message = str(info.value)
    assert "missing: f3.weight" in message
    assert "unexpected: c1.weight" in message
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_load_weights_names_wrong_shapes(tmp_path):
    _save(build_model("lenet5", num_classes=10), tmp_path / "ten.pt")
    with pytest.raises(UserError) as info:
        load_weights(build_model("lenet5", num_classes=5), tmp_path / "ten.pt")
    assert "wrong shape: f2.weight, f2.bias" in str(info.value)
    assert "missing" not in str(info.value)


def test_read_weights_refuses_junk(tmp_path):
    with pytest.raises(UserError, match="does not exist"):
        read_weights(tmp_path / "none.pt")
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match="cannot be read"):
        read_weights(tmp_path / "junk.pt")
    # A bare state_dict from torch.save is accepted.
    model = build_model("lenet300")
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    assert load_weights(build_model("lenet300"), tmp_path / "bare.pt") == {}


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lenet5", "vgg-mini"])
def test_pretrain_default_epochs_reach_accuracy(name, mnist5k, tmp_path):
    from rlprune.models.pretrain import pretrain

    threads = torch.get_num_threads()
    torch.set_num_threads(min(threads, 2))  # the 2-core budget the design promises
    try:
        _, meta = pretrain(name, mnist5k, tmp_path / f"{name}.pt", device="cpu")
    finally:
        torch.set_num_threads(threads)
    assert meta["accuracy"]["test"] >= 0.97, meta
    assert meta["train_seconds"] <= 120, meta
