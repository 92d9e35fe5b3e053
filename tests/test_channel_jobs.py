"""Channel-mode jobs end to end: the CLI on mnist5k (search, export, apply to a .pt2 that
plain torch loads), baselines and random search, and a residual network through the API."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys

import pytest
import torch
from support import MODEL_MODULE, USER_MODELS, one_torch_thread, read_json, run_main

import rlprune

TINY = f"{MODEL_MODULE}:make"
CHANNEL = ("--granularity", "channel", "--target", "0.5", "--dataset", "mnist5k")
SHORT = ("--episodes", "6", "--warmup", "3", "--finetune-epochs", "0", "--quiet",
         "--select-top-k", "0")  # the selection stage is tested on its own


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The tests' tiny net, trained one epoch on mnist5k, once for the module (read-only)."""
    from rlprune.service.cli.main import main

    out = tmp_path_factory.mktemp("channel-dense") / "dense.pt"
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        mp.syspath_prepend(str(USER_MODELS))
        assert main(["pretrain", "--model", TINY, "--dataset", "mnist5k", "--epochs", "1",
                     "--out", str(out)]) == 0
    return out


@pytest.fixture
def dense(trained, workdir, monkeypatch, one_thread):
    monkeypatch.syspath_prepend(str(USER_MODELS))
    return trained


@pytest.fixture(scope="module")
def uniform_policy(trained, tmp_path_factory) -> dict:
    """A uniform channel baseline's policy of the trained net."""
    from rlprune.service.cli.main import main

    run = tmp_path_factory.mktemp("channel-uniform") / "b"
    with pytest.MonkeyPatch.context() as mp, one_torch_thread():
        mp.syspath_prepend(str(USER_MODELS))
        assert main(["baseline", "--method", "uniform", "--model", TINY, "--weights",
                     str(trained), *CHANNEL, "--finetune-epochs", "0", "--quiet", "--run-dir",
                     str(run)]) == 0
    return read_json(run / "policy.json")


def test_a_channel_search_exports_and_applies_exactly(dense, workdir, capsys):
    code, out, err = run_main(capsys, "search", "--model", TINY, "--weights", str(dense),
                              *CHANNEL, *SHORT, "--run-dir", "run")
    assert code == 0, err
    assert "channel groups (criterion l1)" in err and "FLOPs removed" in out
    policy = read_json(workdir / "run" / "policy.json")
    assert policy["format"] == "rlprune.policy/2" and policy["granularity"] == "channel"
    assert (policy["budget"], policy["criterion"]) == ("flops", "l1")
    assert abs(policy["achieved"]["sparsity"] - 0.5) < 0.02
    assert policy["achieved"]["flops_nonzero"] < policy["achieved"]["flops_dense"]
    deploy = read_json(workdir / "run" / "deployment.json")
    assert deploy["size_mb"]["pruned"] < deploy["size_mb"]["dense"]
    assert set(deploy["latency_ms"]) == {"batch1", "batch32"}
    # the printed table shows the slim file's and its int8 file's sizes, and how to write it
    assert deploy["int8_mb"] < deploy["file_mb"] < deploy["size_mb"]["dense"]
    slim = next(line for line in out.splitlines() if "dense state_dict → slim file" in line)
    assert f"{deploy['size_mb']['dense']:.3f} → {deploy['file_mb']:.3f}" in slim
    int8 = next(line for line in out.splitlines() if "int8 slim file (MB)" in line)
    assert f"{deploy['int8_mb']:.3f}" in int8
    assert "rlprune export-model run --out model.onnx --quantize int8" in out
    assert "do not speed up" not in out
    code, _, err = run_main(capsys, "export", "run", "--out", "p.yaml", "--format", "yaml")
    assert code == 0, err
    code, out, err = run_main(capsys, "apply", "p.yaml", "--model", TINY, "--weights",
                              str(dense), "--dataset", "mnist5k", "--out", "applied.pt2")
    assert code == 0, err
    assert f"pruned {100 * policy['accuracy']['pruned']:.2f}%" in out
    # the applied .pt2 is a torch.export program that plain torch runs, with no rlprune
    # imported, exactly as the run's own pruned.rlprune
    script = ("import sys, torch; x = torch.load('x.pt'); "
              "torch.save(torch.export.load('applied.pt2').module()(x), 'y.pt'); "
              "print(any(m.startswith('rlprune') for m in sys.modules))")
    x = torch.randn(5, 1, 28, 28)
    torch.save(x, workdir / "x.pt")
    done = subprocess.run([sys.executable, "-c", script], cwd=workdir, capture_output=True,
                          text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False"]
    with torch.no_grad():
        expected = rlprune.load_model(workdir / "run" / "pruned.rlprune")(x)
    assert expected.shape == (5, 10)
    assert torch.equal(torch.load(workdir / "y.pt"), expected)


@pytest.mark.parametrize("method", ["uniform", "global-l1", "global-taylor", "random"])
def test_channel_baselines_and_random_search(method, dense, workdir, capsys):
    argv = ["baseline", "--method", method, "--model", TINY, "--weights", str(dense),
            *CHANNEL, "--finetune-epochs", "0", "--quiet", "--run-dir", method]
    if method == "random":
        argv += ["--episodes", "5"]
    code, _, err = run_main(capsys, *argv)
    assert code == 0, err
    policy = read_json(workdir / method / "policy.json")
    assert policy["method"] == method and policy["granularity"] == "channel"
    assert abs(policy["achieved"]["sparsity"] - 0.5) < 0.02
    if method == "random":  # the search's machinery, warm-up all the way: no learning
        config = read_json(workdir / method / "config.json")
        assert policy["search"]["episodes"] == config["episodes"] == 5


def test_a_weight_baseline_is_refused_in_channel_mode(dense, capsys):
    code, _, err = run_main(capsys, "baseline", "--method", "lamp", "--model", TINY,
                            "--weights", str(dense), *CHANNEL)
    assert code == 2 and "for granularity channel" in err


def test_random_search_never_trains_the_actor(dense, workdir, one_thread):
    from rlprune.models.data import load_dataset
    from rlprune.models.registry import build_model
    from rlprune.models.train import load_weights

    data = load_dataset("mnist5k")
    model = build_model(TINY)
    load_weights(model, dense)
    result = rlprune.baseline("random", model, data, target=0.5, granularity="channel",
                              episodes=4, finetune_epochs=0)
    assert result.state == "finished" and len(result.history) == 4
    assert result.policy["search"]["best_reward"] == max(r["reward"] for r in result.history)


def test_a_residual_network_through_the_api(one_thread):
    """ResNet-56 (option-B shortcuts) on random CIFAR-shaped tensors: the residual streams
    are groups, the search lands on the FLOPs target and the slim network runs."""
    from rlprune.models.registry import build_model

    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(96, 3, 32, 32, generator=gen), torch.randint(0, 10, (96,), generator=gen)
    data = rlprune.Data((x[:64], y[:64]), (x[64:80], y[64:80]), (x[80:], y[80:]))
    model = build_model("resnet56", 10, 3, 32).eval()
    result = rlprune.search(model, data, target=0.5, granularity="channel", episodes=3,
                            warmup=2, finetune_epochs=0, bn_recalibration_batches=1,
                            hidden=(16, 16), batch_size=8, select_top_k=0,
                            int8_size=False)
    assert abs(result.policy["achieved"]["sparsity"] - 0.5) < 0.01
    groups = {g["name"]: g for g in result.policy["groups"]}
    assert len(groups) >= 28
    stream = max(groups.values(), key=lambda g: len(g["layers"]))
    assert len(stream["layers"]) > 10  # a residual stream couples many layers
    slim = result.model
    assert sum(p.numel() for p in slim.parameters()) < sum(p.numel() for p in model.parameters())
    assert slim(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    again = rlprune.apply(result.policy, model, input_shape=(3, 32, 32))
    assert sum(p.numel() for p in again.parameters()) == sum(p.numel() for p in slim.parameters())


@pytest.mark.parametrize("edit, words", [
    (lambda p: p["groups"][0].update(removed=[0, 0]), "distinct channels"),
    (lambda p: p["groups"][0].update(removed=[99]), "distinct channels"),
    (lambda p: p["groups"][0].update(removed=list(range(p["groups"][0]["channels"]))),
     "keeps at least one"),
    (lambda p: p["groups"][0].update(channels=0), "positive whole number"),
    (lambda p: p.update(groups=[]), "non-empty list"),
    (lambda p: p["groups"].append(dict(p["groups"][0])), "appears twice"),
    (lambda p: p.update(granularity="pixel"), "weight or channel"),
    (lambda p: p["groups"][0].update(name="nope"), "not a channel group of the model"),
])
def test_a_malformed_channel_policy_is_refused(edit, words, dense, uniform_policy, workdir,
                                               capsys):
    policy = copy.deepcopy(uniform_policy)
    edit(policy)
    (workdir / "bad.json").write_text(json.dumps(policy))
    code, out, err = run_main(capsys, "apply", "bad.json", "--model", TINY, "--weights",
                              str(dense), "--out", "o.pt2")
    assert code == 2 and words in err and not (workdir / "o.pt2").exists(), err


def test_a_channel_bench_runs_every_channel_method(dense, workdir, capsys):
    code, out, err = run_main(capsys, "bench", "--model", TINY, "--weights", str(dense),
                              "--granularity", "channel", "--dataset", "mnist5k", "--targets",
                              "0.5", "--seeds", "1", "--episodes", "4", "--warmup", "2",
                              "--finetune-epochs", "0", "--select-top-k", "0", "--quiet",
                              "--out", "b")
    assert code == 0, err
    rows = read_json(workdir / "b" / "bench.json")["results"]
    assert [r["method"] for r in rows] == ["ddpg", "random", "uniform", "global-l1",
                                           "global-taylor"]
    assert all(abs(r["sparsity"] - 0.5) < 0.02 for r in rows)
    assert "| global-taylor |" in out
