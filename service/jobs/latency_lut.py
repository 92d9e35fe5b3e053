"""The latency table of `--budget latency`, measured in ONNX Runtime (`env.latency_table`).

Each Conv2d and Linear is timed alone, as a one-node ONNX graph (Conv or Gemm, random
weights) on its own input size, at every kept fraction of `GRID` for its input channels
(where a channel group feeds them) and its output channels (where a group owns them): one
thread, warmed up, the median of repeated runs. The dense network is timed whole (exported
with `torch.onnx`) and `scale` is its time over the sum of its layers' at full width.
Measured once per job; the run keeps the table in its config, so a resume and a worker read
the same numbers.
"""

from __future__ import annotations

import copy
import platform
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from torch import nn

from rlprune.env.channels import ChannelGraph
from rlprune.env.latency_table import FORMAT, GRID, LayerShape, layer_shapes
from rlprune.service.jobs.measure import run_times
from rlprune.service.jobs.onnx_runtime import INPUT, session, write_onnx

OPSET = 17


def _graph(layer: LayerShape, cin: int, cout: int) -> bytes:
    """A one-node ONNX model of `layer` with cin inputs and cout outputs."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    if layer.kind == "conv":
        w = rng.standard_normal((cout, cin, *layer.kernel), np.float32)
        node = helper.make_node("Conv", [INPUT, "w", "b"], ["y"], kernel_shape=layer.kernel,
                                strides=layer.stride, pads=[*layer.padding, *layer.padding])
        shape = ["n", cin, *layer.in_hw]
    else:
        w = rng.standard_normal((cout, cin), np.float32)
        node = helper.make_node("Gemm", [INPUT, "w", "b"], ["y"], transB=1)
        shape = ["n", cin]
    inits = [numpy_helper.from_array(w, "w"),
             numpy_helper.from_array(rng.standard_normal(cout).astype(np.float32), "b")]
    graph = helper.make_graph([node], layer.name or "layer",
                              [helper.make_tensor_value_info(INPUT, TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
                              initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = 8
    return model.SerializeToString()


def _ms(source: Path | bytes, x: np.ndarray, budget_s: float) -> float:
    runtime = session(source)
    times = run_times(lambda: runtime.run(None, {INPUT: x}), warmup=2, repeats=50,
                      budget_s=budget_s, least=5)
    return 1000.0 * float(np.median(times))


def _widths(n: int, fractions: tuple[float, ...]) -> list[int]:
    return [max(1, round(f * n)) for f in fractions]


def measure_latency_table(model: nn.Module, input_shape: tuple[int, ...], *,
                          batch: int = 32, budget_s: float = 0.2) -> dict:
    """The `rlprune.latency/1` table of `model` (float, eval) at `batch` images.

    :param budget_s: seconds of timed runs per grid point (at least 5 runs each)
    """
    model = copy.deepcopy(model).cpu().eval()  # the job's own model keeps its device and mode
    shares = ChannelGraph(model, input_shape).shares()
    layers: dict[str, dict] = {}
    for layer in layer_shapes(model, input_shape):
        a_in, a_out = shares.get(layer.name, (np.zeros(0), np.zeros(0)))
        ins = GRID if a_in.any() else (1.0,)
        outs = GRID if a_out.any() else (1.0,)
        hw = layer.in_hw if layer.kind == "conv" else ()
        grid = [[_ms(_graph(layer, cin, cout),
                     np.random.default_rng(0).standard_normal((batch, cin, *hw), np.float32),
                     budget_s)
                 for cout in _widths(layer.out_channels, outs)]
                for cin in _widths(layer.in_channels, ins)]
        layers[layer.name] = {"in": list(ins), "out": list(outs), "ms": grid}
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "dense.onnx"
        write_onnx(model, tuple(input_shape), path)
        x = np.random.default_rng(0).standard_normal((batch, *input_shape), np.float32)
        dense_ms = _ms(path, x, 5 * budget_s)
    import onnxruntime

    full = sum(entry["ms"][-1][-1] for entry in layers.values())
    return {"format": FORMAT, "runtime": f"onnxruntime {onnxruntime.__version__}",
            "threads": 1, "batch": batch, "input_shape": list(input_shape),
            "machine": platform.processor() or platform.machine(),
            "layers": layers, "dense_ms": dense_ms, "scale": dense_ms / full}


def with_latency_table(config, dense):
    """`config` with its latency table measured, where a channel job on the latency budget
    has none yet (once, before any env is made; the run folder's config keeps it)."""
    if (config.granularity != "channel" or config.budget != "latency"
            or config.latency_table is not None):
        return config
    import dataclasses

    table = measure_latency_table(dense.model, dense.input_shape, batch=config.latency_batch)
    return dataclasses.replace(config, latency_table=table)


def estimate_check(dense: nn.Module, pruned: nn.Module, input_shape: tuple[int, ...],
                   table: dict, policy: dict) -> dict:
    """The latency budget's estimate for the pruned network against ONNX Runtime's
    measurement of it, dense and pruned timed interleaved at the table's batch size."""
    from rlprune.env.latency_table import LatencyModel
    from rlprune.service.jobs.measure import interleaved_ms

    dense, pruned = (copy.deepcopy(m).cpu().eval() for m in (dense, pruned))
    graph = ChannelGraph(dense, input_shape)
    graph.add_cost("latency", LatencyModel(graph.shares(), table))
    removed = {g["name"]: len(g["removed"]) for g in policy["groups"]}
    kept = [g.channels - removed.get(g.name, 0) for g in graph.groups]
    batch = int(table["batch"])
    with tempfile.TemporaryDirectory() as folder:
        runners = {}
        for name, model in (("dense", dense), ("pruned", pruned)):
            path = Path(folder) / f"{name}.onnx"
            write_onnx(model, tuple(input_shape), path)
            runtime = session(path)
            runners[name] = (lambda rt: lambda x: rt.run(None, {INPUT: x}))(runtime)
        conditions: dict = {}
        measured = interleaved_ms(runners, tuple(input_shape), (batch,), conditions=conditions)
    estimate = graph.cost(kept, "latency")
    out: dict[str, Any] = {"batch": batch, "dense_ms": measured["dense"][batch],
           "pruned_ms": measured["pruned"][batch], "estimated_ms": estimate,
           "estimated_dense_ms": graph.total["latency"], "conditions": conditions}
    out["speedup"] = out["dense_ms"] / out["pruned_ms"]
    out["estimated_speedup"] = out["estimated_dense_ms"] / estimate
    out["error"] = out["estimated_speedup"] / out["speedup"] - 1.0
    return out
