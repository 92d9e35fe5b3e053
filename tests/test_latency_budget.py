"""`--budget latency` (channel mode): the estimate from a per-layer table, the clamp landing on
it, and a job that measures its table, keeps it and checks the estimate against ONNX Runtime."""

from __future__ import annotations

import json
import sys

import numpy as np
import pytest
import torch
from support import (
    MODEL_MODULE,
    USER_MODELS,
    assert_one_line_error,
    get_assets,
    read_json,
    run_main,
)

from rlprune.env.channel_env import ChannelPruningEnv
from rlprune.env.channels import ChannelGraph
from rlprune.env.config import EnvConfig
from rlprune.env.latency_table import FORMAT, GRID, LatencyModel, layer_shapes
from rlprune.models.errors import UserError
from rlprune.models.splits import Split

sys.path.insert(0, str(USER_MODELS))
import channel_nets  # noqa: E402

SHAPE = (1, 8, 8)


def net() -> torch.nn.Module:
    torch.manual_seed(0)
    return channel_nets.residual().eval()


def table_of(model: torch.nn.Module, ms, scale: float = 1.0) -> dict:
    """A table whose grid for each layer is ms(layer, f_in, f_out) at GRID."""
    shares = ChannelGraph(model, SHAPE).shares()
    layers = {}
    for shape in layer_shapes(model, SHAPE):
        a_in, a_out = shares[shape.name]
        ins = GRID if a_in.any() else (1.0,)
        outs = GRID if a_out.any() else (1.0,)
        layers[shape.name] = {"in": list(ins), "out": list(outs),
                              "ms": [[ms(shape, fi, fo) for fo in outs] for fi in ins]}
    return {"format": FORMAT, "batch": 32, "dense_ms": 1.0, "scale": scale, "layers": layers}


def product(shape, f_in, f_out) -> float:
    """A layer whose time is its multiply-adds: bilinear in the kept fractions."""
    kernel = shape.kernel[0] * shape.kernel[1] * shape.in_hw[0] * shape.in_hw[1]
    return shape.in_channels * shape.out_channels * kernel * f_in * f_out * 1e-6


def test_the_estimate_interpolates_a_bilinear_table_exactly():
    model = net()
    graph = ChannelGraph(model, SHAPE)
    shares = graph.shares()
    estimate = LatencyModel(shares, table_of(model, product, scale=2.0))
    shapes = {s.name: s for s in layer_shapes(model, SHAPE)}
    rng = np.random.default_rng(0)
    for _ in range(20):
        removed = rng.uniform(0, 0.85, len(graph.groups))  # kept fractions inside GRID
        expected = 2.0 * sum(product(shapes[n], 1 - shares[n][0] @ removed,
                                     1 - shares[n][1] @ removed) for n in shapes)
        assert estimate.cost(removed) == pytest.approx(expected, rel=1e-9)


def test_the_estimate_never_rises_as_channels_go_even_from_a_noisy_table():
    model = net()
    rng = np.random.default_rng(1)
    graph = ChannelGraph(model, SHAPE)
    graph.add_cost("latency", LatencyModel(graph.shares(), table_of(
        model, lambda s, fi, fo: float(rng.uniform(0.1, 1.0)))))
    sizes = [g.channels for g in graph.groups]
    for _ in range(50):
        kept = [int(rng.integers(1, n + 1)) for n in sizes]
        g = int(rng.integers(len(sizes)))
        if kept[g] > 1:
            fewer = list(kept)
            fewer[g] -= 1
            assert graph.cost(fewer, "latency") <= graph.cost(kept, "latency") + 1e-12


def test_episodes_land_on_the_latency_target():
    model = net()
    split = Split(torch.randn(64, *SHAPE), torch.randint(0, 2, (64,)))
    config = EnvConfig(granularity="channel", target=0.4, budget="latency", round_to=1,
                       latency_table=table_of(model, product))
    env = ChannelPruningEnv(model, split, SHAPE, config, calibration=split)
    rng = np.random.default_rng(0)
    dense = [g.channels for g in env.graph.groups]
    step = max(env.graph.cost(dense, "latency") - env.graph.cost(
        [n - (i == g) for i, n in enumerate(dense)], "latency") for g in range(len(dense)))
    for _ in range(10):
        env.reset()
        done = False
        while not done:
            *_, done, _, info = env.step(rng.uniform(-1, 1, 1))
        assert abs(info["achieved_sparsity"] - 0.4) * env.budget.total <= step + 1e-9


def test_the_env_needs_a_table_and_refuses_one_of_another_model():
    model = net()
    split = Split(torch.randn(8, *SHAPE), torch.randint(0, 2, (8,)))
    with pytest.raises(UserError, match="latency table"):
        ChannelPruningEnv(model, split, SHAPE, EnvConfig(granularity="channel",
                                                         budget="latency"))
    other = table_of(model, product)
    other["layers"]["nope"] = other["layers"].pop(next(iter(other["layers"])))
    with pytest.raises(UserError, match="nope"):
        ChannelPruningEnv(model, split, SHAPE, EnvConfig(granularity="channel",
                                                         budget="latency",
                                                         latency_table=other))


TINY = ("--model", f"{MODEL_MODULE}:make", "--dataset", "digits", "--granularity", "channel",
        "--budget", "latency", "--target", "0.2", "--episodes", "4", "--warmup", "2",
        "--finetune-epochs", "0", "--select-top-k", "0", "--no-int8-size", "--quiet")


def test_a_latency_job_keeps_its_table_and_checks_its_estimate(workdir, capsys, monkeypatch,
                                                               one_thread, tmp_path_factory):
    """(The tiny net's layers take microseconds: the runtime's fixed cost per layer leaves
    little to remove, so its target is 0.2.)"""
    monkeypatch.syspath_prepend(str(USER_MODELS))
    weights = ("--weights", str(get_assets(tmp_path_factory).dense))
    code, out, err = run_main(capsys, "search", *TINY, *weights, "--latency-batch", "8",
                              "--run-dir", "r")
    assert code == 0, err
    table = read_json(workdir / "r" / "config.json")["latency_table"]
    assert table["format"] == FORMAT and table["batch"] == 8 and table["runtime"]
    assert {"c1", "c2", "c3"} <= set(table["layers"])
    check = read_json(workdir / "r" / "deployment.json")["latency_budget"]
    assert check["batch"] == 8 and check["dense_ms"] > 0 and check["pruned_ms"] > 0
    # the estimate the clamp landed on: 0.8 of the dense estimate, to within a channel
    assert check["estimated_speedup"] == pytest.approx(1 / 0.8, rel=0.1)
    row = next(line for line in out.splitlines() if "ONNX Runtime latency, batch 8" in line)
    assert f"{check['speedup']:.2f}x" in row and "estimate" in row
    # the table travels as a file too: the same search from it measures nothing new
    (workdir / "t.json").write_text(json.dumps(table))
    code, _, err = run_main(capsys, "search", *TINY, *weights, "--latency-table", "t.json",
                            "--run-dir", "r2")
    assert code == 0, err
    assert read_json(workdir / "r2" / "config.json")["latency_table"] == table
    assert (read_json(workdir / "r2" / "policy.json")["groups"]
            == read_json(workdir / "r" / "policy.json")["groups"])


@pytest.mark.parametrize("content, words", [
    ("not json", "cannot be read as JSON"),
    ('{"format": "other"}', "not an rlprune.latency/1 table"),
    ('{"format": "rlprune.latency/1", "layers": {"c1": {"in": [1], "out": [1], "ms": []}}}',
     "layer 'c1'"),
])
def test_a_bad_latency_table_is_one_line_and_exit_2(content, words, workdir, capsys,
                                                    monkeypatch):
    monkeypatch.syspath_prepend(str(USER_MODELS))
    (workdir / "t.json").write_text(content)
    code, _, err = run_main(capsys, "search", *TINY, "--latency-table", "t.json",
                            "--run-dir", "r")
    assert words in assert_one_line_error(code, err)
    assert not (workdir / "r").exists()


def test_a_measured_table_estimates_the_dense_network_at_its_measured_time():
    import rlprune

    model = net()
    table = rlprune.measure_latency_table(model, SHAPE, batch=2, budget_s=0.01)
    assert table["format"] == FORMAT and table["batch"] == 2 and table["dense_ms"] > 0
    graph = ChannelGraph(model, SHAPE)
    graph.add_cost("latency", LatencyModel(graph.shares(), table))
    # the dense estimate is the measured whole (up to the grid's monotone fix-up)
    assert graph.total["latency"] >= table["dense_ms"] * (1 - 1e-9)
    assert graph.total["latency"] <= table["dense_ms"] * 1.5
