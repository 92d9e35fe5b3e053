"""A latency budget for channel mode: a network's latency estimated from a per-layer table.

The table (format `rlprune.latency/1`, a JSON object; `rlprune.service.jobs.latency_lut`
measures one in ONNX Runtime) holds, for every Conv2d (not depthwise) and Linear layer, its
latency in milliseconds at a grid of kept fractions of its input and output channels (rows:
inputs, columns: outputs), measured alone at `batch` images; `dense_ms`, the whole dense
network's measured latency, and `scale`, that over the sum of its layers' at full width (the
rest of the network, and what the runtime fuses or does once for the whole network, spread
in proportion). The estimate for kept channels is `scale` times the sum of each layer's
latency, interpolated bilinearly at the layer's kept fractions (NetAdapt's look-up table),
so it is `dense_ms` for the dense network. Each layer's grid is made non-decreasing along
both axes first (a narrower layer never costs more), so the estimate only falls as channels
go, which the budget clamp needs.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from rlprune.models.errors import UserError

FORMAT = "rlprune.latency/1"
GRID = (0.125, 0.25, 0.5, 0.75, 1.0)  # kept fractions measured per axis


@dataclass(frozen=True)
class LayerShape:
    """What a layer's latency depends on: its kind, channels, kernel and input size."""

    name: str
    kind: str  # "conv" | "fc"
    in_channels: int
    out_channels: int
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    in_hw: tuple[int, int] = (1, 1)
    bias: bool = True


def layer_shapes(model: nn.Module, input_shape: tuple[int, ...]) -> list[LayerShape]:
    """Every Conv2d (groups=1) and Linear of `model` that runs, with its input's size (one
    forward pass of a zero image)."""
    shapes: dict[str, LayerShape] = {}

    def seen(name: str, m: nn.Module):
        def hook(mod, inputs, out) -> None:
            x = inputs[0]
            if isinstance(m, nn.Conv2d):
                shapes.setdefault(name, LayerShape(
                    name, "conv", m.in_channels, m.out_channels, _pair(m.kernel_size),
                    _pair(m.stride), _pair(m.padding), (x.shape[-2], x.shape[-1]),
                    m.bias is not None))
            else:
                shapes.setdefault(name, LayerShape(name, "fc", m.in_features, m.out_features,
                                                   bias=m.bias is not None))
        return hook

    layers = [(n, m) for n, m in model.named_modules()
              if isinstance(m, nn.Linear) or (isinstance(m, nn.Conv2d) and m.groups == 1)]
    hooks = [m.register_forward_hook(seen(n, m)) for n, m in layers]
    param = next(model.parameters())
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            model(torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype))
    finally:
        model.train(was_training)
        for h in hooks:
            h.remove()
    return [shapes[n] for n, _ in layers if n in shapes]


def _pair(v) -> tuple[int, int]:
    return (v, v) if isinstance(v, int) else (int(v[0]), int(v[1]))


def check_table(table: object, where: str = "the latency table") -> dict:
    """`table` if it is an `rlprune.latency/1` table, else a UserError saying what is wrong."""
    if not isinstance(table, dict) or table.get("format") != FORMAT:
        raise UserError(f"{where} is not an {FORMAT} table")
    layers = table.get("layers")
    if not isinstance(layers, dict) or not layers:
        raise UserError(f"{where} has no layers")
    for name, entry in layers.items():
        try:
            ins, outs = np.asarray(entry["in"], float), np.asarray(entry["out"], float)
            ms = np.asarray(entry["ms"], float)
            ok = ms.shape == (len(ins), len(outs)) and np.isfinite(ms).all() and (ms >= 0).all()
        except (KeyError, TypeError, ValueError):
            ok = False
        if not ok:
            raise UserError(f"{where}: layer {name!r} needs `in` and `out` fractions and an "
                            "`ms` grid of non-negative numbers of their sizes")
    for key in ("scale", "dense_ms", "batch"):
        if not isinstance(table.get(key), int | float):
            raise UserError(f"{where} has no number `{key}`")
    return table


class LatencyModel:
    """The estimate of a `ChannelGraph`'s network latency (ms) from a table.

    :param shares: per table layer, the share of its inputs and outputs each channel group
        holds (`ChannelGraph.shares`), so kept fractions follow from the groups' counts
    :param table: an `rlprune.latency/1` table of this network
    """

    def __init__(self, shares: dict[str, tuple[np.ndarray, np.ndarray]], table: dict):
        check_table(table)
        missing = sorted(set(table["layers"]) - set(shares))
        if missing:
            raise UserError(f"the latency table names layers the model does not have: "
                            f"{', '.join(missing[:5])}")
        self.table = table
        self.names = list(table["layers"])
        self.a_in = np.array([shares[n][0] for n in self.names])
        self.a_out = np.array([shares[n][1] for n in self.names])
        self.grids = []
        for n in self.names:
            entry = table["layers"][n]
            ms = np.maximum.accumulate(np.maximum.accumulate(
                np.asarray(entry["ms"], float), axis=0), axis=1)  # non-decreasing both ways
            self.grids.append((np.asarray(entry["in"], float), np.asarray(entry["out"], float),
                               ms))
        self.scale = float(table["scale"])

    def per_layer(self, removed: np.ndarray) -> dict[str, float]:
        """Estimated ms of each table layer with each group's removed fraction `removed`
        (where the time goes: a profile of the pruned network in the table's runtime)."""
        f_in = 1.0 - self.a_in @ removed
        f_out = 1.0 - self.a_out @ removed
        return {name: self.scale * _bilinear(g, fi, fo)
                for name, g, fi, fo in zip(self.names, self.grids, f_in, f_out)}

    def cost(self, removed: np.ndarray) -> float:
        """Estimated ms with each group's removed fraction `removed`."""
        return sum(self.per_layer(removed).values())


def _bilinear(grid: tuple[np.ndarray, np.ndarray, np.ndarray], f_in: float,
              f_out: float) -> float:
    """The grid's value at (f_in, f_out), linear between its points, flat beyond them."""
    ins, outs, ms = grid
    along_out = np.array([np.interp(f_out, outs, row) for row in ms])
    return float(np.interp(f_in, ins, along_out))
