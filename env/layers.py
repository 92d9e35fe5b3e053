"""The prunable layers of a network and their static description (shapes, params, FLOPs).

Prunable weights are the weight tensors of Conv2d and Linear layers. FLOPs come from fvcore,
which counts one multiply-add as one FLOP.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass

import torch
from torch import nn

with warnings.catch_warnings():  # fvcore's import trips torch.jit deprecation warnings
    warnings.simplefilter("ignore", FutureWarning)
    from fvcore.nn import FlopCountAnalysis

KINDS = {nn.Conv2d: "conv", nn.Linear: "fc"}


@dataclass
class Layer:
    name: str
    kind: str  # "conv" | "fc"
    module: nn.Module
    shape: tuple[int, ...]
    in_channels: int
    out_channels: int
    kernel: int
    stride: int
    fmap: int  # output height x width (1 for fc)
    params: int  # weights in this layer's weight tensor
    flops: int  # fvcore count for this layer at batch size 1
    owner: str = "agent"  # "agent" | "fc-rule" | "none" (left dense)


@dataclass
class Network:
    """A model's prunable layers in forward order plus whole-model totals."""

    layers: list[Layer]
    params_total: int  # every parameter: weights, biases, BatchNorm
    flops_total: int

    @property
    def prunable(self) -> int:
        return sum(layer.params for layer in self.layers)

    def owned_by(self, owner: str) -> list[Layer]:
        return [layer for layer in self.layers if layer.owner == owner]


def owner_for(kind: str, fc_rule: str) -> str:
    if kind == "conv" or fc_rule == "agent":
        return "agent"
    return "fc-rule" if fc_rule == "3sigma" else "none"


def describe(model: nn.Module, input_shape: tuple[int, ...], fc_rule: str = "3sigma") -> Network:
    """Walk `model` once on a dummy input of `input_shape` (C, H, W) and describe its layers."""
    modules = {name: m for name, m in model.named_modules() if type(m) in KINDS}
    fmaps: dict[str, int] = {}

    def record(name: str):
        def hook(module: nn.Module, inputs: tuple, out: torch.Tensor) -> None:
            fmaps.setdefault(name, out.shape[-2] * out.shape[-1] if out.dim() == 4 else 1)
        return hook

    hooks = [m.register_forward_hook(record(name)) for name, m in modules.items()]
    param = next(model.parameters(), torch.zeros(()))
    dummy = torch.zeros(1, *input_shape, device=param.device, dtype=param.dtype)
    was_training = model.training
    model.eval()
    try:
        # fvcore logs every op it has no counter for; those are not weights we prune.
        logging.getLogger("fvcore").setLevel(logging.ERROR)
        analysis = FlopCountAnalysis(model, dummy)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        by_module = analysis.by_module()
        flops_total = int(analysis.total())
    finally:
        for h in hooks:
            h.remove()
        model.train(was_training)
    order = [name for name in fmaps if name in modules]  # forward order, as the hooks fired
    order += [name for name in modules if name not in fmaps]  # never called: keep, FLOPs 0
    layers = []
    for name in order:
        m = modules[name]
        kind = KINDS[type(m)]
        w = m.weight
        if kind == "conv":
            cin, cout, k, s = m.in_channels, m.out_channels, m.kernel_size[0], m.stride[0]
        else:
            cin, cout, k, s = m.in_features, m.out_features, 1, 1
        layers.append(Layer(name, kind, m, tuple(w.shape), cin, cout, k, s, fmaps.get(name, 0),
                            w.numel(), int(by_module.get(name, 0)), owner_for(kind, fc_rule)))
    params_total = sum(p.numel() for p in model.parameters())
    return Network(layers, params_total, flops_total)


def nonzero_costs(net: Network, sparsity: dict[str, float]) -> dict[str, dict[str, int]]:
    """Dense and non-zero params and FLOPs; a layer's FLOPs scale with its density."""
    pruned = sum(round(sparsity.get(layer.name, 0.0) * layer.params) for layer in net.layers)
    saved = sum(sparsity.get(layer.name, 0.0) * layer.flops for layer in net.layers)
    return {"params": {"dense": net.params_total, "nonzero": net.params_total - pruned},
            "flops": {"dense": net.flops_total, "nonzero": int(round(net.flops_total - saved))}}
